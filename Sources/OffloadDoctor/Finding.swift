import OffloadWire

/// What the doctor found: a kind, how much it matters, and the numbers that decided it. The words
/// people read are made from these by ``DoctorPresentation``; tests and `--json` users read the values.
public struct Finding: Codable, Sendable, Hashable {
    /// How much it matters.
    public enum Severity: String, Codable, Sendable, Comparable {
        case critical, warning, info
        var rank: Int { self == .critical ? 0 : self == .warning ? 1 : 2 }
        /// Most severe first.
        public static func < (a: Self, b: Self) -> Bool { a.rank < b.rank }
    }

    /// What was found. The raw values are the stable names `--json` prints.
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// ICMP path-MTU errors quote packets larger than anything the sender sent: a merge on the path.
        case pmtuBlackHoleMerging = "pmtu-black-hole-merging"
        /// The sender keeps sending packets larger than the MTU it was told.
        case pmtuIgnored = "pmtu-ignored"
        /// Path-MTU discovery worked.
        case pmtuWorking = "pmtu-working"
        /// A forwarder sent ACKs that did not come in.
        case ackEmitted = "ack-emitted"
        /// Every ACK a forwarder sent came in unchanged.
        case ackIntact = "ack-intact"
        /// No new data for a while with data outstanding.
        case stall
        /// Retransmissions, by cause.
        case retransmissions
        /// Data went into a forwarder and did not come out.
        case forwarderDropped = "forwarder-dropped"
        /// What a forwarder merged and how long it held data.
        case forwarderMerged = "forwarder-merged"
        /// The bulk flows do not share fairly.
        case unfair
        /// The bulk flows share fairly.
        case fair
        /// Packets larger than the MTU, and where the capture was taken.
        case superPackets = "super-packets"
        /// The flows of one capture.
        case flows
    }

    /// Where a capture with super-packets was taken, told from the receiver's ACKs.
    public enum CapturePoint: String, Codable, Sendable {
        /// ACKs land on super-packet ends: GRO/LRO merged before the capture (the receiver's view).
        case afterMerge = "after-merge"
        /// ACKs land inside super-packets: TSO/GSO splits after the capture (the sender's view).
        case beforeSegmentation = "before-segmentation"
        /// Too few ACKs, or mixed.
        case unclear
    }

    /// The path-MTU messages about a flow and what the sender did after them.
    public struct PathMTUEvidence: Codable, Sendable, Hashable {
        /// How many messages.
        public var messages: Int
        /// The first one.
        public var first: PathMTUEvent
        /// The smallest MTU announced.
        public var announcedMTU: Int
        /// The smallest and largest quoted packet.
        public var quotedSmallest: Int, quotedLargest: Int
        /// The largest data packet after the first message, and in the whole capture.
        public var largestAfter: Int?, largestSent: Int
        /// How long after the first message a packet larger than the MTU was still sent, milliseconds.
        public var oversizeAfterMilliseconds: Int?
        /// Stalls in the flow, and its goodput.
        public var stalls: Int, goodputMbps: Double
    }

    /// The stalls of a flow.
    public struct StallEvidence: Codable, Sendable, Hashable {
        /// All of them, in time order.
        public var stalls: [FlowAnalysis.Stall]
        /// The longest.
        public var longest: FlowAnalysis.Stall
    }

    /// Fairness over the bulk flows of the first capture.
    public struct FairnessEvidence: Codable, Sendable, Hashable {
        /// Each bulk flow and its goodput, Mbit/s.
        public var flows: [String], goodputMbps: [Double]
        /// Jain's index.
        public var jainIndex: Double
        /// Flows under 10% of a fair share.
        public var starved: Int
    }

    /// Super-packets in one flow of a capture.
    public struct SuperPacketEvidence: Codable, Sendable, Hashable {
        /// Data packets larger than the MTU, of all data packets.
        public var overMTU: Int, dataPackets: Int
        /// The MTU, and whether it was inferred from the frames.
        public var mtu: Int, mtuInferred: Bool
        /// The largest packet and the first oversize one.
        public var largest: Int, firstPacket: Int
        /// Receiver ACKs exactly at a super-packet's end, and inside one.
        public var acksAtEnd: Int, acksInside: Int
        /// What the ACKs say about where the capture was taken.
        public var capturePoint: CapturePoint
    }

    /// The values behind a finding.
    public enum Evidence: Codable, Sendable, Hashable {
        /// ``Kind/pmtuBlackHoleMerging``, ``Kind/pmtuIgnored``, ``Kind/pmtuWorking``.
        case pathMTU(PathMTUEvidence)
        /// ``Kind/stall``.
        case stalls(StallEvidence)
        /// ``Kind/retransmissions``: by cause, of this many data packets.
        case retransmissions(FlowAnalysis.Retransmissions, dataPackets: Int)
        /// ``Kind/fair``, ``Kind/unfair``.
        case fairness(FairnessEvidence)
        /// ``Kind/ackEmitted``, ``Kind/ackIntact``, ``Kind/forwarderDropped``, ``Kind/forwarderMerged``.
        case forwarder(ForwarderComparison)
        /// ``Kind/superPackets``.
        case superPackets(SuperPacketEvidence)
        /// ``Kind/flows``: the capture's flows are in ``Diagnosis/flows``.
        case flows(count: Int)
    }

    /// How much it matters.
    public var severity: Severity
    /// What was found.
    public var kind: Kind
    /// The numbers that decided it.
    public var evidence: Evidence
    /// The capture it is about (index into ``Diagnosis/captures``), if one.
    public var capture: Int?
    /// The flow it is about, if one.
    public var flow: String?
}
