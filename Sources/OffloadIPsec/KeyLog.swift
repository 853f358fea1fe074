import Foundation
import OffloadCrypto
import OffloadWire

#if canImport(Glibc)
    import Glibc
#endif

/// The SAs as lines of Wireshark's `esp_sa` table (its ESP preferences, "ESP SAs"), in the spirit
/// of SSLKEYLOGFILE: with them tshark decrypts a capture of the tunnel
/// (`tshark -o esp.enable_encryption_decode:TRUE -o 'uat:esp_sa:<line>'`, one per SA, or the lines
/// in `~/.config/wireshark/esp_sa`). The file holds keys: it is written with mode 0600.
public enum ESPKeyLog {
    /// One line per SA: the outbound SA from `local` to `remote`, the inbound one back (`*` for an
    /// unknown address). ChaCha20-Poly1305, which Wireshark 4.0 does not decrypt, is a comment.
    public static func lines(_ tunnels: [ESPTunnelConfiguration], local: IPAddress?, remote: IPAddress?) -> [String] {
        let family = (local ?? remote).map { $0.isIPv4 ? "IPv4" : "IPv6" } ?? "IPv4"
        let here = local?.description ?? "*", there = remote?.description ?? "*"
        var out: [String] = []
        for t in tunnels {
            for (sa, source, destination) in [(t.outbound, here, there), (t.inbound, there, here)] {
                let spi = "0x" + String(format: "%08x", sa.spi)
                let key = "0x" + sa.keyMaterial.hexForKeyFile()
                guard let algorithm = t.algorithm.wiresharkName else {
                    out.append("# \(t.name) \(spi): \(t.algorithm) (Wireshark 4.0 cannot decrypt it)")
                    continue
                }
                out.append("\"\(family)\",\"\(source)\",\"\(destination)\",\"\(spi)\",\"\(algorithm)\",\"\(key)\",\"NULL\",\"\"")
            }
        }
        return out
    }

    /// Writes the lines to `path` with mode 0600: a new file, renamed over what was there (so a
    /// reader that held an older, more open file at that path never sees these keys).
    /// - Throws: a message when the file cannot be written.
    public static func write(_ lines: [String], to path: String) throws(SAFileError) {
        do { try ProtectedFile.replace(path, with: Array((lines.joined(separator: "\n") + "\n").utf8)) } catch {
            throw SAFileError(path, nil, error.description)
        }
    }
}

extension ESPAlgorithm {
    /// Wireshark's name for the algorithm in its `esp_sa` table (nil: Wireshark 4.0 has none).
    public var wiresharkName: String? {
        switch self {
        case .aesGCM128, .aesGCM256: "AES-GCM with 16 octet ICV [RFC4106]"
        case .chacha20Poly1305: nil
        }
    }
}
