#!/usr/bin/env bash
# A tunnel test topology in network namespaces: client <-> gw1 <-underlay-> gw2 <-> server.
#   client  c0 10.88.1.2/24  fd88:1::2/64       default via gw1
#   gw1     g0 10.88.1.1/24  fd88:1::1/64       u0 192.168.88.1/24  fd88:ff::1/64 (underlay)
#   gw2     g1 10.88.2.1/24  fd88:2::1/64       u1 192.168.88.2/24  fd88:ff::2/64 (underlay)
#   server  s0 10.88.2.2/24  fd88:2::2/64       default via gw2
# The client's and server's TSO/GSO and the gateways' GRO on g0/g1 are off, so wire-size packets
# reach the tunnel endpoints; the underlay keeps the veth defaults. Traffic stays inside these
# namespaces. The tunnel itself (a TUN device on each gateway, or the kernel's) is the test's.
# Usage: netns-tunnel-topology.sh up PREFIX [UNDERLAY_MTU] | down PREFIX
#        (namespaces PREFIX-client, -gw1, -gw2, -server)
set -euo pipefail
action="$1"; p="$2"; mtu="${3:-1500}"
c="$p-client"; g1="$p-gw1"; g2="$p-gw2"; s="$p-server"
case "$action" in
down)
  for ns in "$c" "$g1" "$g2" "$s"; do ip netns del "$ns" 2>/dev/null || true; done
  ;;
up)
  for ns in "$c" "$g1" "$g2" "$s"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
  tmp="otn$$"
  pair() { ip link add "${tmp}a" type veth peer name "${tmp}b"; ip link set "${tmp}a" netns "$1" name "$2"; ip link set "${tmp}b" netns "$3" name "$4"; }
  pair "$c" c0 "$g1" g0
  pair "$g1" u0 "$g2" u1
  pair "$g2" g1 "$s" s0
  ip -n "$c" addr add 10.88.1.2/24 dev c0;        ip -n "$c" addr add fd88:1::2/64 dev c0 nodad
  ip -n "$g1" addr add 10.88.1.1/24 dev g0;       ip -n "$g1" addr add fd88:1::1/64 dev g0 nodad
  ip -n "$g1" addr add 192.168.88.1/24 dev u0;    ip -n "$g1" addr add fd88:ff::1/64 dev u0 nodad
  ip -n "$g2" addr add 192.168.88.2/24 dev u1;    ip -n "$g2" addr add fd88:ff::2/64 dev u1 nodad
  ip -n "$g2" addr add 10.88.2.1/24 dev g1;       ip -n "$g2" addr add fd88:2::1/64 dev g1 nodad
  ip -n "$s" addr add 10.88.2.2/24 dev s0;        ip -n "$s" addr add fd88:2::2/64 dev s0 nodad
  for pair in "$c c0" "$g1 g0" "$g1 u0" "$g2 u1" "$g2 g1" "$s s0"; do
    set -- $pair
    ip -n "$1" link set "$2" up
    case "$2" in
    u0|u1) ip -n "$1" link set "$2" mtu "$mtu" ;;
    *) ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true ;;
    esac
  done
  ip -n "$c" route add default via 10.88.1.1;     ip -n "$c" -6 route add default via fd88:1::1
  ip -n "$s" route add default via 10.88.2.1;     ip -n "$s" -6 route add default via fd88:2::1
  for ns in "$g1" "$g2"; do ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1; done
  ;;
*) echo "usage: $0 up PREFIX [UNDERLAY_MTU] | down PREFIX" >&2; exit 2 ;;
esac
