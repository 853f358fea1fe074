import OffloadCapture
import OffloadWire

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
    /// Whether the capturing host received or sent it, when the capture says: pcapng's
    /// `epb_flags`, or a Linux cooked header's packet type (`tcpdump -i any`).
    public var direction: PacketDirection?
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
        var zeros = [UInt8]()
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
                // Appended from a zeroed array (a bulk copy), not element by element.
                let missing = max(0, min(packet.info.originalLength, 1 << 18) - bytes.count)
                if zeros.count < missing { zeros = [UInt8](repeating: 0, count: missing) }
                padded.append(contentsOf: zeros[..<missing])
                bytes = padded
            }
            if var summary = Self.summarize(bytes, linkType: packet.linkType, capture: index, number: packet.info.record,
                                            time: Double(packet.info.timestamp) / 1e9) {
                summary.direction = packet.info.direction ?? Self.cookedDirection(bytes, linkType: packet.linkType)
                packets.append(summary)
            } else {
                skipped += 1
            }
        }
    }

    /// The direction a Linux cooked header records: packet type 4 is sent by this host, 0–3 were
    /// received (to us, broadcast, multicast, to another host); nil for other link types.
    static func cookedDirection(_ bytes: [UInt8], linkType: LinkType) -> PacketDirection? {
        guard linkType == .linuxSLL || linkType == .linuxSLL2,
            let header = try? LinuxCookedHeader(validating: bytes.span.bytes, version: linkType == .linuxSLL ? 1 : 2)
        else { return nil }
        switch header.packetType {
        case 4: return .outbound
        case 0...3: return .inbound
        default: return nil
        }
    }

    /// Summarizes one frame, or nil when it is not TCP or a path-MTU ICMP message. Every field is
    /// read through the wire layer's views.
    static func summarize(_ bytes: [UInt8], linkType: LinkType, capture: Int, number: Int, time: Double) -> PacketSummary? {
        let frame = bytes.span.bytes
        guard let layout = try? PacketLayout(validatingEachHeader: frame, linkType: linkType),
            let flow = FlowKey(frame, layout: layout)
        else { return nil }
        let n = layout.networkOffset
        let ip = frame.extracting(n..<layout.ipEnd)
        var summary: PacketSummary
        let isIPv4 = layout.network == .ipv4
        if isIPv4 {
            guard let v4 = try? IPv4Packet(validating: ip) else { return nil }
            summary = PacketSummary(capture: capture, number: number, time: time, ipLength: layout.ipEnd - n,
                                    dontFragment: v4.dontFragment, ipID: v4.identification, ttl: v4.timeToLive)
        } else {
            guard let v6 = try? IPv6Packet(validating: ip) else { return nil }
            summary = PacketSummary(capture: capture, number: number, time: time, ipLength: layout.ipEnd - n,
                                    dontFragment: true, ipID: 0, ttl: v6.hopLimit)
        }
        let l4 = frame.extracting(layout.transportOffset..<layout.ipEnd)
        switch layout.transport {
        case .tcp where !layout.isFragment && layout.hasTransportHeader:
            guard let segment = try? TCPSegment(validating: l4) else { return nil }
            var tcp = TCPSummary(flow: flow, sequence: segment.sequenceNumber,
                                 acknowledgment: segment.acknowledgmentNumber, flags: segment.flags,
                                 window: segment.window, payloadLength: layout.payloadLength)
            for option in segment.optionsBeforeFirstError {
                switch option {
                case .maximumSegmentSize(let mss): tcp.mss = Int(mss)
                case .windowScale(let shift): tcp.windowScale = Int(shift)
                case .sackPermitted: tcp.sackPermitted = true
                case .sack(let blocks):
                    tcp.hasSACKBlocks = true
                    for block in blocks {
                        if let h = tcp.sackHighest {
                            tcp.sackHighest = seqGreater(block.right, h) ? block.right : h
                        } else {
                            tcp.sackHighest = block.right
                        }
                    }
                default: break
                }
            }
            summary.tcp = tcp
        case .icmp where isIPv4, .icmpv6 where !isIPv4:
            guard let icmp = try? ICMPMessage(validating: l4, version6: !isIPv4) else { return nil }
            if isIPv4 && icmp.type == ICMPType.v4DestinationUnreachable && icmp.code == ICMPType.v4FragmentationNeeded {
                summary.pathMTU = quoted(icmp.body, mtu: Int(icmp.nextHopMTU))
            } else if !isIPv4 && icmp.type == ICMPType.v6PacketTooBig {
                summary.pathMTU = quoted(icmp.body, mtu: Int(icmp.mtu))
            } else {
                return nil
            }
        default:
            return nil
        }
        return summary
    }

    /// The packet an ICMP error quotes: its length and, when it is TCP, its direction and sequence.
    static func quoted(_ body: RawSpan, mtu: Int) -> PathMTUMessage {
        var message = PathMTUMessage(mtu: mtu, quotedFlow: nil, quotedLength: 0, quotedSequence: nil)
        guard let quote = QuotedPacket(body) else { return message }
        message.quotedLength = quote.ipLength
        if let sequence = quote.tcpSequenceNumber {
            message.quotedFlow = quote.flow
            message.quotedSequence = sequence
        }
        return message
    }
}

/// Sequence-space comparison (RFC 1982): whether `a` is after `b`.
@inlinable func seqGreater(_ a: UInt32, _ b: UInt32) -> Bool { Int32(bitPattern: a &- b) > 0 }
