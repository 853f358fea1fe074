import Foundation
import OffloadCapture
import OffloadEngine
import OffloadTestSupport
import OffloadWire
import Testing

/// Cuts a capture file in the middle of a record: the first `keep` bytes.
func truncatedCopy(of path: String, keep fraction: Double) throws -> String {
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    let cut = temporaryPath("cut-" + URL(fileURLWithPath: path).lastPathComponent)
    try data.prefix(Int(Double(data.count) * fraction) | 1).write(to: URL(fileURLWithPath: cut))
    return cut
}

@Suite("what the commands print is true: one policy for damaged captures, options refused where they do nothing, counts that add up")
struct TruthfulOutputTests {
    @Test("a capture cut mid-record: every command warns, keeps what it read, says so and exits 1",
          .enabled(if: offloadBinary != nil, "the offload executable was not built"))
    func damagedCapturePolicy() throws {
        let offload = try #require(offloadBinary)
        let cut = try truncatedCopy(of: try syntheticCapture(), keep: 0.5)
        let merged = temporaryPath("merged.pcapng")
        _ = try run(offload, ["coalesce", try syntheticCapture(), merged])
        let cutMerged = try truncatedCopy(of: merged, keep: 0.5)
        let cases: [(arguments: [String], output: String?)] = [
            (["coalesce", cut, temporaryPath("c.pcapng")], "c"),
            (["segment", cutMerged, temporaryPath("s.pcap")], "s"),
            (["stats", cut], nil),
            (["siit", "--pool6", "64:ff9b::/96", cut, temporaryPath("t.pcap")], "t"),
            (["doctor", cut], nil),
            (["tunnel", "--id", "7", "--local", "192.0.2.1", "--remote", "192.0.2.2", cut, temporaryPath("u.pcap")], "u"),
        ]
        for (arguments, output) in cases {
            let (status, out, err) = try run(offload, arguments)
            #expect(status == 1, "\(arguments[0]): exit \(status)")
            #expect(err.contains("warning:") && err.contains("records before it were read"), "\(arguments[0]): \(err)")
            if output != nil {
                let path = try #require(arguments.last)
                let written = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
                #expect(written > 100, "\(arguments[0]) kept what it read in \(path)")
                // What was kept is a readable capture.
                var reader = try CaptureReader(path: path)
                var records = 0
                while try reader.next() != nil { records += 1 }
                #expect(records > 0, "\(arguments[0])")
            } else {
                #expect(!out.isEmpty, "\(arguments[0]) shows what it read")
            }
        }
    }

    @Test("live-only options offline, offline-only options live, and impossible values: refused with exit 2",
          .enabled(if: offloadBinary != nil, "the offload executable was not built"))
    func optionsRefused() throws {
        let offload = try #require(offloadBinary)
        let input = try syntheticCapture()
        let refused: [[String]] = [
            ["siit", "--pool6", "64:ff9b::/96", "--setup", "--route4", "garbage", "--impair", "loss=50%", input, temporaryPath("x.pcap")],
            ["siit", "--pool6", "64:ff9b::/96", "--metrics", "127.0.0.1:9999", input, temporaryPath("x.pcap")],
            ["siit", "--pool6", "64:ff9b::/96", "--ingress", "a", "--egress", "b", "--mtu6", "1280"],
            ["tunnel", "--id", "1", "--local", "192.0.2.1", "--remote", "192.0.2.2", "--route", "10.0.0.0/8", input,
             temporaryPath("x.pcap")],
            ["stats", "--mtu", "0", input],
            ["stats", "--mtu", "70000", input],
        ]
        for arguments in refused {
            let (status, _, err) = try run(offload, arguments)
            #expect(status == 2, "\(arguments): exit \(status), \(err)")
        }
        let (_, help, _) = try run(offload, ["siit", "--help"])
        // One default in the help of --mtu4 and --mtu6, not ours and the parser's.
        #expect(!help.contains("(default: 65535)"), "\(help)")
        let (_, overview, _) = try run(offload, ["--help"])
        #expect(overview.contains("tunnel") && overview.contains("generate") && overview.contains("ipsec"))
        let (status, version, _) = try run(offload, ["--version"])
        #expect(status == 0 && version.split(separator: ".").count == 3, "\(version)")
    }

    @Test("siit offline on coalesced super-packets: counted, resegmented, and in = forwarded + refused + dropped by reason",
          .enabled(if: offloadBinary != nil, "the offload executable was not built"))
    func siitReconciles() throws {
        let offload = try #require(offloadBinary)
        let merged = temporaryPath("merged.pcapng")
        _ = try run(offload, ["coalesce", try syntheticCapture(), merged])
        for mtu6 in ["65535", "1280"] {
            let (status, out, err) = try run(offload, ["siit", "--pool6", "64:ff9b::/96", "--mtu6", mtu6, "--json", merged,
                                                        temporaryPath("v6.pcap")])
            #expect(status == 0, "\(err)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
            func n(_ key: String) -> Int { json[key] as? Int ?? -1 }
            let translation = json["translation"] as? [String: Any] ?? [:]
            let dropped = (translation["dropped"] as? [String: Int] ?? [:]).values.reduce(0, +)
            #expect(n("superPackets") > 0, "super-packets counted: \(out.prefix(300))")
            #expect(n("packetsIn") == n("forwarded") + n("refused") + n("notForwarded") + dropped + n("malformed")
                    + n("notIP") + n("snapped"), "\(out)")
            #expect(n("written") == n("packetsToOtherSide") + n("icmpErrors"))
            if mtu6 == "1280" {
                #expect(n("refused") > 0 && n("refused") == n("icmpErrors") + n("icmpSuppressed"), "\(out)")
            } else {
                #expect(n("refused") == 0 && n("packetsToOtherSide") > n("forwarded"), "super-packets resegmented")
            }
        }
    }

    @Test("coalesce and segment reconcile: in = out − super-packets + their segments, on every corpus capture too")
    func coalesceSegmentReconcile() throws {
        for input in [try syntheticCapture()] + corpusFiles().filter({ !$0.contains("/malformed/") }) {
            let merged = temporaryPath("m.pcapng")
            let c = try coalesceCapture(input: input, output: merged)
            #expect(c.packetsIn == c.packetsOut - c.superPackets + c.segments, "\(input): \(c)")
            let s = try segmentCapture(input: merged, output: temporaryPath("s.pcap"))
            #expect(s.packetsOut == s.packetsIn - s.superPackets + s.segments, "\(input): \(s)")
        }
    }

    @Test("GRO counters in JSON are keyed by reason name")
    func reasonsByName() throws {
        var stats = GROStatistics()
        stats[.sequenceGap] = 3
        let data = try JSONEncoder().encode(stats)
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let reasons = try #require(json["reasons"] as? [String: Int])
        #expect(reasons["sequence_gap"] == 3 && reasons.count == GROReason.allCases.count)
        #expect(try JSONDecoder().decode(GROStatistics.self, from: data) == stats)
    }

    @Test("checksums holding only the pseudo-header sum (a host capture with checksum offload): recognised, counted, and merged with --checksums trust")
    func partialChecksums() throws {
        // A bulk flow whose TCP checksum fields hold the pseudo-header sum, as tcpdump on the sender shows.
        let path = temporaryPath("partial.pcap")
        var writer = try CaptureWriter(path: path, format: .pcap(nanosecond: true, bigEndian: false),
                                       interfaces: [CaptureInterface(linkType: .raw)])
        var seq: UInt32 = 1000
        for i in 0..<40 {
            var b = PacketBuilder()
            b.link = .raw
            b.source = .v4(IPv4Address(10, 0, 0, 1))
            b.destination = .v4(IPv4Address(10, 0, 0, 2))
            b.sourcePort = 40000
            b.destinationPort = 5201
            b.sequence = seq
            b.ipID = UInt16(i)
            b.payload = [UInt8](repeating: UInt8(i), count: 1448)
            var frame = b.frame()
            let partial = InternetChecksum.partialChecksumField(pseudoHeader: b.pseudoHeaderSum(length: frame.count - 20))
            frame[20 + 16] = UInt8(partial >> 8)
            frame[20 + 17] = UInt8(partial & 0xFF)
            try writer.writePacket(frame, timestamp: 1_000_000_000 + UInt64(i) * 1000)
            seq &+= 1448
        }
        try writer.flush()
        let report = try coalesceCapture(input: path, output: temporaryPath("partial-out.pcapng"))
        #expect(report.gro.partialChecksums == 40 && report.gro[.badChecksum] == 40, "\(report.gro)")
        var trust = CoalesceOptions()
        trust.checksums = .verified
        #expect(try coalesceCapture(input: path, output: temporaryPath("trusted.pcapng"), options: trust).superPackets > 0)
        let stats = try captureStatistics(input: path)
        #expect(stats.partialChecksums == 40 && stats.badL4Checksums == 40)
        if let offload = offloadBinary {
            let (_, text, _) = try run(offload, ["stats", path])
            #expect(text.contains("pseudo-header sum") && text.contains("--checksums trust"), "\(text)")
        }
    }

    @Test("an LRO merge is labelled LRO, and segment says why it cannot split it back",
          .enabled(if: offloadBinary != nil, "the offload executable was not built"))
    func lroLabels() throws {
        let offload = try #require(offloadBinary)
        let lro = temporaryPath("lro.pcapng")
        _ = try run(offload, ["coalesce", "--mode", "lro", try syntheticCapture(), lro])
        var reader = try CaptureReader(path: lro)
        var comments: [String] = []
        while let p = try reader.next() { comments += p.info.options.compactMap(\.commentText) }
        #expect(!comments.isEmpty && comments.allSatisfy { $0.contains("LRO") && !$0.contains("GRO") }, "\(comments.prefix(2))")
        let (_, out, _) = try run(offload, ["segment", lro, temporaryPath("back.pcap")])
        #expect(out.contains("LRO merges") && !out.contains("UDP, or headers that do not parse"), "\(out)")
    }
}
