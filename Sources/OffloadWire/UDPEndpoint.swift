/// An address and a UDP port: where a peer's datagrams come from and go to (an IKE peer, an ESP
/// peer behind a NAT whose port the NAT chose).
public struct UDPEndpoint: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The address.
    public var address: IPAddress
    /// The port.
    public var port: UInt16

    /// An endpoint.
    public init(_ address: IPAddress, _ port: UInt16) {
        self.address = address
        self.port = port
    }

    /// `192.0.2.2:4500`, or `[2001:db8::2]:4500`.
    public var description: String {
        address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)"
    }
}
