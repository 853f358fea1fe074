import Foundation
import Testing

@testable import OffloadIKE

@Suite("IKE SA state: one transition method, logged")
struct IKEStateTransitionTests {
    /// The `state old -> new` lines an engine logged, without their reasons, in order.
    static func transitions(_ engine: IKEEngine) -> [String] {
        engine.takeEvents().map(\.description).filter { $0.contains(": state ") }.map { line in
            String(line[..<(line.range(of: " (")?.lowerBound ?? line.endIndex)])
        }
    }

    @Test("an IKE SA's life at both ends: IKE_SA_INIT, IKE_AUTH, established, rekeyed, deleted")
    func lifeCycle() throws {
        let w = try IKEWire(IKEWire.config(me: 1, extra: "rekey_time = 20s"), IKEWire.config(me: 2, start: "none"))
        w.start()
        #expect(matched(w.a, w.b))
        w.advance(21)
        #expect(w.a.counters.ikeRekeys == 1 && w.a.sas.count == 1 && w.b.sas.count == 1)
        // This end deletes the new IKE SA.
        let successor = try #require(w.a.sas.values.first)
        successor.queue.append(.deleteIKE)
        w.send(successor.pump(now: w.now), fromA: true)
        w.run()
        #expect(successor.state == .dead && w.b.sas.values.allSatisfy { $0.state == .dead })
        #expect(Self.transitions(w.a) == [
            "site: state connecting -> authenticating",
            "site: state authenticating -> established",
            "site: state connecting -> established",  // the successor, made by the rekey
            "site: state established -> rekeyed",
            "site: state rekeyed -> dead",
            "site: state established -> dead",
        ])
        #expect(Self.transitions(w.b) == [
            "site: state half-open -> established",
            "site: state half-open -> established",  // the successor, made by the peer's rekey
            "site: state established -> rekeyed",
            "site: state rekeyed -> dead",
            "site: state established -> dead",
        ])
    }
}
