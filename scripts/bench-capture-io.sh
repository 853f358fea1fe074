#!/usr/bin/env bash
# Capture I/O against cat, on one large generated capture (page cache warm, output to the same
# filesystem): offload coalesce (pcap -> pcapng with GSO facts), offload segment (that pcapng back
# to pcap) and offload stats, each timed right after a cat that copies the same input, RUNS times;
# the ratio is each pair's, the median reported, with the peak RSS.
# Usage: scripts/bench-capture-io.sh [megabytes] [runs]   (default 1000, 4)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mb="${1:-1000}"; runs="${2:-4}"
dir="${TMPDIR:-/tmp}/swift-offload-bench"
mkdir -p "$dir"
cd "$root"
swift build -c release --product offload >/dev/null
bin="$root/.build/release/offload"
[ -f "$dir/big.pcap" ] && [ "$(stat -c %s "$dir/big.pcap")" -ge $((mb * 1000000)) ] || "$bin" generate --megabytes "$mb" "$dir/big.pcap" >/dev/null
"$bin" coalesce --quiet --checksums trust "$dir/big.pcap" "$dir/merged.pcapng"
cat "$dir/big.pcap" "$dir/merged.pcapng" > /dev/null  # warm the page cache
timed() { # command... -> "seconds peak_kib"; starts with no dirty pages (sync, not timed)
  sync
  /usr/bin/time -f "%e %M %U %S" -o "$dir/time.txt" "$@" >/dev/null 2>&1
  cat "$dir/time.txt"
}
size=$(stat -c %s "$dir/big.pcap")
declare -A ratios cpu rss
for ((r = 0; r < runs; r++)); do
  for what in coalesce segment stats; do
    case "$what" in
    coalesce) input="$dir/big.pcap"; cmd=("$bin" coalesce --quiet --checksums trust "$dir/big.pcap" "$dir/out.pcapng") ;;
    segment) input="$dir/merged.pcapng"; cmd=("$bin" segment --quiet "$dir/merged.pcapng" "$dir/out.pcap") ;;
    stats) input="$dir/big.pcap"; cmd=("$bin" stats "$dir/big.pcap") ;;
    esac
    read -r c _ cu cs < <(timed sh -c "cat '$input' > '$dir/copy'")
    rm -f "$dir/copy" "$dir/out.pcapng" "$dir/out.pcap"
    read -r t m tu ts < <(timed "${cmd[@]}")
    rm -f "$dir/out.pcapng" "$dir/out.pcap"
    ratios[$what]+="$(python3 -c "print(f'{$t / max($c, 0.001):.3f}')") "
    cpu[$what]+="$(python3 -c "print(f'{($tu + $ts) / max($cu + $cs, 0.001):.3f}')") "
    rss[$what]=$m
  done
done
echo "capture I/O, $size bytes, $runs paired runs (each against a cat copying the same input just before):"
for what in coalesce segment stats; do
  python3 - "$what" "${rss[$what]}" "${ratios[$what]}" "${cpu[$what]}" <<'PY'
import statistics, sys
name, rss = sys.argv[1], int(sys.argv[2])
wall, cpu = [float(v) for v in sys.argv[3].split()], [float(v) for v in sys.argv[4].split()]
print(f"  {name:9} elapsed: median {statistics.median(wall):.2f}x cat (runs: {' '.join(f'{v:.2f}' for v in wall)}); "
      f"CPU (user+sys): median {statistics.median(cpu):.2f}x cat (runs: {' '.join(f'{v:.2f}' for v in cpu)}); peak RSS {rss // 1024} MiB")
PY
done
rm -f "$dir/merged.pcapng"
