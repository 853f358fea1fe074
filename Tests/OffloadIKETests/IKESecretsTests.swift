import Foundation
import OffloadCrypto
import OffloadIPsec
import Testing

@testable import OffloadIKE

/// Every way a value can become text: interpolation, description, reflection, dump.
func ikeTexts(_ value: Any) -> [String] {
    var dumped = ""
    dump(value, to: &dumped)
    return ["\(value)", String(describing: value), String(reflecting: value), dumped]
}

@Suite("IKE's secrets never print: the pre-shared key, the IKE SA's keys, KEYMAT")
struct IKESecretsTests {
    static let psk = "TopSecretPSK-12345"

    @Test("a parsed connection prints neither the pre-shared key's text nor its hex")
    func connectionRedacted() throws {
        let connections = try IKEConfig.parse(ikeConfigText())
        let hex = Array(Self.psk.utf8).map { String(format: "%02x", $0) }.joined()
        let decimal = Array(Self.psk.utf8).prefix(6).map(String.init).joined(separator: ", ")  // as an array prints
        for text in ikeTexts(connections) + ikeTexts(connections[0].secret) {
            #expect(!text.contains("TopSecret") && !text.lowercased().contains(hex) && !text.contains(decimal), "\(text)")
        }
        #expect(connections[0].secret.bytes.isEqual(to: SecretBytes(Self.psk.utf8)))
    }

    @Test("derived IKE SA keys and the CHILD_SAs' KEYMAT never print")
    func derivedRedacted() throws {
        let keys = IKESAKeys.derive(prf: .hmacSHA256, aead: .aesGCM128, skeyseed: SecretBytes(Array(repeating: 0xC3, count: 32)),
                                    ni: [1, 2, 3], nr: [4, 5, 6], spii: 1, spir: 2)
        let parts = [keys.d, keys.ei, keys.er, keys.pi, keys.pr].map { $0.hexForKeyFile() }
        #expect(Set(parts).count == 5 && parts.allSatisfy { $0.count >= 40 })
        for text in ikeTexts(keys) { for part in parts { #expect(!text.contains(part), "\(text)") } }

        let w = try IKEWire(IKEWire.config(me: 1, psk: Self.psk), IKEWire.config(me: 2, start: "none", psk: Self.psk))
        w.start()
        let children = w.a.activeChildSAs
        try #require(children.count == 1)
        let keymat = [children[0].inbound.keyMaterial.hexForKeyFile(), children[0].outbound.keyMaterial.hexForKeyFile()]
        for text in ikeTexts(children) + ikeTexts(children.map(\.tunnel)) {
            for k in keymat { #expect(!text.contains(k) && !text.contains(String(k.prefix(16))), "\(text)") }
        }
    }

    @Test("prf+ matches the array-built definition (T1 = prf(K, S | 1), Tn = prf(K, Tn-1 | S | n))")
    func prfPlus() {
        let prf = IKEPRF.hmacSHA384
        let key: [UInt8] = Array(0..<48), seed: [UInt8] = Array(100..<140)
        var expected: [UInt8] = [], previous: [UInt8] = []
        for n in 1...4 {
            previous = prf(key, previous + seed + [UInt8(n)])
            expected += previous
        }
        #expect(prf.plus(key, seed, count: 150).withUnsafeBytes { Array($0) } == Array(expected.prefix(150)))
        #expect(prf.plus(key, seed, count: 48).withUnsafeBytes { Array($0) } == Array(expected.prefix(48)))
    }
}
