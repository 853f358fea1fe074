import OffloadEngine
import OffloadNAT64
import OffloadSIIT
import OffloadWire
import Testing

/// The addresses, packets and readers the NAT64 tests share. The prefix is network-specific: the
/// well-known 64:ff9b::/96 is checksum-neutral (RFC 6052 §2.1), so with it a translator that forgot
/// to adjust checksums would pass.
enum Net {
    static let prefix = RFC6052Prefix(IPv6Prefix(IPv6Address(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0), length: 96)!)!
    static let client = IPv6Address(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2)
    static let client2 = IPv6Address(0x2001, 0xdb8, 1, 0, 0, 0, 0, 3)
    static let server = IPv4Address(203, 0, 113, 9)
    static let server2 = IPv4Address(203, 0, 113, 10)
    static let router4 = IPv4Address(203, 0, 113, 254)
    static let pool = IPv4Address(198, 51, 100, 1)
    /// One second of the translator's clock.
    static let s = NAT64Timeouts.second

    static func configuration(_ pool4: String = "198.51.100.1:1024-65535") -> NAT64Configuration {
        NAT64Configuration(pool4: [Pool4Entry(pool4)!], pool6: prefix)
    }

    /// A TCP segment from an IPv6 host to an IPv4 one (under the prefix).
    static func tcp6(from source: IPv6Address = client, sourcePort: UInt16 = 40001, to destination: IPv4Address = server,
                     port destinationPort: UInt16 = 80, flags: TCPFlags = .syn, payload: Int = 0) -> [UInt8] {
        var b = PacketBuilder()
        b.link = .raw
        b.source = .v6(source)
        b.destination = .v6(prefix.embedding(destination))
        b.flags = flags
        b.sourcePort = sourcePort
        b.destinationPort = destinationPort
        b.payloadLength = payload
        return b.frame()
    }

    /// A TCP segment from an IPv4 host to the pool4.
    static func tcp4(from source: IPv4Address = server, sourcePort: UInt16 = 80, to destination: IPv4Address = pool,
                     port destinationPort: UInt16, flags: TCPFlags = .ack, payload: Int = 0) -> [UInt8] {
        var b = PacketBuilder()
        b.link = .raw
        b.source = .v4(source)
        b.destination = .v4(destination)
        b.flags = flags
        b.sourcePort = sourcePort
        b.destinationPort = destinationPort
        b.payloadLength = payload
        return b.frame()
    }

    /// A UDP datagram from an IPv6 host.
    static func udp6(from source: IPv6Address = client, sourcePort: UInt16 = 40001, to destination: IPv4Address = server,
                     port destinationPort: UInt16 = 53, payload: Int = 20) -> [UInt8] {
        var b = PacketBuilder()
        b.link = .raw
        b.source = .v6(source)
        b.destination = .v6(prefix.embedding(destination))
        b.udp = true
        b.sourcePort = sourcePort
        b.destinationPort = destinationPort
        b.payloadLength = payload
        return b.frame()
    }

    /// A UDP datagram from an IPv4 host to the pool4.
    static func udp4(from source: IPv4Address = server, sourcePort: UInt16 = 53, to destination: IPv4Address = pool,
                     port destinationPort: UInt16, payload: Int = 20) -> [UInt8] {
        var b = PacketBuilder()
        b.link = .raw
        b.source = .v4(source)
        b.destination = .v4(destination)
        b.udp = true
        b.sourcePort = sourcePort
        b.destinationPort = destinationPort
        b.payloadLength = payload
        return b.frame()
    }

    /// An ICMPv6 echo request (128) or reply (129).
    static func echo6(from source: IPv6Address = client, to destination: IPv4Address = server, type: UInt8 = 128,
                      id: UInt16 = 0x1234, sequence: UInt16 = 1) -> [UInt8] {
        var b = PacketBuilder()
        b.link = .raw
        b.source = .v6(source)
        b.destination = .v6(prefix.embedding(destination))
        b.transport = .icmp(type: type, code: 0, restOfHeader: UInt32(id) << 16 | UInt32(sequence))
        b.payloadLength = 16
        return b.frame()
    }

    /// An ICMPv4 echo request (8) or reply (0).
    static func echo4(from source: IPv4Address = server, to destination: IPv4Address = pool, type: UInt8 = 0, id: UInt16,
                      sequence: UInt16 = 1) -> [UInt8] {
        var b = PacketBuilder()
        b.link = .raw
        b.source = .v4(source)
        b.destination = .v4(destination)
        b.transport = .icmp(type: type, code: 0, restOfHeader: UInt32(id) << 16 | UInt32(sequence))
        b.payloadLength = 16
        return b.frame()
    }

    /// An ICMPv4 error from `source` to `destination` quoting `quote` (cut to 548 bytes, as a router does).
    static func icmp4Error(from source: IPv4Address, to destination: IPv4Address, type: UInt8, code: UInt8,
                           rest: UInt32 = 0, quoting quote: [UInt8]) -> [UInt8] {
        var b = PacketBuilder()
        b.link = .raw
        b.source = .v4(source)
        b.destination = .v4(destination)
        b.transport = .icmp(type: type, code: code, restOfHeader: rest)
        b.payload = Array(quote.prefix(548))
        return b.frame()
    }

    /// An ICMPv6 error from `source` to `destination` (an IPv4 host under the prefix) quoting `quote`.
    static func icmp6Error(from source: IPv6Address, to destination: IPv4Address, type: UInt8, code: UInt8,
                           rest: UInt32 = 0, quoting quote: [UInt8]) -> [UInt8] {
        var b = PacketBuilder()
        b.link = .raw
        b.source = .v6(source)
        b.destination = .v6(prefix.embedding(destination))
        b.transport = .icmp(type: type, code: code, restOfHeader: rest)
        b.payload = Array(quote.prefix(1232))
        return b.frame()
    }

    // MARK: Reading packets

    static func source4(_ p: [UInt8]) -> IPv4Address { IPv4Address(p, 12) }
    static func destination4(_ p: [UInt8]) -> IPv4Address { IPv4Address(p, 16) }
    static func source6(_ p: [UInt8]) -> IPv6Address { IPv6Address(p, 8) }
    static func destination6(_ p: [UInt8]) -> IPv6Address { IPv6Address(p, 24) }
    /// The 16-bit field at `offset` of the transport header (IPv4 without options, IPv6 without
    /// extension headers).
    static func l4Field(_ p: [UInt8], _ offset: Int) -> UInt16 {
        p.loadBigEndian(UInt16.self, at: (p[0] >> 4 == 4 ? Int(p[0] & 0x0F) * 4 : 40) + offset)
    }

    /// The session to `remote` (`203.0.113.9:80`, or `203.0.113.9` for ICMP) of `proto`, in a snapshot.
    static func session(_ snapshot: NAT64Snapshot, _ proto: NAT64Protocol, remote: String) -> NAT64SessionView? {
        snapshot.entries.filter { $0.proto == proto.name }.flatMap(\.sessions).first { $0.remote == remote }
    }

    // MARK: Fragments

    /// Cuts an IPv4 packet (no options) into two fragments, the first carrying `split` bytes of its payload.
    static func fragments4(_ packet: [UInt8], split: Int, id: UInt16) -> [[UInt8]] {
        precondition(split % 8 == 0)
        let payload = Array(packet[20...])
        func make(_ piece: ArraySlice<UInt8>, offset: Int, more: Bool) -> [UInt8] {
            var h = Array(packet[0..<20])
            h.storeBigEndian(UInt16(20 + piece.count), at: 2)
            h.storeBigEndian(id, at: 4)
            h.storeBigEndian(UInt16(offset / 8) | (more ? 0x2000 : 0), at: 6)
            h[10] = 0
            h[11] = 0
            h.storeBigEndian(InternetChecksum.checksum(h.span.bytes), at: 10)
            return h + piece
        }
        return [make(payload[0..<split], offset: 0, more: true), make(payload[split...], offset: split, more: false)]
    }

    /// Cuts an IPv6 packet (no extension headers) into two fragments with Fragment headers.
    static func fragments6(_ packet: [UInt8], split: Int, id: UInt32) -> [[UInt8]] {
        precondition(split % 8 == 0)
        let payload = Array(packet[40...])
        let next = packet[6]
        func make(_ piece: ArraySlice<UInt8>, offset: Int, more: Bool) -> [UInt8] {
            var h = Array(packet[0..<40])
            h[6] = 44
            h.storeBigEndian(UInt16(8 + piece.count), at: 4)
            var f: [UInt8] = [next, 0, 0, 0, 0, 0, 0, 0]
            f.storeBigEndian(UInt16(offset) | (more ? 1 : 0), at: 2)  // offset in bytes is 8-aligned: the low 3 bits are flags
            f.storeBigEndian(id, at: 4)
            return h + f + piece
        }
        return [make(payload[0..<split], offset: 0, more: true), make(payload[split...], offset: split, more: false)]
    }

    /// The transport payload of translated fragments (IPv4, or IPv6 with a Fragment header), put
    /// back in order, and its pseudo-header sum: a whole datagram whose checksum can be checked.
    static func reassembledChecksumIsValid(_ fragments: [[UInt8]]) throws -> Bool {
        var pieces: [(offset: Int, bytes: [UInt8])] = []
        var pseudo: (IPAddress, IPAddress, IPProtocol)?
        for f in fragments {
            if f[0] >> 4 == 4 {
                let total = Int(f.loadBigEndian(UInt16.self, at: 2))
                let offset = Int(f.loadBigEndian(UInt16.self, at: 6) & 0x1FFF) * 8
                pieces.append((offset, Array(f[20..<total])))
                pseudo = (.v4(IPv4Address(f, 12)), .v4(IPv4Address(f, 16)), IPProtocol(rawValue: f[9]))
            } else {
                try #require(f[6] == 44)
                let offset = Int(f.loadBigEndian(UInt16.self, at: 42) & 0xFFF8)
                pieces.append((offset, Array(f[48..<(40 + Int(f.loadBigEndian(UInt16.self, at: 4)))])))
                pseudo = (.v6(IPv6Address(f, 8)), .v6(IPv6Address(f, 24)), IPProtocol(rawValue: f[40]))
            }
        }
        var whole: [UInt8] = []
        for piece in pieces.sorted(by: { $0.offset < $1.offset }) {
            try #require(piece.offset == whole.count)
            whole += piece.bytes
        }
        let sum: OnesComplementSum = switch try #require(pseudo) {
        case (.v4(let s), .v4(let d), let p):
            InternetChecksum.pseudoHeaderSum(ipv4Source: s, destination: d, protocolNumber: p, length: whole.count)
        case (.v6(let s), .v6(let d), let p):
            InternetChecksum.pseudoHeaderSum(ipv6Source: s, destination: d, nextHeader: p, length: whole.count)
        default: .zero
        }
        return InternetChecksum.sum(whole.span.bytes, initial: sum).value == 0xFFFF
    }
}
