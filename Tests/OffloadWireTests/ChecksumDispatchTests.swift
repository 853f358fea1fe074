import COffloadChecksum
import OffloadTestSupport
@testable import OffloadWire
import Testing

@Suite("The checksum's variants: the AVX2 loop chosen at run time equals the Swift references")
struct ChecksumDispatchTests {
    /// A 64-bit host-order sum folded to 16 bits, network order, for comparison.
    func folded(_ native: UInt64) -> UInt16 { UInt16(bigEndian: InternetChecksum._fold64(native)) }

    @Test("scalar, Swift SSE2 and C AVX2 agree on random buffers of every length 0…9024, every alignment 0…31",
          .enabled(if: offload_checksum_has_avx2() != 0, "this CPU has no AVX2: only the Swift loops run"))
    func variantsAgree() {
        var rng = SplitMix(seed: 0xA5A5)
        let buffer = (0..<(9024 + 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        var failures = 0
        buffer.withUnsafeBytes { raw in
            for start in 0..<32 {
                for count in 0...9024 {
                    let base = raw.baseAddress! + start
                    let scalar = folded(InternetChecksum._unsafeScalarSum(base, count: count))
                    let vectorBytes = count & ~63  // the Swift vector loop takes multiples of 64
                    let swift = folded(InternetChecksum._unsafeVectorSum(base, count: vectorBytes)
                                       &+ InternetChecksum._unsafeScalarSum(base + vectorBytes, count: count - vectorBytes))
                    let avx2 = folded(offload_checksum_sum_avx2(base, count))
                    if !sameOnesComplement(scalar, swift) || !sameOnesComplement(scalar, avx2) { failures += 1 }
                }
            }
        }
        #expect(failures == 0)
    }

    @Test("the AVX2 lanes at their largest: all-0xFF buffers up to 4 MiB",
          .enabled(if: offload_checksum_has_avx2() != 0, "this CPU has no AVX2"))
    func saturated() {
        let buffer = [UInt8](repeating: 0xFF, count: 4 * 1024 * 1024)
        buffer.withUnsafeBytes { raw in
            for count in [1, 63, 64, 1023, 1024, 65_536, 2 * 1024 * 1024 + 64, 4 * 1024 * 1024] {
                #expect(sameOnesComplement(folded(offload_checksum_sum_avx2(raw.baseAddress!, count)),
                                           folded(InternetChecksum._unsafeScalarSum(raw.baseAddress!, count: count))))
            }
        }
    }
}
