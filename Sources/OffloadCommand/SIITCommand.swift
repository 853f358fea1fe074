import ArgumentParser
import Foundation
import OffloadSIIT

/// `offload siit`: stateless IPv4/IPv6 translation of a capture.
struct SIIT: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "siit",
        abstract: "Translate a capture between IPv4 and IPv6 (stateless, RFC 7915), as the forwarder's SIIT stage would.",
        discussion: """
            Each IPv4 TCP, UDP or ICMP echo packet, and each ICMP error (with the header it quotes), becomes IPv6 with its addresses embedded in --pool6 (RFC 6052, a /96 \
            prefix), and each IPv6 packet whose addresses lie in --pool6 becomes IPv4. Checksums are adjusted \
            for the new pseudo-header (a wrong one stays wrong), the TTL drops by one as on any router, IPv4 \
            options are dropped, and the IPv6 side gets DF and ID 0. Packets too big for --mtu after translation \
            are counted as ICMP errors the translator would send. The output is raw IP (LINKTYPE_RAW).

            Not translated yet (dropped and counted): redirects and other ICMP types, fragments, IPv6 extension headers, other \
            protocols, UDP over IPv4 without a checksum.

            Examples:
              offload siit --pool6 64:ff9b::/96 v4.pcap v6.pcap
              offload siit --pool6 2001:db8:64::/96 --mtu 1280 --json mixed.pcapng out.pcap
            """)

    @Option(help: "The IPv6 prefix IPv4 addresses map into (a /96, RFC 6052).")
    var pool6: String
    @Option(help: "Egress MTU after translation (default: no limit).")
    var mtu = 65_535
    @Flag(help: "Print the counts as JSON.")
    var json = false
    @Argument(help: "Input capture (pcap or pcapng).")
    var input: String
    @Argument(help: "Output capture (pcap, raw IP).")
    var output: String

    func validate() throws {
        guard IPv6Prefix96(pool6) != nil else {
            throw ValidationError("--pool6 wants a /96 prefix whose last 32 bits are zero, like 64:ff9b::/96")
        }
        guard mtu >= 68 && mtu <= 65_535 else { throw ValidationError("--mtu must be 68...65535") }
    }

    func run() throws {
        try checkReadable(input)
        let report = try SIITCapture.translate(input: input, output: output, prefix: IPv6Prefix96(pool6)!, egressMTU: mtu)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print("\(input) -> \(output): \(report.packetsIn) packets in, \(report.written) written "
                + "(\(report.toIPv6) to IPv6, \(report.toIPv4) to IPv4); \(report.icmpErrors) would get an ICMP error; "
                + "dropped: \(report.untranslatableAddress) outside \(pool6), \(report.udpWithoutChecksum) UDP without a "
                + "checksum, \(report.notTranslated) not translated yet, \(report.malformed) malformed; "
                + "\(report.notIP) not IP, \(report.snapped) cut short")
        }
    }
}
