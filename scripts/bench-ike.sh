#!/usr/bin/env bash
# IKEv2 between the gateways of scripts/netns-tunnel-topology.sh (client — gw1 — underlay (1500)
# — gw2 — server), one run, every row measured in turn in the same run, AES-GCM-128:
#   strongswan   strongSwan 5.9 (charon, kernel-libipsec) at both ends
#   offload-sw   offload ipsec --config on gw1 (it initiates), strongSwan on gw2
#   offload      offload ipsec --config at both ends (offloads on, ESN)
# Per row: the handshake (the first IKE_SA_INIT on gw1's underlay to the first ESP packet, with a
# ping waiting for the tunnel) and iperf3 TCP goodput client -> server and back (SECS each).
# Then the rekey row: offload-sw with gw1 rekeying its CHILD_SA every 4 s while iperf3 runs 20 s;
# each second that holds a rekey (a CREATE_CHILD_SA on the underlay) against its neighbours.
# Root, iperf3, tcpdump, strongswan-charon + strongswan-swanctl + libcharon-extra-plugins.
# Usage: scripts/bench-ike.sh [seconds]   (default 5)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
secs="${1:-5}"
p="bike$$"
cd "$root"
swift build -c release --product offload >/dev/null
bin="$root/.build/release/offload"
tmp="$(mktemp -d)"
cleanup() {
  pkill -f "[i]perf3 -s -p 5299" || true
  pkill -f "[s]tats-json $tmp" || true
  pkill -f "[t]cpdump -i u0 -U -s 96 -w $tmp" || true
  "$root/scripts/strongswan-netns.sh" down "$p" "$tmp/sw" 2>/dev/null || true
  "$root/scripts/netns-tunnel-topology.sh" down "$p"
  rm -rf "$tmp"
}
trap cleanup EXIT
"$root/scripts/netns-tunnel-topology.sh" up "$p"
ip netns exec "$p-server" iperf3 -s -p 5299 -D
sleep 0.5

ike_config() { # n start_action child_extra esp
  local n="$1" peer=$((3 - $1))
  (umask 077; cat > "$tmp/ike$n.conf" <<CONF
connections {
  site {
    local_addrs = 192.168.88.$n
    remote_addrs = 192.168.88.$peer
    proposals = aes128gcm16-prfsha256-x25519
    local { auth = psk
      id = gw$n }
    remote { auth = psk
      id = gw$peer }
    children {
      net {
        local_ts = 10.88.$n.0/24
        remote_ts = 10.88.$peer.0/24
        esp_proposals = $4
        start_action = $2
        $3
      }
    }
  }
}
secrets {
  ike-site { id = gw$peer
    secret = "offload-bench-psk-not-a-secret" }
}
CONF
  )
}
start_offload() { # n
  local n="$1" far=10.88.$((3 - $1)).0/24
  ip netns exec "$p-gw$n" setsid "$bin" ipsec --config "$tmp/ike$n.conf" --device ipsec0 --setup --route "$far" \
    --stats-json "$tmp/gw$n.json" >"$tmp/gw$n.log" 2>&1 </dev/null &
}
start_row() { # row [child_extra]
  case "$1" in
  strongswan) "$root/scripts/strongswan-netns.sh" up "$p" "$tmp/sw" aes128gcm16 >/dev/null ;;
  offload-sw)
    "$root/scripts/strongswan-netns.sh" peer "$p" "$tmp/sw" 2 aes128gcm16
    ike_config 1 start "${2:-}" aes128gcm16-esn-noesn
    start_offload 1 ;;
  offload)
    ike_config 2 none "" aes128gcm16-esn; ike_config 1 start "" aes128gcm16-esn
    start_offload 2; sleep 0.3; start_offload 1 ;;
  esac
}
stop_row() {
  pkill -TERM -f "[s]tats-json $tmp" || true
  "$root/scripts/strongswan-netns.sh" down "$p" "$tmp/sw" 2>/dev/null || true
  sleep 1.2
}
capture() { ip netns exec "$p-gw1" setsid tcpdump -i u0 -U -s 96 -w "$tmp/$1.pcap" udp port 500 or udp port 4500 >/dev/null 2>&1 </dev/null & sleep 0.5; }
uncapture() { pkill -INT -f "[t]cpdump -i u0 -U -s 96 -w $tmp/$1.pcap" || true; sleep 0.3; }
first_time() { { tcpdump -r "$1" -tt -nn "$2" 2>/dev/null || true; } | awk 'NR == 1 { print $1 }'; }
goodput() { # -R or empty -> Gbit/s
  ip netns exec "$p-client" timeout $((secs + 15)) iperf3 -c 10.88.2.2 -p 5299 -t "$secs" $1 -J 2>/dev/null |
    python3 -c "import json,sys
try: print(f\"{json.load(sys.stdin)['end']['sum_received']['bits_per_second']/1e9:.3f}\")
except Exception: print('0')"
}
rows=(strongswan offload-sw offload)
declare -A hs up down
for row in "${rows[@]}"; do
  capture "$row"
  ip netns exec "$p-client" ping -c 3000 -i 0.002 -W 1 10.88.2.2 >/dev/null 2>&1 &
  pingpid=$!
  start_row "$row"
  for _ in $(seq 100); do ip netns exec "$p-client" ping -c 1 -W 0.2 10.88.2.2 >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 0.5
  uncapture "$row"; kill $pingpid 2>/dev/null || true
  t0=$(first_time "$tmp/$row.pcap" 'udp port 500 or (udp port 4500 and udp[8:4] = 0)')
  t1=$(first_time "$tmp/$row.pcap" 'udp port 4500 and udp[8:4] != 0')
  hs[$row]=$(awk -v a="${t0:-}" -v b="${t1:-}" 'BEGIN { if (a == "" || b == "") print "n/a"; else printf "%.1f", (b - a) * 1000 }')
  up[$row]=$(goodput "")
  down[$row]=$(goodput -R)
  stop_row
done

# Rekeying under load: offload-sw, gw1 rekeys every 4 s.
capture rekey
start_row offload-sw "rekey_time = 4s"
for _ in $(seq 100); do ip netns exec "$p-client" ping -c 1 -W 0.2 10.88.2.2 >/dev/null 2>&1 && break; sleep 0.1; done
t0=$(date +%s.%N)
ip netns exec "$p-client" timeout 40 iperf3 -c 10.88.2.2 -p 5299 -t 20 -i 1 -J > "$tmp/rekey.json" 2>/dev/null || true
uncapture rekey
tcpdump -r "$tmp/rekey.pcap" -tt -nn 'udp port 4500 and udp[8:4] = 0 and udp[30] = 36' 2>/dev/null | awk '{print $1}' > "$tmp/rekeys.txt" || true
stop_row

printf "\nIKEv2 gateways, AES-GCM-128, 1500-byte underlay, one run (%s s per goodput)\n" "$secs"
printf "%-11s | %-20s | %-18s | %-18s\n" row "handshake (ms)" "c->s Gbit/s" "s->c Gbit/s"
for row in "${rows[@]}"; do printf "%-11s | %-20s | %-18s | %-18s\n" "$row" "${hs[$row]}" "${up[$row]}" "${down[$row]}"; done
python3 - "${up[offload-sw]}" "${up[strongswan]}" "${down[offload-sw]}" "${down[strongswan]}" <<'PY'
import sys
a, b, c, d = map(float, sys.argv[1:5])
r = lambda x, y: f"{x / y:.2f}x" if y > 0 else "n/a"
print(f"offload-sw against strongSwan at both ends: c->s {r(a, b)}, s->c {r(c, d)}")
PY
python3 - "$tmp/rekey.json" "$tmp/rekeys.txt" "$t0" <<'PY'
import json, sys
try:
    data = json.load(open(sys.argv[1]))
    series = [i["sum"]["bits_per_second"] / 1e9 for i in data["intervals"]]
except Exception:
    print("rekey row: iperf3 gave no intervals"); sys.exit(0)
t0 = float(sys.argv[3])
rekeys = sorted({int(float(l) - t0) for l in open(sys.argv[2]) if l.strip()})
print("rekey row (offload-sw, CHILD_SA rekey every 4 s by offload ipsec): Gbit/s per second:", " ".join(f"{x:.2f}" for x in series))
worst = None
for s in rekeys:
    if 1 <= s < len(series) - 1:
        neighbours = (series[s - 1] + series[s + 1]) / 2
        ratio = series[s] / neighbours if neighbours > 0 else float("nan")
        worst = ratio if worst is None else min(worst, ratio)
        print(f"  second {s}: {series[s]:.2f} against {neighbours:.2f} around it: {ratio:.2f}x")
print(f"  {len(rekeys)} seconds with a CREATE_CHILD_SA; the worst {worst:.2f}x its neighbours (goal 0.8)" if worst is not None else "  no rekey inside the run")
PY
