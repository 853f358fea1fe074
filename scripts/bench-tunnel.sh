#!/usr/bin/env bash
# iperf3 TCP goodput through a tunnel between two gateways (scripts/netns-tunnel-topology.sh:
# client — gw1 — underlay — gw2 — server), one run, each row measured in turn:
#   kernel-vxlan   the kernel's VXLAN device on both gateways (the yardstick)
#   gtpu-off       `offload tunnel` (GTP-U) with offloads off: packet by packet, a syscall per datagram
#   gtpu           `offload tunnel` with GRO and GSO (TUN virtio headers, UDP_SEGMENT, UDP_GRO)
#   vxlan          `offload tunnel --protocol vxlan` on both gateways (TAP devices), GRO and GSO
# and, from the endpoints' counters, system calls per MB in each direction (TUN reads and writes,
# sendmsg and recvmsg on the underlay socket).
# The gateways' inner interfaces (g0, g1) have GRO on, as a NIC in production does, for every row
# (GATEWAY_GRO=off turns it off: then the endpoint merges in user space and reads every packet).
# Root, iperf3 and python3 needed. Usage: scripts/bench-tunnel.sh [seconds]   (default 5)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-5}"
p="btn$$"
cd "$root"
swift build -c release --product offload >/dev/null
bin="$root/.build/release/offload"
tmp="$(mktemp -d)"
cleanup() {
  pkill -f "[i]perf3 -s -p 5299" || true
  pkill -f "[s]tats-json $tmp" || true
  "$root/scripts/netns-tunnel-topology.sh" down "$p"
  rm -rf "$tmp"
}
trap cleanup EXIT
"$root/scripts/netns-tunnel-topology.sh" up "$p"
ip netns exec "$p-gw1" ethtool -K g0 gro "${GATEWAY_GRO:-on}" >/dev/null 2>&1 || true
ip netns exec "$p-gw2" ethtool -K g1 gro "${GATEWAY_GRO:-on}" >/dev/null 2>&1 || true
ip netns exec "$p-server" iperf3 -s -p 5299 -D
sleep 0.5
measure() { # streams -> Gbit/s (0 when the run fails)
  ip netns exec "$p-client" timeout $((secs + 15)) iperf3 -c 10.88.2.2 -p 5299 -t "$secs" -P "$1" -J 2>/dev/null |
    python3 -c "import json,sys
try: print(f\"{json.load(sys.stdin)['end']['sum_received']['bits_per_second']/1e9:.2f}\")
except Exception: print('0')"
}
kernel_vxlan() { # up|down
  local n
  for n in 1 2; do
    local me=192.168.88.$n peer=192.168.88.$((3 - n)) far=10.88.$((3 - n)).0/24 far6=fd88:$((3 - n))::/64
    if [ "$1" = up ]; then
      ip -n "$p-gw$n" link add vx0 type vxlan id 7 local "$me" remote "$peer" dstport 4789 dev u$((n - 1))
      ip -n "$p-gw$n" addr add 172.31.0.$n/30 dev vx0
      ip -n "$p-gw$n" link set vx0 up
      ip -n "$p-gw$n" route add "$far" via 172.31.0.$((3 - n)) dev vx0
    else
      ip -n "$p-gw$n" link del vx0 2>/dev/null || true
    fi
  done
}
endpoints() { # extra arguments...
  local n
  for n in 1 2; do
    local me=192.168.88.$n peer=192.168.88.$((3 - n)) far=10.88.$((3 - n)).0/24
    ip netns exec "$p-gw$n" setsid "$bin" tunnel --device gtp0 --local "$me" --remote "$peer" --id 7 --setup \
      --route "$far" --stats-json "$tmp/gw$n.json" "$@" >"$tmp/gw$n.log" 2>&1 </dev/null &
  done
  sleep 1.5
}
vxlan_endpoints() {
  local n
  for n in 1 2; do
    local me=192.168.88.$n peer=192.168.88.$((3 - n)) far=10.88.$((3 - n)).0/24
    ip netns exec "$p-gw$n" setsid "$bin" tunnel --protocol vxlan --device vx0 --local "$me" --remote "$peer" --id 7 \
      --setup --address 172.31.0.$n/30 --route "$far" --next-hop 172.31.0.$((3 - n)) \
      --stats-json "$tmp/gw$n.json" >"$tmp/gw$n.log" 2>&1 </dev/null &
  done
  sleep 1.5
}
stop() { pkill -TERM -f "[s]tats-json $tmp" || true; sleep 1.2; }
syscalls() { # label mb -> one line: per-MB system calls from both endpoints' counters
  python3 - "$tmp/gw1.json" "$tmp/gw2.json" "$1" "$2" <<'EOF'
import json, sys
g1, g2 = (json.load(open(f)) for f in sys.argv[1:3])
label, mb = sys.argv[3], float(sys.argv[4])
def c(d, name):
    return sum(x["value"] for x in d.get("stage", []) if x["name"] == name)
up1, down2 = g1["lan_to_wan"], g2["wan_to_lan"]
print(f"{label:<10} client->server per MB: gw1 TUN reads {up1['packetsIn']/mb:7.1f}, sendmsg {c(up1,'tunnel_sendmsg')/mb:7.1f};"
      f" gw2 recvmsg {c(down2,'tunnel_recvmsg')/mb:7.1f}, TUN writes {down2['packetsOut']/mb:7.1f}")
EOF
}
declare -A r
kernel_vxlan up
for n in 1 4; do r[kv,$n]=$(measure $n); done
kernel_vxlan down
lines=()
for n in 1 4; do
  endpoints --no-vnet-hdr
  r[off,$n]=$(measure $n)
  stop
  mb=$(python3 -c "print(max(1e-9, ${r[off,$n]} * 1e9 * $secs / 8 / 1e6))")
  lines+=("$(syscalls "off/$n" "$mb")")
  endpoints
  r[on,$n]=$(measure $n)
  stop
  mb=$(python3 -c "print(max(1e-9, ${r[on,$n]} * 1e9 * $secs / 8 / 1e6))")
  lines+=("$(syscalls "gtpu/$n" "$mb")")
  vxlan_endpoints
  r[vx,$n]=$(measure $n)
  stop
  mb=$(python3 -c "print(max(1e-9, ${r[vx,$n]} * 1e9 * $secs / 8 / 1e6))")
  lines+=("$(syscalls "vxlan/$n" "$mb")")
done
printf "\nclient -> server through the tunnel, %s s per run, gateway GRO %s, one run (Gbit/s)\n" "$secs" "${GATEWAY_GRO:-on}"
printf "%-8s %13s %10s %10s %10s %14s %14s %16s\n" streams kernel-vxlan gtpu-off gtpu vxlan gtpu/kernel gtpu/off vxlan/kernel
for n in 1 4; do
  python3 -c "k,o,g,v=${r[kv,$n]},${r[off,$n]},${r[on,$n]},${r[vx,$n]}; print(f'{$n:<8} {k:13.2f} {o:10.2f} {g:10.2f} {v:10.2f} {g/max(k,1e-9):13.2f}x {g/max(o,1e-9):13.2f}x {v/max(k,1e-9):15.2f}x')"
done
printf "\nSystem calls per MB of goodput (the endpoints' counters):\n"
printf "%s\n" "${lines[@]}"
