-- Routes: how records reach a sink. A sink is any table with write(rec)
-- (and optionally flush, close, lagged, tick, prepare, settle). write returns
--   true                        the record is taken
--   nil, err, "transient"       not now (destination busy): try again later
--   nil, err                    never (the record is dropped and counted)
--   nil, err, "counted"         never, and the sink counted the loss itself
--                               (in what settle returns)
-- A sink that buffers (a file) learns of a failed write after write() took
-- the records: its settle() returns written, lost, err: the records it took
-- that reached the destination (or wait in its buffer), those it lost, and
-- its last error (a message naming the destination), totals since it
-- opened, counting also records that never passed the route (flow captures
-- into a pcap file). The route's written and dropped_failed follow them
-- after each flush, tick and close, so written is what reached the file.
-- The first error of a route (a failed record, or what settle tells) is
-- passed to opts.on_error(name, err) once; stats.last_error keeps the last.
-- A route puts records refused as transient, and every record after them,
-- in a bounded queue, retried with backoff from the run loop. When the
-- queue is full, what happens depends on what the run reads:
--   wait  (files, stdin: a source the run can pace) the run waits for the
--         destination, so nothing is lost to a slow sink; a destination
--         that takes nothing for WAIT_GIVE_UP seconds is given up on, and
--         the route lags from then on, until it takes records again;
--   drop  (live capture, collecting: waiting would only move the loss
--         into the kernel) the route lags: new records are dropped and
--         counted, and the sink is told lagged(n) once the episode is over
--         (queue drained, or at close).
local core = require "sluice.core"
local signals = require "sluice.signals"

local monotonic = core.monotonic
local type = type

local ffi = require "ffi"

local M = { TRANSIENT = "transient", COUNTED = "counted" }

-- The options of a sink constructor (or of another call taking a table of
-- them, engine:run), each known: a misspelled one would otherwise be
-- ignored without a word. Raises at the caller of the function that
-- calls this one.
function M.check_options(who, opts, known)
  for k in pairs(opts) do
    if not known[k] then
      local names = {}
      for name in pairs(known) do names[#names + 1] = name end
      table.sort(names)
      error(who .. ": unknown option '" .. tostring(k) .. "' (known: " ..
        table.concat(names, ", ") .. ")", 3)
    end
  end
end

local DEFAULT_QUEUE = 1024
local MAX_ATTEMPTS = 8 -- tries of one record before it counts as failed
local BACKOFF_FIRST, BACKOFF_MAX = 0.01, 1.0
local WAIT_GIVE_UP = 30 -- seconds a waiting run gives a destination that takes nothing
local WAIT_STEP_MS = 1

local Route = {}
Route.__index = Route

-- A copy of a record that outlives the step (handles point into engine
-- memory reused by the next step). A sink's prepare(rec) makes its own
-- (e.g. the encoded line); packets can only be written at once.
local function default_copy(rec)
  if type(rec) ~= "cdata" then return rec end
  local kind = rec.kind
  if kind == "flow" or kind == "slice" then return rec:copy() end
  return nil
end

-- M.new(sink, { queue = n, name = s, wait = true|false, give_up = seconds,
--               on_error = fn(name, err) });
-- queue and give_up may also be fields of the sink.
function M.new(sink, opts)
  if type(sink) ~= "table" or type(sink.write) ~= "function" then
    error("a sink is a table with a write(rec) method", 3)
  end
  opts = opts or {}
  local limit = opts.queue or sink.queue or DEFAULT_QUEUE
  if type(limit) ~= "number" or limit < 0 or limit ~= math.floor(limit) then
    error("sink queue must be a whole number >= 0", 3)
  end
  -- a sink used before this route (or by an earlier run) counts from here
  local base_written, base_lost, base_err = 0, 0, nil
  if sink.settle then base_written, base_lost, base_err = sink:settle() end
  return setmetatable({
    base_written = base_written, base_lost = base_lost, base_err = base_err,
    sink = sink, name = opts.name or sink.name or tostring(sink), limit = limit,
    wait = opts.wait and limit > 0 or false, gave_up = false,
    give_up = opts.give_up or sink.give_up or WAIT_GIVE_UP,
    q = {}, qhead = 1, qtail = 0, retry_at = 0, attempts = 0, refused_at = 0, lag_n = 0,
    on_error = opts.on_error, told = false, failed_here = 0,
    stats = { written = 0, queued = 0, dropped_lag = 0, dropped_failed = 0,
      dropped_unqueueable = 0, dropped_at_close = 0, retries = 0, lag_episodes = 0,
      waits = 0, wait_seconds = 0, call_errors = 0 },
  }, Route)
end

function Route:queued()
  return self.qtail - self.qhead + 1
end

-- An error of the sink: kept, and told once.
local function note_error(self, err)
  err = tostring(err)
  self.last_error, self.stats.last_error = err, err
  if not self.told then
    self.told = true
    if self.on_error then self.on_error(self.name, err) end
  end
end

-- A record the sink did not take; counted here unless the sink counted it.
local function fail(self, err, kind)
  if kind ~= M.COUNTED then
    self.failed_here = self.failed_here + 1
    self.stats.dropped_failed = self.stats.dropped_failed + 1
  end
  note_error(self, err or "write() returned nil without an error message")
end

-- A sink method other than write (flush, close, tick): one that raises
-- is an error of the sink like one that returns nil, err.
local function call_sink(self, method, ...)
  local ok, res, err = pcall(self.sink[method], self.sink, ...)
  if not ok then
    err = method .. "() failed: " .. tostring(res)
  elseif res ~= nil or err == nil then
    return
  end
  self.stats.call_errors = self.stats.call_errors + 1
  note_error(self, err)
end

-- Writes queued records until the sink refuses one as transient; returns
-- whether any was taken. Waiting, a busy sink is not failing: no backoff.
local function drain_now(self)
  local q, sink, st, moved = self.q, self.sink, self.stats, false
  while self.qhead <= self.qtail do
    local ok, err, kind = sink:write(q[self.qhead])
    if not ok and kind == "transient" then
      st.retries = st.retries + 1
      return moved
    end
    if ok then st.written = st.written + 1 else fail(self, err, kind) end
    q[self.qhead] = nil
    self.qhead, self.attempts, moved = self.qhead + 1, 0, true
  end
  self.qhead, self.qtail = 1, 0
  return moved
end

-- Waits until the queue has room (or is empty, with all): the run is paced
-- by the destination. Returns false when the destination took nothing for
-- WAIT_GIVE_UP seconds: it is given up on (the route lags from then on).
local function wait_room(self, all)
  local st, sink = self.stats, self.sink
  local start = monotonic()
  local progress = start
  st.waits = st.waits + 1
  while self:queued() >= (all and 1 or self.limit) do
    local now = monotonic()
    if drain_now(self) then
      progress = now
    elseif now - progress >= self.give_up then
      self.gave_up = true
      break
    else
      if sink.tick then call_sink(self, "tick", now) end
      -- a stop signal: the run is alive and stops once this wait is over
      -- (the watchdog is for handlers that never return)
      if signals.pending() then signals.taken() end
      ffi.C.poll(nil, 0, WAIT_STEP_MS)
    end
  end
  st.wait_seconds = st.wait_seconds + (monotonic() - start)
  return not self.gave_up
end

-- Queues a record; true if it went in.
local function enqueue(self, rec)
  local st = self.stats
  if self.wait and not self.gave_up and self:queued() >= self.limit then wait_room(self) end
  if self:queued() >= self.limit then
    if self.lag_n == 0 then st.lag_episodes = st.lag_episodes + 1 end
    self.lag_n = self.lag_n + 1
    st.dropped_lag = st.dropped_lag + 1
    return false
  end
  local sink = self.sink
  local copy = sink.prepare and sink:prepare(rec) or default_copy(rec)
  if copy == nil then
    st.dropped_unqueueable = st.dropped_unqueueable + 1
    return false
  end
  self.qtail = self.qtail + 1
  self.q[self.qtail] = copy
  st.queued = st.queued + 1
  return true
end

local function backoff(self, now)
  if self.attempts == 0 then self.refused_at = now end
  self.attempts = self.attempts + 1
  self.stats.retries = self.stats.retries + 1
  self.retry_at = now + math.min(BACKOFF_FIRST * 2 ^ (self.attempts - 1), BACKOFF_MAX)
end

-- Sends one record; returns true when the caller should go on.
function Route:write(rec)
  if self.qtail >= self.qhead then
    enqueue(self, rec)
    return
  end
  local ok, err, kind = self.sink:write(rec)
  if ok then
    self.stats.written = self.stats.written + 1
  elseif kind == "transient" and self.limit > 0 then
    if enqueue(self, rec) then backoff(self, monotonic()) end
  else
    fail(self, err, kind)
  end
end

-- Every record of a slice batch: in one call to the sink when it can
-- (write_batch returns how many it took), else one by one.
function Route:write_batch(batch)
  local sink, taken = self.sink, 0
  if self.qtail < self.qhead and sink.write_batch and not batch.skip then
    taken = sink:write_batch(batch)
    self.stats.written = self.stats.written + taken
  end
  local recs = batch.recs
  for i = taken, batch.n - 1 do
    local rec = recs[i]
    if not (batch.skip and batch.skip[tonumber(rec.fid)]) then self:write(rec) end
  end
end

local function end_lag(self)
  if self.lag_n > 0 then
    local n = self.lag_n
    self.lag_n = 0
    if self.sink.lagged then self.sink:lagged(n) end
  end
end

-- Whether the queue's first record, refused as transient again, is given
-- up on: a waiting run gives the destination give_up seconds (an input
-- that comes slowly, stdin or a FIFO, may never fill the queue to wait
-- in wait_room), a lagging one MAX_ATTEMPTS tries. A waiting route that
-- gives up lags from then on, as wait_room's.
local function out_of_tries(self, now)
  if not self.wait or self.gave_up then return self.attempts >= MAX_ATTEMPTS end
  if now - self.refused_at < self.give_up then return false end
  self.gave_up = true
  return true
end

-- Retries queued records whose time has come; returns true while records
-- remain queued. force: do not wait for the backoff (used at close).
function Route:pump(now, force)
  local q, sink, st = self.q, self.sink, self.stats
  while self.qhead <= self.qtail do
    if not force and now < self.retry_at then return true end
    local rec = q[self.qhead]
    local ok, err, kind = sink:write(rec)
    if ok then self.gave_up = false end
    if ok or kind ~= "transient" or out_of_tries(self, now) then
      if ok then st.written = st.written + 1 else fail(self, err, kind) end
      q[self.qhead] = nil
      self.qhead = self.qhead + 1
      self.attempts = 0
    else
      backoff(self, now)
      if force then return true end
    end
  end
  self.qhead, self.qtail = 1, 0
  end_lag(self)
  return false
end

-- The sink's periodic work (sinks with a tick method).
function Route:tick(now)
  call_sink(self, "tick", now)
end

-- Closes the sink, after the last flush (which settled what came
-- before); what its last writes became is settled.
function Route:close()
  if not self.sink.close then return end
  call_sink(self, "close")
  self:settle()
end

-- The sink's own account of what it took (see settle() above).
function Route:settle()
  local sink = self.sink
  if not sink.settle then return end
  local written, lost, err = sink:settle()
  local st = self.stats
  st.written = written - self.base_written
  st.dropped_failed = self.failed_here + lost - self.base_lost
  if err and err ~= self.base_err then note_error(self, err) end
end

-- Flushes the sink; at close, what is still queued after one last try is
-- dropped and counted. A failed flush is an error of the sink: what it
-- lost, settle counts.
function Route:flush(closing)
  if closing and self.wait and not self.gave_up and self.qtail >= self.qhead then
    wait_room(self, true)
  end
  if self.qtail >= self.qhead then self:pump(monotonic(), true) end
  if self.sink.flush then call_sink(self, "flush") end
  self:settle()
  if closing then
    local left = self:queued()
    if left > 0 then
      self.stats.dropped_at_close = self.stats.dropped_at_close + left
      self.lag_n = self.lag_n + left
      self.q, self.qhead, self.qtail = {}, 1, 0
    end
    end_lag(self)
  end
end

-- Records lost so far, in all.
function Route:dropped()
  local st = self.stats
  return st.dropped_lag + st.dropped_failed + st.dropped_unqueueable + st.dropped_at_close
end

M.Route = Route
return M
