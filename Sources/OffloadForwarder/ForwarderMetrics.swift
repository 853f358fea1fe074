import OffloadEngine
import Prometheus
import Synchronization

/// The forwarder's counters in the Prometheus text format, through swift-prometheus's registry.
///
/// The dataplane keeps plain per-thread counters (``ForwarderStatistics``) and publishes snapshots
/// every 50 ms; nothing on the hot path touches an atomic or a lock for metrics. At each scrape the
/// registry's counters are advanced by what the snapshots gained since the last scrape, and the
/// registry writes the exposition (one `# HELP`/`# TYPE` per family, label escaping).
public final class ForwarderMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    /// What each series showed at the last scrape.
    let published = Mutex<[String: Int]>([:])

    /// Creates an empty registry.
    public init() {}

    /// The exposition for these counters.
    public func exposition(_ statistics: [Direction: ForwarderStatistics]) -> String {
        published.withLock { last in
            for (direction, s) in statistics.sorted(by: { $0.key.label < $1.key.label }) {
                let label = ("direction", direction.label)
                for counter in s.counters {
                    advance(counter.name, help: counter.help, labels: [label], to: counter.value, &last)
                }
                for reason in GROReason.allCases where s.gro[reason] > 0 {
                    advance("gro", help: "GRO completions and bypasses by reason.",
                            labels: [label, ("group", "\(reason.group)"), ("reason", "\(reason)")], to: s.gro[reason],
                            &last)
                }
                for counter in s.stage where counter.gauge {
                    let descriptor = MetricNameDescriptor(namespace: "offload", metricName: counter.name, unitName: "",
                                                          helpText: counter.help)
                    registry.makeGauge(descriptor: descriptor,
                                       labels: counter.labels.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
                        .set(to: Double(counter.value))
                }
                for counter in s.stage where !counter.gauge {
                    advance(counter.name, help: counter.help,
                            labels: [label] + counter.labels.sorted { $0.key < $1.key }.map { ($0.key, $0.value) },
                            to: counter.value, &last)
                }
                let mean = MetricNameDescriptor(namespace: "offload", metricName: "segments_per_super_packet", unitName: "",
                                                helpText: "Mean segments per super-packet written.")
                registry.makeGauge(descriptor: mean, labels: [label]).set(to: s.meanSegmentsPerSuperPacket)
            }
        }
        return registry.emitToString()
    }

    /// Advances the counter `offload_<name>_total` with these labels to `value`.
    func advance(_ name: String, help: String, labels: [(String, String)], to value: Int, _ last: inout [String: Int]) {
        let descriptor = MetricNameDescriptor(namespace: "offload", metricName: name, unitName: "total", helpText: help)
        let counter = registry.makeCounter(descriptor: descriptor, labels: labels)
        let key = name + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
        let delta = value - last[key, default: 0]
        if delta > 0 { counter.increment(by: Int64(delta)) }
        last[key] = max(value, last[key, default: 0])
    }
}
