import Foundation
import Logging
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
    let inbox = Mutex<(messages: [[UInt8]], last: UInt64)>(([], 0))
    /// The number of the last message on port 4500 handled, with its SA changes installed.
    let handled = Atomic<UInt64>(0)
    let send4500 = Mutex<(@Sendable ([UInt8]) -> Void)?>(nil)
    let stopFlag = Atomic<Bool>(false)
    let statusLines = Mutex<[IKESAStatus]>([])
    let countersSnapshot = Mutex<IKEEngine.Counters>(IKEEngine.Counters())
    let statusRequested = Atomic<Bool>(false)
    let started = DispatchTime.now().uptimeNanoseconds
    /// Where the status is written each second (JSON, for `offload ipsec --status`).
    public var statusPath: String?
    /// Whether the last status write failed (logged once, and again when it works).
    var statusWriteFailed = false
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
        remote = connections[0].remoteAddress
        socket500 = try UDPTunnelSocket(local: connections[0].localAddress, remote: connections[0].remoteAddress, port: 500,
                                        coalesce: false, connected: false)
        var ends: [CInt] = [-1, -1]
        if pipe(&ends) == 0 {
            for fd in ends {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            }
        }
        (wake, wakeWriter) = (ends[0], ends[1])
    }

    deinit {
        if wake >= 0 { close(wake) }
        if wakeWriter >= 0 { close(wakeWriter) }
    }

    /// Waits up to `milliseconds` for port 500 or the wake-up: whether port 500 is readable.
    func waitForMessages(milliseconds: CInt) -> Bool {
        var fds = [pollfd(fd: socket500?.descriptor ?? -1, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
        guard poll(&fds, 2, milliseconds) > 0 else { return false }
        if fds[1].revents != 0 {
            var drain = [UInt8](repeating: 0, count: 64)
            while read(wake, &drain, drain.count) > 0 {}
        }
        return fds[0].revents & Int16(POLLIN) != 0
    }

    /// How messages on port 4500 leave: through the dataplane's socket (the marker is added here).
    public func attach(send: @escaping @Sendable ([UInt8]) -> Void) { send4500.withLock { $0 = send } }

    /// An IKE message received on port 4500 (the datagram, non-ESP marker included), called on
    /// the receiving thread: queued for the daemon's thread, which is woken; then waits (at most
    /// 50 ms) until the message is handled and what it changed is installed. The datagrams after
    /// it are decoded only then: a peer that sends on a new SA right after its answer (strongSwan
    /// does) finds the SA in place.
    public func deliver(_ datagram: [UInt8]) {
        guard datagram.count > 4 else { return }
        let ticket = inbox.withLock { box -> UInt64 in
            box.messages.append(Array(datagram.dropFirst(4)))
            box.last += 1
            return box.last
        }
        var one: UInt8 = 1
        _ = write(wakeWriter, &one, 1)
        let deadline = DispatchTime.now().uptimeNanoseconds + 50_000_000
        while handled.load(ordering: .acquiring) < ticket && DispatchTime.now().uptimeNanoseconds < deadline && !stopFlag.load(ordering: .relaxed) {
            usleep(50)
        }
    }

    /// Asks the thread to delete the SAs and stop.
    public func stop() { stopFlag.store(true, ordering: .relaxed) }

    /// Asks the thread to log the status (SIGUSR1).
    public func requestStatus() { statusRequested.store(true, ordering: .relaxed) }

    /// The status as of the last second.
    public var status: [IKESAStatus] { statusLines.withLock { $0 } }
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
            if m.path.localPort == 500 {
                do { try socket500?.send(m.bytes, trafficClass: 0) } catch { logger.warning("IKE: sending on port 500: \(error)") }
            } else if let send = send4500.withLock({ $0 }) {
                send([0, 0, 0, 0] + m.bytes)
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
                    let got = buffer.withUnsafeMutableBytes { try? s.receive(into: $0) }
                    guard let got else { break }
                    let (length, _, fromRemote, _) = got
                    guard fromRemote, length > 0 else { continue }
                    send(engine.receive(Array(buffer[0..<length]), path: IKEPath(localPort: 500, remote: remote, remotePort: 500), now: now))
                }
            }
            let (messages, ticket) = inbox.withLock { box in
                defer { box.messages.removeAll() }
                return (box.messages, box.last)
            }
            for m in messages {
                send(engine.receive(m, path: IKEPath(localPort: 4500, remote: remote, remotePort: 4500), now: now))
            }
            // `send` installed what they changed before anything left.
            if !messages.isEmpty { handled.store(ticket, ordering: .releasing) }
            let t = now
            if t - lastTick >= 0.1 {
                lastTick = t
                send(engine.tick(now: t, traffic: traffic))
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

    /// Logs the events, installs a changed SA set, rewrites the key log.
    func afterEngine() {
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
            for line in ESPKeyLog.lines(children.map(\.tunnel), local: local, remote: remote) where !espKeyLines.contains(line) {
                espKeyLines.append(line)
            }
            for line in engine.wiresharkIKELines() where !ikeKeyLines.contains(line) { ikeKeyLines.append(line) }
            do {
                try ESPKeyLog.write(espKeyLines, to: keyLogPath)
                try ESPKeyLog.write(ikeKeyLines, to: keyLogPath + ".ikev2")
            } catch { logger.warning("IKE: --write-keys: \(error)") }
        }
    }

    func publishStatus() {
        let lines = engine.status(now: now, traffic: traffic)
        statusLines.withLock { $0 = lines }
        countersSnapshot.withLock { $0 = engine.counters }
        if let statusPath {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            // The writer and the time: the reader tells a gateway that is gone from one that runs.
            let file = IKEStatusFile(sas: lines, counters: engine.counters, pid: getpid(), written: Date().timeIntervalSince1970)
            if let data = try? encoder.encode(file) {
                do {
                    try data.write(to: URL(fileURLWithPath: statusPath), options: .atomic)
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
        for line in IKEStatusFile(sas: engine.status(now: now, traffic: traffic), counters: engine.counters).text.split(separator: "\n") {
            logger.notice("\(line)")
        }
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

    /// As text, in the spirit of `swanctl --list-sas`.
    public var text: String {
        func age(_ s: Double) -> String { s < 120 ? "\(Int(s))s" : s < 7200 ? "\(Int(s / 60))m" : "\(Int(s / 3600))h" }
        var out = ""
        for sa in sas {
            out += "\(sa.connection): #\(sa.rekeys) rekeys, \(sa.state.uppercased()), \(sa.role), peer \(sa.peerID) at \(sa.peer)\n"
            out += "  \(sa.algorithms), SPIs \(sa.spis), established \(age(sa.age)) ago\n"
            for c in sa.children {
                out += "  \(c.name): \(c.sending ? "INSTALLED" : "INSTALLED (receiving only)"), \(c.algorithm)\(c.esn ? "-esn" : ""), "
                    + "SPIs \(c.spiIn)_i \(c.spiOut)_o, \(c.rekeys) rekeys, installed \(age(c.age)) ago\n"
                out += "    in  \(c.bytesIn) bytes, \(c.packetsIn) packets\n"
                out += "    out \(c.bytesOut) bytes, \(c.packetsOut) packets\n"
                out += "    local  \(c.localTS)\n    remote \(c.remoteTS)\n"
            }
        }
        if sas.isEmpty { out += "no IKE SA\n" }
        out += "CHILD_SA rekeys \(counters.childRekeys), IKE SA rekeys \(counters.ikeRekeys), collisions \(counters.collisions), "
            + "retransmissions \(counters.retransmissions), invalid messages \(counters.invalidMessages), cookies sent \(counters.cookiesSent)\n"
        return out
    }
}
