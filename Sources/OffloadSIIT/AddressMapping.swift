import OffloadWire

/// The IPv4-embedded IPv6 addresses of RFC 6052 §2.2: an IPv6 prefix of length 32, 40, 48, 56,
/// 64 or 96, the IPv4 address in the bits after it, skipping bits 64..<72 (the "u" octet, zero).
///
/// ```text
/// /32  | prefix (32)  | v4 (32)      | u | suffix                 |
/// /40  | prefix (40)      | v4 (24)  | u | v4 (8) | suffix        |
/// /64  | prefix (64)                 | u | v4 (32)   | suffix     |
/// /96  | prefix (96)                                   | v4 (32)  |
/// ```
/// `64:ff9b::/96` is the well-known prefix (§2.1).
public struct RFC6052Prefix: Hashable, Sendable, CustomStringConvertible {
    /// The prefix.
    public let prefix: IPv6Prefix

    /// The well-known prefix `64:ff9b::/96`.
    public static let wellKnown = RFC6052Prefix(IPv6Prefix(IPv6Address(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), length: 96)!)!

    /// The lengths RFC 6052 allows.
    public static let lengths: Set<Int> = [32, 40, 48, 56, 64, 96]

    /// A translation prefix; nil for a length RFC 6052 does not allow, or when bits 64..<72 (the
    /// "u" octet, which RFC 6052 §2.2 reserves) are not zero.
    public init?(_ prefix: IPv6Prefix) {
        guard Self.lengths.contains(prefix.length), prefix.address.low >> 56 == 0 else { return nil }
        self.prefix = prefix
    }

    /// Parses `PREFIX/LENGTH` (`64:ff9b::/96`, `2001:db8:100::/40`).
    public init?(_ text: some StringProtocol) {
        guard let prefix = IPv6Prefix(text) else { return nil }
        self.init(prefix)
    }

    /// The byte positions (0...15) of the IPv4 address's four bytes in the IPv6 address.
    @inlinable var positions: (Int, Int, Int, Int) {
        switch prefix.length {
        case 32: (4, 5, 6, 7)
        case 40: (5, 6, 7, 9)
        case 48: (6, 7, 9, 10)
        case 56: (7, 9, 10, 11)
        case 64: (9, 10, 11, 12)
        default: (12, 13, 14, 15)
        }
    }

    /// The IPv6 address that embeds `v4`.
    @inlinable public func embedding(_ v4: IPv4Address) -> IPv6Address {
        if prefix.length == 96 {
            return IPv6Address(high: prefix.address.high, low: prefix.address.low | UInt64(v4.rawValue))
        }
        var high = prefix.address.high
        var low = prefix.address.low
        let p = positions
        for (i, position) in [p.0, p.1, p.2, p.3].enumerated() {
            let byte = UInt64((v4.rawValue >> (24 - 8 * i)) & 0xFF)
            if position < 8 { high |= byte << (56 - 8 * position) } else { low |= byte << (56 - 8 * (position - 8)) }
        }
        return IPv6Address(high: high, low: low)
    }

    /// The IPv4 address `v6` embeds, when `v6` lies inside the prefix (the suffix is not checked).
    @inlinable public func extracting(_ v6: IPv6Address) -> IPv4Address? {
        guard prefix.contains(v6) else { return nil }
        if prefix.length == 96 { return IPv4Address(rawValue: UInt32(truncatingIfNeeded: v6.low)) }
        let p = positions
        var value: UInt32 = 0
        for position in [p.0, p.1, p.2, p.3] {
            let byte = position < 8 ? v6.high >> (56 - 8 * position) : v6.low >> (56 - 8 * (position - 8))
            value = value << 8 | UInt32(byte & 0xFF)
        }
        return IPv4Address(rawValue: value)
    }

    /// `64:ff9b::/96`.
    public var description: String { prefix.description }
}

/// The Explicit Address Mapping table of RFC 7757: pairs of an IPv6 and an IPv4 prefix with the
/// same number of host bits; an address maps to the other family by keeping its host bits. The
/// longest matching prefix wins; the table is consulted before the RFC 6052 prefix (§3.2).
public struct EAMTable: Hashable, Sendable {
    /// One entry.
    public struct Entry: Hashable, Sendable, CustomStringConvertible {
        /// The IPv6 side.
        public let ipv6: IPv6Prefix
        /// The IPv4 side.
        public let ipv4: IPv4Prefix

        /// An entry; nil when the IPv4 prefix's host bits do not fit after the IPv6 prefix. When the
        /// IPv6 side has more host bits, the IPv4 host bits follow the IPv6 prefix directly and the
        /// rest stays zero (RFC 7757 §3.2, as Jool does: `192.0.2.0/24=2001:db8:1c0:2::/72` maps
        /// 192.0.2.33 to `2001:db8:1c0:2:21::`).
        public init?(ipv6: IPv6Prefix, ipv4: IPv4Prefix) {
            guard ipv6.length + (32 - ipv4.length) <= 128 else { return nil }
            self.ipv6 = ipv6
            self.ipv4 = ipv4
        }

        /// Where the IPv4 host bits sit in the IPv6 address: their count, and the shift from the right.
        var hostBits: Int { 32 - ipv4.length }
        var shift: Int { 128 - ipv6.length - hostBits }

        /// Parses `V6PREFIX=V4PREFIX` (or the two in either order, separated by `=`).
        public init?(_ text: some StringProtocol) {
            let parts = text.split(separator: "=")
            guard parts.count == 2 else { return nil }
            if let v6 = IPv6Prefix(parts[0]), let v4 = IPv4Prefix(parts[1]) {
                self.init(ipv6: v6, ipv4: v4)
            } else if let v4 = IPv4Prefix(parts[0]), let v6 = IPv6Prefix(parts[1]) {
                self.init(ipv6: v6, ipv4: v4)
            } else {
                return nil
            }
        }

        /// `2001:db8::/120=192.0.2.0/24`.
        public var description: String { "\(ipv6)=\(ipv4)" }
    }

    /// The entries, longest prefixes first.
    public private(set) var entries: [Entry] = []

    /// Creates a table.
    public init(_ entries: [Entry] = []) {
        for entry in entries { add(entry) }
    }

    /// Adds an entry.
    public mutating func add(_ entry: Entry) {
        entries.append(entry)
        entries.sort { $0.ipv4.length > $1.ipv4.length }
    }

    /// Whether the table is empty.
    public var isEmpty: Bool { entries.isEmpty }

    /// The IPv4 address an IPv6 address maps to, if an entry covers it.
    public func ipv4(for a: IPv6Address) -> IPv4Address? {
        for e in entries where e.ipv6.contains(a) {
            let bits = Self.shiftRight(a, by: e.shift) & ~IPv4Prefix.mask(e.ipv4.length)
            return IPv4Address(rawValue: e.ipv4.address.rawValue | bits)
        }
        return nil
    }

    /// The low 32 bits of `a >> shift` (a 128-bit shift).
    static func shiftRight(_ a: IPv6Address, by shift: Int) -> UInt32 {
        if shift >= 64 { return UInt32(truncatingIfNeeded: a.high >> (shift - 64)) }
        if shift == 0 { return UInt32(truncatingIfNeeded: a.low) }
        return UInt32(truncatingIfNeeded: a.low >> shift | a.high << (64 - shift))
    }

    /// A 32-bit value shifted left by `shift` inside 128 bits, as (high, low).
    static func shiftLeft(_ value: UInt32, by shift: Int) -> (high: UInt64, low: UInt64) {
        let v = UInt64(value)
        if shift >= 64 { return (v << (shift - 64), 0) }
        if shift == 0 { return (0, v) }
        return (v >> (64 - shift), v << shift)
    }

    /// The IPv6 address an IPv4 address maps to, if an entry covers it.
    public func ipv6(for a: IPv4Address) -> IPv6Address? {
        for e in entries where e.ipv4.contains(a) {
            let (high, low) = Self.shiftLeft(e.ipv4.suffix(of: a), by: e.shift)
            return IPv6Address(high: e.ipv6.address.high | high, low: e.ipv6.address.low | low)
        }
        return nil
    }

    /// Whether an IPv4 address is the IPv4 face of an IPv6 node (hairpinning, RFC 7757 §4.2).
    public func coversIPv4(_ a: IPv4Address) -> Bool { entries.contains { $0.ipv4.contains(a) } }
}

/// How a ``SIITTranslator`` maps addresses and what it sends errors from.
public struct SIITConfiguration: Hashable, Sendable {
    /// The RFC 6052 prefix (nil: EAM only).
    public var pool6: RFC6052Prefix?
    /// Explicit address mappings (RFC 7757), consulted first.
    public var eam = EAMTable()
    /// RFC 6791: sources for ICMPv4 errors translated from IPv6 routers whose address does not map
    /// (nil: the translator's own IPv4 address).
    public var rfc6791v4: IPv4Address?
    /// The same for ICMPv6 errors from IPv4 routers that do not map (nil: the translator's own IPv6 address).
    public var rfc6791v6: IPv6Address?
    /// The translator's own addresses: the source of the errors it sends itself.
    public var ownIPv4 = IPv4Address(192, 0, 2, 254)
    /// The translator's own IPv6 address.
    public var ownIPv6 = IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe)
    /// RFC 7915 §4: IPv4 packets without DF are fragmented so that no IPv6 packet is larger than this.
    public var lowestIPv6MTU = 1280
    /// Compute the checksum of IPv4 UDP datagrams without one (RFC 7915 §4.5) instead of dropping them.
    public var amendUDPChecksumZero = false

    /// A configuration with a prefix.
    public init(pool6: RFC6052Prefix? = .wellKnown) { self.pool6 = pool6 }

    /// IPv6 → IPv4 for an address (EAM first, then the prefix).
    @inlinable public func ipv4(for a: IPv6Address) -> IPv4Address? {
        if !eam.isEmpty, let mapped = eam.ipv4(for: a) { return mapped }
        return pool6?.extracting(a)
    }

    /// IPv4 → IPv6 for an address (EAM first, then the prefix).
    @inlinable public func ipv6(for a: IPv4Address) -> IPv6Address? {
        if !eam.isEmpty, let mapped = eam.ipv6(for: a) { return mapped }
        return pool6?.embedding(a)
    }
}
