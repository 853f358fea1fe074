#!/usr/bin/env bash
# Runs the DPDK GRO/GSO anchor and swift-offload's engine back to back on this machine and prints
# the ratios the issues ask for. Numbers from one run only: the machine is shared and noisy.
# Usage: scripts/bench-vs-dpdk.sh [--quick]
#
# The DPDK harness is compiled with -march=native, so its inline helpers (rte_raw_cksum) use the
# machine's widest vectors. swift-offload is measured twice: the portable build (x86-64 baseline,
# SSE2: what `swift build` makes for any x86-64 machine) and a build for this CPU
# (`-Xswiftc -target-cpu -Xswiftc <cpu>`, the CPU gcc's -march=native picks; SWIFT_TARGET_CPU
# overrides, SWIFT_TARGET_CPU=none skips it).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
anchor="$root/../shared/anchors/dpdk-gro"
quick="${1:-}"
secs=0.5; runs=5
[ "$quick" = "--quick" ] && { secs=0.2; runs=3; }
dpdk="${DPDK_BENCH:-/tmp/dpdk-anchor-bench}"
if [ ! -x "$dpdk" ]; then
  [ -d "$anchor" ] || { echo "no DPDK anchor at $anchor" >&2; exit 1; }
  (cd "$anchor" && OUT="$dpdk" ./build.sh)
fi
out="$(mktemp -d)"
cpu="${SWIFT_TARGET_CPU:-$(gcc -march=native -Q --help=target 2>/dev/null | awk '$1 == "-march=" {print $2; exit}')}"
(cd "$root/Benchmarks" && swift build -c release --product offload-compare >/dev/null)
if [ -n "$cpu" ] && [ "$cpu" != none ]; then
  (cd "$root/Benchmarks" && swift build -c release --product offload-compare --build-path .build-cpu \
     -Xswiftc -target-cpu -Xswiftc "$cpu" >/dev/null)
fi
"$dpdk" --tests gro,gso,limits --flows 1,8,64,1024 --bursts 64 --secs "$secs" --runs "$runs" | tee "$out/dpdk.txt"
"$root/Benchmarks/.build/release/offload-compare" ${quick:+--quick} | tee "$out/swift.txt"
if [ -n "$cpu" ] && [ "$cpu" != none ]; then
  echo "# the same, built for this CPU ($cpu)"
  "$root/Benchmarks/.build-cpu/release/offload-compare" ${quick:+--quick} | tee "$out/swift-cpu.txt"
else
  cp "$out/swift.txt" "$out/swift-cpu.txt"
fi
python3 - "$out/dpdk.txt" "$out/swift.txt" "$out/swift-cpu.txt" "${cpu:-none}" <<'PY'
import re, sys
dpdk, swift, swiftcpu, cpu = open(sys.argv[1]).read(), open(sys.argv[2]).read(), open(sys.argv[3]).read(), sys.argv[4]
d = {}
for m in re.finditer(r"gro_burst tcp4\s+(\d+)\s+64\s+-\s+\|[^|]*\|\s+([\d.]+)", dpdk):
    d[f"gro{m.group(1)}"] = float(m.group(2))
m = re.search(r"gso tcp4 1-mbuf in\s+\| segment:\s+([\d.]+)", dpdk); d["gso"] = float(m.group(1))
m = re.search(r"gso tcp4 1-mbuf in \+ sw csum.*\+csum\+free:\s+([\d.]+)", dpdk); d["gsocsum"] = float(m.group(1))
m = re.search(r"rte_raw_cksum 1448B hot\s+set=\S+\s+\|\s+([\d.]+) ns/op", dpdk); d["cksum"] = float(m.group(1))
s = {k: float(v) for k, v in re.findall(r"^result (\S+) ([\d.]+)$", swift, re.M)}
c = {k: float(v) for k, v in re.findall(r"^result (\S+) ([\d.]+)$", swiftcpu, re.M)}
rows = [
    ("GRO 1 flow, checksums trusted", "gro_1flow_trusted_ns_per_packet", d["gro1"], 1.0),
    ("GRO 8 flows, checksums trusted", "gro_8flows_trusted_ns_per_packet", d["gro8"], 1.0),
    ("GRO 64 flows, checksums trusted", "gro_64flows_trusted_ns_per_packet", d["gro64"], 0.6),
    ("GRO 1024 flows, checksums trusted", "gro_1024flows_trusted_ns_per_packet", d["gro1024"], 0.6),
    ("GRO 1 flow, software verify", "gro_1flow_verify_ns_per_packet", d["gro1"], 2.0),
    ("GRO 8 flows, software verify", "gro_8flows_verify_ns_per_packet", d["gro8"], 2.0),
    ("GRO 64 flows, software verify", "gro_64flows_verify_ns_per_packet", d["gro64"], 2.0),
    ("GSO, no checksums (per segment)", "gso_nocsum_ns_per_segment", d["gso"], 1.0),
    ("GSO + checksums (per segment)", "gso_csum_ns_per_segment", d["gsocsum"], 1.0),
    ("checksum 1448 B (rte_raw_cksum)", "checksum_swift_1448B_ns", d["cksum"], 1.0),
]
print(f"\n{'case':34} {'dpdk ns':>8} | {'portable':>8} {'ratio':>6} | {cpu:>8} {'ratio':>6} | goal")
for name, key, b, goal in rows:
    a, n = s[key], c[key]
    verdict = "ok" if min(a, n) / b <= goal else "MISSED"
    print(f"{name:34} {b:8.1f} | {a:8.1f} {a/b:6.2f} | {n:8.1f} {n/b:6.2f} | <= {goal} {verdict}")
for label, values in [("portable", s), (cpu, c)]:
    one = values["gro_1flow_trusted_ns_per_packet"]
    for case in ["1024flows", "allpsh"]:
        v = values[f"gro_{case}_trusted_ns_per_packet"]
        print(f"no-cliff ({label}): {case} {v:.1f} ns = {v/one:.2f}x the 1-flow case (goal <= 2)")
PY
