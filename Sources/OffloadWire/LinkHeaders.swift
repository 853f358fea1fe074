// MARK: - MAC address

/// A 48-bit IEEE MAC address, stored as the number of its six bytes in network order.
public struct MACAddress: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The address in the low 48 bits.
    public var rawValue: UInt64
    /// Wraps a value; bits above 48 are dropped.
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue & 0xFFFF_FFFF_FFFF }
    /// Colon-separated hexadecimal text.
    public var description: String {
        (0..<6).map { i in
            let b = UInt8(truncatingIfNeeded: rawValue >> (8 * UInt64(5 - i)))
            return (b < 16 ? "0" : "") + String(b, radix: 16)
        }.joined(separator: ":")
    }
}

/// One IEEE 802.1Q / 802.1ad tag.
public struct VLANTag: Hashable, Sendable {
    /// The tag protocol identifier (0x8100, 0x88A8 or 0x9100).
    public var tagProtocol: EtherType
    /// Priority code point (3 bits).
    public var priority: UInt8
    /// Drop eligible indicator.
    public var dropEligible: Bool
    /// VLAN identifier (12 bits).
    public var identifier: UInt16

    /// Creates a tag.
    public init(tagProtocol: EtherType = .vlan, priority: UInt8 = 0, dropEligible: Bool = false, identifier: UInt16) {
        self.tagProtocol = tagProtocol
        self.priority = priority
        self.dropEligible = dropEligible
        self.identifier = identifier
    }

    /// The 16-bit tag control information word.
    public var controlWord: UInt16 {
        UInt16(priority & 7) << 13 | (dropEligible ? 0x1000 : 0) | (identifier & 0x0FFF)
    }
}

// MARK: - Ethernet II

/// A validated view of an Ethernet II frame, with up to ``maximumTags`` VLAN tags.
///
/// ```text
///  0                   6                   12      14 (+4 per tag)
/// +-------------------+-------------------+-------+------------------
/// | destination MAC   | source MAC        | type  | payload ...
/// +-------------------+-------------------+-------+------------------
///                                   (0x8100/0x88a8: TCI, then the next type)
/// ```
/// IEEE 802.3 clause 3; IEEE 802.1Q.
public struct EthernetFrame: ~Escapable {
    /// The most tags the view follows (QinQ plus one spare).
    public static let maximumTags = 3
    /// The whole frame.
    public let bytes: RawSpan
    /// The number of VLAN tags between the source address and the final EtherType.
    public let tagCount: Int

    /// Validates a frame: the 14-byte header and every VLAN tag must be present.
    /// - Throws: ``WireError`` (`.ethernet` or `.vlan`, `.truncated`).
    @inlinable @_lifetime(copy bytes)
    public init(validating bytes: RawSpan) throws(WireError) {
        try bytes._require(14, .ethernet)
        var tags = 0
        var typeOffset = 12
        while EtherType(rawValue: bytes._u16Unchecked(typeOffset)).isVLANTag {
            guard tags < Self.maximumTags else {
                throw WireError(.vlan, .invalidField("more than \(Self.maximumTags) VLAN tags"), at: typeOffset)
            }
            // The tag (TPID, TCI) and the EtherType after it.
            guard bytes.byteCount >= typeOffset + 6 else {
                throw WireError(.vlan, .truncated(needed: typeOffset + 6, available: bytes.byteCount), at: typeOffset)
            }
            tags += 1
            typeOffset += 4
        }
        self.bytes = bytes
        self.tagCount = tags
    }

    /// The destination address.
    @inlinable public var destination: MACAddress {
        MACAddress(rawValue: UInt64(bytes._u32Unchecked(0)) << 16 | UInt64(bytes._u16Unchecked(4)))
    }
    /// The source address.
    @inlinable public var source: MACAddress {
        MACAddress(rawValue: UInt64(bytes._u16Unchecked(6)) << 32 | UInt64(bytes._u32Unchecked(8)))
    }
    /// The EtherType after all tags: what the payload is.
    @inlinable public var etherType: EtherType { EtherType(rawValue: bytes._u16Unchecked(12 + 4 * tagCount)) }
    /// The header length including tags (14 + 4 per tag).
    @inlinable public var headerLength: Int { 14 + 4 * tagCount }
    /// Tag `index` (0 is the outermost).
    /// - Precondition: `index < tagCount`.
    public func tag(_ index: Int) -> VLANTag {
        precondition(index >= 0 && index < tagCount, "tag index out of range")
        let o = 12 + 4 * index
        let tci = bytes._u16Unchecked(o + 2)
        return VLANTag(tagProtocol: EtherType(rawValue: bytes._u16Unchecked(o)), priority: UInt8(tci >> 13),
                       dropEligible: tci & 0x1000 != 0, identifier: tci & 0x0FFF)
    }
    /// The bytes after the header.
    public var payload: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(droppingFirst: headerLength) }
    }
}

/// The fields of an Ethernet II header, to parse or emit.
public struct EthernetHeaderRepr: Hashable, Sendable {
    /// Destination address.
    public var destination: MACAddress
    /// Source address.
    public var source: MACAddress
    /// Tags, outermost first.
    public var tags: [VLANTag]
    /// The payload's EtherType.
    public var etherType: EtherType

    /// Creates a header.
    public init(destination: MACAddress, source: MACAddress, tags: [VLANTag] = [], etherType: EtherType) {
        self.destination = destination
        self.source = source
        self.tags = tags
        self.etherType = etherType
    }
    /// Reads the fields of a validated frame.
    public init(parsing frame: borrowing EthernetFrame) {
        self.init(destination: frame.destination, source: frame.source,
                  tags: (0..<frame.tagCount).map { frame.tag($0) }, etherType: frame.etherType)
    }
    /// 14 + 4 per tag.
    public var encodedLength: Int { 14 + 4 * tags.count }
    /// Appends the header to `buffer`.
    public func encode(into buffer: inout [UInt8]) {
        buffer.appendBigEndian(UInt16(truncatingIfNeeded: destination.rawValue >> 32))
        buffer.appendBigEndian(UInt32(truncatingIfNeeded: destination.rawValue))
        buffer.appendBigEndian(UInt16(truncatingIfNeeded: source.rawValue >> 32))
        buffer.appendBigEndian(UInt32(truncatingIfNeeded: source.rawValue))
        for tag in tags {
            buffer.appendBigEndian(tag.tagProtocol.rawValue)
            buffer.appendBigEndian(tag.controlWord)
        }
        buffer.appendBigEndian(etherType.rawValue)
    }
}

// MARK: - Linux cooked capture

/// A validated view of a Linux "cooked" capture header, version 1 (16 bytes) or 2 (20 bytes).
///
/// ```text
/// v1: | packet type:2 | ARPHRD:2 | addr len:2 | address:8 | protocol:2 |
/// v2: | protocol:2 | reserved:2 | ifindex:4 | ARPHRD:2 | packet type:1 | addr len:1 | address:8 |
/// ```
/// tcpdump.org LINKTYPE_LINUX_SLL and LINKTYPE_LINUX_SLL2.
public struct LinuxCookedHeader: ~Escapable {
    /// The header and what follows it.
    public let bytes: RawSpan
    /// 1 or 2.
    public let version: Int

    /// Validates a cooked header of the given version.
    /// - Throws: ``WireError`` (`.linuxSLL`/`.linuxSLL2`, `.truncated`).
    @inlinable @_lifetime(copy bytes)
    public init(validating bytes: RawSpan, version: Int) throws(WireError) {
        precondition(version == 1 || version == 2, "Linux cooked capture has versions 1 and 2")
        try bytes._require(version == 1 ? 16 : 20, version == 1 ? .linuxSLL : .linuxSLL2)
        self.bytes = bytes
        self.version = version
    }
    /// 16 or 20.
    @inlinable public var headerLength: Int { version == 1 ? 16 : 20 }
    /// The protocol of the payload (an EtherType for IP).
    @inlinable public var protocolType: EtherType {
        EtherType(rawValue: bytes._u16Unchecked(version == 1 ? 14 : 0))
    }
    /// The packet type (0 to us, 4 outgoing, ...).
    @inlinable public var packetType: UInt16 {
        version == 1 ? bytes._u16Unchecked(0) : UInt16(bytes._u8Unchecked(10))
    }
    /// The interface index (version 2 only; 0 for version 1).
    @inlinable public var interfaceIndex: UInt32 { version == 2 ? bytes._u32Unchecked(4) : 0 }
    /// The bytes after the header.
    public var payload: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(droppingFirst: headerLength) }
    }
}

// MARK: - BSD loopback

/// A validated view of a BSD loopback header (LINKTYPE_NULL or LINKTYPE_LOOP): a 4-byte address family.
///
/// LINKTYPE_NULL stores the family in the capturing host's byte order, so both orders are tried.
/// IPv4 is family 2; IPv6 is 10 (Linux), 24 (NetBSD/OpenBSD), 28 (FreeBSD) or 30 (macOS).
public struct LoopbackHeader: ~Escapable {
    /// The header and what follows it.
    public let bytes: RawSpan
    /// The network protocol the family names.
    public let etherType: EtherType

    /// Validates the header and decodes the family.
    /// - Throws: ``WireError`` (`.null`: `.truncated` or `.unknownAddressFamily`).
    @inlinable @_lifetime(copy bytes)
    public init(validating bytes: RawSpan) throws(WireError) {
        try bytes._require(4, .null)
        let big = bytes._u32Unchecked(0)
        func family(_ f: UInt32) -> EtherType? {
            switch f {
            case 2: .ipv4
            case 10, 24, 28, 30: .ipv6
            default: nil
            }
        }
        if let t = family(big) ?? family(big.byteSwapped) {
            self.etherType = t
        } else {
            throw WireError(.null, .unknownAddressFamily(big), at: 0)
        }
        self.bytes = bytes
    }
    /// Always 4.
    public var headerLength: Int { 4 }
    /// The bytes after the header.
    public var payload: RawSpan {
        @_lifetime(copy self) get { bytes.extracting(droppingFirst: 4) }
    }
}

// MARK: - Byte-array helpers for encoders

extension Array where Element == UInt8 {
    /// Appends `value` in network byte order.
    @inlinable
    public mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        var v = value.bigEndian
        unsafe Swift.withUnsafeBytes(of: &v) { unsafe append(contentsOf: $0) }
    }

    /// Stores `value` in network byte order at `offset`.
    /// - Precondition: `offset + MemoryLayout<T>.size <= count`.
    @inlinable
    public mutating func storeBigEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= count, "store out of range")
        var v = value.bigEndian
        unsafe Swift.withUnsafeBytes(of: &v) { src in
            for i in 0..<src.count { self[offset + i] = unsafe src[i] }
        }
    }

    /// Loads a network-byte-order integer at `offset`.
    /// - Precondition: `offset + MemoryLayout<T>.size <= count`.
    @inlinable
    public func loadBigEndian<T: FixedWidthInteger>(_ type: T.Type = T.self, at offset: Int) -> T {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= count, "load out of range")
        var v: T = 0
        for i in 0..<MemoryLayout<T>.size { v = v << 8 | T(self[offset + i]) }
        return v
    }
}
