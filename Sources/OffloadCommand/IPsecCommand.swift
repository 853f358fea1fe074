import ArgumentParser
import Foundation
import Logging
import OffloadCrypto
import OffloadIKE
import OffloadIKEDaemon
import OffloadIPsec
import OffloadTunnel
import OffloadWire
import Synchronization

/// Set by SIGHUP (async-signal-safe: one atomic store); the IKE daemon's thread takes it.
let ipsecReloadRequested = Atomic<Bool>(false)

/// `offload ipsec`: an ESP-in-UDP gateway with manual keys, live or on captures.
struct IPsec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ipsec",
        abstract: "An IPsec ESP gateway (ESP in UDP, RFC 4303/3948, port 4500) with GRO and GSO on both sides: live between a TUN device and UDP (root), or on captures.",
        discussion: """
            Encryption: packets routed into --device are merged (GRO; the kernel's own super-packets kept whole), \
            checked against the inner MTU (the underlay's MTU less ESP's overhead: "fragmentation needed" / "packet \
            too big" back to the sender when a segment cannot fit), matched to a tunnel by its traffic selectors, \
            and sent as one ESP datagram per segment, each encrypted straight into the buffer it is sent from \
            (AES-GCM-128/256 or ChaCha20-Poly1305, OpenSSL's libcrypto; IV = the sequence number), a whole train per \
            sendmsg with UDP_SEGMENT. Decryption: a UDP_GRO socket hands over trains of datagrams; each is checked \
            against the anti-replay window, decrypted in place, and only when its ICV is right moves the window; \
            its padding and the traffic selectors are checked, and the inner packets are merged again and written \
            to --device as super-packets. NAT keepalives and IKE messages (the non-ESP marker) are counted and left.

            The SAs come from --sa, a file in swanctl.conf's syntax (see docs/ipsec.md), mode 0600: \
              tunnels { NAME { esp_proposals = aes128gcm16  esn = yes  local_ts = ...  remote_ts = ... \
                               out { spi = 0x1001  key = 0x<key and 4-byte salt> }  in { spi = ...  key = ... } } }
            A selector is a prefix, optionally with a protocol and ports: 10.2.0.10/32[tcp/5201], [udp/1024-2048], \
            [tcp]; the most specific selectors that match a packet choose its tunnel.

            Sequence numbers never repeat under a key on this machine, restarts included: before a number is \
            used, a high-water mark at or above it is fsynced to the key's mark in --state, a directory of \
            this machine where marks are found by the key's fingerprint, whatever the SA file or SPI. A key \
            sends from one process at a time: a second one with it refuses to start and names the first. One \
            key in two SAs of a file is refused. The same SA file on two machines cannot be caught: use IKEv2 \
            there. A sender whose numbers are used up (2^32 without ESN) stops and says so; new keys go on.

            Many peers: one process and one socket serve every peer. An SA file's tunnel names its peer with \
            remote_addrs = ADDRESS (remote_port, default 4500; the others go to --remote); with --config each \
            connection has its remote_addrs (an address, a prefix, a list, or %any, told apart by identity). \
            Inbound datagrams find their SA by SPI and must come from its peer (else wrong_peer), but a peer \
            behind a NAT is followed to a new address or port by its newest authentic datagram or IKE message. \
            SIGHUP reloads --config: unchanged connections keep their SAs (docs/ipsec.md, "Many peers").

            --write-keys FILE writes Wireshark's esp_sa lines (mode 0600) so that tshark decrypts a capture.

            Secrets: keys never reach a log, an error or the status; core dumps are off; SA and config files \
            must be mode 0600 and are read through one checked descriptor (a symbolic link is refused). \
            What the gateway promises and what you must do: docs/ipsec.md, "What it promises".

            IKEv2: with --config instead of --sa, the SAs are negotiated with the peer (RFC 7296; strongSwan \
            and this gateway in either role): a file of connections and secrets in swanctl.conf's syntax and \
            names (docs/ipsec.md), mode 0600; IKE on port 500 and on 4500 beside ESP (the non-ESP marker); \
            pre-shared keys; AES-GCM and ChaCha20-Poly1305, HMAC-SHA2, Curve25519 and MODP-2048; CHILD_SAs \
            and the IKE SA rekeyed on time, bytes or packets with nothing lost (the new inbound SA is accepted \
            before the old one goes); dead peers found (dpd_delay) and connections with start_action = start \
            started again. --status prints the SAs of the running gateway (and exits 1, saying so, when the gateway that \
            wrote them is not running or has stopped writing); so does SIGUSR1 (to its log). \
            --write-keys then also writes FILE.ikev2 (Wireshark's ikev2_decryption_table).

            Offline: with IN OUT, the packets of IN are encrypted (--local -> --remote, outer IPv4 or IPv6 and \
            UDP 4500), or with --decrypt the inner packets of IN's ESP datagrams are written (refusals counted).

            Examples:
              offload ipsec --sa /etc/offload/ipsec.conf --device ipsec0 --local 192.0.2.1 --remote 192.0.2.2 --setup --route 10.2.0.0/16
              offload ipsec --sa ipsec.conf --local 192.0.2.1 --remote 192.0.2.2 inner.pcapng esp.pcap
              offload ipsec --sa peer.conf --decrypt esp.pcap inner.pcap
              offload ipsec --config /etc/offload/swanctl.conf --device ipsec0 --setup --route 10.2.0.0/16
              offload ipsec --config /etc/offload/swanctl.conf --status
            """)

    @Option(help: "The SA file (manual keys, swanctl.conf syntax, mode 0600).")
    var sa: String?
    @Option(help: "IKEv2: connections and secrets (swanctl.conf syntax, mode 0600); live only; SIGHUP reloads it. --local defaults to its local_addrs (--remote is not needed: peers come from remote_addrs).")
    var config: String?
    @Option(help: "IKEv2: where the running gateway writes its SAs each second (default: /run/offload-ipsec/NAME.status when that directory is there, as under the systemd unit; else the config's path with .status).")
    var statusFile: String?
    @Flag(help: "IKEv2: print the SAs of the gateway running with --config (ages, rekeys, bytes and packets per SA) and exit.")
    var status = false
    @Option(help: ArgumentHelp(
        "The directory of this machine's sequence marks, one per key, found by the key's fingerprint (not by the SA file).",
        discussion: "Default: /var/lib/offload-ipsec/marks as root, else $XDG_STATE_HOME/offload-ipsec/marks or "
            + "~/.local/state/offload-ipsec/marks. Marks of the old form (SA file.seq, /var/lib/offload-ipsec/sequence, "
            + "or a file given here) are imported. Keep it, and use one: marks in another directory are not seen.",
        valueName: "directory"))
    var state: String?
    @Option(help: "Write the SAs as Wireshark esp_sa lines to this file (mode 0600) so tshark can decrypt.")
    var writeKeys: String?
    @Flag(help: "Offline: take the inner packets out of IN's ESP datagrams instead of encrypting.")
    var decrypt = false
    @OptionGroup var endpoint: TunnelEndpointOptions

    func validate() throws {
        guard (sa == nil) != (config == nil) else { throw ValidationError("give --sa (manual keys) or --config (IKEv2), one of them") }
        if config != nil {
            if status { return }
            guard endpoint.live else { throw ValidationError("--config: IKEv2 runs live, with --device (captures take --sa)") }
            guard !decrypt else { throw ValidationError("--decrypt: with --sa (captures)") }
            var e = endpoint
            // The addresses come from the configuration when not given.
            if e.local == nil { e.local = "0.0.0.0" }
            if e.remote == nil { e.remote = e.local!.contains(":") ? "::" : "0.0.0.0" }
            try e.check(needsAddressesOffline: false)
            return
        }
        guard !status else { throw ValidationError("--status: with --config") }
        try endpoint.check(needsAddressesOffline: !decrypt)
    }

    func run() async throws {
        // Keys are read from here on: a crash must not write them to disk in a core dump.
        do { try KeyHoldingProcess.disableCoreDumps() } catch { throw InputError(message: "\(error)") }
        if let config {
            if status { return try printStatus(config) }
            return try await runIKE(config)
        }
        guard let sa else { return }
        var tunnels: [ESPTunnelConfiguration]
        do { tunnels = try SAFile.load(path: sa) } catch { throw InputError(message: "\(error)") }
        // Tunnels of several peers share one socket: a tunnel that names no peer has --remote.
        if tunnels.contains(where: { $0.peer != nil }), let remote = endpoint.remote.flatMap({ IPAddress($0) }) {
            for i in tunnels.indices where tunnels[i].peer == nil { tunnels[i].peer = UDPEndpoint(remote, ESPFormat.udpPort) }
        }
        if let local = endpoint.local.flatMap({ IPAddress($0) }), let other = tunnels.first(where: { $0.peer.map { $0.address.isIPv4 != local.isIPv4 } ?? false }) {
            throw InputError(message: "tunnel \(other.name): remote_addrs \(other.peer!.address) is not of --local's family (one socket serves every peer)")
        }
        let policy: ESPSecurityPolicy
        do {
            // Decrypting a capture sends nothing: it needs no sequence numbers, and leaves the marks alone.
            let store = decrypt && !endpoint.live ? nil : try openSequenceStore(sa: sa)
            policy = try ESPSecurityPolicy(tunnels: tunnels, store: store)
        } catch { throw InputError(message: "\(error)") }
        if let writeKeys {
            let local = endpoint.local.flatMap { IPAddress($0) }, remote = endpoint.remote.flatMap { IPAddress($0) }
            do { try ESPKeyLog.write(ESPKeyLog.lines(tunnels, local: local, remote: remote), to: writeKeys) } catch {
                throw InputError(message: "--write-keys: \(error)")
            }
        }
        let codec = ESPCodec(policy: policy)
        if endpoint.live {
            try await endpoint.serve(codec: codec, label: "offload.ipsec")
        } else {
            try endpoint.runOffline(codec: codec, decapsulate: decrypt, name: "ESP")
        }
    }
}

extension IPsec {
    /// The sequence store: --state, or this machine's place for it; the marks of the old form (one
    /// file per SA file: its path with .seq, the old unit's /var/lib/offload-ipsec/sequence, or a
    /// file given as --state) are imported, so that a key goes on above them.
    func openSequenceStore(sa: String) throws -> SequenceStore {
        var old = [sa + ".seq"] + (geteuid() == 0 ? ["/var/lib/offload-ipsec/sequence"] : [])
        var directory = state ?? SequenceStore.defaultDirectory()
        var info = stat()
        if let state, lstat(state, &info) == 0, info.st_mode & S_IFMT == S_IFREG {
            // A unit or script from before still names the old mark file: its marks are imported.
            old.append(state)
            directory = SequenceStore.defaultDirectory()
            FileHandle.standardError.write(Data(("offload ipsec: --state \(state) is a mark file of the old form: its marks are "
                + "imported into \(directory), where marks are now kept by key (--state names that directory)\n").utf8))
        }
        let store = try SequenceStore(directory: directory, importing: old)
        // Where a key's marks are is where its numbers go on from: said at every start, and a user's
        // own store (not root's) is said to be apart from the machine's gateway store.
        var line = "offload ipsec: sequence marks in \(directory)"
        if geteuid() != 0 && state == nil {
            line += " (this user's; a gateway running as root keeps its own in /var/lib/offload-ipsec/marks: never encrypt with "
                + "a key a gateway sends with, or give both the same --state)"
        }
        FileHandle.standardError.write(Data((line + "\n").utf8))
        return store
    }

    /// Where the status of the gateway running with `config` is: --status-file, or
    /// `/run/offload-ipsec/NAME.status` when that directory is there (systemd's RuntimeDirectory
    /// in contrib/offload-ipsec.service: writable under ProtectSystem=strict), or else the config's
    /// path with `.status`. `writing`: for the gateway (the directory must be writable), or for
    /// the reader (the file must be there).
    func statusPath(_ config: String, writing: Bool) -> String {
        if let statusFile { return statusFile }
        let run = "\(Self.statusDirectory)/\((config as NSString).lastPathComponent).status"
        if writing ? access(Self.statusDirectory, W_OK) == 0 : FileManager.default.fileExists(atPath: run) { return run }
        return config + ".status"
    }

    /// The runtime directory the unit gives the gateway.
    static let statusDirectory = "/run/offload-ipsec"

    func printStatus(_ config: String) throws {
        let path = statusPath(config, writing: false)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw InputError(message: "\(path): no status (is offload ipsec --config \(config) running? It writes its status "
                + "there each second; \(statusFile == nil ? "or in \(Self.statusDirectory) when that directory is there" : "with the same --status-file"))")
        }
        let file: IKEStatusFile
        do { file = try JSONDecoder().decode(IKEStatusFile.self, from: data) } catch { throw InputError(message: "\(path): not a status file") }
        if endpoint.json {
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(file.text, terminator: "")
        }
        if let stale = Self.staleness(of: file, now: Date().timeIntervalSince1970) {
            throw InputError(message: "\(path): \(stale)")
        }
    }

    /// Why a status file does not describe a running gateway (its writer is gone, or has not
    /// written for a while: it writes each second), or nil when it does.
    static func staleness(of file: IKEStatusFile, now: Double) -> String? {
        guard let pid = file.pid, let written = file.written else { return nil }
        let when = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: written))
        let age = Int(max(0, now - written))
        // Gone, or killed and not yet reaped by its parent (a zombie: `PID (COMM) Z ...`).
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        let zombie = stat.lastIndex(of: ")").map { stat[stat.index(after: $0)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z") } ?? false
        if (kill(pid, 0) != 0 && errno == ESRCH) || zombie {
            return "the gateway (pid \(pid)) is not running; this is its last status, from \(when) (\(age) s ago)"
        }
        if age > 10 {
            return "the gateway (pid \(pid)) has not written its status since \(when) (\(age) s ago; it writes each second)"
        }
        return nil
    }

    /// The gateway with IKEv2: the dataplane starts with no SA; the daemon fills it.
    func runIKE(_ config: String) async throws {
        let connections: [IKEConnection]
        do { connections = try IKEConfig.load(path: config) } catch { throw InputError(message: "\(error)") }
        var options = endpoint
        if options.local == nil { options.local = connections[0].localAddress.description }
        // Many peers share the sockets: --remote only names the family when no connection names a peer.
        let unspecified = connections[0].localAddress.isIPv4 ? "0.0.0.0" : "::"
        if options.remote == nil { options.remote = connections.lazy.compactMap(\.remoteAddress).first?.description ?? unspecified }
        guard let remoteText = options.remote, let remote = IPAddress(remoteText) else {
            throw InputError(message: "--remote \(options.remote ?? ""): not an address")
        }
        guard IPAddress(options.local!) == connections[0].localAddress,
              remote.description == unspecified || connections.contains(where: { $0.remoteAddrs.matches(remote) }) else {
            throw InputError(message: "--local/--remote differ from the configuration's local_addrs/remote_addrs")
        }
        // IKE's keys are new with each negotiation: sequence numbers start at 1 and need no marks on disk.
        // Many peers on one socket: each SA sends to its own peer, and each sender is checked.
        let policy = try ESPSecurityPolicy(tunnels: [], store: nil, servesManyPeers: true)
        if let writeKeys { try? ESPKeyLog.write([], to: writeKeys) }
        let box = Mutex<IKEDaemon?>(nil)
        let finished = DispatchSemaphore(value: 0)
        // SIGUSR1 prints the dataplane's counters (as every live command does) and the SAs.
        try await options.serve(codec: ESPCodec(policy: policy), label: "offload.ipsec", signalHandler: { kind, bytes, source in
            if kind == .ike { box.withLock { $0 }?.deliver(bytes, from: source) }
        }, onSIGUSR1: { box.withLock { $0 }?.requestStatus() }, extraMetrics: { box.withLock { $0 }?.prometheusText() ?? "" }, started: { endpoint, logger in
            let daemon: IKEDaemon
            do { daemon = try IKEDaemon(connections: connections, policy: policy, logger: logger) } catch {
                throw InputError(message: "IKE port 500: \(error)")
            }
            daemon.statusPath = statusPath(config, writing: true)
            // SIGHUP reloads the configuration, as `swanctl --load-all` does.
            daemon.loadConfiguration = { try IKEConfig.load(path: config) }
            daemon.reloadRequested = { ipsecReloadRequested.exchange(false, ordering: .relaxed) }
            signal(SIGHUP) { _ in ipsecReloadRequested.store(true, ordering: .relaxed) }
            daemon.keyLogPath = writeKeys
            let socket = endpoint.socket
            daemon.attach { bytes, peer in try? socket.send(bytes, trafficClass: 0, to: peer) }
            box.withLock { $0 = daemon }
            let thread = Thread {
                daemon.run()
                finished.signal()
            }
            thread.name = "offload-ike"
            thread.start()
        })
        if let daemon = box.withLock({ $0 }) {
            daemon.stop()
            finished.wait()
        }
    }
}
