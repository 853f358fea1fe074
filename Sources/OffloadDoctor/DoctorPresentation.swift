import OffloadWire
import Foundation
import OffloadReport

/// The doctor's output: text for people, JSON for machines, an HTML page with pictures.
public enum DoctorPresentation {
    /// Findings as numbered paragraphs, most important first, each with its evidence.
    public static func text(_ d: Diagnosis) -> String {
        var out = "offload doctor: \(d.captures.count) capture\(d.captures.count == 1 ? "" : "s"), "
            + "\(d.flows.count) TCP data flow\(d.flows.count == 1 ? "" : "s"), \(d.findings.count) findings\n"
        for (i, c) in d.captures.enumerated() {
            out += "  capture \(i): \(c.path): \(c.records) records, \(c.analyzed) TCP/ICMP analyzed, \(c.skipped) other or unparsable, "
                + String(format: "%.2f s", c.durationSeconds) + ", MTU \(c.mtu)\(c.mtuInferred ? " (inferred; --mtu to set)" : "")"
                + (c.snapped > 0 ? ", \(c.snapped) cut short by the snap length (lengths read from headers)" : "") + "\n"
            if let e = c.readError { out += "    reading stopped early: \(e)\n" }
        }
        out += "\n"
        for (i, f) in d.findings.enumerated() {
            out += "\(i + 1). [\(f.severity.rawValue)] \(f.title)\n"
            for e in f.evidence { out += "   - \(e)\n" }
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
        page.preformatted(d.captures.enumerated().map { "capture \($0.offset): \($0.element.path)" }.joined(separator: "\n"))
        page.heading("Findings")
        page.table(headers: ["#", "severity", "finding"],
                   rows: d.findings.enumerated().map { ["\($0.offset + 1)", $0.element.severity.rawValue, $0.element.title] },
                   highlight: Set(d.findings.indices.filter { d.findings[$0].severity == .critical }))
        for (i, f) in d.findings.enumerated() where f.kind != "flows" {
            page.heading("\(i + 1). \(f.title)", level: 3)
            page.list(f.evidence)
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
                    SVGChart.Band(from: $0.start, to: $0.end, label: "stall \($0.milliseconds) ms: \($0.cause)")
                }
                return chart
            })
        }
        return page.render()
    }
}
