-- Sinks and routes: transient and permanent failures, bounded queues that
-- lag instead of stalling, JSON rotation, pcap output read by tshark, user
-- sinks, and a destination that blocks (a unix socket nobody reads).
local ffi = require "ffi"
local run = require "support.run"
local sluice = require "sluice"
local sink_mod = require "sluice.sink"
local core = require "sluice.core"

local SAMPLE = run.root .. "/examples/sample.pcap"

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

-- A sink whose answers are scripted: results[i] is the answer to the i-th
-- write ("ok", "transient", "permanent"), the last one repeats.
local function scripted(results)
  local s = { got = {}, calls = 0, lagged_calls = {}, flushed = 0 }
  function s:write(rec)
    self.calls = self.calls + 1
    local r = results[math.min(self.calls, #results)]
    if r == "ok" then
      self.got[#self.got + 1] = rec
      return true
    end
    if r == "transient" then return nil, "busy", sluice.sink.TRANSIENT end
    return nil, "refused"
  end
  function s:lagged(n) self.lagged_calls[#self.lagged_calls + 1] = n end
  function s:flush() self.flushed = self.flushed + 1 end
  return s
end

local function lines_of(path)
  local n, bad = 0, 0
  for line in (run.slurp(path) or ""):gmatch("[^\n]*\n") do
    n = n + 1
    if not pcall(run.decode, line) then bad = bad + 1 end
  end
  return n, bad
end

describe("routes", function()
  it("count a permanent failure as failed and go on", function()
    local s = scripted { "permanent", "ok" }
    local r = sink_mod.new(s)
    r:write "a"
    r:write "b"
    assert.equal(1, r.stats.dropped_failed)
    assert.equal(1, r.stats.written)
    assert.same({ "b" }, s.got)
  end)

  it("queue a transient failure, and what follows it, and keep the order", function()
    local s = scripted { "transient", "ok" }
    local r = sink_mod.new(s)
    r:write "a"
    r:write "b"
    r:write "c"
    assert.equal(3, r:queued())
    assert.same({}, s.got)
    -- before the backoff has passed nothing is retried
    assert.is_true(r:pump(core.monotonic() - 1))
    assert.equal(3, r:queued())
    assert.is_false(r:pump(core.monotonic() + 10))
    assert.same({ "a", "b", "c" }, s.got)
    assert.equal(0, r:dropped())
    assert.equal(1, r.stats.retries)
  end)

  it("lag when the queue is full: drop and count, tell the sink once", function()
    local s = scripted { "transient" }
    local r = sink_mod.new(s, { queue = 2 })
    for i = 1, 10 do r:write(tostring(i)) end
    assert.equal(2, r:queued())
    assert.equal(8, r.stats.dropped_lag)
    assert.same({}, s.lagged_calls) -- the episode is not over yet
    r:flush(true)
    assert.equal(2, r.stats.dropped_at_close)
    assert.same({ 10 }, s.lagged_calls)
    assert.equal(10, r:dropped())
    assert.equal(1, r.stats.lag_episodes)
  end)

  it("end a lag episode when the destination recovers, telling lagged(n) then", function()
    local results = { "transient" }
    local s = scripted(results)
    local r = sink_mod.new(s, { queue = 1 })
    r:write "a" -- queued
    r:write "b" -- dropped
    r:write "c" -- dropped
    results[1] = "ok"
    s.calls = 0
    assert.is_false(r:pump(core.monotonic() + 10))
    assert.same({ 2 }, s.lagged_calls)
    assert.same({ "a" }, s.got)
    r:write "d"
    assert.same({ "a", "d" }, s.got)
  end)

  it("retry a transient record a bounded number of times, then count it failed", function()
    local s = scripted { "transient" }
    local r = sink_mod.new(s)
    r:write "a"
    local t = core.monotonic()
    for _ = 1, 20 do
      t = t + 5
      if not r:pump(t) then break end
    end
    assert.equal(0, r:queued())
    assert.equal(1, r.stats.dropped_failed)
    assert.is_true(s.calls >= 3 and s.calls <= 12, "attempts: " .. s.calls)
  end)

  -- a slow input (stdin, a FIFO) never filled the queue to make the run
  -- wait: a record refused 8 times (2.3 s of backoff) was dropped while
  -- the destination (a ClickHouse restart) was down for 8 s
  it("waiting, retry a transient record until the destination took nothing for give_up seconds", function()
    local results = { "transient" }
    local s = scripted(results)
    local r = sink_mod.new(s, { wait = true, give_up = 30 })
    r:write "a"
    local t = core.monotonic()
    for _ = 1, 20 do
      t = t + 1
      assert.is_true(r:pump(t), "still queued")
    end
    assert.equal(0, r:dropped())
    assert.is_true(s.calls > 8, "attempts: " .. s.calls)
    results[1] = "ok"
    s.calls = 0
    assert.is_false(r:pump(t + 1))
    assert.same({ "a" }, s.got)
    assert.equal(0, r:dropped())
    -- and past give_up without any taken, it is failed (and the route lags)
    results[1] = "transient"
    r:write "b"
    local t2 = t + 2
    for _ = 1, 40 do
      t2 = t2 + 1
      if not r:pump(t2) then break end
    end
    assert.equal(0, r:queued())
    assert.equal(1, r.stats.dropped_failed)
  end)

  it("follow a buffering sink's settle(): records lost after write() took them are failed, not written", function()
    local s = { taken = 0, lost = 0 }
    function s:write() self.taken = self.taken + 1 return true end
    function s:settle() return self.taken - self.lost, self.lost, self.lost > 0 and "disk full" or nil end
    local told = {}
    local r = sink_mod.new(s, { name = "buffered", on_error = function(name, err) told[#told + 1] = name .. ": " .. err end })
    for i = 1, 10 do r:write(i) end
    s.lost = 4 -- the buffer's write failed later
    r:flush()
    assert.equal(6, r.stats.written)
    assert.equal(4, r.stats.dropped_failed)
    assert.equal(4, r:dropped())
    assert.equal("disk full", r.stats.last_error)
    s.lost = 7
    r:settle()
    assert.equal(3, r.stats.written)
    assert.equal(7, r.stats.dropped_failed)
    assert.same({ "buffered: disk full" }, told, "the error is told once")
  end)

  -- the run waits on a busy destination (files, stdin): each transient
  -- refusal of the queue's head is a retry, as when the route backs off
  it("count as retries the refusals met while the run waits for the sink", function()
    local s = scripted { "ok" }
    local r = sink_mod.new(s, { queue = 1, wait = true })
    function s:write(rec)
      self.calls = self.calls + 1
      if self.calls % 3 == 0 then return nil, "busy", sluice.sink.TRANSIENT end
      self.got[#self.got + 1] = rec
      return true
    end
    for i = 1, 30 do r:write(i) end
    r:flush(true)
    assert.equal(30, #s.got)
    assert.equal(0, r:dropped())
    local refused = s.calls - 30
    assert.is_true(refused >= 10, "refusals: " .. refused)
    assert.equal(refused, r.stats.retries)
  end)

  -- a sink's own code can fail at its end as in any call: the route
  -- counts it as the sink's error, and the run goes on to its report
  for _, method in ipairs { "flush", "close", "tick" } do
    it("take a sink's " .. method .. "() that raises as an error of that sink", function()
      local s = scripted { "ok" }
      s[method] = function() error(method .. " boom") end
      local told = {}
      local r = sink_mod.new(s, { name = "raising", on_error = function(name, err) told[#told + 1] = name .. ": " .. err end })
      r:write "a"
      local ok, err = pcall(function()
        if method == "flush" then r:flush(true) elseif method == "close" then r:close() else r:tick(core.monotonic()) end
      end)
      assert(ok, "raised out of the route: " .. tostring(err))
      assert.equal(1, #told)
      assert.truthy(has(told[1], "raising: " .. method .. "() failed: ") and has(told[1], method .. " boom"), told[1])
      assert.equal(1, r.stats.written)
    end)
  end

  it("do not count twice a failure the sink counted itself (\"counted\")", function()
    local s = { lost = 0 }
    function s:write()
      self.lost = self.lost + 1
      return nil, "no room", sink_mod.COUNTED
    end
    function s:settle() return 0, self.lost, "no room" end
    local told = 0
    local r = sink_mod.new(s, { on_error = function() told = told + 1 end })
    for i = 1, 3 do r:write(i) end
    r:flush()
    assert.equal(3, r.stats.dropped_failed)
    assert.equal(0, r.stats.written)
    assert.equal(1, told)
  end)

  it("tell a sink's first failure once, with its message", function()
    local told = {}
    local r = sink_mod.new(scripted { "permanent" }, { name = "x", on_error = function(name, err)
      told[#told + 1] = name .. ": " .. err
    end })
    for i = 1, 5 do r:write(i) end
    assert.equal(5, r.stats.dropped_failed)
    assert.same({ "x: refused" }, told)
  end)

  it("refuse a sink without write, and a bad queue size", function()
    assert.has_error(function() sink_mod.new({}) end)
    assert.has_error(function() sink_mod.new(scripted { "ok" }, { queue = -1 }) end)
  end)
end)

describe("JSON sink", function()
  teardown(run.cleanup)

  it("rotates by size without splitting or losing a line", function()
    local dir = run.tmpdir()
    local path = dir .. "/out.json"
    local r = run.sh(run.SLUICE .. " run -r " .. run.q(SAMPLE) .. " -q --rotate 8K --out json:" .. run.q(path))
    assert(r.code == 0, run.describe(r))
    local total, files = 0, 0
    for i = 0, 1000 do
      local p = i == 0 and path or (path .. "." .. i)
      if not run.exists(p) then break end
      files = files + 1
      local n, bad = lines_of(p)
      assert.equal(0, bad, p .. " has a broken line")
      local size = #run.slurp(p)
      assert(size <= 8192, p .. " is " .. size .. " bytes")
      assert.equal("\n", run.slurp(p):sub(-1))
      total = total + n
    end
    assert(files > 3, "expected several files, got " .. files)
    assert.equal(161, total)
  end)

  -- a restart emptied PATH, the newest file of the run before: its lines
  -- were lost without a word, exit 0
  it("a restart keeps what the last run left in PATH: moved to the next PATH.N", function()
    local dir = run.tmpdir()
    local path = dir .. "/out.json"
    for _ = 1, 2 do
      local r = run.sh(run.SLUICE .. " run -r " .. run.q(SAMPLE) .. " -q --rotate 8K --out json:" ..
        run.q(path))
      assert(r.code == 0, run.describe(r))
    end
    local total, ids = 0, {}
    for name in io.popen("ls " .. run.q(dir)):lines() do
      local n, bad = lines_of(dir .. "/" .. name)
      assert.equal(0, bad, name .. " has a broken line")
      total = total + n
      for _, rec in ipairs(run.json_lines(dir .. "/" .. name)) do ids[rec.id] = (ids[rec.id] or 0) + 1 end
    end
    assert.equal(2 * 161, total)
    for id = 1, 161 do assert.equal(2, ids[id], "flow " .. id .. " in both runs' files") end
    -- the file of a run that wrote nothing is not kept
    local s = assert(sluice.sink.json { path = dir .. "/empty.json", rotate = "8K" })
    s:close()
    s = assert(sluice.sink.json { path = dir .. "/empty.json", rotate = "8K" })
    s:close()
    assert.is_false(run.exists(dir .. "/empty.json.1"))
  end)

  it("rotates by time", function()
    local dir = run.tmpdir()
    local s = assert(sluice.sink.json { path = dir .. "/t.json", rotate = "0.2s" })
    assert(s:write { n = 1 })
    os.execute("sleep 0.3")
    assert(s:write { n = 2 })
    s:close()
    assert.same({ { n = 1 } }, run.json_lines(dir .. "/t.json.1"))
    assert.same({ { n = 2 } }, run.json_lines(dir .. "/t.json"))
  end)

  it("rejects bad rotate specs", function()
    local dir = run.tmpdir()
    for _, bad in ipairs { "10Q", { size = "x" }, {}, 5 } do
      assert.has_error(function() sluice.sink.json { path = dir .. "/x.json", rotate = bad } end)
    end
    assert.has_error(function() sluice.sink.json { path = "-", rotate = "1M" } end)
    local r = run.sh(run.SLUICE .. " run -r " .. run.q(SAMPLE) .. " --rotate 10Q --out json:" ..
      run.q(dir .. "/y.json"))
    assert(r.code ~= 0 and has(r.err, "rotate"), run.describe(r))
  end)

  it("a policy's sink without a name is reported under the policy's name", function()
    local dir = run.tmpdir()
    local policy = dir .. "/namer.lua"
    run.spit(policy, [[
local P, ctx = { info = { name = "namer" } }, nil
local sink = { write = function() return nil end }
function P.init(_, c) ctx = c end
function P.on_flow_end(f) ctx.emit(sink, f) end
return P
]])
    local r = run.sh(run.SLUICE .. " run " .. run.q(policy) .. " -r " .. run.q(SAMPLE))
    assert.equal(3, r.code, run.describe(r))
    -- was "sink table: 0x...: failed"
    assert(has(r.err, "sluice: sink of policy namer (no name): write() returned nil without an error " ..
      "message\n"), run.describe(r))
    assert(has(r.err, "sink of policy namer (no name): written 0 dropped 161"), run.describe(r))
  end)

  it("takes a string record only as one JSON object on one line", function()
    local dir = run.tmpdir()
    local s = assert(sluice.sink.json { path = dir .. "/s.json" })
    assert(s:write('{"n":1}'))
    assert(s:write('  {"n":2}  '))
    for _, bad in ipairs { "not a table", '{"n":3}\n{"n":4}', "[1,2]", "" } do
      local ok, err = pcall(s.write, s, bad)
      assert(not ok and has(tostring(err), "a string record must be one encoded JSON object on one line"),
        tostring(err))
    end
    s:close()
    assert.same({ { n = 1 }, { n = 2 } }, run.json_lines(dir .. "/s.json"))
    -- from a policy: the handler fails, the file stays JSON lines
    local policy = dir .. "/p.lua"
    run.spit(policy, [[
local P, ctx = {}, nil
function P.init(_, c) ctx = c end
function P.on_flow_end() ctx.emit("oops") end
return P
]])
    local r = run.sh(run.SLUICE .. " run " .. run.q(policy) .. " -r " .. run.q(SAMPLE) ..
      " --out json:" .. run.q(dir .. "/p.json"))
    assert.equal(1, r.code, run.describe(r))
    assert(has(r.err, 'ctx.emit: a string record must be one encoded JSON object on one line, got "oops"'),
      run.describe(r))
    assert.equal("", run.slurp(dir .. "/p.json"))
    -- a number or a boolean was written as a bare JSON line
    for _, v in ipairs { "5", "true" } do
      run.spit(policy, "local P, ctx = {}, nil\nfunction P.init(_, c) ctx = c end\n" ..
        "function P.on_flow_end() ctx.emit(" .. v .. ") end\nreturn P\n")
      r = run.sh(run.SLUICE .. " run " .. run.q(policy) .. " -r " .. run.q(SAMPLE) ..
        " --out json:" .. run.q(dir .. "/p.json"))
      assert.equal(1, r.code, run.describe(r))
      assert(has(r.err, "p.lua:3: ctx.emit: a record is a flow, slice or packet"), run.describe(r))
      assert.equal("", run.slurp(dir .. "/p.json"))
    end
  end)
end)

-- a probe's ended flows sat in the 1 MiB buffers for as long as the run
-- went on: nothing in the files, all of it counted written, all of it
-- lost to a kill -9
describe("file sinks of a run that goes on", function()
  teardown(run.cleanup)

  it("flush within about a second: JSON lines and pcap packets are in the files while it runs", function()
    local dir = run.tmpdir()
    local policy = run.spit(dir .. "/slow.lua", [[
local P, emit = { info = { name = "slow" } }, nil
function P.init(_, ctx) emit = ctx.emit end
function P.on_flow_start(f) assert(f:capture()) end
function P.on_flow_end(f)
  emit(f)
  local t = os.clock() + 0.05 while os.clock() < t do end
end
return P
]])
    local json, pcap = dir .. "/out.json", dir .. "/out.pcap"
    local r = run.sh(string.format("%s run %s -r %s -q --out json:%s --out pcap:%s & p=$!; sleep 3; " ..
      "wc -l < %s; stat -c %%s %s; kill -0 $p && echo running; wait $p",
      run.SLUICE, run.q(policy), run.q(SAMPLE), run.q(json), run.q(pcap), run.q(json), run.q(pcap)))
    assert(r.code == 0, run.describe(r))
    local lines, bytes, running = r.out:match("^(%d+)\n(%d+)\n(%a*)")
    assert.equal("running", running, "the run was still going after 3 s:\n" .. r.out)
    assert(tonumber(lines) >= 10, "JSON lines in the file while running: " .. tostring(lines))
    assert(tonumber(bytes) > 24, "pcap packets in the file while running: " .. tostring(bytes))
  end)
end)

describe("pcap sink", function()
  teardown(run.cleanup)

  local function tshark_count(path, filter)
    local r = run.sh(run.PLAIN .. "tshark -r " .. run.q(path) ..
      (filter and (" -Y " .. run.q(filter)) or "") .. " 2>/dev/null | wc -l")
    return tonumber(r.out:match("%d+"))
  end

  local function skip_without_tshark()
    if run.have("tshark") then return false end
    pending("tshark is not installed (CI installs it): pcap output not cross-checked")
    return true
  end

  it("the default job with --out pcap: rewrites every packet, readable by tshark", function()
    if skip_without_tshark() then return end
    local dir = run.tmpdir()
    local r = run.sh(run.SLUICE .. " run -r " .. run.q(SAMPLE) .. " -q --out pcap:" .. run.q(dir .. "/all.pcap"))
    assert(r.code == 0, run.describe(r))
    assert.equal(tshark_count(SAMPLE), tshark_count(dir .. "/all.pcap"))
  end)

  it("writes the packets a policy emits from on_packet, and the flows it captures", function()
    if skip_without_tshark() then return end
    local dir = run.tmpdir()
    local policy = run.spit(dir .. "/p.lua", [[
      local sluice = require "sluice"
      local P = { info = { name = "p", packets = "tcp port 80" } }
      local emit, pk, fl, n
      function P.init(_, ctx)
        emit, n = ctx.emit, 0
        pk = assert(sluice.sink.pcap { path = "]] .. dir .. [[/http.pcap" })
        fl = assert(sluice.sink.pcap { path = "]] .. dir .. [[/udp.pcap" })
      end
      function P.on_packet(pkt) n = n + 1 emit(pk, pkt) end
      function P.on_flow_start(f)
        if f.proto == "udp" then assert(f:capture(fl)) end
      end
      function P.on_flow_end(f) emit(f) end
      function P.stop() emit { type = "count", n = n } end
      return P
    ]])
    local r, recs = run.sluice_json(run.q(policy) .. " -r " .. run.q(SAMPLE), dir)
    assert(r.code == 0, run.describe(r))
    local n = run.of_type(recs, "count")[1].n
    assert(n > 0)
    assert.equal(n, tshark_count(dir .. "/http.pcap"))
    -- BPF semantics: "tcp port 80" does not look inside VLAN tags
    assert.equal(tshark_count(SAMPLE, "tcp.port == 80 && !vlan"), n)
    local udp_pkts = 0
    for _, f in ipairs(run.of_type(recs, "flow")) do
      if f.proto == "udp" then udp_pkts = udp_pkts + f.pkts_fwd + f.pkts_rev end
    end
    assert(udp_pkts > 0)
    -- captured from the first packet on, though set in on_flow_start
    assert.equal(udp_pkts, tshark_count(dir .. "/udp.pcap"))
    assert.equal(udp_pkts, tshark_count(SAMPLE, "udp && !icmp"))
  end)

  it("refuses to capture into a sink that is not a pcap sink", function()
    local eng = assert(sluice.open { read = SAMPLE })
    local got
    assert(eng:run({ on_flow_start = function(f)
      if not got then got = { f:capture({ write = function() return true end }) } end
    end }))
    assert.is_nil(got[1])
    assert.matches("pcap sink", got[2])
  end)
end)

describe("user sinks", function()
  it("get the records routed to them, then flush and close", function()
    local s = { got = 0, flushed = 0, closed = 0 }
    function s:write(rec)
      assert(rec.kind == "flow")
      self.got = self.got + 1
      return true
    end
    function s:flush() self.flushed = self.flushed + 1 end
    function s:close() self.closed = self.closed + 1 end
    local eng = assert(sluice.open { read = SAMPLE })
    local P = {}
    local emit
    function P.init(_, ctx) emit = ctx.emit end
    function P.on_flow_end(f) emit(s, f) end
    local ok, report = eng:run(P)
    assert(ok, report)
    assert.equal(161, s.got)
    assert.equal(1, s.flushed)
    assert.equal(1, s.closed)
    -- a sink without a name: under its policy's (an unnamed table: "policy")
    assert.equal(161, report.sinks["of policy policy (no name)"].written)
  end)

  -- a Lua sink's flush or close that raises was a bare LuaJIT traceback
  -- with no report: now it is that sink's error, the run's report and
  -- exit status 3 follow, and every other sink is flushed
  for _, method in ipairs { "flush", "close" } do
    it("whose " .. method .. "() raises: the error names the sink, the report follows, exit 3", function()
      local dir = run.tmpdir()
      local policy, out = dir .. "/raising.lua", dir .. "/flows.json"
      run.spit(policy, ([[
local sink = { name = "bad" }
function sink:write(rec) return true end
function sink:%s() error("%s boom") end
local emit
return { info = { name = "raising" },
  init = function(_, ctx) emit = ctx.emit end,
  on_flow_end = function(flow) emit(sink, flow); emit(flow) end }
]]):format(method, method))
      local r = run.sh(run.SLUICE .. " run " .. run.q(policy) .. " -r " .. run.q(SAMPLE) ..
        " --out json:" .. run.q(out))
      assert.equal(3, r.code, run.describe(r))
      assert.is_nil(r.err:find("traceback", 1, true), run.describe(r))
      assert.truthy(has(r.err, "sluice: sink bad: " .. method .. "() failed: "), run.describe(r))
      assert.truthy(has(r.err, "sink bad: written 161 dropped 0"), run.describe(r))
      assert.truthy(has(r.err, "failed calls 1"), run.describe(r))
      assert.equal(161, select(1, lines_of(out)))
    end)
  end

  it("are refused by ctx.emit when they have no write method", function()
    local eng = assert(sluice.open { read = SAMPLE })
    local ok, err = eng:run { init = function(_, ctx) ctx.emit({}, { x = 1 }) end }
    assert.is_nil(ok)
    assert.matches("failed to initialize", err)
    assert.matches("write", err)
  end)
end)

-- A listening unix socket that never accepts or reads: connections queue in
-- the backlog and their buffers fill up.
ffi.cdef [[
int bind(int fd, const void *addr, unsigned len);
int listen(int fd, int backlog);
]]

describe("a destination that blocks", function()
  teardown(run.cleanup)

  it("makes its sink lag while the JSON file sink gets every record", function()
    local dir = run.tmpdir()
    local path = dir .. "/stuck.sock"
    local fd = ffi.C.socket(core.C.SL_AF_UNIX, core.C.SL_SOCK_STREAM, 0)
    assert(fd >= 0)
    local sa = ffi.new("struct sl_sockaddr_un")
    sa.family = 1
    ffi.copy(sa.path, path)
    assert.equal(0, ffi.C.bind(fd, sa, ffi.sizeof(sa)))
    assert.equal(0, ffi.C.listen(fd, 1))

    local stuck = assert(sluice.sink.json { socket = "unix:" .. path, queue = 16 })
    local told = {}
    -- a user sink around it, to see what it is told
    local watcher = { queue = 16, name = "watcher" }
    function watcher:write(rec) return stuck:write(rec) end
    function watcher:prepare(rec) return stuck:prepare(rec) end
    function watcher:lagged(n) told[#told + 1] = n end
    function watcher:close() return stuck:close() end
    local file = assert(sluice.sink.json { path = dir .. "/all.json" })
    local pad = string.rep("x", 8192)
    local P = {}
    local emit
    function P.init(_, ctx) emit = ctx.emit end
    function P.on_flow_end(f)
      local t = f:totable()
      t.pad = pad -- 161 records of 8 KiB: far more than the socket buffer
      emit(watcher, t)
      emit(file, t)
    end
    local eng = assert(sluice.open { read = SAMPLE })
    local t0 = core.monotonic()
    local ok, report = eng:run(P, nil, { on_lag = "drop" }) -- as a live capture would
    local took = core.monotonic() - t0
    ffi.C.close(fd)
    assert(ok, report)
    assert(took < 10, "the run took " .. took .. " s: the blocked sink stalled it")
    local n = lines_of(dir .. "/all.json")
    assert.equal(161, n)
    local ws = report.sinks.watcher
    assert(ws.dropped_lag > 0, "the stuck sink should lag")
    assert.equal(161, ws.written + ws.dropped_lag + ws.dropped_failed + ws.dropped_at_close)
    assert.equal(1, #told, "lagged(n) is told once")
    assert.equal(ws.dropped_lag + ws.dropped_at_close, told[1])
    assert.equal(0, report.sinks["json:" .. dir .. "/all.json"].dropped_lag)
  end)
end)
