import Foundation
import OffloadCapture
import OffloadEngine
import OffloadWire
import OffloadTestSupport
import Testing

/// Writes the project's own synthetic traffic to a file.
func syntheticCapture(_ format: CaptureFormat = .pcap(nanosecond: true, bigEndian: false), scale: Int = 1) throws -> String {
    let path = temporaryPath(format == .pcapng ? "synthetic.pcapng" : "synthetic.pcap")
    var writer = try CaptureWriter(path: path, format: format, interfaces: [CaptureInterface(linkType: .ethernet)])
    for f in SyntheticTraffic.capture(scale: scale) { try writer.writePacket(f.bytes, timestamp: f.timestamp) }
    try writer.flush()
    return path
}

/// The directory of the shared corpus, when it exists beside the project.
let corpusDirectory: URL? = {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let corpus = root.deletingLastPathComponent().appendingPathComponent("shared/corpus/pcap")
    return FileManager.default.fileExists(atPath: corpus.path) ? corpus : nil
}()

func corpusFiles() -> [String] {
    guard let dir = corpusDirectory,
        let e = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: nil)
    else { return [] }
    return e.compactMap { ($0 as? URL)?.path }.filter { $0.hasSuffix(".pcap") || $0.hasSuffix(".pcapng") }.sorted()
}

@Suite("coalesce, segment, stats on captures")
struct PipelineTests {
    @Test("the project's own capture: coalesce then segment gives every flow back, byte for byte",
          arguments: [1, 8, 64])
    func syntheticRoundTrip(batch: Int) throws {
        let input = try syntheticCapture()
        let merged = temporaryPath("merged.pcapng")
        var options = CoalesceOptions()
        options.batch = batch
        let report = try coalesceCapture(input: input, output: merged, options: options)
        #expect(report.packetsIn == SyntheticTraffic.capture().count)
        if batch > 1 { #expect(report.superPackets > 50) } else { #expect(report.superPackets == 0) }
        #expect(report.packetsOut < report.packetsIn || batch == 1)
        let restored = temporaryPath("restored.pcap")
        let back = try segmentCapture(input: merged, output: restored)
        #expect(back.splitByRecordedFacts == report.superPackets && back.splitByMTU == 0)
        let comparison = try compareCapturesPerFlow(input, restored)
        #expect(comparison.identical, "flows that differ: \(comparison.differingFlows)")
        // Merged packets have valid checksums in the file.
        for p in try readAll(merged) where p.info.gso != nil {
            #expect(p.bytes.count > 1514 && checksumsValid(p.bytes))
        }
    }

    @Test("flush timeout on capture time, UDP GRO and trust mode keep the round trip")
    func optionsRoundTrip() throws {
        let input = try syntheticCapture(.pcapng)
        for variant in 0..<3 {
            var options = CoalesceOptions()
            switch variant {
            case 0: options.engine.flushTimeout = 50_000  // 50 µs: packets 10 µs apart stay across polls
            case 1: options.engine.udp = true
            default: options.checksums = .verified
            }
            options.batch = 16
            let merged = temporaryPath("merged.pcapng")
            let report = try coalesceCapture(input: input, output: merged, options: options)
            if variant == 0 { #expect(report.gro[.timeout] > 0) }
            let restored = temporaryPath("restored.pcapng")
            _ = try segmentCapture(input: merged, output: restored)
            let comparison = try compareCapturesPerFlow(input, restored)
            #expect(comparison.identical, "variant \(variant): \(comparison.differingFlows)")
        }
    }

    @Test("pcap output loses the GSO facts; segment then splits by the MTU")
    func pcapOutputSplitsByMTU() throws {
        let input = try syntheticCapture()
        let merged = temporaryPath("merged.pcap")
        let report = try coalesceCapture(input: input, output: merged)
        #expect(try readAll(merged).allSatisfy { $0.info.gso == nil })
        let restored = temporaryPath("restored.pcap")
        var options = SegmentOptions()
        options.mtu = 1500
        let back = try segmentCapture(input: merged, output: restored, options: options)
        #expect(back.splitByMTU == report.superPackets)
        #expect(back.packetsOut == report.packetsIn)
        // IPv4 segments get the MTU-derived size; every restored packet fits the MTU.
        #expect(try readAll(restored).allSatisfy { $0.bytes.count <= 1514 })
    }

    @Test("stats counts flows, GRO merges and reasons")
    func stats() throws {
        let input = try syntheticCapture()
        let s = try captureStatistics(input: input)
        #expect(s.packets == SyntheticTraffic.capture().count)
        #expect(s.flows.count == 12)
        #expect(s.flows[0].payloadBytes == 600_000)
        #expect(s.groSuperPackets > 50 && s.groMergedPackets > 300)
        #expect(s.groReasons["zero_payload"] ?? 0 > 100)
        #expect(s.overMTU == 0 && s.badL4Checksums == 0 && s.malformed == 0)
        let merged = temporaryPath("merged.pcapng")
        _ = try coalesceCapture(input: input, output: merged)
        let after = try captureStatistics(input: merged)
        let superPackets = try readAll(merged).filter { $0.info.gso != nil }.count
        #expect(after.packets == s.groPacketsOut)
        #expect(after.overMTU == superPackets && superPackets == s.groSuperPackets)
        #expect(after.badL4Checksums == 0 && after.badIPChecksums == 0)
    }

    @Test("every corpus capture: coalesce then segment gives every flow back; malformed files never crash",
          .enabled(if: pcapCorpusPresent, "the development corpus (../shared/corpus/pcap) is not beside the project"))
    func corpus() throws {
        let files = corpusFiles()
        var checked = 0
        for file in files {
            let merged = temporaryPath("corpus.pcapng")
            let restored = temporaryPath("corpus-restored.pcapng")
            do {
                _ = try coalesceCapture(input: file, output: merged)
            } catch {
                // Only a corrupt file may fail, and then with a capture error that says where.
                #expect(file.contains("/malformed/"), "\(file): \(error)")
                continue
            }
            var options = SegmentOptions()
            options.mtu = 65_535  // split only what coalesce merged, not the super-packets already there
            _ = try segmentCapture(input: merged, output: restored, options: options)
            let comparison = try compareCapturesPerFlow(file, restored)
            #expect(comparison.identical, "\(file): \(comparison.differingFlows.prefix(3))")
            checked += 1
        }
        #expect(checked >= 50)
    }
}

/// Whether the IPv4 header and TCP/UDP checksums of an Ethernet frame verify.
func checksumsValid(_ frame: [UInt8]) -> Bool {
    guard let l = try? PacketLayout(parsing: frame.span.bytes, linkType: .ethernet) else { return false }
    let n = l.networkOffset
    var pseudo = l.network == .ipv4
        ? InternetChecksum.sum(frame.span.bytes.extracting((n + 12)..<(n + 20)))
        : InternetChecksum.sum(frame.span.bytes.extracting((n + 8)..<(n + 40)))
    pseudo += OnesComplementSum(UInt16(l.transport.rawValue)) + OnesComplementSum(UInt16(l.ipEnd - l.transportOffset))
    let l4 = InternetChecksum.sum(frame.span.bytes.extracting(l.transportOffset..<l.ipEnd), initial: pseudo)
    let ip = l.network == .ipv4 ? InternetChecksum.sum(frame.span.bytes.extracting(n..<l.transportOffset)).value : 0xFFFF
    return l4.value == 0xFFFF && ip == 0xFFFF
}
