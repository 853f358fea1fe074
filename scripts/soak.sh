#!/usr/bin/env bash
# Soak: pushes a volume of data through `offload forward` with impairment on, over several
# parallel TCP connections in network namespaces (client — gateway — server, the kernel's TCP on
# both ends), checks every connection's bytes by sha256, and samples the forwarder's resident
# memory and open file descriptors every second. Root only; traffic stays inside the namespaces.
#
# Usage: scripts/soak.sh [GIGABYTES] [CONNECTIONS]          (defaults: 10, 4)
#   IMPAIR=spec      the impairment (default loss=1%,reorder=1%,duplicate=0.1%)
#   OFFLOAD=path     the offload executable (default: a release build of this checkout)
#   SOAK_OUT=dir     where the samples go (default: a temporary directory, kept)
#   MAX_SECONDS=n    give up after this long (default 1800)
# Prints per-connection results, throughput, and RSS/fd first/last/max; exits 1 on any mismatch,
# a forwarder that died, or RSS that grew by more than 64 MB.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
gigabytes="${1:-10}"
connections="${2:-4}"
impair="${IMPAIR:-loss=1%,reorder=1%,duplicate=0.1%}"
max_seconds="${MAX_SECONDS:-1800}"
[ "$(id -u)" = 0 ] || { echo "soak: needs root (network namespaces)" >&2; exit 2; }
if [ -z "${OFFLOAD:-}" ]; then
  (cd "$root" && swift build -c release --product offload >/dev/null)
  OFFLOAD="$root/.build/release/offload"
fi
out="${SOAK_OUT:-$(mktemp -d /tmp/soak.XXXXXX)}"
mkdir -p "$out"
prefix="soak$$"
cleanup() {
  pkill -TERM -f "[s]tats-json $out/stats.json" 2>/dev/null || true
  sleep 1
  pkill -KILL -f "[s]tats-json $out/stats.json" 2>/dev/null || true
  pkill -f "[s]oak-recv-$prefix" 2>/dev/null || true
  "$root/scripts/netns-topology.sh" down "$prefix" >/dev/null 2>&1 || true
}
trap cleanup EXIT
"$root/scripts/netns-topology.sh" up "$prefix" >/dev/null
setsid ip netns exec "$prefix-gw" "$OFFLOAD" forward --ingress sk0 --egress sk1 --setup --lan g0 --wan g1 \
  --impair "$impair" --stats-json "$out/stats.json" > "$out/forward.log" 2>&1 < /dev/null &
for _ in $(seq 100); do ip -n "$prefix-gw" route show table 4100 2>/dev/null | grep -q 'dev sk0' && break; sleep 0.1; done
pid="$(pgrep -f "[s]tats-json $out/stats.json" | head -1)"
[ -n "$pid" ] || { echo "soak: the forwarder did not start:" >&2; cat "$out/forward.log" >&2; exit 1; }

bytes_per=$(python3 -c "print(int($gigabytes * 1e9 / $connections))")
echo "soak: $gigabytes GB over $connections connections through offload forward (pid $pid), impairment $impair; samples in $out"
for i in $(seq 1 "$connections"); do
  port=$((6000 + i))
  setsid ip netns exec "$prefix-server" bash -c \
    "exec -a soak-recv-$prefix socat -u TCP4-LISTEN:$port,reuseaddr - | sha256sum | cut -d' ' -f1 > $out/recv-$i.sha" \
    > /dev/null 2>&1 < /dev/null &
done
sleep 0.5
start=$(date +%s.%N)
senders=()
for i in $(seq 1 "$connections"); do
  port=$((6000 + i))
  ip netns exec "$prefix-client" bash -c \
    "head -c $bytes_per /dev/urandom | tee >(sha256sum | cut -d' ' -f1 > $out/send-$i.sha) | socat -u - TCP4:10.77.2.2:$port" \
    > "$out/send-$i.log" 2>&1 &
  senders+=($!)
done
echo "second,rss_kb,fds" > "$out/samples.csv"
t=0
while :; do
  running=0
  for s in "${senders[@]}"; do kill -0 "$s" 2>/dev/null && running=1; done
  [ -d "/proc/$pid" ] || { echo "soak: the forwarder died" >&2; exit 1; }
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
  fds=$(ls "/proc/$pid/fd" | wc -l)
  echo "$t,$rss,$fds" >> "$out/samples.csv"
  [ "$running" = 1 ] || break
  [ "$t" -lt "$max_seconds" ] || { echo "soak: gave up after $max_seconds s" >&2; exit 1; }
  sleep 1
  t=$((t + 1))
done
wait "${senders[@]}" || true
for _ in $(seq 100); do
  done_count=$(ls "$out"/recv-*.sha 2>/dev/null | xargs -r -n1 cat | grep -c . || true)
  [ "$done_count" -ge "$connections" ] && break
  sleep 0.2
done
elapsed=$(python3 -c "import time; print(time.time() - $start)")
status=0
for i in $(seq 1 "$connections"); do
  a="$(cat "$out/send-$i.sha" 2>/dev/null)"; b="$(cat "$out/recv-$i.sha" 2>/dev/null)"
  if [ -n "$a" ] && [ "$a" = "$b" ]; then echo "connection $i: intact ($a)"; else echo "connection $i: MISMATCH sent $a received $b"; status=1; fi
done
pkill -TERM -f "[s]tats-json $out/stats.json" || true
for _ in $(seq 50); do [ -s "$out/stats.json" ] && break; sleep 0.1; done
python3 - "$out" "$gigabytes" "$elapsed" <<'PY'
import csv, json, sys
out, gb, elapsed = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
rss = [int(r["rss_kb"]) for r in rows]; fds = [int(r["fds"]) for r in rows]
print(f"throughput: {gb:.2f} GB in {elapsed:.1f} s = {gb * 8 / elapsed:.2f} Gbit/s")
print(f"RSS kB: first {rss[0]}, last {rss[-1]}, max {max(rss)} ({len(rss)} samples)")
print(f"open fds: first {fds[0]}, last {fds[-1]}, max {max(fds)}")
try:
    stats = json.load(open(f"{out}/stats.json"))
    for d, s in stats.items():
        c = {x["name"]: x["value"] for x in s.get("stage", [])}
        print(f"{d}: {s['packetsIn']} packets in, segments {c.get('impairment_segments')}, dropped {c.get('impairment_dropped')}, "
              f"reordered {c.get('impairment_reordered')}, duplicated {c.get('impairment_duplicated')}")
except Exception as e:
    print(f"no counters: {e}")
if rss[-1] - rss[0] > 64 * 1024:
    print("RSS grew by more than 64 MB"); sys.exit(1)
PY
[ $? = 0 ] || status=1
exit $status
