import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Where a ``RoutingSetup`` writes down what it changes while its process runs: the commands that
/// undo its routes and rules, the sysctls with the values they had, the interfaces whose GRO it
/// turned on. Each change is written down before it is made, and the file is removed after a
/// clean teardown; so when a process is killed (`kill -9`, a crash, the OOM killer), the next run
/// for the same devices finds the file and puts everything back before it starts anew
/// (``RoutingSetup/keepJournal(_:)``) — otherwise it would take the changed sysctls for the
/// originals, and they would never be put back.
///
/// The file is `/run/offload/setup-<namespace>-<devices>.json` (mode 0600): per network
/// namespace (the kernel's cookie of the namespace, never reused while the system runs), so that
/// runs in different namespaces never touch each other's settings. `/run` is emptied at boot, as
/// are the settings it describes.
public struct SetupJournal: Sendable {
    /// The default directory.
    public static let directory = "/run/offload"

    /// What was changed.
    struct Record: Codable {
        /// A sysctl and the value it had.
        struct Change: Codable {
            var key: String
            var was: String
        }
        /// The process that made the changes.
        var pid: Int32
        /// Its devices.
        var devices: [String]
        /// The commands that undo its routes, rules and addresses, last change first.
        var undo: [[String]]
        /// The sysctls it changed, first change first.
        var sysctls: [Change]
        /// The interfaces whose GRO it turned on.
        var gro: [String]
    }

    /// The file.
    public let path: String
    /// The devices it is for.
    public let devices: [String]

    /// The journal of a setup for these devices in the current network namespace.
    public init(devices: [String], directory: String = SetupJournal.directory) {
        self.devices = devices
        let names = devices.map { $0.filter { $0.isLetter || $0.isNumber || "-_.".contains($0) } }.joined(separator: "-")
        path = "\(directory)/setup-\(Self.namespaceIdentifier())-\(names).json"
    }

    /// Reads what a run left here, if anything.
    func read() -> Record? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(Record.self, from: data)
    }

    /// Writes `record` in place of the last one (a new file renamed over it: never half written).
    func write(_ record: Record) throws {
        let directory = (path as NSString).deletingLastPathComponent
        if !FileManager.default.fileExists(atPath: directory) {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        }
        let temporary = path + ".new"
        let data = try JSONEncoder().encode(record)
        // Created 0600 from the start: the file names the host's settings, for root's eyes.
        let fd = unsafe open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw JournalError(unsafe "\(temporary): \(String(cString: strerror(errno)))") }
        let written = unsafe data.withUnsafeBytes { unsafe Glibc.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd)
        close(fd)
        guard written == data.count, synced == 0, unsafe rename(temporary, path) == 0 else {
            let reason = unsafe String(cString: strerror(errno))
            unsafe unlink(temporary)
            throw JournalError("\(path): \(reason)")
        }
    }

    /// Removes the file (all is back).
    func remove() { unsafe unlink(path) }

    /// Whether `pid` is a running `offload` process (another gateway that set the devices up).
    /// A killed one that its parent has not reaped yet (a zombie) is not running.
    static func isOffloadProcess(_ pid: Int32) -> Bool {
        guard pid > 0, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        // `PID (COMM) STATE ...`: the name may hold spaces and parentheses, the state follows the last ")".
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        let name = stat[..<close].split(separator: "(", maxSplits: 1).last ?? ""
        return name.hasPrefix("offload") && state != "Z" && state != "X"
    }

    /// The network namespace this process is in: its cookie (`SO_NETNS_COOKIE`, Linux 5.14; never
    /// reused until reboot), or else the inode of `/proc/self/ns/net`.
    static func namespaceIdentifier() -> String {
        let s = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if s >= 0 {
            defer { close(s) }
            var cookie: UInt64 = 0
            var length = socklen_t(MemoryLayout<UInt64>.size)
            let soNetnsCookie: CInt = 71  // <asm-generic/socket.h>
            if unsafe getsockopt(s, SOL_SOCKET, soNetnsCookie, &cookie, &length) == 0 { return "netns\(cookie)" }
        }
        var info = stat()
        if unsafe stat("/proc/self/ns/net", &info) == 0 { return "ns\(info.st_ino)" }
        return "ns"
    }
}

/// The journal could not be written.
struct JournalError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
