import Logging
import OffloadEngine
import OffloadTUN
import OffloadTestSupport
import OffloadWire
import Testing

@testable import OffloadTunnel

#if canImport(Glibc)
    import Glibc
#endif

/// A codec that writes a 4-byte header (the datagram's index) and fails the datagrams it is told to.
struct FailingCodec: TunnelCodec {
    var failing: Set<Int>
    var innerLinkType: LinkType { .raw }
    var port: UInt16 { 9 }
    var connectsSocket: Bool { true }
    var headerRoom: Int { 4 }
    var trailerRoom: Int { 0 }
    var dropReasons: [TunnelDropReason] { [] }
    var description: String { "failing" }
    func makeEncoder() -> Encoder { Encoder(failing: failing) }
    func makeDecoder() -> Decoder { Decoder() }

    static let failed = TunnelDropReason(rawValue: "test_failed")

    struct Encoder: TunnelEncoder {
        let failing: Set<Int>
        var writesWholeDatagram: Bool { false }
        mutating func begin(headers: UnsafeRawBufferPointer, datagrams: Int) -> TunnelDropReason? { nil }
        mutating func encode(_ segment: InnerSegment, index: Int, into slot: UnsafeMutableRawBufferPointer) throws(TunnelDropReason) -> Int {
            if failing.contains(index) { throw FailingCodec.failed }
            slot.storeBytes(of: UInt32(index).bigEndian, as: UInt32.self)
            return 4
        }
    }
    struct Decoder: TunnelDecoder {
        mutating func decode(_ datagram: UnsafeMutableRawBufferPointer, from source: UDPEndpoint?) -> TunnelDatagram { .drop(.truncated) }
    }
}

@Suite("Encapsulation: a segment the encoder cannot write is dropped and counted, never sent empty")
struct EncapsulationFailureTests {
    @Test("a 4-segment super-packet whose segment 1 fails: segments 0, 2, 3 sent whole, one drop counted, no empty datagram")
    func failedSegmentIsDropped() throws {
        let (bytes, gso) = superPacket(count: 4, size: 500, last: 200)
        let output = RecordingOutput()
        let sink = try TunnelSink(output: output, codec: FailingCodec(failing: [1]), logger: Logger(label: "test"))
        var segmenter = GSOSegmenter()
        let segments = try bytes.withUnsafeBytes { raw in
            try sink.send(raw, gso: gso)
            try segmenter.segment(raw, linkType: .raw, gso: gso, checksum: .complete)
            return (0..<segmenter.segmentCount).map { segmenter.segmentBytes(at: $0) }
        }
        #expect(!output.datagrams.contains { $0.isEmpty }, "no empty datagram on the wire")
        #expect(output.datagrams.map { $0.loadBigEndian(UInt32.self, at: 0) } == [0, 2, 3])
        let whole = output.datagrams.map { Array($0.dropFirst(4)) } == [segments[0], segments[2], segments[3]]
        #expect(whole, "each datagram is its header and its whole segment")
        #expect(sink.counters.encapsulationDropped == [FailingCodec.failed: 1])
        #expect(sink.counters.datagramsSent == 3)
    }

    @Test("every segment fails: nothing is sent, each one counted")
    func everySegmentFails() throws {
        let (bytes, gso) = superPacket(count: 3, size: 500)
        let output = RecordingOutput()
        let sink = try TunnelSink(output: output, codec: FailingCodec(failing: [0, 1, 2]), logger: Logger(label: "test"))
        try bytes.withUnsafeBytes { try sink.send($0, gso: gso) }
        #expect(output.datagrams.count == 0)
        #expect(sink.counters.encapsulationDropped == [FailingCodec.failed: 3])
        #expect(sink.counters.sends == 0 && sink.counters.datagramsSent == 0)
    }
}
