import OffloadWire
import OffloadCapture

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
        /// Two consecutive captures share no TCP connection: nothing to say about a forwarder between them.
        case noSharedFlows = "no-shared-flows"
    }

    /// Where a capture with super-packets was taken: from the direction the capture records when it
    /// does, else from the receiver's ACKs and the handshake.
    public enum CapturePoint: String, Codable, Sendable {
        /// GRO/LRO merged before the capture (the receiver's view): the handshake shows the capture
        /// next to the receiver, and its ACKs land on super-packet ends.
        case afterMerge = "after-merge"
        /// TSO/GSO splits after the capture (the sender's view): the receiver's ACKs land inside
        /// super-packets, or the handshake shows the capture next to the sender.
        case beforeSegmentation = "before-segmentation"
        /// Not enough evidence. ACKs on super-packet ends alone do not tell: a receiver's GRO shows
        /// them, and so does a sender's TSO over a virtual link (a veth hands TSO packets over whole).
        case unknown
    }

    /// Which end of a connection a capture point is next to, from the handshake: each end answers
    /// its peer at once, the other end's answer takes a round trip to come back.
    public struct HandshakeTiming: Codable, Sendable, Hashable {
        /// Which end.
        public enum Side: String, Codable, Sendable {
            /// The data sender's end answered at once, the receiver's took a round trip.
            case sender
            /// The receiver's end answered at once, the sender's took a round trip.
            case receiver
            /// The two turnarounds are too alike to tell.
            case unknown
        }

        /// Microseconds between the data receiver's handshake packet and the sender's answer to it
        /// (SYN-ACK → ACK when the sender connected, SYN → SYN-ACK when it accepted).
        public var senderTurnaroundMicroseconds: Double
        /// Microseconds between the sender's handshake packet and the receiver's answer.
        public var receiverTurnaroundMicroseconds: Double
        /// Which end the capture point is next to.
        public var side: Side

        /// One turnaround must be this many times the other (and longer by ``minimumDifference``) to tell.
        public static let ratio = 3.0
        /// Microseconds: below this the difference is timestamp noise.
        public static let minimumDifference = 20.0

        /// Decides the side from the two turnarounds.
        public init(senderTurnaroundMicroseconds s: Double, receiverTurnaroundMicroseconds r: Double) {
            senderTurnaroundMicroseconds = s
            receiverTurnaroundMicroseconds = r
            side = r >= Self.ratio * s && r - s >= Self.minimumDifference ? .sender
                : s >= Self.ratio * r && s - r >= Self.minimumDifference ? .receiver : .unknown
        }
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
        /// The bytes each flow delivered (acknowledged by its receiver, or sent when the capture
        /// holds no ACKs), and the interval they were counted over (seconds): the same for every
        /// flow, as in the lab.
        public var bytes: [Int], intervalSeconds: Double
    }

    /// Retransmissions of a flow, by cause.
    public struct RetransmissionEvidence: Codable, Sendable, Hashable {
        /// By cause (see ``FlowAnalysis/Retransmissions``).
        public var fast: Int, timeout: Int, afterPathMTU: Int, other: Int
        /// All of them, and the flow's data packets.
        public var total: Int, dataPackets: Int

        /// Retransmissions per 100 data packets.
        public var percent: Double { Double(total) / Double(max(dataPackets, 1)) * 100 }

        /// From a flow's counts.
        public init(_ r: FlowAnalysis.Retransmissions, dataPackets: Int) {
            (fast, timeout, afterPathMTU, other, total) = (r.fast, r.timeout, r.afterPathMTU, r.other, r.total)
            self.dataPackets = dataPackets
        }
    }

    /// Two consecutive captures that share no TCP connection.
    public struct UnmatchedEvidence: Codable, Sendable, Hashable {
        /// The captures.
        public var first: Int, second: Int
        /// TCP connections in each.
        public var connectionsFirst: Int, connectionsSecond: Int
        /// The IP versions of each capture's connections (4, 6).
        public var familiesFirst: [Int], familiesSecond: [Int]
        /// One capture is IPv4 only and the other IPv6 only, and no translator mapping was given:
        /// `--pool6`/`--eam` would let the doctor follow flows across the translator.
        public var translatorMappingMissing: Bool
        /// A translator mapping was given and still nothing matched.
        public var translatorMappingGiven: Bool
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
        /// The handshake's turnarounds, when the capture holds one for this flow.
        public var handshake: HandshakeTiming?
        /// Which way the super-packets went through the capturing interface, when the capture
        /// records it (pcapng `epb_flags`, Linux cooked captures): decisive when present.
        public var recordedDirection: PacketDirection?
        /// What the ACKs and the handshake say about where the capture was taken.
        public var capturePoint: CapturePoint
    }

    /// The values behind a finding.
    public enum Evidence: Codable, Sendable, Hashable {
        /// ``Kind/pmtuBlackHoleMerging``, ``Kind/pmtuIgnored``, ``Kind/pmtuWorking``.
        case pathMTU(PathMTUEvidence)
        /// ``Kind/stall``.
        case stalls(StallEvidence)
        /// ``Kind/retransmissions``.
        case retransmissions(RetransmissionEvidence)
        /// ``Kind/fair``, ``Kind/unfair``.
        case fairness(FairnessEvidence)
        /// ``Kind/ackEmitted``, ``Kind/ackIntact``, ``Kind/forwarderDropped``, ``Kind/forwarderMerged``.
        case forwarder(ForwarderComparison)
        /// ``Kind/superPackets``.
        case superPackets(SuperPacketEvidence)
        /// ``Kind/flows``: how many; the capture's flows are in ``Diagnosis/flows``.
        case flows(Int)
        /// ``Kind/noSharedFlows``.
        case unmatched(UnmatchedEvidence)

        enum CodingKeys: String, CodingKey {
            case pathMTU, stalls, retransmissions, fairness, forwarder, superPackets, flows, unmatched
        }

        /// Encodes as one key naming the kind of evidence, holding its fields (`{"pathMTU": {...}}`).
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            switch self {
            case .pathMTU(let e): try c.encode(e, forKey: .pathMTU)
            case .stalls(let e): try c.encode(e, forKey: .stalls)
            case .retransmissions(let e): try c.encode(e, forKey: .retransmissions)
            case .fairness(let e): try c.encode(e, forKey: .fairness)
            case .forwarder(let e): try c.encode(e, forKey: .forwarder)
            case .superPackets(let e): try c.encode(e, forKey: .superPackets)
            case .flows(let count): try c.encode(["count": count], forKey: .flows)
            case .unmatched(let e): try c.encode(e, forKey: .unmatched)
            }
        }

        /// Decodes what ``encode(to:)`` wrote.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            guard let key = c.allKeys.first else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "no evidence"))
            }
            switch key {
            case .pathMTU: self = .pathMTU(try c.decode(PathMTUEvidence.self, forKey: key))
            case .stalls: self = .stalls(try c.decode(StallEvidence.self, forKey: key))
            case .retransmissions: self = .retransmissions(try c.decode(RetransmissionEvidence.self, forKey: key))
            case .fairness: self = .fairness(try c.decode(FairnessEvidence.self, forKey: key))
            case .forwarder: self = .forwarder(try c.decode(ForwarderComparison.self, forKey: key))
            case .superPackets: self = .superPackets(try c.decode(SuperPacketEvidence.self, forKey: key))
            case .flows: self = .flows(try c.decode([String: Int].self, forKey: key)["count"] ?? 0)
            case .unmatched: self = .unmatched(try c.decode(UnmatchedEvidence.self, forKey: key))
            }
        }
    }

    /// How much it matters.
    public var severity: Severity
    /// What was found.
    public var kind: Kind
    /// The numbers that decided it.
    public var evidence: Evidence
    /// The capture it is about (index into ``Diagnosis/captures``), if one.
    public var capture: Int?
    /// The flows it is about: one, several with the very same evidence (listed once, not once per
    /// flow), or none.
    public var flows: [String]

    /// A finding about one flow or none.
    public init(severity: Severity, kind: Kind, evidence: Evidence, capture: Int?, flow: String?) {
        self.severity = severity
        self.kind = kind
        self.evidence = evidence
        self.capture = capture
        flows = flow.map { [$0] } ?? []
    }
}
