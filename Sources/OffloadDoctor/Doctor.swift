import OffloadWire
import Foundation
import OffloadCapture
import OffloadReport

/// What the doctor found, in plain words, with its evidence.
public struct Finding: Codable, Sendable, Hashable {
    /// How much it matters.
    public enum Severity: String, Codable, Sendable, Comparable {
        case critical, warning, info
        var rank: Int { self == .critical ? 0 : self == .warning ? 1 : 2 }
        /// Most severe first.
        public static func < (a: Self, b: Self) -> Bool { a.rank < b.rank }
    }

    /// How much it matters.
    public var severity: Severity
    /// A stable name for machines: `pmtu-black-hole-merging`, `pmtu-ignored`, `pmtu-working`, `ack-emitted`,
    /// `stall`, `forwarder-dropped`, `unfair`, `retransmissions`, `super-packets`, `forwarder-merged`, `flows`.
    public var kind: String
    /// One sentence.
    public var title: String
    /// Evidence: flows, packet numbers, times, counts.
    public var evidence: [String]
    /// The capture it is about (index into ``Diagnosis/captures``), if one.
    public var capture: Int?
    /// The flow it is about, if one.
    public var flow: String?
}

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
    /// Data packets on each side (flows seen on both).
    public var dataPacketsIn = 0, dataPacketsOut = 0
    /// Packets out built from more than one packet in.
    public var merged = 0
    /// Mean and largest packets-in per packet out, over packets out that match.
    public var meanSegmentsPerPacket = 0.0, maximumSegmentsPerPacket = 0
    /// Packets out that are a piece of a larger packet in.
    public var split = 0
    /// Data segments in that never came out, with no ICMP error about them (and their bytes).
    public var droppedSegments = 0, droppedBytes = 0
    /// Data segments in that never came out and that an ICMP path-MTU error quoted: refused as too big.
    public var refusedWithICMP = 0
    /// How long data waited in the forwarder, first segment in to packet out, microseconds:
    /// median, 90th and 99th percentile, largest.
    public var holdMicroseconds: [String: Double] = [:]
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
            pointFindings += capturePoint(summary.packets, flows: analyzed, capture: index, mtu: mtu, inferred: inferred,
                                          named: paths.count > 1)
        }
        for flow in flows { findings += flowFindings(flow, paths: paths) }
        // Fairness over the first capture's bulk flows.
        let bulk = flows.filter { $0.capture == 0 && $0.dataPackets >= options.bulkFlowMinimumPackets }
        var jain: Double?
        if bulk.count >= 2 {
            let rates = bulk.map(\.goodputMbps)
            let j = jainIndex(rates)
            jain = j
            let fair = rates.reduce(0, +) / Double(rates.count)
            let starved = bulk.filter { $0.goodputMbps < 0.1 * fair }
            var evidence: [String] = bulk.map { (f: FlowAnalysis) -> String in
                f.flow + ": " + String(format: "%.1f Mbit/s", f.goodputMbps)
            }
            let floor = 1 / Double(bulk.count)
            evidence.append(String(format: "Jain's index %.2f over %d bulk flows (1 is fair, %.2f is one flow taking all)",
                                   j, bulk.count, floor))
            if j < 0.9 || !starved.isEmpty {
                findings.append(Finding(
                    severity: .warning, kind: "unfair",
                    title: starved.isEmpty ? String(format: "The flows do not share fairly (Jain %.2f)", j)
                        : "\(starved.count) of \(bulk.count) flows are starved (under 10% of a fair share)",
                    evidence: evidence, capture: 0, flow: nil))
            } else {
                findings.append(Finding(severity: .info, kind: "fair",
                                        title: String(format: "The %d bulk flows share fairly (Jain %.2f)", bulk.count, j),
                                        evidence: evidence, capture: 0, flow: nil))
            }
        }
        var comparisons: [ForwarderComparison] = []
        if summaries.count >= 2 {
            for i in 0..<(summaries.count - 1) {
                guard let c = compare(summaries[i].packets, summaries[i + 1].packets, first: i, second: i + 1) else { continue }
                comparisons.append(c)
                findings += forwarderFindings(c, paths: paths)
            }
        }
        findings += pointFindings
        // One summary per capture: a line per flow with its goodput, SYN options and DF.
        for capture in paths.indices {
            let mine = flows.filter { $0.capture == capture }
            guard !mine.isEmpty else { continue }
            let lines = mine.map { flow -> String in
                var line = flow.flow + ": "
                line += String(format: "%d data packets, %d bytes, %.1f Mbit/s over %.2f s; ", flow.dataPackets, flow.bytes,
                               flow.goodputMbps, flow.lastTime - flow.firstTime)
                line += "SYN " + (flow.mss.map { "MSS \($0)" } ?? "not in the capture")
                line += flow.windowScale.map { ", window scale \($0)" } ?? ""
                line += flow.peerWindowScale.map { " (peer \($0))" } ?? ""
                line += flow.sackPermitted.map { $0 ? ", SACK on" : ", SACK off" } ?? ""
                line += flow.sackBlocksSeen ? " (SACK blocks seen)" : ""
                line += String(format: "; DF on %.0f%% of data packets; largest packet %d bytes", flow.dontFragmentShare * 100,
                               flow.largestPacket)
                return line
            }
            findings.append(Finding(severity: .info, kind: "flows",
                                    title: "\(mine.count) TCP data flows in \(paths[capture])", evidence: lines,
                                    capture: capture, flow: nil))
        }
        findings = findings.enumerated().sorted { ($0.element.severity, $0.offset) < ($1.element.severity, $1.offset) }
            .map(\.element)
        return Diagnosis(captures: facts, flows: flows, jainIndex: jain, forwarder: comparisons, findings: findings)
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
    static func capturePoint(_ packets: [PacketSummary], flows: [FlowAnalysis], capture: Int, mtu: Int, inferred: Bool,
                             named: Bool) -> [Finding]
    {
        var findings: [Finding] = []
        for flow in flows where flow.overMTU > 0 {
            // Super-packet ranges of this direction, and the peer's ACKs against them.
            var ranges: [(start: UInt32, end: UInt32)] = []
            var aligned = 0, inside = 0
            var firstNumber: Int?
            for p in packets {
                guard let t = p.tcp else { continue }
                if t.flow == flow.key, p.ipLength > mtu, t.payloadLength > 0 {
                    ranges.append((t.sequence, t.sequence &+ UInt32(truncatingIfNeeded: t.payloadLength)))
                    firstNumber = firstNumber ?? p.number
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
            var evidence = [
                "\(flow.overMTU) of \(flow.dataPackets) data packets are larger than the \(inferred ? "inferred " : "")MTU "
                    + "\(mtu) (largest \(flow.largestPacket) bytes; first is packet #\(firstNumber ?? 0))",
            ]
            let title: String
            if aligned + inside >= 10 && share >= 0.9 {
                title = "Super-packets arriving: GRO/LRO merged them before this capture point (receiver side)"
                evidence.append("\(aligned) of \(aligned + inside) ACKs from the receiver acknowledge a super-packet exactly at its "
                    + "end: it received them whole, so the capture shows the receiving host's view after GRO")
            } else if aligned + inside >= 10 && share <= 0.7 {
                title = "Super-packets leaving: the sender's TSO/GSO splits them after this capture point (sender side)"
                evidence.append("\(inside) of \(aligned + inside) ACKs from the receiver point inside a super-packet: "
                    + "on the wire they were separate segments, so the capture shows the sending host's view before segmentation")
            } else {
                title = "Super-packets larger than the link MTU (direction of the merge unclear)"
                evidence.append(aligned + inside == 0 ? "no ACKs for them in this capture"
                    : "\(aligned) ACKs at super-packet ends, \(inside) inside: too few or mixed to tell GRO from TSO")
            }
            evidence.append("A capture on a host shows the host's view, not the wire. `offload segment --mtu \(mtu) IN OUT` "
                + "splits super-packets back into wire-size segments (the wire view)")
            findings.append(Finding(severity: .info, kind: "super-packets",
                                    title: title + " — \(flow.flow)" + (named ? " (capture \(capture))" : ""),
                                    evidence: evidence, capture: capture, flow: flow.flow))
        }
        return findings
    }

    /// Path-MTU, stall and retransmission findings for one flow.
    static func flowFindings(_ flow: FlowAnalysis, paths: [String]) -> [Finding] {
        var findings: [Finding] = []
        let file = paths[flow.capture]
        let name = flow.flow + (paths.count > 1 ? " (capture \(flow.capture))" : "")
        if let first = flow.pathMTUMessages.first {
            let announced = flow.pathMTUMessages.map(\.mtu).min() ?? first.mtu
            let quoted = flow.pathMTUMessages.map(\.quotedLength)
            let quotedRange = "\(quoted.min()!)–\(quoted.max()!) bytes"
            let count = flow.pathMTUMessages.count
            var evidence = [
                "\(count) ICMP path-MTU messages in \(file) (first packet #\(first.packet) at \(seconds(first.time))), "
                    + "announcing MTU \(announced), quoting packets of \(quotedRange)",
            ]
            if let after = flow.largestAfterPathMTU { evidence.append("largest data packet after the first: \(after) bytes") }
            evidence.append("largest data packet the sender sent in this capture: \(flow.largestPacket) bytes")
            if quoted.max()! > flow.largestPacket && quoted.max()! > announced {
                evidence.append("the quoted packets are larger than anything the sender sent: a device on the path merged "
                    + "segments (LRO, or GRO without keeping the segment size) and then refused its own merged packet. "
                    + "Lowering the MSS cannot help: the merge rebuilds packets too big for the MTU, a black hole")
                if !flow.stalls.isEmpty { evidence.append("\(flow.stalls.count) stalls follow (see below)") }
                evidence.append(String(format: "goodput %.2f Mbit/s", flow.goodputMbps))
                findings.append(Finding(severity: .critical, kind: "pmtu-black-hole-merging",
                                        title: "Path-MTU black hole caused by merging — \(name)",
                                        evidence: evidence, capture: flow.capture, flow: flow.flow))
            } else if let late = flow.oversizeAfterPathMTUSeconds, late > 0.1, count >= 3 {
                evidence.append("a packet larger than \(announced) bytes was still sent \(Int(late * 1000)) ms after the first message")
                evidence.append("the sender keeps sending packets larger than the announced MTU: the ICMP messages do not "
                    + "reach it or it ignores them (a black hole)")
                findings.append(Finding(severity: .critical, kind: "pmtu-ignored",
                                        title: "Path-MTU messages without effect — \(name)",
                                        evidence: evidence, capture: flow.capture, flow: flow.flow))
            } else {
                let stop = flow.oversizeAfterPathMTUSeconds.map { " (the last larger one \(Int(($0 * 1000).rounded())) ms after the first message: already in flight)" } ?? ""
                evidence.append("the sender then kept to the announced MTU\(stop): path MTU discovery works")
                findings.append(Finding(severity: .info, kind: "pmtu-working",
                                        title: "Path MTU discovery worked — \(name)",
                                        evidence: evidence, capture: flow.capture, flow: flow.flow))
            }
        }
        if !flow.stalls.isEmpty {
            let longest = flow.stalls.max { $0.milliseconds < $1.milliseconds }!
            var evidence = ["\(flow.stalls.count) stalls of at least 200 ms with data outstanding; longest "
                + "\(longest.milliseconds) ms from \(seconds(longest.start)) (after packet #\(longest.lastPacketBefore))"
                + (longest.firstPacketAfter.map { " to packet #\($0)" } ?? "")]
            evidence.append("the longest was \(longest.cause)")
            for s in flow.stalls.prefix(5) where s != longest {
                evidence.append("\(s.milliseconds) ms at \(seconds(s.start)), after packet #\(s.lastPacketBefore)")
            }
            findings.append(Finding(severity: .warning, kind: "stall",
                                    title: "Stalls: no new data for up to \(longest.milliseconds) ms — \(name)",
                                    evidence: evidence, capture: flow.capture, flow: flow.flow))
        }
        let r = flow.retransmissions
        if r.total > 0 {
            let share = Double(r.total) / Double(max(flow.dataPackets, 1))
            findings.append(Finding(
                severity: share > 0.01 || r.timeout > 0 ? .warning : .info, kind: "retransmissions",
                title: String(format: "%d retransmissions (%.2f%% of data packets) — ", r.total, share * 100) + name,
                evidence: ["fast retransmit (after 3 duplicate ACKs or SACK): \(r.fast)",
                           "after a silence of 200 ms or more (retransmission timeout) and the recovery after it: \(r.timeout)",
                           "within a second of an ICMP path-MTU message (re-sent smaller): \(r.afterPathMTU)",
                           "other (tail-loss probes and the like): \(r.other)"],
                capture: flow.capture, flow: flow.flow))
        }
        return findings
    }

    static func forwarderFindings(_ c: ForwarderComparison, paths: [String]) -> [Finding] {
        var findings: [Finding] = []
        let sides = "between \(paths[c.upstream]) (in) and \(paths[c.downstream]) (out)"
        if c.acksEmittedOrChanged > 0 {
            findings.append(Finding(
                severity: .critical, kind: "ack-emitted",
                title: "The forwarder emitted or changed \(c.acksEmittedOrChanged) ACKs that did not come in",
                evidence: ["\(c.acksOut) pure ACKs left, \(c.acksIn) came in, \(sides)",
                           "first such ACKs in \(paths[c.upstream]): packets " + c.emittedExamples.map { "#\($0)" }.joined(separator: ", "),
                           "a transparent forwarder never creates or edits ACKs (if the capture dropped packets, some may be missing copies)"],
                capture: c.upstream, flow: nil))
        } else if c.acksOut > 0 {
            findings.append(Finding(severity: .info, kind: "ack-intact",
                                    title: "Every ACK the forwarder sent came in unchanged (\(c.acksOut) ACKs)",
                                    evidence: ["matched on sequence, acknowledgment, window and flags, \(sides)"]
                                        + (c.acksSwallowed > 0 ? ["\(c.acksSwallowed) ACKs came in and did not leave"] : []),
                                    capture: c.upstream, flow: nil))
        }
        if c.droppedSegments > 0 {
            // A handful in a bulk transfer is a queue overflowing now and then; more is a problem.
            let share = Double(c.droppedSegments) / Double(max(c.dataPacketsIn, 1))
            findings.append(Finding(
                severity: share > 0.001 ? .warning : .info, kind: "forwarder-dropped",
                title: "The forwarder dropped \(c.droppedSegments) data segments (\(c.droppedBytes) bytes, "
                    + String(format: "%.3f%% of those in)", share * 100),
                evidence: ["\(c.dataPacketsIn) data packets in, \(c.dataPacketsOut) out, \(sides)",
                           "segments seen coming in whose bytes never left and that no ICMP error quoted: dropped by the "
                               + "forwarder or a queue before it, or missed by a capture (tcpdump drops packets under load)"]
                    + (c.refusedWithICMP > 0 ? ["besides, \(c.refusedWithICMP) segments were refused with an ICMP error (too big)"] : []),
                capture: c.downstream, flow: nil))
        }
        let hold = c.holdMicroseconds
        var evidence = ["\(c.dataPacketsIn) data packets in, \(c.dataPacketsOut) out, \(sides)"]
        if c.merged > 0 {
            evidence.append(String(format: "%d packets out were merged from several: %.1f segments per packet on average, at most %d",
                                   c.merged, c.meanSegmentsPerPacket, c.maximumSegmentsPerPacket))
        }
        if c.split > 0 { evidence.append("\(c.split) packets out are pieces of larger packets in (split)") }
        if c.refusedWithICMP > 0 && c.droppedSegments == 0 {
            evidence.append("\(c.refusedWithICMP) segments were refused with an ICMP error (too big for the egress MTU)")
        }
        if let p50 = hold["p50"], let p90 = hold["p90"], let p99 = hold["p99"], let max = hold["max"] {
            evidence.append(String(format: "held from the first segment seen coming in to the packet out: median %.0f µs, "
                                   + "90%% %.0f µs, 99%% %.0f µs, longest %.0f µs (this includes any queue between the capture "
                                   + "point and the forwarder, e.g. a TUN device's)", p50, p90, p99, max))
        }
        findings.append(Finding(
            severity: .info, kind: "forwarder-merged",
            title: c.merged > 0 ? String(format: "The forwarder merged segments (%.1f per packet out)", c.meanSegmentsPerPacket)
                : "The forwarder passed segments through without merging",
            evidence: evidence, capture: c.downstream, flow: nil))
        return findings
    }

    /// Matches two captures by flow and sequence.
    static func compare(_ a: [PacketSummary], _ b: [PacketSummary], first: Int, second: Int) -> ForwarderComparison? {
        struct Segment { var start: UInt32, length: Int, time: Double, number: Int, covered = false }
        func dataByFlow(_ packets: [PacketSummary]) -> [FlowKey: [Segment]] {
            var out: [FlowKey: [Segment]] = [:]
            for p in packets {
                guard let t = p.tcp, t.payloadLength > 0 else { continue }
                out[t.flow, default: []].append(Segment(start: t.sequence, length: t.payloadLength, time: p.time, number: p.number))
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
        // Flows seen only on one side still count (all their data was dropped, say).
        let allFlows = Set(da.keys).union(db.keys)
        guard !allFlows.isEmpty else { return nil }
        let upstreamIsFirst = votes >= 0
        let (up, down) = upstreamIsFirst ? (da, db) : (db, da)
        var c = ForwarderComparison(upstream: upstreamIsFirst ? first : second, downstream: upstreamIsFirst ? second : first)
        // Segments an ICMP error quoted: refused as too big, on purpose.
        let refused = Set((a + b).compactMap { $0.pathMTU?.quotedSequence })
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
            let outs = down[key] ?? []
            c.dataPacketsOut += outs.count
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
                    if let f = firstIn { holds.append(max(0, o.time - f) * 1e6) }
                }
            }
            let lastOut = outs.map(\.time).max() ?? 0
            for s in sorted where !s.covered && s.time < lastOut - 0.01 {
                if refused.contains(s.start) {
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
                return (AckKey(flow: t.flow, seq: t.sequence, ack: t.acknowledgment, window: t.window,
                               flags: t.flags.rawValue), p.number, p.time)
            }
        }
        let (upPackets, downPackets) = upstreamIsFirst ? (a, b) : (b, a)
        // Only ACKs of connections that carry data through this forwarder.
        let dataFlows = Set(up.keys).union(down.keys)
        // Only while both captures ran: one capture starting later or ending earlier is not the
        // forwarder inventing or eating ACKs. An ACK may spend up to `slack` inside the forwarder.
        let slack = 0.1
        let from = max(downPackets.first?.time ?? 0, upPackets.first?.time ?? 0)
        let to = min(downPackets.last?.time ?? 0, upPackets.last?.time ?? 0)
        let ackIn = acks(downPackets).filter { dataFlows.contains($0.0.flow.reversed) }
        let ackOut = acks(upPackets).filter { dataFlows.contains($0.0.flow.reversed) }
        c.acksIn = ackIn.count
        c.acksOut = ackOut.count
        // Every ACK out (late enough that its way in was captured) must have come in.
        var available: [AckKey: Int] = [:]
        for (k, _, _) in ackIn { available[k, default: 0] += 1 }
        for (k, number, time) in ackOut {
            if let n = available[k], n > 0 { available[k] = n - 1; continue }
            guard time >= from + slack && time <= to else { continue }
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
        return c
    }
}


func seconds(_ t: Double) -> String {
    let s = (t * 1000).rounded() / 1000
    return "\(s) s"
}
