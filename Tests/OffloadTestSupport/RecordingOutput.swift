import OffloadTUN
import OffloadTunnel
import OffloadWire

#if canImport(Glibc)
    import Glibc
#endif

/// A ``DatagramOutput`` that keeps every datagram it is given (UDP GSO sends cut at the segment
/// size), for tests of what an encapsulating sink emits.
public final class RecordingOutput: DatagramOutput {
    /// The datagrams, in the order they were sent.
    public var datagrams: [[UInt8]] = []
    /// An empty recorder.
    public init() {}
    /// The destination of each datagram (nil: the one far end).
    public var destinations: [UDPEndpoint?] = []
    /// Keeps the payload, cut at `segmentSize` when one is given.
    public func send(_ iovecs: UnsafeBufferPointer<iovec>, segmentSize: Int, trafficClass: UInt8?, to destination: UDPEndpoint?) throws(TUNError) -> Int {
        defer { destinations += Array(repeating: destination, count: datagrams.count - destinations.count) }
        var payload: [UInt8] = []
        for v in iovecs { payload += UnsafeRawBufferPointer(start: v.iov_base, count: v.iov_len) }
        if segmentSize == 0 {
            datagrams.append(payload)
        } else {
            for start in stride(from: 0, to: payload.count, by: segmentSize) {
                datagrams.append(Array(payload[start..<min(start + segmentSize, payload.count)]))
            }
        }
        return payload.count
    }
    /// Ignored.
    public func setTrafficClass(_ value: UInt8) {}
}
