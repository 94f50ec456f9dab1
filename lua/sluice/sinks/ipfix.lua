-- IPFIX exporter sink (RFC 7011, biflows per RFC 5103): flow and slice
-- records are encoded by the core into messages, which a sender thread of
-- the core sends to the collector over UDP (templates refreshed
-- periodically, and again after a refused datagram) or TCP (templates once
-- per connection). Capture never waits for the network: when the sender's
-- queue is full the sink answers "transient", so its route queues, then
-- lags. A TCP collector that goes away (the sender sees its end before
-- each message) is connected to again: what the old connection did not
-- deliver goes on the new one, after the templates.
local ffi = require "ffi"
local core = require "sluice.core"
local sock = require "sluice.sock"
local policy = require "sluice.policy"
local check_options = require("sluice.sink").check_options

local C = core.C
local ENOBUFS, EAGAIN = -C.SL_ENOBUFS, -C.SL_EAGAIN -- as the core returns them
local EAFNOSUPPORT, EPIPE = -C.SL_EAFNOSUPPORT, -C.SL_EPIPE

-- Seconds between two connects to a TCP collector that is not back yet.
local RECONNECT_WAIT = 0.5
-- The sequence number in an IPFIX message header: bytes 9..12.
local SEQ_FIRST, SEQ_LAST = 9, 12

local M = {}

-- Records per second sent to a UDP collector unless told otherwise: a
-- datagram a collector has no room for is lost without a word to us.
M.UDP_RATE = 50000

local Sink = {}
Sink.__index = Sink

-- sluice.sink.ipfix{ collector = "HOST:PORT", transport = "udp" | "tcp",
--   domain = 0, template_refresh = "60s" (udp), flush_interval = "1s",
--   max_bytes = 1400 (udp) | 65535 (tcp), messages = 256 (sender queue),
--   rate = records per second (udp: M.UDP_RATE, tcp: 0 = unpaced),
--   features = "stats" (or a list of stats, splt[:N], dpi: flows that carry
--   them go out with the features templates), queue = N (the route's) }
local KNOWN = { collector = true, transport = true, domain = true, template_refresh = true,
  flush_interval = true, max_bytes = true, messages = true, rate = true, features = true,
  queue = true }
function M.new(opts)
  if type(opts) ~= "table" or type(opts.collector) ~= "string" then
    error("sluice.sink.ipfix{ collector = \"HOST:PORT\" } needs a collector", 2)
  end
  check_options("sluice.sink.ipfix", opts, KNOWN)
  local transport = opts.transport or "udp"
  if transport ~= "udp" and transport ~= "tcp" then
    error("sluice.sink.ipfix: transport is 'udp' or 'tcp'", 2)
  end
  local s, err = sock.connect(transport .. ":" .. opts.collector)
  if not s then error("sluice.sink.ipfix: " .. err, 2) end
  local refresh = policy.parse_duration(opts.template_refresh or 60)
  local flush_every = policy.parse_duration(opts.flush_interval or 1)
  if not refresh or refresh <= 0 or not flush_every then
    error("sluice.sink.ipfix: template_refresh and flush_interval are durations", 2)
  end
  local max_bytes = opts.max_bytes or (transport == "tcp" and C.SL_IPFIX_MAX_MESSAGE or C.SL_IPFIX_UDP_MESSAGE)
  if type(max_bytes) ~= "number" or max_bytes < C.SL_IPFIX_MIN_MESSAGE or max_bytes > C.SL_IPFIX_MAX_MESSAGE then
    s:close()
    error(("sluice.sink.ipfix: max_bytes must be %d..%d (a message holds one IPv6 record)")
      :format(C.SL_IPFIX_MIN_MESSAGE, C.SL_IPFIX_MAX_MESSAGE), 2)
  end
  local o = ffi.new("struct sl_ipfix_opts")
  o.domain = opts.domain or 0
  o.max_bytes = max_bytes
  local features, splt = 0, 0
  if opts.features ~= nil then
    local list = opts.features
    if type(list) == "string" then
      list = {}
      for name in opts.features:gmatch("[^,%s]+") do list[#list + 1] = name end
    end
    local ok, bits, n = pcall(require("sluice.engine").parse_features, list)
    if not ok then
      s:close()
      error("sluice.sink.ipfix: features is a list of stats, splt[:N], dpi (" ..
        tostring(bits):gsub("^[^:]*:%d+: ", ""):gsub("^sluice%.open: ", "") .. ")", 2)
    end
    features, splt = bits, n
  end
  o.splt_packets = splt
  local xp = ffi.new("struct sl_ipfix *[1]")
  local rc = C.sl_ipfix_new_features(xp, o, features)
  if rc < 0 then
    s:close()
    if rc == -C.SL_EINVAL then
      return nil, ("ipfix: max_bytes %d is too small for the features templates"):format(max_bytes)
    end
    return nil, "ipfix: " .. core.strerror(rc)
  end
  local x = ffi.gc(xp[0], C.sl_ipfix_free)
  local sp = ffi.new("struct sl_sender *[1]")
  rc = C.sl_sender_new(sp, s.fd, transport == "tcp" and 1 or 0, opts.messages or 256, o.max_bytes)
  if rc < 0 then
    s:close()
    return nil, "ipfix: " .. core.strerror(rc)
  end
  local sender = ffi.gc(sp[0], C.sl_sender_free)
  local rate = opts.rate
  if rate == nil then rate = transport == "udp" and M.UDP_RATE or 0 end
  if type(rate) ~= "number" or rate < 0 or rate >= 2^32 or rate ~= math.floor(rate) then
    error("sluice.sink.ipfix: rate is a whole number of records per second (0: unpaced)", 2)
  end
  C.sl_sender_pace(sender, rate)
  local now = core.monotonic()
  return setmetatable({
    x = x, sender = sender, sstats = C.sl_sender_stats(sender), sock = s,
    udp = transport == "udp", name = "ipfix:" .. transport .. ":" .. opts.collector,
    -- records carry delta counts, which collectors add up: a flow's totals
    -- after its slices' deltas count its packets twice (sluice.policies.flows)
    delta_counts = true,
    queue = opts.queue, refresh = refresh, flush_every = flush_every, templates_at = now,
    sent_at = now, dptr = ffi.new("const uint8_t *[1]"), accepted = 0, lost_here = 0,
    lost_here_records = 0,
    -- messages not handed to the sender yet, in order: { msg, records, templates }
    waiting = { head = 1, tail = 0 },
    -- TCP: the messages handed over on this connection and not known sent
    -- yet; again: those a broken one did not deliver, to send on the next
    inflight = { head = 1, tail = 0 }, again = { head = 1, tail = 0 },
    conn_sent = 0, conn_forgotten = 0, retry_at = 0,
    -- the sender counted those lost; they went (or go) again
    recovered = 0, recovered_records = 0,
    refused_seen = 0, -- UDP: the sender's lost messages last looked at
  }, Sink)
end

local function put(q, v)
  q.tail = q.tail + 1
  q[q.tail] = v
end

local function take(q)
  local v = q[q.head]
  q[q.head] = nil
  q.head = q.head + 1
  return v
end

local function empty(q)
  return q.head > q.tail
end

local function lose(self, records)
  self.lost_here = self.lost_here + 1
  self.lost_here_records = self.lost_here_records + records
end

-- The open message, which will never be sent: counted lost.
local function lose_open(self)
  local open = C.sl_ipfix_pending(self.x)
  if open > 0 then
    C.sl_ipfix_take(self.x, 0, self.dptr)
    lose(self, open)
  end
end

-- TCP: forgets the messages the sender has sent on this connection (it
-- sends in order).
local function forget_sent(self)
  local sent = tonumber(self.sstats.messages) - self.conn_sent
  local f = self.inflight
  while self.conn_forgotten < sent and not empty(f) do
    take(f)
    self.conn_forgotten = self.conn_forgotten + 1
  end
end

-- TCP, a broken stream: the sender dropped, counted lost, what it had not
-- sent; those messages are taken back to go on the next connection.
local function take_back(self)
  if self.udp or self.closing or self.sstats.broken == 0 then return end
  forget_sent(self)
  local f = self.inflight
  while not empty(f) do
    local m = take(f)
    self.recovered = self.recovered + 1
    self.recovered_records = self.recovered_records + m.records
    -- the next connection gets templates of its own
    if not m.templates then put(self.again, m) end
  end
end

-- The open message, closed now, as a waiting entry (nil: nothing open).
local function take_open(self)
  local nrec = C.sl_ipfix_pending(self.x)
  local len = C.sl_ipfix_take(self.x, os.time(), self.dptr)
  if len <= 0 then return nil end
  return { msg = ffi.string(self.dptr[0], len), records = nrec }
end

-- A broken TCP connection: a new one (RECONNECT_WAIT apart while the
-- collector is not back). It starts with the templates, in a message of
-- their own with the sequence number of the first message after it; then
-- what the old one did not deliver, what waited, and the open message.
local function reconnect(self, now)
  if now < self.retry_at then return end
  self.retry_at = now + RECONNECT_WAIT
  take_back(self)
  local list = self.again
  while not empty(self.waiting) do
    local m = take(self.waiting)
    if not m.templates then put(list, m) end
  end
  local open = take_open(self)
  if open then put(list, open) end
  C.sl_ipfix_want_templates(self.x)
  local t = take_open(self)
  local first = list[list.head]
  if first then
    t.msg = t.msg:sub(1, SEQ_FIRST - 1) .. first.msg:sub(SEQ_FIRST, SEQ_LAST) .. t.msg:sub(SEQ_LAST + 1)
  end
  t.templates = true
  put(self.waiting, t)
  while not empty(list) do put(self.waiting, take(list)) end
  self.sock:reconnect()
  C.sl_sender_set_fd(self.sender, self.sock.fd)
  self.conn_sent, self.conn_forgotten = tonumber(self.sstats.messages), 0
end

-- UDP: a refused datagram may have carried the templates; the next
-- message brings them again, so that a collector that starts now can read
-- it (not only after template_refresh).
local function refused_templates(self)
  local lost = tonumber(self.sstats.lost_messages)
  if lost ~= self.refused_seen then
    self.refused_seen = lost
    C.sl_ipfix_want_templates(self.x)
  end
end

-- Hands the waiting messages to the sender, in order: true when all went.
local function push_waiting(self)
  local w = self.waiting
  while not empty(w) do
    local m = w[w.head]
    local rc = C.sl_sender_push(self.sender, m.msg, #m.msg, m.records)
    -- full, or a broken stream: they wait (tick reconnects)
    if rc == EAGAIN or (rc == EPIPE and not self.udp) then return false end
    take(w)
    if rc < 0 then
      lose(self, m.records)
    elseif not self.udp then
      put(self.inflight, m)
    end
  end
  return true
end

-- Closes the open message and hands it over (it waits if the sender's
-- queue is full): true when nothing is left waiting. Nothing is taken
-- while earlier messages wait.
local function send_message(self)
  if not empty(self.waiting) and not push_waiting(self) then return false end
  local m = take_open(self)
  if not m then return true end
  put(self.waiting, m)
  self.sent_at = core.monotonic()
  if self.udp then refused_templates(self) else forget_sent(self) end
  return push_waiting(self)
end

function Sink:write(rec)
  if type(rec) ~= "cdata" then return nil, "an IPFIX sink takes flow and slice records" end
  local kind = rec.kind
  local add
  if kind == "flow" then add = C.sl_ipfix_add_flow
  elseif kind == "slice" then add = C.sl_ipfix_add_slice
  else return nil, "an IPFIX sink takes flow and slice records, not " .. tostring(kind) end
  if not empty(self.waiting) and not push_waiting(self) then
    return nil, "collector is slow or gone: the send queue is full", "transient"
  end
  local rc = add(self.x, rec)
  if rc == ENOBUFS then
    send_message(self) -- taken even if the queue is full: it waits
    rc = add(self.x, rec)
  end
  if rc == EAFNOSUPPORT then
    return nil, "ipfix: a record needs addresses; flow " .. tonumber(rec.fid) .. " has an id or string key"
  end
  if rc < 0 then return nil, "ipfix: " .. core.strerror(rc) end
  self.accepted = self.accepted + 1
  return true
end

-- A slice batch, a message at a time; returns how many were taken.
function Sink:write_batch(batch)
  local done, n = 0, batch.n
  while done < n do
    if not empty(self.waiting) and not push_waiting(self) then break end
    local rc = C.sl_ipfix_add_slices(self.x, batch.recs + done, n - done)
    if rc < 0 and rc ~= ENOBUFS then break end
    if rc > 0 then done = done + rc end
    if done < n then send_message(self) end
  end
  self.accepted = self.accepted + done
  return done
end

-- Partial messages go out after flush_interval; UDP collectors get the
-- templates again every template_refresh (and after a refusal); a broken
-- TCP stream reconnects.
function Sink:tick(now)
  if not self.udp then
    if self.sstats.broken ~= 0 then reconnect(self, now) end
    forget_sent(self)
  end
  if not empty(self.waiting) then push_waiting(self) end
  if self.udp then
    refused_templates(self)
    if now - self.templates_at >= self.refresh then
      self.templates_at = now
      C.sl_ipfix_want_templates(self.x)
    end
  end
  if empty(self.waiting) and C.sl_ipfix_pending(self.x) > 0 and now - self.sent_at >= self.flush_every then
    send_message(self)
  end
  C.sl_sender_kick(self.sender)
end

-- Records accepted, sent (with messages and bytes) and lost.
function Sink:counts()
  if self.final then return self.final end
  take_back(self) -- not lost: they go again
  local s = self.sstats
  return { accepted = self.accepted, records = tonumber(s.records), messages = tonumber(s.messages),
    bytes = tonumber(s.bytes),
    lost_messages = tonumber(s.lost_messages) + self.lost_here - self.recovered,
    lost_records = tonumber(s.lost_records) + self.lost_here_records - self.recovered_records }
end

-- For the route (see sluice.sink): the records taken that are sent or on
-- their way, those lost, and, when something was lost, the sender's last
-- error (a collector that came back and got everything is no error).
function Sink:settle()
  local c = self:counts()
  local s = self.sstats
  if s and s.last_error ~= 0 and c.lost_messages > 0 then
    self.err = "cannot send to " .. self.name:match("^ipfix:%a+:(.*)$") .. ": " ..
      core.strerror(s.last_error)
  end
  return c.accepted - c.lost_records, c.lost_records, self.err
end

-- Sends the open message and waits (up to 2 s; once a collector was
-- that slow, 0.1 s) for the queue to empty, connecting again to a TCP
-- collector that went away.
function Sink:flush()
  if not self.x then return true end
  local t = core.monotonic() + (self.stuck and 0.1 or 2)
  local done = false
  repeat
    local now = core.monotonic()
    if not self.udp and self.sstats.broken ~= 0 then reconnect(self, now) end
    if send_message(self) then
      local ms = math.max(0, math.min(50, math.floor((t - now) * 1000)))
      done = C.sl_sender_drain(self.sender, ms) == 0 and self.sstats.broken == 0
    else
      C.sl_sender_drain(self.sender, 20)
    end
    if not done and self.sstats.broken ~= 0 then
      ffi.C.poll(nil, 0, 20) -- the next connect is due later
    end
  until done or core.monotonic() >= t
  self.stuck = not done
  if not self.stuck then return true end
  local e = self.sstats.last_error
  if e ~= 0 and (self.sstats.broken ~= 0 or not empty(self.waiting)) then
    return nil, "cannot send to " .. self.name:match("^ipfix:%a+:(.*)$") .. ": " .. core.strerror(e)
  end
  return nil, "collector did not take everything in time"
end

function Sink:close()
  if not self.x then return true end
  local ok, err = self:flush()
  take_back(self)
  self.closing = true -- from here, what the sender does not send is lost
  for _, q in ipairs { self.again, self.waiting } do
    while not empty(q) do lose(self, take(q).records) end
  end
  lose_open(self)
  C.sl_sender_stop(self.sender) -- what is left is counted lost
  self:settle() -- the last error, while the sender's stats are there
  self.final = self:counts()
  C.sl_sender_free(ffi.gc(self.sender, nil))
  self.sender, self.sstats = nil, nil
  self.sock:close()
  C.sl_ipfix_free(ffi.gc(self.x, nil))
  self.x = nil
  return ok, err
end

return M
