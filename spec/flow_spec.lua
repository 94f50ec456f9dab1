-- Flow handles (lua/sluice/flow.lua): the fields a handler reads, tostring,
-- totable and the core's JSON line, on flows from generated captures.
local sluice = require "sluice"
local pcap = require "support.pcap"
local cjson = require "cjson"

local A, B = "10.0.0.1", "10.0.0.2"

local function at(t, o)
  return { ts = pcap.t(t), frame = pcap.pkt(o), orig_len = o.orig_len }
end

local FIELDS = { "id", "src", "dst", "sport", "dport", "proto", "proto_num", "ip_version",
  "vlan", "vlan_inner", "pkts", "bytes", "pkts_fwd", "pkts_rev", "bytes_fwd", "bytes_rev",
  "ip_bytes_fwd", "ip_bytes_rev",
  "tcp_flags_fwd", "tcp_flags_rev", "first", "last", "duration", "history", "state",
  "end_reason" }

-- Runs the packets; returns, per ended flow, the handle's fields read in
-- on_flow_end, tostring, totable and json, and the same from on_flow_start.
local function run(packets, open_opts, pcap_opts)
  local o = { read = pcap.write(packets, pcap_opts) }
  for k, v in pairs(open_opts or {}) do o[k] = v end
  local eng = assert(sluice.open(o))
  local out = { ends = {}, starts = {} }
  local function capture(f, reason)
    local c = { fields = {}, str = tostring(f), tbl = f:totable(), json = f:json(), reason = reason }
    for _, k in ipairs(FIELDS) do c.fields[k] = f[k] end
    return c
  end
  assert(eng:run {
    on_flow_start = function(f) out.starts[#out.starts + 1] = capture(f) end,
    on_flow_end = function(f, reason) out.ends[#out.ends + 1] = capture(f, reason) end,
  })
  eng:close()
  return out
end

local function near(a, b, tol)
  return math.abs(a - b) <= (tol or 1e-6)
end

local TCP_CONV = {
  at(0, { proto = "tcp", src = A, dst = B, sport = 40000, dport = 443, flags = "S" }),
  at(0.010, { proto = "tcp", src = B, dst = A, sport = 443, dport = 40000, flags = "SA" }),
  at(0.020, { proto = "tcp", src = A, dst = B, sport = 40000, dport = 443, flags = "A" }),
  at(0.030, { proto = "tcp", src = A, dst = B, sport = 40000, dport = 443, flags = "PA", len = 300 }),
  at(0.250, { proto = "tcp", src = B, dst = A, sport = 443, dport = 40000, flags = "PA", len = 1000 }),
  at(1.000, { proto = "tcp", src = A, dst = B, sport = 40000, dport = 443, flags = "FA" }),
  at(1.010, { proto = "tcp", src = B, dst = A, sport = 443, dport = 40000, flags = "FA" }),
  at(1.500, { proto = "tcp", src = A, dst = B, sport = 40000, dport = 443, flags = "A" }),
}

describe("flow handle", function()
  teardown(function() pcap.cleanup() end)

  local r
  setup(function() r = run(TCP_CONV) end)

  it("exposes the key fields", function()
    local f = r.ends[1].fields
    assert.equal(1, f.id)
    assert.equal("number", type(f.id))
    assert.equal(A, f.src)
    assert.equal(B, f.dst)
    assert.equal(40000, f.sport)
    assert.equal(443, f.dport)
    assert.equal("number", type(f.sport))
    assert.equal("tcp", f.proto)
    assert.equal(6, f.proto_num)
    assert.equal(4, f.ip_version)
    assert.equal(0, f.vlan)
    assert.equal(0, f.vlan_inner)
  end)

  it("exposes counters per direction and in total", function()
    local f = r.ends[1].fields
    assert.equal(5, f.pkts_fwd)
    assert.equal(3, f.pkts_rev)
    assert.equal(8, f.pkts)
    assert.equal(4 * 54 + 354, f.bytes_fwd)
    assert.equal(2 * 54 + 1054, f.bytes_rev)
    assert.equal(f.bytes_fwd + f.bytes_rev, f.bytes)
    assert.equal(0x1b, f.tcp_flags_fwd)
    assert.equal(0x1b, f.tcp_flags_rev)
  end)

  it("exposes times in epoch seconds", function()
    local f = r.ends[1].fields
    assert.is_true(near(pcap.BASE_SEC, f.first), string.format("%.9f", f.first))
    assert.is_true(near(pcap.BASE_SEC + 1.5, f.last), string.format("%.9f", f.last))
    assert.is_true(near(1.5, f.duration))
  end)

  it("takes last from the responder when it sent the last packet", function()
    local r2 = run {
      at(0, { proto = "udp", src = A, dst = B, sport = 1, dport = 2 }),
      at(2.5, { proto = "udp", src = B, dst = A, sport = 2, dport = 1 }),
    }
    local f = r2.ends[1].fields
    assert.is_true(near(pcap.BASE_SEC + 2.5, f.last))
    assert.is_true(near(2.5, f.duration))
  end)

  it("exposes history, state and end reason", function()
    local f = r.ends[1].fields
    assert.equal("ShADdFf", f.history)
    assert.equal("closed", f.state)
    assert.equal("fin", f.end_reason)
    assert.equal("fin", r.ends[1].reason)
  end)

  it("has no end reason while the flow is live", function()
    local s = r.starts[1]
    assert.is_nil(s.fields.end_reason)
    assert.is_nil(s.tbl.end_reason)
    assert.equal(1, s.fields.pkts_fwd)
    assert.equal(0, s.fields.pkts_rev)
    assert.equal("S", s.fields.history)
    assert.equal("syn_sent", s.fields.state)
    assert.equal(1, s.fields.id)
  end)

  it("keeps a history of every letter in both directions", function()
    -- simultaneous open: both sides send S and H
    local function p(t, fwd, flags, len)
      if fwd then
        return at(t, { proto = "tcp", src = A, dst = B, sport = 5, dport = 6, flags = flags, len = len })
      end
      return at(t, { proto = "tcp", src = B, dst = A, sport = 6, dport = 5, flags = flags, len = len })
    end
    local r2 = run {
      p(0, true, "S"), p(0.1, false, "S"), p(0.2, true, "SA"), p(0.3, false, "SA"),
      p(0.4, true, "A"), p(0.5, false, "A"), p(0.6, true, "PA", 1), p(0.7, false, "PA", 1),
      p(0.8, true, "FA"), p(0.9, false, "FA"), p(1.0, true, "R"),
    }
    local e = r2.ends[1]
    assert.equal("SsHhAaDdFfR", e.fields.history)
    assert.equal("SsHhAaDdFfR", e.tbl.history)
    assert.equal("SsHhAaDdFfR", cjson.decode(e.json).history)
    assert.equal("rst", e.fields.end_reason)
  end)

  it("formats tostring with id, proto, endpoints, counters and reason", function()
    assert.equal("flow 1 tcp 10.0.0.1:40000 -> 10.0.0.2:443 pkts 5/3 bytes 570/1162 fin",
      r.ends[1].str)
    assert.equal("flow 1 tcp 10.0.0.1:40000 -> 10.0.0.2:443 pkts 1/0 bytes 54/0",
      r.starts[1].str)
  end)

  it("brackets IPv6 addresses in tostring", function()
    local r2 = run {
      at(0, { proto = "udp", src = "2001:db8::1", dst = "2001:db8::2", sport = 53, dport = 5353 }),
    }
    assert.equal("flow 1 udp [2001:db8::1]:53 -> [2001:db8::2]:5353 pkts 1/0 bytes 62/0 eof",
      r2.ends[1].str)
  end)

  it("copies the fields into a plain table with totable", function()
    local t = r.ends[1].tbl
    assert.equal("table", type(t))
    assert.is_nil(getmetatable(t))
    local f = r.ends[1].fields
    assert.equal("flow", t.type)
    for _, k in ipairs { "id", "src", "dst", "sport", "dport", "proto", "ip_version", "vlan",
      "pkts_fwd", "pkts_rev", "bytes_fwd", "bytes_rev", "ip_bytes_fwd", "ip_bytes_rev",
      "tcp_flags_fwd", "tcp_flags_rev", "first", "last", "history", "state", "end_reason" } do
      assert.equal(f[k], t[k], k)
    end
    assert.is_nil(t.vlan_inner) -- only with a double tag
  end)

  it("writes JSON matching totable (times to the microsecond)", function()
    for _, c in ipairs(r.ends) do
      local j = cjson.decode(c.json)
      local keys = 0
      for k, v in pairs(c.tbl) do
        keys = keys + 1
        if k == "first" or k == "last" then
          assert.is_true(near(v, j[k], 1e-6), k .. ": " .. tostring(v) .. " vs " .. tostring(j[k]))
        else
          assert.equal(v, j[k], k)
        end
      end
      local jkeys = 0
      for _ in pairs(j) do jkeys = jkeys + 1 end
      assert.equal(keys, jkeys)
    end
  end)

  it("keeps microseconds in the JSON times", function()
    local r2 = run {
      { ts = pcap.BASE_NS + 123456789ULL, frame = pcap.pkt { proto = "udp" } },
      { ts = pcap.BASE_NS + 2987654321ULL, frame = pcap.pkt { proto = "udp" } },
    }
    local json = r2.ends[1].json
    assert.matches('"first":1700000000%.123456[,}]', json)
    assert.matches('"last":1700000002%.987654[,}]', json)
  end)

  it("reports VLAN tags in fields, totable and JSON", function()
    local r2 = run {
      at(0, { proto = "udp", src = A, dst = B, vlans = { 100, 200 } }),
      at(1, { proto = "udp", src = A, dst = B, vlans = { 300 } }),
    }
    local byv = {}
    for _, c in ipairs(r2.ends) do byv[c.fields.vlan] = c end
    local q = byv[100]
    assert.equal(200, q.fields.vlan_inner)
    assert.equal(200, q.tbl.vlan_inner)
    assert.equal(200, cjson.decode(q.json).vlan_inner)
    assert.equal(100, cjson.decode(q.json).vlan)
    local s = byv[300]
    assert.equal(0, s.fields.vlan_inner)
    assert.is_nil(s.tbl.vlan_inner)
    assert.is_nil(cjson.decode(s.json).vlan_inner)
  end)

  it("names protocols, falling back to the number", function()
    local r2 = run {
      at(0, { proto = "icmp", src = A, dst = B, id = 1 }),
      at(1, { proto = "icmp6", src = "2001:db8::1", dst = "2001:db8::2", id = 1 }),
      at(2, { proto = "sctp", src = A, dst = B }),
      at(3, { proto = 47, src = A, dst = B, len = 4 }),
      at(4, { proto = 253, src = A, dst = B, len = 4 }),
    }
    local names = {}
    for _, c in ipairs(r2.ends) do
      names[#names + 1] = c.fields.proto
      assert.equal(c.fields.proto, cjson.decode(c.json).proto)
    end
    assert.same({ "icmp", "icmp6", "sctp", "gre", 253 }, names)
  end)

  describe("IPv6 addresses", function()
    local cases = {
      { "2001:db8::1", "2001:db8::1" },
      { "2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1" },
      { "2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1" },     -- first of equal runs
      { "2001:0:0:1:0:0:0:1", "2001:0:0:1::1" },            -- the longest run
      { "2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1" },   -- one zero: not shortened
      { "fe80::abcd:ef01", "fe80::abcd:ef01" },
      { "::1", "::1" },
      { "ff02::1:ff00:1", "ff02::1:ff00:1" },
    }
    it("writes them in RFC 5952 form in fields, totable and JSON", function()
      local pkts = {}
      for i, c in ipairs(cases) do
        pkts[i] = at(i, { proto = "udp", src = c[1], dst = "2001:db8::ffff", sport = 1000 + i, dport = 53 })
      end
      local r2 = run(pkts)
      assert.equal(#cases, #r2.ends)
      for _, e in ipairs(r2.ends) do
        local want = cases[e.fields.sport - 1000][2]
        assert.equal(want, e.fields.src)
        assert.equal(want, e.tbl.src)
        assert.equal(want, cjson.decode(e.json).src)
        assert.equal("2001:db8::ffff", e.fields.dst)
        assert.equal(6, e.fields.ip_version)
      end
    end)
  end)
end)
