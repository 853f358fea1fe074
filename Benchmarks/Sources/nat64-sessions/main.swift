// The NAT64 tables at scale: how fast new sessions are made, how much memory each one takes, and
// how long expiring them takes (per call: translation waits on the lock while a call runs).
//
//   swift run -c release nat64-sessions 1000000     (one size per process, so RSS is its own)
//
// N sessions are made through NAT64Tables.fromIPv6: UDP, each from its own (host, port) to its own
// destination, so each has a binding of its own (the costly case: a pool4 port, three dictionary
// inserts). Hosts have 1 000 sessions each (under the per-host limit), the pool4 is
// 198.51.100.0/24:1024-65535. Then the clock passes the UDP lifetime and expire(now:limit: 256)
// runs until nothing is left, each call timed; then the same N are made again on the freed slots.
// Prints one tab-separated line: see `header`.
import CHeapInUse
import Foundation
import Glibc
import OffloadNAT64
import OffloadWire

let header = ["sessions", "create_s", "sessions_per_s", "ns_per_session", "heap_bytes_per_session", "rss_bytes_per_session",
              "expire_calls", "expire_longest_us", "expire_longest_cpu_us", "expire_median_us", "expire_total_ms", "heap_bytes_per_session_after_expiry",
              "recreate_sessions_per_s", "heap_bytes_per_session_after_recreate"]

/// Nanoseconds of the monotonic clock (or of the thread's CPU time).
func nanoseconds(_ clock: clockid_t = CLOCK_MONOTONIC) -> UInt64 {
    var t = timespec()
    clock_gettime(clock, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

/// Bytes malloc has handed out and not had back (heap and mmapped chunks).
func heapInUse() -> Int { Int(heap_in_use()) }

/// The process's resident set, in bytes (the second field of /proc/self/statm, in pages).
func residentBytes() -> Int {
    guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = statm.split(separator: " ")
    guard fields.count >= 2, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

let count = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 1_000 : 1_000
if CommandLine.arguments.contains("--header") {
    print(header.joined(separator: "\t"))
    exit(0)
}

/// The pool4: the second argument, or a /24 with every port above 1023.
let pool4 = CommandLine.arguments.count > 2 ? CommandLine.arguments[2] : "198.51.100.0/24:1024-65535"
var configuration = NAT64Configuration(pool4: [Pool4Entry(pool4)!])
configuration.maximumSessions = count
let second: UInt64 = 1_000_000_000

/// Session i: host i / 1000, port 10 000 + i % 1000, destination 203.0.113.0 + i % 251 (port 443).
func make(_ tables: inout NAT64Tables, now: UInt64) {
    for i in 0..<count {
        let host = IPv6Address(high: 0x2001_0db8_0001_0000, low: UInt64(i / 1_000 + 1))
        let result = tables.fromIPv6(.udp, source: host, sourcePort: UInt16(10_000 + i % 1_000),
                                     destination: IPv4Address(rawValue: 0xCB00_7100 + UInt32(i % 251)),
                                     destinationPort: 443, now: now)
        if case .failure(let refusal) = result {
            print("session \(i) refused: \(refusal)")
            exit(1)
        }
    }
}

let heapBefore = heapInUse()
let rssBefore = residentBytes()
var tables = NAT64Tables(configuration: configuration)
let start = nanoseconds()
make(&tables, now: second)
let created = nanoseconds() - start
precondition(tables.sessionCount == count)
let heapCreated = heapInUse() - heapBefore
let rssCreated = residentBytes() - rssBefore

// Everything runs out; expire in calls of 256, as the stage does.
let later = second + configuration.timeouts.udp + second
var durations: [UInt64] = []
var cpuDurations: [UInt64] = []
var deleted = 0
while true {
    let t0 = nanoseconds(), c0 = nanoseconds(CLOCK_THREAD_CPUTIME_ID)
    let expiry = tables.expire(now: later, limit: 256)
    let t1 = nanoseconds(), c1 = nanoseconds(CLOCK_THREAD_CPUTIME_ID)
    if expiry.deleted == 0 { break }
    durations.append(t1 - t0)
    cpuDurations.append(c1 - c0)
    deleted += expiry.deleted
}
precondition(deleted == count && tables.sessionCount == 0)
let heapExpired = heapInUse() - heapBefore
durations.sort()
cpuDurations.sort()

// The same number again, on the freed slots.
let again = nanoseconds()
make(&tables, now: later)
let recreated = nanoseconds() - again
let heapRecreated = heapInUse() - heapBefore

func f(_ x: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", x) }
let n = Double(count)
print([
    "\(count)", f(Double(created) / 1e9, 3), f(n / (Double(created) / 1e9), 0), f(Double(created) / n, 0),
    f(Double(heapCreated) / n, 0), f(Double(rssCreated) / n, 0),
    "\(durations.count)", f(Double(durations.last ?? 0) / 1e3, 1), f(Double(cpuDurations.last ?? 0) / 1e3, 1), f(Double(durations[durations.count / 2]) / 1e3, 1),
    f(Double(durations.reduce(0, +)) / 1e6, 1), f(Double(heapExpired) / n, 0),
    f(n / (Double(recreated) / 1e9), 0), f(Double(heapRecreated) / n, 0),
].joined(separator: "\t"))
