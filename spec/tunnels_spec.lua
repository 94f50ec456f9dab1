-- Tunnels: a tunnelled packet joins the flow of its innermost IP packet;
-- records name the innermost tunnel of the flow's first packet (tunnel,
-- tunnel_src, tunnel_dst, tunnel_id); --tunnels outer keys flows by the
-- outermost IP header; the new link types decode.
--
-- The captures come from spec/support/tunnels.py (scapy, run with
-- /usr/bin/python3), one per case, with a manifest of what each case's
-- records must carry. The expected flows are tshark's, not sluice's: every
-- packet of every case is read once by tshark (the case files concatenated
-- into one pcapng, several link types in it) and grouped by its innermost
-- (or, for --tunnels outer, outermost) IP 5-tuple. Without scapy, tshark or
-- mergecap the tests are pending with the reason, also written to stderr.
local run = require "support.run"

local q = run.q
local SLUICE = run.SLUICE
local PY = "/usr/bin/python3"
local GEN = run.root .. "/spec/support/tunnels.py"

-- The cases tunnels.py writes, on Ethernet, each with its tunnel.
local TUNNEL_CASES = {
  "mpls_1", "mpls_3", "mpls_8848", "pppoe", "pppoe_vlan", "gre", "gre_key_seq_csum", "pptp",
  "pptp_acfc", "gre_teb", "erspan2", "erspan3", "ipip_4in4", "ipip_6in4", "ipip_4in6",
  "ipip_6in6", "vxlan", "geneve", "gtpu", "gtpu_ext", "capwap", "nested", "nested_4",
}
-- One per link type, no tunnel.
local LINKTYPE_CASES = {
  { "lt_ppp", 9 }, { "lt_ppp_noac", 9 }, { "lt_ppp_hdlc", 50 }, { "lt_c_hdlc", 104 },
  { "lt_ieee802_11", 105 }, { "lt_loop", 108 }, { "lt_radiotap", 127 }, { "lt_ppi_eth", 192 },
  { "lt_ppi_80211", 192 }, { "lt_ipv4", 228 }, { "lt_ipv6", 229 }, { "lt_sll2", 276 },
}

local TUNNEL_FIELDS = { "tunnel", "tunnel_src", "tunnel_dst", "tunnel_id" }

-- tshark fields, in this order (-E occurrence=a: every occurrence, joined
-- with commas, outermost first).
local TSHARK_FIELDS = {
  "frame.len", "frame.protocols", "ip.src", "ip.dst", "ip.proto", "ipv6.src", "ipv6.dst",
  "ipv6.nxt", "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport",
  -- what tshark shows as the tunnel ids
  "mpls.label", "pppoe.session_id", "gre.key", "gre.key.call_id", "erspan.spanid",
  "vxlan.vni", "geneve.vni", "gtp.teid",
}
-- capwap: the 802.11 frame control is not byte-swapped in these captures
local TSHARK_OPTS = "-o capwap.swap_fc:FALSE -d udp.port==5247,capwap.data"

local PROTO_NUM = { icmp = 1, igmp = 2, tcp = 6, udp = 17, gre = 47, esp = 50, ah = 51,
  icmp6 = 58, sctp = 132 }

local function list_of(s)
  local t = {}
  for v in (s or ""):gmatch("[^,]+") do t[#t + 1] = v end
  return t
end

-- A flow key: protocol number and the two endpoints, sorted; ports only
-- for TCP and UDP.
local function key_of(proto, a, ap, b, bp)
  proto = tonumber(proto)
  local e1, e2 = a, b
  if proto == 6 or proto == 17 then
    e1, e2 = a .. " " .. tostring(ap), b .. " " .. tostring(bp)
  end
  if e2 < e1 then e1, e2 = e2, e1 end
  return proto .. " " .. e1 .. " | " .. e2
end

-- One tshark line as a packet: its IP layers, outermost first, with the
-- transport ports of the first and last ones, and the innermost tunnel as
-- tshark sees it.
local function parse_packet(line)
  local cols, n = {}, 0
  for c in (line .. "\t"):gmatch("([^\t]*)\t") do
    n = n + 1
    cols[TSHARK_FIELDS[n]] = c
  end
  assert(n == #TSHARK_FIELDS, "tshark line with " .. n .. " columns: " .. line)
  local layers = {}
  for p in cols["frame.protocols"]:gmatch("[^:]+") do layers[#layers + 1] = p end
  local v4 = { src = list_of(cols["ip.src"]), dst = list_of(cols["ip.dst"]),
    proto = list_of(cols["ip.proto"]) }
  local v6 = { src = list_of(cols["ipv6.src"]), dst = list_of(cols["ipv6.dst"]),
    proto = list_of(cols["ipv6.nxt"]) }
  local ips, n4, n6 = {}, 0, 0
  local tunnel, carrier
  local last_ip
  for k, p in ipairs(layers) do
    if p == "ip" or p == "ipv6" then
      local t, i
      if p == "ip" then n4 = n4 + 1; t, i = v4, n4 else n6 = n6 + 1; t, i = v6, n6 end
      local l = { version = p == "ip" and 4 or 6, src = t.src[i], dst = t.dst[i],
        proto = tonumber(t.proto[i]) }
      assert(l.src and l.dst and l.proto, "tshark: an IP layer without addresses: " .. line)
      ips[#ips + 1] = l
      if layers[k + 1] == "ip" or layers[k + 1] == "ipv6" then
        tunnel, carrier = "ipip", l
      end
      last_ip = l
    elseif p == "mpls" then tunnel, carrier = "mpls", nil
    elseif p == "pppoes" then tunnel, carrier = "pppoe", nil
    elseif p == "gre" then
      tunnel, carrier = layers[k + 1] == "erspan" and "erspan" or "gre", last_ip
    elseif p == "vxlan" or p == "geneve" then tunnel, carrier = p, last_ip
    elseif p == "gtp" then tunnel, carrier = "gtpu", last_ip
    elseif p == "capwap.data" then tunnel, carrier = "capwap", last_ip
    end
  end
  assert(n4 == #v4.src and n6 == #v6.src,
    "tshark: IP layers in frame.protocols and addresses disagree: " .. line)
  -- ports: the first and the last TCP / UDP header
  local ports = {}
  for _, tr in ipairs { "tcp", "udp" } do
    local s, d = list_of(cols[tr .. ".srcport"]), list_of(cols[tr .. ".dstport"])
    ports[tr] = { first = { s[1], d[1] }, last = { s[#s], d[#d] } }
  end
  local function key(l, which)
    if not l then return nil end
    local tr = (l.proto == 6 and "tcp") or (l.proto == 17 and "udp")
    local sp, dp
    if tr then
      sp, dp = ports[tr][which][1], ports[tr][which][2]
      assert(sp and dp, "tshark: no " .. tr .. " ports: " .. line)
    end
    return key_of(l.proto, l.src, sp, l.dst, dp)
  end
  local ids = {}
  for i = 13, #TSHARK_FIELDS do ids[TSHARK_FIELDS[i]] = list_of(cols[TSHARK_FIELDS[i]]) end
  return {
    len = tonumber(cols["frame.len"]), line = line, ips = ips,
    inner = key(ips[#ips], "last"), outer = key(ips[1], "first"),
    inner_version = ips[#ips] and ips[#ips].version,
    tunnel = tunnel, carrier = carrier, ids = ids,
  }
end

-- Flows (key -> { pkts, bytes }) of a list of packets, by "inner" or "outer".
local function group(pkts, which)
  local t = {}
  for _, p in ipairs(pkts) do
    local k = p[which]
    assert(k, "tshark found no IP packet in: " .. p.line)
    local e = t[k] or { pkts = 0, bytes = 0 }
    e.pkts, e.bytes = e.pkts + 1, e.bytes + p.len
    t[k] = e
  end
  return t
end

-- Flows of sluice records, the same way; and the records by key.
local function sluice_flows(recs)
  local t, by = {}, {}
  for _, f in ipairs(recs) do
    if f.type == "flow" then
      local proto = PROTO_NUM[f.proto] or tonumber(f.proto)
      assert(proto, "unknown proto in record: " .. tostring(f.proto))
      local k = key_of(proto, f.src, f.sport, f.dst, f.dport)
      local e = t[k] or { pkts = 0, bytes = 0 }
      e.pkts = e.pkts + f.pkts_fwd + f.pkts_rev
      e.bytes = e.bytes + f.bytes_fwd + f.bytes_rev
      t[k] = e
      by[k] = f
    end
  end
  return t, by
end

local function only_pkts(flows)
  local t = {}
  for k, e in pairs(flows) do t[k] = e.pkts end
  return t
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

-- ---- the captures, tshark's view of them, once ----------------------------------

-- Made once; without scapy, tshark or mergecap the tests are pending.
local need = run.once("tunnels_spec", { "scapy", "tshark", "mergecap" }, function()
  local dir = run.tmpdir()
  local r = run.sh(run.PLAIN .. PY .. " " .. q(GEN) .. " " .. q(dir))
  assert(r.code == 0, "tunnels.py failed\n" .. run.describe(r))
  local manifest = run.decode(r.out)
  local null = require("cjson").null
  local cases, files, total = {}, {}, 0
  for _, m in ipairs(manifest) do
    for k, v in pairs(m) do if v == null then m[k] = nil end end
    cases[m.case] = m
    files[#files + 1] = q(m.file)
    total = total + m.packets
  end
  -- tshark once: every case file, in manifest order, in one pcapng
  local all = dir .. "/all.pcapng"
  r = run.sh(run.PLAIN .. "mergecap -a -F pcapng -w " .. q(all) .. " " ..
    table.concat(files, " "))
  assert(r.code == 0, run.describe(r))
  local fields = {}
  for _, f in ipairs(TSHARK_FIELDS) do fields[#fields + 1] = "-e " .. f end
  r = run.sh(run.PLAIN .. "tshark -n -r " .. q(all) .. " " .. TSHARK_OPTS ..
    " -T fields -E separator=/t -E occurrence=a -E aggregator=, " ..
    table.concat(fields, " "))
  assert(r.code == 0, run.describe(r))
  local lines = {}
  for l in r.out:gmatch("[^\n]+") do lines[#lines + 1] = l end
  assert(#lines == total, "tshark read " .. #lines .. " packets of " .. total)
  local n = 0
  for _, m in ipairs(manifest) do
    m.pkts = {}
    for _ = 1, m.packets do
      n = n + 1
      m.pkts[#m.pkts + 1] = parse_packet(lines[n])
    end
  end
  return { cases = cases, manifest = manifest, dir = dir }
end, pending)

local function case_of(st, name)
  local m = st.cases[name]
  assert(m, "tunnels.py wrote no case " .. name)
  return m
end

local function sluice_on(file, extra)
  local r, recs = run.sluice_json("-r " .. q(file) .. (extra or ""))
  assert(r.code == 0, run.describe(r))
  return recs, r
end

local function show(f)
  return require("cjson").encode(f)
end

-- The flows of a case: those tshark sees, packets and frame bytes.
local function check_flows(m, recs, r)
  local want = group(m.pkts, "inner")
  local got, by = sluice_flows(recs)
  assert(count(want) > 0)
  assert.are.same(want, got, "case " .. m.case .. ": flows (key -> packets, bytes)\n" ..
    "sluice stderr: " .. (r and r.err or ""))
  return by
end

local function tunnel_of(f)
  local t = {}
  for _, k in ipairs(TUNNEL_FIELDS) do t[k] = f[k] end
  return t
end

local function expected_tunnel(m)
  return { tunnel = m.tunnel, tunnel_src = m.tunnel_src, tunnel_dst = m.tunnel_dst,
    tunnel_id = m.tunnel_id }
end

describe("tunnels", function()
  teardown(function()
    run.cleanup()
  end)

  it("tshark reads every generated packet down to an inner IP packet, and sees the tunnel, " ..
     "its carrier addresses and its id the manifest names", function()
    local st = need()
    if not st then return end
    local seen = 0
    for _, m in ipairs(st.manifest) do
      assert(#m.pkts == m.packets and m.packets > 0, m.case)
      local v = {}
      for _, p in ipairs(m.pkts) do
        assert(p.inner, "case " .. m.case .. ": tshark found no inner IP in: " .. p.line)
        v[p.inner_version] = true
        if m.case ~= "mixed" then
          -- every packet of a case is in the same tunnel (ids may differ by direction)
          assert.are.equal(m.tunnel or "none", p.tunnel or "none",
            "case " .. m.case .. ": " .. p.line)
        end
        -- the inner transport header is the last one
        local l = p.ips[#p.ips]
        assert(l.proto == 6 or l.proto == 17 or l.proto == 1 or l.proto == 58,
          "case " .. m.case .. ": inner protocol " .. l.proto .. ": " .. p.line)
      end
      -- the first packet goes forward: its tunnel is the flows'
      local first = m.pkts[1]
      if m.tunnel_src then
        assert(first.carrier, "case " .. m.case .. ": no carrier: " .. first.line)
        assert.are.same({ m.tunnel_src, m.tunnel_dst }, { first.carrier.src, first.carrier.dst },
          "case " .. m.case)
      elseif m.tunnel then
        assert(m.tunnel == "mpls" or m.tunnel == "pppoe", m.case .. ": carrier addresses missing")
      end
      if m.tshark_id then
        local occ = first.ids[m.tshark_id.field]
        assert(#occ > 0, "case " .. m.case .. ": tshark has no " .. m.tshark_id.field)
        local id = tonumber(m.tshark_id.occurrence == "first" and occ[1] or occ[#occ])
        assert.are.equal(m.tunnel_id, id, "case " .. m.case .. ": " .. m.tshark_id.field)
        seen = seen + 1
      else
        assert(m.tunnel_id == nil, "case " .. m.case .. ": an id tshark is not asked about")
      end
      -- cases with IPv4 and IPv6 inside have both
      if m.case == "pppoe" or m.case == "vxlan" or m.case == "lt_sll2" then
        assert(v[4] and v[6], "case " .. m.case .. ": IPv4 and IPv6 inside")
      end
    end
    assert(seen >= 15, "tunnel ids checked against tshark: " .. seen)
    -- the reverse direction of PPTP and GTP-U carries another id: the first
    -- packet's must win
    local pptp = case_of(st, "pptp").pkts
    assert.are_not.equal(pptp[1].ids["gre.key.call_id"][1], pptp[2].ids["gre.key.call_id"][1])
  end)

  for _, name in ipairs(TUNNEL_CASES) do
    it(name .. ": flows of the innermost packets, as tshark groups them, with the tunnel " ..
       "of their first packet", function()
      local st = need()
      if not st then return end
      local m = case_of(st, name)
      assert(m.tunnel, name .. " has a tunnel")
      local recs, r = sluice_on(m.file)
      local by = check_flows(m, recs, r)
      local want = expected_tunnel(m)
      for _, f in pairs(by) do
        assert.are.same(want, tunnel_of(f), "case " .. name .. ": " .. show(f))
        assert.are.equal(m.vlan, f.vlan or 0, "case " .. name .. ": vlan: " .. show(f))
      end
    end)
  end

  for _, lt in ipairs(LINKTYPE_CASES) do
    local name, linktype = lt[1], lt[2]
    it(name .. ": link type " .. linktype .. " gives the flows tshark sees, no tunnel", function()
      local st = need()
      if not st then return end
      local m = case_of(st, name)
      assert.are.equal(linktype, m.linktype)
      -- the file says so
      local data = run.slurp(m.file)
      local b1, b2, b3, b4 = data:byte(21, 24)
      assert.are.equal(linktype, b1 + b2 * 256 + b3 * 65536 + b4 * 16777216, "pcap link type")
      local recs, r = sluice_on(m.file)
      local by = check_flows(m, recs, r)
      for _, f in pairs(by) do
        assert.are.same({}, tunnel_of(f), "case " .. name .. ": " .. show(f))
      end
    end)
  end

  it("plain: the inner conversations untunnelled, no tunnel fields", function()
    local st = need()
    if not st then return end
    local m = case_of(st, "plain")
    local recs, r = sluice_on(m.file)
    local by = check_flows(m, recs, r)
    for _, f in pairs(by) do assert.are.same({}, tunnel_of(f), show(f)) end
  end)

  it("mixed, inner (the default): the flows of the plain capture, each with its case's tunnel",
    function()
    local st = need()
    if not st then return end
    local recs, r = sluice_on(case_of(st, "mixed").file)
    local got, by = sluice_flows(recs)
    local plain_recs = sluice_on(case_of(st, "plain").file)
    local plain = sluice_flows(plain_recs)
    -- against tshark, independently of sluice's plain run
    local want = group(case_of(st, "plain").pkts, "inner")
    assert.are.same(only_pkts(want), only_pkts(plain), "plain: sluice and tshark")
    assert.are.same(only_pkts(plain), only_pkts(got), "mixed vs plain\n" .. r.err)
    -- bytes are frame bytes: the tunnelled frames
    assert.are.same(group(case_of(st, "mixed").pkts, "inner"), got)
    -- each flow names its case's tunnel
    local case_by_key = {}
    for _, name in ipairs(TUNNEL_CASES) do
      local m = case_of(st, name)
      for k in pairs(group(m.pkts, "inner")) do case_by_key[k] = m end
    end
    assert.are.equal(count(case_by_key), count(by))
    for k, f in pairs(by) do
      local m = case_by_key[k]
      assert(m, "a flow of no case: " .. show(f))
      assert.are.same(expected_tunnel(m), tunnel_of(f), "case " .. m.case .. ": " .. show(f))
    end
    -- --tunnels inner is the default
    local recs2 = sluice_on(case_of(st, "mixed").file, " --tunnels inner")
    local got2, by2 = sluice_flows(recs2)
    assert.are.same(got, got2)
    for k, f in pairs(by) do assert.are.same(tunnel_of(f), tunnel_of(by2[k])) end
  end)

  it("mixed, --tunnels outer: flows of the outermost IP header (tshark's first), no tunnel " ..
     "fields", function()
    local st = need()
    if not st then return end
    local m = case_of(st, "mixed")
    local recs, r = sluice_on(m.file, " --tunnels outer")
    local want = group(m.pkts, "outer")
    local got, by = sluice_flows(recs)
    -- a real difference: IP tunnels make outer flows of their own
    assert.are_not.same(only_pkts(want), only_pkts(group(m.pkts, "inner")))
    assert.are.same(want, got, "--tunnels outer\n" .. r.err)
    for _, f in pairs(by) do assert.are.same({}, tunnel_of(f), show(f)) end
  end)

  it("--tunnels outer still walks MPLS, PPPoE and link types to the first IP header", function()
    local st = need()
    if not st then return end
    for _, name in ipairs { "mpls_3", "pppoe_vlan", "lt_ppp", "lt_radiotap", "lt_c_hdlc" } do
      local m = case_of(st, name)
      local recs, r = sluice_on(m.file, " --tunnels outer")
      local got, by = sluice_flows(recs)
      assert.are.same(group(m.pkts, "outer"), got, "case " .. name .. "\n" .. r.err)
      assert.are.same(group(m.pkts, "inner"), got, "case " .. name .. ": no IP tunnel")
      for _, f in pairs(by) do assert.are.same({}, tunnel_of(f), show(f)) end
    end
  end)

  it("a bad --tunnels value is refused", function()
    local r = run.sh(SLUICE .. " run -r " .. q(run.root .. "/examples/sample.pcap") ..
      " --tunnels sideways -q --out json:/dev/null")
    assert.are_not.equal(0, r.code, run.describe(r))
    assert(r.err:find("tunnels", 1, true), run.describe(r))
  end)
end)
