-- JSON lines sink: one record per line. A record is a flow or slice handle
-- (formatted by the core straight into the sink's buffer), a packet, a Lua
-- table, or an already encoded JSON object. To a file (rotated by size or
-- time without splitting a line) or a stream socket (never blocks: a full
-- socket is a transient failure, so the sink's route queues and, if it
-- stays full, lags).
local ffi = require "ffi"
local encode = require("sluice.json").encode
local policy = require "sluice.policy"
local core = require "sluice.core"
local flow = require "sluice.flow"
local sock = require "sluice.sock"

local C = core.C
local type = type
local tagged = flow.tagged
local EFBIG = -C.SL_EFBIG -- as the core returns it

local M = {}

local Sink = {}
Sink.__index = Sink

local parse_size = policy.parse_size

-- rotate = "100M" | "1h" | { size = "100M", interval = "1h" }
local function parse_rotate(r)
  if r == nil then return nil end
  local spec = r
  if type(r) == "string" then
    spec = parse_size(r) and { size = r } or { interval = r }
  elseif type(r) ~= "table" then
    error("sluice.sink.json: rotate is a size (100M), a duration (1h) or a table", 3)
  end
  local out = {}
  if spec.size ~= nil then
    out.size = parse_size(spec.size)
    if not out.size then error("sluice.sink.json: rotate size must be like 500K, 100M, 1G", 3) end
  end
  if spec.interval ~= nil then
    local d, err = policy.parse_duration(spec.interval)
    if not d or d <= 0 then error("sluice.sink.json: rotate interval: " .. (err or "must be positive"), 3) end
    out.interval = d
  end
  if not out.size and not out.interval then error("sluice.sink.json: rotate needs a size or an interval", 3) end
  return out
end

-- sluice.sink.json{ path = "out.json" ("-": stdout), append = false,
--                   line_buffered = false, rotate = "100M" | "1h" | {...} }
-- sluice.sink.json{ socket = "unix:/run/x.sock" | "tcp:HOST:PORT" }
function M.new(opts)
  if type(opts) ~= "table" or (type(opts.path) ~= "string") == (type(opts.socket) ~= "string") then
    error("sluice.sink.json{ path = ... } or { socket = ... } needs one destination", 2)
  end
  local rotate = parse_rotate(opts.rotate)
  local self = setmetatable({ path = opts.path, written = 0, queue = opts.queue,
    name = "json:" .. (opts.path or opts.socket), rotations = 0, rotate = rotate,
    max_size = rotate and rotate.size or 0, interval = rotate and rotate.interval }, Sink)
  if opts.socket then
    local s, err = sock.connect(opts.socket)
    if not s then error("sluice.sink.json: " .. err, 2) end
    if s.addr.type ~= C.SL_SOCK_STREAM then error("sluice.sink.json: socket must be a stream (tcp: or unix:)", 2) end
    self.sock = s
    return self
  end
  if opts.path == "-" and rotate then error("sluice.sink.json: cannot rotate stdout", 2) end
  local wp = ffi.new("struct sl_json_writer *[1]")
  local rc = C.sl_json_writer_open(wp, opts.path, opts.append and 1 or 0, opts.line_buffered and 1 or 0)
  if rc < 0 then return nil, core.strerror(rc) end
  self.w = ffi.gc(wp[0], C.sl_json_writer_close)
  self.opened = core.monotonic()
  return self
end

local function line_of(rec)
  local t = type(rec)
  if t == "string" then return rec end
  if t == "cdata" then
    if rec.kind == "packet" then return encode(rec:totable()) end
    return rec:json()
  end
  return encode(rec)
end

-- The name the current file gets when it is rotated away: PATH.N, the
-- first N not taken.
local function rotated_name(self)
  local n = self.rotations
  while true do
    n = n + 1
    local name = self.path .. "." .. n
    local f = io.open(name)
    if not f then
      self.rotations = n
      return name
    end
    f:close()
  end
end

function Sink:rotate_now()
  if not self.w or self.path == "-" or C.sl_json_writer_size(self.w) == 0 then return true end
  local rc = C.sl_json_writer_flush(self.w)
  if rc < 0 then return nil, core.strerror(rc) end
  local to = rotated_name(self)
  local ok, err = os.rename(self.path, to)
  if not ok then return nil, err end
  rc = C.sl_json_writer_reopen(self.w, self.path)
  if rc < 0 then return nil, core.strerror(rc) end
  self.opened = core.monotonic()
  return true
end

-- A line waiting for the socket: at most one, partly sent maybe.
local function send_pending(self)
  local p = self.pending
  local n, err = self.sock:send(ffi.cast("const char *", p) + self.pending_off,
    #p - self.pending_off)
  if not n then return nil, err end
  self.pending_off = self.pending_off + n
  if self.pending_off < #p then return nil, "would block" end
  self.pending = nil
  return true
end

local function write_socket(self, rec)
  if self.pending then
    local ok, err = send_pending(self)
    if not ok then return nil, err, "transient" end
  end
  self.pending, self.pending_off = line_of(rec) .. "\n", 0
  send_pending(self) -- the line is taken either way; the rest goes later
  self.written = self.written + 1
  return true
end

-- One line into the writer; -EFBIG when a size rotation is due first.
local function append(self, rec)
  local w, max = self.w, self.max_size
  if type(rec) == "cdata" and not tagged(rec) then
    local kind = rec.kind
    if kind == "flow" then return C.sl_json_writer_flow(w, rec, max) end
    if kind == "slice" then return C.sl_json_writer_slice(w, rec, max) end
  end
  local line = line_of(rec)
  return C.sl_json_writer_line(w, line, #line, max)
end

function Sink:write(rec)
  if self.sock then return write_socket(self, rec) end
  if not self.w then return nil, "sink is closed" end
  if self.interval and core.monotonic() - self.opened >= self.interval then
    local ok, err = self:rotate_now()
    if not ok then return nil, "cannot rotate " .. self.path .. ": " .. tostring(err) end
  end
  local rc = append(self, rec)
  if rc == EFBIG then
    local ok, err = self:rotate_now()
    if not ok then return nil, "cannot rotate " .. self.path .. ": " .. tostring(err) end
    rc = append(self, rec)
  end
  if rc < 0 then return nil, core.strerror(rc) end
  self.written = self.written + 1
  return true
end

-- A slice batch in one call to the core; returns how many records were
-- written (0: the caller writes them one by one: tagged flows, a socket).
function Sink:write_batch(batch)
  if not self.w or flow.any_tagged(batch.engine) then return 0 end
  local done, n = 0, batch.n
  while done < n do
    local rc = C.sl_json_writer_slices(self.w, batch.recs + done, n - done, self.max_size)
    if rc == EFBIG then
      if not self:rotate_now() then break end
    elseif rc < 0 then
      break
    else
      done = done + rc
    end
  end
  self.written = self.written + done
  return done
end

-- Queued copies are the encoded line: tags and all, as at emit time.
function Sink:prepare(rec)
  return line_of(rec)
end

-- Time-based rotation also happens when no record comes.
function Sink:tick(now)
  if self.interval and self.w and now - self.opened >= self.interval then self:rotate_now() end
  if self.pending then send_pending(self) end
end

function Sink:flush()
  if self.sock then
    if self.pending then return send_pending(self) end
    return true
  end
  if not self.w then return true end
  local rc = C.sl_json_writer_flush(self.w)
  if rc < 0 then return nil, core.strerror(rc) end
  return true
end

-- Idempotent: a run closes the sinks it used, and so may their owner.
function Sink:close()
  if self.sock then
    self:flush()
    self.sock:close()
    return true
  end
  if not self.w then return true end
  local rc = C.sl_json_writer_close(ffi.gc(self.w, nil))
  self.w = nil
  if rc < 0 then return nil, core.strerror(rc) end
  return true
end

return M
