-- Packet handles for on_packet(pkt, flow): struct sl_packet_ev through an
-- FFI metatype, read in place from the capture's buffer (valid while the
-- handler runs). Payload reads are bounds-checked: outside the captured
-- L4 payload they return nil, so a parser of truncated packets stops
-- cleanly instead of reading past the frame.
local ffi = require "ffi"
local bit = require "bit"
local flow = require "sluice.flow"
local DIR_FWD = require("sluice.core").C.SL_DIR_FWD

local tonumber, bor, lshift = tonumber, bit.bor, bit.lshift

local REGISTRY_KEY = "sluice.packet"
local registry = debug.getregistry()
if registry[REGISTRY_KEY] then return registry[REGISTRY_KEY] end
local M = {}
registry[REGISTRY_KEY] = M

local get = {
  kind = function() return "packet" end,
  ts = function(p) return tonumber(p.ts_ns) * 1e-9 end,
  len = function(p) return p.wirelen end,
  src = function(p) return flow.addr(p.key, 0) end,
  dst = function(p) return flow.addr(p.key, 1) end,
  sport = function(p) return p.key.sport end,
  dport = function(p) return p.key.dport end,
  proto = function(p) return flow.PROTO_NAMES[p.key.proto] end,
  from_initiator = function(p) return p.dir == DIR_FWD end,
}

local methods = {}

-- Payload byte at offset off (0-based), as a number, or nil.
function methods.u8(p, off)
  if off < 0 or off >= p.payload_len then return nil end
  return p.data[p.payload_offset + off]
end

-- Big-endian (network order) 16 and 32 bit reads.
function methods.u16(p, off)
  if off < 0 or off + 2 > p.payload_len then return nil end
  local b = p.data + p.payload_offset + off
  return bor(lshift(b[0], 8), b[1])
end

function methods.u32(p, off)
  if off < 0 or off + 4 > p.payload_len then return nil end
  local b = p.data + p.payload_offset + off
  return tonumber(ffi.cast("uint32_t", bor(lshift(b[0], 24), lshift(b[1], 16), lshift(b[2], 8), b[3])))
end

-- n payload bytes from off as a string (nil if they are not all there);
-- without arguments, the whole captured payload.
function methods.bytes(p, off, n)
  off = off or 0
  n = n or p.payload_len - off
  if off < 0 or n < 0 or off + n > p.payload_len then return nil end
  return ffi.string(p.data + p.payload_offset + off, n)
end

-- Raw frame bytes (link-layer header included), bounds-checked the same.
function methods.frame(p, off, n)
  off = off or 0
  n = n or p.caplen - off
  if off < 0 or n < 0 or off + n > p.caplen then return nil end
  return ffi.string(p.data + off, n)
end

function methods.totable(p)
  return { type = "packet", ts = get.ts(p), len = p.wirelen, caplen = p.caplen,
    src = get.src(p), dst = get.dst(p), sport = p.key.sport, dport = p.key.dport,
    proto = get.proto(p), payload_len = p.payload_len, dir = p.dir == DIR_FWD and "fwd" or "rev" }
end

ffi.metatype("struct sl_packet_ev", {
  __index = function(p, k)
    local g = get[k]
    if g then return g(p) end
    return methods[k]
  end,
  __tostring = function(p)
    return string.format("packet %s %s:%d -> %s:%d len %d", get.proto(p), get.src(p),
      p.key.sport, get.dst(p), p.key.dport, p.wirelen)
  end,
})

return M
