import Foundation
import OffloadReport

/// The lab's table, its explanation and its HTML report.
public enum LabPresentation {
    /// The column headings, shared by the text table and the HTML one.
    static let headers = ["#", "scenario", "IP", "MTU in→out", "goodput Mbit/s", "per flow Mbit/s", "Jain",
                          "retransmits", "longest stall ms", "segs/super-packet", "ICMP sent"]

    /// The cells of one row.
    static func cells(_ row: LabRow) -> [String] {
        [
            "\(row.scenario.rawValue)", row.name, "v\(row.family)", "\(row.ingressMTU)→\(row.egressMTU)",
            row.error == nil ? mbps(row.totalGoodputMbps) : "n/a",
            row.flows.map { mbps($0.goodputMbps) }.joined(separator: " / "),
            row.flows.isEmpty ? "-" : String(format: "%.2f", row.jainIndex),
            "\(row.retransmits)", "\(row.longestStallMilliseconds)",
            row.segmentsPerSuperPacket.map { String(format: "%.1f", $0) } ?? "-",
            row.icmpSent.map { "\($0)" } ?? "-",
        ]
    }

    /// A percentage with two decimals below 1%, none above.
    static func percent(_ v: Double) -> String { String(format: v < 1 ? "%.2f%%" : "%.0f%%", v) }

    /// Mbit/s with one decimal below 10, none above.
    static func mbps(_ v: Double) -> String { String(format: v < 10 ? "%.1f" : "%.0f", v) }

    /// The table as aligned plain text.
    public static func table(_ rows: [LabRow]) -> String {
        let body = rows.map(cells)
        let widths = headers.indices.map { i in ([headers[i]] + body.map { $0[i] }).map(\.count).max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, cell in
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                return i == 1 || i == 5 ? cell + pad : pad + cell
            }.joined(separator: "  ")
        }
        var out = line(headers) + "\n"
        out += widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ") + "\n"
        for (cellsOfRow, row) in zip(body, rows) {
            out += line(cellsOfRow) + (row.error.map { "  (\($0))" } ?? "") + "\n"
        }
        return out
    }

    /// Rows that black-hole or crawl: under 10% of the best row with the same family and MTU.
    public static func crawling(_ rows: [LabRow]) -> [LabRow] {
        rows.filter { row in
            let best = rows.filter { $0.family == row.family && $0.egressMTU == row.egressMTU }
                .map(\.totalGoodputMbps).max() ?? 0
            return best > 0 && row.totalGoodputMbps < 0.1 * best
        }
    }

    /// Two or three sentences on what the numbers mean, then one line per notable row.
    public static func explanation(_ rows: [LabRow]) -> String {
        var out = """
            What it means: GRO merges a flow's packets into one super-packet. A forwarder that keeps the \
            segment size (Linux, and offload forward with GRO+GSO) checks each original segment against the \
            egress MTU and sends the very packets it merged, so it is as transparent as forwarding with offloads \
            off, only faster. A greedy merge (LRO) forgets the segment size: behind a smaller egress MTU its merged \
            packets are too big with DF set, the gateway drops them and answers with ICMP "fragmentation needed", \
            but the sender's segments already fit, so lowering its MSS changes nothing and the flow black-holes.

            """
        for row in crawling(rows) {
            out += "- Row \(row.scenario.rawValue) (\(row.name), IPv\(row.family), MTU \(row.ingressMTU)→\(row.egressMTU)) "
                + "black-holes or crawls: \(mbps(row.totalGoodputMbps)) Mbit/s, "
                + percent(100 * row.totalGoodputMbps / max(bestGoodput(rows, like: row), 1e-9))
                + " of the best row with the same MTU"
            if let icmp = row.icmpSent, icmp > 0 { out += ", \(icmp) ICMP errors sent" }
            out += ".\n"
        }
        for row in rows where row.flows.count > 1 && !row.fairness.isFair && !crawling(rows).contains(row) {
            let starved = row.fairness.starved > 0 ? ", \(row.fairness.starved) of \(row.flows.count) flows starved" : ""
            out += "- Row \(row.scenario.rawValue) (\(row.name), IPv\(row.family), MTU \(row.ingressMTU)→\(row.egressMTU)) "
                + String(format: "is unfair: Jain %.2f", row.jainIndex) + starved
                + (row.jainIndexAfterStartUp.map { String(format: " (after the first second: %.2f)", $0) } ?? "") + ".\n"
        }
        for row in rows where row.longestStallMilliseconds >= 200 && !crawling(rows).contains(row) {
            out += "- Row \(row.scenario.rawValue) (\(row.name), IPv\(row.family), MTU \(row.ingressMTU)→\(row.egressMTU)) "
                + "has a flow that got no data for \(row.longestStallMilliseconds) ms.\n"
        }
        for row in rows where row.scenario.isTunnel && ((row.ingressQueueDrops ?? 0) > 0 || (row.underlayReceiveDrops ?? 0) > 0) {
            out += "- Row \(row.scenario.rawValue) (\(row.name), MTU \(row.ingressMTU)→\(row.egressMTU)): the encrypting gateway's "
                + "TUN queue dropped \(row.ingressQueueDrops.map(String.init) ?? "?") packets before it read them, and the "
                + "decrypting gateway's kernel \(row.underlayReceiveDrops.map(String.init) ?? "?") datagrams for a full socket buffer.\n"
        }
        for row in rows where !row.scenario.isTunnel && ((row.captureDrops ?? 0) > 0 || (row.ingressQueueDrops ?? 0) > 0) {
            out += "- Row \(row.scenario.rawValue) (\(row.name), IPv\(row.family), MTU \(row.ingressMTU)→\(row.egressMTU)): "
                + "the captures lost \(row.captureDrops ?? 0) packets (tcpdump) and the forwarder's ingress queue "
                + "\(row.ingressQueueDrops ?? 0); `offload doctor` on these captures counts both as forwarder drops.\n"
        }
        for row in rows where row.scenario.isSeed && !row.flows.isEmpty {
            out += "- Row \(row.scenario.rawValue) (\(row.name)): \(row.tunnels ?? 0) tunnel(s), one TCP download per server port "
                + "over \(LabSeed.linkRateMbps) Mbit/s links: " + row.flows.map { mbps($0.goodputMbps) }.joined(separator: " / ")
                + String(format: " Mbit/s, Jain %.2f", row.jainIndex)
                + (row.jainIndexAfterStartUp.map { String(format: " (%.2f after the first second)", $0) } ?? "")
                + String(format: ", %d retransmits, %d flow(s) stalled for 1 s or more", row.retransmits,
                         row.flows.filter { $0.longestStallMilliseconds >= 1000 }.count)
            if let bytes = row.tunnelBytes {
                out += "; bytes per CHILD_SA towards the client: " + bytes.map(String.init).joined(separator: " / ")
            }
            out += ".\n"
        }
        let pairs = Dictionary(grouping: rows) { "\($0.family)/\($0.egressMTU)" }
        for (_, group) in pairs.sorted(by: { $0.key < $1.key }) {
            guard let on = group.first(where: { $0.scenario == .forwarderGRO }),
                let off = group.first(where: { $0.scenario == .forwarderOffloadsOff }), off.totalGoodputMbps > 0
            else { continue }
            out += String(format: "- IPv%d, MTU %d→%d: offload forward with GRO+GSO moves %.1f× the goodput of the same "
                          + "forwarder with offloads off.\n", on.family, on.ingressMTU, on.egressMTU,
                          on.totalGoodputMbps / off.totalGoodputMbps)
        }
        for (_, group) in pairs.sorted(by: { $0.key < $1.key }) {
            guard let withKernel = group.first(where: { $0.scenario == .forwarderKernelGRO }),
                let kernel = group.first(where: { $0.scenario == .kernelGRO }), kernel.totalGoodputMbps > 0
            else { continue }
            out += String(format: "- IPv%d, MTU %d→%d: with the kernel's GRO at the ingress, offload forward moves %.2f× "
                          + "the kernel forwarding with GRO on.\n", withKernel.family, withKernel.ingressMTU,
                          withKernel.egressMTU, withKernel.totalGoodputMbps / kernel.totalGoodputMbps)
        }
        for mtu in Set(rows.map(\.egressMTU)).sorted() {
            guard let siit = rows.first(where: { $0.scenario == .translatorGRO && $0.egressMTU == mtu }),
                siit.totalGoodputMbps > 0
            else { continue }
            var parts: [String] = []
            if let tayga = rows.first(where: { $0.scenario == .tayga && $0.egressMTU == mtu }), tayga.totalGoodputMbps > 0 {
                parts.append(String(format: "%.1f× Tayga's", siit.totalGoodputMbps / tayga.totalGoodputMbps))
            }
            if let off = rows.first(where: { $0.scenario == .translatorOffloadsOff && $0.egressMTU == mtu }),
                off.totalGoodputMbps > 0
            {
                parts.append(String(format: "%.1f× the same translator's with offloads off", siit.totalGoodputMbps / off.totalGoodputMbps))
            }
            if let kernel = rows.first(where: { $0.scenario == .kernelNoGRO && $0.family == 4 && $0.egressMTU == mtu }),
                kernel.totalGoodputMbps > 0
            {
                parts.append(String(format: "%.2f× the kernel forwarding plain IPv4 with GRO off",
                                    siit.totalGoodputMbps / kernel.totalGoodputMbps))
            }
            if !parts.isEmpty {
                out += "- MTU \(siit.ingressMTU)→\(mtu): offload siit with GRO+GSO (IPv6 client → IPv4 server) moves "
                    + parts.joined(separator: ", ") + " goodput.\n"
            }
        }
        for mtu in Set(rows.map(\.egressMTU)).sorted() {
            guard let nat64 = rows.first(where: { $0.scenario == .nat64GRO && $0.egressMTU == mtu }), nat64.totalGoodputMbps > 0
            else { continue }
            var parts: [String] = []
            if let tayga = rows.first(where: { $0.scenario == .taygaNAT44 && $0.egressMTU == mtu }), tayga.totalGoodputMbps > 0 {
                parts.append(String(format: "%.1f× Tayga with the kernel's NAT44", nat64.totalGoodputMbps / tayga.totalGoodputMbps))
            }
            if let off = rows.first(where: { $0.scenario == .nat64OffloadsOff && $0.egressMTU == mtu }), off.totalGoodputMbps > 0 {
                parts.append(String(format: "%.1f× the same translator's with offloads off", nat64.totalGoodputMbps / off.totalGoodputMbps))
            }
            if let kernel = rows.first(where: { $0.scenario == .kernelGRO && $0.family == 4 && $0.egressMTU == mtu }),
                kernel.totalGoodputMbps > 0
            {
                parts.append(String(format: "%.2f× the kernel forwarding plain IPv4 with GRO on",
                                    nat64.totalGoodputMbps / kernel.totalGoodputMbps))
            }
            if !parts.isEmpty {
                out += "- MTU \(nat64.ingressMTU)→\(mtu): offload nat64 with GRO+GSO (IPv6 client → IPv4 server, stateful) moves "
                    + parts.joined(separator: ", ") + " goodput.\n"
            }
        }
        for mtu in Set(rows.map(\.egressMTU)).sorted() {
            guard let tunnel = rows.first(where: { $0.scenario == .tunnelGRO && $0.egressMTU == mtu }),
                tunnel.totalGoodputMbps > 0
            else { continue }
            var parts: [String] = []
            if let kernel = rows.first(where: { $0.scenario == .kernelVXLAN && $0.egressMTU == mtu }), kernel.totalGoodputMbps > 0 {
                parts.append(String(format: "%.2f× the kernel's VXLAN", tunnel.totalGoodputMbps / kernel.totalGoodputMbps))
            }
            if let off = rows.first(where: { $0.scenario == .tunnelOffloadsOff && $0.egressMTU == mtu }), off.totalGoodputMbps > 0 {
                parts.append(String(format: "%.1f× the same endpoint's with offloads off", tunnel.totalGoodputMbps / off.totalGoodputMbps))
            }
            if !parts.isEmpty {
                out += "- Underlay MTU \(mtu): the GTP-U endpoint with GRO+GSO moves " + parts.joined(separator: ", ") + " goodput.\n"
            }
        }
        return out
    }

    static func bestGoodput(_ rows: [LabRow], like row: LabRow) -> Double {
        rows.filter { $0.family == row.family && $0.egressMTU == row.egressMTU }.map(\.totalGoodputMbps).max() ?? 0
    }

    /// The table as JSON.
    public static func json(_ rows: [LabRow], configuration: LabConfiguration) throws -> Data {
        struct Document: Encodable {
            var version = OffloadVersion.current
            var flows: Int, seconds: Double, rows: [LabRow], crawling: [Int]
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let slow = crawling(rows)
        return try encoder.encode(Document(flows: configuration.flows, seconds: configuration.seconds, rows: rows,
                                           crawling: rows.indices.filter { slow.contains(rows[$0]) }))
    }

    /// The HTML page: the table, the explanation, and goodput over time per flow for every row.
    public static func html(_ rows: [LabRow], configuration: LabConfiguration) -> String {
        var page = HTMLReport(title: "offload lab")
        page.paragraph(OffloadVersion.banner)
        if rows.allSatisfy(\.scenario.isSeed) {
            page.paragraph("The seed: \(LabSeed.ports.count) TCP downloads (iperf3 -R, server ports "
                + "\(LabSeed.ports.map(String.init).joined(separator: ", "))), each through its own ESP tunnel between two "
                + "gateways, every link shaped to \(LabSeed.linkRateMbps) Mbit/s, \(formatSeconds(configuration.seconds)) s per row.")
        } else {
            page.paragraph("\(configuration.flows) TCP flows per row for \(formatSeconds(configuration.seconds)) s, "
                + "client → gateway → server in network namespaces, iperf3 with the kernel's TCP on both ends.")
        }
        let slow = Set(crawling(rows).map { rows.firstIndex(of: $0)! })
        page.table(headers: headers, rows: rows.map(cells), highlight: slow)
        page.heading("What the numbers mean")
        for paragraph in explanation(rows).split(separator: "\n", omittingEmptySubsequences: true) {
            page.paragraph(String(paragraph))
        }
        page.heading("Goodput over time, per flow")
        let peak = rows.flatMap { $0.flows.flatMap(\.timelineMbps) }.max() ?? 1
        page.charts(rows.map { row in
            var chart = SVGChart(title: "\(row.scenario.rawValue). \(row.name), IPv\(row.family), MTU \(row.ingressMTU)→\(row.egressMTU)",
                                 xLabel: "seconds", yLabel: "Mbit/s")
            chart.width = 440
            chart.height = 220
            chart.xRange = 0...max(configuration.seconds, 0.1)
            chart.yRange = 0...max(peak, 1)
            for (index, flow) in row.flows.enumerated() {
                chart.series.append(SVGChart.Series(
                    name: "flow \(index + 1)",
                    points: flow.timelineMbps.enumerated().map { (Double($0.offset + 1) * row.intervalSeconds, $0.element) }))
                // Stalls: runs of empty intervals.
                var start: Int?
                for (i, v) in (flow.timelineMbps + [1]).enumerated() {
                    if v <= 0 { start = start ?? i } else if let s = start {
                        if Double(i - s) * row.intervalSeconds >= 0.2 {
                            chart.bands.append(SVGChart.Band(
                                from: Double(s) * row.intervalSeconds, to: Double(i) * row.intervalSeconds,
                                label: "flow \(index + 1): no data for \(Int(Double(i - s) * row.intervalSeconds * 1000)) ms"))
                        }
                        start = nil
                    }
                }
            }
            return chart
        })
        return page.render()
    }
}
