-- Fail loudly, lose nothing (issue 11): a run that loses records says so on
-- stderr without -v and exits 3 ("completed with losses"); a file run
-- stopped by SIGINT/SIGTERM ends every active flow (reason shutdown),
-- prints its summary and flushes its outputs; a policy handler that never
-- returns cannot hold a signal off.
local run = require "support.run"

local SAMPLE = run.root .. "/examples/sample.pcap"
local SLUICE, q = run.SLUICE, run.q
local SAMPLE_FLOWS = 161
local EXIT_LOSSES = require("sluice.report").EXIT_LOSSES

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

describe("a run that loses records", function()
  teardown(run.cleanup)

  it("exits 3 with one line when the flow table is full, without -v", function()
    local dir = run.tmpdir()
    local r = run.sh(string.format("%s run -r %s -q --pool-flows 100 --out json:%s",
      SLUICE, q(SAMPLE), q(dir .. "/out.json")))
    assert.equal(EXIT_LOSSES, r.code, run.describe(r))
    assert(r.err:match("sluice: %d+ packet%(s%) dropped: the flow table was full %(100 slots"),
      run.describe(r))
  end)

  it("exits 3 when an IPFIX/TCP collector refuses the connection", function()
    -- port 9 (discard) on loopback: nothing listens there in the test machine
    local r = run.sh(string.format("%s run -r %s --out ipfix:tcp:127.0.0.1:9", SLUICE, q(SAMPLE)))
    assert.equal(EXIT_LOSSES, r.code, run.describe(r))
    assert(r.err:match("sink ipfix:tcp:127%.0%.0%.1:9: written %d+ dropped " .. SAMPLE_FLOWS),
      run.describe(r))
  end)

  it("exits 0 when nothing was lost", function()
    local dir = run.tmpdir()
    local r = run.sh(string.format("%s run -r %s -q --out json:%s", SLUICE, q(SAMPLE),
      q(dir .. "/out.json")))
    assert.equal(0, r.code, run.describe(r))
    assert.equal("", r.err)
  end)
end)

describe("a file run stopped by a signal", function()
  teardown(run.cleanup)

  -- A policy that touches a marker file once 1000 flows started and then
  -- takes about 40 us per flow start, so that the run is still reading
  -- when the test sends its signal, on any machine and build.
  local SLOW = [[
local P = { info = { name = "slow" } }
local n, marker, emit = 0, os.getenv("SLUICE_MARKER"), nil
function P.init(opts, ctx) emit = ctx.emit end
function P.on_flow_end(f, reason) emit { type = "end", reason = reason } end
function P.on_flow_start(f)
  n = n + 1
  if n == 1000 then io.open(marker, "w"):close() end
  if n > 1000 then local t = os.clock() + 40e-6 while os.clock() < t do end end
end
return P
]]

  local LOOP = [[
local P = { info = { name = "loop" } }
local n, marker = 0, os.getenv("SLUICE_MARKER")
function P.on_flow_start(f)
  n = n + 1
  if n == 50 then
    io.open(marker, "w"):close()
    local x = 0
    while true do x = x + 1 end
  end
end
return P
]]

  -- Starts SLUICE ARGS in the background, waits (at most 60 s) for the
  -- marker, sends sig and waits for the process; prints the seconds from
  -- the signal to its end last on stdout.
  local function signalled(dir, args, sig)
    local marker = dir .. "/marker"
    return run.sh(string.format("SLUICE_MARKER=%s %s %s & p=$!; i=0; " ..
      "while [ ! -e %s ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; " ..
      "t0=$(date +%%s%%N); kill -%s $p; wait $p; rc=$?; " ..
      "echo $(( ($(date +%%s%%N) - t0) / 1000000 )); exit $rc",
      q(marker), SLUICE, args, q(marker), sig))
  end

  for _, sig in ipairs { "TERM", "INT" } do
    it("SIG" .. sig .. ": ends every active flow (shutdown), prints the summary, flushes", function()
      local path, truth = run.generated("-n 600000 -c 20000 -r 20000", "losses_spec", pending)
      local dir = run.tmpdir()
      local policy = dir .. "/slow.lua"
      run.spit(policy, SLOW)
      local out = dir .. "/flows.json"
      local r = signalled(dir, string.format("run %s -r %s -v --out json:%s", q(policy), q(path),
        q(out)), sig)
      assert.equal(0, r.code, run.describe(r))
      assert(r.err:match("sluice: [^\n]*: stopped by SIG" .. sig .. " at [%d.]+%% of the input"),
        run.describe(r))
      local started, ended = r.err:match("\nflows (%d+) ended (%d+)")
      assert(started, run.describe(r))
      started, ended = tonumber(started), tonumber(ended)
      assert.equal(started, ended, "every flow that started has ended")
      assert(started < truth.flows, "the run was stopped before the end of the trace")
      -- every end reached the file, some of them the shutdown's
      local recs = run.json_lines(out)
      assert.equal(ended, #recs)
      local shutdown = 0
      for _, rec in ipairs(recs) do
        if rec.reason == "shutdown" then shutdown = shutdown + 1 end
      end
      assert.equal(tonumber(r.err:match("shutdown=(%d+)")), shutdown)
      assert(shutdown > 0, "flows active at the signal end with reason shutdown")
    end)
  end

  it("SIGINT while the run waits for a slow sink: no watchdog, a clean stop after the wait", function()
    local dir = run.tmpdir()
    -- a sink that is always busy: the file run waits for it, gives up
    -- after 4 s, then counts what it could not take
    local policy = run.spit(dir .. "/busy.lua", [[
local P = { info = { name = "busy" } }
local marker = os.getenv("SLUICE_MARKER")
local sink = { name = "busy", give_up = 4, queue = 4 }
function sink:write() return nil, "busy", "transient" end
local emit
function P.init(o, ctx) emit = ctx.emit end
function P.on_flow_end(f)
  emit(sink, { n = 1 })
  local m = io.open(marker) if m then m:close() else io.open(marker, "w"):close() end
end
return P
]])
    local r = signalled(dir, string.format("run %s -r %s", q(policy), q(SAMPLE)), "INT")
    assert.equal(EXIT_LOSSES, r.code, run.describe(r))
    assert(not has(r.err, "did not stop within"), run.describe(r))
    assert(has(r.err, "stopped by SIGINT"), run.describe(r))
  end)

  -- thousands of flows end in one step at the end of the input; handlers
  -- of 2 ms each kept the loop from the signal past the watchdog's 3 s,
  -- which then killed a run whose handlers all returned
  it("SIGINT while slow handlers end the last flows: a clean stop, no watchdog", function()
    local dir = run.tmpdir()
    local path = run.generated("-n 20000 -c 5000 -s 3", "losses_spec", pending)
    local policy = run.spit(dir .. "/slowend.lua", [[
local P = { info = { name = "slowend" } }
local marker, emit, n = os.getenv("SLUICE_MARKER"), nil, 0
function P.init(o, ctx) emit = ctx.emit end
function P.on_flow_end(f, reason)
  if reason == "eof" then n = n + 1 end
  if n == 100 then io.open(marker, "w"):close() end
  local t = os.clock() + 0.002 while os.clock() < t do end
  emit { reason = reason }
end
return P
]])
    local out = dir .. "/out.json"
    local r = signalled(dir, string.format("run %s -r %s -v --out json:%s", q(policy), q(path), q(out)),
      "INT")
    assert.equal(0, r.code, run.describe(r))
    assert(not has(r.err, "did not stop within"), run.describe(r))
    assert(has(r.err, "stopped by SIGINT"), run.describe(r))
    local started, ended = r.err:match("\nflows (%d+) ended (%d+)")
    assert(started and started == ended, run.describe(r))
    assert.equal(tonumber(ended), #run.json_lines(out))
    local ms = tonumber(r.out:match("(%d+)%s*$"))
    assert(ms and ms > 3000, "the handlers ran on past the grace time: " .. tostring(ms) .. " ms")
  end)

  it("SIGINT while a policy handler loops: stopped within the grace time, with a line", function()
    local path = run.generated("-n 600000 -c 20000 -r 20000", "losses_spec", pending)
    local dir = run.tmpdir()
    local policy = dir .. "/loop.lua"
    run.spit(policy, LOOP)
    local r = signalled(dir, string.format("run %s -r %s -q", q(policy), q(path)), "INT")
    -- the shell's status of a process ended by SIGINT
    assert.equal(128 + 2, r.code, run.describe(r))
    assert(has(r.err, "did not stop within 3 s of the signal"), run.describe(r))
    local ms = tonumber(r.out:match("(%d+)%s*$"))
    assert(ms and ms >= 2500 and ms < 10000, "stopped " .. tostring(ms) .. " ms after SIGINT")
  end)
end)

describe("what a policy emits", function()
  teardown(run.cleanup)

  -- every 40th flow end emits a function, every 41st a cycle, the rest a
  -- string with a byte that is not UTF-8
  local EMITTER = [[
local P = { info = { name = "emitter" } }
local emit, n = nil, 0
function P.init(o, ctx) emit = ctx.emit end
function P.on_flow_end(f)
  n = n + 1
  if n % 40 == 0 then emit { n = n, before = "the bad one" } emit { bad = print }
  elseif n % 41 == 0 then local t = {} t.t = t emit(t)
  else emit { n = n, s = "x\255y" } end
end
return P
]]

  it("a record JSON cannot hold aborts the run naming the policy and handler", function()
    local dir = run.tmpdir()
    local policy = run.spit(dir .. "/emitter.lua", EMITTER)
    local r = run.sh(string.format("%s run %s -r %s --out json:%s", SLUICE, q(policy), q(SAMPLE),
      q(dir .. "/out.json")))
    assert.equal(1, r.code, run.describe(r))
    -- at the emit's line, naming the field; the call's other emit is
    -- dropped with it
    assert(has(r.err, "policy emitter: on_flow_end failed: " .. policy ..
      ":6: ctx.emit: cannot encode a function as JSON (at record.bad)"), run.describe(r))
    local recs = run.json_lines(dir .. "/out.json")
    assert.equal(39, #recs, "what earlier calls emitted is kept")
    for _, rec in ipairs(recs) do assert.is_nil(rec.before) end
  end)

  it("with --on-error skip, each bad record is counted and the rest written as valid UTF-8", function()
    local dir = run.tmpdir()
    local policy = run.spit(dir .. "/emitter.lua", EMITTER)
    local out = dir .. "/out.json"
    local r = run.sh(string.format("%s run %s --on-error skip -r %s --out json:%s", SLUICE, q(policy),
      q(SAMPLE), q(out)))
    assert.equal(EXIT_LOSSES, r.code, run.describe(r))
    -- 161 ends: 4 multiples of 40, 3 of 41
    assert(has(r.err, "7 error(s) in policy emitter, on_flow_end"), run.describe(r))
    -- the 7 bad records and the 4 emitted before them in the same call
    assert(has(r.err, "11 record(s) emitted by failed handlers dropped"), run.describe(r))
    local recs = run.json_lines(out)
    assert.equal(SAMPLE_FLOWS - 7, #recs)
    for _, rec in ipairs(recs) do assert.equal("x\239\191\189y", rec.s) end
  end)

  it("a handler that is not a function is refused before data, naming it", function()
    local dir = run.tmpdir()
    local policy = run.spit(dir .. "/odd.lua", "return { on_flow_start = 5 }\n")
    local r = run.sh(string.format("%s run %s -r %s", SLUICE, q(policy), q(SAMPLE)))
    assert.equal(2, r.code, run.describe(r))
    assert.equal("sluice: policy odd: on_flow_start must be a function, not a number\n", r.err)
  end)
end)

describe("--user", function()
  teardown(run.cleanup)

  -- root, and a user nobody to become
  local function can_switch()
    local r = run.sh("id -u; id -u nobody")
    local me, nobody = r.out:match("^(%d+)\n(%d+)")
    if me ~= "0" or not nobody then
      io.stderr:write("losses_spec: skipping --user: needs root and a user nobody\n")
      return false
    end
    return true
  end

  it("sets no_new_privs: nothing the policy runs gains privileges back", function()
    if not can_switch() then return pending("needs root and a user nobody") end
    local dir = run.tmpdir()
    os.execute("chmod 777 " .. q(dir))
    local policy = run.spit(dir .. "/p.lua", [[
local P = {}
local emit
function P.init(o, ctx) emit = ctx.emit end
function P.stop()
  local f = io.open("/proc/self/status")
  local s = f:read("*a") f:close()
  emit { nnp = s:match("NoNewPrivs:%s*(%d)"), uid = s:match("Uid:%s*(%d+)") }
end
return P
]])
    local out = dir .. "/out.json"
    local r = run.sh(string.format("%s run %s -r %s --user nobody --out json:%s", SLUICE, q(policy),
      q(SAMPLE), q(out)))
    assert.equal(0, r.code, run.describe(r))
    local rec = run.json_lines(out)[1]
    assert.equal("1", rec.nnp)
    assert.are_not.equal("0", rec.uid)
  end)

  it("with --rotate or --state in a directory that user cannot write: an error before data", function()
    if not can_switch() then return pending("needs root and a user nobody") end
    local dir = run.tmpdir()
    os.execute("chmod 755 " .. q(dir))
    -- the last run's output stays as it was: the check comes before the
    -- outputs open (they truncated it)
    run.spit(dir .. "/x.json", "{\"kept\":1}\n")
    local r = run.sh(string.format("%s run -r %s --user nobody --rotate 10 --out json:%s", SLUICE,
      q(SAMPLE), q(dir .. "/x.json")))
    assert.equal(1, r.code, run.describe(r))
    assert.equal(string.format("sluice: --rotate: %s is not writable by user nobody, who writes %s\n",
      dir, dir .. "/x.json"), r.err)
    assert.is_nil(io.open(dir .. "/x.json.1"), "no data was read")
    assert.equal("{\"kept\":1}\n", run.slurp(dir .. "/x.json"))
    r = run.sh(string.format("%s run -r %s --user nobody --state %s -q", SLUICE, q(SAMPLE),
      q(dir .. "/st")))
    assert.equal(1, r.code, run.describe(r))
    -- a writable directory: the rotated files are there
    local open_dir = dir .. "/open"
    os.execute("mkdir " .. q(open_dir) .. " && chmod 777 " .. q(open_dir))
    r = run.sh(string.format("%s run -r %s --user nobody --rotate 20 --out json:%s", SLUICE,
      q(SAMPLE), q(open_dir .. "/x.json")))
    assert.equal(0, r.code, run.describe(r))
    local lines = #run.json_lines(open_dir .. "/x.json")
    local n = 1
    while run.exists(open_dir .. "/x.json." .. n) do
      lines = lines + #run.json_lines(open_dir .. "/x.json." .. n)
      n = n + 1
    end
    assert(n > 2, "rotated files: " .. (n - 1))
    assert.equal(SAMPLE_FLOWS, lines)
  end)
end)

describe("a capture where a policy goes", function()
  teardown(run.cleanup)

  it("is a usage error naming it (plain and compressed), not a Lua syntax error", function()
    local dir = run.tmpdir()
    local gz = dir .. "/s.pcap.gz"
    assert.equal(0, run.sh("gzip -c " .. q(SAMPLE) .. " > " .. q(gz)).code)
    for _, path in ipairs { SAMPLE, gz } do
      local r = run.sh(string.format("%s run -r %s %s", SLUICE, q(SAMPLE), q(path)))
      assert.equal(2, r.code, run.describe(r))
      assert(has(r.err, "sluice: " .. path .. " is a capture, not a policy: read it with -r"),
        run.describe(r))
    end
  end)

  it("without -r, and to sluice info: the same line, naming -r FILE", function()
    for _, cmd in ipairs { "run", "info" } do
      local r = run.sh(string.format("%s %s %s", SLUICE, cmd, q(SAMPLE)))
      assert.equal(2, r.code, run.describe(r))
      assert(has(r.err, "sluice: " .. SAMPLE .. " is a capture, not a policy: read it with -r " .. SAMPLE),
        run.describe(r))
    end
  end)
end)
