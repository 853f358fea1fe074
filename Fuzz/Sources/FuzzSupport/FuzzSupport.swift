/// Reads fuzz input front to back; every read past the end gives zeros, so any input decodes.
public struct FuzzInput {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    /// Wraps libFuzzer's input.
    public init(_ data: UnsafePointer<UInt8>, _ size: Int) {
        bytes = UnsafeRawBufferPointer(start: data, count: size)
    }

    /// Whether all bytes have been read.
    public var isEmpty: Bool { offset >= bytes.count }
    /// The bytes not read yet.
    public var remaining: Int { max(0, bytes.count - offset) }

    /// The next byte (0 past the end).
    public mutating func byte() -> UInt8 {
        defer { offset += 1 }
        return offset < bytes.count ? bytes[offset] : 0
    }

    /// The next two bytes, big-endian.
    public mutating func u16() -> UInt16 { UInt16(byte()) << 8 | UInt16(byte()) }

    /// Up to `count` next bytes.
    public mutating func take(_ count: Int) -> [UInt8] {
        let n = min(count, remaining)
        defer { offset += n }
        return n > 0 ? Array(bytes[offset..<(offset + n)]) : []
    }

    /// Everything not read yet.
    public mutating func rest() -> [UInt8] { take(remaining) }
}

/// Stops the run with a message: libFuzzer records the input as a crash.
public func oracleFailure(_ message: String) -> Never {
    fatalError("oracle: \(message)")
}
