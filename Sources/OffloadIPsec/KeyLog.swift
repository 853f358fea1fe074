import Foundation
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

    /// Writes the lines to `path` with mode 0600 (a file that was there is truncated and made 0600).
    /// - Throws: a message when the file cannot be written.
    public static func write(_ lines: [String], to path: String) throws(SAFileError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw SAFileError(path, nil, String(cString: strerror(errno))) }
        defer { close(fd) }
        fchmod(fd, 0o600)
        let bytes = Array((lines.joined(separator: "\n") + "\n").utf8)
        let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else { throw SAFileError(path, nil, "short write") }
    }
}
