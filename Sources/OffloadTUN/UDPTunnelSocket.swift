import COffloadShims
import OffloadWire
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A UDP socket for a tunnel's outer side, with the kernel's UDP offloads: sends carry a
/// `UDP_SEGMENT` size so one `sendmsg` puts a whole train of same-size datagrams on the wire (UDP
/// GSO), and reads return trains the kernel coalesced (`UDP_GRO`) with their datagram size. Path
/// MTU discovery is on (DF set): the tunnel learns the underlay's MTU instead of fragmenting.
///
/// Connected (GTP-U: both ends use port 2152), the kernel delivers only the far end's datagrams.
/// Unconnected (VXLAN: senders pick their source port from the inner flow's hash), it delivers
/// anyone's, and ``receive(into:)`` says whether they came from the far end's address.
///
/// Both directions of a tunnel use one socket (a send and a receive may run on different threads
/// at once, as UDP sockets allow), so it is a class; the descriptor closes when it goes away.
public final class UDPTunnelSocket: @unchecked Sendable {
    /// The descriptor.
    public let descriptor: CInt
    /// The local and remote addresses.
    public let local: IPAddress, remote: IPAddress
    /// The UDP port at both ends.
    public let port: UInt16
    /// Whether the kernel accepted UDP_GRO on the socket.
    public let receiveCoalescing: Bool
    /// Whether the socket is connected to the remote end.
    public let connected: Bool
    /// The remote end as a socket address (for sends on an unconnected socket, and the sender check).
    let remoteAddress: [UInt8]

    /// The most datagrams one UDP GSO send may carry (UDP_MAX_SEGMENTS in older kernels).
    public static let maximumSegmentsPerSend = 64
    /// The most payload bytes one send may carry (one IP packet's worth, before the kernel cuts it).
    public static let maximumBytesPerSend = 65_000

    /// Opens the socket: bound to `local`:`port`, sending to `remote`:`port`.
    /// - Parameters:
    ///   - coalesce: ask for UDP_GRO (falls back to plain reads when the kernel refuses).
    ///   - connected: connect to the remote end (receive only from its address and port).
    /// - Throws: ``TUNError`` (`device` names the socket) when the addresses are of different
    ///   families or binding fails.
    public init(local: IPAddress, remote: IPAddress, port: UInt16, coalesce: Bool = true, connected: Bool = true)
        throws(TUNError)
    {
        self.local = local
        self.remote = remote
        self.port = port
        self.connected = connected
        let name = "udp \(local) -> \(remote):\(port)"
        let family: CInt
        let localAddress: [UInt8]
        switch (local, remote) {
        case (.v4(let l), .v4(let r)):
            family = AF_INET
            localAddress = Self.bytes(of: Self.sockaddr4(l, port))
            remoteAddress = Self.bytes(of: Self.sockaddr4(r, port))
        case (.v6(let l), .v6(let r)):
            family = AF_INET6
            localAddress = Self.bytes(of: Self.sockaddr6(l, port))
            remoteAddress = Self.bytes(of: Self.sockaddr6(r, port))
        default:
            throw TUNError(operation: "open (local and remote are of different families)", device: name,
                           errno: .invalidArgument)
        }
        let remoteBytes = remoteAddress
        let open = { (gro: Bool) -> CInt in
            unsafe localAddress.withUnsafeBytes { l in
                unsafe remoteBytes.withUnsafeBytes { r in
                    unsafe offload_udp_open(family, l.baseAddress, r.baseAddress, UInt32(l.count), gro ? 1 : 0, connected ? 1 : 0)
                }
            }
        }
        var fd = open(coalesce)
        var coalescing = coalesce
        if fd == -ENOPROTOOPT && coalesce {
            fd = open(false)
            coalescing = false
        }
        guard fd >= 0 else { throw TUNError(operation: "bind/connect", device: name, errno: Errno(rawValue: -fd)) }
        descriptor = fd
        receiveCoalescing = coalescing
    }

    static func bytes<T>(of value: T) -> [UInt8] {
        unsafe withUnsafeBytes(of: value) { unsafe Array($0) }
    }

    static func sockaddr4(_ a: IPv4Address, _ port: UInt16) -> sockaddr_in {
        var s = sockaddr_in()
        s.sin_family = sa_family_t(AF_INET)
        s.sin_port = port.bigEndian
        s.sin_addr = in_addr(s_addr: a.rawValue.bigEndian)
        return s
    }

    static func sockaddr6(_ a: IPv6Address, _ port: UInt16) -> sockaddr_in6 {
        var s = sockaddr_in6()
        s.sin6_family = sa_family_t(AF_INET6)
        s.sin6_port = port.bigEndian
        unsafe withUnsafeMutableBytes(of: &s.sin6_addr) { raw in
            unsafe raw.storeBytes(of: a.high.bigEndian, toByteOffset: 0, as: UInt64.self)
            unsafe raw.storeBytes(of: a.low.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        return s
    }

    /// Sends the iovecs as one payload; with `segmentSize`, the kernel cuts it into datagrams of
    /// that size (the last may be shorter). Retries on EINTR.
    /// - Throws: ``TUNError``: EMSGSIZE when a datagram exceeds the path MTU, EIO/EINVAL when the
    ///   kernel or device refuses UDP GSO.
    /// - Parameter trafficClass: this send's TOS / traffic class as a control message, leaving the
    ///   socket's own (``setTrafficClass(_:)``) alone; nil: the socket's.
    /// - Parameter destination: where to send on an unconnected socket serving many peers (nil:
    ///   the remote end); ignored on a connected socket. Must be of the socket's family.
    @discardableResult
    public func send(_ iovecs: UnsafeBufferPointer<iovec>, segmentSize: Int = 0, trafficClass: UInt8? = nil,
                     to destination: UDPEndpoint? = nil) throws(TUNError) -> Int {
        var n: Int
        let tos = trafficClass.map { CInt($0) } ?? -1
        repeat {
            n = unsafe withSocketAddress(of: destination) { address, length in
                unsafe offload_udp_send_tos(descriptor, iovecs.baseAddress, CInt(iovecs.count), CInt(segmentSize),
                                            connected ? nil : address, length, tos, remote.isIPv4 ? 0 : 1)
            }
        } while n == -Int(EINTR)
        guard n >= 0 else {
            throw TUNError(operation: "sendmsg", device: "udp \(destination?.description ?? "\(remote):\(port)")", errno: Errno(rawValue: CInt(-n)))
        }
        return n
    }

    /// Calls `body` with `destination` as a socket address (the remote end's when nil), built on
    /// the stack: a send to one of many peers allocates nothing.
    func withSocketAddress<R>(of destination: UDPEndpoint?, _ body: (UnsafeRawPointer?, UInt32) -> R) -> R {
        switch destination?.address {
        case nil:
            return unsafe remoteAddress.withUnsafeBytes { unsafe body($0.baseAddress, UInt32($0.count)) }
        case .v4(let a)?:
            let address = Self.sockaddr4(a, destination!.port)
            return unsafe withUnsafeBytes(of: address) { unsafe body($0.baseAddress, UInt32($0.count)) }
        case .v6(let a)?:
            let address = Self.sockaddr6(a, destination!.port)
            return unsafe withUnsafeBytes(of: address) { unsafe body($0.baseAddress, UInt32($0.count)) }
        }
    }

    /// Sends one contiguous datagram (with the socket's TOS, or `trafficClass` for this one).
    public func send(_ datagram: [UInt8], trafficClass: UInt8? = nil, to destination: UDPEndpoint? = nil) throws(TUNError) {
        var failure: TUNError?
        unsafe datagram.withUnsafeBytes { raw in
            var iov = unsafe iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress), iov_len: raw.count)
            unsafe withUnsafePointer(to: &iov) { p in
                do throws(TUNError) {
                    unsafe try send(UnsafeBufferPointer(start: p, count: 1), trafficClass: trafficClass, to: destination)
                } catch { failure = error }
            }
        }
        if let failure { throw failure }
    }

    /// Sets the TOS / traffic class of the datagrams sent from now on (IP_TOS, IPV6_TCLASS).
    public func setTrafficClass(_ value: UInt8) {
        var v = CInt(value)
        _ = unsafe remote.isIPv4
            ? setsockopt(descriptor, CInt(IPPROTO_IP), IP_TOS, &v, socklen_t(MemoryLayout<CInt>.size))
            : setsockopt(descriptor, CInt(IPPROTO_IPV6), IPV6_TCLASS, &v, socklen_t(MemoryLayout<CInt>.size))
    }

    /// Reads what is waiting into `buffer`: nil when nothing is (EAGAIN), else the bytes read, the
    /// size of each datagram in them (0: one datagram), whether they came from the remote end's
    /// address (always, on a connected socket), their outer TOS / traffic class when known, and
    /// the sender's address and port (every datagram of a UDP GRO train has the same sender).
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(TUNError)
        -> (length: Int, segmentSize: Int, fromRemote: Bool, tos: UInt8?, source: UDPEndpoint?)?
    {
        var segment: CInt = 0
        var fromRemote: CInt = 0
        var tos: CInt = -1
        var source: (UInt64, UInt64) = (0, 0)
        var sourcePort: UInt16 = 0
        var sourceFamily: CInt = 0
        var n: Int
        repeat {
            n = unsafe remoteAddress.withUnsafeBytes { r in
                // Safe: `source` is 16 bytes, as the shim writes at most.
                unsafe withUnsafeMutableBytes(of: &source) { s in
                    unsafe offload_udp_receive_from(descriptor, buffer.baseAddress, UInt(buffer.count), &segment, r.baseAddress,
                                                    &fromRemote, &tos, s.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                                    &sourcePort, &sourceFamily)
                }
            }
        } while n == -Int(EINTR)
        if n == -Int(EAGAIN) || n == -Int(EWOULDBLOCK) { return nil }
        // A connected UDP socket reports ICMP errors from the path (port unreachable while the far
        // end starts) on the next call: not a reason to stop.
        if n == -Int(ECONNREFUSED) || n == -Int(EHOSTUNREACH) || n == -Int(ENETUNREACH) { return (0, 0, true, nil, nil) }
        guard n >= 0 else { throw TUNError(operation: "recvmsg", device: "udp \(local):\(port)", errno: Errno(rawValue: CInt(-n))) }
        let sender: UDPEndpoint?
        switch sourceFamily {
        case AF_INET: sender = UDPEndpoint(.v4(IPv4Address(rawValue: UInt32(bigEndian: UInt32(truncatingIfNeeded: source.0)))), sourcePort)
        case AF_INET6: sender = UDPEndpoint(.v6(IPv6Address(high: UInt64(bigEndian: source.0), low: UInt64(bigEndian: source.1))), sourcePort)
        default: sender = nil
        }
        return (n, Int(segment), connected || fromRemote != 0, tos >= 0 ? UInt8(tos) : nil, sender)
    }

    /// Waits until something can be read, for at most `milliseconds`.
    public func waitReadable(milliseconds: Int) -> Bool {
        var p = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        return unsafe system_poll(&p, 1, CInt(milliseconds)) > 0 && p.revents & Int16(POLLIN) != 0
    }

    /// The MTU of the interface that holds `address` (nil: no interface has it): the underlay's
    /// MTU of a socket that serves many peers, where no one far end names a path.
    public static func interfaceMTU(holding address: IPAddress) -> Int? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard unsafe getifaddrs(&list) == 0 else { return nil }
        defer { unsafe freeifaddrs(list) }
        var name: String?
        var entry = unsafe list
        // Safe: the list is getifaddrs's, alive until freeifaddrs; each sockaddr is read as its family says.
        while let e = unsafe entry, name == nil {
            if let sa = unsafe e.pointee.ifa_addr {
                let family = unsafe CInt(sa.pointee.sa_family)
                switch (family, address) {
                case (AF_INET, .v4(let a)):
                    let s = unsafe UnsafeRawPointer(sa).assumingMemoryBound(to: sockaddr_in.self).pointee
                    if UInt32(bigEndian: s.sin_addr.s_addr) == a.rawValue { name = unsafe String(cString: e.pointee.ifa_name) }
                case (AF_INET6, .v6(let a)):
                    let s = unsafe UnsafeRawPointer(sa).assumingMemoryBound(to: sockaddr_in6.self).pointee
                    let bytes = unsafe withUnsafeBytes(of: s.sin6_addr) { unsafe Array($0) }
                    if IPv6Address(bytes, 0) == a { name = unsafe String(cString: e.pointee.ifa_name) }
                default: break
                }
            }
            entry = unsafe e.pointee.ifa_next
        }
        guard let name else { return nil }
        let mtu = unsafe offload_interface_mtu(name)
        return mtu > 0 ? Int(mtu) : nil
    }

    /// The path MTU towards the remote end, as the kernel knows it (nil when the remote end is the
    /// unspecified address: a socket of many peers has no one path).
    public var pathMTU: Int? {
        guard !remote.isUnspecified else { return nil }
        let r = unsafe remoteAddress.withUnsafeBytes { address in
            unsafe offload_udp_path_mtu(remote.isIPv4 ? AF_INET : AF_INET6, address.baseAddress, UInt32(address.count))
        }
        return r > 0 ? Int(r) : nil
    }
}
