-- The outputs of one run: a route (sluice.sink) per sink, what handlers
-- emit staged until the handler returns, and the pcap writers the core
-- writes flow captures to.
local core = require "sluice.core"
local flow = require "sluice.flow"
local json = require "sluice.json"
local packet = require "sluice.packet"
local sink_mod = require "sluice.sink"

local C = core.C
local type = type

local M = {}

local Outputs = {}
Outputs.__index = Outputs

-- The first error of each sink, on stderr as it happens (a disk that fills
-- up during a long capture is not news for the end of the run); what it
-- lost is in the report.
local function tell_error(name, err)
  io.stderr:write("sluice: sink ", name, ": ", err, "\n")
end

-- M.new(engine, { outputs = { sink, ... }, emit = fn(rec), on_lag = "wait"|"drop",
--                 on_sink_error = fn(name, err) | false })
-- Default routes get every emit without a sink; on_lag defaults to "wait"
-- for a source the run can pace (a file) and "drop" otherwise.
-- on_sink_error is told each sink's first error (default: a line on
-- stderr; false: nothing).
function M.new(engine, opts)
  local on_lag = opts.on_lag
  if on_lag == nil then on_lag = engine.live and "drop" or "wait" end
  if on_lag ~= "wait" and on_lag ~= "drop" then
    error("engine:run: on_lag is 'wait' or 'drop'", 3)
  end
  local on_error = opts.on_sink_error
  if on_error == nil then on_error = tell_error end
  if on_error ~= false and type(on_error) ~= "function" then
    error("engine:run: on_sink_error is a function or false", 3)
  end
  local self = setmetatable({ e = engine.e, linktype = C.sl_source_linktype(engine.src),
    wait = on_lag == "wait", on_error = on_error or nil, routes = {}, route_of = {},
    ticking = {}, settling = {}, defaults = {}, writer_no = {}, stage_route = {},
    stage_rec = {}, stage_n = 0, stage_at = 0, refused = 0 }, Outputs)
  for _, s in ipairs(opts.outputs or {}) do self.defaults[#self.defaults + 1] = self:route_for(s, 4) end
  if opts.emit then
    local fn = opts.emit
    self.defaults[#self.defaults + 1] = self:route_for({ name = "emit", queue = 0,
      write = function(_, rec) fn(rec) return true end }, 4)
  end
  self.DEFAULT = {}
  self.emit = function(a, b) self:stage(a, b) end -- not a tail call: levels
  return self
end

function Outputs:route_for(sink, level)
  local r = self.route_of[sink]
  if r then return r end
  if type(sink) ~= "table" or type(sink.write) ~= "function" then
    error("ctx.emit(sink, record): the sink is a table with a write(rec) method", level or 3)
  end
  if sink.attach and self.linktype >= 0 then
    local ok, err = sink:attach(self.linktype)
    if not ok then error(err, level or 3) end
  end
  local name = sink.name
  if name == nil and self.owner_name then
    local owner = self.owner_name()
    name = owner and ("of policy " .. owner .. " (no name)")
  end
  r = sink_mod.new(sink, { wait = self.wait, on_error = self.on_error, name = name })
  self.routes[#self.routes + 1], self.route_of[sink] = r, r
  if sink.tick then self.ticking[#self.ticking + 1] = r end
  if sink.settle then self.settling[#self.settling + 1] = r end
  return r
end

local function kind_of(rec)
  local t = type(rec)
  return (t == "cdata" or t == "table") and rec.kind
end

-- Why rec cannot go to route (a table no sink can encode, or a record a
-- sink's check refuses), or nil.
local function refusal(self, route, rec)
  if type(rec) == "table" and getmetatable(rec) == nil then
    local err = json.check(rec)
    if err then return err end
  end
  if route ~= self.DEFAULT then
    return route.sink.check and route.sink:check(rec)
  end
  local is_packet, taken = kind_of(rec) == "packet", false
  for _, r in ipairs(self.defaults) do
    if (r.sink.accepts_packets == true) == is_packet then
      local err = r.sink.check and r.sink:check(rec)
      if err then return err end
      taken = true
    end
  end
  -- (records with only a pcap output go nowhere, as the default job with
  -- --out pcap wants)
  if is_packet and not taken then return "no output of this run takes packets (--out pcap:PATH)" end
end

-- ctx.emit(record) or ctx.emit(sink, record): staged until the handler
-- returns. A flow handle is emitted as its record.
function Outputs:stage(a, b)
  local route, rec = self.DEFAULT, a
  if b ~= nil then route, rec = self.route_of[a] or self:route_for(a, 4), b end
  if rec == nil then error("ctx.emit: nothing to emit", 3) end
  local t = type(rec)
  if t ~= "table" and t ~= "string" and t ~= "cdata" then
    -- a bare 5 or true is no record: JSON lines are objects
    error("ctx.emit: a record is a flow, slice or packet, a slice batch, a table or a JSON " ..
      "object string, not a " .. t, 3)
  end
  if type(rec) == "cdata" then rec = packet.ev_of(flow.rec_of(rec)) end
  -- a record that cannot be taken fails the handler here, at its line,
  -- before any of its emits is delivered
  local err = refusal(self, route, rec)
  if err then
    self.refused = self.refused + 1 -- dropped with the call's emits
    error("ctx.emit: " .. err, 3)
  end
  local n = self.stage_n + 1
  self.stage_n, self.stage_route[n], self.stage_rec[n] = n, route, rec
end

-- A packet of the current step goes to a pcap sink through the core, in
-- order with the flow captures; anything else through the route.
function Outputs:write_packet(route, pkt)
  local sink = route.sink
  if sink.w ~= nil and type(sink.w) == "cdata" then
    local n = self:writer(sink)
    if n and C.sl_engine_packet_capture(self.e, pkt, n) == 0 then
      route.stats.written = route.stats.written + 1
      return
    end
  end
  route:write(pkt)
end

local function deliver(self, route, rec)
  local kind = kind_of(rec)
  if kind == "slices" then
    route:write_batch(rec)
  elseif kind == "packet" then
    self:write_packet(route, rec)
  else
    route:write(rec)
  end
end

-- The handler returned: its emits go to their routes.
function Outputs:commit()
  local defaults, stage_route, stage_rec = self.defaults, self.stage_route, self.stage_rec
  for i = 1, self.stage_n do
    self.stage_at = i
    local route, rec = stage_route[i], stage_rec[i]
    if route == self.DEFAULT then
      local packet = kind_of(rec) == "packet"
      for d = 1, #defaults do
        local r = defaults[d]
        if (r.sink.accepts_packets == true) == packet then deliver(self, r, rec) end
      end
    else
      deliver(self, route, rec)
    end
    stage_rec[i] = nil
  end
  self.stage_n, self.stage_at, self.refused = 0, 0, 0
end

-- The handler failed (with the records ctx.emit refused), or a commit
-- failed at record stage_at: the emits not delivered are dropped;
-- returns how many.
function Outputs:discard()
  local n, at, refused = self.stage_n, self.stage_at, self.refused
  for i = 1, n do self.stage_rec[i] = nil end
  self.stage_n, self.stage_at, self.refused = 0, 0, 0
  return (at > 0 and n - at + 1 or n) + refused
end

-- The engine's writer number for a pcap sink (nil = the run's default pcap
-- output), registered on first use; or nil, why not.
function Outputs:writer(sink)
  if sink == nil then
    for _, r in ipairs(self.defaults) do
      if r.sink.accepts_packets then sink = r.sink break end
    end
    if sink == nil then return nil, "no default pcap output (--out pcap:PATH)" end
  end
  local n = self.writer_no[sink]
  if n then return n end
  if type(sink) ~= "table" or type(sink.w) ~= "cdata" then
    return nil, "flow:capture needs a pcap sink (sluice.sink.pcap)"
  end
  self:route_for(sink)
  n = C.sl_engine_add_writer(self.e, sink.w)
  if n < 0 then return nil, "too many pcap sinks: " .. core.strerror(n) end
  self.writer_no[sink] = n
  return n
end

-- flow:capture(sink) for this run.
function Outputs:capture(r, sink)
  local n, err = 0, nil
  if sink ~= false then n, err = self:writer(sink) end
  if not n then return nil, err end
  local rc = C.sl_engine_flow_capture(self.e, r.slot, r.fid, n)
  if rc < 0 then return nil, "flow " .. tostring(r.fid) .. ": " .. core.strerror(rc) end
  return true
end

-- Retries queued records, lets sinks do their periodic work and hears
-- from buffering sinks what their writes became.
function Outputs:tick(now)
  for _, r in ipairs(self.routes) do
    if r.qtail >= r.qhead then r:pump(now) end
  end
  for _, r in ipairs(self.ticking) do r:tick(now) end
  for _, r in ipairs(self.settling) do r:settle() end
end

-- Flushes every route (closing: for good, after the core wrote its last
-- captures) and puts each route's counters in sinks[name].
function Outputs:flush(closing, sinks)
  if closing then C.sl_engine_detach_writers(self.e) end
  for _, r in ipairs(self.routes) do
    r:flush(closing)
    if closing then r:close() end
    -- the sink's own counters (a pcap writer's packets include flow
    -- captures, which never pass the route)
    if r.sink.counts then r.stats.counts = r.sink:counts() end
    sinks[r.name] = r.stats
  end
end

return M
