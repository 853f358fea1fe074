// Stateful NAT64 (RFC 6146) on a sequence of packets from both sides, sharing one state, at a
// clock the input advances: the first bytes choose a small configuration (a pool4 of a few ports so
// that it runs out and ports are reused, small limits, lifetimes of a few seconds so that timers
// fire), then each record is a packet: built from a template (IPv6 TCP, UDP and ICMPv6 echo from a
// few clients; IPv4 replies to the ports earlier outputs took; ICMP errors quoting earlier outputs;
// fragments in either order; hairpinning; unsolicited IPv4) and optionally mutated, or raw bytes.
// After every packet: whatever is emitted parses and has the family it should; the snapshot's
// counts agree with its entries; no limit is exceeded; no binding is left without a session. At the
// end, once every lifetime has passed: nothing is left but the static bindings, and the pool4 gives
// a port again.
import FuzzDriver
import FuzzSupport
import Glibc
import OffloadEngine
import OffloadNAT64
import OffloadSIIT
import OffloadWire

private let second: UInt64 = 1_000_000_000
private let millisecond: UInt64 = 1_000_000

/// The IPv6 hosts.
private let clients = [IPv6Address(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2), IPv6Address(0x2001, 0xdb8, 1, 0, 0, 0, 0, 3),
                       IPv6Address(0x2001, 0xdb8, 2, 0, 0, 0, 0, 7), IPv6Address(0x2001, 0xdb8, 3, 0, 0, 0, 0, 0x99)]
/// The IPv4 servers (the last one is a pool4 address: from IPv6, hairpinning).
private let remotes = [IPv4Address(203, 0, 113, 9), IPv4Address(203, 0, 113, 10), IPv4Address(192, 0, 2, 33),
                       IPv4Address(198, 51, 100, 1)]
/// Time steps, chosen by the top 3 bits of a record's first byte.
private let steps: [UInt64] = [0, 1 * millisecond, 50 * millisecond, 150 * millisecond, 700 * millisecond,
                               1_500 * millisecond, 3 * second, 7 * second]

/// Reads a record's bytes as template parameters (zeros past the end).
private struct Parameters {
    let bytes: [UInt8]
    var offset = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    mutating func byte() -> UInt8 {
        defer { offset += 1 }
        return offset < bytes.count ? bytes[offset] : 0
    }
    mutating func u16() -> UInt16 { UInt16(byte()) << 8 | UInt16(byte()) }
    mutating func rest() -> [UInt8] { offset < bytes.count ? Array(bytes[offset...]) : [] }
}

/// The configuration the first two bytes choose.
private func configuration(_ a: UInt8, _ b: UInt8) -> NAT64Configuration {
    let prefix = a & 0x80 == 0 ? RFC6052Prefix.wellKnown : RFC6052Prefix("2001:db8:64::/96")!
    let pools: [[String]] = [
        ["198.51.100.1:1024-1031"],
        ["198.51.100.1-198.51.100.2:1024-1027"],
        ["tcp=198.51.100.1:1024-1031", "udp=198.51.100.2:1020-1027", "icmp=198.51.100.3:0-3"],
        ["198.51.100.0/30:1030-1031"],
    ]
    var c = NAT64Configuration(pool4: pools[Int(a >> 1) & 3].map { Pool4Entry($0)! }, pool6: prefix)
    c.filtering = a & 1 == 0 ? .endpointIndependent : .addressDependent
    c.maximumSessions = [3, 8, 24, 1_000][Int(a >> 3) & 3]
    c.maximumSessionsPerHost = [1, 3, 10_000, 6][Int(a >> 5) & 3]
    c.maximumStoredSYNs = [0, 1, 2, 10][Int(b) & 3]
    c.maximumHeldFragments = [0, 1, 4, 256][Int(b >> 2) & 3]
    c.maximumPortProbes = [1, 3, 16, 1_024][Int(b >> 4) & 3]
    if b & 0x80 != 0 {
        // One on a pool4 port (allocation must step over it), one outside the pool4.
        c.staticBindings = [
            NAT64StaticBinding("tcp=[2001:db8:1::2]:80=198.51.100.1:1031")!,
            NAT64StaticBinding("udp=[2001:db8:1::3]:5353=192.0.2.200:5353")!,
            NAT64StaticBinding("icmp=[2001:db8:2::7]:7=192.0.2.200:7")!,
        ]
    }
    c.timeouts.udp = 3 * second
    c.timeouts.icmp = 2 * second
    c.timeouts.tcpEstablished = 6 * second
    c.timeouts.tcpTransitory = 2 * second
    c.timeouts.tcpIncomingSyn = 1 * second
    c.timeouts.fragment = 1 * second
    return c
}

/// Applies up to three (offset, xor) mutations from `p` to `packet`.
private func mutate(_ packet: inout [UInt8], _ p: inout Parameters) {
    guard !packet.isEmpty else { return }
    for _ in 0..<Int(p.byte() % 4) {
        let offset = Int(p.u16()) % packet.count
        packet[offset] ^= max(1, p.byte())
    }
}

/// An IPv4 header checksum over `header`.
private func ipv4HeaderChecksum(_ header: ArraySlice<UInt8>) -> UInt16 {
    var sum: UInt32 = 0
    var i = header.startIndex
    while i + 1 < header.endIndex {
        sum += UInt32(header[i]) << 8 | UInt32(header[i + 1])
        i += 2
    }
    while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
    return ~UInt16(sum)
}

/// The fragments of an IPv6 packet without extension headers, cut `cut` bytes into its payload
/// (a multiple of 8), with `identification`.
private func fragments6(_ packet: [UInt8], cut: Int, identification: UInt32) -> [[UInt8]] {
    let next = packet[6]
    let payload = Array(packet[40...])
    let pieces = cut > 0 && cut < payload.count ? [(0, Array(payload[..<cut])), (cut, Array(payload[cut...]))]
        : [(0, payload)]
    return pieces.enumerated().map { i, piece in
        var p = Array(packet[..<40])
        p[6] = 44
        p.storeBigEndian(UInt16(8 + piece.1.count), at: 4)
        let more: UInt16 = i + 1 < pieces.count ? 1 : 0
        var header: [UInt8] = [next, 0, 0, 0, 0, 0, 0, 0]
        header.storeBigEndian(UInt16(piece.0) | more, at: 2)
        header.storeBigEndian(identification, at: 4)
        return p + header + piece.1
    }
}

/// The fragments of an IPv4 packet (20-byte header), cut `cut` bytes into its payload (a multiple of 8).
private func fragments4(_ packet: [UInt8], cut: Int, identification: UInt16) -> [[UInt8]] {
    let payload = Array(packet[20...])
    let pieces = cut > 0 && cut < payload.count ? [(0, Array(payload[..<cut])), (cut, Array(payload[cut...]))]
        : [(0, payload)]
    return pieces.enumerated().map { i, piece in
        var p = Array(packet[..<20])
        p.storeBigEndian(UInt16(20 + piece.1.count), at: 2)
        p.storeBigEndian(identification, at: 4)
        let more: UInt16 = i + 1 < pieces.count ? 0x2000 : 0
        p.storeBigEndian(more | UInt16(piece.0 / 8), at: 6)
        p[10] = 0
        p[11] = 0
        p.storeBigEndian(ipv4HeaderChecksum(p[0..<20]), at: 10)
        return p + piece.1
    }
}

/// What a translated IPv4 packet said: its protocol, addresses and ports (identifier for echo).
private struct Seen4 {
    var proto: UInt8
    var source: IPv4Address
    var destination: IPv4Address
    var sourcePort: UInt16
    var destinationPort: UInt16

    init?(_ p: [UInt8]) {
        guard p.count >= 28, p[0] >> 4 == 4 else { return nil }
        let ihl = Int(p[0] & 0xF) * 4
        guard ihl >= 20, p.count >= ihl + 8 else { return nil }
        proto = p[9]
        source = IPv4Address(p, 12)
        destination = IPv4Address(p, 16)
        if proto == 1 {
            sourcePort = p.loadBigEndian(UInt16.self, at: ihl + 4)
            destinationPort = sourcePort
        } else {
            sourcePort = p.loadBigEndian(UInt16.self, at: ihl)
            destinationPort = p.loadBigEndian(UInt16.self, at: ihl + 2)
        }
    }
}

/// A short ring of recent packets.
private struct Recent {
    var packets: [[UInt8]] = []
    var next = 0
    mutating func add(_ p: [UInt8]) {
        if packets.count < 16 { packets.append(p) } else { packets[next % 16] = p }
        next += 1
    }
    func pick(_ i: UInt8) -> [UInt8]? { packets.isEmpty ? nil : packets[Int(i) % packets.count] }
}

/// The packets one record becomes.
private struct Builder {
    let c: NAT64Configuration
    var outputs4 = Recent()  // IPv4 packets translated from IPv6 (sent to IPv4 hosts)
    var outputs6 = Recent()  // IPv6 packets translated from IPv4 (sent to IPv6 hosts)
    /// The GSO facts of the last packet built, when it was made a super-packet.
    var gso: GSOInfo?
    var poolAddress: IPv4Address { IPv4Address(rawValue: c.pool4[0].addresses.lowerBound) }

    func base6(_ client: IPv6Address, _ remote: IPv6Address) -> PacketBuilder {
        var b = PacketBuilder()
        b.link = .raw
        b.source = .v6(client)
        b.destination = .v6(remote)
        b.options = []
        b.payloadLength = 0
        return b
    }

    func base4(_ source: IPv4Address, _ destination: IPv4Address) -> PacketBuilder {
        var b = PacketBuilder()
        b.link = .raw
        b.source = .v4(source)
        b.destination = .v4(destination)
        b.options = []
        b.payloadLength = 0
        return b
    }

    /// Sets the transport from a selector: TCP with flags, UDP, echo request, echo reply.
    func transport(_ b: inout PacketBuilder, _ kind: UInt8, flags: UInt8, id: UInt16, v6: Bool) {
        switch kind & 3 {
        case 0:
            b.transport = .tcp
            b.flags = TCPFlags(rawValue: UInt16(flags))
        case 1: b.transport = .udp
        case 2: b.transport = .icmp(type: v6 ? 128 : 8, code: 0, restOfHeader: UInt32(id) << 16 | 1)
        default: b.transport = .icmp(type: v6 ? 129 : 0, code: 0, restOfHeader: UInt32(id) << 16 | 1)
        }
    }

    /// Makes `b` (TCP or UDP) a super-packet of 2 to 9 segments, as GRO hands one over, when `select`
    /// asks for it: its segment size, its count, and a short last segment.
    mutating func superPacket(_ b: inout PacketBuilder, _ select: UInt8, v6: Bool) {
        guard b.transport == .tcp || b.transport == .udp else { return }
        let size = [536, 1_000, 1_220, 1_440][Int(select) & 3]
        b.payloadLength = (Int(select >> 2 & 7) + 2) * size - Int(select >> 5) * 37
        let kind: GSOInfo.Kind = b.transport == .tcp ? (v6 ? .tcpv6 : .tcpv4) : (v6 ? .udpv6 : .udpv4)
        gso = GSOInfo(kind: kind, segmentSize: size, segmentCount: (b.payloadLength + size - 1) / size)
    }

    /// IPv6 from a client to a server under the prefix.
    mutating func flow6(_ p: inout Parameters, variant: UInt8) -> [UInt8] {
        let a = p.byte(), s = p.byte(), flags = p.byte(), length = p.byte()
        var b = base6(clients[Int(a) & 3], c.pool6.embedding(remotes[Int(a >> 4) & 3]))
        b.sourcePort = [40_000, 40_001, 40_002, 123][Int(s) & 3]
        b.destinationPort = [80, 443, 53, 5201][Int(s >> 2) & 3]
        transport(&b, a >> 2, flags: flags, id: b.sourcePort, v6: true)
        b.payloadLength = Int(length) * 8
        if s & 0x10 != 0 { b.extensionHeaders = [(IPProtocol(rawValue: 60), [0, 0, 1, 4, 0, 0, 0, 0])] }
        if s & 0x20 != 0 { b.ttl = 1 }
        if s & 0x40 != 0 { b.corruptChecksum = true }
        if s & 0x80 != 0 { superPacket(&b, length, v6: true) }
        return b.ipPacket()
    }

    /// An IPv4 reply to an earlier output (or to the pool4 when there is none).
    mutating func reply4(_ p: inout Parameters, variant: UInt8) -> [UInt8] {
        let pick = p.byte(), s = p.byte(), flags = p.byte(), length = p.byte()
        let o = outputs4.pick(pick).flatMap(Seen4.init)
        var b = base4(o?.destination ?? remotes[Int(pick) & 1], o?.source ?? poolAddress)
        if s & 1 != 0 { b.source = .v4(remotes[Int(s >> 1) & 3]) }  // another remote (filtering)
        b.sourcePort = s & 8 != 0 ? 9_999 : o?.destinationPort ?? 80
        b.destinationPort = o?.sourcePort ?? 1024 + UInt16(pick & 7)
        let kind: UInt8 = switch o?.proto { case 6: 0; case 17: 1; case 1: 3; default: s >> 4 }
        transport(&b, s & 0x10 != 0 ? s >> 5 : kind, flags: flags, id: b.destinationPort, v6: false)
        b.payloadLength = Int(length) * 8
        if variant & 1 != 0 { b.dontFragment = false }
        if s & 0x80 != 0 { b.zeroUDPChecksum = true }
        if flags & 0x80 != 0 && b.transport != .tcp { b.ttl = 1 }
        if length >= 0xC0 && s & 0x80 == 0 { superPacket(&b, length, v6: false) }
        return b.ipPacket()
    }

    /// An ICMP error about an earlier output, from the side it went to.
    mutating func error(_ p: inout Parameters, variant: UInt8) -> [UInt8] {
        let pick = p.byte(), t = p.byte(), cut = p.byte()
        if variant & 1 == 0 {
            let quoted = outputs4.pick(pick) ?? reply4(&p, variant: 0)
            let o = Seen4(quoted)
            var b = base4(t & 0x40 != 0 ? remotes[Int(t) & 3] : o?.destination ?? remotes[0], o?.source ?? poolAddress)
            let (type, code, rest): (UInt8, UInt8, UInt32) = [
                (3, 3, 0), (3, 4, 1_400), (11, 0, 0), (3, 1, 0), (12, 0, 0x0400_0000), (3, 13, 0), (3, 4, 500), (4, 0, 0),
            ][Int(t) & 7]
            b.transport = .icmp(type: type, code: code, restOfHeader: rest)
            b.payload = cut & 0x80 != 0 ? Array(quoted.prefix(28 + Int(cut & 0x7F))) : quoted
            return b.ipPacket()
        }
        let quoted = outputs6.pick(pick) ?? flow6(&p, variant: 0)
        let source = quoted.count >= 40 ? IPv6Address(quoted, 8) : c.pool6.embedding(remotes[0])
        let destination = quoted.count >= 40 ? IPv6Address(quoted, 24) : clients[0]
        var b = base6(t & 0x40 != 0 ? IPv6Address(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1) : destination, source)
        let (type, code, rest): (UInt8, UInt8, UInt32) = [
            (1, 4, 0), (2, 0, 1_280), (3, 0, 0), (4, 0, 6), (1, 0, 0), (4, 1, 40), (2, 0, 600), (1, 3, 0),
        ][Int(t) & 7]
        b.transport = .icmp(type: type, code: code, restOfHeader: rest)
        b.payload = cut & 0x80 != 0 ? Array(quoted.prefix(48 + Int(cut & 0x7F))) : quoted
        return b.ipPacket()
    }

    /// A datagram in two fragments (or one), in an order the parameters choose.
    mutating func fragments(_ p: inout Parameters, variant: UInt8) -> [[UInt8]] {
        let order = p.byte(), cut = p.byte(), id = p.u16()
        let packet = variant & 1 == 0 ? flow6(&p, variant: 0) : reply4(&p, variant: 1)
        let pieces = packet[0] >> 4 == 6
            ? (packet[6] == 60 ? [packet] : fragments6(packet, cut: Int(cut & 0x3F) * 8, identification: UInt32(id) << 8 | 7))
            : fragments4(packet, cut: Int(cut & 0x3F) * 8, identification: id)
        guard pieces.count == 2 else { return pieces }
        switch order & 7 {
        case 0: return pieces
        case 1: return [pieces[1], pieces[0]]
        case 2: return [pieces[0]]
        case 3: return [pieces[1]]
        case 4: return [pieces[0], pieces[1], pieces[1]]
        case 5: return [pieces[1], pieces[1], pieces[0]]
        default: return [pieces[0], pieces[0], pieces[1]]
        }
    }

    /// IPv6 from a client to another client's pool4 address and port (RFC 6146 §3.8).
    func hairpin(_ p: inout Parameters, variant: UInt8) -> [UInt8] {
        let pick = p.byte(), a = p.byte(), flags = p.byte()
        let o = outputs4.pick(pick).flatMap(Seen4.init)
        var b = base6(clients[Int(a) & 3], c.pool6.embedding(o?.source ?? poolAddress))
        b.sourcePort = [40_000, 40_003, 53, 1024][Int(a >> 2) & 3]
        b.destinationPort = o?.sourcePort ?? 1024 + UInt16(pick & 7)
        let kind: UInt8 = switch o?.proto { case 6: 0; case 17: 1; case 1: 2; default: a >> 4 }
        transport(&b, variant & 1 != 0 ? a >> 6 : kind, flags: flags, id: b.destinationPort, v6: true)
        b.payloadLength = Int(flags & 0x1F) * 8
        return b.ipPacket()
    }

    /// IPv4 that opens (or tries to): unsolicited SYNs, to static bindings, to what is not ours.
    func new4(_ p: inout Parameters, variant: UInt8) -> [UInt8] {
        let a = p.byte(), s = p.byte(), flags = p.byte()
        let destination = [poolAddress, IPv4Address(198, 51, 100, 2), IPv4Address(192, 0, 2, 200),
                           IPv4Address(203, 0, 113, 50)][Int(a) & 3]
        var b = base4(remotes[Int(a >> 2) & 3], destination)
        b.sourcePort = [80, 443, 9_999, 53][Int(a >> 4) & 3]
        b.destinationPort = [1024, 1025, 1031, 5353, 80, 7, 1020, 0][Int(s) & 7]
        if s & 0x80 != 0 {
            b.transport = .other(IPProtocol(rawValue: 47))
            b.payloadLength = 16
        } else {
            transport(&b, s >> 3, flags: variant & 1 != 0 ? flags : 0x02, id: b.destinationPort, v6: false)
        }
        return b.ipPacket()
    }

    /// The packets of one record, with GSO facts for a super-packet.
    mutating func packets(kind: UInt8, variant: UInt8, body: [UInt8]) -> [([UInt8], GSOInfo?)] {
        gso = nil
        let out = bytes(kind: kind, variant: variant, body: body)
        // Only a lone flow packet is a super-packet (what it was built from is not quoted or cut).
        let facts = (kind == 1 || kind == 2) && out.count == 1 ? gso : nil
        return out.map { ($0, facts) }
    }

    mutating func bytes(kind: UInt8, variant: UInt8, body: [UInt8]) -> [[UInt8]] {
        var p = Parameters(body)
        var out: [[UInt8]]
        switch kind {
        case 0: return [body]
        case 1: out = [flow6(&p, variant: variant)]
        case 2: out = [reply4(&p, variant: variant)]
        case 3: out = [error(&p, variant: variant)]
        case 4: out = fragments(&p, variant: variant)
        case 5: out = [hairpin(&p, variant: variant)]
        case 6: out = [new4(&p, variant: variant)]
        default:
            // An earlier output sent back in (the other family's dataplane gets it).
            let earlier = variant & 1 == 0 ? outputs4.pick(p.byte()) : outputs6.pick(p.byte())
            out = [earlier ?? body]
        }
        if variant & 2 != 0 {
            for i in out.indices { mutate(&out[i], &p) }
        }
        return out
    }
}

/// The IPv4 address and port ranges a translated packet from IPv6 may use as its source.
private func ownsSource(_ c: NAT64Configuration, proto: UInt8, _ address: IPv4Address, _ port: UInt16) -> Bool {
    let p: NAT64Protocol? = proto == 6 ? .tcp : proto == 17 ? .udp : proto == 1 ? .icmp : nil
    guard let p else { return false }
    if c.pool4.contains(where: { $0.protocols.contains(p) && $0.contains(address) && $0.ports.contains(port) }) { return true }
    return c.staticBindings.contains { $0.proto == p && $0.address4 == address && $0.port4 == port }
}

/// The flow an ICMP error quotes (the packet it is about, from the host the error goes to): its
/// protocol, source and destination with their ports (the identifier for an echo); nil when the
/// packet is no ICMP error, or its quote is a fragment, cut before the ports or of another protocol.
private func quotedFlow(_ f: [UInt8]) -> (NAT64Protocol, IPAddress, UInt16, IPAddress, UInt16)? {
    func flow(_ proto: UInt8, _ l4: Int, echo: Set<UInt8>) -> (NAT64Protocol, UInt16, UInt16)? {
        switch proto {
        case 6 where f.count >= l4 + 4: return (.tcp, f.loadBigEndian(UInt16.self, at: l4), f.loadBigEndian(UInt16.self, at: l4 + 2))
        case 17 where f.count >= l4 + 4: return (.udp, f.loadBigEndian(UInt16.self, at: l4), f.loadBigEndian(UInt16.self, at: l4 + 2))
        case 1, 58:
            guard f.count >= l4 + 6, echo.contains(f[l4]) else { return nil }
            let id = f.loadBigEndian(UInt16.self, at: l4 + 4)
            return (.icmp, id, id)
        default: return nil
        }
    }
    if f[0] >> 4 == 6 {
        guard f.count >= 48 + 40, f[6] == 58, f[40] < 128 else { return nil }
        guard let (p, sp, dp) = flow(f[48 + 6], 88, echo: [128, 129]) else { return nil }
        return (p, .v6(IPv6Address(f, 56)), sp, .v6(IPv6Address(f, 72)), dp)
    }
    let ihl = Int(f[0] & 0xF) * 4
    guard f.count >= ihl + 8 + 20, f[9] == 1, ![0, 8].contains(f[ihl]) else { return nil }
    let inner = ihl + 8
    let innerLength = Int(f[inner] & 0xF) * 4
    guard f[inner] >> 4 == 4, innerLength >= 20, f.loadBigEndian(UInt16.self, at: inner + 6) & 0x1FFF == 0 else { return nil }
    guard let (p, sp, dp) = flow(f[inner + 9], inner + innerLength, echo: [0, 8]) else { return nil }
    return (p, .v4(IPv4Address(f, inner + 12)), sp, .v4(IPv4Address(f, inner + 16)), dp)
}

/// Checks that a translated ICMP error quotes a flow the tables hold a session for (the quote is
/// the packet the error's destination sent, as it sent it): ICMP errors never create or end state, so the session they were matched to is
/// still there, and the quote must have been translated with it.
private func checkQuote(_ f: [UInt8], _ state: NAT64State) {
    guard let (proto, source, sourcePort, destination, destinationPort) = quotedFlow(f) else { return }
    let c = state.configuration
    let found: Bool
    switch (source, destination) {
    case (.v6(let host), .v6(let remote)):
        // To IPv6: the quote is from the host (X', x) to Y' = Pref64::Z.
        guard let z = c.pool6.extracting(remote) else { oracleFailure("an error to IPv6 quotes a packet to \(remote), outside the prefix: \(hex(f))") }
        found = state.withTables { $0.sessionFromIPv6(proto, source: host, sourcePort: sourcePort, destination: z,
                                                      destinationPort: destinationPort) } != nil
    case (.v4(let remote), .v4(let pool)):
        // To IPv4: the quote is from the IPv4 host Z:z to the pool4's (T, t).
        found = state.withTables { $0.sessionFromIPv4(proto, source: remote, sourcePort: sourcePort, destination: pool,
                                                      destinationPort: destinationPort) } != nil
    default:
        oracleFailure("an ICMP error quotes the other family: \(hex(f))")
    }
    if !found { oracleFailure("a translated ICMP error quotes a flow without a session (\(proto.name) \(source):\(sourcePort) -> \(destination):\(destinationPort)): \(hex(f))") }
}

/// Checks one packet's outputs.
private func checkOutputs(_ input: [UInt8], _ out: (forwarded: [[UInt8]], returned: [[UInt8]]), _ c: NAT64Configuration) {
    let family = input.first.map { $0 >> 4 } ?? 0
    // Hairpinning: from IPv6 to a pool4 address under the prefix comes back as IPv6.
    let hairpin = family == 6 && input.count >= 40 && c.pool6.extracting(IPv6Address(input, 24)).map(c.ownsIPv4) == true
    for f in out.forwarded {
        guard let layout = try? PacketLayout(parsing: f.span.bytes, linkType: .raw) else {
            oracleFailure("a translated packet does not parse (\(f.count) bytes): \(hex(f))")
        }
        let v = f[0] >> 4
        if family == 4 && v != 6 { oracleFailure("IPv4 in, IPv\(v) out: \(hex(f))") }
        if family == 6 && v != 4 && !(v == 6 && hairpin) { oracleFailure("IPv6 in, IPv\(v) out (not a hairpin): \(hex(f))") }
        if v == 6 && c.pool6.extracting(IPv6Address(f, 8)) == nil {
            oracleFailure("a translated IPv6 packet's source is outside the prefix: \(hex(f))")
        }
        guard v == 4, !layout.isFragment, layout.hasTransportHeader else { continue }
        let t = layout.transportOffset
        let proto = f[9]
        let isEcho = proto == 1 && (f[t] == 8 || f[t] == 0)
        if proto == 6 || proto == 17 || isEcho {
            let port = f.loadBigEndian(UInt16.self, at: isEcho ? t + 4 : t)
            if !ownsSource(c, proto: proto, IPv4Address(f, 12), port) {
                oracleFailure("a packet from IPv6 left with a source not in the pool4 or a static binding: \(hex(f))")
            }
        }
    }
    for r in out.returned {
        guard (try? PacketLayout(parsing: r.span.bytes, linkType: .raw)) != nil else {
            oracleFailure("a packet sent back does not parse (\(r.count) bytes): \(hex(r))")
        }
        if r[0] >> 4 != family { oracleFailure("IPv\(family) in, IPv\(r[0] >> 4) sent back: \(hex(r))") }
    }
}

/// Checks the tables (read without expiring anything).
private func checkTables(_ state: NAT64State, now: UInt64) {
    let c = state.configuration
    let (snapshot, total) = state.withTables { ($0.snapshot(now: now, limit: 10_000), $0.sessionCount) }
    let longest = [c.timeouts.udp, c.timeouts.icmp, c.timeouts.tcpEstablished, c.timeouts.tcpTransitory].max()!
    for p in NAT64Protocol.allCases {
        let sessions = snapshot.sessions[p.name] ?? -1, bindings = snapshot.bindings[p.name] ?? -1
        if sessions < 0 || bindings < 0 { oracleFailure("a negative or missing count for \(p.name): \(snapshot)") }
        let entries = snapshot.entries.filter { $0.proto == p.name }
        if entries.count != bindings { oracleFailure("\(bindings) \(p.name) bindings counted, \(entries.count) listed") }
        let listed = entries.reduce(0) { $0 + $1.sessions.count }
        if listed != sessions { oracleFailure("\(sessions) \(p.name) sessions counted, \(listed) listed") }
        if Set(entries.map(\.ipv4)).count != entries.count { oracleFailure("two \(p.name) bindings share an IPv4 side") }
        if Set(entries.map(\.ipv6)).count != entries.count { oracleFailure("two \(p.name) bindings share an IPv6 side") }
        for e in entries {
            if e.sessions.isEmpty && !e.isStatic { oracleFailure("a dynamic binding without sessions: \(e)") }
            if Set(e.sessions.map(\.remote)).count != e.sessions.count { oracleFailure("a binding lists a remote twice: \(e)") }
            for s in e.sessions where s.expiresIn > Double(longest) / 1e9 {
                oracleFailure("a session expires in \(s.expiresIn) s, beyond every lifetime: \(e)")
            }
        }
    }
    if snapshot.omitted != 0 { oracleFailure("\(snapshot.omitted) bindings omitted below the limit") }
    let sum = NAT64Protocol.allCases.reduce(0) { $0 + (snapshot.sessions[$1.name] ?? 0) }
    if sum != total { oracleFailure("sessions per protocol sum to \(sum), the total says \(total)") }
    if total > c.maximumSessions { oracleFailure("\(total) sessions, above the limit of \(c.maximumSessions)") }
    if snapshot.storedSYNs > c.maximumStoredSYNs { oracleFailure("\(snapshot.storedSYNs) SYNs kept, above the limit") }
    // Per IPv6 host (the binding's IPv6 side without its port or identifier).
    var perHost: [Substring: Int] = [:]
    for e in snapshot.entries {
        let host = e.ipv6.hasPrefix("[") ? e.ipv6.dropFirst().prefix { $0 != "]" } : e.ipv6.prefix { $0 != "#" }
        perHost[host, default: 0] += e.sessions.count
    }
    if let (host, n) = perHost.first(where: { $0.value > c.maximumSessionsPerHost }) {
        oracleFailure("\(host) has \(n) sessions, above the per-host limit of \(c.maximumSessionsPerHost)")
    }
}

/// FUZZ_NAT64_TRACE=1: each packet in and out, in hex, on standard error (to read a crash input).
private let tracing = getenv("FUZZ_NAT64_TRACE") != nil

/// Standard error, for the trace.
private struct StandardError: TextOutputStream {
    mutating func write(_ string: String) { _ = string.withCString { unsafe Glibc.write(2, $0, strlen($0)) } }
}
nonisolated(unsafe) private var standardError = StandardError()

private func hex(_ bytes: [UInt8]) -> String {
    bytes.prefix(tracing ? 4_096 : 96).map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNAT64(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let c = configuration(input.byte(), input.byte())
    let mtus = input.byte()
    var dataplane = NAT64OfflineDataplane(configuration: c, mtu4: mtus & 1 == 0 ? 65_535 : 576,
                                          mtu6: mtus & 2 == 0 ? 65_535 : 1_280)
    var builder = Builder(c: c)
    var now: UInt64 = 1 * second
    var records = 0
    while !input.isEmpty && records < 128 {
        records += 1
        let flags = input.byte()
        let body = input.take(Int(input.u16()) % 2_048)
        now += steps[Int(flags >> 5)]
        for (packet, gso) in builder.packets(kind: flags & 7, variant: (flags >> 3) & 3, body: body) {
            let out = dataplane.translate(packet, gso: gso, now: now)
            if tracing {
                print("t=\(Double(now) / 1e9) in\(gso.map { " (\($0))" } ?? "") \(hex(packet))", to: &standardError)
                for f in out.forwarded { print("  forwarded \(hex(f))", to: &standardError) }
                for r in out.returned { print("  returned \(hex(r))", to: &standardError) }
            }
            checkOutputs(packet, out, c)
            // The three findings of Fuzz/Corpus/FuzzNAT64/ (an error from a pool4 address, one about a
            // hairpinned packet, one quoting pool4 -> pool4) are checked like every other error.
            for f in out.forwarded { checkQuote(f, dataplane.state) }
            for f in out.forwarded where f.first.map({ $0 >> 4 }) == 4 { builder.outputs4.add(f) }
            for f in out.forwarded where f.first.map({ $0 >> 4 }) == 6 { builder.outputs6.add(f) }
            checkTables(dataplane.state, now: now)
        }
        // Now and then the status writer's path: expiry outside the stage, and its snapshot.
        if flags & 0x18 == 0x18 && flags & 7 == 0 {
            _ = dataplane.state.snapshot(now: now, limit: 3)
            checkTables(dataplane.state, now: now)
        }
    }
    // Every lifetime passes: an established session goes to TRANS first, then away.
    for _ in 0..<2 {
        now += 3_600 * second
        while dataplane.state.expire(now: now, limit: 256) > 0 {}
    }
    checkTables(dataplane.state, now: now)
    let left = dataplane.state.withTables { $0.snapshot(now: now) }
    if left.sessions.values.reduce(0, +) != 0 || left.storedSYNs != 0 {
        oracleFailure("after every lifetime passed, sessions or SYNs are left: \(left.text)")
    }
    if left.bindings.values.reduce(0, +) != c.staticBindings.count {
        oracleFailure("after every lifetime passed, dynamic bindings are left: \(left.text)")
    }
    // The pool4 is whole again: a new flow of each protocol it serves gets a port (from a host of
    // its own, under the per-host limit; enough probes to step over a static binding's port).
    for p in NAT64Protocol.allCases where c.maximumPortProbes >= 16 && c.pool4.contains(where: { $0.protocols.contains(p) }) {
        let host = IPv6Address(0x2001, 0xdb8, 9, 0, 0, 0, 0, UInt16(p.rawValue + 1))
        let result = dataplane.state.withTables {
            $0.fromIPv6(p, source: host, sourcePort: 50_000, destination: remotes[0], destinationPort: 53,
                        tcpFlags: 0x02, now: now)
        }
        if case .failure(let refusal) = result {
            oracleFailure("after every lifetime passed, a new \(p.name) flow is refused (\(refusal)): a pool4 port leaked")
        }
    }
    return 0
}

/// The entry point SwiftPM links as `main`: libFuzzer's driver.
@_cdecl("FuzzNAT64_main")
public func fuzzNAT64Main(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    fuzz_driver_main(argc, argv)
}
