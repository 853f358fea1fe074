import OffloadWire
import Foundation
import OffloadReport

/// The doctor's output: text for people, JSON for machines, an HTML page with pictures.
public enum DoctorPresentation {
    /// Findings as numbered paragraphs, most important first, each with its evidence.
    public static func text(_ d: Diagnosis) -> String {
        var out = "offload doctor (\(OffloadVersion.banner)): \(d.captures.count) capture\(d.captures.count == 1 ? "" : "s"), "
            + "\(d.flows.count) TCP data flow\(d.flows.count == 1 ? "" : "s"), \(d.findings.count) findings\n"
        for (i, c) in d.captures.enumerated() {
            out += "  capture \(i): \(c.path): \(c.records) records, \(c.analyzed) TCP/ICMP analyzed, \(c.skipped) other or unparsable, "
                + String(format: "%.2f s", c.durationSeconds) + ", MTU \(c.mtu)\(c.mtuInferred ? " (inferred; --mtu to set)" : "")"
                + (c.snapped > 0 ? ", \(c.snapped) cut short by the snap length (lengths read from headers)" : "") + "\n"
            if let e = c.readError { out += "    reading stopped early: \(e)\n" }
        }
        out += "\n"
        for (i, f) in d.findings.enumerated() {
            out += "\(i + 1). [\(f.severity.rawValue)] \(title(f, in: d))\n"
            for e in evidence(f, in: d) { out += "   - \(e)\n" }
        }
        return out
    }

    /// The diagnosis as JSON.
    public static func json(_ d: Diagnosis) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(d)
    }

    /// The findings plus, per flow, a time–sequence graph (retransmissions circled, stalls shaded)
    /// and goodput over time for all flows of each capture.
    public static func html(_ d: Diagnosis) -> String {
        var page = HTMLReport(title: "offload doctor")
        page.paragraph(OffloadVersion.banner)
        page.preformatted(d.captures.enumerated().map { "capture \($0.offset): \($0.element.path)" }.joined(separator: "\n"))
        page.heading("Findings")
        page.table(headers: ["#", "severity", "finding"],
                   rows: d.findings.enumerated().map { ["\($0.offset + 1)", $0.element.severity.rawValue, title($0.element, in: d)] },
                   highlight: Set(d.findings.indices.filter { d.findings[$0].severity == .critical }))
        for (i, f) in d.findings.enumerated() where f.kind != .flows {
            page.heading("\(i + 1). \(title(f, in: d))", level: 3)
            page.list(evidence(f, in: d))
        }
        for capture in d.captures.indices {
            let flows = d.flows.filter { $0.capture == capture && $0.dataPackets > 0 }
            guard !flows.isEmpty else { continue }
            page.heading("Capture \(capture): goodput per flow over time")
            var goodput = SVGChart(title: "Goodput, capture \(capture)", xLabel: "seconds", yLabel: "Mbit/s")
            goodput.width = 900
            for f in flows.prefix(8) {
                goodput.series.append(SVGChart.Series(
                    name: f.flow, points: f.timelineMbps.enumerated().map { (Double($0.offset) * f.binSeconds, $0.element) }))
            }
            page.chart(goodput)
            page.heading("Capture \(capture): time–sequence per flow", level: 3)
            page.charts(flows.prefix(16).map { f in
                var chart = SVGChart(title: f.flow, xLabel: "seconds", yLabel: "bytes (relative sequence)")
                chart.width = 440
                chart.height = 240
                chart.series.append(SVGChart.Series(
                    name: "data", points: f.sequencePoints.map { ($0.time, $0.sequence) }, style: .points))
                chart.markers = f.sequencePoints.filter(\.retransmission).map {
                    SVGChart.Marker(x: $0.time, y: $0.sequence, label: "retransmission at \(seconds($0.time))")
                }
                chart.bands = f.stalls.map {
                    SVGChart.Band(from: $0.start, to: $0.end, label: "stall \($0.milliseconds) ms: \(describe($0.context))")
                }
                return chart
            })
        }
        return page.render()
    }

    // MARK: - Wording

    /// A finding in one sentence.
    public static func title(_ f: Finding, in d: Diagnosis) -> String {
        let who = f.flows.count == 1 ? f.flows[0] : f.flows.count > 1 ? "\(f.flows.count) flows" : ""
        let name = who + (d.captures.count > 1 && !f.flows.isEmpty ? " (capture \(f.capture ?? 0))" : "")
        switch (f.kind, f.evidence) {
        case (.pmtuBlackHoleMerging, _): return "Path-MTU black hole caused by merging — \(name)"
        case (.pmtuIgnored, _): return "Path-MTU messages without effect — \(name)"
        case (.pmtuWorking, _): return "Path MTU discovery worked — \(name)"
        case (.stall, .stalls(let e)): return "Stalls: no new data for up to \(e.longest.milliseconds) ms — \(name)"
        case (.retransmissions, .retransmissions(let r)):
            return count(r.total, "retransmission") + String(format: " (%.2f%% of data packets", r.percent)
                + (f.flows.count > 1 ? " in each)" : ")") + " — " + name
        case (.unfair, .fairness(let e)):
            return e.starved == 0 ? String(format: "The flows do not share fairly (Jain %.2f)", e.jainIndex)
                : "\(e.starved) of \(e.flows.count) flows are starved (under 10% of a fair share)"
        case (.fair, .fairness(let e)):
            return String(format: "The %d bulk flows share fairly (Jain %.2f)", e.flows.count, e.jainIndex)
        case (.ackEmitted, .forwarder(let c)):
            return "The forwarder emitted or changed \(c.acksEmittedOrChanged) ACKs that did not come in"
        case (.ackIntact, .forwarder(let c)):
            return "Every ACK the forwarder sent came in unchanged (\(count(c.acksOut, "ACK")) of \(count(c.sharedConnections, "shared connection")))"
        case (.forwarderDropped, .forwarder(let c)):
            let share = Double(c.droppedSegments) / Double(max(c.dataPacketsIn, 1))
            return "The forwarder dropped \(c.droppedSegments) data segments (\(c.droppedBytes) bytes, "
                + String(format: "%.3f%% of those in)", share * 100)
        case (.forwarderMerged, .forwarder(let c)):
            if c.merged > 0 {
                return String(format: "The forwarder merged segments (%.1f per packet out)", c.meanSegmentsPerPacket)
            }
            if c.refusedMerges {
                return "The forwarder merged segments into packets too big for its egress and refused them "
                    + "(\(count(c.icmpErrors, "ICMP error")) quoting packets of up to \(c.icmpQuotedLargest) bytes)"
            }
            return "The forwarder passed segments through without merging"
        case (.noSharedFlows, .unmatched(let e)):
            return "Captures \(e.first) and \(e.second) share no TCP connection: nothing to say about a forwarder between them"
        case (.superPackets, .superPackets(let e)):
            let what = switch e.capturePoint {
            case .afterMerge: "Super-packets arriving: GRO/LRO merged them before this capture point (receiver side)"
            case .beforeSegmentation: "Super-packets leaving: the sender's TSO/GSO splits them after this capture point (sender side)"
            case .unknown: "Super-packets larger than the link MTU (which side of the merge: unknown)"
            }
            return what + " — \(name)"
        case (.flows, .flows(let n)):
            return "\(count(n, "TCP data flow")) in \(path(f.capture, d))"
        default:
            return f.kind.rawValue
        }
    }

    /// A finding's evidence, one line per fact (first the flows, when it is about several).
    public static func evidence(_ f: Finding, in d: Diagnosis) -> [String] {
        let flows = f.flows.count > 1 ? ["the same in each of \(f.flows.count) flows: " + f.flows.joined(separator: "; ")] : []
        return flows + facts(f, in: d)
    }

    /// `1 ACK`, `2 ACKs`.
    static func count(_ n: Int, _ noun: String) -> String { "\(n) \(noun)\(n == 1 ? "" : "s")" }

    static func facts(_ f: Finding, in d: Diagnosis) -> [String] {
        switch f.evidence {
        case .pathMTU(let e):
            var lines = ["\(e.messages) ICMP path-MTU messages in \(path(f.capture, d)) (first packet #\(e.first.packet) at "
                + "\(seconds(e.first.time))), announcing MTU \(e.announcedMTU), quoting packets of "
                + "\(e.quotedSmallest)–\(e.quotedLargest) bytes"]
            if let after = e.largestAfter { lines.append("largest data packet after the first: \(after) bytes") }
            lines.append("largest data packet the sender sent in this capture: \(e.largestSent) bytes")
            switch f.kind {
            case .pmtuBlackHoleMerging:
                lines.append("the quoted packets are larger than anything the sender sent: a device on the path merged "
                    + "segments (LRO, or GRO without keeping the segment size) and then refused its own merged packet. "
                    + "Lowering the MSS cannot help: the merge rebuilds packets too big for the MTU, a black hole")
                if e.stalls > 0 { lines.append("\(e.stalls) stalls follow (see below)") }
                lines.append(String(format: "goodput %.2f Mbit/s", e.goodputMbps))
            case .pmtuIgnored:
                lines.append("a packet larger than \(e.announcedMTU) bytes was still sent \(e.oversizeAfterMilliseconds ?? 0) ms "
                    + "after the first message")
                lines.append("the sender keeps sending packets larger than the announced MTU: the ICMP messages do not "
                    + "reach it or it ignores them (a black hole)")
            default:
                let stop = e.oversizeAfterMilliseconds.map {
                    " (the last larger one \($0) ms after the first message: already in flight)"
                } ?? ""
                lines.append("the sender then kept to the announced MTU\(stop): path MTU discovery works")
            }
            return lines
        case .stalls(let e):
            let longest = e.longest
            var lines = ["\(e.stalls.count) stalls of at least 200 ms with data outstanding; longest "
                + "\(longest.milliseconds) ms from \(seconds(longest.start)) (after packet #\(longest.lastPacketBefore))"
                + (longest.firstPacketAfter.map { " to packet #\($0)" } ?? "")]
            lines.append("the longest was \(describe(longest.context))")
            for s in e.stalls.prefix(5) where s != longest {
                lines.append("\(s.milliseconds) ms at \(seconds(s.start)), after packet #\(s.lastPacketBefore)")
            }
            return lines
        case .retransmissions(let r):
            return ["fast retransmit (after 3 duplicate ACKs or SACK): \(r.fast)",
                    "after a silence of 200 ms or more (retransmission timeout) and the recovery after it: \(r.timeout)",
                    "within a second of an ICMP path-MTU message (re-sent smaller): \(r.afterPathMTU)",
                    "other (tail-loss probes and the like): \(r.other)"]
        case .fairness(let e):
            return zip(e.flows, zip(e.bytes, e.goodputMbps)).map {
                $0 + ": " + String(format: "%d bytes, %.1f Mbit/s", $1.0, $1.1)
            } + [String(format: "Jain's index %.2f over %d bulk flows (1 is fair, %.2f is one flow taking all), over "
                        + "the bytes each delivered in the same %.2f s (as `offload lab` computes it)",
                        e.jainIndex, e.flows.count, 1 / Double(max(e.flows.count, 1)), e.intervalSeconds)]
                + (e.starved > 0 ? ["\(e.starved) flows under 10% of a fair share (starved)"] : [])
        case .forwarder(let c):
            return forwarderEvidence(f.kind, c, d)
        case .superPackets(let e):
            var lines = ["\(e.overMTU) of \(e.dataPackets) data packets are larger than the \(e.mtuInferred ? "inferred " : "")MTU "
                + "\(e.mtu) (largest \(e.largest) bytes; first is packet #\(e.firstPacket))"]
            let acks = e.acksAtEnd + e.acksInside
            if let direction = e.recordedDirection {
                lines.append(direction == .outbound
                    ? "the capture records them as sent by the capturing host: its TSO/GSO splits them after this point "
                        + "(the sending host's view)"
                    : "the capture records them as received by the capturing host: GRO/LRO (or a device on the path) "
                        + "merged them before this point (the receiving host's view)")
            }
            switch e.recordedDirection == nil ? e.capturePoint : nil {
            case nil:
                break
            case .afterMerge?:
                lines.append("\(e.acksAtEnd) of \(acks) ACKs from the receiver acknowledge a super-packet exactly at its "
                    + "end, and the handshake puts this capture point next to the receiver: it received them whole, so "
                    + "the capture shows the receiving host's view after GRO")
            case .beforeSegmentation?:
                lines.append(e.acksInside > e.acksAtEnd
                    ? "\(e.acksInside) of \(acks) ACKs from the receiver point inside a super-packet: on the wire they "
                        + "were separate segments, so the capture shows the sending host's view before segmentation"
                    : "the handshake puts this capture point next to the sender: the capture shows the sending host's "
                        + "view before TSO/GSO split the packets (ACKs on super-packet ends: \(e.acksAtEnd) of \(acks); "
                        + "a virtual link such as a veth hands TSO packets over whole)")
            case .unknown?:
                lines.append(acks == 0 ? "no ACKs for them in this capture"
                    : "\(e.acksAtEnd) ACKs at super-packet ends, \(e.acksInside) inside: ACKs on the ends fit a receiver's "
                        + "GRO and also a sender's TSO over a veth, so they do not tell the side alone")
            }
            if let h = e.handshake {
                let side = h.side == .sender ? "the sender's side" : h.side == .receiver ? "the receiver's side"
                    : "too alike to tell"
                lines.append(String(format: "handshake at this point: the sender answered in %.0f µs, the receiver in "
                                    + "%.0f µs (an end answers at once next to the capture point, the far end a round "
                                    + "trip later): ", h.senderTurnaroundMicroseconds, h.receiverTurnaroundMicroseconds)
                    + side)
            } else {
                lines.append("the connection's handshake is not in this capture (it would tell the side)")
            }
            lines.append("A capture on a host shows the host's view, not the wire. `offload segment --mtu \(e.mtu) IN OUT` "
                + "splits super-packets back into wire-size segments (the wire view)")
            return lines
        case .flows:
            return d.flows.filter { $0.capture == f.capture }.map(flowLine)
        case .unmatched(let e):
            var lines = ["\(path(e.first, d)): \(count(e.connectionsFirst, "TCP connection")) (IPv"
                + e.familiesFirst.map(String.init).joined(separator: "/IPv") + "); \(path(e.second, d)): "
                + "\(count(e.connectionsSecond, "TCP connection")) (IPv" + e.familiesSecond.map(String.init).joined(separator: "/IPv")
                + "); none in both"]
            if e.translatorMappingMissing {
                lines.append("one capture is IPv4 and the other IPv6: if a translator sits between them, give its "
                    + "mapping (--pool6, and --eam for explicit addresses) so that flows are followed across it")
            } else if e.translatorMappingGiven {
                lines.append("no address matched through the --pool6/--eam mapping given: check that it is the translator's")
            } else {
                lines.append("captures of the two sides of one forwarder share the connections it carries: "
                    + "these are of different traffic (or different times)")
            }
            return lines
        }
    }

    static func forwarderEvidence(_ kind: Finding.Kind, _ c: ForwarderComparison, _ d: Diagnosis) -> [String] {
        let sides = "between \(path(c.upstream, d)) (in) and \(path(c.downstream, d)) (out)"
        switch kind {
        case .ackEmitted:
            return ["\(c.acksOut) pure ACKs left, \(c.acksIn) came in, \(sides)",
                    "first such ACKs in \(path(c.upstream, d)): packets " + c.emittedExamples.map { "#\($0)" }.joined(separator: ", "),
                    "a transparent forwarder never creates or edits ACKs (if the capture dropped packets, some may be missing copies)"]
        case .ackIntact:
            return ["matched on sequence, acknowledgment, window and flags, \(sides)"] + shared(c)
                + (c.acksSwallowed > 0 ? ["\(c.acksSwallowed) ACKs came in and did not leave"] : [])
        case .forwarderDropped:
            return ["\(c.dataPacketsIn) data packets in, \(c.dataPacketsOut) out, \(sides)",
                    "segments seen coming in whose bytes never left and that no ICMP error quoted: dropped by the "
                        + "forwarder or a queue before it, or missed by a capture (tcpdump drops packets under load)"]
                + (c.refusedWithICMP > 0 ? ["besides, \(count(c.refusedWithICMP, "segment")) that never came out were "
                    + "answered by \(count(c.icmpErrors, "ICMP path-MTU error")) (too big)"] : [])
        default:
            var lines = ["\(c.dataPacketsIn) data packets in, \(c.dataPacketsOut) out, \(sides)"] + shared(c)
            if c.icmpErrors > 0 {
                lines.append("\(count(c.icmpErrors, "ICMP path-MTU error")) went back to the senders, quoting packets of "
                    + "up to \(c.icmpQuotedLargest) bytes (the largest data packet in was \(c.largestPacketIn) bytes"
                    + (c.refusedMerges ? ": the forwarder refused packets it had merged itself)" : ")"))
            }
            if c.merged > 0 {
                lines.append(String(format: "%d packets out were merged from several: %.1f segments per packet on average, at most %d",
                                    c.merged, c.meanSegmentsPerPacket, c.maximumSegmentsPerPacket))
            }
            if c.split > 0 { lines.append("\(c.split) packets out are pieces of larger packets in (split)") }
            if c.refusedWithICMP > 0 && c.droppedSegments == 0 {
                lines.append("\(count(c.refusedWithICMP, "segment")) that never came out (not even resent) were answered by "
                    + "those errors")
            }
            let hold = c.holdMicroseconds
            if let p50 = hold["p50"], let p90 = hold["p90"], let p99 = hold["p99"], let max = hold["max"] {
                lines.append(String(format: "held from the first segment seen coming in to the packet out: median %.0f µs, "
                                    + "90%% %.0f µs, 99%% %.0f µs, longest %.0f µs (this includes any queue between the capture "
                                    + "point and the forwarder, e.g. a TUN device's)", p50, p90, p99, max))
            }
            return lines
        }
    }

    /// Which connections a comparison covers.
    static func shared(_ c: ForwarderComparison) -> [String] {
        let left = c.connectionsOnlyUpstream + c.connectionsOnlyDownstream
        return ["over the \(count(c.sharedConnections, "TCP connection")) seen in both captures"
            + (left > 0 ? " (\(left) seen in only one are left out)" : "")]
    }

    /// One flow: goodput, SYN options, DF.
    static func flowLine(_ flow: FlowAnalysis) -> String {
        var line = flow.flow + ": "
        line += String(format: "%d data packets, %d bytes, %.1f Mbit/s over %.2f s; ", flow.dataPackets, flow.bytes,
                       flow.goodputMbps, flow.lastTime - flow.firstTime)
        line += "SYN " + (flow.mss.map { "MSS \($0)" } ?? "not in the capture")
        line += flow.windowScale.map { ", window scale \($0)" } ?? ""
        line += flow.peerWindowScale.map { " (peer \($0))" } ?? ""
        line += flow.sackPermitted.map { $0 ? ", SACK on" : ", SACK off" } ?? ""
        line += flow.sackBlocksSeen ? " (SACK blocks seen)" : ""
        if case .v4 = flow.key.source {
            line += String(format: "; DF on %.0f%% of data packets", flow.dontFragmentShare * 100)
        }
        line += "; largest packet \(flow.largestPacket) bytes"
        return line
    }

    /// What preceded a stall and what ended it, in words.
    public static func describe(_ c: StallContext) -> String {
        var parts: [String] = []
        if let m = c.pathMTUMessage {
            parts.append("an ICMP path-MTU message (MTU \(m.mtu), quoting a \(m.quotedLength)-byte packet, packet #\(m.packet))")
        }
        if c.zeroWindowSeen { parts.append("the receiver advertised a zero window at some point (flow control)") }
        if c.duplicateAcks >= 3 { parts.append("\(c.duplicateAcks) duplicate ACKs") }
        let preceded = parts.isEmpty ? "nothing visible in this capture (a loss after this point, or a delay elsewhere)"
            : parts.joined(separator: "; ")
        return "preceded by \(preceded)" + (c.lastedUntilCaptureEnd ? "; it lasted until the capture ended" : "")
            + (c.endedByRetransmission ? "; ended by a retransmission (the retransmission timer)" : "")
    }

    static func path(_ capture: Int?, _ d: Diagnosis) -> String {
        guard let capture, d.captures.indices.contains(capture) else { return "?" }
        return d.captures[capture].path
    }
}
