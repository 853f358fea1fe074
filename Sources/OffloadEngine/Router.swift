import OffloadWire

/// Settings of a ``Router``.
public struct RouterConfiguration: Hashable, Sendable {
    /// The egress MTU: the largest IP packet the egress link carries.
    public var egressMTU: Int
    /// Whether the egress accepts super-packets (a TUN device with a virtio header).
    public var egressTakesGSO: Bool
    /// The source address of ICMPv4 errors (the router's address on the ingress side).
    public var icmpSourceV4: IPv4Address
    /// The source address of ICMPv6 errors.
    public var icmpSourceV6: IPv6Address
    /// Checksums of segments the router makes.
    public var segmentChecksum: OutputChecksum = .complete
    /// ICMP errors per second, and the burst.
    public var icmpPerSecond = 1000
    /// The ICMP burst.
    public var icmpBurst = 50
    /// Whether forwarded packets get TTL − 1 (a router); false for a bridge, which forwards frames
    /// as they are.
    public var decrementsTTL = true

    /// Creates a configuration.
    public init(egressMTU: Int, egressTakesGSO: Bool = false,
                icmpSourceV4: IPv4Address = IPv4Address(192, 0, 2, 254),
                icmpSourceV6: IPv6Address = IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe)) {
        self.egressMTU = egressMTU
        self.egressTakesGSO = egressTakesGSO
        self.icmpSourceV4 = icmpSourceV4
        self.icmpSourceV6 = icmpSourceV6
    }
}

/// Counters of a ``Router``.
public struct RouterStatistics: Hashable, Sendable {
    /// Packets in.
    public var packetsIn = 0
    /// Forwarded whole (super-packets as GSO).
    public var forwarded = 0
    /// Super-packets segmented in software, and the segments made.
    public var segmented = 0
    /// Segments made.
    public var segmentsOut = 0
    /// Packets fragmented, and the fragments made.
    public var fragmented = 0
    /// Fragments made.
    public var fragmentsOut = 0
    /// ICMP "fragmentation needed" / "packet too big" sent.
    public var icmpTooBig = 0
    /// ICMP "time exceeded" sent.
    public var icmpTimeExceeded = 0
    /// ICMP errors not sent because of the rate limit (or not allowed, e.g. about an ICMP error).
    public var icmpSuppressed = 0
    /// Packets dropped (too big, TTL expired).
    public var dropped = 0
    /// Not IP, forwarded unchanged.
    public var passedThrough = 0
    /// Creates zeroed counters.
    public init() {}

    /// Adds another set of counters to these.
    public mutating func add(_ o: RouterStatistics) {
        packetsIn += o.packetsIn
        forwarded += o.forwarded
        segmented += o.segmented
        segmentsOut += o.segmentsOut
        fragmented += o.fragmented
        fragmentsOut += o.fragmentsOut
        icmpTooBig += o.icmpTooBig
        icmpTimeExceeded += o.icmpTimeExceeded
        icmpSuppressed += o.icmpSuppressed
        dropped += o.dropped
        passedThrough += o.passedThrough
    }
}

/// A packet leaving a ``Router``.
public struct RoutedPacket: Hashable, Sendable {
    /// The frame.
    public var bytes: [UInt8]
    /// Its GSO facts, when it leaves as a super-packet.
    public var gso: GSOInfo?
}

/// What a ``Router`` did with one packet.
public struct RouterOutput: Hashable, Sendable {
    /// The decision.
    public var decision: ForwardingDecision
    /// Packets for the egress.
    public var egress: [RoutedPacket] = []
    /// ICMP errors for the ingress (back to the source).
    public var toSource: [[UInt8]] = []
    /// What this one packet added to the router's counters (a caller sums these instead of
    /// diffing ``Router/statistics``).
    public var counts = RouterStatistics()
}

/// A router's forwarding step for one packet or super-packet: TTL, the MTU decision, and what
/// follows from it (forward, segment, fragment, ICMP). Linux: `ip_forward`, `ip6_forward`.
///
/// This is the reference implementation, built on arrays for clarity; a dataplane keeps the
/// decision (``ForwardingDecision``) and does the common case (forward, segment) in place.
public struct Router: ~Copyable {
    /// The settings.
    public let configuration: RouterConfiguration
    /// Counters.
    public private(set) var statistics = RouterStatistics()
    var limiter: ICMPRateLimiter
    var segmenter = GSOSegmenter()
    var icmpID: UInt16 = 0

    /// Creates a router.
    public init(configuration: RouterConfiguration) {
        self.configuration = configuration
        limiter = ICMPRateLimiter(perSecond: configuration.icmpPerSecond, burst: configuration.icmpBurst)
    }

    /// Routes one frame.
    /// - Parameters:
    ///   - frame: the frame, link header included.
    ///   - linkType: its link type.
    ///   - gso: its GSO facts when it is a super-packet.
    ///   - now: the clock for the ICMP rate limit, in nanoseconds.
    public mutating func route(_ frame: [UInt8], linkType: LinkType, gso: GSOInfo?, now: UInt64) -> RouterOutput {
        let decision = unsafe ForwardingDecision.decide(frame.span.bytes, linkType: linkType, gso: gso,
                                                 egressMTU: configuration.egressMTU,
                                                 egressTakesGSO: configuration.egressTakesGSO)
        return apply(decision, to: frame, linkType: linkType, gso: gso, now: now)
    }

    /// Carries out a decision already made (by a dataplane that decided on the headers alone):
    /// forward, segment, fragment, or answer with an ICMP error. The decision is not made again.
    /// - Parameters:
    ///   - decision: what ``ForwardingDecision/decide(layout:headers:gso:egressMTU:egressTakesGSO:)`` said;
    ///     a ``ForwardingDecision/tooBig(mtu:)`` error announces the MTU it carries.
    ///   - frame: the frame, link header included; an ICMP error quotes its first segment.
    ///   - linkType: its link type.
    ///   - gso: its GSO facts when it is a super-packet.
    ///   - now: the clock for the ICMP rate limit, in nanoseconds.
    /// - Returns: the packets to send and what they added to the counters.
    public mutating func apply(_ decision: ForwardingDecision, to frame: [UInt8], linkType: LinkType, gso: GSOInfo?,
                               now: UInt64) -> RouterOutput {
        let output = applyCounting(decision, to: frame, linkType: linkType, gso: gso, now: now)
        statistics.add(output.counts)
        return output
    }

    mutating func applyCounting(_ decision: ForwardingDecision, to frame: [UInt8], linkType: LinkType, gso: GSOInfo?,
                                now: UInt64) -> RouterOutput {
        var output = RouterOutput(decision: decision)
        output.counts.packetsIn += 1
        guard decision != .passThrough, let layout = unsafe try? PacketLayout(parsing: frame.span.bytes, linkType: linkType)
        else {
            output.counts.passedThrough += 1
            output.egress.append(RoutedPacket(bytes: frame, gso: gso))
            return output
        }
        let n = layout.networkOffset
        let isIPv4 = layout.network == .ipv4
        switch decision {
        case .passThrough:
            break
        case .timeExceeded:
            output.counts.dropped += 1
            let type = isIPv4 ? ICMPType.v4TimeExceeded : ICMPType.v6TimeExceeded
            // Quote the first segment: what the source sent, not the merged packet.
            let quoted = firstSegment(frame, linkType: linkType, gso: gso)
            if let icmp = makeError(type: type, code: 0, rest: 0, quoting: quoted, from: frame, layout: layout, now: now,
                                    counts: &output.counts) {
                output.counts.icmpTimeExceeded += 1
                output.toSource.append(icmp)
            }
        case .tooBig(let mtu):
            output.counts.dropped += 1
            let quoted = firstSegment(frame, linkType: linkType, gso: gso)
            let (type, code) = isIPv4
                ? (ICMPType.v4DestinationUnreachable, ICMPType.v4FragmentationNeeded) : (ICMPType.v6PacketTooBig, 0)
            if let icmp = makeError(type: type, code: code, rest: UInt32(mtu), quoting: quoted, from: frame,
                                    layout: layout, now: now, counts: &output.counts)
            {
                output.counts.icmpTooBig += 1
                output.toSource.append(icmp)
            }
        case .forward:
            var copy = frame
            if configuration.decrementsTTL { RouterHeaders.decrementTTL(&copy, networkOffset: n) }
            output.counts.forwarded += 1
            output.egress.append(RoutedPacket(bytes: copy, gso: gso))
        case .segment, .fragment:
            var copy = frame
            if configuration.decrementsTTL { RouterHeaders.decrementTTL(&copy, networkOffset: n) }
            var pieces: [[UInt8]] = [copy]
            if let gso, gso.segmentSize > 0 || decision == .fragment {
                let size = gso.segmentSize > 0 ? gso.segmentSize : max(8, configuration.egressMTU - (layout.payloadOffset - n))
                do {
                    unsafe try copy.withUnsafeBytes { buffer in
                        unsafe try segmenter.segment(buffer, linkType: linkType, gso: gso, segmentSize: size,
                                              checksum: configuration.segmentChecksum)
                    }
                    pieces = (0..<segmenter.segmentCount).map { segmenter.segmentBytes(at: $0) }
                    output.counts.segmented += 1
                    output.counts.segmentsOut += pieces.count
                } catch {
                    pieces = [copy]
                }
            }
            for piece in pieces {
                guard decision == .fragment, piece.count - n > configuration.egressMTU else {
                    output.egress.append(RoutedPacket(bytes: piece, gso: nil))
                    continue
                }
                let link = Array(piece[0..<n])
                if let fragments = unsafe try? IPv4Fragmenter.fragment(piece.span.bytes.extracting(droppingFirst: n),
                                                                mtu: configuration.egressMTU)
                {
                    output.counts.fragmented += 1
                    output.counts.fragmentsOut += fragments.count
                    output.egress += fragments.map { RoutedPacket(bytes: link + $0, gso: nil) }
                } else {
                    output.counts.dropped += 1
                }
            }
        }
        return output
    }

    /// The first segment of a super-packet (or the packet itself): what an ICMP error quotes.
    mutating func firstSegment(_ frame: [UInt8], linkType: LinkType, gso: GSOInfo?) -> [UInt8] {
        guard let gso, gso.segmentSize > 0, gso.segmentCount > 1 else { return frame }
        let ok: Bool = unsafe frame.withUnsafeBytes { buffer in
            unsafe (try? segmenter.segment(buffer, linkType: linkType, gso: gso)) != nil
        }
        return ok && segmenter.segmentCount > 0 ? segmenter.segmentBytes(at: 0) : frame
    }

    /// Builds an ICMP error with the reversed link header, subject to the rate limit.
    mutating func makeError(type: UInt8, code: UInt8, rest: UInt32, quoting quoted: [UInt8], from frame: [UInt8],
                            layout: PacketLayout, now: UInt64, counts: inout RouterStatistics) -> [UInt8]? {
        let n = layout.networkOffset
        let ip = unsafe quoted.span.bytes.extracting(droppingFirst: n)
        icmpID &+= 1
        let packet = layout.network == .ipv4
            ? ICMPErrorBuilder.ipv4(type: type, code: code, restOfHeader: rest, quoting: ip,
                                    source: configuration.icmpSourceV4, identification: icmpID)
            : ICMPErrorBuilder.ipv6(type: type, code: code, restOfHeader: rest, quoting: ip,
                                    source: configuration.icmpSourceV6)
        guard let packet, limiter.allow(now: now) else {
            counts.icmpSuppressed += 1
            return nil
        }
        var link = Array(frame[0..<n])
        if unsafe n >= 12 && (try? EthernetFrame(validating: frame.span.bytes)) != nil {
            // Ethernet: back the way it came, addresses swapped.
            let destination = Array(link[0..<6])
            link.replaceSubrange(0..<6, with: link[6..<12])
            link.replaceSubrange(6..<12, with: destination)
        }
        return link + packet
    }
}
