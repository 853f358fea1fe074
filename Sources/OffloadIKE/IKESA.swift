import Foundation
import OffloadCrypto
import OffloadIPsec
import OffloadWire

/// One IKE SA and its CHILD_SAs: the exchanges of RFC 7296 from either end, a window of one
/// request each way, retransmission with backoff, cached responses, rekeying of both kinds.
final class IKESA {
    unowned let engine: IKEEngine
    /// Whether this end is the original initiator (for a rekeyed SA: the initiator of the rekey).
    let originalInitiator: Bool
    let localSPI: UInt64
    var remoteSPI: UInt64 = 0
    var spii: UInt64 { originalInitiator ? localSPI : remoteSPI }
    var spir: UInt64 { originalInitiator ? remoteSPI : localSPI }
    /// Where requests go: the path of IKE_SA_INIT, then of the peer's IKE_AUTH, then (when the
    /// peer is behind a NAT) of its last new authenticated message (``follow(_:now:)``).
    var path: IKEPath
    /// NAT detection's result (RFC 7296 §2.23): this end is behind a NAT (the peer saw another
    /// address or port than this end's own), the peer is (or claims so, to get ESP in UDP).
    var natLocal = false, natRemote = false
    let created: Double
    var established = 0.0
    var connection: IKEConnection?

    enum State: String {
        case initSent = "connecting", initDone = "half-open", authSent = "authenticating", established, rekeyed, dead
    }
    /// Where the SA is in its life; changed only by ``transition(to:reason:)``.
    private(set) var state: State
    /// Whether the connection is started again when this SA dies (a child with start_action start/trap).
    var restartWhenDead = false
    var rekeys = 0
    var peerID: IKEIdentity?

    var prf: IKEPRF = .hmacSHA256
    var aead: ESPAlgorithm = .aesGCM128
    var group: IKEKeyExchangeGroup = .curve25519
    var keys: IKESAKeys?
    var cipher: IKEMessageCipher?

    /// IKE_SA_INIT's nonces: the SA's keys come from them (and a rekeyed SA's from the rekey's).
    var ni: [UInt8] = [], nr: [UInt8] = []
    /// IKE_SA_INIT's messages, for IKE_AUTH (from the end of IKE_SA_INIT until established).
    var authTask: IKEAuthTask?

    var nextRequestID: UInt32 = 0
    var expectedRequestID: UInt32 = 0
    var lastResponse: (id: UInt32, bytes: [UInt8])?

    /// A request this end has queued (strongSwan's queued tasks): sent one at a time by ``pump(now:)``;
    /// the state of its exchange, once sent, is the outstanding request's ``Outstanding/taskState``.
    enum Task: Equatable {
        case auth
        case createChild(String)
        case rekeyChild(Int)
        case rekeyIKE
        case deleteChildren([Int])
        case deleteIKE
        case liveness
    }
    /// This end's request awaiting its answer (the window is one), with its exchange's state.
    struct Outstanding {
        var id: UInt32
        var exchange: IKEExchange
        var bytes: [UInt8]
        var sentAt: Double
        var tries: Int
        var timeout: Double
        var task: Task?
        /// The state of the request's exchange, until its answer.
        var taskState: IKETaskState?
    }
    var outstanding: Outstanding?
    var queue: [Task] = []

    enum ChildState: String { case active, rekeying, rekeyed, deleting }
    struct Child {
        var sa: IKEChildSA
        var config: IKEChildConfig
        var rekeyAt: Double
        var state: ChildState = .active
        /// The peer's rekey of this child, answered while this end's own was under way: its nonces
        /// and the child it made (RFC 7296 §2.8.1).
        var peerRekey: (nonces: [[UInt8]], newID: Int)?
        var lastInboundPackets: UInt64 = 0
        var rekeyedAt = 0.0
    }
    var children: [Child] = []
    /// CHILD_SAs deleted by either end, still accepted inbound for a moment: datagrams the peer's
    /// sending thread encrypted just before it switched may still be on the way.
    var retired: [(sa: IKEChildSA, until: Double)] = []
    /// How long a deleted CHILD_SA still decrypts.
    static let retiredGrace = 2.0
    /// Inbound SPIs offered in a request not yet answered.
    var pendingSPIs: [UInt32] {
        if case .child(let task)? = outstanding?.taskState { [task.spi] } else { [] }
    }
    var lastHeard: Double
    var ikeRekeyAt = Double.infinity
    /// When this IKE SA was rekeyed (its successor took the children).
    var rekeyedAt = 0.0
    /// How long an IKE SA the peer rekeyed may wait for the peer's Delete before this end deletes it.
    static let rekeyedIKEGrace = 30.0

    init(engine: IKEEngine, originalInitiator: Bool, localSPI: UInt64, path: IKEPath, now: Double) {
        self.engine = engine
        self.originalInitiator = originalInitiator
        self.localSPI = localSPI
        self.path = path
        created = now
        lastHeard = now
        state = originalInitiator ? .initSent : .initDone
    }

    var name: String { connection?.name ?? "IKE SA \(String(format: "%016llx", localSPI))" }

    /// Whether the connection is started again after a failure (a child with start_action start/trap).
    var startsAgain: Bool { connection?.children.contains { $0.startAction != .none } ?? false }

    /// RFC 7296 §2.10: a nonce of at least 16 bytes and half the PRF's key, at most 256.
    static func nonceAcceptable(_ nonce: [UInt8], prf: IKEPRF) -> Bool {
        nonce.count >= max(16, prf.length / 2) && nonce.count <= 256
    }

    func log(_ level: IKEEvent.Level, _ text: String) { engine.log(level, "\(name): \(text)") }

    /// The one place an SA's state changes: logged as `state old -> new (reason)`.
    func transition(to next: State, reason: String) {
        guard next != state else { return }
        log(.info, "state \(state.rawValue) -> \(next.rawValue) (\(reason))")
        state = next
    }

    // MARK: messages

    typealias Output = [(bytes: [UInt8], path: IKEPath)]

    static func plainMessage(header request: IKEHeader, payloads: [IKEPayload], responderSPI: UInt64) -> [UInt8] {
        let (first, body) = IKEPayloadChain.encode(payloads)
        var h = IKEHeader(initiatorSPI: request.initiatorSPI, responderSPI: responderSPI, nextPayload: first, exchange: .ikeSAInit,
                          fromOriginalInitiator: false, isResponse: true, messageID: request.messageID)
        h.length = UInt32(IKEHeader.length + body.count)
        return h.bytes + body
    }

    func header(_ exchange: IKEExchange, response: Bool, id: UInt32) -> IKEHeader {
        IKEHeader(initiatorSPI: spii, responderSPI: spir, nextPayload: 0, exchange: exchange, fromOriginalInitiator: originalInitiator,
                  isResponse: response, messageID: id)
    }

    /// Sends an encrypted request (the window is one: only when nothing is outstanding).
    func request(_ exchange: IKEExchange, _ payloads: [IKEPayload], task: Task?, state taskState: IKETaskState? = nil, now: Double) -> Output {
        guard let cipher else { return [] }
        let bytes = cipher.seal(header: header(exchange, response: false, id: nextRequestID), payloads: payloads)
        outstanding = Outstanding(id: nextRequestID, exchange: exchange, bytes: bytes, sentAt: now, tries: 0,
                                  timeout: connection?.retransmitTimeout ?? 4, task: task, taskState: taskState)
        nextRequestID &+= 1
        return [(bytes, path)]
    }

    /// Sends (and keeps, for a retransmitted request) an encrypted response.
    func respond(_ exchange: IKEExchange, id: UInt32, _ payloads: [IKEPayload], to path: IKEPath) -> Output {
        guard let cipher else { return [] }
        let bytes = cipher.seal(header: header(exchange, response: true, id: id), payloads: payloads)
        lastResponse = (id, bytes)
        return [(bytes, path)]
    }

    /// The payloads inside a message's SK payload.
    func open(_ bytes: [UInt8], header: IKEHeader) throws(IKEParseError) -> [IKEPayload] {
        guard let cipher else { throw IKEParseError("no keys yet") }
        let raw = try IKEPayloadChain.walk(bytes[IKEHeader.length...], first: header.nextPayload)
        guard let sk = raw.encrypted else { throw IKEParseError("\(IKEExchange(rawValue: header.exchange)!) without an SK payload") }
        let inner = try cipher.open(message: bytes, skOffset: sk.offset, firstInner: sk.firstInner, body: sk.body)
        return try IKEPayloadChain.typed(inner.payloads)
    }

    /// SKEYSEED = prf(Ni | Nr, g^ir) (RFC 7296 §2.14).
    static func skeyseed(_ prf: IKEPRF, ni: [UInt8], nr: [UInt8], shared: SecretBytes) -> SecretBytes { prf(ni + nr, shared) }

    func deriveKeys(skeyseed: SecretBytes) {
        let k = IKESAKeys.derive(prf: prf, aead: aead, skeyseed: skeyseed, ni: ni, nr: nr, spii: spii, spir: spir)
        keys = k
        cipher = try? IKEMessageCipher(aead, outbound: originalInitiator ? k.ei : k.er, inbound: originalInitiator ? k.er : k.ei)
    }

    // MARK: receiving

    func receive(_ bytes: [UInt8], header: IKEHeader, exchange: IKEExchange, path from: IKEPath, now: Double) -> Output {
        if header.isResponse {
            guard let o = outstanding, header.messageID == o.id, o.exchange == exchange else { return [] }
            if exchange == .ikeSAInit { return initResponse(bytes, header: header, now: now) }
            let payloads: [IKEPayload]
            do { payloads = try open(bytes, header: header) } catch {
                engine.counters.invalidMessages += 1
                return []
            }
            outstanding = nil
            lastHeard = now
            follow(from, now: now)
            var out: Output = []
            var childTask: ChildCreateTask?, rekeyTask: IKERekeyTask?
            switch o.taskState {
            case .child(let t)?: childTask = t
            case .ikeRekey(let t)?: rekeyTask = t
            case .ikeInit?, nil: break
            }
            switch o.task {
            case .auth?: out = authResponse(payloads, child: childTask, now: now)
            case .createChild?, .rekeyChild?:
                // Nr is the answer's: without one (or a short one) the exchange fails (checked there).
                out = finishChild(childTask, payloads, nonces: (childTask?.nonce ?? [], Self.nonce(payloads)), now: now)
            case .rekeyIKE?: out = finishRekeyIKE(rekeyTask, payloads, now: now)
            case .deleteChildren(let ids)?:
                for child in children where ids.contains(child.sa.id) { retire(child.sa, now: now) }
                children.removeAll { ids.contains($0.sa.id) }
            case .deleteIKE?:
                log(.info, state == .rekeyed ? "the old IKE SA deleted after its rekey" : "IKE SA deleted")
                transition(to: .dead, reason: "this end's Delete answered")
            case .liveness?, nil: break
            }
            return out + pump(now: now)
        }
        // A request.
        if exchange == .ikeSAInit {
            if let last = lastResponse, last.id == 0 { return [(last.bytes, from)] }
            return []
        }
        if let last = lastResponse, header.messageID == last.id, header.messageID &+ 1 == expectedRequestID {
            return [(last.bytes, from)]  // retransmitted: the same answer, not processed again
        }
        if state == .initDone && !(exchange == .ikeAuth && header.messageID == 1) {
            // Half-open (responder after IKE_SA_INIT): IKE_AUTH with message ID 1 is the only request there is.
            engine.counters.invalidMessages += 1
            return []
        }
        if state == .initSent || state == .authSent {
            // The initiator before IKE_AUTH's answer: the responder has no request to make yet.
            engine.counters.invalidMessages += 1
            return []
        }
        guard header.messageID == expectedRequestID else { return [] }
        let payloads: [IKEPayload]
        do { payloads = try open(bytes, header: header) } catch {
            engine.counters.invalidMessages += 1
            if error.notify == .unsupportedCriticalPayload, cipher != nil {
                expectedRequestID &+= 1
                log(.warning, "\(exchange) request with an unsupported critical payload \(error.payloadType): refused")
                return respond(exchange, id: header.messageID, [.notify(.unsupportedCriticalPayload, data: [error.payloadType])], to: from)
            }
            return []
        }
        expectedRequestID &+= 1
        lastHeard = now
        var out: Output
        switch exchange {
        case .ikeAuth:
            guard state == .initDone else { return [] }
            follow(from, now: now)
            out = answerAuth(payloads, id: header.messageID, path: from, now: now)
        case .createChildSA:
            guard state == .established else {
                return respond(exchange, id: header.messageID, [.notify(.temporaryFailure)], to: from)
            }
            follow(from, now: now)
            out = answerCreateChild(payloads, id: header.messageID, from: from, now: now)
        case .informational:
            follow(from, now: now)
            out = answerInformational(payloads, id: header.messageID, from: from, now: now)
        case .ikeSAInit:
            out = []
        }
        return out + pump(now: now)
    }

    /// A message that verified and is new (the next request, or the answer to the outstanding
    /// one; never a retransmission) came on `from`. Before the SA is established the path is
    /// taken as it is (the initiator floats from port 500 to 4500 with IKE_AUTH); after, it moves
    /// only when the peer is behind a NAT (RFC 7296 §2.23: its NAT may have rebound) and only to
    /// an address the connection's `remote_addrs` accepts, and the CHILD_SAs then send there too
    /// (``IKEEngine/childGeneration`` changes).
    /// - Returns: whether the path changed.
    @discardableResult
    func follow(_ from: IKEPath, now: Double) -> Bool {
        guard from != path else { return false }
        switch state {
        case .initSent, .initDone, .authSent:
            path = from
            return true
        case .established, .rekeyed:
            guard natRemote else { return false }
            if let c = connection, !c.remoteAddrs.matches(from.remote) {
                // The connection's remote_addrs bound where its peer may be, after a move too.
                log(.warning, "not following the peer from \(path) to \(from): remote_addrs (\(c.remoteAddrs)) does not accept it")
                return false
            }
            log(.info, "peer moved from \(path) to \(from)")
            path = from
            lastHeard = now
            engine.childrenChanged()
            return true
        case .dead:
            return false
        }
    }

    /// `child` as the host sees it: with this SA's peer endpoint now.
    func withPeer(_ child: IKEChildSA) -> IKEChildSA {
        var c = child
        c.peer = path.endpoint
        c.peerMayMove = natRemote
        return c
    }

    static func nonce(_ payloads: [IKEPayload]) -> [UInt8]? {
        for case .nonce(let n) in payloads { return n }
        return nil
    }

    // MARK: time

    /// Sends the next queued request when nothing is outstanding.
    func pump(now: Double) -> Output {
        while outstanding == nil, !queue.isEmpty {
            let task = queue.removeFirst()
            var out: Output = []
            switch task {
            case .auth: out = sendAuth(now: now)
            case .createChild(let name) where state == .established: out = sendCreateChild(name, now: now)
            case .rekeyChild(let id) where state == .established: out = sendRekeyChild(id, now: now)
            case .rekeyIKE where state == .established: out = sendRekeyIKE(now: now)
            case .deleteChildren(let ids) where state == .established:
                let spis = children.filter { ids.contains($0.sa.id) }.map { bigEndianBytes($0.sa.inbound.spi) }
                guard !spis.isEmpty else { continue }
                for i in children.indices where ids.contains(children[i].sa.id) { children[i].state = .deleting }
                out = request(.informational, [.delete(protocolID: IKEProposal.esp, spis: spis)], task: task, now: now)
            case .deleteIKE: out = request(.informational, [.delete(protocolID: IKEProposal.ike, spis: [])], task: task, now: now)
            case .liveness where state == .established: out = request(.informational, [], task: task, now: now)
            default: continue
            }
            if !out.isEmpty { return out }
        }
        return []
    }

    func tick(now: Double, traffic: (UInt32, Bool) -> IKETrafficSample) -> Output {
        if retired.contains(where: { $0.until <= now }) {
            retired.removeAll { $0.until <= now }
            engine.childrenChanged()
        }
        guard state != .dead else { return [] }
        if !originalInitiator && state == .initDone && now - created > engine.halfOpenTimeout {
            transition(to: .dead, reason: "half-open for longer than \(engine.halfOpenTimeout) s")
            return []
        }
        if state == .rekeyed && now - rekeyedAt > Self.rekeyedIKEGrace && outstanding?.task != .deleteIKE && !queue.contains(.deleteIKE) {
            // The peer rekeyed this IKE SA and never deleted it (RFC 7296 §2.8 says it should):
            // this end deletes it (the Delete sent once, not awaited).
            log(.info, "the old IKE SA was not deleted by the peer \(Int(Self.rekeyedIKEGrace)) s after its rekey: deleted")
            let bye = cipher != nil ? [deleteMessage()] : []
            transition(to: .dead, reason: "not deleted by the peer after its rekey")
            return bye
        }
        var out: Output = []
        if let o = outstanding, now >= o.sentAt + o.timeout, state == .initSent, case .ikeInit(let task)? = o.taskState, let refusal = task.refusal {
            log(.error, "IKE_SA_INIT: \(refusal), and no other answer within the retransmission timer: this attempt ends")
            restartWhenDead = startsAgain
            transition(to: .dead, reason: "IKE_SA_INIT refused and no other answer")
            return []
        }
        if var o = outstanding, now >= o.sentAt + o.timeout {
            if o.tries >= (connection?.retransmitTries ?? 5) {
                log(.error, "no answer to \(o.exchange) after \(o.tries + 1) tries: IKE SA torn down (peer dead?)")
                restartWhenDead = state == .established || state == .authSent || state == .initSent
                restartWhenDead = restartWhenDead && startsAgain
                if !children.isEmpty { engine.childrenChanged() }
                children = []
                transition(to: .dead, reason: "no answer to \(o.exchange)")
                return []
            }
            o.tries += 1
            o.sentAt = now
            o.timeout *= connection?.retransmitBase ?? 1.8
            outstanding = o
            engine.counters.retransmissions += 1
            out.append((o.bytes, path))
        }
        guard state == .established else { return out }
        for i in children.indices {
            let seen = traffic(children[i].sa.inbound.spi, true).packets
            if seen != children[i].lastInboundPackets {
                children[i].lastInboundPackets = seen
                lastHeard = now
                // The peer sends on a new SA it was answered for: this end sends on it too.
                if !children[i].sa.sending, children[i].state == .active, children[i].sa.replaces != nil {
                    children[i].sa.sending = true
                    engine.childrenChanged()
                }
            }
        }
        if let c = connection {
            for child in children where child.state == .active {
                let sent = traffic(child.sa.outbound.spi, false), got = traffic(child.sa.inbound.spi, true)
                let packets = max(sent.packets, got.packets)
                let due = now >= child.rekeyAt
                    || (child.config.rekeyBytes > 0 && sent.bytes + got.bytes >= child.config.rekeyBytes)
                    || (child.config.rekeyPackets > 0 && packets >= child.config.rekeyPackets)
                    || (!child.sa.extendedSequenceNumbers && packets >= 1 << 31)
                if due && !queue.contains(.rekeyChild(child.sa.id)) && outstanding?.task != .rekeyChild(child.sa.id) {
                    queue.append(.rekeyChild(child.sa.id))
                }
            }
            // A rekeyed SA the peer never deleted goes after a while.
            let stale = children.filter { $0.state == .rekeyed && now - $0.rekeyedAt > 30 }.map(\.sa.id)
            if !stale.isEmpty && !queue.contains(.deleteChildren(stale)) { queue.append(.deleteChildren(stale)) }
            if now >= ikeRekeyAt && !queue.contains(.rekeyIKE) && outstanding?.task != .rekeyIKE {
                ikeRekeyAt = .infinity
                queue.append(.rekeyIKE)
            }
            if c.dpdDelay > 0 && now - lastHeard >= c.dpdDelay && outstanding == nil && queue.isEmpty {
                queue.append(.liveness)
            }
        }
        if outstanding == nil { out += pump(now: now) }
        return out
    }

    func status(now: Double, traffic: (UInt32, Bool) -> IKETrafficSample) -> IKESAStatus {
        IKESAStatus(
            connection: name, state: state.rawValue, role: originalInitiator ? "initiator" : "responder",
            spis: "\(String(format: "%016llx", spii))_i \(String(format: "%016llx", spir))_r", algorithms: "\(aead)-\(prf)-\(group)",
            age: established > 0 ? now - established : 0, rekeys: rekeys, peer: path.description, peerID: peerID?.description ?? "",
            natLocal: natLocal, natRemote: natRemote,
            children: children.map { c in
                let i = traffic(c.sa.inbound.spi, true), o = traffic(c.sa.outbound.spi, false)
                return IKESAStatus.Child(name: c.config.name, spiIn: String(format: "%08x", c.sa.inbound.spi),
                                         spiOut: String(format: "%08x", c.sa.outbound.spi), algorithm: c.sa.algorithm.rawValue,
                                         esn: c.sa.extendedSequenceNumbers, age: now - c.sa.installed, rekeys: c.sa.generation,
                                         sending: c.sa.sending, packetsIn: i.packets, bytesIn: i.bytes, packetsOut: o.packets, bytesOut: o.bytes,
                                         localTS: c.sa.localTS.map(\.description).joined(separator: ","),
                                         remoteTS: c.sa.remoteTS.map(\.description).joined(separator: ","))
            })
    }
}

extension IKESA.Task: Hashable {}
