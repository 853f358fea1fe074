import OffloadEngine
import OffloadTUN
import OffloadWire

/// How a forwarding direction damages its output, for tests and the lab: this kernel has no
/// `netem`, so loss, reordering, duplication, delay and corruption are made here, on wire
/// segments (after GSO), so that TCP's recovery is exercised through the forwarder.
///
/// Text form (``init(parsing:)``): comma-separated `key=value`, rates in percent or as fractions,
/// for example `loss=1%,reorder=1%,duplicate=0.1%,depth=3,delay=2ms,corrupt=0.01%,seed=7`.
public struct ImpairmentSettings: Hashable, Sendable, CustomStringConvertible {
    /// The chance that a segment is dropped.
    public var loss = 0.0
    /// The chance that a segment is sent twice.
    public var duplicate = 0.0
    /// The chance that a segment is held back until ``reorderDepth`` later segments have left.
    public var reorder = 0.0
    /// How many later segments overtake a reordered one.
    public var reorderDepth = 3
    /// The chance that one byte after the IP header is flipped (the L4 checksum then fails).
    public var corrupt = 0.0
    /// Nanoseconds every segment is held before it leaves.
    public var delay: UInt64 = 0
    /// The seed of the random choices (the same seed and input give the same damage).
    public var seed: UInt64 = 1

    /// No impairment.
    public init() {}

    /// Whether any impairment is on.
    public var isActive: Bool { loss > 0 || duplicate > 0 || reorder > 0 || corrupt > 0 || delay > 0 }

    /// Parses the text form; throws a message naming the part it cannot read.
    public init(parsing text: String) throws(ImpairmentSettingsError) {
        for part in text.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map { String($0.filter { $0 != " " }) }
            guard pair.count == 2 else { throw ImpairmentSettingsError("'\(part)' is not key=value") }
            let (key, value) = (pair[0], pair[1])
            switch key {
            case "loss": loss = try Self.rate(value, key)
            case "duplicate", "dup": duplicate = try Self.rate(value, key)
            case "reorder": reorder = try Self.rate(value, key)
            case "corrupt": corrupt = try Self.rate(value, key)
            case "depth":
                guard let d = Int(value), d >= 1, d <= 1000 else { throw ImpairmentSettingsError("depth must be 1…1000") }
                reorderDepth = d
            case "delay":
                guard let ns = Self.duration(value) else { throw ImpairmentSettingsError("delay '\(value)': use e.g. 2ms, 500us, 1s") }
                delay = ns
            case "seed":
                guard let s = UInt64(value) else { throw ImpairmentSettingsError("seed must be a non-negative integer") }
                seed = s
            default:
                throw ImpairmentSettingsError("unknown key '\(key)' (loss, duplicate, reorder, depth, corrupt, delay, seed)")
            }
        }
    }

    /// The text form.
    public var description: String {
        func percent(_ v: Double) -> String { "\(v * 100)%" }
        return "loss=\(percent(loss)),duplicate=\(percent(duplicate)),reorder=\(percent(reorder)),depth=\(reorderDepth),"
            + "corrupt=\(percent(corrupt)),delay=\(delay / 1000)us,seed=\(seed)"
    }

    static func rate(_ text: String, _ key: String) throws(ImpairmentSettingsError) -> Double {
        let percent = text.hasSuffix("%")
        guard let v = Double(percent ? String(text.dropLast()) : text) else {
            throw ImpairmentSettingsError("\(key) '\(text)' is not a number")
        }
        let rate = percent ? v / 100 : v
        guard rate >= 0, rate <= 1 else { throw ImpairmentSettingsError("\(key) must be between 0 and 100%") }
        return rate
    }

    static func duration(_ text: String) -> UInt64? {
        for (suffix, scale) in [("ms", 1_000_000.0), ("us", 1_000.0), ("ns", 1.0), ("s", 1_000_000_000.0)]
        where text.hasSuffix(suffix) {
            // At most 10 s: a longer delay is a mistake, and would hold the whole window.
            guard let v = Double(text.dropLast(suffix.count)), v >= 0, v * scale <= 10e9 else { return nil }
            return UInt64(v * scale)
        }
        return nil
    }
}

/// An impairment setting that could not be read.
public struct ImpairmentSettingsError: Error, CustomStringConvertible {
    /// What is wrong.
    public var description: String
    init(_ description: String) { self.description = description }
}

/// One direction's impairment: damages what a ``ForwardingPipeline`` writes to its egress.
/// Owned by the pipeline's thread. Super-packets are segmented first (complete checksums), so
/// every choice is per wire segment; held segments leave when they are due, at the latest when
/// the pipeline next calls ``release(now:to:)``.
public final class Impairment: @unchecked Sendable {
    /// The settings.
    public let settings: ImpairmentSettings
    /// Segments seen, dropped, duplicated, reordered, delayed and corrupted.
    public private(set) var segments = 0, dropped = 0, duplicated = 0, reordered = 0, delayed = 0, corrupted = 0

    var random: UInt64
    var segmenter = GSOSegmenter()
    /// Held segments: the bytes, when they may leave, and (reordered ones) how many more segments
    /// must overtake them first.
    var held: [(bytes: [UInt8], due: UInt64, overtakes: Int)] = []
    let linkType: LinkType

    /// A reordered segment leaves after this long even when too few segments overtook it.
    static let reorderTimeout: UInt64 = 20_000_000

    /// Creates an impairment for packets of `linkType`.
    public init(_ settings: ImpairmentSettings, linkType: LinkType = .raw) {
        self.settings = settings
        self.linkType = linkType
        random = settings.seed &* 0x9E37_79B9_7F4A_7C15 | 1
    }

    /// Whether segments are held back (reordered or delayed) waiting to leave.
    public var isHolding: Bool { !held.isEmpty }

    /// The counters, for the forwarder's metrics.
    public var counters: [StageCounter] {
        [("segments", segments, "Segments the impairment saw"), ("dropped", dropped, "Segments dropped on purpose"),
         ("duplicated", duplicated, "Segments sent twice"), ("reordered", reordered, "Segments held back for reordering"),
         ("delayed", delayed, "Segments delayed"), ("corrupted", corrupted, "Segments with a flipped byte")]
            .map { StageCounter("impairment_\($0.0)", help: $0.2, value: $0.1) }
    }

    /// The next random number in [0, 1) (xorshift64*).
    func chance() -> Double {
        random ^= random >> 12
        random ^= random << 25
        random ^= random >> 27
        return Double((random &* 0x2545_F491_4F6C_DD1D) >> 11) / Double(1 << 53)
    }

    /// Damages one packet (a super-packet when `header` carries GSO facts) and writes what is due.
    public func write<E: PacketSink & ~Copyable>(header: VirtioNetHeader?, pieces: UnsafeBufferPointer<UnsafeRawBufferPointer>,
                                                 now: UInt64, to sink: borrowing E) throws(TUNError) {
        var packet: [UInt8] = []
        for unsafe piece in unsafe pieces { unsafe packet += piece }
        if let header, header.needsChecksum {
            unsafe packet.withUnsafeMutableBytes {
                unsafe try? VirtioPacketInfo.finishPartialChecksum($0, start: Int(header.checksumStart),
                                                                    offset: Int(header.checksumOffset))
            }
        }
        var wire: [[UInt8]] = [packet]
        if let header, let info = unsafe try? VirtioPacketInfo.validate(header, packet: packet.span.bytes, linkType: linkType),
            let gso = info.gso
        {
            let segmented: Bool = unsafe packet.withUnsafeBytes { buffer in
                guard (unsafe try? segmenter.segment(buffer, linkType: linkType, gso: gso)) != nil else { return false }
                wire = (0..<segmenter.segmentCount).map { segmenter.segmentBytes(at: $0) }
                return true
            }
            if !segmented { wire = [packet] }
        }
        for segment in wire { try damage(segment, now: now, to: sink) }
    }

    /// Writes the held segments that are due.
    public func release<E: PacketSink & ~Copyable>(now: UInt64, to sink: borrowing E) throws(TUNError) {
        var k = 0
        while k < held.count {
            let h = held[k]
            if h.due <= now && (h.overtakes <= 0 || now >= h.due &+ Self.reorderTimeout) {
                held.remove(at: k)
                try send(h.bytes, to: sink)
            } else {
                k += 1
            }
        }
    }

    func damage<E: PacketSink & ~Copyable>(_ segment: [UInt8], now: UInt64, to sink: borrowing E) throws(TUNError) {
        segments += 1
        if chance() < settings.loss {
            dropped += 1
            return
        }
        var bytes = segment
        if settings.corrupt > 0, chance() < settings.corrupt,
            let layout = unsafe try? PacketLayout(parsing: bytes.span.bytes, linkType: linkType), layout.ipEnd > layout.transportOffset
        {
            let at = layout.transportOffset + Int(chance() * Double(layout.ipEnd - layout.transportOffset))
            bytes[min(at, layout.ipEnd - 1)] ^= 0x5A
            corrupted += 1
        }
        let copies = chance() < settings.duplicate ? 2 : 1
        if copies == 2 { duplicated += 1 }
        for _ in 0..<copies {
            if settings.reorder > 0 && chance() < settings.reorder {
                reordered += 1
                held.append((bytes, now &+ settings.delay, settings.reorderDepth))
            } else if settings.delay > 0 {
                delayed += 1
                held.append((bytes, now &+ settings.delay, 0))
            } else {
                try send(bytes, to: sink)
            }
        }
        try release(now: now, to: sink)
    }

    /// Writes one segment, and counts it against the reordered segments waiting for it.
    func send<E: PacketSink & ~Copyable>(_ bytes: [UInt8], to sink: borrowing E) throws(TUNError) {
        for k in held.indices where held[k].overtakes > 0 { held[k].overtakes -= 1 }
        var failure: TUNError?
        unsafe bytes.withUnsafeBytes { raw in
            unsafe withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: 1) { pieces in
                unsafe pieces[0] = unsafe raw
                do throws(TUNError) { unsafe try sink.write(header: nil, pieces: UnsafeBufferPointer(pieces)) } catch {
                    failure = error
                }
            }
        }
        if let failure { throw failure }
    }
}
