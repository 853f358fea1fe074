// A Swift optimizer miscompile, on its own (found in swift-offload's IKEv2 parser, Swift 6.3.1).
//
// An array made from an ArraySlice whose result nobody uses (`_ = reader.take(n)` below, once inlined)
// is freed before its elements are copied in: the SIL DCE pass (HighLevel, EarlyLoopOpt) deletes the
// copy of the new buffer that kept it alive, because the copy's only user is the dead result, while
// the raw pointer taken from the buffer for the element copy has no lifetime dependence on it. The
// release moves above the memcpy, which then writes `n` bytes of the input into freed heap memory.
// Found by bisecting with `-Xllvm -sil-opt-pass-count=N`: the last pass before the bad code is DCE.
//
// Run: scripts/toolchain/check-array-copy-lifetime.sh (compiles this with -O and AddressSanitizer).
// The program prints 1 on a sound toolchain and aborts with heap-use-after-free on one with the bug.
// swift-offload never discards an array it reads (ByteReader.skip), and a test enforces that.

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
    mutating func take(_ n: Int) -> [UInt8] {
        let end = min(bytes.count, at + max(0, n))
        defer { at = end }
        return Array(bytes[min(at, end)..<end])
    }
}
struct ParseError: Error { var description: String; init(_ d: String) { description = d } }
struct Transform: Hashable { var type: UInt8; var id: UInt16; var keyLength: UInt16? }
struct Proposal: Hashable { var number: UInt8; var protocolID: UInt8; var spi: [UInt8]; var transforms: [Transform] }

@inline(never)
func parseSA(_ body: [UInt8]) throws(ParseError) -> [Proposal] {
    var r = ByteReader(body)
    var proposals: [Proposal] = []
    while r.remaining > 0 {
        guard r.remaining >= 8 else { throw ParseError("SA payload: a proposal shorter than its header") }
        let last = r.u8()
        _ = r.u8()
        let length = Int(r.u16())
        guard length >= 8, length - 4 <= r.remaining else { throw ParseError("SA payload: a proposal length of \(length)") }
        var p = ByteReader(r.take(length - 4))
        let number = p.u8(), protocolID = p.u8(), spiSize = Int(p.u8()), count = Int(p.u8())
        guard spiSize <= p.remaining else { throw ParseError("SA payload: an SPI longer than its proposal") }
        let spi = p.take(spiSize)
        var transforms: [Transform] = []
        for _ in 0..<count {
            guard p.remaining >= 8 else { throw ParseError("SA payload: fewer transforms than the proposal says") }
            _ = p.u8()
            _ = p.u8()
            let tlength = Int(p.u16())
            guard tlength >= 8, tlength - 4 <= p.remaining else { throw ParseError("SA payload: a transform length of \(tlength)") }
            var t = ByteReader(p.take(tlength - 4))
            let ttype = t.u8()
            _ = t.u8()
            let id = t.u16()
            var keyLength: UInt16?
            while t.remaining > 0 {
                guard t.remaining >= 4 else { throw ParseError("SA payload: a cut attribute") }
                let at = t.u16()
                if at & 0x8000 != 0 {
                    let value = t.u16()
                    if at & 0x7FFF == 14 { keyLength = value }
                } else {
                    let alength = Int(t.u16())
                    guard alength <= t.remaining else { throw ParseError("SA payload: an attribute longer than its transform") }
                    _ = t.take(alength)
                }
            }
            transforms.append(Transform(type: ttype, id: id, keyLength: keyLength))
        }
        guard p.remaining == 0 else { throw ParseError("SA payload: bytes after the last transform of a proposal") }
        proposals.append(Proposal(number: number, protocolID: protocolID, spi: spi, transforms: transforms))
        if last == 0 { break }
    }
    return proposals
}
// proposal with one transform carrying a TLV attribute of length 1
let t: [UInt8] = [0, 0, 0, 13,  1, 0, 0, 20,  0, 1, 0, 1, 0xAA]
let p: [UInt8] = [0, 0, 0, UInt8(8 + t.count), 1, 1, 0, 1] + t
print((try? parseSA(p))?.count ?? -1)
