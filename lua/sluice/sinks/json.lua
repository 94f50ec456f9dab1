-- JSON lines sink: one record per line. A record is a flow or slice handle
-- (formatted by the core straight into the sink's buffer), a packet, a Lua
-- table, or an already encoded JSON object (a string of one line from {
-- to }, else an error). To a file (rotated by size or
-- time without splitting a line) or a stream socket (never blocks: a full
-- socket is a transient failure, so the sink's route queues and, if it
-- stays full, lags).
--
-- Write errors on a file (a full disk, the file size limit, /dev/full):
-- the core's writer takes each line and either writes it or counts it lost
-- (the file is cut back to its last whole line); settle() gives the route
-- those counts and the error, so lost lines are failed drops, not written.
-- Later lines are tried again: a disk that frees up gets them. Rotation
-- moves a file away only once a line has reached it, so a full disk leaves
-- no empty rotated files; a file the sink rotated into and could not write
-- a line to is removed at close. A rotation that fails (the rename, or the
-- new file) loses nothing: the sink goes on in its current file, counts it
-- in rotation_errors, and tries again a second later.
local ffi = require "ffi"
local encode = require("sluice.json").encode
local policy = require "sluice.policy"
local core = require "sluice.core"
local flow = require "sluice.flow"
local sock = require "sluice.sock"
local check_options = require("sluice.sink").check_options

local C = core.C
local type = type
local tagged = flow.tagged
local EFBIG, EMSGSIZE = -C.SL_EFBIG, -C.SL_EMSGSIZE -- as the core returns them
local PIPE_LINE_MAX = 4095 -- PIPE_BUF with the newline
local ROTATE_RETRY = 1 -- seconds before a failed rotation is tried again
local SHARED_CHUNK = 256 -- slice records between looks at a shared file's size
local FLUSH_INTERVAL = 1 -- seconds between flushes of a run that goes on

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
--                   line_buffered = false, rotate = "100M" | "1h" | {...},
--                   shared = false, rotate_follow = false }
-- shared: several processes write the file (workers): no line is ever
-- split between writes (buffered writes to a regular file, a write per
-- line to a pipe; a line a pipe cannot take whole is refused). Each
-- looks at the size of the file (every process's lines counted, at each
-- tick and as its lines grow), the first that finds it due rotates it,
-- the others go on in the fresh file once they see it (rotate_follow:
-- this process never rotates, it only follows).
-- sluice.sink.json{ socket = "unix:/run/x.sock" | "tcp:HOST:PORT" }
-- (queue = N: the route's queue, as for every sink)
local KNOWN = { path = true, socket = true, append = true, line_buffered = true, rotate = true,
  shared = true, rotate_follow = true, queue = true }
function M.new(opts)
  if type(opts) ~= "table" or (type(opts.path) ~= "string") == (type(opts.socket) ~= "string") then
    error("sluice.sink.json{ path = ... } or { socket = ... } needs one destination", 2)
  end
  check_options("sluice.sink.json", opts, KNOWN)
  local rotate = parse_rotate(opts.rotate)
  local self = setmetatable({ path = opts.path, written = 0, lost = 0, queue = opts.queue,
    name = "json:" .. (opts.path or opts.socket), rotations = 0, rotated = 0,
    rotation_errors = 0, rotate = rotate, max_size = rotate and rotate.size or 0,
    interval = rotate and rotate.interval, shared = opts.shared,
    follow = rotate and opts.rotate_follow }, Sink)
  -- a shared file's size is looked at every tick and, by size, as the
  -- process's own lines grow
  if opts.shared and rotate and rotate.size then self.look_at = 0 end
  if opts.socket then
    local s, err = sock.connect(opts.socket)
    if not s then error("sluice.sink.json: " .. err, 2) end
    if s.addr.type ~= C.SL_SOCK_STREAM then error("sluice.sink.json: socket must be a stream (tcp: or unix:)", 2) end
    self.sock = s
    return self
  end
  if opts.path == "-" and rotate then error("sluice.sink.json: cannot rotate stdout", 2) end
  if rotate and not opts.append then
    local ok, err = M.keep_previous(opts.path)
    if not ok then return nil, err end
  end
  -- past the file size limit a write fails (EFBIG, counted), not the process
  C.sl_signal_ignore_xfsz()
  local wp = ffi.new("struct sl_json_writer *[1]")
  local mode = opts.shared and C.SL_JSON_SHARED or opts.line_buffered and C.SL_JSON_LINES or
    C.SL_JSON_BUFFERED
  local rc = C.sl_json_writer_open(wp, opts.path, opts.append and 1 or 0, mode)
  if rc < 0 then return nil, opts.path .. ": " .. core.strerror(rc) end
  self.w = ffi.gc(wp[0], C.sl_json_writer_close)
  self.st = ffi.new("struct sl_json_writer_stats")
  self.opened = core.monotonic()
  return self
end

-- The writer's counters: a new loss makes the error the sink reports.
local function read_stats(self)
  if self.w then C.sl_json_writer_stats(self.w, self.st) end
  local lost = tonumber(self.st.lost)
  if lost > self.lost then
    self.lost = lost
    self.err = "cannot write " .. (self.path == "-" and "stdout" or self.path) .. ": " ..
      core.strerror(self.st.last_error)
  end
end

-- A string record is taken as it is, so it must at least have the shape
-- of one JSON object on one line: why not, or nil.
local function string_refusal(rec)
  if not rec:find("^%s*{.*}%s*$") or rec:find("[\r\n]") then
    return string.format("a string record must be one encoded JSON object on one line, got %q",
      #rec > 40 and rec:sub(1, 40) .. "..." or rec)
  end
end

local function line_of(rec)
  local t = type(rec)
  if t == "string" then
    local err = string_refusal(rec)
    if err then error(err, 0) end
    return rec
  end
  if t == "cdata" then
    if rec.kind == "packet" then return encode(rec:totable()) end
    return rec:json()
  end
  return encode(rec)
end

-- PATH.N, the first N after n not taken, and N.
local function free_name(path, n)
  while true do
    n = n + 1
    local name = path .. "." .. n
    local f = io.open(name)
    if not f then return name, n end
    f:close()
  end
end

-- The name the current file gets when it is rotated away.
local function rotated_name(self)
  local name, n = free_name(self.path, self.rotations)
  self.rotations = n
  return name
end

-- With rotation, a run keeps what an earlier one left in path (the newest
-- of its files, which opening path would empty): a regular file with
-- lines moves to the next PATH.N first. Returns nil, err if it cannot.
function M.keep_previous(path)
  if C.sl_path_kind(path) ~= 1 then return true end
  local f = io.open(path, "rb")
  local size = f and f:seek("end")
  if f then f:close() end
  if not size or size == 0 then return true end
  local to = free_name(path, 0)
  local ok, err = os.rename(path, to)
  if not ok then return nil, "cannot keep the last run's " .. path .. ": " .. tostring(err) end
  return true
end

-- A rotation failed: counted, told, and tried again ROTATE_RETRY seconds
-- later; the sink goes on in its current file meanwhile.
local function rotation_failed(self, now, err)
  self.rotation_errors = self.rotation_errors + 1
  self.err = err
  self.retry_rotate_at = now + ROTATE_RETRY
  return nil, err
end

-- Moves the current file away (PATH.N) and starts a fresh PATH. A file no
-- line has reached yet stays where it is. On failure the sink goes on in
-- the current file (renamed back if it was moved) and the rotation waits
-- ROTATE_RETRY seconds before it is tried again; returns nil, err then.
function Sink:rotate_now()
  if not self.w or self.path == "-" then return true end
  local now = core.monotonic()
  if self.retry_rotate_at and now < self.retry_rotate_at then return nil, self.err end
  C.sl_json_writer_flush(self.w) -- what the disk refused is counted by the writer
  if C.sl_json_writer_size(self.w) == 0 then
    self.opened = now
    return true
  end
  local to = rotated_name(self)
  local ok, err = os.rename(self.path, to)
  if ok then
    local rc = C.sl_json_writer_reopen(self.w, self.path)
    if rc == 0 then
      self.opened, self.retry_rotate_at, self.rotated = now, nil, self.rotated + 1
      -- a file of the sink's own making: removed at close if no line reaches it
      read_stats(self)
      self.fresh_lines, self.fresh_lost = tonumber(self.st.lines), self.lost
      return true
    end
    err = "cannot rotate: cannot create " .. self.path .. ": " .. core.strerror(rc)
    os.rename(to, self.path) -- on in the current file
    self.rotations = self.rotations - 1
  else
    err = "cannot rotate " .. tostring(err)
  end
  return rotation_failed(self, now, err)
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

local file_size = ffi.new("uint64_t[1]")

-- A shared file: each process looks at the size of the file (its own
-- line count knows only its lines) and follows the others' rotations;
-- whichever finds it due rotates it (once: the core locks the file). When
-- one process alone rotated, the others wrote on in the moved file while
-- it was busy: files grew to several times the size.
local function shared_rotation(self, now)
  local rc = C.sl_json_writer_follow(self.w, self.path, file_size)
  if rc < 0 then
    self.err = "cannot follow the rotation of " .. self.path .. ": " .. core.strerror(rc)
  elseif rc == 1 then
    self.opened = now
  end
  if rc >= 0 and not self.follow and not (self.retry_rotate_at and now < self.retry_rotate_at) and
     ((self.max_size > 0 and file_size[0] >= self.max_size) or
      (self.interval and now - self.opened >= self.interval)) then
    local to, n = free_name(self.path, self.rotations)
    rc = C.sl_json_writer_rotate_shared(self.w, self.path, to)
    if rc >= 0 then
      if rc == 1 then self.rotations, self.rotated = n, self.rotated + 1 end
      self.opened, self.retry_rotate_at = now, nil
    else
      rotation_failed(self, now, "cannot rotate " .. self.path .. ": " .. core.strerror(rc))
    end
  end
  -- by size: next look after an eighth of the size of this process's own
  -- lines (its size is the file's again after a rotation: from there)
  if self.look_at then
    self.look_at = C.sl_json_writer_size(self.w) + math.max(math.floor(self.max_size / 8), 1)
  end
end

-- One line into the writer, size limit max; EFBIG when a size rotation is
-- due first.
local function append(self, rec, max)
  local w = self.w
  if type(rec) == "cdata" and not tagged(rec) then
    local kind = rec.kind
    if kind == "flow" then return C.sl_json_writer_flow(w, rec, max) end
    if kind == "slice" then return C.sl_json_writer_slice(w, rec, max) end
  end
  local line = line_of(rec)
  return C.sl_json_writer_line(w, line, #line, max)
end

-- An append was refused with EFBIG (the line would take the file past the
-- rotation size): makes room, and returns the size limit to append again
-- with. Lines the disk refused leave the size at a flush, which may make
-- room; else the file is rotated; if that fails, the line goes into the
-- current file past the size (0: no limit) rather than being lost.
local function make_room(self)
  if self.retry_rotate_at and core.monotonic() < self.retry_rotate_at then return 0 end
  local before = C.sl_json_writer_size(self.w)
  C.sl_json_writer_flush(self.w)
  if C.sl_json_writer_size(self.w) < before then return self.max_size end
  if self:rotate_now() then return self.max_size end
  return 0
end

function Sink:write(rec)
  if self.sock then return write_socket(self, rec) end
  if not self.w then return nil, "sink is closed" end
  if self.shared then -- rotated at ticks, by the file's size
    local rc = append(self, rec, 0)
    if rc == EMSGSIZE then
      return nil, string.format("%s: a line longer than %d bytes would mix with the other " ..
        "workers' lines in a pipe: write to a file", self.path == "-" and "stdout" or self.path,
        PIPE_LINE_MAX)
    end
    if rc < 0 then return nil, self.path .. ": " .. core.strerror(rc) end
    self.written = self.written + 1
    if self.look_at and C.sl_json_writer_size(self.w) >= self.look_at then
      shared_rotation(self, core.monotonic())
    end
    return true
  end
  if self.interval and core.monotonic() - self.opened >= self.interval then self:rotate_now() end
  local rc = append(self, rec, self.max_size)
  while rc == EFBIG do rc = append(self, rec, make_room(self)) end
  if rc < 0 then return nil, self.path .. ": " .. core.strerror(rc) end
  self.written = self.written + 1
  return true
end

-- A slice batch in one call to the core; returns how many records were
-- written (0: the caller writes them one by one: tagged flows, a socket).
function Sink:write_batch(batch)
  if not self.w or flow.any_tagged(batch.engine) then return 0 end
  local done, n, max = 0, batch.n, self.max_size
  -- a shared file is rotated by its size, looked at as this process's
  -- lines grow: a batch goes in chunks (one interval's batch can be
  -- megabytes), so that the file is looked at between them
  local chunk = n
  if self.shared then max, chunk = 0, SHARED_CHUNK end
  while done < n do
    local rc = C.sl_json_writer_slices(self.w, batch.recs + done, math.min(n - done, chunk), max)
    if rc == EFBIG then
      max = make_room(self)
    elseif rc < 0 then
      break
    else
      done = done + rc
      if not self.shared then max = self.max_size end
      if self.look_at and C.sl_json_writer_size(self.w) >= self.look_at then
        shared_rotation(self, core.monotonic())
      end
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
  -- a probe's records reach the file within a second, not when a buffer
  -- fills (a crash would lose what waited, already counted written)
  if self.w and now - (self.flushed_at or 0) >= FLUSH_INTERVAL then
    self.flushed_at = now
    C.sl_json_writer_flush(self.w) -- a write error is counted by the writer
  end
  if self.w and self.shared and self.rotate then
    shared_rotation(self, now)
  elseif self.interval and self.w and now - self.opened >= self.interval then
    self:rotate_now()
  end
  if self.pending then send_pending(self) end
end

-- At ctx.emit: a record this sink cannot take fails the handler then.
function Sink:check(rec)
  if type(rec) == "string" then return string_refusal(rec) end
end

function Sink:flush()
  if self.sock then
    if self.pending then return send_pending(self) end
    return true
  end
  if not self.w then return true end
  local rc = C.sl_json_writer_flush(self.w)
  if rc < 0 then
    read_stats(self)
    return nil, self.err or (self.path .. ": " .. core.strerror(rc))
  end
  return true
end

-- For the route: lines taken that are in the file (or its buffer) and
-- lines lost, since the sink opened, and the last error.
function Sink:settle()
  if self.w then read_stats(self) end
  return self.written - self.lost, self.lost, self.err
end

-- What the report shows besides written and dropped (only what happened).
function Sink:counts()
  local c = {}
  if self.rotated > 0 then c.rotations = self.rotated end
  if self.rotation_errors > 0 then c.rotation_errors = self.rotation_errors end
  local partial = self.st and tonumber(self.st.partial) or 0
  if partial > 0 then c.partial_lines = partial end
  if self.removed then c.removed_empty = 1 end
  return c
end

-- Idempotent: a run closes the sinks it used, and so may their owner.
function Sink:close()
  if self.sock then
    self:flush()
    self.sock:close()
    return true
  end
  if not self.w then return true end
  local ok, err = self:flush()
  read_stats(self)
  local rc = C.sl_json_writer_close(ffi.gc(self.w, nil))
  self.w = nil
  if rc < 0 then
    self.err = "cannot close " .. self.path .. ": " .. core.strerror(rc)
    ok, err = nil, self.err
  end
  -- a file rotated into that no line reached (a full disk): not left behind
  if self.fresh_lines and tonumber(self.st.lines) == self.fresh_lines and self.lost > self.fresh_lost then
    self.removed = os.remove(self.path) and true or nil
  end
  return ok, err
end

return M
