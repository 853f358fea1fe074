import ArgumentParser
import Dispatch
import Foundation
import OffloadForwarder
import OffloadNAT64
import OffloadSIIT
import OffloadWire
import Synchronization

/// `offload nat64`: stateful NAT64 (RFC 6146), of a capture or between two TUN devices.
struct NAT64: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nat64",
        abstract: "Stateful NAT64 (RFC 6146): IPv6-only hosts reach IPv4 through a few shared IPv4 addresses, offline on a capture or live between two TUN devices with GRO and GSO on.",
        discussion: """
            IPv4 addresses appear to the IPv6 hosts under --pool6 (RFC 6052; 64:ff9b::/96 by default, for DNS64). \
            Each IPv6 host's TCP, UDP and ICMP echo flows get an address and port from --pool4 (endpoint-independent \
            mapping; one address per host while it has bindings; ports chosen unpredictably, RFC 6056, keeping the \
            range below or above 1024 and the parity). Sessions follow RFC 6146's TCP state machine and lifetimes \
            (TCP 2 h 4 min established, 4 min transitory; UDP 5 min; ICMP 60 s; an unsolicited IPv4 SYN is kept 6 s, \
            then answered "port unreachable"). IPv4 hosts may use a binding once it exists (--filtering \
            endpoint-independent, the default) or only after the IPv6 host sent to them (address-dependent). ICMP \
            errors are translated both ways and matched to their session through the packet they quote; they never \
            create or refresh state. A fragment's first fragment finds the session; the others follow it, or wait \
            2 s for it. A TCP or UDP super-packet is looked up once, its session refreshed once, and translated in \
            place once; the egress MTU is applied per translated segment.

            Offline (IN OUT): sessions live in capture time, so the order of packets matters; OUT (raw IP) holds \
            the translated packets and the ICMP errors the translator would send back, and the state at the end \
            is printed.

            Live (--ingress, --egress): --ingress is the TUN device on the IPv6 side, --egress the one on the IPv4 \
            side. --setup routes --pool6 into --ingress and the --pool4 addresses into --egress, and removes the \
            routes at exit. The state is written to --status-file each second; `offload nat64 --sessions` prints it.

            Examples:
              offload nat64 --pool4 198.51.100.1 v6-and-v4.pcap out.pcap
              offload nat64 --ingress nat64-6 --egress nat64-4 --pool4 198.51.100.1-198.51.100.4:1024-65535 --setup \\
                  --metrics 127.0.0.1:9103 --status-file /run/offload-nat64/nat64.status
              offload nat64 --sessions --status-file /run/offload-nat64/nat64.status
            """)

    @Option(help: "The RFC 6052 prefix IPv4 addresses appear under (64:ff9b::/96, or a network-specific /32../96).")
    var pool6 = "64:ff9b::/96"
    @Option(help: ArgumentHelp("IPv4 addresses and ports to hand out: [tcp|udp|icmp=]ADDRESS[-ADDRESS|/LEN][:PORT[-PORT]] (ports 1024-65535 by default); repeatable.",
                               valueName: "pool4"))
    var pool4: [String] = []
    @Option(name: .customLong("static-bib"),
            help: ArgumentHelp("A fixed binding, PROTO=[V6]:PORT=V4:PORT (tcp=[2001:db8::5]:80=198.51.100.1:8080); repeatable.",
                               valueName: "binding"))
    var staticBIB: [String] = []
    @Option(help: "Who may use a binding from IPv4: endpoint-independent (any host) or address-dependent (hosts the IPv6 host sent to).")
    var filtering = "endpoint-independent"
    @Option(help: "UDP session lifetime, seconds (RFC 4787: at least 120).")
    var udpTimeout = 300.0
    @Option(help: "Established TCP session lifetime, seconds (RFC 5382: at least 7440).")
    var tcpEstablishedTimeout = 7_440.0
    @Option(help: "Transitory TCP session lifetime (opening, closing, reset), seconds.")
    var tcpTransitoryTimeout = 240.0
    @Option(help: "ICMP query session lifetime, seconds (RFC 5508: at least 60).")
    var icmpTimeout = 60.0
    @Option(help: "At most this many sessions in all.")
    var maxSessions = 1_000_000
    @Option(help: "At most this many sessions per IPv6 host.")
    var maxSessionsPerHost = 10_000
    @Option(help: "IPv4 packets without DF are fragmented so that no IPv6 packet exceeds this (RFC 7915 §4).")
    var lowestIpv6Mtu = 1280

    @Option(help: "Offline: the MTU of the IPv4 side (default: no limit, 65535).")
    var mtu4: Int?
    @Option(help: "Offline: the MTU of the IPv6 side (default: no limit, 65535).")
    var mtu6: Int?
    @Flag(help: "Offline: print the report as JSON; with --sessions, print the state as JSON.")
    var json = false
    @Argument(help: "Offline: the input capture (pcap or pcapng), both families in the order they were seen.")
    var input: String?
    @Argument(help: "Offline: the output capture (pcap, raw IP).")
    var output: String?

    @Option(help: "Live: the TUN device on the IPv6 side (created if missing).")
    var ingress: String?
    @Option(help: "Live: the TUN device on the IPv4 side (created if missing).")
    var egress: String?
    @Flag(help: "Live: route --pool6 into --ingress and the --pool4 addresses into --egress; undone at exit.")
    var setup = false
    @Option(help: "Live: where the state is written each second (default: /run/offload-nat64/nat64.status; the directory is made when missing).")
    var statusFile: String?
    @Flag(help: "Print the state (bindings, sessions, their timers) of the running translator from --status-file, and exit.")
    var sessions = false
    @OptionGroup(title: "Live dataplane options")
    var dataplane: DataplaneOptions

    var live: Bool { ingress != nil || egress != nil }

    static let statusDirectory = "/run/offload-nat64"

    /// Where the status is: --status-file, or /run/offload-nat64/nat64.status (systemd's
    /// RuntimeDirectory, or made by the live translator: /run is root's, unlike /tmp, where a
    /// planted link could redirect what root writes).
    var statusPath: String { statusFile ?? "\(Self.statusDirectory)/nat64.status" }

    func validate() throws {
        if sessions {
            guard !live, input == nil else { throw ValidationError("--sessions reads a running translator's status: give only --status-file (and --json)") }
            return
        }
        guard RFC6052Prefix(pool6) != nil else {
            throw ValidationError("--pool6 wants an RFC 6052 prefix of length 32, 40, 48, 56, 64 or 96 with bits 64-71 zero, like 64:ff9b::/96")
        }
        guard !pool4.isEmpty else { throw ValidationError("give --pool4: the IPv4 addresses (and ports) to hand out, like 198.51.100.1 or 198.51.100.1-198.51.100.4:1024-65535") }
        for entry in pool4 where Pool4Entry(entry) == nil {
            throw ValidationError("--pool4 \(entry): want [tcp|udp|icmp=]ADDRESS[-ADDRESS|/LEN][:PORT[-PORT]], like 198.51.100.1-198.51.100.4:1024-65535 (at most 65536 addresses, a /16)")
        }
        for entry in staticBIB where NAT64StaticBinding(entry) == nil {
            throw ValidationError("--static-bib \(entry): want PROTO=[V6]:PORT=V4:PORT, like tcp=[2001:db8::5]:80=198.51.100.1:8080")
        }
        if let problem = translation.problems.first { throw ValidationError(problem) }
        guard NAT64Filtering(rawValue: filtering) != nil else {
            throw ValidationError("--filtering must be endpoint-independent or address-dependent")
        }
        for (name, value) in [("--udp-timeout", udpTimeout), ("--tcp-established-timeout", tcpEstablishedTimeout),
                              ("--tcp-transitory-timeout", tcpTransitoryTimeout), ("--icmp-timeout", icmpTimeout)]
        where !(value > 0 && value <= 1e7) {
            throw ValidationError("\(name) must be a positive number of seconds")
        }
        guard maxSessions >= 1, maxSessionsPerHost >= 1 else { throw ValidationError("--max-sessions and --max-sessions-per-host must be at least 1") }
        guard lowestIpv6Mtu >= 1280 && lowestIpv6Mtu <= 65_535 else { throw ValidationError("--lowest-ipv6-mtu must be 1280...65535") }
        if live {
            guard ingress != nil, egress != nil else { throw ValidationError("live translation needs both --ingress and --egress") }
            guard input == nil else { throw ValidationError("give either IN OUT (offline) or --ingress/--egress (live), not both") }
            let offlineOnly = (mtu4 != nil ? ["--mtu4"] : []) + (mtu6 != nil ? ["--mtu6"] : []) + (json ? ["--json"] : [])
            if !offlineOnly.isEmpty {
                throw ValidationError("\(offlineOnly.joined(separator: ", ")): offline options (live, the devices' MTUs and "
                    + "--egress-mtu apply, and the counters go to --stats-json)")
            }
        } else {
            let liveOnly = dataplane.liveOnlyGiven + (setup ? ["--setup"] : []) + (statusFile != nil ? ["--status-file"] : [])
            if !liveOnly.isEmpty {
                throw ValidationError("\(liveOnly.joined(separator: ", ")): live options (with --ingress/--egress); "
                    + "translating a capture would ignore them")
            }
            guard input != nil, output != nil else {
                throw ValidationError("give IN OUT to translate a capture, --ingress and --egress to translate live, or --sessions")
            }
            guard (68...65_535).contains(mtu4 ?? 65_535), (1280...65_535).contains(mtu6 ?? 65_535) else {
                throw ValidationError("--mtu4 must be 68...65535 and --mtu6 1280...65535")
            }
        }
    }

    var translation: NAT64Configuration {
        var c = NAT64Configuration(pool4: pool4.compactMap { Pool4Entry($0) }, pool6: RFC6052Prefix(pool6)!)
        c.staticBindings = staticBIB.compactMap { NAT64StaticBinding($0) }
        c.filtering = NAT64Filtering(rawValue: filtering) ?? .endpointIndependent
        c.timeouts.udp = UInt64(udpTimeout * 1e9)
        c.timeouts.tcpEstablished = UInt64(tcpEstablishedTimeout * 1e9)
        c.timeouts.tcpTransitory = UInt64(tcpTransitoryTimeout * 1e9)
        c.timeouts.icmp = UInt64(icmpTimeout * 1e9)
        c.maximumSessions = maxSessions
        c.maximumSessionsPerHost = maxSessionsPerHost
        c.lowestIPv6MTU = lowestIpv6Mtu
        c.ownIPv4 = IPv4Address(dataplane.icmpSource4) ?? c.ownIPv4
        c.ownIPv6 = IPv6Address(dataplane.icmpSource6) ?? c.ownIPv6
        return c
    }

    /// The pool4's addresses as prefixes (for the routes into --egress).
    static func prefixes(_ entries: [Pool4Entry]) -> [String] {
        var out: [String] = []
        for e in entries {
            var low = UInt64(e.addresses.lowerBound)
            let high = UInt64(e.addresses.upperBound)
            while low <= high {
                var length = 32
                while length > 0 {
                    let size = UInt64(1) << UInt64(33 - length)
                    guard low % size == 0, low + size - 1 <= high else { break }
                    length -= 1
                }
                out.append("\(IPv4Address(rawValue: UInt32(low)))/\(length)")
                low += UInt64(1) << UInt64(32 - length)
            }
        }
        return Array(Set(out)).sorted()
    }

    func run() async throws {
        if sessions { return try printSessions() }
        let configuration = translation
        if live, let ingress, let egress {
            for warning in configuration.warnings { FileHandle.standardError.write(Data("warning: \(warning)\n".utf8)) }
            let state = NAT64State(configuration: configuration)
            let routing: RoutingPlan? = setup
                ? .routes(intoIngress: [configuration.pool6.description], intoEgress: Self.prefixes(configuration.pool4))
                : nil
            if statusFile == nil { mkdir(Self.statusDirectory, 0o755) }
            let writer = StatusWriter(state: state, path: statusPath)
            writer.start()
            defer { writer.stop() }
            try await dataplane.run(ingress: ingress, egress: egress, routing: routing, label: "offload.nat64") { _ in
                NAT64Stage(state: state)
            }
            return
        }
        guard let input, let output else { return }
        try checkReadable(input)
        let report = try keepingWhatWasRead(of: input, kept: "their translation is in \(output)") {
            try NAT64Capture.translate(input: input, output: output, configuration: configuration,
                                       mtu4: mtu4 ?? 65_535, mtu6: mtu6 ?? 65_535)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        let t = report.translation
        var line = "\(input) -> \(output): \(report.packetsIn) packets in: \(report.forwarded) forwarded"
        line += " (\(t.toIPv6) to IPv6, \(t.toIPv4) to IPv4, \(t.superPackets) super-packets, \(t.errorsTranslated) ICMP errors"
        line += " translated, \(t.hairpinned) hairpinned, \(t.fragmentsHeld) fragments held for their first)"
        line += ", \(report.refused) refused (too big with DF, or TTL expired)"
        let drops = t.dropped.filter { $0.value > 0 }.sorted { $0.key.rawValue < $1.key.rawValue }
            .map { "\($0.value) \($0.key.rawValue.replacingOccurrences(of: "_", with: " "))" }
        line += ", dropped: " + (drops.isEmpty ? "none" : drops.joined(separator: ", "))
        line += ", \(report.malformed) malformed, \(report.notIP) not IP, \(report.snapped) cut short"
        line += "\n  \(report.written) written: \(report.packetsToOtherSide) to the other side and \(report.icmpErrors) ICMP errors back"
        print(line)
        if let state = report.state { print("state at the end of the capture:\n" + state.text, terminator: "") }
    }

    func printSessions() throws {
        let path = statusPath
        guard let data = FileManager.default.contents(atPath: path) else {
            throw InputError(message: "\(path): no status (is offload nat64 running with this --status-file? It writes its state there each second)")
        }
        let file: NAT64StatusFile
        do { file = try JSONDecoder().decode(NAT64StatusFile.self, from: data) } catch {
            throw InputError(message: "\(path): not an offload nat64 status file")
        }
        if json {
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(file.state.text, terminator: "")
        }
        if let pid = file.pid, kill(pid, 0) != 0 && errno == ESRCH {
            let age = Int(max(0, Date().timeIntervalSince1970 - (file.written ?? 0)))
            throw InputError(message: "\(path): the translator (pid \(pid)) is not running; this is its last state, \(age) s old")
        }
    }
}

/// Writes the NAT64's state to its status file each second (and ends what ran out while no packet
/// came), atomically (a new file renamed over the old), until stopped.
final class StatusWriter: Sendable {
    let state: NAT64State
    let path: String
    let stopped = Atomic<Bool>(false)
    let done = DispatchSemaphore(value: 0)

    init(state: NAT64State, path: String) {
        self.state = state
        self.path = path
    }

    func start() {
        let thread = Thread { [self] in
            while !stopped.load(ordering: .relaxed) {
                write()
                for _ in 0..<10 where !stopped.load(ordering: .relaxed) { usleep(100_000) }
            }
            write()
            done.signal()
        }
        thread.name = "offload-nat64-status"
        thread.start()
    }

    func stop() {
        stopped.store(true, ordering: .relaxed)
        done.wait()
    }

    func write() {
        let snapshot = state.snapshot(now: DispatchTime.now().uptimeNanoseconds, limit: 10_000)
        let file = NAT64StatusFile(pid: getpid(), written: Date().timeIntervalSince1970, state: snapshot)
        guard let data = try? JSONEncoder().encode(file) else { return }
        // A new file next to the status, never one that is there already (O_EXCL) nor through a
        // link (O_NOFOLLOW), then renamed over the old status.
        let temporary = path + ".new"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        let written = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == data.count else {
            unlink(temporary)
            return
        }
        _ = rename(temporary, path)
    }
}
