import COffloadCrypto
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

    /// prf(key, data).
    public func callAsFunction(_ key: [UInt8], _ data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 48)
        let n = key.withUnsafeBytes { k in
            data.withUnsafeBytes { d in
                out.withUnsafeMutableBufferPointer { o in
                    offload_hmac(self == .hmacSHA256 ? 256 : 384, k.baseAddress, k.count, d.baseAddress, d.count, o.baseAddress)
                }
            }
        }
        precondition(n == length, "libcrypto's HMAC failed")
        return Array(out.prefix(length))
    }

    /// prf+(key, seed) cut to `count` bytes (RFC 7296 §2.13): T1 = prf(K, S | 0x01),
    /// Tn = prf(K, Tn-1 | S | n).
    public func plus(_ key: [UInt8], _ seed: [UInt8], count: Int) -> [UInt8] {
        var out: [UInt8] = []
        var previous: [UInt8] = []
        var n: UInt8 = 1
        while out.count < count {
            previous = self(key, previous + seed + [n])
            out += previous
            n &+= 1
        }
        return Array(out.prefix(count))
    }
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
public final class IKEKeyPair {
    let key: OpaquePointer
    /// The group.
    public let group: IKEKeyExchangeGroup
    /// The public value, as the KE payload carries it.
    public let publicValue: [UInt8]

    /// A fresh key.
    /// - Throws: ``IKECryptoError`` when libcrypto fails.
    public init(_ group: IKEKeyExchangeGroup) throws(IKECryptoError) {
        guard let key = offload_ke_new(CInt(group.rawValue)) else { throw IKECryptoError(description: "libcrypto could not make a \(group) key") }
        self.key = key
        self.group = group
        var out = [UInt8](repeating: 0, count: 256)
        let n = out.withUnsafeMutableBufferPointer { offload_ke_public(key, $0.baseAddress, $0.count) }
        guard n > 0 else {
            offload_ke_free(key)
            throw IKECryptoError(description: "libcrypto could not export a \(group) public value")
        }
        publicValue = Array(out.prefix(n))
    }

    deinit { offload_ke_free(key) }

    /// g^ir with the peer's public value; nil when that value is invalid.
    public func shared(with peer: [UInt8]) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: 256)
        let n = peer.withUnsafeBytes { p in
            out.withUnsafeMutableBufferPointer { offload_ke_shared(key, p.baseAddress, p.count, $0.baseAddress, $0.count) }
        }
        return n > 0 ? Array(out.prefix(n)) : nil
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

/// The keys of an IKE SA (RFC 7296 §2.14), with an AEAD (so no SK_a).
public struct IKESAKeys {
    /// For new CHILD_SAs' and rekeyed IKE SAs' keys.
    public var d: [UInt8]
    /// Encryption, initiator to responder (key ‖ salt).
    public var ei: [UInt8]
    /// Encryption, responder to initiator.
    public var er: [UInt8]
    /// The initiator's AUTH key.
    public var pi: [UInt8]
    /// The responder's AUTH key.
    public var pr: [UInt8]

    /// {SK_d | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr) (SK_ai/SK_ar are empty with an AEAD).
    public static func derive(prf: IKEPRF, aead: ESPAlgorithm, skeyseed: [UInt8], ni: [UInt8], nr: [UInt8],
                              spii: UInt64, spir: UInt64) -> IKESAKeys {
        let e = aead.keyMaterialLength, p = prf.length
        let m = prf.plus(skeyseed, ni + nr + bigEndianBytes(spii) + bigEndianBytes(spir), count: 3 * p + 2 * e)
        return IKESAKeys(d: Array(m[0..<p]), ei: Array(m[p..<(p + e)]), er: Array(m[(p + e)..<(p + 2 * e)]),
                         pi: Array(m[(p + 2 * e)..<(2 * p + 2 * e)]), pr: Array(m[(2 * p + 2 * e)..<(3 * p + 2 * e)]))
    }
}

/// Seals and opens SK payloads with one direction's key (RFC 5282 for AES-GCM, RFC 7634 for
/// ChaCha20-Poly1305): IV 8 bytes, salt the last 4 of the key material, ICV 16, AAD the message
/// from the IKE header through the SK payload's generic header.
public final class IKEMessageCipher {
    let sealer: AEADContext
    let opener: AEADContext
    let sealSalt: [UInt8], openSalt: [UInt8]
    /// The next IV: a counter, so that no IV repeats under the key (a retransmission resends the
    /// same bytes; it is never sealed again).
    var nextIV: UInt64 = 1

    /// A cipher that seals with `outbound` and opens with `inbound` (each key ‖ salt).
    /// - Throws: ``CryptoError``.
    public init(_ algorithm: ESPAlgorithm, outbound: [UInt8], inbound: [UInt8]) throws(CryptoError) {
        let k = algorithm.keyLength
        sealer = try AEADContext(algorithm, key: Array(outbound.prefix(k)), sealing: true)
        opener = try AEADContext(algorithm, key: Array(inbound.prefix(k)), sealing: false)
        sealSalt = Array(outbound.suffix(4))
        openSalt = Array(inbound.suffix(4))
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
        guard let sealed = sealer.seal(nonce: sealSalt + iv, aad: aad, plaintext) else {
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
        guard let data = opener.open(nonce: openSalt + Array(body[0..<Self.ivLength]), aad: aad, Array(body[Self.ivLength...])) else {
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
    _ = data.withUnsafeBytes { d in digest.withUnsafeMutableBufferPointer { offload_sha1(d.baseAddress, d.count, $0.baseAddress) } }
    return digest
}
