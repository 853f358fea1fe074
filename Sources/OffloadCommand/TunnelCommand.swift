import ArgumentParser
import Foundation
import Logging
import OffloadEngine
import OffloadForwarder
import OffloadTunnel
import OffloadWire

/// The options every tunnel endpoint command takes (`tunnel`, `ipsec`): the outer addresses, the
/// device and its routes when live, the captures when offline, and the dataplane's options.
struct TunnelEndpointOptions: ParsableArguments {
    @Option(help: "This end's outer address.")
    var local: String?
    @Option(help: "The far end's outer address.")
    var remote: String?
    @Option(help: "Live: the TUN device on the inner side (created if missing).")
    var device: String?
    @Option(help: "The underlay MTU (live default: the kernel's path MTU towards --remote; offline: 1500).")
    var underlayMtu: Int?
    @Flag(help: "Live: route each --route prefix into --device; undone at exit.")
    var setup = false
    @Flag(help: "Live: lower the MSS option of TCP SYNs and SYN-ACKs through the tunnel to fit the inner MTU, as iptables' TCPMSS --clamp-mss-to-pmtu does, so that connections need no path MTU discovery through the tunnel (off by default: packets pass as they are, and segments too big get fragmentation needed / packet too big).")
    var clampMss = false
    @Option(help: "Live, with --setup: a prefix (either family) reached through the tunnel; repeatable.")
    var route: [String] = []
    @Option(help: "Live, with --setup: an address for the device (CIDR; a VXLAN TAP device needs one per family to route through it); repeatable.")
    var address: [String] = []
    @Option(help: "Live, with --setup: the next hop of the --route prefixes of its family on the far side (VXLAN: the far end's address inside the tunnel); repeatable.")
    var nextHop: [String] = []
    @Flag(help: "Offline: print the counts as JSON.")
    var json = false
    @Argument(help: "Offline: the input capture.")
    var input: String?
    @Argument(help: "Offline: the output capture (pcap, raw IP; Ethernet for VXLAN when decapsulating).")
    var output: String?
    @OptionGroup(title: "Live dataplane options")
    var dataplane: DataplaneOptions

    var live: Bool { device != nil }

    /// Checks the options; `needsAddresses`: offline work that builds outer headers (encapsulating).
    func check(needsAddressesOffline: Bool) throws {
        if live {
            guard input == nil else { throw ValidationError("give either --device (live) or IN OUT (offline), not both") }
            guard dataplane.queues == 1 else { throw ValidationError("--queues: a tunnel endpoint runs one queue") }
            guard dataplane.egressMtu == nil else { throw ValidationError("--egress-mtu: use --underlay-mtu for a tunnel") }
            let setupOnly = (route.isEmpty ? [] : ["--route"]) + (address.isEmpty ? [] : ["--address"])
                + (nextHop.isEmpty ? [] : ["--next-hop"])
            if !setup && !setupOnly.isEmpty { throw needsSetup(setupOnly) }
        } else {
            guard input != nil, output != nil else {
                throw ValidationError("give --device to run the endpoint, or IN OUT to work on a capture")
            }
            let liveOnly = dataplane.liveOnlyGiven + (setup ? ["--setup"] : []) + (route.isEmpty ? [] : ["--route"])
                + (address.isEmpty ? [] : ["--address"]) + (nextHop.isEmpty ? [] : ["--next-hop"])
                + (clampMss ? ["--clamp-mss"] : [])
            if !liveOnly.isEmpty {
                throw ValidationError("\(liveOnly.joined(separator: ", ")): live options (with --device); working on a "
                    + "capture would ignore them")
            }
        }
        if live || needsAddressesOffline {
            let missing = (local == nil ? ["--local (this end's outer address)"] : [])
                + (remote == nil ? ["--remote (the far end's outer address)"] : [])
            guard missing.isEmpty, let local, let remote else {
                throw ValidationError("missing \(missing.joined(separator: " and ")): \(live ? "a live endpoint" : "encapsulating") needs both")
            }
            guard let l = IPAddress(local) else { throw ValidationError("--local \(local): not an IP address") }
            guard let r = IPAddress(remote) else { throw ValidationError("--remote \(remote): not an IP address") }
            guard l.isIPv4 == r.isIPv4 else { throw ValidationError("--local and --remote must be of one family") }
        }
        if let m = underlayMtu, m < 1280 || m > 65_535 { throw ValidationError("--underlay-mtu must be 1280...65535") }
        for r in route where IPv4Prefix(r) == nil && IPv6Prefix(r) == nil {
            throw ValidationError("--route \(r): not a prefix")
        }
        if setup && route.isEmpty { throw ValidationError("--setup needs at least one --route") }
        for a in address {
            let parts = a.split(separator: "/")
            guard parts.count == 2, IPAddress(parts[0]) != nil, Int(parts[1]) != nil else {
                throw ValidationError("--address \(a): want ADDRESS/LENGTH")
            }
        }
        for hop in nextHop where IPAddress(hop) == nil { throw ValidationError("--next-hop \(hop): not an IP address") }
    }

    /// Runs the endpoint live with `codec` until SIGINT/SIGTERM or the duration.
    func serve<Codec: TunnelCodec>(codec: Codec, label: String, signalHandler: (@Sendable (TunnelSignal, [UInt8], UDPEndpoint?) -> Void)? = nil,
                                   onSIGUSR1: (@Sendable () -> Void)? = nil, extraMetrics: (@Sendable () -> String)? = nil,
                                   started: (TunnelEndpoint<Codec>, Logger) throws -> Void = { _, _ in }) async throws {
        guard let device else { return }
        let logger = try dataplane.prepare(label: label)
        if dataplane.cleanup { return try dataplane.cleanupSetup(devices: [device]) }
        var configuration = TunnelConfiguration(device: device, local: IPAddress(local!)!, remote: IPAddress(remote!)!, codec: codec)
        configuration.underlayMTU = underlayMtu
        configuration.offloads = !dataplane.noVnetHdr
        configuration.gro.mode = dataplane.mode == .gro ? GROMode.gro : .unsafeLRO
        configuration.gro.tcp = !dataplane.noTcpGro
        configuration.gro.udp = dataplane.udpGro
        configuration.batch = dataplane.batch
        configuration.clampMSS = clampMss
        configuration.icmpSourceV4 = IPv4Address(dataplane.icmpSource4)!
        configuration.icmpSourceV6 = IPv6Address(dataplane.icmpSource6)!
        configuration.signalHandler = signalHandler
        configuration.extraMetrics = extraMetrics
        let endpoint: TunnelEndpoint<Codec>
        do { endpoint = try TunnelEndpoint(configuration: configuration, logger: logger) } catch {
            throw InputError(message: "\(error)")
        }
        logger.info("\(codec) \(configuration.local) <-> \(configuration.remote) on \(device); inner MTU \(endpoint.innerMTU); offloads granted: \(endpoint.grantedOffloads); UDP GRO \(endpoint.socket.receiveCoalescing ? "on" : "off")")
        try started(endpoint, logger)
        // The device gets the inner MTU, as the kernel's own tunnels do: the gateway's own
        // traffic picks the right MSS, and forwarded packets that cannot fit are refused early.
        try await dataplane.serve(endpoint, routing: setup ? .deviceRoutes(addresses: address, routes: route, nextHops: nextHop) : nil,
                                  deviceMTU: setup ? endpoint.innerMTU : nil, onSIGUSR1: onSIGUSR1, logger: logger)
    }

    /// Works on the captures with `codec`: encapsulates, or with `decapsulate` takes the inner
    /// packets out; prints one line (or JSON). `name` names the protocol in the line.
    func runOffline<Codec: TunnelCodec>(codec: Codec, decapsulate: Bool, name: String) throws {
        guard let input, let output else { return }
        try checkReadable(input)
        let report = try keepingWhatWasRead(of: input, kept: "their result is in \(output)") {
            decapsulate
                ? try TunnelCapture.decapsulate(input: input, output: output, codec: codec)
                : try TunnelCapture.encapsulate(input: input, output: output, codec: codec,
                                                local: IPAddress(local!)!, remote: IPAddress(remote!)!,
                                                underlayMTU: underlayMtu ?? 1500)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
            return
        }
        func list(_ counts: [TunnelDropReason: Int]) -> String {
            let items = counts.filter { $0.value > 0 }.sorted { $0.key.rawValue < $1.key.rawValue }
                .map { "\($0.value) \($0.key.rawValue.replacingOccurrences(of: "_", with: " "))" }
            return items.isEmpty ? "none" : items.joined(separator: ", ")
        }
        let f = report.forwarding
        var line = "\(input) -> \(output): \(report.packetsIn) records in"
        if decapsulate {
            line += ", \(report.written) written; \(report.notTunnel) not \(name), \(report.signalling) signalling; "
                + "refused: " + list(report.dropped)
        } else {
            // In GRO's units: every packet GRO delivered was written or refused, one outcome each.
            line += ", merged by GRO into \(f.gro.packetsOut) packets: \(f.deliveredSentOn) sent on"
                + " (\(report.superPackets) super-packets split per segment, \(report.written) datagrams in all)"
                + ", \(f.deliveredRefused) refused as too big for the tunnel or TTL expired (\(f.icmpSent) ICMP errors "
                + "sent back, \(f.icmpSuppressed) held back by the rate limit), \(f.deliveredNotForwarded) not forwarded"
                + ", refused by the encapsulation: " + list(report.refused)
        }
        line += "; \(report.notIP) not IP, \(report.snapped) cut short"
        print(line)
    }
}

/// `offload tunnel`: a GTP-U or VXLAN tunnel endpoint, live or on captures.
struct Tunnel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A GTP-U or VXLAN tunnel endpoint with GRO and GSO on both sides: live between a TUN/TAP device and UDP (root), or on captures.",
        discussion: """
            Encapsulation: packets routed into --device are merged (GRO; the kernel's own super-packets kept \
            whole), checked against the inner MTU (the underlay's MTU less the tunnel's overhead: "fragmentation \
            needed" / "packet too big" back to the sender when a segment does not fit, never a fragmented outer \
            packet), and sent as one GTP-U datagram per segment (each with its own length field), a whole train \
            per sendmsg with UDP_SEGMENT. Decapsulation: a UDP_GRO socket hands over trains of datagrams; each is \
            validated (version, length, TEID: refused ones are counted, never forwarded) and stripped, the inner \
            packets are merged again and written to --device as super-packets. Echo requests are answered.

            --setup routes each --route prefix into --device and removes the routes at exit. Counters per \
            direction (sendmsg calls, datagrams per sendmsg and per recvmsg, drops by reason) are printed at exit \
            and served by --metrics.

            Offline: with IN OUT, each packet of IN is encapsulated (--local -> --remote; super-packets from \
            offload coalesce become one datagram per segment), or with --decapsulate the inner packets of IN's \
            GTP-U or VXLAN datagrams (as --protocol says) are written.

            For an encrypted tunnel (ESP), see offload ipsec.

            Examples:
              offload tunnel --device gtp0 --local 192.0.2.1 --remote 192.0.2.2 --id 7 --setup --route 10.2.0.0/16
              offload tunnel --local 192.0.2.1 --remote 192.0.2.2 --id 7 inner.pcapng outer.pcap
              offload tunnel --decapsulate --id 7 outer.pcap inner.pcap
            """)

    enum ProtocolOption: String, ExpressibleByArgument, CaseIterable { case gtpu, vxlan }

    // `--mode` is the GRO mode (gro, lro) in every dataplane command, so the tunnel's protocol is `--protocol`.
    @Option(name: .customLong("protocol"),
            help: "gtpu: GTP-U v1 (3GPP TS 29.281) on a TUN device, IP inside. vxlan: VXLAN (RFC 7348) on a TAP device, Ethernet inside.")
    var tunnelProtocol: ProtocolOption = .gtpu
    @Option(help: "The TEID (GTP-U, both directions) or the VNI (VXLAN, 24 bits).")
    var id: UInt32
    @Flag(help: "Put sequence numbers in G-PDUs (the S flag, 4 more bytes of overhead).")
    var sequenceNumbers = false
    @Flag(help: "Offline: take the inner packets out of IN's tunnel datagrams instead.")
    var decapsulate = false
    @OptionGroup var endpoint: TunnelEndpointOptions

    func validate() throws {
        try endpoint.check(needsAddressesOffline: !decapsulate)
        if tunnelProtocol == .vxlan && id > 0xFF_FFFF { throw ValidationError("--id: a VNI has 24 bits (0...16777215)") }
        if tunnelProtocol == .vxlan && sequenceNumbers { throw ValidationError("--sequence-numbers is GTP-U's") }
    }

    func run() async throws {
        switch tunnelProtocol {
        case .gtpu: try await run(codec: GTPUCodec(GTPUSettings(teid: id, sequenceNumbers: sequenceNumbers)), name: "GTP-U")
        case .vxlan: try await run(codec: VXLANCodec(vni: id), name: "VXLAN")
        }
    }

    func run<Codec: TunnelCodec>(codec: Codec, name: String) async throws {
        if endpoint.live {
            try await endpoint.serve(codec: codec, label: "offload.tunnel")
        } else {
            try endpoint.runOffline(codec: codec, decapsulate: decapsulate, name: name)
        }
    }
}
