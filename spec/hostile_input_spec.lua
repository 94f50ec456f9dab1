-- Hostile input through the CLI (issue 11): captures whose timestamps
-- have no value in uint64 nanoseconds, and a capture truncated while it is
-- read. Each input from ../shared/repro (copied to spec/fixtures/repro)
-- killed sluice before the fix: SIGSEGV in hash_unlink, a hang with
-- --slice 1, a SIGBUS from the mapped reader. Each run is bounded by
-- timeout(1), so a hang fails (exit 124) instead of stalling the suite.
local run = require "support.run"

local REPRO = run.root .. "/spec/fixtures/repro/"
local SLUICE, q = run.SLUICE, run.q
-- Bounds of a run: a repro file takes well under a second (a few with the
-- ASan core), the truncated trace a few seconds (tens under ASan).
local LIMIT_S, LIMIT_BIG_S = 30, 300

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

-- The counters -v prints: packets, malformed and its reasons, flows
-- started and ended.
local function counters(r)
  local c = {
    packets = tonumber(r.err:match("packets (%d+) bytes")),
    malformed = tonumber(r.err:match(" malformed (%d+)")),
    timestamp = tonumber(r.err:match("timestamp=(%d+)") or 0),
  }
  c.started, c.ended = r.err:match("\nflows (%d+) ended (%d+)")
  if not c.started then c.started, c.ended = r.err:match("^flows (%d+) ended (%d+)") end
  c.started, c.ended = tonumber(c.started), tonumber(c.ended)
  return c
end

-- sluice run ARGS -v, every record as JSON lines, within limit_s (default
-- LIMIT_S); the run result, the counters and the records.
local function sluice_v(args, limit_s)
  local dir = run.tmpdir()
  local out = dir .. "/out.json"
  -- TERM at the limit, KILL 10 s later if that did not end it
  local r = run.sh(string.format("timeout -k 10 %d %s run %s -v --out json:%s",
    limit_s or LIMIT_S, SLUICE, args, q(out)))
  r.limit_s = limit_s or LIMIT_S
  local recs = run.exists(out) and run.json_lines(out) or {}
  return r, counters(r), recs
end

local function signal_free(r)
  -- a signal death shows as 128 + N (also through timeout(1)); 124 or
  -- 137 (KILL): hung
  assert(r.code ~= 124 and r.code ~= 137,
    "the run did not end within " .. r.limit_s .. " s\n" .. run.describe(r))
  assert(r.code < 128, "the run died of signal " .. (r.code - 128) .. "\n" .. run.describe(r))
end

describe("pcapng timestamps that do not fit in uint64 ns", function()
  teardown(run.cleanup)

  -- file -> packets that tshark reads from it (the reader stops at the same
  -- corrupt block), packets whose time is at or past 2^64 ns (one each:
  -- counted as malformed "timestamp" and skipped), and whether a corrupt
  -- block ends the file (exit 1, "corrupt record", after everything
  -- before it).
  local cases = {
    { "ts_saturate_min.pcapng", 3, 1 },
    { "ts_saturate_2pk.pcapng", 2, 1 },
    { "tsresol_seconds.pcapng", 1600, 1 },
    { "0255_nhrp.pcapng", 5, 1, true },
    { "0541_OSPFv2_Capture_FINAL.pcapng", 15, 1, true },
    { "0555_nhrp.pcapng", 25, 1 },
    { "0815_nhrp.pcapng", 15, 1, true },
    { "1375_nhrp.pcapng", 8, 1, true },
    { "1535_nhrp.pcapng", 4, 1, true },
    { "1681_OSPFv2_Capture_FINAL.pcapng", 30, 1 },
  }

  for _, c in ipairs(cases) do
    local file, packets, bad_ts, corrupt = c[1], c[2], c[3], c[4]
    for _, slice in ipairs { "", "--slice 1" } do
      it(string.format("%s%s: no signal, no hang, every flow reported, %d malformed timestamp",
        file, slice ~= "" and " " .. slice or "", bad_ts), function()
        local path = REPRO .. file
        local r, n, recs = sluice_v("-r " .. q(path) .. " " .. slice)
        signal_free(r)
        if corrupt then
          assert.equal(1, r.code, run.describe(r))
          assert(has(r.err, "sluice: " .. path .. ": not a pcap/pcapng file or corrupt record"),
            run.describe(r))
        else
          assert.equal(0, r.code, run.describe(r))
        end
        assert.equal(packets, n.packets, run.describe(r))
        assert.equal(bad_ts, n.timestamp, run.describe(r))
        assert(n.started and n.started > 0, run.describe(r))
        assert.equal(n.started, n.ended, run.describe(r))
        local flows = run.of_type(recs, "flow")
        assert.equal(n.ended, #flows, run.describe(r))
        local pkts = run.flow_totals(flows)
        -- every packet but the malformed ones is in a flow (all are IP)
        assert.equal(packets - n.malformed, pkts)
        for _, f in ipairs(flows) do
          -- times from the capture's own years, none at the end of time
          assert(f.first >= 1e9 and f.last < 4e9 and f.first <= f.last,
            string.format("flow %d: first %.6f last %.6f", f.id, f.first, f.last))
        end
        if slice ~= "" then
          local slices = run.of_type(recs, "slice")
          assert(#slices >= #flows, run.describe(r))
          assert.equal(pkts, run.flow_totals(slices))
        end
      end)
    end
  end

  -- sample.pcap in pcapng, one packet (51: 10.100.50.161:50063 ->
  -- 198.18.0.1:8080) moved to a second interface with if_tsresol=0 (1 s
  -- units) and its microsecond count left as is: 1699999200607833 s, about
  -- the year 53 million, which has no value in uint64 ns.
  local function sample_flows()
    local r, _, recs = sluice_v("-r " .. q(run.root .. "/examples/sample.pcap"))
    assert.equal(0, r.code, run.describe(r))
    local by = {}
    for _, f in ipairs(run.of_type(recs, "flow")) do
      by[table.concat({ f.proto, f.src, f.sport, f.dst, f.dport, f.vlan }, " ")] = f
    end
    return by
  end

  local function key(f)
    return table.concat({ f.proto, f.src, f.sport, f.dst, f.dport, f.vlan }, " ")
  end

  it("tsresol_seconds.pcapng: every flow as in sample.pcap, but the packet that cannot be timed",
    function()
      local want = sample_flows()
      local r, n, recs = sluice_v("-r " .. q(REPRO .. "tsresol_seconds.pcapng"))
      assert.equal(0, r.code, run.describe(r))
      assert.equal(1, n.timestamp)
      local flows = run.of_type(recs, "flow")
      assert.equal(161, #flows)
      for _, f in ipairs(flows) do
        local w = assert(want[key(f)], key(f))
        local lost = f.sport == 50063 and 1 or 0
        assert.equal(w.pkts_fwd - lost, f.pkts_fwd, key(f))
        assert.equal(w.pkts_rev, f.pkts_rev, key(f))
        assert.equal(w.first, f.first, key(f))
        assert.equal(w.last, f.last, key(f))
      end
    end)

  -- The same file with that packet's count made a time in seconds:
  -- 1699999200 s on the 1 s interface, earlier than the flow's SYN, so it
  -- becomes the flow's first time, to the second.
  it("if_tsresol=0 (1 s units) is read in exact seconds", function()
    local data = assert(run.slurp(REPRO .. "tsresol_seconds.pcapng"))
    local function u32(pos)
      local a, b, c, d = data:byte(pos, pos + 3)
      return a + b * 256 + c * 65536 + d * 16777216
    end
    local function le32(v)
      return string.char(v % 256, math.floor(v / 256) % 256, math.floor(v / 65536) % 256,
        math.floor(v / 16777216) % 256)
    end
    assert.equal("\77\60\43\26", data:sub(9, 12)) -- a little-endian section
    -- the Enhanced Packet Block (type 6) of interface 1
    local pos, epb = 1, nil
    while pos + 12 <= #data do
      local t, len = u32(pos), u32(pos + 4)
      if t == 6 and u32(pos + 8) == 1 then epb = pos break end
      pos = pos + len
    end
    assert(epb, "no packet on interface 1")
    local fixed = data:sub(1, epb + 11) .. le32(0) .. le32(1699999200) .. data:sub(epb + 20)
    local dir = run.tmpdir()
    local path = run.spit(dir .. "/seconds.pcapng", fixed)
    local want = sample_flows()
    local r, n, recs = sluice_v("-r " .. q(path))
    assert.equal(0, r.code, run.describe(r))
    assert.equal(0, n.malformed, run.describe(r))
    local flows = run.of_type(recs, "flow")
    assert.equal(161, #flows)
    local seen = 0
    for _, f in ipairs(flows) do
      local w = want[key(f)]
      assert.equal(w.pkts_fwd + w.pkts_rev, f.pkts_fwd + f.pkts_rev, key(f))
      assert.equal(w.last, f.last, key(f))
      if f.sport == 50063 and f.src == "10.100.50.161" then
        seen = seen + 1
        assert.equal(1699999200, f.first) -- exactly: no fraction
        assert.equal("1699999200.000000", string.format("%.6f", f.first))
      else
        assert.equal(w.first, f.first, key(f))
      end
    end
    assert.equal(1, seen)
  end)
end)

describe("a capture truncated while it is read", function()
  teardown(run.cleanup)

  -- The truncation must come while the run still has most of the file to
  -- read. A policy does it (truncate(1), another process, as an operator
  -- would) at its first flow start: the reader has then read at most its
  -- first window (1 MiB) of the ~290 MB trace, so the cut at half the file
  -- is always ahead of it, whatever the machine's speed. Before the fix
  -- the mapped reader touched pages past the new end: SIGBUS, no summary.
  local POLICY = [[
    local P = { info = { name = "shrink", options = {
      path = { type = "string" }, size = { type = "integer" } } } }
    local opts, done, emit
    function P.init(o, ctx) opts, emit = o, ctx.emit end
    function P.on_flow_start()
      if done then return end
      done = true
      assert(os.execute("truncate -s " .. opts.size .. " '" .. opts.path .. "'") == 0)
    end
    function P.on_flow_end(f) emit(f) end
    return P
  ]]

  it("ends like a truncated capture: what was read is processed, every flow reported, " ..
    "a clear error naming the file, exit 1", function()
    local gen, truth = run.generated("-n 500000 -c 20000", "hostile_input_spec", pending)
    local dir = run.tmpdir()
    local path = dir .. "/shrinking.pcap"
    assert(os.execute("cp " .. q(gen) .. " " .. q(path)) == 0)
    local size = #assert(run.slurp(path))
    assert(size > 200e6, "a trace of a few hundred MB: " .. size)
    local cut = math.floor(size / 2)
    local pol = run.spit(dir .. "/shrink.lua", POLICY)
    local r, n, recs = sluice_v(q(pol) .. " -o path=" .. q(path) .. " -o size=" .. cut ..
      " -r " .. q(path), LIMIT_BIG_S)
    signal_free(r)
    assert.equal(1, r.code, run.describe(r))
    assert(has(r.err, "sluice: " .. path .. ": file shrank while it was read " ..
      "(everything before it was processed)"), run.describe(r))
    -- the summary: about half the packets, every flow started also ended
    assert(n.packets and n.packets > truth.packets / 4 and n.packets < truth.packets,
      run.describe(r))
    assert.equal(0, n.malformed, run.describe(r))
    assert(n.started > 1000, run.describe(r))
    assert.equal(n.started, n.ended, run.describe(r))
    local flows = run.of_type(recs, "flow")
    assert.equal(n.ended, #flows)
    assert.equal(n.packets, (run.flow_totals(flows)))
    assert.equal(cut, #assert(run.slurp(path)))
  end)
end)

describe("an IP length past the frame's length on the wire", function()
  local pcap = require "support.pcap"
  local sluice = require "sluice"
  teardown(pcap.cleanup)

  it("is counted as malformed ip_overlong and still counted in its flow", function()
    local function pkt(s, total_len)
      return { ts = pcap.t(s), frame = pcap.ether { payload = pcap.ipv4 { src = "10.0.0.1",
        dst = "10.0.0.2", proto = 17, total_len = total_len,
        payload = pcap.udp { sport = 1000, dport = 53, len = 20 } } } }
    end
    local path = pcap.write { pkt(0), pkt(1, 1400), pkt(2) }
    local eng = assert(sluice.open { read = path })
    local flows = {}
    assert(eng:run { on_flow_end = function(f) flows[#flows + 1] = f:totable() end })
    local st = eng:stats()
    eng:close()
    assert.are.equal(1, #flows)
    assert.are.equal(3, flows[1].pkts_fwd)
    assert.are.equal(1, st.malformed_by.ip_overlong)
    assert.are.equal(0, st.malformed, "kept packets are not in the dropped count")
    -- -v names the reason
    local r = run.sh(SLUICE .. " run -r " .. q(path) .. " -q -v --out json:/dev/null")
    assert.are.equal(0, r.code, run.describe(r))
    assert(has(r.err, "malformed 0 ip_overlong 1 (kept in their flows)"), run.describe(r))
  end)
end)
