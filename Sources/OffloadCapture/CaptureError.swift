import SystemPackage

/// Why a capture file cannot be read or written, and where.
public struct CaptureError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong.
    public enum Kind: Hashable, Sendable {
        /// The file does not start with a pcap or pcapng magic number.
        case notACapture(UInt32)
        /// A pcap version other than 2.x, or a pcapng major version other than 1.
        case unsupportedVersion(major: UInt16, minor: UInt16)
        /// The file ends inside a header or record.
        case truncated(needed: Int, available: Int)
        /// A length field is impossible (too small, too large, or not a multiple of 4 in pcapng).
        case badLength(String)
        /// A packet names an interface that no Interface Description Block declared.
        case unknownInterface(Int)
        /// A packet block before any Section Header Block.
        case blockOutsideSection
        /// The writer cannot express this (e.g. several link types in one pcap file).
        case unsupportedOutput(String)
        /// A system call failed.
        case io(Errno, String)
    }

    /// What went wrong.
    public var kind: Kind
    /// The file.
    public var path: String
    /// The record (packet) number, counting from 1, or 0 for the file header.
    public var record: Int
    /// The byte offset in the file where the bad header or record starts.
    public var offset: Int

    /// Creates an error.
    public init(_ kind: Kind, path: String, record: Int, offset: Int) {
        self.kind = kind
        self.path = path
        self.record = record
        self.offset = offset
    }

    /// `path: record 12 at byte 3456: truncated: needs 1514 bytes, has 200`.
    public var description: String {
        let what: String
        switch kind {
        case .notACapture(let magic):
            what = "not a pcap or pcapng file (magic 0x\(String(magic, radix: 16)))"
        case .unsupportedVersion(let major, let minor): what = "unsupported version \(major).\(minor)"
        case .truncated(let needed, let available): what = "truncated: needs \(needed) bytes, has \(available)"
        case .badLength(let s): what = "bad length: \(s)"
        case .unknownInterface(let i): what = "packet on interface \(i), which no Interface Description Block declares"
        case .blockOutsideSection: what = "block before the Section Header Block"
        case .unsupportedOutput(let s): what = s
        case .io(let errno, let operation): what = "\(operation): \(errno)"
        }
        let location = record == 0 ? "file header" : "record \(record)"
        return "\(path): \(location) at byte \(offset): \(what)"
    }
}
