import Foundation
import Logging
import OffloadCrypto
import OffloadIKE
import OffloadIPsec
import OffloadTUN
import OffloadTunnel
import OffloadWire
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The host of an ``IKEEngine`` on a live gateway: a socket on port 500, the IKE messages the
/// dataplane hands over from port 4500 (behind the non-ESP marker), a clock, and the ESP
/// dataplane's SA set, replaced whenever the engine's CHILD_SAs change. Runs on a thread of its
/// own; everything the engine does happens there.
public final class IKEDaemon: @unchecked Sendable {
    let engine: IKEEngine
    /// The dataplane's SAs.
    public let policy: ESPSecurityPolicy
    let socket500: UDPTunnelSocket?
    let logger: Logger
    /// The handover of messages on port 4500 from the receiving thread: filtered, rate-limited, queued.
    public let handoff: IKEHandoff
    let send4500 = Mutex<(@Sendable ([UInt8], UDPEndpoint) -> Void)?>(nil)
    let stopFlag = Atomic<Bool>(false)
    let statusLines = Mutex<[IKESAStatus]>([])
    let countersSnapshot = Mutex<IKEEngine.Counters>(.zero)
    let statusRequested = Atomic<Bool>(false)
    let metrics = Mutex(IKEMetrics())
    let started = DispatchTime.now().uptimeNanoseconds
    /// Where the status is written each second (JSON, for `offload ipsec --status`).
    public var statusPath: String?
    /// Whether the last status write failed (logged once, and again when it works).
    var statusWriteFailed = false
    /// Reads the configuration again (SIGHUP): the connections, or why not. Nil: no reloading.
    public var loadConfiguration: (@Sendable () throws -> [IKEConnection])?
    /// Asked once per loop whether a reload was requested (and the request taken).
    public var reloadRequested: (@Sendable () -> Bool)?
    /// Where Wireshark's `esp_sa` lines go (mode 0600; `PATH.ikev2` gets the `ikev2_decryption_table` lines).
    public var keyLogPath: String?
    var installedGeneration = -1
    /// Every key-log line written so far: SAs that are gone stay, so that a capture of their time decrypts.
    var espKeyLines: [String] = [], ikeKeyLines: [String] = []
    let remote: IPAddress
    /// Wakes the thread when a message arrives on port 4500: a pipe's read and write ends.
    let wake: CInt, wakeWriter: CInt

    /// A daemon for `connections` (one peer), with the dataplane's `policy`.
    /// - Throws: when port 500 cannot be bound (another IKE daemon runs?).
    public init(connections: [IKEConnection], policy: ESPSecurityPolicy, logger: Logger) throws(TUNError) {
        engine = IKEEngine(connections: connections)
        self.policy = policy
        self.logger = logger
        // The first connection's peer (the unspecified address when none names one). Not connected:
        // IKE_SA_INIT comes from any peer a connection allows.
        remote = connections.lazy.compactMap(\.remoteAddress).first ?? IPAddress(connections[0].localAddress.isIPv4 ? "0.0.0.0" : "::")!
        socket500 = try UDPTunnelSocket(local: connections[0].localAddress, remote: remote, port: 500,
                                        coalesce: false, connected: false)
        var ends: [CInt] = [-1, -1]
        if unsafe pipe(&ends) == 0 {
            for fd in ends {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            }
        }
        (wake, wakeWriter) = (ends[0], ends[1])
        let writer = ends[1]
        handoff = IKEHandoff(wake: {
            var one: UInt8 = 1
            _ = unsafe write(writer, &one, 1)
        })
    }

    deinit {
        if wake >= 0 { close(wake) }
        if wakeWriter >= 0 { close(wakeWriter) }
    }

    /// Waits up to `milliseconds` for port 500 or the wake-up: whether port 500 is readable.
    func waitForMessages(milliseconds: CInt) -> Bool {
        var fds = [pollfd(fd: socket500?.descriptor ?? -1, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
        guard unsafe poll(&fds, 2, milliseconds) > 0 else { return false }
        if fds[1].revents != 0 {
            var drain = [UInt8](repeating: 0, count: 64)
            while unsafe read(wake, &drain, drain.count) > 0 {}
        }
        return fds[0].revents & Int16(POLLIN) != 0
    }

    /// How messages on port 4500 leave: through the dataplane's socket, to the peer given (the
    /// marker is added here; a NAT keepalive is sent as its one byte).
    public func attach(send: @escaping @Sendable ([UInt8], UDPEndpoint) -> Void) { send4500.withLock { $0 = send } }

    /// An IKE message received on port 4500 (the datagram, non-ESP marker included), called on
    /// the receiving thread: see ``IKEHandoff/deliver(_:now:)``. Only a message of a known IKE SA
    /// that may install a CHILD_SA makes the thread wait (at most 50 ms) until it is handled and
    /// installed; anything else is queued (bounded, IKE_SA_INIT requests rate-limited) or dropped
    /// and counted, without waiting.
    @discardableResult
    public func deliver(_ datagram: [UInt8], from source: UDPEndpoint? = nil) -> IKEHandoff.Result {
        handoff.deliver(datagram, from: source, now: now)
    }

    /// Asks the thread to delete the SAs and stop.
    public func stop() {
        stopFlag.store(true, ordering: .relaxed)
        handoff.stop()
    }

    /// Asks the thread to log the status (SIGUSR1).
    public func requestStatus() { statusRequested.store(true, ordering: .relaxed) }

    /// The status as of the last second.
    public var status: [IKESAStatus] { statusLines.withLock { $0 } }

    /// Prometheus text of the IKE SAs and CHILD_SAs per connection (as of the last second).
    public func prometheusText() -> String { metrics.withLock { $0.prometheusText() } }
    /// The engine's counters as of the last second.
    public var counters: IKEEngine.Counters { countersSnapshot.withLock { $0 } }

    var now: Double { Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9 }

    func traffic(_ spi: UInt32, _ inbound: Bool) -> IKETrafficSample {
        guard let c = policy.counters(spi: spi, inbound: inbound) else { return IKETrafficSample() }
        return IKETrafficSample(packets: c.packets, bytes: c.bytes)
    }

    /// Installs what the engine changed, then sends its messages: an answer that creates an SA
    /// leaves only once the SA can receive.
    func send(_ out: [(bytes: [UInt8], path: IKEPath)]) {
        afterEngine()
        for m in out {
            let peer = UDPEndpoint(m.path.remote, m.path.remotePort)
            if m.path.localPort == 500 {
                do { try socket500?.send(m.bytes, trafficClass: 0, to: peer) } catch { logger.warning("IKE: sending on port 500 to \(peer): \(error)") }
            } else if let send = send4500.withLock({ $0 }) {
                send([0, 0, 0, 0] + m.bytes, peer)
            }
        }
    }

    /// Runs until ``stop()``: starts the connections, answers, retransmits, rekeys.
    public func run() {
        send(engine.start(now: now))
        afterEngine()
        var lastTick = 0.0, lastStatus = -1.0
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while !stopFlag.load(ordering: .relaxed) {
            if waitForMessages(milliseconds: 100), let s = socket500 {
                while true {
                    let got = unsafe buffer.withUnsafeMutableBytes { try? unsafe s.receive(into: $0) }
                    guard let got else { break }
                    // Any peer: the engine finds the SA by SPI, or a connection for the sender's address.
                    guard got.length > 0, let source = got.source else { continue }
                    send(engine.receive(Array(buffer[0..<got.length]), path: IKEPath(localPort: 500, remote: source.address, remotePort: source.port),
                                        now: now))
                }
            }
            let (messages, ticket) = handoff.takeWithSenders()
            for m in messages {
                guard let source = m.source else { continue }
                send(engine.receive(m.bytes, path: IKEPath(localPort: 4500, remote: source.address, remotePort: source.port), now: now))
            }
            // `send` installed what they changed (and published the SPIs) before anything left.
            if !messages.isEmpty { handoff.markHandled(ticket) }
            let t = now
            // A peer behind a NAT seen at a new place by the dataplane (its newest authentic ESP
            // datagram): IKE follows it too, and the SAs are installed with the new endpoint.
            for move in policy.takePeerMoves() where engine.peerMoved(inboundSPI: move.inboundSPI, to: move.endpoint, now: t) {
                afterEngine()  // installs the SAs with the new endpoint
            }
            if reloadRequested?() == true { reload(now: t) }
            if t - lastTick >= 0.1 {
                lastTick = t
                send(engine.tick(now: t, traffic: traffic))
                // This end behind a NAT: a keepalive (one 0xFF byte, RFC 3948 §2.3) keeps the mapping.
                if let send4500 = send4500.withLock({ $0 }) {
                    for path in engine.keepalives(now: t) { send4500([0xFF], path.endpoint) }
                }
            }
            afterEngine()
            if t - lastStatus >= 1 || statusRequested.exchange(false, ordering: .relaxed) {
                if lastStatus >= 0 && t - lastStatus < 1 { logStatus() }
                lastStatus = t
                publishStatus()
            }
        }
        send(engine.shutdown())
        afterEngine()
    }

    /// Loads the configuration again (`swanctl --load-all`): unchanged connections keep their SAs,
    /// the others are deleted, added or started again; a configuration that cannot be read, or that
    /// moves this end's address (the sockets are bound to it), is refused and the running one stays.
    func reload(now t: Double) {
        guard let loadConfiguration else { return }
        let connections: [IKEConnection]
        do { connections = try loadConfiguration() } catch {
            logger.error("IKE: reload refused, the running connections stay: \(error)")
            return
        }
        guard connections.allSatisfy({ $0.localAddress == engine.localAddress }) else {
            logger.error("IKE: reload refused, the running connections stay: local_addrs must stay \(engine.localAddress) (the sockets are bound to it; restart to change it)")
            return
        }
        let (messages, summary) = engine.reload(connections, now: t)
        logger.notice("IKE: configuration reloaded: \(summary)")
        send(messages)
    }

    /// Logs the events, installs a changed SA set, rewrites the key log.
    func afterEngine() {
        // Before any message leaves: the answer to it comes back with these SPIs.
        handoff.setAwaitedMessageIDs(engine.awaitedMessageIDs)  // and with them the known SPIs
        for e in engine.takeEvents() {
            switch e.level {
            case .info: logger.info("IKE \(e.description)")
            case .warning: logger.warning("IKE \(e.description)")
            case .error: logger.error("IKE \(e.description)")
            }
        }
        guard engine.childGeneration != installedGeneration else { return }
        installedGeneration = engine.childGeneration
        // Sending SAs first, the newest first: the encoder takes the first whose selectors match.
        let children = engine.childSAs.sorted { ($0.sending ? 1 : 0, $0.installed) > ($1.sending ? 1 : 0, $1.installed) }
        do { try policy.replace(children.map(\.tunnel)) } catch { logger.error("IKE: installing SAs: \(error)") }
        if let keyLogPath {
            let local = engine.localAddress
            for child in children {
                let t = child.tunnel
                for line in ESPKeyLog.lines([t], local: local, remote: t.peer?.address ?? remote) where !espKeyLines.contains(line) {
                    espKeyLines.append(line)
                }
            }
            for line in engine.wiresharkIKELines() where !ikeKeyLines.contains(line) { ikeKeyLines.append(line) }
            do {
                try ESPKeyLog.write(espKeyLines, to: keyLogPath)
                try ESPKeyLog.write(ikeKeyLines, to: keyLogPath + ".ikev2")
            } catch { logger.warning("IKE: --write-keys: \(error)") }
        }
    }

    /// The engine's status with the dataplane's refusals per inbound SA.
    func currentStatus() -> [IKESAStatus] {
        var lines = engine.status(now: now, traffic: traffic)
        for i in lines.indices {
            for j in lines[i].children.indices {
                guard let spi = UInt32(lines[i].children[j].spiIn, radix: 16), let c = policy.counters(spi: spi, inbound: true) else { continue }
                let drops = c.drops
                if !drops.isEmpty { lines[i].children[j].dropsIn = Dictionary(uniqueKeysWithValues: drops.map { ($0.key.rawValue, $0.value) }) }
            }
        }
        return lines
    }

    func publishStatus() {
        let lines = currentStatus()
        let names = engine.connections.map(\.name)
        metrics.withLock {
            $0.update(lines)
            $0.connections = names
        }
        statusLines.withLock { $0 = lines }
        countersSnapshot.withLock { $0 = engine.counters }
        if let statusPath {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            // The writer and the time: the reader tells a gateway that is gone from one that runs.
            let file = IKEStatusFile(sas: lines, counters: engine.counters, pid: getpid(), written: Date().timeIntervalSince1970,
                                     handoff: handoff.counters)
            if let data = try? encoder.encode(file) {
                do {
                    // Mode 0600 from the first byte (a new file renamed over the old): the SAs' state is root's.
                    try ProtectedFile.replace(statusPath, with: Array(data))
                    if statusWriteFailed { logger.notice("IKE: the status is written to \(statusPath) again") }
                    statusWriteFailed = false
                } catch {
                    if !statusWriteFailed {
                        logger.warning("IKE: cannot write the status to \(statusPath) (offload ipsec --status will not see it): \(error)")
                    }
                    statusWriteFailed = true
                }
            }
        }
    }

    func logStatus() {
        for line in IKEStatusFile(sas: currentStatus(), counters: engine.counters).text.split(separator: "\n") {
            logger.notice("\(line)")
        }
        let h = handoff.counters
        let line = "IKE on port 4500: \(h.queued) queued (\(h.waits) waited for, \(h.waitsTimedOut) past 50 ms), dropped \(h.malformed) malformed, "
            + "\(h.unknownSPI) unknown SPI, \(h.rateLimited) IKE_SA_INIT over the rate, \(h.queueFull) queue full"
        logger.notice("\(line)")
    }
}

/// Prometheus series of the IKE daemon, bounded by the configuration, not by the peers: per
/// connection (a `%any` connection's road warriors add up under its name), the IKE SAs by state,
/// the CHILD_SAs, and bytes and packets per child name and direction, kept as totals that only
/// grow (an SA that goes leaves what it carried in them). Per-SA detail is in `--status`.
public struct IKEMetrics: Sendable {
    struct Key: Hashable, Comparable {
        var connection: String, child: String, direction: String
        static func < (a: Key, b: Key) -> Bool { (a.connection, a.child, a.direction) < (b.connection, b.child, b.direction) }
    }
    /// The last count seen per CHILD_SA (by SPI and direction), to add only what is new.
    var lastSeen: [String: (packets: UInt64, bytes: UInt64)] = [:]
    var packets: [Key: UInt64] = [:], bytes: [Key: UInt64] = [:], refused: [String: [String: UInt64]] = [:]
    var lastRefused: [String: [String: UInt64]] = [:]
    var sas: [String: [String: Int]] = [:], children: [String: Int] = [:]
    /// The connections of the configuration (each gets its series, even while it has no SA).
    var connections: [String] = []
    /// Nothing seen yet.
    public init() {}

    /// Takes a second's status.
    mutating func update(_ lines: [IKESAStatus]) {
        var seen: [String: (packets: UInt64, bytes: UInt64)] = [:], seenRefused: [String: [String: UInt64]] = [:]
        sas = [:]
        children = [:]
        for sa in lines {
            sas[sa.connection, default: [:]][sa.state, default: 0] += 1
            children[sa.connection, default: 0] += sa.children.count
            for c in sa.children {
                for (direction, spi, p, b) in [("in", c.spiIn, c.packetsIn, c.bytesIn), ("out", c.spiOut, c.packetsOut, c.bytesOut)] {
                    let id = "\(direction)/\(spi)", key = Key(connection: sa.connection, child: c.name, direction: direction)
                    let before = lastSeen[id] ?? (0, 0)
                    packets[key, default: 0] += p >= before.packets ? p - before.packets : p
                    bytes[key, default: 0] += b >= before.bytes ? b - before.bytes : b
                    seen[id] = (p, b)
                }
                for (reason, v) in c.dropsIn ?? [:] {
                    let before = lastRefused[c.spiIn]?[reason] ?? 0
                    refused[sa.connection, default: [:]][reason, default: 0] += v >= before ? v - before : v
                    seenRefused[c.spiIn, default: [:]][reason] = v
                }
            }
        }
        lastSeen = seen
        lastRefused = seenRefused
    }

    /// The exposition text (`offload_ipsec_*`).
    public func prometheusText() -> String {
        func label(_ s: String) -> String { s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") }
        var out = "# HELP offload_ipsec_ike_sas IKE SAs by connection and state.\n# TYPE offload_ipsec_ike_sas gauge\n"
        for c in connections {
            for state in ["established", "connecting", "half-open", "authenticating", "rekeyed"] {
                out += "offload_ipsec_ike_sas{connection=\"\(label(c))\",state=\"\(state)\"} \(sas[c]?[state] ?? 0)\n"
            }
        }
        out += "# HELP offload_ipsec_child_sas CHILD_SAs installed, by connection.\n# TYPE offload_ipsec_child_sas gauge\n"
        for c in connections { out += "offload_ipsec_child_sas{connection=\"\(label(c))\"} \(children[c] ?? 0)\n" }
        for (name, help, table) in [("bytes", "Inner bytes through the connection's CHILD_SAs.", bytes), ("packets", "Inner packets through the connection's CHILD_SAs.", packets)] {
            out += "# HELP offload_ipsec_child_\(name)_total \(help)\n# TYPE offload_ipsec_child_\(name)_total counter\n"
            for (k, v) in table.sorted(by: { $0.key < $1.key }) {
                out += "offload_ipsec_child_\(name)_total{connection=\"\(label(k.connection))\",child=\"\(label(k.child))\",direction=\"\(k.direction)\"} \(v)\n"
            }
        }
        out += "# HELP offload_ipsec_child_refused_total Datagrams of the connection's inbound SAs refused, by reason.\n# TYPE offload_ipsec_child_refused_total counter\n"
        for (c, reasons) in refused.sorted(by: { $0.key < $1.key }) {
            for (r, v) in reasons.sorted(by: { $0.key < $1.key }) {
                out += "offload_ipsec_child_refused_total{connection=\"\(label(c))\",reason=\"\(r)\"} \(v)\n"
            }
        }
        return out
    }
}

/// What `offload ipsec --status` reads: the SAs and the counters.
public struct IKEStatusFile: Codable, Sendable {
    /// The IKE SAs with their CHILD_SAs.
    public var sas: [IKESAStatus]
    /// Rekeys, retransmissions, ...
    public var counters: IKEEngine.Counters
    /// The process that wrote it (nil in files from before it was recorded).
    public var pid: Int32? = nil
    /// When it was written, in seconds since 1970 (nil in files from before it was recorded).
    public var written: Double? = nil
    /// What the receiving thread handed over on port 4500 and what it dropped (nil in files from before).
    public var handoff: IKEHandoff.Counters? = nil

    /// As text, in the spirit of `swanctl --list-sas`.
    public var text: String {
        func age(_ s: Double) -> String { s < 120 ? "\(Int(s))s" : s < 7200 ? "\(Int(s / 60))m" : "\(Int(s / 3600))h" }
        var out = ""
        for sa in sas {
            let nat = sa.natLocal && sa.natRemote ? ", NAT at both ends" : sa.natLocal ? ", this end behind a NAT" : sa.natRemote ? ", peer behind a NAT" : ""
            out += "\(sa.connection): #\(sa.rekeys) rekeys, \(sa.state.uppercased()), \(sa.role), peer \(sa.peerID) at \(sa.peer)\(nat)\n"
            out += "  \(sa.algorithms), SPIs \(sa.spis), established \(age(sa.age)) ago\n"
            for c in sa.children {
                out += "  \(c.name): \(c.sending ? "INSTALLED" : "INSTALLED (receiving only)"), \(c.algorithm)\(c.esn ? "-esn" : ""), "
                    + "SPIs \(c.spiIn)_i \(c.spiOut)_o, \(c.rekeys) rekeys, installed \(age(c.age)) ago\n"
                out += "    in  \(c.bytesIn) bytes, \(c.packetsIn) packets\n"
                out += "    out \(c.bytesOut) bytes, \(c.packetsOut) packets\n"
                if let drops = c.dropsIn, !drops.isEmpty {
                    out += "    refused " + drops.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key.replacingOccurrences(of: "_", with: " "))" }
                        .joined(separator: ", ") + "\n"
                }
                out += "    local  \(c.localTS)\n    remote \(c.remoteTS)\n"
            }
        }
        if sas.isEmpty { out += "no IKE SA\n" }
        out += "CHILD_SA rekeys \(counters.childRekeys), IKE SA rekeys \(counters.ikeRekeys), collisions \(counters.collisions), "
            + "retransmissions \(counters.retransmissions), invalid messages \(counters.invalidMessages), cookies sent \(counters.cookiesSent)\n"
        if let h = handoff {
            out += "port 4500 handover: \(h.queued) queued, \(h.waits) waited for (\(h.waitsTimedOut) past 50 ms), dropped \(h.dropped) "
                + "(malformed \(h.malformed), unknown SPI \(h.unknownSPI), IKE_SA_INIT over the rate \(h.rateLimited), queue full \(h.queueFull))\n"
        }
        return out
    }
}

/// The handover of IKE messages on port 4500 from the ESP receiving thread to the IKE daemon's
/// thread. The receiving thread must not stall on what anyone can send behind the non-ESP
/// marker, so a datagram is filtered first (IKE header, version 2, and either an SPI of an IKE SA
/// of this end or a first IKE_SA_INIT request), first IKE_SA_INIT requests pass a token bucket,
/// and the queue is bounded; what fails is dropped and counted. The receiving thread waits only
/// for a message of a known IKE SA that may install a CHILD_SA (IKE_AUTH, CREATE_CHILD_SA): a
/// peer may send on the new SA right behind its answer (strongSwan does), and those datagrams
/// must find it installed.
public final class IKEHandoff: Sendable {
    /// What became of a datagram.
    public enum Result: Sendable, Equatable {
        /// Not passed on (counted by reason); the receiving thread went on at once.
        case dropped(Drop)
        /// Queued for the daemon; the receiving thread went on at once.
        case queued
        /// Queued; the receiving thread waited until the daemon handled it and installed what it changed.
        case handled
        /// Queued; the receiving thread waited the longest it waits (50 ms), or the daemon stopped.
        case timedOut
    }

    /// Why a datagram was dropped.
    public enum Drop: String, Sendable, Equatable {
        /// Shorter than an IKE header, a version other than 2, a length that disagrees, an unknown exchange.
        case malformed
        /// Neither an SPI of this end's IKE SAs nor a first IKE_SA_INIT request.
        case unknownSPI
        /// A first IKE_SA_INIT request beyond the token bucket.
        case rateLimited
        /// The queue for the daemon was full.
        case queueFull
    }

    /// The handover's counters.
    public struct Counters: Sendable, Codable, Equatable {
        /// Messages queued (waited for or not).
        public var queued = 0
        /// Times the receiving thread waited for a message to be handled.
        public var waits = 0
        /// Of those, waits that ended without the message handled (50 ms, or stopping).
        public var waitsTimedOut = 0
        /// Datagrams dropped: malformed, unknown SPI, IKE_SA_INIT over the rate, queue full.
        public var malformed = 0, unknownSPI = 0, rateLimited = 0, queueFull = 0
        /// Every drop.
        public var dropped: Int { malformed + unknownSPI + rateLimited + queueFull }
        /// Counters at zero.
        public init() {}
    }

    struct State {
        var messages: [[UInt8]] = []
        /// Each message's sender (nil: not known).
        var sources: [UDPEndpoint?] = []
        var last: UInt64 = 0
        var known: Set<UInt64> = []
        var tokens: Double
        var refilled: Double?
        var counters = Counters()
        /// nil: every message of a known SA that may install a CHILD_SA is waited for (no IDs published).
        var awaited: [UInt64: (request: UInt32, response: UInt32?)]?
        var waited: Set<WaitKey> = []
    }

    struct WaitKey: Hashable {
        var spi: UInt64
        var messageID: UInt32
        var response: Bool
    }

    /// Messages waiting for the daemon above which more are dropped.
    public let queueLimit: Int
    /// First IKE_SA_INIT requests let through per second, and at most at once.
    public let initRate: Double, initBurst: Double
    /// The longest the receiving thread waits (seconds).
    public static let longestWait = 0.05
    let state: Mutex<State>
    /// The number of the last message handled, with its SA changes installed.
    let handled = Atomic<UInt64>(0)
    let stopped = Atomic<Bool>(false)
    let wake: @Sendable () -> Void

    /// A handover that calls `wake` after queueing a message (from the receiving thread).
    public init(queueLimit: Int = 64, initRate: Double = 20, initBurst: Double = 20, wake: @escaping @Sendable () -> Void) {
        self.queueLimit = queueLimit
        self.initRate = initRate
        self.initBurst = initBurst
        self.wake = wake
        state = Mutex(State(tokens: initBurst))
    }

    /// The counters so far.
    public var counters: Counters { state.withLock { $0.counters } }

    /// The local SPIs of the engine's IKE SAs (the daemon's thread publishes them before any
    /// message leaves, so that the answer finds its SA known).
    public func setKnownSPIs<S: Sequence>(_ spis: S) where S.Element == UInt64 {
        let set = Set(spis)
        state.withLock { if $0.known != set { $0.known = set } }
    }

    /// The IKE SAs (this end's SPIs, as ``setKnownSPIs(_:)``) and the message IDs worth a wait for
    /// each: the peer's next request and the
    /// answer to this end's outstanding request. A message with another ID is queued without a
    /// wait; each (SPI, ID, direction) is waited for once at most, so a forged copy of an awaited
    /// message (its SPIs and ID travel in clear) costs the receiving thread one wait, not one per copy.
    public func setAwaitedMessageIDs(_ ids: [UInt64: (request: UInt32, response: UInt32?)]) {
        let known = Set(ids.keys)
        state.withLock { s in
            s.awaited = ids
            if s.known != known { s.known = known }  // the SAs are the awaited table's keys
            if s.waited.count > 1024 { s.waited.removeAll() }
        }
    }

    /// Stops any wait (the daemon is going).
    public func stop() { stopped.store(true, ordering: .relaxed) }

    /// What to do with a message (without the marker), the token bucket at time `now` (seconds).
    func admit(_ m: [UInt8], now: Double, _ s: inout State) -> (drop: Drop?, wait: Bool) {
        // The fixed header: length, version 2.x, the length field, a known exchange (RFC 7296 §3.1).
        guard m.count >= IKEHeader.length, m[17] >> 4 == 2, let exchange = IKEExchange(rawValue: m[18]) else { return (.malformed, false) }
        let length = Int(m[24]) << 24 | Int(m[25]) << 16 | Int(m[26]) << 8 | Int(m[27])
        guard length == m.count else { return (.malformed, false) }
        let spii = m[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }, spir = m[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let flags = m[19], messageID = m[20..<24].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let fromOriginalInitiator = flags & 0x08 != 0, isResponse = flags & 0x20 != 0
        let ours = fromOriginalInitiator ? spir : spii
        if ours != 0 && s.known.contains(ours) {
            guard exchange == .ikeAuth || exchange == .createChildSA else { return (nil, false) }
            guard let awaited = s.awaited else { return (nil, true) }
            guard let ids = awaited[ours], isResponse ? ids.response == messageID : ids.request == messageID else { return (nil, false) }
            return (nil, s.waited.insert(WaitKey(spi: ours, messageID: messageID, response: isResponse)).inserted)
        }
        guard exchange == .ikeSAInit, !isResponse, fromOriginalInitiator, spir == 0, spii != 0, messageID == 0 else { return (.unknownSPI, false) }
        if let last = s.refilled { s.tokens = min(initBurst, s.tokens + max(0, now - last) * initRate) }
        s.refilled = now
        guard s.tokens >= 1 else { return (.rateLimited, false) }
        s.tokens -= 1
        return (nil, false)
    }

    /// A datagram from port 4500 (non-ESP marker included) at time `now` (seconds, monotonic):
    /// dropped, queued, or queued and waited for (see the type's description).
    @discardableResult
    public func deliver(_ datagram: [UInt8], from source: UDPEndpoint? = nil, now: Double) -> Result {
        guard datagram.count >= 4 else {
            state.withLock { $0.counters.malformed += 1 }
            return .dropped(.malformed)
        }
        let message = Array(datagram.dropFirst(4))
        let (ticket, wait, drop) = state.withLock { s -> (UInt64, Bool, Drop?) in
            var (drop, wait) = admit(message, now: now, &s)
            if drop == nil && s.messages.count >= queueLimit { drop = .queueFull }
            switch drop {
            case .malformed?: s.counters.malformed += 1
            case .unknownSPI?: s.counters.unknownSPI += 1
            case .rateLimited?: s.counters.rateLimited += 1
            case .queueFull?: s.counters.queueFull += 1
            case nil:
                s.messages.append(message)
                s.sources.append(source)
                s.last += 1
                s.counters.queued += 1
                if wait { s.counters.waits += 1 }
            }
            return (s.last, wait, drop)
        }
        if let drop { return .dropped(drop) }
        wake()
        guard wait else { return .queued }
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(Self.longestWait * 1e9)
        while handled.load(ordering: .acquiring) < ticket {
            guard DispatchTime.now().uptimeNanoseconds < deadline, !stopped.load(ordering: .relaxed) else {
                state.withLock { $0.counters.waitsTimedOut += 1 }
                return .timedOut
            }
            usleep(50)
        }
        return .handled
    }

    /// The messages queued so far and the ticket of the last (the daemon's thread).
    public func take() -> (messages: [[UInt8]], ticket: UInt64) {
        let (messages, ticket) = takeWithSenders()
        return (messages.map(\.bytes), ticket)
    }

    /// The messages queued so far with their senders, and the ticket of the last.
    public func takeWithSenders() -> (messages: [(bytes: [UInt8], source: UDPEndpoint?)], ticket: UInt64) {
        state.withLock { s in
            defer {
                s.messages.removeAll()
                s.sources.removeAll()
            }
            return (Array(zip(s.messages, s.sources)).map { (bytes: $0.0, source: $0.1) }, s.last)
        }
    }

    /// The messages up to `ticket` are handled and what they changed is installed.
    public func markHandled(_ ticket: UInt64) { handled.store(ticket, ordering: .releasing) }
}
