import Foundation
import OffloadCrypto
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Why sequence numbers could not be reserved durably, or why a key may not send here.
public struct SequenceStoreError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What failed (never a key, never a fingerprint, never the name of a mark file, which is one).
    public var description: String
}

/// The sender's high-water marks, kept on disk per key so that a gateway with static keys never
/// sends a sequence number (and so an IV, a nonce) twice under one key: not after kill -9 or a
/// power cut, not when the SA file moves or another one holds the same key, not from a second
/// process started with the same key. Before a number is used, a mark at or above it is written
/// and fsynced. A restart goes on above the mark; the numbers reserved but not used before the
/// crash are skipped.
///
/// The store is a directory of this machine (``defaultDirectory(environment:)``), owned by the
/// user and writable by no one else, holding for each key that has sent two files named by the
/// key's fingerprint (``fingerprint(key:)``: one-way, over the key and its salt only, so the same
/// key under another SPI or in another SA file finds the same mark):
/// - `FINGERPRINT.mark`, `used-through N`: replaced atomically (written to a name of its own,
///   created exclusively without following links, fsynced, renamed, the directory fsynced), mode 0600;
/// - `FINGERPRINT.lock`: locked (`flock`, exclusive) by the one process that sends with the key,
///   for as long as it runs, and naming that process (its pid and command line). A second process
///   with the key refuses to start and names the first.
///
/// Files or a directory that another user owns, or that others may change, are refused: a mark
/// someone else can lower is no mark.
public final class SequenceStore: Sendable {
    /// The directory.
    public let directory: String
    /// How many numbers one write reserves ahead.
    public let block: UInt64
    /// The directory, open for the store's life: every file is reached from it, never by path again.
    let directoryFD: Int32
    /// What the lock files of this process say: `pid N: COMMAND`.
    let holder: String
    /// Marks read from files of the old form (one file per SA file, marks by SPI and a fingerprint
    /// over the SPI and the key).
    let imported: [ImportedMark]

    struct ImportedMark {
        var spi: UInt32
        var fingerprint: KeyFingerprint
        var usedThrough: UInt64
    }

    /// Opens the store in `directory`, creating it (mode 0700) when missing, and reads the marks of
    /// `importing`: mark files of the old form (`spi 0x… key-fingerprint … used-through N` lines),
    /// skipped when absent, so that a key goes on above what they recorded.
    /// - Throws: ``SequenceStoreError`` when the directory cannot be made or opened, another user
    ///   owns it, others may write in it, or an old mark file cannot be trusted or read.
    public init(directory: String, block: UInt64 = 1 << 22, importing legacyFiles: [String] = []) throws(SequenceStoreError) {
        self.directory = directory
        self.block = max(1, block)
        if !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw SequenceStoreError(description: "\(directory): cannot make the directory of sequence marks")
            }
        }
        let fd = unsafe open(directory, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            throw SequenceStoreError(description: "\(directory): cannot open the directory of sequence marks (\(unsafe String(cString: strerror(errno))); "
                + "a link is refused)")
        }
        do throws(SequenceStoreError) {
            try Self.checkOwner(fd, directory: true, what: directory)
            var marks: [ImportedMark] = []
            for file in legacyFiles { marks += try Self.readOldForm(file) }
            imported = marks
        } catch {
            close(fd)
            throw error
        }
        directoryFD = fd
        holder = Self.thisProcess()
    }

    deinit { close(directoryFD) }

    /// Where this machine keeps the marks: `/var/lib/offload-ipsec/marks` for root (systemd's
    /// `StateDirectory=offload-ipsec`), else `$XDG_STATE_HOME/offload-ipsec/marks` or
    /// `~/.local/state/offload-ipsec/marks`.
    public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if geteuid() == 0 { return "/var/lib/offload-ipsec/marks" }
        if let state = environment["XDG_STATE_HOME"], state.hasPrefix("/") { return state + "/offload-ipsec/marks" }
        var home = environment["HOME"] ?? ""
        // Safe: getpwuid's entry is read at once, before any other call could reuse it.
        if !home.hasPrefix("/"), let entry = unsafe getpwuid(geteuid()), let dir = unsafe entry.pointee.pw_dir { home = unsafe String(cString: dir) }
        return home + "/.local/state/offload-ipsec/marks"
    }

    /// The fingerprint of a key (with its salt): 16 bytes of SHA-256 over a label and the key, in
    /// hex. Neither the SPI nor the SA file is in it: the nonce is made of the salt and the sequence
    /// number under the key, so the same key anywhere shares one count. One-way; it names the key's
    /// mark files (in a directory only the user can read), is never logged, and neither error
    /// messages nor counters carry it.
    public static func fingerprint(key: SecretBytes) -> KeyFingerprint {
        // One-way (the key is hashed where it lies, never copied out), and wrapped at once in the
        // redacted type: the hex text exists only inside KeyFingerprint, whose sole readers name the
        // key's mark files.
        KeyFingerprint(digest: sha256(Array("offload-ipsec sequence mark v2".utf8), then: key).prefix(16))
    }

    /// The fingerprint of the old form's mark files: 8 bytes of SHA-256 over a label, the SPI and
    /// the key (only to find an old mark of the key under any of its SPIs, and to write one in tests).
    public static func oldFormFingerprint(spi: UInt32, key: SecretBytes) -> KeyFingerprint {
        // Safe: the bytes are copied out while the value they view exists.
        let spiBytes = unsafe withUnsafeBytes(of: spi.bigEndian) { unsafe Array($0) }
        return KeyFingerprint(digest: sha256(Array("offload-ipsec sequence mark".utf8) + spiBytes, then: key).prefix(8))
    }

    /// Takes `key` for this process (its lock file, held until the returned mark goes) and reads
    /// its mark. `spi` only names the SA in messages.
    /// - Throws: ``SequenceStoreError`` when another process (or another SA of this one) sends with
    ///   the key, naming it, or when the key's files cannot be trusted or read.
    public func claim(key: SecretBytes, spi: UInt32) throws(SequenceStoreError) -> KeyMark {
        let fingerprint = Self.fingerprint(key: key)
        let name = fingerprint.markFileField
        let sa = "the key of SPI 0x\(String(format: "%08x", spi))"
        // A key whose lock file is here has sent from this directory before: from then on its mark must be
        // here too (one is written as soon as the key is first claimed), and a missing one was lost.
        var lockInfo = stat()
        let sentHereBefore = unsafe fstatat(directoryFD, name + ".lock", &lockInfo, AT_SYMLINK_NOFOLLOW) == 0
        let lockFD = unsafe openat(directoryFD, name + ".lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard lockFD >= 0 else {
            throw SequenceStoreError(description: "\(directory): cannot open the lock of \(sa) (\(unsafe String(cString: strerror(errno))))")
        }
        var used: UInt64 = 0
        var markMissing = false
        do throws(SequenceStoreError) {
            try Self.checkOwner(lockFD, directory: false, what: "\(directory): the lock file of \(sa)")
            guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
                let reason = errno
                guard reason == EWOULDBLOCK else {
                    throw SequenceStoreError(description: "\(directory): cannot lock \(sa) (\(unsafe String(cString: strerror(reason))))")
                }
                throw SequenceStoreError(description: "\(sa) is already sending in \(Self.describeHolder(lockFD)): two senders with "
                    + "one key would send the same nonces (the same key under another SPI or in another SA file counts too); "
                    + "stop that one first, or give this one its own keys")
            }
            // Who holds the key, for the next one that tries: informational, so not fsynced.
            let record = Array((holder + "\n").utf8)
            _ = ftruncate(lockFD, 0)
            // Safe: pwrite reads record.count bytes from the array's own storage.
            _ = unsafe record.withUnsafeBytes { unsafe pwrite(lockFD, $0.baseAddress, $0.count, 0) }
            let markFD = unsafe openat(directoryFD, name + ".mark", O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            markMissing = markFD < 0 && errno == ENOENT
            if markMissing && sentHereBefore {
                throw SequenceStoreError(description: "\(directory): the mark of \(sa) is missing, though the key has sent from here "
                    + "before: refusing to start its numbers again at 1 (a reused nonce). Put the mark back from a backup, or give "
                    + "this SA new keys")
            }
            if markFD >= 0 {
                defer { close(markFD) }
                try Self.checkOwner(markFD, directory: false, what: "\(directory): the mark file of \(sa)")
                guard let mark = Self.parseMark(Self.readAll(markFD)) else {
                    throw SequenceStoreError(description: "\(directory): the mark of \(sa) is not a high-water mark (refusing to guess: "
                        + "a lost mark could mean a reused nonce)")
                }
                used = mark
            } else if errno != ENOENT {
                throw SequenceStoreError(description: "\(directory): cannot read the mark of \(sa) (\(unsafe String(cString: strerror(errno))))")
            }
            for old in imported where old.fingerprint == Self.oldFormFingerprint(spi: old.spi, key: key) {
                used = max(used, old.usedThrough)
            }
            removeTemporaries(of: name)
        } catch {
            close(lockFD)
            throw error
        }
        // From here the mark owns the lock's descriptor (it closes it when it goes).
        let mark = KeyMark(store: self, fingerprint: fingerprint, spi: spi, lockFD: lockFD, usedThrough: used)
        // A key new here gets its mark at once, so that its lock never stands without one.
        if markMissing { try mark.write(used) }
        return mark
    }

    /// Removes the temporary files a writer of this key left when it died between creating and
    /// renaming one (no one else writes them: the key's lock is held).
    func removeTemporaries(of name: String) {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        for entry in entries where entry.hasPrefix(name + ".mark.") && entry.hasSuffix(".tmp") {
            _ = unsafe unlinkat(directoryFD, entry, 0)
        }
    }

    /// The temporary name a process writes a key's mark to before renaming it into place: its own
    /// (one writer per key and process at a time, under the key's lock and the mark's mutex).
    static func temporaryName(_ name: String, pid: pid_t = getpid()) -> String { "\(name).mark.\(pid).tmp" }

    /// `pid N: COMMAND LINE` of this process.
    static func thisProcess() -> String {
        let raw = FileManager.default.contents(atPath: "/proc/self/cmdline") ?? Data()
        let command = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }.joined(separator: " ")
        return "pid \(getpid()): \(command.prefix(400))"
    }

    /// Who holds a lock, as its lock file says.
    static func describeHolder(_ fd: Int32) -> String {
        let text = String(decoding: readAll(fd), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix("pid "), let pid = Int32(text.dropFirst(4).prefix { $0.isNumber }) else {
            return "another process (it has not said which yet)"
        }
        let line = text.split(separator: "\n").first.map(String.init) ?? text
        if pid == getpid() { return "this process, for another of its SAs (\(line))" }
        // The holder may have locked and not written yet: the file then still names the one before.
        if kill(pid, 0) != 0 && errno == ESRCH { return "another process (it has not said which yet; the one before was \(line))" }
        return "another process (\(line))"
    }

    /// Up to 4 KiB from the start of a file.
    static func readAll(_ fd: Int32) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 4096)
        // Safe: pread writes at most bytes.count bytes into the array's own storage.
        let n = unsafe bytes.withUnsafeMutableBytes { unsafe pread(fd, $0.baseAddress, $0.count, 0) }
        return n > 0 ? Array(bytes.prefix(n)) : []
    }

    /// The mark in a mark file's text (`#` comments, one `used-through N` line), or nil.
    static func parseMark(_ bytes: [UInt8]) -> UInt64? {
        var mark: UInt64?
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            let f = line.split(separator: " ")
            guard mark == nil, f.count == 2, f[0] == "used-through", let n = UInt64(f[1]) else { return nil }
            mark = n
        }
        return mark
    }

    /// Refuses a file or directory of another user's, one that others may change (a directory, an
    /// old mark file: importing one can only raise a mark) or read or change (a file of the store),
    /// and a file that is not a regular file. `chmod` is what the message tells to type.
    static func checkOwner(_ fd: Int32, directory: Bool, what: String, othersMayRead: Bool = false,
                           chmod: String = "chmod 600 the files of the store") throws(SequenceStoreError) {
        var info = stat()
        guard unsafe fstat(fd, &info) == 0 else { throw SequenceStoreError(description: "\(what): \(unsafe String(cString: strerror(errno)))") }
        guard directory || info.st_mode & S_IFMT == S_IFREG else { throw SequenceStoreError(description: "\(what): not a regular file") }
        guard info.st_uid == geteuid() else {
            throw SequenceStoreError(description: "\(what): owned by uid \(info.st_uid), not by this user (uid \(geteuid())): "
                + "a mark someone else can lower could repeat a nonce")
        }
        let mode = info.st_mode & 0o777
        guard mode & (directory || othersMayRead ? 0o022 : 0o077) == 0 else {
            throw SequenceStoreError(description: "\(what): mode \(String(mode, radix: 8)) lets others "
                + (directory || othersMayRead ? "change" : "read or change") + " the sequence marks: " + (directory ? "chmod 700 \(what)" : chmod))
        }
    }

    /// The marks of a mark file of the old form; none when it does not exist.
    static func readOldForm(_ path: String) throws(SequenceStoreError) -> [ImportedMark] {
        let fd = unsafe open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return [] }
            throw SequenceStoreError(description: "\(path): cannot read the old sequence marks (\(unsafe String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        try checkOwner(fd, directory: false, what: "\(path) (old sequence marks)", othersMayRead: true, chmod: "chmod 600 \(path)")
        var marks: [ImportedMark] = []
        var text = ""
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            // Safe: read writes at most chunk.count bytes into the array's own storage.
            let n = unsafe chunk.withUnsafeMutableBytes { unsafe read(fd, $0.baseAddress, $0.count) }
            guard n >= 0 else { throw SequenceStoreError(description: "\(path): cannot read the old sequence marks") }
            if n == 0 { break }
            text += String(decoding: chunk.prefix(n), as: UTF8.self)
        }
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
        where !line.hasPrefix("#") && !line.isEmpty {
            let f = line.split(separator: " ")
            guard f.count == 6, f[0] == "spi", f[2] == "key-fingerprint", f[4] == "used-through", f[1].hasPrefix("0x"),
                let spi = UInt32(f[1].dropFirst(2), radix: 16), let used = UInt64(f[5])
            else {
                throw SequenceStoreError(description: "\(path):\(n + 1): not a high-water mark line (refusing to guess: "
                    + "a lost mark could mean a reused nonce)")
            }
            marks.append(ImportedMark(spi: spi, fingerprint: KeyFingerprint(markFileField: String(f[3])), usedThrough: used))
        }
        return marks
    }
}

/// One key's high-water mark in a ``SequenceStore``, with the key's lock held until it goes: the
/// only writer of the key's mark on this machine.
public final class KeyMark: Sendable {
    let store: SequenceStore
    let fingerprint: KeyFingerprint
    let spi: UInt32
    let lockFD: Int32
    let usedThrough: Mutex<UInt64>

    init(store: SequenceStore, fingerprint: KeyFingerprint, spi: UInt32, lockFD: Int32, usedThrough: UInt64) {
        self.store = store
        self.fingerprint = fingerprint
        self.spi = spi
        self.lockFD = lockFD
        self.usedThrough = Mutex(usedThrough)
    }

    deinit { close(lockFD) }  // the lock goes with the descriptor

    /// The first number the key may send: one above its mark (1 for a new key).
    public var firstUnused: UInt64 { usedThrough.withLock { $0 &+ 1 } }

    /// The mark as it is now on disk.
    public var mark: UInt64 { usedThrough.withLock { $0 } }

    /// Durably records that numbers up to `through` may be used (a lower one changes nothing).
    /// Written, fsynced and renamed while the mark's mutex is held, so a later reservation is never
    /// overwritten by an earlier one.
    /// - Throws: ``SequenceStoreError`` when it cannot be written: the numbers must not be used.
    public func reserve(through: UInt64) throws(SequenceStoreError) {
        try usedThrough.withLock { (used: inout UInt64) throws(SequenceStoreError) in
            guard through > used else { return }
            try write(through)
            used = through
        }
    }

    func write(_ through: UInt64) throws(SequenceStoreError) {
        let name = fingerprint.markFileField
        let directory = store.directoryFD
        let what = "\(store.directory): the mark of the key of SPI 0x\(String(format: "%08x", spi))"
        let temporary = SequenceStore.temporaryName(name)
        // Exclusive and never through a link: a file or link already at the name is refused, not followed.
        let fd = unsafe openat(directory, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw SequenceStoreError(description: "\(what): cannot create its new copy (\(unsafe String(cString: strerror(errno))))")
        }
        let bytes = Array("# offload ipsec: sequence numbers reserved under one key (never a nonce twice). Do not edit.\nused-through \(through)\n".utf8)
        // Safe: write reads bytes.count bytes from the array's own storage.
        let written = unsafe bytes.withUnsafeBytes { unsafe Glibc.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        let closed = close(fd) == 0
        guard written == bytes.count, synced, closed, unsafe renameat(directory, temporary, directory, name + ".mark") == 0 else {
            _ = unsafe unlinkat(directory, temporary, 0)
            throw SequenceStoreError(description: "\(what): could not be written durably")
        }
        guard fsync(directory) == 0 else {
            throw SequenceStoreError(description: "\(what): the directory could not be synced (\(unsafe String(cString: strerror(errno))))")
        }
    }
}

/// A key's fingerprint: what its mark files are named by. Only those names read its text
/// (``markFileField``); printed or interpolated anywhere else (a log line, an error, a counter) it
/// shows as `<key fingerprint>`, so no path from a key to a log exists by accident.
public struct KeyFingerprint: Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The hex text the key's mark files are named by.
    public let markFileField: String
    /// Wraps a fingerprint's text.
    public init(markFileField: String) { self.markFileField = markFileField }
    /// The fingerprint of a digest's bytes, as hex.
    init(digest: some Collection<UInt8>) { markFileField = digest.map { String(format: "%02x", $0) }.joined() }
    /// Redacted.
    public var description: String { "<key fingerprint>" }
    /// Redacted.
    public var debugDescription: String { "<key fingerprint>" }
    /// Redacted too: `dump` and reflection show no field.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// An outbound SA's sequence numbers: handed out in runs (one per train of datagrams), never
/// twice, never past the end of the space (2^32 − 1 without ESN, 2^64 − 1 with it: RFC 4303 §3.3.3
/// says a sender must not let the counter wrap), and with a ``SequenceStore`` never past a mark
/// already on disk, the key held for this process alone. Shared by every thread that encrypts
/// with the SA.
public final class OutboundSequence: Sendable {
    /// The SPI.
    public let spi: UInt32
    /// The last number the space holds.
    public let last: UInt64
    let store: SequenceStore?
    let mark: KeyMark?
    struct State {
        var next: UInt64
        var reservedThrough: UInt64
        var exhausted = false
        var storeFailed: String?
    }
    let state: Mutex<State>

    /// A counter starting at 1 (or above the key's mark), with the first block reserved.
    /// - Throws: ``SequenceStoreError`` when the key is held by another process (or another SA of
    ///   this one), or when its mark cannot be read or the first reservation written.
    public init(spi: UInt32, key: SecretBytes, extendedSequenceNumbers: Bool, store: SequenceStore?) throws(SequenceStoreError) {
        self.spi = spi
        last = extendedSequenceNumbers ? UInt64.max : UInt64(UInt32.max)
        self.store = store
        mark = try store?.claim(key: key, spi: spi)
        let first = mark?.firstUnused ?? 1
        var reserved = last
        if let store, let mark {
            // Saturating: a mark near the top of the space reserves up to the top, never wraps to below it.
            reserved = first >= last - min(last, store.block - 1) ? last : first + store.block - 1
            if first <= last && first != 0 { try mark.reserve(through: reserved) }
        }
        state = Mutex(State(next: first, reservedThrough: reserved, exhausted: first > last || first == 0))
    }

    /// The first of `count` consecutive numbers, or nil when they do not fit in what is left (once
    /// nothing is, the SA stops for good: only new keys go on) or the store cannot be written.
    /// Numbers are handed out only below a mark already on disk, under one lock: two threads
    /// never get the same number, and a restart goes on above every number either got.
    public func reserve(_ count: Int) -> UInt64? {
        state.withLock { (s: inout State) -> UInt64? in
            guard !s.exhausted, s.storeFailed == nil else { return nil }
            guard count > 0 else { return nil }
            let first = s.next
            let (end, overflow) = first.addingReportingOverflow(UInt64(count) - 1)
            // A run that does not fit is refused whole; the SA stops once no number is left.
            guard !overflow, end <= last else { return nil }
            if end > s.reservedThrough, let store, let mark {
                let through = end >= last - min(last, store.block) ? last : end + store.block  // saturating, as above
                do { try mark.reserve(through: through) } catch {
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
