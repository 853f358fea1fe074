import OffloadWire

/// Generic Receive Offload in user space: merges a batch of packets into super-packets by Linux's
/// rules (docs/linux-gro-rules.md §1–§4), so that ``GSOSegmenter`` can split them back byte for byte.
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
@safe  // owns its memory; every pointer use inside is marked `unsafe` and bounds-checked or commented `// Safe:`
public struct GROEngine: ~Copyable {
    /// The settings.
    public let configuration: GROConfiguration
    /// Counters since creation.
    public internal(set) var statistics = GROStatistics()
    /// How many segments the train fast path merged (a subset of the merges counted in
    /// ``statistics``; for benchmarks and tests: the counters are the same without it).
    public internal(set) var trainFastPathMerges = 0

    // Flow table: slots, a hash index over them, and an arrival-ordered list of held slots.
    // Engine-owned memory (allocated once in init, freed in deinit): accessed in place, so the
    // hot path neither copies flow records nor pays copy-on-write checks.
    let flows: UnsafeMutablePointer<HeldFlow>
    let freeSlots: UnsafeMutablePointer<Int32>
    var freeCount: Int
    let index: UnsafeMutablePointer<Int32>
    let indexMask: Int
    var oldest: Int32 = -1
    var newest: Int32 = -1
    let fragments: UnsafeMutablePointer<Fragment>
    /// Per slot, the train fast path's comparison mask over the head's header (128 bytes).
    let masks: UnsafeMutablePointer<UInt64>
    /// The train fast path's candidates: a TCP port pair's hash → the slot that held it last.
    let portCache: UnsafeMutablePointer<Int32>
    /// The slot merged into or held last: where the fast path reads a new packet's ports (-1: none).
    var lastSlot: Int32 = -1
    let seed: UInt64

    // Output of the last call (grown when needed, never shrunk).
    var out = GrowableBuffer<OutputRecord>(capacity: 256)
    var outCount = 0
    var outFragments = unsafe GrowableBuffer<UnsafeRawBufferPointer>(capacity: 1024)
    var outFragmentCount = 0
    /// Headers of completed super-packets; records keep offsets into it, so it may move.
    var headerArena = GrowableBuffer<UInt8>(capacity: 64 * 1024)
    var headerUsed = 0

    // Two arenas that hold carried packets across batches (flush-timeout mode only).
    var carryEven = GrowableBuffer<UInt8>(capacity: 1)
    var carryOdd = GrowableBuffer<UInt8>(capacity: 1)
    var carryGeneration = 0

    /// Creates an engine.
    /// - Precondition: capacities are positive and `maximumIPLength` ≤ 65535.
    public init(configuration: GROConfiguration = GROConfiguration()) {
        precondition(configuration.flowCapacity > 0 && configuration.maximumSegments > 0,
                     "flow capacity and segment limit must be positive")
        precondition(configuration.maximumIPLength <= 65_535, "merged IP packets are at most 65535 bytes")
        self.configuration = configuration
        let capacity = configuration.flowCapacity
        unsafe flows = .allocate(capacity: capacity)
        unsafe flows.initialize(repeating: HeldFlow(), count: capacity)
        unsafe freeSlots = .allocate(capacity: capacity)
        for i in 0..<capacity { unsafe freeSlots[i] = Int32(capacity - 1 - i) }
        freeCount = capacity
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        unsafe index = .allocate(capacity: size)
        unsafe index.initialize(repeating: -1, count: size)
        indexMask = size - 1
        let fragmentCount = capacity * configuration.maximumSegments
        unsafe fragments = .allocate(capacity: fragmentCount)
        unsafe fragments.initialize(repeating: Fragment(), count: fragmentCount)
        let maskWords = capacity * (Self.maskedHeaderLimit / 8)
        unsafe masks = .allocate(capacity: maskWords)
        unsafe masks.initialize(repeating: 0, count: maskWords)
        unsafe portCache = .allocate(capacity: Self.portCacheSize)
        unsafe portCache.initialize(repeating: -1, count: Self.portCacheSize)
        var g = SystemRandomNumberGenerator()
        seed = g.next()
    }

    deinit {
        unsafe flows.deinitialize(count: configuration.flowCapacity)
        unsafe flows.deallocate()
        unsafe freeSlots.deallocate()
        unsafe index.deallocate()
        unsafe fragments.deallocate()
        unsafe masks.deallocate()
        unsafe portCache.deallocate()
        unsafe out.base.deinitialize(count: outCount)
    }

    /// The number of flows holding a packet now.
    public var heldFlowCount: Int { configuration.flowCapacity - freeCount }

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
        let timed = configuration.flushTimeout != 0 && now == nil
        // Each packet's metadata is read where it lies: the fast path needs four of its fields,
        // and only the full path loads it whole.
        unsafe batch._metadata.withUnsafeBufferPointer { metadata in
            for i in 0..<metadata.count {
                let buffer = unsafe batch.unsafeBuffer(at: i)
                let m = unsafe metadata.baseAddress! + i
                if timed { clock = unsafe max(clock, m.pointee.timestamp) }
                // The train fast path first, here in the loop; the full path only when it declines.
                if unsafe lastSlot >= 0, let base = buffer.baseAddress, mergeIntoTrain(base, frameLength: buffer.count, m) {
                    statistics.packetsIn += 1
                    continue
                }
                unsafe offer(buffer, m)
            }
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
        unsafe out.base.deinitialize(count: outCount)
        outCount = 0
        outFragmentCount = 0
        headerUsed = 0
    }

    // MARK: - One packet

    /// Offers one packet (docs/linux-gro-rules.md §1.3, §2).
    mutating func offer(_ buffer: UnsafeRawBufferPointer, _ packetMetadata: UnsafePointer<PacketMetadata>) {
        statistics.packetsIn += 1
        guard let base = buffer.baseAddress, buffer.count > 0 else {
            unsafe emitUnchanged(buffer, packetMetadata.pointee, nil, reason: .malformed)
            return
        }
        // (`coalesce` has tried the train fast path already.)
        let metadata = unsafe packetMetadata.pointee
        let layout: PacketLayout
        do {
            layout = unsafe try PacketLayout(parsing: buffer.bytes, linkType: metadata.linkType)
        } catch {
            unsafe bypass(buffer, metadata, nil, reason: .malformed)
            return
        }
        if metadata.gso != nil { return unsafe bypass(buffer, metadata, layout, reason: .gsoInput) }
        let b = unsafe _UnsafeBytes(base)
        let n = layout.networkOffset
        let isIPv4: Bool
        switch layout.network {
        case .other:
            unsafe emitUnchanged(buffer, metadata, layout, reason: .notIP)
            return
        case .ipv4:
            isIPv4 = true
            // Safe: the layout validated at least 20 bytes of IPv4 header at n.
            if b.u8(n + IPv4Packet.Field.versionAndHeaderLength) != IPv4Packet.versionAndMinimumHeaderLength {
                return unsafe bypass(buffer, metadata, layout, reason: .ipv4Options)
            }
            if layout.isFragment { return unsafe bypass(buffer, metadata, layout, reason: .fragment) }
            if !Self.ipv4HeaderChecksumIsValid(b, n) { return unsafe bypass(buffer, metadata, layout, reason: .badIPChecksum) }
        case .ipv6:
            isIPv4 = false
            if layout.isFragment { return unsafe bypass(buffer, metadata, layout, reason: .fragment) }
            if !Self.extensionHeadersAreSkippable(b, layout) {
                return unsafe bypass(buffer, metadata, layout, reason: .unsupportedProtocol)
            }
        }
        let isTCP: Bool
        switch layout.transport {
        case .tcp:
            guard configuration.tcp else { return unsafe bypass(buffer, metadata, layout, reason: .tcpDisabled) }
            isTCP = true
        case .udp:
            guard configuration.udp else { return unsafe bypass(buffer, metadata, layout, reason: .udpDisabled) }
            isTCP = false
        default:
            return unsafe bypass(buffer, metadata, layout, reason: .unsupportedProtocol)
        }
        guard layout.hasTransportHeader else { return unsafe bypass(buffer, metadata, layout, reason: .malformed) }
        if layout.payloadOffset > configuration.maximumHeaderLength {
            return unsafe bypass(buffer, metadata, layout, reason: .headerTooLong)
        }

        if !isTCP && b.u16(layout.transportOffset + UDPDatagram.Field.checksum) == 0 {
            // UDP without a checksum: Linux never merges it (§3.2).
            unsafe completeFlow(of: buffer, metadata, layout, reason: .flowBypass)
            unsafe emitUnchanged(buffer, metadata, layout, reason: .udpZeroChecksum)
            return
        }
        // Checksum (§2.7). A good (or trusted) checksum field lets completion derive the
        // payload's sum from it instead of summing the payload again.
        let derivable: Bool
        switch metadata.checksum {
        case .unverified:
            if Self.transportChecksumIsValid(b, layout, isIPv4: isIPv4, isTCP: isTCP) {
                derivable = true
            } else {
                // A field holding just the pseudo-header sum is checksum offload on the host that
                // captured it (its NIC finishes it): counted, so that the tools can say so and
                // point to `--checksums trust`. It is not merged by default: a merged packet gets
                // a complete checksum, and segmenting it back would not give the partial fields
                // that came in (segment(coalesce(x)) == x must hold).
                if Self.transportChecksumIsPartial(b, layout, isIPv4: isIPv4, isTCP: isTCP) {
                    statistics.partialChecksums += 1
                }
                return unsafe bypass(buffer, metadata, layout, reason: .badChecksum)
            }
        case .verified:
            derivable = true
        case .partial:
            derivable = false
        }

        // S-only anomalies (§2.3): trailing bytes, the reserved bit, or a UDP length short of the packet.
        var sFlush = layout.trailingByteCount != 0
        if isIPv4 && b.u16(n + IPv4Packet.Field.flagsAndFragmentOffset) & IPv4Packet.Flags.reserved != 0 { sFlush = true }
        if !isTCP && Int(b.u16(layout.transportOffset + UDPDatagram.Field.length)) != layout.ipEnd - layout.transportOffset {
            sFlush = true
        }

        let segment = unsafe Segment(base: base, layout: layout, isIPv4: isIPv4, isTCP: isTCP,
                              hash: connectionHash(b, layout, metadata), interface: metadata.interface,
                              linkType: metadata.linkType, payloadSumDerivable: derivable)
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
        if sFlush { return unsafe emitUnchanged(buffer, metadata, layout, reason: .padded) }
        if segment.payloadLength == 0 { return unsafe emitUnchanged(buffer, metadata, layout, reason: .zeroPayload) }
        if isTCP {
            // tcp_gro_receive: URG, PSH, RST, SYN or FIN on a packet with nothing held: delivered alone.
            let flags = b.u16(layout.transportOffset + TCPSegment.Field.flags)
            let deliveredAlone = TCPFlags.urg.rawValue | TCPFlags.psh.rawValue | TCPFlags.rst.rawValue
                | TCPFlags.syn.rawValue | TCPFlags.fin.rawValue
            if flags & deliveredAlone != 0 {
                return unsafe emitUnchanged(buffer, metadata, layout, reason: .controlFlags)
            }
        }
        hold(segment, metadata)
    }

    /// The IPv4 header checksum of a 20-byte header at `n` (Linux `ip_fast_csum`), five loads.
    @inline(__always)
    static func ipv4HeaderChecksumIsValid(_ b: _UnsafeBytes, _ n: Int) -> Bool {
        // Safe: the caller validated 20 bytes of IPv4 header at n.
        var s = UInt64(b.rawU32(n)) &+ UInt64(b.rawU32(n + 4)) &+ UInt64(b.rawU32(n + 8))
        s &+= UInt64(b.rawU32(n + 12)) &+ UInt64(b.rawU32(n + 16))
        s = (s & 0xFFFF_FFFF) &+ (s >> 32)
        s = (s & 0xFFFF) &+ (s >> 16)
        s = (s & 0xFFFF) &+ (s >> 16)
        s = (s & 0xFFFF) &+ (s >> 16)
        return s == 0xFFFF
    }

    /// Whether the L4 checksum of a validated TCP or UDP packet is good: the pseudo-header plus
    /// the L4 header and payload sum to all ones.
    @inline(__always)
    static func transportChecksumIsValid(_ b: _UnsafeBytes, _ layout: PacketLayout, isIPv4: Bool, isTCP: Bool) -> Bool {
        let length = layout.ipEnd - layout.transportOffset
        let sum = b.sum(layout.transportOffset, count: length)
        let pseudo = Segment.pseudoHeaderSum(b, layout: layout, isIPv4: isIPv4, isTCP: isTCP, length: length)
        return pseudo + sum == OnesComplementSum(0xFFFF)
    }

    /// Whether the L4 checksum field holds only the pseudo-header sum (not complemented): what a
    /// host with checksum offload hands its capture (tcpdump on the sender), the NIC finishing it.
    static func transportChecksumIsPartial(_ b: _UnsafeBytes, _ layout: PacketLayout, isIPv4: Bool, isTCP: Bool) -> Bool {
        let length = layout.ipEnd - layout.transportOffset
        let field = b.u16(layout.transportOffset + (isTCP ? TCPSegment.Field.checksum : UDPDatagram.Field.checksum))
        let pseudo = Segment.pseudoHeaderSum(b, layout: layout, isIPv4: isIPv4, isTCP: isTCP, length: length)
        return field == InternetChecksum.partialChecksumField(pseudoHeader: pseudo)
    }

    /// Only Hop-by-Hop, Routing and Destination Options may be skipped (exthdrs_offload.c).
    @inline(__always)
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
    @inline(__always)
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
    @inline(__always)
    func sameConnection(_ f: UnsafeMutablePointer<HeldFlow>, _ s: Segment) -> Bool {
        guard unsafe f.pointee.metadata.interface == s.interface, unsafe f.pointee.isTCP == s.isTCP,
            unsafe f.pointee.isIPv4 == s.isIPv4
        else {
            return false
        }
        let a = unsafe _UnsafeBytes(f.pointee.base)
        let b = unsafe _UnsafeBytes(s.base)
        let fn = unsafe f.pointee.layout.networkOffset
        let sn = s.layout.networkOffset
        let same = s.isIPv4 ? a.equal(fn + 12, b, sn + 12, count: 8) : a.equal(fn + 8, b, sn + 8, count: 32)
        return unsafe same && a.rawU32(f.pointee.layout.transportOffset) == b.rawU32(s.layout.transportOffset)
    }

    /// Whether segment `s`, already known to be the same connection (``sameConnection(_:_:)``),
    /// has the held flow's exact GRO identity: the same link header, header layout and, for IPv6,
    /// flow label and extension-header bytes.
    @inline(__always)
    func sameFlow(_ f: UnsafeMutablePointer<HeldFlow>, _ s: Segment) -> Bool {
        let a = unsafe _UnsafeBytes(f.pointee.base)
        let b = unsafe _UnsafeBytes(s.base)
        let n = s.layout.networkOffset
        guard unsafe f.pointee.metadata.linkType == s.linkType, unsafe f.pointee.layout.networkOffset == n,
            unsafe f.pointee.layout.transportOffset == s.layout.transportOffset
        else { return false }
        // Safe: both packets validated the same header offsets.
        if n == 14 {
            guard a.rawU64(0) == b.rawU64(0), a.rawU32(8) == b.rawU32(8), a.u16(12) == b.u16(12) else { return false }
        } else if !a.equal(0, b, 0, count: n) {
            return false
        }
        if s.isIPv4 { return true }
        let t = s.layout.transportOffset
        // The flow label is part of the GRO identity (`ipv6_gro_receive`); the traffic class is a merge rule.
        let identity = ~IPv6Packet.Masks.trafficClass
        if configuration.mode == .gro && a.u32(n) & identity != b.u32(n) & identity { return false }
        return a.equal(n + 40, b, n + 40, count: t - n - 40)
    }

    // MARK: - Hash index

    /// Finds the held packet of S's flow. At most one flow per connection is held: a held
    /// packet of the same connection under another identity is completed here, first.
    @inline(__always)
    mutating func findFlow(_ segment: Segment) -> Int32? {
        var i = Int(truncatingIfNeeded: segment.hash) & indexMask
        while true {
            let slot = unsafe index[i]
            if slot < 0 { return nil }
            let f = unsafe flows + Int(slot)
            if unsafe f.pointee.hash == segment.hash && sameConnection(f, segment) {
                if unsafe sameFlow(f, segment) { return slot }
                complete(slot, .flowIdentityChange)
                return nil
            }
            i = (i + 1) & indexMask
        }
    }

    mutating func indexInsert(_ slot: Int32, hash: UInt64) {
        var i = Int(truncatingIfNeeded: hash) & indexMask
        while unsafe index[i] >= 0 { i = (i + 1) & indexMask }
        unsafe index[i] = slot
    }

    /// Linear-probing removal with backward shift (no tombstones).
    mutating func indexRemove(_ slot: Int32, hash: UInt64) {
        var i = Int(truncatingIfNeeded: hash) & indexMask
        while unsafe index[i] != slot { i = (i + 1) & indexMask }
        var hole = i
        var j = (i + 1) & indexMask
        while unsafe index[j] >= 0 {
            let home = unsafe Int(truncatingIfNeeded: flows[Int(index[j])].hash) & indexMask
            // Move j into the hole when its home is not in (hole, j] cyclically.
            let distanceToJ = (j - home) & indexMask
            let distanceToHole = (hole - home) & indexMask
            if distanceToHole < distanceToJ {
                unsafe index[hole] = unsafe index[j]
                hole = j
            }
            j = (j + 1) & indexMask
        }
        unsafe index[hole] = -1
    }
}

// MARK: - Internal state

/// One segment being offered: where it is and what the hot path needs to know about it.
@safe  // internal: its pointers come from validated layouts and engine-owned memory
struct Segment {
    let base: UnsafeRawPointer
    let layout: PacketLayout
    let isIPv4: Bool
    let isTCP: Bool
    let hash: UInt64
    let interface: UInt32
    let linkType: LinkType
    /// Whether the L4 checksum field is known good (verified or trusted), so the payload's sum
    /// can be derived from it.
    let payloadSumDerivable: Bool

    var payloadLength: Int { layout.payloadLength }

    /// The pseudo-header sum for an L4 length of `length`.
    static func pseudoHeaderSum(_ b: _UnsafeBytes, layout: PacketLayout, isIPv4: Bool, isTCP: Bool, length: Int)
        -> OnesComplementSum
    {
        let n = layout.networkOffset
        let proto = OnesComplementSum(UInt16(isTCP ? 6 : 17))
        var s = proto + OnesComplementSum(UInt16(truncatingIfNeeded: length))
        s += isIPv4 ? b.sum(n + 12, count: 8) : b.sum(n + 8, count: 32)
        return s
    }
}

/// A flow's held packet (P): its head segment and what has been merged into it.
@safe  // internal: its pointers come from validated layouts and engine-owned memory
struct HeldFlow {
    var hash: UInt64 = 0
    var base = unsafe UnsafeRawPointer(bitPattern: 1)!
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
    /// The sum of the chain's pieces' varying words, and whether every piece's is usable: with
    /// them completion derives the payload's checksum in one step (see `buildSuperPacket`).
    var varyingTotal = OnesComplementSum.zero
    var allDerivable = true
    /// The train fast path's mask length in 16-byte chunks (0: free, or on the full path only).
    var maskChunks: Int8 = 0
    /// The header layout the slot's mask was built for (kept while the slot is free, so a
    /// new head of the same layout reuses it).
    var maskKey: UInt32 = 0
    var prev: Int32 = -1
    var next: Int32 = -1
}

/// One payload piece of a held packet.
@safe  // internal: its pointers come from validated layouts and engine-owned memory
struct Fragment {
    var base = unsafe UnsafeRawPointer(bitPattern: 1)!
    var length = 0
    /// The sum of the L4 header words that differ between segments of a chain (TCP: sequence
    /// number, offset/flags word, checksum; UDP: length, checksum) plus the pseudo-header length:
    /// with the chain's invariant words it gives the payload's sum (see `payloadSum`).
    var varyingSum = OnesComplementSum.zero
    /// Whether `varyingSum` can be used (the segment's checksum was verified or trusted).
    var derivable = false
}

/// One packet of output.
struct OutputRecord {
    var layout: PacketLayout?
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
