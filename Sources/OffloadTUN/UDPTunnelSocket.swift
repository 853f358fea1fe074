import COffloadShims
import OffloadWire
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A connected UDP socket for a tunnel's outer side, with the kernel's UDP offloads: sends carry
/// a `UDP_SEGMENT` size so one `sendmsg` puts a whole train of same-size datagrams on the wire
/// (UDP GSO), and reads return trains the kernel coalesced (`UDP_GRO`) with their datagram size.
/// Path MTU discovery is on (DF set): the tunnel learns the underlay's MTU instead of fragmenting.
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

    /// The most datagrams one UDP GSO send may carry (UDP_MAX_SEGMENTS in older kernels).
    public static let maximumSegmentsPerSend = 64
    /// The most payload bytes one send may carry (one IP packet's worth, before the kernel cuts it).
    public static let maximumBytesPerSend = 65_000

    /// Opens the socket: bound to `local`:`port`, connected to `remote`:`port`.
    /// - Parameter coalesce: ask for UDP_GRO (falls back to plain reads when the kernel refuses).
    /// - Throws: ``TUNError`` (`device` names the socket) when the addresses are of different
    ///   families or binding fails.
    public init(local: IPAddress, remote: IPAddress, port: UInt16, coalesce: Bool = true) throws(TUNError) {
        self.local = local
        self.remote = remote
        self.port = port
        let name = "udp \(local) -> \(remote):\(port)"
        var fd: CInt
        switch (local, remote) {
        case (.v4(let l), .v4(let r)):
            var a = Self.sockaddr4(l, port), b = Self.sockaddr4(r, port)
            fd = unsafe offload_udp_open(AF_INET, &a, &b, UInt32(MemoryLayout<sockaddr_in>.size), coalesce ? 1 : 0)
            if fd == -ENOPROTOOPT && coalesce {
                fd = unsafe offload_udp_open(AF_INET, &a, &b, UInt32(MemoryLayout<sockaddr_in>.size), 0)
            }
        case (.v6(let l), .v6(let r)):
            var a = Self.sockaddr6(l, port), b = Self.sockaddr6(r, port)
            fd = unsafe offload_udp_open(AF_INET6, &a, &b, UInt32(MemoryLayout<sockaddr_in6>.size), coalesce ? 1 : 0)
            if fd == -ENOPROTOOPT && coalesce {
                fd = unsafe offload_udp_open(AF_INET6, &a, &b, UInt32(MemoryLayout<sockaddr_in6>.size), 0)
            }
        default:
            throw TUNError(operation: "open (local and remote are of different families)", device: name,
                           errno: .invalidArgument)
        }
        guard fd >= 0 else { throw TUNError(operation: "bind/connect", device: name, errno: Errno(rawValue: -fd)) }
        descriptor = fd
        receiveCoalescing = coalesce
    }

    deinit { _ = system_close(descriptor) }

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
    @discardableResult
    public func send(_ iovecs: UnsafeBufferPointer<iovec>, segmentSize: Int = 0) throws(TUNError) -> Int {
        var n: Int
        repeat {
            n = unsafe offload_udp_send(descriptor, iovecs.baseAddress, CInt(iovecs.count), CInt(segmentSize))
        } while n == -Int(EINTR)
        guard n >= 0 else { throw TUNError(operation: "sendmsg", device: "udp \(remote):\(port)", errno: Errno(rawValue: CInt(-n))) }
        return n
    }

    /// Sends one contiguous datagram.
    public func send(_ datagram: [UInt8]) throws(TUNError) {
        var failure: TUNError?
        unsafe datagram.withUnsafeBytes { raw in
            var iov = unsafe iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress), iov_len: raw.count)
            unsafe withUnsafePointer(to: &iov) { p in
                do throws(TUNError) { unsafe try send(UnsafeBufferPointer(start: p, count: 1)) } catch { failure = error }
            }
        }
        if let failure { throw failure }
    }

    /// Reads what is waiting into `buffer`: nil when nothing is (EAGAIN), else the bytes read and
    /// the size of each datagram in them (0: one datagram).
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(TUNError) -> (length: Int, segmentSize: Int)? {
        var segment: CInt = 0
        var n: Int
        repeat {
            n = unsafe offload_udp_receive(descriptor, buffer.baseAddress, UInt(buffer.count), &segment)
        } while n == -Int(EINTR)
        if n == -Int(EAGAIN) || n == -Int(EWOULDBLOCK) { return nil }
        // A connected UDP socket reports ICMP errors from the path (port unreachable while the far
        // end starts) on the next call: not a reason to stop.
        if n == -Int(ECONNREFUSED) || n == -Int(EHOSTUNREACH) || n == -Int(ENETUNREACH) { return (0, 0) }
        guard n >= 0 else { throw TUNError(operation: "recvmsg", device: "udp \(local):\(port)", errno: Errno(rawValue: CInt(-n))) }
        return (n, Int(segment))
    }

    /// Waits until something can be read, for at most `milliseconds`.
    public func waitReadable(milliseconds: Int) -> Bool {
        var p = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        return unsafe system_poll(&p, 1, CInt(milliseconds)) > 0 && p.revents & Int16(POLLIN) != 0
    }

    /// The path MTU towards the remote end, as the kernel knows it.
    public var pathMTU: Int? {
        let r = offload_udp_path_mtu(descriptor, remote.isIPv4 ? AF_INET : AF_INET6)
        return r > 0 ? Int(r) : nil
    }
}
