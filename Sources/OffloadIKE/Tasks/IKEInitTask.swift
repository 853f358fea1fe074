import Foundation
import OffloadCrypto
import OffloadIPsec
import OffloadWire

/// IKE_SA_INIT as initiator (strongSwan's `ike_init`): the key pair and nonce offered, a COOKIE
/// the responder asked for, and an unauthenticated refusal that ends the attempt only when the
/// retransmission timer fires (RFC 7296 §2.21.1). One task for all the requests of the exchange
/// (again with a COOKIE or another group): it travels with the outstanding request.
final class IKEInitTask {
    /// This end's key pair for the key exchange (replaced when the responder wants another group).
    var keyPair: IKEKeyPair
    /// Ni: the same in every request of the exchange.
    let nonce: [UInt8]
    /// The COOKIE the responder asked for, sent in front of the next request.
    var cookie: [UInt8]?
    /// A refusal or unusable answer taken so far (unauthenticated: a genuine answer may follow).
    var refusal: String?
    /// The last request sent (signed in IKE_AUTH).
    var request: [UInt8] = []

    /// A task offering `keyPair` and `nonce`.
    init(keyPair: IKEKeyPair, nonce: [UInt8]) {
        self.keyPair = keyPair
        self.nonce = nonce
    }
}

// MARK: IKE_SA_INIT (build the request as initiator, answer it as responder, process the answer as initiator)
extension IKESA {
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
        // ESP in UDP on port 4500, the only way this gateway speaks ESP (unless a test turned it off).
        let source = engine.claimsNAT ? engine.random(20)
            : natDetectionHash(spii: spii, spir: spir, address: engine.localAddress, port: path.localPort)
        return [.notify(.natDetectionSourceIP, data: source),
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
        let candidates = engine.candidates(for: path.remote)
        guard !candidates.isEmpty else { return refuse(.noProposalChosen, [], "no connection accepts \(path.remote)") }
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
        // The most specific connection for the address whose proposals the peer's allow (strongSwan's
        // ike_cfg choice); IKE_AUTH may pick another of the candidates by the peer's identity.
        guard let (c, (number, encryption, prf, group)) = candidates.lazy.compactMap({ c in Self.choose(ours: c.proposals, theirs: offered).map { (c, $0) } }).first else {
            let ours = Set(candidates.flatMap(\.proposals).map(\.description)).sorted().joined(separator: ", ")
            return refuse(.noProposalChosen, [], "none of the peer's proposals (\(Self.describe(offered))) matches \(ours)")
        }
        connection = c
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
        (natLocal, natRemote) = (meBehind, peerBehind)
        if meBehind || peerBehind {
            log(.info, "NAT detected (\(meBehind ? "this end" : "")\(meBehind && peerBehind ? " and " : "")\(peerBehind ? "the peer, or it asks for UDP encapsulation" : "")): ESP in UDP on 4500")
        }
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
}
