// The tunnel headers and the decapsulator's classification on arbitrary datagrams: a range inside
// the datagram, a control message or a drop with its reason, never a trap.
import FuzzDriver
import FuzzSupport
import OffloadTunnel
import OffloadWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTunnel(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let setup = input.byte()
    let datagram = input.rest()
    datagram.withUnsafeBytes { buffer in
        _ = try? GTPUHeader(buffer)
        _ = try? VXLANHeader(buffer)
        let kind = setup & 1 == 0
            ? GTPUCodec(GTPUSettings(teid: 0x1234, sequenceNumbers: setup & 2 != 0)).makeDecoder().classify(buffer)
            : VXLANCodec(vni: 42).makeDecoder().classify(buffer)
        if case .packet(let range) = kind {
            if range.lowerBound < 0 || range.upperBound > buffer.count || range.isEmpty {
                oracleFailure("inner packet range \(range) outside a \(buffer.count)-byte datagram")
            }
        }
    }
    return 0
}

/// The entry point SwiftPM links as `main`: libFuzzer's driver.
@_cdecl("FuzzTunnel_main")
public func fuzzTunnelMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    fuzz_driver_main(argc, argv)
}
