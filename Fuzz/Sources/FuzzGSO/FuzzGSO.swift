// The GSO segmenter with arbitrary GSO facts: whatever it accepts it must cut into segments of at
// most the segment size whose payloads, in order, are exactly the super-packet's payload.
import FuzzDriver
import FuzzSupport
import OffloadEngine
import OffloadWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGSO(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let kinds: [GSOInfo.Kind] = [.tcpv4, .tcpv6, .udpv4, .udpv6]
    let setup = input.byte()
    let kind = kinds[Int(setup & 3)]
    let segmentSize = Int(input.u16())
    let segmentCount = Int(input.byte())
    let gso = GSOInfo(kind: kind, segmentSize: segmentSize, segmentCount: segmentCount,
                      fixedID: setup & 4 != 0, ecn: setup & 8 != 0)
    let linkType: LinkType = setup & 0x10 != 0 ? .ethernet : .raw
    let checksum: OutputChecksum = setup & 0x20 != 0 ? .partial : .complete
    let resize: Int? = setup & 0x40 != 0 ? Int(input.u16()) : nil
    let packet = input.rest()
    guard let layout = try? PacketLayout(parsing: packet.span.bytes, linkType: linkType) else { return 0 }
    let size = resize ?? segmentSize
    var segmenter = GSOSegmenter()
    // The segments point into `packet`: they are read inside the closure.
    packet.withUnsafeBytes { buffer in
        guard (try? segmenter.segment(buffer, linkType: linkType, gso: gso, segmentSize: resize, checksum: checksum)) != nil
        else { return }
        var payload: [UInt8] = []
        for i in 0..<segmenter.segmentCount {
            let segment = segmenter.segmentBytes(at: i)
            guard let l = try? PacketLayout(parsing: segment.span.bytes, linkType: linkType) else {
                oracleFailure("segment \(i) does not parse")
            }
            if segmenter.segmentCount > 1 && l.payloadLength > size {
                oracleFailure("segment \(i) carries \(l.payloadLength) bytes, more than the segment size \(size)")
            }
            payload += segment[l.payloadOffset..<l.ipEnd]
        }
        if payload != Array(packet[layout.payloadOffset..<layout.ipEnd]) {
            oracleFailure("the segments' payloads are not the super-packet's payload")
        }
    }
    return 0
}

/// The entry point SwiftPM links as `main`: libFuzzer's driver.
@_cdecl("FuzzGSO_main")
public func fuzzGSOMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    fuzz_driver_main(argc, argv)
}
