#!/usr/bin/env bash
# offload coalesce on a large generated capture: input throughput and peak memory, beside a
# reference measured in the same run (reading the same file with cat, from the page cache).
# Usage: scripts/bench-coalesce.sh [megabytes]   (default 1100)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
mb="${1:-1100}"
dir="${TMPDIR:-/tmp}/swift-offload-bench"
mkdir -p "$dir"
cd "$root"
swift build -c release --product offload >/dev/null
bin="$root/.build/release/offload"
[ -f "$dir/big.pcap" ] && [ "$(stat -c %s "$dir/big.pcap")" -ge $((mb * 1000000)) ] || "$bin" generate --megabytes "$mb" "$dir/big.pcap"
size=$(stat -c %s "$dir/big.pcap")
sync  # let the generator's writes reach the disk before timing
cat "$dir/big.pcap" > /dev/null  # warm the page cache
t0=$(date +%s.%N); cat "$dir/big.pcap" > /dev/null; t1=$(date +%s.%N)
echo "reference: cat of $size bytes: $(python3 -c "print(f'{$size/($t1-$t0)/1e9:.2f} GB/s')")"
/usr/bin/time -f "%e %M" -o "$dir/time.txt" "$bin" coalesce --quiet --checksums trust --format pcap "$dir/big.pcap" /dev/null
read -r secs rss < "$dir/time.txt"
echo "coalesce --checksums trust -> /dev/null (processing only): $(python3 -c "print(f'{$size/$secs/1e9:.2f} GB/s of input, {$secs:.2f} s')"), peak RSS $((rss / 1024)) MiB"
for format in pcapng pcap; do
  /usr/bin/time -f "%e %M" -o "$dir/time.txt" "$bin" coalesce --quiet --checksums trust "$dir/big.pcap" "$dir/out.$format"
  read -r secs rss < "$dir/time.txt"
  echo "coalesce --checksums trust -> $format: $(python3 -c "print(f'{$size/$secs/1e9:.2f} GB/s of input, {$secs:.2f} s')"), peak RSS $((rss / 1024)) MiB"
done
/usr/bin/time -f "%e %M" -o "$dir/time.txt" "$bin" coalesce --quiet "$dir/big.pcap" "$dir/out.pcapng"
read -r secs rss < "$dir/time.txt"
echo "coalesce (verify checksums) -> pcapng: $(python3 -c "print(f'{$size/$secs/1e9:.2f} GB/s of input, {$secs:.2f} s')"), peak RSS $((rss / 1024)) MiB"
rm -f "$dir"/out.*
