import Foundation
import OffloadCrypto
import OffloadEngine
import OffloadTestSupport
import OffloadTunnel
import OffloadWire
import Testing

@testable import OffloadIPsec

@Suite("ESP: one datagram per segment, refusals counted by reason, the window, the selectors, the sequence space")
struct ESPBehaviourTests {
    @Test("a super-packet becomes one ESP datagram per segment (same size but the last, consecutive sequence numbers), each decrypts to its segment",
          arguments: [(ESPAlgorithm.aesGCM128, false), (.aesGCM256, true), (.chacha20Poly1305, false), (.aesGCM128, true)])
    func superPacketPerSegment(algorithm: ESPAlgorithm, ipv6: Bool) throws {
        let (bytes, gso) = superPacket(count: 20, size: 1000, last: 301, ipv6: ipv6)
        let p = try policy(algorithm, out: keys(algorithm, spi: 0x1001, seed: 7))
        var encapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: p))
        let datagrams = try encrypt(bytes, gso: gso, with: &encapsulator)
        var segmenter = GSOSegmenter()
        let segments = try bytes.withUnsafeBytes { raw in
            try segmenter.segment(raw, linkType: .raw, gso: gso, checksum: .complete)
            return (0..<segmenter.segmentCount).map { segmenter.segmentBytes(at: $0) }
        }
        #expect(datagrams.count == 20)
        #expect(Set(datagrams.dropLast().map(\.count)).count == 1, "one UDP GSO train")
        var decoder = try ESPCodec(policy: p).makeDecoder()
        for (i, (datagram, segment)) in zip(datagrams, segments).enumerated() {
            #expect(datagram.loadBigEndian(UInt32.self, at: 0) == 0x1001)
            #expect(datagram.loadBigEndian(UInt32.self, at: 4) == UInt32(i + 1), "sequence numbers from 1")
            #expect(datagram.loadBigEndian(UInt64.self, at: 8) == UInt64(i + 1), "IV = the sequence number")
            #expect((datagram.count - 16 - 16) % 4 == 0, "padded to 4 bytes")
            #expect(!datagram.containsSubsequence(Array(segment.suffix(64))), "no plaintext on the wire")
            let (verdict, plaintext) = decoder.open(datagram)
            #expect(plaintext == segment, "\(verdict)")
        }
        // The same datagrams again: every one a replay.
        for datagram in datagrams { #expect(decoder.open(datagram).0 == .drop(.replay)) }
    }

    @Test("from the pipeline's pieces in place: the same datagrams as from the gathered packet (GTP-U: headers only; ESP: whole datagrams); a segment across two pieces asks for the gather",
          arguments: [false, true])
    func inPlaceEqualsGathered(ipv6: Bool) throws {
        let (bytes, gso) = superPacket(count: 9, size: 1000, last: 123, ipv6: ipv6)
        let layout = try bytes.withUnsafeBytes { try PacketLayout(parsing: $0.bytes, linkType: .raw) }
        let h = layout.payloadOffset
        // As GRO chains it: one piece per segment's payload; as a TSO read: one piece.
        let chained = (0..<9).map { i in Array(bytes[(h + 1000 * i)..<min(bytes.count, h + 1000 * (i + 1))]) }
        let whole = [Array(bytes[h...])]
        let misaligned = [Array(bytes[h..<(h + 1500)]), Array(bytes[(h + 1500)...])]
        /// The datagrams a fresh encapsulator makes from the pieces (nil: it asks for the gather).
        func inPlace<C: TunnelCodec>(_ codec: C, _ pieces: [[UInt8]]) throws -> [[UInt8]]? {
            var e = try TunnelEncapsulator(codec: codec)
            let buffers = ([Array(bytes[..<h])] + pieces).map { b -> UnsafeMutableRawBufferPointer in
                let m = UnsafeMutableRawBufferPointer.allocate(byteCount: b.count, alignment: 1)
                m.copyBytes(from: b)
                return m
            }
            defer { buffers.forEach { $0.deallocate() } }
            let views = buffers.map { UnsafeRawBufferPointer($0) }
            let payload = Array(views.dropFirst())
            let prepared = payload.withUnsafeBufferPointer {
                e.prepare(headers: views[0], layout: layout, payload: $0, gso: gso, partialChecksum: false)
            }
            guard let prepared else { return nil }
            #expect(prepared == nil, "refused: \(String(describing: prepared))")
            return (0..<e.datagramCount).map { e.datagramBytes(at: $0) }
        }
        func check<C: TunnelCodec>(_ make: () throws -> C) throws {
            var gathered = try TunnelEncapsulator(codec: make())
            let reference = try bytes.withUnsafeBytes { raw in
                _ = try gathered.prepare(raw, gso: gso)
                return (0..<gathered.datagramCount).map { gathered.datagramBytes(at: $0) }
            }
            #expect(reference.count == 9)
            #expect(try inPlace(make(), chained) == reference, "\(C.self): chained pieces")
            #expect(try inPlace(make(), whole) == reference, "\(C.self): one payload piece")
            #expect(try inPlace(make(), misaligned) == nil, "\(C.self): a segment across two pieces")
        }
        try check { GTPUCodec(GTPUSettings(teid: 3, sequenceNumbers: true)) }
        let k = keys(.aesGCM128, spi: 0x6006, seed: 5)
        try check { ESPCodec(policy: try policy(.aesGCM128, out: k)) }  // a new policy: numbers from 1 each time
    }

    @Test("refused by reason: flipped bits (bad ICV, the window unmoved), unknown SPI, truncated, replay, too old; keepalive, IKE marker, dummy")
    func refusals() throws {
        let sa = keys(.aesGCM128, spi: 0x2002, seed: 3)
        // 32-bit sequence numbers: below the window is "too old" (with ESN it reads as the next
        // subspace and the ICV refuses it, RFC 4303 A2.2; checked at the end).
        let p = try policy(.aesGCM128, out: sa, esn: false)
        var encapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: p))
        var b = PacketBuilder()
        b.link = .raw
        b.payloadLength = 200
        let inner = b.frame()
        var datagrams: [[UInt8]] = []
        for _ in 0..<1100 { datagrams += try encrypt(inner, with: &encapsulator) }
        var decoder = try ESPCodec(policy: p).makeDecoder()
        // A flipped ciphertext bit: refused, and the window does not move.
        var flipped = datagrams[1099]
        flipped[40] ^= 1
        #expect(decoder.open(flipped).0 == .drop(.badICV))
        #expect(decoder.window(spi: 0x2002)?.top == 0, "a forged packet must not move the window")
        var flippedTag = datagrams[1099]
        flippedTag[flippedTag.count - 1] ^= 0x80
        #expect(decoder.open(flippedTag).0 == .drop(.badICV))
        var flippedSequence = datagrams[1099]
        flippedSequence[7] ^= 0x01  // authenticated as AAD
        #expect(decoder.open(flippedSequence).0 == .drop(.badICV))
        // In order from 1099: the window's top; then 1..1099-1024 are too old, 1098 fine once, then a replay.
        #expect(decoder.open(datagrams[1099]).1 == inner)
        #expect(decoder.open(datagrams[0]).0 == .drop(.tooOld))
        #expect(decoder.open(datagrams[50]).0 == .drop(.tooOld))
        #expect(decoder.open(datagrams[1098]).1 == inner)
        #expect(decoder.open(datagrams[1098]).0 == .drop(.replay))
        #expect(decoder.open(datagrams[100]).1 == inner, "1024 back is still inside the window")
        var otherSPI = datagrams[1000]
        otherSPI[3] ^= 0x40
        #expect(decoder.open(otherSPI).0 == .drop(.unknownSPI))
        #expect(decoder.open(Array(datagrams[1000].prefix(33))).0 == .drop(.truncated))
        #expect(decoder.open([0x00, 0x00, 0x01]).0 == .drop(.truncated))
        #expect(decoder.open([0xFF]).0 == .signalling(.natKeepalive))
        #expect(decoder.open([0, 0, 0, 0] + Array(repeating: 0x21, count: 40)).0 == .signalling(.ike))
        // With ESN the same old packet is refused too, and the window stays where it was.
        let esn = try policy(.aesGCM128, out: sa, esn: true)
        var esnEncapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: esn))
        var esnDatagrams: [[UInt8]] = []
        for _ in 0..<1100 { esnDatagrams += try encrypt(inner, with: &esnEncapsulator) }
        var esnDecoder = try ESPCodec(policy: esn).makeDecoder()
        #expect(esnDecoder.open(esnDatagrams[1099]).1 == inner)
        #expect(esnDecoder.open(esnDatagrams[0]).0 == .drop(.badICV))
        #expect(esnDecoder.window(spi: 0x2002)?.top == 1100)
    }

    /// An ESP datagram sealed by hand around `plaintext` (inner ‖ padding ‖ pad length ‖ next header as given).
    func sealRaw(_ plaintext: [UInt8], sa: ESPSAKeys, sequence: UInt32) throws -> [UInt8] {
        let sealer = try AEADContext(.aesGCM128, key: sa.key, sealing: true)
        let header = withUnsafeBytes(of: sa.spi.bigEndian) { Array($0) } + withUnsafeBytes(of: sequence.bigEndian) { Array($0) }
            + withUnsafeBytes(of: UInt64(sequence).bigEndian) { Array($0) }
        let nonce = sa.salt.withUnsafeBytes { Array($0) } + Array(header[8..<16])
        let aad = Array(header[0..<4]) + [0, 0, 0, 0] + Array(header[4..<8])  // ESN: SPI ‖ high 0 ‖ low
        return header + (seal(sealer, nonce: nonce, aad: aad, plaintext) ?? [])
    }

    @Test("authentic but wrong inside: lying pad length, bad pad bytes, next header 6, 4 on IPv6; 59 is a dummy; outside the selectors")
    func authenticButWrong() throws {
        let sa = keys(.aesGCM128, spi: 0x3003, seed: 9)
        let p = try policy(.aesGCM128, out: sa, local: ["10.0.0.0/8"], remote: ["192.168.0.0/16"])
        var decoder = try ESPCodec(policy: p).makeDecoder()
        var b = PacketBuilder()
        b.link = .raw
        b.source = .v4(IPv4Address(192, 168, 1, 1))
        b.destination = .v4(IPv4Address(10, 1, 1, 1))
        b.payloadLength = 10
        let inner = b.frame()  // 62 bytes: with the trailer 64, no padding needed
        #expect(inner.count == 62)
        #expect(decoder.open(try sealRaw(inner + [0, 4], sa: sa, sequence: 1)).1 == inner)
        #expect(decoder.open(try sealRaw(inner + [1, 2, 3, 4, 4, 4], sa: sa, sequence: 2)).1 == inner, "more padding than needed is allowed")
        #expect(decoder.open(try sealRaw(inner + [1, 2, 3, 9, 3, 4], sa: sa, sequence: 3)).0 == .drop(.badPadding))
        #expect(decoder.open(try sealRaw(inner + [200, 4], sa: sa, sequence: 4)).0 == .drop(.badPadding))
        #expect(decoder.open(try sealRaw(inner + [0, 6], sa: sa, sequence: 5)).0 == .drop(.nextHeader))
        #expect(decoder.open(try sealRaw(inner + [0, 41], sa: sa, sequence: 6)).0 == .drop(.nextHeader))
        #expect(decoder.open(try sealRaw([1, 2, 3, 4, 4, 59], sa: sa, sequence: 7)).0 == .signalling(.dummy))
        var outside = b
        outside.source = .v4(IPv4Address(172, 16, 0, 1))
        #expect(decoder.open(try sealRaw(outside.frame() + [0, 4], sa: sa, sequence: 8)).0 == .drop(.policy))
        // Encapsulating, the selectors choose the tunnel; none matches: not sent.
        var encapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: p))
        var mine = b
        mine.source = .v4(IPv4Address(10, 1, 1, 1))
        mine.destination = .v4(IPv4Address(192, 168, 1, 1))
        #expect(try encrypt(mine.frame(), with: &encapsulator).count == 1)
        let refused = try inner.withUnsafeBytes { try encapsulator.prepare($0, gso: nil) }
        #expect(refused == .noPolicy && encapsulator.datagramCount == 0)
    }

    @Test("ESN: the high half is inferred across the 2^32 boundary, in both directions around the window")
    func extendedSequenceNumbers() {
        var w = ReplayWindow(size: 1024, extendedSequenceNumbers: true)
        w.accept(0xFFFF_FFF0)
        #expect(w.check(low: 0x0000_0005) == .new(0x1_0000_0005), "past the boundary: the next subspace")
        w.accept(0x1_0000_0005)
        #expect(w.check(low: 0xFFFF_FFF8) == .new(0xFFFF_FFF8), "just before it, still in the window: the previous subspace")
        #expect(w.check(low: 0xFFFF_FFF0) == .replay)
        #expect(w.check(low: 0xFFFF_F000) == .new(0x1_FFFF_F000), "below the window reads as far ahead (RFC 4303 A2.2): the ICV refuses it")
        var plain = ReplayWindow(size: 1024, extendedSequenceNumbers: false)
        plain.accept(0xFFFF_FFF0)
        #expect(plain.check(low: 5) == .tooOld, "without ESN there is no next subspace")
    }

    @Test("the sender never wraps: 32-bit space used up stops the SA, said as sequence_exhausted; 64-bit goes on")
    func exhaustion() throws {
        let sequence = try OutboundSequence(spi: 0x4004, key: SecretBytes([1, 2, 3]), extendedSequenceNumbers: false, store: nil)
        #expect(sequence.reserve(Int(UInt32.max) - 10) == 1)
        #expect(sequence.reserve(9) == UInt64(UInt32.max) - 9)
        #expect(sequence.reserve(2) == nil, "one number left: a run of two does not fit")
        #expect(sequence.reserve(1) == UInt64(UInt32.max))
        #expect(sequence.reserve(1) == nil && sequence.isExhausted)
        let p = try policy(.aesGCM128, out: keys(.aesGCM128, spi: 0x4005, seed: 1), esn: false)
        _ = p.sequences[0].reserve(Int(UInt32.max) - 1)
        var encapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: p))
        let (bytes, gso) = superPacket(count: 3, size: 500)
        let refused = try bytes.withUnsafeBytes { try encapsulator.prepare($0, gso: gso) }
        #expect(refused == .sequenceExhausted, "3 numbers do not fit in the 2 left: none are used")
        var b = PacketBuilder()
        b.link = .raw
        #expect(try encrypt(b.frame(), with: &encapsulator).first?.loadBigEndian(UInt32.self, at: 4) == UInt32.max,
                "the last number left still goes")
        #expect(p.sequences[0].isExhausted)
    }

    @Test("the high-water mark: a restarted sender starts above everything reserved, a new key starts at 1, a corrupt mark is refused")
    func persistence() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("esp-seq-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let key = SecretBytes(Array(repeating: 7, count: 20))
        var used: [UInt64] = []
        do {
            let store = try SequenceStore(directory: dir, block: 100)
            let s = try OutboundSequence(spi: 0x5005, key: key, extendedSequenceNumbers: true, store: store)
            for _ in 0..<25 { used.append(s.reserve(10)!) }  // 1...250: marks written at 100, 211, ...
        }
        let path = dir + "/" + SequenceStore.fingerprint(key: key).markFileField + ".mark"
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(!text.contains("0707070707"), "no key in the file")
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let restarted = try OutboundSequence(spi: 0x5005, key: key, extendedSequenceNumbers: true, store: SequenceStore(directory: dir, block: 100))
        let first = try #require(restarted.reserve(1))
        #expect(first > used.last! + 9, "after a restart: \(first), last used \(used.last! + 9)")
        let newKey = try OutboundSequence(spi: 0x5005, key: SecretBytes(Array(repeating: 8, count: 20)), extendedSequenceNumbers: true,
                                          store: SequenceStore(directory: dir, block: 100))
        #expect(newKey.reserve(1) == 1)
        try "used-through garbage\n".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o600)
        #expect(throws: SequenceStoreError.self) {
            try OutboundSequence(spi: 0x5005, key: key, extendedSequenceNumbers: true, store: SequenceStore(directory: dir))
        }
    }
}

extension Array where Element == UInt8 {
    func containsSubsequence(_ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= count else { return false }
        for i in 0...(count - needle.count) where self[i] == needle[0] && Array(self[i..<(i + needle.count)]) == needle { return true }
        return false
    }
}

@Suite("SA files: swanctl.conf syntax, mode 0600, clear errors that never show a key")
struct SAFileTests {
    static let good = """
        # two tunnels
        tunnels {
            a {
                esp_proposals = aes128gcm16
                esn = no
                local_ts = 10.1.0.0/16, fd01::/64
                remote_ts = 10.2.0.0/16
                out {
                    spi = 0x00001001
                    key = 0x000102030405060708090a0b0c0d0e0f10111213
                }
                in {
                    spi = 0x2001
                    key = 0x101112131415161718191a1b1c1d1e1f20212223
                }
            }
            b {
                esp_proposals = chacha20poly1305
                out {
                    spi = 4098
                    key = 0x\(String(repeating: "ab", count: 36))
                }
                in {
                    spi = 0x3001
                    key = 0x\(String(repeating: "cd", count: 36))
                }
            }
        }
        """

    @Test("a good file: two tunnels, algorithms, ESN, selectors, SPIs, key and salt split")
    func good() throws {
        let tunnels = try SAFile.parse(Self.good)
        #expect(tunnels.count == 2)
        #expect(tunnels[0].algorithm == .aesGCM128 && !tunnels[0].extendedSequenceNumbers && tunnels[0].replayWindow == 1024)
        #expect(tunnels[0].outbound.spi == 0x1001 && tunnels[0].inbound.spi == 0x2001)
        #expect(tunnels[0].outbound.key.isEqual(to: SecretBytes(Array(0..<16))) && tunnels[0].outbound.salt.isEqual(to: SecretBytes([16, 17, 18, 19])))
        #expect(tunnels[0].sends(PacketSelectors(source: IPAddress("10.1.2.3")!, destination: IPAddress("10.2.0.1")!)))
        #expect(!tunnels[0].sends(PacketSelectors(source: IPAddress("10.1.2.3")!, destination: IPAddress("10.3.0.1")!)))
        #expect(tunnels[0].receives(PacketSelectors(source: IPAddress("10.2.0.1")!, destination: IPAddress("10.1.2.3")!)))
        #expect(tunnels[1].algorithm == .chacha20Poly1305 && tunnels[1].extendedSequenceNumbers)
        #expect(tunnels[1].sends(PacketSelectors(source: IPAddress("fd99::1")!, destination: IPAddress("fd98::1")!)), "no selectors: everything, both families")
        #expect(tunnels[1].sends(PacketSelectors(source: IPAddress("10.9.9.9")!, destination: IPAddress("1.2.3.4")!)))
    }

    @Test("bad files: each error names its line and never the key", arguments: [
        ("key = 0x0001", "takes 16 bytes of key and 4 of salt"),
        ("key = 0xzz", "hex digits"),
        ("spi = 0x10", "256 or more"),
        ("esp_proposals = aes128gcm16", "esp_proposals"),  // placeholder replaced below
    ])
    func bad(change: String, message: String) throws {
        var text = Self.good
        if change.hasPrefix("key") {
            text = text.replacingOccurrences(of: "key = 0x000102030405060708090a0b0c0d0e0f10111213", with: change)
        } else if change.hasPrefix("spi") {
            text = text.replacingOccurrences(of: "spi = 0x00001001", with: change)
        } else {
            text = text.replacingOccurrences(of: "esp_proposals = aes128gcm16", with: "esp_proposals = aes128-sha256")
        }
        do {
            _ = try SAFile.parse(text, path: "sa.conf")
            Issue.record("accepted")
        } catch {
            #expect(error.description.contains(message), "\(error)")
            #expect(error.description.hasPrefix("sa.conf:"), "\(error)")
            #expect(!error.description.contains("0001") || change == "key = 0x0001" && !error.description.contains("0x0001"))
            #expect(!error.description.contains("0a0b0c"))
        }
    }

    @Test("render and parse are inverses; the far end's view swaps SAs and selectors; fresh keys differ each time")
    func renderParse() throws {
        let tunnels = try SAFile.parse(Self.good)
        #expect(try SAFile.parse(SAFile.render(tunnels)) == tunnels)
        let fresh = SAFile.freshTunnel(name: "x", algorithm: .aesGCM256, local: [TrafficSelector("10.0.0.0/8")!],
                                       remote: [TrafficSelector("fd00::/8")!])
        // Two tunnels of one file, each with keys of its own (one key in two SAs of a file is refused).
        let other = SAFile.freshTunnel(name: "y", algorithm: .aesGCM256, local: [TrafficSelector("10.0.0.0/8")!],
                                       remote: [TrafficSelector("fd00::/8")!])
        #expect(try SAFile.parse(SAFile.render([fresh, other].enumerated().map { i, t in
            var t = t
            t.name = "t\(i)"
            if i == 1 { (t.outbound.spi, t.inbound.spi) = (0x3001, 0x4001) }
            return t
        })).count == 2)
        #expect(fresh.reversed.outbound == fresh.inbound && fresh.reversed.localSelectors == fresh.remoteSelectors)
        #expect(fresh.outbound.key.count == 32 && !fresh.outbound.key.isEqual(to: fresh.inbound.key)
            && !fresh.outbound.key.isEqual(to: SAFile.freshTunnel(name: "y", algorithm: .aesGCM256, local: [], remote: []).outbound.key))
    }

    @Test("structure: a duplicate inbound SPI, the same key both ways, an unclosed section, an unknown setting")
    func structure() {
        let duplicate = Self.good.replacingOccurrences(of: "spi = 0x3001", with: "spi = 0x2001")
        #expect(throws: SAFileError.self) { try SAFile.parse(duplicate) }
        let sameKey = Self.good.replacingOccurrences(of: "0x101112131415161718191a1b1c1d1e1f20212223",
                                                     with: "0x000102030405060708090a0b0c0d0e0f10111213")
        #expect(throws: SAFileError.self) { try SAFile.parse(sameKey) }
        #expect(throws: SAFileError.self) { try SAFile.parse(String(Self.good.dropLast())) }
        #expect(throws: SAFileError.self) { try SAFile.parse(Self.good.replacingOccurrences(of: "esn = no", with: "colour = blue")) }
    }

    @Test("permissions: 0644 and 0640 are refused with the chmod to type; 0600 is read")
    func permissions() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sa-\(UUID().uuidString).conf").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Self.good.write(toFile: path, atomically: true, encoding: .utf8)
        for mode in [0o644, 0o640, 0o604] {
            chmod(path, mode_t(mode))
            do {
                _ = try SAFile.load(path: path)
                Issue.record("mode \(String(mode, radix: 8)) accepted")
            } catch { #expect(error.description.contains("chmod 600"), "\(error)") }
        }
        chmod(path, 0o600)
        #expect(try SAFile.load(path: path).count == 2)
    }
}

@Suite("Key fingerprints never print")
struct KeyFingerprintTests {
    @Test("interpolated, described or dumped, a key's fingerprint is redacted; only the mark file's field holds its text")
    func redacted() {
        let f = SequenceStore.fingerprint(key: SecretBytes([UInt8](repeating: 0x42, count: 16)))
        #expect(f.markFileField.count == 32 && f.markFileField.allSatisfy(\.isHexDigit))
        var dumped = ""
        dump(f, to: &dumped)
        for shown in ["\(f)", String(describing: f), String(reflecting: f), dumped] {
            #expect(!shown.contains(f.markFileField) && shown.contains("key fingerprint"), "\(shown)")
        }
    }
}
