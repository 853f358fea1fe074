#!/usr/bin/env bash
# A test topology in network namespaces: client <-veth-> gateway <-veth-> server.
#   client  c0 10.77.1.2/24  fd77:1::2/64   default via the gateway
#   gateway g0 10.77.1.1/24  fd77:1::1/64   g1 10.77.2.1/24  fd77:2::1/64
#   server  s0 10.77.2.2/24  fd77:2::2/64   default via the gateway
# The client's and server's TSO/GSO and the gateway's GRO are off, so wire-size packets reach a
# forwarder on the gateway. Traffic stays inside these namespaces.
# With a third argument `siit`, the client has only its IPv6 address and the server only its IPv4
# one: a translator on the gateway is the only way between them.
# Usage: netns-topology.sh up PREFIX [siit] | down PREFIX     (namespaces PREFIX-client, -gw, -server)
set -euo pipefail
action="$1"; p="$2"; mode="${3:-dual}"
c="$p-client"; g="$p-gw"; s="$p-server"
case "$action" in
down)
  for ns in "$c" "$g" "$s"; do ip netns del "$ns" 2>/dev/null || true; done
  ;;
up)
  for ns in "$c" "$g" "$s"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
  tmp="ofw$$"
  ip link add "${tmp}a" type veth peer name "${tmp}b"
  ip link set "${tmp}a" netns "$c" name c0
  ip link set "${tmp}b" netns "$g" name g0
  ip link add "${tmp}a" type veth peer name "${tmp}b"
  ip link set "${tmp}a" netns "$g" name g1
  ip link set "${tmp}b" netns "$s" name s0
  [ "$mode" = siit ] || ip -n "$c" addr add 10.77.1.2/24 dev c0
  ip -n "$c" addr add fd77:1::2/64 dev c0 nodad
  ip -n "$g" addr add 10.77.1.1/24 dev g0
  ip -n "$g" addr add fd77:1::1/64 dev g0 nodad
  ip -n "$g" addr add 10.77.2.1/24 dev g1
  ip -n "$g" addr add fd77:2::1/64 dev g1 nodad
  ip -n "$s" addr add 10.77.2.2/24 dev s0
  [ "$mode" = siit ] || ip -n "$s" addr add fd77:2::2/64 dev s0 nodad
  for pair in "$c c0" "$g g0" "$g g1" "$s s0"; do
    set -- $pair
    ip -n "$1" link set "$2" up
    ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true
  done
  [ "$mode" = siit ] || ip -n "$c" route add default via 10.77.1.1
  ip -n "$c" -6 route add default via fd77:1::1
  ip -n "$s" route add default via 10.77.2.1
  [ "$mode" = siit ] || ip -n "$s" -6 route add default via fd77:2::1
  ip netns exec "$g" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
  ;;
*) echo "usage: $0 up PREFIX [siit] | down PREFIX" >&2; exit 2 ;;
esac
