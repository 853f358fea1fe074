/// TCP control bits (RFC 9293 §3.1; AE from RFC 9768 / the former NS bit).
public struct TCPFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The 9 flag bits, right-aligned.
    public var rawValue: UInt16
    /// Wraps flag bits.
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue & 0x1FF }

    /// No more data from sender.
    @inlinable public static var fin: TCPFlags { TCPFlags(rawValue: 0x001) }
    /// Synchronize sequence numbers.
    @inlinable public static var syn: TCPFlags { TCPFlags(rawValue: 0x002) }
    /// Reset the connection.
    @inlinable public static var rst: TCPFlags { TCPFlags(rawValue: 0x004) }
    /// Push.
    @inlinable public static var psh: TCPFlags { TCPFlags(rawValue: 0x008) }
    /// Acknowledgment field is significant.
    @inlinable public static var ack: TCPFlags { TCPFlags(rawValue: 0x010) }
    /// Urgent pointer field is significant.
    @inlinable public static var urg: TCPFlags { TCPFlags(rawValue: 0x020) }
    /// ECN-Echo.
    @inlinable public static var ece: TCPFlags { TCPFlags(rawValue: 0x040) }
    /// Congestion Window Reduced.
    @inlinable public static var cwr: TCPFlags { TCPFlags(rawValue: 0x080) }
    /// Accurate ECN (formerly NS).
    @inlinable public static var ae: TCPFlags { TCPFlags(rawValue: 0x100) }

    /// The eight flags CWR … FIN as the byte at ``TCPSegment/Field/flagByte`` holds them.
    @inlinable public var flagByte: UInt8 { UInt8(truncatingIfNeeded: rawValue) }

    /// Letters as tcpdump prints them (F S R P . U E W A).
    public var description: String {
        var s = ""
        if contains(.fin) { s += "F" }
        if contains(.syn) { s += "S" }
        if contains(.rst) { s += "R" }
        if contains(.psh) { s += "P" }
        if contains(.ack) { s += "." }
        if contains(.urg) { s += "U" }
        if contains(.ece) { s += "E" }
        if contains(.cwr) { s += "W" }
        if contains(.ae) { s += "A" }
        return s.isEmpty ? "none" : s
    }
}

/// A validated view of a TCP segment (RFC 9293 §3.1).
///
/// ```text
/// +-------------------------------+-------------------------------+
/// |          source port          |       destination port        |
/// |                        sequence number                        |
/// |                     acknowledgment number                     |
/// | offset| rsvd|A|C|E|U|A|P|R|S|F|            window             |
/// |           checksum            |        urgent pointer         |
/// |                     options (offset > 5) ...                  |
/// ```
/// Validation checks once: 20 bytes present, data offset ≥ 5, and the whole header inside the
/// buffer. The options are validated separately (``validateOptions()``), because forwarding
/// and GRO treat option bytes as opaque. The payload is the rest of the buffer: pass exactly the
/// L4 bytes (the IP layer's payload).
public struct TCPSegment: ~Escapable {
    /// The segment: header and payload.
    public let bytes: RawSpan

    /// Validates the fixed header and the data offset.
    /// - Throws: ``WireError`` with layer `.tcp`.
    @inlinable @_lifetime(copy bytes)
    public init(validating bytes: RawSpan) throws(WireError) {
        try bytes._require(20, .tcp)
        let headerLength = Int(bytes._u8Unchecked(Field.dataOffset) >> 4) * 4
        guard headerLength >= 20 else { throw WireError(.tcp, .headerLengthTooSmall(headerLength), at: 12) }
        guard headerLength <= bytes.byteCount else {
            throw WireError(.tcp, .lengthExceedsBuffer(claimed: headerLength, available: bytes.byteCount), at: 12)
        }
        self.bytes = bytes
    }

    /// Source port.
    @inlinable public var sourcePort: UInt16 { bytes._u16Unchecked(Field.sourcePort) }
    /// Destination port.
    @inlinable public var destinationPort: UInt16 { bytes._u16Unchecked(Field.destinationPort) }
    /// Sequence number.
    @inlinable public var sequenceNumber: UInt32 { bytes._u32Unchecked(Field.sequenceNumber) }
    /// Acknowledgment number.
    @inlinable public var acknowledgmentNumber: UInt32 { bytes._u32Unchecked(Field.acknowledgmentNumber) }
    /// Header length in bytes (data offset × 4).
    @inlinable public var headerLength: Int { Int(bytes._u8Unchecked(Field.dataOffset) >> 4) * 4 }
    /// The control bits.
    @inlinable public var flags: TCPFlags { TCPFlags(rawValue: bytes._u16Unchecked(Field.flags)) }
    /// The 32-bit word at offset 12: data offset, flags and window (Linux `tcp_flag_word`).
    @inlinable public var flagWord: UInt32 { bytes._u32Unchecked(Field.dataOffset) }
    /// Receive window (unscaled).
    @inlinable public var window: UInt16 { bytes._u16Unchecked(Field.window) }
    /// Checksum field.
    @inlinable public var checksum: UInt16 { bytes._u16Unchecked(Field.checksum) }
    /// Urgent pointer.
    @inlinable public var urgentPointer: UInt16 { bytes._u16Unchecked(Field.urgentPointer) }
    /// Payload length.
    @inlinable public var payloadLength: Int { bytes.byteCount - headerLength }
    /// The option bytes.
    public var options: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(20..<headerLength) }
    }
    /// The payload.
    public var payload: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(droppingFirst: headerLength) }
    }

    /// Whether the checksum verifies against the given pseudo-header sum.
    @inlinable
    public func checksumIsValid(pseudoHeader: OnesComplementSum) -> Bool {
        InternetChecksum.sum(bytes, initial: pseudoHeader).value == 0xFFFF
    }

    /// Parses the options into values, validating them.
    /// - Throws: ``WireError`` with layer `.tcpOption`, offset counted from the TCP header start.
    public func parsedOptions() throws(WireError) -> [TCPOption] {
        var result: [TCPOption] = []
        try parseOptions(into: &result)
        return result
    }

    /// The options before the first malformed one (all of them when the list is well formed):
    /// what a diagnostic tool reads from a packet it must not reject.
    public var optionsBeforeFirstError: [TCPOption] {
        var result: [TCPOption] = []
        try? parseOptions(into: &result)
        return result
    }

    func parseOptions(into result: inout [TCPOption]) throws(WireError) {
        let end = headerLength
        var o = 20
        while o < end {
            let kind = bytes._u8Unchecked(o)
            switch kind {
            case 0:
                result.append(.endOfList)
                return
            case 1:
                result.append(.noOperation)
                o += 1
                continue
            default: break
            }
            guard o + 1 < end else { throw WireError(.tcpOption, .optionOverrun(kind: kind), at: o) }
            let length = Int(bytes._u8Unchecked(o + 1))
            guard length >= 2 else {
                throw WireError(.tcpOption, .badOptionLength(kind: kind, length: length), at: o + 1)
            }
            guard o + length <= end else { throw WireError(.tcpOption, .optionOverrun(kind: kind), at: o) }
            func expect(_ n: Int) throws(WireError) {
                guard length == n else {
                    throw WireError(.tcpOption, .badOptionLength(kind: kind, length: length), at: o + 1)
                }
            }
            switch kind {
            case 2:
                try expect(4)
                result.append(.maximumSegmentSize(bytes._u16Unchecked(o + 2)))
            case 3:
                try expect(3)
                result.append(.windowScale(bytes._u8Unchecked(o + 2)))
            case 4:
                try expect(2)
                result.append(.sackPermitted)
            case 5:
                guard (length - 2) % 8 == 0, length >= 10 else {
                    throw WireError(.tcpOption, .badOptionLength(kind: kind, length: length), at: o + 1)
                }
                var blocks: [SACKBlock] = []
                var b = o + 2
                while b < o + length {
                    blocks.append(SACKBlock(left: bytes._u32Unchecked(b), right: bytes._u32Unchecked(b + 4)))
                    b += 8
                }
                result.append(.sack(blocks))
            case 8:
                try expect(10)
                result.append(.timestamp(value: bytes._u32Unchecked(o + 2), echoReply: bytes._u32Unchecked(o + 6)))
            default:
                var data: [UInt8] = []
                for i in (o + 2)..<(o + length) { data.append(bytes._u8Unchecked(i)) }
                result.append(.unknown(kind: kind, data: data))
            }
            o += length
        }
    }

    /// Checks the options without keeping them. See ``parsedOptions()``.
    public func validateOptions() throws(WireError) { _ = try parsedOptions() }
}

/// One SACK block (RFC 2018).
public struct SACKBlock: Hashable, Sendable {
    /// Left edge.
    public var left: UInt32
    /// Right edge.
    public var right: UInt32
    /// Creates a block.
    public init(left: UInt32, right: UInt32) {
        self.left = left
        self.right = right
    }
}

/// A TCP option (RFC 9293 §3.2, RFC 7323, RFC 2018). Unknown kinds keep their bytes.
public enum TCPOption: Hashable, Sendable {
    /// Kind 0.
    case endOfList
    /// Kind 1.
    case noOperation
    /// Kind 2: maximum segment size.
    case maximumSegmentSize(UInt16)
    /// Kind 3: window scale shift.
    case windowScale(UInt8)
    /// Kind 4.
    case sackPermitted
    /// Kind 5: SACK blocks.
    case sack([SACKBlock])
    /// Kind 8: timestamps.
    case timestamp(value: UInt32, echoReply: UInt32)
    /// Any other kind, with its data bytes (after kind and length).
    case unknown(kind: UInt8, data: [UInt8])

    /// Appends the option's bytes.
    public func encode(into buffer: inout [UInt8]) {
        switch self {
        case .endOfList: buffer.append(0)
        case .noOperation: buffer.append(1)
        case .maximumSegmentSize(let mss):
            buffer += [2, 4]
            buffer.appendBigEndian(mss)
        case .windowScale(let shift): buffer += [3, 3, shift]
        case .sackPermitted: buffer += [4, 2]
        case .sack(let blocks):
            buffer += [5, UInt8(2 + 8 * blocks.count)]
            for b in blocks {
                buffer.appendBigEndian(b.left)
                buffer.appendBigEndian(b.right)
            }
        case .timestamp(let value, let echo):
            buffer += [8, 10]
            buffer.appendBigEndian(value)
            buffer.appendBigEndian(echo)
        case .unknown(let kind, let data):
            buffer += [kind, UInt8(2 + data.count)]
            buffer += data
        }
    }
}

/// The fields of a TCP header, to parse or emit.
public struct TCPHeaderRepr: Hashable, Sendable {
    /// Source port.
    public var sourcePort: UInt16
    /// Destination port.
    public var destinationPort: UInt16
    /// Sequence number.
    public var sequenceNumber: UInt32
    /// Acknowledgment number.
    public var acknowledgmentNumber: UInt32 = 0
    /// Control bits.
    public var flags: TCPFlags = .ack
    /// Window.
    public var window: UInt16 = 65535
    /// Urgent pointer.
    public var urgentPointer: UInt16 = 0
    /// Options, padded with End of Option List to a multiple of 4 bytes when encoded.
    public var options: [TCPOption] = []

    /// Creates a header.
    public init(sourcePort: UInt16, destinationPort: UInt16, sequenceNumber: UInt32, acknowledgmentNumber: UInt32 = 0,
                flags: TCPFlags = .ack, window: UInt16 = 65535, urgentPointer: UInt16 = 0, options: [TCPOption] = []) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.sequenceNumber = sequenceNumber
        self.acknowledgmentNumber = acknowledgmentNumber
        self.flags = flags
        self.window = window
        self.urgentPointer = urgentPointer
        self.options = options
    }

    /// Reads a validated segment's header; throws if its options are malformed.
    public init(parsing segment: borrowing TCPSegment) throws(WireError) {
        self.init(sourcePort: segment.sourcePort, destinationPort: segment.destinationPort,
                  sequenceNumber: segment.sequenceNumber, acknowledgmentNumber: segment.acknowledgmentNumber,
                  flags: segment.flags, window: segment.window, urgentPointer: segment.urgentPointer,
                  options: try segment.parsedOptions())
    }

    /// The option bytes, padded to a multiple of 4.
    public var optionBytes: [UInt8] {
        var b: [UInt8] = []
        for o in options { o.encode(into: &b) }
        while b.count % 4 != 0 { b.append(0) }
        return b
    }

    /// 20 plus the padded options.
    public var encodedLength: Int { 20 + optionBytes.count }

    /// Appends the header with a zero checksum field; see ``TCPHeaderRepr/encode(into:checksumFor:pseudoHeader:)``.
    /// - Precondition: the options fit in 40 bytes.
    public func encode(into buffer: inout [UInt8]) {
        let opts = optionBytes
        precondition(opts.count <= 40, "TCP options exceed 40 bytes")
        buffer.appendBigEndian(sourcePort)
        buffer.appendBigEndian(destinationPort)
        buffer.appendBigEndian(sequenceNumber)
        buffer.appendBigEndian(acknowledgmentNumber)
        buffer.appendBigEndian(UInt16((20 + opts.count) / 4) << 12 | flags.rawValue)
        buffer.appendBigEndian(window)
        buffer.appendBigEndian(UInt16(0))
        buffer.appendBigEndian(urgentPointer)
        buffer += opts
    }

    /// Appends the header and `payload`, with the checksum computed over the pseudo-header.
    public func encode(into buffer: inout [UInt8], payload: [UInt8], pseudoHeader: (Int) -> OnesComplementSum) {
        let start = buffer.count
        encode(into: &buffer)
        buffer += payload
        let length = buffer.count - start
        let sum = unsafe buffer.span.bytes.extracting(start..<buffer.count).withUnsafeBytes {
            unsafe InternetChecksum.unsafeSum($0, initial: pseudoHeader(length))
        }
        buffer.storeBigEndian(sum.checksum, at: start + 16)
    }
}

extension TCPSegment {
    /// Byte offsets of the TCP header's fields (RFC 9293 §3.1).
    public enum Field {
        /// Source port.
        @inlinable public static var sourcePort: Int { 0 }
        /// Destination port.
        @inlinable public static var destinationPort: Int { 2 }
        /// Sequence number (32 bits).
        @inlinable public static var sequenceNumber: Int { 4 }
        /// Acknowledgment number (32 bits).
        @inlinable public static var acknowledgmentNumber: Int { 8 }
        /// Data offset (high nibble, in 32-bit words); it starts the 32-bit word of offset, flags
        /// and window that GRO compares as one (see ``TCPSegment/FlagWord``).
        @inlinable public static var dataOffset: Int { 12 }
        /// The 9 flag bits, read as the low bits of the 16-bit word at offset 12.
        @inlinable public static var flags: Int { 12 }
        /// The byte of the eight flags CWR … FIN (AE is the low bit of byte 12).
        @inlinable public static var flagByte: Int { 13 }
        /// Window (16 bits).
        @inlinable public static var window: Int { 14 }
        /// Checksum (16 bits).
        @inlinable public static var checksum: Int { 16 }
        /// Urgent pointer (16 bits).
        @inlinable public static var urgentPointer: Int { 18 }
        /// The end of a header without options; options follow.
        @inlinable public static var options: Int { 20 }
    }

    /// Masks of the 32-bit word at ``Field/dataOffset``: data offset, flags and window, as GRO
    /// compares them in one load (Linux `tcp_flag_word`).
    public enum FlagWord {
        /// Where the flags sit in the word.
        @inlinable public static func flags(_ f: TCPFlags) -> UInt32 { UInt32(f.rawValue) << 16 }
        /// CWR.
        @inlinable public static var cwr: UInt32 { flags(.cwr) }
        /// The flags that may differ between segments of one super-packet: CWR, PSH, FIN
        /// (Linux `tcp_gro_receive`: `flush |= (flags ^ flags2) & ~(CWR | FIN | PSH)`).
        @inlinable public static var mayDiffer: UInt32 { flags(.cwr) | flags(.psh) | flags(.fin) }
        /// PSH or FIN: the segment ends a super-packet.
        @inlinable public static var pushOrFin: UInt32 { flags(.psh) | flags(.fin) }
    }
}
