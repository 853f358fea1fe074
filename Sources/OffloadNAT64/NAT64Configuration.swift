import OffloadSIIT
import OffloadWire

/// The three kinds of traffic a stateful NAT64 keeps state for (RFC 6146 §3): TCP, UDP, and ICMP
/// queries (echo), whose identifier plays the part of the port.
public enum NAT64Protocol: Int, CaseIterable, Hashable, Sendable, Codable, Comparable {
    /// TCP.
    case tcp = 0
    /// UDP.
    case udp = 1
    /// ICMP and ICMPv6 echo (query identifier as the port).
    case icmp = 2

    /// `tcp`, `udp`, `icmp`: the name in counters, status and on the command line.
    public var name: String {
        switch self {
        case .tcp: "tcp"
        case .udp: "udp"
        case .icmp: "icmp"
        }
    }

    /// Parses `tcp`, `udp` or `icmp`.
    public init?(name: some StringProtocol) {
        guard let found = Self.allCases.first(where: { $0.name == name.lowercased() }) else { return nil }
        self = found
    }

    /// Orders by raw value.
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// One entry of the pool4 (RFC 6146 §3.5.1.1): a range of IPv4 addresses and, on each, a range of
/// ports (identifiers for ICMP) that the translator hands out, for some or all protocols.
public struct Pool4Entry: Hashable, Sendable, CustomStringConvertible {
    /// The first and last address.
    public var addresses: ClosedRange<UInt32>
    /// The first and last port.
    public var ports: ClosedRange<UInt16>
    /// The protocols the entry serves (all three when the text names none).
    public var protocols: Set<NAT64Protocol>

    /// An entry.
    public init(addresses: ClosedRange<UInt32>, ports: ClosedRange<UInt16> = 1024...65535,
                protocols: Set<NAT64Protocol> = Set(NAT64Protocol.allCases)) {
        self.addresses = addresses
        self.ports = ports
        self.protocols = protocols
    }

    /// Parses `[PROTO=]ADDRESS[-ADDRESS | /LENGTH][:PORT[-PORT]]`: `198.51.100.1`,
    /// `198.51.100.1-198.51.100.4:1024-65535`, `198.51.100.0/30`, `tcp=192.0.2.1:20000-29999`.
    /// At most 65 536 addresses; a port range of one port at least. nil on anything else.
    public init?(_ text: some StringProtocol) {
        var rest = Substring(text)
        var protocols = Set(NAT64Protocol.allCases)
        if let equals = rest.firstIndex(of: "=") {
            guard let p = NAT64Protocol(name: rest[..<equals]) else { return nil }
            protocols = [p]
            rest = rest[rest.index(after: equals)...]
        }
        var ports: ClosedRange<UInt16> = 1024...65535
        if let colon = rest.firstIndex(of: ":") {
            let portText = rest[rest.index(after: colon)...]
            rest = rest[..<colon]
            let bounds = portText.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count), let low = UInt16(bounds[0]), let high = UInt16(bounds.last!), low <= high
            else { return nil }
            ports = low...high
        }
        let addresses: ClosedRange<UInt32>
        if rest.contains("/") {
            guard let prefix = IPv4Prefix(rest), prefix.length >= 16 else { return nil }
            let first = prefix.address.rawValue & IPv4Prefix.mask(prefix.length)
            addresses = first...(first | ~IPv4Prefix.mask(prefix.length))
        } else {
            let bounds = rest.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count), let low = IPv4Address(bounds[0]), let high = IPv4Address(bounds.last!),
                low <= high, high.rawValue - low.rawValue < 65_536
            else { return nil }
            addresses = low.rawValue...high.rawValue
        }
        self.init(addresses: addresses, ports: ports, protocols: protocols)
    }

    /// Whether the entry holds `address`.
    public func contains(_ address: IPv4Address) -> Bool { addresses.contains(address.rawValue) }

    /// `tcp=198.51.100.1-198.51.100.4:1024-65535`.
    public var description: String {
        let p = protocols.count == NAT64Protocol.allCases.count ? ""
            : protocols.sorted().map(\.name).joined(separator: ",") + "="
        let a = addresses.count == 1 ? "\(IPv4Address(rawValue: addresses.lowerBound))"
            : "\(IPv4Address(rawValue: addresses.lowerBound))-\(IPv4Address(rawValue: addresses.upperBound))"
        return "\(p)\(a):\(ports.lowerBound)-\(ports.upperBound)"
    }
}

/// A binding the operator fixes (RFC 6146 §3.5.1 "static BIB entries"): an IPv6 host's port reached
/// from IPv4 at a pool4 address and port, whether or not the host has sent anything.
public struct NAT64StaticBinding: Hashable, Sendable, CustomStringConvertible {
    /// The protocol.
    public var proto: NAT64Protocol
    /// The IPv6 side (X', x).
    public var address6: IPv6Address
    /// The IPv6 port (the identifier for ICMP).
    public var port6: UInt16
    /// The IPv4 side (T, t).
    public var address4: IPv4Address
    /// The IPv4 port.
    public var port4: UInt16

    /// A binding.
    public init(proto: NAT64Protocol, address6: IPv6Address, port6: UInt16, address4: IPv4Address, port4: UInt16) {
        self.proto = proto
        self.address6 = address6
        self.port6 = port6
        self.address4 = address4
        self.port4 = port4
    }

    /// Parses `PROTO=[V6]:PORT=V4:PORT`: `tcp=[2001:db8::5]:80=198.51.100.1:8080`.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "=", omittingEmptySubsequences: false)
        guard parts.count == 3, let proto = NAT64Protocol(name: parts[0]) else { return nil }
        let six = parts[1]
        guard six.first == "[", let close = six.lastIndex(of: "]"),
            let a6 = IPv6Address(six[six.index(after: six.startIndex)..<close]),
            six[close...].hasPrefix("]:"), let p6 = UInt16(six[six.index(close, offsetBy: 2)...])
        else { return nil }
        let four = parts[2].split(separator: ":", omittingEmptySubsequences: false)
        guard four.count == 2, let a4 = IPv4Address(four[0]), let p4 = UInt16(four[1]) else { return nil }
        self.init(proto: proto, address6: a6, port6: p6, address4: a4, port4: p4)
    }

    /// `tcp=[2001:db8::5]:80=198.51.100.1:8080`.
    public var description: String { "\(proto.name)=[\(address6)]:\(port6)=\(address4):\(port4)" }
}

/// How the translator lets IPv4 hosts reach an IPv6 host's binding (RFC 6146 §1.2.3, RFC 4787 §5).
public enum NAT64Filtering: String, Hashable, Sendable, Codable, CaseIterable {
    /// Any IPv4 host may use a binding once it exists (RFC 4787's endpoint-independent filtering,
    /// Jool's default).
    case endpointIndependent = "endpoint-independent"
    /// Only IPv4 hosts the IPv6 host has sent to (any port) may use its binding.
    case addressDependent = "address-dependent"
}

/// The session lifetimes of RFC 6146 §4, in nanoseconds of the translator's clock.
public struct NAT64Timeouts: Hashable, Sendable, Codable {
    /// One second.
    public static let second: UInt64 = 1_000_000_000
    /// UDP_DEFAULT, 5 minutes (RFC 4787 REQ-5: at least 2).
    public var udp: UInt64 = 300 * second
    /// TCP_EST, 2 hours 4 minutes (RFC 5382 REQ-5).
    public var tcpEstablished: UInt64 = 7_440 * second
    /// TCP_TRANS, 4 minutes: opening, closing, reset.
    public var tcpTransitory: UInt64 = 240 * second
    /// TCP_INCOMING_SYN, 6 seconds: how long an unsolicited IPv4 SYN is kept (RFC 5382 REQ-4).
    public var tcpIncomingSyn: UInt64 = 6 * second
    /// ICMP_DEFAULT, 60 seconds (RFC 5508 REQ-2).
    public var icmp: UInt64 = 60 * second
    /// FRAGMENT_MIN, 2 seconds: how long fragments wait for their first fragment.
    public var fragment: UInt64 = 2 * second

    /// The defaults.
    public init() {}
}

/// Everything a ``NAT64Stage`` needs to know: the prefix IPv4 addresses appear under on the IPv6
/// side, the pool4, the lifetimes, the limits and the policy.
public struct NAT64Configuration: Hashable, Sendable {
    /// The RFC 6052 prefix (the well-known `64:ff9b::/96` by default).
    public var pool6: RFC6052Prefix = .wellKnown
    /// The IPv4 addresses and ports the IPv6 hosts are given.
    public var pool4: [Pool4Entry]
    /// Bindings fixed by the operator.
    public var staticBindings: [NAT64StaticBinding] = []
    /// Who may use a binding from the IPv4 side.
    public var filtering: NAT64Filtering = .endpointIndependent
    /// The lifetimes.
    public var timeouts = NAT64Timeouts()
    /// At most this many sessions in all (memory stays bounded under a flood from many sources).
    public var maximumSessions = 1_000_000
    /// At most this many sessions per IPv6 host.
    public var maximumSessionsPerHost = 10_000
    /// At most this many unsolicited IPv4 SYNs kept waiting for a simultaneous open (Jool's
    /// `maximum-simultaneous-opens`); more are dropped without an answer (RFC 5382 REQ-4 forbids
    /// answering before 6 s).
    public var maximumStoredSYNs = 10
    /// At most this many fragments held waiting for their first fragment.
    public var maximumHeldFragments = 256
    /// At most this many ports tried for one new binding (the cost of a new flow stays flat as the
    /// pool fills; Jool's `max-iterations` is the same idea).
    public var maximumPortProbes = 1_024
    /// The translator's own addresses: the source of the ICMP errors it sends itself.
    public var ownIPv4 = IPv4Address(192, 0, 2, 254)
    /// The same for IPv6.
    public var ownIPv6 = IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe)
    /// RFC 7915 §4: IPv4 packets without DF are fragmented so that no IPv6 packet is larger than this.
    public var lowestIPv6MTU = 1280

    /// A configuration with this pool4 and the defaults.
    public init(pool4: [Pool4Entry], pool6: RFC6052Prefix = .wellKnown) {
        self.pool4 = pool4
        self.pool6 = pool6
    }

    /// Whether an IPv4 address is one the translator hands out (or a static binding's).
    /// (The stage keeps ``ownedIPv4`` and asks it; this builds it for one question.)
    public func ownsIPv4(_ address: IPv4Address) -> Bool { ownedIPv4.contains(address) }

    /// The addresses ``ownsIPv4(_:)`` answers for, in a form that answers in a few comparisons
    /// (a stage asks once per packet).
    public var ownedIPv4: NAT64OwnedAddresses { NAT64OwnedAddresses(self) }

    /// What makes the configuration unusable: two pool4 entries that share an address for one
    /// protocol (the ports taken would be counted twice), two static bindings with the same IPv6 or
    /// IPv4 side. Empty when it is usable.
    public var problems: [String] {
        var out: [String] = []
        for (i, a) in pool4.enumerated() {
            for b in pool4[(i + 1)...] where a.addresses.overlaps(b.addresses) && !a.protocols.isDisjoint(with: b.protocols) {
                out.append("--pool4 \(a) and \(b) share addresses for \(a.protocols.intersection(b.protocols).sorted().map(\.name).joined(separator: ", "))")
            }
        }
        for (i, a) in staticBindings.enumerated() {
            for b in staticBindings[(i + 1)...] where a.proto == b.proto
                && ((a.address6 == b.address6 && a.port6 == b.port6) || (a.address4 == b.address4 && a.port4 == b.port4)) {
                out.append("--static-bib \(a) and \(b) share a side")
            }
        }
        return out
    }

    /// What the configuration does that the RFCs advise against (lifetimes below their minimums),
    /// for the operator to read at start.
    public var warnings: [String] {
        var out: [String] = []
        let s = NAT64Timeouts.second
        if timeouts.udp < 120 * s { out.append("the UDP lifetime is below RFC 4787 REQ-5's 2 minutes") }
        if timeouts.tcpEstablished < 7_440 * s { out.append("the established TCP lifetime is below RFC 5382 REQ-5's 2 h 4 min") }
        if timeouts.tcpTransitory < 240 * s { out.append("the transitory TCP lifetime is below RFC 5382 REQ-5's 4 minutes") }
        if timeouts.tcpIncomingSyn < 6 * s {
            out.append("unsolicited SYNs are answered before RFC 5382 REQ-4's 6 seconds")
        }
        if timeouts.icmp < 60 * s { out.append("the ICMP lifetime is below RFC 5508 REQ-2's 60 s") }
        return out
    }

    /// The stateless translation the session's addresses ride on: the prefix, and the same
    /// knobs for the ICMP errors the translator sends itself.
    var translation: SIITConfiguration {
        var c = SIITConfiguration(pool6: pool6)
        c.ownIPv4 = ownIPv4
        c.ownIPv6 = ownIPv6
        c.lowestIPv6MTU = lowestIPv6MTU
        return c
    }
}

/// The IPv4 addresses a NAT64 owns (its pool4 and static bindings), merged into sorted ranges.
public struct NAT64OwnedAddresses: Sendable {
    let ranges: [ClosedRange<UInt32>]

    /// The addresses of `configuration`.
    public init(_ configuration: NAT64Configuration) {
        let all = (configuration.pool4.map(\.addresses)
            + configuration.staticBindings.map { $0.address4.rawValue...$0.address4.rawValue })
            .sorted { $0.lowerBound < $1.lowerBound }
        var merged: [ClosedRange<UInt32>] = []
        for r in all {
            if let last = merged.last, r.lowerBound <= last.upperBound || r.lowerBound == last.upperBound &+ 1 {
                merged[merged.count - 1] = last.lowerBound...max(last.upperBound, r.upperBound)
            } else {
                merged.append(r)
            }
        }
        ranges = merged
    }

    /// Whether `address` is one of them.
    public func contains(_ address: IPv4Address) -> Bool {
        let a = address.rawValue
        var low = 0, high = ranges.count
        while low < high {
            let mid = (low + high) / 2
            if ranges[mid].upperBound < a { low = mid + 1 } else { high = mid }
        }
        return low < ranges.count && ranges[low].contains(a)
    }
}
