import Foundation
@testable import OffloadIKE
import OffloadTestSupport
import OffloadWire
import Testing

/// The IKE_SA_INIT that made the optimized parser write into freed memory, and the rule that keeps
/// the pattern out of the sources.
@Suite("IKE parser memory")
struct ParserMemoryTests {
    static let freedWrite = hexBytes(
        "433796d23796d2a00000000000000000212022080000000000000056210000325700002b0000000100000021a031d2"
            + "0001000000000000012000002e332e313043322a303130fffffffff6f600000000000896290024")

    @Test("the IKE_SA_INIT whose skipped transform attribute was copied into freed memory is refused with INVALID_SYNTAX, nothing copied into freed memory")
    func freedWriteInput() throws {
        #expect(Self.freedWrite.count == 86)
        do {
            _ = try IKEPlainMessage(parsing: Self.freedWrite)
            Issue.record("parsed")
        } catch {
            #expect(error.notify == .invalidSyntax, "\(error)")
        }
    }

    @Test("ByteReader.skip moves without copying, stops at the end, and ignores a negative count")
    func skip() {
        var r = ByteReader([1, 2, 3, 4, 5])
        r.skip(2)
        #expect(r.u8() == 3)
        r.skip(-4)
        #expect(r.remaining == 2)
        r.skip(Int.max)
        #expect(r.remaining == 0 && r.take(3).isEmpty)
    }

    /// Swift 6.3.1's optimizer frees an array made from a slice before copying into it when the array
    /// is never used (scripts/toolchain/array-copy-lifetime.swift): no source may make one and drop it.
    @Test("no source discards an array it copied out of a reader or a slice")
    func noDiscardedArrayCopies() throws {
        let sources = projectRoot.appendingPathComponent("Sources").path
        let files = try #require(FileManager.default.enumerator(atPath: sources)?.allObjects as? [String]).filter { $0.hasSuffix(".swift") }
        #expect(files.count > 50)
        let discarded = try Regex(#"^\s*_\s*=\s*(try\??\s+)?([A-Za-z_][A-Za-z0-9_.]*\.(take|rest|prefix|suffix)\(|Array\(|\[UInt8\]\(|ContiguousArray\()"#)
        var found: [String] = []
        for file in files {
            let text = try String(contentsOfFile: "\(sources)/\(file)", encoding: .utf8)
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where line.contains(discarded) {
                found.append("\(file):\(n + 1): \(line.trimmingCharacters(in: .whitespaces))")
            }
        }
        #expect(found.isEmpty, "discarded array copies (use skip): \(found)")
    }
}
