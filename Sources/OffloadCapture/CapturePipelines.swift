import OffloadEngine
import OffloadWire

/// How `offload coalesce` runs GRO over a capture.
public struct CoalesceOptions: Hashable, Sendable {
    /// Packets per simulated receive poll.
    public var batch = 64
    /// The GRO engine's settings (its output checksums are always complete in a file).
    public var engine = GROConfiguration()
    /// What is known of the capture's checksums: `.unverified` verifies, `.verified` trusts.
    public var checksums: ChecksumState = .unverified
    /// The output format; nil chooses by the output's extension (`.pcap` → pcap, else pcapng).
    public var format: CaptureFormat?
    /// Creates the defaults.
    public init() {}
}

/// What a pipeline did.
public struct PipelineReport: Hashable, Sendable {
    /// Packets read.
    public var packetsIn = 0
    /// Packets written.
    public var packetsOut = 0
    /// Bytes of packet data read.
    public var bytesIn = 0
    /// Bytes of packet data written.
    public var bytesOut = 0
    /// Super-packets written (coalesce) or split (segment).
    public var superPackets = 0
    /// Segments inside those super-packets.
    public var segments = 0
    /// Segment: super-packets split by their recorded GSO facts.
    public var splitByRecordedFacts = 0
    /// Segment: super-packets split by the MTU / MSS.
    public var splitByMTU = 0
    /// Segment: packets larger than the MTU left whole (UDP, unparseable, BIG TCP).
    public var leftWhole = 0
    /// Of those, LRO merges (`offload coalesce --mode lro`): their segment size was not kept, so
    /// only `--mss` can split them, into segments of the size it gives.
    public var leftWholeLRO = 0
    /// The GRO engine's counters (coalesce).
    public var gro = GROStatistics()
    /// Coalesce: the merges the engine's train fast path made (of `gro.mergedSegments`).
    public var trainFastPathMerges = 0
    /// Creates an empty report.
    public init() {}
}

/// Progress callback: bytes of input read so far and the input's size, when known.
public typealias ProgressHandler = (_ bytesRead: Int, _ totalBytes: Int?) -> Void

/// Chooses an output format from a file name.
public func captureFormat(forOutput path: String, like input: CaptureFormat) -> CaptureFormat {
    if path.hasSuffix(".pcapng") { return .pcapng }
    if path.hasSuffix(".pcap") {
        if case .pcap = input { return input }
        return .pcap(nanosecond: true, bigEndian: false)
    }
    return .pcapng
}

/// Runs GRO over a capture and writes the result (`offload coalesce`).
///
/// Packets are read in batches of ``CoalesceOptions/batch``; each batch is one receive poll.
/// With a flush timeout the capture's timestamps are the clock. Merged packets get complete
/// checksums; in pcapng they carry their GSO facts (a custom option) and a readable comment, so
/// ``segmentCapture(input:output:options:progress:)`` can undo the merge exactly. Unchanged
/// packets keep their original length and options.
public func coalesceCapture(input: String, output: String, options: CoalesceOptions = CoalesceOptions(),
                            progress: ProgressHandler? = nil) throws(CaptureError) -> PipelineReport {
    var reader = try CaptureReader(path: input)
    var engineConfiguration = options.engine
    engineConfiguration.outputChecksum = .complete
    var engine = GROEngine(configuration: engineConfiguration)
    let format = options.format ?? captureFormat(forOutput: output, like: reader.format)
    var writer = try CaptureWriter(path: output, format: format, interfaces: reader.interfaces)
    var batch = CaptureReader.makeBatch(packets: options.batch)
    var report = PipelineReport()
    // Facts the engine does not carry, for the few records that have them: keyed by record number.
    var extras: [UInt64: (originalLength: Int, options: [PcapngOption])] = [:]
    var clock: UInt64 = 0
    var done = false
    var failure: CaptureError?
    while !done {
        batch.removeAll()
        let result = unsafe reader.fill(&batch, checksum: options.checksums) { info, _ in
            report.packetsIn += 1
            report.bytesIn += info.capturedLength
            clock = max(clock, info.timestamp)
            if info.isSnapped || !info.options.isEmpty {
                extras[UInt64(info.record)] = (info.originalLength, info.options)
            }
        }
        switch result {
        case .more: break
        case .end: done = true
        case .failed(let error):
            failure = error  // keep what was read; report after writing it
            done = true
        }
        try writer.declareInterfaces(reader.interfaces)
        engine.coalesce(batch, now: clock)
        try write(&engine, &writer, &extras, &report)
        progress?(reader.bytesRead, reader.fileSize)
    }
    engine.flush()
    try write(&engine, &writer, &extras, &report)
    try writer.flush()
    report.gro = engine.statistics
    report.trainFastPathMerges = engine.trainFastPathMerges
    if let failure { throw failure }
    return report
}

/// Writes the engine's output of one call.
func write(_ engine: inout GROEngine, _ writer: inout CaptureWriter,
           _ extras: inout [UInt64: (originalLength: Int, options: [PcapngOption])], _ report: inout PipelineReport)
    throws(CaptureError)
{
    for i in 0..<engine.outputCount {
        let packet = engine.output(at: i)
        let meta = packet.metadata
        let extra = extras.removeValue(forKey: meta.tag)
        var options = extra?.options ?? []
        var originalLength = extra?.originalLength ?? packet.length
        if packet.isSuperPacket, let gso = meta.gso {
            originalLength = packet.length
            options.removeAll { $0.gsoInfo != nil }
            // An LRO merge keeps no segment size (GSO size 0): it is labelled as what it is.
            let merge = gso.segmentSize == 0 ? "LRO (unsafe greedy merge, segment size not kept)" : "GRO"
            options.append(.comment("swift-offload \(merge): \(gso.segmentCount) segments merged (\(gso)); "
                + "completed by \(packet.reason.map { "\($0)" } ?? "flush")"))
            options.append(.gso(gso))
            report.superPackets += 1
            report.segments += gso.segmentCount
        }
        unsafe try writer.writePacket(timestamp: meta.timestamp, interface: Int(meta.interface), length: packet.length,
                               originalLength: originalLength, options: options) { sink in
            unsafe engine.withOutputFragments(at: i, sink)
        }
        report.packetsOut += 1
        report.bytesOut += packet.length
    }
}

/// How `offload segment` splits super-packets.
public struct SegmentOptions: Hashable, Sendable {
    /// The MTU of the wire: TCP packets whose IP length exceeds it, and that have no recorded GSO
    /// facts, are split into segments that fit.
    public var mtu = 1500
    /// A segment payload size to use instead of the one the MTU gives.
    public var mss: Int?
    /// The output format; nil chooses by the output's extension.
    public var format: CaptureFormat?
    /// Creates the defaults.
    public init() {}
}

/// Splits super-packets back into wire packets (`offload segment`).
///
/// A packet with recorded GSO facts (written by `offload coalesce`) is split exactly by them. A
/// TCP packet larger than the MTU (what tcpdump shows on a host with GRO/TSO on) is split into
/// segments of `--mss`, or of the MTU less its headers, with IP IDs counting up from its own, as
/// TSO does. Everything else passes unchanged.
public func segmentCapture(input: String, output: String, options: SegmentOptions = SegmentOptions(),
                           progress: ProgressHandler? = nil) throws(CaptureError) -> PipelineReport {
    var reader = try CaptureReader(path: input)
    let format = options.format ?? captureFormat(forOutput: output, like: reader.format)
    var writer = try CaptureWriter(path: output, format: format, interfaces: reader.interfaces)
    var segmenter = GSOSegmenter()
    var report = PipelineReport()
    var lastProgress = 0
    while let packet = reader.nextUntilDamage() {
        report.packetsIn += 1
        report.bytesIn += packet.bytes.count
        try writer.declareInterfaces(reader.interfaces)
        let plan = segmentationPlan(packet, options: options)
        switch plan {
        case .unchanged(let tooBig):
            if tooBig { report.leftWhole += 1 }
            if packet.info.gso?.segmentSize == 0 { report.leftWholeLRO += 1 }
            try writer.writePacket(packet.bytes, timestamp: packet.info.timestamp, interface: packet.info.interface,
                                   originalLength: packet.info.originalLength, options: packet.info.options)
            report.packetsOut += 1
            report.bytesOut += packet.bytes.count
        case .split(let gso, let size, let recorded):
            // (A typed-throws closure here crashes the 6.3.1 compiler; the error is carried out instead.)
            let split: Bool = unsafe packet.bytes.withUnsafeBytes { buffer in
                unsafe (try? segmenter.segment(buffer, linkType: packet.linkType, gso: gso, segmentSize: size)) != nil
            }
            if !split {
                report.leftWhole += 1
                try writer.writePacket(packet.bytes, timestamp: packet.info.timestamp, interface: packet.info.interface,
                                       originalLength: packet.info.originalLength, options: packet.info.options)
                report.packetsOut += 1
                report.bytesOut += packet.bytes.count
                continue
            }
            if recorded { report.splitByRecordedFacts += 1 } else { report.splitByMTU += 1 }
            report.superPackets += 1
            report.segments += segmenter.segmentCount
            let kept = packet.info.options.filter { $0.gsoInfo == nil && $0.commentText?.hasPrefix("swift-offload") != true }
            for s in 0..<segmenter.segmentCount {
                let length = segmenter.segmentLength(at: s)
                unsafe try writer.writePacket(timestamp: packet.info.timestamp, interface: packet.info.interface, length: length,
                                       options: kept) { sink in unsafe segmenter.withSegmentFragments(at: s, sink) }
                report.packetsOut += 1
                report.bytesOut += length
            }
        }
        if reader.bytesRead - lastProgress > 1 << 20 {
            lastProgress = reader.bytesRead
            progress?(reader.bytesRead, reader.fileSize)
        }
    }
    try writer.flush()
    if let damage = reader.damage { throw damage }  // what was read before it is written
    return report
}

enum SegmentationPlan {
    case unchanged(tooBig: Bool)
    case split(GSOInfo, size: Int?, recorded: Bool)
}

func segmentationPlan(_ packet: CapturedPacket, options: SegmentOptions) -> SegmentationPlan {
    if let gso = packet.info.gso {
        if gso.segmentSize > 0 { return .split(gso, size: nil, recorded: true) }
        // An LRO merge: no segment size was kept. Only --mss can split it, by the size it gives.
        if options.mss == nil { return .unchanged(tooBig: true) }
    }
    guard !packet.info.isSnapped, let layout = unsafe try? PacketLayout(parsing: packet.bytes.span.bytes, linkType: packet.linkType)
    else { return .unchanged(tooBig: packet.bytes.count > options.mtu + 64) }
    let ipLength = layout.ipEnd - layout.networkOffset
    guard ipLength > options.mtu else { return .unchanged(tooBig: false) }
    guard layout.transport == .tcp, layout.hasTransportHeader, layout.network != .other(EtherType(rawValue: 0)) else {
        return .unchanged(tooBig: true)  // UDP datagram boundaries cannot be known
    }
    let headers = layout.payloadOffset - layout.networkOffset
    let size = options.mss ?? (options.mtu - headers)
    guard size > 0, layout.payloadLength > size else { return .unchanged(tooBig: true) }
    let kind: GSOInfo.Kind = layout.network == .ipv4 ? .tcpv4 : .tcpv6
    let count = (layout.payloadLength + size - 1) / size
    return .split(GSOInfo(kind: kind, segmentSize: size, segmentCount: count), size: size, recorded: false)
}

/// How two captures compare flow by flow.
public struct FlowComparison: Hashable, Sendable {
    /// Packets in the first capture.
    public var packetsA = 0
    /// Packets in the second capture.
    public var packetsB = 0
    /// Flows (connection and direction; non-IP packets form one flow per interface).
    public var flows = 0
    /// Flows whose packets are not the same bytes in the same order.
    public var differingFlows: [String] = []
    /// Whether every flow holds the same packets, byte for byte, in the same order.
    public var identical: Bool { packetsA == packetsB && differingFlows.isEmpty }
}

/// Compares two captures per flow, timestamps aside: `segment(coalesce(x)) == x` holds when each
/// flow has the same packets in the same order (GRO may change the order across flows).
public func compareCapturesPerFlow(_ a: String, _ b: String) throws(CaptureError) -> FlowComparison {
    func load(_ path: String) throws(CaptureError) -> ([String: [[UInt8]]], Int) {
        var reader = try CaptureReader(path: path)
        var flows: [String: [[UInt8]]] = [:]
        var count = 0
        while let p = try reader.next() {
            count += 1
            flows[flowName(p), default: []].append(p.bytes)
        }
        return (flows, count)
    }
    let (fa, na) = try load(a)
    let (fb, nb) = try load(b)
    var result = FlowComparison(packetsA: na, packetsB: nb, flows: Set(fa.keys).union(fb.keys).count)
    for key in Set(fa.keys).union(fb.keys).sorted() where fa[key] != fb[key] { result.differingFlows.append(key) }
    return result
}

/// A flow's name: interface, protocol, addresses and ports as far as they can be read. All
/// fragments of a datagram share one name (their ports are left out).
func flowName(_ p: CapturedPacket) -> String {
    guard let layout = unsafe try? PacketLayout(parsing: p.bytes.span.bytes, linkType: p.linkType),
        var key = unsafe FlowKey(p.bytes.span.bytes, layout: layout)
    else { return "if\(p.info.interface) other" }
    if layout.isFragment {
        key.sourcePort = nil
        key.destinationPort = nil
    }
    return "if\(p.info.interface) proto \(key.transport?.rawValue ?? 255) \(key.sourceEndpoint) -> \(key.destinationEndpoint)"
}
