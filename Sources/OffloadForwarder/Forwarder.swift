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
    /// Damage done to what each direction forwards (tests and the lab; none by default).
    public var impairment: [Direction: ImpairmentSettings] = [:]
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

/// A forwarder between two TUN devices, in both directions: read a batch, GRO it (keep the
/// kernel's TSO super-packets whole), run the ``Stage`` on each packet or super-packet, act as a
/// router (TTL − 1, the MTU decision of `ip_forward` on what the stage produced), and write
/// super-packets with their virtio header when their segments fit, segments when the egress
/// cannot take them, ICMP errors back to the source when they do not fit and DF is set, fragments
/// when DF is clear. Each direction and queue has its own ``ForwardingPipeline``.
public final class Forwarder<S: Stage>: @unchecked Sendable {
    /// The settings.
    public let configuration: ForwarderConfiguration
    let devices: DevicePair
    /// The other queues (IFF_MULTI_QUEUE), after the first.
    let moreQueues: [DevicePair]
    let logger: Logger
    let makeStage: @Sendable (Direction) -> S
    let stopFlag = Atomic<Bool>(false)
    let snapshots = Mutex<[Direction: ForwarderStatistics]>([:])
    /// Offloads the kernel granted on each device.
    public let grantedOffloads: (ingress: TUNOffloads, egress: TUNOffloads)
    /// The egress MTU in use.
    public let egressMTU: Int
    /// The ingress device's MTU (the MTU of the way back).
    public let ingressMTU: Int

    /// Opens (creating if needed) both TUN devices and negotiates offloads.
    /// - Parameters:
    ///   - configuration: the devices and settings.
    ///   - logger: where warnings go.
    ///   - makeStage: makes the stage of each direction and queue (each thread owns its own).
    /// - Throws: ``TUNError``.
    public init(configuration: ForwarderConfiguration, logger: Logger,
                makeStage: @escaping @Sendable (Direction) -> S) throws(TUNError) {
        self.configuration = configuration
        self.logger = logger
        self.makeStage = makeStage
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
            ? probeGSOWrite(egress) && probeGSOWrite(ingress) : false
        devices = DevicePair(ingress: ingress, egress: egress)
        if configuration.vnetHeader && !configuration.gsoWrites {
            logger.info("GSO writes off: super-packets are segmented in user space before writing")
        } else if configuration.vnetHeader && !gsoWritesWork {
            logger.warning("the kernel refused a probe GSO write (EINVAL): super-packets will be segmented before writing")
        }
    }

    /// Whether the kernel accepts GSO writes on the devices (checked at start by a probe).
    public let gsoWritesWork: Bool

    /// The device names.
    public var deviceNames: (ingress: String, egress: String) { (devices.ingress.name, devices.egress.name) }

    /// Asks the forwarding threads to stop (safe from any thread or a signal source).
    public func stop() { stopFlag.store(true, ordering: .relaxed) }

    /// Current counters per direction.
    public var countersByDirection: [Direction: ForwarderStatistics] { snapshots.withLock { $0 } }

    /// Current counters keyed by direction label (`lan_to_wan`, `wan_to_lan`), as `--stats-json` writes them.
    public var statistics: [String: ForwarderStatistics] {
        Dictionary(uniqueKeysWithValues: countersByDirection.map { ($0.key.label, $0.value) })
    }

    let metrics = ForwarderMetrics()

    /// Prometheus text for all counters.
    public func prometheusText() -> String { metrics.exposition(countersByDirection) }

    /// Runs both directions (of every queue) until ``stop()``; returns when all threads have finished.
    public func run() {
        let done = DispatchGroup()
        let pairs = [devices] + moreQueues
        for (queue, pair) in pairs.enumerated() {
            for direction in Direction.allCases {
                done.enter()
                let thread = Thread { [self] in
                    var worker = DirectionWorker(
                        queue: queue,
                        pipeline: ForwardingPipeline(
                            direction: direction, gro: configuration.gro,
                            egressMTU: direction == .lanToWan ? egressMTU : ingressMTU,
                            icmpSourceV4: configuration.icmpSourceV4, icmpSourceV6: configuration.icmpSourceV6,
                            virtioHeaders: configuration.vnetHeader, stage: makeStage(direction), logger: logger),
                        batchSize: configuration.batch)
                    worker.pipeline.gsoRefused = configuration.vnetHeader && !gsoWritesWork
                    if var settings = configuration.impairment[direction], settings.isActive {
                        // Each queue and direction draws its own sequence from the one seed.
                        settings.seed &+= UInt64(queue * 2 + (direction == .lanToWan ? 0 : 1))
                        worker.pipeline.impairment = Impairment(settings)
                    }
                    if direction == .lanToWan {
                        worker.run(from: pair.ingress, to: pair.egress, forwarder: self)
                    } else {
                        worker.run(from: pair.egress, to: pair.ingress, forwarder: self)
                    }
                    done.leave()
                }
                thread.name = "offload-\(direction.label)-\(queue)"
                thread.start()
            }
        }
        done.wait()
    }

    /// Per-queue snapshots, summed per direction on reading.
    let queueSnapshots = Mutex<[Direction: [Int: ForwarderStatistics]]>([:])

    func publish(_ direction: Direction, queue: Int, _ stats: ForwarderStatistics) {
        let total: ForwarderStatistics = queueSnapshots.withLock { all in
            all[direction, default: [:]][queue] = stats
            return all[direction, default: [:]].values.reduce(into: ForwarderStatistics()) { $0.add($1) }
        }
        snapshots.withLock { $0[direction] = total }
    }

    var shouldStop: Bool { stopFlag.load(ordering: .relaxed) }
}

extension Forwarder where S == IdentityStage {
    /// A forwarder that forwards packets unchanged (the identity stage): `offload forward`.
    public convenience init(configuration: ForwarderConfiguration, logger: Logger) throws(TUNError) {
        try self.init(configuration: configuration, logger: logger) { _ in IdentityStage() }
    }
}

/// Writes one two-segment TCP super-packet with TTL 0 (the kernel drops it when routing) and
/// reports whether the write was accepted: some kernels accept IFF_VNET_HDR but refuse GSO
/// writes with EINVAL (tailscale#13041, gluetun#3424), which only a write shows.
func probeGSOWrite(_ device: borrowing TUNDevice) -> Bool {
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
    guard let header = unsafe VirtioPacketInfo.header(for: gso, checksum: .partial, packet: bytes.span.bytes) else {
        return true
    }
    do {
        try device.write(header: header, packet: bytes)
        return true
    } catch {
        return error.errno != .invalidArgument
    }
}

/// One direction of one queue: the read loop around its ``ForwardingPipeline``.
struct DirectionWorker<S: Stage>: ~Copyable {
    let queue: Int
    var pipeline: ForwardingPipeline<S>
    var batch: PacketBatch

    init(queue: Int, pipeline: consuming ForwardingPipeline<S>, batchSize: Int) {
        self.queue = queue
        self.pipeline = pipeline
        batch = PacketBatch(packetCapacity: batchSize, byteCapacity: batchSize * TUNDevice.maximumPacket)
    }

    mutating func run(from: borrowing TUNDevice, to: borrowing TUNDevice, forwarder: Forwarder<S>) {
        let direction = pipeline.direction
        var lastPublish = DispatchTime.now().uptimeNanoseconds
        while !forwarder.shouldStop {
            // Segments the impairment holds back must leave on time even when nothing arrives.
            let holding = pipeline.impairment?.isHolding ?? false
            guard from.waitReadable(milliseconds: holding ? 1 : 100) else {
                if holding { pipeline.releaseHeld(now: DispatchTime.now().uptimeNanoseconds, egress: to) }
                forwarder.publish(direction, queue: queue, pipeline.snapshot)
                continue
            }
            batch.removeAll()
            let now = DispatchTime.now().uptimeNanoseconds
            pipeline.read(from: from, into: &batch, now: now)
            pipeline.process(batch, now: now, egress: to, back: from)
            if now - lastPublish > 50_000_000 {
                forwarder.publish(direction, queue: queue, pipeline.snapshot)
                lastPublish = now
            }
        }
        forwarder.publish(direction, queue: queue, pipeline.snapshot)
    }
}
