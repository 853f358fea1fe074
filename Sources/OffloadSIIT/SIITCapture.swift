import Logging
import OffloadCapture
import OffloadEngine
import OffloadForwarder
import OffloadWire

/// What ``SIITCapture/translate(input:output:prefix:egressMTU:)`` did.
public struct SIITCaptureReport: Codable, Hashable, Sendable {
    /// Records read.
    public var packetsIn = 0
    /// Packets written (translated, and forwarded as a router would: TTL − 1).
    public var written = 0
    /// Translated IPv4 → IPv6 and IPv6 → IPv4.
    public var toIPv6 = 0, toIPv4 = 0
    /// ICMP errors the translator would have sent back (too big for `egressMTU`, TTL expired).
    public var icmpErrors = 0
    /// Packets the translator dropped: outside the prefix, UDP without a checksum, or not yet
    /// translated (ICMP, fragments, IPv6 extension headers, other protocols).
    public var untranslatableAddress = 0, udpWithoutChecksum = 0, notTranslated = 0
    /// IP packets whose headers do not parse (dropped: a translator cannot pass them on).
    public var malformed = 0
    /// Records that are not IP (ARP and the like).
    public var notIP = 0
    /// Records cut short by the capture's snap length (not translated: the payload is missing).
    public var snapped = 0
}

/// Translates a capture offline with ``SIITStage`` through the forwarder's pipeline (no devices),
/// so that every rule can be checked from files.
public enum SIITCapture {
    /// Reads `input` (any link type the wire layer knows), translates each IP packet, and writes the
    /// results to `output` as raw IP (`LINKTYPE_RAW`: the link header cannot say both families).
    /// Packets are translated one by one (no GRO), as they were captured.
    /// - Throws: ``CaptureError`` for an unreadable or corrupt input, or an unwritable output; the
    ///   packets before a damaged record are written first.
    public static func translate(input: String, output: String, prefix: IPv6Prefix96, egressMTU: Int = 65_535)
        throws(CaptureError) -> SIITCaptureReport
    {
        var reader = try CaptureReader(path: input)
        var writer = try CaptureWriter(path: output, format: .pcap(nanosecond: true, bigEndian: false),
                                       interfaces: [CaptureInterface(linkType: .raw)])
        var gro = GROConfiguration()
        gro.tcp = false  // one packet in, one packet out: nothing is merged offline
        gro.udp = false
        var pipeline = ForwardingPipeline(direction: .lanToWan, gro: gro, egressMTU: egressMTU,
                                          icmpSourceV4: IPv4Address(192, 0, 2, 254),
                                          icmpSourceV6: IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe),
                                          virtioHeaders: false, stage: SIITStage(prefix: prefix),
                                          logger: Logger(label: "offload.siit"))
        let egress = RecordingSink(takesVirtioHeaders: false)
        let back = RecordingSink(takesVirtioHeaders: false)
        var batch = PacketBatch(packetCapacity: 1, byteCapacity: 1 << 17)
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
            guard let (n, network) = try? PacketLayout.linkHeader(packet.bytes.span.bytes, linkType: packet.linkType),
                network == .ipv4 || network == .ipv6
            else {
                report.notIP += 1
                continue
            }
            batch.removeAll()
            batch.append(Array(packet.bytes[n...]), metadata: PacketMetadata(linkType: .raw, checksum: .unverified))
            pipeline.process(batch, now: packet.info.timestamp, egress: egress, back: back)
            for write in egress.record.writes {
                try writer.writePacket(write.bytes, timestamp: packet.info.timestamp)
                report.written += 1
            }
            egress.record.writes.removeAll(keepingCapacity: true)
            back.record.writes.removeAll(keepingCapacity: true)
        }
        try writer.flush()
        let s = pipeline.stage.statistics
        report.toIPv6 = s.toIPv6
        report.toIPv4 = s.toIPv4
        report.untranslatableAddress = s.untranslatableAddress
        report.udpWithoutChecksum = s.udpWithoutChecksum
        report.notTranslated = s.notTranslated
        report.icmpErrors = pipeline.statistics.icmpSent + pipeline.statistics.icmpSuppressed
        report.malformed = pipeline.statistics.stageDropped - s.untranslatableAddress - s.udpWithoutChecksum - s.notTranslated
        if let failure { throw failure }
        return report
    }
}
