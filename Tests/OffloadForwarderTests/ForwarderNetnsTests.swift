import Foundation
import OffloadForwarder
import OffloadTestSupport
import Testing

/// Runs a command with the shell (bounded by `timeout` seconds); returns its exit status and its
/// output (standard output and error together, through a file).
@discardableResult
func sh(_ command: String, timeout: Double = 60) throws -> (Int32, String) {
    let log = FileManager.default.temporaryDirectory.appendingPathComponent("sh-\(UUID().uuidString).log").path
    defer { try? FileManager.default.removeItem(atPath: log) }
    let status = system("timeout \(Int(timeout)) bash -c \(shellQuote(command)) > \(log) 2>&1 < /dev/null")
    let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    return (status == -1 ? -1 : (status >> 8) & 0xFF, output)
}

func shellQuote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// The built `offload` executable next to the tests.
let offloadExecutable = builtExecutable(named: "offload")

/// A client — gateway — server topology with `offload forward` on the gateway.
final class Lab {
    let prefix = "ofwt\(getpid() % 100_000)"
    var client: String { "\(prefix)-client" }
    var gateway: String { "\(prefix)-gw" }
    var server: String { "\(prefix)-server" }
    let dir: String

    /// `siit`: the client has only IPv6, the server only IPv4.
    init(siit: Bool = false) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try sh("\(packageRoot)/scripts/netns-topology.sh down \(prefix)")
        let (status, out) = try sh("\(packageRoot)/scripts/netns-topology.sh up \(prefix)\(siit ? " siit" : "")")
        guard status == 0 else { throw LabError("topology: \(out)") }
    }

    func startForwarder(_ arguments: [String]) throws {
        guard let offload = offloadExecutable else { throw LabError("offload executable not found") }
        try? FileManager.default.removeItem(atPath: "\(dir)/stats.json")
        let command = ["setsid", "ip", "netns", "exec", gateway, offload, "forward", "--ingress", "ofw0", "--egress", "ofw1",
                       "--setup", "--lan", "g0", "--wan", "g1", "--stats-json", "\(dir)/stats.json", "--duration", "120"]
            + arguments
        try sh(command.joined(separator: " ") + " > \(dir)/forward.log 2>&1 < /dev/null &")
        // Ready when the policy rules are in place.
        for _ in 0..<100 {
            if let (_, rules) = try? sh("ip -n \(gateway) rule"), RoutingSetup.isApplied(ruleListing: rules) { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw LabError("forwarder did not start: \((try? String(contentsOfFile: "\(dir)/forward.log", encoding: .utf8)) ?? "")")
    }

    /// Starts `offload siit` on the gateway: `siit6` on the IPv6 side, `siit4` on the IPv4 side, the
    /// IPv4 server seen from IPv6 through `pool6`, the IPv6 client seen from IPv4 through an EAM entry.
    func startTranslator(_ arguments: [String] = []) throws {
        guard let offload = offloadExecutable else { throw LabError("offload executable not found") }
        try? FileManager.default.removeItem(atPath: "\(dir)/stats.json")
        let command = ["setsid", "ip", "netns", "exec", gateway, offload, "siit", "--ingress", "siit6", "--egress", "siit4",
                       "--pool6", Self.pool6, "--eam", "fd77:1::/120=\(Self.clientIPv4Prefix)", "--setup",
                       "--route4", Self.clientIPv4Prefix, "--stats-json", "\(dir)/stats.json", "--duration", "150"]
            + arguments
        try sh(command.joined(separator: " ") + " > \(dir)/forward.log 2>&1 < /dev/null &")
        for _ in 0..<100 {
            if let (_, routes) = try? sh("ip -n \(gateway) -4 route"), routes.contains("\(Self.clientIPv4Prefix) dev siit4") { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw LabError("translator did not start: \((try? String(contentsOfFile: "\(dir)/forward.log", encoding: .utf8)) ?? "")")
    }

    /// The translator's RFC 6052 prefix, and the server (10.77.2.2) and the client as the other side sees them.
    static let pool6 = "2001:db8:64::/96"
    static let serverSeenFromIPv6 = "2001:db8:64::a4d:202"
    static let clientIPv4Prefix = "198.18.1.0/24"
    static let clientSeenFromIPv4 = "198.18.1.2"

    /// Stops the forwarder and returns its final counters.
    func stopForwarder() throws -> [String: ForwarderStatistics] {
        try sh("pkill -TERM -f '[s]tats-json \(dir)/stats.json' || true")
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: "\(dir)/stats.json") {
            Thread.sleep(forTimeInterval: 0.05)
        }
        Thread.sleep(forTimeInterval: 0.1)
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/stats.json"))
        let stats = try JSONDecoder().decode([String: ForwarderStatistics].self, from: data)
        // Every run's counters reconcile: each packet GRO delivered has exactly one outcome.
        for (direction, s) in stats {
            #expect(s.deliveriesReconcile, "\(direction): \(s.deliveries) outcomes for \(s.gro.packetsOut) deliveries")
        }
        return stats
    }

    /// Sends `megabytes` of random data from `sender` to `receiver` (bounded in time); returns
    /// whether the received file is identical, and the bytes received. `receiverIPv6` says the
    /// receiver's family when a translator sits between them.
    func transfer(megabytes: Int, from sender: String, to receiver: String, address: String, ipv6: Bool,
                  receiverIPv6: Bool? = nil, seconds: Int = 40) throws -> (identical: Bool, received: Int) {
        let family = ipv6 ? "TCP6" : "TCP4"
        let listenFamily = (receiverIPv6 ?? ipv6) ? "TCP6" : "TCP4"
        let host = ipv6 ? "[\(address)]" : address
        try sh("head -c \(megabytes * 1_000_000) /dev/urandom > \(dir)/send.bin; rm -f \(dir)/recv.bin")
        try sh("setsid ip netns exec \(receiver) timeout \(seconds + 5) socat -u \(listenFamily)-LISTEN:5001,reuseaddr "
            + "OPEN:\(dir)/recv.bin,creat,trunc > /dev/null 2>&1 < /dev/null &")
        Thread.sleep(forTimeInterval: 0.3)
        let start = Date()
        try sh("ip netns exec \(sender) socat -u OPEN:\(dir)/send.bin \(family):\(host):5001", timeout: Double(seconds))
        // The receiver ends by itself at the sender's FIN; give it the rest of the time to drain.
        while Date().timeIntervalSince(start) < Double(seconds),
            (try? sh("pgrep -f '[O]PEN:\(dir)/recv.bin'").0) == 0
        {
            Thread.sleep(forTimeInterval: 0.1)
        }
        try sh("pkill -f '[O]PEN:\(dir)/recv.bin' || true")
        let (_, sums) = try sh("sha256sum \(dir)/send.bin \(dir)/recv.bin | awk '{print $1}' | uniq | wc -l")
        let size = (try? FileManager.default.attributesOfItem(atPath: "\(dir)/recv.bin")[.size] as? Int) ?? 0
        return (sums.trimmingCharacters(in: .whitespacesAndNewlines) == "1", size)
    }

    deinit {
        _ = try? sh("pkill -KILL -f '[s]tats-json \(dir)/stats.json' || true")
        _ = try? sh("\(packageRoot)/scripts/netns-topology.sh down \(prefix)")
        try? FileManager.default.removeItem(atPath: dir)
    }
}

struct LabError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

@Suite("offload forward between two TUN devices, with the kernel's TCP on both sides", .serialized)
struct ForwarderNetnsTests {
    @Test("64 MB each way, IPv4 and IPv6, arrive intact; GRO merges at least 8 segments per super-packet",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func integrityAndGRO() throws { try exclusiveNetwork { try integrityAndGROBody() } }
    func integrityAndGROBody() throws {
        let lab = try Lab()
        try lab.startForwarder([])
        for (ipv6, toServer, toClient) in [(false, "10.77.2.2", "10.77.1.2"), (true, "fd77:2::2", "fd77:1::2")] {
            let up = try lab.transfer(megabytes: 64, from: lab.client, to: lab.server, address: toServer, ipv6: ipv6)
            #expect(up.identical, "client -> server over IPv\(ipv6 ? 6 : 4): \(up.received) bytes")
            let down = try lab.transfer(megabytes: 64, from: lab.server, to: lab.client, address: toClient, ipv6: ipv6)
            #expect(down.identical, "server -> client over IPv\(ipv6 ? 6 : 4): \(down.received) bytes")
        }
        // --setup turned the kernel's GRO on for g0 and g1 (the topology has it off): the forwarder
        // read the kernel's super-packets, and GRO is off again after exit.
        let groDuring = try sh("ip netns exec \(lab.gateway) ethtool -k g0 | grep generic-receive-offload").1
        let stats = try lab.stopForwarder()
        let up = try #require(stats["lan_to_wan"])
        let down = try #require(stats["wan_to_lan"])
        if (try? sh("command -v ethtool").0) == 0 {
            #expect(groDuring.contains(": on"), "\(groDuring)")
            let groAfter = try sh("ip netns exec \(lab.gateway) ethtool -k g0 | grep generic-receive-offload").1
            #expect(groAfter.contains(": off"), "\(groAfter)")
        }
        #expect(up.tsoIn > 100 && down.tsoIn > 100, "super-packets from the kernel's GRO: \(up.tsoIn), \(down.tsoIn)")
        #expect(up.meanSegmentsPerSuperPacket >= 8, "mean \(up.meanSegmentsPerSuperPacket)")
        #expect(down.meanSegmentsPerSuperPacket >= 8, "mean \(down.meanSegmentsPerSuperPacket)")
        #expect(up.writeErrors == 0 && down.writeErrors == 0)
        #expect(try sh("ip -n \(lab.gateway) rule").1.contains("4100") == false, "the setup was not removed")
    }

    @Test("path MTU: a smaller egress MTU sends ICMP, the sender lowers its MSS, the transfer completes",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func pathMTU() throws { try exclusiveNetwork { try pathMTUBody() } }
    func pathMTUBody() throws {
        let lab = try Lab()
        try lab.startForwarder(["--egress-mtu", "1400"])
        let v4 = try lab.transfer(megabytes: 16, from: lab.client, to: lab.server, address: "10.77.2.2", ipv6: false)
        let v6 = try lab.transfer(megabytes: 16, from: lab.client, to: lab.server, address: "fd77:2::2", ipv6: true)
        let stats = try lab.stopForwarder()
        #expect(v4.identical && v6.identical)
        let up = try #require(stats["lan_to_wan"])
        #expect(up.icmpSent >= 2, "ICMP errors: \(up.icmpSent)")
        #expect(up.meanSegmentsPerSuperPacket >= 8, "GRO keeps working after the MSS drop: \(up.meanSegmentsPerSuperPacket)")
    }

    @Test("--mode lro behind a smaller MTU black-holes: the failure the Jool page describes",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func lroBlackHole() throws { try exclusiveNetwork { try lroBlackHoleBody() } }
    func lroBlackHoleBody() throws {
        let lab = try Lab()
        try lab.startForwarder(["--egress-mtu", "1400", "--mode", "lro", "--keep-ingress-gro"])
        let result = try lab.transfer(megabytes: 16, from: lab.client, to: lab.server, address: "10.77.2.2", ipv6: false,
                                      seconds: 6)
        let stats = try lab.stopForwarder()
        #expect(!result.identical && result.received < 1_600_000, "received \(result.received) bytes in 6 s")
        let up = try #require(stats["lan_to_wan"])
        #expect(up.icmpSent > 10 && up.superPacketsOut == 0, "ICMP \(up.icmpSent)")
    }

    @Test("the kernel's own TSO super-packets (client TSO on) are forwarded whole and arrive intact",
          .enabled(if: netnsReady, "\(netnsSkipReason)"),
          .enabled(if: installed("ethtool"), "ethtool is not installed: TSO cannot be turned on (apt-get install -y ethtool)"))
    func kernelTSO() throws { try exclusiveNetwork { try kernelTSOBody() } }
    func kernelTSOBody() throws {
        let lab = try Lab()
        try sh("ip netns exec \(lab.client) ethtool -K c0 tso on gso on")
        try lab.startForwarder([])
        let v4 = try lab.transfer(megabytes: 32, from: lab.client, to: lab.server, address: "10.77.2.2", ipv6: false)
        let v6 = try lab.transfer(megabytes: 32, from: lab.client, to: lab.server, address: "fd77:2::2", ipv6: true)
        let stats = try lab.stopForwarder()
        #expect(v4.identical && v6.identical)
        let up = try #require(stats["lan_to_wan"])
        // With TSO on, the kernel hands the forwarder super-packets: none would mean the test tested nothing.
        #expect(up.tsoIn > 0, "the kernel handed over no TSO packets")
        #expect(up.superPacketsOut >= up.tsoIn && up.virtioRejected == 0 && up.writeErrors == 0)
        #expect(up.gro[.gsoInput] == up.tsoIn)
    }

    @Test("two queues (IFF_MULTI_QUEUE, a worker per queue): transfers intact, counters summed",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func multiQueue() throws { try exclusiveNetwork { try multiQueueBody() } }
    func multiQueueBody() throws {
        let lab = try Lab()
        try lab.startForwarder(["--queues", "2", "--keep-ingress-gro"])
        let up = try lab.transfer(megabytes: 32, from: lab.client, to: lab.server, address: "10.77.2.2", ipv6: false)
        let down = try lab.transfer(megabytes: 32, from: lab.server, to: lab.client, address: "fd77:1::2", ipv6: true)
        let stats = try lab.stopForwarder()
        #expect(up.identical && down.identical)
        let lanToWan = try #require(stats["lan_to_wan"])
        #expect(lanToWan.packetsIn > 20_000 && lanToWan.meanSegmentsPerSuperPacket >= 8)
        #expect(lanToWan.writeErrors == 0)
    }

    @Test("--no-gso-writes: GRO stays on, super-packets are segmented in user space (the EINVAL fallback path); transfers intact",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func userSpaceSegmentation() throws { try exclusiveNetwork { try userSpaceSegmentationBody() } }
    func userSpaceSegmentationBody() throws {
        let lab = try Lab()
        try lab.startForwarder(["--no-gso-writes", "--egress-mtu", "1400"])
        let v4 = try lab.transfer(megabytes: 16, from: lab.client, to: lab.server, address: "10.77.2.2", ipv6: false)
        let v6 = try lab.transfer(megabytes: 16, from: lab.server, to: lab.client, address: "fd77:1::2", ipv6: true)
        let stats = try lab.stopForwarder()
        #expect(v4.identical && v6.identical)
        let up = try #require(stats["lan_to_wan"])
        // Merged, then split before writing: nothing leaves as a super-packet.
        #expect(up.segmentedInSoftware > 100 && up.superPacketsOut == 0, "\(up.segmentedInSoftware) \(up.superPacketsOut)")
        #expect(up.writeErrors == 0 && up.icmpSent >= 1)
        let log = (try? String(contentsOfFile: "\(lab.dir)/forward.log", encoding: .utf8)) ?? ""
        #expect(log.contains("GSO writes off"))
    }

    @Test("Prometheus text on --metrics",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func metrics() throws { try exclusiveNetwork { try metricsBody() } }
    func metricsBody() throws {
        let lab = try Lab()
        try lab.startForwarder(["--metrics", "127.0.0.1:9101", "--keep-ingress-gro"])  // userspace GRO: its flush reasons
        _ = try lab.transfer(megabytes: 4, from: lab.client, to: lab.server, address: "10.77.2.2", ipv6: false)
        // The counters are published with each 50 ms snapshot: scrape until they show the transfer
        // (at most 5 s), rather than sleeping a guess.
        var (status, text): (Int32, String) = (0, "")
        for _ in 0..<50 {
            (status, text) = try sh("printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' | ip netns exec \(lab.gateway) socat -t 2 - TCP4:127.0.0.1:9101")
            if text.contains("offload_gro_total{direction=\"lan_to_wan\",group=\"flush\"") { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        _ = try lab.stopForwarder()
        #expect(status == 0)
        #expect(text.contains("offload_packets_in_total{direction=\"lan_to_wan\"}"))
        #expect(text.contains("offload_gro_total{direction=\"lan_to_wan\",group=\"flush\""))
        #expect(text.contains("offload_segments_per_super_packet"))
    }
}
