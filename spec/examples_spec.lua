-- The example policies and scripts run as written, and what they print
-- agrees with an independent computation from the default flow/slice JSON
-- output of the same capture.
local run = require "support.run"

local SAMPLE = run.root .. "/examples/sample.pcap"
local SAMPLE_TRUTH = run.root .. "/spec/fixtures/sample.truth.json"
local EX = run.root .. "/examples/"

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

-- Default output (flows, and slices with --slice) of the sample capture.
local defaults = {}
local function default_output(extra)
  extra = extra or ""
  if not defaults[extra] then
    local r, recs = run.sluice_json("-r " .. run.q(SAMPLE) .. extra)
    assert(r.code == 0, run.describe(r))
    local flows = {}
    for _, f in ipairs(run.of_type(recs, "flow")) do flows[f.id] = f end
    defaults[extra] = { flows = flows, slices = run.of_type(recs, "slice") }
  end
  return defaults[extra]
end

local function contains(list, x)
  for _, v in ipairs(list) do
    if v == x then return true end
  end
  return false
end

-- A clean failure: non-zero exit, a message on stderr, no Lua traceback.
local function clean_failure(r, ...)
  assert(r.code ~= 0, "expected a non-zero exit\n" .. run.describe(r))
  assert(not has(r.err, "stack traceback"), "expected a message, not a traceback\n" .. run.describe(r))
  for _, needle in ipairs { ... } do
    assert(has(r.err, needle), "stderr should mention '" .. needle .. "'\n" .. run.describe(r))
  end
end

describe("examples", function()
  teardown(run.cleanup)

  describe("top_talkers.lua", function()
    -- Per interval (start time) and host: bytes and packets it sent, from
    -- the default slice records: a slice's src sent the fwd deltas, its dst
    -- the rev deltas.
    local function sent_per_slice()
      local per = {}
      for _, s in ipairs(default_output(" --slice 5").slices) do
        local t = per[s.start] or { ["end"] = s["end"], bytes = {}, pkts = {} }
        per[s.start] = t
        local function add(host, bytes, pkts)
          if bytes == 0 and pkts == 0 then return end
          t.bytes[host] = (t.bytes[host] or 0) + bytes
          t.pkts[host] = (t.pkts[host] or 0) + pkts
        end
        add(s.src, s.bytes_fwd, s.pkts_fwd)
        add(s.dst, s.bytes_rev, s.pkts_rev)
      end
      return per
    end

    local function check(by, n)
      local r, recs = run.sluice_json(run.q(EX .. "top_talkers.lua") .. " -r " .. run.q(SAMPLE) ..
        " --slice 5 -o top=" .. n .. (by and (" -o by=" .. by) or ""))
      assert(r.code == 0, run.describe(r))
      local metric = by or "bytes"
      local per = sent_per_slice()
      local nslices = 0
      for _ in pairs(per) do nslices = nslices + 1 end
      assert(nslices >= 3, "the sample spans at least 3 slices of 5 s")
      assert.are.equal(nslices, #recs, "one top_talkers line per slice")
      local starts = {}
      for _, rec in ipairs(recs) do
        assert.are.equal("top_talkers", rec.type)
        local want = per[rec.start]
        assert(want, "top_talkers line for an interval with no slice records: " .. tostring(rec.start))
        assert(not starts[rec.start], "two lines for the slice starting " .. rec.start)
        starts[rec.start] = true
        assert.are.equal(want["end"], rec["end"])
        local values, nhosts = {}, 0
        for _, v in pairs(want[metric]) do
          values[#values + 1] = v
          nhosts = nhosts + 1
        end
        table.sort(values, function(a, b) return a > b end)
        assert.are.equal(nhosts, rec.hosts, "hosts in the slice starting " .. rec.start)
        assert.are.equal(math.min(n, nhosts), #rec.top, "length of the top list")
        local seen = {}
        for i, h in ipairs(rec.top) do
          assert(not seen[h.addr], "host listed twice: " .. h.addr)
          seen[h.addr] = true
          assert.are.equal(want.bytes[h.addr], h.bytes, "bytes sent by " .. h.addr .. " in slice " .. rec.start)
          assert.are.equal(want.pkts[h.addr], h.pkts, "packets sent by " .. h.addr .. " in slice " .. rec.start)
          -- the i-th entry carries the i-th largest value: sorted, and no
          -- host left out that sent more
          assert.are.equal(values[i], h[metric], "rank " .. i .. " by " .. metric .. " in slice " .. rec.start)
        end
      end
    end

    it("runs as written: -o top=3 --slice 5, hosts by bytes sent per slice", function()
      check(nil, 3)
    end)

    it("-o by=pkts ranks by packets", function()
      check("pkts", 5)
    end)

    it("bad option values give a clear error and a non-zero exit", function()
      local base = "run " .. run.q(EX .. "top_talkers.lua") .. " -r " .. run.q(SAMPLE) .. " --slice 5 -q "
      local r = run.sh(run.SLUICE .. " " .. base .. "-o top=0")
      clean_failure(r, "top")
      r = run.sh(run.SLUICE .. " " .. base .. "-o top=many")
      clean_failure(r, "top", "many")
      r = run.sh(run.SLUICE .. " " .. base .. "-o top=2.5")
      clean_failure(r, "top", "2.5")
      r = run.sh(run.SLUICE .. " " .. base .. "-o by=weight")
      clean_failure(r, "by", "weight")
      assert.are.equal("", r.out, "nothing written when init refuses its options")
    end)
  end)

  describe("heavy_flows.lua", function()
    local MIN_BYTES, MIN_DURATION = 20000, 10

    local function classify(f)
      local bytes = f.bytes_fwd + f.bytes_rev
      local dur = f.last - f.first
      -- keep clear of float noise at the threshold
      assert(math.abs(dur - MIN_DURATION) > 1e-3, "flow " .. f.id .. " sits on the duration threshold")
      return bytes >= MIN_BYTES, dur >= MIN_DURATION
    end

    local function heavy_run(extra)
      local r, recs = run.sluice_json(run.q(EX .. "heavy_flows.lua") .. " -r " .. run.q(SAMPLE) ..
        " -o min_bytes=" .. MIN_BYTES .. " -o min_duration=" .. MIN_DURATION .. (extra or ""))
      assert(r.code == 0, run.describe(r))
      return recs
    end

    -- Every report is a flow over a threshold with the right tags and
    -- totals, and every flow over a threshold is reported, once. With
    -- slices, a flow may also have been tagged long by a (checked) alert
    -- while it ran: long_alerted[id].
    local function check_reports(reports, flows, long_alerted)
      long_alerted = long_alerted or {}
      local reported = {}
      for _, rep in ipairs(reports) do
        local f = flows[rep.id]
        assert(f, "report for an unknown flow " .. tostring(rep.id))
        assert(not reported[rep.id], "flow " .. rep.id .. " reported twice")
        reported[rep.id] = true
        local heavy, long = classify(f)
        long = long or long_alerted[f.id] == true
        assert(heavy or long, string.format("flow %d reported but under both thresholds (%d bytes, %.3f s)",
          f.id, f.bytes_fwd + f.bytes_rev, f.last - f.first))
        assert.are.equal(heavy, contains(rep.tags, "heavy"), "tag heavy of flow " .. f.id)
        assert.are.equal(long, contains(rep.tags, "long"), string.format(
          "tag long of flow %d (duration %.3f s)", f.id, f.last - f.first))
        assert.are.same({ f.pkts_fwd, f.pkts_rev, f.bytes_fwd, f.bytes_rev, f.end_reason },
          { rep.pkts_fwd, rep.pkts_rev, rep.bytes_fwd, rep.bytes_rev, rep.end_reason },
          "totals of flow " .. f.id)
      end
      local nheavy, nlong = 0, 0
      for id, f in pairs(flows) do
        local heavy, long = classify(f)
        if heavy then nheavy = nheavy + 1 end
        if long then nlong = nlong + 1 end
        if heavy or long then
          assert(reported[id], string.format("flow %d over a threshold (%d bytes, %.3f s) not reported",
            id, f.bytes_fwd + f.bytes_rev, f.last - f.first))
        end
      end
      -- the thresholds catch some flows, not all
      assert(nheavy > 0 and nlong > 0, "thresholds should catch some flows")
      local n = 0
      for _ in pairs(flows) do n = n + 1 end
      assert(nheavy + nlong < n, "thresholds should not catch every flow")
    end

    it("without slices: reports exactly the flows over a threshold", function()
      local recs = heavy_run()
      local flows = default_output().flows
      local reports = run.of_type(recs, "report")
      assert.are.equal(#recs, #reports, "only report lines without --slice")
      check_reports(reports, flows)
    end)

    it("with --slice 5: alerts only flows over a threshold, before their report, once per tag", function()
      local recs = heavy_run(" --slice 5")
      local flows = default_output().flows
      -- cumulative bytes of each flow at the end of each slice
      local total_at = {}
      for _, s in ipairs(default_output(" --slice 5").slices) do
        total_at[s.flow_id .. "@" .. s["end"]] = s.total_bytes_fwd + s.total_bytes_rev
      end
      local reports, alerted, reported, long_alerted = {}, {}, {}, {}
      for _, rec in ipairs(recs) do
        if rec.type == "report" then
          reports[#reports + 1] = rec
          reported[rec.id] = true
        else
          assert.are.equal("alert", rec.type)
          local f = flows[rec.flow_id]
          assert(f, "alert for an unknown flow " .. tostring(rec.flow_id))
          assert(not reported[rec.flow_id], string.format(
            "alert for flow %d after its report (it ended at %.3f; alert at %s, tags %s)",
            rec.flow_id, f.last, tostring(rec.at), table.concat(rec.tags, ",")))
          assert.are.equal(total_at[rec.flow_id .. "@" .. rec.at], rec.bytes,
            "bytes of flow " .. rec.flow_id .. " at " .. tostring(rec.at))
          local a = alerted[rec.flow_id] or {}
          local fresh = false
          for _, tag in ipairs(rec.tags) do
            if not a[tag] then fresh = true end
          end
          assert(fresh, string.format("flow %d alerted again at %s with no new tag (%s)",
            rec.flow_id, tostring(rec.at), table.concat(rec.tags, ",")))
          for _, tag in ipairs(rec.tags) do
            if not a[tag] then
              a[tag] = true
              if tag == "heavy" then
                assert(rec.bytes >= MIN_BYTES, "heavy alert under min_bytes for flow " .. rec.flow_id)
              elseif tag == "long" then
                assert(f.first + MIN_DURATION <= rec.at + 1e-6, string.format(
                  "long alert for flow %d at %s, but its first packet was at %.3f (min_duration %d; it lasted %.3f s)",
                  rec.flow_id, tostring(rec.at), f.first, MIN_DURATION, f.last - f.first))
                long_alerted[rec.flow_id] = true
              else
                error("unknown tag " .. tag)
              end
            end
          end
          alerted[rec.flow_id] = a
        end
      end
      assert(next(alerted), "some flows qualify while running")
      check_reports(reports, flows, long_alerted)
    end)

    it("bad option values give a clear error and a non-zero exit", function()
      local base = run.SLUICE .. " run " .. run.q(EX .. "heavy_flows.lua") .. " -r " .. run.q(SAMPLE) .. " -q "
      clean_failure(run.sh(base .. "-o min_bytes=lots"), "min_bytes", "lots")
      clean_failure(run.sh(base .. "-o min_duration=forever"), "min_duration", "forever")
      clean_failure(run.sh(base .. "-o min_duration=-5"), "min_duration")
    end)
  end)

  describe("capture_summary.lua", function()
    local function summary(args)
      return run.sh("luajit " .. run.q(EX .. "capture_summary.lua") .. " " .. args)
    end

    it("runs as written and prints per-protocol flow counts matching the ground truth", function()
      local truth = run.decode(run.slurp(SAMPLE_TRUTH))
      local r = summary(run.q(SAMPLE))
      assert(r.code == 0, run.describe(r))
      local rows, pkts, bytes = {}, 0, 0
      for proto, f, p, b in r.out:gmatch("\n(%a[%w]*)%s+(%d+)%s+(%d+)%s+(%d+)") do
        rows[proto] = tonumber(f)
        pkts, bytes = pkts + tonumber(p), bytes + tonumber(b)
      end
      assert.are.equal(truth.flows_by_proto.tcp, rows.tcp, "tcp flows\n" .. r.out)
      assert.are.equal(truth.flows_by_proto.udp, rows.udp, "udp flows\n" .. r.out)
      assert.are.equal(truth.flows_by_proto.icmp, (rows.icmp or 0) + (rows.icmp6 or 0), "icmp flows\n" .. r.out)
      assert.are.equal(truth.packets, pkts, "packets\n" .. r.out)
      assert.are.equal(truth.bytes_frame, bytes, "bytes\n" .. r.out)
      assert(r.out:find(truth.packets .. " packets, 0 malformed, 0 not IP", 1, true), r.out)

      -- busiest server ports: bytes per proto/dport from the flows
      local by_port = {}
      for _, f in pairs(default_output().flows) do
        if f.proto == "tcp" or f.proto == "udp" then
          local k = f.proto .. "/" .. f.dport
          by_port[k] = (by_port[k] or 0) + f.bytes_fwd + f.bytes_rev
        end
      end
      local values = {}
      for _, v in pairs(by_port) do values[#values + 1] = v end
      table.sort(values, function(a, b) return a > b end)
      local listed = {}
      for port, b in r.out:gmatch("\n  (%a+/%d+)%s+(%d+) bytes") do
        listed[#listed + 1] = { port = port, bytes = tonumber(b) }
      end
      assert.are.equal(5, #listed, "default: the 5 busiest ports\n" .. r.out)
      for i, l in ipairs(listed) do
        assert.are.equal(by_port[l.port], l.bytes, "bytes to " .. l.port)
        assert.are.equal(values[i], l.bytes, "rank " .. i)
      end

      -- the optional count
      r = summary(run.q(SAMPLE) .. " 2")
      assert(r.code == 0, run.describe(r))
      local n = 0
      for _ in r.out:gmatch("\n  %a+/%d+%s+%d+ bytes") do n = n + 1 end
      assert.are.equal(2, n, r.out)
    end)

    it("runs from another directory", function()
      local dir = run.tmpdir()
      local r = run.sh("luajit " .. run.q(EX .. "capture_summary.lua") .. " " .. run.q(SAMPLE), dir)
      assert(r.code == 0, run.describe(r))
      assert(r.out:find("1600 packets", 1, true), run.describe(r))
    end)

    it("usage and input errors give a clear message and a non-zero exit", function()
      local r = summary("")
      assert.are.equal(2, r.code, run.describe(r))
      assert(has(r.err, "usage"), run.describe(r))
      clean_failure(summary("/nonexistent/missing.pcap"), "/nonexistent/missing.pcap")
    end)

    it("a bad top-ports value gives a clear error and a non-zero exit", function()
      clean_failure(summary(run.q(SAMPLE) .. " many"), "many")
      clean_failure(summary(run.q(SAMPLE) .. " -3"), "-3")
    end)
  end)
end)
