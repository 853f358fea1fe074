// Two IKEv2 engines with an established IKE SA, driven by arbitrary payload chains sealed with the
// SA's real keys: CREATE_CHILD_SA and INFORMATIONAL requests and responses with message IDs near
// the expected ones (SA, KE, Nonce, TSi/TSr, Delete, Notify with REKEY_SA, ...), time passing
// (rekeys, liveness, retransmissions) and the engines' own messages delivered between them, so
// that selector narrowing, Delete, CHILD_SA and IKE SA rekeying are reached.
//
// Oracles: no crash (ASan); no CHILD_SA at either end with selectors outside its child's
// configured ones; a request outside the message-ID window (RFC 7296 §2.3: the expected ID, or the
// one before for a retransmission) is never answered and never moves the window; the window moves
// by at most one per request; a response to no outstanding request changes nothing.
//
// Determinism: each input gets a freshly established pair (nothing carries over from earlier
// inputs) whose nonces, SPIs and timer jitter come from a seeded generator
// (IKEEngine._fuzzSeedRandom, for fuzzing only), so an input runs the same way each time. The key
// exchange's keys stay libcrypto's (random), and with them the SK keys; no path depends on their
// values. The input names SPIs by position (the i-th CHILD_SA's) and message IDs relative to the
// receiver's expected one.
//
// Hub mode (first byte 0xE0 or more): one engine is a hub with several connections (site A at one
// address, site B in a prefix, road warriors from anywhere by identity, one named and one any),
// selectors with protocols and ports; up to three peers, each with an identity, a key, an address
// (as the hub sees it: behind a NAT or not), a port and selectors chosen by the input, establish
// to it and then: their NATs rebind (the peer is seen from elsewhere), they send sealed requests
// (CREATE_CHILD_SA with selectors and ports to narrow, INFORMATIONAL), the dataplane reports moves
// (`peerMoved`), old messages are replayed from other sources, time passes (`tick`,
// `keepalives`), and the hub reloads another configuration (`reload`). Oracles: every hub CHILD_SA
// belongs to a connection whose remote id accepts its peer's identity, whose key the peer holds,
// and whose remote_addrs accepts the address the hub sends to; its selectors (ports too) lie inside
// its child's; a replayed message never moves a peer; `peerMoved` moves only a NATed peer to an
// address its connection accepts, and the CHILD_SAs then go there; keepalives name established
// paths, each once.
import FuzzDriver
import FuzzSupport
import OffloadIKE
import OffloadIPsec
import OffloadWire

func config(_ me: Int, start: String) -> [IKEConnection] {
    let peer = 3 - me
    return try! IKEConfig.parse("""
        connections {
          c {
            local_addrs = 192.0.2.\(me)
            remote_addrs = 192.0.2.\(peer)
            rekey_time = 40s
            dpd_delay = 15s
            retransmit_timeout = 1s
            retransmit_tries = 2
            local { auth = psk
              id = gw\(me) }
            remote { auth = psk
              id = gw\(peer) }
            children {
              n {
                local_ts = 10.\(me).0.0/16
                remote_ts = 10.\(peer).0.0/16, 10.9.\(peer).0/24
                rekey_time = 20s
                esp_proposals = aes128gcm16, chacha20poly1305-esn
                start_action = \(start)
              }
              m {
                local_ts = fd0\(me)::/48
                remote_ts = fd0\(peer)::/48
                start_action = \(start)
              }
            }
          }
        }
        secrets { ike { secret = fuzz-psk } }
        """)
}

nonisolated(unsafe) let configA = config(1, start: "start"), configB = config(2, start: "none")
let addressA = IPAddress("192.0.2.1")!, addressB = IPAddress("192.0.2.2")!
let atB = IKEPath(localPort: 4500, remote: addressA, remotePort: 4500), atA = IKEPath(localPort: 4500, remote: addressB, remotePort: 4500)
func noTraffic(_: UInt32, _: Bool) -> IKETrafficSample { IKETrafficSample() }

/// Whether `inner` lies inside `outer`: addresses, protocol and ports.
func inside(_ inner: TrafficSelector, _ outer: TrafficSelector) -> Bool {
    let addresses: Bool
    switch (inner.prefix, outer.prefix) {
    case (.v4(let i), .v4(let o)): addresses = i.length >= o.length && o.contains(i.address)
    case (.v6(let i), .v6(let o)): addresses = i.length >= o.length && o.contains(i.address)
    default: addresses = false
    }
    return addresses && (outer.ipProtocol == 0 || outer.ipProtocol == inner.ipProtocol)
        && outer.ports.lowerBound <= inner.ports.lowerBound && inner.ports.upperBound <= outer.ports.upperBound
}

/// Every CHILD_SA of `engine` stays inside its child's configured selectors.
func checkSelectors(_ engine: IKEEngine, _ who: String) {
    for sa in engine.childSAs {
        guard let child = engine.connections.flatMap(\.children).first(where: { $0.name == sa.child }) else {
            oracleFailure("\(who): a CHILD_SA of no configured child \(sa.child)")
        }
        for ts in sa.localTS where !child.localTS.contains(where: { inside(ts, $0) }) {
            oracleFailure("\(who): CHILD_SA \(sa.child) local selector \(ts) outside \(child.localTS)")
        }
        for ts in sa.remoteTS where !child.remoteTS.contains(where: { inside(ts, $0) }) {
            oracleFailure("\(who): CHILD_SA \(sa.child) remote selector \(ts) outside \(child.remoteTS)")
        }
    }
}

/// The two ends, their messages in flight, a clock.
final class Session {
    let a = IKEEngine(connections: configA), b = IKEEngine(connections: configB)
    var inFlight: [(toA: Bool, bytes: [UInt8])] = []
    var now = 0.0

    func engine(_ isA: Bool) -> IKEEngine { isA ? a : b }

    func post(_ out: [(bytes: [UInt8], path: IKEPath)], fromA: Bool) {
        for m in out where inFlight.count < 64 { inFlight.append((!fromA, m.bytes)) }
    }

    /// Delivers up to `limit` messages in flight.
    func deliver(_ limit: Int) {
        var n = 0
        while !inFlight.isEmpty && n < limit {
            n += 1
            let m = inFlight.removeFirst()
            post(engine(m.toA).receive(m.bytes, path: m.toA ? atA : atB, now: now), fromA: m.toA)
        }
    }

    func advance(_ seconds: Double) {
        now += seconds
        post(a.tick(now: now, traffic: noTraffic), fromA: true)
        post(b.tick(now: now, traffic: noTraffic), fromA: false)
    }

    init?() {
        a._fuzzSeedRandom(1)
        b._fuzzSeedRandom(2)
        post(a.start(now: 0), fromA: true)
        deliver(16)
        guard !a.activeChildSAs.isEmpty, !b.activeChildSAs.isEmpty else { return nil }
    }
}

/// Payloads chosen by the input, with SPIs and selectors near the real ones.
func payloads(_ input: inout FuzzInput, sender: IKEEngine, receiver: IKEEngine) -> [IKEPayload] {
    var out: [IKEPayload] = []
    let children = sender.childSAs + receiver.childSAs
    func childSPI(_ selector: UInt8) -> [UInt8] {
        guard !children.isEmpty, selector & 0x80 == 0 else { return withUnsafeBytes(of: UInt32(selector).bigEndian) { Array($0) } }
        let c = children[Int(selector) % children.count]
        let spi = selector & 0x40 == 0 ? c.inbound.spi : c.outbound.spi
        return withUnsafeBytes(of: spi.bigEndian) { Array($0) }
    }
    func selectors(_ input: inout FuzzInput) -> [IKETrafficSelector] {
        let count = Int(input.byte() % 20)
        return (0..<count).map { _ in
            let kind = input.byte()
            if kind & 1 == 0 {
                // Around 10.x.y.0: the configured prefixes and their neighbours.
                let start: [UInt8] = [10, input.byte() % 4, input.byte() % 12, input.byte()]
                var end = start
                end[3] = max(start[3], input.byte())
                if kind & 2 != 0 { end[2] = max(start[2], input.byte()) }
                var ts = IKETrafficSelector(start: start, end: end)
                if kind & 4 != 0 { ts.ipProtocol = input.byte(); ts.startPort = input.u16(); ts.endPort = input.u16() }
                return ts
            }
            var start = [UInt8](repeating: 0, count: 16), end = [UInt8](repeating: 0, count: 16)
            start[0] = 0xfd; end[0] = 0xfd
            start[1] = input.byte() % 4; end[1] = start[1]
            for i in 2..<16 { end[i] = i < 2 + Int(kind >> 4) ? start[i] : 0xff }
            return IKETrafficSelector(start: start, end: end)
        }
    }
    let count = Int(input.byte() % 8)
    for _ in 0..<count {
        switch input.byte() % 11 {
        case 0, 1:
            // ESP proposals (4-byte SPI) or an IKE proposal (8-byte SPI: an IKE rekey).
            let ike = input.byte() & 1 == 1
            var transforms: [IKETransform] = []
            for _ in 0..<Int(input.byte() % 5) {
                switch input.byte() % 8 {
                case 0: transforms.append(IKETransform(type: IKETransform.encryption, id: 20, keyLength: 128))
                case 1: transforms.append(IKETransform(type: IKETransform.encryption, id: 28))
                case 2: transforms.append(IKETransform(type: IKETransform.extendedSequenceNumbers, id: UInt16(input.byte() & 1)))
                case 3: transforms.append(IKETransform(type: IKETransform.prf, id: 5))
                case 4: transforms.append(IKETransform(type: IKETransform.keyExchange, id: input.byte() & 1 == 0 ? 31 : 14))
                case 5: transforms.append(IKETransform(type: IKETransform.integrity, id: UInt16(input.byte())))
                default: transforms.append(IKETransform(type: input.byte() % 6, id: input.u16(), keyLength: input.byte() & 1 == 0 ? nil : input.u16()))
                }
            }
            let spi = ike ? input.take(8) : childSPI(input.byte())
            out.append(.securityAssociation([IKEProposal(number: input.byte() % 3 + 1, protocolID: ike ? IKEProposal.ike : IKEProposal.esp, spi: spi,
                                                         transforms: transforms)]))
        case 2:
            let group: UInt16 = input.byte() & 1 == 0 ? 31 : 14
            // A real X25519 value (a MODP-2048 key costs too much per input) or the input's bytes.
            let data = group == 31 && input.byte() & 1 == 0 ? ((try? IKEKeyPair(.curve25519))?.publicValue ?? []) : input.take(Int(input.byte()))
            out.append(.keyExchange(group: group, data: data))
        case 3:
            // Nonces of every length around the limits (16, half a PRF key, 256).
            let lengths = [0, 8, 15, 16, 23, 24, 32, 48, 256, 257]
            let n = lengths[Int(input.byte()) % lengths.count]
            out.append(.nonce((0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(input.byte())) }))
        case 4: out.append(.trafficSelectorsInitiator(selectors(&input)))
        case 5: out.append(.trafficSelectorsResponder(selectors(&input)))
        case 6:
            let ike = input.byte() & 1 == 1
            out.append(.delete(protocolID: ike ? IKEProposal.ike : IKEProposal.esp,
                               spis: ike ? [] : (0..<Int(input.byte() % 4)).map { _ in childSPI(input.byte()) }))
        case 7:
            out.append(.notify(protocolID: IKEProposal.esp, spi: childSPI(input.byte()), type: .rekeySA, data: []))
        case 8:
            let types: [IKENotifyType] = [.noProposalChosen, .temporaryFailure, .childSANotFound, .useTransportMode, .initialContact,
                                          .tsUnacceptable, .noAdditionalSAs, .invalidKEPayload, .invalidSyntax, .authenticationFailed]
            let t = types[Int(input.byte()) % types.count]
            out.append(.notify(t, data: t == .invalidKEPayload ? [0, input.byte() & 1 == 0 ? 31 : 14] : []))
        case 9: out.append(.notify(IKENotifyType(rawValue: input.u16()), data: input.take(Int(input.byte() % 16))))
        default: out.append(.other(type: input.byte() | 0x80, body: input.take(Int(input.byte() % 16))))
        }
    }
    return out
}

// MARK: hub mode

let hubAddress = IPAddress("192.0.2.1")!

/// The hub's configuration; `variant` 1 drops site B, 2 narrows the road warriors' selectors
/// (what a reload may change), 0 is the first.
func hubConfig(_ variant: Int) -> [IKEConnection] {
    let siteB = variant == 1 ? "" : """
          siteB { local_addrs = 192.0.2.1
            remote_addrs = 198.51.100.0/24, 192.0.2.3
            dpd_delay = 10s
            local { auth = psk
              id = hub }
            remote { auth = psk
              id = siteB }
            children { net { local_ts = 10.0.0.0/16
                remote_ts = 10.2.0.0/16[udp/1000-2000] } } }
        """
    return try! IKEConfig.parse("""
        connections {
          siteA { local_addrs = 192.0.2.1
            remote_addrs = 192.0.2.2
            local { auth = psk
              id = hub }
            remote { auth = psk
              id = siteA }
            children { net { local_ts = 10.0.0.0/24[tcp/80], 10.0.0.0/24[udp/53]
                remote_ts = 10.1.0.0/24 } } }
          \(siteB)
          carol { local_addrs = 192.0.2.1
            rekey_time = 60s
            local { auth = psk
              id = hub }
            remote { auth = psk
              id = carol@example.org }
            children { net { local_ts = 10.0.0.0/16[tcp]
                remote_ts = \(variant == 2 ? "10.99.1.0/24" : "10.99.0.0/16")
                rekey_time = 25s } } }
          anyone { local_addrs = 192.0.2.1
            remote_addrs = %any
            local { auth = psk
              id = hub }
            remote { auth = psk
              id = * }
            children { net { local_ts = 10.0.0.0/8
                remote_ts = 10.98.0.0/16[tcp/1024-65535], 10.99.0.0/16[udp] } } }
        }
        secrets {
          ike-a { id = siteA
            secret = psk-a }
          ike-b { id = siteB
            secret = psk-b }
          ike-c { id = carol@example.org
            secret = psk-c }
          ike-any { id = *
            secret = psk-any }
        }
        """)
}

nonisolated(unsafe) let hubConfigs = (0..<3).map(hubConfig)
let peerIDs = ["siteA", "siteB", "carol@example.org", "dave@example.org", "hub"]
let peerKeys = ["psk-a", "psk-b", "psk-c", "psk-any", "wrong"]
let peerSeen = ["192.0.2.2", "192.0.2.3", "198.51.100.5", "203.0.113.7", "198.51.100.200"].map { IPAddress($0)! }
let peerLocalTS = ["10.1.0.0/24", "10.2.0.0/16[udp/1000-2000]", "10.2.3.0/24[udp/1500]", "10.99.1.0/24[tcp/22]", "10.98.0.0/16",
                   "10.98.0.0/24[tcp/8080]", "10.99.0.0/16[udp/53-54]", "0.0.0.0/0[tcp]"]
let peerRemoteTS = ["10.0.0.0/24", "10.0.0.0/24[tcp/80]", "10.0.0.0/16[udp/53]", "10.0.0.0/8", "10.0.0.5/32[tcp/80-81]"]

/// A peer's connection to the hub, from the input's choices.
func peerConnections(id: Int, key: Int, localTS: Int, remoteTS: Int, local: IPAddress) -> [IKEConnection] {
    try! IKEConfig.parse("""
        connections {
          hub { local_addrs = \(local)
            remote_addrs = 192.0.2.1
            dpd_delay = 12s
            local { auth = psk
              id = \(peerIDs[id]) }
            remote { auth = psk
              id = hub }
            children { net { local_ts = \(peerLocalTS[localTS])
                remote_ts = \(peerRemoteTS[remoteTS])
                start_action = start } } }
        }
        secrets { ike { id = hub
            secret = \(peerKeys[key]) } }
        """)
}

/// A hub, its peers (each seen by the hub at an endpoint a NAT may change), messages in flight.
final class HubSession {
    var hub: IKEEngine
    var peers: [(engine: IKEEngine, seenAs: UDPEndpoint, id: IKEIdentity, key: IKESecret)] = []
    var inFlight: [(toHub: Bool, peer: Int, bytes: [UInt8])] = []
    var toHub: [[UInt8]] = []
    var now = 0.0

    init(_ input: inout FuzzInput) {
        hub = IKEEngine(connections: hubConfigs[0])
        hub._fuzzSeedRandom(7)
        let count = Int(input.byte() % 3) + 1
        for i in 0..<count {
            let id = Int(input.byte()) % peerIDs.count, key = Int(input.byte()) % peerKeys.count
            let where_ = input.byte()
            let seen = UDPEndpoint(peerSeen[Int(where_ & 0x7F) % peerSeen.count], where_ & 0x80 != 0 ? 4500 : 40_000 + UInt16(i))
            // Behind a NAT (its own address private) or not (its own address is what the hub sees).
            let local = input.byte() & 1 == 0 ? IPAddress("10.77.0.\(i + 2)")! : seen.address
            let e = IKEEngine(connections: peerConnections(id: id, key: key, localTS: Int(input.byte()) % peerLocalTS.count,
                                                           remoteTS: Int(input.byte()) % peerRemoteTS.count, local: local))
            e._fuzzSeedRandom(UInt64(10 + i))
            peers.append((e, seen, IKEIdentity(peerIDs[id]), IKESecret(bytes: Array(peerKeys[key].utf8))))
        }
        for i in peers.indices { fromPeer(i, peers[i].engine.start(now: now)) }
        run(64)
    }

    func path(_ i: Int) -> IKEPath { IKEPath(localPort: 4500, remote: peers[i].seenAs.address, remotePort: peers[i].seenAs.port) }

    func fromPeer(_ i: Int, _ out: [(bytes: [UInt8], path: IKEPath)]) {
        for m in out where m.path.remote == hubAddress && inFlight.count < 64 { inFlight.append((true, i, m.bytes)) }
    }

    func fromHub(_ out: [(bytes: [UInt8], path: IKEPath)]) {
        for m in out where inFlight.count < 64 {
            // Where the hub sends: to the peer seen there now (else lost, as behind a NAT that rebound).
            if let i = peers.firstIndex(where: { $0.seenAs == m.path.endpoint }) { inFlight.append((false, i, m.bytes)) }
        }
    }

    func run(_ limit: Int) {
        var n = 0
        while !inFlight.isEmpty && n < limit {
            n += 1
            let m = inFlight.removeFirst()
            if m.toHub {
                if toHub.count < 64 { toHub.append(m.bytes) }
                fromHub(hub.receive(m.bytes, path: path(m.peer), now: now))
            } else {
                fromPeer(m.peer, peers[m.peer].engine.receive(m.bytes, path: IKEPath(localPort: 4500, remote: hubAddress, remotePort: 4500), now: now))
            }
        }
    }

    func advance(_ seconds: Double) {
        now += seconds
        fromHub(hub.tick(now: now, traffic: noTraffic))
        for i in peers.indices { fromPeer(i, peers[i].engine.tick(now: now, traffic: noTraffic)) }
        for (who, e) in [(-1, hub)] + peers.indices.map({ ($0, peers[$0].engine) }) {
            let due = e.keepalives(now: now)
            if Set(due).count != due.count { oracleFailure("keepalives name a path twice: \(due)") }
            for p in due where (who >= 0) != (p.remote == hubAddress) {
                oracleFailure("\(who < 0 ? "the hub" : "peer \(who)"): a keepalive to \(p)")
            }
        }
    }

    /// The peer whose CHILD_SA pairs with the hub's `sa` (its inbound the hub's outbound).
    func peer(of sa: IKEChildSA) -> Int? {
        peers.indices.first { i in peers[i].engine.childSAs.contains { $0.inbound == sa.outbound && $0.outbound == sa.inbound } }
    }

    /// The oracles on the hub's CHILD_SAs.
    func check() {
        for sa in hub.childSAs {
            guard let c = hub.connections.first(where: { $0.name == sa.connection }) else { continue }  // removed by a reload: retiring
            guard let child = c.children.first(where: { $0.name == sa.child }) else { oracleFailure("hub: a CHILD_SA of no child \(sa.child) of \(c.name)") }
            for ts in sa.localTS where !child.localTS.contains(where: { inside(ts, $0) }) {
                oracleFailure("hub: \(c.name) local selector \(ts) outside \(child.localTS)")
            }
            for ts in sa.remoteTS where !child.remoteTS.contains(where: { inside(ts, $0) }) {
                oracleFailure("hub: \(c.name) remote selector \(ts) outside \(child.remoteTS)")
            }
            if let peer = sa.peer, !c.remoteAddrs.matches(peer.address) {
                oracleFailure("hub: \(c.name)'s CHILD_SA goes to \(peer), which remote_addrs \(c.remoteAddrs) does not accept")
            }
            guard let i = peer(of: sa) else { continue }
            if let id = c.remoteID, id != peers[i].id { oracleFailure("hub: peer \(i) (\(peers[i].id)) under \(c.name), whose remote id is \(id)") }
            if c.secret != peers[i].key { oracleFailure("hub: peer \(i) under \(c.name) without its key") }
        }
    }
}

/// The hub mode (see the top of the file).
func fuzzHub(_ input: inout FuzzInput) {
    let s = HubSession(&input)
    s.check()
    var steps = 0
    while !input.isEmpty && steps < 24 {
        steps += 1
        let op = input.byte()
        let i = Int(op >> 5) % s.peers.count
        switch op % 8 {
        case 0:
            s.run(Int(op >> 3) + 1)
        case 1:
            s.advance(Double(op >> 3) + 0.5)
            if op & 0x80 != 0 { s.run(32) }
        case 2:
            // The peer's NAT rebinds: another port, or another address.
            let b = input.byte()
            s.peers[i].seenAs = b & 0x80 != 0 ? UDPEndpoint(s.peers[i].seenAs.address, input.u16())
                : UDPEndpoint(peerSeen[Int(b) % peerSeen.count], s.peers[i].seenAs.port)
        case 3:
            // The dataplane saw an authentic datagram of a hub CHILD_SA from somewhere.
            let hubChildren = s.hub.childSAs
            let b = input.byte()
            let spi = hubChildren.isEmpty || b & 0x80 != 0 ? UInt32(b) : hubChildren[Int(b) % hubChildren.count].inbound.spi
            let to = UDPEndpoint(peerSeen[Int(input.byte()) % peerSeen.count], input.u16())
            let before = hubChildren.map(\.peer)
            let moved = s.hub.peerMoved(inboundSPI: spi, to: to, now: s.now)
            let after = s.hub.childSAs
            if moved {
                guard let sa = after.first(where: { $0.inbound.spi == spi }) else { oracleFailure("moved, but no CHILD_SA receives with \(spi)") }
                if sa.peer != to { oracleFailure("peerMoved to \(to), but the CHILD_SA goes to \(String(describing: sa.peer))") }
                if !sa.peerMayMove { oracleFailure("peerMoved moved a peer not behind a NAT") }
                if let c = s.hub.connections.first(where: { $0.name == sa.connection }), !c.remoteAddrs.matches(to.address) {
                    oracleFailure("peerMoved to \(to), which \(c.name)'s remote_addrs does not accept")
                }
            } else if after.map(\.peer) != before {
                oracleFailure("peerMoved said no, but CHILD_SAs moved: \(before) -> \(after.map(\.peer))")
            }
        case 4:
            // A request of peer i sealed with its IKE SA's keys, from where the hub sees it now.
            let sender = s.peers[i].engine
            guard let mine = sender._fuzzViews().last(where: \.established),
                  let theirs = s.hub._fuzzViews().first(where: { $0.localSPI == mine.remoteSPI }) else { continue }
            let exchange: IKEExchange = op & 0x08 != 0 ? .informational : .createChildSA
            let body = payloads(&input, sender: sender, receiver: s.hub)
            guard let bytes = sender._fuzzSeal(localSPI: mine.localSPI, exchange, response: false, id: op & 0x10 != 0 ? theirs.expectedRequestID &- 1 : theirs.expectedRequestID,
                                               payloads: body) else { continue }
            s.toHub.append(bytes)
            s.fromHub(s.hub.receive(bytes, path: s.path(i), now: s.now))
        case 5:
            let variant = Int(input.byte() % 3)
            let (out, _) = s.hub.reload(hubConfigs[variant], now: s.now)
            s.fromHub(out)
        case 6:
            // An old message to the hub again, from a source the input picks: never a move.
            guard !s.toHub.isEmpty else { continue }
            let old = s.toHub[Int(input.byte()) % s.toHub.count]
            let from = IKEPath(localPort: 4500, remote: peerSeen[Int(input.byte()) % peerSeen.count], remotePort: input.u16())
            let before = s.hub.childSAs.map { ($0.inbound.spi, $0.peer) }
            _ = s.hub.receive(old, path: from, now: s.now)
            let after = s.hub.childSAs.map { ($0.inbound.spi, $0.peer) }
            for (spi, peer) in after {
                if let was = before.first(where: { $0.0 == spi }), was.1 != peer {
                    oracleFailure("a replayed message moved CHILD_SA \(spi) from \(String(describing: was.1)) to \(String(describing: peer))")
                }
            }
        default:
            s.fromPeer(i, s.peers[i].engine.start(now: s.now))
        }
        s.check()
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIKESession(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    if size > 0 && data[0] >= 0xE0 {
        var input = FuzzInput(data + 1, size - 1)
        fuzzHub(&input)
        return 0
    }
    var input = FuzzInput(data, size)
    guard let s = Session() else { oracleFailure("two engines in memory did not establish") }
    var steps = 0
    while !input.isEmpty && steps < 24 {
        steps += 1
        let op = input.byte()
        switch op % 5 {
        case 0, 1:
            // A request sealed with the sender's keys of its newest established IKE SA.
            let fromA = op & 0x10 != 0
            let sender = s.engine(fromA), receiver = s.engine(!fromA)
            guard let mine = sender._fuzzViews().last(where: \.established),
                  let theirs = receiver._fuzzViews().first(where: { $0.localSPI == mine.remoteSPI })
            else { continue }
            let exchange: IKEExchange = op & 0x20 != 0 ? .informational : .createChildSA
            // Mostly the expected ID; sometimes the one before (a retransmission), after, or far off.
            let offsets: [UInt32] = [0, 0, 0, 0, 1, 2, 0xFFFF_FFFF, 0x8000_0000]
            let id = theirs.expectedRequestID &+ offsets[Int(op >> 5)]
            let body = payloads(&input, sender: sender, receiver: receiver)
            guard let bytes = sender._fuzzSeal(localSPI: mine.localSPI, exchange, response: false, id: id, payloads: body) else { continue }
            let out = receiver.receive(bytes, path: fromA ? atB : atA, now: s.now)
            let after = receiver._fuzzViews().first { $0.localSPI == theirs.localSPI }
            let inWindow = id == theirs.expectedRequestID || id == theirs.expectedRequestID &- 1
            if let after {
                let moved = after.expectedRequestID &- theirs.expectedRequestID
                if moved > 1 { oracleFailure("one request moved the message-ID window by \(moved)") }
                if !inWindow && moved != 0 { oracleFailure("a request outside the window (ID \(id), expected \(theirs.expectedRequestID)) moved it") }
            }
            if !inWindow {
                for m in out {
                    if let h = try? IKEHeader(parsing: m.bytes), h.isResponse, h.messageID == id {
                        oracleFailure("a request outside the window (ID \(id), expected \(theirs.expectedRequestID)) was answered")
                    }
                }
            }
            s.post(out, fromA: !fromA)
        case 2:
            // A response sealed with the sender's keys: to the receiver's outstanding request, or to none.
            let fromA = op & 0x10 != 0
            let sender = s.engine(fromA), receiver = s.engine(!fromA)
            guard let mine = sender._fuzzViews().last(where: \.established),
                  let theirs = receiver._fuzzViews().first(where: { $0.localSPI == mine.remoteSPI })
            else { continue }
            let exchange: IKEExchange = op & 0x20 != 0 ? .informational : .createChildSA
            let id = op & 0x40 == 0 ? (theirs.outstandingID ?? theirs.nextRequestID) : theirs.nextRequestID &+ UInt32(op >> 7) &+ 1
            let body = payloads(&input, sender: sender, receiver: receiver)
            guard let bytes = sender._fuzzSeal(localSPI: mine.localSPI, exchange, response: true, id: id, payloads: body) else { continue }
            let children = receiver.childSAs.map(\.inbound), views = receiver._fuzzViews()
            let out = receiver.receive(bytes, path: fromA ? atB : atA, now: s.now)
            if theirs.outstandingID != id {
                if !out.isEmpty || receiver.childSAs.map(\.inbound) != children || receiver._fuzzViews() != views {
                    oracleFailure("a response to no outstanding request (ID \(id)) changed something")
                }
            }
            s.post(out, fromA: !fromA)
        case 3:
            s.deliver(Int(op >> 3) + 1)
        default:
            // Time: up to 32 s (rekeys at 20 s and 40 s, liveness at 15 s, retransmissions at 1 s).
            s.advance(Double(op >> 3) + 0.5)
            if op & 0x80 != 0 { s.deliver(16) }
        }
        checkSelectors(s.a, "initiator")
        checkSelectors(s.b, "responder")
    }
    return 0
}

/// The entry point SwiftPM links as `main`: libFuzzer's driver.
@_cdecl("FuzzIKESession_main")
public func fuzzIKESessionMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    fuzz_driver_main(argc, argv)
}
