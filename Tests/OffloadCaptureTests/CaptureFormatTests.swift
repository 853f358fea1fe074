import Foundation
import OffloadCapture
import OffloadEngine
import OffloadWire
import Testing

/// A fresh temporary file path.
func temporaryPath(_ name: String) -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swift-offload-tests-\(getpid())")
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir.appendingPathComponent("\(UUID().uuidString)-\(name)").path
}

/// Reads every packet of a capture.
func readAll(_ path: String) throws -> [CapturedPacket] {
    var reader = try CaptureReader(path: path)
    var result: [CapturedPacket] = []
    while let p = try reader.next() { result.append(p) }
    return result
}

/// Reads packets until an error; returns them and the error.
func readUntilError(_ path: String) -> ([CapturedPacket], CaptureError?) {
    var packets: [CapturedPacket] = []
    do {
        var reader = try CaptureReader(path: path)
        while let p = try reader.next() { packets.append(p) }
        return (packets, nil)
    } catch {
        return (packets, error)
    }
}

@Suite("pcap and pcapng formats")
struct CaptureFormatTests {
    static let frames: [[UInt8]] = SyntheticTraffic.capture().prefix(20).map(\.bytes)

    @Test("pcap: all four magic numbers round-trip",
          arguments: [(false, false), (false, true), (true, false), (true, true)])
    func pcapMagics(nanosecond: Bool, bigEndian: Bool) throws {
        let path = temporaryPath("magic.pcap")
        var writer = try CaptureWriter(path: path, format: .pcap(nanosecond: nanosecond, bigEndian: bigEndian),
                                       interfaces: [CaptureInterface(linkType: .ethernet)])
        for (i, f) in Self.frames.enumerated() {
            try writer.writePacket(f, timestamp: 1_700_000_000_123_456_789 + UInt64(i), originalLength: f.count + i)
        }
        try writer.flush()
        var reader = try CaptureReader(path: path)
        #expect(reader.format == .pcap(nanosecond: nanosecond, bigEndian: bigEndian))
        #expect(reader.interfaces.map(\.linkType) == [.ethernet])
        var i = 0
        while let p = try reader.next() {
            #expect(p.bytes == Self.frames[i])
            #expect(p.info.originalLength == Self.frames[i].count + i)
            let expected = 1_700_000_000_123_456_789 + UInt64(i)
            #expect(p.info.timestamp == (nanosecond ? expected : expected / 1000 * 1000))
            i += 1
        }
        #expect(i == Self.frames.count)
    }

    @Test("pcapng: several interfaces and options survive a rewrite")
    func pcapngInterfacesAndOptions() throws {
        let path = temporaryPath("multi.pcapng")
        let interfaces = [
            CaptureInterface(linkType: .ethernet, options: [PcapngOption(code: 2, value: Array("eth0".utf8))]),
            CaptureInterface(linkType: .raw, options: [PcapngOption(code: 2, value: Array("tun0".utf8))]),
        ]
        var writer = try CaptureWriter(path: path, format: .pcapng, interfaces: interfaces)
        try writer.writePacket(Self.frames[0], timestamp: 5, interface: 0, options: [.comment("first")])
        try writer.writePacket(Array(Self.frames[1][14...]), timestamp: 6, interface: 1)
        let gso = GSOInfo(kind: .tcpv6, segmentSize: 1428, segmentCount: 7, fixedID: false, ecn: true)
        try writer.writePacket(Self.frames[2], timestamp: 7, interface: 0, options: [.gso(gso)])
        try writer.flush()
        var reader = try CaptureReader(path: path)
        #expect(reader.format == .pcapng)
        let packets = try [reader.next()!, reader.next()!, reader.next()!]
        #expect(try reader.next() == nil)
        #expect(reader.interfaces.map(\.name) == ["eth0", "tun0"])
        #expect(reader.interfaces.map(\.linkType) == [.ethernet, .raw])
        #expect(packets[0].info.options.first?.commentText == "first")
        #expect(packets[1].linkType == .raw && packets[1].info.interface == 1)
        #expect(packets[2].info.gso == gso)
        #expect(packets.map(\.info.timestamp) == [5, 6, 7])
    }

    /// A little-endian pcapng with a Simple Packet Block, an obsolete Packet Block, a Name
    /// Resolution Block (skipped) and an unknown block (skipped), built by hand.
    @Test("pcapng: simple, obsolete and unknown blocks")
    func pcapngOddBlocks() throws {
        var b: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        u32(0x0A0D_0D0A); u32(28); u32(0x1A2B_3C4D); u16(1); u16(0); b += [UInt8](repeating: 0xFF, count: 8); u32(28)
        u32(1); u32(20); u16(1); u16(0); u32(0); u32(20)  // IDB, Ethernet, no snap limit
        let frame = Self.frames[3]
        let pad = (4 - frame.count % 4) % 4
        u32(3); u32(UInt32(16 + frame.count + pad)); u32(UInt32(frame.count)); b += frame; b += [UInt8](repeating: 0, count: pad)
        u32(UInt32(16 + frame.count + pad))
        u32(4); u32(16); u32(0); u32(16)  // NRB with only the end record
        u32(0x0BAD); u32(16); u32(7); u32(16)  // unknown
        u32(2); u32(UInt32(32 + frame.count + pad)); u16(0); u16(0); u32(0); u32(1_000_000); u32(UInt32(frame.count))
        u32(UInt32(frame.count)); b += frame; b += [UInt8](repeating: 0, count: pad); u32(UInt32(32 + frame.count + pad))
        let path = temporaryPath("odd.pcapng")
        _ = FileManager.default.createFile(atPath: path, contents: Data(b))
        let packets = try readAll(path)
        #expect(packets.count == 2)
        #expect(packets.allSatisfy { $0.bytes == frame })
        #expect(packets[1].info.timestamp == 1_000_000 * 1000)
    }

    @Test("pcapng: a big-endian section")
    func pcapngBigEndian() throws {
        var b: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { b += $0 } }
        func u16(_ v: UInt16) { withUnsafeBytes(of: v.bigEndian) { b += $0 } }
        u32(0x0A0D_0D0A); u32(28); u32(0x1A2B_3C4D); u16(1); u16(0); b += [UInt8](repeating: 0xFF, count: 8); u32(28)
        u32(1); u32(20); u16(1); u16(0); u32(0); u32(20)
        let frame = Self.frames[4]
        let pad = (4 - frame.count % 4) % 4
        u32(6); u32(UInt32(32 + frame.count + pad)); u32(0); u32(0); u32(42); u32(UInt32(frame.count))
        u32(UInt32(frame.count)); b += frame; b += [UInt8](repeating: 0, count: pad); u32(UInt32(32 + frame.count + pad))
        let path = temporaryPath("be.pcapng")
        _ = FileManager.default.createFile(atPath: path, contents: Data(b))
        let packets = try readAll(path)
        #expect(packets.map(\.bytes) == [frame])
        #expect(packets[0].info.timestamp == 42_000)
    }

    @Test("a truncated file: the packets before the damage, then an error naming record and offset")
    func truncated() throws {
        let path = temporaryPath("whole.pcap")
        var writer = try CaptureWriter(path: path, format: .pcap(nanosecond: false, bigEndian: false),
                                       interfaces: [CaptureInterface(linkType: .ethernet)])
        for f in Self.frames.prefix(5) { try writer.writePacket(f, timestamp: 0) }
        try writer.flush()
        let whole = try Data(contentsOf: URL(fileURLWithPath: path))
        let cut = temporaryPath("cut.pcap")
        _ = FileManager.default.createFile(atPath: cut, contents: whole.prefix(whole.count - 10))
        let (packets, error) = readUntilError(cut)
        #expect(packets.count == 4)
        let offset = 24 + Self.frames.prefix(4).reduce(0) { $0 + 16 + $1.count }
        #expect(error == CaptureError(.truncated(needed: 16 + Self.frames[4].count, available: 16 + Self.frames[4].count - 10),
                                      path: cut, record: 5, offset: offset))
        #expect(error?.description.contains("record 5 at byte \(offset)") == true)
    }

    @Test("lying lengths, bad magic, bad versions and unknown interfaces give clear errors")
    func corrupt() throws {
        func file(_ bytes: [UInt8]) -> String {
            let p = temporaryPath("bad")
            _ = FileManager.default.createFile(atPath: p, contents: Data(bytes))
            return p
        }
        var pcap: [UInt8] = [0xD4, 0xC3, 0xB2, 0xA1, 2, 0, 4, 0] + [UInt8](repeating: 0, count: 8)
        pcap += [0xFF, 0xFF, 0, 0, 1, 0, 0, 0]
        let lying = pcap + [0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x10, 0, 0, 0]
        if case .badLength? = readUntilError(file(lying)).1?.kind {} else { Issue.record("a lying length must be refused") }
        #expect(readUntilError(file([1, 2, 3, 4, 5])).1?.kind == .notACapture(0x0403_0201))
        #expect(readUntilError(file([])).1?.kind == .truncated(needed: 4, available: 0))
        var v3 = pcap
        v3[4] = 3
        #expect(readUntilError(file(v3)).1?.kind == .unsupportedVersion(major: 3, minor: 4))
        // pcapng packet on interface 0 with no IDB.
        var b: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        u32(0x0A0D_0D0A); u32(28); u32(0x1A2B_3C4D); u32(1); b += [UInt8](repeating: 0xFF, count: 8); u32(28)
        u32(6); u32(32); u32(0); u32(0); u32(0); u32(0); u32(0); u32(32)
        #expect(readUntilError(file(b)).1?.kind == .unknownInterface(0))
        // A block whose trailing length disagrees.
        var c = Array(b[0..<28])
        c += [1, 0, 0, 0, 20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0, 0]
        if case .badLength? = readUntilError(file(c)).1?.kind {} else { Issue.record("a trailing length mismatch must be refused") }
    }

    @Test("pcap output refuses several link types")
    func pcapOneLinkType() {
        #expect(throws: CaptureError.self) {
            _ = try CaptureWriter(path: temporaryPath("two.pcap"), format: .pcap(nanosecond: false, bigEndian: false),
                                  interfaces: [CaptureInterface(linkType: .ethernet), CaptureInterface(linkType: .raw)])
        }
    }
}
