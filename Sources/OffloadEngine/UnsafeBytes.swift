import OffloadWire

/// Unchecked big-endian loads and stores at a raw address.
///
/// The engine's hot path works on packets it has already validated with ``PacketLayout``; this
/// type is the one place it reads and writes raw memory. Every caller documents why its offsets
/// are inside the validated range.
@usableFromInline
@safe  // internal: callers check offsets once (`// Safe:` comments); loads are marked `unsafe` inside
struct _UnsafeBytes {
    @usableFromInline let base: UnsafeRawPointer

    @inlinable @inline(__always)
    init(_ base: UnsafeRawPointer) { unsafe self.base = unsafe base }

    @inlinable @inline(__always)
    func u8(_ o: Int) -> UInt8 { unsafe base.load(fromByteOffset: o, as: UInt8.self) }
    @inlinable @inline(__always)
    func u16(_ o: Int) -> UInt16 { unsafe UInt16(bigEndian: base.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
    @inlinable @inline(__always)
    func u32(_ o: Int) -> UInt32 { unsafe UInt32(bigEndian: base.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
    @inlinable @inline(__always)
    func rawU64(_ o: Int) -> UInt64 { unsafe base.loadUnaligned(fromByteOffset: o, as: UInt64.self) }
    @inlinable @inline(__always)
    func rawU32(_ o: Int) -> UInt32 { unsafe base.loadUnaligned(fromByteOffset: o, as: UInt32.self) }

    /// Whether `count` bytes at `o` equal `count` bytes at `other`'s `p`.
    @inlinable @inline(__always)
    func equal(_ o: Int, _ other: _UnsafeBytes, _ p: Int, count: Int) -> Bool {
        var i = 0
        while i &+ 8 <= count {
            if rawU64(o &+ i) != other.rawU64(p &+ i) { return false }
            i &+= 8
        }
        while i &+ 4 <= count {
            if rawU32(o &+ i) != other.rawU32(p &+ i) { return false }
            i &+= 4
        }
        while i < count {
            if u8(o &+ i) != other.u8(p &+ i) { return false }
            i &+= 1
        }
        return true
    }

    /// Mixes `count` bytes at `o` into a hash.
    @inlinable @inline(__always)
    func hash(_ o: Int, count: Int, into h: inout UInt64) {
        var i = 0
        while i &+ 8 <= count {
            _mix(&h, rawU64(o &+ i))
            i &+= 8
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while i < count {
            tail |= UInt64(u8(o &+ i)) << shift
            shift &+= 8
            i &+= 1
        }
        _mix(&h, tail ^ UInt64(count))
    }

    /// The one's complement sum of `count` bytes at `o`.
    @inlinable @inline(__always)
    func sum(_ o: Int, count: Int) -> OnesComplementSum {
        unsafe InternetChecksum.unsafeSum(UnsafeRawBufferPointer(start: base + o, count: count))
    }
}

/// A multiply-xorshift mixing step (the finalizer of splitmix64/Murmur3 style hashes).
@inlinable @inline(__always)
func _mix(_ h: inout UInt64, _ v: UInt64) {
    h = (h ^ v) &* 0x9E37_79B9_7F4A_7C15
    h ^= h >> 29
}

/// Stores into a mutable raw buffer the engine owns (output headers).
@usableFromInline
@safe  // internal: callers check offsets once (`// Safe:` comments); loads are marked `unsafe` inside
struct _UnsafeMutableBytes {
    @usableFromInline let base: UnsafeMutableRawPointer
    @inlinable @inline(__always)
    init(_ base: UnsafeMutableRawPointer) { unsafe self.base = unsafe base }
    @inlinable @inline(__always)
    func store16(_ v: UInt16, _ o: Int) { unsafe base.storeBytes(of: v.bigEndian, toByteOffset: o, as: UInt16.self) }
    @inlinable @inline(__always)
    func store32(_ v: UInt32, _ o: Int) { unsafe base.storeBytes(of: v.bigEndian, toByteOffset: o, as: UInt32.self) }
    @inlinable @inline(__always)
    func store8(_ v: UInt8, _ o: Int) { unsafe base.storeBytes(of: v, toByteOffset: o, as: UInt8.self) }
    @inlinable @inline(__always)
    var readOnly: _UnsafeBytes { unsafe _UnsafeBytes(UnsafeRawPointer(base)) }
}
