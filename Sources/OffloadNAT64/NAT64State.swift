import Synchronization

/// The state both directions of a NAT64 share: the tables behind one lock, and the ICMP errors the
/// timers made for the IPv4 side (an unsolicited SYN's "port unreachable" at 6 s), which the next
/// stage to see an IPv4 packet sends. Each stage takes the lock once per packet or super-packet.
public final class NAT64State: Sendable {
    /// The configuration.
    public let configuration: NAT64Configuration
    /// The tables.
    let tables: Mutex<NAT64Tables>
    /// IPv4 packets that the timers made, waiting to be sent out of the IPv4 side.
    let pendingToIPv4 = Mutex<[[UInt8]]>([])
    /// Whether a packet is waiting in ``pendingToIPv4`` (read without the lock on the fast path).
    let hasPendingToIPv4 = Atomic<Bool>(false)
    /// Whether a stage already reports the gauges (one does, however many queues there are).
    let gaugesClaimed = Atomic<Bool>(false)

    /// Empty tables with the configuration's static bindings.
    public init(configuration: NAT64Configuration) {
        self.configuration = configuration
        tables = Mutex(NAT64Tables(configuration: configuration))
    }

    /// Runs `body` on the tables, under the lock.
    public func withTables<R>(_ body: (inout NAT64Tables) -> R) -> R {
        tables.withLock { body(&$0) }
    }

    /// Ends what ran out by `now` (at most `limit` sessions): for a thread that keeps the tables
    /// current while no packet comes (the status writer). Returns the sessions deleted.
    @discardableResult
    public func expire(now: UInt64, limit: Int = 4_096) -> Int {
        let expiry = tables.withLock { $0.expire(now: now, limit: limit) }
        queue(expiry.unansweredSYNs)
        return expiry.deleted
    }

    /// The state at `now` (what ran out is ended first), with at most `limit` bindings listed.
    public func snapshot(now: UInt64, limit: Int = 1_000) -> NAT64Snapshot {
        expire(now: now)
        // Under the lock, only what is listed is read; the sort comes after it is released.
        var snapshot = tables.withLock { $0.unsortedSnapshot(now: now, limit: limit) }
        snapshot.sort()
        return snapshot
    }

    /// Keeps unanswered SYNs for the IPv4 side's next stage call.
    func queue(_ syns: [[UInt8]]) {
        guard !syns.isEmpty else { return }
        pendingToIPv4.withLock { $0 += syns }
        hasPendingToIPv4.store(true, ordering: .releasing)
    }

    /// Takes the packets waiting for the IPv4 side.
    func takePendingToIPv4() -> [[UInt8]] {
        guard hasPendingToIPv4.load(ordering: .acquiring) else { return [] }
        return pendingToIPv4.withLock { pending in
            hasPendingToIPv4.store(false, ordering: .releasing)
            defer { pending.removeAll() }
            return pending
        }
    }

    /// True for the first caller only: that stage reports the gauges.
    func claimGauges() -> Bool {
        !gaugesClaimed.exchange(true, ordering: .relaxed)
    }
}
