#!/usr/bin/env python3
"""Sends TCP segments nothing can merge through a forwarder: every one carries PSH and one byte,
spread over many flows (raw socket; root). Bounded in count and time.

Usage: tcp-flood.py SOURCE DESTINATION COUNT FLOWS [SECONDS]
Prints the number of segments sent.
"""
import socket
import struct
import sys
import time

src, dst, count, flows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
deadline = time.monotonic() + (float(sys.argv[5]) if len(sys.argv) > 5 else 30)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
pseudo_base = socket.inet_aton(src) + socket.inet_aton(dst)
sent = 0
for i in range(count):
    if i % 1000 == 0 and time.monotonic() > deadline:
        break
    flow = i % flows
    sport, dport = 20000 + flow % 40000, 9 + flow // 40000
    header = struct.pack("!HHIIBBHHH", sport, dport, 1000 + i // flows, 0, 5 << 4, 0x18, 1024, 0, 0)
    payload = b"x"
    pseudo = pseudo_base + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(header) + 1)
    tcp = header[:16] + struct.pack("!H", checksum(pseudo + header + payload)) + header[18:]
    s.sendto(tcp + payload, (dst, 0))
    sent += 1
print(sent)
