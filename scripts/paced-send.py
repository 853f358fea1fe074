#!/usr/bin/env python3
"""Sends a file over TCP at a bounded rate (tests need a transfer long enough to disturb).

Usage: paced-send.py FILE HOST PORT MBYTES_PER_SECOND [TIMEOUT_SECONDS]
Exits 0 when every byte was sent and the connection closed cleanly, 1 otherwise.
"""
import socket
import sys
import time

path, host, port, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
deadline = time.monotonic() + (float(sys.argv[5]) if len(sys.argv) > 5 else 120)
family = socket.AF_INET6 if ":" in host else socket.AF_INET
chunk = 64 * 1024
with open(path, "rb") as f, socket.socket(family, socket.SOCK_STREAM) as s:
    s.settimeout(60)
    s.connect((host, port))
    start = time.monotonic()
    sent = 0
    while time.monotonic() < deadline:
        data = f.read(chunk)
        if not data:
            s.shutdown(socket.SHUT_WR)
            sys.exit(0)
        s.sendall(data)
        sent += len(data)
        ahead = sent / (rate * 1e6) - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
sys.exit(1)
