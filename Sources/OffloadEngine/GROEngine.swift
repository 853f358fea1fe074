import OffloadWire

/// Generic Receive Offload in user space: merges a batch of packets into super-packets by Linux's
/// rules (gro-spec.md §1–§4), so that ``GSOSegmenter`` can split them back byte for byte.
///
/// ## Use
/// ```swift
/// var engine = GROEngine(configuration: GROConfiguration())
/// engine.coalesce(batch)                    // one receive poll
/// for i in 0..<engine.outputCount {         // packets to send, in order
///     engine.withOutputFragments(at: i) { chunk in write(chunk) }
/// }
/// ```
/// ## Contracts
/// - **No payload copies.** A super-packet is a freshly written header plus the payloads of
///   its segments *in place*, in the batch. Output is valid until the next call on the engine
///   or until the batch is changed, whichever comes first.
/// - **Order.** Within a flow, packets leave in arrival order, always (also when a packet
///   bypasses GRO: its flow's held packet is completed first; Linux lets it overtake). Across
///   flows, output follows the order of events: a packet is emitted when it is completed, and
///   at a flush the held packets leave in the order their chains started (oldest first).
/// - **Bounded memory.** At most ``GROConfiguration/flowCapacity`` flows are held, each with at
///   most ``GROConfiguration/maximumSegments`` segments. With a flush timeout, held packets
///   outlive their batch: their bytes are copied into the engine (the only copy it makes).
/// - **Never traps on input.** Anything it cannot parse leaves unchanged.
///
/// Threading: an engine is a value owned by one thread (one per receive queue, like NAPI).
public struct GROEngine: ~Copyable {
    /// The settings.
    public let configuration: GROConfiguration
    /// Counters since creation.
    public internal(set) var statistics = GROStatistics()

    // Flow table: slots, a hash index over them, and an arrival-ordered list of held slots.
    var flows: [HeldFlow]
    var freeSlots: [Int32]
    var index: [Int32]
    let indexMask: Int
    var oldest: Int32 = -1
    var newest: Int32 = -1
    var fragments: [Fragment]
    let seed: UInt64

    // Output of the last call.
    var out: [OutputRecord] = []
    var outFragments: [UnsafeRawBufferPointer] = []
    var headerArena: UnsafeMutableRawPointer
    var headerCapacity: Int
    var headerUsed = 0

    // Two arenas that hold carried packets across batches (flush-timeout mode only).
    var carry: [UnsafeMutableRawPointer?] = [nil, nil]
    var carryCapacity: [Int] = [0, 0]
    var carryGeneration = 0

    /// Creates an engine.
    /// - Precondition: capacities are positive and `maximumIPLength` ≤ 65535.
    public init(configuration: GROConfiguration = GROConfiguration()) {
        precondition(configuration.flowCapacity > 0 && configuration.maximumSegments > 0,
                     "flow capacity and segment limit must be positive")
        precondition(configuration.maximumIPLength <= 65_535, "merged IP packets are at most 65535 bytes")
        self.configuration = configuration
        flows = Array(repeating: HeldFlow(), count: configuration.flowCapacity)
        freeSlots = (0..<Int32(configuration.flowCapacity)).reversed()
        var size = 16
        while size < configuration.flowCapacity * 2 { size <<= 1 }
        index = Array(repeating: -1, count: size)
        indexMask = size - 1
        fragments = Array(repeating: Fragment(), count: configuration.flowCapacity * configuration.maximumSegments)
        var g = SystemRandomNumberGenerator()
        seed = g.next()
        headerCapacity = 64 * 1024
        headerArena = .allocate(byteCount: headerCapacity, alignment: 16)
        out.reserveCapacity(256)
        outFragments.reserveCapacity(1024)
    }

    deinit {
        headerArena.deallocate()
        for c in carry { c?.deallocate() }
    }

    /// The number of flows holding a packet now.
    public var heldFlowCount: Int { configuration.flowCapacity - freeSlots.count }

    // MARK: - Entry points

    /// Offers one receive poll's packets and completes what is due.
    ///
    /// Without a flush timeout every held packet is completed at the end (Linux's default,
    /// `gro_flush_timeout` = 0). With one, packets older than the timeout at `now` are completed
    /// and the rest are kept (copied out of the batch) for the next call.
    /// - Parameters:
    ///   - batch: the packets; they must stay unchanged until the output has been consumed.
    ///   - now: the clock for timeouts, in the same nanoseconds as the packet timestamps;
    ///     defaults to the newest timestamp in the batch.
    public mutating func coalesce(_ batch: borrowing PacketBatch, now: UInt64? = nil) {
        resetOutput()
        var clock: UInt64 = 0
        for i in 0..<batch.count {
            let buffer = batch.unsafeBuffer(at: i)
            let metadata = batch._metadata[i]
            clock = max(clock, metadata.timestamp)
            offer(buffer, metadata)
        }
        if configuration.flushTimeout == 0 {
            completeAll(.batchEnd)
        } else {
            completeOlder(than: now ?? clock)
            carryHeldPackets()
        }
    }

    /// Completes everything held (at the end of a capture, or on shutdown).
    public mutating func flush() {
        resetOutput()
        completeAll(.batchEnd)
    }

    /// Completes the packets held longer than the flush timeout at `now`, without new input
    /// (the timer of the `gro_flush_timeout` idea).
    public mutating func flushExpired(now: UInt64) {
        resetOutput()
        completeOlder(than: now)
        carryHeldPackets()
    }

    mutating func resetOutput() {
        out.removeAll(keepingCapacity: true)
        outFragments.removeAll(keepingCapacity: true)
        headerUsed = 0
    }

    // MARK: - One packet

    /// Offers one packet (gro-spec §2.9).
    mutating func offer(_ buffer: UnsafeRawBufferPointer, _ metadata: PacketMetadata) {
        statistics.packetsIn += 1
        guard let base = buffer.baseAddress, buffer.count > 0 else {
            emitUnchanged(buffer, metadata, reason: .malformed)
            return
        }
        let layout: PacketLayout
        do {
            layout = try PacketLayout(parsing: buffer.bytes, linkType: metadata.linkType)
        } catch {
            bypass(buffer, metadata, nil, reason: .malformed)
            return
        }
        if metadata.gso != nil { return bypass(buffer, metadata, layout, reason: .gsoInput) }
        let b = _UnsafeBytes(base)
        let n = layout.networkOffset
        let isIPv4: Bool
        switch layout.network {
        case .other:
            emitUnchanged(buffer, metadata, reason: .notIP)
            return
        case .ipv4:
            isIPv4 = true
            // Safe: the layout validated at least 20 bytes of IPv4 header at n.
            if b.u8(n) != 0x45 { return bypass(buffer, metadata, layout, reason: .ipv4Options) }
            if layout.isFragment { return bypass(buffer, metadata, layout, reason: .fragment) }
            if b.sum(n, count: 20).value != 0xFFFF { return bypass(buffer, metadata, layout, reason: .badIPChecksum) }
        case .ipv6:
            isIPv4 = false
            if layout.isFragment { return bypass(buffer, metadata, layout, reason: .fragment) }
            if !Self.extensionHeadersAreSkippable(b, layout) {
                return bypass(buffer, metadata, layout, reason: .unsupportedProtocol)
            }
        }
        let isTCP: Bool
        switch layout.transport {
        case .tcp:
            guard configuration.tcp else { return bypass(buffer, metadata, layout, reason: .tcpDisabled) }
            isTCP = true
        case .udp:
            guard configuration.udp else { return bypass(buffer, metadata, layout, reason: .udpDisabled) }
            isTCP = false
        default:
            return bypass(buffer, metadata, layout, reason: .unsupportedProtocol)
        }
        guard layout.hasTransportHeader else { return bypass(buffer, metadata, layout, reason: .malformed) }
        if layout.payloadOffset > configuration.maximumHeaderLength {
            return bypass(buffer, metadata, layout, reason: .headerTooLong)
        }

        var segment = Segment(base: base, layout: layout, metadata: metadata, isIPv4: isIPv4, isTCP: isTCP)
        // Checksum (§2.7): verify in software, or derive the payload sum from a trusted field.
        if !isTCP && b.u16(layout.transportOffset + 6) == 0 {
            // UDP without a checksum: Linux never merges it (§3.2).
            completeFlow(of: buffer, metadata, layout, reason: .flowBypass)
            emitUnchanged(buffer, metadata, reason: .udpZeroChecksum)
            return
        }
        switch metadata.checksum {
        case .unverified:
            let headerSum = b.sum(layout.transportOffset, count: layout.transportHeaderLength)
            let payloadSum = b.sum(layout.payloadOffset, count: layout.payloadLength)
            if segment.pseudoHeaderSum(b) + headerSum + payloadSum != OnesComplementSum(0xFFFF) {
                return bypass(buffer, metadata, layout, reason: .badChecksum)
            }
            segment.payloadSum = payloadSum
            segment.payloadSumKnown = true
        case .verified:
            let headerSum = b.sum(layout.transportOffset, count: layout.transportHeaderLength)
            segment.payloadSum = OnesComplementSum(~(segment.pseudoHeaderSum(b) + headerSum).value)
            segment.payloadSumKnown = true
        case .partial:
            segment.payloadSumKnown = false
        }

        // S-only anomalies (§2.3): trailing bytes, the reserved bit, or a UDP length short of the packet.
        var sFlush = layout.trailingByteCount != 0
        if isIPv4 && b.u16(n + 6) & 0x8000 != 0 { sFlush = true }
        if !isTCP && Int(b.u16(layout.transportOffset + 4)) != layout.ipEnd - layout.transportOffset { sFlush = true }

        segment.hash = connectionHash(b, layout, metadata)
        if let slot = findFlow(segment) {
            let verdict = isTCP ? decideTCP(slot, segment, sFlush: sFlush) : decideUDP(slot, segment, sFlush: sFlush)
            switch verdict {
            case .merged(let completeReason):
                append(segment, to: slot)
                if let reason = completeReason { complete(slot, reason) }
                return
            case .refused(let reason):
                complete(slot, reason)
            }
        }
        // No held packet for the flow (§2.5, "No P"): hold S, or deliver it alone.
        if sFlush { return emitUnchanged(buffer, metadata, reason: .padded) }
        if segment.payloadLength == 0 { return emitUnchanged(buffer, metadata, reason: .zeroPayload) }
        if isTCP {
            let flags = b.u16(layout.transportOffset + 12) & 0x01FF
            // URG, PSH, RST, SYN, FIN.
            if flags & 0x2F != 0 { return emitUnchanged(buffer, metadata, reason: .controlFlags) }
        }
        hold(segment)
    }

    /// Only Hop-by-Hop, Routing and Destination Options may be skipped (exthdrs_offload.c).
    static func extensionHeadersAreSkippable(_ b: _UnsafeBytes, _ layout: PacketLayout) -> Bool {
        let n = layout.networkOffset
        var next = b.u8(n + 6)
        var o = n + 40
        // Safe: PacketLayout walked this chain and validated every length inside the packet.
        while o < layout.transportOffset {
            guard next == 0 || next == 43 || next == 60 else { return false }
            next = b.u8(o)
            o += (Int(b.u8(o + 1)) + 1) * 8
        }
        return true
    }

    // MARK: - Flow identity (§1.2, §2.1)

    /// Hashes a packet's connection: interface, protocol, addresses and ports (not the link
    /// header, flow label or extension headers, which ``sameFlow(_:_:)`` compares exactly).
    ///
    /// Hashing the connection rather than the full GRO identity lets one probe find both the
    /// packet's own flow and a held packet of the same connection under another identity (a new
    /// IPv6 flow label, other MAC addresses), which must leave first to keep per-connection order.
    func connectionHash(_ b: _UnsafeBytes, _ l: PacketLayout, _ m: PacketMetadata) -> UInt64 {
        var h = seed
        _mix(&h, UInt64(m.interface) << 8 | UInt64(l.transport.rawValue))
        let n = l.networkOffset
        // Safe: the addresses lie inside the validated IP header, the ports inside the L4 header.
        if l.network == .ipv4 {
            _mix(&h, UInt64(b.rawU32(n + 12)) | UInt64(b.rawU32(n + 16)) << 32)
        } else {
            _mix(&h, b.rawU64(n + 8))
            _mix(&h, b.rawU64(n + 16))
            _mix(&h, b.rawU64(n + 24))
            _mix(&h, b.rawU64(n + 32))
        }
        _mix(&h, UInt64(b.rawU32(l.transportOffset)))
        return h
    }

    /// Whether `f` and `s` are the same connection: interface, protocol, addresses and ports.
    func sameConnection(_ f: HeldFlow, _ s: Segment) -> Bool {
        guard f.metadata.interface == s.metadata.interface, f.isTCP == s.isTCP, f.isIPv4 == s.isIPv4 else {
            return false
        }
        let a = _UnsafeBytes(f.base)
        let b = _UnsafeBytes(s.base)
        let fn = f.layout.networkOffset
        let sn = s.layout.networkOffset
        let same = s.isIPv4 ? a.equal(fn + 12, b, sn + 12, count: 8) : a.equal(fn + 8, b, sn + 8, count: 32)
        return same && a.rawU32(f.layout.transportOffset) == b.rawU32(s.layout.transportOffset)
    }

    /// Whether segment `s` belongs to the flow held in `slot` (exact byte compare, after the hash).
    func sameFlow(_ f: HeldFlow, _ s: Segment) -> Bool {
        let a = _UnsafeBytes(f.base)
        let b = _UnsafeBytes(s.base)
        let n = s.layout.networkOffset
        guard f.metadata.interface == s.metadata.interface, f.metadata.linkType == s.metadata.linkType,
            f.layout.networkOffset == n, f.layout.transportOffset == s.layout.transportOffset,
            f.isTCP == s.isTCP, f.isIPv4 == s.isIPv4
        else { return false }
        // Safe: both packets validated the same header offsets.
        guard a.equal(0, b, 0, count: n) else { return false }
        let t = s.layout.transportOffset
        if s.isIPv4 {
            guard a.equal(n + 12, b, n + 12, count: 8), a.u8(n + 9) == b.u8(n + 9) else { return false }
        } else {
            if configuration.mode == .gro && a.u32(n) & 0xF00F_FFFF != b.u32(n) & 0xF00F_FFFF { return false }
            guard a.u8(n + 6) == b.u8(n + 6), a.equal(n + 8, b, n + 8, count: t - n - 8) else { return false }
        }
        return a.rawU32(t) == b.rawU32(t)
    }

    // MARK: - Hash index

    /// Finds the held packet of S's flow. At most one flow per connection is held: a held
    /// packet of the same connection under another identity is completed here, first.
    mutating func findFlow(_ segment: Segment) -> Int32? {
        var i = Int(truncatingIfNeeded: segment.hash) & indexMask
        while true {
            let slot = index[i]
            if slot < 0 { return nil }
            let f = flows[Int(slot)]
            if f.hash == segment.hash && sameConnection(f, segment) {
                if sameFlow(f, segment) { return slot }
                complete(slot, .flowIdentityChange)
                return nil
            }
            i = (i + 1) & indexMask
        }
    }

    mutating func indexInsert(_ slot: Int32, hash: UInt64) {
        var i = Int(truncatingIfNeeded: hash) & indexMask
        while index[i] >= 0 { i = (i + 1) & indexMask }
        index[i] = slot
    }

    /// Linear-probing removal with backward shift (no tombstones).
    mutating func indexRemove(_ slot: Int32, hash: UInt64) {
        var i = Int(truncatingIfNeeded: hash) & indexMask
        while index[i] != slot { i = (i + 1) & indexMask }
        var hole = i
        var j = (i + 1) & indexMask
        while index[j] >= 0 {
            let home = Int(truncatingIfNeeded: flows[Int(index[j])].hash) & indexMask
            // Move j into the hole when its home is not in (hole, j] cyclically.
            let distanceToJ = (j - home) & indexMask
            let distanceToHole = (hole - home) & indexMask
            if distanceToHole < distanceToJ {
                index[hole] = index[j]
                hole = j
            }
            j = (j + 1) & indexMask
        }
        index[hole] = -1
    }
}

// MARK: - Internal state

/// One segment being offered.
struct Segment {
    var base: UnsafeRawPointer
    var layout: PacketLayout
    var metadata: PacketMetadata
    var isIPv4: Bool
    var isTCP: Bool
    var hash: UInt64 = 0
    var payloadSum = OnesComplementSum.zero
    var payloadSumKnown = false

    init(base: UnsafeRawPointer, layout: PacketLayout, metadata: PacketMetadata, isIPv4: Bool, isTCP: Bool) {
        self.base = base
        self.layout = layout
        self.metadata = metadata
        self.isIPv4 = isIPv4
        self.isTCP = isTCP
    }

    var payloadLength: Int { layout.payloadLength }

    /// The pseudo-header sum for this segment's L4 length.
    func pseudoHeaderSum(_ b: _UnsafeBytes) -> OnesComplementSum {
        pseudoHeaderSum(b, layout: layout, length: layout.ipEnd - layout.transportOffset)
    }

    func pseudoHeaderSum(_ b: _UnsafeBytes, layout: PacketLayout, length: Int) -> OnesComplementSum {
        let n = layout.networkOffset
        let proto = OnesComplementSum(UInt16(isTCP ? 6 : 17))
        var s = proto + OnesComplementSum(UInt16(truncatingIfNeeded: length))
        if isIPv4 {
            s += b.sum(n + 12, count: 8)
        } else {
            s += b.sum(n + 8, count: 32)
        }
        return s
    }
}

/// A flow's held packet (P): its head segment and what has been merged into it.
struct HeldFlow {
    var hash: UInt64 = 0
    var base = UnsafeRawPointer(bitPattern: 1)!
    var frameLength = 0
    var layout = PacketLayout(frameLength: 0, networkOffset: 0, network: .ipv4, transportOffset: 0, transport: .tcp,
                              transportHeaderLength: 0, ipEnd: 0, isFragment: false)
    var metadata = PacketMetadata(linkType: .raw)
    var isIPv4 = true
    var isTCP = true
    /// Payload bytes per segment (the head's payload).
    var segmentSize = 0
    var count = 0
    var totalPayload = 0
    /// The next contiguous sequence number (TCP).
    var nextSequence: UInt32 = 0
    var firstID: UInt16 = 0
    var fixedID = false
    /// FIN and PSH of merged segments.
    var orFlags: UInt16 = 0
    /// LRO: the newest segment's ack and window.
    var lastAck: UInt32 = 0
    var lastWindow: UInt16 = 0
    var prev: Int32 = -1
    var next: Int32 = -1
}

/// One payload piece of a held packet.
struct Fragment {
    var base = UnsafeRawPointer(bitPattern: 1)!
    var length = 0
    var sum = OnesComplementSum.zero
    var sumKnown = false
}

/// One packet of output.
struct OutputRecord {
    var headerOffset: Int
    var headerLength: Int
    var fragmentStart: Int
    var fragmentCount: Int
    var length: Int
    var metadata: PacketMetadata
    var reason: GROReason?
}

/// What the merge rules decided for S against a held P.
enum Verdict {
    /// Merge S; then complete P when a reason is given.
    case merged(complete: GROReason?)
    /// Complete P for this reason; S then starts over alone.
    case refused(GROReason)
}
