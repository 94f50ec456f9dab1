-- pcap file sink: packets from on_packet (ctx.emit(sink, pkt)) and every
-- packet of the flows given to flow:capture(sink), written by the core
-- (flow captures never pass through Lua).
--
-- Write errors (a full disk, the file size limit, /dev/full): the core's
-- writer counts every packet it could not write and cuts the file back to
-- its last whole record; settle() gives the route its counts (captures
-- included), so the report's written is what is in the file and the rest
-- are failed drops. Later packets are tried again.
local ffi = require "ffi"
local core = require "sluice.core"
local sink_mod = require "sluice.sink"

local C = core.C
local M = {}

local FLUSH_INTERVAL = 1 -- seconds between flushes of a run that goes on

local Sink = {}
Sink.__index = Sink

local function open(self, linktype)
  -- past the file size limit a write fails (EFBIG, counted), not the process
  C.sl_signal_ignore_xfsz()
  local wp = ffi.new("struct sl_pcap_writer *[1]")
  local rc = C.sl_pcap_writer_open(wp, self.path, linktype, self.snaplen)
  if rc < 0 then return nil, self.path .. ": " .. core.strerror(rc) end
  self.w, self.linktype = ffi.gc(wp[0], C.sl_pcap_writer_close), linktype
  self.stats = C.sl_pcap_writer_stats(self.w)
  return true
end

-- sluice.sink.pcap{ path = "out.pcap", snaplen = 262144, linktype = 1 (Ethernet),
--                   queue = N (the route's queue, as for every sink) }
-- The link type follows the capture the sink is used with, unless given.
local KNOWN = { path = true, snaplen = true, linktype = true, queue = true }
function M.new(opts)
  if type(opts) ~= "table" or type(opts.path) ~= "string" then
    error("sluice.sink.pcap{ path = ... } needs a path", 2)
  end
  sink_mod.check_options("sluice.sink.pcap", opts, KNOWN)
  local self = setmetatable({ path = opts.path, snaplen = opts.snaplen or 0, name = "pcap:" .. opts.path,
    queue = opts.queue,
    fixed = opts.linktype ~= nil, accepts_packets = true, lost = 0 }, Sink)
  local ok, err = open(self, opts.linktype or C.SL_LINK_EN10MB)
  if not ok then return nil, err end
  return self
end

-- Called by a run with its source's link type: the file is started again
-- with that type if nothing was written yet.
function Sink:attach(linktype)
  if self.fixed or linktype == self.linktype then return true end
  if not self.w then return nil, "sink is closed" end
  if self.stats.packets > 0 then
    return nil, string.format("%s holds link type %d packets, the capture is %d", self.path,
      self.linktype, linktype)
  end
  C.sl_pcap_writer_close(ffi.gc(self.w, nil))
  self.w = nil
  return open(self, linktype)
end

-- The writer's counters (the last ones, once closed): a new loss makes the
-- error the sink reports.
local function read_stats(self)
  local s = self.stats
  if not s then return self.final end
  local lost = tonumber(s.errors)
  if lost > self.lost then
    self.lost = lost
    self.err = "cannot write " .. self.path .. ": " .. core.strerror(s.last_error)
  end
  local c = { packets = tonumber(s.packets), bytes = tonumber(s.bytes), errors = lost }
  if s.partial > 0 then c.partial_records = tonumber(s.partial) end
  return c
end

-- A packet handle from on_packet.
function Sink:write(pkt)
  if not self.w then return nil, "sink is closed" end
  if type(pkt) ~= "cdata" or pkt.kind ~= "packet" then
    return nil, "a pcap sink takes packets (on_packet's pkt)"
  end
  local rc = C.sl_pcap_writer_write(self.w, pkt.ts_ns, pkt.data, pkt.caplen, pkt.wirelen,
    pkt.linktype)
  if rc < 0 then
    read_stats(self)
    return nil, self.err or (self.path .. ": " .. core.strerror(rc)), sink_mod.COUNTED
  end
  return true
end

-- Packets are written at once; there is nothing to keep for later.
function Sink:prepare() return nil end

function Sink:counts()
  return read_stats(self)
end

-- For the route: packets in the file (or its buffer), from the route and
-- from flow captures alike, packets lost, and the last error.
function Sink:settle()
  local c = read_stats(self)
  if not c then return 0, 0, self.err end
  return c.packets, c.errors, self.err
end

-- A probe's packets reach the file within a second, not when a buffer
-- fills (a crash would lose what waited, already counted written).
function Sink:tick(now)
  if self.w and now - (self.flushed_at or 0) >= FLUSH_INTERVAL then
    self.flushed_at = now
    self:flush()
  end
end

function Sink:flush()
  if not self.w then return true end
  local rc = C.sl_pcap_writer_flush(self.w)
  if rc < 0 then
    read_stats(self)
    return nil, self.err or (self.path .. ": " .. core.strerror(rc))
  end
  return true
end

-- The counts are taken after the last flush, so its losses are in them.
function Sink:close()
  if not self.w then return true end
  local ok, err = self:flush()
  self.final = read_stats(self)
  local rc = C.sl_pcap_writer_close(ffi.gc(self.w, nil))
  self.w, self.stats = nil, nil
  if rc < 0 and ok then
    self.err = "cannot close " .. self.path .. ": " .. core.strerror(rc)
    ok, err = nil, self.err
  end
  return ok, err
end

return M
