#!/usr/bin/env bash
# Runs the DPDK GRO/GSO anchor and swift-offload's engine back to back on this machine and prints
# the ratios the issues ask for. Numbers from one run only: the machine is shared and noisy.
# Usage: scripts/bench-vs-dpdk.sh [--quick]
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
(cd "$root/Benchmarks" && swift build -c release --product offload-compare >/dev/null)
"$dpdk" --tests gro,gso --flows 1,8,64 --bursts 64 --secs "$secs" --runs "$runs" | tee "$out/dpdk.txt"
"$root/Benchmarks/.build/release/offload-compare" ${quick:+--quick} | tee "$out/swift.txt"
python3 - "$out/dpdk.txt" "$out/swift.txt" <<'PY'
import re, sys
dpdk, swift = open(sys.argv[1]).read(), open(sys.argv[2]).read()
d = {}
for m in re.finditer(r"gro_burst tcp4\s+(\d+)\s+64\s+-\s+\|[^|]*\|\s+([\d.]+)", dpdk):
    d[f"gro{m.group(1)}"] = float(m.group(2))
m = re.search(r"gso tcp4 1-mbuf in\s+\| segment:\s+([\d.]+)", dpdk); d["gso"] = float(m.group(1))
m = re.search(r"gso tcp4 1-mbuf in \+ sw csum.*\+csum\+free:\s+([\d.]+)", dpdk); d["gsocsum"] = float(m.group(1))
s = {k: float(v) for k, v in re.findall(r"^result (\S+) ([\d.]+)$", swift, re.M)}
rows = [
    ("GRO 1 flow, checksums trusted", s["gro_1flow_trusted_ns_per_packet"], d["gro1"], 0.5),
    ("GRO 8 flows, checksums trusted", s["gro_8flows_trusted_ns_per_packet"], d["gro8"], 0.5),
    ("GRO 64 flows, checksums trusted", s["gro_64flows_trusted_ns_per_packet"], d["gro64"], 0.5),
    ("GRO 1 flow, software verify", s["gro_1flow_verify_ns_per_packet"], d["gro1"], 1.5),
    ("GRO 8 flows, software verify", s["gro_8flows_verify_ns_per_packet"], d["gro8"], 1.5),
    ("GRO 64 flows, software verify", s["gro_64flows_verify_ns_per_packet"], d["gro64"], 1.5),
    ("GSO, no checksums (per segment)", s["gso_nocsum_ns_per_segment"], d["gso"], 1.0),
    ("GSO + checksums (per segment)", s["gso_csum_ns_per_segment"], d["gsocsum"], 1.0),
]
print(f"\n{'case':36} {'swift ns':>9} {'dpdk ns':>9} {'ratio':>7} {'goal':>6}")
for name, a, b, goal in rows:
    print(f"{name:36} {a:9.1f} {b:9.1f} {a/b:7.2f} {'<=' + str(goal):>6}{'  ok' if a/b <= goal else '  MISSED'}")
one = s["gro_1flow_trusted_ns_per_packet"]
for case in ["1024flows", "allpsh"]:
    v = s[f"gro_{case}_trusted_ns_per_packet"]
    print(f"no-cliff: {case} {v:.1f} ns = {v/one:.2f}x the 1-flow case (goal <= 2)")
print(f"checksum Swift/C throughput at 1448 B: {s['checksum_swift_over_c_throughput_1448B']:.2f} (goal >= 0.9)")
PY
