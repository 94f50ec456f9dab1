-- examples/dns_hosts.lua: DNS answers name the flows that follow them.
-- Captures are built here (DNS messages byte by byte, with compression
-- pointers), run through the CLI as a user runs the example, and the
-- flows' tags checked; the parser is also run directly on fake packets
-- (truncation at every length, pointer loops, random damage).
local run = require "support.run"
local pcap = require "support.pcap"
local policy = require "sluice.policy"

local be16, be32 = pcap.be16, pcap.be32
local concat = table.concat

local EX = run.root .. "/examples/dns_hosts.lua"
local SAMPLE = run.root .. "/examples/sample.pcap"

-- ---- DNS messages ------------------------------------------------------------

local T_A, T_CNAME, T_AAAA = 1, 5, 28

-- Wire form of a name: its labels, then tail (a pointer) or the root.
local function dname(s, tail)
  local out = {}
  for label in s:gmatch("[^.]+") do out[#out + 1] = string.char(#label) .. label end
  return concat(out) .. (tail or "\0")
end

local function ptr(off)
  return be16(0xc000 + off)
end

-- A message under construction; offsets count from the start of the DNS
-- header, so they can be used in pointers.
--   local m = dns { flags = 0x8180, qd = 1, an = (default: records added) }
--   local qoff = m:question(dname("a.test"), T_A)
--   local roff, rdoff = m:rr(ptr(qoff), T_A, 300, pcap.ip4("192.0.2.1"))
--   m:bytes()
local Msg = {}
Msg.__index = Msg

local function dns(o)
  o = o or {}
  return setmetatable({ o = o, parts = {}, len = 12, nq = 0, nrr = 0 }, Msg)
end

function Msg:raw(s)
  local off = self.len
  self.parts[#self.parts + 1] = s
  self.len = self.len + #s
  return off
end

function Msg:question(name, qtype)
  self.nq = self.nq + 1
  return self:raw(name .. be16(qtype or T_A) .. be16(1))
end

-- Returns the offset of the record and of its data.
function Msg:rr(owner, rtype, ttl, rdata, class)
  self.nrr = self.nrr + 1
  local off = self:raw(owner .. be16(rtype) .. be16(class or 1) .. be32(ttl or 300) ..
    be16(#rdata) .. rdata)
  return off, off + #owner + 10
end

function Msg:bytes()
  local o = self.o
  return be16(o.id or 0x1234) .. be16(o.flags or 0x8180) .. be16(o.qd or self.nq) ..
    be16(o.an or self.nrr) .. be16(0) .. be16(0) .. concat(self.parts)
end

-- A standard response: qname (text), records { { type, addr | target, ttl } }
-- all owned by the question name (pointer to it).
local function simple_response(qname, qtype, records, o)
  local m = dns(o)
  local q = m:question(dname(qname), qtype)
  for _, r in ipairs(records) do
    local rdata = r[1] == T_A and pcap.ip4(r[2]) or r[1] == T_AAAA and pcap.ip6(r[2]) or
      dname(r[2])
    m:rr(ptr(q), r[1], r[3] or 300, rdata)
  end
  return m:bytes()
end

local function query(qname, qtype)
  local m = dns { flags = 0x0100 }
  m:question(dname(qname), qtype)
  return m:bytes()
end

-- ---- captures ----------------------------------------------------------------

local CLIENT, RESOLVER = "10.0.0.5", "10.0.0.53"
local CLIENT6, RESOLVER6 = "2001:db8::5", "2001:db8::53"

-- Frames at times (seconds from pcap.BASE_SEC).
local Cap = {}
Cap.__index = Cap

local function capture()
  return setmetatable({ pkts = {}, sport = 40000 }, Cap)
end

function Cap:frame(t, o)
  self.pkts[#self.pkts + 1] = { ts = pcap.t(t), frame = pcap.pkt(o) }
end

-- A DNS exchange: the query at t, the response at t + 0.01. o: client,
-- resolver, v6 (default addresses of IPv6), vlans.
function Cap:dns(t, qname, qtype, response, o)
  o = o or {}
  local client = o.client or (o.v6 and CLIENT6 or CLIENT)
  local resolver = o.resolver or (o.v6 and RESOLVER6 or RESOLVER)
  self.sport = self.sport + 1
  self:frame(t, { proto = "udp", src = client, dst = resolver, sport = self.sport, dport = 53,
    payload = query(qname, qtype), vlans = o.vlans })
  self:frame(t + 0.01, { proto = "udp", src = resolver, dst = client, sport = 53,
    dport = self.sport, payload = response, vlans = o.vlans })
end

-- A TCP connection attempt (a SYN and the SYN-ACK) at t.
function Cap:tcp(t, src, dst, dport, sport)
  self.sport = self.sport + 1
  sport = sport or self.sport
  self:frame(t, { proto = "tcp", src = src, dst = dst, sport = sport, dport = dport, flags = "S" })
  self:frame(t + 0.001, { proto = "tcp", src = dst, dst = src, sport = dport, dport = sport,
    flags = "SA" })
end

function Cap:write()
  table.sort(self.pkts, function(a, b) return a.ts < b.ts end)
  return pcap.write(self.pkts)
end

-- ---- running the example -----------------------------------------------------

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

-- Runs the example on path with options { name = value }; asserts a clean
-- exit and returns the flow records.
local function dns_run(path, options, extra)
  local args = { run.q(EX), "-r", run.q(path) }
  for k, v in pairs(options or {}) do args[#args + 1] = "-o " .. run.q(k .. "=" .. tostring(v)) end
  local r, recs = run.sluice_json(concat(args, " ") .. (extra or ""))
  assert(r.code == 0, run.describe(r))
  assert.are.equal("", r.err, "nothing on stderr\n" .. run.describe(r))
  return run.of_type(recs, "flow"), recs
end

-- The flows from src to dst (dport: any if nil).
local function flows_to(flows, src, dst, dport)
  local out = {}
  for _, f in ipairs(flows) do
    if f.src == src and f.dst == dst and (dport == nil or f.dport == dport) then
      out[#out + 1] = f
    end
  end
  return out
end

-- The one flow from src to dst:dport.
local function flow_to(flows, src, dst, dport)
  local list = flows_to(flows, src, dst, dport)
  assert(#list == 1, string.format("expected one flow %s -> %s:%s, found %d", src, dst,
    tostring(dport), #list))
  return list[1]
end

local function host(f)
  return f.tags and f.tags.host
end

-- Asserts each { src, dst, dport, name | false } against the flows.
local function expect_hosts(flows, cases)
  for _, c in ipairs(cases) do
    local f = flow_to(flows, c[1], c[2], c[3])
    if c[4] then
      assert.are.equal(c[4], host(f), string.format("tag of %s -> %s:%d", c[1], c[2], c[3]))
    else
      assert.is_nil(f.tags, string.format("flow %s -> %s:%d should have no tags, has %s",
        c[1], c[2], c[3], require("cjson").encode(f.tags)))
    end
  end
end

local function clean_failure(r, ...)
  assert(r.code ~= 0, "expected a non-zero exit\n" .. run.describe(r))
  assert(not has(r.err, "stack traceback"), "expected a message, not a traceback\n" .. run.describe(r))
  for _, needle in ipairs { ... } do
    assert(has(r.err, needle), "stderr should mention '" .. needle .. "'\n" .. run.describe(r))
  end
end

-- The main capture: an A answer, a CNAME chain, AAAA over IPv6 and over
-- IPv4, then connections to those addresses and to others.
local function main_capture()
  local c = capture()
  -- A, with the question in mixed case (0x20 randomization): two records
  -- owned by a pointer to the question name
  c:dns(0, "WWW.Example.COM", T_A, simple_response("WWW.Example.COM", T_A,
    { { T_A, "93.184.216.34" }, { T_A, "93.184.216.35" } }))

  -- before its answer: not tagged
  c:tcp(0.05, CLIENT, "198.51.100.7", 8443)

  -- CNAME chain www.shop.test -> shop.cdn-edge.test -> edge7.cdn-edge.test
  -- -> A 198.51.100.7, each name compressed against the one before, plus
  -- an A record off the chain (other.test) that must be ignored
  do
    local m = dns()
    local q = m:question(dname("www.shop.test"), T_A)
    local test = q + 4 + 5 -- "test" in the question name
    local _, t1 = m:rr(ptr(q), T_CNAME, 300, "\4shop\8cdn-edge" .. ptr(test))
    local _, t2 = m:rr(ptr(t1), T_CNAME, 300, "\5edge7" .. ptr(t1 + 5))
    m:rr(ptr(t2), T_A, 300, pcap.ip4("198.51.100.7"))
    m:rr("\5other" .. ptr(test), T_A, 300, pcap.ip4("198.51.100.99"))
    c:dns(0.1, "www.shop.test", T_A, m:bytes())
  end

  -- AAAA over IPv6; the answer's address has two runs of zeros (RFC 5952
  -- shortens the first)
  c:dns(0.2, "v6.example.org", T_AAAA, simple_response("v6.example.org", T_AAAA,
    { { T_AAAA, "2001:db8:0:0:1:0:0:1" } }), { v6 = true })
  -- AAAA over IPv4
  c:dns(0.3, "dual.example.net", T_AAAA, simple_response("dual.example.net", T_AAAA,
    { { T_AAAA, "2001:db8:aa::1" } }))
  -- inside two VLAN tags (802.1ad + 802.1Q)
  c:dns(0.4, "qinq.example.net", T_A, simple_response("qinq.example.net", T_A,
    { { T_A, "192.0.2.77" } }), { vlans = { 10, 20 } })

  c:tcp(1, CLIENT, "93.184.216.34", 443)
  c:tcp(1.1, CLIENT, "93.184.216.35", 80)
  c:tcp(1.2, CLIENT, "198.51.100.7", 443)
  c:tcp(1.3, CLIENT, "198.51.100.99", 443)
  c:tcp(1.4, CLIENT6, "2001:db8::1:0:0:1", 443)
  c:tcp(1.5, CLIENT6, "2001:db8:aa::1", 443)
  c:tcp(1.6, CLIENT, "203.0.113.9", 443)
  -- the remembered address as the initiator
  c:tcp(1.7, "93.184.216.34", CLIENT, 6000, 5000)
  c:tcp(1.8, CLIENT, "192.0.2.77", 443)
  return c:write()
end

local MAIN_CASES = {
  { CLIENT, "93.184.216.34", 443, "www.example.com" },
  { CLIENT, "93.184.216.35", 80, "www.example.com" },
  { CLIENT, "198.51.100.7", 443, "www.shop.test" },
  { CLIENT, "198.51.100.7", 8443, false }, -- started before the answer
  { CLIENT, "198.51.100.99", 443, false }, -- off the CNAME chain
  { CLIENT6, "2001:db8::1:0:0:1", 443, "v6.example.org" },
  { CLIENT6, "2001:db8:aa::1", 443, "dual.example.net" },
  { CLIENT, "203.0.113.9", 443, false },
  { "93.184.216.34", CLIENT, 6000, "www.example.com" },
  { CLIENT, "192.0.2.77", 443, "qinq.example.net" },
}

describe("examples/dns_hosts.lua", function()
  teardown(function()
    pcap.cleanup()
    run.cleanup()
  end)

  describe("through the CLI", function()
    local main

    it("tags flows to answered addresses with the question name (pointers, CNAMEs, AAAA)", function()
      main = main or main_capture()
      local flows = dns_run(main)
      expect_hosts(flows, MAIN_CASES)
      -- the DNS flows themselves name nobody
      local ndns = 0
      for _, f in ipairs(flows) do
        if f.dport == 53 then
          ndns = ndns + 1
          assert.is_nil(f.tags)
        end
      end
      assert.are.equal(5, ndns)
    end)

    it("writes every flow the default output has, with the same fields plus tags", function()
      main = main or main_capture()
      local flows = dns_run(main)
      local r, recs = run.sluice_json("-r " .. run.q(main))
      assert(r.code == 0, run.describe(r))
      local plain = run.of_type(recs, "flow")
      assert.are.equal(#plain, #flows)
      local by_id = {}
      for _, f in ipairs(plain) do by_id[f.id] = f end
      local tagged = 0
      for _, f in ipairs(flows) do
        local want = by_id[f.id]
        assert(want, "flow " .. f.id .. " not in the default output")
        if f.tags then tagged = tagged + 1 end
        local copy = {}
        for k, v in pairs(f) do copy[k] = v end
        copy.tags = nil
        assert.are.same(want, copy)
      end
      assert.are.equal(7, tagged)
    end)

    it("-o flows=tagged writes tagged flows only, flows=none nothing; -o tag renames it", function()
      main = main or main_capture()
      local flows = dns_run(main, { flows = "tagged", tag = "dns" })
      assert.are.equal(7, #flows)
      for _, f in ipairs(flows) do
        assert.is_nil(host(f))
        assert.is_string(f.tags.dns)
      end
      assert.are.equal("www.shop.test", flow_to(flows, CLIENT, "198.51.100.7", 443).tags.dns)
      local none, recs = dns_run(main, { flows = "none" })
      assert.are.equal(0, #none)
      assert.are.equal(0, #recs)
    end)

    it("malformed responses do not raise and teach nothing", function()
      local c = capture()
      local t = 0
      local bad = {} -- address carried by each malformed response
      local function add(name, addr, payload)
        t = t + 0.1
        c:dns(t, name, T_A, payload)
        bad[#bad + 1] = addr
      end
      -- answer count larger than the records present
      add("short.test", "192.0.2.1", simple_response("short.test", T_A,
        { { T_A, "192.0.2.1" } }, { an = 3 }))
      -- a record's data cut short (the message ends inside the address)
      add("cut.test", "192.0.2.2", simple_response("cut.test", T_A,
        { { T_A, "192.0.2.2" } }):sub(1, -3))
      -- a compression pointer to itself
      do
        local m = dns()
        m:question(dname("loop.test"), T_A)
        local off = m.len
        m:rr(ptr(off), T_A, 300, pcap.ip4("192.0.2.3"))
        add("loop.test", "192.0.2.3", m:bytes())
      end
      -- two names pointing at each other (the question's tail points
      -- forward into the answer, whose owner points back)
      do
        local m = dns()
        local qlen = 1 + 4 + 2 + 4 -- "\4loop" + pointer + type/class
        local answer = 12 + qlen
        m:question("\4loop" .. ptr(answer), T_A)
        m:rr("\3two" .. ptr(12), T_A, 300, pcap.ip4("192.0.2.4"))
        add("loop2.test", "192.0.2.4", m:bytes())
      end
      -- a pointer past the end of the message
      do
        local m = dns()
        m:question(dname("far.test"), T_A)
        m:rr(ptr(0x3fff), T_A, 300, pcap.ip4("192.0.2.5"))
        add("far.test", "192.0.2.5", m:bytes())
      end
      -- a pointer's second byte missing at the very end
      do
        local m = dns { an = 1 }
        m:question(dname("half.test"), T_A)
        m:raw("\192")
        add("half.test", "192.0.2.6", m:bytes() .. "") -- no address at all
      end
      -- a label running past the end
      add("label.test", "192.0.2.7", simple_response("label.test", T_A,
        { { T_A, "192.0.2.7" } }):sub(1, 12) .. "\63label")
      -- an A record of 3 bytes, and an AAAA of 4
      do
        local m = dns()
        local q = m:question(dname("size.test"), T_A)
        m:rr(ptr(q), T_A, 300, pcap.ip4("192.0.2.8"):sub(1, 3))
        m:rr(ptr(q), T_AAAA, 300, pcap.ip4("192.0.2.9"))
        m:rr(ptr(q), T_A, 300, pcap.ip4("192.0.2.10"))
        add("size.test", "192.0.2.10", m:bytes())
      end
      -- a reserved label type (0x40)
      do
        local m = dns()
        local q = m:question(dname("rsv.test"), T_A)
        m:rr("\64x" .. ptr(q), T_A, 300, pcap.ip4("192.0.2.11"))
        add("rsv.test", "192.0.2.11", m:bytes())
      end
      -- header only, and shorter than a header
      add("empty.test", "192.0.2.12", simple_response("x.test", T_A, {}):sub(1, 12))
      add("tiny.test", "192.0.2.13", "\18\52\129")
      add("zero.test", "192.0.2.14", "")
      -- an error response (NXDOMAIN) carrying an answer, a query carrying
      -- one, a non-standard opcode
      add("nx.test", "192.0.2.15", simple_response("nx.test", T_A, { { T_A, "192.0.2.15" } },
        { flags = 0x8183 }))
      add("q.test", "192.0.2.16", simple_response("q.test", T_A, { { T_A, "192.0.2.16" } },
        { flags = 0x0100 }))
      add("op.test", "192.0.2.17", simple_response("op.test", T_A, { { T_A, "192.0.2.17" } },
        { flags = 0x9180 }))
      -- a name over 255 bytes (five 63-byte labels)
      do
        local long = ("a"):rep(63)
        local name = concat({ long, long, long, long, long }, ".")
        add("long", "192.0.2.18", simple_response(name, T_A, { { T_A, "192.0.2.18" } }))
      end
      -- the first fragment of a response in two IP fragments (the second
      -- carries no UDP header, so the packet filter does not see it)
      do
        local whole = simple_response("frag.test", T_A, { { T_A, "192.0.2.19" } })
        t = t + 0.1
        c:frame(t, { proto = "udp", src = RESOLVER, dst = CLIENT, sport = 53, dport = 39999,
          payload = whole:sub(1, 32), length = 8 + #whole, ip = { mf = true, id = 7 } })
        c:frame(t, { proto = 17, src = RESOLVER, dst = CLIENT,
          payload = whole:sub(33), ip = { frag_offset = 40, id = 7 } })
        bad[#bad + 1] = "192.0.2.19"
      end
      -- then a good answer: the policy still works
      t = t + 0.1
      c:dns(t, "good.test", T_A, simple_response("good.test", T_A, { { T_A, "192.0.2.100" } }))
      for i, addr in ipairs(bad) do c:tcp(10 + i * 0.01, CLIENT, addr, 443) end
      c:tcp(11, CLIENT, "192.0.2.100", 443)
      local flows = dns_run(c:write(), nil, " --on-error abort")
      for _, addr in ipairs(bad) do
        assert.is_nil(flow_to(flows, CLIENT, addr, 443).tags, "flow to " .. addr)
      end
      assert.are.equal("good.test", host(flow_to(flows, CLIENT, "192.0.2.100", 443)))
      for _, f in ipairs(flows) do
        if f.tags then assert.are.equal("192.0.2.100", f.dst) end
      end
    end)

    it("-o max_names bounds the table, the oldest learned evicted first", function()
      local c = capture()
      c:dns(1, "one.test", T_A, simple_response("one.test", T_A, { { T_A, "192.0.2.1" } }))
      c:dns(2, "two.test", T_A, simple_response("two.test", T_A, { { T_A, "192.0.2.2" } }))
      c:dns(3, "three.test", T_A, simple_response("three.test", T_A, { { T_A, "192.0.2.3" } }))
      -- one.test learned again: now newer than two.test
      c:dns(4, "one.test", T_A, simple_response("one.test", T_A, { { T_A, "192.0.2.1" } }))
      c:dns(5, "four.test", T_A, simple_response("four.test", T_A, { { T_A, "192.0.2.4" } }))
      for i = 1, 4 do c:tcp(10 + i, CLIENT, "192.0.2." .. i, 443) end
      local path = c:write()
      local names = { "one.test", "two.test", "three.test", "four.test" }
      local function check(max, kept)
        local flows = dns_run(path, { max_names = max })
        for i = 1, 4 do
          local f = flow_to(flows, CLIENT, "192.0.2." .. i, 443)
          assert.are.equal(kept[i] and names[i] or nil, host(f),
            string.format("max_names=%d: flow to 192.0.2.%d", max, i))
        end
      end
      check(1, { [4] = true })
      check(2, { [1] = true, [4] = true })
      check(3, { [1] = true, [3] = true, [4] = true })
      check(4, { true, true, true, true })
    end)

    it("holds an answer for its TTL clamped to [hold_min, hold_max]", function()
      local c = capture()
      c:dns(0, "short.test", T_A, simple_response("short.test", T_A, { { T_A, "192.0.2.1", 60 } }))
      c:dns(0, "long.test", T_A, simple_response("long.test", T_A,
        { { T_A, "192.0.2.2", 86400 } }))
      -- a TTL with the top bit set counts as 0 (RFC 2181)
      c:dns(0, "neg.test", T_A, simple_response("neg.test", T_A,
        { { T_A, "192.0.2.3", 0x80000000 } }))
      for _, at in ipairs { 30, 120, 1000 } do
        for i = 1, 3 do c:tcp(at + i * 0.01, CLIENT, "192.0.2." .. i, at) end
      end
      local path = c:write()
      -- expected names of the flows at 30, 120 and 1000 s for each address
      local function check(opts, want)
        local flows = dns_run(path, opts)
        for i = 1, 3 do
          for j, at in ipairs { 30, 120, 1000 } do
            local f = flow_to(flows, CLIENT, "192.0.2." .. i, at)
            assert.are.equal(want[i][j] or nil, host(f), string.format(
              "flow to 192.0.2.%d at %d s with hold_min=%s hold_max=%s", i, at,
              tostring(opts.hold_min), tostring(opts.hold_max)))
          end
        end
      end
      local S, L, N = "short.test", "long.test", "neg.test"
      check({ hold_min = 0 }, { { S }, { L, L, L }, {} })
      check({ hold_min = 0, hold_max = "100s" }, { { S }, { L }, {} })
      check({ hold_min = "5m" }, { { S, S }, { L, L, L }, { N, N } })
      check({ hold_min = "1h" }, { { S, S, S }, { L, L, L }, { N, N, N } })
    end)

    it("-o per_client=true keeps each client's own answer for a shared address", function()
      local c = capture()
      local A, B, SHARED = "10.0.0.6", "10.0.0.7", "192.0.2.50"
      c:dns(1, "alpha.test", T_A, simple_response("alpha.test", T_A, { { T_A, SHARED } }),
        { client = A })
      c:dns(2, "beta.test", T_A, simple_response("beta.test", T_A, { { T_A, SHARED } }),
        { client = B })
      c:tcp(3, A, SHARED, 443)
      c:tcp(3.1, B, SHARED, 443)
      c:tcp(3.2, CLIENT, SHARED, 443) -- asked nothing
      local path = c:write()
      local flows = dns_run(path, { per_client = true })
      assert.are.equal("alpha.test", host(flow_to(flows, A, SHARED, 443)))
      assert.are.equal("beta.test", host(flow_to(flows, B, SHARED, 443)))
      assert.is_nil(flow_to(flows, CLIENT, SHARED, 443).tags)
      -- shared: the latest answer for everyone
      flows = dns_run(path)
      for _, client in ipairs { A, B, CLIENT } do
        assert.are.equal("beta.test", host(flow_to(flows, client, SHARED, 443)))
      end
    end)

    it("with --state, the table carries over to the next run", function()
      local dir = run.tmpdir()
      local state = dir .. "/dns.state"
      local c = capture()
      c:dns(0, "kept.test", T_A, simple_response("kept.test", T_A, { { T_A, "192.0.2.1" } }))
      c:dns(0.5, "v6.test", T_AAAA, simple_response("v6.test", T_AAAA,
        { { T_AAAA, "2001:db8::7" } }), { v6 = true })
      local first = c:write()
      local c2 = capture()
      c2:tcp(10, CLIENT, "192.0.2.1", 443)
      c2:tcp(11, CLIENT6, "2001:db8::7", 443)
      c2:tcp(12, CLIENT, "192.0.2.2", 443)
      local second = c2:write()
      -- without the state, nothing is known
      local flows = dns_run(second)
      for _, f in ipairs(flows) do assert.is_nil(f.tags) end
      dns_run(first, nil, " --state " .. run.q(state))
      assert(run.exists(state), "state file written")
      flows = dns_run(second, nil, " --state " .. run.q(state))
      assert.are.equal("kept.test", host(flow_to(flows, CLIENT, "192.0.2.1", 443)))
      assert.are.equal("v6.test", host(flow_to(flows, CLIENT6, "2001:db8::7", 443)))
      assert.is_nil(flow_to(flows, CLIENT, "192.0.2.2", 443).tags)
    end)

    it("learns from examples/sample.pcap exactly the answers tshark reads", function()
      if not run.have("tshark") then
        pending("tshark is not installed (apt-get install tshark)")
        return
      end
      local r = run.sh(run.PLAIN .. "tshark -r " .. run.q(SAMPLE) .. " -Y " ..
        run.q("udp.port == 53 && dns.flags.response == 1 && dns.flags.rcode == 0 && " ..
          "dns.flags.opcode == 0") ..
        " -T fields -E separator=/t -e dns.qry.name -e dns.a -e dns.aaaa -e dns.cname 2>/dev/null")
      assert(r.code == 0, run.describe(r))
      local want, nwant = {}, 0
      for line in r.out:gmatch("[^\n]+") do
        local qname, a, aaaa, cname = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t?([^\t]*)$")
        assert(qname, "tshark line: " .. line)
        -- with CNAMEs, tshark lists every address: this check assumes none
        assert.are.equal("", cname, "sample has CNAME answers: " .. line)
        for addr in (a .. "," .. aaaa):gmatch("[^,]+") do
          if not want[addr] then nwant = nwant + 1 end
          want[addr] = qname:lower()
        end
      end
      assert(nwant > 10, "the sample has DNS answers\n" .. r.out)
      local dir = run.tmpdir()
      local state = dir .. "/dns.state"
      dns_run(SAMPLE, { flows = "none", hold_min = "1d" }, " --state " .. run.q(state))
      local saved = assert(require("sluice.state").decode(run.slurp(state)))
      local got, ngot = {}, 0
      for key, name in (saved.dns_hosts or ""):gmatch("([^\t\n]+)\t([^\t\n]*)\t[^\n]+") do
        got[key], ngot = name, ngot + 1
      end
      assert.are.same(want, got)
      assert.are.equal(nwant, ngot)
    end)

    it("sluice info lists the packet filter and every option with its default", function()
      local r = run.sh(run.SLUICE .. " info " .. run.q(EX))
      assert(r.code == 0, run.describe(r))
      assert(has(r.out, "policy dns_hosts"), r.out)
      assert(has(r.out, 'on_packet (packets matching "udp port 53 or (vlan and'), r.out)
      for _, opt in ipairs {
        { "max_names", "integer", "default 65536" },
        { "tag", "string", "default host" },
        { "hold_min", "duration", "default 5m" },
        { "hold_max", "duration", "default 1d" },
        { "per_client", "boolean", "default false" },
        { "flows", "string", "default all" },
      } do
        local line = r.out:match("\n%s*" .. opt[1] .. " [^\n]*")
        assert(line, "info should list option " .. opt[1] .. "\n" .. r.out)
        assert(has(line, opt[2]) and has(line, opt[3]), "option line: " .. line)
        assert(#line > 60, "option " .. opt[1] .. " has a description: " .. line)
      end
    end)

    it("bad option values give a clear error and a non-zero exit", function()
      main = main or main_capture()
      local base = run.SLUICE .. " run " .. run.q(EX) .. " -r " .. run.q(main) .. " -q "
      clean_failure(run.sh(base .. "-o max_names=0"), "max_names")
      clean_failure(run.sh(base .. "-o max_names=many"), "max_names", "many")
      clean_failure(run.sh(base .. "-o flows=some"), "flows", "some")
      clean_failure(run.sh(base .. "-o hold_min=2h -o hold_max=1h"), "hold_min", "hold_max")
      clean_failure(run.sh(base .. "-o hold_min=soon"), "hold_min", "soon")
      clean_failure(run.sh(base .. "-o per_client=maybe"), "per_client", "maybe")
      local r = run.sh(base .. "-o tag=")
      clean_failure(r, "tag")
      assert.are.equal("", r.out)
    end)
  end)

  -- ---- the parser on its own -----------------------------------------------

  describe("parse_response", function()
    local P = assert(policy.load_file(EX))
    local parse = P.parse_response

    -- A packet handle over a string, with the reads of sluice.packet.
    local Fake = {}
    Fake.__index = Fake
    local function fake(s)
      return setmetatable({ s = s, payload_len = #s }, Fake)
    end
    function Fake:u8(off)
      if off < 0 or off >= #self.s then return nil end
      return self.s:byte(off + 1)
    end
    function Fake:u16(off)
      if off < 0 or off + 2 > #self.s then return nil end
      local a, b = self.s:byte(off + 1, off + 2)
      return a * 256 + b
    end
    function Fake:u32(off)
      if off < 0 or off + 4 > #self.s then return nil end
      local a, b, c, d = self.s:byte(off + 1, off + 4)
      return ((a * 256 + b) * 256 + c) * 256 + d
    end
    function Fake:bytes(off, n)
      off = off or 0
      n = n or #self.s - off
      if off < 0 or n < 0 or off + n > #self.s then return nil end
      return self.s:sub(off + 1, off + n)
    end

    -- { qname, { addr, ... }, { ttl, ... } } or { nil, why }
    local function parsed(s)
      local addrs, ttls = {}, {}
      local q, n = parse(fake(s), addrs, ttls)
      if not q then return { nil, n } end
      assert.are.equal(n, #addrs)
      return { q, addrs, ttls }
    end

    local function chain_message()
      local m = dns()
      local q = m:question(dname("www.shop.test"), T_A)
      local test = q + 4 + 5
      local _, t1 = m:rr(ptr(q), T_CNAME, 100, "\4shop\8cdn-edge" .. ptr(test))
      local _, t2 = m:rr(ptr(t1), T_CNAME, 200, "\5edge7" .. ptr(t1 + 5))
      m:rr(ptr(t2), T_A, 300, pcap.ip4("198.51.100.7"))
      m:rr(ptr(t2), T_AAAA, 400, pcap.ip6("2001:db8::7"))
      m:rr("\5other" .. ptr(test), T_A, 500, pcap.ip4("198.51.100.99"))
      return m:bytes()
    end

    it("follows compression pointers and the CNAME chain from the question", function()
      assert.are.same({ "www.shop.test", { "198.51.100.7", "2001:db8::7" }, { 300, 400 } },
        parsed(chain_message()))
    end)

    it("follows a chain written in any order, names compared without case", function()
      local m = dns()
      m:question(dname("A.Test"), T_A)
      m:rr(dname("c.TEST"), T_A, 1, pcap.ip4("192.0.2.3"))
      m:rr(dname("b.test"), T_CNAME, 1, dname("C.test"))
      m:rr(dname("a.test"), T_CNAME, 1, dname("b.test"))
      m:rr(dname("d.test"), T_A, 1, pcap.ip4("192.0.2.4"))
      -- a CNAME loop ends the chain without hanging
      m:rr(dname("c.test"), T_CNAME, 1, dname("a.test"))
      assert.are.same({ "a.test", { "192.0.2.3" }, { 1 } }, parsed(m:bytes()))
    end)

    it("keeps nothing of one message for the next (chains, also after a rejected one)", function()
      local function cname_then(an)
        local m = dns { an = an }
        m:question(dname("a.test"), T_A)
        m:rr(dname("a.test"), T_CNAME, 1, dname("b.test"))
        m:rr(dname("b.test"), T_A, 1, pcap.ip4("192.0.2.1"))
        return m:bytes()
      end
      -- b.test's address, but no CNAME from a.test to it in this message
      local m = dns()
      m:question(dname("a.test"), T_A)
      m:rr(dname("b.test"), T_A, 1, pcap.ip4("192.0.2.2"))
      local unchained = m:bytes()
      assert.are.same({ "a.test", { "192.0.2.1" }, { 1 } }, parsed(cname_then()))
      assert.are.same({ "a.test", {}, {} }, parsed(unchained))
      assert.is_nil(parsed(cname_then(3))[1]) -- rejected after reading the CNAME
      assert.are.same({ "a.test", {}, {} }, parsed(unchained))
    end)

    it("formats AAAA addresses as flows show them (RFC 5952)", function()
      local s = simple_response("x.test", T_AAAA, {
        { T_AAAA, "2001:db8:0:0:1:0:0:1" }, { T_AAAA, "2001:0:0:1:0:0:0:1" },
        { T_AAAA, "0:0:0:0:0:0:0:1" }, { T_AAAA, "fe80:0:0:0:0:0:0:0" } })
      assert.are.same({ "2001:db8::1:0:0:1", "2001:0:0:1::1", "::1", "fe80::" }, parsed(s)[2])
    end)

    it("ignores records of another class, and skips extra questions", function()
      local m = dns()
      local q = m:question(dname("a.test"), T_A)
      m:question(dname("b.test"), T_A)
      m:rr(ptr(q), T_A, 1, pcap.ip4("192.0.2.1"), 3) -- CHAOS
      m:rr(ptr(q), T_A, 1, pcap.ip4("192.0.2.2"))
      m:rr(ptr(q), 16, 1, "\3txt") -- TXT
      assert.are.same({ "a.test", { "192.0.2.2" }, { 1 } }, parsed(m:bytes()))
    end)

    it("rejects every truncation of a good response, without raising", function()
      local s = chain_message()
      assert.is_string(parsed(s)[1])
      for len = 0, #s - 1 do
        local ok, res = pcall(parsed, s:sub(1, len))
        assert(ok, "raised at length " .. len .. ": " .. tostring(res))
        assert.is_nil(res[1], "a response cut to " .. len .. " bytes was accepted")
        assert.is_string(res[2])
      end
    end)

    it("rejects pointer loops, forward pointers and pointers into the header", function()
      local cases = {}
      do -- to itself
        local m = dns()
        m:question(dname("a.test"), T_A)
        m:rr(ptr(m.len), T_A, 1, pcap.ip4("192.0.2.1"))
        cases.self = m:bytes()
      end
      do -- a label, then back to that label
        local m = dns()
        m:question(dname("a.test"), T_A)
        local off = m.len
        m:rr("\1x" .. ptr(off), T_A, 1, pcap.ip4("192.0.2.1"))
        cases.back_to_own_start = m:bytes()
      end
      do -- two names pointing at each other (the first pointer goes forward)
        local m = dns()
        local q = m:question("\1a" .. ptr(12 + 2 + 2 + 4 + 2), T_A) -- into the answer's owner
        m:rr("\1b" .. ptr(q + 2), T_A, 1, pcap.ip4("192.0.2.1"))
        cases.mutual = m:bytes()
      end
      do -- into the header
        local m = dns()
        m:question(dname("a.test"), T_A)
        m:rr(ptr(4), T_A, 1, pcap.ip4("192.0.2.1"))
        cases.header = m:bytes()
      end
      for name, s in pairs(cases) do
        local ok, res = pcall(parsed, s)
        assert(ok, name .. " raised: " .. tostring(res))
        assert.is_nil(res[1], name .. " was accepted")
        assert.is_truthy(res[2]:find("pointer") or res[2]:find("label"), name .. ": " .. res[2])
      end
    end)

    it("rejects names over 255 bytes and labels of reserved types", function()
      local l63 = ("a"):rep(63)
      -- 4 * 64 + 1 = 257 bytes; 3 labels of 63 and one of 61 make 255
      local over = concat({ l63, l63, l63, l63 }, ".")
      local max = concat({ l63, l63, l63, ("a"):rep(61) }, ".")
      assert.are.equal("name longer than 255 bytes",
        parsed(simple_response(over, T_A, { { T_A, "192.0.2.1" } }))[2])
      assert.are.equal(max, parsed(simple_response(max, T_A, { { T_A, "192.0.2.1" } }))[1])
      local m = dns()
      m:question("\64x\0", T_A)
      assert.are.equal("unknown label type", parsed(m:bytes())[2])
    end)

    it("survives random damage to good responses", function()
      math.randomseed(20240601)
      local seeds = { chain_message(), simple_response("x.example.com", T_A,
        { { T_A, "192.0.2.1" }, { T_AAAA, "2001:db8::1" } }) }
      local accepted, rejected = 0, 0
      for i = 1, 5000 do
        local s = seeds[i % #seeds + 1]
        local b = { s:byte(1, -1) }
        for _ = 1, math.random(1, 4) do
          local pos = math.random(1, #b)
          local r = math.random()
          if r < 0.3 then
            b[pos] = 0xc0 + math.random(0, 63) -- a pointer byte
          elseif r < 0.5 then
            b[pos] = math.random(0, 70) -- a label length
          else
            b[pos] = math.random(0, 255)
          end
        end
        if math.random() < 0.3 then
          for k = math.random(1, #b), #b do b[k] = nil end
        end
        local ok, res = pcall(parsed, string.char(unpack(b)))
        assert(ok, "raised on a damaged response: " .. tostring(res))
        if res[1] then
          accepted = accepted + 1
          for _, a in ipairs(res[2]) do assert.is_string(a) end
        else
          rejected = rejected + 1
        end
      end
      assert(accepted > 0 and rejected > 0, accepted .. " accepted, " .. rejected .. " rejected")
    end)
  end)
end)
