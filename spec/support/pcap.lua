-- A small pure-Lua writer of classic pcap files (nanosecond magic
-- 0xa1b23c4d, little endian) and frame builders for the specs.
--
--   local pcap = require "support.pcap"
--   local path = pcap.write({
--     { ts = pcap.t(0), frame = pcap.ether { payload = pcap.ipv4 { ... } } },
--     ...
--   }, { linktype = 1 })
--   ...
--   pcap.cleanup()     -- removes every file written so far
--
-- Timestamps are nanoseconds since the epoch, as uint64_t cdata or as Lua
-- numbers (exact below 2^53). pcap.t(seconds) gives BASE_NS + seconds.
-- Checksums are left zero: the decoder does not check them.
local ffi = require "ffi"
local bit = require "bit"

local band, rshift, bor, lshift = bit.band, bit.rshift, bit.bor, bit.lshift
local char, rep, concat = string.char, string.rep, table.concat

local M = {}

M.LINKTYPE = { NULL = 0, EN10MB = 1, RAW = 101, LOOP = 108, LINUX_SLL = 113,
  IPV4 = 228, IPV6 = 229, LINUX_SLL2 = 276 }

M.BASE_SEC = 1700000000 -- 2023-11-14T22:13:20Z
M.BASE_NS = ffi.new("uint64_t", M.BASE_SEC) * 1000000000ULL

local NS_PER_S = 1000000000ULL

-- BASE_NS + seconds (a Lua number, rounded to the nanosecond), as uint64_t.
function M.t(seconds)
  local ns = math.floor(seconds * 1e9 + 0.5)
  if ns >= 0 then return M.BASE_NS + ns end
  return M.BASE_NS - (-ns)
end

-- Seconds since the epoch as a Lua number, the way sluice reports times.
function M.sec(ts)
  return tonumber(ffi.cast("uint64_t", ts)) * 1e-9
end

-- ---- bytes -----------------------------------------------------------------

local function u8(n) return char(band(n, 0xff)) end
local function be16(n) return char(band(rshift(n, 8), 0xff), band(n, 0xff)) end
local function be32(n)
  return char(band(rshift(n, 24), 0xff), band(rshift(n, 16), 0xff),
    band(rshift(n, 8), 0xff), band(n, 0xff))
end
local function le16(n) return char(band(n, 0xff), band(rshift(n, 8), 0xff)) end
local function le32(n)
  return char(band(n, 0xff), band(rshift(n, 8), 0xff), band(rshift(n, 16), 0xff),
    band(rshift(n, 24), 0xff))
end
M.u8, M.be16, M.be32, M.le16, M.le32 = u8, be16, be32, le16, le32

-- Raw bytes from a list of numbers or a hex string ("de ad be ef").
function M.raw(v)
  if type(v) == "table" then
    local t = {}
    for i, b in ipairs(v) do t[i] = char(b) end
    return concat(t)
  end
  return (v:gsub("%s", ""):gsub("%x%x", function(h) return char(tonumber(h, 16)) end))
end

-- Payload of n bytes.
function M.payload(n, fill)
  return rep(fill or "x", n or 0)
end

-- ---- addresses -------------------------------------------------------------

function M.ip4(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  assert(a, "bad IPv4 address " .. tostring(s))
  return char(tonumber(a), tonumber(b), tonumber(c), tonumber(d))
end

-- The eight 16-bit groups of an IPv6 address in text, as numbers: the
-- forms used in specs (with or without "::", no embedded IPv4).
function M.ip6_groups(s)
  local function split(part, out)
    for g in part:gmatch("[^:]+") do
      local n = tonumber(g, 16)
      assert(n and n <= 0xffff, "bad IPv6 address " .. tostring(s))
      out[#out + 1] = n
    end
    return out
  end
  local head, tail = s:match("^(.-)::(.*)$")
  local groups
  if head then
    local t = split(tail, {})
    groups = split(head, {})
    for _ = 1, 8 - #groups - #t do groups[#groups + 1] = 0 end
    for _, g in ipairs(t) do groups[#groups + 1] = g end
  else
    groups = split(s, {})
  end
  assert(#groups == 8, "bad IPv6 address " .. tostring(s))
  return groups
end

-- The 16 bytes of an IPv6 address in text (see ip6_groups).
function M.ip6(s)
  local out = {}
  for i, g in ipairs(M.ip6_groups(s)) do out[i] = be16(g) end
  return concat(out)
end

local function addr(s, version)
  if #s == 4 or #s == 16 then
    -- already raw bytes? only if it does not look like text
    if not s:match("^[%x%.:]+$") then return s end
  end
  if version == 6 or s:find(":", 1, true) then return M.ip6(s) end
  return M.ip4(s)
end

-- ---- transport -------------------------------------------------------------

local TCP_FLAGS = { F = 0x01, S = 0x02, R = 0x04, P = 0x08, A = 0x10, U = 0x20,
  E = 0x40, C = 0x80 }
M.TCP_FLAGS = TCP_FLAGS

-- "SA" -> 0x12; numbers pass through.
function M.tcp_flags(f)
  if type(f) == "number" then return f end
  local n = 0
  for c in (f or ""):gmatch(".") do
    local b = TCP_FLAGS[c]
    assert(b, "unknown TCP flag " .. c)
    n = bor(n, b)
  end
  return n
end

local function body(o)
  if o.payload then return o.payload end
  return M.payload(o.len or 0)
end

-- tcp{ sport, dport, flags = "SA", seq, ack, len = payload bytes | payload,
--      data_offset = words (default 5 + options), options = bytes }
function M.tcp(o)
  local opts = o.options or ""
  assert(#opts % 4 == 0, "TCP options must be a multiple of 4 bytes")
  local doff = o.data_offset or (5 + #opts / 4)
  return be16(o.sport or 1234) .. be16(o.dport or 80) .. be32(o.seq or 0) ..
    be32(o.ack or 0) .. u8(lshift(doff, 4)) .. u8(M.tcp_flags(o.flags)) ..
    be16(o.window or 65535) .. be16(0) .. be16(0) .. opts .. body(o)
end

-- udp{ sport, dport, len | payload }
function M.udp(o)
  local data = body(o)
  return be16(o.sport or 1234) .. be16(o.dport or 53) .. be16(o.length or (8 + #data)) ..
    be16(0) .. data
end

-- icmp{ type = 8 (request) | 0 (reply), code, id, seq, len | payload };
-- for ICMPv6 use type 128/129 (icmp6 is the same layout).
function M.icmp(o)
  return u8(o.type or 8) .. u8(o.code or 0) .. be16(0) .. be16(o.id or 0) ..
    be16(o.seq or 0) .. body(o)
end

function M.icmp6(o)
  local t = {}
  for k, v in pairs(o) do t[k] = v end
  t.type = o.type or 128
  return M.icmp(t)
end

-- sctp{ sport, dport, vtag, len | payload (chunks) }
function M.sctp(o)
  return be16(o.sport or 5000) .. be16(o.dport or 5001) .. be32(o.vtag or 0) ..
    be32(0) .. body(o)
end

-- ---- network ---------------------------------------------------------------

M.PROTO = { icmp = 1, tcp = 6, udp = 17, icmp6 = 58, sctp = 132 }

-- ipv4{ src, dst, proto, payload, id, df, mf, frag_offset (bytes, multiple
--       of 8), options (bytes, padded to 4), ttl, total_len, ihl (override) }
function M.ipv4(o)
  local opts = o.options or ""
  if #opts % 4 ~= 0 then opts = opts .. rep("\0", 4 - #opts % 4) end
  local hlen = 20 + #opts
  local data = o.payload or ""
  local off = o.frag_offset or 0
  assert(off % 8 == 0, "fragment offset must be a multiple of 8 bytes")
  local flags = off / 8
  if o.df then flags = bor(flags, 0x4000) end
  if o.mf then flags = bor(flags, 0x2000) end
  local ihl = o.ihl or hlen / 4
  return u8(bor(0x40, band(ihl, 0x0f))) .. u8(o.tos or 0) ..
    be16(o.total_len or (hlen + #data)) .. be16(o.id or 0) .. be16(flags) ..
    u8(o.ttl or 64) .. u8(o.proto or 17) .. be16(0) ..
    addr(o.src or "10.0.0.1", 4) .. addr(o.dst or "10.0.0.2", 4) .. opts .. data
end

-- ipv6{ src, dst, nh (upper protocol), payload, ext = { ext, ... }, plen }
-- where ext is { type = 0 | 43 | 60, len = bytes (multiple of 8, >= 8) }
--          or { type = 44, offset = bytes (multiple of 8), more = bool, id }
--          or { type = 51, len = bytes (multiple of 4, >= 12) }  (AH)
function M.ipv6(o)
  local ext = o.ext or {}
  local parts = {}
  for i, e in ipairs(ext) do
    local nh = ext[i + 1] and ext[i + 1].type or (o.nh or 17)
    local h
    if e.type == 44 then
      local off = e.offset or 0
      assert(off % 8 == 0, "fragment offset must be a multiple of 8 bytes")
      h = u8(nh) .. u8(0) .. be16(bor(off, e.more and 1 or 0)) .. be32(e.id or 0)
    elseif e.type == 51 then
      local len = e.len or 12
      assert(len % 4 == 0 and len >= 12)
      h = u8(nh) .. u8(len / 4 - 2) .. rep("\0", len - 2)
    else
      local len = e.len or 8
      assert(len % 8 == 0 and len >= 8)
      h = u8(nh) .. u8(len / 8 - 1) .. rep("\0", len - 2)
    end
    parts[#parts + 1] = h
  end
  local first_nh = ext[1] and ext[1].type or (o.nh or 17)
  local payload = concat(parts) .. (o.payload or "")
  return be32(0x60000000) .. be16(o.plen or #payload) .. u8(first_nh) ..
    u8(o.hlim or 64) .. addr(o.src or "2001:db8::1", 6) .. addr(o.dst or "2001:db8::2", 6) ..
    payload
end

-- ---- link ------------------------------------------------------------------

local MAC_A = M.raw "02 00 00 00 00 01"
local MAC_B = M.raw "02 00 00 00 00 02"

-- ether{ payload, type = ethertype (default from the IP version nibble),
--        vlans = { outer, inner }, tpid = 0x8100 (outer tag with 2 tags:
--        tpid_outer, default 0x88a8), src, dst (6 raw bytes) }
function M.ether(o)
  local data = o.payload or ""
  local etype = o.type
  if not etype then
    local v = #data > 0 and rshift(data:byte(1), 4) or 4
    etype = v == 6 and 0x86dd or 0x0800
  end
  local tags = {}
  local vlans = o.vlans or {}
  for i, vid in ipairs(vlans) do
    local tpid
    if i == 1 and #vlans > 1 then tpid = o.tpid_outer or 0x88a8 else tpid = o.tpid or 0x8100 end
    tags[#tags + 1] = { tpid = tpid, vid = vid }
  end
  local hdr = { o.dst or MAC_B, o.src or MAC_A }
  for _, tag in ipairs(tags) do
    hdr[#hdr + 1] = be16(tag.tpid)
    hdr[#hdr + 1] = be16(tag.vid)
  end
  hdr[#hdr + 1] = be16(etype)
  return concat(hdr) .. data
end

local function ip_version_of(data)
  return #data > 0 and rshift(data:byte(1), 4) or 4
end

-- Wraps an IP packet for a link type. o: vlans, ethertype, af (NULL/LOOP).
function M.link(linktype, ip, o)
  o = o or {}
  local v = ip_version_of(ip)
  local etype = v == 6 and 0x86dd or 0x0800
  if linktype == 1 then
    return M.ether { payload = ip, vlans = o.vlans, type = o.ethertype }
  elseif linktype == 101 or linktype == 228 or linktype == 229 then
    return ip
  elseif linktype == 0 then
    -- host byte order: this writer is little endian
    return le32(o.af or (v == 6 and 30 or 2)) .. ip
  elseif linktype == 108 then
    return be32(o.af or (v == 6 and 24 or 2)) .. ip
  elseif linktype == 113 then
    -- packet type, ARPHRD_ETHER, address length, address (8), protocol
    return be16(0) .. be16(1) .. be16(6) .. MAC_A .. "\0\0" .. be16(o.ethertype or etype) .. ip
  elseif linktype == 276 then
    -- protocol, reserved, ifindex, ARPHRD_ETHER, packet type, addr len, addr
    return be16(o.ethertype or etype) .. be16(0) .. be32(1) .. be16(1) .. u8(0) .. u8(6) ..
      MAC_A .. "\0\0" .. ip
  end
  error("pcap.link: no builder for link type " .. tostring(linktype))
end

-- ---- whole packets ---------------------------------------------------------

-- One frame from a flat description:
--   pkt{ proto = "tcp"|"udp"|"icmp"|"icmp6"|"sctp"|number, src, dst, sport,
--        dport, flags, len, payload, id (ICMP echo id), type (ICMP type),
--        vlans, ethertype, link (default 1), ip = { extra ipv4/ipv6 fields } }
-- The IP version follows the address text.
function M.pkt(o)
  local proto = o.proto or "udp"
  local src, dst = o.src or "10.0.0.1", o.dst or "10.0.0.2"
  local v6 = src:find(":", 1, true) ~= nil
  local l4
  if proto == "tcp" then
    l4 = M.tcp(o)
  elseif proto == "udp" then
    l4 = M.udp(o)
  elseif proto == "icmp" then
    l4 = M.icmp(o)
  elseif proto == "icmp6" then
    l4 = M.icmp6(o)
  elseif proto == "sctp" then
    l4 = M.sctp(o)
  else
    l4 = o.payload or M.payload(o.len or 0)
  end
  local num = type(proto) == "number" and proto or M.PROTO[proto]
  local ipo = { src = src, dst = dst, payload = l4 }
  for k, v in pairs(o.ip or {}) do ipo[k] = v end
  local ip
  if v6 then
    ipo.nh = ipo.nh or num
    ip = M.ipv6(ipo)
  else
    ipo.proto = ipo.proto or num
    ip = M.ipv4(ipo)
  end
  return M.link(o.link or 1, ip, o)
end

-- ---- files -----------------------------------------------------------------

local written = {}

-- The bytes of a pcap file. packets: list of { ts = ns, frame = bytes,
-- orig_len = n (default #frame), caplen = n (cut the frame) }.
-- opts: linktype (default 1), magic (default nanosecond), snaplen.
function M.encode(packets, opts)
  opts = opts or {}
  local out = {}
  local magic = opts.magic or 0xa1b23c4d
  local frac = magic == 0xa1b2c3d4 and 1000ULL or 1ULL
  out[1] = le32(magic) .. le16(2) .. le16(4) .. le32(0) .. le32(0) ..
    le32(opts.snaplen or 262144) .. le32(opts.linktype or 1)
  for _, p in ipairs(packets) do
    local ts = ffi.new("uint64_t", p.ts or 0)
    local sec = tonumber(ts / NS_PER_S)
    local frac_part = tonumber((ts % NS_PER_S) / frac)
    local frame = p.frame
    local caplen = p.caplen or #frame
    if caplen < #frame then frame = frame:sub(1, caplen) end
    out[#out + 1] = le32(sec) .. le32(frac_part) .. le32(#frame) ..
      le32(p.orig_len or #frame) .. frame
  end
  return concat(out)
end

-- Writes a pcap file and returns its path: opts.path, or else a fresh
-- temporary path that cleanup() removes. opts as for encode, plus cut = n
-- bytes to drop from the end (truncation).
function M.write(packets, opts)
  opts = opts or {}
  local data = M.encode(packets, opts)
  if opts.cut then data = data:sub(1, #data - opts.cut) end
  return M.write_bytes(data, opts.path)
end

-- Writes bytes to path, or to a fresh temporary path that cleanup()
-- removes; returns the path.
function M.write_bytes(data, path)
  if not path then
    path = os.tmpname()
    written[#written + 1] = path
  end
  local fh = assert(io.open(path, "wb"))
  assert(fh:write(data))
  assert(fh:close())
  return path
end

-- Removes every file written through this module.
function M.cleanup()
  for i = #written, 1, -1 do
    os.remove(written[i])
    written[i] = nil
  end
end

return M
