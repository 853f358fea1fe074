import Foundation
import OffloadForwarder
import OffloadTestSupport
import Testing

extension Lab {
    /// The forwarder's process ID.
    func forwarderPID() throws -> Int? {
        Int(try sh("pgrep -f '[s]tats-json \(dir)/stats.json' | head -1").1.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// The forwarder's resident memory in kB.
    func forwarderRSS() throws -> Int? {
        guard let pid = try forwarderPID() else { return nil }
        return Int(try sh("awk '/^VmRSS/ {print $2}' /proc/\(pid)/status").1.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// Waits until a (re)started forwarder routes table 4100 into its device again.
    func waitForDevices() throws -> Bool {
        for _ in 0..<100 {
            if try sh("ip -n \(gateway) route show table 4100").1.contains("dev ofw0") { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return false
    }

    /// Starts a paced transfer of `megabytes` from the client to the server (10.77.2.2) in the
    /// background; `finish()` waits for it and says whether the file arrived intact.
    func startPacedTransfer(megabytes: Int, rate: Double, seconds: Int = 60) throws -> () throws -> Bool {
        try sh("head -c \(megabytes * 1_000_000) /dev/urandom > \(dir)/paced.bin; rm -f \(dir)/paced-recv.bin")
        try sh("setsid ip netns exec \(server) timeout \(seconds + 5) socat -u TCP4-LISTEN:5002,reuseaddr "
            + "OPEN:\(dir)/paced-recv.bin,creat,trunc > /dev/null 2>&1 < /dev/null &")
        Thread.sleep(forTimeInterval: 0.3)
        try sh("(setsid ip netns exec \(client) python3 \(packageRoot)/scripts/paced-send.py \(dir)/paced.bin 10.77.2.2 5002 "
            + "\(rate) \(seconds); echo $? > \(dir)/paced.status) > /dev/null 2>&1 < /dev/null &")
        return { [dir] in
            let start = Date()
            while Date().timeIntervalSince(start) < Double(seconds + 5) {
                if FileManager.default.fileExists(atPath: "\(dir)/paced.status"),
                    (try? sh("pgrep -f '[O]PEN:\(dir)/paced-recv.bin'").0) != 0
                {
                    break
                }
                Thread.sleep(forTimeInterval: 0.1)
            }
            try sh("pkill -f '[O]PEN:\(dir)/paced-recv.bin' || true")
            let (_, sums) = try sh("sha256sum \(dir)/paced.bin \(dir)/paced-recv.bin | awk '{print $1}' | uniq | wc -l")
            return sums.trimmingCharacters(in: .whitespacesAndNewlines) == "1"
        }
    }
}

@Suite("Reliability: impairment, crash and restart, floods", .serialized)
struct ReliabilityNetnsTests {
    @Test("--impair 1% loss, 1% reorder, 0.1% duplication both ways: 32 MB each way arrive intact, the damage is counted",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func impairedTransfers() throws { try exclusiveNetwork { try impairedTransfersBody() } }
    func impairedTransfersBody() throws {
        let lab = try Lab()
        try lab.startForwarder(["--impair", "loss=1%,reorder=1%,duplicate=0.1%,seed=3"])
        let up = try lab.transfer(megabytes: 32, from: lab.client, to: lab.server, address: "10.77.2.2", ipv6: false, seconds: 60)
        #expect(up.identical, "client -> server: \(up.received) bytes")
        let down = try lab.transfer(megabytes: 32, from: lab.server, to: lab.client, address: "fd77:1::2", ipv6: true,
                                    seconds: 60)
        #expect(down.identical, "server -> client: \(down.received) bytes")
        let stats = try lab.stopForwarder()
        for direction in ["lan_to_wan", "wan_to_lan"] {
            let s = try #require(stats[direction])
            func value(_ name: String) -> Int { s.stage.first { $0.name == "impairment_\(name)" }?.value ?? -1 }
            let segments = value("segments")
            #expect(segments > 1_000, "\(direction): \(segments) segments")
            // 1% of the segments, within a wide margin.
            #expect(value("dropped") > segments / 300 && value("dropped") < segments / 30, "\(direction) dropped \(value("dropped")) of \(segments)")
            #expect(value("reordered") > segments / 300, "\(direction) reordered \(value("reordered"))")
            #expect(value("duplicated") >= 0)
        }
    }

    @Test("--impair delay=20ms: a lone ping is held 20 ms each way and leaves on time with no other traffic to push it",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func impairedDelay() throws { try exclusiveNetwork { try impairedDelayBody() } }
    func impairedDelayBody() throws {
        let lab = try Lab()
        try lab.startForwarder(["--impair", "delay=20ms"])
        let (status, output) = try sh("ip netns exec \(lab.client) ping -c 4 -i 0.5 -W 2 10.77.2.2", timeout: 20)
        #expect(status == 0, "\(output)")
        // rtt min/avg/max/mdev = a/b/c/d ms
        let fields = output.split(separator: "=").last?.split(separator: "/").compactMap { Double($0.trimmingCharacters(in: .whitespaces.union(.letters))) } ?? []
        let (minimum, maximum) = (fields.first ?? 0, fields.count > 2 ? fields[2] : 0)
        #expect(minimum >= 40 && maximum < 150, "round trips \(minimum)…\(maximum) ms, expected 40 ms plus a little")
        let stats = try lab.stopForwarder()
        #expect(stats["lan_to_wan"]?.stage.first { $0.name == "impairment_delayed" }?.value ?? 0 >= 4)
    }

    @Test("kill -9 during a transfer, restart with the same arguments: the leftovers are replaced, the transfer completes intact (fail-open: the kernel forwards meanwhile)",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func crashRestartFailOpen() throws { try exclusiveNetwork { try crashRestartBody(failClosed: false) } }

    @Test("--fail-closed: while the forwarder is dead its blackhole routes drop the traffic; after the restart the transfer completes intact",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func crashRestartFailClosed() throws { try exclusiveNetwork { try crashRestartBody(failClosed: true) } }

    func crashRestartBody(failClosed: Bool) throws {
        let lab = try Lab()
        let arguments = failClosed ? ["--fail-closed"] : []
        try lab.startForwarder(arguments)
        let finish = try lab.startPacedTransfer(megabytes: 48, rate: 12)  // about 4 s
        Thread.sleep(forTimeInterval: 1.0)
        let firstPID = try #require(try lab.forwarderPID())
        try sh("kill -KILL \(firstPID)")
        Thread.sleep(forTimeInterval: 0.3)
        // Dead: the devices and their routes are gone, the rules are left behind.
        #expect(try sh("ip -n \(lab.gateway) link show ofw0").0 != 0, "the TUN device outlived the process")
        let rules = try sh("ip -n \(lab.gateway) rule").1
        #expect(rules.contains("lookup 4100"), "\(rules)")
        let table = try sh("ip -n \(lab.gateway) route show table 4100").1
        #expect(table.contains("blackhole") == failClosed, "table 4100 while dead: \(table)")
        // What the traffic does meanwhile: the kernel forwards it (fail-open) or it is dropped.
        let ping = try sh("ip netns exec \(lab.client) ping -c 2 -i 0.2 -W 1 10.77.2.2").0
        #expect((ping == 0) == !failClosed, "ping while the forwarder is dead: status \(ping)")
        // Restarted with the same arguments: it replaces what the dead one left.
        try sh("pkill -KILL -f '[s]tats-json \(lab.dir)/stats.json' || true")
        try lab.startForwarder(arguments)
        #expect(try lab.waitForDevices(), "the restarted forwarder did not route into its device")
        #expect(try lab.forwarderPID() != firstPID)
        let after = try sh("ip -n \(lab.gateway) -4 rule").1
        #expect(after.components(separatedBy: "lookup 4100\n").count - 1 == 1, "rules after the restart:\n\(after)")
        #expect(try finish(), "the transfer across the crash is not intact")
        let stats = try lab.stopForwarder()
        #expect((stats["lan_to_wan"]?.packetsIn ?? 0) > 100, "the restarted forwarder carried traffic")
        // A clean exit removes the rules and (fail-closed) the blackhole routes.
        #expect(try !sh("ip -n \(lab.gateway) rule").1.contains("lookup 4100"))
        #expect(try !sh("ip -n \(lab.gateway) route show table 4100").1.contains("blackhole"))
    }

    @Test("A flood nothing can merge (PSH, 1 byte, 10 000 flows) beside a transfer: memory stays bounded, forwarding goes on, the counters say why",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func unmergeableFlood() throws { try exclusiveNetwork { try unmergeableFloodBody() } }
    func unmergeableFloodBody() throws {
        let lab = try Lab()
        try lab.startForwarder([])
        // Warm up, then measure memory around the flood.
        _ = try lab.transfer(megabytes: 8, from: lab.client, to: lab.server, address: "10.77.2.2", ipv6: false)
        let before = try #require(try lab.forwarderRSS())
        let finish = try lab.startPacedTransfer(megabytes: 24, rate: 8)
        let sent = Int(try sh("ip netns exec \(lab.client) python3 \(packageRoot)/scripts/tcp-flood.py 10.77.1.2 10.77.2.2 "
            + "200000 10000 20", timeout: 30).1.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        #expect(sent > 50_000, "flood segments sent: \(sent)")
        #expect(try finish(), "the transfer beside the flood is not intact")
        let afterFlood = try #require(try lab.forwarderRSS())
        #expect(afterFlood - before < 64 * 1024, "RSS grew from \(before) kB to \(afterFlood) kB")
        let stats = try lab.stopForwarder()
        let up = try #require(stats["lan_to_wan"])
        // What reached the forwarder (the TUN queue drops what a loaded machine cannot read in
        // time, so how much is not asserted): each flood segment left alone because of its PSH
        // (nothing was held for its flow), and was forwarded.
        #expect(up.gro[.controlFlags] > 0, "control_flags deliveries: \(up.gro[.controlFlags]) of \(sent) sent")
        #expect(up.packetsOut >= up.gro[.controlFlags], "out \(up.packetsOut)")
    }

    @Test("The short soak: scripts/soak.sh moves 0.3 GB over 3 impaired connections, each intact, memory flat",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func shortSoak() throws { try exclusiveNetwork { try shortSoakBody() } }
    func shortSoakBody() throws {
        guard let offload = offloadExecutable else { throw LabError("offload executable not found") }
        let (status, output) = try sh("OFFLOAD=\(offload) MAX_SECONDS=240 \(packageRoot)/scripts/soak.sh 0.3 3", timeout: 300)
        #expect(status == 0, "\(output)")
        #expect(output.components(separatedBy: ": intact").count - 1 == 3, "\(output)")
        #expect(output.contains("RSS kB: first"), "\(output)")
    }
}
