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
//
// With bit 0x20 of the first byte set (and 0x40 clear), the input drives a hub's decoder: one policy
// that serves many peers (`servesManyPeers`), its SAs each with a `peer`, some with `peerMayMove`
// (a NATed peer), and datagrams sealed here for one of them (or the input's bytes unsealed, or a
// sealed one with a byte damaged), each from a sender the input picks (the SA's peer, another
// SA's, a new address or port, or none), between replacements of the SA set that move a peer (the
// control plane's word). Oracles, against a model of each SA's window and peer: an authentic fresh
// datagram from its peer, or from no stated sender, is accepted; from elsewhere it is refused as
// `wrong_peer` (the window and the peer left as they were) unless the SA's peer may move and the
// datagram is the newest yet, when it is accepted and the peer moves there (the location and
// `takePeerMoves` say so, once); nothing is accepted twice; a damaged or unsealed datagram never
// moves a window or a peer.
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

/// Seals `inner` (an IP packet, its version in the first nibble) as the ESP datagram with `keys`'s
/// SPI and `sequence`, independently of the encoder (as in the edge mode).
func sealDatagram(_ sealer: AEADContext, salt: [UInt8], spi: UInt32, esn: Bool, sequence: UInt64, inner: [UInt8]) -> [UInt8] {
    let padding = (4 - (inner.count + 2) % 4) % 4
    let next = inner.first.map { $0 >> 4 == 6 } == true ? ESPFormat.nextHeaderIPv6 : ESPFormat.nextHeaderIPv4
    let plaintext = inner + (0..<padding).map { UInt8($0 + 1) } + [UInt8(padding), next]
    let spiBytes = withUnsafeBytes(of: spi.bigEndian) { Array($0) }
    let low = withUnsafeBytes(of: UInt32(truncatingIfNeeded: sequence).bigEndian) { Array($0) }
    let high = withUnsafeBytes(of: UInt32(truncatingIfNeeded: sequence >> 32).bigEndian) { Array($0) }
    let iv = withUnsafeBytes(of: sequence.bigEndian) { Array($0) }
    guard let sealed = sealer.seal(nonce: salt + iv, aad: spiBytes + (esn ? high : []) + low, plaintext) else {
        oracleFailure("libcrypto refused to seal")
    }
    return spiBytes + low + iv + sealed
}

/// The hub's SAs: each with its peer; 1 and 2 behind NATs (their peers may move), 3 with an IPv6 peer.
struct HubSA {
    let algorithm: ESPAlgorithm
    let keys: ESPSAKeys
    let key: [UInt8], salt: [UInt8]
    let esn: Bool
    let mayMove: Bool
    let sealer: AEADContext

    init(_ index: Int, _ algorithm: ESPAlgorithm, esn: Bool, mayMove: Bool) {
        self.algorithm = algorithm
        key = (0..<algorithm.keyLength).map { UInt8(truncatingIfNeeded: 0x11 &* index &+ $0) }
        salt = [UInt8(index), 7, 7, 7]
        keys = ESPSAKeys(spi: 0x5000 + UInt32(index), key: key, salt: salt)
        self.esn = esn
        self.mayMove = mayMove
        sealer = try! AEADContext(algorithm, key: keys.key, sealing: true)
    }

    func tunnel(peer: UDPEndpoint?, index: Int) -> ESPTunnelConfiguration {
        // Site i's inner addresses are 10.i.0.0/16; SA 2 takes UDP to ports 1000-1999 only (a
        // selector with ports: other inner packets are refused as `policy`, after the window moved).
        let remote = index == 2 ? [TrafficSelector("10.2.0.0/16[udp/1000-1999]")!] : [TrafficSelector("10.\(index).0.0/16")!, TrafficSelector("fd0\(index)::/32")!]
        var t = ESPTunnelConfiguration(name: "peer\(index)", algorithm: algorithm, extendedSequenceNumbers: esn, replayWindow: 64,
                                       localSelectors: [TrafficSelector("10.0.0.0/16")!, TrafficSelector("fd00::/32")!],
                                       remoteSelectors: remote, outbound: keys, inbound: keys)
        t.peer = peer
        t.peerMayMove = mayMove
        return t
    }
}

let hubSAs = [HubSA(0, .aesGCM128, esn: true, mayMove: false), HubSA(1, .chacha20Poly1305, esn: false, mayMove: true),
              HubSA(2, .aesGCM256, esn: true, mayMove: true), HubSA(3, .aesGCM128, esn: false, mayMove: true)]
let hubSenders: [UDPEndpoint] = [
    UDPEndpoint(IPAddress("192.0.2.10")!, 4500), UDPEndpoint(IPAddress("198.51.100.7")!, 4500),
    UDPEndpoint(IPAddress("198.51.100.7")!, 61_000), UDPEndpoint(IPAddress("2001:db8::3")!, 4500),
    UDPEndpoint(IPAddress("203.0.113.9")!, 4500), UDPEndpoint(IPAddress("2001:db8::3")!, 4501),
]

/// The hub's decoder (see the top of the file).
func fuzzHub(_ input: inout FuzzInput, setup: UInt8) {
    // The peers: from the senders above (SA 0 is not behind a NAT; SA 3's peer is IPv6).
    var peers: [UDPEndpoint?] = [hubSenders[0], hubSenders[1], setup & 1 == 0 ? hubSenders[2] : nil, hubSenders[3]]
    func tunnels() -> [ESPTunnelConfiguration] { hubSAs.indices.map { hubSAs[$0].tunnel(peer: peers[$0], index: $0) } }
    let policy = try! ESPSecurityPolicy(tunnels: tunnels(), store: nil)
    if !policy.servesManyPeers { oracleFailure("a policy whose tunnels name peers does not serve many peers") }
    var decoder = try! ESPCodec(policy: policy).makeDecoder()
    var accepted = hubSAs.map { _ in Set<UInt64>() }
    var tops = hubSAs.map { _ in UInt64(0) }
    var steps = 0
    while !input.isEmpty && steps < 48 {
        steps += 1
        let op = input.byte()
        if op & 0xF0 == 0xF0 {
            // The control plane moves a peer (or forgets it): the SA set is replaced, windows kept.
            let i = Int(op & 3)
            let choice = Int(input.byte())
            peers[i] = choice == 0xFF ? nil : hubSenders[choice % hubSenders.count]
            try! policy.replace(tunnels())
            _ = policy.takePeerMoves()
            continue
        }
        let i = Int(op & 3)
        let sa = hubSAs[i]
        let senderChoice = input.byte()
        let source: UDPEndpoint? = senderChoice == 0xFF ? nil
            : senderChoice & 0x80 != 0 ? UDPEndpoint(IPAddress("198.51.100.\(senderChoice & 7)")!, input.u16())
            : hubSenders[Int(senderChoice) % hubSenders.count]
        var datagram: [UInt8]
        var sequence: UInt64 = 0
        var authentic = false
        if op & 0x40 != 0 {
            // The input's bytes, with a known SPI half the time: never authentic.
            datagram = input.take(Int(input.byte()))
            if datagram.count >= 8 && op & 0x20 != 0 {
                datagram.replaceSubrange(0..<4, with: withUnsafeBytes(of: sa.keys.spi.bigEndian) { Array($0) })
            }
        } else {
            // A datagram sealed for SA i, its sequence number near the top of its window.
            let delta = Int64(Int8(bitPattern: input.byte()))
            let candidate = Int64(tops[i]) + delta
            sequence = UInt64(max(1, candidate))
            if !sa.esn && sequence > UInt64(UInt32.max) { continue }
            // An inner UDP (or other) packet from the SA's site to the hub's, its ports from the input.
            let proto: UInt8 = op & 0x20 != 0 ? 17 : 6
            let site = UInt8(i)
            var inner: [UInt8] = [0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0, 10, site, input.byte(), 1, 10, 0, 0, 1]
            inner += withUnsafeBytes(of: input.u16().bigEndian) { Array($0) } + withUnsafeBytes(of: input.u16().bigEndian) { Array($0) }
            inner += [0, 8, 0, 0] + input.take(Int(op & 0x0F))
            inner[2] = UInt8(inner.count >> 8)
            inner[3] = UInt8(truncatingIfNeeded: inner.count)
            datagram = sealDatagram(sa.sealer, salt: sa.salt, spi: sa.keys.spi, esn: sa.esn, sequence: sequence, inner: inner)
            authentic = true
            if op & 0x10 != 0 {
                // A damaged copy: never authentic.
                let at = Int(input.byte()) % datagram.count
                datagram[at] ^= 0x01
                authentic = false
            }
        }
        let locationBefore = policy.generation.locations[i].endpoint
        let topBefore = decoder.window(spi: sa.keys.spi)?.top ?? 0
        if topBefore != tops[i] { oracleFailure("SA \(i)'s window top \(topBefore), the model's \(tops[i])") }
        let verdict = datagram.withUnsafeMutableBytes { decoder.decode($0, from: source) }
        let topAfter = decoder.window(spi: sa.keys.spi)?.top ?? 0
        let locationAfter = policy.generation.locations[i].endpoint
        let moves = policy.takePeerMoves()
        let tookIt: Bool
        switch verdict {
        case .packet, .drop(.policy): tookIt = true
        default: tookIt = false
        }
        guard authentic else {
            if tookIt { oracleFailure("SA \(i): an unauthentic datagram accepted: \(verdict)") }
            if topAfter != topBefore { oracleFailure("SA \(i): an unauthentic datagram moved the window \(topBefore) -> \(topAfter)") }
            if locationAfter != locationBefore || !moves.isEmpty { oracleFailure("SA \(i): an unauthentic datagram moved the peer to \(String(describing: locationAfter))") }
            continue
        }
        let fresh = !accepted[i].contains(sequence) && (sequence > tops[i] || tops[i] - sequence < 64)
        let fromPeer = source == nil || locationBefore == nil || source == locationBefore
        let mayMoveHere = sa.mayMove && sequence > tops[i]
        if tookIt {
            if accepted[i].contains(sequence) { oracleFailure("SA \(i): sequence \(sequence) accepted twice") }
            if !fromPeer && !mayMoveHere {
                oracleFailure("SA \(i): accepted from \(String(describing: source)), its peer \(String(describing: locationBefore)) (may move: \(sa.mayMove), sequence \(sequence), top \(tops[i]))")
            }
            accepted[i].insert(sequence)
            tops[i] = max(tops[i], sequence)
            if fromPeer {
                if locationAfter != locationBefore || !moves.isEmpty { oracleFailure("SA \(i): a datagram from its peer moved it: \(moves)") }
            } else {
                if locationAfter != source { oracleFailure("SA \(i): moved, but its location is \(String(describing: locationAfter)), not \(String(describing: source))") }
                if moves.count != 1 || moves[0].inboundSPI != sa.keys.spi || moves[0].endpoint != source { oracleFailure("SA \(i): the moves reported: \(moves)") }
            }
        } else {
            if fresh && (fromPeer || mayMoveHere) { oracleFailure("SA \(i): a fresh authentic datagram \(sequence) (top \(tops[i])) from \(String(describing: source)) refused: \(verdict)") }
            if fresh && !fromPeer && verdict != .drop(.wrongPeer) { oracleFailure("SA \(i): from elsewhere, refused as \(verdict), not wrong_peer") }
            if locationAfter != locationBefore || !moves.isEmpty { oracleFailure("SA \(i): a refused datagram (\(verdict)) moved the peer") }
        }
        if topAfter != tops[i] { oracleFailure("SA \(i): the window's top \(topAfter), the highest accepted \(tops[i]) (\(verdict))") }
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
    if setup & 0x20 != 0 {
        fuzzHub(&input, setup: setup)
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
