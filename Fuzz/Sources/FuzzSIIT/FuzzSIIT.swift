// The SIIT translator on arbitrary IPv4 and IPv6 packets: a translation, an ICMP error or a drop,
// never a trap; when the input parses as an IP packet, whatever it emits parses too (a malformed
// transport header is translated as it came, like any payload).
import FuzzDriver
import FuzzSupport
import OffloadSIIT
import OffloadWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSIIT(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let setup = input.byte()
    let prefix = RFC6052Prefix(["64:ff9b::/96", "2001:db8:100::/40", "2001:db8::/32", "2001:db8:1:2::/64"][Int(setup & 3)])!
    var configuration = SIITConfiguration(pool6: prefix)
    if setup & 4 != 0, let entry = EAMTable.Entry(ipv6: IPv6Prefix("2001:db8:eeee::/120")!, ipv4: IPv4Prefix("198.51.100.0/24")!) {
        configuration.eam = EAMTable([entry])
    }
    configuration.amendUDPChecksumZero = setup & 8 != 0
    let mtu = 1_280 + Int(input.u16()) % 8_000
    var translator = SIITTranslator(configuration: configuration)
    let packet = input.rest()
    var emitted: [[UInt8]] = []
    switch translator.translate(packet, egressMTU: mtu) {
    case .translated(let packets): emitted = packets
    case .reply(let reply, _): emitted = [reply]
    case .drop: break
    }
    guard (try? PacketLayout(parsing: packet.span.bytes, linkType: .raw)) != nil else { return 0 }
    for p in emitted {
        guard (try? PacketLayout(parsing: p.span.bytes, linkType: .raw)) != nil else {
            oracleFailure("the translator emitted a packet that does not parse (\(p.count) bytes)")
        }
    }
    return 0
}

/// The entry point SwiftPM links as `main`: libFuzzer's driver.
@_cdecl("FuzzSIIT_main")
public func fuzzSIITMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    fuzz_driver_main(argc, argv)
}
