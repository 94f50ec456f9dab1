-- pcap file sink: packets from on_packet (ctx.emit(sink, pkt)) and every
-- packet of the flows given to flow:capture(sink), written by the core
-- (flow captures never pass through Lua).
local ffi = require "ffi"
local core = require "sluice.core"

local C = core.C
local M = {}

local Sink = {}
Sink.__index = Sink

local function open(self, linktype)
  local wp = ffi.new("struct sl_pcap_writer *[1]")
  local rc = C.sl_pcap_writer_open(wp, self.path, linktype, self.snaplen)
  if rc < 0 then return nil, self.path .. ": " .. core.strerror(rc) end
  self.w, self.linktype = ffi.gc(wp[0], C.sl_pcap_writer_close), linktype
  self.stats = C.sl_pcap_writer_stats(self.w)
  return true
end

-- sluice.sink.pcap{ path = "out.pcap", snaplen = 262144, linktype = 1 (Ethernet) }
-- The link type follows the capture the sink is used with, unless given.
function M.new(opts)
  if type(opts) ~= "table" or type(opts.path) ~= "string" then
    error("sluice.sink.pcap{ path = ... } needs a path", 2)
  end
  local self = setmetatable({ path = opts.path, snaplen = opts.snaplen or 0, name = "pcap:" .. opts.path,
    fixed = opts.linktype ~= nil, accepts_packets = true }, Sink)
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

-- A packet handle from on_packet.
function Sink:write(pkt)
  if not self.w then return nil, "sink is closed" end
  if type(pkt) ~= "cdata" or pkt.kind ~= "packet" then
    return nil, "a pcap sink takes packets (on_packet's pkt)"
  end
  local rc = C.sl_pcap_writer_write(self.w, pkt.ts_ns, pkt.data, pkt.caplen, pkt.wirelen)
  if rc < 0 then return nil, core.strerror(rc) end
  return true
end

-- Packets are written at once; there is nothing to keep for later.
function Sink:prepare() return nil end

function Sink:counts()
  if not self.stats then return self.final end
  local s = self.stats
  return { packets = tonumber(s.packets), bytes = tonumber(s.bytes), errors = tonumber(s.errors) }
end

function Sink:flush()
  if not self.w then return true end
  local rc = C.sl_pcap_writer_flush(self.w)
  if rc < 0 then return nil, core.strerror(rc) end
  return true
end

function Sink:close()
  if not self.w then return true end
  self.final = self:counts()
  local rc = C.sl_pcap_writer_close(ffi.gc(self.w, nil))
  self.w, self.stats = nil, nil
  if rc < 0 then return nil, core.strerror(rc) end
  return true
end

return M
