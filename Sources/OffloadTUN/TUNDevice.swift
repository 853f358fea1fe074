import COffloadShims
import OffloadEngine
import OffloadWire
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// Offloads a TUN device was granted (`TUNSETOFFLOAD`, docs/linux-gro-rules.md §7.2).
public struct TUNOffloads: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The flag bits as `TUN_F_*`.
    public var rawValue: UInt32
    /// Wraps flag bits.
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// `TUN_F_CSUM`: the kernel may hand over (and accepts) partial checksums.
    public static let checksum = TUNOffloads(rawValue: UInt32(OFFLOAD_TUN_F_CSUM))
    /// `TUN_F_TSO4`.
    public static let tso4 = TUNOffloads(rawValue: UInt32(OFFLOAD_TUN_F_TSO4))
    /// `TUN_F_TSO6`.
    public static let tso6 = TUNOffloads(rawValue: UInt32(OFFLOAD_TUN_F_TSO6))
    /// `TUN_F_TSO_ECN`.
    public static let tsoECN = TUNOffloads(rawValue: UInt32(OFFLOAD_TUN_F_TSO_ECN))
    /// `TUN_F_USO4` (Linux 6.2+; only together with USO6).
    public static let uso4 = TUNOffloads(rawValue: UInt32(OFFLOAD_TUN_F_USO4))
    /// `TUN_F_USO6`.
    public static let uso6 = TUNOffloads(rawValue: UInt32(OFFLOAD_TUN_F_USO6))

    /// `csum tso4 tso6 ...`.
    public var description: String {
        let names: [(TUNOffloads, String)] = [(.checksum, "csum"), (.tso4, "tso4"), (.tso6, "tso6"), (.tsoECN, "tso_ecn"),
                                              (.uso4, "uso4"), (.uso6, "uso6")]
        let on = names.filter { contains($0.0) }.map(\.1)
        return on.isEmpty ? "none" : on.joined(separator: " ")
    }
}

/// A failed TUN operation.
public struct TUNError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What was being done.
    public var operation: String
    /// The device.
    public var device: String
    /// The system's reason.
    public var errno: Errno
    /// `tun0: TUNSETIFF: Operation not permitted (creating a TUN device needs root or CAP_NET_ADMIN)`.
    public var description: String {
        let hint = operation == "TUNSETIFF" && (errno == .notPermitted || errno == .permissionDenied)
            ? " (creating or attaching to a TUN device needs root or CAP_NET_ADMIN)" : ""
        return "\(device): \(operation): \(errno)\(hint)"
    }

    /// An error (for other sinks and outputs that report as a device does).
    public init(operation: String, device: String, errno: Errno) {
        self.operation = operation
        self.device = device
        self.errno = errno
    }
}

/// What one read returned.
public enum TUNReadResult: Hashable, Sendable {
    /// A packet was appended to the batch.
    case packet
    /// Nothing to read now (EAGAIN).
    case wouldBlock
    /// The batch has no room for a maximum-size packet.
    case batchFull
    /// A packet came with a virtio_net_hdr that does not fit it: it was dropped.
    case rejected(VirtioError)
}

/// A Linux TUN device (IFF_TUN | IFF_NO_PI, optionally IFF_VNET_HDR and IFF_MULTI_QUEUE), or a TAP
/// device (IFF_TAP: Ethernet frames instead of IP packets, the same offloads).
///
/// Owns its descriptor (`~Copyable`, closed in `deinit`). Reads are non-blocking, one packet per
/// `readv(2)` straight into a ``PacketBatch`` (the virtio header lands in a small side buffer);
/// writes are one `writev(2)` of the virtio header, the packet's header and its payload pieces in
/// place. Linux: drivers/net/tun.c `tun_get_user`, `tun_put_user`.
public struct TUNDevice: ~Copyable {
    /// The size of the virtio_net_hdr this device uses (`struct virtio_net_hdr`).
    public static let vnetHeaderSize = 10
    /// The largest packet a read can return (a 64 KiB GSO packet plus headroom).
    public static let maximumPacket = 65_600

    /// The device name.
    public let name: String
    /// The descriptor.
    public let descriptor: CInt
    /// Whether packets carry a virtio_net_hdr.
    public let vnetHeader: Bool
    /// What the device carries: IP packets (`.raw`, TUN) or Ethernet frames (`.ethernet`, TAP).
    public let linkType: LinkType
    /// Offloads granted by `TUNSETOFFLOAD`.
    public private(set) var offloads: TUNOffloads

    /// Creates or attaches to the TUN device `name` (root or CAP_NET_ADMIN needed).
    /// - Throws: ``TUNError``.
    /// - Parameter tap: a TAP device (Ethernet frames) instead of a TUN device.
    public init(name: String, vnetHeader: Bool = true, multiQueue: Bool = false, tap: Bool = false) throws(TUNError) {
        var actual = [CChar](repeating: 0, count: 16)
        let fd = unsafe offload_tun_open_mode(name, vnetHeader ? 1 : 0, multiQueue ? 1 : 0, tap ? 1 : 0, &actual)
        guard fd >= 0 else { throw TUNError(operation: "TUNSETIFF", device: name, errno: Errno(rawValue: -fd)) }
        if vnetHeader {
            let r = offload_tun_set_vnet_hdr_size(fd, CInt(Self.vnetHeaderSize))
            if r < 0 {
                _ = system_close(fd)
                throw TUNError(operation: "TUNSETVNETHDRSZ", device: name, errno: Errno(rawValue: -r))
            }
        }
        // Every check is done: from here self is initialized and deinit owns the descriptor.
        self.descriptor = fd
        self.name = String(decoding: actual.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        self.vnetHeader = vnetHeader
        self.linkType = tap ? .ethernet : .raw
        self.offloads = []
    }

    deinit { _ = system_close(descriptor) }

    /// Negotiates offloads like wireguard-go: CSUM+TSO4+TSO6(+TSO_ECN) first, then USO4+USO6
    /// when `udp` (Linux 6.2+), keeping what the kernel accepts (it answers EINVAL to unknown bits).
    /// Without a virtio header nothing can be offloaded.
    /// - Returns: what was granted.
    @discardableResult
    public mutating func negotiateOffloads(udp: Bool) -> TUNOffloads {
        guard vnetHeader else { return [] }
        let tcp: TUNOffloads = [.checksum, .tso4, .tso6, .tsoECN]
        var granted: TUNOffloads = []
        for attempt in [tcp, [.checksum, .tso4, .tso6], [.checksum]] as [TUNOffloads]
        where offload_tun_set_offload(descriptor, attempt.rawValue) == 0 {
            granted = attempt
            break
        }
        if udp, !granted.isEmpty, offload_tun_set_offload(descriptor, granted.union([.uso4, .uso6]).rawValue) == 0 {
            granted.formUnion([.uso4, .uso6])
        }
        offloads = granted
        return granted
    }

    /// The device's MTU.
    public var mtu: Int? {
        let m = unsafe offload_interface_mtu(name)
        return m > 0 ? Int(m) : nil
    }

    /// Whether generic receive offload is on for interface `name` (any interface, not only TUN
    /// devices: SIOCETHTOOL, as `ethtool -k` reads it); nil when the driver does not say.
    public static func receiveOffload(name: String) -> Bool? {
        let r = unsafe offload_interface_gro(name, -1)
        return r < 0 ? nil : r != 0
    }

    /// Turns generic receive offload of interface `name` on or off (SIOCETHTOOL, as
    /// `ethtool -K NAME gro on|off` does).
    /// - Throws: ``TUNError`` (EOPNOTSUPP when the driver has no GRO switch).
    public static func setReceiveOffload(name: String, _ on: Bool) throws(TUNError) {
        let r = unsafe offload_interface_gro(name, on ? 1 : 0)
        if r < 0 { throw TUNError(operation: "ETHTOOL_SGRO", device: name, errno: Errno(rawValue: -r)) }
    }

    /// Sets the MTU of the interface `name` (when given) and brings it up.
    public static func bringUp(name: String, mtu: Int? = nil) throws(TUNError) {
        let r = unsafe offload_interface_up(name, CInt(mtu ?? 0))
        if r < 0 { throw TUNError(operation: "SIOCSIFFLAGS", device: name, errno: Errno(rawValue: -r)) }
    }

    /// Sets the MTU (when given) and brings the device up.
    public func bringUp(mtu: Int? = nil) throws(TUNError) {
        let r = unsafe offload_interface_up(name, CInt(mtu ?? 0))
        if r < 0 { throw TUNError(operation: "SIOCSIFFLAGS", device: name, errno: Errno(rawValue: -r)) }
    }

    /// Sets the transmit queue length of the interface `name`: for a TUN device, the ring of
    /// packets the kernel has routed into it and the reader has not read yet. Linux's default for
    /// TUN is 500, which overflows (tail drops, TCP retransmissions) whenever a reader falls behind a
    /// burst of a few milliseconds.
    public static func setTransmitQueueLength(name: String, _ length: Int) throws(TUNError) {
        let r = unsafe offload_interface_set_txqueuelen(name, CInt(clamping: length))
        if r < 0 { throw TUNError(operation: "SIOCSIFTXQLEN", device: name, errno: Errno(rawValue: -r)) }
    }

    /// Waits until a packet can be read, for at most `milliseconds`. Returns whether one can.
    public func waitReadable(milliseconds: Int) -> Bool {
        var p = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        return unsafe system_poll(&p, 1, CInt(milliseconds)) > 0 && p.revents & Int16(POLLIN) != 0
    }

    /// Reads one packet into `batch` (an IP packet, or an Ethernet frame from a TAP device), with its metadata from the
    /// virtio header: GSO facts for a TSO super-packet, `.partial` for NEEDS_CSUM, `.verified`
    /// for DATA_VALID.
    /// - Throws: ``TUNError`` for errors other than EAGAIN/EINTR.
    public func read(into batch: inout PacketBatch, timestamp: UInt64 = 0) throws(TUNError) -> TUNReadResult {
        guard batch.canAppend(length: Self.maximumPacket) else { return .batchFull }
        var header = (UInt64(0), UInt64(0))
        var result: TUNReadResult = .wouldBlock
        var failure: Errno?
        let fd = descriptor
        let vnet = vnetHeader
        var info = VirtioPacketInfo(gso: nil, checksum: .unverified)
        let metadata = PacketMetadata(linkType: linkType, timestamp: timestamp)
        let linkType = linkType
        _ = unsafe batch.appendUninitialized(maximumLength: Self.maximumPacket, metadata: metadata) { buffer -> Int? in
            unsafe withUnsafeMutableBytes(of: &header) { head -> Int? in
                var iov = unsafe (iovec(iov_base: head.baseAddress, iov_len: Self.vnetHeaderSize),
                           iovec(iov_base: buffer.baseAddress, iov_len: buffer.count))
                let n = unsafe withUnsafePointer(to: &iov) { p in
                    unsafe p.withMemoryRebound(to: iovec.self, capacity: 2) { unsafe vnet ? system_readv(fd, $0, 2) : system_readv(fd, $0 + 1, 1) }
                }
                if n < 0 {
                    let e = system_errno()
                    if e != EAGAIN && e != EWOULDBLOCK && e != EINTR { failure = Errno(rawValue: e) }
                    return nil
                }
                let length = vnet ? n - Self.vnetHeaderSize : n
                guard length > 0 else { return nil }
                if vnet, let h = unsafe try? VirtioNetHeader(parsing: UnsafeRawBufferPointer(head).bytes) {
                    do {
                        info = unsafe try VirtioPacketInfo.validate(
                            h, packet: UnsafeRawBufferPointer(rebasing: buffer[0..<length]).bytes, linkType: linkType)
                    } catch {
                        result = .rejected(error as? VirtioError ?? .zeroGSOSize)
                        return nil
                    }
                }
                result = .packet
                return length
            }
        }
        if let failure { throw TUNError(operation: "read", device: name, errno: failure) }
        if case .packet = result {
            var m = batch.metadata(at: batch.count - 1)
            m.gso = info.gso
            m.checksum = info.checksum
            batch.setMetadata(m, at: batch.count - 1)
        }
        return result
    }

    /// Writes one packet: `header` (when the device has virtio headers; nil writes an all-zero
    /// one), then `pieces` in order, with one `writev(2)`.
    /// - Throws: ``TUNError``; EINVAL on a GSO write means the kernel refused it (see the
    ///   forwarder's fallback).
    public func write(header: VirtioNetHeader?, pieces: UnsafeBufferPointer<UnsafeRawBufferPointer>) throws(TUNError) {
        let count = pieces.count + (vnetHeader ? 1 : 0)
        // The virtio header and the iovec array live on the stack: a write allocates nothing. (Two
        // threads write each device, one per direction, so a buffer kept in the device would race.)
        let written: Int = unsafe withUnsafeTemporaryAllocation(byteCount: Self.vnetHeaderSize, alignment: 8) { h in
            unsafe h.initializeMemory(as: UInt8.self, repeating: 0)
            if let header { unsafe header.encode(into: h) }
            return unsafe withUnsafeTemporaryAllocation(of: iovec.self, capacity: count) { iov in
                var k = 0
                if vnetHeader {
                    unsafe iov[0] = unsafe iovec(iov_base: h.baseAddress, iov_len: h.count)
                    k = 1
                }
                for unsafe piece in unsafe pieces {
                    unsafe iov[k] = unsafe iovec(iov_base: UnsafeMutableRawPointer(mutating: piece.baseAddress), iov_len: piece.count)
                    k += 1
                }
                var n = 0
                repeat { n = unsafe system_writev(descriptor, iov.baseAddress!, CInt(count)) } while n < 0 && system_errno() == EINTR
                return n < 0 ? -Int(system_errno()) : n
            }
        }
        if written < 0 { throw TUNError(operation: "write", device: name, errno: Errno(rawValue: CInt(-written))) }
    }

    /// Writes one contiguous packet.
    public func write(header: VirtioNetHeader?, packet: [UInt8]) throws(TUNError) {
        var failure: TUNError?
        unsafe packet.withUnsafeBytes { raw in
            unsafe withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: 1) { pieces in
                unsafe pieces[0] = unsafe raw
                do throws(TUNError) { unsafe try write(header: header, pieces: UnsafeBufferPointer(pieces)) } catch {
                    failure = error
                }
            }
        }
        if let failure { throw failure }
    }
}
