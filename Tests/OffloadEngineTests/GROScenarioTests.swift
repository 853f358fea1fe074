import OffloadEngine
import OffloadWire
import Testing

/// The scenarios of Linux's rules (docs/linux-gro-rules.md): what Linux delivers, and where swift-offload deliberately
/// differs (per-flow order), what it delivers instead.
@Suite("GRO scenarios (docs/linux-gro-rules.md §1–§4)")
struct GROScenarioTests {
    func run(_ specs: [PacketBuilder], _ configuration: GROConfiguration = GROConfiguration(),
             checksum: ChecksumState = .unverified) -> [Emitted] {
        runGRO(specs.map { $0.frame() }, configuration: configuration, checksum: checksum)
    }

    func sizes(_ e: [Emitted]) -> [Int] { e.map(\.payloadLength) }

    /// Every emitted packet must have valid IP and L4 checksums (complete-checksum mode).
    func expectValidChecksums(_ emitted: [Emitted], sourceLocation: SourceLocation = #_sourceLocation) {
        for e in emitted {
            #expect(checksumsAreValid(e.bytes, linkType: e.linkType), sourceLocation: sourceLocation)
        }
    }

    @Test("1: three full in-order segments merge into one")
    func threeFullSegments() throws {
        let out = run(stream(3))
        #expect(sizes(out) == [4344])
        let gso = try #require(out[0].gso)
        #expect(gso == GSOInfo(kind: .tcpv4, segmentSize: 1448, segmentCount: 3))
        #expect(out[0].bytes.loadBigEndian(UInt16.self, at: 14 + 2) == UInt16(20 + 32 + 4344))
        #expect(out[0].bytes.loadBigEndian(UInt16.self, at: 14 + 4) == 8)
        expectValidChecksums(out)
    }

    @Test("1: partial checksum output holds the pseudo-header sum")
    func partialChecksumOutput() throws {
        var config = GROConfiguration()
        config.outputChecksum = .partial
        let out = run(stream(3), config)
        #expect(out.count == 1 && out[0].checksum == .partial)
        let pseudo = InternetChecksum.pseudoHeaderSum(
            ipv4Source: PacketBuilder.v4Source, destination: PacketBuilder.v4Destination, protocolNumber: .tcp,
            length: 32 + 4344)
        #expect(out[0].bytes.loadBigEndian(UInt16.self, at: 14 + 20 + 16) == pseudo.value)
        // Finishing the partial checksum gives the complete one.
        var finished = out[0].bytes
        let value = finished.span.bytes.extracting(34...).withUnsafeBytes { ~InternetChecksum.unsafeSum($0).value }
        finished.storeBigEndian(value, at: 34 + 16)
        #expect(checksumsAreValid(finished, linkType: .ethernet))
    }

    @Test("a UDP datagram between two TCP segments with the same addresses and ports does not split the merge")
    func udpBetweenTCPSegmentsOfTheSamePorts() throws {
        // With UDP GRO off, the datagram bypasses GRO. Linux keeps TCP and UDP in separate flows, so
        // the TCP segments merge across it; the bypass rule must compare the protocol too.
        var specs = stream(2)
        for i in specs.indices {
            specs[i].source = .v4(IPv4Address(192, 0, 2, 1))
            specs[i].destination = .v4(IPv4Address(192, 0, 2, 2))
            specs[i].sourcePort = 1
            specs[i].destinationPort = 1
        }
        var udp = specs[0]
        udp.transport = .udp
        udp.payloadLength = 100
        var statistics = GROStatistics()
        let out = runGRO([specs[0].frame(), udp.frame(), specs[1].frame()], statistics: &statistics)
        #expect(out.count == 2)
        #expect(out.contains { $0.reason == .udpDisabled && $0.payloadLength == 100 })
        let merged = try #require(out.first { $0.gso != nil })
        #expect(merged.gso?.segmentCount == 2 && merged.payloadLength == 2 * 1448)
        #expect(statistics[.flowBypass] == 0)
        // A TCP packet of the same connection that bypasses (a bad checksum) still completes it first.
        var bad = specs[1]
        bad.sequence &+= 1448
        bad.corruptChecksum = true
        let ordered = runGRO([specs[0].frame(), specs[1].frame(), bad.frame()])
        #expect(ordered.map(\.reason) == [.flowBypass, .badChecksum])
    }

    @Test("2: a short last segment ends the chain")
    func shortLastSegment() {
        let out = run(stream(3) { i, s in if i == 2 { s.payloadLength = 500 } })
        #expect(sizes(out) == [3396])
        #expect(out[0].reason == .shortSegment)
        expectValidChecksums(out)
    }

    @Test("3: a small segment followed by a larger one")
    func smallThenLarger() {
        let out = run(stream(2) { i, s in if i == 0 { s.payloadLength = 500 } })
        #expect(sizes(out) == [500, 1448])
        #expect(out[0].gso == nil && out[1].gso == nil)
    }

    @Test("4: the first segment defines the segment size")
    func firstDefinesSize() {
        let out = run(stream(3, payload: 500))
        #expect(sizes(out) == [1500])
        #expect(out[0].gso?.segmentSize == 500)
    }

    @Test("5: a sequence gap")
    func sequenceGap() {
        let out = run(stream(2) { i, s in if i == 1 { s.sequence &+= 1448 } })
        #expect(sizes(out) == [1448, 1448])
        #expect(out[0].reason == .sequenceGap && out[1].reason == .batchEnd)
    }

    @Test("6: reordered segments are not reordered")
    func reorder() {
        var specs = stream(2)
        specs.swapAt(0, 1)
        let out = run(specs)
        #expect(sizes(out) == [1448, 1448])
        #expect(out.map(\.sequence) == [specs[0].sequence, specs[1].sequence])
    }

    @Test("7, 8, 18: ack, window or ECE differs", arguments: ["ack", "window", "ece"])
    func headerWordDiffers(field: String) {
        let out = run(stream(2) { i, s in
            guard i == 1 else { return }
            switch field {
            case "ack": s.ack += 1
            case "window": s.window += 1
            default: s.flags.insert(.ece)
            }
        })
        #expect(sizes(out) == [1448, 1448])
        #expect(out[0].reason == (field == "ack" ? .ackMismatch : .flagsOrWindowMismatch))
    }

    @Test("9: a different timestamp does not coalesce")
    func timestampDiffers() {
        let out = run(stream(3) { i, s in if i == 2 { s.options = [.noOperation, .noOperation, .timestamp(value: 101, echoReply: 50)] } })
        #expect(sizes(out) == [2896, 1448])
        #expect(out[0].reason == .optionsMismatch)
    }

    @Test("10: same timestamp, different option layout")
    func optionLayoutDiffers() {
        let out = run(stream(2) { i, s in
            if i == 1 { s.options = [.noOperation, .timestamp(value: 100, echoReply: 50), .noOperation] }
        })
        #expect(sizes(out) == [1448, 1448])
    }

    @Test("11: a different option set (TS, TS, WS)")
    func optionSetDiffers() {
        let out = run(stream(3) { i, s in if i == 2 { s.options = [.noOperation, .windowScale(7)] } })
        #expect(sizes(out) == [2896, 1448])
    }

    @Test("12: PSH on segment 3 of 5 ends the chain")
    func pushEndsChain() throws {
        let out = run(stream(5) { i, s in if i == 2 { s.flags.insert(.psh) } })
        #expect(sizes(out) == [4344, 2896])
        #expect(out[0].tcpFlags?.contains(.psh) == true)
        #expect(out[0].reason == .pushOrFin)
        expectValidChecksums(out)
    }

    @Test("13: PSH on the first segment with nothing held is delivered at once")
    func pushFirst() {
        let out = run(stream(3) { i, s in if i == 0 { s.flags.insert(.psh) } })
        #expect(sizes(out) == [1448, 2896])
        #expect(out[0].reason == .controlFlags)
    }

    @Test("14: FIN with data on segment 3")
    func finWithData() {
        let out = run(stream(3) { i, s in if i == 2 { s.flags.insert(.fin) } })
        #expect(sizes(out) == [4344])
        #expect(out[0].tcpFlags?.contains(.fin) == true)
    }

    @Test("15: a bare FIN is never merged")
    func bareFin() {
        let out = run(stream(3) { i, s in if i == 2 { s.flags.insert(.fin); s.payloadLength = 0 } })
        #expect(sizes(out) == [2896, 0])
    }

    @Test("16: SYN, RST or URG with no payload in the middle of 5", arguments: ["syn", "rst", "urg"])
    func controlInMiddle(flag: String) {
        let out = run(stream(5) { i, s in
            guard i == 2 else { return }
            s.payloadLength = 0
            s.flags.insert(flag == "syn" ? .syn : flag == "rst" ? .rst : .urg)
        })
        #expect(sizes(out) == [2896, 0, 2896])
    }

    @Test("17: CWR on segment 2 of 3 starts a new chain and marks it ECN")
    func cwrStartsChain() throws {
        let specs = stream(3) { i, s in if i == 1 { s.flags.insert(.cwr) } }
        let out = run(specs)
        #expect(sizes(out) == [1448, 2896])
        #expect(out[0].reason == .cwr)
        #expect(out[1].tcpFlags?.contains(.cwr) == true)
        #expect(out[1].gso?.ecn == true)
        // GSO gives CWR back to the first segment only.
        let back = try resegment(out)
        #expect(back == specs.map { $0.frame() })
    }

    @Test("19: a pure ACK between two data segments; dup ACKs stay separate")
    func pureAck() {
        let specs = stream(3) { i, s in if i == 1 { s.payloadLength = 0 } }
        let out = run(specs)
        #expect(sizes(out) == [1448, 0, 1448])
        let dups = run(stream(2) { _, s in s.payloadLength = 0 })
        #expect(sizes(dups) == [0, 0])
        #expect(dups.allSatisfy { $0.reason == .zeroPayload })
    }

    @Test("20: a bad checksum is never merged; per-flow order is kept (difference 1)")
    func badChecksum() {
        let specs = stream(2) { i, s in if i == 1 { s.corruptChecksum = true } }
        let out = run(specs)
        // Linux delivers the bad segment first; swift-offload completes its flow's held packet first.
        #expect(out.map(\.bytes) == specs.map { $0.frame() })
        #expect(out[0].reason == .flowBypass && out[1].reason == .badChecksum)
    }

    @Test("20: trusted checksums are not verified")
    func trustedChecksum() {
        let specs = stream(2) { i, s in if i == 1 { s.corruptChecksum = true } }
        let out = run(specs, checksum: .verified)
        #expect(sizes(out) == [2896])
    }

    @Test("21, 22, 23: TTL, TOS, ECN or DF differs", arguments: ["ttl", "tos", "ce", "df"])
    func networkFieldDiffers(field: String) {
        let out = run(stream(2) { i, s in
            guard i == 1 else { return }
            switch field {
            case "ttl": s.ttl = 63
            case "tos": s.tos = 0x10
            case "ce": s.tos = 3
            default: s.dontFragment = false
            }
        })
        #expect(sizes(out) == [1448, 1448])
        let expected: GROReason = field == "ttl" ? .ttlMismatch : field == "df" ? .dfMismatch : .tosMismatch
        #expect(out[0].reason == expected)
    }

    @Test("24: incrementing IDs")
    func incrementingIDs() throws {
        let specs = stream(3)
        let out = run(specs)
        #expect(sizes(out) == [4344])
        #expect(out[0].gso?.fixedID == false)
        #expect(try resegment(out) == specs.map { $0.frame() })
    }

    @Test("25: fixed IDs with DF set")
    func fixedIDs() throws {
        let specs = stream(3) { _, s in s.ipID = 8 }
        let out = run(specs)
        #expect(sizes(out) == [4344])
        #expect(out[0].gso?.fixedID == true)
        #expect(try resegment(out) == specs.map { $0.frame() })
    }

    @Test("26: fixed IDs with DF clear: mainline merges, legacy does not")
    func fixedIDsNoDF() {
        let specs = stream(2) { _, s in
            s.ipID = 8
            s.dontFragment = false
        }
        #expect(sizes(run(specs)) == [2896])
        var legacy = GROConfiguration()
        legacy.ipIDRule = .legacy
        #expect(sizes(run(specs, legacy)) == [1448, 1448])
    }

    @Test("27: mixed ID modes", arguments: [[8, 9, 9], [8, 8, 9], [8, 10]])
    func mixedIDs(ids: [Int]) {
        let out = run(stream(ids.count) { i, s in s.ipID = UInt16(ids[i]) })
        #expect(sizes(out) == (ids.count == 3 ? [2896, 1448] : [1448, 1448]))
    }

    @Test("28: the IP ID wraps at 16 bits")
    func idWrap() throws {
        let specs = stream(3) { i, s in s.ipID = 65535 &+ UInt16(i) }
        let out = run(specs)
        #expect(sizes(out) == [4344])
        #expect(try resegment(out) == specs.map { $0.frame() })
    }

    @Test("29: IPv4 options bypass GRO; the flow's held packet leaves first (difference 1)")
    func ipv4Options() {
        let specs = stream(3) { i, s in if i == 1 { s.ipv4Options = [1, 1, 1, 0] } }
        let out = run(specs)
        #expect(out.map(\.bytes) == specs.map { $0.frame() })
        #expect(out[1].reason == .ipv4Options)
    }

    @Test("30: an IPv4 fragment of the same flow bypasses GRO")
    func fragmentBypass() {
        let specs = stream(3) { i, s in if i == 1 { s.moreFragments = true } }
        let out = run(specs)
        #expect(out.map(\.bytes) == specs.map { $0.frame() })
        #expect(out[1].reason == .fragment)
    }

    @Test("31: an Ethernet-padded frame completes the held packet and goes alone")
    func paddedFrame() {
        let specs = stream(3) { i, s in if i == 1 { s.padding = 6 } }
        let out = run(specs)
        #expect(out.map(\.bytes) == specs.map { $0.frame() })
        #expect(out[0].reason == .unmergeableFollower && out[1].reason == .padded)
    }

    @Test("32: the 64 KiB limit")
    func sizeLimit() throws {
        let specs = stream(46)
        let out = run(specs)
        #expect(sizes(out) == [65160, 1448])
        #expect(out[0].gso?.segmentCount == 45)
        #expect(out[0].bytes.loadBigEndian(UInt16.self, at: 16) == 65212)
        #expect(out[0].reason == .sizeLimit)
        // 20-byte TCP headers, total exactly 65535: still merged.
        let exact = stream(5, payload: 13099) { _, s in s.options = [] }
        #expect(sizes(run(exact)) == [65495])
        let over = run(stream(6, payload: 13099) { _, s in s.options = [] })
        #expect(sizes(over) == [65495, 13099])
        #expect(over[0].reason == .sizeLimit)
    }

    @Test("33: IPv6, three full segments; hop limit or traffic class differs")
    func ipv6() throws {
        let specs = stream(3) { _, s in s.ipv6 = true }
        let out = run(specs)
        #expect(sizes(out) == [4344])
        #expect(out[0].gso?.kind == .tcpv6)
        #expect(out[0].bytes.loadBigEndian(UInt16.self, at: 14 + 4) == UInt16(32 + 4344))
        expectValidChecksums(out)
        #expect(try resegment(out) == specs.map { $0.frame() })
        let hop = run(stream(2) { i, s in s.ipv6 = true; if i == 1 { s.ttl = 1 } })
        #expect(sizes(hop) == [1448, 1448])
        let tc = run(stream(2) { i, s in s.ipv6 = true; if i == 1 { s.tos = 0x20 } })
        #expect(sizes(tc) == [1448, 1448])
    }

    @Test("34: a different IPv6 flow label is a different flow (never merged)")
    func flowLabel() {
        let out = run(stream(2) { i, s in s.ipv6 = true; if i == 1 { s.flowLabel = 0x12345 } })
        #expect(sizes(out) == [1448, 1448])
        // Linux holds both until the flush; swift-offload holds one identity per connection, so
        // the first leaves when the second arrives. Same packets, same order.
        #expect(out.map(\.reason) == [.flowIdentityChange, .batchEnd])
    }

    @Test("35: IPv6 extension headers")
    func extensionHeaders() {
        let hbh: [UInt8] = [0, 0, 1, 4, 0, 0, 0, 0]  // Hop-by-Hop: PadN
        let same = run(stream(2) { _, s in s.ipv6 = true; s.extensionHeaders = [(.hopByHop, hbh)] })
        #expect(sizes(same) == [2896])
        let dst = run(stream(2) { _, s in s.ipv6 = true; s.extensionHeaders = [(.ipv6DestinationOptions, hbh)] })
        #expect(sizes(dst) == [2896])
        let different = run(stream(2) { i, s in
            s.ipv6 = true
            s.extensionHeaders = [(.hopByHop, i == 0 ? hbh : [0, 0, 1, 4, 0, 0, 0, 1])]
        })
        #expect(sizes(different) == [1448, 1448])
        #expect(different.map(\.reason) == [.flowIdentityChange, .batchEnd])
        let fragment = run(stream(2) { _, s in s.ipv6 = true; s.extensionHeaders = [(.ipv6Fragment, [0, 0, 0, 0, 0, 0, 0, 1])] })
        #expect(fragment.count == 2 && fragment.allSatisfy { $0.reason == .fragment })
    }

    @Test("36: two interleaved flows")
    func interleaved() {
        let a = stream(2)
        let b = stream(2) { _, s in s.sourcePort = 40001 }
        let out = run([a[0], b[0], a[1], b[1]])
        #expect(sizes(out) == [2896, 2896])
        #expect(out[0].bytes.loadBigEndian(UInt16.self, at: 34) == 40000)
    }

    @Test("37: a full flow table completes the oldest held packet")
    func tableFull() {
        var config = GROConfiguration()
        config.flowCapacity = 8
        let flows = (0..<9).map { f in stream(1) { _, s in s.sourcePort = 41000 + UInt16(f) }[0] }
        let out = run(flows, config)
        #expect(out.count == 9)
        #expect(out[0].reason == .tableFull)
        #expect(out[0].bytes == flows[0].frame())
    }

    @Test("38: UDP GRO")
    func udpGRO() {
        var config = GROConfiguration()
        config.udp = true
        func udp(_ sizes: [Int], _ customize: (Int, inout PacketBuilder) -> Void = { _, _ in }) -> [PacketBuilder] {
            sizes.enumerated().map { i, n in
                var s = PacketBuilder()
                s.udp = true
                s.payloadLength = n
                s.ipID = 8 &+ UInt16(i)
                customize(i, &s)
                return s
            }
        }
        let merged = run(udp([1200, 1200, 800]), config)
        #expect(sizes(merged) == [3200])
        #expect(merged[0].gso == GSOInfo(kind: .udpv4, segmentSize: 1200, segmentCount: 3))
        #expect(merged[0].reason == .shortSegment)
        expectValidChecksums(merged)
        #expect(sizes(run(udp([1200, 1300]), config)) == [1200, 1300])
        #expect(sizes(run(udp([1200, 1200]) { _, s in s.zeroUDPChecksum = true }, config)) == [1200, 1200])
        #expect(sizes(run(udp([1200, 1200]) { i, s in if i == 1 { s.padding = 4 } }, config)) == [1200, 1200])
        let sixtyFive = run(udp(Array(repeating: 100, count: 65)), config)
        #expect(sizes(sixtyFive) == [6400, 100])
        #expect(sixtyFive[0].reason == .segmentLimit)
        #expect(sizes(run(udp([1200, 1200]))) == [1200, 1200])  // UDP GRO off by default
    }

    @Test("LRO mode merges across header differences and records no segment size")
    func lroMode() {
        var config = GROConfiguration()
        config.mode = .unsafeLRO
        let specs = stream(4) { i, s in
            s.ack = 5000 + UInt32(i)
            s.options = [.noOperation, .noOperation, .timestamp(value: 100 + UInt32(i), echoReply: 50)]
            if i == 2 { s.payloadLength = 700 }
        }
        let out = run(specs, config)
        #expect(sizes(out) == [1448 * 3 + 700])
        #expect(out[0].gso?.segmentSize == 0)
        // The newest ACK number is what the merged header carries.
        #expect(out[0].bytes.loadBigEndian(UInt32.self, at: 34 + 8) == 5003)
        #expect(throws: GSOError.unknownSegmentSize) { try resegment(out) }
    }

    @Test("VLAN-tagged frames merge only within the same tag")
    func vlan() {
        let same = run(stream(2) { _, s in s.vlan = 10 })
        #expect(sizes(same) == [2896])
        let different = run(stream(2) { i, s in s.vlan = 10 + UInt16(i) })
        #expect(sizes(different) == [1448, 1448])
    }

    @Test("The urgent pointer must match (keeps the round trip exact)")
    func urgentPointer() throws {
        let specs = stream(2) { i, s in if i == 1 { s.urgent = 7 } }
        let out = run(specs)
        #expect(out[0].reason == .urgentPointerMismatch)
        #expect(try resegment(out) == specs.map { $0.frame() })
    }
}

/// Whether the IPv4 header checksum and the TCP/UDP checksum of `frame` verify.
func checksumsAreValid(_ frame: [UInt8], linkType: LinkType) -> Bool {
    guard let l = try? PacketLayout(parsing: frame.span.bytes, linkType: linkType) else { return false }
    return frame.withUnsafeBytes { raw -> Bool in
        let n = l.networkOffset
        var pseudo: OnesComplementSum
        let l4 = UnsafeRawBufferPointer(rebasing: raw[l.transportOffset..<l.ipEnd])
        if l.network == .ipv4 {
            let header = UnsafeRawBufferPointer(rebasing: raw[n..<l.transportOffset])
            if InternetChecksum.unsafeSum(header).value != 0xFFFF { return false }
            pseudo = InternetChecksum.unsafeSum(UnsafeRawBufferPointer(rebasing: raw[(n + 12)..<(n + 20)]))
        } else {
            pseudo = InternetChecksum.unsafeSum(UnsafeRawBufferPointer(rebasing: raw[(n + 8)..<(n + 40)]))
        }
        pseudo += OnesComplementSum(UInt16(l.transport.rawValue)) + OnesComplementSum(UInt16(l4.count))
        return InternetChecksum.unsafeSum(l4, initial: pseudo).value == 0xFFFF
    }
}
