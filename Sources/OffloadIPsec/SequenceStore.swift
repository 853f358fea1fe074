import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Why sequence numbers could not be reserved durably.
public struct SequenceStoreError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What failed.
    public var description: String
}

/// The sender's high-water marks, kept on disk so that a gateway with static keys never sends a
/// sequence number (and so an IV, a nonce) twice under one key, even after kill -9 or a power
/// cut: before a number is used, a mark at or above it is written and fsynced. A restart goes on
/// above the mark; the numbers reserved but not used before the crash are skipped.
///
/// One file for every outbound SA, a line each: `spi 0x00001001 key-fingerprint 9f86d081884c7d65
/// used-through 4194304`. The fingerprint (the first 8 bytes of SHA-256 over the SPI and the key,
/// which says nothing usable about the key) tells a new key under the same SPI, which starts at 1.
/// The file is replaced atomically (written beside, fsynced, renamed, the directory fsynced) with
/// mode 0600.
public final class SequenceStore: Sendable {
    /// The file.
    public let path: String
    /// How many numbers one write reserves ahead.
    public let block: UInt64
    let marks: Mutex<[UInt32: (fingerprint: KeyFingerprint, usedThrough: UInt64)]>

    /// Opens (or starts) the store at `path`.
    /// - Throws: ``SequenceStoreError`` when the file exists but cannot be read or parsed.
    public init(path: String, block: UInt64 = 1 << 22) throws(SequenceStoreError) {
        self.path = path
        self.block = block
        var loaded: [UInt32: (fingerprint: KeyFingerprint, usedThrough: UInt64)] = [:]
        if FileManager.default.fileExists(atPath: path) {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw SequenceStoreError(description: "\(path): cannot read the sequence high-water marks")
            }
            for (n, line) in text.split(separator: "\n").enumerated() where !line.hasPrefix("#") && !line.isEmpty {
                let f = line.split(separator: " ")
                guard f.count == 6, f[0] == "spi", f[2] == "key-fingerprint", f[4] == "used-through",
                    let spi = UInt32(f[1].dropFirst(2), radix: 16), let used = UInt64(f[5])
                else {
                    throw SequenceStoreError(description: "\(path):\(n + 1): not a high-water mark line (refusing to guess: "
                        + "a lost mark could mean a reused IV)")
                }
                loaded[spi] = (KeyFingerprint(markFileField: String(f[3])), used)
            }
        }
        marks = Mutex(loaded)
    }

    /// The fingerprint of an SA's key: 8 bytes of SHA-256 over a label, the SPI and the key, in
    /// hex. One-way, and only to tell keys apart in the mark file (mode 0600): it is never logged,
    /// and neither error messages nor counters carry it.
    public static func fingerprint(spi: UInt32, key: [UInt8]) -> KeyFingerprint {
        let label = Array("offload-ipsec sequence mark".utf8)
        let spiBytes = withUnsafeBytes(of: spi.bigEndian) { Array($0) }
        // One-way (8 bytes of SHA-256), and wrapped at once in the redacted type: the hex text exists
        // only inside KeyFingerprint, whose sole reader is the mark file's line writer.
        return KeyFingerprint(markFileField: sha256(label + spiBytes + key).prefix(8).map { String(format: "%02x", $0) }.joined())
    }

    /// The first sequence number an SA may use: one above its mark, or 1 for a new SA or key.
    public func firstUnused(spi: UInt32, fingerprint: KeyFingerprint) -> UInt64 {
        marks.withLock { m in
            guard let mark = m[spi], mark.fingerprint == fingerprint else { return 1 }
            return mark.usedThrough &+ 1
        }
    }

    /// Durably records that numbers up to `usedThrough` may be used by `spi`.
    /// - Throws: ``SequenceStoreError`` when the file cannot be written: the numbers must not be used.
    public func reserve(spi: UInt32, fingerprint: KeyFingerprint, usedThrough: UInt64) throws(SequenceStoreError) {
        let text: String = marks.withLock { m in
            m[spi] = (fingerprint, max(usedThrough, m[spi]?.fingerprint == fingerprint ? m[spi]!.usedThrough : 0))
            return "# offload ipsec: sequence numbers reserved per outbound SA (never reuse an IV). Do not edit.\n"
                + m.keys.sorted().map { spi in
                    "spi 0x\(String(format: "%08x", spi)) key-fingerprint \(m[spi]!.fingerprint.markFileField) used-through \(m[spi]!.usedThrough)"
                }.joined(separator: "\n") + "\n"
        }
        try write(text)
    }

    func write(_ text: String) throws(SequenceStoreError) {
        let temporary = path + ".new"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SequenceStoreError(description: "\(temporary): \(String(cString: strerror(errno)))") }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == bytes.count, synced, rename(temporary, path) == 0 else {
            throw SequenceStoreError(description: "\(path): could not write the sequence high-water marks durably")
        }
        let directory = (path as NSString).deletingLastPathComponent
        let dfd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }
}

/// A key's fingerprint in the mark file. Only the mark file's line writer reads its text
/// (``markFileField``); printed or interpolated anywhere else (a log line, an error, a counter) it
/// shows as `<key fingerprint>`, so no path from a key to a log exists by accident.
public struct KeyFingerprint: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The hex text the mark file holds.
    public let markFileField: String
    /// Wraps a mark file's field.
    public init(markFileField: String) { self.markFileField = markFileField }
    /// Redacted.
    public var description: String { "<key fingerprint>" }
    /// Redacted.
    public var debugDescription: String { "<key fingerprint>" }
}

/// An outbound SA's sequence numbers: handed out in runs (one per train of datagrams), never
/// twice, never past the end of the space (2^32 − 1 without ESN, 2^64 − 1 with it: RFC 4303 §3.3.3
/// says a sender must not let the counter wrap), and with a ``SequenceStore`` never past a mark
/// already on disk. Shared by every thread that encrypts with the SA.
public final class OutboundSequence: Sendable {
    /// The SPI.
    public let spi: UInt32
    /// The last number the space holds.
    public let last: UInt64
    let store: SequenceStore?
    let fingerprint: KeyFingerprint
    struct State {
        var next: UInt64
        var reservedThrough: UInt64
        var exhausted = false
        var storeFailed: String?
    }
    let state: Mutex<State>

    /// A counter starting at 1 (or above the stored mark), with the first block reserved.
    /// - Throws: ``SequenceStoreError`` when the first reservation cannot be written.
    public init(spi: UInt32, key: [UInt8], extendedSequenceNumbers: Bool, store: SequenceStore?) throws(SequenceStoreError) {
        self.spi = spi
        last = extendedSequenceNumbers ? UInt64.max : UInt64(UInt32.max)
        self.store = store
        fingerprint = SequenceStore.fingerprint(spi: spi, key: key)
        let first = store?.firstUnused(spi: spi, fingerprint: fingerprint) ?? 1
        var reserved = last
        if let store {
            reserved = min(last, first &+ store.block &- 1)
            if first <= last { try store.reserve(spi: spi, fingerprint: fingerprint, usedThrough: reserved) }
        }
        state = Mutex(State(next: first, reservedThrough: reserved, exhausted: first > last || first == 0))
    }

    /// The first of `count` consecutive numbers, or nil when they do not fit in what is left (once
    /// nothing is, the SA stops for good: only new keys go on) or the store cannot be written.
    public func reserve(_ count: Int) -> UInt64? {
        state.withLock { (s: inout State) -> UInt64? in
            guard !s.exhausted, s.storeFailed == nil else { return nil }
            let first = s.next
            let (end, overflow) = first.addingReportingOverflow(UInt64(count) - 1)
            // A run that does not fit is refused whole; the SA stops once no number is left.
            guard !overflow, end <= last else { return nil }
            if end > s.reservedThrough, let store {
                let through = min(last, end &+ store.block)
                do { try store.reserve(spi: spi, fingerprint: fingerprint, usedThrough: through) } catch {
                    s.storeFailed = "\(error)"
                    return nil
                }
                s.reservedThrough = through
            }
            s.next = end &+ 1
            if end == last { s.exhausted = true }  // the last number was handed out
            return first
        }
    }

    /// Whether the space is used up.
    public var isExhausted: Bool { state.withLock { $0.exhausted } }
    /// The next number to be handed out.
    public var next: UInt64 { state.withLock { $0.next } }
    /// Why the store could not be written, when it could not.
    public var storeFailure: String? { state.withLock { $0.storeFailed } }
}
