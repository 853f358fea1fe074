import ArgumentParser
import Foundation
import OffloadIPsec
import OffloadTunnel
import OffloadWire

/// `offload ipsec`: an ESP-in-UDP gateway with manual keys, live or on captures.
struct IPsec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ipsec",
        abstract: "An IPsec ESP gateway (ESP in UDP, RFC 4303/3948, port 4500) with GRO and GSO on both sides: live between a TUN device and UDP (root), or on captures.",
        discussion: """
            Encryption: packets routed into --device are merged (GRO; the kernel's own super-packets kept whole), \
            checked against the inner MTU (the underlay's MTU less ESP's overhead: "fragmentation needed" / "packet \
            too big" back to the sender when a segment cannot fit), matched to a tunnel by its traffic selectors, \
            and sent as one ESP datagram per segment, each encrypted straight into the buffer it is sent from \
            (AES-GCM-128/256 or ChaCha20-Poly1305, OpenSSL's libcrypto; IV = the sequence number), a whole train per \
            sendmsg with UDP_SEGMENT. Decryption: a UDP_GRO socket hands over trains of datagrams; each is checked \
            against the anti-replay window, decrypted in place, and only when its ICV is right moves the window; \
            its padding and the traffic selectors are checked, and the inner packets are merged again and written \
            to --device as super-packets. NAT keepalives and IKE messages (the non-ESP marker) are counted and left.

            The SAs come from --sa, a file in swanctl.conf's syntax (see docs/ipsec.md), mode 0600: \
              tunnels { NAME { esp_proposals = aes128gcm16  esn = yes  local_ts = ...  remote_ts = ... \
                               out { spi = 0x1001  key = 0x<key and 4-byte salt> }  in { spi = ...  key = ... } } }

            Sequence numbers never repeat under a key, restarts included: before a number is used, a high-water \
            mark at or above it is fsynced to --state (default: the SA file's path with .seq). A sender whose \
            numbers are used up (2^32 without ESN) stops and says so; new keys (new SAs) go on.

            --write-keys FILE writes Wireshark's esp_sa lines (mode 0600) so that tshark decrypts a capture.

            Offline: with IN OUT, the packets of IN are encrypted (--local -> --remote, outer IPv4 or IPv6 and \
            UDP 4500), or with --decrypt the inner packets of IN's ESP datagrams are written (refusals counted).

            Examples:
              offload ipsec --sa /etc/offload/ipsec.conf --device ipsec0 --local 192.0.2.1 --remote 192.0.2.2 --setup --route 10.2.0.0/16
              offload ipsec --sa ipsec.conf --local 192.0.2.1 --remote 192.0.2.2 inner.pcapng esp.pcap
              offload ipsec --sa peer.conf --decrypt esp.pcap inner.pcap
            """)

    @Option(help: "The SA file (manual keys, swanctl.conf syntax, mode 0600).")
    var sa: String
    @Option(help: "Where sequence high-water marks are kept (default: the SA file's path with .seq).")
    var state: String?
    @Option(help: "Write the SAs as Wireshark esp_sa lines to this file (mode 0600) so tshark can decrypt.")
    var writeKeys: String?
    @Flag(help: "Offline: take the inner packets out of IN's ESP datagrams instead of encrypting.")
    var decrypt = false
    @OptionGroup var endpoint: TunnelEndpointOptions

    func validate() throws {
        try endpoint.check(needsAddressesOffline: !decrypt)
    }

    func run() async throws {
        let tunnels: [ESPTunnelConfiguration]
        do { tunnels = try SAFile.load(path: sa) } catch { throw InputError(message: "\(error)") }
        let policy: ESPSecurityPolicy
        do {
            // Decrypting a capture sends nothing: it needs no sequence numbers, and leaves the marks alone.
            let store = decrypt && !endpoint.live ? nil : try SequenceStore(path: state ?? sa + ".seq")
            policy = try ESPSecurityPolicy(tunnels: tunnels, store: store)
        } catch { throw InputError(message: "\(error)") }
        if let writeKeys {
            let local = endpoint.local.flatMap { IPAddress($0) }, remote = endpoint.remote.flatMap { IPAddress($0) }
            do { try ESPKeyLog.write(ESPKeyLog.lines(tunnels, local: local, remote: remote), to: writeKeys) } catch {
                throw InputError(message: "--write-keys: \(error)")
            }
        }
        let codec = ESPCodec(policy: policy)
        if endpoint.live {
            try await endpoint.serve(codec: codec, label: "offload.ipsec")
        } else {
            try endpoint.runOffline(codec: codec, decapsulate: decrypt, name: "ESP")
        }
    }
}
