import Logging
import OffloadCapture
import OffloadEngine
import OffloadForwarder
import OffloadWire

/// What ``NAT64Capture/translate(input:output:configuration:mtu4:mtu6:)`` did.
public struct NAT64CaptureReport: Codable, Hashable, Sendable {
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

/// The NAT64's dataplane without devices: a ``ForwardingPipeline`` per family sharing one
/// ``NAT64State``, with the capture's timestamps as the clock, so sessions live and die in capture
/// time and the order of packets matters as it does live. For captures, tests and fuzzing.
public struct NAT64OfflineDataplane: ~Copyable {
    var fromIPv4: ForwardingPipeline<NAT64Stage>
    var fromIPv6: ForwardingPipeline<NAT64Stage>
    /// The shared tables.
    public let state: NAT64State
    let forwarded = RecordingSink(takesVirtioHeaders: false)
    let returned = RecordingSink(takesVirtioHeaders: false)
    var batch = PacketBatch(packetCapacity: 1, byteCapacity: 1 << 17)

    /// A dataplane whose IPv4 side has MTU `mtu4` and IPv6 side `mtu6`.
    public init(configuration: NAT64Configuration, mtu4: Int = 65_535, mtu6: Int = 65_535) {
        var gro = GROConfiguration()
        gro.tcp = false  // one packet in, one packet out: nothing is merged offline
        gro.udp = false
        let state = NAT64State(configuration: configuration)
        self.state = state
        func pipeline(_ direction: Direction, _ mtu: Int) -> ForwardingPipeline<NAT64Stage> {
            ForwardingPipeline(direction: direction, gro: gro, egressMTU: mtu, icmpSourceV4: configuration.ownIPv4,
                               icmpSourceV6: configuration.ownIPv6, virtioHeaders: false, stage: NAT64Stage(state: state),
                               logger: Logger(label: "offload.nat64"))
        }
        fromIPv6 = pipeline(.lanToWan, mtu4)
        fromIPv4 = pipeline(.wanToLan, mtu6)
    }

    /// Translates one IP packet (from its IP header) at time `now` (nanoseconds): what goes on to
    /// the other side, and what goes back (ICMP errors).
    public mutating func translate(_ packet: [UInt8], gso: GSOInfo? = nil, now: UInt64 = 0)
        -> (forwarded: [[UInt8]], returned: [[UInt8]])
    {
        batch.removeAll()
        batch.append(packet, metadata: PacketMetadata(linkType: .raw, checksum: .unverified, gso: gso))
        if packet.first.map({ $0 >> 4 }) == 6 {
            fromIPv6.process(batch, now: now, egress: forwarded, back: returned)
        } else {
            fromIPv4.process(batch, now: now, egress: forwarded, back: returned)
        }
        defer {
            forwarded.record.writes.removeAll(keepingCapacity: true)
            returned.record.writes.removeAll(keepingCapacity: true)
        }
        return (forwarded.writes.map(\.bytes), returned.writes.map(\.bytes))
    }

    /// The translation counters of both directions.
    public var translation: NAT64Statistics {
        var s = fromIPv4.stage.statistics
        s.add(fromIPv6.stage.statistics)
        return s
    }

    /// The forwarding counters of both directions.
    public var forwarding: ForwarderStatistics {
        var s = fromIPv4.snapshot
        s.add(fromIPv6.snapshot)
        return s
    }
}

/// Translates a capture offline through ``NAT64Stage`` (no devices).
public enum NAT64Capture {
    /// Reads `input`, translates each IP packet in order with the capture's time as the clock, and
    /// writes the results and the ICMP errors the translator would send back to `output` (raw IP).
    /// - Throws: ``CaptureError`` for an unreadable or corrupt input, or an unwritable output; the
    ///   packets before a damaged record are written first.
    public static func translate(input: String, output: String, configuration: NAT64Configuration,
                                 mtu4: Int = 65_535, mtu6: Int = 65_535) throws(CaptureError) -> NAT64CaptureReport {
        var reader = try CaptureReader(path: input)
        var writer = try CaptureWriter(path: output, format: .pcap(nanosecond: true, bigEndian: false),
                                       interfaces: [CaptureInterface(linkType: .raw)])
        var dataplane = NAT64OfflineDataplane(configuration: configuration, mtu4: mtu4, mtu6: mtu6)
        var report = NAT64CaptureReport()
        var failure: CaptureError?
        var last: UInt64 = 0
        while true {
            let next: CapturedPacket?
            do { next = try reader.next() } catch {
                failure = error
                break
            }
            guard let packet = next else { break }
            report.packetsIn += 1
            last = max(last, packet.info.timestamp)
            if packet.info.capturedLength < packet.info.originalLength {
                report.snapped += 1
                continue
            }
            guard let (n, network) = unsafe try? PacketLayout.linkHeader(packet.bytes.span.bytes, linkType: packet.linkType),
                network == .ipv4 || network == .ipv6
            else {
                report.notIP += 1
                continue
            }
            let (forwarded, returned) = dataplane.translate(Array(packet.bytes[n...]), gso: packet.info.gso,
                                                            now: packet.info.timestamp)
            for bytes in forwarded { try writer.writePacket(bytes, timestamp: packet.info.timestamp) }
            for bytes in returned { try writer.writePacket(bytes, timestamp: packet.info.timestamp + 1000) }
            report.written += forwarded.count + returned.count
            report.packetsToOtherSide += forwarded.count
            if !forwarded.isEmpty { report.forwarded += 1 }
            report.icmpErrors += returned.count
        }
        try writer.flush()
        report.translation = dataplane.translation
        let forwarding = dataplane.forwarding
        report.refused = forwarding.dropped
        report.notForwarded = forwarding.notForwarded
        report.malformed = max(0, forwarding.stageDropped - report.translation.droppedTotal
            - report.translation.fragmentsHeld)
        report.state = dataplane.state.snapshot(now: last, limit: 100)
        if let failure { throw failure }
        return report
    }
}
