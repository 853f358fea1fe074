import Foundation
import OffloadForwarder
import OffloadTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Whether strongSwan's charon with kernel-libipsec and swanctl are here (CI installs them).
let strongSwanAvailable = FileManager.default.isExecutableFile(atPath: "/usr/lib/ipsec/charon")
    && shell("command -v swanctl").status == 0
    && shell("ls /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so").status == 0

extension TunnelLab {
    /// An `offload ipsec --config` file for gateway `n` (the lab's addresses and prefixes), mode 0600.
    @discardableResult
    func writeIKEConfig(_ n: Int, start: String, esp: String = "aes128gcm16", proposals: String = "aes128gcm16-prfsha256-x25519",
                        psk: String = "offload-bench-psk-not-a-secret", connection: String = "", child: String = "",
                        perFamily: Bool = false) throws -> String {
        let path = "\(dir)/ike\(n).conf"
        func childSection(_ name: String, _ local: String, _ remote: String) -> String {
            """
                  \(name) {
                    local_ts = \(local)
                    remote_ts = \(remote)
                    esp_proposals = \(esp)
                    start_action = \(start)
                    \(child)
                  }

            """
        }
        let children = perFamily
            ? childSection("net4", "10.88.\(n).0/24", "10.88.\(3 - n).0/24") + childSection("net6", "fd88:\(n)::/64", "fd88:\(3 - n)::/64")
            : childSection("net", "10.88.\(n).0/24, fd88:\(n)::/64", "10.88.\(3 - n).0/24, fd88:\(3 - n)::/64")
        let text = """
            connections {
              site {
                local_addrs = 192.168.88.\(n)
                remote_addrs = 192.168.88.\(3 - n)
                proposals = \(proposals)
                \(connection)
                local { auth = psk
                  id = gw\(n) }
                remote { auth = psk
                  id = gw\(3 - n) }
                children {
            \(children)    }
              }
            }
            secrets {
              ike-site { id = gw\(3 - n)
                secret = "\(psk)" }
            }
            """
        FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
        return path
    }

    /// `offload ipsec --config` on gateway `n` (device ipsec0).
    func startIKE(_ n: Int, _ extra: [String] = []) throws {
        try startEndpoints(command: { _ in ["ipsec", "--config", "\(self.dir)/ike\(n).conf"] + extra }, device: "ipsec0", gateways: [n])
    }

    /// strongSwan on gateway `n` (scripts/strongswan-netns.sh peer), with `environment` knobs.
    func startStrongSwan(_ n: Int, esp: String, environment: [String: String] = [:]) throws {
        let env = environment.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let (status, out) = shell("\(env) \(root)/scripts/strongswan-netns.sh peer \(prefix) \(dir)/sw \(n) \(esp)")
        guard status == 0 else { throw TunnelLabError("strongSwan: \(out)") }
    }

    func strongSwanSAs(_ n: Int) -> String { shell("\(root)/scripts/strongswan-netns.sh list \(prefix) \(dir)/sw \(n)").output }
    func strongSwanLog(_ n: Int) -> String { (try? String(contentsOfFile: "\(dir)/sw/charon\(n).log", encoding: .utf8)) ?? "" }
    func gatewayLog(_ n: Int) -> String { (try? String(contentsOfFile: "\(dir)/gw\(n).log", encoding: .utf8)) ?? "" }

    /// Waits until `condition` holds (bounded): whether it did.
    func waitFor(seconds: Double, _ condition: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return condition()
    }

    /// Stops `offload ipsec` on gateway `n`: its counters.
    func stopGateway(_ n: Int) throws -> [String: ForwarderStatistics] {
        shell("pkill -TERM -f '[s]tats-json \(dir)/gw\(n).json' || true")
        return try statistics(of: n)
    }

    func stopStrongSwan() { shell("\(root)/scripts/strongswan-netns.sh down \(prefix) \(dir)/sw") }

    /// `offload ipsec --status` of gateway `n`.
    func ikeStatus(_ n: Int) -> String {
        guard let offload = builtExecutable(named: "offload") else { return "" }
        return shell("\(offload) ipsec --config \(dir)/ike\(n).conf --status").output
    }
}

@Suite("IKEv2 with strongSwan as the peer (charon with kernel-libipsec), the kernel's TCP at both ends", .serialized)
struct IKEInteropTests {
    static let cases: [(Bool, String)] = [(true, "aes128gcm16"), (false, "aes128gcm16"), (true, "chacha20poly1305"), (false, "aes256gcm16")]

    @Test("this gateway and strongSwan negotiate in either role; 64 MB each way intact; the underlay carries only IKE and ESP in UDP",
          .enabled(if: netnsReady && strongSwanAvailable && tcpdumpAvailable, "needs namespaces, tcpdump and strongSwan (strongswan-charon, strongswan-swanctl, libcharon-extra-plugins)"),
          arguments: cases)
    func interop(weInitiate: Bool, esp: String) throws { try exclusiveNetwork { try interopBody(weInitiate, esp) } }
    func interopBody(_ weInitiate: Bool, _ esp: String) throws {
        let lab = try TunnelLab()
        defer { lab.stopStrongSwan() }
        try lab.writeIKEConfig(1, start: weInitiate ? "start" : "none", esp: esp + "-esn-noesn")
        let underlay = "\(lab.dir)/underlay.pcap"
        shell("setsid ip netns exec \(lab.gateway(1)) timeout 90 tcpdump -i u0 -U -s 128 -w \(underlay) ip or ip6 > \(lab.dir)/tcpdump.log 2>&1 < /dev/null &")
        _ = lab.waitFor(seconds: 5) { ((try? String(contentsOfFile: "\(lab.dir)/tcpdump.log", encoding: .utf8)) ?? "").contains("listening") }
        if weInitiate {
            try lab.startStrongSwan(2, esp: esp)
            try lab.startIKE(1)
        } else {
            try lab.startIKE(1)
            try lab.startStrongSwan(2, esp: esp, environment: ["SW_START": "start"])
        }
        #expect(lab.waitFor(seconds: 15) { lab.strongSwanSAs(2).contains("INSTALLED") }, "\(lab.gatewayLog(1))\n\(lab.strongSwanLog(2).suffix(3000))")
        let up = lab.transfer(megabytes: 64, from: lab.client, to: lab.server, address: "10.88.2.2", ipv6: false)
        let down = lab.transfer(megabytes: 64, from: lab.server, to: lab.client, address: "10.88.1.2", ipv6: false)
        let v6 = lab.transfer(megabytes: 8, from: lab.client, to: lab.server, address: "fd88:2::2", ipv6: true)
        #expect(up.0 && down.0 && v6.0, "up \(up.1), down \(down.1), IPv6 \(v6.1) bytes")
        let sas = lab.strongSwanSAs(2)
        let status = lab.ikeStatus(1)
        print("strongSwan:\n\(sas)\noffload ipsec --status:\n\(status)")
        #expect(sas.contains("ESTABLISHED") && sas.contains("TUNNEL-in-UDP"))
        let wanted = ["aes128gcm16": "AES_GCM_16-128", "aes256gcm16": "AES_GCM_16-256", "chacha20poly1305": "CHACHA20_POLY1305"][esp]!
        #expect(sas.contains("ESP:\(wanted)"), "the negotiated AEAD")
        #expect(!sas.contains("ESN"), "libipsec: ESN off")
        #expect(status.contains("ESTABLISHED") && status.contains(weInitiate ? "initiator" : "responder") && status.contains(esp))
        let stats = try lab.stopGateway(1)
        shell("pkill -INT -f '[t]cpdump -i u0 -U -s 128 -w \(underlay)'")
        Thread.sleep(forTimeInterval: 0.5)
        let other = shell("tcpdump -r \(underlay) -nn 'not (udp port 500 or udp port 4500) and not icmp6 and not ip6 multicast' 2>/dev/null | wc -l").output
        let ike = shell("tcpdump -r \(underlay) -nn 'udp port 500 or (udp port 4500 and udp[8:4] = 0)' 2>/dev/null | wc -l").output
        let espPackets = shell("tcpdump -r \(underlay) -nn 'udp port 4500 and udp[8:4] != 0' 2>/dev/null | wc -l").output
        print("underlay: \(ike.trimmed) IKE, \(espPackets.trimmed) ESP in UDP, \(other.trimmed) other")
        print(shell("tcpdump -r \(underlay) -nn 'not (udp port 500 or udp port 4500) and not icmp6 and not ip6 multicast' 2>/dev/null | head -5").output)
        #expect(Int(other.trimmed) == 0, "only IKE and ESP in UDP on the underlay")
        #expect((Int(ike.trimmed) ?? 0) >= 4 && (Int(espPackets.trimmed) ?? 0) > 1000)
        let decap = try #require(stats["wan_to_lan"])
        #expect(decap.tunnel("dropped", ["reason": "bad_icv"]) == 0 && decap.tunnel("dropped", ["reason": "unknown_spi"]) == 0)
        withExtendedLifetime(lab) {}
    }

    @Test("rekeying under load: 256 MB while CHILD_SAs (both ends) and the IKE SA are rekeyed every few seconds; nothing lost, the counts reported",
          .enabled(if: netnsReady && strongSwanAvailable, "needs namespaces and strongSwan"))
    func rekeyUnderLoad() throws { try exclusiveNetwork { try rekeyBody() } }
    func rekeyBody() throws {
        let lab = try TunnelLab()
        defer { lab.stopStrongSwan() }
        try lab.writeIKEConfig(1, start: "start", esp: "aes128gcm16", connection: "rekey_time = 5s", child: "rekey_time = 2s")
        try lab.startStrongSwan(2, esp: "aes128gcm16", environment: ["SW_CHILD_REKEY": "3s", "SW_CHILD_LIFE": "60s"])
        try lab.startIKE(1)
        #expect(lab.waitFor(seconds: 15) { lab.strongSwanSAs(2).contains("INSTALLED") })
        let big = lab.transfer(megabytes: 256, from: lab.client, to: lab.server, address: "10.88.2.2", ipv6: false)
        Thread.sleep(forTimeInterval: 0.5)
        let status = lab.ikeStatus(1)
        // The handover from the ESP receiving thread (SIGUSR1 logs its counters): strongSwan's
        // messages all pass the filter, and the rekeys' messages are the ones waited for.
        shell("pkill -USR1 -f '[s]tats-json \(lab.dir)/gw1.json'")
        #expect(lab.waitFor(seconds: 5) { lab.gatewayLog(1).contains("IKE on port 4500:") })
        let handover = lab.gatewayLog(1).split(separator: "\n").last { $0.contains("IKE on port 4500:") }.map(String.init) ?? ""
        let numbers = handover.split(separator: "IKE on port 4500:").last.map { text in
            text.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        } ?? []
        // queued, waited for, past 50 ms (the 50 itself), malformed, unknown SPI, over the rate, queue full.
        print("handover: \(handover)")
        #expect(numbers.count == 8, "\(handover)")
        if numbers.count == 8 {
            #expect(numbers[0] > 0 && numbers[1] > 0, "IKE messages queued, the rekeys' waited for")
            #expect(numbers[4] == 0 && numbers[6] == 0 && numbers[7] == 0, "none malformed, over the rate or over the queue: \(handover)")
        }
        let stats = try lab.stopGateway(1)
        let decap = try #require(stats["wan_to_lan"]), encap = try #require(stats["lan_to_wan"])
        let log = lab.gatewayLog(1)
        let childRekeys = log.components(separatedBy: "(rekeyed)").count - 1
        let ikeRekeys = log.components(separatedBy: "IKE SA rekeyed").count - 1
        let unknown = decap.tunnel("dropped", ["reason": "unknown_spi"]), replay = decap.tunnel("dropped", ["reason": "replay"])
        let noPolicy = encap.tunnel("encapsulation_dropped", ["reason": "no_policy"])
        print("rekey under load: \(big.1) bytes, CHILD_SA rekeys \(childRekeys), IKE SA rekeys \(ikeRekeys), unknown_spi \(unknown), replay \(replay), "
            + "no_policy \(noPolicy), bad_icv \(decap.tunnel("dropped", ["reason": "bad_icv"]))\n\(status)")
        #expect(big.0, "256 MB intact: \(big.1) bytes")
        #expect(childRekeys >= 3 && ikeRekeys >= 1, "\(log.suffix(2000))")
        #expect(decap.tunnel("dropped", ["reason": "bad_icv"]) == 0)
        #expect(unknown == 0, "the new inbound SA is installed before the peer uses it, the old kept until deleted")
        withExtendedLifetime(lab) {}
    }

    @Test("dead peer: strongSwan killed, the SA is torn down within dpd_delay and the retransmissions; strongSwan back, traffic flows again",
          .enabled(if: netnsReady && strongSwanAvailable, "needs namespaces and strongSwan"))
    func deadPeer() throws { try exclusiveNetwork { try deadPeerBody() } }
    func deadPeerBody() throws {
        let lab = try TunnelLab()
        defer { lab.stopStrongSwan() }
        try lab.writeIKEConfig(1, start: "start", connection: "dpd_delay = 2s\nretransmit_timeout = 0.5s\nretransmit_base = 2\nretransmit_tries = 2")
        try lab.startStrongSwan(2, esp: "aes128gcm16")
        try lab.startIKE(1)
        #expect(lab.waitFor(seconds: 15) { lab.strongSwanSAs(2).contains("INSTALLED") })
        #expect(shell("ip netns exec \(lab.client) ping -c 2 -W 1 10.88.2.2").status == 0)
        shell("kill -9 $(cat \(lab.dir)/sw/charon2.pid)")
        let killed = Date()
        // 2 s of silence, then tries after 0.5, 1 and 2 s: torn down in about 5.5 s.
        let down = lab.waitFor(seconds: 12) { lab.gatewayLog(1).contains("IKE SA torn down") }
        let took = Date().timeIntervalSince(killed)
        print("dead peer: torn down after \(String(format: "%.1f", took)) s")
        #expect(down && took < 9, "\(lab.gatewayLog(1).suffix(1500))")
        #expect(lab.waitFor(seconds: 3) { !lab.ikeStatus(1).contains("INSTALLED") })
        try lab.startStrongSwan(2, esp: "aes128gcm16")
        #expect(lab.waitFor(seconds: 20) { lab.strongSwanSAs(2).contains("INSTALLED") }, "start_action = start: initiated again")
        #expect(lab.waitFor(seconds: 5) { shell("ip netns exec \(lab.client) ping -c 1 -W 1 10.88.2.2").status == 0 })
        _ = try lab.stopGateway(1)
        withExtendedLifetime(lab) {}
    }

    @Test("wrong PSK and mismatched proposals: a clear error on both sides, no SA", .enabled(if: netnsReady && strongSwanAvailable, "needs namespaces and strongSwan"),
          arguments: ["psk", "ike-proposal", "esp-proposal"])
    func refusals(kind: String) throws { try exclusiveNetwork { try refusalsBody(kind) } }
    func refusalsBody(_ kind: String) throws {
        let lab = try TunnelLab()
        defer { lab.stopStrongSwan() }
        switch kind {
        case "psk": try lab.writeIKEConfig(1, start: "start", psk: "a-different-secret-entirely")
        case "ike-proposal": try lab.writeIKEConfig(1, start: "start", proposals: "aes256gcm16-prfsha384-modp2048")
        default: try lab.writeIKEConfig(1, start: "start", esp: "chacha20poly1305")
        }
        try lab.startStrongSwan(2, esp: "aes128gcm16")
        try lab.startIKE(1)
        let ours = ["psk": "AUTHENTICATION_FAILED", "ike-proposal": "NO_PROPOSAL_CHOSEN", "esp-proposal": "NO_PROPOSAL_CHOSEN"][kind]!
        let theirs = ["psk": "MAC mismatched", "ike-proposal": "received proposals unacceptable", "esp-proposal": "no acceptable proposal"][kind]!
        #expect(lab.waitFor(seconds: 10) { lab.gatewayLog(1).contains(ours) }, "\(lab.gatewayLog(1))")
        #expect(lab.waitFor(seconds: 5) { lab.strongSwanLog(2).lowercased().contains(theirs.lowercased()) },
                "\(lab.strongSwanLog(2).split(separator: "\n").filter { $0.contains("proposal") || $0.contains("MAC") || $0.contains("auth") }.joined(separator: "\n"))")
        #expect(!lab.strongSwanSAs(2).contains("INSTALLED") && !lab.ikeStatus(1).contains("INSTALLED"))
        #expect(!lab.gatewayLog(1).contains("a-different-secret") && !lab.gatewayLog(1).contains("offload-bench-psk"), "no secret in the log")
        #expect(shell("ip netns exec \(lab.client) ping -c 1 -W 1 10.88.2.2").status != 0, "no traffic without an SA")
        _ = try lab.stopGateway(1)
        withExtendedLifetime(lab) {}
    }

    @Test("junk behind the non-ESP marker sent to a live gateway's port 4500 (from the peer's address and port): dropped and counted, never queued nor waited for; the SA carries traffic throughout",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func junkOn4500() throws { try exclusiveNetwork { try junkBody() } }
    func junkBody() throws {
        let lab = try TunnelLab()
        try lab.writeIKEConfig(1, start: "start")
        try lab.writeIKEConfig(2, start: "none")
        try lab.startIKE(2)
        try lab.startIKE(1)
        #expect(lab.waitFor(seconds: 10) { lab.ikeStatus(1).contains("INSTALLED") && lab.ikeStatus(2).contains("INSTALLED") })
        /// Gateway 1's handover counters, logged afresh with SIGUSR1: queued, waited for, past 50 ms
        /// (and the 50), malformed, unknown SPI, over the rate, queue full.
        func handover() -> [Int] {
            let marker = "IKE on port 4500:"
            let seen = lab.gatewayLog(1).components(separatedBy: marker).count
            shell("pkill -USR1 -f '[s]tats-json \(lab.dir)/gw1.json'")
            _ = lab.waitFor(seconds: 5) { lab.gatewayLog(1).components(separatedBy: marker).count > seen }
            let line = lab.gatewayLog(1).components(separatedBy: marker).last?.split(separator: "\n").first ?? ""
            return line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        }
        let before = handover()
        // From gateway 2's namespace (its address), source port 4500 through a raw socket (gateway 2's
        // own socket holds the port): 200 datagrams of garbage and 200 well-formed IKE headers with
        // SPIs nobody has, all behind the marker.
        let script = """
            import os, socket, struct, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
            for i in range(400):
                if i % 2 == 0:
                    body = bytes([0x10]) * (40 + i % 90)
                else:
                    body = os.urandom(16) + bytes([46, 0x20, 36, 0x08]) + struct.pack("!II", 2, 28)
                datagram = b"\\0\\0\\0\\0" + body
                s.sendto(struct.pack("!HHHH", 4500, 4500, 8 + len(datagram), 0) + datagram, (sys.argv[1], 0))
            """
        try script.write(toFile: "\(lab.dir)/junk.py", atomically: true, encoding: .utf8)
        #expect(shell("ip netns exec \(lab.gateway(2)) python3 \(lab.dir)/junk.py 192.168.88.1").status == 0)
        let after = handover()
        print("handover before \(before), after \(after)")
        #expect(before.count == 8 && after.count == 8)
        if before.count == 8 && after.count == 8 {
            #expect(after[4] > before[4] && after[5] > before[5], "garbage counted malformed, unknown SPIs counted")
            #expect(after[4] - before[4] + after[5] - before[5] <= 400)
            #expect(after[0] == before[0] && after[1] == before[1], "nothing of it queued or waited for")
        }
        #expect(shell("ip netns exec \(lab.client) ping -c 2 -W 1 10.88.2.2").status == 0)
        // --status shows the same drops (the status file is rewritten each second).
        #expect(lab.waitFor(seconds: 3) {
            let line = lab.ikeStatus(1).split(separator: "\n").first { $0.hasPrefix("port 4500 handover:") } ?? ""
            let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
            return numbers.count == 10 && after.count == 8 && numbers[6] >= after[4] && numbers[7] >= after[5]  // [4500, queued, waits, past, 50, dropped, malformed, unknown SPI, …]
        }, "offload ipsec --status: \(lab.ikeStatus(1))")
        _ = try lab.stopGateway(1)
        _ = try lab.stopGateway(2)
    }

    @Test("this gateway with IKEv2 at both ends, offloads on: a CHILD_SA per family, each rekeyed every 2 s on its own (collisions too) while 64 MB cross each way in each family; trains out, merged again in; nothing dropped as an unknown SPI",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func bothEnds() throws { try exclusiveNetwork { try bothEndsBody() } }
    func bothEndsBody() throws {
        let lab = try TunnelLab()
        try lab.writeIKEConfig(1, start: "start", esp: "aes128gcm16-esn", connection: "rekey_time = 7s", child: "rekey_time = 2s", perFamily: true)
        try lab.writeIKEConfig(2, start: "none", esp: "aes128gcm16-esn", child: "rekey_time = 3s", perFamily: true)
        try lab.startIKE(2)
        try lab.startIKE(1, ["--write-keys", "\(lab.dir)/keys"])
        #expect(lab.waitFor(seconds: 10) { lab.ikeStatus(1).components(separatedBy: "INSTALLED").count == 3 && lab.ikeStatus(2).contains("INSTALLED") })
        #expect(lab.ikeStatus(1).contains("aes128gcm16-esn"), "ESN between two of these gateways")
        // SIGUSR1: the same status, to the log.
        shell("pkill -USR1 -f '[s]tats-json \(lab.dir)/gw1.json'")
        #expect(lab.waitFor(seconds: 5) { lab.gatewayLog(1).contains("INSTALLED") && lab.gatewayLog(1).contains("CHILD_SA rekeys") },
                "SIGUSR1 logs the SAs: \(lab.gatewayLog(1).suffix(800))")
        let (encap, decap) = try lab.transferBothWaysAndCheckTrains(label: "ike")
        let log = lab.gatewayLog(1) + lab.gatewayLog(2)
        let rekeys = (net4: log.components(separatedBy: "CHILD_SA net4 installed").count - 1, net6: log.components(separatedBy: "CHILD_SA net6 installed").count - 1)
        print("gateway to gateway: CHILD_SAs installed at both ends \(rekeys), unknown_spi \(decap.tunnel("dropped", ["reason": "unknown_spi"])), "
            + "replay \(decap.tunnel("dropped", ["reason": "replay"])), no_policy \(encap.tunnel("encapsulation_dropped", ["reason": "no_policy"]))")
        #expect(rekeys.net4 >= 6 && rekeys.net6 >= 6, "each family's CHILD_SA rekeyed several times")
        #expect(decap.tunnel("dropped", ["reason": "bad_icv"]) == 0 && decap.tunnel("dropped", ["reason": "unknown_spi"]) == 0)
        #expect(encap.tunnel("send_errors") <= 2)
        let keys = (try? String(contentsOfFile: "\(lab.dir)/keys", encoding: .utf8)) ?? ""
        let ikeKeys = (try? String(contentsOfFile: "\(lab.dir)/keys.ikev2", encoding: .utf8)) ?? ""
        #expect(keys.contains("AES-GCM with 16 octet ICV") && ikeKeys.contains("AES-GCM-128 with 16 octet ICV"), "the key log follows the SAs")
        let someKey = keys.split(separator: "\n").first.map { $0.split(separator: ",").map { $0.replacingOccurrences(of: "\"", with: "") } }?[5] ?? ""
        #expect(someKey.hasPrefix("0x") && someKey.count == 42, "\(someKey.count)")
        #expect(!log.contains(someKey.dropFirst(2)), "no key in the logs")
    }
}

@Suite("IKEv2 key log: Wireshark decrypts what it names", .serialized)
struct IKEKeyLogTests {
    @Test("tshark decrypts IKE_AUTH with the .ikev2 lines and the ESP of negotiated SAs with the esp_sa lines (--write-keys)",
          .enabled(if: netnsReady && tcpdumpAvailable && shell("command -v tshark").status == 0, "needs namespaces, tcpdump and tshark"))
    func tsharkDecrypts() throws { try exclusiveNetwork { try body() } }
    func body() throws {
        let lab = try TunnelLab()
        // As a NIC without USO: each datagram is its own packet on the capture.
        shell("ip netns exec \(lab.gateway(1)) ethtool -K u0 tx-udp-segmentation off")
        try lab.writeIKEConfig(1, start: "start")
        try lab.writeIKEConfig(2, start: "none")
        let capture = lab.capturingUnderlay("ike", snaplen: 0) {
            try? lab.startIKE(2)
            try? lab.startIKE(1, ["--write-keys", "\(lab.dir)/keys"])
            _ = lab.waitFor(seconds: 10) { lab.ikeStatus(1).contains("INSTALLED") }
            _ = lab.transfer(megabytes: 1, from: lab.client, to: lab.server, address: "10.88.2.2", ipv6: false)
        }
        _ = try lab.stopEndpoints()
        let ike = try String(contentsOfFile: "\(lab.dir)/keys.ikev2", encoding: .utf8).split(separator: "\n")
        let esp = try String(contentsOfFile: "\(lab.dir)/keys", encoding: .utf8).split(separator: "\n")
        #expect(ike.count == 1 && esp.count == 2)
        let options = ike.map { "-o 'uat:ikev2_decryption_table:\($0)'" }.joined(separator: " ") + " "
            + esp.map { "-o 'uat:esp_sa:\($0)'" }.joined(separator: " ")
        let decoded = shell("tshark -r \(capture) -o esp.enable_encryption_decode:TRUE \(options) -V 2>/dev/null").output
        print("tshark: IKE_AUTH decrypted: \(decoded.contains("Payload: Identification - Initiator (35)"))")
        #expect(decoded.contains("Payload: Identification - Initiator (35)"), "IKE_AUTH decrypted")
        let tcp = shell("tshark -r \(capture) -o esp.enable_encryption_decode:TRUE \(options) -Y 'esp && tcp.dstport == 5001' 2>/dev/null | wc -l").output
        #expect((Int(tcp.trimmed) ?? 0) > 100, "ESP decrypted to the inner TCP: \(tcp.trimmed)")
        withExtendedLifetime(lab) {}
    }
}

extension String {
    var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}
