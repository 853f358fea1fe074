#!/usr/bin/env bash
# strongSwan (charon with kernel-libipsec: userspace ESP over a TUN device) on both gateways of
# scripts/netns-tunnel-topology.sh, IKEv2 with a pre-shared key, ESP in UDP (encap = yes),
# aes128gcm16 (libipsec has no ESN). One charon per namespace: its own strongswan.conf
# (STRONGSWAN_CONF), its own vici socket and a private /run. For benchmarks and interop tests.
# Usage: strongswan-netns.sh up PREFIX DIR [ESP_PROPOSAL] | down PREFIX DIR
set -euo pipefail
action="$1"; p="$2"; dir="$3"; esp="${4:-aes128gcm16}"
case "$action" in
down)
  for n in 1 2; do
    [ -f "$dir/charon$n.pid" ] && kill "$(cat "$dir/charon$n.pid")" 2>/dev/null || true
  done
  sleep 0.5
  ;;
up)
  mkdir -p "$dir"
  for n in 1 2; do
    me=192.168.88.$n; peer=192.168.88.$((3 - n))
    cat > "$dir/strongswan$n.conf" <<CONF
charon {
  load = random nonce openssl aes sha1 sha2 hmac gcm chapoly curve25519 kdf pem pkcs1 x509 pubkey kernel-libipsec kernel-netlink socket-default vici updown
  install_routes = yes
  plugins {
    vici { socket = unix://$dir/charon$n.vici }
  }
  filelog {
    charon$n { path = $dir/charon$n.log
      default = 1 }
  }
}
CONF
    cat > "$dir/swanctl$n.conf" <<CONF
connections {
  site {
    local_addrs = $me
    remote_addrs = $peer
    encap = yes
    proposals = aes128gcm16-prfsha256-x25519
    local { auth = psk
      id = gw$n }
    remote { auth = psk
      id = gw$((3 - n)) }
    children {
      net {
        local_ts = 10.88.$n.0/24
        remote_ts = 10.88.$((3 - n)).0/24
        esp_proposals = $esp
        start_action = $([ $n = 1 ] && echo start || echo trap)
      }
    }
  }
}
secrets {
  ike-site { id-a = gw1
    id-b = gw2
    secret = "offload-bench-psk-not-a-secret" }
}
CONF
    chmod 600 "$dir/swanctl$n.conf"
    ip netns exec "$p-gw$n" sh -c "mount -t tmpfs none /run && STRONGSWAN_CONF=$dir/strongswan$n.conf exec /usr/lib/ipsec/charon" \
      > "$dir/charon$n.out" 2>&1 < /dev/null &
    echo $! > "$dir/charon$n.pid"
  done
  for n in 1 2; do
    for _ in $(seq 50); do [ -S "$dir/charon$n.vici" ] && break; sleep 0.1; done
  done
  for n in 2 1; do
    ip netns exec "$p-gw$n" swanctl --load-all --file "$dir/swanctl$n.conf" --uri "unix://$dir/charon$n.vici" > "$dir/load$n.log" 2>&1
  done
  for _ in $(seq 100); do
    ip netns exec "$p-gw1" swanctl --list-sas --uri "unix://$dir/charon1.vici" 2>/dev/null | grep -q INSTALLED && exit 0
    sleep 0.1
  done
  echo "strongSwan: no CHILD_SA installed; see $dir/charon1.log" >&2
  exit 1
  ;;
*) echo "usage: $0 up PREFIX DIR [ESP] | down PREFIX DIR" >&2; exit 2 ;;
esac
