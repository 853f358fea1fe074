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
/// ``teardown()`` removes the rules and the routes it added, and puts the sysctls back.
///
/// It never takes over what it did not make: routes are added (`ip route add`, never `replace`),
/// a route already there for a prefix it is asked for is refused with its name, and the policy
/// tables must be unused. At exit it deletes exactly what it added (prefix, device, table). With a
/// ``SetupJournal``, every change is written down before it is made, so a run after a `kill -9`
/// puts back what the killed one changed.
public final class RoutingSetup: @unchecked Sendable {
    /// The commands that undo what was done, in order.
    public internal(set) var undo: [[String]] = []
    /// The commands run, for the log and `--print-setup`.
    public private(set) var applied: [String] = []
    /// Interfaces whose GRO ``enableReceiveOffload(on:)`` turned on, to turn off again at teardown.
    var groTurnedOn: [String] = []
    /// Sysctls changed, with the value each had before, to put back at teardown (first change first).
    var sysctlsChanged: [(key: String, was: String)] = []
    /// Where the changes are written down before they are made (nil: nowhere).
    var journal: SetupJournal?
    /// Why the journal could not be written (the first time), for the log; nil while it can.
    public private(set) var journalProblem: String?

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
            c.append(["ip", family, "route", "add", "default", "dev", ingress, "table", "\(table)"])
            c.append(["ip", family, "rule", "add", "iif", wan, "lookup", "\(table + 1)", "priority", "\(table + 1)"])
            c.append(["ip", family, "route", "add", "default", "dev", egress, "table", "\(table + 1)"])
        }
        return c
    }

    /// Applies the routing for a forwarder between `ingress` and `egress` TUN devices, with
    /// traffic arriving from the `lan` and `wan` interfaces.
    /// - Throws: ``SetupRefusal`` when table `table` or `table + 1` has routes or rules already;
    ///   ``SetupError`` when a command fails (what was done so far is still undone by ``teardown()``).
    ///
    /// While the forwarder runs, its TUN devices carry the tables' default routes. When the process
    /// dies, the devices and those routes go, and the rules then find nothing in their tables:
    /// the kernel forwards by its main table (fail-open). With `failClosed`, each table also gets a
    /// blackhole default route of the lowest preference, which stays when the devices go: traffic
    /// is dropped until the forwarder is back (fail-closed). A clean exit removes it.
    public func apply(ingress: String, egress: String, lan: String, wan: String, table: Int = defaultTable,
                      failClosed: Bool = false) throws {
        // Both tables must be free: their routes and rules are deleted at exit.
        try checkUnused(table: table)
        try checkUnused(table: table + 1)
        try enableForwarding(looseReversePath: [ingress, egress, lan, wan])
        var commands = Self.commands(ingress: ingress, egress: egress, lan: lan, wan: wan, table: table)
        if failClosed {
            for family in ["-4", "-6"] {
                for t in [table, table + 1] {
                    commands.append(["ip", family, "route", "add", "blackhole", "default", "table", "\(t)", "metric",
                                     "\(Self.failClosedMetric)"])
                }
            }
        }
        for command in commands {
            // The same words with `del`: exactly what was added (the rule's selector, or the route's
            // prefix, device or type, table and metric).
            try change(command, undo: command.enumerated().map { $0.offset == 3 ? "del" : $0.element })
        }
    }

    /// Refuses a policy table that has routes or rules already (someone else's, or a run's that
    /// left no journal): ``apply(ingress:egress:lan:wan:table:failClosed:)`` would mix its routes
    /// with them and delete them at exit.
    func checkUnused(table: Int) throws {
        for family in ["-4", "-6"] {
            if let route = try listing(["ip", family, "route", "show", "table", "\(table)"]).first {
                throw SetupRefusal("table \(table) is in use (\(route)); --setup needs tables \(Self.defaultTable) and "
                    + "\(Self.defaultTable + 1) empty, as it deletes their routes at exit")
            }
            let rules = try listing(["ip", family, "rule", "show"]).filter { line in
                let words = line.split(separator: " ")
                return zip(words, words.dropFirst()).contains { ($0 == "lookup" || $0 == "table") && $1 == "\(table)" }
            }
            if let rule = rules.first {
                throw SetupRefusal("a rule already uses table \(table) (\(rule)); --setup will not add its own beside it "
                    + "nor delete it at exit (if a run of offload that was killed left it, `ip \(family) rule del "
                    + "\(rule.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "")` removes it)")
            }
        }
    }

    /// Removes the rules and routes that were added, puts the sysctls back and turns GRO off
    /// again where ``enableReceiveOffload(on:)`` turned it on; then forgets the journal (all is back).
    public func teardown() {
        for command in undo { try? run(command) }
        undo = []
        // Every sysctl back to what it was, last change first (a device's own keys may be gone with it).
        for change in sysctlsChanged.reversed() { Self.putBack(change.key, change.was) }
        sysctlsChanged = []
        for name in groTurnedOn { try? TUNDevice.setReceiveOffload(name: name, false) }
        groTurnedOn = []
        journal?.remove()
    }

    /// Writes `value` into `/proc/sys/<key>` (errors ignored: a device's keys go with it).
    static func putBack(_ key: String, _ value: String) {
        try? value.write(toFile: "/proc/sys/\(key)", atomically: false, encoding: .utf8)
    }

    /// Starts keeping the changes in `journal`. What a previous run in this network namespace
    /// with these devices left there (it was killed before its teardown) is put back first: its
    /// routes and rules deleted, its sysctls and GRO switches restored. Returns what was put back.
    /// - Throws: ``SetupRefusal`` when the run that wrote the journal is still alive.
    public func keepJournal(_ journal: SetupJournal) throws -> [String] {
        var recovered: [String] = []
        if let left = journal.read() {
            if left.pid != getpid(), SetupJournal.isOffloadProcess(left.pid) {
                throw SetupRefusal("offload (pid \(left.pid)) has set up \(left.devices.joined(separator: ", ")) in this "
                    + "network namespace and is still running (\(journal.path))")
            }
            for command in left.undo where (try? run(command, quiet: true)) != nil {
                recovered.append(command.joined(separator: " "))
            }
            for change in left.sysctls.reversed() {
                Self.putBack(change.key, change.was)
                recovered.append("sysctl \(change.key.replacingOccurrences(of: "/", with: "."))=\(change.was)")
            }
            for name in left.gro where (try? TUNDevice.setReceiveOffload(name: name, false)) != nil {
                recovered.append("GRO off for \(name)")
            }
            journal.remove()
        }
        self.journal = journal
        save()
        return recovered
    }

    /// Writes the journal (before a change is made); the first failure is kept in ``journalProblem``.
    func save() {
        guard let journal else { return }
        let record = SetupJournal.Record(pid: getpid(), devices: journal.devices, undo: undo,
                                         sysctls: sysctlsChanged.map { .init(key: $0.key, was: $0.was) }, gro: groTurnedOn)
        do { try journal.write(record) } catch {
            if journalProblem == nil { journalProblem = "\(error)" }
        }
    }

    /// Runs `command` after writing down `undo` (first in line: the last change is undone first);
    /// when the command fails, nothing was changed and `undo` is struck out again.
    func change(_ command: [String], undo reverse: [String]) throws {
        undo.insert(reverse, at: 0)
        save()
        do { try run(command) } catch {
            undo.removeFirst()
            save()
            throw error
        }
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
                groTurnedOn.append(name)
                save()
                do {
                    try TUNDevice.setReceiveOffload(name: name, true)
                    applied.append("GRO on for \(name) (was off; turned off again at exit)")
                } catch {
                    groTurnedOn.removeLast()
                    save()
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
        let changing = was.map { $0 != value && !sysctlsChanged.contains(where: { $0.key == key }) } ?? false
        if changing, let was {
            // Written down before the change: a run killed right after it still finds the old value.
            sysctlsChanged.append((key, was))
            save()
        }
        try value.write(toFile: "/proc/sys/\(key)", atomically: false, encoding: .utf8)
        if changing, let was {
            applied.append("sysctl \(key.replacingOccurrences(of: "/", with: "."))=\(value) (was \(was); put back at exit)")
        } else {
            applied.append("sysctl \(key.replacingOccurrences(of: "/", with: "."))=\(value)")
        }
    }

    /// Runs an `ip` command (through ``HostCommand``, not Foundation's `Process`); it goes into
    /// ``applied`` unless `quiet`. Returns its output.
    /// - Throws: ``SetupError`` with what it printed when it fails.
    @discardableResult
    func run(_ command: [String], quiet: Bool = false) throws -> String {
        let result = try HostCommand.run(Self.ipExecutable, Array(command.dropFirst()))
        if !quiet { applied.append(command.joined(separator: " ")) }
        guard result.status == 0 else {
            throw SetupError(command: command.joined(separator: " "), message: result.errors)
        }
        return result.output
    }

    /// The lines an `ip ... show` prints; a table that does not exist is empty.
    func listing(_ command: [String]) throws -> [String] {
        let result = try HostCommand.run(Self.ipExecutable, Array(command.dropFirst()))
        if result.status != 0 {
            if result.errors.contains("does not exist") { return [] }
            throw SetupError(command: command.joined(separator: " "), message: result.errors)
        }
        return result.output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// Where `ip` is (iproute2).
    static let ipExecutable = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { (path: String) in unsafe access(path, X_OK) == 0 }
        ?? "/usr/sbin/ip"
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
    /// device (`ip route add PREFIX dev DEVICE`, refused when a route to PREFIX is there), with
    /// forwarding on; ``teardown()`` deletes them.
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

    /// `ip route add PREFIX [via NEXTHOP] dev DEVICE` in the main table, deleted again by
    /// ``teardown()`` (that prefix, that device, the main table). A route to the prefix that is
    /// already there (the LAN's own, an operator's) is never replaced: this refuses, naming it.
    func addRoute(_ prefix: String, via nextHop: String? = nil, device: String) throws {
        let family = prefix.contains(":") ? "-6" : "-4"
        if let existing = try listing(["ip", family, "route", "show", "table", "main", "exact", prefix]).first {
            throw SetupRefusal.routeExists(prefix: prefix, existing: existing)
        }
        let add = ["ip", family, "route", "add", prefix] + (nextHop.map { ["via", $0] } ?? []) + ["dev", device, "table", "main"]
        do {
            try change(add, undo: ["ip", family, "route", "del", prefix, "dev", device, "table", "main"])
        } catch let error as SetupError where error.message.contains("File exists") {
            // Added by someone else between the look and the add.
            let existing = (try? listing(["ip", family, "route", "show", "table", "main", "exact", prefix]))?.first
            throw SetupRefusal.routeExists(prefix: prefix, existing: existing ?? prefix)
        }
    }
}

extension RoutingSetup {
    /// Puts `addresses` on `device` and routes each prefix through it (via the next hop of the
    /// prefix's family, when given), with forwarding on; ``teardown()`` removes them.
    public func applyDeviceRoutes(device: String, addresses: [String], routes: [String], nextHops: [String]) throws {
        try enableForwarding(looseReversePath: [])
        for address in addresses {
            let family = address.contains(":") ? "-6" : "-4"
            do {
                try change(["ip", family, "addr", "add", address, "dev", device] + (family == "-6" ? ["nodad"] : []),
                           undo: ["ip", family, "addr", "del", address, "dev", device])
            } catch let error as SetupError where error.message.contains("File exists") {
                // The operator's own address: used, and left in place at exit.
                applied.append("address \(address) already on \(device) (kept at exit)")
            }
        }
        for prefix in routes {
            try addRoute(prefix, via: nextHops.first { $0.contains(":") == prefix.contains(":") }, device: device)
        }
    }
}

/// What `--setup` will not do: take over something it did not make (it could not give it back).
public struct SetupRefusal: Error, CustomStringConvertible {
    /// Why, naming what is in the way.
    public var description: String
    init(_ description: String) { self.description = description }

    static func routeExists(prefix: String, existing: String) -> SetupRefusal {
        SetupRefusal("a route to \(prefix) is already there (\(existing)); --setup does not replace routes it did not "
            + "add (it would delete it at exit): remove that route, or leave \(prefix) out of the prefixes to route")
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
