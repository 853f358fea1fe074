import Foundation
import OffloadForwarder
import Testing

/// Sends `request` to `host`:`port` over TCP (loopback) and returns everything the server sent
/// until it closed (at most 10 s); the connection stays open after the request, as a slow client's.
func httpExchange(_ request: String, host: String = "127.0.0.1", port: UInt16) throws -> String {
    let ipv6 = host.contains(":")
    let s = socket(ipv6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard s >= 0 else { throw LabError("socket") }
    defer { close(s) }
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var connected: CInt
    if ipv6 {
        var a = sockaddr_in6()
        a.sin6_family = sa_family_t(AF_INET6)
        a.sin6_port = port.bigEndian
        inet_pton(AF_INET6, host, &a.sin6_addr)
        connected = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
        }
    } else {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        inet_pton(AF_INET, host, &a.sin_addr)
        connected = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }
    guard connected == 0 else { throw LabError("connect \(host) \(port): \(String(cString: strerror(errno)))") }
    let bytes = Array(request.utf8)
    _ = bytes.withUnsafeBytes { send(s, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    var answer: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { recv(s, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        answer += chunk[..<n]
    }
    return String(decoding: answer, as: UTF8.self)
}

/// Whether this host has an IPv6 loopback address to test on.
let ipv6LoopbackPresent: Bool = {
    (try? MetricsServer(address: "::1", port: 0) { "" }).map { server in
        server.stop()
        return true
    } ?? false
}()

@Suite("the /metrics endpoint speaks HTTP correctly")
struct MetricsEndpointTests {
    let body = "# TYPE offload_test_total counter\noffload_test_total 7\n"

    @Test("GET /metrics: 200 with the Prometheus text content type and the body; HEAD: the same headers, no body")
    func getAndHead() throws {
        let body = self.body
        let server = try MetricsServer(address: "127.0.0.1", port: 0) { body }
        defer { server.stop() }
        let get = try httpExchange("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", port: server.port)
        #expect(get.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(get)")
        #expect(get.contains("Content-Type: text/plain; version=0.0.4"))
        #expect(get.contains("Content-Length: \(body.utf8.count)\r\n") && get.hasSuffix("\r\n\r\n" + body))
        let query = try httpExchange("GET /metrics?name[]=x HTTP/1.0\r\n\r\n", port: server.port)
        #expect(query.hasPrefix("HTTP/1.1 200 OK"))
        let head = try httpExchange("HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", port: server.port)
        #expect(head.hasPrefix("HTTP/1.1 200 OK\r\n") && head.contains("Content-Length: \(body.utf8.count)\r\n"), "\(head)")
        #expect(head.hasSuffix("\r\n\r\n"), "HEAD has no body: \(head)")
    }

    @Test("another path: 404; another method: 405 with Allow; a request that does not parse: 400")
    func errors() throws {
        let server = try MetricsServer(address: "127.0.0.1", port: 0) { "x 1\n" }
        defer { server.stop() }
        #expect(try httpExchange("GET / HTTP/1.1\r\n\r\n", port: server.port).hasPrefix("HTTP/1.1 404 "))
        #expect(try httpExchange("GET /metricsx HTTP/1.1\r\n\r\n", port: server.port).hasPrefix("HTTP/1.1 404 "))
        let post = try httpExchange("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", port: server.port)
        #expect(post.hasPrefix("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD\r\n"), "\(post)")
        #expect(try httpExchange("hello\r\n\r\n", port: server.port).hasPrefix("HTTP/1.1 400 "))
        #expect(try httpExchange("GET /metrics\r\n\r\n", port: server.port).hasPrefix("HTTP/1.1 400 "))
    }

    @Test("a request that never ends is cut off (408), one too large is refused (431), and the next client is served")
    func boundedRequests() throws {
        let server = try MetricsServer(address: "127.0.0.1", port: 0) { "x 1\n" }
        defer { server.stop() }
        // Headers that never end: the server answers and closes instead of waiting for them.
        let slow = try httpExchange("GET /metrics HTTP/1.1\r\nHost: x\r\n", port: server.port)
        #expect(slow.hasPrefix("HTTP/1.1 408 "), "\(slow)")
        let large = try httpExchange("GET /metrics HTTP/1.1\r\n" + String(repeating: "X-Filler: 0123456789abcdef\r\n", count: 400),
                                     port: server.port)
        #expect(large.hasPrefix("HTTP/1.1 431 "), "\(large.prefix(80))")
        #expect(try httpExchange("GET /metrics HTTP/1.1\r\n\r\n", port: server.port).hasPrefix("HTTP/1.1 200 OK"))
    }

    @Test("IPv6 and wildcard listen addresses", .enabled(if: ipv6LoopbackPresent, "no IPv6 loopback address on this host"))
    func ipv6() throws {
        let v6 = try MetricsServer(address: "::1", port: 0) { "x 1\n" }
        defer { v6.stop() }
        #expect(try httpExchange("GET /metrics HTTP/1.1\r\n\r\n", host: "::1", port: v6.port).hasPrefix("HTTP/1.1 200 OK"))
        let any6 = try MetricsServer(address: "::", port: 0) { "x 1\n" }
        defer { any6.stop() }
        #expect(try httpExchange("GET /metrics HTTP/1.1\r\n\r\n", host: "::1", port: any6.port).hasPrefix("HTTP/1.1 200 OK"))
        let any4 = try MetricsServer(address: "0.0.0.0", port: 0) { "x 1\n" }
        defer { any4.stop() }
        #expect(try httpExchange("GET /metrics HTTP/1.1\r\n\r\n", port: any4.port).hasPrefix("HTTP/1.1 200 OK"))
        #expect(throws: MetricsError.self) { try MetricsServer(address: "[::1]", port: 0) { "" } }
    }
}
