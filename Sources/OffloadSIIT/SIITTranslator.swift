import OffloadEngine
import OffloadWire

/// Why a ``SIITTranslator`` did not translate a packet.
public enum SIITDropReason: String, Hashable, Sendable, CaseIterable, Codable, CodingKeyRepresentable {
    /// An address that maps neither through the EAM table nor the prefix.
    case untranslatableAddress = "untranslatable_address"
    /// An IPv4 UDP datagram without a checksum (RFC 7915 §4.5), answered with an ICMP error.
    case udpWithoutChecksum = "udp_without_checksum"
    /// An ICMP type RFC 7915 drops (redirects, router and neighbour discovery, MLD, timestamps…),
    /// or an ICMP error whose quote cannot be translated.
    case icmpNotTranslated = "icmp_not_translated"
    /// A fragmented ICMP message (its checksum cannot be moved to the other family's rules).
    case fragmentedICMP = "fragmented_icmp"
    /// IPv6 extension headers the translator refuses (after a Fragment header, a Routing header
    /// with segments left), answered with an ICMPv6 error.
    case extensionHeaders = "extension_headers"
    /// An IPv4 packet whose protocol number is an IPv6 extension header (Hop-by-Hop 0, Routing 43,
    /// Fragment 44, Destination Options 60). RFC 7915 §4.1 copies the protocol into Next Header,
    /// where the IPv6 side would read the payload as that header: dropped instead.
    case ipv6ExtensionProtocol = "ipv6_extension_protocol"
    /// Headers that do not parse (lengths that lie, a bad IPv4 header checksum).
    case malformed
}

/// What the translator made of one packet.
public enum SIITOutcome: Hashable, Sendable {
    /// Packets of the other family to forward (more than one when the translator fragments).
    case translated([[UInt8]])
    /// An ICMP error to send back to the packet's source (the packet itself is dropped).
    case reply([UInt8], SIITDropReason)
    /// Dropped.
    case drop(SIITDropReason)
}

/// RFC 7915 §5.1: an IPv4 packet translated from IPv6 gets DF when it is larger than 1260 bytes
/// (the sender's path MTU discovery still works), and stays fragmentable below it. The one place
/// the rule is written: the whole-packet path, the in-place segments and the quoted packets of
/// translated ICMP errors all ask here.
public func rfc7915DontFragment(ipv4TotalLength: Int) -> Bool { ipv4TotalLength > 1260 }

/// The whole-packet translator of RFC 7915 (with RFC 7757 EAM, RFC 6791 sources, RFC 4884 ICMP
/// extensions): the reference for every rule, and the slow path of ``SIITStage`` for what its
/// in-place path does not handle (fragments, extension headers, ICMP errors, DF-clear packets
/// that must be fragmented, super-packets that must be segmented first).
///
/// The translated packets keep the TTL / hop limit of the original: the forwarder that sends them
/// decrements it, as a router does.
public struct SIITTranslator: Sendable {
    /// The addresses and the knobs.
    public var configuration: SIITConfiguration
    /// The IPv4 Identification of the next DF-clear packet translated from IPv6 without a Fragment header.
    var nextIdentification: UInt16 = 1

    /// Creates a translator.
    public init(configuration: SIITConfiguration) { self.configuration = configuration }

    /// Translates one IP packet (from its IP header). `egressMTU` is the MTU of the side it goes
    /// to: IPv4 packets without DF are fragmented to fit it (and `lowestIPv6MTU`).
    public mutating func translate(_ packet: [UInt8], egressMTU: Int = 1500) -> SIITOutcome {
        guard let first = packet.first else { return .drop(.malformed) }
        switch first >> 4 {
        case 4: return translate4to6(packet, egressMTU: egressMTU, hairpin: false)
        case 6: return translate6to4(packet, egressMTU: egressMTU)
        default: return .drop(.malformed)
        }
    }

    // MARK: - IPv4 → IPv6 (RFC 7915 §4)

    mutating func translate4to6(_ p: [UInt8], egressMTU: Int, hairpin: Bool) -> SIITOutcome {
        guard p.count >= 20 else { return .drop(.malformed) }
        let ihl = Int(p[0] & 0x0F) * 4
        let total = Int(p.loadBigEndian(UInt16.self, at: 2))
        guard ihl >= 20, total >= ihl, total <= p.count else { return .drop(.malformed) }
        guard unsafe p.span.bytes.extracting(0..<ihl).withUnsafeBytes({ unsafe InternetChecksum.unsafeSum($0).value }) == 0xFFFF
        else { return .drop(.malformed) }
        let flags = p.loadBigEndian(UInt16.self, at: 6)
        let dontFragment = flags & 0x4000 != 0
        let moreFragments = flags & 0x2000 != 0
        let offset = Int(flags & 0x1FFF) * 8
        let isFragment = moreFragments || offset != 0
        let identification = p.loadBigEndian(UInt16.self, at: 4)
        let proto = IPProtocol(rawValue: p[9])
        if [.hopByHop, .ipv6Routing, .ipv6Fragment, .ipv6DestinationOptions].contains(proto) {
            return .drop(.ipv6ExtensionProtocol)
        }
        let v4Source = IPv4Address(p, 12)
        let v4Destination = IPv4Address(p, 16)
        var payload = Array(p[ihl..<total])
        var upper = proto

        if proto == .icmp {
            if isFragment { return .drop(.fragmentedICMP) }
            guard payload.count >= 8 else { return .drop(.malformed) }
            if ICMPTranslation.isError(payload[0], version6: false) {
                guard let message = translateError4to6(payload, hairpin: hairpin) else { return .drop(.icmpNotTranslated) }
                payload = message
            } else {
                guard let type6 = ICMPTranslation.echoType(toIPv6: payload[0]) else { return .drop(.icmpNotTranslated) }
                payload[0] = type6
            }
            upper = .icmpv6
        }
        if proto == .udp && offset == 0 && payload.count >= 8 && payload.loadBigEndian(UInt16.self, at: 6) == 0 {
            // RFC 7915 §4.5: the IPv6 side requires a UDP checksum. Computing one needs the whole
            // datagram, which a fragment is not.
            guard configuration.amendUDPChecksumZero, !isFragment else {
                return reply4(type: 3, code: 13, about: p, reason: .udpWithoutChecksum)
            }
        }
        let isError = proto == .icmp && ICMPTranslation.isError(p[ihl], version6: false)
        let source: IPv6Address
        if hairpin, let s = configuration.pool6?.embedding(v4Source) {
            source = s  // RFC 7757 §4.2: a hairpinned packet's source goes through the prefix
        } else if let s = configuration.ipv6(for: v4Source) {
            source = s
        } else if isError {
            source = configuration.rfc6791v6 ?? configuration.ownIPv6
        } else {
            return .drop(.untranslatableAddress)
        }
        guard let destination = configuration.ipv6(for: v4Destination) else { return .drop(.untranslatableAddress) }

        // The L4 checksum moves to the new pseudo-header (in the first fragment, which holds it).
        if offset == 0 {
            switch proto {
            case .tcp where payload.count >= 20:
                adjust(&payload, at: 16, by: source.wordSum + destination.wordSum - (v4Source.wordSum + v4Destination.wordSum), udp: false)
            case .udp where payload.count >= 8:
                if payload.loadBigEndian(UInt16.self, at: 6) == 0 {
                    payload.storeBigEndian(UInt16(0), at: 6)
                    let pseudo = InternetChecksum.pseudoHeaderSum(ipv6Source: source, destination: destination,
                                                                  nextHeader: .udp, length: payload.count)
                    unsafe payload.storeBigEndian(InternetChecksum.udpFieldValue(InternetChecksum.checksum(payload.span.bytes, initial: pseudo)), at: 6)
                } else {
                    adjust(&payload, at: 6, by: source.wordSum + destination.wordSum - (v4Source.wordSum + v4Destination.wordSum), udp: true)
                }
            case .icmp:
                payload.storeBigEndian(UInt16(0), at: 2)
                let pseudo = InternetChecksum.pseudoHeaderSum(ipv6Source: source, destination: destination,
                                                              nextHeader: .icmpv6, length: payload.count)
                if isError {
                    unsafe payload.storeBigEndian(InternetChecksum.checksum(payload.span.bytes, initial: pseudo), at: 2)
                } else {
                    // Echo: incremental, so that a wrong checksum stays wrong.
                    let old = p.loadBigEndian(UInt16.self, at: ihl + 2)
                    let delta = pseudo + OnesComplementSum(UInt16(payload[0]) << 8) - OnesComplementSum(UInt16(p[ihl]) << 8)
                    payload.storeBigEndian(InternetChecksum.update(old, adding: delta), at: 2)
                }
            default:
                break
            }
        }

        var header = IPv6HeaderRepr(source: source, destination: destination, nextHeader: upper,
                                    payloadLength: payload.count, hopLimit: p[8], trafficClass: p[1])
        let limit = min(configuration.lowestIPv6MTU, egressMTU)
        if !isFragment && (dontFragment || 40 + payload.count <= limit || isError) {
            var out: [UInt8] = []
            out.reserveCapacity(40 + payload.count)
            header.encode(into: &out)
            out += payload
            return .translated([out])
        }
        // A fragment keeps its place in the datagram behind a Fragment header (RFC 7915 §4.1); a
        // DF-clear packet (or fragment) larger than the limit is cut to fit it (8-byte multiples).
        header.nextHeader = .ipv6Fragment
        let room = dontFragment ? payload.count : max(8, (limit - 48) / 8 * 8)
        var fragments: [[UInt8]] = []
        var start = 0
        repeat {
            let end = min(payload.count, start + room)
            let last = end == payload.count
            header.payloadLength = 8 + end - start
            var out: [UInt8] = []
            header.encode(into: &out)
            out.append(upper.rawValue)
            out.append(0)
            out.appendBigEndian(UInt16((offset + start) & ~7) | (last && !moreFragments ? 0 : 1))
            out.appendBigEndian(UInt32(identification))
            out += payload[start..<end]
            fragments.append(out)
            start = end
        } while start < payload.count
        return .translated(fragments)
    }

    // MARK: - IPv6 → IPv4 (RFC 7915 §5)

    /// The IPv6 header chain: where the upper layer starts, its protocol, and the Fragment header's fields.
    package struct IPv6Chain {
        /// Where the upper layer starts.
        package var upperOffset: Int
        /// The upper-layer protocol.
        package var upper: IPProtocol
        /// The Fragment header's offset (bytes), more-fragments flag and identification.
        package var fragment: (offset: Int, more: Bool, identification: UInt32)?
    }

    /// Walks the extension headers (RFC 7915 §5.1): Hop-by-Hop, Destination Options and Routing
    /// headers are skipped; a Routing header with segments left is refused with a parameter problem;
    /// an extension header after the Fragment header is refused (Jool's behaviour, the packet cannot
    /// be represented in IPv4).
    package enum ChainError: Error { case malformed, refused(type: UInt8, code: UInt8, pointer: UInt32) }

    /// The translator's walk of an IPv6 extension-header chain (RFC 7915 §5.1). Its policy is its
    /// own: Hop-by-Hop, Routing with no segments left, and Destination Options are skipped, a
    /// Fragment header is read; Hop-by-Hop anywhere but first, anything after a Fragment header
    /// and a Routing header with segments left are refused with a Parameter Problem. Where each
    /// field is and how long each header is come from the wire layer (``IPv6Packet/ExtensionField``,
    /// ``IPv6Packet/extensionHeaderLength(_:lengthByte:)``). Any other next header (AH included)
    /// is the upper layer.
    package static func walk(_ p: [UInt8], end: Int) throws(ChainError) -> IPv6Chain {
        typealias F = IPv6Packet.ExtensionField
        var next = IPProtocol(rawValue: p[IPv6Packet.Field.nextHeader])
        var at = IPv6Packet.Field.fixedHeaderEnd
        var fragment: (offset: Int, more: Bool, identification: UInt32)?
        var first = true
        while true {
            switch next {
            case .hopByHop, .ipv6Routing, .ipv6DestinationOptions, .ipv6Fragment:
                if fragment != nil || (next == .hopByHop && !first) {
                    throw .refused(type: ICMPType.v6DestinationUnreachable, code: ICMPType.v6AdministrativelyProhibited,
                                   pointer: 0)
                }
                guard at + F.minimumLength <= end else { throw .malformed }
                if next == .ipv6Routing && p[at + F.segmentsLeft] != 0 {
                    throw .refused(type: ICMPType.v6ParameterProblem, code: ICMPType.v6ErroneousHeaderField,
                                   pointer: UInt32(at + F.segmentsLeft))
                }
                if next == .ipv6Fragment {
                    let word = p.loadBigEndian(UInt16.self, at: at + F.fragmentOffsetAndFlags)
                    fragment = (Int(word & ~7), word & 1 != 0, p.loadBigEndian(UInt32.self, at: at + F.fragmentIdentification))
                }
                let length = IPv6Packet.extensionHeaderLength(next, lengthByte: p[at + F.length])!
                guard at + length <= end else { throw .malformed }
                next = IPProtocol(rawValue: p[at + F.nextHeader])
                at += length
                first = false
            default:
                return IPv6Chain(upperOffset: at, upper: next, fragment: fragment)
            }
        }
    }

    mutating func translate6to4(_ p: [UInt8], egressMTU: Int) -> SIITOutcome {
        guard p.count >= 40 else { return .drop(.malformed) }
        let end = 40 + Int(p.loadBigEndian(UInt16.self, at: 4))
        guard end <= p.count, end > 40 || p[6] == 59 else { return .drop(.malformed) }  // 0: a jumbogram
        let chain: IPv6Chain
        do { chain = try Self.walk(p, end: end) } catch {
            switch error {
            case .malformed: return .drop(.malformed)
            case .refused(let type, let code, let pointer):
                return reply6(type: type, code: code, rest: pointer, about: p, reason: .extensionHeaders)
            }
        }
        let v6Source = IPv6Address(p, 8)
        let v6Destination = IPv6Address(p, 24)
        var payload = Array(p[chain.upperOffset..<end])
        let offset = chain.fragment?.offset ?? 0
        let isFragment = chain.fragment.map { $0.more || $0.offset != 0 } ?? false
        var upper = chain.upper
        var isError = false
        if chain.upper == .icmpv6 {
            if isFragment { return .drop(.fragmentedICMP) }
            guard payload.count >= 8 else { return .drop(.malformed) }
            isError = ICMPTranslation.isError(payload[0], version6: true)
            upper = .icmp
        }
        let source: IPv4Address
        if let s = configuration.ipv4(for: v6Source) {
            source = s
        } else if isError {
            source = configuration.rfc6791v4 ?? configuration.ownIPv4
        } else {
            return .drop(.untranslatableAddress)
        }
        guard let destination = configuration.ipv4(for: v6Destination) else { return .drop(.untranslatableAddress) }

        if chain.upper == .icmpv6 {
            if isError {
                guard let message = translateError6to4(payload) else { return .drop(.icmpNotTranslated) }
                payload = message
                payload.storeBigEndian(UInt16(0), at: 2)
                unsafe payload.storeBigEndian(InternetChecksum.checksum(payload.span.bytes), at: 2)
            } else {
                guard let type4 = ICMPTranslation.echoType(toIPv4: payload[0]) else { return .drop(.icmpNotTranslated) }
                let old = payload.loadBigEndian(UInt16.self, at: 2)
                let delta = OnesComplementSum(UInt16(type4) << 8) - OnesComplementSum(UInt16(payload[0]) << 8)
                    - InternetChecksum.pseudoHeaderSum(ipv6Source: v6Source, destination: v6Destination,
                                                       nextHeader: .icmpv6, length: payload.count)
                payload[0] = type4
                payload.storeBigEndian(InternetChecksum.update(old, adding: delta), at: 2)
            }
        } else if offset == 0 {
            let delta = (source.wordSum + destination.wordSum) - (v6Source.wordSum + v6Destination.wordSum)
            if chain.upper == .tcp && payload.count >= 20 { adjust(&payload, at: 16, by: delta, udp: false) }
            if chain.upper == .udp && payload.count >= 8 { adjust(&payload, at: 6, by: delta, udp: true) }
        }
        let totalLength = 20 + payload.count
        guard totalLength <= 65_535 else { return .drop(.malformed) }
        var header = IPv4HeaderRepr(source: source, destination: destination, protocolNumber: upper,
                                    totalLength: totalLength, timeToLive: p[7],
                                    typeOfService: UInt8(truncatingIfNeeded: p.loadBigEndian(UInt16.self, at: 0) >> 4))
        if let fragment = chain.fragment {
            header.identification = UInt16(truncatingIfNeeded: fragment.identification)
            header.dontFragment = false
            header.moreFragments = fragment.more
            header.fragmentOffset = fragment.offset / 8
        } else {
            // RFC 7915 §5.1: DF is set when the IPv4 packet is larger than 1260 bytes (the sender
            // then learns the path MTU); smaller packets may be fragmented on the IPv4 side.
            header.dontFragment = rfc7915DontFragment(ipv4TotalLength: totalLength)
            if !header.dontFragment {
                header.identification = nextIdentification
                nextIdentification &+= 1
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(totalLength)
        header.encode(into: &out)
        out += payload
        // RFC 7757 §4.2: an IPv4 destination that is itself an IPv6 node through the EAM table
        // goes back to IPv6 (hairpinning).
        if configuration.eam.coversIPv4(destination) {
            return translate4to6(out, egressMTU: egressMTU, hairpin: true)
        }
        return .translated([out])
    }

    // MARK: - Errors the translator sends itself

    func reply4(type: UInt8, code: UInt8, about p: [UInt8], reason: SIITDropReason) -> SIITOutcome {
        guard let error = unsafe ICMPErrorBuilder.ipv4(type: type, code: code, restOfHeader: 0, quoting: p.span.bytes,
                                                source: configuration.ownIPv4)
        else { return .drop(reason) }
        return .reply(error, reason)
    }

    func reply6(type: UInt8, code: UInt8, rest: UInt32, about p: [UInt8], reason: SIITDropReason) -> SIITOutcome {
        guard let error = unsafe ICMPErrorBuilder.ipv6(type: type, code: code, restOfHeader: rest, quoting: p.span.bytes,
                                                source: configuration.ownIPv6)
        else { return .drop(reason) }
        return .reply(error, reason)
    }

    // MARK: - Checksums

    /// Moves a complete checksum at `offset` by `delta` (it stays as right or as wrong as it was).
    func adjust(_ bytes: inout [UInt8], at offset: Int, by delta: OnesComplementSum, udp: Bool) {
        bytes.storeBigEndian(movedChecksum(bytes.loadBigEndian(UInt16.self, at: offset), by: delta, partial: false, udp: udp),
                             at: offset)
    }
}

/// An L4 checksum field moved to a new pseudo-header whose sum differs by `delta`: a complete
/// checksum stays as right or as wrong as it was (a UDP zero result is sent as 0xFFFF); a partial
/// one (the pseudo-header sum only, not complemented) becomes the new pseudo-header sum. The one
/// rule both of the translator's paths use.
func movedChecksum(_ field: UInt16, by delta: OnesComplementSum, partial: Bool, udp: Bool) -> UInt16 {
    if partial { return (OnesComplementSum(field) + delta).value }
    let new = InternetChecksum.update(field, adding: delta)
    return udp ? InternetChecksum.udpFieldValue(new) : new
}
