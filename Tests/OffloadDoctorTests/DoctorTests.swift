import Foundation
import OffloadCapture
import OffloadDoctor
import OffloadLab
import OffloadReport
import OffloadTestSupport
import OffloadWire
import Testing

/// Builds captures of TCP conversations, packet by packet, for the doctor to read.
struct Trace {
    static let client = IPv4Address(10, 1, 0, 2), server = IPv4Address(10, 2, 0, 2)
    static let gateway = IPv4Address(10, 1, 0, 1)
    static let client6 = IPv6Address("2001:db8:1::2")!, server6 = IPv6Address("2001:db8:2::2")!
    var packets: [(time: Double, bytes: [UInt8])] = []
    /// IPv6 addresses instead of IPv4.
    var ipv6 = false

    /// A TCP packet; `port` picks the connection (client port), `toServer` the direction.
    mutating func tcp(_ time: Double, port: UInt16 = 40000, toServer: Bool = true, seq: UInt32, ack: UInt32 = 1,
                      flags: TCPFlags = .ack, payload: Int = 0, window: UInt16 = 5000, options: [TCPOption] = []) {
        packets.append((time, Self.tcpPacket(port: port, toServer: toServer, seq: seq, ack: ack, flags: flags,
                                             payload: payload, window: window, options: options, ipv6: ipv6)))
    }

    /// The client's handshake (SYN at `time`; the server answers after `serverTurn` s, the client
    /// after `clientTurn` s more): at a capture point next to the client the server's turn is the
    /// round trip, next to the server the client's is.
    mutating func handshake(_ time: Double, port: UInt16 = 40000, serverTurn: Double, clientTurn: Double,
                            clientISN: UInt32 = 999) {
        tcp(time, port: port, seq: clientISN, ack: 0, flags: .syn)
        tcp(time + serverTurn, port: port, toServer: false, seq: 0, ack: clientISN &+ 1, flags: [.syn, .ack])
        tcp(time + serverTurn + clientTurn, port: port, seq: clientISN &+ 1, ack: 1)
    }

    static func builder(port: UInt16, toServer: Bool, ipv6: Bool = false) -> PacketBuilder {
        var b = PacketBuilder()
        b.link = .raw
        b.source = ipv6 ? .v6(toServer ? client6 : server6) : .v4(toServer ? client : server)
        b.destination = ipv6 ? .v6(toServer ? server6 : client6) : .v4(toServer ? server : client)
        b.sourcePort = toServer ? port : 5201
        b.destinationPort = toServer ? 5201 : port
        b.ipID = 0
        return b
    }

    static func tcpPacket(port: UInt16, toServer: Bool, seq: UInt32, ack: UInt32, flags: TCPFlags, payload: Int,
                          window: UInt16, options: [TCPOption], ipv6: Bool = false) -> [UInt8] {
        var b = builder(port: port, toServer: toServer, ipv6: ipv6)
        b.sequence = seq
        b.ack = ack
        b.flags = flags
        b.window = window
        b.options = options
        b.payload = [UInt8](repeating: 0, count: payload)
        return b.frame()
    }

    /// An ICMP "fragmentation needed" from the gateway to the client quoting a packet of `quotedLength`
    /// (its IP header and the first 8 bytes of its TCP header, as RFC 792 asks).
    mutating func fragmentationNeeded(_ time: Double, port: UInt16 = 40000, mtu: Int, quotedLength: Int, seq: UInt32) {
        let quoted = Self.tcpPacket(port: port, toServer: true, seq: seq, ack: 1, flags: .ack, payload: quotedLength - 40,
                                    window: 1, options: [])
        var b = PacketBuilder()
        b.link = .raw
        b.source = .v4(Self.gateway)
        b.destination = .v4(Self.client)
        b.ipID = 0
        b.transport = .icmp(type: ICMPType.v4DestinationUnreachable, code: ICMPType.v4FragmentationNeeded,
                            restOfHeader: UInt32(mtu))
        b.payload = Array(quoted[0..<28])
        packets.append((time, b.frame()))
    }

    /// A bulk transfer: `count` segments of `size` from `start`, one every `gap` seconds, each
    /// acknowledged by the server right away (every `ackEvery` segments).
    mutating func bulk(from start: Double, port: UInt16 = 40000, seq: inout UInt32, count: Int, size: Int = 1448,
                       gap: Double = 0.001, ackEvery: Int = 2) {
        for i in 0..<count {
            let t = start + Double(i) * gap
            tcp(t, port: port, seq: seq, payload: size)
            seq &+= UInt32(size)
            if (i + 1) % ackEvery == 0 { tcp(t + gap / 2, port: port, toServer: false, seq: 1, ack: seq) }
        }
    }

    /// Writes a pcap (raw IP) and returns its path.
    func write(_ name: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("doctor-\(getpid())-\(name).pcap").path
        var writer = try CaptureWriter(path: path, format: .pcap(nanosecond: true, bigEndian: false),
                                       interfaces: [CaptureInterface(linkType: .raw)])
        for p in packets.sorted(by: { $0.time < $1.time }) {
            try writer.writePacket(p.bytes, timestamp: UInt64((1_700_000_000 + p.time) * 1e9))
        }
        try writer.flush()
        return path
    }
}

func diagnose(_ traces: Trace..., name: String = #function) throws -> Diagnosis {
    let paths = try traces.enumerated().map { try $0.element.write("\(name.prefix(20))-\($0.offset)") }
    defer { for p in paths { try? FileManager.default.removeItem(atPath: p) } }
    return try Doctor.diagnose(paths: paths)
}

extension Diagnosis {
    func kinds() -> Set<Finding.Kind> { Set(findings.map(\.kind)) }
    func finding(_ kind: Finding.Kind) -> Finding? { findings.first { $0.kind == kind } }
    func titles(_ findings: [Finding]) -> [String] { findings.map { DoctorPresentation.title($0, in: self) } }
}

extension Finding {
    var superPackets: SuperPacketEvidence? { if case .superPackets(let e) = evidence { e } else { nil } }
    var pathMTU: PathMTUEvidence? { if case .pathMTU(let e) = evidence { e } else { nil } }
    var stalls: StallEvidence? { if case .stalls(let e) = evidence { e } else { nil } }
    var fairness: FairnessEvidence? { if case .fairness(let e) = evidence { e } else { nil } }
    var comparison: ForwarderComparison? { if case .forwarder(let c) = evidence { c } else { nil } }
}

let syn = TCPFlags.syn

@Suite("offload doctor: each finding appears when the capture shows it, and only then")
struct DoctorFindingTests {
    @Test("""
        super-packets acknowledged whole with the receiver's handshake timing: GRO (receiver side); with the \
        sender's: TSO over a veth (sender side); without a handshake: unknown; acknowledged inside: TSO; none: no finding
        """)
    func superPackets() throws {
        var gro = Trace(), tso = Trace(), plain = Trace(), vethTSO = Trace(), noHandshake = Trace()
        // Next to the receiver the server answers at once and the client a round trip later.
        gro.handshake(-0.01, serverTurn: 0.000_010, clientTurn: 0.000_400)
        vethTSO.handshake(-0.01, serverTurn: 0.000_400, clientTurn: 0.000_010)
        var s1: UInt32 = 1000, s2: UInt32 = 1000
        for i in 0..<30 {
            let t = Double(i) * 0.001
            // The same super-packets, each ACKed at its end, in all three.
            gro.tcp(t, seq: s1, payload: 14480)
            vethTSO.tcp(t, seq: s1, payload: 14480)
            noHandshake.tcp(t, seq: s1, payload: 14480)
            s1 &+= 14480
            gro.tcp(t + 0.0001, toServer: false, seq: 1, ack: s1)
            vethTSO.tcp(t + 0.0001, toServer: false, seq: 1, ack: s1)
            noHandshake.tcp(t + 0.0001, toServer: false, seq: 1, ack: s1)
            tso.tcp(t, seq: s2, payload: 14480)
            for k in 1...5 { tso.tcp(t + 0.0001 * Double(k), toServer: false, seq: 1, ack: s2 &+ UInt32(2896 * k)) }
            s2 &+= 14480
        }
        var s3: UInt32 = 1000
        plain.bulk(from: 0, seq: &s3, count: 200)
        let gd = try diagnose(gro)
        let g = try #require(gd.finding(.superPackets)?.superPackets)
        #expect(g.capturePoint == .afterMerge && g.acksAtEnd == 30 && g.acksInside == 0 && g.overMTU == 30 && g.mtu == 1500)
        #expect(g.handshake?.side == .receiver)
        // The sender's veth with TSO: the same ACKs on the ends, but the handshake says sender side.
        let v = try #require(try diagnose(vethTSO).finding(.superPackets)?.superPackets)
        #expect(v.capturePoint == .beforeSegmentation && v.acksAtEnd == 30 && v.handshake?.side == .sender, "\(v)")
        // ACKs on the ends and no handshake: the side is not known, and the doctor says so.
        let nd = try diagnose(noHandshake)
        let n = try #require(nd.finding(.superPackets)?.superPackets)
        #expect(n.capturePoint == .unknown && n.handshake == nil)
        #expect(nd.titles(nd.findings.filter { $0.kind == .superPackets }).first?.contains("unknown") == true)
        // The wording says so, and gives the command that restores the wire view.
        #expect(gd.titles(gd.findings.filter { $0.kind == .superPackets }).first?.contains("receiver side") == true)
        let gEvidence = gd.finding(.superPackets).map { DoctorPresentation.evidence($0, in: gd) } ?? []
        #expect(gEvidence.contains { $0.contains("offload segment --mtu 1500") })
        let t = try #require(try diagnose(tso).finding(.superPackets)?.superPackets)
        #expect(t.capturePoint == .beforeSegmentation && t.acksInside >= 10, "\(t)")
        #expect(try diagnose(plain).finding(.superPackets) == nil)
    }

    @Test("a 500 ms silence with data outstanding, ended by a retransmission, is a stall and a timeout")
    func stall() throws {
        var trace = Trace(), smooth = Trace()
        var seq: UInt32 = 1000
        trace.bulk(from: 0, seq: &seq, count: 100)
        trace.tcp(0.1, seq: seq, payload: 1448)  // lost: never acknowledged
        let lost = seq
        seq &+= 1448
        trace.tcp(0.6, seq: lost, payload: 1448)  // the retransmission timer fires
        trace.tcp(0.6005, toServer: false, seq: 1, ack: seq)
        trace.bulk(from: 0.601, seq: &seq, count: 100)
        let d = try diagnose(trace)
        let stall = try #require(d.finding(.stall))
        let stalls = try #require(stall.stalls)
        #expect(stall.severity == .warning && stalls.stalls.count == 1)
        #expect(stalls.longest.context.endedByRetransmission && !stalls.longest.context.lastedUntilCaptureEnd)
        #expect(DoctorPresentation.evidence(stall, in: d).contains { $0.contains("ended by a retransmission") })
        let flow = try #require(d.flows.first)
        #expect(flow.retransmissions.timeout == 1 && flow.retransmissions.fast == 0 && flow.stalls.count == 1)
        #expect(abs((flow.stalls.first?.milliseconds ?? 0) - 500) <= 5, "\(flow.stalls)")
        var s2: UInt32 = 1000
        smooth.bulk(from: 0, seq: &s2, count: 300)
        let calm = try diagnose(smooth)
        #expect(calm.finding(.stall) == nil && calm.finding(.retransmissions) == nil)
    }

    @Test("three duplicate ACKs then a retransmission is a fast retransmit, not a timeout")
    func fastRetransmit() throws {
        var trace = Trace()
        var seq: UInt32 = 1000
        trace.bulk(from: 0, seq: &seq, count: 50)
        let hole = seq
        for i in 0..<5 {
            trace.tcp(0.06 + Double(i) * 0.001, seq: seq, payload: 1448)
            seq &+= 1448
            if i > 0 { trace.tcp(0.0605 + Double(i) * 0.001, toServer: false, seq: 1, ack: hole) }  // dup ACKs
        }
        trace.tcp(0.066, seq: hole, payload: 1448)
        trace.tcp(0.067, toServer: false, seq: 1, ack: seq)
        let flow = try #require(try diagnose(trace).flows.first)
        #expect(flow.retransmissions.fast == 1 && flow.retransmissions.timeout == 0, "\(flow.retransmissions)")
        #expect(flow.stalls.isEmpty)
    }

    @Test("path MTU: working when the sender shrinks; a merging black hole when ICMP quotes packets it never sent; ignored")
    func pathMTU() throws {
        // Working: 1500-byte packets, one ICMP, then 1400-byte packets.
        var ok = Trace()
        var seq: UInt32 = 1000
        ok.bulk(from: 0, seq: &seq, count: 20, size: 1460)
        ok.fragmentationNeeded(0.021, mtu: 1400, quotedLength: 1500, seq: seq &- 1460)
        ok.bulk(from: 0.022, seq: &seq, count: 100, size: 1360)
        let working = try diagnose(ok)
        #expect(working.finding(.pmtuWorking) != nil && working.finding(.pmtuBlackHoleMerging) == nil)
        #expect(working.finding(.pmtuIgnored) == nil)
        #expect(working.finding(.pmtuWorking)?.pathMTU?.largestAfter == 1400)

        // Merging: the sender's packets fit (1400), the ICMP errors quote 7000-byte packets, again and again.
        var merged = Trace()
        seq = 1000
        for round in 0..<10 {
            let t = Double(round) * 0.2
            for i in 0..<5 { merged.tcp(t + Double(i) * 0.0001, seq: seq &+ UInt32(1360 * i), payload: 1360) }
            merged.fragmentationNeeded(t + 0.001, mtu: 1400, quotedLength: 6840, seq: seq)
        }
        let hole = try diagnose(merged)
        let finding = try #require(hole.finding(.pmtuBlackHoleMerging))
        #expect(finding.severity == .critical && hole.findings.first?.kind == .pmtuBlackHoleMerging)
        let evidence = try #require(finding.pathMTU)
        #expect(evidence.quotedLargest == 6840 && evidence.announcedMTU == 1400 && evidence.messages == 10)
        #expect(evidence.largestSent < evidence.quotedLargest)
        #expect(hole.finding(.pmtuWorking) == nil && hole.finding(.pmtuIgnored) == nil)

        // Ignored: the sender keeps sending 1500-byte packets after three ICMP errors.
        var ignored = Trace()
        seq = 1000
        for round in 0..<4 {
            ignored.bulk(from: Double(round) * 0.1, seq: &seq, count: 10, size: 1460)
            ignored.fragmentationNeeded(Double(round) * 0.1 + 0.011, mtu: 1400, quotedLength: 1500, seq: seq &- 1460)
        }
        let deaf = try diagnose(ignored)
        #expect(deaf.finding(.pmtuIgnored)?.severity == .critical)
        #expect((deaf.finding(.pmtuIgnored)?.pathMTU?.oversizeAfterMilliseconds ?? 0) > 100)
        #expect(deaf.finding(.pmtuWorking) == nil && deaf.finding(.pmtuBlackHoleMerging) == nil)
        // No ICMP at all: no path-MTU finding of any kind.
        var none = Trace()
        seq = 1000
        none.bulk(from: 0, seq: &seq, count: 100)
        #expect(try diagnose(none).kinds().isDisjoint(with: [.pmtuWorking, .pmtuIgnored, .pmtuBlackHoleMerging]))
    }

    @Test("four flows at 200/200/1/1: unfair, two starved; four equal flows: fair")
    func fairness() throws {
        var unfair = Trace(), fair = Trace()
        for (index, rate) in [200, 200, 1, 1].enumerated() {
            var seq: UInt32 = 1000
            // The same duration (1 s) for every flow, with packets spaced to give the rates.
            let count = max(60, rate * 3)
            unfair.bulk(from: 0, port: UInt16(40000 + index), seq: &seq, count: count, size: rate >= 200 ? 1448 : 4,
                        gap: 1.0 / Double(count))
            var s2: UInt32 = 1000
            fair.bulk(from: 0, port: UInt16(40000 + index), seq: &s2, count: 200, gap: 0.005)
        }
        let u = try diagnose(unfair)
        let finding = try #require(u.finding(.unfair)?.fairness)
        #expect(finding.starved == 2 && finding.flows.count == 4, "\(finding)")
        #expect((u.jainIndex ?? 1) < 0.6)
        let f = try diagnose(fair)
        #expect(f.finding(.unfair) == nil && f.finding(.fair) != nil && (f.jainIndex ?? 0) > 0.99)
    }

    @Test("two sides of a forwarder: merges, hold times and intact ACKs; an emitted ACK; dropped segments")
    func forwarder() throws {
        var lan = Trace(), wan = Trace(), emitting = Trace(), dropping = Trace()
        var seq: UInt32 = 1000
        var ack: UInt32 = 1
        for batch in 0..<20 {
            let t = Double(batch) * 0.01
            let start = seq
            for i in 0..<10 {
                lan.tcp(t + Double(i) * 0.0001, seq: seq, payload: 1448)
                seq &+= 1448
            }
            // Out 200 µs after the last segment came in, as one packet of 10 segments.
            wan.tcp(t + 0.0011, seq: start, payload: 14480)
            if batch != 7 { dropping.tcp(t + 0.0011, seq: start, payload: 14480) }
            // The server's ACK comes in on the WAN side and leaves on the LAN side unchanged.
            ack = seq
            wan.tcp(t + 0.002, toServer: false, seq: 1, ack: ack)
            lan.tcp(t + 0.0021, toServer: false, seq: 1, ack: ack)
            dropping.tcp(t + 0.002, toServer: false, seq: 1, ack: ack)
        }
        emitting = lan
        emitting.tcp(0.1555, toServer: false, seq: 1, ack: ack &- 100)  // an ACK that never came in
        let d = try diagnose(lan, wan)
        let c = try #require(d.forwarder.first)
        #expect(c.upstream == 0 && c.downstream == 1)
        #expect(c.merged == 20 && c.meanSegmentsPerPacket == 10 && c.maximumSegmentsPerPacket == 10)
        #expect(abs((c.holdMicroseconds["p50"] ?? 0) - 1100) < 2, "\(c.holdMicroseconds)")
        #expect(c.acksIn == 20 && c.acksOut == 20 && c.acksEmittedOrChanged == 0 && c.droppedSegments == 0)
        #expect(d.finding(.ackIntact) != nil && d.finding(.ackEmitted) == nil && d.finding(.forwarderDropped) == nil)
        #expect(!d.findings.contains { $0.severity != .info }, "no problem: \(d.titles(d.findings.filter { $0.severity != .info }))")

        // The same segments on both sides: passed through, nothing merged, nothing dropped.
        let through = try diagnose(lan, lan)
        #expect(through.forwarder.first?.merged == 0 && through.forwarder.first?.droppedSegments == 0)
        #expect(through.finding(.forwarderMerged)?.comparison?.merged == 0)
        let e = try diagnose(emitting, wan)
        #expect(e.finding(.ackEmitted)?.severity == .critical && e.forwarder.first?.acksEmittedOrChanged == 1)
        let x = try diagnose(lan, dropping)
        #expect(x.forwarder.first?.droppedSegments == 10 && x.finding(.forwarderDropped)?.severity == .warning)
        // The same missing super-packet answered by one ICMP error quoting its first segment: all ten
        // segments were refused as too big, none dropped.
        var refusing = lan
        let refusedStart: UInt32 = 1000 &+ UInt32(7 * 10 * 1448)
        refusing.fragmentationNeeded(0.0712, mtu: 1400, quotedLength: 1500, seq: refusedStart)
        let y = try diagnose(refusing, dropping)
        #expect(y.forwarder.first?.refusedWithICMP == 10 && y.forwarder.first?.droppedSegments == 0, "\(y.forwarder)")
        #expect(y.finding(.forwarderDropped) == nil)
    }
}

@Suite("offload doctor: every claim is about what the captures share, said once, in words that match the numbers")
struct DoctorTruthTests {
    /// A bulk flow on `port` from `start`, with its handshake.
    static func flow(_ trace: inout Trace, port: UInt16, start: Double = 0, count: Int = 100) {
        trace.handshake(start, port: port, serverTurn: 0.0002, clientTurn: 0.0002)
        var seq: UInt32 = 1000
        trace.bulk(from: start + 0.001, port: port, seq: &seq, count: count)
    }

    @Test("two captures with no connection in common: no forwarder comparison, a finding that says so")
    func noSharedFlows() throws {
        var a = Trace(), b = Trace()
        Self.flow(&a, port: 40000)
        Self.flow(&b, port: 41000)  // another connection entirely
        let d = try diagnose(a, b)
        #expect(d.forwarder.isEmpty)
        #expect(d.kinds().isDisjoint(with: [.ackIntact, .ackEmitted, .forwarderMerged, .forwarderDropped]), "\(d.kinds())")
        guard case .unmatched(let e)? = d.finding(.noSharedFlows)?.evidence else {
            Issue.record("no no-shared-flows finding: \(d.kinds())")
            return
        }
        #expect(e.connectionsFirst == 1 && e.connectionsSecond == 1 && !e.translatorMappingMissing)
        // An IPv4 capture beside an IPv6 one: the doctor asks for the translator's mapping.
        var v6 = Trace()
        v6.ipv6 = true
        Self.flow(&v6, port: 40000)
        let t = try diagnose(a, v6)
        #expect(t.forwarder.isEmpty && t.finding(.ackEmitted) == nil)
        guard case .unmatched(let f)? = t.finding(.noSharedFlows)?.evidence else {
            Issue.record("no no-shared-flows finding for IPv4 beside IPv6")
            return
        }
        #expect(f.translatorMappingMissing && f.familiesFirst == [4] && f.familiesSecond == [6])
        let words = t.finding(.noSharedFlows).map { DoctorPresentation.evidence($0, in: t) } ?? []
        #expect(words.contains { $0.contains("--pool6") })
        // A connection in both plus one only in the second: the comparison covers the shared one alone.
        var both = a
        Self.flow(&both, port: 41000)
        let m = try diagnose(a, both)
        let c = try #require(m.forwarder.first)
        #expect(c.sharedConnections == 1 && c.connectionsOnlyDownstream + c.connectionsOnlyUpstream == 1)
        #expect(c.dataPacketsIn == c.dataPacketsOut && c.acksIn == c.acksOut, "\(c)")
    }

    @Test("identical findings about several flows are one finding that lists them; counts agree in number")
    func grouped() throws {
        var trace = Trace()
        for port: UInt16 in [40000, 40001, 40002] {
            var seq: UInt32 = 1000
            trace.bulk(from: 0, port: port, seq: &seq, count: 40)
            trace.tcp(0.045, port: port, seq: 1000, payload: 1448)  // one retransmission each
        }
        let d = try diagnose(trace)
        let retransmissions = d.findings.filter { $0.kind == .retransmissions }
        #expect(retransmissions.count == 1 && retransmissions.first?.flows.count == 3, "\(d.titles(retransmissions))")
        let title = d.titles(retransmissions).first ?? ""
        #expect(title.hasPrefix("1 retransmission (") && title.contains("3 flows"), "\(title)")
        #expect(DoctorPresentation.evidence(retransmissions[0], in: d).first?.contains("40002") == true)
    }

    @Test("--json: evidence by name (no \"_0\" keys), queryable by field")
    func json() throws {
        var trace = Trace()
        var seq: UInt32 = 1000
        trace.bulk(from: 0, seq: &seq, count: 40)
        trace.tcp(0.045, seq: 1000, payload: 1448)
        let d = try diagnose(trace)
        let data = try DoctorPresentation.json(d)
        let text = String(decoding: data, as: UTF8.self)
        #expect(!text.contains("\"_0\""), "\(text.prefix(400))")
        let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let findings = try #require(root["findings"] as? [[String: Any]])
        let r = try #require(findings.first { $0["kind"] as? String == "retransmissions" })
        let evidence = try #require((r["evidence"] as? [String: Any])?["retransmissions"] as? [String: Any])
        #expect(evidence["total"] as? Int == 1 && evidence["dataPackets"] as? Int == 41)
        // It reads back.
        let back = try JSONDecoder().decode(Diagnosis.self, from: data)
        #expect(back.findings.map(\.evidence) == d.findings.map(\.evidence))
    }

    @Test("fairness is over the bytes each flow delivered in one interval, as the lab computes it")
    func fairnessOverOneInterval() throws {
        // Two flows at the same rate, one for a second, the other for its last tenth: over their own
        // lives they look equal, over the capture one got a tenth of the other.
        var trace = Trace()
        var s1: UInt32 = 1000, s2: UInt32 = 1000
        trace.bulk(from: 0, port: 40000, seq: &s1, count: 1000, gap: 0.001)
        trace.bulk(from: 0.9, port: 40001, seq: &s2, count: 100, gap: 0.001)
        let d = try diagnose(trace)
        let f = try #require(d.finding(.unfair)?.fairness, "\(d.kinds())")
        #expect(f.bytes == [1000 * 1448, 100 * 1448])
        #expect(abs(f.jainIndex - Fairness(shares: [1000, 100]).jainIndex) < 1e-9)
        // The lab's row over the same shares (goodput over one test) says the same.
        let row = LabRow(scenario: .forwarderGRO, name: "", family: 4, ingressMTU: 1500, egressMTU: 1500,
                         flows: f.goodputMbps.map { LabFlowResult(goodputMbps: $0, retransmits: 0, longestStallMilliseconds: 0,
                                                                  timelineMbps: []) },
                         totalGoodputMbps: 0, jainIndex: 0, retransmits: 0, longestStallMilliseconds: 0, intervalSeconds: 1)
        #expect(abs(row.fairness.jainIndex - f.jainIndex) < 1e-9 && row.fairness.isFair == false)
    }

    @Test("a forwarder that merged and refused its own packets: said so, with the ICMP errors counted as the flows count them")
    func refusedMerges() throws {
        var lan = Trace(), wan = Trace()
        Self.flow(&lan, port: 40000, count: 0)
        Self.flow(&wan, port: 40000, count: 0)
        var seq: UInt32 = 1000
        for round in 0..<10 {
            let t = 0.01 + Double(round) * 0.05
            // Five 1400-byte segments in; the forwarder merges them into 6840 bytes, too big: refused.
            for i in 0..<5 { lan.tcp(t + Double(i) * 0.0001, seq: seq &+ UInt32(1360 * i), payload: 1360) }
            lan.fragmentationNeeded(t + 0.001, mtu: 1400, quotedLength: 6840, seq: seq)
            // The sender resends the first one alone; it passes.
            lan.tcp(t + 0.01, seq: seq, payload: 1360)
            wan.tcp(t + 0.0101, seq: seq, payload: 1360)
            seq &+= 1360 * 5
        }
        let d = try diagnose(lan, wan)
        let c = try #require(d.forwarder.first)
        #expect(c.icmpErrors == 10 && c.icmpQuotedLargest == 6840 && c.refusedMerges, "\(c)")
        // The first segment of each refused merge was resent and passed; the four after it never
        // came out, and the error's quoted length (6840 bytes from its sequence number) covers
        // them: refused, not dropped (nine rounds of four: the last round may still have been in
        // the forwarder when the capture ended).
        #expect(c.droppedSegments == 0 && c.refusedWithICMP == 36, "\(c)")
        let merged = try #require(d.finding(.forwarderMerged))
        #expect(d.titles([merged]).first?.contains("too big for its egress") == true, "\(d.titles([merged]))")
        // The per-flow path-MTU finding counts the same messages.
        let perFlow = d.findings.compactMap(\.pathMTU).map(\.messages).reduce(0, +)
        #expect(perFlow == c.icmpErrors)
    }

    @Test("IPv6 flows have no DF line; the HTML legend stays inside the chart beyond four flows")
    func cosmetics() throws {
        var v6 = Trace()
        v6.ipv6 = true
        var seq: UInt32 = 1000
        v6.bulk(from: 0, seq: &seq, count: 60)
        let d = try diagnose(v6)
        let flows = try #require(d.finding(.flows))
        let lines = DoctorPresentation.evidence(flows, in: d)
        #expect(!lines.isEmpty && !lines.contains { $0.contains("DF on") }, "\(lines)")
        var chart = SVGChart(title: "t", xLabel: "x", yLabel: "y")
        for i in 0..<10 {
            chart.series.append(SVGChart.Series(name: "192.0.2.10:\(40000 + i) → 198.51.100.20:443", points: [(0, 1), (1, 2)]))
        }
        let svg = chart.render()
        let xs = svg.split(separator: "<g class=\"legend\"><rect x=\"").dropFirst().compactMap { Double($0.prefix { $0 != "\"" }) }
        #expect(xs.count == 10 && xs.allSatisfy { $0 >= 0 && $0 < Double(chart.width) }, "\(xs)")
    }
}

