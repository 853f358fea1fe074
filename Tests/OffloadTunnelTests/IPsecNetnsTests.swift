import Foundation
import OffloadCrypto
import OffloadForwarder
import OffloadIPsec
import OffloadTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The SA files of the two gateways (mode 0600): gw1 sends with SPI 0x1001 and key K1, gw2 with
/// 0x2001 and K2; each receives with the other's.
struct IPsecKeys {
    static let k1 = (0..<20).map { String(format: "%02x", ($0 * 29 + 11) & 0xFF) }.joined()
    static let k2 = (0..<20).map { String(format: "%02x", ($0 * 17 + 3) & 0xFF) }.joined()
    static let k1Long = (0..<36).map { String(format: "%02x", ($0 * 29 + 11) & 0xFF) }.joined()
    static let k2Long = (0..<36).map { String(format: "%02x", ($0 * 17 + 3) & 0xFF) }.joined()

    /// Writes `dir/gwN.conf` for both gateways.
    static func write(in dir: String, algorithm: String = "aes128gcm16", esn: Bool = true) throws {
        let a = ESPAlgorithm(name: algorithm)!
        let (k1, k2) = a == .aesGCM128 ? (hexBytes(Self.k1), hexBytes(Self.k2)) : (hexBytes(k1Long), hexBytes(k2Long))
        let sa = { (key: [UInt8], spi: UInt32) in ESPSAKeys(spi: spi, key: Array(key.dropLast(4)), salt: Array(key.suffix(4))) }
        let gw1 = ESPTunnelConfiguration(name: "site", algorithm: a, extendedSequenceNumbers: esn,
                                         localSelectors: ["10.88.1.0/24", "fd88:1::/64"].map { TrafficSelector($0)! },
                                         remoteSelectors: ["10.88.2.0/24", "fd88:2::/64"].map { TrafficSelector($0)! },
                                         outbound: sa(k1, 0x1001), inbound: sa(k2, 0x2001))
        try SAFile.write(SAFile.render([gw1]), to: "\(dir)/gw1.conf")
        try SAFile.write(SAFile.render([gw1.reversed]), to: "\(dir)/gw2.conf")
    }
}

extension TunnelLab {
    /// `offload ipsec` on the gateways (device ipsec0), with the SA files of ``IPsecKeys`` and the
    /// sequence marks in the lab's `marks` directory (the lab's machine: both gateways share it).
    func startIPsec(_ arguments: [String] = [], algorithm: String = "aes128gcm16", gateways: [Int] = [1, 2],
                    executable: String? = nil, environment: String = "") throws {
        if !FileManager.default.fileExists(atPath: "\(dir)/gw1.conf") { try IPsecKeys.write(in: dir, algorithm: algorithm) }
        try startEndpoints(command: { n in ["ipsec", "--sa", "\(self.dir)/gw\(n).conf", "--state", "\(self.dir)/marks"] + arguments },
                           device: "ipsec0",
                           gateways: gateways, executable: executable, environment: environment)
    }

    /// A capture on gw1's underlay while `body` runs; the capture's path.
    func capturingUnderlay(_ name: String, snaplen: Int = 256, _ body: () -> Void) -> String {
        let path = "\(dir)/\(name).pcap"
        shell("setsid ip netns exec \(gateway(1)) timeout 60 tcpdump --immediate-mode -i u0 -U -s \(snaplen) -w \(path) udp port 4500 or udp port 2152 > \(dir)/\(name).tcpdump 2>&1 < /dev/null &")
        for _ in 0..<50 where !((try? String(contentsOfFile: "\(dir)/\(name).tcpdump", encoding: .utf8)) ?? "").contains("listening") {
            Thread.sleep(forTimeInterval: 0.05)
        }
        body()
        Thread.sleep(forTimeInterval: 0.3)
        shell("pkill -INT -f '[t]cpdump --immediate-mode -i u0 -U -s \(snaplen) -w \(path)'")
        Thread.sleep(forTimeInterval: 0.3)
        return path
    }
}

let tcpdumpAvailable = shell("command -v tcpdump").status == 0

@Suite("offload ipsec on both gateways (ESP in UDP), with the kernel's TCP at both ends", .serialized)
struct IPsecNetnsTests {
    @Test("64 MB each way, IPv4 and IPv6 inside, intact; UDP GSO trains out, UDP GRO trains in, merged again",
          .enabled(if: netnsReady, "\(netnsSkipReason)"), arguments: ["aes128gcm16", "chacha20poly1305"])
    func integrity(algorithm: String) throws { try exclusiveNetwork { try integrityBody(algorithm) } }
    func integrityBody(_ algorithm: String) throws {
        let lab = try TunnelLab()
        try lab.startIPsec(algorithm: algorithm)
        let (encap, decap) = try lab.transferBothWaysAndCheckTrains(label: algorithm)
        let refused = ["bad_icv", "replay", "too_old", "unknown_spi", "truncated", "bad_padding", "policy"].map {
            decap.tunnel("dropped", ["reason": $0])
        }
        #expect(refused.allSatisfy { $0 == 0 }, "nothing refused in a clean run: \(refused)")
        #expect(decap.tunnel("datagrams_received") == decap.packetsIn && decap.dropped == 0)
        #expect(encap.tunnel("send_errors") <= 2 && decap.writeErrors == 0)
    }

    @Test("the underlay shows ESP only: no plaintext, UDP GSO trains; the same test sees the plaintext through GTP-U",
          .enabled(if: netnsReady && tcpdumpAvailable, "needs namespaces and tcpdump"))
    func noPlaintext() throws { try exclusiveNetwork { try noPlaintextBody() } }
    func noPlaintextBody() throws {
        var seen: [String: (markers: Int, trains: Int)] = [:]
        for kind in ["gtpu", "ipsec"] {
            let lab = try TunnelLab()
            if kind == "ipsec" { try lab.startIPsec() } else {
                try lab.startEndpoints(command: { _ in ["tunnel", "--id", "7", "--protocol", "gtpu"] }, device: "gtp0")
            }
            // A file of a known text, so that plaintext on the wire can be found.
            shell("yes 'PLAINTEXT-MARKER-0123456789' | head -c 4000000 > \(lab.dir)/marker.txt")
            let capture = lab.capturingUnderlay(kind) {
                shell("setsid ip netns exec \(lab.server) timeout 30 socat -u TCP4-LISTEN:5002,reuseaddr OPEN:\(lab.dir)/got.txt,creat,trunc "
                    + "> /dev/null 2>&1 < /dev/null &")
                Thread.sleep(forTimeInterval: 0.3)
                shell("ip netns exec \(lab.client) socat -u OPEN:\(lab.dir)/marker.txt TCP4:10.88.2.2:5002", timeout: 30)
            }
            let markers = Int(shell("grep -a -o PLAINTEXT-MARKER \(capture) | wc -l").output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
            // A GSO train is one packet on the veth, longer than the MTU.
            let trains = shell("tcpdump -r \(capture) -nn 2>/dev/null | awk '{print $NF}' | awk '$1 > 1600' | wc -l")
            seen[kind] = (markers, Int(trains.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1)
            _ = try lab.stopEndpoints()
        }
        print("underlay: \(seen)")
        #expect((seen["gtpu"]?.markers ?? 0) > 100, "the check finds plaintext when there is some")
        #expect(seen["ipsec"]?.markers == 0, "ESP: no plaintext on the underlay")
        #expect((seen["ipsec"]?.trains ?? 0) > 10, "UDP GSO trains on the underlay")
    }

    @Test("tshark decrypts a live capture of the underlay with the --write-keys lines (no UDP segmentation offload on the underlay, so each datagram is its own packet there)",
          .enabled(if: netnsReady && tcpdumpAvailable && shell("command -v tshark").status == 0, "needs namespaces, tcpdump and tshark"))
    func tsharkLive() throws { try exclusiveNetwork { try tsharkLiveBody() } }
    func tsharkLiveBody() throws {
        let lab = try TunnelLab()
        // As a NIC without USO: the kernel cuts each train into datagrams before the capture point.
        shell("ip netns exec \(lab.gateway(1)) ethtool -K u0 tx-udp-segmentation off")
        try lab.startIPsec(["--write-keys", "\(lab.dir)/keys"])
        let capture = lab.capturingUnderlay("live", snaplen: 0) {
            _ = lab.transfer(megabytes: 2, from: lab.client, to: lab.server, address: "10.88.2.2", ipv6: false)
        }
        _ = try lab.stopEndpoints()
        let keys = try String(contentsOfFile: "\(lab.dir)/keys", encoding: .utf8).split(separator: "\n")
        #expect(keys.count == 2)
        let options = keys.map { "-o 'uat:esp_sa:\($0)'" }.joined(separator: " ")
        let rows = shell("tshark -r \(capture) -o esp.enable_encryption_decode:TRUE \(options) -Y 'esp.spi == 0x1001' "
            + "-T fields -e esp.sequence -e tcp.dstport 2>/dev/null").output.split(separator: "\n")
        let decrypted = rows.filter { $0.hasSuffix("\t5001") }
        print("tshark: \(rows.count) ESP packets from gw1, \(decrypted.count) decrypted to the inner TCP to port 5001")
        #expect(rows.count > 500)
        #expect(decrypted.count == rows.count, "every datagram decrypts")
        withExtendedLifetime(lab) {}
    }

    @Test("underlay MTU 1400: the inner sender learns 1400 − 65 through ICMP, the transfer completes",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func smallerUnderlay() throws { try exclusiveNetwork { try smallerUnderlayBody() } }
    func smallerUnderlayBody() throws {
        let lab = try TunnelLab(underlayMTU: 1400)
        // Without MSS clamping (the default; with --clamp-mss no segment is too big and nothing is learnt).
        try lab.startIPsec()
        let v4 = lab.transfer(megabytes: 16, from: lab.client, to: lab.server, address: "10.88.2.2", ipv6: false)
        let v6 = lab.transfer(megabytes: 16, from: lab.client, to: lab.server, address: "fd88:2::2", ipv6: true)
        #expect(v4.0 && v6.0, "IPv4 \(v4.1) bytes, IPv6 \(v6.1) bytes")
        // ESP in UDP over IPv4: 20 + 8 + 16 (SPI, sequence, IV) + up to 3 padding + 2 + 16 (ICV) = 65.
        let cache4 = shell("ip -n \(lab.client) route get 10.88.2.2").output
        let cache6 = shell("ip -n \(lab.client) -6 route get fd88:2::2").output
        #expect(cache4.contains("mtu 1335") && cache6.contains("mtu 1335"), "\(cache4) \(cache6)")
        #expect(shell("ip -n \(lab.gateway(1)) link show ipsec0").output.contains("mtu 1335"))
        let stats = try lab.stopEndpoints()
        #expect((stats[0]["lan_to_wan"]?.tunnel("send_errors") ?? 99) <= 2, "no datagram over the underlay MTU")
    }

    @Test("hostile datagrams to an AddressSanitizer release build during a transfer (replays of captured ones, flipped bits, unknown SPIs, truncated, authentic with lying padding): each counted by reason, none forwarded, the transfer intact",
          .enabled(if: netnsReady && tcpdumpAvailable && scapyOrCryptography, "needs namespaces, tcpdump and python3 with cryptography"))
    func hostileInput() throws { try exclusiveNetwork { try hostileInputBody() } }
    func hostileInputBody() throws {
        let lab = try TunnelLab()
        // 32-bit sequence numbers, so that an old replay is told as too old (with ESN it reads as
        // the next subspace and fails its ICV, RFC 4303 A2.2: refused all the same).
        try IPsecKeys.write(in: lab.dir, esn: false)
        // gw1 starts its numbers above 1000: the attacker's authentic datagrams (numbers 1...50,
        // made with the key, sent first) then sit below gw1's real traffic and move no window past it.
        // The mark is in the old form (beside the SA file, by SPI), which the gateway imports.
        let fingerprint = SequenceStore.oldFormFingerprint(spi: 0x1001, key: SecretBytes(hexBytes(IPsecKeys.k1))).markFileField
        try "spi 0x00001001 key-fingerprint \(fingerprint) used-through 1000\n".write(toFile: "\(lab.dir)/gw1.conf.seq", atomically: true,
                                                                                    encoding: .utf8)
        // The receiver of the hostile datagrams is the release build with AddressSanitizer.
        try lab.startIPsec(gateways: [1])
        try lab.startIPsec(gateways: [2], executable: asanOffload.get(), environment: asanEnvironment)
        try hostileScript(lab).write(toFile: "\(lab.dir)/hostile.py", atomically: true, encoding: .utf8)
        let padding = shell("ip netns exec \(lab.gateway(1)) python3 \(lab.dir)/hostile.py padding")
        #expect(padding.status == 0, "\(padding.output)")
        // Datagrams to replay: some of gw1's own, captured from the underlay.
        let captured = lab.capturingUnderlay("replay") {
            _ = lab.transfer(megabytes: 2, from: lab.client, to: lab.server, address: "10.88.2.2", ipv6: false)
        }
        shell("setsid ip netns exec \(lab.gateway(1)) python3 \(lab.dir)/hostile.py rest \(captured) > \(lab.dir)/hostile.log 2>&1 < /dev/null &")
        let up = lab.transfer(megabytes: 32, from: lab.client, to: lab.server, address: "10.88.2.2", ipv6: false)
        #expect(up.0, "\(up.1) bytes")
        Thread.sleep(forTimeInterval: 0.5)
        let stats = try lab.stopEndpoints()
        let decap = try #require(stats[1]["wan_to_lan"])
        let log = (try? String(contentsOfFile: "\(lab.dir)/hostile.log", encoding: .utf8)) ?? ""
        func dropped(_ reason: String) -> Int { decap.tunnel("dropped", ["reason": reason]) }
        print("hostile: \(log) -> replay \(dropped("replay")), too_old \(dropped("too_old")), bad_icv \(dropped("bad_icv")), "
            + "unknown_spi \(dropped("unknown_spi")), truncated \(dropped("truncated")), bad_padding \(dropped("bad_padding"))")
        #expect(log.contains("'flipped': 50"), "the sender ran: \(log)")
        let gatewayLog = (try? String(contentsOfFile: "\(lab.dir)/gw2.log", encoding: .utf8)) ?? ""
        #expect(!gatewayLog.contains("AddressSanitizer"), "\(gatewayLog.suffix(6000))")
        // A replay is a replay or, once the window has moved past it, too old: never forwarded.
        #expect(dropped("replay") + dropped("too_old") == 50, "every replay refused")
        #expect(dropped("bad_icv") == 50, "flipped bits")
        #expect(dropped("unknown_spi") == 50 && dropped("truncated") == 50 && dropped("bad_padding") == 50)
        withExtendedLifetime(lab) {}
        #expect(decap.tunnel("datagrams_received") - decap.packetsIn == dropped("replay") + dropped("too_old") + dropped("bad_icv")
            + dropped("unknown_spi") + dropped("truncated") + dropped("bad_padding"),
                "every datagram in is an inner packet or a refusal")
    }

    @Test("kill -9 and restart: the restarted gateway never sends a sequence number (an IV) it sent before; the far end sees no replay",
          .enabled(if: netnsReady && tcpdumpAvailable, "needs namespaces and tcpdump"))
    func restart() throws { try exclusiveNetwork { try restartBody() } }
    func restartBody() throws {
        let lab = try TunnelLab()
        try lab.startIPsec()
        let first = lab.capturingUnderlay("first") {
            _ = lab.transfer(megabytes: 8, from: lab.client, to: lab.server, address: "10.88.2.2", ipv6: false)
        }
        shell("pkill -KILL -f '[s]tats-json \(lab.dir)/gw1.json'")
        Thread.sleep(forTimeInterval: 0.5)
        try lab.startIPsec(gateways: [1])
        var second = ""
        var intact = false
        second = lab.capturingUnderlay("second") {
            intact = lab.transfer(megabytes: 8, from: lab.client, to: lab.server, address: "10.88.2.2", ipv6: false).0
        }
        #expect(intact, "the transfer after the restart")
        func sequences(_ path: String) -> [UInt64] {
            shell("tcpdump -r \(path) -nn 2>/dev/null | grep -o 'spi=0x00001001,seq=0x[0-9a-f]*' | sed 's/.*seq=0x//'").output
                .split(separator: "\n").compactMap { UInt64($0, radix: 16) }
        }
        let before = sequences(first), after = sequences(second)
        print("sequence numbers seen: first run \(before.count) (\(before.min() ?? 0)...\(before.max() ?? 0)), "
            + "after kill -9 \(after.count) (\(after.min() ?? 0)...\(after.max() ?? 0))")
        #expect(before.count > 100 && after.count > 100)
        #expect(Set(before).isDisjoint(with: after), "no sequence number (IV) twice under the key")
        #expect((after.min() ?? 0) > (before.max() ?? .max), "the restart goes on above the first run")
        let stats = try lab.stopEndpoints()
        #expect(stats[1]["wan_to_lan"]?.tunnel("dropped", ["reason": "replay"]) == 0, "the far end saw no replay")
        // The mark file is named by the key's fingerprint; neither it nor the key reaches the logs.
        let fingerprint = SequenceStore.fingerprint(key: SecretBytes(hexBytes(IPsecKeys.k1))).markFileField
        #expect(FileManager.default.fileExists(atPath: "\(lab.dir)/marks/\(fingerprint).mark"), "the key's mark file is named by its fingerprint")
        let logs = ((try? String(contentsOfFile: "\(lab.dir)/gw1.log", encoding: .utf8)) ?? "")
            + ((try? String(contentsOfFile: "\(lab.dir)/gw2.log", encoding: .utf8)) ?? "")
        #expect(!logs.isEmpty && !logs.contains(fingerprint) && !logs.contains(IPsecKeys.k1) && !logs.contains(IPsecKeys.k2),
                "no key or fingerprint in the gateways' logs")
    }
}

/// The attacker, from gw1's underlay address and port: `padding` sends 50 authentic datagrams
/// (made with gw1's key, numbers 1...50) whose padding lies; `rest CAPTURE` sends 50 each of
/// replays of captured datagrams, flipped bits, unknown SPIs and truncated ones.
func hostileScript(_ lab: TunnelLab) -> String {
    """
    import socket, struct, sys, time
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    key = bytes.fromhex('\(IPsecKeys.k1)')
    aead, salt = AESGCM(key[:16]), key[16:]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('192.168.88.1', 4500))
    def send(b): s.sendto(b, ('192.168.88.2', 4500))
    inner = bytes.fromhex('4500001c00004000400600000a5801020a580202') + bytes(8)
    if sys.argv[1] == 'padding':
        for seq in range(1, 51):
            iv = seq.to_bytes(8, 'big')
            header = bytes.fromhex('00001001') + seq.to_bytes(4, 'big') + iv
            # 28 bytes inside, pad length 3 and next header 4 after pad bytes 1, 2, 9: a lie.
            send(header + aead.encrypt(salt + iv, inner + bytes([1, 2, 9, 3, 4]), header[:8]))
        sys.exit(0)
    # Captured ESP datagrams of gw1's (single ones, not GSO trains) to replay.
    data = open(sys.argv[2], 'rb').read()
    replays, off = [], 24
    while off + 16 <= len(data):
        caplen, length = struct.unpack('<II', data[off + 8:off + 16])
        pkt = data[off + 16:off + 16 + caplen]
        off += 16 + caplen
        if caplen == length and len(pkt) > 42 and pkt[23] == 17:
            ihl = (pkt[14] & 15) * 4
            udp = pkt[14 + ihl:]
            if udp[8:12] == bytes.fromhex('00001001') and struct.unpack('!H', udp[4:6])[0] == len(udp):
                replays.append(udp[8:])
    sent = {'replay': 0, 'flipped': 0, 'unknown_spi': 0, 'truncated': 0}
    for i in range(50):
        good = replays[i % len(replays)]
        # A fresh number far above the window, sealed with the key, then one bit flipped: only the ICV can tell.
        seq = 4000000000 + i
        iv = seq.to_bytes(8, 'big')
        header = bytes.fromhex('00001001') + seq.to_bytes(4, 'big') + iv
        flipped = bytearray(header + aead.encrypt(salt + iv, inner + bytes([0, 4]), header[:8]))
        flipped[20 + i % 16] ^= 1
        for name, k in [('replay', good), ('flipped', bytes(flipped)), ('unknown_spi', b'\\x00\\x00\\x77\\x77' + good[4:]),
                        ('truncated', good[:30])]:
            send(k); sent[name] += 1
        time.sleep(0.02)
    print(len(replays), sent)
    """
}

@Suite("contrib/offload-ipsec.service", .serialized)
struct IPsecUnitTests {
    @Test("its command line, with the example settings and an SA file, runs, serves ESP counters and cleans up",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func systemdUnit() throws { try exclusiveNetwork { try systemdUnitBody() } }
    func systemdUnitBody() throws {
        guard let offload = builtExecutable(named: "offload") else { throw TunnelLabError("offload executable not found") }
        let unit = try String(contentsOfFile: "\(repositoryRootPath)/contrib/offload-ipsec.service", encoding: .utf8)
        let env = try String(contentsOfFile: "\(repositoryRootPath)/contrib/offload-ipsec.env", encoding: .utf8)
        guard case (var command, let settings)? = systemdCommand(unit: unit, environment: env) else { throw TunnelLabError("no ExecStart") }
        #expect(!command.contains("$"), "unexpanded: \(command)")
        #expect(unit.contains("StateDirectory=offload-ipsec") && command.contains("--state /var/lib/offload-ipsec/marks "),
                "the high-water marks live in the unit's state directory")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("unit-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try IPsecKeys.write(in: dir)
        command = command.replacingOccurrences(of: "/usr/local/bin/offload", with: offload)
            .replacingOccurrences(of: settings["IPSEC_SA_FILE"] ?? "-", with: "\(dir)/gw1.conf")
            .replacingOccurrences(of: "/var/lib/offload-ipsec/marks", with: "\(dir)/marks")
        let ns = "oisu\(getpid() % 100_000)"
        let local = settings["IPSEC_LOCAL"] ?? ""
        shell("ip netns del \(ns) 2>/dev/null; ip netns add \(ns) && ip -n \(ns) link set lo up && "
            + "ip -n \(ns) link add u0 type veth peer name u1 && ip -n \(ns) addr add \(local)/24 dev u0 && "
            + "ip -n \(ns) link set u0 up && ip -n \(ns) link set u1 up")
        defer { shell("ip netns del \(ns)") }
        let endpoint = (settings["IPSEC_METRICS"] ?? "").split(separator: ":")
        let scrape = "bash -c 'exec 3<>/dev/tcp/\(endpoint.first ?? "")/\(endpoint.last ?? ""); "
            + "printf \"GET /metrics HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'"
        let (status, output) = shell(
            "ip netns exec \(ns) \(command) --duration 3 > \(dir)/log 2>&1 & sleep 1.5; "
                + "ip netns exec \(ns) \(scrape); ip -n \(ns) route; wait $!; echo exit=$?; cat \(dir)/log", timeout: 30)
        #expect(status == 0 && output.contains("exit=0"), "\(output)")
        #expect(output.contains("offload_tunnel_dropped_total{direction=\"wan_to_lan\",reason=\"bad_icv\"} 0"),
                "ESP's refusal counters are served")
        #expect(!output.contains("offload_tunnel_dropped_total{direction=\"lan_to_wan\""), "no refusal counters where nothing is received")
        #expect(output.contains("10.2.0.0/16 dev ipsec0"), "--setup routed the example's prefix into the tunnel")
        #expect(!output.contains(IPsecKeys.k1) && !output.contains(IPsecKeys.k2), "no key in the log or the metrics")
        let fingerprint = SequenceStore.fingerprint(key: SecretBytes(hexBytes(IPsecKeys.k1))).markFileField
        #expect(!output.contains(fingerprint), "nor the key's fingerprint, which only the mark files' names hold")
        #expect(FileManager.default.fileExists(atPath: "\(dir)/marks/\(fingerprint).mark"), "the marks went to --state, by key")
    }
}

@Suite("offload ipsec: one key, one sender on a machine", .serialized)
struct IPsecOneSenderTests {
    @Test("a second gateway started with the same SA file (another device, the same namespace) refuses to start and names the first; the first goes on",
          .enabled(if: netnsReady, "\(netnsSkipReason)"))
    func secondGatewayRefused() throws { try exclusiveNetwork { try secondGatewayRefusedBody() } }
    func secondGatewayRefusedBody() throws {
        guard let offload = builtExecutable(named: "offload") else { throw TunnelLabError("offload executable not found") }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("one-sender-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try IPsecKeys.write(in: dir)
        let ns = "oios\(getpid() % 100_000)"
        shell("ip netns del \(ns) 2>/dev/null; ip netns add \(ns) && ip -n \(ns) link set lo up && "
            + "ip -n \(ns) link add u0 type veth peer name u1 && ip -n \(ns) addr add 192.168.77.1/24 dev u0 && "
            + "ip -n \(ns) link set u0 up && ip -n \(ns) link set u1 up")
        defer { shell("ip netns del \(ns)") }
        let gateway = { (device: String) in
            "ip netns exec \(ns) \(offload) ipsec --sa \(dir)/gw1.conf --state \(dir)/marks --device \(device) "
                + "--local 192.168.77.1 --remote 192.168.77.2"
        }
        // The first runs 4 s; the second starts once the first's device is up (at most 5 s of waiting).
        let (status, output) = shell(
            "\(gateway("ipsec0")) --duration 4 > \(dir)/first.log 2>&1 & first=$!; "
                + "for i in $(seq 50); do ip -n \(ns) link show ipsec0 >/dev/null 2>&1 && break; sleep 0.1; done; sleep 0.3; "
                + "\(gateway("ipsec8")) --duration 1 > \(dir)/second.log 2>&1; echo second=$?; echo first-pid=$first; "
                + "wait $first; echo first=$?; cat \(dir)/second.log", timeout: 30)
        let firstPID = output.split(separator: "\n").first { $0.hasPrefix("first-pid=") }?.dropFirst(10) ?? "?"
        #expect(status == 0 && output.contains("first=0"), "the first ran its course: \(output)")
        #expect(!output.contains("second=0"), "the second refused to start: \(output)")
        #expect(output.contains("already sending") && output.contains("pid \(firstPID):"), "and named the first: \(output)")
        #expect(!output.contains(IPsecKeys.k1) && !output.contains(SequenceStore.fingerprint(key: SecretBytes(hexBytes(IPsecKeys.k1))).markFileField),
                "neither the key nor its fingerprint in the message")
    }
}

let repositoryRootPath = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

let scapyOrCryptography = shell("python3 -c 'import cryptography.hazmat.primitives.ciphers.aead'").status == 0

