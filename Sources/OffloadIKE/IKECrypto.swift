import COffloadCrypto
import OffloadCrypto
import OffloadIPsec
import OffloadWire

/// Why key exchange or a key derivation failed (never with key material in it).
public struct IKECryptoError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What failed.
    public var description: String
}

/// IKEv2's pseudo-random functions (transform type 2): HMAC-SHA2 (RFC 4868), from libcrypto.
public enum IKEPRF: UInt16, Sendable, CaseIterable, CustomStringConvertible {
    /// PRF_HMAC_SHA2_256.
    case hmacSHA256 = 5
    /// PRF_HMAC_SHA2_384.
    case hmacSHA384 = 6

    /// The output's (and SK_d's, SK_pi's, SK_pr's) length.
    public var length: Int { self == .hmacSHA256 ? 32 : 48 }

    /// strongSwan's name: `prfsha256`.
    public var description: String { self == .hmacSHA256 ? "prfsha256" : "prfsha384" }

    /// prf(key, data) into `out` (at least 48 bytes): the core the overloads share.
    func mac(_ key: UnsafeRawBufferPointer, _ data: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) {
        precondition(out.count >= 48)
        let n = unsafe offload_hmac(self == .hmacSHA256 ? 256 : 384, key.baseAddress, key.count, data.baseAddress, data.count,
                             out.baseAddress?.assumingMemoryBound(to: UInt8.self))
        precondition(n == length, "libcrypto's HMAC failed")
    }

    /// prf(key, data), a public result (an AUTH payload's data).
    public func callAsFunction(_ key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 48)
        unsafe key.withUnsafeBytes { k in unsafe data.withUnsafeBytes { d in unsafe out.withUnsafeMutableBytes { unsafe mac(k, d, into: $0) } } }
        return Array(out.prefix(length))
    }

    /// prf(key, data) under a secret key, a public result (AUTH's MAC of an identity or a message).
    public func callAsFunction(_ key: SecretBytes, _ data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 48)
        unsafe key.withUnsafeBytes { k in unsafe data.withUnsafeBytes { d in unsafe out.withUnsafeMutableBytes { unsafe mac(k, d, into: $0) } } }
        return Array(out.prefix(length))
    }

    /// prf(key, secret data), a secret result: SKEYSEED = prf(Ni | Nr, g^ir).
    public func callAsFunction(_ key: [UInt8], _ data: SecretBytes) -> SecretBytes {
        secret(SecretBytes(key), data)
    }

    /// prf(secret key, secret data), a secret result: a rekeyed SKEYSEED = prf(SK_d, g^ir | Ni | Nr).
    public func callAsFunction(_ key: SecretBytes, _ data: SecretBytes) -> SecretBytes { secret(key, data) }

    /// prf(key, data) as a secret (the pad key of a pre-shared key, SKEYSEED).
    public func secret(_ key: SecretBytes, _ data: SecretBytes) -> SecretBytes {
        let full = unsafe SecretBytes(count: 48) { out in unsafe key.withUnsafeBytes { k in unsafe data.withUnsafeBytes { d in unsafe mac(k, d, into: out) } } }
        return full.prefix(length)
    }

    /// prf(key, public data) as a secret.
    public func secret(_ key: SecretBytes, _ data: [UInt8]) -> SecretBytes { secret(key, SecretBytes(data)) }

    /// prf+(key, seed) cut to `count` bytes (RFC 7296 §2.13): T1 = prf(K, S | 0x01),
    /// Tn = prf(K, Tn-1 | S | n). Written in place into the secret it returns; each round's
    /// input buffer is cleansed.
    public func plus(_ key: SecretBytes, _ seed: [UInt8], count: Int) -> SecretBytes {
        let rounds = (count + length - 1) / length
        precondition(rounds <= 255, "prf+ gives at most 255 blocks")
        let all = unsafe SecretBytes(count: rounds * length + 48) { out in
            // Tn-1 | S | n, rebuilt each round in one buffer.
            var input = [UInt8](repeating: 0, count: length + seed.count + 1)
            defer { unsafe input.withUnsafeMutableBytes { unsafe offload_cleanse($0.baseAddress, $0.count) } }
            // Safe: `input` holds length + seed.count + 1 bytes and `out` rounds * length + 48, so
            // each copy and each round's 48-byte output stay inside their buffers.
            unsafe key.withUnsafeBytes { k in
                unsafe input.withUnsafeMutableBytes { buffer in
                    var start = length  // round 1 has no Tn-1
                    for n in 1...max(1, rounds) {
                        if n > 1 {
                            start = 0
                            unsafe buffer.baseAddress!.copyMemory(from: out.baseAddress! + (n - 2) * length, byteCount: length)
                        }
                        unsafe seed.withUnsafeBytes { s in
                            if s.count > 0 { unsafe (buffer.baseAddress! + length).copyMemory(from: s.baseAddress!, byteCount: s.count) }
                        }
                        unsafe buffer[length + seed.count] = UInt8(n)
                        unsafe mac(k, UnsafeRawBufferPointer(rebasing: buffer[start...]),
                            into: UnsafeMutableRawBufferPointer(rebasing: out[((n - 1) * length)...]))
                    }
                }
            }
        }
        return all.prefix(count)
    }

    /// prf+ with a public key (for tests against published vectors).
    public func plus(_ key: [UInt8], _ seed: [UInt8], count: Int) -> SecretBytes { plus(SecretBytes(key), seed, count: count) }
}

/// Key-exchange groups (transform type 4).
public enum IKEKeyExchangeGroup: UInt16, Sendable, CaseIterable, CustomStringConvertible {
    /// 2048-bit MODP (RFC 3526), for older peers.
    case modp2048 = 14
    /// Curve25519 (RFC 8031).
    case curve25519 = 31

    /// strongSwan's name.
    public var description: String { self == .curve25519 ? "x25519" : "modp2048" }
}

/// One side's ephemeral key of a key exchange (libcrypto's), freed (and cleansed) with the object.
@safe  // owns its memory; every pointer use inside is marked `unsafe`
public final class IKEKeyPair {
    let key: OpaquePointer
    /// The group.
    public let group: IKEKeyExchangeGroup
    /// The public value, as the KE payload carries it.
    public let publicValue: [UInt8]

    /// A fresh key.
    /// - Throws: ``IKECryptoError`` when libcrypto fails.
    public init(_ group: IKEKeyExchangeGroup) throws(IKECryptoError) {
        guard let key = unsafe offload_ke_new(CInt(group.rawValue)) else { throw IKECryptoError(description: "libcrypto could not make a \(group) key") }
        unsafe self.key = unsafe key
        self.group = group
        var out = [UInt8](repeating: 0, count: 256)
        let n = unsafe out.withUnsafeMutableBufferPointer { unsafe offload_ke_public(key, $0.baseAddress, $0.count) }
        guard n > 0 else {
            unsafe offload_ke_free(key)
            throw IKECryptoError(description: "libcrypto could not export a \(group) public value")
        }
        publicValue = Array(out.prefix(n))
    }

    deinit { unsafe offload_ke_free(key) }

    /// g^ir with the peer's public value, a secret; nil when that value is invalid.
    public func shared(with peer: [UInt8]) -> SecretBytes? {
        var n = 0
        let out = unsafe SecretBytes(count: 256) { o in
            n = unsafe peer.withUnsafeBytes { p in
                unsafe offload_ke_shared(key, p.baseAddress, p.count, o.baseAddress?.assumingMemoryBound(to: UInt8.self), o.count)
            }
        }
        return n > 0 ? out.prefix(n) : nil
    }
}

extension ESPAlgorithm {
    /// The IKEv2 transform (type 1) for this AEAD: ENCR_AES_GCM_16 (20) with its key length, or
    /// ENCR_CHACHA20_POLY1305 (28).
    public var ikeTransform: IKETransform {
        switch self {
        case .aesGCM128: IKETransform(type: IKETransform.encryption, id: 20, keyLength: 128)
        case .aesGCM256: IKETransform(type: IKETransform.encryption, id: 20, keyLength: 256)
        case .chacha20Poly1305: IKETransform(type: IKETransform.encryption, id: 28)
        }
    }

    /// The AEAD a transform names (nil: one this end does not speak).
    public init?(ikeTransform t: IKETransform) {
        switch (t.id, t.keyLength) {
        case (20, 128): self = .aesGCM128
        case (20, 256): self = .aesGCM256
        case (28, nil): self = .chacha20Poly1305
        default: return nil
        }
    }

    /// Key and salt, as KEYMAT is cut (RFC 5282 §7, RFC 7634 §2).
    public var keyMaterialLength: Int { keyLength + ESPAlgorithm.saltLength }
}

/// The keys of an IKE SA (RFC 7296 §2.14), with an AEAD (so no SK_a): ``SecretBytes``, wiped
/// when the SA goes, printed as `<secret, N bytes>`.
public struct IKESAKeys: CustomStringConvertible {
    /// For new CHILD_SAs' and rekeyed IKE SAs' keys.
    public var d: SecretBytes
    /// Encryption, initiator to responder (key ‖ salt).
    public var ei: SecretBytes
    /// Encryption, responder to initiator.
    public var er: SecretBytes
    /// The initiator's AUTH key.
    public var pi: SecretBytes
    /// The responder's AUTH key.
    public var pr: SecretBytes

    /// {SK_d | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) (SK_ai/SK_ar are empty with an AEAD).
    public static func derive(prf: IKEPRF, aead: ESPAlgorithm, skeyseed: SecretBytes, ni: [UInt8], nr: [UInt8],
                              spii: UInt64, spir: UInt64) -> IKESAKeys {
        let e = aead.keyMaterialLength, p = prf.length
        let m = prf.plus(skeyseed, ni + nr + bigEndianBytes(spii) + bigEndianBytes(spir), count: 3 * p + 2 * e)
        return IKESAKeys(d: m.bytes(0..<p), ei: m.bytes(p..<(p + e)), er: m.bytes((p + e)..<(p + 2 * e)),
                         pi: m.bytes((p + 2 * e)..<(2 * p + 2 * e)), pr: m.bytes((2 * p + 2 * e)..<(3 * p + 2 * e)))
    }

    /// The keys' lengths only.
    public var description: String { "IKESAKeys(d: \(d), ei: \(ei), er: \(er), pi: \(pi), pr: \(pr))" }
}

/// Seals and opens SK payloads with one direction's key (RFC 5282 for AES-GCM, RFC 7634 for
/// ChaCha20-Poly1305): IV 8 bytes, salt the last 4 of the key material, ICV 16, AAD the message
/// from the IKE header through the SK payload's generic header.
public final class IKEMessageCipher {
    let sealer: AEADContext
    let opener: AEADContext
    let sealSalt: SecretBytes, openSalt: SecretBytes
    /// The next IV: a counter, so that no IV repeats under the key (a retransmission resends the
    /// same bytes; it is never sealed again).
    var nextIV: UInt64 = 1

    /// A cipher that seals with `outbound` and opens with `inbound` (each key ‖ salt).
    /// - Throws: ``CryptoError``.
    public init(_ algorithm: ESPAlgorithm, outbound: SecretBytes, inbound: SecretBytes) throws(CryptoError) {
        let k = algorithm.keyLength
        sealer = try AEADContext(algorithm, key: outbound.prefix(k), sealing: true)
        opener = try AEADContext(algorithm, key: inbound.prefix(k), sealing: false)
        sealSalt = outbound.suffix(4)
        openSalt = inbound.suffix(4)
    }

    static let ivLength = 8, icvLength = 16

    /// The whole message: `header` (its length and next payload set here), an SK payload holding `payloads`.
    public func seal(header: IKEHeader, payloads: [IKEPayload]) -> [UInt8] {
        let (first, plain) = IKEPayloadChain.encode(payloads)
        let plaintext = plain + [0]  // no padding, pad length 0
        var h = header
        h.nextPayload = IKEPayloadType.encrypted.rawValue
        let skLength = 4 + Self.ivLength + plaintext.count + Self.icvLength
        h.length = UInt32(IKEHeader.length + skLength)
        let skHeader: [UInt8] = [first, 0, UInt8(skLength >> 8), UInt8(skLength & 0xFF)]
        let aad = h.bytes + skHeader
        let iv = bigEndianBytes(nextIV)
        nextIV += 1
        guard let sealed = unsafe sealer.seal(nonce: sealSalt.withUnsafeBytes { unsafe Array($0) } + iv, aad: aad, plaintext) else {
            preconditionFailure("libcrypto failed to seal an IKE message")
        }
        return aad + iv + sealed
    }

    /// Opens a message's SK payload (at `offset` in the chain after the header, `firstInner` its
    /// inner first type, `body` its body); the inner payloads' raw chain.
    /// - Throws: ``IKEParseError`` when the ICV is wrong (the message is then dropped, never answered).
    func open(message: [UInt8], skOffset: Int, firstInner: UInt8, body: [UInt8]) throws(IKEParseError) -> IKEPayloadChain.Raw {
        guard body.count >= Self.ivLength + Self.icvLength + 1 else { throw IKEParseError("SK payload: too short to hold an IV and ICV") }
        let aad = Array(message[0..<(IKEHeader.length + skOffset + 4)])
        guard let data = unsafe opener.open(nonce: openSalt.withUnsafeBytes { unsafe Array($0) } + Array(body[0..<Self.ivLength]), aad: aad,
                                     Array(body[Self.ivLength...])) else {
            throw IKEParseError("SK payload: the ICV does not verify", .authenticationFailed)
        }
        let pad = Int(data.last!)
        guard pad + 1 <= data.count else { throw IKEParseError("SK payload: a pad length longer than the plaintext") }
        let inner = data[0..<(data.count - pad - 1)]
        return try IKEPayloadChain.walk(inner, first: firstInner)
    }
}

/// NAT detection hashes (RFC 7296 §2.23): SHA-1(SPIi | SPIr | address | port).
public func natDetectionHash(spii: UInt64, spir: UInt64, address: IPAddress, port: UInt16) -> [UInt8] {
    let data = bigEndianBytes(spii) + bigEndianBytes(spir) + addressBytes(address) + bigEndianBytes(port)
    var digest = [UInt8](repeating: 0, count: 20)
    _ = unsafe data.withUnsafeBytes { d in unsafe digest.withUnsafeMutableBufferPointer { unsafe offload_sha1(d.baseAddress, d.count, $0.baseAddress) } }
    return digest
}
