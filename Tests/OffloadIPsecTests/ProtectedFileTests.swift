import Foundation
@testable import OffloadCrypto
import Testing

@testable import OffloadIPsec

#if canImport(Glibc)
    import Glibc
#endif

/// A fresh directory for one test, removed by the caller.
func protectedTestDirectory() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("protected-\(getpid())-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// The mode bits of `path` (lstat).
func modeBits(_ path: String) -> mode_t? {
    var info = stat()
    return lstat(path, &info) == 0 ? info.st_mode & 0o7777 : nil
}

/// The tests that set ``ProtectedFile/afterOpen`` run one at a time (the hook is process-wide; each
/// acts only on its own path).
@Suite("Files with keys: read through one checked descriptor; written 0600", .serialized)
struct ProtectedFileTests {
    static func tunnelText(spi: UInt32) -> String {
        var t = SAFile.freshTunnel(name: "t", algorithm: .aesGCM128, local: [TrafficSelector("10.1.0.0/16")!],
                                   remote: [TrafficSelector("10.2.0.0/16")!])
        t.outbound.spi = spi
        return SAFile.render([t])
    }

    @Test("a symbolic link to a 0600 file is refused, and so are a FIFO, a directory and a 0640 file")
    func refused() throws {
        let dir = try protectedTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try SAFile.write(Self.tunnelText(spi: 0x1001), to: dir + "/sa.conf")
        #expect(try SAFile.load(path: dir + "/sa.conf").count == 1)
        #expect(symlink(dir + "/sa.conf", dir + "/link.conf") == 0)
        #expect(mkfifo(dir + "/fifo.conf", 0o600) == 0)
        try SAFile.write(Self.tunnelText(spi: 0x1001), to: dir + "/open.conf")
        #expect(chmod(dir + "/open.conf", 0o640) == 0)
        for (name, reason) in [("link.conf", "symbolic link"), ("fifo.conf", "not a regular file"), ("", "not a regular file"),
                               ("open.conf", "mode 640")] {
            #expect(throws: SAFileError.self) { try SAFile.load(path: dir + "/" + name) }
            do { _ = try SAFile.load(path: dir + "/" + name) } catch {
                #expect(error.description.contains(reason), "\(error)")
            }
        }
        // The IKE configuration is read the same way.
        do { _ = try OffloadIPsecReadsLikeIKE.load(dir + "/link.conf") } catch { #expect(error.description.contains("symbolic link")) }
    }

    /// The race a check by path then a read by path would lose: between the two, the path is
    /// made to name another file (here 0644). Through one descriptor, what is read is what was
    /// checked: the file that was opened.
    @Test("a file swapped after it is opened: the opened file is the one checked and read")
    func swappedAfterOpen() throws {
        let dir = try protectedTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/sa.conf"
        try SAFile.write(Self.tunnelText(spi: 0x1001), to: path)
        try Self.tunnelText(spi: 0x7777).write(toFile: dir + "/other.conf", atomically: false, encoding: .utf8)
        #expect(chmod(dir + "/other.conf", 0o644) == 0)
        ProtectedFile.afterOpen.withLock { $0 = { p in if p == path { rename(dir + "/other.conf", path) } } }
        defer { ProtectedFile.afterOpen.withLock { $0 = nil } }
        let tunnels = try SAFile.load(path: path)
        #expect(tunnels.map(\.outbound.spi) == [0x1001], "read the file that was swapped in, unchecked")
        #expect(modeBits(path) == 0o644, "the swap happened")
    }

    /// The mode is judged on the descriptor at the time of the check: a file made 0644 after it
    /// was opened (the same file) is refused.
    @Test("a file whose mode changes after it is opened is judged by the descriptor")
    func modeChangedAfterOpen() throws {
        let dir = try protectedTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/sa.conf"
        try SAFile.write(Self.tunnelText(spi: 0x1001), to: path)
        ProtectedFile.afterOpen.withLock { $0 = { p in if p == path { chmod(path, 0o644) } } }
        defer { ProtectedFile.afterOpen.withLock { $0 = nil } }
        #expect(throws: SAFileError.self) { try SAFile.load(path: path) }
    }

    @Test("replace writes mode 0600 whatever the umask, over a 0644 file, and leaves no temporary file")
    func replaceMode() throws {
        let dir = try protectedTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/status"
        try "old".write(toFile: path, atomically: false, encoding: .utf8)
        #expect(chmod(path, 0o644) == 0)
        let old = umask(0)
        defer { umask(old) }
        try ProtectedFile.replace(path, with: Array("new".utf8))
        #expect(modeBits(path) == 0o600)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "new")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["status"])
    }
}

/// The IKE configuration's reader is in OffloadIKE; this target only checks that the shared reader
/// refuses links (the IKE tests check IKEConfig.load itself).
enum OffloadIPsecReadsLikeIKE {
    static func load(_ path: String) throws(ProtectedFileError) -> String { try ProtectedFile.readText(path: path) }
}

@Suite("Key files are new files: an old descriptor never sees new keys")
struct KeyFileReplaceTests {
    /// Someone opened the key file while it was 0644; the gateway then writes keys to that path.
    /// Truncating and rewriting the same file (as before) handed them the keys through their
    /// descriptor; a new file renamed over the path does not.
    @Test("a reader holding an older 0644 key file open reads nothing new")
    func oldDescriptor() throws {
        let dir = try protectedTestDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/keys"
        try "old\n".write(toFile: path, atomically: false, encoding: .utf8)
        #expect(chmod(path, 0o644) == 0)
        let reader = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? reader.close() }
        let fresh = SAFile.freshTunnel(name: "t", algorithm: .aesGCM128, local: [], remote: [])
        try SAFile.write(SAFile.render([fresh]), to: path)
        try reader.seek(toOffset: 0)
        let seen = String(decoding: try reader.readToEnd() ?? Data(), as: UTF8.self)
        #expect(seen == "old\n", "the old descriptor saw the new file (\(seen.count) bytes)")
        #expect(modeBits(path) == 0o600)
        #expect(try SAFile.load(path: path).count == 1)
    }
}
