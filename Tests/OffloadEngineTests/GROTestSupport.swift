import OffloadEngine
import OffloadWire

/// A TCP stream of `count` segments: contiguous sequence numbers, IDs going up by one.
func stream(_ count: Int, payload: Int = 1448, _ customize: (Int, inout PacketBuilder) -> Void = { _, _ in })
    -> [PacketBuilder]
{
    var result: [PacketBuilder] = []
    var seq: UInt32 = 1_000_000
    for i in 0..<count {
        var spec = PacketBuilder()
        spec.sequence = seq
        spec.payloadLength = payload
        spec.ipID = 8 &+ UInt16(truncatingIfNeeded: i)
        customize(i, &spec)
        seq = spec.sequence &+ UInt32(spec.payloadLength)
        result.append(spec)
    }
    return result
}

/// One output packet of a GRO run, copied out.
struct Emitted: Equatable {
    var bytes: [UInt8]
    var gso: GSOInfo?
    var reason: GROReason?
    var linkType: LinkType
    var checksum: ChecksumState

    /// The L4 payload length.
    var payloadLength: Int {
        (try? PacketLayout(parsing: bytes.span.bytes, linkType: linkType))?.payloadLength ?? -1
    }
    /// The TCP flags (nil for non-TCP).
    var tcpFlags: TCPFlags? {
        guard let l = try? PacketLayout(parsing: bytes.span.bytes, linkType: linkType), l.transport == .tcp else {
            return nil
        }
        return TCPFlags(rawValue: bytes.loadBigEndian(UInt16.self, at: l.transportOffset + 12))
    }
    var sequence: UInt32? {
        guard let l = try? PacketLayout(parsing: bytes.span.bytes, linkType: linkType), l.transport == .tcp else {
            return nil
        }
        return bytes.loadBigEndian(UInt32.self, at: l.transportOffset + 4)
    }
}

/// Runs GRO over `frames` in batches of `batchSize` (default: one batch), flushing at the end.
func runGRO(_ frames: [[UInt8]], configuration: GROConfiguration = GROConfiguration(),
            linkType: LinkType = .ethernet, checksum: ChecksumState = .unverified, batchSize: Int? = nil,
            timestamps: [UInt64]? = nil, statistics: UnsafeMutablePointer<GROStatistics>? = nil,
            fastPathMerges: UnsafeMutablePointer<Int>? = nil) -> [Emitted]
{
    var engine = GROEngine(configuration: configuration)
    var batch = PacketBatch(packetCapacity: max(1, batchSize ?? frames.count), byteCapacity: 1 << 22)
    var result: [Emitted] = []
    func drain() {
        for i in 0..<engine.outputCount {
            let o = engine.output(at: i)
            result.append(Emitted(bytes: engine.outputBytes(at: i), gso: o.metadata.gso, reason: o.reason,
                                  linkType: o.metadata.linkType, checksum: o.metadata.checksum))
        }
    }
    let size = max(1, batchSize ?? frames.count)
    var start = 0
    while start < frames.count {
        batch.removeAll()
        for j in start..<min(start + size, frames.count) {
            batch.append(frames[j], metadata: PacketMetadata(linkType: linkType, checksum: checksum,
                                                             timestamp: timestamps?[j] ?? 0))
        }
        engine.coalesce(batch)
        drain()
        start += size
    }
    engine.flush()
    drain()
    statistics?.pointee = engine.statistics
    fastPathMerges?.pointee = engine.trainFastPathMerges
    return result
}

/// Splits every super-packet back with the segmenter; other packets pass unchanged.
func resegment(_ emitted: [Emitted]) throws -> [[UInt8]] {
    var segmenter = GSOSegmenter()
    var result: [[UInt8]] = []
    for e in emitted {
        guard let gso = e.gso else {
            result.append(e.bytes)
            continue
        }
        try e.bytes.withUnsafeBytes { buffer in
            try segmenter.segment(buffer, linkType: e.linkType, gso: gso)
            for i in 0..<segmenter.segmentCount { result.append(segmenter.segmentBytes(at: i)) }
        }
    }
    return result
}
