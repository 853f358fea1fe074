import Foundation
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
    /// Where requests go: the path of the peer's last authenticated message.
    var path: IKEPath
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

    var ni: [UInt8] = [], nr: [UInt8] = []
    /// IKE_SA_INIT's messages, for IKE_AUTH (from the end of IKE_SA_INIT until established).
    var authTask: IKEAuthTask?

    var nextRequestID: UInt32 = 0
    var expectedRequestID: UInt32 = 0
    var lastResponse: (id: UInt32, bytes: [UInt8])?

    enum Task: Equatable {
        case auth
        case createChild(String)
        case rekeyChild(Int)
        case rekeyIKE
        case deleteChildren([Int])
        case deleteIKE
        case liveness
    }
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

    func deleteMessage() -> (bytes: [UInt8], path: IKEPath) {
        let bytes = cipher!.seal(header: header(.informational, response: false, id: nextRequestID), payloads: [.delete(protocolID: 1, spis: [])])
        nextRequestID &+= 1
        return (bytes, path)
    }

    // MARK: IKE_SA_INIT

    func proposals(spi: [UInt8], groupFirst: IKEKeyExchangeGroup?) -> [IKEProposal] {
        (connection?.proposals ?? []).enumerated().map { i, p in
            var groups = p.groups
            if let g = groupFirst, let at = groups.firstIndex(of: g) { groups.remove(at: at); groups.insert(g, at: 0) }
            let t = p.encryption.map(\.ikeTransform) + p.prfs.map { IKETransform(type: IKETransform.prf, id: $0.rawValue) }
                + groups.map { IKETransform(type: IKETransform.keyExchange, id: $0.rawValue) }
            return IKEProposal(number: UInt8(i + 1), protocolID: IKEProposal.ike, spi: spi, transforms: t)
        }
    }

    func natPayloads(spir: UInt64) -> [IKEPayload] {
        // The source hash is never right (RFC 7296 §2.23 lets an end claim a NAT): the peer then sends
        // ESP in UDP on port 4500, the only way this gateway speaks ESP.
        [.notify(.natDetectionSourceIP, data: engine.random(20)),
         .notify(.natDetectionDestinationIP, data: natDetectionHash(spii: spii, spir: spir, address: path.remote, port: path.remotePort))]
    }

    /// Sends IKE_SA_INIT: the first request (`task` nil), or the exchange's next (with a COOKIE,
    /// or another group).
    func sendInit(_ existing: IKEInitTask? = nil, now: Double) -> Output {
        guard let c = connection, let firstGroup = c.proposals.first?.groups.first else { return [] }
        let task: IKEInitTask
        if let existing {
            task = existing
        } else {
            guard let k = try? IKEKeyPair(firstGroup) else { log(.error, "no key pair"); transition(to: .dead, reason: "no key pair for the first group"); return [] }
            task = IKEInitTask(keyPair: k, nonce: engine.random(32))
        }
        task.refusal = nil  // a new request (COOKIE, INVALID_KE_PAYLOAD): its own chance
        var payloads: [IKEPayload] = task.cookie.map { [.notify(.cookie, data: $0)] } ?? []
        payloads += [.securityAssociation(proposals(spi: [], groupFirst: task.keyPair.group)),
                     .keyExchange(group: task.keyPair.group.rawValue, data: task.keyPair.publicValue), .nonce(task.nonce)]
        payloads += natPayloads(spir: 0)
        let (first, body) = IKEPayloadChain.encode(payloads)
        var h = header(.ikeSAInit, response: false, id: 0)
        h.nextPayload = first
        h.length = UInt32(IKEHeader.length + body.count)
        task.request = h.bytes + body
        outstanding = Outstanding(id: 0, exchange: .ikeSAInit, bytes: task.request, sentAt: now, tries: 0, timeout: c.retransmitTimeout, task: nil,
                                  taskState: .ikeInit(task))
        nextRequestID = 1
        return [(task.request, path)]
    }

    /// The responder's side of IKE_SA_INIT.
    func answerInit(_ bytes: [UInt8], header: IKEHeader, payloads: [IKEPayload], now: Double) -> Output {
        func refuse(_ notify: IKENotifyType, _ data: [UInt8] = [], _ why: String) -> Output {
            log(.warning, "IKE_SA_INIT from \(path) refused (\(notify)): \(why)")
            transition(to: .dead, reason: "IKE_SA_INIT refused (\(notify))")
            return [(Self.plainMessage(header: header, payloads: [.notify(notify, data: data)], responderSPI: 0), path)]
        }
        guard let c = engine.connections.first(where: { $0.remoteAddress == path.remote }) else { return refuse(.noProposalChosen, [], "no connection") }
        connection = c
        var offered: [IKEProposal] = [], ke: (UInt16, [UInt8])?, nonce: [UInt8]?
        for p in payloads {
            switch p {
            case .securityAssociation(let list): offered = list
            case .keyExchange(let g, let d): ke = (g, d)
            case .nonce(let n): nonce = n
            default: break
            }
        }
        guard let ke, let nonce, !offered.isEmpty else { return refuse(.invalidSyntax, [], "no SA, KE or Nonce payload") }
        guard let (number, encryption, prf, group) = Self.choose(ours: c.proposals, theirs: offered) else {
            return refuse(.noProposalChosen, [], "none of the peer's proposals (\(Self.describe(offered))) matches \(c.proposals.map(\.description).joined(separator: ", "))")
        }
        guard ke.0 == group.rawValue else {
            return refuse(.invalidKEPayload, bigEndianBytes(group.rawValue), "the peer guessed group \(ke.0), this end wants \(group)")
        }
        guard Self.nonceAcceptable(nonce, prf: prf) else {
            return refuse(.invalidSyntax, [], "a nonce of \(nonce.count) bytes (\(prf) wants \(max(16, prf.length / 2)) to 256)")
        }
        guard let pair = try? IKEKeyPair(group), let shared = pair.shared(with: ke.1) else {
            return refuse(.invalidSyntax, [], "the peer's \(group) public value is invalid")
        }
        (self.prf, self.aead, self.group) = (prf, encryption, group)
        ni = nonce
        nr = engine.random(32)
        checkNAT(payloads, spirInMessage: 0)
        let chosen = IKEProposal(number: number, protocolID: IKEProposal.ike, spi: [],
                                 transforms: [encryption.ikeTransform, IKETransform(type: IKETransform.prf, id: prf.rawValue),
                                              IKETransform(type: IKETransform.keyExchange, id: group.rawValue)])
        let answer: [IKEPayload] = [.securityAssociation([chosen]), .keyExchange(group: group.rawValue, data: pair.publicValue), .nonce(nr)]
            + natPayloads(spir: localSPI)
        let (first, body) = IKEPayloadChain.encode(answer)
        var h = self.header(.ikeSAInit, response: true, id: 0)
        h.nextPayload = first
        h.length = UInt32(IKEHeader.length + body.count)
        let response = h.bytes + body
        authTask = IKEAuthTask(initRequest: bytes, initResponse: response)
        lastResponse = (0, response)
        deriveKeys(skeyseed: Self.skeyseed(prf, ni: ni, nr: nr, shared: shared))
        expectedRequestID = 1
        return [(response, path)]
    }

    static func describe(_ proposals: [IKEProposal]) -> String {
        proposals.map { p in p.transforms.map { "\($0.type):\($0.id)\($0.keyLength.map { "/\($0)" } ?? "")" }.joined(separator: "-") }
            .joined(separator: ", ")
    }

    /// The first of this end's choices (in its order) that one of the peer's IKE proposals allows.
    static func choose(ours: [IKEProposalChoice], theirs: [IKEProposal]) -> (UInt8, ESPAlgorithm, IKEPRF, IKEKeyExchangeGroup)? {
        for choice in ours {
            for e in choice.encryption {
                for f in choice.prfs {
                    for g in choice.groups {
                        for p in theirs where p.protocolID == IKEProposal.ike {
                            // An AEAD proposal has no integrity transform other than NONE (0).
                            guard !p.transforms.contains(where: { $0.type == IKETransform.integrity && $0.id != 0 }) else { continue }
                            if p.transforms.contains(e.ikeTransform)
                                && p.transforms.contains(where: { $0.type == IKETransform.prf && $0.id == f.rawValue })
                                && p.transforms.contains(where: { $0.type == IKETransform.keyExchange && $0.id == g.rawValue }) {
                                return (p.number, e, f, g)
                            }
                        }
                    }
                }
            }
        }
        return nil
    }

    func checkNAT(_ payloads: [IKEPayload], spirInMessage: UInt64) {
        var sourceHashes: [[UInt8]] = [], destinationHashes: [[UInt8]] = []
        for case .notify(_, _, let type, let data) in payloads {
            if type == .natDetectionSourceIP { sourceHashes.append(data) }
            if type == .natDetectionDestinationIP { destinationHashes.append(data) }
        }
        guard !sourceHashes.isEmpty, !destinationHashes.isEmpty else { return }
        let me = natDetectionHash(spii: spii, spir: spirInMessage, address: engine.localAddress, port: path.localPort)
        let them = natDetectionHash(spii: spii, spir: spirInMessage, address: path.remote, port: path.remotePort)
        let meBehind = !destinationHashes.contains { constantTimeEqual($0, me) }
        let peerBehind = !sourceHashes.contains { constantTimeEqual($0, them) }
        if meBehind || peerBehind {
            log(.info, "NAT detected (\(meBehind ? "this end" : "")\(meBehind && peerBehind ? " and " : "")\(peerBehind ? "the peer, or it asks for UDP encapsulation" : "")): ESP in UDP on 4500")
        }
    }

    /// SKEYSEED = prf(Ni | Nr, g^ir) (RFC 7296 §2.14).
    static func skeyseed(_ prf: IKEPRF, ni: [UInt8], nr: [UInt8], shared: SecretBytes) -> SecretBytes { prf(ni + nr, shared) }

    func deriveKeys(skeyseed: SecretBytes) {
        let k = IKESAKeys.derive(prf: prf, aead: aead, skeyseed: skeyseed, ni: ni, nr: nr, spii: spii, spir: spir)
        keys = k
        cipher = try? IKEMessageCipher(aead, outbound: originalInitiator ? k.ei : k.er, inbound: originalInitiator ? k.er : k.ei)
    }

    /// The initiator reads the IKE_SA_INIT response.
    func initResponse(_ bytes: [UInt8], header: IKEHeader, now: Double) -> Output {
        guard let c = connection, case .ikeInit(let task)? = outstanding?.taskState else { return [] }
        let payloads: [IKEPayload]
        do {
            payloads = try IKEPayloadChain.typed(IKEPayloadChain.walk(bytes[IKEHeader.length...], first: header.nextPayload).payloads)
        } catch {
            engine.counters.invalidMessages += 1
            return []
        }
        for case .notify(_, _, let type, let data) in payloads {
            if type == .cookie {
                guard task.cookie == nil || task.cookie! != data else { continue }
                task.cookie = data
                log(.info, "the peer asks for a COOKIE: IKE_SA_INIT sent again with it")
                return sendInit(task, now: now)
            }
            if type == .invalidKEPayload, data.count == 2 {
                let wanted = UInt16(data[0]) << 8 | UInt16(data[1])
                guard let g = IKEKeyExchangeGroup(rawValue: wanted), c.proposals.contains(where: { $0.groups.contains(g) }),
                      g != task.keyPair.group, let pair = try? IKEKeyPair(g)
                else {
                    log(.error, "the peer wants key-exchange group \(wanted), which this end does not offer (unauthenticated: "
                        + "another answer is awaited until the retransmission timer)")
                    task.refusal = "INVALID_KE_PAYLOAD \(wanted)"
                    return []
                }
                log(.info, "the peer wants \(g): IKE_SA_INIT sent again with it")
                task.keyPair = pair
                return sendInit(task, now: now)
            }
            if type.isError {
                // Unauthenticated: anyone on the path can send it (RFC 7296 §2.21.1). The request
                // stays outstanding; a genuine answer before its timer is still taken.
                log(.error, "the peer refused IKE_SA_INIT: \(type)\(type == .noProposalChosen ? " (proposals \(c.proposals.map(\.description).joined(separator: ", ")))" : "")"
                    + " (unauthenticated: another answer is awaited until the retransmission timer, then the attempt is tried again later)")
                task.refusal = type.description
                return []
            }
        }
        var chosen: IKEProposal?, ke: (UInt16, [UInt8])?, nonce: [UInt8]?
        for p in payloads {
            switch p {
            case .securityAssociation(let list): chosen = list.count == 1 ? list[0] : nil
            case .keyExchange(let g, let d): ke = (g, d)
            case .nonce(let n): nonce = n
            default: break
            }
        }
        let pair = task.keyPair
        guard let chosen, let ke, let nonce,
              let (_, e, f, g) = Self.choose(ours: c.proposals, theirs: [chosen]),
              chosen.transforms.count == 3, g == pair.group, ke.0 == g.rawValue, Self.nonceAcceptable(nonce, prf: f),
              let shared = pair.shared(with: ke.1)
        else {
            log(.error, "IKE_SA_INIT response without one acceptable proposal, KE and nonce (unauthenticated: another answer is awaited)")
            task.refusal = "an unusable answer"
            return []
        }
        outstanding = nil
        (prf, aead, group) = (f, e, g)
        (ni, nr) = (task.nonce, nonce)
        remoteSPI = header.responderSPI
        authTask = IKEAuthTask(initRequest: task.request, initResponse: bytes)
        checkNAT(payloads, spirInMessage: remoteSPI)
        deriveKeys(skeyseed: Self.skeyseed(prf, ni: ni, nr: nr, shared: shared))
        transition(to: .authSent, reason: "IKE_SA_INIT answered")
        lastHeard = now
        queue.insert(.auth, at: 0)
        return pump(now: now)
    }

    // MARK: IKE_AUTH

    func authData(secret: IKESecret, message: [UInt8], nonce: [UInt8], idKey: SecretBytes, id: IKEIdentity) -> [UInt8] {
        let padKey = prf.secret(secret.bytes, Array("Key Pad for IKEv2".utf8))
        return prf(padKey, message + nonce + prf(idKey, id.body))
    }

    func espProposals(_ config: IKEChildConfig, spi: UInt32) -> [IKEProposal] {
        config.espProposals.enumerated().map { i, p in
            IKEProposal(number: UInt8(i + 1), protocolID: IKEProposal.esp, spi: bigEndianBytes(spi),
                        transforms: p.encryption.map(\.ikeTransform)
                            + p.extendedSequenceNumbers.map { IKETransform(type: IKETransform.extendedSequenceNumbers, id: $0 ? 1 : 0) })
        }
    }

    func sendAuth(now: Double) -> Output {
        guard let c = connection, let keys, let signed = authTask, let child = c.children.first else { return [] }
        let spi = engine.freshChildSPI()
        let childTask = ChildCreateTask(config: child, spi: spi, nonce: [], replaces: nil)
        var payloads: [IKEPayload] = [.identityInitiator(c.localID)]
        if let r = c.remoteID { payloads.append(.identityResponder(r)) }
        payloads.append(.authentication(method: 2, data: authData(secret: c.secret, message: signed.initRequest, nonce: nr, idKey: keys.pi, id: c.localID)))
        if !engine.sas.values.contains(where: { $0 !== self && $0.connection?.name == c.name && $0.state == .established }) {
            // This end holds no other IKE SA with the peer: whatever the peer holds from before is stale (RFC 7296 §2.4).
            payloads.append(.notify(.initialContact))
        }
        payloads += [.securityAssociation(espProposals(child, spi: spi)),
                     .trafficSelectorsInitiator(child.localTS.map(SelectorMath.range)),
                     .trafficSelectorsResponder(child.remoteTS.map(SelectorMath.range))]
        return request(.ikeAuth, payloads, task: .auth, state: .child(childTask), now: now)
    }

    func authResponse(_ payloads: [IKEPayload], child: ChildCreateTask?, now: Double) -> Output {
        guard let c = connection, let keys, let signed = authTask else { return [] }
        for case .notify(_, _, let type, _) in payloads where type == .authenticationFailed {
            log(.error, "authentication failed: the peer refused this end's identity \(c.localID) or pre-shared key (AUTHENTICATION_FAILED)")
            restartWhenDead = startsAgain
            transition(to: .dead, reason: "the peer sent AUTHENTICATION_FAILED")
            return []
        }
        var idr: IKEIdentity?, auth: [UInt8]?
        for p in payloads {
            if case .identityResponder(let id) = p { idr = id }
            if case .authentication(let m, let d) = p, m == 2 { auth = d }
        }
        guard let idr, let auth else {
            log(.error, "IKE_AUTH response without IDr and a shared-key AUTH payload")
            restartWhenDead = startsAgain
            transition(to: .dead, reason: "IKE_AUTH response without IDr or AUTH")
            return []
        }
        if let want = c.remoteID, want != idr {
            log(.error, "authentication failed: the peer is \(idr), the connection wants \(want)")
            restartWhenDead = startsAgain
            transition(to: .dead, reason: "the peer's identity is not the one configured")
            return []
        }
        let expected = authData(secret: c.secret, message: signed.initResponse, nonce: ni, idKey: keys.pr, id: idr)
        guard constantTimeEqual(expected, auth) else {
            log(.error, "authentication failed: the peer's AUTH does not verify (a different pre-shared key?)")
            restartWhenDead = startsAgain
            transition(to: .dead, reason: "the peer's AUTH does not verify")
            return []
        }
        peerID = idr
        authTask = nil
        transition(to: .established, reason: "IKE_AUTH answered and verified")
        established = now
        engine.succeeded(c)
        scheduleIKERekey(now: now)
        log(.info, "IKE SA established with \(idr) at \(path) (\(aead)-\(prf)-\(group), SPIs \(String(format: "%016llx", spii))_i \(String(format: "%016llx", spir))_r)")
        var out = finishChild(child, payloads, nonces: (ni, nr), now: now)
        for child in c.children.dropFirst() { queue.append(.createChild(child.name)) }
        out += pump(now: now)
        return out
    }

    /// The responder's side of IKE_AUTH.
    func answerAuth(_ payloads: [IKEPayload], id: UInt32, path from: IKEPath, now: Double) -> Output {
        var idi: IKEIdentity?, idr: IKEIdentity?, auth: [UInt8]?
        for p in payloads {
            switch p {
            case .identityInitiator(let i): idi = i
            case .identityResponder(let i): idr = i
            case .authentication(let m, let d) where m == 2: auth = d
            default: break
            }
        }
        func fail(_ why: String) -> Output {
            log(.error, "authentication failed: \(why)")
            transition(to: .dead, reason: "authentication failed")
            return respond(.ikeAuth, id: id, [.notify(.authenticationFailed)], to: from)
        }
        guard let idi, let auth, let keys, let signed = authTask else { return fail("IKE_AUTH without IDi and a shared-key AUTH payload") }
        guard let c = engine.connections.first(where: {
            $0.remoteAddress == from.remote && ($0.remoteID == nil || $0.remoteID == idi) && (idr == nil || $0.localID == idr)
        }) else { return fail("the peer at \(from.remote) is \(idi), which no connection accepts") }
        connection = c
        let expected = authData(secret: c.secret, message: signed.initRequest, nonce: nr, idKey: keys.pi, id: idi)
        guard constantTimeEqual(expected, auth) else {
            return fail("the peer \(idi) at \(from.remote): its AUTH does not verify (a different pre-shared key?)")
        }
        peerID = idi
        authTask = nil
        transition(to: .established, reason: "IKE_AUTH request verified")
        established = now
        engine.succeeded(c)
        scheduleIKERekey(now: now)
        if payloads.contains(where: { if case .notify(_, _, .initialContact, _) = $0 { true } else { false } }) {
            // The peer starts afresh (a restart): its earlier IKE SAs with this identity are gone on its side.
            for other in engine.sas.values where other !== self && other.connection?.name == c.name && other.peerID == idi && other.state != .dead {
                other.log(.info, "replaced: the peer \(idi) started again (INITIAL_CONTACT)")
                if !other.children.isEmpty { engine.childrenChanged() }
                other.children = []
                other.transition(to: .dead, reason: "replaced by a new IKE SA (INITIAL_CONTACT)")
            }
        }
        log(.info, "IKE SA established with \(idi) at \(from) (\(aead)-\(prf)-\(group), SPIs \(String(format: "%016llx", spii))_i \(String(format: "%016llx", spir))_r)")
        var answer: [IKEPayload] = [.identityResponder(c.localID),
                                    .authentication(method: 2, data: authData(secret: c.secret, message: signed.initResponse, nonce: ni, idKey: keys.pr, id: c.localID))]
        answer += answerChild(payloads, nonces: (ni, nr), replaces: nil, now: now)
        return respond(.ikeAuth, id: id, answer, to: from)
    }

    // MARK: CHILD_SAs

    static func chooseESP(ours: [ESPProposalChoice], theirs: [IKEProposal]) -> (IKEProposal, ESPAlgorithm, Bool)? {
        for choice in ours {
            for e in choice.encryption {
                for esn in choice.extendedSequenceNumbers {
                    for p in theirs where p.protocolID == IKEProposal.esp && p.spi.count == 4 {
                        guard !p.transforms.contains(where: { $0.type == IKETransform.keyExchange && $0.id != 0 }) else { continue }
                        guard !p.transforms.contains(where: { $0.type == IKETransform.integrity && $0.id != 0 }) else { continue }
                        let esns = p.transforms.filter { $0.type == IKETransform.extendedSequenceNumbers }.map { $0.id == 1 }
                        if p.transforms.contains(e.ikeTransform) && (esns.isEmpty ? !esn : esns.contains(esn)) {
                            return (p, e, esn)
                        }
                    }
                }
            }
        }
        return nil
    }

    func keymat(_ algorithm: ESPAlgorithm, nonces: ([UInt8], [UInt8])) -> (initiatorToResponder: SecretBytes, responderToInitiator: SecretBytes) {
        let n = algorithm.keyMaterialLength
        let m = prf.plus(keys!.d, nonces.0 + nonces.1, count: 2 * n)
        return (m.bytes(0..<n), m.bytes(n..<(2 * n)))
    }

    func install(_ config: IKEChildConfig, algorithm: ESPAlgorithm, esn: Bool, inbound: (UInt32, SecretBytes), outbound: (UInt32, SecretBytes),
                 local: [TrafficSelector], remote: [TrafficSelector], replaces: Int?, sending: Bool, now: Double) -> Int {
        let id = engine.newChildID()
        let generation = replaces.flatMap { r in children.first { $0.sa.id == r }?.sa.generation }.map { $0 + 1 } ?? 0
        let sa = IKEChildSA(id: id, connection: connection?.name ?? "?", child: config.name, algorithm: algorithm, extendedSequenceNumbers: esn,
                            inbound: ESPSAKeys(spi: inbound.0, material: inbound.1),
                            outbound: ESPSAKeys(spi: outbound.0, material: outbound.1),
                            localTS: local, remoteTS: remote, sending: sending, installed: now, replaces: replaces, generation: generation)
        // Rekeyed at its time less up to a tenth (as strongSwan's rand_time), so both ends rarely start at once.
        let jitter = config.rekeyTime * 0.1 * Double(engine.random(1)[0]) / 255
        children.append(Child(sa: sa, config: config, rekeyAt: config.rekeyTime > 0 ? now + config.rekeyTime - jitter : .infinity))
        engine.childrenChanged()
        log(.info, "CHILD_SA \(config.name) installed: SPIs \(String(format: "%08x", inbound.0))_i \(String(format: "%08x", outbound.0))_o, "
            + "\(algorithm)\(esn ? "-esn" : ""), \(local.map(\.description).joined(separator: ",")) === \(remote.map(\.description).joined(separator: ","))"
            + (replaces != nil ? " (rekeyed)" : ""))
        return id
    }

    /// The responder's child: chosen proposal, narrowed selectors, keys; the payloads of the answer.
    func answerChild(_ payloads: [IKEPayload], nonces: ([UInt8], [UInt8]), replaces: Int?, now: Double) -> [IKEPayload] {
        guard let c = connection else { return [.notify(.noProposalChosen)] }
        var offered: [IKEProposal] = [], tsi: [IKETrafficSelector] = [], tsr: [IKETrafficSelector] = []
        for p in payloads {
            switch p {
            case .securityAssociation(let l): offered = l
            case .trafficSelectorsInitiator(let l): tsi = l
            case .trafficSelectorsResponder(let l): tsr = l
            default: break
            }
        }
        guard tsi.count <= IKEEngine.maxSelectorsPerPayload, tsr.count <= IKEEngine.maxSelectorsPerPayload else {
            log(.warning, "CHILD_SA refused (TS_UNACCEPTABLE): \(tsi.count) and \(tsr.count) selectors, at most \(IKEEngine.maxSelectorsPerPayload) each")
            return [.notify(.tsUnacceptable)]
        }
        if payloads.contains(where: { if case .notify(_, _, .useTransportMode, _) = $0 { true } else { false } }) {
            log(.warning, "the peer asks for transport mode: refused (tunnel mode only)")
            return [.notify(.noProposalChosen)]
        }
        let candidates = replaces.flatMap { r in children.first { $0.sa.id == r }.map { [$0.config] } } ?? c.children
        var match: (IKEChildConfig, [TrafficSelector], [TrafficSelector])?
        for config in candidates {
            let remote = SelectorMath.narrow(tsi, to: config.remoteTS), local = SelectorMath.narrow(tsr, to: config.localTS)
            if !remote.isEmpty && !local.isEmpty { match = (config, local, remote); break }
        }
        guard let (config, local, remote) = match else {
            log(.warning, "CHILD_SA refused (TS_UNACCEPTABLE): the peer's \(tsi.map(\.description).joined(separator: ",")) === "
                + "\(tsr.map(\.description).joined(separator: ",")) is outside every child's selectors")
            return [.notify(.tsUnacceptable)]
        }
        guard let (proposal, algorithm, esn) = Self.chooseESP(ours: config.espProposals, theirs: offered) else {
            log(.warning, "CHILD_SA \(config.name) refused (NO_PROPOSAL_CHOSEN): the peer offers \(Self.describe(offered)), "
                + "this end \(config.espProposals.map(\.description).joined(separator: ", "))")
            return [.notify(.noProposalChosen)]
        }
        let spi = engine.freshChildSPI()
        let peerSPI = proposal.spi.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let (i2r, r2i) = keymat(algorithm, nonces: nonces)
        _ = install(config, algorithm: algorithm, esn: esn, inbound: (spi, i2r), outbound: (peerSPI, r2i), local: local, remote: remote,
                    replaces: replaces, sending: replaces == nil, now: now)
        let chosen = IKEProposal(number: proposal.number, protocolID: IKEProposal.esp, spi: bigEndianBytes(spi),
                                 transforms: [algorithm.ikeTransform, IKETransform(type: IKETransform.extendedSequenceNumbers, id: esn ? 1 : 0)])
        return [.securityAssociation([chosen]), .trafficSelectorsInitiator(remote.map(SelectorMath.range)),
                .trafficSelectorsResponder(local.map(SelectorMath.range))]
    }

    /// The initiator's child from the answer; nil when refused (logged).
    @discardableResult
    func finishChild(_ pending: ChildCreateTask?, _ payloads: [IKEPayload], nonces: ([UInt8], [UInt8]?), now: Double) -> Output {
        guard let pending else { return [] }
        /// The rekeyed child is active again and tried later.
        func again() {
            guard let r = pending.replaces, let i = children.firstIndex(where: { $0.sa.id == r }) else { return }
            children[i].state = .active
            children[i].rekeyAt = now + 2 + Double(engine.random(1)[0]) / 64
        }
        for case .notify(_, _, let type, _) in payloads where type.isError {
            log(.warning, "CHILD_SA \(pending.config.name) refused by the peer: \(type)")
            if let r = pending.replaces, let i = children.firstIndex(where: { $0.sa.id == r }), type == .childSANotFound {
                children.remove(at: i)
                engine.childrenChanged()
            } else {
                again()
            }
            return []
        }
        guard let peerNonce = nonces.1, Self.nonceAcceptable(peerNonce, prf: prf) else {
            log(.error, "CHILD_SA \(pending.config.name): the answer has \(nonces.1 == nil ? "no nonce" : "a nonce of \(nonces.1!.count) bytes"): refused")
            again()
            return []
        }
        var chosen: IKEProposal?, tsi: [IKETrafficSelector] = [], tsr: [IKETrafficSelector] = []
        for p in payloads {
            switch p {
            case .securityAssociation(let l): chosen = l.count == 1 ? l[0] : nil
            case .trafficSelectorsInitiator(let l): tsi = l
            case .trafficSelectorsResponder(let l): tsr = l
            default: break
            }
        }
        let most = IKEEngine.maxSelectorsPerPayload
        guard let chosen, chosen.spi.count == 4, let (_, algorithm, esn) = Self.chooseESP(ours: pending.config.espProposals, theirs: [chosen]),
              !tsi.isEmpty, !tsr.isEmpty, tsi.count <= most, tsr.count <= most,
              SelectorMath.within(tsi, pending.config.localTS), SelectorMath.within(tsr, pending.config.remoteTS)
        else {
            log(.error, "CHILD_SA \(pending.config.name): the answer's proposal or selectors are not what was offered")
            again()
            return []
        }
        let peerSPI = chosen.spi.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let (i2r, r2i) = keymat(algorithm, nonces: (nonces.0, peerNonce))
        let local = tsi.flatMap(SelectorMath.prefixes), remote = tsr.flatMap(SelectorMath.prefixes)
        let newID = install(pending.config, algorithm: algorithm, esn: esn, inbound: (pending.spi, r2i), outbound: (peerSPI, i2r),
                            local: local, remote: remote, replaces: pending.replaces, sending: true, now: now)
        guard let old = pending.replaces, let i = children.firstIndex(where: { $0.sa.id == old }) else { return [] }
        // Make before break: the new SA sends from now on; the old one still receives until deleted.
        children[i].sa.sending = false
        children[i].state = .rekeyed
        children[i].rekeyedAt = now
        engine.childrenChanged()
        engine.counters.childRekeys += 1
        if let peer = children[i].peerRekey {
            // Both ends rekeyed it at once (RFC 7296 §2.8.1): the SA made by the exchange with the
            // lowest of the four nonces is redundant, and the end that made it deletes it.
            engine.counters.collisions += 1
            let ours = [pending.nonce, peerNonce]
            let lowest = (ours + peer.nonces).min { $0.lexicographicallyPrecedes($1) }!
            if ours.contains(lowest) {
                log(.info, "CHILD_SA \(pending.config.name): rekey collision, this end's new SA is redundant: deleting it")
                if let j = children.firstIndex(where: { $0.sa.id == newID }) { children[j].sa.sending = false }
                if let j = children.firstIndex(where: { $0.sa.id == peer.newID }) { children[j].sa.sending = true }
                queue.append(.deleteChildren([newID]))
                return []
            }
            log(.info, "CHILD_SA \(pending.config.name): rekey collision, the peer's new SA is redundant (it deletes it)")
        }
        log(.info, "CHILD_SA \(pending.config.name) rekeyed")
        queue.append(.deleteChildren([old]))
        return []
    }

    func sendCreateChild(_ name: String, now: Double) -> Output {
        guard let c = connection, let config = c.children.first(where: { $0.name == name }) else { return [] }
        let spi = engine.freshChildSPI()
        let nonce = engine.random(32)
        return request(.createChildSA, [.securityAssociation(espProposals(config, spi: spi)), .nonce(nonce),
                                        .trafficSelectorsInitiator(config.localTS.map(SelectorMath.range)),
                                        .trafficSelectorsResponder(config.remoteTS.map(SelectorMath.range))], task: .createChild(name),
                       state: .child(ChildCreateTask(config: config, spi: spi, nonce: nonce, replaces: nil)), now: now)
    }

    func sendRekeyChild(_ id: Int, now: Double) -> Output {
        guard let i = children.firstIndex(where: { $0.sa.id == id && $0.state == .active }) else { return [] }
        children[i].state = .rekeying
        let child = children[i]
        let spi = engine.freshChildSPI()
        let nonce = engine.random(32)
        return request(.createChildSA, [.notify(protocolID: IKEProposal.esp, spi: bigEndianBytes(child.sa.inbound.spi), type: .rekeySA, data: []),
                                        .securityAssociation(espProposals(child.config, spi: spi)), .nonce(nonce),
                                        .trafficSelectorsInitiator(child.sa.localTS.map(SelectorMath.range)),
                                        .trafficSelectorsResponder(child.sa.remoteTS.map(SelectorMath.range))], task: .rekeyChild(id),
                       state: .child(ChildCreateTask(config: child.config, spi: spi, nonce: nonce, replaces: id)), now: now)
    }

    // MARK: rekeying the IKE SA

    func sendRekeyIKE(now: Double) -> Output {
        guard let pair = try? IKEKeyPair(group) else { return [] }
        let spi = engine.freshIKESPI()
        let nonce = engine.random(32)
        return request(.createChildSA, [.securityAssociation(proposals(spi: bigEndianBytes(spi), groupFirst: group)), .nonce(nonce),
                                        .keyExchange(group: group.rawValue, data: pair.publicValue)], task: .rekeyIKE,
                       state: .ikeRekey(IKERekeyTask(spi: spi, nonce: nonce, keyPair: pair)), now: now)
    }

    /// The new IKE SA of a rekey: keys from the old SK_d, the children moved over.
    func successor(initiator: Bool, localSPI: UInt64, remoteSPI: UInt64, choice: (ESPAlgorithm, IKEPRF, IKEKeyExchangeGroup),
                   shared: SecretBytes, ni: [UInt8], nr: [UInt8], now: Double) -> IKESA {
        let next = IKESA(engine: engine, originalInitiator: initiator, localSPI: localSPI, path: path, now: now)
        next.remoteSPI = remoteSPI
        next.connection = connection
        next.peerID = peerID
        (next.aead, next.prf, next.group) = choice
        (next.ni, next.nr) = (ni, nr)
        // SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), with the old SA's PRF (RFC 7296 §2.18).
        next.deriveKeys(skeyseed: prf(keys!.d, shared + ni + nr))
        next.transition(to: .established, reason: "made by an IKE SA rekey")
        next.established = now
        next.rekeys = rekeys + 1
        next.children = children
        next.scheduleIKERekey(now: now)
        children = []
        queue.removeAll { if case .deleteIKE = $0 { false } else { true } }
        transition(to: .rekeyed, reason: "its successor took the CHILD_SAs")
        rekeyedAt = now
        engine.sas[next.localSPI] = next
        engine.counters.ikeRekeys += 1
        engine.childrenChanged()  // the same CHILD_SAs; the key log gains the new IKE SA
        return next
    }

    func scheduleIKERekey(now: Double) {
        guard let t = connection?.rekeyTime, t > 0 else { return }
        ikeRekeyAt = now + t - t * 0.1 * Double(engine.random(1)[0]) / 255
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
            path = from
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
            path = from
            out = answerAuth(payloads, id: header.messageID, path: from, now: now)
        case .createChildSA:
            guard state == .established else {
                return respond(exchange, id: header.messageID, [.notify(.temporaryFailure)], to: from)
            }
            path = from
            out = answerCreateChild(payloads, id: header.messageID, from: from, now: now)
        case .informational:
            path = from
            out = answerInformational(payloads, id: header.messageID, from: from, now: now)
        case .ikeSAInit:
            out = []
        }
        return out + pump(now: now)
    }

    static func nonce(_ payloads: [IKEPayload]) -> [UInt8]? {
        for case .nonce(let n) in payloads { return n }
        return nil
    }

    func answerCreateChild(_ payloads: [IKEPayload], id: UInt32, from: IKEPath, now: Double) -> Output {
        guard let peerNonce = Self.nonce(payloads), Self.nonceAcceptable(peerNonce, prf: prf) else {
            log(.warning, "CREATE_CHILD_SA without an acceptable nonce (\(prf) wants \(max(16, prf.length / 2)) to 256 bytes): refused")
            return respond(.createChildSA, id: id, [.notify(.invalidSyntax)], to: from)
        }
        var offered: [IKEProposal] = []
        for case .securityAssociation(let l) in payloads { offered = l }
        if offered.contains(where: { $0.protocolID == IKEProposal.ike }) {
            return answerRekeyIKE(payloads, offered: offered, nonce: peerNonce, id: id, from: from, now: now)
        }
        if payloads.contains(where: { if case .keyExchange = $0 { true } else { false } }) {
            log(.warning, "CREATE_CHILD_SA with a key exchange (PFS) refused: not supported")
            return respond(.createChildSA, id: id, [.notify(.noProposalChosen)], to: from)
        }
        let nonce = engine.random(32)
        var replaces: Int?
        for case .notify(let proto, let spi, .rekeySA, _) in payloads where proto == IKEProposal.esp && spi.count == 4 {
            let peerInbound = spi.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            guard let i = children.firstIndex(where: { $0.sa.outbound.spi == peerInbound }) else {
                return respond(.createChildSA, id: id, [.notify(protocolID: proto, spi: spi, type: .childSANotFound, data: [])], to: from)
            }
            guard children[i].state == .active || children[i].state == .rekeying else {
                return respond(.createChildSA, id: id, [.notify(.temporaryFailure)], to: from)
            }
            replaces = children[i].sa.id
        }
        // A new CHILD_SA up to the cap; a rekey (old and new overlap for a while) up to twice it.
        guard children.count < engine.maxChildSAs * (replaces == nil ? 1 : 2) else {
            log(.warning, "CREATE_CHILD_SA refused (NO_ADDITIONAL_SAS): \(children.count) CHILD_SAs, at most \(engine.maxChildSAs)")
            return respond(.createChildSA, id: id, [.notify(.noAdditionalSAs)], to: from)
        }
        let before = Set(children.map(\.sa.id))
        var answer = answerChild(payloads, nonces: (peerNonce, nonce), replaces: replaces, now: now)
        if answer.count > 1 {
            answer.insert(.nonce(nonce), at: 1)
            if let r = replaces, let i = children.firstIndex(where: { $0.sa.id == r }),
               let newID = children.map(\.sa.id).first(where: { !before.contains($0) }) {
                if children[i].state == .rekeying {
                    children[i].peerRekey = ([peerNonce, nonce], newID)
                } else {
                    // The peer's rekey: its new SA receives now; this end sends on it once the
                    // peer deletes the old one or uses the new one.
                    children[i].state = .rekeyed
                    children[i].rekeyedAt = now
                    engine.counters.childRekeys += 1
                }
            }
        }
        return respond(.createChildSA, id: id, answer, to: from)
    }

    func answerRekeyIKE(_ payloads: [IKEPayload], offered: [IKEProposal], nonce: [UInt8], id: UInt32, from: IKEPath, now: Double) -> Output {
        guard let c = connection else { return [] }
        if case .rekeyIKE? = outstanding?.task {
            // Both ends at once: refuse the peer's; this end's goes on (the peer does the same or answers it).
            return respond(.createChildSA, id: id, [.notify(.temporaryFailure)], to: from)
        }
        guard let (number, e, f, g) = Self.choose(ours: c.proposals, theirs: offered),
              let proposal = offered.first(where: { $0.number == number && $0.protocolID == IKEProposal.ike }), proposal.spi.count == 8
        else {
            log(.warning, "IKE SA rekey refused (NO_PROPOSAL_CHOSEN)")
            return respond(.createChildSA, id: id, [.notify(.noProposalChosen)], to: from)
        }
        guard Self.nonceAcceptable(nonce, prf: f) else {
            return respond(.createChildSA, id: id, [.notify(.invalidSyntax)], to: from)
        }
        var ke: (UInt16, [UInt8])?
        for case .keyExchange(let group, let data) in payloads { ke = (group, data) }
        guard let ke, ke.0 == g.rawValue else {
            return respond(.createChildSA, id: id, [.notify(.invalidKEPayload, data: bigEndianBytes(g.rawValue))], to: from)
        }
        guard let pair = try? IKEKeyPair(g), let shared = pair.shared(with: ke.1) else {
            return respond(.createChildSA, id: id, [.notify(.invalidSyntax)], to: from)
        }
        let nr = engine.random(32)
        let newSPI = engine.freshIKESPI()
        let peerSPI = proposal.spi.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let chosen = IKEProposal(number: number, protocolID: IKEProposal.ike, spi: bigEndianBytes(newSPI),
                                 transforms: [e.ikeTransform, IKETransform(type: IKETransform.prf, id: f.rawValue),
                                              IKETransform(type: IKETransform.keyExchange, id: g.rawValue)])
        let out = respond(.createChildSA, id: id, [.securityAssociation([chosen]), .nonce(nr), .keyExchange(group: g.rawValue, data: pair.publicValue)],
                          to: from)
        let next = successor(initiator: false, localSPI: newSPI, remoteSPI: peerSPI, choice: (e, f, g), shared: shared, ni: nonce, nr: nr, now: now)
        log(.info, "IKE SA rekeyed by the peer: now \(String(format: "%016llx", next.spii))_i \(String(format: "%016llx", next.spir))_r")
        return out
    }

    func finishRekeyIKE(_ pending: IKERekeyTask?, _ payloads: [IKEPayload], now: Double) -> Output {
        guard let pending else { return [] }
        for case .notify(_, _, let type, _) in payloads where type.isError {
            log(.warning, "IKE SA rekey refused by the peer: \(type); tried again shortly")
            ikeRekeyAt = now + 2 + Double(engine.random(1)[0]) / 64
            return []
        }
        var chosen: IKEProposal?, ke: (UInt16, [UInt8])?
        for p in payloads {
            if case .securityAssociation(let l) = p, l.count == 1 { chosen = l[0] }
            if case .keyExchange(let g, let d) = p { ke = (g, d) }
        }
        guard let c = connection, let chosen, chosen.spi.count == 8, let nr = Self.nonce(payloads), let ke,
              let (_, e, f, g) = Self.choose(ours: c.proposals, theirs: [chosen]), g == pending.keyPair.group, ke.0 == g.rawValue,
              Self.nonceAcceptable(nr, prf: prf), Self.nonceAcceptable(nr, prf: f),
              let shared = pending.keyPair.shared(with: ke.1)
        else {
            log(.error, "IKE SA rekey: the answer is not what was offered; tried again shortly")
            ikeRekeyAt = now + 2 + Double(engine.random(1)[0]) / 64
            return []
        }
        let peerSPI = chosen.spi.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let next = successor(initiator: true, localSPI: pending.spi, remoteSPI: peerSPI, choice: (e, f, g), shared: shared,
                             ni: pending.nonce, nr: nr, now: now)
        log(.info, "IKE SA rekeyed: now \(String(format: "%016llx", next.spii))_i \(String(format: "%016llx", next.spir))_r")
        queue.append(.deleteIKE)
        return []
    }

    func answerInformational(_ payloads: [IKEPayload], id: UInt32, from: IKEPath, now: Double) -> Output {
        var answer: [IKEPayload] = []
        for p in payloads {
            switch p {
            case .delete(let proto, _) where proto == IKEProposal.ike:
                log(.info, state == .rekeyed ? "the old IKE SA deleted by the peer after the rekey" : "IKE SA deleted by the peer")
                let out = respond(.informational, id: id, [], to: from)
                if !children.isEmpty { engine.childrenChanged() }
                children = []
                transition(to: .dead, reason: "deleted by the peer")
                return out
            case .delete(let proto, let spis) where proto == IKEProposal.esp:
                var ours: [[UInt8]] = []
                for spi in spis where spi.count == 4 {
                    let value = spi.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                    guard let i = children.firstIndex(where: { $0.sa.outbound.spi == value }) else { continue }
                    let child = children.remove(at: i)
                    retire(child.sa, now: now)
                    if child.state != .deleting { ours.append(bigEndianBytes(child.sa.inbound.spi)) }
                    // The peer's rekey is done: its new SA is the one to send with now.
                    for j in children.indices where children[j].sa.replaces == child.sa.id && children[j].state != .deleting {
                        children[j].sa.sending = true
                    }
                    queue.removeAll { $0 == .rekeyChild(child.sa.id) }
                    log(.info, "CHILD_SA \(child.config.name) (SPIs \(String(format: "%08x", child.sa.inbound.spi))_i) deleted by the peer")
                    engine.childrenChanged()
                }
                if !ours.isEmpty { answer.append(.delete(protocolID: IKEProposal.esp, spis: ours)) }
            case .notify(_, _, let type, _) where type.isError:
                log(.warning, "the peer says \(type)")
            default: break
            }
        }
        return respond(.informational, id: id, answer, to: from)
    }

    /// Keeps a deleted CHILD_SA inbound only, for ``retiredGrace`` seconds.
    func retire(_ sa: IKEChildSA, now: Double) {
        var kept = sa
        kept.sending = false
        retired.append((kept, now + Self.retiredGrace))
        engine.childrenChanged()
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
