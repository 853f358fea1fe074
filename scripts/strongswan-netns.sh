#!/usr/bin/env bash
# strongSwan (charon with kernel-libipsec: userspace ESP over a TUN device) on the gateways of
# scripts/netns-tunnel-topology.sh, IKEv2 with a pre-shared key, ESP in UDP (encap = yes).
# One charon per namespace: its own strongswan.conf (STRONGSWAN_CONF), its own vici socket and a
# private /run. For benchmarks and interop tests.
#   up PREFIX DIR [ESP]        charon on both gateways (gw1 initiates), ESP default aes128gcm16
#   peer PREFIX DIR N [ESP]    charon on gateway N only (the other runs offload ipsec --config);
#                              it initiates when SW_START=start (default: trap, it waits)
#   list PREFIX DIR N          swanctl --list-sas on gateway N
#   down PREFIX DIR            stops every charon started in DIR
# Knobs (environment): SW_PROPOSALS (IKE, default aes128gcm16-prfsha256-x25519), SW_PSK,
# SW_CHILD_REKEY / SW_CHILD_LIFE (e.g. 4s / 30s), SW_IKE_REKEY, SW_DPD (dpd_delay),
# SW_LOCAL_TS / SW_REMOTE_TS (the child's selectors, e.g. 10.88.2.0/24[tcp]; default both families).
# libipsec has no ESN: ESP proposals must not ask for it.
set -euo pipefail
action="$1"; p="$2"; dir="$3"
psk="${SW_PSK:-offload-bench-psk-not-a-secret}"
proposals="${SW_PROPOSALS:-aes128gcm16-prfsha256-x25519}"

start_charon() { # n esp start_action: charon on gateway n (scripts/strongswan-charon.sh), its connection loaded
  local n="$1" esp="$2" start="$3"
  local me=192.168.88.$n peer=192.168.88.$((3 - n))
  mkdir -p "$dir"
  local child_rekey="" ike_rekey="" dpd=""
  [ -n "${SW_CHILD_REKEY:-}" ] && child_rekey="rekey_time = $SW_CHILD_REKEY
        life_time = ${SW_CHILD_LIFE:-60s}
        rand_time = 1s"
  [ -n "${SW_IKE_REKEY:-}" ] && ike_rekey="rekey_time = $SW_IKE_REKEY"
  [ -n "${SW_DPD:-}" ] && dpd="dpd_delay = $SW_DPD"
  cat > "$dir/charon$n.swanctl.conf" <<CONF
connections {
  site {
    local_addrs = $me
    remote_addrs = $peer
    encap = yes
    proposals = $proposals
    $ike_rekey
    $dpd
    local { auth = psk
      id = gw$n }
    remote { auth = psk
      id = gw$((3 - n)) }
    children {
      net {
        local_ts = ${SW_LOCAL_TS:-10.88.$n.0/24, fd88:$n::/64}
        remote_ts = ${SW_REMOTE_TS:-10.88.$((3 - n)).0/24, fd88:$((3 - n))::/64}
        esp_proposals = $esp
        start_action = $start
        $child_rekey
      }
    }
  }
}
secrets {
  ike-site { id-a = gw1
    id-b = gw2
    secret = "$psk" }
}
CONF
  "$(dirname "$0")/strongswan-charon.sh" start "$p-gw$n" "$dir" "charon$n"
}

case "$action" in
down)
  for n in 1 2; do "$(dirname "$0")/strongswan-charon.sh" stop "$dir" "charon$n"; done
  sleep 0.5
  ;;
up)
  esp="${4:-aes128gcm16}"
  start_charon 2 "$esp" trap
  start_charon 1 "$esp" start
  for _ in $(seq 100); do
    ip netns exec "$p-gw1" swanctl --list-sas --uri "unix://$dir/charon1.vici" 2>/dev/null | grep -q INSTALLED && exit 0
    sleep 0.1
  done
  echo "strongSwan: no CHILD_SA installed; see $dir/charon1.log" >&2
  exit 1
  ;;
peer)
  n="$4"; esp="${5:-aes128gcm16}"
  start_charon "$n" "$esp" "${SW_START:-trap}"
  ;;
list)
  ip netns exec "$p-gw$4" swanctl --list-sas --uri "unix://$dir/charon$4.vici"
  ;;
*) echo "usage: $0 up PREFIX DIR [ESP] | peer PREFIX DIR N [ESP] | list PREFIX DIR N | down PREFIX DIR" >&2; exit 2 ;;
esac
