import Dispatch
import Foundation
import Logging
import OffloadEngine
import OffloadForwarder
import OffloadTUN
import OffloadWire
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Counters of one direction of a tunnel's outer side.
public struct TunnelCounters: Hashable, Sendable, Codable {
    /// `sendmsg` calls, and the datagrams they carried.
    public var sends = 0, datagramsSent = 0
    /// Sends of more than one datagram (UDP GSO trains: a super-packet's segments), and their datagrams.
    public var trains = 0, datagramsInTrains = 0
    /// `recvmsg` calls that returned data, and the datagrams in them.
    public var receives = 0, datagramsReceived = 0
    /// Datagrams from an address other than the far end's (an unconnected socket), dropped.
    public var foreign = 0
    /// Requests answered (GTP-U echo requests).
    public var replies = 0
    /// Signalling datagrams received, by kind (echo responses, error indications, NAT keepalives, IKE).
    public var signalling: [TunnelSignal: Int] = [:]
    /// Received datagrams dropped, by reason.
    public var dropped: [TunnelDropReason: Int] = [:]
    /// Inner packets not sent, by reason (no SA whose selectors match, a sequence number space used up).
    public var encapsulationDropped: [TunnelDropReason: Int] = [:]
    /// Sends the kernel refused (the datagrams are lost), and sends made one datagram at a time
    /// because the kernel refused UDP GSO.
    public var sendErrors = 0, sendsWithoutGSO = 0
    /// Packets encapsulated from the pipeline's pieces in place, without gathering them first.
    public var sentInPlace = 0
    /// Creates zeroed counters.
    public init() {}

    /// Every plain counter once: its metric name, help text and where it is kept. ``add(_:)`` and
    /// ``stageCounters(dropReasons:)`` are made from this table.
    static let table: [(name: String, help: String, field: WritableKeyPath<TunnelCounters, Int> & Sendable)] = [
        ("tunnel_sendmsg", "sendmsg calls on the tunnel socket.", \.sends),
        ("tunnel_datagrams_sent", "Datagrams sent on the tunnel socket.", \.datagramsSent),
        ("tunnel_gso_trains", "sendmsg calls that carried a train of datagrams (UDP GSO).", \.trains),
        ("tunnel_gso_train_datagrams", "Datagrams in those trains.", \.datagramsInTrains),
        ("tunnel_recvmsg", "recvmsg calls that returned data.", \.receives),
        ("tunnel_datagrams_received", "Datagrams received on the tunnel socket.", \.datagramsReceived),
        ("tunnel_foreign", "Datagrams from another address than the far end's, dropped.", \.foreign),
        ("tunnel_replies", "Requests answered (GTP-U echo requests).", \.replies),
        ("tunnel_send_errors", "Sends the kernel refused.", \.sendErrors),
        ("tunnel_sends_without_gso", "Sends made datagram by datagram (UDP GSO refused).", \.sendsWithoutGSO),
        ("tunnel_encapsulated_in_place", "Packets encapsulated from their pieces in place (not gathered).", \.sentInPlace),
    ]

    /// As stage counters (published as `offload_tunnel_*_total`), each of `dropReasons` even while zero.
    public func stageCounters(dropReasons: [TunnelDropReason]) -> [StageCounter] {
        var all = Self.table.map { StageCounter($0.name, help: $0.help, value: self[keyPath: $0.field]) }
        for (kind, value) in signalling.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            all.append(StageCounter("tunnel_signalling", help: "Signalling datagrams received, by kind.",
                                    labels: ["kind": kind.rawValue], value: value))
        }
        for reason in Set(dropReasons).union(dropped.keys).sorted(by: { $0.rawValue < $1.rawValue }) {
            all.append(StageCounter("tunnel_dropped", help: "Received datagrams dropped, by reason.",
                                    labels: ["reason": reason.rawValue], value: dropped[reason, default: 0]))
        }
        for (reason, value) in encapsulationDropped.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            all.append(StageCounter("tunnel_encapsulation_dropped", help: "Inner packets not sent into the tunnel, by reason.",
                                    labels: ["reason": reason.rawValue], value: value))
        }
        return all
    }
}

/// The outer side of a tunnel as a ``PacketSink``: each packet or super-packet the forwarding
/// pipeline writes (with its GSO facts) is put behind the codec's headers, one datagram per
/// segment, and sent with as few `sendmsg` calls as UDP GSO allows. One sink per thread (it
/// keeps a staging buffer and an encoder); the output (a socket, or a capture offline) is shared.
public final class TunnelSink<Codec: TunnelCodec>: PacketSink, @unchecked Sendable {
    /// Where the datagrams go.
    public let output: any DatagramOutput
    var encapsulator: TunnelEncapsulator<Codec>
    /// The packet gathered into one buffer (the segmenter needs it contiguous).
    var staging = GrowableBuffer<UInt8>(capacity: 65_600)
    /// Counters.
    public private(set) var counters = TunnelCounters()
    /// Whether the kernel refused UDP GSO (sends go datagram by datagram from then on).
    public private(set) var gsoRefused = false
    /// The outer TOS last set on the socket by this sink.
    var lastTOS: UInt8?
    /// Whether each send carries its TOS as a control message instead of setting the socket's:
    /// for a sink that shares the socket with the encapsulating one and sends rarely (the
    /// decapsulating thread's ICMP errors and replies), so the socket's TOS stays the
    /// encapsulating sink's.
    let perSendTrafficClass: Bool
    let logger: Logger

    /// Whether the sink takes super-packets (and sends them as UDP GSO trains); false: one packet
    /// per write, one datagram per `sendmsg` (a tunnel with offloads off).
    public let offloads: Bool

    /// Creates a sink on a socket or another output.
    /// - Throws: ``TunnelCodecError`` when the codec cannot make an encoder.
    public init(output: any DatagramOutput, codec: Codec, offloads: Bool = true, perSendTrafficClass: Bool = false,
                logger: Logger) throws(TunnelCodecError) {
        self.output = output
        encapsulator = try TunnelEncapsulator(codec: codec)
        self.offloads = offloads
        self.perSendTrafficClass = perSendTrafficClass
        gsoRefused = !offloads
        self.logger = logger
    }

    /// The pipeline writes whole super-packets with their GSO facts (with offloads on).
    public var takesVirtioHeaders: Bool { offloads }

    /// Gathers the pieces into the staging buffer; the packet, or nil when empty.
    func gather(_ pieces: UnsafeBufferPointer<UnsafeRawBufferPointer>) -> UnsafeMutableRawBufferPointer? {
        var length = 0
        for unsafe piece in unsafe pieces { length += piece.count }
        guard length > 0 else { return nil }
        staging.reserve(length)
        var at = 0
        for unsafe piece in unsafe pieces where piece.count > 0 {
            unsafe (staging.rawBase + at).copyMemory(from: piece.baseAddress!, byteCount: piece.count)
            at += piece.count
        }
        return unsafe UnsafeMutableRawBufferPointer(start: staging.rawBase, count: length)
    }

    /// Encapsulates and sends one packet or super-packet, with the facts the pipeline knows: in
    /// place from its pieces (headers, then payload as GRO chained it), or, when a segment would
    /// span two pieces, gathered first.
    public func write(facts: EgressFacts, pieces: UnsafeBufferPointer<UnsafeRawBufferPointer>) throws(TUNError) {
        if let first = unsafe pieces.first, first.count == facts.layout.payloadOffset,
            let prepared = unsafe encapsulator.prepare(headers: first, layout: facts.layout,
                                                       payload: UnsafeBufferPointer(rebasing: pieces.dropFirst()), gso: facts.gso,
                                                       partialChecksum: facts.checksum == .partial)
        {
            counters.sentInPlace += 1
            try finish(prepared)
            return
        }
        guard let packet = unsafe gather(pieces) else { return }
        if facts.gso == nil, facts.checksum == .partial, facts.layout.hasTransportHeader {
            // One packet with a partial checksum: finish it (the far end gets no virtio header).
            let offset = facts.layout.transport == .tcp ? TCPSegment.Field.checksum : UDPDatagram.Field.checksum
            unsafe try? VirtioPacketInfo.finishPartialChecksum(packet, start: facts.layout.transportOffset, offset: offset)
        }
        unsafe try send(UnsafeRawBufferPointer(packet), gso: facts.gso)
    }

    /// Encapsulates and sends one packet the pipeline built itself (an ICMP error, a segment of the
    /// software path), after a virtio header when it has one.
    public func write(header: VirtioNetHeader?, pieces: UnsafeBufferPointer<UnsafeRawBufferPointer>) throws(TUNError) {
        guard let packet = unsafe gather(pieces) else { return }
        var gso: GSOInfo?
        if let header, let info = unsafe try? VirtioPacketInfo.validate(header, packet: UnsafeRawBufferPointer(packet).bytes,
                                                                         linkType: encapsulator.codec.innerLinkType) {
            gso = info.gso
            if gso == nil, info.checksum == .partial, let start = info.checksumStart, let offset = info.checksumOffset {
                unsafe try? VirtioPacketInfo.finishPartialChecksum(packet, start: start, offset: offset)
            }
        }
        unsafe try send(UnsafeRawBufferPointer(packet), gso: gso)
    }

    func send(_ packet: UnsafeRawBufferPointer, gso: GSOInfo?) throws(TUNError) {
        let refusal: TunnelDropReason?
        do { refusal = unsafe try encapsulator.prepare(packet, gso: gso) } catch {
            counters.sendErrors += 1
            return
        }
        try finish(refusal)
    }

    /// Counts a refusal, or counts the segments the encoder refused and sends the prepared datagrams.
    func finish(_ refusal: TunnelDropReason?) throws(TUNError) {
        if let refusal {
            countRefusal(refusal)
            return
        }
        for reason in encapsulator.refusedSegments { countRefusal(reason) }
        try sendTrain()
    }

    /// Counts one inner packet (or segment) not sent, and says so the first time for each reason.
    func countRefusal(_ reason: TunnelDropReason) {
        counters.encapsulationDropped[reason, default: 0] += 1
        if counters.encapsulationDropped[reason] == 1 {
            logger.warning("an inner packet was not sent into the tunnel: \(reason) (counted from now on as tunnel_encapsulation_dropped)")
        }
    }

    /// Sends the prepared datagrams: trains of same-size datagrams, at most
    /// ``UDPTunnelSocket/maximumSegmentsPerSend`` and 65 000 bytes per `sendmsg`.
    func sendTrain() throws(TUNError) {
        let total = encapsulator.datagramCount
        var first = 0
        while first < total {
            let size = encapsulator.datagramLength(at: first)
            var last = first
            var bytes = size
            // Same-size datagrams, plus one shorter at the end of the train.
            while !gsoRefused, last + 1 < total, last + 1 - first < UDPTunnelSocket.maximumSegmentsPerSend,
                bytes + encapsulator.datagramLength(at: last + 1) <= UDPTunnelSocket.maximumBytesPerSend,
                encapsulator.datagramLength(at: last) == size
            {
                last += 1
                bytes += encapsulator.datagramLength(at: last)
            }
            let count = last - first + 1
            do {
                try send(first..<(last + 1), segmentSize: count > 1 ? size : 0)
                counters.sends += 1
                counters.datagramsSent += count
                if count > 1 {
                    counters.trains += 1
                    counters.datagramsInTrains += count
                }
            } catch let error where count > 1 && (error.errno == .ioError || error.errno == .invalidArgument) {
                // The device or kernel cannot do UDP GSO: datagram by datagram from now on, said once.
                if !gsoRefused { logger.warning("UDP GSO refused (\(error)): sending datagram by datagram") }
                gsoRefused = true
                continue
            } catch {
                counters.sendErrors += 1
                if counters.sendErrors == 1 { logger.warning("\(error)") }
            }
            if gsoRefused && offloads && count == 1 { counters.sendsWithoutGSO += 1 }
            first = last + 1
        }
    }

    func send(_ datagrams: Range<Int>, segmentSize: Int) throws(TUNError) {
        let pieceCount = datagrams.count * 4
        var failure: TUNError?
        unsafe withUnsafeTemporaryAllocation(of: iovec.self, capacity: pieceCount) { iov in
            var k = 0
            for i in datagrams {
                unsafe encapsulator.withDatagramPieces(at: i) { piece in
                    guard piece.count > 0, k < pieceCount else { return }
                    unsafe iov[k] = unsafe iovec(iov_base: UnsafeMutableRawPointer(mutating: piece.baseAddress), iov_len: piece.count)
                    k += 1
                }
            }
            do throws(TUNError) {
                // RFC 6040 normal mode: the outer header carries the inner DSCP and ECN.
                let tos = encapsulator.innerTOS
                let destination = encapsulator.encoder.destination
                if perSendTrafficClass {
                    unsafe try output.send(UnsafeBufferPointer(rebasing: iov[0..<k]), segmentSize: segmentSize,
                                           trafficClass: tos ?? 0, to: destination)
                    return
                }
                // Set on the socket when it changes rather than per send: a control message per
                // sendmsg measurably slows the kernel's send path (about 10% here).
                if let tos, tos != lastTOS {
                    output.setTrafficClass(tos)
                    lastTOS = tos
                }
                unsafe try output.send(UnsafeBufferPointer(rebasing: iov[0..<k]), segmentSize: segmentSize, trafficClass: nil,
                                       to: destination)
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
    }

    /// Sends one datagram as it is (an answer to a request), with TOS 0 for this send only, to
    /// `destination` (nil: the one far end).
    func sendRaw(_ datagram: [UInt8], to destination: UDPEndpoint? = nil) {
        do {
            try output.send(datagram, trafficClass: 0, to: destination)
            counters.sends += 1
            counters.datagramsSent += 1
        } catch { counters.sendErrors += 1 }
    }
}

/// Settings of a ``TunnelEndpoint``.
public struct TunnelConfiguration<Codec: TunnelCodec>: Sendable {
    /// The TUN device on the inner side (a TAP device for Ethernet inside).
    public var device: String
    /// The outer addresses: this end and the far end.
    public var local: IPAddress, remote: IPAddress
    /// The protocol and its identity (TEID, VNI, SAs).
    public var codec: Codec
    /// The underlay's MTU (nil: the path MTU the kernel knows towards the far end).
    public var underlayMTU: Int?
    /// GRO settings for the inner packets (both directions).
    public var gro = GROConfiguration()
    /// Whether the TUN device and the socket use offloads (virtio headers, UDP GSO/GRO).
    public var offloads = true
    /// Packets per batch.
    public var batch = 64
    /// Whether TCP SYNs through the tunnel, either way, get their MSS option lowered to fit the
    /// inner MTU (``ForwardingPipeline/mssClampMTU``), so that connections start with segments
    /// that fit instead of discovering the tunnel's MTU through losses. Off by default: the
    /// endpoint changes no packet it forwards unless asked.
    public var clampMSS = false
    /// ICMP error sources (too big for the tunnel, TTL expired).
    public var icmpSourceV4 = IPv4Address(192, 0, 2, 254)
    /// ICMPv6 error source.
    public var icmpSourceV6 = IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe)
    /// Called on the receiving thread with each signalling datagram (an IKE message behind the
    /// non-ESP marker, a NAT keepalive, ...) after it is counted: for a control plane that shares
    /// the port. It must return quickly (hand the bytes over, never handle them there): filter what
    /// anyone can send, queue within a bound, and wait (briefly, bounded) only for a message the
    /// datagrams after it depend on, as `IKEHandoff` does for IKE_AUTH and CREATE_CHILD_SA.
    /// More Prometheus text after the dataplane's (a control plane's series), or nil.
    public var extraMetrics: (@Sendable () -> String)?
    /// The last argument is the datagram's sender (nil when not known).
    public var signalHandler: (@Sendable (TunnelSignal, [UInt8], UDPEndpoint?) -> Void)?

    /// A configuration.
    public init(device: String, local: IPAddress, remote: IPAddress, codec: Codec) {
        self.device = device
        self.local = local
        self.remote = remote
        self.codec = codec
    }
}

/// An error that keeps a ``TunnelEndpoint`` from starting.
public enum TunnelStartError: Error, CustomStringConvertible {
    /// The device or the socket.
    case io(TUNError)
    /// The codec (a crypto context).
    case codec(TunnelCodecError)

    /// One line.
    public var description: String {
        switch self {
        case .io(let e): "\(e)"
        case .codec(let e): "\(e)"
        }
    }
}

/// A tunnel endpoint between a TUN device (IP packets inside) or a TAP device (Ethernet frames,
/// forwarded as a bridge port does) and a UDP socket, in both directions, for any ``TunnelCodec``:
///
/// ```text
/// encapsulation: TUN read ─▶ GRO ─▶ decision (inner MTU = underlay − overhead, per segment)
///                ─▶ the codec per segment (headers; ESP: encrypted into the arena)
///                ─▶ one sendmsg per train (UDP_SEGMENT)
/// decapsulation: recvmsg (UDP_GRO: a train per read) ─▶ split at the datagram size ─▶ the codec
///                (validate; ESP: replay check, decrypt in place) ─▶ GRO ─▶ TUN write (super-packets whole)
/// ```
/// A segment that does not fit the tunnel gets "fragmentation needed" / "packet too big" back to
/// its inner sender (announcing the inner MTU); the outer packet is never fragmented (DF set).
/// The socket is connected when the codec allows it (GTP-U, ESP); otherwise (VXLAN) datagrams
/// from other addresses are dropped.
public final class TunnelEndpoint<Codec: TunnelCodec>: Dataplane, @unchecked Sendable {
    /// The settings.
    public let configuration: TunnelConfiguration<Codec>
    let device: TUNDevice
    /// The outer socket.
    public let socket: UDPTunnelSocket
    let logger: Logger
    let stopFlag = Atomic<Bool>(false)
    let snapshots = Mutex<[Direction: ForwarderStatistics]>([:])
    let metrics = ForwarderMetrics()
    /// The largest inner packet the tunnel carries: the underlay MTU less the overhead.
    public let innerMTU: Int
    /// The TUN device's MTU (the decapsulated side's MTU).
    public let deviceMTU: Int
    /// Offloads the kernel granted on the TUN device.
    public let grantedOffloads: TUNOffloads
    /// The sinks and the decoder, made before the threads start so that a codec that cannot
    /// work fails the start, not a thread.
    let encapsulatingSink: TunnelSink<Codec>, replySink: TunnelSink<Codec>
    let decoderBox: DecoderBox

    final class DecoderBox: @unchecked Sendable {
        var decoder: Codec.Decoder
        init(_ decoder: Codec.Decoder) { self.decoder = decoder }
    }

    /// Opens the TUN device (created if missing) and the socket.
    /// - Throws: ``TunnelStartError``.
    public init(configuration: TunnelConfiguration<Codec>, logger: Logger) throws(TunnelStartError) {
        self.configuration = configuration
        self.logger = logger
        let codec = configuration.codec
        let tap = codec.innerLinkType == .ethernet
        do {
            var device = try TUNDevice(name: configuration.device, vnetHeader: configuration.offloads, tap: tap)
            grantedOffloads = configuration.offloads ? device.negotiateOffloads(udp: configuration.gro.udp) : []
            socket = try UDPTunnelSocket(local: configuration.local, remote: configuration.remote, port: codec.port,
                                         coalesce: configuration.offloads, connected: codec.connectsSocket && !codec.servesManyPeers)
            deviceMTU = device.mtu ?? 1500
            self.device = device
        } catch { throw .io(error) }
        // Many peers: no one path; the MTU of the interface with this end's address stands for it.
        let underlay = configuration.underlayMTU ?? socket.pathMTU ?? UDPTunnelSocket.interfaceMTU(holding: configuration.local) ?? 1500
        innerMTU = underlay - codec.overhead(outerIPv6: !configuration.remote.isIPv4)
        do {
            encapsulatingSink = try TunnelSink(output: socket, codec: codec, offloads: configuration.offloads, logger: logger)
            replySink = try TunnelSink(output: socket, codec: codec, offloads: configuration.offloads,
                                       perSendTrafficClass: true, logger: logger)
            decoderBox = DecoderBox(try codec.makeDecoder())
        } catch { throw .codec(error) }
    }

    /// The device (named twice: the tunnel has one).
    public var deviceNames: (ingress: String, egress: String) { (device.name, device.name) }

    /// Asks both threads to stop.
    public func stop() { stopFlag.store(true, ordering: .relaxed) }

    /// Counters by direction label: `lan_to_wan` is encapsulation, `wan_to_lan` decapsulation.
    public var statistics: [String: ForwarderStatistics] {
        Dictionary(uniqueKeysWithValues: snapshots.withLock { $0 }.map { ($0.key.label, $0.value) })
    }

    /// Prometheus text.
    public func prometheusText() -> String {
        metrics.exposition(snapshots.withLock { $0 }) + (configuration.extraMetrics?() ?? "")
    }

    func pipeline(_ direction: Direction, mtu: Int) -> ForwardingPipeline<IdentityStage> {
        var gro = configuration.gro
        if !configuration.offloads {
            // Offloads off: packet by packet on both sides, nothing merged.
            gro.tcp = false
            gro.udp = false
        }
        var pipeline = Self.pipeline(direction, codec: configuration.codec, mtu: mtu, gro: gro,
                                     virtioHeaders: configuration.offloads,
                                     icmpSources: (configuration.icmpSourceV4, configuration.icmpSourceV6), logger: logger)
        pipeline.mssClampMTU = configuration.clampMSS ? innerMTU : nil
        return pipeline
    }

    /// One direction's pipeline for `codec`, live or over captures: a bridge port for Ethernet
    /// inside, a router for IP.
    static func pipeline(_ direction: Direction, codec: Codec, mtu: Int, gro: GROConfiguration = GROConfiguration(),
                         virtioHeaders: Bool,
                         icmpSources: (IPv4Address, IPv6Address) = (IPv4Address(192, 0, 2, 254),
                                                                    IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe)),
                         logger: Logger) -> ForwardingPipeline<IdentityStage> {
        let linkType = codec.innerLinkType
        return ForwardingPipeline(direction: direction, gro: gro, egressMTU: mtu, icmpSourceV4: icmpSources.0,
                                  icmpSourceV6: icmpSources.1, virtioHeaders: virtioHeaders, stage: IdentityStage(), logger: logger,
                                  linkType: linkType, bridging: linkType == .ethernet)
    }

    func publish(_ direction: Direction, _ pipeline: borrowing ForwardingPipeline<IdentityStage>, _ counters: TunnelCounters) {
        var s = pipeline.snapshot
        // Refusal reasons are the decoder's: published (as zeros too) where datagrams are received.
        s.stage = counters.stageCounters(dropReasons: direction == .wanToLan ? configuration.codec.dropReasons : [])
        snapshots.withLock { $0[direction] = s }
    }

    /// Runs both directions until ``stop()``.
    public func run() {
        let done = DispatchGroup()
        for direction in Direction.allCases {
            done.enter()
            let thread = Thread { [self] in
                if direction == .lanToWan { encapsulate() } else { decapsulate() }
                done.leave()
            }
            thread.name = direction == .lanToWan ? "offload-encap" : "offload-decap"
            thread.start()
        }
        done.wait()
    }

    /// TUN → GRO → decision → codec → socket.
    func encapsulate() {
        var pipeline = pipeline(.lanToWan, mtu: innerMTU)
        let sink = encapsulatingSink
        var batch = PacketBatch(packetCapacity: configuration.batch, byteCapacity: configuration.batch * TUNDevice.maximumPacket)
        var lastPublish: UInt64 = 0
        while !stopFlag.load(ordering: .relaxed) {
            guard device.waitReadable(milliseconds: 100) else {
                publish(.lanToWan, pipeline, sink.counters)
                continue
            }
            batch.removeAll()
            let now = DispatchTime.now().uptimeNanoseconds
            pipeline.read(from: device, into: &batch, now: now)
            pipeline.process(batch, now: now, egress: sink, back: device)
            if now - lastPublish > 50_000_000 {
                publish(.lanToWan, pipeline, sink.counters)
                lastPublish = now
            }
        }
        publish(.lanToWan, pipeline, sink.counters)
    }

    /// Socket → split → codec (validate, strip, decrypt) → GRO → TUN.
    func decapsulate() {
        var pipeline = pipeline(.wanToLan, mtu: deviceMTU)
        let back = replySink
        var counters = TunnelCounters()
        var batch = PacketBatch(packetCapacity: max(configuration.batch, 64) + 64, byteCapacity: 4 * 65_600)
        let receive = GrowableBuffer<UInt8>(capacity: 65_600)
        var lastPublish: UInt64 = 0
        let metadata = PacketMetadata(linkType: configuration.codec.innerLinkType, checksum: .unverified)
        let manyPeers = configuration.codec.servesManyPeers
        while !stopFlag.load(ordering: .relaxed) {
            guard socket.waitReadable(milliseconds: 100) else {
                publish(.wanToLan, pipeline, counters.adding(back.counters))
                continue
            }
            batch.removeAll()
            let now = DispatchTime.now().uptimeNanoseconds
            // Read until nothing waits or the batch may not hold another train (UDP GRO hands over
            // at most 64 datagrams at once, 64 KB in all).
            while batch.canAppend(length: 65_600) && batch.count + 64 <= batch.packetCapacity {
                let buffer = unsafe UnsafeMutableRawBufferPointer(start: receive.rawBase, count: receive.capacity)
                let got: (length: Int, segmentSize: Int, fromRemote: Bool, tos: UInt8?, source: UDPEndpoint?)?
                do { got = unsafe try socket.receive(into: buffer) } catch {
                    logger.error("\(error)")
                    break
                }
                guard let (length, segment, fromRemote, outerTOS, source) = got else { break }
                guard length > 0 else { continue }
                counters.receives += 1
                // Serving many peers, the decoder judges each sender (by the SA it names).
                guard fromRemote || manyPeers else {
                    counters.foreign += 1
                    continue
                }
                let size = segment > 0 ? segment : length
                var at = 0
                while at < length {
                    let datagram = unsafe UnsafeMutableRawBufferPointer(rebasing: buffer[at..<min(length, at + size)])
                    at += size
                    counters.datagramsReceived += 1
                    switch unsafe decoderBox.decoder.decode(datagram, from: source) {
                    case .packet(let range):
                        let inner = unsafe UnsafeMutableRawBufferPointer(rebasing: datagram[range])
                        if let outerTOS, outerTOS & 0b11 != 0 {
                            // RFC 6040: congestion marked on the way reaches the inner packet.
                            guard unsafe TunnelECN.apply(outer: outerTOS, to: inner, linkType: metadata.linkType) else {
                                counters.dropped[.ecn, default: 0] += 1
                                continue
                            }
                        }
                        if unsafe batch.append(UnsafeRawBufferPointer(inner).bytes, metadata: metadata) {
                            pipeline.statistics.packetsIn += 1
                            pipeline.statistics.bytesIn += range.count
                        } else {
                            pipeline.statistics.dropped += 1  // cannot happen: room for a whole train is kept
                        }
                    case .reply(let answer):
                        back.sendRaw(answer, to: manyPeers ? source : nil)
                        counters.replies += 1
                    case .signalling(let kind):
                        counters.signalling[kind, default: 0] += 1
                        if let handler = configuration.signalHandler { handler(kind, unsafe Array(UnsafeRawBufferPointer(datagram)), source) }
                    case .drop(let reason): counters.dropped[reason, default: 0] += 1
                    }
                }
            }
            if batch.count > 0 { pipeline.process(batch, now: now, egress: device, back: back) }
            if now - lastPublish > 50_000_000 {
                publish(.wanToLan, pipeline, counters.adding(back.counters))
                lastPublish = now
            }
        }
        publish(.wanToLan, pipeline, counters.adding(back.counters))
    }
}

extension TunnelCounters {
    /// Adds another set.
    public mutating func add(_ o: TunnelCounters) {
        for entry in Self.table { self[keyPath: entry.field] += o[keyPath: entry.field] }
        signalling.merge(o.signalling, uniquingKeysWith: +)
        dropped.merge(o.dropped, uniquingKeysWith: +)
        encapsulationDropped.merge(o.encapsulationDropped, uniquingKeysWith: +)
    }

    /// These counters and another set's together.
    public func adding(_ o: TunnelCounters) -> TunnelCounters {
        var sum = self
        sum.add(o)
        return sum
    }
}
