import OffloadEngine
import OffloadWire

#if canImport(Glibc)
    import Glibc
#endif

/// The packets the DPDK anchor (the dpdk-gro harness's `bench.c`) uses: Ethernet + IPv4 (DF,
/// incrementing ID, TTL 64) + TCP with NOP,NOP,timestamp (32-byte header, ACK) + 1448-byte
/// payload = 1514-byte frames, correct checksums, flows interleaved round-robin.
public enum Workload {
    /// One frame of flow `flow`.
    public static func frame(flow: Int, sequence: UInt32, identification: UInt16, payload: Int = 1448,
                             push: Bool = false, ipv6: Bool = false) -> [UInt8] {
        var b = PacketBuilder()
        b.ipv6 = ipv6
        if !ipv6 {
            b.source = .v4(IPv4Address(10, 0, 0, 1))
            b.destination = .v4(IPv4Address(10, 0, 0, 2))
        }
        b.ipID = identification
        b.sourcePort = UInt16(truncatingIfNeeded: 10_000 + flow)
        b.destinationPort = 5201
        b.sequence = sequence
        b.ack = 1
        b.flags = push ? [.ack, .psh] : .ack
        b.options = [.noOperation, .noOperation, .timestamp(value: 7, echoReply: 9)]
        b.payload = (0..<payload).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        return b.frame()
    }

    /// `count` batches of `burst` frames, flows interleaved round-robin (train 1), each flow's
    /// sequence numbers and IDs contiguous across the whole run.
    public static func batches(flows: Int, burst: Int, count: Int, push: Bool = false, ipv6: Bool = false)
        -> [[[UInt8]]]
    {
        var sequence = [UInt32](repeating: 1000, count: flows)
        var identification = [UInt16](repeating: 1, count: flows)
        var packet = 0
        return (0..<count).map { _ in
            (0..<burst).map { _ in
                let f = packet % flows
                packet += 1
                defer {
                    sequence[f] &+= 1448
                    identification[f] &+= 1
                }
                return frame(flow: f, sequence: sequence[f], identification: identification[f], push: push, ipv6: ipv6)
            }
        }
    }

    /// A super-packet of `segments` × 1448 bytes as GRO would build it, and its GSO facts.
    public static func superPacket(segments: Int = 45) -> ([UInt8], GSOInfo) {
        let frames = (0..<segments).map { frame(flow: 0, sequence: 1000 + UInt32($0) * 1448, identification: UInt16($0)) }
        var engine = GROEngine()
        let batch = BatchBox(frames, checksum: .verified)
        engine.coalesce(batch.batch)
        return (engine.outputBytes(at: 0), engine.output(at: 0).metadata.gso!)
    }
}

/// A class box so that `~Copyable` batches can sit in arrays.
public final class BatchBox {
    /// The batch.
    public var batch: PacketBatch

    /// A batch holding `frames`.
    public init(_ frames: [[UInt8]], checksum: ChecksumState) {
        batch = PacketBatch(packetCapacity: max(1, frames.count), byteCapacity: frames.reduce(0) { $0 + $1.count + 16 })
        for f in frames { batch.append(f, metadata: PacketMetadata(linkType: .ethernet, checksum: checksum)) }
    }
}

/// Nanoseconds of a monotonic clock.
@inline(__always)
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Runs `body` (which returns how many units it processed) repeatedly for `seconds`, `runs` times,
/// after a warm-up; returns nanoseconds per unit for each run.
public func measure(seconds: Double = 0.5, runs: Int = 5, _ body: () -> Int) -> [Double] {
    let warm = monotonicNanoseconds()
    while monotonicNanoseconds() - warm < 100_000_000 { _ = body() }
    return (0..<runs).map { _ in
        var units = 0
        let start = monotonicNanoseconds()
        var now = start
        while Double(now - start) < seconds * 1e9 {
            for _ in 0..<16 { units += body() }
            now = monotonicNanoseconds()
        }
        return Double(now - start) / Double(max(units, 1))
    }
}

/// The median of some measurements.
public func median(_ values: [Double]) -> Double {
    let s = values.sorted()
    return s.isEmpty ? 0 : s[s.count / 2]
}

/// Keeps a value alive so the optimizer cannot remove the work that made it.
@inline(never)
public func consume<T>(_ value: T) {
    withExtendedLifetime(value) {}
}
