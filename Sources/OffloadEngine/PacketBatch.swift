import OffloadWire

/// How much of a packet's L4 checksum is already known to be right.
public enum ChecksumState: UInt8, Hashable, Sendable {
    /// Nothing is known: GRO verifies the TCP/UDP checksum in software before merging.
    case unverified
    /// Verified by someone else (a NIC's CHECKSUM_UNNECESSARY, virtio `DATA_VALID`): no work.
    case verified
    /// The L4 checksum field holds the pseudo-header sum only (virtio `NEEDS_CSUM`): treated as good.
    case partial
}

/// What the engine needs to know about a packet besides its bytes.
public struct PacketMetadata: Hashable, Sendable {
    /// The link type of the frame.
    public var linkType: LinkType
    /// What is known about the L4 checksum.
    public var checksum: ChecksumState
    /// When the packet was received, in nanoseconds on the caller's clock (capture time for files).
    public var timestamp: UInt64
    /// The interface the packet came in on; packets of different interfaces never merge.
    public var interface: UInt32
    /// For a packet that already is a super-packet (a TSO packet read from a TUN device): its GSO
    /// facts. Such packets are kept whole: GRO never merges into or out of them.
    public var gso: GSOInfo?
    /// The caller's own value (a record number, a cookie), carried to the output unchanged; a
    /// super-packet carries its first segment's.
    public var tag: UInt64

    /// Creates metadata.
    public init(linkType: LinkType, checksum: ChecksumState = .unverified, timestamp: UInt64 = 0,
                interface: UInt32 = 0, gso: GSOInfo? = nil, tag: UInt64 = 0) {
        self.linkType = linkType
        self.checksum = checksum
        self.timestamp = timestamp
        self.interface = interface
        self.gso = gso
        self.tag = tag
    }
}

/// A batch of received packets in one contiguous arena: what one receive poll returns.
///
/// The batch owns its memory (`~Copyable`, freed in `deinit`). Packets are appended by copying
/// bytes in (``append(_:metadata:)``) or by letting a reader write straight into the arena
/// (``appendUninitialized(maximumLength:metadata:_:)``, for `read(2)`/`readv(2)` and file readers).
/// ``removeAll()`` empties it for the next poll without freeing anything.
///
/// The GRO engine refers to packet bytes in place, without copying payloads; its output is valid
/// until the batch is changed (see ``GROEngine``).
@safe  // owns its memory; every pointer use inside is marked `unsafe` and bounds-checked or commented `// Safe:`
public struct PacketBatch: ~Copyable {
    /// Arena start. Never reallocated, so pointers into it stay valid until `removeAll`/`deinit`.
    @usableFromInline let _arena: UnsafeMutableRawPointer
    /// Arena size in bytes.
    public let byteCapacity: Int
    /// The most packets the batch takes.
    public let packetCapacity: Int
    @usableFromInline var _used = 0
    @usableFromInline var _offsets: [Int] = []
    @usableFromInline var _lengths: [Int] = []
    @usableFromInline var _metadata: [PacketMetadata] = []

    /// Creates an empty batch.
    /// - Parameters:
    ///   - packetCapacity: the most packets (a receive poll's size, e.g. 64).
    ///   - byteCapacity: the arena size; a packet that does not fit is refused.
    public init(packetCapacity: Int = 64, byteCapacity: Int = 64 * 65_600) {
        precondition(packetCapacity > 0 && byteCapacity > 0, "a batch needs room")
        self.packetCapacity = packetCapacity
        self.byteCapacity = byteCapacity
        unsafe _arena = .allocate(byteCount: byteCapacity, alignment: 16)
        _offsets.reserveCapacity(packetCapacity)
        _lengths.reserveCapacity(packetCapacity)
        _metadata.reserveCapacity(packetCapacity)
    }

    deinit { unsafe _arena.deallocate() }

    /// The number of packets.
    @inlinable public var count: Int { _offsets.count }
    /// Whether the batch holds no packets.
    @inlinable public var isEmpty: Bool { _offsets.isEmpty }
    /// Whether another packet of `length` bytes fits.
    @inlinable public func canAppend(length: Int) -> Bool {
        _offsets.count < packetCapacity && _used + length <= byteCapacity
    }

    /// Copies a packet in. Returns `false` (and copies nothing) when it does not fit.
    @discardableResult
    public mutating func append(_ bytes: RawSpan, metadata: PacketMetadata) -> Bool {
        guard canAppend(length: bytes.byteCount) else { return false }
        unsafe bytes.withUnsafeBytes { src in
            if let base = src.baseAddress, src.count > 0 {
                unsafe (_arena + _used).copyMemory(from: base, byteCount: src.count)
            }
        }
        _commit(length: bytes.byteCount, metadata: metadata)
        return true
    }

    /// Copies a packet in from an array; see ``append(_:metadata:)``.
    @discardableResult
    public mutating func append(_ bytes: [UInt8], metadata: PacketMetadata) -> Bool {
        unsafe append(bytes.span.bytes, metadata: metadata)
    }

    /// Lets `fill` write a packet straight into the arena.
    ///
    /// `fill` gets a buffer of `maximumLength` bytes and returns how many it wrote (or `nil` to
    /// add nothing). Returns `nil` without calling `fill` when `maximumLength` bytes do not fit.
    /// - Warning: `fill` must not keep the buffer.
    public mutating func appendUninitialized<E: Error>(
        maximumLength: Int, metadata: PacketMetadata,
        _ fill: (UnsafeMutableRawBufferPointer) throws(E) -> Int?
    ) throws(E) -> Int? {
        guard canAppend(length: maximumLength) else { return nil }
        let buffer = unsafe UnsafeMutableRawBufferPointer(start: _arena + _used, count: maximumLength)
        guard let written = unsafe try fill(buffer) else { return nil }
        precondition(written >= 0 && written <= maximumLength, "fill wrote outside its buffer")
        _commit(length: written, metadata: metadata)
        return written
    }

    @usableFromInline
    mutating func _commit(length: Int, metadata: PacketMetadata) {
        _offsets.append(_used)
        _lengths.append(length)
        _metadata.append(metadata)
        _used += (length + 15) & ~15  // keep every packet 16-byte aligned
    }

    /// Empties the batch, keeping its memory.
    public mutating func removeAll() {
        _used = 0
        _offsets.removeAll(keepingCapacity: true)
        _lengths.removeAll(keepingCapacity: true)
        _metadata.removeAll(keepingCapacity: true)
    }

    /// The bytes of packet `index`.
    @_lifetime(borrow self)
    public func bytes(at index: Int) -> RawSpan {
        let buffer = unsafe unsafeBuffer(at: index)
        return unsafe _overrideLifetime(buffer.bytes, borrowing: self)
    }

    /// The metadata of packet `index`.
    @inlinable public func metadata(at index: Int) -> PacketMetadata { _metadata[index] }

    /// Replaces the metadata of packet `index`.
    @inlinable public mutating func setMetadata(_ metadata: PacketMetadata, at index: Int) {
        _metadata[index] = metadata
    }

    /// The bytes of packet `index` as an unsafe buffer.
    /// - Warning: valid only until the batch is emptied, changed or destroyed.
    @inlinable
    public func unsafeBuffer(at index: Int) -> UnsafeRawBufferPointer {
        unsafe UnsafeRawBufferPointer(start: _arena + _offsets[index], count: _lengths[index])
    }
}
