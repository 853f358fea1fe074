import OffloadEngine
import OffloadForwarder
import OffloadSIIT
import OffloadWire

extension NAT64Stage {
    /// What the slow path made of one packet.
    enum Outcome {
        case translated([[UInt8]], toIPv6: Bool, error: Bool, hairpin: Bool)
        case reply([UInt8], NAT64DropReason)
        case drop(NAT64DropReason)
        /// A fragment waiting for its first (counted as held).
        case held
    }

    /// The slow path: super-packets are segmented first, then each packet is looked up and
    /// translated whole. The timers' errors for the IPv4 side leave here, with an IPv4 packet.
    public mutating func processWhole(_ packet: [UInt8], gso: GSOInfo?, direction: Direction, egressMTU: Int)
        -> StageRewrite
    {
        statistics.slowPath += 1
        var result = StageRewrite()
        let family = packet.first.map { $0 >> 4 } ?? 0
        if family == 4 {
            for syn in state.takePendingToIPv4() {
                guard syn.count >= 20 else { continue }
                // RFC 5382 REQ-4: "port unreachable", from the address the SYN was sent to.
                if let error = unsafe syn.withUnsafeBytes({ raw in
                    unsafe ICMPErrorBuilder.ipv4(type: 3, code: 3, restOfHeader: 0, quoting: raw.bytes,
                                                 source: IPv4Address(syn, 16))
                }) {
                    sendError(error, into: &result)
                }
            }
        }
        let packets = GSOSegmenter.packets(of: packet, gso: gso)
        // A super-packet counts once; its segments share their headers and their fate (the first decides).
        var first: Outcome?
        for p in packets {
            let outcome = family == 6 ? whole6(p, egressMTU: egressMTU) : family == 4 ? whole4(p, egressMTU: egressMTU)
                : .drop(.malformed)
            switch outcome {
            case .translated(let out, _, _, _): result.forward += out
            case .reply(let error, _):
                sendError(error, into: &result)
            case .drop, .held: break
            }
            if first == nil { first = outcome }
        }
        switch first {
        case .translated(_, let toIPv6, let error, let hairpin):
            if hairpin { statistics.hairpinned += 1 } else if toIPv6 { statistics.toIPv6 += 1 } else { statistics.toIPv4 += 1 }
            if error { statistics.errorsTranslated += 1 }
            if packets.count > 1 { statistics.superPackets += 1 }
        case .reply(_, let reason), .drop(let reason):
            statistics.dropped[reason, default: 0] += 1
        case .held:
            statistics.fragmentsHeld += 1
        case nil:
            break
        }
        return result
    }

    /// Sends an ICMP error the translator made itself, at a limited rate (RFC 4443 §2.4 (f), RFC
    /// 1812 §4.3.2.8): a flood of refused packets from spoofed sources must not make one error each.
    mutating func sendError(_ error: [UInt8], into result: inout StageRewrite) {
        guard errorLimiter.allow(now: now) else {
            statistics.errorsSuppressed += 1
            return
        }
        result.replies.append(error)
        statistics.errorsSent += 1
    }

    // MARK: - Helpers on whole packets

    /// Rewrites the 16-bit field at `offset` and updates the checksum at `checksum` (when it lies
    /// inside the bytes; a UDP checksum of zero, "none", stays zero), as RFC 1624 does.
    static func rewrite(_ p: inout [UInt8], at offset: Int, to value: UInt16, checksum: Int?, udp: Bool = false, end: Int) {
        guard offset + 2 <= end else { return }
        let old = p.loadBigEndian(UInt16.self, at: offset)
        p.storeBigEndian(value, at: offset)
        guard let c = checksum, c + 2 <= end else { return }
        let field = p.loadBigEndian(UInt16.self, at: c)
        if udp && field == 0 { return }
        let new = InternetChecksum.update(field, replacing: old, with: value)
        p.storeBigEndian(udp && new == 0 ? 0xFFFF : new, at: c)
    }

    /// Where the checksum of an L4 header at `l4` is, for a protocol.
    static func checksumOffset(_ proto: UInt8, l4: Int) -> Int? {
        switch proto {
        case 6: l4 + 16
        case 17: l4 + 6
        case 1, 58: l4 + 2
        default: nil
        }
    }

    /// The stateless translation with one session's addresses: X' ↔ T, and the prefix for the rest.
    mutating func translate(_ p: [UInt8], host: IPv6Address, as address: IPv4Address, egressMTU: Int, toIPv6: Bool,
                            error: Bool) -> Outcome {
        var c = configuration.translation
        c.eam = EAMTable([EAMTable.Entry(ipv6: IPv6Prefix(host, length: 128)!, ipv4: IPv4Prefix(address, length: 32)!)!])
        translator.configuration = c
        switch translator.translate(p, egressMTU: egressMTU) {
        case .translated(let out): return .translated(out, toIPv6: toIPv6, error: error, hairpin: false)
        case .reply(let bytes, _): return .reply(bytes, .notTranslated)
        case .drop(let reason): return .drop(reason == .malformed ? .malformed : .notTranslated)
        }
    }

    /// A refusal from the tables as an outcome (with the ICMPv6 error RFC 6146 gives, from IPv6).
    func refused(_ refusal: NAT64Refusal, quoting p: [UInt8], fromIPv6: Bool) -> Outcome {
        let reason = NAT64DropReason(refusal)
        guard fromIPv6, let code = refusal.icmpv6Code else { return .drop(reason) }
        guard let error = unsafe p.withUnsafeBytes({ raw in
            unsafe ICMPErrorBuilder.ipv6(type: 1, code: code, restOfHeader: 0, quoting: raw.bytes, source: configuration.ownIPv6)
        })
        else { return .drop(reason) }
        return .reply(error, reason)
    }

    // MARK: - IPv6 → IPv4, whole

    mutating func whole6(_ packet: [UInt8], egressMTU: Int) -> Outcome {
        var p = packet
        guard p.count >= 40 else { return .drop(.malformed) }
        let end = 40 + Int(p.loadBigEndian(UInt16.self, at: 4))
        guard end <= p.count, end > 40 else { return .drop(.malformed) }
        let chain: SIITTranslator.IPv6Chain
        do { chain = try SIITTranslator.walk(p, end: end) } catch {
            switch error {
            case .malformed: return .drop(.malformed)
            case .refused:
                // The stateless translator answers refused extension headers.
                translator.configuration = configuration.translation
                if case .reply(let bytes, _) = translator.translate(p, egressMTU: egressMTU) { return .reply(bytes, .notTranslated) }
                return .drop(.notTranslated)
            }
        }
        let source = IPv6Address(p, 8), destination = IPv6Address(p, 24)
        guard let z = configuration.pool6.extracting(destination) else { return .drop(.notOurs) }
        let u = chain.upperOffset
        let isFragment = chain.fragment.map { $0.more || $0.offset != 0 } ?? false
        // RFC 8200 §4.5: a fragment that would end past 65 535 bytes of reassembled payload.
        if let f = chain.fragment, f.offset + (end - u) > 65_535 { return .drop(.malformed) }
        switch chain.upper {
        case .icmpv6:
            guard !isFragment else { return .drop(.notTranslated) }
            guard end >= u + 8 else { return .drop(.malformed) }
            let type = p[u]
            if type < 128 {
                return error6(&p, end: end, u: u, egressMTU: egressMTU)
            }
            guard type == 128 || type == 129 else { return .drop(.notTranslated) }
            if owned.contains(z) { return hairpin(p, end: end, u: u, proto: .icmp, z: z) }
            let id = p.loadBigEndian(UInt16.self, at: u + 4)
            switch state.withTables({
                $0.fromIPv6(.icmp, source: source, sourcePort: id, destination: z, destinationPort: id,
                            creates: type == 128, now: now)
            }) {
            case .failure(let refusal): return refused(refusal, quoting: packet, fromIPv6: true)
            case .success(let side):
                Self.rewrite(&p, at: u + 4, to: side.port, checksum: u + 2, end: end)
                return translate(p, host: source, as: side.address, egressMTU: egressMTU, toIPv6: false, error: false)
            }
        case .tcp, .udp:
            let proto: NAT64Protocol = chain.upper == .tcp ? .tcp : .udp
            if let f = chain.fragment, f.offset != 0 {
                let key = Fragment6Key(source: source, destination: destination, identification: f.identification,
                                       proto: chain.upper.rawValue)
                guard let side = fragments6.side(key, now: now) else {
                    return fragments6.hold(key, packet, now: now, lifetime: configuration.timeouts.fragment,
                                           capacity: configuration.maximumHeldFragments) ? .held : .drop(.fragmentWithoutFirst)
                }
                return translate(p, host: source, as: side.address, egressMTU: egressMTU, toIPv6: false, error: false)
            }
            guard end >= u + (proto == .tcp ? 20 : 8) else { return .drop(.malformed) }
            // IPv6 UDP must carry a checksum (RFC 8200 §8.1).
            if proto == .udp && p.loadBigEndian(UInt16.self, at: u + 6) == 0 { return .drop(.malformed) }
            if owned.contains(z) {
                return isFragment ? .drop(.notTranslated) : hairpin(p, end: end, u: u, proto: proto, z: z)
            }
            let sourcePort = p.loadBigEndian(UInt16.self, at: u), destinationPort = p.loadBigEndian(UInt16.self, at: u + 2)
            let flags = proto == .tcp ? p[u + 13] : 0
            switch state.withTables({
                $0.fromIPv6(proto, source: source, sourcePort: sourcePort, destination: z, destinationPort: destinationPort,
                            tcpFlags: flags, now: now)
            }) {
            case .failure(let refusal): return refused(refusal, quoting: packet, fromIPv6: true)
            case .success(let side):
                Self.rewrite(&p, at: u, to: side.port, checksum: Self.checksumOffset(chain.upper.rawValue, l4: u),
                             udp: proto == .udp, end: end)
                var outcome = translate(p, host: source, as: side.address, egressMTU: egressMTU, toIPv6: false, error: false)
                if let f = chain.fragment, f.more {
                    let key = Fragment6Key(source: source, destination: destination, identification: f.identification,
                                           proto: chain.upper.rawValue)
                    let waiting = fragments6.learn(key, side, now: now, lifetime: configuration.timeouts.fragment)
                    outcome = appending(waiting, to: outcome, egressMTU: egressMTU)
                }
                return outcome
            }
        default:
            return .drop(.unsupportedProtocol)
        }
    }

    /// The fragments that waited for their first, translated after it.
    mutating func appending(_ waiting: [[UInt8]], to outcome: Outcome, egressMTU: Int) -> Outcome {
        guard !waiting.isEmpty, case .translated(var out, let toIPv6, let error, let hairpin) = outcome else { return outcome }
        for fragment in waiting {
            let more = toIPv6 ? whole4(fragment, egressMTU: egressMTU) : whole6(fragment, egressMTU: egressMTU)
            if case .translated(let o, _, _, _) = more { out += o }
        }
        return .translated(out, toIPv6: toIPv6, error: error, hairpin: hairpin)
    }

    /// An ICMPv6 error from the IPv6 side (from the host, or a router before it) about a packet that
    /// came from IPv4: the session is the quoted packet's, seen from its destination (X', x); the
    /// quoted destination port goes back to the pool4's, and the whole is translated. Nothing in the
    /// tables changes.
    mutating func error6(_ p: inout [UInt8], end: Int, u: Int, egressMTU: Int) -> Outcome {
        let q = u + 8
        // A quote that is not an IPv6 header, or cut before its ports: malformed.
        guard end >= q + 40, p[q] >> 4 == 6 else { return .drop(.malformed) }
        let innerSource = IPv6Address(p, q + 8), innerDestination = IPv6Address(p, q + 24)
        let next = p[q + 6], l4 = q + 40
        guard let z = configuration.pool6.extracting(innerSource) else { return .drop(.noSession) }
        // About a hairpinned packet (its source a pool4 address under the prefix): the error would
        // have to be hairpinned too, which this translator does not do; dropped, not mistranslated.
        guard !owned.contains(z) else { return .drop(.notTranslated) }
        let proto: NAT64Protocol, portOffset: Int
        switch next {
        case 6: (proto, portOffset) = (.tcp, 2)
        case 17: (proto, portOffset) = (.udp, 2)
        case 58 where end >= l4 + 8 && [128, 129].contains(p[l4]): (proto, portOffset) = (.icmp, 4)
        default: return .drop(.notTranslated)
        }
        guard end >= l4 + 4 + (proto == .icmp ? 4 : 0) else { return .drop(.malformed) }
        let hostPort = p.loadBigEndian(UInt16.self, at: l4 + portOffset)
        let remotePort = proto == .icmp ? hostPort : p.loadBigEndian(UInt16.self, at: l4)
        guard let side = state.withTables({
            $0.sessionFromIPv6(proto, source: innerDestination, sourcePort: hostPort, destination: z, destinationPort: remotePort)
        })
        else { return .drop(.noSession) }
        Self.rewrite(&p, at: l4 + portOffset, to: side.port, checksum: Self.checksumOffset(next, l4: l4), udp: proto == .udp,
                     end: end)
        return translate(p, host: innerDestination, as: side.address, egressMTU: egressMTU, toIPv6: false, error: true)
    }

    /// RFC 6146 §3.8: from one IPv6 host to a pool4 address (another's binding). The packet is
    /// mapped out (the source's binding) and back in (the destination's), and stays IPv6: its
    /// source becomes the pool4 address under the prefix, its destination the other host.
    mutating func hairpin(_ packet: [UInt8], end: Int, u: Int, proto: NAT64Protocol, z: IPv4Address) -> Outcome {
        var p = packet
        let source = IPv6Address(p, 8), destination = IPv6Address(p, 24)
        let isICMP = proto == .icmp
        let sourcePort = p.loadBigEndian(UInt16.self, at: isICMP ? u + 4 : u)
        let destinationPort = isICMP ? sourcePort : p.loadBigEndian(UInt16.self, at: u + 2)
        let flags = proto == .tcp ? p[u + 13] : 0
        let creates = !isICMP || p[u] == 128
        // Out through the sender's binding, then in through the destination's; a refusal on the way
        // out is answered as any from IPv6 is, one on the way in is dropped with its reason.
        enum Hairpin { case both(NAT64IPv4Side, NAT64IPv6Side), refusedOut(NAT64Refusal), refusedIn(NAT64Refusal) }
        let outcome: Hairpin = state.withTables { tables in
            let out: NAT64IPv4Side
            switch tables.fromIPv6(proto, source: source, sourcePort: sourcePort, destination: z,
                                   destinationPort: destinationPort, tcpFlags: flags, creates: creates, now: now) {
            case .failure(let refusal): return .refusedOut(refusal)
            case .success(let side): out = side
            }
            switch tables.fromIPv4(proto, source: out.address, sourcePort: out.port, destination: z,
                                   destinationPort: isICMP ? out.port : destinationPort, tcpFlags: flags, creates: creates,
                                   now: now) {
            case .failure(let refusal): return .refusedIn(refusal)
            case .success(let back): return .both(out, back)
            }
        }
        let out: NAT64IPv4Side, back: NAT64IPv6Side
        switch outcome {
        case .refusedOut(let refusal): return refused(refusal, quoting: packet, fromIPv6: true)
        case .refusedIn(let refusal): return refused(refusal, quoting: packet, fromIPv6: false)
        case .both(let o, let b): (out, back) = (o, b)
        }
        let newSource = configuration.pool6.embedding(out.address)
        let checksum = Self.checksumOffset(isICMP ? 58 : proto == .tcp ? 6 : 17, l4: u)!
        if checksum + 2 <= end {
            let field = p.loadBigEndian(UInt16.self, at: checksum)
            if !(proto == .udp && field == 0) {
                let delta = newSource.wordSum + back.address.wordSum - (source.wordSum + destination.wordSum)
                let new = InternetChecksum.update(field, adding: delta)
                p.storeBigEndian(proto == .udp && new == 0 ? 0xFFFF : new, at: checksum)
            }
        }
        newSource.write(to: &p, at: 8)
        back.address.write(to: &p, at: 24)
        if isICMP {
            Self.rewrite(&p, at: u + 4, to: back.port, checksum: checksum, end: end)
        } else {
            Self.rewrite(&p, at: u, to: out.port, checksum: checksum, udp: proto == .udp, end: end)
            Self.rewrite(&p, at: u + 2, to: back.port, checksum: checksum, udp: proto == .udp, end: end)
        }
        return .translated([p], toIPv6: true, error: false, hairpin: true)
    }

    // MARK: - IPv4 → IPv6, whole

    mutating func whole4(_ packet: [UInt8], egressMTU: Int) -> Outcome {
        var p = packet
        guard p.count >= 20 else { return .drop(.malformed) }
        let ihl = Int(p[0] & 0x0F) * 4
        let total = Int(p.loadBigEndian(UInt16.self, at: 2))
        guard ihl >= 20, total >= ihl, total <= p.count else { return .drop(.malformed) }
        let source = IPv4Address(p, 12), destination = IPv4Address(p, 16)
        guard owned.contains(destination) else { return .drop(.notOurs) }
        // From one of the translator's own addresses, on the IPv4 side: spoofed.
        guard !owned.contains(source) else { return .drop(.notOurs) }
        let flags = p.loadBigEndian(UInt16.self, at: 6)
        let offset = Int(flags & 0x1FFF) * 8, more = flags & 0x2000 != 0
        let u = ihl
        // A fragment that would end past the 65 535 bytes an IPv4 datagram can have.
        guard offset + total <= 65_535 else { return .drop(.malformed) }
        switch p[9] {
        case 1:
            guard offset == 0 && !more else { return .drop(.notTranslated) }
            guard total >= u + 8 else { return .drop(.malformed) }
            let type = p[u]
            if ICMPTranslation.isError(type, version6: false) {
                return error4(&p, end: total, u: u, destination: destination, egressMTU: egressMTU)
            }
            guard type == 0 || type == 8 else { return .drop(.notTranslated) }
            let id = p.loadBigEndian(UInt16.self, at: u + 4)
            switch state.withTables({
                $0.fromIPv4(.icmp, source: source, sourcePort: id, destination: destination, destinationPort: id,
                            creates: type == 8, packet: packet, now: now)
            }) {
            case .failure(let refusal): return refused(refusal, quoting: packet, fromIPv6: false)
            case .success(let side):
                Self.rewrite(&p, at: u + 4, to: side.port, checksum: u + 2, end: total)
                return translate(p, host: side.address, as: destination, egressMTU: egressMTU, toIPv6: true, error: false)
            }
        case 6, 17:
            let proto: NAT64Protocol = p[9] == 6 ? .tcp : .udp
            let key = Fragment4Key(source: source, destination: destination, identification: p.loadBigEndian(UInt16.self, at: 4),
                                   proto: p[9])
            if offset != 0 {
                guard let side = fragments4.side(key, now: now) else {
                    return fragments4.hold(key, packet, now: now, lifetime: configuration.timeouts.fragment,
                                           capacity: configuration.maximumHeldFragments) ? .held : .drop(.fragmentWithoutFirst)
                }
                return translate(p, host: side.address, as: destination, egressMTU: egressMTU, toIPv6: true, error: false)
            }
            guard total >= u + (proto == .tcp ? 20 : 8) else { return .drop(.malformed) }
            let sourcePort = p.loadBigEndian(UInt16.self, at: u), destinationPort = p.loadBigEndian(UInt16.self, at: u + 2)
            switch state.withTables({
                $0.fromIPv4(proto, source: source, sourcePort: sourcePort, destination: destination,
                            destinationPort: destinationPort, tcpFlags: proto == .tcp ? p[u + 13] : 0, packet: packet, now: now)
            }) {
            case .failure(let refusal): return refused(refusal, quoting: packet, fromIPv6: false)
            case .success(let side):
                Self.rewrite(&p, at: u + 2, to: side.port, checksum: Self.checksumOffset(p[9], l4: u), udp: proto == .udp,
                             end: total)
                var outcome = translate(p, host: side.address, as: destination, egressMTU: egressMTU, toIPv6: true, error: false)
                if more {
                    let waiting = fragments4.learn(key, side, now: now, lifetime: configuration.timeouts.fragment)
                    outcome = appending(waiting, to: outcome, egressMTU: egressMTU)
                }
                return outcome
            }
        default:
            return .drop(.unsupportedProtocol)
        }
    }

    /// An ICMPv4 error to a pool4 address about a packet the translator sent from it: the session is
    /// the quoted packet's (T, t) → Z:z, which must exist; the quoted source port goes back to the
    /// IPv6 host's, and the whole is translated. Nothing in the tables changes.
    mutating func error4(_ p: inout [UInt8], end: Int, u: Int, destination: IPv4Address, egressMTU: Int) -> Outcome {
        let q = u + 8
        // A quote that is not an IPv4 header, or cut before its ports: malformed.
        guard end >= q + 20, p[q] >> 4 == 4 else { return .drop(.malformed) }
        let innerIHL = Int(p[q] & 0x0F) * 4
        let l4 = q + innerIHL
        guard innerIHL >= 20 else { return .drop(.malformed) }
        let innerSource = IPv4Address(p, q + 12), innerDestination = IPv4Address(p, q + 16)
        // The quote must be of a packet sent from the address the error came to.
        guard innerSource == destination else { return .drop(.noSession) }
        // The translator never sends from one pool4 address to another (hairpinned packets stay
        // IPv6): such a quote is forged.
        guard !owned.contains(innerDestination) else { return .drop(.noSession) }
        let next = p[q + 9]
        let proto: NAT64Protocol, portOffset: Int
        switch next {
        case 6: (proto, portOffset) = (.tcp, 0)
        case 17: (proto, portOffset) = (.udp, 0)
        case 1 where end >= l4 + 8 && [0, 8].contains(p[l4]): (proto, portOffset) = (.icmp, 4)
        default: return .drop(.notTranslated)
        }
        guard end >= l4 + 4 + (proto == .icmp ? 4 : 0) else { return .drop(.malformed) }
        let poolPort = p.loadBigEndian(UInt16.self, at: l4 + portOffset)
        let remotePort = proto == .icmp ? poolPort : p.loadBigEndian(UInt16.self, at: l4 + 2)
        guard let side = state.withTables({
            $0.sessionFromIPv4(proto, source: innerDestination, sourcePort: remotePort, destination: innerSource,
                               destinationPort: poolPort)
        })
        else { return .drop(.noSession) }
        Self.rewrite(&p, at: l4 + portOffset, to: side.port, checksum: Self.checksumOffset(next, l4: l4), udp: proto == .udp,
                     end: end)
        return translate(p, host: side.address, as: destination, egressMTU: egressMTU, toIPv6: true, error: true)
    }
}

extension IPv4Address {
    /// Writes the address at `offset`.
    func write(to bytes: inout [UInt8], at offset: Int) { bytes.storeBigEndian(rawValue, at: offset) }
}

extension IPv6Address {
    /// Writes the address at `offset`.
    func write(to bytes: inout [UInt8], at offset: Int) {
        bytes.storeBigEndian(high, at: offset)
        bytes.storeBigEndian(low, at: offset + 8)
    }
}
