-- JSON lines sink: one record per line. A record is a flow or slice handle
-- (formatted by the core), a Lua table, or an already encoded JSON object.
-- To a file (buffered; rotated by size or time without splitting a line)
-- or a stream socket (never blocks: a full socket is a transient failure,
-- so the sink's route queues and, if it stays full, lags).
local encode = require("sluice.json").encode
local policy = require "sluice.policy"
local core = require "sluice.core"
local sock = require "sluice.sock"
local ffi = require "ffi"

local type = type

local M = {}

local Sink = {}
Sink.__index = Sink

local SIZE_UNITS = { [""] = 1, k = 1024, m = 1024 ^ 2, g = 1024 ^ 3 }

-- rotate = "100M" | "1h" | { size = "100M", interval = "1h" }
local function parse_rotate(r)
  if r == nil then return nil end
  local spec = type(r) == "table" and r or nil
  if not spec then
    if type(r) ~= "string" then error("sluice.sink.json: rotate is a size (100M), a duration (1h) or a table", 3) end
    local n, unit = r:match("^%s*(%d+)%s*([kKmMgG]?)[bB]?%s*$")
    if n then spec = { size = r } else spec = { interval = r } end
  end
  local out = {}
  if spec.size ~= nil then
    local n, unit = tostring(spec.size):match("^%s*(%d+)%s*([kKmMgG]?)[bB]?%s*$")
    if not n or tonumber(n) < 1 then error("sluice.sink.json: rotate size must be like 500K, 100M, 1G", 3) end
    out.size = tonumber(n) * SIZE_UNITS[unit:lower()]
  end
  if spec.interval ~= nil then
    local d, err = policy.parse_duration(spec.interval)
    if not d or d <= 0 then error("sluice.sink.json: rotate interval: " .. (err or "must be positive"), 3) end
    out.interval = d
  end
  if not out.size and not out.interval then error("sluice.sink.json: rotate needs a size or an interval", 3) end
  return out
end

local function open_file(self, mode)
  local fh, err = io.open(self.path, mode)
  if not fh then return nil, err end
  -- line_buffered: one write per line, for files several processes share
  fh:setvbuf(self.line_buffered and "line" or "full", 65536)
  self.fh, self.size, self.opened = fh, fh:seek("end") or 0, core.monotonic()
  return true
end

-- sluice.sink.json{ path = "out.json" ("-": stdout), append = false,
--                   line_buffered = false, rotate = "100M" | "1h" | {...} }
-- sluice.sink.json{ socket = "unix:/run/x.sock" | "tcp:HOST:PORT" }
function M.new(opts)
  if type(opts) ~= "table" or (type(opts.path) ~= "string") == (type(opts.socket) ~= "string") then
    error("sluice.sink.json{ path = ... } or { socket = ... } needs one destination", 2)
  end
  local self = setmetatable({ path = opts.path, written = 0, line_buffered = opts.line_buffered,
    queue = opts.queue, name = "json:" .. (opts.path or opts.socket), rotations = 0,
    rotate = parse_rotate(opts.rotate) }, Sink)
  if opts.socket then
    local s, err = sock.connect(opts.socket)
    if not s then error("sluice.sink.json: " .. err, 2) end
    if s.addr.type ~= 1 then error("sluice.sink.json: socket must be a stream (tcp: or unix:)", 2) end
    self.sock = s
  elseif opts.path == "-" then
    if self.rotate then error("sluice.sink.json: cannot rotate stdout", 2) end
    self.fh, self.size = io.stdout, 0
    io.stdout:setvbuf(opts.line_buffered and "line" or "full", 65536)
  else
    local ok, err = open_file(self, opts.append and "a" or "w")
    if not ok then return nil, err end
  end
  return self
end

local function line_of(rec)
  if type(rec) == "string" then return rec end
  if type(rec) == "cdata" then return rec:json() end
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
  if not self.path or self.path == "-" or self.size == 0 then return true end
  self.fh:close()
  local to = rotated_name(self)
  local ok, err = os.rename(self.path, to)
  if not ok then return nil, err end
  return open_file(self, "w")
end

local function due(self, extra)
  local r = self.rotate
  if not r or self.size == 0 then return false end
  if r.size and self.size + extra > r.size then return true end
  return r.interval and core.monotonic() - self.opened >= r.interval
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

function Sink:write(rec)
  local line = line_of(rec) .. "\n"
  if self.sock then
    if self.pending then
      local ok, err = send_pending(self)
      if not ok then return nil, err, "transient" end
    end
    self.pending, self.pending_off = line, 0
    send_pending(self) -- the line is taken either way; the rest goes later
    self.written = self.written + 1
    return true
  end
  if due(self, #line) then
    local ok, err = self:rotate_now()
    if not ok then return nil, "cannot rotate " .. self.path .. ": " .. tostring(err) end
  end
  local ok, err = self.fh:write(line)
  if not ok then return nil, err end
  self.size = self.size + #line
  self.written = self.written + 1
  return true
end

-- Queued copies are the encoded line: tags and all, as at emit time.
function Sink:prepare(rec)
  return line_of(rec)
end

-- Time-based rotation also happens when no record comes.
function Sink:tick()
  if self.fh and due(self, 0) then self:rotate_now() end
  if self.pending then send_pending(self) end
end

function Sink:flush()
  if self.sock then
    if self.pending then return send_pending(self) end
    return true
  end
  if self.fh then return self.fh:flush() end
  return true
end

-- Idempotent: a run closes the sinks it used, and so may their owner.
function Sink:close()
  if self.sock then
    self:flush()
    self.sock:close()
    return true
  end
  local fh = self.fh
  if not fh then return true end
  self.fh = nil
  if fh == io.stdout then return fh:flush() end
  return fh:close()
end

return M
