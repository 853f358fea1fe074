import Foundation
import OffloadForwarder
import OffloadTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `offload` built for release with AddressSanitizer (`.build-asan` in the project), once per test
/// run, or nil with the reason. Release, because the optimizer is what turned safe Swift into a write
/// into freed memory (an array freed before its bytes were copied in); a debug build never shows it.
let asanOffload: Result<String, TunnelLabError> = {
    let root = projectRoot.path
    let scratch = "\(root)/.build-asan"
    let (status, output) = shell(
        "cd \(root) && swift build -c release --scratch-path \(scratch) -Xswiftc -sanitize=address --product offload 2>&1 | tail -20",
        timeout: 1500)
    let binary = "\(scratch)/release/offload"
    guard status == 0, FileManager.default.isExecutableFile(atPath: binary) else {
        return .failure(TunnelLabError("the AddressSanitizer build of offload failed: \(output)"))
    }
    return .success(binary)
}()

/// ASan's settings for the gateway: stop at the first error; leaks are not what these tests look for.
let asanEnvironment = "ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0"

@Suite("Hostile input to the live gateway, built with AddressSanitizer", .serialized)
struct HostileInputGatewayTests {
    /// Inputs that once went wrong, then a deterministic spray of mutations of them and of short
    /// garbage: IKE on port 500, IKE behind the non-ESP marker and ESP on 4500, all from the
    /// configured peer's address (the only address the responder answers), before any authentication.
    static let sprayScript = #"""
        import random, socket, sys, time
        seeds = [bytes.fromhex(h) for h in sys.argv[1].split(",")]
        rng = random.Random(20261207)
        s500 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s500.bind(("192.168.88.1", 500))
        s4500 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s4500.bind(("192.168.88.1", 4500))
        gw = "192.168.88.2"
        def send(sock, port, data):
            sock.sendto(data, (gw, port)); time.sleep(0.002)
        for seed in seeds:
            send(s500, 500, seed)
            send(s4500, 4500, b"\0\0\0\0" + seed)
        for i in range(1500):
            base = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 8)):
                op = rng.randint(0, 3)
                if op == 0 and base: base[rng.randrange(len(base))] = rng.randrange(256)
                elif op == 1: base.insert(rng.randrange(len(base) + 1), rng.randrange(256))
                elif op == 2 and len(base) > 28: del base[rng.randrange(28, len(base))]
                else: base = base[:rng.randrange(len(base) + 1)]
            kind = i % 3
            if kind == 0: send(s500, 500, bytes(base))
            elif kind == 1: send(s4500, 4500, b"\0\0\0\0" + bytes(base))
            else: send(s4500, 4500, bytes(base))  # read as ESP: an SPI and garbage
        print("sent")
        """#

    @Test("an ASan release build of offload ipsec --config, as a responder, survives the IKE_SA_INIT that wrote into freed memory and 1,500 mutations of it, then negotiates with a real initiator and carries traffic",
          .enabled(if: netnsReady && installed("python3"), "\(netnsSkipReason)"))
    func hostileIKE() throws { try exclusiveNetwork { try hostileIKEBody() } }

    func hostileIKEBody() throws {
        let offload = try asanOffload.get()
        let lab = try TunnelLab()
        try lab.writeIKEConfig(1, start: "start")
        try lab.writeIKEConfig(2, start: "none")
        try lab.startEndpoints(command: { _ in ["ipsec", "--config", "\(lab.dir)/ike2.conf"] }, device: "ipsec0", gateways: [2],
                               executable: offload, environment: asanEnvironment)
        // The 86-byte IKE_SA_INIT whose skipped transform attribute was copied into a freed array.
        let freedWrite = "433796d23796d2a00000000000000000212022080000000000000056210000325700002b0000000100000021a031d2"
            + "0001000000000000012000002e332e313043322a303130fffffffff6f600000000000896290024"
        let seeds = [freedWrite] + ((try? FileManager.default.contentsOfDirectory(atPath: "\(lab.root)/Fuzz/Corpus/FuzzIKE")) ?? [])
            .sorted().compactMap { name -> String? in
                guard let data = FileManager.default.contents(atPath: "\(lab.root)/Fuzz/Corpus/FuzzIKE/\(name)"), data.count > 29 else { return nil }
                return data.dropFirst().map { String(format: "%02x", $0) }.joined()  // byte 0 is the fuzzer's mode
            }
        FileManager.default.createFile(atPath: "\(lab.dir)/spray.py", contents: Data(Self.sprayScript.utf8))
        let spray = shell("ip netns exec \(lab.gateway(1)) python3 \(lab.dir)/spray.py \(seeds.joined(separator: ","))", timeout: 60)
        #expect(spray.status == 0 && spray.output.contains("sent"), "\(spray.output)")
        let alive = shell("pgrep -f '[s]tats-json \(lab.dir)/gw2.json'").status == 0
        #expect(alive, "the gateway survived the hostile datagrams: \(lab.gatewayLog(2).suffix(4000))")
        #expect(!lab.gatewayLog(2).contains("AddressSanitizer"), "\(lab.gatewayLog(2).suffix(6000))")
        // Still a working gateway: a real initiator (this project's debug build) comes up and traffic crosses.
        try lab.startIKE(1)
        #expect(lab.waitFor(seconds: 15) { lab.ikeStatus(1).contains("INSTALLED") }, "\(lab.gatewayLog(1).suffix(2000))\n\(lab.gatewayLog(2).suffix(2000))")
        let ping = shell("ip netns exec \(lab.client) ping -c 3 -i 0.2 -W 2 10.88.2.2")
        #expect(ping.status == 0, "\(ping.output)")
        _ = try? lab.stopGateway(1)
        let stats = try lab.stopGateway(2)
        #expect(stats["wan_to_lan"] != nil, "the ASan gateway stopped cleanly and wrote its counters")
        #expect(!lab.gatewayLog(2).contains("AddressSanitizer"), "\(lab.gatewayLog(2).suffix(6000))")
        withExtendedLifetime(lab) {}
    }
}
