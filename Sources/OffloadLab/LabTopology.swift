import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Three network namespaces joined by two veth pairs, built for one scenario and removed after it:
///
///     client c0 10.77.1.2/24 fd77:1::2/64 ── g0 gateway g1 ── s0 10.77.2.2/24 fd77:2::2/64 server
///                                            10.77.1.1     10.77.2.1
///
/// Names start with `olab<pid>s<n>` so that nothing on the host is touched and a later run can
/// tell a dead run's leftovers (its pid is gone) from a live one's. Segmentation offloads are off on
/// every veth, and GRO is off on the gateway unless a scenario turns it on, so the gateway sees
/// wire-size packets, as from a real NIC with offloads off. The route towards the server gets the
/// scenario's egress MTU (locked, so forwarding honours it, IPv6 too); links stay at 1500, as behind
/// a tunnel: the server's SYN advertises the full MSS and the sender must learn the smaller path MTU
/// from ICMP (with DF set, as Linux sets it), while the server's own full-size packets still pass.
public struct LabTopology: Sendable {
    /// The namespace name prefix.
    public let prefix: String
    /// The client namespace.
    public var client: String { "\(prefix)-client" }
    /// The gateway namespace.
    public var gateway: String { "\(prefix)-gw" }
    /// The server namespace.
    public var server: String { "\(prefix)-server" }
    /// The server's address for the family.
    public static func serverAddress(ipv6: Bool) -> String { ipv6 ? "fd77:2::2" : "10.77.2.2" }
    /// The client's address for the family.
    public static func clientAddress(ipv6: Bool) -> String { ipv6 ? "fd77:1::2" : "10.77.1.2" }

    /// A topology for scenario run `index` of this process.
    public init(run index: Int) { prefix = "olab\(getpid())s\(index)" }

    /// The translator rows' prefix: the IPv4 server as the IPv6 client sees it.
    public static let translatorPool6 = "2001:db8:64::/96"
    /// The server (10.77.2.2) through ``translatorPool6``.
    public static let serverSeenFromIPv6 = "2001:db8:64::a4d:202"
    /// The pool4 address `offload nat64` shares among the IPv6 clients in the NAT64 rows (the server
    /// reaches it through its default route via the gateway).
    public static let nat64Pool4 = "198.51.100.1"

    /// The IPv4 prefix the IPv6 client appears as (an EAM entry for `fd77:1::/120`).
    public static let clientIPv4Prefix = "198.18.1.0/24"

    /// Builds it. `translator`: the client gets only its IPv6 address and the server only its IPv4 one.
    func up(egressMTU: Int, gatewayGRO: Bool, translator: Bool = false, scratch: String) throws {
        let ip = { (args: String) in
            _ = try runChecked(["ip"] + args.split(separator: " ").map(String.init), scratch: scratch)
        }
        for ns in [client, gateway, server] {
            try ip("netns add \(ns)")
            try ip("-n \(ns) link set lo up")
        }
        try ip("link add \(prefix)a type veth peer name \(prefix)b")
        try ip("link set \(prefix)a netns \(client) name c0")
        try ip("link set \(prefix)b netns \(gateway) name g0")
        try ip("link add \(prefix)a type veth peer name \(prefix)b")
        try ip("link set \(prefix)a netns \(gateway) name g1")
        try ip("link set \(prefix)b netns \(server) name s0")
        if !translator { try ip("-n \(client) addr add 10.77.1.2/24 dev c0") }
        try ip("-n \(client) addr add fd77:1::2/64 dev c0 nodad")
        try ip("-n \(gateway) addr add 10.77.1.1/24 dev g0")
        try ip("-n \(gateway) addr add fd77:1::1/64 dev g0 nodad")
        try ip("-n \(gateway) addr add 10.77.2.1/24 dev g1")
        try ip("-n \(gateway) addr add fd77:2::1/64 dev g1 nodad")
        try ip("-n \(server) addr add 10.77.2.2/24 dev s0")
        if !translator { try ip("-n \(server) addr add fd77:2::2/64 dev s0 nodad") }
        for (ns, dev) in [(client, "c0"), (gateway, "g0"), (gateway, "g1"), (server, "s0")] {
            try ip("-n \(ns) link set \(dev) up")
            let gro = dev == "g0" && gatewayGRO ? "on" : "off"
            // ethtool is optional: without it veths keep their defaults, and the row says so.
            _ = try? runCommand(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", gro],
                         scratch: scratch)
        }
        if !translator { try ip("-n \(client) route add default via 10.77.1.1") }
        try ip("-n \(client) -6 route add default via fd77:1::1")
        try ip("-n \(server) route add default via 10.77.2.1")
        if !translator { try ip("-n \(server) -6 route add default via fd77:2::1") }
        if egressMTU < 1500 {
            // A locked route MTU, not the link's: the gateway forwards at most egressMTU towards the
            // server (and says so with ICMP), while the server's 1500-byte replies still arrive.
            try ip("-n \(gateway) route replace 10.77.2.0/24 dev g1 proto kernel scope link src 10.77.2.1 mtu lock \(egressMTU)")
            try ip("-n \(gateway) -6 route replace fd77:2::/64 dev g1 proto kernel metric 256 mtu lock \(egressMTU)")
        }
        try runChecked(["ip", "netns", "exec", gateway, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                        "net.ipv6.conf.all.forwarding=1"], scratch: scratch)
    }

    /// The second gateway of a tunnel row (the far tunnel end).
    public var gateway2: String { "\(prefix)-gw2" }

    /// Builds the tunnel rows' topology, the first seed's shape: client — gateway — underlay (its
    /// MTU `underlayMTU`) — gateway2 — server, IPv4. The underlay is `192.168.77.1` (on the gateway's
    /// `u0`) to `192.168.77.2` (gateway2's `u1`); the tunnel (the kernel's or `offload tunnel`) is
    /// the row's. The gateways' inner interfaces have GRO on, as a NIC in production does.
    func upTunnel(underlayMTU: Int, scratch: String) throws {
        let ip = { (args: String) in
            _ = try runChecked(["ip"] + args.split(separator: " ").map(String.init), scratch: scratch)
        }
        for ns in [client, gateway, gateway2, server] {
            try ip("netns add \(ns)")
            try ip("-n \(ns) link set lo up")
        }
        for (a, aName, b, bName) in [(client, "c0", gateway, "g0"), (gateway, "u0", gateway2, "u1"), (gateway2, "g1", server, "s0")] {
            try ip("link add \(prefix)a type veth peer name \(prefix)b")
            try ip("link set \(prefix)a netns \(a) name \(aName)")
            try ip("link set \(prefix)b netns \(b) name \(bName)")
        }
        try ip("-n \(client) addr add 10.77.1.2/24 dev c0")
        try ip("-n \(gateway) addr add 10.77.1.1/24 dev g0")
        try ip("-n \(gateway) addr add 192.168.77.1/24 dev u0")
        try ip("-n \(gateway2) addr add 192.168.77.2/24 dev u1")
        try ip("-n \(gateway2) addr add 10.77.2.1/24 dev g1")
        try ip("-n \(server) addr add 10.77.2.2/24 dev s0")
        for (ns, dev) in [(client, "c0"), (gateway, "g0"), (gateway, "u0"), (gateway2, "u1"), (gateway2, "g1"), (server, "s0")] {
            try ip("-n \(ns) link set \(dev) up")
            if dev.hasPrefix("u") {
                try ip("-n \(ns) link set \(dev) mtu \(underlayMTU)")
            } else {
                let gro = dev.hasPrefix("g") ? "on" : "off"
                _ = try? runCommand(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", gro],
                                    scratch: scratch)
            }
        }
        try ip("-n \(client) route add default via 10.77.1.1")
        try ip("-n \(server) route add default via 10.77.2.1")
        for ns in [gateway, gateway2] {
            try runChecked(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"], scratch: scratch)
        }
    }

    /// Removes it: kills whatever still runs inside, then deletes the namespaces (which takes the
    /// veths with them). Never throws: it is the cleanup.
    func down(scratch: String) {
        Self.remove(namespaces: [client, gateway, gateway2, server], scratch: scratch)
    }

    /// The namespaces that exist now.
    static func existingNamespaces(scratch: String) -> [String] {
        guard let out = try? runChecked(["ip", "netns", "list"], interruptible: false, scratch: scratch) else { return [] }
        return out.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
    }

    static func remove(namespaces: [String], scratch: String) {
        let existing = Set(existingNamespaces(scratch: scratch))
        for ns in namespaces where existing.contains(ns) {
            if let pids = try? runChecked(["ip", "netns", "pids", ns], timeout: 5, interruptible: false, scratch: scratch) {
                for pid in pids.split(separator: "\n").compactMap({ pid_t($0) }) { kill(pid, SIGKILL) }
            }
            _ = try? runCommand(["ip", "netns", "del", ns], timeout: 10, interruptible: false, scratch: scratch)
        }
    }

    /// Removes namespaces left by lab runs whose process is gone (killed with SIGKILL, say);
    /// returns their names.
    @discardableResult
    public static func removeStale(scratch: String) -> [String] {
        let stale = existingNamespaces(scratch: scratch).filter { name in
            guard name.hasPrefix("olab"), let s = name.dropFirst(4).split(separator: "s").first,
                let pid = pid_t(s)
            else { return false }
            return pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH
        }
        remove(namespaces: stale, scratch: scratch)
        return stale
    }

    /// Lab namespaces of this process that still exist.
    public static func leftovers(scratch: String) -> [String] {
        existingNamespaces(scratch: scratch).filter { $0.hasPrefix("olab\(getpid())s") }
    }
}
