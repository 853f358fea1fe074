import Foundation
import OffloadReport

/// The five ways the lab forwards traffic through the gateway.
public enum LabScenario: Int, CaseIterable, Codable, Sendable, Comparable {
    /// Kernel forwarding with GRO off on the gateway: the usual "turn offloads off" advice.
    case kernelNoGRO = 1
    /// Kernel forwarding with GRO on.
    case kernelGRO = 2
    /// `offload forward` without virtio headers: no GRO, no GSO.
    case forwarderOffloadsOff = 3
    /// `offload forward` with GRO and GSO.
    case forwarderGRO = 4
    /// `offload forward --mode lro`: the greedy merge that loses the segment size.
    case forwarderLRO = 5
    /// Tayga translating an IPv6-only client's traffic to an IPv4-only server (when installed).
    case tayga = 6
    /// `offload siit` without virtio headers: the translator with no offloads.
    case translatorOffloadsOff = 7
    /// `offload siit` with GRO and GSO.
    case translatorGRO = 8
    /// The kernel's VXLAN between two gateways over an underlay (the tunnel rows' yardstick).
    case kernelVXLAN = 9
    /// `offload tunnel` (GTP-U) on both gateways, offloads off.
    case tunnelOffloadsOff = 10
    /// `offload tunnel` (GTP-U) on both gateways, GRO and GSO (UDP_SEGMENT, UDP_GRO).
    case tunnelGRO = 11
    /// `offload forward` with GRO and GSO and the kernel's GRO on the gateway's ingress (what
    /// `--setup` does by default): the kernel merges first, the forwarder reads super-packets.
    case forwarderKernelGRO = 12
    /// `offload ipsec` (ESP in UDP, AES-GCM-128, keys made for the row) on both gateways, offloads off.
    case ipsecOffloadsOff = 13
    /// `offload ipsec` with GRO and GSO on both sides.
    case ipsecGRO = 14
    /// The seed (``LabSeed``): strongSwan's charon with kernel-libipsec on both gateways, four
    /// CHILD_SAs, one TCP download each, links shaped to 1 Gbit/s.
    case seedStrongSwan = 15
    /// The seed with `offload ipsec` on both gateways, four tunnels, offloads off.
    case seedIPsecOffloadsOff = 16
    /// The seed with `offload ipsec`, GRO and GSO on both sides.
    case seedIPsecGRO = 17
    /// The seed with `offload ipsec --mode lro`: the greedy merge, which keeps no segment size, so
    /// the gateway cannot make the forwarding MTU decision per original segment.
    case seedIPsecLRO = 18
    /// Stateful NAT64 as Debian builds it without Jool: Tayga with a dynamic pool, and the kernel's
    /// NAT44 (`nft … masquerade`) behind it (when Tayga is installed).
    case taygaNAT44 = 19
    /// `offload nat64` (stateful, RFC 6146) without virtio headers: no offloads.
    case nat64OffloadsOff = 20
    /// `offload nat64` with GRO and GSO.
    case nat64GRO = 21

    /// A short name for the table.
    public var name: String {
        switch self {
        case .kernelNoGRO: "kernel, GRO off"
        case .kernelGRO: "kernel, GRO on"
        case .forwarderOffloadsOff: "offload, offloads off"
        case .forwarderGRO: "offload, GRO+GSO"
        case .forwarderLRO: "offload --mode lro"
        case .tayga: "tayga, v6→v4"
        case .translatorOffloadsOff: "siit, offloads off, v6→v4"
        case .translatorGRO: "siit, GRO+GSO, v6→v4"
        case .kernelVXLAN: "kernel VXLAN tunnel"
        case .tunnelOffloadsOff: "GTP-U tunnel, offloads off"
        case .tunnelGRO: "GTP-U tunnel, GRO+GSO"
        case .forwarderKernelGRO: "offload, kernel GRO+GSO"
        case .ipsecOffloadsOff: "ESP tunnel, offloads off"
        case .ipsecGRO: "ESP tunnel, GRO+GSO"
        case .seedStrongSwan: "seed: strongSwan (libipsec)"
        case .seedIPsecOffloadsOff: "seed: ESP, offloads off"
        case .seedIPsecGRO: "seed: ESP, GRO+GSO"
        case .seedIPsecLRO: "seed: ESP, greedy merge (lro)"
        case .taygaNAT44: "tayga + NAT44, v6→v4"
        case .nat64OffloadsOff: "nat64, offloads off, v6→v4"
        case .nat64GRO: "nat64, GRO+GSO, v6→v4"
        }
    }

    /// Whether `offload forward` runs on the gateway.
    public var usesForwarder: Bool { (3...5).contains(rawValue) || self == .forwarderKernelGRO }

    /// Whether a translator runs on the gateway between an IPv6-only client and an IPv4-only server
    /// (such a row runs once per MTU, whatever the families asked for).
    public var isTranslator: Bool { (6...8).contains(rawValue) || isNAT64Row }

    /// Whether the row is one of the stateful NAT64 rows (19-21).
    public var isNAT64Row: Bool { (19...21).contains(rawValue) }

    /// Whether `offload nat64` runs on the gateway.
    public var usesNAT64: Bool { (20...21).contains(rawValue) }

    /// The stateful NAT64 rows.
    public static let nat64: [LabScenario] = [.kernelGRO, .taygaNAT44, .nat64OffloadsOff, .nat64GRO]

    /// Whether `offload siit` runs on the gateway.
    public var usesTranslator: Bool { (7...8).contains(rawValue) }

    /// Whether the row is a tunnel between two gateways (IPv4, once per MTU; the MTU is the underlay's).
    public var isTunnel: Bool { (9...11).contains(rawValue) || isIPsec || isSeed }

    /// Whether the row is `offload ipsec` between the two gateways.
    public var isIPsec: Bool { (13...14).contains(rawValue) || (16...18).contains(rawValue) }

    /// Whether the row is the seed scenario's (``LabSeed``: four tunnels, one download each, 1 Gbit/s links).
    public var isSeed: Bool { (15...18).contains(rawValue) }

    /// The seed scenario's rows.
    public static let seed: [LabScenario] = [.seedStrongSwan, .seedIPsecOffloadsOff, .seedIPsecGRO, .seedIPsecLRO]

    /// Whether the row runs once per MTU whatever the families asked for.
    public var runsOnce: Bool { isTranslator || isTunnel }

    /// The forwarder's extra arguments.
    var forwarderArguments: [String] {
        switch self {
        // The forwarder rows 3-5 keep the gateway's GRO off (userspace GRO alone); row 12 lets
        // --setup turn it on.
        case .forwarderOffloadsOff: ["--no-vnet-hdr", "--keep-ingress-gro"]
        case .forwarderGRO: ["--keep-ingress-gro"]
        case .translatorOffloadsOff, .tunnelOffloadsOff, .ipsecOffloadsOff, .seedIPsecOffloadsOff, .nat64OffloadsOff: ["--no-vnet-hdr"]
        case .seedIPsecLRO: ["--mode", "lro"]
        case .forwarderLRO: ["--mode", "lro", "--keep-ingress-gro"]
        default: []
        }
    }

    /// Orders by number.
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// One TCP connection's results in one scenario.
public struct LabFlowResult: Codable, Sendable, Hashable {
    /// Goodput the receiver saw over the whole test, in Mbit/s.
    public var goodputMbps: Double
    /// Segments the sender's kernel retransmitted.
    public var retransmits: Int
    /// The longest time the receiver got no new data, in milliseconds (0 when it never paused
    /// for a whole interval).
    public var longestStallMilliseconds: Int
    /// Goodput per interval, in Mbit/s, as the receiver saw it.
    public var timelineMbps: [Double]

    /// Creates a flow result.
    public init(goodputMbps: Double, retransmits: Int, longestStallMilliseconds: Int, timelineMbps: [Double]) {
        self.goodputMbps = goodputMbps
        self.retransmits = retransmits
        self.longestStallMilliseconds = longestStallMilliseconds
        self.timelineMbps = timelineMbps
    }
}

/// One row of the lab's table: one scenario, one MTU setting, one address family.
public struct LabRow: Codable, Sendable, Hashable {
    /// Which scenario.
    public var scenario: LabScenario
    /// Its name.
    public var name: String
    /// 4 or 6.
    public var family: Int
    /// The MTU of the links towards the gateway.
    public var ingressMTU: Int
    /// The MTU of the gateway's egress link.
    public var egressMTU: Int
    /// Per-connection results, in connection order.
    public var flows: [LabFlowResult]
    /// The sum of the flows' goodput, Mbit/s.
    public var totalGoodputMbps: Double
    /// Jain's fairness index over the flows' goodput: 1 is fair, 1/n is one flow taking all.
    public var jainIndex: Double
    /// Retransmissions over all flows.
    public var retransmits: Int
    /// The longest stall of any flow, milliseconds.
    public var longestStallMilliseconds: Int
    /// The length of one timeline interval, seconds.
    public var intervalSeconds: Double
    /// The forwarder's mean segments per super-packet towards the server (forwarder scenarios).
    public var segmentsPerSuperPacket: Double?
    /// ICMP errors the forwarder sent (forwarder scenarios).
    public var icmpSent: Int?
    /// Packets the forwarder dropped or could not forward (forwarder scenarios).
    public var forwarderDropped: Int?
    /// Captures of this row, when the lab was asked for them: the gateway's LAN side, then its WAN
    /// side.
    public var captures: [String]?
    /// Packets the captures lost (tcpdump's "dropped by kernel" and "dropped by interface", both
    /// sides together): a comparison of the two captures counts these as if the forwarder had
    /// dropped them. nil when a tcpdump could not say (killed before its closing counts).
    public var captureDrops: Int?
    /// Packets the kernel dropped at the forwarder's ingress TUN device before the forwarder read them
    /// (its queue of `txqueuelen` packets full).
    public var ingressQueueDrops: Int?
    /// Jain's index over what each flow delivered after the first second (its timeline's later
    /// intervals): fairness once the start-up (slow start, path MTU discovery) is over. nil when the
    /// timelines are shorter than two seconds. A short run whose ``jainIndex`` is low but this is high
    /// was unfair only while the flows started (docs/lab.md).
    public var jainIndexAfterStartUp: Double?
    /// The tunnels (SAs each way) that carried the flows, for the seed's rows: 4, or 1 when this
    /// build's `offload ipsec` selectors cannot name ports.
    public var tunnels: Int?
    /// Bytes each tunnel carried towards the client, as the server's gateway counted them (the
    /// strongSwan row: each CHILD_SA's outbound bytes), in port order: shows which SA a download took.
    public var tunnelBytes: [Int]?
    /// UDP datagrams the decrypting (decapsulating) gateway's kernel dropped for a full socket
    /// buffer during the row (`/proc/net/snmp` Udp RcvbufErrors in its namespace; tunnel rows).
    public var underlayReceiveDrops: Int?
    /// Set when the row could not be measured (the test did not complete).
    public var error: String?

    /// Jain's index over the bytes each flow delivered after the first `seconds` of its timeline, or
    /// nil when a timeline does not go on for at least as long again.
    public func jainIndex(after seconds: Double) -> Double? {
        guard !flows.isEmpty, intervalSeconds > 0 else { return nil }
        let skip = Int((seconds / intervalSeconds).rounded())
        guard skip > 0, flows.allSatisfy({ $0.timelineMbps.count >= 2 * skip }) else { return nil }
        return OffloadReport.jainIndex(flows.map { $0.timelineMbps.dropFirst(skip).reduce(0, +) })
    }

    /// The flows' fairness over the test (iperf3's goodput is over the same interval for every
    /// flow): the definition `offload doctor` uses on the row's captures.
    public var fairness: Fairness { Fairness(shares: flows.map(\.goodputMbps)) }

    /// Creates a row.
    public init(scenario: LabScenario, name: String, family: Int, ingressMTU: Int, egressMTU: Int, flows: [LabFlowResult],
                totalGoodputMbps: Double, jainIndex: Double, retransmits: Int, longestStallMilliseconds: Int,
                intervalSeconds: Double, segmentsPerSuperPacket: Double? = nil, icmpSent: Int? = nil,
                forwarderDropped: Int? = nil, captures: [String]? = nil, error: String? = nil) {
        self.scenario = scenario
        self.name = name
        self.family = family
        self.ingressMTU = ingressMTU
        self.egressMTU = egressMTU
        self.flows = flows
        self.totalGoodputMbps = totalGoodputMbps
        self.jainIndex = jainIndex
        self.retransmits = retransmits
        self.longestStallMilliseconds = longestStallMilliseconds
        self.intervalSeconds = intervalSeconds
        self.segmentsPerSuperPacket = segmentsPerSuperPacket
        self.icmpSent = icmpSent
        self.forwarderDropped = forwarderDropped
        self.captures = captures
        self.error = error
    }
}


/// The longest run of consecutive intervals with no bytes, in intervals. Leading intervals before
/// the flow's first byte count too: a flow that never starts stalls for the whole test.
public func longestZeroRun(_ bytesPerInterval: [Double]) -> Int {
    var longest = 0, current = 0
    for b in bytesPerInterval {
        current = b <= 0 ? current + 1 : 0
        longest = max(longest, current)
    }
    return longest
}

/// What iperf3's JSON (`-J --get-server-output`, server started with `-J -i`) says, per flow.
public struct IperfReport: Sendable {
    /// Per-flow results.
    public var flows: [LabFlowResult]
    /// The interval length, seconds.
    public var intervalSeconds: Double
    /// iperf3's own error text, if it reported one.
    public var error: String?

    /// Reads an iperf3 client report. Timelines come from the receiver's intervals (what arrived):
    /// the server's, or with `reverse` (`iperf3 -R`, the server sends) the client's own; from the
    /// other side's when the receiver's are missing.
    public init(json data: Data, reverse: Bool = false) throws {
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw LabError("iperf3 did not print JSON")
        }
        error = root["error"] as? String
        let end = root["end"] as? [String: Any] ?? [:]
        let streams = end["streams"] as? [[String: Any]] ?? []
        let server = root["server_output_json"] as? [String: Any]
        let serverIntervals = server?["intervals"] as? [[String: Any]]
        let clientIntervals = root["intervals"] as? [[String: Any]]
        let intervals = (reverse ? clientIntervals ?? serverIntervals : serverIntervals ?? clientIntervals) ?? []
        // Interval streams are listed in connection order on both sides; index i is flow i.
        var perFlow = [[Double]](repeating: [], count: streams.count)
        var seconds: [Double] = []
        for interval in intervals {
            let list = interval["streams"] as? [[String: Any]] ?? []
            seconds.append((list.first?["seconds"] as? Double) ?? 0)
            for i in perFlow.indices {
                perFlow[i].append(i < list.count ? (list[i]["bytes"] as? Double) ?? 0 : 0)
            }
        }
        // The last interval is often a sliver: it is left out, and stalls count whole intervals.
        let sorted = seconds.sorted()
        let median = sorted.isEmpty ? 0.1 : sorted[sorted.count / 2]
        let nominal = median > 0 ? median : 0.1
        intervalSeconds = nominal
        let whole = seconds.indices.filter { seconds[$0] >= nominal / 2 }
        flows = streams.enumerated().map { index, stream in
            let receiver = stream["receiver"] as? [String: Any] ?? [:]
            let sender = stream["sender"] as? [String: Any] ?? [:]
            let bytes = whole.map { perFlow[index][$0] }
            let timeline = whole.map { perFlow[index][$0] * 8 / seconds[$0] / 1e6 }
            let stall = longestZeroRun(bytes)
            return LabFlowResult(
                goodputMbps: ((receiver["bits_per_second"] as? Double) ?? 0) / 1e6,
                retransmits: (sender["retransmits"] as? Int) ?? 0,
                longestStallMilliseconds: Int((Double(stall) * nominal * 1000).rounded()),
                timelineMbps: timeline)
        }
    }
}

extension LabRow {
    /// Fills the row's totals from its flows: goodput, Jain's index (over the run and after the
    /// first second), retransmissions and the longest stall.
    mutating func summarize() {
        totalGoodputMbps = flows.reduce(0) { $0 + $1.goodputMbps }
        jainIndex = fairness.jainIndex
        jainIndexAfterStartUp = jainIndex(after: 1)
        retransmits = flows.reduce(0) { $0 + $1.retransmits }
        longestStallMilliseconds = flows.map(\.longestStallMilliseconds).max() ?? 0
    }
}
