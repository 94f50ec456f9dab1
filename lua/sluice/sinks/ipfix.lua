-- IPFIX exporter sink (RFC 7011, biflows per RFC 5103): flow and slice
-- records are encoded by the core into messages, which a sender thread of
-- the core sends to the collector over UDP (templates refreshed
-- periodically, and again after a refused datagram) or TCP (templates once
-- per connection). Capture never
-- waits for the network: when the sender's queue is full the sink answers
-- "transient", so its route queues, then lags.
local ffi = require "ffi"
local core = require "sluice.core"
local sock = require "sluice.sock"
local policy = require "sluice.policy"
local check_options = require("sluice.sink").check_options

local C = core.C
local ENOBUFS, EAGAIN = -C.SL_ENOBUFS, -C.SL_EAGAIN -- as the core returns them
local EAFNOSUPPORT = -C.SL_EAFNOSUPPORT

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
    queue = opts.queue, refresh = refresh, flush_every = flush_every, templates_at = now,
    sent_at = now, dptr = ffi.new("const uint8_t *[1]"), accepted = 0, lost_here = 0,
    lost_here_records = 0,
    refused_seen = 0, -- UDP: the sender's lost messages last looked at
  }, Sink)
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

-- A broken TCP connection: a new one, which starts with the templates.
-- Messages made for the old one may lack them: they are lost, counted.
local function reconnect(self)
  if self.pending then
    lose(self, self.pending_records)
    self.pending = nil
  end
  lose_open(self)
  self.sock:reconnect()
  C.sl_sender_set_fd(self.sender, self.sock.fd)
  C.sl_ipfix_want_templates(self.x)
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

-- Hands the pending message to the sender: true when it took it.
local function push_pending(self)
  local p = self.pending
  if not p then return true end
  local rc = C.sl_sender_push(self.sender, p, #p, self.pending_records)
  if rc == EAGAIN then return false end
  self.pending = nil
  if rc < 0 then
    -- a broken stream (its templates went with it) or a failure: the
    -- message is lost, counted
    lose(self, self.pending_records)
    if not self.udp and self.sstats.broken ~= 0 then reconnect(self) end
  end
  return true
end

-- Closes the open message and hands it over (kept pending if the sender's
-- queue is full).
local function send_message(self)
  if self.pending and not push_pending(self) then return false end
  local nrec = C.sl_ipfix_pending(self.x)
  local len = C.sl_ipfix_take(self.x, os.time(), self.dptr)
  if len <= 0 then return true end
  self.pending, self.pending_records = ffi.string(self.dptr[0], len), nrec
  self.sent_at = core.monotonic()
  if self.udp then refused_templates(self) end
  return push_pending(self)
end

function Sink:write(rec)
  if type(rec) ~= "cdata" then return nil, "an IPFIX sink takes flow and slice records" end
  local kind = rec.kind
  local add
  if kind == "flow" then add = C.sl_ipfix_add_flow
  elseif kind == "slice" then add = C.sl_ipfix_add_slice
  else return nil, "an IPFIX sink takes flow and slice records, not " .. tostring(kind) end
  if self.pending and not push_pending(self) then
    return nil, "collector is slow: the send queue is full", "transient"
  end
  local rc = add(self.x, rec)
  if rc == ENOBUFS then
    send_message(self) -- taken even if the queue is full: it stays pending
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
    if self.pending and not push_pending(self) then break end
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
  if not self.udp and self.sstats.broken ~= 0 then reconnect(self) end
  if self.pending then push_pending(self) end
  if self.udp then
    refused_templates(self)
    if now - self.templates_at >= self.refresh then
      self.templates_at = now
      C.sl_ipfix_want_templates(self.x)
    end
  end
  if not self.pending and C.sl_ipfix_pending(self.x) > 0 and now - self.sent_at >= self.flush_every then
    send_message(self)
  end
  C.sl_sender_kick(self.sender)
end

-- Records accepted, sent (with messages and bytes) and lost.
function Sink:counts()
  if self.final then return self.final end
  local s = self.sstats
  return { accepted = self.accepted, records = tonumber(s.records), messages = tonumber(s.messages),
    bytes = tonumber(s.bytes), lost_messages = tonumber(s.lost_messages) + self.lost_here,
    lost_records = tonumber(s.lost_records) + self.lost_here_records }
end

-- For the route (see sluice.sink): the records taken that are sent or on
-- their way, those lost, and the sender's last error.
function Sink:settle()
  local c = self:counts()
  local s = self.sstats
  if s and s.last_error ~= 0 then
    self.err = "cannot send to " .. self.name:match("^ipfix:%a+:(.*)$") .. ": " ..
      core.strerror(s.last_error)
  end
  return c.accepted - c.lost_records, c.lost_records, self.err
end

-- Sends the open message and waits (up to 2 s; once a collector was
-- that slow, 0.1 s) for the queue to empty.
function Sink:flush()
  if not self.x then return true end
  local t = core.monotonic() + (self.stuck and 0.1 or 2)
  while not send_message(self) and core.monotonic() < t do
    C.sl_sender_drain(self.sender, 50)
  end
  local left = C.sl_sender_drain(self.sender, math.max(0, math.floor((t - core.monotonic()) * 1000)))
  self.stuck = left > 0 or self.pending ~= nil
  if self.stuck then return nil, "collector did not take everything in time" end
  return true
end

function Sink:close()
  if not self.x then return true end
  local ok, err = self:flush()
  if self.pending then lose(self, self.pending_records) self.pending = nil end
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
