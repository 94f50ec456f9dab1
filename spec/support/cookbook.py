#!/usr/bin/python3
"""Ground truth for the cookbook spec, computed without sluice: captures
read with scapy, prefixes with python's ipaddress.

  cookbook.py scan OUT.pcap                 writes a capture with a port
      scan, a host sweep and ordinary connections, in one minute
  cookbook.py expect-scan PCAP PORTS HOSTS  JSON: the findings expected of
      examples/scan_detect.lua over the whole capture as one slice
  cookbook.py expect-subnets PCAP P4 P6     JSON: bytes and packets sent
      and received per subnet
  cookbook.py expect-allow FLOWS.json ALLOW SIDE  JSON: flow ids that
      have an end outside the allowed prefixes, from sluice's flow lines
"""
import ipaddress
import json
import sys

from scapy.all import IP, IPv6, TCP, UDP, Ether, PcapWriter, rdpcap  # noqa: E402

BASE = 1700000040.0  # a whole minute, so a 60 s slice holds the capture


def write_scan(path):
    w = PcapWriter(path, linktype=1, sync=True)
    t = [BASE]

    def put(pkt):
        t[0] += 0.001
        pkt.time = t[0]
        w.write(pkt)

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    # a vertical scan: 150 ports of one host, no answers
    for port in range(1000, 1150):
        put(eth / IP(src="10.9.9.9", dst="10.0.0.5") / TCP(sport=40000, dport=port, flags="S"))
    # a sweep: port 22 of 70 hosts, some answer with a reset
    for host in range(1, 71):
        dst = "10.1.0.%d" % host
        put(eth / IP(src="10.8.8.8", dst=dst) / TCP(sport=41000 + host, dport=22, flags="S"))
        if host % 3 == 0:
            put(eth / IP(src=dst, dst="10.8.8.8") / TCP(sport=22, dport=41000 + host, flags="RA"))
    # an IPv6 scan of 120 ports
    for port in range(2000, 2120):
        put(eth / IPv6(src="2001:db8::66", dst="2001:db8::5") / TCP(sport=40001, dport=port, flags="S"))
    # ordinary connections from a few clients to a few servers
    for c in range(1, 6):
        for s in range(1, 4):
            cli, srv, sport = "192.168.1.%d" % c, "172.16.0.%d" % s, 50000 + c * 10 + s
            put(eth / IP(src=cli, dst=srv) / TCP(sport=sport, dport=443, flags="S"))
            put(eth / IP(src=srv, dst=cli) / TCP(sport=443, dport=sport, flags="SA"))
            put(eth / IP(src=cli, dst=srv) / TCP(sport=sport, dport=443, flags="A"))
            put(eth / IP(src=cli, dst=srv) / UDP(sport=sport, dport=53) / (b"q" * 20))
    w.close()


def ip_layer(pkt):
    if IP in pkt:
        return pkt[IP]
    if IPv6 in pkt:
        return pkt[IPv6]
    return None


def expect_scan(path, min_ports, min_hosts):
    # flows: key (canonical) -> initiator, dst, dport, packets
    flows = {}
    for pkt in rdpcap(path):
        ip = ip_layer(pkt)
        if ip is None or TCP not in pkt:
            continue
        a, b = (ip.src, pkt[TCP].sport), (ip.dst, pkt[TCP].dport)
        key = (min(a, b), max(a, b))
        f = flows.get(key)
        if f is None:
            f = flows[key] = {"src": ip.src, "dst": ip.dst, "dport": pkt[TCP].dport, "pkts": 0}
        f["pkts"] += 1
    per = {}
    for f in flows.values():
        s = per.setdefault(f["src"], {"ports": set(), "hosts": set(), "flows": 0, "pkts": 0})
        s["ports"].add(f["dport"])
        s["hosts"].add(f["dst"])
        s["flows"] += 1
        s["pkts"] += f["pkts"]
    out = []
    for src, s in per.items():
        canon = str(ipaddress.ip_address(src))
        if len(s["ports"]) >= min_ports:
            out.append({"kind": "ports", "src": canon, "count": len(s["ports"]),
                        "flows": s["flows"], "pkts": s["pkts"]})
        if len(s["hosts"]) >= min_hosts:
            out.append({"kind": "hosts", "src": canon, "count": len(s["hosts"]),
                        "flows": s["flows"], "pkts": s["pkts"]})
    return out


def expect_subnets(path, p4, p6):
    per = {}

    def net(a):
        ip = ipaddress.ip_address(a)
        n = ipaddress.ip_network("%s/%d" % (a, p4 if ip.version == 4 else p6), strict=False)
        full = 32 if ip.version == 4 else 128
        plen = p4 if ip.version == 4 else p6
        return str(n.network_address) if plen == full else str(n)

    for pkt in rdpcap(path):
        ip = ip_layer(pkt)
        if ip is None:
            continue
        size = pkt.wirelen or len(pkt)
        for side, name in ((ip.src, "out"), (ip.dst, "in")):
            s = per.setdefault(net(side), {"bytes_out": 0, "bytes_in": 0, "pkts_out": 0, "pkts_in": 0})
            s["bytes_" + name] += size
            s["pkts_" + name] += 1
    return per


def expect_allow(flows_path, allow, side):
    nets = [ipaddress.ip_network(p.strip(), strict=False) for p in allow.split(",") if p.strip()]

    def allowed(a):
        ip = ipaddress.ip_address(a)
        return any(ip.version == n.version and ip in n for n in nets)

    out = []
    with open(flows_path) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("type") != "flow":
                continue
            bad = (side != "dst" and not allowed(rec["src"])) or (side != "src" and not allowed(rec["dst"]))
            if bad:
                out.append(rec["id"])
    return sorted(out)


def main(argv):
    cmd = argv[1]
    if cmd == "scan":
        write_scan(argv[2])
        return
    if cmd == "expect-scan":
        res = expect_scan(argv[2], int(argv[3]), int(argv[4]))
    elif cmd == "expect-subnets":
        res = expect_subnets(argv[2], int(argv[3]), int(argv[4]))
    elif cmd == "expect-allow":
        res = expect_allow(argv[2], argv[3], argv[4])
    else:
        raise SystemExit("unknown command " + cmd)
    json.dump(res, sys.stdout)


if __name__ == "__main__":
    main(sys.argv)
