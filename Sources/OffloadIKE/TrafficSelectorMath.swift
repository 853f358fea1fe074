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

    /// A selector as a range (its protocol and ports kept).
    static func range(_ ts: TrafficSelector) -> IKETrafficSelector {
        let (start, end): ([UInt8], [UInt8])
        switch ts.prefix {
        case .v4(let p):
            let first = p.address.rawValue & IPv4Prefix.mask(p.length)
            (start, end) = (bigEndianBytes(first), bigEndianBytes(first | ~IPv4Prefix.mask(p.length)))
        case .v6(let p):
            let a = UInt128(p.address.high) << 64 | UInt128(p.address.low)
            let mask: UInt128 = p.length == 0 ? 0 : ~UInt128(0) << (128 - p.length)
            (start, end) = (bytes(a & mask, width: 16), bytes(a & mask | ~mask, width: 16))
        }
        return IKETrafficSelector(start: start, end: end, ipProtocol: ts.ipProtocol, startPort: ts.ports.lowerBound,
                                  endPort: ts.ports.upperBound)
    }

    /// Whether the dataplane can enforce a selector's protocol and ports: any port, or a port
    /// range (start ≤ end) of a protocol whose header has ports. Not: ports without a protocol
    /// (RFC 7296 §3.13.1 forbids them), ICMP type and code (carried in the port fields), OPAQUE
    /// (start 65535, end 0).
    static func enforceable(_ ts: IKETrafficSelector) -> Bool {
        if ts.startPort == 0 && ts.endPort == 65_535 { return true }
        return ts.startPort <= ts.endPort && PacketSelectors.hasPorts(ts.ipProtocol)
    }

    /// The fewest prefixes that cover a range exactly, each with the range's protocol and ports;
    /// none when the range is not one (start above end, or a width other than 4 or 16) or its
    /// protocol and ports cannot be enforced (``enforceable(_:)``).
    static func prefixes(_ ts: IKETrafficSelector) -> [TrafficSelector] {
        let width = ts.start.count, bits = 8 * width
        var start = number(ts.start)
        let end = number(ts.end)
        guard start <= end, width == 4 || width == 16, ts.end.count == width, enforceable(ts) else { return [] }
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
            let prefix: TrafficSelector.Prefix = width == 4 ? .v4(IPv4Prefix(IPv4Address(b, 0), length: bits - size)!)
                : .v6(IPv6Prefix(IPv6Address(b, 0), length: bits - size)!)
            out.append(TrafficSelector(prefix, ipProtocol: ts.ipProtocol, ports: ts.startPort...ts.endPort))
            let last: UInt128 = size == 128 ? ~UInt128(0) : start | ((UInt128(1) << size) &- 1)
            if last >= end { break }
            start = last + 1
        }
        return out
    }

    /// The part of `a` inside `b` (RFC 7296 §2.9): prefixes nest or are disjoint; protocol 0 with P
    /// is P, P with another protocol is nothing; port ranges intersect. Nil when empty.
    static func intersect(_ a: TrafficSelector, _ b: TrafficSelector) -> TrafficSelector? {
        let prefix: TrafficSelector.Prefix
        switch (a.prefix, b.prefix) {
        case (.v4(let x), .v4(let y)) where x.length >= y.length && y.contains(x.address): prefix = a.prefix
        case (.v4(let x), .v4(let y)) where y.length >= x.length && x.contains(y.address): prefix = b.prefix
        case (.v6(let x), .v6(let y)) where x.length >= y.length && y.contains(x.address): prefix = a.prefix
        case (.v6(let x), .v6(let y)) where y.length >= x.length && x.contains(y.address): prefix = b.prefix
        default: return nil
        }
        let ipProtocol: UInt8
        if a.ipProtocol == 0 || a.ipProtocol == b.ipProtocol {
            ipProtocol = b.ipProtocol
        } else if b.ipProtocol == 0 {
            ipProtocol = a.ipProtocol
        } else {
            return nil
        }
        let low = max(a.ports.lowerBound, b.ports.lowerBound), high = min(a.ports.upperBound, b.ports.upperBound)
        guard low <= high else { return nil }
        return TrafficSelector(prefix, ipProtocol: ipProtocol, ports: low...high)
    }

    /// What of the `offered` selectors `allowed` covers: each offered range as prefixes, each
    /// intersected with each allowed selector (protocol and ports too). What the dataplane cannot
    /// enforce (``enforceable(_:)``) is left out: it must never carry more than agreed.
    static func narrow(_ offered: [IKETrafficSelector], to allowed: [TrafficSelector]) -> [TrafficSelector] {
        var out: [TrafficSelector] = []
        for ts in offered {
            for p in prefixes(ts) {
                for a in allowed {
                    // Not `enforceable(range(x))`: range's address arrays would be dead, and Swift 6.3.1's
                    // SIL DCE frees such an array before it is filled (scripts/toolchain).
                    if let x = intersect(p, a), x.allowsAllPorts || PacketSelectors.hasPorts(x.ipProtocol), !out.contains(x) { out.append(x) }
                }
            }
        }
        return out
    }

    /// Whether every selector of `narrowed` is enforceable and each of its prefixes, with its
    /// protocol and ports, lies inside one of `offered` (the initiator's check of the answer).
    static func within(_ narrowed: [IKETrafficSelector], _ offered: [TrafficSelector]) -> Bool {
        narrowed.allSatisfy { ts in
            enforceable(ts) && prefixes(ts).allSatisfy { p in offered.contains { intersect(p, $0) == p } }
        }
    }
}
