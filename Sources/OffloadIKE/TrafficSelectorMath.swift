import OffloadIPsec
import OffloadWire

/// Traffic selectors between IKEv2's ranges and the dataplane's prefixes, and their narrowing
/// (RFC 7296 §2.9).
enum SelectorMath {
    /// An address as a number (IPv4 in the low 32 bits) and its width.
    static func number(_ bytes: [UInt8]) -> UInt128 {
        bytes.reduce(UInt128(0)) { $0 << 8 | UInt128($1) }
    }

    static func bytes(_ n: UInt128, width: Int) -> [UInt8] {
        (0..<width).map { UInt8(truncatingIfNeeded: n >> (8 * (width - 1 - $0))) }
    }

    /// A prefix as a range.
    static func range(_ ts: TrafficSelector) -> IKETrafficSelector {
        switch ts {
        case .v4(let p):
            let start = p.address.rawValue & IPv4Prefix.mask(p.length)
            return IKETrafficSelector(start: bigEndianBytes(start), end: bigEndianBytes(start | ~IPv4Prefix.mask(p.length)))
        case .v6(let p):
            let a = UInt128(p.address.high) << 64 | UInt128(p.address.low)
            let mask: UInt128 = p.length == 0 ? 0 : ~UInt128(0) << (128 - p.length)
            return IKETrafficSelector(start: bytes(a & mask, width: 16), end: bytes(a & mask | ~mask, width: 16))
        }
    }

    /// The fewest prefixes that cover a range exactly.
    static func prefixes(_ ts: IKETrafficSelector) -> [TrafficSelector] {
        let width = ts.start.count, bits = 8 * width
        var start = number(ts.start)
        let end = number(ts.end)
        guard start <= end, width == 4 || width == 16 else { return [] }
        var out: [TrafficSelector] = []
        while true {
            // The largest block aligned at start that does not pass end.
            var size = 0
            while size < bits {
                let mask: UInt128 = size + 1 == 128 ? ~UInt128(0) : (UInt128(1) << (size + 1)) &- 1
                if start & mask != 0 || start | mask > end { break }
                size += 1
            }
            let b = bytes(start, width: width)
            if width == 4 {
                out.append(.v4(IPv4Prefix(IPv4Address(b, 0), length: bits - size)!))
            } else {
                out.append(.v6(IPv6Prefix(IPv6Address(b, 0), length: bits - size)!))
            }
            let last: UInt128 = size == 128 ? ~UInt128(0) : start | ((UInt128(1) << size) &- 1)
            if last >= end { break }
            start = last + 1
        }
        return out
    }

    /// The part of `a` inside `b` (prefixes nest or are disjoint).
    static func intersect(_ a: TrafficSelector, _ b: TrafficSelector) -> TrafficSelector? {
        switch (a, b) {
        case (.v4(let x), .v4(let y)):
            if x.length >= y.length, y.contains(x.address) { return a }
            if y.length >= x.length, x.contains(y.address) { return b }
        case (.v6(let x), .v6(let y)):
            if x.length >= y.length, y.contains(x.address) { return a }
            if y.length >= x.length, x.contains(y.address) { return b }
        default: break
        }
        return nil
    }

    /// What of the `offered` selectors `allowed` covers: selectors that name a protocol or ports
    /// are left out (the dataplane matches addresses only, and must never carry more than agreed).
    static func narrow(_ offered: [IKETrafficSelector], to allowed: [TrafficSelector]) -> [TrafficSelector] {
        var out: [TrafficSelector] = []
        for ts in offered where ts.allProtocolsAndPorts {
            for p in prefixes(ts) {
                for a in allowed {
                    if let x = intersect(p, a), !out.contains(x) { out.append(x) }
                }
            }
        }
        return out
    }

    /// Whether every prefix of `narrowed` lies inside one of `offered` (the initiator's check of the answer).
    static func within(_ narrowed: [IKETrafficSelector], _ offered: [TrafficSelector]) -> Bool {
        narrowed.allSatisfy { ts in
            ts.allProtocolsAndPorts && prefixes(ts).allSatisfy { p in offered.contains { intersect(p, $0) == p } }
        }
    }
}
