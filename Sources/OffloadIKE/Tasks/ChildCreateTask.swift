import Foundation
import OffloadCrypto
import OffloadIPsec
import OffloadWire

/// A CHILD_SA this end asked for (strongSwan's `child_create`, and `child_rekey` when it replaces
/// one): what its IKE_AUTH or CREATE_CHILD_SA request offered, kept until the answer.
struct ChildCreateTask {
    /// The configuration's child being negotiated.
    let config: IKEChildConfig
    /// The inbound SPI offered (no other CHILD_SA gets it while the request is out).
    let spi: UInt32
    /// Ni of the CREATE_CHILD_SA request; empty in IKE_AUTH (the IKE SA's nonces are used).
    let nonce: [UInt8]
    /// The CHILD_SA it rekeys; nil for a new one.
    let replaces: Int?
}

// MARK: CREATE_CHILD_SA for a CHILD_SA, new or rekeyed (and the first one, in IKE_AUTH)
extension IKESA {
    func espProposals(_ config: IKEChildConfig, spi: UInt32) -> [IKEProposal] {
        config.espProposals.enumerated().map { i, p in
            IKEProposal(number: UInt8(i + 1), protocolID: IKEProposal.esp, spi: bigEndianBytes(spi),
                        transforms: p.encryption.map(\.ikeTransform)
                            + p.extendedSequenceNumbers.map { IKETransform(type: IKETransform.extendedSequenceNumbers, id: $0 ? 1 : 0) })
        }
    }

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
        var tooMany = false
        for config in candidates {
            let remote = SelectorMath.narrow(tsi, to: config.remoteTS), local = SelectorMath.narrow(tsr, to: config.localTS)
            guard !remote.isEmpty && !local.isEmpty else { continue }
            // A range narrowed to prefixes can become hundreds of them (a range just inside a /0 is up
            // to 2 × 128): the answer holds at most as many as a request may, or it is refused.
            guard remote.count <= IKEEngine.maxSelectorsPerPayload, local.count <= IKEEngine.maxSelectorsPerPayload else {
                tooMany = true
                continue
            }
            match = (config, local, remote)
            break
        }
        if match == nil && tooMany {
            log(.warning, "CHILD_SA refused (TS_UNACCEPTABLE): the peer's selectors narrow to more than "
                + "\(IKEEngine.maxSelectorsPerPayload) prefixes a side")
            return [.notify(.tsUnacceptable)]
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
}
