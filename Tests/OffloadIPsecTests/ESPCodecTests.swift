import Foundation
import OffloadCrypto
import OffloadEngine
import OffloadTestSupport
import OffloadTunnel
import OffloadWire
import Testing

@testable import OffloadIPsec

/// Hex digits (spaces and newlines ignored) as bytes.
func hex(_ text: String) -> [UInt8] { hexBytes(text) }

/// A one-tunnel policy, the same keys both ways unless given.
func policy(_ algorithm: ESPAlgorithm, out: ESPSAKeys, in inbound: ESPSAKeys? = nil, esn: Bool = true,
            local: [String] = ["0.0.0.0/0", "::/0"], remote: [String] = ["0.0.0.0/0", "::/0"]) throws -> ESPSecurityPolicy {
    let t = ESPTunnelConfiguration(name: "t", algorithm: algorithm, extendedSequenceNumbers: esn, replayWindow: 1024,
                                   localSelectors: local.map { TrafficSelector($0)! },
                                   remoteSelectors: remote.map { TrafficSelector($0)! }, outbound: out, inbound: inbound ?? out)
    return try ESPSecurityPolicy(tunnels: [t], store: nil)
}

func keys(_ algorithm: ESPAlgorithm, spi: UInt32, seed: UInt8) -> ESPSAKeys {
    ESPSAKeys(spi: spi, key: (0..<algorithm.keyLength).map { UInt8(truncatingIfNeeded: Int(seed) &* 31 &+ $0) },
              salt: [seed, 1, 2, 3])
}

/// Encrypts one inner packet (or super-packet) with the codec; the datagrams.
func encrypt(_ packet: [UInt8], gso: GSOInfo? = nil, with encapsulator: inout TunnelEncapsulator<ESPCodec>) throws -> [[UInt8]] {
    try packet.withUnsafeBytes { raw in
        if let refusal = try encapsulator.prepare(raw, gso: gso) { throw TestFailure("refused: \(refusal)") }
        return (0..<encapsulator.datagramCount).map { encapsulator.datagramBytes(at: $0) }
    }
}

/// Seals `plaintext` with `context`: ciphertext ‖ 16-byte tag (nil when libcrypto failed).
func seal(_ context: AEADContext, nonce: [UInt8], aad: [UInt8], _ plaintext: [UInt8]) -> [UInt8]? {
    context.seal(nonce: nonce, aad: aad, plaintext)
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

extension ESPCodec.Decoder {
    /// Decodes a copy; the verdict and the inner bytes when it is a packet.
    mutating func open(_ datagram: [UInt8]) -> (TunnelDatagram, [UInt8]?) {
        var copy = datagram
        let verdict = copy.withUnsafeMutableBytes { decode($0) }
        if case .packet(let r) = verdict { return (verdict, Array(copy[r])) }
        return (verdict, nil)
    }
}

@Suite("ESP known answers: RFC 7634 Appendix A byte for byte, draft-mcgrew-gcm-test-01 AES-GCM vectors")
struct ESPKnownAnswerTests {
    @Test("RFC 7634 Appendix A: the whole ESP packet (ChaCha20-Poly1305, SPI 0x01020304, sequence 5, IV 0x1011121314151617), and back")
    func rfc7634() throws {
        let inner = hex("""
            45 00 00 54 a6 f2 00 00 40 01 e7 78 c6 33 64 05 c0 00 02 05 08 00 5b 7a 3a 08 00 00 55 3b ec 10
            00 07 36 27 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f 20 21 22 23
            24 25 26 27 28 29 2a 2b 2c 2d 2e 2f 30 31 32 33 34 35 36 37
            """)
        let material = hex("80 81 82 83 84 85 86 87 88 89 8a 8b 8c 8d 8e 8f 90 91 92 93 94 95 96 97 98 99 9a 9b 9c 9d 9e 9f a0 a1 a2 a3")
        let sa = ESPSAKeys(spi: 0x0102_0304, key: Array(material.prefix(32)), salt: Array(material.suffix(4)))
        let expected = hex("01020304 00000005 1011121314151617") + hex("""
            24 03 94 28 b9 7f 41 7e 3c 13 75 3a 4f 05 08 7b 67 c3 52 e6 a7 fa b1 b9 82 d4 66 ef 40 7a e5 c6
            14 ee 80 99 d5 28 44 eb 61 aa 95 df ab 4c 02 f7 2a a7 1e 7c 4c 4f 64 c9 be fe 2f ac c6 38 e8 f3
            cb ec 16 3f ac 46 9b 50 27 73 f6 fb 94 e6 64 da 91 65 b8 28 29 f6 41 e0
            76 aa a8 26 6b 7f b0 f7 b1 1b 36 99 07 e1 ad 43
            """)
        // The RFC's packet has no ESN (its AAD is SPI ‖ 32-bit sequence) and an IV that is not the sequence number.
        let p = try policy(.chacha20Poly1305, out: sa, esn: false)
        #expect(p.sequences[0].reserve(4) == 1)  // numbers 1...4 gone: the next packet is number 5
        var encapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: p))
        encapsulator.encoder.fixedIV = 0x1011_1213_1415_1617
        let datagrams = try encrypt(inner, with: &encapsulator)
        #expect(datagrams == [expected])
        var decoder = try ESPCodec(policy: p).makeDecoder()
        let (verdict, plaintext) = decoder.open(expected)
        #expect(verdict == .packet(16..<100) && plaintext == inner)
    }

    struct Vector: Sendable, CustomStringConvertible {
        var name: String, algorithm: ESPAlgorithm, key: String, nonce: String, aad: String, plaintext: String, sealed: String
        var description: String { name }
    }

    static let gcm: [Vector] = [
        Vector(name: "AES-128, 32-bit sequence", algorithm: .aesGCM128, key: "feffe9928665731c6d6a8f9467308308",
               nonce: "cafebabefacedbaddecaf888", aad: "0000a5f80000000a",
               plaintext: "4500003e698f000080114dccc0a80102c0a801010a980035002a2343b2d0010000010000000000000373697009637962"
                   + "65726369747902646b00000100010001",
               sealed: "deb22cd9b07c72c16e3a65beeb8df304a5a5897d33ae530f1ba76d5d114d2a5c3de81827c10e9a4f51330d0eec416642"
                   + "cfbb85a5b47e48a4ec3b9ba95d918bd183b70d3aa8bc6ee4c309e9d85a41ad4a"),
        Vector(name: "AES-128, ESN (12-byte AAD)", algorithm: .aesGCM128, key: "4c80cdefbb5d10da906ac73c3613a634",
               nonce: "2e443b684956ed7e3b244cfe", aad: "000043218765432100000000",
               plaintext: "45000048699a000080114db7c0a80102c0a801010a9bf15638d301000001000000000000045f736970045f7564700373"
                   + "69700963796265726369747902646b000021000101020201",
               sealed: "fecf537e729d5b07dc30df528dd22b768d1b98736696a6fd348509fa13ceac34cfa2436f14a3f3cf65925bf1f4a13c5d"
                   + "15b21e1884f5ff6247aeabb786b93bce61bc17d768fd9732459018148f6cbe722fd04796562dfdb4"),
        Vector(name: "AES-256", algorithm: .aesGCM256, key: "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
               nonce: "112233440102030405060708", aad: "4a2cbfe300000002",
               plaintext: "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee0000000007002400020bf0000020405b401010402"
                   + "01020201",
               sealed: "ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763748a637985771d347f0545659f14e99d"
                   + "ef842d8eb335f4eecfdbf831824b4c4915956c96"),
    ]

    @Test("AES-GCM (draft-mcgrew-gcm-test-01): seal gives the ciphertext and ICV; open gives the plaintext and refuses one flipped bit",
          arguments: gcm)
    func aesGCM(_ v: Vector) throws {
        let plaintext = hex(v.plaintext), sealed = hex(v.sealed), nonce = hex(v.nonce), aad = hex(v.aad)
        let sealer = try AEADContext(v.algorithm, key: hex(v.key), sealing: true)
        #expect(seal(sealer, nonce: nonce, aad: aad, plaintext) == sealed)
        let opener = try AEADContext(v.algorithm, key: hex(v.key), sealing: false)
        func open(_ bytes: [UInt8]) -> [UInt8]? {
            var data = Array(bytes.dropLast(16))
            let tag = Array(bytes.suffix(16))
            let good = nonce.withUnsafeBytes { n in
                aad.withUnsafeBytes { a in
                    tag.withUnsafeBytes { t in data.withUnsafeMutableBytes { opener.open(nonce: n.baseAddress!, aad: a, data: $0, tag: t.baseAddress!) } }
                }
            }
            return good ? data : nil
        }
        #expect(open(sealed) == plaintext)
        var flipped = sealed
        flipped[7] ^= 0x10
        #expect(open(flipped) == nil)
    }
}

@Suite("SA sets replaced while traffic flows (IKEv2's installs): between two packets, nothing else touched")
struct ESPPolicyReplacementTests {
    func packet(_ n: Int) -> [UInt8] {
        var b = PacketBuilder()
        b.link = .raw
        b.sequence = UInt32(1 + n * 100)
        b.payloadLength = 100
        return b.frame()
    }

    @Test("make before break: the old and new inbound SAs both decrypt during the overlap; the encoder moves to the sending SA; the old window, counters and sequence numbers survive the swap; a removed SA is an unknown SPI")
    func replace() throws {
        let any = ["0.0.0.0/0", "::/0"].map { TrafficSelector($0)! }
        let old = ESPTunnelConfiguration(name: "old", algorithm: .aesGCM128, extendedSequenceNumbers: false, localSelectors: any,
                                         remoteSelectors: any, outbound: keys(.aesGCM128, spi: 0x1001, seed: 1),
                                         inbound: keys(.aesGCM128, spi: 0x2001, seed: 2))
        var new = ESPTunnelConfiguration(name: "new", algorithm: .aesGCM128, extendedSequenceNumbers: false, localSelectors: any,
                                         remoteSelectors: any, outbound: keys(.aesGCM128, spi: 0x1002, seed: 3),
                                         inbound: keys(.aesGCM128, spi: 0x2002, seed: 4))
        let ours = try ESPSecurityPolicy(tunnels: [old], store: nil)
        // The far end's view, to make what arrives here.
        let theirs = try ESPSecurityPolicy(tunnels: [old.reversed], store: nil)
        var encapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: ours))
        var theirEncapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: theirs))
        var decoder = try ESPCodec(policy: ours).makeDecoder()
        let first = try encrypt(packet(0), with: &encapsulator)
        #expect(first.count == 1 && Array(first[0][0..<4]) == [0, 0, 0x10, 0x01])
        let fromOld = try encrypt(packet(1), with: &theirEncapsulator)
        #expect(decoder.open(fromOld[0]).1 != nil)
        // The rekey: the new SA is installed and sends; the old one still receives.
        var oldReceiving = old
        oldReceiving.sending = false
        try ours.replace([new, oldReceiving])
        let second = try encrypt(packet(2), with: &encapsulator)
        #expect(Array(second[0][0..<4]) == [0, 0, 0x10, 0x02], "the encoder moved to the new SA between two packets")
        let late = try encrypt(packet(3), with: &theirEncapsulator)
        #expect(decoder.open(late[0]).1 != nil, "the old SA still decrypts during the overlap")
        #expect(decoder.open(late[0]).0 == .drop(.replay))
        #expect(decoder.open(fromOld[0]).0 == .drop(.replay), "what it accepted before the swap is still a replay: its window survived")
        try theirs.replace([new.reversed])
        let fromNew = try encrypt(packet(4), with: &theirEncapsulator)
        #expect(decoder.open(fromNew[0]).1 != nil, "the new SA decrypts")
        #expect(ours.counters(spi: 0x2001, inbound: true)?.packets == 2 && ours.counters(spi: 0x2002, inbound: true)?.packets == 1)
        #expect(ours.counters(spi: 0x1001, inbound: false)?.packets == 1 && ours.counters(spi: 0x1002, inbound: false)?.packets == 1)
        // The old SA deleted: its datagrams are refused as an unknown SPI.
        new.sending = true
        try ours.replace([new])
        #expect(decoder.open(late[0]).0 == .drop(.unknownSPI))
        #expect(ours.sequences[0].next == 2, "the new SA's counter went on from its first packet")
    }
}
