#!/usr/bin/env bash
# ESP encryption on this CPU, one run: OpenSSL's own `openssl speed` for AES-128-GCM and
# ChaCha20-Poly1305 at 1400 bytes (the physical limit of the library), then the gateway's paths
# and swift-crypto's allocating API (Benchmarks/esp-crypto-compare), in cycles per byte.
# Usage: scripts/bench-esp-crypto.sh [goodput-Gbit/s for the swift-crypto share]   (default 2)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mhz=$(awk -F: '/^cpu MHz/ {print $2; exit}' /proc/cpuinfo)
for a in aes-128-gcm chacha20-poly1305; do
  openssl speed -evp "$a" -bytes 1400 -seconds 3 2>/dev/null | tail -1 |
    awk -v mhz="$mhz" -v a="$a" '{k=$NF; sub(/k$/,"",k); printf "openssl speed -evp %-18s %6.2f GB/s %5.2f cycles/byte\n", a, k*1000/1e9, mhz*1e6/(k*1000)}'
done
cd "$root/Benchmarks"
swift build -c release --product esp-crypto-compare >/dev/null
./.build/release/esp-crypto-compare "${1:-2}"
