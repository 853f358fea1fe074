// Addresses: IPv4, IPv6 and either, with the text forms every network tool prints
// (dotted quad, RFC 5952 for IPv6), parsing, and the scopes a router must not forward.

/// An IPv4 address, stored as the 32-bit number of its dotted quad (`1.2.3.4` is `0x01020304`).
public struct IPv4Address: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The address as a number.
    public var rawValue: UInt32
    /// Wraps a number.
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Builds an address from its four octets.
    /// The address at `offset` in `bytes`. - Precondition: 4 bytes there.
    @inlinable public init(_ bytes: [UInt8], _ offset: Int) {
        self.init(rawValue: bytes.loadBigEndian(UInt32.self, at: offset))
    }

    /// The address at `offset` in `bytes`. - Precondition: 4 bytes there.
    @inlinable public init(_ bytes: UnsafeRawBufferPointer, _ offset: Int) {
        self.init(rawValue: unsafe UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    }

    /// The one's complement sum of the address's two words (for pseudo-headers).
    @inlinable public var wordSum: OnesComplementSum {
        OnesComplementSum(UInt16(truncatingIfNeeded: rawValue >> 16)) + OnesComplementSum(UInt16(truncatingIfNeeded: rawValue))
    }

    @inlinable public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        rawValue = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses dotted-quad text (`192.0.2.1`): four decimal octets, no leading zeros beyond a single
    /// `0` (they would be octal to `inet_aton`), nothing else.
    public init?(_ text: some StringProtocol) {
        var value: UInt32 = 0
        var octets = 0
        for part in text.split(separator: ".", omittingEmptySubsequences: false) {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                part.count == 1 || part.first != "0", let octet = UInt8(part)
            else { return nil }
            value = value << 8 | UInt32(octet)
            octets += 1
        }
        guard octets == 4 else { return nil }
        rawValue = value
    }

    /// Dotted-quad text.
    public var description: String {
        "\(rawValue >> 24).\(rawValue >> 16 & 0xFF).\(rawValue >> 8 & 0xFF).\(rawValue & 0xFF)"
    }

    /// Orders by numeric value.
    @inlinable public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    /// 224.0.0.0/4 (RFC 5771).
    @inlinable public var isMulticast: Bool { rawValue >> 28 == 0xE }
    /// 169.254.0.0/16 (RFC 3927).
    @inlinable public var isLinkLocal: Bool { rawValue >> 16 == 0xA9FE }
    /// 127.0.0.0/8 (RFC 1122 §3.2.1.3).
    @inlinable public var isLoopback: Bool { rawValue >> 24 == 127 }
    /// 255.255.255.255, the limited broadcast (RFC 919).
    @inlinable public var isLimitedBroadcast: Bool { rawValue == 0xFFFF_FFFF }
    /// 240.0.0.0/4 (reserved, RFC 1112 §4) and the limited broadcast.
    @inlinable public var isReserved: Bool { rawValue >> 28 == 0xF }
    /// 0.0.0.0.
    @inlinable public var isUnspecified: Bool { rawValue == 0 }
}

/// An IPv6 address: two 64-bit halves, each the number of its eight bytes in network order.
public struct IPv6Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Bytes 0..<8 as a big-endian number.
    public var high: UInt64
    /// Bytes 8..<16 as a big-endian number.
    public var low: UInt64
    /// Builds an address from its halves.
    @inlinable public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }
    /// Builds an address from eight 16-bit groups, as written in text.
    public init(_ groups: UInt16...) {
        precondition(groups.count == 8, "an IPv6 address has eight groups")
        self.init(groups: groups)
    }

    init(groups: [UInt16]) {
        var h: UInt64 = 0
        var l: UInt64 = 0
        for i in 0..<4 { h = h << 16 | UInt64(groups[i]) }
        for i in 4..<8 { l = l << 16 | UInt64(groups[i]) }
        self.init(high: h, low: l)
    }

    /// The eight 16-bit groups, first to last.
    public var groups: [UInt16] {
        (0..<8).map { i in
            let half = i < 4 ? high : low
            return UInt16(truncatingIfNeeded: half >> (16 * UInt64(3 - i % 4)))
        }
    }

    /// Parses the text forms of RFC 4291 §2.2: eight groups of up to four hex digits, at most one
    /// `::` standing for one or more zero groups, and an embedded dotted quad as the last 32 bits
    /// (`::ffff:192.0.2.1`). Upper and lower case are accepted; zone indexes (`%eth0`) are not.
    public init?(_ text: some StringProtocol) {
        let s = String(text)
        guard !s.isEmpty, s.utf8.count <= 45 else { return nil }
        func groups(_ part: Substring) -> [UInt16]? {
            if part.isEmpty { return [] }
            var out: [UInt16] = []
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            for (i, piece) in pieces.enumerated() {
                if i == pieces.count - 1, piece.contains(".") {
                    guard let v4 = IPv4Address(piece) else { return nil }
                    out.append(UInt16(v4.rawValue >> 16))
                    out.append(UInt16(v4.rawValue & 0xFFFF))
                    continue
                }
                guard !piece.isEmpty, piece.count <= 4, piece.allSatisfy(\.isHexDigit),
                    let group = UInt16(piece, radix: 16)
                else { return nil }
                out.append(group)
            }
            return out
        }
        let halves = s.components(separatedByDoubleColon: ())
        switch halves.count {
        case 1:
            guard let all = groups(halves[0]), all.count == 8 else { return nil }
            self.init(groups: all)
        case 2:
            guard let head = groups(halves[0]), let tail = groups(halves[1]), head.count + tail.count <= 7 else {
                return nil
            }
            self.init(groups: head + [UInt16](repeating: 0, count: 8 - head.count - tail.count) + tail)
        default:
            return nil
        }
    }

    /// The address at `offset` in `bytes`. - Precondition: 16 bytes there.
    @inlinable public init(_ bytes: [UInt8], _ offset: Int) {
        self.init(high: bytes.loadBigEndian(UInt64.self, at: offset), low: bytes.loadBigEndian(UInt64.self, at: offset + 8))
    }

    /// The address at `offset` in `bytes`. - Precondition: 16 bytes there.
    @inlinable public init(_ bytes: UnsafeRawBufferPointer, _ offset: Int) {
        self.init(high: unsafe UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)),
                  low: unsafe UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)))
    }

    /// The one's complement sum of the address's eight words (for pseudo-headers).
    @inlinable public var wordSum: OnesComplementSum {
        var s = OnesComplementSum.zero
        var h = high
        var l = low
        for _ in 0..<4 {
            s += OnesComplementSum(UInt16(truncatingIfNeeded: h))
            s += OnesComplementSum(UInt16(truncatingIfNeeded: l))
            h >>= 16
            l >>= 16
        }
        return s
    }

    /// RFC 5952 text: lower-case hex without leading zeros, the longest run of two or more zero
    /// groups (the first of equal runs) shortened to `::`, and IPv4-mapped addresses
    /// (`::ffff:0:0/96`) with a dotted quad, as `inet_ntop` prints them.
    public var description: String {
        let g = groups
        if high == 0 && low >> 32 == 0xFFFF {
            return "::ffff:" + IPv4Address(rawValue: UInt32(truncatingIfNeeded: low)).description
        }
        var bestStart = -1
        var bestLength = 1
        var i = 0
        while i < 8 {
            guard g[i] == 0 else {
                i += 1
                continue
            }
            var j = i
            while j < 8 && g[j] == 0 { j += 1 }
            if j - i > bestLength {
                bestStart = i
                bestLength = j - i
            }
            i = j
        }
        func hex(_ range: Range<Int>) -> String { range.map { String(g[$0], radix: 16) }.joined(separator: ":") }
        guard bestStart >= 0 else { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }

    /// Orders by numeric value.
    @inlinable public static func < (a: Self, b: Self) -> Bool { (a.high, a.low) < (b.high, b.low) }

    /// ff00::/8 (RFC 4291 §2.7).
    @inlinable public var isMulticast: Bool { high >> 56 == 0xFF }
    /// fe80::/10 (RFC 4291 §2.5.6).
    @inlinable public var isLinkLocal: Bool { high >> 54 == 0x3FA }
    /// ff02::/16 and other link-scope multicast (scope 2, RFC 4291 §2.7).
    @inlinable public var isLinkScopeMulticast: Bool { isMulticast && (high >> 48) & 0xF == 2 }
    /// ::1.
    @inlinable public var isLoopback: Bool { high == 0 && low == 1 }
    /// ::.
    @inlinable public var isUnspecified: Bool { high == 0 && low == 0 }
    /// ::ffff:0:0/96 (RFC 4291 §2.5.5.2): the IPv4 address inside, or nil.
    @inlinable public var mappedIPv4: IPv4Address? {
        high == 0 && low >> 32 == 0xFFFF ? IPv4Address(rawValue: UInt32(truncatingIfNeeded: low)) : nil
    }
}

extension String {
    /// Splits at "::" (at most once meaningful; more pieces mean invalid text).
    fileprivate func components(separatedByDoubleColon _: Void) -> [Substring] {
        var pieces: [Substring] = []
        var start = startIndex
        var i = startIndex
        while i < endIndex {
            let next = index(after: i)
            if self[i] == ":" && next < endIndex && self[next] == ":" {
                pieces.append(self[start..<i])
                start = index(after: next)
                i = start
                // ":::" is invalid: the remainder then starts with ':' and fails group parsing.
                continue
            }
            i = next
        }
        pieces.append(self[start..<endIndex])
        return pieces
    }
}

/// An IPv4 or an IPv6 address: the one address type flows, findings and statistics share.
public enum IPAddress: Hashable, Sendable, Comparable, Codable, CustomStringConvertible {
    /// IPv4.
    case v4(IPv4Address)
    /// IPv6.
    case v6(IPv6Address)

    /// Parses IPv4 dotted-quad or IPv6 text (RFC 4291 §2.2).
    public init?(_ text: some StringProtocol) {
        if let a = IPv4Address(text) {
            self = .v4(a)
        } else if let a = IPv6Address(text) {
            self = .v6(a)
        } else {
            return nil
        }
    }

    /// Dotted quad, or RFC 5952 text.
    public var description: String {
        switch self {
        case .v4(let a): a.description
        case .v6(let a): a.description
        }
    }

    /// Whether it is IPv4.
    @inlinable public var isIPv4: Bool { if case .v4 = self { true } else { false } }
    /// Whether it is 0.0.0.0 or ::.
    @inlinable public var isUnspecified: Bool {
        switch self {
        case .v4(let a): a.isUnspecified
        case .v6(let a): a.isUnspecified
        }
    }

    /// Orders IPv4 before IPv6, then by value.
    public static func < (a: Self, b: Self) -> Bool {
        switch (a, b) {
        case (.v4(let x), .v4(let y)): x < y
        case (.v6(let x), .v6(let y)): x < y
        case (.v4, .v6): true
        case (.v6, .v4): false
        }
    }

    /// Multicast (IPv4 224/4, IPv6 ff00::/8).
    public var isMulticast: Bool {
        switch self {
        case .v4(let a): a.isMulticast
        case .v6(let a): a.isMulticast
        }
    }
    /// Link-local unicast (169.254/16, fe80::/10).
    public var isLinkLocal: Bool {
        switch self {
        case .v4(let a): a.isLinkLocal
        case .v6(let a): a.isLinkLocal
        }
    }
    /// Loopback (127/8, ::1).
    public var isLoopback: Bool {
        switch self {
        case .v4(let a): a.isLoopback
        case .v6(let a): a.isLoopback
        }
    }

    /// Encodes as text (`"192.0.2.1"`, `"2001:db8::1"`).
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// Decodes from text.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let address = IPAddress(text) else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not an IP address: \(text)")
        }
        self = address
    }
}
