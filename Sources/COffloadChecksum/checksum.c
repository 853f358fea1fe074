// The Internet checksum's AVX2 loop, compiled for AVX2 whatever the build's baseline, and used only
// when CPUID says the CPU has it (see offload_checksum.h).
#include "offload_checksum.h"

#if defined(__x86_64__)
#include <immintrin.h>

int offload_checksum_avx2_ready = 0;

__attribute__((constructor)) static void offload_checksum_detect(void) {
    __builtin_cpu_init();
    offload_checksum_avx2_ready = __builtin_cpu_supports("avx2") ? 1 : 0;
}

// Each 32-byte load is split into its eight 32-bit words, widened to 64-bit lanes (unpacked with
// zero) and added: a 64-bit lane takes 2^32 such words before it could overflow, far beyond any
// packet. Four loads per iteration into four accumulators keep the adders busy (measured against
// two loads, and against masking the words into 32-bit lanes: this was the fastest on Zen 3, and
// even with rte_raw_cksum built -march=native). The tail is summed as 32-bit words, then a 16-bit
// word, then a last byte padded with zero, as RFC 1071 pads it.
__attribute__((target("avx2"))) uint64_t offload_checksum_sum_avx2(const void *data, size_t count) {
    const unsigned char *p = (const unsigned char *)data;
    const __m256i zero = _mm256_setzero_si256();
    __m256i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
    size_t i = 0;
    for (; count - i >= 128; i += 128) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(p + i));
        __m256i y = _mm256_loadu_si256((const __m256i *)(p + i + 32));
        __m256i z = _mm256_loadu_si256((const __m256i *)(p + i + 64));
        __m256i w = _mm256_loadu_si256((const __m256i *)(p + i + 96));
        a0 = _mm256_add_epi64(a0, _mm256_add_epi64(_mm256_unpacklo_epi32(x, zero), _mm256_unpackhi_epi32(x, zero)));
        a1 = _mm256_add_epi64(a1, _mm256_add_epi64(_mm256_unpacklo_epi32(y, zero), _mm256_unpackhi_epi32(y, zero)));
        a2 = _mm256_add_epi64(a2, _mm256_add_epi64(_mm256_unpacklo_epi32(z, zero), _mm256_unpackhi_epi32(z, zero)));
        a3 = _mm256_add_epi64(a3, _mm256_add_epi64(_mm256_unpacklo_epi32(w, zero), _mm256_unpackhi_epi32(w, zero)));
    }
    for (; count - i >= 32; i += 32) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(p + i));
        a0 = _mm256_add_epi64(a0, _mm256_add_epi64(_mm256_unpacklo_epi32(x, zero), _mm256_unpackhi_epi32(x, zero)));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    __m128i h = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    uint64_t total = (uint64_t)_mm_cvtsi128_si64(h) + (uint64_t)_mm_extract_epi64(h, 1);
    for (; count - i >= 4; i += 4) {
        uint32_t word;
        __builtin_memcpy(&word, p + i, 4);
        total += word;
    }
    if (count - i >= 2) {
        uint16_t half;
        __builtin_memcpy(&half, p + i, 2);
        total += half;
        i += 2;
    }
    if (count - i == 1) total += p[i];  // the first byte of a 16-bit word: its low byte in host (little-endian) order
    return total;
}
#else
int offload_checksum_avx2_ready = 0;

uint64_t offload_checksum_sum_avx2(const void *data, size_t count) {
    (void)data;
    (void)count;
    return 0;  // never called: offload_checksum_has_avx2() is 0 here
}
#endif
