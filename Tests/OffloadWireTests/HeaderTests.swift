import OffloadTestSupport
import OffloadWire
import Testing

/// Validates `bytes` with `make` and returns the error, or nil.
func wireError(_ bytes: [UInt8], _ make: (RawSpan) throws(WireError) -> Void) -> WireError? {
    do {
        try make(bytes.span.bytes)
        return nil
    } catch {
        return error
    }
}

// MARK: - Ethernet, VLAN, cooked, loopback

@Suite("Link headers")
struct LinkHeaderTests {
    // dst 02:00:00:00:00:02, src 02:00:00:00:00:01, 802.1Q tag PCP 5 VID 100, IPv4.
    static let tagged: [UInt8] = [
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x81, 0x00, 0xA0, 0x64, 0x08, 0x00, 0xAA, 0xBB,
    ]

    @Test("Ethernet with an 802.1Q tag: deconstruct, parse, emit")
    func taggedFrame() throws {
        let frame = try EthernetFrame(validating: Self.tagged.span.bytes)
        #expect(frame.destination == MACAddress(rawValue: 0x02_00_00_00_00_02))
        #expect(frame.source == MACAddress(rawValue: 0x02_00_00_00_00_01))
        #expect(frame.tagCount == 1)
        #expect(frame.tag(0) == VLANTag(tagProtocol: .vlan, priority: 5, dropEligible: false, identifier: 100))
        #expect(frame.etherType == .ipv4)
        #expect(frame.headerLength == 18)
        #expect(frame.payload.byteCount == 2)
        let repr = EthernetHeaderRepr(parsing: frame)
        var emitted: [UInt8] = []
        repr.encode(into: &emitted)
        #expect(emitted == Array(Self.tagged[0..<18]))
        #expect(frame.source.description == "02:00:00:00:00:01")
    }

    @Test("QinQ: an 802.1ad tag, then an 802.1Q tag")
    func qinq() throws {
        var bytes: [UInt8] = []
        EthernetHeaderRepr(destination: MACAddress(rawValue: 1), source: MACAddress(rawValue: 2),
                           tags: [VLANTag(tagProtocol: .qinq, identifier: 7), VLANTag(identifier: 9)],
                           etherType: .ipv6).encode(into: &bytes)
        let frame = try EthernetFrame(validating: bytes.span.bytes)
        #expect(frame.tagCount == 2 && frame.tag(0).identifier == 7 && frame.tag(1).identifier == 9)
        #expect(frame.etherType == .ipv6 && frame.headerLength == 22)
    }

    @Test("Malformed Ethernet frames give specific errors")
    func malformedEthernet() {
        let cases: [([UInt8], WireError)] = [
            ([UInt8](repeating: 0, count: 13), WireError(.ethernet, .truncated(needed: 14, available: 13), at: 13)),
            (Array(Self.tagged[0..<16]), WireError(.vlan, .truncated(needed: 18, available: 16), at: 12)),
            ([UInt8](repeating: 0, count: 12) + [0x81, 0, 0, 1, 0x81, 0, 0, 2, 0x81, 0, 0, 3, 0x81, 0, 0, 4, 8, 0],
             WireError(.vlan, .invalidField("more than 3 VLAN tags"), at: 24)),
        ]
        for (bytes, expected) in cases {
            #expect(wireError(bytes) { b throws(WireError) in _ = try EthernetFrame(validating: b) } == expected)
        }
    }

    @Test("Linux cooked capture v1 and v2")
    func cooked() throws {
        let v1: [UInt8] = [0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x86, 0xDD, 0x60]
        let h1 = try LinuxCookedHeader(validating: v1.span.bytes, version: 1)
        #expect(h1.protocolType == .ipv6 && h1.packetType == 4 && h1.headerLength == 16 && h1.payload.byteCount == 1)
        let v2: [UInt8] = [0x08, 0x00, 0, 0, 0, 0, 0, 3, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x45]
        let h2 = try LinuxCookedHeader(validating: v2.span.bytes, version: 2)
        #expect(h2.protocolType == .ipv4 && h2.interfaceIndex == 3 && h2.headerLength == 20)
        #expect(wireError(Array(v2[0..<19])) { b throws(WireError) in _ = try LinuxCookedHeader(validating: b, version: 2) }
            == WireError(.linuxSLL2, .truncated(needed: 20, available: 19), at: 19))
        #expect(wireError(Array(v1[0..<15])) { b throws(WireError) in _ = try LinuxCookedHeader(validating: b, version: 1) }
            == WireError(.linuxSLL, .truncated(needed: 16, available: 15), at: 15))
    }

    @Test("BSD loopback: both byte orders, Linux and BSD IPv6 families, unknown family")
    func loopback() throws {
        #expect(try LoopbackHeader(validating: ([UInt8]([2, 0, 0, 0])).span.bytes).etherType == .ipv4)
        #expect(try LoopbackHeader(validating: ([UInt8]([0, 0, 0, 2])).span.bytes).etherType == .ipv4)
        #expect(try LoopbackHeader(validating: ([UInt8]([30, 0, 0, 0])).span.bytes).etherType == .ipv6)
        #expect(try LoopbackHeader(validating: ([UInt8]([0, 0, 0, 24])).span.bytes).etherType == .ipv6)
        #expect(wireError([7, 0, 0, 0]) { b throws(WireError) in _ = try LoopbackHeader(validating: b) }
            == WireError(.null, .unknownAddressFamily(0x0700_0000), at: 0))
        #expect(wireError([2, 0]) { b throws(WireError) in _ = try LoopbackHeader(validating: b) }
            == WireError(.null, .truncated(needed: 4, available: 2), at: 2))
    }
}

// MARK: - IPv4

@Suite("IPv4")
struct IPv4Tests {
    /// The classic example header: 192.168.0.1 → 192.168.0.199, UDP, total length 0x73, checksum b861.
    static let golden: [UInt8] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xB8, 0x61, 0xC0, 0xA8, 0x00, 0x01,
        0xC0, 0xA8, 0x00, 0xC7,
    ]
    static var goldenPacket: [UInt8] { golden + [UInt8](repeating: 0xEE, count: 0x73 - 20) }

    @Test("deconstruct")
    func deconstruct() throws {
        let bytes = Self.goldenPacket
        let p = try IPv4Packet(validating: bytes.span.bytes)
        #expect(p.headerLength == 20 && p.totalLength == 0x73 && p.identification == 0)
        #expect(p.dontFragment && !p.moreFragments && !p.isFragment && p.fragmentOffset == 0 && !p.reservedFlag)
        #expect(p.timeToLive == 64 && p.protocolNumber == .udp && p.headerChecksum == 0xB861)
        #expect(p.source == IPv4Address(192, 168, 0, 1) && p.destination == IPv4Address(192, 168, 0, 199))
        #expect(p.headerChecksumIsValid == true)
        #expect(p.payload.byteCount == 0x73 - 20 && p.options.byteCount == 0 && p.trailingByteCount == 0)
        #expect(p.source.description == "192.168.0.1")
    }

    @Test("parse and emit round-trip to the golden bytes")
    func parseEmit() throws {
        let bytes = Self.goldenPacket
        let repr = IPv4HeaderRepr(parsing: try IPv4Packet(validating: bytes.span.bytes))
        var emitted: [UInt8] = []
        repr.encode(into: &emitted)
        #expect(emitted == Self.golden)
        let again = IPv4HeaderRepr(parsing: try IPv4Packet(validating: (emitted + Array(bytes[20...])).span.bytes))
        #expect(again == repr)
    }

    @Test("options: emitted, read back, validated")
    func options() throws {
        var repr = IPv4HeaderRepr(source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(10, 0, 0, 2),
                                  protocolNumber: .tcp, totalLength: 28)
        repr.options = [0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00]  // Router Alert, NOP, NOP, NOP, EOL
        var bytes: [UInt8] = []
        repr.encode(into: &bytes)
        let p = try IPv4Packet(validating: bytes.span.bytes)
        #expect(p.headerLength == 28 && p.options.byteCount == 8 && p.headerChecksumIsValid)
        try p.validateOptions()
        #expect(IPv4HeaderRepr(parsing: p) == repr)
    }

    static func with(_ edit: (inout [UInt8]) -> Void) -> [UInt8] {
        var b = goldenPacket
        edit(&b)
        return b
    }

    @Test("malformed IPv4 gives specific errors")
    func malformed() {
        let cases: [([UInt8], WireError)] = [
            (Array(Self.golden[0..<19]), WireError(.ipv4, .truncated(needed: 20, available: 19), at: 19)),
            (Self.with { $0[0] = 0x65 }, WireError(.ipv4, .badVersion(6), at: 0)),
            (Self.with { $0[0] = 0x44 }, WireError(.ipv4, .headerLengthTooSmall(16), at: 0)),
            (Array(Self.with { $0[0] = 0x4F }[0..<40]), WireError(.ipv4, .truncated(needed: 60, available: 40), at: 0)),
            (Self.with { $0[2] = 0; $0[3] = 10 }, WireError(.ipv4, .lengthFieldTooSmall(10), at: 2)),
            (Self.with { $0[2] = 0x05; $0[3] = 0xDC },
             WireError(.ipv4, .lengthExceedsBuffer(claimed: 1500, available: 0x73), at: 2)),
        ]
        for (bytes, expected) in cases {
            #expect(wireError(bytes) { b throws(WireError) in _ = try IPv4Packet(validating: b) } == expected)
        }
    }

    @Test("malformed options: overrun and impossible lengths")
    func malformedOptions() throws {
        func packet(options: [UInt8]) -> [UInt8] {
            var b = Self.goldenPacket
            b[0] = 0x45 + UInt8(options.count / 4)
            b.insert(contentsOf: options, at: 20)
            return b
        }
        let overrun = packet(options: [0x44, 0x0C, 0x05, 0x00])  // timestamp option claims 12 of 4 bytes
        #expect(throws: WireError(.ipv4, .optionOverrun(kind: 0x44), at: 20)) {
            try IPv4Packet(validating: overrun.span.bytes).validateOptions()
        }
        let tooShort = packet(options: [0x07, 0x01, 0x00, 0x00])
        #expect(throws: WireError(.ipv4, .badOptionLength(kind: 7, length: 1), at: 21)) {
            try IPv4Packet(validating: tooShort.span.bytes).validateOptions()
        }
        let cut = packet(options: [0x01, 0x01, 0x01, 0x83])  // kind 0x83 with no length byte
        #expect(throws: WireError(.ipv4, .optionOverrun(kind: 0x83), at: 23)) {
            try IPv4Packet(validating: cut.span.bytes).validateOptions()
        }
    }

    @Test("a padded frame reports its trailing bytes")
    func padding() throws {
        let bytes = Self.goldenPacket + [0, 0, 0]
        #expect(try IPv4Packet(validating: bytes.span.bytes).trailingByteCount == 3)
    }
}

// MARK: - IPv6

@Suite("IPv6")
struct IPv6Tests {
    static let source = IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)
    static let destination = IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)
    // version 6, traffic class 0xB8, flow label 0x12345, payload 8, next header UDP, hop limit 64.
    static let golden: [UInt8] = [
        0x6B, 0x81, 0x23, 0x45, 0x00, 0x08, 0x11, 0x40,
        0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
        0x20, 0x01, 0x0D, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
        0x12, 0x34, 0x56, 0x78, 0x00, 0x08, 0x00, 0x00,
    ]

    @Test("deconstruct, parse, emit")
    func basics() throws {
        let p = try IPv6Packet(validating: Self.golden.span.bytes)
        #expect(p.trafficClass == 0xB8 && p.ecn == 0 && p.flowLabel == 0x12345 && p.payloadLength == 8)
        #expect(p.nextHeader == .udp && p.hopLimit == 64 && p.source == Self.source && p.destination == Self.destination)
        #expect(p.upperLayerProtocol == .udp && p.upperLayerOffset == 40 && p.extensionHeaderCount == 0 && !p.isFragment)
        var emitted: [UInt8] = []
        IPv6HeaderRepr(parsing: p).encode(into: &emitted)
        #expect(emitted == Array(Self.golden[0..<40]))
        #expect(Self.source.description == "2001:db8::1")
    }

    static func chain(_ headers: [(IPProtocol, [UInt8])], upper: IPProtocol = .tcp, extra: [UInt8] = Array(repeating: 0, count: 20)) -> [UInt8] {
        var bytes: [UInt8] = []
        var ext: [UInt8] = []
        for (i, (_, body)) in headers.enumerated() {
            var h = body
            h[0] = i + 1 < headers.count ? headers[i + 1].0.rawValue : upper.rawValue
            ext += h
        }
        IPv6HeaderRepr(source: source, destination: destination, nextHeader: headers.first?.0 ?? upper,
                       payloadLength: ext.count + extra.count).encode(into: &bytes)
        return bytes + ext + extra
    }

    @Test("extension headers: Hop-by-Hop, Routing, Destination Options, Fragment")
    func extensionChain() throws {
        let bytes = Self.chain([
            (.hopByHop, [0, 0, 1, 4, 0, 0, 0, 0]),
            (.ipv6Routing, [0, 2, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 16)),
            (.ipv6DestinationOptions, [0, 0, 1, 4, 0, 0, 0, 0]),
            (.ipv6Fragment, [0, 0, 0, 0, 0, 0, 0, 9]),
        ])
        let p = try IPv6Packet(validating: bytes.span.bytes)
        #expect(p.extensionHeaderCount == 4 && p.upperLayerProtocol == .tcp)
        #expect(p.upperLayerOffset == 40 + 8 + 24 + 8 + 8)
        #expect(p.fragmentHeaderOffset == 40 + 8 + 24 + 8 && p.isFragment)
        #expect(p.extensionHeaders.byteCount == 48 && p.upperLayerPayload.byteCount == 20)
    }

    @Test("malformed IPv6 gives specific errors")
    func malformed() {
        func check(_ bytes: [UInt8], _ expected: WireError, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(wireError(bytes) { b throws(WireError) in _ = try IPv6Packet(validating: b) } == expected,
                    sourceLocation: sourceLocation)
        }
        check(Array(Self.golden[0..<39]), WireError(.ipv6, .truncated(needed: 40, available: 39), at: 39))
        var v4 = Self.golden
        v4[0] = 0x4B
        check(v4, WireError(.ipv6, .badVersion(4), at: 0))
        var lying = Self.golden
        lying[5] = 200
        check(lying, WireError(.ipv6, .lengthExceedsBuffer(claimed: 200, available: 8), at: 4))
        // A Hop-by-Hop header claiming 16 bytes inside an 8-byte payload.
        let overrun = Self.chain([(.hopByHop, [0, 1, 0, 0, 0, 0, 0, 0])], extra: [])
        check(overrun, WireError(.ipv6Extension, .lengthExceedsBuffer(claimed: 16, available: 8), at: 41))
        // A payload too short for the extension header's first 8 bytes.
        var cut = Self.chain([], upper: .hopByHop, extra: [0, 0, 0, 0])
        cut[6] = 0
        check(cut, WireError(.ipv6Extension, .truncated(needed: 48, available: 44), at: 40))
        let many = Self.chain(Array(repeating: (IPProtocol.ipv6DestinationOptions, [UInt8](repeating: 0, count: 8)), count: 9))
        check(many, WireError(.ipv6Extension, .tooManyExtensionHeaders(8), at: 40 + 8 * 8))
    }
}

// MARK: - TCP

@Suite("TCP")
struct TCPTests {
    // 40000 → 5201, seq 1000000, ack 5000, data offset 10 (40 bytes), ACK|PSH, window 1024,
    // options: MSS 1460, SACK-permitted, timestamps 100/50, NOP, window scale 7.
    static let golden: [UInt8] = [
        0x9C, 0x40, 0x14, 0x51, 0x00, 0x0F, 0x42, 0x40, 0x00, 0x00, 0x13, 0x88, 0xA0, 0x18, 0x04, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x02, 0x04, 0x05, 0xB4, 0x04, 0x02, 0x08, 0x0A, 0x00, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00, 0x32,
        0x01, 0x03, 0x03, 0x07,
    ]
    static let goldenRepr = TCPHeaderRepr(
        sourcePort: 40000, destinationPort: 5201, sequenceNumber: 1_000_000, acknowledgmentNumber: 5000,
        flags: [.ack, .psh], window: 1024,
        options: [.maximumSegmentSize(1460), .sackPermitted, .timestamp(value: 100, echoReply: 50), .noOperation,
                  .windowScale(7)])

    @Test("deconstruct")
    func deconstruct() throws {
        let bytes = Self.golden + [1, 2, 3]
        let s = try TCPSegment(validating: bytes.span.bytes)
        #expect(s.sourcePort == 40000 && s.destinationPort == 5201 && s.sequenceNumber == 1_000_000)
        #expect(s.acknowledgmentNumber == 5000 && s.headerLength == 40 && s.flags == [.ack, .psh])
        #expect(s.window == 1024 && s.checksum == 0 && s.urgentPointer == 0 && s.payloadLength == 3)
        #expect(s.flagWord == 0xA018_0400 && s.options.byteCount == 20 && s.payload.byteCount == 3)
        #expect(s.flags.description == "P.")
    }

    @Test("parse and emit")
    func parseEmit() throws {
        let repr = try TCPHeaderRepr(parsing: TCPSegment(validating: Self.golden.span.bytes))
        #expect(repr == Self.goldenRepr)
        var emitted: [UInt8] = []
        repr.encode(into: &emitted)
        #expect(emitted == Self.golden)
    }

    @Test("SACK blocks and unknown options round-trip")
    func sackAndUnknown() throws {
        let repr = TCPHeaderRepr(sourcePort: 1, destinationPort: 2, sequenceNumber: 3,
                                 options: [.noOperation, .noOperation,
                                           .sack([SACKBlock(left: 10, right: 20), SACKBlock(left: 30, right: 40)]),
                                           .unknown(kind: 30, data: [0xAB, 0xCD])])
        var bytes: [UInt8] = []
        repr.encode(into: &bytes)
        let parsed = try TCPHeaderRepr(parsing: TCPSegment(validating: bytes.span.bytes))
        #expect(parsed.options == repr.options)
        // An odd-sized option list is padded with End of Option List to a 4-byte boundary.
        var odd: [UInt8] = []
        TCPHeaderRepr(sourcePort: 1, destinationPort: 2, sequenceNumber: 3, options: [.windowScale(2)]).encode(into: &odd)
        #expect(odd.count == 24)
        #expect(try TCPHeaderRepr(parsing: TCPSegment(validating: odd.span.bytes)).options == [.windowScale(2), .endOfList])
    }

    @Test("a checksum computed by the encoder verifies")
    func checksum() throws {
        let pseudo = { (n: Int) in
            InternetChecksum.pseudoHeaderSum(ipv4Source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(10, 0, 0, 2),
                                             protocolNumber: .tcp, length: n)
        }
        var bytes: [UInt8] = []
        Self.goldenRepr.encode(into: &bytes, payload: [1, 2, 3, 4, 5], pseudoHeader: pseudo)
        let good = try TCPSegment(validating: bytes.span.bytes).checksumIsValid(pseudoHeader: pseudo(bytes.count))
        #expect(good)
        bytes[44] ^= 1
        let bad = try TCPSegment(validating: bytes.span.bytes).checksumIsValid(pseudoHeader: pseudo(bytes.count))
        #expect(!bad)
    }

    @Test("malformed TCP headers give specific errors")
    func malformed() {
        func check(_ bytes: [UInt8], _ expected: WireError, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(wireError(bytes) { b throws(WireError) in _ = try TCPSegment(validating: b).parsedOptions() } == expected,
                    sourceLocation: sourceLocation)
        }
        check(Array(Self.golden[0..<19]), WireError(.tcp, .truncated(needed: 20, available: 19), at: 19))
        var small = Self.golden
        small[12] = 0x40
        check(small, WireError(.tcp, .headerLengthTooSmall(16), at: 12))
        check(Array(Self.golden[0..<36]), WireError(.tcp, .lengthExceedsBuffer(claimed: 40, available: 36), at: 12))
        // Options whose length runs past the header: a timestamp claiming 10 bytes with 4 left.
        var overrun = Array(Self.golden[0..<24])
        overrun[12] = 0x60
        overrun[20] = 8
        overrun[21] = 10
        check(overrun, WireError(.tcpOption, .optionOverrun(kind: 8), at: 20))
        var zeroLength = Array(Self.golden[0..<24])
        zeroLength[12] = 0x60
        zeroLength[20] = 30
        zeroLength[21] = 0
        check(zeroLength, WireError(.tcpOption, .badOptionLength(kind: 30, length: 0), at: 21))
        var badMSS = Array(Self.golden[0..<24])
        badMSS[12] = 0x60
        badMSS[21] = 3
        check(badMSS, WireError(.tcpOption, .badOptionLength(kind: 2, length: 3), at: 21))
        var noLength = Array(Self.golden[0..<24])
        noLength[12] = 0x60
        noLength[20...23] = [1, 1, 1, 2]
        check(noLength, WireError(.tcpOption, .optionOverrun(kind: 2), at: 23))
    }
}

// MARK: - UDP and ICMP

@Suite("UDP and ICMP")
struct UDPAndICMPTests {
    static let golden: [UInt8] = [0x30, 0x39, 0x00, 0x35, 0x00, 0x0C, 0x00, 0x00, 0xDE, 0xAD, 0xBE, 0xEF]

    @Test("UDP: deconstruct, emit, checksum")
    func udp() throws {
        let d = try UDPDatagram(validating: Self.golden.span.bytes)
        #expect(d.sourcePort == 12345 && d.destinationPort == 53 && d.length == 12 && d.checksum == 0)
        #expect(d.payload.byteCount == 4 && d.trailingByteCount == 0)
        #expect(d.checksumIsValid(pseudoHeader: .zero) == true)  // zero means no checksum
        var bytes: [UInt8] = []
        let pseudo = { (n: Int) in
            InternetChecksum.pseudoHeaderSum(ipv4Source: IPv4Address(1, 2, 3, 4), destination: IPv4Address(5, 6, 7, 8),
                                             protocolNumber: .udp, length: n)
        }
        UDPHeaderRepr(parsing: d).encode(into: &bytes, payload: [0xDE, 0xAD, 0xBE, 0xEF], pseudoHeader: pseudo)
        let e = try UDPDatagram(validating: bytes.span.bytes)
        #expect(e.checksum != 0 && e.checksumIsValid(pseudoHeader: pseudo(12)))
        var noChecksum: [UInt8] = []
        UDPHeaderRepr(parsing: d).encode(into: &noChecksum, payload: [0xDE, 0xAD, 0xBE, 0xEF], checksum: false,
                                         pseudoHeader: pseudo)
        #expect(noChecksum == Self.golden)
    }

    @Test("malformed UDP gives specific errors")
    func malformedUDP() {
        func check(_ bytes: [UInt8], _ expected: WireError, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(wireError(bytes) { b throws(WireError) in _ = try UDPDatagram(validating: b) } == expected,
                    sourceLocation: sourceLocation)
        }
        check(Array(Self.golden[0..<7]), WireError(.udp, .truncated(needed: 8, available: 7), at: 7))
        var short = Self.golden
        short[5] = 4
        check(short, WireError(.udp, .lengthFieldTooSmall(4), at: 4))
        var long = Self.golden
        long[5] = 200
        check(long, WireError(.udp, .lengthExceedsBuffer(claimed: 200, available: 12), at: 4))
    }

    @Test("ICMPv4 fragmentation needed and ICMPv6 packet too big")
    func icmp() throws {
        var v4: [UInt8] = [3, 4, 0, 0, 0, 0, 0x05, 0x78] + IPv4Tests.golden
        let c = InternetChecksum.checksum(v4.span.bytes)
        v4.storeBigEndian(c, at: 2)
        let m4 = try ICMPMessage(validating: v4.span.bytes, version6: false)
        #expect(m4.type == ICMPType.v4DestinationUnreachable && m4.code == ICMPType.v4FragmentationNeeded)
        #expect(m4.nextHopMTU == 1400 && m4.checksumIsValid() && m4.body.byteCount == 20)
        let v6: [UInt8] = [2, 0, 0, 0, 0, 0, 0x05, 0x78]
        let m6 = try ICMPMessage(validating: v6.span.bytes, version6: true)
        #expect(m6.type == ICMPType.v6PacketTooBig && m6.mtu == 1400)
        #expect(wireError([3, 4, 0]) { b throws(WireError) in _ = try ICMPMessage(validating: b, version6: false) }
            == WireError(.icmpv4, .truncated(needed: 8, available: 3), at: 3))
        #expect(wireError([2, 0]) { b throws(WireError) in _ = try ICMPMessage(validating: b, version6: true) }
            == WireError(.icmpv6, .truncated(needed: 8, available: 2), at: 2))
    }
}

// MARK: - Whole frames

@Suite("Packet layout")
struct PacketLayoutTests {
    static func frame() -> [UInt8] {
        var bytes: [UInt8] = []
        EthernetHeaderRepr(destination: MACAddress(rawValue: 1), source: MACAddress(rawValue: 2),
                           tags: [VLANTag(identifier: 5)], etherType: .ipv4).encode(into: &bytes)
        IPv4HeaderRepr(source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(10, 0, 0, 2), protocolNumber: .tcp,
                       totalLength: 20 + 40 + 10).encode(into: &bytes)
        bytes += TCPTests.golden + [UInt8](repeating: 7, count: 10)
        return bytes
    }

    @Test("offsets of every layer")
    func offsets() throws {
        let l = try PacketLayout(parsing: Self.frame().span.bytes, linkType: .ethernet)
        #expect(l.networkOffset == 18 && l.network == .ipv4 && l.transportOffset == 38 && l.transport == .tcp)
        #expect(l.transportHeaderLength == 40 && l.payloadOffset == 78 && l.payloadLength == 10 && l.ipEnd == 88)
        #expect(!l.isFragment && l.trailingByteCount == 0 && l.networkHeaderLength == 20)
    }

    @Test("nested errors carry frame offsets")
    func nestedOffsets() {
        var bad = Self.frame()
        bad[18 + 20 + 12] = 0x30  // TCP data offset 3
        #expect(throws: WireError(.tcp, .headerLengthTooSmall(12), at: 18 + 20 + 12)) {
            try PacketLayout(parsing: bad.span.bytes, linkType: .ethernet)
        }
        #expect(throws: WireError(.link, .unsupportedLinkType(147), at: 0)) {
            try PacketLayout(parsing: bad.span.bytes, linkType: LinkType(rawValue: 147))
        }
    }

    @Test("raw IP and non-IP frames")
    func rawAndOther() throws {
        let frame = Self.frame()
        let raw = Array(frame[18...])
        let l = try PacketLayout(parsing: raw.span.bytes, linkType: .raw)
        #expect(l.networkOffset == 0 && l.transportOffset == 20)
        var arp = frame
        arp[16] = 0x08
        arp[17] = 0x06
        #expect(try PacketLayout(parsing: arp.span.bytes, linkType: .ethernet).network == .other(.arp))
    }

    @Test("the raw-load common case and the header views agree on every mutated and truncated frame")
    func fastPathMatchesViews() {
        var frames: [[UInt8]] = [Self.frame()]
        var untagged: [UInt8] = []
        EthernetHeaderRepr(destination: MACAddress(rawValue: 1), source: MACAddress(rawValue: 2), etherType: .ipv6)
            .encode(into: &untagged)
        IPv6HeaderRepr(source: IPv6Address(1, 2, 3, 4, 5, 6, 7, 8), destination: IPv6Address(8, 7, 6, 5, 4, 3, 2, 1),
                       nextHeader: .udp, payloadLength: 12).encode(into: &untagged)
        frames.append(untagged + UDPAndICMPTests.golden)
        var v4: [UInt8] = Array(Self.frame()[0..<12]) + [0x08, 0x00] + Array(Self.frame()[18...])
        frames.append(v4)
        v4[14 + 9] = 17  // UDP
        frames.append(v4)
        var rng = SplitMix(seed: 11)
        var agreements = 0
        var fastHits = 0
        for _ in 0..<30_000 {
            var bytes = frames[Int(rng.next() % UInt64(frames.count))]
            for _ in 0..<Int(rng.next() % 3) {
                let i = Int(rng.next() % UInt64(min(bytes.count, 64)))
                bytes[i] = UInt8(truncatingIfNeeded: rng.next())
            }
            let cut = Array(bytes[0..<(bytes.count - Int(rng.next() % 40))])
            for linkType in [LinkType.ethernet, .raw] {
                let input = linkType == .raw ? Array(cut.dropFirst(14)) : cut
                let fast = try? PacketLayout(parsing: input.span.bytes, linkType: linkType)
                let slow = try? PacketLayout(validatingEachHeader: input.span.bytes, linkType: linkType)
                if fast == slow { agreements += 1 } else {
                    Issue.record("disagree on \(input.prefix(60))")
                    return
                }
                if fast != nil { fastHits += 1 }
            }
        }
        #expect(agreements == 60_000 && fastHits > 1000)
    }

    @Test("no trap on any truncation of a valid frame, nor on random bytes, for every link type")
    func noTrap() {
        let frame = Self.frame()
        let types: [LinkType] = [.ethernet, .raw, .ipv4, .ipv6, .linuxSLL, .linuxSLL2, .null, .loop,
                                 LinkType(rawValue: 9999)]
        var parsed = 0
        for t in types {
            for n in 0...frame.count {
                let prefix = Array(frame[0..<n])
                if (try? PacketLayout(parsing: prefix.span.bytes, linkType: t)) != nil {
                    parsed += 1
                }
            }
        }
        var rng = SplitMix(seed: 42)
        for _ in 0..<20_000 {
            var bytes = frame
            for _ in 0..<4 { bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next()) }
            let cut = Int(rng.next() % UInt64(bytes.count + 1))
            let t = types[Int(rng.next() % UInt64(types.count))]
            let prefix = Array(bytes[0..<cut])
            if (try? PacketLayout(parsing: prefix.span.bytes, linkType: t)) != nil { parsed += 1 }
        }
        #expect(parsed > 0)  // some parse, none trap
    }
}
