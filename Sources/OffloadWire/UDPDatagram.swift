/// A validated view of a UDP datagram (RFC 768).
///
/// ```text
/// +-------------------------------+-------------------------------+
/// |          source port          |       destination port        |
/// |            length             |           checksum            |
/// |                          payload ...                          |
/// ```
/// Validation checks once: 8 bytes present, and `8 ≤ length ≤ buffer`. Bytes past the length
/// field are reported by ``trailingByteCount`` (Linux GRO refuses such "padded" datagrams).
public struct UDPDatagram: ~Escapable {
    /// The datagram buffer (pass exactly the IP payload).
    public let bytes: RawSpan

    /// Validates the header and the length field.
    /// - Throws: ``WireError`` with layer `.udp`.
    @inlinable @_lifetime(copy bytes)
    public init(validating bytes: RawSpan) throws(WireError) {
        try bytes._require(8, .udp)
        let length = Int(bytes._u16Unchecked(Field.length))
        guard length >= 8 else { throw WireError(.udp, .lengthFieldTooSmall(length), at: 4) }
        guard length <= bytes.byteCount else {
            throw WireError(.udp, .lengthExceedsBuffer(claimed: length, available: bytes.byteCount), at: 4)
        }
        self.bytes = bytes
    }

    /// Source port.
    @inlinable public var sourcePort: UInt16 { bytes._u16Unchecked(Field.sourcePort) }
    /// Destination port.
    @inlinable public var destinationPort: UInt16 { bytes._u16Unchecked(Field.destinationPort) }
    /// Length field (header plus payload).
    @inlinable public var length: Int { Int(bytes._u16Unchecked(Field.length)) }
    /// Checksum field (0: none, IPv4 only).
    @inlinable public var checksum: UInt16 { bytes._u16Unchecked(Field.checksum) }
    /// Bytes beyond the length field.
    @inlinable public var trailingByteCount: Int { bytes.byteCount - length }
    /// The payload, as the length field bounds it.
    public var payload: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(8..<length) }
    }
    /// Whether the checksum verifies (a zero field counts as valid: "no checksum").
    @inlinable
    public func checksumIsValid(pseudoHeader: OnesComplementSum) -> Bool {
        checksum == 0 || InternetChecksum.sum(bytes.extracting(first: length), initial: pseudoHeader).value == 0xFFFF
    }
}

/// The fields of a UDP header, to parse or emit.
public struct UDPHeaderRepr: Hashable, Sendable {
    /// Source port.
    public var sourcePort: UInt16
    /// Destination port.
    public var destinationPort: UInt16
    /// Creates a header.
    public init(sourcePort: UInt16, destinationPort: UInt16) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
    }
    /// Reads a validated datagram's ports.
    public init(parsing datagram: borrowing UDPDatagram) {
        self.init(sourcePort: datagram.sourcePort, destinationPort: datagram.destinationPort)
    }
    /// Always 8.
    public var encodedLength: Int { 8 }
    /// Appends header and payload with length and checksum filled in (`checksum: false` writes 0).
    public func encode(into buffer: inout [UInt8], payload: [UInt8], checksum: Bool = true,
                       pseudoHeader: (Int) -> OnesComplementSum) {
        let start = buffer.count
        let length = 8 + payload.count
        buffer.appendBigEndian(sourcePort)
        buffer.appendBigEndian(destinationPort)
        buffer.appendBigEndian(UInt16(truncatingIfNeeded: length))
        buffer.appendBigEndian(UInt16(0))
        buffer += payload
        guard checksum else { return }
        let sum = unsafe buffer.span.bytes.extracting(start..<buffer.count).withUnsafeBytes {
            unsafe InternetChecksum.unsafeSum($0, initial: pseudoHeader(length))
        }
        buffer.storeBigEndian(InternetChecksum.udpFieldValue(sum.checksum), at: start + 6)
    }
}

/// A validated view of an ICMPv4 (RFC 792) or ICMPv6 (RFC 4443) message: type, code, checksum,
/// the 4-byte rest-of-header word, and the body.
public struct ICMPMessage: ~Escapable {
    /// The message bytes.
    public let bytes: RawSpan
    /// Whether this is ICMPv6 (its checksum covers a pseudo-header).
    public let isVersion6: Bool

    /// Validates that the 8-byte header is present.
    /// - Throws: ``WireError`` with layer `.icmpv4` or `.icmpv6`.
    @inlinable @_lifetime(copy bytes)
    public init(validating bytes: RawSpan, version6: Bool) throws(WireError) {
        try bytes._require(8, version6 ? .icmpv6 : .icmpv4)
        self.bytes = bytes
        self.isVersion6 = version6
    }
    /// Message type.
    @inlinable public var type: UInt8 { bytes._u8Unchecked(Field.type) }
    /// Message code.
    @inlinable public var code: UInt8 { bytes._u8Unchecked(Field.code) }
    /// Checksum field.
    @inlinable public var checksum: UInt16 { bytes._u16Unchecked(Field.checksum) }
    /// The second 32-bit word (identifier/sequence, next-hop MTU, pointer, ...).
    @inlinable public var restOfHeader: UInt32 { bytes._u32Unchecked(Field.restOfHeader) }
    /// For ICMPv4 "fragmentation needed": the next-hop MTU (RFC 1191 §4).
    @inlinable public var nextHopMTU: UInt16 { UInt16(truncatingIfNeeded: restOfHeader) }
    /// For ICMPv6 "packet too big": the MTU (RFC 4443 §3.2).
    @inlinable public var mtu: UInt32 { restOfHeader }
    /// The body after the 8-byte header (for errors: the invoking packet's quote).
    public var body: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(droppingFirst: 8) }
    }
    /// Whether the checksum verifies; `pseudoHeader` is ignored for ICMPv4.
    @inlinable public func checksumIsValid(pseudoHeader: OnesComplementSum = .zero) -> Bool {
        InternetChecksum.sum(bytes, initial: isVersion6 ? pseudoHeader : .zero).value == 0xFFFF
    }
}

/// ICMP message types this project builds or reads.
public enum ICMPType {
    /// ICMPv4 Destination Unreachable (type 3); code 4 is "fragmentation needed and DF set".
    @inlinable public static var v4DestinationUnreachable: UInt8 { 3 }
    /// ICMPv4 code 4 of type 3.
    @inlinable public static var v4FragmentationNeeded: UInt8 { 4 }
    /// ICMPv4 Time Exceeded (type 11); code 0 is "TTL exceeded in transit".
    @inlinable public static var v4TimeExceeded: UInt8 { 11 }
    /// ICMPv6 Packet Too Big (type 2).
    @inlinable public static var v6PacketTooBig: UInt8 { 2 }
    /// ICMPv6 Time Exceeded (type 3); code 0 is "hop limit exceeded in transit".
    @inlinable public static var v6TimeExceeded: UInt8 { 3 }
    /// ICMPv6 Destination Unreachable (type 1).
    @inlinable public static var v6DestinationUnreachable: UInt8 { 1 }
    /// ICMPv6 code 1 of type 1: communication administratively prohibited.
    @inlinable public static var v6AdministrativelyProhibited: UInt8 { 1 }
    /// ICMPv6 Parameter Problem (type 4).
    @inlinable public static var v6ParameterProblem: UInt8 { 4 }
    /// ICMPv6 code 0 of type 4: erroneous header field (the pointer says which).
    @inlinable public static var v6ErroneousHeaderField: UInt8 { 0 }
}

extension UDPDatagram {
    /// Byte offsets of the UDP header's fields (RFC 768).
    public enum Field {
        /// Source port.
        @inlinable public static var sourcePort: Int { 0 }
        /// Destination port.
        @inlinable public static var destinationPort: Int { 2 }
        /// Length: header and payload (16 bits).
        @inlinable public static var length: Int { 4 }
        /// Checksum (16 bits; 0 means none over IPv4).
        @inlinable public static var checksum: Int { 6 }
        /// The header's length.
        @inlinable public static var headerLength: Int { 8 }
    }
}

extension ICMPMessage {
    /// Byte offsets of the ICMP and ICMPv6 header's fields (RFC 792, RFC 4443 §2.1).
    public enum Field {
        /// Message type.
        @inlinable public static var type: Int { 0 }
        /// Message code.
        @inlinable public static var code: Int { 1 }
        /// Checksum (16 bits).
        @inlinable public static var checksum: Int { 2 }
        /// The second 32-bit word: identifier/sequence, next-hop MTU, pointer, ...
        @inlinable public static var restOfHeader: Int { 4 }
        /// The header's length; an error's quote starts here.
        @inlinable public static var headerLength: Int { 8 }
    }
}
