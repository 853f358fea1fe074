#!/usr/bin/env bash
# Builds the libFuzzer targets in Fuzz/ (with -sanitize=fuzzer,address) and runs each for a while.
# Seed corpora: Fuzz/Corpus/<target>/ (committed inputs that once failed: each is run first, every
# time), plus the frames and files of the development pcap corpus beside the repository when it
# exists; otherwise libFuzzer starts from the committed seeds alone. A crash leaves its input in $FUZZ_OUT/<target>/ and fails the script.
# Usage: scripts/fuzz.sh [seconds-per-target] [target ...]
#   FUZZ_OUT=dir   where corpora and crash inputs go (default .build-fuzz/work)
#   FUZZ_BUILD=dir the build folder (default .build-fuzz; another one lets two runs go side by side)
#   FUZZ_SEEDS=dir a folder of pcap captures to seed from (default: the development corpus beside the repository)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(FuzzPacketLayout FuzzGRORoundTrip FuzzGSO FuzzCaptureReader FuzzVirtio FuzzSIIT FuzzTunnel FuzzESP FuzzIKE FuzzIKESession FuzzPacketSelectors FuzzNAT64)
out="${FUZZ_OUT:-$root/.build-fuzz/work}"
mkdir -p "$out"
echo "building the fuzz targets (release, -sanitize=fuzzer,address) ..." >&2
build="${FUZZ_BUILD:-$root/.build-fuzz}"
(cd "$root/Fuzz" && swift build -c release --build-path "$build" -Xswiftc -sanitize=fuzzer,address >/dev/null)
bin="$build/release"
corpus="${FUZZ_SEEDS:-$root/../shared/corpus/pcap}"
seed_frames() {  # $1: directory; one file per frame of the corpus captures (classic pcap only), first 40 per file
  python3 - "$corpus" "$1" <<'PY'
import os, struct, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
paths = sorted(os.path.join(d, f) for d, _, files in os.walk(src) for f in files)
for path in paths:
    name = os.path.basename(path)
    data = open(path, "rb").read()
    if len(data) < 24: continue
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"): e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"): e = ">"
    else: continue
    off, n = 24, 0
    while off + 16 <= len(data) and n < 40:
        incl = struct.unpack(e + "I", data[off + 8:off + 12])[0]
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        open(os.path.join(dst, f"{name}-{n}"), "wb").write(b"\x00" + frame)  # byte 0: setup/link type
        n += 1
PY
}
status=0
for t in "${targets[@]}"; do
  dir="$out/$t"
  mkdir -p "$dir/corpus" "$dir/crashes"
  if [ -d "$corpus" ] && [ -z "$(ls -A "$dir/corpus")" ]; then
    case "$t" in
      FuzzCaptureReader) find "$corpus" -type f -size -2M -exec cp {} "$dir/corpus/" \; ;;
      *) seed_frames "$dir/corpus" ;;
    esac
  fi
  if [ -d "$root/Fuzz/Corpus/$t" ]; then cp "$root/Fuzz/Corpus/$t"/* "$dir/corpus/" 2>/dev/null || true; fi
  echo "== $t: ${seconds}s" >&2
  if ! SWIFT_BACKTRACE=enable=no "$bin/$t" "$dir/corpus" -max_total_time="$seconds" -max_len=70000 -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="$dir/crashes/" -print_final_stats=1 > "$dir/log.txt" 2>&1; then
    echo "$t FAILED: see $dir/log.txt and $dir/crashes/" >&2
    tail -30 "$dir/log.txt" >&2
    status=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$dir/log.txt" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$dir/log.txt" | tail -1 | grep -o '[0-9]*' || echo "?")
  echo "$t executions=$runs coverage_edges=$cov"
done
exit $status
