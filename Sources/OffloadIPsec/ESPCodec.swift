import OffloadCrypto
import OffloadTunnel
import OffloadWire
import Synchronization

extension TunnelDropReason {
    /// An SPI this end has no inbound SA for.
    public static let unknownSPI = TunnelDropReason(rawValue: "unknown_spi")
    /// The ICV did not verify: forged, corrupted, or the wrong key.
    public static let badICV = TunnelDropReason(rawValue: "bad_icv")
    /// A sequence number already received (RFC 4303 §3.4.3).
    public static let replay = TunnelDropReason(rawValue: "replay")
    /// A sequence number below the anti-replay window.
    public static let tooOld = TunnelDropReason(rawValue: "too_old")
    /// A pad length longer than the plaintext, or pad bytes other than 1, 2, 3, ... (RFC 4303 §2.4).
    public static let badPadding = TunnelDropReason(rawValue: "bad_padding")
    /// A next header other than IPv4 (4), IPv6 (41) or a dummy (59), or one that disagrees with
    /// the inner packet's version.
    public static let nextHeader = TunnelDropReason(rawValue: "next_header")
    /// The inner packet's addresses, protocol or ports are outside the SA's traffic selectors
    /// (RFC 4301 §5.2), or it is a non-initial fragment and the selectors name ports (RFC 4301 §7).
    public static let policy = TunnelDropReason(rawValue: "policy")
    /// Encapsulating: no tunnel's selectors match the inner packet.
    public static let noPolicy = TunnelDropReason(rawValue: "no_policy")
    /// Encapsulating: the SA's sequence numbers are used up (it never wraps: new keys are needed),
    /// or the high-water mark could not be written.
    public static let sequenceExhausted = TunnelDropReason(rawValue: "sequence_exhausted")
    /// Encapsulating: libcrypto failed.
    public static let encryptFailed = TunnelDropReason(rawValue: "encrypt_failed")
}

extension TunnelSignal {
    /// A NAT keepalive (one 0xFF byte, RFC 3948 §2.3).
    public static let natKeepalive = TunnelSignal(rawValue: "nat_keepalive")
    /// An IKE message behind the non-ESP marker (RFC 3948 §2.2): not served yet.
    public static let ike = TunnelSignal(rawValue: "ike")
    /// An ESP dummy packet (next header 59, RFC 4303 §2.6), authenticated and dropped quietly.
    public static let dummy = TunnelSignal(rawValue: "dummy")
}

/// Packets and bytes (inner, before encryption or after decryption) through one SA in one
/// direction, counted by the thread that handles the SA and read by anyone (status, rekeying on
/// volume, liveness).
public final class ESPSACounters: Sendable {
    let packetCount = Atomic<UInt64>(0)
    let byteCount = Atomic<UInt64>(0)
    /// Zero counters.
    public init() {}
    /// Packets so far.
    public var packets: UInt64 { packetCount.load(ordering: .relaxed) }
    /// Bytes so far.
    public var bytes: UInt64 { byteCount.load(ordering: .relaxed) }
    /// Counts one packet of `bytes`.
    public func count(bytes: Int) {
        packetCount.add(1, ordering: .relaxed)
        byteCount.add(UInt64(bytes), ordering: .relaxed)
    }
}

/// The SAs of a gateway and what both directions share: the outbound sequence counters (one per
/// SA, so that the encapsulating thread and the decapsulating thread's ICMP errors never use a
/// number twice) and the per-SA counters.
///
/// The set can be replaced while traffic flows (IKEv2 installs and removes SAs): a replacement is
/// a new ``Generation``; each encoder and decoder checks the generation's number (one atomic load)
/// per packet and moves to the new set between two packets, keeping the sequence counter, the
/// replay window and the counters of every SA that stays. Nothing is stopped.
public final class ESPSecurityPolicy: Sendable {
    /// One set of SAs.
    public struct Generation: Sendable {
        /// Increases with each replacement.
        public let number: UInt64
        /// The tunnels, in the order their selectors are tried.
        public let tunnels: [ESPTunnelConfiguration]
        /// Each tunnel's outbound counter.
        public let sequences: [OutboundSequence]
        /// Each tunnel's inbound and outbound counts.
        public let inbound: [ESPSACounters], outbound: [ESPSACounters]
        /// The outbound policy: one entry per pair of a sending tunnel's local and remote
        /// selectors, most specific first (``OutboundEntry/precedes(_:)``), tried in order per packet.
        public let outboundPolicy: [OutboundEntry]
    }

    /// One entry of the outbound policy: a pair of selectors and the tunnel they send through.
    public struct OutboundEntry: Sendable {
        /// The tunnel (an index into ``Generation/tunnels``).
        public let tunnel: Int
        /// The selector of the packet's source side (one of the tunnel's local selectors).
        public let local: TrafficSelector
        /// The selector of the packet's destination side (one of its remote selectors).
        public let remote: TrafficSelector
        /// Whether no earlier entry of the policy overlaps this one: a packet it matches matches no
        /// earlier entry, so an encoder may keep choosing it while its packets match it.
        public internal(set) var unshadowed = true

        /// Whether a packet matches both sides.
        @inlinable public func matches(_ packet: PacketSelectors) -> Bool {
            local.matches(packet.source, ipProtocol: packet.ipProtocol, port: packet.sourcePort)
                && remote.matches(packet.destination, ipProtocol: packet.ipProtocol, port: packet.destinationPort)
        }

        /// Whether some packet matches both entries.
        func overlaps(_ other: OutboundEntry) -> Bool { local.overlaps(other.local) && remote.overlaps(other.remote) }

        /// How specific the pair is, compared in order: sides with a port range narrower than all
        /// (0-2), then whether it names a protocol, then the two prefix lengths together.
        var specificity: (Int, Int, Int) {
            ((local.allowsAllPorts ? 0 : 1) + (remote.allowsAllPorts ? 0 : 1),
             local.ipProtocol != 0 || remote.ipProtocol != 0 ? 1 : 0,
             local.prefix.length + remote.prefix.length)
        }

        /// Whether this entry is more specific than `other` (then it is tried first): protocol and
        /// ports before protocol only before any, and within that, longer prefixes first.
        func precedes(_ other: OutboundEntry) -> Bool { specificity > other.specificity }

        /// The outbound policy of `tunnels`: every pair of a sending tunnel's selectors, sorted
        /// most specific first, stably (among equals the tunnels' order stays: the IKE daemon
        /// lists the newest sending SA first); each marked with whether an earlier one overlaps it.
        static func policy(_ tunnels: [ESPTunnelConfiguration]) -> [OutboundEntry] {
            var entries: [OutboundEntry] = []
            for (i, t) in tunnels.enumerated() where t.sending {
                for l in t.localSelectors {
                    for r in t.remoteSelectors { entries.append(OutboundEntry(tunnel: i, local: l, remote: r)) }
                }
            }
            // Stable: equal entries keep their order (the sort compares the position last).
            let sorted = entries.enumerated().sorted { a, b in
                a.element.precedes(b.element) || (!b.element.precedes(a.element) && a.offset < b.offset)
            }
            entries = sorted.map(\.element)
            for i in entries.indices {
                entries[i].unshadowed = !entries[..<i].contains { $0.overlaps(entries[i]) }
            }
            return entries
        }
    }
    let current: Mutex<Generation>
    let number = Atomic<UInt64>(0)
    let store: SequenceStore?

    /// The tunnels now.
    public var tunnels: [ESPTunnelConfiguration] { current.withLock { $0.tunnels } }
    /// Each tunnel's outbound counter now.
    public var sequences: [OutboundSequence] { current.withLock { $0.sequences } }
    /// The set now.
    public var generation: Generation { current.withLock { $0 } }
    /// The number of the set now (what encoders and decoders compare with theirs).
    public var generationNumber: UInt64 { number.load(ordering: .acquiring) }

    /// The policy, with sequence numbers kept in `store` (nil: counters start at 1 and are not
    /// kept: for SAs whose keys are new each time, negotiated by IKE, and for tests and captures
    /// that never reach a wire).
    /// - Throws: ``SequenceStoreError`` when the first reservations cannot be written.
    public init(tunnels: [ESPTunnelConfiguration], store: SequenceStore?) throws(SequenceStoreError) {
        self.store = store
        current = Mutex(try Self.generation(0, tunnels, store: store, keeping: nil))
    }

    static func generation(_ number: UInt64, _ tunnels: [ESPTunnelConfiguration], store: SequenceStore?,
                           keeping old: Generation?) throws(SequenceStoreError) -> Generation {
        var sequences: [OutboundSequence] = [], inbound: [ESPSACounters] = [], outbound: [ESPSACounters] = []
        for t in tunnels {
            if let old, let i = old.tunnels.firstIndex(where: { $0.outbound == t.outbound && $0.extendedSequenceNumbers == t.extendedSequenceNumbers }) {
                sequences.append(old.sequences[i])
                outbound.append(old.outbound[i])
            } else {
                sequences.append(try OutboundSequence(spi: t.outbound.spi, key: t.outbound.keyMaterial,
                                                      extendedSequenceNumbers: t.extendedSequenceNumbers, store: store))
                outbound.append(ESPSACounters())
            }
            if let old, let i = old.tunnels.firstIndex(where: { $0.inbound == t.inbound }) {
                inbound.append(old.inbound[i])
            } else {
                inbound.append(ESPSACounters())
            }
        }
        return Generation(number: number, tunnels: tunnels, sequences: sequences, inbound: inbound, outbound: outbound,
                          outboundPolicy: OutboundEntry.policy(tunnels))
    }

    /// Installs a new set between two packets: SAs that stay keep their sequence counters, windows
    /// and counts; SAs that go are gone for the next packet.
    /// - Throws: ``SequenceStoreError`` when a new SA's first reservation cannot be written.
    public func replace(_ tunnels: [ESPTunnelConfiguration]) throws(SequenceStoreError) {
        try current.withLock { (g: inout Generation) throws(SequenceStoreError) in
            g = try Self.generation(g.number + 1, tunnels, store: store, keeping: g)
            number.store(g.number, ordering: .releasing)
        }
    }

    /// The counts of the SA that receives with `spi` (inbound) or sends with it.
    public func counters(spi: UInt32, inbound: Bool) -> ESPSACounters? {
        let g = generation
        guard let i = g.tunnels.firstIndex(where: { (inbound ? $0.inbound.spi : $0.outbound.spi) == spi }) else { return nil }
        return inbound ? g.inbound[i] : g.outbound[i]
    }
}

/// ESP in UDP (RFC 4303 tunnel mode, RFC 3948 on port 4500) as a ``TunnelCodec``: each inner
/// segment becomes one ESP datagram, encrypted with AES-GCM or ChaCha20-Poly1305 straight into
/// the datagram's slot (nonce = salt ‖ IV, IV = the 64-bit sequence number); received datagrams
/// are checked against the anti-replay window, decrypted in place, and only after the ICV is
/// right move the window, lose their padding and meet the traffic selectors.
public struct ESPCodec: TunnelCodec {
    /// The SAs.
    public let policy: ESPSecurityPolicy
    /// The codec of a policy.
    public init(policy: ESPSecurityPolicy) { self.policy = policy }

    public var innerLinkType: LinkType { .raw }
    public var port: UInt16 { ESPFormat.udpPort }
    public var connectsSocket: Bool { true }
    /// SPI, sequence number, IV.
    public var headerRoom: Int { ESPFormat.headerLength }
    /// Up to 3 bytes of padding, pad length, next header, ICV.
    public var trailerRoom: Int { ESPTrailer.maximumLength + ESPFormat.icvLength }
    public var dropReasons: [TunnelDropReason] {
        [.truncated, .unknownSPI, .badICV, .replay, .tooOld, .badPadding, .nextHeader, .policy, .ecn]
    }
    /// `ESP (2 tunnels: aes128gcm16)`.
    public var description: String {
        let tunnels = policy.tunnels
        guard !tunnels.isEmpty else { return "ESP (SAs from IKEv2)" }
        return "ESP (\(tunnels.count) tunnel\(tunnels.count == 1 ? "" : "s"): "
            + Set(tunnels.map(\.algorithm.rawValue)).sorted().joined(separator: ", ") + ")"
    }

    public func makeEncoder() throws(TunnelCodecError) -> Encoder {
        var encoder = Encoder(policy: policy, generation: policy.generation, contexts: [])
        try encoder.load(policy.generation)
        return encoder
    }

    public func makeDecoder() throws(TunnelCodecError) -> Decoder {
        var decoder = Decoder(policy: policy, generation: policy.generation, inbound: [])
        try decoder.load(policy.generation)
        return decoder
    }

    /// Encrypts: chooses the tunnel per inner packet, reserves its sequence numbers per train.
    public struct Encoder: TunnelEncoder {
        let policy: ESPSecurityPolicy
        var generation: ESPSecurityPolicy.Generation
        var contexts: [AEADContext]
        var tunnel = 0
        /// The outbound policy entry chosen last (kept while packets match it and it is unshadowed).
        var entry = 0
        var firstSequence: UInt64 = 0
        /// The IV of the next datagram when set (known-answer tests only; never on a wire).
        var fixedIV: UInt64?

        public var writesWholeDatagram: Bool { true }

        /// Moves to a set of SAs: contexts of SAs that stay are kept, new ones made.
        /// - Throws: when libcrypto cannot make a context (the SA is then not used).
        mutating func load(_ next: ESPSecurityPolicy.Generation) throws(TunnelCodecError) {
            var made: [AEADContext] = []
            var failure: TunnelCodecError?
            for t in next.tunnels {
                if let i = generation.tunnels.firstIndex(where: { $0.outbound == t.outbound && $0.algorithm == t.algorithm }), i < contexts.count {
                    made.append(contexts[i])
                    continue
                }
                do { made.append(try AEADContext(t.algorithm, key: t.outbound.key, sealing: true)) } catch {
                    failure = TunnelCodecError("tunnel \(t.name): \(error)")
                    break
                }
            }
            if let failure { throw failure }
            generation = next
            contexts = made
            tunnel = 0
            entry = 0
        }

        public mutating func begin(headers: UnsafeRawBufferPointer, datagrams: Int) -> TunnelDropReason? {
            if policy.generationNumber != generation.number {
                do { try load(policy.generation) } catch { return .encryptFailed }
            }
            // A super-packet is one flow: its first segment's headers choose for all of it.
            guard let packet = unsafe PacketSelectors(headers.bytes) else { return .noPolicy }
            let entries = generation.outboundPolicy
            if entry >= entries.count || !entries[entry].unshadowed || !entries[entry].matches(packet) {
                guard let match = entries.firstIndex(where: { $0.matches(packet) }) else { return .noPolicy }
                entry = match
            }
            tunnel = entries[entry].tunnel
            guard let first = generation.sequences[tunnel].reserve(datagrams) else { return .sequenceExhausted }
            firstSequence = first
            return nil
        }

        /// Writes the ESP datagram of segment `index`: header, then the segment and its trailer
        /// sealed straight into the slot, then the ICV.
        /// - Throws: ``TunnelDropReason/encryptFailed`` when libcrypto fails (or the slot is too
        ///   small, which the encapsulator never lets happen): the datagram is not sent and its
        ///   sequence number, reserved in ``begin(headers:datagrams:)``, is never used again.
        public mutating func encode(_ segment: InnerSegment, index: Int, into slot: UnsafeMutableRawBufferPointer) throws(TunnelDropReason) -> Int {
            let t = generation.tunnels[tunnel]
            let sequence = firstSequence &+ UInt64(index)
            let iv = fixedIV ?? sequence
            // Safe: the count is checked before the byte is read.
            let version = unsafe segment.first.count > 0 ? segment.first[0] >> 4 : 0
            let trailer = ESPTrailer(innerLength: segment.count,
                                     nextHeader: version == 6 ? ESPFormat.nextHeaderIPv6 : ESPFormat.nextHeaderIPv4)
            let plaintext = segment.count + trailer.length
            let length = ESPFormat.headerLength + plaintext + ESPFormat.icvLength
            guard slot.count >= length else { throw .encryptFailed }
            unsafe ESPHeader(spi: t.outbound.spi, sequence: UInt32(truncatingIfNeeded: sequence), iv: iv).write(to: slot)
            var trailerBytes: (UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0)
            let sealed = unsafe withUnsafeMutableBytes(of: &trailerBytes) { trailerBuffer in
                unsafe trailer.write(to: trailerBuffer)
                let parameters = unsafe t.outbound.salt.withUnsafeBytes { salt in
                    unsafe ESPNonceAndAAD(salt: salt, iv: iv, spi: t.outbound.spi, sequence: sequence,
                                          extendedSequenceNumbers: t.extendedSequenceNumbers)
                }
                return unsafe parameters.withUnsafeBytes { nonce, aad in
                    // Safe: slot.count >= length (checked above): the ciphertext fills
                    // [headerLength, headerLength + plaintext), the ICV the 16 bytes after it.
                    unsafe contexts[tunnel].seal(nonce: nonce, aad: aad, pieces: (segment.first, segment.second),
                                                 trailer: UnsafeRawBufferPointer(rebasing: trailerBuffer[0..<trailer.length]),
                                                 out: slot.baseAddress! + ESPFormat.headerLength,
                                                 tag: slot.baseAddress! + ESPFormat.headerLength + plaintext)
                }
            }
            guard sealed else { throw .encryptFailed }
            generation.outbound[tunnel].count(bytes: segment.count)
            return length
        }

        /// Tests only: replaces each outbound context with one that opens, so that every seal
        /// fails in libcrypto as a broken context's would. ``restoreSealing()`` undoes it.
        mutating func breakSealing() throws(TunnelCodecError) {
            var broken: [AEADContext] = []
            for t in generation.tunnels {
                do { broken.append(try AEADContext(t.algorithm, key: t.outbound.key, sealing: false)) } catch {
                    throw TunnelCodecError("tunnel \(t.name): \(error)")
                }
            }
            contexts = broken
        }

        /// Tests only: sealing contexts again, made afresh.
        mutating func restoreSealing() throws(TunnelCodecError) {
            contexts = []
            try load(generation)
        }
    }

    /// Decrypts: classifies, checks replay, opens in place, checks padding and selectors.
    public struct Decoder: TunnelDecoder {
        let policy: ESPSecurityPolicy
        var generation: ESPSecurityPolicy.Generation
        struct Inbound {
            let spi: UInt32
            let tunnel: Int
            let context: AEADContext
            let salt: SecretBytes
            var window: ReplayWindow
            let counters: ESPSACounters
        }
        var inbound: [Inbound]
        var last = 0

        /// Moves to a set of SAs: each inbound SA that stays keeps its context and anti-replay window.
        /// - Throws: when libcrypto cannot make a context.
        mutating func load(_ next: ESPSecurityPolicy.Generation) throws(TunnelCodecError) {
            var made: [Inbound] = []
            var failure: TunnelCodecError?
            for (i, t) in next.tunnels.enumerated() {
                if let j = generation.tunnels.firstIndex(where: { $0.inbound == t.inbound && $0.algorithm == t.algorithm }),
                   let kept = inbound.first(where: { $0.tunnel == j }) {
                    made.append(Inbound(spi: kept.spi, tunnel: i, context: kept.context, salt: kept.salt, window: kept.window,
                                        counters: next.inbound[i]))
                    continue
                }
                do {
                    made.append(Inbound(spi: t.inbound.spi, tunnel: i, context: try AEADContext(t.algorithm, key: t.inbound.key, sealing: false),
                                        salt: t.inbound.salt,
                                        window: ReplayWindow(size: t.replayWindow, extendedSequenceNumbers: t.extendedSequenceNumbers),
                                        counters: next.inbound[i]))
                } catch {
                    failure = TunnelCodecError("tunnel \(t.name): \(error)")
                    break
                }
            }
            if let failure { throw failure }
            generation = next
            inbound = made
            last = 0
        }

        /// The anti-replay window of the inbound SA with `spi` (nil: none).
        public func window(spi: UInt32) -> ReplayWindow? { inbound.first { $0.spi == spi }?.window }

        /// Classifies one datagram and, when it is ESP for one of the inbound SAs, checks the
        /// window, opens it in place and checks the trailer and the selectors.
        public mutating func decode(_ datagram: UnsafeMutableRawBufferPointer) -> TunnelDatagram {
            let raw = UnsafeRawBufferPointer(datagram)
            // Safe: the count is checked before the byte is read.
            if unsafe raw.count == 1 && raw[0] == ESPFormat.natKeepalive { return .signalling(.natKeepalive) }
            guard let spi = unsafe ESPPacket.spi(of: raw.bytes) else { return .drop(.truncated) }
            if spi == 0 { return .signalling(.ike) }  // the non-ESP marker: IKE shares the port
            let header: ESPHeader, ciphertext: Range<Int>, icv: Range<Int>
            do {
                let packet = unsafe try ESPPacket(validating: raw.bytes)
                header = ESPHeader(parsing: packet)
                ciphertext = packet.ciphertextRange
                icv = packet.icvRange
            } catch { return .drop(.truncated) }
            if policy.generationNumber != generation.number {
                do { try load(policy.generation) } catch { return .drop(.unknownSPI) }
            }
            guard !inbound.isEmpty else { return .drop(.unknownSPI) }
            if inbound[last].spi != spi {
                guard let i = inbound.firstIndex(where: { $0.spi == spi }) else { return .drop(.unknownSPI) }
                last = i
            }
            let sequence: UInt64
            switch inbound[last].window.check(low: header.sequence) {
            case .new(let s): sequence = s
            case .replay: return .drop(.replay)
            case .tooOld: return .drop(.tooOld)
            }
            let sa = inbound[last]
            let t = generation.tunnels[sa.tunnel]
            let parameters = unsafe sa.salt.withUnsafeBytes { salt in
                unsafe ESPNonceAndAAD(salt: salt, iv: header.iv, spi: spi, sequence: sequence,
                                      extendedSequenceNumbers: t.extendedSequenceNumbers)
            }
            let authentic = unsafe parameters.withUnsafeBytes { nonce, aad in
                // Safe: the view checked that both ranges lie inside the datagram.
                unsafe sa.context.open(nonce: nonce, aad: aad, data: UnsafeMutableRawBufferPointer(rebasing: datagram[ciphertext]),
                                       tag: raw.baseAddress! + icv.lowerBound)
            }
            guard authentic else { return .drop(.badICV) }
            // Authentic: only now may the window move (RFC 4303 §3.4.3).
            inbound[last].window.accept(sequence)
            let innerLength: Int, nextHeader: UInt8
            do {
                // Safe: the ciphertext range lies inside the datagram; it is plaintext now.
                let payload = unsafe try ESPPayload(validating: UnsafeRawBufferPointer(rebasing: raw[ciphertext]).bytes)
                innerLength = payload.innerLength
                nextHeader = payload.nextHeader
            } catch { return .drop(.badPadding) }
            if nextHeader == ESPFormat.nextHeaderDummy { return .signalling(.dummy) }
            let innerRange = ciphertext.lowerBound..<(ciphertext.lowerBound + innerLength)
            // Safe: the inner packet lies inside the ciphertext range (ESPPayload checked its length).
            let inner = unsafe UnsafeRawBufferPointer(rebasing: raw[innerRange])
            // Safe: the count is checked before the byte is read.
            let version = unsafe inner.count > 0 ? inner[0] >> 4 : 0
            guard (nextHeader == ESPFormat.nextHeaderIPv4 && version == 4) || (nextHeader == ESPFormat.nextHeaderIPv6 && version == 6)
            else { return .drop(.nextHeader) }
            guard let packet = unsafe PacketSelectors(inner.bytes) else { return .drop(.truncated) }
            guard t.receives(packet) else { return .drop(.policy) }
            sa.counters.count(bytes: innerLength)
            return .packet(innerRange)
        }
    }
}
