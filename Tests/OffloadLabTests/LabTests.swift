import Foundation
import OffloadLab
import OffloadReport
import OffloadTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif


/// A row for presentation tests: `flows` flows with these goodputs, a timeline of 10 intervals.
func row(_ scenario: LabScenario, mtu: Int, goodputs: [Double], icmp: Int? = nil) -> LabRow {
    let flows = goodputs.map { g in
        LabFlowResult(goodputMbps: g, retransmits: 1, longestStallMilliseconds: g == 0 ? 1000 : 0,
                      timelineMbps: Array(repeating: g, count: 10))
    }
    return LabRow(scenario: scenario, name: scenario.name, family: 4, ingressMTU: 1500, egressMTU: mtu, flows: flows,
                  totalGoodputMbps: goodputs.reduce(0, +), jainIndex: jainIndex(goodputs), retransmits: flows.count,
                  longestStallMilliseconds: flows.map(\.longestStallMilliseconds).max() ?? 0, intervalSeconds: 0.1,
                  segmentsPerSuperPacket: scenario.usesForwarder ? 20 : nil, icmpSent: icmp)
}

@Suite("lab metrics and iperf3 reports")
struct LabMetricTests {
    @Test("Jain's index: 1 when equal, 1/n when one flow takes all, in between otherwise")
    func jain() {
        #expect(jainIndex([5, 5, 5, 5]) == 1)
        #expect(jainIndex([8, 0, 0, 0]) == 0.25)
        #expect(abs(jainIndex([200, 200, 1, 1]) - 0.5050) < 0.001)  // the engineer's 200/200/1/1
        #expect(jainIndex([]) == 1 && jainIndex([0, 0]) == 1)
    }

    @Test("stalls are the longest run of empty intervals, including a flow that never starts")
    func stalls() {
        #expect(longestZeroRun([1, 0, 0, 1, 0, 0, 0, 1]) == 3)
        #expect(longestZeroRun([0, 0, 0, 0]) == 4)
        #expect(longestZeroRun([3, 4]) == 0)
    }

    @Test("an iperf3 report: per-flow goodput and retransmits from the end, timelines from the server's intervals")
    func iperfReport() throws {
        // The structure iperf3 3.x prints with -J --get-server-output (server started with -J -i).
        func interval(_ bytes: [Double], seconds: Double = 0.1) -> [String: Any] {
            ["streams": bytes.map { ["bytes": $0, "seconds": seconds] }, "sum": ["bytes": bytes.reduce(0, +)]]
        }
        let server: [String: Any] = ["intervals": [
            interval([125_000, 0]), interval([125_000, 0]), interval([125_000, 0]), interval([0, 0]),
            interval([125_000, 62_500]), interval([5, 0], seconds: 0.0004),  // a trailing sliver, ignored
        ]]
        let document: [String: Any] = [
            "start": [:], "intervals": [interval([1, 1])],
            "end": ["streams": [
                ["sender": ["retransmits": 3, "bytes": 500_000], "receiver": ["bits_per_second": 8e6]],
                ["sender": ["retransmits": 0, "bytes": 62_500], "receiver": ["bits_per_second": 1e6]],
            ]],
            "server_output_json": server,
        ]
        let report = try IperfReport(json: try JSONSerialization.data(withJSONObject: document))
        #expect(report.flows.count == 2 && report.intervalSeconds == 0.1 && report.error == nil)
        #expect(report.flows[0].goodputMbps == 8 && report.flows[0].retransmits == 3)
        #expect(report.flows[0].timelineMbps == [10, 10, 10, 0, 10])
        #expect(report.flows[0].longestStallMilliseconds == 100)
        #expect(report.flows[1].longestStallMilliseconds == 400)
        #expect(throws: LabError.self) { try IperfReport(json: Data("iperf3: error - unable to connect".utf8)) }
    }

    @Test("a real iperf3 on loopback produces a report this parser reads",
          .enabled(if: installed("iperf3"), "iperf3 is not installed"))
    func realIperf() throws {
        let port = 20_000 + Int(getpid() % 20_000)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("iperf-\(port).json").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        shell("(timeout 20 iperf3 -s -1 -J -i 0.1 -p \(port) >/dev/null 2>&1 &); "
            + "for i in $(seq 100); do ss -Htln 'sport = :\(port)' | grep -q \(port) && break; sleep 0.05; done; "
            + "iperf3 -c 127.0.0.1 -p \(port) -t 1 -P 2 -i 0.1 -b 100M -J --get-server-output --logfile \(file)", timeout: 30)
        let report = try IperfReport(json: try Data(contentsOf: URL(fileURLWithPath: file)))
        #expect(report.flows.count == 2)
        // What the parser read, not how fast loopback is: both flows moved data.
        #expect(report.flows.allSatisfy { $0.goodputMbps > 0 }, "\(report.flows.map(\.goodputMbps))")
        #expect(abs(report.intervalSeconds - 0.1) < 0.02)
        #expect(report.flows.allSatisfy { $0.timelineMbps.count >= 8 })
    }
}

@Suite("lab table, explanation and report")
struct LabPresentationTests {
    let rows = [
        row(.forwarderOffloadsOff, mtu: 1500, goodputs: [400, 410, 390, 400]),
        row(.forwarderGRO, mtu: 1500, goodputs: [920, 910, 890, 900]),
        row(.forwarderGRO, mtu: 1400, goodputs: [700, 700, 710, 690], icmp: 8),
        row(.forwarderLRO, mtu: 1400, goodputs: [0.3, 0, 0.2, 0], icmp: 150),
        row(.kernelGRO, mtu: 1400, goodputs: [1500, 10, 10, 10]),
    ]

    @Test("rows under 10% of the best with the same MTU are named as black holes, unfair rows as unfair")
    func explanation() {
        #expect(LabPresentation.crawling(rows).map(\.scenario) == [.forwarderLRO])
        let text = LabPresentation.explanation(rows)
        #expect(text.contains("Row 5 (offload --mode lro, IPv4, MTU 1500→1400) black-holes or crawls"))
        #expect(text.contains("150 ICMP errors"))
        #expect(text.contains("Row 2 (kernel, GRO on, IPv4, MTU 1500→1400) is unfair"))
        #expect(!text.contains("Row 4 (offload, GRO+GSO, IPv4, MTU 1500→1500) is unfair"))
        #expect(text.contains("moves 2.3× the goodput"))
        let table = LabPresentation.table(rows)
        #expect(table.split(separator: "\n").count == rows.count + 2)
        #expect(table.contains("0.3 / 0.0 / 0.2 / 0.0"))
    }

    @Test("the JSON carries every row and which rows crawl")
    func json() throws {
        let configuration = LabConfiguration(offloadExecutable: "/bin/false", scratch: "/tmp")
        let data = try LabPresentation.json(rows, configuration: configuration)
        struct Document: Decodable { var rows: [LabRow]; var crawling: [Int] }
        let decoded = try JSONDecoder().decode(Document.self, from: data)
        #expect(decoded.rows == rows && decoded.crawling == [3])
    }

    @Test("the HTML page holds the table and a chart per row with a line per flow, and stalls as bands")
    func html() {
        let configuration = LabConfiguration(offloadExecutable: "/bin/false", scratch: "/tmp")
        var stalled = rows
        stalled[0].flows[1].timelineMbps = [400, 0, 0, 0, 400, 400, 400, 400, 400, 400]
        let page = LabPresentation.html(stalled, configuration: configuration)
        #expect(page.components(separatedBy: "<polyline class=\"series\"").count - 1 == rows.count * 4)
        #expect(page.components(separatedBy: "<rect class=\"band\"").count - 1 >= 2)  // the stall and the LRO flows
        #expect(page.contains("<table class=\"results\">") && !page.contains("<script"))
    }

    @Test("the report renders in headless Chromium with its plotted elements",
          .enabled(if: chromiumInstalled, "no Chromium (apt-get install chromium)"))
    func chromium() throws {
        let configuration = LabConfiguration(offloadExecutable: "/bin/false", scratch: "/tmp")
        guard let dom = try renderedDOM(ofHTML: LabPresentation.html(rows, configuration: configuration), name: "lab")
        else { return }
        // The DOM after parsing: the SVG elements exist as elements, not as text.
        #expect(dom.components(separatedBy: "<polyline class=\"series\"").count - 1 == rows.count * 4)
        #expect(dom.contains("<svg") && dom.contains("</table>"))
    }
}

@Suite("What the lab's captures lost")
struct LabCaptureLossTests {
    @Test("tcpdump's closing counts are read; without them there is no number")
    func captureDrops() {
        let closing = "tcpdump: listening on g0\n84213 packets captured\n84290 packets received by filter\n77 packets dropped by kernel\n"
        #expect(LabRunner.captureDrops(in: closing) == 77)
        #expect(LabRunner.captureDrops(in: closing + "3 packets dropped by interface\n") == 80)
        #expect(LabRunner.captureDrops(in: "tcpdump: listening on g0\n") == nil)
    }
}
