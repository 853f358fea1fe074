import OffloadWire
/// One data direction of a TCP connection, as one capture saw it.
public struct FlowAnalysis: Codable, Sendable, Hashable {
    /// A stall: no new data for at least the threshold while data was outstanding.
    public struct Stall: Codable, Sendable, Hashable {
        /// When the last new data before it was seen, seconds from the capture's start.
        public var start: Double
        /// When new data came again (or the capture ended), seconds from the capture's start.
        public var end: Double
        /// The packet numbers around it.
        public var lastPacketBefore: Int, firstPacketAfter: Int?
        /// What came just before it and what ended it.
        public var context: StallContext
        /// Its length in milliseconds.
        public var milliseconds: Int { Int(((end - start) * 1000).rounded()) }
    }

    /// Retransmissions by kind.
    public struct Retransmissions: Codable, Sendable, Hashable {
        /// After three duplicate ACKs or a SACK: fast retransmit.
        public var fast = 0
        /// After a silence of at least the stall threshold: the retransmission timer.
        public var timeout = 0
        /// Right after an ICMP path-MTU message: the sender re-sending smaller.
        public var afterPathMTU = 0
        /// Anything else (tail loss probes, go-back-N after a timeout).
        public var other = 0
        /// All of them.
        public var total: Int { fast + timeout + afterPathMTU + other }
    }

    /// The direction, as text.
    public var flow: String
    /// The direction.
    var key: FlowKey
    /// Which capture.
    public var capture: Int
    /// Data packets (with payload).
    public var dataPackets = 0
    /// New payload bytes (retransmissions not counted twice).
    public var bytes = 0
    /// Payload bytes the receiver acknowledged, as its ACKs in this capture say (nil when the
    /// capture holds none): what was delivered, wherever the capture was taken.
    public var acknowledgedBytes: Int?
    /// First and last data packet times, seconds from the capture's start.
    public var firstTime = 0.0, lastTime = 0.0
    /// Goodput over the flow's own life, Mbit/s.
    public var goodputMbps = 0.0
    /// Goodput per bin of ``binSeconds``, from the capture's start, Mbit/s.
    public var timelineMbps: [Double] = []
    /// The timeline's bin length.
    public var binSeconds = 0.1
    /// Retransmissions.
    public var retransmissions = Retransmissions()
    /// Stalls of at least the threshold.
    public var stalls: [Stall] = []
    /// The SYN's options: MSS, window scale (each direction), SACK permitted by both.
    public var mss: Int?, windowScale: Int?, peerWindowScale: Int?, sackPermitted: Bool?
    /// Whether SACK blocks were seen from the receiver.
    public var sackBlocksSeen = false
    /// Share of data packets with DF set.
    public var dontFragmentShare = 0.0
    /// The largest data packet (IP length).
    public var largestPacket = 0
    /// Data packets longer than the capture's MTU.
    public var overMTU = 0
    /// Path-MTU messages about this direction (mtu, quoted length, time).
    public var pathMTUMessages: [PathMTUEvent] = []
    /// The largest data packet sent after the first path-MTU message.
    public var largestAfterPathMTU: Int?
    /// How long after the first path-MTU message the sender still sent a packet larger than the
    /// MTU it announced, seconds (nil: never). Packets already in flight take an RTT to stop.
    public var oversizeAfterPathMTUSeconds: Double?
    /// Whether the receiver ever advertised a zero window.
    public var zeroWindowSeen = false

    /// For the time–sequence graph: (seconds, relative sequence) of each data packet's end, and
    /// which were retransmissions.
    var sequencePoints: [(time: Double, sequence: Double, retransmission: Bool)] = []

    enum CodingKeys: String, CodingKey {
        case flow, key, capture, dataPackets, bytes, acknowledgedBytes, firstTime, lastTime, goodputMbps, timelineMbps, binSeconds,
             retransmissions, stalls, mss, windowScale, peerWindowScale, sackPermitted, sackBlocksSeen,
             dontFragmentShare, largestPacket, overMTU, pathMTUMessages, largestAfterPathMTU, oversizeAfterPathMTUSeconds,
             zeroWindowSeen
    }

    init(key: FlowKey, capture: Int) {
        self.key = key
        self.capture = capture
        flow = key.description
    }

    /// Equal when the reported fields are.
    public static func == (a: Self, b: Self) -> Bool { a.flow == b.flow && a.capture == b.capture && a.bytes == b.bytes }
    /// Hashes the identity.
    public func hash(into h: inout Hasher) {
        h.combine(flow)
        h.combine(capture)
    }
}

/// What came just before a stall and what ended it.
public struct StallContext: Codable, Sendable, Hashable {
    /// An ICMP path-MTU message seen just before or during it.
    public var pathMTUMessage: PathMTUEvent?
    /// Whether the receiver advertised a zero window at some point (flow control).
    public var zeroWindowSeen = false
    /// Duplicate ACKs just before it (0 when fewer than 3).
    public var duplicateAcks = 0
    /// Whether a retransmission ended it (the retransmission timer).
    public var endedByRetransmission = false
    /// Whether it lasted until the capture ended.
    public var lastedUntilCaptureEnd = false
}

/// An ICMP "fragmentation needed" / "packet too big" about a flow.
public struct PathMTUEvent: Codable, Sendable, Hashable {
    /// Seconds from the capture's start.
    public var time: Double
    /// The packet number.
    public var packet: Int
    /// The announced MTU.
    public var mtu: Int
    /// The quoted packet's length.
    public var quotedLength: Int
}

/// Works out every data direction in one capture.
struct FlowAnalyzer {
    let stallThreshold: Double
    let mtu: Int

    func analyze(_ packets: [PacketSummary], capture: Int, start: Double, end: Double) -> [FlowAnalysis] {
        // Which directions carry data, and the SYN options of every direction.
        var carriesData = Set<FlowKey>()
        var synOptions: [FlowKey: TCPSummary] = [:]
        for p in packets {
            guard let t = p.tcp else { continue }
            if t.payloadLength > 0 { carriesData.insert(t.flow) }
            if t.flags.contains(.syn) { synOptions[t.flow] = t }
        }
        var pathMTU: [FlowKey: [PathMTUEvent]] = [:]
        for p in packets {
            if let m = p.pathMTU, let f = m.quotedFlow {
                pathMTU[f, default: []].append(
                    PathMTUEvent(time: p.time - start, packet: p.number, mtu: m.mtu, quotedLength: m.quotedLength))
            }
        }
        var states: [FlowKey: FlowState] = [:]
        for key in carriesData {
            var a = FlowAnalysis(key: key, capture: capture)
            a.mss = synOptions[key]?.mss
            a.windowScale = synOptions[key]?.windowScale
            a.peerWindowScale = synOptions[key.reversed]?.windowScale
            if let mine = synOptions[key], let theirs = synOptions[key.reversed] {
                a.sackPermitted = mine.sackPermitted && theirs.sackPermitted
            }
            a.pathMTUMessages = pathMTU[key] ?? []
            // 100 ms bins, or coarser so that a long capture (or one with wild timestamps) stays at
            // most 2000 bins.
            let span = max(end - start, 0)
            a.binSeconds = span >= 2 ? max(0.1, span / 2000) : max(span / 20, 0.001)
            a.timelineMbps = Array(repeating: 0, count: Int(((end - start) / a.binSeconds).rounded(.up)) + 1)
            states[key] = FlowState(analysis: a)
        }
        for p in packets {
            guard let t = p.tcp else {
                if let m = p.pathMTU, let f = m.quotedFlow { states[f]?.lastPathMTU = p.time }
                continue
            }
            if states[t.flow] != nil {
                states[t.flow]!.data(p, t, start: start, threshold: stallThreshold, mtu: mtu)
            }
            if states[t.flow.reversed] != nil {
                states[t.flow.reversed]!.ack(t, time: p.time - start)
            }
        }
        return states.values.map { state in
            var s = state
            s.finish(start: start, end: end, threshold: stallThreshold)
            return s.analysis
        }.sorted { ($0.capture, $0.key) < ($1.capture, $1.key) }
    }
}

/// The running state of one data direction.
struct FlowState {
    var analysis: FlowAnalysis
    var initialSequence: UInt32?
    var highestEnd: UInt32 = 0
    var lastNewData: (time: Double, number: Int)?
    var lastData: Double?
    var highestAck: UInt32?
    /// When the receiver had acknowledged everything sent (nil while data is outstanding).
    var allAckedAt: Double?
    var duplicateAcks = 0
    var lastAckWindow: UInt16 = 0
    var sackActive = false
    var inTimeoutRecovery = false
    var lastPathMTU: Double?
    var dfCount = 0
    var finished = false

    mutating func data(_ p: PacketSummary, _ t: TCPSummary, start: Double, threshold: Double, mtu: Int) {
        if t.flags.contains(.syn) { initialSequence = t.sequence &+ 1; highestEnd = t.sequence &+ 1 }
        if t.flags.contains(.fin) || t.flags.contains(.rst) { finished = true }
        guard t.payloadLength > 0 else { return }
        if initialSequence == nil { initialSequence = t.sequence; highestEnd = t.sequence }
        let isn = initialSequence!
        let end = t.sequence &+ UInt32(truncatingIfNeeded: t.payloadLength)
        let time = p.time - start
        analysis.dataPackets += 1
        if p.dontFragment { dfCount += 1 }
        analysis.largestPacket = max(analysis.largestPacket, p.ipLength)
        if p.ipLength > mtu { analysis.overMTU += 1 }
        if let first = analysis.pathMTUMessages.first, time >= first.time {
            analysis.largestAfterPathMTU = max(analysis.largestAfterPathMTU ?? 0, p.ipLength)
            if p.ipLength > first.mtu { analysis.oversizeAfterPathMTUSeconds = time - first.time }
        }
        if analysis.dataPackets == 1 { analysis.firstTime = time }
        analysis.lastTime = time
        let isNew = seqGreater(end, highestEnd)
        if isNew {
            let newBytes = Int(end &- (seqGreater(t.sequence, highestEnd) ? t.sequence : highestEnd))
            analysis.bytes += newBytes
            let bin = min(max(0, Int(time / analysis.binSeconds)), analysis.timelineMbps.count - 1)
            analysis.timelineMbps[bin] += Double(newBytes) * 8 / analysis.binSeconds / 1e6
            // A stall: the silence lasted the threshold while data was unacknowledged (a sender
            // with nothing to send is idle, not stalled).
            if let last = lastNewData, min(allAckedAt ?? time, time) - last.time >= threshold {
                analysis.stalls.append(FlowAnalysis.Stall(
                    start: last.time, end: time, lastPacketBefore: last.number, firstPacketAfter: p.number,
                    context: context(from: last.time, to: time)))
            }
            highestEnd = end
            allAckedAt = nil
            lastNewData = (time, p.number)
            inTimeoutRecovery = false
        } else {
            // A retransmission: classify by what came before it.
            if let last = lastData, time - last >= threshold {
                analysis.retransmissions.timeout += 1
                inTimeoutRecovery = true
            } else if let icmp = lastPathMTU, p.time - icmp < 1 {
                analysis.retransmissions.afterPathMTU += 1
            } else if inTimeoutRecovery {
                analysis.retransmissions.timeout += 1
            } else if duplicateAcks >= 3 || sackActive {
                analysis.retransmissions.fast += 1
            } else {
                analysis.retransmissions.other += 1
            }
        }
        lastData = time
        analysis.sequencePoints.append((time, Double(end &- isn), !isNew))
    }

    /// Whether data is unacknowledged (true when the capture holds no ACKs for this direction).
    var outstanding: Bool { highestAck.map { seqGreater(highestEnd, $0) } ?? true }

    mutating func ack(_ t: TCPSummary, time: Double) {
        guard t.flags.contains(.ack) else { return }
        defer { if !outstanding, highestAck != nil, allAckedAt == nil { allAckedAt = time } }
        if t.window == 0 && !t.flags.contains(.rst) { analysis.zeroWindowSeen = true }
        if t.hasSACKBlocks {
            analysis.sackBlocksSeen = true
            sackActive = true
        }
        if let h = highestAck, t.acknowledgment == h, t.payloadLength == 0, !t.flags.contains(.syn),
            !t.flags.contains(.fin), t.window == lastAckWindow
        {
            duplicateAcks += 1
        } else if highestAck.map({ seqGreater(t.acknowledgment, $0) }) ?? true {
            highestAck = t.acknowledgment
            duplicateAcks = 0
            if !t.hasSACKBlocks { sackActive = false }
        }
        lastAckWindow = t.window
    }

    func context(from: Double, to: Double) -> StallContext {
        StallContext(pathMTUMessage: analysis.pathMTUMessages.first { $0.time >= from - 0.05 && $0.time <= to },
                     zeroWindowSeen: analysis.zeroWindowSeen, duplicateAcks: duplicateAcks >= 3 ? duplicateAcks : 0)
    }

    mutating func finish(start: Double, end: Double, threshold: Double) {
        let a = analysis
        if let last = lastNewData, !finished, min(allAckedAt ?? (end - start), end - start) - last.time >= threshold,
            highestAck != nil
        {
            analysis.stalls.append(FlowAnalysis.Stall(
                start: last.time, end: end - start, lastPacketBefore: last.number, firstPacketAfter: nil,
                context: { var c = context(from: last.time, to: end - start); c.lastedUntilCaptureEnd = true; return c }()))
        }
        // Stalls ended by a retransmission after the silence were timeouts.
        for i in analysis.stalls.indices where analysis.stalls[i].firstPacketAfter != nil {
            let s = analysis.stalls[i]
            let retransmittedInside = analysis.sequencePoints.contains { $0.retransmission && $0.time > s.start && $0.time <= s.end }
            if retransmittedInside { analysis.stalls[i].context.endedByRetransmission = true }
        }
        if let ack = highestAck, let isn = initialSequence {
            // A FIN takes one sequence number: never more than the payload seen.
            analysis.acknowledgedBytes = max(0, min(Int(Int32(bitPattern: ack &- isn)), a.bytes))
        }
        let life = max(a.lastTime - a.firstTime, 1e-6)
        analysis.goodputMbps = Double(a.bytes) * 8 / life / 1e6
        analysis.dontFragmentShare = a.dataPackets > 0 ? Double(dfCount) / Double(a.dataPackets) : 0
    }
}
