import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Set by the lab's SIGINT/SIGTERM handlers (an async-signal-safe store); every wait in the lab
/// polls it, so Ctrl-C stops the current step, and the teardown still runs.
public let labInterruptFlag = Atomic<Bool>(false)

/// Why a lab step failed.
public struct LabError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, in words for the user.
    public var description: String
    /// Whether it was the user's Ctrl-C.
    public var interrupted = false

    /// Creates an error.
    public init(_ description: String, interrupted: Bool = false) {
        self.description = description
        self.interrupted = interrupted
    }

    static let interruptedByUser = LabError("interrupted", interrupted: true)
}

/// Child processes the lab started and has not reaped yet: killed on the way out, whatever the
/// way out is.
final class ChildRegistry: Sendable {
    private let pids = Mutex<Set<pid_t>>([])
    static let shared = ChildRegistry()

    func add(_ pid: pid_t) { pids.withLock { _ = $0.insert(pid) } }
    func remove(_ pid: pid_t) { pids.withLock { _ = $0.remove(pid) } }
    /// Sends SIGKILL to every child still registered.
    func killAll() {
        for pid in pids.withLock({ $0 }) { kill(pid, SIGKILL) }
    }
}

/// A program started in the background, its output going to a file.
final class BackgroundProcess {
    let process = Process()
    let logPath: String
    let arguments: [String]

    /// Starts `arguments` (the first is looked up in PATH) with standard output and error in `logPath`.
    init(_ arguments: [String], log logPath: String) throws {
        self.logPath = logPath
        self.arguments = arguments
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        guard let log = FileHandle(forWritingAtPath: logPath) else { throw LabError("cannot write \(logPath)") }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = (environment["PATH"].map { $0 + ":" } ?? "/usr/local/bin:/usr/bin:/bin:") + "/usr/sbin:/sbin"
        process.environment = environment
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { throw LabError("cannot start \(arguments[0]): \(error)") }
        try? log.close()
        ChildRegistry.shared.add(process.processIdentifier)
    }

    /// Whether it still runs.
    var isRunning: Bool { process.isRunning }

    /// Waits until it exits, at most `timeout` seconds, polling the interrupt flag. Returns the
    /// exit status, or nil on timeout (the process is then left running).
    func wait(timeout: Double, interruptible: Bool = true) throws -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning {
            if interruptible && labInterruptFlag.load(ordering: .relaxed) { throw LabError.interruptedByUser }
            if Date() > deadline { return nil }
            Thread.sleep(forTimeInterval: 0.02)
        }
        ChildRegistry.shared.remove(process.processIdentifier)
        return process.terminationStatus
    }

    /// Sends SIGTERM, waits up to `grace` seconds, then SIGKILL.
    func stop(grace: Double = 3) {
        guard process.isRunning else {
            ChildRegistry.shared.remove(process.processIdentifier)
            return
        }
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        while process.isRunning { Thread.sleep(forTimeInterval: 0.01) }
        ChildRegistry.shared.remove(process.processIdentifier)
    }

    /// What it wrote so far.
    var output: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
}

/// Runs a command to completion, bounded by `timeout` seconds; returns its status and output.
/// A timeout kills it, and so does a Ctrl-C unless it is not `interruptible` (cleanup steps).
@discardableResult
func runCommand(_ arguments: [String], timeout: Double = 20, interruptible: Bool = true, scratch: String) throws
    -> (status: Int32, output: String)
{
    let log = "\(scratch)/cmd-\(UInt32.random(in: 0...UInt32.max)).log"
    defer { try? FileManager.default.removeItem(atPath: log) }
    let child = try BackgroundProcess(arguments, log: log)
    do {
        guard let status = try child.wait(timeout: timeout, interruptible: interruptible) else {
            child.stop(grace: 0.5)
            throw LabError("\(arguments.joined(separator: " ")) did not finish in \(Int(timeout)) s")
        }
        return (status, child.output)
    } catch {
        child.stop(grace: 0.5)
        throw error
    }
}

/// Runs a command that must succeed.
@discardableResult
func runChecked(_ arguments: [String], timeout: Double = 20, interruptible: Bool = true, scratch: String) throws
    -> String
{
    let (status, output) = try runCommand(arguments, timeout: timeout, interruptible: interruptible, scratch: scratch)
    guard status == 0 else {
        throw LabError("\(arguments.joined(separator: " ")) failed (exit \(status)): "
            + output.trimmingCharacters(in: .whitespacesAndNewlines))
    }
    return output
}

/// Whether a program is on PATH.
func isInstalled(_ program: String) -> Bool {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin:/usr/sbin:/sbin"
    let directories: [String] = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
    return directories.contains { directory in access(directory + "/" + program, X_OK) == 0 }
}

/// Sleeps, polling the interrupt flag.
func pause(_ seconds: Double) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if labInterruptFlag.load(ordering: .relaxed) { throw LabError.interruptedByUser }
        Thread.sleep(forTimeInterval: min(0.02, max(0, deadline.timeIntervalSinceNow)))
    }
}
