import Foundation
import OffloadIPsec
import OffloadWire

/// INFORMATIONAL exchanges (strongSwan's `ike_delete`, `child_delete`, `ike_dpd`): a Delete or an
/// empty request (liveness). They keep no state of their own beyond the queued ``IKESA/Task`` (the
/// CHILD_SAs to delete), so they have no task type; their code is here.
// MARK: INFORMATIONAL: Delete (of CHILD_SAs or the IKE SA) and liveness
extension IKESA {
    func deleteMessage() -> (bytes: [UInt8], path: IKEPath) {
        let bytes = cipher!.seal(header: header(.informational, response: false, id: nextRequestID), payloads: [.delete(protocolID: 1, spis: [])])
        nextRequestID &+= 1
        return (bytes, path)
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
}
