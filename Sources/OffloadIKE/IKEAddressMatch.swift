import OffloadWire

/// The peer addresses a connection accepts (swanctl.conf's `remote_addrs`): addresses, prefixes
/// (`192.0.2.0/24`), a comma-separated list of those, or `%any` (every address, the default).
/// An IKE_SA_INIT from an address picks among the connections that accept it, the most specific
/// first (``rank(_:)``, as strongSwan's `ike_cfg` match: an exact host, then the longest prefix,
/// then `%any`).
public struct IKEAddressMatch: Hashable, Sendable, CustomStringConvertible {
    /// One element of the list.
    public enum Entry: Hashable, Sendable, CustomStringConvertible {
        /// Every address (`%any`, `%any4`, `%any6`, `0.0.0.0/0` and `::/0` are prefixes instead).
        case any
        /// One address.
        case host(IPAddress)
        /// An IPv4 prefix.
        case v4(IPv4Prefix)
        /// An IPv6 prefix.
        case v6(IPv6Prefix)

        /// `%any`, `192.0.2.2`, `192.0.2.0/24`.
        public var description: String {
            switch self {
            case .any: "%any"
            case .host(let a): a.description
            case .v4(let p): p.description
            case .v6(let p): p.description
            }
        }

        /// How well `address` matches (nil: not at all): `%any` 1, a prefix 2 + its length, a
        /// host 200 (above any prefix, a /128 included).
        public func rank(_ address: IPAddress) -> Int? {
            switch (self, address) {
            case (.any, _): 1
            case (.host(let h), _): h == address ? 200 : nil
            case (.v4(let p), .v4(let a)): p.contains(a) ? 2 + p.length : nil
            case (.v6(let p), .v6(let a)): p.contains(a) ? 2 + p.length : nil
            default: nil
            }
        }
    }

    /// The accepted addresses (never empty).
    public var entries: [Entry]

    /// Every address.
    public static let any = IKEAddressMatch(entries: [.any])

    /// A list of entries (an empty list is `%any`).
    public init(entries: [Entry]) { self.entries = entries.isEmpty ? [.any] : entries }

    /// One address.
    public init(_ address: IPAddress) { entries = [.host(address)] }

    /// Parses `remote_addrs`: `192.0.2.2`, `192.0.2.0/24, 2001:db8::/32`, `%any`. nil when an
    /// element is none of those (a DNS name, a range, a prefix with host bits set).
    public init?(_ text: some StringProtocol) {
        var list: [Entry] = []
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            if ["%any", "%any4", "%any6"].contains(part) {
                list.append(.any)
            } else if let a = IPAddress(part) {
                list.append(.host(a))
            } else if let p = IPv4Prefix(part) {
                list.append(.v4(p))
            } else if let p = IPv6Prefix(part) {
                list.append(.v6(p))
            } else {
                return nil
            }
        }
        guard !list.isEmpty else { return nil }
        entries = list
    }

    /// How well `address` matches the best entry (nil: it is not accepted); higher is more specific.
    public func rank(_ address: IPAddress) -> Int? { entries.compactMap { $0.rank(address) }.max() }

    /// Whether `address` is accepted.
    public func matches(_ address: IPAddress) -> Bool { rank(address) != nil }

    /// The address to send an IKE_SA_INIT to: the first entry when it is one address (as
    /// strongSwan initiates to the first of `remote_addrs`); nil when it is a prefix or `%any`.
    public var initiationAddress: IPAddress? {
        if case .host(let a)? = entries.first { a } else { nil }
    }

    /// Whether every entry that names addresses is of the family of `address` (`%any` is of both).
    public func sameFamily(as address: IPAddress) -> Bool {
        entries.allSatisfy {
            switch $0 {
            case .any: true
            case .host(let a): a.isIPv4 == address.isIPv4
            case .v4: address.isIPv4
            case .v6: !address.isIPv4
            }
        }
    }

    /// `192.0.2.2, 198.51.100.0/24`.
    public var description: String { entries.map(\.description).joined(separator: ", ") }
}
