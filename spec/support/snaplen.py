#!/usr/bin/python3
"""Captures for spec/snaplen_spec.lua: headers cut by the capture length.

    /usr/bin/python3 spec/support/snaplen.py OUTDIR

Writes OUTDIR/full.pcap: an 8-packet TCP connection with data both ways
(10.1.0.1:40000 <-> 10.1.0.2:80, history ShADdFf), a UDP packet, a SYN in
VLAN 100, a SYN with IPv4 options (record route, 12 bytes) and an IPv6 SYN
behind hop-by-hop and destination options headers. The spec cuts it with
editcap -s N. Also OUTDIR/tiny.pcap: an IPv4 first fragment carrying only
8 bytes of TCP header and an IPv6 one carrying 16, each with its later
fragment (TCP 45000 -> 443, a PSH/ACK with 40 bytes of data).

Needs scapy (Debian python3-scapy). Run it with /usr/bin/python3.
"""

import logging
import sys

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.all import (IP, IPv6, TCP, UDP, Dot1Q, Ether, IPOption_RR,  # noqa: E402
                       IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                       IPv6ExtHdrHopByHop, Raw, wrpcap)

ETH = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def full(path):
    pk, t = [], [1700000100.0]

    def add(p):
        t[0] += 0.001
        p.time = t[0]
        pk.append(p)

    c, s = "10.1.0.1", "10.1.0.2"
    e = Ether(**ETH)
    add(e / IP(src=c, dst=s) / TCP(sport=40000, dport=80, flags="S", seq=100))
    add(e / IP(src=s, dst=c) / TCP(sport=80, dport=40000, flags="SA", seq=500, ack=101))
    add(e / IP(src=c, dst=s) / TCP(sport=40000, dport=80, flags="A", seq=101, ack=501))
    add(e / IP(src=c, dst=s) / TCP(sport=40000, dport=80, flags="PA", seq=101, ack=501)
        / Raw(b"GET / HTTP/1.0\r\n\r\n"))
    add(e / IP(src=s, dst=c) / TCP(sport=80, dport=40000, flags="PA", seq=501, ack=119)
        / Raw(b"x" * 1000))
    add(e / IP(src=c, dst=s) / TCP(sport=40000, dport=80, flags="FA", seq=119, ack=1501))
    add(e / IP(src=s, dst=c) / TCP(sport=80, dport=40000, flags="FA", seq=1501, ack=120))
    add(e / IP(src=c, dst=s) / TCP(sport=40000, dport=80, flags="A", seq=120, ack=1502))
    add(e / IP(src=c, dst=s) / UDP(sport=5000, dport=53) / Raw(b"q" * 30))
    add(e / Dot1Q(vlan=100) / IP(src=c, dst=s) / TCP(sport=40001, dport=80, flags="S"))
    add(e / IP(src=c, dst=s, options=[IPOption_RR(routers=["1.1.1.1", "2.2.2.2"])])
        / TCP(sport=40002, dport=22, flags="S"))
    add(e / IPv6(src="2001:db8::a", dst="2001:db8::b") / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt() / TCP(sport=40003, dport=443, flags="S"))
    wrpcap(path, pk)


def tiny(path):
    seg = bytes(TCP(sport=45000, dport=443, flags="PA", seq=1, ack=1, window=8192)
                / Raw(b"y" * 40))
    v4 = dict(src="10.20.0.1", dst="10.20.0.2", id=300, proto=6)
    v6 = dict(src="2001:db8::20", dst="2001:db8::21")
    e = Ether(**ETH)
    pk = [e / IP(flags="MF", frag=0, **v4) / Raw(seg[:8]),
          e / IP(frag=1, **v4) / Raw(seg[8:]),
          e / IPv6(**v6) / IPv6ExtHdrFragment(nh=6, offset=0, m=1, id=5) / Raw(seg[:16]),
          e / IPv6(**v6) / IPv6ExtHdrFragment(nh=6, offset=2, m=0, id=5) / Raw(seg[16:])]
    for i, p in enumerate(pk):
        p.time = 1700000700.0 + i * 0.001
    wrpcap(path, pk)


if __name__ == "__main__":
    full(sys.argv[1] + "/full.pcap")
    tiny(sys.argv[1] + "/tiny.pcap")
