-- The one-way data path: nothing lost or corrupted in ordinary use. Each
-- test is a finding that reproduced before the fix (issue 10), or an input
-- from ../shared/repro (copied to spec/fixtures/repro).
local ffi = require "ffi"
local run = require "support.run"
local sluice = require "sluice"
local core = require "sluice.core"

local SAMPLE = run.root .. "/examples/sample.pcap"
local REPRO = run.root .. "/spec/fixtures/repro/"
local SLUICE, q = run.SLUICE, run.q
local SAMPLE_FLOWS, SAMPLE_PACKETS = 161, 1600

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

local function sanitized()
  return (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) ~= nil
end

describe("exporting a file run over IPFIX/UDP to a plain nfcapd", function()
  teardown(run.cleanup)

  local function nfcapd_start(dir)
    local port = 20000 + math.random(0, 20000)
    local c = { dir = dir .. "/nf", log = dir .. "/nfcapd.log", pidf = dir .. "/nfcapd.pid", port = port }
    os.execute("mkdir -p " .. q(c.dir))
    -- the plain command line of the finding: no -B, default socket buffer
    os.execute(string.format("%snfcapd -b 127.0.0.1 -p %d -w %s -t 60 >%s 2>&1 & echo $! >%s",
      run.PLAIN, port, q(c.dir), q(c.log), q(c.pidf)))
    for _ = 1, 100 do
      if has(run.slurp(c.log) or "", "Startup") then break end
      os.execute("sleep 0.05")
    end
    c.pid = tonumber((run.slurp(c.pidf) or ""):match("%d+"))
    return c
  end

  local function nfcapd_flows(c)
    os.execute("kill -TERM " .. c.pid .. "; while kill -0 " .. c.pid .. " 2>/dev/null; do sleep 0.05; done")
    local r = run.sh(run.PLAIN .. "nfdump -R " .. q(c.dir) .. " -q -o raw | grep -c 'Flow Record'")
    return tonumber(r.out:match("%d+")) or 0
  end

  local function export(args, what)
    if not run.have("nfcapd") then pending("nfcapd is not installed (apt-get install nfdump)") end
    local path, truth = run.generated(args, what, pending)
    local dir = run.tmpdir()
    local c = nfcapd_start(dir)
    local r = run.sh(SLUICE .. " run -r " .. q(path) .. " -q -v --out ipfix:127.0.0.1:" .. c.port)
    local got = nfcapd_flows(c)
    assert(r.code == 0, run.describe(r))
    local flows = tonumber(r.err:match("\nflows (%d+)") or r.err:match("^flows (%d+)"))
    assert(flows and flows >= truth.flows, run.describe(r))
    assert.is_nil(r.err:match("dropped [1-9]"), run.describe(r))
    assert.equal(flows, got, "nfcapd stored " .. got .. " of " .. flows .. " flows")
  end

  it("arrives whole: 600,000 packets, about 49,000 flows", function()
    export("-n 600000 -c 20000 -r 20000", "datapath_spec")
  end)

  it("arrives whole: the 2M-packet bench trace", function()
    if sanitized() then
      io.stderr:write("datapath_spec: the 2M-packet export runs in the plain pass only (slow under ASan)\n")
      pending("2M-packet export: plain build only (the 600k one runs under ASan)")
    end
    export("-n 2000000 -c 20000", "datapath_spec")
  end)
end)

describe("routes by source kind", function()
  -- a sink that takes one record per call in three and is busy otherwise
  local function busy_sink(queue)
    local s = { name = "busy", queue = queue, got = 0, calls = 0 }
    function s:write(rec)
      self.calls = self.calls + 1
      if self.calls % 3 ~= 0 then return nil, "busy", "transient" end
      self.got = self.got + 1
      return true
    end
    function s:prepare(rec) return rec:totable() end
    return s
  end

  local function emitter()
    local P, emit = {}, nil
    function P.init(_, ctx) emit = ctx.emit end
    function P.on_flow_end(f) emit(f) end
    return P
  end

  it("wait for a slow sink when reading a file: nothing is dropped", function()
    local s = busy_sink(4)
    local eng = assert(sluice.open { read = SAMPLE })
    local ok, report = eng:run(emitter(), nil, { outputs = { s } })
    assert(ok, report)
    assert.equal(SAMPLE_FLOWS, s.got)
    local st = report.sinks.busy
    assert.equal(SAMPLE_FLOWS, st.written)
    assert.equal(0, st.dropped_lag + st.dropped_failed + st.dropped_at_close)
    assert(st.waits > 0, "the run should have waited")
    eng:close()
  end)

  it("drop and count with on_lag = 'drop' (the live default)", function()
    local s = busy_sink(4)
    local eng = assert(sluice.open { read = SAMPLE })
    local ok, report = eng:run(emitter(), nil, { outputs = { s }, on_lag = "drop" })
    assert(ok, report)
    local st = report.sinks.busy
    assert(st.dropped_lag > 0, "a full queue drops")
    assert.equal(SAMPLE_FLOWS, st.written + st.dropped_lag + st.dropped_failed + st.dropped_at_close)
    eng:close()
  end)

  it("give up on a destination that takes nothing, counted", function()
    local dead = { name = "dead", queue = 2, give_up = 0.2 }
    function dead:write() return nil, "down", "transient" end
    function dead:prepare(rec) return rec:totable() end
    local eng = assert(sluice.open { read = SAMPLE })
    local t0 = core.monotonic()
    local ok, report = eng:run(emitter(), nil, { outputs = { dead } })
    assert(ok, report)
    assert(core.monotonic() - t0 < 10, "a dead destination stalls the run once, briefly")
    local st = report.sinks.dead
    assert.equal(SAMPLE_FLOWS, st.dropped_lag + st.dropped_failed + st.dropped_at_close)
    eng:close()
  end)

  it("refuse an unknown on_lag", function()
    local eng = assert(sluice.open { read = SAMPLE })
    assert.has_error(function() eng:run(emitter(), nil, { on_lag = "maybe" }) end,
      "engine:run: on_lag is 'wait' or 'drop'")
    eng:close()
  end)
end)

describe("events caused while the output is dispatched", function()
  teardown(run.cleanup)

  it("do not crash a second policy (1500 updates in the first on_flow_start)", function()
    local seen, bad = 0, 0
    local P1, P2, ctx = {}, {}, nil
    local done = false
    function P1.init(_, c) ctx = c end
    function P1.on_flow_start()
      if done then return end
      done = true
      for i = 1, 1500 do assert(ctx.engine:update { keys = { 1000000 + i } }) end
    end
    function P2.on_flow_start(f)
      seen = seen + 1
      local src = f.src
      if f.key_id then
        if src ~= nil or f.key_id <= 1000000 then bad = bad + 1 end
      elseif type(src) ~= "string" or not src:find("[%.:]") then
        bad = bad + 1
      end
    end
    local eng = assert(sluice.open { read = SAMPLE })
    local ok, err = eng:run { P1, P2 }
    assert(ok, err)
    assert.equal(SAMPLE_FLOWS + 1500, seen)
    assert.equal(0, bad)
    eng:close()
  end)

  it("run clean from the CLI: repro updn.lua (n=957, read) and updn.lua + reader.lua", function()
    local r = run.sh(SLUICE .. " run " .. q(REPRO .. "updn.lua") .. " -o n=957 -o read=true -q -r " ..
      q(SAMPLE) .. " --out json:/dev/null")
    assert(r.code == 0, run.describe(r))
    r = run.sh(SLUICE .. " run " .. q(REPRO .. "updn.lua") .. " " .. q(REPRO .. "reader.lua") ..
      " -q -r " .. q(SAMPLE) .. " --out json:/dev/null")
    assert(r.code == 0, run.describe(r))
  end)

  it("a nested sluice.open/run in a handler leaves the outer run intact (repro nested.lua)", function()
    local dir = run.tmpdir()
    local r = run.sh(SLUICE .. " run " .. q(REPRO .. "nested.lua") .. " -q -r " .. q(SAMPLE) ..
      " --out json:" .. q(dir .. "/out.json"))
    assert(r.code == 0, run.describe(r))
    local recs = run.json_lines(dir .. "/out.json")
    assert.equal(SAMPLE_FLOWS, #recs)
    for _, rec in ipairs(recs) do
      assert.equal("1", rec.tags and rec.tags.outer)
      assert.is_nil(rec.tags.inner) -- the inner run's tags stay with the inner engine
    end
  end)
end)

describe("a flow handle kept past its handler", function()
  teardown(run.cleanup)

  it("raises a clear error once its flow has ended, never reads another flow", function()
    local kept = {}
    local P = {}
    function P.on_flow_end(f) kept[#kept + 1] = f end
    function P.stop()
      for _, f in ipairs(kept) do local _ = tostring(f) end
    end
    local eng = assert(sluice.open { read = SAMPLE })
    local ok, err = eng:run(P)
    assert.is_nil(ok)
    assert(has(err, "policy policy: stop failed") and has(err, "handle used after its handler returned"),
      err)
    eng:close()
  end)

  it("still describes its own flow while the flow lives, and at its end", function()
    local starts, wrong, checked = {}, 0, 0
    local P = {}
    function P.on_flow_start(f) starts[f.id] = { h = f, src = f.src, dport = f.dport } end
    function P.on_flow_end(f)
      local s = starts[f.id]
      checked = checked + 1
      if s.h.id ~= f.id or s.h.src ~= s.src or s.h.dport ~= s.dport or s.h.pkts ~= f.pkts then
        wrong = wrong + 1
      end
    end
    local eng = assert(sluice.open { read = SAMPLE })
    assert(eng:run(P))
    assert.equal(SAMPLE_FLOWS, checked)
    assert.equal(0, wrong)
    eng:close()
  end)

  it("stops the run with that error in repro stale_tag.lua", function()
    local r = run.sh(SLUICE .. " run " .. q(REPRO .. "stale_tag.lua") .. " -q -r " .. q(SAMPLE) ..
      " --out json:/dev/null")
    assert.equal(1, r.code, run.describe(r))
    assert(has(r.err, "handle used after its handler returned"), run.describe(r))
    assert.is_nil(r.err:find("stale handle", 1, true), run.describe(r))
  end)

  it("copies keep working after the run", function()
    local copies = {}
    local eng = assert(sluice.open { read = SAMPLE })
    assert(eng:run { on_flow_end = function(f) copies[#copies + 1] = f:copy() end })
    assert.equal(SAMPLE_FLOWS, #copies)
    local ids = {}
    for _, c in ipairs(copies) do ids[c.id] = true end
    local n = 0
    for _ in pairs(ids) do n = n + 1 end
    assert.equal(SAMPLE_FLOWS, n)
    eng:close()
  end)
end)

-- a packet kept past on_packet read the packet that later took its place
describe("a packet kept past on_packet", function()
  teardown(run.cleanup)

  it("raises when read, while pkt:copy() keeps its fields and bytes", function()
    local kept, copies, seen = {}, {}, {}
    local P = { info = { packets = "udp" } }
    function P.on_packet(pkt)
      if #kept < 50 then
        kept[#kept + 1], copies[#copies + 1] = pkt, pkt:copy()
        seen[#seen + 1] = { len = pkt.len, sport = pkt.sport, bytes = pkt:frame(), first = pkt:u8(0) }
      end
    end
    local stale, errs = 0, {}
    function P.stop()
      for _, pkt in ipairs(kept) do
        local ok, err = pcall(function() local len = pkt.len; return len end)
        if not ok then stale = stale + 1; errs[#errs + 1] = err end
      end
    end
    local eng = assert(sluice.open { read = SAMPLE })
    assert(eng:run(P))
    eng:close()
    assert.equal(50, stale)
    assert(has(errs[1], "packet handle used after its on_packet returned"), errs[1])
    for i, c in ipairs(copies) do
      assert.same(seen[i], { len = c.len, sport = c.sport, bytes = c:frame(), first = c:u8(0) })
    end
    local ok, err = pcall(function() local b = copies[1]:u8("x"); return b end)
    assert.is_false(ok)
    assert(has(err, "datapath_spec.lua") and has(err, "the offset is a number"), err)
  end)
end)

describe("pcap output", function()
  teardown(run.cleanup)

  -- (ts, caplen, len) of each record of a little-endian microsecond pcap
  local function records(data)
    local function u32(pos)
      local a, b, c, d = data:byte(pos, pos + 3)
      return a + b * 256 + c * 65536 + d * 16777216
    end
    local recs, pos = {}, 25
    while pos + 16 <= #data do
      local caplen = u32(pos + 8)
      recs[#recs + 1] = { ts = u32(pos) + u32(pos + 4) * 1e-6, caplen = caplen, len = u32(pos + 12) }
      pos = pos + 16 + caplen
    end
    return recs
  end

  local function check_order(path, want_packets)
    local recs = records(assert(run.slurp(path)))
    assert.equal(want_packets, #recs)
    for i = 2, #recs do
      local a, b = recs[i - 1], recs[i]
      assert(b.ts >= a.ts, string.format("packet %d at %.6f comes after %.6f", i, b.ts, a.ts))
    end
    if run.have("capinfos") then
      local r = run.sh(run.PLAIN .. "capinfos -o " .. q(path))
      assert(has(r.out, "Strict time order:   True"), run.describe(r))
    end
  end

  it("from flow:capture() in on_flow_start is in time order, from each flow's first packet", function()
    local dir = run.tmpdir()
    local pol = run.spit(dir .. "/cap.lua", [[
      local P = {}
      function P.on_flow_start(f) assert(f:capture()) end
      return P
    ]])
    local r = run.sh(SLUICE .. " run " .. q(pol) .. " -q -r " .. q(SAMPLE) .. " --out pcap:" ..
      q(dir .. "/cap.pcap"))
    assert(r.code == 0, run.describe(r))
    check_order(dir .. "/cap.pcap", SAMPLE_PACKETS)
  end)

  it("mixing on_packet emits and flow captures in one file stays in time order", function()
    local dir = run.tmpdir()
    local pol = run.spit(dir .. "/mix.lua", [[
      local P = { info = { packets = "tcp or (vlan and tcp)" } }
      local emit
      function P.init(_, ctx) emit = ctx.emit end
      function P.on_flow_start(f) if f.proto ~= "tcp" then assert(f:capture()) end end
      function P.on_packet(pkt) emit(pkt) end
      return P
    ]])
    local r = run.sh(SLUICE .. " run " .. q(pol) .. " -q -r " .. q(SAMPLE) .. " --out pcap:" ..
      q(dir .. "/mix.pcap"))
    assert(r.code == 0, run.describe(r))
    check_order(dir .. "/mix.pcap", SAMPLE_PACKETS)
  end)

  it("of the default job is the capture itself", function()
    local dir = run.tmpdir()
    local r = run.sh(SLUICE .. " run -q -r " .. q(SAMPLE) .. " --out pcap:" .. q(dir .. "/all.pcap"))
    assert(r.code == 0, run.describe(r))
    check_order(dir .. "/all.pcap", SAMPLE_PACKETS)
    local a = records(run.slurp(dir .. "/all.pcap"))
    local b = records(run.slurp(SAMPLE))
    for i = 1, #b do
      assert.equal(b[i].ts, a[i].ts)
      assert.equal(b[i].caplen, a[i].caplen)
      assert.equal(b[i].len, a[i].len)
    end
  end)
end)
