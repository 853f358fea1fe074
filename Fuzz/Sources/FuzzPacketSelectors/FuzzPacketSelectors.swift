// The 5-tuple reader of inner packets (`PacketSelectors`: after ESP decryption, and on TUN input
// before encryption) on arbitrary bytes. The packet is the input after its first byte, read in
// place in libFuzzer's buffer (which ends where the input does), so a read past its end is an ASan
// report. When the first byte is 0 and the rest is an Ethernet frame of IPv4 or IPv6 (the seeds
// made from pcap captures), the Ethernet header is skipped.
//
// Oracles: the values equal those of a reference reader written here from the type's description
// and RFC 8200 (addresses, protocol, ports, the non-initial-fragment flag, nil for the same
// inputs); ports only for protocols that have them, both or neither, never for a non-initial
// fragment; a selector with ports never matches a packet without them, and one with any port
// matches exactly when its address and protocol do.
import FuzzDriver
import FuzzSupport
import OffloadIPsec
import OffloadWire

/// The values a reference reader finds, or nil where `PacketSelectors` must give nil.
struct Reference: Equatable {
    var source: [UInt8], destination: [UInt8]
    var ipProtocol: UInt8
    var ports: (UInt16, UInt16)?
    var nonInitialFragment: Bool

    static func == (a: Reference, b: Reference) -> Bool {
        a.source == b.source && a.destination == b.destination && a.ipProtocol == b.ipProtocol
            && a.ports?.0 == b.ports?.0 && a.ports?.1 == b.ports?.1 && a.nonInitialFragment == b.nonInitialFragment
    }

    init(source: [UInt8], destination: [UInt8], ipProtocol: UInt8, ports: (UInt16, UInt16)?, nonInitialFragment: Bool) {
        self.source = source
        self.destination = destination
        self.ipProtocol = ipProtocol
        self.ports = ports
        self.nonInitialFragment = nonInitialFragment
    }

    init?(_ p: UnsafeRawBufferPointer) {
        let n = p.count
        func u16(_ i: Int) -> UInt16 { UInt16(p[i]) << 8 | UInt16(p[i + 1]) }
        guard n >= 1 else { return nil }
        var transport: Int, end: Int
        switch p[0] >> 4 {
        case 4:
            guard n >= 20 else { return nil }
            let ihl = Int(p[0] & 0x0F) * 4
            guard ihl >= 20, ihl <= n else { return nil }
            source = Array(p[12..<16])
            destination = Array(p[16..<20])
            ipProtocol = p[9]
            let total = Int(u16(2))
            // The IP length bounds the headers when it is shorter than the buffer (and sane).
            end = total >= ihl ? min(n, total) : n
            nonInitialFragment = u16(6) & 0x1FFF != 0
            transport = ihl
        case 6:
            guard n >= 40 else { return nil }
            source = Array(p[8..<24])
            destination = Array(p[24..<40])
            let payload = Int(u16(4))
            end = payload == 0 ? n : min(n, 40 + payload)
            var next = p[6], offset = 40, walked = 0
            nonInitialFragment = false
            // Hop-by-Hop, Routing, Fragment, Destination Options (RFC 8200 §4), at most 8.
            while next == 0 || next == 43 || next == 44 || next == 60 {
                walked += 1
                guard walked <= 8, offset + 8 <= end else { return nil }
                let length = next == 44 ? 8 : (Int(p[offset + 1]) + 1) * 8
                let fragment = next == 44
                next = p[offset]
                if fragment && u16(offset + 2) & 0xFFF8 != 0 {
                    nonInitialFragment = true
                    offset = end
                    break
                }
                offset += length
            }
            ipProtocol = next
            transport = offset
        default:
            return nil
        }
        let hasPorts = [6, 17, 33, 132, 136].contains(ipProtocol)
        ports = !nonInitialFragment && hasPorts && transport + 4 <= end ? (u16(transport), u16(transport + 2)) : nil
    }
}

func bytes(_ a: IPAddress) -> [UInt8] {
    switch a {
    case .v4(let x): withUnsafeBytes(of: x.rawValue.bigEndian) { Array($0) }
    case .v6(let x): withUnsafeBytes(of: x.high.bigEndian) { Array($0) } + withUnsafeBytes(of: x.low.bigEndian) { Array($0) }
    }
}

/// Selectors to match the values against: any, protocols, ports, both families.
let selectors: [TrafficSelector] = ["0.0.0.0/0", "::/0", "0.0.0.0/0[tcp]", "0.0.0.0/0[udp/53]", "0.0.0.0/0[udp/1000-2000]",
                                    "::/0[tcp/%any]", "::/0[sctp/0-1023]", "::/0[udp/4500]", "10.0.0.0/8[dccp]", "fd00::/8[udplite/1-65535]",
                                    "0.0.0.0/0[icmp]", "::/0[ipv6-icmp]"].map { TrafficSelector($0)! }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPacketSelectors(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    var start = 1
    if data[0] == 0 && size >= 1 + 14 + 1 {
        let type = UInt16(data[13]) << 8 | UInt16(data[14])
        if type == 0x0800 || type == 0x86DD { start = 15 }
    }
    // Safe: [start, size) lies inside libFuzzer's buffer of `size` bytes.
    let packet = UnsafeRawBufferPointer(start: data + start, count: size - start)
    let got = PacketSelectors(packet.bytes)
    let reference = Reference(packet)
    guard let got else {
        if let reference { oracleFailure("nil, but the reference reads \(reference)") }
        return 0
    }
    guard let reference else { oracleFailure("\(got), but the reference finds no packet") }
    let ports: (UInt16, UInt16)? = got.sourcePort.map { s in got.destinationPort.map { (s, $0) } } ?? nil
    if (got.sourcePort == nil) != (got.destinationPort == nil) { oracleFailure("one port without the other: \(got)") }
    if ports != nil && !PacketSelectors.hasPorts(got.ipProtocol) { oracleFailure("ports for protocol \(got.ipProtocol): \(got)") }
    if ports != nil && got.isNonInitialFragment { oracleFailure("ports for a non-initial fragment: \(got)") }
    let mine = Reference(source: bytes(got.source), destination: bytes(got.destination), ipProtocol: got.ipProtocol, ports: ports,
                         nonInitialFragment: got.isNonInitialFragment)
    if mine != reference { oracleFailure("\(got), the reference \(reference)") }
    for ts in selectors {
        for (address, port) in [(got.source, got.sourcePort), (got.destination, got.destinationPort)] {
            let m = ts.matches(address, ipProtocol: got.ipProtocol, port: port)
            let base = ts.contains(address) && (ts.ipProtocol == 0 || ts.ipProtocol == got.ipProtocol)
            if ts.allowsAllPorts && m != base { oracleFailure("\(ts) with any port: \(m) for \(got)") }
            if !ts.allowsAllPorts && port == nil && m { oracleFailure("\(ts) with ports matched a packet without: \(got)") }
            if !ts.allowsAllPorts, let port, m != (base && ts.ports.contains(port)) { oracleFailure("\(ts): \(m) for \(got)") }
        }
    }
    return 0
}

extension Reference: CustomStringConvertible {
    var description: String { "\(source) → \(destination) (\(ipProtocol)) ports \(String(describing: ports)) fragment \(nonInitialFragment)" }
}

/// The entry point SwiftPM links as `main`: libFuzzer's driver.
@_cdecl("FuzzPacketSelectors_main")
public func fuzzPacketSelectorsMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    fuzz_driver_main(argc, argv)
}
