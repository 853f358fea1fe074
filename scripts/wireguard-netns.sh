#!/usr/bin/env bash
# wireguard-go (Debian's, userspace, no TUN offloads) on both gateways of
# scripts/netns-tunnel-topology.sh: interfaces wgo1 and wgo2 (the UAPI socket directory is shared,
# so the names differ), keys made for the run, the far side's prefix routed into the tunnel.
# Usage: wireguard-netns.sh up PREFIX DIR | down PREFIX DIR
set -euo pipefail
action="$1"; p="$2"; dir="$3"
case "$action" in
down)
  for n in 1 2; do ip -n "$p-gw$n" link del "wgo$n" 2>/dev/null || true; done
  pkill -f "[w]ireguard-go -f wgo" 2>/dev/null || true
  ;;
up)
  mkdir -p "$dir"
  umask 077
  for n in 1 2; do wg genkey > "$dir/wg$n.key"; wg pubkey < "$dir/wg$n.key" > "$dir/wg$n.pub"; done
  for n in 1 2; do
    ip netns exec "$p-gw$n" setsid wireguard-go -f "wgo$n" > "$dir/wg$n.log" 2>&1 < /dev/null &
  done
  for n in 1 2; do
    for _ in $(seq 50); do ip -n "$p-gw$n" link show "wgo$n" >/dev/null 2>&1 && break; sleep 0.1; done
    m=$((3 - n))
    ip netns exec "$p-gw$n" wg set "wgo$n" private-key "$dir/wg$n.key" listen-port 51820 \
      peer "$(cat "$dir/wg$m.pub")" endpoint "192.168.88.$m:51820" allowed-ips "10.88.$m.0/24,172.30.0.$m/32"
    ip -n "$p-gw$n" addr add "172.30.0.$n/30" dev "wgo$n"
    ip -n "$p-gw$n" link set "wgo$n" up
    ip -n "$p-gw$n" route add "10.88.$m.0/24" dev "wgo$n"
  done
  ;;
*) echo "usage: $0 up PREFIX DIR | down PREFIX DIR" >&2; exit 2 ;;
esac
