// The ESP decapsulator on arbitrary datagrams: parsing, the anti-replay window, the ICV and the
// padding checks. Half the inputs are sealed with the SA's key first (an attacker who has the
// key, or a buggy peer), so the checks after the ICV are reached too. Oracles: an inner packet
// is a range inside the ciphertext; the window never moves back, and moves only for an
// authentic datagram; a datagram accepted once is a replay the second time.
//
// With bit 0x40 of the first byte set, the input instead drives one SA across the 2^32 edge of
// its sequence numbers (ESN) and across replacements of the SA set: each datagram is sealed here,
// independently of the encoder, with a 64-bit sequence number chosen near 2^32, and the SA set is
// replaced between datagrams (the SA kept, removed, or put back). Oracles: no sequence number is
// accepted twice, even across a replacement that keeps the SA; a fresh number ahead of the window
// (less than 2^31 ahead) and a fresh number inside it are accepted; the window never moves back and
// ends at the highest number accepted; a removed SA's datagrams are unknown SPIs.
import FuzzDriver
import FuzzSupport
import OffloadCrypto
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

/// The ESN edge and SA replacements (see the top of the file).
func fuzzSequenceEdge(_ input: inout FuzzInput, setup: UInt8) {
    let algorithm = algorithms[Int(setup & 3) % algorithms.count]
    let esn = setup & 0x20 != 0
    let salt: [UInt8] = [9, 8, 7, 6]
    let keys = ESPSAKeys(spi: 0x2002, key: (0..<algorithm.keyLength).map { UInt8(0x40 &+ $0) }, salt: salt)
    let other = ESPSAKeys(spi: 0x3003, key: (0..<algorithm.keyLength).map { UInt8(0x80 &+ $0) }, salt: [5, 4, 3, 2])
    func tunnel(_ k: ESPSAKeys) -> ESPTunnelConfiguration {
        ESPTunnelConfiguration(name: "edge", algorithm: algorithm, extendedSequenceNumbers: esn, replayWindow: 128,
                               localSelectors: [TrafficSelector("10.0.0.0/8")!], remoteSelectors: [TrafficSelector("0.0.0.0/0")!],
                               outbound: k, inbound: k)
    }
    let policy = try! ESPSecurityPolicy(tunnels: [tunnel(keys)], store: nil)
    var decoder = try! ESPCodec(policy: policy).makeDecoder()
    let sealer = try! AEADContext(algorithm, key: keys.key, sealing: true)
    let window = UInt64(128)
    // The model: what the receiver has accepted of this SA since it was (re)installed.
    var accepted = Set<UInt64>()
    var top: UInt64 = 0
    var installed = true
    var sent: [(UInt64, [UInt8])] = []
    let edge: UInt64 = esn ? 1 << 32 : (1 << 32) - 1
    var steps = 0
    while !input.isEmpty && steps < 48 {
        steps += 1
        let op = input.byte()
        if op & 0xF0 == 0xF0 {
            // Replace the SA set: keep the SA, drop it for another, or put it back (a new SA then).
            switch op & 3 {
            case 0:
                try! policy.replace([tunnel(keys)])
                if !installed { accepted = []; top = 0 }
                installed = true
            case 1:
                try! policy.replace([tunnel(other)])
                installed = false
                // The decoder sees the removal (it moves to the newest set at its next datagram), so
                // the SA put back later starts a new window, as the model does.
                if var last = sent.last?.1 {
                    let verdict = last.withUnsafeMutableBytes { decoder.decode($0) }
                    if verdict != .drop(.unknownSPI) { oracleFailure("a removed SA's datagram: \(verdict)") }
                }
            default:
                try! policy.replace([tunnel(other), tunnel(keys)])
                if !installed { accepted = []; top = 0 }
                installed = true
            }
            continue
        }
        // A datagram: a fresh one near the edge, or one sent before again.
        var sequence: UInt64
        var datagram: [UInt8]
        if op & 0x80 != 0, !sent.isEmpty {
            (sequence, datagram) = sent[Int(input.byte()) % sent.count]
        } else {
            let offset = Int64(Int16(bitPattern: input.u16())) / (op & 0x40 != 0 ? 1 : 128)
            let candidate = Int64(edge) + offset
            guard candidate >= 1, esn || candidate <= Int64(UInt32.max) else { continue }
            sequence = UInt64(candidate)
            var inner: [UInt8] = [0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 1, 1, 1, 10, 2, 2, 2, 0, 1, 0, 2, 0, 8, 0, 0]
            inner += input.take(Int(op & 0x0F))
            inner[3] = UInt8(inner.count)
            let padding = (4 - (inner.count + 2) % 4) % 4
            let plaintext = inner + (0..<padding).map { UInt8($0 + 1) } + [UInt8(padding), ESPFormat.nextHeaderIPv4]
            let spi = keys.spi.bigEndian, low = UInt32(truncatingIfNeeded: sequence).bigEndian
            let high = UInt32(truncatingIfNeeded: sequence >> 32).bigEndian
            let aad = withUnsafeBytes(of: spi) { Array($0) } + (esn ? withUnsafeBytes(of: high) { Array($0) } : []) + withUnsafeBytes(of: low) { Array($0) }
            let iv = withUnsafeBytes(of: sequence.bigEndian) { Array($0) }
            guard let sealed = sealer.seal(nonce: salt + iv, aad: aad, plaintext) else { oracleFailure("libcrypto refused to seal") }
            datagram = withUnsafeBytes(of: spi) { Array($0) } + withUnsafeBytes(of: low) { Array($0) } + iv + sealed
            sent.append((sequence, datagram))
        }
        var bytes = datagram
        let verdict = bytes.withUnsafeMutableBytes { decoder.decode($0) }
        guard installed else {
            if verdict != .drop(.unknownSPI) { oracleFailure("a removed SA's datagram: \(verdict)") }
            continue
        }
        let got = decoder.window(spi: keys.spi)?.top ?? 0
        if case .packet = verdict {
            if accepted.contains(sequence) { oracleFailure("sequence \(sequence) accepted twice") }
            accepted.insert(sequence)
            top = max(top, sequence)
        } else {
            if sequence > top && sequence - top < 1 << 31 && (esn || sequence <= UInt64(UInt32.max)) {
                oracleFailure("a fresh sequence \(sequence) ahead of the window (top \(top)) refused: \(verdict)")
            }
            if sequence <= top && top - sequence < window && !accepted.contains(sequence) {
                oracleFailure("a fresh sequence \(sequence) inside the window (top \(top)) refused: \(verdict)")
            }
            // A replay inside the window is a replay; one below it may also fail its ICV (its low half
            // then stands for the next subspace, RFC 4303 Appendix A2.2), which refuses it all the same.
            if accepted.contains(sequence) && top - sequence < window && verdict != .drop(.replay) {
                oracleFailure("a replay of \(sequence) refused for the wrong reason: \(verdict)")
            }
        }
        if got != top { oracleFailure("the window's top is \(got), the highest accepted \(top) (last: \(sequence), \(verdict))") }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzESP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let setup = input.byte()
    if setup & 0x40 != 0 {
        fuzzSequenceEdge(&input, setup: setup)
        return 0
    }
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
