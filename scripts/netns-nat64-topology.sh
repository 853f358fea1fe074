#!/usr/bin/env bash
# A NAT64 test topology in network namespaces: three IPv6-only clients, a gateway (where a NAT64
# runs between two TUN devices), an IPv4 router and an IPv4-only server.
#   clientN (N=1..3) c0 fd64:N::2/64          default via fd64:N::1
#   gateway  gN fd64:N::1/64 (one per client)  g4 10.64.0.1/24   10.64.1.0/24 via the router
#   router   r0 10.64.0.2/24  r1 10.64.1.1/24  default via the gateway (so the pool4 is reached)
#   server   s0 10.64.1.2/24                   default via the router
# The clients' and server's TSO/GSO and everyone's GRO are off, so wire-size packets reach the
# gateway (a test turns the gateway's GRO on when it wants the kernel's super-packets). Traffic stays
# inside these namespaces.
# Usage: netns-nat64-topology.sh up PREFIX | down PREFIX
#        (namespaces PREFIX-c1, -c2, -c3, -gw, -rt, -srv)
set -euo pipefail
action="$1"; p="$2"
g="$p-gw"; r="$p-rt"; s="$p-srv"
clients="$p-c1 $p-c2 $p-c3"
case "$action" in
down)
  for ns in $clients "$g" "$r" "$s"; do ip netns del "$ns" 2>/dev/null || true; done
  ;;
up)
  for ns in $clients "$g" "$r" "$s"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
  tmp="on6$$"
  link() {  # link NS1 DEV1 NS2 DEV2: a veth pair between two namespaces
    ip link add "${tmp}a" type veth peer name "${tmp}b"
    ip link set "${tmp}a" netns "$1" name "$2"
    ip link set "${tmp}b" netns "$3" name "$4"
    for pair in "$1 $2" "$3 $4"; do
      set -- $pair
      ip -n "$1" link set "$2" up
      ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true
    done
  }
  n=1
  for c in $clients; do
    link "$c" c0 "$g" "g$n"
    ip -n "$c" addr add "fd64:$n::2/64" dev c0 nodad
    ip -n "$g" addr add "fd64:$n::1/64" dev "g$n" nodad
    ip -n "$c" -6 route add default via "fd64:$n::1"
    n=$((n + 1))
  done
  link "$g" g4 "$r" r0
  link "$r" r1 "$s" s0
  ip -n "$g" addr add 10.64.0.1/24 dev g4
  ip -n "$r" addr add 10.64.0.2/24 dev r0
  ip -n "$r" addr add 10.64.1.1/24 dev r1
  ip -n "$s" addr add 10.64.1.2/24 dev s0
  ip -n "$g" route add 10.64.1.0/24 via 10.64.0.2
  ip -n "$r" route add default via 10.64.0.1
  ip -n "$s" route add default via 10.64.1.1
  ip netns exec "$g" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
  ;;
*) echo "usage: $0 up PREFIX | down PREFIX" >&2; exit 2 ;;
esac
