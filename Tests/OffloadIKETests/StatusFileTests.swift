import Foundation
import Logging
import OffloadIPsec
import OffloadWire
import Testing

@testable import OffloadIKE
@testable import OffloadIKEDaemon

#if canImport(Glibc)
    import Glibc
#endif

@Suite("The IKE daemon's files: the status is 0600; the configuration is read like an SA file")
struct IKEFilesTests {
    /// The daemon binds port 500 on a loopback address of its own (root only), writes its status
    /// once, and the file is mode 0600 even with umask 0 (it was 0644 with the default umask).
    @Test("the status file is written with mode 0600", .enabled(if: getuid() == 0, "binding port 500 needs root"))
    func statusMode() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ike-status-\(getpid())-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let last = UInt8(truncatingIfNeeded: getpid() % 200 + 20)
        let text = ikeConfigText().replacingOccurrences(of: "192.0.2.1", with: "127.93.7.\(last)")
            .replacingOccurrences(of: "192.0.2.2", with: "127.93.8.\(last)")
        let daemon = try IKEDaemon(connections: try IKEConfig.parse(text), policy: try ESPSecurityPolicy(tunnels: [], store: nil),
                                   logger: Logger(label: "test"))
        daemon.statusPath = dir + "/gw.status"
        let old = umask(0)
        defer { umask(old) }
        daemon.publishStatus()
        var info = stat()
        #expect(lstat(dir + "/gw.status", &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600, "mode \(String(info.st_mode & 0o777, radix: 8))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["gw.status"])
    }

    @Test("IKEConfig.load refuses a symbolic link to a 0600 configuration, and reads the file itself")
    func configLink() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ike-config-\(getpid())-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try SAFile.write(ikeConfigText(), to: dir + "/gw.conf")
        #expect(try IKEConfig.load(path: dir + "/gw.conf").count == 1)
        #expect(symlink(dir + "/gw.conf", dir + "/link.conf") == 0)
        #expect(throws: IKEConfigError.self) { try IKEConfig.load(path: dir + "/link.conf") }
    }
}
