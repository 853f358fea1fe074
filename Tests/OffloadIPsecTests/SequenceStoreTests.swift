import Foundation
import OffloadCrypto
import Synchronization
import Testing

@testable import OffloadIPsec

#if canImport(Glibc)
    import Glibc
#endif

/// A store directory of its own (mode 0700) for one test, removed after it.
struct StoreScratch: ~Copyable {
    let dir: String
    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("seq-store-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }
    deinit { try? FileManager.default.removeItem(atPath: dir) }
    var store: String { dir + "/marks" }
}

func rawTestKey(_ seed: UInt8, count: Int = 20) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: Int($0) * 31 + Int(seed) * 7 + 1) } }
func testKey(_ seed: UInt8, count: Int = 20) -> SecretBytes { SecretBytes(rawTestKey(seed, count: count)) }

@Suite("The sequence store: marks found by the key, one process per key, written safely")
struct SequenceStoreTests {
    @Test("a second opening of the store (as a second process would) cannot send with a key the first holds: refused, naming the holder; once the first is gone, it goes on above it")
    func secondHolderRefused() throws {
        let s = try StoreScratch()
        let key = testKey(1)
        var first: OutboundSequence? = try OutboundSequence(spi: 0x1001, key: key, extendedSequenceNumbers: true,
                                                           store: SequenceStore(directory: s.store, block: 10))
        var used: [UInt64] = []
        for _ in 0..<25 { used.append(try #require(first?.reserve(1))) }
        // Another SPI, another opening of the store: the same key all the same.
        let error = #expect(throws: SequenceStoreError.self) {
            try OutboundSequence(spi: 0x7007, key: key, extendedSequenceNumbers: true, store: SequenceStore(directory: s.store, block: 10))
        }
        let message = error?.description ?? ""
        #expect(message.contains("pid \(getpid())") && message.contains("already sending"), "\(message)")
        #expect(!message.contains(SequenceStore.fingerprint(key: key).markFileField), "no fingerprint in the message")
        first = nil
        let second = try OutboundSequence(spi: 0x7007, key: key, extendedSequenceNumbers: true, store: SequenceStore(directory: s.store, block: 10))
        let next = try #require(second.reserve(1))
        #expect(next > used.max()!, "after the first: \(next), it used up to \(used.max()!)")
    }

    @Test("a mark deleted while its key's lock stays (the key has sent from here) is refused, not read as a new key starting at 1; a key new here gets its mark at its first claim")
    func deletedMarkRefused() throws {
        let s = try StoreScratch()
        let key = testKey(9)
        let name = SequenceStore.fingerprint(key: key).markFileField
        do {
            let first = try SequenceStore(directory: s.store, block: 10).claim(key: key, spi: 0x1001)
            #expect(FileManager.default.fileExists(atPath: "\(s.store)/\(name).mark"), "the mark is there from the first claim")
            try first.reserve(through: 500)
        }
        try FileManager.default.removeItem(atPath: "\(s.store)/\(name).mark")
        let error = #expect(throws: SequenceStoreError.self) {
            try OutboundSequence(spi: 0x1001, key: key, extendedSequenceNumbers: true, store: SequenceStore(directory: s.store, block: 10))
        }
        let text = error?.description ?? ""
        #expect(text.contains("missing"), "\(text)")
        #expect(text.range(of: name) == nil, "no fingerprint in the message")
    }

    @Test("a mark near the top of the 64-bit space (ESN): the reservations saturate at the top instead of wrapping, so no number is handed out above the mark on disk")
    func markNearTheTop() throws {
        let s = try StoreScratch()
        let key = testKey(11)
        let name = SequenceStore.fingerprint(key: key).markFileField
        let store = try SequenceStore(directory: s.store, block: 10)
        let top = UInt64.max - 5
        FileManager.default.createFile(atPath: "\(s.store)/\(name).mark", contents: Data("used-through \(top)\n".utf8),
                                       attributes: [.posixPermissions: 0o600])
        let sequence = try OutboundSequence(spi: 0x1001, key: key, extendedSequenceNumbers: true, store: store)
        var handed: [UInt64] = []
        while let n = sequence.reserve(1) { handed.append(n) }
        #expect(handed == Array((top + 1)...UInt64.max), "\(handed)")
        let text = try String(contentsOfFile: "\(s.store)/\(name).mark", encoding: .utf8)
        let onDisk = UInt64(text.split(separator: "\n").last { $0.hasPrefix("used-through ") }?.dropFirst("used-through ".count) ?? "") ?? 0
        #expect(onDisk >= handed.max() ?? 0, "the mark on disk (\(onDisk)) covers every number handed out")
        #expect(sequence.reserve(0) == nil && sequence.isExhausted)
    }

    @Test("one key in two SA files (moved, copied, another SPI): the second goes on above the first's numbers")
    func sameKeyAnotherFile() throws {
        let s = try StoreScratch()
        let key = rawTestKey(2)
        let text = { (spi: Int) in
            "tunnels {\n t {\n esp_proposals = aes128gcm16\n out {\n spi = \(spi)\n key = 0x\(key.map { String(format: "%02x", $0) }.joined())\n }\n"
                + " in {\n spi = 9999\n key = 0x\(rawTestKey(3).map { String(format: "%02x", $0) }.joined())\n }\n }\n}\n"
        }
        var numbers: [UInt64] = []
        do {
            let policy = try ESPSecurityPolicy(tunnels: SAFile.parse(text(0x1001), path: "/etc/a.conf"),
                                               store: SequenceStore(directory: s.store, block: 50))
            for _ in 0..<120 { numbers.append(try #require(policy.sequences[0].reserve(1))) }
        }
        let moved = try ESPSecurityPolicy(tunnels: SAFile.parse(text(0x2002), path: "/srv/b.conf"),
                                          store: SequenceStore(directory: s.store, block: 50))
        let next = try #require(moved.sequences[0].reserve(1))
        #expect(next > numbers.max()!, "\(next) after \(numbers.max()!)")
    }

    @Test("many threads reserving under several keys: no number twice, and the marks on disk cover every number handed out")
    func concurrentReservers() throws {
        let s = try StoreScratch()
        let keys = (0..<4).map { testKey(UInt8(10 + $0)) }
        let handed = Mutex<[[UInt64]]>(Array(repeating: [], count: 4))
        do {
            let store = try SequenceStore(directory: s.store, block: 3)
            let sequences = try keys.enumerated().map { i, key in
                try OutboundSequence(spi: 0x3000 + UInt32(i), key: key, extendedSequenceNumbers: true, store: store)
            }
            DispatchQueue.concurrentPerform(iterations: 8) { t in
                for _ in 0..<200 {
                    if let n = sequences[t % 4].reserve(2) { handed.withLock { $0[t % 4] += [n, n + 1] } }
                }
            }
            for sequence in sequences { #expect(sequence.storeFailure == nil, "\(sequence.storeFailure ?? "")") }
        }
        let restarted = try SequenceStore(directory: s.store, block: 3)
        for (i, key) in keys.enumerated() {
            let numbers = handed.withLock { $0[i] }
            #expect(numbers.count == 800 && Set(numbers).count == numbers.count, "key \(i): \(numbers.count) numbers, none twice")
            let mark = try restarted.claim(key: key, spi: 0x3000)
            #expect(mark.mark >= numbers.max() ?? .max, "key \(i): the mark \(mark.mark) covers \(numbers.max() ?? 0)")
        }
    }

    @Test("a mark file or store that others may change, or another user owns, is refused")
    func untrustedFilesRefused() throws {
        let s = try StoreScratch()
        let key = testKey(4)
        _ = try OutboundSequence(spi: 0x1001, key: key, extendedSequenceNumbers: true, store: SequenceStore(directory: s.store, block: 10))
        let mark = s.store + "/" + SequenceStore.fingerprint(key: key).markFileField + ".mark"
        #expect(FileManager.default.fileExists(atPath: mark))
        chmod(mark, 0o666)
        let loose = #expect(throws: SequenceStoreError.self) {
            try OutboundSequence(spi: 0x1001, key: key, extendedSequenceNumbers: true, store: SequenceStore(directory: s.store))
        }
        #expect(loose?.description.contains("mode 666") == true, "\(loose?.description ?? "")")
        chmod(mark, 0o600)
        chmod(s.store, 0o777)
        #expect(throws: SequenceStoreError.self) { try SequenceStore(directory: s.store) }
        chmod(s.store, 0o700)
        _ = try OutboundSequence(spi: 0x1001, key: key, extendedSequenceNumbers: true, store: SequenceStore(directory: s.store))
    }

    @Test("a mark file of another user's is refused", .enabled(if: geteuid() == 0, "needs root to give a file away"))
    func otherOwnerRefused() throws {
        let s = try StoreScratch()
        let key = testKey(5)
        _ = try OutboundSequence(spi: 0x1001, key: key, extendedSequenceNumbers: true, store: SequenceStore(directory: s.store, block: 10))
        let mark = s.store + "/" + SequenceStore.fingerprint(key: key).markFileField + ".mark"
        #expect(chown(mark, 65534, 65534) == 0)
        let error = #expect(throws: SequenceStoreError.self) {
            try OutboundSequence(spi: 0x1001, key: key, extendedSequenceNumbers: true, store: SequenceStore(directory: s.store))
        }
        #expect(error?.description.contains("owned by uid 65534") == true, "\(error?.description ?? "")")
    }

    @Test("a link placed at the temporary name is not followed: the write is refused and the link's target untouched")
    func linkAtTemporaryName() throws {
        let s = try StoreScratch()
        let key = testKey(6)
        let sequence = try OutboundSequence(spi: 0x1001, key: key, extendedSequenceNumbers: true,
                                            store: SequenceStore(directory: s.store, block: 10))
        try "victim\n".write(toFile: s.dir + "/victim", atomically: false, encoding: .utf8)
        let temporary = s.store + "/" + SequenceStore.temporaryName(SequenceStore.fingerprint(key: key).markFileField)
        #expect(symlink(s.dir + "/victim", temporary) == 0)
        var last: UInt64?
        for _ in 0..<20 { if let n = sequence.reserve(1) { last = n } }
        #expect(last == 10, "the numbers already on disk go; none past them")
        #expect(sequence.storeFailure != nil)
        #expect(try String(contentsOfFile: s.dir + "/victim", encoding: .utf8) == "victim\n")
    }

    @Test("a mark file of the old form (by SPI and SA file) is imported: the key goes on above it, under any SPI")
    func oldFormImported() throws {
        let s = try StoreScratch()
        let key = testKey(7)
        let old = s.dir + "/gw.conf.seq"
        let line = "spi 0x00001001 key-fingerprint \(SequenceStore.oldFormFingerprint(spi: 0x1001, key: key).markFileField) used-through 5000\n"
        try SAFile.write("# old\n" + line, to: old)
        let sequence = try OutboundSequence(spi: 0x4444, key: key, extendedSequenceNumbers: true,
                                            store: SequenceStore(directory: s.store, block: 10, importing: [old, s.dir + "/absent.seq"]))
        #expect(sequence.reserve(1) == 5001)
        try SAFile.write("spi 0x1001 garbage\n", to: old)
        #expect(throws: SequenceStoreError.self) { try SequenceStore(directory: s.store, importing: [old]) }
    }
}

@Suite("SA files: one key, one SA")
struct SAFileDistinctKeyTests {
    func tunnel(_ name: String, out: (UInt32, [UInt8]), in inbound: (UInt32, [UInt8])) -> String {
        func hex(_ b: [UInt8]) -> String { "0x" + b.map { String(format: "%02x", $0) }.joined() }
        return " \(name) {\n  esp_proposals = aes128gcm16\n  out {\n   spi = \(out.0)\n   key = \(hex(out.1))\n  }\n"
            + "  in {\n   spi = \(inbound.0)\n   key = \(hex(inbound.1))\n  }\n }\n"
    }

    @Test("the same key in two SAs of a file is refused (out and out, out and another tunnel's in, even with another salt); so is in SPI = out SPI")
    func duplicates() throws {
        let (a, b, c) = (rawTestKey(20), rawTestKey(21), rawTestKey(22))
        let saltless = Array(a.prefix(16)) + [9, 9, 9, 9]
        let cases: [(String, String)] = [
            ("out twice", tunnel("x", out: (0x1001, a), in: (0x2001, b)) + tunnel("y", out: (0x1002, a), in: (0x2002, c))),
            ("out and in", tunnel("x", out: (0x1001, a), in: (0x2001, b)) + tunnel("y", out: (0x1002, c), in: (0x2002, a))),
            ("another salt", tunnel("x", out: (0x1001, a), in: (0x2001, b)) + tunnel("y", out: (0x1002, saltless), in: (0x2002, c))),
            ("one SPI", tunnel("x", out: (0x1001, a), in: (0x1001, b))),
        ]
        for (what, body) in cases {
            let error = #expect(throws: SAFileError.self, "\(what)") { try SAFile.parse("tunnels {\n\(body)}\n", path: "sa.conf") }
            let hexA = a.map { String(format: "%02x", $0) }.joined()
            #expect(error?.description.contains(hexA) == false, "no key in the message")
        }
        let fine = tunnel("x", out: (0x1001, a), in: (0x2001, b)) + tunnel("y", out: (0x1002, c), in: (0x2002, rawTestKey(23)))
        #expect(try SAFile.parse("tunnels {\n\(fine)}\n").count == 2)
    }
}
