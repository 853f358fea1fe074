import OffloadIPsec
import OffloadWire
import Testing

@testable import OffloadIKE

/// Where a message from b arrives at a, and from a at b.
let pathAtA = IKEPath(localPort: 4500, remote: IKEWire.addressB, remotePort: 4500)
let pathAtB = IKEPath(localPort: 4500, remote: IKEWire.addressA, remotePort: 4500)

/// The payloads of a plain message (IKE_SA_INIT).
func plainPayloads(_ bytes: [UInt8]) -> [IKEPayload] { (try? IKEPlainMessage(parsing: bytes))?.payloads ?? [] }

/// `bytes` (a plain message) with its nonce replaced.
func withNonce(_ bytes: [UInt8], _ nonce: [UInt8]) throws -> [UInt8] {
    let m = try IKEPlainMessage(parsing: bytes)
    let payloads = m.payloads.map { p -> IKEPayload in if case .nonce = p { .nonce(nonce) } else { p } }
    return IKEPlainMessage.encode(header: m.header, payloads: payloads)
}

/// The engine's IKE SAs in a given state.
func sas(_ e: IKEEngine, _ state: IKESA.State) -> [IKESA] { e.sas.values.filter { $0.state == state } }

@Suite("IKEv2 engine: retries after failed attempts (RFC 7296 §2.21.1)")
struct IKERetryTests {
    @Test("a forged NO_PROPOSAL_CHOSEN answers the first IKE_SA_INIT: the attempt is not given up; the initiator comes up with the real responder")
    func forgedRefusal() throws {
        let w = try IKEWire(IKEWire.config(me: 1), IKEWire.config(me: 2, start: "none"))
        let first = try #require(w.a.start(now: 0).first)
        let forged = IKESA.plainMessage(header: try IKEHeader(parsing: first.bytes), payloads: [.notify(.noProposalChosen)], responderSPI: 0)
        #expect(w.a.receive(forged, path: pathAtA, now: 0).isEmpty)
        // The forger also kept the request from the responder: only the timer and a new attempt help.
        w.advance(15)
        #expect(matched(w.a, w.b), "up after the forged refusal")
        #expect(w.a.takeEvents().contains { $0.description.contains("trying again in") })
    }

    @Test("a forged refusal, then the genuine answer to the same request: taken, no second attempt")
    func forgedThenGenuine() throws {
        let w = try IKEWire(IKEWire.config(me: 1), IKEWire.config(me: 2, start: "none"))
        let first = try #require(w.a.start(now: 0).first)
        let forged = IKESA.plainMessage(header: try IKEHeader(parsing: first.bytes), payloads: [.notify(.noProposalChosen)], responderSPI: 0)
        _ = w.a.receive(forged, path: pathAtA, now: 0)
        w.send([first], fromA: true)
        w.run()
        #expect(matched(w.a, w.b))
        #expect(w.a.takeEvents().filter { $0.description.contains("initiating IKE_SA_INIT") }.count == 1)
    }

    @Test("a forged refusal, then a genuine COOKIE demand: the request with the cookie gets its own timer (retransmitted, not given up)")
    func refusalThenCookie() throws {
        let w = try IKEWire(IKEWire.config(me: 1), IKEWire.config(me: 2, start: "none"))
        w.b.cookieThreshold = 0
        let first = try #require(w.a.start(now: 0).first)
        let forged = IKESA.plainMessage(header: try IKEHeader(parsing: first.bytes), payloads: [.notify(.noProposalChosen)], responderSPI: 0)
        _ = w.a.receive(forged, path: pathAtA, now: 0)
        let demand = try #require(w.b.receive(first.bytes, path: pathAtB, now: 0).first)
        let withCookie = try #require(w.a.receive(demand.bytes, path: pathAtA, now: 0).first)  // lost on the way
        let again = w.a.tick(now: 4.5, traffic: { _, _ in IKETrafficSample() })
        #expect(again.map(\.bytes) == [withCookie.bytes], "the request with the cookie, sent again")
        #expect(w.a.counters.retransmissions == 1)
    }

    @Test("a responder that keeps refusing: attempts back off (1 s doubling, up to 60 s) and stop after keyingtries")
    func backoff() throws {
        // Proposals that do not meet: the responder's NO_PROPOSAL_CHOSEN each time.
        let refusing = IKEWire.config(me: 2, start: "none", proposals: "aes256gcm16-prfsha384-modp2048")
        let w = try IKEWire(IKEWire.config(me: 1), refusing)
        w.start()
        w.advance(120)
        let attempts = w.a.takeEvents().filter { $0.description.contains("initiating IKE_SA_INIT") }.count
        // Each attempt waits 4 s for another answer, then 1, 2, 4, 8, 16, 32, 60 s (less up to a quarter):
        // 7 or 8 attempts in 120 s (a fixed 1 s would make 24; none at all before retries existed).
        #expect((7...8).contains(attempts), "\(attempts) attempts")
        #expect(w.a.activeChildSAs.isEmpty)

        let limited = try IKEWire(IKEWire.config(me: 1, extra: "keyingtries = 3"), refusing)
        limited.start()
        limited.advance(300)
        let events = limited.a.takeEvents()
        #expect(events.filter { $0.description.contains("initiating IKE_SA_INIT") }.count == 3)
        #expect(events.contains { $0.description.contains("given up (keyingtries 3)") })
    }
}

@Suite("IKEv2 engine: protocol limits (RFC 7296 §2.6, §2.10, §2.8)")
struct IKEHardeningTests {
    @Test("a half-open responder takes only IKE_AUTH with message ID 1: an INFORMATIONAL (ID 1) first does not spend the ID; the initiator takes no request before IKE_AUTH's answer")
    func halfOpenOnlyAuth() throws {
        let w = try IKEWire(IKEWire.config(me: 1), IKEWire.config(me: 2, start: "none"))
        let first = try #require(w.a.start(now: 0).first)
        let answer = try #require(w.b.receive(first.bytes, path: pathAtB, now: 0).first)
        let auth = w.a.receive(answer.bytes, path: pathAtA, now: 0)
        #expect(auth.count == 1)
        let a = try #require(w.a.sas.values.first)
        // Sealed with the real keys (the initiator's): only the initiator could send these.
        for exchange in [IKEExchange.informational, .createChildSA] {
            let early = a.cipher!.seal(header: a.header(exchange, response: false, id: 1), payloads: [])
            #expect(w.b.receive(early, path: pathAtB, now: 0).isEmpty, "\(exchange) on a half-open SA: not answered")
        }
        let wrongID = a.cipher!.seal(header: a.header(.ikeAuth, response: false, id: 2), payloads: [])
        #expect(w.b.receive(wrongID, path: pathAtB, now: 0).isEmpty)
        // Nor does the initiator, waiting for IKE_AUTH's answer, take a request of the responder's.
        let b = try #require(w.b.sas.values.first)
        let fromB = b.cipher!.seal(header: b.header(.informational, response: false, id: 0), payloads: [])
        #expect(w.a.receive(fromB, path: pathAtA, now: 0).isEmpty, "no request before IKE_AUTH is answered")
        w.send(auth, fromA: true)
        w.run()
        #expect(matched(w.a, w.b), "IKE_AUTH with ID 1 still establishes")
    }

    @Test("nonces shorter than half the PRF's key (prfsha384: 24 bytes) are refused in IKE_SA_INIT, both ways")
    func initNonceLength() throws {
        let p = "aes256gcm16-prfsha384-x25519"
        let w = try IKEWire(IKEWire.config(me: 1, proposals: p), IKEWire.config(me: 2, start: "none", proposals: p))
        let first = try #require(w.a.start(now: 0).first)
        let refused = w.b.receive(try withNonce(first.bytes, [UInt8](repeating: 7, count: 16)), path: pathAtB, now: 0)
        #expect(plainPayloads(refused.first?.bytes ?? []) == [.notify(.invalidSyntax)])
        #expect(w.b.sas.isEmpty)
        // 24 bytes is enough; the responder's answer with a short Nr does not move the initiator on.
        let answer = try #require(w.b.receive(try withNonce(first.bytes, [UInt8](repeating: 7, count: 24)), path: pathAtB, now: 0).first)
        #expect(w.b.sas.count == 1)
        #expect(w.a.receive(try withNonce(answer.bytes, [UInt8](repeating: 9, count: 16)), path: pathAtA, now: 0).isEmpty)
        #expect(sas(w.a, .initSent).count == 1, "still waiting for an answer it can use")
    }

    @Test("CREATE_CHILD_SA with a nonce too short for prfsha384: INVALID_SYNTAX, no child")
    func childNonceLength() throws {
        let p = "aes256gcm16-prfsha384-x25519"
        let w = try IKEWire(IKEWire.config(me: 1, proposals: p), IKEWire.config(me: 2, start: "none", proposals: p))
        w.start()
        #expect(matched(w.a, w.b))
        let a = try #require(sas(w.a, .established).first)
        let config = a.connection!.children[0]
        let request = a.cipher!.seal(header: a.header(.createChildSA, response: false, id: a.nextRequestID),
                                     payloads: [.securityAssociation(a.espProposals(config, spi: 0x1234_5678)), .nonce([UInt8](repeating: 1, count: 16)),
                                                .trafficSelectorsInitiator(config.localTS.map(SelectorMath.range)),
                                                .trafficSelectorsResponder(config.remoteTS.map(SelectorMath.range))])
        let answer = try #require(w.b.receive(request, path: pathAtB, now: 0).first)
        #expect(try a.open(answer.bytes, header: IKEHeader(parsing: answer.bytes)) == [.notify(.invalidSyntax)])
        #expect(w.b.activeChildSAs.count == 1)
    }

    @Test("a CREATE_CHILD_SA answer without Nr is refused: no child installed, the exchange over")
    func answerWithoutNonce() throws {
        let w = try IKEWire(IKEWire.config(me: 1, children: 2), IKEWire.config(me: 2, start: "none", children: 2))
        let first = try #require(w.a.start(now: 0).first)
        let initAnswer = try #require(w.b.receive(first.bytes, path: pathAtB, now: 0).first)
        let auth = try #require(w.a.receive(initAnswer.bytes, path: pathAtA, now: 0).first)
        let authAnswer = try #require(w.b.receive(auth.bytes, path: pathAtB, now: 0).first)
        // The first child is up; the second is asked for in CREATE_CHILD_SA.
        let create = try #require(w.a.receive(authAnswer.bytes, path: pathAtA, now: 0).first)
        #expect(w.a.activeChildSAs.count == 1)
        let real = try #require(w.b.receive(create.bytes, path: pathAtB, now: 0).first)
        let a = try #require(w.a.sas.values.first), b = try #require(w.b.sas.values.first)
        let header = try IKEHeader(parsing: real.bytes)
        let payloads = try a.open(real.bytes, header: header)
        #expect(payloads.contains { if case .nonce = $0 { true } else { false } })
        let stripped = payloads.filter { if case .nonce = $0 { false } else { true } }
        let forged = b.cipher!.seal(header: b.header(.createChildSA, response: true, id: header.messageID), payloads: stripped)
        _ = w.a.receive(forged, path: pathAtA, now: 0)
        #expect(w.a.activeChildSAs.count == 1, "no CHILD_SA from an answer without Nr")
        #expect(a.outstanding == nil && a.outstanding?.taskState == nil && a.pendingSPIs.isEmpty)
        #expect(w.a.takeEvents().contains { $0.description.contains("no nonce") })
    }

    @Test("the cookie secret rotates: a cookie of the previous secret still gets in, one two rotations old does not")
    func cookieRotation() throws {
        let b = IKEEngine(connections: try IKEConfig.parse(IKEWire.config(me: 2, start: "none")))
        b.cookieThreshold = 0
        b.cookieSecretLifetime = 100
        func requestWithCookie(now: Double) throws -> [UInt8] {
            let a = IKEEngine(connections: try IKEConfig.parse(IKEWire.config(me: 1)))
            let first = try #require(a.initiate(a.connections[0], now: now).first)
            let demand = try #require(b.receive(first.bytes, path: pathAtB, now: now).first)
            #expect(plainPayloads(demand.bytes).contains { if case .notify(_, _, .cookie, _) = $0 { true } else { false } })
            return try #require(a.receive(demand.bytes, path: pathAtA, now: now).first).bytes
        }
        func accepted(_ request: [UInt8], now: Double) -> Bool {
            let answer = b.receive(request, path: pathAtB, now: now)
            return plainPayloads(answer.first?.bytes ?? []).contains { if case .securityAssociation = $0 { true } else { false } }
        }
        let noTraffic = { (_: UInt32, _: Bool) in IKETrafficSample() }
        _ = b.tick(now: 0, traffic: noTraffic)
        let one = try requestWithCookie(now: 0)
        _ = b.tick(now: 150, traffic: noTraffic)  // rotated once
        #expect(accepted(one, now: 150), "the previous secret's cookie")
        let two = try requestWithCookie(now: 150)
        _ = b.tick(now: 260, traffic: noTraffic)
        _ = b.tick(now: 370, traffic: noTraffic)  // rotated twice since
        #expect(!accepted(two, now: 370), "a cookie two secrets old is refused (a new one demanded)")
    }

    @Test("an IKE SA the peer rekeyed and never deleted is deleted by this end after a bounded time; the new one stays")
    func rekeyedNeverDeleted() throws {
        let w = try IKEWire(IKEWire.config(me: 1), IKEWire.config(me: 2, start: "none"))
        w.start()
        #expect(matched(w.a, w.b))
        let old = try #require(sas(w.a, .established).first)
        old.queue.append(.rekeyIKE)
        let request = try #require(old.pump(now: 1).first)
        let answer = try #require(w.b.receive(request.bytes, path: pathAtB, now: 1).first)
        // The initiator's Delete of the old IKE SA is lost, and never sent again.
        #expect(w.a.receive(answer.bytes, path: pathAtA, now: 1).count == 1)
        #expect(sas(w.b, .rekeyed).count == 1 && sas(w.b, .established).count == 1)
        let noTraffic = { (_: UInt32, _: Bool) in IKETrafficSample() }
        _ = w.b.tick(now: 20, traffic: noTraffic)
        #expect(sas(w.b, .rekeyed).count == 1, "still waiting for the peer's Delete")
        let out = w.b.tick(now: 1 + IKESA.rekeyedIKEGrace + 1, traffic: noTraffic)
        #expect(out.count == 1, "its own Delete, sent once")
        #expect(w.b.sas.count == 1 && sas(w.b, .established).count == 1 && w.b.activeChildSAs.count == 1)
    }

    @Test("CHILD_SAs per IKE SA are capped: one more is refused with NO_ADDITIONAL_SAS")
    func childCap() throws {
        let w = try IKEWire(IKEWire.config(me: 1, children: 3), IKEWire.config(me: 2, start: "none", children: 3))
        w.b.maxChildSAs = 2
        w.start()
        #expect(w.a.activeChildSAs.count == 2 && w.b.activeChildSAs.count == 2 && matched(w.a, w.b))
        #expect(w.a.takeEvents().contains { $0.description.contains("NO_ADDITIONAL_SAS") })
    }

    @Test("traffic selectors per payload are capped at 16: 17 are refused with TS_UNACCEPTABLE, 16 accepted", arguments: [16, 17])
    func selectorCap(count: Int) throws {
        let many = (0..<count).map { "10.1.\($0).0/24" }.joined(separator: ", ")
        let w = try IKEWire(IKEWire.config(me: 1, localTS: many, remoteTS: "10.2.0.0/24"),
                            IKEWire.config(me: 2, start: "none", localTS: "10.2.0.0/24", remoteTS: "10.1.0.0/16"))
        w.start()
        #expect(sas(w.b, .established).count == 1)
        if count > IKEEngine.maxSelectorsPerPayload {
            #expect(w.b.activeChildSAs.isEmpty)
            #expect(w.b.takeEvents().contains { $0.description.contains("TS_UNACCEPTABLE") })
        } else {
            #expect(w.b.activeChildSAs.first?.remoteTS.count == count && matched(w.a, w.b))
        }
    }
}

@Suite("IKEv2 engine: what an authenticated peer's selectors can make of the answer")
struct IKESelectorAnswerTests {
    @Test("ranges that narrow to hundreds of prefixes (just inside a /0) are refused with TS_UNACCEPTABLE, and the answer encodes")
    func rangesThatExplode() throws {
        // The responder accepts any IPv4 source; the initiator is set up normally, then a CREATE_CHILD_SA
        // request carries six ranges N.0.0.1 - N.255.255.254, each of which is 2 x 23 prefixes narrowed.
        let w = try IKEWire(IKEWire.config(me: 1, remoteTS: "10.2.0.0/24"),
                            IKEWire.config(me: 2, start: "none", localTS: "10.2.0.0/24", remoteTS: "0.0.0.0/0"))
        w.start()
        let a = try #require(sas(w.a, .established).first), b = try #require(sas(w.b, .established).first)
        let config = try #require(a.connection?.children.first)
        let offered = a.espProposals(config, spi: 0x0c0f_fee0)
        let ranges = (1...6).map { n in IKETrafficSelector(start: [UInt8(n), 0, 0, 1], end: [UInt8(n), 255, 255, 254]) }
        let payloads: [IKEPayload] = [.securityAssociation(offered), .trafficSelectorsInitiator(ranges),
                                      .trafficSelectorsResponder([IKETrafficSelector(start: [10, 2, 0, 0], end: [10, 2, 0, 255])])]
        let before = w.b.activeChildSAs.count
        let answer = b.answerChild(payloads, nonces: ([UInt8](repeating: 1, count: 32), [UInt8](repeating: 2, count: 32)), replaces: nil, now: 1)
        #expect(answer.contains { if case .notify(_, _, .tsUnacceptable, _) = $0 { true } else { false } }, "\(answer.count) payloads")
        #expect(w.b.activeChildSAs.count == before, "no CHILD_SA installed")
        #expect(IKEPayloadChain.encode(answer).bytes.count > 0)
    }
}

@Suite("IKEv2 engine: the fuzzing hooks")
struct IKEFuzzHookTests {
    @Test("a seeded engine draws the same nonces and SPIs each time; unseeded engines do not")
    func seeded() throws {
        func establish(seeded: Bool) throws -> (IKEWire, [UInt8], UInt32) {
            let w = try IKEWire(IKEWire.config(me: 1), IKEWire.config(me: 2, start: "none"))
            if seeded {
                w.a._fuzzSeedRandom(1)
                w.b._fuzzSeedRandom(2)
            }
            w.start()
            let sa = try #require(w.a.sas.values.first)
            return (w, sa.ni + sa.nr, try #require(w.a.activeChildSAs.first).inbound.spi)
        }
        let (w1, nonces1, spi1) = try establish(seeded: true), (w2, nonces2, spi2) = try establish(seeded: true)
        #expect(matched(w1.a, w1.b) && matched(w2.a, w2.b))
        #expect(nonces1 == nonces2 && spi1 == spi2 && w1.a._fuzzViews().map(\.localSPI) == w2.a._fuzzViews().map(\.localSPI))
        let (w3, nonces3, _) = try establish(seeded: false)
        #expect(matched(w3.a, w3.b) && nonces3 != nonces1)
    }
}
