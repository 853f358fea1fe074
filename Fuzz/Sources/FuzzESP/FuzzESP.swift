// The ESP decapsulator on arbitrary datagrams: parsing, the anti-replay window, the ICV and the
// padding checks. Half the inputs are sealed with the SA's key first (an attacker who has the
// key, or a buggy peer), so the checks after the ICV are reached too. Oracles: an inner packet
// is a range inside the ciphertext; the window never moves back, and moves only for an
// authentic datagram; a datagram accepted once is a replay the second time.
import FuzzDriver
import FuzzSupport
import OffloadIPsec
import OffloadTunnel
import OffloadWire

let algorithms: [ESPAlgorithm] = [.aesGCM128, .aesGCM256, .chacha20Poly1305]

func policy(_ algorithm: ESPAlgorithm, esn: Bool) -> ESPSecurityPolicy {
    let keys = ESPSAKeys(spi: 0x1001, key: (0..<algorithm.keyLength).map { UInt8($0) }, salt: [1, 2, 3, 4])
    let tunnel = ESPTunnelConfiguration(name: "f", algorithm: algorithm, extendedSequenceNumbers: esn, replayWindow: 1024,
                                        localSelectors: [TrafficSelector("10.0.0.0/8")!, TrafficSelector("fd00::/8")!],
                                        remoteSelectors: [TrafficSelector("0.0.0.0/0")!, TrafficSelector("::/0")!],
                                        outbound: keys, inbound: keys)
    return try! ESPSecurityPolicy(tunnels: [tunnel], store: nil)
}

let policies = algorithms.flatMap { a in [false, true].map { policy(a, esn: $0) } }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzESP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let setup = input.byte()
    let p = policies[Int(setup % UInt8(policies.count))]
    let codec = ESPCodec(policy: p)
    var decoder = try! codec.makeDecoder()
    var encoder = try! codec.makeEncoder()
    var lastTop: UInt64 = 0
    var count = 0
    while !input.isEmpty && count < 32 {
        count += 1
        let length = Int(input.byte()) * 8 + Int(input.byte() & 7)
        var datagram = input.take(length)
        if setup & 0x80 != 0 && datagram.count >= 2 {
            // Seal the bytes as an inner "packet" with the key (the encoder writes a valid header,
            // padding and ICV), then let the fuzzer's next byte damage one byte of it or not.
            var slot = [UInt8](repeating: 0, count: datagram.count + codec.headerRoom + codec.trailerRoom)
            var inner = datagram
            inner[0] = (inner[0] & 0x0F) | (inner[1] & 1 == 0 ? 0x40 : 0x60)
            var written = 0
            inner.withUnsafeBytes { raw in
                if encoder.begin(headers: raw, datagrams: 1) == nil {
                    written = slot.withUnsafeMutableBytes { (try? encoder.encode(InnerSegment(first: raw), index: 0, into: $0)) ?? 0 }
                }
            }
            if written > 0 {
                datagram = Array(slot[0..<written])
                let damage = Int(input.byte())
                if damage < datagram.count && damage & 1 == 1 { datagram[damage] ^= 0x20 }
            }
        }
        let original = datagram
        let verdict = datagram.withUnsafeMutableBytes { decoder.decode($0) }
        let top = decoder.window(spi: 0x1001)?.top ?? 0
        if top < lastTop { oracleFailure("the window moved back: \(lastTop) -> \(top)") }
        if case .packet(let range) = verdict {
            if range.lowerBound != ESPFormat.headerLength || range.upperBound > original.count - ESPFormat.icvLength - 2 {
                oracleFailure("inner range \(range) outside the ciphertext of a \(original.count)-byte datagram")
            }
            var again = original
            let second = again.withUnsafeMutableBytes { decoder.decode($0) }
            if second != .drop(.replay) { oracleFailure("accepted twice: \(second)") }
        } else if top != lastTop, case .drop(let reason) = verdict, reason == .badICV || reason == .unknownSPI || reason == .truncated {
            oracleFailure("the window moved for a refused datagram (\(reason))")
        }
        lastTop = top
    }
    return 0
}

/// The entry point SwiftPM links as `main`: libFuzzer's driver.
@_cdecl("FuzzESP_main")
public func fuzzESPMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    fuzz_driver_main(argc, argv)
}
