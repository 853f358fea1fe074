#ifndef CCHECKSUM_H
#define CCHECKSUM_H
#include <stddef.h>
#include <stdint.h>

/// The Internet checksum sum (RFC 1071), folded to 16 bits and returned in network order as a
/// number: the same algorithm as swift-offload's InternetChecksum (32-bit loads into 64-bit
/// accumulators, 8 loads per iteration), compiled by clang, as the yardstick for the Swift code.
uint16_t c_reference_checksum_sum(const void *data, size_t length);

#endif
