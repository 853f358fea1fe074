import OffloadEngine
import OffloadForwarder
import OffloadSIIT
import OffloadWire

/// Why a ``NAT64Stage`` did not translate a packet.
public enum NAT64DropReason: String, Hashable, Sendable, CaseIterable, Codable, CodingKeyRepresentable {
    /// From IPv4, to a pool4 address and port no IPv6 host holds.
    case noBinding = "no_binding"
    /// Needs a session and has none (TCP other than a SYN, an echo reply, an ICMP error about an
    /// unknown flow).
    case noSession = "no_session"
    /// Refused by address-dependent filtering.
    case filtered
    /// No free port on the pool4.
    case poolExhausted = "pool_exhausted"
    /// The IPv6 host has its maximum of sessions.
    case hostLimit = "host_limit"
    /// The translator has its maximum of sessions.
    case sessionLimit = "session_limit"
    /// An unsolicited IPv4 SYN, kept 6 s for a simultaneous open.
    case synStored = "syn_stored"
    /// An unsolicited IPv4 SYN that found the store full.
    case synStoreFull = "syn_store_full"
    /// Not addressed to the translator: an IPv6 destination outside the prefix, an IPv4 one outside
    /// the pool4.
    case notOurs = "not_ours"
    /// A protocol RFC 6146 keeps no state for (not TCP, UDP or ICMP).
    case unsupportedProtocol = "unsupported_protocol"
    /// A fragment whose first fragment never came (held FRAGMENT_MIN, then dropped), or that
    /// found the hold full.
    case fragmentWithoutFirst = "fragment_without_first"
    /// What the stateless translation refuses (RFC 7915): ICMP types it drops, fragmented ICMP,
    /// refused extension headers, UDP without a checksum, untranslatable addresses.
    case notTranslated = "not_translated"
    /// Headers that do not parse.
    case malformed

    init(_ refusal: NAT64Refusal) { self.init(rawValue: refusal.rawValue)! }
}

/// Counters of a ``NAT64Stage``.
public struct NAT64Statistics: Hashable, Sendable, Codable {
    /// Packets translated IPv4 → IPv6, and IPv6 → IPv4 (a super-packet counts once).
    public var toIPv6 = 0, toIPv4 = 0
    /// Super-packets among them, looked up once and translated once in place.
    public var superPackets = 0
    /// Packets translated whole (ICMP errors, fragments, hairpinning, extension headers).
    public var slowPath = 0
    /// ICMP errors translated with the packet they quote (matched to their session).
    public var errorsTranslated = 0
    /// Packets from one IPv6 host to another's pool4 address, sent back to IPv6 (RFC 6146 §3.8).
    public var hairpinned = 0
    /// ICMP errors the translator sent itself (pool exhausted, limits, unanswered SYNs, and those
    /// the stateless translation sends).
    public var errorsSent = 0
    /// ICMP errors the translator did not send, over its rate limit.
    public var errorsSuppressed = 0
    /// Fragments that arrived before their first and waited for it.
    public var fragmentsHeld = 0
    /// Dropped, by reason.
    public var dropped: [NAT64DropReason: Int] = [:]

    /// Zeroed counters.
    public init() {}

    static let table: [(name: String, labels: [String: String], help: String,
                        field: WritableKeyPath<NAT64Statistics, Int> & Sendable)] = [
        ("nat64_translated", ["to": "ipv6"], "Packets translated, by the family they became.", \.toIPv6),
        ("nat64_translated", ["to": "ipv4"], "Packets translated, by the family they became.", \.toIPv4),
        ("nat64_super_packets", [:], "Super-packets looked up and translated once in place.", \.superPackets),
        ("nat64_slow_path", [:], "Packets translated whole.", \.slowPath),
        ("nat64_errors_translated", [:], "ICMP errors translated with their quote and session.", \.errorsTranslated),
        ("nat64_hairpinned", [:], "Packets hairpinned back to IPv6 (RFC 6146 3.8).", \.hairpinned),
        ("nat64_errors_sent", [:], "ICMP errors the translator sent itself.", \.errorsSent),
        ("nat64_errors_suppressed", [:], "ICMP errors not sent (rate limit).", \.errorsSuppressed),
        ("nat64_fragments_held", [:], "Fragments that waited for their first fragment.", \.fragmentsHeld),
    ]

    /// Adds another stage's counters.
    public mutating func add(_ o: NAT64Statistics) {
        for entry in Self.table { self[keyPath: entry.field] += o[keyPath: entry.field] }
        dropped.merge(o.dropped, uniquingKeysWith: +)
    }

    /// Packets dropped for any reason.
    public var droppedTotal: Int { dropped.values.reduce(0, +) }
}

/// Stateful NAT64 (RFC 6146) as a forwarder stage: IPv6 hosts reach IPv4 ones through the pool4,
/// IPv4 addresses appear to them under the RFC 6052 prefix.
///
/// **Once per super-packet.** A TCP or UDP packet or super-packet (or an ICMP echo) without
/// fragments or extension headers is looked up once under the lock, its session refreshed and its
/// TCP state moved once (GRO never merges a SYN or RST; a FIN rides on the last segment, which is
/// where its flags are read), then translated in place once: the other family's header, the port
/// (or identifier) rewritten, the checksum moved incrementally, the GSO kind swapped. The forwarder
/// then segments it at the egress MTU as ``SIITStage``'s output is.
///
/// **Whole.** ICMP errors (matched to their session through the packet they quote, which is
/// translated back), fragments (the first one finds or makes the session; the others follow it by
/// their fragment ID, and wait FRAGMENT_MIN for it when they come first), hairpinning and what
/// the stateless translation must take whole go through ``processWhole(_:gso:direction:egressMTU:)``:
/// the port is rewritten in the original family, then ``SIITTranslator`` translates with the
/// session's addresses.
///
/// Both directions share one ``NAT64State``; each stage instance is one thread's.
public struct NAT64Stage: Stage {
    /// The shared tables.
    public let state: NAT64State
    let configuration: NAT64Configuration
    /// The pool4 and static addresses, for the per-packet "is it ours".
    let owned: NAT64OwnedAddresses
    /// The stateless translator of the slow path (its addresses set per packet).
    var translator: SIITTranslator
    /// Counters.
    public internal(set) var statistics = NAT64Statistics()
    /// Whether this stage publishes the tables' gauges.
    let reportsGauges: Bool
    /// The clock of the packet being processed.
    var now: UInt64 = 0
    /// When this stage next ends what ran out.
    var nextExpiry: UInt64 = 0
    /// The rate of the ICMP errors this stage makes itself (Linux's defaults: 1000 a second, bursts of 50).
    var errorLimiter = ICMPRateLimiter()
    /// The IPv4 Identification of the next DF-clear packet from the in-place path.
    var nextIdentification: UInt16 = 0x8000
    /// Fragments from IPv6 and from IPv4 following their first fragment.
    var fragments6 = FragmentFollower<Fragment6Key, NAT64IPv4Side>()
    var fragments4 = FragmentFollower<Fragment4Key, NAT64IPv6Side>()
    /// The gauges as last read (refreshed at most every 50 ms of packet time).
    var gauges: [StageCounter] = []
    var gaugesRead: UInt64 = 0

    /// A stage of `state` (make one per direction and queue, all with the same state).
    public init(state: NAT64State) {
        self.state = state
        configuration = state.configuration
        owned = state.configuration.ownedIPv4
        translator = SIITTranslator(configuration: state.configuration.translation)
        reportsGauges = state.claimGauges()
    }

    /// The translator grows an IPv4 header into an IPv6 one.
    public var headerGrowth: Int { 20 }

    /// A translator drops what it cannot parse.
    public var passesUnparsedPackets: Bool { false }

    /// The counters, and (from one stage) the sessions and bindings per protocol as gauges.
    public var counters: [StageCounter] {
        let s = statistics
        var all = NAT64Statistics.table.map {
            StageCounter($0.name, help: $0.help, labels: $0.labels, value: s[keyPath: $0.field])
        }
        for reason in NAT64DropReason.allCases {
            all.append(StageCounter("nat64_dropped", help: "Packets not translated, by reason.",
                                    labels: ["reason": reason.rawValue], value: s.dropped[reason, default: 0]))
        }
        if reportsGauges {
            let (sessions, bindings, stored) = state.withTables { ($0.sessionCounts, $0.bindingCounts, $0.storedSYNCount) }
            for p in NAT64Protocol.allCases {
                all.append(StageCounter("nat64_sessions", help: "Sessions, by protocol.", labels: ["protocol": p.name],
                                        value: sessions[p.rawValue], gauge: true))
                all.append(StageCounter("nat64_bindings", help: "BIB entries, by protocol.", labels: ["protocol": p.name],
                                        value: bindings[p.rawValue], gauge: true))
            }
            all.append(StageCounter("nat64_stored_syns", help: "Unsolicited IPv4 SYNs kept for a simultaneous open.",
                                    value: stored, gauge: true))
        }
        return all
    }

    // MARK: - In place

    /// Looks up and translates one packet or super-packet in place, or asks for it whole.
    public mutating func process(_ packet: inout StagePacket) -> StageVerdict {
        now = packet.now
        if now >= nextExpiry { expire() }
        let layout = packet.layout
        guard !layout.isFragment, layout.hasTransportHeader else { return .wholePacket }
        switch layout.network {
        case .ipv6: return from6(&packet)
        case .ipv4:
            // The timers' errors for the IPv4 side leave with the next IPv4 packet (through the slow path).
            if state.hasPendingToIPv4.load(ordering: .relaxed) { return .wholePacket }
            return from4(&packet)
        case .other:
            return drop(.malformed)
        }
    }

    mutating func drop(_ reason: NAT64DropReason) -> StageVerdict {
        statistics.dropped[reason, default: 0] += 1
        return .drop
    }

    /// Ends what ran out (a bounded amount) every 10 ms of packet time (256 a call: up to 25 600 a second per thread, so a million sessions that run out together are gone in under a minute, each call a few hundred microseconds).
    mutating func expire() {
        let expiry = state.withTables { $0.expire(now: now, limit: 256) }
        state.queue(expiry.unansweredSYNs)
        nextExpiry = now &+ 10_000_000
        fragments6.expire(now: now, dropped: &statistics.dropped[.fragmentWithoutFirst, default: 0])
        fragments4.expire(now: now, dropped: &statistics.dropped[.fragmentWithoutFirst, default: 0])
    }

    /// The fields a lookup needs, from the staged headers.
    struct Flow {
        var proto: NAT64Protocol
        var sourcePort: UInt16
        var destinationPort: UInt16
        var tcpFlags: UInt8
        /// The ICMP type (echo request or reply), else 0.
        var icmpType: UInt8
    }

    /// The flow of a TCP, UDP or ICMP echo header at `t`; nil for other ICMP (errors: whole).
    static func flow(_ h: UnsafeRawBufferPointer, transport: IPProtocol, at t: Int) -> Flow?? {
        func u16(_ o: Int) -> UInt16 { unsafe UInt16(h[o]) << 8 | UInt16(h[o + 1]) }
        switch transport {
        case .tcp: return Flow(proto: .tcp, sourcePort: u16(t), destinationPort: u16(t + 2), tcpFlags: unsafe h[t + 13], icmpType: 0)
        case .udp: return Flow(proto: .udp, sourcePort: u16(t), destinationPort: u16(t + 2), tcpFlags: 0, icmpType: 0)
        case .icmp, .icmpv6:
            let type = unsafe h[t]
            guard [0, 8, 128, 129].contains(type) else { return .some(nil) }
            let id = u16(t + 4)
            return Flow(proto: .icmp, sourcePort: id, destinationPort: id, tcpFlags: 0, icmpType: type)
        default: return nil
        }
    }

    /// IPv6 → IPv4 in place.
    mutating func from6(_ packet: inout StagePacket) -> StageVerdict {
        let layout = packet.layout
        let n = layout.networkOffset, t = layout.transportOffset
        guard t == n + 40 else { return .wholePacket }  // extension headers
        // Safe: the layout validated the IPv6 header at n and the L4 header at t.
        let (source, destination, parsed, udpCheck) = unsafe packet.headers.withUnsafeBytes { h in
            unsafe (IPv6Address(h, n + IPv6Packet.Field.source), IPv6Address(h, n + IPv6Packet.Field.destination),
                    Self.flow(h, transport: layout.transport, at: t),
                    layout.transport == .udp ? UInt16(h[t + 6]) << 8 | UInt16(h[t + 7]) : 1)
        }
        guard let parsed else { return drop(.unsupportedProtocol) }
        guard let flow = parsed else { return .wholePacket }  // ICMPv6 errors and the rest
        // IPv6 UDP must carry a checksum (RFC 8200 §8.1): zero would leave as a wrong IPv4 one.
        if udpCheck == 0 && packet.checksum != .partial { return drop(.malformed) }
        guard let z = configuration.pool6.extracting(destination) else { return drop(.notOurs) }
        if owned.contains(z) { return .wholePacket }  // hairpinning
        let result = state.withTables {
            $0.fromIPv6(flow.proto, source: source, sourcePort: flow.sourcePort, destination: z,
                        destinationPort: flow.destinationPort, tcpFlags: flow.tcpFlags,
                        creates: flow.proto != .icmp || flow.icmpType != 129, now: now)
        }
        switch result {
        case .failure(let refusal):
            return refuse6(refusal)
        case .success(let side):
            let port = PortRewrite(offset: flow.proto == .icmp ? 4 : 0, value: side.port)
            guard SIITStage.writeIPv4(&packet, source: side.address, destination: z, port: port,
                                      identification: &nextIdentification)
            else { return .wholePacket }
            statistics.toIPv4 += 1
            if let gso = packet.gso, gso.segmentCount > 1 { statistics.superPackets += 1 }
            return .forward
        }
    }

    /// IPv4 → IPv6 in place.
    mutating func from4(_ packet: inout StagePacket) -> StageVerdict {
        let layout = packet.layout
        let n = layout.networkOffset, t = layout.transportOffset
        // Safe: the layout validated the IPv4 header at n and the L4 header at t.
        let (source, destination, parsed, udpCheck) = unsafe packet.headers.withUnsafeBytes { h in
            unsafe (IPv4Address(h, n + IPv4Packet.Field.source), IPv4Address(h, n + IPv4Packet.Field.destination),
                    Self.flow(h, transport: layout.transport, at: t),
                    layout.transport == .udp ? UInt16(h[t + 6]) << 8 | UInt16(h[t + 7]) : 1)
        }
        guard let parsed else { return drop(.unsupportedProtocol) }
        guard let flow = parsed, udpCheck != 0 else { return .wholePacket }  // ICMP errors, UDP without checksum
        // To the pool4, and not from it (the translator's own addresses on the IPv4 side are spoofed).
        guard owned.contains(destination), !owned.contains(source) else { return drop(.notOurs) }
        let result = state.withTables { tables in
            tables.fromIPv4(flow.proto, source: source, sourcePort: flow.sourcePort, destination: destination,
                            destinationPort: flow.destinationPort, tcpFlags: flow.tcpFlags,
                            creates: flow.proto != .icmp || flow.icmpType != 0, packet: Self.bytes(of: packet), now: now)
        }
        switch result {
        case .failure(let refusal):
            return drop(NAT64DropReason(refusal))
        case .success(let side):
            let port = PortRewrite(offset: flow.proto == .icmp ? 4 : 2, value: side.port)
            guard SIITStage.writeIPv6(&packet, source: configuration.pool6.embedding(source), destination: side.address,
                                      port: port, lowestIPv6MTU: configuration.lowestIPv6MTU)
            else { return .wholePacket }
            statistics.toIPv6 += 1
            if let gso = packet.gso, gso.segmentCount > 1 { statistics.superPackets += 1 }
            return .forward
        }
    }

    /// The staged headers as bytes (what an unsolicited SYN's later error quotes).
    static func bytes(of packet: borrowing StagePacket) -> [UInt8] {
        unsafe packet.headers.withUnsafeBytes { unsafe Array($0) }
    }

    /// The answer to a refused packet from IPv6 (RFC 6146 §3.5.1.1: destination unreachable,
    /// address unreachable, when no port is free; administratively prohibited at a limit). The
    /// error quotes the packet, payload included, which the staged headers do not hold: such a
    /// packet goes whole, where the lookup refuses it again and ``refused(_:quoting:fromIPv6:)``
    /// answers it.
    mutating func refuse6(_ refusal: NAT64Refusal) -> StageVerdict {
        refusal.icmpv6Code == nil ? drop(NAT64DropReason(refusal)) : .wholePacket
    }
}

// MARK: - Fragments that follow their first

/// Fragments of one datagram from IPv6: (X', Y', the Fragment header's ID, protocol).
struct Fragment6Key: Hashable {
    var source: IPv6Address
    var destination: IPv6Address
    var identification: UInt32
    var proto: UInt8
}

/// Fragments of one datagram from IPv4: (Z, T, the IPv4 ID, protocol).
struct Fragment4Key: Hashable {
    var source: IPv4Address
    var destination: IPv4Address
    var identification: UInt16
    var proto: UInt8
}

/// RFC 6146 §3.4's second way with fragments: the first fragment (which holds the ports) finds the
/// session; the datagram's other fragments follow what it found, for FRAGMENT_MIN. Those that come
/// before their first wait as long, at most ``capacity`` in all, and are dropped (counted) when it
/// never comes.
struct FragmentFollower<Key: Hashable, Side> {
    struct Learned {
        var side: Side
        var expires: UInt64
    }
    struct Held {
        var key: Key
        var packet: [UInt8]
        var expires: UInt64
    }
    var learned: [Key: Learned] = [:]
    var held: [Held] = []
    /// The order keys were learned in (for expiry without a scan).
    var order: [(key: Key, expires: UInt64)] = []
    var orderStart = 0

    /// Remembers what the first fragment of `key` found; returns the fragments that waited for it.
    mutating func learn(_ key: Key, _ side: Side, now: UInt64, lifetime: UInt64) -> [[UInt8]] {
        learned[key] = Learned(side: side, expires: now &+ lifetime)
        order.append((key, now &+ lifetime))
        guard held.contains(where: { $0.key == key }) else { return [] }
        let waiting = held.filter { $0.key == key }.map(\.packet)
        held.removeAll { $0.key == key }
        return waiting
    }

    /// What the first fragment of `key` found, while it is remembered.
    func side(_ key: Key, now: UInt64) -> Side? {
        guard let l = learned[key], l.expires > now else { return nil }
        return l.side
    }

    /// Holds a fragment that came before its first; false when the hold is full.
    mutating func hold(_ key: Key, _ packet: [UInt8], now: UInt64, lifetime: UInt64, capacity: Int) -> Bool {
        guard held.count < capacity else { return false }
        held.append(Held(key: key, packet: packet, expires: now &+ lifetime))
        return true
    }

    /// Forgets what ran out; counts the held fragments whose first never came.
    mutating func expire(now: UInt64, dropped: inout Int) {
        while orderStart < order.count, order[orderStart].expires <= now {
            let key = order[orderStart].key
            if let l = learned[key], l.expires <= now { learned[key] = nil }
            orderStart += 1
        }
        if orderStart > 1_024 && orderStart * 2 > order.count {
            order.removeFirst(orderStart)
            orderStart = 0
        }
        let before = held.count
        held.removeAll { $0.expires <= now }
        dropped += before - held.count
    }
}
