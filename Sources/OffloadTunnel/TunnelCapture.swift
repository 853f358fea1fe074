import Logging
import OffloadCapture
import OffloadEngine
import OffloadForwarder
import OffloadTUN
import OffloadWire

#if canImport(Glibc)
    import Glibc
#endif

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
    /// What the forwarding pipeline did, as the live endpoint's counters: the MTU decision (ICMP
    /// errors that would go back to the inner senders, `icmpSent`), TTL expiry, GRO.
    public var forwarding = ForwarderStatistics()
}

/// Tunnel encapsulation and decapsulation of captures, offline, through the live endpoint's
/// dataplane: the same ``ForwardingPipeline`` (GRO, the MTU decision against the inner MTU, TTL,
/// ICMP errors), the same ``TunnelSink`` and codec, and RFC 6040's ECN rules, with a capture file
/// where the socket or the TUN device would be.
public enum TunnelCapture {
    /// Wraps each packet of `input` (IP packets, or Ethernet frames for a codec with Ethernet
    /// inside) in outer IP/UDP/tunnel headers (`local` → `remote`, the protocol's port), as the
    /// endpoint would send them over an underlay of `underlayMTU`, and writes the outer packets to
    /// `output` (raw IP). A super-packet with GSO facts (a pcapng from `offload coalesce`) becomes
    /// one datagram per segment, as on the wire. A segment that does not fit the tunnel is not
    /// written: the ICMP error the endpoint would send back is counted (`forwarding.icmpSent`).
    /// - Throws: ``CaptureError``; a codec that cannot work is reported as an unsupported output.
    public static func encapsulate<Codec: TunnelCodec>(input: String, output: String, codec: Codec, local: IPAddress,
                                                       remote: IPAddress, underlayMTU: Int = 1500)
        throws(CaptureError) -> TunnelCaptureReport
    {
        var reader = try CaptureReader(path: input)
        let writer = try CaptureDatagramOutput(path: output, local: local, remote: remote, port: codec.port)
        let logger = Logger(label: "offload.tunnel.capture")
        let sink: TunnelSink<Codec>
        do { sink = try TunnelSink(output: writer, codec: codec, logger: logger) } catch {
            throw CaptureError(.unsupportedOutput("\(error)"), path: output, record: 0, offset: 0)
        }
        let innerLinkType = codec.innerLinkType
        var pipeline = TunnelEndpoint.pipeline(.lanToWan, codec: codec, mtu: underlayMTU - codec.overhead(outerIPv6: !remote.isIPv4),
                                               virtioHeaders: true, logger: logger)
        let back = RecordingSink(takesVirtioHeaders: false)  // ICMP errors towards the inner senders: counted
        var report = TunnelCaptureReport()
        var batch = PacketBatch(packetCapacity: 64, byteCapacity: 64 * 65_600)
        var now: UInt64 = 0
        func flush(_ pipeline: inout ForwardingPipeline<IdentityStage>) throws(CaptureError) {
            guard batch.count > 0 else { return }
            pipeline.process(batch, now: now, egress: sink, back: back)
            batch.removeAll()
            if let error = writer.failure { throw error }
        }
        while let record = reader.nextUntilDamage() {
            report.packetsIn += 1
            if record.info.isSnapped {
                report.snapped += 1
                continue
            }
            guard let (n, network) = unsafe try? PacketLayout.linkHeader(record.bytes.span.bytes, linkType: record.linkType),
                network == .ipv4 || network == .ipv6, innerLinkType == .raw || record.linkType == .ethernet
            else {
                report.notIP += 1
                continue
            }
            // IP inside: the IP packet; Ethernet inside: the whole frame.
            let inner = innerLinkType == .raw ? Array(record.bytes[n...]) : record.bytes
            let gso = record.info.gso
            if let gso, gso.segmentCount > 1 { report.superPackets += 1 }
            now = record.info.timestamp
            writer.timestamp = now
            // A super-packet's checksum field is not the whole packet's (GSO finishes it per segment).
            let metadata = PacketMetadata(linkType: innerLinkType, checksum: gso == nil ? .unverified : .partial,
                                          timestamp: now, gso: gso)
            if batch.isFull(for: inner.count) { try flush(&pipeline) }
            pipeline.take(inner, metadata: metadata, into: &batch)
        }
        try flush(&pipeline)
        try writer.finish()
        report.written = writer.written
        report.refused = sink.counters.encapsulationDropped
        report.forwarding = pipeline.snapshot
        if let damage = reader.damage { throw damage }  // what was read before it is written
        return report
    }

    /// Takes the inner packets out of the tunnel datagrams of `input` (any link type, outer IPv4
    /// or IPv6, the protocol's UDP port, its TEID, VNI or SPI) as the endpoint would, and writes
    /// them to `output` (raw IP, or Ethernet for a codec with Ethernet inside) as a TUN device
    /// without offloads would get them: one packet per segment, TTL decremented, the outer ECN
    /// applied. Everything else is counted: other traffic, signalling, refusals by reason.
    public static func decapsulate<Codec: TunnelCodec>(input: String, output: String, codec: Codec) throws(CaptureError)
        -> TunnelCaptureReport
    {
        var reader = try CaptureReader(path: input)
        let writer = try CapturePacketSink(path: output, linkType: codec.innerLinkType)
        var decoder: Codec.Decoder
        do { decoder = try codec.makeDecoder() } catch {
            throw CaptureError(.unsupportedOutput("\(error)"), path: output, record: 0, offset: 0)
        }
        let logger = Logger(label: "offload.tunnel.capture")
        var pipeline = TunnelEndpoint.pipeline(.wanToLan, codec: codec, mtu: 65_535, virtioHeaders: false, logger: logger)
        let back = RecordingSink(takesVirtioHeaders: false)  // replies and ICMP errors into the tunnel: counted
        var report = TunnelCaptureReport()
        var batch = PacketBatch(packetCapacity: 64, byteCapacity: 64 * 65_600)
        var now: UInt64 = 0
        func flush(_ pipeline: inout ForwardingPipeline<IdentityStage>) throws(CaptureError) {
            guard batch.count > 0 else { return }
            pipeline.process(batch, now: now, egress: writer, back: back)
            batch.removeAll()
            if let error = writer.failure { throw error }
        }
        while let record = reader.nextUntilDamage() {
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
                record.bytes.loadBigEndian(UInt16.self, at: layout.transportOffset + 2) == codec.port
            else {
                report.notTunnel += 1
                continue
            }
            let outerTOS = unsafe record.bytes.withUnsafeBytes { unsafe TunnelECN.innerTOS($0, linkType: record.linkType) } ?? 0
            var datagram = Array(record.bytes[(layout.transportOffset + 8)..<layout.ipEnd])
            let kind = unsafe datagram.withUnsafeMutableBytes { unsafe decoder.decode($0) }
            switch kind {
            case .packet(let range):
                var inner = Array(datagram[range])
                if outerTOS & 0b11 != 0 {
                    // RFC 6040: congestion marked on the way reaches the inner packet.
                    let applied = unsafe inner.withUnsafeMutableBytes {
                        unsafe TunnelECN.apply(outer: outerTOS, to: $0, linkType: codec.innerLinkType)
                    }
                    guard applied else {
                        report.dropped[.ecn, default: 0] += 1
                        continue
                    }
                }
                now = record.info.timestamp
                writer.timestamp = now
                if batch.isFull(for: inner.count) { try flush(&pipeline) }
                pipeline.take(inner, metadata: PacketMetadata(linkType: codec.innerLinkType, checksum: .unverified, timestamp: now),
                              into: &batch)
            case .reply, .signalling:
                report.signalling += 1
            case .drop(let reason):
                report.dropped[reason, default: 0] += 1
            }
        }
        try flush(&pipeline)
        try writer.finish()
        report.written = writer.written
        report.forwarding = pipeline.snapshot
        if let damage = reader.damage { throw damage }  // what was read before it is written
        return report
    }

}

extension PacketBatch {
    /// Whether the batch must be processed before a packet of `length` bytes fits.
    func isFull(for length: Int) -> Bool { !canAppend(length: length) || count == packetCapacity }
}

extension ForwardingPipeline where S == IdentityStage {
    /// Counts a packet read from a capture in, as a device read would, and appends it to `batch`.
    mutating func take(_ packet: [UInt8], metadata: PacketMetadata, into batch: inout PacketBatch) {
        statistics.packetsIn += 1
        statistics.bytesIn += packet.count
        if !batch.append(packet, metadata: metadata) { statistics.dropped += 1 }
    }
}

/// A ``DatagramOutput`` that writes each datagram, behind outer IP and UDP headers, to a capture.
final class CaptureDatagramOutput: DatagramOutput {
    var writer: CaptureWriter
    var outer = PacketBuilder()
    let path: String
    var trafficClass: UInt8 = 0
    /// The capture time of what is being written.
    var timestamp: UInt64 = 0
    /// Datagrams written.
    var written = 0
    /// The first write error (the pipeline only sees a failed send).
    var failure: CaptureError?

    /// The far end and the port, for datagrams without a peer of their own.
    let remote: IPAddress, port: UInt16

    init(path: String, local: IPAddress, remote: IPAddress, port: UInt16) throws(CaptureError) {
        self.path = path
        self.remote = remote
        self.port = port
        writer = try CaptureWriter(path: path, format: .pcap(nanosecond: true, bigEndian: false),
                                   interfaces: [CaptureInterface(linkType: .raw)])
        outer.link = .raw
        outer.source = local
        outer.destination = remote
        outer.udp = true
        outer.sourcePort = port
        outer.destinationPort = port
        outer.ttl = 64
    }

    func setTrafficClass(_ value: UInt8) { trafficClass = value }

    @discardableResult
    func send(_ iovecs: UnsafeBufferPointer<iovec>, segmentSize: Int, trafficClass: UInt8?, to destination: UDPEndpoint?) throws(TUNError) -> Int {
        var bytes: [UInt8] = []
        // A datagram for a peer of its own goes to that peer's address and port in the capture.
        if let destination, destination.address.isIPv4 == remote.isIPv4 {
            outer.destination = destination.address
            outer.destinationPort = destination.port
        } else {
            outer.destination = remote
            outer.destinationPort = port
        }
        for unsafe v in unsafe iovecs where unsafe v.iov_len > 0 {
            unsafe bytes.append(contentsOf: UnsafeRawBufferPointer(start: v.iov_base, count: v.iov_len))
        }
        outer.tos = trafficClass ?? self.trafficClass  // RFC 6040: the inner DSCP and ECN outside too
        let size = segmentSize > 0 ? segmentSize : max(1, bytes.count)
        var at = 0
        while at < bytes.count {
            outer.payload = Array(bytes[at..<min(bytes.count, at + size)])
            at += size
            do { try writer.writePacket(outer.frame(), timestamp: timestamp) } catch {
                if failure == nil { failure = error }
                throw TUNError(operation: "write", device: path, errno: .ioError)
            }
            written += 1
        }
        return bytes.count
    }

    func finish() throws(CaptureError) {
        if let failure { throw failure }
        try writer.flush()
    }
}

/// A ``PacketSink`` that writes each packet to a capture, as a TUN device without virtio headers
/// would receive it (super-packets are segmented by the pipeline before).
final class CapturePacketSink: PacketSink {
    var writer: CaptureWriter
    let path: String
    var timestamp: UInt64 = 0
    var written = 0
    var failure: CaptureError?

    init(path: String, linkType: LinkType) throws(CaptureError) {
        self.path = path
        writer = try CaptureWriter(path: path, format: .pcap(nanosecond: true, bigEndian: false),
                                   interfaces: [CaptureInterface(linkType: linkType)])
    }

    var takesVirtioHeaders: Bool { false }

    func write(header: VirtioNetHeader?, pieces: UnsafeBufferPointer<UnsafeRawBufferPointer>) throws(TUNError) {
        var bytes: [UInt8] = []
        for unsafe piece in unsafe pieces { unsafe bytes.append(contentsOf: piece) }
        do { try writer.writePacket(bytes, timestamp: timestamp) } catch {
            if failure == nil { failure = error }
            throw TUNError(operation: "write", device: path, errno: .ioError)
        }
        written += 1
    }

    func finish() throws(CaptureError) {
        if let failure { throw failure }
        try writer.flush()
    }
}
