import Foundation
import OffloadLab
import OffloadTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Why `offload lab` cannot run here, or nil.
func labUnavailable() -> String? {
    if let problem = LabRunner.missingPrerequisites(capture: false) { return problem }
    if shell("ip netns add olab-probe-\(getpid()) && ip netns del olab-probe-\(getpid())").status != 0 {
        return "cannot create network namespaces"
    }
    if builtExecutable(named: "offload") == nil { return "the offload executable was not built" }
    return nil
}

/// The namespaces of the lab run with process id `pid` that exist now.
func labNamespaces(of pid: String) -> [String] {
    shell("ip netns list").output.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
        .filter { $0.hasPrefix("olab\(pid)s") }
}

/// The `pid=N` line a test's shell printed.
func labPID(_ output: String) -> String {
    output.split(separator: "\n").last { $0.hasPrefix("pid=") }.map { String($0.dropFirst(4)) } ?? "unknown"
}

/// Runs `offload lab ARGUMENTS --json`, checks it exited 0 and prints its table; its rows and pid.
func runLab(_ arguments: String) throws -> (rows: [LabRow], pid: String) {
    let offload = builtExecutable(named: "offload")!
    let json = FileManager.default.temporaryDirectory.appendingPathComponent("lab-\(getpid())-\(UUID().uuidString).json").path
    defer { try? FileManager.default.removeItem(atPath: json) }
    let (status, output) = shell("\(offload) lab \(arguments) --json > \(json) & pid=$!; wait $pid; s=$?; echo pid=$pid; exit $s",
                                 timeout: 300)
    #expect(status == 0, "\(output)")
    struct Document: Decodable { var rows: [LabRow] }
    let rows = try JSONDecoder().decode(Document.self, from: Data(contentsOf: URL(fileURLWithPath: json))).rows
    print(LabPresentation.table(rows))
    return (rows, labPID(output))
}

@Suite("offload lab end to end (root)", .serialized)
struct LabNetnsTests {
    @Test("short mode: every row measured, GRO+GSO merges and every flow moves; LRO behind a smaller MTU is refused with ICMP errors; nothing is left behind",
          .enabled(if: labUnavailable() == nil, "\(labUnavailable() ?? "")"))
    func shortRun() throws { try exclusiveNetwork { try shortRunBody() } }
    func shortRunBody() throws {
        let (rows, pid) = try runLab("--scenarios 3,4,5 --seconds 2")
        #expect(rows.count == 6)
        func find(_ s: LabScenario, _ mtu: Int) throws -> LabRow {
            try #require(rows.first { $0.scenario == s && $0.egressMTU == mtu }, "row \(s) \(mtu)")
        }
        for mtu in [1500, 1400] {
            let gro = try find(.forwarderGRO, mtu), off = try find(.forwarderOffloadsOff, mtu)
            #expect(gro.error == nil && off.error == nil, "\(gro.error ?? "") \(off.error ?? "")")
            // Behaviour, not speed (fairness and the goodput ratios are the lab's and the benchmarks' to show).
            #expect(gro.flows.count == 4 && gro.flows.allSatisfy { $0.goodputMbps > 0 }, "every flow moved: \(gro.flows.map(\.goodputMbps))")
            #expect((gro.segmentsPerSuperPacket ?? 0) >= 8)
        }
        let lro = try find(.forwarderLRO, 1400)
        // The merge it cannot undo is refused again and again: ICMP errors the sender cannot act on.
        #expect((lro.icmpSent ?? 0) > 10)
        #expect(try find(.forwarderGRO, 1400).icmpSent ?? 0 > 0, "path MTU discovery happened")
        #expect(labNamespaces(of: pid).isEmpty, "left behind: \(labNamespaces(of: pid))")
    }

    @Test("the ESP rows (13, 14): every flow moves through offload ipsec on both gateways, GRO+GSO merges, nothing is left behind",
          .enabled(if: labUnavailable() == nil, "\(labUnavailable() ?? "")"))
    func ipsecRows() throws { try exclusiveNetwork { try ipsecRowsBody() } }
    func ipsecRowsBody() throws {
        let (rows, pid) = try runLab("--scenarios 13,14 --mtus equal --seconds 2")
        #expect(rows.map(\.scenario) == [.ipsecOffloadsOff, .ipsecGRO])
        for row in rows {
            #expect(row.error == nil, "\(row.error ?? "")")
            #expect(row.flows.count == 4 && row.flows.allSatisfy { $0.goodputMbps > 0 }, "row \(row.scenario): \(row.flows.map(\.goodputMbps))")
        }
        #expect((rows.last?.segmentsPerSuperPacket ?? 0) >= 4, "the ESP gateway merges")
        #expect(labNamespaces(of: pid).isEmpty, "left behind: \(labNamespaces(of: pid))")
    }

    @Test("the stateful NAT64 rows (19-21): the IPv6-only client's flows reach the IPv4-only server through offload nat64 (offloads off, and GRO+GSO, which merges) and through Tayga with the kernel's NAT44; nothing is left behind",
          .enabled(if: labUnavailable() == nil, "\(labUnavailable() ?? "")"))
    func nat64Rows() throws { try exclusiveNetwork { try nat64RowsBody() } }
    func nat64RowsBody() throws {
        let (rows, pid) = try runLab("--scenarios 19,20,21 --mtus equal --seconds 2")
        let expected: [LabScenario] = installed("tayga") && installed("nft") ? [.taygaNAT44, .nat64OffloadsOff, .nat64GRO]
            : [.nat64OffloadsOff, .nat64GRO]
        #expect(rows.map(\.scenario) == expected)
        for row in rows {
            #expect(row.error == nil, "row \(row.scenario.rawValue): \(row.error ?? "")")
            #expect(row.family == 6)
            #expect(row.flows.count == 4 && row.flows.allSatisfy { $0.goodputMbps > 0 }, "row \(row.scenario.rawValue): \(row.flows.map(\.goodputMbps))")
        }
        let gro = try #require(rows.first { $0.scenario == .nat64GRO })
        #expect((gro.segmentsPerSuperPacket ?? 0) > 1, "super-packets were translated whole: \(gro.segmentsPerSuperPacket ?? 0)")
        #expect(labNamespaces(of: pid).isEmpty)
    }

    @Test("the seed scenario (15-18), briefly: strongSwan's four CHILD_SAs and offload ipsec's tunnels each carry a download, nothing is left behind",
          .enabled(if: labUnavailable() == nil && LabSeed.strongSwanInstalled && installed("tc"),
                   "\(labUnavailable() ?? "needs strongSwan's charon with kernel-libipsec, swanctl and tc")"))
    func seedRows() throws { try exclusiveNetwork { try seedRowsBody() } }
    func seedRowsBody() throws {
        let (rows, pid) = try runLab("--scenario seed --seconds 2")
        #expect(rows.map(\.scenario) == LabScenario.seed)
        for row in rows {
            #expect(row.egressMTU == 1500 && row.flows.count == 4, "row \(row.scenario): \(row.flows.count) flows")
        }
        // The greedy merge's row may black-hole: only that it was measured is asked of it.
        for row in rows where row.scenario != .seedIPsecLRO {
            #expect(row.error == nil, "row \(row.scenario): \(row.error ?? "")")
            #expect(row.flows.allSatisfy { $0.goodputMbps > 0 }, "row \(row.scenario): \(row.flows.map(\.goodputMbps))")
            #expect((row.tunnels ?? 0) >= 1)
        }
        let strongSwan = try #require(rows.first)
        #expect(strongSwan.tunnels == 4 && strongSwan.tunnelBytes?.count == 4)
        #expect((strongSwan.tunnelBytes ?? []).reduce(0, +) > 0, "the CHILD_SAs carried the downloads")
        #expect(labNamespaces(of: pid).isEmpty, "left behind: \(labNamespaces(of: pid))")
    }

    @Test("Ctrl-C half-way: exit 130 and every namespace removed",
          .enabled(if: labUnavailable() == nil, "\(labUnavailable() ?? "")"))
    func interrupted() throws { try exclusiveNetwork { try interruptedBody() } }
    func interruptedBody() throws {
        let offload = builtExecutable(named: "offload")!
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("lab-int-\(getpid()).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        // The lab in the background; SIGINT once its second row is under way.
        let (status, output) = shell("""
            \(offload) lab --scenarios 4,5 --seconds 5 > \(log) 2>&1 & pid=$!
            for i in $(seq 1 100); do grep -q '\\[2/4\\]' \(log) && break; sleep 0.1; done
            sleep 1.5; ip netns list | grep -c "^olab${pid}s" ; kill -INT $pid; wait $pid; echo "exit=$?"; echo pid=$pid
            """, timeout: 120)
        let pid = labPID(output)
        let lines = output.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("pid=") }
        #expect(Int(lines.first ?? "") == 3, "three namespaces while the row ran: \(output)")
        #expect(lines.last == "exit=130", "\(output)\n\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        #expect(labNamespaces(of: pid).isEmpty, "left behind: \(labNamespaces(of: pid))")
        #expect(shell("pgrep -f '[i]perf3 -s -1 -J'").status != 0, "no iperf3 left running")
    }

    @Test("without root the lab says so and exits 1",
          .enabled(if: runningAsRoot && installed("setpriv") && offloadBuilt, "needs root to drop to another user (and setpriv)"))
    func notRoot() throws {
        let offload = try #require(builtExecutable(named: "offload"))
        let (status, output) = shell("setpriv --reuid=65534 --regid=65534 --clear-groups \(offload) lab")
        #expect(status == 1 && output.contains("needs root"), "\(status) \(output)")
    }
}
