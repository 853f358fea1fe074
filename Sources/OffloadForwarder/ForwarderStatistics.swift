import OffloadEngine

/// Counters of one direction of a ``Forwarder``.
public struct ForwarderStatistics: Hashable, Sendable, Codable {
    /// Packets read from the ingress device (a TSO super-packet counts once).
    public var packetsIn = 0
    /// Bytes read.
    public var bytesIn = 0
    /// Super-packets the kernel handed over (TSO), kept whole.
    public var tsoIn = 0
    /// Packets written to the egress device (a super-packet counts once).
    public var packetsOut = 0
    /// Bytes written.
    public var bytesOut = 0
    /// Super-packets written with a virtio header (GSO).
    public var superPacketsOut = 0
    /// Segments inside those super-packets.
    public var segmentsInSuperPackets = 0
    /// Super-packets segmented in software before writing.
    public var segmentedInSoftware = 0
    /// IPv4 fragments written (DF clear, too big).
    public var fragmentsOut = 0
    /// ICMP errors sent back through the ingress device.
    public var icmpSent = 0
    /// ICMP errors not sent (rate limit, or not allowed).
    public var icmpSuppressed = 0
    /// Packets dropped (too big with DF, TTL expired).
    public var dropped = 0
    /// GSO writes the kernel refused (EINVAL), after which this direction segments instead.
    public var gsoFallbacks = 0
    /// Packets read with a virtio header that did not fit them (dropped).
    public var virtioRejected = 0
    /// Writes that failed.
    public var writeErrors = 0
    /// Multicast, broadcast or link-local packets, which a router does not forward.
    public var notForwarded = 0
    /// Packets the stage dropped.
    public var stageDropped = 0
    /// Packets the stage answered (an ICMP error back to the source) instead of forwarding.
    public var stageReplies = 0
    /// Packets the stage took whole (`StageVerdict.wholePacket`, its slow path).
    public var stageRewrites = 0
    /// TCP SYNs whose MSS option was lowered to fit the egress (``ForwardingPipeline/mssClampMTU``).
    public var mssClamped = 0
    /// What became of each packet GRO delivered (a super-packet once), exactly one of these each:
    /// sent on (written whole, as a super-packet, or as its segments or fragments; a failed write
    /// counts here too, and in ``writeErrors``), refused by the forwarding decision (too big with DF,
    /// TTL expired), answered by the stage with an error instead, not forwarded (multicast,
    /// broadcast, link-local), dropped by the stage. `gro.packetsOut` is their sum (see
    /// ``deliveriesReconcile``).
    public var deliveredSentOn = 0, deliveredRefused = 0, deliveredAnswered = 0, deliveredNotForwarded = 0,
               deliveredDropped = 0
    /// The GRO engine's counters.
    public var gro = GROStatistics()
    /// The stage's own counters (``Stage/counters``), as of the last snapshot.
    public var stage: [StageCounter] = []

    /// Creates zeroed counters.
    public init() {}

    /// Every plain counter once: its published name (`offload_<name>_total`), its help text and
    /// where it is kept. ``add(_:)`` and ``counters`` are made from this table.
    static let table: [(name: String, help: String, field: WritableKeyPath<ForwarderStatistics, Int> & Sendable)] = [
        ("packets_in", "Packets read from the ingress device.", \.packetsIn),
        ("bytes_in", "Bytes read from the ingress device.", \.bytesIn),
        ("tso_in", "TSO super-packets handed over by the kernel.", \.tsoIn),
        ("packets_out", "Packets written to the egress device.", \.packetsOut),
        ("bytes_out", "Bytes written to the egress device.", \.bytesOut),
        ("super_packets_out", "Super-packets written with a virtio header.", \.superPacketsOut),
        ("super_packet_segments", "Segments inside super-packets written.", \.segmentsInSuperPackets),
        ("segmented_in_software", "Super-packets segmented before writing.", \.segmentedInSoftware),
        ("fragments_out", "IPv4 fragments written.", \.fragmentsOut),
        ("icmp_sent", "ICMP errors sent to sources.", \.icmpSent),
        ("icmp_suppressed", "ICMP errors not sent (rate limit).", \.icmpSuppressed),
        ("dropped", "Packets dropped (too big with DF, TTL expired).", \.dropped),
        ("gso_fallbacks", "GSO writes refused by the kernel.", \.gsoFallbacks),
        ("virtio_rejected", "Packets whose virtio header did not fit them.", \.virtioRejected),
        ("write_errors", "Failed writes.", \.writeErrors),
        ("not_forwarded", "Multicast, broadcast or link-local packets.", \.notForwarded),
        ("stage_dropped", "Packets the stage dropped.", \.stageDropped),
        ("stage_replies", "Packets the stage answered with an error to the source.", \.stageReplies),
        ("stage_rewrites", "Packets the stage took whole (its slow path).", \.stageRewrites),
        ("mss_clamped", "TCP SYNs whose MSS option was lowered to fit the egress MTU.", \.mssClamped),
        ("delivered_sent_on", "Packets GRO delivered that were sent on (whole, GSO, segments or fragments).",
         \.deliveredSentOn),
        ("delivered_refused", "Packets GRO delivered that the decision refused (too big with DF, TTL).", \.deliveredRefused),
        ("delivered_answered", "Packets GRO delivered that the stage answered with an error.", \.deliveredAnswered),
        ("delivered_not_forwarded", "Packets GRO delivered that a router does not forward.", \.deliveredNotForwarded),
        ("delivered_dropped", "Packets GRO delivered that the stage dropped.", \.deliveredDropped),
    ]

    /// Packets GRO delivered, by outcome: the five `delivered…` counters.
    public var deliveries: Int {
        deliveredSentOn + deliveredRefused + deliveredAnswered + deliveredNotForwarded + deliveredDropped
    }

    /// Whether every packet GRO delivered has exactly one outcome (as of a ``ForwardingPipeline``
    /// snapshot, where ``gro`` is filled in).
    public var deliveriesReconcile: Bool { deliveries == gro.packetsOut }

    /// Adds another queue's counters.
    public mutating func add(_ o: ForwarderStatistics) {
        for entry in Self.table { self[keyPath: entry.field] += o[keyPath: entry.field] }
        gro.add(o.gro)
        for counter in o.stage {
            if let k = stage.firstIndex(where: { $0.name == counter.name && $0.labels == counter.labels }) {
                stage[k].value += counter.value
            } else {
                stage.append(counter)
            }
        }
    }

    /// A stage counter's value (0 when the stage has no such counter).
    public func stageCounter(_ name: String, _ labels: [String: String] = [:]) -> Int {
        stage.first { $0.name == name && $0.labels == labels }?.value ?? 0
    }

    /// Mean segments per super-packet written (0 when none).
    public var meanSegmentsPerSuperPacket: Double {
        superPacketsOut == 0 ? 0 : Double(segmentsInSuperPackets) / Double(superPacketsOut)
    }

    /// Every counter with its name (published as `offload_<name>_total`) and help text: what
    /// ``ForwarderMetrics`` publishes.
    public var counters: [(name: String, help: String, value: Int)] {
        Self.table.map { ($0.name, $0.help, self[keyPath: $0.field]) }
    }
}

/// One counter a ``Stage`` keeps, published as `offload_<name>_total{labels}`.
public struct StageCounter: Hashable, Sendable, Codable {
    /// The metric name (`siit_translated`).
    public var name: String
    /// Its help text.
    public var help: String
    /// Labels (`to="ipv6"`, `reason="untranslatable_address"`).
    public var labels: [String: String]
    /// The value.
    public var value: Int
    /// A level (published as the gauge `offload_<name>`), not a count: sessions held, say.
    public var gauge: Bool = false

    /// Creates a counter (or, with `gauge`, a gauge).
    public init(_ name: String, help: String, labels: [String: String] = [:], value: Int, gauge: Bool = false) {
        self.name = name
        self.help = help
        self.labels = labels
        self.value = value
        self.gauge = gauge
    }
}
