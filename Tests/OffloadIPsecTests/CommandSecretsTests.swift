import Foundation
import OffloadIPsec
import OffloadTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The command as a user meets it: a configuration with a hostile number or a misplaced secret
/// ends with exit status 1 and an error naming the line, never a trap (status 132/133) or a crash
/// report, never the secret.
@Suite("offload ipsec: bad configurations end with a clear error")
struct CommandSecretsTests {
    static let ike = """
        connections {
          site {
            local_addrs = 192.0.2.1
            remote_addrs = 192.0.2.2
            local { auth = psk
              id = gw1 }
            remote { auth = psk
              id = gw2 }
            children {
              net {
                local_ts = 10.1.0.0/24
                remote_ts = 10.2.0.0/24
                HOLE
              }
            }
          }
        }
        secrets {
          ike-1 {
            id = gw2
            SECRET
          }
        }
        """

    @Test("a hostile number and a secret on the wrong line: exit 1, the line, no secret",
          .enabled(if: offloadExecutable != nil, "the offload executable was not built"), arguments: [
              ("rekey_bytes = 99999999999G", "secret = TopSecretPSK-12345", 13),
              ("rekey_packets = 18446744073709551616", "secret = TopSecretPSK-12345", 13),
              ("", "secret =\n    TopSecretPSK-12345", 22),
          ])
    func badConfig(hole: String, secret: String, line: Int) throws {
        let offload = try #require(offloadExecutable)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cmd-\(getpid())-\(UUID().uuidString).conf").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try SAFile.write(Self.ike.replacingOccurrences(of: "HOLE", with: hole).replacingOccurrences(of: "SECRET", with: secret), to: path)
        let (status, output) = shell("\(offload) ipsec --config \(path) --device offsec\(getpid() % 1000)")
        #expect(status == 1, "\(output)")
        #expect(output.contains("\(path):\(line): "), "\(output)")
        #expect(!output.contains("TopSecret") && !output.contains("Program crashed"), "\(output)")
    }
}
