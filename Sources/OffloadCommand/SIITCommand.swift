import ArgumentParser
import Foundation
import OffloadForwarder
import OffloadSIIT
import OffloadWire

/// `offload siit`: stateless IPv4/IPv6 translation, of a capture or between two TUN devices.
struct SIIT: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "siit",
        abstract: "Translate between IPv4 and IPv6 (stateless, RFC 7915): a capture offline, or live between two TUN devices with GRO and GSO on.",
        discussion: """
            Addresses map through the --eam entries (RFC 7757), then the --pool6 prefix (RFC 6052: /32, /40, /48, \
            /56, /64 or /96). Checksums are adjusted for the new pseudo-header (a wrong one stays wrong), the TTL \
            drops by one as on any router, IPv4 options are dropped, IPv6 Hop-by-Hop, Routing (segments left 0) \
            and Destination Options headers are skipped, fragments keep their ID and offset (IPv4 fragment <-> \
            Fragment header), DF-clear IPv4 packets larger than --lowest-ipv6-mtu are fragmented, ICMP errors are \
            translated with the packet they quote (RFC 4884 extensions kept when they fit). TCP and UDP \
            super-packets are translated once, in place, with their GSO type swapped; the MTU is applied to each \
            translated segment, and a too-big one gets "fragmentation needed" (MTU - 20) or "packet too big" \
            (MTU + 20).

            Offline (IN OUT): every packet of IN is translated as the live translator would; OUT (raw IP) holds \
            the translated packets and the ICMP errors the translator would send back.

            Live (--ingress, --egress): --ingress is the TUN device on the IPv6 side, --egress the one on the IPv4 \
            side. --setup routes --pool6 and each --route6 into --ingress and each --route4 (the IPv4 prefixes \
            the IPv6 hosts appear as, such as the IPv4 side of --eam entries) into --egress, and removes the \
            routes at exit. Counters per translation outcome are printed at exit and served by --metrics.

            Examples:
              offload siit --pool6 64:ff9b::/96 v4.pcap v6.pcap
              offload siit --pool6 2001:db8:100::/40 --eam 2001:db8:3::/120=1.0.0.0/24 --mtu6 1280 --json in.pcap out.pcap
              offload siit --ingress siit6 --egress siit4 --pool6 64:ff9b::/96 --eam 2001:db8:1::/120=198.18.0.0/24 \\
                  --setup --route4 198.18.0.0/24 --metrics 127.0.0.1:9102
            """)

    @Option(help: "The RFC 6052 prefix IPv4 addresses map into (64:ff9b::/96 or a network-specific /32../96).")
    var pool6: String?
    @Option(help: ArgumentHelp("An explicit address mapping, V6PREFIX=V4PREFIX with as many host bits on both sides (RFC 7757); repeatable.",
                               valueName: "v6/n=v4/m"))
    var eam: [String] = []
    @Option(help: "Source of ICMPv4 errors translated from IPv6 routers whose address does not map (RFC 6791; default: --icmp-source4).")
    var rfc6791v4: String?
    @Option(help: "Source of ICMPv6 errors translated from IPv4 routers whose address does not map (default: --icmp-source6).")
    var rfc6791v6: String?
    @Option(help: "IPv4 packets without DF are fragmented so that no IPv6 packet exceeds this (RFC 7915 §4).")
    var lowestIpv6Mtu = 1280
    @Flag(help: "Compute the checksum of IPv4 UDP datagrams that have none, instead of answering them with an ICMP error.")
    var amendUdpChecksumZero = false

    @Option(help: "Offline: the MTU of the IPv4 side (default: no limit, 65535).")
    var mtu4: Int?
    @Option(help: "Offline: the MTU of the IPv6 side (default: no limit, 65535).")
    var mtu6: Int?
    @Flag(help: "Offline: print the counts as JSON.")
    var json = false
    @Argument(help: "Offline: the input capture (pcap or pcapng).")
    var input: String?
    @Argument(help: "Offline: the output capture (pcap, raw IP).")
    var output: String?

    @Option(help: "Live: the TUN device on the IPv6 side (created if missing).")
    var ingress: String?
    @Option(help: "Live: the TUN device on the IPv4 side (created if missing).")
    var egress: String?
    @Flag(help: "Live: route --pool6 and --route6 into --ingress, --route4 into --egress; undone at exit.")
    var setup = false
    @Option(help: "Live, with --setup: another IPv6 prefix to route into --ingress; repeatable.")
    var route6: [String] = []
    @Option(help: "Live, with --setup: an IPv4 prefix to route into --egress (where the IPv6 hosts appear); repeatable.")
    var route4: [String] = []
    @OptionGroup(title: "Live dataplane options")
    var dataplane: DataplaneOptions

    var live: Bool { ingress != nil || egress != nil }

    func validate() throws {
        if pool6 == nil && eam.isEmpty { throw ValidationError("give --pool6, or --eam entries, or both") }
        if let pool6, RFC6052Prefix(pool6) == nil {
            throw ValidationError("--pool6 wants an RFC 6052 prefix of length 32, 40, 48, 56, 64 or 96 with bits 64-71 zero, like 64:ff9b::/96")
        }
        for entry in eam where EAMTable.Entry(entry) == nil {
            throw ValidationError("--eam \(entry): want V6PREFIX=V4PREFIX with as many host bits on both sides, like 2001:db8::/120=192.0.2.0/24")
        }
        if let rfc6791v4, IPv4Address(rfc6791v4) == nil { throw ValidationError("--rfc6791v4: not an IPv4 address") }
        if let rfc6791v6, IPv6Address(rfc6791v6) == nil { throw ValidationError("--rfc6791v6: not an IPv6 address") }
        guard lowestIpv6Mtu >= 1280 && lowestIpv6Mtu <= 65_535 else { throw ValidationError("--lowest-ipv6-mtu must be 1280...65535") }
        if live {
            guard ingress != nil, egress != nil else { throw ValidationError("live translation needs both --ingress and --egress") }
            guard input == nil else { throw ValidationError("give either IN OUT (offline) or --ingress/--egress (live), not both") }
            let setupOnly = (route4.isEmpty ? [] : ["--route4"]) + (route6.isEmpty ? [] : ["--route6"])
            if !setup && !setupOnly.isEmpty { throw needsSetup(setupOnly) }
            for r in route6 where IPv6Prefix(r) == nil { throw ValidationError("--route6 \(r): not an IPv6 prefix") }
            for r in route4 where IPv4Prefix(r) == nil { throw ValidationError("--route4 \(r): not an IPv4 prefix") }
            let offlineOnly = (mtu4 != nil ? ["--mtu4"] : []) + (mtu6 != nil ? ["--mtu6"] : []) + (json ? ["--json"] : [])
            if !offlineOnly.isEmpty {
                throw ValidationError("\(offlineOnly.joined(separator: ", ")): offline options (live, the devices' MTUs and "
                    + "--egress-mtu apply, and the counters go to --stats-json)")
            }
        } else {
            let liveOnly = dataplane.liveOnlyGiven + (setup ? ["--setup"] : []) + (route4.isEmpty ? [] : ["--route4"])
                + (route6.isEmpty ? [] : ["--route6"])
            if !liveOnly.isEmpty {
                throw ValidationError("\(liveOnly.joined(separator: ", ")): live options (with --ingress/--egress); "
                    + "translating a capture would ignore them")
            }
            guard input != nil, output != nil else {
                throw ValidationError("give IN OUT to translate a capture, or --ingress and --egress to translate live")
            }
            guard (68...65_535).contains(mtu4 ?? 65_535), (1280...65_535).contains(mtu6 ?? 65_535) else {
                throw ValidationError("--mtu4 must be 68...65535 and --mtu6 1280...65535")
            }
        }
    }

    var translation: SIITConfiguration {
        var c = SIITConfiguration(pool6: pool6.flatMap { RFC6052Prefix($0) })
        c.eam = EAMTable(eam.compactMap { EAMTable.Entry($0) })
        c.rfc6791v4 = rfc6791v4.flatMap { IPv4Address($0) }
        c.rfc6791v6 = rfc6791v6.flatMap { IPv6Address($0) }
        c.ownIPv4 = IPv4Address(dataplane.icmpSource4) ?? c.ownIPv4
        c.ownIPv6 = IPv6Address(dataplane.icmpSource6) ?? c.ownIPv6
        c.lowestIPv6MTU = lowestIpv6Mtu
        c.amendUDPChecksumZero = amendUdpChecksumZero
        return c
    }

    func run() async throws {
        let configuration = translation
        if live, let ingress, let egress {
            let routing: RoutingPlan? = setup
                ? .routes(intoIngress: (pool6.map { [RFC6052Prefix($0)!.description] } ?? []) + route6, intoEgress: route4)
                : nil
            try await dataplane.run(ingress: ingress, egress: egress, routing: routing, label: "offload.siit") { _ in
                SIITStage(configuration: configuration)
            }
            return
        }
        guard let input, let output else { return }
        try checkReadable(input)
        let report = try keepingWhatWasRead(of: input, kept: "their translation is in \(output)") {
            try SIITCapture.translate(input: input, output: output, configuration: configuration,
                                               mtu4: mtu4 ?? 65_535, mtu6: mtu6 ?? 65_535)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        let t = report.translation
        var line = "\(input) -> \(output): \(report.packetsIn) packets in: \(report.forwarded) forwarded"
        line += " (\(t.toIPv6) to IPv6, \(t.toIPv4) to IPv4 translated, \(report.superPackets) of them super-packets,"
        line += " \(t.errors) ICMP errors translated, \(t.fragmentsMade) fragments made, \(t.hairpinned) hairpinned)"
        line += ", \(report.refused) refused (too big with DF, or TTL expired)"
        line += ", \(report.notForwarded) not forwarded (multicast, link-local)"
        let drops = t.dropped.filter { $0.value > 0 }.sorted { $0.key.rawValue < $1.key.rawValue }
            .map { "\($0.value) \($0.key.rawValue.replacingOccurrences(of: "_", with: " "))" }
        line += ", dropped: " + (drops.isEmpty ? "none" : drops.joined(separator: ", "))
        line += ", \(report.malformed) malformed, \(report.notIP) not IP, \(report.snapped) cut short"
        line += "\n  \(report.written) written: \(report.packetsToOtherSide) to the other side and \(report.icmpErrors) ICMP "
            + "errors back (\(report.icmpSuppressed) more held back by the rate limit)"
        if !report.reconciles { line += "\n  (these do not add up to the packets in: a bug, please report it)" }
        print(line)
    }
}
