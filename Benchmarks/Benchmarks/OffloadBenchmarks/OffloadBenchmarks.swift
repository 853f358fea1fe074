// ordo-one/benchmark suite: `swift package benchmark` in Benchmarks/.
// Throughput and malloc counts per case. The malloc thresholds are the deterministic gate: the
// engine's steady state allocates nothing per packet (style.md rule 23). Wall-clock numbers are
// reported, never gated (this machine is shared and noisy); for ratios see offload-compare.

import Benchmark
import CChecksumReference
import OffloadBenchmarkSupport
import Logging
import OffloadEngine
import OffloadForwarder
import OffloadTUN
import OffloadSIIT
import OffloadWire

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .instructions],
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000_000
    )

    for size in [64, 576, 1448, 9000] {
        let data = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        Benchmark("checksum Swift \(size)B") { benchmark in
            data.withUnsafeBytes { buffer in
                for _ in benchmark.scaledIterations { blackHole(InternetChecksum.unsafeSum(buffer)) }
            }
        }
        Benchmark("checksum C reference \(size)B") { benchmark in
            data.withUnsafeBytes { buffer in
                for _ in benchmark.scaledIterations {
                    blackHole(c_reference_checksum_sum(buffer.baseAddress, buffer.count))
                }
            }
        }
    }

    let frames = Workload.batches(flows: 8, burst: 64, count: 1)[0]
    Benchmark("parse Ethernet+IPv4+TCP (per packet)") { benchmark in
        for i in benchmark.scaledIterations {
            let f = frames[i % frames.count]
            blackHole(try? PacketLayout(parsing: f.span.bytes, linkType: .ethernet))
        }
    }

    for (name, flows, push) in [("1 flow", 1, false), ("8 flows", 8, false), ("64 flows", 64, false),
                                ("1024 flows", 1024, false), ("all PSH", 1, true)] {
        for checksum in [ChecksumState.verified, .unverified] {
            let ring = Workload.batches(flows: flows, burst: 64, count: 16, push: push).map {
                BatchBox($0, checksum: checksum)
            }
            let label = checksum == .verified ? "trusted" : "verify"
            // One scaled iteration is one batch of 64 packets. (With scalingFactor .one the harness's
            // own 16 allocations per sample would be charged to the engine; .kilo divides them out.)
            Benchmark("GRO burst 64, \(name), \(label) (per batch of 64)",
                      configuration: .init(scalingFactor: .kilo,
                                           thresholds: [.mallocCountTotal: .init(absolute: [.p90: 0])])) { benchmark in
                var engine = GROEngine()
                for box in ring { engine.coalesce(box.batch) }  // warm: every buffer reaches its size
                benchmark.startMeasurement()
                for i in benchmark.scaledIterations {
                    engine.coalesce(ring[i % ring.count].batch)
                    blackHole(engine.outputCount)
                }
            }
        }
    }

    let (superPacket, gso) = Workload.superPacket()
    for checksum in [OutputChecksum.partial, .complete] {
        Benchmark("GSO 45 x 1448, \(checksum == .partial ? "partial" : "complete") checksums (per super-packet)",
                  configuration: .init(scalingFactor: .kilo,
                                       thresholds: [.mallocCountTotal: .init(absolute: [.p90: 0])])) { benchmark in
            var segmenter = GSOSegmenter()
            superPacket.withUnsafeBytes { buffer in
                try! segmenter.segment(buffer, linkType: .ethernet, gso: gso, checksum: checksum)
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    try! segmenter.segment(buffer, linkType: .ethernet, gso: gso, checksum: checksum)
                    blackHole(segmenter.segmentCount)
                }
            }
        }
    }

    // The forwarding pipeline after the read: GRO, the stage, the decision and the write (to a sink
    // that discards), per batch of 64 wire packets. Its malloc count is the dataplane's per batch.
    for stageName in ["identity", "SIIT"] {
        let ring = Workload.batches(flows: 8, burst: 64, count: 16, push: false).map { BatchBox($0, checksum: .verified) }
        Benchmark("pipeline burst 64, 8 flows, \(stageName) stage (per batch of 64)",
                  configuration: .init(scalingFactor: .kilo,
                                       thresholds: [.mallocCountTotal: .init(absolute: [.p90: 0])])) { benchmark in
            let sink = DiscardingSink()
            func run<S: Stage>(_ stage: S) {
                // The translated IPv6 segments are 20 bytes longer: an egress MTU they fit (else the
                // benchmark would measure ICMP errors).
                var pipeline = ForwardingPipeline(direction: .lanToWan, gro: GROConfiguration(), egressMTU: 1520,
                                                  icmpSourceV4: IPv4Address(192, 0, 2, 254),
                                                  icmpSourceV6: IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe),
                                                  virtioHeaders: true, stage: stage, logger: Logger(label: "bench"),
                                                  linkType: .ethernet)
                for box in ring { pipeline.process(box.batch, now: 1, egress: sink, back: sink) }  // warm
                benchmark.startMeasurement()
                for i in benchmark.scaledIterations {
                    pipeline.process(ring[i % ring.count].batch, now: 1, egress: sink, back: sink)
                }
                blackHole(pipeline.statistics.packetsOut)
            }
            if stageName == "identity" { run(IdentityStage()) } else { run(SIITStage(prefix: .wellKnown)) }
        }
    }
}

/// A sink that takes super-packets and discards them (counting bytes), so a benchmark measures the
/// pipeline and not a write.
final class DiscardingSink: PacketSink, @unchecked Sendable {
    var bytes = 0
    var takesVirtioHeaders: Bool { true }
    func write(header: VirtioNetHeader?, pieces: UnsafeBufferPointer<UnsafeRawBufferPointer>) throws(TUNError) {
        for piece in pieces { bytes &+= piece.count }
    }
}
