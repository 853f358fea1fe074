import Logging
import OffloadEngine
import OffloadTUN
import OffloadTestSupport
import OffloadWire
import Testing

@testable import OffloadIPsec
@testable import OffloadTunnel

#if canImport(Glibc)
    import Glibc
#endif

@Suite("ESP: a seal that fails sends nothing, is counted as encrypt_failed, and its sequence number is never used")
struct ESPSealFailureTests {
    @Test("a packet whose seal fails: no datagram (not even an empty one), encrypt_failed counted once, the next packet gets the next number",
          arguments: [ESPAlgorithm.aesGCM128, .chacha20Poly1305])
    func failedSeal(algorithm: ESPAlgorithm) throws {
        let p = try policy(algorithm, out: keys(algorithm, spi: 0x2001, seed: 3), esn: false)
        let output = RecordingOutput()
        let sink = try TunnelSink(output: output, codec: ESPCodec(policy: p), logger: Logger(label: "test"))
        var b = PacketBuilder()
        b.link = .raw
        b.payloadLength = 200
        let packet = b.frame()
        try sink.encapsulator.encoder.breakSealing()
        try packet.withUnsafeBytes { try sink.send($0, gso: nil) }
        #expect(output.datagrams.count == 0, "nothing on the wire: \(output.datagrams.map(\.count)) bytes")
        #expect(sink.counters.encapsulationDropped == [.encryptFailed: 1])
        #expect(sink.counters.datagramsSent == 0 && sink.counters.sends == 0)
        #expect(p.counters(spi: 0x2001, inbound: false)?.packets == 0, "a failed seal is not an encrypted packet")

        try sink.encapsulator.encoder.restoreSealing()
        try packet.withUnsafeBytes { try sink.send($0, gso: nil) }
        try #require(output.datagrams.count == 1)
        #expect(output.datagrams[0].loadBigEndian(UInt32.self, at: 4) == 2, "number 1 went with the failed seal: skipped, never reused")
        var decoder = try ESPCodec(policy: p).makeDecoder()
        #expect(decoder.open(output.datagrams[0]).1 == packet)
        #expect(sink.counters.encapsulationDropped == [.encryptFailed: 1] && sink.counters.datagramsSent == 1)
    }

    @Test("a super-packet whose seals fail: each segment counted, none sent; the numbers it reserved are skipped")
    func failedSuperPacket() throws {
        let p = try policy(.aesGCM256, out: keys(.aesGCM256, spi: 0x2002, seed: 4), esn: true)
        let output = RecordingOutput()
        let sink = try TunnelSink(output: output, codec: ESPCodec(policy: p), logger: Logger(label: "test"))
        let (bytes, gso) = superPacket(count: 5, size: 600, last: 100)
        try sink.encapsulator.encoder.breakSealing()
        try bytes.withUnsafeBytes { try sink.send($0, gso: gso) }
        #expect(output.datagrams.count == 0)
        #expect(sink.counters.encapsulationDropped == [.encryptFailed: 5])
        try sink.encapsulator.encoder.restoreSealing()
        try bytes.withUnsafeBytes { try sink.send($0, gso: gso) }
        #expect(output.datagrams.map { $0.loadBigEndian(UInt32.self, at: 4) } == [6, 7, 8, 9, 10])
    }
}
