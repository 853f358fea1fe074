/// A validated view of an IPv4 packet (RFC 791).
///
/// ```text
///  0       4       8              16      19              31
/// +-------+-------+---------------+-------+---------------+
/// |version|  IHL  |   DSCP | ECN  |        total length   |
/// +-------+-------+---------------+-------+---------------+
/// |        identification         |flags|  fragment offset|
/// +---------------+---------------+-------+---------------+
/// |      TTL      |   protocol    |    header checksum    |
/// +---------------+---------------+-----------------------+
/// |                    source address                     |
/// |                  destination address                  |
/// |                 options (IHL > 5) ...                 |
/// ```
/// Validation checks once: at least 20 bytes, version 4, IHL ≥ 5, the header inside the buffer,
/// and `IHL × 4 ≤ total length ≤ buffer length`. Bytes past the total length (Ethernet padding)
/// are allowed and reported by ``trailingByteCount``. The header checksum and the options are
/// not checked here: see ``headerChecksumIsValid`` and ``validateOptions()``.
public struct IPv4Packet: ~Escapable {
    /// The buffer the packet starts at (it may hold trailing bytes).
    public let bytes: RawSpan

    /// Validates an IPv4 header and its lengths.
    /// - Throws: ``WireError`` with layer `.ipv4`.
    @inlinable @_lifetime(copy bytes)
    public init(validating bytes: RawSpan) throws(WireError) {
        try bytes._require(20, .ipv4)
        let first = bytes._u8Unchecked(0)
        guard first >> 4 == 4 else { throw WireError(.ipv4, .badVersion(first >> 4), at: 0) }
        let headerLength = Int(first & 0x0F) * 4
        guard headerLength >= 20 else { throw WireError(.ipv4, .headerLengthTooSmall(headerLength), at: 0) }
        guard bytes.byteCount >= headerLength else {
            throw WireError(.ipv4, .truncated(needed: headerLength, available: bytes.byteCount), at: 0)
        }
        let total = Int(bytes._u16Unchecked(Field.totalLength))
        guard total >= headerLength else { throw WireError(.ipv4, .lengthFieldTooSmall(total), at: Field.totalLength) }
        guard total <= bytes.byteCount else {
            throw WireError(.ipv4, .lengthExceedsBuffer(claimed: total, available: bytes.byteCount), at: Field.totalLength)
        }
        self.bytes = bytes
    }

    /// The header length in bytes (IHL × 4).
    @inlinable public var headerLength: Int { Int(bytes._u8Unchecked(Field.versionAndHeaderLength) & 0x0F) * 4 }
    /// The type-of-service byte: DSCP (6 bits) and ECN (2 bits).
    @inlinable public var typeOfService: UInt8 { bytes._u8Unchecked(Field.typeOfService) }
    /// The ECN codepoint (RFC 3168): 0 not-ECT, 1 ECT(1), 2 ECT(0), 3 CE.
    @inlinable public var ecn: UInt8 { typeOfService & 3 }
    /// The total length field.
    @inlinable public var totalLength: Int { Int(bytes._u16Unchecked(Field.totalLength)) }
    /// The identification field.
    @inlinable public var identification: UInt16 { bytes._u16Unchecked(Field.identification) }
    /// The flags and fragment offset word.
    @inlinable public var flagsAndFragmentOffset: UInt16 { bytes._u16Unchecked(Field.flagsAndFragmentOffset) }
    /// The reserved ("evil") bit.
    @inlinable public var reservedFlag: Bool { flagsAndFragmentOffset & Flags.reserved != 0 }
    /// Don't Fragment.
    @inlinable public var dontFragment: Bool { flagsAndFragmentOffset & Flags.dontFragment != 0 }
    /// More Fragments.
    @inlinable public var moreFragments: Bool { flagsAndFragmentOffset & Flags.moreFragments != 0 }
    /// The fragment offset in 8-byte units.
    @inlinable public var fragmentOffset: Int { Int(flagsAndFragmentOffset & Flags.fragmentOffsetMask) }
    /// Whether this is a fragment (MF set or a non-zero offset); Linux `ip_is_fragment`.
    @inlinable public var isFragment: Bool { flagsAndFragmentOffset & Flags.fragmentMask != 0 }
    /// Time to live.
    @inlinable public var timeToLive: UInt8 { bytes._u8Unchecked(Field.timeToLive) }
    /// The payload protocol.
    @inlinable public var protocolNumber: IPProtocol { IPProtocol(rawValue: bytes._u8Unchecked(Field.protocolNumber)) }
    /// The header checksum field.
    @inlinable public var headerChecksum: UInt16 { bytes._u16Unchecked(Field.headerChecksum) }
    /// The source address.
    @inlinable public var source: IPv4Address { IPv4Address(rawValue: bytes._u32Unchecked(Field.source)) }
    /// The destination address.
    @inlinable public var destination: IPv4Address { IPv4Address(rawValue: bytes._u32Unchecked(Field.destination)) }
    /// Bytes after `totalLength` (Ethernet padding or garbage).
    @inlinable public var trailingByteCount: Int { bytes.byteCount - totalLength }

    /// Whether the header checksum is correct.
    @inlinable public var headerChecksumIsValid: Bool {
        InternetChecksum.sum(bytes.extracting(first: headerLength)).value == 0xFFFF
    }
    /// The option bytes (empty when IHL is 5).
    public var options: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(20..<headerLength) }
    }
    /// The header (IHL × 4 bytes).
    public var header: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(first: headerLength) }
    }
    /// The payload: from the end of the header to the total length.
    public var payload: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(headerLength..<totalLength) }
    }

    /// Checks the option list (RFC 791 §3.1): every option's length byte is ≥ 2 and ends inside
    /// the options area; End of Option List stops the walk.
    /// - Throws: ``WireError`` with layer `.ipv4`.
    public func validateOptions() throws(WireError) {
        let end = headerLength
        var o = 20
        while o < end {
            let kind = bytes._u8Unchecked(o)
            if kind == 0 { return }
            if kind == 1 {
                o += 1
                continue
            }
            guard o + 1 < end else { throw WireError(.ipv4, .optionOverrun(kind: kind), at: o) }
            let length = Int(bytes._u8Unchecked(o + 1))
            guard length >= 2 else { throw WireError(.ipv4, .badOptionLength(kind: kind, length: length), at: o + 1) }
            guard o + length <= end else { throw WireError(.ipv4, .optionOverrun(kind: kind), at: o) }
            o += length
        }
    }
}

/// The fields of an IPv4 header, to parse or emit.
public struct IPv4HeaderRepr: Hashable, Sendable {
    /// DSCP and ECN.
    public var typeOfService: UInt8 = 0
    /// The total length (header plus payload).
    public var totalLength: Int
    /// Identification.
    public var identification: UInt16 = 0
    /// Don't Fragment.
    public var dontFragment: Bool = true
    /// More Fragments.
    public var moreFragments: Bool = false
    /// Fragment offset in 8-byte units.
    public var fragmentOffset: Int = 0
    /// Time to live.
    public var timeToLive: UInt8 = 64
    /// Payload protocol.
    public var protocolNumber: IPProtocol
    /// Source address.
    public var source: IPv4Address
    /// Destination address.
    public var destination: IPv4Address
    /// Option bytes; their count must be a multiple of 4 and at most 40.
    public var options: [UInt8] = []

    /// Creates a header; `totalLength` defaults to the header alone.
    public init(source: IPv4Address, destination: IPv4Address, protocolNumber: IPProtocol, totalLength: Int = 20,
                identification: UInt16 = 0, dontFragment: Bool = true, timeToLive: UInt8 = 64,
                typeOfService: UInt8 = 0, options: [UInt8] = []) {
        self.source = source
        self.destination = destination
        self.protocolNumber = protocolNumber
        self.totalLength = totalLength
        self.identification = identification
        self.dontFragment = dontFragment
        self.timeToLive = timeToLive
        self.typeOfService = typeOfService
        self.options = options
    }

    /// Reads the fields of a validated packet.
    public init(parsing packet: borrowing IPv4Packet) {
        self.init(source: packet.source, destination: packet.destination, protocolNumber: packet.protocolNumber,
                  totalLength: packet.totalLength, identification: packet.identification,
                  dontFragment: packet.dontFragment, timeToLive: packet.timeToLive,
                  typeOfService: packet.typeOfService,
                  options: Array(unsafe packet.options.withUnsafeBytes { unsafe Array($0) }))
        moreFragments = packet.moreFragments
        fragmentOffset = packet.fragmentOffset
    }

    /// 20 plus the options.
    public var encodedLength: Int { 20 + options.count }

    /// Appends the header, with a correct header checksum, to `buffer`.
    /// - Precondition: `options.count` is a multiple of 4 and at most 40.
    public func encode(into buffer: inout [UInt8]) {
        precondition(options.count % 4 == 0 && options.count <= 40, "IPv4 options must be 4-byte aligned, ≤ 40 bytes")
        let start = buffer.count
        buffer.append(0x40 | UInt8(encodedLength / 4))
        buffer.append(typeOfService)
        buffer.appendBigEndian(UInt16(truncatingIfNeeded: totalLength))
        buffer.appendBigEndian(identification)
        let flags: UInt16 = (dontFragment ? 0x4000 : 0) | (moreFragments ? 0x2000 : 0)
        buffer.appendBigEndian(flags | UInt16(fragmentOffset & 0x1FFF))
        buffer.append(timeToLive)
        buffer.append(protocolNumber.rawValue)
        buffer.appendBigEndian(UInt16(0))
        buffer.appendBigEndian(source.rawValue)
        buffer.appendBigEndian(destination.rawValue)
        buffer.append(contentsOf: options)
        let checksum = unsafe buffer.span.bytes.extracting(start..<buffer.count).withUnsafeBytes {
            unsafe ~InternetChecksum.unsafeSum($0).value
        }
        buffer.storeBigEndian(checksum, at: start + 10)
    }
}

extension IPv4HeaderRepr {
    /// Writes the header (with its checksum, without options) over the first 20 bytes of `buffer`,
    /// without allocating: the in-place path of a stage that rewrites headers.
    /// - Precondition: `buffer.count >= 20` and no options.
    @inlinable public func write(to buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= 20 && options.isEmpty, "a 20-byte header without options")
        let flags: UInt16 = (dontFragment ? 0x4000 : 0) | (moreFragments ? 0x2000 : 0) | UInt16(fragmentOffset & 0x1FFF)
        let fields: (UInt16, UInt16, UInt16, UInt16, UInt16, UInt16, UInt16, UInt16, UInt16) = (
            UInt16(0x45) << 8 | UInt16(typeOfService), UInt16(truncatingIfNeeded: totalLength), identification, flags,
            UInt16(timeToLive) << 8 | UInt16(protocolNumber.rawValue), UInt16(truncatingIfNeeded: source.rawValue >> 16),
            UInt16(truncatingIfNeeded: source.rawValue), UInt16(truncatingIfNeeded: destination.rawValue >> 16),
            UInt16(truncatingIfNeeded: destination.rawValue))
        var sum = UInt32(fields.0) + UInt32(fields.1) + UInt32(fields.2) + UInt32(fields.3) + UInt32(fields.4)
            + UInt32(fields.5) + UInt32(fields.6) + UInt32(fields.7) + UInt32(fields.8)
        sum = (sum & 0xFFFF) + (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16)
        let checksum = ~UInt16(truncatingIfNeeded: sum)
        // Safe: the precondition guarantees 20 bytes.
        unsafe buffer.storeBytes(of: fields.0.bigEndian, toByteOffset: 0, as: UInt16.self)
        unsafe buffer.storeBytes(of: fields.1.bigEndian, toByteOffset: 2, as: UInt16.self)
        unsafe buffer.storeBytes(of: fields.2.bigEndian, toByteOffset: 4, as: UInt16.self)
        unsafe buffer.storeBytes(of: fields.3.bigEndian, toByteOffset: 6, as: UInt16.self)
        unsafe buffer.storeBytes(of: fields.4.bigEndian, toByteOffset: 8, as: UInt16.self)
        unsafe buffer.storeBytes(of: checksum.bigEndian, toByteOffset: 10, as: UInt16.self)
        unsafe buffer.storeBytes(of: source.rawValue.bigEndian, toByteOffset: 12, as: UInt32.self)
        unsafe buffer.storeBytes(of: destination.rawValue.bigEndian, toByteOffset: 16, as: UInt32.self)
    }
}

extension IPv4Packet {
    /// The first byte of a header without options: version 4, IHL 5.
    @inlinable public static var versionAndMinimumHeaderLength: UInt8 { 0x45 }

    /// Byte offsets of the IPv4 header's fields, from the start of the header (RFC 791 §3.1).
    /// The only place outside the views that may know where a field lies is code that uses these.
    public enum Field {
        /// Version (high nibble) and IHL (low nibble, in 32-bit words).
        @inlinable public static var versionAndHeaderLength: Int { 0 }
        /// DSCP and ECN (the former type-of-service byte).
        @inlinable public static var typeOfService: Int { 1 }
        /// Total length, header included (16 bits).
        @inlinable public static var totalLength: Int { 2 }
        /// Identification (16 bits).
        @inlinable public static var identification: Int { 4 }
        /// Flags (3 bits) and fragment offset (13 bits, in 8-byte units).
        @inlinable public static var flagsAndFragmentOffset: Int { 6 }
        /// Time to live.
        @inlinable public static var timeToLive: Int { 8 }
        /// The payload protocol.
        @inlinable public static var protocolNumber: Int { 9 }
        /// Header checksum (16 bits).
        @inlinable public static var headerChecksum: Int { 10 }
        /// Source address (32 bits).
        @inlinable public static var source: Int { 12 }
        /// Destination address (32 bits).
        @inlinable public static var destination: Int { 16 }
        /// The end of a header without options.
        @inlinable public static var minimumHeaderEnd: Int { 20 }
    }

    /// Bits of the flags-and-fragment-offset word (``Field/flagsAndFragmentOffset``).
    public enum Flags {
        /// The reserved ("evil", RFC 3514) bit.
        @inlinable public static var reserved: UInt16 { 0x8000 }
        /// Don't Fragment.
        @inlinable public static var dontFragment: UInt16 { 0x4000 }
        /// More Fragments.
        @inlinable public static var moreFragments: UInt16 { 0x2000 }
        /// The fragment offset.
        @inlinable public static var fragmentOffsetMask: UInt16 { 0x1FFF }
        /// MF or a non-zero offset: the packet is a fragment (Linux `ip_is_fragment`).
        @inlinable public static var fragmentMask: UInt16 { 0x3FFF }
    }
}
