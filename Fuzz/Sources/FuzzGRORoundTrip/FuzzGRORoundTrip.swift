// The GRO engine with the round-trip property as the oracle: the input decodes into a stream of
// packets of up to four flows (built by PacketBuilder and mutated field by field) mixed with raw
// frames, GRO runs over it in batches with a decoded configuration, every super-packet is
// segmented back, and the result must be exactly the input, each flow in its order.
import FuzzDriver
import FuzzSupport
import OffloadEngine
import OffloadWire

struct FlowState {
    var sequence: UInt32
    var id: UInt16
    var tsval: UInt32 = 7
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGRORoundTrip(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let setup = input.byte()
    var configuration = GROConfiguration()
    configuration.udp = setup & 1 != 0
    configuration.flowCapacity = [64, 4, 2, 1][Int(setup >> 1) & 3]
    configuration.maximumSegments = [64, 8, 3, 2][Int(setup >> 3) & 3]
    if setup & 0x20 != 0 { configuration.ipIDRule = .legacy }
    configuration.trainFastPath = setup & 0x40 == 0
    // Trusted checksums only for built packets with correct checksums: a wrong checksum that
    // the receiver vouched for is not an input the property covers.
    let trusted = setup & 0x80 != 0
    let batchSize = max(1, Int(input.byte()))
    var flows = (0..<4).map { FlowState(sequence: 1_000 + UInt32($0) * 7_919, id: UInt16($0) * 100) }
    var frames: [[UInt8]] = []
    while !input.isEmpty && frames.count < 64 {
        let tag = input.byte()
        if tag & 0x80 != 0 {
            if trusted { continue }
            frames.append(input.take(Int(input.u16()) % 2_000))
            continue
        }
        let f = Int(tag & 3)
        var b = PacketBuilder()
        b.ipv6 = f >= 2
        b.udp = configuration.udp && tag & 0x04 != 0
        b.sourcePort = 40_000 + UInt16(f)
        let length = Int(input.u16()) % 1_500
        let flags = input.byte()
        let mutation = input.byte()
        b.payloadLength = flags & 0x80 != 0 ? 1_448 : length
        b.payloadSeed = UInt8(truncatingIfNeeded: frames.count)
        b.sequence = flows[f].sequence
        b.ipID = mutation & 0x01 != 0 ? flows[f].id &+ UInt16(mutation >> 4) : flows[f].id
        if flags & 0x01 != 0 { b.flags.insert(.psh) }
        if flags & 0x02 != 0 { b.flags.insert(.fin) }
        if flags & 0x04 != 0 { b.flags.insert(.cwr) }
        if flags & 0x08 != 0 { b.flags.insert(.ece) }
        if flags & 0x10 != 0 { b.flags.insert([.syn, .rst, .urg][Int(flags >> 5) % 3]) }
        if mutation & 0x02 != 0 { b.ttl = 63 }
        if mutation & 0x04 != 0 { b.tos = 1 }
        if mutation & 0x08 != 0 { flows[f].tsval &+= 1 }
        b.options = [.noOperation, .noOperation, .timestamp(value: flows[f].tsval, echoReply: 9)]
        if mutation & 0x10 != 0 { b.window &+= 1 }
        if mutation & 0x20 != 0 && !trusted { b.corruptChecksum = true }
        if mutation & 0x40 != 0 { b.padding = Int(mutation & 7) + 1 }
        if mutation & 0x80 != 0 { b.dontFragment = false }
        frames.append(b.frame())
        flows[f].sequence &+= UInt32(b.payloadLength) &+ (flags & 0x40 != 0 ? 100 : 0)
        flows[f].id &+= 1
    }

    var engine = GROEngine(configuration: configuration)
    var batch = PacketBatch(packetCapacity: batchSize, byteCapacity: max(64, frames.reduce(0) { $0 + $1.count + 64 }))
    var segmenter = GSOSegmenter()
    var output: [[UInt8]] = []
    func drain() {
        for i in 0..<engine.outputCount {
            let record = engine.output(at: i)
            let bytes = engine.outputBytes(at: i)
            guard let gso = record.metadata.gso else {
                output.append(bytes)
                continue
            }
            // The segments point into `bytes`: they are copied out inside the closure.
            var failure: (any Error)?
            bytes.withUnsafeBytes { buffer in
                do {
                    try segmenter.segment(buffer, linkType: record.metadata.linkType, gso: gso)
                    for k in 0..<segmenter.segmentCount { output.append(segmenter.segmentBytes(at: k)) }
                } catch {
                    failure = error
                }
            }
            if let failure { oracleFailure("a super-packet GRO made does not segment: \(failure)") }
        }
    }
    var start = 0
    while start < frames.count {
        batch.removeAll()
        for frame in frames[start..<min(start + batchSize, frames.count)] {
            batch.append(frame, metadata: PacketMetadata(linkType: .ethernet, checksum: trusted ? .verified : .unverified))
        }
        engine.coalesce(batch)
        drain()
        start += batchSize
    }
    engine.flush()
    drain()
    if let violation = RoundTrip.violation(input: frames, output: output, linkType: .ethernet) {
        oracleFailure("segment(coalesce(x)) != x: \(violation)")
    }
    return 0
}

/// The entry point SwiftPM links as `main`: libFuzzer's driver.
@_cdecl("FuzzGRORoundTrip_main")
public func fuzzGRORoundTripMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    fuzz_driver_main(argc, argv)
}
