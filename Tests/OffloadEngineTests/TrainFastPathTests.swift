import OffloadEngine
import OffloadTestSupport
import OffloadWire
import Testing

/// Runs GRO twice, with and without the train fast path, and returns both outputs, both
/// counters and how many merges the fast path made.
private func bothPaths(_ frames: [[UInt8]], configuration: GROConfiguration, checksum: ChecksumState,
                       batchSize: Int?) -> (fast: [Emitted], full: [Emitted], fastStats: GROStatistics,
                                            fullStats: GROStatistics, fastMerges: Int)
{
    var fastConfiguration = configuration
    fastConfiguration.trainFastPath = true
    var fullConfiguration = configuration
    fullConfiguration.trainFastPath = false
    var fastStats = GROStatistics()
    var fullStats = GROStatistics()
    var fastMerges = 0
    var fullMerges = 0
    let fast = runGRO(frames, configuration: fastConfiguration, checksum: checksum, batchSize: batchSize,
                      statistics: &fastStats, fastPathMerges: &fastMerges)
    let full = runGRO(frames, configuration: fullConfiguration, checksum: checksum, batchSize: batchSize,
                      statistics: &fullStats, fastPathMerges: &fullMerges)
    #expect(fullMerges == 0, "the fast path ran although it was turned off")
    return (fast, full, fastStats, fullStats, fastMerges)
}

@Suite("GRO train fast path: the same outcome as the rule-by-rule path")
struct TrainFastPathTests {
    @Test("Clean interleaved trains, IPv4 and IPv6: every follower of a chain merges on the fast path")
    func cleanTrains() {
        for ipv6 in [false, true] {
            // Four flows, 20 full segments each, interleaved round-robin, one batch.
            var frames: [[UInt8]] = []
            let flows = (0..<4).map { f in
                stream(20) { i, spec in
                    spec.ipv6 = ipv6
                    spec.sourcePort = 41_000 + UInt16(f)
                    spec.payloadSeed = UInt8(i)
                }
            }
            for i in 0..<20 { for f in 0..<4 { frames.append(flows[f][i].frame()) } }
            let r = bothPaths(frames, configuration: GROConfiguration(), checksum: .unverified, batchSize: nil)
            let sameOutput = r.fast == r.full
            #expect(sameOutput, "ipv6 \(ipv6): the fast path changed the output")
            #expect(r.fastStats == r.fullStats)
            #expect(r.fast.count == 4 && r.fast.allSatisfy { $0.gso?.segmentCount == 20 })
            // The first packet of each flow is held by the full path; the other 19 merge fast.
            #expect(r.fastMerges == 4 * 19, "fast merges \(r.fastMerges), ipv6 \(ipv6)")
        }
    }

    @Test("One changed field in a train: the same output and the same reason as the full path",
          arguments: Mutation.allCases)
    func oneMutation(_ mutation: Mutation) {
        for ipv6 in [false, true] where !(ipv6 && mutation.ipv4Only) {
            for checksum in [ChecksumState.unverified, .verified, .partial] {
                let specs = stream(12) { i, spec in
                    spec.ipv6 = ipv6
                    spec.payloadSeed = UInt8(i)
                    if i == 6 { mutation.apply(to: &spec) }
                }
                var frames = specs.map { $0.frame() }
                mutation.apply(to: &frames[6], ipv6: ipv6)
                let r = bothPaths(frames, configuration: GROConfiguration(), checksum: checksum, batchSize: nil)
                let sameOutput = r.fast == r.full  // compared first: the frames are too long to print
                #expect(sameOutput, "\(mutation), ipv6 \(ipv6), \(checksum): the fast path changed the output")
                #expect(r.fastStats == r.fullStats, "\(mutation), ipv6 \(ipv6), \(checksum)")
                // The segments before the mutation merge on the fast path, whatever comes after.
                #expect(r.fastMerges >= 5, "\(mutation), ipv6 \(ipv6), \(checksum): \(r.fastMerges)")
            }
        }
    }

    @Test("Thousands of randomly mutated multi-flow streams: identical output and counters on both paths")
    func randomStreams() {
        var generator = StreamGenerator(rng: SplitMix(seed: 20_261_130))
        var fastMerges = 0
        var merges = 0
        for round in 0..<500 {
            let udp = round % 4 == 0
            let stream = generator.stream(udpAllowed: udp)
            var configuration = GROConfiguration()
            configuration.udp = udp
            configuration.flowCapacity = [64, 4, 2][round % 3]
            configuration.maximumSegments = [64, 8, 3][round % 5 % 3]
            if round % 7 == 0 { configuration.ipIDRule = .legacy }
            if round % 11 == 0 { configuration.flushTimeout = 1 }
            let checksum = [ChecksumState.unverified, .verified, .partial][round % 3]
            let r = bothPaths(stream, configuration: configuration, checksum: checksum,
                              batchSize: [nil, 1, 8, 64][round % 4])
            if r.fast != r.full || r.fastStats != r.fullStats {
                Issue.record("round \(round): the fast path changed the outcome")
                return
            }
            fastMerges += r.fastMerges
            merges += r.fullStats.mergedSegments
        }
        // The fast path must actually be exercised by these streams.
        #expect(fastMerges > merges / 10, "fast \(fastMerges) of \(merges) merges")
    }
}

/// One field of one segment changed in the middle of a clean train.
enum Mutation: String, CaseIterable, CustomTestStringConvertible {
    case ttl, tos, dontFragment, idJump, idFixed, sequenceGap, push, fin, cwr, ece, window, ack, timestamp,
         urgentPointer, flowLabel, shortSegment, longSegment, trailingGarbage, ipChecksum, tcpChecksum,
         sourceMAC, vlan, sourcePort, ipv4Options, reservedBit, zeroPayload
    var testDescription: String { rawValue }
    var ipv4Only: Bool { [.dontFragment, .idJump, .idFixed, .ipChecksum, .ipv4Options, .reservedBit].contains(self) }

    func apply(to spec: inout PacketBuilder) {
        switch self {
        case .ttl: spec.ttl = 63
        case .tos: spec.tos = 0x10
        case .dontFragment: spec.dontFragment = false
        case .idJump: spec.ipID &+= 5
        case .idFixed: spec.ipID = 8
        case .sequenceGap: spec.sequence &+= 1448
        case .push: spec.flags.insert(.psh)
        case .fin: spec.flags.insert(.fin)
        case .cwr: spec.flags.insert(.cwr)
        case .ece: spec.flags.insert(.ece)
        case .window: spec.window &+= 1
        case .ack: spec.ack &+= 1
        case .timestamp: spec.options = [.noOperation, .noOperation, .timestamp(value: 101, echoReply: 50)]
        case .urgentPointer: spec.urgent = 9
        case .flowLabel: spec.flowLabel = 0x12345
        case .shortSegment: spec.payloadLength = 1000
        case .longSegment: spec.payloadLength = 1460
        case .trailingGarbage, .ipChecksum, .reservedBit: break  // changed in the frame
        case .tcpChecksum: spec.corruptChecksum = true
        case .sourceMAC: spec.sourceMAC = 0x02_00_00_00_00_09
        case .vlan: spec.vlan = 7
        case .sourcePort: spec.sourcePort &+= 1
        case .ipv4Options: spec.ipv4Options = [1, 1, 1, 0]
        case .zeroPayload: spec.payloadLength = 0
        }
    }

    /// The changes made to the built frame (Ethernet, so the IP header starts at 14).
    func apply(to frame: inout [UInt8], ipv6: Bool) {
        switch self {
        case .trailingGarbage: frame += [0xAA, 0xBB]
        case .ipChecksum: frame[14 + 10] ^= 0x01
        case .reservedBit:
            // The reserved flag, with the header checksum updated so only the flag differs.
            let old = UInt16(frame[14 + 6]) << 8 | UInt16(frame[14 + 7])
            let checksum = UInt16(frame[14 + 10]) << 8 | UInt16(frame[14 + 11])
            let updated = InternetChecksum.update(checksum, replacing: old, with: old | 0x8000)
            frame[14 + 6] |= 0x80
            frame[14 + 10] = UInt8(updated >> 8)
            frame[14 + 11] = UInt8(truncatingIfNeeded: updated)
        default: break
        }
    }
}
