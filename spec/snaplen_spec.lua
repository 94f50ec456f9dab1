-- Captures cut by a short snap length (tcpdump -s 64, editcap -s 40):
-- a packet whose IP header is whole is counted in its flow, with the
-- ports when their 4 bytes were captured and the TCP flags when byte 13
-- was, as tshark shows it; TCP history takes data from the IP length,
-- not from the captured bytes. The expected conversations are tshark's
-- (-T fields over the same cut files). Without scapy, editcap or tshark
-- the tests are pending.
local run = require "support.run"
local cjson = require "cjson"

local q = run.q
local PY = "/usr/bin/python3"
local GEN = run.root .. "/spec/support/snaplen.py"
local SNAPS = { 40, 54, 64 }

local need = run.once("snaplen_spec", { "scapy", "tshark", "editcap" }, function()
  local dir = run.tmpdir()
  local r = run.sh(run.PLAIN .. PY .. " " .. q(GEN) .. " " .. q(dir))
  assert(r.code == 0, "snaplen.py failed\n" .. run.describe(r))
  local files = { full = dir .. "/full.pcap", tiny = dir .. "/tiny.pcap" }
  for _, s in ipairs(SNAPS) do
    files[s] = dir .. "/s" .. s .. ".pcap"
    r = run.sh(run.PLAIN .. "editcap -s " .. s .. " " .. q(files.full) .. " " .. q(files[s]))
    assert(r.code == 0, run.describe(r))
  end
  return { files = files }
end, pending)

-- A conversation key: both addresses, the VLAN, both ports or none.
local function key(a, b, vlan, pa, pb)
  if b < a then a, b, pa, pb = b, a, pb, pa end
  local ports = (pa and pb) and (pa .. "/" .. pb) or "-"
  return a .. " " .. b .. " vlan " .. vlan .. " " .. ports
end

-- tshark's view: conversations (key -> { pkts, bytes }) of the packets
-- whose IP header it read (both addresses), and how many it could not.
local function tshark_view(path)
  local r = run.sh(run.PLAIN .. "tshark -n -r " .. q(path) .. " -T fields -E separator=/t " ..
    "-E occurrence=f -e frame.len -e ip.src -e ip.dst -e ipv6.src -e ipv6.dst -e vlan.id " ..
    "-e tcp.srcport -e tcp.dstport -e udp.srcport -e udp.dstport")
  assert(r.code == 0, run.describe(r))
  local conv, no_ip = {}, 0
  for line in r.out:gmatch("[^\n]+") do
    local f, i = {}, 0
    for v in (line .. "\t"):gmatch("([^\t]*)\t") do
      i = i + 1
      if v ~= "" then f[i] = v end
    end
    local src, dst = f[2] or f[4], f[3] or f[5]
    if src and dst then
      local k = key(src, dst, tonumber(f[6]) or 0, f[7] or f[9], f[8] or f[10])
      local c = conv[k] or { pkts = 0, bytes = 0 }
      c.pkts, c.bytes = c.pkts + 1, c.bytes + tonumber(f[1])
      conv[k] = c
    else
      no_ip = no_ip + 1
    end
  end
  return conv, no_ip
end

-- sluice -v over a capture: its flows by conversation key, the flows by
-- sport, and the -v text.
local function sluice_view(path, extra)
  local dir = run.tmpdir()
  local out = dir .. "/out.json"
  local r = run.sh(run.SLUICE .. " run -r " .. q(path) .. " -v --out json:" .. q(out) ..
    (extra or ""))
  assert(r.code == 0, run.describe(r))
  local conv, by_sport = {}, {}
  for _, f in ipairs(run.of_type(run.json_lines(out), "flow")) do
    local none = f.sport == 0 and f.dport == 0
    local k = key(f.src, f.dst, f.vlan or 0, not none and tostring(f.sport) or nil,
      not none and tostring(f.dport) or nil)
    assert(not conv[k], "two flows for " .. k)
    conv[k] = { pkts = f.pkts_fwd + f.pkts_rev, bytes = f.bytes_fwd + f.bytes_rev }
    by_sport[f.sport] = f
  end
  return conv, by_sport, r.err
end

describe("a capture cut by a short snap length", function()
  teardown(run.cleanup)

  for _, s in ipairs(SNAPS) do
    it("has tshark's conversations, packets and bytes at -s " .. s, function()
      local st = need()
      if not st then return end
      local want, no_ip = tshark_view(st.files[s])
      local got, _, err = sluice_view(st.files[s])
      assert.are.same(want, got, err)
      -- what tshark cannot put in a conversation is an IP header cut short
      local m = err:match("malformed (%d+)")
      assert.are.equal(no_ip, tonumber(m), err)
      if no_ip > 0 then assert(err:find("ip_short=" .. no_ip, 1, true), err) end
    end)
  end

  it("gives the same flows with --workers 2 (the packet's worker is the flow's)", function()
    local st = need()
    if not st then return end
    for _, s in ipairs(SNAPS) do
      local one = sluice_view(st.files[s])
      local two, _, err = sluice_view(st.files[s], " --workers 2")
      assert.are.same(one, two, err)
    end
  end)

  it("counts the packets whose transport header was cut and says so with -v", function()
    local st = need()
    if not st then return end
    -- -s 40: the 8 TCP packets (6 bytes of TCP), UDP (6 of 8), the VLAN
    -- SYN (2); -s 54: the VLAN SYN, the SYN behind IPv4 options and the
    -- IPv6 one (its extension headers); -s 64: the last two
    for s, n in pairs { [40] = 10, [54] = 3, [64] = 2 } do
      local _, _, err = sluice_view(st.files[s])
      assert(err:find("l4_cut " .. n .. " (transport header cut by the snap length, kept in " ..
        "their flows)", 1, true), err)
    end
    local _, _, err = sluice_view(st.files.full)
    assert.is_nil(err:find("l4_cut", 1, true), err)
    local sluice = require "sluice"
    local eng = assert(sluice.open { read = st.files[54] })
    assert(eng:run {})
    local stats = eng:stats()
    local metrics = eng:metrics_text()
    eng:close()
    assert.are.equal(3, stats.l4_cut)
    assert.are.equal(0, stats.malformed)
    assert(metrics:find("\nsluice_l4_cut_packets_total 3\n", 1, true), metrics)
  end)

  it("takes TCP history's data from the IP length: ShADdFf at -s 54 as uncut", function()
    local st = need()
    if not st then return end
    local _, full = sluice_view(st.files.full)
    assert.are.equal("ShADdFf", full[40000].history)
    assert.are.equal("fin", full[40000].end_reason)
    local _, s54 = sluice_view(st.files[54])
    assert.are.equal("ShADdFf", s54[40000].history)
    assert.are.equal("fin", s54[40000].end_reason)
    assert.are.equal(27, s54[40000].tcp_flags_fwd)
    assert.are.equal("S", s54[40001].history)
    assert.are.equal(100, s54[40001].vlan)
    -- the options SYN's flags were not captured: no history, ports only
    assert.are.equal("", s54[40002].history)
    assert.are.equal(22, s54[40002].dport)
    -- IPv6: the extension headers are cut, the flow is the packet's, its
    -- protocol the last one known (hop-by-hop at 54, TCP at 64)
    local v6 = s54[0]
    assert.are.equal("2001:db8::a", v6.src)
    assert.are.equal(0, v6.proto)
    local _, s64 = sluice_view(st.files[64])
    assert.are.equal("S", s64[40002].history)
    assert.are.equal("tcp", s64[0].proto)
    assert.are.equal("2001:db8::a", s64[0].src)
    -- -s 40: ports, no flags: the connection is one flow without history
    local _, s40 = sluice_view(st.files[40])
    assert.are.equal(8, s40[40000].pkts_fwd + s40[40000].pkts_rev)
    assert.are.equal("", s40[40000].history)
    assert.are.equal(1, s40[5000].pkts_fwd)
  end)

  it("keeps a tiny first fragment (8 bytes of TCP over IPv4, 16 over IPv6) and its later " ..
     "fragment in the flow of their ports", function()
    local st = need()
    if not st then return end
    local got, by_sport, err = sluice_view(st.files.tiny)
    local n = 0
    for _ in pairs(got) do n = n + 1 end
    assert.are.equal(2, n, cjson.encode(got))
    assert.are.same({ pkts = 2, bytes = 42 + 86 },
      got[key("10.20.0.1", "10.20.0.2", 0, "45000", "443")], err)
    assert.are.same({ pkts = 2, bytes = 78 + 106 },
      got[key("2001:db8::20", "2001:db8::21", 0, "45000", "443")], err)
    assert.are.equal("tcp", by_sport[45000].proto)
    assert(err:find("malformed 0\n", 1, true) or err:find("malformed 0 ", 1, true), err)
    assert.is_nil(err:find("l4_cut", 1, true), err)
  end)

  it("drops as malformed (l4_short) a frame that ended inside the TCP header on the wire, " ..
     "not only in the capture", function()
    local pcap = require "support.pcap"
    local sluice = require "sluice"
    local frame = pcap.pkt { proto = "tcp", sport = 40000, dport = 80, flags = "PA", len = 100 }
    local path = pcap.write {
      { ts = pcap.t(0), frame = frame, caplen = 40, orig_len = #frame },      -- a snaplen
      { ts = pcap.t(1), frame = frame:sub(1, 40), orig_len = 40 },            -- the wire
      { ts = pcap.t(2), frame = frame:sub(1, 14 + 20 + 20), orig_len = 54 },  -- the wire
    }
    local eng = assert(sluice.open { read = path })
    local flows = {}
    assert(eng:run { on_flow_end = function(f) flows[#flows + 1] = f:totable() end })
    local stats = eng:stats()
    eng:close()
    pcap.cleanup()
    assert.are.equal(1, #flows)
    -- the last one: its TCP header is whole, its data was not sent: kept
    -- in its flow and counted as ip_overlong, as any such packet
    assert.are.equal(2, flows[1].pkts_fwd)
    assert.are.equal(40000, flows[1].sport)
    assert.are.equal(1, stats.l4_cut)
    assert.are.equal(1, stats.malformed)
    assert.are.same({ l4_short = 1, ip_overlong = 1 }, stats.malformed_by)
  end)
end)
