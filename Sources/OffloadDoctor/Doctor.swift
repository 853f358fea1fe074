import OffloadWire
import Foundation
import OffloadCapture
import OffloadReport

/// What the doctor knows about one capture file.
public struct CaptureFacts: Codable, Sendable, Hashable {
    /// The file.
    public var path: String
    /// Records read.
    public var records: Int
    /// Records the doctor read (TCP, ICMP path-MTU).
    public var analyzed: Int
    /// Records that are something else, or whose headers do not parse.
    public var skipped: Int
    /// Records cut short by the snap length.
    public var snapped: Int
    /// Why reading stopped early, if it did.
    public var readError: String?
    /// The link MTU used for "larger than the MTU".
    public var mtu: Int
    /// Whether ``mtu`` was inferred from the frames (else given).
    public var mtuInferred: Bool
    /// Seconds from the first to the last packet.
    public var durationSeconds: Double
}

/// What a forwarder between two capture points did, matched by flow and sequence.
public struct ForwarderComparison: Codable, Sendable, Hashable {
    /// The capture data enters the forwarder by, and the one it leaves by.
    public var upstream: Int, downstream: Int
    /// TCP connections seen in both captures: everything below is about these alone.
    public var sharedConnections = 0
    /// Connections seen only upstream, and only downstream (left out).
    public var connectionsOnlyUpstream = 0, connectionsOnlyDownstream = 0
    /// Data packets on each side (flows seen on both).
    public var dataPacketsIn = 0, dataPacketsOut = 0
    /// The largest data packet in (IP length).
    public var largestPacketIn = 0
    /// ICMP path-MTU errors about these flows seen going back to the senders, and the largest
    /// packet they quote (IP length): larger than any packet in means the forwarder merged them.
    public var icmpErrors = 0, icmpQuotedLargest = 0
    /// Packets out built from more than one packet in.
    public var merged = 0
    /// Mean and largest packets-in per packet out, over packets out that match.
    public var meanSegmentsPerPacket = 0.0, maximumSegmentsPerPacket = 0
    /// Packets out that are a piece of a larger packet in.
    public var split = 0
    /// Data segments in that never came out, with no ICMP error about them (and their bytes).
    public var droppedSegments = 0, droppedBytes = 0
    /// Data segments in that never came out and that an ICMP path-MTU error quoted, or that followed a
    /// quoted one back to back (one error answers a whole refused super-packet and quotes its first
    /// segment): refused as too big.
    public var refusedWithICMP = 0
    /// How long data waited in the forwarder, first segment in to packet out, microseconds:
    /// median, 90th and 99th percentile, largest.
    public var holdMicroseconds: [String: Double] = [:]
    /// No merged packet came out, and ICMP errors quote packets larger than any that came in: the
    /// forwarder merged segments and then refused its own merged packets (LRO behind a smaller MTU).
    public var refusedMerges: Bool { merged == 0 && icmpErrors > 0 && icmpQuotedLargest > largestPacketIn }
    /// Pure ACKs entering (on the downstream side) and leaving (upstream side).
    public var acksIn = 0, acksOut = 0
    /// ACKs that left with no identical ACK coming in: emitted or changed by the forwarder.
    public var acksEmittedOrChanged = 0
    /// ACKs that came in and never left.
    public var acksSwallowed = 0
    /// Packet numbers of the first such ACKs, in the upstream capture.
    public var emittedExamples: [Int] = []
}

/// Everything the doctor worked out.
public struct Diagnosis: Codable, Sendable {
    /// The captures, in the order given.
    public var captures: [CaptureFacts]
    /// Every data direction in every capture.
    public var flows: [FlowAnalysis]
    /// Jain's index over the bulk flows of the first capture, when there are two or more.
    public var jainIndex: Double?
    /// The forwarder between consecutive captures, when several were given.
    public var forwarder: [ForwarderComparison]
    /// The findings, most important first.
    public var findings: [Finding]
}

/// Options for ``Doctor/diagnose(paths:options:)``.
public struct DoctorOptions: Sendable {
    /// The link MTU; nil infers it from the frames.
    public var mtu: Int?
    /// No new data for this long, with data outstanding, is a stall (seconds).
    public var stallThreshold = 0.2
    /// Flows with fewer data packets are left out of fairness (control connections).
    public var bulkFlowMinimumPackets = 50
    /// For captures on both sides of an IPv4/IPv6 translator: the IPv4 address an IPv6 address
    /// stands for (its RFC 6052 prefix and EAM table), so that a flow is followed across the
    /// translator. nil: addresses are compared as they are.
    public var ipv4ForIPv6: (@Sendable (IPv6Address) -> IPv4Address?)?

    /// The defaults.
    public init() {}
}

/// Reads captures and says what offloads (and the network) did to the TCP flows in them.
public enum Doctor {
    /// Diagnoses one capture, or several taken at different points (consecutive files are
    /// compared as the two sides of a forwarder).
    public static func diagnose(paths: [String], options: DoctorOptions = DoctorOptions()) throws(CaptureError)
        -> Diagnosis
    {
        var summaries: [CaptureSummary] = []
        for (index, path) in paths.enumerated() { summaries.append(try CaptureSummary(path: path, index: index)) }
        var facts: [CaptureFacts] = []
        var flows: [FlowAnalysis] = []
        var findings: [Finding] = []
        var pointFindings: [Finding] = []
        for (index, summary) in summaries.enumerated() {
            let times = summary.packets.map(\.time)
            let start = times.min() ?? 0, end = times.max() ?? 0
            let (mtu, inferred) = options.mtu.map { ($0, false) } ?? (inferMTU(summary.packets), true)
            facts.append(CaptureFacts(path: summary.path, records: summary.records, analyzed: summary.packets.count,
                                      skipped: summary.skipped, snapped: summary.snapped, readError: summary.readError, mtu: mtu,
                                      mtuInferred: inferred, durationSeconds: end - start))
            let analyzed = FlowAnalyzer(stallThreshold: options.stallThreshold, mtu: mtu)
                .analyze(summary.packets, capture: index, start: start, end: end)
            flows += analyzed
            pointFindings += capturePoint(summary.packets, flows: analyzed, capture: index, mtu: mtu, inferred: inferred)
        }
        for flow in flows { findings += flowFindings(flow) }
        // Fairness over the first capture's bulk flows: the bytes each delivered (acknowledged by its
        // receiver; the bytes sent when the capture holds no ACKs) over the capture, one interval for
        // all. That is the lab's definition (iperf3's receivers over the test), over the same traffic.
        let bulk = flows.filter { $0.capture == 0 && $0.dataPackets >= options.bulkFlowMinimumPackets }
        var jain: Double?
        if bulk.count >= 2 {
            let interval = max((bulk.map(\.lastTime).max() ?? 0) - (bulk.map(\.firstTime).min() ?? 0), 1e-6)
            let delivered = bulk.map { $0.acknowledgedBytes ?? $0.bytes }
            let fairness = Fairness(shares: delivered.map(Double.init))
            jain = fairness.jainIndex
            let evidence = Finding.FairnessEvidence(
                flows: bulk.map(\.flow), goodputMbps: delivered.map { Double($0) * 8 / interval / 1e6 },
                jainIndex: fairness.jainIndex, starved: fairness.starved, bytes: delivered,
                intervalSeconds: interval)
            findings.append(Finding(severity: fairness.isFair ? .info : .warning, kind: fairness.isFair ? .fair : .unfair,
                                    evidence: .fairness(evidence), capture: 0, flow: nil))
        }
        var comparisons: [ForwarderComparison] = []
        if summaries.count >= 2 {
            for i in 0..<(summaries.count - 1) {
                let c = compare(summaries[i].packets, summaries[i + 1].packets, first: i, second: i + 1,
                                ipv4ForIPv6: options.ipv4ForIPv6)
                switch c {
                case .compared(let c):
                    comparisons.append(c)
                    findings += forwarderFindings(c)
                case .unmatched(let e):
                    findings.append(Finding(severity: .warning, kind: .noSharedFlows, evidence: .unmatched(e),
                                            capture: i + 1, flow: nil))
                case .empty:
                    break
                }
            }
        }
        findings += pointFindings
        // One summary per capture (the flows themselves are in the diagnosis).
        for capture in paths.indices {
            let count = flows.filter { $0.capture == capture }.count
            guard count > 0 else { continue }
            findings.append(Finding(severity: .info, kind: .flows, evidence: .flows(count), capture: capture,
                                    flow: nil))
        }
        findings = grouped(findings).enumerated().sorted { ($0.element.severity, $0.offset) < ($1.element.severity, $1.offset) }
            .map(\.element)
        return Diagnosis(captures: facts, flows: flows, jainIndex: jain, forwarder: comparisons, findings: findings)
    }

    /// Findings of one kind with the very same evidence about several flows of a capture, merged into
    /// one that lists the flows (in the order first seen).
    static func grouped(_ findings: [Finding]) -> [Finding] {
        struct Key: Hashable { var severity: Finding.Severity, kind: Finding.Kind, evidence: Finding.Evidence, capture: Int? }
        var out: [Finding] = []
        var position: [Key: Int] = [:]
        for f in findings {
            // Only per-flow findings group; the evidence of the others names what it is about.
            guard !f.flows.isEmpty else {
                out.append(f)
                continue
            }
            let key = Key(severity: f.severity, kind: f.kind, evidence: f.evidence, capture: f.capture)
            if let i = position[key] {
                out[i].flows += f.flows
            } else {
                position[key] = out.count
                out.append(f)
            }
        }
        return out
    }

    /// The link MTU the frames suggest: the most common size of full data packets when it is a
    /// jumbo size, else 1500 (a capture taken after PMTUD shrank the packets still had 1500 links).
    static func inferMTU(_ packets: [PacketSummary]) -> Int {
        var counts: [Int: Int] = [:]
        for p in packets where (p.tcp?.payloadLength ?? 0) > 0 && p.ipLength <= 9216 { counts[p.ipLength, default: 0] += 1 }
        guard let (mode, count) = counts.max(by: { ($0.value, $0.key) < ($1.value, $1.key) }) else { return 1500 }
        // A jumbo MTU needs most data packets at that size; scattered large ones are super-packets.
        let total = counts.values.reduce(0, +)
        return mode > 1500 && count >= 20 && count * 2 >= total ? mode : 1500
    }

    /// Where the capture was taken, from the super-packets in it and the ACKs around them.
    static func capturePoint(_ packets: [PacketSummary], flows: [FlowAnalysis], capture: Int, mtu: Int, inferred: Bool)
        -> [Finding]
    {
        var findings: [Finding] = []
        for flow in flows where flow.overMTU > 0 {
            // Super-packet ranges of this direction, and the peer's ACKs against them.
            var ranges: [(start: UInt32, end: UInt32)] = []
            var aligned = 0, inside = 0
            var outbound = 0, inbound = 0
            var firstNumber: Int?
            for p in packets {
                guard let t = p.tcp else { continue }
                if t.flow == flow.key, p.ipLength > mtu, t.payloadLength > 0 {
                    ranges.append((t.sequence, t.sequence &+ UInt32(truncatingIfNeeded: t.payloadLength)))
                    firstNumber = firstNumber ?? p.number
                    if p.direction == .outbound { outbound += 1 } else if p.direction == .inbound { inbound += 1 }
                } else if t.flow == flow.key.reversed, t.flags.contains(.ack) {
                    for r in ranges.suffix(64).reversed() where seqGreater(t.acknowledgment, r.start)
                        && !seqGreater(t.acknowledgment, r.end)
                    {
                        if t.acknowledgment == r.end { aligned += 1 } else { inside += 1 }
                        break
                    }
                }
            }
            let share = aligned + inside > 0 ? Double(aligned) / Double(aligned + inside) : -1
            let handshake = handshakeTiming(packets, dataDirection: flow.key)
            let acksInside = aligned + inside >= 10 && share <= 0.7
            // ACKs inside super-packets: the receiver got them in pieces, so they were split after
            // this point. ACKs on their ends fit the receiver's GRO and also a sender's TSO over a
            // veth (handed over whole): only the handshake tells those apart.
            // A direction the capture records outweighs both: sent by this host is TSO/GSO's input,
            // received is what GRO/LRO (or the path) merged.
            let recorded: PacketDirection? = outbound > 9 * inbound && outbound > 0 ? .outbound
                : inbound > 9 * outbound && inbound > 0 ? .inbound : nil
            let point: Finding.CapturePoint = switch (recorded, acksInside, handshake?.side ?? .unknown) {
            case (.outbound?, _, _): .beforeSegmentation
            case (.inbound?, _, _): .afterMerge
            case (nil, true, .receiver): .unknown
            case (nil, true, _), (nil, false, .sender): .beforeSegmentation
            case (nil, false, .receiver): aligned + inside == 0 || share >= 0.9 ? .afterMerge : .unknown
            case (nil, false, .unknown): .unknown
            }
            let evidence = Finding.SuperPacketEvidence(
                overMTU: flow.overMTU, dataPackets: flow.dataPackets, mtu: mtu, mtuInferred: inferred,
                largest: flow.largestPacket, firstPacket: firstNumber ?? 0, acksAtEnd: aligned, acksInside: inside,
                handshake: handshake, recordedDirection: recorded, capturePoint: point)
            findings.append(Finding(severity: .info, kind: .superPackets, evidence: .superPackets(evidence),
                                    capture: capture, flow: flow.flow))
        }
        return findings
    }

    /// The handshake of the connection a data direction belongs to, timed at this capture point:
    /// SYN, SYN-ACK and the first ACK after it. Nil when the capture does not hold all three.
    static func handshakeTiming(_ packets: [PacketSummary], dataDirection key: FlowKey) -> Finding.HandshakeTiming? {
        var synTime: Double?, synAckTime: Double?, ackTime: Double?
        var clientIsSender = true
        for p in packets {
            guard let t = p.tcp, t.flow == key || t.flow == key.reversed else { continue }
            if t.flags.contains(.syn) && !t.flags.contains(.ack) {
                synTime = p.time
                synAckTime = nil
                ackTime = nil
                clientIsSender = t.flow == key
            } else if t.flags.contains(.syn), synTime != nil, (t.flow == key) != clientIsSender {
                synAckTime = p.time
            } else if synAckTime != nil, t.flags.contains(.ack), (t.flow == key) == clientIsSender {
                ackTime = p.time  // the first ACK after the SYN-ACK answers it
                break
            }
        }
        guard let syn = synTime, let synAck = synAckTime, let ack = ackTime else { return nil }
        // The server's turnaround is SYN → SYN-ACK, the client's SYN-ACK → ACK.
        let server = (synAck - syn) * 1e6, client = (ack - synAck) * 1e6
        return clientIsSender ? Finding.HandshakeTiming(senderTurnaroundMicroseconds: client, receiverTurnaroundMicroseconds: server)
            : Finding.HandshakeTiming(senderTurnaroundMicroseconds: server, receiverTurnaroundMicroseconds: client)
    }

    /// Path-MTU, stall and retransmission findings for one flow.
    static func flowFindings(_ flow: FlowAnalysis) -> [Finding] {
        var findings: [Finding] = []
        func finding(_ severity: Finding.Severity, _ kind: Finding.Kind, _ evidence: Finding.Evidence) -> Finding {
            Finding(severity: severity, kind: kind, evidence: evidence, capture: flow.capture, flow: flow.flow)
        }
        if let first = flow.pathMTUMessages.first {
            let quoted = flow.pathMTUMessages.map(\.quotedLength)
            let evidence = Finding.PathMTUEvidence(
                messages: flow.pathMTUMessages.count, first: first,
                announcedMTU: flow.pathMTUMessages.map(\.mtu).min() ?? first.mtu,
                quotedSmallest: quoted.min()!, quotedLargest: quoted.max()!, largestAfter: flow.largestAfterPathMTU,
                largestSent: flow.largestPacket,
                oversizeAfterMilliseconds: flow.oversizeAfterPathMTUSeconds.map { Int(($0 * 1000).rounded()) },
                stalls: flow.stalls.count, goodputMbps: flow.goodputMbps)
            if evidence.quotedLargest > evidence.largestSent && evidence.quotedLargest > evidence.announcedMTU {
                // The quoted packets are larger than anything the sender sent: merged on the path.
                findings.append(finding(.critical, .pmtuBlackHoleMerging, .pathMTU(evidence)))
            } else if let late = flow.oversizeAfterPathMTUSeconds, late > 0.1, evidence.messages >= 3 {
                findings.append(finding(.critical, .pmtuIgnored, .pathMTU(evidence)))
            } else {
                findings.append(finding(.info, .pmtuWorking, .pathMTU(evidence)))
            }
        }
        if let longest = flow.stalls.max(by: { $0.milliseconds < $1.milliseconds }) {
            findings.append(finding(.warning, .stall, .stalls(Finding.StallEvidence(stalls: flow.stalls, longest: longest))))
        }
        let r = flow.retransmissions
        if r.total > 0 {
            let share = Double(r.total) / Double(max(flow.dataPackets, 1))
            findings.append(finding(share > 0.01 || r.timeout > 0 ? .warning : .info, .retransmissions,
                                    .retransmissions(Finding.RetransmissionEvidence(r, dataPackets: flow.dataPackets))))
        }
        return findings
    }

    static func forwarderFindings(_ c: ForwarderComparison) -> [Finding] {
        var findings: [Finding] = []
        if c.acksEmittedOrChanged > 0 {
            findings.append(Finding(severity: .critical, kind: .ackEmitted, evidence: .forwarder(c), capture: c.upstream,
                                    flow: nil))
        } else if c.acksOut > 0 {
            findings.append(Finding(severity: .info, kind: .ackIntact, evidence: .forwarder(c), capture: c.upstream,
                                    flow: nil))
        }
        if c.droppedSegments > 0 {
            // A handful in a bulk transfer is a queue overflowing now and then; more is a problem.
            let share = Double(c.droppedSegments) / Double(max(c.dataPacketsIn, 1))
            findings.append(Finding(severity: share > 0.001 ? .warning : .info, kind: .forwarderDropped,
                                    evidence: .forwarder(c), capture: c.downstream, flow: nil))
        }
        findings.append(Finding(severity: .info, kind: .forwarderMerged, evidence: .forwarder(c), capture: c.downstream,
                                flow: nil))
        return findings
    }

    /// What comparing two captures gave.
    enum ComparisonResult {
        /// They share connections: what the forwarder between them did to those.
        case compared(ForwarderComparison)
        /// They share none.
        case unmatched(Finding.UnmatchedEvidence)
        /// Neither holds a TCP connection.
        case empty
    }

    /// Matches two captures by flow and sequence, over the TCP connections seen in both (any packet
    /// of the connection, either way, so that a connection whose data all vanished still counts).
    /// With `ipv4ForIPv6`, IPv6 addresses that stand for IPv4 ones are compared as those (the two
    /// sides of a translator).
    static func compare(_ a: [PacketSummary], _ b: [PacketSummary], first: Int, second: Int,
                        ipv4ForIPv6: (@Sendable (IPv6Address) -> IPv4Address?)? = nil) -> ComparisonResult {
        struct Segment { var start: UInt32, length: Int, ipLength: Int, time: Double, number: Int, covered = false }
        /// A flow in the terms both captures share.
        func common(_ key: FlowKey) -> FlowKey {
            guard let ipv4ForIPv6 else { return key }
            var k = key
            if case .v6(let s) = k.source, let v4 = ipv4ForIPv6(s) { k.source = .v4(v4) }
            if case .v6(let d) = k.destination, let v4 = ipv4ForIPv6(d) { k.destination = .v4(v4) }
            if k.transport == .icmpv6 { k.transport = .icmp }
            return k
        }
        func connection(_ key: FlowKey) -> FlowKey { min(key, key.reversed) }
        func connections(_ packets: [PacketSummary]) -> Set<FlowKey> {
            Set(packets.compactMap { $0.tcp.map { connection(common($0.flow)) } })
        }
        let connectionsA = connections(a), connectionsB = connections(b)
        guard !connectionsA.isEmpty || !connectionsB.isEmpty else { return .empty }
        let sharedConnections = connectionsA.intersection(connectionsB)
        guard !sharedConnections.isEmpty else {
            func families(_ set: Set<FlowKey>) -> [Int] {
                Set(set.map { if case .v4 = $0.source { 4 } else { 6 } }).sorted()
            }
            let fa = families(connectionsA), fb = families(connectionsB)
            let disjoint = !fa.isEmpty && !fb.isEmpty && Set(fa).isDisjoint(with: fb)
            return .unmatched(Finding.UnmatchedEvidence(
                first: first, second: second, connectionsFirst: connectionsA.count, connectionsSecond: connectionsB.count,
                familiesFirst: fa, familiesSecond: fb, translatorMappingMissing: disjoint && ipv4ForIPv6 == nil,
                translatorMappingGiven: ipv4ForIPv6 != nil))
        }
        func dataByFlow(_ packets: [PacketSummary]) -> [FlowKey: [Segment]] {
            var out: [FlowKey: [Segment]] = [:]
            for p in packets {
                guard let t = p.tcp, t.payloadLength > 0, sharedConnections.contains(connection(common(t.flow))) else {
                    continue
                }
                out[common(t.flow), default: []].append(Segment(start: t.sequence, length: t.payloadLength,
                                                                ipLength: p.ipLength, time: p.time, number: p.number))
            }
            return out
        }
        let da = dataByFlow(a), db = dataByFlow(b)
        let shared = Set(da.keys).intersection(db.keys)
        // Upstream: where a flow's first data shows up first, by majority.
        var votes = 0
        for key in shared {
            let s = da[key]![0].start
            if let tb = db[key]!.first(where: { $0.start == s })?.time { votes += da[key]![0].time <= tb ? 1 : -1 }
        }
        // A shared connection's data seen on one side only still counts (all of it dropped, say).
        let upstreamIsFirst = votes >= 0
        let (up, down) = upstreamIsFirst ? (da, db) : (db, da)
        var c = ForwarderComparison(upstream: upstreamIsFirst ? first : second, downstream: upstreamIsFirst ? second : first)
        c.sharedConnections = sharedConnections.count
        c.connectionsOnlyUpstream = (upstreamIsFirst ? connectionsA : connectionsB).subtracting(sharedConnections).count
        c.connectionsOnlyDownstream = (upstreamIsFirst ? connectionsB : connectionsA).subtracting(sharedConnections).count
        // The ICMP path-MTU errors about these flows, seen going back to the senders (upstream):
        // the same messages the per-flow path-MTU findings count.
        for p in upstreamIsFirst ? a : b {
            guard let m = p.pathMTU, let quoted = m.quotedFlow, up[common(quoted)] != nil else { continue }
            c.icmpErrors += 1
            c.icmpQuotedLargest = max(c.icmpQuotedLargest, m.quotedLength)
        }
        // Segments an ICMP error quoted: refused as too big, on purpose.
        let refused = Set((a + b).compactMap { $0.pathMTU?.quotedSequence })
        // What each error refused: from the quoted sequence number, the quoted packet's length less
        // its headers (at least 40 bytes of them), per flow. A merged packet refused whole is
        // answered once, quoting its start; its length says how far it reached.
        var refusedRanges: [FlowKey: [(start: UInt32, end: UInt32)]] = [:]
        for p in a + b {
            guard let m = p.pathMTU, let flow = m.quotedFlow, let sequence = m.quotedSequence else { continue }
            refusedRanges[common(flow), default: []].append((sequence, sequence &+ UInt32(max(m.quotedLength - 40, 1))))
        }
        func inRefusedPacket(_ key: FlowKey, _ start: UInt32) -> Bool {
            refusedRanges[key]?.contains { !seqGreater($0.start, start) && seqGreater($0.end, start) } ?? false
        }
        var holds: [Double] = []
        var segmentsTotal = 0, matchedOut = 0
        for key in Set(up.keys).union(down.keys) {
            guard let ins = up[key], !ins.isEmpty else { continue }
            let isn = ins[0].start
            // Upstream segments sorted by relative start; the first copy of each start is kept.
            var sorted: [Segment] = []
            var seen = Set<UInt32>()
            for s in ins where seen.insert(s.start).inserted { sorted.append(s) }
            sorted.sort { ($0.start &- isn) < ($1.start &- isn) }
            let starts = sorted.map { Int($0.start &- isn) }
            c.dataPacketsIn += ins.count
            c.largestPacketIn = max(c.largestPacketIn, ins.map(\.ipLength).max() ?? 0)
            let outs = down[key] ?? []
            c.dataPacketsOut += outs.count
            var longestHold = 0.0
            for o in outs {
                var s = Int(o.start &- isn)
                let end = s + o.length
                var count = 0
                var firstIn: Double?
                while s < end {
                    // The upstream segment containing s.
                    var lo = 0, hi = starts.count
                    while lo < hi { let mid = (lo + hi) / 2; if starts[mid] <= s { lo = mid + 1 } else { hi = mid } }
                    let i = lo - 1
                    guard i >= 0, starts[i] + sorted[i].length > s else { break }
                    sorted[i].covered = true
                    firstIn = min(firstIn ?? sorted[i].time, sorted[i].time)
                    if starts[i] < s || starts[i] + sorted[i].length > end { c.split += count == 0 ? 1 : 0 }
                    count += 1
                    s = starts[i] + sorted[i].length
                }
                if count > 0 {
                    matchedOut += 1
                    segmentsTotal += count
                    c.maximumSegmentsPerPacket = max(c.maximumSegmentsPerPacket, count)
                    if count > 1 { c.merged += 1 }
                    if let f = firstIn {
                        holds.append(max(0, o.time - f) * 1e6)
                        longestHold = max(longestHold, o.time - f)
                    }
                }
            }
            let lastOut = outs.map(\.time).max() ?? 0
            // Segments that came in shortly before the downstream capture stopped may still have been
            // in the forwarder (or the queue in front of it): only those older than the longest hold
            // seen in this flow, plus 10 ms, count as lost.
            let inFlight = longestHold + 0.01
            // One ICMP error answers a whole refused super-packet and quotes its first segment: the
            // missing segments that follow a quoted one back to back (within the forwarder's hold
            // time) were refused with it.
            var refusedRun: (end: UInt32, time: Double)?
            for s in sorted {
                if s.covered {
                    refusedRun = nil
                    continue
                }
                if refused.contains(s.start) || inRefusedPacket(key, s.start) {
                    refusedRun = (s.start &+ UInt32(s.length), s.time)
                } else if let run = refusedRun, run.end == s.start, s.time - run.time <= 0.05 {
                    refusedRun = (s.start &+ UInt32(s.length), run.time)
                } else {
                    refusedRun = nil
                }
                guard s.time < lastOut - inFlight else { continue }
                if refusedRun != nil {
                    c.refusedWithICMP += 1
                } else {
                    c.droppedSegments += 1
                    c.droppedBytes += s.length
                }
            }
        }
        c.meanSegmentsPerPacket = matchedOut > 0 ? Double(segmentsTotal) / Double(matchedOut) : 0
        if !holds.isEmpty {
            holds.sort()
            func q(_ f: Double) -> Double { holds[min(holds.count - 1, Int(Double(holds.count - 1) * f))] }
            c.holdMicroseconds = ["p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": holds.last!]
        }
        // ACKs travel the other way: in on the downstream side, out on the upstream side.
        struct AckKey: Hashable { var flow: FlowKey, seq: UInt32, ack: UInt32, window: UInt16, flags: UInt16 }
        func acks(_ packets: [PacketSummary]) -> [(AckKey, Int, Double)] {
            packets.compactMap { p in
                guard let t = p.tcp, t.payloadLength == 0, t.flags.contains(.ack),
                    t.flags.intersection([.syn, .fin, .rst]).isEmpty
                else { return nil }
                return (AckKey(flow: common(t.flow), seq: t.sequence, ack: t.acknowledgment, window: t.window,
                               flags: t.flags.rawValue), p.number, p.time)
            }
        }
        let (upPackets, downPackets) = upstreamIsFirst ? (a, b) : (b, a)
        // Only ACKs of connections that carry data through this forwarder.
        let dataFlows = Set(up.keys).union(down.keys)
        // Only while both captures ran: one capture starting later or ending earlier is not the
        // forwarder inventing or eating ACKs. An ACK may spend up to `slack` inside the forwarder.
        let slack = 0.1
        // What a capture loses when it stops (its last, unread ring-buffer blocks) spans a few ms.
        let endSlack = 0.02
        let from = max(downPackets.first?.time ?? 0, upPackets.first?.time ?? 0)
        let to = min(downPackets.last?.time ?? 0, upPackets.last?.time ?? 0)
        let ackIn = acks(downPackets).filter { dataFlows.contains($0.0.flow.reversed) }
        let ackOut = acks(upPackets).filter { dataFlows.contains($0.0.flow.reversed) }
        c.acksIn = ackIn.count
        c.acksOut = ackOut.count
        // Every ACK out (late enough that its way in was captured, and early enough that the
        // capture on its way in had not stopped reading: tcpdump loses what is still in its ring
        // buffer when it stops, uncounted, and that ring is not in time order across CPUs) must
        // have come in.
        var available: [AckKey: Int] = [:]
        for (k, _, _) in ackIn { available[k, default: 0] += 1 }
        for (k, number, time) in ackOut {
            if let n = available[k], n > 0 { available[k] = n - 1; continue }
            guard time >= from + slack && time <= to - endSlack else { continue }
            c.acksEmittedOrChanged += 1
            if c.emittedExamples.count < 5 { c.emittedExamples.append(number) }
        }
        // Every ACK in (early enough that its way out was captured) must have left.
        var left: [AckKey: Int] = [:]
        for (k, _, _) in ackOut { left[k, default: 0] += 1 }
        for (k, _, time) in ackIn {
            if let n = left[k], n > 0 { left[k] = n - 1; continue }
            if time >= from && time <= to - slack { c.acksSwallowed += 1 }
        }
        return .compared(c)
    }
}


func seconds(_ t: Double) -> String {
    let s = (t * 1000).rounded() / 1000
    return "\(s) s"
}
