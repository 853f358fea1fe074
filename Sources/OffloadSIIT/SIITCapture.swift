import Logging
import OffloadCapture
import OffloadEngine
import OffloadForwarder
import OffloadWire

/// What ``SIITCapture/translate(input:output:configuration:mtu4:mtu6:)`` did.
public struct SIITCaptureReport: Codable, Hashable, Sendable, TranslatorCaptureReport {
    /// Records read.
    public var packetsIn = 0
    /// Packets written (translated, and forwarded as a router would: TTL − 1).
    public var written = 0
    /// ICMP errors the translator would have sent back (too big for the MTU, TTL expired, UDP
    /// without a checksum, refused extension headers); written too, after the packet they answer.
    public var icmpErrors = 0
    /// The translation stage's counters (per outcome, drops by reason).
    public var translation = SIITStatistics()
    /// IP packets whose headers do not parse (dropped: a translator cannot pass them on).
    public var malformed = 0
    /// Records that are not IP (ARP and the like).
    public var notIP = 0
    /// Records cut short by the capture's snap length (not translated: the payload is missing).
    public var snapped = 0
    /// Records whose packet went on to the other side (translated, whole, as segments or as fragments).
    public var forwarded = 0
    /// Packets written to the other side: ``forwarded`` plus the extra segments and fragments.
    public var packetsToOtherSide = 0
    /// Super-packets translated once in place (records that carry GSO facts, as `offload coalesce`
    /// writes them in pcapng).
    public var superPackets = 0
    /// Translated packets the forwarding decision refused: too big for the MTU with DF set (or a
    /// segment too big), or TTL expired. Each is answered by an ICMP error unless rate-limited.
    public var refused = 0
    /// ICMP errors the rate limit held back (as Linux's `icmp_ratelimit` would).
    public var icmpSuppressed = 0
    /// Multicast, broadcast and link-local packets, which a router does not forward.
    public var notForwarded = 0

    /// Every record is accounted for exactly once: forwarded, refused, not forwarded, dropped by
    /// the translator (by reason), malformed, not IP or cut short.
    public var reconciles: Bool {
        packetsIn == forwarded + refused + notForwarded + translation.droppedTotal + malformed + notIP + snapped
    }
}

/// The SIIT translator's dataplane without devices (``OfflineDataplane`` with ``SIITStage``s).
public struct SIITOfflineDataplane: ~Copyable {
    var dataplane: OfflineDataplane<SIITStage>

    /// Creates the dataplane. ICMP errors the forwarder itself sends (too big, time exceeded) come
    /// from the configuration's own addresses.
    public init(configuration: SIITConfiguration, mtu4: Int = 65_535, mtu6: Int = 65_535) {
        dataplane = OfflineDataplane(ownIPv4: configuration.ownIPv4, ownIPv6: configuration.ownIPv6, mtu4: mtu4, mtu6: mtu6,
                                     label: "offload.siit") { _ in SIITStage(configuration: configuration) }
    }

    /// Translates one IP packet (from its IP header): what goes on to the other side, and what goes
    /// back to the packet's source (ICMP errors).
    public mutating func translate(_ packet: [UInt8], gso: GSOInfo? = nil, now: UInt64 = 0)
        -> (forwarded: [[UInt8]], returned: [[UInt8]])
    {
        dataplane.translate(packet, gso: gso, now: now)
    }

    /// The translation counters of both directions.
    public var translation: SIITStatistics {
        let stages = dataplane.stages
        var s = stages.fromIPv4.statistics
        s.add(stages.fromIPv6.statistics)
        return s
    }

    /// The forwarding counters of both directions.
    public var forwarding: ForwarderStatistics { dataplane.forwarding }
}

/// Translates a capture offline with ``SIITStage`` through the forwarder's pipeline (no devices),
/// so that every rule can be checked from files.
public enum SIITCapture {
    /// Reads `input` (any link type the wire layer knows), translates each IP packet, and writes the
    /// results (and the ICMP errors the translator would send back) to `output` as raw IP
    /// (`LINKTYPE_RAW`: one link header cannot say both families). Packets are translated one by
    /// one (no GRO), as they were captured.
    /// - Throws: ``CaptureError`` for an unreadable or corrupt input, or an unwritable output; the
    ///   packets before a damaged record are written first.
    public static func translate(input: String, output: String, configuration: SIITConfiguration,
                                 mtu4: Int = 65_535, mtu6: Int = 65_535) throws(CaptureError) -> SIITCaptureReport {
        var dataplane = SIITOfflineDataplane(configuration: configuration, mtu4: mtu4, mtu6: mtu6)
        var counts = OfflineCaptureCounts()
        var failure: CaptureError?
        do { try dataplane.dataplane.translateCapture(input: input, output: output, counts: &counts) } catch { failure = error }
        var report = SIITCaptureReport()
        report.take(counts)
        report.translation = dataplane.translation
        report.superPackets = report.translation.superPackets
        let forwarding = dataplane.forwarding
        report.refused = forwarding.dropped
        report.icmpSuppressed = forwarding.icmpSuppressed
        report.notForwarded = forwarding.notForwarded
        report.malformed = max(0, forwarding.stageDropped - report.translation.droppedTotal)
        if let failure { throw failure }
        return report
    }
}
