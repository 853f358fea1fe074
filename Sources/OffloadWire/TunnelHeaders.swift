/// A GTP-U version 1 header (3GPP TS 29.281 §5.1), read from bytes:
///
/// ```text
///  0       1       2       3
/// +-------+-------+-------+-------+
/// |V|P|-|E|S|N| type  |  length   |   version 1, PT 1; E, S, PN: optional fields follow
/// +-------+-------+-------+-------+
/// |     tunnel endpoint id        |
/// +-------+-------+-------+-------+
/// | sequence      | N-PDU | next  |   only when E, S or PN is set
/// +-------+-------+-------+-------+
/// ```
/// `length` counts everything after the first 8 bytes (the optional fields included).
public struct GTPUHeader: Hashable, Sendable {
    /// Byte offsets of the fields.
    public enum Field {
        /// Version, protocol type and the E, S, PN flags.
        @inlinable public static var flags: Int { 0 }
        /// The message type (255: G-PDU).
        @inlinable public static var messageType: Int { 1 }
        /// The length after the mandatory 8 bytes.
        @inlinable public static var length: Int { 2 }
        /// The tunnel endpoint identifier.
        @inlinable public static var teid: Int { 4 }
        /// The sequence number (with S).
        @inlinable public static var sequence: Int { 8 }
        /// The next extension header type (with E).
        @inlinable public static var nextExtension: Int { 11 }
    }

    /// Message types (TS 29.281 §6.1).
    public enum MessageType {
        /// Echo request.
        @inlinable public static var echoRequest: UInt8 { 1 }
        /// Echo response.
        @inlinable public static var echoResponse: UInt8 { 2 }
        /// Error indication.
        @inlinable public static var errorIndication: UInt8 { 26 }
        /// End marker.
        @inlinable public static var endMarker: UInt8 { 254 }
        /// G-PDU: a user packet.
        @inlinable public static var gPDU: UInt8 { 255 }
    }

    /// The UDP port of GTP-U (TS 29.281 §4.4.2.3).
    @inlinable public static var port: UInt16 { 2152 }

    /// Flags: version 1, protocol type GTP (no optional fields).
    @inlinable public static var flagsVersion1: UInt8 { 0x30 }
    /// The S flag: a sequence number is present.
    @inlinable public static var sequenceFlag: UInt8 { 0x02 }

    /// The message type.
    public var messageType: UInt8
    /// The tunnel endpoint identifier.
    public var teid: UInt32
    /// The sequence number, when the S flag is set.
    public var sequence: UInt16?
    /// The header's length: 8, or 12 with optional fields.
    public var headerLength: Int
    /// The length of what follows the header (the user packet, for a G-PDU).
    public var payloadLength: Int

    /// Why a GTP-U header was refused.
    public enum ParseError: Error, Hashable, Sendable {
        /// Fewer bytes than the header needs.
        case truncated
        /// Not version 1, or not protocol type GTP.
        case version
        /// The length field disagrees with the datagram.
        case length
        /// Extension headers (E flag): not handled; such packets are dropped and counted.
        case extensionHeaders
    }

    /// Reads the header at the start of a UDP payload of `count` bytes.
    public init(_ bytes: UnsafeRawBufferPointer) throws(ParseError) {
        guard bytes.count >= 8 else { throw .truncated }
        let flags = unsafe bytes[Field.flags]
        guard flags & 0xF0 == 0x30 else { throw .version }
        messageType = unsafe bytes[Field.messageType]
        let length = unsafe Int(bytes[Field.length]) << 8 | Int(bytes[Field.length + 1])
        teid = unsafe UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: Field.teid, as: UInt32.self))
        guard 8 + length == bytes.count else { throw .length }
        if flags & 0x07 != 0 {
            guard length >= 4 else { throw .length }
            let nextExtension = unsafe bytes[Field.nextExtension]
            if flags & 0x04 != 0 && nextExtension != 0 { throw .extensionHeaders }
            headerLength = 12
            sequence = flags & Self.sequenceFlag != 0
                ? unsafe UInt16(bytes[Field.sequence]) << 8 | UInt16(bytes[Field.sequence + 1]) : nil
        } else {
            headerLength = 8
            sequence = nil
        }
        payloadLength = 8 + length - headerLength
    }

    /// A header to write: a G-PDU (or another type) for `teid` with `payloadLength` bytes after it.
    public init(messageType: UInt8 = MessageType.gPDU, teid: UInt32, sequence: UInt16? = nil, payloadLength: Int) {
        self.messageType = messageType
        self.teid = teid
        self.sequence = sequence
        headerLength = sequence == nil ? 8 : 12
        self.payloadLength = payloadLength
    }

    /// Writes the header over the first ``headerLength`` bytes of `buffer`.
    /// - Precondition: `buffer.count >= headerLength`.
    @inlinable public func write(to buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= headerLength)
        let length = UInt16(truncatingIfNeeded: headerLength - 8 + payloadLength)
        // Safe: the precondition guarantees the bytes.
        unsafe buffer[Field.flags] = Self.flagsVersion1 | (sequence == nil ? 0 : Self.sequenceFlag)
        unsafe buffer[Field.messageType] = messageType
        unsafe buffer.storeBytes(of: length.bigEndian, toByteOffset: Field.length, as: UInt16.self)
        unsafe buffer.storeBytes(of: teid.bigEndian, toByteOffset: Field.teid, as: UInt32.self)
        if let sequence {
            unsafe buffer.storeBytes(of: sequence.bigEndian, toByteOffset: Field.sequence, as: UInt16.self)
            unsafe buffer[10] = 0
            unsafe buffer[11] = 0
        }
    }

    /// The header's bytes.
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: headerLength)
        unsafe out.withUnsafeMutableBytes { unsafe write(to: $0) }
        return out
    }
}

/// A VXLAN header (RFC 7348 §5): 8 bytes before an inner Ethernet frame.
///
/// ```text
/// +-------+-------+-------+-------+
/// |R|R|R|R|I|R|R|R|   reserved    |   I: the VNI is valid
/// +-------+-------+-------+-------+
/// |   VXLAN network identifier    | reserved
/// +-------+-------+-------+-------+
/// ```
public struct VXLANHeader: Hashable, Sendable {
    /// Byte offsets of the fields.
    public enum Field {
        /// The flags (I = 0x08).
        @inlinable public static var flags: Int { 0 }
        /// The 24-bit VNI, in bytes 4..<7.
        @inlinable public static var vni: Int { 4 }
    }
    /// The I flag: a valid VNI follows.
    @inlinable public static var validVNI: UInt8 { 0x08 }
    /// The IANA port (RFC 7348 §5).
    @inlinable public static var port: UInt16 { 4789 }
    /// The header's length.
    @inlinable public static var length: Int { 8 }

    /// The VXLAN network identifier (24 bits).
    public var vni: UInt32

    /// A header for a VNI (its low 24 bits).
    public init(vni: UInt32) { self.vni = vni & 0xFF_FFFF }

    /// Why a VXLAN header was refused.
    public enum ParseError: Error, Hashable, Sendable {
        /// Fewer than 8 bytes.
        case truncated
        /// The I flag is clear.
        case flags
    }

    /// Reads the header at the start of a UDP payload.
    public init(_ bytes: UnsafeRawBufferPointer) throws(ParseError) {
        guard bytes.count >= 8 else { throw .truncated }
        guard unsafe bytes[Field.flags] & Self.validVNI != 0 else { throw .flags }
        vni = unsafe UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: Field.vni, as: UInt32.self)) >> 8
    }

    /// Writes the 8 bytes over the start of `buffer`. - Precondition: `buffer.count >= 8`.
    @inlinable public func write(to buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= 8)
        // Safe: the precondition guarantees the bytes.
        unsafe buffer.storeBytes(of: (UInt32(Self.validVNI) << 24).bigEndian, toByteOffset: 0, as: UInt32.self)
        unsafe buffer.storeBytes(of: (vni << 8).bigEndian, toByteOffset: Field.vni, as: UInt32.self)
    }
}
