import COffloadCrypto
import Synchronization

/// Key material: pre-shared keys, ESP keys and salts, IKE's SKEYSEED, SK_* and KEYMAT.
///
/// What it does:
/// - The bytes live in one buffer allocated once (never grown or moved) and are overwritten
///   with zeros when the last reference goes, with OPENSSL_cleanse, which the compiler may not
///   remove as a dead store.
/// - It never prints: `description`, `debugDescription`, the mirror (`dump`, reflection) and string
///   interpolation all show `<secret, N bytes>`.
/// - It is neither `Equatable` nor `Hashable` (no comparison that stops at the first different
///   byte, no hash of a key in a dictionary); ``isEqual(to:)`` compares in constant time.
/// - Its bytes are read only inside ``withUnsafeBytes(_:)``, for the call that needs them.
///
/// What it does not guarantee (best effort):
/// - Copies made before the bytes got here are not wiped: the text of a configuration file (a
///   `String`, which cannot be cleansed), the arrays a parser or libcrypto's output passed through
///   on the way, and copies the caller makes inside ``withUnsafeBytes(_:)``.
/// - Pages may reach swap (nothing is `mlock`ed), and a process that dumps core writes them to
///   disk: key-holding commands turn core dumps off (``KeyHoldingProcess/disableCoreDumps()``).
///
/// (`@unchecked Sendable`: the buffer is written only in the initializer and read-only afterwards,
/// until the deinitializer, which runs when no reference is left.)
@safe  // owns its memory; every pointer use inside is marked `unsafe`
public final class SecretBytes: @unchecked Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Safe: allocated in init with exactly `count` bytes, freed only in deinit; never handed out
    /// beyond a `withUnsafeBytes` body.
    private let storage: UnsafeMutableRawBufferPointer

    /// For tests: called with the buffer after it is wiped and before it is freed (to observe the
    /// wipe without reading freed memory). Nil in normal use.
    static let wiped = unsafe Mutex<(@Sendable (UnsafeRawBufferPointer) -> Void)?>(nil)

    /// How many bytes.
    public var count: Int { unsafe storage.count }

    /// Secret bytes of `count`, written by `fill` in place (so that they need not pass through an
    /// array first).
    public init<E: Error>(count: Int, _ fill: (UnsafeMutableRawBufferPointer) throws(E) -> Void) throws(E) {
        precondition(count >= 0, "a negative byte count")
        // Safe: a fresh buffer of `count` bytes, zeroed before `fill` sees it. It becomes `storage`
        // only once filled: when `fill` throws, no instance exists (no deinit), so it is wiped and freed here.
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
        unsafe buffer.initializeMemory(as: UInt8.self, repeating: 0)
        do { try unsafe fill(buffer) } catch {
            unsafe offload_cleanse(buffer.baseAddress, buffer.count)
            unsafe buffer.deallocate()
            throw error
        }
        unsafe storage = unsafe buffer
    }

    /// A copy of `bytes` (which the caller should then drop, or cleanse if it is an array it owns).
    public convenience init(_ bytes: some Collection<UInt8>) {
        unsafe self.init(count: bytes.count) { out in _ = unsafe out.initializeMemory(as: UInt8.self, from: bytes) }
    }

    /// A copy of the raw bytes (from another secret's or libcrypto's buffer).
    public convenience init(copying bytes: UnsafeRawBufferPointer) {
        unsafe self.init(count: bytes.count) { out in if let base = bytes.baseAddress { unsafe out.baseAddress!.copyMemory(from: base, byteCount: bytes.count) } }
    }

    /// `count` bytes from libcrypto's random generator.
    public convenience init(random count: Int) {
        unsafe self.init(count: count) { out in
            unsafe precondition(offload_random_bytes(out.baseAddress?.assumingMemoryBound(to: UInt8.self), out.count) == 1 || out.count == 0,
                         "libcrypto's random generator failed")
        }
    }

    deinit {
        unsafe offload_cleanse(storage.baseAddress, storage.count)
        if let observe = unsafe Self.wiped.withLock({ unsafe $0 }) { unsafe observe(UnsafeRawBufferPointer(storage)) }
        unsafe storage.deallocate()
    }

    /// Reads the bytes: only inside `body`, which must not keep the pointer (and should not copy
    /// the bytes elsewhere).
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try unsafe body(UnsafeRawBufferPointer(storage))
    }

    /// Calls `body` with the bytes in a temporary array, cleansed when `body` returns: for an
    /// interface that takes an array (a fingerprint's hash). `body` must not keep the array.
    public func withTemporaryArray<R, E: Error>(_ body: ([UInt8]) throws(E) -> R) throws(E) -> R {
        var copy = unsafe [UInt8](UnsafeRawBufferPointer(storage))
        defer { unsafe copy.withUnsafeMutableBytes { unsafe offload_cleanse($0.baseAddress, $0.count) } }
        return try body(copy)
    }

    /// Whether both hold the same bytes, in time that depends only on the length (CRYPTO_memcmp).
    public func isEqual(to other: SecretBytes) -> Bool {
        guard count == other.count else { return false }
        return unsafe offload_constant_time_compare(storage.baseAddress, other.storage.baseAddress, count) == 0
    }

    /// Bytes `range` of this secret, as a secret of their own.
    public func bytes(_ range: Range<Int>) -> SecretBytes {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "a range outside the secret")
        return unsafe SecretBytes(copying: UnsafeRawBufferPointer(rebasing: storage[range]))
    }

    /// The first `n` bytes.
    public func prefix(_ n: Int) -> SecretBytes { bytes(0..<min(n, count)) }

    /// The last `n` bytes.
    public func suffix(_ n: Int) -> SecretBytes { bytes(max(0, count - n)..<count) }

    /// `a` then `b`, as one secret.
    public static func + (a: SecretBytes, b: SecretBytes) -> SecretBytes {
        unsafe SecretBytes(count: a.count + b.count) { out in
            if a.count > 0 { unsafe out.baseAddress!.copyMemory(from: a.storage.baseAddress!, byteCount: a.count) }
            if b.count > 0 { unsafe (out.baseAddress! + a.count).copyMemory(from: b.storage.baseAddress!, byteCount: b.count) }
        }
    }

    /// `a` then public bytes `b`, as one secret.
    public static func + (a: SecretBytes, b: [UInt8]) -> SecretBytes {
        a + SecretBytes(b)
    }

    /// The bytes in lowercase hex: only for files that are meant to hold keys, written with mode
    /// 0600 (SA files, Wireshark's key tables). Never for a log or an error.
    public func hexForKeyFile() -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text = [UInt8](repeating: 0, count: 2 * count)
        for unsafe (i, b) in unsafe UnsafeRawBufferPointer(storage).enumerated() {
            text[2 * i] = digits[Int(b >> 4)]
            text[2 * i + 1] = digits[Int(b & 0x0F)]
        }
        defer { unsafe text.withUnsafeMutableBytes { unsafe offload_cleanse($0.baseAddress, $0.count) } }
        return String(decoding: text, as: UTF8.self)
    }

    /// `<secret, N bytes>`.
    public var description: String { "<secret, \(count) bytes>" }
    /// `<secret, N bytes>`.
    public var debugDescription: String { description }
    /// No children: `dump` and reflection show only the description.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}
