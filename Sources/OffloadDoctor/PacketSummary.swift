import OffloadCapture
import OffloadWire

/// An IPv4 or IPv6 address in one comparable form (IPv4 in the low bits, `v4` set).
public struct HostAddress: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    /// High and low 64 bits (IPv4: high 0, low the address).
    public var high: UInt64, low: UInt64
    /// Whether it is IPv4.
    public var v4: Bool

    /// The usual text form.
    public var description: String {
        v4 ? IPv4Address(rawValue: UInt32(truncatingIfNeeded: low)).description
            : IPv6Address(high: high, low: low).description
    }

    /// Orders IPv4 first, then by value.
    public static func < (a: Self, b: Self) -> Bool { (a.v4 ? 0 : 1, a.high, a.low) < (b.v4 ? 0 : 1, b.high, b.low) }
}

/// One direction of a TCP connection: source to destination.
public struct FlowKey: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    /// The sender of these packets.
    public var source: HostAddress
    /// The receiver.
    public var destination: HostAddress
    /// Ports.
    public var sourcePort: UInt16, destinationPort: UInt16

    /// The other direction.
    public var reversed: FlowKey {
        FlowKey(source: destination, destination: source, sourcePort: destinationPort, destinationPort: sourcePort)
    }

    /// `a:p → b:q` (IPv6 addresses in brackets).
    public var description: String {
        func endpoint(_ a: HostAddress, _ p: UInt16) -> String { a.v4 ? "\(a):\(p)" : "[\(a)]:\(p)" }
        return "\(endpoint(source, sourcePort)) → \(endpoint(destination, destinationPort))"
    }

    /// Orders by addresses, then ports.
    public static func < (a: Self, b: Self) -> Bool {
        (a.source, a.destination) < (b.source, b.destination)
            || ((a.source, a.destination) == (b.source, b.destination)
                && (a.sourcePort, a.destinationPort) < (b.sourcePort, b.destinationPort))
    }
}

/// The TCP fields the doctor reads from a packet.
public struct TCPSummary: Hashable, Sendable {
    /// Its direction.
    public var flow: FlowKey
    /// Sequence and acknowledgment numbers.
    public var sequence: UInt32, acknowledgment: UInt32
    /// Flags.
    public var flags: TCPFlags
    /// The raw window field.
    public var window: UInt16
    /// Payload bytes, from the IP length (so a capture cut short still counts them).
    public var payloadLength: Int
    /// Options (SYN only): MSS, window scale, SACK permitted.
    public var mss: Int?, windowScale: Int?, sackPermitted = false
    /// Whether it carries SACK blocks.
    public var hasSACKBlocks = false
    /// The SACK blocks' highest right edge, if any.
    public var sackHighest: UInt32?
}

/// An ICMP "fragmentation needed" or "packet too big", with what it quotes.
public struct PathMTUMessage: Hashable, Sendable {
    /// The MTU it announces.
    public var mtu: Int
    /// The connection direction the quoted packet belongs to (the sender's data direction).
    public var quotedFlow: FlowKey?
    /// The quoted packet's IP total length: how big the packet that did not fit was.
    public var quotedLength: Int
    /// The quoted TCP sequence number.
    public var quotedSequence: UInt32?
}

/// What the doctor keeps of one captured packet.
public struct PacketSummary: Hashable, Sendable {
    /// Which capture (0 for the first file given).
    public var capture: Int
    /// The record number in that capture, from 1.
    public var number: Int
    /// Seconds since the Unix epoch.
    public var time: Double
    /// The IP packet's length (total length from its header, not the captured length).
    public var ipLength: Int
    /// IPv4's DF bit; always true for IPv6 (routers never fragment it).
    public var dontFragment: Bool
    /// IPv4 identification (0 for IPv6).
    public var ipID: UInt16
    /// Hop limit / TTL.
    public var ttl: UInt8
    /// The TCP fields, for TCP.
    public var tcp: TCPSummary?
    /// The ICMP path-MTU message, for one.
    public var pathMTU: PathMTUMessage?
}

/// Reads a capture into summaries. Packets the wire layer cannot parse (not IP, broken headers)
/// are counted in `skipped`, never fatal; a damaged file stops at the damage with the error kept.
public struct CaptureSummary: Sendable {
    /// The file.
    public var path: String
    /// TCP and ICMP path-MTU packets, in capture order.
    public var packets: [PacketSummary] = []
    /// Records read.
    public var records = 0
    /// Records that were not TCP or a path-MTU ICMP, or did not parse.
    public var skipped = 0
    /// Records cut short by the snap length (their lengths still come from their headers).
    public var snapped = 0
    /// The error that stopped reading early, if any.
    public var readError: String?

    /// Reads `path` as capture number `index`.
    public init(path: String, index: Int) throws(CaptureError) {
        self.path = path
        var reader = try CaptureReader(path: path)
        var padded = [UInt8]()
        while true {
            let packet: CapturedPacket?
            do { packet = try reader.next() } catch {
                readError = "\(error)"
                break
            }
            guard let packet else { break }
            records += 1
            var bytes = packet.bytes
            if packet.info.isSnapped {
                // Headers are all the doctor reads; zero the missing payload so the header views
                // see the lengths the headers claim.
                snapped += 1
                padded.removeAll(keepingCapacity: true)
                padded.append(contentsOf: bytes)
                padded.append(contentsOf: repeatElement(0, count: max(0, min(packet.info.originalLength, 1 << 18) - bytes.count)))
                bytes = padded
            }
            if let summary = Self.summarize(bytes, linkType: packet.linkType, capture: index, number: packet.info.record,
                                            time: Double(packet.info.timestamp) / 1e9) {
                packets.append(summary)
            } else {
                skipped += 1
            }
        }
    }

    /// Summarizes one frame, or nil when it is not TCP or a path-MTU ICMP message.
    static func summarize(_ bytes: [UInt8], linkType: LinkType, capture: Int, number: Int, time: Double) -> PacketSummary? {
        guard let layout = try? PacketLayout(validatingEachHeader: bytes.span.bytes, linkType: linkType) else { return nil }
        let b = ByteReader(bytes)
        let n = layout.networkOffset
        let v4 = layout.network == .ipv4
        var summary = PacketSummary(
            capture: capture, number: number, time: time, ipLength: layout.ipEnd - n,
            dontFragment: v4 ? b.u16(n + 6) & 0x4000 != 0 : true, ipID: v4 ? b.u16(n + 4) : 0,
            ttl: v4 ? b.u8(n + 8) : b.u8(n + 7))
        let (source, destination) = v4
            ? (HostAddress(high: 0, low: UInt64(b.u32(n + 12)), v4: true), HostAddress(high: 0, low: UInt64(b.u32(n + 16)), v4: true))
            : (HostAddress(high: b.u64(n + 8), low: b.u64(n + 16), v4: false),
               HostAddress(high: b.u64(n + 24), low: b.u64(n + 32), v4: false))
        let t = layout.transportOffset
        switch layout.transport {
        case .tcp where !layout.isFragment && layout.hasTransportHeader:
            var tcp = TCPSummary(
                flow: FlowKey(source: source, destination: destination, sourcePort: b.u16(t), destinationPort: b.u16(t + 2)),
                sequence: b.u32(t + 4), acknowledgment: b.u32(t + 8), flags: TCPFlags(rawValue: b.u16(t + 12)),
                window: b.u16(t + 14), payloadLength: layout.payloadLength)
            scanOptions(b, from: t + 20, to: layout.payloadOffset, into: &tcp)
            summary.tcp = tcp
        case .icmp where v4 && b.u8(t) == 3 && b.u8(t + 1) == 4:
            summary.pathMTU = quoted(b, inner: t + 8, mtu: Int(b.u16(t + 6)), v4: true)
        case .icmpv6 where !v4 && b.u8(t) == 2:
            summary.pathMTU = quoted(b, inner: t + 8, mtu: Int(b.u32(t + 4)), v4: false)
        default:
            return nil
        }
        return summary
    }

    /// The packet an ICMP error quotes: its length and, when it is TCP, its direction and sequence.
    static func quoted(_ b: ByteReader, inner i: Int, mtu: Int, v4: Bool) -> PathMTUMessage {
        var message = PathMTUMessage(mtu: mtu, quotedFlow: nil, quotedLength: 0, quotedSequence: nil)
        if v4 {
            guard b.has(i + 20), b.u8(i) >> 4 == 4 else { return message }
            message.quotedLength = Int(b.u16(i + 2))
            let l4 = i + Int(b.u8(i) & 0x0F) * 4
            if b.u8(i + 9) == 6, b.has(l4 + 8) {
                message.quotedFlow = FlowKey(
                    source: HostAddress(high: 0, low: UInt64(b.u32(i + 12)), v4: true),
                    destination: HostAddress(high: 0, low: UInt64(b.u32(i + 16)), v4: true),
                    sourcePort: b.u16(l4), destinationPort: b.u16(l4 + 2))
                message.quotedSequence = b.u32(l4 + 4)
            }
        } else {
            guard b.has(i + 40), b.u8(i) >> 4 == 6 else { return message }
            message.quotedLength = 40 + Int(b.u16(i + 4))
            let l4 = i + 40
            if b.u8(i + 6) == 6, b.has(l4 + 8) {
                message.quotedFlow = FlowKey(
                    source: HostAddress(high: b.u64(i + 8), low: b.u64(i + 16), v4: false),
                    destination: HostAddress(high: b.u64(i + 24), low: b.u64(i + 32), v4: false),
                    sourcePort: b.u16(l4), destinationPort: b.u16(l4 + 2))
                message.quotedSequence = b.u32(l4 + 4)
            }
        }
        return message
    }

    /// Reads the options the doctor cares about; stops quietly at anything malformed (the
    /// header views validated the header length, not the options).
    static func scanOptions(_ b: ByteReader, from start: Int, to end: Int, into tcp: inout TCPSummary) {
        var o = start
        while o < end {
            let kind = b.u8(o)
            if kind == 0 { break }
            if kind == 1 { o += 1; continue }
            guard o + 1 < end else { break }
            let length = Int(b.u8(o + 1))
            guard length >= 2, o + length <= end else { break }
            switch (kind, length) {
            case (2, 4): tcp.mss = Int(b.u16(o + 2))
            case (3, 3): tcp.windowScale = Int(b.u8(o + 2))
            case (4, 2): tcp.sackPermitted = true
            case (5, _) where length >= 10:
                tcp.hasSACKBlocks = true
                var e = o + 2
                while e + 8 <= o + length {
                    let right = b.u32(e + 4)
                    if let h = tcp.sackHighest { tcp.sackHighest = seqGreater(right, h) ? right : h } else { tcp.sackHighest = right }
                    e += 8
                }
            default: break
            }
            o += length
        }
    }
}

/// Big-endian reads from a byte array, zero past the end (callers check `has` where it matters).
struct ByteReader {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    func has(_ end: Int) -> Bool { end <= bytes.count }
    func u8(_ o: Int) -> UInt8 { o < bytes.count ? bytes[o] : 0 }
    func u16(_ o: Int) -> UInt16 { UInt16(u8(o)) << 8 | UInt16(u8(o + 1)) }
    func u32(_ o: Int) -> UInt32 { UInt32(u16(o)) << 16 | UInt32(u16(o + 2)) }
    func u64(_ o: Int) -> UInt64 { UInt64(u32(o)) << 32 | UInt64(u32(o + 4)) }
}

/// Sequence-space comparison (RFC 1982): whether `a` is after `b`.
@inlinable func seqGreater(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) > 0 }
