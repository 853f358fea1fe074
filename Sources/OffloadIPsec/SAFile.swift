import Foundation
import OffloadCrypto
import OffloadWire

#if canImport(Glibc)
    import Glibc
#endif

/// One direction's SA of a manually keyed tunnel: what `ip xfrm state` holds.
///
/// The key and salt are ``SecretBytes``: wiped when the last copy of the SA goes, and never
/// printed (`<secret, N bytes>` where they would be). Two SAs are equal when their SPIs are and
/// their keys and salts are (compared in constant time); the type is not `Hashable`.
public struct ESPSAKeys: Equatable, Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The SPI (the receiver's choice; 256 and up, RFC 4303 §2.1).
    public var spi: UInt32
    /// The key, without the salt.
    public var key: SecretBytes
    /// The salt: the last 4 bytes of the key material (RFC 4106 §8.1, RFC 7634 §2).
    public var salt: SecretBytes

    /// The key material as `ip xfrm` and Wireshark take it: key ‖ salt (a new secret each time).
    public var keyMaterial: SecretBytes { key + salt }

    /// An SA's keys.
    public init(spi: UInt32, key: SecretBytes, salt: SecretBytes) {
        self.spi = spi
        self.key = key
        self.salt = salt
    }

    /// An SA's keys from key material, key ‖ salt (the last 4 bytes).
    public init(spi: UInt32, material: SecretBytes) {
        self.init(spi: spi, key: material.prefix(material.count - ESPAlgorithm.saltLength),
                  salt: material.suffix(ESPAlgorithm.saltLength))
    }

    /// An SA's keys, copied from arrays (for tests and tools; the arrays are the caller's to drop).
    public init(spi: UInt32, key: [UInt8], salt: [UInt8]) {
        self.init(spi: spi, key: SecretBytes(key), salt: SecretBytes(salt))
    }

    /// The same SPI, key and salt (the bytes compared in constant time).
    public static func == (a: ESPSAKeys, b: ESPSAKeys) -> Bool {
        a.spi == b.spi && a.key.isEqual(to: b.key) && a.salt.isEqual(to: b.salt)
    }

    /// `ESPSAKeys(spi: 0x00001001, key: <secret, 16 bytes>, salt: <secret, 4 bytes>)`.
    public var description: String {
        "ESPSAKeys(spi: 0x\(String(spi, radix: 16)), key: \(key), salt: \(salt))"
    }
    /// The same as ``description``.
    public var debugDescription: String { description }
    /// The SPI, and the key and salt as their redacted descriptions.
    public var customMirror: Mirror {
        Mirror(self, children: ["spi": spi, "key": key.description, "salt": salt.description], displayStyle: .struct)
    }
}

/// A traffic selector (RFC 4301 §4.4.1.1, RFC 7296 §3.13.1): an address prefix of either family,
/// an IP protocol (0: any) and a range of ports (0...65535: any), written as strongSwan's
/// swanctl.conf writes it: `10.1.0.0/16`, `10.2.0.10/32[tcp/5201]`, `fd00::/8[udp/1024-2048]`,
/// `10.0.0.0/8[tcp]` (every port of a protocol).
///
/// Ports are only for the protocols whose header starts with them (TCP, UDP, SCTP, UDP-Lite,
/// DCCP). ICMP's type and code, which swanctl also writes in the port field, are refused: a
/// selector names `[icmp]` or `[ipv6-icmp]` whole, or not at all.
public struct TrafficSelector: Hashable, Sendable, CustomStringConvertible {
    /// An address prefix of either family.
    public enum Prefix: Hashable, Sendable, CustomStringConvertible {
        /// IPv4 addresses.
        case v4(IPv4Prefix)
        /// IPv6 addresses.
        case v6(IPv6Prefix)

        /// The prefix length.
        public var length: Int {
            switch self {
            case .v4(let p): p.length
            case .v6(let p): p.length
            }
        }

        /// Whether the address is inside.
        @inlinable public func contains(_ address: IPAddress) -> Bool {
            switch (self, address) {
            case (.v4(let p), .v4(let a)): p.contains(a)
            case (.v6(let p), .v6(let a)): p.contains(a)
            default: false
            }
        }

        /// `10.0.0.0/8`.
        public var description: String {
            switch self {
            case .v4(let p): p.description
            case .v6(let p): p.description
            }
        }
    }

    /// Why a selector's text was refused (the text, and what is wrong with it).
    public struct SyntaxError: Error, Hashable, Sendable, CustomStringConvertible {
        /// The message.
        public var description: String
        init(_ message: String) { description = message }
    }

    /// Every port.
    public static let allPorts: ClosedRange<UInt16> = 0...65_535

    /// The addresses.
    public var prefix: Prefix
    /// The IP protocol (IPv6: after the extension headers); 0: any.
    public var ipProtocol: UInt8
    /// The ports (on the side this selector stands for: source for the sender's, destination for
    /// the receiver's); ``allPorts`` for any.
    public var ports: ClosedRange<UInt16>

    /// A selector.
    public init(_ prefix: Prefix, ipProtocol: UInt8 = 0, ports: ClosedRange<UInt16> = TrafficSelector.allPorts) {
        self.prefix = prefix
        self.ipProtocol = ipProtocol
        self.ports = ports
    }

    /// IPv4 addresses, any protocol and port.
    public static func v4(_ prefix: IPv4Prefix) -> TrafficSelector { TrafficSelector(.v4(prefix)) }
    /// IPv6 addresses, any protocol and port.
    public static func v6(_ prefix: IPv6Prefix) -> TrafficSelector { TrafficSelector(.v6(prefix)) }

    /// Parses a selector (see the type's description); nil when it is not one
    /// (``parse(_:)`` says why).
    public init?(_ text: some StringProtocol) {
        guard let s = try? Self.parse(text) else { return nil }
        self = s
    }

    /// The protocols known by name, with their numbers (strongSwan's names, and `icmpv6`).
    public static let protocolNames: [(name: String, number: UInt8)] = [
        ("tcp", 6), ("udp", 17), ("icmp", 1), ("ipv6-icmp", 58), ("icmpv6", 58), ("sctp", 132), ("udplite", 136), ("dccp", 33),
    ]

    /// Parses `PREFIX`, `PREFIX[PROTO]`, `PREFIX[PROTO/PORT]`, `PREFIX[PROTO/LOW-HIGH]` or
    /// `PREFIX[PROTO/%any]`: the prefix `10.0.0.0/8`, `fd00::/8` or an address alone (a /32 or
    /// /128); the protocol a name (`tcp`, `udp`, `icmp`, `ipv6-icmp` or `icmpv6`, `sctp`,
    /// `udplite`, `dccp`), a number 0...255, or `any` / `%any` (0); the port a number, a range, or
    /// `any` / `%any`.
    /// - Throws: ``SyntaxError`` naming what is wrong: a port without a protocol (RFC 7296
    ///   §3.13.1: ports belong to a protocol), a port for a protocol without ports, ICMP type and
    ///   code, `opaque` ports, service names.
    public static func parse(_ text: some StringProtocol) throws(SyntaxError) -> TrafficSelector {
        let t = text.trimmingCharacters(in: .whitespaces)
        var addressText = Substring(t), bracket: Substring?
        if let open = t.firstIndex(of: "[") {
            guard t.hasSuffix("]") else { throw SyntaxError("`\(t)`: a protocol/port selector ends with `]`") }
            addressText = t[..<open]
            bracket = t[t.index(after: open)..<t.index(before: t.endIndex)]
        }
        let a = addressText.trimmingCharacters(in: .whitespaces)
        let prefix: Prefix
        if let p = IPv4Prefix(a) {
            prefix = .v4(p)
        } else if let p = IPv6Prefix(a) {
            prefix = .v6(p)
        } else if let x = IPv4Address(a), let p = IPv4Prefix(x, length: 32) {
            prefix = .v4(p)
        } else if let x = IPv6Address(a), let p = IPv6Prefix(x, length: 128) {
            prefix = .v6(p)
        } else {
            throw SyntaxError("`\(t)` is not a prefix (10.0.0.0/8, fd00::/8 or an address; host bits zero), "
                + "optionally followed by [protocol/port]")
        }
        guard let bracket else { return TrafficSelector(prefix) }
        let parts = bracket.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        let protocolText = parts[0]
        var ipProtocol: UInt8 = 0
        if protocolText.isEmpty || protocolText == "any" || protocolText == "%any" {
            ipProtocol = 0
        } else if let known = protocolNames.first(where: { $0.name == protocolText }) {
            ipProtocol = known.number
        } else if let n = UInt8(protocolText) {
            ipProtocol = n
        } else {
            throw SyntaxError("`\(t)`: `\(protocolText)` is not a protocol (tcp, udp, icmp, ipv6-icmp, sctp, udplite, dccp, "
                + "a number 0-255, or any)")
        }
        guard parts.count == 2 else { return TrafficSelector(prefix, ipProtocol: ipProtocol) }
        let portText = parts[1]
        if portText.isEmpty || portText == "any" || portText == "%any" { return TrafficSelector(prefix, ipProtocol: ipProtocol) }
        if portText == "opaque" { throw SyntaxError("`\(t)`: OPAQUE ports are not supported") }
        guard ipProtocol != 0 else {
            throw SyntaxError("`\(t)`: a port needs a protocol (`[tcp/\(portText)]`): ports belong to one (RFC 7296 §3.13.1)")
        }
        if ipProtocol == 1 || ipProtocol == 58 {
            throw SyntaxError("`\(t)`: ICMP type and code selectors are not supported: `[\(protocolText)]` selects all of ICMP")
        }
        guard PacketSelectors.hasPorts(ipProtocol) else {
            throw SyntaxError("`\(t)`: protocol \(ipProtocol) has no ports (only tcp, udp, sctp, udplite and dccp do)")
        }
        let bounds = portText.split(separator: "-", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard bounds.count <= 2, let low = UInt16(bounds[0]), let high = bounds.count == 2 ? UInt16(bounds[1]) : low else {
            throw SyntaxError("`\(t)`: `\(portText)` is not a port (a number 0-65535, a range such as 1024-2048, or any)")
        }
        guard low <= high else { throw SyntaxError("`\(t)`: the port range \(portText) is empty (its start is above its end)") }
        return TrafficSelector(prefix, ipProtocol: ipProtocol, ports: low...high)
    }

    /// Whether it allows every port.
    @inlinable public var allowsAllPorts: Bool { ports == Self.allPorts }

    /// Whether the address is inside (the prefix alone).
    @inlinable public func contains(_ address: IPAddress) -> Bool { prefix.contains(address) }

    /// Whether one side of a packet matches: its address inside, its protocol this one's (unless
    /// any), and its port in range (unless any port: then a packet without ports, such as a
    /// non-initial fragment, matches too; RFC 4301 §7).
    @inlinable public func matches(_ address: IPAddress, ipProtocol packetProtocol: UInt8, port: UInt16?) -> Bool {
        guard prefix.contains(address), ipProtocol == 0 || ipProtocol == packetProtocol else { return false }
        if allowsAllPorts { return true }
        guard let port else { return false }
        return ports.contains(port)
    }

    /// Whether some packet side matches both (same family, nested or equal prefixes, protocols
    /// that agree, ports that overlap).
    public func overlaps(_ other: TrafficSelector) -> Bool {
        let nested: Bool
        switch (prefix, other.prefix) {
        case (.v4(let x), .v4(let y)): nested = x.length <= y.length ? x.contains(y.address) : y.contains(x.address)
        case (.v6(let x), .v6(let y)): nested = x.length <= y.length ? x.contains(y.address) : y.contains(x.address)
        default: nested = false
        }
        return nested && (ipProtocol == 0 || other.ipProtocol == 0 || ipProtocol == other.ipProtocol)
            && ports.overlaps(other.ports)
    }

    /// `10.0.0.0/8`, `10.2.0.10/32[tcp/5201]`, `fd00::/8[udp/1024-2048]`, `10.0.0.0/8[tcp]`,
    /// `10.0.0.0/8[47]` (what ``parse(_:)`` reads back).
    public var description: String {
        guard ipProtocol != 0 || !allowsAllPorts else { return prefix.description }
        let name = Self.protocolNames.first { $0.number == ipProtocol }?.name ?? String(ipProtocol)
        if allowsAllPorts { return "\(prefix)[\(name)]" }
        let range = ports.lowerBound == ports.upperBound ? "\(ports.lowerBound)" : "\(ports.lowerBound)-\(ports.upperBound)"
        return "\(prefix)[\(ipProtocol == 0 ? "any" : name)/\(range)]"
    }
}

/// A manually keyed ESP tunnel: a pair of SAs and the traffic selectors of what goes through it.
public struct ESPTunnelConfiguration: Equatable, Sendable {
    /// The tunnel's name (for logs and counters).
    public var name: String
    /// The AEAD of both SAs.
    public var algorithm: ESPAlgorithm
    /// Whether both SAs use 64-bit sequence numbers (RFC 4304).
    public var extendedSequenceNumbers = true
    /// The anti-replay window of the inbound SA, in packets.
    public var replayWindow = 1024
    /// Whether this end sends with the outbound SA (false: a rekeyed SA still accepted inbound
    /// during the overlap, or a new one the peer does not use yet). Manual keys always send.
    public var sending = true
    /// Inner sources on this side (`local_ts`).
    public var localSelectors: [TrafficSelector] = []
    /// Inner destinations on the far side (`remote_ts`).
    public var remoteSelectors: [TrafficSelector] = []
    /// The SA this end sends with.
    public var outbound: ESPSAKeys
    /// The SA this end receives with.
    public var inbound: ESPSAKeys
    /// Where this tunnel's datagrams go: the peer's address and port (nil: the far end the
    /// endpoint was started with). Many peers share one socket; each SA knows its own.
    public var peer: UDPEndpoint?
    /// Whether an authentic datagram from another address or port moves ``peer`` there (RFC 7296
    /// §2.23: the peer is behind a NAT, which may rebind). Only a datagram whose ICV verified and
    /// whose sequence number is the highest yet moves it; when false, such a datagram is refused.
    public var peerMayMove = false

    /// A tunnel.
    public init(name: String, algorithm: ESPAlgorithm, extendedSequenceNumbers: Bool = true, replayWindow: Int = 1024,
                localSelectors: [TrafficSelector], remoteSelectors: [TrafficSelector], outbound: ESPSAKeys, inbound: ESPSAKeys) {
        self.name = name
        self.algorithm = algorithm
        self.extendedSequenceNumbers = extendedSequenceNumbers
        self.replayWindow = replayWindow
        self.localSelectors = localSelectors
        self.remoteSelectors = remoteSelectors
        self.outbound = outbound
        self.inbound = inbound
    }

    /// The same tunnel as the far end sees it: selectors and SAs swapped.
    public var reversed: ESPTunnelConfiguration {
        ESPTunnelConfiguration(name: name, algorithm: algorithm, extendedSequenceNumbers: extendedSequenceNumbers,
                               replayWindow: replayWindow, localSelectors: remoteSelectors, remoteSelectors: localSelectors,
                               outbound: inbound, inbound: outbound)
    }

    /// Whether a packet goes out through this tunnel: its source, protocol and source port inside
    /// one of ``localSelectors``, its destination, protocol and destination port inside one of
    /// ``remoteSelectors``.
    @inlinable public func sends(_ packet: PacketSelectors) -> Bool {
        localSelectors.contains { $0.matches(packet.source, ipProtocol: packet.ipProtocol, port: packet.sourcePort) }
            && remoteSelectors.contains { $0.matches(packet.destination, ipProtocol: packet.ipProtocol, port: packet.destinationPort) }
    }

    /// Whether a packet received through this tunnel may be what it is: its source side inside one
    /// of ``remoteSelectors``, its destination side inside one of ``localSelectors``.
    @inlinable public func receives(_ packet: PacketSelectors) -> Bool {
        remoteSelectors.contains { $0.matches(packet.source, ipProtocol: packet.ipProtocol, port: packet.sourcePort) }
            && localSelectors.contains { $0.matches(packet.destination, ipProtocol: packet.ipProtocol, port: packet.destinationPort) }
    }
}

/// Why an SA file was refused: where, and what (never a key).
public struct SAFileError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The message, with the file and line.
    public var description: String
    init(_ path: String, _ line: Int?, _ message: String) {
        description = line.map { "\(path):\($0): \(message)" } ?? "\(path): \(message)"
    }
}

/// An SA file: manual keying for `offload ipsec`, in the syntax of strongSwan's swanctl.conf
/// (sections in braces, one `key = value` per line, `#` comments):
///
/// ```text
/// tunnels {
///     site-b {
///         esp_proposals = aes128gcm16        # aes256gcm16, chacha20poly1305
///         esn = yes                          # no: 32-bit sequence numbers (strongSwan's libipsec)
///         replay_window = 1024
///         local_ts = 10.1.0.0/16, fd01::/64
///         remote_ts = 10.2.0.0/16, fd02::/64
///         out {
///             spi = 0x00001001
///             key = 0x<key ‖ 4-byte salt, hex>   # 20 bytes for AES-128, 36 for AES-256 and ChaCha20
///         }
///         in {
///             spi = 0x00002001
///             key = 0x...
///         }
///     }
/// }
/// ```
/// The file must be a regular file owned by the user, mode 0600 (no access for group or others),
/// like an SSH private key: it holds keys. Errors name the line, never the key.
public enum SAFile {
    /// Reads and validates the file.
    /// - Throws: ``SAFileError``.
    public static func load(path: String) throws(SAFileError) -> [ESPTunnelConfiguration] {
        try parse(readProtected(path: path), path: path)
    }

    /// The text of a file that holds keys, read through one descriptor that is checked first
    /// (``ProtectedFile/readText(path:)``: a regular file, not a link, owned by root or this user,
    /// no access for group or others).
    /// - Throws: ``SAFileError`` naming the file.
    public static func readProtected(path: String) throws(SAFileError) -> String {
        do { return try ProtectedFile.readText(path: path) } catch { throw SAFileError(path, nil, error.description) }
    }

    /// Refuses a file that others may read or change (checked on an opened descriptor; to read
    /// the file, ``readProtected(path:)`` checks and reads through the same one).
    public static func checkPermissions(path: String) throws(SAFileError) {
        _ = try readProtected(path: path)
    }

    /// The sections that hold keys: nothing in them is ever quoted in an error.
    static let keySections = SwanctlSection.defaultSecretSections.union(["in", "out"])

    /// Parses the text of an SA file.
    /// - Throws: ``SAFileError``.
    public static func parse(_ text: String, path: String = "SA file") throws(SAFileError) -> [ESPTunnelConfiguration] {
        let root: SwanctlSection
        do {
            root = try SwanctlSection.parse(text, secretSections: keySections)
        } catch { throw SAFileError(path, error.line, error.message) }
        guard let tunnels = root.sections.first(where: { $0.name == "tunnels" }) else {
            throw SAFileError(path, nil, "no `tunnels { ... }` section")
        }
        for other in root.sections where other.name != "tunnels" {
            throw SAFileError(path, other.line, "unknown section `\(other.name)` (expected `tunnels`)")
        }
        var result: [ESPTunnelConfiguration] = []
        for section in tunnels.sections { result.append(try tunnel(section, path: path)) }
        guard !result.isEmpty else { throw SAFileError(path, tunnels.line, "`tunnels` holds no tunnel") }
        var seenIn: [UInt32: String] = [:], seenOut: [UInt32: String] = [:]
        for t in result {
            if let other = seenIn[t.inbound.spi] {
                throw SAFileError(path, nil, "tunnels \(other) and \(t.name) receive with the same SPI 0x\(String(t.inbound.spi, radix: 16))")
            }
            if let other = seenOut[t.outbound.spi] {
                throw SAFileError(path, nil, "tunnels \(other) and \(t.name) send with the same SPI 0x\(String(t.outbound.spi, radix: 16))")
            }
            seenIn[t.inbound.spi] = t.name
            seenOut[t.outbound.spi] = t.name
        }
        try checkDistinctKeys(result, path: path)
        return result
    }

    /// Refuses one key in two SAs anywhere in the file (two tunnels' `out`, one's `out` and
    /// another's `in`, …), compared without the salt, and a tunnel whose `in` and `out` SPIs are
    /// equal. Two senders with one key send the same nonces (each counts its sequence numbers from
    /// the same mark, or from 1): the nonce is only the salt and the sequence number.
    static func checkDistinctKeys(_ tunnels: [ESPTunnelConfiguration], path: String) throws(SAFileError) {
        for t in tunnels where t.inbound.spi == t.outbound.spi {
            throw SAFileError(path, nil, "tunnel \(t.name): `in` and `out` have the same SPI 0x\(String(t.inbound.spi, radix: 16)): "
                + "each direction needs its own")
        }
        let all = tunnels.flatMap { t in [(t.name, "out", t.outbound), (t.name, "in", t.inbound)] }
        for i in all.indices {
            for j in all.indices where j > i && all[i].2.key.isEqual(to: all[j].2.key) {
                throw SAFileError(path, nil, "tunnel \(all[i].0) (`\(all[i].1)`) and tunnel \(all[j].0) (`\(all[j].1)`) have the same "
                    + "key: each SA needs its own (one key in two SAs sends the same nonces twice)")
            }
        }
    }

    static func tunnel(_ s: SwanctlSection, path: String) throws(SAFileError) -> ESPTunnelConfiguration {
        func value(_ key: String) -> (String, Int)? { s.value(key) }
        for setting in s.settings where !["esp_proposals", "esn", "replay_window", "local_ts", "remote_ts"].contains(setting.key) {
            throw SAFileError(path, setting.line, "unknown setting `\(setting.key)` in tunnel \(s.name)")
        }
        guard let (proposal, line) = value("esp_proposals") else {
            throw SAFileError(path, s.line, "tunnel \(s.name): no esp_proposals (aes128gcm16, aes256gcm16 or chacha20poly1305)")
        }
        let names = proposal.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard names.count == 1, let algorithm = ESPAlgorithm(name: names[0].replacingOccurrences(of: "-esn", with: "")
            .replacingOccurrences(of: "-noesn", with: ""))
        else {
            throw SAFileError(path, line, "esp_proposals: one of aes128gcm16, aes256gcm16, chacha20poly1305 (manual keying takes exactly one)")
        }
        var esn = true
        if names[0].hasSuffix("-noesn") { esn = false }
        if let (v, line) = value("esn") {
            switch v.lowercased() {
            case "yes", "true", "on": esn = true
            case "no", "false", "off": esn = false
            default: throw SAFileError(path, line, "esn: yes or no")
            }
        }
        var window = 1024
        if let (v, line) = value("replay_window") {
            guard let w = Int(v), w >= 1024, w <= 65_536 else { throw SAFileError(path, line, "replay_window: 1024...65536 packets") }
            window = w
        }
        func selectors(_ key: String) throws(SAFileError) -> [TrafficSelector] {
            guard let (v, line) = value(key) else { return [.v4(IPv4Prefix("0.0.0.0/0")!), .v6(IPv6Prefix("::/0")!)] }
            var all: [TrafficSelector] = []
            for part in v.split(separator: ",") {
                do { all.append(try TrafficSelector.parse(part)) } catch { throw SAFileError(path, line, "\(key): \(error)") }
            }
            return all
        }
        func keys(_ name: String) throws(SAFileError) -> ESPSAKeys {
            guard let sub = s.sections.first(where: { $0.name == name }) else {
                throw SAFileError(path, s.line, "tunnel \(s.name): no `\(name) { spi = ... key = ... }` section")
            }
            var spi: UInt32?
            var material: SecretBytes?
            for setting in sub.settings {
                switch setting.key {
                case "spi":
                    let digits = setting.value.lowercased().hasPrefix("0x") ? String(setting.value.dropFirst(2)) : setting.value
                    guard let v = UInt32(digits, radix: setting.value.lowercased().hasPrefix("0x") ? 16 : 10), v >= 256 else {
                        throw SAFileError(path, setting.line, "spi: a 32-bit number of 256 or more (0x100...; 1-255 are reserved)")
                    }
                    spi = v
                case "key":
                    guard let bytes = secretHexBytes(setting.value) else {
                        throw SAFileError(path, setting.line, "key: hex digits after 0x (the value is not shown)")
                    }
                    guard bytes.count == algorithm.keyLength + ESPAlgorithm.saltLength else {
                        throw SAFileError(path, setting.line, "key: \(algorithm) takes \(algorithm.keyLength) bytes of key and 4 of salt "
                            + "(\(2 * (algorithm.keyLength + 4)) hex digits); this one has \(bytes.count) bytes")
                    }
                    material = bytes
                default:
                    // Not quoted: in a section of keys, an unknown "setting" may be a key's value on the wrong line.
                    throw SAFileError(path, setting.line, "an unknown setting in \(name) (\(SwanctlSection.redacted)): only spi and key")
                }
            }
            guard let spi else { throw SAFileError(path, sub.line, "\(name): no spi") }
            guard let material else { throw SAFileError(path, sub.line, "\(name): no key") }
            return ESPSAKeys(spi: spi, material: material)
        }
        let outbound = try keys("out"), inbound = try keys("in")
        if outbound.key.isEqual(to: inbound.key) && outbound.salt.isEqual(to: inbound.salt) {
            throw SAFileError(path, s.line, "tunnel \(s.name): `in` and `out` have the same key: each direction needs its own")
        }
        return ESPTunnelConfiguration(name: s.name, algorithm: algorithm, extendedSequenceNumbers: esn, replayWindow: window,
                                      localSelectors: try selectors("local_ts"), remoteSelectors: try selectors("remote_ts"),
                                      outbound: outbound, inbound: inbound)
    }

    /// The text of an SA file for `tunnels` (what ``parse(_:path:)`` reads back): for the lab, the
    /// tests and scripts that make keys on the spot. Holds keys: write it with mode 0600.
    public static func render(_ tunnels: [ESPTunnelConfiguration]) -> String {
        func hex(_ bytes: SecretBytes) -> String { "0x" + bytes.hexForKeyFile() }
        var text = "tunnels {\n"
        for t in tunnels {
            text += """
                    \(t.name) {
                        esp_proposals = \(t.algorithm.rawValue)
                        esn = \(t.extendedSequenceNumbers ? "yes" : "no")
                        replay_window = \(t.replayWindow)
                        local_ts = \(t.localSelectors.map(\.description).joined(separator: ", "))
                        remote_ts = \(t.remoteSelectors.map(\.description).joined(separator: ", "))
                        out {
                            spi = 0x\(String(format: "%08x", t.outbound.spi))
                            key = \(hex(t.outbound.keyMaterial))
                        }
                        in {
                            spi = 0x\(String(format: "%08x", t.inbound.spi))
                            key = \(hex(t.inbound.keyMaterial))
                        }
                    }

                """
        }
        return text + "}\n"
    }

    /// Writes `text` to `path` with mode 0600 (created so: never readable by others, not even briefly).
    /// - Throws: ``SAFileError`` when it cannot be written.
    public static func write(_ text: String, to path: String) throws(SAFileError) {
        try ESPKeyLog.write([text], to: path)
    }

    /// A tunnel between two ends with keys made on the spot (libcrypto's generator): this end's
    /// view; ``ESPTunnelConfiguration/reversed`` is the far end's.
    public static func freshTunnel(name: String, algorithm: ESPAlgorithm, extendedSequenceNumbers: Bool = true,
                                   local: [TrafficSelector], remote: [TrafficSelector],
                                   outboundSPI: UInt32 = 0x1001, inboundSPI: UInt32 = 0x2001) -> ESPTunnelConfiguration {
        func keys(_ spi: UInt32) -> ESPSAKeys {
            ESPSAKeys(spi: spi, key: SecretBytes(random: algorithm.keyLength), salt: SecretBytes(random: ESPAlgorithm.saltLength))
        }
        return ESPTunnelConfiguration(name: name, algorithm: algorithm, extendedSequenceNumbers: extendedSequenceNumbers,
                                      localSelectors: local, remoteSelectors: remote, outbound: keys(outboundSPI),
                                      inbound: keys(inboundSPI))
    }

    /// `0x`-prefixed hex digits as secret bytes, written in place (no array of the key on the way);
    /// nil when not that (or empty).
    public static func secretHexBytes(_ text: String) -> SecretBytes? {
        let utf8 = text.utf8
        guard utf8.count > 2, utf8.count % 2 == 0, utf8.starts(with: "0x".utf8) || utf8.starts(with: "0X".utf8) else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        struct NotHex: Error {}
        return try? unsafe SecretBytes(count: (utf8.count - 2) / 2) { (out: UnsafeMutableRawBufferPointer) throws(NotHex) in
            var it = utf8.dropFirst(2).makeIterator()
            var i = 0
            while let a = it.next(), let b = it.next() {
                guard let x = nibble(a), let y = nibble(b) else { throw NotHex() }
                unsafe out[i] = x << 4 | y
                i += 1
            }
        }
    }

    /// `0x`-prefixed hex digits as bytes; nil when not that (or empty).
    public static func hexBytes(_ text: String) -> [UInt8]? {
        var digits = text.lowercased()
        guard digits.hasPrefix("0x") else { return nil }
        digits.removeFirst(2)
        guard digits.count % 2 == 0, !digits.isEmpty else { return nil }
        var out: [UInt8] = []
        var it = digits.makeIterator()
        while let a = it.next(), let b = it.next() {
            guard let x = a.hexDigitValue, let y = b.hexDigitValue else { return nil }
            out.append(UInt8(x << 4 | y))
        }
        return out
    }
}
