import ArgumentParser
import Foundation
import OffloadLab
import OffloadReport

#if canImport(Glibc)
    import Glibc
#endif

struct Lab: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reproduce GRO's forwarding failure and its fix with real TCP, side by side (root).",
        discussion: """
            Builds client, gateway and server network namespaces (named olab<pid>..., removed after each row, \
            even on Ctrl-C), and sends --flows parallel iperf3 TCP connections from client to server through the \
            gateway for each scenario:
              1  kernel forwarding, GRO off on the gateway (the usual "turn offloads off" advice)
              2  kernel forwarding, GRO on
              3  offload forward, offloads off (no virtio headers: no GRO, no GSO)
              4  offload forward, GRO + GSO
              5  offload forward --mode lro (the greedy merge that black-holes)
              6  Tayga translating an IPv6-only client to an IPv4-only server (when installed)
              7  offload siit, offloads off, the same client and server
              8  offload siit, GRO + GSO
              9  the kernel's VXLAN tunnel between two gateways over an underlay (IPv4)
              10 offload tunnel (GTP-U) on both gateways, offloads off
              11 offload tunnel (GTP-U), GRO + GSO (UDP_SEGMENT, UDP_GRO)
              12 offload forward, GRO + GSO, with the kernel's GRO on the gateway's ingress (as --setup leaves it)
              13 offload ipsec (ESP in UDP, AES-GCM-128) on both gateways, offloads off
              14 offload ipsec, GRO + GSO
            The seed scenario (--scenario seed, 10 s per row): four ESP tunnels between two gateways, one per server \
            port (selectors 10.77.2.2/32[tcp/5201] ... [tcp/5204]), one TCP download each, every link shaped to \
            1 Gbit/s (tc tbf):
              15 strongSwan's charon with kernel-libipsec on both gateways (four CHILD_SAs; when installed)
              16 offload ipsec, offloads off
              17 offload ipsec, GRO + GSO
              18 offload ipsec --mode lro (the greedy merge the seed suffered: no segment size kept)
            The stateful NAT64 rows (--scenario nat64: rows 2, 19, 20, 21), an IPv6-only client to an IPv4-only \
            server through one shared IPv4 address:
              19 Tayga with a dynamic pool and the kernel's NAT44 (nft masquerade) behind it (when installed)
              20 offload nat64, offloads off
              21 offload nat64, GRO + GSO
            each with the gateway's egress MTU (the tunnel rows: the underlay's MTU) equal to the ingress MTU and smaller (--egress-mtu, a tunnel's \
            overhead; the senders set DF, as Linux does). The table shows per-flow goodput, Jain's fairness \
            index, retransmissions, the longest stall (no data for whole --interval periods) and the forwarder's \
            mean segments per super-packet; an explanation follows it.

            Needs root, /dev/net/tun, iproute2 and iperf3 (and tcpdump for --capture).

            Examples:
              sudo offload lab                                   # all scenarios, IPv4, 5 s each (about 5 minutes)
              sudo offload lab --scenarios 3,4,5 --seconds 2 --json
              sudo offload lab --family both --report lab.html --capture lab-captures/
              sudo offload lab --scenario seed --report seed.html      # rows 15-18, 10 s each
              sudo offload lab --scenario nat64 --mtus equal           # rows 2, 19, 20, 21
            """)

    @Option(help: ArgumentHelp("Scenarios to run, comma-separated (1-21; default: 1-14).", valueName: "list"))
    var scenarios: String?
    @Option(help: "A named set of scenarios instead of --scenarios: seed (rows 15-18, equal MTUs, 10 s each unless --seconds says otherwise), or nat64 (rows 2, 19-21).")
    var scenario: ScenarioSet?
    @Option(help: "The smaller egress MTU (a tunnel's).")
    var egressMtu = 1400
    @Option(help: "Which egress MTUs: both, equal (1500) or smaller (--egress-mtu) (default: both; equal for --scenario seed).")
    var mtus: MTUCases?
    @Option(help: "Address family: 4, 6 or both.")
    var family: FamilyOption = .v4
    @Option(help: "Parallel TCP connections per row.")
    var flows = 4
    @Option(help: "Seconds of traffic per row (default 5; 10 for --scenario seed).")
    var seconds: Double?
    @Option(help: "Timeline resolution in seconds (stalls are counted in whole intervals).")
    var interval = 0.1
    @Flag(help: "Print the table as JSON instead of text.")
    var json = false
    @Option(help: ArgumentHelp("Also write an HTML page with the table and goodput-over-time charts.", valueName: "file.html"))
    var report: String?
    @Option(help: ArgumentHelp("Save each row's captures at the gateway's two sides here (tcpdump, headers only).",
                               valueName: "directory"))
    var capture: String?
    @Flag(help: ArgumentHelp("Keep the logs and iperf3 reports (the path is printed).", visibility: .hidden))
    var keepLogs = false
    @Flag(help: ArgumentHelp("The seed's offload ipsec rows with one tunnel for all four downloads (a comparison).",
                             visibility: .hidden))
    var seedOneTunnel = false

    enum MTUCases: String, ExpressibleByArgument, CaseIterable { case both, equal, smaller }
    enum ScenarioSet: String, ExpressibleByArgument, CaseIterable { case seed, nat64 }

    /// The default rows: every scenario but the seed's.
    static let defaultScenarios = "1,2,3,4,5,12,6,7,8,9,10,11,13,14"

    /// Seconds per row: --seconds, else 10 for the seed, else 5.
    var secondsPerRow: Double { seconds ?? (scenario == .seed ? LabSeed.defaultSeconds : 5) }
    enum FamilyOption: String, ExpressibleByArgument, CaseIterable {
        case v4 = "4", v6 = "6", both
    }

    var parsedScenarios: [LabScenario] {
        get throws {
            if scenario == .seed {
                guard scenarios == nil else { throw ValidationError("give --scenario or --scenarios, not both") }
                return LabScenario.seed
            }
            if scenario == .nat64 {
                guard scenarios == nil else { throw ValidationError("give --scenario or --scenarios, not both") }
                return LabScenario.nat64
            }
            let parts = (scenarios ?? Self.defaultScenarios).split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            let list = try parts.map { part -> LabScenario in
                guard let n = Int(part), let s = LabScenario(rawValue: n) else {
                    throw ValidationError("--scenarios: '\(part)' is not a scenario number 1-21")
                }
                return s
            }
            guard !list.isEmpty else { throw ValidationError("--scenarios: give at least one") }
            return list
        }
    }

    func validate() throws {
        _ = try parsedScenarios
        guard (2...64).contains(flows) || flows == 1 else { throw ValidationError("--flows must be 1...64") }
        guard secondsPerRow >= 1 && secondsPerRow <= 600 else { throw ValidationError("--seconds must be 1...600") }
        guard interval >= 0.05 && interval <= 1 else { throw ValidationError("--interval must be 0.05...1") }
        guard (1280...1500).contains(egressMtu) else {
            throw ValidationError("--egress-mtu must be 1280...1500 (IPv6's minimum up to the veths' 1500)")
        }
    }

    func run() throws {
        if let problem = LabRunner.missingPrerequisites(capture: capture != nil) {
            throw InputError(message: problem)
        }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("offload-lab-\(getpid())").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer {
            if keepLogs { FileHandle.standardError.write(Data("lab: logs kept in \(scratch)\n".utf8)) }
            else { try? FileManager.default.removeItem(atPath: scratch) }
        }
        if let capture {
            do { try FileManager.default.createDirectory(atPath: capture, withIntermediateDirectories: true) } catch {
                throw InputError(message: "--capture: cannot create \(capture): \(error.localizedDescription)")
            }
        }
        var configuration = LabConfiguration(offloadExecutable: try ownExecutable(), scratch: scratch)
        configuration.scenarios = try parsedScenarios
        configuration.egressMTUs = switch mtus ?? (scenario == .seed ? .equal : .both) {
        case .both: [1500, egressMtu]
        case .equal: [1500]
        case .smaller: [egressMtu]
        }
        configuration.families = switch family {
        case .v4: [4]
        case .v6: [6]
        case .both: [4, 6]
        }
        configuration.flows = flows
        configuration.seedSingleTunnel = seedOneTunnel
        configuration.seconds = secondsPerRow
        configuration.intervalSeconds = interval
        configuration.captureDirectory = capture.map { URL(fileURLWithPath: $0).standardizedFileURL.path }

        signal(SIGINT) { _ in labInterruptFlag.store(true, ordering: .relaxed) }
        signal(SIGTERM) { _ in labInterruptFlag.store(true, ordering: .relaxed) }
        let started = Date()
        let runner = LabRunner(configuration) { line in FileHandle.standardError.write(Data("lab: \(line)\n".utf8)) }
        let rows: [LabRow]
        do {
            rows = try runner.run()
        } catch let error as LabError where error.interrupted {
            FileHandle.standardError.write(Data("lab: interrupted; namespaces removed\n".utf8))
            Foundation.exit(130)
        }
        FileHandle.standardError.write(Data(String(format: "lab: done in %.0f s\n", Date().timeIntervalSince(started)).utf8))
        if json {
            FileHandle.standardOutput.write(try LabPresentation.json(rows, configuration: configuration))
            print()
        } else {
            print("offload lab (\(OffloadVersion.banner))")
            print(LabPresentation.table(rows))
            print(LabPresentation.explanation(rows))
        }
        if let report {
            do {
                try LabPresentation.html(rows, configuration: configuration)
                    .write(toFile: report, atomically: true, encoding: .utf8)
            } catch {
                throw InputError(message: "--report: cannot write \(report): \(error.localizedDescription)")
            }
            FileHandle.standardError.write(Data("lab: report written to \(report)\n".utf8))
        }
        if let capture {
            FileHandle.standardError.write(Data("lab: captures in \(capture) (try: offload doctor <lan> <wan>)\n".utf8))
        }
    }
}

/// The path of this executable, for starting `offload forward` inside a namespace.
func ownExecutable() throws -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard n > 0 else { throw InputError(message: "cannot find this executable's path (/proc/self/exe)") }
    return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
