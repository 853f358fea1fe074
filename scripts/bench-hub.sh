#!/usr/bin/env bash
# A hub with many peers: iperf3 TCP goodput from every peer's LAN at once through one hub gateway,
# and what the hub's process spends on it, in the topology of scripts/netns-hub-topology.sh (hub
# 192.168.90.1 with the server 10.80.0.2 behind it; peer N at 192.168.90.(10+N) with the client
# 10.90.N.2 behind it; one 1500-byte bridge segment). One run, each row measured in turn, for each
# peer count:
#   static      `offload ipsec --sa` on the hub: ONE process, one UDP socket, one tunnel per peer
#               (remote_addrs = the peer); `offload ipsec --sa` on each peer. Keys made for the run.
#   strongswan  strongSwan 5.9 charon with kernel-libipsec (userspace ESP over TUN) on the hub (one
#               connection per peer, a PSK per peer) and on each peer; IKEv2, ESP in UDP (encap = yes)
#   ike         `offload ipsec --config` on the hub (one connection per peer), strongSwan on the peers
#               as in the strongswan row; skipped with its reason when the hub does not establish
#               every CHILD_SA within the bound (e.g. a build that takes one peer per gateway only)
# All rows aes128gcm16. The gateways' inner interfaces have GRO on (as a NIC does), as in
# scripts/bench-ipsec.sh. Per row and direction: the sum of the peers' goodput, the slowest and the
# fastest peer, and the CPU seconds of the hub's process (utime + stime from /proc/PID/stat, all its
# threads) per Gbit received; also the peers' processes' CPU seconds per Gbit. For the IKE rows, the
# time the N peers' handshakes take when all start at once (swanctl --initiate on every peer; the
# hub answers N IKE_SA_INIT + IKE_AUTH exchanges): N / that is the hub's handshake rate under a burst.
# Root, iperf3, openssl, strongswan-charon + strongswan-swanctl + libcharon-extra-plugins.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/bench-hub.sh [--help]

Benchmarks a hub gateway serving many peers (network namespaces; nothing leaves them):
offload ipsec with static SAs, strongSwan (kernel-libipsec) and offload ipsec with IKEv2, for each
peer count in turn, and prints a table and the ratios offload / strongSwan.

Environment:
  PEERS="1 4 16"          peer counts (each 1..250)
  SECONDS_PER_ROW=8       iperf3 seconds per measurement
  DIRECTIONS="up down"    up: clients -> server (upload to the hub's LAN); down: server -> clients (-R)
  ROWS="static strongswan ike"
  OFFLOAD=path            the offload executable (default: swift build -c release --product offload)
  OFFLOAD_IKE=path        the executable of the ike row's hub (default: OFFLOAD)
  MAX_SECONDS=1500        the whole run is stopped (and cleaned up) after this long
  RESULTS=file            also append the results as tab-separated lines to this file
  KEEP_LOGS=1             keep the processes' logs (keys and PSKs removed) in the run's directory
Root, iperf3, openssl, strongswan-charon, strongswan-swanctl, libcharon-extra-plugins.
Ctrl-C stops it; its namespaces and processes are removed on every exit.
EOF
}
case "${1:-}" in
-h|--help) usage; exit 0 ;;
"") ;;
*) usage >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || { echo "bench-hub: needs root (network namespaces)" >&2; exit 1; }
for tool in iperf3 openssl swanctl python3; do
  command -v "$tool" >/dev/null || { echo "bench-hub: $tool is missing" >&2; exit 1; }
done
[ -x /usr/lib/ipsec/charon ] || { echo "bench-hub: /usr/lib/ipsec/charon is missing (strongswan-charon)" >&2; exit 1; }

root="$(cd "$(dirname "$0")/.." && pwd)"
peer_counts="${PEERS:-1 4 16}"
secs="${SECONDS_PER_ROW:-8}"
directions="${DIRECTIONS:-up down}"
rows="${ROWS:-static strongswan ike}"
max_seconds="${MAX_SECONDS:-1500}"
max_peers=0
for n in $peer_counts; do
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 250 ] || { echo "bench-hub: PEERS: 1..250 each" >&2; exit 2; }
  [ "$n" -gt "$max_peers" ] && max_peers=$n
done
for row in $rows; do
  case "$row" in static|strongswan|ike) ;; *) echo "bench-hub: ROWS: static, strongswan, ike" >&2; exit 2 ;; esac
done
for dir in $directions; do
  case "$dir" in up|down) ;; *) echo "bench-hub: DIRECTIONS: up, down" >&2; exit 2 ;; esac
done
cd "$root"
if [ -z "${OFFLOAD:-}" ]; then
  swift build -c release --product offload >/dev/null
  OFFLOAD="$root/.build/release/offload"
fi
bin="$OFFLOAD"
ike_bin="${OFFLOAD_IKE:-$bin}"
clk=$(getconf CLK_TCK)
p="bhub$$"
tmp="$(mktemp -d)"
chmod 700 "$tmp"
started=()      # every gateway process of the current row (hub first)
watchdog=""

cleanup() {
  set +e
  [ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null
  stop_row 2>/dev/null
  "$root/scripts/netns-hub-topology.sh" down "$p" 2>/dev/null
  if [ -n "${KEEP_LOGS:-}" ]; then echo "bench-hub: logs kept in $tmp/logs" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# The watchdog: its sleep goes with it when the run ends first.
( trap 'kill $sleeper 2>/dev/null; exit 0' TERM
  sleep "$max_seconds" & sleeper=$!
  wait $sleeper && { echo "bench-hub: MAX_SECONDS ($max_seconds) reached: stopping" >&2; kill -TERM $$; } ) 2>/dev/null &
watchdog=$!

"$root/scripts/netns-hub-topology.sh" up "$p" "$max_peers"
ip netns exec "$p-hub" ethtool -K l0 gro on >/dev/null 2>&1 || true
for n in $(seq 1 "$max_peers"); do ip netns exec "$p-p$n" ethtool -K l0 gro on >/dev/null 2>&1 || true; done

peer_addr() { echo "192.168.90.$((10 + $1))"; }
hex_key() { openssl rand -hex 20; }   # AES-GCM-128: 16 bytes of key and 4 of salt

# Runs a command in namespace NS with a private /run (charon's pid file, offload's setup journal),
# in the background; its pid (the command's own: ip netns exec and sh exec it) is added to started.
spawn() { # name ns command...
  local name="$1" ns="$2"; shift 2
  ip netns exec "$ns" sh -c 'mount -t tmpfs none /run && exec "$@"' sh "$@" >"$tmp/$name.out" 2>&1 </dev/null &
  started+=($!)
}
alive() { kill -0 "$1" 2>/dev/null; }
wait_route() { # ns prefix seconds pid: until a route to PREFIX goes into a device of the process
  local i
  for i in $(seq $(($3 * 20))); do
    ip -n "$1" route show "$2" 2>/dev/null | grep -q dev && return 0
    alive "$4" || return 1
    sleep 0.05
  done
  return 1
}
wait_ping() { # peers seconds: until every client reaches the server
  local deadline=$(($(date +%s) + $2)) pending still i
  pending=$(seq 1 "$1")
  while [ -n "$pending" ] && [ "$(date +%s)" -lt "$deadline" ]; do
    still=""
    for i in $pending; do ip netns exec "$p-c$i" ping -c 1 -W 0.3 -q 10.80.0.2 >/dev/null 2>&1 || still="$still $i"; done
    pending=$still
    [ -z "$pending" ] || sleep 0.2
  done
  [ -z "$pending" ] || { note="no path from the clients of peers$pending to the server within $2 s"; return 1; }
}

# --- offload ipsec with static SAs -------------------------------------------------------------
start_static() { # peers
  local peers="$1" n routes=() a b
  local run_for=$((60 + $(echo $directions | wc -w) * (secs + 30)))
  (umask 077
   printf 'tunnels {\n' > "$tmp/hub.conf"
   for n in $(seq 1 "$peers"); do
     a=$(hex_key); b=$(hex_key)
     # The hub's tunnel to peer N: out 0x1000+N (key a), in 0x2000+N (key b); the peer's is its mirror.
     printf '  peer%d {\n    esp_proposals = aes128gcm16\n    esn = yes\n    local_ts = 10.80.0.0/24\n    remote_ts = 10.90.%d.0/24\n    remote_addrs = %s\n    out {\n      spi = 0x%x\n      key = 0x%s\n    }\n    in {\n      spi = 0x%x\n      key = 0x%s\n    }\n  }\n' \
       "$n" "$n" "$(peer_addr "$n")" $((0x1000 + n)) "$a" $((0x2000 + n)) "$b" >> "$tmp/hub.conf"
     printf 'tunnels {\n  hub {\n    esp_proposals = aes128gcm16\n    esn = yes\n    local_ts = 10.90.%d.0/24\n    remote_ts = 10.80.0.0/24\n    out {\n      spi = 0x%x\n      key = 0x%s\n    }\n    in {\n      spi = 0x%x\n      key = 0x%s\n    }\n  }\n}\n' \
       "$n" $((0x2000 + n)) "$b" $((0x1000 + n)) "$a" > "$tmp/peer$n.conf"
   done
   printf '}\n' >> "$tmp/hub.conf")
  for n in $(seq 1 "$peers"); do routes+=(--route "10.90.$n.0/24"); done
  rm -rf "$tmp/marks"; mkdir -p "$tmp/marks"
  spawn hub "$p-hub" "$bin" ipsec --sa "$tmp/hub.conf" --state "$tmp/marks/hub" --local 192.168.90.1 --remote "$(peer_addr 1)" \
    --device ipsec0 --setup "${routes[@]}" --duration "$run_for" --stats-json "$tmp/hub.json"
  wait_route "$p-hub" "10.90.$peers.0/24" 20 "${started[0]}" || { note="the hub did not start: $(head -c 300 "$tmp/hub.out")"; return 1; }
  for n in $(seq 1 "$peers"); do
    spawn "peer$n" "$p-p$n" "$bin" ipsec --sa "$tmp/peer$n.conf" --state "$tmp/marks/p$n" --local "$(peer_addr "$n")" \
      --remote 192.168.90.1 --device ipsec0 --setup --route 10.80.0.0/24 --duration "$run_for" --stats-json "$tmp/peer$n.json"
  done
  for n in $(seq 1 "$peers"); do
    wait_route "$p-p$n" 10.80.0.0/24 20 "${started[$n]}" || { note="peer $n did not start: $(head -c 300 "$tmp/peer$n.out")"; return 1; }
  done
  wait_ping "$peers" 20
}

# --- strongSwan (charon, kernel-libipsec) -----------------------------------------------------------
charon() { # name ns: charon with DIR/NAME.swanctl.conf loaded (scripts/strongswan-charon.sh), its pid counted as ours
  "$root/scripts/strongswan-charon.sh" start "$2" "$tmp/sw" "$1" > "$tmp/sw/$1.start" 2>&1 \
    || { note="charon $1: $(tail -n 2 "$tmp/sw/$1.start" | tr '\n' ' ')"; return 1; }
  started+=("$(cat "$tmp/sw/$1.pid")")
}
psk() { openssl rand -hex 24; }
# The hub's side as swanctl.conf, one connection per peer (strongSwan's and offload's --config alike).
hub_ike_config() { # peers esp_proposals file
  local n
  (umask 077
   { printf 'connections {\n'
     for n in $(seq 1 "$1"); do
       printf '  peer%d {\n    local_addrs = 192.168.90.1\n    remote_addrs = %s\n    encap = yes\n    proposals = aes128gcm16-prfsha256-x25519\n    local { auth = psk\n      id = hub }\n    remote { auth = psk\n      id = peer%d }\n    children {\n      net%d {\n        local_ts = 10.80.0.0/24\n        remote_ts = 10.90.%d.0/24\n        esp_proposals = %s\n        start_action = none\n      }\n    }\n  }\n' \
         "$n" "$(peer_addr "$n")" "$n" "$n" "$n" "$2"
     done
     printf '}\nsecrets {\n'
     # Each secret names its peer only (a secret that also named the hub would fit every connection):
     # the hub finds a peer's PSK by the peer's identity alone.
     for n in $(seq 1 "$1"); do printf '  ike-peer%d { id = peer%d\n    secret = "%s" }\n' "$n" "$n" "$(cat "$tmp/sw/psk$n")"; done
     printf '}\n'; } > "$3")
}
peer_ike_config() { # n file
  (umask 077
   printf 'connections {\n  hub {\n    local_addrs = %s\n    remote_addrs = 192.168.90.1\n    encap = yes\n    proposals = aes128gcm16-prfsha256-x25519\n    local { auth = psk\n      id = peer%d }\n    remote { auth = psk\n      id = hub }\n    children {\n      net {\n        local_ts = 10.90.%d.0/24\n        remote_ts = 10.80.0.0/24\n        esp_proposals = aes128gcm16\n        start_action = none\n      }\n    }\n  }\n}\nsecrets {\n  ike-hub { id-a = hub\n    id-b = peer%d\n    secret = "%s" }\n}\n' \
     "$(peer_addr "$1")" "$1" "$1" "$1" "$(cat "$tmp/sw/psk$1")" > "$2")
}
# Starts charon on peers 1..N, loads them, then has every peer initiate at once; the time until all
# N swanctl --initiate have returned (each returns when its CHILD_SA is installed) is the burst.
ike_peers() { # peers
  local peers="$1" n pids=() t0 t1 failed=""
  for n in $(seq 1 "$peers"); do peer_ike_config "$n" "$tmp/sw/peer$n.swanctl.conf"; charon "peer$n" "$p-p$n" || return 1; done
  t0=$(date +%s.%N)
  for n in $(seq 1 "$peers"); do
    ip netns exec "$p-p$n" swanctl --initiate --child net --timeout 30 --uri "unix://$tmp/sw/peer$n.vici" > "$tmp/sw/init$n.log" 2>&1 &
    pids+=($!)
  done
  for n in $(seq 1 "$peers"); do wait "${pids[$((n - 1))]}" || failed="$failed $n"; done
  t1=$(date +%s.%N)
  if [ -n "$failed" ]; then note="no CHILD_SA within 30 s for peers$failed"; return 1; fi
  setup_time=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
  wait_ping "$peers" 20
}
start_strongswan() { # peers
  local peers="$1" n
  mkdir -p "$tmp/sw"
  for n in $(seq 1 "$peers"); do (umask 077; psk > "$tmp/sw/psk$n"); done
  hub_ike_config "$peers" aes128gcm16 "$tmp/sw/hub.swanctl.conf"
  charon hub "$p-hub" || return 1
  ike_peers "$peers"
}
start_ike() { # peers
  local peers="$1" n routes=() i
  mkdir -p "$tmp/sw"
  for n in $(seq 1 "$peers"); do (umask 077; psk > "$tmp/sw/psk$n"); routes+=(--route "10.90.$n.0/24"); done
  # libipsec has no ESN: the hub offers both and the peers take the one without.
  hub_ike_config "$peers" aes128gcm16-esn-noesn "$tmp/ike-hub.conf"
  rm -rf "$tmp/marks"; mkdir -p "$tmp/marks"
  local run_for=$((90 + $(echo $directions | wc -w) * (secs + 30)))
  spawn hub "$p-hub" "$ike_bin" ipsec --config "$tmp/ike-hub.conf" --state "$tmp/marks/hub" --status-file "$tmp/ike-hub.status" \
    --device ipsec0 --setup "${routes[@]}" --duration "$run_for" --stats-json "$tmp/hub.json"
  for i in $(seq 40); do
    alive "${started[0]}" || { note="the hub exited: $(head -c 300 "$tmp/hub.out" | tr '\n' ' ')"; return 1; }
    ip netns exec "$p-hub" ss -lun 2>/dev/null | grep -q ':4500 ' && break
    sleep 0.1
  done
  ike_peers "$peers"
}

stop_row() {
  local pid i
  for pid in $(cat "$tmp"/iperf-*.pid 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  rm -f "$tmp"/iperf-*.pid
  [ ${#started[@]} -gt 0 ] || return 0
  for pid in "${started[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for i in $(seq 50); do
    local any=""
    for pid in "${started[@]}"; do alive "$pid" && any=1; done
    [ -z "$any" ] && break
    sleep 0.1
  done
  for pid in "${started[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  started=()
  # The TUN devices go with their processes.
  for i in $(seq 30); do ip -n "$p-hub" link show ipsec0 >/dev/null 2>&1 || break; sleep 0.1; done
  # Keys and PSKs go with their row; with KEEP_LOGS the logs stay, one directory per row.
  rm -f "$tmp"/*.conf "$tmp"/sw/psk* "$tmp"/sw/swanctl-*
  if [ -n "${KEEP_LOGS:-}" ]; then
    mkdir -p "$tmp/logs/${row:-row}-${peers:-0}"
    mv "$tmp"/*.out "$tmp"/sw "$tmp/logs/${row:-row}-${peers:-0}/" 2>/dev/null || true
  fi
  rm -rf "$tmp/sw" "$tmp/marks"
}

ticks() { # pids -> utime + stime of each (all its threads), summed, in clock ticks
  local t=0 pid
  for pid in "$@"; do [ -r "/proc/$pid/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
  echo "$t"
}
start_iperf_servers() { # peers
  local n
  for n in $(seq 1 "$1"); do
    ip netns exec "$p-srv" iperf3 -s -p $((5200 + n)) -D -I "$tmp/iperf-$n.pid" >/dev/null 2>&1
  done
  for n in $(seq 50); do [ "$(ls "$tmp"/iperf-*.pid 2>/dev/null | wc -l)" -ge "$1" ] && break; sleep 0.1; done
  sleep 0.3
}
# Every client sends (up) or receives (down) at once for SECONDS_PER_ROW; prints
# "total min max hub_cpu_s hub_cores hub_s_per_gbit peers_s_per_gbit failed" (failed: clients
# whose iperf3 gave no result, counted as 0 Gbit/s).
measure() { # peers direction
  local peers="$1" reverse="" n pids=() hub0 peers0 hub1 peers1 t0 t1 files=()
  [ "$2" = down ] && reverse="-R"
  hub0=$(ticks "${started[0]}"); peers0=$(ticks "${started[@]:1}")
  t0=$(date +%s.%N)
  for n in $(seq 1 "$peers"); do
    rm -f "$tmp/iperf-c$n.json"
    ip netns exec "$p-c$n" timeout $((secs + 20)) iperf3 -c 10.80.0.2 -p $((5200 + n)) -t "$secs" $reverse -J > "$tmp/iperf-c$n.json" 2>/dev/null &
    pids+=($!); files+=("$tmp/iperf-c$n.json")
  done
  for n in "${pids[@]}"; do wait "$n" || true; done
  t1=$(date +%s.%N)
  hub1=$(ticks "${started[0]}"); peers1=$(ticks "${started[@]:1}")
  python3 - "$clk" $((hub1 - hub0)) $((peers1 - peers0)) "$t0" "$t1" "${files[@]}" <<'PY'
import json, sys
clk, hub, peers, t0, t1 = (float(x) for x in sys.argv[1:6])
rates, gbit, failed = [], 0.0, 0
for path in sys.argv[6:]:
    try:
        end = json.load(open(path))["end"]["sum_received"]
        rates.append(end["bits_per_second"] / 1e9)
        gbit += end["bytes"] * 8 / 1e9
    except Exception:
        rates.append(0.0)
        failed += 1
hub_s, peers_s = hub / clk, peers / clk
per = lambda s: f"{s / gbit:.2f}" if gbit > 0 else "n/a"
print(f"{sum(rates):.2f} {min(rates):.2f} {max(rates):.2f} {hub_s:.2f} {hub_s / max(t1 - t0, 1e-9):.2f} {per(hub_s)} {per(peers_s)} {failed}")
PY
}

declare -A result setup skipped
label() {
  case "$1" in
  static) echo "offload ipsec (static SAs)" ;;
  strongswan) echo "strongSwan hub (kernel-libipsec)" ;;
  ike) echo "offload ipsec (IKEv2), sw peers" ;;
  esac
}
for peers in $peer_counts; do
  for row in $rows; do
    note=""; setup_time="n/a"
    echo "== $peers peer(s): $(label "$row")" >&2
    if ! "start_$row" "$peers"; then
      note="${note:-did not start}"
      skipped[$row,$peers]="$(echo "${note//$tmp\//}" | tr -s '\n ' '  ' | sed 's/ *$//')"
      echo "   skipped: ${skipped[$row,$peers]}" >&2
      stop_row
      continue
    fi
    setup[$row,$peers]="$setup_time"
    start_iperf_servers "$peers"
    for dir in $directions; do
      result[$row,$peers,$dir]=$(measure "$peers" "$dir")
      echo "   $dir: ${result[$row,$peers,$dir]}" >&2
      sleep 1
    done
    stop_row
  done
done

dir_label() { [ "$1" = up ] && echo "c->s" || echo "s->c"; }
printf "\nHub with many peers, aes128gcm16, ESP in UDP, 1500-byte underlay, %s s per measurement, one run (%s)\n" "$secs" "$(date -u '+%Y-%m-%d %H:%M UTC')"
printf "Gbit/s: the sum over the peers, and the slowest and fastest peer; CPU: the hub's process (utime+stime) and per Gbit received; the peers' processes per Gbit; IKE rows: the N handshakes started at once (s)\n"
printf "%5s | %-32s | %-4s | %7s | %13s | %7s | %9s | %10s | %11s | %s\n" peers row dir "Gbit/s" "peer min-max" "hub s" "hub cores" "hub s/Gbit" "peers s/Gbit" "N handshakes (s)"
for peers in $peer_counts; do
  for row in $rows; do
    if [ -n "${skipped[$row,$peers]:-}" ]; then
      printf "%5s | %-32s | skipped: %s\n" "$peers" "$(label "$row")" "${skipped[$row,$peers]}"
      continue
    fi
    for dir in $directions; do
      set -- ${result[$row,$peers,$dir]}
      printf "%5s | %-32s | %-4s | %7s | %13s | %7s | %9s | %10s | %11s | %s\n" "$peers" "$(label "$row")" "$(dir_label "$dir")" \
        "$1" "$2-$3$([ "$8" = 0 ] || echo " ($8 failed)")" "$4" "$5" "$6" "$7" "${setup[$row,$peers]}"
      [ -n "${RESULTS:-}" ] && printf "%s\t%s\t%s\t%s\n" "$peers" "$row" "$dir" "${result[$row,$peers,$dir]} ${setup[$row,$peers]}" >> "$RESULTS"
    done
  done
done
printf "\nRatios (goodput: offload / strongSwan; hub CPU per Gbit: strongSwan / offload, how many times more the strongSwan hub spends):\n"
for peers in $peer_counts; do
  for dir in $directions; do
    for row in static ike; do
      [ -n "${result[$row,$peers,$dir]:-}" ] && [ -n "${result[strongswan,$peers,$dir]:-}" ] || continue
      python3 - "$peers" "$(dir_label "$dir")" "$(label "$row")" ${result[$row,$peers,$dir]} ${result[strongswan,$peers,$dir]} <<'PY'
import sys
peers, direction, name = sys.argv[1:4]
a, b = sys.argv[4:12], sys.argv[12:20]
def ratio(x, y):
    try:
        x, y = float(x), float(y)
        return f"{x / y:.2f}x" if y > 0 else "n/a"
    except ValueError:
        return "n/a"
print(f"  {peers:>3} peer(s) {direction}: {name}: goodput {ratio(a[0], b[0])}, slowest peer {ratio(a[1], b[1])}, hub CPU per Gbit {ratio(b[5], a[5])} less")
PY
    done
  done
done
