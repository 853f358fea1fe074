import OffloadEngine
import OffloadWire
import Testing

func virtioHeader(_ gso: GSOInfo?, _ checksum: ChecksumState, _ packet: [UInt8]) -> VirtioNetHeader? {
    VirtioPacketInfo.header(for: gso, checksum: checksum, packet: packet.span.bytes)
}

func validateVirtio(_ header: VirtioNetHeader, _ packet: [UInt8]) throws(VirtioError) -> VirtioPacketInfo {
    try VirtioPacketInfo.validate(header, packet: packet.span.bytes)
}

@Suite("virtio_net_hdr (docs/linux-gro-rules.md §7)")
struct VirtioTests {
    @Test("the ten bytes round-trip, little-endian")
    func codec() throws {
        let header = VirtioNetHeader(flags: 1, gsoType: 0x81, headerLength: 0x1234, gsoSize: 1448,
                                     checksumStart: 20, checksumOffset: 16)
        var bytes: [UInt8] = []
        header.encode(into: &bytes)
        #expect(bytes == [1, 0x81, 0x34, 0x12, 0xA8, 0x05, 20, 0, 16, 0])
        #expect(try VirtioNetHeader(parsing: bytes.span.bytes) == header)
        var raw = [UInt8](repeating: 0, count: 10)
        raw.withUnsafeMutableBytes { header.encode(into: $0) }
        #expect(raw == bytes)
        #expect(throws: WireError(.virtio, .truncated(needed: 10, available: 9), at: 9)) {
            try VirtioNetHeader(parsing: Array(bytes[0..<9]).span.bytes)
        }
    }

    /// A GRO super-packet for a TUN write: raw IP, partial checksum.
    func tunSuperPacket(ipv6: Bool = false, udp: Bool = false, cwr: Bool = false) -> Emitted {
        var config = GROConfiguration()
        config.outputChecksum = .partial
        config.udp = udp
        let specs = stream(3) { i, s in
            s.ipv6 = ipv6
            s.udp = udp
            if cwr && i == 0 { s.flags.insert(.cwr) }
        }
        return runGRO(specs.map { $0.ipPacket() }, configuration: config, linkType: .raw)[0]
    }

    @Test("write then read: the header describes the super-packet, and the partial checksum finishes",
          arguments: [(false, false), (true, false), (false, true), (true, true)])
    func writeThenRead(ipv6: Bool, udp: Bool) throws {
        let sp = tunSuperPacket(ipv6: ipv6, udp: udp)
        let header = try #require(virtioHeader(sp.gso, sp.checksum, sp.bytes))
        #expect(header.needsChecksum && header.gsoSize == 1448)
        #expect(Int(header.headerLength) == (ipv6 ? 40 : 20) + (udp ? 8 : 32))
        let info = try validateVirtio(header, sp.bytes)
        #expect(info.gso == sp.gso && info.checksum == .partial)
        var packet = sp.bytes
        try packet.withUnsafeMutableBytes {
            try VirtioPacketInfo.finishPartialChecksum($0, start: info.checksumStart!, offset: info.checksumOffset!)
        }
        #expect(checksumsAreValid(packet, linkType: .raw))
    }

    @Test("the ECN bit follows CWR on the head")
    func ecn() throws {
        let sp = tunSuperPacket(cwr: true)
        let header = try #require(virtioHeader(sp.gso, sp.checksum, sp.bytes))
        #expect(header.gsoType == VirtioNetHeader.gsoTCPv4 | VirtioNetHeader.gsoECN)
        #expect(try validateVirtio(header, sp.bytes).gso?.ecn == true)
    }

    @Test("fixed-ID and LRO super-packets cannot be written as GSO")
    func notExpressible() {
        var sp = tunSuperPacket()
        sp.gso?.fixedID = true
        #expect(virtioHeader(sp.gso, .partial, sp.bytes) == nil)
        sp.gso?.fixedID = false
        sp.gso?.segmentSize = 0
        #expect(virtioHeader(sp.gso, .partial, sp.bytes) == nil)
        let plain = stream(1)[0].ipPacket()
        #expect(virtioHeader(nil, .verified, plain) == VirtioNetHeader())
    }

    @Test("bad headers are rejected with specific errors")
    func rejected() {
        let sp = tunSuperPacket()
        let v6 = tunSuperPacket(ipv6: true)
        let packet = sp.bytes.span.bytes
        func error(_ h: VirtioNetHeader, _ p: [UInt8]? = nil) -> VirtioError? {
            let bytes = p ?? sp.bytes
            do {
                _ = try validateVirtio(h, bytes)
                return nil
            } catch { return error }
        }
        let good = VirtioPacketInfo.header(for: sp.gso, checksum: .partial, packet: packet)!
        var h = good
        h.gsoType = 9
        #expect(error(h) == .unknownGSOType(9))
        h.gsoType = VirtioNetHeader.gsoUDP
        #expect(error(h) == .legacyUFO)
        h.gsoType = VirtioNetHeader.gsoUDPL4 | VirtioNetHeader.gsoECN
        #expect(error(h) == .ecnWithoutTCP)
        h.gsoType = VirtioNetHeader.gsoTCPv6
        #expect(error(h) == .gsoTypeMismatch("TCPV6 on an IPv4 packet"))
        h = virtioHeader(v6.gso, .partial, v6.bytes)!
        h.gsoType = VirtioNetHeader.gsoTCPv4
        #expect(error(h, v6.bytes) == .gsoTypeMismatch("TCPV4 on an IPv6 packet"))
        h = good
        h.gsoType = VirtioNetHeader.gsoUDPL4
        #expect(error(h) == .gsoTypeMismatch("UDP type on a TCP packet"))
        h = good
        h.gsoSize = 0
        #expect(error(h) == .zeroGSOSize)
        h = good
        h.checksumStart = UInt16(sp.bytes.count - 10)
        #expect(error(h) == .checksumOutOfPacket(start: sp.bytes.count - 10, offset: 16, length: sp.bytes.count))
        h = good
        h.checksumOffset = 6
        #expect(error(h) == .badChecksumLocation(start: 20, offset: 6))
        h = good
        var truncated = sp.bytes
        truncated[0] = 0x46  // IHL 6 with no options: the TCP header moves
        truncated[2] = 0
        truncated[3] = 10
        #expect(error(h, truncated) == .malformed(WireError(.ipv4, .lengthFieldTooSmall(10), at: 2)))
        let udp = tunSuperPacket(udp: true)
        var many = virtioHeader(udp.gso, .partial, udp.bytes)!
        many.gsoSize = 16
        #expect(error(many, udp.bytes) == .tooManySegments(272, limit: 128))
    }

    @Test("hdr_len is not trusted, and a payload within one segment is not GSO")
    func hintsAndSmallPayloads() throws {
        let sp = tunSuperPacket()
        var h = virtioHeader(sp.gso, .partial, sp.bytes)!
        h.headerLength = UInt16(sp.bytes.count)  // what the forward path may put there
        #expect(try validateVirtio(h, sp.bytes).gso == sp.gso)
        h.gsoSize = 9000
        #expect(try validateVirtio(h, sp.bytes).gso == nil)
        let valid = VirtioNetHeader(flags: VirtioNetHeader.flagDataValid)
        #expect(try validateVirtio(valid, sp.bytes).checksum == .verified)
    }
}
