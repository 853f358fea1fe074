#!/usr/bin/env bash
# A hub-and-spoke test topology in network namespaces: one hub gateway and N peer gateways on one
# underlay segment (a bridge in a namespace of its own), each gateway with a LAN host behind it,
# and peers optionally behind a NAT (nftables masquerade with random ports, as a home router or a
# carrier-grade NAT maps them).
#   PREFIX-sw    br0: the underlay segment (ports u-hub, u-pN, u-nat)
#   PREFIX-hub   u0 192.168.90.1/24    l0 10.80.0.1/24   (PREFIX-srv: s0 10.80.0.2/24, default via .1)
#   PREFIX-pN    u0 192.168.90.(10+N)/24, or behind the NAT 172.16.N.2/24 (default via 172.16.N.1)
#                l0 10.90.N.1/24       (PREFIX-cN: c0 10.90.N.2/24, default via .1)
#   PREFIX-nat   u0 192.168.90.99/24 (masquerade, random ports)   iN 172.16.N.1/24 towards peer N
# Traffic stays inside these namespaces.
# Usage: netns-hub-topology.sh up PREFIX PEERS [NATTED...]   e.g. up otnh 4 3 4 (peers 3 and 4 behind the NAT)
#        netns-hub-topology.sh rebind PREFIX                 forget the NAT's mappings (conntrack -F):
#                                                            the next datagrams get new ports
#        netns-hub-topology.sh down PREFIX
set -euo pipefail
action="$1"; p="$2"
namespaces() { ip netns list | awk '{print $1}' | grep -E "^$p-(sw|hub|srv|nat|p[0-9]+|c[0-9]+)$" || true; }
case "$action" in
down)
  for ns in $(namespaces); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  ;;
rebind)
  ip netns exec "$p-nat" conntrack -F >/dev/null 2>&1
  ;;
up)
  peers="$3"; shift 3
  natted=" $* "
  tmp="onh$$"
  add() { ip netns add "$1"; ip -n "$1" link set lo up; }
  pair() { ip link add "${tmp}a" type veth peer name "${tmp}b"; ip link set "${tmp}a" netns "$1" name "$2"; ip link set "${tmp}b" netns "$3" name "$4"
           ip -n "$1" link set "$2" up; ip -n "$3" link set "$4" up; }
  nooffload() { ip netns exec "$1" ethtool -K "$2" tso off gso off gro off >/dev/null 2>&1 || true; }
  add "$p-sw"; ip -n "$p-sw" link add br0 type bridge; ip -n "$p-sw" link set br0 up
  port() { pair "$p-sw" "$1" "$2" u0; ip -n "$p-sw" link set "$1" master br0; }
  add "$p-hub"; add "$p-srv"
  port u-hub "$p-hub"; ip -n "$p-hub" addr add 192.168.90.1/24 dev u0
  pair "$p-hub" l0 "$p-srv" s0
  ip -n "$p-hub" addr add 10.80.0.1/24 dev l0; ip -n "$p-srv" addr add 10.80.0.2/24 dev s0
  ip -n "$p-srv" route add default via 10.80.0.1; nooffload "$p-srv" s0; nooffload "$p-hub" l0
  ip netns exec "$p-hub" sysctl -qw net.ipv4.ip_forward=1
  if [ -n "$(echo $natted)" ]; then
    add "$p-nat"; port u-nat "$p-nat"; ip -n "$p-nat" addr add 192.168.90.99/24 dev u0
    ip netns exec "$p-nat" sysctl -qw net.ipv4.ip_forward=1
    ip netns exec "$p-nat" nft -f - <<NFT
table ip nat {
  chain post { type nat hook postrouting priority 100; oifname "u0" masquerade random; }
}
NFT
  fi
  for n in $(seq 1 "$peers"); do
    add "$p-p$n"; add "$p-c$n"
    if [[ "$natted" == *" $n "* ]]; then
      pair "$p-nat" "i$n" "$p-p$n" u0
      ip -n "$p-nat" addr add "172.16.$n.1/24" dev "i$n"; ip -n "$p-p$n" addr add "172.16.$n.2/24" dev u0
      ip -n "$p-p$n" route add default via "172.16.$n.1"
    else
      port "u-p$n" "$p-p$n"; ip -n "$p-p$n" addr add "192.168.90.$((10 + n))/24" dev u0
    fi
    pair "$p-p$n" l0 "$p-c$n" c0
    ip -n "$p-p$n" addr add "10.90.$n.1/24" dev l0; ip -n "$p-c$n" addr add "10.90.$n.2/24" dev c0
    ip -n "$p-c$n" route add default via "10.90.$n.1"; nooffload "$p-c$n" c0; nooffload "$p-p$n" l0
    ip netns exec "$p-p$n" sysctl -qw net.ipv4.ip_forward=1
  done
  ;;
*) echo "usage: $0 up PREFIX PEERS [NATTED...] | rebind PREFIX | down PREFIX" >&2; exit 2 ;;
esac
