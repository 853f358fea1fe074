#!/usr/bin/env bash
# The stateful NAT64's tables at scale (Benchmarks/Sources/nat64-sessions): new UDP sessions per
# second through NAT64Tables.fromIPv6 (each with a binding of its own, pool4
# 198.51.100.0/24:1024-65535), malloc'd bytes and resident bytes per session, then expiring them
# all with expire(now:limit: 256) as the stage does (the longest call is how long translation can
# wait on the tables' lock: wall clock, and the thread's CPU time, which leaves out preemption),
# the heap left after expiry, and making as many again on the freed slots. Then the cost of a new
# session against the size of the pool4 (1 000 sessions each).
# One process per run, so each RSS is its own; each size runs REPEAT times (default 3) and the run
# with the fastest creation is shown (on a shared machine the others measure the neighbours).
# Prints Markdown tables, with the machine above them.
# Usage: scripts/bench-nat64-sessions.sh [sizes ...]   (default 1000 10000 100000 1000000)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(1000 10000 100000 1000000)
repeat="${REPEAT:-3}"
cd "$root/Benchmarks"
swift build -c release --product nat64-sessions >/dev/null
bin="$(swift build -c release --show-bin-path)/nat64-sessions"
best() { # n [pool4] -> the line of the fastest of $repeat runs
  for _ in $(seq "$repeat"); do "$bin" "$@"; done | sort -t$'\t' -k2,2g | head -1
}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') ($(nproc) cores), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git -C "$root" rev-parse --short HEAD), $(date -u '+%Y-%m-%d %H:%M UTC'), best of $repeat runs per row"
echo
echo "| sessions | new sessions/s | ns/session | heap B/session | RSS B/session | expire calls (256 each) | longest call µs (wall) | longest call µs (CPU) | median call µs | all calls ms | heap B/session after expiry | again: sessions/s | heap B/session after again |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for n in "${sizes[@]}"; do
  best "$n" | awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 }'
done
echo
echo "| pool4 (1 000 sessions) | addresses | new sessions/s | ns/session | heap B/session |"
echo "|---|---:|---:|---:|---:|"
for pool in 198.51.100.1/32 198.51.100.0/28 198.51.100.0/24 198.51.96.0/22 198.51.96.0/20 198.51.0.0/18 198.51.0.0/16; do
  addresses=$((1 << (32 - ${pool#*/})))
  best 1000 "$pool:1024-65535" | awk -F'\t' -v p="$pool:1024-65535" -v a="$addresses" '{ printf "| %s | %s | %s | %s | %s |\n", p, a, $3, $4, $5 }'
done
