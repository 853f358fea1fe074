import COffloadCrypto

/// The AEADs this project seals with (ESP's and IKE's SK payload today; any tunnel protocol's
/// tomorrow), by the names strongSwan and `ip xfrm` users know. OffloadIPsec calls it `ESPAlgorithm`.
public enum AEADAlgorithm: String, CaseIterable, Hashable, Sendable, Codable, CustomStringConvertible {
    /// AES-GCM with a 16-byte ICV and a 128-bit key (RFC 4106).
    case aesGCM128 = "aes128gcm16"
    /// AES-GCM with a 16-byte ICV and a 256-bit key (RFC 4106).
    case aesGCM256 = "aes256gcm16"
    /// ChaCha20-Poly1305 (RFC 7634).
    case chacha20Poly1305 = "chacha20poly1305"

    /// The key's length, without the salt.
    public var keyLength: Int { self == .aesGCM128 ? 16 : 32 }
    /// The salt's length: the last bytes of the key material (RFC 4106 §8.1, RFC 7634 §2).
    public static let saltLength = 4

    /// Also accepted in SA files: the `ip xfrm` and Wireshark spellings.
    public init?(name: String) {
        switch name.lowercased() {
        case "aes128gcm16", "aes-gcm-128", "aes128gcm": self = .aesGCM128
        case "aes256gcm16", "aes-gcm-256", "aes256gcm": self = .aesGCM256
        case "chacha20poly1305", "chacha20-poly1305", "rfc7539esp": self = .chacha20Poly1305
        default: return nil
        }
    }

    /// The name.
    public var description: String { rawValue }

    var shimIdentifier: CInt {
        switch self {
        case .aesGCM128: CInt(OFFLOAD_AEAD_AES_128_GCM)
        case .aesGCM256: CInt(OFFLOAD_AEAD_AES_256_GCM)
        case .chacha20Poly1305: CInt(OFFLOAD_AEAD_CHACHA20_POLY1305)
        }
    }
}

/// Why a crypto context could not be made.
public struct CryptoError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What failed (never key material).
    public var description: String
}

/// One AEAD context of OpenSSL's libcrypto, for sealing or for opening, with its key schedule
/// set once. Not thread-safe: one per thread and SA. Each call sets only the 12-byte nonce, so
/// nothing is allocated per packet.
///
/// (`@unchecked Sendable`: handed from the thread that makes it to the one that uses it, never shared.)
@safe  // owns its memory; every pointer use inside is marked `unsafe`
public final class AEADContext: @unchecked Sendable {
    let context: OpaquePointer
    /// The algorithm.
    public let algorithm: AEADAlgorithm
    /// Whether it seals (else it opens).
    public let seals: Bool

    /// A context for `key` (without the salt), which libcrypto copies into its context (and
    /// cleanses when the context is freed).
    /// - Throws: ``CryptoError`` when the key length is wrong or libcrypto fails.
    public init(_ algorithm: AEADAlgorithm, key: SecretBytes, sealing: Bool) throws(CryptoError) {
        guard key.count == algorithm.keyLength else {
            throw CryptoError(description: "\(algorithm) needs a \(algorithm.keyLength)-byte key, got \(key.count) bytes")
        }
        let made = unsafe key.withUnsafeBytes {
            unsafe offload_aead_new(algorithm.shimIdentifier, $0.baseAddress?.assumingMemoryBound(to: UInt8.self), $0.count, sealing ? 1 : 0)
        }
        guard let made = unsafe made else { throw CryptoError(description: "libcrypto could not make a \(algorithm) context") }
        unsafe context = unsafe made
        self.algorithm = algorithm
        seals = sealing
    }

    /// A context for `key` (without the salt), from an array (tests and tools).
    /// - Throws: ``CryptoError`` when the key length is wrong or libcrypto fails.
    public convenience init(_ algorithm: AEADAlgorithm, key: [UInt8], sealing: Bool) throws(CryptoError) {
        try self.init(algorithm, key: SecretBytes(key), sealing: sealing)
    }

    deinit { unsafe offload_aead_free(context) }

    /// Seals the pieces then `trailer` into `out` (the ciphertext, as long as the plaintext) and
    /// the 16-byte tag into `tag`.
    /// - Returns: false when libcrypto failed (nothing usable was written).
    public func seal(nonce: UnsafeRawPointer, aad: UnsafeRawBufferPointer, pieces: (UnsafeRawBufferPointer, UnsafeRawBufferPointer),
                     trailer: UnsafeRawBufferPointer, out: UnsafeMutableRawPointer, tag: UnsafeMutableRawPointer) -> Bool {
        var list = unsafe (offload_piece(base: pieces.0.baseAddress, length: pieces.0.count),
                    offload_piece(base: pieces.1.baseAddress, length: pieces.1.count))
        let n = unsafe withUnsafeMutableBytes(of: &list) { raw in
            unsafe offload_aead_seal(context, nonce.assumingMemoryBound(to: UInt8.self), aad.baseAddress?.assumingMemoryBound(to: UInt8.self),
                              aad.count, raw.baseAddress!.assumingMemoryBound(to: offload_piece.self), 2,
                              trailer.baseAddress?.assumingMemoryBound(to: UInt8.self), trailer.count,
                              out.assumingMemoryBound(to: UInt8.self), tag.assumingMemoryBound(to: UInt8.self))
        }
        return unsafe n == pieces.0.count + pieces.1.count + trailer.count
    }

    /// Opens `data` in place, checking `tag` (compared in constant time by libcrypto).
    /// - Returns: true only when the tag is right; otherwise `data` is garbage.
    public func open(nonce: UnsafeRawPointer, aad: UnsafeRawBufferPointer, data: UnsafeMutableRawBufferPointer,
                     tag: UnsafeRawPointer) -> Bool {
        unsafe offload_aead_open(context, nonce.assumingMemoryBound(to: UInt8.self), aad.baseAddress?.assumingMemoryBound(to: UInt8.self),
                          aad.count, data.baseAddress?.assumingMemoryBound(to: UInt8.self), data.count,
                          tag.assumingMemoryBound(to: UInt8.self)) == 1
    }
}

extension AEADContext {
    /// Seals `plaintext` whole (for messages, not packets: it allocates): ciphertext ‖ 16-byte tag,
    /// nil when libcrypto failed. `nonce` is 12 bytes.
    public func seal(nonce: [UInt8], aad: [UInt8], _ plaintext: [UInt8]) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: plaintext.count + 16)
        let ok = unsafe plaintext.withUnsafeBytes { p in
            unsafe nonce.withUnsafeBytes { n in
                unsafe aad.withUnsafeBytes { a in
                    unsafe out.withUnsafeMutableBytes { o in
                        unsafe seal(nonce: n.baseAddress!, aad: a, pieces: (p, UnsafeRawBufferPointer(start: nil, count: 0)),
                             trailer: UnsafeRawBufferPointer(start: nil, count: 0), out: o.baseAddress!, tag: o.baseAddress! + plaintext.count)
                    }
                }
            }
        }
        return ok ? out : nil
    }

    /// Opens ciphertext ‖ 16-byte tag: the plaintext, or nil when the tag is wrong (or too short).
    public func open(nonce: [UInt8], aad: [UInt8], _ sealed: [UInt8]) -> [UInt8]? {
        guard sealed.count >= 16 else { return nil }
        var data = Array(sealed.dropLast(16))
        let tag = Array(sealed.suffix(16))
        let authentic = unsafe nonce.withUnsafeBytes { n in
            unsafe aad.withUnsafeBytes { a in
                unsafe tag.withUnsafeBytes { t in unsafe data.withUnsafeMutableBytes { d in unsafe open(nonce: n.baseAddress!, aad: a, data: d, tag: t.baseAddress!) } }
            }
        }
        return authentic ? data : nil
    }
}

/// SHA-256 (libcrypto) over public bytes `prefix` then a secret, hashed in a buffer that is itself a secret
/// (wiped when released): the secret's bytes are never copied into a plain array on the way.
public func sha256(_ prefix: [UInt8], then secret: SecretBytes) -> [UInt8] {
    let joined = SecretBytes(prefix) + secret
    var digest = [UInt8](repeating: 0, count: 32)
    // Safe: libcrypto reads joined.count bytes of the secret's own buffer and writes 32 into digest's.
    unsafe joined.withUnsafeBytes { b in unsafe digest.withUnsafeMutableBufferPointer { _ = unsafe offload_sha256(b.baseAddress, b.count, $0.baseAddress) } }
    return digest
}

/// Whether two byte strings are equal, in time that depends only on their length.
public func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    return unsafe a.withUnsafeBytes { x in unsafe b.withUnsafeBytes { y in unsafe offload_constant_time_compare(x.baseAddress, y.baseAddress, a.count) == 0 } }
}

/// `count` random bytes from libcrypto's generator (for keys made on the spot).
public func randomBytes(_ count: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    let ok = unsafe bytes.withUnsafeMutableBufferPointer { unsafe offload_random_bytes($0.baseAddress, $0.count) }
    precondition(ok == 1, "libcrypto's random generator failed")
    return bytes
}
