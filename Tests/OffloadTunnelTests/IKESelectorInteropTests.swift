import Foundation
import OffloadForwarder
import OffloadTestSupport
import Testing

@Suite("IKEv2 selectors with a protocol and port, against strongSwan", .serialized)
struct IKESelectorInteropTests {
    /// (whether this gateway initiates, its remote_ts, strongSwan's local_ts): one side offers TCP
    /// port 5001, the other allows all of TCP and narrows (or accepts) to it.
    static let cases: [(Bool, String, String)] = [
        (true, "10.88.2.0/24[tcp/5001]", "10.88.2.0/24[tcp]"),
        (false, "10.88.2.0/24[tcp]", "10.88.2.0/24[tcp/5001]"),
    ]

    @Test("strongSwan and this gateway agree on 10.88.2.0/24[tcp/5001] in either role; TCP to port 5001 crosses intact, UDP finds no SA",
          .enabled(if: netnsReady && strongSwanAvailable, "needs namespaces and strongSwan (strongswan-charon, strongswan-swanctl, libcharon-extra-plugins)"),
          arguments: cases)
    func portSelector(weInitiate: Bool, ours: String, theirs: String) throws {
        try exclusiveNetwork { try body(weInitiate, ours, theirs) }
    }

    func body(_ weInitiate: Bool, _ ours: String, _ theirs: String) throws {
        let lab = try TunnelLab()
        defer { lab.stopStrongSwan() }
        let path = try lab.writeIKEConfig(1, start: weInitiate ? "start" : "none", esp: "aes128gcm16-noesn")
        let text = try String(contentsOfFile: path, encoding: .utf8)
            .replacingOccurrences(of: "local_ts = 10.88.1.0/24, fd88:1::/64", with: "local_ts = 10.88.1.0/24")
            .replacingOccurrences(of: "remote_ts = 10.88.2.0/24, fd88:2::/64", with: "remote_ts = \(ours)")
        #expect(text.contains("remote_ts = \(ours)"))
        FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600])
        let selectors = ["SW_LOCAL_TS": theirs, "SW_REMOTE_TS": "10.88.1.0/24"]
        if weInitiate {
            try lab.startStrongSwan(2, esp: "aes128gcm16", environment: selectors)
            try lab.startIKE(1)
        } else {
            try lab.startIKE(1)
            try lab.startStrongSwan(2, esp: "aes128gcm16", environment: selectors.merging(["SW_START": "start"]) { a, _ in a })
        }
        #expect(lab.waitFor(seconds: 15) { lab.strongSwanSAs(2).contains("INSTALLED") }, "\(lab.gatewayLog(1))\n\(lab.strongSwanLog(2).suffix(3000))")
        // The status file is written a moment after the SA is installed.
        #expect(lab.waitFor(seconds: 10) { lab.ikeStatus(1).contains("10.88.2.0/24[tcp/5001]") }, "this gateway's CHILD_SA is for TCP port 5001")
        let sas = lab.strongSwanSAs(2)
        print("strongSwan:\n\(sas)\noffload ipsec --status:\n\(lab.ikeStatus(1))")
        #expect(sas.contains("10.88.2.0/24[tcp/5001]"), "strongSwan's CHILD_SA is for TCP port 5001")
        let up = lab.transfer(megabytes: 16, from: lab.client, to: lab.server, address: "10.88.2.2", ipv6: false)
        #expect(up.0, "client -> server:5001, \(up.1) bytes")
        shell("ip netns exec \(lab.client) sh -c 'for i in 1 2 3; do echo x | timeout 1 socat -u - UDP4:10.88.2.2:5001; done'")
        let stats = try lab.stopGateway(1)
        let encap = try #require(stats["lan_to_wan"])
        #expect(encap.tunnel("encapsulation_dropped", ["reason": "no_policy"]) >= 3, "UDP to the same port has no SA")
        withExtendedLifetime(lab) {}
    }
}
