import Foundation
import Synchronization
import Testing

@testable import OffloadIKE
@testable import OffloadIKEDaemon

/// A datagram as it arrives on port 4500: the non-ESP marker, an IKE header, `body`.
func markedIKE(spii: UInt64, spir: UInt64, exchange: IKEExchange, fromOriginalInitiator: Bool = true, response: Bool = false,
               id: UInt32 = 0, body: [UInt8] = []) -> [UInt8] {
    let h = IKEHeader(initiatorSPI: spii, responderSPI: spir, nextPayload: 0, exchange: exchange, fromOriginalInitiator: fromOriginalInitiator,
                      isResponse: response, messageID: id, length: UInt32(IKEHeader.length + body.count))
    return [0, 0, 0, 0] + h.bytes + body
}

@Suite("IKE handover from the ESP receiving thread: filtered, rate-limited, waits only where order matters")
struct IKEHandoffTests {
    @Test("junk behind the non-ESP marker is dropped and counted without a wait; nothing reaches the daemon's queue")
    func junkDoesNotWait() {
        let wakes = Atomic<Int>(0)
        let h = IKEHandoff(wake: { wakes.add(1, ordering: .relaxed) })
        h.setKnownSPIs([0x1111])
        var junk: [[UInt8]] = [[0, 0, 0, 0], [0, 0, 0, 0, 1, 2, 3], [0, 0, 0, 0] + [UInt8](repeating: 0xAB, count: 200)]
        var wrongVersion = markedIKE(spii: 0x1111, spir: 0x2222, exchange: .createChildSA, fromOriginalInitiator: false, id: 3)
        wrongVersion[4 + 17] = 0x10
        junk.append(wrongVersion)
        var lying = markedIKE(spii: 0x1111, spir: 0x2222, exchange: .createChildSA, fromOriginalInitiator: false, id: 3)
        lying[4 + 27] &+= 1
        junk.append(lying)
        // Unknown SPIs, in an exchange that would make the thread wait were they known.
        for spi in UInt64(1)...20 {
            junk.append(markedIKE(spii: 0x9999, spir: spi, exchange: .createChildSA, id: 2, body: [1, 2, 3, 4]))
            junk.append(markedIKE(spii: spi, spir: 0x9999, exchange: .ikeAuth, fromOriginalInitiator: false, response: true, id: 1))
        }
        // An IKE_SA_INIT "request" that is none: a responder SPI, a message ID, the response flag.
        junk.append(markedIKE(spii: 5, spir: 6, exchange: .ikeSAInit))
        junk.append(markedIKE(spii: 5, spir: 0, exchange: .ikeSAInit, id: 1))
        junk.append(markedIKE(spii: 5, spir: 0, exchange: .ikeSAInit, response: true))
        for d in junk {
            #expect(h.deliver(d, now: 0) != .queued)
        }
        let c = h.counters
        #expect(c.waits == 0 && c.queued == 0, "no wait, nothing queued")
        #expect(c.dropped == junk.count && c.malformed == 5 && c.unknownSPI == junk.count - 5)
        #expect(wakes.load(ordering: .relaxed) == 0 && h.take().messages.isEmpty)
    }

    @Test("with the awaited message IDs published, only the awaited ID is waited for, and only once: forged copies (SPIs and IDs travel in clear) and other IDs are queued without a wait")
    func waitsOnlyForAwaitedIDsOnce() {
        let box = Mutex<IKEHandoff?>(nil)
        let h = IKEHandoff(wake: {
            guard let h = box.withLock({ $0 }) else { return }
            h.markHandled(h.take().ticket)
        })
        box.withLock { $0 = h }
        h.setKnownSPIs([0x1111])
        // The peer's next request is ID 7; this end's outstanding request is ID 3.
        h.setAwaitedMessageIDs([0x1111: (request: 7, response: 3)])
        let request = markedIKE(spii: 0x2222, spir: 0x1111, exchange: .createChildSA, id: 7, body: [9, 9, 9, 9])
        #expect(h.deliver(request, now: 0) == .handled, "the awaited request: waited for")
        for _ in 0..<100 { #expect(h.deliver(request, now: 0) == .queued, "a copy: no second wait") }
        for id: UInt32 in [0, 6, 8, 1000] {
            #expect(h.deliver(markedIKE(spii: 0x2222, spir: 0x1111, exchange: .createChildSA, id: id), now: 0) == .queued)
        }
        let answer = markedIKE(spii: 0x2222, spir: 0x1111, exchange: .createChildSA, response: true, id: 3)
        #expect(h.deliver(answer, now: 0) == .handled, "the answer to this end's request: waited for")
        #expect(h.deliver(markedIKE(spii: 0x2222, spir: 0x1111, exchange: .createChildSA, response: true, id: 7), now: 0) == .queued,
                "a response with the request's ID is not awaited")
        #expect(h.counters.waits == 2 && h.counters.queued == 107)
    }

    @Test("a known IKE SA's IKE_AUTH or CREATE_CHILD_SA is waited for (until handled); INFORMATIONAL and IKE_SA_INIT only queued")
    func waitsOnlyWhereOrderMatters() {
        // The daemon's side, done synchronously when woken: take the messages, mark them handled.
        let box = Mutex<IKEHandoff?>(nil)
        let handledCount = Atomic<Int>(0)
        let h = IKEHandoff(wake: {
            guard let h = box.withLock({ $0 }) else { return }
            let (messages, ticket) = h.take()
            handledCount.add(messages.count, ordering: .relaxed)
            h.markHandled(ticket)
        })
        box.withLock { $0 = h }
        h.setKnownSPIs([0x1111])
        // The peer (the original initiator) answers this end's CREATE_CHILD_SA: the responder SPI is ours.
        #expect(h.deliver(markedIKE(spii: 0x2222, spir: 0x1111, exchange: .createChildSA, response: true, id: 4), now: 0) == .handled)
        // This end initiated: the initiator SPI is ours.
        #expect(h.deliver(markedIKE(spii: 0x1111, spir: 0x2222, exchange: .ikeAuth, fromOriginalInitiator: false, response: true, id: 1), now: 0) == .handled)
        #expect(h.deliver(markedIKE(spii: 0x2222, spir: 0x1111, exchange: .informational, id: 5), now: 0) == .queued)
        #expect(h.deliver(markedIKE(spii: 0x3333, spir: 0, exchange: .ikeSAInit), now: 0) == .queued)
        #expect(h.counters.waits == 2 && h.counters.queued == 4 && h.counters.dropped == 0 && h.counters.waitsTimedOut == 0)
        #expect(handledCount.load(ordering: .relaxed) == 4)
    }

    @Test("first IKE_SA_INIT requests pass a token bucket (refilled with time); a full queue drops, counted")
    func rateLimits() {
        let h = IKEHandoff(queueLimit: 1000, initRate: 10, initBurst: 5, wake: {})
        var results: [IKEHandoff.Result] = []
        for spi in UInt64(1)...50 { results.append(h.deliver(markedIKE(spii: spi, spir: 0, exchange: .ikeSAInit), now: 100)) }
        #expect(results.filter { $0 == .queued }.count == 5 && results.filter { $0 == .dropped(.rateLimited) }.count == 45)
        // A second later: ten more tokens, no more than the burst.
        results = (UInt64(100)...120).map { h.deliver(markedIKE(spii: $0, spir: 0, exchange: .ikeSAInit), now: 101) }
        #expect(results.filter { $0 == .queued }.count == 5)
        #expect(h.counters.rateLimited == 45 + 16 && h.counters.waits == 0)
        // The queue: bounded whatever the kind.
        let small = IKEHandoff(queueLimit: 3, wake: {})
        small.setKnownSPIs([7])
        let r = (0..<10).map { small.deliver(markedIKE(spii: 8, spir: 7, exchange: .informational, id: UInt32($0)), now: 0) }
        #expect(r.filter { $0 == .queued }.count == 3 && small.counters.queueFull == 7)
    }
}
