import OffloadWire
import Testing

@testable import OffloadIPsec

@Suite("ESP nonce and AAD: one builder for seal and open, in RFC 4106 §4-5 / RFC 4303 §2.2.1 / RFC 7634 §2 layout")
struct ESPNonceAndAADTests {
    struct Case: Sendable, CustomStringConvertible {
        var name: String, salt: String, iv: UInt64, spi: UInt32, sequence: UInt64, esn: Bool, nonce: String, aad: String
        var description: String { name }
    }

    /// The SPI, sequence number, salt and IV of the AES-GCM vectors of draft-mcgrew-gcm-test-01 (the
    /// examples behind RFC 4106) and of RFC 7634 Appendix A, with the nonce and AAD those documents give.
    static let cases: [Case] = [
        Case(name: "AES-128, 32-bit sequence", salt: "cafebabe", iv: 0xface_dbad_deca_f888, spi: 0x0000_a5f8, sequence: 0xa, esn: false,
             nonce: "cafebabefacedbaddecaf888", aad: "0000a5f80000000a"),
        Case(name: "AES-128, ESN: the high half authenticated, never sent", salt: "2e443b68", iv: 0x4956_ed7e_3b24_4cfe,
             spi: 0x0000_4321, sequence: 0x8765_4321_0000_0000, esn: true,
             nonce: "2e443b684956ed7e3b244cfe", aad: "000043218765432100000000"),
        Case(name: "AES-256", salt: "11223344", iv: 0x0102_0304_0506_0708, spi: 0x4a2c_bfe3, sequence: 2, esn: false,
             nonce: "112233440102030405060708", aad: "4a2cbfe300000002"),
        Case(name: "RFC 7634 Appendix A (ChaCha20-Poly1305)", salt: "a0a1a2a3", iv: 0x1011_1213_1415_1617, spi: 0x0102_0304,
             sequence: 5, esn: false, nonce: "a0a1a2a31011121314151617", aad: "0102030400000005"),
    ]

    @Test("salt ‖ IV and SPI ‖ sequence (or SPI ‖ ESN high ‖ low), byte for byte", arguments: cases)
    func knownAnswer(_ c: Case) {
        let salt = hex(c.salt)
        let built = salt.withUnsafeBytes {
            ESPNonceAndAAD(salt: $0, iv: c.iv, spi: c.spi, sequence: c.sequence, extendedSequenceNumbers: c.esn)
        }
        #expect(built.nonceBytes == hex(c.nonce))
        #expect(built.aadBytes == hex(c.aad))
        #expect(built.aadLength == (c.esn ? 12 : 8))
    }

    @Test("without ESN only the low 32 bits are in the AAD; with ESN the high half too")
    func esnHalves() {
        let salt: [UInt8] = [1, 2, 3, 4]
        let sequence: UInt64 = 0x0000_0001_0000_0002
        let plain = salt.withUnsafeBytes { ESPNonceAndAAD(salt: $0, iv: sequence, spi: 7, sequence: sequence, extendedSequenceNumbers: false) }
        let esn = salt.withUnsafeBytes { ESPNonceAndAAD(salt: $0, iv: sequence, spi: 7, sequence: sequence, extendedSequenceNumbers: true) }
        #expect(plain.aadBytes == [0, 0, 0, 7, 0, 0, 0, 2])
        #expect(esn.aadBytes == [0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 2])
        #expect(plain.nonceBytes == esn.nonceBytes && esn.nonceBytes == [1, 2, 3, 4, 0, 0, 0, 1, 0, 0, 0, 2])
    }
}
