import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A minimal HTTP endpoint that answers every request with Prometheus text (`--metrics`).
/// One thread; it polls so that ``stop()`` ends it within 200 ms.
public final class MetricsServer: @unchecked Sendable {
    let socketDescriptor: CInt
    let text: @Sendable () -> String
    let stopFlag = Atomic<Bool>(false)
    let done = DispatchSemaphore(value: 0)
    /// The bound port.
    public let port: UInt16

    /// Binds `address:port` (IPv4) and starts answering.
    /// - Throws: a description of the failed call.
    public init(address: String, port: UInt16, text: @escaping @Sendable () -> String) throws {
        self.text = text
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw MetricsError(unsafe "socket: \(String(cString: strerror(errno)))") }
        var yes: CInt = 1
        unsafe setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<CInt>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard unsafe inet_pton(AF_INET, address, &addr.sin_addr) == 1 else {
            close(s)
            throw MetricsError("\(address) is not an IPv4 address")
        }
        let bound = unsafe withUnsafePointer(to: &addr) {
            unsafe $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(s, 16) == 0 else {
            let message = unsafe String(cString: strerror(errno))
            close(s)
            throw MetricsError("bind \(address):\(port): \(message)")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = unsafe withUnsafeMutablePointer(to: &actual) {
            unsafe $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe getsockname(s, $0, &length) }
        }
        self.port = UInt16(bigEndian: actual.sin_port)
        socketDescriptor = s
        let thread = Thread { [self] in serve() }
        thread.name = "offload-metrics"
        thread.start()
    }

    /// Stops answering and closes the socket.
    public func stop() {
        stopFlag.store(true, ordering: .relaxed)
        done.wait()
        close(socketDescriptor)
    }

    func serve() {
        while !stopFlag.load(ordering: .relaxed) {
            var p = pollfd(fd: socketDescriptor, events: Int16(POLLIN), revents: 0)
            guard unsafe poll(&p, 1, 200) > 0 else { continue }
            let client = accept(socketDescriptor, nil, nil)
            guard client >= 0 else { continue }
            var request = [UInt8](repeating: 0, count: 2048)
            var q = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            if unsafe poll(&q, 1, 1000) > 0 { _ = unsafe request.withUnsafeMutableBytes { unsafe read(client, $0.baseAddress, $0.count) } }
            let body = text()
            let response = "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: \(body.utf8.count)\r\n"
                + "Connection: close\r\n\r\n" + body
            let bytes = Array(response.utf8)
            unsafe bytes.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    // Safe: offset < raw.count, and at most raw.count - offset bytes are read.
                    let n = unsafe write(client, raw.baseAddress! + offset, raw.count - offset)
                    if n <= 0 { break }
                    offset += n
                }
            }
            close(client)
        }
        done.signal()
    }
}

/// Why the metrics endpoint could not start.
public struct MetricsError: Error, CustomStringConvertible {
    /// What failed.
    public var description: String
    init(_ description: String) { self.description = description }
}
