import Foundation
import OffloadIPsec
import OffloadLab
import OffloadWire
import Testing

/// The children of the `seed` connection in a swanctl.conf text, by name.
func seedChildren(_ text: String) throws -> [SwanctlSection] {
    let root = try SwanctlSection.parse(text)
    let connection = try #require(root.section("connections")?.section("seed"))
    return try #require(connection.section("children")).sections
}

@Suite("the seed scenario's configuration (built, not run)")
struct LabSeedConfigurationTests {
    @Test("strongSwan: one child per server port on each gateway, narrowed to tcp/PORT, mirrored; the client's gateway starts them")
    func strongSwanChildren() throws {
        let psk = "0x" + String(repeating: "ab", count: 32)
        let client = try seedChildren(LabSeed.swanctlConfiguration(gateway: 1, psk: psk))
        let server = try seedChildren(LabSeed.swanctlConfiguration(gateway: 2, psk: psk))
        #expect(client.map(\.name) == ["t5201", "t5202", "t5203", "t5204"])
        #expect(server.map(\.name) == client.map(\.name))
        for (i, port) in [5201, 5202, 5203, 5204].enumerated() {
            #expect(client[i].value("local_ts")?.value == "10.77.1.0/24")
            #expect(client[i].value("remote_ts")?.value == "10.77.2.0/24[tcp/\(port)]")
            #expect(server[i].value("local_ts")?.value == "10.77.2.0/24[tcp/\(port)]")
            #expect(server[i].value("remote_ts")?.value == "10.77.1.0/24")
            #expect(client[i].value("esp_proposals")?.value == "aes128gcm16", "libipsec: no ESN")
            #expect(client[i].value("start_action")?.value == "start")
            #expect(server[i].value("start_action")?.value == "trap")
        }
        let root = try SwanctlSection.parse(LabSeed.swanctlConfiguration(gateway: 1, psk: psk))
        let connection = try #require(root.section("connections")?.section("seed"))
        #expect(connection.value("local_addrs")?.value == "192.168.77.1" && connection.value("remote_addrs")?.value == "192.168.77.2")
        #expect(connection.value("encap")?.value == "yes")
        #expect(root.section("secrets")?.section("ike-seed")?.value("secret")?.value == psk)
    }

    @Test("offload ipsec: four tunnels, one per server port (10.77.2.2/32[tcp/PORT]), read back from the SA files; each download takes its own tunnel both ways")
    func offloadTunnels() throws {
        let tunnels = LabSeed.offloadTunnels()
        let client = try SAFile.parse(SAFile.render(tunnels))
        let server = try SAFile.parse(SAFile.render(tunnels.map(\.reversed)))
        #expect(client.map(\.name) == ["t5201", "t5202", "t5203", "t5204"])
        #expect(client.map { $0.remoteSelectors.map(\.description) } == [5201, 5202, 5203, 5204].map { ["10.77.2.2/32[tcp/\($0)]"] })
        #expect(client.allSatisfy { $0.localSelectors.map(\.description) == ["10.77.1.0/24"] })
        #expect(server.map { $0.localSelectors.map(\.description) } == client.map { $0.remoteSelectors.map(\.description) })
        #expect(Set(client.map(\.outbound.spi)).count == 4 && Set(client.map(\.inbound.spi)).count == 4)
        #expect(zip(client, server).allSatisfy { $0.outbound == $1.inbound && $0.inbound == $1.outbound }, "the far end's file is this one reversed")
        let clientHost = try #require(IPAddress("10.77.1.2")), serverHost = try #require(IPAddress("10.77.2.2"))
        for port: UInt16 in [5201, 5202, 5203, 5204] {
            let up = PacketSelectors(source: clientHost, destination: serverHost, ipProtocol: 6, sourcePort: 40_000, destinationPort: port)
            let down = PacketSelectors(source: serverHost, destination: clientHost, ipProtocol: 6, sourcePort: port, destinationPort: 40_000)
            #expect(client.filter { $0.sends(up) }.map(\.name) == ["t\(port)"])
            #expect(server.filter { $0.sends(down) }.map(\.name) == ["t\(port)"])
            #expect(client.filter { $0.receives(down) }.map(\.name) == ["t\(port)"])
        }
        // The comparison: one tunnel for every download.
        let single = try SAFile.parse(SAFile.render(LabSeed.offloadTunnels(single: true)))
        #expect(single.count == 1 && single[0].remoteSelectors.map(\.description) == ["10.77.2.0/24"])
        // Another port of the server goes through none of them.
        let other = PacketSelectors(source: serverHost, destination: clientHost, ipProtocol: 6, sourcePort: 80, destinationPort: 40_000)
        #expect(!server.contains { $0.sends(other) })
    }

    @Test("charon: kernel-libipsec loaded, its vici socket and log in the row's directory")
    func charon() {
        let text = LabSeed.charonConfiguration(gateway: 2, directory: "/tmp/x")
        #expect(text.contains(" kernel-libipsec ") && text.contains("unix:///tmp/x/charon2.vici")
            && text.contains("path = /tmp/x/charon2.log"))
    }

    @Test("every link is shaped to 1 Gbit/s with tbf")
    func shaping() {
        #expect(LabSeed.shaping(device: "u0") == ["tc", "qdisc", "replace", "dev", "u0", "root", "tbf", "rate", "1000mbit",
                                                   "burst", "64kb", "latency", "10ms"])
    }

    @Test("per-CHILD_SA bytes out are read from swanctl --list-sas, in port order, a rekeyed child summed")
    func childBytes() {
        let listing = """
            seed: #1, ESTABLISHED, IKEv2, 1b2c3d4e5f607182_i 9a8b7c6d5e4f3a2b_r*
              local  'gw2' @ 192.168.77.2[4500]
              remote 'gw1' @ 192.168.77.1[4500]
              AES_GCM_16-128/PRF_HMAC_SHA2_256/CURVE_25519
              established 12s ago, rekeying in 13941s
              t5202: #2, reqid 2, INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-128
                installed 12s ago, rekeying in 3318s, expires in 3948s
                in  c1a2b3c4,  51200 bytes,   900 packets,     0s ago
                out c5d6e7f8, 2000000 bytes,  1400 packets,     0s ago
                local  10.77.2.2/32[tcp/5202]
                remote 10.77.1.0/24
              t5201: #1, reqid 1, INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-128
                in  c1111111,    100 bytes,     2 packets
                out c2222222, 300000000 bytes, 210000 packets,     0s ago
              t5202: #5, reqid 2, INSTALLED, TUNNEL-in-UDP, ESP:AES_GCM_16-128
                in  c3333333,      0 bytes,     0 packets
                out c4444444,     10 bytes,     1 packets,     5s ago
            """
        #expect(LabSeed.childBytesOut(listing: listing) == [300_000_000, 2_000_010, 0, 0])
    }

    @Test("the command: --scenario seed picks rows 15-18; with --scenarios too it is a usage error")
    func scenarioSet() {
        #expect(LabScenario.seed.map(\.rawValue) == [15, 16, 17, 18])
        #expect(LabScenario.seed.allSatisfy { $0.isSeed && $0.isTunnel && $0.runsOnce })
        #expect(LabScenario.seed.filter(\.isIPsec) == [.seedIPsecOffloadsOff, .seedIPsecGRO, .seedIPsecLRO])
        // The default run is unchanged: the seed's rows are asked for by name.
        let configuration = LabConfiguration(offloadExecutable: "/bin/false", scratch: "/tmp")
        #expect(!configuration.scenarios.contains { $0.isSeed } && configuration.seconds == 5)
    }

    @Test("a download (iperf3 -R): the timeline is the client's intervals, retransmits the server's sender")
    func reverseReport() throws {
        func interval(_ bytes: Double) -> [String: Any] { ["streams": [["bytes": bytes, "seconds": 0.1]]] }
        let document: [String: Any] = [
            "intervals": [interval(125_000), interval(0), interval(125_000)],
            "end": ["streams": [["sender": ["retransmits": 7], "receiver": ["bits_per_second": 6e6]]]],
            "server_output_json": ["intervals": [interval(1), interval(1), interval(1)]],
        ]
        let data = try JSONSerialization.data(withJSONObject: document)
        let download = try IperfReport(json: data, reverse: true)
        #expect(download.flows[0].timelineMbps == [10, 0, 10] && download.flows[0].retransmits == 7)
        #expect(download.flows[0].longestStallMilliseconds == 100)
        // Without -R the server's intervals are what arrived.
        #expect(try IperfReport(json: data).flows[0].longestStallMilliseconds == 0)
    }
}

@Suite("fairness after the start-up")
struct LabStartUpFairnessTests {
    /// Flow 1 runs from the start; the others deliver nothing for `idle` intervals, then as much.
    func startUpRow(idle: Int, intervals: Int) -> LabRow {
        let flows = (0..<4).map { i in
            let timeline = (0..<intervals).map { t in i == 0 || t >= idle ? 100.0 : 0 }
            return LabFlowResult(goodputMbps: timeline.reduce(0, +) / Double(intervals), retransmits: 0,
                                 longestStallMilliseconds: i == 0 ? 0 : idle * 100, timelineMbps: timeline)
        }
        var row = LabRow(scenario: .ipsecGRO, name: LabScenario.ipsecGRO.name, family: 4, ingressMTU: 1500, egressMTU: 1500,
                         flows: flows, totalGoodputMbps: flows.reduce(0) { $0 + $1.goodputMbps }, jainIndex: 0, retransmits: 0,
                         longestStallMilliseconds: idle * 100, intervalSeconds: 0.1)
        row.jainIndex = row.fairness.jainIndex
        row.jainIndexAfterStartUp = row.jainIndex(after: 1)
        return row
    }

    @Test("three flows idle for the first second of two: unfair over the run, fair after the first second, and the explanation says both")
    func startUpOnly() throws {
        let row = startUpRow(idle: 10, intervals: 20)
        #expect(row.jainIndex < 0.9)
        #expect(try #require(row.jainIndexAfterStartUp) == 1)
        #expect(LabPresentation.explanation([row]).contains(String(format: "is unfair: Jain %.2f (after the first second: 1.00)", row.jainIndex)))
    }

    @Test("unfair after the start-up too, it says so; a run shorter than two seconds has no such figure")
    func lasting() throws {
        let row = startUpRow(idle: 15, intervals: 20)
        #expect(try #require(row.jainIndexAfterStartUp) < 0.9)
        #expect(startUpRow(idle: 5, intervals: 15).jainIndexAfterStartUp == nil)
    }
}
