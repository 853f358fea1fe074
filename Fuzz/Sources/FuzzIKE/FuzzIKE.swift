// The IKEv2 message parser and a responder engine on arbitrary messages. Oracles: no crash; a
// message that parses re-encodes to bytes that parse to the same payloads; an engine answers
// hostile input without growing past its half-open bound, and an established SA's CHILD_SAs are
// never changed by messages it cannot authenticate.
//
// Mode 1 with bit 0x08 set: the responder is a hub (connections for an exact address, a prefix,
// and %any with different identities, selectors with protocols and ports), and each message
// comes from a source the input picks (an address inside or outside each connection's
// remote_addrs, IPv6 too, any port), so that the choice of connection by address and the
// half-open SAs of many peers run. Oracle: an IKE_SA_INIT from an address no connection accepts is
// never answered.
import FuzzDriver
import FuzzSupport
import OffloadIKE
import OffloadIPsec
import OffloadWire

func config(_ me: Int, start: String) -> [IKEConnection] {
    let peer = 3 - me
    return try! IKEConfig.parse("""
        connections {
          c {
            local_addrs = 192.0.2.\(me)
            remote_addrs = 192.0.2.\(peer)
            local { auth = psk
              id = gw\(me) }
            remote { auth = psk
              id = gw\(peer) }
            children { n {
              local_ts = 10.\(me).0.0/16
              remote_ts = 10.\(peer).0.0/16
              start_action = \(start) } }
          }
        }
        secrets { ike { secret = fuzz-psk } }
        """)
}

/// An established pair: the initiator's first request bytes (for valid-looking headers) and the responder.
func establishedResponder() -> (IKEEngine, [UInt8]) {
    let a = IKEEngine(connections: config(1, start: "start")), b = IKEEngine(connections: config(2, start: "none"))
    let toB = IKEPath(localPort: 4500, remote: IPAddress("192.0.2.1")!, remotePort: 4500)
    let toA = IKEPath(localPort: 4500, remote: IPAddress("192.0.2.2")!, remotePort: 4500)
    var messages = a.start(now: 0).map { ($0.bytes, true) }
    var last: [UInt8] = []
    var steps = 0
    while let (bytes, forB) = messages.first, steps < 10 {
        messages.removeFirst()
        steps += 1
        if forB { last = bytes }
        messages += (forB ? b.receive(bytes, path: toB, now: 0) : a.receive(bytes, path: toA, now: 0)).map { ($0.bytes, !forB) }
    }
    return (b, last)
}

/// A hub at 192.0.2.1: site A at one address, site B in a prefix, road warriors from anywhere by
/// identity (one named, one any), their selectors with protocols and ports.
nonisolated(unsafe) let hubConnections = try! IKEConfig.parse("""
    connections {
      siteA { local_addrs = 192.0.2.1
        remote_addrs = 192.0.2.2
        local { auth = psk
          id = hub }
        remote { auth = psk
          id = siteA }
        children { net { local_ts = 10.0.0.0/24[tcp/80], 10.0.0.0/24[udp/53]
            remote_ts = 10.1.0.0/24 } } }
      siteB { local_addrs = 192.0.2.1
        remote_addrs = 198.51.100.0/24, 192.0.2.3
        local { auth = psk
          id = hub }
        remote { auth = psk
          id = siteB }
        children { net { local_ts = 10.0.0.0/16
            remote_ts = 10.2.0.0/16[udp/1000-2000] } } }
      carol { local_addrs = 192.0.2.1
        local { auth = psk
          id = hub }
        remote { auth = psk
          id = carol@example.org }
        children { net { local_ts = 10.0.0.0/16[tcp]
            remote_ts = 10.99.0.0/16 } } }
      anyone { local_addrs = 192.0.2.1
        remote_addrs = %any
        local { auth = psk
          id = hub }
        remote { auth = psk
          id = * }
        children { net { local_ts = 10.0.0.0/8
            remote_ts = 10.98.0.0/16[tcp/1024-65535] } } }
    }
    secrets {
      ike-a { id = siteA
        secret = psk-a }
      ike-b { id = siteB
        secret = psk-b }
      ike-c { id = carol@example.org
        secret = psk-c }
      ike-any { id = *
        secret = psk-any }
    }
    """)
let hubSources = ["192.0.2.2", "192.0.2.3", "198.51.100.9", "203.0.113.5", "2001:db8::5", "192.0.2.1", "0.0.0.0"].map { IPAddress($0)! }

nonisolated(unsafe) let established = establishedResponder()
let peerPath = IKEPath(localPort: 4500, remote: IPAddress("192.0.2.1")!, remotePort: 4500)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzIKE(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = FuzzInput(data, size)
    let mode = input.byte()
    var message = input.take(input.remaining)
    switch mode % 3 {
    case 0:
        // The parser alone; a good header is written over the first bytes half the time.
        if mode & 0x80 != 0, message.count >= 28 {
            message[17] = 0x20
            message[24..<28] = ArraySlice(withUnsafeBytes(of: UInt32(message.count).bigEndian) { Array($0) })
        }
        guard let parsed = try? IKEPlainMessage(parsing: message), !parsed.encrypted else { return 0 }
        let again = IKEPlainMessage.encode(header: parsed.header, payloads: parsed.payloads)
        guard let reparsed = try? IKEPlainMessage(parsing: again) else { oracleFailure("a parsed message re-encodes to bytes that do not parse") }
        if reparsed.payloads != parsed.payloads { oracleFailure("payloads changed through a round trip") }
    case 1:
        // A fresh responder: IKE_SA_INIT requests and anything else (a hub's, from sources the input picks).
        let hub = mode & 0x08 != 0
        let engine = IKEEngine(connections: hub ? hubConnections : config(2, start: "none"))
        engine.cookieThreshold = Int(mode >> 4)
        var n = 0
        var rest = message[...]
        while !rest.isEmpty && n < 16 {
            n += 1
            var path = peerPath
            if hub && rest.count >= 3 {
                let source = rest.removeFirst(), high = rest.removeFirst(), low = rest.removeFirst()
                path = IKEPath(localPort: source & 0x80 != 0 ? 500 : 4500, remote: hubSources[Int(source & 0x7F) % hubSources.count],
                               remotePort: UInt16(high) << 8 | UInt16(low))
            }
            guard let first = rest.first else { break }
            let length = min(rest.count, Int(first) * 4 + 1)
            let bytes = Array(rest.prefix(length))
            let out = engine.receive(bytes, path: path, now: Double(n))
            rest = rest.dropFirst(length)
            if hub, !engine.connections.contains(where: { $0.remoteAddrs.rank(path.remote) != nil }),
               let h = try? IKEHeader(parsing: bytes), h.exchange == IKEExchange.ikeSAInit.rawValue, !h.isResponse, !out.isEmpty,
               out.contains(where: { (try? IKEPlainMessage(parsing: $0.bytes))?.payloads.contains(where: { if case .securityAssociation = $0 { true } else { false } }) == true }) {
                oracleFailure("an IKE_SA_INIT from \(path), which no connection accepts, answered with an SA")
            }
        }
        if engine.childSAs.count > 0 { oracleFailure("a CHILD_SA from unauthenticated input") }
    default:
        // An established SA: messages with its SPIs, never authentic.
        let (engine, template) = established
        let before = engine.childSAs.map(\.inbound)
        if message.count >= 28, template.count >= 16 {
            message.replaceSubrange(0..<16, with: template[0..<16])
            message[17] = 0x20
            message[24..<28] = ArraySlice(withUnsafeBytes(of: UInt32(message.count).bigEndian) { Array($0) })
        }
        _ = engine.receive(message, path: peerPath, now: 1)
        if engine.childSAs.map(\.inbound) != before { oracleFailure("an unauthenticated message changed the CHILD_SAs") }
    }
    return 0
}

/// The entry point SwiftPM links as `main`: libFuzzer's driver.
@_cdecl("FuzzIKE_main")
public func fuzzIKEMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    fuzz_driver_main(argc, argv)
}
