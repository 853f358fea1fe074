/// The nonce and the additional authenticated data of one ESP packet, built in this one place
/// for sealing and for opening:
///
/// ```text
/// nonce (12 bytes):        salt (4) ‖ IV (8)                       RFC 4106 §4, RFC 7634 §2
/// AAD (8 bytes):           SPI (4) ‖ sequence number (4)           RFC 4106 §5, RFC 4303 §2.2
/// AAD with ESN (12 bytes): SPI (4) ‖ ESN high (4) ‖ ESN low (4)    RFC 4106 §5, RFC 4303 §2.2.1
/// ```
/// The salt is the last 4 bytes of the key material; the IV is sent in the packet (``ESPHeader/iv``);
/// with ESN only the low 32 bits of the sequence number are sent, the high half is authenticated
/// here without being sent. Both live inline (tuples): nothing is allocated per packet.
struct ESPNonceAndAAD {
    /// salt ‖ IV, in wire order.
    var nonce: (UInt32, UInt32, UInt32)
    /// SPI ‖ sequence, or SPI ‖ ESN high ‖ low, in wire order (the last word unused without ESN).
    var aad: (UInt32, UInt32, UInt32)
    /// 8, or 12 with ESN.
    let aadLength: Int

    /// The nonce and AAD of the packet with `spi` and the 64-bit sequence number `sequence`, its IV
    /// `iv` and the SA's 4-byte `salt`.
    /// - Precondition: `salt.count == 4`.
    init(salt: UnsafeRawBufferPointer, iv: UInt64, spi: UInt32, sequence: UInt64, extendedSequenceNumbers: Bool) {
        precondition(salt.count == ESPAlgorithm.saltLength)
        // Safe: the precondition guarantees the 4 bytes.
        let saltWord = unsafe salt.loadUnaligned(as: UInt32.self)
        nonce = (saltWord, UInt32(truncatingIfNeeded: iv >> 32).bigEndian, UInt32(truncatingIfNeeded: iv).bigEndian)
        if extendedSequenceNumbers {
            aad = (spi.bigEndian, UInt32(truncatingIfNeeded: sequence >> 32).bigEndian, UInt32(truncatingIfNeeded: sequence).bigEndian)
            aadLength = 12
        } else {
            aad = (spi.bigEndian, UInt32(truncatingIfNeeded: sequence).bigEndian, 0)
            aadLength = 8
        }
    }

    /// Calls `body` with the 12-byte nonce and the AAD, valid only inside it.
    func withUnsafeBytes<R>(_ body: (_ nonce: UnsafeRawPointer, _ aad: UnsafeRawBufferPointer) -> R) -> R {
        unsafe Swift.withUnsafeBytes(of: nonce) { n in
            unsafe Swift.withUnsafeBytes(of: aad) { a in
                // Safe: the tuples are 12 bytes each and aadLength <= 12; both outlive the call.
                unsafe body(n.baseAddress!, UnsafeRawBufferPointer(rebasing: a[0..<aadLength]))
            }
        }
    }

    /// The nonce's 12 bytes (allocates: for tests).
    var nonceBytes: [UInt8] { unsafe withUnsafeBytes { n, _ in unsafe Array(UnsafeRawBufferPointer(start: n, count: 12)) } }
    /// The AAD's bytes (allocates: for tests).
    var aadBytes: [UInt8] { unsafe withUnsafeBytes { _, a in unsafe Array(a) } }
}
