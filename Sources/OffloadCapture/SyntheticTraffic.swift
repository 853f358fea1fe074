import OffloadWire

/// A small, realistic capture made by the project itself: the demo's input and the tests' own
/// fixtures, so neither needs anything from outside.
///
/// What it holds, interleaved in time as a receive queue would see it: two bulk TCP transfers
/// (IPv4 with timestamps and MSS 1448; IPv6 with MSS 1428), each written by the sender in 64 KiB
/// chunks (PSH at the end of each) and ending with FIN; the receiver's ACKs every second segment;
/// a third TCP flow that loses a segment and retransmits it after three duplicate ACKs; and a
/// few small UDP datagrams (to the traceroute port range, which no dissector claims).
public enum SyntheticTraffic {
    /// One generated frame.
    public struct Frame: Hashable, Sendable {
        /// Nanoseconds since the epoch.
        public var timestamp: UInt64
        /// An Ethernet frame.
        public var bytes: [UInt8]
    }

    static let clientMAC = MACAddress(rawValue: 0x02_00_00_00_00_01)
    static let serverMAC = MACAddress(rawValue: 0x02_00_00_00_00_02)
    static let client4 = IPv4Address(192, 0, 2, 10)
    static let server4 = IPv4Address(198, 51, 100, 20)
    static let client6 = IPv6Address(0x2001, 0xdb8, 1, 0, 0, 0, 0, 10)
    static let server6 = IPv6Address(0x2001, 0xdb8, 2, 0, 0, 0, 0, 20)

    /// A TCP segment as an Ethernet frame.
    static func tcp(ipv6: Bool, fromClient: Bool, sourcePort: UInt16, destinationPort: UInt16, sequence: UInt32,
                    ack: UInt32, flags: TCPFlags, payload: [UInt8], ipID: UInt16, tsval: UInt32) -> [UInt8] {
        var b = PacketBuilder()
        b.sourceMAC = (fromClient ? clientMAC : serverMAC).rawValue
        b.destinationMAC = (fromClient ? serverMAC : clientMAC).rawValue
        if ipv6 {
            (b.source, b.destination) = fromClient ? (.v6(client6), .v6(server6)) : (.v6(server6), .v6(client6))
            b.flowLabel = UInt32(sourcePort) << 4
        } else {
            (b.source, b.destination) = fromClient ? (.v4(client4), .v4(server4)) : (.v4(server4), .v4(client4))
            b.ipID = ipID
        }
        b.sourcePort = sourcePort
        b.destinationPort = destinationPort
        b.sequence = sequence
        b.ack = ack
        b.flags = flags
        b.window = 502
        b.options = [.noOperation, .noOperation, .timestamp(value: tsval, echoReply: tsval &- 3)]
        b.payload = payload
        return b.frame()
    }

    /// The data segments and ACKs of one bulk transfer, in sending order.
    static func bulk(ipv6: Bool, port: UInt16, bytes: Int, mss: Int, loseSegment: Int? = nil) -> [[UInt8]] {
        var frames: [[UInt8]] = []
        let isn: UInt32 = 0x1000_0000 &+ UInt32(port) &* 7919
        var sequence = isn
        var ipID: UInt16 = UInt16(truncatingIfNeeded: port) &* 13
        var ackID: UInt16 = 500
        var sent = 0
        var segment = 0
        var tsval: UInt32 = 1_000
        var lost: (sequence: UInt32, payload: [UInt8])?
        var acked = isn
        while sent < bytes {
            let chunkEnd = min(bytes, (sent / 65_536 + 1) * 65_536)
            let length = min(mss, chunkEnd - sent)
            let payload = (0..<length).map { UInt8(truncatingIfNeeded: (sent + $0) &* 131 &+ Int(port)) }
            let push = sent + length == chunkEnd
            let fin = sent + length == bytes
            var flags: TCPFlags = .ack
            if push { flags.insert(.psh) }
            if fin { flags.insert(.fin) }
            let frame = tcp(ipv6: ipv6, fromClient: true, sourcePort: port, destinationPort: 443, sequence: sequence,
                            ack: 1, flags: flags, payload: payload, ipID: ipID, tsval: tsval)
            ipID &+= 1
            if segment == loseSegment {
                lost = (sequence, payload)  // dropped before the capture point
            } else {
                frames.append(frame)
            }
            sequence &+= UInt32(length)
            sent += length
            segment += 1
            if segment % 8 == 0 { tsval &+= 1 }
            // The receiver ACKs every second segment; after a loss it repeats the ACK.
            if segment % 2 == 0 || fin {
                if lost == nil || acked == isn { acked = sequence }
                let ackValue = lost.map { $0.sequence } ?? sequence
                frames.append(tcp(ipv6: ipv6, fromClient: false, sourcePort: 443, destinationPort: port, sequence: 1,
                                  ack: ackValue &- isn &+ isn, flags: .ack, payload: [], ipID: ackID, tsval: tsval))
                ackID &+= 1
            }
            if let l = lost, segment == (loseSegment ?? 0) + 7 {
                // Fast retransmit after three duplicate ACKs.
                frames.append(tcp(ipv6: ipv6, fromClient: true, sourcePort: port, destinationPort: 443,
                                  sequence: l.sequence, ack: 1, flags: .ack, payload: l.payload, ipID: ipID, tsval: tsval))
                ipID &+= 1
                lost = nil
            }
        }
        return frames
    }

    /// A small UDP datagram.
    static func udp(_ index: Int) -> [UInt8] {
        var b = PacketBuilder()
        b.sourceMAC = clientMAC.rawValue
        b.destinationMAC = serverMAC.rawValue
        b.source = .v4(client4)
        b.destination = .v4(server4)
        b.transport = .udp
        b.sourcePort = 53_000 + UInt16(index)
        b.destinationPort = 33_434
        b.ipID = UInt16(9000 + index)
        b.payload = (0..<(40 + index % 3 * 17)).map { UInt8(truncatingIfNeeded: $0 &+ index) }
        return b.frame()
    }

    /// Writes about `megabytes` MB of generated traffic to `writer`, one ~1 MB chunk at a time
    /// (memory stays flat), each chunk with its own connections.
    public static func write(megabytes: Int, to writer: inout CaptureWriter,
                             progress: ((Int) -> Void)? = nil) throws(CaptureError) {
        var time: UInt64 = 1_795_000_000_000_000_000
        var chunk = 0
        while writer.byteCount < megabytes * 1_000_000 {
            for f in capture(start: time, portOffset: UInt16(truncatingIfNeeded: chunk * 4)) {
                try writer.writePacket(f.bytes, timestamp: f.timestamp)
                time = f.timestamp + 10_000
            }
            chunk += 1
            progress?(writer.byteCount)
        }
    }

    /// The whole capture: about 1 MB in about 1100 frames, 10 µs apart.
    /// - Parameter scale: multiplies the bulk transfers' sizes (1 gives about 1 MB).
    /// - Parameter portOffset: added to every client port, so that successive chunks of a large
    ///   generated file are different connections.
    public static func capture(scale: Int = 1, start: UInt64 = 1_795_000_000_000_000_000, portOffset: UInt16 = 0)
        -> [Frame]
    {
        let flows = [
            bulk(ipv6: false, port: 40_001 &+ portOffset, bytes: 600_000 * scale, mss: 1448),
            bulk(ipv6: true, port: 40_002 &+ portOffset, bytes: 400_000 * scale, mss: 1428),
            bulk(ipv6: false, port: 40_003 &+ portOffset, bytes: 60_000 * scale, mss: 1448, loseSegment: 10),
            (0..<6).map { udp($0 + Int(portOffset % 1000)) },
        ]
        // Interleave in trains of four frames per flow, as packets of several flows reach one queue.
        var cursors = [Int](repeating: 0, count: flows.count)
        var result: [Frame] = []
        var time = start
        while cursors.indices.contains(where: { cursors[$0] < flows[$0].count }) {
            for f in flows.indices where cursors[f] < flows[f].count {
                for _ in 0..<4 where cursors[f] < flows[f].count {
                    result.append(Frame(timestamp: time, bytes: flows[f][cursors[f]]))
                    cursors[f] += 1
                    time += 10_000
                }
            }
        }
        return result
    }
}
