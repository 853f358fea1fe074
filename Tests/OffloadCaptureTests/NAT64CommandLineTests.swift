import Foundation
import OffloadCapture
import OffloadTestSupport
import OffloadWire
import Testing

@Suite("offload nat64 on the command line")
struct NAT64CommandLineTests {
    func temporary(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("nat64-\(getpid())-\(UUID().uuidString)-\(name)").path
    }

    @Test("usage errors say what is wrong and exit 2", .enabled(if: offloadBinary != nil))
    func usage() throws {
        let offload = try #require(offloadBinary)
        let cases: [([String], String)] = [
            (["nat64", "in.pcap", "out.pcap"], "give --pool4"),
            (["nat64", "--pool4", "198.51.100.1-198.50.0.0", "in.pcap", "out.pcap"], "--pool4 198.51.100.1-198.50.0.0: want"),
            (["nat64", "--pool4", "198.51.100.1:2000-1000", "in.pcap", "out.pcap"], "--pool4 198.51.100.1:2000-1000"),
            (["nat64", "--pool4", "198.51.100.1", "--pool6", "64:ff9b::/95", "in.pcap", "out.pcap"], "--pool6 wants an RFC 6052 prefix"),
            (["nat64", "--pool4", "198.51.100.1", "--static-bib", "tcp=2001:db8::5:80=198.51.100.1:80", "in.pcap", "out.pcap"], "--static-bib"),
            (["nat64", "--pool4", "198.51.100.1", "--filtering", "open", "in.pcap", "out.pcap"], "--filtering must be"),
            (["nat64", "--pool4", "198.51.100.1", "--setup", "in.pcap", "out.pcap"], "--setup: live options"),
            (["nat64", "--pool4", "198.51.100.1", "--ingress", "a", "--egress", "b", "--json"], "--json: offline options"),
            (["nat64", "--pool4", "198.51.100.1", "--udp-timeout", "0", "in.pcap", "out.pcap"], "--udp-timeout must be"),
            (["nat64", "--pool4", "198.51.100.0/30", "--pool4", "tcp=198.51.100.2:5000-6000", "in.pcap", "out.pcap"],
             "share addresses for tcp"),
            (["nat64", "--pool4", "198.51.100.1", "--static-bib", "tcp=[2001:db8::5]:80=198.51.100.1:8080",
              "--static-bib", "tcp=[2001:db8::6]:80=198.51.100.1:8080", "in.pcap", "out.pcap"], "share a side"),
        ]
        for (arguments, message) in cases {
            let (status, _, err) = try run(offload, arguments)
            #expect(status == 2 && err.contains(message), "\(arguments): exit \(status), \(err)")
        }
        let (status, _, err) = try run(offload, ["nat64", "--sessions", "--status-file", temporary("none.status")])
        #expect(status == 1 && err.contains("no status"), "exit \(status): \(err)")
    }

    @Test("offline: sessions in capture time, the state printed at the end, refusals counted by reason",
          .enabled(if: offloadBinary != nil))
    func offline() throws {
        let offload = try #require(offloadBinary)
        let input = temporary("in.pcap"), output = temporary("out.pcap")
        defer { for f in [input, output] { try? FileManager.default.removeItem(atPath: f) } }
        var writer = try CaptureWriter(path: input, format: .pcap(nanosecond: true, bigEndian: false),
                                       interfaces: [CaptureInterface(linkType: .raw)])
        let prefix = "2001:db8:64::"
        func v6(_ flags: TCPFlags, udp: Bool = false, port: UInt16) -> [UInt8] {
            var b = PacketBuilder()
            b.link = .raw
            b.source = .v6(IPv6Address("2001:db8:1::7")!)
            b.destination = .v6(IPv6Address(prefix + "cb00:7109")!)  // 203.0.113.9
            b.transport = udp ? .udp : .tcp
            b.flags = flags
            b.sourcePort = port
            b.destinationPort = 80
            b.payloadLength = udp ? 20 : 0
            return b.frame()
        }
        var unsolicited = PacketBuilder()
        unsolicited.link = .raw
        unsolicited.source = .v4(IPv4Address(203, 0, 113, 9))
        unsolicited.destination = .v4(IPv4Address(198, 51, 100, 1))
        unsolicited.transport = .udp
        unsolicited.destinationPort = 7
        unsolicited.payloadLength = 10
        // A SYN opens a session (V6_INIT), an ACK without one opens nothing, a UDP datagram opens
        // another; a datagram from IPv4 to a port no host holds is refused.
        try writer.writePacket(v6(.syn, port: 40001), timestamp: 1_000_000_000)
        try writer.writePacket(v6(.ack, port: 40002), timestamp: 1_100_000_000)
        try writer.writePacket(v6([], udp: true, port: 5353), timestamp: 1_200_000_000)
        try writer.writePacket(unsolicited.frame(), timestamp: 1_300_000_000)
        try writer.flush()
        let (status, out, err) = try run(offload, ["nat64", "--pool6", "2001:db8:64::/96", "--pool4", "198.51.100.1", input, output])
        #expect(status == 0, "\(err)")
        #expect(out.contains("4 packets in: 2 forwarded"), "\(out)")
        #expect(out.contains("dropped: 1 no binding, 1 no session"), "\(out)")
        #expect(out.contains("sessions: tcp 1, udp 1, icmp 0"), "\(out)")
        #expect(out.contains("tcp [2001:db8:1::7]:40001 <-> 198.51.100.1:"), "\(out)")
        #expect(out.contains("V6_INIT"), "\(out)")
        var reader = try CaptureReader(path: output)
        var sources: [String] = []
        while let p = try reader.next() { sources.append("\(IPv4Address(p.bytes, 12))") }
        #expect(sources == ["198.51.100.1", "198.51.100.1"])
        // JSON has the same, and the state.
        let (jsonStatus, json, _) = try run(offload, ["nat64", "--pool6", "2001:db8:64::/96", "--pool4", "198.51.100.1", "--json",
                                                      input, output])
        #expect(jsonStatus == 0 && json.contains("\"no_session\" : 1") && json.contains("\"state\""), "\(json)")
    }
}
