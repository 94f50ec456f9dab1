#!/usr/bin/python3
"""Captures for the --dpi spec, written with scapy (no sluice, no nDPI):

  dpi_traffic.py OUT.pcap TRUTH.json N [raw]
      N DNS queries and answers (UDP), N TLS handshakes whose ClientHello
      names a server (SNI), N HTTP GETs with a Host header, over IPv4 and
      IPv6; TRUTH.json lists each flow (proto, client, cport, server,
      sport) with its kind and the name the client asked for. raw: IP
      packets without a link layer (link type 101).
"""
import json
import sys

from scapy.all import IP, IPv6, TCP, UDP, Ether, PcapWriter  # noqa: E402
from scapy.layers.dns import DNS, DNSQR, DNSRR  # noqa: E402
from scapy.layers.tls.all import (TLS, TLSClientHello, TLS_Ext_ServerName,  # noqa: E402
                                  ServerName, TLS_Ext_SupportedGroups,
                                  TLS_Ext_SignatureAlgorithms)

BASE = 1700000100.0
NAMES = ["www.google.com", "www.youtube.com", "www.netflix.com", "www.facebook.com",
         "example.org", "www.wikipedia.org", "api.github.com", "www.amazon.com"]


def main(argv):
    out, truth_path, n = argv[1], argv[2], int(argv[3])
    raw = len(argv) > 4 and argv[4] == "raw"
    w = PcapWriter(out, linktype=101 if raw else 1, sync=True)
    t = [BASE]
    truth = []

    def put(pkt):
        t[0] += 0.0005
        if raw:
            pkt = pkt.payload
        pkt.time = t[0]
        w.write(pkt)

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")

    def ip(i, cli, srv):
        if i % 4 == 3:
            return (lambda: IPv6(src="2001:db8:1::%x" % cli, dst="2001:db8:2::%x" % srv),
                    lambda: IPv6(src="2001:db8:2::%x" % srv, dst="2001:db8:1::%x" % cli),
                    "2001:db8:1::%x" % cli, "2001:db8:2::%x" % srv)
        return (lambda: IP(src="10.1.0.%d" % cli, dst="10.2.0.%d" % srv),
                lambda: IP(src="10.2.0.%d" % srv, dst="10.1.0.%d" % cli),
                "10.1.0.%d" % cli, "10.2.0.%d" % srv)

    def tcp_session(i, cport, sport, request, response, kind, name):
        fwd, rev, c, s = ip(i, 1 + i % 200, 1 + i % 50)
        seq, ack = 1000 + i, 5000 + i
        put(eth / fwd() / TCP(sport=cport, dport=sport, flags="S", seq=seq))
        put(eth / rev() / TCP(sport=sport, dport=cport, flags="SA", seq=ack, ack=seq + 1))
        put(eth / fwd() / TCP(sport=cport, dport=sport, flags="A", seq=seq + 1, ack=ack + 1))
        put(eth / fwd() / TCP(sport=cport, dport=sport, flags="PA", seq=seq + 1, ack=ack + 1) / request)
        seq += 1 + len(request)
        put(eth / rev() / TCP(sport=sport, dport=cport, flags="A", seq=ack + 1, ack=seq))
        if response:
            put(eth / rev() / TCP(sport=sport, dport=cport, flags="PA", seq=ack + 1, ack=seq) / response)
            ack += len(response)
        put(eth / fwd() / TCP(sport=cport, dport=sport, flags="FA", seq=seq, ack=ack + 1))
        put(eth / rev() / TCP(sport=sport, dport=cport, flags="FA", seq=ack + 1, ack=seq + 1))
        put(eth / fwd() / TCP(sport=cport, dport=sport, flags="A", seq=seq + 1, ack=ack + 2))
        truth.append({"proto": "tcp", "src": c, "sport": cport, "dst": s, "dport": sport,
                      "kind": kind, "name": name})

    for i in range(n):
        name = NAMES[i % len(NAMES)]
        # DNS
        fwd, rev, c, s = ip(i, 1 + i % 200, 53)
        cport = 30000 + i
        q = DNS(id=i, rd=1, qd=DNSQR(qname=name, qtype="A"))
        put(eth / fwd() / UDP(sport=cport, dport=53) / q)
        a = DNS(id=i, qr=1, rd=1, ra=1, qd=DNSQR(qname=name, qtype="A"),
                an=DNSRR(rrname=name, type="A", ttl=60, rdata="192.0.2.%d" % (1 + i % 250)))
        put(eth / rev() / UDP(sport=53, dport=cport) / a)
        truth.append({"proto": "udp", "src": c, "sport": cport, "dst": s, "dport": 53,
                      "kind": "dns", "name": name})
        # TLS
        hello = TLS(msg=[TLSClientHello(
            ciphers=[0x1301, 0x1302, 0xc02f, 0xc030],
            ext=[TLS_Ext_ServerName(servernames=[ServerName(servername=name.encode())]),
                 TLS_Ext_SupportedGroups(groups=[29, 23]),
                 TLS_Ext_SignatureAlgorithms(sig_algs=[0x0403, 0x0804])])])
        tcp_session(i, 40000 + i, 443, bytes(hello), None, "tls", name)
        # HTTP
        req = ("GET /index.html HTTP/1.1\r\nHost: %s\r\nUser-Agent: curl/7.88.1\r\n"
               "Accept: */*\r\n\r\n" % name).encode()
        resp = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello")
        tcp_session(i, 50000 + i, 80, req, resp, "http", name)
    w.close()
    with open(truth_path, "w") as f:
        json.dump(truth, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
