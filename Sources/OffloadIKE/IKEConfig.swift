import COffloadCrypto
import Foundation
import OffloadCrypto
import OffloadIPsec
import OffloadWire

/// A pre-shared key. Its text never prints: interpolated, described or dumped it shows as
/// `<secret>`; only the AUTH computation reads its bytes, which are ``SecretBytes`` (wiped when
/// the last configuration holding them goes).
public struct IKESecret: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    let bytes: SecretBytes
    /// A secret.
    public init(_ bytes: SecretBytes) { self.bytes = bytes }
    /// A secret copied from an array (which the caller should drop).
    public init(bytes: [UInt8]) { self.bytes = SecretBytes(bytes) }
    /// Redacted.
    public var description: String { "<secret>" }
    /// Redacted.
    public var debugDescription: String { "<secret>" }
    /// No children: `dump` shows `<secret>` only.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// The IKE SA's algorithms offered or accepted, one proposal: alternatives per transform type.
public struct IKEProposalChoice: Hashable, Sendable, CustomStringConvertible {
    /// AEADs.
    public var encryption: [ESPAlgorithm]
    /// PRFs.
    public var prfs: [IKEPRF]
    /// Key-exchange groups (the first is the initiator's guess for its KE payload).
    public var groups: [IKEKeyExchangeGroup]

    /// `aes128gcm16-prfsha256-x25519`.
    public var description: String {
        (encryption.map(\.rawValue) + prfs.map(\.description) + groups.map(\.description)).joined(separator: "-")
    }
}

/// A CHILD_SA's algorithms, one proposal.
public struct ESPProposalChoice: Hashable, Sendable, CustomStringConvertible {
    /// AEADs.
    public var encryption: [ESPAlgorithm]
    /// Extended sequence numbers: true for on, false for off, in order of preference.
    public var extendedSequenceNumbers: [Bool]

    /// `aes128gcm16-noesn`.
    public var description: String {
        (encryption.map(\.rawValue) + extendedSequenceNumbers.map { $0 ? "esn" : "noesn" }).joined(separator: "-")
    }
}

/// What a CHILD_SA does when the connection is loaded, and on dead peer detection.
public enum IKEStartAction: String, Sendable {
    /// Wait for the peer.
    case none
    /// Initiate at once (and again after the peer was declared dead).
    case start
    /// swanctl's trap (negotiate on traffic): here the same as start, since the gateway forwards
    /// nothing without an SA.
    case trap
}

/// A CHILD_SA's configuration (swanctl.conf's `children.NAME`).
public struct IKEChildConfig: Sendable {
    /// The name.
    public var name: String
    /// This side's selectors.
    public var localTS: [TrafficSelector]
    /// The far side's selectors.
    public var remoteTS: [TrafficSelector]
    /// Proposals, in order of preference.
    public var espProposals: [ESPProposalChoice]
    /// Seconds after which the CHILD_SA is rekeyed (0: never on time).
    public var rekeyTime: Double = 3600
    /// Bytes (either direction) after which it is rekeyed (0: never on bytes).
    public var rekeyBytes: UInt64 = 0
    /// Packets (either direction) after which it is rekeyed (0: never; 32-bit sequence numbers
    /// are rekeyed at 2^31 packets regardless, long before they could wrap).
    public var rekeyPackets: UInt64 = 0
    /// What to do when loaded.
    public var startAction: IKEStartAction = .none
}

/// One connection (swanctl.conf's `connections.NAME`).
public struct IKEConnection: Sendable {
    /// The name.
    public var name: String
    /// This end's outer address.
    public var localAddress: IPAddress
    /// The peer's outer address.
    public var remoteAddress: IPAddress
    /// IKE proposals, in order of preference.
    public var proposals: [IKEProposalChoice]
    /// This end's identity (default: its address).
    public var localID: IKEIdentity
    /// The identity the peer must authenticate as (nil: any, `%any`).
    public var remoteID: IKEIdentity?
    /// The pre-shared key.
    public var secret: IKESecret
    /// Seconds after which the IKE SA is rekeyed (0: never).
    public var rekeyTime: Double = 14_400
    /// Seconds without anything from the peer after which liveness is checked (0: never).
    public var dpdDelay: Double = 0
    /// Retransmission (strongswan.conf's charon.retransmit_*): the first timeout in seconds,
    /// its growth per try, the tries before the SA is given up.
    public var retransmitTimeout: Double = 4, retransmitBase: Double = 1.8, retransmitTries = 5
    /// Attempts of a connection that starts by itself before it is given up (swanctl.conf's
    /// `keyingtries`; 0, the default here: never given up, retried with backoff).
    public var keyingTries = 0
    /// CHILD_SAs.
    public var children: [IKEChildConfig]
}

/// Why a configuration was refused: the file, the line, what (never a secret).
public struct IKEConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The message.
    public var description: String
    init(_ path: String, _ line: Int?, _ message: String) {
        description = line.map { "\(path):\($0): \(message)" } ?? "\(path): \(message)"
    }
}

/// `offload ipsec --config FILE`: connections and secrets in a subset of swanctl.conf's syntax
/// and names (see docs/ipsec.md for the mapping). The file holds secrets: it must be mode 0600.
public enum IKEConfig {
    /// The default IKE proposal: AES-GCM-16 (128, 256), HMAC-SHA2 (256, 384), Curve25519 and MODP-2048.
    public static let defaultProposals = "aes128gcm16-aes256gcm16-prfsha256-prfsha384-x25519-modp2048"
    /// The default ESP proposal: both AES-GCM-16 and ChaCha20-Poly1305, ESN preferred, 32-bit accepted.
    public static let defaultESPProposals = "aes128gcm16-aes256gcm16-chacha20poly1305-esn-noesn"

    /// Reads and checks a file.
    /// - Throws: ``IKEConfigError``.
    public static func load(path: String) throws(IKEConfigError) -> [IKEConnection] {
        let text: String
        do { text = try ProtectedFile.readText(path: path) } catch { throw IKEConfigError(path, nil, error.description) }
        return try parse(text, path: path)
    }

    /// Parses the text of a configuration.
    /// - Throws: ``IKEConfigError``.
    public static func parse(_ text: String, path: String = "config") throws(IKEConfigError) -> [IKEConnection] {
        let root: SwanctlSection
        do { root = try SwanctlSection.parse(text) } catch { throw IKEConfigError(path, error.line, error.message) }
        for s in root.sections where s.name != "connections" && s.name != "secrets" {
            throw IKEConfigError(path, s.line, "unknown section `\(s.name)` (expected `connections` and `secrets`)")
        }
        guard let connections = root.section("connections"), !connections.sections.isEmpty else {
            throw IKEConfigError(path, nil, "no `connections { NAME { ... } }`")
        }
        var secrets: [(ids: [String], secret: IKESecret, line: Int)] = []
        for s in root.section("secrets")?.sections ?? [] {
            // Nothing inside `secrets` is quoted in an error: a misplaced secret could be any of its tokens.
            guard s.name.hasPrefix("ike") else {
                throw IKEConfigError(path, s.line, "secrets: a section not named `ike...`: only `ike...` (pre-shared key) sections are read")
            }
            var ids: [String] = []
            var secret: IKESecret?
            for setting in s.settings {
                if setting.key == "id" || setting.key.hasPrefix("id-") {
                    ids.append(setting.value)
                } else if setting.key == "secret" {
                    guard let bytes = secretBytes(setting.value), bytes.count > 0 else {
                        throw IKEConfigError(path, setting.line, "secret: text, 0x<hex> or 0s<base64> (the value is not shown)")
                    }
                    secret = IKESecret(bytes)
                } else {
                    throw IKEConfigError(path, setting.line, "secrets: an unknown setting (\(SwanctlSection.redacted)): only id and secret")
                }
            }
            guard let secret else { throw IKEConfigError(path, s.line, "secrets: this section has no secret") }
            secrets.append((ids, secret, s.line))
        }
        var result: [IKEConnection] = []
        for c in connections.sections { result.append(try connection(c, secrets: secrets, path: path)) }
        let remotes = Set(result.map(\.remoteAddress)), locals = Set(result.map(\.localAddress))
        guard remotes.count == 1, locals.count == 1 else {
            throw IKEConfigError(path, nil, "every connection must have the same local_addrs and remote_addrs (one peer per gateway)")
        }
        return result
    }

    static func connection(_ s: SwanctlSection, secrets: [(ids: [String], secret: IKESecret, line: Int)],
                           path: String) throws(IKEConfigError) -> IKEConnection {
        let known = ["local_addrs", "remote_addrs", "proposals", "rekey_time", "dpd_delay", "version", "encap", "mobike",
                     "retransmit_timeout", "retransmit_base", "retransmit_tries", "reauth_time", "over_time", "unique", "fragmentation",
                     "keyingtries"]
        for setting in s.settings where !known.contains(setting.key) {
            throw IKEConfigError(path, setting.line, "connection \(s.name): `\(setting.key)` is not supported (see docs/ipsec.md)")
        }
        for sub in s.sections where !["local", "remote", "children"].contains(sub.name) && !sub.name.hasPrefix("local-")
            && !sub.name.hasPrefix("remote-") {
            throw IKEConfigError(path, sub.line, "connection \(s.name): unknown section `\(sub.name)`")
        }
        if let (v, line) = s.value("version"), v != "2", v != "0" {
            throw IKEConfigError(path, line, "version: only IKEv2 (2)")
        }
        if let (v, line) = s.value("encap"), !["yes", "true"].contains(v.lowercased()) {
            throw IKEConfigError(path, line, "encap: this gateway always sends ESP in UDP (encap = yes); it cannot send raw ESP")
        }
        func address(_ key: String) throws(IKEConfigError) -> IPAddress {
            guard let (v, line) = s.value(key) else { throw IKEConfigError(path, s.line, "connection \(s.name): no \(key)") }
            let parts = v.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 1, let a = IPAddress(parts[0]) else {
                throw IKEConfigError(path, line, "\(key): one IP address (names, ranges and %any are not supported)")
            }
            return a
        }
        let local = try address("local_addrs"), remote = try address("remote_addrs")
        guard local.isIPv4 == remote.isIPv4 else { throw IKEConfigError(path, s.line, "local_addrs and remote_addrs: one family") }
        let proposals = try ikeProposals(s.value("proposals")?.value ?? defaultProposals, line: s.value("proposals")?.line ?? s.line, path: path)
        let localSection = s.sections.first { $0.name == "local" || $0.name.hasPrefix("local-") }
        let remoteSection = s.sections.first { $0.name == "remote" || $0.name.hasPrefix("remote-") }
        for side in [localSection, remoteSection].compactMap({ $0 }) {
            for setting in side.settings where !["auth", "id"].contains(setting.key) {
                throw IKEConfigError(path, setting.line, "\(side.name): `\(setting.key)` is not supported (auth and id are)")
            }
            if let (v, line) = side.value("auth"), v != "psk" {
                throw IKEConfigError(path, line, "\(side.name): auth = \(v): only psk (pre-shared keys); certificates are not supported yet")
            }
        }
        let localIDText = localSection?.value("id")?.value ?? local.description
        let remoteIDText = remoteSection?.value("id")?.value ?? remote.description
        let localID = IKEIdentity(localIDText)
        let remoteID: IKEIdentity? = remoteIDText == "%any" ? nil : IKEIdentity(remoteIDText)
        // The secret: one whose ids name the peer or this end (as swanctl matches them), else one with no ids.
        let matching = secrets.first { $0.ids.contains(remoteIDText) } ?? secrets.first { $0.ids.contains(localIDText) }
            ?? secrets.first { $0.ids.isEmpty }
        guard let secret = matching?.secret else {
            throw IKEConfigError(path, s.line, "connection \(s.name): no secret in `secrets { ike... { id = \(remoteIDText)  secret = ... } }`")
        }
        var c = IKEConnection(name: s.name, localAddress: local, remoteAddress: remote, proposals: proposals, localID: localID,
                              remoteID: remoteID, secret: secret, children: [])
        if let (v, line) = s.value("rekey_time") { c.rekeyTime = try duration(v, line: line, path: path) }
        if let (v, line) = s.value("dpd_delay") { c.dpdDelay = try duration(v, line: line, path: path) }
        if let (v, line) = s.value("retransmit_timeout") { c.retransmitTimeout = max(0.05, try duration(v, line: line, path: path)) }
        if let (v, line) = s.value("retransmit_base") {
            guard let b = Double(v), b >= 1, b <= 4 else { throw IKEConfigError(path, line, "retransmit_base: a factor 1...4") }
            c.retransmitBase = b
        }
        if let (v, line) = s.value("retransmit_tries") {
            guard let n = Int(v), n >= 0, n <= 20 else { throw IKEConfigError(path, line, "retransmit_tries: 0...20") }
            c.retransmitTries = n
        }
        if let (v, line) = s.value("keyingtries") {
            guard let n = Int(v), n >= 0 else { throw IKEConfigError(path, line, "keyingtries: 0 (forever) or more") }
            c.keyingTries = n
        }
        guard let children = s.section("children"), !children.sections.isEmpty else {
            throw IKEConfigError(path, s.line, "connection \(s.name): no `children { NAME { ... } }`")
        }
        for child in children.sections { c.children.append(try childConfig(child, path: path)) }
        return c
    }

    static func childConfig(_ s: SwanctlSection, path: String) throws(IKEConfigError) -> IKEChildConfig {
        let known = ["local_ts", "remote_ts", "esp_proposals", "rekey_time", "rekey_bytes", "rekey_packets", "start_action",
                     "mode", "dpd_action", "close_action", "life_time", "life_bytes", "life_packets", "updown", "hostaccess"]
        for setting in s.settings where !known.contains(setting.key) {
            throw IKEConfigError(path, setting.line, "child \(s.name): `\(setting.key)` is not supported (see docs/ipsec.md)")
        }
        if let (v, line) = s.value("mode"), v != "tunnel" { throw IKEConfigError(path, line, "mode: only tunnel") }
        func selectors(_ key: String) throws(IKEConfigError) -> [TrafficSelector] {
            guard let (v, line) = s.value(key) else {
                throw IKEConfigError(path, s.line, "child \(s.name): no \(key) (the dynamic default, the outer address, is not supported)")
            }
            var all: [TrafficSelector] = []
            for part in v.split(separator: ",") {
                do { all.append(try TrafficSelector.parse(part)) } catch { throw IKEConfigError(path, line, "\(key): \(error)") }
            }
            return all
        }
        let esp = try espProposals(s.value("esp_proposals")?.value ?? defaultESPProposals, line: s.value("esp_proposals")?.line ?? s.line,
                                   path: path)
        var child = IKEChildConfig(name: s.name, localTS: try selectors("local_ts"), remoteTS: try selectors("remote_ts"), espProposals: esp)
        if let (v, line) = s.value("rekey_time") { child.rekeyTime = try duration(v, line: line, path: path) }
        if let (v, line) = s.value("rekey_bytes") { child.rekeyBytes = try quantity(v, line: line, path: path) }
        if let (v, line) = s.value("rekey_packets") { child.rekeyPackets = try quantity(v, line: line, path: path) }
        if let (v, line) = s.value("start_action") {
            guard let a = IKEStartAction(rawValue: v) else { throw IKEConfigError(path, line, "start_action: none, start or trap") }
            child.startAction = a
        }
        return child
    }

    /// A proposals setting's proposals (comma-separated), `default` replaced by `fallback`'s.
    static func proposalTexts(_ text: String, default fallback: String) -> [String] {
        text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.flatMap {
            $0 == "default" && !fallback.isEmpty ? proposalTexts(fallback, default: "") : [$0]
        }
    }

    /// `aes128gcm16-prfsha256-x25519, aes256gcm16-prfsha384-modp2048`.
    static func ikeProposals(_ text: String, line: Int, path: String) throws(IKEConfigError) -> [IKEProposalChoice] {
        var out: [IKEProposalChoice] = []
        for proposal in proposalTexts(text, default: defaultProposals) {
            var p = IKEProposalChoice(encryption: [], prfs: [], groups: [])
            for token in proposal.split(separator: "-").map(String.init) {
                if let a = aead(token) { p.encryption.append(a) } else if token == "prfsha256" || token == "sha256" {
                    p.prfs.append(.hmacSHA256)
                } else if token == "prfsha384" || token == "sha384" {
                    p.prfs.append(.hmacSHA384)
                } else if token == "x25519" || token == "curve25519" {
                    p.groups.append(.curve25519)
                } else if token == "modp2048" {
                    p.groups.append(.modp2048)
                } else {
                    throw IKEConfigError(path, line, "proposals: `\(token)` is not supported (aes128gcm16, aes256gcm16, chacha20poly1305, "
                        + "prfsha256, prfsha384, x25519, modp2048)")
                }
            }
            guard !p.encryption.isEmpty, !p.prfs.isEmpty, !p.groups.isEmpty else {
                throw IKEConfigError(path, line, "proposals: `\(proposal)` needs an AEAD, a PRF and a key-exchange group")
            }
            out.append(p)
        }
        return out
    }

    /// `aes128gcm16-esn-noesn, chacha20poly1305`.
    static func espProposals(_ text: String, line: Int, path: String) throws(IKEConfigError) -> [ESPProposalChoice] {
        var out: [ESPProposalChoice] = []
        for proposal in proposalTexts(text, default: defaultESPProposals) {
            var p = ESPProposalChoice(encryption: [], extendedSequenceNumbers: [])
            for token in proposal.split(separator: "-").map(String.init) {
                if let a = aead(token) { p.encryption.append(a) } else if token == "esn" {
                    p.extendedSequenceNumbers.append(true)
                } else if token == "noesn" {
                    p.extendedSequenceNumbers.append(false)
                } else if ["x25519", "curve25519", "modp2048"].contains(token) {
                    throw IKEConfigError(path, line, "esp_proposals: `\(token)`: PFS groups for CHILD_SAs are not supported yet")
                } else {
                    throw IKEConfigError(path, line, "esp_proposals: `\(token)` is not supported (aes128gcm16, aes256gcm16, chacha20poly1305, esn, noesn)")
                }
            }
            guard !p.encryption.isEmpty else { throw IKEConfigError(path, line, "esp_proposals: `\(proposal)` names no AEAD") }
            if p.extendedSequenceNumbers.isEmpty { p.extendedSequenceNumbers = [false] }
            out.append(p)
        }
        return out
    }

    static func aead(_ token: String) -> ESPAlgorithm? {
        switch token {
        case "aes128gcm16", "aes128gcm128", "aes128gcm": .aesGCM128
        case "aes256gcm16", "aes256gcm128", "aes256gcm": .aesGCM256
        case "chacha20poly1305": .chacha20Poly1305
        default: nil
        }
    }

    /// The longest duration accepted: ten years, in seconds (longer is a typo; 0 means never).
    static let longestDuration: Double = 10 * 365 * 86_400

    /// swanctl's durations: `30`, `30s`, `5m`, `4h`, `1d`, decimal digits (with a fraction, `1.5h`),
    /// up to ten years. Anything else (`inf`, `nan`, `1e9`, hex, a sign) is refused with its line.
    static func duration(_ text: String, line: Int, path: String) throws(IKEConfigError) -> Double {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        var t = text
        var unit = 1.0
        if let last = t.last, let u = units[last] {
            unit = u
            t.removeLast()
        }
        let decimal = !t.isEmpty && t.allSatisfy { $0.isASCII && ($0.isNumber || $0 == ".") } && t.filter { $0 == "." }.count <= 1
            && t.first != "." && t.last != "."
        guard decimal, let v = Double(t), v.isFinite, v * unit <= longestDuration else {
            throw IKEConfigError(path, line, "`\(text)`: a duration (30s, 5m, 4h, 1d) of at most ten years")
        }
        return v * unit
    }

    /// swanctl's volumes: `1000`, `500k`, `64M`, `2G`: decimal digits and a unit, at most 2^64 - 1
    /// in all (a larger one is refused with its line, never wrapped).
    static func quantity(_ text: String, line: Int, path: String) throws(IKEConfigError) -> UInt64 {
        let units: [Character: UInt64] = ["k": 1 << 10, "K": 1 << 10, "m": 1 << 20, "M": 1 << 20, "g": 1 << 30, "G": 1 << 30]
        var t = text
        var unit: UInt64 = 1
        if let last = t.last, let u = units[last] {
            unit = u
            t.removeLast()
        }
        guard !t.isEmpty, t.allSatisfy({ $0.isASCII && $0.isNumber }), let v = UInt64(t) else {
            throw IKEConfigError(path, line, "`\(text)`: a number (with k, M or G) up to 2^64 - 1")
        }
        let (total, overflow) = v.multipliedReportingOverflow(by: unit)
        guard !overflow else { throw IKEConfigError(path, line, "`\(text)`: more than 2^64 - 1") }
        return total
    }

    /// A `secret` value: text, `0x<hex>` or `0s<base64>` (swanctl's forms), as secret bytes.
    static func secretBytes(_ text: String) -> SecretBytes? {
        if text.hasPrefix("0x") { return SAFile.secretHexBytes(text) }
        if text.hasPrefix("0s") {
            guard var data = Data(base64Encoded: String(text.dropFirst(2))) else { return nil }
            defer { unsafe data.withUnsafeMutableBytes { unsafe offload_cleanse($0.baseAddress, $0.count) } }
            return unsafe data.withUnsafeBytes { unsafe SecretBytes(copying: $0) }
        }
        return SecretBytes(text.utf8)
    }
}
