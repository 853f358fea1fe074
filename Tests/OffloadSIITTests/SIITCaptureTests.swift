import Foundation
import OffloadCapture
import OffloadDoctor
import OffloadSIIT
import OffloadTestSupport
import OffloadWire
import Testing

@Suite("offload siit: a capture translated offline")
struct SIITCaptureTests {
    static let prefix = RFC6052Prefix(IPv6Prefix(IPv6Address(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0), length: 96)!)!

    func path(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("siit-\(getpid())-\(name)").path
    }

    /// An Ethernet capture: IPv4 TCP and UDP, IPv6 TCP inside and outside the prefix, ICMP, ARP, one cut short.
    func makeInput(_ name: String) throws -> String {
        var frames: [[UInt8]] = []
        var tcp4 = PacketBuilder()
        tcp4.payloadLength = 1400
        frames.append(tcp4.frame())
        var udp4 = tcp4
        udp4.udp = true
        udp4.payloadLength = 200
        frames.append(udp4.frame())
        var tcp6 = PacketBuilder()
        tcp6.source = .v6(Self.prefix.embedding(IPv4Address(198, 51, 100, 7)))
        tcp6.destination = .v6(Self.prefix.embedding(IPv4Address(192, 0, 2, 1)))
        tcp6.payloadLength = 500
        frames.append(tcp6.frame())
        var outside = PacketBuilder()
        outside.ipv6 = true
        frames.append(outside.frame())
        var icmp = PacketBuilder()
        icmp.transport = .icmp(type: 3, code: 1, restOfHeader: 0)  // an error: not translated yet
        icmp.payloadLength = 56
        frames.append(icmp.frame())
        frames.append([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 2, 0, 0, 0, 0, 1, 0x08, 0x06] + [UInt8](repeating: 0, count: 28))
        let file = path("\(name)-in.pcap")
        var writer = try CaptureWriter(path: file, format: .pcap(nanosecond: true, bigEndian: false),
                                       interfaces: [CaptureInterface(linkType: .ethernet)])
        for (i, f) in frames.enumerated() { try writer.writePacket(f, timestamp: UInt64(i) * 1000) }
        try writer.writePacket(Array(tcp4.frame()[0..<60]), timestamp: 9000, originalLength: tcp4.frame().count)
        try writer.flush()
        return file
    }

    @Test("families flip, checksums verify, TTL drops by one, everything else is counted")
    func translate() throws {
        let input = try makeInput("translate")
        let output = path("out.pcap")
        defer { for p in [input, output] { try? FileManager.default.removeItem(atPath: p) } }
        let report = try SIITCapture.translate(input: input, output: output, configuration: SIITConfiguration(pool6: Self.prefix))
        #expect(report.packetsIn == 7 && report.written == 3 && report.translation.toIPv6 == 2
            && report.translation.toIPv4 == 1)
        #expect(report.translation.dropped[.untranslatableAddress] == 1 && report.translation.dropped[.icmpNotTranslated] == 1)
        #expect(report.notIP == 1 && report.snapped == 1)
        var reader = try CaptureReader(path: output)
        var families: [Bool] = []
        while let p = try reader.next() {
            #expect(p.linkType == .raw)
            let layout = try PacketLayout(parsing: p.bytes.span.bytes, linkType: .raw)
            let read = FlowKey(p.bytes.span.bytes, layout: layout)
            let key = try #require(read)
            let l4 = p.bytes.span.bytes.extracting(layout.transportOffset..<layout.ipEnd)
            let transport = try #require(key.transport)
            let pseudo: OnesComplementSum = switch (key.source, key.destination) {
            case (.v4(let s), .v4(let d)):
                InternetChecksum.pseudoHeaderSum(ipv4Source: s, destination: d, protocolNumber: transport, length: l4.byteCount)
            case (.v6(let s), .v6(let d)):
                InternetChecksum.pseudoHeaderSum(ipv6Source: s, destination: d, nextHeader: transport, length: l4.byteCount)
            default: .zero
            }
            #expect(InternetChecksum.sum(l4, initial: pseudo).value == 0xFFFF, "\(key)")
            let ttl = key.source.isIPv4 ? p.bytes[8] : p.bytes[7]
            #expect(ttl == 63)
            families.append(key.source.isIPv4)
        }
        #expect(families == [false, false, true])  // TCP and UDP to IPv6, then TCP to IPv4
    }

    @Test("the command: counts, JSON, and usage errors", .enabled(if: offloadBuilt, "the offload executable was not built"))
    func command() throws {
        let offload = try #require(builtExecutable(named: "offload"))
        let input = try makeInput("command")
        let output = path("cli.pcap")
        defer { for p in [input, output] { try? FileManager.default.removeItem(atPath: p) } }
        let (status, text) = shell("\(offload) siit --pool6 2001:db8:64::/96 --json \(input) \(output) 2>/dev/null")
        #expect(status == 0, "\(text)")
        let report = try JSONDecoder().decode(SIITCaptureReport.self, from: Data(text.utf8))
        #expect(report.written == 3 && report.translation.toIPv4 == 1)
        // Behind a 1460-byte IPv6 MTU the 1452-byte IPv4 segment (DF) grows to 1472 and does not fit:
        // "fragmentation needed" goes back (and is written too).
        let small = shell("\(offload) siit --pool6 2001:db8:64::/96 --mtu6 1460 --json \(input) \(output) 2>/dev/null")
        let tooBig = try JSONDecoder().decode(SIITCaptureReport.self, from: Data(small.output.utf8))
        #expect(tooBig.icmpErrors == 1 && tooBig.written == 3)
        #expect(shell("\(offload) siit --pool6 2001:db8:64::/80 \(input) \(output)").status == 2)
        #expect(shell("\(offload) siit --pool6 2001:db8:64::/96 --eam 2001:db8::/120=192.0.2.0/23 \(input) \(output)").status == 2)
        #expect(shell("\(offload) siit --pool6 2001:db8:64::/96 --ingress a \(input) \(output)").status == 2)
        #expect(shell("\(offload) siit --pool6 2001:db8:64::/96 /nonexistent \(output)").status == 1)
    }
}

/// tshark, an independent dissector, on what the translator writes.
@Suite("tshark reads every translated packet with no malformed packets or bad checksums")
struct SIITTsharkTests {
    /// Packets tshark marks malformed or with a bad IP/TCP/UDP/ICMP checksum.
    func problems(_ file: String) -> (count: Int, lines: String) {
        let (status, out) = shell(
            "tshark -r \(file) -o tcp.check_checksum:TRUE -o ip.check_checksum:TRUE -o udp.check_checksum:TRUE "
                + "-Y '_ws.malformed || tcp.checksum.status == 0 || ip.checksum.status == 0 "
                + "|| udp.checksum.status == 0 || icmp.checksum.status == 0 || icmpv6.checksum.status == 0' "
                + "-T fields -e frame.number -e frame.protocols 2>/dev/null")
        #expect(status == 0, "tshark could not read \(file)")
        let lines = out.split(separator: "\n").filter { !$0.isEmpty }
        return (lines.count, lines.prefix(5).joined(separator: "\n"))
    }

    @Test("the corpus's IPv4 captures to IPv6 and back, and Jool's graybox inputs",
          .enabled(if: installed("tshark"), "tshark is not installed (apt-get install -y tshark)"),
          .enabled(if: offloadBuilt, "the offload executable was not built"),
          .enabled(if: pcapCorpusPresent || joolCorpusPresent, "the development corpus is not beside the project"))
    func tshark() throws {
        let offload = try #require(builtExecutable(named: "offload"))
        let shared = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/corpus")
        var checked = 0
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("siit-tshark-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        // IPv4 captures: to IPv6 (through a network-specific prefix, so every checksum changes), and back.
        for name in ["bulk/zeek-http-m57-long-49583-80.pcap", "bulk/zeek-ssh.pcap", "superpkt/tcpdump-gso-ipv4.pcap"] {
            let input = shared.appendingPathComponent("pcap/\(name)").path
            guard FileManager.default.fileExists(atPath: input) else { continue }
            let six = "\(scratch)/six.pcap"
            let four = "\(scratch)/four.pcap"
            #expect(shell("\(offload) siit --pool6 2001:db8:64::/96 \(input) \(six)").status == 0)
            #expect(shell("\(offload) siit --pool6 2001:db8:64::/96 \(six) \(four)").status == 0)
            let before = problems(input).count
            let (afterSix, linesSix) = problems(six)
            let (afterFour, linesFour) = problems(four)
            #expect(afterSix <= before, "\(name) as IPv6: \(afterSix) problems, the input had \(before):\n\(linesSix)")
            #expect(afterFour <= before, "\(name) back as IPv4: \(afterFour) problems, the input had \(before):\n\(linesFour)")
            checked += 1
        }
        // Jool's graybox inputs (all but the deliberate checksum failures), translated with its setup.
        let graybox = shared.appendingPathComponent("jool-graybox-siit")
        if FileManager.default.fileExists(atPath: graybox.path) {
            let cases = Graybox.cases.filter { !$0.input.contains("csumfail") && !$0.input.contains("ic7t")
                && !$0.input.contains("idkt") && !$0.input.contains("eat1") }
            let input = "\(scratch)/graybox.pcap"
            var writer = try CaptureWriter(path: input, format: .pcap(nanosecond: true, bigEndian: false),
                                           interfaces: [CaptureInterface(linkType: .raw)])
            for (i, c) in cases.enumerated() { try writer.writePacket(try Graybox.packet(c.input), timestamp: UInt64(i)) }
            try writer.flush()
            let output = "\(scratch)/graybox-out.pcap"
            let (status, text) = shell("\(offload) siit --pool6 2001:db8:100::/40 --eam 2001:db8:3::/120=1.0.0.0/24 "
                + "--eam 2001:db8:2::/120=10.0.0.0/24 --rfc6791v4 203.0.113.8 --icmp-source4 198.51.100.1 "
                + "--icmp-source6 2001:db8:1c0:2:1:: \(input) \(output)")
            #expect(status == 0, "\(text)")
            // Jool's own expected packets carry quotes whose inner checksums tshark cannot verify (cut
            // short, or wrong on purpose in the inputs) and a first fragment it does not reassemble:
            // the translation may show those, and no more.
            let oracle = "\(scratch)/graybox-expected.pcap"
            var expectedWriter = try CaptureWriter(path: oracle, format: .pcap(nanosecond: true, bigEndian: false),
                                                   interfaces: [CaptureInterface(linkType: .raw)])
            for (i, e) in cases.flatMap(\.expected).enumerated() {
                try expectedWriter.writePacket(try Graybox.packet(e), timestamp: UInt64(i))
            }
            try expectedWriter.flush()
            let (after, lines) = problems(output)
            let jool = problems(oracle).count
            #expect(after <= jool, "\(after) problems in the translated graybox packets, \(jool) in Jool's:\n\(lines)")
            checked += 1
        }
        #expect(checked > 0, "no capture of the corpus was checked")
    }
}

/// `offload doctor` on captures taken on both sides of the translator.
@Suite("offload doctor follows a flow across the translator")
struct SIITDoctorTests {
    @Test("IPv6 side and IPv4 side (merged by GRO): matched through the prefix, nothing lost; without it, nothing matches")
    func acrossTheTranslator() throws {
        let prefix = RFC6052Prefix("2001:db8:64::/96")!
        let client = prefix.embedding(IPv4Address(192, 0, 2, 1))
        let server = prefix.embedding(IPv4Address(198, 51, 100, 7))
        var frames: [[UInt8]] = []
        for i in 0..<60 {
            var data = PacketBuilder()
            data.source = .v6(client)
            data.destination = .v6(server)
            data.sequence = 1000 + UInt32(i * 1200)
            data.ack = 1
            data.payloadLength = 1200
            frames.append(data.frame())
            if i % 2 == 1 {
                var ack = PacketBuilder()
                ack.source = .v6(server)
                ack.destination = .v6(client)
                ack.sourcePort = data.destinationPort
                ack.destinationPort = data.sourcePort
                ack.sequence = 1
                ack.ack = data.sequence + 1200
                ack.payloadLength = 0
                frames.append(ack.frame())
            }
        }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("siit-doctor-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let v6 = "\(scratch)/v6.pcap", v4 = "\(scratch)/v4.pcap", merged = "\(scratch)/v4-merged.pcapng"
        var writer = try CaptureWriter(path: v6, format: .pcap(nanosecond: true, bigEndian: false),
                                       interfaces: [CaptureInterface(linkType: .ethernet)])
        for (i, f) in frames.enumerated() { try writer.writePacket(f, timestamp: 1_000_000_000 + UInt64(i) * 10_000) }
        try writer.flush()
        _ = try SIITCapture.translate(input: v6, output: v4, configuration: SIITConfiguration(pool6: prefix))
        _ = try coalesceCapture(input: v4, output: merged)

        var options = DoctorOptions()
        options.ipv4ForIPv6 = { prefix.extracting($0) }
        let followed = try #require(try Doctor.diagnose(paths: [v6, merged], options: options).forwarder.first)
        #expect(followed.dataPacketsIn == 60 && followed.droppedSegments == 0, "\(followed)")
        #expect(followed.merged > 0 && followed.meanSegmentsPerPacket > 1)
        #expect(followed.acksIn == 30 && followed.acksOut == 30 && followed.acksEmittedOrChanged == 0
            && followed.acksSwallowed == 0)
        // Without the prefix nothing matches, and the doctor says so and asks for the mapping
        // instead of judging a forwarder by flows it never saw on both sides.
        let blind = try Doctor.diagnose(paths: [v6, merged])
        #expect(blind.forwarder.isEmpty && !blind.findings.contains { $0.kind == .ackEmitted || $0.kind == .ackIntact })
        let unmatched = try #require(blind.findings.first { $0.kind == .noSharedFlows })
        guard case .unmatched(let e) = unmatched.evidence else { Issue.record("\(unmatched)"); return }
        #expect(e.translatorMappingMissing)
    }
}
