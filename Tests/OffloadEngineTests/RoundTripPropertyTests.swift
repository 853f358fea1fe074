import OffloadTestSupport
import OffloadEngine
import OffloadWire
import Testing

/// Random streams that mix everything GRO has to get right.
struct StreamGenerator {
    var rng: SplitMix

    mutating func chance(_ percent: UInt64) -> Bool { rng.next() % 100 < percent }
    mutating func below(_ n: Int) -> Int { Int(rng.next() % UInt64(max(1, n))) }

    /// One flow's packets, in its own order.
    mutating func flow(index: Int, udpAllowed: Bool) -> [[UInt8]] {
        var base = PacketBuilder()
        base.ipv6 = chance(40)
        base.udp = udpAllowed && chance(20)
        base.sourcePort = 30000 + UInt16(index)
        base.destinationPort = chance(50) ? 443 : 5201
        base.dontFragment = chance(80)
        base.options = [
            [], [.noOperation, .noOperation, .timestamp(value: 7, echoReply: 9)],
            [.noOperation, .noOperation, .sack([SACKBlock(left: 1, right: 2)])],
        ][below(3)]
        let mss = [1448, 1448, 1000, 536, 1 + below(1400)][below(5)]
        let idMode = below(3)  // 0 incrementing, 1 fixed, 2 random
        var seq = UInt32(truncatingIfNeeded: rng.next())
        let id = UInt16(truncatingIfNeeded: rng.next())
        var tsval: UInt32 = 7
        var frames: [[UInt8]] = []
        let count = 1 + below(40)
        for i in 0..<count {
            var s = base
            s.sequence = seq
            s.payloadLength = chance(10) ? below(mss) : mss
            s.payloadSeed = UInt8(truncatingIfNeeded: i)
            s.ipID = idMode == 0 ? id &+ UInt16(i) : idMode == 1 ? id : UInt16(truncatingIfNeeded: rng.next())
            if chance(15) { tsval += 1 }
            if !s.options.isEmpty, case .timestamp = s.options[2] {
                s.options[2] = .timestamp(value: tsval, echoReply: 9)
            }
            if chance(5) { s.flags.insert(.psh) }
            if chance(3) { s.flags.insert(.cwr) }
            if chance(3) { s.flags.insert(.ece) }
            if chance(3) { s.window &+= 1 }
            if chance(3) { s.ack &+= 1 }
            if chance(2) { s.ttl = 63 }
            if chance(2) { s.tos = 3 }
            if chance(5) { s.payloadLength = 0 }
            if chance(2) {
                s.payloadLength = 0
                s.flags.insert([.syn, .rst, .urg][below(3)])
            }
            if chance(3) { s.corruptChecksum = true }
            if chance(2) { s.padding = 1 + below(10) }
            if chance(2) && !s.ipv6 { s.ipv4Options = [1, 1, 1, 0] }
            if chance(2) && !s.ipv6 { s.moreFragments = true }
            if chance(2) && s.ipv6 { s.extensionHeaders = [(.hopByHop, [0, 0, 1, 4, 0, 0, 0, 0])] }
            if chance(2) && s.udp { s.zeroUDPChecksum = true }
            if i == count - 1 && chance(30) { s.flags.insert(.fin) }
            var frame = s.frame()
            if chance(2) { frame = Array(frame[0..<below(frame.count)]) }  // truncation
            if chance(1) { frame[below(frame.count)] ^= 0xFF }  // corruption
            frames.append(frame)
            seq &+= UInt32(s.payloadLength)
            if chance(3) { seq &+= UInt32(below(3000)) }  // a gap
        }
        // Retransmissions (duplicates) and reordering.
        if chance(20), let dup = frames.randomElement(using: &rng) { frames.insert(dup, at: below(frames.count + 1)) }
        if chance(20) && frames.count > 2 {
            let k = below(frames.count - 1)
            frames.swapAt(k, k + 1)
        }
        return frames
    }

    /// Several flows interleaved at random, each keeping its own order.
    mutating func stream(udpAllowed: Bool) -> [[UInt8]] {
        var flows = (0..<(1 + below(8))).map { flow(index: $0, udpAllowed: udpAllowed) }
        var result: [[UInt8]] = []
        while !flows.isEmpty {
            let f = below(flows.count)
            let burst = 1 + below(6)
            result += flows[f].prefix(burst)
            flows[f].removeFirst(min(burst, flows[f].count))
            if flows[f].isEmpty { flows.remove(at: f) }
        }
        return result
    }
}

@Suite("segment(coalesce(x)) == x")
struct RoundTripPropertyTests {
    @Test("thousands of random streams, one batch or many, TCP and UDP GRO")
    func randomStreams() throws {
        var generator = StreamGenerator(rng: SplitMix(seed: 20261122))
        var merged = 0
        var packets = 0
        for round in 0..<1500 {
            let udp = round % 3 == 0
            let stream = generator.stream(udpAllowed: udp)
            var config = GROConfiguration()
            config.udp = udp
            config.flowCapacity = [64, 4, 2][round % 3]
            config.maximumSegments = [64, 8, 3][round % 5 % 3]
            if round % 7 == 0 { config.ipIDRule = .legacy }
            let batch = [nil, 1, 8, 64][round % 4]
            var stats = GROStatistics()
            let out = runGRO(stream, configuration: config, batchSize: batch, statistics: &stats)
            let back = try resegment(out)
            if let violation = RoundTrip.violation(input: stream, output: back, linkType: .ethernet) {
                Issue.record("round \(round): \(violation)")
                return
            }
            // Every super-packet's GSO facts describe exactly the segments it absorbed.
            for e in out where e.gso != nil {
                let gso = e.gso!
                let pieces = try resegment([e])
                #expect(pieces.count == gso.segmentCount)
                #expect(pieces.dropLast().allSatisfy { Emitted(bytes: $0, linkType: .ethernet).payloadLength == gso.segmentSize })
            }
            merged += stats.mergedSegments
            packets += stream.count
        }
        // The generator must actually exercise merging.
        #expect(merged > packets / 4)
    }

    @Test("with a flush timeout, packets held across batches come back intact")
    func carriedAcrossBatches() throws {
        var generator = StreamGenerator(rng: SplitMix(seed: 99))
        var carried = 0
        for round in 0..<300 {
            let stream = generator.stream(udpAllowed: false)
            var config = GROConfiguration()
            config.flushTimeout = 3
            let times = (0..<stream.count).map { UInt64($0) }
            var stats = GROStatistics()
            let out = runGRO(stream, configuration: config, batchSize: 1 + round % 4, timestamps: times,
                             statistics: &stats)
            carried += stats[.timeout]
            if let violation = RoundTrip.violation(input: stream, output: try resegment(out), linkType: .ethernet) {
                Issue.record("round \(round): \(violation)")
                return
            }
        }
        #expect(carried > 0)
    }

    @Test("verified checksums (no software check) round-trip too")
    func verifiedChecksums() throws {
        var generator = StreamGenerator(rng: SplitMix(seed: 5))
        for round in 0..<200 {
            // Drop the packets with bad checksums: "verified" means someone checked them.
            let stream = generator.stream(udpAllowed: false).filter { frame in
                runGRO([frame]).first?.reason != .badChecksum
            }
            let out = runGRO(stream, checksum: .verified, batchSize: 16)
            if let violation = RoundTrip.violation(input: stream, output: try resegment(out), linkType: .ethernet) {
                Issue.record("round \(round): \(violation)")
                return
            }
        }
    }

    @Test("resegmenting to a smaller size gives valid contiguous segments")
    func smallerSegments() throws {
        let specs = stream(10)
        let out = runGRO(specs.map { $0.frame() })
        let gso = try #require(out.first?.gso)
        var segmenter = GSOSegmenter()
        try out[0].bytes.withUnsafeBytes { buffer in
            try segmenter.segment(buffer, linkType: .ethernet, gso: gso, segmentSize: 1000)
        }
        #expect(segmenter.segmentCount == (14480 + 999) / 1000)
        var expectedSequence = specs[0].sequence
        var expectedID = specs[0].ipID
        for i in 0..<segmenter.segmentCount {
            let frame = segmenter.segmentBytes(at: i)
            let e = Emitted(bytes: frame, linkType: .ethernet)
            #expect(checksumsAreValid(frame, linkType: .ethernet))
            #expect(e.sequence == expectedSequence)
            #expect(frame.loadBigEndian(UInt16.self, at: 18) == expectedID)
            #expect(e.payloadLength == (i == segmenter.segmentCount - 1 ? 14480 - 1000 * i : 1000))
            expectedSequence &+= UInt32(e.payloadLength)
            expectedID &+= 1
        }
    }
}

extension Emitted {
    init(bytes: [UInt8], linkType: LinkType) {
        self.init(bytes: bytes, gso: nil, reason: nil, linkType: linkType, checksum: .unverified)
    }
}
