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

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIKESession(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
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
