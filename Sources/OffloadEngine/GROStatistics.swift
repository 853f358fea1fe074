/// Why a held packet was completed, or why a packet was never held.
///
/// Three groups:
/// - **flush** reasons complete a held packet (P);
/// - **deliver** reasons send a packet out alone because it may not be held (Linux: S is "flush");
/// - **bypass** causes keep a packet out of GRO altogether (it does not even complete the held
///   packet of another flow; it completes its own flow's first, to keep per-flow order).
public enum GROReason: Int, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    // Flush reasons.
    /// End of the batch (end of the NAPI poll).
    case batchEnd
    /// Held longer than the flush timeout.
    case timeout
    /// The merged segment carried PSH or FIN.
    case pushOrFin
    /// The merged segment was shorter than the segment size.
    case shortSegment
    /// The next segment was not contiguous (gap, overlap, retransmission or reorder).
    case sequenceGap
    /// The next segment was larger than the segment size.
    case largerSegment
    /// TTL or hop limit differed.
    case ttlMismatch
    /// TOS / traffic class (DSCP or ECN) differed.
    case tosMismatch
    /// DF differed.
    case dfMismatch
    /// The IPv4 ID did not follow the incrementing or fixed rule.
    case ipIDMismatch
    /// The TCP flag/window word differed (flags other than CWR/FIN/PSH, window, data offset).
    case flagsOrWindowMismatch
    /// The acknowledgment number differed.
    case ackMismatch
    /// TCP option bytes differed (timestamps, SACK, layout).
    case optionsMismatch
    /// The next segment had CWR (only a chain's head may).
    case cwr
    /// The urgent pointer differed (swift-offload refuses this to keep segment(coalesce(x)) == x).
    case urgentPointerMismatch
    /// The next packet of the flow could not be held (no payload, URG/RST/SYN, padding, ...).
    case unmergeableFollower
    /// The merge would pass the 64 KiB limit.
    case sizeLimit
    /// The segment-count limit was reached.
    case segmentLimit
    /// The flow table was full: the oldest held packet was completed.
    case tableFull
    /// A packet of the same flow bypassed GRO; the held packet was completed first.
    case flowBypass
    /// A packet of the same connection came with another identity (IPv6 flow label, extension
    /// headers, link header); the held packet was completed first to keep per-connection order.
    case flowIdentityChange

    // Deliver reasons (S sent alone).
    /// No payload (pure ACK, window update, bare FIN/RST/SYN).
    case zeroPayload
    /// URG, PSH, RST, SYN or FIN with no chain to end.
    case controlFlags
    /// Link padding or trailing bytes after the IP packet, or the IPv4 reserved bit.
    case padded
    /// UDP: checksum 0 (no checksum), which Linux never merges.
    case udpZeroChecksum

    // Bypass causes.
    /// Not IPv4 or IPv6.
    case notIP
    /// A header failed validation (truncated, lying length, bad version, ...).
    case malformed
    /// IPv4 with options (IHL > 5).
    case ipv4Options
    /// An IP fragment.
    case fragment
    /// The IPv4 header checksum was wrong.
    case badIPChecksum
    /// The TCP/UDP checksum was wrong.
    case badChecksum
    /// A transport GRO does not merge (ICMP, ...), or an IPv6 extension header it cannot skip.
    case unsupportedProtocol
    /// UDP with UDP GRO off.
    case udpDisabled
    /// TCP with TCP GRO off.
    case tcpDisabled
    /// Headers longer than the configured maximum.
    case headerTooLong
    /// Already a super-packet (TSO from the kernel): kept whole.
    case gsoInput

    /// The group this reason belongs to: "flush", "deliver" or "bypass".
    public var group: String {
        switch self {
        case .batchEnd, .timeout, .pushOrFin, .shortSegment, .sequenceGap, .largerSegment, .ttlMismatch,
            .tosMismatch, .dfMismatch, .ipIDMismatch, .flagsOrWindowMismatch, .ackMismatch, .optionsMismatch, .cwr,
            .urgentPointerMismatch, .unmergeableFollower, .sizeLimit, .segmentLimit, .tableFull, .flowBypass,
            .flowIdentityChange:
            "flush"
        case .zeroPayload, .controlFlags, .padded, .udpZeroChecksum: "deliver"
        default: "bypass"
        }
    }

    /// A snake_case name for counters and JSON.
    public var description: String {
        switch self {
        case .batchEnd: "batch_end"
        case .timeout: "timeout"
        case .pushOrFin: "psh_or_fin"
        case .shortSegment: "short_segment"
        case .sequenceGap: "sequence_gap"
        case .largerSegment: "larger_segment"
        case .ttlMismatch: "ttl_mismatch"
        case .tosMismatch: "tos_mismatch"
        case .dfMismatch: "df_mismatch"
        case .ipIDMismatch: "ip_id_mismatch"
        case .flagsOrWindowMismatch: "flags_or_window_mismatch"
        case .ackMismatch: "ack_mismatch"
        case .optionsMismatch: "options_mismatch"
        case .cwr: "cwr"
        case .urgentPointerMismatch: "urgent_pointer_mismatch"
        case .unmergeableFollower: "unmergeable_follower"
        case .sizeLimit: "size_limit"
        case .segmentLimit: "segment_limit"
        case .tableFull: "table_full"
        case .flowBypass: "flow_bypass"
        case .flowIdentityChange: "flow_identity_change"
        case .zeroPayload: "zero_payload"
        case .controlFlags: "control_flags"
        case .padded: "padded"
        case .udpZeroChecksum: "udp_zero_checksum"
        case .notIP: "not_ip"
        case .malformed: "malformed"
        case .ipv4Options: "ipv4_options"
        case .fragment: "fragment"
        case .badIPChecksum: "bad_ip_checksum"
        case .badChecksum: "bad_l4_checksum"
        case .unsupportedProtocol: "unsupported_protocol"
        case .udpDisabled: "udp_disabled"
        case .tcpDisabled: "tcp_disabled"
        case .headerTooLong: "header_too_long"
        case .gsoInput: "gso_input"
        }
    }
}

/// Counters a GRO engine keeps. Plain integers; reading them is free.
public struct GROStatistics: Hashable, Sendable, Codable {
    /// Packets offered.
    public var packetsIn = 0
    /// Packets delivered (unchanged packets plus super-packets).
    public var packetsOut = 0
    /// Super-packets built (two or more segments).
    public var superPackets = 0
    /// Segments inside those super-packets.
    public var mergedSegments = 0
    /// Of the packets with a bad L4 checksum, those whose field held only the pseudo-header sum:
    /// checksum offload on the capturing host (`--checksums trust` merges them).
    public var partialChecksums = 0
    /// Counts per ``GROReason``, indexed by its raw value.
    public var reasons = [Int](repeating: 0, count: GROReason.allCases.count)

    /// Creates zeroed counters.
    public init() {}

    /// The count for one reason.
    public subscript(reason: GROReason) -> Int {
        get { reasons[reason.rawValue] }
        set { reasons[reason.rawValue] = newValue }
    }

    /// The mean number of segments per super-packet (0 when none were built).
    public var meanSegmentsPerSuperPacket: Double {
        superPackets == 0 ? 0 : Double(mergedSegments) / Double(superPackets)
    }

    enum CodingKeys: String, CodingKey { case packetsIn, packetsOut, superPackets, mergedSegments, partialChecksums, reasons }

    /// Encodes the reasons as an object keyed by their names (`"batch_end": 306`), so that a
    /// reader can ask for one by name (`jq .gro.reasons.sequence_gap`).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(packetsIn, forKey: .packetsIn)
        try c.encode(packetsOut, forKey: .packetsOut)
        try c.encode(superPackets, forKey: .superPackets)
        try c.encode(mergedSegments, forKey: .mergedSegments)
        try c.encode(partialChecksums, forKey: .partialChecksums)
        var named: [String: Int] = [:]
        for reason in GROReason.allCases { named[reason.description] = self[reason] }
        try c.encode(named, forKey: .reasons)
    }

    /// Decodes what ``encode(to:)`` wrote; unknown reason names are ignored.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        packetsIn = try c.decode(Int.self, forKey: .packetsIn)
        packetsOut = try c.decode(Int.self, forKey: .packetsOut)
        superPackets = try c.decode(Int.self, forKey: .superPackets)
        mergedSegments = try c.decode(Int.self, forKey: .mergedSegments)
        partialChecksums = try c.decodeIfPresent(Int.self, forKey: .partialChecksums) ?? 0
        let named = try c.decode([String: Int].self, forKey: .reasons)
        for reason in GROReason.allCases { self[reason] = named[reason.description] ?? 0 }
    }

    /// Adds another set of counters to this one.
    public mutating func add(_ other: GROStatistics) {
        packetsIn += other.packetsIn
        packetsOut += other.packetsOut
        superPackets += other.superPackets
        mergedSegments += other.mergedSegments
        partialChecksums += other.partialChecksums
        for i in reasons.indices { reasons[i] += other.reasons[i] }
    }
}
