import Foundation
import OffloadForwarder
import OffloadTestSupport
import Testing

/// Runs a command with bash (bounded by `timeout` seconds); its exit status and output.
@discardableResult
private func run(_ command: String, timeout: Int = 60) -> (status: Int32, output: String) {
    shell(command, timeout: timeout)
}

/// Whether python3 runs here (the tests' small servers, clients and the junk sender are python3).
private let python3Present = run("command -v python3 && python3 -c 'import socket'").status == 0

/// The NAT64 lab (scripts/netns-nat64-topology.sh): three IPv6-only clients, a gateway that runs
/// `offload nat64` between two TUN devices, an IPv4 router and an IPv4-only server. The server
/// reaches the pool4 address through its default route (the router, then the gateway).
final class NAT64Lab {
    let prefix = "on64\(getpid() % 100_000)"
    var clients: [String] { (1...3).map { "\(prefix)-c\($0)" } }
    var gateway: String { "\(prefix)-gw" }
    var router: String { "\(prefix)-rt" }
    var server: String { "\(prefix)-srv" }
    let dir: String
    var statusFile: String { "\(dir)/nat64.status" }
    var statsFile: String { "\(dir)/stats.json" }
    var log: String { "\(dir)/nat64.log" }
    /// The running translator's process ID.
    private(set) var translator: Int32?
    /// Background helpers (servers, clients) this lab started, ended at the end by their IDs.
    private var helpers: [Int32] = []

    /// The RFC 6052 prefix (network-specific), the pool4, the server and how the clients address it.
    static let pool6 = "2001:db8:64::/96"
    static let pool4 = "198.51.100.1"
    static let server4 = "10.64.1.2"
    static let serverSeenFromIPv6 = "2001:db8:64::a40:102"
    /// Client `n`'s (1...3) address.
    static func clientAddress(_ n: Int) -> String { "fd64:\(n)::2" }

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        run("\(projectRoot.path)/scripts/netns-nat64-topology.sh down \(prefix)")
        let (status, out) = run("\(projectRoot.path)/scripts/netns-nat64-topology.sh up \(prefix)")
        guard status == 0 else { throw NAT64LabError("topology: \(out)") }
    }

    /// Starts `offload nat64` on the gateway (`n64six` on the IPv6 side, `n64four` on the IPv4
    /// side, --setup), and waits (at most 5 s) until its routes and its status file are there.
    func startTranslator(_ arguments: [String] = []) throws {
        guard let offload = builtExecutable(named: "offload") else { throw NAT64LabError("offload executable not found") }
        try? FileManager.default.removeItem(atPath: statsFile)
        let command = ["setsid", "ip", "netns", "exec", gateway, offload, "nat64", "--ingress", "n64six", "--egress", "n64four",
                       "--pool6", Self.pool6, "--pool4", Self.pool4, "--setup", "--status-file", statusFile,
                       "--stats-json", statsFile, "--metrics", "127.0.0.1:9163", "--duration", "170"] + arguments
        let (_, pid) = run(command.joined(separator: " ") + " > \(log) 2>&1 < /dev/null & echo $!")
        translator = Int32(pid.trimmingCharacters(in: .whitespacesAndNewlines))
        for _ in 0..<100 {
            let routes = run("ip -n \(gateway) -6 route").output
            if routes.contains("2001:db8:64::/96 dev n64six"), FileManager.default.fileExists(atPath: statusFile) { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw NAT64LabError("translator did not start: \(logText)")
    }

    /// What the translator printed.
    var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

    /// Whether the translator still runs.
    var translatorRunning: Bool { translator.map(Self.alive) ?? false }

    /// Whether a process runs (a zombie that nobody reaped yet does not).
    static func alive(_ pid: Int32) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        guard let close = stat.lastIndex(of: ")") else { return false }
        return !stat[close...].hasPrefix(") Z")
    }

    /// Stops the translator (SIGTERM) and returns its final counters (at most 10 s of waiting).
    func stopTranslator() throws -> [String: ForwarderStatistics] {
        guard let pid = translator else { throw NAT64LabError("no translator") }
        kill(pid, SIGTERM)
        for _ in 0..<200 where Self.alive(pid) { Thread.sleep(forTimeInterval: 0.05) }
        translator = nil
        let data = try Data(contentsOf: URL(fileURLWithPath: statsFile))
        return try JSONDecoder().decode([String: ForwarderStatistics].self, from: data)
    }

    /// The translator's state as `offload nat64 --sessions --json` prints it.
    func sessions() throws -> NAT64StatusJSON {
        guard let offload = builtExecutable(named: "offload") else { throw NAT64LabError("offload executable not found") }
        let (status, out) = run("\(offload) nat64 --sessions --status-file \(statusFile) --json 2>/dev/null")
        guard status == 0 else { throw NAT64LabError("--sessions: exit \(status): \(out)") }
        return try JSONDecoder().decode(NAT64StatusJSON.self, from: Data(out.utf8))
    }

    /// Polls `--sessions` (every 0.1 s, at most `seconds`) until `condition` holds; the last state.
    func sessions(within seconds: Double, until condition: (NAT64StatusJSON) -> Bool) throws -> NAT64StatusJSON {
        let start = Date()
        var state = try sessions()
        while !condition(state), Date().timeIntervalSince(start) < seconds {
            Thread.sleep(forTimeInterval: 0.1)
            state = try sessions()
        }
        return state
    }

    /// Starts a command in the background in a namespace (bounded by `seconds`); its process ID.
    @discardableResult
    func background(_ namespace: String, _ command: String, seconds: Int, output: String = "/dev/null") -> Int32 {
        let (_, pid) = run("setsid ip netns exec \(namespace) timeout \(seconds) \(command) > \(output) 2>&1 < /dev/null & echo $!")
        let id = Int32(pid.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        if id > 0 { helpers.append(id) }
        return id
    }

    /// Waits (at most `seconds`) for a background process to end; whether it did.
    @discardableResult
    func wait(for pid: Int32, seconds: Double) -> Bool {
        let start = Date()
        while Self.alive(pid), Date().timeIntervalSince(start) < seconds { Thread.sleep(forTimeInterval: 0.05) }
        return !Self.alive(pid)
    }

    /// Waits (at most 3 s) until something listens on `port` (TCP or UDP) in a namespace.
    func waitForListener(_ namespace: String, port: Int, udp: Bool = false) {
        for _ in 0..<60 where !run("ip netns exec \(namespace) ss -\(udp ? "u" : "t")lnH sport = :\(port)").output.contains(":\(port)") {
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// Sends `megabytes` of random data over TCP between IPv6-only `client` and the IPv4-only
    /// server through the translator (the client connects in both directions: `upload` says who
    /// sends); whether what arrived is what was sent (SHA-256), and the bytes that arrived.
    func transfer(megabytes: Int, client: String, upload: Bool, port: Int = 5001, seconds: Int = 60)
        -> (identical: Bool, received: Int)
    {
        let send = "\(dir)/send-\(port).bin", receive = "\(dir)/recv-\(port).bin"
        run("head -c \(megabytes * 1_000_000) /dev/urandom > \(send); rm -f \(receive)")
        let remote = "TCP6:[\(Self.serverSeenFromIPv6)]:\(port)"
        if upload {
            let listener = background(server, "socat -u TCP4-LISTEN:\(port),reuseaddr OPEN:\(receive),creat,trunc", seconds: seconds + 5)
            waitForListener(server, port: port)
            run("ip netns exec \(client) socat -u OPEN:\(send) \(remote)", timeout: seconds)
            // The receiver ends by itself at the sender's FIN.
            wait(for: listener, seconds: Double(seconds))
        } else {
            let listener = background(server, "socat -u OPEN:\(send) TCP4-LISTEN:\(port),reuseaddr", seconds: seconds + 5)
            waitForListener(server, port: port)
            run("ip netns exec \(client) socat -u \(remote) OPEN:\(receive),creat,trunc", timeout: seconds)
            wait(for: listener, seconds: 5)
        }
        let sums = run("sha256sum \(send) \(receive) | awk '{print $1}' | uniq | wc -l").output
        let size = (try? FileManager.default.attributesOfItem(atPath: receive)[.size] as? Int) ?? 0
        return (sums.trimmingCharacters(in: .whitespacesAndNewlines) == "1" && size == megabytes * 1_000_000, size)
    }

    /// Writes a python3 script into the lab's directory; its path.
    func script(_ name: String, _ text: String) throws -> String {
        let path = "\(dir)/\(name)"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Whether a process runs with this lab's directory on its command line (so that the ID was
    /// not reused by some other process since).
    func ours(_ pid: Int32) -> Bool {
        let commandLine = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
        return Self.alive(pid) && String(decoding: commandLine, as: UTF8.self).contains(dir)
    }

    deinit {
        for pid in helpers + (translator.map { [$0] } ?? []) where ours(pid) { kill(pid, SIGKILL) }
        run("\(projectRoot.path)/scripts/netns-nat64-topology.sh down \(prefix)")
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// `offload nat64 --sessions --json`: the status file, decoded on its own terms (the field names
/// an operator's script would read).
struct NAT64StatusJSON: Decodable {
    struct State: Decodable {
        var sessions: [String: Int]
        var bindings: [String: Int]
        var expired: Int
        var stored_syns: Int
        var entries: [Binding]
        var omitted: Int
    }
    struct Binding: Decodable {
        var `protocol`: String
        var ipv6: String
        var ipv4: String
        var sessions: [Session]
    }
    struct Session: Decodable {
        var remote: String
        var state: String?
        var expires_in: Double
    }
    var pid: Int32?
    var state: State

    /// The bindings of one protocol.
    func bindings(_ proto: String) -> [Binding] { state.entries.filter { $0.protocol == proto } }
}

struct NAT64LabError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

extension ForwarderStatistics {
    /// The sum of a stage counter over all its labels.
    func stageTotal(_ name: String) -> Int { stage.filter { $0.name == name }.reduce(0) { $0 + $1.value } }
}

/// `offload nat64` live between two TUN devices, with the kernel's TCP and UDP at both ends: IPv6-only
/// clients reach an IPv4-only server only through the translator's pool4 address.
@Suite("offload nat64 between IPv6-only clients and an IPv4-only server", .serialized)
struct NAT64NetnsTests {
    @Test("64 MB each way intact through the translator, with the gateway's GRO on: super-packets translated in place",
          .enabled(if: netnsReady, "\(netnsSkipReason)"), .enabled(if: offloadBuilt, "the offload executable is not built"))
    func integrity() throws { try exclusiveNetwork { try integrityBody() } }
    func integrityBody() throws {
        let lab = try NAT64Lab()
        // The kernel's GRO on the gateway's links: what the client and the server send arrives as
        // super-packets (the topology turns it off).
        run("ip netns exec \(lab.gateway) ethtool -K g1 gro on; ip netns exec \(lab.gateway) ethtool -K g4 gro on")
        try lab.startTranslator()
        let up = lab.transfer(megabytes: 64, client: lab.clients[0], upload: true)
        #expect(up.identical, "IPv6 client -> IPv4 server: \(up.received) bytes")
        let down = lab.transfer(megabytes: 64, client: lab.clients[0], upload: false, port: 5002)
        #expect(down.identical, "IPv4 server -> IPv6 client: \(down.received) bytes")
        // The Prometheus endpoint serves the stage's counters and gauges while it runs.
        let scrape = run("ip netns exec \(lab.gateway) bash -c 'exec 3<>/dev/tcp/127.0.0.1/9163; "
            + "printf \"GET /metrics HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'").output
        #expect(scrape.contains("offload_nat64_super_packets"), "\(scrape.prefix(400))")
        let stats = try lab.stopTranslator()
        let toIPv4 = try #require(stats["lan_to_wan"])
        let toIPv6 = try #require(stats["wan_to_lan"])
        #expect(toIPv4.stageCounter("nat64_translated", ["to": "ipv4"]) > 1000)
        #expect(toIPv6.stageCounter("nat64_translated", ["to": "ipv6"]) > 1000)
        let superPackets = (toIPv4.stageCounter("nat64_super_packets"), toIPv6.stageCounter("nat64_super_packets"))
        #expect(superPackets.0 > 0 && superPackets.1 > 0, "super-packets looked up once and translated in place: \(superPackets)")
        #expect(toIPv4.tsoIn > 0, "the kernel's GRO super-packets reached the translator: \(toIPv4.tsoIn)")
        #expect(toIPv4.writeErrors == 0 && toIPv6.writeErrors == 0)
        #expect(!run("ip -n \(lab.gateway) -6 route").output.contains("n64six"), "the routes --setup added are removed at exit")
    }

    @Test("12 TCP flows from 3 IPv6 hosts share the one IPv4 address: distinct ports, one binding per flow in --sessions",
          .enabled(if: netnsReady, "\(netnsSkipReason)"), .enabled(if: offloadBuilt, "the offload executable is not built"),
          .enabled(if: python3Present, "python3 is not installed"))
    func manyFlowsShareOneAddress() throws { try exclusiveNetwork { try manyFlowsShareOneAddressBody() } }
    func manyFlowsShareOneAddressBody() throws {
        let lab = try NAT64Lab()
        try lab.startTranslator()
        let flowsPerHost = 4, total = 3 * flowsPerHost
        // The server logs each connection's peer (as the IPv4 side sees it) and the first line the
        // client sent on it (its own IPv6 address and port), and holds every connection open until
        // told to let go (a file), so that the sessions are all established when they are read.
        let serverScript = try lab.script("server.py", """
            import os, socket, sys, time
            expected, log, release = int(sys.argv[1]), sys.argv[2], sys.argv[3]
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('0.0.0.0', 5010)); s.listen(64); s.settimeout(15)
            held = []
            with open(log, 'w') as out:
                while len(held) < expected:
                    c, peer = s.accept()
                    c.settimeout(5)
                    line = b''
                    while not line.endswith(b'\\n'):
                        chunk = c.recv(100)
                        if not chunk: break
                        line += chunk
                    out.write('%s %d %s\\n' % (peer[0], peer[1], line.decode().strip())); out.flush()
                    held.append(c)
            deadline = time.time() + 20
            while not os.path.exists(release) and time.time() < deadline: time.sleep(0.05)
            for c in held: c.close()
            """)
        let clientScript = try lab.script("client.py", """
            import socket, sys
            server, count = sys.argv[1], int(sys.argv[2])
            conns = []
            for _ in range(count):
                c = socket.create_connection((server, 5010), timeout=5)
                host, port = c.getsockname()[:2]
                c.sendall(('[%s]:%d\\n' % (host, port)).encode())
                conns.append(c)
            for c in conns:
                c.settimeout(25)
                while c.recv(100): pass
            """)
        let log = "\(lab.dir)/peers.log", release = "\(lab.dir)/release"
        let serverPID = lab.background(lab.server, "python3 \(serverScript) \(total) \(log) \(release)", seconds: 40,
                                       output: "\(lab.dir)/server.out")
        lab.waitForListener(lab.server, port: 5010)
        let clientPIDs = lab.clients.map {
            lab.background($0, "python3 \(clientScript) \(NAT64Lab.serverSeenFromIPv6) \(flowsPerHost)", seconds: 40)
        }
        var peers: [Substring] = []
        for _ in 0..<200 {
            peers = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n")
            if peers.count >= total { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        #expect(peers.count == total, "the server saw \(peers.count) connections: \(peers) \(run("cat \(lab.dir)/server.out").output)")
        let seen = peers.map { $0.split(separator: " ").map(String.init) }.filter { $0.count == 3 }
        #expect(seen.allSatisfy { $0[0] == NAT64Lab.pool4 }, "every connection comes from the pool4 address: \(seen)")
        #expect(Set(seen.map { $0[1] }).count == total, "each flow has its own port: \(seen.map { $0[1] })")
        #expect(Set(seen.map { $0[2] }).count == total)
        #expect(Set(seen.map { $0[2].split(separator: "]").first ?? "" }).count == 3, "from 3 IPv6 hosts: \(seen)")

        // --sessions (written each second): one TCP binding per flow, and it is the mapping the server saw.
        let state = try lab.sessions(within: 3) { $0.bindings("tcp").count >= total && $0.state.sessions["tcp"] == total }
        let tcp = state.bindings("tcp")
        #expect(tcp.count == total && state.state.bindings["tcp"] == total && state.state.sessions["tcp"] == total,
                "\(tcp.map { "\($0.ipv6) <-> \($0.ipv4)" }) \(state.state.bindings) \(state.state.sessions)")
        let listed = Set(tcp.map { "\($0.ipv6) \($0.ipv4)" })
        let logged = Set(seen.map { "\($0[2]) \($0[0]):\($0[1])" })
        #expect(listed == logged, "--sessions: \(listed.sorted()); the server: \(logged.sorted())")
        for b in tcp {
            #expect(b.sessions.count == 1 && b.sessions.first?.remote == "\(NAT64Lab.server4):5010"
                        && b.sessions.first?.state == "ESTABLISHED", "\(b)")
            // RFC 6056 with the range and the parity kept (the help says so): an ephemeral port
            // (above 1023) stays above 1023 and keeps its parity.
            let port6 = Int(b.ipv6.split(separator: ":").last ?? "") ?? -1
            let port4 = Int(b.ipv4.split(separator: ":").last ?? "") ?? -1
            #expect(port4 >= 1024 && port4 % 2 == port6 % 2, "\(b.ipv6) <-> \(b.ipv4)")
        }
        _ = FileManager.default.createFile(atPath: release, contents: nil)
        #expect(lab.wait(for: serverPID, seconds: 10))
        for pid in clientPIDs { #expect(lab.wait(for: pid, seconds: 10), "a client did not see its connections end") }
        _ = try lab.stopTranslator()
    }

    @Test("an IPv4 router's fragmentation needed (MTU 1400 beyond it) reaches the client as packet too big: PMTU discovery works, the transfer completes",
          .enabled(if: netnsReady, "\(netnsSkipReason)"), .enabled(if: offloadBuilt, "the offload executable is not built"))
    func pathMTUThroughTheTranslator() throws { try exclusiveNetwork { try pathMTUThroughTheTranslatorBody() } }
    func pathMTUThroughTheTranslatorBody() throws {
        let lab = try NAT64Lab()
        // The router's link to the server is 1400; the server still says MSS 1460 (advmss), so the
        // client sends 1500-byte IPv6 packets, 1480 bytes as IPv4 with DF, and the router (not the
        // gateway) answers "fragmentation needed, MTU 1400" to the pool4 address.
        run("ip -n \(lab.router) link set r1 mtu 1400; ip -n \(lab.server) link set s0 mtu 1400; "
            + "ip -n \(lab.server) route change default via 10.64.1.1 advmss 1460")
        try lab.startTranslator()
        let up = lab.transfer(megabytes: 16, client: lab.clients[0], upload: true)
        #expect(up.identical, "\(up.received) bytes")
        // The client learnt the path MTU from the translated error: 1400 + 20 (RFC 7915 §4.2).
        let cache = run("ip -n \(lab.clients[0]) -6 route get \(NAT64Lab.serverSeenFromIPv6)").output
        #expect(cache.contains("mtu 1420"), "\(cache)")
        let stats = try lab.stopTranslator()
        let back = try #require(stats["wan_to_lan"])
        #expect(back.stageCounter("nat64_errors_translated") >= 1, "\(back.stage)")
    }

    @Test("a UDP session runs out (--udp-timeout 2): --sessions shows it gone, the IPv4 side can no longer use it, the next datagram makes a new one",
          .enabled(if: netnsReady, "\(netnsSkipReason)"), .enabled(if: offloadBuilt, "the offload executable is not built"),
          .enabled(if: python3Present, "python3 is not installed"))
    func udpSessionTimesOut() throws { try exclusiveNetwork { try udpSessionTimesOutBody() } }
    func udpSessionTimesOutBody() throws {
        let lab = try NAT64Lab()
        try lab.startTranslator(["--udp-timeout", "2"])
        #expect(lab.logText.contains("UDP lifetime is below"), "the short lifetime is warned about: \(lab.logText)")
        // The server logs each datagram's peer and text (at most 10, at most 30 s).
        let serverScript = try lab.script("udp-server.py", """
            import socket, sys, time
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('0.0.0.0', 5020)); s.settimeout(1)
            deadline = time.time() + 30
            with open(sys.argv[1], 'w') as out:
                for _ in range(10):
                    while time.time() < deadline:
                        try:
                            data, peer = s.recvfrom(2000); break
                        except socket.timeout:
                            pass
                    else:
                        break
                    out.write('%s %d %s\\n' % (peer[0], peer[1], data.decode())); out.flush()
            """)
        // The client, from port 40002: optionally listens first (writing down what came), then
        // sends, then (when it listened first) listens again for an answer (written down too).
        let clientScript = try lab.script("udp-client.py", """
            import socket, sys
            server, text, listen, ready, result = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], sys.argv[5]
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('fd64:1::2', 40002))
            open(ready, 'w').close()
            def hear(seconds):
                s.settimeout(seconds)
                try:
                    data, peer = s.recvfrom(2000); return 'got %s from %s' % (data.decode(), peer[0])
                except socket.timeout:
                    return 'nothing'
            if listen > 0:
                with open(result, 'w') as out: out.write(hear(listen))
            s.sendto(text.encode(), (server, 5020))
            if listen > 0:
                with open(result + '.after', 'w') as out: out.write(hear(4))
            """)
        let log = "\(lab.dir)/udp.log"
        lab.background(lab.server, "python3 \(serverScript) \(log)", seconds: 35)
        lab.waitForListener(lab.server, port: 5020, udp: true)
        let client = lab.clients[0]
        let binding = "[\(NAT64Lab.clientAddress(1))]:40002"
        func serverLines(atLeast count: Int) -> [[String]] {
            var lines: [[String]] = []
            for _ in 0..<60 {
                lines = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n")
                    .map { $0.split(separator: " ").map(String.init) }
                if lines.count >= count { break }
                Thread.sleep(forTimeInterval: 0.05)
            }
            return lines
        }

        run("ip netns exec \(client) python3 \(clientScript) \(NAT64Lab.serverSeenFromIPv6) first 0 \(lab.dir)/r1 \(lab.dir)/o1")
        let first = serverLines(atLeast: 1)
        #expect(first.count == 1 && first[0][0] == NAT64Lab.pool4 && first[0].last == "first", "\(first)")
        // The status is written each second and the session lives 2 s: it is seen at least once.
        let made = try lab.sessions(within: 2) { $0.bindings("udp").contains { $0.ipv6 == binding } }
        let mapping = made.bindings("udp").first { $0.ipv6 == binding }
        #expect(mapping != nil && mapping?.ipv4 == "\(NAT64Lab.pool4):\(first.first?[1] ?? "?")",
                "the binding the server saw: \(made.state.entries.map { "\($0.ipv6) <-> \($0.ipv4)" })")
        #expect((mapping?.sessions.first?.expires_in ?? 99) <= 2)

        // Past the lifetime: the binding and its session are gone, and counted as expired.
        let gone = try lab.sessions(within: 6) { $0.state.sessions["udp"] == 0 && $0.bindings("udp").isEmpty }
        #expect(gone.bindings("udp").isEmpty && gone.state.sessions["udp"] == 0 && gone.state.expired >= 1,
                "\(gone.state.entries.map { "\($0.ipv6) <-> \($0.ipv4)" }) expired \(gone.state.expired)")
        #expect(lab.translatorRunning)

        // The IPv4 side cannot use the old mapping any more: a datagram from the server's port 5020
        // (the old session's remote) to it does not reach the client (listening on the same port
        // for 1.5 s); then the client sends again, and the server's answer from the same port to
        // the new mapping does reach it (the path back works, so the silence before means something).
        func serverSend(_ text: String, toPort port: String) {
            run("ip netns exec \(lab.server) python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                + "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 5020)); "
                + "s.sendto(b'\(text)', ('\(NAT64Lab.pool4)', \(port)))\"")
        }
        let secondClient = lab.background(client, "python3 \(clientScript) \(NAT64Lab.serverSeenFromIPv6) second 1.5 "
            + "\(lab.dir)/r2 \(lab.dir)/o2", seconds: 12)
        for _ in 0..<60 where !FileManager.default.fileExists(atPath: "\(lab.dir)/r2") { Thread.sleep(forTimeInterval: 0.05) }
        serverSend("late", toPort: first.first?[1] ?? "9")
        let second = serverLines(atLeast: 2)
        #expect(second.count == 2 && second.last?[0] == NAT64Lab.pool4 && second.last?.last == "second", "\(second)")
        // A new binding for the same client port (its IPv4 port may or may not be the old one).
        let again = try lab.sessions(within: 2) { $0.bindings("udp").contains { $0.ipv6 == binding } }
        let newMapping = again.bindings("udp").first { $0.ipv6 == binding }
        #expect(newMapping?.ipv4 == "\(NAT64Lab.pool4):\(second.last?[1] ?? "?")",
                "\(again.state.entries.map { "\($0.ipv6) <-> \($0.ipv4)" }), the server saw \(second)")
        serverSend("answer", toPort: second.last?[1] ?? "9")
        #expect(lab.wait(for: secondClient, seconds: 10))
        let before = (try? String(contentsOfFile: "\(lab.dir)/o2", encoding: .utf8)) ?? "?"
        let after = (try? String(contentsOfFile: "\(lab.dir)/o2.after", encoding: .utf8)) ?? "?"
        #expect(before == "nothing", "the expired mapping still delivered: \(before)")
        #expect(after == "got answer from \(NAT64Lab.serverSeenFromIPv6)", "the new mapping delivers: \(after)")
        _ = try lab.stopTranslator()
    }

    @Test("endpoint-independent filtering (the default): another port of the server may use a UDP binding, and makes a second session",
          .enabled(if: netnsReady, "\(netnsSkipReason)"), .enabled(if: offloadBuilt, "the offload executable is not built"),
          .enabled(if: python3Present, "python3 is not installed"))
    func endpointIndependentFiltering() throws { try exclusiveNetwork { try endpointIndependentFilteringBody() } }
    func endpointIndependentFilteringBody() throws {
        let lab = try NAT64Lab()
        try lab.startTranslator()
        // The server takes one datagram on 5020 and answers from another port, 5021 (RFC 4787
        // REQ-8, RFC 6146 §3.5.1: with endpoint-independent filtering any remote may use the binding).
        let serverScript = try lab.script("eif-server.py", """
            import socket
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 5020)); s.settimeout(10)
            data, peer = s.recvfrom(2000)
            other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); other.bind(('0.0.0.0', 5021))
            other.sendto(b'from-5021', peer)
            """)
        let clientScript = try lab.script("eif-client.py", """
            import socket, sys
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(('fd64:1::2', 40004)); s.settimeout(3)
            s.sendto(b'hello', (sys.argv[1], 5020))
            try:
                data, peer = s.recvfrom(2000); print('got %s from %s:%d' % (data.decode(), peer[0], peer[1]))
            except socket.timeout:
                print('nothing')
            """)
        let server = lab.background(lab.server, "python3 \(serverScript)", seconds: 12)
        lab.waitForListener(lab.server, port: 5020, udp: true)
        let heard = run("ip netns exec \(lab.clients[0]) python3 \(clientScript) \(NAT64Lab.serverSeenFromIPv6)", timeout: 10).output
        #expect(heard.trimmingCharacters(in: .whitespacesAndNewlines) == "got from-5021 from \(NAT64Lab.serverSeenFromIPv6):5021",
                "\(heard)")
        lab.wait(for: server, seconds: 5)
        let state = try lab.sessions(within: 2) { $0.state.sessions["udp"] == 2 }
        let binding = state.bindings("udp").first { $0.ipv6 == "[\(NAT64Lab.clientAddress(1))]:40004" }
        #expect(Set(binding?.sessions.map(\.remote) ?? []) == ["\(NAT64Lab.server4):5020", "\(NAT64Lab.server4):5021"],
                "\(state.state.entries.map { "\($0.ipv6) <-> \($0.ipv4): \($0.sessions.map(\.remote))" })")
        let stats = try lab.stopTranslator()
        #expect(stats["wan_to_lan"]?.stageCounter("nat64_dropped", ["reason": "no_session"]) == 0)
    }

    @Test("hairpinning: one IPv6 host reaches another through its pool4 address and port (RFC 6146 §3.8)",
          .enabled(if: netnsReady, "\(netnsSkipReason)"), .enabled(if: offloadBuilt, "the offload executable is not built"),
          .enabled(if: python3Present, "python3 is not installed"))
    func hairpinning() throws { try exclusiveNetwork { try hairpinningBody() } }
    func hairpinningBody() throws {
        let lab = try NAT64Lab()
        try lab.startTranslator()
        // Client 1 sends to the server from port 40010 (a binding), then listens; client 2 sends to
        // 198.51.100.1 (2001:db8:64::c633:6401) at that binding's port.
        let listener = try lab.script("hairpin-listener.py", """
            import socket, sys
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind(('fd64:1::2', 40010)); s.settimeout(6)
            s.sendto(b'hello', (sys.argv[1], 5999))
            try:
                data, peer = s.recvfrom(2000); print('got %s from [%s]:%d' % (data.decode(), peer[0], peer[1]))
            except socket.timeout:
                print('nothing')
            """)
        let output = "\(lab.dir)/hairpin.out"
        let first = lab.background(lab.clients[0], "python3 \(listener) \(NAT64Lab.serverSeenFromIPv6)", seconds: 10, output: output)
        let made = try lab.sessions(within: 3) { $0.bindings("udp").contains { $0.ipv6 == "[fd64:1::2]:40010" } }
        let port = try #require(made.bindings("udp").first { $0.ipv6 == "[fd64:1::2]:40010" }?.ipv4.split(separator: ":").last)
        run("ip netns exec \(lab.clients[1]) python3 -c \"import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
            + "s.bind(('fd64:2::2', 40011)); s.sendto(b'hairpin', ('2001:db8:64::c633:6401', \(port)))\"")
        lab.wait(for: first, seconds: 8)
        // Client 1 sees client 2 as the pool4 address and client 2's own binding's port.
        let state = try lab.sessions(within: 2) { $0.bindings("udp").contains { $0.ipv6 == "[fd64:2::2]:40011" } }
        let second = state.bindings("udp").first { $0.ipv6 == "[fd64:2::2]:40011" }
        let secondPort = second?.ipv4.split(separator: ":").last.map(String.init) ?? "?"
        let heard = ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(heard == "got hairpin from [2001:db8:64::c633:6401]:\(secondPort)", "\(heard); \(state.state.entries.map { "\($0.ipv6) <-> \($0.ipv4)" })")
        #expect(second?.sessions.map(\.remote) == ["\(NAT64Lab.pool4):\(port)"], "\(String(describing: second))")
        let stats = try lab.stopTranslator()
        #expect((stats["lan_to_wan"]?.stageCounter("nat64_hairpinned") ?? 0) >= 1)
    }

    @Test("ping through the translator (an ICMP query binding), and traceroute: every hop answers, the IPv4 ones through translated time exceeded",
          .enabled(if: netnsReady, "\(netnsSkipReason)"), .enabled(if: offloadBuilt, "the offload executable is not built"),
          .enabled(if: installed("ping") && installed("traceroute"), "ping or traceroute is not installed (apt-get install -y iputils-ping traceroute)"))
    func pingAndTraceroute() throws { try exclusiveNetwork { try pingAndTracerouteBody() } }
    func pingAndTracerouteBody() throws {
        let lab = try NAT64Lab()
        try lab.startTranslator()
        let client = lab.clients[2]
        #expect(run("ip netns exec \(client) ping -c 3 -i 0.2 -W 1 \(NAT64Lab.serverSeenFromIPv6)").status == 0)
        let state = try lab.sessions(within: 2) { !$0.bindings("icmp").isEmpty }
        let echo = state.bindings("icmp").first
        #expect(echo?.ipv6.hasPrefix("fd64:3::2#") == true && echo?.ipv4.hasPrefix("\(NAT64Lab.pool4)#") == true
                    && echo?.sessions.first?.remote == NAT64Lab.server4, "\(String(describing: echo))")
        // The client's gateway, the translator itself, the gateway's and the router's IPv4 sides
        // (translated time exceeded), the server.
        let (status, trace) = run("ip netns exec \(client) traceroute -n -w 1 -q 1 -m 6 \(NAT64Lab.serverSeenFromIPv6)", timeout: 30)
        #expect(status == 0 && !trace.contains("*"), "\(trace)")
        for hop in ["fd64:3::1", "2001:db8:64::a40:1", "2001:db8:64::a40:2", NAT64Lab.serverSeenFromIPv6] {
            #expect(trace.contains(" \(hop) "), "\(hop) missing: \(trace)")
        }
        let stats = try lab.stopTranslator()
        #expect((stats["wan_to_lan"]?.stageCounter("nat64_errors_translated") ?? 0) >= 2, "time exceeded from two IPv4 hops")
    }

    @Test("an IPv4 host's SYN to the pool4 with no binding is kept (--sessions shows it) and answered port unreachable: the connect is refused",
          .enabled(if: netnsReady, "\(netnsSkipReason)"), .enabled(if: offloadBuilt, "the offload executable is not built"),
          .enabled(if: python3Present, "python3 is not installed"))
    func unsolicitedSYN() throws { try exclusiveNetwork { try unsolicitedSYNBody() } }
    func unsolicitedSYNBody() throws {
        let lab = try NAT64Lab()
        try lab.startTranslator()
        let output = "\(lab.dir)/syn.out"
        let connector = try lab.script("connect.py", """
            import socket, sys
            try:
                socket.create_connection((sys.argv[1], 4444), timeout=15); print('connected')
            except Exception as e:
                print(type(e).__name__)
            """)
        let connect = lab.background(lab.server, "python3 \(connector) \(NAT64Lab.pool4)", seconds: 20, output: output)
        let kept = try lab.sessions(within: 3) { $0.state.stored_syns == 1 }
        #expect(kept.state.stored_syns == 1 && kept.state.entries.isEmpty, "the SYN is kept, and makes no binding")
        #expect(lab.wait(for: connect, seconds: 15))
        let result = ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(result == "ConnectionRefusedError", "the SYN's answer, after 6 s: \(result)")
        let after = try lab.sessions(within: 2) { $0.state.stored_syns == 0 }
        #expect(after.state.stored_syns == 0)
        let stats = try lab.stopTranslator()
        #expect((stats["wan_to_lan"]?.stageCounter("nat64_dropped", ["reason": "syn_stored"]) ?? 0) >= 1, "\(stats["wan_to_lan"]?.stage ?? [])")
    }

    @Test("--max-sessions-per-host 3: a host's fourth and fifth connections are refused at once (ICMPv6 administratively prohibited), the three go on",
          .enabled(if: netnsReady, "\(netnsSkipReason)"), .enabled(if: offloadBuilt, "the offload executable is not built"),
          .enabled(if: python3Present, "python3 is not installed"))
    func sessionsPerHostLimit() throws { try exclusiveNetwork { try sessionsPerHostLimitBody() } }
    func sessionsPerHostLimitBody() throws {
        let lab = try NAT64Lab()
        try lab.startTranslator(["--max-sessions-per-host", "3"])
        let server = try lab.script("hold-server.py", """
            import socket, time
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('0.0.0.0', 5030)); s.listen(16); s.settimeout(1)
            held, deadline = [], time.time() + 15
            while time.time() < deadline:
                try: held.append(s.accept()[0])
                except socket.timeout: pass
            """)
        let client = try lab.script("five-client.py", """
            import socket, sys
            conns = []
            for i in range(5):
                try:
                    conns.append(socket.create_connection((sys.argv[1], 5030), timeout=8)); print('connected')
                except Exception as e:
                    print(type(e).__name__)
            """)
        lab.background(lab.server, "python3 \(server)", seconds: 20)
        lab.waitForListener(lab.server, port: 5030)
        let results = run("ip netns exec \(lab.clients[0]) python3 \(client) \(NAT64Lab.serverSeenFromIPv6)", timeout: 60).output
            .split(separator: "\n")
        #expect(results == ["connected", "connected", "connected", "PermissionError", "PermissionError"], "\(results)")
        // Another host is not limited by the first one's sessions.
        let other = run("ip netns exec \(lab.clients[1]) python3 \(client) \(NAT64Lab.serverSeenFromIPv6)", timeout: 60).output
        #expect(other.split(separator: "\n").prefix(3) == ["connected", "connected", "connected"], "\(other)")
        let stats = try lab.stopTranslator()
        let out = try #require(stats["lan_to_wan"])
        #expect(out.stageCounter("nat64_dropped", ["reason": "host_limit"]) >= 4 && out.stageCounter("nat64_errors_sent") >= 4,
                "\(out.stage)")
    }

    @Test("bursts of junk and truncated packets, IPv6 toward the prefix and IPv4 toward the pool4: the translator neither crashes nor stops translating",
          .enabled(if: netnsReady, "\(netnsSkipReason)"), .enabled(if: offloadBuilt, "the offload executable is not built"),
          .enabled(if: python3Present, "python3 is not installed"))
    func junkFromBothSides() throws { try exclusiveNetwork { try junkFromBothSidesBody() } }
    func junkFromBothSidesBody() throws {
        let lab = try NAT64Lab()
        try lab.startTranslator()
        let client = lab.clients[0]
        let gatewayMAC = run("ip -n \(lab.gateway) -br link show g1 | awk '{print $3}'").output
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let clientMAC = run("ip -n \(client) -br link show c0 | awk '{print $3}'").output.trimmingCharacters(in: .whitespacesAndNewlines)
        // Ethernet frames written on the client's link (AF_PACKET, so nothing in the client's stack
        // tidies them): IPv6 headers toward the prefix that the gateway's kernel forwards, with
        // junk behind them: truncated and lying TCP/UDP headers, fragments at odd offsets, ICMPv6
        // errors quoting junk or half a packet, extension header chains cut short, unknown protocols.
        let junkScript = try lab.script("junk.py", """
            import random, socket, struct, sys
            dst_mac, src_mac, count = bytes.fromhex(sys.argv[1].replace(':', '')), bytes.fromhex(sys.argv[2].replace(':', '')), int(sys.argv[3])
            rng = random.Random(6146)
            src = socket.inet_pton(socket.AF_INET6, 'fd64:1::2')
            prefix = socket.inet_pton(socket.AF_INET6, '2001:db8:64::')[:12]
            targets = [bytes([10, 64, 1, 2]), bytes([10, 64, 0, 2]), bytes([198, 51, 100, 1]), bytes([0, 0, 0, 0]),
                       bytes([255, 255, 255, 255]), bytes([127, 0, 0, 1]), bytes([224, 0, 0, 1])]
            def junk(n): return bytes(rng.getrandbits(8) for _ in range(n))
            def ipv6(nh, payload, dst4=None, lie=0):
                dst = prefix + (dst4 or rng.choice(targets))
                return struct.pack('!IHBB', 0x60000000 | rng.getrandbits(20), max(0, len(payload) + lie) & 0xffff, nh,
                                   rng.choice([2, 64, 255])) + src + dst + payload
            def tcp(n):
                sport, dport = rng.getrandbits(16), rng.choice([5001, 80, 0, rng.getrandbits(16)])
                off = rng.choice([0, 1, 4, 5, 6, 15])
                h = struct.pack('!HHIIBBHHH', sport, dport, rng.getrandbits(32), rng.getrandbits(32), off << 4,
                                rng.getrandbits(8), rng.getrandbits(16), rng.getrandbits(16), 0)
                return (h + junk(n))[:rng.choice([0, 3, 8, 13, 19, 20, 20 + n])]
            def udp(n):
                h = struct.pack('!HHHH', rng.getrandbits(16), rng.choice([5020, 53, 0]), rng.choice([0, 7, 8, 8 + n, 65535]), rng.getrandbits(16))
                return (h + junk(n))[:rng.choice([0, 4, 7, 8, 8 + n])]
            def icmp():
                kind = rng.choice([(1, 0), (1, 4), (2, 0), (3, 0), (3, 1), (4, 0), (4, 1), (128, 0), (129, 0), (200, 0)])
                inner = ipv6(rng.choice([6, 17, 58, 44, 0]), rng.choice([tcp, udp])(rng.randrange(0, 40)))
                inner = inner[:rng.choice([0, 8, 39, 40, 44, 48, len(inner)])]
                body = struct.pack('!BBHI', kind[0], kind[1], rng.getrandbits(16), rng.choice([0, 68, 1279, 1280, 1500, 0xffffffff]))
                return (body + inner)[:rng.choice([0, 4, 8, 8 + len(inner)])]
            def fragment():
                nxt = rng.choice([6, 17, 58, 44, 59])
                first = rng.random() < 0.5
                offset = 0 if first else rng.randrange(0, 8192)
                return struct.pack('!BBHI', nxt, 0, (offset << 3) | rng.getrandbits(1), rng.getrandbits(32)) + rng.choice([tcp, udp])(rng.randrange(0, 64))
            def chain(): return junk(rng.randrange(0, 24))
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind(('c0', 0))
            sent = 0
            for i in range(count):
                k = rng.randrange(7)
                if k == 0: frame = ipv6(6, tcp(rng.randrange(0, 1400)))
                elif k == 1: frame = ipv6(17, udp(rng.randrange(0, 1400)))
                elif k == 2: frame = ipv6(58, icmp())
                elif k == 3: frame = ipv6(44, fragment())
                elif k == 4: frame = ipv6(rng.choice([0, 43, 60, 51, 50, 135, 253]), chain())
                elif k == 5: frame = ipv6(rng.choice([6, 17, 58]), junk(rng.randrange(0, 60)), lie=rng.choice([-4, 8, 1000]))
                else: frame = ipv6(rng.getrandbits(8), junk(rng.randrange(0, 200)))
                try:
                    s.send(dst_mac + src_mac + b'\\x86\\xdd' + frame); sent += 1
                except OSError:
                    pass
            print(sent)
            """)
        let (status, sent) = run("ip netns exec \(client) python3 \(junkScript) \(gatewayMAC) \(clientMAC) 4000", timeout: 60)
        #expect(status == 0 && (Int(sent.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 3000, "\(sent)")
        Thread.sleep(forTimeInterval: 0.5)
        #expect(lab.translatorRunning, "the translator ended: \(lab.logText)")

        // Then from the IPv4 side, toward the pool4 address, half of it at the ports of the
        // bindings the junk above made (so lookups find sessions): truncated TCP/UDP, ICMP errors
        // whose quote is cut anywhere or matches a session, fragments, options, unknown protocols.
        // Frames from the server to the router (AF_PACKET); the router's kernel forwards them.
        let made = try lab.sessions(within: 2) { !$0.state.entries.isEmpty }
        let ports = made.state.entries.map { "\($0.protocol):\($0.ipv4.split(whereSeparator: { ":#".contains($0) }).last ?? "")" }
        #expect(!ports.isEmpty, "the junk made some bindings")
        let routerMAC = run("ip -n \(lab.router) -br link show r1 | awk '{print $3}'").output.trimmingCharacters(in: .whitespacesAndNewlines)
        let serverMAC = run("ip -n \(lab.server) -br link show s0 | awk '{print $3}'").output.trimmingCharacters(in: .whitespacesAndNewlines)
        let junk4Script = try lab.script("junk4.py", """
            import random, socket, struct, sys
            dst_mac, src_mac, count = bytes.fromhex(sys.argv[1].replace(':', '')), bytes.fromhex(sys.argv[2].replace(':', '')), int(sys.argv[3])
            bound = [(p.split(':')[0], int(p.split(':')[1])) for p in sys.argv[4].split(',') if ':' in p]
            rng = random.Random(6146 * 4)
            server, pool = bytes([10, 64, 1, 2]), bytes([198, 51, 100, 1])
            def junk(n): return bytes(rng.getrandbits(8) for _ in range(n))
            def checksum(b):
                if len(b) % 2: b += b'\\0'
                total = sum(struct.unpack('!%dH' % (len(b) // 2), b))
                while total >> 16: total = (total & 0xffff) + (total >> 16)
                return ~total & 0xffff
            def ipv4(proto, payload, src=server, dst=pool, frag=0x4000, options=b''):
                ihl = 5 + len(options) // 4
                h = struct.pack('!BBHHHBBH4s4s', 0x40 | ihl, 0, 20 + len(options) + len(payload), rng.getrandbits(16), frag, 64,
                                proto, 0, src, dst) + options
                return h[:10] + struct.pack('!H', checksum(h)) + h[12:] + payload
            def port():
                if bound and rng.random() < 0.5: return rng.choice(bound)[1]
                return rng.getrandbits(16)
            def tcp(n, sport=None, dport=None):
                h = struct.pack('!HHIIBBHHH', sport or rng.choice([5001, 5010, rng.getrandbits(16)]), dport or port(), rng.getrandbits(32),
                                rng.getrandbits(32), rng.choice([0, 1, 5, 6, 15]) << 4, rng.getrandbits(8), rng.getrandbits(16), rng.getrandbits(16), 0)
                return (h + junk(n))[:rng.choice([0, 3, 8, 13, 20, 20 + n])]
            def udp(n, sport=None, dport=None):
                h = struct.pack('!HHHH', sport or rng.choice([5020, rng.getrandbits(16)]), dport or port(), rng.choice([0, 7, 8, 8 + n, 65535]),
                                rng.getrandbits(16))
                return (h + junk(n))[:rng.choice([0, 4, 7, 8, 8 + n])]
            def icmp():
                kind = rng.choice([(3, 0), (3, 1), (3, 3), (3, 4), (4, 0), (5, 1), (11, 0), (11, 1), (12, 0), (0, 0), (8, 0), (13, 0), (99, 0)])
                if bound and rng.random() < 0.6:
                    proto, p = rng.choice(bound)
                    inner_l4 = {'tcp': lambda: tcp(rng.randrange(0, 40), sport=p, dport=5001),
                                'udp': lambda: udp(rng.randrange(0, 40), sport=p, dport=5020),
                                'icmp': lambda: struct.pack('!BBHHH', 8, 0, 0, p, 1)}[proto]()
                    inner = ipv4({'tcp': 6, 'udp': 17, 'icmp': 1}[proto], inner_l4, src=pool, dst=server)
                else:
                    inner = ipv4(rng.choice([6, 17, 1, 47]), junk(rng.randrange(0, 40)), src=pool, dst=rng.choice([server, pool]))
                inner = inner[:rng.choice([0, 8, 19, 20, 24, 28, len(inner)])]
                mtu = rng.choice([0, 68, 576, 1280, 1400, 65535])
                body = struct.pack('!BBHHH', kind[0], kind[1], 0, rng.getrandbits(16) if kind[0] in (0, 8, 13) else 0, mtu) + inner
                body = body[:2] + struct.pack('!H', checksum(body)) + body[4:]
                return body[:rng.choice([0, 4, 8, len(body), len(body)])]
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind(('s0', 0))
            sent = 0
            for i in range(count):
                k = rng.randrange(6)
                if k == 0: frame = ipv4(6, tcp(rng.randrange(0, 1400)))
                elif k == 1: frame = ipv4(17, udp(rng.randrange(0, 1400)))
                elif k == 2: frame = ipv4(1, icmp())
                elif k == 3: frame = ipv4(rng.choice([6, 17, 1]), rng.choice([tcp, udp])(rng.randrange(0, 200)),
                                          frag=rng.choice([0x2000, 0x0001, 0x2010, 0x1fff, 0x4000 | 0x2000]))
                elif k == 4: frame = ipv4(rng.choice([6, 17, 1]), rng.choice([tcp, udp])(rng.randrange(0, 100)),
                                          options=rng.choice([b'\\x01\\x01\\x01\\x00', b'\\x07\\x07\\x04\\x00\\x00\\x00\\x00\\x00', junk(4), junk(8)]))
                else: frame = ipv4(rng.choice([0, 2, 41, 47, 50, 58, 132, 255]), junk(rng.randrange(0, 200)))
                try:
                    s.send(dst_mac + src_mac + b'\\x08\\x00' + frame); sent += 1
                except OSError:
                    pass
            print(sent)
            """)
        let (status4, sent4) = run("ip netns exec \(lab.server) python3 \(junk4Script) \(routerMAC) \(serverMAC) 4000 "
            + (["-"] + ports).joined(separator: ","), timeout: 60)
        #expect(status4 == 0 && (Int(sent4.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 3000, "\(sent4)")
        Thread.sleep(forTimeInterval: 0.5)
        #expect(lab.translatorRunning, "the translator ended: \(lab.logText)")
        // It still translates: a small transfer each way after the junk.
        let up = lab.transfer(megabytes: 2, client: client, upload: true)
        let down = lab.transfer(megabytes: 2, client: client, upload: false, port: 5002)
        #expect(up.identical && down.identical, "after the junk: \(up.received) and \(down.received) bytes")
        #expect(lab.translatorRunning, "the translator ended: \(lab.logText)")
        let stats = try lab.stopTranslator()
        let toIPv4 = try #require(stats["lan_to_wan"])
        let toIPv6 = try #require(stats["wan_to_lan"])
        // The junk reached the translator from both sides and was refused by name, not silently.
        #expect(toIPv4.stageTotal("nat64_dropped") > 100, "\(toIPv4.stage)")
        #expect(toIPv6.stageTotal("nat64_dropped") > 100, "\(toIPv6.stage)")
        #expect(!lab.logText.contains("Fatal error") && !lab.logText.contains("Crash"), "\(lab.logText)")
    }
}

@Suite("contrib/offload-nat64.service", .serialized)
struct NAT64UnitTests {
    @Test("its command line, with the example settings, runs in a namespace, writes its state where RuntimeDirectory= puts it, serves counters and cleans up",
          .enabled(if: netnsReady, "\(netnsSkipReason)"), .enabled(if: offloadBuilt, "the offload executable is not built"),
          .enabled(if: installed("unshare"), "unshare is not installed (util-linux)"))
    func systemdUnit() throws { try exclusiveNetwork { try systemdUnitBody() } }
    func systemdUnitBody() throws {
        let offload = try #require(builtExecutable(named: "offload"))
        let unit = try String(contentsOfFile: "\(projectRoot.path)/contrib/offload-nat64.service", encoding: .utf8)
        let env = try String(contentsOfFile: "\(projectRoot.path)/contrib/offload-nat64.env", encoding: .utf8)
        guard case (var command, let settings)? = systemdCommand(unit: unit, environment: env) else { throw NAT64LabError("no ExecStart") }
        #expect(!command.contains("$"), "unexpanded: \(command)")
        #expect(unit.range(of: #"(?m)^RuntimeDirectory=.*\boffload-nat64\b"#, options: .regularExpression) != nil,
                "the state's default directory, /run/offload-nat64, is the unit's runtime directory")
        #expect(!command.contains("--status-file"), "the default status path is used")
        command = command.replacingOccurrences(of: "/usr/local/bin/offload", with: offload)
        let ns = "on6u\(getpid() % 100_000)"
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(ns)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        run("ip netns del \(ns) 2>/dev/null; ip netns add \(ns) && ip -n \(ns) link set lo up")
        defer { run("ip netns del \(ns)") }
        let endpoint = (settings["NAT64_METRICS"] ?? "").split(separator: ":")
        let scrape = "bash -c 'exec 3<>/dev/tcp/\(endpoint.first ?? "")/\(endpoint.last ?? ""); "
            + "printf \"GET /metrics HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'"
        // What systemd does for RuntimeDirectory=, in a mount namespace of the test's own (a /run
        // of its own, so the host's /run is not touched): the directory exists when the command
        // starts, so the state goes to /run/offload-nat64/nat64.status, where --sessions finds it.
        let inside = """
            mount -t tmpfs tmpfs /run && mkdir -p /run/offload /run/offload-nat64 || exit 9
            \(command) --duration 4 > \(dir)/log 2>&1 &
            for i in $(seq 100); do \(scrape) 2>/dev/null | grep -q offload_nat64_translated && break; sleep 0.1; done
            \(scrape); ip -4 route; ip -6 route
            for i in $(seq 30); do [ -e /run/offload-nat64/nat64.status ] && break; sleep 0.1; done
            echo "sessions:"; \(offload) nat64 --sessions --json; echo "sessions-exit=$?"
            wait $!; echo exit=$?; cat \(dir)/log
            """
        try inside.write(toFile: "\(dir)/inside.sh", atomically: true, encoding: .utf8)
        let (status, output) = run("ip netns exec \(ns) unshare -m bash \(dir)/inside.sh", timeout: 30)
        #expect(status == 0 && output.contains("exit=0"), "\(output)")
        #expect(output.contains("offload_nat64_translated"), "the metrics endpoint serves the stage's counters: \(output)")
        #expect(output.contains("dev \(settings["NAT64_IPV4_DEVICE"] ?? "?")"), "--setup routed the pool4 into the IPv4 side")
        #expect(output.contains("64:ff9b::/96 dev \(settings["NAT64_IPV6_DEVICE"] ?? "?")"), "--setup routed the pool6 into the IPv6 side")
        #expect(output.contains("sessions-exit=0") && output.contains("\"stored_syns\""),
                "--sessions read /run/offload-nat64/nat64.status: \(output)")
        #expect(!run("ip -n \(ns) route; ip -n \(ns) -6 route").output.contains("nat64-"), "the routes are gone after exit")
        // systemd's own reading of the unit (when systemd-analyze is there): no unknown settings.
        if installed("systemd-analyze") {
            let copy = "\(dir)/offload-nat64.service"
            try unit.replacingOccurrences(of: "/usr/local/bin/offload", with: offload)
                .replacingOccurrences(of: "/etc/default/offload-nat64", with: "\(dir)/offload-nat64.env")
                .write(toFile: copy, atomically: true, encoding: .utf8)
            try env.write(toFile: "\(dir)/offload-nat64.env", atomically: true, encoding: .utf8)
            let (verified, complaints) = run("systemd-analyze verify \(copy)")
            #expect(verified == 0 && complaints.isEmpty, "\(complaints)")
        }
    }
}
