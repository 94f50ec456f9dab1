-- The policy contract, end to end through the CLI: options checked before
-- data, init failure, stop vs abort, --on-error=skip, snapshots that
-- survive kill -9, several policies at once, on_packet.
local ffi = require "ffi"
local run = require "support.run"
local sluice = require "sluice"
local state = require "sluice.state"

local SAMPLE = run.root .. "/examples/sample.pcap"
local SLUICE = run.SLUICE

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

local function policy_file(dir, name, text)
  return run.spit(dir .. "/" .. name .. ".lua", text)
end

-- Runs sluice with a JSON output in dir; returns the result and records.
local function sluice_run(args, dir)
  return run.sluice_json(args .. " -r " .. run.q(SAMPLE), dir)
end

describe("policy contract", function()
  teardown(run.cleanup)

  describe("options", function()
    local P = [[
      local P = { info = { name = "opts", options = {
        limit = { type = "integer", required = true, description = "how many" },
        every = { type = "duration", default = "5m" },
        label = { type = "string", default = "x" },
      } } }
      local emit
      function P.init(o, ctx) emit = ctx.emit emit { type = "init" } end
      function P.on_flow_end(f) emit(f) end
      return P
    ]]

    it("are checked before any data: unknown, wrong type, missing required", function()
      local dir = run.tmpdir()
      local path = policy_file(dir, "opts", P)
      local cases = {
        { "-o limit=3 -o colour=red", { "option 'colour'", "known: every, label, limit" } },
        { "-o limit=3.5", { "option 'limit' expects an integer", "3.5" } },
        { "-o limit=3 -o every=soon", { "option 'every' expects a duration" } },
        { "", { "missing required option 'limit'" } },
      }
      for _, c in ipairs(cases) do
        local r, recs = sluice_run(run.q(path) .. " " .. c[1], dir)
        assert(r.code ~= 0, run.describe(r))
        for _, needle in ipairs(c[2]) do
          assert(has(r.err, needle), "stderr should say " .. needle .. "\n" .. run.describe(r))
        end
        assert.equal(0, #recs, "no data (not even init) before options are valid")
      end
      local r, recs = sluice_run(run.q(path) .. " -o limit=3", dir)
      assert(r.code == 0, run.describe(r))
      assert.equal(162, #recs)
    end)

    it("are printed by sluice info", function()
      local dir = run.tmpdir()
      local path = policy_file(dir, "opts", P)
      local r = run.sh(SLUICE .. " info " .. run.q(path))
      assert(r.code == 0, run.describe(r))
      assert.matches("policy opts", r.out)
      assert.matches("handlers: on_flow_end", r.out, 1, true)
      assert.matches("limit%s+integer%s+required%s+how many", r.out)
      assert.matches("every%s+duration%s+default 5m", r.out)
      assert.matches("label%s+string%s+default x", r.out)
      local dns = run.sh(SLUICE .. " info " .. run.q(run.root .. "/examples/top_talkers.lua"))
      assert.matches("top%s+integer%s+default 10", dns.out)
      local bad = run.sh(SLUICE .. " info " .. run.q(dir .. "/missing.lua"))
      assert(bad.code ~= 0 and has(bad.err, "missing.lua"), run.describe(bad))
    end)
  end)

  it("stops with 'failed to initialize POLICY: <error>' when init fails", function()
    local dir = run.tmpdir()
    local path = policy_file(dir, "brittle", [[
      local P = {}
      function P.init() error("no database at /nowhere") end
      function P.on_flow_end() error("must not run") end
      return P
    ]])
    local r, recs = sluice_run(run.q(path), dir)
    assert.equal(1, r.code, run.describe(r))
    assert(has(r.err, "failed to initialize brittle: "), run.describe(r))
    assert(has(r.err, "brittle.lua:2: no database at /nowhere"), run.describe(r))
    assert.equal(0, #recs)
  end)

  -- init's nil, err was ignored: the run went on without what init set up
  it("stops the same when init returns nil and an error, the Lua way", function()
    local dir = run.tmpdir()
    local path = policy_file(dir, "quiet", [[
      local P = {}
      function P.init() return nil, "cannot open my database" end
      function P.on_flow_end() error("must not run") end
      return P
    ]])
    local r, recs = sluice_run(run.q(path), dir)
    assert.equal(1, r.code, run.describe(r))
    assert(has(r.err, "failed to initialize quiet: returned nil, cannot open my database"), run.describe(r))
    assert.equal(0, #recs)
  end)

  describe("a handler error", function()
    local FAILING = [[
      local P = { info = { name = "fragile" } }
      local emit, n = nil, 0
      function P.init(_, ctx) emit = ctx.emit end
      function P.on_flow_end(f)
        n = n + 1
        emit { type = "seen", n = n }
        if n == 5 then
          emit { type = "half-done", n = n }
          local t = nil
          return t.field
        end
      end
      function P.stop() emit { type = "stopped" } end
      return P
    ]]

    it("aborts: names policy, handler, file and line; drops the failed call's output; flushes the rest; no stop()", function()
      local dir = run.tmpdir()
      local path = policy_file(dir, "fragile", FAILING)
      local r, recs = sluice_run(run.q(path), dir)
      assert.equal(1, r.code, run.describe(r))
      assert(has(r.err, "policy fragile: on_flow_end failed: " .. path .. ":10: attempt to index"),
        run.describe(r))
      assert.equal(4, #recs, "the four records accepted before the error are flushed")
      for i, rec in ipairs(recs) do assert.same({ type = "seen", n = i }, rec) end
    end)

    it("gets a position even when raised without one", function()
      local dir = run.tmpdir()
      local path = policy_file(dir, "nopos", [[
        local P = {}
        function P.on_flow_start(f)
          error({ code = 42 })
        end
        return P
      ]])
      local r = sluice_run(run.q(path), dir)
      assert.equal(1, r.code)
      assert(r.err:find("policy nopos: on_flow_start failed: .*nopos%.lua:3: table"), run.describe(r))
    end)

    it("is counted and skipped with --on-error=skip", function()
      local dir = run.tmpdir()
      local path = policy_file(dir, "fragile", FAILING)
      local r, recs = sluice_run(run.q(path) .. " --on-error=skip", dir)
      -- the dropped records are a loss: exit 3, completed with losses
      assert.equal(3, r.code, run.describe(r))
      assert(has(r.err, "1 error(s) in policy fragile, on_flow_end"), run.describe(r))
      -- the fifth call emitted two records before it failed
      assert(has(r.err, "2 record(s) emitted by failed handlers dropped"), run.describe(r))
      local seen = run.of_type(recs, "seen")
      assert.equal(160, #seen)
      assert.equal(0, #run.of_type(recs, "half-done"))
      assert.equal(1, #run.of_type(recs, "stopped"))
    end)

    it("in stop() is reported as a stop failure", function()
      local eng = assert(sluice.open { read = SAMPLE })
      local ok, err = eng:run { stop = function() error("cannot drain") end }
      assert.is_nil(ok)
      assert.matches("policy policy: stop failed: .*cannot drain", err)
    end)
  end)

  describe("snapshots", function()
    local COUNTER = [[
      local P = { info = { name = "counter" } }
      local emit, flows = nil, 0
      function P.init(_, ctx) emit = ctx.emit end
      function P.on_flow_end() flows = flows + 1 end
      function P.snapshot() return "flows=" .. flows end
      function P.restore(s)
        flows = assert(tonumber(s:match("^flows=(%d+)$")), "bad snapshot: " .. s)
      end
      function P.stop() emit { type = "total", flows = flows } end
      return P
    ]]

    it("restore continues the counts of the previous run", function()
      local dir = run.tmpdir()
      local path = policy_file(dir, "counter", COUNTER)
      local st = dir .. "/state"
      for round = 1, 3 do
        local r, recs = sluice_run(run.q(path) .. " --state " .. run.q(st), dir)
        assert(r.code == 0, run.describe(r))
        assert.equal(161 * round, run.of_type(recs, "total")[1].flows)
        assert.same({ counter = "flows=" .. 161 * round }, state.load(st))
      end
    end)

    it("a failing restore stops the run with 'error restoring snapshot'", function()
      local dir = run.tmpdir()
      local path = policy_file(dir, "counter", COUNTER)
      local st = run.spit(dir .. "/state", state.encode { { name = "counter", data = "garbage" } })
      local r, recs = sluice_run(run.q(path) .. " --state " .. run.q(st), dir)
      assert.equal(1, r.code)
      assert(has(r.err, "error restoring snapshot: policy counter: "), run.describe(r))
      assert(has(r.err, "bad snapshot: garbage"), run.describe(r))
      assert.equal(0, #recs)
      -- a damaged file is refused too, and left as it was
      run.spit(st, "sluice-state 1\ncounter 99\nshort")
      r = sluice_run(run.q(path) .. " --state " .. run.q(st), dir)
      assert.equal(1, r.code)
      assert(has(r.err, "error restoring snapshot: ") and has(r.err, "damaged"), run.describe(r))
      assert.equal("sluice-state 1\ncounter 99\nshort", run.slurp(st))
    end)

    it("are saved every --state-interval during the run, not only at the end", function()
      local dir = run.tmpdir()
      local eng = assert(sluice.open { read = SAMPLE })
      local P = {}
      local n = 0
      function P.on_flow_end()
        n = n + 1
        local t = os.clock() + 0.002
        while os.clock() < t do end -- a slow policy: the run lasts ~0.3 s
      end
      function P.snapshot() return tostring(n) end
      local ok, report = eng:run(P, nil, { state = dir .. "/s", state_interval = 0.02 })
      assert(ok, report)
      assert(report.snapshots >= 4, "snapshots: " .. report.snapshots)
      assert.same({ policy = "161" }, state.load(dir .. "/s"))
    end)

    it("are never torn by kill -9 mid-write", function()
      local dir = run.tmpdir()
      -- big snapshots (4 MB) written back to back: kills land mid-write
      local path = policy_file(dir, "big", [[
        local P = { info = { name = "big" } }
        local n = 0
        function P.on_flow_end()
          n = n + 1
          local t = os.clock() + 0.02
          while os.clock() < t do end
        end
        function P.snapshot()
          return string.format("%08d", n) .. string.rep(string.char(65 + n % 26), 4 * 1024 * 1024)
        end
        return P
      ]])
      local st = dir .. "/state"
      local checked = 0
      for i = 1, 8 do
        local cmd = string.format("%s run %s -r %s -q --out json:/dev/null --state %s --state-interval 0.001 & " ..
          "pid=$!; sleep %.2f; kill -9 $pid; wait $pid 2>/dev/null; true", SLUICE, run.q(path),
          run.q(SAMPLE), run.q(st), 0.3 + 0.13 * i)
        run.sh(cmd)
        if run.exists(st) then
          local t, err = state.load(st)
          assert(t, "torn state file after kill -9: " .. tostring(err))
          local data = t.big
          local n = tonumber(data:sub(1, 8))
          assert.equal(8 + 4 * 1024 * 1024, #data)
          assert.equal(string.rep(string.char(65 + n % 26), 4 * 1024 * 1024), data:sub(9))
          checked = checked + 1
        end
      end
      assert(checked >= 4, "only " .. checked .. " kills found a state file")
    end)
  end)

  describe("several policies", function()
    local A = [[
      local ffi = require "ffi"
      local P = { info = { name = "a" } }
      local emit
      function P.init(_, ctx) emit = ctx.emit end
      function P.on_flow_start(f)
        f:tag("seen_by_a", 1)
        emit { type = "a_start", id = f.id, addr = tostring(ffi.cast("void *", f)) }
        if f.proto == "udp" then return false end -- a is not interested
      end
      function P.on_flow_end(f) emit { type = "a_end", id = f.id, proto = f.proto } end
      function P.on_slice(b)
        for rec in b:records() do emit { type = "a_slice", proto = rec.proto } end
      end
      return P
    ]]
    local B = [[
      local ffi = require "ffi"
      local P = { info = { name = "b" } }
      local emit
      function P.init(_, ctx) emit = ctx.emit end
      function P.on_flow_start(f)
        emit { type = "b_start", id = f.id, addr = tostring(ffi.cast("void *", f)),
          tag = f:tag("seen_by_a") }
      end
      function P.on_flow_end(f) emit { type = "b_end", id = f.id, proto = f.proto } end
      return P
    ]]

    it("each see every event, the same record, in load order; a tag set by one is visible to the next", function()
      local dir = run.tmpdir()
      local a, b = policy_file(dir, "a", A), policy_file(dir, "b", B)
      local r, recs = sluice_run(run.q(a) .. " " .. run.q(b) .. " --slice 5", dir)
      assert(r.code == 0, run.describe(r))
      local last_a, b_starts = {}, 0
      for i, rec in ipairs(recs) do
        if rec.type == "a_start" then last_a[rec.id] = { i = i, addr = rec.addr } end
        if rec.type == "b_start" then
          b_starts = b_starts + 1
          local prev = last_a[rec.id]
          assert(prev and prev.i < i, "a sees the start before b")
          assert.equal(prev.addr, rec.addr, "the same record, not a copy")
          assert.equal(1, rec.tag)
        end
      end
      assert.equal(161, b_starts)
      -- a turned the UDP flows down: b still gets all of them, a none
      local a_ends, b_ends, a_udp_slices = run.of_type(recs, "a_end"), run.of_type(recs, "b_end"), 0
      assert.equal(161, #b_ends)
      local udp = 0
      for _, e in ipairs(b_ends) do if e.proto == "udp" then udp = udp + 1 end end
      assert(udp > 0)
      assert.equal(161 - udp, #a_ends)
      for _, e in ipairs(a_ends) do assert.are_not.equal("udp", e.proto) end
      for _, s in ipairs(run.of_type(recs, "a_slice")) do
        if s.proto == "udp" then a_udp_slices = a_udp_slices + 1 end
      end
      assert.equal(0, a_udp_slices)
      assert(#run.of_type(recs, "a_slice") > 0)
    end)

    it("each load in their own environment", function()
      local dir = run.tmpdir()
      local a = policy_file(dir, "g1", [[
        counter = "mine"
        local P = {}
        local emit
        function P.init(_, ctx) emit = ctx.emit end
        function P.stop() emit { type = "g1", counter = counter } end
        return P
      ]])
      local b = policy_file(dir, "g2", [[
        local P = {}
        local emit
        function P.init(_, ctx) emit = ctx.emit end
        function P.stop() emit { type = "g2", counter = counter or "unset" } end
        return P
      ]])
      local r, recs = sluice_run(run.q(a) .. " " .. run.q(b), dir)
      assert(r.code == 0, run.describe(r))
      assert.equal("mine", run.of_type(recs, "g1")[1].counter)
      assert.equal("unset", run.of_type(recs, "g2")[1].counter)
    end)
  end)

  describe("on_packet", function()
    it("gets only the packets matching info.packets, after the flow's start, with bounds-checked reads", function()
      local eng = assert(sluice.open { read = SAMPLE })
      local started, n, checked, order_ok = {}, 0, 0, true
      local P = { info = { packets = "tcp port 80" } }
      function P.on_flow_start(f) started[f.id] = true end
      function P.on_packet(pkt, f)
        n = n + 1
        if not started[f.id] then order_ok = false end
        assert(pkt.kind == "packet")
        assert(pkt.sport == 80 or pkt.dport == 80)
        assert.equal(pkt.from_initiator, pkt.src == f.src)
        local len = pkt.payload_len
        assert.is_nil(pkt:u8(len))
        assert.is_nil(pkt:u8(-1))
        assert.is_nil(pkt:u16(len - 1))
        assert.is_nil(pkt:u32(len - 3))
        assert.is_nil(pkt:bytes(0, len + 1))
        assert.equal(len, #pkt:bytes())
        -- NaN passed every bounds test and read wild memory (SIGSEGV);
        -- a fraction read the byte below it
        for _, bad in ipairs { 0 / 0, 0.5 } do
          for _, read in ipairs { "u8", "u16", "u32", "bytes", "frame" } do
            local ok, err = pcall(pkt[read], pkt, bad)
            assert(not ok and tostring(err):find("whole number", 1, true), read .. "(" .. bad .. "): " ..
              tostring(err))
          end
          assert.is_false(pcall(pkt.bytes, pkt, 0, bad))
        end
        if len >= 4 then
          local b = pkt:bytes(0, 4)
          assert.equal(b:byte(1) * 256 + b:byte(2), pkt:u16(0))
          assert.equal(b:byte(1) * 2^24 + b:byte(2) * 2^16 + b:byte(3) * 256 + b:byte(4), pkt:u32(0))
          checked = checked + 1
        end
        assert(#pkt:frame() == pkt.caplen)
      end
      assert(eng:run(P))
      assert.is_true(order_ok)
      assert(checked > 0)
      if run.have("tshark") then
        local r = run.sh(run.PLAIN .. "tshark -r " .. run.q(SAMPLE) ..
          " -Y 'tcp.port == 80 && !vlan' 2>/dev/null | wc -l")
        assert.equal(tonumber(r.out:match("%d+")), n)
      else
        assert(n > 0)
      end
    end)

    it("needs a packet filter, and a bad one is an error naming the policy", function()
      local eng = assert(sluice.open { read = SAMPLE })
      local ok, err = eng:run { on_packet = function() end }
      assert.is_nil(ok)
      assert.matches("on_packet needs info.packets", err)
      eng = assert(sluice.open { read = SAMPLE })
      ok, err = eng:run { info = { name = "bad", packets = "tcp prot 80" }, on_packet = function() end }
      assert.is_nil(ok)
      assert.matches("policy bad: info.packets: bad filter 'tcp prot 80'", err, 1, true)
    end)

    it("is not called for a flow the policy turned down", function()
      local eng = assert(sluice.open { read = SAMPLE })
      local calls = 0
      assert(eng:run { info = { packets = "ip or ip6" },
        on_flow_start = function() return false end,
        on_packet = function() calls = calls + 1 end })
      assert.equal(0, calls)
    end)
  end)
end)
