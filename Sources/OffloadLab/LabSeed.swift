import Foundation
import OffloadIPsec

#if canImport(Glibc)
    import Glibc
#endif

/// The seed scenario (`offload lab --scenario seed`): what the project's first user suffered. A client
/// gateway and a server gateway joined by four ESP tunnels (CHILD_SAs), each carrying one TCP download
/// from the server behind the server gateway, every link shaped to 1 Gbit/s with `tc … tbf`:
///
///     client ── gw (client side) ══ 4 ESP tunnels, one per server port ══ gw2 ── server :5201…5204
///
/// Tunnel *i* carries only TCP to and from the server's port `ports[i]`: its selectors are
/// `10.77.1.0/24` ⇄ `10.77.2.2/32[tcp/PORT]`, for strongSwan (`local_ts`/`remote_ts` of four
/// children) and for `offload ipsec` (four tunnels of one SA file) alike.
public enum LabSeed {
    /// The iperf3 servers' ports: one download, one tunnel each.
    public static let ports = [5201, 5202, 5203, 5204]
    /// The rate every link is shaped to, Mbit/s (`tc qdisc … tbf rate 1gbit`).
    public static let linkRateMbps = 1000
    /// The default length of a seed row: long enough for the flows' shares to settle.
    public static let defaultSeconds = 10.0
    /// The client side's prefix (the client gateway's `local_ts`).
    public static let clientPrefix = "10.77.1.0/24"
    /// The server (the far side's `local_ts`, narrowed to one port per tunnel).
    public static let serverHost = "10.77.2.2/32"
    /// The IKE and ESP proposals of the strongSwan row (libipsec has no ESN).
    public static let ikeProposal = "aes128gcm16-prfsha256-x25519"
    /// The ESP proposal of the strongSwan row.
    public static let espProposal = "aes128gcm16"
    /// Where the strongSwan row finds charon.
    public static let charonPath = "/usr/lib/ipsec/charon"

    /// The server-side selector of the tunnel for `port`: `10.77.2.2/32[tcp/5201]`.
    public static func serverSelector(port: Int) -> String { "\(serverHost)[tcp/\(port)]" }

    /// The server side's prefix in the strongSwan row: the server's LAN, narrowed to a port per child.
    public static let serverPrefix = "10.77.2.0/24"

    /// The strongSwan row's server-side selector for `port`: `10.77.2.0/24[tcp/5201]`. Not the
    /// server's /32: kernel-libipsec routes each outbound policy into its TUN device from a local
    /// address inside the policy's source selector, and refuses the CHILD_SA ("error installing
    /// route with policy", TS_UNACCEPTABLE) when the server gateway has none there. The prefix holds
    /// the gateway's own 10.77.2.1; the port still gives each download its own CHILD_SA.
    public static func strongSwanServerSelector(port: Int) -> String { "\(serverPrefix)[tcp/\(port)]" }

    /// The name of the tunnel (CHILD_SA) for `port`.
    public static func tunnelName(port: Int) -> String { "t\(port)" }

    /// The `tc` arguments that shape one device's egress to ``linkRateMbps``: a token bucket with a
    /// 64 KB burst and at most 10 ms of queue (12.5 Mbit, about 830 full-size packets at 1 Gbit/s).
    public static func shaping(device: String) -> [String] {
        ["tc", "qdisc", "replace", "dev", device, "root", "tbf", "rate", "\(linkRateMbps)mbit", "burst", "64kb",
         "latency", "10ms"]
    }

    /// Whether strongSwan's charon with kernel-libipsec and swanctl are installed (the strongSwan row's needs).
    public static var strongSwanInstalled: Bool {
        access(charonPath, X_OK) == 0 && isInstalled("swanctl")
            && access("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so", R_OK) == 0
    }

    // MARK: strongSwan

    /// charon's `strongswan.conf` for gateway `n` (1: the client's, 2: the server's): kernel-libipsec
    /// (userspace ESP through a TUN device, which also routes the far side into it), its own vici
    /// socket and log in `directory`.
    public static func charonConfiguration(gateway n: Int, directory: String) -> String {
        """
        charon {
          load = random nonce openssl aes sha1 sha2 hmac gcm chapoly curve25519 kdf pem pkcs1 x509 pubkey kernel-libipsec kernel-netlink socket-default vici updown
          install_routes = yes
          retransmit_timeout = 1
          retransmit_tries = 3
          plugins {
            vici { socket = unix://\(directory)/charon\(n).vici }
          }
          filelog {
            charon\(n) { path = \(directory)/charon\(n).log
              default = 1
              flush_line = yes }
          }
        }

        """
    }

    /// `swanctl.conf` for gateway `n`: one IKE_SA over the underlay (ESP in UDP) with one child per
    /// port, each narrowed to TCP to or from that port of the server. The client's gateway (1)
    /// starts the children; the server's (2) waits for them. `psk` is made for the row.
    public static func swanctlConfiguration(gateway n: Int, psk: String) -> String {
        let me = "192.168.77.\(n)", peer = "192.168.77.\(3 - n)"
        var children = ""
        for port in ports {
            let server = strongSwanServerSelector(port: port)
            let (local, remote) = n == 1 ? (clientPrefix, server) : (server, clientPrefix)
            children += """
                      \(tunnelName(port: port)) {
                        local_ts = \(local)
                        remote_ts = \(remote)
                        esp_proposals = \(espProposal)
                        start_action = \(n == 1 ? "start" : "trap")
                      }

                """
        }
        return """
            connections {
              seed {
                local_addrs = \(me)
                remote_addrs = \(peer)
                encap = yes
                proposals = \(ikeProposal)
                local { auth = psk
                  id = gw\(n) }
                remote { auth = psk
                  id = gw\(3 - n) }
                children {
            \(children)    }
              }
            }
            secrets {
              ike-seed { id-a = gw1
                id-b = gw2
                secret = "\(psk)" }
            }

            """
    }

    /// Per-child bytes sent, from `swanctl --list-sas` output: each child's `out SPI, N bytes` line,
    /// summed by child name (a rekeyed child shows twice), in the order of ``ports``.
    public static func childBytesOut(listing: String) -> [Int] {
        var bytes: [String: Int] = [:]
        var child: String?
        for raw in listing.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if let name = line.split(separator: ":").first, line.contains("reqid") {
                child = String(name)
            } else if line.hasPrefix("out "), let child {
                let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                if fields.count > 1, fields[1].hasSuffix(" bytes"), let n = Int(fields[1].dropLast(6).trimmingCharacters(in: .whitespaces)) {
                    bytes[child, default: 0] += n
                }
            }
        }
        return ports.map { bytes[tunnelName(port: $0)] ?? 0 }
    }

    // MARK: offload ipsec

    /// The client gateway's tunnels for `offload ipsec` (``ESPTunnelConfiguration/reversed`` is the
    /// server gateway's), keys made on the spot: one per port with the selectors above, or with
    /// `single` one tunnel for all four downloads (`10.77.1.0/24` ⇄ `10.77.2.0/24`, the comparison:
    /// one SA, one sequence of sealing, for every flow).
    public static func offloadTunnels(single: Bool = false) -> [ESPTunnelConfiguration] {
        let client = TrafficSelector(clientPrefix)!
        if single {
            return [SAFile.freshTunnel(name: "seed", algorithm: .aesGCM128, local: [client], remote: [TrafficSelector(serverPrefix)!])]
        }
        return ports.enumerated().map { i, port in
            SAFile.freshTunnel(name: tunnelName(port: port), algorithm: .aesGCM128, local: [client],
                               remote: [TrafficSelector(serverSelector(port: port))!],
                               outboundSPI: 0x1001 + UInt32(i), inboundSPI: 0x2001 + UInt32(i))
        }
    }

    /// A pre-shared key for one row: 32 random bytes as hex (from the system's generator).
    static func freshPSK() -> String {
        var bytes = [UInt8](repeating: 0, count: 32)
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
        return "0x" + bytes.map { String(format: "%02x", $0) }.joined()
    }
}
