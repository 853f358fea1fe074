import ArgumentParser
import Foundation
import OffloadCapture
import OffloadDoctor
import OffloadSIIT

struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read captures and say what offloads (and the network) did to the TCP flows in them.",
        discussion: """
            Findings in plain words, most important first, each with its evidence (flow, packet numbers, times): \
            super-packets and where the capture was taken (receiver-side GRO or sender-side TSO/GSO); per flow, \
            stalls (no new data for 200 ms or more with data outstanding) and what preceded them, retransmissions \
            (fast or timeout), SACK, window scaling, DF, ICMP "fragmentation needed" / "packet too big" and \
            whether path MTU discovery worked or black-holed; fairness across flows (Jain's index).

            With several captures taken at different points (e.g. both sides of a forwarder, in the order the data \
            crosses them or not), consecutive files are matched by flow and sequence: what the forwarder merged \
            (segments per packet, how long it held them), split and dropped, and whether it ever emitted or changed \
            an ACK (it must not). Around an IPv4/IPv6 translator, give its --pool6 (and --eam) so that flows \
            are followed from one family to the other. Both captures should come from one clock (one host) for the hold times to mean much.

            Examples:
              offload doctor capture.pcap
              offload doctor --json lan.pcap wan.pcap
              offload doctor --report doctor.html lan.pcap wan.pcap
              offload doctor --pool6 64:ff9b::/96 --eam 2001:db8:1::/120=198.18.0.0/24 ipv6-side.pcap ipv4-side.pcap
              sudo offload lab --scenarios 5 --mtus smaller --capture lab/ && offload doctor lab/*5-v4*lan* lab/*5-v4*wan*
            """)

    @Argument(help: ArgumentHelp("Captures (pcap or pcapng).", valueName: "capture"))
    var captures: [String]
    @Option(help: "The link MTU (default: inferred from the frames: the usual full-size packet, 1500 or more).")
    var mtu: Int?
    @Option(help: "A stall is this long without new data while data is outstanding (milliseconds).")
    var stallMs = 200
    @Flag(help: "Print the diagnosis as JSON.")
    var json = false
    @Option(help: "Captures taken on both sides of an IPv4/IPv6 translator: its RFC 6052 prefix, to follow flows across it.")
    var pool6: String?
    @Option(help: ArgumentHelp("With captures around a translator: its explicit address mappings (V6PREFIX=V4PREFIX); repeatable.",
                               valueName: "v6/n=v4/m"))
    var eam: [String] = []
    @Option(help: ArgumentHelp("Also write an HTML page with the findings and time–sequence / goodput charts.",
                               valueName: "file.html"))
    var report: String?

    func validate() throws {
        guard !captures.isEmpty else { throw ValidationError("give at least one capture") }
        if let mtu, mtu < 68 || mtu > 65_535 { throw ValidationError("--mtu must be 68...65535") }
        guard stallMs >= 1 && stallMs <= 600_000 else { throw ValidationError("--stall-ms must be 1...600000") }
        if let pool6, RFC6052Prefix(pool6) == nil { throw ValidationError("--pool6: not an RFC 6052 prefix (like 64:ff9b::/96)") }
        for entry in eam where EAMTable.Entry(entry) == nil { throw ValidationError("--eam \(entry): want V6PREFIX=V4PREFIX") }
    }

    func run() throws {
        for path in captures { try checkReadable(path) }
        var options = DoctorOptions()
        options.mtu = mtu
        options.stallThreshold = Double(stallMs) / 1000
        if pool6 != nil || !eam.isEmpty {
            var translation = SIITConfiguration(pool6: pool6.flatMap { RFC6052Prefix($0) })
            translation.eam = EAMTable(eam.compactMap { EAMTable.Entry($0) })
            options.ipv4ForIPv6 = { [translation] in translation.ipv4(for: $0) }
        }
        let diagnosis = try OffloadDoctor.Doctor.diagnose(paths: captures, options: options)
        if json {
            FileHandle.standardOutput.write(try DoctorPresentation.json(diagnosis))
            print()
        } else {
            print(DoctorPresentation.text(diagnosis), terminator: "")
        }
        if let report {
            do {
                try DoctorPresentation.html(diagnosis).write(toFile: report, atomically: true, encoding: .utf8)
            } catch {
                throw InputError(message: "--report: cannot write \(report): \(error.localizedDescription)")
            }
            FileHandle.standardError.write(Data("doctor: report written to \(report)\n".utf8))
        }
        if let damaged = diagnosis.captures.first(where: { $0.readError != nil }), let damage = damaged.readError {
            inputDamaged(damage, records: damaged.records, kept: "the diagnosis above covers them")
        }
    }
}
