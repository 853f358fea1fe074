import Foundation
import OffloadForwarder
import OffloadTUN
import OffloadTestSupport
import SystemPackage
import Testing

/// Root, TUN and network namespaces: what these tests need (not socat: they move no traffic).
let hostTestsReady = getuid() == 0 && FileManager.default.fileExists(atPath: "/dev/net/tun")
    && shell("ip netns add ofhs-probe-\(getpid()) && ip netns del ofhs-probe-\(getpid())").status == 0
    && builtExecutable(named: "offload") != nil

/// A network namespace of its own for one test (deleted at the end), with veth interfaces `d0`
/// (10.9.0.1/24, the "LAN") and `d1` (10.8.0.1/24), their peers `p0` and `p1` in it too; its loopback stays down unless `loopback`.
final class HostNamespace {
    let name: String
    let offload: String
    let dir: String

    init(_ tag: String, loopback: Bool = true) throws {
        name = "ofhs\(getpid() % 100_000)\(tag)"
        offload = try #require(offloadExecutable)
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try sh("ip netns del \(name) 2>/dev/null; true")
        let (status, out) = try sh("ip netns add \(name) && ip -n \(name) link add d0 type veth peer name p0 "
            + "&& ip -n \(name) link add d1 type veth peer name p1 "
            + "&& ip -n \(name) addr add 10.9.0.1/24 dev d0 && ip -n \(name) addr add 10.8.0.1/24 dev d1 "
            + "&& for l in d0 p0 d1 p1; do ip -n \(name) link set $l up || exit 1; done"
            + (loopback ? " && ip -n \(name) link set lo up" : ""))
        guard status == 0 else { throw LabError("namespace: \(out)") }
    }

    /// Runs a shell command inside the namespace.
    @discardableResult
    func exec(_ command: String, timeout: Double = 30) throws -> (Int32, String) {
        try sh("ip netns exec \(name) bash -c \(shellQuote(command))", timeout: timeout)
    }

    /// The values of these sysctls, one per line.
    func sysctls(_ keys: String) throws -> [String] {
        try exec("sysctl -n \(keys)").1.split(separator: "\n").map(String.init)
    }

    /// Starts `offload ARGUMENTS` in the background (its log in `dir/<tag>.log`); returns its pid.
    func start(_ arguments: String, tag: String = "run") throws -> Int32 {
        let (_, pid) = try sh("setsid ip netns exec \(name) \(offload) \(arguments) > \(dir)/\(tag).log 2>&1 < /dev/null & echo $!")
        return try #require(Int32(pid.trimmingCharacters(in: .whitespacesAndNewlines)))
    }

    /// Waits (at most 10 s) until `check` holds.
    func wait(_ what: String, _ check: () throws -> Bool) throws {
        for _ in 0..<200 {
            if try check() { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw LabError("\(what) did not happen within 10 s")
    }

    /// Whether process `pid` is gone (waits at most `seconds`).
    func gone(_ pid: Int32, within seconds: Int = 10) -> Bool {
        for _ in 0..<(seconds * 20) {
            if kill(pid, 0) != 0 { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return false
    }

    func log(_ tag: String = "run") -> String { (try? String(contentsOfFile: "\(dir)/\(tag).log", encoding: .utf8)) ?? "" }

    deinit {
        _ = try? sh("ip netns pids \(name) | xargs -r kill -KILL; ip netns del \(name)")
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// The sysctls `--setup` changes in a namespace, set to values it must put back.
let setupSysctls = "net.ipv4.ip_forward net.ipv6.conf.all.forwarding net.ipv4.conf.all.rp_filter"
let originalSysctls = ["0", "0", "2"]

@Suite("--setup on the host: never takes over what it did not make, puts back what it changed", .serialized)
struct HostSafetyTests {
    @Test("--setup refuses a route that is already there (an operator's, the LAN's connected one), names it, and leaves it in place",
          .enabled(if: hostTestsReady, "needs root, /dev/net/tun, network namespaces and the offload executable"))
    func existingRoutesAreKept() throws { try exclusiveNetwork { try existingRoutesAreKeptBody() } }
    func existingRoutesAreKeptBody() throws {
        let ns = try HostNamespace("r")
        try ns.exec("ip route add 10.2.0.0/16 via 10.9.0.2")
        let siit = "siit --ingress hs6 --egress hs4 --pool6 64:ff9b::/96 --setup --duration 2"
        // An operator's route to the prefix.
        let (status, out) = try ns.exec("timeout 20 \(ns.offload) \(siit) --route4 10.2.0.0/16", timeout: 30)
        #expect(status == 1 && out.contains("10.2.0.0/16 via 10.9.0.2 dev d0") && out.contains("already there"), "\(status): \(out)")
        #expect(try ns.exec("ip route show exact 10.2.0.0/16").1.contains("via 10.9.0.2 dev d0"), "the operator's route was removed")
        // The kernel's connected route of the LAN.
        let (connected, connectedOut) = try ns.exec("timeout 20 \(ns.offload) \(siit) --route4 10.9.0.0/24", timeout: 30)
        #expect(connected == 1 && connectedOut.contains("10.9.0.0/24 dev d0"), "\(connected): \(connectedOut)")
        #expect(try ns.exec("ip route show exact 10.9.0.0/24").1.contains("dev d0"), "the LAN's connected route was removed")
        // The tunnel endpoint, the same.
        let (tunnel, tunnelOut) = try ns.exec("timeout 20 \(ns.offload) tunnel --device hst --local 10.9.0.1 --remote 10.9.0.3 "
            + "--id 7 --underlay-mtu 1500 --setup --route 10.2.0.0/16 --duration 2", timeout: 30)
        #expect(tunnel == 1 && tunnelOut.contains("10.2.0.0/16 via 10.9.0.2"), "\(tunnel): \(tunnelOut)")
        #expect(try ns.exec("ip route show exact 10.2.0.0/16").1.contains("via 10.9.0.2 dev d0"))
        // The forwarder's policy tables: one that holds a route already is not used.
        try ns.exec("ip route add default via 10.9.0.2 table 4100")
        let (forward, forwardOut) = try ns.exec("timeout 20 \(ns.offload) forward --ingress hsa --egress hsb --setup --lan d0 --wan d1 "
            + "--duration 2", timeout: 30)
        #expect(forward == 1 && forwardOut.contains("table 4100 is in use"), "\(forward): \(forwardOut)")
        #expect(try ns.exec("ip route show table 4100").1.contains("default via 10.9.0.2"))
        #expect(try !ns.exec("ip rule").1.contains("lookup 4100"), "a rule was left behind")
        // Nor one that a rule already looks up.
        try ns.exec("ip route del default via 10.9.0.2 table 4100 && ip rule add from 10.7.0.0/24 lookup 4101 priority 300")
        let (ruled, ruledOut) = try ns.exec("timeout 20 \(ns.offload) forward --ingress hsa --egress hsb --setup --lan d0 --wan d1 "
            + "--duration 2", timeout: 30)
        #expect(ruled == 1 && ruledOut.contains("a rule already uses table 4101"), "\(ruled): \(ruledOut)")
        #expect(try ns.exec("ip rule").1.contains("from 10.7.0.0/24 lookup 4101"), "the operator's rule was removed")
        #expect(try !ns.exec("ip rule").1.contains("lookup 4100"), "a rule was left behind")
        // What it may add, it adds and removes: a free prefix beside the operator's route.
        let (free, freeOut) = try ns.exec("timeout 20 \(ns.offload) \(siit) --route4 10.3.0.0/16", timeout: 30)
        #expect(free == 0, "\(freeOut)")
        #expect(try ns.exec("ip route").1.contains("10.2.0.0/16 via 10.9.0.2 dev d0"))
        #expect(try !ns.exec("ip route").1.contains("10.3.0.0/16"), "its own route was not removed at exit")
    }

    @Test("kill -9, then a run that stops cleanly: the sysctls --setup changed are back at their original values, the leftover rules gone",
          .enabled(if: hostTestsReady, "needs root, /dev/net/tun, network namespaces and the offload executable"))
    func killedRunIsPutBack() throws { try exclusiveNetwork { try killedRunIsPutBackBody() } }
    func killedRunIsPutBackBody() throws {
        let ns = try HostNamespace("k")
        try ns.exec("sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 net.ipv4.conf.all.rp_filter=2")
        #expect(try ns.sysctls(setupSysctls) == originalSysctls)
        let arguments = "forward --ingress hka --egress hkb --setup --lan d0 --wan d1"
        // Journals of these test-only devices left by an earlier run of this test (its namespace is gone).
        try sh("rm -f /run/offload/setup-*-hka-hkb.json")
        // Its parent never reaps it (as a service manager may not at once): killed, it stays a zombie
        // with its pid, and the next run must not take it for a running gateway.
        let launch = "ip netns exec \(ns.name) \(ns.offload) \(arguments) --duration 60 > \(ns.dir)/first.log 2>&1 & "
            + "echo $! > \(ns.dir)/first.pid; echo $$ > \(ns.dir)/parent.pid; exec sleep 30"
        try sh("setsid bash -c \(shellQuote(launch)) > /dev/null 2>&1 < /dev/null &")
        defer {
            // The parent that never reaps (its pid, written by itself).
            if let parent = Int32((try? String(contentsOfFile: "\(ns.dir)/parent.pid", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? "") { kill(parent, SIGKILL) }
        }
        try ns.wait("the first run's rules") { RoutingSetup.isApplied(ruleListing: try ns.exec("ip rule").1) }
        let first = try #require(Int32((try String(contentsOfFile: "\(ns.dir)/first.pid", encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)))
        try sh("kill -KILL \(first)")
        try ns.wait("the first run to be killed") {
            (try? String(contentsOfFile: "/proc/\(first)/stat", encoding: .utf8))?.contains(") Z ") ?? true
        }
        // Killed: the sysctls stay changed, the rules stay.
        #expect(try ns.sysctls(setupSysctls) == ["1", "1", "0"])
        #expect(try ns.exec("ip rule").1.contains("lookup 4100"))
        // The next run puts them back before it sets up anew, and puts back the originals at its end.
        let (status, out) = try ns.exec("timeout 20 \(ns.offload) \(arguments) --duration 2", timeout: 30)
        #expect(status == 0, "\(out)")
        #expect(out.contains("put back"), "the restart says what it put back: \(out)")
        #expect(try ns.sysctls(setupSysctls) == originalSysctls, "\(out)")
        #expect(try !ns.exec("ip rule").1.contains("lookup 4100"))
        #expect(try sh("ls /run/offload 2>/dev/null").1.contains("-hka-hkb.json") == false, "the journal outlived a clean exit")
    }

    @Test("--cleanup puts back what a killed run left, without starting; a second --cleanup finds nothing",
          .enabled(if: hostTestsReady, "needs root, /dev/net/tun, network namespaces and the offload executable"))
    func cleanupOption() throws { try exclusiveNetwork { try cleanupOptionBody() } }
    func cleanupOptionBody() throws {
        let ns = try HostNamespace("x")
        try sh("rm -f /run/offload/setup-*-hx4-hx6.json")
        try ns.exec("sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 net.ipv4.conf.all.rp_filter=2")
        let siit = "siit --ingress hx6 --egress hx4 --pool6 64:ff9b::/96 --setup --route4 198.18.8.0/24"
        let first = try ns.start(siit + " --duration 60")
        try ns.wait("the route into hx4") { try ns.exec("ip route").1.contains("198.18.8.0/24 dev hx4") }
        kill(first, SIGKILL)
        try ns.wait("the run to be killed") { try !ns.exec("ip link").1.contains("hx4") }
        #expect(try ns.sysctls(setupSysctls) == ["1", "1", "0"])
        let (status, out) = try ns.exec("timeout 20 \(ns.offload) \(siit) --cleanup", timeout: 30)
        #expect(status == 0 && out.contains("put back") && out.contains("net.ipv4.ip_forward=0"), "\(status): \(out)")
        #expect(try ns.sysctls(setupSysctls) == originalSysctls)
        let (again, againOut) = try ns.exec("timeout 20 \(ns.offload) \(siit) --cleanup", timeout: 30)
        #expect(again == 0 && againOut.contains("nothing to put back"), "\(againOut)")
        #expect(try ns.sysctls(setupSysctls) == originalSysctls)
    }

    @Test("a namespace whose loopback is down: siit and forward with --setup stop on their duration and on SIGTERM, and put the sysctls back",
          .enabled(if: hostTestsReady, "needs root, /dev/net/tun, network namespaces and the offload executable"))
    func loopbackDown() throws { try exclusiveNetwork { try loopbackDownBody() } }
    func loopbackDownBody() throws {
        let ns = try HostNamespace("l", loopback: false)
        #expect(try ns.exec("ip link show lo").1.contains("state DOWN"))
        try ns.exec("sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 net.ipv4.conf.all.rp_filter=2")
        let siit = "siit --ingress hl6 --egress hl4 --pool6 64:ff9b::/96 --setup --route4 198.18.7.0/24"
        let (status, out) = try ns.exec("timeout 20 \(ns.offload) \(siit) --duration 2", timeout: 30)
        #expect(status == 0, "exit \(status) (124: still running after 20 s): \(out)")
        #expect(try ns.sysctls(setupSysctls) == originalSysctls)
        let (forward, forwardOut) = try ns.exec("timeout 20 \(ns.offload) forward --ingress hla --egress hlb --setup --lan d0 --wan d1 "
            + "--duration 2", timeout: 30)
        #expect(forward == 0, "exit \(forward): \(forwardOut)")
        #expect(try ns.sysctls(setupSysctls) == originalSysctls)
        // SIGTERM, with no duration.
        let pid = try ns.start(siit, tag: "term")
        try ns.wait("the route into hl4") { try ns.exec("ip route").1.contains("198.18.7.0/24 dev hl4") }
        kill(pid, SIGTERM)
        #expect(ns.gone(pid), "SIGTERM did not stop it: \(ns.log("term"))")
        #expect(try ns.sysctls(setupSysctls) == originalSysctls)
        #expect(try !ns.exec("ip route").1.contains("198.18.7.0/24"))
    }

    @Test("offload ipsec --config: the status file names its writer and time; a status that cannot be written is logged once",
          .enabled(if: hostTestsReady, "needs root, /dev/net/tun, network namespaces and the offload executable"))
    func ipsecStatusWriter() throws { try exclusiveNetwork { try ipsecStatusWriterBody() } }
    func ipsecStatusWriterBody() throws {
        let ns = try HostNamespace("i")
        let config = "\(ns.dir)/gw.conf"
        let text = """
            connections {
              site {
                local_addrs = 10.9.0.1
                remote_addrs = 10.9.0.2
                proposals = aes128gcm16-prfsha256-x25519
                local { auth = psk
                  id = gw1 }
                remote { auth = psk
                  id = gw2 }
                children {
                  net {
                    local_ts = 10.88.1.0/24
                    remote_ts = 10.88.2.0/24
                    esp_proposals = aes128gcm16
                    start_action = none
                  }
                }
              }
            }
            secrets {
              ike-site { id = gw2
                secret = "host-safety-test-psk" }
            }
            """
        FileManager.default.createFile(atPath: config, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
        // Written: the writer's pid and the time.
        let status = "\(ns.dir)/gw.status"
        let (ok, okOut) = try ns.exec("timeout 20 \(ns.offload) ipsec --config \(config) --device hi0 --status-file \(status) "
            + "--duration 2.5", timeout: 30)
        #expect(ok == 0, "\(okOut)")
        let written = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: status))) as? [String: Any]
        #expect((written?["pid"] as? Int ?? 0) > 0 && (written?["written"] as? Double ?? 0) > 1_700_000_000, "\(String(describing: written))")
        // Not writable (no such directory): said once, not once a second.
        let (failed, failedOut) = try ns.exec("timeout 20 \(ns.offload) ipsec --config \(config) --device hi0 "
            + "--status-file \(ns.dir)/missing/gw.status --duration 3.5", timeout: 30)
        #expect(failed == 0, "\(failedOut)")
        #expect(failedOut.components(separatedBy: "cannot write the status to \(ns.dir)/missing/gw.status").count - 1 == 1, "\(failedOut)")
    }

    @Test("TUNSETIFF refused: the message says it needs root or CAP_NET_ADMIN")
    func tunPermissionMessage() {
        let error = TUNError(operation: "TUNSETIFF", device: "tun0", errno: .notPermitted)
        #expect(error.description.contains("needs root or CAP_NET_ADMIN"), "\(error)")
        #expect(!TUNError(operation: "TUNSETIFF", device: "tun0", errno: .resourceBusy).description.contains("CAP_NET_ADMIN"))
    }

    @Test("without CAP_NET_ADMIN, offload siit says what it needs",
          .enabled(if: hostTestsReady && installed("setpriv"), "needs root, network namespaces and setpriv"))
    func withoutCapability() throws {
        let ns = try HostNamespace("c")
        let (status, out) = try ns.exec("timeout 20 setpriv --bounding-set -net_admin --inh-caps -net_admin \(ns.offload) siit "
            + "--ingress hc6 --egress hc4 --pool6 64:ff9b::/96 --duration 1", timeout: 30)
        #expect(status == 1 && out.contains("TUNSETIFF") && out.contains("needs root or CAP_NET_ADMIN"), "\(status): \(out)")
    }

    @Test("--metrics [::1]:PORT: the live gateway serves its counters over IPv6",
          .enabled(if: hostTestsReady && installed("curl"), "needs root, network namespaces and curl"))
    func metricsOverIPv6() throws { try exclusiveNetwork { try metricsOverIPv6Body() } }
    func metricsOverIPv6Body() throws {
        let ns = try HostNamespace("m")
        let pid = try ns.start("siit --ingress hm6 --egress hm4 --pool6 64:ff9b::/96 --metrics [::1]:9105 --duration 20")
        defer { kill(pid, SIGTERM) }
        var scraped = ""
        try ns.wait("an answer on [::1]:9105") {
            scraped = try ns.exec("curl -s -g -m 2 http://[::1]:9105/metrics").1
            return scraped.contains("offload_")
        }
        #expect(scraped.contains("offload_siit"), "\(scraped.prefix(300)) \(ns.log())")
    }
}
