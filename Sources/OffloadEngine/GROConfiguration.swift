import OffloadWire

/// The facts a super-packet carries so that it can be split back into exactly the packets it
/// was made of (Linux: `skb_shinfo(skb)->gso_size`, `gso_segs`, `gso_type`).
public struct GSOInfo: Hashable, Sendable, CustomStringConvertible {
    /// The protocol and IP family of the segments.
    public enum Kind: UInt8, Hashable, Sendable, CustomStringConvertible {
        /// TCP over IPv4 (`SKB_GSO_TCPV4`, virtio `GSO_TCPV4`).
        case tcpv4 = 1
        /// TCP over IPv6 (`SKB_GSO_TCPV6`, virtio `GSO_TCPV6`).
        case tcpv6 = 4
        /// UDP over IPv4, one datagram per segment (`SKB_GSO_UDP_L4`, virtio `GSO_UDP_L4`).
        case udpv4 = 5
        /// UDP over IPv6, one datagram per segment.
        case udpv6 = 6

        /// Whether the segments are TCP.
        public var isTCP: Bool { self == .tcpv4 || self == .tcpv6 }
        /// Whether the segments are IPv4.
        public var isIPv4: Bool { self == .tcpv4 || self == .udpv4 }
        /// A short name.
        public var description: String {
            switch self {
            case .tcpv4: "tcp4"
            case .tcpv6: "tcp6"
            case .udpv4: "udp4"
            case .udpv6: "udp6"
            }
        }
    }

    /// Protocol and family.
    public var kind: Kind
    /// Payload bytes per segment (the first segment's payload); every segment but the last has
    /// exactly this many, the last at most this many. Zero means unknown: an LRO merge, which
    /// cannot be split back exactly.
    public var segmentSize: Int
    /// The number of segments merged.
    public var segmentCount: Int
    /// IPv4 only: every segment had the same IP ID (`SKB_GSO_TCP_FIXEDID`); otherwise the ID
    /// went up by one per segment.
    public var fixedID: Bool
    /// TCP only: the first segment carried CWR (`SKB_GSO_TCP_ECN`); only it gets CWR back.
    public var ecn: Bool

    /// Creates GSO facts.
    public init(kind: Kind, segmentSize: Int, segmentCount: Int, fixedID: Bool = false, ecn: Bool = false) {
        self.kind = kind
        self.segmentSize = segmentSize
        self.segmentCount = segmentCount
        self.fixedID = fixedID
        self.ecn = ecn
    }

    /// `tcp4 size=1448 segs=3 fixedid ecn`.
    public var description: String {
        var s = "\(kind) size=\(segmentSize) segs=\(segmentCount)"
        if fixedID { s += " fixedid" }
        if ecn { s += " ecn" }
        return s
    }
}

/// How GRO decides what may merge.
public enum GROMode: String, Hashable, Sendable, CaseIterable {
    /// Linux's GRO rules: lossless, so GSO gives back exactly the packets that were merged.
    case gro
    /// **Unsafe.** The greedy merge of old LRO (`inet_lro`, NIC LRO): every in-order segment of a
    /// flow is merged whatever the header differences, and no segment size is recorded. The
    /// merge cannot be undone, and a forwarder that does it black-holes traffic behind a smaller
    /// MTU. It exists to show that, in the lab. Linux turns LRO off on forwarding
    /// (`dev_disable_lro`, net/core/dev.c).
    case unsafeLRO = "lro"
}

/// The IPv4 rule for a constant ("fixed") IP ID (docs/linux-gro-rules.md §2.3).
public enum IPIDRule: String, Hashable, Sendable, CaseIterable {
    /// Current mainline (≈6.18+): a fixed ID may merge whatever DF says.
    case mainline
    /// Linux 6.10 to 6.17 (and ≤ 6.9 in effect): a fixed ID merges only with DF set.
    case legacy
}

/// What the engine writes into the L4 checksum of a super-packet it builds.
public enum OutputChecksum: Hashable, Sendable {
    /// A complete, valid checksum: for files and sinks that do not offload checksums.
    case complete
    /// The pseudo-header sum, un-complemented, as a virtio `NEEDS_CSUM` write to a TUN wants
    /// (Linux `tcp4_gro_complete`).
    case partial
}

/// GRO settings. Memory is bounded by these numbers, never by the input.
public struct GROConfiguration: Hashable, Sendable {
    /// GRO or the unsafe LRO merge.
    public var mode: GROMode = .gro
    /// Merge TCP (on by default).
    public var tcp = true
    /// Merge UDP datagrams (UDP GRO, spec §3; off by default as in Linux without
    /// `rx-udp-gro-forwarding`).
    public var udp = false
    /// The IPv4 fixed-ID rule.
    public var ipIDRule: IPIDRule = .mainline
    /// What to write into merged packets' L4 checksums.
    public var outputChecksum: OutputChecksum = .complete
    /// The most flows held at once; when a new flow must be held and the table is full, the
    /// oldest held packet is completed first (Linux: 8 buckets × `MAX_GRO_SKBS` 8 = 64).
    public var flowCapacity = 64
    /// The most segments merged into one packet (Linux UDP: `UDP_GRO_CNT_MAX` = 64; TCP is bounded by the
    /// 64 KiB limit and the batch; this bound keeps memory fixed).
    public var maximumSegments = 64
    /// The largest merged IP packet (Linux `GRO_LEGACY_MAX_SIZE` − 1 = 65535).
    public var maximumIPLength = 65_535
    /// The longest header stack (link + IP + L4) a mergeable packet may have.
    public var maximumHeaderLength = 512
    /// When non-zero, packets are held across batches and completed only once they are older
    /// than this many nanoseconds (the `gro_flush_timeout` idea). Zero: flush at every batch end.
    public var flushTimeout: UInt64 = 0
    /// Whether full-sized in-sequence TCP segments whose headers match their held train's may
    /// skip the rule-by-rule checks (the train fast path). The output and the counters are the
    /// same either way; turning it off is for tests and benchmarks that compare the two paths.
    public var trainFastPath = true

    /// The default configuration: Linux GRO, TCP only, mainline IP-ID rule, complete checksums.
    public init() {}
}
