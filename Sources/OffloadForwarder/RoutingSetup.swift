import Foundation
import OffloadTUN

/// The policy routing that puts a ``Forwarder`` on the packet path, so users do not write the
/// `ip rule` lines by hand:
///
/// ```text
/// ip rule add iif <lan> lookup <T>      ip route add default dev <ingress> table <T>
/// ip rule add iif <wan> lookup <T+1>    ip route add default dev <egress>  table <T+1>
/// ```
/// (for IPv4 and IPv6), forwarding on, and reverse-path filtering off on the four interfaces
/// (packets come back out of a different device than the one their source routes to).
/// ``teardown()`` removes the rules; the routes go with the devices.
public final class RoutingSetup: @unchecked Sendable {
    /// The commands that undo what was done, in order.
    public internal(set) var undo: [[String]] = []
    /// The commands run, for the log and `--print-setup`.
    public private(set) var applied: [String] = []
    /// Interfaces whose GRO ``enableReceiveOffload(on:)`` turned on, to turn off again at teardown.
    var groTurnedOn: [String] = []
    /// Sysctls changed, with the value each had before, to put back at teardown (first change first).
    var sysctlsChanged: [(key: String, was: String)] = []

    /// Creates an empty setup.
    public init() {}

    /// The routing table for traffic from the LAN (the WAN's is the next one).
    public static let defaultTable = 4100
    /// The metric of the fail-closed blackhole routes: below every other route of the table.
    public static let failClosedMetric: UInt32 = 4_294_967_295

    /// Whether `ip rule` output shows a forwarder's rules in place (the WAN-side rule is added last).
    public static func isApplied(ruleListing: String, table: Int = defaultTable) -> Bool {
        ruleListing.contains("lookup \(table + 1)")
    }

    /// The commands for these interfaces, without running them.
    public static func commands(ingress: String, egress: String, lan: String, wan: String, table: Int = defaultTable)
        -> [[String]]
    {
        var c: [[String]] = []
        for family in ["-4", "-6"] {
            c.append(["ip", family, "rule", "add", "iif", lan, "lookup", "\(table)", "priority", "\(table)"])
            c.append(["ip", family, "route", "replace", "default", "dev", ingress, "table", "\(table)"])
            c.append(["ip", family, "rule", "add", "iif", wan, "lookup", "\(table + 1)", "priority", "\(table + 1)"])
            c.append(["ip", family, "route", "replace", "default", "dev", egress, "table", "\(table + 1)"])
        }
        return c
    }

    /// Applies the routing for a forwarder between `ingress` and `egress` TUN devices, with
    /// traffic arriving from the `lan` and `wan` interfaces.
    /// - Throws: when a command fails (what was done so far is still undone by ``teardown()``).
    ///
    /// While the forwarder runs, its TUN devices carry the tables' default routes. When the process
    /// dies, the devices and those routes go, and the rules then find nothing in their tables:
    /// the kernel forwards by its main table (fail-open). With `failClosed`, each table also gets a
    /// blackhole default route of the lowest preference, which stays when the devices go: traffic
    /// is dropped until the forwarder is back (fail-closed). A clean exit removes it.
    public func apply(ingress: String, egress: String, lan: String, wan: String, table: Int = defaultTable,
                      failClosed: Bool = false) throws {
        try enableForwarding(looseReversePath: [ingress, egress, lan, wan])
        var commands = Self.commands(ingress: ingress, egress: egress, lan: lan, wan: wan, table: table)
        if failClosed {
            for family in ["-4", "-6"] {
                for t in [table, table + 1] {
                    let route = ["blackhole", "default", "table", "\(t)", "metric", "\(Self.failClosedMetric)"]
                    commands.append(["ip", family, "route", "replace"] + route)
                    undo.insert(["ip", family, "route", "del"] + route, at: 0)
                }
            }
        }
        for command in commands {
            if command[2] == "rule" {
                // A run that was killed leaves its rules behind: clear them so the add succeeds.
                while (try? run(command.enumerated().map { $0.offset == 3 ? "del" : $0.element }, quiet: true)) != nil {}
            }
            try run(command)
            if command[2] == "rule" {
                undo.insert(command.enumerated().map { $0.offset == 3 ? "del" : $0.element }, at: 0)
            }
        }
    }

    /// Removes the rules that ``apply(ingress:egress:lan:wan:table:)`` added, and turns GRO off
    /// again where ``enableReceiveOffload(on:)`` turned it on.
    public func teardown() {
        for command in undo { try? run(command) }
        undo = []
        // Every sysctl back to what it was, last change first (a device's own keys may be gone with it).
        for change in sysctlsChanged.reversed() {
            try? change.was.write(toFile: "/proc/sys/\(change.key)", atomically: false, encoding: .utf8)
        }
        sysctlsChanged = []
        for name in groTurnedOn { try? TUNDevice.setReceiveOffload(name: name, false) }
        groTurnedOn = []
    }

    /// Makes sure the kernel merges (GRO) on the interfaces traffic arrives on, so the forwarder
    /// reads super-packets instead of one packet per system call (a NIC's GRO does the same
    /// before the TUN device). Says what it found in ``applied``; an interface whose driver has no
    /// GRO switch is left as it is. Returns what it found: name → (was on, is on).
    @discardableResult
    public func enableReceiveOffload(on interfaces: [String]) -> [String: (was: Bool?, now: Bool?)] {
        var found: [String: (was: Bool?, now: Bool?)] = [:]
        for name in interfaces {
            let was = TUNDevice.receiveOffload(name: name)
            if was == false {
                do {
                    try TUNDevice.setReceiveOffload(name: name, true)
                    groTurnedOn.append(name)
                    applied.append("GRO on for \(name) (was off; turned off again at exit)")
                } catch {
                    applied.append("GRO stays off for \(name): \(error)")
                }
            } else {
                applied.append(was == true ? "GRO already on for \(name)" : "GRO state of \(name) unknown (driver has no switch)")
            }
            found[name] = (was, TUNDevice.receiveOffload(name: name))
        }
        return found
    }

    /// Sets a sysctl, remembering what it was (``teardown()`` puts it back).
    func writeSysctl(_ key: String, _ value: String) throws {
        let was = (try? String(contentsOfFile: "/proc/sys/\(key)", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try value.write(toFile: "/proc/sys/\(key)", atomically: false, encoding: .utf8)
        if let was, was != value, !sysctlsChanged.contains(where: { $0.key == key }) {
            sysctlsChanged.append((key, was))
            applied.append("sysctl \(key.replacingOccurrences(of: "/", with: "."))=\(value) (was \(was); put back at exit)")
        } else {
            applied.append("sysctl \(key.replacingOccurrences(of: "/", with: "."))=\(value)")
        }
    }

    func run(_ command: [String], quiet: Bool = false) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        if !FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") {
            process.executableURL = URL(fileURLWithPath: "/sbin/ip")
        }
        process.arguments = Array(command.dropFirst())
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        process.waitUntilExit()
        if !quiet { applied.append(command.joined(separator: " ")) }
        guard process.terminationStatus == 0 else {
            let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw SetupError(command: command.joined(separator: " "), message: message)
        }
    }
}

/// The routing a forwarder process puts in place with `--setup`.
public enum RoutingPlan: Sendable, Hashable {
    /// A router between two networks: policy rules send what arrives on `lan` into the ingress
    /// device and what arrives on `wan` into the egress device (``RoutingSetup/apply(ingress:egress:lan:wan:table:)``).
    case policy(lan: String, wan: String)
    /// A translator or tunnel: routes for these prefixes (either family) into each device
    /// (``RoutingSetup/applyRoutes(ingress:egress:intoIngress:intoEgress:)``).
    case routes(intoIngress: [String], intoEgress: [String])
    /// A tunnel on a TAP device: addresses on the device, and routes through it, via the next hop
    /// of the route's family on the far side when one is given
    /// (``RoutingSetup/applyDeviceRoutes(device:addresses:routes:nextHops:)``).
    case deviceRoutes(addresses: [String], routes: [String], nextHops: [String])
}

extension RoutingSetup {
    /// Routes `intoIngress` prefixes into the ingress device and `intoEgress` ones into the egress
    /// device (`ip route replace PREFIX dev DEVICE`), with forwarding on; ``teardown()`` deletes them.
    public func applyRoutes(ingress: String, egress: String, intoIngress: [String], intoEgress: [String]) throws {
        try enableForwarding(looseReversePath: [ingress, egress])
        for (prefixes, device) in [(intoIngress, ingress), (intoEgress, egress)] {
            for prefix in prefixes { try addRoute(prefix, device: device) }
        }
    }

    /// Forwarding on for both families, and, when `interfaces` are given, reverse-path filtering off
    /// on them (and `all`, `default`): their packets come back out of a different device than the
    /// one their source routes to.
    func enableForwarding(looseReversePath interfaces: [String]) throws {
        try writeSysctl("net/ipv4/ip_forward", "1")
        try writeSysctl("net/ipv6/conf/all/forwarding", "1")
        guard !interfaces.isEmpty else { return }
        for name in ["all", "default"] + interfaces { try? writeSysctl("net/ipv4/conf/\(name)/rp_filter", "0") }
    }

    /// `ip route replace PREFIX [via NEXTHOP] dev DEVICE`, deleted again by ``teardown()``.
    func addRoute(_ prefix: String, via nextHop: String? = nil, device: String) throws {
        let family = prefix.contains(":") ? "-6" : "-4"
        try run(["ip", family, "route", "replace", prefix] + (nextHop.map { ["via", $0] } ?? []) + ["dev", device])
        undo.insert(["ip", family, "route", "del", prefix, "dev", device], at: 0)
    }
}

extension RoutingSetup {
    /// Puts `addresses` on `device` and routes each prefix through it (via the next hop of the
    /// prefix's family, when given), with forwarding on; ``teardown()`` removes them.
    public func applyDeviceRoutes(device: String, addresses: [String], routes: [String], nextHops: [String]) throws {
        try enableForwarding(looseReversePath: [])
        for address in addresses {
            let family = address.contains(":") ? "-6" : "-4"
            try run(["ip", family, "addr", "replace", address, "dev", device] + (family == "-6" ? ["nodad"] : []))
            undo.insert(["ip", family, "addr", "del", address, "dev", device], at: 0)
        }
        for prefix in routes {
            try addRoute(prefix, via: nextHops.first { $0.contains(":") == prefix.contains(":") }, device: device)
        }
    }
}

/// A setup command that failed.
public struct SetupError: Error, CustomStringConvertible {
    /// The command.
    public var command: String
    /// What it printed.
    public var message: String
    /// `ip -4 rule add ...: RTNETLINK answers: ...`.
    public var description: String { "\(command): \(message.trimmingCharacters(in: .whitespacesAndNewlines))" }
}
