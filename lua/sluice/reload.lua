-- Hot reload: every policy of a run that was loaded from a file (an
-- instance with .file, as sluice.policy.load and the CLI make) is loaded
-- again, between two engine steps, on SIGHUP or engine:reload().
--
-- For each such policy, in load order:
--   1. load    the file is loaded again (sluice.policy.load_file: a file
--              that became a script is refused); its schema is checked
--              and the options the run was given are validated again
--              against its info.options (new defaults apply); its name
--              (info.name, default the file's base name) must not change:
--              the name is the policy's identity (-o, --state, reports);
--              a changed info.packets is compiled for the engine;
--   2. init    the new version's init(opts, ctx), with a ctx like the
--              first one's (ctx.emit goes to the same outputs);
--   3. snapshot the old instance's snapshot(), as --state would store it
--              (a string, or a table copied through JSON);
--   4. restore the new version's restore(value), when the old one gave a
--              value and the new one has restore(); otherwise the new
--              version starts fresh (it is still swapped in);
--   5. swap    the new instance takes the old one's place: the next event
--              goes to it. What init and restore emitted goes out now.
-- The four stages together may take TIME_LIMIT (10 s): the run does not
-- read meanwhile. Past it, or when a stop comes, the stage under way fails
-- (a load that loops for ever would hold the capture for good).
-- A failure at any stage (an error, a file that does not load) leaves the
-- old instance running as if nothing happened: what the new version
-- emitted is dropped, a packet filter it changed is put back, decays it
-- registered are removed. The old instance is not stopped (its stop() is
-- not called: its state lives on in the new one); on success the decays
-- it registered (engine:decay) are removed.
--
-- The flow table, tags, weights, protections, outputs and sinks are not
-- touched, and no event is lost or seen twice: the swap is between steps.
-- Modules a policy requires are not loaded again (Lua caches them), only
-- the policy file itself.
--
-- Each policy reloaded counts in engine:stats().reloads, each failure in
-- reload_failures. Outcomes go to the run's on_reload(ev), ev = { policy,
-- file, ok, stage (failed: "load", "init", "snapshot" or "restore"),
-- error (failed), carried (ok: a snapshot went over), trigger }; without
-- one, failures are written to stderr (one line each, M.report_line):
--   sluice: reload of policy NAME (FILE) failed at STAGE: WHY; the old
--   version keeps running
local ffi = require "ffi"
local jit = require "jit"
local core = require "sluice.core"
local policy = require "sluice.policy"
local signals = require "sluice.signals"
local snapshots = require "sluice.snapshots"
local dispatch = require "sluice.dispatch"

local C = core.C
local xpcall, tostring, format = xpcall, tostring, string.format
local locate = dispatch.locate

local M = {}

M.TIME_LIMIT = 10 -- seconds

-- sluice's own modules: the hook raises only in the policy's code, inside
-- the stage's pcall, never in the glue between stages
local OWN = debug.getinfo(1, "S").source:match("^(@.*/)[^/]*$")

-- Runs fn(...) with the time limit: once time is up or a stop came, a
-- count hook raises in the policy's code under way (again each time it
-- catches that). The JIT is off meanwhile: compiled loops would not call
-- the hook.
local function limited(fn, ...)
  local deadline = core.monotonic() + M.TIME_LIMIT
  local function check()
    local why
    if signals.pending() then
      why = "a stop came first"
    elseif core.monotonic() > deadline then
      why = format("did not finish within %d s", M.TIME_LIMIT)
    else
      return
    end
    local src = debug.getinfo(2, "S").source
    if OWN and src:sub(1, #OWN) == OWN then return end
    error(why, 2)
  end
  local jit_was_on = jit.status()
  jit.off()
  debug.sethook(check, "", 1000)
  local ok, ev = pcall(fn, ...)
  debug.sethook()
  if jit_was_on then jit.on() end
  if not ok then error(ev, 0) end
  return ev
end

-- The first line of an error, for one-line reports.
local function line(err)
  return (tostring(err):match("^[^\n]*"))
end

-- The packet filter policy P wants (nil: none).
local function wanted(P)
  if not P.on_packet then return nil end
  return P.info and P.info.packets
end

-- Sets filter k - 1 of the engine to expr (nil: none); true or nil, why.
local function set_filter(run, k, expr)
  local errbuf = ffi.new("char[256]")
  local rc = C.sl_engine_packet_filter(run.e, k - 1, expr, errbuf, ffi.sizeof(errbuf))
  if rc < 0 then
    return nil, "info.packets: " .. (rc == -C.SL_EINVAL and ffi.string(errbuf) or core.strerror(rc))
  end
  return true
end

-- Removes the decays registered by policy k at indices from..to of the
-- list (to: the end) or, keep_from given, those before it.
local function drop_decays(st, k, from, to)
  local decays = st.decays
  for i = math.min(to or #decays, #decays), from, -1 do
    if decays[i].k == k then table.remove(decays, i) end
  end
end

-- The new instance of policy k, loaded, checked and filtered; or nil,
-- "load", why.
local function load(run, k, old)
  local P, err = policy.load_file(old.file)
  if not P then return nil, err end
  local inst
  inst, err = policy.from_file(P, old.file, old.given)
  if not inst then return nil, err end
  if inst.name ~= old.name then
    return nil, format("its name changed from '%s' to '%s' (info.name is the policy's identity: " ..
      "options, state, reports); restart to rename it", old.name, inst.name)
  end
  if P.on_packet and k > C.SL_PACKET_FILTERS then
    return nil, "at most " .. C.SL_PACKET_FILTERS .. " policies can have on_packet"
  end
  return inst
end

-- Reloads policy k; returns the event for on_reload.
local function reload_one(run, k, trigger)
  local old = run.list[k]
  local st, out = run.st, run.outputs
  local ev = { policy = old.name, file = old.file, trigger = trigger, ok = false }
  local function failed(stage, err)
    ev.stage, ev.error = stage, line(err)
    return ev
  end
  local inst, err = load(run, k, old)
  if not inst then return failed("load", err) end
  local P = inst.P
  local old_filter, new_filter = wanted(old.P), wanted(P)
  local filter_changed = old_filter ~= new_filter
  if filter_changed then
    local ok, ferr = set_filter(run, k, new_filter)
    if not ok then
      set_filter(run, k, old_filter)
      return failed("load", ferr)
    end
  end
  local decays_before = #st.decays
  local function undo(stage, why)
    out:discard()
    drop_decays(st, k, decays_before + 1)
    if filter_changed then set_filter(run, k, old_filter) end
    return failed(stage, why)
  end
  st.current_k = k
  if P.init then
    local ok, ierr = dispatch.init(P.init, inst.opts, run:ctx(inst))
    if not ok then return undo("init", ierr) end
  end
  local value
  if old.P.snapshot then
    local ok, v = snapshots.carry(old.P)
    if not ok then return undo("snapshot", "the old version's " .. v) end
    value = v
  end
  if value ~= nil and P.restore then
    st.current_k = k
    local ok, rerr = xpcall(P.restore, locate, value)
    if not ok then return undo("restore", rerr) end
    ev.carried = true
  end
  -- what init and restore emitted: a record no sink can take fails the
  -- reload like an error in them (nothing of it went out before)
  if out.stage_n > 0 then
    local ok, cerr = pcall(out.commit, out)
    if not ok then return undo(ev.carried and "restore" or "init", "ctx.emit: " .. tostring(cerr)) end
  end
  drop_decays(st, k, 1, decays_before)
  run.list[k] = inst
  ev.ok = true
  return ev
end

-- The line that tells an outcome (without a newline); who: "worker 1: "
-- or nothing.
function M.report_line(ev, who)
  who = who or ""
  if ev.ok then
    return format("sluice: %sreloaded policy %s from %s%s", who, ev.policy, ev.file,
      ev.carried and " (state carried over)" or " (started fresh: no snapshot to restore)")
  end
  return format("sluice: %sreload of policy %s (%s) failed at %s: %s; the old version keeps " ..
    "running", who, ev.policy, ev.file, ev.stage, ev.error)
end

local function default_notify(ev)
  if not ev.ok then io.stderr:write(M.report_line(ev), "\n") end
end

-- Reloads every policy file of run (a sluice.run Run, between steps);
-- trigger ("SIGHUP", "engine:reload()") goes into each event. Returns how
-- many were reloaded and how many failed.
function M.all(run, trigger)
  local engine, notify = run.engine, run.opts.on_reload
  if notify == nil then notify = default_notify end
  local done, failures = 0, 0
  for k, inst in ipairs(run.list) do
    if inst.file then
      local ev = limited(reload_one, run, k, trigger)
      if ev.ok then done = done + 1 else failures = failures + 1 end
      if notify then notify(ev) end
    end
  end
  engine.reloads = (engine.reloads or 0) + done
  engine.reload_failures = (engine.reload_failures or 0) + failures
  if done > 0 then run.d:rebuild() end
  return done, failures
end

return M
