import COffloadCrypto
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Why a file that holds secrets could not be read or written: the reason, never the content.
public struct ProtectedFileError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The reason (without the path: the caller's error names it).
    public var description: String
}

/// Files that hold keys (SA files, IKE configurations) and files only root should read (the IKE
/// status): read through one descriptor that is checked before anything is read, written
/// with mode 0600 from the first byte.
public enum ProtectedFile {
    /// The largest file read: 1 MiB (a configuration is a few kilobytes).
    public static let largest = 1 << 20

    /// For tests: called with the path after it was opened and before the descriptor is checked
    /// and read (to change the file under the reader). Nil in normal use.
    static let afterOpen = Mutex<(@Sendable (String) -> Void)?>(nil)

    /// The text of `path`, which must be a regular file (not a link: O_NOFOLLOW), owned by root or
    /// this user, with no access for group or others. Opened once (O_RDONLY | O_NOFOLLOW | O_CLOEXEC |
    /// O_NONBLOCK, so a FIFO cannot block it); the type, owner and mode are those of the opened file
    /// (fstat), and the bytes read are from that same descriptor: no check-then-open race. The read
    /// buffer is cleansed once the text is made (the text itself is a `String`, which cannot be).
    /// - Throws: ``ProtectedFileError``.
    public static func readText(path: String) throws(ProtectedFileError) -> String {
        let fd = unsafe open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            let e = errno
            if e == ELOOP { throw ProtectedFileError(description: "a symbolic link (refused: name the file itself)") }
            throw unsafe ProtectedFileError(description: String(cString: strerror(e)))
        }
        defer { close(fd) }
        afterOpen.withLock { $0 }?(path)
        var info = stat()
        guard unsafe fstat(fd, &info) == 0 else { throw unsafe ProtectedFileError(description: String(cString: strerror(errno))) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw ProtectedFileError(description: "not a regular file") }
        let me = geteuid()
        guard info.st_uid == 0 || info.st_uid == me else {
            throw ProtectedFileError(description: "owned by uid \(info.st_uid), not by root or this user (uid \(me)): it holds keys")
        }
        let mode = info.st_mode & 0o777
        guard mode & 0o077 == 0 else {
            throw ProtectedFileError(description: "mode \(String(mode, radix: 8)) lets others read or change keys: chmod 600 \(path)")
        }
        guard Int(info.st_size) <= largest else { throw ProtectedFileError(description: "larger than 1 MiB") }
        var buffer = [UInt8](repeating: 0, count: largest + 1)
        // Safe: `buffer` outlives the call and cleansing writes only its own bytes.
        defer { unsafe buffer.withUnsafeMutableBytes { unsafe offload_cleanse($0.baseAddress, $0.count) } }
        var count = 0
        while count <= largest {
            // Safe: reads at most the room left after `count` bytes.
            let n = unsafe buffer.withUnsafeMutableBytes { unsafe read(fd, $0.baseAddress! + count, $0.count - count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw unsafe ProtectedFileError(description: String(cString: strerror(errno))) }
            if n == 0 { break }
            count += n
        }
        guard count <= largest else { throw ProtectedFileError(description: "larger than 1 MiB") }
        guard let text = String(validating: buffer[0..<count], as: UTF8.self) else {
            throw ProtectedFileError(description: "cannot read it as UTF-8 text")
        }
        return text
    }

    /// Replaces `path` with `bytes`, mode 0600 from the start: written to a new file beside it
    /// (O_CREAT | O_EXCL | O_NOFOLLOW, a name no one else has), then renamed over the path, so a
    /// reader sees the old file or the new one, never a partial one, and never one others may read.
    /// - Throws: ``ProtectedFileError``.
    public static func replace(_ path: String, with bytes: [UInt8]) throws(ProtectedFileError) {
        var made = -1
        var temporary = ""
        for _ in 0..<8 where made < 0 {
            let suffix = randomBytes(8).map { String(format: "%02x", $0) }.joined()
            temporary = "\(path).\(suffix).tmp"
            made = unsafe Int(open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600))
            if made < 0 && errno != EEXIST { break }
        }
        guard made >= 0 else { throw unsafe ProtectedFileError(description: String(cString: strerror(errno))) }
        let fd = Int32(made)
        var failure: ProtectedFileError?
        // The umask may have cleared bits of 0600, never added any; fchmod makes it exactly 0600.
        if fchmod(fd, 0o600) != 0 { failure = unsafe ProtectedFileError(description: String(cString: strerror(errno))) }
        var written = 0
        while failure == nil && written < bytes.count {
            // Safe: writes from inside `bytes`, the rest after `written`.
            let n = unsafe bytes.withUnsafeBytes { unsafe write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { failure = unsafe ProtectedFileError(description: n < 0 ? String(cString: strerror(errno)) : "short write") } else {
                written += n
            }
        }
        close(fd)
        if unsafe failure == nil && rename(temporary, path) != 0 { failure = unsafe ProtectedFileError(description: String(cString: strerror(errno))) }
        if let failure {
            unsafe unlink(temporary)
            throw failure
        }
    }
}
