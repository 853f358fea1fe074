// The Internet checksum's wide loop, chosen once by the CPU it runs on: the portable binary uses
// the widest vectors the machine has (AVX2 on x86-64), as glibc and DPDK do. The Swift code keeps
// the scalar and SSE2 reference; the tests hold this equal to it.
#ifndef OFFLOAD_CHECKSUM_H
#define OFFLOAD_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/// Set once at load time (a constructor reads CPUID): 1 when the AVX2 loop may run.
extern int offload_checksum_avx2_ready;

/// Whether `offload_checksum_sum_avx2` may be called on this CPU.
static inline int offload_checksum_has_avx2(void) { return offload_checksum_avx2_ready; }

/// The host-order (little-endian) 64-bit sum of the `count` bytes at `data` as 16-bit words, an odd
/// last byte padded with zero: folded to 16 bits and swapped, the Internet checksum's sum (RFC 1071).
/// Any length and alignment. Call only when `offload_checksum_has_avx2()` says so.
uint64_t offload_checksum_sum_avx2(const void *data, size_t count);

#endif
