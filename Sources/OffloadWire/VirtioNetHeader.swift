/// The `struct virtio_net_hdr` that a TUN device with `IFF_VNET_HDR` puts before every packet
/// (include/uapi/linux/virtio_net.h; docs/linux-gro-rules.md §7). Multi-byte fields are little-endian.
///
/// ```text
///  0       1        2          4          6            8             10
/// +-------+--------+----------+----------+------------+-------------+
/// | flags |gso_type| hdr_len  | gso_size | csum_start | csum_offset |
/// +-------+--------+----------+----------+------------+-------------+
/// ```
/// This type only encodes and decodes the ten bytes; whether they make sense for the packet that
/// follows is checked by the engine (`VirtioPacketInfo` in OffloadEngine).
public struct VirtioNetHeader: Hashable, Sendable {
    /// The encoded size.
    public static let size = 10

    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum field holds the pseudo-header sum; finish it.
    public static let flagNeedsChecksum: UInt8 = 1
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified.
    public static let flagDataValid: UInt8 = 2
    /// `VIRTIO_NET_HDR_F_RSC_INFO`.
    public static let flagRSCInfo: UInt8 = 4

    /// `VIRTIO_NET_HDR_GSO_NONE`.
    public static let gsoNone: UInt8 = 0
    /// `VIRTIO_NET_HDR_GSO_TCPV4`.
    public static let gsoTCPv4: UInt8 = 1
    /// `VIRTIO_NET_HDR_GSO_UDP` (legacy UFO: IP fragments).
    public static let gsoUDP: UInt8 = 3
    /// `VIRTIO_NET_HDR_GSO_TCPV6`.
    public static let gsoTCPv6: UInt8 = 4
    /// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO).
    public static let gsoUDPL4: UInt8 = 5
    /// `VIRTIO_NET_HDR_GSO_ECN`, ORed into a TCP type.
    public static let gsoECN: UInt8 = 0x80

    /// Flags.
    public var flags: UInt8
    /// GSO type (with the ECN bit).
    public var gsoType: UInt8
    /// Header length: a hint only; never trusted on read.
    public var headerLength: UInt16
    /// Payload bytes per segment.
    public var gsoSize: UInt16
    /// Where checksumming starts, from the start of the packet.
    public var checksumStart: UInt16
    /// The checksum field's offset from `checksumStart`.
    public var checksumOffset: UInt16

    /// Creates a header.
    public init(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0,
                checksumStart: UInt16 = 0, checksumOffset: UInt16 = 0) {
        self.flags = flags
        self.gsoType = gsoType
        self.headerLength = headerLength
        self.gsoSize = gsoSize
        self.checksumStart = checksumStart
        self.checksumOffset = checksumOffset
    }

    /// Reads the ten bytes at the start of `bytes`.
    /// - Throws: ``WireError`` (`.virtio`, `.truncated`).
    public init(parsing bytes: RawSpan) throws(WireError) {
        try bytes._require(Self.size, .virtio)
        func le16(_ o: Int) -> UInt16 { UInt16(bytes._u8Unchecked(o)) | UInt16(bytes._u8Unchecked(o + 1)) << 8 }
        self.init(flags: bytes._u8Unchecked(0), gsoType: bytes._u8Unchecked(1), headerLength: le16(2),
                  gsoSize: le16(4), checksumStart: le16(6), checksumOffset: le16(8))
    }

    /// The GSO type without the ECN bit.
    public var baseGSOType: UInt8 { gsoType & ~Self.gsoECN }
    /// Whether `NEEDS_CSUM` is set.
    public var needsChecksum: Bool { flags & Self.flagNeedsChecksum != 0 }
    /// Whether `DATA_VALID` is set.
    public var dataValid: Bool { flags & Self.flagDataValid != 0 }

    /// Appends the ten bytes, little-endian.
    public func encode(into buffer: inout [UInt8]) {
        buffer.append(flags)
        buffer.append(gsoType)
        for v in [headerLength, gsoSize, checksumStart, checksumOffset] {
            buffer.append(UInt8(v & 0xFF))
            buffer.append(UInt8(v >> 8))
        }
    }

    /// Writes the ten bytes at the start of `buffer`.
    /// - Precondition: `buffer.count >= 10`.
    public func encode(into buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= Self.size, "a virtio_net_hdr needs 10 bytes")
        unsafe buffer[0] = flags
        unsafe buffer[1] = gsoType
        for (i, v) in [headerLength, gsoSize, checksumStart, checksumOffset].enumerated() {
            unsafe buffer[2 + 2 * i] = UInt8(v & 0xFF)
            unsafe buffer[3 + 2 * i] = UInt8(v >> 8)
        }
    }
}
