-- IP fragments: every fragment of a datagram joins the flow of its first
-- fragment (the one with the ports).
--
-- A later fragment is matched to its first by what all fragments of a
-- datagram share: addresses, fragment id and, for IPv4, the protocol field;
-- for IPv6 the Fragment header's next header (not the upper-layer protocol:
-- Destination Options or AH may follow the Fragment header, RFC 8200 4.1).
-- The first-fragment table keeps datagrams whose keys collide, so thousands
-- of datagrams in flight, their fragments interleaved, all keep their
-- packets. Unmatched fragments are shown by -v.
--
-- Captures are written by scapy (/usr/bin/python3) or by struct in Python;
-- the expected counts are the generator's, not sluice's.
local run = require "support.run"

local SLUICE, q = run.SLUICE, run.q
local PY = "/usr/bin/python3"

local function python(dir, name, script, ...)
  run.spit(dir .. "/" .. name, script)
  local args = {}
  for i, a in ipairs { ... } do args[i] = q(a) end
  local r = run.sh(run.PLAIN .. PY .. " " .. q(dir .. "/" .. name) .. " " .. table.concat(args, " "))
  assert(r.code == 0, "python could not write the capture:\n" .. run.describe(r))
  return r
end

-- Runs sluice -v on path: the run and its flow records.
local function flows(path, extra)
  local dir = run.tmpdir()
  local out = dir .. "/out.json"
  local r = run.sh(string.format("%s run -r %s -v -q --out json:%s %s", SLUICE, q(path), q(out),
    extra or ""))
  assert(r.code == 0, run.describe(r))
  return r, run.of_type(run.json_lines(out), "flow")
end

local function describe_flows(list)
  local t = {}
  for _, f in ipairs(list) do
    t[#t + 1] = string.format("%s %s:%s -> %s:%s pkts %d+%d bytes %d+%d", tostring(f.proto),
      f.src, f.sport, f.dst, f.dport, f.pkts_fwd, f.pkts_rev, f.bytes_fwd, f.bytes_rev)
  end
  table.sort(t)
  return table.concat(t, "\n")
end

describe("fragments with extension headers after the Fragment header", function()
  local path
  setup(function()
    local dir = run.tmpdir()
    path = dir .. "/ext.pcap"
    -- datagrams of distinct source ports
    python(dir, "ext.py", [[
import sys, json
from scapy.all import (Ether as E, IP, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrDestOpt,
                       IPv6ExtHdrHopByHop, AH, UDP, TCP, Raw, fragment, fragment6, wrpcap)
def Ether(*a, **k):
    return E(*a, src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **k)
s6, d6 = "2001:db8::1", "2001:db8::2"
cases = [
    # v6: Destination Options after the Fragment header
    IPv6(src=s6, dst=d6) / IPv6ExtHdrFragment(id=0x700) / IPv6ExtHdrDestOpt()
        / UDP(sport=4444, dport=53) / Raw(b"E" * 3000),
    # v6: AH after the Fragment header (RFC 8200's order; scapy leaves
    # AH's next header and length to the caller: 12 bytes + the ICV)
    IPv6(src=s6, dst=d6) / IPv6ExtHdrFragment(id=0x701)
        / AH(nh=17, payloadlen=4, spi=1, icv=b"\0" * 12)
        / UDP(sport=4445, dport=53) / Raw(b"E" * 3000),
    # v6: Hop-by-Hop before, Destination Options after, TCP
    IPv6(src=s6, dst=d6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(id=0x702)
        / IPv6ExtHdrDestOpt() / TCP(sport=4446, dport=80, flags="PA") / Raw(b"T" * 4000),
    # v6: nothing after the Fragment header
    IPv6(src=s6, dst=d6) / IPv6ExtHdrFragment(id=0x703) / UDP(sport=4447, dport=53)
        / Raw(b"E" * 3000),
]
pkts = [fragment6(Ether() / c, 1280) for c in cases]
# v4: a UDP and a TCP datagram of one id between the same hosts (RFC 791:
# two datagrams, told apart by the protocol field), and one with options
for sp, l4, opts in ((4448, UDP(sport=4448, dport=53), []),
                     (4449, TCP(sport=4449, dport=80, flags="PA"), []),
                     (4450, UDP(sport=4450, dport=53), [b"\x94\x04\x00\x00"])):
    ip = IP(src="10.9.0.1", dst="10.9.0.2", id=0x77 if sp < 4450 else 0x78)
    if opts:
        ip.options = opts
    pkts.append(fragment(Ether() / ip / l4 / Raw(b"V" * 3000), fragsize=1000))
# interleave the datagrams, each in its own order
out, t = [], 1700000000.0
while any(pkts):
    for fr in pkts:
        if fr:
            p = fr.pop(0)
            t += 0.001
            p.time = t
            out.append(p)
wrpcap(sys.argv[1], out)
]], path)
  end)

  it("puts every fragment in its datagram's flow", function()
    -- the expected flows: one per datagram, with every fragment
    local want = {
      [4444] = { proto = "udp", pkts = 3 }, [4445] = { proto = "udp", pkts = 3 },
      [4446] = { proto = "tcp", pkts = 4 }, [4447] = { proto = "udp", pkts = 3 },
      [4448] = { proto = "udp", pkts = 4 }, [4449] = { proto = "tcp", pkts = 4 },
      [4450] = { proto = "udp", pkts = 4 },
    }
    for _, extra in ipairs { "", "--workers 2" } do
      local r, list = flows(path, extra)
      assert.are.equal(7, #list, "a flow per datagram (" .. extra .. "):\n" .. describe_flows(list))
      for _, f in ipairs(list) do
        local w = want[f.sport]
        assert(w, "a flow of no datagram:\n" .. describe_flows(list))
        assert.are.equal(w.proto, f.proto, describe_flows(list))
        assert.are.equal(w.pkts, f.pkts_fwd, describe_flows(list))
      end
      assert.is_nil(r.err:match("fragments without"), run.describe(r))
    end
  end)

  it("counts each datagram's bytes in its flow", function()
    -- the frame bytes of each datagram, as scapy wrote them (tshark is not
    -- needed: the capture's record lengths are the truth)
    local data = run.slurp(path)
    local recs = run.pcap_records(data)
    local total = 0
    for _, rec in ipairs(recs) do total = total + rec.wirelen end
    local _, list = flows(path)
    local pkts, bytes = run.flow_totals(list)
    assert.are.equal(#recs, pkts)
    assert.are.equal(total, bytes)
  end)
end)

describe("fragments without their first fragment", function()
  it("are shown by -v, only when there are some", function()
    local dir = run.tmpdir()
    local path = dir .. "/lone.pcap"
    python(dir, "lone.py", [[
import sys
from scapy.all import Ether, IP, UDP, Raw, fragment, wrpcap
fr = fragment(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
              / IP(src="10.9.1.1", dst="10.9.1.2", id=5) / UDP(sport=1, dport=2)
              / Raw(b"x" * 3000), fragsize=1000)
for i, p in enumerate(fr):
    p.time = 1700000000 + i * 0.001
wrpcap(sys.argv[1], fr[1:])   # the first fragment was not captured
]], path)
    for _, extra in ipairs { "", "--workers 2" } do
      local r = flows(path, extra)
      assert(r.err:match("\nfragments without their first fragment 3 %(in flows without ports%)\n"),
        run.describe(r))
    end
  end)
end)

describe("thousands of fragmented datagrams in flight", function()
  local path, truth
  setup(function()
    local dir = run.tmpdir()
    path = dir .. "/many.pcap"
    -- 20,000 UDP datagrams of 2-4 fragments from 5,000 flows, 1,000 in
    -- flight at a time, their fragments interleaved (each datagram's own
    -- order kept: the first fragment comes first); IPv4 and IPv6.
    python(dir, "many.py", [[
import json, random, struct, sys
random.seed(7)
W, N = 1000, 20000
ETH = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01"
def frags4(src, dst, sp, ident, size):
    udp = struct.pack(">HHHH", sp, 53, 8 + size, 0) + b"u" * size
    out, off = [], 0
    while off < len(udp):
        chunk = udp[off:off + 1480]
        mf = 1 if off + 1480 < len(udp) else 0
        h = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(chunk), ident & 0xffff,
                        (mf << 13) | (off // 8), 64, 17, 0, src, dst)
        out.append(ETH + b"\x08\x00" + h + chunk)
        off += 1480
    return out
def frags6(src, dst, sp, ident, size):
    udp = struct.pack(">HHHH", sp, 53, 8 + size, 0) + b"u" * size
    out, off = [], 0
    while off < len(udp):
        chunk = udp[off:off + 1448]
        mf = 1 if off + 1448 < len(udp) else 0
        fh = struct.pack(">BBHI", 17, 0, off | mf, ident)
        h = struct.pack(">IHBB16s16s", 6 << 28, 8 + len(chunk), 44, 64, src, dst)
        out.append(ETH + b"\x86\xdd" + h + fh + chunk)
        off += 1448
    return out
truth, ident, active, pk, d = {}, {}, [], [], 0
while d < N or active:
    while len(active) < W and d < N:
        f = random.randrange(5000)
        sp = 10000 + f
        ident[f] = ident.get(f, random.randrange(1 << 16)) + 1
        size = random.choice([2000, 3000, 4400])
        if f % 4 == 0:
            fr = frags6(b"\x20\x01\x0d\xb8" + bytes(10) + bytes([f >> 8, f & 255]),
                        b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01", sp, ident[f], size)
        else:
            fr = frags4(bytes([10, 70, f >> 8, f & 255]), bytes([10, 71, 0, 1]), sp, ident[f], size)
        t = truth.setdefault(str(sp), [0, 0])
        t[0] += len(fr)
        t[1] += sum(len(x) for x in fr)
        active.append(fr)
        d += 1
    i = random.randrange(len(active))
    pk.append(active[i].pop(0))
    if not active[i]:
        active[i] = active[-1]
        active.pop()
with open(sys.argv[1], "wb") as o:
    o.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    for n, p in enumerate(pk):
        ts = 1700004000 * 10**6 + n * 20
        o.write(struct.pack("<IIII", ts // 10**6, ts % 10**6, len(p), len(p)) + p)
json.dump(truth, open(sys.argv[1] + ".truth", "w"))
]], path)
    truth = run.decode(run.slurp(path .. ".truth"))
  end)

  it("keeps every fragment in its flow", function()
    for _, extra in ipairs { "", "--workers 2" } do
      local r, list = flows(path, extra)
      local wrong, seen = {}, 0
      for _, f in ipairs(list) do
        local t = truth[tostring(f.sport)]
        if not t or f.pkts_fwd ~= t[1] or f.bytes_fwd ~= t[2] or f.pkts_rev ~= 0 then
          wrong[#wrong + 1] = string.format("%s:%s -> %s pkts %d bytes %d, want %s", f.src,
            f.sport, f.dport, f.pkts_fwd, f.bytes_fwd, t and (t[1] .. "/" .. t[2]) or "none")
        else
          seen = seen + 1
        end
      end
      local n = 0
      for _ in pairs(truth) do n = n + 1 end
      assert.are.equal(0, #wrong, #wrong .. " flows wrong (" .. extra .. "), e.g.:\n" ..
        table.concat(wrong, "\n", 1, math.min(#wrong, 10)))
      assert.are.equal(n, seen)
      assert.is_nil(r.err:match("fragments without"), run.describe(r))
    end
  end)
end)
