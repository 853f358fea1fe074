import Logging
import OffloadCapture
import OffloadEngine
import OffloadForwarder
import OffloadSIIT
import OffloadWire

/// What ``NAT64Capture/translate(input:output:configuration:mtu4:mtu6:)`` did.
public struct NAT64CaptureReport: Codable, Hashable, Sendable, TranslatorCaptureReport {
    /// Records read.
    public var packetsIn = 0
    /// Packets written (translated and forwarded, and the ICMP errors sent back).
    public var written = 0
    /// Records whose packet went on to the other side.
    public var forwarded = 0
    /// Packets written to the other side (with extra segments and fragments).
    public var packetsToOtherSide = 0
    /// ICMP errors sent back (the translator's, and the forwarder's: too big, TTL expired).
    public var icmpErrors = 0
    /// The translation counters (per outcome, drops by reason).
    public var translation = NAT64Statistics()
    /// Refused by the forwarding decision (too big with DF, TTL expired).
    public var refused = 0
    /// Multicast and link-local packets, which a router does not forward.
    public var notForwarded = 0
    /// IP packets whose headers do not parse.
    public var malformed = 0
    /// Records that are not IP.
    public var notIP = 0
    /// Records cut short by the snap length.
    public var snapped = 0
    /// The tables at the end of the capture (in capture time).
    public var state: NAT64Snapshot?
}

/// The NAT64's dataplane without devices: an ``OfflineDataplane`` whose two stages share one
/// ``NAT64State``, with the capture's timestamps as the clock, so sessions live and die in capture
/// time and the order of packets matters as it does live. For captures, tests and fuzzing.
public struct NAT64OfflineDataplane: ~Copyable {
    var dataplane: OfflineDataplane<NAT64Stage>
    /// The shared tables.
    public let state: NAT64State

    /// A dataplane whose IPv4 side has MTU `mtu4` and IPv6 side `mtu6`.
    public init(configuration: NAT64Configuration, mtu4: Int = 65_535, mtu6: Int = 65_535) {
        let state = NAT64State(configuration: configuration)
        self.state = state
        dataplane = OfflineDataplane(ownIPv4: configuration.ownIPv4, ownIPv6: configuration.ownIPv6, mtu4: mtu4, mtu6: mtu6,
                                     label: "offload.nat64") { _ in NAT64Stage(state: state) }
    }

    /// Translates one IP packet (from its IP header) at time `now` (nanoseconds): what goes on to
    /// the other side, and what goes back (ICMP errors).
    public mutating func translate(_ packet: [UInt8], gso: GSOInfo? = nil, now: UInt64 = 0)
        -> (forwarded: [[UInt8]], returned: [[UInt8]])
    {
        dataplane.translate(packet, gso: gso, now: now)
    }

    /// The translation counters of both directions.
    public var translation: NAT64Statistics {
        let stages = dataplane.stages
        var s = stages.fromIPv4.statistics
        s.add(stages.fromIPv6.statistics)
        return s
    }

    /// The forwarding counters of both directions.
    public var forwarding: ForwarderStatistics { dataplane.forwarding }
}

/// Translates a capture offline through ``NAT64Stage`` (no devices).
public enum NAT64Capture {
    /// Reads `input`, translates each IP packet in order with the capture's time as the clock, and
    /// writes the results and the ICMP errors the translator would send back to `output` (raw IP).
    /// - Throws: ``CaptureError`` for an unreadable or corrupt input, or an unwritable output; the
    ///   packets before a damaged record are written first.
    public static func translate(input: String, output: String, configuration: NAT64Configuration,
                                 mtu4: Int = 65_535, mtu6: Int = 65_535) throws(CaptureError) -> NAT64CaptureReport {
        var dataplane = NAT64OfflineDataplane(configuration: configuration, mtu4: mtu4, mtu6: mtu6)
        var counts = OfflineCaptureCounts()
        var failure: CaptureError?
        do { try dataplane.dataplane.translateCapture(input: input, output: output, counts: &counts) } catch { failure = error }
        var report = NAT64CaptureReport()
        report.take(counts)
        report.translation = dataplane.translation
        let forwarding = dataplane.forwarding
        report.refused = forwarding.dropped
        report.notForwarded = forwarding.notForwarded
        report.malformed = max(0, forwarding.stageDropped - report.translation.droppedTotal
            - report.translation.fragmentsHeld)
        report.state = dataplane.state.snapshot(now: counts.lastTimestamp, limit: 100)
        if let failure { throw failure }
        return report
    }
}
