/// An IPv4 prefix (`192.0.2.0/24`): a network address and a length; the host bits are zero.
public struct IPv4Prefix: Hashable, Sendable, CustomStringConvertible {
    /// The network address (host bits zero).
    public let address: IPv4Address
    /// The prefix length, 0...32.
    public let length: Int

    /// A prefix; nil when `length` is out of range or `address` has host bits set.
    public init?(_ address: IPv4Address, length: Int) {
        guard (0...32).contains(length), address.rawValue & ~Self.mask(length) == 0 else { return nil }
        self.address = address
        self.length = length
    }

    /// Parses `ADDRESS/LENGTH` (a bare address is a /32).
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPv4Address(parts[0]) else { return nil }
        let length = parts.count == 2 ? Int(parts[1]) : 32
        guard let length else { return nil }
        self.init(address, length: length)
    }

    /// The network mask of a length (`/24`: `0xFFFF_FF00`).
    @inlinable public static func mask(_ length: Int) -> UInt32 { length == 0 ? 0 : ~UInt32(0) << (32 - length) }

    /// Whether `a` lies in the prefix.
    @inlinable public func contains(_ a: IPv4Address) -> Bool {
        a.rawValue & Self.mask(length) == address.rawValue
    }

    /// The host bits of `a` (its offset inside the prefix).
    @inlinable public func suffix(of a: IPv4Address) -> UInt32 { a.rawValue & ~Self.mask(length) }

    /// `192.0.2.0/24`.
    public var description: String { "\(address)/\(length)" }
}

/// An IPv6 prefix (`2001:db8::/32`): a network address and a length; the host bits are zero.
public struct IPv6Prefix: Hashable, Sendable, CustomStringConvertible {
    /// The network address (host bits zero).
    public let address: IPv6Address
    /// The prefix length, 0...128.
    public let length: Int

    /// A prefix; nil when `length` is out of range or `address` has host bits set.
    public init?(_ address: IPv6Address, length: Int) {
        guard (0...128).contains(length) else { return nil }
        let (high, low) = Self.mask(length)
        guard address.high & ~high == 0, address.low & ~low == 0 else { return nil }
        self.address = address
        self.length = length
    }

    /// Parses `ADDRESS/LENGTH` (a bare address is a /128).
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPv6Address(parts[0]) else { return nil }
        let length = parts.count == 2 ? Int(parts[1]) : 128
        guard let length else { return nil }
        self.init(address, length: length)
    }

    /// The network mask of a length, as two 64-bit halves.
    @inlinable public static func mask(_ length: Int) -> (high: UInt64, low: UInt64) {
        let high: UInt64 = length >= 64 ? ~0 : length == 0 ? 0 : ~UInt64(0) << (64 - length)
        let low: UInt64 = length <= 64 ? 0 : length == 128 ? ~0 : ~UInt64(0) << (128 - length)
        return (high, low)
    }

    /// Whether `a` lies in the prefix.
    @inlinable public func contains(_ a: IPv6Address) -> Bool {
        let (high, low) = Self.mask(length)
        return a.high & high == address.high && a.low & low == address.low
    }

    /// `2001:db8::/32`.
    public var description: String { "\(address)/\(length)" }
}
