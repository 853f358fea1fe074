import Logging
import OffloadEngine
import OffloadTUN
import OffloadWire

/// Where a ``ForwardingPipeline`` writes: a TUN device, or a test's recorder.
public protocol PacketSink: ~Copyable {
    /// Whether writes carry a virtio header (super-packets and partial checksums can be written).
    var takesVirtioHeaders: Bool { get }
    /// Writes one packet from pieces, after `header` when the sink takes virtio headers.
    func write(header: VirtioNetHeader?, pieces: UnsafeBufferPointer<UnsafeRawBufferPointer>) throws(TUNError)
    /// Writes one packet the pipeline forwards whole, with what it knows of it: its GSO facts,
    /// checksum state and layout. A sink that works on the packet itself (a tunnel, which
    /// segments and encapsulates) takes them as they are; the default turns them into the
    /// virtio header a TUN device wants.
    func write(facts: EgressFacts, pieces: UnsafeBufferPointer<UnsafeRawBufferPointer>) throws(TUNError)
}

/// What the pipeline knows of a packet it writes whole.
public struct EgressFacts: Hashable, Sendable {
    /// The GSO facts of a super-packet (nil: one packet).
    public var gso: GSOInfo?
    /// The L4 checksum's state.
    public var checksum: ChecksumState
    /// Where the headers are.
    public var layout: PacketLayout
    /// The virtio header that says the same (nil when none can, e.g. a fixed-ID chain).
    public var virtioHeader: VirtioNetHeader?
    /// Facts, with the virtio header that says the same (computed when not given).
    public init(gso: GSOInfo?, checksum: ChecksumState, layout: PacketLayout, virtioHeader: VirtioNetHeader?? = nil) {
        self.gso = gso
        self.checksum = checksum
        self.layout = layout
        self.virtioHeader = virtioHeader ?? VirtioPacketInfo.header(for: gso, checksum: checksum, layout: layout)
    }
}

extension PacketSink where Self: ~Copyable {
    /// Writes after the virtio header the facts give.
    public func write(facts: EgressFacts, pieces: UnsafeBufferPointer<UnsafeRawBufferPointer>) throws(TUNError) {
        unsafe try write(header: facts.virtioHeader, pieces: pieces)
    }
}

extension TUNDevice: PacketSink {
    /// Whether the device was opened with IFF_VNET_HDR.
    public var takesVirtioHeaders: Bool { vnetHeader }
}

/// One direction's dataplane after the read: GRO, the stage, the forwarding decision, and the
/// write (whole super-packets with their GSO facts, or through the reference ``Router`` for
/// segmentation, fragmentation and ICMP errors). Owned by one thread, like a NAPI instance.
///
/// ```text
/// read ─▶ GRO ─▶ stage ─▶ decision (egress MTU, per segment, after the stage) ─▶ write whole (GSO)
///                  │                        │
///                  └─ drop / reply          └─ segment · fragment · ICMP error (Router) ─▶ write
/// ```
public struct ForwardingPipeline<S: Stage>: ~Copyable {
    /// The direction.
    public let direction: Direction
    /// The egress MTU of the forwarding decision.
    public let egressMTU: Int
    /// The GRO engine.
    public var engine: GROEngine
    /// The stage.
    public var stage: S
    /// Counters (the GRO engine's and the stage's own are added by ``snapshot``).
    public var statistics = ForwarderStatistics()

    /// The counters with the GRO engine's and the stage's own.
    public var snapshot: ForwarderStatistics {
        var s = statistics
        s.gro = engine.statistics
        s.stage = stage.counters + (impairment?.counters ?? [])
        return s
    }
    /// Whether super-packets must be segmented before writing (the kernel refused a GSO write).
    public var gsoRefused = false
    /// Damage done to what this direction forwards (tests and the lab); nil: none.
    public var impairment: Impairment?
    /// The MTU that TCP SYNs and SYN-ACKs forwarded here announce an MSS for at most (their MSS
    /// option lowered to it less the fixed IP and TCP headers, as `iptables -j TCPMSS` does), or
    /// nil: MSS options stay as they are. A tunnel sets its inner MTU, so that connections through
    /// it send segments that fit from their first one instead of discovering the path MTU.
    public var mssClampMTU: Int?
    /// The clock of the batch being processed (for the impairment's delays).
    var now: UInt64 = 0
    /// What the packets are: IP packets (TUN) or Ethernet frames (TAP).
    public let linkType: LinkType
    /// A bridge port rather than a router: frames go on as they are (no TTL − 1, broadcast,
    /// multicast and link-local traffic too); only the MTU still applies per segment.
    public let bridging: Bool
    let logger: Logger
    var router: Router
    /// Segments super-packets in software from the staged headers and the payload in place (the
    /// path for fixed-ID trains, an egress without virtio headers, and kernels that refuse GSO writes).
    var segmenter = GSOSegmenter()
    /// The header buffer a stage rewrites (the headers of one packet, plus the stage's growth).
    let headerStorage: GrowableBuffer<UInt8>
    var header: UnsafeMutableRawBufferPointer {
        unsafe UnsafeMutableRawBufferPointer(start: headerStorage.rawBase, count: headerStorage.capacity)
    }

    /// Creates a pipeline.
    /// - Parameters:
    ///   - direction: its direction (names the counters).
    ///   - gro: GRO settings; output checksums are partial when `virtioHeaders`.
    ///   - egressMTU: the MTU of the device it writes to.
    ///   - icmpSourceV4: the source of ICMP errors it sends.
    ///   - icmpSourceV6: the source of ICMPv6 errors.
    ///   - virtioHeaders: whether the devices carry virtio headers.
    ///   - stage: the stage.
    ///   - logger: where one-time warnings go.
    ///   - linkType: IP packets (`.raw`, TUN) or Ethernet frames (`.ethernet`, TAP).
    ///   - bridging: forward as a bridge port (see ``bridging``).
    public init(direction: Direction, gro: GROConfiguration, egressMTU: Int, icmpSourceV4: IPv4Address,
                icmpSourceV6: IPv6Address, virtioHeaders: Bool, stage: S, logger: Logger, linkType: LinkType = .raw,
                bridging: Bool = false) {
        self.direction = direction
        self.linkType = linkType
        self.bridging = bridging
        self.egressMTU = egressMTU
        self.logger = logger
        self.stage = stage
        var gro = gro
        // A TUN write finishes partial checksums (NEEDS_CSUM); without virtio headers they must be whole.
        gro.outputChecksum = virtioHeaders ? .partial : .complete
        engine = GROEngine(configuration: gro)
        var routing = RouterConfiguration(egressMTU: egressMTU, egressTakesGSO: false, icmpSourceV4: icmpSourceV4,
                                          icmpSourceV6: icmpSourceV6)
        routing.segmentChecksum = .complete
        routing.decrementsTTL = !bridging
        router = Router(configuration: routing)
        headerStorage = GrowableBuffer(capacity: gro.maximumHeaderLength + max(0, stage.headerGrowth) + 64)
    }

    /// GROs one batch and sends every output packet on.
    /// - Parameters:
    ///   - batch: the packets read.
    ///   - now: the clock (nanoseconds) for GRO timeouts and the ICMP rate limit.
    ///   - egress: where forwarded packets go.
    ///   - back: where ICMP errors go (the device the packets came from).
    public mutating func process<E: PacketSink & ~Copyable, B: PacketSink & ~Copyable>(
        _ batch: borrowing PacketBatch, now: UInt64, egress: borrowing E, back: borrowing B
    ) {
        self.now = now
        engine.coalesce(batch, now: now)
        for i in 0..<engine.outputCount {
            let before = outcomeMarks
            forward(i, to: egress, back: back, now: now)
            countDelivery(since: before)
        }
        releaseHeld(now: now, egress: egress)
        // The engine's counters join only in `snapshot`: copying them here every batch would share
        // their array with the engine, whose next count would then copy it (a malloc per batch).
    }

    /// The counters an outcome moves (a few integers, copied around each packet).
    struct OutcomeMarks { var written: Int, refused: Int, answered: Int, notForwarded: Int }
    var outcomeMarks: OutcomeMarks {
        OutcomeMarks(written: statistics.packetsOut + statistics.writeErrors + statistics.gsoFallbacks,
                     refused: statistics.dropped, answered: statistics.stageReplies, notForwarded: statistics.notForwarded)
    }

    /// Gives the packet just handled its one outcome, from what its handling counted: anything
    /// written (or tried) towards the egress is "sent on"; else a refusal by the decision; else an
    /// answer from the stage; else not forwarded; else dropped by the stage (the rest).
    mutating func countDelivery(since before: OutcomeMarks) {
        let now = outcomeMarks
        if now.written > before.written {
            statistics.deliveredSentOn += 1
        } else if now.refused > before.refused {
            statistics.deliveredRefused += 1
        } else if now.answered > before.answered {
            statistics.deliveredAnswered += 1
        } else if now.notForwarded > before.notForwarded {
            statistics.deliveredNotForwarded += 1
        } else {
            statistics.deliveredDropped += 1
        }
    }

    /// Writes what the impairment held back (reordered, delayed) and is due by `now`: after every
    /// batch, and when no packet arrived for a while.
    public mutating func releaseHeld<E: PacketSink & ~Copyable>(now: UInt64, egress: borrowing E) {
        guard let impairment else { return }
        do { try impairment.release(now: now, to: egress) } catch { statistics.writeErrors += 1 }
    }

    /// Reads what a device holds into `batch` (up to its capacity), counting what came in: the
    /// read half of every dataplane thread.
    public mutating func read(from device: borrowing TUNDevice, into batch: inout PacketBatch, now: UInt64) {
        while batch.count < batch.packetCapacity {
            do {
                switch try device.read(into: &batch, timestamp: now) {
                case .packet:
                    statistics.packetsIn += 1
                    unsafe statistics.bytesIn += batch.unsafeBuffer(at: batch.count - 1).count
                    if batch.metadata(at: batch.count - 1).gso != nil { statistics.tsoIn += 1 }
                case .wouldBlock, .batchFull:
                    return
                case .rejected(let error):
                    statistics.virtioRejected += 1
                    if statistics.virtioRejected == 1 { logger.warning("\(direction.label): dropped a packet: \(error)") }
                }
            } catch {
                logger.error("\(direction.label): \(error)")
                return
            }
        }
    }

    /// Sends output packet `i` on, as a router would, after the stage.
    mutating func forward<E: PacketSink & ~Copyable, B: PacketSink & ~Copyable>(
        _ i: Int, to egress: borrowing E, back ingress: borrowing B, now: UInt64
    ) {
        let packet = engine.output(at: i)
        var first = unsafe UnsafeRawBufferPointer(start: nil, count: 0)
        var pieceCount = 0
        unsafe engine.withOutputFragments(at: i) { piece in
            if pieceCount == 0 { unsafe first = unsafe piece }
            pieceCount += 1
        }
        guard let layout = packet.layout, layout.isIP, layout.payloadOffset <= first.count,
            unsafe layout.payloadOffset + max(0, stage.headerGrowth) <= header.count
        else {
            // Not IP, not understood, or headers too long to stage: forwarded unchanged, as the kernel
            // would, unless the stage cannot have that (a translator).
            if stage.passesUnparsedPackets {
                writeUnchanged(i, packet, to: egress)
            } else {
                statistics.stageDropped += 1
            }
            return
        }
        if !bridging, unsafe FlowKey.staysOnLink(first, layout: layout) {
            statistics.notForwarded += 1  // multicast, broadcast or link-local: not routed
            return
        }
        // The stage works on a copy of the headers (a few dozen bytes); payloads stay in place.
        let originalHeaderLength = layout.payloadOffset
        unsafe header.baseAddress!.copyMemory(from: first.baseAddress!, byteCount: originalHeaderLength)
        var staged = unsafe StagePacket(direction: direction, _headers: header, headerLength: originalHeaderLength,
                                 layout: layout, gso: packet.metadata.gso, checksum: packet.metadata.checksum,
                                 payloadLength: packet.length - originalHeaderLength, egressMTU: egressMTU, now: now)
        switch stage.process(&staged) {
        case .forward:
            break
        case .drop:
            statistics.stageDropped += 1
            return
        case .reply(let bytes):
            statistics.stageReplies += 1
            writeWhole(bytes, to: ingress, icmp: true)
            return
        case .wholePacket:
            statistics.stageRewrites += 1
            var frame = engine.outputBytes(at: i)
            finishPartialChecksum(&frame, layout: packet.layout, checksum: packet.metadata.checksum)
            let result = stage.processWhole(frame, gso: packet.metadata.gso, direction: direction, egressMTU: egressMTU)
            if result.forward.isEmpty && result.replies.isEmpty { statistics.stageDropped += 1 }
            for bytes in result.forward {
                forwardRewritten(i, packet, bytes, originalHeaderLength: originalHeaderLength, to: egress, back: ingress,
                                 now: now)
            }
            for bytes in result.replies {
                statistics.stageReplies += 1
                writeWhole(bytes, to: ingress, icmp: true)
            }
            return
        }
        let headers = unsafe UnsafeMutableRawBufferPointer(rebasing: header[0..<staged.headerLength])
        let gso = staged.gso
        if let mssClampMTU, staged.layout.transport == .tcp, staged.layout.hasTransportHeader, !staged.layout.isFragment {
            let ipv6 = staged.layout.network == .ipv6
            let maximum = UInt16(clamping: max(0, RouterHeaders.clampedMSS(mtu: mssClampMTU, ipv6: ipv6)))
            let tcp = unsafe UnsafeMutableRawBufferPointer(
                rebasing: headers[staged.layout.transportOffset..<staged.layout.payloadOffset])
            if unsafe RouterHeaders.clampMSS(tcp, to: maximum, checksumIsPartial: staged.checksum == .partial) != nil {
                statistics.mssClamped += 1
            }
        }
        var decision = unsafe ForwardingDecision.decide(layout: staged.layout, headers: UnsafeRawBufferPointer(headers),
                                                 gso: gso, egressMTU: egressMTU,
                                                 egressTakesGSO: egress.takesVirtioHeaders && !gsoRefused)
        if bridging && decision == .timeExceeded { decision = .forward }  // a bridge does not look at the TTL
        switch decision {
        case .forward:
            let vhdr = VirtioPacketInfo.header(for: gso, checksum: staged.checksum, layout: staged.layout)
            let needsVirtio = gso != nil || staged.checksum == .partial
            if needsVirtio && (!egress.takesVirtioHeaders || (gso != nil && vhdr == nil)) {
                // A fixed-ID chain (no virtio bit for it) or an egress without virtio headers: segment here.
                routeInSoftware(i, staged, skip: originalHeaderLength, decision: gso == nil ? .forward : .segment, to: egress, back: ingress, now: now)
                return
            }
            // Bytes 4..<12 of the IP header hold the TTL and header checksum (IPv4) or the hop limit
            // (IPv6): kept, so that a refused GSO write can be segmented from the headers as staged.
            let n = staged.layout.networkOffset
            let kept = unsafe headers.loadUnaligned(fromByteOffset: n + 4, as: UInt64.self)
            if !bridging { unsafe RouterHeaders.decrementTTL(headers, networkOffset: n) }
            let facts = EgressFacts(gso: gso, checksum: staged.checksum, layout: staged.layout, virtioHeader: .some(vhdr))
            if unsafe writePieces(i, headers: UnsafeRawBufferPointer(headers), skip: originalHeaderLength, pieceCount: pieceCount,
                           facts: facts, to: egress)
            {
                statistics.packetsOut += 1
                statistics.bytesOut += staged.headerLength + staged.payloadLength
                if let gso, gso.segmentCount > 1 {
                    statistics.superPacketsOut += 1
                    statistics.segmentsInSuperPackets += gso.segmentCount
                }
            } else if gsoRefused && gso != nil {
                unsafe headers.storeBytes(of: kept, toByteOffset: n + 4, as: UInt64.self)
                routeInSoftware(i, staged, skip: originalHeaderLength, decision: .segment, to: egress, back: ingress, now: now)
            }
        case .passThrough:
            writeUnchanged(i, packet, to: egress)
        case .tooBig(let mtu):
            // The error goes to the source, about the packet it sent: quote the original headers
            // and announce the MTU its packets must have for the stage's output to fit.
            let growth = staged.headerLength - originalHeaderLength
            let announced = ForwardingDecision.announcedMTU(egressMTU: mtu, headerGrowth: growth, ipv6: layout.network == .ipv6)
            routeOriginal(i, packet, decision: .tooBig(mtu: announced), back: ingress, now: now)
        case .timeExceeded:
            routeOriginal(i, packet, decision: .timeExceeded, back: ingress, now: now)
        case .segment, .fragment:
            routeInSoftware(i, staged, skip: originalHeaderLength, decision: decision, to: egress, back: ingress, now: now)
        }
    }

    /// One `writev`: virtio header (or the facts, to a sink that takes them), the (rewritten)
    /// headers, then the payload pieces in place.
    /// Returns false on failure (counted; a refused GSO write switches to software segmentation).
    mutating func writePieces<E: PacketSink & ~Copyable>(
        _ i: Int, headers: UnsafeRawBufferPointer, skip: Int, pieceCount: Int, facts: EgressFacts,
        to egress: borrowing E
    ) -> Bool {
        var failure: TUNError?
        unsafe withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: pieceCount + 1) { pieces in
            var k = 0
            unsafe pieces[k] = unsafe headers
            k += 1
            var index = 0
            unsafe engine.withOutputFragments(at: i) { piece in
                if index == 0 {
                    if piece.count > skip {
                        unsafe pieces[k] = unsafe UnsafeRawBufferPointer(rebasing: piece[skip...])
                        k += 1
                    }
                } else {
                    unsafe pieces[k] = unsafe piece
                    k += 1
                }
                index += 1
            }
            do throws(TUNError) {
                if let impairment {
                    unsafe try impairment.write(header: facts.virtioHeader, pieces: UnsafeBufferPointer(rebasing: pieces[0..<k]), now: now,
                                                to: egress)
                } else {
                    unsafe try egress.write(facts: facts, pieces: UnsafeBufferPointer(rebasing: pieces[0..<k]))
                }
            } catch { failure = error }
        }
        guard let failure else { return true }
        if (facts.virtioHeader?.gsoType ?? VirtioNetHeader.gsoNone) != VirtioNetHeader.gsoNone && failure.errno == .invalidArgument {
            // Some kernels refuse GSO writes (tailscale#13041): segment from now on, and say so once.
            statistics.gsoFallbacks += 1
            if !gsoRefused { logger.warning("\(direction.label): the kernel refused a GSO write (\(failure)); segmenting instead") }
            gsoRefused = true
        } else {
            statistics.writeErrors += 1
            if statistics.writeErrors == 1 { logger.warning("\(direction.label): \(failure)") }
        }
        return false
    }

    /// A packet the pipeline does not route (not IP, not understood): written as it came.
    mutating func writeUnchanged<E: PacketSink & ~Copyable>(_ i: Int, _ packet: GROOutputPacket, to egress: borrowing E) {
        var frame = engine.outputBytes(at: i)
        finishPartialChecksum(&frame, layout: packet.layout, checksum: packet.metadata.checksum)
        writeWhole(frame, to: egress, icmp: false)
    }

    /// The slow path on the stage's output: the headers and the payload gathered into one buffer
    /// and handed to the reference ``Router`` with the decision already made. `skip` is the length
    /// of the original headers at the start of the first output piece (replaced by the stage's).
    mutating func routeInSoftware<E: PacketSink & ~Copyable, B: PacketSink & ~Copyable>(
        _ i: Int, _ staged: StagePacket, skip: Int, decision: ForwardingDecision, to egress: borrowing E,
        back ingress: borrowing B, now: UInt64
    ) {
        if decision == .segment, let gso = staged.gso, gso.segmentCount > 1,
            segmentStaged(i, staged, skip: skip, gso: gso, to: egress)
        {
            return
        }
        var frame = unsafe [UInt8](UnsafeRawBufferPointer(rebasing: header[0..<staged.headerLength]))
        frame.reserveCapacity(staged.headerLength + staged.payloadLength)
        var index = 0
        unsafe engine.withOutputFragments(at: i) { piece in
            if index == 0 {
                if piece.count > skip { unsafe frame += UnsafeRawBufferPointer(rebasing: piece[skip...]) }
            } else {
                unsafe frame += piece
            }
            index += 1
        }
        finishPartialChecksum(&frame, layout: staged.layout, checksum: staged.checksum)
        send(router.apply(decision, to: frame, linkType: linkType, gso: staged.gso, now: now), to: egress, back: ingress)
    }

    /// Segments a super-packet straight from the staged headers and the payload pieces where they
    /// lie (no gathering, no parsing again, no copy of the payload), lowers the TTL once in the
    /// header template, and writes each segment as its header plus its payload slice. Returns false,
    /// with nothing written or changed, when a segment's payload would straddle two pieces (the
    /// gathering path takes those).
    mutating func segmentStaged<E: PacketSink & ~Copyable>(
        _ i: Int, _ staged: StagePacket, skip: Int, gso: GSOInfo, to egress: borrowing E
    ) -> Bool {
        let headers = unsafe UnsafeMutableRawBufferPointer(rebasing: header[0..<staged.headerLength])
        let n = staged.layout.networkOffset
        // Bytes 4..<12 of the IP header (TTL and checksum, or the hop limit): put back if it fails.
        let kept = unsafe headers.loadUnaligned(fromByteOffset: n + 4, as: UInt64.self)
        if !bridging { unsafe RouterHeaders.decrementTTL(headers, networkOffset: n) }
        var pieceCount = 0
        unsafe engine.withOutputFragments(at: i) { _ in pieceCount += 1 }
        let segmented: Bool = unsafe withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self,
                                                                     capacity: pieceCount) { pieces in
            var k = 0, index = 0
            unsafe engine.withOutputFragments(at: i) { piece in
                let payload = index == 0 ? unsafe UnsafeRawBufferPointer(rebasing: piece[min(skip, piece.count)...]) : piece
                index += 1
                guard payload.count > 0 else { return }
                unsafe pieces[k] = unsafe payload
                k += 1
            }
            return unsafe segmenter.segment(headers: UnsafeRawBufferPointer(headers), layout: staged.layout,
                                            payload: UnsafeBufferPointer(rebasing: pieces[0..<k]), gso: gso)
        }
        guard segmented else {
            unsafe headers.storeBytes(of: kept, toByteOffset: n + 4, as: UInt64.self)
            return false
        }
        statistics.segmentedInSoftware += 1
        for s in 0..<segmenter.segmentCount {
            var failure: TUNError?
            unsafe withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: 2) { pieces in
                var k = 0
                unsafe segmenter.withSegmentFragments(at: s) { piece in
                    unsafe pieces[k] = unsafe piece
                    k += 1
                }
                let slice = unsafe UnsafeBufferPointer(rebasing: pieces[0..<k])
                do throws(TUNError) {
                    if let impairment {
                        unsafe try impairment.write(header: nil, pieces: slice, now: now, to: egress)
                    } else {
                        unsafe try egress.write(header: nil, pieces: slice)
                    }
                } catch {
                    failure = error
                }
            }
            if failure != nil {
                statistics.writeErrors += 1
            } else {
                statistics.packetsOut += 1
                statistics.bytesOut += segmenter.segmentLength(at: s)
            }
        }
        return true
    }

    /// A packet the stage built whole: decided on, then forwarded (TTL − 1), fragmented, or answered
    /// with an ICMP error about the packet as it came in (announcing the MTU less the headers the
    /// stage added: `originalHeaderLength` is the length of the original's headers).
    mutating func forwardRewritten<E: PacketSink & ~Copyable, B: PacketSink & ~Copyable>(
        _ i: Int, _ original: GROOutputPacket, _ bytes: [UInt8], originalHeaderLength: Int, to egress: borrowing E,
        back ingress: borrowing B, now: UInt64
    ) {
        let decision = unsafe ForwardingDecision.decide(bytes.span.bytes, linkType: .raw, gso: nil, egressMTU: egressMTU,
                                                 egressTakesGSO: false)
        switch decision {
        case .passThrough:
            statistics.stageDropped += 1  // the stage built something that is not IP: a bug, not forwarded
        case .tooBig(let mtu):
            let rewrittenHeaders = unsafe (try? PacketLayout(parsing: bytes.span.bytes, linkType: .raw))?.transportOffset
            let growth = (rewrittenHeaders ?? originalHeaderLength) - (original.layout?.transportOffset ?? 0)
            let announced = ForwardingDecision.announcedMTU(egressMTU: mtu, headerGrowth: growth,
                                                            ipv6: original.layout?.network == .ipv6)
            routeOriginal(i, original, decision: .tooBig(mtu: announced), back: ingress, now: now)
        case .timeExceeded:
            routeOriginal(i, original, decision: decision, back: ingress, now: now)
        case .forward, .segment, .fragment:
            send(router.apply(decision, to: bytes, linkType: .raw, gso: nil, now: now), to: egress, back: ingress)
        }
    }

    /// The slow path on the packet as it came in (ICMP errors quote what the source sent).
    mutating func routeOriginal<B: PacketSink & ~Copyable>(
        _ i: Int, _ packet: GROOutputPacket, decision: ForwardingDecision, back ingress: borrowing B, now: UInt64
    ) {
        var frame = engine.outputBytes(at: i)
        finishPartialChecksum(&frame, layout: packet.layout, checksum: packet.metadata.checksum)
        let output = router.apply(decision, to: frame, linkType: linkType, gso: packet.metadata.gso, now: now)
        add(output.counts)
        for icmp in output.toSource { writeWhole(icmp, to: ingress, icmp: true) }
    }

    mutating func send<E: PacketSink & ~Copyable, B: PacketSink & ~Copyable>(
        _ output: RouterOutput, to egress: borrowing E, back ingress: borrowing B
    ) {
        add(output.counts)
        for out in output.egress { writeWhole(out.bytes, to: egress, icmp: false) }
        for icmp in output.toSource { writeWhole(icmp, to: ingress, icmp: true) }
    }

    mutating func add(_ counts: RouterStatistics) {
        statistics.segmentedInSoftware += counts.segmented
        statistics.fragmentsOut += counts.fragmentsOut
        statistics.icmpSuppressed += counts.icmpSuppressed
        statistics.dropped += counts.dropped
    }

    mutating func writeWhole<E: PacketSink & ~Copyable>(_ bytes: [UInt8], to sink: borrowing E, icmp: Bool) {
        var failure: TUNError?
        unsafe bytes.withUnsafeBytes { raw in
            unsafe withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: 1) { pieces in
                unsafe pieces[0] = unsafe raw
                do throws(TUNError) {
                    if !icmp, let impairment {
                        unsafe try impairment.write(header: nil, pieces: UnsafeBufferPointer(pieces), now: now, to: sink)
                    } else {
                        unsafe try sink.write(header: nil, pieces: UnsafeBufferPointer(pieces))
                    }
                } catch {
                    failure = error
                }
            }
        }
        if failure != nil {
            statistics.writeErrors += 1
        } else if icmp {
            statistics.icmpSent += 1
        } else {
            statistics.packetsOut += 1
            statistics.bytesOut += bytes.count
        }
    }

    /// Completes a partial L4 checksum in a gathered frame (a write without GSO facts must be whole).
    func finishPartialChecksum(_ frame: inout [UInt8], layout: PacketLayout?, checksum: ChecksumState) {
        guard checksum == .partial, let layout, layout.hasTransportHeader else { return }
        let offset = layout.transport == .tcp ? TCPSegment.Field.checksum : UDPDatagram.Field.checksum
        unsafe frame.withUnsafeMutableBytes {
            unsafe try? VirtioPacketInfo.finishPartialChecksum($0, start: layout.transportOffset, offset: offset)
        }
    }
}

/// A ``PacketSink`` that keeps everything written to it: for tests, and for offline runs of the
/// pipeline (`offload demo`). Copies of it share one record.
public struct RecordingSink: PacketSink {
    /// The shared record.
    public final class Record: @unchecked Sendable {
        /// Each write: its virtio header and its bytes, gathered.
        public var writes: [(header: VirtioNetHeader?, bytes: [UInt8])] = []
    }

    /// The record the writes go to.
    public let record = Record()
    /// Whether the sink behaves like a TUN device with virtio headers.
    public var takesVirtioHeaders: Bool

    /// Creates an empty recorder.
    public init(takesVirtioHeaders: Bool = true) { self.takesVirtioHeaders = takesVirtioHeaders }

    /// What was written so far.
    public var writes: [(header: VirtioNetHeader?, bytes: [UInt8])] { record.writes }

    /// Keeps the packet.
    public func write(header: VirtioNetHeader?, pieces: UnsafeBufferPointer<UnsafeRawBufferPointer>) throws(TUNError) {
        unsafe record.writes.append((header, pieces.flatMap { unsafe Array($0) }))
    }
}
