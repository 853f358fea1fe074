import Logging
import OffloadCapture
import OffloadEngine
import OffloadForwarder
import OffloadWire

/// What ``SIITCapture/translate(input:output:configuration:mtu4:mtu6:)`` did.
public struct SIITCaptureReport: Codable, Hashable, Sendable {
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

/// The translator's dataplane without devices: one ``ForwardingPipeline`` per family (IPv4 in,
/// written to an IPv6 side of MTU `mtu6`; IPv6 in, to an IPv4 side of MTU `mtu4`), each packet
/// translated, decided on and written as `offload siit` on TUN devices would. For captures and tests.
public struct SIITOfflineDataplane: ~Copyable {
    var fromIPv4: ForwardingPipeline<SIITStage>
    var fromIPv6: ForwardingPipeline<SIITStage>
    let forwarded = RecordingSink(takesVirtioHeaders: false)
    let returned = RecordingSink(takesVirtioHeaders: false)
    var batch = PacketBatch(packetCapacity: 1, byteCapacity: 1 << 17)

    /// Creates the dataplane. ICMP errors the forwarder itself sends (too big, time exceeded) come
    /// from the configuration's own addresses.
    public init(configuration: SIITConfiguration, mtu4: Int = 65_535, mtu6: Int = 65_535) {
        var gro = GROConfiguration()
        gro.tcp = false  // one packet in, one packet out: nothing is merged offline
        gro.udp = false
        func pipeline(_ mtu: Int) -> ForwardingPipeline<SIITStage> {
            ForwardingPipeline(direction: .lanToWan, gro: gro, egressMTU: mtu, icmpSourceV4: configuration.ownIPv4,
                               icmpSourceV6: configuration.ownIPv6, virtioHeaders: false,
                               stage: SIITStage(configuration: configuration), logger: Logger(label: "offload.siit"))
        }
        fromIPv4 = pipeline(mtu6)
        fromIPv6 = pipeline(mtu4)
    }

    /// Translates one IP packet (from its IP header): what goes on to the other side, and what goes
    /// back to the packet's source (ICMP errors).
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
    public var translation: SIITStatistics {
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
        var reader = try CaptureReader(path: input)
        var writer = try CaptureWriter(path: output, format: .pcap(nanosecond: true, bigEndian: false),
                                       interfaces: [CaptureInterface(linkType: .raw)])
        var dataplane = SIITOfflineDataplane(configuration: configuration, mtu4: mtu4, mtu6: mtu6)
        var report = SIITCaptureReport()
        var failure: CaptureError?
        while true {
            let next: CapturedPacket?
            do { next = try reader.next() } catch {
                failure = error
                break
            }
            guard let packet = next else { break }
            report.packetsIn += 1
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
            // An ICMP error answers the packet: it is written after it, 1 µs later, so that a reader
            // sorting by time sees the packet first.
            for bytes in forwarded { try writer.writePacket(bytes, timestamp: packet.info.timestamp) }
            for bytes in returned { try writer.writePacket(bytes, timestamp: packet.info.timestamp + 1000) }
            report.written += forwarded.count + returned.count
            report.packetsToOtherSide += forwarded.count
            if !forwarded.isEmpty { report.forwarded += 1 }
            report.icmpErrors += returned.count
        }
        try writer.flush()
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
