-- Dispatch: the events and slice batches of one engine step, handed to
-- every policy in load order. Handler errors become an abort (or, with
-- skip, a count); what a handler emits goes out when it returns; tag
-- events, corks and the events handlers cause (engine:update) are
-- dispatched right after the event that caused them, before the next.
local ffi = require "ffi"
local core = require "sluice.core"
local flow = require "sluice.flow"
local flowstate = require "sluice.flowstate"
local packet = require "sluice.packet"

local C = core.C
local tonumber, type, xpcall = tonumber, type, xpcall
local band, lshift = bit.band, bit.lshift
local EV_START, EV_PACKET = C.SL_EVENT_FLOW_START, C.SL_EVENT_PACKET

local M = {}

local END_REASONS = {}
for r = 0, C.SL_END_COUNT - 1 do END_REASONS[r] = flow.end_reason_name(r) end

-- The error a handler failure raises through the run when it aborts.
M.ABORT = setmetatable({}, { __tostring = function() return "policy aborted" end })

-- Message handler: the error with where it was raised. error("x", 0) and
-- non-string errors carry no position, so it is added from the stack.
function M.locate(e)
  if type(e) == "string" and e:find("^[^\n]-:%d+: ") then return e end
  for level = 2, 6 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if info.what ~= "C" and info.currentline > 0 then
      return info.short_src .. ":" .. info.currentline .. ": " .. tostring(e)
    end
  end
  return tostring(e)
end
local locate = M.locate

-- A policy's init(options, ctx): true, or false and why. It fails by
-- raising, or the Lua way, returning nil and an error (which a run that
-- went on without the policy's database, say, would ignore).
function M.init(init, options, ctx)
  local ok, res, err = xpcall(init, locate, options, ctx)
  if ok and res == nil and err ~= nil then return false, "returned nil, " .. tostring(err) end
  return ok, res
end

-- The handlers of one kind: functions and the index of their policy.
local function handlers(list, name)
  local fns, idx = {}, {}
  for k, inst in ipairs(list) do
    if inst.P[name] then fns[#fns + 1], idx[#idx + 1] = inst.P[name], k end
  end
  return { fn = fns, k = idx, n = #fns }
end

local D = {}
D.__index = D

-- M.new(engine, list, outputs, report, skip_errors)
function M.new(engine, list, outputs, report, skip_errors)
  local self = setmetatable({ engine = engine, st = engine.st, out = engine.out, list = list,
    outputs = outputs, report = report, skip_errors = skip_errors,
    starts = handlers(list, "on_flow_start"), ends = handlers(list, "on_flow_end"),
    slices = handlers(list, "on_slice"), tags = handlers(list, "on_tag"),
    packets = handlers(list, "on_packet"),
    -- flows a policy turned down (on_flow_start returned false): it sees
    -- nothing more of them; the other policies see them as usual
    ignored = {}, nignored = 0, exporter_names = {}, exporter_gens = {},
    late = ffi.new("const struct sl_event *[1]") },
    D)
  for k = 1, #list do self.ignored[k] = {} end
  self.want_events = self.starts.n + self.ends.n + self.packets.n > 0 or engine.collector
  return self
end

-- The list changed (a policy reloaded, between steps): the handlers are
-- taken again. Flows a policy turned down stay turned down.
function D:rebuild()
  local list = self.list
  self.starts, self.ends = handlers(list, "on_flow_start"), handlers(list, "on_flow_end")
  self.slices, self.tags = handlers(list, "on_slice"), handlers(list, "on_tag")
  self.packets = handlers(list, "on_packet")
  self.want_events = self.starts.n + self.ends.n + self.packets.n > 0 or self.engine.collector
end

function D:fault(k, hname, msg)
  local report, inst = self.report, self.list[k]
  report.dropped_on_error = report.dropped_on_error + self.outputs:discard()
  local text = string.format("policy %s: %s failed: %s", inst.name, hname, tostring(msg))
  local key = inst.name .. "." .. hname
  local rec = report.errors[key]
  if not rec then
    rec = { policy = inst.name, handler = hname, count = 0, first = text }
    report.errors[key] = rec
  end
  rec.count = rec.count + 1
  if not self.skip_errors then
    report.abort = text
    error(M.ABORT, 0)
  end
  report.skipped = report.skipped + 1
end

-- Calls handler fn of policy k; its emits go out if it returns.
function D:call(k, hname, fn, a, b, c, d)
  self.st.current_k = k
  local ok, res = xpcall(fn, locate, a, b, c, d)
  if ok then
    local outputs = self.outputs
    if outputs.stage_n > 0 or outputs.refused > 0 then
      -- a record no sink can take (a function, a cycle) is the handler's
      -- error, under --on-error like any other
      local cok, cerr = pcall(outputs.commit, outputs)
      if not cok then return self:fault(k, hname, "ctx.emit: " .. tostring(cerr)) end
    end
    return res
  end
  self:fault(k, hname, res)
end

-- Tag events and cork markers queued by a handler, in order (a tag set in
-- on_tag queues another).
function D:drain()
  local queue, tags, ignored = self.st.queue, self.tags, self.ignored
  local i = 1
  while i <= #queue do
    local item = queue[i]
    queue[i] = false
    if item.cork then
      self:call(item.k or 1, "cork", item.cork)
    else
      local fid = self.nignored > 0 and tonumber(item.flow.fid)
      for j = 1, tags.n do
        local k = tags.k[j]
        if not (fid and ignored[k][fid]) then
          self:call(k, "on_tag", tags.fn[j], item.flow, item.name, item.value, item.old)
        end
      end
    end
    i = i + 1
  end
  for q = #queue, 1, -1 do queue[q] = nil end
end

-- A flow that ended: its Lua state goes.
function D:forget(fid)
  flowstate.forget(self.st, fid)
  if self.nignored > 0 then
    for k = 1, #self.list do
      if self.ignored[k][fid] then
        self.ignored[k][fid] = nil
        self.nignored = self.nignored - 1
      end
    end
  end
end

-- The address of exporter index i, cached by index and generation (an
-- evicted exporter's index goes to a new one).
function D:exporter_name(i)
  local x = C.sl_collector_exporter(self.engine.src, i)
  if x == nil then return "unknown" end
  local names, gens = self.exporter_names, self.exporter_gens
  if gens[i] ~= x.generation then
    names[i] = flow.addr_text(ffi.string(x.addr, x.family == 4 and 4 or 16))
    gens[i] = x.generation
  end
  return names[i]
end

function D:packet_event(ev, h, fid)
  local pe = self.out.packets + ev.packet
  local match, p, ignored = pe.match, self.packets, self.ignored
  local pkt = packet.handle(self.st, pe)
  for j = 1, p.n do
    local k = p.k[j]
    if band(match, lshift(1, k - 1)) ~= 0 and not (fid and ignored[k][fid]) then
      self:call(k, "on_packet", p.fn[j], pkt, h)
    end
  end
end

function D:start_event(ev, h, late)
  local st, s, ignored = self.st, self.starts, self.ignored
  if self.engine.collector and not late then
    -- where the flow was reported from, as tags (no tag events: they are
    -- there from the start)
    local r = self.out.records[ev.packet]
    st.tags[tonumber(ev.flow.fid)] = { exporter = self:exporter_name(r.exporter), domain = r.domain }
  end
  for j = 1, s.n do
    local k = s.k[j]
    if self:call(k, "on_flow_start", s.fn[j], h) == false then
      local fid = tonumber(ev.flow.fid)
      if not ignored[k][fid] then
        ignored[k][fid] = true
        self.nignored = self.nignored + 1
      end
    end
  end
end

function D:end_event(ev, h, fid)
  local e, ignored = self.ends, self.ignored
  local reason = END_REASONS[ev.flow.reason_code]
  for j = 1, e.n do
    local k = e.k[j]
    if not (fid and ignored[k][fid]) then self:call(k, "on_flow_end", e.fn[j], h, reason) end
  end
  -- The flow's last slice record (of the interval it ended in) comes when
  -- that interval closes, maybe steps later: until then the flow keeps its
  -- tags and stays turned down for the policies that turned it down.
  if self.engine.slicing then
    local st = self.st
    st.ended[#st.ended + 1] = tonumber(ev.flow.fid)
    st.ended_at[#st.ended_at + 1] = self.out.now_ns
  else
    self:forget(tonumber(ev.flow.fid))
  end
end

-- One event, then what it caused: tag events, corks, late events.
function D:event(ev, late)
  local st = self.st
  st.now = tonumber(ev.ts_ns) * 1e-9 -- handlers act at their event's time
  local h = flow.handle(st, ev.flow)
  st.current = ev.flow
  local fid = self.nignored > 0 and tonumber(ev.flow.fid)
  local t = ev.type
  if t == EV_PACKET then
    self:packet_event(ev, h, fid)
  elseif t == EV_START then
    self:start_event(ev, h, late)
  else
    self:end_event(ev, h, fid)
  end
  st.current = nil
  if st.queue[1] then self:drain() end
  if st.late then self:late_events() end
end

-- Events handlers caused (updates, and the trims they caused): each batch
-- is dispatched whole before the next is taken.
function D:late_events()
  local st, e, evp = self.st, self.engine.e, self.late
  st.late = false
  local n = C.sl_engine_late(e, evp)
  while n > 0 do
    local evs = evp[0]
    for i = 0, n - 1 do self:event(evs[i], true) end
    n = C.sl_engine_late(e, evp)
  end
end

-- A step's events.
function D:events()
  local out = self.out
  local events = out.events
  for i = 0, out.n_events - 1 do
    if self.watch_stop and C.sl_signal_pending() ~= 0 then self.watch_stop() end
    self:event(events[i])
  end
end

-- A closed interval's records, to every on_slice.
function D:slice_batch(batch)
  local s, st = self.slices, self.st
  for j = 1, s.n do
    local k = s.k[j]
    batch.skip = self.nignored > 0 and self.ignored[k] or nil
    self:call(k, "on_slice", s.fn[j], batch)
    if st.queue[1] then self:drain() end
    if st.late then self:late_events() end
  end
  batch.skip = nil
end

-- Forgets the flows that ended before before_ns (every one, for nil):
-- called as each interval closes, those had their last slice record.
function D:forget_ended(before_ns)
  local ended, at = self.st.ended, self.st.ended_at
  local kept = 0
  for i = 1, #ended do
    if before_ns == nil or at[i] < before_ns then
      self:forget(ended[i])
    else
      kept = kept + 1
      ended[kept], at[kept] = ended[i], at[i]
    end
  end
  for i = #ended, kept + 1, -1 do ended[i], at[i] = nil, nil end
end

return M
