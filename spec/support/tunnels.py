#!/usr/bin/python3
"""Tunnelled captures for spec/tunnels_spec.lua.

    /usr/bin/python3 spec/support/tunnels.py OUTDIR

Writes one small classic pcap per case into OUTDIR and prints on stdout a
JSON manifest: a list of

    { "case", "file", "linktype", "packets", "ethernet" (true when the case
      is on Ethernet and goes into mixed.pcap),
      "tunnel", "tunnel_id", "tunnel_src", "tunnel_dst" (what the flow
      records of the case must carry; null: the field is absent),
      "vlan" (outer VLAN id of the flows, 0 when untagged),
      "tshark_id" ({ "field", "occurrence": "first"|"last" } or null: the
      tshark field that shows tunnel_id in the first packet) }

followed by the two whole-capture entries "plain" (every inner
conversation of the Ethernet cases, untunnelled, on Ethernet) and
"mixed" (every packet of the Ethernet cases, in time order), which have
"tunnel": null.

Each case carries short bidirectional inner conversations (TCP handshake,
data, FIN; a UDP exchange; an ICMP echo pair; for IPv6 the same with
ICMPv6), with inner addresses that no other case uses. Packets from the
inner initiator go through the tunnel forward (outer src -> outer dst),
replies backward (outer addresses swapped). Where the protocol has an id
per direction (PPTP call id, GTP-U TEID) the replies carry a different
id: the flow records must carry the forward one (the flow's first packet).
Timestamps are fixed: packet j of case i is at T0 + j*STEP + i*0.001, so
the cases interleave in mixed.pcap and every run writes the same bytes.

Needs scapy (Debian python3-scapy, 2.5). Run it with /usr/bin/python3.
"""

import ipaddress
import json
import logging
import os
import struct
import sys

from scapy.all import (Ether, Dot1Q, IP, IPv6, TCP, UDP, ICMP, GRE, GRE_PPTP, PPPoE,
                       PPP, HDLC, Dot11, Dot11QoS, LLC, SNAP, RadioTap, Raw,
                       ICMPv6EchoRequest, ICMPv6EchoReply, load_contrib, wrpcap)

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)  # mixed link types
load_contrib("mpls")
load_contrib("erspan")
load_contrib("geneve")
load_contrib("gtp")
from scapy.contrib.mpls import MPLS  # noqa: E402
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III  # noqa: E402
from scapy.contrib.geneve import GENEVE, GeneveOptions  # noqa: E402
from scapy.contrib.gtp import GTP_U_Header, GTPPDUSessionContainer  # noqa: E402
from scapy.layers.vxlan import VXLAN  # noqa: E402

T0 = 1700000000
STEP = 0.05

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
MAC_IA = "02:00:00:00:01:0a"   # inner Ethernet (TEB, ERSPAN, VXLAN, Geneve)
MAC_IB = "02:00:00:00:01:0b"
BSSID = "02:00:00:00:02:00"

LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9
LINKTYPE_PPP_HDLC = 50
LINKTYPE_C_HDLC = 104
LINKTYPE_IEEE802_11 = 105
LINKTYPE_LOOP = 108
LINKTYPE_RADIOTAP = 127
LINKTYPE_PPI = 192
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_SLL2 = 276


def norm(addr):
    """An address as tshark (and sluice) print it."""
    return str(ipaddress.ip_address(addr))


# ---- inner conversations ----------------------------------------------------

def inner_addrs(i, ver):
    if ver == 4:
        return "10.%d.1.1" % i, "10.%d.2.2" % i
    return "2001:db8:%x:1::1" % i, "2001:db8:%x:2::2" % i


def conversation(i, ver):
    """[(direction, L3 packet)]: direction 0 from the initiator a, 1 back."""
    a, b = inner_addrs(i, ver)
    L3 = IP if ver == 4 else IPv6

    def fwd(l4):
        return (0, L3(src=a, dst=b) / l4)

    def rev(l4):
        return (1, L3(src=b, dst=a) / l4)

    cport, sport = 40000 + i, 8000 + i
    cs, ss = 1000 * i + 1, 5000 * i + 7
    req, resp = b"GET / HTTP/1.0\r\n\r\n", b"HTTP/1.0 200 OK\r\n\r\nhello tunnel %d" % i
    pkts = [
        fwd(TCP(sport=cport, dport=sport, flags="S", seq=cs)),
        rev(TCP(sport=sport, dport=cport, flags="SA", seq=ss, ack=cs + 1)),
        fwd(TCP(sport=cport, dport=sport, flags="A", seq=cs + 1, ack=ss + 1)),
        fwd(TCP(sport=cport, dport=sport, flags="PA", seq=cs + 1, ack=ss + 1) / req),
        rev(TCP(sport=sport, dport=cport, flags="PA", seq=ss + 1, ack=cs + 1 + len(req)) / resp),
        fwd(TCP(sport=cport, dport=sport, flags="FA", seq=cs + 1 + len(req),
                ack=ss + 1 + len(resp))),
        rev(TCP(sport=sport, dport=cport, flags="FA", seq=ss + 1 + len(resp),
                ack=cs + 2 + len(req))),
        fwd(TCP(sport=cport, dport=sport, flags="A", seq=cs + 2 + len(req),
                ack=ss + 2 + len(resp))),
    ]
    uc, us = 50000 + i, 7000 + i
    pkts += [
        fwd(UDP(sport=uc, dport=us) / (b"ping %d" % i)),
        rev(UDP(sport=us, dport=uc) / (b"pong %d, a longer answer" % i)),
        fwd(UDP(sport=uc, dport=us) / b"bye"),
    ]
    if ver == 4:
        pkts += [fwd(ICMP(type=8, id=0x100 + i, seq=1) / (b"x" * 32)),
                 rev(ICMP(type=0, id=0x100 + i, seq=1) / (b"x" * 32))]
    else:
        pkts += [fwd(ICMPv6EchoRequest(id=0x100 + i, seq=1, data=b"y" * 32)),
                 rev(ICMPv6EchoReply(id=0x100 + i, seq=1, data=b"y" * 32))]
    return pkts


def conversations(i, vers):
    out = []
    for v in vers:
        out += conversation(i, v)
    return out


# ---- building blocks ----------------------------------------------------------

def eth(d, payload, a=MAC_A, b=MAC_B):
    return (Ether(src=a, dst=b) if d == 0 else Ether(src=b, dst=a)) / payload


def eth_type(d, etype, payload, a=MAC_A, b=MAC_B):
    src, dst = (a, b) if d == 0 else (b, a)
    return Ether(src=src, dst=dst, type=etype) / payload


def inner_eth(d, l3):
    return eth(d, l3, MAC_IA, MAC_IB)


def ethertype_of(l3):
    return 0x0800 if isinstance(l3, IP) else 0x86dd


def ppp_proto(l3):
    return 0x0021 if isinstance(l3, IP) else 0x0057


def outer_ip(ver, i, d, proto):
    """The carrying IP header, forward (d == 0) or reversed."""
    s, t = outer_addrs(ver, i)
    if d:
        s, t = t, s
    if ver == 4:
        return IP(src=s, dst=t, proto=proto)
    return IPv6(src=s, dst=t, nh=proto)


def outer_addrs(ver, i, level=0):
    if ver == 4:
        return "192.0.%d.%d" % (2 + level, i), "198.51.%d.%d" % (100 + level, i)
    return "2001:db8:ff%02x::%x" % (level, i), "2001:db8:fe%02x::%x" % (level, i)


def llc_snap(l3):
    return LLC(dsap=0xaa, ssap=0xaa, ctrl=3) / SNAP(OUI=0, code=ethertype_of(l3)) / l3


def dot11(d, l3, qos_reverse=False):
    """An 802.11 data frame: to the AP forward, from the AP backward (a QoS
    data frame there when qos_reverse)."""
    if d == 0:
        hdr = Dot11(type=2, subtype=0, FCfield="to-DS", addr1=BSSID, addr2=MAC_A, addr3=MAC_B)
        return hdr / llc_snap(l3)
    if qos_reverse:
        hdr = Dot11(type=2, subtype=8, FCfield="from-DS", addr1=MAC_A, addr2=BSSID, addr3=MAC_B)
        return hdr / Dot11QoS(TID=5) / llc_snap(l3)
    hdr = Dot11(type=2, subtype=0, FCfield="from-DS", addr1=MAC_A, addr2=BSSID, addr3=MAC_B)
    return hdr / llc_snap(l3)


def capwap_data(l3, d):
    """A CAPWAP data header (RFC 5415; HLEN 2 words, RID 1, WBID 1 = IEEE
    802.11, T = 1: the payload is a native 802.11 frame) and the frame."""
    word = (0 << 24) | (2 << 19) | (1 << 14) | (1 << 9) | (1 << 8)
    return struct.pack(">II", word, 0) + bytes(dot11(d, l3))


# ---- cases ----------------------------------------------------------------------

CASES = []


def case(name, vers, linktype=LINKTYPE_ETHERNET, tunnel=None, tunnel_id=None, outer=None,
         vlan=0, tshark_id=None, occurrence="last", level=0):
    def deco(fn):
        CASES.append(dict(name=name, vers=vers, linktype=linktype, tunnel=tunnel,
                          tunnel_id=tunnel_id, outer=outer, vlan=vlan, wrap=fn, level=level,
                          tshark_id=tshark_id and {"field": tshark_id, "occurrence": occurrence}))
        return fn
    return deco


@case("mpls_1", [4], tunnel="mpls", tunnel_id=100, tshark_id="mpls.label", occurrence="first")
def _(i, d, l3):
    return eth_type(d, 0x8847, MPLS(label=100, s=1, ttl=64) / l3)


@case("mpls_3", [6], tunnel="mpls", tunnel_id=200, tshark_id="mpls.label", occurrence="first")
def _(i, d, l3):
    return eth_type(d, 0x8847, MPLS(label=200, s=0) / MPLS(label=300, s=0) /
                    MPLS(label=400, s=1) / l3)


@case("mpls_8848", [4, 6], tunnel="mpls", tunnel_id=1000, tshark_id="mpls.label",
      occurrence="first")
def _(i, d, l3):
    return eth_type(d, 0x8848, MPLS(label=1000, s=0) / MPLS(label=16, s=1) / l3)


@case("pppoe", [4, 6], tunnel="pppoe", tunnel_id=0x1234, tshark_id="pppoe.session_id")
def _(i, d, l3):
    return eth_type(d, 0x8864, PPPoE(sessionid=0x1234) / PPP(proto=ppp_proto(l3)) / l3)


@case("pppoe_vlan", [4], tunnel="pppoe", tunnel_id=0x2b, vlan=10,
      tshark_id="pppoe.session_id")
def _(i, d, l3):
    return eth_type(d, 0x8100, Dot1Q(vlan=10, type=0x8864) / PPPoE(sessionid=0x2b) /
                    PPP(proto=ppp_proto(l3)) / l3)


@case("gre", [4], tunnel="gre", outer=4)
def _(i, d, l3):
    return eth(d, outer_ip(4, i, d, 47) / GRE(proto=0x0800) / l3)


@case("gre_key_seq_csum", [6], tunnel="gre", tunnel_id=0x01020304, outer=4,
      tshark_id="gre.key")
def _(i, d, l3):
    return eth(d, outer_ip(4, i, d, 47) /
               GRE(chksum_present=1, key_present=1, seqnum_present=1, proto=0x86dd,
                   key=0x01020304, sequence_number=77 + d) / l3)


def pptp(i, d, l3, hdlc):
    # the call id is the peer's: one per direction
    call = 0x4001 if d == 0 else 0x5002
    ppp = PPP(proto=ppp_proto(l3)) / l3
    if hdlc:
        ppp = HDLC(address=0xff, control=0x03) / ppp
    return eth(d, outer_ip(4, i, d, 47) /
               GRE_PPTP(key_present=1, seqnum_present=1, version=1, proto=0x880b,
                        call_id=call, sequence_number=i) / ppp)


@case("pptp", [4, 6], tunnel="gre", tunnel_id=0x4001, outer=4, tshark_id="gre.key.call_id")
def _(i, d, l3):
    return pptp(i, d, l3, True)


@case("pptp_acfc", [4], tunnel="gre", tunnel_id=0x4001, outer=4, tshark_id="gre.key.call_id")
def _(i, d, l3):
    return pptp(i, d, l3, False)


@case("gre_teb", [4], tunnel="gre", outer=4)
def _(i, d, l3):
    return eth(d, outer_ip(4, i, d, 47) / GRE(proto=0x6558) / inner_eth(d, l3))


@case("erspan2", [4], tunnel="erspan", tunnel_id=321, outer=4, tshark_id="erspan.spanid")
def _(i, d, l3):
    return eth(d, outer_ip(4, i, d, 47) /
               GRE(seqnum_present=1, proto=0x88be, sequence_number=i) /
               ERSPAN_II(ver=1, session_id=321, index=5) / inner_eth(d, l3))


@case("erspan3", [6], tunnel="erspan", tunnel_id=654, outer=4, tshark_id="erspan.spanid")
def _(i, d, l3):
    return eth(d, outer_ip(4, i, d, 47) /
               GRE(seqnum_present=1, proto=0x22eb, sequence_number=i) /
               ERSPAN_III(ver=2, session_id=654, timestamp=123456, o=0) / inner_eth(d, l3))


@case("ipip_4in4", [4], tunnel="ipip", outer=4)
def _(i, d, l3):
    return eth(d, outer_ip(4, i, d, 4) / l3)


@case("ipip_6in4", [6], tunnel="ipip", outer=4)
def _(i, d, l3):
    return eth(d, outer_ip(4, i, d, 41) / l3)


@case("ipip_4in6", [4], tunnel="ipip", outer=6)
def _(i, d, l3):
    return eth(d, outer_ip(6, i, d, 4) / l3)


@case("ipip_6in6", [6], tunnel="ipip", outer=6)
def _(i, d, l3):
    return eth(d, outer_ip(6, i, d, 41) / l3)


def udp_tunnel(i, d, ver, dport, payload, sport=None):
    """UDP to the tunnel port both ways, each end with its own source port."""
    o = outer_ip(ver, i, d, 17)
    return eth(d, o / UDP(sport=sport or (49152 + 2 * i + d), dport=dport) / payload)


@case("vxlan", [4, 6], tunnel="vxlan", tunnel_id=5001, outer=4, tshark_id="vxlan.vni")
def _(i, d, l3):
    return udp_tunnel(i, d, 4, 4789, VXLAN(flags=0x08, vni=5001) / inner_eth(d, l3))


@case("geneve", [4], tunnel="geneve", tunnel_id=0xabcde, outer=6, tshark_id="geneve.vni")
def _(i, d, l3):
    opt = GeneveOptions(classid=0x0102, type=0x80, data=b"\x00\x00\x00\x2a")
    return udp_tunnel(i, d, 6, 6081,
                      GENEVE(proto=0x6558, vni=0xabcde, options=[opt]) / inner_eth(d, l3))


@case("gtpu", [4], tunnel="gtpu", tunnel_id=0x11111111, outer=4, tshark_id="gtp.teid")
def _(i, d, l3):
    teid = 0x11111111 if d == 0 else 0x22222222
    return udp_tunnel(i, d, 4, 2152, GTP_U_Header(gtp_type=255, teid=teid) / l3, sport=2152)


@case("gtpu_ext", [6, 4], tunnel="gtpu", tunnel_id=0x0a0b0c0d, outer=6, tshark_id="gtp.teid")
def _(i, d, l3):
    teid = 0x0a0b0c0d if d == 0 else 0x01020304
    ext = GTPPDUSessionContainer(type=1 if d == 0 else 0, QFI=9, NextExtHdr=0)
    return udp_tunnel(i, d, 6, 2152,
                      GTP_U_Header(gtp_type=255, teid=teid, E=1, next_ex=0x85) / ext / l3,
                      sport=2152)


@case("capwap", [4, 6], tunnel="capwap", outer=4)
def _(i, d, l3):
    # WTP (forward side, port 40000+i) <-> AC data port 5247
    wtp = 40000 + i
    o = outer_ip(4, i, d, 17)
    udp = UDP(sport=wtp, dport=5247) if d == 0 else UDP(sport=5247, dport=wtp)
    return eth(d, o / udp / Raw(capwap_data(l3, d)))


@case("nested", [4], tunnel="vxlan", tunnel_id=7007, outer=4, tshark_id="vxlan.vni")
def _(i, d, l3):
    # Ethernet / MPLS / IPv4 / GRE (key) / IPv4 / UDP / VXLAN / Ethernet / inner
    s, t = outer_addrs(4, i, 0)     # the VXLAN carrier (innermost tunnel)
    g1, g2 = outer_addrs(4, i, 1)   # the GRE carrier
    if d:
        s, t, g1, g2 = t, s, g2, g1
    vx = IP(src=s, dst=t) / UDP(sport=49152 + i, dport=4789) / VXLAN(vni=7007) / \
        inner_eth(d, l3)
    gre = IP(src=g1, dst=g2, proto=47) / GRE(key_present=1, key=99, proto=0x0800) / vx
    return eth_type(d, 0x8847, MPLS(label=500, s=1) / gre)


@case("nested_4", [4], tunnel="gtpu", tunnel_id=0x44, outer=4, level=3, tshark_id="gtp.teid")
def _(i, d, l3):
    # four tunnels, the most sluice follows: IPv4 A / GRE / IPv4 B / UDP / VXLAN /
    # Ethernet / IPv6 C / IPv4 D (IP-in-IP) / UDP / GTP-U / inner
    a1, a2 = outer_addrs(4, i, 0)
    b1, b2 = outer_addrs(4, i, 1)
    c1, c2 = outer_addrs(6, i, 2)
    d1, d2 = outer_addrs(4, i, 3)
    if d:
        a1, a2, b1, b2, c1, c2, d1, d2 = a2, a1, b2, b1, c2, c1, d2, d1
    gtp = IP(src=d1, dst=d2) / UDP(sport=2152, dport=2152) / \
        GTP_U_Header(gtp_type=255, teid=0x44 if d == 0 else 0x55) / l3
    vx = IP(src=b1, dst=b2) / UDP(sport=49152 + i, dport=4789) / VXLAN(vni=88) / \
        inner_eth(d, IPv6(src=c1, dst=c2, nh=4) / gtp)
    return eth(d, IP(src=a1, dst=a2, proto=47) / GRE(proto=0x0800) / vx)


# link types: no tunnel
def hdlc_ppp(l3):
    return HDLC(address=0xff, control=0x03) / PPP(proto=ppp_proto(l3)) / l3


@case("lt_ppp", [4, 6], linktype=LINKTYPE_PPP)
def _(i, d, l3):
    return hdlc_ppp(l3)


@case("lt_ppp_noac", [4, 6], linktype=LINKTYPE_PPP)
def _(i, d, l3):
    # DLT_PPP without the 0xff 0x03 address and control (libpcap allows both)
    return PPP(proto=ppp_proto(l3)) / l3


@case("lt_ppp_hdlc", [4, 6], linktype=LINKTYPE_PPP_HDLC)
def _(i, d, l3):
    return hdlc_ppp(l3)


@case("lt_c_hdlc", [4, 6], linktype=LINKTYPE_C_HDLC)
def _(i, d, l3):
    return Raw(struct.pack(">BBH", 0x0f, 0x00, ethertype_of(l3)) + bytes(l3))


@case("lt_ieee802_11", [4, 6], linktype=LINKTYPE_IEEE802_11)
def _(i, d, l3):
    return dot11(d, l3, qos_reverse=True)


@case("lt_loop", [4, 6], linktype=LINKTYPE_LOOP)
def _(i, d, l3):
    return Raw(struct.pack(">I", 2 if isinstance(l3, IP) else 24) + bytes(l3))


@case("lt_radiotap", [4, 6], linktype=LINKTYPE_RADIOTAP)
def _(i, d, l3):
    return RadioTap(present="Flags+Rate", Flags=0, Rate=12) / dot11(d, l3, qos_reverse=True)


@case("lt_ppi_eth", [4, 6], linktype=LINKTYPE_PPI)
def _(i, d, l3):
    return Raw(struct.pack("<BBHI", 0, 0, 8, LINKTYPE_ETHERNET) + bytes(eth(d, l3)))


@case("lt_ppi_80211", [4, 6], linktype=LINKTYPE_PPI)
def _(i, d, l3):
    return Raw(struct.pack("<BBHI", 0, 0, 8, LINKTYPE_IEEE802_11) +
               bytes(dot11(d, l3, qos_reverse=True)))


@case("lt_sll2", [4, 6], linktype=LINKTYPE_SLL2)
def _(i, d, l3):
    mac = bytes.fromhex((MAC_B if d else MAC_A).replace(":", ""))
    hdr = struct.pack(">HHIHBB8s", ethertype_of(l3), 0, 3, 1, 4 if d == 0 else 0, 6, mac)
    return Raw(hdr + bytes(l3))


@case("lt_ipv4", [4], linktype=LINKTYPE_IPV4)
def _(i, d, l3):
    return l3


@case("lt_ipv6", [6], linktype=LINKTYPE_IPV6)
def _(i, d, l3):
    return l3


# ---- output ---------------------------------------------------------------------

def stamp(pkt, t):
    pkt.time = t
    return pkt


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: tunnels.py OUTDIR")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    manifest, mixed, plain = [], [], []
    for n, c in enumerate(CASES):
        i = n + 1   # inner addresses 10.i.x.x / 2001:db8:i:..., outer .i
        conv = conversations(i, c["vers"])
        pkts = []
        for j, (d, l3) in enumerate(conv):
            t = T0 + j * STEP + i * 0.001
            t = round(t, 6)
            pkts.append(stamp(c["wrap"](i, d, l3), t))
            if c["linktype"] == LINKTYPE_ETHERNET:
                plain.append(stamp(eth(d, l3), t))
        path = os.path.join(outdir, c["name"] + ".pcap")
        wrpcap(path, pkts, linktype=c["linktype"])
        if c["linktype"] == LINKTYPE_ETHERNET:
            mixed += pkts
        src = dst = None
        if c["outer"]:
            src, dst = (norm(a) for a in outer_addrs(c["outer"], i, c["level"]))
        manifest.append({
            "case": c["name"], "file": path, "linktype": c["linktype"],
            "packets": len(pkts), "ethernet": c["linktype"] == LINKTYPE_ETHERNET,
            "tunnel": c["tunnel"], "tunnel_id": c["tunnel_id"],
            "tunnel_src": src, "tunnel_dst": dst, "vlan": c["vlan"],
            "tshark_id": c["tshark_id"],
        })
    for name, pkts in (("plain", plain), ("mixed", mixed)):
        pkts.sort(key=lambda p: p.time)
        path = os.path.join(outdir, name + ".pcap")
        wrpcap(path, pkts, linktype=LINKTYPE_ETHERNET)
        manifest.append({"case": name, "file": path, "linktype": LINKTYPE_ETHERNET,
                         "packets": len(pkts), "ethernet": True, "tunnel": None,
                         "tunnel_id": None, "tunnel_src": None, "tunnel_dst": None,
                         "vlan": None, "tshark_id": None})
    json.dump(manifest, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
