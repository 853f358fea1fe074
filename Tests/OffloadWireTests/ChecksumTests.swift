import OffloadTestSupport
import OffloadWire
import Testing

/// The RFC 1071 definition, word by word, as plainly as possible.
func naiveSum(_ bytes: ArraySlice<UInt8>, initial: UInt16 = 0) -> UInt16 {
    var sum = UInt32(initial)
    var i = bytes.startIndex
    while i < bytes.endIndex {
        let high = UInt32(bytes[i])
        let low = i + 1 < bytes.endIndex ? UInt32(bytes[i + 1]) : 0
        sum += high << 8 | low
        sum = (sum & 0xFFFF) + (sum >> 16)
        i += 2
    }
    return UInt16(sum)
}

@Suite("Internet checksum")
struct ChecksumTests {
    @Test("RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2")
    func rfc1071Example() {
        let bytes: [UInt8] = [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]
        #expect(InternetChecksum.sum(bytes.span.bytes).value == 0xDDF2)
        #expect(InternetChecksum.checksum(bytes.span.bytes) == ~UInt16(0xDDF2))
    }

    @Test("The fast sum equals the naive one for every length 0…9001, random data, start values and alignment")
    func everyLength() {
        var rng = SplitMix(seed: 0xC0FFEE)
        // Four random buffers; length n uses buffer n % 4 at a random misalignment (0…7).
        let buffers = (0..<4).map { _ in (0..<9010).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
        var failures = 0
        for n in 0...9001 {
            let buffer = buffers[n % 4]
            let start = Int(rng.next() % 8)
            let initial = UInt16(truncatingIfNeeded: rng.next())
            let slice = buffer[start..<(start + n)]
            let expected = naiveSum(slice, initial: initial)
            let actual = buffer.span.bytes.extracting(start..<(start + n)).withUnsafeBytes {
                InternetChecksum.unsafeSum($0, initial: OnesComplementSum(initial)).value
            }
            // 0x0000 and 0xFFFF are both zero in one's complement.
            if !sameOnesComplement(expected, actual) { failures += 1 }
        }
        #expect(failures == 0)
    }

    @Test("The vector loop's lanes at their largest: all-0xFF and all-0xFE buffers up to 4 MiB + 200 bytes (past the 65 536-iteration block), odd starts")
    func saturatedLanes() {
        for fill: UInt8 in [0xFF, 0xFE] {
            let buffer = [UInt8](repeating: fill, count: 4 * 1024 * 1024 + 210)
            for n in [255, 256, 257, 319, 320, 1448, 9001, 65_535, 4 * 1024 * 1024 + 200] {
                for start in [0, 1, 3] {
                    let slice = buffer[start..<(start + n)]
                    let actual = buffer.span.bytes.extracting(start..<(start + n)).withUnsafeBytes {
                        InternetChecksum.unsafeSum($0).value
                    }
                    #expect(sameOnesComplement(naiveSum(slice), actual), "fill \(fill) length \(n) start \(start)")
                }
            }
        }
    }

    @Test("Sums of pieces combine, with a byte swap at odd offsets")
    func placedCombination() {
        var rng = SplitMix(seed: 7)
        for _ in 0..<500 {
            let n = Int(rng.next() % 3000) + 2
            let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let cut = Int(rng.next() % UInt64(n))
            let whole = InternetChecksum.sum(bytes.span.bytes)
            let a = InternetChecksum.sum(bytes.span.bytes.extracting(0..<cut))
            let b = InternetChecksum.sum(bytes.span.bytes.extracting(cut..<n))
            let combined = a + b.placed(atOffset: cut)
            #expect(sameOnesComplement(combined.value, whole.value))
        }
    }

    @Test("RFC 1624 incremental update equals a full recomputation")
    func incrementalUpdate() {
        var rng = SplitMix(seed: 99)
        for _ in 0..<1000 {
            var bytes = (0..<40).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let before = InternetChecksum.checksum(bytes.span.bytes)
            let at = Int(rng.next() % 20) * 2
            let old = bytes.loadBigEndian(UInt16.self, at: at)
            let new = UInt16(truncatingIfNeeded: rng.next())
            bytes.storeBigEndian(new, at: at)
            let after = InternetChecksum.checksum(bytes.span.bytes)
            let updated = InternetChecksum.update(before, replacing: old, with: new)
            #expect(sameOnesComplement(updated, after))
        }
        // The 32-bit form (an IPv4 address rewrite, as NAT does).
        var header: [UInt8] = [0x45, 0, 0, 0x73, 0, 0, 0x40, 0, 0x40, 0x11, 0xB8, 0x61, 0xC0, 0xA8, 0, 1, 0xC0, 0xA8, 0, 0xC7]
        let check = header.loadBigEndian(UInt16.self, at: 10)
        let updated = InternetChecksum.update(check, replacing: header.loadBigEndian(UInt32.self, at: 12),
                                              with: UInt32(0x0A00_0001))
        header.storeBigEndian(UInt32(0x0A00_0001), at: 12)
        header.storeBigEndian(UInt16(0), at: 10)
        #expect(updated == InternetChecksum.checksum(header.span.bytes))
    }

    @Test("Pseudo-header sums: IPv4 and IPv6, against the naive sum of the pseudo-header bytes")
    func pseudoHeaders() {
        let v4 = InternetChecksum.pseudoHeaderSum(ipv4Source: IPv4Address(192, 168, 0, 1),
                                                  destination: IPv4Address(192, 168, 0, 199),
                                                  protocolNumber: .udp, length: 0x5F)
        let v4Bytes: [UInt8] = [192, 168, 0, 1, 192, 168, 0, 199, 0, 17, 0, 0x5F]
        #expect(v4.value == naiveSum(v4Bytes[...]))
        let src = IPv6Address(0x2001, 0xdb8, 1, 2, 3, 4, 5, 6)
        let dst = IPv6Address(0xfe80, 0, 0, 0, 0xa, 0xb, 0xc, 0xd)
        let v6 = InternetChecksum.pseudoHeaderSum(ipv6Source: src, destination: dst, nextHeader: .tcp, length: 70_000)
        var v6Bytes: [UInt8] = []
        for a in [src, dst] {
            v6Bytes.appendBigEndian(a.high)
            v6Bytes.appendBigEndian(a.low)
        }
        v6Bytes.appendBigEndian(UInt32(70_000))
        v6Bytes += [0, 0, 0, 6]
        #expect(v6.value == naiveSum(v6Bytes[...]))
    }

    @Test("A partial (NEEDS_CSUM) checksum finishes to the complete one")
    func partialChecksum() {
        var rng = SplitMix(seed: 3)
        for length in [20, 21, 1480, 1481, 9000] {
            var segment = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let pseudo = InternetChecksum.pseudoHeaderSum(ipv4Source: IPv4Address(10, 0, 0, 1),
                                                          destination: IPv4Address(10, 0, 0, 2),
                                                          protocolNumber: .tcp, length: length)
            segment.storeBigEndian(UInt16(0), at: 16)
            let complete = InternetChecksum.checksum(segment.span.bytes, initial: pseudo)
            segment.storeBigEndian(InternetChecksum.partialChecksumField(pseudoHeader: pseudo), at: 16)
            #expect(InternetChecksum.finishPartial(segment.span.bytes) == complete)
        }
        #expect(InternetChecksum.udpFieldValue(0) == 0xFFFF)
        #expect(InternetChecksum.udpFieldValue(0x1234) == 0x1234)
    }
}

/// Whether two one's complement values are equal (0x0000 and 0xFFFF are both zero).
func sameOnesComplement(_ a: UInt16, _ b: UInt16) -> Bool {
    a == b || (a == 0 && b == 0xFFFF) || (a == 0xFFFF && b == 0)
}


@Suite("One's complement algebra used by GRO completion")
struct OnesComplementAlgebraTests {
    @Test("times(n) is n additions and −x cancels x, for random values and counts (the zero class compared as one value)")
    func timesAndNegation() {
        var generator = SystemRandomNumberGenerator()
        func same(_ a: OnesComplementSum, _ b: OnesComplementSum) -> Bool {
            a.value == b.value || (a.value == 0 || a.value == 0xFFFF) && (b.value == 0 || b.value == 0xFFFF)
        }
        for _ in 0..<2000 {
            let x = OnesComplementSum(UInt16.random(in: 0...0xFFFF, using: &generator))
            let n = Int.random(in: 0...130, using: &generator)
            var added = OnesComplementSum.zero
            for _ in 0..<n { added += x }
            #expect(same(x.times(n), added), "\(x.value) × \(n)")
            #expect(same(x + (-x), .zero))
            let k = OnesComplementSum(UInt16.random(in: 0...0xFFFF, using: &generator))
            // The completion's identity: Σ ~(K + v_i) = −(n·K + Σ v_i).
            let vs = (0..<n).map { _ in OnesComplementSum(UInt16.random(in: 0...0xFFFF, using: &generator)) }
            var loop = OnesComplementSum.zero, total = OnesComplementSum.zero
            for v in vs {
                loop += OnesComplementSum(~(k + v).value)
                total += v
            }
            #expect(same(loop, -(k.times(n) + total)))
        }
    }
}
