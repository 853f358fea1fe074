import OffloadEngine
import OffloadWire

/// What is in a capture that matters for offload (`offload stats`).
public struct CaptureStatistics: Codable, Hashable, Sendable {
    /// Where the file is damaged, when it is: the statistics cover the records before it.
    public var inputDamage: String?
    /// Of ``badL4Checksums``, those that hold only the pseudo-header sum: checksum offload on the
    /// capturing host (`--checksums trust` merges them).
    public var partialChecksums = 0
    /// One flow (direction-sensitive: each direction of a connection is its own flow).
    public struct Flow: Codable, Hashable, Sendable {
        /// `TCP`, `UDP`, ...
        public var protocolName: String
        /// `address:port`.
        public var source: String
        /// `address:port`.
        public var destination: String
        /// Packets.
        public var packets = 0
        /// Bytes of frames.
        public var bytes = 0
        /// Bytes of L4 payload.
        public var payloadBytes = 0
        /// Packets larger than the MTU (super-packets already in the capture).
        public var overMTU = 0
    }

    /// The capture's format.
    public var format: String
    /// Link types of its interfaces.
    public var linkTypes: [String]
    /// Packets.
    public var packets = 0
    /// Bytes of captured frames.
    public var bytes = 0
    /// Seconds from the first to the last packet.
    public var durationSeconds = 0.0
    /// IPv4 packets.
    public var ipv4 = 0
    /// IPv6 packets.
    public var ipv6 = 0
    /// Packets that are not IP.
    public var notIP = 0
    /// Packets whose headers do not validate.
    public var malformed = 0
    /// Packets the capture cut short (snap length).
    public var snapped = 0
    /// IP fragments.
    public var fragments = 0
    /// IP packets longer than the MTU: super-packets (GRO/TSO) or jumbo frames.
    public var overMTU = 0
    /// The largest IP packet.
    public var largestIPPacket = 0
    /// The MTU used for ``overMTU``.
    public var mtu: Int
    /// TCP packets that GRO would merge into another packet.
    public var groMergedPackets = 0
    /// Packets GRO would emit.
    public var groPacketsOut = 0
    /// Super-packets GRO would build.
    public var groSuperPackets = 0
    /// Why GRO completed or passed packets: reason name → count (non-zero only).
    public var groReasons: [String: Int] = [:]
    /// Packets with a bad IPv4 header checksum.
    public var badIPChecksums = 0
    /// Packets with a bad TCP/UDP checksum.
    public var badL4Checksums = 0
    /// Flows, largest first.
    public var flows: [Flow] = []
}

/// Reads a capture and works out ``CaptureStatistics``, running GRO as `offload coalesce` would
/// (without writing anything).
public func captureStatistics(input: String, mtu: Int = 1500, options: CoalesceOptions = CoalesceOptions(),
                              progress: ProgressHandler? = nil) throws(CaptureError) -> CaptureStatistics {
    var reader = try CaptureReader(path: input)
    var stats = CaptureStatistics(format: "\(reader.format)", linkTypes: reader.interfaces.map(\.linkType.description),
                                  mtu: mtu)
    var engine = GROEngine(configuration: options.engine)
    var batch = CaptureReader.makeBatch(packets: options.batch)
    var flows: [FlowKey: CaptureStatistics.Flow] = [:]
    var first: UInt64?
    var last: UInt64 = 0
    var done = false
    var failure: CaptureError?
    while !done {
        batch.removeAll()
        let interfaces = reader.interfaces
        let result = unsafe reader.fill(&batch, checksum: options.checksums) { info, bytes in
            stats.packets += 1
            stats.bytes += info.capturedLength
            if info.isSnapped { stats.snapped += 1 }
            first = first ?? info.timestamp
            last = max(last, info.timestamp)
            let linkType = interfaces[info.interface].linkType
            guard let layout = unsafe try? PacketLayout(parsing: bytes.bytes, linkType: linkType) else {
                stats.malformed += 1
                return
            }
            switch layout.network {
            case .other:
                stats.notIP += 1
                return
            case .ipv4: stats.ipv4 += 1
            case .ipv6: stats.ipv6 += 1
            }
            if layout.isFragment { stats.fragments += 1 }
            let ipLength = layout.ipEnd - layout.networkOffset
            stats.largestIPPacket = max(stats.largestIPPacket, ipLength)
            if ipLength > mtu { stats.overMTU += 1 }
            guard let k = unsafe FlowKey(bytes.bytes, layout: layout) else { return }
            var flow = flows[k] ?? CaptureStatistics.Flow(protocolName: "\(layout.transport)", source: k.sourceEndpoint,
                                                          destination: k.destinationEndpoint)
            flow.packets += 1
            flow.bytes += info.capturedLength
            flow.payloadBytes += layout.hasTransportHeader ? layout.payloadLength : 0
            if ipLength > mtu { flow.overMTU += 1 }
            flows[k] = flow
        }
        switch result {
        case .more: break
        case .end: done = true
        case .failed(let error):
            failure = error
            done = true
        }
        engine.coalesce(batch, now: last)
        progress?(reader.bytesRead, reader.fileSize)
    }
    engine.flush()
    let gro = engine.statistics
    stats.groPacketsOut = gro.packetsOut
    stats.groSuperPackets = gro.superPackets
    stats.groMergedPackets = gro.mergedSegments - gro.superPackets
    for reason in GROReason.allCases where gro[reason] > 0 { stats.groReasons["\(reason)"] = gro[reason] }
    stats.badIPChecksums = gro[.badIPChecksum]
    stats.badL4Checksums = gro[.badChecksum]
    stats.partialChecksums = gro.partialChecksums
    stats.durationSeconds = Double(last - (first ?? last)) / 1e9
    stats.flows = flows.values.sorted { ($0.bytes, $0.source) > ($1.bytes, $1.source) }
    // Damage after the first record: the statistics of what was read, and the damage, for the
    // caller to show both.
    if let failure {
        guard failure.record > 1 else { throw failure }
        stats.inputDamage = "\(failure)"
    }
    return stats
}

