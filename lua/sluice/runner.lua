-- engine:run(): drives policies over an engine's output. Pulls event and
-- slice batches from the core and dispatches them, in load order, to every
-- policy; routes what they emit to sinks; keeps their snapshots; turns a
-- handler error into an abort (or, with on_error = "skip", a count).
local ffi = require "ffi"
local core = require "sluice.core"
local flow = require "sluice.flow"
local batch_mod = require "sluice.batch"
local policy = require "sluice.policy"
local sink_mod = require "sluice.sink"
local state_file = require "sluice.state"
require "sluice.packet"

local C = core.C
local tonumber, type, xpcall = tonumber, type, xpcall
local band, lshift = bit.band, bit.lshift
local EV_START, EV_PACKET = C.SL_EVENT_FLOW_START, C.SL_EVENT_PACKET

local M = {}

local END_REASONS = {}
for r = 0, C.SL_END_COUNT - 1 do END_REASONS[r] = flow.end_reason_name(r) end

-- Every decay whose interval is due: each flow's weight becomes
-- fn(weight, seconds since it was set).
local function run_decays(st)
  local now = st.now
  for _, d in ipairs(st.decays) do
    if not d.due then d.due = now + d.interval end
    if now >= d.due then
      d.due = now + d.interval
      for fid, w in pairs(st.weights) do
        local v = w[d.name]
        if v then
          local bumped = w[flow.WEIGHT_BUMPED]
          local nv = d.fn(v, now - (bumped[d.name] or now))
          if nv ~= v then
            w[d.name] = nv
            if nv == nil then bumped[d.name] = nil end
            flow.rescore(st, w[flow.WEIGHT_SLOT], fid, w)
          end
        end
      end
    end
  end
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

-- The handlers of one kind: functions and the index of their policy.
local function handlers(list, name)
  local fns, idx = {}, {}
  for k, inst in ipairs(list) do
    if inst.P[name] then
      fns[#fns + 1], idx[#idx + 1] = inst.P[name], k
    end
  end
  return fns, idx, #fns
end

-- Message handler: the error with where it was raised. error("x", 0) and
-- non-string errors carry no position, so it is added from the stack.
local function locate(e)
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

-- Snapshot keys: the policy's name, made one word.
local function state_key(inst, k, seen)
  local key = inst.name:gsub("%s", "_")
  if seen[key] then key = key .. "#" .. k end
  seen[key] = true
  return key
end

local ABORT = setmetatable({}, { __tostring = function() return "policy aborted" end })

function M.run(self, policies, options, opts)
  if not self.e then error("engine is closed", 2) end
  opts = opts or {}
  local list, err = instances(policies, options)
  if not list then return nil, err end
  local skip_errors = opts.on_error == "skip"
  if opts.on_error ~= nil and opts.on_error ~= "skip" and opts.on_error ~= "abort" then
    error("engine:run: on_error is 'abort' or 'skip'", 2)
  end
  local e, out = self.e, self.out
  local st = self:flow_state()
  local report = { errors = {}, skipped = 0, dropped_on_error = 0, sinks = {}, snapshots = 0 }
  self.report = report

  -- ---- sinks --------------------------------------------------------
  local routes, route_of, ticking = {}, {}, {}
  local linktype = C.sl_source_linktype(self.src)
  local function route_for(sink)
    local r = route_of[sink]
    if r then return r end
    if type(sink) ~= "table" or type(sink.write) ~= "function" then
      error("ctx.emit(sink, record): the sink is a table with a write(rec) method", 3)
    end
    if sink.attach and linktype >= 0 then
      local ok, aerr = sink:attach(linktype)
      if not ok then error(aerr, 3) end
    end
    r = sink_mod.new(sink)
    routes[#routes + 1], route_of[sink] = r, r
    if sink.tick then ticking[#ticking + 1] = sink end
    return r
  end
  local defaults = {}
  for _, s in ipairs(opts.outputs or {}) do defaults[#defaults + 1] = route_for(s) end
  if opts.emit then
    local fn = opts.emit
    defaults[#defaults + 1] = route_for { name = "emit", queue = 0,
      write = function(_, rec) fn(rec) return true end }
  end
  local ndefaults = #defaults

  -- What a handler emits is staged and handed to the sinks when it returns:
  -- the output of a handler that fails is dropped, never half-written.
  local stage_route, stage_rec, stage_n = {}, {}, 0
  local DEFAULT = {}
  local function emit(a, b)
    local route, rec = DEFAULT, a
    if b ~= nil then route, rec = route_of[a] or route_for(a), b end
    if rec == nil then error("ctx.emit: nothing to emit", 2) end
    stage_n = stage_n + 1
    stage_route[stage_n], stage_rec[stage_n] = route, rec
  end
  local function commit()
    for i = 1, stage_n do
      local route, rec = stage_route[i], stage_rec[i]
      local t = type(rec)
      local kind = (t == "cdata" or t == "table") and rec.kind
      if route == DEFAULT then
        local packet = kind == "packet"
        for d = 1, ndefaults do
          local r = defaults[d]
          if (r.sink.accepts_packets == true) == packet then
            if kind == "slices" then r:write_batch(rec) else r:write(rec) end
          end
        end
      elseif kind == "slices" then
        route:write_batch(rec)
      else
        route:write(rec)
      end
      stage_rec[i] = nil
    end
    stage_n = 0
  end

  -- flow:capture(sink): the core writes the flow's packets to the sink's
  -- pcap writer, registered with the engine on first use.
  local writer_no = {}
  local function writer_of(sink)
    if sink == nil then
      for d = 1, ndefaults do
        if defaults[d].sink.accepts_packets then sink = defaults[d].sink break end
      end
      if sink == nil then return nil, "no default pcap output (--out pcap:PATH)" end
    end
    if writer_no[sink] then return writer_no[sink] end
    if type(sink) ~= "table" or type(sink.w) ~= "cdata" then
      return nil, "flow:capture needs a pcap sink (sluice.sink.pcap)"
    end
    route_for(sink)
    local n = C.sl_engine_add_writer(e, sink.w)
    if n < 0 then return nil, "too many pcap sinks: " .. core.strerror(n) end
    writer_no[sink] = n
    return n
  end
  st.capture = function(r, sink)
    local n, werr = 0, nil
    if sink ~= false then n, werr = writer_of(sink) end
    if not n then return nil, werr end
    local rc = C.sl_engine_flow_capture(e, r.slot, r.fid, n)
    if rc < 0 then return nil, "flow " .. tostring(r.fid) .. ": " .. core.strerror(rc) end
    return true
  end
  if opts.capture_all then
    local n, werr = writer_of(nil)
    if not n then return nil, werr end
    C.sl_engine_capture_all(e, n)
  end

  -- ---- handler calls --------------------------------------------------
  local function fault(k, hname, msg)
    local inst = list[k]
    local dropped = stage_n
    for i = 1, stage_n do stage_rec[i] = nil end
    stage_n = 0
    report.dropped_on_error = report.dropped_on_error + dropped
    local text = string.format("policy %s: %s failed: %s", inst.name, hname, tostring(msg))
    local key = inst.name .. "." .. hname
    local rec = report.errors[key]
    if not rec then
      rec = { policy = inst.name, handler = hname, count = 0, first = text }
      report.errors[key] = rec
    end
    rec.count = rec.count + 1
    if not skip_errors then
      report.abort = text
      error(ABORT, 0)
    end
    report.skipped = report.skipped + 1
  end
  -- Calls handler fn of policy k; its emits go out if it returns.
  local function call(k, hname, fn, a, b, c, d)
    st.current_k = k
    local ok, res = xpcall(fn, locate, a, b, c, d)
    if ok then
      if stage_n > 0 then commit() end
      return res
    end
    fault(k, hname, res)
  end

  local function flush_all(closing)
    for _, r in ipairs(routes) do
      r:flush(closing)
      if closing and r.sink.close then r.sink:close() end
      -- the sink's own counters (a pcap writer's packets include flow
      -- captures, which never pass the route)
      if r.sink.counts then r.stats.counts = r.sink:counts() end
      report.sinks[r.name] = r.stats
    end
  end

  -- ---- before data: packet filters, init, restore ----------------------
  local errbuf = ffi.new("char[256]")
  for k, inst in ipairs(list) do
    local want = inst.P.info and inst.P.info.packets
    if inst.P.on_packet then
      if type(want) ~= "string" then
        return nil, "policy " .. inst.name .. ": on_packet needs info.packets, a pcap filter " ..
          "(\"udp port 53\"; \"ip or ip6\" for every packet)"
      end
      if k > C.SL_PACKET_FILTERS then return nil, "at most 32 policies can have on_packet" end
      local rc = C.sl_engine_packet_filter(e, k - 1, want, errbuf, 256)
      if rc < 0 then
        return nil, "policy " .. inst.name .. ": info.packets: " .. (rc == -22 and ffi.string(errbuf)
          or core.strerror(rc))
      end
    end
  end
  for k, inst in ipairs(list) do
    if inst.P.init then
      local ctx = { engine = self, worker = opts.worker or 0, emit = emit, name = inst.name,
        options = inst.opts, outputs = opts.outputs or {} }
      st.current_k = k
      local ok, ierr = xpcall(inst.P.init, locate, inst.opts, ctx)
      if not ok then
        flush_all(true)
        return nil, "failed to initialize " .. inst.name .. ": " .. tostring(ierr)
      end
      if stage_n > 0 then commit() end
    end
  end
  local keys, seen = {}, {}
  for k, inst in ipairs(list) do keys[k] = state_key(inst, k, seen) end
  if opts.state then
    local saved, lerr = state_file.load(opts.state)
    if not saved then
      flush_all(true)
      return nil, "error restoring snapshot: " .. lerr
    end
    for k, inst in ipairs(list) do
      if saved[keys[k]] ~= nil and inst.P.restore then
        local ok, rerr = xpcall(inst.P.restore, locate, saved[keys[k]])
        if not ok then
          flush_all(true)
          return nil, "error restoring snapshot: policy " .. inst.name .. ": " .. tostring(rerr)
        end
      end
    end
  end
  local function save_state()
    local entries = {}
    for k, inst in ipairs(list) do
      if inst.P.snapshot then
        local data = call(k, "snapshot", inst.P.snapshot)
        if data ~= nil then
          if type(data) ~= "string" then
            fault(k, "snapshot", "snapshot() must return a string, got " .. type(data))
          else
            entries[#entries + 1] = { name = keys[k], data = data }
          end
        end
      end
    end
    local ok, serr = state_file.save(opts.state, entries)
    if ok then report.snapshots = report.snapshots + 1 else report.state_error = serr end
    return ok, serr
  end

  -- ---- the loop -------------------------------------------------------
  local starts, start_k, nstart = handlers(list, "on_flow_start")
  local ends, end_k, nend = handlers(list, "on_flow_end")
  local slices, slice_k, nslice = handlers(list, "on_slice")
  local on_tags, tag_k, ntag = handlers(list, "on_tag")
  local on_pkts, pkt_k, npkt = handlers(list, "on_packet")
  local want_events = nstart + nend + npkt > 0 or self.collector
  local batch = batch_mod.new()
  local weights, tags, queue = st.weights, st.tags, st.queue
  -- flows a policy turned down (on_flow_start returned false): it sees
  -- nothing more of them; the other policies see them as usual
  local ignored, nignored = {}, 0
  for k = 1, #list do ignored[k] = {} end
  flow.set_current(st)

  -- Tag events and cork markers queued by a handler are dispatched right
  -- after it, before the next event (a tag set in on_tag queues another).
  local function drain()
    local i = 1
    while i <= #queue do
      local item = queue[i]
      queue[i] = false
      if item.cork then
        call(item.k or 1, "cork", item.cork)
      else
        local fid = nignored > 0 and tonumber(item.flow.fid)
        for j = 1, ntag do
          local k = tag_k[j]
          if not (fid and ignored[k][fid]) then
            call(k, "on_tag", on_tags[j], item.flow, item.name, item.value, item.old)
          end
        end
      end
      i = i + 1
    end
    for q = #queue, 1, -1 do queue[q] = nil end
  end
  local function forget(fid)
    weights[fid], tags[fid] = nil, nil
    if nignored > 0 then
      for k = 1, #list do
        if ignored[k][fid] then
          ignored[k][fid] = nil
          nignored = nignored - 1
        end
      end
    end
  end

  local monotonic = core.monotonic
  local progress = opts.progress
  local progress_every = opts.progress_interval or 0.5
  local next_progress = progress and monotonic() + progress_every
  local state_every = opts.state and (opts.state_interval or 60)
  local next_state = state_every and monotonic() + state_every
  local next_tick = monotonic()
  -- live capture stops cleanly on SIGINT/SIGTERM (checked once per step)
  local watch_signals = opts.signals
  if watch_signals == nil then watch_signals = self.live end
  if watch_signals then C.sl_signal_install() end
  local stopping = false

  local collector = self.collector
  local exporter_names = {}
  local function exporter_name(i)
    local name = exporter_names[i]
    if not name then
      local x = C.sl_collector_exporter(self.src, i)
      name = flow.addr_text(ffi.string(x.addr, x.family == 4 and 4 or 16))
      exporter_names[i] = name
    end
    return name
  end

  local function dispatch(ev)
    local f = ev.flow
    st.now = tonumber(ev.ts_ns) * 1e-9 -- handlers act at their event's time
    local fid = nignored > 0 and tonumber(f.fid)
    local t = ev.type
    if t == EV_PACKET then
      local pkt = out.packets + ev.packet
      local match = pkt.match
      for j = 1, npkt do
        local k = pkt_k[j]
        if band(match, lshift(1, k - 1)) ~= 0 and not (fid and ignored[k][fid]) then
          call(k, "on_packet", on_pkts[j], pkt, f)
        end
      end
    elseif t == EV_START then
      if collector then
        -- where the flow was reported from, as tags (no tag events: they
        -- are there from the start)
        local r = out.records[ev.packet]
        tags[tonumber(f.fid)] = { exporter = exporter_name(r.exporter), domain = r.domain }
      end
      for j = 1, nstart do
        local k = start_k[j]
        if call(k, "on_flow_start", starts[j], f) == false then
          fid = tonumber(f.fid)
          if not ignored[k][fid] then
            ignored[k][fid] = true
            nignored = nignored + 1
          end
        end
      end
    else
      local reason = END_REASONS[f.reason_code]
      for j = 1, nend do
        local k = end_k[j]
        if not (fid and ignored[k][fid]) then call(k, "on_flow_end", ends[j], f, reason) end
      end
      -- slice records of this flow still to come keep its tags
      if out.slice_ready == 0 or out.n_slices == 0 then
        forget(tonumber(f.fid))
      else
        st.ended[#st.ended + 1] = tonumber(f.fid)
      end
    end
    if queue[1] then drain() end
  end

  local function loop()
    if queue[1] then drain() end -- corks from before the run
    while true do
      local rc = C.sl_engine_step(e)
      if rc == 0 then return true end
      if rc < 0 then return nil, "engine: " .. core.strerror(rc) end
      st.now = tonumber(out.now_ns) * 1e-9
      if st.decays[1] then run_decays(st) end
      if out.n_events > 0 and (want_events or next(weights) or next(tags)) then
        -- handlers may add events (engine:update starting a flow): re-read
        -- the count, and the array, which may have moved
        local i = 0
        while i < out.n_events do
          dispatch(out.events[i])
          i = i + 1
        end
      end
      if out.slice_ready ~= 0 and nslice > 0 then
        batch:set(out)
        for j = 1, nslice do
          local k = slice_k[j]
          batch.skip = nignored > 0 and ignored[k] or nil
          call(k, "on_slice", slices[j], batch)
          if queue[1] then drain() end
        end
        batch.skip = nil
      end
      if queue[1] then drain() end
      st.now = tonumber(out.now_ns) * 1e-9
      if st.ended[1] then
        for k = #st.ended, 1, -1 do
          forget(st.ended[k])
          st.ended[k] = nil
        end
      end
      -- a clock read per step (a packet batch or a closed interval) is
      -- lost in the noise, and keeps timers right however slow the policy
      do
        local now = monotonic()
        if now >= next_tick then
          next_tick = now + 0.1
          for _, r in ipairs(routes) do
            if r.qtail >= r.qhead then r:pump(now) end
          end
          for _, s in ipairs(ticking) do s:tick(now) end
        end
        if progress and now >= next_progress then
          progress(self)
          next_progress = now + progress_every
        end
        if state_every and now >= next_state then
          save_state()
          next_state = monotonic() + state_every
        end
      end
      if watch_signals and not stopping and C.sl_signal_pending() ~= 0 then
        stopping = true
        C.sl_engine_shutdown(e)
      end
    end
  end

  local ok, res, lerr = xpcall(loop, debug.traceback)
  if ok and res then
    -- the last data is in: stop() may still emit
    ok, res = pcall(function()
      for k, inst in ipairs(list) do
        if inst.P.stop then call(k, "stop", inst.P.stop) end
      end
      return true
    end)
  end
  if not ok then
    -- an abort: nothing more from the policies, no snapshot of a state
    -- the error may have left half-changed; what was accepted is flushed
    flush_all(true)
    st.capture = nil
    if res == ABORT then return nil, report.abort end
    return nil, "policy error: " .. tostring(res):match("^[^\n]*")
  end
  local state_ok, state_err = true, nil
  if opts.state then
    local sok, r1, r2 = pcall(save_state)
    if sok then
      state_ok, state_err = r1, r2
    else
      flush_all(true)
      st.capture = nil
      return nil, r1 == ABORT and report.abort or tostring(r1)
    end
  end
  flush_all(true)
  st.capture = nil
  if not res then return nil, lerr end
  if not state_ok then return nil, "cannot save state: " .. state_err end
  local serr = C.sl_engine_source_error(e)
  if serr < 0 then
    return nil, self.input .. ": " .. core.strerror(serr) ..
      " (everything before it was processed)"
  end
  return true, report
end

return M
