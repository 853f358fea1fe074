import OffloadTUN
import OffloadWire

#if canImport(Glibc)
    import Glibc
#endif

/// Where a ``TunnelSink`` puts its datagrams: the UDP socket live, or a capture file offline, so
/// that both go through the same pipeline, MTU decision and codec.
public protocol DatagramOutput: AnyObject {
    /// Sends the iovecs as one payload; with `segmentSize`, cut into datagrams of that size (the
    /// last may be shorter: UDP GSO). `trafficClass`: this send's outer TOS / traffic class, or
    /// nil for the one ``setTrafficClass(_:)`` set. `destination`: the peer this send goes to, for
    /// an output serving many peers (nil: the one far end).
    /// - Returns: the bytes taken.
    /// - Throws: ``TUNError``.
    @discardableResult
    func send(_ iovecs: UnsafeBufferPointer<iovec>, segmentSize: Int, trafficClass: UInt8?, to destination: UDPEndpoint?) throws(TUNError) -> Int
    /// The outer TOS / traffic class of the datagrams sent from now on.
    func setTrafficClass(_ value: UInt8)
}

extension UDPTunnelSocket: DatagramOutput {}

extension DatagramOutput {
    /// Sends to the one far end.
    @discardableResult
    public func send(_ iovecs: UnsafeBufferPointer<iovec>, segmentSize: Int, trafficClass: UInt8?) throws(TUNError) -> Int {
        unsafe try send(iovecs, segmentSize: segmentSize, trafficClass: trafficClass, to: nil)
    }
}

extension DatagramOutput {
    /// Sends one contiguous datagram.
    func send(_ datagram: [UInt8], trafficClass: UInt8?, to destination: UDPEndpoint? = nil) throws(TUNError) {
        var failure: TUNError?
        unsafe datagram.withUnsafeBytes { raw in
            var iov = unsafe iovec(iov_base: UnsafeMutableRawPointer(mutating: raw.baseAddress), iov_len: raw.count)
            unsafe withUnsafePointer(to: &iov) { p in
                do throws(TUNError) { unsafe try send(UnsafeBufferPointer(start: p, count: 1), segmentSize: 0, trafficClass: trafficClass, to: destination) }
                catch { failure = error }
            }
        }
        if let failure { throw failure }
    }
}
