import Foundation
import OffloadCrypto
import OffloadIPsec
import OffloadTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

let offloadExecutable = builtExecutable(named: "offload")

@Suite("Keys never reach a core dump")
struct CoreDumpTests {
    /// In a child process (an exit test), so that this test process stays dumpable. (Swift
    /// Testing starts that child with RLIMIT_CORE at 0 already, and without CAP_SYS_RESOURCE it
    /// cannot be raised: the limit's change is checked on the command below, started at 1 MiB.)
    @Test("disableCoreDumps clears PR_SET_DUMPABLE and leaves RLIMIT_CORE at 0, soft and hard")
    func disables() async {
        await #expect(processExitsWith: .success) {
            guard KeyHoldingProcess.isDumpable else { exit(3) }
            do { try KeyHoldingProcess.disableCoreDumps() } catch { exit(4) }
            guard !KeyHoldingProcess.isDumpable else { exit(5) }
            guard KeyHoldingProcess.coreSizeLimit == (0, 0) else { exit(6) }
            exit(0)
        }
    }

    /// The command itself: `offload ipsec` started with a core limit of 1 MiB, blocked on opening
    /// its input (a FIFO no one writes), has turned its core dumps off by then (/proc/PID/limits).
    @Test("offload ipsec runs with core dumps off", .enabled(if: offloadExecutable != nil, "the offload executable was not built"))
    func command() throws {
        let offload = try #require(offloadExecutable)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("core-\(getpid())-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tunnel = SAFile.freshTunnel(name: "t", algorithm: .aesGCM128, local: [TrafficSelector("10.1.0.0/16")!],
                                        remote: [TrafficSelector("10.2.0.0/16")!])
        try SAFile.write(SAFile.render([tunnel]), to: dir + "/sa.conf")
        #expect(mkfifo(dir + "/in", 0o600) == 0)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", "ulimit -c 1048576 && exec \"$0\" ipsec --sa \"$1\" --decrypt \"$2\" \"$3\"",
                             offload, dir + "/sa.conf", dir + "/in", dir + "/out.pcap"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let pid = process.processIdentifier
        defer {
            kill(pid, SIGKILL)  // the process this test started, by its id
            process.waitUntilExit()
        }
        // Wait (bounded) until the command runs (bash has exec'd it) and waits on its input
        // (one of its threads opening a FIFO with no writer: wait_for_partner).
        var limits = ""
        for _ in 0..<400 {
            let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) ?? ""
            limits = (try? String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)) ?? ""
            // One of its threads (the command runs on a worker thread, not the main one).
            let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            let waiting = threads.contains { thread in
                ((try? String(contentsOfFile: "/proc/\(pid)/task/\(thread)/wchan", encoding: .utf8)) ?? "").contains("partner")
            }
            if exe.hasSuffix("/offload"), waiting { break }
            if !process.isRunning { break }
            usleep(25_000)
        }
        let core = limits.split(separator: "\n").first { $0.hasPrefix("Max core file size") }
        let fields = core.map { $0.split(separator: " ", omittingEmptySubsequences: true) } ?? []
        #expect(fields.count >= 6 && fields[4] == "0" && fields[5] == "0", "\(core ?? "no /proc/\(pid)/limits")")
    }
}
