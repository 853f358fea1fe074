// VirtioPacketInfo.validate: any virtio_net_hdr with any packet gives facts or an error, never a
// trap; accepted GSO facts segment without a trap.
import FuzzDriver
import FuzzSupport
import OffloadEngine
import OffloadWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtio(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let headerBytes = input.take(VirtioNetHeader.size)
    let linkType: LinkType = input.byte() & 1 == 0 ? .raw : .ethernet
    let packet = input.rest()
    guard let header = try? VirtioNetHeader(parsing: headerBytes.span.bytes) else { return 0 }
    guard let info = try? VirtioPacketInfo.validate(header, packet: packet.span.bytes, linkType: linkType) else { return 0 }
    if let gso = info.gso {
        var segmenter = GSOSegmenter()
        packet.withUnsafeBytes { buffer in
            _ = try? segmenter.segment(buffer, linkType: linkType, gso: gso)
        }
    }
    return 0
}

/// The entry point SwiftPM links as `main`: libFuzzer's driver.
@_cdecl("FuzzVirtio_main")
public func fuzzVirtioMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    fuzz_driver_main(argc, argv)
}
