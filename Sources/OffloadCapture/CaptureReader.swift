import OffloadEngine
import OffloadWire
import SystemPackage

/// A streaming reader of pcap and pcapng files.
///
/// Memory stays flat whatever the file size: one read buffer (grown only for a record larger
/// than it). Every length field is checked before it is used. On a corrupt or truncated file the
/// reader throws a ``CaptureError`` naming the record and byte offset; every packet before it
/// has already been returned.
///
/// pcap: all four magic numbers (µs and ns, both byte orders). pcapng: Section Header,
/// Interface Description, Enhanced Packet, Simple Packet and the obsolete Packet blocks; several
/// sections and interfaces; options kept; other blocks skipped.
public struct CaptureReader: ~Copyable {
    /// Where ``nextUntilDamage()`` stopped: the file's damage, nil while it reads cleanly.
    public private(set) var damage: CaptureError?

    /// The largest record accepted (a length field above this is a lie, not a packet).
    public static let maximumRecordLength = 16 << 20

    /// The file name, for errors.
    public let path: String
    /// The container format.
    public private(set) var format: CaptureFormat
    /// The interfaces seen so far (pcap: one). In a pcapng file with several sections the
    /// interfaces of later sections are appended, and packet records use these global indices.
    public private(set) var interfaces: [CaptureInterface] = []
    /// Where the current pcapng section's interfaces start in ``interfaces``.
    var sectionBase = 0
    /// Records returned so far.
    public private(set) var recordCount = 0
    /// The file's size in bytes, when known (for progress).
    public let fileSize: Int?

    var input: InputBuffer
    var bigEndian = false
    var ownsDescriptor: Bool

    /// Opens a capture file and reads its header.
    /// - Throws: ``CaptureError`` when the file cannot be opened or is not a capture.
    public init(path: String) throws(CaptureError) {
        let fd: FileDescriptor
        do { fd = try FileDescriptor.open(FilePath(path), .readOnly) } catch {
            throw CaptureError(.io(error as? Errno ?? .ioError, "open"), path: path, record: 0, offset: 0)
        }
        try self.init(fileDescriptor: fd, path: path, closeOnDeinit: true)
    }

    /// Reads a capture from an open descriptor (a file or a pipe).
    public init(fileDescriptor: FileDescriptor, path: String = "<input>", closeOnDeinit: Bool = false)
        throws(CaptureError)
    {
        self.path = path
        self.ownsDescriptor = closeOnDeinit
        if let size = try? fileDescriptor.seek(offset: 0, from: .end) {
            _ = try? fileDescriptor.seek(offset: 0, from: .start)
            fileSize = Int(size)
        } else {
            fileSize = nil
        }
        input = InputBuffer(fileDescriptor, path: path)
        format = .pcapng
        try readFileHeader()
    }

    deinit {
        if ownsDescriptor { try? input.fd.close() }
    }

    /// Bytes consumed so far (for progress).
    public var bytesRead: Int { input.position }

    // MARK: - Reading packets

    /// What ``read(into:checksum:)`` did.
    public enum ReadResult: Hashable, Sendable {
        /// A packet was appended to the batch (its metadata's tag is its record number).
        case packet(CaptureRecordInfo)
        /// The batch has no room for the next record; it stays unread for the next call.
        case batchFull
        /// The end of the file.
        case end
    }

    /// Reads the next packet and copies its bytes into `batch`.
    /// - Throws: ``CaptureError`` on a corrupt or truncated record.
    public mutating func read(into batch: inout PacketBatch, checksum: ChecksumState = .unverified)
        throws(CaptureError) -> ReadResult
    {
        guard let (info, dataOffset) = try nextRecord() else { return .end }
        let linkType = interfaces[info.interface].linkType
        let metadata = PacketMetadata(linkType: linkType, checksum: checksum, timestamp: info.timestamp,
                                      interface: UInt32(info.interface), gso: info.gso, tag: UInt64(info.record))
        let data = unsafe input.bytes(at: dataOffset, count: info.capturedLength)
        guard unsafe batch.append(data.bytes, metadata: metadata) else {
            pendingRecord = (info, dataOffset)
            return .batchFull
        }
        finishRecord()
        return .packet(info)
    }

    /// How ``fill(_:checksum:each:)`` ended.
    public enum FillResult: Sendable {
        /// The batch is full; there is more to read.
        case more
        /// The end of the file.
        case end
        /// A corrupt or truncated record; the packets before it are in the batch.
        case failed(CaptureError)
    }

    /// Reads packets into `batch` until it is full or the file ends, calling `each` with each
    /// one's facts and bytes (valid during the call). An error does not discard what was read: it
    /// comes back as ``FillResult/failed(_:)``.
    public mutating func fill(_ batch: inout PacketBatch, checksum: ChecksumState = .unverified,
                              each: (CaptureRecordInfo, UnsafeRawBufferPointer) -> Void) -> FillResult {
        while batch.count < batch.packetCapacity {
            do {
                switch try read(into: &batch, checksum: checksum) {
                case .packet(let info): unsafe each(info, batch.unsafeBuffer(at: batch.count - 1))
                case .batchFull: return .more
                case .end: return .end
                }
            } catch {
                return .failed(error)
            }
        }
        return .more
    }

    /// A batch sized for this reader: `packets` per poll, and room for the largest record.
    public static func makeBatch(packets: Int) -> PacketBatch {
        PacketBatch(packetCapacity: max(1, packets),
                    byteCapacity: max(max(1, packets) * 65_600, maximumRecordLength + 16))
    }

    /// The next packet, or nil at the end of the file or where the file is damaged; the damage is
    /// kept in ``damage``. The loop of a pipeline that keeps what it read before the damage (every
    /// command's policy: warn, keep what was read, say so, exit 1).
    public mutating func nextUntilDamage() -> CapturedPacket? {
        guard damage == nil else { return nil }
        do throws(CaptureError) { return try next() } catch {
            damage = error
            return nil
        }
    }

    /// Reads the next packet into a fresh array (allocates; for tools and tests).
    public mutating func next() throws(CaptureError) -> CapturedPacket? {
        guard let (info, dataOffset) = try nextRecord() else { return nil }
        let bytes = unsafe Array(input.bytes(at: dataOffset, count: info.capturedLength))
        finishRecord()
        return CapturedPacket(info: info, linkType: interfaces[info.interface].linkType, bytes: bytes)
    }

    var pendingRecord: (CaptureRecordInfo, Int)?
    var pendingLength = 0

    /// Parses the next record's header; the record's bytes stay in the buffer until `finishRecord`.
    mutating func nextRecord() throws(CaptureError) -> (CaptureRecordInfo, Int)? {
        if let pending = pendingRecord {
            pendingRecord = nil
            return pending
        }
        switch format {
        case .pcap(let nanosecond, _): return try nextPcapRecord(nanosecond: nanosecond)
        case .pcapng: return try nextPcapngRecord()
        }
    }

    mutating func finishRecord() {
        input.consume(pendingLength)
        pendingLength = 0
        recordCount += 1
    }

    func error(_ kind: CaptureError.Kind, record: Int? = nil, offset: Int? = nil) -> CaptureError {
        CaptureError(kind, path: path, record: record ?? recordCount + 1, offset: offset ?? input.position)
    }

    func u16(_ p: UnsafeRawBufferPointer, _ o: Int) -> UInt16 {
        let v = unsafe p.loadUnaligned(fromByteOffset: o, as: UInt16.self)
        return bigEndian ? UInt16(bigEndian: v) : UInt16(littleEndian: v)
    }

    func u32(_ p: UnsafeRawBufferPointer, _ o: Int) -> UInt32 {
        let v = unsafe p.loadUnaligned(fromByteOffset: o, as: UInt32.self)
        return bigEndian ? UInt32(bigEndian: v) : UInt32(littleEndian: v)
    }

    // MARK: - File header

    mutating func readFileHeader() throws(CaptureError) {
        guard try input.ensure(4) else {
            throw error(.truncated(needed: 4, available: input.available), record: 0, offset: 0)
        }
        let magic = unsafe UInt32(littleEndian: input.bytes(at: 0, count: 4).loadUnaligned(as: UInt32.self))
        switch magic {
        case 0xA1B2_C3D4, 0xA1B2_3C4D, 0xD4C3_B2A1, 0x4D3C_B2A1:
            let nanosecond = magic == 0xA1B2_3C4D || magic == 0x4D3C_B2A1
            bigEndian = magic == 0xD4C3_B2A1 || magic == 0x4D3C_B2A1
            format = .pcap(nanosecond: nanosecond, bigEndian: bigEndian)
            guard try input.ensure(24) else {
                throw error(.truncated(needed: 24, available: input.available), record: 0, offset: 0)
            }
            let h = unsafe input.bytes(at: 0, count: 24)
            let major = unsafe u16(h, 4)
            let minor = unsafe u16(h, 6)
            guard major == 2 else { throw error(.unsupportedVersion(major: major, minor: minor), record: 0, offset: 4) }
            let snap = unsafe u32(h, 16)
            let network = unsafe u32(h, 20) & 0x03FF_FFFF  // upper bits carry FCS information
            interfaces = [CaptureInterface(linkType: LinkType(rawValue: network), snapLength: snap,
                                           unitsPerSecond: nanosecond ? 1_000_000_000 : 1_000_000)]
            input.consume(24)
        case 0x0A0D_0D0A:
            format = .pcapng
            // The Section Header Block is read as the first block.
            guard try readPcapngBlock(expectSection: true) != nil else {
                throw error(.truncated(needed: 28, available: input.available), record: 0, offset: 0)
            }
            // Read the interface descriptions (and other blocks) before the first packet, so that
            // `interfaces` is complete for a writer created right after opening.
            while try input.ensure(8) {
                let type = unsafe u32(input.bytes(at: 0, count: 8), 0)
                if type == 6 || type == 3 || type == 2 || type == 0x0A0D_0D0A { break }
                guard try readPcapngBlock(expectSection: false) != nil else { break }
            }
        default:
            throw error(.notACapture(magic), record: 0, offset: 0)
        }
    }

    // MARK: - pcap

    mutating func nextPcapRecord(nanosecond: Bool) throws(CaptureError) -> (CaptureRecordInfo, Int)? {
        let start = input.position
        guard try input.ensure(16) else {
            if input.available == 0 { return nil }
            throw error(.truncated(needed: 16, available: input.available), offset: start)
        }
        let h = unsafe input.bytes(at: 0, count: 16)
        let seconds = unsafe UInt64(u32(h, 0))
        let fraction = unsafe UInt64(u32(h, 4))
        let captured = unsafe Int(u32(h, 8))
        let original = unsafe Int(u32(h, 12))
        guard captured <= Self.maximumRecordLength else {
            throw error(.badLength("captured length \(captured) is larger than \(Self.maximumRecordLength)"),
                        offset: start)
        }
        guard try input.ensure(16 + captured) else {
            throw error(.truncated(needed: 16 + captured, available: input.available), offset: start)
        }
        pendingLength = 16 + captured
        let ns = seconds &* 1_000_000_000 &+ (nanosecond ? fraction : fraction &* 1000)
        let info = CaptureRecordInfo(record: recordCount + 1, offset: start, timestamp: ns, interface: 0,
                                     originalLength: max(original, captured), capturedLength: captured, options: [])
        return (info, 16)
    }

    // MARK: - pcapng

    mutating func nextPcapngRecord() throws(CaptureError) -> (CaptureRecordInfo, Int)? {
        while true {
            switch try readPcapngBlock(expectSection: false) {
            case nil: return nil
            case .record(let info, let dataOffset)?: return (info, dataOffset)
            case .other?: continue
            }
        }
    }

    /// Reads one block. Section and interface blocks update the reader; packet blocks return a
    /// record (their bytes stay in the buffer); other blocks are skipped.
    mutating func readPcapngBlock(expectSection: Bool) throws(CaptureError) -> BlockResult? {
        let start = input.position
        guard try input.ensure(12) else {
            if input.available == 0 { return nil }
            throw error(.truncated(needed: 12, available: input.available), offset: start)
        }
        var head = unsafe input.bytes(at: 0, count: 12)
        let rawType = unsafe UInt32(littleEndian: head.loadUnaligned(as: UInt32.self))
        if rawType == 0x0A0D_0D0A {
            // The byte-order magic decides how this section is read.
            let bom = unsafe UInt32(littleEndian: head.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            switch bom {
            case 0x1A2B_3C4D: bigEndian = false
            case 0x4D3C_2B1A: bigEndian = true
            default: throw error(.notACapture(bom), offset: start + 8)
            }
            unsafe head = unsafe input.bytes(at: 0, count: 12)
        } else if expectSection {
            throw error(.blockOutsideSection, offset: start)
        }
        let type = unsafe u32(head, 0)
        let length = unsafe Int(u32(head, 4))
        guard length >= 12, length % 4 == 0, length <= Self.maximumRecordLength else {
            throw error(.badLength("block length \(length)"), offset: start + 4)
        }
        guard try input.ensure(length) else {
            throw error(.truncated(needed: length, available: input.available), offset: start)
        }
        let block = unsafe input.bytes(at: 0, count: length)
        guard unsafe Int(u32(block, length - 4)) == length else {
            throw error(.badLength(unsafe "trailing block length \(u32(block, length - 4)) differs from \(length)"),
                        offset: start + length - 4)
        }
        switch type {
        case 0x0A0D_0D0A:
            guard length >= 28 else { throw error(.badLength("section header of \(length) bytes"), offset: start + 4) }
            let major = unsafe u16(block, 12)
            guard major == 1 else {
                throw unsafe error(.unsupportedVersion(major: major, minor: u16(block, 14)), offset: start + 12)
            }
            sectionBase = interfaces.count
            input.consume(length)
            return .other
        case 1:  // Interface Description Block
            guard length >= 20 else { throw error(.badLength("interface block of \(length) bytes"), offset: start + 4) }
            var interface = unsafe CaptureInterface(linkType: LinkType(rawValue: UInt32(u16(block, 8))),
                                             snapLength: u32(block, 12))
            for option in unsafe try options(block, from: 16, to: length - 4, blockStart: start) {
                if option.code == 9, let resolution = option.value.first {
                    interface.unitsPerSecond = Self.unitsPerSecond(resolution)
                } else {
                    interface.options.append(option)
                }
            }
            interfaces.append(interface)
            input.consume(length)
            return .other
        case 6, 2:  // Enhanced Packet Block, obsolete Packet Block
            guard length >= 32 else { throw error(.badLength("packet block of \(length) bytes"), offset: start + 4) }
            let interface = unsafe sectionBase + (type == 6 ? Int(u32(block, 8)) : Int(u16(block, 8)))
            let captured = unsafe Int(u32(block, 20))
            let original = unsafe Int(u32(block, 24))
            guard 28 + captured <= length - 4 else {
                throw error(.badLength("captured length \(captured) runs past the \(length)-byte block"),
                            offset: start + 20)
            }
            guard interface < interfaces.count else {
                throw error(.unknownInterface(interface - sectionBase), offset: start + 8)
            }
            let units = unsafe UInt64(u32(block, 12)) << 32 | UInt64(u32(block, 16))
            let padded = (captured + 3) & ~3
            let opts = unsafe try options(block, from: 28 + padded, to: length - 4, blockStart: start)
            pendingLength = length
            let info = CaptureRecordInfo(record: recordCount + 1, offset: start,
                                         timestamp: Self.nanoseconds(units, interfaces[interface].unitsPerSecond),
                                         interface: interface, originalLength: max(original, captured),
                                         capturedLength: captured, options: opts,
                                         direction: opts.compactMap { [bigEndian] in $0.packetDirection(bigEndian: bigEndian) }.first)
            return .record(info, 28)
        case 3:  // Simple Packet Block: the section's interface 0, no timestamp
            guard sectionBase < interfaces.count else { throw error(.unknownInterface(0), offset: start) }
            let first = interfaces[sectionBase]
            let original = unsafe Int(u32(block, 8))
            let room = length - 16
            let captured = min(original, room, first.snapLength == 0 ? Int.max : Int(first.snapLength))
            pendingLength = length
            let info = CaptureRecordInfo(record: recordCount + 1, offset: start, timestamp: 0, interface: sectionBase,
                                         originalLength: max(original, captured), capturedLength: captured,
                                         options: [])
            return .record(info, 12)
        default:
            input.consume(length)  // Name Resolution, Interface Statistics, custom, ...: skipped
            return .other
        }
    }

    /// Parses an options area.
    func options(_ block: UnsafeRawBufferPointer, from: Int, to end: Int, blockStart: Int) throws(CaptureError)
        -> [PcapngOption]
    {
        var result: [PcapngOption] = []
        var o = from
        while o + 4 <= end {
            let code = unsafe u16(block, o)
            let length = unsafe Int(u16(block, o + 2))
            if code == 0 { break }
            guard o + 4 + length <= end else {
                throw error(.badLength("option \(code) of \(length) bytes runs past its block"), offset: blockStart + o)
            }
            unsafe result.append(PcapngOption(code: code, value: Array(UnsafeRawBufferPointer(rebasing: block[(o + 4)..<(o + 4 + length)]))))
            o += 4 + ((length + 3) & ~3)
        }
        return result
    }

    /// `if_tsresol`: 10^-v, or 2^-v when the top bit is set.
    static func unitsPerSecond(_ resolution: UInt8) -> UInt64 {
        let v = UInt64(resolution & 0x7F)
        if resolution & 0x80 != 0 { return v >= 63 ? 1 << 62 : 1 << v }
        var result: UInt64 = 1
        for _ in 0..<min(v, 19) { result *= 10 }
        return result
    }

    /// Converts timestamp units to nanoseconds.
    static func nanoseconds(_ units: UInt64, _ perSecond: UInt64) -> UInt64 {
        if perSecond == 1_000_000_000 { return units }
        let seconds = units / perSecond
        let fraction = units % perSecond
        let (high, low) = fraction.multipliedFullWidth(by: 1_000_000_000)
        return seconds &* 1_000_000_000 &+ perSecond.dividingFullWidth((high, low)).quotient
    }
}

/// What one pcapng block was.
enum BlockResult {
    /// A packet: its facts and where its bytes start in the block.
    case record(CaptureRecordInfo, Int)
    /// Anything else (already consumed).
    case other
}

/// A read buffer over a file descriptor.
struct InputBuffer: ~Copyable {
    let fd: FileDescriptor
    let path: String
    /// Grown only for a record larger than it (16 MiB at most).
    var buffer = GrowableBuffer<UInt8>(capacity: 1 << 20)
    var storage: UnsafeMutableRawPointer { unsafe buffer.rawBase }
    var capacity: Int { buffer.capacity }
    var start = 0
    var end = 0
    var consumedBefore = 0
    var atEOF = false

    init(_ fd: FileDescriptor, path: String) {
        self.fd = fd
        self.path = path
    }

    var available: Int { end - start }
    /// The file offset of the first unconsumed byte.
    var position: Int { consumedBefore + start }

    /// Makes `count` bytes available. Returns false when the file ends first.
    mutating func ensure(_ count: Int) throws(CaptureError) -> Bool {
        if available >= count { return true }
        if start > 0 {
            unsafe (storage).copyMemory(from: storage + start, byteCount: available)
            consumedBefore += start
            end -= start
            start = 0
        }
        buffer.reserve(count, preserving: end)
        while end < count && !atEOF {
            let room = unsafe UnsafeMutableRawBufferPointer(start: storage + end, count: capacity - end)
            let n: Int
            do { n = unsafe try fd.read(into: room) } catch {
                throw CaptureError(.io(error as? Errno ?? .ioError, "read"), path: path, record: 0, offset: position)
            }
            if n == 0 { atEOF = true }
            end += n
        }
        return available >= count
    }

    /// `count` bytes at `offset` from the first unconsumed byte.
    /// - Precondition: `ensure(offset + count)` returned true.
    func bytes(at offset: Int, count: Int) -> UnsafeRawBufferPointer {
        unsafe UnsafeRawBufferPointer(start: storage + start + offset, count: count)
    }

    mutating func consume(_ count: Int) { start += count }
}
