import Foundation
import OffloadForwarder
import OffloadIPsec
import OffloadReport

#if canImport(Glibc)
    import Glibc
#endif

/// What the lab runs.
public struct LabConfiguration: Sendable {
    /// The scenarios, in order.
    public var scenarios: [LabScenario] = LabScenario.allCases.filter { !$0.isSeed }
    /// The MTU of the client's link and the gateway's ingress.
    public var ingressMTU = 1500
    /// The egress MTUs to try; each scenario runs once per value.
    public var egressMTUs: [Int] = [1500, 1400]
    /// The address families (4, 6).
    public var families: [Int] = [4]
    /// Parallel TCP connections.
    public var flows = 4
    /// Seconds of traffic per row.
    public var seconds = 5.0
    /// The timeline resolution, seconds (iperf3 `-i`).
    public var intervalSeconds = 0.1
    /// The seed's `offload ipsec` rows with one tunnel for the four downloads instead of one per port
    /// (the comparison for fairness).
    public var seedSingleTunnel = false
    /// Where to save each row's captures (the gateway's two sides), or nil.
    public var captureDirectory: String?
    /// Bytes kept of each captured packet (headers are what the doctor reads).
    public var captureSnapLength = 200
    /// The `offload` executable that runs `offload forward` on the gateway.
    public var offloadExecutable: String
    /// A directory for logs and counters while the lab runs.
    public var scratch: String

    /// A configuration with the defaults.
    public init(offloadExecutable: String, scratch: String) {
        self.offloadExecutable = offloadExecutable
        self.scratch = scratch
    }

    /// How many rows it will produce (translator rows run once per MTU).
    public var rowCount: Int {
        let translators = scenarios.filter(\.runsOnce).count
        return (scenarios.count - translators) * egressMTUs.count * families.count + translators * egressMTUs.count
    }
}

/// Runs the lab: one fresh topology per row, torn down after the row whatever happens.
public final class LabRunner {
    let configuration: LabConfiguration
    let progress: (String) -> Void
    var rowIndex = 0

    /// Creates a runner; `progress` receives one line per step.
    public init(_ configuration: LabConfiguration, progress: @escaping (String) -> Void = { _ in }) {
        self.configuration = configuration
        self.progress = progress
    }

    /// What is missing on this machine for the lab to run, or nil.
    public static func missingPrerequisites(capture: Bool) -> String? {
        if getuid() != 0 { return "offload lab needs root: it creates network namespaces and TUN devices (run it with sudo)" }
        if access("/dev/net/tun", R_OK | W_OK) != 0 { return "offload lab needs /dev/net/tun (modprobe tun)" }
        for tool in ["ip", "iperf3"] + (capture ? ["tcpdump"] : []) where !isInstalled(tool) {
            let package = tool == "ip" ? "iproute2" : tool
            return "offload lab needs \(tool): apt-get install -y \(package)"
        }
        return nil
    }

    /// Runs every row. A row that fails to measure is kept with its error; a Ctrl-C stops the
    /// lab (the current row's topology is removed first) and throws.
    public func run() throws -> [LabRow] {
        if !isInstalled("ethtool") {
            progress("warning: ethtool is not installed (apt-get install ethtool): GRO and segmentation offloads keep "
                + "the veths' defaults, so rows 1 and 2 are the same and the forwarder may see super-packets")
        }
        let removed = LabTopology.removeStale(scratch: configuration.scratch)
        if !removed.isEmpty { progress("removed \(removed.count) namespaces left by an earlier lab run") }
        var rows: [LabRow] = []
        for family in configuration.families {
            for mtu in configuration.egressMTUs {
                for scenario in configuration.scenarios {
                    // A translator row is IPv6 client -> IPv4 server whatever the family: run it once.
                    if scenario.runsOnce && family != configuration.families[0] { continue }
                    if (scenario == .tayga || scenario == .taygaNAT44) && !isInstalled("tayga") {
                        progress("skipped scenario \(scenario.rawValue): tayga is not installed (apt-get install tayga)")
                        continue
                    }
                    if scenario == .taygaNAT44 && !isInstalled("nft") {
                        progress("skipped scenario 19: nft is not installed (apt-get install nftables)")
                        continue
                    }
                    if scenario == .seedStrongSwan && !LabSeed.strongSwanInstalled {
                        progress("skipped scenario 15: strongSwan's charon with kernel-libipsec is not installed "
                            + "(apt-get install strongswan-charon strongswan-swanctl libcharon-extra-plugins)")
                        continue
                    }
                    let family = scenario.isTranslator ? 6 : scenario.isTunnel ? 4 : family
                    rowIndex += 1
                    progress("[\(rowIndex)/\(configuration.rowCount)] \(scenario.rawValue) \(scenario.name), IPv\(family), "
                        + "MTU \(configuration.ingressMTU) -> \(mtu), \(scenario.isSeed ? LabSeed.ports.count : configuration.flows) flows, "
                        + "\(formatSeconds(configuration.seconds)) s each")
                    let row = scenario.isSeed ? try runSeedRow(scenario: scenario, underlayMTU: mtu)
                        : try runRow(scenario: scenario, family: family, egressMTU: mtu)
                    progress("    " + (row.error.map { "not measured: \($0)" }
                        ?? String(format: "%.0f Mbit/s, Jain %.2f, longest stall %d ms", row.totalGoodputMbps,
                                  row.jainIndex, row.longestStallMilliseconds)))
                    rows.append(row)
                }
            }
        }
        return rows
    }

    /// The `offload ipsec` arguments of both gateways: SA files (mode 0600) with keys made for this
    /// row (AES-GCM-128, one tunnel each way); the high-water marks go to the scratch directory's
    /// store (keys made for one row need no marks on the machine's own).
    func ipsecSAFiles(tag: String) throws -> [[String]] {
        let tunnel = SAFile.freshTunnel(name: "lab", algorithm: .aesGCM128, local: [TrafficSelector("10.77.1.0/24")!],
                                        remote: [TrafficSelector("10.77.2.0/24")!])
        var arguments: [[String]] = []
        for (n, view) in [(1, tunnel), (2, tunnel.reversed)] {
            let path = "\(configuration.scratch)/\(tag)-sa\(n).conf"
            try SAFile.write(SAFile.render([view]), to: path)
            arguments.append(["--sa", path, "--state", "\(configuration.scratch)/marks"])
        }
        return arguments
    }

    private func runRow(scenario: LabScenario, family: Int, egressMTU: Int) throws -> LabRow {
        let c = configuration
        let topology = LabTopology(run: rowIndex)
        defer { topology.down(scratch: c.scratch) }
        var row = LabRow(
            scenario: scenario, name: scenario.name, family: family, ingressMTU: c.ingressMTU, egressMTU: egressMTU,
            flows: [], totalGoodputMbps: 0, jainIndex: 1, retransmits: 0, longestStallMilliseconds: 0,
            intervalSeconds: c.intervalSeconds)
        var children: [BackgroundProcess] = []
        defer { for child in children.reversed() { child.stop() } }
        do {
            // The translators get the kernel's GRO on the gateway's ingress: what they are built for
            // (super-packets arrive whole); Tayga's TUN has no offloads, so the kernel segments for it.
            if scenario.isTunnel {
                try topology.upTunnel(underlayMTU: egressMTU, scratch: c.scratch)
            } else {
                try topology.up(egressMTU: egressMTU, gatewayGRO: scenario == .kernelGRO || scenario.isTranslator,
                                translator: scenario.isTranslator, scratch: c.scratch)
            }
            let tag = "row\(rowIndex)"
            let statsPath = "\(c.scratch)/\(tag)-forwarder.json"
            var forwarder: BackgroundProcess?
            if scenario.usesForwarder {
                let f = try BackgroundProcess(
                    ["ip", "netns", "exec", topology.gateway, c.offloadExecutable, "forward", "--ingress", "ofw0",
                     "--egress", "ofw1", "--setup", "--lan", "g0", "--wan", "g1", "--egress-mtu", "\(egressMTU)",
                     "--stats-json", statsPath, "--duration", "\(Int(c.seconds) + 90)"] + scenario.forwarderArguments,
                    log: "\(c.scratch)/\(tag)-forwarder.log")
                children.append(f)
                forwarder = f
                try waitFor("the forwarder's routing", timeout: 10, log: f) {
                    RoutingSetup.isApplied(ruleListing: (try? runChecked(["ip", "-n", topology.gateway, "rule"], scratch: c.scratch)) ?? "")
                }
            }
            if scenario.usesTranslator {
                let f = try BackgroundProcess(
                    ["ip", "netns", "exec", topology.gateway, c.offloadExecutable, "siit", "--ingress", "siit6",
                     "--egress", "siit4", "--pool6", LabTopology.translatorPool6, "--eam",
                     "fd77:1::/120=\(LabTopology.clientIPv4Prefix)", "--setup", "--route4", LabTopology.clientIPv4Prefix,
                     "--egress-mtu", "\(egressMTU)", "--stats-json", statsPath, "--duration", "\(Int(c.seconds) + 90)"]
                        + scenario.forwarderArguments,
                    log: "\(c.scratch)/\(tag)-translator.log")
                children.append(f)
                forwarder = f
                try waitFor("the translator's routes", timeout: 10, log: f) {
                    ((try? runChecked(["ip", "-n", topology.gateway, "-4", "route"], scratch: c.scratch)) ?? "")
                        .contains("\(LabTopology.clientIPv4Prefix) dev siit4")
                }
            } else if scenario.usesNAT64 {
                let f = try BackgroundProcess(
                    ["ip", "netns", "exec", topology.gateway, c.offloadExecutable, "nat64", "--ingress", "nat64-6",
                     "--egress", "nat64-4", "--pool6", LabTopology.translatorPool6, "--pool4", LabTopology.nat64Pool4,
                     "--setup", "--egress-mtu", "\(egressMTU)", "--stats-json", statsPath,
                     "--status-file", "\(c.scratch)/\(tag)-nat64.status", "--duration", "\(Int(c.seconds) + 90)"]
                        + scenario.forwarderArguments,
                    log: "\(c.scratch)/\(tag)-translator.log")
                children.append(f)
                forwarder = f
                try waitFor("the translator's routes", timeout: 10, log: f) {
                    ((try? runChecked(["ip", "-n", topology.gateway, "-4", "route"], scratch: c.scratch)) ?? "")
                        .contains("\(LabTopology.nat64Pool4) dev nat64-4")
                }
            } else if scenario == .tayga {
                children.append(try startTayga(topology, tag: tag))
            } else if scenario == .taygaNAT44 {
                children.append(try startTayga(topology, tag: tag, nat44: true))
            } else if scenario == .kernelVXLAN {
                try startKernelVXLAN(topology)
            } else if scenario.isTunnel {
                let device = scenario.isIPsec ? "ipsec0" : "gtp0"
                let protocolArguments = scenario.isIPsec ? try ipsecSAFiles(tag: tag) : [["--id", "7"], ["--id", "7"]]
                for (n, ns) in [(1, topology.gateway), (2, topology.gateway2)] {
                    let f = try BackgroundProcess(
                        ["ip", "netns", "exec", ns, c.offloadExecutable, scenario.isIPsec ? "ipsec" : "tunnel", "--device", device,
                         "--local", "192.168.77.\(n)", "--remote", "192.168.77.\(3 - n)"] + protocolArguments[n - 1]
                            + ["--setup", "--route", "10.77.\(3 - n).0/24", "--stats-json", n == 1 ? statsPath : "\(statsPath).gw2",
                               "--duration", "\(Int(c.seconds) + 90)"] + scenario.forwarderArguments,
                        log: "\(c.scratch)/\(tag)-tunnel\(n).log")
                    children.append(f)
                    if n == 1 { forwarder = f }
                    try waitFor("the tunnel's routes", timeout: 10, log: f) {
                        ((try? runChecked(["ip", "-n", ns, "route"], scratch: c.scratch)) ?? "").contains("dev \(device)")
                    }
                }
            }
            var dumps: [BackgroundProcess] = []
            if let dir = c.captureDirectory, !scenario.isTunnel {
                let slug = "\(scenario.rawValue)-v\(family)-mtu\(egressMTU)"
                let wan = scenario.usesForwarder ? "ofw1" : scenario.usesTranslator ? "siit4" : scenario.usesNAT64 ? "nat64-4"
                    : scenario == .tayga || scenario == .taygaNAT44 ? "tayga0" : "g1"
                let sides = [("lan", "g0"), ("wan", wan)]
                row.captures = []
                for (side, device) in sides {
                    let file = "\(dir)/scenario\(slug)-\(side)-\(device).pcap"
                    let dump = try BackgroundProcess(
                        ["ip", "netns", "exec", topology.gateway, "tcpdump", "-i", device, "-s", "\(c.captureSnapLength)",
                         "-B", "16384", "-n", "-w", file, "tcp or icmp or icmp6"], log: "\(c.scratch)/\(tag)-\(side)-tcpdump.log")
                    children.append(dump)
                    dumps.append(dump)
                    row.captures?.append(file)
                    try waitFor("tcpdump on \(device)", timeout: 5, log: dump) { dump.output.contains("listening on") }
                }
            }
            let interval = String(format: "%.2f", c.intervalSeconds)
            let server = try BackgroundProcess(
                ["ip", "netns", "exec", topology.server, "iperf3", "-s", "-1", "-J", "-i", interval, "-p", "5201"],
                log: "\(c.scratch)/\(tag)-server.json")
            children.append(server)
            try waitFor("the iperf3 server", timeout: 5, log: server) {
                (try? runChecked(["ip", "netns", "exec", topology.server, "ss", "-Htln", "sport = :5201"],
                                 scratch: c.scratch))?.contains("5201") == true
            }
            let report = "\(c.scratch)/\(tag)-client.json"
            let address = scenario.isTranslator ? LabTopology.serverSeenFromIPv6 : LabTopology.serverAddress(ipv6: family == 6)
            let (status, output) = try runCommand(
                ["ip", "netns", "exec", topology.client, "iperf3", "-c", address, "-p", "5201", "-t", formatSeconds(c.seconds),
                 "-P", "\(c.flows)", "-i", interval, "-J", "--get-server-output", "--connect-timeout", "3000",
                 "--logfile", report],
                timeout: c.seconds + 15, scratch: c.scratch)
            if scenario.usesForwarder || scenario.usesTranslator || scenario.usesNAT64 {
                row.ingressQueueDrops = transmitDrops(device: scenario.usesForwarder ? "ofw0" : scenario.usesNAT64 ? "nat64-6" : "siit6",
                                                      namespace: topology.gateway, scratch: c.scratch)
            } else if scenario.isTunnel && scenario != .kernelVXLAN {
                // The uploads are encrypted on the client's gateway and decrypted on the server's.
                row.ingressQueueDrops = transmitDrops(device: scenario.isIPsec ? "ipsec0" : "gtp0",
                                                      namespace: topology.gateway, scratch: c.scratch)
                row.underlayReceiveDrops = udpReceiveBufferErrors(namespace: topology.gateway2, scratch: c.scratch)
            }
            // Captures end before the forwarder does: its devices vanish with it.
            // tcpdump prints what it lost only when it exits by itself: give it time to drain its
            // buffer. A capture killed before its counts makes the loss unknown (nil), not zero.
            for dump in dumps { dump.stop(grace: 15) }
            if !dumps.isEmpty {
                let counts = dumps.map { Self.captureDrops(in: $0.output) }
                row.captureDrops = counts.contains(nil) ? nil : counts.reduce(0) { $0 + ($1 ?? 0) }
            }
            let data = (try? Data(contentsOf: URL(fileURLWithPath: report))) ?? Data()
            if let parsed = try? IperfReport(json: data), !parsed.flows.isEmpty {
                row.flows = parsed.flows
                row.intervalSeconds = parsed.intervalSeconds
                if let e = parsed.error { row.error = "iperf3: \(e)" }
            } else {
                row.error = "iperf3 exited \(status) without results: "
                    + (String(data: data, encoding: .utf8) ?? output).trimmingCharacters(in: .whitespacesAndNewlines).prefix(300)
            }
            if let forwarder { Self.takeCounters(of: forwarder, named: "the forwarder", statsPath: statsPath, into: &row) }
        } catch let error as LabError where !error.interrupted {
            row.error = error.description
        }
        row.summarize()
        return row
    }

    /// Stops the gateway process whose counters the row reports (the one that encrypts or
    /// forwards what the clients receive) and takes its merges, ICMP errors and drops.
    static func takeCounters(of process: BackgroundProcess, named name: String, statsPath: String, into row: inout LabRow) {
        process.stop(grace: 5)
        if let data = try? Data(contentsOf: URL(fileURLWithPath: statsPath)),
            let stats = try? JSONDecoder().decode([String: ForwarderStatistics].self, from: data),
            let out = stats[Direction.lanToWan.label]
        {
            row.segmentsPerSuperPacket = out.meanSegmentsPerSuperPacket
            row.icmpSent = out.icmpSent
            row.forwarderDropped = out.dropped + out.writeErrors
        } else {
            row.error = row.error ?? "\(name) left no counters: \(process.output.suffix(300))"
        }
    }

    /// Starts Tayga on the gateway: its TUN device `tayga0`, the translator rows' prefix, a static
    /// map for the client, and the routes for both families into it.
    /// Tayga on the gateway: a static map for the client (SIIT), or with `nat44` a dynamic pool
    /// (each new IPv6 source gets an address of 192.168.255.0/24) masqueraded by the kernel's NAT44
    /// out of the IPv4 side: the usual stateful NAT64 on Debian without Jool.
    private func startTayga(_ topology: LabTopology, tag: String, nat44: Bool = false) throws -> BackgroundProcess {
        let c = configuration
        let dir = "\(c.scratch)/\(tag)-tayga"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let conf = "\(dir)/tayga.conf"
        let pool4 = nat44 ? "192.168.255.0/24" : LabTopology.clientIPv4Prefix
        let text = ["tun-device tayga0", nat44 ? "ipv4-addr 192.168.255.1" : "ipv4-addr 198.18.1.254",
                    "prefix \(LabTopology.translatorPool6)",
                    nat44 ? "dynamic-pool 192.168.255.0/24" : "map 198.18.1.2 fd77:1::2", "data-dir \(dir)", ""]
            .joined(separator: "\n")
        try text.write(toFile: conf, atomically: true, encoding: .utf8)
        try runChecked(["ip", "netns", "exec", topology.gateway, "tayga", "-c", conf, "--mktun"], scratch: c.scratch)
        for command in [["link", "set", "tayga0", "up"], ["route", "add", pool4, "dev", "tayga0"],
                        ["-6", "route", "add", LabTopology.translatorPool6, "dev", "tayga0"]] {
            try runChecked(["ip", "-n", topology.gateway] + command, scratch: c.scratch)
        }
        if nat44 {
            let rules = "table ip olabnat {\n  chain post {\n    type nat hook postrouting priority 100;\n"
                + "    ip saddr 192.168.255.0/24 oifname \"g1\" masquerade\n  }\n}\n"
            let file = "\(dir)/nat44.nft"
            try rules.write(toFile: file, atomically: true, encoding: .utf8)
            try runChecked(["ip", "netns", "exec", topology.gateway, "nft", "-f", file], scratch: c.scratch)
        }
        let tayga = try BackgroundProcess(["ip", "netns", "exec", topology.gateway, "tayga", "-c", conf, "--nodetach"],
                                          log: "\(c.scratch)/\(tag)-tayga.log")
        Thread.sleep(forTimeInterval: 0.5)
        return tayga
    }

    /// The kernel's VXLAN device on both gateways (VNI 7, port 4789), a /30 inside it, and a route
    /// to the far side through it; its MTU follows the underlay's (less 50).
    private func startKernelVXLAN(_ topology: LabTopology) throws {
        let c = configuration
        for (n, ns) in [(1, topology.gateway), (2, topology.gateway2)] {
            for command in [["link", "add", "vx0", "type", "vxlan", "id", "7", "local", "192.168.77.\(n)", "remote",
                             "192.168.77.\(3 - n)", "dstport", "4789", "dev", "u\(n - 1)"],
                            ["addr", "add", "172.31.0.\(n)/30", "dev", "vx0"], ["link", "set", "vx0", "up"],
                            ["route", "add", "10.77.\(3 - n).0/24", "via", "172.31.0.\(3 - n)", "dev", "vx0"]] {
                try runChecked(["ip", "-n", ns] + command, scratch: c.scratch)
            }
        }
    }

    /// What tcpdump said it lost at its close: "N packets dropped by kernel" (its buffer) plus
    /// "M packets dropped by interface" (the device's own count, when it keeps one); nil when it
    /// printed neither.
    public static func captureDrops(in tcpdumpOutput: String) -> Int? {
        var total: Int?
        for line in tcpdumpOutput.split(separator: "\n")
        where line.hasSuffix("packets dropped by kernel") || line.hasSuffix("packets dropped by interface") {
            if let n = Int(line.split(separator: " ").first ?? "") { total = (total ?? 0) + n }
        }
        return total
    }

    /// A device's transmit drops (`ip -s link`): for a TUN device, packets the kernel could not queue
    /// for its reader.
    func transmitDrops(device: String, namespace: String, scratch: String) -> Int? {
        guard let text = try? runChecked(["ip", "-n", namespace, "-j", "-s", "link", "show", "dev", device], scratch: scratch),
            let links = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]],
            let stats = links.first?["stats64"] as? [String: Any], let tx = stats["tx"] as? [String: Any]
        else { return nil }
        return tx["dropped"] as? Int
    }

    /// The namespace's UDP datagrams dropped for a full receive buffer so far (`Udp: … RcvbufErrors`
    /// in `/proc/net/snmp`), or nil when it cannot be read.
    func udpReceiveBufferErrors(namespace: String, scratch: String) -> Int? {
        guard let text = try? runChecked(["ip", "netns", "exec", namespace, "cat", "/proc/net/snmp"], scratch: scratch) else {
            return nil
        }
        let lines = text.split(separator: "\n").filter { $0.hasPrefix("Udp: ") }.map { $0.split(separator: " ") }
        guard lines.count >= 2, let column = lines[0].firstIndex(of: "RcvbufErrors"), column < lines[1].count else { return nil }
        return Int(lines[1][column])
    }

    func waitFor(_ what: String, timeout: Double, log: BackgroundProcess, _ ready: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !ready() {
            if !log.isRunning {
                throw LabError("\(what) did not start: \(log.output.trimmingCharacters(in: .whitespacesAndNewlines).suffix(400))")
            }
            if Date() > deadline { throw LabError("\(what) not ready after \(Int(timeout)) s") }
            try pause(0.05)
        }
    }
}

func formatSeconds(_ s: Double) -> String {
    s == s.rounded() ? "\(Int(s))" : String(format: "%.1f", s)
}
