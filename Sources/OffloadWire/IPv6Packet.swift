/// A validated view of an IPv6 packet (RFC 8200) and its extension-header chain.
///
/// ```text
/// +-------+---------------+---------------------------------------+
/// |version| traffic class |              flow label               |
/// +-------+---------------+-------+---------------+---------------+
/// |        payload length         |  next header  |   hop limit   |
/// +-------------------------------+---------------+---------------+
/// |                source address (16 bytes)                      |
/// |              destination address (16 bytes)                   |
/// +---------------------------------------------------------------+
/// | extension headers (Hop-by-Hop, Routing, Fragment, Dest. Opts) |
/// ```
/// Validation checks once: at least 40 bytes, version 6, `40 + payload length ≤ buffer`, and
/// every extension header it walks lies inside the payload. The walk follows Hop-by-Hop (0),
/// Routing (43), Fragment (44), Destination Options (60) and Authentication (51), at most
/// ``maximumExtensionHeaders`` of them, and stops at the first other next-header value: that is
/// the ``upperLayerProtocol`` at ``upperLayerOffset``.
public struct IPv6Packet: ~Escapable {
    /// The most extension headers the walk follows.
    @inlinable public static var maximumExtensionHeaders: Int { 8 }
    /// The buffer the packet starts at (it may hold trailing bytes).
    public let bytes: RawSpan
    /// The protocol after the extension headers.
    public let upperLayerProtocol: IPProtocol
    /// The offset of the upper-layer header from the start of the packet.
    public let upperLayerOffset: Int
    /// The number of extension headers walked.
    public let extensionHeaderCount: Int
    /// The offset of the Fragment header, if the chain has one.
    public let fragmentHeaderOffset: Int?

    /// Validates the fixed header, the payload length and the extension-header chain.
    /// - Throws: ``WireError`` with layer `.ipv6` or `.ipv6Extension`.
    @inlinable @_lifetime(copy bytes)
    public init(validating bytes: RawSpan) throws(WireError) {
        try bytes._require(40, .ipv6)
        let version = bytes._u8Unchecked(0) >> 4
        guard version == 6 else { throw WireError(.ipv6, .badVersion(version), at: 0) }
        let end = 40 + Int(bytes._u16Unchecked(Field.payloadLength))
        guard end <= bytes.byteCount else {
            throw WireError(.ipv6, .lengthExceedsBuffer(claimed: end - 40, available: bytes.byteCount - 40), at: 4)
        }
        var next = IPProtocol(rawValue: bytes._u8Unchecked(Field.nextHeader))
        var offset = 40
        var count = 0
        var fragment: Int? = nil
        while true {
            guard Self.extensionHeaderLength(next, lengthByte: 0) != nil else {
                self.bytes = bytes
                self.upperLayerProtocol = next
                self.upperLayerOffset = offset
                self.extensionHeaderCount = count
                self.fragmentHeaderOffset = fragment
                return
            }
            let minimum = ExtensionField.minimumLength
            guard offset + minimum <= end else {
                throw WireError(.ipv6Extension, .truncated(needed: offset + minimum, available: end), at: offset)
            }
            let length = Self.extensionHeaderLength(next, lengthByte: bytes._u8Unchecked(offset + ExtensionField.length))!
            if next == .ipv6Fragment { fragment = offset }
            guard offset + length <= end else {
                throw WireError(.ipv6Extension, .lengthExceedsBuffer(claimed: length, available: end - offset),
                                at: offset + 1)
            }
            count += 1
            guard count <= Self.maximumExtensionHeaders else {
                throw WireError(.ipv6Extension, .tooManyExtensionHeaders(Self.maximumExtensionHeaders), at: offset)
            }
            next = IPProtocol(rawValue: bytes._u8Unchecked(offset + ExtensionField.nextHeader))
            offset += length
        }
    }

    /// The first 32-bit word: version, traffic class, flow label.
    @inlinable public var versionClassLabel: UInt32 { bytes._u32Unchecked(Field.versionClassLabel) }
    /// The traffic class byte (DSCP and ECN).
    @inlinable public var trafficClass: UInt8 { UInt8(truncatingIfNeeded: versionClassLabel >> 20) }
    /// The ECN codepoint.
    @inlinable public var ecn: UInt8 { trafficClass & 3 }
    /// The 20-bit flow label.
    @inlinable public var flowLabel: UInt32 { versionClassLabel & 0xF_FFFF }
    /// The payload length field (extension headers included).
    @inlinable public var payloadLength: Int { Int(bytes._u16Unchecked(Field.payloadLength)) }
    /// The next-header field of the fixed header.
    @inlinable public var nextHeader: IPProtocol { IPProtocol(rawValue: bytes._u8Unchecked(Field.nextHeader)) }
    /// The hop limit.
    @inlinable public var hopLimit: UInt8 { bytes._u8Unchecked(Field.hopLimit) }
    /// The source address.
    @inlinable public var source: IPv6Address { IPv6Address(high: bytes._u64Unchecked(8), low: bytes._u64Unchecked(16)) }
    /// The destination address.
    @inlinable public var destination: IPv6Address {
        IPv6Address(high: bytes._u64Unchecked(24), low: bytes._u64Unchecked(32))
    }
    /// 40 plus the payload length.
    @inlinable public var totalLength: Int { 40 + payloadLength }
    /// Bytes after the packet (padding or garbage).
    @inlinable public var trailingByteCount: Int { bytes.byteCount - totalLength }
    /// Whether the chain holds a Fragment header.
    @inlinable public var isFragment: Bool { fragmentHeaderOffset != nil }
    /// The extension headers, as one span (empty when there are none).
    public var extensionHeaders: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(40..<upperLayerOffset) }
    }
    /// The upper-layer header and payload, up to the payload length.
    public var upperLayerPayload: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(upperLayerOffset..<totalLength) }
    }
    /// The bytes after the fixed header, up to the payload length.
    public var payload: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(40..<totalLength) }
    }
}

/// The fields of a fixed IPv6 header, to parse or emit.
public struct IPv6HeaderRepr: Hashable, Sendable {
    /// Traffic class.
    public var trafficClass: UInt8 = 0
    /// Flow label (20 bits).
    public var flowLabel: UInt32 = 0
    /// Payload length.
    public var payloadLength: Int
    /// Next header.
    public var nextHeader: IPProtocol
    /// Hop limit.
    public var hopLimit: UInt8 = 64
    /// Source address.
    public var source: IPv6Address
    /// Destination address.
    public var destination: IPv6Address

    /// Creates a header.
    public init(source: IPv6Address, destination: IPv6Address, nextHeader: IPProtocol, payloadLength: Int = 0,
                hopLimit: UInt8 = 64, trafficClass: UInt8 = 0, flowLabel: UInt32 = 0) {
        self.source = source
        self.destination = destination
        self.nextHeader = nextHeader
        self.payloadLength = payloadLength
        self.hopLimit = hopLimit
        self.trafficClass = trafficClass
        self.flowLabel = flowLabel
    }
    /// Reads the fixed header of a validated packet.
    public init(parsing packet: borrowing IPv6Packet) {
        self.init(source: packet.source, destination: packet.destination, nextHeader: packet.nextHeader,
                  payloadLength: packet.payloadLength, hopLimit: packet.hopLimit,
                  trafficClass: packet.trafficClass, flowLabel: packet.flowLabel)
    }
    /// Always 40.
    public var encodedLength: Int { 40 }
    /// Appends the 40-byte header to `buffer`.
    public func encode(into buffer: inout [UInt8]) {
        buffer.appendBigEndian(UInt32(6) << 28 | UInt32(trafficClass) << 20 | (flowLabel & 0xF_FFFF))
        buffer.appendBigEndian(UInt16(truncatingIfNeeded: payloadLength))
        buffer.append(nextHeader.rawValue)
        buffer.append(hopLimit)
        buffer.appendBigEndian(source.high)
        buffer.appendBigEndian(source.low)
        buffer.appendBigEndian(destination.high)
        buffer.appendBigEndian(destination.low)
    }
}

extension IPv6HeaderRepr {
    /// Writes the 40-byte header over the start of `buffer`, without allocating.
    /// - Precondition: `buffer.count >= 40`.
    @inlinable public func write(to buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= 40, "a 40-byte header")
        let first = UInt32(6) << 28 | UInt32(trafficClass) << 20 | (flowLabel & 0xF_FFFF)
        // Safe: the precondition guarantees 40 bytes.
        unsafe buffer.storeBytes(of: first.bigEndian, toByteOffset: 0, as: UInt32.self)
        unsafe buffer.storeBytes(of: UInt16(truncatingIfNeeded: payloadLength).bigEndian, toByteOffset: 4, as: UInt16.self)
        unsafe buffer[6] = nextHeader.rawValue
        unsafe buffer[7] = hopLimit
        unsafe buffer.storeBytes(of: source.high.bigEndian, toByteOffset: 8, as: UInt64.self)
        unsafe buffer.storeBytes(of: source.low.bigEndian, toByteOffset: 16, as: UInt64.self)
        unsafe buffer.storeBytes(of: destination.high.bigEndian, toByteOffset: 24, as: UInt64.self)
        unsafe buffer.storeBytes(of: destination.low.bigEndian, toByteOffset: 32, as: UInt64.self)
    }
}

extension IPv6Packet {
    /// Byte offsets of the IPv6 fixed header's fields, from the start of the header (RFC 8200 §3).
    public enum Field {
        /// Version (4 bits), traffic class (8 bits) and flow label (20 bits), one 32-bit word.
        @inlinable public static var versionClassLabel: Int { 0 }
        /// Payload length: everything after the fixed header (16 bits).
        @inlinable public static var payloadLength: Int { 4 }
        /// The next header (an extension header or the upper-layer protocol).
        @inlinable public static var nextHeader: Int { 6 }
        /// Hop limit.
        @inlinable public static var hopLimit: Int { 7 }
        /// Source address (128 bits).
        @inlinable public static var source: Int { 8 }
        /// Destination address (128 bits).
        @inlinable public static var destination: Int { 24 }
        /// The end of the fixed header.
        @inlinable public static var fixedHeaderEnd: Int { 40 }
    }

    /// Byte offsets inside an extension header (RFC 8200 §4), from the start of that header.
    public enum ExtensionField {
        /// The next header: byte 0 of every extension header.
        @inlinable public static var nextHeader: Int { 0 }
        /// Hdr Ext Len (Hop-by-Hop, Routing, Destination Options: 8-octet units after the first 8;
        /// Authentication: 4-octet units less 2).
        @inlinable public static var length: Int { 1 }
        /// Routing: Segments Left.
        @inlinable public static var segmentsLeft: Int { 3 }
        /// Fragment: the offset (13 bits, 8-octet units, kept in place) and the M flag (bit 0).
        @inlinable public static var fragmentOffsetAndFlags: Int { 2 }
        /// Fragment: the identification (32 bits).
        @inlinable public static var fragmentIdentification: Int { 4 }
        /// The smallest extension header, and the Fragment header's whole length.
        @inlinable public static var minimumLength: Int { 8 }
    }

    /// The length of an extension header of `kind` whose ``ExtensionField/length`` byte is
    /// `lengthByte`; nil for a next-header value that is not an extension header the walk follows
    /// (the upper layer).
    @inlinable
    public static func extensionHeaderLength(_ kind: IPProtocol, lengthByte: UInt8) -> Int? {
        switch kind {
        case .hopByHop, .ipv6Routing, .ipv6DestinationOptions: (Int(lengthByte) + 1) * 8
        case .ipv6Fragment: ExtensionField.minimumLength
        case .authentication: (Int(lengthByte) + 2) * 4  // RFC 4302 §2.2
        default: nil
        }
    }

    /// Masks of the first 32-bit word (``Field/versionClassLabel``).
    public enum Masks {
        /// The traffic class bits.
        @inlinable public static var trafficClass: UInt32 { 0x0FF0_0000 }
        /// The flow label bits.
        @inlinable public static var flowLabel: UInt32 { 0x000F_FFFF }
    }
}
