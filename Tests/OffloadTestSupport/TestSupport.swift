import Foundation
import OffloadEngine

/// A small deterministic generator (SplitMix64) so failures reproduce.
public struct SplitMix: RandomNumberGenerator {
    /// The state.
    public var state: UInt64
    /// Starts from a seed.
    public init(seed: UInt64) { state = seed }
    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The path of an executable this package built (e.g. `offload`), found next to the running test
/// bundle, or nil.
public func builtExecutable(named name: String) -> String? {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<3 {
        let candidate = dir.appendingPathComponent(name).path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return nil
}

#if canImport(Glibc)
    import Glibc
#endif

/// Runs a command with bash, bounded by `timeout` seconds (coreutils `timeout`); returns its exit
/// status and its output (standard output and error together, through a file, so background
/// children that keep a pipe open cannot hang the caller).
@discardableResult
public func shell(_ command: String, timeout: Int = 60) -> (status: Int32, output: String) {
    let log = FileManager.default.temporaryDirectory.appendingPathComponent("shell-\(UUID().uuidString).log").path
    defer { try? FileManager.default.removeItem(atPath: log) }
    let quoted = "'" + command.replacingOccurrences(of: "'", with: "'\\''") + "'"
    let status = system("timeout \(timeout) bash -c \(quoted) > \(log) 2>&1 < /dev/null")
    return (status == -1 ? -1 : (status >> 8) & 0xFF, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
}

/// Why the network namespace tests cannot run here (not root, no TUN, a missing tool), or nil.
public func netnsUnavailable() -> String? {
    if getuid() != 0 { return "not root" }
    if !FileManager.default.fileExists(atPath: "/dev/net/tun") { return "no /dev/net/tun" }
    for tool in ["ip", "socat", "sha256sum"] where shell("command -v \(tool)").status != 0 { return "\(tool) is not installed" }
    if shell("ip netns add offload-probe-\(getpid()) && ip netns del offload-probe-\(getpid())").status != 0 {
        return "cannot create network namespaces"
    }
    return nil
}

/// Whether the network namespace tests can run here (for `.enabled(if: netnsReady, ...)`).
public let netnsReady = netnsUnavailable() == nil

/// Why they cannot, for the skip's comment ("" when they can).
public let netnsSkipReason = netnsUnavailable() ?? ""

/// A systemd unit's `ExecStart` as a shell command: its continuation lines joined, and `${VAR}`
/// (one word) and `$VAR` (split on spaces) expanded from an environment file's `KEY=VALUE` lines.
/// Returns the command and the settings.
public func systemdCommand(unit: String, environment: String) -> (command: String, settings: [String: String])? {
    var settings: [String: String] = [:]
    for line in environment.split(separator: "\n") where !line.hasPrefix("#") {
        guard let eq = line.firstIndex(of: "=") else { continue }
        settings[String(line[..<eq])] = String(line[line.index(after: eq)...])
    }
    let lines = unit.split(separator: "\n", omittingEmptySubsequences: false)
    guard let start = lines.firstIndex(where: { $0.hasPrefix("ExecStart=") }) else { return nil }
    var command = ""
    for line in lines[start...] {
        command += line.hasSuffix("\\") ? String(line.dropLast()) : String(line)
        if !line.hasSuffix("\\") { break }
    }
    command = String(command.dropFirst("ExecStart=".count))
    for (key, value) in settings.sorted(by: { $0.key.count > $1.key.count }) {
        command = command.replacingOccurrences(of: "${\(key)}", with: value).replacingOccurrences(of: "$\(key)", with: value)
    }
    return (command, settings)
}

/// Tests that build network namespaces and push traffic through them run one at a time, whatever
/// suite or test target they are in: on a two-core machine two of them at once would measure each
/// other, and one may count the other's namespaces.
private let networkLock = NSLock()

/// Runs `body` while no other namespace test runs.
public func exclusiveNetwork<T>(_ body: () throws -> T) rethrows -> T {
    networkLock.lock()
    defer { networkLock.unlock() }
    return try body()
}

/// The DOM headless Chromium builds from an HTML page (`--dump-dom`), or nil after printing why
/// the calling test skips (no Chromium installed).
public func renderedDOM(ofHTML html: String, name: String) throws -> String? {
    guard let browser = ["chromium", "chromium-browser", "google-chrome"].first(where: { shell("command -v \($0)").status == 0 })
    else {
        print("skipped: no Chromium (apt-get install chromium)")
        return nil
    }
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(getpid()).html").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    try html.write(toFile: path, atomically: true, encoding: .utf8)
    let (status, dom) = shell("\(browser) --headless --no-sandbox --disable-gpu --dump-dom file://\(path) 2>/dev/null")
    return status == 0 ? dom : ""
}

/// An IP packet as it is after `hops` routers: the IPv4 TTL (header checksum updated) or the
/// IPv6 hop limit lowered by `hops`, by the engine's own router rule.
public func aged(_ packet: [UInt8], hops: Int) -> [UInt8] {
    var p = packet
    for _ in 0..<hops { _ = p.withUnsafeMutableBytes { RouterHeaders.decrementTTL($0, networkOffset: 0) } }
    return p
}

/// IP packets grouped by flow (addresses, protocol and, for TCP and UDP, ports), each flow's in
/// their order: what a forwarder must keep (it may interleave flows differently).
public func byFlow(_ packets: [[UInt8]]) -> [String: [[UInt8]]] {
    var flows: [String: [[UInt8]]] = [:]
    for p in packets {
        var key = "other"
        if let first = p.first {
            if first >> 4 == 4, p.count >= 20 {
                let h = Int(first & 0x0F) * 4
                let ports = p.count >= h + 4 && (p[9] == 6 || p[9] == 17) ? p[h..<(h + 4)].map { String($0) }.joined(separator: ".") : ""
                key = "4 \(p[12..<20].map { String($0) }.joined(separator: ".")) \(p[9]) \(ports)"
            } else if first >> 4 == 6, p.count >= 40 {
                let ports = p.count >= 44 && (p[6] == 6 || p[6] == 17) ? p[40..<44].map { String($0) }.joined(separator: ".") : ""
                key = "6 \(p[8..<40].map { String($0) }.joined(separator: ".")) \(p[6]) \(ports)"
            }
        }
        flows[key, default: []].append(p)
    }
    return flows
}

/// Hex digits (white space ignored) as bytes.
public func hexBytes(_ text: String) -> [UInt8] {
    let digits = Array(text.filter { !$0.isWhitespace })
    return stride(from: 0, to: digits.count - 1, by: 2).map { UInt8(String(digits[$0...$0 + 1]), radix: 16)! }
}

// MARK: - Conditions for `.enabled(if:)`: a test that lacks what it needs is reported as skipped.

/// Whether a program is on the PATH.
public func installed(_ tool: String) -> Bool {
    (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        .contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(tool)") }
}

/// Whether the `offload` executable was built next to the tests.
public let offloadBuilt = builtExecutable(named: "offload") != nil

/// The project's directory, and the development corpus beside it (not shipped; tests that read it
/// skip without it).
public let projectRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()
/// `../shared/corpus/pcap` beside the project, when it is there.
public let pcapCorpusPresent = FileManager.default.fileExists(
    atPath: projectRoot.deletingLastPathComponent().appendingPathComponent("shared/corpus/pcap").path)
/// `../shared/corpus/jool-graybox-siit` beside the project, when it is there.
public let joolCorpusPresent = FileManager.default.fileExists(
    atPath: projectRoot.deletingLastPathComponent().appendingPathComponent("shared/corpus/jool-graybox-siit").path)
/// Whether we run as root.
public let runningAsRoot = getuid() == 0
/// Whether a Chromium is installed (the HTML reports are rendered headless).
public let chromiumInstalled = ["chromium", "chromium-browser", "google-chrome"].contains(where: installed)
