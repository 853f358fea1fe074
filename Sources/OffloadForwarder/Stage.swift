import OffloadEngine
import OffloadWire

/// Which way packets go through a ``Forwarder``.
public enum Direction: String, CaseIterable, Hashable, Sendable, Codable {
    /// From the LAN side (the ingress device) to the WAN side (the egress device).
    case lanToWan = "lan_to_wan"
    /// Back: from the egress device to the ingress device.
    case wanToLan = "wan_to_lan"

    /// The name in counters, metrics and JSON (`lan_to_wan`, `wan_to_lan`).
    public var label: String { rawValue }
}

/// One packet or super-packet passing through a ``Stage``: its headers in a buffer the stage may
/// rewrite, its GSO facts and checksum state, and the length of the payload, which stays where it
/// is (the stage never copies or sees it: a super-packet's payload is a list of pieces in place).
///
/// ```text
///  headers (rewritable, up to headerCapacity)      payload pieces (read-only, in place)
/// +-----------------------------------------+     +--------+--------+-----+
/// | link | IP | TCP/UDP                     | ... | seg 1  | seg 2  | ... |
/// +-----------------------------------------+     +--------+--------+-----+
///  0                            headerLength        payloadLength bytes in all
/// ```
/// (`@safe`: the header pointer is only reachable through ``withUnsafeMutableHeaders(_:)`` and the
/// lifetime-bound ``headers`` span, and a ``StagePacket`` lives only for one ``Stage/process(_:)`` call.)
@safe
public struct StagePacket {
    /// The direction the packet travels.
    public let direction: Direction
    /// Where the headers lie; valid only during ``Stage/process(_:)``.
    let _headers: UnsafeMutableRawBufferPointer
    /// The header bytes in use (link, IP and transport headers).
    public var headerLength: Int
    /// The packet's layout (offsets into the headers; `ipEnd` counts the payload too). A stage
    /// that changes the header lengths updates it.
    public var layout: PacketLayout
    /// GSO facts of a super-packet (a stage that changes the family changes the kind).
    public var gso: GSOInfo?
    /// The L4 checksum's state (`.partial`: the field holds the pseudo-header sum only).
    public var checksum: ChecksumState
    /// The payload bytes after the headers.
    public let payloadLength: Int
    /// The MTU of the device the packet is written to (a stage that fragments needs it).
    public let egressMTU: Int
    /// The pipeline's clock, in nanoseconds (monotonic live, capture time offline): a stage with
    /// timers (session lifetimes) reads it here.
    public var now: UInt64 = 0

    /// The most header bytes the buffer can hold.
    public var headerCapacity: Int { unsafe _headers.count }

    /// Gives the stage the header buffer (all of ``headerCapacity``; bytes past ``headerLength``
    /// are free room for headers that grow). Do not keep the pointer beyond the call.
    @discardableResult
    public mutating func withUnsafeMutableHeaders<R, E: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        unsafe try body(_headers)
    }

    /// The header bytes in use, for reading.
    public var headers: RawSpan {
        @_lifetime(borrow self) get {
            let view = unsafe UnsafeRawBufferPointer(rebasing: _headers[0..<headerLength]).bytes
            return unsafe _overrideLifetime(view, borrowing: self)
        }
    }
}

extension StagePacket {
    /// Runs `body` with a stage packet over `headers` (a packet's headers, with free room after
    /// `headerLength` for headers that grow): to test or measure a stage without a pipeline. What
    /// the stage wrote stays in `headers`.
    public static func withPacket<R>(
        headers: inout [UInt8], headerLength: Int, layout: PacketLayout, gso: GSOInfo?, checksum: ChecksumState,
        payloadLength: Int, egressMTU: Int, direction: Direction = .lanToWan, now: UInt64 = 0,
        _ body: (inout StagePacket) -> R
    ) -> R {
        unsafe headers.withUnsafeMutableBytes { buffer in
            var packet = unsafe StagePacket(direction: direction, _headers: buffer, headerLength: headerLength,
                                            layout: layout, gso: gso, checksum: checksum, payloadLength: payloadLength,
                                            egressMTU: egressMTU, now: now)
            return body(&packet)
        }
    }
}

/// What a stage decided for a packet.
public enum StageVerdict: Hashable, Sendable {
    /// Send it on (with the headers as the stage left them): the forwarding decision, GSO and
    /// the write follow.
    case forward
    /// Drop it; counted as `stage_dropped`.
    case drop
    /// Drop it and send these bytes back out of the device it came from (an ICMP error the
    /// stage built, say for a packet it cannot translate); counted as `stage_replies`.
    case reply([UInt8])
    /// The stage needs the packet whole: the pipeline gathers it (headers and payload, checksums
    /// complete) and calls ``Stage/processWhole(_:gso:direction:egressMTU:)``, then forwards what
    /// that returns. The slow path, for rare packets (ICMP errors, fragments, packets a stage must
    /// cut up): it costs a copy; counted as `stage_rewrites`.
    case wholePacket
}

/// What a stage made of a packet it took whole.
public struct StageRewrite: Hashable, Sendable {
    /// Whole IP packets to forward instead (the forwarding decision, TTL − 1 and the write follow;
    /// ICMP errors for those too big quote the packet as it came in).
    public var forward: [[UInt8]]
    /// Whole IP packets to send back out of the device the packet came from (ICMP errors).
    public var replies: [[UInt8]]

    /// Creates a result.
    public init(forward: [[UInt8]] = [], replies: [[UInt8]] = []) {
        self.forward = forward
        self.replies = replies
    }
}

/// A transformation a ``Forwarder`` applies to every packet and super-packet between GRO and the
/// forwarding decision: translation, encapsulation, marking. A stage sees each super-packet once,
/// as headers plus payload pieces, so its cost is per super-packet, not per wire packet.
///
/// To add a stage, implement ``process(_:)`` (rewrite the headers in place, update
/// ``StagePacket/layout``, ``StagePacket/gso`` and ``StagePacket/checksum`` when they change) and
/// declare ``headerGrowth``. The forwarder then applies the egress MTU to what the stage produced,
/// per segment, answers too-big packets with an ICMP error that quotes the packet as it came in
/// (announcing the egress MTU less the stage's growth), decrements the TTL and writes the result
/// with its GSO facts. A stage never sees packets the GRO engine did not understand that are not
/// IP; it does see every IP packet, merged or not.
public protocol Stage: SendableMetatype {
    /// The most the stage adds to a packet's headers, in bytes (negative when it only removes):
    /// the forwarder keeps this much room after the headers and lowers the MTU it announces in
    /// ICMP errors by it.
    var headerGrowth: Int { get }

    /// Processes one packet or super-packet.
    mutating func process(_ packet: inout StagePacket) -> StageVerdict

    /// Processes a packet whole, after ``process(_:)`` asked for it (``StageVerdict/wholePacket``):
    /// `packet` is the IP packet (a super-packet with its `gso` facts, checksums complete) as it
    /// came in. The default forwards nothing: a stage that asks must implement it.
    mutating func processWhole(_ packet: [UInt8], gso: GSOInfo?, direction: Direction, egressMTU: Int) -> StageRewrite

    /// The stage's own counters, published with the forwarder's (read at each snapshot, every 50 ms).
    var counters: [StageCounter] { get }

    /// Whether packets the pipeline cannot parse (not IP, malformed) go on unchanged, as a router
    /// forwards what it does not understand (true by default), or are dropped, as a translator or
    /// a tunnel must: the other side could not read them either.
    var passesUnparsedPackets: Bool { get }
}

extension Stage {
    /// Routers pass what they do not understand.
    public var passesUnparsedPackets: Bool { true }

    /// No counters of its own.
    public var counters: [StageCounter] { [] }

    /// Forwards nothing (a stage that never asks for packets whole needs no slow path).
    public mutating func processWhole(_ packet: [UInt8], gso: GSOInfo?, direction: Direction, egressMTU: Int)
        -> StageRewrite
    { StageRewrite() }
}

/// The stage that changes nothing: `offload forward` as a plain router.
public struct IdentityStage: Stage {
    /// Creates the stage.
    public init() {}
    /// It adds nothing.
    public var headerGrowth: Int { 0 }
    /// Forwards every packet unchanged.
    @inlinable public mutating func process(_ packet: inout StagePacket) -> StageVerdict { .forward }
}
