-- The engine: opens a source, pulls event and slice batches from the C core
-- and dispatches them to policies. C never calls Lua; Lua pulls.
local ffi = require "ffi"
local core = require "sluice.core"
local flow = require "sluice.flow"
local batch_mod = require "sluice.batch"
local policy = require "sluice.policy"

local C = core.C
local tonumber = tonumber
local EV_START = C.SL_EVENT_FLOW_START

local M = {}

local Engine = {}
Engine.__index = Engine

local NS = 1e9
local TIMEOUT_CLASS = { tcp = C.SL_TIMEOUT_TCP, udp = C.SL_TIMEOUT_UDP,
  icmp = C.SL_TIMEOUT_ICMP, other = C.SL_TIMEOUT_OTHER }
M.TIMEOUT_CLASS = TIMEOUT_CLASS

local SUPPORTED_LINKTYPES = { [0] = true, [1] = true, [101] = true, [108] = true,
  [113] = true, [228] = true, [229] = true, [276] = true }

local END_REASONS = {}
for r = 0, C.SL_END_COUNT - 1 do END_REASONS[r] = flow.end_reason_name(r) end

local MALFORMED = {}
for r = 1, C.SL_MAL_COUNT - 1 do MALFORMED[r] = ffi.string(C.sl_malformed_name(r)) end

-- A duration option as whole nanoseconds (rounded: 1.025 * 1e9 is
-- 1024999999.99...). zero_ok: 0 is allowed (it switches the feature off).
local function duration_ns(v, what, zero_ok)
  local d, err = policy.parse_duration(v)
  if not d then error("sluice.open: " .. what .. ": " .. err, 3) end
  local ns = math.floor(d * NS + 0.5)
  if ns == 0 and not (zero_ok and d == 0) then
    error("sluice.open: " .. what .. " must be at least 1 ns" .. (zero_ok and " (or 0 for off)" or ""), 3)
  end
  return ns
end

-- sluice.open{ read = "x.pcap", slice = 10, idle_timeout = { tcp = 300 },
--              active_timeout = 1800, pool_flows = 1e6 }
function M.open(opts)
  if type(opts) ~= "table" then error("sluice.open expects a table of options", 2) end
  if type(opts.read) ~= "string" then error("sluice.open: 'read' (a pcap file) is required", 2) end
  local known = { read = true, slice = true, idle_timeout = true, active_timeout = true,
    pool_flows = true }
  for k in pairs(opts) do
    if not known[k] then error("sluice.open: unknown option '" .. tostring(k) .. "'", 2) end
  end
  local cfg = ffi.new("struct sl_config")
  if opts.slice then cfg.slice_ns = duration_ns(opts.slice, "slice", true) end
  if opts.active_timeout then
    cfg.active_timeout_ns = duration_ns(opts.active_timeout, "active_timeout")
  end
  if opts.idle_timeout then
    if type(opts.idle_timeout) ~= "table" then
      error("sluice.open: idle_timeout must be a table such as { tcp = 300, udp = 60 }", 2)
    end
    for proto, v in pairs(opts.idle_timeout) do
      local class = TIMEOUT_CLASS[proto]
      if not class then
        error("sluice.open: idle_timeout: unknown protocol '" .. tostring(proto) ..
              "' (tcp, udp, icmp, other)", 2)
      end
      cfg.idle_timeout_ns[class] = duration_ns(v, "idle_timeout." .. proto)
    end
  end
  if opts.pool_flows then
    local n = tonumber(opts.pool_flows)
    if not n or n < 1 or n >= 2^31 then error("sluice.open: pool_flows must be 1 .. 2^31", 2) end
    cfg.pool_flows = n
  end

  local ep = ffi.new("struct sl_engine *[1]")
  local rc = C.sl_engine_new(ep, cfg)
  if rc < 0 then return nil, "cannot create engine: " .. core.strerror(rc) end
  local e = ffi.gc(ep[0], C.sl_engine_free)

  local sp = ffi.new("struct sl_source *[1]")
  rc = C.sl_source_open_file(sp, opts.read)
  if rc < 0 then return nil, opts.read .. ": " .. core.strerror(rc) end
  local lt = C.sl_source_linktype(sp[0])
  if lt >= 0 and not SUPPORTED_LINKTYPES[lt] then
    C.sl_source_close(sp[0])
    return nil, string.format("%s: unsupported link type %d", opts.read, lt)
  end
  C.sl_engine_attach(e, sp[0])
  return setmetatable({ e = e, read = opts.read, out = C.sl_engine_output(e),
    cstats = C.sl_engine_stats(e), slice = opts.slice }, Engine)
end

local function live(self)
  if not self.e then error("engine is closed", 3) end
end

-- Counters as a plain table.
function Engine:stats()
  live(self)
  local s = self.cstats
  local t = {
    packets = tonumber(s.packets), bytes = tonumber(s.bytes), not_ip = tonumber(s.not_ip),
    malformed = tonumber(s.malformed), frag_unmatched = tonumber(s.frag_unmatched),
    flows_started = tonumber(s.flows_started), flows_ended = tonumber(s.flows_ended),
    flows_active = tonumber(s.flows_active), flows_refused = tonumber(s.flows_refused),
    slices_closed = tonumber(s.slices_closed), slice_records = tonumber(s.slice_records),
    malformed_by = {}, ended_by = {},
  }
  for r, name in pairs(MALFORMED) do
    local n = tonumber(s.malformed_by[r])
    if n > 0 then t.malformed_by[name] = n end
  end
  for r, name in pairs(END_REASONS) do
    local n = tonumber(s.ended_by[r])
    if n > 0 then t.ended_by[name] = n end
  end
  return t
end

-- Fraction of the input consumed (0..1).
function Engine:progress()
  live(self)
  local pos, size = ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]")
  C.sl_source_progress(C.sl_engine_source(self.e), pos, size)
  if size[0] == 0 then return 1 end
  return tonumber(pos[0]) / tonumber(size[0])
end

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

local function handlers(list, name)
  local fns = {}
  for _, inst in ipairs(list) do
    if inst.P[name] then fns[#fns + 1] = inst.P[name] end
  end
  return fns
end

-- Runs policies over the whole input. opts: emit (function(rec) for
-- ctx.emit), progress (function(engine) called about twice a second).
-- Returns true, or nil and an error; the input's own error (a truncated
-- file) is returned after every flow was dispatched.
function Engine:run(policies, options, opts)
  live(self)
  opts = opts or {}
  local list, err = instances(policies, options)
  if not list then return nil, err end
  local emit = opts.emit or function() end
  for _, inst in ipairs(list) do
    if inst.P.init then
      local ctx = { engine = self, worker = 0, emit = emit, name = inst.name }
      local ok, ierr = pcall(inst.P.init, inst.opts, ctx)
      if not ok then return nil, "failed to initialize " .. inst.name .. ": " .. tostring(ierr) end
    end
  end

  local starts, ends, slices = handlers(list, "on_flow_start"), handlers(list, "on_flow_end"),
    handlers(list, "on_slice")
  local nstart, nend, nslice = #starts, #ends, #slices
  local want_events = nstart + nend > 0
  local e, out, batch = self.e, self.out, batch_mod.new()
  local progress, monotonic = opts.progress, core.monotonic
  local next_progress = progress and monotonic() + 0.5

  local function loop()
    local steps = 0
    while true do
      local rc = C.sl_engine_step(e)
      if rc == 0 then return true end
      if rc < 0 then return nil, "engine: " .. core.strerror(rc) end
      local n = out.n_events
      if want_events and n > 0 then
        local evs = out.events
        for i = 0, n - 1 do
          local ev = evs[i]
          local f = ev.flow
          if ev.type == EV_START then
            for j = 1, nstart do starts[j](f) end
          else
            local reason = END_REASONS[f.reason_code]
            for j = 1, nend do ends[j](f, reason) end
          end
        end
      end
      if out.slice_ready ~= 0 and nslice > 0 then
        batch:set(out)
        for j = 1, nslice do slices[j](batch) end
      end
      steps = steps + 1
      if progress and steps % 64 == 0 and monotonic() >= next_progress then
        progress(self)
        next_progress = monotonic() + 0.5
      end
    end
  end

  local ok, res, lerr = xpcall(loop, debug.traceback)
  if not ok then
    -- keep only the message line: it carries the policy's file:line
    return nil, "policy error: " .. tostring(res):match("^[^\n]*")
  end
  if not res then return nil, lerr end
  for _, inst in ipairs(list) do
    if inst.P.stop then
      local sok, serr = pcall(inst.P.stop)
      if not sok then return nil, "policy " .. inst.name .. ": stop failed: " .. tostring(serr) end
    end
  end
  local serr = C.sl_engine_source_error(e)
  if serr < 0 then return nil, self.read .. ": " .. core.strerror(serr) .. " (everything before it was processed)" end
  return true
end

function Engine:close()
  if self.e then
    C.sl_engine_free(ffi.gc(self.e, nil))
    self.e, self.out, self.cstats = nil, nil, nil
  end
end

return M
