import Foundation
import OffloadForwarder
import OffloadIPsec
import OffloadTUN
import OffloadTestSupport
import OffloadWire
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A hub gateway and several peer gateways on one underlay segment (scripts/netns-hub-topology.sh):
/// the hub at 192.168.90.1 with its LAN 10.80.0.0/24 (a server at 10.80.0.2), peer N at
/// 192.168.90.(10+N) or behind a NAT (nftables masquerade, random ports) with its LAN 10.90.N.0/24
/// (a client at 10.90.N.2).
final class HubLab {
    let prefix = "otnh\(getpid() % 100_000)"
    let dir: String
    let peers: Int
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    var hub: String { "\(prefix)-hub" }
    var server: String { "\(prefix)-srv" }
    func peer(_ n: Int) -> String { "\(prefix)-p\(n)" }
    func client(_ n: Int) -> String { "\(prefix)-c\(n)" }

    init(peers: Int, natted: [Int] = []) throws {
        self.peers = peers
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        shell("\(root)/scripts/netns-hub-topology.sh down \(prefix)")
        let (status, out) = shell("\(root)/scripts/netns-hub-topology.sh up \(prefix) \(peers) \(natted.map(String.init).joined(separator: " "))")
        guard status == 0 else { throw TunnelLabError("topology: \(out)") }
    }

    deinit { down() }

    func down() {
        shell("pkill -TERM -f '[s]tats-json \(dir)/' || true")
        Thread.sleep(forTimeInterval: 0.3)
        shell("\(root)/scripts/netns-hub-topology.sh down \(prefix)")
    }

    /// The underlay address of peer `n` (not behind the NAT).
    static func underlay(_ n: Int) -> String { "192.168.90.\(10 + n)" }

    /// Starts `offload ARGUMENTS` in namespace `ns` with the device ipsec0, routing `routes` into
    /// it, its counters written at exit to DIR/NAME.json; waits until its route is there.
    func start(_ name: String, in ns: String, _ arguments: [String], routes: [String], executable: String? = nil) throws {
        guard let offload = executable ?? builtExecutable(named: "offload") else { throw TunnelLabError("offload executable not found") }
        let line = ["setsid", "ip", "netns", "exec", ns, offload] + arguments + ["--device", "ipsec0", "--setup"]
            + routes.flatMap { ["--route", $0] } + ["--stats-json", "\(dir)/\(name).json", "--duration", "150"]
        shell(line.joined(separator: " ") + " >> \(dir)/\(name).log 2>&1 < /dev/null &")
        for _ in 0..<100 {
            if shell("ip -n \(ns) route").output.contains("dev ipsec0") { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TunnelLabError("\(name) did not start: \(log(name))")
    }

    func log(_ name: String) -> String { (try? String(contentsOfFile: "\(dir)/\(name).log", encoding: .utf8)) ?? "" }

    /// Stops `name`: its counters.
    func stop(_ name: String) throws -> [String: ForwarderStatistics] {
        shell("pkill -TERM -f '[s]tats-json \(dir)/\(name).json' || true")
        let path = "\(dir)/\(name).json"
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: path) { Thread.sleep(forTimeInterval: 0.05) }
        Thread.sleep(forTimeInterval: 0.1)
        return try JSONDecoder().decode([String: ForwarderStatistics].self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Sends `megabytes` of random data from `sender` to `receiver` (TCP, bounded in time) on
    /// `port`: whether it arrived intact (sha256) and its size.
    func transfer(megabytes: Int, from sender: String, to receiver: String, address: String, port: Int = 5001, tag: String = "x") -> (Bool, Int) {
        let send = "\(dir)/send-\(tag).bin", recv = "\(dir)/recv-\(tag).bin"
        shell("head -c \(megabytes * 1_000_000) /dev/urandom > \(send); rm -f \(recv)")
        shell("setsid ip netns exec \(receiver) timeout 45 socat -u TCP4-LISTEN:\(port),reuseaddr OPEN:\(recv),creat,trunc > /dev/null 2>&1 < /dev/null &")
        Thread.sleep(forTimeInterval: 0.3)
        shell("ip netns exec \(sender) timeout 40 socat -u OPEN:\(send) TCP4:\(address):\(port)", timeout: 45)
        for _ in 0..<100 where shell("pgrep -f '[O]PEN:\(recv)'").status == 0 { Thread.sleep(forTimeInterval: 0.1) }
        shell("pkill -f '[O]PEN:\(recv)' || true")
        let sums = shell("sha256sum \(send) \(recv) | awk '{print $1}' | uniq | wc -l").output
        let size = (try? FileManager.default.attributesOfItem(atPath: recv)[.size] as? Int) ?? 0
        return (sums.trimmingCharacters(in: .whitespacesAndNewlines) == "1", size)
    }
}

extension ForwarderStatistics {
    /// A tunnel counter by its name without the `tunnel_` prefix, with a label value when given.
    func hubCounter(_ name: String, label: String? = nil) -> Int {
        stage.filter { $0.name == "tunnel_\(name)" && (label == nil || $0.labels.values.contains(label!)) }.reduce(0) { $0 + $1.value }
    }
}

@Suite("offload ipsec as a hub: many peers on one socket, each SA to its own peer", .serialized)
struct HubNetnsTests {
    @Test("--sa with tunnels to two peers (remote_addrs): one process, one socket; 16 MB each way per peer intact; an authentic datagram of one peer's SA sent from elsewhere is refused and counted (wrong_peer)",
          .enabled(if: netnsReady, "needs root and network namespaces"))
    func staticHub() throws { try exclusiveNetwork { try staticHubBody() } }
    func staticHubBody() throws {
        let lab = try HubLab(peers: 2)
        defer { lab.down() }
        var hubTunnels: [ESPTunnelConfiguration] = []
        for n in 1...2 {
            var t = SAFile.freshTunnel(name: "site\(n)", algorithm: .aesGCM128, local: [TrafficSelector("10.80.0.0/24")!],
                                       remote: [TrafficSelector("10.90.\(n).0/24")!], outboundSPI: UInt32(0x1000 + n),
                                       inboundSPI: UInt32(0x2000 + n))
            var mirror = t.reversed
            t.peer = UDPEndpoint(IPAddress(HubLab.underlay(n))!, 4500)
            mirror.peer = nil
            try SAFile.write(SAFile.render([mirror]), to: "\(lab.dir)/peer\(n).conf")
            hubTunnels.append(t)
        }
        try SAFile.write(SAFile.render(hubTunnels), to: "\(lab.dir)/hub.conf")
        // The hub names no --remote peer of its own: every tunnel names its peer.
        try lab.start("hub", in: lab.hub, ["ipsec", "--sa", "\(lab.dir)/hub.conf", "--state", "\(lab.dir)/marks-hub",
                                           "--local", "192.168.90.1", "--remote", HubLab.underlay(1)],
                      routes: ["10.90.1.0/24", "10.90.2.0/24"])
        for n in 1...2 {
            try lab.start("peer\(n)", in: lab.peer(n), ["ipsec", "--sa", "\(lab.dir)/peer\(n).conf", "--state", "\(lab.dir)/marks-p\(n)",
                                                        "--local", HubLab.underlay(n), "--remote", "192.168.90.1"],
                          routes: ["10.80.0.0/24"])
        }
        for n in 1...2 {
            let up = lab.transfer(megabytes: 16, from: lab.client(n), to: lab.server, address: "10.80.0.2", tag: "up\(n)")
            #expect(up.0 && up.1 == 16_000_000, "peer \(n) to the hub's LAN: \(up.1) bytes; hub log: \(lab.log("hub"))")
            let down = lab.transfer(megabytes: 16, from: lab.server, to: lab.client(n), address: "10.90.\(n).2", tag: "down\(n)")
            #expect(down.0 && down.1 == 16_000_000, "the hub's LAN to peer \(n): \(down.1) bytes")
        }
        // Peer 1's ESP, captured as it leaves peer 1 and kept from the hub (so its numbers are new
        // there), then sent from peer 2's address: authentic, new, and refused.
        let capture = "\(lab.dir)/p1.pcap"
        let (blocked, why) = shell("ip netns exec \(lab.hub) sh -c \"nft add table inet hold && nft add chain inet hold in '{ type filter hook input priority 0; }' && nft add rule inet hold in ip saddr \(HubLab.underlay(1)) udp dport 4500 drop\"")
        try #require(blocked == 0, "nft: \(why)")
        shell("setsid ip netns exec \(lab.peer(1)) timeout 8 tcpdump -U -i u0 -w \(capture) -c 5 'udp and src host \(HubLab.underlay(1)) and port 4500 and greater 100' > /dev/null 2>&1 < /dev/null &")
        Thread.sleep(forTimeInterval: 0.5)
        shell("ip netns exec \(lab.client(1)) ping -c 5 -i 0.2 -W 1 -s 200 10.80.0.2")
        Thread.sleep(forTimeInterval: 0.5)
        shell("ip netns exec \(lab.hub) nft delete table inet hold")
        let replay = """
            import socket, struct, sys
            data = open(sys.argv[1], 'rb').read()
            little = data[:4] == b'\\xd4\\xc3\\xb2\\xa1' or data[:4] == b'\\x4d\\x3c\\xb2\\xa1'
            e = '<' if little else '>'
            link = struct.unpack(e + 'I', data[20:24])[0]
            off, sent = 24, 0
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((sys.argv[2], 0))
            while off + 16 <= len(data):
                incl = struct.unpack(e + 'I', data[off + 8:off + 12])[0]
                frame = data[off + 16:off + 16 + incl]
                off += 16 + incl
                ip = frame[14:] if link == 1 else frame
                ihl = (ip[0] & 15) * 4
                s.sendto(ip[ihl + 8:], ('192.168.90.1', 4500))
                sent += 1
            print(sent)
            """
        try replay.write(toFile: "\(lab.dir)/replay.py", atomically: true, encoding: .utf8)
        let sent = shell("ip netns exec \(lab.peer(2)) python3 \(lab.dir)/replay.py \(capture) \(HubLab.underlay(2))").output
        #expect(Int(sent.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 >= 1, "datagrams replayed: \(sent)")
        Thread.sleep(forTimeInterval: 0.3)
        let hub = try lab.stop("hub")
        let decap = try #require(hub["wan_to_lan"])
        let replayed = Int(sent.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        #expect(decap.hubCounter("dropped", label: "wrong_peer") == replayed, "each copy from peer 2's address refused as wrong_peer")
        #expect(decap.hubCounter("dropped", label: "replay") + decap.hubCounter("dropped", label: "bad_icv") == 0)
        #expect(decap.hubCounter("foreign") == 0, "serving many peers, no datagram is dropped by sender before its SA is known")
    }
}

/// Whether the tools of the NAT between a peer and the hub are here (nftables, conntrack).
let natToolsAvailable = shell("command -v nft && command -v conntrack").status == 0

extension HubLab {
    /// The hub's `offload ipsec --config`: a connection per peer, each with its own identity, PSK
    /// and LAN; peers behind the NAT have `remote_addrs = %any` (they come from the NAT's address
    /// and ports) and are told apart by their identity.
    func writeHubConfig(natted: [Int], dpd: String = "2s") throws -> String {
        var connections = "", secrets = ""
        for n in 1...peers {
            let remote = natted.contains(n) ? "%any" : HubLab.underlay(n)
            connections += """
                  peer\(n) {
                    local_addrs = 192.168.90.1
                    remote_addrs = \(remote)
                    proposals = aes128gcm16-prfsha256-x25519
                    dpd_delay = \(dpd)
                    local { auth = psk
                      id = hub }
                    remote { auth = psk
                      id = peer\(n) }
                    children {
                      net { local_ts = 10.80.0.0/24
                        remote_ts = 10.90.\(n).0/24
                        esp_proposals = aes128gcm16 }
                    }
                  }

                """
            secrets += "  ike-\(n) { id = peer\(n)\n    secret = \"hub-psk-of-peer-\(n)\" }\n"
        }
        let path = "\(dir)/hub.conf"
        _ = FileManager.default.createFile(atPath: path, contents: Data("connections {\n\(connections)}\nsecrets {\n\(secrets)}\n".utf8),
                                       attributes: [.posixPermissions: 0o600])
        return path
    }

    /// strongSwan (charon, kernel-libipsec) on peer `n`, initiating to the hub.
    func startStrongSwanPeer(_ n: Int, natted: Bool) throws {
        let me = natted ? "172.16.\(n).2" : HubLab.underlay(n)
        let text = """
            connections {
              hub {
                local_addrs = \(me)
                remote_addrs = 192.168.90.1
                encap = yes
                proposals = aes128gcm16-prfsha256-x25519
                dpd_delay = 2s
                local { auth = psk
                  id = peer\(n) }
                remote { auth = psk
                  id = hub }
                children {
                  net { local_ts = 10.90.\(n).0/24
                    remote_ts = 10.80.0.0/24
                    esp_proposals = aes128gcm16
                    start_action = start }
                }
              }
            }
            secrets {
              ike-hub { id-a = peer\(n)
                id-b = hub
                secret = "hub-psk-of-peer-\(n)" }
            }
            """
        _ = FileManager.default.createFile(atPath: "\(dir)/peer\(n).swanctl.conf", contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
        let (status, out) = shell("\(root)/scripts/strongswan-charon.sh start \(peer(n)) \(dir) peer\(n)")
        guard status == 0 else { throw TunnelLabError("strongSwan on peer \(n): \(out)") }
    }

    /// The hub's IKE SAs from its status file: connection, state and the peer's address:port.
    func hubSAs() -> [(connection: String, state: String, peer: String)] {
        guard let data = FileManager.default.contents(atPath: "\(dir)/hub.status"),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let sas = json["sas"] as? [[String: Any]]
        else { return [] }
        return sas.map { ($0["connection"] as? String ?? "", $0["state"] as? String ?? "", $0["peer"] as? String ?? "") }
    }

    /// The SPIs of the connection's established IKE SAs (from the hub's status file).
    func spis(_ connection: String) -> [String] {
        guard let data = FileManager.default.contents(atPath: "\(dir)/hub.status"),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let sas = json["sas"] as? [[String: Any]]
        else { return [] }
        return sas.filter { $0["connection"] as? String == connection && $0["state"] as? String == "established" }.compactMap { $0["spis"] as? String }
    }

    func established(_ connection: String) -> [String] {
        hubSAs().filter { $0.connection == connection && $0.state == "established" }.map(\.peer)
    }
}

@Suite("offload ipsec --config as a hub for strongSwan peers, two of them behind a NAT that rebinds", .serialized)
struct HubInteropTests {
    @Test("four strongSwan peers (two behind an nftables masquerade NAT) at once: every transfer intact both ways; the NAT rebinds mid-transfer and the hub follows the peer; a peer killed is found dead while the others go on, and comes back; SIGHUP without one peer's connection deletes its SA and keeps the others'",
          .enabled(if: netnsReady && strongSwanAvailable && natToolsAvailable, "needs namespaces, strongSwan, nftables and conntrack"))
    func fourPeers() throws { try exclusiveNetwork { try fourPeersBody() } }
    func fourPeersBody() throws {
        let natted = [3, 4]
        let lab = try HubLab(peers: 4, natted: natted)
        defer {
            shell("\(lab.root)/scripts/strongswan-charon.sh stopall \(lab.dir)")
            lab.down()
        }
        let config = try lab.writeHubConfig(natted: natted)
        try lab.start("hub", in: lab.hub, ["ipsec", "--config", config, "--status-file", "\(lab.dir)/hub.status"],
                      routes: (1...4).map { "10.90.\($0).0/24" })
        for n in 1...4 { try lab.startStrongSwanPeer(n, natted: natted.contains(n)) }
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline && !(1...4).allSatisfy({ !lab.established("peer\($0)").isEmpty }) { Thread.sleep(forTimeInterval: 0.2) }
        for n in 1...4 {
            try #require(!lab.established("peer\(n)").isEmpty, "peer \(n) not established at the hub: \(lab.hubSAs()); hub log: \(lab.log("hub").suffix(3000))")
        }
        // The NATed peers come from the NAT's address, on ports the NAT chose.
        for n in natted { #expect(lab.established("peer\(n)").allSatisfy { $0.hasPrefix("192.168.90.99:") }, "\(lab.hubSAs())") }
        // Every peer's LAN and the hub's LAN, both ways.
        for n in 1...4 {
            let up = lab.transfer(megabytes: 8, from: lab.client(n), to: lab.server, address: "10.80.0.2", tag: "up\(n)")
            #expect(up.0 && up.1 == 8_000_000, "peer \(n) to the hub's LAN: \(up.1) bytes")
            let down = lab.transfer(megabytes: 8, from: lab.server, to: lab.client(n), address: "10.90.\(n).2", tag: "down\(n)")
            #expect(down.0 && down.1 == 8_000_000, "the hub's LAN to peer \(n): \(down.1) bytes")
        }
        // The NAT forgets its mappings during a transfer: the next datagrams from behind it come
        // from new ports, and the hub follows. Uploading, peer 3's own ESP makes the new mapping at
        // once (the hub moves on its newest authentic datagram); downloading, what the hub sends
        // to the old port is lost at the NAT until peer 3 sends something authentic: its DPD after
        // 2 s without traffic (IKE's next request), and the hub moves then.
        let rebindCommand = "sleep 1; \(lab.root)/scripts/netns-hub-topology.sh rebind \(lab.prefix)"
        func moves() -> Int { lab.log("hub").components(separatedBy: "peer3: peer moved").count - 1 }
        for upload in [true, false] {
            let before = lab.established("peer3"), movesBefore = moves()
            let rebind = Thread { shell(rebindCommand) }
            rebind.start()
            let during = upload
                ? lab.transfer(megabytes: 48, from: lab.client(3), to: lab.server, address: "10.80.0.2", tag: "rebind-up")
                : lab.transfer(megabytes: 48, from: lab.server, to: lab.client(3), address: "10.90.3.2", tag: "rebind-down")
            #expect(during.0 && during.1 == 48_000_000, "\(upload ? "uploading" : "downloading") across the NAT's rebinding: \(during.1) bytes")
            let after = lab.established("peer3")
            #expect(!after.isEmpty && after != before, "the hub follows peer 3 to its new port: before \(before), after \(after)")
            // (The flush may catch a mapping the NAT made a moment after it began: then the peer
            // moves twice, each time logged.)
            #expect(moves() > movesBefore, "the move is logged")
        }
        // Peer 2 killed: found dead (DPD) while peer 1 carries on; back again after a restart.
        shell("\(lab.root)/scripts/strongswan-charon.sh stop \(lab.dir) peer2; sleep 0.3; pkill -9 -f '[S]TRONGSWAN_CONF=\(lab.dir)/peer2' || true")
        let alive = lab.transfer(megabytes: 8, from: lab.client(1), to: lab.server, address: "10.80.0.2", tag: "alive")
        #expect(alive.0 && alive.1 == 8_000_000, "peer 1 goes on while peer 2 is gone")
        let gone = Date().addingTimeInterval(30)
        while Date() < gone && !lab.established("peer2").isEmpty { Thread.sleep(forTimeInterval: 0.3) }
        #expect(lab.established("peer2").isEmpty, "peer 2's SA torn down after DPD")
        try lab.startStrongSwanPeer(2, natted: false)
        let back = Date().addingTimeInterval(20)
        while Date() < back && lab.established("peer2").isEmpty { Thread.sleep(forTimeInterval: 0.2) }
        let again = lab.transfer(megabytes: 8, from: lab.client(2), to: lab.server, address: "10.80.0.2", tag: "again")
        #expect(again.0 && again.1 == 8_000_000, "peer 2 back: \(again.1) bytes")
        // SIGHUP with peer 4's connection gone from the file: peer 4's SA is deleted, the others
        // keep theirs (the same SPIs) and carry on.
        let kept = (1...3).map { lab.spis("peer\($0)") }
        var text = try String(contentsOfFile: config, encoding: .utf8)
        let start = try #require(text.range(of: "  peer4 {")), end = try #require(text.range(of: "}\nsecrets"))
        text.removeSubrange(start.lowerBound..<end.lowerBound)
        try text.write(toFile: config, atomically: false, encoding: .utf8)
        shell("pkill -HUP -f '[s]tats-json \(lab.dir)/hub.json'")
        let reloaded = Date().addingTimeInterval(10)
        while Date() < reloaded && !(lab.log("hub").contains("configuration reloaded") && lab.established("peer4").isEmpty) {
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(lab.log("hub").contains("configuration reloaded: 0 added, 0 changed, 1 removed (peer4), 3 unchanged"), "\(lab.log("hub").suffix(2000))")
        #expect(lab.established("peer4").isEmpty, "peer 4's SA deleted by the reload")
        #expect((1...3).map { lab.spis("peer\($0)") } == kept, "the other peers keep their SAs")
        let afterReload = lab.transfer(megabytes: 8, from: lab.client(1), to: lab.server, address: "10.80.0.2", tag: "reload")
        #expect(afterReload.0 && afterReload.1 == 8_000_000, "peer 1 carries on after the reload")
        let hub = try lab.stop("hub")
        let decap = try #require(hub["wan_to_lan"])
        #expect(decap.hubCounter("dropped", label: "unknown_spi") < 50, "few datagrams for SAs the hub does not know")
    }
}

@Suite("The underlay MTU of a socket of many peers")
struct HubUnderlayMTUTests {
    @Test("the MTU of the interface holding this end's address (loopback's for 127.0.0.1); none for an address no interface has")
    func interfaceMTU() {
        let lo = shell("cat /sys/class/net/lo/mtu").output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(UDPTunnelSocket.interfaceMTU(holding: IPAddress("127.0.0.1")!) == Int(lo))
        #expect(UDPTunnelSocket.interfaceMTU(holding: IPAddress("192.0.2.123")!) == nil)
    }
}
