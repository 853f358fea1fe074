/// Jain's fairness index, (Σx)² / (n·Σx²): 1 when all are equal, 1/n when one takes everything.
/// It is 1 for no values or when all are zero (nothing to be unfair about).
public func jainIndex(_ values: [Double]) -> Double {
    let sum = values.reduce(0, +), squares = values.reduce(0) { $0 + $1 * $1 }
    guard !values.isEmpty, squares > 0 else { return 1 }
    return sum * sum / (Double(values.count) * squares)
}
