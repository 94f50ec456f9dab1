-- IPFIX exporter sink (RFC 7011, biflows per RFC 5103): flow and slice
-- records are encoded by the core into messages sent to a collector over
-- UDP (templates refreshed periodically) or TCP (templates once per
-- connection). Sends never block: a busy socket is a transient failure,
-- so the route queues, then lags.
local ffi = require "ffi"
local core = require "sluice.core"
local sock = require "sluice.sock"
local policy = require "sluice.policy"

local C = core.C
local ENOBUFS = -105

local M = {}

local Sink = {}
Sink.__index = Sink

-- sluice.sink.ipfix{ collector = "HOST:PORT", transport = "udp" | "tcp",
--   domain = 0, template_refresh = "60s" (udp), flush_interval = "1s",
--   max_bytes = 1400 (udp) | 65535 (tcp) }
function M.new(opts)
  if type(opts) ~= "table" or type(opts.collector) ~= "string" then
    error("sluice.sink.ipfix{ collector = \"HOST:PORT\" } needs a collector", 2)
  end
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
  local o = ffi.new("struct sl_ipfix_opts")
  o.domain = opts.domain or 0
  o.max_bytes = opts.max_bytes or (transport == "tcp" and 65535 or 1400)
  local xp = ffi.new("struct sl_ipfix *[1]")
  local rc = C.sl_ipfix_new(xp, o)
  if rc < 0 then return nil, "ipfix: " .. core.strerror(rc) end
  local now = core.monotonic()
  return setmetatable({
    x = ffi.gc(xp[0], C.sl_ipfix_free), sock = s, udp = transport == "udp",
    name = "ipfix:" .. transport .. ":" .. opts.collector, queue = opts.queue,
    refresh = refresh, flush_every = flush_every, templates_at = now, sent_at = now,
    connects = s.connects, dptr = ffi.new("const uint8_t *[1]"),
    sent = { records = 0, messages = 0, bytes = 0, lost_records = 0, lost_messages = 0 },
  }, Sink)
end

-- Sends what is pending, if anything: true when the socket took it all.
local function send_pending(self)
  local p = self.pending
  if not p then return true end
  if not self.udp and self.sock.connects ~= self.connects then
    -- a new connection: the message may lack its templates; start over
    self.connects = self.sock.connects
    C.sl_ipfix_want_templates(self.x)
    self:lose_pending()
    return true
  end
  local n, err, retry = self.sock:send(ffi.cast("const char *", p) + self.pending_off,
    #p - self.pending_off)
  if not n then
    if self.udp and err ~= "would block" then
      self:lose_pending() -- UDP: that datagram is gone (no collector)
      return true
    end
    self.err = err
    return false
  end
  self.pending_off = self.pending_off + n
  if self.pending_off < #p then return false end
  local c = self.sent
  c.messages, c.bytes = c.messages + 1, c.bytes + #p
  self.pending = nil
  return true
end

function Sink:lose_pending()
  local c = self.sent
  c.lost_messages = c.lost_messages + 1
  c.lost_records = c.lost_records + self.pending_records
  self.pending = nil
end

-- Closes the open message and sends it.
local function send_message(self)
  local nrec = C.sl_ipfix_pending(self.x)
  local len = C.sl_ipfix_take(self.x, os.time(), self.dptr)
  if len <= 0 then return true end
  self.pending, self.pending_off, self.pending_records = ffi.string(self.dptr[0], len), 0, nrec
  self.sent_at = core.monotonic()
  return send_pending(self)
end

function Sink:write(rec)
  if type(rec) ~= "cdata" then return nil, "an IPFIX sink takes flow and slice records" end
  local kind = rec.kind
  local add
  if kind == "flow" then add = C.sl_ipfix_add_flow
  elseif kind == "slice" then add = C.sl_ipfix_add_slice
  else return nil, "an IPFIX sink takes flow and slice records, not " .. tostring(kind) end
  if self.pending and not send_pending(self) then return nil, self.err, "transient" end
  local rc = add(self.x, rec)
  if rc == ENOBUFS then
    send_message(self) -- taken even if the socket is busy: sent later
    rc = add(self.x, rec)
  end
  if rc < 0 then return nil, "ipfix: " .. core.strerror(rc) end
  self.sent.records = self.sent.records + 1
  return true
end

-- A slice batch, a message-full at a time; returns how many were taken.
function Sink:write_batch(batch)
  local done, n = 0, batch.n
  while done < n do
    if self.pending and not send_pending(self) then break end
    local rc = C.sl_ipfix_add_slices(self.x, batch.recs + done, n - done)
    if rc < 0 and rc ~= ENOBUFS then break end
    if rc > 0 then done = done + rc end
    if done < n then send_message(self) end
  end
  self.sent.records = self.sent.records + done
  return done
end

-- Partial messages go out after flush_interval; UDP collectors get the
-- templates again every template_refresh.
function Sink:tick(now)
  if self.pending then send_pending(self) end
  if self.udp and now - self.templates_at >= self.refresh then
    self.templates_at = now
    C.sl_ipfix_want_templates(self.x)
  end
  if not self.pending and C.sl_ipfix_pending(self.x) > 0 and now - self.sent_at >= self.flush_every then
    send_message(self)
  end
end

function Sink:flush()
  if self.pending and not send_pending(self) then return nil, self.err end
  if not send_message(self) then return nil, self.err end
  return true
end

-- Records and messages sent, and lost with a datagram or a connection.
function Sink:counts()
  return self.sent
end

function Sink:close()
  if not self.x then return true end
  local ok, err = self:flush()
  if self.pending then self:lose_pending() end -- the socket never took it
  self.sock:close()
  C.sl_ipfix_free(ffi.gc(self.x, nil))
  self.x = nil
  return ok, err
end

return M
