-- Name flows after the DNS answers seen before them.
--   sluice run examples/dns_hosts.lua -r trace.pcap
--   sluice run examples/dns_hosts.lua -r trace.pcap -o max_names=100000 -o hold_min=10m
-- Every DNS response over UDP (port 53, VLAN tagged or not) that answers
-- a standard query without error teaches the policy address -> name for
-- the A and AAAA records it carries. A flow that starts later towards (or,
-- failing that, from) a remembered address gets the tag `host` = that
-- name, and every ended flow is written as its usual JSON line, with
-- "tags":{"host":...}. A flow that started before the answer stays as it is.
--
-- The name is the question's name (lower case, no trailing dot): what the
-- client asked for, which for a CNAME chain is the chain's first name
-- ("www.shop.test" -> CNAME "shop.cdn.test" -> A 198.51.100.7 tags flows
-- to 198.51.100.7 with "www.shop.test"). Only records on the chain that
-- starts at the question name count; other records in the answer section
-- are ignored.
--
-- A response is used whole or not at all: a header, name or record that
-- runs past the captured payload, a compression pointer that does not
-- point before the part of the name that led to it (so no pointer loops),
-- a name over 255 bytes, or an A/AAAA record of the wrong size, and
-- nothing of that response is learned. DNS over TCP is not read, nor are
-- IP fragments put together (a response in fragments is cut short).
--
-- The table is bounded: at most max_names addresses (with per_client, at
-- most max_names client/address pairs), the oldest learned evicted first;
-- learning an address again makes it the newest. An answer is held for its
-- TTL, clamped to [hold_min, hold_max] (clients keep using an address well
-- past short TTLs). Times are packet times. With --state FILE the table
-- survives between runs.
local flow_mod = require "sluice.flow"
local bit = require "bit"

local band, concat, lower, tonumber = bit.band, table.concat, string.lower, tonumber
local addr_text = flow_mod.addr_text

local P = {
  info = {
    name = "dns_hosts",
    description = "tags flows with the DNS name their address was resolved from",
    -- DNS over UDP, also inside one or two VLAN tags (802.1Q/802.1ad)
    packets = "udp port 53 or (vlan and (udp port 53 or (vlan and udp port 53)))",
    options = {
      max_names = { type = "integer", default = 65536,
        description = "addresses remembered; the oldest learned is evicted first" },
      tag = { type = "string", default = "host", description = "name of the tag set on flows" },
      hold_min = { type = "duration", default = "5m",
        description = "an answer is remembered at least this long, whatever its TTL" },
      hold_max = { type = "duration", default = "1d",
        description = "an answer is remembered at most this long, whatever its TTL" },
      per_client = { type = "boolean", default = false,
        description = "answers per client: a flow gets the name its own end asked for" },
      flows = { type = "string", default = "all",
        description = "ended flows to write: all, tagged or none" },
    },
  },
}

-- ---- parsing ---------------------------------------------------------------

local HEADER = 12
local T_A, T_CNAME, T_AAAA, C_IN = 1, 5, 28, 1

local labels = {} -- scratch: the labels of the name being read

-- Reads the (possibly compressed) name at offset off. Returns the name in
-- lower case without the trailing dot ("" for the root) and the offset
-- right after it where it is written; or nil and why.
-- Termination: each compression pointer must point strictly before the
-- start of the part of the name being read (the name itself, then the
-- previous pointer's target), so targets strictly decrease.
local function read_name(pkt, off)
  local n, size, next_off, floor = 0, 1, nil, off
  while true do
    local len = pkt:u8(off)
    if not len then return nil, "name runs past the payload" end
    if len == 0 then break end
    local kind = band(len, 0xc0)
    if kind == 0xc0 then
      local ptr = pkt:u16(off)
      if not ptr then return nil, "compression pointer runs past the payload" end
      ptr = band(ptr, 0x3fff)
      if ptr >= floor or ptr < HEADER then return nil, "compression pointer out of order" end
      if not next_off then next_off = off + 2 end
      floor, off = ptr, ptr
    elseif kind ~= 0 then
      return nil, "unknown label type"
    else
      local label = pkt:bytes(off + 1, len)
      if not label then return nil, "label runs past the payload" end
      size = size + len + 1
      if size > 255 then
        for i = 1, n do labels[i] = nil end
        return nil, "name longer than 255 bytes"
      end
      n = n + 1
      labels[n] = label
      off = off + 1 + len
    end
  end
  local name = n > 0 and lower(concat(labels, ".", 1, n)) or ""
  for i = 1, n do labels[i] = nil end
  return name, next_off or off + 1
end

-- Scratch per answer record: owner name, type (0 unless class IN), rdata
-- offset, TTL, CNAME target.
local rr_owner, rr_type, rr_data, rr_ttl, rr_target = {}, {}, {}, {}, {}
local cname_of, on_chain = {}, {}

local function clear(n)
  for i = 1, n do
    cname_of[rr_owner[i]], on_chain[rr_owner[i]] = nil, nil
    if rr_target[i] then on_chain[rr_target[i]], rr_target[i] = nil, nil end
  end
end

-- Parses the DNS message in pkt's payload (pkt: a packet handle, or any
-- object with the same u8/u16/u32/bytes reads that return nil out of
-- bounds). For a response to a standard query without error: returns the
-- question name and n, with the addresses (text, as flows show them) of
-- the A/AAAA records on its CNAME chain in addrs[1..n] and their TTLs in
-- ttls[1..n]. Otherwise nil and why.
local function parse_response(pkt, addrs, ttls)
  local flags, qd, an = pkt:u16(2), pkt:u16(4), pkt:u16(6)
  if not pkt:u16(10) then return nil, "header runs past the payload" end
  if band(flags, 0x8000) == 0 then return nil, "a query" end
  if band(flags, 0x7800) ~= 0 then return nil, "not a standard query" end
  if band(flags, 0x000f) ~= 0 then return nil, "an error response" end
  if qd == 0 then return nil, "no question" end
  local qname, off = read_name(pkt, HEADER)
  if not qname then return nil, off end
  if qname == "" then return nil, "question for the root" end
  off = off + 4 -- type, class
  for _ = 2, qd do
    local name, after = read_name(pkt, off)
    if not name then return nil, after end
    off = after + 4
  end
  if not pkt:u32(off - 4) then return nil, "question runs past the payload" end
  local n = 0
  for i = 1, an do
    local owner, after = read_name(pkt, off)
    if not owner then clear(i - 1) return nil, after end
    local rtype, class, ttl, rdlen = pkt:u16(after), pkt:u16(after + 2), pkt:u32(after + 4),
      pkt:u16(after + 8)
    off = after + 10 + (rdlen or 0)
    if not rdlen or off > pkt.payload_len then
      clear(i - 1)
      return nil, "record runs past the payload"
    end
    rr_owner[i], rr_type[i], rr_data[i], rr_ttl[i] = owner, class == C_IN and rtype or 0,
      after + 10, ttl
    if class == C_IN then
      if rtype == T_CNAME then
        local target, tend = read_name(pkt, after + 10)
        if not target or tend ~= off then
          clear(i - 1)
          return nil, target and "CNAME data size mismatch" or tend
        end
        rr_target[i] = target
        cname_of[owner] = target
      elseif (rtype == T_A and rdlen ~= 4) or (rtype == T_AAAA and rdlen ~= 16) then
        clear(i)
        return nil, "address record of the wrong size"
      end
    end
  end
  -- the chain from the question name (a name seen twice ends it)
  local name = qname
  while name and not on_chain[name] do
    on_chain[name] = true
    name = cname_of[name]
  end
  for i = 1, an do
    local rtype = rr_type[i]
    if (rtype == T_A or rtype == T_AAAA) and on_chain[rr_owner[i]] then
      -- in bounds: the record's size was checked above
      n = n + 1
      addrs[n], ttls[n] = addr_text(pkt:bytes(rr_data[i], rtype == T_A and 4 or 16)), rr_ttl[i]
    end
  end
  on_chain[qname] = nil
  clear(an)
  return qname, n
end
P.parse_response = parse_response -- for tests and reuse; not a handler

-- ---- the table -------------------------------------------------------------

-- key (address, or "client address" with per_client) -> name and expiry;
-- a doubly linked list from the oldest learned to the newest.
local name_of, expires_of, newer, older = {}, {}, {}, {}
local oldest, newest, count = nil, nil, 0

local function unlink(key)
  local o, n = older[key], newer[key]
  if o then newer[o] = n else oldest = n end
  if n then older[n] = o else newest = o end
  older[key], newer[key] = nil, nil
end

local function forget(key)
  unlink(key)
  name_of[key], expires_of[key] = nil, nil
  count = count - 1
end

local max_names

local function remember(key, name, expires)
  if name_of[key] then unlink(key) else count = count + 1 end
  name_of[key], expires_of[key] = name, expires
  older[key] = newest
  if newest then newer[newest] = key else oldest = key end
  newest = key
  while count > max_names do forget(oldest) end
end

-- The name remembered for key at time now, or nil (an expired entry goes).
local function lookup(key, now)
  local name = name_of[key]
  if name and expires_of[key] < now then
    forget(key)
    return nil
  end
  return name
end

-- ---- handlers --------------------------------------------------------------

local emit, tag, hold_min, hold_max, per_client, write_all, write_tagged
local addrs, ttls = {}, {}

function P.init(opts, ctx)
  if opts.max_names < 1 then error("option 'max_names' must be at least 1") end
  if opts.hold_min > opts.hold_max then
    error(string.format("option 'hold_min' (%g s) exceeds 'hold_max' (%g s)", opts.hold_min,
      opts.hold_max))
  end
  if opts.flows ~= "all" and opts.flows ~= "tagged" and opts.flows ~= "none" then
    error("option 'flows' must be all, tagged or none, got '" .. opts.flows .. "'")
  end
  if opts.tag == "" then error("option 'tag' must not be empty") end
  emit, tag, max_names = ctx.emit, opts.tag, opts.max_names
  hold_min, hold_max, per_client = opts.hold_min, opts.hold_max, opts.per_client
  write_all, write_tagged = opts.flows == "all", opts.flows == "tagged"
end

function P.on_packet(pkt)
  local qname, n = parse_response(pkt, addrs, ttls)
  if not qname then return end
  local now = pkt.ts
  local client = per_client and pkt.dst
  for i = 1, n do
    local hold = ttls[i]
    if hold >= 0x80000000 then hold = 0 end -- RFC 2181: a TTL with the top bit set is 0
    if hold < hold_min then hold = hold_min elseif hold > hold_max then hold = hold_max end
    remember(client and (client .. " " .. addrs[i]) or addrs[i], qname, now + hold)
    addrs[i] = nil
  end
end

function P.on_flow_start(flow)
  if count == 0 then return end
  local now, dst, src = flow.first, flow.dst, flow.src
  local name
  if per_client then
    name = lookup(src .. " " .. dst, now) or lookup(dst .. " " .. src, now)
  else
    name = lookup(dst, now) or lookup(src, now)
  end
  if name then flow:tag(tag, name) end
end

function P.on_flow_end(flow)
  if write_all or (write_tagged and flow:tag(tag) ~= nil) then emit(flow) end
end

-- State: one line per entry, oldest first: key, tab, name, tab, expiry.
function P.snapshot()
  local lines, key = {}, oldest
  while key do
    local name = name_of[key]
    -- a name with a tab or newline byte in a label would break the format
    if not name:find("[\t\n]") then
      lines[#lines + 1] = string.format("%s\t%s\t%.6f", key, name, expires_of[key])
    end
    key = newer[key]
  end
  return concat(lines, "\n")
end

function P.restore(s)
  for key, name, expires in s:gmatch("([^\t\n]+)\t([^\t\n]*)\t([^\t\n]+)") do
    expires = tonumber(expires)
    if expires then remember(key, name, expires) end
  end
end

return P
