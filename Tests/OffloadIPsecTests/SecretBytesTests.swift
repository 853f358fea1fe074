import Foundation
@testable import OffloadCrypto
import Synchronization
import Testing

@testable import OffloadIPsec

/// Every way a value can become text: interpolation, description, reflection, dump.
func allTexts(_ value: Any) -> [String] {
    var dumped = ""
    dump(value, to: &dumped)
    return ["\(value)", String(describing: value), String(reflecting: value), dumped]
}

/// Whether `text` shows `bytes`: as hex (either case, with or without separators) or as the
/// decimal list an array prints.
func shows(_ bytes: [UInt8], in text: String) -> Bool {
    let hex = bytes.map { String(format: "%02x", $0) }.joined()
    let lower = text.lowercased()
    let squeezed = lower.filter { !" ,:x".contains($0) }
    let decimal = bytes.prefix(6).map(String.init).joined(separator: ", ")
    return lower.contains(hex) || squeezed.contains(hex) || text.contains(decimal) || text.contains(String(decoding: bytes, as: UTF8.self))
}

/// The tests that set ``SecretBytes/wiped`` run one at a time; each watches only buffers of its own
/// (unusual) length.
@Suite("Secrets have a type of their own: redacted, compared in constant time, wiped on release", .serialized)
struct SecretBytesTests {
    /// A recognizable key: C3 7A 91 4E, repeated.
    static let pattern: [UInt8] = Array(repeating: [0xC3, 0x7A, 0x91, 0x4E] as [UInt8], count: 4).flatMap { $0 }

    @Test("a SecretBytes never prints its bytes")
    func redacted() {
        let secret = SecretBytes(Self.pattern)
        for text in allTexts(secret) {
            #expect(!shows(Self.pattern, in: text), "\(text)")
        }
        #expect(secret.description == "<secret, 16 bytes>")
        #expect(secret.withUnsafeBytes { Array($0) } == Self.pattern, "the bytes are there for the code that needs them")
    }

    @Test("ESPSAKeys, a tunnel and a parsed SA file never print their keys; equality is by content")
    func espKeysRedacted() throws {
        let salt: [UInt8] = [0xC3, 0x7A, 0x91, 0x4E]
        let sa = ESPSAKeys(spi: 0x1234, key: Self.pattern, salt: salt)
        let tunnel = ESPTunnelConfiguration(name: "t", algorithm: .aesGCM128, localSelectors: [], remoteSelectors: [],
                                            outbound: sa, inbound: ESPSAKeys(spi: 0x4321, key: Self.pattern.reversed(), salt: salt))
        let text = SAFile.render([tunnel])
        #expect(shows(Self.pattern + salt, in: text), "the SA file's text holds the key (it is the key file)")
        let parsed = try SAFile.parse(text)
        for value in [sa as Any, tunnel, parsed, [sa]] {
            for text in allTexts(value) {
                #expect(!shows(Self.pattern, in: text), "\(text)")
                #expect(!text.lowercased().contains("c37a914e"), "\(text)")
            }
        }
        #expect(parsed[0].outbound == sa)
        #expect(parsed[0].outbound != ESPSAKeys(spi: 0x1234, key: Self.pattern, salt: [0, 0, 0, 0]))
        #expect(parsed[0].outbound != ESPSAKeys(spi: 0x1235, key: Self.pattern, salt: salt))
    }

    @Test("isEqual compares content and length")
    func equality() {
        let a = SecretBytes(Self.pattern)
        #expect(a.isEqual(to: SecretBytes(Self.pattern)))
        #expect(!a.isEqual(to: SecretBytes(Self.pattern.dropLast())))
        #expect(!a.isEqual(to: SecretBytes(Self.pattern.dropLast() + [0])))
        #expect((a.prefix(4) + a.suffix(12)).isEqual(to: a))
        #expect(a.bytes(4..<8).withUnsafeBytes { Array($0) } == [0xC3, 0x7A, 0x91, 0x4E])
    }

    /// Observes the buffer after the wipe and before it is freed, through the test hook (no read of
    /// freed memory): a secret of 4093 bytes of 0xA5 is all zeros by then.
    @Test("the bytes are zeroed when the last reference goes, for a SecretBytes and for an ESPSAKeys")
    func wipedOnRelease() {
        let seen = Mutex<[[UInt8]]>([])
        SecretBytes.wiped.withLock { $0 = { buffer in if buffer.count == 4093 || buffer.count == 4091 { seen.withLock { $0.append(Array(buffer)) } } } }
        defer { SecretBytes.wiped.withLock { $0 = nil } }
        do {
            let secret = SecretBytes(count: 4093) { $0.initializeMemory(as: UInt8.self, repeating: 0xA5) }
            #expect(secret.withUnsafeBytes { $0.allSatisfy { $0 == 0xA5 } })
        }
        do {
            let sa = ESPSAKeys(spi: 0x1001, key: [UInt8](repeating: 0x5A, count: 4091), salt: [1, 2, 3, 4])
            #expect(sa.key.count == 4091)
        }
        let buffers = seen.withLock { $0 }
        #expect(buffers.map(\.count).sorted() == [4091, 4093], "each released once")
        #expect(buffers.allSatisfy { $0.allSatisfy { $0 == 0 } }, "zeroed before being freed")
    }

    @Test("key hex is read into a secret without an array: bad digits and odd lengths refused")
    func secretHex() {
        #expect(SAFile.secretHexBytes("0xc37a914E")?.withUnsafeBytes { Array($0) } == [0xC3, 0x7A, 0x91, 0x4E])
        for bad in ["0x", "0xc3z4", "0xc37", "c37a", "0x c3", "0xＣ3"] { #expect(SAFile.secretHexBytes(bad) == nil, "\(bad)") }
    }
}
