import Foundation
import OffloadCrypto
import OffloadIPsec
import OffloadWire

/// A rekey of the IKE SA this end asked for (strongSwan's `ike_rekey`): the new SA's SPI, nonce
/// and key pair, kept until the answer.
struct IKERekeyTask {
    /// This end's SPI of the new IKE SA.
    let spi: UInt64
    /// Ni of the CREATE_CHILD_SA request.
    let nonce: [UInt8]
    /// This end's key pair for the new SA's key exchange.
    let keyPair: IKEKeyPair
}

// MARK: CREATE_CHILD_SA rekeying the IKE SA
extension IKESA {
    func sendRekeyIKE(now: Double) -> Output {
        guard let pair = try? IKEKeyPair(group) else { return [] }
        let spi = engine.freshIKESPI()
        let nonce = engine.random(32)
        return request(.createChildSA, [.securityAssociation(proposals(spi: bigEndianBytes(spi), groupFirst: group)), .nonce(nonce),
                                        .keyExchange(group: group.rawValue, data: pair.publicValue)], task: .rekeyIKE,
                       state: .ikeRekey(IKERekeyTask(spi: spi, nonce: nonce, keyPair: pair)), now: now)
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

    /// The new IKE SA of a rekey: keys from the old SK_d, the children moved over.
    func successor(initiator: Bool, localSPI: UInt64, remoteSPI: UInt64, choice: (ESPAlgorithm, IKEPRF, IKEKeyExchangeGroup),
                   shared: SecretBytes, ni: [UInt8], nr: [UInt8], now: Double) -> IKESA {
        let next = IKESA(engine: engine, originalInitiator: initiator, localSPI: localSPI, path: path, now: now)
        next.remoteSPI = remoteSPI
        next.connection = connection
        next.peerID = peerID
        (next.natLocal, next.natRemote) = (natLocal, natRemote)
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
}
