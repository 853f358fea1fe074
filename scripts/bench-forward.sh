#!/usr/bin/env bash
# iperf3 TCP goodput through the gateway of scripts/netns-topology.sh, one run each:
#   kernel forwarding (GRO on and off on the gateway), `offload forward` with offloads and the
#   gateway's GRO left off (userspace GRO alone: --keep-ingress-gro), `offload forward` as --setup
#   leaves it (the kernel's GRO on at the ingress, the forwarder reads super-packets), and
#   `offload forward --no-vnet-hdr` (no GRO/GSO). Root, iperf3 and socat needed.
# Usage: scripts/bench-forward.sh [seconds]   (default 5); EGRESS_GSO=on for the gateway's egress passing
# super-packets on.
# QUEUES=n adds a column: offload+kGRO with n queues per device (IFF_MULTI_QUEUE, a worker per queue
# and direction).
# OFFLOAD_BASELINE=/path/to/an/older/offload adds a column: that binary's `offload forward` with
# offloads, measured in the same run right after this tree's (a before/after comparison).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-5}"
p="bfw$$"
cd "$root"
swift build -c release --product offload >/dev/null
bin="$root/.build/release/offload"
cleanup() { pkill -f "[i]perf3 -s -p 5299" || true; pkill -f "[s]tats-json /tmp/$p" || true; "$root/scripts/netns-topology.sh" down "$p"; }
trap cleanup EXIT
"$root/scripts/netns-topology.sh" up "$p"
# EGRESS_GSO=on: the gateway's interfaces pass super-packets on (TSO/GSO on), as a NIC with TSO
# would; by default they are off, which charges every row a software segmentation.
if [ "${EGRESS_GSO:-off}" = on ]; then
  for dev in g0 g1; do ip netns exec "$p-gw" ethtool -K "$dev" tso on gso on >/dev/null 2>&1 || true; done
fi
ip netns exec "$p-server" iperf3 -s -p 5299 -D
sleep 0.5
measure() { # family streams -> Gbit/s
  local addr=10.77.2.2; [ "$1" = 6 ] && addr=fd77:2::2
  ip netns exec "$p-client" iperf3 -c "$addr" -p 5299 -t "$secs" -P "$2" -J 2>/dev/null |
    python3 -c "import json,sys; print(f\"{json.load(sys.stdin)['end']['sum_received']['bits_per_second']/1e9:.2f}\")"
}
baseline="${OFFLOAD_BASELINE:-}"
forwarder() { ip netns exec "$p-gw" setsid "${FORWARDER_BIN:-$bin}" forward --ingress ofw0 --egress ofw1 --setup --lan g0 --wan g1 \
  --stats-json "/tmp/$p.json" "$@" >/dev/null 2>&1 < /dev/null & sleep 1.5; }
# stop LABEL GBITS: stops the forwarder and records, for the table below, its CPU seconds (user +
# system, from /proc) per Gbit moved and its system calls (TUN reads + writes) per MB moved.
stop() {
  local pid cpu=0
  pid=$(pgrep -f "[s]tats-json /tmp/$p.json" | tail -1 || true)
  if [ -n "$pid" ]; then cpu=$(awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$pid/stat" 2>/dev/null || echo 0); fi
  pkill -TERM -f "[s]tats-json /tmp/$p" || true; sleep 1
  if [ -n "${1:-}" ]; then
    cost+=("$(python3 "$root/scripts/forwarder-cost.py" "/tmp/$p.json" "$1" "$2" "$cpu" "$secs")")
  fi
}
cost=()
declare -A r
for fam in 4 6; do for n in 1 4; do
  ip netns exec "$p-gw" ethtool -K g0 gro on >/dev/null 2>&1 || true
  r[kgro,$fam,$n]=$(measure $fam $n)
  ip netns exec "$p-gw" ethtool -K g0 gro off >/dev/null 2>&1 || true
  r[k,$fam,$n]=$(measure $fam $n)
  forwarder --keep-ingress-gro; r[f,$fam,$n]=$(measure $fam $n); stop "IPv$fam/$n offload+GSO" "${r[f,$fam,$n]}"
  if [ -n "$baseline" ]; then FORWARDER_BIN="$baseline" forwarder; r[b,$fam,$n]=$(measure $fam $n); stop; fi
  forwarder; r[fk,$fam,$n]=$(measure $fam $n); stop "IPv$fam/$n offload+kGRO" "${r[fk,$fam,$n]}"
  if [ -n "${QUEUES:-}" ]; then
    forwarder --queues "$QUEUES"; r[fq,$fam,$n]=$(measure $fam $n); stop "IPv$fam/$n offload+kGRO ${QUEUES}q" "${r[fq,$fam,$n]}"
  fi
  ip netns exec "$p-gw" ethtool -K g0 gro off >/dev/null 2>&1 || true
  ip netns exec "$p-gw" ethtool -K g1 gro off >/dev/null 2>&1 || true
  forwarder --no-vnet-hdr --keep-ingress-gro; r[fn,$fam,$n]=$(measure $fam $n); stop "IPv$fam/$n offload-off" "${r[fn,$fam,$n]}"
done; done
if [ -n "${QUEUES:-}" ]; then
  printf "\n%-8s %-8s %14s %16s %10s %12s\n" family streams offload+kGRO "kGRO ${QUEUES} queues" "${QUEUES}q/1q" "${QUEUES}q/kernel"
  for fam in 4 6; do for n in 1 4; do
    python3 -c "a,q,k=${r[fk,$fam,$n]},${r[fq,$fam,$n]},${r[kgro,$fam,$n]}; print(f'IPv$fam     {$n:<8} {a:11.2f} Gb/s {q:13.2f} Gb/s {q/max(a,1e-9):9.2f}x {q/max(k,1e-9):11.2f}x')"
  done; done
fi
if [ -n "$baseline" ]; then
  printf "\n%-8s %-8s %14s %14s %10s\n" family streams offload+GSO baseline+GSO new/base
  for fam in 4 6; do for n in 1 4; do
    python3 -c "c,b=${r[f,$fam,$n]},${r[b,$fam,$n]}; print(f'IPv$fam     {$n:<8} {c:11.2f} Gb/s {b:11.2f} Gb/s {c/max(b,1e-9):9.2f}x')"
  done; done
fi
printf "\n%-8s %-8s %12s %12s %14s %14s %14s %10s %10s %12s\n" family streams kernel+GRO kernel-noGRO offload+GSO offload+kGRO offload-off on/off on/kernel kGRO/kernel
for fam in 4 6; do for n in 1 4; do
  python3 -c "a,b,c,e,d=${r[kgro,$fam,$n]},${r[k,$fam,$n]},${r[f,$fam,$n]},${r[fk,$fam,$n]},${r[fn,$fam,$n]}; print(f'IPv$fam     {$n:<8} {a:9.2f} Gb/s {b:9.2f} Gb/s {c:11.2f} Gb/s {e:11.2f} Gb/s {d:11.2f} Gb/s {c/max(d,1e-9):9.2f}x {c/max(a,1e-9):9.2f}x {e/max(a,1e-9):11.2f}x')"
done; done
printf "(offload+GSO: userspace GRO alone, the gateway's GRO off; offload+kGRO: --setup's default, the kernel's GRO on at the ingress; egress GSO %s)\n" "${EGRESS_GSO:-off}"
printf "\nThe forwarder's cost (its threads' user + system CPU; its TUN reads and writes):\n"
printf "%s\n" "${cost[@]}"
