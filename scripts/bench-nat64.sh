#!/usr/bin/env bash
# Stateful NAT64 (RFC 6146): iperf3 TCP goodput from an IPv6-only client to an IPv4-only server on
# the gateway of scripts/netns-topology.sh, 1 and 4 streams, client->server and server->client
# (iperf3 -R), one run, every row measured in turn:
#   kernel       the kernel forwarding plain IPv4 (dual-stack topology, no translator): the reference
#   tayga+nat44  the usual stateful NAT64 on Debian without Jool: Tayga on a TUN device with a dynamic
#                pool (each new IPv6 source gets an address of 192.168.255.0/24, no static map), and
#                nftables masquerading that pool out of the gateway's IPv4 interface g1
#   offload      `offload nat64` between two TUN devices with GRO and GSO (pool4 198.51.100.1)
# The IPv6 client reaches the server 10.77.2.2 as 2001:db8:64::a4d:202 through the network-specific
# prefix 2001:db8:64::/96 in both translator rows (Debian's Tayga refuses private IPv4 addresses
# behind 64:ff9b::/96). The gateway's GRO is on on both of its interfaces in every row (as a NIC
# does), so the ingress of either direction sees super-packets. For tayga and offload, the CPU
# seconds of the translator's process per run (utime + stime from /proc/PID/stat, all its threads;
# the kernel's forwarding and nftables work in softirq is not in it).
# Root, iperf3, nft and python3 needed; tayga optional (its row is skipped when absent); the offload
# row is skipped when `offload nat64 --help` fails (a build without the command).
# Usage: scripts/bench-nat64.sh [seconds]   (default 5)
#   OFFLOAD=path   the offload executable (default: swift build -c release --product offload)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-5}"
case "$secs" in '' | *[!0-9]*) echo "usage: $0 [seconds]" >&2; exit 2 ;; esac
p="bn64$$"
cd "$root"
if [ -z "${OFFLOAD:-}" ]; then
  swift build -c release --product offload >/dev/null
  OFFLOAD="$root/.build/release/offload"
fi
bin="$OFFLOAD"
tmp="$(mktemp -d)"
pids=()      # every process this script started in the background, ended by id at exit
topology_up=0
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  [ -s "$tmp/iperf3.pid" ] && kill "$(cat "$tmp/iperf3.pid")" 2>/dev/null || true
  sleep 0.3
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [ "$topology_up" = 1 ]; then
    ip netns exec "$p-gw" nft delete table ip bnat64 2>/dev/null || true
    ip -n "$p-gw" link del tayga0 2>/dev/null || true
  fi
  "$root/scripts/netns-topology.sh" down "$p"
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pool6=2001:db8:64::/96
pool4=198.51.100.1
server6=2001:db8:64::a4d:202   # 10.77.2.2 through the prefix
tayga_pool=192.168.255.0/24
hz=$(getconf CLK_TCK)
streams="1 4"
dirs="up down"                 # up: client->server; down: server->client (iperf3 -R)

measure() { # address streams dir -> Gbit/s (0 when the run fails)
  local reverse=(); [ "$3" = down ] && reverse=(-R)
  ip netns exec "$p-client" timeout $((secs + 15)) iperf3 -c "$1" -p 5299 -t "$secs" -P "$2" "${reverse[@]}" \
    --connect-timeout 3000 -J 2>/dev/null |
    python3 -c "import json,sys
try: print(f\"{json.load(sys.stdin)['end']['sum_received']['bits_per_second']/1e9:.2f}\")
except Exception: print('0')" || true
}
ticks() { # pid -> utime + stime in clock ticks (0 when gone)
  awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
cpu_s() { python3 -c "import sys; print(f'{(int(sys.argv[2]) - int(sys.argv[1])) / int(sys.argv[3]):.2f}')" "$1" "$2" "$hz"; }
gro_on() { for dev in g0 g1; do ip netns exec "$p-gw" ethtool -K "$dev" gro on >/dev/null 2>&1 || true; done; }
up() { # [siit]: the topology, GRO on at the gateway, the iperf3 server
  "$root/scripts/netns-topology.sh" up "$p" "$@"
  topology_up=1
  gro_on
  ip netns exec "$p-server" iperf3 -s -p 5299 -D -I "$tmp/iperf3.pid"
  sleep 0.5
}
down() {
  [ -s "$tmp/iperf3.pid" ] && kill "$(cat "$tmp/iperf3.pid")" 2>/dev/null || true
  rm -f "$tmp/iperf3.pid"
  "$root/scripts/netns-topology.sh" down "$p"
  topology_up=0
}
summarize() { # stats-json streams dir: one line of what offload nat64 counted
  python3 - "$@" <<'EOF' || true
import json, sys
s = json.load(open(sys.argv[1]))
def side(name):
    x = s.get(name, {})
    return (f"{x.get('packetsIn', 0)} in ({x.get('superPacketsOut', 0)} super-packets of "
            f"{x.get('segmentsInSuperPackets', 0)} segments), dropped {x.get('dropped', 0) + x.get('stageDropped', 0)}, "
            f"write errors {x.get('writeErrors', 0)}")
sessions = sum(m.get("value", 0) for x in s.values() if isinstance(x, dict) for m in x.get("stage", [])
               if m.get("name") == "nat64_sessions")
print(f"offload nat64 ({sys.argv[2]} streams, {sys.argv[3]}): IPv6->IPv4 {side('lan_to_wan')}; "
      f"IPv4->IPv6 {side('wan_to_lan')}; sessions at exit {sessions}")
EOF
}
declare -A r cpu

# The kernel forwarding plain IPv4 (client and server dual-stack), gateway GRO on.
up
for n in $streams; do for d in $dirs; do r[k,$n,$d]=$(measure 10.77.2.2 "$n" "$d"); done; done
down

# The translators (client IPv6-only, server IPv4-only).
up siit
have_tayga=0
if command -v tayga >/dev/null; then
  have_tayga=1
  cat >"$tmp/tayga.conf" <<EOF
tun-device tayga0
ipv4-addr 192.168.255.1
prefix $pool6
dynamic-pool $tayga_pool
data-dir $tmp/tayga
EOF
  mkdir -p "$tmp/tayga"
  ip netns exec "$p-gw" tayga -c "$tmp/tayga.conf" --mktun >/dev/null
  ip -n "$p-gw" link set tayga0 up
  ip -n "$p-gw" route add $tayga_pool dev tayga0
  ip -n "$p-gw" route add $pool6 dev tayga0
  ip netns exec "$p-gw" nft -f - <<EOF
table ip bnat64 {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr $tayga_pool oifname "g1" counter masquerade
  }
}
EOF
  # `ip netns exec` execs its command: $! is Tayga's own process.
  ip netns exec "$p-gw" tayga -c "$tmp/tayga.conf" --nodetach >"$tmp/tayga.log" 2>&1 </dev/null &
  tayga_pid=$!
  pids+=("$tayga_pid")
  sleep 1
  for n in $streams; do for d in $dirs; do
    before=$(ticks "$tayga_pid")
    r[t,$n,$d]=$(measure $server6 "$n" "$d")
    cpu[t,$n,$d]=$(cpu_s "$before" "$(ticks "$tayga_pid")")
  done; done
  # The nat chain sees the first packet of each connection: the count shows the masquerade was used.
  masqueraded=$(ip netns exec "$p-gw" nft list table ip bnat64 | sed -n 's/.*counter packets \([0-9]*\).*/\1/p')
  echo "tayga+nat44: nftables masqueraded ${masqueraded:-?} new connections of $tayga_pool out of g1"
  kill -0 "$tayga_pid" 2>/dev/null || { echo "bench-nat64: tayga exited during its row:" >&2; cat "$tmp/tayga.log" >&2; }
  kill -TERM "$tayga_pid" 2>/dev/null || true
  wait "$tayga_pid" 2>/dev/null || true
  ip netns exec "$p-gw" nft delete table ip bnat64
  ip -n "$p-gw" route del $pool6 dev tayga0
  ip -n "$p-gw" link del tayga0
fi

have_offload=0
if "$bin" nat64 --help >"$tmp/nat64-help.txt" 2>&1; then
  have_offload=1
  # Its state file in this run's directory, not the shared default (another translator may run).
  status_file=()
  grep -q -- --status-file "$tmp/nat64-help.txt" && status_file=(--status-file "$tmp/nat64.status")
  for n in $streams; do for d in $dirs; do
    stats="$tmp/nat64-$n-$d.json"
    ip netns exec "$p-gw" "$bin" nat64 --ingress nat64-6 --egress nat64-4 --pool6 $pool6 --pool4 $pool4 \
      --setup --stats-json "$stats" "${status_file[@]}" >"$tmp/nat64-$n-$d.log" 2>&1 </dev/null &
    pid=$!
    pids+=("$pid")
    sleep 1.5
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "bench-nat64: offload nat64 exited before its run ($n streams, $d):" >&2
      cat "$tmp/nat64-$n-$d.log" >&2
      r[o,$n,$d]=0; cpu[o,$n,$d]=0
      continue
    fi
    before=$(ticks "$pid")
    r[o,$n,$d]=$(measure $server6 "$n" "$d")
    cpu[o,$n,$d]=$(cpu_s "$before" "$(ticks "$pid")")
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "bench-nat64: offload nat64 exited during its run ($n streams, $d):" >&2
      cat "$tmp/nat64-$n-$d.log" >&2
    fi
    kill -TERM "$pid" 2>/dev/null || true
    status=0; wait "$pid" 2>/dev/null || status=$?
    [ "$status" = 0 ] || { echo "bench-nat64: offload nat64 ($n streams, $d) exit status $status; log:" >&2; cat "$tmp/nat64-$n-$d.log" >&2; }
    [ -s "$stats" ] && summarize "$stats" "$n" "$d"
  done; done
else
  echo "bench-nat64: '$bin nat64 --help' fails (no nat64 command in this build): the offload row is skipped" >&2
fi
down

cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
printf "\nCPU: %s (%s CPUs)   commit: %s\n" "${cpu_model:-unknown}" "$(nproc)" "$commit"
printf "IPv6 client -> IPv4 server through a stateful NAT64, %s s per run, one run (Gbit/s; CPU s of the translator's process per run)\n" "$secs"
printf "%-7s %-5s %8s %12s %8s %11s %11s %10s %11s\n" streams dir kernel tayga+nat44 offload off/tayga off/kernel tayga-cpu offload-cpu
for n in $streams; do for d in $dirs; do
  python3 - "$n" "$d" "${r[k,$n,$d]}" "${r[t,$n,$d]:-0}" "${r[o,$n,$d]:-0}" "${cpu[t,$n,$d]:-0}" "${cpu[o,$n,$d]:-0}" \
    "$have_tayga" "$have_offload" <<'EOF'
import sys
n, d = sys.argv[1], {"up": "c->s", "down": "s->c"}[sys.argv[2]]
k, t, o, tc, oc = map(float, sys.argv[3:8]); have_t, have_o = sys.argv[8] == "1", sys.argv[9] == "1"
na = "n/a"
cell = lambda ok, v, w, f=".2f": f"{v:{w}{f}}" if ok else f"{na:>{w}}"
ratio = lambda ok, a, b, w: f"{a / b:{w - 1}.2f}x" if ok and b > 0 else f"{na:>{w}}"
print(f"{n:<7} {d:<5} {k:8.2f} {cell(have_t, t, 12)} {cell(have_o, o, 8)} {ratio(have_o and have_t, o, t, 11)}"
      f" {ratio(have_o, o, k, 11)} {cell(have_t, tc, 10)} {cell(have_o, oc, 11)}")
EOF
done; done
