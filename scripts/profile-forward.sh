#!/usr/bin/env bash
# Where the forwarder's threads spend their time under one iperf3 stream (perf, root): the share of
# the kernel, of the system-call path (entry/exit, readv/writev, the TUN read and write code) and of
# the copies inside it. It bounds what batching system calls (io_uring, a TPACKET_V3 ring) could save:
# the copies and the network stack's own work stay.
# Usage: scripts/profile-forward.sh [extra offload forward arguments]   e.g. --keep-ingress-gro
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
command -v perf >/dev/null || { echo "perf is not installed" >&2; exit 1; }
(cd "$root" && swift build -c release --product offload >/dev/null)
p="pfw$$"
data="$(mktemp /tmp/profile-forward.XXXXXX)"
cleanup() { pkill -TERM -f "[s]tats-json /tmp/$p.json" || true; pkill -f "[i]perf3 -s -p 5299" || true; sleep 0.5
  "$root/scripts/netns-topology.sh" down "$p" >/dev/null 2>&1 || true; rm -f "$data" "/tmp/$p.json"; }
trap cleanup EXIT
"$root/scripts/netns-topology.sh" up "$p" >/dev/null
ip netns exec "$p-server" iperf3 -s -p 5299 -D
sleep 0.5
ip netns exec "$p-gw" setsid "$root/.build/release/offload" forward --ingress ofw0 --egress ofw1 --setup --lan g0 --wan g1 \
  --stats-json "/tmp/$p.json" "$@" > /dev/null 2>&1 < /dev/null &
sleep 1.5
pid="$(pgrep -f "[s]tats-json /tmp/$p.json")"
ip netns exec "$p-client" iperf3 -c 10.77.2.2 -p 5299 -t 6 > "$data.iperf" 2>&1 &
client=$!
sleep 1.5
perf record -q -g -p "$pid" -o "$data" -- sleep 3 2>/dev/null
wait "$client" || true
grep receiver "$data.iperf" | awk '{print "goodput:", $7, $8}'
rm -f "$data.iperf"
perf report -i "$data" --stdio --no-children --sort dso 2>/dev/null | awk '/^ +[0-9]/ {print "  " $0}' | head -4
perf report -i "$data" --stdio --no-children --sort sym 2>/dev/null | python3 -c '
import re, sys
rows = [(float(m.group(1)), m.group(2)) for m in (re.match(r"\s+([\d.]+)%\s+\S+\s+(\S+)", l) for l in sys.stdin) if m]
copies = sum(p for p, s in rows if s in ("_copy_to_iter", "_copy_from_iter", "simple_copy_to_iter"))
path = re.compile(r"syscall|entry_SYSCALL|irqentry_exit|__x64_sys_|^do_(readv|writev)|vfs_(readv|writev)|do_iter_readv_writev|^tun_|readv|writev|__poll")
calls = sum(p for p, s in rows if path.search(s))
print(f"system-call path (entry/exit, readv/writev, TUN read/write code): {calls:.1f}% of the samples")
print(f"copies between user and kernel: {copies:.1f}%  (batching keeps them)")
print(f"upper bound of what batching the calls could save: {calls:.1f}% of the forwarder threads time")
print("top kernel symbols:")
for p, s in rows[:8]: print(f"  {p:5.2f}%  {s}")
'
