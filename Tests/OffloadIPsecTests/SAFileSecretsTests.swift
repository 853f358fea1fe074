import Foundation
import OffloadIPsec
import Testing

/// An SA file with one tunnel, `hole` a line of its own in the tunnel, `outLines` what `out` holds.
func saFileText(hole: String = "", outLines: String = "spi = 0x1001\n key = 0x\(String(repeating: "5a", count: 20))") -> String {
    """
    tunnels {
        t {
            esp_proposals = aes128gcm16
            \(hole)
            out {
                \(outLines)
            }
            in {
                spi = 0x2001
                key = 0x\(String(repeating: "c3", count: 20))
            }
        }
    }
    """
}

/// The 1-based line of the first line of `text` that contains `needle`.
func saLineNumber(of needle: String, in text: String) -> Int? {
    text.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0.contains(needle) }.map { $0 + 1 }
}

@Suite("SA files: errors never show a key; hostile numbers are refused with their line")
struct SAFileSecretsTests {
    static let key = "0x" + String(repeating: "5a", count: 20)

    @Test("an error near a key names the line and never the key", arguments: [
        "spi = 0x1001\n key =\n 0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",          // the key on the next line
        "spi = 0x1001\n key = 0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a = 1",     // `=` in the value
        "spi = 0x1001\n 0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a = 1",          // the key as a setting's name
        "spi = 0x1001\n 0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a {",            // as a section never closed
        "spi = 0x1001\n key = 0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",            // too short
        "spi = 0x1001\n key = 0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5g",          // not hex
    ])
    func keyNeverQuoted(outLines: String) throws {
        do {
            _ = try SAFile.parse(saFileText(outLines: outLines), path: "sa.conf")
            Issue.record("accepted: \(outLines)")
        } catch {
            #expect(!error.description.lowercased().contains("5a5a"), "\(error)")
            #expect(error.description.range(of: #"^sa\.conf:\d+: "#, options: .regularExpression) != nil, "\(error)")
        }
    }

    @Test("hostile numbers are refused with their line", arguments: [
        ("replay_window = 99999999999999999999", ""),
        ("replay_window = -1", ""),
        ("replay_window = 0x400", ""),
        ("local_ts = 10.0.0.0/99999999999999999999", ""),
        ("remote_ts = fd00::/-1", ""),
        ("", "spi = 0x1FFFFFFFF\n key = 0x" + String(repeating: "5a", count: 20)),
        ("", "spi = 99999999999999999999\n key = 0x" + String(repeating: "5a", count: 20)),
        ("", "spi = -1\n key = 0x" + String(repeating: "5a", count: 20)),
        ("", "spi = 0x\n key = 0x" + String(repeating: "5a", count: 20)),
        ("", "spi = 255\n key = 0x" + String(repeating: "5a", count: 20)),
        ("", "spi = 0x1001\n key = 0x" + String(repeating: "5a", count: 4096)),
        ("", "spi = 0x1001\n key = 0x" + String(repeating: "5", count: 41)),
    ])
    func hostileNumbers(hole: String, outLines: String) throws {
        let text = saFileText(hole: hole, outLines: outLines.isEmpty ? "spi = 0x1001\n key = \(Self.key)" : outLines)
        let needle = hole.isEmpty ? String(outLines.prefix { $0 != "\n" }) : hole
        var line = try #require(saLineNumber(of: needle, in: text))
        if outLines.hasPrefix("spi = 0x1001") { line += 1 }  // the key's line
        do {
            _ = try SAFile.parse(text, path: "sa.conf")
            Issue.record("accepted: \(hole)\(outLines)")
        } catch {
            #expect(error.description.hasPrefix("sa.conf:\(line): "), "\(error)")
        }
    }
}
