import OffloadWire

/// One packet the engine emitted: an input unchanged, or a super-packet with its GSO facts.
public struct GROOutputPacket: Hashable, Sendable {
    /// The packet's length in bytes.
    public var length: Int
    /// The metadata: the (first) input's, with ``PacketMetadata/gso`` set on a super-packet and
    /// ``PacketMetadata/checksum`` saying whether its L4 checksum is complete (`.verified`) or
    /// partial (`.partial`).
    public var metadata: PacketMetadata
    /// Why it left now (the flush reason, or why it was never held).
    public var reason: GROReason?
    /// Whether the engine built it from two or more segments.
    public var isSuperPacket: Bool { metadata.gso != nil && !wasInputSuperPacket }
    /// Whether it already was a super-packet when it came in (kept whole).
    public var wasInputSuperPacket: Bool
    /// Where its headers are (nil when they did not parse). For a super-packet the IP length
    /// covers all segments; its header piece holds exactly `payloadOffset` bytes.
    public var layout: PacketLayout?
}

extension GROEngine {
    /// The number of packets the last call emitted.
    public var outputCount: Int { outCount }

    /// What packet `index` of the last call's output is.
    public func output(at index: Int) -> GROOutputPacket {
        precondition(index >= 0 && index < outCount, "output index out of range")
        let r = unsafe out.base[index]
        return GROOutputPacket(length: r.length, metadata: r.metadata, reason: r.reason,
                               wasInputSuperPacket: r.reason == .gsoInput, layout: r.layout)
    }

    /// Calls `body` with each piece of output packet `index`, in order: for a super-packet its
    /// header, then each segment's payload in place; for an unchanged packet its bytes.
    ///
    /// This is the gather list for `writev(2)`.
    /// - Warning: the buffers are valid only until the next call on the engine or until the
    ///   batch changes. Do not keep them.
    public func withOutputFragments<E: Error>(at index: Int, _ body: (UnsafeRawBufferPointer) throws(E) -> Void)
        throws(E)
    {
        precondition(index >= 0 && index < outCount, "output index out of range")
        let r = unsafe out.base[index]
        if r.headerLength > 0 {
            unsafe try body(UnsafeRawBufferPointer(start: headerArena.rawBase + r.headerOffset, count: r.headerLength))
        }
        for k in r.fragmentStart..<(r.fragmentStart + r.fragmentCount) { unsafe try body(outFragments.base[k]) }
    }

    /// Copies output packet `index` into one array (for files, tests and tools; allocates).
    public func outputBytes(at index: Int) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(output(at: index).length)
        unsafe withOutputFragments(at: index) { unsafe result.append(contentsOf: $0) }
        return result
    }

    /// Copies output packet `index` into `destination`, which must hold ``GROOutputPacket/length`` bytes.
    /// - Returns: the number of bytes written.
    public func copyOutput(at index: Int, into destination: UnsafeMutableRawBufferPointer) -> Int {
        precondition(destination.count >= output(at: index).length, "destination too small for the output packet")
        var offset = 0
        unsafe withOutputFragments(at: index) { piece in
            if let src = piece.baseAddress, piece.count > 0 {
                unsafe (destination.baseAddress! + offset).copyMemory(from: src, byteCount: piece.count)
            }
            offset += piece.count
        }
        return offset
    }
}
