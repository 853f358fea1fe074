// PacketLayout: the raw-load fast path and the header views must agree on every input, and
// neither may trap. The first byte picks the link type.
import FuzzDriver
import FuzzSupport
import OffloadWire

let linkTypes: [LinkType] = [.ethernet, .raw, .linuxSLL, .linuxSLL2, .null, .loop, .ipv4, .ipv6, LinkType(rawValue: 147)]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPacketLayout(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let linkType = linkTypes[Int(input.byte()) % linkTypes.count]
    let frame = input.rest()
    let fast: Result<PacketLayout, WireError> = Result { () throws(WireError) in
        try PacketLayout(parsing: frame.span.bytes, linkType: linkType)
    }
    let views: Result<PacketLayout, WireError> = Result { () throws(WireError) in
        try PacketLayout(validatingEachHeader: frame.span.bytes, linkType: linkType)
    }
    switch (fast, views) {
    case (.success(let a), .success(let b)):
        if a != b { oracleFailure("fast path \(a) != views \(b)") }
        // Every offset the layout gives lies inside the frame.
        if !(a.networkOffset <= a.transportOffset && a.payloadOffset <= a.ipEnd && a.ipEnd <= a.frameLength
            && a.frameLength == frame.count)
        {
            oracleFailure("layout offsets outside the frame: \(a)")
        }
    case (.failure, .failure):
        break
    default:
        oracleFailure("fast path \(fast) and views \(views) disagree")
    }
    return 0
}

/// The entry point SwiftPM links as `main`: libFuzzer's driver.
@_cdecl("FuzzPacketLayout_main")
public func fuzzPacketLayoutMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    fuzz_driver_main(argc, argv)
}
