import OffloadEngine
import OffloadTestSupport
import OffloadTunnel
import OffloadWire
import Testing

@testable import OffloadIPsec

@Suite("ESP decoder on the wire layer's view: every cut of a real datagram refused by reason, none trapped")
struct ESPDecoderBoundsTests {
    @Test("each prefix of a real datagram: truncated under 34 bytes, a bad ICV from there on; never a packet; the window unmoved",
          arguments: [false, true])
    func everyPrefix(esn: Bool) throws {
        let p = try policy(.aesGCM128, out: keys(.aesGCM128, spi: 0x3001, seed: 9), esn: esn)
        var encapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: p))
        var b = PacketBuilder()
        b.link = .raw
        b.payloadLength = 61
        let datagram = try #require(try encrypt(b.frame(), with: &encapsulator).first)
        var decoder = try ESPCodec(policy: p).makeDecoder()
        for n in 0..<datagram.count {
            let verdict = decoder.open(Array(datagram.prefix(n))).0
            let expected: TunnelDatagram = n < ESPFormat.minimumLength ? .drop(.truncated) : .drop(.badICV)
            #expect(verdict == expected, "\(n) bytes")
        }
        #expect(decoder.window(spi: 0x3001)?.top == 0, "no cut moved the window")
        #expect(decoder.open(datagram).1 == b.frame())
    }

    @Test("the non-ESP marker is IKE from 4 bytes on, before the ESP length check; a keepalive is one 0xFF byte")
    func markerAndKeepalive() throws {
        let p = try policy(.chacha20Poly1305, out: keys(.chacha20Poly1305, spi: 0x3002, seed: 2))
        var decoder = try ESPCodec(policy: p).makeDecoder()
        #expect(decoder.open([0, 0, 0, 0]).0 == .signalling(.ike))
        #expect(decoder.open([0xFF]).0 == .signalling(.natKeepalive))
        #expect(decoder.open([0xFF, 0xFF]).0 == .drop(.truncated))
        #expect(decoder.open([]).0 == .drop(.truncated))
    }
}
