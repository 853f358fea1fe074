import OffloadEngine
import OffloadForwarder
import OffloadTUN
import OffloadWire
import Testing

/// Writes `frames` (whole IP packets, no GSO) through `impairment` at time `now`, into a recorder.
private func impair(_ frames: [[UInt8]], _ impairment: Impairment, sink: RecordingSink, now: UInt64 = 0) throws {
    for frame in frames {
        try frame.withUnsafeBytes { raw in
            try withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: 1) { pieces in
                pieces[0] = raw
                try impairment.write(header: nil, pieces: UnsafeBufferPointer(pieces), now: now, to: sink)
            }
        }
    }
}

/// `count` TCP segments of one flow as raw IP packets, each payload distinct.
private func segments(_ count: Int) -> [[UInt8]] {
    (0..<count).map { i in
        var b = PacketBuilder()
        b.link = .raw
        b.sequence = 1_000 + UInt32(i) * 100
        b.payloadLength = 100
        b.payloadSeed = UInt8(truncatingIfNeeded: i)
        b.ipID = UInt16(truncatingIfNeeded: 100 + i)
        return b.frame()
    }
}

@Suite("Impairment: loss, duplication, reordering, delay and corruption on wire segments")
struct ImpairmentTests {
    @Test("The text form: rates in percent or fractions, durations, and clear errors")
    func parsing() throws {
        let s = try ImpairmentSettings(parsing: "loss=1%, reorder=0.02,duplicate=0.1%,depth=5,delay=2ms,corrupt=0,seed=9")
        #expect(s.loss == 0.01 && s.reorder == 0.02 && abs(s.duplicate - 0.001) < 1e-12)
        #expect(s.reorderDepth == 5 && s.delay == 2_000_000 && s.seed == 9 && s.isActive)
        #expect(!ImpairmentSettings().isActive)
        #expect(try ImpairmentSettings(parsing: "delay=20ms").delay == 20_000_000)
        #expect(try ImpairmentSettings(parsing: "delay=1.5s").delay == 1_500_000_000)
        for bad in ["loss", "loss=2", "loss=x%", "depth=0", "delay=5", "delay=11s", "speed=1", "seed=-1"] {
            #expect(throws: ImpairmentSettingsError.self, "\(bad)") { try ImpairmentSettings(parsing: bad) }
        }
    }

    @Test("Loss and duplication at their rates; the same seed gives the same damage")
    func lossAndDuplication() throws {
        var settings = ImpairmentSettings()
        settings.loss = 0.1
        settings.duplicate = 0.05
        let input = segments(4_000)
        let first = RecordingSink(takesVirtioHeaders: false)
        let impairment = Impairment(settings)
        try impair(input, impairment, sink: first)
        #expect(impairment.segments == 4_000)
        #expect((300...500).contains(impairment.dropped), "dropped \(impairment.dropped)")
        #expect((120...240).contains(impairment.duplicated), "duplicated \(impairment.duplicated)")
        #expect(first.writes.count == 4_000 - impairment.dropped + impairment.duplicated)
        // Nothing reordered: what arrives is the input in order, some missing, some twice.
        var k = 0
        for w in first.writes.map(\.bytes) {
            while k < input.count && input[k] != w { k += 1 }
            #expect(k < input.count, "a write that is not the next input")
        }
        let second = RecordingSink(takesVirtioHeaders: false)
        try impair(input, Impairment(settings), sink: second)
        #expect(second.writes.map(\.bytes) == first.writes.map(\.bytes))
    }

    @Test("Reordering: a held segment leaves after `depth` later ones; nothing is lost")
    func reordering() throws {
        var settings = ImpairmentSettings()
        settings.reorder = 0.2
        settings.reorderDepth = 3
        let input = segments(500)
        let sink = RecordingSink(takesVirtioHeaders: false)
        let impairment = Impairment(settings)
        try impair(input, impairment, sink: sink, now: 1_000)
        // The stragglers leave once they are older than the reorder timeout.
        try impairment.release(now: 1_000 + 1_000_000_000, to: sink)
        let out = sink.writes.map(\.bytes)
        #expect(out.count == input.count)
        #expect(Set(out) == Set(input))
        #expect(out != input && impairment.reordered > 50)
        // No segment is overtaken by more than depth + (the other held ones) segments: it left soon.
        let position = Dictionary(uniqueKeysWithValues: out.enumerated().map { ($1, $0) })
        let displacement = input.enumerated().map { position[$1]! - $0 }.max()!
        #expect(displacement <= 12, "a reordered segment was held for \(displacement) segments")
    }

    @Test("Delay: segments leave only when due")
    func delay() throws {
        var settings = ImpairmentSettings()
        settings.delay = 5_000_000
        let sink = RecordingSink(takesVirtioHeaders: false)
        let impairment = Impairment(settings)
        try impair(segments(10), impairment, sink: sink, now: 0)
        #expect(sink.writes.isEmpty)
        try impairment.release(now: 4_999_999, to: sink)
        #expect(sink.writes.isEmpty)
        try impairment.release(now: 5_000_000, to: sink)
        #expect(sink.writes.map(\.bytes) == segments(10))
    }

    @Test("Corruption flips a byte after the IP header, so the L4 checksum no longer verifies")
    func corruption() throws {
        var settings = ImpairmentSettings()
        settings.corrupt = 1
        let sink = RecordingSink(takesVirtioHeaders: false)
        let input = segments(20)
        try impair(input, Impairment(settings), sink: sink)
        for (w, original) in zip(sink.writes.map(\.bytes), input) {
            #expect(w.count == original.count && w != original)
            #expect(Array(w[0..<20]) == Array(original[0..<20]), "the IP header is kept")
            let l4 = Array(w[20...])
            let pseudo = InternetChecksum.pseudoHeaderSum(ipv4Source: PacketBuilder.v4Source, destination: PacketBuilder.v4Destination,
                                                          protocolNumber: .tcp, length: l4.count)
            #expect(InternetChecksum.sum(l4.span.bytes, initial: pseudo).value != 0xFFFF, "the TCP checksum still verifies")
        }
    }

    @Test("A super-packet is damaged per wire segment: it is segmented first")
    func superPacketsAreSegmented() throws {
        let frames = segments(10)
        var engine = GROEngine()
        var batch = PacketBatch(packetCapacity: 16, byteCapacity: 1 << 16)
        for f in frames { batch.append(f, metadata: PacketMetadata(linkType: .raw, checksum: .unverified)) }
        engine.coalesce(batch)
        #expect(engine.outputCount == 1)
        let merged = engine.outputBytes(at: 0)
        let gso = try #require(engine.output(at: 0).metadata.gso)
        let vhdr = VirtioPacketInfo.header(for: gso, checksum: .verified, packet: merged.span.bytes)
        let header = try #require(vhdr)
        let sink = RecordingSink(takesVirtioHeaders: true)
        let impairment = Impairment(ImpairmentSettings())
        try merged.withUnsafeBytes { raw in
            try withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: 1) { pieces in
                pieces[0] = raw
                try impairment.write(header: header, pieces: UnsafeBufferPointer(pieces), now: 0, to: sink)
            }
        }
        #expect(impairment.segments == 10)
        #expect(sink.writes.map(\.bytes) == frames)
    }
}
