/// Jain's fairness index, (Σx)² / (n·Σx²): 1 when all are equal, 1/n when one takes everything.
/// It is 1 for no values or when all are zero (nothing to be unfair about).
public func jainIndex(_ values: [Double]) -> Double {
    let sum = values.reduce(0, +), squares = values.reduce(0) { $0 + $1 * $1 }
    guard !values.isEmpty, squares > 0 else { return 1 }
    return sum * sum / (Double(values.count) * squares)
}

/// Whether flows shared a path fairly: the one definition the lab and the doctor both use.
///
/// Each flow's share is the new bytes it delivered over one interval common to all the flows (the
/// lab's test, the doctor's capture), so goodput over that interval and bytes give the same index.
/// A flow's goodput over its own life would not: a flow that starts late but runs fast looks fair.
public struct Fairness: Sendable, Hashable, Codable {
    /// Below this Jain's index the flows are unfair.
    public static let fairJainIndex = 0.9
    /// A flow under this share of the fair share (the mean) is starved.
    public static let starvedShare = 0.1

    /// Jain's index over the shares.
    public var jainIndex: Double
    /// Flows under ``starvedShare`` of the mean.
    public var starved: Int
    /// Fair: Jain's index at least ``fairJainIndex`` and no flow starved.
    public var isFair: Bool { jainIndex >= Self.fairJainIndex && starved == 0 }

    /// The fairness of these shares (bytes, or goodput over a common interval).
    public init(shares: [Double]) {
        jainIndex = OffloadReport.jainIndex(shares)
        let mean = shares.isEmpty ? 0 : shares.reduce(0, +) / Double(shares.count)
        starved = shares.filter { $0 < Self.starvedShare * mean }.count
    }
}
