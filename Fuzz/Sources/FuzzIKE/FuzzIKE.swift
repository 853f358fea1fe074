// The IKEv2 message parser and a responder engine on arbitrary messages. Oracles: no crash; a
// message that parses re-encodes to bytes that parse to the same payloads; an engine answers
// hostile input without growing past its half-open bound, and an established SA's CHILD_SAs are
// never changed by messages it cannot authenticate.
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
        // A fresh responder: IKE_SA_INIT requests and anything else.
        let engine = IKEEngine(connections: config(2, start: "none"))
        engine.cookieThreshold = Int(mode >> 4)
        var n = 0
        var rest = message[...]
        while !rest.isEmpty && n < 16 {
            n += 1
            let length = min(rest.count, Int(rest.first!) * 4 + 1)
            _ = engine.receive(Array(rest.prefix(length)), path: peerPath, now: Double(n))
            rest = rest.dropFirst(length)
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
