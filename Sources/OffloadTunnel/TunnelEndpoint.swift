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
    /// Echo requests answered, echo responses and error indications received.
    public var echoesAnswered = 0, echoResponses = 0, errorIndications = 0
    /// Datagrams dropped, by reason.
    public var dropped: [TunnelDropReason: Int] = [:]
    /// Sends the kernel refused (the datagrams are lost), and sends made one datagram at a time
    /// because the kernel refused UDP GSO.
    public var sendErrors = 0, sendsWithoutGSO = 0
    /// Creates zeroed counters.
    public init() {}

    /// As stage counters (published as `offload_tunnel_*_total`).
    public var stageCounters: [StageCounter] {
        var all = [
            StageCounter("tunnel_sendmsg", help: "sendmsg calls on the tunnel socket.", value: sends),
            StageCounter("tunnel_datagrams_sent", help: "Datagrams sent on the tunnel socket.", value: datagramsSent),
            StageCounter("tunnel_gso_trains", help: "sendmsg calls that carried a train of datagrams (UDP GSO).",
                         value: trains),
            StageCounter("tunnel_gso_train_datagrams", help: "Datagrams in those trains.", value: datagramsInTrains),
            StageCounter("tunnel_recvmsg", help: "recvmsg calls that returned data.", value: receives),
            StageCounter("tunnel_datagrams_received", help: "Datagrams received on the tunnel socket.", value: datagramsReceived),
            StageCounter("tunnel_foreign", help: "Datagrams from another address than the far end's, dropped.",
                         value: foreign),
            StageCounter("tunnel_echoes_answered", help: "GTP-U echo requests answered.", value: echoesAnswered),
            StageCounter("tunnel_error_indications", help: "GTP-U error indications received.", value: errorIndications),
            StageCounter("tunnel_send_errors", help: "Sends the kernel refused.", value: sendErrors),
            StageCounter("tunnel_sends_without_gso", help: "Sends made datagram by datagram (UDP GSO refused).",
                         value: sendsWithoutGSO),
        ]
        for reason in TunnelDropReason.allCases {
            all.append(StageCounter("tunnel_dropped", help: "Received datagrams dropped, by reason.",
                                    labels: ["reason": reason.rawValue], value: dropped[reason, default: 0]))
        }
        return all
    }
}

/// The outer side of a tunnel as a ``PacketSink``: each packet or super-packet the forwarding
/// pipeline writes (with its virtio header's GSO facts) is put behind tunnel headers, one datagram
/// per segment, and sent with as few `sendmsg` calls as UDP GSO allows. One sink per thread (it
/// keeps a staging buffer); the socket is shared.
public final class TunnelSink: PacketSink, @unchecked Sendable {
    /// The socket.
    public let socket: UDPTunnelSocket
    var encapsulator: TunnelEncapsulator
    /// The packet gathered into one buffer (the segmenter needs it contiguous).
    var staging = GrowableBuffer<UInt8>(capacity: 65_600)
    /// Counters.
    public private(set) var counters = TunnelCounters()
    /// Whether the kernel refused UDP GSO (sends go datagram by datagram from then on).
    public private(set) var gsoRefused = false
    /// The outer TOS last set on the socket by this sink.
    var lastTOS: UInt8?
    let logger: Logger

    /// Whether the sink takes super-packets (and sends them as UDP GSO trains); false: one packet
    /// per write, one datagram per `sendmsg` (a tunnel with offloads off).
    public let offloads: Bool

    /// Creates a sink on a socket.
    public init(socket: UDPTunnelSocket, tunnel: TunnelProtocol, offloads: Bool = true, logger: Logger) {
        self.socket = socket
        encapsulator = TunnelEncapsulator(tunnel: tunnel)
        self.offloads = offloads
        gsoRefused = !offloads
        self.logger = logger
    }

    /// The pipeline writes whole super-packets with their GSO facts (with offloads on).
    public var takesVirtioHeaders: Bool { offloads }

    /// Encapsulates and sends one packet or super-packet.
    public func write(header: VirtioNetHeader?, pieces: UnsafeBufferPointer<UnsafeRawBufferPointer>) throws(TUNError) {
        var length = 0
        for unsafe piece in unsafe pieces { length += piece.count }
        guard length > 0 else { return }
        staging.reserve(length)
        var at = 0
        for unsafe piece in unsafe pieces where piece.count > 0 {
            unsafe (staging.rawBase + at).copyMemory(from: piece.baseAddress!, byteCount: piece.count)
            at += piece.count
        }
        let packet = unsafe UnsafeMutableRawBufferPointer(start: staging.rawBase, count: length)
        var gso: GSOInfo?
        if let header, let info = unsafe try? VirtioPacketInfo.validate(header, packet: UnsafeRawBufferPointer(packet).bytes,
                                                                         linkType: encapsulator.tunnel.innerLinkType) {
            gso = info.gso
            if gso == nil, info.checksum == .partial, let start = info.checksumStart, let offset = info.checksumOffset {
                // One packet with a partial checksum: finish it (the far end gets no virtio header).
                unsafe try? VirtioPacketInfo.finishPartialChecksum(packet, start: start, offset: offset)
            }
        }
        do { unsafe try encapsulator.prepare(UnsafeRawBufferPointer(packet), gso: gso) } catch {
            counters.sendErrors += 1
            return
        }
        try sendTrain()
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
                // Set on the socket when it changes rather than per send: a control message per
                // sendmsg measurably slows the kernel's send path (about 10% here).
                if let tos = encapsulator.innerTOS, tos != lastTOS {
                    socket.setTrafficClass(tos)
                    lastTOS = tos
                }
                unsafe try socket.send(UnsafeBufferPointer(rebasing: iov[0..<k]), segmentSize: segmentSize)
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
    }

    /// Sends one datagram as it is (an echo response).
    func sendRaw(_ datagram: [UInt8]) {
        do {
            try socket.send(datagram)
            counters.sends += 1
            counters.datagramsSent += 1
        } catch { counters.sendErrors += 1 }
    }
}

/// Settings of a ``TunnelEndpoint``.
public struct TunnelConfiguration: Sendable {
    /// The TUN device on the inner side (a TAP device for VXLAN).
    public var device: String
    /// The outer addresses: this end and the far end.
    public var local: IPAddress, remote: IPAddress
    /// The protocol and its identity (TEID, VNI).
    public var tunnel: TunnelProtocol
    /// The underlay's MTU (nil: the path MTU the kernel knows towards the far end).
    public var underlayMTU: Int?
    /// GRO settings for the inner packets (both directions).
    public var gro = GROConfiguration()
    /// Whether the TUN device and the socket use offloads (virtio headers, UDP GSO/GRO).
    public var offloads = true
    /// Packets per batch.
    public var batch = 64
    /// ICMP error sources (too big for the tunnel, TTL expired).
    public var icmpSourceV4 = IPv4Address(192, 0, 2, 254)
    /// ICMPv6 error source.
    public var icmpSourceV6 = IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe)

    /// A configuration.
    public init(device: String, local: IPAddress, remote: IPAddress, tunnel: TunnelProtocol) {
        self.device = device
        self.local = local
        self.remote = remote
        self.tunnel = tunnel
    }
}

/// A tunnel endpoint between a TUN device (GTP-U: IP packets) or a TAP device (VXLAN: Ethernet
/// frames, forwarded as a bridge port does) and a UDP socket, in both directions:
///
/// ```text
/// encapsulation: TUN read ─▶ GRO ─▶ decision (inner MTU = underlay − overhead, per segment)
///                ─▶ a tunnel header per segment ─▶ one sendmsg per train (UDP_SEGMENT)
/// decapsulation: recvmsg (UDP_GRO: a train per read) ─▶ split at the datagram size ─▶ validate,
///                strip ─▶ GRO ─▶ TUN write (super-packets whole, virtio header)
/// ```
/// A segment that does not fit the tunnel gets "fragmentation needed" / "packet too big" back to
/// its inner sender (announcing the inner MTU); the outer packet is never fragmented (DF set).
/// A GTP-U socket is connected (both ends use port 2152); a VXLAN socket is not (senders such as
/// the kernel's VXLAN pick a source port per flow), and datagrams from other addresses are dropped.
public final class TunnelEndpoint: Dataplane, @unchecked Sendable {
    /// The settings.
    public let configuration: TunnelConfiguration
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

    /// Opens the TUN device (created if missing) and the socket.
    /// - Throws: ``TUNError``.
    public init(configuration: TunnelConfiguration, logger: Logger) throws(TUNError) {
        self.configuration = configuration
        self.logger = logger
        let vxlan = configuration.tunnel.innerLinkType == .ethernet
        var device = try TUNDevice(name: configuration.device, vnetHeader: configuration.offloads, tap: vxlan)
        grantedOffloads = configuration.offloads ? device.negotiateOffloads(udp: configuration.gro.udp) : []
        socket = try UDPTunnelSocket(local: configuration.local, remote: configuration.remote,
                                     port: configuration.tunnel.port, coalesce: configuration.offloads, connected: !vxlan)
        let underlay = configuration.underlayMTU ?? socket.pathMTU ?? 1500
        innerMTU = underlay - configuration.tunnel.overhead(outerIPv6: !configuration.remote.isIPv4)
        deviceMTU = device.mtu ?? 1500
        self.device = device
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
    public func prometheusText() -> String { metrics.exposition(snapshots.withLock { $0 }) }

    func pipeline(_ direction: Direction, mtu: Int) -> ForwardingPipeline<IdentityStage> {
        var gro = configuration.gro
        if !configuration.offloads {
            // Offloads off: packet by packet on both sides, nothing merged.
            gro.tcp = false
            gro.udp = false
        }
        let linkType = configuration.tunnel.innerLinkType
        return ForwardingPipeline(direction: direction, gro: gro, egressMTU: mtu,
                                  icmpSourceV4: configuration.icmpSourceV4, icmpSourceV6: configuration.icmpSourceV6,
                                  virtioHeaders: configuration.offloads, stage: IdentityStage(), logger: logger,
                                  linkType: linkType, bridging: linkType == .ethernet)
    }

    func publish(_ direction: Direction, _ pipeline: borrowing ForwardingPipeline<IdentityStage>, _ counters: TunnelCounters) {
        var s = pipeline.snapshot
        s.stage = counters.stageCounters
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

    /// TUN → GRO → decision → GTP-U → socket.
    func encapsulate() {
        var pipeline = pipeline(.lanToWan, mtu: innerMTU)
        let sink = TunnelSink(socket: socket, tunnel: configuration.tunnel, offloads: configuration.offloads, logger: logger)
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

    /// Socket → split → validate, strip → GRO → TUN.
    func decapsulate() {
        var pipeline = pipeline(.wanToLan, mtu: deviceMTU)
        let back = TunnelSink(socket: socket, tunnel: configuration.tunnel, offloads: configuration.offloads, logger: logger)
        let decapsulator = TunnelDecapsulator(tunnel: configuration.tunnel)
        var counters = TunnelCounters()
        var batch = PacketBatch(packetCapacity: max(configuration.batch, 64) + 64, byteCapacity: 4 * 65_600)
        let receive = GrowableBuffer<UInt8>(capacity: 65_600)
        var lastPublish: UInt64 = 0
        let metadata = PacketMetadata(linkType: configuration.tunnel.innerLinkType, checksum: .unverified)
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
                let got: (length: Int, segmentSize: Int, fromRemote: Bool, tos: UInt8?)?
                do { got = unsafe try socket.receive(into: buffer) } catch {
                    logger.error("\(error)")
                    break
                }
                guard let (length, segment, fromRemote, outerTOS) = got else { break }
                guard length > 0 else { continue }
                counters.receives += 1
                guard fromRemote else {
                    counters.foreign += 1
                    continue
                }
                let size = segment > 0 ? segment : length
                var at = 0
                while at < length {
                    let datagram = unsafe UnsafeRawBufferPointer(rebasing: buffer[at..<min(length, at + size)])
                    at += size
                    counters.datagramsReceived += 1
                    switch unsafe decapsulator.classify(datagram) {
                    case .packet(let range):
                        let inner = unsafe UnsafeRawBufferPointer(rebasing: datagram[range])
                        if let outerTOS, outerTOS & 0b11 != 0 {
                            // RFC 6040: congestion marked on the way reaches the inner packet.
                            let writable = unsafe UnsafeMutableRawBufferPointer(mutating: inner)
                            guard unsafe TunnelECN.apply(outer: outerTOS, to: writable, linkType: metadata.linkType) else {
                                counters.dropped[.ecn, default: 0] += 1
                                continue
                            }
                        }
                        if unsafe batch.append(inner.bytes, metadata: metadata) {
                            pipeline.statistics.packetsIn += 1
                            pipeline.statistics.bytesIn += range.count
                        } else {
                            pipeline.statistics.dropped += 1  // cannot happen: room for a whole train is kept
                        }
                    case .echoRequest(let sequence):
                        back.sendRaw(decapsulator.echoResponse(to: sequence))
                        counters.echoesAnswered += 1
                    case .echoResponse: counters.echoResponses += 1
                    case .errorIndication: counters.errorIndications += 1
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
        sends += o.sends
        datagramsSent += o.datagramsSent
        trains += o.trains
        datagramsInTrains += o.datagramsInTrains
        receives += o.receives
        datagramsReceived += o.datagramsReceived
        echoesAnswered += o.echoesAnswered
        echoResponses += o.echoResponses
        errorIndications += o.errorIndications
        dropped.merge(o.dropped, uniquingKeysWith: +)
        foreign += o.foreign
        sendErrors += o.sendErrors
        sendsWithoutGSO += o.sendsWithoutGSO
    }

    /// These counters and another set's together.
    public func adding(_ o: TunnelCounters) -> TunnelCounters {
        var sum = self
        sum.add(o)
        return sum
    }
}
