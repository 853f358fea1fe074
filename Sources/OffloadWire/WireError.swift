/// Why a buffer is not a valid header, and where.
///
/// Every view's validating initializer throws this. ``offset`` is the byte offset, from the start
/// of the buffer the view was asked to validate, of the field that is wrong; a packet parser that
/// validates nested headers shifts it so that it counts from the start of the frame.
public struct WireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The header that failed validation.
    public enum Layer: String, Hashable, Sendable {
        case ethernet, vlan, linuxSLL = "linux-sll", linuxSLL2 = "linux-sll2", null = "loopback"
        case ipv4, ipv6, ipv6Extension = "ipv6-extension", tcp, tcpOption = "tcp-option"
        case udp, icmpv4, icmpv6, virtio = "virtio-net-hdr", link
        /// ESP (RFC 4303): the packet, or its trailer after decryption.
        case esp
    }

    /// What is wrong.
    public enum Reason: Hashable, Sendable {
        /// The buffer ends before the header does.
        case truncated(needed: Int, available: Int)
        /// The version nibble is not the expected one.
        case badVersion(UInt8)
        /// A header-length field (IPv4 IHL, TCP data offset) gives fewer bytes than the fixed header.
        case headerLengthTooSmall(Int)
        /// A total-length field is smaller than the header it must contain.
        case lengthFieldTooSmall(Int)
        /// A length field claims more bytes than the buffer holds.
        case lengthExceedsBuffer(claimed: Int, available: Int)
        /// An option's length runs past the end of the options area.
        case optionOverrun(kind: UInt8)
        /// An option's length byte is impossible for its kind (below 2, or wrong for a known kind).
        case badOptionLength(kind: UInt8, length: Int)
        /// The link type is one the wire layer cannot decode.
        case unsupportedLinkType(UInt32)
        /// A loopback header's address family is not IPv4 or IPv6.
        case unknownAddressFamily(UInt32)
        /// An IPv6 extension-header chain is longer than the parser follows.
        case tooManyExtensionHeaders(Int)
        /// A field holds a value that is not allowed (the message says which).
        case invalidField(String)
    }

    /// The header that failed.
    public var layer: Layer
    /// What is wrong.
    public var reason: Reason
    /// The byte offset of the offending field.
    public var offset: Int

    /// Creates an error.
    @inlinable
    public init(_ layer: Layer, _ reason: Reason, at offset: Int) {
        self.layer = layer
        self.reason = reason
        self.offset = offset
    }

    /// The same error with its offset moved by `base` (for a header nested at `base`).
    @inlinable
    public func shifted(by base: Int) -> WireError { WireError(layer, reason, at: offset + base) }

    /// A one-line, human-readable explanation.
    public var description: String {
        let what: String
        switch reason {
        case .truncated(let needed, let available):
            what = "truncated: needs \(needed) bytes, has \(available)"
        case .badVersion(let v): what = "bad IP version \(v)"
        case .headerLengthTooSmall(let n): what = "header length \(n) is below the minimum"
        case .lengthFieldTooSmall(let n): what = "length field \(n) is smaller than the header"
        case .lengthExceedsBuffer(let claimed, let available):
            what = "length field claims \(claimed) bytes but only \(available) are present"
        case .optionOverrun(let kind): what = "option kind \(kind) runs past the end of the options"
        case .badOptionLength(let kind, let length): what = "option kind \(kind) has impossible length \(length)"
        case .unsupportedLinkType(let t): what = "unsupported link type \(t)"
        case .unknownAddressFamily(let f): what = "unknown loopback address family \(f)"
        case .tooManyExtensionHeaders(let n): what = "more than \(n) extension headers"
        case .invalidField(let s): what = s
        }
        return "\(layer.rawValue): \(what) (at byte \(offset))"
    }
}

// MARK: - Unchecked big-endian loads used by validated views

extension RawSpan {
    /// Loads a byte without a bounds check.
    /// - Precondition: the caller validated `offset < byteCount` (views do so once, at creation).
    @inlinable @inline(__always)
    func _u8Unchecked(_ offset: Int) -> UInt8 {
        unsafe unsafeLoad(fromUncheckedByteOffset: offset, as: UInt8.self)
    }

    /// Loads a big-endian 16-bit word without a bounds check.
    /// - Precondition: `offset + 2 <= byteCount`, validated by the view.
    @inlinable @inline(__always)
    func _u16Unchecked(_ offset: Int) -> UInt16 {
        UInt16(bigEndian: unsafe unsafeLoadUnaligned(fromUncheckedByteOffset: offset, as: UInt16.self))
    }

    /// Loads a big-endian 32-bit word without a bounds check.
    /// - Precondition: `offset + 4 <= byteCount`, validated by the view.
    @inlinable @inline(__always)
    func _u32Unchecked(_ offset: Int) -> UInt32 {
        UInt32(bigEndian: unsafe unsafeLoadUnaligned(fromUncheckedByteOffset: offset, as: UInt32.self))
    }

    /// Loads a big-endian 64-bit word without a bounds check.
    /// - Precondition: `offset + 8 <= byteCount`, validated by the view.
    @inlinable @inline(__always)
    func _u64Unchecked(_ offset: Int) -> UInt64 {
        UInt64(bigEndian: unsafe unsafeLoadUnaligned(fromUncheckedByteOffset: offset, as: UInt64.self))
    }

    /// Checks that `count` bytes are present, or throws a truncation error for `layer`.
    @inlinable @inline(__always)
    func _require(_ count: Int, _ layer: WireError.Layer) throws(WireError) {
        guard byteCount >= count else {
            throw WireError(layer, .truncated(needed: count, available: byteCount), at: byteCount)
        }
    }
}
