import Foundation
import OffloadCrypto
import OffloadIPsec
import OffloadWire
import Testing

@testable import OffloadIKE

/// Two engines wired back to back in memory, with a clock and a lossy, duplicating wire.
final class IKEWire {
    var a: IKEEngine, b: IKEEngine
    var now = 0.0
    /// Messages in flight: to a (true) or to b, with the receiver's path.
    var inFlight: [(toA: Bool, bytes: [UInt8], path: IKEPath)] = []
    /// Drops the next n messages of either direction.
    var dropNext = 0
    /// Delivers each message twice.
    var duplicate = false
    var delivered = 0
    /// When set, messages to b vanish (b is dead).
    var bDead = false
    var traffic: [UInt32: IKETrafficSample] = [:]

    static let addressA = IPAddress("192.0.2.1")!, addressB = IPAddress("192.0.2.2")!

    init(_ configA: String, _ configB: String) throws {
        a = IKEEngine(connections: try IKEConfig.parse(configA))
        b = IKEEngine(connections: try IKEConfig.parse(configB))
    }

    func send(_ out: [(bytes: [UInt8], path: IKEPath)], fromA: Bool) {
        for m in out {
            let back = IKEPath(localPort: m.path.remotePort, remote: fromA ? Self.addressA : Self.addressB, remotePort: m.path.localPort)
            inFlight.append((!fromA, m.bytes, back))
        }
    }

    /// Delivers until nothing is in flight (bounded).
    func run(limit: Int = 200) {
        var steps = 0
        while !inFlight.isEmpty && steps < limit {
            steps += 1
            let m = inFlight.removeFirst()
            if dropNext > 0 { dropNext -= 1; continue }
            if !m.toA && bDead { continue }
            delivered += 1
            for _ in 0..<(duplicate ? 2 : 1) {
                let engine = m.toA ? a : b
                send(engine.receive(m.bytes, path: m.path, now: now), fromA: m.toA)
            }
        }
    }

    /// Moves the clock by `seconds` in steps, ticking both engines.
    func advance(_ seconds: Double, step: Double = 0.25) {
        var t = 0.0
        while t < seconds {
            now += step
            t += step
            let sample = { (spi: UInt32, _: Bool) in self.traffic[spi] ?? IKETrafficSample() }
            send(a.tick(now: now, traffic: sample), fromA: true)
            send(b.tick(now: now, traffic: sample), fromA: false)
            run()
        }
    }

    func start() {
        send(a.start(now: now), fromA: true)
        send(b.start(now: now), fromA: false)
        run()
    }

    static func config(me: Int, start: String = "start", psk: String = "not-a-secret-psk", proposals: String = "aes128gcm16-prfsha256-x25519",
                       esp: String = "aes128gcm16", localTS: String? = nil, remoteTS: String? = nil, extra: String = "",
                       childExtra: String = "", children: Int = 1) -> String {
        let peer = 3 - me
        var childText = ""
        for n in 0..<children {
            childText += """
                      net\(n) {
                        local_ts = \(localTS ?? "10.\(me).\(n).0/24")
                        remote_ts = \(remoteTS ?? "10.\(peer).\(n).0/24")
                        esp_proposals = \(esp)
                        start_action = \(start)
                        \(childExtra)
                      }

                """
        }
        return """
            connections {
              site {
                local_addrs = 192.0.2.\(me)
                remote_addrs = 192.0.2.\(peer)
                proposals = \(proposals)
                \(extra)
                local { auth = psk
                  id = gw\(me) }
                remote { auth = psk
                  id = gw\(peer) }
                children {
            \(childText)    }
              }
            }
            secrets {
              ike-1 { id = gw\(peer)
                secret = "\(psk)" }
            }
            """
    }
}

/// The CHILD_SAs of two ends agree: each one's outbound is the other's inbound, keys included.
func matched(_ a: IKEEngine, _ b: IKEEngine) -> Bool {
    let left = a.activeChildSAs, right = b.activeChildSAs
    guard !left.isEmpty, left.count == right.count else { return false }
    return left.allSatisfy { x in
        right.contains { y in x.outbound == y.inbound && x.inbound == y.outbound && x.algorithm == y.algorithm
            && x.extendedSequenceNumbers == y.extendedSequenceNumbers && Set(x.localTS) == Set(y.remoteTS) }
    }
}

@Suite("IKEv2 engine: two ends in memory")
struct IKEEngineTests {
    @Test("IKE_SA_INIT and IKE_AUTH: keys agree, selectors, one child each way", arguments: [
        ("aes128gcm16-prfsha256-x25519", "aes128gcm16"), ("aes256gcm16-prfsha384-modp2048", "chacha20poly1305"),
        ("chacha20poly1305-prfsha256-x25519", "aes256gcm16-esn"),
    ])
    func establish(proposals: String, esp: String) throws {
        let w = try IKEWire(IKEWire.config(me: 1, proposals: proposals, esp: esp), IKEWire.config(me: 2, start: "none", proposals: proposals, esp: esp))
        w.start()
        #expect(matched(w.a, w.b), "\(w.a.takeEvents()) / \(w.b.takeEvents())")
        let child = try #require(w.a.activeChildSAs.first)
        #expect(child.localTS == [TrafficSelector("10.1.0.0/24")!] && child.remoteTS == [TrafficSelector("10.2.0.0/24")!])
        #expect(child.algorithm.rawValue == esp.replacingOccurrences(of: "-esn", with: ""))
        #expect(child.extendedSequenceNumbers == esp.hasSuffix("-esn"))
        #expect(w.delivered == 4, "two exchanges, four messages")
    }

    @Test("the responder's order wins; ESN off when the peer offers only noesn (libipsec)")
    func preference() throws {
        let w = try IKEWire(IKEWire.config(me: 1, esp: "aes128gcm16-chacha20poly1305-esn-noesn"),
                            IKEWire.config(me: 2, start: "none", esp: "chacha20poly1305-aes128gcm16-noesn"))
        w.start()
        #expect(matched(w.a, w.b))
        #expect(w.a.activeChildSAs.first?.algorithm == .chacha20Poly1305 && w.a.activeChildSAs.first?.extendedSequenceNumbers == false)
    }

    @Test("INVALID_KE_PAYLOAD: the initiator guessed x25519, the responder wants modp2048; it tries again with it")
    func invalidKE() throws {
        let w = try IKEWire(IKEWire.config(me: 1, proposals: "aes128gcm16-prfsha256-x25519-modp2048"),
                            IKEWire.config(me: 2, start: "none", proposals: "aes128gcm16-prfsha256-modp2048"))
        w.start()
        #expect(matched(w.a, w.b))
        #expect(w.a.takeEvents().contains { $0.description.contains("wants modp2048") })
    }

    @Test("wrong PSK: AUTHENTICATION_FAILED, a clear line on both sides, no SA")
    func wrongPSK() throws {
        let w = try IKEWire(IKEWire.config(me: 1, psk: "one-secret-here"), IKEWire.config(me: 2, start: "none", psk: "another-secret"))
        w.start()
        #expect(w.a.activeChildSAs.isEmpty && w.b.activeChildSAs.isEmpty)
        let a = w.a.takeEvents().map(\.description), b = w.b.takeEvents().map(\.description)
        #expect(a.contains { $0.contains("authentication failed") && $0.contains("AUTHENTICATION_FAILED") }, "\(a)")
        #expect(b.contains { $0.contains("authentication failed") && $0.contains("gw1") }, "\(b)")
        #expect(!(a + b).joined().contains("secret-here") && !(a + b).joined().contains("another-secret"), "no secret in the log")
        #expect(w.a.sas.isEmpty || w.a.sas.values.allSatisfy { $0.state == .dead })
    }

    @Test("mismatched proposals: NO_PROPOSAL_CHOSEN for IKE, and for ESP (the IKE SA stays, no child)")
    func noProposal() throws {
        let ike = try IKEWire(IKEWire.config(me: 1, proposals: "aes128gcm16-prfsha256-x25519"),
                              IKEWire.config(me: 2, start: "none", proposals: "aes256gcm16-prfsha384-x25519"))
        ike.start()
        #expect(ike.a.activeChildSAs.isEmpty)
        #expect(ike.a.takeEvents().contains { $0.description.contains("NO_PROPOSAL_CHOSEN") })
        #expect(ike.b.takeEvents().contains { $0.description.contains("NO_PROPOSAL_CHOSEN") })
        #expect(ike.b.sas.isEmpty, "a refused IKE_SA_INIT leaves nothing half-open")
        let esp = try IKEWire(IKEWire.config(me: 1, esp: "aes128gcm16"), IKEWire.config(me: 2, start: "none", esp: "chacha20poly1305"))
        esp.start()
        #expect(esp.a.activeChildSAs.isEmpty && esp.b.activeChildSAs.isEmpty)
        #expect(esp.a.sas.values.contains { $0.state == .established }, "the IKE SA is up")
        #expect(esp.a.takeEvents().contains { $0.description.contains("refused by the peer: NO_PROPOSAL_CHOSEN") })
    }

    @Test("traffic selectors: narrowed to the responder's, TS_UNACCEPTABLE when nothing overlaps")
    func selectors() throws {
        let w = try IKEWire(IKEWire.config(me: 1, localTS: "10.1.0.0/16", remoteTS: "10.2.0.0/16"),
                            IKEWire.config(me: 2, start: "none", localTS: "10.2.5.0/24", remoteTS: "10.0.0.0/8"))
        w.start()
        #expect(matched(w.a, w.b))
        #expect(w.a.activeChildSAs.first?.remoteTS == [TrafficSelector("10.2.5.0/24")!] && w.a.activeChildSAs.first?.localTS == [TrafficSelector("10.1.0.0/16")!])
        let none = try IKEWire(IKEWire.config(me: 1, localTS: "10.1.0.0/16", remoteTS: "10.2.0.0/16"),
                               IKEWire.config(me: 2, start: "none", localTS: "10.9.0.0/16", remoteTS: "10.1.0.0/16"))
        none.start()
        #expect(none.a.activeChildSAs.isEmpty && none.b.activeChildSAs.isEmpty)
        #expect(none.a.takeEvents().contains { $0.description.contains("TS_UNACCEPTABLE") })
    }

    @Test("ranges to prefixes: exact covers, the whole space, single addresses")
    func rangeMath() {
        func r(_ s: String, _ e: String) -> IKETrafficSelector {
            let a = IPv4Address(s)!, b = IPv4Address(e)!
            return IKETrafficSelector(start: bigEndianBytes(a.rawValue), end: bigEndianBytes(b.rawValue))
        }
        #expect(SelectorMath.prefixes(r("10.0.0.0", "10.0.0.255")).map(\.description) == ["10.0.0.0/24"])
        #expect(SelectorMath.prefixes(r("0.0.0.0", "255.255.255.255")).map(\.description) == ["0.0.0.0/0"])
        #expect(SelectorMath.prefixes(r("10.0.0.1", "10.0.0.6")).map(\.description) == ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"])
        let all6 = IKETrafficSelector(start: [UInt8](repeating: 0, count: 16), end: [UInt8](repeating: 0xFF, count: 16))
        #expect(SelectorMath.prefixes(all6).map(\.description) == ["::/0"])
        #expect(SelectorMath.range(TrafficSelector("fd00::/8")!).end.first == 0xFD && SelectorMath.range(TrafficSelector("fd00::/8")!).end.last == 0xFF)
    }

    @Test("several children: the first in IKE_AUTH, the others in CREATE_CHILD_SA, each its own keys")
    func severalChildren() throws {
        let w = try IKEWire(IKEWire.config(me: 1, children: 4), IKEWire.config(me: 2, start: "none", children: 4))
        w.start()
        #expect(w.a.activeChildSAs.count == 4 && matched(w.a, w.b))
        #expect(Set(w.a.activeChildSAs.map { $0.inbound.key.hexForKeyFile() }).count == 4)
    }

    @Test("rekey on volume: rekey_bytes and rekey_packets, counted by the dataplane per SA")
    func rekeyOnVolume() throws {
        for (extra, sample) in [("rekey_bytes = 1M", IKETrafficSample(packets: 10, bytes: 2 << 20)),
                                ("rekey_packets = 1000", IKETrafficSample(packets: 1000, bytes: 10))] {
            let w = try IKEWire(IKEWire.config(me: 1, childExtra: extra), IKEWire.config(me: 2, start: "none"))
            w.start()
            let first = try #require(w.a.activeChildSAs.first)
            w.advance(1)
            #expect(w.a.counters.childRekeys == 0, "below the volume: no rekey")
            w.traffic[first.outbound.spi] = sample
            w.advance(1)
            #expect(w.a.counters.childRekeys == 1 && matched(w.a, w.b) && w.a.activeChildSAs.first?.inbound.spi != first.inbound.spi, "\(extra)")
        }
    }

    @Test("a restarted peer sends INITIAL_CONTACT: the responder drops what it held from before, so no stale SA carries traffic")
    func restartedPeer() throws {
        let w = try IKEWire(IKEWire.config(me: 1), IKEWire.config(me: 2, start: "none"))
        w.start()
        let before = try #require(w.b.activeChildSAs.first)
        w.a = IKEEngine(connections: try IKEConfig.parse(IKEWire.config(me: 1)))
        w.start()
        #expect(w.b.sas.values.filter { $0.state != .dead }.count == 1 && w.b.activeChildSAs.count == 1 && matched(w.a, w.b))
        #expect(w.b.activeChildSAs.first?.inbound != before.inbound)
        #expect(w.b.takeEvents().contains { $0.description.contains("INITIAL_CONTACT") })
    }

    @Test("two connections to one peer, told apart by identity: each its own IKE SA and CHILD_SA")
    func twoConnections() throws {
        func config(_ me: Int, start: String) -> String {
            let peer = 3 - me
            var text = "connections {\n"
            for (name, n) in [("a", 1), ("b", 2)] {
                text += """
                    \(name) {
                      local_addrs = 192.0.2.\(me)
                      remote_addrs = 192.0.2.\(peer)
                      local { auth = psk
                        id = gw\(me)\(name) }
                      remote { auth = psk
                        id = gw\(peer)\(name) }
                      children { net {
                        local_ts = 10.\(me).\(n).0/24
                        remote_ts = 10.\(peer).\(n).0/24
                        start_action = \(start) } }
                    }

                    """
            }
            return text + "}\nsecrets { ike { secret = shared-secret-for-both } }\n"
        }
        let w = try IKEWire(config(1, start: "start"), config(2, start: "none"))
        w.start()
        #expect(w.a.sas.count == 2 && w.b.sas.count == 2 && w.a.activeChildSAs.count == 2 && matched(w.a, w.b))
        #expect(Set(w.b.activeChildSAs.map(\.connection)) == ["a", "b"])
        #expect(Set(w.b.activeChildSAs.flatMap(\.localTS).map(\.description)) == ["10.2.1.0/24", "10.2.2.0/24"])
    }

    @Test("CHILD_SA rekey on time: make before break (the old SA still receives until deleted), then deleted; both ends agree")
    func childRekey() throws {
        let w = try IKEWire(IKEWire.config(me: 1, childExtra: "rekey_time = 10s"), IKEWire.config(me: 2, start: "none", childExtra: "rekey_time = 100s"))
        w.start()
        let first = try #require(w.a.activeChildSAs.first)
        w.advance(11)
        #expect(matched(w.a, w.b), "\(w.a.activeChildSAs.map(\.inbound.spi)) \(w.b.activeChildSAs.map(\.outbound.spi))")
        let now = try #require(w.a.activeChildSAs.first)
        #expect(w.a.activeChildSAs.count == 1 && now.inbound.spi != first.inbound.spi && !now.inbound.key.isEqual(to: first.inbound.key))
        #expect(now.replaces == first.id && now.sending)
        #expect(w.a.counters.childRekeys == 1 && w.b.counters.childRekeys == 1)
    }

    @Test("the overlap: after the rekey's answer and before the Delete, the responder receives on both SAs and still sends on the old; the initiator sends on the new")
    func overlap() throws {
        let w = try IKEWire(IKEWire.config(me: 1), IKEWire.config(me: 2, start: "none"))
        w.start()
        let old = try #require(w.b.activeChildSAs.first)
        for sa in w.a.sas.values { for i in sa.children.indices { sa.children[i].rekeyAt = w.now } }
        w.now += 0.1
        w.send(w.a.tick(now: w.now, traffic: { _, _ in IKETrafficSample() }), fromA: true)
        #expect(w.inFlight.count == 1, "the CREATE_CHILD_SA request")
        let request = w.inFlight.removeFirst()
        w.send(w.b.receive(request.bytes, path: request.path, now: w.now), fromA: false)
        #expect(w.b.activeChildSAs.count == 2, "both inbound SAs")
        #expect(w.b.activeChildSAs.first { $0.inbound.spi == old.inbound.spi }?.sending == true, "the old one still sends")
        #expect(w.b.activeChildSAs.first { $0.inbound.spi != old.inbound.spi }?.sending == false, "the new one waits")
        let answer = w.inFlight.removeFirst()
        w.send(w.a.receive(answer.bytes, path: answer.path, now: w.now), fromA: true)
        #expect(w.a.activeChildSAs.count == 2 && w.a.activeChildSAs.filter(\.sending).count == 1)
        #expect(w.a.activeChildSAs.first { $0.sending }?.outbound.spi != old.inbound.spi, "the initiator sends on the new SA at once")
        w.run()
        #expect(w.a.activeChildSAs.count == 1 && w.b.activeChildSAs.count == 1 && matched(w.a, w.b) && w.b.activeChildSAs[0].sending)
    }

    @Test("rekey collision: both ends rekey the same CHILD_SA at once; one new SA survives at both ends (lowest nonce loses)")
    func collision() throws {
        let w = try IKEWire(IKEWire.config(me: 1, childExtra: "rekey_time = 10s"), IKEWire.config(me: 2, start: "none", childExtra: "rekey_time = 10s"))
        w.start()
        // Both due in the same tick: force it.
        for e in [w.a, w.b] { for sa in e.sas.values { for i in sa.children.indices { sa.children[i].rekeyAt = w.now + 1 } } }
        w.advance(1, step: 1)
        w.advance(2)
        #expect(w.a.activeChildSAs.count == 1 && w.b.activeChildSAs.count == 1, "\(w.a.activeChildSAs.map(\.inbound.spi)) \(w.b.activeChildSAs.map(\.inbound.spi))")
        #expect(matched(w.a, w.b))
        #expect(w.a.counters.collisions + w.b.counters.collisions >= 1)
        #expect(w.a.activeChildSAs.allSatisfy(\.sending) && w.b.activeChildSAs.allSatisfy(\.sending))
    }

    @Test("IKE SA rekey: new SPIs and keys, the children move over, the old IKE SA is deleted; then a CHILD_SA rekey on the new one")
    func ikeRekey() throws {
        let w = try IKEWire(IKEWire.config(me: 1, extra: "rekey_time = 20s", childExtra: "rekey_time = 40s"), IKEWire.config(me: 2, start: "none"))
        w.start()
        let before = w.a.sas.values.first!.localSPI
        let child = try #require(w.a.activeChildSAs.first)
        w.advance(21)
        #expect(w.a.sas.count == 1 && w.b.sas.count == 1, "the old IKE SA is gone at both ends")
        #expect(w.a.sas.values.first!.localSPI != before && w.a.sas.values.first!.state == .established)
        #expect(w.a.activeChildSAs.first?.inbound == child.inbound, "the CHILD_SA moved, unchanged")
        #expect(w.a.counters.ikeRekeys == 1 && w.b.counters.ikeRekeys == 1)
        w.advance(20)
        #expect(matched(w.a, w.b) && w.a.counters.childRekeys == 1, "the new IKE SA's keys work for a CHILD_SA rekey")
    }

    @Test("retransmission: lost messages are sent again with backoff; a duplicated request gets the cached answer, processed once")
    func retransmission() throws {
        let w = try IKEWire(IKEWire.config(me: 1, extra: "retransmit_timeout = 1s"), IKEWire.config(me: 2, start: "none"))
        w.dropNext = 1
        w.start()
        #expect(w.a.activeChildSAs.isEmpty)
        w.advance(1.5)
        #expect(matched(w.a, w.b))
        #expect(w.a.counters.retransmissions == 1)
        let d = try IKEWire(IKEWire.config(me: 1), IKEWire.config(me: 2, start: "none"))
        d.duplicate = true
        d.start()
        #expect(d.b.activeChildSAs.count == 1 && matched(d.a, d.b), "a duplicate IKE_AUTH does not make a second child")
    }

    @Test("dead peer: liveness checks go unanswered, the SA is torn down within dpd_delay + the retransmissions, then started again when the peer returns")
    func deadPeer() throws {
        let w = try IKEWire(IKEWire.config(me: 1, extra: "dpd_delay = 2s\nretransmit_timeout = 0.5s\nretransmit_base = 2\nretransmit_tries = 2"),
                            IKEWire.config(me: 2, start: "none", extra: "dpd_delay = 2s"))
        w.start()
        #expect(matched(w.a, w.b))
        w.bDead = true
        // 2 s idle, then 0.5 + 1 + 2 s of tries.
        w.advance(6)
        #expect(w.a.activeChildSAs.isEmpty, "torn down")
        #expect(w.a.takeEvents().contains { $0.description.contains("no answer to INFORMATIONAL after 3 tries") })
        // The peer comes back with no state: it answers a new IKE_SA_INIT.
        w.bDead = false
        let fresh = try IKEWire(IKEWire.config(me: 1), IKEWire.config(me: 2, start: "none"))
        _ = fresh
        w.advance(8)
        #expect(w.a.activeChildSAs.count == 1, "started again (start_action = start)")
    }

    @Test("COOKIE: over the half-open threshold the responder demands one; the initiator sends it back and gets in")
    func cookie() throws {
        let w = try IKEWire(IKEWire.config(me: 1), IKEWire.config(me: 2, start: "none"))
        w.b.cookieThreshold = 0
        w.start()
        #expect(matched(w.a, w.b))
        #expect(w.b.counters.cookiesSent == 1)
        #expect(w.a.takeEvents().contains { $0.description.contains("COOKIE") })
        // A flood of first messages without cookies leaves nothing half-open.
        let flood = try IKEWire(IKEWire.config(me: 1), IKEWire.config(me: 2, start: "none"))
        flood.b.cookieThreshold = 0
        for _ in 0..<50 { flood.send(flood.a.initiate(flood.a.connections[0], now: 0), fromA: true) }
        for i in flood.inFlight.indices { _ = flood.b.receive(flood.inFlight[i].bytes, path: flood.inFlight[i].path, now: 0) }
        #expect(flood.b.sas.isEmpty)
    }

    @Test("hostile bytes: truncated, lying lengths, a critical unknown payload, garbage: no crash, counted, never answered with state")
    func hostile() throws {
        let w = try IKEWire(IKEWire.config(me: 1), IKEWire.config(me: 2, start: "none"))
        let first = try #require(w.a.start(now: 0).first)
        let path = IKEPath(localPort: 4500, remote: IKEWire.addressA, remotePort: 4500)
        for cut in stride(from: 0, to: first.bytes.count, by: 7) {
            _ = w.b.receive(Array(first.bytes.prefix(cut)), path: path, now: 0)
        }
        var lying = first.bytes
        lying[IKEHeader.length + 2] = 0xFF  // the first payload's length
        _ = w.b.receive(lying, path: path, now: 0)
        var critical = first.bytes
        // Make the first payload's next-payload a critical unknown type at the end of the chain.
        critical += [0, 0x80, 0, 4]
        critical[24..<28] = ArraySlice(bigEndianBytes(UInt32(critical.count)))
        // Point the last payload at type 200.
        var offset = IKEHeader.length, next = critical[16]
        while next != 0 {
            let length = Int(critical[offset + 2]) << 8 | Int(critical[offset + 3])
            next = critical[offset]
            if next == 0 { critical[offset] = 200 }
            offset += length
        }
        let answer = w.b.receive(critical, path: path, now: 0)
        #expect(answer.count == 1)
        let payloads = try? IKEPayloadChain.typed(IKEPayloadChain.walk(answer[0].bytes[IKEHeader.length...], first: answer[0].bytes[16]).payloads)
        #expect(payloads?.contains(.notify(.unsupportedCriticalPayload, data: [200])) == true)
        for n in 0..<500 {
            var g = randomBytes(Int(randomBytes(1)[0]) + 1)
            if n % 2 == 0 && g.count >= 28 { g.replaceSubrange(0..<28, with: first.bytes[0..<28]) }
            _ = w.b.receive(g, path: path, now: 0)
        }
        #expect(w.b.sas.isEmpty && w.b.counters.invalidMessages > 0)
    }
}

@Suite("IKE configuration: swanctl.conf's names, clear errors, secrets never printed")
struct IKEConfigTests {
    @Test("a strongSwan-style file reads as swanctl reads it")
    func reads() throws {
        let c = try IKEConfig.parse(IKEWire.config(me: 1, extra: "rekey_time = 4h\n dpd_delay = 30s", childExtra: "rekey_time = 1h\nrekey_bytes = 64M"))
        #expect(c.count == 1 && c[0].rekeyTime == 14_400 && c[0].dpdDelay == 30)
        #expect(c[0].children[0].rekeyBytes == 64 << 20 && c[0].children[0].startAction == .start)
        #expect(c[0].localID == IKEIdentity("gw1") && c[0].remoteID == IKEIdentity("gw2"))
        #expect("\(c[0].secret)" == "<secret>" && String(reflecting: c[0].secret) == "<secret>")
    }

    @Test("the file must be mode 0600: 0644 is refused with the chmod to type, 0600 is read")
    func permissions() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ike-\(UUID().uuidString).conf").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try IKEWire.config(me: 1).write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o644)
        do {
            _ = try IKEConfig.load(path: path)
            Issue.record("mode 644 accepted")
        } catch { #expect(error.description.contains("chmod 600"), "\(error)") }
        chmod(path, 0o600)
        #expect(try IKEConfig.load(path: path).count == 1)
    }

    @Test("errors name the line and never the secret", arguments: [
        ("proposals = aes128-sha256-modp2048", "`aes128` is not supported"),
        ("local_addrs = 192.0.2.1, 192.0.2.9", "one IP address"),
        ("auth = pubkey", "only psk"),
        ("colour = blue", "not supported"),
    ])
    func errors(change: String, message: String) {
        var text = IKEWire.config(me: 1, psk: "do-not-print-me")
        switch change.split(separator: " ")[0] {
        case "proposals": text = text.replacingOccurrences(of: "proposals = aes128gcm16-prfsha256-x25519", with: change)
        case "local_addrs": text = text.replacingOccurrences(of: "local_addrs = 192.0.2.1", with: change)
        case "auth": text = text.replacingOccurrences(of: "local { auth = psk", with: "local { \(change)")
        default: text = text.replacingOccurrences(of: "remote_addrs = 192.0.2.2", with: "remote_addrs = 192.0.2.2\n\(change)")
        }
        do {
            _ = try IKEConfig.parse(text, path: "ike.conf")
            Issue.record("accepted")
        } catch {
            #expect(error.description.contains(message) && error.description.hasPrefix("ike.conf:"), "\(error)")
            #expect(!error.description.contains("do-not-print-me"))
        }
    }
}
