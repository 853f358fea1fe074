import Foundation
import OffloadCapture
import OffloadSIIT
import OffloadTestSupport
import OffloadWire
import Testing

/// 4 → 6 → 4 gives the original packets back where RFC 7915 makes the mapping reversible: the
/// same addresses, TOS, lengths, fragment offset and MF, L4 header (checksum included) and payload,
/// byte for byte. What the RFC does not carry across: the IPv4 ID of unfragmented packets, DF
/// (IPv6 → IPv4 sets it from the size), options (dropped) and the TTL (two routers: − 2).
@Suite("SIIT round trip: IPv4 → IPv6 → IPv4 gives the original packets")
struct SIITRoundTripTests {
    static let configuration = SIITConfiguration(pool6: RFC6052Prefix("2001:db8:64::/96")!)

    /// Counts of what was checked.
    struct Tally { var checked = 0, superPackets = 0, skipped = 0 }

    /// Translates every IPv4 packet of a capture there and back and compares.
    func roundTrip(_ path: String, tally: inout Tally) throws {
        var reader = try CaptureReader(path: path)
        var dataplane = SIITOfflineDataplane(configuration: Self.configuration)
        while let record = try reader.next() {
            guard record.info.capturedLength == record.info.originalLength,
                let (n, network) = try? PacketLayout.linkHeader(record.bytes.span.bytes, linkType: record.linkType),
                network == .ipv4
            else { continue }
            let original = Array(record.bytes[n...])
            guard original.count >= 20, original[0] == 0x45, original[8] > 2,
                let layout = try? PacketLayout(parsing: original.span.bytes, linkType: .raw),
                layout.ipEnd == original.count,
                layout.transport == .tcp || layout.transport == .udp || layout.isFragment
            else {
                tally.skipped += 1  // options, ICMP, padding after the IP packet, other protocols
                continue
            }
            let (six, back6) = dataplane.translate(original)
            guard back6.isEmpty, six.count == 1, let v6 = six.first else {
                tally.skipped += 1  // answered (UDP without a checksum) or cut into fragments
                continue
            }
            #expect(v6[0] >> 4 == 6)
            let (four, back4) = dataplane.translate(v6)
            let again = try #require(four.first, "\(path): \(record.info.timestamp) did not come back")
            #expect(four.count == 1 && back4.isEmpty)
            #expect(again.count == original.count, "\(path): length")
            guard again.count == original.count else { continue }
            #expect(again[1] == original[1] && again[2...3] == original[2...3], "TOS and length")
            #expect(again[6] & 0x3F == original[6] & 0x3F && again[7] == original[7], "MF and the fragment offset")
            if layout.isFragment { #expect(again[4...5] == original[4...5], "a fragment keeps its ID") }
            #expect(again[8] == original[8] - 2 && again[9] == original[9], "TTL − 2, protocol")
            #expect(again[12..<20] == original[12..<20], "addresses")
            #expect(again[20...] == original[20...], "\(path): the L4 header and payload, checksum included")
            #expect(InternetChecksum.sum(again.span.bytes.extracting(0..<20)).value == 0xFFFF)
            tally.checked += 1
            if original.count > 1500 { tally.superPackets += 1 }
        }
    }

    @Test("built flows: TCP with options, UDP, fragments, a 64 KB super-packet")
    func builtFlows() throws {
        var frames: [[UInt8]] = []
        var tcp = PacketBuilder()
        tcp.link = .raw
        tcp.options = [.noOperation, .noOperation, .timestamp(value: 1, echoReply: 2)]
        for i in 0..<20 {
            tcp.sequence = 1 + UInt32(i * 1448)
            tcp.payloadLength = 1448
            tcp.tos = UInt8(i * 4)
            frames.append(tcp.frame())
        }
        tcp.payloadLength = 60_000
        frames.append(tcp.frame())
        var udp = PacketBuilder()
        udp.link = .raw
        udp.udp = true
        udp.payloadLength = 300
        frames.append(udp.frame())
        var fragment = udp
        fragment.payloadLength = 800
        fragment.moreFragments = true
        fragment.ipID = 0x4242
        frames.append(fragment.frame())
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("siit-rt-\(UUID().uuidString).pcap").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        var writer = try CaptureWriter(path: path, format: .pcap(nanosecond: true, bigEndian: false),
                                       interfaces: [CaptureInterface(linkType: .raw)])
        for (i, f) in frames.enumerated() { try writer.writePacket(f, timestamp: UInt64(i)) }
        try writer.flush()
        var tally = Tally()
        try roundTrip(path, tally: &tally)
        #expect(tally.checked == frames.count && tally.superPackets == 1, "\(tally)")
    }

    @Test("the corpus's IPv4 captures, and their super-packets from offload coalesce",
          .enabled(if: pcapCorpusPresent, "the development corpus (../shared/corpus/pcap) is not beside the project"))
    func corpus() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/corpus/pcap")
        let files = ["bulk/zeek-http-m57-long-49583-80.pcap", "bulk/zeek-ssh.pcap", "bulk/ndpi-tumblr.pcap",
                     "superpkt/tcpdump-gso-ipv4.pcap", "frag"].map { root.appendingPathComponent($0).path }
        var tally = Tally()
        for file in files {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory) else { continue }
            let inputs = isDirectory.boolValue
                ? try FileManager.default.contentsOfDirectory(atPath: file).filter { $0.hasSuffix("cap") || $0.hasSuffix("capng") }
                    .map { "\(file)/\($0)" }
                : [file]
            for input in inputs {
                try roundTrip(input, tally: &tally)
                let merged = FileManager.default.temporaryDirectory.appendingPathComponent("siit-rt-\(UUID().uuidString).pcapng").path
                defer { try? FileManager.default.removeItem(atPath: merged) }
                if (try? coalesceCapture(input: input, output: merged)) != nil { try roundTrip(merged, tally: &tally) }
            }
        }
        print("round trip: \(tally.checked) packets checked (\(tally.superPackets) super-packets), \(tally.skipped) skipped")
        #expect(tally.checked > 1000 && tally.superPackets > 50, "\(tally)")
    }
}
