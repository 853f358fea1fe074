import OffloadEngine
import OffloadWire

/// The container format of a capture file.
public enum CaptureFormat: Hashable, Sendable, CustomStringConvertible {
    /// Classic libpcap; `nanosecond` for the 0xa1b23c4d magic; `bigEndian` for the swapped magics.
    case pcap(nanosecond: Bool, bigEndian: Bool)
    /// pcapng (RFC draft-ietf-opsawg-pcapng).
    case pcapng

    /// `pcap (µs, little-endian)` / `pcapng`.
    public var description: String {
        switch self {
        case .pcap(let ns, let big): "pcap (\(ns ? "ns" : "µs"), \(big ? "big" : "little")-endian)"
        case .pcapng: "pcapng"
        }
    }
}

/// A pcapng option, kept as raw bytes so that unknown options survive a rewrite.
public struct PcapngOption: Hashable, Sendable {
    /// The option code.
    public var code: UInt16
    /// The value, unpadded.
    public var value: [UInt8]

    /// Creates an option.
    public init(code: UInt16, value: [UInt8]) {
        self.code = code
        self.value = value
    }

    /// `opt_comment`.
    public static let commentCode: UInt16 = 1
    /// `opt_custom` (binary, may not be copied): used for swift-offload's GSO facts.
    public static let customBinaryCode: UInt16 = 2989
    /// IANA Private Enterprise Number reserved for documentation and examples (RFC 5612), which
    /// marks swift-offload's custom options.
    public static let enterpriseNumber: UInt32 = 32473

    /// A UTF-8 comment option.
    public static func comment(_ text: String) -> PcapngOption {
        PcapngOption(code: commentCode, value: Array(text.utf8))
    }

    /// The option that records a super-packet's GSO facts so `offload segment` can undo the merge.
    ///
    /// Value (little-endian): enterprise number (4), "GSO1" (4), kind (1), flags (1: bit 0
    /// fixed ID, bit 1 ECN), reserved (2), segment size (4), segment count (4).
    public static func gso(_ gso: GSOInfo) -> PcapngOption {
        var v: [UInt8] = []
        func le32(_ x: UInt32) { for i in 0..<4 { v.append(UInt8(truncatingIfNeeded: x >> (8 * UInt32(i)))) } }
        le32(enterpriseNumber)
        v += Array("GSO1".utf8)
        v.append(gso.kind.rawValue)
        v.append((gso.fixedID ? 1 : 0) | (gso.ecn ? 2 : 0))
        v += [0, 0]
        le32(UInt32(gso.segmentSize))
        le32(UInt32(gso.segmentCount))
        return PcapngOption(code: customBinaryCode, value: v)
    }

    /// The GSO facts, if this is swift-offload's GSO option (values read little-endian).
    public var gsoInfo: GSOInfo? {
        guard code == Self.customBinaryCode, value.count == 20, Array(value[4..<8]) == Array("GSO1".utf8) else {
            return nil
        }
        func le32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(value[o + $1]) << (8 * UInt32($1)) } }
        guard le32(0) == Self.enterpriseNumber, let kind = GSOInfo.Kind(rawValue: value[8]) else { return nil }
        return GSOInfo(kind: kind, segmentSize: Int(le32(12)), segmentCount: Int(le32(16)),
                       fixedID: value[9] & 1 != 0, ecn: value[9] & 2 != 0)
    }

    /// The text of a comment option.
    public var commentText: String? {
        code == Self.commentCode ? String(decoding: value, as: UTF8.self) : nil
    }
}

/// One interface of a capture (a pcapng Interface Description Block, or the pcap file header).
public struct CaptureInterface: Hashable, Sendable {
    /// The link type.
    public var linkType: LinkType
    /// The snapshot length (0: unlimited).
    public var snapLength: UInt32
    /// Timestamp units per second (pcapng `if_tsresol`; 10^6 by default, 10^9 for ns pcap).
    public var unitsPerSecond: UInt64
    /// The other IDB options (name, description, ...), kept for rewriting.
    public var options: [PcapngOption]

    /// Creates an interface.
    public init(linkType: LinkType, snapLength: UInt32 = 262_144, unitsPerSecond: UInt64 = 1_000_000,
                options: [PcapngOption] = []) {
        self.linkType = linkType
        self.snapLength = snapLength
        self.unitsPerSecond = unitsPerSecond
        self.options = options
    }

    /// The `if_name` option, if any.
    public var name: String? {
        options.first { $0.code == 2 }.map { String(decoding: $0.value, as: UTF8.self) }
    }
}

/// Which way a packet went through the interface it was captured on.
public enum PacketDirection: String, Hashable, Sendable, Codable {
    /// Received by the capturing host.
    case inbound
    /// Sent by the capturing host.
    case outbound
}

extension PcapngOption {
    /// The Enhanced Packet Block's `epb_flags` option (RFC draft-ietf-opsawg-pcapng §4.3.1).
    public static let packetFlagsCode: UInt16 = 2

    /// The direction in an `epb_flags` value (its two low bits: 1 inbound, 2 outbound), read in
    /// the section's byte order; nil for "not available" or another option.
    public func packetDirection(bigEndian: Bool) -> PacketDirection? {
        guard code == Self.packetFlagsCode, value.count == 4 else { return nil }
        switch (bigEndian ? value[3] : value[0]) & 3 {
        case 1: return .inbound
        case 2: return .outbound
        default: return nil
        }
    }
}

/// What a capture says about one packet, besides its bytes.
public struct CaptureRecordInfo: Hashable, Sendable {
    /// The record number, counting from 1.
    public var record: Int
    /// The byte offset of the record in the file.
    public var offset: Int
    /// Nanoseconds since the Unix epoch.
    public var timestamp: UInt64
    /// The interface index (0 for pcap).
    public var interface: Int
    /// The length on the wire (≥ the captured length).
    public var originalLength: Int
    /// The captured length.
    public var capturedLength: Int
    /// The packet block's options (pcapng), kept for rewriting.
    public var options: [PcapngOption]
    /// Whether the capturing host received or sent the packet, when the capture says (pcapng's
    /// `epb_flags`); nil when it does not.
    public var direction: PacketDirection? = nil

    /// The GSO facts recorded by `offload coalesce`, if present.
    public var gso: GSOInfo? { options.lazy.compactMap(\.gsoInfo).first }
    /// Whether the capture cut the packet short (captured < original).
    public var isSnapped: Bool { capturedLength < originalLength }
}

/// One packet read from a capture, with its bytes (allocates; for tools and tests).
public struct CapturedPacket: Hashable, Sendable {
    /// The record's facts.
    public var info: CaptureRecordInfo
    /// The link type of its interface.
    public var linkType: LinkType
    /// The captured bytes.
    public var bytes: [UInt8]
}
