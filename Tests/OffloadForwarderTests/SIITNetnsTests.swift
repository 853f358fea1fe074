import Foundation
import OffloadForwarder
import OffloadTestSupport
import Testing

/// `offload siit` between two TUN devices, with the kernel's TCP at both ends: an IPv6-only client
/// and an IPv4-only server that reach each other only through the translator.
@Suite("offload siit between an IPv6-only client and an IPv4-only server", .serialized)
struct SIITNetnsTests {
    @Test("64 MB each way intact (IPv6 client -> IPv4 server, and IPv4 -> IPv6); super-packets translated whole",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func integrity() throws { try exclusiveNetwork { try integrityBody() } }
    func integrityBody() throws {
        let lab = try Lab(siit: true)
        try lab.startTranslator()
        let up = try lab.transfer(megabytes: 64, from: lab.client, to: lab.server, address: Lab.serverSeenFromIPv6, ipv6: true)
        #expect(up.identical, "IPv6 client -> IPv4 server: \(up.received) bytes")
        let down = try lab.transfer(megabytes: 64, from: lab.server, to: lab.client, address: Lab.clientSeenFromIPv4, ipv6: false,
                                     receiverIPv6: true)
        #expect(down.identical, "IPv4 server -> IPv6 client: \(down.received) bytes")
        let stats = try lab.stopForwarder()
        let toIPv4 = try #require(stats["lan_to_wan"])
        let toIPv6 = try #require(stats["wan_to_lan"])
        #expect(toIPv4.stageCounter("siit_translated", ["to": "ipv4"]) > 1000)
        #expect(toIPv6.stageCounter("siit_translated", ["to": "ipv6"]) > 1000)
        #expect(toIPv4.stageCounter("siit_super_packets") > 100 && toIPv6.stageCounter("siit_super_packets") > 100,
                "super-packets translated in place: \(toIPv4.stageCounter("siit_super_packets")), \(toIPv6.stageCounter("siit_super_packets"))")
        #expect(toIPv4.meanSegmentsPerSuperPacket >= 4 && toIPv6.meanSegmentsPerSuperPacket >= 4)
        #expect(toIPv4.writeErrors == 0 && toIPv6.writeErrors == 0)
        #expect(try sh("ip -n \(lab.gateway) -4 route").1.contains("siit4") == false, "the routes were not removed")
    }

    @Test("IPv4 side MTU 1400: the kernel's fragmentation needed comes back as packet too big (MTU + 20), the transfer completes",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func smallerIPv4MTU() throws { try exclusiveNetwork { try smallerIPv4MTUBody() } }
    func smallerIPv4MTUBody() throws {
        let lab = try Lab(siit: true)
        // A smaller link the endpoints do not see (the server still says MSS 1460): the kernel on the
        // gateway answers the translated 1480-byte IPv4 segments with "fragmentation needed" (1400).
        try sh("ip -n \(lab.gateway) link set g1 mtu 1400")
        try lab.startTranslator()
        let up = try lab.transfer(megabytes: 16, from: lab.client, to: lab.server, address: Lab.serverSeenFromIPv6, ipv6: true)
        #expect(up.identical, "\(up.received) bytes")
        // The client learnt the path MTU from the translated error: 1400 + 20.
        let (_, cache) = try sh("ip -n \(lab.client) -6 route get \(Lab.serverSeenFromIPv6)")
        #expect(cache.contains("mtu 1420"), "\(cache)")
        let stats = try lab.stopForwarder()
        let back = try #require(stats["wan_to_lan"])
        #expect(back.stageCounter("siit_errors_translated") >= 1)
    }

    @Test("UDP from the IPv4 side without DF: its fragments become IPv6 fragments the client reassembles",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func fragmentedUDP() throws { try exclusiveNetwork { try fragmentedUDPBody() } }
    func fragmentedUDPBody() throws {
        let lab = try Lab(siit: true)
        try lab.startTranslator()
        try sh("head -c 3000 /dev/urandom > \(lab.dir)/datagram.bin; rm -f \(lab.dir)/received.bin")
        try sh("setsid ip netns exec \(lab.client) timeout 8 socat -u UDP6-RECV:5002 OPEN:\(lab.dir)/received.bin,creat,trunc "
            + "> /dev/null 2>&1 < /dev/null &")
        Thread.sleep(forTimeInterval: 0.3)
        try sh("ip netns exec \(lab.server) socat -u OPEN:\(lab.dir)/datagram.bin UDP4-SENDTO:\(Lab.clientSeenFromIPv4):5002")
        var same = false
        for _ in 0..<40 where !same {
            Thread.sleep(forTimeInterval: 0.1)
            same = (try? sh("cmp \(lab.dir)/datagram.bin \(lab.dir)/received.bin").0) == 0
        }
        try sh("pkill -f '[U]DP6-RECV:5002' || true")
        #expect(same, "the 3000-byte datagram did not arrive whole")
        let stats = try lab.stopForwarder()
        let toIPv6 = try #require(stats["wan_to_lan"])
        #expect(toIPv6.stageCounter("siit_fragments_made") >= 3, "IPv4 fragments of 1480 bytes cut to 1280-byte IPv6 ones")
    }

    @Test("ping both ways and traceroute across the translator",
          .enabled(if: netnsReady, "\(netnsSkipReason)"),
          .enabled(if: installed("ping") && installed("traceroute"), "ping or traceroute is not installed (apt-get install -y iputils-ping traceroute)"))
    func pingAndTraceroute() throws { try exclusiveNetwork { try pingAndTracerouteBody() } }
    func pingAndTracerouteBody() throws {
        let lab = try Lab(siit: true)
        try lab.startTranslator()
        #expect(try sh("ip netns exec \(lab.client) ping -c 3 -i 0.2 -W 1 \(Lab.serverSeenFromIPv6)").0 == 0)
        #expect(try sh("ip netns exec \(lab.server) ping -c 3 -i 0.2 -W 1 \(Lab.clientSeenFromIPv4)").0 == 0)
        // Every hop answers: the gateway, the translator (its own address), the gateway's IPv4 side
        // (a translated time exceeded), and the server.
        let (status, trace) = try sh("ip netns exec \(lab.client) traceroute -n -w 1 -q 1 -m 6 \(Lab.serverSeenFromIPv6)",
                                     timeout: 30)
        #expect(status == 0 && !trace.contains("*") && trace.contains(Lab.serverSeenFromIPv6), "\(trace)")
        let stats = try lab.stopForwarder()
        #expect((stats["wan_to_lan"]?.stageCounter("siit_errors_translated") ?? 0) >= 1, "time exceeded translated")
    }

    @Test("contrib/offload-siit.service: its command line, with the example settings, runs and cleans up",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func systemdUnit() throws { try exclusiveNetwork { try systemdUnitBody() } }
    func systemdUnitBody() throws {
        guard let offload = offloadExecutable else { throw LabError("offload executable not found") }
        let unit = try String(contentsOfFile: "\(packageRoot)/contrib/offload-siit.service", encoding: .utf8)
        let env = try String(contentsOfFile: "\(packageRoot)/contrib/offload-siit.env", encoding: .utf8)
        guard case (var command, let settings)? = systemdCommand(unit: unit, environment: env) else { throw LabError("no ExecStart") }
        #expect(!command.contains("$"), "unexpanded: \(command)")
        command = command.replacingOccurrences(of: "/usr/local/bin/offload", with: offload)
        let ns = "ofsu\(getpid() % 100_000)"
        try sh("ip netns del \(ns) 2>/dev/null; ip netns add \(ns) && ip -n \(ns) link set lo up")
        defer { _ = try? sh("ip netns del \(ns)") }
        // A scrape with bash alone: no HTTP client needed on the machine.
        let endpoint = (settings["SIIT_METRICS"] ?? "").split(separator: ":")
        let scrape = "bash -c 'exec 3<>/dev/tcp/\(endpoint.first ?? "")/\(endpoint.last ?? ""); "
            + "printf \"GET /metrics HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'"
        // What --setup changes must be put back at exit: reverse-path filtering strict (2) and
        // forwarding off before it runs.
        let sysctls = "net.ipv4.conf.all.rp_filter net.ipv4.conf.default.rp_filter net.ipv4.ip_forward net.ipv6.conf.all.forwarding"
        try sh("ip netns exec \(ns) sysctl -qw net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.default.rp_filter=2 "
            + "net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0")
        let before = try sh("ip netns exec \(ns) sysctl -n \(sysctls)").1
        // The scrape waits for the endpoint to answer (up to 10 s), not for a fixed time.
        let (status, output) = try sh(
            "ip netns exec \(ns) \(command) --duration 4 > /tmp/\(ns).log 2>&1 & "
                + "for i in $(seq 100); do ip netns exec \(ns) \(scrape) 2>/dev/null | grep -q offload_siit_translated_total "
                + "&& break; sleep 0.1; done; ip netns exec \(ns) \(scrape); ip -n \(ns) -4 route; "
                + "wait $!; echo exit=$?; cat /tmp/\(ns).log; rm -f /tmp/\(ns).log",
            timeout: 30)
        #expect(status == 0 && output.contains("exit=0"), "\(output)")
        #expect(output.contains("offload_siit_translated_total"), "the metrics endpoint serves the stage's counters")
        #expect(output.contains("198.18.0.0/24 dev siit4"), "--setup routed --route4 into the IPv4 side")
        #expect(try sh("ip -n \(ns) -4 route").1.contains("siit4") == false, "the routes are gone after exit")
        let after = try sh("ip netns exec \(ns) sysctl -n \(sysctls)").1
        #expect(before.split(separator: "\n") == ["2", "2", "0", "0"], "\(before)")
        #expect(after == before, "--setup put back rp_filter and forwarding: before \(before), after \(after)")
    }
}
