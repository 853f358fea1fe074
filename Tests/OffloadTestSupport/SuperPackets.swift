import OffloadEngine
import OffloadWire

/// A TCP super-packet of `count` segments of `size` bytes (the last one `last` bytes when given,
/// as a flow's last segment often is), merged by the engine, and its GSO facts.
public func superPacket(count: Int, size: Int, last: Int? = nil, ipv6: Bool = false) -> (bytes: [UInt8], gso: GSOInfo) {
    var engine = GROEngine()
    var batch = PacketBatch(packetCapacity: count, byteCapacity: 1 << 20)
    for i in 0..<count {
        var b = PacketBuilder()
        b.link = .raw
        b.ipv6 = ipv6
        b.sequence = 1 + UInt32(i * size)
        b.ipID = UInt16(i)
        b.payloadLength = i == count - 1 ? last ?? size : size
        batch.append(b.frame(), metadata: PacketMetadata(linkType: .raw))
    }
    engine.coalesce(batch)
    guard engine.outputCount == 1, let gso = engine.output(at: 0).metadata.gso else {
        preconditionFailure("the engine did not merge \(count) segments into one super-packet")
    }
    return (engine.outputBytes(at: 0), gso)
}
