import OffloadCapture
import OffloadEngine
import OffloadWire

/// What ``TunnelCapture`` did to a capture.
public struct TunnelCaptureReport: Codable, Hashable, Sendable {
    /// Records read.
    public var packetsIn = 0
    /// Records written (outer datagrams when encapsulating, inner packets when decapsulating).
    public var written = 0
    /// Super-packets (pcapng GSO facts) split into one datagram per segment.
    public var superPackets = 0
    /// Records that are not IP, or cut short (not encapsulated: the payload is missing).
    public var notIP = 0, snapped = 0
    /// Decapsulating: UDP datagrams that are not for the tunnel's port, or not UDP at all.
    public var notTunnel = 0
    /// Decapsulating: signalling (GTP-U echo, error indication; NAT keepalives, IKE), not written.
    public var signalling = 0
    /// Encapsulating: packets the encoder refused, by reason (no SA whose selectors match).
    public var refused: [TunnelDropReason: Int] = [:]
    /// Decapsulating: datagrams refused, by reason.
    public var dropped: [TunnelDropReason: Int] = [:]
}

/// Tunnel encapsulation and decapsulation of captures, offline: what the endpoint would put on
/// the underlay for each packet, and what it would take off.
public enum TunnelCapture {
    /// Wraps each packet of `input` (IP packets for GTP-U, Ethernet frames for VXLAN) in outer
    /// IP/UDP/tunnel headers (`local` → `remote`, the protocol's port) and writes the outer packets
    /// to `output` (raw IP). A super-packet with GSO facts (a pcapng from `offload coalesce`)
    /// becomes one datagram per segment, as on the wire.
    /// - Throws: ``CaptureError``; a codec that cannot work is reported as an unsupported input.
    public static func encapsulate<Codec: TunnelCodec>(input: String, output: String, codec: Codec, local: IPAddress,
                                                       remote: IPAddress) throws(CaptureError) -> TunnelCaptureReport {
        var reader = try CaptureReader(path: input)
        var writer = try CaptureWriter(path: output, format: .pcap(nanosecond: true, bigEndian: false),
                                       interfaces: [CaptureInterface(linkType: .raw)])
        let tunnel = codec
        var encapsulator: TunnelEncapsulator<Codec>
        do { encapsulator = try TunnelEncapsulator(codec: codec) } catch {
            throw CaptureError(.unsupportedOutput("\(error)"), path: output, record: 0, offset: 0)
        }
        var report = TunnelCaptureReport()
        var outer = PacketBuilder()
        outer.link = .raw
        outer.source = local
        outer.destination = remote
        outer.udp = true
        outer.sourcePort = tunnel.port
        outer.destinationPort = tunnel.port
        outer.ttl = 64
        while let record = try reader.next() {
            report.packetsIn += 1
            if record.info.isSnapped {
                report.snapped += 1
                continue
            }
            guard let (n, network) = unsafe try? PacketLayout.linkHeader(record.bytes.span.bytes, linkType: record.linkType),
                network == .ipv4 || network == .ipv6, tunnel.innerLinkType == .raw || record.linkType == .ethernet
            else {
                report.notIP += 1
                continue
            }
            // GTP-U carries the IP packet; VXLAN the whole Ethernet frame.
            let inner = tunnel.innerLinkType == .raw ? Array(record.bytes[n...]) : record.bytes
            let gso = record.info.gso
            // The datagrams point into the packet: copied out while it is pinned.
            var refusal: TunnelDropReason?
            let datagrams: [[UInt8]]? = unsafe inner.withUnsafeBytes { raw in
                do { refusal = unsafe try encapsulator.prepare(raw, gso: gso) } catch { return nil }
                return (0..<encapsulator.datagramCount).map { encapsulator.datagramBytes(at: $0) }
            }
            if let refusal {
                report.refused[refusal, default: 0] += 1
                continue
            }
            outer.tos = encapsulator.innerTOS ?? 0  // RFC 6040: the inner DSCP and ECN outside too
            guard let datagrams else {
                report.notIP += 1
                continue
            }
            if let gso, gso.segmentCount > 1 { report.superPackets += 1 }
            for datagram in datagrams {
                outer.payload = datagram
                try writer.writePacket(outer.frame(), timestamp: record.info.timestamp)
                report.written += 1
            }
        }
        try writer.flush()
        return report
    }

    /// Takes the inner packets out of the tunnel datagrams of `input` (any link type, outer IPv4
    /// or IPv6, the protocol's UDP port, its TEID or VNI) and writes them to `output` (raw IP for
    /// GTP-U, Ethernet for VXLAN). Everything else is counted: other traffic, signalling, and
    /// datagrams refused by reason.
    public static func decapsulate<Codec: TunnelCodec>(input: String, output: String, codec: Codec) throws(CaptureError)
        -> TunnelCaptureReport
    {
        let tunnel = codec
        var reader = try CaptureReader(path: input)
        var writer = try CaptureWriter(path: output, format: .pcap(nanosecond: true, bigEndian: false),
                                       interfaces: [CaptureInterface(linkType: tunnel.innerLinkType)])
        var decoder: Codec.Decoder
        do { decoder = try codec.makeDecoder() } catch {
            throw CaptureError(.unsupportedOutput("\(error)"), path: output, record: 0, offset: 0)
        }
        var report = TunnelCaptureReport()
        while let record = try reader.next() {
            report.packetsIn += 1
            if record.info.isSnapped {
                report.snapped += 1
                continue
            }
            guard let layout = unsafe try? PacketLayout(parsing: record.bytes.span.bytes, linkType: record.linkType),
                layout.isIP
            else {
                report.notIP += 1
                continue
            }
            guard layout.transport == .udp, layout.hasTransportHeader, !layout.isFragment,
                record.bytes.loadBigEndian(UInt16.self, at: layout.transportOffset + 2) == tunnel.port
            else {
                report.notTunnel += 1
                continue
            }
            var datagram = Array(record.bytes[(layout.transportOffset + 8)..<layout.ipEnd])
            let kind = unsafe datagram.withUnsafeMutableBytes { unsafe decoder.decode($0) }
            switch kind {
            case .packet(let range):
                try writer.writePacket(Array(datagram[range]), timestamp: record.info.timestamp)
                report.written += 1
            case .reply, .signalling:
                report.signalling += 1
            case .drop(let reason):
                report.dropped[reason, default: 0] += 1
            }
        }
        try writer.flush()
        return report
    }
}
