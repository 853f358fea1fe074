#!/usr/bin/env python3
"""An independent ESP implementation for the tests: scapy's SecurityAssociation (with the
cryptography package) encrypts and decrypts ESP-in-UDP (RFC 3948) in tunnel mode.

  esp-scapy.py decrypt CAPTURE ALGORITHM KEYHEX SPI ESN
      prints the hex of each inner packet of CAPTURE's ESP datagrams with SPI, one per line
      (a datagram that does not decrypt prints "FAIL")
  esp-scapy.py encrypt HEXFILE CAPTURE ALGORITHM KEYHEX SPI ESN SOURCE DESTINATION
      encrypts each inner packet of HEXFILE (hex, one per line) with sequence numbers 1, 2, ...
      and writes IP/UDP 4500/ESP packets to CAPTURE

ALGORITHM: aes128gcm16, aes256gcm16 or chacha20poly1305; KEYHEX: key and 4-byte salt; ESN: 0 or 1.
"""
import sys

from scapy.all import IP, IPv6, UDP, raw, rdpcap, wrpcap
from scapy.layers.ipsec import ESP, SecurityAssociation

NAMES = {"aes128gcm16": "AES-GCM", "aes256gcm16": "AES-GCM", "chacha20poly1305": "CHACHA20-POLY1305"}


def association(algorithm, keyhex, spi, esn, tunnel=None):
    return SecurityAssociation(ESP, spi=int(spi, 0), crypt_algo=NAMES[algorithm], crypt_key=bytes.fromhex(keyhex),
                               crypt_icv_size=16, tunnel_header=tunnel,
                               nat_t_header=UDP(sport=4500, dport=4500), esn_en=esn == "1", esn=0)


def main():
    if sys.argv[1] == "decrypt":
        _, _, capture, algorithm, keyhex, spi, esn = sys.argv
        sa = association(algorithm, keyhex, spi, esn)
        for packet in rdpcap(capture):
            if ESP not in packet or packet[ESP].spi != int(spi, 0):
                continue
            try:
                inner = sa.decrypt(packet)
            except Exception:  # a wrong ICV, a bad packet
                print("FAIL")
                continue
            # Tunnel mode: what is left after the outer headers is the inner IP packet.
            payload = inner[UDP].payload if UDP in inner and inner[UDP].dport == 4500 else inner.payload
            print(raw(payload).hex())
    elif sys.argv[1] == "encrypt":
        _, _, hexfile, capture, algorithm, keyhex, spi, esn, source, destination = sys.argv
        outer = IPv6(src=source, dst=destination) if ":" in source else IP(src=source, dst=destination)
        sa = association(algorithm, keyhex, spi, esn, tunnel=outer)
        packets = []
        for n, line in enumerate(open(hexfile).read().split()):
            data = bytes.fromhex(line)
            inner = IPv6(data) if data[0] >> 4 == 6 else IP(data)
            packets.append(sa.encrypt(inner, seq_num=n + 1, iv=(n + 1).to_bytes(8, "big")))
        wrpcap(capture, packets)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
