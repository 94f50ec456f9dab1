-- --workers N on files and standard input (issue 15): the workers share
-- the input (one pcap file read once for all, other inputs read whole by
-- each) and each keeps the flows that hash to it, so the workers' JSON
-- lines together are the one-worker run's lines (flow ids aside: each
-- worker numbers its own), with and without slices and with timeouts
-- firing, from a file, a cut file, a pcapng file, a pipe and a compressed
-- pipe, with an input filter; fragments join their flows in whichever
-- worker owns them; packets of no flow (not IP, malformed) are counted
-- once; the -v counters are one summary, equal to one worker's; lines
-- are never cut or interleaved; losses still give exit status 3; a worker
-- that stops early does not hold the others back.
local run = require "support.run"

local SLUICE, q = run.SLUICE, run.q
local LIMIT = "timeout -k 10 600 "
-- ~200k packets, 2,000 concurrent flows, IPv4 and IPv6, VLANs
local ARGS = "-n 200000 -c 2000 -s 5"

local function generated()
  return run.generated(ARGS, "workers_spec", pending)
end

-- Lines without the fields that number flows per worker, sorted.
local function normalized(text)
  local lines = {}
  for line in text:gmatch("[^\n]+") do
    lines[#lines + 1] = line:gsub('"id":%d+,', ""):gsub('"flow_id":%d+,', "")
  end
  table.sort(lines)
  return lines
end

-- `sluice run` with the input given by the shell words before it (a pipe
-- into it) and the -r argument; returns the run and its sorted lines.
local function run_json(before, read_arg, extra)
  local out = run.tmpdir() .. "/out.json"
  local r = run.sh(string.format("%s%s%s run -r %s -q -v --out json:%s %s", before, LIMIT,
    SLUICE, read_arg, q(out), extra or ""))
  return r, normalized(run.slurp(out) or ""), run.slurp(out) or ""
end

-- The -v lines that count packets and flows.
local function counters(r)
  return r.err:match("(packets [^\n]*)"), r.err:match("(flows [^\n]*)")
end

local function same_run(r1, lines1, r, lines)
  assert(r.code == 0, run.describe(r))
  assert.are.equal(#lines1, #lines, "line count")
  assert.are.same(lines1, lines)
  local p1, f1 = counters(r1)
  local p, f = counters(r)
  assert.are.equal(p1, p, "the packet counters, summed over the workers")
  assert.are.equal(f1, f, "the flow counters, summed over the workers")
end

-- A policy (its source) run by two workers on trace, to a JSON file.
local function two_workers(trace, name, source, extra)
  local dir = run.tmpdir()
  run.spit(dir .. "/" .. name .. ".lua", source)
  return run.sh(string.format("timeout -k 5 120 %s run %s -r %s -q %s--workers 2 --out json:%s",
    SLUICE, q(dir .. "/" .. name .. ".lua"), q(trace), extra or "", q(dir .. "/" .. name .. ".json")))
end

describe("--workers on a file", function()
  local trace, reference, ref_run
  setup(function()
    trace = generated()
    ref_run, reference = run_json("", q(trace))
    assert(ref_run.code == 0, run.describe(ref_run))
    assert(#reference > 10000, "the trace gives many flows")
  end)

  for _, n in ipairs { 2, 3 } do
    it(n .. " workers write the flows one worker writes, and one summary", function()
      local r, lines = run_json("", q(trace), "--workers " .. n)
      same_run(ref_run, reference, r, lines)
      assert.are.equal(1, select(2, r.err:gsub("packets %d+ bytes", "")), "one summary:\n" .. r.err)
    end)
  end

  it("with 1 s slices, every worker closes the same intervals", function()
    local r1, l1 = run_json("", q(trace), "--slice 1")
    assert(r1.code == 0, run.describe(r1))
    local r2, l2 = run_json("", q(trace), "--slice 1 --workers 2")
    same_run(r1, l1, r2, l2)
    assert(r2.err:match("slices %d+ records %d+") == r1.err:match("slices %d+ records %d+"),
      "the slice counters: " .. r1.err .. "\n" .. r2.err)
  end)

  it("with short timeouts firing between other workers' packets, the same flows and slices", function()
    local opts = "--idle-timeout tcp=0.02 --idle-timeout udp=0.01 --idle-timeout icmp=0.01 " ..
      "--active-timeout 0.3 --slice 0.1"
    local r1, l1 = run_json("", q(trace), opts)
    assert(r1.code == 0, run.describe(r1))
    assert(r1.err:match("idle=%d%d%d"), "idle timeouts fire: " .. r1.err)
    for _, n in ipairs { 2, 3 } do
      local r, lines = run_json("", q(trace), opts .. " --workers " .. n)
      same_run(r1, l1, r, lines)
    end
  end)

  it("reads standard input (a pipe) and a gzip pipe, copied to each worker", function()
    local r, lines = run_json("cat " .. q(trace) .. " | ", "-", "--workers 2")
    same_run(ref_run, reference, r, lines)
    r, lines = run_json(run.PLAIN .. "gzip -c " .. q(trace) .. " | ", "-", "--workers 2")
    same_run(ref_run, reference, r, lines)
  end)

  it("writes whole lines to a pipe on stdout", function()
    local out = run.tmpdir() .. "/piped.json"
    local r = run.sh(string.format("%s%s run -r %s -q --workers 2 --out json:- | cat > %s", LIMIT,
      SLUICE, q(trace), q(out)))
    assert(r.code == 0, run.describe(r))
    local text = run.slurp(out)
    assert.are.same(reference, normalized(text))
    for line in text:gmatch("[^\n]+") do
      assert(line:match("^{.*}$"), "a cut or mixed line: " .. line:sub(1, 200))
    end
  end)

  -- one worker rotated while the others wrote on in the file it had moved
  -- away, and two could pick the same PATH.N: lines vanished, exit 0
  it("rotate a shared file by size without losing a line: worker 0 rotates, the others follow", function()
    for _, n in ipairs { 2, 4 } do
      local dir = run.tmpdir()
      local r = run.sh(string.format("%s%s run -r %s -q -v --workers %d --rotate 200K --out json:%s",
        LIMIT, SLUICE, q(trace), n, q(dir .. "/r.json")))
      assert(r.code == 0, run.describe(r))
      local text, files = {}, 0
      for name in io.popen("ls " .. q(dir)):lines() do
        if name:match("^r%.json") then
          files = files + 1
          text[#text + 1] = run.slurp(dir .. "/" .. name)
        end
      end
      assert(files >= 5, n .. " workers: the file was rotated (" .. files .. " files)\n" .. r.err)
      assert.are.same(reference, normalized(table.concat(text)))
      assert(r.err:match("rotations=%d+"), run.describe(r))
    end
  end)

  -- only worker 0 rotated, and looked again only after its own lines had
  -- grown past the size of the file it had left: with 1 s slices (a
  -- batch of megabytes at once) a 1M file grew to 6.6 MB
  it("a shared file stays within its rotation size, the workers' buffers and an eighth of it each", function()
    local dir = run.tmpdir()
    local r = run.sh(string.format("%s%s run -r %s -q -v --workers 2 --slice 1 --rotate 1M --out json:%s",
      LIMIT, SLUICE, q(trace), q(dir .. "/r.json")))
    assert(r.code == 0, run.describe(r))
    local one = run.sh(string.format("%s%s run -r %s -q --slice 1 --out json:%s", LIMIT, SLUICE, q(trace),
      q(dir .. "/one.json")))
    assert(one.code == 0, run.describe(one))
    local want = select(2, run.slurp(dir .. "/one.json"):gsub("\n", ""))
    local lines, files, size = 0, 0, 1024 * 1024
    for name in io.popen("ls " .. q(dir)):lines() do
      if name:match("^r%.json") then
        local text = run.slurp(dir .. "/" .. name)
        files = files + 1
        lines = lines + select(2, text:gsub("\n", ""))
        assert(#text <= size + 2 * (5 * 256 * 1024 + size / 8), name .. " is " .. #text .. " bytes")
      end
    end
    assert(files >= 6, "rotated files: " .. files)
    assert.equal(want, lines)
  end)

  -- an interval passed with no line (flows still open on a quiet input):
  -- the empty file was rotated each time, PATH.1..N all empty
  it("rotate a shared file by time: a file no line reached is not rotated", function()
    local dir = run.tmpdir()
    local r = run.sh(string.format("(cat %s; sleep 3.5) | %s run -r - -q -v --workers 2 --rotate 1s --out json:%s",
      q(run.root .. "/examples/sample.pcap"), SLUICE, q(dir .. "/r.json")))
    assert(r.code == 0, run.describe(r))
    local lines = 0
    for name in io.popen("ls " .. q(dir)):lines() do
      local text = run.slurp(dir .. "/" .. name)
      assert(#text > 0, name .. " is empty\n" .. run.describe(r))
      lines = lines + select(2, text:gsub("\n", ""))
    end
    assert.equal(161, lines)
  end)

  -- a restart emptied the shared file, the newest of the last run's
  it("a second run with --rotate keeps every line of the first", function()
    local dir = run.tmpdir()
    for _ = 1, 2 do
      local r = run.sh(string.format("%s%s run -r %s -q --workers 2 --rotate 200K --out json:%s",
        LIMIT, SLUICE, q(trace), q(dir .. "/r.json")))
      assert(r.code == 0, run.describe(r))
    end
    local lines = 0
    for name in io.popen("ls " .. q(dir)):lines() do
      for _ in (run.slurp(dir .. "/" .. name)):gmatch("[^\n]+") do lines = lines + 1 end
    end
    assert.equal(2 * #reference, lines)
  end)

  -- the others ran on to the end of the input (exit 0) while the
  -- signalled worker's flows past its stop were missing, uncounted
  it("a signal to one worker stops the whole run, as one to the parent does", function()
    local dir = run.tmpdir()
    local policy = run.spit(dir .. "/slow.lua", [[
local P = { info = { name = "slow" } }
local marker, emit, n = os.getenv("SLUICE_MARKER"), nil, 0
function P.init(o, ctx) emit = ctx.emit end
function P.on_flow_end(f, reason)
  n = n + 1
  if n == 200 then io.open(marker .. "." .. os.time() .. math.random(1e9), "w"):close() end
  local t = os.clock() + 0.0005 while os.clock() < t do end
  emit { reason = reason }
end
return P
]])
    local out = dir .. "/out.json"
    -- (closed flows end at once: the trace is shorter than tcp_closed, and
    -- the 200th end must come mid-run)
    local r = run.sh(string.format("SLUICE_MARKER=%s %s%s run %s -r %s -v --workers 2 " ..
      "--idle-timeout tcp_closed=0.001 --out json:%s & p=$!; " ..
      "i=0; while [ -z \"$(ls %s 2>/dev/null | grep marker)\" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; " ..
      "kill -TERM $(%spgrep -P $(%spgrep -P $p) | sort -n | sed -n 2p); wait $p", -- timeout, sluice, worker 1
      q(dir .. "/marker"), LIMIT, SLUICE, q(policy), q(trace), q(out), q(dir), run.PLAIN, run.PLAIN))
    assert.are.equal(0, r.code, run.describe(r))
    assert(r.err:match("stopped by SIGTERM at [%d.]+%% of the input"), run.describe(r))
    local started, ended = r.err:match("\nflows (%d+) ended (%d+)")
    assert(started and started == ended, run.describe(r))
    assert(tonumber(ended) < #reference, "the run should stop before the end\n" .. run.describe(r))
    assert(r.err:match("shutdown=%d+"), run.describe(r))
    assert(not r.err:match("eof=%d+"), "no worker read on to the end:\n" .. r.err)
    assert.are.equal(tonumber(ended), #run.json_lines(out))
  end)

  it("refuses, counts and names a policy's line too long for a pipe shared by workers", function()
    local dir = run.tmpdir()
    run.spit(dir .. "/big.lua", [[
local P, emit = { info = { name = "big" } }, nil
function P.init(_, ctx) emit = ctx.emit end
function P.on_flow_end(f)
  local t = f:totable()
  t.pad = string.rep(f.sport % 2 == 0 and "a" or "b", f.sport % 3 == 0 and 5000 or 10)
  emit(t)
end
return P
]])
    local out = dir .. "/piped.json"
    local r = run.sh(string.format("{ %s%s run %s -r %s -q --workers 2; echo $? > %s; } | cat > %s",
      LIMIT, SLUICE, q(dir .. "/big.lua"), q(trace), q(dir .. "/rc"), q(out)))
    assert.are.equal("3\n", run.slurp(dir .. "/rc"), run.describe(r))
    assert(r.err:match("a line longer than 4095 bytes would mix with the other workers' lines"),
      run.describe(r))
    local kept, refused = 0, tonumber(r.err:match("failed (%d+)"))
    for line in run.slurp(out):gmatch("[^\n]+") do
      local pad = line:match('^{.*"pad":"(%a+)".*}$')
      assert(pad and (pad:match("^a+$") or pad:match("^b+$")), "a cut or mixed line: " .. line:sub(1, 200))
      kept = kept + 1
    end
    assert(refused and refused > 0, run.describe(r))
    assert.are.equal(#reference, kept + refused)
  end)

  it("counts what a full table refused, once per worker, and exits 3", function()
    local r = run.sh(string.format("%s%s run -r %s -q --workers 2 --pool-flows 100 --out json:%s",
      LIMIT, SLUICE, q(trace), q(run.tmpdir() .. "/o.json")))
    assert.are.equal(3, r.code, run.describe(r))
    assert(r.err:match("packet%(s%) dropped: the flow table was full"), run.describe(r))
  end)

  -- (SIGTERM: a shell script's background job ignores SIGINT)
  it("stops on SIGTERM: every worker ends its flows, one line says what stopped the run", function()
    local out = run.tmpdir() .. "/stopped.json"
    -- the stream stays open after the trace: the workers wait for more
    local r = run.sh(string.format("(cat %s; sleep 8) | %s run -r - --workers 2 " ..
      "--out json:%s & pid=$!; sleep 3; kill -TERM $pid; wait $pid", q(trace), SLUICE, q(out)))
    assert.are.equal(0, r.code, run.describe(r))
    assert.are.equal(1, select(2, r.err:gsub("stopped by SIGTERM", "")), run.describe(r))
    local lines, shutdown = normalized(run.slurp(out) or ""), 0
    for _, line in ipairs(lines) do
      if line:match('"end_reason":"shutdown"') then shutdown = shutdown + 1 end
    end
    assert.are.equal(#reference, #lines, "every flow, ended")
    assert(shutdown > 0, "flows still open at the signal end with reason shutdown")
  end)

  -- the workers' stderr is line-buffered (whole lines among workers):
  -- worker 0's progress line, rewritten in place without a newline,
  -- stayed in its buffer until the run ended
  it("on a terminal, worker 0's progress line shows while the run goes on, every worker's packets", function()
    local why = run.missing { "script" } -- script(1) gives sluice a terminal
    if why then
      io.stderr:write("workers_spec: pending: ", why, "\n")
      pending(why)
      return
    end
    local dir = run.tmpdir()
    local ts, snap = dir .. "/typescript", dir .. "/snapshot"
    local r = run.sh(string.format("script -qfc %s %s >/dev/null & p=$!; sleep 2.5; cat %s > %s; wait $p",
      q(string.format("(cat %s; sleep 4) | %s run -r - --workers 2 --out json:/dev/null",
        q(run.root .. "/examples/sample.pcap"), SLUICE)), q(ts), q(ts), q(snap)))
    assert.are.equal(0, r.code, run.describe(r))
    -- all the workers' packets, not worker 0's share
    assert((run.slurp(snap) or ""):find("\r1600 packets", 1, true), "no progress line of the 1600 " ..
      "packets 2.5 s into the run:\n" .. (run.slurp(ts) or ""))
    -- its flows are its own table's: said so, not shown as all of them
    assert((run.slurp(snap) or ""):find("flows active (worker 0's)", 1, true), run.slurp(snap))
  end)

  -- systemctl stop (KillMode=control-group), pkill, killall: a SIGTERM
  -- to the parent and to each worker. Each worker took the parent's
  -- forwarded one as a second signal and died: its flows lost, exit 1.
  it("a SIGTERM to the parent and every worker at once stops them cleanly, every flow written", function()
    local out = run.tmpdir() .. "/group.json"
    local r = run.sh(string.format("(cat %s; sleep 8) | %s run -r - --workers 2 " ..
      "--out json:%s & pid=$!; %s" ..
      "sleep 2; kill -TERM $pid $(%spgrep -P $pid); wait $pid", q(trace), SLUICE, q(out),
      run.await_children("pid", 2), run.PLAIN))
    assert.are.equal(0, r.code, run.describe(r))
    assert.are.equal(1, select(2, r.err:gsub("stopped by SIGTERM", "")), run.describe(r))
    assert(not r.err:find("killed by signal", 1, true), run.describe(r))
    assert.are.equal(#reference, #normalized(run.slurp(out) or ""), "every flow, ended")
  end)

  -- one pcap file is read once for all workers (sl_coop); these are its
  -- ends and the inputs it leaves to every worker reading all
  it("a file cut inside a record: the one-worker flows, error and exit status", function()
    local cut = run.tmpdir() .. "/cut.pcap"
    local size = assert(run.slurp(trace)):len()
    assert(run.sh(string.format("head -c %d %s > %s", size - 333, q(trace), q(cut))).code == 0)
    local r1, l1 = run_json("", q(cut))
    assert(r1.code ~= 0 and r1.err:match("truncated"), run.describe(r1))
    for _, n in ipairs { 2, 3 } do
      local r, lines = run_json("", q(cut), "--workers " .. n)
      assert.are.equal(r1.code, r.code, run.describe(r))
      assert.are.same(l1, lines)
      assert(r.err:match("truncated"), run.describe(r))
      assert.are.equal(counters(r1), counters(r), "the packet counters")
    end
  end)

  it("--filter on a file: the one-worker flows and filtered count", function()
    local r1, l1 = run_json("", q(trace), "--filter 'tcp or ip6'")
    assert(r1.code == 0, run.describe(r1))
    local r, lines = run_json("", q(trace), "--filter 'tcp or ip6' --workers 2")
    same_run(r1, l1, r, lines)
    assert(#lines < #reference, "the filter left flows out")
  end)

  it("a worker whose policy stops it early does not hold the others back", function()
    local r = two_workers(trace, "stop_early", [[
local P, ctx, starts = { info = { name = "stop_early" } }, nil, 0
function P.init(_, c) ctx = c end
function P.on_flow_start()
  starts = starts + 1
  if ctx.worker == 1 and starts == 100 then ctx.engine:shutdown() end
end
return P
]], "-v ")
    assert.are_not.equal(124, r.code, "the run hung:\n" .. run.describe(r))
    assert(r.code == 0, run.describe(r))
    local flows = tonumber(r.err:match("flows (%d+) ended"))
    local ref_flows = tonumber(ref_run.err:match("flows (%d+) ended"))
    assert(flows and flows > ref_flows / 2 and flows < ref_flows,
      "worker 0 counts its half to the end, worker 1 stopped early:\n" .. r.err)
  end)

  it("a worker killed by a signal: one line names it, the others stop, exit status 1", function()
    -- the shell's parent is the worker: SIGKILL, as the OOM killer sends
    local r = two_workers(trace, "killed", [[
local P, ctx, starts = { info = { name = "killed" } }, nil, 0
function P.init(_, c) ctx = c end
function P.on_flow_start()
  starts = starts + 1
  if ctx.worker == 1 and starts == 100 then os.execute("kill -KILL $PPID") end
end
return P
]])
    assert.are.equal(1, r.code, run.describe(r))
    assert(r.err:match("worker 1 was killed by signal 9 %(Killed%): the flows it had not written are lost, " ..
      "the other workers were stopped\n"), run.describe(r))
  end)

  it("a worker whose policy fails: its error is the run's, exit status 1", function()
    local r = two_workers(trace, "fails", [[
local P, ctx = { info = { name = "fails" } }, nil
function P.init(_, c) ctx = c end
function P.on_flow_start() if ctx.worker == 1 then error("worker one gives up") end end
return P
]])
    assert.are.equal(1, r.code, run.describe(r))
    -- worker 0's run succeeded: its summary once said "table: 0x..." there
    assert(r.err:match("^sluice: worker 1: policy fails: on_flow_start failed: [^\n]*worker one gives up\n$"),
      run.describe(r))
  end)

  it("a worker whose process ends early with status 0: a line says so, the others stop, exit status 1", function()
    local r = two_workers(trace, "ends", [[
local ffi = require "ffi"
ffi.cdef "void _exit(int);"
local P, ctx, n = { info = { name = "ends" } }, nil, 0
function P.init(_, c) ctx = c end
function P.on_flow_end() n = n + 1 if ctx.worker == 1 and n == 20 then ffi.C._exit(0) end end
return P
]])
    assert.are.equal(1, r.code, run.describe(r))
    -- its windows of the file read once for all held worker 0 for ever
    assert(r.err:match("worker 1 ended without finishing its share of the input: the flows it had not " ..
      "written are lost, the other workers were stopped\n"), run.describe(r))
  end)

  it("a pcapng file: every worker reads all of it", function()
    local ng = run.tmpdir() .. "/trace.pcapng"
    local c = run.sh(string.format("%seditcap -F pcapng %s %s", run.PLAIN, q(trace), q(ng)))
    if c.code ~= 0 then
      io.stderr:write("workers_spec: skipping pcapng, editcap failed: ", c.err, "\n")
      return pending("editcap (tshark's) could not write pcapng")
    end
    local r, lines = run_json("", q(ng), "--workers 2")
    same_run(ref_run, reference, r, lines)
  end)

  -- each worker said it on its copy, then the parent added that the flows
  -- it had not written were lost (it had none); a FIFO was "stdin"
  it("a stream that is no capture, or a bad filter on one: one line, the one-worker status", function()
    local dir = run.tmpdir()
    run.spit(dir .. "/garbage", string.rep("not a capture ", 400))
    for _, case in ipairs {
      { "cat " .. q(dir .. "/garbage") .. " | ", "-r -", "stdin: not a pcap/pcapng file", 1 },
      { "", "-r - < /dev/null", "stdin: ", 1 },
      { "cat " .. q(trace) .. " | ", "-r - --filter 'bogus filter'", "--filter: bad filter", 2 },
    } do
      local r1 = run.sh(string.format("%s%s run %s -q", case[1], SLUICE, case[2]))
      local r = run.sh(string.format("%s%s run %s -q --workers 3", case[1], SLUICE, case[2]))
      assert.are.equal(case[4], r1.code, run.describe(r1))
      assert.are.equal(case[4], r.code, run.describe(r))
      assert(r.err:find(case[3], 1, true), run.describe(r))
      assert.are.equal(1, select(2, r.err:gsub("sluice: ", "")), "one line:\n" .. r.err)
    end
    -- the workers that fail first get the parent's SIGTERM as worker 0
    -- exits: its handler was in the core library its exit had unloaded
    -- (SIGSEGV, and its status 2 was lost)
    for _ = 1, 10 do
      local r = run.sh(string.format("cat %s | %s run -r - --filter 'bogus filter' -q --workers 3",
        q(trace), SLUICE))
      assert.are.equal(2, r.code, run.describe(r))
    end
    os.execute("mkfifo " .. q(dir .. "/fifo"))
    local r = run.sh(string.format("(head -c 300001 %s > %s &); %s run -r %s -q --workers 2 --out json:%s",
      q(trace), q(dir .. "/fifo"), SLUICE, q(dir .. "/fifo"), q(dir .. "/out.json")))
    assert.are.equal(1, r.code, run.describe(r))
    assert(r.err:find(dir .. "/fifo: file truncated inside a record", 1, true), run.describe(r))
    assert(not r.err:find("stdin"), run.describe(r))
  end)

  it("-v names each file once, not once per worker", function()
    local sample = run.root .. "/examples/sample.pcap"
    local r = run.sh(string.format("%s%s run -r %s -r %s -v --workers 3 --out json:/dev/null", LIMIT,
      SLUICE, q(trace), q(sample)))
    assert.are.equal(0, r.code, run.describe(r))
    assert.are.equal(1, select(2, r.err:gsub("%(file 1 of 2%)", "")), run.describe(r))
    assert.are.equal(1, select(2, r.err:gsub("%(file 2 of 2%)", "")), run.describe(r))
  end)

  it("refuses two streams", function()
    local fifo = run.tmpdir() .. "/in.fifo"
    assert(os.execute("mkfifo " .. q(fifo)) == 0)
    local r = run.sh(string.format("%s run -r - -r %s --workers 2 -q", SLUICE, q(fifo)))
    assert.are.equal(2, r.code, run.describe(r))
    assert(r.err:match("only one input can be a stream"), run.describe(r))
  end)
end)

describe("--workers with fragments and packets of no flow", function()
  local path
  setup(function()
    local dir = run.tmpdir()
    path = dir .. "/frags.pcap"
    -- UDP datagrams of many flows, each cut into fragments (the later
    -- ones carry no ports), ARP (not IP), and truncated IP headers
    local script = [[
import sys
from scapy.all import Ether as E, IP, UDP, ARP, Raw, fragment, wrpcap
# addresses given: scapy would otherwise ask the network for them
def Ether(*a, **k):
    return E(*a, src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **k)
pkts = []
t = 1700000000.0
for i in range(300):
    src, dst = "10.1.%d.%d" % (i // 200, i % 200 + 1), "192.0.2.%d" % (i % 50 + 1)
    d = Ether() / IP(src=src, dst=dst, id=i + 1) / UDP(sport=1000 + i, dport=53) / Raw(b"x" * 3000)
    for f in fragment(d, fragsize=1000):
        t += 0.001
        f.time = t
        pkts.append(f)
    t += 0.001
    r = Ether() / IP(src=dst, dst=src) / UDP(sport=53, dport=1000 + i) / Raw(b"y" * 40)
    r.time = t
    pkts.append(r)
    if i % 10 == 0:
        a = Ether() / ARP(psrc=src, pdst=dst)
        t += 0.001
        a.time = t
        pkts.append(a)
        bad = E(bytes(Ether() / IP(src=src, dst=dst))[:20])
        t += 0.001
        bad.time = t
        pkts.append(bad)
wrpcap(sys.argv[1], pkts)
]]
    run.spit(dir .. "/frags.py", script)
    local r = run.sh(run.PLAIN .. "/usr/bin/python3 " .. q(dir .. "/frags.py") .. " " .. q(path))
    assert(r.code == 0, "scapy could not write the capture:\n" .. run.describe(r))
  end)

  it("gives the one-worker flows and counters with 2 and 4 workers", function()
    local r1, l1 = run_json("", q(path))
    assert(r1.code == 0, run.describe(r1))
    assert.are.equal(300, #l1, "a flow per datagram and its answer")
    for _, line in ipairs(l1) do
      assert(line:match('"pkts_fwd":4,'), "all fragments in the flow: " .. line)
    end
    assert(r1.err:match("not_ip 30 malformed 30"), run.describe(r1))
    for _, n in ipairs { 2, 4 } do
      local r, lines = run_json("", q(path), "--workers " .. n)
      same_run(r1, l1, r, lines)
    end
  end)
end)

describe("workers.run", function()
  -- In 1 to 2% of runs of eight workers, the parent's compiled wait loop
  -- gave ended(w)'s FFI call another worker's number (0 for 5): the
  -- finished worker's share looked unread and the parent stopped the run.
  it("calls ended(w) with the number of the worker that ended, in each of 40 runs", function()
    local ffi = require "ffi"
    local workers = require "sluice.workers"
    pcall(ffi.cdef, "int usleep(unsigned); int abs(int);")
    local wrong = {}
    for r = 1, 40 do
      local ok, err = workers.run(8, function(w)
        ffi.C.usleep(20000 + w * 7000 + (r % 5) * 3000) -- staggered ends
        return 0
      end, nil, function(w)
        local seen = ffi.C.abs(w)
        if seen ~= w then
          wrong[#wrong + 1] = string.format("run %d: worker %d seen as %d", r, w, seen)
          return "seen as another worker"
        end
      end)
      assert(ok, err)
    end
    assert.same({}, wrong)
  end)
end)

describe("workers.run on a stop", function()
  -- The parent's SIGINT became a SIGTERM to each worker; a worker that
  -- then exited non-zero (a stream copy stopped before its header) made
  -- the parent send the others a second SIGTERM, which ends a process the
  -- default way: the slower worker was "killed by signal 15" and the run
  -- said its flows were lost (one CI run in a few hundred).
  it("sends each worker one SIGTERM, however the first to stop exits", function()
    local ffi = require "ffi"
    local workers = require "sluice.workers"
    local signals = require "sluice.signals"
    local S = require("sluice.core").C
    pcall(ffi.cdef, "int usleep(unsigned); int kill(int, int); int getpid(void);")
    local ok, err, statuses = workers.run(2, function(w)
      while not signals.pending() do ffi.C.usleep(1000) end
      signals.taken()
      if w == 0 then return 1 end -- at once, a failure
      ffi.C.usleep(300000) -- the other one still flushing when it exits
      return 0
    end, function()
      ffi.C.usleep(50000)
      ffi.C.kill(ffi.C.getpid(), S.SL_SIGINT)
    end)
    assert.is_false(ok)
    assert.equal("worker 0 failed with exit status 1", err)
    assert.equal(0, statuses[1], "worker 1 ended by a second SIGTERM")
  end)
end)

describe("workers.run on a stop during the forks", function()
  -- A SIGINT to the parent between two forks: the workers forked after it
  -- inherited the handled state (the flag, and the handler that makes a
  -- second signal fatal), so the one SIGTERM the parent then sent them
  -- killed them the default way. Here worker 0 sends the SIGINT as soon
  -- as it runs, while the parent is still forking the other seven.
  it("leaves every worker to stop cleanly, in each of 15 runs", function()
    local ffi = require "ffi"
    local workers = require "sluice.workers"
    local signals = require "sluice.signals"
    local S = require("sluice.core").C
    pcall(ffi.cdef, "int usleep(unsigned); int kill(int, int); int getppid(void);")
    for r = 1, 15 do
      local ok, err, statuses = workers.run(8, function(w)
        if w == 0 then ffi.C.kill(ffi.C.getppid(), S.SL_SIGINT) end
        while not signals.pending() do ffi.C.usleep(1000) end
        signals.taken()
        return 0
      end)
      assert(ok, "run " .. r .. ": " .. tostring(err))
      assert.equal(S.SL_SIGINT, workers.stopped_by)
    end
  end)
end)

describe("workers.run with stop signals from several senders", function()
  local ffi = require "ffi"
  local workers = require "sluice.workers"
  local signals = require "sluice.signals"
  local S = require("sluice.core").C
  pcall(ffi.cdef, "int usleep(unsigned); int kill(int, int); int getpid(void); int getppid(void);")

  -- A service manager stops a unit with a SIGTERM to each of its
  -- processes (pkill and killall do alike): each worker took its own as
  -- the first and the one its parent then forwarded as a second, which
  -- ends a process the default way: all its flows lost.
  it("a worker that had its own SIGTERM lives through its parent's", function()
    local ok, err = workers.run(2, function(w)
      ffi.C.kill(ffi.C.getpid(), S.SL_SIGTERM)
      if w == 0 then ffi.C.kill(ffi.C.getppid(), S.SL_SIGTERM) end
      while not signals.pending() do ffi.C.usleep(1000) end
      signals.taken()
      ffi.C.usleep(300000) -- writing its flows while the parent's comes
      return 0
    end)
    assert(ok, tostring(err))
    assert.equal(S.SL_SIGTERM, workers.stopped_by)
  end)

  -- A stop the parent handled before it forked (between the run's start
  -- and the fork: opening a directory of many captures): the workers
  -- inherited the handled state, the forwarded SIGTERM killed them.
  it("a stop the parent had before the fork stops the workers cleanly", function()
    assert(signals.install())
    ffi.C.kill(ffi.C.getpid(), S.SL_SIGTERM)
    assert.equal(S.SL_SIGTERM, signals.pending())
    local ok, err = workers.run(2, function()
      while not signals.pending() do ffi.C.usleep(1000) end
      signals.taken()
      ffi.C.usleep(100000)
      return 0
    end)
    signals.restore()
    assert(ok, tostring(err))
    assert.equal(S.SL_SIGTERM, workers.stopped_by)
  end)
end)
