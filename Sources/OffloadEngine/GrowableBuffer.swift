/// Memory an owner allocates once and grows when a request does not fit, never shrinking: the
/// one type behind the project's grow-and-copy buffers (the GRO engine's output records, output
/// piece lists, header arena and carry arenas; the segmenter's header arena; the capture reader's
/// input buffer).
///
/// ```text
/// base                       preserved               capacity
/// |---- elements the owner keeps ----|---- free ----|
/// ```
/// Growing allocates a larger block (at least twice the old one), moves the preserved elements
/// and frees the old block, so pointers into it are invalid afterwards: owners that hand out
/// pointers keep offsets, or grow only between uses. Elements are the owner's to initialize and
/// deinitialize; the buffer only owns the memory (freed in `deinit`). Storage is 16-byte aligned.
@safe  // owns its memory; every pointer use inside is marked `unsafe` and bounds-checked or commented `// Safe:`
public struct GrowableBuffer<Element>: ~Copyable {
    /// The first element.
    public private(set) var base: UnsafeMutablePointer<Element>
    /// Elements that fit.
    public private(set) var capacity: Int

    /// Allocates room for `capacity` elements.
    public init(capacity: Int) {
        self.capacity = max(1, capacity)
        unsafe base = unsafe Self.allocate(self.capacity)
    }

    deinit { unsafe base.deallocate() }

    /// The storage as raw bytes.
    @inlinable public var rawBase: UnsafeMutableRawPointer { unsafe UnsafeMutableRawPointer(base) }

    /// Makes room for `count` elements; the first `preserving` (initialized) elements move to the
    /// new storage when it grows.
    /// - Returns: whether the storage moved.
    @discardableResult
    public mutating func reserve(_ count: Int, preserving: Int = 0) -> Bool {
        guard count > capacity else { return false }
        let newCapacity = max(count, 2 * capacity)
        let bigger = unsafe Self.allocate(newCapacity)
        unsafe bigger.moveInitialize(from: base, count: min(preserving, capacity))
        unsafe base.deallocate()
        unsafe base = unsafe bigger
        capacity = newCapacity
        return true
    }

    static func allocate(_ count: Int) -> UnsafeMutablePointer<Element> {
        // Safe: the block is bound to Element once, here, and only used as Element.
        unsafe UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Element>.stride,
                                         alignment: max(16, MemoryLayout<Element>.alignment))
            .bindMemory(to: Element.self, capacity: count)
    }
}
