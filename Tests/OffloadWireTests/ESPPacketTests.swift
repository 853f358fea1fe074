import OffloadTestSupport
import OffloadWire
import Testing

@Suite("ESP packet, header, trailer")
struct ESPPacketTests {
    /// RFC 7634 Appendix A's ESP packet: SPI 0x01020304, sequence 5, IV 0x1011121314151617, 88 bytes
    /// of ciphertext (an 84-byte ICMP packet, 2 bytes of padding, pad length, next header), the ICV.
    static let rfc7634 = hexBytes("01020304 00000005 1011121314151617") + hexBytes("""
        24 03 94 28 b9 7f 41 7e 3c 13 75 3a 4f 05 08 7b 67 c3 52 e6 a7 fa b1 b9 82 d4 66 ef 40 7a e5 c6
        14 ee 80 99 d5 28 44 eb 61 aa 95 df ab 4c 02 f7 2a a7 1e 7c 4c 4f 64 c9 be fe 2f ac c6 38 e8 f3
        cb ec 16 3f ac 46 9b 50 27 73 f6 fb 94 e6 64 da 91 65 b8 28 29 f6 41 e0
        76 aa a8 26 6b 7f b0 f7 b1 1b 36 99 07 e1 ad 43
        """)

    @Test("deconstruct RFC 7634 Appendix A's packet: SPI, sequence, IV, ciphertext and ICV ranges")
    func deconstruct() throws {
        let bytes = Self.rfc7634
        #expect(bytes.count == 120)
        let packet = try ESPPacket(validating: bytes.span.bytes)
        #expect(packet.spi == 0x0102_0304)
        #expect(packet.sequence == 5)
        #expect(packet.iv == 0x1011_1213_1415_1617)
        #expect(packet.ciphertextRange == 16..<104)
        #expect(packet.icvRange == 104..<120)
        #expect(packet.ciphertext.byteCount == 88 && packet.icv.byteCount == 16)
        #expect(unsafe packet.icv.withUnsafeBytes { unsafe Array($0) } == Array(bytes[104...]))
        #expect(ESPHeader(parsing: packet) == ESPHeader(spi: 0x0102_0304, sequence: 5, iv: 0x1011_1213_1415_1617))
        #expect(ESPPacket.spi(of: bytes.span.bytes) == 0x0102_0304)
    }

    @Test("construct: the header's 16 bytes are the RFC's; write(to:) leaves what follows alone")
    func construct() {
        let header = ESPHeader(spi: 0x0102_0304, sequence: 5, iv: 0x1011_1213_1415_1617)
        #expect(header.bytes == Array(Self.rfc7634[0..<16]))
        var buffer = [UInt8](repeating: 0xEE, count: 18)
        unsafe buffer.withUnsafeMutableBytes { unsafe header.write(to: $0) }
        #expect(buffer == Array(Self.rfc7634[0..<16]) + [0xEE, 0xEE])
    }

    @Test("truncated: every length under header + trailer + ICV (34) is refused with an error, none traps")
    func truncated() {
        for n in 0..<ESPFormat.minimumLength {
            let bytes = Array(Self.rfc7634.prefix(n))
            #expect(wireError(bytes) { b throws(WireError) in _ = try ESPPacket(validating: b) }
                    == WireError(.esp, .truncated(needed: 34, available: n), at: n))
            #expect(ESPPacket.spi(of: bytes.span.bytes) == (n >= 4 ? 0x0102_0304 : nil))
        }
        let shortest = Array(Self.rfc7634.prefix(34))
        let packet = try? ESPPacket(validating: shortest.span.bytes)
        #expect(packet?.ciphertextRange == 16..<18 && packet?.icvRange == 18..<34)
    }

    @Test("trailer: padding 1, 2, 3 to a 4-byte boundary, pad length, next header", arguments: [
        (84, ESPFormat.nextHeaderIPv4, [1, 2, 2, 4] as [UInt8]),
        (85, ESPFormat.nextHeaderIPv6, [1, 1, 41]),
        (86, ESPFormat.nextHeaderIPv4, [0, 4]),
        (87, ESPFormat.nextHeaderIPv4, [1, 2, 3, 3, 4]),
    ])
    func trailer(innerLength: Int, nextHeader: UInt8, expected: [UInt8]) throws {
        let trailer = ESPTrailer(innerLength: innerLength, nextHeader: nextHeader)
        #expect(trailer.bytes == expected && trailer.length == expected.count)
        #expect((innerLength + trailer.length) % 4 == 0)
        // And read back after "decryption".
        let inner = [UInt8](repeating: 0x45, count: innerLength)
        let plaintext = inner + trailer.bytes
        let payload = try ESPPayload(validating: plaintext.span.bytes)
        #expect(payload.nextHeader == nextHeader && payload.padLength == expected.count - 2)
        #expect(payload.innerLength == innerLength && payload.inner.byteCount == innerLength)
    }

    @Test("malformed trailers give specific errors")
    func malformedTrailer() {
        let cases: [([UInt8], WireError)] = [
            ([], WireError(.esp, .truncated(needed: 2, available: 0), at: 0)),
            ([4], WireError(.esp, .truncated(needed: 2, available: 1), at: 1)),
            ([0x45, 3, 4], WireError(.esp, .invalidField("pad length 3 is longer than the payload"), at: 1)),
            ([0x45, 1, 3, 2, 4], WireError(.esp, .invalidField("padding byte 1 is not 2"), at: 2)),
            ([0x45, 0, 2, 1, 4], WireError(.esp, .invalidField("padding byte 0 is not 1"), at: 2)),
        ]
        for (bytes, expected) in cases {
            #expect(wireError(bytes) { b throws(WireError) in _ = try ESPPayload(validating: b) } == expected, "\(bytes)")
        }
        // No padding, nothing inside: valid (a dummy packet may be that short).
        #expect(wireError([0, 59]) { b throws(WireError) in _ = try ESPPayload(validating: b) } == nil)
    }

    @Test("no trap on any byte string up to 40 bytes: packet and trailer views throw or give consistent ranges")
    func noTrap() {
        var generator = SplitMix(seed: 4303)
        for n in 0...40 {
            for _ in 0..<50 {
                let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
                if let packet = try? ESPPacket(validating: bytes.span.bytes) {
                    #expect(packet.ciphertextRange.upperBound == packet.icvRange.lowerBound && packet.icvRange.upperBound == n)
                }
                if let payload = try? ESPPayload(validating: bytes.span.bytes) {
                    #expect(payload.innerLength >= 0 && payload.innerLength + payload.padLength + 2 == n)
                }
            }
        }
    }
}
