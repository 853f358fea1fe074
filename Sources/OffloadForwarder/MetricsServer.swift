import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A small HTTP endpoint for Prometheus (`--metrics`): `GET /metrics` answers 200 with the text
/// exposition format, `HEAD /metrics` the same headers without the body; any other path is 404,
/// any other method 405 (with `Allow: GET, HEAD`), a request that does not parse 400, a header
/// section larger than ``maximumRequestBytes`` 431. A client has ``requestTimeout`` to send its
/// request (a slow one is cut off: it cannot hold the endpoint), and its answer must leave within
/// the same time. IPv4 (`127.0.0.1`, `0.0.0.0`) and IPv6 (`::1`, `::`, which also takes IPv4
/// unless the host says otherwise) addresses.
///
/// One thread, one connection at a time (a scrape is small and rare); it polls so that
/// ``stop()`` ends it within 200 ms.
public final class MetricsServer: @unchecked Sendable {
    let socketDescriptor: CInt
    let text: @Sendable () -> String
    let stopFlag = Atomic<Bool>(false)
    let done = DispatchSemaphore(value: 0)
    /// The bound port.
    public let port: UInt16
    /// The most bytes a request's line and headers may have.
    public static let maximumRequestBytes = 8_192
    /// How long a client has to send its request (and to take the answer), in milliseconds.
    public static let requestTimeout = 2_000
    /// The Prometheus text exposition format's content type.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Binds `address:port` (an IPv4 or IPv6 address, without brackets) and starts answering.
    /// - Throws: ``MetricsError`` naming the failed call.
    public init(address: String, port: UInt16, text: @escaping @Sendable () -> String) throws {
        self.text = text
        var storage = sockaddr_storage()
        let length: socklen_t
        let family: CInt
        if unsafe withUnsafeMutableBytes(of: &storage, { unsafe inet_pton(AF_INET, address, $0.baseAddress! + 4) }) == 1 {
            // sockaddr_in: family (2 bytes), port (2), address (4) at offset 4.
            family = AF_INET
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        } else if unsafe withUnsafeMutableBytes(of: &storage, { unsafe inet_pton(AF_INET6, address, $0.baseAddress! + 8) }) == 1 {
            // sockaddr_in6: family (2), port (2), flow info (4), address (16) at offset 8.
            family = AF_INET6
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        } else {
            throw MetricsError("\(address) is not an IPv4 or IPv6 address")
        }
        unsafe withUnsafeMutableBytes(of: &storage) { raw in
            // Safe: sockaddr_storage is larger than both; family and port are at the same offsets in both.
            unsafe raw.storeBytes(of: sa_family_t(family), toByteOffset: 0, as: sa_family_t.self)
            unsafe raw.storeBytes(of: port.bigEndian, toByteOffset: 2, as: UInt16.self)
        }
        let s = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw MetricsError(unsafe "socket: \(String(cString: strerror(errno)))") }
        var yes: CInt = 1
        unsafe setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<CInt>.size))
        let bound = unsafe withUnsafePointer(to: &storage) {
            unsafe $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe bind(s, $0, length) }
        }
        guard bound == 0, listen(s, 16) == 0 else {
            let message = unsafe String(cString: strerror(errno))
            close(s)
            throw MetricsError("bind \(family == AF_INET6 ? "[\(address)]" : address):\(port): \(message)")
        }
        var actual = sockaddr_storage()
        var actualLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = unsafe withUnsafeMutablePointer(to: &actual) {
            unsafe $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe getsockname(s, $0, &actualLength) }
        }
        self.port = unsafe withUnsafeBytes(of: &actual) { UInt16(bigEndian: unsafe $0.load(fromByteOffset: 2, as: UInt16.self)) }
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
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            answer(client)
            finish(client)
            close(client)
        }
        done.signal()
    }

    /// Reads one request from `client` (bounded in bytes and time) and answers it.
    func answer(_ client: CInt) {
        var timeout = timeval(tv_sec: Self.requestTimeout / 1_000, tv_usec: 0)
        unsafe setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request: [UInt8]
        switch readRequest(client) {
        case .complete(let bytes): request = bytes
        case .tooLarge: return respond(client, status: "431 Request Header Fields Too Large", body: "request too large\n")
        case .incomplete: return respond(client, status: "408 Request Timeout", body: "request not complete in time\n")
        }
        // The request line: METHOD SP TARGET SP HTTP/x.y
        let line = request.prefix { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") }
        let parts = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1."), !parts[0].isEmpty, parts[0].allSatisfy({ $0.isUppercase }),
            parts[1].hasPrefix("/")
        else { return respond(client, status: "400 Bad Request", body: "bad request\n") }
        let path = parts[1].split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        guard path == "/metrics" else { return respond(client, status: "404 Not Found", body: "not found: the counters are at /metrics\n") }
        guard parts[0] == "GET" || parts[0] == "HEAD" else {
            return respond(client, status: "405 Method Not Allowed", body: "only GET and HEAD\n", extra: "Allow: GET, HEAD\r\n")
        }
        respond(client, status: "200 OK", body: text(), contentType: Self.contentType, withBody: parts[0] == "GET")
    }

    /// Ends the answer (FIN) and reads what the client still sends until it closes (bounded in
    /// bytes and time): closing with unread bytes would reset the connection, and the client could
    /// lose the answer (a 431 to a request larger than the cap, for one).
    func finish(_ client: CInt) {
        shutdown(client, CInt(SHUT_WR))
        var chunk = [UInt8](repeating: 0, count: 4_096)
        var drained = 0
        let deadline = HostCommand.monotonicMilliseconds() + Self.requestTimeout
        while drained < 65_536 {
            let left = deadline - HostCommand.monotonicMilliseconds()
            var q = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            guard left > 0, unsafe poll(&q, 1, CInt(left)) > 0 else { return }
            let n = unsafe chunk.withUnsafeMutableBytes { unsafe read(client, $0.baseAddress, $0.count) }
            guard n > 0 else { return }
            drained += n
        }
    }

    enum Request {
        case complete([UInt8])
        case tooLarge
        case incomplete
    }

    /// Reads until the blank line that ends the headers, at most ``maximumRequestBytes`` and
    /// ``requestTimeout`` in all.
    func readRequest(_ client: CInt) -> Request {
        var request: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1_024)
        let deadline = HostCommand.monotonicMilliseconds() + Self.requestTimeout
        while true {
            if request.count > Self.maximumRequestBytes { return .tooLarge }
            if Self.headersEnd(request) { return .complete(request) }
            let left = deadline - HostCommand.monotonicMilliseconds()
            guard left > 0 else { return .incomplete }
            var q = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            guard unsafe poll(&q, 1, CInt(left)) > 0 else { continue }
            let n = unsafe chunk.withUnsafeMutableBytes { unsafe read(client, $0.baseAddress, $0.count) }
            guard n > 0 else { return .incomplete }
            request += chunk[..<n]
        }
    }

    /// Whether the bytes hold the end of the header section (CRLF CRLF, or LF LF from a lax client).
    static func headersEnd(_ bytes: [UInt8]) -> Bool {
        for i in bytes.indices.dropFirst() where bytes[i] == 0x0A {
            if bytes[i - 1] == 0x0A { return true }
            if i >= 3, bytes[i - 1] == 0x0D, bytes[i - 2] == 0x0A, bytes[i - 3] == 0x0D { return true }
        }
        return false
    }

    func respond(_ client: CInt, status: String, body: String, contentType: String = "text/plain; charset=utf-8",
                 extra: String = "", withBody: Bool = true) {
        let head = "HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\n"
            + extra + "Connection: close\r\n\r\n"
        let bytes = Array(head.utf8) + (withBody ? Array(body.utf8) : [])
        unsafe bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                // Safe: offset < raw.count, and at most raw.count - offset bytes are read.
                let n = unsafe send(client, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n <= 0 { break }
                offset += n
            }
        }
    }
}

/// Why the metrics endpoint could not start.
public struct MetricsError: Error, CustomStringConvertible {
    /// What failed.
    public var description: String
    init(_ description: String) { self.description = description }
}
