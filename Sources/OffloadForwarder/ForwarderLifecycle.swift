import Foundation
import Logging
import OffloadTUN
import ServiceLifecycle
import Synchronization

/// What a forwarder process does around its dataplane: set the devices up (transmit queue
/// length, link up, policy routing), serve metrics, run until a signal or a deadline, and undo
/// the routing on the way out. `offload forward` parses its arguments into these settings and
/// calls ``run()``; tests drive the same steps.
public struct ForwarderLifecycleSettings: Sendable {
    /// Transmit queue length for both devices (0 leaves the kernel's).
    public var txqueuelen = 4096
    /// With a value: the routing to put in place (and remove at exit).
    public var routing: RoutingPlan?
    /// With a value: the devices' MTU, set when they are brought up (a tunnel's inner MTU).
    public var deviceMTU: Int?
    /// With the policy routing: make sure GRO is on for the LAN and WAN interfaces, so the kernel
    /// merges before the TUN devices as a NIC would (turned off again at exit if it was off).
    public var ingressGRO = true
    /// With the policy routing: drop LAN and WAN traffic while no forwarder runs, instead of
    /// letting the kernel forward it (see ``RoutingSetup/apply(ingress:egress:lan:wan:table:failClosed:)``).
    public var failClosed = false
    /// Where the routing setup writes down what it changes (``SetupJournal``).
    public var journalDirectory = SetupJournal.directory
    /// Serve Prometheus text on this address (IPv4 or IPv6, without brackets) and port.
    public var metrics: (address: String, port: UInt16)?
    /// Stop after this many seconds (nil: until ``ForwarderLifecycle/requestStop()`` or SIGINT/SIGTERM).
    public var duration: Double?
    /// Write the final counters as JSON here.
    public var statisticsPath: String?
    /// Whether SIGUSR1 prints the counters (SIGINT and SIGTERM are the service group's: a
    /// graceful shutdown).
    public var handleSignals = true
    /// Creates the defaults.
    public init() {}
}

/// What ``ForwarderLifecycle`` runs: a dataplane with devices, threads it runs until stopped, and
/// counters per direction (``Forwarder``, and a tunnel endpoint).
public protocol Dataplane: AnyObject, Sendable {
    /// The devices to set up (the same name twice for a dataplane with one device).
    var deviceNames: (ingress: String, egress: String) { get }
    /// Runs until ``stop()``; returns when every thread has finished.
    func run()
    /// Asks the threads to stop (any thread, or a signal watcher).
    func stop()
    /// Current counters keyed by direction label, as `--stats-json` writes them.
    var statistics: [String: ForwarderStatistics] { get }
    /// Prometheus text for all counters.
    func prometheusText() -> String
}

extension Forwarder: Dataplane {}

/// Runs a ``Dataplane`` (a ``Forwarder``, a tunnel endpoint) from start to teardown (see ``ForwarderLifecycleSettings``).
///
/// It is a swift-service-lifecycle `Service`: in a `ServiceGroup` configured with graceful-shutdown
/// signals (`offload forward` uses SIGINT and SIGTERM), a graceful shutdown stops the forwarder,
/// which then tears down and writes its counters. Run alone, ``runUntilStopped()`` blocks until
/// ``requestStop()`` or the duration.
public final class ForwarderLifecycle<D: Dataplane>: Service, @unchecked Sendable {
    /// The dataplane.
    public let forwarder: D
    /// The settings.
    public let settings: ForwarderLifecycleSettings
    let logger: Logger
    let routing = RoutingSetup()
    var server: MetricsServer?
    /// Prints counters on SIGUSR1.
    let printCounters: @Sendable ([String: ForwarderStatistics]) -> Void

    /// Sets the devices and the routing up, and starts the metrics server.
    /// - Throws: ``ForwarderSetupError`` naming the step that failed (what was done is undone).
    public init(forwarder: D, settings: ForwarderLifecycleSettings, logger: Logger,
                printCounters: @escaping @Sendable ([String: ForwarderStatistics]) -> Void = { _ in }) throws {
        self.forwarder = forwarder
        self.settings = settings
        self.logger = logger
        self.printCounters = printCounters
        let names = forwarder.deviceNames
        if settings.txqueuelen > 0 {
            for name in Set([names.ingress, names.egress]).sorted() {
                do { try TUNDevice.setTransmitQueueLength(name: name, settings.txqueuelen) } catch {
                    logger.warning("could not set txqueuelen \(settings.txqueuelen) on \(name): \(error)")
                }
            }
        }
        if let plan = settings.routing {
            do {
                // What a killed run left for these devices goes back first; then every change is
                // written down before it is made (``SetupJournal``).
                let journal = SetupJournal(devices: Set([names.ingress, names.egress]).sorted(),
                                           directory: settings.journalDirectory)
                let recovered = try routing.keepJournal(journal)
                if !recovered.isEmpty {
                    logger.warning("a run that was stopped without its teardown left its setup (\(journal.path)); put back: \(recovered.joined(separator: "; "))")
                }
                try TUNDevice.bringUp(name: names.ingress, mtu: settings.deviceMTU)
                try TUNDevice.bringUp(name: names.egress, mtu: settings.deviceMTU)
                switch plan {
                case .policy(let lan, let wan):
                    try routing.apply(ingress: names.ingress, egress: names.egress, lan: lan, wan: wan,
                                      failClosed: settings.failClosed)
                    if settings.ingressGRO { routing.enableReceiveOffload(on: [lan, wan]) }
                case .routes(let intoIngress, let intoEgress):
                    try routing.applyRoutes(ingress: names.ingress, egress: names.egress, intoIngress: intoIngress,
                                            intoEgress: intoEgress)
                case .deviceRoutes(let addresses, let routes, let nextHops):
                    try routing.applyDeviceRoutes(device: names.ingress, addresses: addresses, routes: routes, nextHops: nextHops)
                }
            } catch {
                routing.teardown()
                throw ForwarderSetupError(step: "setup", reason: "\(error)")
            }
            logger.info("setup: \(routing.applied.joined(separator: "; "))")
            if let problem = routing.journalProblem {
                logger.warning("what --setup changed is not written down (\(problem)): if this process is killed, the next run cannot put it back")
            }
        }
        if let (address, port) = settings.metrics {
            do {
                server = try MetricsServer(address: address, port: port) { [forwarder] in forwarder.prometheusText() }
            } catch {
                routing.teardown()
                throw ForwarderSetupError(step: "metrics", reason: "\(error)")
            }
            logger.info("metrics on http://\(address.contains(":") ? "[\(address)]" : address):\(server!.port)/metrics")
        }
    }

    /// Asks the forwarder to stop (any thread).
    public func requestStop() { forwarder.stop() }

    /// The counters when the forwarder stopped (after ``runUntilStopped()`` or ``run()`` returned).
    public var finalStatistics: [String: ForwarderStatistics] { final.withLock { $0 } }
    let final = Mutex<[String: ForwarderStatistics]>([:])

    /// The service: runs the forwarder's threads until a graceful shutdown (or ``requestStop()``
    /// or the duration), then tears down. Errors writing the counters are thrown.
    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
                // The dataplane has threads of its own; this one only waits for them.
                Thread { [self] in
                    do {
                        _ = try runUntilStopped()
                        done.resume()
                    } catch {
                        done.resume(throwing: error)
                    }
                }.start()
            }
        } onGracefulShutdown: { [self] in
            requestStop()
        }
    }

    /// Runs until ``requestStop()`` or the duration; then stops the metrics server, removes the
    /// routing and writes the counters. Returns the final counters.
    @discardableResult
    public func runUntilStopped() throws -> [String: ForwarderStatistics] {
        if settings.handleSignals {
            // The handler only sets a flag (async-signal-safe); the watcher thread acts on it.
            signal(SIGUSR1) { _ in forwarderSignalFlags.bitwiseOr(2, ordering: .relaxed) }
        }
        let deadline = settings.duration.map { Date().addingTimeInterval($0) }
        let finished = Atomic<Bool>(false)
        let watcher = Thread { [forwarder, printCounters, settings] in
            while !finished.load(ordering: .relaxed) {
                let flags = settings.handleSignals ? forwarderSignalFlags.exchange(0, ordering: .relaxed) : 0
                if flags & 2 != 0 { printCounters(forwarder.statistics) }
                if flags & 1 != 0 || deadline.map({ Date() >= $0 }) == true {
                    forwarder.stop()
                    return
                }
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        watcher.start()
        forwarder.run()
        finished.store(true, ordering: .relaxed)
        teardown()
        let stats = forwarder.statistics
        final.withLock { $0 = stats }
        if let path = settings.statisticsPath {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(stats).write(to: URL(fileURLWithPath: path))
        }
        return stats
    }

    /// Stops the metrics server and removes the routing (safe to call twice).
    public func teardown() {
        server?.stop()
        server = nil
        routing.teardown()
    }
}

/// A step of the forwarder's setup failed.
public struct ForwarderSetupError: Error, CustomStringConvertible {
    /// Which step.
    public var step: String
    /// Why.
    public var reason: String
    /// `setup failed: ...`.
    public var description: String { "\(step) failed: \(reason)" }
}

/// Bits set by the signal handler: 2 print counters.
let forwarderSignalFlags = Atomic<Int>(0)
