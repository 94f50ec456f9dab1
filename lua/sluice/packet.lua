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

-- Offsets and lengths are whole numbers (NaN passes every bounds test).
local function offset(off, fn)
  if type(off) ~= "number" then error("pkt:" .. fn .. "(offset): the offset is a number", 3) end
  if off ~= math.floor(off) then error("pkt:" .. fn .. "(offset): the offset is a whole number, got " ..
    tostring(off), 3) end
end

-- Payload byte at offset off (0-based), as a number, or nil.
function methods.u8(p, off)
  offset(off, "u8")
  if off < 0 or off >= p.payload_len then return nil end
  return p.data[p.payload_offset + off]
end

-- Big-endian (network order) 16 and 32 bit reads.
function methods.u16(p, off)
  offset(off, "u16")
  if off < 0 or off + 2 > p.payload_len then return nil end
  local b = p.data + p.payload_offset + off
  return bor(lshift(b[0], 8), b[1])
end

function methods.u32(p, off)
  offset(off, "u32")
  if off < 0 or off + 4 > p.payload_len then return nil end
  local b = p.data + p.payload_offset + off
  return tonumber(ffi.cast("uint32_t", bor(lshift(b[0], 24), lshift(b[1], 16), lshift(b[2], 8), b[3])))
end

-- n payload bytes from off as a string (nil if they are not all there);
-- without arguments, the whole captured payload.
function methods.bytes(p, off, n)
  off = off or 0
  offset(off, "bytes")
  n = n or p.payload_len - off
  offset(n, "bytes")
  if off < 0 or n < 0 or off + n > p.payload_len then return nil end
  return ffi.string(p.data + p.payload_offset + off, n)
end

-- Raw frame bytes (link-layer header included), bounds-checked the same.
function methods.frame(p, off, n)
  off = off or 0
  offset(off, "frame")
  n = n or p.caplen - off
  offset(n, "frame")
  if off < 0 or n < 0 or off + n > p.caplen then return nil end
  return ffi.string(p.data + off, n)
end

-- A copy that outlives the handler, its frame bytes with it.
local ev_t, ev_size, bytes_t = ffi.typeof("struct sl_packet_ev"), ffi.sizeof("struct sl_packet_ev"),
  ffi.typeof("uint8_t[?]")
local kept = setmetatable({}, { __mode = "k" })
function methods.copy(p)
  local c, data = ev_t(), bytes_t(math.max(p.caplen, 1))
  ffi.copy(c, p, ev_size)
  ffi.copy(data, p.data, p.caplen)
  c.data = data
  kept[c] = data
  return c
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

-- What on_packet gets: a handle that reads its packet while the step that
-- read it lasts, and raises once kept past it (it never reads another
-- packet).
local handle_t = ffi.typeof("struct sl_packet_handle")
local STALE = "packet handle used after its on_packet returned (keep pkt:copy() or pkt:totable())"

local function resolve(h, level)
  local st = flow.engines[h.engine]
  if not st or st.out.generation ~= h.generation then error(STALE, level) end
  return h.ev
end

function M.handle(st, ev)
  return handle_t(ev, st.out.generation, st.id)
end

-- A packet handle or event, as the event (for sinks and the C functions).
function M.ev_of(x)
  if ffi.istype(handle_t, x) then return resolve(x, 3) end
  return x
end

flow.handle_metatype(handle_t, get, methods, resolve, tostring)

return M
