import OffloadEngine
import OffloadForwarder
import Testing

@Suite("Prometheus exposition of the forwarder's counters")
struct ForwarderMetricsTests {
    @Test("one HELP and TYPE per family across directions; values follow the snapshots from scrape to scrape")
    func exposition() {
        let metrics = ForwarderMetrics()
        var up = ForwarderStatistics()
        up.packetsIn = 1000
        up.superPacketsOut = 10
        up.segmentsInSuperPackets = 250
        var down = ForwarderStatistics()
        down.packetsIn = 7
        let first = metrics.exposition([.lanToWan: up, .wanToLan: down])
        let lines = first.split(separator: "\n")
        #expect(lines.filter { $0 == "# TYPE offload_packets_in_total counter" }.count == 1, "\(first)")
        #expect(lines.contains("offload_packets_in_total{direction=\"lan_to_wan\"} 1000"))
        #expect(lines.contains("offload_packets_in_total{direction=\"wan_to_lan\"} 7"))
        #expect(lines.contains("offload_segments_per_super_packet{direction=\"lan_to_wan\"} 25.0"))
        up.packetsIn = 1500
        let second = metrics.exposition([.lanToWan: up, .wanToLan: down])
        #expect(second.contains("offload_packets_in_total{direction=\"lan_to_wan\"} 1500\n"))
        #expect(second.contains("offload_packets_in_total{direction=\"wan_to_lan\"} 7\n"))
    }
}
