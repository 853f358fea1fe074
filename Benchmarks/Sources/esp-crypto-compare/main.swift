// ESP encryption per datagram, the gateway's way against the alternatives, in one run:
//   gateway        the ESP codec through TunnelEncapsulator: a 44-segment TCP super-packet becomes
//                  44 encrypted datagrams in the arena (libcrypto, in place, nothing allocated)
//   libcrypto      AEADContext.seal alone on 1400-byte plaintexts (OpenSSL's EVP, in place)
//   swift-crypto   AES.GCM.seal / ChaChaPoly.seal on the same plaintexts (allocating SealedBox,
//                  copied into the datagram, as a gateway using it would)
// Prints ns per datagram, GB/s and cycles per byte (at the clock /proc/cpuinfo reports), and how
// much of one core swift-crypto's extra cost would take at a given goodput (argument 1, Gbit/s).
import Crypto
import Foundation
import OffloadEngine
import OffloadIPsec
import OffloadTunnel
import OffloadWire

let goodput = Double(CommandLine.arguments.dropFirst().first ?? "") ?? 2.5
let size = 1400, rounds = 40_000
let mhz: Double = {
    let text = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
    let line = text.split(separator: "\n").first { $0.hasPrefix("cpu MHz") }
    return line.flatMap { Double($0.split(separator: ":").last!.trimmingCharacters(in: .whitespaces)) } ?? 0
}()

func time(_ label: String, bytesPerRound: Int, datagramsPerRound: Int, _ body: () -> Void) -> Double {
    for _ in 0..<2000 { body() }  // warm up
    let start = ContinuousClock.now
    for _ in 0..<rounds { body() }
    let elapsed = ContinuousClock.now - start
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let ns = seconds * 1e9 / Double(rounds * datagramsPerRound)
    let gbs = Double(rounds * bytesPerRound) / seconds / 1e9
    let cpb = mhz > 0 ? seconds * mhz * 1e6 / Double(rounds * bytesPerRound) : .nan
    print("\(label.padding(toLength: 44, withPad: " ", startingAt: 0)) \(String(format: "%8.1f", ns)) ns/datagram "
        + "\(String(format: "%6.2f", gbs)) GB/s \(String(format: "%5.2f", cpb)) cycles/byte")
    return ns
}

print("ESP encryption of \(size)-byte datagrams, \(rounds) rounds each, CPU clock \(mhz) MHz (one run)")
var results: [String: Double] = [:]
for algorithm in [ESPAlgorithm.aesGCM128, .chacha20Poly1305] {
    let keyBytes = (0..<algorithm.keyLength).map { UInt8($0) }
    let sa = ESPSAKeys(spi: 0x1001, key: keyBytes, salt: [1, 2, 3, 4])
    let any = [TrafficSelector("0.0.0.0/0")!, TrafficSelector("::/0")!]
    let policy = try! ESPSecurityPolicy(tunnels: [ESPTunnelConfiguration(name: "b", algorithm: algorithm, localSelectors: any,
                                                                         remoteSelectors: any, outbound: sa, inbound: sa)],
                                        store: nil)

    // The gateway's path: a super-packet of 44 segments of 1348 bytes (1400-byte segments).
    var engine = GROEngine()
    var batch = PacketBatch(packetCapacity: 44, byteCapacity: 1 << 20)
    for i in 0..<44 {
        var b = PacketBuilder()
        b.link = .raw
        b.sequence = 1 + UInt32(i * 1348)
        b.ipID = UInt16(i)
        b.payloadLength = 1348
        batch.append(b.frame(), metadata: PacketMetadata(linkType: .raw, checksum: .verified))
    }
    engine.coalesce(batch)
    let superPacket = engine.outputBytes(at: 0)
    let gso = engine.output(at: 0).metadata.gso!
    var encapsulator = try! TunnelEncapsulator(codec: ESPCodec(policy: policy))
    let gateway = superPacket.withUnsafeBytes { raw in
        time("\(algorithm) gateway (segment + encrypt, libcrypto)", bytesPerRound: 44 * size, datagramsPerRound: 44) {
            _ = try! encapsulator.prepare(raw, gso: gso)
        }
    }

    // The AEAD alone, libcrypto, into a slot.
    let plaintext = (0..<size).map { UInt8(truncatingIfNeeded: $0) }
    var slot = [UInt8](repeating: 0, count: size + 64)
    let sealer = try! AEADContext(algorithm, key: keyBytes, sealing: true)
    var nonce = [UInt8](repeating: 7, count: 12)
    let aad = [UInt8](repeating: 1, count: 8)
    var counter: UInt64 = 0
    let libcrypto = plaintext.withUnsafeBytes { p in
        aad.withUnsafeBytes { a in
            slot.withUnsafeMutableBytes { s in
                time("\(algorithm) libcrypto seal, in place", bytesPerRound: size, datagramsPerRound: 1) {
                    counter &+= 1
                    nonce.withUnsafeMutableBytes { n in
                        n.storeBytes(of: counter, toByteOffset: 4, as: UInt64.self)
                        _ = sealer.seal(nonce: n.baseAddress!, aad: a, pieces: (p, UnsafeRawBufferPointer(start: nil, count: 0)),
                                        trailer: UnsafeRawBufferPointer(start: nil, count: 0), out: s.baseAddress! + 16,
                                        tag: s.baseAddress! + 16 + size)
                    }
                }
            }
        }
    }

    // swift-crypto: the allocating API, the result copied into the datagram.
    let key = SymmetricKey(data: keyBytes)
    let plain = Data(plaintext)
    let aadData = Data(aad)
    let swiftCrypto = time("\(algorithm) swift-crypto seal + copy", bytesPerRound: size, datagramsPerRound: 1) {
        counter &+= 1
        var n = Data(repeating: 7, count: 12)
        n.withUnsafeMutableBytes { $0.storeBytes(of: counter, toByteOffset: 4, as: UInt64.self) }
        if algorithm == .chacha20Poly1305 {
            let box = try! ChaChaPoly.seal(plain, using: key, nonce: ChaChaPoly.Nonce(data: n), authenticating: aadData)
            slot.withUnsafeMutableBytes { s in
                box.ciphertext.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: s[16..<(16 + size)]))
                box.tag.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: s[(16 + size)...]))
            }
        } else {
            let box = try! AES.GCM.seal(plain, using: key, nonce: AES.GCM.Nonce(data: n), authenticating: aadData)
            slot.withUnsafeMutableBytes { s in
                box.ciphertext.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: s[16..<(16 + size)]))
                box.tag.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: s[(16 + size)...]))
            }
        }
    }
    let extra = swiftCrypto - libcrypto
    let datagramsPerSecond = goodput * 1e9 / 8 / Double(size)
    print("  \(algorithm): swift-crypto costs \(String(format: "%.1f", extra)) ns more per datagram (\(String(format: "%.2f", swiftCrypto / libcrypto))x); "
        + "at \(goodput) Gbit/s (\(Int(datagramsPerSecond)) datagrams/s) that is \(String(format: "%.1f", extra * datagramsPerSecond / 1e7))% of one core")
    results["\(algorithm)"] = gateway
}
