import OffloadEngine
import OffloadWire

/// Describes one test packet; `frame()` builds it with the wire layer's encoders.
struct PacketSpec {
    var ipv6 = false
    var udp = false
    var sequence: UInt32 = 1_000_000
    var payloadLength = 1448
    var payloadSeed: UInt8 = 0
    var flags: TCPFlags = .ack
    var ack: UInt32 = 5000
    var window: UInt16 = 1024
    var urgent: UInt16 = 0
    var options: [TCPOption] = [.noOperation, .noOperation, .timestamp(value: 100, echoReply: 50)]
    var ipID: UInt16 = 8
    var dontFragment = true
    var moreFragments = false
    var fragmentOffset = 0
    var ttl: UInt8 = 64
    var tos: UInt8 = 0
    var sourcePort: UInt16 = 40000
    var destinationPort: UInt16 = 5201
    var flowLabel: UInt32 = 0
    var ipv4Options: [UInt8] = []
    /// Raw IPv6 extension headers; the first byte of each is fixed up to chain correctly.
    var extensionHeaders: [(IPProtocol, [UInt8])] = []
    var corruptChecksum = false
    var zeroUDPChecksum = false
    var padding = 0
    var vlan: UInt16? = nil
    var sourceMAC: UInt64 = 0x02_00_00_00_00_01

    static let v4Source = IPv4Address(192, 0, 2, 1)
    static let v4Destination = IPv4Address(198, 51, 100, 7)
    static let v6Source = IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)
    static let v6Destination = IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)

    func payload() -> [UInt8] {
        (0..<payloadLength).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(payloadSeed) &+ Int(sequence)) }
    }

    /// The L4 bytes (header + payload) with a correct checksum (or a corrupted one).
    func transportBytes(pseudo: (Int) -> OnesComplementSum) -> [UInt8] {
        var l4: [UInt8] = []
        if udp {
            UDPHeaderRepr(sourcePort: sourcePort, destinationPort: destinationPort)
                .encode(into: &l4, payload: payload(), checksum: !zeroUDPChecksum, pseudoHeader: pseudo)
            if corruptChecksum { l4[6] ^= 0x55 }
        } else {
            TCPHeaderRepr(sourcePort: sourcePort, destinationPort: destinationPort, sequenceNumber: sequence,
                          acknowledgmentNumber: ack, flags: flags, window: window, urgentPointer: urgent,
                          options: options)
                .encode(into: &l4, payload: payload(), pseudoHeader: pseudo)
            if corruptChecksum { l4[16] ^= 0x55 }
        }
        return l4
    }

    /// The IP packet.
    func ipPacket() -> [UInt8] {
        var bytes: [UInt8] = []
        let proto: IPProtocol = udp ? .udp : .tcp
        if ipv6 {
            var ext: [UInt8] = []
            var chain = extensionHeaders.map { $0.0 }
            chain.append(proto)
            for (i, (_, body)) in extensionHeaders.enumerated() {
                var h = body
                h[0] = chain[i + 1].rawValue
                ext += h
            }
            let l4 = transportBytes { len in
                InternetChecksum.pseudoHeaderSum(ipv6Source: Self.v6Source, destination: Self.v6Destination,
                                                 nextHeader: proto, length: len)
            }
            IPv6HeaderRepr(source: Self.v6Source, destination: Self.v6Destination,
                           nextHeader: chain[0], payloadLength: ext.count + l4.count, hopLimit: ttl,
                           trafficClass: tos, flowLabel: flowLabel).encode(into: &bytes)
            bytes += ext
            bytes += l4
        } else {
            let l4 = transportBytes { len in
                InternetChecksum.pseudoHeaderSum(ipv4Source: Self.v4Source, destination: Self.v4Destination,
                                                 protocolNumber: proto, length: len)
            }
            var ip = IPv4HeaderRepr(source: Self.v4Source, destination: Self.v4Destination, protocolNumber: proto,
                                    totalLength: 20 + ipv4Options.count + l4.count, identification: ipID,
                                    dontFragment: dontFragment, timeToLive: ttl, typeOfService: tos,
                                    options: ipv4Options)
            ip.moreFragments = moreFragments
            ip.fragmentOffset = fragmentOffset
            ip.encode(into: &bytes)
            bytes += l4
        }
        return bytes
    }

    /// The Ethernet frame.
    func frame() -> [UInt8] {
        var bytes: [UInt8] = []
        EthernetHeaderRepr(destination: MACAddress(rawValue: 0x02_00_00_00_00_02),
                           source: MACAddress(rawValue: sourceMAC),
                           tags: vlan.map { [VLANTag(identifier: $0)] } ?? [],
                           etherType: ipv6 ? .ipv6 : .ipv4).encode(into: &bytes)
        bytes += ipPacket()
        bytes += [UInt8](repeating: 0, count: padding)
        return bytes
    }
}

/// A TCP stream of `count` segments: contiguous sequence numbers, IDs going up by one.
func stream(_ count: Int, payload: Int = 1448, _ customize: (Int, inout PacketSpec) -> Void = { _, _ in })
    -> [PacketSpec]
{
    var result: [PacketSpec] = []
    var seq: UInt32 = 1_000_000
    for i in 0..<count {
        var spec = PacketSpec()
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
struct Emitted {
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
            timestamps: [UInt64]? = nil, statistics: UnsafeMutablePointer<GROStatistics>? = nil) -> [Emitted]
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
