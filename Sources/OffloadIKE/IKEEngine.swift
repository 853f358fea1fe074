import Foundation
import OffloadCrypto
import OffloadIPsec
import OffloadWire

/// Where an IKE message came from or goes to: this end's UDP port (500, or 4500 behind the
/// non-ESP marker) and the peer's address and port.
public struct IKEPath: Hashable, Sendable, CustomStringConvertible {
    /// This end's port.
    public var localPort: UInt16
    /// The peer's address.
    public var remote: IPAddress
    /// The peer's port.
    public var remotePort: UInt16
    /// A path.
    public init(localPort: UInt16, remote: IPAddress, remotePort: UInt16) {
        self.localPort = localPort
        self.remote = remote
        self.remotePort = remotePort
    }
    /// `192.0.2.2:4500`.
    public var description: String { endpoint.description }
    /// The peer's address and port.
    public var endpoint: UDPEndpoint { UDPEndpoint(remote, remotePort) }
}

/// A CHILD_SA as the dataplane needs it.
public struct IKEChildSA: Sendable {
    /// A number unique in this process (for status lines).
    public var id: Int
    /// The connection and child names.
    public var connection: String, child: String
    /// The AEAD and whether ESN is on.
    public var algorithm: ESPAlgorithm, extendedSequenceNumbers: Bool
    /// The SA this end receives with and the one it sends with.
    public var inbound: ESPSAKeys, outbound: ESPSAKeys
    /// The negotiated selectors: this side, the far side.
    public var localTS: [TrafficSelector], remoteTS: [TrafficSelector]
    /// Whether this end sends with it (false while a rekeyed SA is still accepted, or a new one is
    /// not yet used by the peer).
    public var sending: Bool
    /// When it was installed (engine time, seconds).
    public var installed: Double
    /// The CHILD_SA it replaced (nil: the first).
    public var replaces: Int?
    /// How many rekeys led to it.
    public var generation: Int
    /// Where its datagrams go: the owning IKE SA's peer address and port at the time the host
    /// asked (ESP goes where IKE on port 4500 goes, RFC 3948). Set by ``IKEEngine/childSAs``.
    public var peer: UDPEndpoint?
    /// Whether the peer is behind a NAT (NAT detection of the owning IKE SA), so that an
    /// authentic datagram from elsewhere may move ``peer``.
    public var peerMayMove = false

    /// The dataplane's view.
    public var tunnel: ESPTunnelConfiguration {
        var t = ESPTunnelConfiguration(name: "\(connection).\(child)#\(id)", algorithm: algorithm, extendedSequenceNumbers: extendedSequenceNumbers,
                                       localSelectors: localTS, remoteSelectors: remoteTS, outbound: outbound, inbound: inbound)
        t.sending = sending
        t.peer = peer
        t.peerMayMove = peerMayMove
        return t
    }
}

/// The dataplane's counts for an SA, as the engine reads them to rekey on volume and to see life.
public struct IKETrafficSample: Sendable {
    /// Packets and bytes through the SA.
    public var packets: UInt64 = 0, bytes: UInt64 = 0
    /// A sample.
    public init(packets: UInt64 = 0, bytes: UInt64 = 0) {
        self.packets = packets
        self.bytes = bytes
    }
}

/// What happened, for the log: established, rekeyed, deleted, gave up, authentication failed.
public struct IKEEvent: Sendable, CustomStringConvertible {
    /// How bad: info for the life cycle, warning for a peer's refusal, error for a failure.
    public enum Level: Sendable { case info, warning, error }
    /// The level.
    public var level: Level
    /// One line (never a key or a secret).
    public var description: String
}

/// IKEv2 (RFC 7296) as a state machine without I/O: messages and time in, messages, events and
/// CHILD_SAs out. The host (``IKEDaemon``) owns the sockets, the clock and the dataplane; tests
/// drive two engines against each other in memory.
public final class IKEEngine {
    /// The configuration.
    public private(set) var connections: [IKEConnection]
    /// IKE SAs by this end's SPI.
    var sas: [UInt64: IKESA] = [:]
    /// Events not yet taken by the host.
    public private(set) var events: [IKEEvent] = []
    /// Bumped whenever the set of CHILD_SAs (or which of them send) changes.
    public private(set) var childGeneration = 0
    /// Half-open IKE SAs (responder, before IKE_AUTH) above which a COOKIE is demanded.
    public var cookieThreshold = 16
    /// Half-open IKE SAs above which new ones are dropped.
    public var halfOpenLimit = 1024
    /// Seconds a half-open IKE SA is kept.
    public var halfOpenTimeout = 30.0
    /// This end's outer address (the connections' `local_addrs`, which ``IKEConfig`` makes the
    /// same for all).
    public let localAddress: IPAddress
    /// Seconds without anything sent to a peer after which a NAT keepalive is due, when this end
    /// is behind a NAT (strongSwan's `charon.keep_alive`); see ``keepalives(now:)``.
    public var keepaliveInterval = 20.0
    /// When an IKE message was last sent on each path (keepalives included; ESP is not counted).
    var lastSent: [IKEPath: Double] = [:]
    /// Whether IKE_SA_INIT's NAT_DETECTION_SOURCE_IP is made wrong on purpose, so that the peer
    /// sees a NAT and sends ESP in UDP (RFC 7296 §2.23 allows it; swanctl's `encap = yes`, the
    /// only way this gateway speaks ESP). Off only in tests that need a peer without a NAT.
    public var claimsNAT = true
    /// This end's IKE port for what it initiates (4500: ESP and IKE share it, RFC 7296 §2.23).
    public var initiatorPort: UInt16 = 4500
    /// Counters for status: rekeys, retransmissions, messages.
    public internal(set) var counters = Counters()
    /// Counters.
    public struct Counters: Sendable, Codable {
        /// CHILD_SA rekeys completed (either end initiating).
        public var childRekeys = 0
        /// IKE SA rekeys completed.
        public var ikeRekeys = 0
        /// Requests sent again.
        public var retransmissions = 0
        /// Messages received that could not be read or did not authenticate.
        public var invalidMessages = 0
        /// COOKIE demands sent.
        public var cookiesSent = 0
        /// Rekey collisions resolved (RFC 7296 §2.8.1).
        public var collisions = 0
    }

    var cookieSecret = randomBytes(32)
    /// The secret before the last rotation: its cookies are still accepted until the next one.
    var previousCookieSecret: [UInt8]?
    /// When the cookie secret was made (engine time; nil before the first tick).
    var cookieSecretBorn: Double?
    /// Seconds a cookie secret is used before a new one replaces it (RFC 7296 §2.6); its
    /// cookies are accepted for as long again.
    public var cookieSecretLifetime = 300.0
    var nextChildID = 1

    /// CHILD_SAs an IKE SA holds at most: a request for one more is refused with
    /// NO_ADDITIONAL_SAS (a rekey may go up to twice this, while old and new overlap).
    public var maxChildSAs = 32
    /// Traffic selectors a TSi or TSr payload may carry: more is refused with TS_UNACCEPTABLE.
    public static let maxSelectorsPerPayload = 16
    /// The wait after the first failed attempt of a connection that starts by itself (seconds),
    /// doubled with each failure up to ``retryMaxDelay``, less up to a quarter (random).
    public var retryBaseDelay = 1.0
    /// The longest wait between attempts (seconds).
    public var retryMaxDelay = 60.0
    /// Where nonces, SPIs and timer jitter come from: libcrypto's generator, unless a fuzz target
    /// seeded a deterministic one (``_fuzzSeedRandom(_:)``). The key exchange's keys and the
    /// cookie secret always come from libcrypto.
    var randomSource: ((Int) -> [UInt8])?

    /// `count` bytes from ``randomSource``.
    func random(_ count: Int) -> [UInt8] { randomSource?(count) ?? randomBytes(count) }

    /// Attempts that failed in a row per connection (by name), and when the next starts.
    var retries: [String: (failures: Int, at: Double)] = [:]

    /// An engine for `connections`: one local address (the first connection's), any number of
    /// peers, each matched to a connection by its address and identity.
    public init(connections: [IKEConnection]) {
        self.connections = connections
        localAddress = connections.first?.localAddress ?? .v4(IPv4Address(rawValue: 0))
    }

    func log(_ level: IKEEvent.Level, _ text: String) { events.append(IKEEvent(level: level, description: text)) }

    /// Takes the events logged since the last call.
    public func takeEvents() -> [IKEEvent] {
        defer { events.removeAll() }
        return events
    }

    func childrenChanged() { childGeneration += 1 }

    /// Every installed CHILD_SA (those just deleted too, receiving only, for a moment), each with
    /// its IKE SA's current peer address and port.
    public var childSAs: [IKEChildSA] {
        sas.values.sorted { $0.localSPI < $1.localSPI }.flatMap { sa in
            (sa.children.map(\.sa) + (sa.state == .dead ? [] : sa.retired.map(\.sa))).map(sa.withPeer)
        }
    }

    /// The CHILD_SAs that are established (not the deleted ones still receiving).
    public var activeChildSAs: [IKEChildSA] {
        sas.values.sorted { $0.localSPI < $1.localSPI }.flatMap { sa in sa.children.map { sa.withPeer($0.sa) } }
    }

    /// Lines of Wireshark's `ikev2_decryption_table` for the established IKE SAs (so that tshark
    /// decrypts IKE_AUTH and later exchanges). Holds keys: only for a file of mode 0600.
    public func wiresharkIKELines() -> [String] {
        func hex(_ b: SecretBytes) -> String { b.hexForKeyFile() }
        return sas.values.filter { $0.state == .established && $0.keys != nil }.sorted { $0.created < $1.created }.map { sa in
            let k = sa.keys!
            let name: String
            switch sa.aead {
            case .aesGCM128: name = "AES-GCM-128 with 16 octet ICV [RFC5282]"
            case .aesGCM256: name = "AES-GCM-256 with 16 octet ICV [RFC5282]"
            case .chacha20Poly1305: name = "ChaCha20-Poly1305 [RFC7634]"
            }
            // Byte fields bare, text fields quoted, as Wireshark writes this table.
            return "\(String(format: "%016llx", sa.spii)),\(String(format: "%016llx", sa.spir)),\(hex(k.ei)),\(hex(k.er)),\"\(name)\",,,\"NONE [RFC4306]\""
        }
    }

    /// A status line per IKE SA and CHILD_SA.
    public func status(now: Double, traffic: (UInt32, Bool) -> IKETrafficSample) -> [IKESAStatus] {
        sas.values.sorted { $0.created < $1.created }.map { $0.status(now: now, traffic: traffic) }
    }

    // MARK: starting

    /// Initiates every connection that has a child with `start_action = start` or `trap` and no
    /// IKE SA yet. Returns the messages to send.
    public func start(now: Double) -> [(bytes: [UInt8], path: IKEPath)] {
        var out: [(bytes: [UInt8], path: IKEPath)] = []
        for c in connections where c.remoteAddress != nil && c.children.contains(where: { $0.startAction != .none }) {
            guard !hasLiveSA(c) else { continue }
            out += initiate(c, now: now)
        }
        return sent(out, now: now)
    }

    /// Whether an IKE SA of connection `c` is up or under way. For a connection that initiates
    /// (one peer address) any of its SAs counts, the peer's too: the peer is there. A connection
    /// with many peers (`%any`, a prefix) never initiates, so its responder SAs ask nothing of this.
    func hasLiveSA(_ c: IKEConnection) -> Bool {
        sas.values.contains { $0.connection?.name == c.name && $0.state != .dead }
    }

    /// Starts an IKE SA for `connection` (IKE_SA_INIT on port 4500 to its ``IKEConnection/remoteAddress``;
    /// nothing when it has none, `remote_addrs` being a prefix or `%any`).
    public func initiate(_ connection: IKEConnection, now: Double) -> [(bytes: [UInt8], path: IKEPath)] {
        guard let remote = connection.remoteAddress else {
            log(.error, "\(connection.name): cannot initiate: remote_addrs (\(connection.remoteAddrs)) names no one address")
            return []
        }
        let path = IKEPath(localPort: initiatorPort, remote: remote, remotePort: 4500)
        let sa = IKESA(engine: self, originalInitiator: true, localSPI: freshIKESPI(), path: path, now: now)
        sa.connection = connection
        sas[sa.localSPI] = sa
        log(.info, "\(connection.name): initiating IKE_SA_INIT to \(path)")
        return sent(sa.sendInit(now: now), now: now)
    }

    /// Notes when each path was last sent on (for keepalives) and passes `out` on.
    func sent(_ out: [(bytes: [UInt8], path: IKEPath)], now: Double) -> [(bytes: [UInt8], path: IKEPath)] {
        for m in out { lastSent[m.path] = now }
        return out
    }

    /// The connections that accept a peer at `address`, the most specific first (an exact
    /// address, then the longest prefix, then `%any`; the file's order among equals), as
    /// strongSwan ranks its IKE configurations.
    func candidates(for address: IPAddress) -> [IKEConnection] {
        connections.enumerated().compactMap { i, c in c.remoteAddrs.rank(address).map { (c, $0, i) } }
            .sorted { ($0.1, -$0.2) > ($1.1, -$1.2) }.map(\.0)
    }

    func freshIKESPI() -> UInt64 {
        while true {
            let v = random(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            if v != 0 && sas[v] == nil { return v }
        }
    }

    func freshChildSPI() -> UInt32 {
        let used = Set(sas.values.flatMap { $0.children.map(\.sa.inbound.spi) + $0.pendingSPIs })
        while true {
            let v = random(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            if v >= 256 && !used.contains(v) { return v }
        }
    }

    func newChildID() -> Int {
        defer { nextChildID += 1 }
        return nextChildID
    }

    // MARK: receiving

    /// Handles one IKE message (without the non-ESP marker) received on `path`.
    /// - Returns: the messages to send.
    public func receive(_ bytes: [UInt8], path: IKEPath, now: Double) -> [(bytes: [UInt8], path: IKEPath)] {
        sent(dispatch(bytes, path: path, now: now), now: now)
    }

    func dispatch(_ bytes: [UInt8], path: IKEPath, now: Double) -> [(bytes: [UInt8], path: IKEPath)] {
        let header: IKEHeader
        do { header = try IKEHeader(parsing: bytes) } catch {
            counters.invalidMessages += 1
            return []
        }
        guard let exchange = IKEExchange(rawValue: header.exchange) else {
            counters.invalidMessages += 1
            return []
        }
        // Which SA: ours is the responder SPI when the peer is the original initiator, else the initiator SPI.
        let ours = header.fromOriginalInitiator ? header.responderSPI : header.initiatorSPI
        if let sa = sas[ours] {
            return sa.receive(bytes, header: header, exchange: exchange, path: path, now: now)
        }
        if exchange == .ikeSAInit && !header.isResponse && header.responderSPI == 0 && header.messageID == 0 {
            // A retransmitted first request reaches the half-open SA made for it.
            if let sa = sas.values.first(where: { !$0.originalInitiator && $0.remoteSPI == header.initiatorSPI && $0.path.remote == path.remote }) {
                return sa.receive(bytes, header: header, exchange: exchange, path: path, now: now)
            }
            return respondToInit(bytes, header: header, path: path, now: now)
        }
        counters.invalidMessages += 1
        return []
    }

    /// A first IKE_SA_INIT request: a COOKIE when too many SAs are half-open, else a new half-open SA.
    func respondToInit(_ bytes: [UInt8], header: IKEHeader, path: IKEPath, now: Double) -> [(bytes: [UInt8], path: IKEPath)] {
        let payloads: [IKEPayload]
        do {
            let raw = try IKEPayloadChain.walk(bytes[IKEHeader.length...], first: header.nextPayload)
            payloads = try IKEPayloadChain.typed(raw.payloads)
        } catch {
            counters.invalidMessages += 1
            log(.warning, "IKE_SA_INIT from \(path): \(error)")
            return [(IKESA.plainMessage(header: header, payloads: [.notify(error.notify, data: error.notify == .unsupportedCriticalPayload ? [error.payloadType] : [])],
                                        responderSPI: 0), path)]
        }
        guard connections.contains(where: { $0.remoteAddrs.matches(path.remote) }) else {
            log(.warning, "IKE_SA_INIT from \(path): no connection accepts that address (remote_addrs)")
            return []
        }
        let halfOpen = sas.values.filter { !$0.originalInitiator && $0.state == .initDone }.count
        guard halfOpen < halfOpenLimit else { return [] }
        if halfOpen >= cookieThreshold {
            let nonce = IKESA.nonce(payloads) ?? []
            let expected = cookie(nonce: nonce, spii: header.initiatorSPI, address: path.remote)
            let offered = payloads.lazy.compactMap { p -> [UInt8]? in
                if case .notify(_, _, .cookie, let data) = p { return data }
                return nil
            }.first
            let earlier = previousCookieSecret.map { cookie(nonce: nonce, spii: header.initiatorSPI, address: path.remote, secret: $0) }
            guard let offered, constantTimeEqual(offered, expected) || earlier.map({ constantTimeEqual(offered, $0) }) == true else {
                counters.cookiesSent += 1
                return [(IKESA.plainMessage(header: header, payloads: [.notify(.cookie, data: expected)], responderSPI: 0), path)]
            }
        }
        let sa = IKESA(engine: self, originalInitiator: false, localSPI: freshIKESPI(), path: path, now: now)
        sa.remoteSPI = header.initiatorSPI
        sas[sa.localSPI] = sa
        let out = sa.answerInit(bytes, header: header, payloads: payloads, now: now)
        if sa.state == .dead { sas[sa.localSPI] = nil }  // refused: nothing is kept
        return out
    }

    /// RFC 7296 §2.6: a cookie only this end can make, from the request's nonce, address and SPI.
    func cookie(nonce: [UInt8], spii: UInt64, address: IPAddress, secret: [UInt8]? = nil) -> [UInt8] {
        [1] + IKEPRF.hmacSHA256(secret ?? cookieSecret, nonce + bigEndianBytes(spii) + addressBytes(address))
    }

    // MARK: time

    /// Timers: retransmission, liveness, rekeying, half-open expiry; `traffic` gives an SA's counts
    /// by SPI and direction (true: the SA this end receives with).
    public func tick(now: Double, traffic: (UInt32, Bool) -> IKETrafficSample) -> [(bytes: [UInt8], path: IKEPath)] {
        var out: [(bytes: [UInt8], path: IKEPath)] = []
        for sa in sas.values.sorted(by: { $0.created < $1.created }) {
            out += sa.tick(now: now, traffic: traffic)
        }
        // Dead SAs go; a connection that should be up is started again, after a backoff.
        for (spi, sa) in sas where sa.state == .dead {
            if !sa.children.isEmpty { childrenChanged() }
            sas[spi] = nil
            if sa.restartWhenDead, let c = sa.connection, !hasLiveSA(c) {
                scheduleRetry(c, now: now)
            }
        }
        for c in connections {
            guard let r = retries[c.name], r.at <= now else { continue }
            retries[c.name]?.at = .infinity
            if !hasLiveSA(c) { out += initiate(c, now: now) }
        }
        rotateCookieSecret(now: now)
        let paths = Set(sas.values.map(\.path))
        lastSent = lastSent.filter { paths.contains($0.key) }
        return sent(out, now: now)
    }

    // MARK: NAT traversal

    /// NAT keepalives (RFC 3948 §2.3, §4): for each established IKE SA where this end is behind
    /// a NAT, its path when nothing was sent on it for ``keepaliveInterval`` seconds. The host
    /// sends each a UDP datagram of one byte, 0xFF, from port 4500, so that the NAT keeps its
    /// mapping. Only IKE messages count as sent (ESP is not reported to the engine): a busy
    /// tunnel still gets a keepalive each interval, which costs one byte.
    public func keepalives(now: Double) -> [IKEPath] {
        var due: [IKEPath] = []
        for sa in sas.values.sorted(by: { $0.created < $1.created }) where sa.state == .established && sa.natLocal {
            let last = lastSent[sa.path] ?? sa.established
            if now - last >= keepaliveInterval && !due.contains(sa.path) {
                due.append(sa.path)
                lastSent[sa.path] = now
            }
        }
        return due
    }

    /// The dataplane saw an authentic datagram of the CHILD_SA it receives with on `inboundSPI`
    /// (its ICV verified and it was the newest, not a replay) from `to`: when the peer is behind
    /// a NAT the owning IKE SA follows it there (RFC 7296 §2.23, RFC 3948), as for an IKE
    /// message; ``childGeneration`` then changes, and the CHILD_SAs carry the new endpoint.
    /// - Returns: whether the IKE SA moved (false: no such SA, no NAT in front of the peer, or
    ///   the same endpoint).
    @discardableResult
    public func peerMoved(inboundSPI: UInt32, to: UDPEndpoint, now: Double) -> Bool {
        guard let sa = sas.values.first(where: { $0.state == .established && $0.children.contains { $0.sa.inbound.spi == inboundSPI } }) else {
            return false
        }
        // ESP in UDP arrives on port 4500: the IKE SA (which floated there, RFC 7296 §2.23) too.
        let path = IKEPath(localPort: sa.path.localPort == 500 ? 4500 : sa.path.localPort, remote: to.address, remotePort: to.port)
        return sa.follow(path, now: now)
    }

    /// After a failed attempt (or a torn-down SA): the next one in 1, 2, 4, ... up to 60 s (less
    /// up to a quarter, at random, so that gateways restarted together spread out), unless the
    /// connection's ``IKEConnection/keyingTries`` attempts have failed.
    func scheduleRetry(_ c: IKEConnection, now: Double) {
        let failures = (retries[c.name]?.failures ?? 0) + 1
        if c.keyingTries > 0 && failures >= c.keyingTries {
            log(.error, "\(c.name): \(failures) attempts failed: given up (keyingtries \(c.keyingTries))")
            retries[c.name] = nil
            return
        }
        let delay = min(retryMaxDelay, retryBaseDelay * Double(1 << min(failures - 1, 30)))
        let wait = delay * (1 - 0.25 * Double(random(1)[0]) / 255)
        retries[c.name] = (failures, now + wait)
        log(.info, "\(c.name): trying again in \(String(format: "%.1f", wait)) s (\(failures) failed in a row)")
    }

    /// A connection is up: the next failure starts the backoff afresh.
    func succeeded(_ c: IKEConnection) { retries[c.name] = nil }

    /// RFC 7296 §2.6: the secret behind cookies changes now and then; the previous one's cookies
    /// stay good for one more lifetime (an initiator may be between the demand and its retry).
    func rotateCookieSecret(now: Double) {
        guard let born = cookieSecretBorn else {
            cookieSecretBorn = now
            return
        }
        guard now - born >= cookieSecretLifetime else { return }
        previousCookieSecret = cookieSecret
        cookieSecret = randomBytes(32)
        cookieSecretBorn = now
    }

    /// What a reload changed, by connection name.
    public struct ReloadSummary: Sendable, Equatable, CustomStringConvertible {
        /// New connections, connections gone, connections whose settings changed, and the rest.
        public var added: [String] = [], removed: [String] = [], changed: [String] = [], unchanged: [String] = []
        /// `2 added (a, b), 1 changed (c), 0 removed, 3 unchanged`.
        public var description: String {
            func part(_ names: [String], _ what: String) -> String { "\(names.count) \(what)" + (names.isEmpty ? "" : " (\(names.joined(separator: ", ")))") }
            return [part(added, "added"), part(changed, "changed"), part(removed, "removed"), "\(unchanged.count) unchanged"].joined(separator: ", ")
        }
    }

    /// Loads a new set of connections, as `swanctl --load-all` does: a connection whose settings
    /// are unchanged keeps its IKE and CHILD_SAs; one that is gone or changed has its SAs deleted
    /// (the peer is told); new and changed connections that start by themselves are initiated.
    /// The new set must keep this end's address (the sockets are bound to it): the caller checks.
    public func reload(_ new: [IKEConnection], now: Double) -> (messages: [(bytes: [UInt8], path: IKEPath)], summary: ReloadSummary) {
        var summary = ReloadSummary()
        let newByName = Dictionary(new.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let oldNames = Set(connections.map(\.name))
        for c in connections {
            switch newByName[c.name] {
            case nil: summary.removed.append(c.name)
            case let n? where n == c: summary.unchanged.append(c.name)
            default: summary.changed.append(c.name)
            }
        }
        summary.added = new.map(\.name).filter { !oldNames.contains($0) }
        let gone = Set(summary.removed + summary.changed)
        var deletes: [(bytes: [UInt8], path: IKEPath)] = []
        for sa in sas.values.sorted(by: { $0.created < $1.created }) where gone.contains(sa.connection?.name ?? "") {
            if sa.state == .established { deletes.append(sa.deleteMessage()) }
            let why = summary.removed.contains(sa.connection?.name ?? "") ? "unloaded" : "changed"
            log(.info, "\(sa.name): IKE SA deleted (its connection was \(why) by a reload)")
            sas[sa.localSPI] = nil
        }
        if !gone.isEmpty { childrenChanged() }
        for name in gone { retries[name] = nil }
        connections = new
        return (sent(deletes, now: now) + start(now: now), summary)
    }

    /// Deletes every IKE SA (INFORMATIONAL with a Delete of the IKE SA, sent once, not awaited).
    public func shutdown() -> [(bytes: [UInt8], path: IKEPath)] {
        var out: [(bytes: [UInt8], path: IKEPath)] = []
        for sa in sas.values.sorted(by: { $0.created < $1.created }) where sa.state == .established {
            out.append(sa.deleteMessage())
            log(.info, "\(sa.name): IKE SA deleted (shutting down)")
        }
        sas.removeAll()
        childrenChanged()
        return out
    }
}

/// A status line of an IKE SA.
public struct IKESAStatus: Sendable, Codable {
    /// The connection, the state, the role.
    public var connection: String, state: String, role: String
    /// The SPIs (hex), the algorithms.
    public var spis: String, algorithms: String
    /// Seconds since established, IKE rekeys.
    public var age: Double, rekeys: Int
    /// The peer (its address and port, where this end sends) and its identity.
    public var peer: String, peerID: String
    /// NAT detection (RFC 7296 §2.23): this end is behind a NAT; the peer is (or claims to be, to
    /// get ESP in UDP): then this end follows the peer to a new address or port.
    public var natLocal: Bool, natRemote: Bool
    /// The CHILD_SAs.
    public var children: [Child]
    /// A CHILD_SA's status.
    public struct Child: Sendable, Codable {
        /// Names, SPIs in/out (hex), algorithm, ESN.
        public var name: String, spiIn: String, spiOut: String, algorithm: String, esn: Bool
        /// Seconds since installed, rekeys so far (generations), whether this end sends with it.
        public var age: Double, rekeys: Int, sending: Bool
        /// Packets and bytes in and out.
        public var packetsIn: UInt64, bytesIn: UInt64, packetsOut: UInt64, bytesOut: UInt64
        /// The selectors.
        public var localTS: String, remoteTS: String
        /// Datagrams of the inbound SA refused, by reason (filled in by the host from its dataplane).
        public var dropsIn: [String: UInt64]? = nil
    }
}

extension IKEEngine {
    /// Runs IKE_SA_INIT and IKE_AUTH between two engines in memory (no sockets; both ends on this
    /// machine): the messages exchanged and each end's first CHILD_SA, nil when they did not agree.
    /// For the demo and tests; a live gateway uses ``IKEDaemon``.
    public static func negotiateInMemory(initiator a: IKEEngine, responder b: IKEEngine) -> (messages: Int, initiator: IKEChildSA, responder: IKEChildSA)? {
        guard let ca = a.connections.first, let cb = b.connections.first else { return nil }
        let pathAtB = IKEPath(localPort: 4500, remote: ca.localAddress, remotePort: 4500)
        let pathAtA = IKEPath(localPort: 4500, remote: cb.localAddress, remotePort: 4500)
        var inFlight = a.initiate(ca, now: 0).map { ($0.bytes, true) }
        var messages = 0
        while !inFlight.isEmpty && messages < 32 {
            let (bytes, toB) = inFlight.removeFirst()
            messages += 1
            inFlight += (toB ? b.receive(bytes, path: pathAtB, now: 0) : a.receive(bytes, path: pathAtA, now: 0)).map { ($0.bytes, !toB) }
        }
        // The responder may serve other peers already (a hub): its CHILD_SA is the one paired with the initiator's.
        guard let x = a.childSAs.first, let y = b.childSAs.first(where: { $0.inbound == x.outbound }), x.inbound == y.outbound else { return nil }
        return (messages, x, y)
    }
}

// MARK: fuzzing

/// For fuzzing only (the fuzz targets are another package and see public API alone): what an
/// IKE SA's message IDs are. Not for use by a gateway.
public struct _IKEFuzzView: Sendable, Equatable {
    /// This end's SPI and the peer's.
    public var localSPI: UInt64, remoteSPI: UInt64
    /// Whether it is established (not half-open, rekeyed or dead).
    public var established: Bool
    /// The ID of this end's next request, and of the peer's next request this end takes.
    public var nextRequestID: UInt32, expectedRequestID: UInt32
    /// The ID of this end's request awaiting an answer.
    public var outstandingID: UInt32?
}

extension IKEEngine {
    /// For fuzzing only, never on a gateway (it makes nonces and SPIs predictable): nonces, SPIs
    /// and jitter from HMAC-SHA-256(seed, counter) blocks, so that a fuzz input runs the same way
    /// each time. The key exchange's keys stay libcrypto's (random; no path depends on them).
    public func _fuzzSeedRandom(_ seed: UInt64) {
        var counter: UInt64 = 0, pool: [UInt8] = []
        let key = bigEndianBytes(seed)
        randomSource = { count in
            while pool.count < count {
                counter += 1
                pool += IKEPRF.hmacSHA256(key, bigEndianBytes(counter))
            }
            defer { pool.removeFirst(count) }
            return Array(pool.prefix(count))
        }
    }

    /// For fuzzing only: every IKE SA's message IDs, oldest first.
    public func _fuzzViews() -> [_IKEFuzzView] {
        sas.values.sorted { ($0.created, $0.localSPI) < ($1.created, $1.localSPI) }.map {
            _IKEFuzzView(localSPI: $0.localSPI, remoteSPI: $0.remoteSPI, established: $0.state == .established,
                         nextRequestID: $0.nextRequestID, expectedRequestID: $0.expectedRequestID, outstandingID: $0.outstanding?.id)
        }
    }

    /// For fuzzing only: `payloads` sealed in an SK payload with the keys of this end's IKE SA
    /// `localSPI`, as a request or response of `exchange` with message ID `id` (the SA's state is
    /// not changed, but for the IV counter). nil when that SA has no keys.
    public func _fuzzSeal(localSPI: UInt64, _ exchange: IKEExchange, response: Bool, id: UInt32, payloads: [IKEPayload]) -> [UInt8]? {
        guard let sa = sas[localSPI], let cipher = sa.cipher else { return nil }
        return cipher.seal(header: sa.header(exchange, response: response, id: id), payloads: payloads)
    }
}
