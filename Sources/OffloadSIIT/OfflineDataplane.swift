import Logging
import OffloadCapture
import OffloadEngine
import OffloadForwarder
import OffloadWire

/// A translator's dataplane without devices: one ``ForwardingPipeline`` per family (IPv6 in,
/// written to an IPv4 side of MTU `mtu4`; IPv4 in, to an IPv6 side of MTU `mtu6`), each packet
/// translated, decided on and written as the live translator on TUN devices would. Nothing is
/// merged (one packet in, one packet out); super-packets that carry GSO facts go through whole.
/// For captures, tests and fuzzing; ``SIITStage`` and the stateful NAT64 share it.
public struct OfflineDataplane<S: Stage>: ~Copyable {
    var fromIPv4: ForwardingPipeline<S>
    var fromIPv6: ForwardingPipeline<S>
    let forwarded = RecordingSink(takesVirtioHeaders: false)
    let returned = RecordingSink(takesVirtioHeaders: false)
    var batch = PacketBatch(packetCapacity: 1, byteCapacity: 1 << 17)

    /// A dataplane whose stages `makeStage` makes (per direction: `lanToWan` takes IPv6, `wanToLan`
    /// IPv4). ICMP errors the forwarder itself sends come from `ownIPv4` and `ownIPv6`.
    public init(ownIPv4: IPv4Address, ownIPv6: IPv6Address, mtu4: Int = 65_535, mtu6: Int = 65_535, label: String,
                makeStage: (Direction) -> S) {
        var gro = GROConfiguration()
        gro.tcp = false
        gro.udp = false
        func pipeline(_ direction: Direction, _ mtu: Int) -> ForwardingPipeline<S> {
            ForwardingPipeline(direction: direction, gro: gro, egressMTU: mtu, icmpSourceV4: ownIPv4, icmpSourceV6: ownIPv6,
                               virtioHeaders: false, stage: makeStage(direction), logger: Logger(label: label))
        }
        fromIPv6 = pipeline(.lanToWan, mtu4)
        fromIPv4 = pipeline(.wanToLan, mtu6)
    }

    /// Translates one IP packet (from its IP header) at `now` (nanoseconds): what goes on to the
    /// other side, and what goes back to the packet's source (ICMP errors).
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

    /// The stages of the IPv4-in and the IPv6-in pipelines.
    public var stages: (fromIPv4: S, fromIPv6: S) { (fromIPv4.stage, fromIPv6.stage) }

    /// The forwarding counters of both directions.
    public var forwarding: ForwarderStatistics {
        var s = fromIPv4.snapshot
        s.add(fromIPv6.snapshot)
        return s
    }
}

/// What ``OfflineDataplane/translateCapture(input:output:)`` counted, for the translators' reports.
public struct OfflineCaptureCounts: Sendable {
    /// Records read, written, forwarded (records whose packet went on), packets to the other side,
    /// ICMP errors back, records that are not IP, records cut short.
    public var packetsIn = 0, written = 0, forwarded = 0, packetsToOtherSide = 0, icmpErrors = 0, notIP = 0, snapped = 0
    /// The last record's time (nanoseconds).
    public var lastTimestamp: UInt64 = 0

    /// Zero counts.
    public init() {}
}

extension OfflineDataplane {
    /// Reads `input` (any link type the wire layer knows), translates each IP packet in order with
    /// the capture's time as the clock, and writes the results and the ICMP errors sent back to
    /// `output` as raw IP (`LINKTYPE_RAW`: one link header cannot say both families). An error is
    /// written after the packet it answers, 1 µs later, so that a reader sorting by time sees the
    /// packet first.
    /// - Throws: ``CaptureError`` for an unreadable or corrupt input, or an unwritable output; the
    ///   packets before a damaged record are written first, and `counts` holds what was done.
    public mutating func translateCapture(input: String, output: String, counts: inout OfflineCaptureCounts)
        throws(CaptureError)
    {
        var reader = try CaptureReader(path: input)
        var writer = try CaptureWriter(path: output, format: .pcap(nanosecond: true, bigEndian: false),
                                       interfaces: [CaptureInterface(linkType: .raw)])
        var failure: CaptureError?
        while true {
            let next: CapturedPacket?
            do { next = try reader.next() } catch {
                failure = error
                break
            }
            guard let packet = next else { break }
            counts.packetsIn += 1
            counts.lastTimestamp = max(counts.lastTimestamp, packet.info.timestamp)
            if packet.info.capturedLength < packet.info.originalLength {
                counts.snapped += 1
                continue
            }
            guard let (n, network) = unsafe try? PacketLayout.linkHeader(packet.bytes.span.bytes, linkType: packet.linkType),
                network == .ipv4 || network == .ipv6
            else {
                counts.notIP += 1
                continue
            }
            let (out, back) = translate(Array(packet.bytes[n...]), gso: packet.info.gso, now: packet.info.timestamp)
            for bytes in out { try writer.writePacket(bytes, timestamp: packet.info.timestamp) }
            for bytes in back { try writer.writePacket(bytes, timestamp: packet.info.timestamp + 1000) }
            counts.written += out.count + back.count
            counts.packetsToOtherSide += out.count
            if !out.isEmpty { counts.forwarded += 1 }
            counts.icmpErrors += back.count
        }
        try writer.flush()
        if let failure { throw failure }
    }
}

/// A translator's capture report: the counts every translator's offline run shares, taken from
/// ``OfflineCaptureCounts`` in one place.
public protocol TranslatorCaptureReport {
    /// Records read.
    var packetsIn: Int { get set }
    /// Packets written (to the other side and back).
    var written: Int { get set }
    /// Records whose packet went on to the other side.
    var forwarded: Int { get set }
    /// Packets written to the other side.
    var packetsToOtherSide: Int { get set }
    /// ICMP errors written back.
    var icmpErrors: Int { get set }
    /// Records that are not IP.
    var notIP: Int { get set }
    /// Records cut short by the snap length.
    var snapped: Int { get set }
}

extension TranslatorCaptureReport {
    /// Takes the capture loop's counts.
    public mutating func take(_ counts: OfflineCaptureCounts) {
        packetsIn = counts.packetsIn
        written = counts.written
        forwarded = counts.forwarded
        packetsToOtherSide = counts.packetsToOtherSide
        icmpErrors = counts.icmpErrors
        notIP = counts.notIP
        snapped = counts.snapped
    }
}
