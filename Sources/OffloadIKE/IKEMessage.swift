import Foundation
import OffloadIPsec
import OffloadWire

/// IKEv2's exchange types (RFC 7296 §3.1).
public enum IKEExchange: UInt8, Sendable, CustomStringConvertible {
    /// Keys exchanged, nonces, algorithms.
    case ikeSAInit = 34
    /// Identities, authentication, the first CHILD_SA.
    case ikeAuth = 35
    /// A new or rekeyed CHILD_SA, or a rekeyed IKE SA.
    case createChildSA = 36
    /// Liveness, Delete, errors.
    case informational = 37

    /// `IKE_SA_INIT`.
    public var description: String {
        switch self {
        case .ikeSAInit: "IKE_SA_INIT"
        case .ikeAuth: "IKE_AUTH"
        case .createChildSA: "CREATE_CHILD_SA"
        case .informational: "INFORMATIONAL"
        }
    }
}

/// Payload type numbers (RFC 7296 §3.2).
public enum IKEPayloadType: UInt8, Sendable {
    case none = 0
    case securityAssociation = 33
    case keyExchange = 34
    case identificationInitiator = 35
    case identificationResponder = 36
    case certificate = 37
    case certificateRequest = 38
    case authentication = 39
    case nonce = 40
    case notify = 41
    case delete = 42
    case vendorID = 43
    case trafficSelectorInitiator = 44
    case trafficSelectorResponder = 45
    case encrypted = 46
    case configuration = 47
    case eap = 48
}

/// Notify message types this end sends or reads (RFC 7296 §3.10.1, RFC 3948, RFC 7383).
public struct IKENotifyType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The number.
    public var rawValue: UInt16
    /// A type.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let unsupportedCriticalPayload = IKENotifyType(rawValue: 1)
    public static let invalidIKESPI = IKENotifyType(rawValue: 4)
    public static let invalidMajorVersion = IKENotifyType(rawValue: 5)
    public static let invalidSyntax = IKENotifyType(rawValue: 7)
    public static let invalidMessageID = IKENotifyType(rawValue: 9)
    public static let invalidSPI = IKENotifyType(rawValue: 11)
    public static let noProposalChosen = IKENotifyType(rawValue: 14)
    public static let invalidKEPayload = IKENotifyType(rawValue: 17)
    public static let authenticationFailed = IKENotifyType(rawValue: 24)
    public static let singlePairRequired = IKENotifyType(rawValue: 34)
    public static let noAdditionalSAs = IKENotifyType(rawValue: 35)
    public static let tsUnacceptable = IKENotifyType(rawValue: 38)
    public static let temporaryFailure = IKENotifyType(rawValue: 43)
    public static let childSANotFound = IKENotifyType(rawValue: 44)
    public static let initialContact = IKENotifyType(rawValue: 16384)
    public static let natDetectionSourceIP = IKENotifyType(rawValue: 16388)
    public static let natDetectionDestinationIP = IKENotifyType(rawValue: 16389)
    public static let cookie = IKENotifyType(rawValue: 16390)
    public static let useTransportMode = IKENotifyType(rawValue: 16391)
    public static let rekeySA = IKENotifyType(rawValue: 16393)
    public static let espTFCPaddingNotSupported = IKENotifyType(rawValue: 16394)

    /// Below 16384: an error (RFC 7296 §3.10.1).
    public var isError: Bool { rawValue < 16384 }

    /// The RFC's name (`NO_PROPOSAL_CHOSEN`), or the number.
    public var description: String {
        switch rawValue {
        case 1: "UNSUPPORTED_CRITICAL_PAYLOAD"
        case 4: "INVALID_IKE_SPI"
        case 5: "INVALID_MAJOR_VERSION"
        case 7: "INVALID_SYNTAX"
        case 9: "INVALID_MESSAGE_ID"
        case 11: "INVALID_SPI"
        case 14: "NO_PROPOSAL_CHOSEN"
        case 17: "INVALID_KE_PAYLOAD"
        case 24: "AUTHENTICATION_FAILED"
        case 34: "SINGLE_PAIR_REQUIRED"
        case 35: "NO_ADDITIONAL_SAS"
        case 38: "TS_UNACCEPTABLE"
        case 43: "TEMPORARY_FAILURE"
        case 44: "CHILD_SA_NOT_FOUND"
        case 16384: "INITIAL_CONTACT"
        case 16388: "NAT_DETECTION_SOURCE_IP"
        case 16389: "NAT_DETECTION_DESTINATION_IP"
        case 16390: "COOKIE"
        case 16391: "USE_TRANSPORT_MODE"
        case 16393: "REKEY_SA"
        case 16394: "ESP_TFC_PADDING_NOT_SUPPORTED"
        default: "notify \(rawValue)"
        }
    }
}

/// Why a message could not be read: the RFC's error to answer with, when there is one.
public struct IKEParseError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What is wrong.
    public var description: String
    /// The notification that says so (INVALID_SYNTAX, UNSUPPORTED_CRITICAL_PAYLOAD, ...).
    public var notify: IKENotifyType
    /// For UNSUPPORTED_CRITICAL_PAYLOAD: the payload type.
    public var payloadType: UInt8 = 0
    init(_ description: String, _ notify: IKENotifyType = .invalidSyntax, payloadType: UInt8 = 0) {
        self.description = description
        self.notify = notify
        self.payloadType = payloadType
    }
}

/// IKEv2's fixed header (RFC 7296 §3.1): 28 bytes.
public struct IKEHeader: Hashable, Sendable {
    /// The length of the header.
    public static let length = 28
    /// The original initiator's SPI.
    public var initiatorSPI: UInt64
    /// The original responder's SPI (0 in the first IKE_SA_INIT request).
    public var responderSPI: UInt64
    /// The type of the first payload.
    public var nextPayload: UInt8
    /// The exchange.
    public var exchange: UInt8
    /// Set by the original initiator of the IKE SA.
    public var fromOriginalInitiator: Bool
    /// Set in responses.
    public var isResponse: Bool
    /// The message ID.
    public var messageID: UInt32
    /// The whole message's length.
    public var length: UInt32

    /// A header.
    public init(initiatorSPI: UInt64, responderSPI: UInt64, nextPayload: UInt8, exchange: IKEExchange,
                fromOriginalInitiator: Bool, isResponse: Bool, messageID: UInt32, length: UInt32 = 0) {
        self.initiatorSPI = initiatorSPI
        self.responderSPI = responderSPI
        self.nextPayload = nextPayload
        self.exchange = exchange.rawValue
        self.fromOriginalInitiator = fromOriginalInitiator
        self.isResponse = isResponse
        self.messageID = messageID
        self.length = length
    }

    /// Reads the header of `bytes` (its version must be 2.x; the length must match).
    /// - Throws: ``IKEParseError``.
    public init(parsing bytes: [UInt8]) throws(IKEParseError) {
        guard bytes.count >= Self.length else { throw IKEParseError("\(bytes.count) bytes: shorter than the IKE header") }
        var r = ByteReader(bytes)
        initiatorSPI = r.u64()
        responderSPI = r.u64()
        nextPayload = r.u8()
        let version = r.u8()
        guard version >> 4 == 2 else { throw IKEParseError("IKE version \(version >> 4).\(version & 0xF)", .invalidMajorVersion) }
        exchange = r.u8()
        let flags = r.u8()
        fromOriginalInitiator = flags & 0x08 != 0
        isResponse = flags & 0x20 != 0
        messageID = r.u32()
        length = r.u32()
        guard Int(length) == bytes.count else {
            throw IKEParseError("the header says \(length) bytes, the datagram holds \(bytes.count)")
        }
    }

    /// The 28 bytes.
    public var bytes: [UInt8] {
        var w = ByteWriter()
        w.u64(initiatorSPI)
        w.u64(responderSPI)
        w.u8(nextPayload)
        w.u8(0x20)
        w.u8(exchange)
        w.u8((fromOriginalInitiator ? 0x08 : 0) | (isResponse ? 0x20 : 0))
        w.u32(messageID)
        w.u32(length)
        return w.bytes
    }
}

/// A transform of a proposal (RFC 7296 §3.3.2).
public struct IKETransform: Hashable, Sendable {
    /// ENCR 1, PRF 2, INTEG 3, KE 4, ESN 5.
    public var type: UInt8
    /// The algorithm's number.
    public var id: UInt16
    /// The key length attribute in bits, when present.
    public var keyLength: UInt16?

    /// A transform.
    public init(type: UInt8, id: UInt16, keyLength: UInt16? = nil) {
        self.type = type
        self.id = id
        self.keyLength = keyLength
    }

    public static let encryption: UInt8 = 1
    public static let prf: UInt8 = 2
    public static let integrity: UInt8 = 3
    public static let keyExchange: UInt8 = 4
    public static let extendedSequenceNumbers: UInt8 = 5
}

/// A proposal of an SA payload (RFC 7296 §3.3.1).
public struct IKEProposal: Hashable, Sendable {
    /// Numbered from 1; the chosen one keeps its number in the answer.
    public var number: UInt8
    /// IKE 1, ESP 3.
    public var protocolID: UInt8
    /// The SPI: 8 bytes for IKE (when rekeying), 4 for ESP.
    public var spi: [UInt8]
    /// The transforms, alternatives of one type side by side.
    public var transforms: [IKETransform]

    /// A proposal.
    public init(number: UInt8, protocolID: UInt8, spi: [UInt8], transforms: [IKETransform]) {
        self.number = number
        self.protocolID = protocolID
        self.spi = spi
        self.transforms = transforms
    }

    public static let ike: UInt8 = 1
    public static let esp: UInt8 = 3
}

/// An identity (RFC 7296 §3.5).
public struct IKEIdentity: Hashable, Sendable, CustomStringConvertible {
    /// ID_IPV4_ADDR 1, ID_FQDN 2, ID_RFC822_ADDR 3, ID_IPV6_ADDR 5, ID_KEY_ID 11.
    public var type: UInt8
    /// The data.
    public var data: [UInt8]

    /// An identity.
    public init(type: UInt8, data: [UInt8]) {
        self.type = type
        self.data = data
    }

    /// As swanctl.conf writes it: an address is ID_IPV*_ADDR, `@#hex` a KEY_ID, `a@b` an RFC822
    /// name, `@x` or `x` an FQDN (as strongSwan reads an `id`).
    public init(_ text: String) {
        if let a = IPAddress(text) {
            self.init(type: a.isIPv4 ? 1 : 5, data: addressBytes(a))
        } else if text.hasPrefix("@#"), let bytes = SAFile.hexBytes("0x" + text.dropFirst(2)) {
            self.init(type: 11, data: bytes)
        } else if text.hasPrefix("@") {
            self.init(type: 2, data: Array(text.dropFirst().utf8))
        } else if text.contains("@") {
            self.init(type: 3, data: Array(text.utf8))
        } else {
            self.init(type: 2, data: Array(text.utf8))
        }
    }

    /// `gw1`, `192.0.2.1`, `@#0102`.
    public var description: String {
        switch type {
        case 1 where data.count == 4: return IPv4Address(data, 0).description
        case 5 where data.count == 16: return IPv6Address(data, 0).description
        case 11: return "@#" + data.map { String(format: "%02x", $0) }.joined()
        default:
            let text = String(decoding: data, as: UTF8.self)
            // Printable only: an identity is the peer's to choose and goes into logs.
            return String(text.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F ? Character($0) : "?" })
        }
    }

    /// The ID payload's body after the generic header (what the AUTH computation MACs).
    public var body: [UInt8] { [type, 0, 0, 0] + data }
}

/// A traffic selector as IKEv2 carries it: an address range, a protocol and a port range.
public struct IKETrafficSelector: Hashable, Sendable, CustomStringConvertible {
    /// The first address (4 or 16 bytes).
    public var start: [UInt8]
    /// The last address.
    public var end: [UInt8]
    /// The IP protocol (0: any).
    public var ipProtocol: UInt8 = 0
    /// The ports (0...65535: any).
    public var startPort: UInt16 = 0, endPort: UInt16 = 65_535

    /// A selector.
    public init(start: [UInt8], end: [UInt8], ipProtocol: UInt8 = 0, startPort: UInt16 = 0, endPort: UInt16 = 65_535) {
        self.start = start
        self.end = end
        self.ipProtocol = ipProtocol
        self.startPort = startPort
        self.endPort = endPort
    }

    /// Whether it is IPv4.
    public var isIPv4: Bool { start.count == 4 }
    /// Whether it covers every protocol and port.
    public var allProtocolsAndPorts: Bool { ipProtocol == 0 && startPort == 0 && endPort == 65_535 }

    /// `10.0.0.0-10.0.0.255`.
    public var description: String {
        func address(_ b: [UInt8]) -> String { b.count == 4 ? IPv4Address(b, 0).description : IPv6Address(b, 0).description }
        var text = "\(address(start))-\(address(end))"
        if !allProtocolsAndPorts { text += "[\(ipProtocol)/\(startPort)-\(endPort)]" }
        return text
    }
}

/// One payload, typed where this end reads it.
public enum IKEPayload: Hashable, Sendable {
    /// SA: proposals.
    case securityAssociation([IKEProposal])
    /// KE: group and public value.
    case keyExchange(group: UInt16, data: [UInt8])
    /// IDi.
    case identityInitiator(IKEIdentity)
    /// IDr.
    case identityResponder(IKEIdentity)
    /// AUTH: method and data.
    case authentication(method: UInt8, data: [UInt8])
    /// Ni / Nr.
    case nonce([UInt8])
    /// N.
    case notify(protocolID: UInt8, spi: [UInt8], type: IKENotifyType, data: [UInt8])
    /// D: the protocol (IKE 1, ESP 3) and SPIs (none for IKE).
    case delete(protocolID: UInt8, spis: [[UInt8]])
    /// TSi.
    case trafficSelectorsInitiator([IKETrafficSelector])
    /// TSr.
    case trafficSelectorsResponder([IKETrafficSelector])
    /// Any other payload that is not critical (vendor IDs, certificate requests, ...): skipped.
    case other(type: UInt8, body: [UInt8])

    /// The payload's type number.
    public var type: UInt8 {
        switch self {
        case .securityAssociation: IKEPayloadType.securityAssociation.rawValue
        case .keyExchange: IKEPayloadType.keyExchange.rawValue
        case .identityInitiator: IKEPayloadType.identificationInitiator.rawValue
        case .identityResponder: IKEPayloadType.identificationResponder.rawValue
        case .authentication: IKEPayloadType.authentication.rawValue
        case .nonce: IKEPayloadType.nonce.rawValue
        case .notify: IKEPayloadType.notify.rawValue
        case .delete: IKEPayloadType.delete.rawValue
        case .trafficSelectorsInitiator: IKEPayloadType.trafficSelectorInitiator.rawValue
        case .trafficSelectorsResponder: IKEPayloadType.trafficSelectorResponder.rawValue
        case .other(let t, _): t
        }
    }

    /// A notification without SPI.
    public static func notify(_ type: IKENotifyType, data: [UInt8] = []) -> IKEPayload {
        .notify(protocolID: 0, spi: [], type: type, data: data)
    }

    /// The body (after the 4-byte generic header).
    public var body: [UInt8] {
        var w = ByteWriter()
        switch self {
        case .securityAssociation(let proposals):
            for (i, p) in proposals.enumerated() {
                var t = ByteWriter()
                for (j, x) in p.transforms.enumerated() {
                    let length = 8 + (x.keyLength == nil ? 0 : 4)
                    t.u8(j == p.transforms.count - 1 ? 0 : 3)
                    t.u8(0)
                    t.u16(UInt16(length))
                    t.u8(x.type)
                    t.u8(0)
                    t.u16(x.id)
                    if let k = x.keyLength {
                        t.u16(0x8000 | 14)  // AF = 1 (TV), Key Length
                        t.u16(k)
                    }
                }
                w.u8(i == proposals.count - 1 ? 0 : 2)
                w.u8(0)
                w.u16(UInt16(8 + p.spi.count + t.bytes.count))
                w.u8(p.number)
                w.u8(p.protocolID)
                w.u8(UInt8(p.spi.count))
                w.u8(UInt8(p.transforms.count))
                w.append(p.spi)
                w.append(t.bytes)
            }
        case .keyExchange(let group, let data):
            w.u16(group)
            w.u16(0)
            w.append(data)
        case .identityInitiator(let id), .identityResponder(let id):
            w.append(id.body)
        case .authentication(let method, let data):
            w.append([method, 0, 0, 0])
            w.append(data)
        case .nonce(let n):
            w.append(n)
        case .notify(let protocolID, let spi, let type, let data):
            w.u8(protocolID)
            w.u8(UInt8(spi.count))
            w.u16(type.rawValue)
            w.append(spi)
            w.append(data)
        case .delete(let protocolID, let spis):
            w.u8(protocolID)
            w.u8(UInt8(spis.first?.count ?? 0))
            w.u16(UInt16(spis.count))
            for s in spis { w.append(s) }
        case .trafficSelectorsInitiator(let list), .trafficSelectorsResponder(let list):
            // At most 255 fit the count byte; the engine never sends more than 16 (its own config and
            // what it narrows are capped), and a list beyond 255 is cut here rather than trap.
            let list = list.prefix(255)
            w.u8(UInt8(list.count))
            w.append([0, 0, 0])
            for ts in list {
                w.u8(ts.isIPv4 ? 7 : 8)
                w.u8(ts.ipProtocol)
                w.u16(UInt16(8 + 2 * ts.start.count))
                w.u16(ts.startPort)
                w.u16(ts.endPort)
                w.append(ts.start)
                w.append(ts.end)
            }
        case .other(_, let body):
            w.append(body)
        }
        return w.bytes
    }

    /// Reads one payload's body.
    /// - Throws: ``IKEParseError`` (INVALID_SYNTAX) on a body that lies about its lengths.
    static func parse(type: UInt8, body: [UInt8]) throws(IKEParseError) -> IKEPayload {
        var r = ByteReader(body)
        switch IKEPayloadType(rawValue: type) {
        case .securityAssociation:
            var proposals: [IKEProposal] = []
            while r.remaining > 0 {
                guard r.remaining >= 8 else { throw IKEParseError("SA payload: a proposal shorter than its header") }
                let last = r.u8()
                _ = r.u8()
                let length = Int(r.u16())
                guard length >= 8, length - 4 <= r.remaining else { throw IKEParseError("SA payload: a proposal length of \(length)") }
                var p = ByteReader(r.take(length - 4))
                let number = p.u8(), protocolID = p.u8(), spiSize = Int(p.u8()), count = Int(p.u8())
                guard spiSize <= p.remaining else { throw IKEParseError("SA payload: an SPI longer than its proposal") }
                let spi = p.take(spiSize)
                var transforms: [IKETransform] = []
                for _ in 0..<count {
                    guard p.remaining >= 8 else { throw IKEParseError("SA payload: fewer transforms than the proposal says") }
                    _ = p.u8()
                    _ = p.u8()
                    let tlength = Int(p.u16())
                    guard tlength >= 8, tlength - 4 <= p.remaining else { throw IKEParseError("SA payload: a transform length of \(tlength)") }
                    var t = ByteReader(p.take(tlength - 4))
                    let ttype = t.u8()
                    _ = t.u8()
                    let id = t.u16()
                    var keyLength: UInt16?
                    while t.remaining > 0 {
                        guard t.remaining >= 4 else { throw IKEParseError("SA payload: a cut attribute") }
                        let at = t.u16()
                        if at & 0x8000 != 0 {
                            let value = t.u16()
                            if at & 0x7FFF == 14 { keyLength = value }
                        } else {
                            let alength = Int(t.u16())
                            guard alength <= t.remaining else { throw IKEParseError("SA payload: an attribute longer than its transform") }
                            t.skip(alength)
                        }
                    }
                    transforms.append(IKETransform(type: ttype, id: id, keyLength: keyLength))
                }
                guard p.remaining == 0 else { throw IKEParseError("SA payload: bytes after the last transform of a proposal") }
                proposals.append(IKEProposal(number: number, protocolID: protocolID, spi: spi, transforms: transforms))
                if last == 0 { break }
            }
            return .securityAssociation(proposals)
        case .keyExchange:
            guard r.remaining >= 4 else { throw IKEParseError("KE payload: shorter than 4 bytes") }
            let group = r.u16()
            _ = r.u16()
            return .keyExchange(group: group, data: r.rest())
        case .identificationInitiator, .identificationResponder:
            guard r.remaining >= 4 else { throw IKEParseError("ID payload: shorter than 4 bytes") }
            let t = r.u8()
            r.skip(3)
            let id = IKEIdentity(type: t, data: r.rest())
            return type == IKEPayloadType.identificationInitiator.rawValue ? .identityInitiator(id) : .identityResponder(id)
        case .authentication:
            guard r.remaining >= 4 else { throw IKEParseError("AUTH payload: shorter than 4 bytes") }
            let method = r.u8()
            r.skip(3)
            return .authentication(method: method, data: r.rest())
        case .nonce:
            guard body.count >= 16, body.count <= 256 else { throw IKEParseError("Nonce payload: \(body.count) bytes (16...256)") }
            return .nonce(body)
        case .notify:
            guard r.remaining >= 4 else { throw IKEParseError("Notify payload: shorter than 4 bytes") }
            let protocolID = r.u8(), spiSize = Int(r.u8()), t = r.u16()
            guard spiSize <= r.remaining else { throw IKEParseError("Notify payload: an SPI longer than the payload") }
            return .notify(protocolID: protocolID, spi: r.take(spiSize), type: IKENotifyType(rawValue: t), data: r.rest())
        case .delete:
            guard r.remaining >= 4 else { throw IKEParseError("Delete payload: shorter than 4 bytes") }
            let protocolID = r.u8(), spiSize = Int(r.u8()), count = Int(r.u16())
            guard spiSize * count == r.remaining else { throw IKEParseError("Delete payload: \(count) SPIs of \(spiSize) bytes do not fill it") }
            var spis: [[UInt8]] = []
            for _ in 0..<count { spis.append(r.take(spiSize)) }
            return .delete(protocolID: protocolID, spis: spis)
        case .trafficSelectorInitiator, .trafficSelectorResponder:
            guard r.remaining >= 4 else { throw IKEParseError("TS payload: shorter than 4 bytes") }
            let count = Int(r.u8())
            r.skip(3)
            var list: [IKETrafficSelector] = []
            for _ in 0..<count {
                guard r.remaining >= 8 else { throw IKEParseError("TS payload: fewer selectors than it says") }
                let tsType = r.u8(), proto = r.u8(), length = Int(r.u16())
                let width = tsType == 7 ? 4 : tsType == 8 ? 16 : 0
                guard length >= 8, length - 4 <= r.remaining else { throw IKEParseError("TS payload: a selector length of \(length)") }
                var s = ByteReader(r.take(length - 4))
                let startPort = s.u16(), endPort = s.u16()
                // Selector types other than address ranges are skipped (RFC 7296 §3.13.1 lets a
                // responder drop what it does not understand).
                guard width > 0 else { continue }
                guard s.remaining == 2 * width else { throw IKEParseError("TS payload: an address range of \(s.remaining) bytes") }
                list.append(IKETrafficSelector(start: s.take(width), end: s.take(width), ipProtocol: proto, startPort: startPort,
                                               endPort: endPort))
            }
            return type == IKEPayloadType.trafficSelectorInitiator.rawValue ? .trafficSelectorsInitiator(list) : .trafficSelectorsResponder(list)
        default:
            return .other(type: type, body: body)
        }
    }
}

/// The payload chain of a message, or of an SK payload's plaintext.
public enum IKEPayloadChain {
    /// Serializes `payloads`; the first one's type is returned for the header's next-payload field.
    public static func encode(_ payloads: [IKEPayload]) -> (first: UInt8, bytes: [UInt8]) {
        var w = ByteWriter()
        for (i, p) in payloads.enumerated() {
            let body = p.body
            w.u8(i + 1 < payloads.count ? payloads[i + 1].type : 0)
            w.u8(0)
            w.u16(UInt16(clamping: 4 + body.count))  // bodies are far below 64 KiB (a message is at most one datagram)
            w.append(body)
        }
        return (payloads.first?.type ?? 0, w.bytes)
    }

    /// The raw chain: each payload's type, critical bit and body, and where an SK payload starts.
    struct Raw {
        var payloads: [(type: UInt8, critical: Bool, body: [UInt8])] = []
        /// The SK payload (always last): its offset in the chain's bytes, its inner first type and its body.
        var encrypted: (offset: Int, firstInner: UInt8, body: [UInt8])?
    }

    /// Walks a chain starting with `first` (an SK payload must be last, RFC 7296 §3.14).
    /// - Throws: ``IKEParseError``.
    static func walk(_ bytes: ArraySlice<UInt8>, first: UInt8) throws(IKEParseError) -> Raw {
        var raw = Raw()
        var next = first
        var at = bytes.startIndex
        while next != 0 {
            guard bytes.endIndex - at >= 4 else { throw IKEParseError("payload \(next): shorter than its generic header") }
            let type = next
            next = bytes[at]
            let critical = bytes[at + 1] & 0x80 != 0
            let length = Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
            guard length >= 4, length <= bytes.endIndex - at else {
                throw IKEParseError("payload \(type): a length of \(length) with \(bytes.endIndex - at) bytes left")
            }
            let body = Array(bytes[(at + 4)..<(at + length)])
            if type == IKEPayloadType.encrypted.rawValue {
                raw.encrypted = (at - bytes.startIndex, next, body)
                return raw
            }
            raw.payloads.append((type, critical, body))
            at += length
        }
        guard at == bytes.endIndex else { throw IKEParseError("\(bytes.endIndex - at) bytes after the last payload") }
        return raw
    }

    /// Types this end understands, so that a critical payload of another type is refused.
    static func understood(_ type: UInt8) -> Bool {
        guard let t = IKEPayloadType(rawValue: type) else { return false }
        switch t {
        case .certificate, .configuration, .eap: return false
        default: return true
        }
    }

    /// Types the payloads of a raw chain (UNSUPPORTED_CRITICAL_PAYLOAD for a critical one this end
    /// does not know).
    /// - Throws: ``IKEParseError``.
    static func typed(_ raw: [(type: UInt8, critical: Bool, body: [UInt8])]) throws(IKEParseError) -> [IKEPayload] {
        var out: [IKEPayload] = []
        for p in raw {
            if !understood(p.type) {
                if p.critical {
                    throw IKEParseError("critical payload \(p.type) not supported", .unsupportedCriticalPayload, payloadType: p.type)
                }
                out.append(.other(type: p.type, body: p.body))
                continue
            }
            out.append(try IKEPayload.parse(type: p.type, body: p.body))
        }
        return out
    }
}

/// Big-endian reads over a byte array; reads past the end give zeros (callers check `remaining` first).
///
/// Bytes that are read past (reserved fields, attribute values this end ignores) are skipped with
/// ``skip(_:)``, never taken and discarded: a discarded `take` is an array made from a slice that
/// nobody uses, and Swift 6.3.1's optimizer (the SIL DCE pass) then deletes the copy that keeps the
/// new array's buffer alive while its bytes are copied in, so the buffer is freed *before* the copy
/// writes into it: an unauthenticated IKE_SA_INIT with one skipped transform attribute wrote into
/// freed heap memory in release builds. `scripts/toolchain/array-copy-lifetime.swift` reproduces
/// the miscompile on its own, and a test fails when a discarded `take` (or any discarded array
/// copy) comes back anywhere in the sources.
struct ByteReader {
    let bytes: [UInt8]
    var at = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    var remaining: Int { bytes.count - at }
    mutating func u8() -> UInt8 {
        defer { at += 1 }
        return at < bytes.count ? bytes[at] : 0
    }
    mutating func u16() -> UInt16 { UInt16(u8()) << 8 | UInt16(u8()) }
    mutating func u32() -> UInt32 { UInt32(u16()) << 16 | UInt32(u16()) }
    mutating func u64() -> UInt64 { UInt64(u32()) << 32 | UInt64(u32()) }
    mutating func take(_ n: Int) -> [UInt8] {
        let end = min(bytes.count, at + min(max(0, n), max(0, remaining)))
        defer { at = end }
        return Array(bytes[min(at, end)..<end])
    }
    mutating func rest() -> [UInt8] { take(remaining) }
    /// Moves past `n` bytes (at most to the end) without copying them.
    mutating func skip(_ n: Int) { at = min(bytes.count, at + min(max(0, n), remaining)) }
}

/// Big-endian writes into a byte array.
struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(v & 0xFF)) }
    mutating func u32(_ v: UInt32) { u16(UInt16(v >> 16)); u16(UInt16(v & 0xFFFF)) }
    mutating func u64(_ v: UInt64) { u32(UInt32(v >> 32)); u32(UInt32(v & 0xFFFF_FFFF)) }
    mutating func append(_ b: [UInt8]) { bytes.append(contentsOf: b) }
}

/// Bytes of a UInt64 / UInt32 in network order.
func bigEndianBytes<T: FixedWidthInteger>(_ v: T) -> [UInt8] { unsafe withUnsafeBytes(of: v.bigEndian) { unsafe Array($0) } }

/// An address's bytes in network order (4 or 16), as ID payloads, NAT detection and cookies hash them.
func addressBytes(_ address: IPAddress) -> [UInt8] {
    switch address {
    case .v4(let a): bigEndianBytes(a.rawValue)
    case .v6(let a): bigEndianBytes(a.high) + bigEndianBytes(a.low)
    }
}

/// A whole message read without keys: its header and, when it carries no SK payload, its payloads.
public struct IKEPlainMessage: Sendable {
    /// The header.
    public var header: IKEHeader
    /// The payloads before the SK payload (all of them in IKE_SA_INIT).
    public var payloads: [IKEPayload]
    /// Whether an SK payload (encrypted, read only with the IKE SA's keys) ends the message.
    public var encrypted: Bool

    /// Reads `bytes` (without the non-ESP marker).
    /// - Throws: ``IKEParseError``: the header, a length that lies, a cut payload, a critical payload
    ///   this end does not support.
    public init(parsing bytes: [UInt8]) throws(IKEParseError) {
        header = try IKEHeader(parsing: bytes)
        let raw = try IKEPayloadChain.walk(bytes[IKEHeader.length...], first: header.nextPayload)
        payloads = try IKEPayloadChain.typed(raw.payloads)
        encrypted = raw.encrypted != nil
    }

    /// The bytes of a message with `header` (its next payload and length set here) and `payloads`, unencrypted.
    public static func encode(header: IKEHeader, payloads: [IKEPayload]) -> [UInt8] {
        let (first, body) = IKEPayloadChain.encode(payloads)
        var h = header
        h.nextPayload = first
        h.length = UInt32(IKEHeader.length + body.count)
        return h.bytes + body
    }
}
