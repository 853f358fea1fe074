import Foundation
import Logging
import OffloadEngine
import OffloadTUN
import OffloadWire
import Synchronization

/// Settings of a ``Forwarder``.
public struct ForwarderConfiguration: Sendable {
    /// The device the kernel routes traffic into (from the LAN side).
    public var ingress: String
    /// The device the forwarder writes that traffic into (towards the WAN side).
    public var egress: String
    /// The egress MTU for the forwarding decision; nil: the egress device's MTU.
    public var egressMTU: Int?
    /// GRO settings (mode, TCP/UDP GRO).
    public var gro = GROConfiguration()
    /// Whether the devices use virtio headers (offloads); false turns all offload off.
    public var vnetHeader = true
    /// Whether super-packets are written whole with a GSO virtio header (the kernel or the next
    /// device segments them). False keeps GRO but segments in user space before writing, as the
    /// forwarder does by itself on kernels that refuse GSO writes.
    public var gsoWrites = true
    /// Packets per read batch.
    public var batch = 64
    /// Queues per device (IFF_MULTI_QUEUE when above 1): one worker thread per queue and direction;
    /// the kernel keeps each flow on one queue.
    public var queues = 1
    /// ICMP error sources.
    public var icmpSourceV4 = IPv4Address(192, 0, 2, 254)
    /// ICMPv6 error source.
    public var icmpSourceV6 = IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe)

    /// Creates a configuration for two devices.
    public init(ingress: String, egress: String) {
        self.ingress = ingress
        self.egress = egress
    }
}

/// One queue of each TUN device, shared by the two direction threads of that queue (one reads a
/// device while the other writes it; TUN descriptors allow that).
final class DevicePair: @unchecked Sendable {
    let ingress: TUNDevice
    let egress: TUNDevice

    init(ingress: consuming TUNDevice, egress: consuming TUNDevice) {
        self.ingress = ingress
        self.egress = egress
    }
}

/// A forwarding stage between two TUN devices, in both directions: read a batch, GRO it (keep
/// the kernel's TSO super-packets whole), act as a router (TTL − 1, the MTU decision of
/// `ip_forward`), and write super-packets with their virtio header when their segments fit,
/// segments when the egress cannot take them, ICMP errors back to the source when they do not fit
/// and DF is set, fragments when DF is clear.
public final class Forwarder: @unchecked Sendable {
    /// The settings.
    public let configuration: ForwarderConfiguration
    let devices: DevicePair
    /// The other queues (IFF_MULTI_QUEUE), after the first.
    let moreQueues: [DevicePair]
    let logger: Logger
    let stopFlag = Atomic<Bool>(false)
    let snapshots = Mutex<[String: ForwarderStatistics]>([:])
    /// Offloads the kernel granted on each device.
    public let grantedOffloads: (ingress: TUNOffloads, egress: TUNOffloads)
    /// The egress MTU in use.
    public let egressMTU: Int
    /// The ingress device's MTU (the MTU of the way back).
    public let ingressMTU: Int

    /// Opens (creating if needed) both TUN devices and negotiates offloads.
    /// - Throws: ``TUNError``.
    public init(configuration: ForwarderConfiguration, logger: Logger) throws(TUNError) {
        self.configuration = configuration
        self.logger = logger
        let multiQueue = configuration.queues > 1
        var ingress = try TUNDevice(name: configuration.ingress, vnetHeader: configuration.vnetHeader,
                                    multiQueue: multiQueue)
        var egress = try TUNDevice(name: configuration.egress, vnetHeader: configuration.vnetHeader,
                                   multiQueue: multiQueue)
        let udp = configuration.gro.udp
        grantedOffloads = (ingress.negotiateOffloads(udp: udp), egress.negotiateOffloads(udp: udp))
        var others: [DevicePair] = []
        for _ in 1..<max(1, configuration.queues) {
            var i = try TUNDevice(name: ingress.name, vnetHeader: configuration.vnetHeader, multiQueue: true)
            var e = try TUNDevice(name: egress.name, vnetHeader: configuration.vnetHeader, multiQueue: true)
            i.negotiateOffloads(udp: udp)
            e.negotiateOffloads(udp: udp)
            others.append(DevicePair(ingress: i, egress: e))
        }
        moreQueues = others
        egressMTU = configuration.egressMTU ?? egress.mtu ?? 1500
        ingressMTU = ingress.mtu ?? 1500
        gsoWritesWork = configuration.vnetHeader && configuration.gsoWrites
            ? Self.probeGSOWrite(egress) && Self.probeGSOWrite(ingress) : false
        devices = DevicePair(ingress: ingress, egress: egress)
        if configuration.vnetHeader && !configuration.gsoWrites {
            logger.info("GSO writes off: super-packets are segmented in user space before writing")
        } else if configuration.vnetHeader && !gsoWritesWork {
            logger.warning("the kernel refused a probe GSO write (EINVAL): super-packets will be segmented before writing")
        }
    }

    /// Whether the kernel accepts GSO writes on the devices (checked at start by a probe).
    public let gsoWritesWork: Bool

    /// Writes one two-segment TCP super-packet with TTL 0 (the kernel drops it when routing) and
    /// reports whether the write was accepted: some kernels accept IFF_VNET_HDR but refuse GSO
    /// writes with EINVAL (tailscale#13041, gluetun#3424), which only a write shows.
    static func probeGSOWrite(_ device: borrowing TUNDevice) -> Bool {
        var config = GROConfiguration()
        config.outputChecksum = .partial
        var engine = GROEngine(configuration: config)
        var batch = PacketBatch(packetCapacity: 2, byteCapacity: 4096)
        var probe = PacketBuilder()
        probe.link = .raw
        probe.source = .v4(IPv4Address(192, 0, 2, 2))
        probe.destination = .v4(IPv4Address(192, 0, 2, 1))
        probe.sourcePort = 9
        probe.destinationPort = 9
        probe.options = []
        probe.ttl = 0
        for i in 0..<2 {
            probe.sequence = 1 + UInt32(i) * 100
            probe.ipID = UInt16(i)
            probe.payload = [UInt8](repeating: 0, count: 100)
            batch.append(probe.frame(), metadata: PacketMetadata(linkType: .raw))
        }
        engine.coalesce(batch)
        guard engine.outputCount == 1, let gso = engine.output(at: 0).metadata.gso else { return true }
        let bytes = engine.outputBytes(at: 0)
        guard let header = VirtioPacketInfo.header(for: gso, checksum: .partial, packet: bytes.span.bytes) else {
            return true
        }
        do {
            try device.write(header: header, packet: bytes)
            return true
        } catch {
            return error.errno != .invalidArgument
        }
    }

    /// The device names.
    public var deviceNames: (ingress: String, egress: String) { (devices.ingress.name, devices.egress.name) }

    /// Asks the forwarding threads to stop (safe from any thread or a signal source).
    public func stop() { stopFlag.store(true, ordering: .relaxed) }

    /// Current counters per direction (`lan_to_wan`, `wan_to_lan`).
    public var statistics: [String: ForwarderStatistics] { snapshots.withLock { $0 } }

    /// Prometheus text for all counters.
    public func prometheusText() -> String {
        statistics.sorted { $0.key < $1.key }.map { $0.value.prometheus(direction: $0.key) }.joined()
    }

    /// Runs both directions (of every queue) until ``stop()``; returns when all threads have finished.
    public func run() {
        let done = DispatchGroup()
        let pairs = [devices] + moreQueues
        for (queue, pair) in pairs.enumerated() {
            for (label, forward) in [("lan_to_wan", true), ("wan_to_lan", false)] {
                done.enter()
                let thread = Thread { [self] in
                    var worker = DirectionWorker(label: label, configuration: configuration,
                                                 egressMTU: forward ? egressMTU : ingressMTU, logger: logger)
                    worker.queue = queue
                    worker.gsoRefused = configuration.vnetHeader && !gsoWritesWork
                    if forward {
                        worker.run(from: pair.ingress, to: pair.egress, forwarder: self)
                    } else {
                        worker.run(from: pair.egress, to: pair.ingress, forwarder: self)
                    }
                    done.leave()
                }
                thread.name = "offload-\(label)-\(queue)"
                thread.start()
            }
        }
        done.wait()
    }

    /// Per-queue snapshots, summed per direction on reading.
    let queueSnapshots = Mutex<[String: ForwarderStatistics]>([:])

    func publish(_ label: String, queue: Int, _ stats: ForwarderStatistics) {
        let key = "\(label)#\(queue)"
        let total: ForwarderStatistics = queueSnapshots.withLock { all in
            all[key] = stats
            return all.filter { $0.key.hasPrefix(label + "#") }.values.reduce(into: ForwarderStatistics()) { $0.add($1) }
        }
        snapshots.withLock { $0[label] = total }
    }

    var shouldStop: Bool { stopFlag.load(ordering: .relaxed) }
}

/// One direction: its own engine, batch, router and counters (like a NAPI instance per queue).
struct DirectionWorker: ~Copyable {
    let label: String
    let egressMTU: Int
    let logger: Logger
    var engine: GROEngine
    var batch: PacketBatch
    var router: Router
    var segmenter = GSOSegmenter()
    var stats = ForwarderStatistics()
    var gsoRefused = false
    var queue = 0
    var header = [UInt8](repeating: 0, count: 4096)

    init(label: String, configuration: ForwarderConfiguration, egressMTU: Int, logger: Logger) {
        self.label = label
        self.egressMTU = egressMTU
        self.logger = logger
        var gro = configuration.gro
        // A TUN write finishes partial checksums (NEEDS_CSUM); without virtio headers they must be whole.
        gro.outputChecksum = configuration.vnetHeader ? .partial : .complete
        engine = GROEngine(configuration: gro)
        batch = PacketBatch(packetCapacity: configuration.batch,
                            byteCapacity: configuration.batch * TUNDevice.maximumPacket)
        var routing = RouterConfiguration(egressMTU: egressMTU, egressTakesGSO: false,
                                          icmpSourceV4: configuration.icmpSourceV4,
                                          icmpSourceV6: configuration.icmpSourceV6)
        routing.segmentChecksum = .complete
        router = Router(configuration: routing)
    }

    mutating func run(from: borrowing TUNDevice, to: borrowing TUNDevice, forwarder: Forwarder) {
        var lastPublish = DispatchTime.now().uptimeNanoseconds
        while !forwarder.shouldStop {
            guard from.waitReadable(milliseconds: 100) else {
                forwarder.publish(label, queue: queue, stats)
                continue
            }
            batch.removeAll()
            let now = DispatchTime.now().uptimeNanoseconds
            reading: while batch.count < batch.packetCapacity {
                do {
                    switch try from.read(into: &batch, timestamp: now) {
                    case .packet:
                        stats.packetsIn += 1
                        stats.bytesIn += batch.unsafeBuffer(at: batch.count - 1).count
                        if batch.metadata(at: batch.count - 1).gso != nil { stats.tsoIn += 1 }
                    case .wouldBlock, .batchFull: break reading
                    case .rejected(let error):
                        stats.virtioRejected += 1
                        if stats.virtioRejected == 1 { logger.warning("\(label): dropped a packet: \(error)") }
                    }
                } catch {
                    logger.error("\(label): \(error)")
                    break reading
                }
            }
            engine.coalesce(batch, now: now)
            for i in 0..<engine.outputCount { forward(i, to: to, back: from, now: now) }
            stats.gro = engine.statistics
            if now - lastPublish > 50_000_000 {
                forwarder.publish(label, queue: queue, stats)
                lastPublish = now
            }
        }
        stats.gro = engine.statistics
        forwarder.publish(label, queue: queue, stats)
    }

    /// Sends output packet `i` on, as a router would.
    mutating func forward(_ i: Int, to egress: borrowing TUNDevice, back ingress: borrowing TUNDevice, now: UInt64) {
        let packet = engine.output(at: i)
        let gso = packet.metadata.gso
        var first = UnsafeRawBufferPointer(start: nil, count: 0)
        var pieceCount = 0
        engine.withOutputFragments(at: i) { piece in
            if pieceCount == 0 { first = piece }
            pieceCount += 1
        }
        if Self.isLinkScope(first) {
            stats.notForwarded += 1  // multicast or link-local: a router does not forward it (RFC 1812, RFC 4291)
            return
        }
        guard let layout = packet.layout, layout.payloadOffset <= header.count else {
            slowPath(i, packet, to: egress, back: ingress, now: now)
            return
        }
        let decision = ForwardingDecision.decide(layout: layout, headers: first, gso: gso, egressMTU: egressMTU,
                                                 egressTakesGSO: egress.vnetHeader && !gsoRefused)
        guard decision == .forward else {
            slowPath(i, packet, to: egress, back: ingress, now: now)
            return
        }
        let vhdr = VirtioPacketInfo.header(for: gso, checksum: packet.metadata.checksum, layout: layout)
        if (gso != nil && (vhdr == nil || !egress.vnetHeader)) || (packet.metadata.checksum == .partial && !egress.vnetHeader) {
            slowPath(i, packet, to: egress, back: ingress, now: now)
            return
        }
        // The header is copied (a few dozen bytes) so the TTL can change; payloads go out in place.
        let h = layout.payloadOffset
        header.withUnsafeMutableBytes { dst in
            dst.baseAddress!.copyMemory(from: first.baseAddress!, byteCount: h)
            RouterHeaders.decrementTTL(UnsafeMutableRawBufferPointer(rebasing: dst[0..<h]), networkOffset: layout.networkOffset)
        }
        var failure: TUNError?
        header.withUnsafeBytes { headerBytes in
            withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: pieceCount + 1) { pieces in
                var k = 0
                pieces[k] = UnsafeRawBufferPointer(rebasing: headerBytes[0..<h])
                k += 1
                var index = 0
                engine.withOutputFragments(at: i) { piece in
                    if index == 0 {
                        if piece.count > h {
                            pieces[k] = UnsafeRawBufferPointer(rebasing: piece[h...])
                            k += 1
                        }
                    } else {
                        pieces[k] = piece
                        k += 1
                    }
                    index += 1
                }
                do throws(TUNError) {
                    try egress.write(header: vhdr, pieces: UnsafeBufferPointer(rebasing: pieces[0..<k]))
                } catch { failure = error }
            }
        }
        if let failure {
            if gso != nil && failure.errno == .invalidArgument {
                // Some kernels refuse GSO writes (tailscale#13041): segment from now on, and say so once.
                stats.gsoFallbacks += 1
                if !gsoRefused { logger.warning("\(label): the kernel refused a GSO write (\(failure)); segmenting instead") }
                gsoRefused = true
                slowPath(i, packet, to: egress, back: ingress, now: now)
            } else {
                stats.writeErrors += 1
                if stats.writeErrors == 1 { logger.warning("\(label): \(failure)") }
            }
            return
        }
        stats.packetsOut += 1
        stats.bytesOut += packet.length
        if let gso, gso.segmentCount > 1 {
            stats.superPacketsOut += 1
            stats.segmentsInSuperPackets += gso.segmentCount
        }
    }

    /// Whether an IP packet (raw, from the IP header) is multicast, broadcast or link-local.
    static func isLinkScope(_ p: UnsafeRawBufferPointer) -> Bool {
        guard p.count >= 1 else { return false }
        switch p[0] >> 4 {
        case 4:
            guard p.count >= 20 else { return false }
            let linkLocal = (p[12] == 169 && p[13] == 254) || (p[16] == 169 && p[17] == 254)
            return p[16] >= 224 || linkLocal
        case 6:
            guard p.count >= 40 else { return false }
            let sourceLinkLocal = p[8] == 0xFE && p[9] & 0xC0 == 0x80
            let destinationLinkLocal = p[24] == 0xFE && p[25] & 0xC0 == 0x80
            return p[24] == 0xFF || sourceLinkLocal || destinationLinkLocal
        default:
            return false
        }
    }

    /// Everything but "forward whole": gathered into one buffer and handed to the reference
    /// ``Router`` (segmentation, fragmentation, ICMP errors).
    mutating func slowPath(_ i: Int, _ packet: GROOutputPacket, to egress: borrowing TUNDevice,
                           back ingress: borrowing TUNDevice, now: UInt64) {
        var frame = engine.outputBytes(at: i)
        if packet.metadata.checksum == .partial, let layout = packet.layout, layout.hasTransportHeader {
            let offset = layout.transport == .tcp ? 16 : 6
            frame.withUnsafeMutableBytes {
                try? VirtioPacketInfo.finishPartialChecksum($0, start: layout.transportOffset, offset: offset)
            }
        }
        let before = router.statistics
        let output = router.route(frame, linkType: .raw, gso: packet.metadata.gso, now: now)
        let after = router.statistics
        stats.segmentedInSoftware += after.segmented - before.segmented
        stats.fragmentsOut += after.fragmentsOut - before.fragmentsOut
        stats.icmpSuppressed += after.icmpSuppressed - before.icmpSuppressed
        stats.dropped += after.dropped - before.dropped
        for out in output.egress {
            do {
                try egress.write(header: nil, packet: out.bytes)
                stats.packetsOut += 1
                stats.bytesOut += out.bytes.count
            } catch {
                stats.writeErrors += 1
            }
        }
        for icmp in output.toSource {
            do {
                try ingress.write(header: nil, packet: icmp)
                stats.icmpSent += 1
            } catch {
                stats.writeErrors += 1
            }
        }
    }
}
