import OffloadEngine
import OffloadWire
import SystemPackage

/// A streaming writer of pcap or pcapng files.
///
/// pcapng output gets one Section Header Block, an Interface Description Block per input
/// interface (their options kept, timestamps in nanoseconds) and one Enhanced Packet Block per
/// packet with its options. pcap output holds a single link type.
@safe  // owns its memory; every pointer use inside is marked `unsafe` and bounds-checked or commented `// Safe:`
public struct CaptureWriter: ~Copyable {
    /// The file name, for errors.
    public let path: String
    /// The format written.
    public let format: CaptureFormat
    /// Packets written.
    public private(set) var packetCount = 0
    /// Bytes written (including what is still buffered).
    public private(set) var byteCount = 0

    let fd: FileDescriptor
    let ownsDescriptor: Bool
    var buffer: UnsafeMutableRawPointer
    let capacity = 256 << 10
    var used = 0
    var interfaces: [CaptureInterface]

    /// Creates (or truncates) `path` and writes the file header.
    /// - Throws: ``CaptureError`` when the file cannot be created, or when pcap output is asked
    ///   for interfaces of different link types.
    public init(path: String, format: CaptureFormat, interfaces: [CaptureInterface]) throws(CaptureError) {
        let fd: FileDescriptor
        do {
            fd = try FileDescriptor.open(FilePath(path), .writeOnly, options: [.create, .truncate],
                                         permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } catch {
            throw CaptureError(.io(error as? Errno ?? .ioError, "create"), path: path, record: 0, offset: 0)
        }
        try self.init(fileDescriptor: fd, path: path, format: format, interfaces: interfaces, closeOnDeinit: true)
    }

    /// Writes to an open descriptor.
    public init(fileDescriptor: FileDescriptor, path: String, format: CaptureFormat, interfaces: [CaptureInterface],
                closeOnDeinit: Bool = false) throws(CaptureError) {
        // Checked before any property is set: once self is whole, a throw runs deinit.
        if case .pcap = format, Set(interfaces.map(\.linkType)).count > 1 {
            if closeOnDeinit { try? fileDescriptor.close() }
            throw CaptureError(.unsupportedOutput("a pcap file holds one link type; these interfaces have "
                + "\(Set(interfaces.map(\.linkType.description)).sorted()); write pcapng"), path: path, record: 0, offset: 0)
        }
        self.path = path
        self.format = format
        self.fd = fileDescriptor
        self.ownsDescriptor = closeOnDeinit
        self.interfaces = interfaces
        unsafe buffer = .allocate(byteCount: 256 << 10, alignment: 4096)
        writeHeader()
    }

    deinit {
        // Best effort: call flush() to see write errors.
        _ = unsafe try? fd.writeAll(UnsafeRawBufferPointer(start: buffer, count: used))
        if ownsDescriptor { try? fd.close() }
        unsafe buffer.deallocate()
    }

    // MARK: - Writing

    /// Writes one packet whose bytes `produce` hands over in pieces (a gather list).
    /// - Parameters:
    ///   - timestamp: nanoseconds since the epoch.
    ///   - interface: the interface index.
    ///   - length: the total of the pieces' lengths.
    ///   - originalLength: the length on the wire (≥ `length`).
    ///   - options: pcapng packet options (ignored for pcap).
    ///   - produce: calls its argument with each piece, in order.
    public mutating func writePacket(timestamp: UInt64, interface: Int, length: Int, originalLength: Int? = nil,
                                     options: [PcapngOption] = [],
                                     _ produce: ((UnsafeRawBufferPointer) -> Void) -> Void) throws(CaptureError) {
        let original = max(originalLength ?? length, length)
        // The record's header and trailer go straight into the buffer: nothing is allocated per
        // packet (options, when there are any, are encoded once here).
        switch format {
        case .pcap(let nanosecond, let big):
            let seconds = UInt32(truncatingIfNeeded: timestamp / 1_000_000_000)
            let fraction = UInt32(truncatingIfNeeded: nanosecond ? timestamp % 1_000_000_000 : (timestamp % 1_000_000_000) / 1000)
            try reserve(16)
            store32(seconds, big)
            store32(fraction, big)
            store32(UInt32(truncatingIfNeeded: length), big)
            store32(UInt32(truncatingIfNeeded: original), big)
            unsafe try appendPieces(length, produce)
        case .pcapng:
            let padded = (length + 3) & ~3
            let optionBytes = options.isEmpty ? [] : encode(options)
            let total = 28 + padded + optionBytes.count + 4
            try reserve(28)
            store32(6, false)
            store32(UInt32(truncatingIfNeeded: total), false)
            store32(UInt32(truncatingIfNeeded: interface), false)
            store32(UInt32(truncatingIfNeeded: timestamp >> 32), false)
            store32(UInt32(truncatingIfNeeded: timestamp), false)
            store32(UInt32(truncatingIfNeeded: length), false)
            store32(UInt32(truncatingIfNeeded: original), false)
            unsafe try appendPieces(length, produce)
            try reserve(padded - length + optionBytes.count + 4)
            for _ in length..<padded { store8(0) }
            if !optionBytes.isEmpty { try append(optionBytes) }
            store32(UInt32(truncatingIfNeeded: total), false)
        }
        packetCount += 1
    }

    /// Writes one packet from an array.
    public mutating func writePacket(_ bytes: [UInt8], timestamp: UInt64, interface: Int = 0,
                                     originalLength: Int? = nil, options: [PcapngOption] = []) throws(CaptureError) {
        unsafe try writePacket(timestamp: timestamp, interface: interface, length: bytes.count, originalLength: originalLength,
                        options: options) { sink in unsafe bytes.withUnsafeBytes { unsafe sink($0) } }
    }

    /// Declares interfaces that appeared after the writer was created (a reader meets them
    /// mid-file): pcapng gets an Interface Description Block for each new one; pcap accepts only
    /// the same link type.
    /// - Throws: ``CaptureError`` for a pcap file and a different link type.
    public mutating func declareInterfaces(_ all: [CaptureInterface]) throws(CaptureError) {
        guard all.count > interfaces.count else { return }
        let new = Array(all[interfaces.count...])
        if case .pcap = format {
            guard new.allSatisfy({ $0.linkType == interfaces.first?.linkType }) else {
                throw CaptureError(.unsupportedOutput("a pcap file holds one link type; write pcapng"), path: path,
                                   record: packetCount, offset: byteCount)
            }
            interfaces += new
            return
        }
        var h: [UInt8] = []
        for interface in new { appendInterfaceBlock(&h, interface) }
        interfaces += new
        try append(h)
    }

    func appendInterfaceBlock(_ h: inout [UInt8], _ interface: CaptureInterface) {
        let options = encode([PcapngOption(code: 9, value: [9])] + interface.options)
        let total = 20 + options.count  // type, length, link type, reserved, snap length, options, length
        append32(&h, 1, false)
        append32(&h, UInt32(total), false)
        append16(&h, UInt16(truncatingIfNeeded: interface.linkType.rawValue), false)
        append16(&h, 0, false)
        append32(&h, interface.snapLength, false)
        h += options
        append32(&h, UInt32(total), false)
    }

    /// Writes what is buffered to the file.
    public mutating func flush() throws(CaptureError) {
        var offset = 0
        while offset < used {
            do {
                unsafe offset += try fd.write(UnsafeRawBufferPointer(start: buffer + offset, count: used - offset))
            } catch {
                throw CaptureError(.io(error as? Errno ?? .ioError, "write"), path: path, record: packetCount,
                                   offset: byteCount - used + offset)
            }
        }
        used = 0
    }

    // MARK: - Internals

    /// Puts the file header into the (empty, 4 MiB) buffer; it is written with the first flush.
    mutating func writeHeader() {
        var h: [UInt8] = []
        switch format {
        case .pcap(let nanosecond, let big):
            append32(&h, nanosecond ? 0xA1B2_3C4D : 0xA1B2_C3D4, big)
            append16(&h, 2, big)
            append16(&h, 4, big)
            append32(&h, 0, big)
            append32(&h, 0, big)
            append32(&h, max(262_144, interfaces.map(\.snapLength).max() ?? 0), big)
            append32(&h, interfaces.first?.linkType.rawValue ?? LinkType.ethernet.rawValue, big)
        case .pcapng:
            let application = encode([PcapngOption(code: 4, value: Array("swift-offload".utf8))])
            append32(&h, 0x0A0D_0D0A, false)
            append32(&h, UInt32(28 + application.count), false)
            append32(&h, 0x1A2B_3C4D, false)
            append16(&h, 1, false)
            append16(&h, 0, false)
            h += [UInt8](repeating: 0xFF, count: 8)  // section length unknown
            h += application
            append32(&h, UInt32(28 + application.count), false)
            for interface in interfaces { appendInterfaceBlock(&h, interface) }
        }
        precondition(h.count <= capacity, "interface descriptions larger than the write buffer")
        unsafe h.withUnsafeBytes { unsafe (buffer + used).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        used += h.count
        byteCount += h.count
    }

    /// Encodes options with their end-of-options marker (empty when there are none).
    func encode(_ options: [PcapngOption]) -> [UInt8] {
        guard !options.isEmpty else { return [] }
        var b: [UInt8] = []
        for o in options where o.value.count <= 0xFFFF {
            append16(&b, o.code, false)
            append16(&b, UInt16(o.value.count), false)
            b += o.value
            b += [UInt8](repeating: 0, count: ((o.value.count + 3) & ~3) - o.value.count)
        }
        b += [0, 0, 0, 0]
        return b
    }

    func append32(_ b: inout [UInt8], _ v: UInt32, _ big: Bool) {
        let x = big ? v.bigEndian : v.littleEndian
        unsafe withUnsafeBytes(of: x) { unsafe b.append(contentsOf: $0) }
    }

    func append16(_ b: inout [UInt8], _ v: UInt16, _ big: Bool) {
        let x = big ? v.bigEndian : v.littleEndian
        unsafe withUnsafeBytes(of: x) { unsafe b.append(contentsOf: $0) }
    }

    /// Makes room for `count` bytes in the buffer (flushing it when they do not fit); `count`
    /// is small (a record's header or trailer), far below the buffer's capacity.
    @inline(__always)
    mutating func reserve(_ count: Int) throws(CaptureError) {
        if used + count > capacity { try flush() }
    }

    /// Stores a 32-bit word at the buffer's end (room reserved by the caller).
    @inline(__always)
    mutating func store32(_ v: UInt32, _ big: Bool) {
        // Safe: the caller reserved the room.
        unsafe (buffer + used).storeBytes(of: big ? v.bigEndian : v.littleEndian, as: UInt32.self)
        used += 4
        byteCount += 4
    }

    /// Stores a byte at the buffer's end (room reserved by the caller).
    @inline(__always)
    mutating func store8(_ v: UInt8) {
        // Safe: the caller reserved the room.
        unsafe (buffer + used).storeBytes(of: v, as: UInt8.self)
        used += 1
        byteCount += 1
    }

    mutating func append(_ bytes: [UInt8]) throws(CaptureError) {
        var failure: CaptureError?
        unsafe bytes.withUnsafeBytes { raw in
            do throws(CaptureError) { unsafe try append(raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    mutating func append(_ bytes: UnsafeRawBufferPointer) throws(CaptureError) {
        byteCount += bytes.count
        if used + bytes.count > capacity { try flush() }
        if bytes.count > capacity {
            var offset = 0
            while offset < bytes.count {
                do { unsafe offset += try fd.write(UnsafeRawBufferPointer(rebasing: bytes[offset...])) } catch {
                    throw CaptureError(.io(error as? Errno ?? .ioError, "write"), path: path, record: packetCount,
                                       offset: byteCount)
                }
            }
            return
        }
        if let base = bytes.baseAddress, bytes.count > 0 { unsafe (buffer + used).copyMemory(from: base, byteCount: bytes.count) }
        used += bytes.count
    }

    mutating func appendPieces(_ length: Int, _ produce: ((UnsafeRawBufferPointer) -> Void) -> Void)
        throws(CaptureError)
    {
        var failure: CaptureError?
        var written = 0
        unsafe produce { piece in
            guard failure == nil else { return }
            do throws(CaptureError) { unsafe try append(piece) } catch { failure = error }
            written += piece.count
        }
        if let failure { throw failure }
        precondition(written == length, "the pieces did not add up to the length given")
    }
}
