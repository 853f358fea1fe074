#!/usr/bin/env bash
# iperf3 TCP goodput through an encrypted tunnel between two gateways
# (scripts/netns-tunnel-topology.sh: client — gw1 — underlay (1500) — gw2 — server), one run,
# every row measured in turn in the same run:
#   strongswan   strongSwan 5.9 with kernel-libipsec (userspace ESP over TUN), IKEv2, aes128gcm16, ESP in UDP
#   wireguard    wireguard-go from Debian (userspace, no TUN offloads), ChaCha20-Poly1305
#   ipsec-off    `offload ipsec` with offloads off (--no-vnet-hdr: a system call per packet and datagram), aes128gcm16
#   ipsec        `offload ipsec` with GRO and GSO on both sides, aes128gcm16 (IPSEC_ALGORITHM=chacha20poly1305 for the other)
#   gtpu         `offload tunnel` (GTP-U, unencrypted) with GRO and GSO: what encryption costs
# 1 and 4 streams, client -> server and server -> client (-R). For each run, the two gateways'
# processes are measured with perf: CPU seconds per Gbit (task-clock) and system calls per MB.
# The gateways' inner interfaces have GRO on (as a NIC does) for every row.
# Root, iperf3, perf, strongswan-charon + libcharon-extra-plugins, wireguard-go + wireguard-tools.
# Usage: scripts/bench-ipsec.sh [seconds]   (default 5)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-5}"
algorithm="${IPSEC_ALGORITHM:-aes128gcm16}"
p="bip$$"
cd "$root"
swift build -c release --product offload >/dev/null
bin="$root/.build/release/offload"
tmp="$(mktemp -d)"
cleanup() {
  pkill -f "[i]perf3 -s -p 5299" || true
  pkill -f "[s]tats-json $tmp" || true
  "$root/scripts/strongswan-netns.sh" down "$p" "$tmp/sw" 2>/dev/null || true
  "$root/scripts/wireguard-netns.sh" down "$p" "$tmp/wg" 2>/dev/null || true
  "$root/scripts/netns-tunnel-topology.sh" down "$p"
  rm -rf "$tmp"
}
trap cleanup EXIT
"$root/scripts/netns-tunnel-topology.sh" up "$p"
ip netns exec "$p-gw1" ethtool -K g0 gro on >/dev/null 2>&1 || true
ip netns exec "$p-gw2" ethtool -K g1 gro on >/dev/null 2>&1 || true
ip netns exec "$p-server" iperf3 -s -p 5299 -D
sleep 0.5

# SA files for offload ipsec: gw1 sends with 0x1001, gw2 with 0x2001; keys made for this run.
key_bytes=20; [ "$algorithm" = aes128gcm16 ] || key_bytes=36
k1=$(head -c $key_bytes /dev/urandom | od -An -tx1 | tr -d ' \n'); k2=$(head -c $key_bytes /dev/urandom | od -An -tx1 | tr -d ' \n')
for n in 1 2; do
  if [ $n = 1 ]; then o=0x1001; ok=$k1; i=0x2001; ik=$k2; else o=0x2001; ok=$k2; i=0x1001; ik=$k1; fi
  (umask 077; cat > "$tmp/sa$n.conf" <<CONF
tunnels {
  site {
    esp_proposals = $algorithm
    local_ts = 10.88.$n.0/24
    remote_ts = 10.88.$((3 - n)).0/24
    out {
      spi = $o
      key = 0x$ok
    }
    in {
      spi = $i
      key = 0x$ik
    }
  }
}
CONF
  )
done

gateway_pids() { # row -> the two gateways' process ids, comma-separated
  case "$1" in
  strongswan) echo "$(cat "$tmp/sw/charon1.pid"),$(cat "$tmp/sw/charon2.pid")" ;;
  wireguard) pgrep -f "[w]ireguard-go -f wgo" | paste -sd, ;;
  *) pgrep -f "[s]tats-json $tmp/gw" | paste -sd, ;;
  esac
}
start_row() {
  local n
  case "$1" in
  strongswan) "$root/scripts/strongswan-netns.sh" up "$p" "$tmp/sw" aes128gcm16 ;;
  wireguard) "$root/scripts/wireguard-netns.sh" up "$p" "$tmp/wg" ;;
  ipsec|ipsec-off|gtpu)
    for n in 1 2; do
      local me=192.168.88.$n peer=192.168.88.$((3 - n)) far=10.88.$((3 - n)).0/24 what
      case "$1" in
      ipsec) what="ipsec --sa $tmp/sa$n.conf --state $tmp/sa$n.seq --device ipsec0" ;;
      ipsec-off) what="ipsec --sa $tmp/sa$n.conf --state $tmp/sa$n.seq --device ipsec0 --no-vnet-hdr" ;;
      gtpu) what="tunnel --id 7 --device gtp0" ;;
      esac
      ip netns exec "$p-gw$n" setsid $bin $what --local "$me" --remote "$peer" --setup --route "$far" \
        --stats-json "$tmp/gw$n.json" >"$tmp/gw$n.log" 2>&1 </dev/null &
    done
    sleep 1.5 ;;
  esac
}
stop_row() {
  case "$1" in
  strongswan) "$root/scripts/strongswan-netns.sh" down "$p" "$tmp/sw" ;;
  wireguard) "$root/scripts/wireguard-netns.sh" down "$p" "$tmp/wg" ;;
  *) pkill -TERM -f "[s]tats-json $tmp" || true; sleep 1.2 ;;
  esac
}
measure() { # row streams direction(up|down) -> "gbps cpu_s_per_gbit syscalls_per_mb"
  local reverse=""; [ "$3" = down ] && reverse="-R"
  local pids; pids=$(gateway_pids "$1")
  perf stat -x, -e task-clock,raw_syscalls:sys_enter -p "$pids" -o "$tmp/perf.txt" -- sleep "$secs" 2>/dev/null &
  local perfpid=$!
  local gbps
  gbps=$(ip netns exec "$p-client" timeout $((secs + 15)) iperf3 -c 10.88.2.2 -p 5299 -t "$secs" -P "$2" $reverse -J 2>/dev/null |
    python3 -c "import json,sys
try: print(f\"{json.load(sys.stdin)['end']['sum_received']['bits_per_second']/1e9:.3f}\")
except Exception: print('0')")
  wait $perfpid || true
  python3 - "$tmp/perf.txt" "$gbps" "$secs" <<'PY'
import sys
path, gbps, secs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
ms = calls = 0.0
for line in open(path):
    f = line.strip().split(",")
    if len(f) > 2 and f[2] == "task-clock": ms = float(f[0] or 0)
    if len(f) > 2 and f[2].startswith("raw_syscalls:sys_enter"): calls = float(f[0] or 0)
gbit = max(gbps * secs, 1e-9)
print(f"{gbps:.2f} {ms / 1000 / gbit:.3f} {calls / (gbit * 125):.1f}")
PY
}
rows=(strongswan wireguard ipsec-off ipsec gtpu)
declare -A r
for row in "${rows[@]}"; do
  if ! start_row "$row"; then echo "$row: could not start (skipped)" >&2; for k in 1,up 4,up 1,down 4,down; do r[$row,$k]="0 0 0"; done; continue; fi
  for streams in 1 4; do
    for dir in up down; do r[$row,$streams,$dir]=$(measure "$row" "$streams" "$dir"); done
  done
  stop_row "$row"
done
printf "\nESP-in-UDP gateways (offload ipsec: %s), %s s per run, 1500-byte underlay, one run. Gbit/s | CPU s per Gbit (both gateways) | system calls per MB\n" "$algorithm" "$secs"
printf "%-11s" row
for k in "1 up" "4 up" "1 down" "4 down"; do set -- $k; printf " | %-25s" "$1 stream(s) $([ $2 = up ] && echo c->s || echo s->c)"; done
printf "\n"
for row in "${rows[@]}"; do
  printf "%-11s" "$row"
  for k in "1 up" "4 up" "1 down" "4 down"; do
    set -- $k; set -- ${r[$row,$1,$2]:-0 0 0}
    printf " | %6s %7s %9s" "$1" "$2" "$3"
  done
  printf "\n"
done
printf "\nRatios of offload ipsec (goodput):\n"
for k in "1 up" "4 up" "1 down" "4 down"; do
  set -- $k
  python3 -c "
g=lambda row: float('${r[ipsec,$1,$2]:-0 0 0}'.split()[0]) if row=='ipsec' else float({'strongswan':'${r[strongswan,$1,$2]:-0}','wireguard':'${r[wireguard,$1,$2]:-0}','ipsec-off':'${r[ipsec-off,$1,$2]:-0}','gtpu':'${r[gtpu,$1,$2]:-0}'}[row].split()[0])
i=g('ipsec'); d=lambda x: i/x if x>0 else float('nan')
print(f'  $1 stream(s) $([ $2 = up ] && echo c-\>s || echo s-\>c): {d(g(\"strongswan\")):.2f}x strongSwan-libipsec (goal 5), {d(g(\"wireguard\")):.2f}x wireguard-go (goal 4), {d(g(\"ipsec-off\")):.2f}x offloads off (goal 3), {d(g(\"gtpu\")):.2f}x unencrypted GTP-U (goal 0.8)')"
done
