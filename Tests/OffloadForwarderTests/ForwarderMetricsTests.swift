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

@Suite("Prometheus exposition of a stage's gauges")
struct StageGaugeTests {
    @Test("a stage counter marked as a gauge is published as a gauge without _total, and follows the level down as well as up")
    func gauge() {
        let metrics = ForwarderMetrics()
        var s = ForwarderStatistics()
        s.stage = [StageCounter("nat64_sessions", help: "Sessions, by protocol.", labels: ["protocol": "tcp"], value: 40, gauge: true),
                   StageCounter("nat64_dropped", help: "Dropped.", labels: ["reason": "no_binding"], value: 3)]
        let first = metrics.exposition([.lanToWan: s])
        #expect(first.contains("# TYPE offload_nat64_sessions gauge"), "\(first)")
        #expect(first.contains("offload_nat64_sessions{protocol=\"tcp\"} 40"), "\(first)")
        #expect(first.contains("offload_nat64_dropped_total{direction=\"lan_to_wan\",reason=\"no_binding\"} 3"), "\(first)")
        s.stage[0].value = 12
        let second = metrics.exposition([.lanToWan: s])
        #expect(second.contains("offload_nat64_sessions{protocol=\"tcp\"} 12"), "\(second)")
    }
}

@Suite("Counter tables: every counter field is published, added and named once")
struct CounterTableTests {
    /// The Int stored properties of a value, by name.
    func intFields(_ value: Any) -> [String: Int] {
        Dictionary(uniqueKeysWithValues: Mirror(reflecting: value).children.compactMap { child in
            (child.value as? Int).flatMap { v in child.label.map { ($0, v) } }
        })
    }

    @Test("ForwarderStatistics: each Int field has one published counter, and add() sums every one")
    func forwarder() {
        var s = ForwarderStatistics()
        // Give every field a distinct value through the published table's order.
        let fields = intFields(s)
        #expect(s.counters.count == fields.count, "\(fields.keys.sorted()) vs \(s.counters.map(\.name))")
        #expect(Set(s.counters.map(\.name)).count == s.counters.count, "names are unique")
        var one = ForwarderStatistics()
        one.packetsIn = 1; one.bytesIn = 2; one.tsoIn = 3; one.packetsOut = 4; one.bytesOut = 5; one.superPacketsOut = 6
        one.segmentsInSuperPackets = 7; one.segmentedInSoftware = 8; one.fragmentsOut = 9; one.icmpSent = 10
        one.icmpSuppressed = 11; one.dropped = 12; one.gsoFallbacks = 13; one.virtioRejected = 14; one.writeErrors = 15
        one.notForwarded = 16; one.stageDropped = 17; one.stageReplies = 18; one.stageRewrites = 19
        one.deliveredSentOn = 20; one.deliveredRefused = 21; one.deliveredAnswered = 22; one.deliveredNotForwarded = 23
        one.deliveredDropped = 24; one.mssClamped = 25
        s.add(one)
        s.add(one)
        #expect(intFields(s).values.sorted() == intFields(one).values.map { $0 * 2 }.sorted())
        #expect(!intFields(one).values.contains(0), "every field was set above: a new field must be added to the test too")
    }
}
