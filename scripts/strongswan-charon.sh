#!/usr/bin/env bash
# One strongSwan charon (kernel-libipsec: userspace ESP over a TUN device) in a network namespace,
# with a swanctl.conf the caller wrote: for tests and benchmarks with many peers. Each charon has
# its own strongswan.conf (STRONGSWAN_CONF), its own vici socket and log in DIR, and a private /run.
#   start NS DIR NAME    DIR/NAME.swanctl.conf (written by the caller) is loaded; waits for vici
#   sas NS DIR NAME      swanctl --list-sas
#   stop DIR NAME        stops that charon
#   stopall DIR          stops every charon started in DIR
set -euo pipefail
action="$1"
case "$action" in
start)
  ns="$2"; dir="$3"; name="$4"
  cat > "$dir/$name.strongswan.conf" <<CONF
charon {
  load = random nonce openssl aes sha1 sha2 hmac gcm chapoly curve25519 kdf pem pkcs1 x509 pubkey kernel-libipsec kernel-netlink socket-default vici updown
  install_routes = yes
  retransmit_timeout = 1
  retransmit_tries = 3
  plugins {
    vici { socket = unix://$dir/$name.vici }
  }
  filelog {
    $name { path = $dir/$name.log
      default = 1
      flush_line = yes }
  }
}
CONF
  chmod 600 "$dir/$name.swanctl.conf"
  rm -f "$dir/$name.vici"
  ip netns exec "$ns" sh -c "mount -t tmpfs none /run && STRONGSWAN_CONF=$dir/$name.strongswan.conf exec /usr/lib/ipsec/charon" \
    > "$dir/$name.out" 2>&1 < /dev/null &
  echo $! > "$dir/$name.pid"
  for _ in $(seq 100); do [ -S "$dir/$name.vici" ] && break; sleep 0.1; done
  for _ in $(seq 10); do
    ip netns exec "$ns" swanctl --load-all --file "$dir/$name.swanctl.conf" --uri "unix://$dir/$name.vici" > "$dir/$name.load" 2>&1 && exit 0
    sleep 0.3
  done
  cat "$dir/$name.load" >&2
  exit 1
  ;;
sas)
  ip netns exec "$2" swanctl --list-sas --uri "unix://$3/$4.vici"
  ;;
stop)
  [ -f "$2/$3.pid" ] && kill "$(cat "$2/$3.pid")" 2>/dev/null || true
  ;;
stopall)
  for f in "$2"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  sleep 0.5
  ;;
*) echo "usage: $0 start NS DIR NAME | sas NS DIR NAME | stop DIR NAME | stopall DIR" >&2; exit 2 ;;
esac
