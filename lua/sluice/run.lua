-- engine:run(policies, options, opts): one run of policies over an engine.
-- A run pulls steps from the core (C never calls Lua), dispatches each
-- step's output (sluice.dispatch), routes what policies emit
-- (sluice.outputs), keeps their snapshots (sluice.snapshots) and ends with
-- stop() and flushed outputs, or with an abort that still flushes what was
-- accepted.
local ffi = require "ffi"
local core = require "sluice.core"
local batch_mod = require "sluice.batch"
local policy = require "sluice.policy"
local outputs_mod = require "sluice.outputs"
local dispatch = require "sluice.dispatch"
local flowstate = require "sluice.flowstate"
local signals = require "sluice.signals"
local reload = require "sluice.reload"
require "sluice.packet"

local C = core.C
local monotonic = core.monotonic
local tonumber, type, xpcall = tonumber, type, xpcall
local ABORT = dispatch.ABORT
local check_options = require("sluice.sink").check_options

local M = {}

-- how often, at most, the metrics socket is looked at (seconds)
local METRICS_EVERY = 0.02

local function instances(policies, options)
  if type(policies) ~= "table" then
    error("engine:run expects a policy table or a list of policies", 3)
  end
  local list = policies[1] and policies or { policies }
  local out = {}
  for i, p in ipairs(list) do
    if type(p) ~= "table" then error("engine:run: policy " .. i .. " is not a table", 3) end
    if p.P then
      out[i] = p -- already an instance from sluice.policy.load/new
    else
      local inst, err = policy.new(p, #list == 1 and options or nil)
      if not inst then return nil, err end
      out[i] = inst
    end
  end
  return out
end

local Run = {}
Run.__index = Run

-- Packet filters of the policies with on_packet, compiled by the core.
function Run:packet_filters()
  local errbuf = ffi.new("char[256]")
  for k, inst in ipairs(self.list) do
    local want = inst.P.info and inst.P.info.packets
    if inst.P.on_packet then -- (info.packets: a string, policy.new checked)
      if k > C.SL_PACKET_FILTERS then
        return nil, "at most " .. C.SL_PACKET_FILTERS .. " policies can have on_packet"
      end
      local rc = C.sl_engine_packet_filter(self.e, k - 1, want, errbuf, ffi.sizeof(errbuf))
      if rc < 0 then
        return nil, "policy " .. inst.name .. ": info.packets: " ..
          (rc == -C.SL_EINVAL and ffi.string(errbuf) or core.strerror(rc))
      end
    end
  end
  return true
end

-- The ctx of a policy's init (at the start, and of a reloaded version).
function Run:ctx(inst)
  local opts = self.opts
  return { engine = self.engine, worker = opts.worker or 0, emit = self.outputs.emit,
    name = inst.name, options = inst.opts, outputs = opts.outputs or {} }
end

-- Before data: init every policy, then restore the snapshots.
function Run:start()
  local ok, err = self:packet_filters()
  if not ok then return nil, err end
  local st, out = self.st, self.outputs
  for k, inst in ipairs(self.list) do
    if inst.P.init then
      local ctx = self:ctx(inst)
      st.current_k = k
      local iok, ierr = dispatch.init(inst.P.init, inst.opts, ctx)
      if not iok then return nil, "failed to initialize " .. inst.name .. ": " .. tostring(ierr) end
      if out.stage_n > 0 then
        local cok, cerr = pcall(out.commit, out)
        if not cok then return nil, "failed to initialize " .. inst.name .. ": ctx.emit: " .. tostring(cerr) end
      end
    end
  end
  if self.snap then
    local rok, rerr = self.snap:restore(function(...) return self.d:call(...) end)
    if not rok then return nil, rerr end
  end
  return true
end

-- Timers read once per step: route retries, sink ticks, progress, snapshots.
function Run:timers()
  local now = monotonic()
  if now >= self.next_tick then
    self.next_tick = now + 0.1
    self.outputs:tick(now)
  end
  if self.on_file then
    local name, i, n = self.engine:current_file()
    if i and not self.files_seen[i] then
      self.files_seen[i] = true
      self.on_file(name, i, n)
    end
  end
  if self.progress and now >= self.next_progress then
    self.progress(self.engine)
    self.next_progress = now + self.progress_every
  end
  -- a metrics scrape: never waits, a bounded amount of work
  if self.metrics and now >= self.next_metrics then
    self.next_metrics = now + METRICS_EVERY
    self.metrics:serve(self.metrics_text, now)
  end
  if self.snap and now >= self.next_state then
    self:save_state()
    self.next_state = monotonic() + self.state_every
  end
end

function Run:save_state()
  local ok, err = self.snap:save(function(...) return self.d:call(...) end)
  self.report.snapshots = self.snap.saves
  if not ok then self.report.state_error = err end
  return ok, err
end

function Run:loop()
  local e, out, st, d, batch = self.e, self.out, self.st, self.d, self.batch
  if st.queue[1] then d:drain() end -- corks from before the run
  d:late_events() -- flows updated in before the run
  while true do
    local rc = C.sl_engine_step(e)
    if rc == 0 then
      d:forget_ended()
      return true
    end
    if rc < 0 then return nil, "engine: " .. core.strerror(rc) end
    st.now = tonumber(out.now_ns) * 1e-9
    if st.decays[1] then flowstate.run_decays(st) end
    if out.n_events > 0 and (d.want_events or next(st.weights) or next(st.tags)) then
      d:events()
    end
    if out.slice_ready ~= 0 then
      if d.slices.n > 0 then d:slice_batch(batch:batch(out)) end
      if st.ended[1] then d:forget_ended(out.slice_end_ns) end
    end
    if st.queue[1] then d:drain() end
    if st.late then d:late_events() end
    st.now = tonumber(out.now_ns) * 1e-9
    self:timers()
    if self.watch_signals and not self.stopping then
      if signals.pending() then
        self:take_stop()
      elseif signals.take_reload() then
        self.engine.reload_wanted = self.engine.reload_wanted or "SIGHUP"
      end
    end
    -- between steps: every event of the last one went to the old versions
    if self.engine.reload_wanted then self:reload() end
  end
end

-- A SIGINT/SIGTERM taken: the flows end (reason shutdown) from the next
-- step on, and the watchdog is off (the loop answered).
function Run:take_stop()
  signals.taken()
  self.stopping = true
  self.report.stopped_by = signals.pending()
  self.d.watch_stop = nil
  C.sl_engine_shutdown(self.e)
end

-- SIGHUP or engine:reload(): every policy file loaded again
-- (sluice.reload); not once the run is stopping.
function Run:reload()
  local trigger = self.engine.reload_wanted
  self.engine.reload_wanted = nil
  if self.stopping then return end
  local done, failures = reload.all(self, trigger)
  self.report.reloads = (self.report.reloads or 0) + done
  self.report.reload_failures = (self.report.reload_failures or 0) + failures
end

-- After the last data: every stop(), in load order; they may still emit.
function Run:stop_policies()
  for k, inst in ipairs(self.list) do
    if inst.P.stop then self.d:call(k, "stop", inst.P.stop) end
  end
  return true
end

-- Outputs flushed and closed; no more captures.
function Run:close_outputs()
  self.outputs:flush(true, self.report.sinks)
  self.report.flows_refused = tonumber(self.engine.cstats.flows_refused)
  self.report.pool_flows = self.engine.pool_flows
  self.st.capture, self.st.current = nil, nil
end

function Run:finish(ok, res, lerr)
  if ok and res then ok, res = pcall(self.stop_policies, self) end
  if not ok then
    -- an abort: nothing more from the policies, no snapshot of a state
    -- the error may have left half-changed; what was accepted is flushed
    self:close_outputs()
    if res == ABORT then return nil, self.report.abort end
    return nil, "policy error: " .. tostring(res):match("^[^\n]*")
  end
  local state_ok, state_err = true, nil
  if self.snap then
    local sok, r1, r2 = pcall(self.save_state, self)
    if not sok then
      self:close_outputs()
      return nil, r1 == ABORT and self.report.abort or tostring(r1)
    end
    state_ok, state_err = r1, r2
  end
  self:close_outputs()
  if not res then return nil, lerr end
  if not state_ok then return nil, "cannot save state: " .. state_err end
  local serr = C.sl_engine_source_error(self.e)
  if serr < 0 then
    return nil, self.engine:error_input() .. ": " .. core.strerror(serr) ..
      " (everything before it was processed)"
  end
  return true, self.report
end

-- opts: outputs, emit, on_error = "abort"|"skip", on_lag = "wait"|"drop",
-- on_sink_error = fn(name, err) | false (default: each sink's first error
-- on stderr), worker, progress = fn(engine), progress_interval, state,
-- state_interval, signals, capture_all, on_file = fn(name, i, n) (several
-- captures: called once per file, when its packets are first seen),
-- on_reload = fn(ev) | false (each policy reloaded or not, sluice.reload;
-- default: failures on stderr). With signals (the default for live
-- capture and collectors), SIGHUP reloads the policy files, as
-- engine:reload() does. metrics = "ADDR:PORT" ([ADDR]:PORT for IPv6):
-- Prometheus text format on http://ADDR:PORT/metrics while the run lasts
-- (sluice.metrics; opened before data, nil, err when it cannot listen,
-- closed at the end), or a server from sluice.metrics.listen, which the
-- caller closes.
local RUN_OPTIONS = { outputs = true, emit = true, on_error = true, on_lag = true,
  on_sink_error = true, worker = true, progress = true, progress_interval = true, state = true,
  state_interval = true, signals = true, capture_all = true, on_file = true, on_reload = true,
  metrics = true }

function M.run(engine, policies, options, opts)
  if not engine.e then error("engine is closed", 2) end
  opts = opts or {}
  if type(opts) ~= "table" then error("engine:run: options must be a table", 2) end
  check_options("engine:run", opts, RUN_OPTIONS) -- a misspelt on_eror = "skip" ran with the default
  if opts.outputs ~= nil and type(opts.outputs) ~= "table" then
    error("engine:run: outputs must be a list of sinks", 2)
  end
  if opts.on_error ~= nil and opts.on_error ~= "skip" and opts.on_error ~= "abort" then
    error("engine:run: on_error is 'abort' or 'skip'", 2)
  end
  local list, err = instances(policies, options)
  if not list then return nil, err end
  local report = { errors = {}, skipped = 0, dropped_on_error = 0, sinks = {}, snapshots = 0 }
  engine.report = report
  local st = engine.st
  local outputs = outputs_mod.new(engine, opts)
  -- a policy's sink without a name is named after the policy in reports
  outputs.owner_name = function()
    local inst = list[st.current_k]
    return inst and inst.name
  end
  local self = setmetatable({ engine = engine, e = engine.e, out = engine.out, st = st, list = list,
    opts = opts, report = report, outputs = outputs, batch = batch_mod.new(st.id),
    d = dispatch.new(engine, list, outputs, report, opts.on_error == "skip"),
    progress = opts.progress, progress_every = opts.progress_interval or 0.5,
    on_file = engine.finfo and opts.on_file, files_seen = {},
    state_every = opts.state_interval or 60, next_tick = monotonic(), stopping = false }, Run)
  self.next_progress = monotonic() + self.progress_every
  self.next_state = monotonic() + self.state_every
  st.capture = function(r, sink) return outputs:capture(r, sink) end
  if opts.capture_all then
    local n, werr = outputs:writer(nil)
    if not n then return nil, werr end
    C.sl_engine_capture_all(engine.e, n)
  end
  if opts.state then
    local snap, serr = require("sluice.snapshots").new(list, opts.state)
    if not snap then return nil, serr end
    self.snap = snap
  end
  if opts.metrics ~= nil then
    local srv, merr = opts.metrics, nil
    if type(srv) == "string" then
      srv, merr = require("sluice.metrics").listen(srv)
      if not srv then return nil, "metrics: " .. merr end
      self.own_metrics = true
    elseif type(srv) ~= "table" or type(srv.serve) ~= "function" then
      error("engine:run: metrics is \"ADDR:PORT\" or a server from sluice.metrics.listen", 2)
    end
    self.metrics, self.next_metrics = srv, 0
    self.metrics_text = function() return engine:metrics_text() end
  end
  local sok, started, serr = pcall(self.start, self)
  if not sok or not started then
    self:close_outputs()
    self:close_metrics()
    if not sok then return nil, started == ABORT and report.abort or tostring(started) end
    return nil, serr
  end
  engine.running = self
  local ok, res = self:run_loop()
  engine.running, engine.reload_wanted = nil, nil
  self:close_metrics()
  return ok, res
end

-- The last answers (the final values) to scrapes under way, then the
-- socket closed if the run opened it.
function Run:close_metrics()
  local srv = self.metrics
  if not srv then return end
  self.engine.running = nil
  pcall(srv.serve, srv, self.metrics_text)
  if self.own_metrics then srv:close() end
end

function Run:run_loop()
  local opts = self.opts
  -- live capture (and, with opts.signals, any run) stops cleanly on
  -- SIGINT/SIGTERM: checked once per step, every active flow ends with
  -- reason shutdown
  self.watch_signals = opts.signals
  if self.watch_signals == nil then self.watch_signals = self.engine.live end
  if not self.watch_signals then return self:finish(xpcall(self.loop, debug.traceback, self)) end
  signals.install()
  -- also taken between the events of a step: ending thousands of flows at
  -- the end of the input, slow handlers that each return are no handler
  -- that hangs (the watchdog's)
  self.d.watch_stop = function() self:take_stop() end
  local ok, res = self:finish(xpcall(self.loop, debug.traceback, self))
  signals.restore()
  return ok, res
end

return M
