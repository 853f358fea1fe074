import Foundation
import OffloadIPsec
import Testing

@testable import OffloadIKE

/// A configuration for one connection with a pre-shared key, `hole` a line of its own (where a test
/// puts what it checks), `secretLines` what the `ike-1` section holds.
func ikeConfigText(hole: String = "", childHole: String = "", secretLines: String = "secret = \"TopSecretPSK-12345\"") -> String {
    """
    connections {
      site {
        local_addrs = 192.0.2.1
        remote_addrs = 192.0.2.2
        \(hole)
        local { auth = psk
          id = gw1 }
        remote { auth = psk
          id = gw2 }
        children {
          net {
            local_ts = 10.1.0.0/24
            remote_ts = 10.2.0.0/24
            \(childHole)
          }
        }
      }
    }
    secrets {
      ike-1 {
        id = gw2
        \(secretLines)
      }
    }
    """
}

/// The 1-based line of the first line of `text` that contains `needle`.
func lineNumber(of needle: String, in text: String) -> Int? {
    text.split(separator: "\n", omittingEmptySubsequences: false).firstIndex { $0.contains(needle) }.map { $0 + 1 }
}

@Suite("IKE configuration: errors never show a secret; hostile numbers are refused with their line")
struct IKEConfigSecretsTests {
    static let psk = "TopSecretPSK-12345"

    /// Broken `secrets` sections (and a secret put where it does not belong): each error names a
    /// line and never the secret's text.
    @Test("a syntax error near a secret names the line and shows <secret>, never the secret", arguments: [
        "secret =\n    TopSecretPSK-12345",                      // the value on the next line: a word alone
        "secret = TopSecretPSK-12345 = x",                        // `=` inside the value
        "secret =\n    TopSecretPSK-12345 oops",                  // the value on the next line, then more
        "TopSecretPSK-12345 = 1",                                  // the secret as a setting's name
        "TopSecretPSK-12345 {",                                    // the secret as a section that is never closed
        "secret =\nTopSecretPSK-12345 = 2",                       // the value on the next line, as a setting
    ])
    func secretNeverQuoted(lines: String) throws {
        let text = ikeConfigText(secretLines: lines)
        do {
            _ = try IKEConfig.parse(text, path: "leak.conf")
            Issue.record("accepted: \(lines)")
        } catch {
            #expect(!error.description.contains("TopSecret"), "\(error)")
            #expect(error.description.range(of: #"^leak\.conf:\d+: "#, options: .regularExpression) != nil, "\(error)")
        }
    }

    @Test("a section of `secrets` that is not ike..., and a secret left on the next line in a connection, stay unquoted")
    func otherSecretPlaces() throws {
        for text in [
            ikeConfigText().replacingOccurrences(of: "ike-1 {", with: "TopSecretPSK-12345 {"),
            ikeConfigText(hole: "secret =\n    TopSecretPSK-12345"),
        ] {
            do {
                _ = try IKEConfig.parse(text, path: "leak.conf")
                Issue.record("accepted")
            } catch {
                #expect(!error.description.contains("TopSecret"), "\(error)")
                #expect(error.description.hasPrefix("leak.conf:"), "\(error)")
            }
        }
    }

    @Test("the parsed tree prints secret settings as <secret>")
    func treeRedacted() throws {
        let root = try SwanctlSection.parse(ikeConfigText())
        var dumped = ""
        dump(root, to: &dumped)
        for text in [dumped, String(describing: root), String(reflecting: root)] {
            #expect(!text.contains("TopSecret"), "\(text)")
        }
        #expect(dumped.contains("<secret>"))
        // The value is still there for the reader that needs it.
        #expect(root.section("secrets")?.section("ike-1")?.value("secret")?.value == Self.psk)
    }

    /// Hostile numbers: each is refused with the line it is on, and none traps.
    @Test("hostile numbers are refused with their line", arguments: [
        ("", "rekey_bytes = 99999999999G"),
        ("", "rekey_bytes = 18446744073709551615K"),
        ("", "rekey_packets = 18446744073709551616"),
        ("", "rekey_bytes = -1"),
        ("", "rekey_bytes = G"),
        ("", "rekey_bytes = +5"),
        ("", "rekey_time = inf"),
        ("", "rekey_time = nan"),
        ("", "rekey_time = 1e400"),
        ("", "rekey_time = 99999999999999999999d"),
        ("", "rekey_time = -5s"),
        ("", "rekey_time = 0x10"),
        ("", "local_ts = 10.1.0.0/99999999999999999999"),
        ("", "local_ts = 10.1.0.0/-1"),
        ("rekey_time = 9223372036854775807h", ""),
        ("dpd_delay = 1e300", ""),
        ("retransmit_timeout = infs", ""),
        ("retransmit_tries = 99999999999999999999", ""),
        ("retransmit_tries = -1", ""),
        ("retransmit_base = nan", ""),
        ("retransmit_base = 1e400", ""),
    ])
    func hostileNumbers(connectionLine: String, childLine: String) throws {
        let text = ikeConfigText(hole: connectionLine, childHole: childLine)
        let line = try #require(lineNumber(of: connectionLine.isEmpty ? childLine : connectionLine, in: text))
        do {
            _ = try IKEConfig.parse(text, path: "n.conf")
            Issue.record("accepted: \(connectionLine)\(childLine)")
        } catch {
            #expect(error.description.hasPrefix("n.conf:\(line): "), "\(error)")
        }
    }

    @Test("numbers at their limits are read exactly")
    func limits() throws {
        let text = ikeConfigText(hole: "rekey_time = 3650d", childHole: "rekey_bytes = 17179869183G\n rekey_packets = 18446744073709551615")
        let c = try #require(try IKEConfig.parse(text).first)
        #expect(c.rekeyTime == 3650 * 86_400)
        #expect(c.children[0].rekeyBytes == 17_179_869_183 << 30)
        #expect(c.children[0].rekeyPackets == UInt64.max)
    }
}
