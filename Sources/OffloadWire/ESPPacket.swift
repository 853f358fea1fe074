/// A validated view of an ESP packet (RFC 4303) in the layout of ``ESPFormat``: SPI, sequence
/// number, 8-byte IV, ciphertext, 16-byte ICV.
///
/// ```text
///  0       4        8                16                              end-16      end
///  | SPI  | seq    | IV (8)          | ciphertext: inner ‖ pad ‖ pad length ‖ next header | ICV (16) |
/// ```
/// Validation checks once that the header, the two trailer bytes and the ICV are present
/// (``ESPFormat/minimumLength``); the ciphertext is everything between header and ICV. The
/// trailer is encrypted: read it with ``ESPPayload`` after the ICV verified.
public struct ESPPacket: ~Escapable {
    /// The packet (the UDP payload after any non-ESP marker check: it starts at the SPI).
    public let bytes: RawSpan

    /// Validates the length: header, trailer and ICV present.
    /// - Throws: ``WireError`` with layer `.esp` when the packet is shorter.
    @inlinable @_lifetime(copy bytes)
    public init(validating bytes: RawSpan) throws(WireError) {
        try bytes._require(ESPFormat.minimumLength, .esp)
        self.bytes = bytes
    }

    /// The SPI of a datagram too short to be a packet (`nil`: fewer than 4 bytes). Zero is the
    /// non-ESP marker: IKE on the same port (RFC 3948 §2.2).
    @inlinable public static func spi(of bytes: RawSpan) -> UInt32? {
        guard bytes.byteCount >= ESPFormat.nonESPMarkerLength else { return nil }
        // Safe: 4 bytes are present (checked above).
        return bytes._u32Unchecked(ESPFormat.spi)
    }

    /// Security Parameters Index.
    @inlinable public var spi: UInt32 {
        // Safe: validation checked ESPFormat.minimumLength (34) bytes, so bytes 0..<4 exist.
        bytes._u32Unchecked(ESPFormat.spi)
    }
    /// The sequence number on the wire (the low 32 bits with ESN).
    @inlinable public var sequence: UInt32 {
        // Safe: bytes 4..<8 lie inside the 34 validated bytes.
        bytes._u32Unchecked(ESPFormat.sequence)
    }
    /// The IV, big-endian as sent (the nonce's last 8 bytes).
    @inlinable public var iv: UInt64 {
        // Safe: bytes 8..<16 lie inside the 34 validated bytes.
        bytes._u64Unchecked(ESPFormat.iv)
    }
    /// Where the ciphertext is: after the header, before the ICV (at least the 2 trailer bytes).
    @inlinable public var ciphertextRange: Range<Int> {
        ESPFormat.headerLength..<(bytes.byteCount - ESPFormat.icvLength)
    }
    /// Where the ICV is: the last 16 bytes.
    @inlinable public var icvRange: Range<Int> { (bytes.byteCount - ESPFormat.icvLength)..<bytes.byteCount }
    /// The ciphertext.
    public var ciphertext: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(ciphertextRange) }
    }
    /// The ICV.
    public var icv: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(icvRange) }
    }
}

/// The fields of an ESP header, to parse or write: SPI, sequence number (low 32 bits), IV.
public struct ESPHeader: Hashable, Sendable {
    /// Security Parameters Index.
    public var spi: UInt32
    /// The sequence number on the wire (the low 32 bits with ESN).
    public var sequence: UInt32
    /// The IV.
    public var iv: UInt64

    /// A header.
    @inlinable public init(spi: UInt32, sequence: UInt32, iv: UInt64) {
        self.spi = spi
        self.sequence = sequence
        self.iv = iv
    }

    /// The header of a validated packet.
    @inlinable public init(parsing packet: borrowing ESPPacket) {
        self.init(spi: packet.spi, sequence: packet.sequence, iv: packet.iv)
    }

    /// Writes the header over the first ``ESPFormat/headerLength`` bytes of `buffer`.
    /// - Precondition: `buffer.count >= ESPFormat.headerLength`.
    @inlinable public func write(to buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= ESPFormat.headerLength)
        // Safe: the precondition guarantees the 16 bytes.
        unsafe buffer.storeBytes(of: spi.bigEndian, toByteOffset: ESPFormat.spi, as: UInt32.self)
        unsafe buffer.storeBytes(of: sequence.bigEndian, toByteOffset: ESPFormat.sequence, as: UInt32.self)
        unsafe buffer.storeBytes(of: iv.bigEndian, toByteOffset: ESPFormat.iv, as: UInt64.self)
    }

    /// The header's 16 bytes.
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: ESPFormat.headerLength)
        unsafe out.withUnsafeMutableBytes { unsafe write(to: $0) }
        return out
    }
}

/// The ESP trailer to write after an inner packet: padding 1, 2, 3 to a 4-byte boundary, the pad
/// length, the next header (RFC 4303 §2.4–2.6). At most 5 bytes.
public struct ESPTrailer: Hashable, Sendable {
    /// The pad length (0 to 3).
    public var padLength: Int
    /// The next header (``ESPFormat/nextHeaderIPv4``, ``ESPFormat/nextHeaderIPv6``).
    public var nextHeader: UInt8

    /// The most bytes a trailer takes.
    @inlinable public static var maximumLength: Int { 3 + ESPFormat.trailerLength }

    /// The trailer after `innerLength` bytes.
    @inlinable public init(innerLength: Int, nextHeader: UInt8) {
        padLength = ESPFormat.padding(for: innerLength)
        self.nextHeader = nextHeader
    }

    /// Its length: padding, pad length, next header.
    @inlinable public var length: Int { padLength + ESPFormat.trailerLength }

    /// Writes the trailer over the first ``length`` bytes of `buffer`.
    /// - Precondition: `buffer.count >= length`.
    @inlinable public func write(to buffer: UnsafeMutableRawBufferPointer) {
        precondition(padLength >= 0 && padLength < 256 && buffer.count >= length)
        // Safe: the precondition guarantees `length` bytes; every index below is under it.
        for i in 0..<padLength { unsafe buffer[i] = UInt8(truncatingIfNeeded: i + 1) }
        unsafe buffer[padLength] = UInt8(truncatingIfNeeded: padLength)
        unsafe buffer[padLength + 1] = nextHeader
    }

    /// The trailer's bytes.
    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: length)
        unsafe out.withUnsafeMutableBytes { unsafe write(to: $0) }
        return out
    }
}

/// A validated view of a decrypted ESP payload: the inner packet, padding, pad length, next
/// header (RFC 4303 §2.4–2.6). Read only after the ICV verified: before, the bytes are ciphertext.
///
/// Validation checks once: the two trailer bytes are present, the pad length fits before them,
/// and the padding is 1, 2, 3, ... as RFC 4303 §2.4 requires of the default padding.
public struct ESPPayload: ~Escapable {
    /// The plaintext (what was the ciphertext range of the packet).
    public let bytes: RawSpan

    /// Validates the trailer.
    /// - Throws: ``WireError`` with layer `.esp`: truncated (under 2 bytes), or an invalid pad
    ///   length or padding byte.
    @inlinable @_lifetime(copy bytes)
    public init(validating bytes: RawSpan) throws(WireError) {
        try bytes._require(ESPFormat.trailerLength, .esp)
        let end = bytes.byteCount
        // Safe: end >= 2 (checked above).
        let padLength = Int(bytes._u8Unchecked(end - 2))
        guard padLength + ESPFormat.trailerLength <= end else {
            throw WireError(.esp, .invalidField("pad length \(padLength) is longer than the payload"), at: end - 2)
        }
        let padStart = end - ESPFormat.trailerLength - padLength
        for i in 0..<padLength {
            // Safe: padStart + i < end - 2 (padStart >= 0 checked above).
            guard bytes._u8Unchecked(padStart + i) == UInt8(truncatingIfNeeded: i + 1) else {
                throw WireError(.esp, .invalidField("padding byte \(i) is not \(i + 1)"), at: padStart + i)
            }
        }
        self.bytes = bytes
    }

    /// The pad length.
    @inlinable public var padLength: Int {
        // Safe: validation checked 2 bytes.
        Int(bytes._u8Unchecked(bytes.byteCount - 2))
    }
    /// The next header: what the inner packet is.
    @inlinable public var nextHeader: UInt8 {
        // Safe: validation checked 2 bytes.
        bytes._u8Unchecked(bytes.byteCount - 1)
    }
    /// The inner packet's length (validation checked it is not negative).
    @inlinable public var innerLength: Int { bytes.byteCount - ESPFormat.trailerLength - padLength }
    /// The inner packet.
    public var inner: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(first: innerLength) }
    }
}
