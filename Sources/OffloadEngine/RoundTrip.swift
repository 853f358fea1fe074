import OffloadWire

/// The property GRO and GSO keep together, `segment(coalesce(x)) == x`, checked on packets in memory.
public enum RoundTrip {
    /// Whether `output` (everything GRO emitted, super-packets segmented back) holds exactly the
    /// packets of `input`, byte for byte, with the packets that may share a flow in their order
    /// (``FlowKey/mayShareFlow(with:)``: protocol and ports compared wherever both are readable;
    /// GRO may reorder across flows).
    /// - Returns: a description of the first violation, or nil when the property holds.
    public static func violation(input: [[UInt8]], output: [[UInt8]], linkType: LinkType) -> String? {
        guard input.count == output.count else { return "packet count \(input.count) in, \(output.count) out" }
        var queues: [[UInt8]: [Int]] = [:]
        for (i, f) in input.enumerated() { queues[f, default: []].append(i) }
        var position = [Int](repeating: -1, count: input.count)
        for (p, f) in output.enumerated() {
            guard var q = queues[f], !q.isEmpty else { return "output \(p) (\(f.count) bytes) matches no input" }
            position[q.removeFirst()] = p
            queues[f] = q
        }
        let keys = input.map { unsafe FlowKey(loosely: $0.span.bytes, linkType: linkType) }
        for i in 0..<input.count {
            guard let ki = keys[i] else { continue }
            for j in (i + 1)..<input.count {
                guard let kj = keys[j], ki.mayShareFlow(with: kj) else { continue }
                if position[i] > position[j] { return "inputs \(i) and \(j) of one flow left in the wrong order" }
            }
        }
        return nil
    }
}
