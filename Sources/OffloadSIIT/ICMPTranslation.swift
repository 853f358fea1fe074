import OffloadEngine
import OffloadWire

extension SIITTranslator {
    // MARK: - ICMP errors and the packets they quote (RFC 7915 §4.2–4.4, §5.2–5.4, RFC 4884)

    /// An ICMPv4 error message (from its ICMP header) as an ICMPv6 one, with the packet it quotes
    /// translated; the checksum is left for the caller (it covers the new pseudo-header). Sized so
    /// that the IPv6 packet is at most 1280 bytes. nil when RFC 7915 drops it.
    func translateError4to6(_ message: [UInt8], hairpin: Bool = false) -> [UInt8]? {
        let quote = Array(message[8...])
        guard let mapped = ICMPTranslation.errorToIPv6(type: message[0], code: message[1],
                                                       rest: message.loadBigEndian(UInt32.self, at: 4), quote: quote)
        else { return nil }
        // RFC 4884: destination unreachable, time exceeded and parameter problem may say how long
        // the quoted datagram is (byte 5, in 32-bit words) and carry extensions after it.
        let words = [3, 11, 12].contains(message[0]) ? Int(message[5]) : 0
        let original = words > 0 && words * 4 <= quote.count ? Array(quote[..<(words * 4)]) : quote
        let extensions = words > 0 && words * 4 <= quote.count ? Array(quote[(words * 4)...]) : []
        guard let inner = translateQuote4to6(original, hairpin: hairpin) else { return nil }
        var out: [UInt8] = [mapped.type, mapped.code, 0, 0]
        out.appendBigEndian(mapped.rest)
        return Self.assemble(out, inner: inner, extensions: extensions, lengthByte: [1, 3].contains(mapped.type) ? 4 : nil,
                             unit: 8, room: ICMPErrorBuilder.maximumIPv6ErrorLength - 40)
    }

    /// An ICMPv6 error message as an ICMPv4 one (checksum zero), sized for a 576-byte IPv4 packet.
    func translateError6to4(_ message: [UInt8]) -> [UInt8]? {
        let quote = Array(message[8...])
        guard let mapped = ICMPTranslation.errorToIPv4(type: message[0], code: message[1],
                                                       rest: message.loadBigEndian(UInt32.self, at: 4))
        else { return nil }
        // RFC 4884: destination unreachable and time exceeded may carry the quote's length in byte 4
        // (in 64-bit words) and extensions after it.
        let words = [1, 3].contains(message[0]) ? Int(message[4]) : 0
        let original = words > 0 && words * 8 <= quote.count ? Array(quote[..<(words * 8)]) : quote
        let extensions = words > 0 && words * 8 <= quote.count ? Array(quote[(words * 8)...]) : []
        guard let inner = translateQuote6to4(original) else { return nil }
        var out: [UInt8] = [mapped.type, mapped.code, 0, 0]
        out.appendBigEndian(mapped.rest)
        return Self.assemble(out, inner: inner, extensions: extensions,
                             lengthByte: [3, 11, 12].contains(mapped.type) ? 5 : nil,
                             unit: 4, room: ICMPErrorBuilder.maximumIPv4ErrorLength - 20)
    }

    /// The ICMP header, the translated quote, and the RFC 4884 extensions, within `room` bytes.
    /// What gives way, in order: the quote beyond its first 128 bytes (cut to a multiple of `unit`),
    /// then the extensions (removed whole, never cut). With extensions, the quote is zero-padded to a
    /// multiple of `unit` and at least 128 bytes, and its length (in units) goes in `lengthByte`.
    static func assemble(_ header: [UInt8], inner: [UInt8], extensions: [UInt8], lengthByte: Int?, unit: Int,
                         room: Int) -> [UInt8] {
        var out = header
        if !extensions.isEmpty, let lengthByte {
            let padded = max(128, (inner.count + unit - 1) / unit * unit)
            let available = (room - out.count - extensions.count) / unit * unit
            let length = min(padded, available)
            if length >= 128, length / unit <= 255 {
                out[lengthByte] = UInt8(length / unit)
                out += inner.prefix(length)
                out += [UInt8](repeating: 0, count: length - min(length, inner.count))
                return out + extensions
            }
        }
        return out + inner.prefix(room - out.count)
    }

    /// The quoted IPv4 packet as IPv6: header translated (its length field still says how long the
    /// packet was), the TTL kept, the L4 checksum moved to the new pseudo-header when quoted.
    func translateQuote4to6(_ quote: [UInt8], hairpin: Bool = false) -> [UInt8]? {
        guard quote.count >= 20, quote[0] >> 4 == 4 else { return nil }
        let ihl = Int(quote[0] & 0x0F) * 4
        guard ihl >= 20, quote.count >= ihl else { return nil }
        let total = Int(quote.loadBigEndian(UInt16.self, at: 2))
        let proto = IPProtocol(rawValue: quote[9])
        let s4 = IPv4Address(quote, 12)
        let d4 = IPv4Address(quote, 16)
        // Hairpinned, the quoted packet's destination (the error's source side) goes through the prefix too.
        let mappedDestination = hairpin ? configuration.pool6?.embedding(d4) : configuration.ipv6(for: d4)
        guard let s6 = configuration.ipv6(for: s4), let d6 = mappedDestination else { return nil }
        let upperLength = max(0, total - ihl)
        var body = Array(quote[ihl...])
        let offset = Int(quote.loadBigEndian(UInt16.self, at: 6) & 0x1FFF)
        if offset == 0 {
            let delta = s6.wordSum + d6.wordSum - (s4.wordSum + d4.wordSum)
            if proto == .tcp && body.count >= 18 { adjust(&body, at: 16, by: delta, udp: false) }
            if proto == .udp && body.count >= 8 && body.loadBigEndian(UInt16.self, at: 6) != 0 {
                adjust(&body, at: 6, by: delta, udp: true)
            }
            if proto == .icmp && body.count >= 4, let type6 = ICMPTranslation.echoType(toIPv6: body[0]) {
                let change = InternetChecksum.pseudoHeaderSum(ipv6Source: s6, destination: d6, nextHeader: .icmpv6,
                                                              length: upperLength)
                    + OnesComplementSum(UInt16(type6) << 8) - OnesComplementSum(UInt16(body[0]) << 8)
                body[0] = type6
                adjust(&body, at: 2, by: change, udp: false)
            }
        }
        var out: [UInt8] = []
        IPv6HeaderRepr(source: s6, destination: d6, nextHeader: proto == .icmp ? .icmpv6 : proto,
                       payloadLength: upperLength, hopLimit: quote[8], trafficClass: quote[1]).encode(into: &out)
        return out + body
    }

    /// The quoted IPv6 packet as IPv4 (extension headers skipped, a Fragment header's fields kept).
    func translateQuote6to4(_ quote: [UInt8]) -> [UInt8]? {
        guard quote.count >= 40, quote[0] >> 4 == 6 else { return nil }
        let payloadLength = Int(quote.loadBigEndian(UInt16.self, at: 4))
        guard let chain = try? Self.walk(quote, end: quote.count) else { return nil }
        let s6 = IPv6Address(quote, 8)
        let d6 = IPv6Address(quote, 24)
        guard let s4 = configuration.ipv4(for: s6), let d4 = configuration.ipv4(for: d6) else { return nil }
        let upperLength = max(0, payloadLength - (chain.upperOffset - 40))
        var body = Array(quote[chain.upperOffset...])
        if (chain.fragment?.offset ?? 0) == 0 {
            let delta = (s4.wordSum + d4.wordSum) - (s6.wordSum + d6.wordSum)
            if chain.upper == .tcp && body.count >= 18 { adjust(&body, at: 16, by: delta, udp: false) }
            if chain.upper == .udp && body.count >= 8 { adjust(&body, at: 6, by: delta, udp: true) }
            if chain.upper == .icmpv6 && body.count >= 4, let type4 = ICMPTranslation.echoType(toIPv4: body[0]) {
                let change = OnesComplementSum(UInt16(type4) << 8) - OnesComplementSum(UInt16(body[0]) << 8)
                    - InternetChecksum.pseudoHeaderSum(ipv6Source: s6, destination: d6, nextHeader: .icmpv6,
                                                       length: upperLength)
                body[0] = type4
                adjust(&body, at: 2, by: change, udp: false)
            }
        }
        var header = IPv4HeaderRepr(source: s4, destination: d4,
                                    protocolNumber: chain.upper == .icmpv6 ? .icmp : chain.upper,
                                    totalLength: min(65_535, 20 + upperLength), identification: 0,
                                    dontFragment: rfc7915DontFragment(ipv4TotalLength: 20 + upperLength), timeToLive: quote[7],
                                    typeOfService: UInt8(truncatingIfNeeded: quote.loadBigEndian(UInt16.self, at: 0) >> 4))
        if let fragment = chain.fragment {
            header.identification = UInt16(truncatingIfNeeded: fragment.identification)
            header.dontFragment = false
            header.moreFragments = fragment.more
            header.fragmentOffset = fragment.offset / 8
        }
        var out: [UInt8] = []
        header.encode(into: &out)
        return out + body
    }
}

/// ICMP ↔ ICMPv6 type mappings (RFC 7915 §4.2, §5.2).
package enum ICMPTranslation {
    /// Whether a type is an error message (it quotes a packet).
    package static func isError(_ type: UInt8, version6: Bool) -> Bool {
        version6 ? type < 128 : [3, 4, 5, 11, 12].contains(type)
    }

    /// An ICMPv4 error as ICMPv6 (RFC 7915 §4.2); nil when it is dropped. `quote` gives the
    /// original length for a "fragmentation needed" without an MTU (RFC 1191 plateaus).
    static func errorToIPv6(type: UInt8, code: UInt8, rest: UInt32, quote: [UInt8]) -> (type: UInt8, code: UInt8, rest: UInt32)? {
        switch (type, code) {
        case (3, 0), (3, 1), (3, 5), (3, 6), (3, 7), (3, 8), (3, 11), (3, 12): return (1, 0, 0)  // no route
        case (3, 9), (3, 10), (3, 13), (3, 15): return (1, 1, 0)  // administratively prohibited
        case (3, 3): return (1, 4, 0)  // port unreachable
        case (3, 2): return (4, 1, 6)  // protocol unreachable: parameter problem, pointer to next header
        case (3, 4):
            var mtu = Int(rest & 0xFFFF)
            if mtu == 0 {  // a router from before RFC 1191: guess from the quoted length
                let length = quote.count >= 4 ? Int(quote[2]) << 8 | Int(quote[3]) : 0
                mtu = [65_535, 32_000, 17_914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68].first { $0 < length } ?? 68
            }
            return (2, 0, UInt32(max(1280, mtu + 20)))  // packet too big; IPv6 headers are 20 bytes longer
        case (11, _): return (3, code, 0)  // time exceeded
        case (12, 0), (12, 2):
            // Parameter problem: the pointer moves to the same field of the IPv6 header (Figure 3);
            // a field IPv6 does not have (ID, flags, checksum) cannot be pointed at, so it is dropped.
            let pointer = UInt8(truncatingIfNeeded: rest >> 24)
            let map: [UInt8: UInt32] = [0: 0, 1: 1, 2: 4, 3: 4, 8: 7, 9: 6, 12: 8, 13: 8, 14: 8, 15: 8, 16: 24, 17: 24,
                                        18: 24, 19: 24]
            return map[pointer].map { (4, 0, $0) }
        default: return nil  // source quench, redirect, a missing option, others
        }
    }

    /// An ICMPv6 error as ICMPv4 (RFC 7915 §5.2); nil when it is dropped.
    static func errorToIPv4(type: UInt8, code: UInt8, rest: UInt32) -> (type: UInt8, code: UInt8, rest: UInt32)? {
        switch (type, code) {
        case (1, 0), (1, 2), (1, 3): return (3, 1, 0)  // host unreachable
        case (1, 1): return (3, 10, 0)  // administratively prohibited
        case (1, 4): return (3, 3, 0)  // port unreachable
        case (2, _):
            let mtu = Int(min(rest, 65_535)) - 20  // IPv4 headers are 20 bytes shorter
            return (3, 4, UInt32(max(68, mtu)))  // fragmentation needed
        case (3, _): return (11, code, 0)  // time exceeded
        case (4, 1): return (3, 2, 0)  // unrecognised next header: protocol unreachable
        case (4, 0):
            // Parameter problem: the pointer moves to the same field of the IPv4 header (Figure 6).
            let pointer: UInt32? = switch rest {
            case 0: 0
            case 1: 1
            case 4, 5: 2
            case 6: 9
            case 7: 8
            case 8..<24: 12
            case 24..<40: 16
            default: nil
            }
            return pointer.map { (12, 0, $0 << 24) }
        default: return nil  // an unrecognised option, others
        }
    }

    /// Echo request 8 → 128, echo reply 0 → 129; nil for what is not (yet) translated.
    static func echoType(toIPv6 type: UInt8) -> UInt8? {
        switch type {
        case 8: 128
        case 0: 129
        default: nil
        }
    }

    /// Echo request 128 → 8, echo reply 129 → 0; nil for what is not (yet) translated.
    static func echoType(toIPv4 type: UInt8) -> UInt8? {
        switch type {
        case 128: 8
        case 129: 0
        default: nil
        }
    }
}

