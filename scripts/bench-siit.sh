#!/usr/bin/env bash
# iperf3 TCP goodput from an IPv6-only client to an IPv4-only server through a translator on the
# gateway of scripts/netns-topology.sh (siit mode), one run, every row measured in turn:
#   kernel   the kernel forwarding plain IPv4 (dual-stack topology), GRO off on the gateway: what
#            "turn GRO off on a translator" leaves an operator with (and GRO on, for reference)
#   tayga    Tayga (Debian's package) on a TUN device, static map for the client
#   off      `offload siit --no-vnet-hdr`: this translator with no offloads at all
#   offload  `offload siit` with GRO and GSO (the gateway's ingress GRO on: super-packets arrive whole)
# Root, iperf3 and python3 needed; tayga optional (its row is skipped when absent).
# Usage: scripts/bench-siit.sh [seconds]   (default 5)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-5}"
p="bsx$$"
cd "$root"
swift build -c release --product offload >/dev/null
bin="$root/.build/release/offload"
tmp="$(mktemp -d)"
cleanup() {
  pkill -f "[i]perf3 -s -p 5299" || true
  pkill -f "[s]tats-json $tmp" || true
  pkill -f "[t]ayga -c $tmp" || true
  "$root/scripts/netns-topology.sh" down "$p"
  rm -rf "$tmp"
}
trap cleanup EXIT
pool6=2001:db8:64::/96
server6=2001:db8:64::a4d:202   # 10.77.2.2 through the prefix
measure() { # address streams -> Gbit/s (0 when the run fails)
  ip netns exec "$p-client" timeout $((secs + 15)) iperf3 -c "$1" -p 5299 -t "$secs" -P "$2" -J 2>/dev/null |
    python3 -c "import json,sys
try: print(f\"{json.load(sys.stdin)['end']['sum_received']['bits_per_second']/1e9:.2f}\")
except Exception: print('0')"
}
gro() { ip netns exec "$p-gw" ethtool -K g0 gro "$1" >/dev/null 2>&1 || true; }
declare -A r

# The kernel forwarding plain IPv4 (client and server dual-stack).
"$root/scripts/netns-topology.sh" up "$p"
ip netns exec "$p-server" iperf3 -s -p 5299 -D
sleep 0.5
for n in 1 4; do
  gro off; r[k,$n]=$(measure 10.77.2.2 $n)
  gro on; r[kg,$n]=$(measure 10.77.2.2 $n)
done
pkill -f "[i]perf3 -s -p 5299" || true
"$root/scripts/netns-topology.sh" down "$p"

# The translators (client IPv6-only, server IPv4-only).
"$root/scripts/netns-topology.sh" up "$p" siit
ip netns exec "$p-server" iperf3 -s -p 5299 -D
sleep 0.5
gro on
translator() {
  ip netns exec "$p-gw" setsid "$bin" siit --ingress siit6 --egress siit4 --pool6 $pool6 \
    --eam fd77:1::/120=198.18.1.0/24 --setup --route4 198.18.1.0/24 --stats-json "$tmp/stats.json" "$@" \
    >"$tmp/siit.log" 2>&1 </dev/null &
  sleep 1.5
}
stop() { pkill -TERM -f "[s]tats-json $tmp" || true; sleep 1; }
have_tayga=0
if command -v tayga >/dev/null; then
  have_tayga=1
  cat >"$tmp/tayga.conf" <<EOF
tun-device tayga0
ipv4-addr 198.18.1.254
prefix $pool6
map 198.18.1.2 fd77:1::2
data-dir $tmp
EOF
  ip netns exec "$p-gw" tayga -c "$tmp/tayga.conf" --mktun >/dev/null
  ip -n "$p-gw" link set tayga0 up
  ip -n "$p-gw" route add 198.18.1.0/24 dev tayga0
  ip -n "$p-gw" route add $pool6 dev tayga0
  ip netns exec "$p-gw" setsid tayga -c "$tmp/tayga.conf" --nodetach >"$tmp/tayga.log" 2>&1 </dev/null &
  sleep 1
  for n in 1 4; do r[t,$n]=$(measure $server6 $n); done
  pkill -f "[t]ayga -c $tmp" || true
  sleep 0.5
  ip -n "$p-gw" link del tayga0 2>/dev/null || true
fi
for n in 1 4; do
  translator --no-vnet-hdr; r[off,$n]=$(measure $server6 $n); stop
  translator; r[on,$n]=$(measure $server6 $n); stop
done

printf "\nIPv6 client -> IPv4 server, %s s per run, one run (Gbit/s)\n" "$secs"
printf "%-8s %12s %12s %10s %12s %12s %12s %12s\n" streams kernel-noGRO kernel+GRO tayga siit-off siit+GSO vs-tayga vs-kernel
for n in 1 4; do
  python3 - "${r[k,$n]}" "${r[kg,$n]}" "${r[t,$n]:-0}" "${r[off,$n]}" "${r[on,$n]}" "$n" "$have_tayga" <<'EOF'
import sys
k, kg, t, off, on = map(float, sys.argv[1:6]); n = sys.argv[6]; have = sys.argv[7] == "1"
vs_t = f"{on / t:11.2f}x" if have and t > 0 else f"{'n/a':>12}"
print(f"{n:<8} {k:12.2f} {kg:12.2f} {t if have else float('nan'):10.2f} {off:12.2f} {on:12.2f} {vs_t} {on / max(k, 1e-9):11.2f}x")
EOF
done
