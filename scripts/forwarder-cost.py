#!/usr/bin/env python3
"""One line of scripts/bench-forward.sh's cost table: a forwarder's CPU seconds per Gbit moved and
its system calls (TUN reads, writes and ICMP writes, from its --stats-json counters) per MB moved.
Usage: forwarder-cost.py STATS.json LABEL GBIT_PER_S CPU_SECONDS SECONDS"""
import json
import sys

stats = json.load(open(sys.argv[1]))
label, gbps, cpu, secs = sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
gbit = max(gbps * secs, 1e-9)
calls = sum(d["packetsIn"] + d["packetsOut"] + d["icmpSent"] for d in stats.values())
print(f"{label:<22} {cpu / gbit:8.3f} CPU s per Gbit {calls / (gbit * 125):9.1f} system calls per MB")
