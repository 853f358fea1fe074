import Foundation
import OffloadForwarder
import OffloadIPsec

extension LabRunner {
    /// One row of the seed scenario (``LabSeed``): the tunnel topology with every link shaped to
    /// 1 Gbit/s, the row's gateways (strongSwan or `offload ipsec`) with one tunnel per server port,
    /// and four concurrent single-connection iperf3 downloads (`-R`: the server sends), one per port.
    func runSeedRow(scenario: LabScenario, underlayMTU: Int) throws -> LabRow {
        let c = configuration
        let topology = LabTopology(run: rowIndex)
        defer { topology.down(scratch: c.scratch) }
        var row = LabRow(
            scenario: scenario, name: scenario.name, family: 4, ingressMTU: c.ingressMTU, egressMTU: underlayMTU,
            flows: [], totalGoodputMbps: 0, jainIndex: 1, retransmits: 0, longestStallMilliseconds: 0,
            intervalSeconds: c.intervalSeconds)
        var children: [BackgroundProcess] = []
        defer { for child in children.reversed() { child.stop() } }
        let tag = "row\(rowIndex)"
        do {
            try topology.upTunnel(underlayMTU: underlayMTU, scratch: c.scratch)
            for (ns, device) in [(topology.client, "c0"), (topology.gateway, "g0"), (topology.gateway, "u0"),
                                 (topology.gateway2, "u1"), (topology.gateway2, "g1"), (topology.server, "s0")] {
                try runChecked(["ip", "netns", "exec", ns] + LabSeed.shaping(device: device), scratch: c.scratch)
            }
            // The server's gateway encrypts the downloads: its counters are the row's.
            let statsPath = "\(c.scratch)/\(tag)-gw2.json"
            var serverGateway: BackgroundProcess?
            if scenario == .seedStrongSwan {
                try startStrongSwan(topology, tag: tag, children: &children)
                row.tunnels = LabSeed.ports.count
            } else {
                let tunnels = LabSeed.offloadTunnels(single: c.seedSingleTunnel)
                row.tunnels = tunnels.count
                if c.seedSingleTunnel { row.name += ", 1 tunnel" }
                for (n, ns, view) in [(1, topology.gateway, tunnels), (2, topology.gateway2, tunnels.map(\.reversed))] {
                    let path = "\(c.scratch)/\(tag)-sa\(n).conf"
                    try SAFile.write(SAFile.render(view), to: path)
                    let f = try BackgroundProcess(
                        ["ip", "netns", "exec", ns, c.offloadExecutable, "ipsec", "--device", "ipsec0",
                         "--local", "192.168.77.\(n)", "--remote", "192.168.77.\(3 - n)", "--sa", path,
                         "--state", "\(c.scratch)/marks", "--setup", "--route", "10.77.\(3 - n).0/24",
                         "--stats-json", n == 2 ? statsPath : "\(c.scratch)/\(tag)-gw1.json",
                         "--duration", "\(Int(c.seconds) + 90)"] + scenario.forwarderArguments,
                        log: "\(c.scratch)/\(tag)-tunnel\(n).log")
                    children.append(f)
                    if n == 2 { serverGateway = f }
                    try waitFor("the tunnel's routes", timeout: 10, log: f) {
                        ((try? runChecked(["ip", "-n", ns, "route"], scratch: c.scratch)) ?? "").contains("dev ipsec0")
                    }
                }
            }
            let interval = String(format: "%.2f", c.intervalSeconds)
            for port in LabSeed.ports {
                let server = try BackgroundProcess(
                    ["ip", "netns", "exec", topology.server, "iperf3", "-s", "-1", "-J", "-i", interval, "-p", "\(port)"],
                    log: "\(c.scratch)/\(tag)-server\(port).json")
                children.append(server)
                try waitFor("the iperf3 server on port \(port)", timeout: 5, log: server) {
                    (try? runChecked(["ip", "netns", "exec", topology.server, "ss", "-Htln", "sport = :\(port)"],
                                     scratch: c.scratch))?.contains("\(port)") == true
                }
            }
            // The four downloads start together and run side by side, one connection each.
            var clients: [(port: Int, process: BackgroundProcess, report: String)] = []
            for port in LabSeed.ports {
                let report = "\(c.scratch)/\(tag)-client\(port).json"
                let client = try BackgroundProcess(
                    ["ip", "netns", "exec", topology.client, "iperf3", "-c", LabTopology.serverAddress(ipv6: false),
                     "-p", "\(port)", "-R", "-t", formatSeconds(c.seconds), "-P", "1", "-i", interval, "-J",
                     "--get-server-output", "--connect-timeout", "3000", "--logfile", report],
                    log: "\(c.scratch)/\(tag)-client\(port).log")
                children.append(client)
                clients.append((port, client, report))
            }
            var errors: [String] = []
            for (port, client, report) in clients {
                let status = try client.wait(timeout: c.seconds + 15)
                let data = (try? Data(contentsOf: URL(fileURLWithPath: report))) ?? Data()
                if let parsed = try? IperfReport(json: data, reverse: true), let flow = parsed.flows.first {
                    row.flows.append(flow)
                    row.intervalSeconds = parsed.intervalSeconds
                    if let e = parsed.error { errors.append("port \(port): iperf3: \(e)") }
                } else {
                    // A download that never ran is a flow that moved nothing, not a missing column.
                    row.flows.append(LabFlowResult(goodputMbps: 0, retransmits: 0,
                                                   longestStallMilliseconds: Int(c.seconds * 1000), timelineMbps: []))
                    errors.append("port \(port): iperf3 exited \(status.map { "\($0)" } ?? "late") without results: "
                        + (String(data: data, encoding: .utf8) ?? client.output)
                        .trimmingCharacters(in: .whitespacesAndNewlines).prefix(200))
                }
            }
            if !errors.isEmpty { row.error = errors.joined(separator: "; ") }
            // The downloads are encrypted on the server's gateway (its TUN queue) and decrypted on the client's.
            row.ingressQueueDrops = transmitDrops(device: (try? libipsecDevice(namespace: topology.gateway2)) ?? "ipsec0",
                                                  namespace: topology.gateway2, scratch: c.scratch)
            row.underlayReceiveDrops = udpReceiveBufferErrors(namespace: topology.gateway, scratch: c.scratch)
            if scenario == .seedStrongSwan {
                let listing = (try? runChecked(["ip", "netns", "exec", topology.gateway2, "swanctl", "--list-sas", "--uri",
                                                "unix://\(c.scratch)/\(tag)-sw/charon2.vici"], scratch: c.scratch)) ?? ""
                row.tunnelBytes = LabSeed.childBytesOut(listing: listing)
            }
            if let serverGateway { Self.takeCounters(of: serverGateway, named: "the server's gateway", statsPath: statsPath, into: &row) }
        } catch let error as LabError where !error.interrupted {
            row.error = error.description
        }
        row.summarize()
        return row
    }

    /// charon on both gateways, each in its own mount namespace (a private /run) with its own
    /// configuration, vici socket and log; waits until the client's gateway has all four CHILD_SAs.
    private func startStrongSwan(_ topology: LabTopology, tag: String, children: inout [BackgroundProcess]) throws {
        let c = configuration
        let dir = "\(c.scratch)/\(tag)-sw"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let psk = LabSeed.freshPSK()
        var started: [BackgroundProcess] = []
        for (n, ns) in [(2, topology.gateway2), (1, topology.gateway)] {
            let conf = "\(dir)/strongswan\(n).conf", swanctl = "\(dir)/swanctl\(n).conf"
            try LabSeed.charonConfiguration(gateway: n, directory: dir).write(toFile: conf, atomically: true, encoding: .utf8)
            // Holds the pre-shared key: 0600 from the start.
            try SAFile.write(LabSeed.swanctlConfiguration(gateway: n, psk: psk), to: swanctl)
            let charon = try BackgroundProcess(
                ["ip", "netns", "exec", ns, "sh", "-c",
                 "mount -t tmpfs none /run && STRONGSWAN_CONF=\(conf) exec \(LabSeed.charonPath)"],
                log: "\(dir)/charon\(n).out")
            started.append(charon)
            children.append(charon)
            try waitFor("charon on gateway \(n)", timeout: 10, log: charon) {
                FileManager.default.fileExists(atPath: "\(dir)/charon\(n).vici")
            }
            // charon can show its socket a moment before it answers on it.
            var loaded = false
            var output = ""
            for _ in 0..<10 where !loaded {
                let result = try runCommand(["ip", "netns", "exec", ns, "swanctl", "--load-all", "--file", swanctl,
                                             "--uri", "unix://\(dir)/charon\(n).vici"], scratch: c.scratch)
                loaded = result.status == 0
                output = result.output
                if !loaded { try pause(0.3) }
            }
            if !loaded { throw LabError("swanctl --load-all on gateway \(n) failed: \(output.suffix(300))") }
        }
        try waitFor("strongSwan's \(LabSeed.ports.count) CHILD_SAs", timeout: 20, log: started[1]) {
            let listing = (try? runChecked(["ip", "netns", "exec", topology.gateway, "swanctl", "--list-sas", "--uri",
                                            "unix://\(dir)/charon1.vici"], scratch: c.scratch)) ?? ""
            return listing.components(separatedBy: "INSTALLED").count - 1 >= LabSeed.ports.count
        }
    }

    /// The TUN device kernel-libipsec made in the namespace (`ipsec0` unless configured otherwise).
    func libipsecDevice(namespace: String) throws -> String {
        let listing = try runChecked(["ip", "-n", namespace, "-o", "link", "show", "type", "tun"], scratch: configuration.scratch)
        guard let name = listing.split(separator: "\n").first?.split(separator: ":").dropFirst().first?
            .trimmingCharacters(in: .whitespaces).split(separator: "@").first
        else { throw LabError("strongSwan made no TUN device in \(namespace)") }
        return String(name)
    }
}
