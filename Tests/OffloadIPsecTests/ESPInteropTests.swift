import Foundation
import OffloadCapture
import OffloadEngine
import OffloadTestSupport
import OffloadTunnel
import OffloadWire
import Testing

@testable import OffloadIPsec

/// Whether python3 with scapy and cryptography is here (CI installs them).
let scapyAvailable = shell("python3 -c 'import scapy.layers.ipsec, cryptography'").status == 0
let tsharkAvailable = shell("command -v tshark").status == 0
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// A scratch directory with an SA file (mode 0600) for one tunnel; removed by `cleanup`.
struct ESPScratch {
    let dir: String
    let outKey: String, inKey: String
    let algorithm: ESPAlgorithm
    let esn: Bool

    init(_ algorithm: ESPAlgorithm, esn: Bool) throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("esp-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        self.algorithm = algorithm
        self.esn = esn
        let n = algorithm.keyLength + 4
        outKey = (0..<n).map { String(format: "%02x", ($0 * 7 + 3) & 0xFF) }.joined()
        inKey = (0..<n).map { String(format: "%02x", ($0 * 13 + 5) & 0xFF) }.joined()
        let keys = { (hex: String, spi: UInt32) in
            ESPSAKeys(spi: spi, key: Array(hexBytes(hex).dropLast(4)), salt: Array(hexBytes(hex).suffix(4)))
        }
        let any = [TrafficSelector("0.0.0.0/0")!, TrafficSelector("::/0")!]
        let tunnel = ESPTunnelConfiguration(name: "t", algorithm: algorithm, extendedSequenceNumbers: esn, localSelectors: any,
                                            remoteSelectors: any, outbound: keys(outKey, 0x1001), inbound: keys(inKey, 0x2001))
        try SAFile.write(SAFile.render([tunnel]), to: "\(dir)/sa.conf")
    }

    /// Writes the inner traffic to `inner.pcapng` (super-packets with their GSO facts).
    func writeInner(_ records: [([UInt8], GSOInfo?)]) throws {
        var writer = try CaptureWriter(path: "\(dir)/inner.pcapng", format: .pcapng, interfaces: [CaptureInterface(linkType: .raw)])
        for (n, (bytes, gso)) in records.enumerated() {
            try writer.writePacket(bytes, timestamp: UInt64(n), options: gso.map { [.gso($0)] } ?? [])
        }
        try writer.flush()
    }

    func cleanup() { try? FileManager.default.removeItem(atPath: dir) }
}

/// Inner packets of both families, TCP and UDP, and a super-packet with its GSO facts; the
/// wire segments they stand for.
func innerTraffic() throws -> (records: [([UInt8], GSOInfo?)], segments: [[UInt8]]) {
    var records: [([UInt8], GSOInfo?)] = []
    var segments: [[UInt8]] = []
    for i in 0..<24 {
        var b = PacketBuilder()
        b.link = .raw
        b.ipv6 = i % 2 == 1
        b.udp = i % 3 == 0
        b.sequence = 1 + UInt32(i * 1000)
        b.payloadLength = [0, 1, 2, 3, 100, 1200][i % 6]
        records.append((b.frame(), nil))
        segments.append(b.frame())
    }
    for ipv6 in [false, true] {
        let (bytes, gso) = superPacket(count: 12, size: 1300, last: 77, ipv6: ipv6)
        records.append((bytes, gso))
        var segmenter = GSOSegmenter()
        try bytes.withUnsafeBytes { try segmenter.segment($0, linkType: .raw, gso: gso, checksum: .complete) }
        segments += (0..<segmenter.segmentCount).map { segmenter.segmentBytes(at: $0) }
    }
    return (records, segments)
}

@Suite("ESP against an independent implementation (scapy) and Wireshark's dissector, both ways", .serialized)
struct ESPInteropTests {
    static let cases: [(ESPAlgorithm, Bool, Bool)] = [
        (.aesGCM128, true, false), (.aesGCM128, false, true), (.aesGCM256, true, false), (.chacha20Poly1305, true, true),
        (.chacha20Poly1305, false, false),
    ]

    @Test("offload ipsec encrypts a capture, scapy decrypts every datagram to the very segment; scapy encrypts, offload ipsec decrypts",
          .enabled(if: scapyAvailable, "needs python3 with scapy and cryptography (pip install scapy cryptography)"),
          arguments: cases)
    func scapyBothWays(algorithm: ESPAlgorithm, esn: Bool, outerIPv6: Bool) throws {
        let offload = try #require(builtExecutable(named: "offload"))
        let s = try ESPScratch(algorithm, esn: esn)
        defer { s.cleanup() }
        let (records, segments) = try innerTraffic()
        try s.writeInner(records)
        let (local, remote) = outerIPv6 ? ("2001:db8::1", "2001:db8::2") : ("192.0.2.1", "192.0.2.2")
        let encrypt = shell("\(offload) ipsec --sa \(s.dir)/sa.conf --state \(s.dir)/marks --local \(local) --remote \(remote) \(s.dir)/inner.pcapng \(s.dir)/esp.pcap")
        #expect(encrypt.status == 0, "\(encrypt.output)")
        let script = "\(repositoryRoot)/scripts/esp-scapy.py"
        let decrypted = shell("python3 \(script) decrypt \(s.dir)/esp.pcap \(algorithm.rawValue) \(s.outKey) 0x1001 \(esn ? 1 : 0)")
        let lines = decrypted.output.split(separator: "\n").map(String.init)
        #expect(decrypted.status == 0 && lines.count == segments.count, "\(decrypted.output.prefix(500))")
        // The gateway's pipeline forwards: one hop (TTL) less; flows may interleave differently.
        #expect(byFlow(lines.map { hex($0) }) == byFlow(segments.map { aged($0, hops: 1) }), "scapy's plaintext is the segments")

        // The other way: scapy encrypts the segments with the inbound SA, offload ipsec decrypts them.
        try segments.map { $0.map { String(format: "%02x", $0) }.joined() }.joined(separator: "\n")
            .write(toFile: "\(s.dir)/segments.hex", atomically: true, encoding: .utf8)
        let encrypted = shell("python3 \(script) encrypt \(s.dir)/segments.hex \(s.dir)/scapy.pcap \(algorithm.rawValue) \(s.inKey) "
            + "0x2001 \(esn ? 1 : 0) \(remote) \(local)")
        #expect(encrypted.status == 0, "\(encrypted.output)")
        let back = shell("\(offload) ipsec --sa \(s.dir)/sa.conf --decrypt --json \(s.dir)/scapy.pcap \(s.dir)/back.pcap")
        #expect(back.status == 0, "\(back.output)")
        var reader = try CaptureReader(path: "\(s.dir)/back.pcap")
        var got: [[UInt8]] = []
        while let r = try reader.next() { got.append(r.bytes) }
        #expect(byFlow(got) == byFlow(segments.map { aged($0, hops: 1) }), "\(got.count) of \(segments.count) packets back; \(back.output)")
        // Decrypting again: the window is new per run, so the same datagrams decrypt again; but
        // twice in one capture they are replays.
        shell("python3 -c \"from scapy.all import rdpcap, wrpcap; p = rdpcap('\(s.dir)/scapy.pcap'); wrpcap('\(s.dir)/twice.pcap', p + p)\"")
        let twice = shell("\(offload) ipsec --sa \(s.dir)/sa.conf --decrypt \(s.dir)/twice.pcap \(s.dir)/twice-out.pcap")
        #expect(twice.output.contains("\(segments.count) replay"), "\(twice.output)")
    }

    @Test("tshark decrypts what offload ipsec sends with the --write-keys lines (AES-GCM; Wireshark 4.0 has no ChaCha20)",
          .enabled(if: tsharkAvailable, "needs tshark"), arguments: [ESPAlgorithm.aesGCM128, .aesGCM256])
    func tsharkDecrypts(algorithm: ESPAlgorithm) throws {
        let offload = try #require(builtExecutable(named: "offload"))
        let s = try ESPScratch(algorithm, esn: false)
        defer { s.cleanup() }
        let (records, segments) = try innerTraffic()
        try s.writeInner(records)
        let run = shell("\(offload) ipsec --sa \(s.dir)/sa.conf --state \(s.dir)/marks --local 192.0.2.1 --remote 192.0.2.2 --write-keys \(s.dir)/keys "
            + "\(s.dir)/inner.pcapng \(s.dir)/esp.pcap")
        #expect(run.status == 0, "\(run.output)")
        let keys = try String(contentsOfFile: "\(s.dir)/keys", encoding: .utf8).split(separator: "\n")
        #expect(keys.count == 2 && keys[0].contains("\"0x00001001\"") && keys[0].contains(s.outKey))
        let mode = try FileManager.default.attributesOfItem(atPath: "\(s.dir)/keys")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let options = keys.map { "-o 'uat:esp_sa:\($0)'" }.joined(separator: " ")
        let out = shell("tshark -r \(s.dir)/esp.pcap -o esp.enable_encryption_decode:TRUE \(options) -T fields -e tcp.srcport -e udp.srcport "
            + "-e ip.src -e ipv6.src 2>/dev/null")
        let rows = out.output.split(separator: "\n")
        #expect(rows.count == segments.count)
        // Each row shows the inner transport: tshark decrypted it (an undecrypted ESP packet has no TCP or UDP inside).
        let inner = rows.filter { row in row.split(separator: "\t", omittingEmptySubsequences: false).prefix(2).contains { !$0.isEmpty && $0 != "4500" } }
        #expect(inner.count == segments.count, "\(out.output.prefix(400))")
    }
}
