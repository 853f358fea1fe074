import ArgumentParser
import Dispatch
import Foundation
import Logging
import Synchronization
import OffloadEngine
import OffloadForwarder
import OffloadTUN
import OffloadWire
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

struct Forward: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Forward between two TUN devices with GRO and GSO on (root).",
        discussion: """
            The kernel routes traffic into the ingress device; the forwarder merges it (GRO), decrements the TTL, \
            applies the egress MTU as Linux's ip_forward does (per segment), and writes super-packets into the \
            egress device with a virtio header; ICMP errors go back through the ingress device. The other \
            direction is forwarded the same way.

            --setup adds the policy routing (ip rule iif <lan> -> ingress, iif <wan> -> egress), turns GRO on for \
            <lan> and <wan> (the kernel merges before the TUN devices, as a NIC would; --keep-ingress-gro leaves it \
            as it is), and undoes both on exit.
            Counters: SIGUSR1 prints them; --metrics serves Prometheus text; they are printed at exit.

            Examples:
              offload forward --ingress offload0 --egress offload1 --setup --lan eth0 --wan eth1
              offload forward --ingress offload0 --egress offload1 --egress-mtu 1400 --metrics 127.0.0.1:9101
              offload forward --ingress offload0 --egress offload1 --mode lro   # UNSAFE, for the lab
              offload forward ... --impair loss=1%,reorder=1%,duplicate=0.1%     # a lossy path, for tests
            """)

    @Option(help: "The TUN device traffic is routed into (created if missing).")
    var ingress: String
    @Option(help: "The TUN device the forwarder writes into (created if missing).")
    var egress: String
    @Flag(help: "Add the policy routing for --lan and --wan, and remove it on exit.")
    var setup = false
    @Option(help: "With --setup: the interface LAN traffic arrives on.")
    var lan: String?
    @Option(help: "With --setup: the interface WAN traffic arrives on.")
    var wan: String?
    @Flag(help: "With --setup: leave GRO on --lan and --wan as it is. By default --setup turns it on (and off again at exit): the kernel then merges before the TUN devices, as a NIC would, and the forwarder reads super-packets instead of one packet per system call.")
    var keepIngressGro = false
    @Flag(help: "With --setup: if the forwarder dies, drop LAN and WAN traffic until it is back (blackhole routes in its tables) instead of letting the kernel forward it (the default, fail-open). A clean exit removes them.")
    var failClosed = false
    @OptionGroup var dataplane: DataplaneOptions

    func validate() throws {
        if setup && (lan == nil || wan == nil) { throw ValidationError("--setup needs --lan and --wan") }
        let setupOnly = (lan != nil ? ["--lan"] : []) + (wan != nil ? ["--wan"] : []) + (keepIngressGro ? ["--keep-ingress-gro"] : [])
            + (failClosed ? ["--fail-closed"] : [])
        if !setup && !setupOnly.isEmpty { throw needsSetup(setupOnly) }
    }

    func run() async throws {
        let routing: RoutingPlan? = setup ? .policy(lan: lan!, wan: wan!) : nil
        try await dataplane.run(ingress: ingress, egress: egress, routing: routing, ingressGRO: !keepIngressGro,
                                failClosed: failClosed, label: "offload.forward") { _ in IdentityStage() }
    }
}

/// The options of a TUN dataplane (`offload forward`, `offload siit`): GRO, offloads, batching,
/// queues, metrics, and how long to run.
struct DataplaneOptions: ParsableArguments {
    @Option(help: "Egress MTU for the forwarding decision (default: the egress device's MTU).")
    var egressMtu: Int?
    @Option(help: "gro: Linux's rules. lro: UNSAFE greedy merge that black-holes behind a smaller MTU (for the lab).")
    var mode: ModeOption = .gro
    @Flag(help: "Do not merge TCP.")
    var noTcpGro = false
    @Flag(help: "Merge UDP datagrams too (UDP GRO; USO towards the egress).")
    var udpGro = false
    @Flag(help: "Open the devices without virtio headers: no offloads at all.")
    var noVnetHdr = false
    @Flag(help: "Keep GRO but segment super-packets in user space before writing (what the forwarder does on kernels that refuse GSO writes).")
    var noGsoWrites = false
    @Option(help: "Packets per read batch.")
    var batch = 64
    @Option(help: "Queues per device (IFF_MULTI_QUEUE): one worker thread per queue and direction.")
    var queues = 1
    @Option(help: "Transmit queue length of both devices: the packets the kernel may queue for the forwarder to read (Linux's TUN default is 500; 0 leaves it).")
    var txqueuelen = 4096
    @Option(help: "Serve Prometheus text on ADDRESS:PORT: IPv4 (127.0.0.1:9101, 0.0.0.0:9101) or IPv6 in brackets ([::1]:9101, [::]:9101).")
    var metrics: String?
    @Option(help: "Source address of ICMPv4 errors.")
    var icmpSource4 = "192.0.2.254"
    @Option(help: "Source address of ICMPv6 errors.")
    var icmpSource6 = "2001:db8::fe"
    @Option(help: "Stop after this many seconds (default: run until SIGINT/SIGTERM).")
    var duration: Double?
    @Option(help: "Write the final counters as JSON to this file at exit.")
    var statsJson: String?
    @Option(help: ArgumentHelp("Damage what is forwarded, per wire segment, for tests and the lab (this kernel has no netem): comma-separated loss=, duplicate=, reorder= (rates, e.g. 1% or 0.01), depth= (segments that overtake a reordered one, default 3), corrupt=, delay= (e.g. 2ms), seed=.", valueName: "spec"))
    var impair: String?
    @Option(help: "Which direction --impair damages: both, lan_to_wan or wan_to_lan.")
    var impairDirection = "both"
    @Flag(help: "Put back what a --setup run for these devices left in this network namespace when it was killed (routes, rules, sysctls, GRO; written down in /run/offload), and exit. The next --setup run does the same by itself.")
    var cleanup = false

    /// The live-only options given on the command line (not at their defaults): offline work would
    /// ignore them, so offline commands refuse them rather than pretend.
    var liveOnlyGiven: [String] {
        var given: [String] = []
        if egressMtu != nil { given.append("--egress-mtu") }
        if mode != .gro { given.append("--mode") }
        if noTcpGro { given.append("--no-tcp-gro") }
        if udpGro { given.append("--udp-gro") }
        if noVnetHdr { given.append("--no-vnet-hdr") }
        if noGsoWrites { given.append("--no-gso-writes") }
        if batch != 64 { given.append("--batch") }
        if queues != 1 { given.append("--queues") }
        if txqueuelen != 4096 { given.append("--txqueuelen") }
        if metrics != nil { given.append("--metrics") }
        if duration != nil { given.append("--duration") }
        if statsJson != nil { given.append("--stats-json") }
        if impair != nil { given.append("--impair") }
        if impairDirection != "both" { given.append("--impair-direction") }
        if cleanup { given.append("--cleanup") }
        return given
    }

    func validate() throws {
        if let m = egressMtu, m < 576 || m > 65_535 { throw ValidationError("--egress-mtu must be 576...65535") }
        guard batch >= 1 && batch <= 1024 else { throw ValidationError("--batch must be 1...1024") }
        guard queues >= 1 && queues <= 16 else { throw ValidationError("--queues must be 1...16") }
        guard txqueuelen >= 0 && txqueuelen <= 1_000_000 else { throw ValidationError("--txqueuelen must be 0...1000000") }
        guard IPv4Address(icmpSource4) != nil else { throw ValidationError("--icmp-source4: not an IPv4 address") }
        guard IPv6Address(icmpSource6) != nil else { throw ValidationError("--icmp-source6: not an IPv6 address") }
        if let metrics, parseEndpoint(metrics) == nil {
            throw ValidationError("--metrics \(metrics): want ADDRESS:PORT, like 127.0.0.1:9101 or [::1]:9101")
        }
        if let duration, !(duration > 0) { throw ValidationError("--duration must be positive") }
        if let impair {
            do { _ = try ImpairmentSettings(parsing: impair) } catch { throw ValidationError("--impair: \(error)") }
        }
        guard impairDirection == "both" || Direction(rawValue: impairDirection) != nil else {
            throw ValidationError("--impair-direction must be both, lan_to_wan or wan_to_lan")
        }
    }

    /// Opens the devices, sets them up, and forwards with `makeStage`'s stages until SIGINT/SIGTERM
    /// or the duration; prints the counters at exit.
    func run<S: Stage>(ingress: String, egress: String, routing: RoutingPlan?, ingressGRO: Bool = true,
                       failClosed: Bool = false, label: String,
                       makeStage: @escaping @Sendable (Direction) -> S) async throws {
        let logger = try prepare(label: label)
        if cleanup { return try cleanupSetup(devices: [ingress, egress]) }
        var config = ForwarderConfiguration(ingress: ingress, egress: egress)
        config.egressMTU = egressMtu
        config.gro.mode = mode == .gro ? .gro : .unsafeLRO
        config.gro.tcp = !noTcpGro
        config.gro.udp = udpGro
        config.vnetHeader = !noVnetHdr
        config.gsoWrites = !noGsoWrites
        config.batch = batch
        config.queues = queues
        config.icmpSourceV4 = IPv4Address(icmpSource4)!
        config.icmpSourceV6 = IPv6Address(icmpSource6)!
        if let impair, let settings = try? ImpairmentSettings(parsing: impair), settings.isActive {
            for direction in Direction.allCases where impairDirection == "both" || impairDirection == direction.rawValue {
                config.impairment[direction] = settings
            }
            logger.warning("impairing \(impairDirection == "both" ? "both directions" : impairDirection): \(settings)")
        }
        let forwarder: Forwarder<S>
        do { forwarder = try Forwarder(configuration: config, logger: logger, makeStage: makeStage) } catch {
            throw InputError(message: "\(error)")
        }
        let names = forwarder.deviceNames
        logger.info("forwarding \(names.ingress) <-> \(names.egress); offloads granted: \(names.ingress): \(forwarder.grantedOffloads.ingress), \(names.egress): \(forwarder.grantedOffloads.egress); egress MTU \(forwarder.egressMTU); mode \(mode.rawValue); GSO writes \(forwarder.gsoWritesWork ? "accepted" : "refused: segmenting")")
        if mode == .lro { logger.warning("--mode lro is the UNSAFE greedy merge: expect black holes behind a smaller MTU") }
        try await serve(forwarder, routing: routing, ingressGRO: ingressGRO, failClosed: failClosed, logger: logger)
    }

    /// `--cleanup`: puts back what a killed `--setup` run for `devices` left in this network
    /// namespace (its ``SetupJournal``), says what, and returns without opening any device.
    func cleanupSetup(devices: [String]) throws {
        let setup = RoutingSetup()
        let recovered: [String]
        do { recovered = try setup.keepJournal(SetupJournal(devices: Set(devices).sorted())) } catch {
            throw InputError(message: "--cleanup: \(error)")
        }
        setup.teardown()
        print(recovered.isEmpty ? "nothing to put back for \(Set(devices).sorted().joined(separator: ", ")) in this network namespace"
            : "put back what a killed run left: " + recovered.joined(separator: "; "))
    }

    /// Logging to standard error, and the check for the privileges TUN devices need.
    func prepare(label: String) throws -> Logger {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        guard getuid() == 0 || FileManager.default.isWritableFile(atPath: "/dev/net/tun") else {
            throw InputError(message: "this command needs root (or CAP_NET_ADMIN) to create TUN devices")
        }
        return Logger(label: label)
    }

    /// Runs a dataplane with these options' lifecycle settings (txqueuelen, routing, metrics,
    /// duration, counters) until SIGINT/SIGTERM or the duration; prints the counters at exit.
    func serve<D: Dataplane>(_ dataplane: D, routing: RoutingPlan?, deviceMTU: Int? = nil, ingressGRO: Bool = true,
                             failClosed: Bool = false, onSIGUSR1: (@Sendable () -> Void)? = nil, logger: Logger) async throws {
        var settings = ForwarderLifecycleSettings()
        settings.failClosed = failClosed
        settings.deviceMTU = deviceMTU
        settings.ingressGRO = ingressGRO
        settings.txqueuelen = txqueuelen
        settings.routing = routing
        settings.metrics = metrics.flatMap(parseEndpoint)
        settings.duration = duration
        settings.statisticsPath = statsJson
        let lifecycle: ForwarderLifecycle<D>
        do {
            lifecycle = try ForwarderLifecycle(forwarder: dataplane, settings: settings, logger: logger) { stats in
                FileHandle.standardError.write(Data(summary(stats).utf8))
                onSIGUSR1?()
            }
        } catch {
            throw InputError(message: "\(error)")
        }
        // SIGINT and SIGTERM are a graceful shutdown: the forwarder stops, tears down and writes its counters.
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [.init(service: lifecycle, successTerminationBehavior: .gracefullyShutdownGroup)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        print(summary(lifecycle.finalStatistics), terminator: "")
    }
}

func summary(_ stats: [String: ForwarderStatistics]) -> String {
    var text = ""
    for (direction, s) in stats.sorted(by: { $0.key < $1.key }) {
        // Every counter that is not zero, by the name it has in --metrics and --stats-json: nothing
        // that happened to a packet is left out of the summary.
        text += "\(direction): " + s.counters.filter { $0.value > 0 || ["packets_in", "packets_out"].contains($0.name) }
            .map { "\($0.name) \($0.value)" }.joined(separator: ", ")
            + String(format: " (mean %.1f segments per super-packet)\n", s.meanSegmentsPerSuperPacket)
        // Every packet GRO delivered, by its one outcome: they add up to what GRO delivered.
        text += "  \(direction): \(s.packetsIn) packets in, merged by GRO into \(s.gro.packetsOut): "
            + "\(s.deliveredSentOn) sent on, \(s.deliveredRefused) refused (too big with DF, TTL; "
            + "\(s.icmpSent) ICMP errors sent, \(s.icmpSuppressed) rate-limited), \(s.deliveredAnswered) answered by the "
            + "stage, \(s.deliveredNotForwarded) not forwarded (multicast, link-local), \(s.deliveredDropped) dropped by the stage"
            + (s.deliveriesReconcile ? "\n" : " (these do not add up: a bug, please report it)\n")
        let stage = s.stage.filter { $0.value > 0 }
        if !stage.isEmpty {
            text += "  \(direction) stage: " + stage.map { counter in
                counter.name + (counter.labels.isEmpty ? "" : "{" + counter.labels.sorted { $0.key < $1.key }
                    .map { "\($0.key)=\($0.value)" }.joined(separator: ",") + "}") + " \(counter.value)"
            }.joined(separator: ", ") + "\n"
        }
    }
    return text
}

/// `127.0.0.1:9101` or `[::1]:9101` as the address (without brackets) and the port; nil when it is neither.
func parseEndpoint(_ text: String) -> (String, UInt16)? {
    guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { return nil }
    let host = text[..<colon]
    if host.hasPrefix("["), host.hasSuffix("]") {
        let inside = host.dropFirst().dropLast()
        return IPv6Address(inside) != nil ? (String(inside), port) : nil
    }
    return IPv4Address(host) != nil ? (String(host), port) : nil
}

/// A usage error for options that do something only with `--setup`: without it they would be ignored.
func needsSetup(_ options: [String]) -> ValidationError {
    ValidationError("\(options.joined(separator: ", ")): only with --setup (without it, nothing is routed or set up; "
        + "add --setup, or leave \(options.count == 1 ? "it" : "them") out)")
}
