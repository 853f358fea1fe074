import Foundation
import OffloadCrypto
import OffloadEngine
import OffloadTestSupport
import OffloadTunnel
import OffloadWire
import Testing

@testable import OffloadIPsec

/// One socket for many peers: each SA goes to its own peer, each sender is checked against the SA
/// its datagram names, and a peer behind a NAT is followed to its new port only by its newest
/// authentic datagram.
@Suite("ESP with many peers: per-SA destinations, sender checks, a peer followed through a NAT rebinding")
struct ESPManyPeersTests {
    static let siteA = UDPEndpoint(.v4(IPv4Address(192, 0, 2, 2)), 4500)
    static let siteB = UDPEndpoint(.v4(IPv4Address(192, 0, 2, 3)), 4500)
    static let natted = UDPEndpoint(.v4(IPv4Address(198, 51, 100, 7)), 40_001)

    /// Two tunnels to two peers: 10.2.0.0/16 behind site A, 10.3.0.0/16 behind site B (which may
    /// move when `bMayMove`). Each end's policy: this end's, and the peers' mirror images.
    static func tunnels(bMayMove: Bool = false) -> [ESPTunnelConfiguration] {
        var a = ESPTunnelConfiguration(name: "a", algorithm: .aesGCM128, localSelectors: [TrafficSelector("10.1.0.0/16")!],
                                       remoteSelectors: [TrafficSelector("10.2.0.0/16")!],
                                       outbound: keys(.aesGCM128, spi: 0x1001, seed: 1), inbound: keys(.aesGCM128, spi: 0x2001, seed: 2))
        a.peer = siteA
        var b = ESPTunnelConfiguration(name: "b", algorithm: .aesGCM128, localSelectors: [TrafficSelector("10.1.0.0/16")!],
                                       remoteSelectors: [TrafficSelector("10.3.0.0/16")!],
                                       outbound: keys(.aesGCM128, spi: 0x1002, seed: 3), inbound: keys(.aesGCM128, spi: 0x2002, seed: 4))
        b.peer = bMayMove ? natted : siteB
        b.peerMayMove = bMayMove
        return [a, b]
    }

    static func packet(from source: String, to destination: String, length: Int = 100) -> [UInt8] {
        var b = PacketBuilder()
        b.link = .raw
        b.source = .v4(IPv4Address(source)!)
        b.destination = .v4(IPv4Address(destination)!)
        b.payloadLength = length
        return b.frame()
    }

    /// What peer `index` sends this end: datagrams sealed with the mirror image of tunnel `index`.
    static func fromPeer(_ index: Int, count: Int, tunnels: [ESPTunnelConfiguration]) throws -> [[UInt8]] {
        let mirror = try ESPSecurityPolicy(tunnels: [tunnels[index].reversed], store: nil)
        var encapsulator = try TunnelEncapsulator(codec: ESPCodec(policy: mirror))
        let source = index == 0 ? "10.2.0.5" : "10.3.0.5"
        return try (0..<count).flatMap { _ in try encrypt(packet(from: source, to: "10.1.0.9"), with: &encapsulator) }
    }

    static func open(_ decoder: inout ESPCodec.Decoder, _ datagram: [UInt8], from source: UDPEndpoint) -> TunnelDatagram {
        var copy = datagram
        return copy.withUnsafeMutableBytes { decoder.decode($0, from: source) }
    }

    @Test("each packet goes to the peer of the SA its selectors chose, in one socket's sends")
    func destinations() throws {
        let policy = try ESPSecurityPolicy(tunnels: Self.tunnels(), store: nil)
        #expect(policy.servesManyPeers, "tunnels that name their peers share one unconnected socket")
        let output = RecordingOutput()
        let sink = try TunnelSink(output: output, codec: ESPCodec(policy: policy), logger: .init(label: "test"))
        for destination in ["10.2.0.1", "10.3.0.1", "10.2.0.2"] {
            let p = Self.packet(from: "10.1.0.9", to: destination)
            try p.withUnsafeBytes { raw in
                try withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: 1) { pieces in
                    pieces[0] = raw
                    try sink.write(header: nil, pieces: UnsafeBufferPointer(pieces))
                }
            }
        }
        #expect(output.datagrams.count == 3)
        #expect(output.destinations == [Self.siteA, Self.siteB, Self.siteA])
        // And each datagram carries the SPI of that peer's SA.
        #expect(output.datagrams.map { $0.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) } } == [0x1001, 0x1002, 0x1001])
    }

    @Test("an authentic datagram of site A's SA sent from site B's address is refused as wrong_peer, and leaves the window as it was")
    func wrongPeer() throws {
        let tunnels = Self.tunnels()
        let policy = try ESPSecurityPolicy(tunnels: tunnels, store: nil)
        var decoder = try ESPCodec(policy: policy).makeDecoder()
        let fromA = try Self.fromPeer(0, count: 2, tunnels: tunnels)
        #expect(Self.open(&decoder, fromA[0], from: Self.siteB) == .drop(.wrongPeer))
        #expect(Self.open(&decoder, fromA[0], from: UDPEndpoint(Self.siteA.address, 4501)) == .drop(.wrongPeer),
                "another port of the same address is another sender")
        // The window did not move: the same datagram from its peer is still new.
        guard case .packet = Self.open(&decoder, fromA[0], from: Self.siteA) else {
            Issue.record("the peer's own datagram was refused after a copy from elsewhere")
            return
        }
        guard case .packet = Self.open(&decoder, fromA[1], from: Self.siteA) else {
            Issue.record("the peer's next datagram was refused")
            return
        }
        #expect(policy.takePeerMoves().isEmpty)
        // Site B's own SA from site B: fine.
        let fromB = try Self.fromPeer(1, count: 1, tunnels: tunnels)
        guard case .packet = Self.open(&decoder, fromB[0], from: Self.siteB) else {
            Issue.record("site B's datagram was refused")
            return
        }
        // Nobody moved: encoders still send to where the tunnels say.
        #expect(policy.generation.locations.map(\.endpoint) == [Self.siteA, Self.siteB])
    }

    @Test("a peer behind a NAT that rebinds is followed by its newest authentic datagram only; forgeries and older ones do not move it")
    func natRebinding() throws {
        let tunnels = Self.tunnels(bMayMove: true)
        let policy = try ESPSecurityPolicy(tunnels: tunnels, store: nil)
        var decoder = try ESPCodec(policy: policy).makeDecoder()
        let fromB = try Self.fromPeer(1, count: 4, tunnels: tunnels)
        let rebound = UDPEndpoint(Self.natted.address, 40_777)
        guard case .packet = Self.open(&decoder, fromB[0], from: Self.natted), case .packet = Self.open(&decoder, fromB[2], from: Self.natted)
        else {
            Issue.record("datagrams from the peer's place were refused")
            return
        }
        // A forged datagram (one bit flipped) from a new port: refused, nothing moves.
        var forged = fromB[3]
        forged[forged.count - 20] ^= 1
        #expect(Self.open(&decoder, forged, from: rebound) == .drop(.badICV))
        #expect(policy.generation.locations[1].endpoint == Self.natted)
        // An authentic but older datagram (number 2 < 3) from the new port: not the newest, refused.
        #expect(Self.open(&decoder, fromB[1], from: rebound) == .drop(.wrongPeer))
        #expect(policy.generation.locations[1].endpoint == Self.natted)
        // The newest one from the new port: the peer moved there, and the move is reported once.
        guard case .packet = Self.open(&decoder, fromB[3], from: rebound) else {
            Issue.record("the peer's newest datagram from its new port was refused")
            return
        }
        #expect(policy.generation.locations[1].endpoint == rebound)
        #expect(policy.takePeerMoves() == [ESPPeerMove(inboundSPI: 0x2002, endpoint: rebound)])
        #expect(policy.takePeerMoves().isEmpty)
        // What this end sends to that peer goes to the new port now.
        var encoder = try ESPCodec(policy: policy).makeEncoder()
        let p = Self.packet(from: "10.1.0.9", to: "10.3.0.1")
        let refusal = p.withUnsafeBytes { encoder.begin(headers: $0, datagrams: 1) }
        #expect(refusal == nil && encoder.destination == rebound)
        // Site A (no NAT) never moves, even with its newest datagram.
        let fromA = try Self.fromPeer(0, count: 1, tunnels: tunnels)
        #expect(Self.open(&decoder, fromA[0], from: rebound) == .drop(.wrongPeer))
        #expect(policy.generation.locations[0].endpoint == Self.siteA)
    }

    @Test("the control plane's word on where a peer is (a new SA set) moves the location the encoders read; SAs that stay keep theirs")
    func controlPlaneMoves() throws {
        var tunnels = Self.tunnels(bMayMove: true)
        let policy = try ESPSecurityPolicy(tunnels: tunnels, store: nil)
        let location = policy.generation.locations[1]
        let elsewhere = UDPEndpoint(Self.natted.address, 50_000)
        tunnels[1].peer = elsewhere
        try policy.replace(tunnels)
        #expect(policy.generation.locations[1] === location, "the SA stays: one location object")
        #expect(location.endpoint == elsewhere)
        #expect(policy.generation.locations[0].endpoint == Self.siteA)
    }

    @Test("one peer (no SA names its peer): the socket stays connected and nothing is checked by sender")
    func onePeer() throws {
        var t = Self.tunnels()[0]
        t.peer = nil
        let policy = try ESPSecurityPolicy(tunnels: [t], store: nil)
        #expect(!policy.servesManyPeers && !ESPCodec(policy: policy).servesManyPeers)
        var decoder = try ESPCodec(policy: policy).makeDecoder()
        let fromA = try Self.fromPeer(0, count: 1, tunnels: [t])
        guard case .packet = Self.open(&decoder, fromA[0], from: Self.siteB) else {
            Issue.record("a connected socket's datagram was refused by sender")
            return
        }
    }
}

extension ESPManyPeersTests {
    @Test("refusals once the SA is known are counted for that SA (status per CHILD_SA)")
    func perSARefusals() throws {
        let tunnels = Self.tunnels()
        let policy = try ESPSecurityPolicy(tunnels: tunnels, store: nil)
        var decoder = try ESPCodec(policy: policy).makeDecoder()
        let fromA = try Self.fromPeer(0, count: 1, tunnels: tunnels)
        #expect(Self.open(&decoder, fromA[0], from: Self.siteB) == .drop(.wrongPeer))
        guard case .packet = Self.open(&decoder, fromA[0], from: Self.siteA) else {
            Issue.record("refused from its peer")
            return
        }
        #expect(Self.open(&decoder, fromA[0], from: Self.siteA) == .drop(.replay))
        let counters = try #require(policy.counters(spi: 0x2001, inbound: true))
        #expect(counters.drops == [.wrongPeer: 1, .replay: 1])
        #expect(policy.counters(spi: 0x2002, inbound: true)?.drops.isEmpty == true, "the other peer's SA counted nothing")
    }
}
