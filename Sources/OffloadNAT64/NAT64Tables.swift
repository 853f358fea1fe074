import OffloadWire

/// The TCP states of RFC 6146 §3.5.2.2 (CLOSED is the absence of a session).
public enum NAT64TCPState: UInt8, Hashable, Sendable, Codable, CaseIterable {
    /// An IPv4 SYN was seen, no IPv6 SYN yet.
    case v4Init = 1
    /// An IPv6 SYN was seen, no IPv4 SYN yet.
    case v6Init
    /// Both SYNs seen.
    case established
    /// A FIN from the IPv4 side.
    case v4FinReceived
    /// A FIN from the IPv6 side.
    case v6FinReceived
    /// FINs from both sides.
    case bothFinsReceived
    /// Reset, or idle past TCP_EST: deleted at TCP_TRANS unless traffic brings it back.
    case transitory

    /// `V6_INIT`, `ESTABLISHED`…: RFC 6146's names, in the status.
    public var name: String {
        switch self {
        case .v4Init: "V4_INIT"
        case .v6Init: "V6_INIT"
        case .established: "ESTABLISHED"
        case .v4FinReceived: "V4_FIN_RCV"
        case .v6FinReceived: "V6_FIN_RCV"
        case .bothFinsReceived: "V4_FIN_V6_FIN_RCV"
        case .transitory: "TRANS"
        }
    }
}

/// Why the tables refused a packet.
public enum NAT64Refusal: String, Error, Hashable, Sendable, Codable, CaseIterable, CodingKeyRepresentable {
    /// From IPv4, to a pool4 address and port no IPv6 host holds.
    case noBinding = "no_binding"
    /// A packet that needs a session and has none: a TCP segment other than a SYN, an ICMP error
    /// about a flow the translator does not know.
    case noSession = "no_session"
    /// Refused by address-dependent filtering.
    case filtered
    /// No free port on the pool4 (RFC 6146 §3.5.1.1), answered with "address unreachable".
    case poolExhausted = "pool_exhausted"
    /// The IPv6 host has its maximum of sessions.
    case hostLimit = "host_limit"
    /// The translator has its maximum of sessions.
    case sessionLimit = "session_limit"
    /// An unsolicited IPv4 SYN kept for a possible simultaneous open (answered at 6 s).
    case synStored = "syn_stored"
    /// An unsolicited IPv4 SYN that found the store full (dropped without an answer).
    case synStoreFull = "syn_store_full"

    /// The ICMPv6 destination-unreachable code a refused packet from IPv6 is answered with
    /// (RFC 6146 §3.5.1.1: address unreachable when no port is free; administratively prohibited
    /// at a limit), or nil when it is dropped without an answer. The one place the rule is written.
    public var icmpv6Code: UInt8? {
        switch self {
        case .poolExhausted: 3
        case .hostLimit, .sessionLimit: 1
        default: nil
        }
    }
}

/// What the tables know about the IPv4 side of a flow from IPv6 (a BIB entry's pool4 half).
public struct NAT64IPv4Side: Hashable, Sendable {
    /// T.
    public var address: IPv4Address
    /// t.
    public var port: UInt16
}

/// What the tables know about the IPv6 side of a flow from IPv4 (a BIB entry's IPv6 half).
public struct NAT64IPv6Side: Hashable, Sendable {
    /// X'.
    public var address: IPv6Address
    /// x.
    public var port: UInt16
}

/// The binding information bases and session tables of RFC 6146 §3.1–3.2, for the three
/// protocols, with their timers, the pool4's port allocation, the limits and the TCP state machine.
/// Not thread-safe: the stage holds it in a lock and takes it once per packet or super-packet.
///
/// **Layout.** Bindings and sessions live in two arrays of small structs with free lists; three
/// dictionaries find them: a binding by its IPv6 side (protocol, X', x), a binding by its IPv4 side
/// (protocol, T, t), a session by (binding, Z, z). The IPv6 remote Y' is Z inside the prefix, so a
/// session needs no IPv6 remote of its own. A new flow costs three inserts; a packet of a known
/// flow, two lookups.
///
/// **Timers.** Each lifetime class (UDP, ICMP, TCP established, TCP transitory, TCP incoming SYN)
/// has a fixed length, so its sessions, kept in a FIFO list in order of last refresh, are also in
/// order of expiry: a refresh moves a session to the tail in O(1), and ``expire(now:limit:)`` stops
/// at the first session still alive (Jool's scheme). Nothing is ever scanned.
public struct NAT64Tables: Sendable {
    /// The configuration (pool4, lifetimes, limits, filtering).
    public let configuration: NAT64Configuration

    // MARK: Storage

    struct Binding {
        var address6: IPv6Address
        var address4: IPv4Address
        var port6: UInt16
        var port4: UInt16
        var proto: UInt8
        var isStatic: Bool
        var inUse: Bool
        /// The pool4 slot the port was taken from (-1: a static binding outside the pool4).
        var slot: Int32
        var sessionCount: Int32
        /// The binding's sessions, a doubly linked list through ``Session/bindingNext``.
        var firstSession: Int32
    }

    struct Session {
        var binding: Int32
        var remote: IPv4Address
        var remotePort: UInt16
        var state: NAT64TCPState?
        var timer: TimerClass
        var inUse: Bool
        var expires: UInt64
        var timerPrevious: Int32
        var timerNext: Int32
        var bindingPrevious: Int32
        var bindingNext: Int32
    }

    /// The lifetime classes, one FIFO list each.
    enum TimerClass: UInt8, CaseIterable {
        case udp, icmp, tcpEstablished, tcpTransitory, tcpIncomingSyn
    }

    struct Key6: Hashable {
        var address: IPv6Address
        var port: UInt16
        var proto: UInt8
    }

    /// (protocol, T, t) packed in 56 bits.
    static func key4(_ proto: UInt8, _ address: IPv4Address, _ port: UInt16) -> UInt64 {
        UInt64(proto) << 48 | UInt64(address.rawValue) << 16 | UInt64(port)
    }

    struct SessionKey: Hashable {
        var binding: Int32
        var remote: UInt32
        var remotePort: UInt16
    }

    /// Per IPv6 host: its session count (the limit) and the pool4 address its bindings share
    /// (RFC 4787 REQ-2, "paired").
    struct Host {
        var sessions: Int32
        var bindings: Int32
        var paired: IPv4Address
    }

    /// An unsolicited IPv4 SYN kept for 6 s (RFC 5382 REQ-4, RFC 6146 §3.5.2.2).
    struct StoredSYN {
        var packet: [UInt8]
        var source: IPv4Address
        var sourcePort: UInt16
        var destination: IPv4Address
        var destinationPort: UInt16
        var expires: UInt64
    }

    var bindings: [Binding] = []
    var freeBindings: [Int32] = []
    var sessions: [Session] = []
    var freeSessions: [Int32] = []
    var bindingsBy6: [Key6: Int32] = [:]
    var bindingsBy4: [UInt64: Int32] = [:]
    var sessionsByKey: [SessionKey: Int32] = [:]
    var hosts: [IPv6Address: Host] = [:]
    var timerHeads = [Int32](repeating: -1, count: TimerClass.allCases.count)
    var timerTails = [Int32](repeating: -1, count: TimerClass.allCases.count)
    var storedSYNs: [StoredSYN] = []
    /// The pool4's (address, port range, protocol) slots, in order, and how many ports of each are taken.
    var poolSlots: [PoolSlot] = []
    /// The slots of each protocol, in pool order.
    var slotsByProtocol: [[Int]] = [[], [], []]
    /// The slots of each (protocol, address), for the paired address.
    var slotsByAddress: [UInt64: [Int]] = [:]
    /// RFC 6056 algorithm 3's counter, per protocol.
    var nextEphemeral = [UInt32](repeating: 0, count: 3)
    /// The secret of the port-choice hash (Swift's `Hasher` is seeded per process, so the ports
    /// one translator picks cannot be predicted from another's).
    let secret = UInt64.random(in: .min ... .max)

    struct PoolSlot {
        var address: IPv4Address
        var ports: ClosedRange<UInt16>
        var proto: NAT64Protocol
        var taken: Int
        var capacity: Int { ports.count }
    }

    /// Sessions per protocol (the gauges).
    public private(set) var sessionCounts = [Int](repeating: 0, count: 3)
    /// Bindings per protocol (the gauges).
    public private(set) var bindingCounts = [Int](repeating: 0, count: 3)
    /// Sessions in all.
    public var sessionCount: Int { sessionCounts.reduce(0, +) }
    /// Sessions that ran out (a count since start).
    public private(set) var expiredSessions = 0
    /// Unsolicited IPv4 SYNs kept now.
    public var storedSYNCount: Int { storedSYNs.count }

    /// Empty tables with the configuration's static bindings.
    public init(configuration: NAT64Configuration) {
        self.configuration = configuration
        for entry in configuration.pool4 {
            for a in entry.addresses {
                for p in entry.protocols.sorted() {
                    slotsByProtocol[p.rawValue].append(poolSlots.count)
                    slotsByAddress[Self.key4(UInt8(p.rawValue), IPv4Address(rawValue: a), 0), default: []].append(poolSlots.count)
                    poolSlots.append(PoolSlot(address: IPv4Address(rawValue: a), ports: entry.ports, proto: p, taken: 0))
                }
            }
        }
        for s in configuration.staticBindings {
            _ = addBinding(proto: UInt8(s.proto.rawValue), address6: s.address6, port6: s.port6, address4: s.address4,
                           port4: s.port4, isStatic: true)
        }
    }

    // MARK: - The flow from IPv6 (RFC 6146 §3.5.1–3.5.3, 6 → 4)

    /// The IPv4 side for a packet from the IPv6 host (X', x) to Z:z (Y' = Z in the prefix),
    /// creating the binding (a port from the pool4) and the session as RFC 6146 asks, refreshing
    /// it, and moving the TCP state. `tcpFlags`: the TCP header's flags byte (SYN 0x02, FIN 0x01,
    /// RST 0x04), ignored for UDP and ICMP. `creates`: false for what must not create state (an
    /// ICMPv6 echo reply).
    public mutating func fromIPv6(_ proto: NAT64Protocol, source: IPv6Address, sourcePort: UInt16,
                                  destination: IPv4Address, destinationPort: UInt16, tcpFlags: UInt8 = 0,
                                  creates: Bool = true, now: UInt64) -> Result<NAT64IPv4Side, NAT64Refusal> {
        let p = UInt8(proto.rawValue)
        let remotePort = proto == .icmp ? 0 : destinationPort
        var binding = bindingsBy6[Key6(address: source, port: sourcePort, proto: p)]
        if let b = binding, let s = sessionsByKey[SessionKey(binding: b, remote: destination.rawValue, remotePort: remotePort)] {
            if proto == .tcp { tcpEvent(s, flags: tcpFlags, fromIPv6: true, now: now) } else { touch(s, now: now) }
            let e = bindings[Int(b)]
            return .success(NAT64IPv4Side(address: e.address4, port: e.port4))
        }
        // No session: a TCP segment other than a SYN does not open one (RFC 6146 §3.5.2.2, CLOSED).
        if proto == .tcp && tcpFlags & 0x02 == 0 || !creates { return .failure(.noSession) }
        guard sessionCount < configuration.maximumSessions else { return .failure(.sessionLimit) }
        if let host = hosts[source], Int(host.sessions) >= configuration.maximumSessionsPerHost {
            return .failure(.hostLimit)
        }
        if binding == nil {
            guard let (address, port) = allocate(proto, source: source, sourcePort: sourcePort, remote: destination,
                                                 remotePort: destinationPort)
            else { return .failure(.poolExhausted) }
            binding = addBinding(proto: p, address6: source, port6: sourcePort, address4: address, port4: port,
                                 isStatic: false)
        }
        let b = binding!
        var timer = TimerClass.udp
        var state: NAT64TCPState?
        switch proto {
        case .udp: timer = .udp
        case .icmp: timer = .icmp
        case .tcp:
            // A V6 SYN meeting a kept V4 SYN from the same remote is a simultaneous open.
            let e = bindings[Int(b)]
            if let k = storedSYNs.firstIndex(where: {
                $0.destination == e.address4 && $0.destinationPort == e.port4 && $0.source == destination
                    && $0.sourcePort == destinationPort
            }) {
                storedSYNs.remove(at: k)
                state = .established
                timer = .tcpEstablished
            } else {
                state = .v6Init
                timer = .tcpTransitory
            }
        }
        addSession(binding: b, remote: destination, remotePort: remotePort, state: state, timer: timer, now: now)
        let e = bindings[Int(b)]
        return .success(NAT64IPv4Side(address: e.address4, port: e.port4))
    }

    // MARK: - The flow from IPv4 (4 → 6)

    /// The IPv6 side for a packet from Z:z to the pool4's (T, t): the binding must exist; the
    /// session is found, or created as filtering allows (a TCP SYN only, for TCP), refreshed, and
    /// the TCP state moved. `packet`: the IPv4 packet, kept when it is an unsolicited SYN.
    public mutating func fromIPv4(_ proto: NAT64Protocol, source: IPv4Address, sourcePort: UInt16,
                                  destination: IPv4Address, destinationPort: UInt16, tcpFlags: UInt8 = 0,
                                  creates: Bool = true, packet: @autoclosure () -> [UInt8] = [], now: UInt64)
        -> Result<NAT64IPv6Side, NAT64Refusal>
    {
        let p = UInt8(proto.rawValue)
        let remotePort = proto == .icmp ? 0 : sourcePort
        let isSYN = proto == .tcp && tcpFlags & 0x02 != 0 && tcpFlags & 0x04 == 0
        guard let b = bindingsBy4[Self.key4(p, destination, destinationPort)] else {
            if isSYN && creates { return storeSYN(packet(), source: source, sourcePort: sourcePort, destination: destination,
                                                  destinationPort: destinationPort, now: now) }
            return .failure(.noBinding)
        }
        let e = bindings[Int(b)]
        let side = NAT64IPv6Side(address: e.address6, port: e.port6)
        if let s = sessionsByKey[SessionKey(binding: b, remote: source.rawValue, remotePort: remotePort)] {
            if proto == .tcp { tcpEvent(s, flags: tcpFlags, fromIPv6: false, now: now) } else { touch(s, now: now) }
            return .success(side)
        }
        guard creates else { return .failure(.noSession) }
        if configuration.filtering == .addressDependent && !bindingHasRemote(b, source) {
            if isSYN { return storeSYN(packet(), source: source, sourcePort: sourcePort, destination: destination,
                                       destinationPort: destinationPort, now: now) }
            return .failure(.filtered)
        }
        switch proto {
        case .tcp:
            // A V4 SYN with a binding and filtering that allows it: V4 INIT (RFC 6146 §3.5.2.2).
            guard isSYN else { return .failure(.noSession) }
        case .icmp:
            // Only an echo request may open an ICMP session from IPv4 (to a static binding).
            break
        case .udp: break
        }
        guard sessionCount < configuration.maximumSessions else { return .failure(.sessionLimit) }
        if let host = hosts[e.address6], Int(host.sessions) >= configuration.maximumSessionsPerHost {
            return .failure(.hostLimit)
        }
        let timer: TimerClass = proto == .tcp ? .tcpTransitory : proto == .udp ? .udp : .icmp
        addSession(binding: b, remote: source, remotePort: remotePort, state: proto == .tcp ? .v4Init : nil, timer: timer,
                   now: now)
        return .success(side)
    }

    // MARK: - Lookups that change nothing (ICMP errors, fragments)

    /// The IPv4 side of an existing session (X', x) ↔ Z:z, without refreshing it: ICMP errors
    /// never create, refresh or end state (RFC 4787 REQ-12, RFC 5382 REQ-10, RFC 5508 REQ-6).
    public func sessionFromIPv6(_ proto: NAT64Protocol, source: IPv6Address, sourcePort: UInt16, destination: IPv4Address,
                                destinationPort: UInt16) -> NAT64IPv4Side? {
        let p = UInt8(proto.rawValue)
        guard let b = bindingsBy6[Key6(address: source, port: sourcePort, proto: p)],
            sessionsByKey[SessionKey(binding: b, remote: destination.rawValue,
                                     remotePort: proto == .icmp ? 0 : destinationPort)] != nil
        else { return nil }
        return NAT64IPv4Side(address: bindings[Int(b)].address4, port: bindings[Int(b)].port4)
    }

    /// The IPv6 side of an existing session (T, t) ↔ Z:z, without refreshing it.
    public func sessionFromIPv4(_ proto: NAT64Protocol, source: IPv4Address, sourcePort: UInt16, destination: IPv4Address,
                                destinationPort: UInt16) -> NAT64IPv6Side? {
        let p = UInt8(proto.rawValue)
        guard let b = bindingsBy4[Self.key4(p, destination, destinationPort)],
            sessionsByKey[SessionKey(binding: b, remote: source.rawValue, remotePort: proto == .icmp ? 0 : sourcePort)] != nil
        else { return nil }
        return NAT64IPv6Side(address: bindings[Int(b)].address6, port: bindings[Int(b)].port6)
    }

    /// The pool4 address the IPv6 host X' is seen as (its paired address), when it has one.
    public func pairedAddress(of host: IPv6Address) -> IPv4Address? { hosts[host]?.paired }

    // MARK: - Timers

    /// What ``expire(now:limit:)`` found.
    public struct Expiry: Sendable {
        /// Sessions deleted.
        public var deleted = 0
        /// Unsolicited IPv4 SYNs whose 6 s passed with no simultaneous open: each is answered
        /// with "port unreachable" (RFC 5382 REQ-4), by the caller.
        public var unansweredSYNs: [[UInt8]] = []
    }

    /// Ends what ran out by `now`, at most `limit` sessions per call (mass expiry must not stall
    /// translation: the rest goes at the next call). An established TCP session that ran out of
    /// TCP_EST moves to TRANS for TCP_TRANS instead (RFC 6146 §3.5.2.2, without the probe): any
    /// packet in those 4 minutes brings it back.
    public mutating func expire(now: UInt64, limit: Int = 256) -> Expiry {
        var result = Expiry()
        var budget = limit
        for timer in TimerClass.allCases {
            while budget > 0 {
                let s = timerHeads[Int(timer.rawValue)]
                guard s >= 0, sessions[Int(s)].expires <= now else { break }
                budget -= 1
                if timer == .tcpEstablished {
                    sessions[Int(s)].state = .transitory
                    setTimer(s, .tcpTransitory, now: now)
                } else {
                    removeSession(s)
                    result.deleted += 1
                }
            }
        }
        expiredSessions += result.deleted
        while let first = storedSYNs.first, first.expires <= now {
            result.unansweredSYNs.append(first.packet)
            storedSYNs.removeFirst()
        }
        return result
    }

    /// The earliest time anything runs out (nil: nothing to expire).
    public var nextExpiry: UInt64? {
        var earliest = storedSYNs.first?.expires
        for head in timerHeads where head >= 0 {
            earliest = min(earliest ?? .max, sessions[Int(head)].expires)
        }
        return earliest
    }

    // MARK: - TCP (RFC 6146 §3.5.2.2)

    static let fin: UInt8 = 0x01, syn: UInt8 = 0x02, rst: UInt8 = 0x04

    /// One packet of a TCP session, from one side: the state moves and the lifetime is set as
    /// RFC 6146 §3.5.2.2's state machine says.
    mutating func tcpEvent(_ s: Int32, flags: UInt8, fromIPv6: Bool, now: UInt64) {
        let syn = flags & Self.syn != 0, fin = flags & Self.fin != 0, rst = flags & Self.rst != 0
        let state = sessions[Int(s)].state ?? .established
        var next = state
        var timer: TimerClass? = nil  // nil: the lifetime is not refreshed
        switch state {
        case .v4Init:
            if fromIPv6 && syn { next = .established; timer = .tcpEstablished }
        case .v6Init:
            if !fromIPv6 && syn { next = .established; timer = .tcpEstablished }
            else if fromIPv6 && syn { timer = .tcpTransitory }
        case .established:
            if rst { next = .transitory; timer = .tcpTransitory }
            else if fin { next = fromIPv6 ? .v6FinReceived : .v4FinReceived; timer = .tcpEstablished }
            else { timer = .tcpEstablished }
        case .v4FinReceived:
            if fromIPv6 && fin { next = .bothFinsReceived; timer = .tcpTransitory }
            else { timer = .tcpEstablished }
        case .v6FinReceived:
            if !fromIPv6 && fin { next = .bothFinsReceived; timer = .tcpTransitory }
            else { timer = .tcpEstablished }
        case .bothFinsReceived:
            break  // translated; the lifetime is not refreshed
        case .transitory:
            if !rst { next = .established; timer = .tcpEstablished }
        }
        sessions[Int(s)].state = next
        if let timer { setTimer(s, timer, now: now) }
    }

    // MARK: - Port allocation (RFC 6146 §3.5.1.1, RFC 4787 REQ-2..4, RFC 6056 §3.3.3)

    /// A pool4 address and port for a new binding of (X', x): the host's paired address first (all of
    /// a host's bindings share one IPv4 address while it has any), else the address the host hashes
    /// to, then the others. On an address, RFC 6056's algorithm 3: a keyed hash of the flow (with x) plus a
    /// per-protocol counter picks where to start, and the search probes from there, keeping the
    /// port's range (below 1024 or not) and parity where the pool allows (RFC 4787 REQ-3, REQ-4),
    /// at most ``NAT64Configuration/maximumPortProbes`` ports in all.
    mutating func allocate(_ proto: NAT64Protocol, source: IPv6Address, sourcePort: UInt16, remote: IPv4Address,
                           remotePort: UInt16) -> (IPv4Address, UInt16)? {
        let all = slotsByProtocol[proto.rawValue]
        guard !all.isEmpty else { return nil }
        var hasher = Hasher()
        hasher.combine(secret)
        hasher.combine(source)
        let start = Int(UInt(bitPattern: hasher.finalize()) % UInt(all.count))
        let paired = hosts[source].flatMap { slotsByAddress[Self.key4(UInt8(proto.rawValue), $0.paired, 0)] } ?? []
        // The paired address's slots, then every slot from where the host hashes to (the paired
        // ones again at most once more: cheap, and they are full by then). Walked in place: a
        // pool of thousands of addresses costs nothing until its slots are full.
        let visits = paired.count + all.count
        func slot(at k: Int) -> Int { k < paired.count ? paired[k] : all[(start + k - paired.count) % all.count] }
        // F(secret, X', x, Z, z): the binding's own port is in the key too. Without it, the new
        // bindings of one host to one server (which differ only in x) share an offset and take
        // sequential ports as the counter steps, which the server and anyone who sees one of them
        // could predict.
        var flow = Hasher()
        flow.combine(secret)
        flow.combine(source)
        flow.combine(sourcePort)
        flow.combine(remote)
        flow.combine(remotePort)
        let offset = UInt32(truncatingIfNeeded: flow.finalize())
        let counter = nextEphemeral[proto.rawValue]
        nextEphemeral[proto.rawValue] &+= 1
        var probes = max(0, configuration.maximumPortProbes)  // a negative bound refuses, as zero does
        let p = UInt8(proto.rawValue)
        // The range the source port is in (RFC 4787 REQ-3) first, then any range.
        let wantsLow = sourcePort < 1024
        for pass in 0..<2 {
            for k in 0..<visits {
                let slot = slot(at: k)
                guard poolSlots[slot].taken < poolSlots[slot].capacity else { continue }
                let ports = poolSlots[slot].ports
                let low = Int(ports.lowerBound), high = Int(ports.upperBound)
                let rangeLow = pass == 0 ? (wantsLow ? low : max(low, 1024)) : low
                let rangeHigh = pass == 0 ? (wantsLow ? min(high, 1023) : high) : high
                guard rangeLow <= rangeHigh else { continue }
                let count = rangeHigh - rangeLow + 1
                var port = rangeLow + Int((offset &+ counter) % UInt32(count))
                // Same parity as the source port (RFC 4787 REQ-4) when the range has such a port.
                if count > 1 && port & 1 != Int(sourcePort & 1) { port = port < rangeHigh ? port + 1 : port - 1 }
                // Probe by 2 (keeping parity) over the range, then by 1 when parity cannot be kept.
                for step in [2, 1] {
                    var candidate = port
                    // By 2 there are about half as many ports to see (one more when the count is odd).
                    for _ in 0..<min(step == 2 ? (count + 1) / 2 : count, probes) {
                        probes -= 1
                        let address = poolSlots[slot].address
                        if bindingsBy4[Self.key4(p, address, UInt16(candidate))] == nil {
                            return (address, UInt16(candidate))
                        }
                        candidate += step
                        // Past the end: back to the first port of the range with the candidate's
                        // parity (by 2), or the first port (by 1).
                        if candidate > rangeHigh { candidate = rangeLow + (candidate - rangeLow) % step }
                        if probes == 0 { return nil }
                    }
                }
            }
        }
        return nil
    }

    // MARK: - Bookkeeping

    mutating func addBinding(proto p: UInt8, address6: IPv6Address, port6: UInt16, address4: IPv4Address, port4: UInt16,
                             isStatic: Bool) -> Int32 {
        let slot = (slotsByAddress[Self.key4(p, address4, 0)] ?? []).first { poolSlots[$0].ports.contains(port4) } ?? -1
        let entry = Binding(address6: address6, address4: address4, port6: port6, port4: port4, proto: p,
                            isStatic: isStatic, inUse: true, slot: Int32(slot), sessionCount: 0, firstSession: -1)
        let b: Int32
        if let free = freeBindings.popLast() {
            b = free
            bindings[Int(b)] = entry
        } else {
            b = Int32(bindings.count)
            bindings.append(entry)
        }
        bindingsBy6[Key6(address: address6, port: port6, proto: p)] = b
        bindingsBy4[Self.key4(p, address4, port4)] = b
        bindingCounts[Int(p)] += 1
        if slot >= 0 { poolSlots[slot].taken += 1 }
        hosts[address6, default: Host(sessions: 0, bindings: 0, paired: address4)].bindings += 1
        return b
    }

    mutating func removeBinding(_ b: Int32) {
        let e = bindings[Int(b)]
        bindingsBy6[Key6(address: e.address6, port: e.port6, proto: e.proto)] = nil
        bindingsBy4[Self.key4(e.proto, e.address4, e.port4)] = nil
        if e.slot >= 0 { poolSlots[Int(e.slot)].taken -= 1 }
        bindingCounts[Int(e.proto)] -= 1
        if var host = hosts[e.address6] {
            host.bindings -= 1
            if host.bindings == 0 && host.sessions == 0 { hosts[e.address6] = nil } else { hosts[e.address6] = host }
        }
        bindings[Int(b)].inUse = false
        freeBindings.append(b)
    }

    mutating func addSession(binding b: Int32, remote: IPv4Address, remotePort: UInt16, state: NAT64TCPState?,
                             timer: TimerClass, now: UInt64) {
        let head = bindings[Int(b)].firstSession
        let entry = Session(binding: b, remote: remote, remotePort: remotePort, state: state, timer: timer, inUse: true,
                            expires: 0, timerPrevious: -1, timerNext: -1, bindingPrevious: -1, bindingNext: head)
        let s: Int32
        if let free = freeSessions.popLast() {
            s = free
            sessions[Int(s)] = entry
        } else {
            s = Int32(sessions.count)
            sessions.append(entry)
        }
        if head >= 0 { sessions[Int(head)].bindingPrevious = s }
        bindings[Int(b)].firstSession = s
        bindings[Int(b)].sessionCount += 1
        sessionsByKey[SessionKey(binding: b, remote: remote.rawValue, remotePort: remotePort)] = s
        sessionCounts[Int(bindings[Int(b)].proto)] += 1
        hosts[bindings[Int(b)].address6]?.sessions += 1
        append(s, to: timer, now: now)
    }

    mutating func removeSession(_ s: Int32) {
        let e = sessions[Int(s)]
        unlinkTimer(s)
        if e.bindingPrevious >= 0 { sessions[Int(e.bindingPrevious)].bindingNext = e.bindingNext }
        else { bindings[Int(e.binding)].firstSession = e.bindingNext }
        if e.bindingNext >= 0 { sessions[Int(e.bindingNext)].bindingPrevious = e.bindingPrevious }
        sessionsByKey[SessionKey(binding: e.binding, remote: e.remote.rawValue, remotePort: e.remotePort)] = nil
        let b = bindings[Int(e.binding)]
        sessionCounts[Int(b.proto)] -= 1
        hosts[b.address6]?.sessions -= 1
        bindings[Int(e.binding)].sessionCount -= 1
        sessions[Int(s)].inUse = false
        freeSessions.append(s)
        if bindings[Int(e.binding)].sessionCount == 0 && !b.isStatic { removeBinding(e.binding) }
    }

    func bindingHasRemote(_ b: Int32, _ remote: IPv4Address) -> Bool {
        var s = bindings[Int(b)].firstSession
        while s >= 0 {
            if sessions[Int(s)].remote == remote { return true }
            s = sessions[Int(s)].bindingNext
        }
        return false
    }

    mutating func storeSYN(_ packet: [UInt8], source: IPv4Address, sourcePort: UInt16, destination: IPv4Address,
                           destinationPort: UInt16, now: UInt64) -> Result<NAT64IPv6Side, NAT64Refusal> {
        if storedSYNs.contains(where: {
            $0.source == source && $0.sourcePort == sourcePort && $0.destination == destination
                && $0.destinationPort == destinationPort
        }) { return .failure(.synStored) }  // a retransmission: the first one's clock runs
        guard storedSYNs.count < configuration.maximumStoredSYNs else { return .failure(.synStoreFull) }
        storedSYNs.append(StoredSYN(packet: packet, source: source, sourcePort: sourcePort, destination: destination,
                                    destinationPort: destinationPort,
                                    expires: Self.deadline(now, configuration.timeouts.tcpIncomingSyn)))
        return .failure(.synStored)
    }

    func lifetime(_ timer: TimerClass) -> UInt64 {
        let t = configuration.timeouts
        switch timer {
        case .udp: return t.udp
        case .icmp: return t.icmp
        case .tcpEstablished: return t.tcpEstablished
        case .tcpTransitory: return t.tcpTransitory
        case .tcpIncomingSyn: return t.tcpIncomingSyn
        }
    }

    /// `now` plus `lifetime`, or the end of time when that does not fit (a lifetime of "forever"
    /// neither traps nor wraps to an instant expiry; one class's deadlines keep their order).
    static func deadline(_ now: UInt64, _ lifetime: UInt64) -> UInt64 {
        let (sum, overflow) = now.addingReportingOverflow(lifetime)
        return overflow ? .max : sum
    }

    /// Refreshes a UDP or ICMP session: to the tail of its list with a new expiry.
    mutating func touch(_ s: Int32, now: UInt64) { setTimer(s, sessions[Int(s)].timer, now: now) }

    mutating func setTimer(_ s: Int32, _ timer: TimerClass, now: UInt64) {
        unlinkTimer(s)
        append(s, to: timer, now: now)
    }

    mutating func append(_ s: Int32, to timer: TimerClass, now: UInt64) {
        let t = Int(timer.rawValue)
        sessions[Int(s)].timer = timer
        sessions[Int(s)].expires = Self.deadline(now, lifetime(timer))
        sessions[Int(s)].timerPrevious = timerTails[t]
        sessions[Int(s)].timerNext = -1
        if timerTails[t] >= 0 { sessions[Int(timerTails[t])].timerNext = s } else { timerHeads[t] = s }
        timerTails[t] = s
    }

    mutating func unlinkTimer(_ s: Int32) {
        let e = sessions[Int(s)]
        let t = Int(e.timer.rawValue)
        if e.timerPrevious >= 0 { sessions[Int(e.timerPrevious)].timerNext = e.timerNext } else if timerHeads[t] == s {
            timerHeads[t] = e.timerNext
        }
        if e.timerNext >= 0 { sessions[Int(e.timerNext)].timerPrevious = e.timerPrevious } else if timerTails[t] == s {
            timerTails[t] = e.timerPrevious
        }
        sessions[Int(s)].timerPrevious = -1
        sessions[Int(s)].timerNext = -1
    }
}

// MARK: - The state, as the status shows it

/// One binding as ``NAT64Tables/snapshot(now:limit:)`` reports it.
public struct NAT64BindingView: Hashable, Sendable, Codable {
    /// `tcp`, `udp`, `icmp`.
    public var proto: String
    /// X' and x.
    public var ipv6: String
    /// T and t.
    public var ipv4: String
    /// Fixed by the operator.
    public var isStatic: Bool
    /// Its sessions.
    public var sessions: [NAT64SessionView]
    /// Where it sorts: protocol, then the IPv6 address and port as numbers (not encoded).
    var order: (UInt8, UInt64, UInt64, UInt16) = (0, 0, 0, 0)

    enum CodingKeys: String, CodingKey {
        case proto = "protocol", ipv6, ipv4, isStatic = "static", sessions
    }

    /// Equal in what is shown.
    public static func == (a: Self, b: Self) -> Bool {
        a.proto == b.proto && a.ipv6 == b.ipv6 && a.ipv4 == b.ipv4 && a.isStatic == b.isStatic && a.sessions == b.sessions
    }

    /// Hashes what is shown.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(proto)
        hasher.combine(ipv6)
        hasher.combine(ipv4)
    }
}

/// One session as the status shows it.
public struct NAT64SessionView: Hashable, Sendable, Codable {
    /// The remote, Z:z (and as the IPv6 host sees it, Y').
    public var remote: String
    /// The remote as the IPv6 side addresses it (Y' = Z in the prefix).
    public var remote6: String
    /// The TCP state (nil for UDP and ICMP).
    public var state: String?
    /// Seconds until it runs out.
    public var expiresIn: Double

    enum CodingKeys: String, CodingKey { case remote, remote6, state, expiresIn = "expires_in" }
}

/// The whole state in numbers and (up to a limit) entries.
public struct NAT64Snapshot: Hashable, Sendable, Codable {
    /// Sessions per protocol.
    public var sessions: [String: Int]
    /// Bindings per protocol.
    public var bindings: [String: Int]
    /// Unsolicited IPv4 SYNs kept.
    public var storedSYNs: Int
    /// Sessions that ran out since start.
    public var expired: Int
    /// The bindings (at most the limit asked for, the rest counted in `omitted`).
    public var entries: [NAT64BindingView]
    /// Bindings not listed.
    public var omitted: Int

    enum CodingKeys: String, CodingKey {
        case sessions, bindings, storedSYNs = "stored_syns", expired, entries, omitted
    }

    /// Sorts the entries by protocol, then IPv6 address and port.
    mutating func sort() { entries.sort { $0.order < $1.order } }
}

extension NAT64Tables {
    /// The state at `now`, with at most `limit` bindings listed (sorted by protocol, then IPv6 side).
    public func snapshot(now: UInt64, limit: Int = 1_000) -> NAT64Snapshot {
        var snapshot = unsortedSnapshot(now: now, limit: limit)
        snapshot.sort()
        return snapshot
    }

    /// The snapshot's numbers and (at most `limit`, in table order) entries, without sorting: the
    /// cost under the lock is the entries listed, not the table's size.
    func unsortedSnapshot(now: UInt64, limit: Int) -> NAT64Snapshot {
        var views: [NAT64BindingView] = []
        var i = 0
        while views.count < limit && i < bindings.count {
            defer { i += 1 }
            let b = bindings[i]
            guard b.inUse else { continue }
            var list: [NAT64SessionView] = []
            var s = b.firstSession
            while s >= 0 {
                let e = sessions[Int(s)]
                let remote6 = configuration.pool6.embedding(e.remote)
                let port = b.proto == UInt8(NAT64Protocol.icmp.rawValue) ? "" : ":\(e.remotePort)"
                list.append(NAT64SessionView(
                    remote: "\(e.remote)\(port)", remote6: b.proto == 2 ? "\(remote6)" : "[\(remote6)]\(port)",
                    state: e.state?.name, expiresIn: Double(e.expires > now ? e.expires - now : 0) / 1e9))
                s = e.bindingNext
            }
            let proto = NAT64Protocol(rawValue: Int(b.proto))!
            let six = proto == .icmp ? "\(b.address6)#\(b.port6)" : "[\(b.address6)]:\(b.port6)"
            let four = proto == .icmp ? "\(b.address4)#\(b.port4)" : "\(b.address4):\(b.port4)"
            var view = NAT64BindingView(proto: proto.name, ipv6: six, ipv4: four, isStatic: b.isStatic, sessions: list)
            view.order = (UInt8(b.proto), b.address6.high, b.address6.low, b.port6)
            views.append(view)
        }
        var sessionsByName: [String: Int] = [:]
        var bindingsByName: [String: Int] = [:]
        for p in NAT64Protocol.allCases {
            sessionsByName[p.name] = sessionCounts[p.rawValue]
            bindingsByName[p.name] = bindingCounts[p.rawValue]
        }
        return NAT64Snapshot(sessions: sessionsByName, bindings: bindingsByName, storedSYNs: storedSYNs.count,
                             expired: expiredSessions, entries: views, omitted: bindingCounts.reduce(0, +) - views.count)
    }
}

extension NAT64Snapshot {
    /// The state as lines a person reads: the totals, then each binding with its sessions and
    /// the seconds left on each.
    public var text: String {
        var out = ""
        let protocols = NAT64Protocol.allCases.map(\.name)
        out += "sessions: " + protocols.map { "\($0) \(sessions[$0] ?? 0)" }.joined(separator: ", ")
        out += "; bindings: " + protocols.map { "\($0) \(bindings[$0] ?? 0)" }.joined(separator: ", ")
        out += "; unsolicited SYNs kept: \(storedSYNs); expired since start: \(expired)\n"
        for b in entries {
            out += "\(b.proto) \(b.ipv6) <-> \(b.ipv4)\(b.isStatic ? " (static)" : "")\n"
            for s in b.sessions {
                let state = s.state.map { " \($0)" } ?? ""
                out += "    to \(s.remote) (\(s.remote6))\(state), expires in \(Int(s.expiresIn.rounded(.up))) s\n"
            }
        }
        if omitted > 0 { out += "(\(omitted) more bindings not listed)\n" }
        return out
    }
}

/// What a running `offload nat64` writes to its status file each second.
public struct NAT64StatusFile: Codable, Sendable {
    /// The writer's process ID.
    public var pid: Int32?
    /// When it was written (seconds since 1970).
    public var written: Double?
    /// The state.
    public var state: NAT64Snapshot

    /// A status.
    public init(pid: Int32?, written: Double?, state: NAT64Snapshot) {
        self.pid = pid
        self.written = written
        self.state = state
    }
}
