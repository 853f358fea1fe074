#include "cchecksum.h"
#include <string.h>

static inline uint32_t load32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

uint16_t c_reference_checksum_sum(const void *data, size_t length) {
    const unsigned char *p = data;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    size_t i = 0;
    for (; i + 32 <= length; i += 32) {
        a += load32(p + i);
        b += load32(p + i + 4);
        c += load32(p + i + 8);
        d += load32(p + i + 12);
        a += load32(p + i + 16);
        b += load32(p + i + 20);
        c += load32(p + i + 24);
        d += load32(p + i + 28);
    }
    for (; i + 4 <= length; i += 4) a += load32(p + i);
    if (i + 2 <= length) {
        uint16_t v;
        memcpy(&v, p + i, 2);
        b += v;
        i += 2;
    }
    if (i < length) c += p[i]; /* little-endian host: the odd byte is a word's low byte */
    uint64_t s = a + b + c + d;
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffffffffu) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    uint16_t folded = (uint16_t)s;
    return (uint16_t)((folded >> 8) | (folded << 8));
}
