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

@Suite("The IKE daemon's Prometheus series: per connection, bounded by the configuration, totals that only grow")
struct IKEMetricsTests {
    static func sa(_ connection: String, state: String = "established", spiIn: String, spiOut: String, packets: UInt64, bytes: UInt64,
                   drops: [String: UInt64]? = nil) -> IKESAStatus {
        var child = IKESAStatus.Child(name: "net", spiIn: spiIn, spiOut: spiOut, algorithm: "aes128gcm16", esn: true, age: 1, rekeys: 0,
                                      sending: true, packetsIn: packets, bytesIn: bytes, packetsOut: packets, bytesOut: bytes,
                                      localTS: "", remoteTS: "")
        child.dropsIn = drops
        return IKESAStatus(connection: connection, state: state, role: "responder", spis: "", algorithms: "", age: 1, rekeys: 0,
                           peer: "", peerID: "", natLocal: false, natRemote: false, children: [child])
    }

    @Test("sixteen road warriors of one %any connection are one series; a rekeyed CHILD_SA's bytes stay in the total")
    func bounded() {
        var m = IKEMetrics()
        m.connections = ["rw", "site"]
        m.update((0..<16).map { Self.sa("rw", spiIn: String(format: "%08x", 0x100 + $0), spiOut: String(format: "%08x", 0x900 + $0), packets: 10, bytes: 1000) })
        // A second later: client 0's CHILD_SA was rekeyed (new SPIs, counting from zero), the others carried 5 more packets.
        m.update([Self.sa("rw", spiIn: "00000aaa", spiOut: "00000bbb", packets: 2, bytes: 200, drops: ["wrong_peer": 3])]
            + (1..<16).map { Self.sa("rw", spiIn: String(format: "%08x", 0x100 + $0), spiOut: String(format: "%08x", 0x900 + $0), packets: 15, bytes: 1500) })
        let text = m.prometheusText()
        #expect(text.contains(#"offload_ipsec_child_packets_total{connection="rw",child="net",direction="in"} 237"#), "\(text)")
        #expect(text.contains(#"offload_ipsec_child_bytes_total{connection="rw",child="net",direction="out"} 23700"#))
        #expect(text.contains(#"offload_ipsec_ike_sas{connection="rw",state="established"} 16"#))
        #expect(text.contains(#"offload_ipsec_ike_sas{connection="site",state="established"} 0"#), "a connection without SAs has its series")
        #expect(text.contains(#"offload_ipsec_child_refused_total{connection="rw",reason="wrong_peer"} 3"#))
        // One series per connection, child and direction: not one per peer.
        #expect(text.split(separator: "\n").filter { $0.hasPrefix("offload_ipsec_child_bytes_total") }.count == 2)
    }
}
