#!/usr/bin/env bash
# Instructions per packet of the GRO engine (GROEngine.coalesce, inclusive) on the DPDK anchor's
# cases, counted by valgrind's callgrind: unlike the clock, the count does not depend on the
# machine's load. Builds offload-compare (release) and strips its debug info (this valgrind cannot
# read the toolchain's DWARF 5).
# Usage: scripts/instructions-per-packet.sh [case ...]   (default: the four GRO cases the issues track)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install -y valgrind)" >&2; exit 1; }
cases=("$@")
[ ${#cases[@]} -eq 0 ] && cases=(gro_1flow_trusted gro_8flows_trusted gro_64flows_trusted gro_1flow_verify gro_8flows_verify)
(cd "$root/Benchmarks" && swift build -c release --product offload-compare >/dev/null)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$root/Benchmarks/.build/release/offload-compare" "$work/oc"
strip --strip-debug "$work/oc"
for c in "${cases[@]}"; do
  valgrind --tool=callgrind --callgrind-out-file="$work/$c.out" "$work/oc" --quick --only "$c" >/dev/null 2>&1
  python3 - "$work/$c.out" "$c" <<'PY'
import re, subprocess, sys
path, name = sys.argv[1], sys.argv[2]
target = "GROEngineV8coalesce_3now"
text = subprocess.run(["callgrind_annotate", "--inclusive=yes", path], capture_output=True, text=True).stdout
inclusive = next(int(l.split()[0].replace(",", "")) for l in text.splitlines() if target in l)
names, calls, current = {}, 0, None
for line in open(path):
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
    if m:
        kind, ident, label = m.groups()
        if label: names[ident] = label.strip()
        if kind == "cfn": current = names.get(ident)
        continue
    m = re.match(r"calls=(\d+)", line)
    if m and current and target in current: calls += int(m.group(1))
print(f"{name:24} {inclusive / (calls * 64):8.1f} instructions/packet  ({calls} bursts of 64)")
PY
done
