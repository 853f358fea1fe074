import Foundation
import OffloadForwarder
import OffloadTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// client — gw1 — underlay — gw2 — server, with `offload tunnel` (GTP-U) on both gateways and
/// the kernel's TCP at both ends.
final class TunnelLab {
    let prefix = "otnt\(getpid() % 100_000)"
    var client: String { "\(prefix)-client" }
    var server: String { "\(prefix)-server" }
    func gateway(_ n: Int) -> String { "\(prefix)-gw\(n)" }
    let dir: String
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    init(underlayMTU: Int = 1500) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        shell("\(root)/scripts/netns-tunnel-topology.sh down \(prefix)")
        let (status, out) = shell("\(root)/scripts/netns-tunnel-topology.sh up \(prefix) \(underlayMTU)")
        guard status == 0 else { throw TunnelLabError("topology: \(out)") }
    }

    /// Starts the endpoint on both gateways (TEID 7), each routing the far side's prefixes into its tunnel.
    func startEndpoints(_ arguments: [String] = []) throws {
        try startEndpoints(command: { _ in ["tunnel", "--id", "7"] + arguments }, device: "gtp0")
    }

    /// Starts `offload COMMAND` on both gateways (`command(n)` for gateway n: the subcommand and
    /// its own options) on `device`, each routing the far side's prefixes into it.
    func startEndpoints(command: (Int) -> [String], device: String, gateways: [Int] = [1, 2], executable: String? = nil,
                        environment: String = "") throws {
        guard let offload = executable ?? builtExecutable(named: "offload") else { throw TunnelLabError("offload executable not found") }
        for (n, local, remote, routes) in [(1, "192.168.88.1", "192.168.88.2", ["10.88.2.0/24", "fd88:2::/64"]),
                                           (2, "192.168.88.2", "192.168.88.1", ["10.88.1.0/24", "fd88:1::/64"])]
        where gateways.contains(n) {
            let line = (environment.isEmpty ? [] : ["env", environment]) + ["setsid", "ip", "netns", "exec", gateway(n), offload] + command(n)
                + ["--device", device, "--local", local, "--remote", remote, "--setup"] + routes.flatMap { ["--route", $0] }
                + ["--stats-json", "\(dir)/gw\(n).json", "--duration", "150"]
            shell(line.joined(separator: " ") + " >> \(dir)/gw\(n).log 2>&1 < /dev/null &")
        }
        for _ in 0..<100 {
            let routes = gateways.map { shell("ip -n \(gateway($0)) route").output }.joined()
            if routes.components(separatedBy: "dev \(device)").count >= gateways.count + 1 { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TunnelLabError("the endpoints did not start: \((try? String(contentsOfFile: "\(dir)/gw1.log", encoding: .utf8)) ?? "") "
            + "\((try? String(contentsOfFile: "\(dir)/gw2.log", encoding: .utf8)) ?? "")")
    }

    /// VXLAN (VNI 7) between the gateways: `offload tunnel` on gateway `ours`, the kernel's `vxlan`
    /// device on the other. Inside the tunnel the gateways are 172.31.0.1 and .2 (/30).
    func startVXLAN(ours: Int) throws {
        guard let offload = builtExecutable(named: "offload") else { throw TunnelLabError("offload executable not found") }
        let kernel = 3 - ours
        // The kernel's VXLAN leaves the inner checksum to the NIC (CHECKSUM_PARTIAL); a veth never
        // computes it, so a user-space receiver would get partial checksums. A NIC does compute it:
        // here the kernel side's underlay veth computes checksums in software instead.
        shell("ip netns exec \(gateway(kernel)) ethtool -K u\(kernel - 1) tx off")
        let far = { (n: Int) in "10.88.\(3 - n).0/24" }
        let kernelSetup = [
            "link add vx0 type vxlan id 7 local 192.168.88.\(kernel) remote 192.168.88.\(ours) dstport 4789 dev u\(kernel - 1)",
            "addr add 172.31.0.\(kernel)/30 dev vx0", "link set vx0 up",
            "route add \(far(kernel)) via 172.31.0.\(ours) dev vx0",
        ]
        for command in kernelSetup {
            let (status, out) = shell("ip -n \(gateway(kernel)) \(command)")
            guard status == 0 else { throw TunnelLabError("kernel vxlan: \(command): \(out)") }
        }
        let command = ["setsid", "ip", "netns", "exec", gateway(ours), offload, "tunnel", "--protocol", "vxlan",
                       "--device", "vx0", "--local", "192.168.88.\(ours)", "--remote", "192.168.88.\(kernel)", "--id", "7",
                       "--setup", "--address", "172.31.0.\(ours)/30", "--route", far(ours), "--next-hop", "172.31.0.\(kernel)",
                       "--stats-json", "\(dir)/gw\(ours).json", "--duration", "150"]
        shell(command.joined(separator: " ") + " > \(dir)/gw\(ours).log 2>&1 < /dev/null &")
        for _ in 0..<100 {
            if shell("ip -n \(gateway(ours)) route").output.contains("dev vx0") { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TunnelLabError("the endpoint did not start: \((try? String(contentsOfFile: "\(dir)/gw\(ours).log", encoding: .utf8)) ?? "")")
    }

    /// Stops the endpoint on gateway `n`; its final counters.
    func stopEndpoint(_ n: Int) throws -> [String: ForwarderStatistics] {
        shell("pkill -TERM -f '[s]tats-json \(dir)/gw\(n).json' || true")
        let path = "\(dir)/gw\(n).json"
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: path) { Thread.sleep(forTimeInterval: 0.05) }
        Thread.sleep(forTimeInterval: 0.1)
        return try JSONDecoder().decode([String: ForwarderStatistics].self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Stops both endpoints; their final counters.
    func stopEndpoints() throws -> [[String: ForwarderStatistics]] {
        shell("pkill -TERM -f '[s]tats-json \(dir)/gw' || true")
        return try [1, 2].map { try statistics(of: $0) }
    }

    /// The counters gateway `n`'s endpoint writes at exit (waited for, bounded).
    func statistics(of n: Int) throws -> [String: ForwarderStatistics] {
        let path = "\(dir)/gw\(n).json"
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: path) { Thread.sleep(forTimeInterval: 0.05) }
        Thread.sleep(forTimeInterval: 0.1)
        return try JSONDecoder().decode([String: ForwarderStatistics].self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Sends `megabytes` of random data from `sender` to `receiver` (bounded in time): whether the
    /// received file is identical (sha256).
    func transfer(megabytes: Int, from sender: String, to receiver: String, address: String, ipv6: Bool) -> (Bool, Int) {
        let family = ipv6 ? "TCP6" : "TCP4"
        let host = ipv6 ? "[\(address)]" : address
        shell("head -c \(megabytes * 1_000_000) /dev/urandom > \(dir)/send.bin; rm -f \(dir)/recv.bin")
        shell("setsid ip netns exec \(receiver) timeout 45 socat -u \(family)-LISTEN:5001,reuseaddr "
            + "OPEN:\(dir)/recv.bin,creat,trunc > /dev/null 2>&1 < /dev/null &")
        Thread.sleep(forTimeInterval: 0.3)
        shell("ip netns exec \(sender) socat -u OPEN:\(dir)/send.bin \(family):\(host):5001", timeout: 40)
        for _ in 0..<100 where shell("pgrep -f '[O]PEN:\(dir)/recv.bin'").status == 0 { Thread.sleep(forTimeInterval: 0.1) }
        shell("pkill -f '[O]PEN:\(dir)/recv.bin' || true")
        let sums = shell("sha256sum \(dir)/send.bin \(dir)/recv.bin | awk '{print $1}' | uniq | wc -l").output
        let size = (try? FileManager.default.attributesOfItem(atPath: "\(dir)/recv.bin")[.size] as? Int) ?? 0
        return (sums.trimmingCharacters(in: .whitespacesAndNewlines) == "1", size)
    }

    /// 64 MB each way, IPv4 then IPv6 inside, checked intact; then the endpoints' counters show
    /// trains: a super-packet's segments leave in one sendmsg (UDP GSO) and arrive in one recvmsg
    /// (UDP GRO), and are merged again (ACKs, which nothing merges, go one per call). Returns gw1's
    /// encapsulation and gw2's decapsulation counters.
    func transferBothWaysAndCheckTrains(label: String) throws -> (encap: ForwarderStatistics, decap: ForwarderStatistics) {
        for (ipv6, toServer, toClient) in [(false, "10.88.2.2", "10.88.1.2"), (true, "fd88:2::2", "fd88:1::2")] {
            let up = transfer(megabytes: 64, from: client, to: server, address: toServer, ipv6: ipv6)
            #expect(up.0, "client -> server over IPv\(ipv6 ? 6 : 4) inside: \(up.1) bytes")
            let down = transfer(megabytes: 64, from: server, to: client, address: toClient, ipv6: ipv6)
            #expect(down.0, "server -> client over IPv\(ipv6 ? 6 : 4) inside: \(down.1) bytes")
        }
        let stats = try stopEndpoints()
        let encap = try #require(stats[0]["lan_to_wan"])
        let decap = try #require(stats[1]["wan_to_lan"])
        let perTrain = Double(encap.tunnel("gso_train_datagrams")) / Double(max(1, encap.tunnel("gso_trains")))
        let received = decap.tunnel("datagrams_received"), receives = decap.tunnel("recvmsg")
        print("\(label): gw1 sent \(encap.tunnel("datagrams_sent")) datagrams in \(encap.tunnel("sendmsg")) sendmsg "
            + "(\(encap.tunnel("gso_train_datagrams")) in \(encap.tunnel("gso_trains")) trains); gw2 received \(received) in \(receives) recvmsg")
        #expect(perTrain >= 8, "datagrams per UDP GSO send: \(perTrain)")
        #expect(receives < received / 2, "UDP GRO hands over trains: \(received) datagrams in \(receives) recvmsg")
        #expect(decap.meanSegmentsPerSuperPacket >= 4, "the inner packets are merged again: \(decap.meanSegmentsPerSuperPacket)")
        // GRO's super-packets are encapsulated from their chained pieces, not gathered first.
        #expect(encap.tunnel("encapsulated_in_place") > encap.superPacketsOut / 2,
                "\(encap.tunnel("encapsulated_in_place")) in place, \(encap.superPacketsOut) super-packets")
        return (encap, decap)
    }

    deinit {
        shell("pkill -KILL -f '[s]tats-json \(dir)/gw' || true")
        shell("\(root)/scripts/netns-tunnel-topology.sh down \(prefix)")
        try? FileManager.default.removeItem(atPath: dir)
    }
}

struct TunnelLabError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

extension ForwarderStatistics {
    /// A tunnel counter (0 when absent).
    func tunnel(_ name: String, _ labels: [String: String] = [:]) -> Int { stageCounter("tunnel_" + name, labels) }
}

@Suite("offload tunnel (GTP-U) on both gateways, with the kernel's TCP at both ends", .serialized)
struct TunnelNetnsTests {
    @Test("64 MB each way, IPv4 and IPv6 inside, intact; trains of datagrams per sendmsg and per recvmsg",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func integrity() throws { try exclusiveNetwork { try integrityBody() } }
    func integrityBody() throws {
        let lab = try TunnelLab()
        try lab.startEndpoints()
        let (encap, decap) = try lab.transferBothWaysAndCheckTrains(label: "GTP-U")
        #expect(encap.tunnel("send_errors") <= 2 && decap.writeErrors == 0)
        // Every datagram that came in went on: none lost between the socket and the TUN device.
        #expect(decap.tunnel("datagrams_received") == decap.packetsIn && decap.dropped == 0,
                "\(decap.tunnel("datagrams_received")) datagrams in, \(decap.packetsIn) inner packets, \(decap.dropped) dropped")
        #expect(shell("ip -n \(lab.gateway(1)) route").output.contains("gtp0") == false, "the routes were not removed")
    }

    @Test("underlay MTU 1400: the inner sender hears fragmentation needed / packet too big, its MSS follows, the transfer completes",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func smallerUnderlay() throws { try exclusiveNetwork { try smallerUnderlayBody() } }
    func smallerUnderlayBody() throws {
        let lab = try TunnelLab(underlayMTU: 1400)
        // Without MSS clamping (the default; with --clamp-mss no segment is too big, see below).
        try lab.startEndpoints()
        let v4 = lab.transfer(megabytes: 16, from: lab.client, to: lab.server, address: "10.88.2.2", ipv6: false)
        let v6 = lab.transfer(megabytes: 16, from: lab.client, to: lab.server, address: "fd88:2::2", ipv6: true)
        #expect(v4.0 && v6.0, "IPv4 \(v4.1) bytes, IPv6 \(v6.1) bytes")
        // The inner MTU is 1400 - 36: the client's route cache learnt it from the ICMP errors.
        let cache4 = shell("ip -n \(lab.client) route get 10.88.2.2").output
        let cache6 = shell("ip -n \(lab.client) -6 route get fd88:2::2").output
        #expect(cache4.contains("mtu 1364") && cache6.contains("mtu 1364"), "\(cache4) \(cache6)")
        // --setup gave the device the inner MTU, as the kernel's tunnels do: the gateway's kernel
        // refuses what cannot fit before it reaches the endpoint (which would refuse it too).
        #expect(shell("ip -n \(lab.gateway(1)) link show gtp0").output.contains("mtu 1364"))
        let stats = try lab.stopEndpoints()
        #expect((stats[0]["lan_to_wan"]?.tunnel("send_errors") ?? 99) <= 2, "no datagram over the underlay MTU")
    }

    @Test("underlay MTU 1400, MSS clamped (--clamp-mss): SYNs and SYN-ACKs leave with MSS 1324, no segment is too big, the transfer completes",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func smallerUnderlayClamped() throws { try exclusiveNetwork { try smallerUnderlayClampedBody() } }
    func smallerUnderlayClampedBody() throws {
        let lab = try TunnelLab(underlayMTU: 1400)
        try lab.startEndpoints(["--clamp-mss"])
        let v4 = lab.transfer(megabytes: 4, from: lab.client, to: lab.server, address: "10.88.2.2", ipv6: false)
        let v6 = lab.transfer(megabytes: 4, from: lab.client, to: lab.server, address: "fd88:2::2", ipv6: true)
        #expect(v4.0 && v6.0, "IPv4 \(v4.1) bytes, IPv6 \(v6.1) bytes")
        // The client never sent a segment over the inner MTU (1364): no error taught its route cache one.
        let cache4 = shell("ip -n \(lab.client) route get 10.88.2.2").output
        let cache6 = shell("ip -n \(lab.client) -6 route get fd88:2::2").output
        #expect(!cache4.contains("mtu 1364") && !cache6.contains("mtu 1364"), "\(cache4) \(cache6)")
        let stats = try lab.stopEndpoints()
        // The client's SYNs were clamped where gateway 1 encapsulates them, the server's SYN-ACKs
        // where gateway 2 does: one of each per connection and family at least.
        let clamped = stats.map { $0["lan_to_wan"]?.mssClamped ?? 0 }
        #expect(clamped.count == 2 && clamped.allSatisfy { $0 >= 2 }, "\(clamped)")
    }

    @Test("bad outer input during a transfer (random bytes, a wrong TEID, a lying length, truncated): counted, dropped, the transfer intact",
          .enabled(if: netnsReady, "\(netnsSkipReason)"),
          .enabled(if: installed("python3"), "python3 is not installed (the raw sender)"))
    func badInput() throws { try exclusiveNetwork { try badInputBody() } }
    func badInputBody() throws {
        let lab = try TunnelLab()
        try lab.startEndpoints()
        // From gw1's underlay address to gw2's GTP-U port, while data flows: 50 of each kind.
        let sender = """
            import os, socket, struct, time
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('192.168.88.1', 2152))   # the endpoint's socket is connected: only its peer's address and port get in
            inner = bytes.fromhex('4500001c000040004011' + '0000' + '0a580102' + '0a580202') + bytes(8)
            for i in range(50):
                kinds = [os.urandom(64), struct.pack('!BBHI', 0x30, 255, len(inner), 99) + inner,
                         struct.pack('!BBHI', 0x30, 255, len(inner) + 50, 7) + inner, bytes([0x30, 255, 0])]
                for k in kinds: s.sendto(k, ('192.168.88.2', 2152))
                time.sleep(0.02)
            """
        try sender.write(toFile: "\(lab.dir)/bad.py", atomically: true, encoding: .utf8)
        shell("setsid ip netns exec \(lab.gateway(1)) python3 \(lab.dir)/bad.py > /dev/null 2>&1 < /dev/null &")
        let up = lab.transfer(megabytes: 32, from: lab.client, to: lab.server, address: "10.88.2.2", ipv6: false)
        #expect(up.0, "\(up.1) bytes")
        Thread.sleep(forTimeInterval: 0.5)
        let stats = try lab.stopEndpoints()
        let decap = try #require(stats[1]["wan_to_lan"])
        let dropped = ["truncated", "version", "length", "unknown_id", "message_type"].reduce(0) {
            $0 + decap.tunnel("dropped", ["reason": $1])
        }
        // Random bytes are refused for whatever they look like (another version, mostly; a length
        // that lies when they happen to start like GTP-U v1): every one of the 200 is refused.
        #expect(decap.tunnel("dropped", ["reason": "unknown_id"]) >= 50)
        #expect(decap.tunnel("dropped", ["reason": "length"]) >= 50)
        #expect(decap.tunnel("dropped", ["reason": "truncated"]) >= 50)
        #expect(dropped == 200, "\(dropped) refused")
    }

    @Test("VXLAN against the kernel's vxlan device (ours on either gateway): 64 MB each way intact, UDP GSO trains on our side",
          .enabled(if: netnsReady, "\(netnsSkipReason)"),
          arguments: [1, 2])
    func vxlanInterop(ours: Int) throws { try exclusiveNetwork { try vxlanInteropBody(ours: ours) } }
    func vxlanInteropBody(ours: Int) throws {
        let lab = try TunnelLab()
        try lab.startVXLAN(ours: ours)
        let up = lab.transfer(megabytes: 64, from: lab.client, to: lab.server, address: "10.88.2.2", ipv6: false)
        #expect(up.0, "client -> server: \(up.1) bytes")
        let down = lab.transfer(megabytes: 64, from: lab.server, to: lab.client, address: "10.88.1.2", ipv6: false)
        #expect(down.0, "server -> client: \(down.1) bytes")
        let stats = try lab.stopEndpoint(ours)
        let encap = try #require(stats["lan_to_wan"])
        let decap = try #require(stats["wan_to_lan"])
        let perTrain = Double(encap.tunnel("gso_train_datagrams")) / Double(max(1, encap.tunnel("gso_trains")))
        print("VXLAN endpoint on gw\(ours): \(encap.tunnel("datagrams_sent")) datagrams in \(encap.tunnel("sendmsg")) sendmsg "
            + "(\(encap.tunnel("gso_train_datagrams")) in \(encap.tunnel("gso_trains")) trains); received "
            + "\(decap.tunnel("datagrams_received")) in \(decap.tunnel("recvmsg")) recvmsg")
        #expect(perTrain >= 8, "datagrams per UDP GSO send: \(perTrain)")
        #expect(decap.tunnel("datagrams_received") == decap.packetsIn && decap.dropped == 0)
        #expect(decap.tunnel("foreign") == 0 && encap.tunnel("send_errors") <= 2)
    }

    @Test("contrib/offload-tunnel.service: its command line, with the example settings, runs and cleans up",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func systemdUnit() throws { try exclusiveNetwork { try systemdUnitBody() } }
    func systemdUnitBody() throws {
        guard let offload = builtExecutable(named: "offload") else { throw TunnelLabError("offload executable not found") }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let unit = try String(contentsOfFile: "\(root)/contrib/offload-tunnel.service", encoding: .utf8)
        let env = try String(contentsOfFile: "\(root)/contrib/offload-tunnel.env", encoding: .utf8)
        guard case (var command, let settings)? = systemdCommand(unit: unit, environment: env) else { throw TunnelLabError("no ExecStart") }
        #expect(!command.contains("$"), "unexpanded: \(command)")
        command = command.replacingOccurrences(of: "/usr/local/bin/offload", with: offload)
        // A namespace where the example's local underlay address exists.
        let ns = "otsu\(getpid() % 100_000)"
        let local = settings["TUNNEL_LOCAL"] ?? ""
        shell("ip netns del \(ns) 2>/dev/null; ip netns add \(ns) && ip -n \(ns) link set lo up && "
            + "ip -n \(ns) link add u0 type veth peer name u1 && ip -n \(ns) addr add \(local)/24 dev u0 && "
            + "ip -n \(ns) link set u0 up && ip -n \(ns) link set u1 up")
        defer { shell("ip netns del \(ns)") }
        let endpoint = (settings["TUNNEL_METRICS"] ?? "").split(separator: ":")
        let scrape = "bash -c 'exec 3<>/dev/tcp/\(endpoint.first ?? "")/\(endpoint.last ?? ""); "
            + "printf \"GET /metrics HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'"
        let (status, output) = shell(
            "ip netns exec \(ns) \(command) --duration 3 > /tmp/\(ns).log 2>&1 & sleep 1.5; "
                + "ip netns exec \(ns) \(scrape); ip -n \(ns) route; wait $!; echo exit=$?; cat /tmp/\(ns).log; rm -f /tmp/\(ns).log",
            timeout: 30)
        #expect(status == 0 && output.contains("exit=0"), "\(output)")
        #expect(output.contains("offload_tunnel_sendmsg_total"), "the metrics endpoint serves the tunnel's counters")
        #expect(output.contains("10.2.0.0/16 dev gtp0"), "--setup routed the example's prefix into the tunnel")
    }
}
