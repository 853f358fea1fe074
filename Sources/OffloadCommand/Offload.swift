import ArgumentParser
import Foundation
import OffloadCapture
import OffloadDemo
import Logging
import OffloadEngine
import OffloadForwarder
import OffloadIPsec
import OffloadSIIT
import OffloadTunnel
import OffloadWire
import OffloadReport

/// `offload`: receive and segmentation offload in user space, correctly, for forwarders.
///
/// Exit codes: 0 success, 1 bad input (unreadable or corrupt capture), 2 usage.
@main
struct Offload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "offload",
        abstract: "GRO and GSO in user space that stay transparent on a forwarder.",
        discussion: """
            Merges a stream's packets as Linux GRO would (coalesce), splits super-packets back into the \
            very packets that were merged (segment), shows what offload would do to a capture (stats), \
            forwards between two TUN devices with GRO and GSO on (forward), reproduces the forwarding failure \
            and its fix with real TCP in network namespaces (lab), and reads captures to say what offloads did \
            to the flows in them (doctor), translates between IPv4 and IPv6 (siit), runs GTP-U and VXLAN tunnel \
            endpoints (tunnel) and an IPsec ESP gateway (ipsec), and writes test traffic (generate). Each of siit, \
            tunnel and ipsec works live on TUN devices or offline on captures. Start with `offload demo`.

            Exit codes: 0 success, 1 bad input (a damaged capture: what was read before the damage is kept, \
            and a warning says so), 2 usage.
            """,
        version: OffloadVersion.current,
        subcommands: [Demo.self, Coalesce.self, Segment.self, Stats.self, Generate.self, Forward.self, Lab.self, Doctor.self,
                      SIIT.self, NAT64.self, Tunnel.self, IPsec.self])

    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asynchronous = command as? AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch let error as CaptureError {
            FileHandle.standardError.write(Data("offload: \(error)\n".utf8))
            Foundation.exit(1)
        } catch let error as InputError {
            FileHandle.standardError.write(Data("offload: \(error.message)\n".utf8))
            Foundation.exit(1)
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

/// Every command's policy for a capture damaged after its first record (truncated, a lying length):
/// warn, keep what was read (its result is written, or shown), say so, and exit 1. The damage found
/// in the file header is an ordinary input error (nothing could be read).
func keepingWhatWasRead<T>(of input: String, kept: String, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as CaptureError where error.path == input && error.record > 1 {
        inputDamaged("\(error)", records: error.record - 1, kept: kept)
    }
}

/// Says that `input` is damaged and what was kept, and exits 1.
func inputDamaged(_ damage: String, records: Int?, kept: String) -> Never {
    let read = records.map { "the \($0) records before it were read" } ?? "the records before it were read"
    FileHandle.standardError.write(Data("offload: warning: \(damage)\noffload: \(read) and \(kept); exit status 1\n".utf8))
    Foundation.exit(1)
}

/// A failure caused by the input (exit code 1).
struct InputError: Error {
    var message: String
}

// MARK: - Shared options

enum ModeOption: String, ExpressibleByArgument, CaseIterable {
    case gro, lro
}

enum ChecksumOption: String, ExpressibleByArgument, CaseIterable {
    case verify, trust
}

enum FormatOption: String, ExpressibleByArgument, CaseIterable {
    case pcap, pcapng
}

extension IPIDRule: ExpressibleByArgument {}

/// Options that shape the GRO engine, shared by `coalesce` and `stats`.
struct EngineOptions: ParsableArguments {
    @Option(help: "Packets per simulated receive poll.")
    var batch = 64

    @Option(help: ArgumentHelp(
        "Hold packets across polls until this old (e.g. 100us, 2ms, 0): the gro_flush_timeout idea, on capture time.",
        valueName: "duration"))
    var flushTimeout = "0"

    @Flag(help: "Also merge UDP datagrams (UDP GRO, off by default as in Linux).")
    var udp = false

    @Option(help: "gro: Linux's lossless rules. lro: UNSAFE greedy merge that forwarders must not do (for the lab).")
    var mode: ModeOption = .gro

    @Option(help: "IPv4 fixed-ID rule: mainline (fixed ID merges with any DF) or legacy (Linux <= 6.17: DF only).")
    var ipIdRule: IPIDRule = .mainline

    @Option(help: "verify: check every TCP/UDP checksum in software before merging. trust: assume they were checked.")
    var checksums: ChecksumOption = .verify

    func validate() throws {
        guard batch >= 1 && batch <= 65_536 else { throw ValidationError("--batch must be between 1 and 65536") }
        guard parseDuration(flushTimeout) != nil else {
            throw ValidationError("--flush-timeout: '\(flushTimeout)' is not a duration like 0, 100us, 2ms or 1s")
        }
    }

    var coalesceOptions: CoalesceOptions {
        var o = CoalesceOptions()
        o.batch = batch
        o.engine.udp = udp
        o.engine.mode = mode == .gro ? .gro : .unsafeLRO
        o.engine.ipIDRule = ipIdRule
        o.engine.flushTimeout = parseDuration(flushTimeout) ?? 0
        o.checksums = checksums == .verify ? .unverified : .verified
        return o
    }
}

/// Parses `0`, `250ns`, `100us`, `2ms`, `1s` (plain numbers are microseconds) to nanoseconds.
func parseDuration(_ text: String) -> UInt64? {
    let units: [(String, Double)] = [("ns", 1), ("us", 1e3), ("µs", 1e3), ("ms", 1e6), ("s", 1e9)]
    for (suffix, scale) in units where text.hasSuffix(suffix) {
        guard let v = Double(text.dropLast(suffix.count)), v >= 0, v.isFinite else { return nil }
        return UInt64(v * scale)
    }
    guard let v = Double(text), v >= 0, v.isFinite else { return nil }
    return UInt64(v * 1e3)
}

/// Progress on standard error, only when it is a terminal.
final class Progress {
    let label: String
    let enabled = isatty(2) != 0
    var last = Date.distantPast

    init(_ label: String) { self.label = label }

    func update(_ done: Int, _ total: Int?) {
        guard enabled, Date().timeIntervalSince(last) > 0.25 else { return }
        last = Date()
        let mb = Double(done) / 1e6
        let text = total.map { "\(label): \(String(format: "%.1f", mb)) / \(String(format: "%.1f", Double($0) / 1e6)) MB (\(done * 100 / max($0, 1))%)" }
            ?? "\(label): \(String(format: "%.1f", mb)) MB"
        FileHandle.standardError.write(Data("\r\(text)\u{1B}[K".utf8))
    }

    func finish() {
        if enabled { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }
}

func formatFlag(_ f: FormatOption?) -> CaptureFormat? {
    switch f {
    case .pcap?: .pcap(nanosecond: true, bigEndian: false)
    case .pcapng?: .pcapng
    case nil: nil
    }
}

func checkReadable(_ path: String) throws {
    guard FileManager.default.isReadableFile(atPath: path) else {
        throw InputError(message: "\(path): no such readable file")
    }
}

// MARK: - coalesce

struct Coalesce: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run GRO over a capture and write what it would deliver.",
        discussion: """
            Merged packets get complete, valid checksums. In pcapng output each super-packet carries its GSO \
            facts (a custom option) and a readable comment, so `offload segment` can split it back exactly.

            Examples:
              offload coalesce bulk.pcap merged.pcapng
              offload coalesce --batch 8 --flush-timeout 100us --udp in.pcapng out.pcapng
              offload coalesce --mode lro in.pcap lro.pcapng      # the UNSAFE merge, to see why not
            """)

    @Argument(help: "Input capture (pcap or pcapng).")
    var input: String
    @Argument(help: "Output capture (.pcapng records GSO facts; .pcap cannot).")
    var output: String
    @OptionGroup var engine: EngineOptions
    @Option(help: "Output format (default: from the output's extension; pcapng otherwise).")
    var format: FormatOption?
    @Flag(name: .shortAndLong, help: "Print nothing on success.")
    var quiet = false

    func run() throws {
        try checkReadable(input)
        var options = engine.coalesceOptions
        options.format = formatFlag(format)
        let progress = Progress("coalesce")
        let start = Date()
        let report = try keepingWhatWasRead(of: input, kept: "their result is in \(output)") {
            try coalesceCapture(input: input, output: output, options: options, progress: progress.update)
        }
        progress.finish()
        guard !quiet else { return }
        let seconds = Date().timeIntervalSince(start)
        print("\(input) -> \(output)")
        // In = out, less the super-packets, plus the segments they hold: every packet is accounted for.
        print("  packets: \(report.packetsIn) in = \(report.packetsOut) out − \(report.superPackets) super-packets + the "
            + "\(report.segments) segments they hold (mean \(String(format: "%.1f", report.gro.meanSegmentsPerSuperPacket)))")
        print("  \(String(format: "%.1f", Double(report.bytesIn) / 1e6)) MB in \(String(format: "%.2f", seconds)) s")
        printReasons(report.gro)
    }
}

/// What the checksums of a capture mean for GRO, in words: bad ones keep packets out of GRO; when
/// they hold only the pseudo-header sum (checksum offload on the capturing host) or are many,
/// `--checksums trust` is the way to merge them.
func checksumAdvice(partial: Int, bad: Int, packets: Int) -> [String] {
    var lines: [String] = []
    if partial > 0 {
        lines.append("\(partial) of the bad TCP/UDP checksums hold only the pseudo-header sum: checksum offload on "
            + "the host that captured them (its NIC fills them in), the normal host capture. GRO does not merge them "
            + "as they are; `--checksums trust` merges them (merged packets then get complete checksums, so "
            + "`offload segment` gives back complete checksums, not the partial fields).")
    } else if bad > 0 && bad * 20 >= max(packets, 1) {
        lines.append("\(bad) packets have TCP/UDP checksums that are wrong, and GRO does not merge those. If the capture "
            + "was taken where checksums are not filled in, `--checksums trust` merges them anyway.")
    }
    return lines
}

func printReasons(_ gro: GROStatistics) {
    for line in checksumAdvice(partial: gro.partialChecksums, bad: gro[.badChecksum], packets: gro.packetsIn) {
        print("  " + line)
    }
    let nonzero = GROReason.allCases.filter { gro[$0] > 0 }
    guard !nonzero.isEmpty else { return }
    print("  why packets left GRO when they did:")
    for group in ["flush", "deliver", "bypass"] {
        let rows = nonzero.filter { $0.group == group }
        guard !rows.isEmpty else { continue }
        print("    \(group): " + rows.map { "\($0) \(gro[$0])" }.joined(separator: ", "))
    }
}

// MARK: - segment

struct Segment: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Split super-packets back into wire packets.",
        discussion: """
            Packets with GSO facts recorded by `offload coalesce` are split exactly. A TCP packet larger than the \
            MTU (as tcpdump shows on a host with GRO/TSO on) is split into segments of --mss, or of the MTU less \
            its headers. Other packets pass unchanged.

            Examples:
              offload segment merged.pcapng restored.pcap
              offload segment --mtu 9000 host-capture.pcap wire.pcap
              offload segment --mss 1448 host-capture.pcapng wire.pcapng
            """)

    @Argument(help: "Input capture.")
    var input: String
    @Argument(help: "Output capture.")
    var output: String
    @Option(help: "MTU of the wire, for packets with no recorded GSO facts.")
    var mtu = 1500
    @Option(help: "Segment payload size to use instead of the one the MTU gives.")
    var mss: Int?
    @Option(help: "Output format (default: from the output's extension).")
    var format: FormatOption?
    @Flag(name: .shortAndLong, help: "Print nothing on success.")
    var quiet = false

    func validate() throws {
        guard mtu >= 68 && mtu <= 65_535 else { throw ValidationError("--mtu must be between 68 and 65535") }
        if let mss, mss < 1 || mss > 65_000 { throw ValidationError("--mss must be between 1 and 65000") }
    }

    func run() throws {
        try checkReadable(input)
        var options = SegmentOptions()
        options.mtu = mtu
        options.mss = mss
        options.format = formatFlag(format)
        let progress = Progress("segment")
        let report = try keepingWhatWasRead(of: input, kept: "their result is in \(output)") {
            try segmentCapture(input: input, output: output, options: options, progress: progress.update)
        }
        progress.finish()
        guard !quiet else { return }
        print("\(input) -> \(output)")
        print("  packets: \(report.packetsOut) out = \(report.packetsIn) in − \(report.superPackets) super-packets split "
            + "+ the \(report.segments) segments they became (\(report.splitByRecordedFacts) by recorded GSO facts, "
            + "\(report.splitByMTU) by MTU/MSS)")
        if report.leftWholeLRO > 0 {
            print("  left whole: \(report.leftWholeLRO) LRO merges: their segment size was not kept, so they cannot be "
                + "split back into the packets that were merged (--mss splits them into segments of a size you choose)")
        }
        if report.leftWhole > report.leftWholeLRO {
            print("  left whole: \(report.leftWhole - report.leftWholeLRO) packets larger than the MTU that cannot be split "
                + "(UDP, or headers that do not parse)")
        }
    }
}

// MARK: - stats

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what in a capture matters for offload.",
        discussion: """
            Flows, packets and bytes per flow; how many packets GRO would merge and why the rest would not; \
            packets larger than the MTU (super-packets already there); fragments; bad checksums.

            Examples:
              offload stats capture.pcap
              offload stats --json --mtu 9000 capture.pcapng
            """)

    @Argument(help: "Input capture.")
    var input: String
    @Option(help: "MTU of the link, to spot super-packets.")
    var mtu = 1500
    @Option(help: "How many flows to list (0: all).")
    var flows = 10

    func validate() throws {
        guard mtu >= 68 && mtu <= 65_535 else { throw ValidationError("--mtu must be between 68 and 65535") }
        guard flows >= 0 else { throw ValidationError("--flows must be 0 (all) or more") }
    }
    @Flag(help: "Print JSON instead of text.")
    var json = false
    @OptionGroup var engine: EngineOptions

    func run() throws {
        try checkReadable(input)
        let progress = Progress("stats")
        let stats = try captureStatistics(input: input, mtu: mtu, options: engine.coalesceOptions,
                                          progress: progress.update)
        progress.finish()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(stats), as: UTF8.self))
        } else {
            printStats(stats, path: input, flowLimit: flows)
        }
        if let damage = stats.inputDamage { inputDamaged(damage, records: nil, kept: "the statistics above cover them") }
    }
}

func printStats(_ s: CaptureStatistics, path: String, flowLimit: Int) {
    print("\(path): \(s.format), link \(s.linkTypes.joined(separator: ", "))")
    print("  \(s.packets) packets, \(s.bytes) bytes, \(String(format: "%.3f", s.durationSeconds)) s; "
        + "IPv4 \(s.ipv4), IPv6 \(s.ipv6), not IP \(s.notIP), malformed \(s.malformed), snapped \(s.snapped)")
    print("  larger than MTU \(s.mtu): \(s.overMTU) (largest IP packet \(s.largestIPPacket) bytes)"
        + (s.overMTU > 0 ? " — super-packets already in the capture; `offload segment` restores the wire view" : ""))
    print("  fragments \(s.fragments); bad checksums: IPv4 header \(s.badIPChecksums), TCP/UDP \(s.badL4Checksums)")
    for line in checksumAdvice(partial: s.partialChecksums, bad: s.badL4Checksums, packets: s.packets) { print("  " + line) }
    let ratio = s.groPacketsOut == 0 ? 0 : Double(s.packets) / Double(s.groPacketsOut)
    print("  GRO would deliver \(s.groPacketsOut) packets (\(String(format: "%.2f", ratio))x fewer): "
        + "\(s.groSuperPackets) super-packets absorbing \(s.groMergedPackets) more packets")
    if !s.groReasons.isEmpty {
        print("  why packets left GRO when they did:")
        for (name, count) in s.groReasons.sorted(by: { ($0.value, $1.key) > ($1.value, $0.key) }) {
            print("    \(name.padding(toLength: 26, withPad: " ", startingAt: 0)) \(count)")
        }
    }
    let shown = flowLimit == 0 ? s.flows : Array(s.flows.prefix(flowLimit))
    print("  flows: \(s.flows.count)\(shown.count < s.flows.count ? " (largest \(shown.count) shown; --flows 0 for all)" : "")")
    for f in shown {
        print("    \(f.protocolName.padding(toLength: 6, withPad: " ", startingAt: 0)) \(f.source) -> \(f.destination): "
            + "\(f.packets) packets, \(f.bytes) bytes, payload \(f.payloadBytes)"
            + (f.overMTU > 0 ? ", \(f.overMTU) over MTU" : ""))
    }
}

// MARK: - demo

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a small capture, coalesce it, split it back, and show the stats (no root needed).",
        discussion: """
            Writes demo-input.pcap (about 1 MB of TCP and UDP traffic the project generates: two bulk transfers, \
            one with a loss and a fast retransmit, ACKs, small UDP datagrams), demo-coalesced.pcapng and demo-restored.pcap into \
            --directory, checks that the restored capture equals the input packet for packet, and runs the packets through the \
            forwarder's stage pipeline (identity stage, no devices) at an egress MTU of 1500 and of 1400. Then the merged \
            capture goes through the SIIT translator (IPv4 to IPv6, each super-packet once: demo-ipv6.pcap) and through a \
            GTP-U tunnel and back (one datagram per segment: demo-gtpu.pcap, demo-decapsulated.pcap), checked against the \
            restored packets.
            """)

    @Option(help: "Where to write the demo files.")
    var directory = FileManager.default.temporaryDirectory.appendingPathComponent("swift-offload-demo").path

    func run() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let input = directory + "/demo-input.pcap"
        let merged = directory + "/demo-coalesced.pcapng"
        let restored = directory + "/demo-restored.pcap"
        let frames = SyntheticTraffic.capture()
        var writer = try CaptureWriter(path: input, format: .pcap(nanosecond: true, bigEndian: false),
                                       interfaces: [CaptureInterface(linkType: .ethernet)])
        for f in frames { try writer.writePacket(f.bytes, timestamp: f.timestamp) }
        try writer.flush()
        print("\(OffloadVersion.banner) demo\nwrote \(input): \(frames.count) packets of generated traffic\n")
        printStats(try captureStatistics(input: input), path: input, flowLimit: 10)
        let report = try coalesceCapture(input: input, output: merged)
        print("\ncoalesce: \(report.packetsIn) packets in = \(report.packetsOut) out − \(report.superPackets) super-packets + "
            + "the \(report.segments) segments they hold (mean \(String(format: "%.1f", report.gro.meanSegmentsPerSuperPacket)) "
            + "each) -> \(merged)")
        print("          \(report.trainFastPathMerges) of \(report.gro.mergedSegments) merged segments took the train fast path "
            + "(headers equal to the held packet's under a mask; the rule-by-rule path decided the rest)")
        let back = try segmentCapture(input: merged, output: restored)
        print("segment:  \(back.packetsIn) packets -> \(back.packetsOut) -> \(restored)")
        let comparison = try compareCapturesPerFlow(input, restored)
        print("round trip: \(comparison.flows) flows, \(comparison.packetsA) packets in, \(comparison.packetsB) back; "
            + (comparison.identical ? "every flow byte-identical, in order: segment(coalesce(x)) == x"
                : "\(comparison.differingFlows.count) flows differ: \(comparison.differingFlows.prefix(3))"))
        for mtu in [1500, 1400] {
            let f = DemoTour.forward(frames, egressMTU: mtu)
            print("forward (stage pipeline, identity stage, egress MTU \(mtu)): \(f.packetsIn) packets in, "
                + "\(f.written) written (\(f.superPacketsWhole) super-packets whole with their GSO facts), "
                + "\(f.dropped) too big with DF set: dropped, with \(f.icmpSent) ICMP errors back to the senders "
                + "(\(f.icmpSuppressed) held back by the rate limit)")
        }
        let t = try DemoTour.translateAndTunnel(merged: merged, restored: restored, directory: directory)
        func verdict(_ intact: Bool) -> String {
            intact ? "the very packets offload segment restored (two hops older)" : "DIFFERENT from the restored packets"
        }
        print("siit (\(DemoTour.prefix)): \(t.siit.packetsIn) packets in, \(t.siit.translation.toIPv6) IPv4 packets to IPv6 "
            + "(\(t.siit.superPackets) of them super-packets, each translated once in place, then written as its "
            + "segments: \(t.siit.packetsToOtherSide) IPv6 packets in all), "
            + "\(t.siit.translation.droppedTotal) IPv6 packets outside the prefix dropped -> \(directory)/\(DemoTour.files.ipv6)")
        let n = t.nat64
        print("nat64 (stateful, RFC 6146, pool4 \(DemoTour.pool4)): \(n.hosts) IPv6-only hosts opened TCP connections to an "
            + "IPv4 server through \(n.addressesSeen) IPv4 address on \(n.portsSeen) ports, the server's answers reached "
            + "\(n.repliesReachedHosts ? "each host at its own address and port" : "the WRONG hosts")"
            + ", \(n.established) sessions established; \(n.superPackets) GRO super-packets each looked up once, "
            + "its session refreshed once and translated once in place -> \(n.segmentsOut) IPv4 segments")
        print("gtpu (TEID 7, a 1600-byte underlay): \(t.gtpu.packetsIn) packets (\(t.gtpu.superPackets) super-packets) -> "
            + "\(t.gtpu.written) datagrams, one per segment -> \(DemoTour.files.gtpu); decapsulated \(t.gtpuBack.written) "
            + "packets -> \(DemoTour.files.gtpuInner): " + verdict(t.gtpuIntact))
        print("ike: two IKEv2 engines in memory (IKE_SA_INIT, IKE_AUTH with a pre-shared key made for this run) agreed in "
            + "\(t.ikeMessages) messages on \(t.child.algorithm)\(t.child.extendedSequenceNumbers ? " with ESN" : ""), SPIs "
            + String(format: "0x%08x / 0x%08x", t.child.outbound.spi, t.child.inbound.spi)
            + "; the responder is a hub (remote_addrs = %any) and gave a second peer its own CHILD_SA: "
            + "\(t.hubPeers.count) peers, at \(t.hubPeers.map(\.description).joined(separator: " and "))")
        print("esp (those keys, SPI \(String(format: "0x%08x", t.child.outbound.spi))): \(t.esp.written) datagrams, one per segment, encrypted -> "
            + "\(DemoTour.files.esp); decrypted by the other end \(t.espBack.written) packets -> \(DemoTour.files.espInner): " + verdict(t.espIntact))
        print("\nOpen \(merged) in Wireshark: each super-packet's comment says how many segments it holds and why it was completed.")
        if !comparison.identical || !t.gtpuIntact || !t.espIntact || !t.nat64.repliesReachedHosts { throw ExitCode.failure }
    }
}

// MARK: - generate

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a capture of generated TCP and UDP traffic (for tests and benchmarks).",
        discussion: """
            Bulk TCP over IPv4 and IPv6 with timestamps, ACKs, a loss and fast retransmit, and small UDP \
            datagrams, repeated with new connections until the size is reached.

            Examples:
              offload generate traffic.pcap
              offload generate --megabytes 1100 /tmp/big.pcap
            """)

    @Argument(help: "Output capture (.pcap or .pcapng).")
    var output: String
    @Option(help: "About how many megabytes to write.")
    var megabytes = 10

    func validate() throws {
        guard megabytes >= 1 && megabytes <= 1_000_000 else { throw ValidationError("--megabytes must be 1 or more") }
    }

    func run() throws {
        let format: CaptureFormat = output.hasSuffix(".pcapng") ? .pcapng : .pcap(nanosecond: true, bigEndian: false)
        var writer = try CaptureWriter(path: output, format: format, interfaces: [CaptureInterface(linkType: .ethernet)])
        let progress = Progress("generate")
        try SyntheticTraffic.write(megabytes: megabytes, to: &writer) { progress.update($0, megabytes * 1_000_000) }
        try writer.flush()
        progress.finish()
        print("wrote \(output): \(writer.packetCount) packets, \(writer.byteCount) bytes")
    }
}
