import Foundation
import OffloadCrypto
import OffloadIPsec
import OffloadWire

/// What IKE_AUTH needs of IKE_SA_INIT (strongSwan's `ike_auth` keeps the same): both messages,
/// signed in the AUTH payloads (RFC 7296 §2.15). Made when IKE_SA_INIT is done, at either end;
/// dropped when the SA is established. The nonces stay on the SA (its keys come from them).
struct IKEAuthTask {
    /// The IKE_SA_INIT request (the initiator's signed octets, with Nr).
    let initRequest: [UInt8]
    /// The IKE_SA_INIT response (the responder's signed octets, with Ni).
    let initResponse: [UInt8]
}

// MARK: IKE_AUTH (build as initiator, process and answer as responder, process the answer as initiator)
extension IKESA {
    func authData(secret: IKESecret, message: [UInt8], nonce: [UInt8], idKey: SecretBytes, id: IKEIdentity) -> [UInt8] {
        let padKey = prf.secret(secret.bytes, Array("Key Pad for IKEv2".utf8))
        return prf(padKey, message + nonce + prf(idKey, id.body))
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
        becomeEstablished(peer: idr, connection: c, reason: "IKE_AUTH answered and verified", now: now)
        log(.info, "IKE SA established with \(idr) at \(path) (\(aead)-\(prf)-\(group), SPIs \(String(format: "%016llx", spii))_i \(String(format: "%016llx", spir))_r)")
        var out = finishChild(child, payloads, nonces: (ni, nr), now: now)
        for child in c.children.dropFirst() { queue.append(.createChild(child.name)) }
        out += pump(now: now)
        return out
    }

    /// The end of IKE_AUTH in either role, once the peer's AUTH verified: the peer's identity kept,
    /// the signed messages dropped, the SA established and its rekey scheduled.
    func becomeEstablished(peer: IKEIdentity, connection c: IKEConnection, reason: String, now: Double) {
        peerID = peer
        authTask = nil
        transition(to: .established, reason: reason)
        established = now
        engine.succeeded(c)
        scheduleIKERekey(now: now)
    }

    /// The connection the responder serves a peer with (strongSwan's peer_cfg choice in
    /// `ike_auth`): among the connections whose `remote_addrs` accept `address` and whose
    /// proposals allow this IKE SA's algorithms, one whose remote id is the peer's IDi, before one
    /// that takes any identity (`%any`); an IDr must name this end's id. Among equals the most
    /// specific address match, then the file's order. Its pre-shared key then verifies AUTH: a
    /// peer cannot get another connection's selectors, nor take an identity from an address the
    /// connection of that identity does not accept.
    func chooseConnection(idi: IKEIdentity, idr: IKEIdentity?, address: IPAddress) -> IKEConnection? {
        let allowed = engine.candidates(for: address).filter { c in
            (c.remoteID == nil || c.remoteID == idi) && (idr == nil || c.localID == idr)
                && c.proposals.contains { $0.encryption.contains(aead) && $0.prfs.contains(prf) && $0.groups.contains(group) }
        }
        // candidates() is ordered by address already; an exact identity goes first (a stable choice).
        return allowed.first { $0.remoteID != nil } ?? allowed.first
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
        guard let c = chooseConnection(idi: idi, idr: idr, address: from.remote) else {
            return fail("the peer at \(from.remote) is \(idi), which no connection for that address accepts")
        }
        connection = c
        let expected = authData(secret: c.secret, message: signed.initRequest, nonce: nr, idKey: keys.pi, id: idi)
        guard constantTimeEqual(expected, auth) else {
            return fail("the peer \(idi) at \(from.remote): its AUTH does not verify (a different pre-shared key?)")
        }
        becomeEstablished(peer: idi, connection: c, reason: "IKE_AUTH request verified", now: now)
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
}
