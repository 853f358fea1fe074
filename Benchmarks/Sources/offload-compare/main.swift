// Measures, in one process, the cases the issues compare against a yardstick:
//   - the Swift Internet checksum against the C reference built in this package (Swift/C ratio);
//   - per-packet header parse cost;
//   - the GRO engine on the DPDK anchor's cases (1, 8, 64 interleaved flows, 1024 flows, all-PSH),
//     with checksums trusted and with software verification;
//   - GSO of a 45 × 1448-byte super-packet, with and without complete checksums;
//   - SIIT translation: the stage's in-place path per packet or super-packet (the same cost: the
//     headers only), and the whole-packet path it falls back to, per packet.
// Output: a table for people and `result <name> <value>` lines for scripts/bench-vs-dpdk.sh.
// Usage: swift run -c release offload-compare [--quick]

import CChecksumReference
import Foundation
import OffloadBenchmarkSupport
import OffloadEngine
import OffloadForwarder
import OffloadSIIT
import OffloadWire

let quick = CommandLine.arguments.contains("--quick")
/// `--only NAME-PREFIX` runs just the matching cases (for profiling one case).
let only: String? = CommandLine.arguments.firstIndex(of: "--only").flatMap {
    CommandLine.arguments.indices.contains($0 + 1) ? CommandLine.arguments[$0 + 1] : nil
}
func wanted(_ name: String) -> Bool { only.map { name.hasPrefix($0) } ?? true }
let seconds = quick ? 0.15 : 0.5
let runs = quick ? 3 : 5

func report(_ name: String, _ value: Double, _ unit: String) {
    let padded = name.padding(toLength: 44, withPad: " ", startingAt: 0)
    print("\(padded) \(String(format: "%9.2f", value)) \(unit)")
    print("result \(name) \(value)")
}

// MARK: Checksum, Swift vs C, interleaved A/B/A so drift shows.
print("# Internet checksum: Swift vs C reference (same algorithm), hot cache")
/// 64 sums per call over 16 buffers 2 KiB apart (the DPDK anchor's `rte_raw_cksum` row: a hot
/// set of 16 packet buffers), so the clock and the closure call are amortised.
func benchmarkChecksum(size: Int) {
    let stride = 2048
    let data = (0..<(16 * stride)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
    var swiftRuns: [Double] = []
    var cRuns: [Double] = []
    data.withUnsafeBytes { buffer in
        let base = buffer.baseAddress!
        for _ in 0..<3 {
            swiftRuns += measure(seconds: seconds / 3, runs: 1) {
                var acc: UInt32 = 0
                for k in 0..<64 {
                    let piece = UnsafeRawBufferPointer(start: base + (k & 15) * stride, count: size)
                    acc &+= UInt32(InternetChecksum.unsafeSum(piece).value)
                }
                consume(acc)
                return 64
            }
            cRuns += measure(seconds: seconds / 3, runs: 1) {
                var acc: UInt32 = 0
                for k in 0..<64 { acc &+= UInt32(c_reference_checksum_sum(base + (k & 15) * stride, size)) }
                consume(acc)
                return 64
            }
        }
        let piece = UnsafeRawBufferPointer(start: base, count: size)
        precondition(InternetChecksum.unsafeSum(piece).value == c_reference_checksum_sum(base, size), "Swift and C disagree")
    }
    let s = median(swiftRuns)
    let c = median(cRuns)
    report("checksum_swift_\(size)B_ns", s, "ns (\(String(format: "%.1f", Double(size) / s)) GB/s)")
    report("checksum_c_\(size)B_ns", c, "ns (\(String(format: "%.1f", Double(size) / c)) GB/s)")
    report("checksum_swift_over_c_throughput_\(size)B", c / s, "x (Swift throughput / C throughput)")
}
for size in [64, 256, 576, 1448, 1500, 2000] where wanted("checksum") { benchmarkChecksum(size: size) }

// MARK: Parse cost
print("# Header parse (PacketLayout: Ethernet + IP + TCP, every length checked once)")
for ipv6 in [false, true] where wanted("parse") {
    let frames = Workload.batches(flows: 8, burst: 64, count: 1, ipv6: ipv6)[0]
    let ns = median(measure(seconds: seconds, runs: runs) {
        var total = 0
        for f in frames {
            if let l = try? PacketLayout(parsing: f.span.bytes, linkType: .ethernet) { total &+= l.payloadOffset }
        }
        consume(total)
        return frames.count
    })
    report("parse_\(ipv6 ? "ipv6" : "ipv4")_tcp_ns_per_packet", ns, "ns/packet")
}

// MARK: GRO
print("# GRO, burst 64, TCP/IPv4 1448 B + TS option, flows round-robin (DPDK anchor cases)")
struct Case {
    var name: String
    var flows: Int
    var push = false
}
let cases = [Case(name: "1flow", flows: 1), Case(name: "8flows", flows: 8), Case(name: "64flows", flows: 64),
             Case(name: "1024flows", flows: 1024), Case(name: "allpsh", flows: 1, push: true)]
/// In a function: locals, not main.swift's top-level (main-actor) variables, whose every access
/// would be measured too.
func benchmarkGRO(_ c: Case, checksum: ChecksumState) {
    let ring = Workload.batches(flows: c.flows, burst: 64, count: c.flows >= 1024 ? 32 : 16, push: c.push)
        .map { BatchBox($0, checksum: checksum) }
    var engine = GROEngine()
    var next = 0
    var inPackets = 0
    var outPackets = 0
    let ns = median(measure(seconds: seconds, runs: runs) {
        let box = ring[next]
        next = (next + 1) % ring.count
        engine.coalesce(box.batch)
        inPackets += box.batch.count
        outPackets += engine.outputCount
        return box.batch.count
    })
    let label = checksum == .verified ? "trusted" : "verify"
    report("gro_\(c.name)_\(label)_ns_per_packet", ns,
           "ns/packet (merge \(String(format: "%.1f", Double(inPackets) / Double(max(outPackets, 1))))x)")
}
for checksum in [ChecksumState.verified, .unverified] {
    for c in cases where wanted("gro_\(c.name)_\(checksum == .verified ? "trusted" : "verify")") {
        benchmarkGRO(c, checksum: checksum)
    }
}

// MARK: GSO
print("# GSO: 45 x 1448 B super-packet into 1514-byte frames")
func benchmarkGSO(checksum: OutputChecksum) {
    let (superPacket, gso) = Workload.superPacket()
    var segmenter = GSOSegmenter()
    let ns = median(measure(seconds: seconds, runs: runs) {
        superPacket.withUnsafeBytes { buffer in
            try! segmenter.segment(buffer, linkType: .ethernet, gso: gso, checksum: checksum)
        }
        return segmenter.segmentCount
    })
    report("gso_\(checksum == .partial ? "nocsum" : "csum")_ns_per_segment", ns, "ns/segment")
}
for checksum in [OutputChecksum.partial, .complete] where wanted("gso") { benchmarkGSO(checksum: checksum) }

// MARK: SIIT
print("# SIIT: a TCP packet's headers translated in place (IPv4 <-> IPv6), and the whole-packet path")
/// In a function: locals, not main.swift's top-level (main-actor) variables, whose every access
/// would be measured too.
func benchmarkSIIT(ipv6: Bool) {
    let siitPrefix = RFC6052Prefix("2001:db8:64::/96")!
    var builder = PacketBuilder()
    builder.link = .raw
    if ipv6 {
        builder.source = .v6(siitPrefix.embedding(IPv4Address(192, 0, 2, 1)))
        builder.destination = .v6(siitPrefix.embedding(IPv4Address(198, 51, 100, 7)))
    }
    builder.payloadLength = 1448
    let frame = builder.frame()
    let layout = try! PacketLayout(parsing: frame.span.bytes, linkType: .raw)
    let headerLength = layout.payloadOffset
    let original = Array(frame[..<headerLength]) + [UInt8](repeating: 0, count: 64)
    var headers = original
    let family = ipv6 ? "6to4" : "4to6"
    for segments in [1, 45] {
        var stage = SIITStage(prefix: siitPrefix)
        let gso = segments == 1 ? nil : GSOInfo(kind: ipv6 ? .tcpv6 : .tcpv4, segmentSize: 1448, segmentCount: segments)
        let ns = median(measure(seconds: seconds, runs: runs) {
            headers.withUnsafeMutableBytes { h in original.withUnsafeBytes { h.copyMemory(from: $0) } }
            let verdict = StagePacket.withPacket(headers: &headers, headerLength: headerLength, layout: layout, gso: gso,
                                                 checksum: .partial, payloadLength: 1448 * segments, egressMTU: 1500) {
                stage.process(&$0)
            }
            precondition(verdict == .forward)
            return 1
        })
        report("siit_\(family)_in_place_\(segments == 1 ? "packet" : "super_packet_45")_ns", ns,
               segments == 1 ? "ns/packet" : "ns/super-packet (\(String(format: "%.2f", ns / 45)) ns per wire packet)")
    }
    var translator = SIITTranslator(configuration: SIITConfiguration(pool6: siitPrefix))
    let ns = median(measure(seconds: seconds, runs: runs) {
        guard case .translated(let out) = translator.translate(frame) else { preconditionFailure() }
        consume(out)
        return 1
    })
    report("siit_\(family)_whole_packet_ns", ns, "ns/packet (the slow path: copies the 1500-byte packet)")
}
for ipv6 in [false, true] where wanted("siit") { benchmarkSIIT(ipv6: ipv6) }

// MARK: A machine yardstick in the same run (as the DPDK anchor prints)
func memcpyYardstick() -> Double {
    let block = [UInt8](repeating: 1, count: 1448)
    var target = [UInt8](repeating: 0, count: 1448)
    return median(measure(seconds: seconds, runs: runs) {
        target.withUnsafeMutableBytes { dst in block.withUnsafeBytes { src in dst.copyMemory(from: src) } }
        consume(target[7])
        return 1
    })
}
if wanted("memcpy") { report("memcpy_1448B_hot_ns", memcpyYardstick(), "ns") }
