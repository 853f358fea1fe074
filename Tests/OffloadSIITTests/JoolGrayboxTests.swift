import Foundation
import OffloadSIIT
import OffloadTestSupport
import OffloadWire
import Testing

/// Jool's graybox SIIT cases, an external oracle: each input packet goes through the offline
/// dataplane (translation, then the forwarding decision, as on the live translator) and what comes
/// out, forwarded or sent back, is compared with Jool's expected packets under graybox's rules.
/// The data lives outside the project (GPL) and is read only when it exists beside it.
enum Graybox {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/corpus/jool-graybox-siit")

    struct Case: Decodable, Sendable, CustomStringConvertible {
        struct Config: Decodable, Sendable {
            var pool6: String?
            var eamt: [[String]]
            var rfc6791v4: String?
            var rfc6791v6: String?
            var lowestIPv6MTU: Int
            var amend: Bool
            var mtu: [String: Int]
            enum CodingKeys: String, CodingKey {
                case pool6, eamt, mtu
                case rfc6791v4 = "rfc6791v4-prefix"
                case rfc6791v6 = "rfc6791v6-prefix"
                case lowestIPv6MTU = "lowest-ipv6-mtu"
                case amend = "amend-udp-checksum-zero"
            }
        }
        var id: Int
        var group: String
        var input: String
        var expected: [String]
        var ignore_byte_offsets: [Int]
        var config: Config
        var description: String { "\(id) \(input.split(separator: "/").last ?? "")" }
    }

    struct File: Decodable { var cases: [Case] }

    static let cases: [Case] = {
        guard let data = try? Data(contentsOf: root.appendingPathComponent("cases.json")),
            let file = try? JSONDecoder().decode(File.self, from: data)
        else { return [] }
        return file.cases
    }()

    static func packet(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: root.appendingPathComponent(path)))
    }

    static func configuration(_ c: Case.Config) -> SIITConfiguration {
        var s = SIITConfiguration(pool6: c.pool6.flatMap { RFC6052Prefix($0) })
        s.eam = EAMTable(c.eamt.compactMap { $0.count == 2 ? EAMTable.Entry("\($0[0])=\($0[1])") : nil })
        s.rfc6791v4 = c.rfc6791v4.flatMap { IPv4Address($0.split(separator: "/")[0]) }
        s.rfc6791v6 = c.rfc6791v6.flatMap { IPv6Address($0.split(separator: "/")[0]) }
        s.ownIPv4 = IPv4Address(198, 51, 100, 1)
        s.ownIPv6 = IPv6Address("2001:db8:1c0:2:1::")!
        s.lowestIPv6MTU = c.lowestIPv6MTU
        s.amendUDPChecksumZero = c.amend
        return s
    }

    /// Graybox's comparison (`mod/diff.c`): same length; ignored offsets skipped; an expected IPv4
    /// ID of 0 means any ID (the header checksum must then be valid); an ICMPv4 TOS of 0xC0 accepted.
    static func matches(_ actual: [UInt8], _ expected: [UInt8], ignoring: Set<Int>) -> String? {
        guard actual.count == expected.count else { return "length \(actual.count), expected \(expected.count)" }
        var skip = ignoring
        if expected.first.map({ $0 >> 4 }) == 4 && expected.count >= 20 {
            if expected[4] == 0 && expected[5] == 0 {
                skip.formUnion([4, 5, 10, 11])
                guard unsafe actual.span.bytes.extracting(0..<20).withUnsafeBytes({ unsafe InternetChecksum.unsafeSum($0).value })
                    == 0xFFFF
                else { return "IPv4 header checksum invalid" }
            }
            if actual[9] == 1 && actual[1] == 0xC0 { skip.formUnion([1, 10, 11]) }
        }
        for i in 0..<actual.count where !skip.contains(i) && actual[i] != expected[i] {
            return String(format: "byte %d is 0x%02x, expected 0x%02x", i, actual[i], expected[i])
        }
        return nil
    }

    /// Runs a case; nil when the output matches, else what differs.
    static func run(_ c: Case) throws -> String? {
        var dataplane = SIITOfflineDataplane(configuration: configuration(c.config),
                                             mtu4: c.config.mtu["jool:to_client_v4"] ?? 1500,
                                             mtu6: c.config.mtu["jool:to_client_v6"] ?? 1500)
        let (forwarded, returned) = dataplane.translate(try packet(c.input))
        let actual = forwarded + returned
        let expected = try c.expected.map(packet)
        guard actual.count == expected.count else {
            return "\(actual.count) packets out (\(forwarded.count) forwarded, \(returned.count) back), expected \(expected.count); translation \(dataplane.translation)"
        }
        let ignoring = Set(c.ignore_byte_offsets)
        // The order of two fragments is not significant.
        var remaining = actual
        var problems: [String] = []
        for e in expected {
            if let k = remaining.firstIndex(where: { matches($0, e, ignoring: ignoring) == nil }) {
                remaining.remove(at: k)
            } else {
                problems.append(remaining.first.flatMap { matches($0, e, ignoring: ignoring) } ?? "missing")
            }
        }
        return problems.isEmpty ? nil : problems.joined(separator: "; ")
    }

    /// The cases this translator answers differently on purpose, with the reason (RFC text).
    static let deviations: [Int: String] = [
        68: """
            cat2, an IPv4 fragment with DF set that does not fit: we announce the MTU less 28 (the IPv6 header and the \
            Fragment header the translated fragment needs), Jool less 20. RFC 7915 §4.1 asks for "Fragmentation Needed" \
            when the packet plus 20 exceeds the MTU; a fragment grows by 28, so a sender obeying MTU - 20 would be \
            refused again.
            """,
        76: """
            cgt2, an IPv6 fragment translated to an IPv4 fragment larger than the 1400-byte IPv4 link: RFC 7915 §5.1 \
            sets DF to zero "allowing this packet to be further fragmented by IPv4 routers"; the translator is the first \
            of them and fragments it. Jool answers Packet Too Big instead.
            """,
        99: """
            ib2t, an RFC 4884 quote of 126 bytes (+2 padding): RFC 4884 §5.1 has the ICMPv6 "original datagram" field \
            "zero padded to the nearest 64-bit boundary": we pad the 148 translated bytes to 152; Jool cuts them to 144, \
            losing quoted bytes.
            """,
        100: "ib3t: as ib2t (RFC 4884 §5.1: pad to the 64-bit boundary, do not cut the quoted datagram).",
    ]
}

@Suite("Jool's graybox SIIT cases (an external oracle)")
struct JoolGrayboxTests {
    @Test("the oracle is all there", .enabled(if: joolCorpusPresent, "Jool's graybox cases are not beside the project"))
    func presence() {
        #expect(Graybox.cases.count == 124)
    }

    @Test("each case: the packets out match Jool's", arguments: Graybox.cases)
    func graybox(_ c: Graybox.Case) throws {
        if let reason = Graybox.deviations[c.id] {
            withKnownIssue("deviation: \(reason)") {
                let problem = try Graybox.run(c)
                #expect(problem == nil, "\(problem ?? "")")
            }
        } else {
            let problem = try Graybox.run(c)
            #expect(problem == nil, "\(problem ?? "")")
        }
    }
}
