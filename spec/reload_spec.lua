-- Hot reload (sluice.reload): SIGHUP and engine:reload() load every policy
-- file of a run again between two steps; the old instance's snapshot goes
-- to the new one's restore, the flow table and the outputs stay, and a new
-- version that fails (to load, in init, in restore) leaves the old one
-- running, with one line on stderr.
--
--   1. the core's signal flags: SIGHUP is a reload, not a stop, and the
--      disposition the process had is back after the run;
--   2. `sluice run POLICY -r -` fed from a FIFO the spec controls, paused
--      mid-trace: the policy file is rewritten, SIGHUP, the run reports the
--      reload while its input is idle, the rest is fed; the counts carried
--      across add up exactly to the generator's ground truth and the final
--      output comes from version 2;
--   3. a version with a syntax error, then one whose restore() throws: the
--      old version keeps running, its counts exact, stderr names each
--      failure; a stop while stdin is idle is at once too;
--   4. engine:reload() from a handler (library use), failures in init and
--      a renamed policy, policies given as tables left alone;
--   5. sluice collect: NetFlow v5 from the spec's own socket, a reload
--      between two batches;
--   6. live capture with --workers 2 (veth in a namespace, as live_spec):
--      the parent forwards SIGHUP, each worker reloads (needs root: without
--      it the test says why it is pending).
local ffi = require "ffi"
local bit = require "bit"
local run = require "support.run"
local proc = require "support.proc"
local netns = require "support.netns"
local core = require "sluice.core"
local sluice = require "sluice"
local policy = require "sluice.policy"
local signals = require "sluice.signals"
local sock = require "sluice.sock" -- the socket calls and struct sl_sockaddr_in

for _, decl in ipairs {
  "int kill(int pid, int sig);",
  "int getpid(void);",
  "void *signal(int sig, void *handler);",
  "int usleep(unsigned int usec);",
  "int bind(int fd, const void *addr, unsigned len);",
  "int getsockname(int fd, void *addr, unsigned *len);",
} do
  pcall(ffi.cdef, decl)
end

local C, S = ffi.C, core.C
local q, SLUICE = run.q, run.SLUICE
local monotonic = core.monotonic
local _ = sock

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

local function sleep(secs)
  C.usleep(math.floor(secs * 1e6))
end

local function count(s, needle)
  local n, at = 0, 1
  while true do
    local i = s:find(needle, at, true)
    if not i then return n end
    n, at = n + 1, i + #needle
  end
end

-- Polls cond() until it is true (returns its value) or secs pass (fails
-- with what, and the process's stderr when h is given).
local function wait_for(cond, secs, what, h)
  local deadline = monotonic() + secs
  while true do
    local v = cond()
    if v then return v end
    if h and proc.exited(h) then
      error(what .. ": the process exited\n" .. run.describe(proc.result(h)))
    end
    if monotonic() > deadline then
      error("timed out waiting for " .. what .. (h and ("\n" .. run.describe(proc.result(h))) or ""))
    end
    sleep(0.02)
  end
end

-- ---- the policies ------------------------------------------------------------

-- Version 1 counts flows as they start and end, and the packets of ended
-- flows; its snapshot is what it counted; stop() emits its counts.
local V1 = [[
local P = { info = { name = "counter", options = {
  label = { type = "string", default = "c", description = "a label carried into the output" } } } }
local starts, flows, pkts = 0, 0, 0
local emit, label, worker
function P.init(opts, ctx) emit, label, worker = ctx.emit, opts.label, ctx.worker end
function P.on_flow_start(f) starts = starts + 1 end
function P.on_flow_end(f) flows = flows + 1; pkts = pkts + f.pkts end
function P.snapshot() return { starts = starts, flows = flows, pkts = pkts } end
function P.restore(s) starts, flows, pkts = s.starts, s.flows, s.pkts end
function P.stop()
  emit { type = "count", version = 1, label = label, worker = worker, starts = starts,
    flows = flows, pkts = pkts }
end
return P
]]

-- Version 2 counts the same under other names, in a table of its own;
-- restore() takes version 1's snapshot (and its own); stop() emits its
-- version and what it was handed.
local V2 = [[
local P = { info = { name = "counter", options = {
  label = { type = "string", default = "c", description = "a label carried into the output" } } } }
local t = { opened = 0, ended = 0, packets = 0 }
local carried
local emit, label, worker
function P.init(opts, ctx) emit, label, worker = ctx.emit, opts.label, ctx.worker end
function P.on_flow_start(f) t.opened = t.opened + 1 end
function P.on_flow_end(f) t.ended = t.ended + 1; t.packets = t.packets + f.pkts end
function P.snapshot() return t end
function P.restore(s)
  if s.starts then
    carried = { starts = s.starts, flows = s.flows, pkts = s.pkts }
    t = { opened = s.starts, ended = s.flows, packets = s.pkts }
  else
    t = s
  end
end
function P.stop()
  emit { type = "count", version = 2, label = label, worker = worker, opened = t.opened,
    ended = t.ended, packets = t.packets, carried = carried }
end
return P
]]

local BROKEN_SYNTAX = "local P = { info = { name = \"counter\" }\nfunction P.on_flow_end( end\nreturn P\n"

local RESTORE_THROWS = [[
local P = { info = { name = "counter", options = {
  label = { type = "string", default = "c", description = "a label" } } } }
function P.on_flow_end(f) end
function P.restore(s) error("restore boom: cannot take " .. tostring(s.starts)) end
function P.stop() end
return P
]]

local function counts_of(recs)
  local list = {}
  for _, r in ipairs(recs) do
    if r.type == "count" then list[#list + 1] = r end
  end
  return list
end

-- ---- a run fed from a FIFO ---------------------------------------------------

-- `sluice run POLICY -r - ARGS` with stdin from a FIFO, and a writer that
-- feeds path to it in parts: the bytes before cuts[1], then (once the spec
-- says go) up to cuts[2], ... and the rest. After writing part i the
-- writer touches fed<i> and waits for go<i>. Returns the sluice handle, the
-- feeder's, and go(i) / fed(i) helpers.
local function fifo_run(dir, policy_path, path, cuts, args)
  local fifo = dir .. "/in.fifo"
  assert(os.execute("mkfifo " .. q(fifo)) == 0, "mkfifo failed")
  local steps, prev = {}, 0
  for i, c in ipairs(cuts) do
    steps[#steps + 1] = string.format("tail -c +%d %s | head -c %d", prev + 1, q(path), c - prev)
    steps[#steps + 1] = "touch " .. q(dir .. "/fed" .. i)
    steps[#steps + 1] = string.format("while [ ! -e %s ]; do sleep 0.02; done", q(dir .. "/go" .. i))
    prev = c
  end
  steps[#steps + 1] = string.format("tail -c +%d %s", prev + 1, q(path))
  local h = proc.spawn("sh -c " .. q(string.format("exec %s run %s -r - %s < %s", SLUICE,
    q(policy_path), args, q(fifo))))
  local feeder = proc.spawn("sh -c " .. q("{ " .. table.concat(steps, "; ") .. "; } > " .. q(fifo)))
  local t = { h = h, feeder = feeder }
  function t.fed(i)
    wait_for(function() return run.exists(dir .. "/fed" .. i) end, 60, "part " .. i .. " fed", h)
  end
  function t.go(i)
    run.spit(dir .. "/go" .. i, "")
  end
  function t.stderr()
    return run.slurp(h.dir .. "/err") or ""
  end
  -- waits until stderr has n lines with needle
  function t.await(needle, n)
    return wait_for(function() return count(t.stderr(), needle) >= (n or 1) end, 30,
      "'" .. needle .. "' on stderr", h)
  end
  return t
end

local GEN = "-n 300000 -c 2000 -s 7"

local function trace()
  return run.generated(GEN, "reload_spec", pending)
end

local function size_of(path)
  local f = assert(io.open(path, "rb"))
  local n = f:seek("end")
  f:close()
  return n
end

-- ---- the specs ---------------------------------------------------------------

describe("reload", function()
  teardown(function()
    proc.kill_leftovers()
    run.cleanup()
  end)

  describe("the core's signal flags", function()
    it("SIGHUP asks for a reload once, is no stop, and the old disposition is back after", function()
      local SIG_IGN = ffi.cast("void *", 1)
      local SIG_DFL = ffi.cast("void *", 0)
      C.signal(S.SL_SIGHUP, SIG_IGN) -- what the process had: ignored
      assert(signals.install())
      assert.is_false(signals.take_reload())
      C.kill(C.getpid(), S.SL_SIGHUP)
      C.kill(C.getpid(), S.SL_SIGHUP) -- two before the loop looks: one reload
      assert.is_nil(signals.pending(), "SIGHUP is not a stop")
      assert.is_true(signals.take_reload())
      assert.is_false(signals.take_reload(), "taken once")
      C.kill(C.getpid(), S.SL_SIGHUP) -- still caught: every SIGHUP is a reload
      assert.is_true(signals.take_reload())
      signals.restore()
      -- ignored again (the process would end by the default action)
      C.kill(C.getpid(), S.SL_SIGHUP)
      assert.is_false(signals.take_reload())
      C.signal(S.SL_SIGHUP, SIG_DFL)
    end)
  end)

  it("SIGHUP mid-trace on stdin: counts carried across the reload match the ground truth, " ..
    "the end comes from version 2", function()
    local path, truth = trace()
    local dir = run.tmpdir()
    local pol = run.spit(dir .. "/counter.lua", V1)
    local out = dir .. "/out.json"
    local cut = math.floor(size_of(path) / 2)
    local f = fifo_run(dir, pol, path, { cut }, "-v -o counter.label=x --out json:" .. q(out))
    f.fed(1)
    run.spit(pol, V2)
    proc.signal(f.h, S.SL_SIGHUP)
    -- the input is idle (part 2 not fed): the run reports the reload anyway
    f.await("sluice: reloaded policy counter from " .. pol .. " (state carried over)")
    f.go(1)
    local r = proc.finish(f.h, 120)
    proc.finish(f.feeder, 30)
    assert.equal(0, r.code, run.describe(r))
    local counts = counts_of(run.json_lines(out))
    assert.equal(1, #counts, run.describe(r))
    local c = counts[1]
    assert.equal(2, c.version, "the final output comes from version 2")
    assert.equal("x", c.label, "version 2 got the options the run was given")
    assert.equal(truth.flows, c.opened, "flows started, across the reload")
    assert.equal(truth.flows, c.ended, "flows ended, across the reload")
    assert.equal(truth.packets, c.packets, "packets, across the reload")
    assert(c.carried, "version 2 got version 1's snapshot")
    assert(c.carried.starts > 0 and c.carried.starts < truth.flows,
      "version 1 counted part of the trace: " .. c.carried.starts)
    assert(c.carried.pkts < truth.packets, "the reload came before the end")
    assert(has(r.err, "\npolicy reloads 1 failed 0\n"), run.describe(r))
    assert(not has(r.err, "failed at"), run.describe(r))
  end)

  it("a version that does not load, then one whose restore() throws: the old one keeps running",
    function()
      local path, truth = trace()
      local dir = run.tmpdir()
      local pol = run.spit(dir .. "/counter.lua", V1)
      local out = dir .. "/out.json"
      local size = size_of(path)
      local f = fifo_run(dir, pol, path, { math.floor(size / 3), math.floor(size * 2 / 3) },
        "--out json:" .. q(out)) -- no -v: failures are printed anyway
      f.fed(1)
      run.spit(pol, BROKEN_SYNTAX)
      proc.signal(f.h, S.SL_SIGHUP)
      f.await("sluice: reload of policy counter (" .. pol .. ") failed at load: ")
      f.go(1)
      f.fed(2)
      run.spit(pol, RESTORE_THROWS)
      proc.signal(f.h, S.SL_SIGHUP)
      f.await("failed at restore: ")
      f.go(2)
      local r = proc.finish(f.h, 120)
      proc.finish(f.feeder, 30)
      assert.equal(0, r.code, run.describe(r))
      local counts = counts_of(run.json_lines(out))
      assert.equal(1, #counts, run.describe(r))
      local c = counts[1]
      assert.equal(1, c.version, "version 1 ran to the end")
      assert.equal(truth.flows, c.starts)
      assert.equal(truth.flows, c.flows)
      assert.equal(truth.packets, c.pkts)
      -- one line each, naming the policy, the file, the stage and why
      local lines = {}
      for line in r.err:gmatch("[^\n]+") do
        if has(line, "reload of policy") then lines[#lines + 1] = line end
      end
      assert.equal(2, #lines, run.describe(r))
      assert(lines[1]:match("failed at load: cannot load policy .*counter%.lua:%d+: .*; the old " ..
        "version keeps running$"), lines[1])
      assert(lines[2]:match("failed at restore: .*counter%.lua:%d+: restore boom: cannot take %d+; " ..
        "the old version keeps running$"), lines[2])
      assert(not has(r.err, "reloaded policy"), run.describe(r))
    end)

  -- each worker wrote its line in two writes: two workers' lines came
  -- out interleaved ("...keeps runningsluice: worker 1: ...")
  it("with --workers 2, each worker's failed reload is one whole line naming the worker", function()
    local path = trace()
    local dir = run.tmpdir()
    local pol = run.spit(dir .. "/counter.lua", V1)
    local f = fifo_run(dir, pol, path, { math.floor(size_of(path) / 2) }, "--workers 2 --out json:/dev/null")
    f.fed(1)
    run.spit(pol, BROKEN_SYNTAX)
    for i = 1, 5 do
      proc.signal(f.h, S.SL_SIGHUP)
      f.await("failed at load: ", 2 * i)
    end
    f.go(1)
    local r = proc.finish(f.h, 120)
    proc.finish(f.feeder, 30)
    assert.equal(0, r.code, run.describe(r))
    local seen = { 0, 0 }
    for line in (r.err .. "\n"):gmatch("([^\n]*)\n") do
      if has(line, "reload of policy") then
        local w = line:match("^sluice: worker ([01]): reload of policy counter %(.-%) failed at load: " ..
          "cannot load policy [^\n]*; the old version keeps running$")
        assert(w, "a whole line: " .. line .. "\n" .. run.describe(r))
        seen[w + 1] = seen[w + 1] + 1
      end
    end
    assert.same({ 5, 5 }, seen, run.describe(r))
  end)

  -- such a version held the run for ever: the capture stopped, and only
  -- the stop watchdog ended it
  it("a version whose load never ends fails after the time limit; a stop during one is taken", function()
    local path, truth = trace()
    local dir = run.tmpdir()
    local pol = run.spit(dir .. "/counter.lua", V1)
    local out = dir .. "/out.json"
    local size = size_of(path)
    local f = fifo_run(dir, pol, path, { math.floor(size / 2) }, "--out json:" .. q(out))
    f.fed(1)
    run.spit(pol, "local P = { info = { name = 'counter' } }\nwhile true do end\nreturn P\n")
    local t0 = monotonic()
    proc.signal(f.h, S.SL_SIGHUP)
    f.await("failed at load: ")
    local took = monotonic() - t0
    assert(took >= 9 and took < 20, "the limit is 10 s, the failure came after " .. took)
    assert(has(f.stderr(), "did not finish within 10 s"), f.stderr())
    f.go(1)
    local r = proc.finish(f.h, 120)
    proc.finish(f.feeder, 30)
    assert.equal(0, r.code, run.describe(r))
    local c = counts_of(run.json_lines(out))[1]
    assert.equal(1, c.version, "version 1 ran to the end")
    assert.equal(truth.flows, c.flows)
    assert.equal(truth.packets, c.pkts)

    -- an init that never returns, and a SIGTERM while it runs
    dir = run.tmpdir()
    pol = run.spit(dir .. "/counter.lua", V1)
    f = fifo_run(dir, pol, path, { math.floor(size / 2) }, "--out json:" .. q(dir .. "/out.json"))
    f.fed(1)
    run.spit(pol, V2:gsub("function P.init%(opts, ctx%)", "function P.init(opts, ctx) while true do end"))
    proc.signal(f.h, S.SL_SIGHUP)
    sleep(1)
    proc.signal(f.h, S.SL_SIGTERM)
    r = proc.finish(f.h, 30)
    f.go(1)
    proc.finish(f.feeder, 30)
    assert.equal(0, r.code, run.describe(r))
    assert(has(r.err, "failed at init: ") and has(r.err, "stopped by SIGTERM"), run.describe(r))
    assert(not has(r.err, "did not stop within"), run.describe(r))
  end)

  -- the handlers were installed only once the input was open and the
  -- policies started: a SIGHUP (logrotate) while a policy's init ran, or
  -- a stop while an XDP program was being attached, took the default
  -- action and ended the process half set up
  it("a SIGHUP or SIGTERM while the run sets up is taken at its first step", function()
    local dir = run.tmpdir()
    local policy = run.spit(dir .. "/slowinit.lua", [[
local P = { info = { name = "slowinit" } }
function P.init() local t = os.clock() + 1 while os.clock() < t do end end
return P
]])
    local r = run.sh(string.format("%s run %s -r %s -q --out json:/dev/null & p=$!; sleep 0.5; " ..
      "kill -HUP $p; wait $p", run.SLUICE, run.q(policy), run.q(run.root .. "/examples/sample.pcap")))
    assert.equal(0, r.code, run.describe(r))
    r = run.sh(string.format("%s run %s -r %s --out json:/dev/null & p=$!; sleep 0.5; " ..
      "kill -TERM $p; wait $p", run.SLUICE, run.q(policy), run.q(run.root .. "/examples/sample.pcap")))
    assert.equal(0, r.code, run.describe(r))
    assert(r.err:find("stopped by SIGTERM", 1, true), run.describe(r))
  end)

  -- caught from the start, a stop then waited in the header's read for the
  -- watchdog (3 s, no summary); before, it killed the process at once
  it("a stop while stdin has not sent its header yet ends the run at once, exit 0", function()
    local r = run.sh(string.format("(sleep 6 | %s run -r - --out json:/dev/null) & sleep 1; " ..
      "%spkill -INT -f 'luajit .*sluice run -r - --out json:/dev/null'; wait", run.SLUICE, run.PLAIN))
    assert(r.err:find("stopped by SIGINT before the input opened", 1, true), run.describe(r))
    assert(not r.err:find("did not stop within", 1, true), run.describe(r))
  end)

  -- the workers got the parent's SIGTERM while their copies waited: each
  -- said SIGTERM and the run exited 1
  it("with --workers 2 too: exit 0, the line naming the signal sent to sluice", function()
    -- the SIGINT once the workers are forked: sluice then handles it
    -- (before its handlers, a background job ignores it)
    local r = run.sh(string.format("sleep 4 | %s run -r - --workers 2 --out json:/dev/null & p=$!; " ..
      "%skill -INT $p; wait $p", run.SLUICE, run.await_children("p", 2)))
    assert.equal(0, r.code, run.describe(r))
    assert(r.err:find("stopped by SIGINT before the input opened", 1, true), run.describe(r))
    assert(not r.err:find("SIGTERM", 1, true), run.describe(r))
  end)

  -- the open of a FIFO waits for its writer: a SIGHUP there had it fail
  -- (EINTR) and end the run, exit 1; with --workers (the parent opens it
  -- to copy it) a stop there was "Interrupted system call", exit 1
  local OPENING = run.await("p", '[ "$(cat /proc/$p/wchan)" = wait_for_partner ]')
  for _, workers in ipairs { 1, 2 } do
    it("a FIFO waiting for its writer: SIGHUP is no stop, workers " .. workers, function()
      local dir = run.tmpdir()
      local fifo, out = dir .. "/in.fifo", dir .. "/out.json"
      assert(os.execute("mkfifo " .. q(fifo)) == 0, "mkfifo failed")
      local r = run.sh(string.format("%s run -r %s --workers %d --out json:%s & p=$!; " ..
        "%skill -HUP $p; sleep 0.3; %stimeout 10 dd if=%s of=%s status=none; wait $p",
        SLUICE, q(fifo), workers, q(out), OPENING, run.PLAIN,
        q(run.root .. "/examples/sample.pcap"), q(fifo)))
      assert.equal(0, r.code, run.describe(r))
      assert.equal(161, #run.json_lines(out), run.describe(r))
    end)

    it("a FIFO waiting for its writer: a stop ends the run at once, exit 0, workers " .. workers, function()
      local dir = run.tmpdir()
      local fifo = dir .. "/in.fifo"
      assert(os.execute("mkfifo " .. q(fifo)) == 0, "mkfifo failed")
      local r = run.sh(string.format("%s run -r %s --workers %d --out json:/dev/null & p=$!; " ..
        "%skill -TERM $p; wait $p", SLUICE, q(fifo), workers, OPENING))
      assert.equal(0, r.code, run.describe(r))
      assert(r.err:find("stopped by SIGTERM before the input opened", 1, true), run.describe(r))
    end)
  end

  it("a stop on stdin that has nothing to read is at once too, with the summary", function()
    local path = trace()
    local dir = run.tmpdir()
    local f = fifo_run(dir, run.spit(dir .. "/counter.lua", V1), path, { 1000000 },
      "-v --out json:/dev/null")
    f.fed(1)
    sleep(0.3)
    local t0 = monotonic()
    proc.signal(f.h, S.SL_SIGTERM)
    local r = proc.finish(f.h, 10)
    local took = monotonic() - t0
    f.go(1) -- the feeder ends (its reader is gone)
    proc.finish(f.feeder, 30)
    assert.equal(0, r.code, run.describe(r))
    assert(took < 2.5, "stopped " .. took .. " s after SIGTERM (the watchdog's 3 s?)")
    assert(has(r.err, "sluice: stdin: stopped by SIGTERM at "), run.describe(r))
    assert(not has(r.err, "did not stop within"), run.describe(r))
  end)

  describe("engine:reload() (library use)", function()
    local function write(dir, name, text)
      return run.spit(dir .. "/" .. name, text)
    end

    -- Version 1 that asks for a reload from a handler, at its 50th ended
    -- flow (and only then).
    local ASKS = V1:gsub("function P.on_flow_end%(f%) ", "local ctx_engine\n" ..
      "local init1 = P.init\nfunction P.init(o, ctx) ctx_engine = ctx.engine; init1(o, ctx) end\n" ..
      "function P.on_flow_end(f) if flows == 49 then assert(ctx_engine:reload()) end ")

    it("from a handler: the swap is after the step, no event lost or seen twice", function()
      local path = trace()
      local dir = run.tmpdir()
      local file = write(dir, "counter.lua", ASKS)
      local inst = assert(policy.load(file, { label = "lib" }))
      assert.equal(file, inst.file)
      run.spit(file, V2) -- what the reload will find
      local eng = assert(sluice.open { read = path })
      assert.same({ nil, "engine:reload: no run in progress" }, { eng:reload() })
      local got, events = {}, {}
      local ok, err = eng:run({ inst }, nil, { emit = function(rec) got[#got + 1] = rec end,
        on_reload = function(ev) events[#events + 1] = ev end })
      assert(ok, err)
      local st = eng:stats()
      eng:close()
      assert.equal(1, st.reloads)
      assert.equal(0, st.reload_failures)
      assert.equal(1, #events)
      local ev = events[1]
      assert.is_true(ev.ok)
      assert.is_true(ev.carried)
      assert.equal("counter", ev.policy)
      assert.equal("engine:reload()", ev.trigger)
      local c = counts_of(got)[1]
      assert.equal(2, c.version)
      assert.equal("lib", c.label)
      assert.equal(st.flows_started, c.opened)
      assert.equal(st.flows_ended, c.ended)
      assert.equal(st.packets, c.packets)
      -- asked at the 50th end: version 1 saw the rest of that step only
      assert(c.carried.flows >= 50 and c.carried.flows < st.flows_ended, c.carried.flows)
    end)

    it("a failing init, a new name, a new packet filter that does not compile: old kept, " ..
      "each failure reported once; policies given as tables are not reloaded", function()
      local path = trace()
      local dir = run.tmpdir()
      local file = write(dir, "counter.lua", V1)
      local inst = assert(policy.load(file))
      local plain_ends = 0
      local plain = { on_flow_end = function() plain_ends = plain_ends + 1 end }
      local versions = {
        V2:gsub("function P.init%(opts, ctx%)", "function P.init(opts, ctx) error('init boom')"),
        (V2:gsub('name = "counter"', 'name = "renamed"')),
        (V2:gsub("return P\n$", "P.info.packets = 'no such filter((('\nfunction P.on_packet() end\n" ..
          "return P\n")),
      }
      local got, events = {}, {}
      local eng = assert(sluice.open { read = path })
      local i = 0
      local ok, err = eng:run({ plain, inst }, nil, {
        emit = function(rec) got[#got + 1] = rec end,
        on_reload = function(ev) events[#events + 1] = ev end,
        -- each version is put in place before the next reload is asked
        progress_interval = 0, progress = function(e)
          if i < #versions and #events == i then
            i = i + 1
            run.spit(file, versions[i])
            assert(e:reload())
          end
        end })
      assert(ok, err)
      local st = eng:stats()
      eng:close()
      assert.equal(3, #events)
      assert.equal(0, st.reloads)
      assert.equal(3, st.reload_failures)
      local stages = {}
      for _, ev in ipairs(events) do
        assert.is_false(ev.ok)
        assert.equal("counter", ev.policy, "the plain table is never reloaded")
        stages[#stages + 1] = ev.stage .. ": " .. ev.error
      end
      local text = table.concat(stages, "\n")
      assert(text:match("init: [^\n]*init boom"), text)
      assert(text:match("load: [^\n]*from 'counter' to 'renamed'"), text)
      -- found with the policy's other metadata, before it is compiled
      assert(text:match("load: policy counter: info%.packets: bad filter [^\n]*"), text)
      local c = counts_of(got)[1]
      assert.equal(1, c.version)
      assert.equal(st.flows_ended, c.flows)
      assert.equal(st.packets, c.pkts)
      assert.equal(st.flows_ended, plain_ends)
    end)

    it("without on_reload a failure is one line on stderr; a policy without snapshot starts " ..
      "fresh", function()
      local path = trace()
      local dir = run.tmpdir()
      -- a policy with no snapshot/restore, asking for reloads at its 10th
      -- and 20th end: first to a broken file, then to a working one
      local file = write(dir, "plain.lua", [[
local P = {}
local n, emit = 0, nil
local eng
function P.init(o, ctx) emit, eng = ctx.emit, ctx.engine end
function P.on_flow_end() n = n + 1; if n == 10 or n == 5000 then eng:reload() end end
function P.stop() emit { type = "count", version = 1, n = n } end
return P
]])
      local script = string.format([[
package.path = %q .. "/lua/?.lua;" .. %q .. "/lua/?/init.lua;" .. package.path
package.cpath = %q .. "/core/build/?.so;" .. package.cpath
local sluice, policy = require "sluice", require "sluice.policy"
local inst = assert(policy.load(%q))
local eng = assert(sluice.open { read = %q })
local f = io.open(%q, "w") f:write("return 42") f:close()
local step = 0
local ok, err = eng:run({ inst }, nil, { emit = function(r) print(r.version, r.n) end,
  progress_interval = 0, progress = function(e)
    if step == 0 and e:stats().reloads + e:stats().reload_failures == 1 then
      step = 1
      local g = io.open(%q, "w")
      g:write("local P = {} local n = 0 local emit function P.init(o, c) emit = c.emit end " ..
        "function P.on_flow_end() n = n + 1 end function P.stop() emit { version = 2, n = n } end return P")
      g:close()
    end
  end })
assert(ok, err)
local st = eng:stats()
print("reloads", st.reloads, st.reload_failures, st.flows_ended)
]], run.root, run.root, run.root, file, path, file, file)
      local lua = run.spit(dir .. "/lib.lua", script)
      local r = run.sh("luajit " .. q(lua))
      assert.equal(0, r.code, run.describe(r))
      local v, n = r.out:match("^(%d)\t(%d+)\n")
      local reloads, failures, ended = r.out:match("reloads\t(%d+)\t(%d+)\t(%d+)")
      assert.equal("2", v, run.describe(r))
      assert.equal("1", reloads, run.describe(r))
      assert.equal("1", failures, run.describe(r))
      -- version 2 started fresh: it counted only what came after the swap
      assert(tonumber(n) > 0 and tonumber(n) < tonumber(ended) - 4999, run.describe(r))
      -- the failure: one line, naming the policy by its file's base name
      assert(r.err:match("^sluice: reload of policy plain %(.-plain%.lua%) failed at load: policy " ..
        ".-plain%.lua must return a table, got number .*; the old version keeps running\n$"),
        run.describe(r))
    end)
  end)

  describe("sluice collect", function()
    local AF_INET, SOCK_DGRAM = 2, 2

    local function be16(v)
      return string.char(bit.band(bit.rshift(v, 8), 255), bit.band(v, 255))
    end
    local function be32(v)
      v = v % 4294967296
      return string.char(math.floor(v / 16777216) % 256, math.floor(v / 65536) % 256,
        math.floor(v / 256) % 256, v % 256)
    end
    local function swap16(p)
      return bit.bor(bit.rshift(p, 8), bit.lshift(bit.band(p, 0xff), 8))
    end
    local function sockaddr(port)
      local sa = ffi.new("struct sl_sockaddr_in")
      sa.family = AF_INET
      sa.port = swap16(port)
      assert(C.inet_pton(AF_INET, "127.0.0.1", sa.addr) == 1)
      return sa
    end
    local function free_port()
      local fd = C.socket(AF_INET, SOCK_DGRAM, 0)
      local sa = sockaddr(0)
      assert(C.bind(fd, sa, ffi.sizeof(sa)) == 0, "bind: " .. core.errno_text())
      local len = ffi.new("unsigned[1]", ffi.sizeof(sa))
      assert(C.getsockname(fd, sa, len) == 0)
      C.close(fd)
      return swap16(sa.port)
    end
    -- NetFlow v5 records of UDP flows 10.9.(i>>8).(i&255):(2000+i) ->
    -- 198.51.100.7:123, i % 9 + 1 packets each
    local UPTIME, T0_S = 3600000, 1700000000
    local function v5_message(first, last, seq)
      local recs = {}
      for i = first, last do
        recs[#recs + 1] = string.char(10, 9, bit.rshift(i, 8), bit.band(i, 255)) ..
          string.char(198, 51, 100, 7) .. "\0\0\0\0" .. be16(1) .. be16(2) ..
          be32(i % 9 + 1) .. be32((i % 9 + 1) * 76) .. be32(UPTIME - 2000 + i) ..
          be32(UPTIME - 1000 + i) .. be16(2000 + i) .. be16(123) .. "\0\0\17\0" ..
          be16(0) .. be16(0) .. "\0\0\0\0"
      end
      return be16(5) .. be16(#recs) .. be32(UPTIME) .. be32(T0_S) .. be32(0) .. be32(seq) ..
        "\0\0" .. be16(0) .. table.concat(recs)
    end

    it("a reload between two batches of NetFlow v5: every record counted once, version 2 ends",
      function()
        local dir = run.tmpdir()
        local pol = run.spit(dir .. "/counter.lua", V1)
        local out = dir .. "/out.json"
        local port = free_port()
        local h = proc.spawn(string.format("%s collect %s --listen udp:127.0.0.1:%d -v --out json:%s",
          SLUICE, q(pol), port, q(out)))
        local fd
        local expected_pkts, sent = 0, 0
        local function send(first, last)
          local m = v5_message(first, last, sent)
          -- until the collector listens, a datagram is refused: send again
          wait_for(function() return C.send(fd, m, #m, 0) == #m end, 10, "a socket to send to", h)
          for i = first, last do expected_pkts = expected_pkts + i % 9 + 1 end
          sent = sent + (last - first + 1)
        end
        local function err() return run.slurp(h.dir .. "/err") or "" end
        -- wait until the collector takes datagrams: its first message makes
        -- a flow; then the rest of batch 1
        wait_for(function()
          -- a socket whose local address is 127.0.0.1:port
          local local_addr = string.format("\n%%s*%%d+: 0100007F:%04X ", port)
          return ("\n" .. (run.slurp("/proc/net/udp") or "")):find(local_addr)
        end, 10, "the collector's socket", h)
        fd = C.socket(AF_INET, SOCK_DGRAM, 0)
        local da = sockaddr(port)
        assert(C.connect(fd, da, ffi.sizeof(da)) == 0)
        for k = 0, 4 do send(k * 20, k * 20 + 19) end
        sleep(0.5) -- taken by version 1 (its socket buffer is its queue)
        run.spit(pol, V2)
        proc.signal(h, S.SL_SIGHUP)
        wait_for(function() return has(err(), "reloaded policy counter") end, 10, "the reload", h)
        for k = 5, 9 do send(k * 20, k * 20 + 19) end
        sleep(0.5)
        proc.signal(h, S.SL_SIGTERM)
        local r = proc.finish(h, 20)
        C.close(fd)
        assert.equal(0, r.code, run.describe(r))
        local counts = counts_of(run.json_lines(out))
        assert.equal(1, #counts, run.describe(r))
        local c = counts[1]
        assert.equal(2, c.version)
        assert.equal(200, c.opened, run.describe(r))
        assert.equal(200, c.ended)
        assert.equal(expected_pkts, c.packets)
        assert(c.carried and c.carried.starts == 100, "version 1 took the first batch: " ..
          tostring(c.carried and c.carried.starts))
        assert(has(r.err, "\npolicy reloads 1 failed 0\n"), run.describe(r))
      end)
  end)

  describe("live capture with --workers 2", function()
    local AVAILABLE, WHY = netns.available()

    it("the parent forwards SIGHUP: each worker reloads, the counts add up", function()
      if not AVAILABLE then
        io.stderr:write("reload_spec: live --workers test skipped: ", tostring(WHY), "\n")
        pending("live capture needs root, network namespaces and veth: " .. tostring(WHY))
        return
      end
      -- a small trace, no pauses, replayed in two halves
      local path = run.generated("-n 3000 -c 60 -r 20000 -p 0 -s 11", "reload_spec", pending)
      local data = assert(run.slurp(path))
      local recs = run.pcap_records(data)
      local half = math.floor(#recs / 2)
      local head = data:sub(1, 24)
      local dir = run.tmpdir()
      local function part(name, from, to)
        local parts = { head }
        for i = from, to do
          parts[#parts + 1] = data:sub(recs[i].offset + 1, recs[i].offset + recs[i].len)
        end
        return run.spit(dir .. "/" .. name, table.concat(parts))
      end
      local p1, p2 = part("p1.pcap", 1, half), part("p2.pcap", half + 1, #recs)
      -- the truth: the same trace read from the file
      local t = run.sh(SLUICE .. " run -r " .. q(path) .. " -v --out json:/dev/null")
      assert.equal(0, t.code, run.describe(t))
      local flows = tonumber(t.err:match("\nflows (%d+) ended"))
      local packets = tonumber(t.err:match("packets (%d+) bytes"))
      assert(flows and packets, run.describe(t))

      local env = assert(netns.setup { queues = 2 })
      finally(function() env:destroy() end)
      local pol = run.spit(dir .. "/counter.lua", V1)
      local out = dir .. "/out.json"
      local p = netns.start(string.format("%s -i %s --backend afpacket --workers 2 -v --out json:%s",
        q(pol), env.host, q(out)), dir)
      finally(function() p:kill() end)
      assert(p:wait_ready("afpacket", env, 2))
      local r1 = env:replay(p1)
      assert.equal(0, r1.code, run.describe(r1))
      assert(not r1.sent or r1.sent == half, run.describe(r1))
      netns.sleep(0.5)
      run.spit(pol, V2)
      p:signal("HUP")
      wait_for(function() return count(p:stderr(), "reloaded policy counter") >= 2 end, 10,
        "both workers' reloads")
      assert(has(p:stderr(), "sluice: worker 0: reloaded policy counter"), p:stderr())
      assert(has(p:stderr(), "sluice: worker 1: reloaded policy counter"), p:stderr())
      local r2 = env:replay(p2)
      assert.equal(0, r2.code, run.describe(r2))
      assert(not r2.sent or r2.sent == #recs - half, run.describe(r2))
      netns.sleep(1)
      p:signal("TERM")
      local code = p:wait(10)
      assert.equal(0, code, p:stderr())
      local counts = counts_of(run.json_lines(out))
      assert.equal(2, #counts, p:stderr())
      local opened, ended, pkts, carried = 0, 0, 0, 0
      for _, c in ipairs(counts) do
        assert.equal(2, c.version, "every worker ended with version 2")
        opened, ended, pkts = opened + c.opened, ended + c.ended, pkts + c.packets
        carried = carried + (c.carried and c.carried.starts or 0)
      end
      assert.equal(flows, opened)
      assert.equal(flows, ended)
      assert.equal(packets, pkts)
      assert(carried > 0 and carried < flows, "version 1 saw the first half: " .. carried)
    end)
  end)
end)
