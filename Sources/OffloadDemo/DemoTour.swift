import Logging
import OffloadCapture
import OffloadCrypto
import OffloadEngine
import OffloadForwarder
import OffloadIKE
import OffloadIPsec
import OffloadNAT64
import OffloadSIIT
import OffloadTunnel
import OffloadWire

/// The checks behind `offload demo`, without devices or root: a merged capture through the
/// forwarder's pipeline, the SIIT translator, a GTP-U tunnel and an ESP tunnel, each compared with
/// what it must give. The command only prints these facts.
public enum DemoTour {
    /// What the forwarding pipeline (identity stage, recorders for devices) did with the packets.
    public struct Forwarding: Sendable, Hashable {
        /// The egress MTU it decided on.
        public var egressMTU: Int
        /// Packets in, and written to the egress.
        public var packetsIn: Int, written: Int
        /// Of those written, super-packets that went whole with their GSO facts.
        public var superPacketsWhole: Int
        /// Too big with DF: dropped, with ICMP errors back (and those the rate limit held back).
        public var dropped: Int, icmpSent: Int, icmpSuppressed: Int
    }

    /// Runs the frames (Ethernet, as generated) through the forwarder's stage pipeline with the
    /// identity stage, writing into recorders instead of devices.
    public static func forward(_ frames: [SyntheticTraffic.Frame], egressMTU: Int) -> Forwarding {
        var pipeline = ForwardingPipeline(direction: .lanToWan, gro: GROConfiguration(), egressMTU: egressMTU,
                                          icmpSourceV4: IPv4Address(192, 0, 2, 254),
                                          icmpSourceV6: IPv6Address(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe),
                                          virtioHeaders: true, stage: IdentityStage(), logger: Logger(label: "demo"))
        let egress = RecordingSink()
        let back = RecordingSink()
        var batch = PacketBatch(packetCapacity: 64, byteCapacity: 64 * 2048)
        for start in stride(from: 0, to: frames.count, by: 64) {
            batch.removeAll()
            for f in frames[start..<min(start + 64, frames.count)] {
                batch.append(Array(f.bytes.dropFirst(14)), metadata: PacketMetadata(linkType: .raw, checksum: .verified))
            }
            pipeline.process(batch, now: frames[start].timestamp, egress: egress, back: back)
        }
        let s = pipeline.snapshot
        return Forwarding(egressMTU: egressMTU, packetsIn: frames.count, written: egress.writes.count,
                          superPacketsWhole: egress.writes.compactMap(\.header).filter { $0.gsoSize > 0 }.count,
                          dropped: s.dropped, icmpSent: s.icmpSent, icmpSuppressed: s.icmpSuppressed)
    }

    /// What the translator and the two tunnels did with the merged capture.
    public struct Tunnels: Sendable {
        /// The SIIT translation (IPv4 to IPv6).
        public var siit: SIITCaptureReport
        /// The stateful NAT64's exchange (``nat64Exchange()``).
        public var nat64: NAT64Exchange
        /// GTP-U: encapsulated, then decapsulated; whether the packets came back as restored.
        public var gtpu: TunnelCaptureReport, gtpuBack: TunnelCaptureReport, gtpuIntact: Bool
        /// ESP (AES-GCM-128) with keys two IKEv2 engines negotiated in memory for this run, likewise.
        public var esp: TunnelCaptureReport, espBack: TunnelCaptureReport, espIntact: Bool
        /// The IKEv2 negotiation: messages exchanged, and the CHILD_SA as the sending end has it.
        public var ikeMessages: Int, child: IKEChildSA
        /// The responder is a hub: the peers it served in this run (each its own CHILD_SA), by address and port.
        public var hubPeers: [UDPEndpoint]
    }

    /// The files ``translateAndTunnel(merged:restored:directory:)`` writes, in `directory`.
    public static let files = (ipv6: "demo-ipv6.pcap", gtpu: "demo-gtpu.pcap", gtpuInner: "demo-decapsulated.pcap",
                               esp: "demo-esp.pcap", espInner: "demo-esp-decrypted.pcap")
    /// The NAT64's pool4 address, which every IPv6 host of the demo shares.
    public static let pool4 = "198.51.100.1"
    /// The translator's prefix.
    public static let prefix = RFC6052Prefix("2001:db8:64::/96")!

    /// The merged capture through the SIIT translator (IPv4 to IPv6), and through a GTP-U and an
    /// ESP tunnel and back, each compared with what `offload segment` restored (two hops older:
    /// both gateways forward as routers do).
    public static func translateAndTunnel(merged: String, restored: String, directory: String) throws -> Tunnels {
        let ipv6 = "\(directory)/\(files.ipv6)"
        let siit = try SIITCapture.translate(input: merged, output: ipv6, configuration: SIITConfiguration(pool6: prefix))
        let nat64 = nat64Exchange()
        // The tunnel carries IP packets: the restored frames less their Ethernet header.
        var expected: [[UInt8]] = []
        var reader = try CaptureReader(path: restored)
        while let r = try reader.next() {
            if let (n, _) = try? PacketLayout.linkHeader(r.bytes.span.bytes, linkType: r.linkType) {
                expected.append(Array(r.bytes[n...]))
            }
        }
        let wanted = older(expected, hops: 2)
        // The capture's packets are 1500 bytes: the underlay has room for them and the tunnel's
        // headers (over a 1500-byte underlay the live decision would send "fragmentation needed").
        let local = IPAddress.v4(IPv4Address(192, 0, 2, 1)), remote = IPAddress.v4(IPv4Address(192, 0, 2, 2))
        func roundTrip<Codec: TunnelCodec>(_ codec: Codec, farEnd: Codec? = nil, outer: String, inner: String) throws
            -> (TunnelCaptureReport, TunnelCaptureReport, Bool)
        {
            let there = try TunnelCapture.encapsulate(input: merged, output: outer, codec: codec, local: local, remote: remote,
                                                      underlayMTU: 1600)
            let back = try TunnelCapture.decapsulate(input: outer, output: inner, codec: farEnd ?? codec)
            var got: [[UInt8]] = []
            var r = try CaptureReader(path: inner)
            while let p = try r.next() { got.append(p.bytes) }
            return (there, back, got.sorted { $0.lexicographicallyPrecedes($1) } == wanted)
        }
        let (gtpu, gtpuBack, gtpuIntact) = try roundTrip(GTPUCodec(GTPUSettings(teid: 7)), outer: "\(directory)/\(files.gtpu)",
                                                          inner: "\(directory)/\(files.gtpuInner)")
        // ESP with keys negotiated by two IKEv2 engines in memory, for this run only (they never
        // leave this machine, so no sequence numbers need keeping).
        let psk = randomBytes(24).map { String(format: "%02x", $0) }.joined()
        func engine(_ me: Int, start: String, remote: String? = nil, peerID: String? = nil) throws -> IKEEngine {
            IKEEngine(connections: try IKEConfig.parse("""
                connections { demo {
                  local_addrs = 192.0.2.\(me)
                  remote_addrs = \(remote ?? "192.0.2.\(3 - me)")
                  proposals = aes128gcm16-prfsha256-x25519
                  local { auth = psk
                    id = gw\(me) }
                  remote { auth = psk
                    id = \(peerID ?? "gw\(3 - me)") }
                  children { all {
                    local_ts = 0.0.0.0/0, ::/0
                    remote_ts = 0.0.0.0/0, ::/0
                    esp_proposals = aes128gcm16-esn
                    start_action = \(start) } } } }
                secrets { ike { secret = 0x\(psk) } }
                """))
        }
        // The responder is a hub (`remote_addrs = %any`): a second peer, from another address,
        // gets its own CHILD_SA beside the first's.
        let hub = try engine(2, start: "none", remote: "%any", peerID: "%any")
        guard let negotiated = IKEEngine.negotiateInMemory(initiator: try engine(1, start: "start"), responder: hub),
              IKEEngine.negotiateInMemory(initiator: try engine(3, start: "start", remote: "192.0.2.2", peerID: "gw2"), responder: hub) != nil
        else { throw DemoError("the IKEv2 engines did not agree") }
        let sender = try ESPSecurityPolicy(tunnels: [negotiated.initiator.tunnel], store: nil)
        let receiver = try ESPSecurityPolicy(tunnels: [negotiated.responder.tunnel], store: nil)
        let (esp, espBack, espIntact) = try roundTrip(ESPCodec(policy: sender), farEnd: ESPCodec(policy: receiver),
                                                       outer: "\(directory)/\(files.esp)", inner: "\(directory)/\(files.espInner)")
        return Tunnels(siit: siit, nat64: nat64, gtpu: gtpu, gtpuBack: gtpuBack, gtpuIntact: gtpuIntact, esp: esp,
                       espBack: espBack, espIntact: espIntact, ikeMessages: negotiated.messages, child: negotiated.initiator,
                       hubPeers: hub.activeChildSAs.compactMap(\.peer).sorted { $0.description < $1.description })
    }

    /// What the stateful NAT64 did with four IPv6 hosts' TCP connections.
    public struct NAT64Exchange: Sendable {
        /// IPv6 hosts, and the distinct IPv4 addresses and ports the server saw them from.
        public var hosts: Int, addressesSeen: Int, portsSeen: Int
        /// Super-packets from the hosts (each looked up and translated once), and the IPv4 segments they became.
        public var superPackets: Int, segmentsOut: Int
        /// Whether every packet that came back to a host carried its own address and port.
        public var repliesReachedHosts: Bool
        /// TCP sessions established at the end.
        public var established: Int
    }

    /// Four IPv6-only hosts each open a TCP connection to an IPv4 server through the stateful NAT64
    /// (pool4 ``pool4``), the server answers, and each host sends a GRO super-packet of 16
    /// segments: looked up once, its session refreshed once, translated once.
    public static func nat64Exchange() -> NAT64Exchange {
        var dataplane = NAT64OfflineDataplane(configuration: NAT64Configuration(pool4: [Pool4Entry(pool4)!], pool6: prefix))
        let server = IPv4Address(203, 0, 113, 20)
        var result = NAT64Exchange(hosts: 4, addressesSeen: 0, portsSeen: 0, superPackets: 0, segmentsOut: 0,
                                   repliesReachedHosts: true, established: 0)
        var seen: Set<String> = []
        var now: UInt64 = 1_000_000
        for h in 1...4 {
            let host = IPv6Address(0x2001, 0xdb8, 1, 0, 0, 0, 0, UInt16(h))
            func fromHost(_ flags: TCPFlags, sequence: UInt32, payload: Int) -> PacketBuilder {
                var b = PacketBuilder()
                b.link = .raw
                b.source = .v6(host)
                b.destination = .v6(prefix.embedding(server))
                b.sourcePort = 40_000 + UInt16(h)
                b.destinationPort = 443
                b.flags = flags
                b.sequence = sequence
                b.payloadLength = payload
                return b
            }
            now += 1_000_000
            guard let syn = dataplane.translate(fromHost(.syn, sequence: 0, payload: 0).frame(), now: now).forwarded.first
            else { result.repliesReachedHosts = false; continue }
            let address = IPv4Address(syn, 12), port = syn.loadBigEndian(UInt16.self, at: 20)
            seen.insert("\(address)")
            var reply = PacketBuilder()
            reply.link = .raw
            reply.source = .v4(server)
            reply.destination = .v4(address)
            reply.sourcePort = 443
            reply.destinationPort = port
            reply.flags = [.syn, .ack]
            reply.payloadLength = 0
            now += 1_000_000
            let back = dataplane.translate(reply.frame(), now: now).forwarded.first
            if back.map({ IPv6Address($0, 24) != host || $0.loadBigEndian(UInt16.self, at: 40 + 2) != 40_000 + UInt16(h) }) ?? true {
                result.repliesReachedHosts = false
            }
            // 16 segments merged by the GRO engine, as the kernel or this project's GRO hands them over.
            var engine = GROEngine()
            var batch = PacketBatch(packetCapacity: 16, byteCapacity: 1 << 20)
            for i in 0..<16 {
                batch.append(fromHost(.ack, sequence: 1 + UInt32(i * 1400), payload: 1400).frame(),
                             metadata: PacketMetadata(linkType: .raw))
            }
            engine.coalesce(batch)
            guard engine.outputCount == 1, let gso = engine.output(at: 0).metadata.gso else { continue }
            now += 1_000_000
            let out = dataplane.translate(engine.outputBytes(at: 0), gso: gso, now: now).forwarded
            result.segmentsOut += out.count
            for segment in out { seen.insert("\(IPv4Address(segment, 12)):\(segment.loadBigEndian(UInt16.self, at: 20))") }
        }
        result.addressesSeen = seen.filter { !$0.contains(":") }.count
        result.portsSeen = seen.filter { $0.contains(":") }.count
        result.superPackets = dataplane.translation.superPackets
        result.established = dataplane.state.snapshot(now: now).entries.flatMap(\.sessions).filter { $0.state == "ESTABLISHED" }.count
        return result
    }

    /// The packets `hops` routers later (TTL or hop limit lowered), sorted: flows may interleave
    /// differently on the way.
    static func older(_ packets: [[UInt8]], hops: Int) -> [[UInt8]] {
        packets.map { packet in
            var p = packet
            for _ in 0..<hops { _ = RouterHeaders.decrementTTL(&p, networkOffset: 0) }
            return p
        }.sorted { $0.lexicographicallyPrecedes($1) }
    }
}

/// The demo could not go on.
public struct DemoError: Error, CustomStringConvertible {
    /// Why.
    public var description: String
    init(_ description: String) { self.description = description }
}
