import OffloadWire

/// Builds the ICMP errors a router sends back to a packet's source.
///
/// ICMPv4 (RFC 792, RFC 1191 for the next-hop MTU, RFC 1812 §4.3.2.3 for the quote): the quote is
/// as much of the invoking IP packet as fits in a 576-byte error. ICMPv6 (RFC 4443 §2.4(c)): as
/// much as fits in the minimum MTU, 1280. No error is sent about an ICMP error, a non-first
/// fragment, or a packet from an unspecified or multicast source (RFC 1122 §3.2.2, RFC 4443 §2.4(e)).
public enum ICMPErrorBuilder {
    /// The largest ICMPv4 error, in bytes (Linux `icmp_send`: 576).
    public static let maximumIPv4ErrorLength = 576
    /// The largest ICMPv6 error (the IPv6 minimum MTU).
    public static let maximumIPv6ErrorLength = 1280

    /// An ICMPv4 error about `invoking` (an IPv4 packet, from its IP header), from `source`.
    /// - Returns: the IP packet of the error, or nil where no error may be sent.
    public static func ipv4(type: UInt8, code: UInt8, restOfHeader: UInt32, quoting invoking: RawSpan,
                            source: IPv4Address, identification: UInt16 = 0) -> [UInt8]? {
        guard let original = try? IPv4Packet(validating: invoking) else { return nil }
        if original.fragmentOffset != 0 { return nil }
        let origin = original.source
        if origin.isUnspecified || origin.isMulticast || origin.isLimitedBroadcast { return nil }
        if original.protocolNumber == .icmp {
            let icmpType = unsafe original.payload.byteCount > 0 ? original.payload.withUnsafeBytes { unsafe $0[0] } : 0
            if [3, 4, 5, 11, 12].contains(icmpType) { return nil }  // never an error about an error
        }
        let quoteLength = min(original.totalLength, maximumIPv4ErrorLength - 28)
        var message: [UInt8] = [type, code, 0, 0]
        message.appendBigEndian(restOfHeader)
        unsafe invoking.extracting(first: quoteLength).withUnsafeBytes { unsafe message.append(contentsOf: $0) }
        unsafe message.storeBigEndian(InternetChecksum.checksum(message.span.bytes), at: 2)
        var packet: [UInt8] = []
        IPv4HeaderRepr(source: source, destination: origin, protocolNumber: .icmp, totalLength: 20 + message.count,
                       identification: identification, dontFragment: false, timeToLive: 64,
                       typeOfService: 0xC0).encode(into: &packet)  // CS6, as Linux sends ICMP errors
        return packet + message
    }

    /// An ICMPv6 error about `invoking` (an IPv6 packet), from `source`.
    public static func ipv6(type: UInt8, code: UInt8, restOfHeader: UInt32, quoting invoking: RawSpan,
                            source: IPv6Address) -> [UInt8]? {
        guard let original = try? IPv6Packet(validating: invoking) else { return nil }
        let origin = original.source
        if origin.isUnspecified || origin.isMulticast { return nil }
        if original.upperLayerProtocol == .icmpv6, original.upperLayerPayload.byteCount > 0,
            unsafe original.upperLayerPayload.withUnsafeBytes({ unsafe $0[0] }) < 128
        {
            return nil
        }
        let quoteLength = min(original.totalLength, maximumIPv6ErrorLength - 48)
        var message: [UInt8] = [type, code, 0, 0]
        message.appendBigEndian(restOfHeader)
        unsafe invoking.extracting(first: quoteLength).withUnsafeBytes { unsafe message.append(contentsOf: $0) }
        let pseudo = InternetChecksum.pseudoHeaderSum(ipv6Source: source, destination: origin, nextHeader: .icmpv6,
                                                      length: message.count)
        unsafe message.storeBigEndian(InternetChecksum.checksum(message.span.bytes, initial: pseudo), at: 2)
        var packet: [UInt8] = []
        IPv6HeaderRepr(source: source, destination: origin, nextHeader: .icmpv6, payloadLength: message.count,
                       hopLimit: 64).encode(into: &packet)
        return packet + message
    }
}

/// Why a packet cannot be fragmented.
public enum FragmentationError: Error, Hashable, Sendable {
    /// Not a valid IPv4 packet.
    case notIPv4
    /// DF is set.
    case dontFragment
    /// The MTU cannot hold the header plus 8 bytes of data.
    case mtuTooSmall(Int)
}

/// IPv4 fragmentation (RFC 791 §3.2; Linux `ip_do_fragment`).
public enum IPv4Fragmenter {
    /// Splits an IPv4 packet into fragments of at most `mtu` bytes.
    ///
    /// Data per fragment is a multiple of 8 bytes except in the last; every fragment keeps the
    /// ID; MF is set on all but the last (the last keeps the original MF, so fragmenting a
    /// fragment works); the first fragment carries all options, later ones only those with the
    /// "copied" bit.
    /// - Parameter packet: the IP packet, from its header (no link header).
    public static func fragment(_ packet: RawSpan, mtu: Int) throws(FragmentationError) -> [[UInt8]] {
        guard let ip = try? IPv4Packet(validating: packet) else { throw .notIPv4 }
        guard !ip.dontFragment else { throw .dontFragment }
        if ip.totalLength <= mtu { return unsafe [packet.extracting(first: ip.totalLength).withUnsafeBytes { unsafe Array($0) }] }
        let firstRepr = IPv4HeaderRepr(parsing: ip)
        var laterRepr = firstRepr
        laterRepr.options = copiedOptions(firstRepr.options)
        let payload = unsafe ip.payload.withUnsafeBytes { unsafe Array($0) }
        var fragments: [[UInt8]] = []
        var offset = 0
        while offset < payload.count {
            var header = offset == 0 ? firstRepr : laterRepr
            let room = (mtu - header.encodedLength) & ~7
            guard room >= 8 else { throw .mtuTooSmall(mtu) }
            let length = min(room, payload.count - offset)
            let last = offset + length == payload.count
            header.totalLength = header.encodedLength + length
            header.fragmentOffset = firstRepr.fragmentOffset + offset / 8
            header.moreFragments = last ? firstRepr.moreFragments : true
            var bytes: [UInt8] = []
            header.encode(into: &bytes)
            bytes += payload[offset..<(offset + length)]
            fragments.append(bytes)
            offset += length
        }
        return fragments
    }

    /// The options with the "copied" flag (0x80), padded to 4 bytes.
    static func copiedOptions(_ options: [UInt8]) -> [UInt8] {
        var result: [UInt8] = []
        var i = 0
        while i < options.count {
            let kind = options[i]
            if kind == 0 { break }
            if kind == 1 {
                i += 1
                continue
            }
            guard i + 1 < options.count else { break }
            let length = Int(options[i + 1])
            guard length >= 2, i + length <= options.count else { break }
            if kind & 0x80 != 0 { result += options[i..<(i + length)] }
            i += length
        }
        while result.count % 4 != 0 { result.append(0) }
        return result
    }
}

/// A token bucket for ICMP errors (Linux: `icmp_msgs_per_sec` 1000, `icmp_msgs_burst` 50).
public struct ICMPRateLimiter: Hashable, Sendable {
    /// Tokens added per second.
    public var perSecond: Int
    /// The bucket size.
    public var burst: Int
    var tokens: Double
    var last: UInt64?

    /// Creates a limiter with a full bucket.
    public init(perSecond: Int = 1000, burst: Int = 50) {
        self.perSecond = perSecond
        self.burst = burst
        tokens = Double(burst)
    }

    /// Takes a token at `now` (nanoseconds); `false` when the bucket is empty.
    public mutating func allow(now: UInt64) -> Bool {
        if let last, now > last {
            tokens = min(Double(burst), tokens + Double(now - last) * Double(perSecond) / 1e9)
        }
        last = max(last ?? now, now)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
