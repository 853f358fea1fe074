import Foundation
import OffloadCapture
import OffloadTestSupport
import Testing

/// The built `offload` executable, next to the test bundle.
let offloadBinary = builtExecutable(named: "offload")

/// Runs a program; returns its exit status, standard output and standard error.
func run(_ executable: String, _ arguments: [String]) throws -> (Int32, String, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

func which(_ tool: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(dir)/\(tool)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

@Suite("the offload command")
struct CommandLineTests {
    @Test("help on every command, exit codes 0 / 1 / 2, clear errors", .enabled(if: offloadBuilt, "the offload executable was not built"))
    func exitCodes() throws {
        let offload = try #require(offloadBinary)
        for command in [[], ["coalesce"], ["segment"], ["stats"], ["demo"]] {
            let (status, out, _) = try run(offload, command + ["--help"])
            #expect(status == 0 && out.contains("USAGE"), "\(command)")
        }
        #expect(try run(offload, ["coalesce", "--help"]).1.contains("Examples"))
        let (missing, _, missingError) = try run(offload, ["coalesce"])
        #expect(missing == 2 && missingError.contains("Missing expected argument"))
        #expect(try run(offload, ["coalesce", "--batch", "0", "a", "b"]).0 == 2)
        #expect(try run(offload, ["coalesce", "--flush-timeout", "soon", "a", "b"]).0 == 2)
        let (absent, _, absentError) = try run(offload, ["stats", "/nonexistent/x.pcap"])
        #expect(absent == 1 && absentError.contains("no such readable file"))
        let corrupt = temporaryPath("corrupt.pcap")
        _ = FileManager.default.createFile(atPath: corrupt, contents: Data([0xD4, 0xC3, 0xB2, 0xA1, 2, 0, 4, 0, 0, 0]))
        let (bad, _, badError) = try run(offload, ["coalesce", corrupt, temporaryPath("out.pcapng")])
        #expect(bad == 1 && badError.contains("file header at byte 0"))
    }

    @Test("live options that do something only with --setup are refused without it; a missing --local or --remote is named; --metrics takes [IPv6]:PORT",
          .enabled(if: offloadBuilt, "the offload executable was not built"))
    func liveUsageErrors() throws {
        let offload = try #require(offloadBinary)
        // Validation happens before anything is opened: no device is created, no root needed. In
        // case it did not (a regression), root runs them in a network namespace of their own, and
        // each stops within a second.
        let unshare = getuid() == 0 ? which("unshare") : nil
        func run(_ offload: String, _ arguments: [String]) throws -> (Int32, String, String) {
            let bounded = arguments.contains("--duration") ? arguments : arguments + ["--duration", "1"]
            return try OffloadCaptureTests.run(unshare ?? offload, (unshare != nil ? ["--net", offload] : []) + bounded)
        }
        let withoutSetup: [([String], String)] = [
            (["tunnel", "--device", "t0", "--local", "192.0.2.1", "--remote", "192.0.2.2", "--id", "7", "--route", "10.2.0.0/16"], "--route"),
            (["tunnel", "--device", "t0", "--local", "192.0.2.1", "--remote", "192.0.2.2", "--id", "7", "--address", "10.9.0.1/30"], "--address"),
            (["siit", "--ingress", "a", "--egress", "b", "--pool6", "64:ff9b::/96", "--route4", "198.18.0.0/24"], "--route4"),
            (["siit", "--ingress", "a", "--egress", "b", "--pool6", "64:ff9b::/96", "--route6", "2001:db8::/64"], "--route6"),
            (["forward", "--ingress", "a", "--egress", "b", "--lan", "eth0", "--wan", "eth1"], "--lan, --wan"),
            (["ipsec", "--sa", "/nonexistent.conf", "--device", "i0", "--local", "192.0.2.1", "--remote", "192.0.2.2", "--route", "10.2.0.0/16"], "--route"),
        ]
        for (arguments, named) in withoutSetup {
            let (status, _, err) = try run(offload, arguments)
            #expect(status == 2 && err.contains("\(named): only with --setup"), "\(arguments): exit \(status), \(err)")
        }
        let (noRemote, _, noRemoteError) = try run(offload, ["tunnel", "--device", "t0", "--local", "192.0.2.1", "--id", "7"])
        #expect(noRemote == 2 && noRemoteError.contains("missing --remote") && !noRemoteError.contains("--local ("), "\(noRemoteError)")
        let (noLocal, _, noLocalError) = try run(offload, ["ipsec", "--sa", "/nonexistent.conf", "--device", "i0", "--remote", "192.0.2.2"])
        #expect(noLocal == 2 && noLocalError.contains("missing --local"), "\(noLocalError)")
        let (badRemote, _, badRemoteError) = try run(offload, ["tunnel", "--device", "t0", "--local", "192.0.2.1", "--remote", "far", "--id", "7"])
        #expect(badRemote == 2 && badRemoteError.contains("--remote far: not an IP address"), "\(badRemoteError)")
        // --metrics: a bracketed IPv6 address passes (the next check, --duration, is the one that fails).
        for endpoint in ["[::1]:9105", "[::]:9105", "0.0.0.0:9105", "127.0.0.1:9105"] {
            let (status, _, err) = try run(offload, ["forward", "--ingress", "a", "--egress", "b", "--metrics", endpoint, "--duration", "0"])
            #expect(status == 2 && !err.contains("--metrics") && err.contains("--duration"), "\(endpoint): \(err)")
        }
        for endpoint in ["::1:9105", "[127.0.0.1]:9105", "[::1]", "localhost:9105"] {
            let (status, _, err) = try run(offload, ["forward", "--ingress", "a", "--egress", "b", "--metrics", endpoint])
            #expect(status == 2 && err.contains("--metrics"), "\(endpoint): \(err)")
        }
    }

    @Test("ipsec --status: a status whose gateway is gone says so (pid, time) and exits 1; a current one prints and exits 0",
          .enabled(if: offloadBuilt, "the offload executable was not built"))
    func ipsecStatusFreshness() throws {
        let offload = try #require(offloadBinary)
        let dir = temporaryPath("status")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let counters = #"{"childRekeys":0,"ikeRekeys":0,"retransmissions":0,"invalidMessages":0,"cookiesSent":0,"collisions":0}"#
        func status(pid: Int32, written: Double) throws -> (Int32, String, String) {
            let path = "\(dir)/gw.conf.status"
            try #"{"sas":[],"counters":\#(counters),"pid":\#(pid),"written":\#(written)}"#
                .write(toFile: path, atomically: true, encoding: .utf8)
            return try run(offload, ["ipsec", "--config", "\(dir)/gw.conf", "--status-file", path, "--status"])
        }
        // A process that has ended: its pid is free.
        let ended = Process()
        ended.executableURL = URL(fileURLWithPath: "/bin/true")
        try ended.run()
        ended.waitUntilExit()
        let written = Date().timeIntervalSince1970 - 300
        let (gone, goneOut, goneError) = try status(pid: ended.processIdentifier, written: written)
        #expect(gone == 1 && goneError.contains("the gateway (pid \(ended.processIdentifier)) is not running"), "\(gone): \(goneError)")
        #expect(goneError.contains(ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: written))), "\(goneError)")
        #expect(goneOut.contains("no IKE SA"), "the last status is still shown: \(goneOut)")
        // Alive (this test process) but silent for five minutes.
        let (silent, _, silentError) = try status(pid: getpid(), written: written)
        #expect(silent == 1 && silentError.contains("has not written its status since"), "\(silentError)")
        // Alive and current.
        let (current, currentOut, currentError) = try status(pid: getpid(), written: Date().timeIntervalSince1970)
        #expect(current == 0 && currentOut.contains("no IKE SA") && currentError.isEmpty, "\(current): \(currentError)")
        // No status at all: where it looked.
        let (none, _, noneError) = try run(offload, ["ipsec", "--config", "\(dir)/other.conf", "--status"])
        #expect(none == 1 && noneError.contains("\(dir)/other.conf.status: no status"), "\(noneError)")
    }

    @Test("scripts/install.sh --binary: installs a built binary without building, every unit with the env file it reads (0600), and names the man page only when it installed one",
          .enabled(if: offloadBuilt, "the offload executable was not built"))
    func installBinary() throws {
        let offload = try #require(offloadBinary)
        let stage = temporaryPath("install-stage")
        try? FileManager.default.removeItem(atPath: stage)
        let (status, out, err) = try run("/usr/bin/env", ["DESTDIR=\(stage)", "PREFIX=/usr/local", "bash",
                                                          projectRoot.appendingPathComponent("scripts/install.sh").path, "--binary", offload])
        #expect(status == 0, "\(out)\n\(err)")
        #expect(!out.contains("building the release binary"), "it built although a binary was given: \(out)")
        #expect(FileManager.default.isExecutableFile(atPath: "\(stage)/usr/local/bin/offload"))
        let units = try FileManager.default.contentsOfDirectory(atPath: "\(stage)/etc/systemd/system").filter { $0.hasSuffix(".service") }
        let shipped = try FileManager.default.contentsOfDirectory(atPath: projectRoot.appendingPathComponent("contrib").path)
            .filter { $0.hasSuffix(".service") }
        #expect(units.sorted() == shipped.sorted() && units.contains("offload-nat64.service"), "\(units)")
        for unit in units {
            let text = try String(contentsOfFile: "\(stage)/etc/systemd/system/\(unit)", encoding: .utf8)
            for line in text.split(separator: "\n") where line.hasPrefix("EnvironmentFile=") {
                let env = "\(stage)\(line.dropFirst("EnvironmentFile=".count))"
                let mode = (try? FileManager.default.attributesOfItem(atPath: env)[.posixPermissions] as? Int) ?? nil
                #expect(mode == 0o600, "\(unit) reads \(env): \(mode.map { String($0, radix: 8) } ?? "missing")")
            }
        }
        let pages = (try? FileManager.default.contentsOfDirectory(atPath: "\(stage)/usr/local/share/man/man1")) ?? []
        #expect(out.contains("man offload") == !pages.isEmpty, "man pages \(pages); said: \(out)")
        let (missing, _, missingError) = try run("/usr/bin/env", ["DESTDIR=\(stage)", "bash",
                                                                  projectRoot.appendingPathComponent("scripts/install.sh").path,
                                                                  "--binary", "\(stage)/nonexistent"])
        #expect(missing != 0 && missingError.contains("not an executable file"), "\(missingError)")
        // No swift on the PATH and no --binary: the release binary already built, or a clear refusal.
        if !FileManager.default.isExecutableFile(atPath: "/usr/bin/swift") && !FileManager.default.isExecutableFile(atPath: "/bin/swift") {
            let (noSwift, noSwiftOut, noSwiftError) = try run("/usr/bin/env", ["PATH=/usr/bin:/bin", "DESTDIR=\(stage)", "bash",
                                                                               projectRoot.appendingPathComponent("scripts/install.sh").path])
            if FileManager.default.isExecutableFile(atPath: projectRoot.appendingPathComponent(".build/release/offload").path) {
                #expect(noSwift == 0 && noSwiftOut.contains("no swift here"), "\(noSwiftOut)\(noSwiftError)")
            } else {
                #expect(noSwift == 1 && noSwiftError.contains("give it with --binary PATH"), "\(noSwiftError)")
            }
        }
        try? FileManager.default.removeItem(atPath: stage)
    }

    @Test("demo, coalesce, segment and stats --json work end to end", .enabled(if: offloadBuilt, "the offload executable was not built"))
    func endToEnd() throws {
        let offload = try #require(offloadBinary)
        let dir = temporaryPath("demo")
        let (status, out, _) = try run(offload, ["demo", "--directory", dir])
        #expect(status == 0 && out.contains("segment(coalesce(x)) == x"), "\(out)")
        // The engine's train fast path took part of the merges (and the round trip above still held).
        let fastLine = out.split(separator: "\n").first { $0.contains("took the train fast path") }.map(String.init) ?? ""
        let fastMerges = Int(fastLine.split(separator: " ").first ?? "") ?? 0
        #expect(fastMerges > 100, "\(fastLine)")
        // The forwarding pipeline, offline: at the capture's own MTU the super-packets go out whole and
        // nothing is refused; behind a smaller MTU, DF-set packets are answered with ICMP, never lost silently.
        let forwardLines = out.split(separator: "\n").filter { $0.hasPrefix("forward (stage pipeline") }
        #expect(forwardLines.count == 2)
        #expect(forwardLines.first?.contains("egress MTU 1500): 1124 packets in, 515 written (130 super-packets") == true)
        #expect(forwardLines.first?.contains("0 too big") == true)
        #expect(forwardLines.last?.contains("egress MTU 1400") == true && forwardLines.last?.contains(" 0 too big") == false)
        // The translator and the tunnel on the merged capture: IPv4 to IPv6, super-packets included;
        // through GTP-U and back, exactly the restored packets.
        #expect(out.split(separator: "\n").contains { $0.hasPrefix("siit (") && !$0.contains("(0 of them super-packets") })
        #expect(out.contains("decapsulated 1124 packets") && out.contains("the very packets offload segment restored"))
        // The stateful NAT64: four IPv6-only hosts share one IPv4 address, the answers reach each
        // host, and each super-packet is looked up and translated once.
        #expect(out.contains("4 IPv6-only hosts opened TCP connections to an IPv4 server through 1 IPv4 address on 4 ports, "
            + "the server's answers reached each host at its own address and port, 4 sessions established; 4 GRO super-packets"),
                "\(out)")
        // IKEv2: the responder is a hub and gave a second peer, from another address, its own CHILD_SA.
        #expect(out.contains("gave a second peer its own CHILD_SA: 2 peers, at 192.0.2.1:4500 and 192.0.2.3:4500"), "\(out)")
        let input = dir + "/demo-input.pcap"
        let merged = temporaryPath("m.pcapng")
        #expect(try run(offload, ["coalesce", "--quiet", input, merged]).0 == 0)
        let restored = temporaryPath("r.pcap")
        let (segmentStatus, segmentOut, _) = try run(offload, ["segment", merged, restored])
        #expect(segmentStatus == 0 && segmentOut.contains("by recorded GSO facts"))
        #expect(try compareCapturesPerFlow(input, restored).identical)
        let (jsonStatus, json, _) = try run(offload, ["stats", "--json", input])
        #expect(jsonStatus == 0)
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        #expect(object?["packets"] as? Int == SyntheticTraffic.capture().count)
        #expect((object?["flows"] as? [Any])?.count == 12)
    }

    @Test("tshark reads every file the tool writes, with no new malformed packets or bad checksums",
          .enabled(if: installed("tshark"), "tshark is not installed (apt-get install -y tshark)"))
    func tsharkAgrees() throws {
        let tshark = try #require(which("tshark"))
        // Bad checksums anywhere, and malformed packets whose dissection stopped at a layer the tool
        // writes. (An application dissector such as HTTP may parse a merged payload differently;
        // that says nothing about the headers.)
        let ownLayers: Set<Substring> = ["eth", "ethertype", "vlan", "ip", "ipv6", "tcp", "udp", "sll", "null", "raw",
                                         "ipv6.hopopts", "ipv6.dstopts", "ipv6.routing", "ipv6.fraghdr", "icmp", "icmpv6"]
        func problems(_ file: String) throws -> Int {
            let (status, out, _) = try run(tshark, [
                "-r", file, "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
                "-Y", "_ws.malformed || tcp.checksum.status == 0 || ip.checksum.status == 0 || udp.checksum.status == 0",
                "-T", "fields", "-E", "separator=/t", "-e", "frame.protocols", "-e", "_ws.malformed",
                "-e", "tcp.checksum.status", "-e", "ip.checksum.status", "-e", "udp.checksum.status",
            ])
            #expect(status == 0, "tshark could not read \(file)")
            return out.split(separator: "\n").filter { line in
                let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
                let badChecksum = fields.dropFirst(2).contains { $0.split(separator: ",").contains("0") }
                let lastLayer = fields.first?.split(separator: ":").last ?? ""
                return badChecksum || ownLayers.contains(lastLayer)
            }.count
        }
        var inputs = [try syntheticCapture(), try syntheticCapture(.pcapng)]
        inputs += corpusFiles().filter { $0.contains("/bulk/") || $0.contains("/local/") || $0.contains("/vlan/") }
        for input in inputs {
            let before = try problems(input)
            for ext in ["pcapng", "pcap"] {
                let merged = temporaryPath("tshark.\(ext)")
                var options = CoalesceOptions()
                options.engine.udp = true
                _ = try coalesceCapture(input: input, output: merged, options: options)
                let after = try problems(merged)
                #expect(after <= before, "\(input) -> \(ext): \(after) problems, input had \(before)")
                let restored = temporaryPath("tshark-restored.\(ext)")
                _ = try segmentCapture(input: merged, output: restored)
                #expect(try problems(restored) <= before)
            }
        }
    }
}

@Suite("offload doctor and offload lab on the command line")
struct DiagnosticCommandTests {
    @Test("doctor: text and JSON on a generated capture, exit 1 with a clear message on missing or corrupt input",
          .enabled(if: offloadBuilt, "the offload executable was not built"))
    func doctor() throws {
        let offload = try #require(offloadBinary)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("doctor-cli-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try run(offload, ["generate", "--megabytes", "1", "\(dir)/g.pcap"]).0 == 0)
        let (status, text, _) = try run(offload, ["doctor", "\(dir)/g.pcap"])
        #expect(status == 0 && text.contains("offload doctor (swift-offload ") && text.contains("): 1 capture") && text.contains("1. ["), "\(text.prefix(400))")
        let (jsonStatus, json, _) = try run(offload, ["doctor", "--json", "\(dir)/g.pcap"])
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        #expect(jsonStatus == 0 && (object?["findings"] as? [Any])?.isEmpty == false)
        let (absent, _, absentError) = try run(offload, ["doctor", "/nonexistent/x.pcap"])
        #expect(absent == 1 && absentError.contains("no such readable file"))
        try Data("not a capture at all, just text".utf8).write(to: URL(fileURLWithPath: "\(dir)/bad.pcap"))
        let (corrupt, _, corruptError) = try run(offload, ["doctor", "\(dir)/bad.pcap"])
        #expect(corrupt == 1 && corruptError.contains("bad.pcap"), "\(corruptError)")
        #expect(try run(offload, ["doctor"]).0 == 2)
        #expect(try run(offload, ["doctor", "--help"]).1.contains("Examples"))
    }

    @Test("lab: help, and usage errors exit 2 before anything is built", .enabled(if: offloadBuilt, "the offload executable was not built"))
    func lab() throws {
        let offload = try #require(offloadBinary)
        #expect(try run(offload, ["lab", "--help"]).1.contains("kernel forwarding, GRO off"))
        #expect(try run(offload, ["lab", "--scenarios", "22"]).0 == 2)
        #expect(try run(offload, ["lab", "--scenario", "nat64", "--scenarios", "19"]).0 == 2)
        #expect(try run(offload, ["lab", "--scenario", "seed", "--scenarios", "15"]).0 == 2)
        #expect(try run(offload, ["lab", "--scenario", "nope"]).0 == 2)
        #expect(try run(offload, ["lab", "--help"]).1.contains("--scenario seed"))
        #expect(try run(offload, ["lab", "--seconds", "0"]).0 == 2)
        #expect(try run(offload, ["lab", "--egress-mtu", "1000"]).0 == 2)
    }
}
