-- Address helpers for policies, IPv4 and IPv6 alike: text <-> raw, family,
-- prefixes, order, and prefix sets for allow/deny lists.
--
-- A raw address is a Lua string of 4 bytes (IPv4) or 16 (IPv6), the form
-- of ffi.string(rec.key.src, 4 or 16) and of addr.of(key, which). Text out
-- is canonical: dotted quad, and RFC 5952 for IPv6 (inet_ntop: compressed,
-- lowercase, ::ffff:1.2.3.4 for IPv4-mapped).
--
-- Where an address x is taken, raw and text are both accepted, told apart
-- by length, because raw bytes can spell text:
--   4 bytes   raw IPv4, always: some real IPv4 addresses spell IPv6 text
--             (58.58.49.48 is "::10") and those come from records. A
--             4-character IPv6 text ("::10", "a::b") is written "[::10]".
--   16 bytes  text if it is valid address text, else raw IPv6. Raw bytes
--             that spell text start with an ASCII digit, letter a-f, ':'
--             or '[', all between 3000:: and 66ff::, space IANA has not
--             assigned: no real address is misread.
--   other     text.
-- addr.parse, addr.parse_prefix and set entries take text only.
-- There is no implicit IPv4-mapping: ::ffff:1.2.3.4 is an IPv6 address.
local ffi = require "ffi"
local bit = require "bit"
local core = require "sluice.core"

local C = ffi.C -- libc (declared in sluice.core)
local K = core.C -- SL_AF_* (enum sl_sys in sluice.h)
local AF_INET, AF_INET6 = K.SL_AF_INET, K.SL_AF_INET6

local type, tostring, error, setmetatable = type, tostring, error, setmetatable
local byte, sub, find, format, match = string.byte, string.sub, string.find, string.format, string.match
local floor, tonumber = math.floor, tonumber
local band, bor, lshift = bit.band, bit.bor, bit.lshift
local ffi_string, ffi_fill, istype = ffi.string, ffi.fill, ffi.istype

local M = {}

-- Scratch buffers, one each for the module's life; nothing here yields
-- between filling one and reading it.
local bin = ffi.new("uint8_t[16]")
local txt = ffi.new("char[64]") -- any size >= INET6_ADDRSTRLEN
local TXT_SIZE = ffi.sizeof(txt)

local KEY = ffi.typeof("struct sl_key")
local KEY_PTR = ffi.typeof("const struct sl_key *")

local LBRACKET, RBRACKET = byte("["), byte("]")

-- First bytes that address text can start with (see the header comment).
local TEXT_START = {}
for c in ("0123456789abcdefABCDEF:["):gmatch(".") do TEXT_START[byte(c)] = true end

-- Blames the caller of the API function that called this (depth: how
-- many helpers lie between that function and this one).
local function misuse(fname, msg, depth)
  error("sluice.addr." .. fname .. ": " .. msg, 3 + (depth or 0))
end

local function quote(s)
  return format("%q", s)
end

-- Reads address text into bin; returns 4 or 6, or nil.
local function pton(s)
  local n = #s
  if n == 0 or find(s, "\0", 1, true) then return nil end -- C would stop at a NUL
  -- brackets mark an IPv6 literal, as in URLs (RFC 3986)
  if byte(s, 1) == LBRACKET then
    if n < 3 or byte(s, n) ~= RBRACKET then return nil end
    return C.inet_pton(AF_INET6, sub(s, 2, n - 1), bin) == 1 and 6 or nil
  end
  -- text has a colon exactly when it is IPv6: one inet_pton call
  if find(s, ":", 1, true) then
    return C.inet_pton(AF_INET6, s, bin) == 1 and 6 or nil
  end
  return C.inet_pton(AF_INET, s, bin) == 1 and 4 or nil
end

local function bad_address(s)
  return "not an IP address: " .. quote(s)
end

-- Whether a 16-byte string is text rather than raw (the rule above);
-- leaves bin filled when it is. Text of 16 characters is never IPv4.
local function is_text16(x)
  return TEXT_START[byte(x, 1)] and pton(x) == 6
end

-- The raw form of x and its family, or nil, err. depth: helpers between
-- the API function and this one.
local function raw_of(x, fname, depth)
  if type(x) ~= "string" then
    misuse(fname, "an address is a string (raw or text), got " .. type(x), 1 + (depth or 0))
  end
  local n = #x
  if n == 4 then return x, 4 end
  if n == 16 then
    if is_text16(x) then return ffi_string(bin, 16), 6 end
    return x, 6
  end
  local fam = pton(x)
  if not fam then return nil, bad_address(x) end
  return ffi_string(bin, fam == 4 and 4 or 16), fam
end

-- Text of a raw address (4 or 16 bytes).
local function ntop(raw)
  local af = #raw == 4 and AF_INET or AF_INET6
  return ffi_string(C.inet_ntop(af, raw, txt, TXT_SIZE))
end

-- Raw address with every bit past len cleared.
local function mask(raw, len)
  local n = #raw
  if len >= n * 8 then return raw end
  ffi.copy(bin, raw, n)
  local full = floor(len / 8)
  local rest = len - full * 8
  local from = full
  if rest > 0 then
    bin[full] = band(bin[full], lshift(0xff, 8 - rest))
    from = full + 1
  end
  ffi_fill(bin + from, n - from)
  return ffi_string(bin, n)
end

local function check_len(fname, len, depth)
  if type(len) ~= "number" or len ~= floor(len) then
    misuse(fname, "a prefix length is an integer, got " .. (type(len) == "number" and tostring(len) or type(len)),
      1 + (depth or 0))
  end
end

--- addr.parse(text) -> raw | nil, err
function M.parse(text)
  if type(text) ~= "string" then misuse("parse", "text is a string, got " .. type(text)) end
  local fam = pton(text)
  if not fam then return nil, bad_address(text) end
  return ffi_string(bin, fam == 4 and 4 or 16)
end

--- addr.text(x) -> canonical text | nil, err
function M.text(x)
  local raw, err = raw_of(x, "text")
  if not raw then return nil, err end
  return ntop(raw)
end

--- addr.family(x) -> 4 | 6 | nil, err
function M.family(x)
  local raw, fam = raw_of(x, "family")
  if not raw then return nil, fam end
  return fam
end

-- The network of x at len, or nil, err.
local function network(fname, x, len)
  check_len(fname, len, 1)
  local raw, fam = raw_of(x, fname, 1)
  if not raw then return nil, fam end
  local max = fam == 4 and 32 or 128
  if len < 0 or len > max then
    misuse(fname, format("prefix length %d is out of range 0..%d for IPv%d", len, max, fam), 1)
  end
  return mask(raw, len)
end

--- addr.prefix(x, len) -> raw network | nil, err
function M.prefix(x, len)
  -- not a tail call: this frame must stay for misuse() to blame the caller
  local net, err = network("prefix", x, len)
  return net, err
end

--- addr.prefix_text(x, len) -> "10.1.2.0/24" | nil, err
function M.prefix_text(x, len)
  local net, err = network("prefix_text", x, len)
  if not net then return nil, err end
  return ntop(net) .. "/" .. len
end

--- addr.parse_prefix(text) -> raw network, len | nil, err
-- Host bits are cleared ("10.1.2.3/8" is 10.0.0.0/8); a bare address is
-- /32 or /128.
function M.parse_prefix(text)
  if type(text) ~= "string" then misuse("parse_prefix", "a prefix is a string, got " .. type(text)) end
  local a, l = match(text, "^(.*)/(%d%d?%d?)$")
  if not a then
    if find(text, "/", 1, true) then return nil, "not a prefix: " .. quote(text) end
    a = text
  end
  local fam = pton(a)
  if not fam then return nil, "not a prefix: " .. quote(text) .. " (" .. bad_address(a) .. ")" end
  local raw = ffi_string(bin, fam == 4 and 4 or 16)
  local max = fam == 4 and 32 or 128
  local len = l and tonumber(l) or max
  if len > max then
    return nil, format("not a prefix: %s (IPv%d prefix length is 0..%d)", quote(text), fam, max)
  end
  return mask(raw, len), len
end

--- addr.compare(a, b) -> -1 | 0 | 1 | nil, err
-- IPv4 before IPv6, then numeric (byte) order.
function M.compare(a, b)
  local ra, err = raw_of(a, "compare")
  if not ra then return nil, err end
  local rb, err2 = raw_of(b, "compare")
  if not rb then return nil, err2 end
  if #ra ~= #rb then return #ra < #rb and -1 or 1 end
  -- LuaJIT compares strings bytewise (memcmp order, no locale)
  if ra == rb then return 0 end
  return ra < rb and -1 or 1
end

--- addr.equal(a, b) -> boolean | nil, err
function M.equal(a, b)
  local ra, err = raw_of(a, "equal")
  if not ra then return nil, err end
  local rb, err2 = raw_of(b, "equal")
  if not rb then return nil, err2 end
  return ra == rb
end

--- addr.of(key, which) -> raw | nil, err
-- key: a struct sl_key (or pointer to one); which: 0 or "src", 1 or "dst".
function M.of(key, which)
  if type(key) ~= "cdata" or not (istype(KEY, key) or istype(KEY_PTR, key)) then
    misuse("of", "key is a struct sl_key cdata, got " .. (type(key) == "cdata" and tostring(ffi.typeof(key)) or type(key)))
  end
  local a
  if which == 0 or which == "src" then
    a = key.src
  elseif which == 1 or which == "dst" then
    a = key.dst
  else
    misuse("of", "which is 0, 1, \"src\" or \"dst\", got " .. tostring(which))
  end
  local v = key.ip_version
  if v == 4 then return ffi_string(a, 4) end
  if v == 6 then return ffi_string(a, 16) end
  return nil, "no IP address in the key (ip_version " .. v .. ")"
end

--- addr.of_id(id) -> raw | nil, err
-- The address of rec.src_id / rec.dst_id (ids of this process).
local id_buf = ffi.new("uint8_t[16]")
function M.of_id(id)
  if type(id) ~= "number" then misuse("of_id", "id is a number, got " .. type(id)) end
  local v = core.C.sl_addr_of_id(require("sluice.flow").addr_ids(), id, id_buf)
  if v < 0 then return nil, "no address has id " .. tostring(id) end
  return ffi_string(id_buf, v == 4 and 4 or 16)
end

-- Prefix sets. An address is split into 32-bit words (bit ops: plain
-- numbers, no strings per lookup). A set is a trie with one level per word
-- (IPv4: one level). A prefix lives at the level of its last word, in that
-- node's table for its length there, keyed by the word masked to the
-- length; a node's kids, keyed by a whole word, hold the longer prefixes.
-- A lookup goes down the kids its words find, then scans back up, each
-- node's lengths longest first: the first hit is the longest match. So a
-- lookup costs one hash probe per length present on its path, not per
-- length in the set. /0 needs no special case: its word is masked to 0.

-- The level (0-based) of a prefix length, and its length within that word.
local function level(len)
  local d = len == 0 and 0 or floor((len - 1) / 32)
  return d, len - d * 32
end

-- The mask of a word for a length 0..32 within it.
local function word_mask(bits)
  return bits == 0 and 0 or lshift(-1, 32 - bits)
end

-- The words of an address held in bin.
local function bin_words()
  return bor(lshift(bin[0], 24), lshift(bin[1], 16), lshift(bin[2], 8), bin[3]),
    bor(lshift(bin[4], 24), lshift(bin[5], 16), lshift(bin[6], 8), bin[7]),
    bor(lshift(bin[8], 24), lshift(bin[9], 16), lshift(bin[10], 8), bin[11]),
    bor(lshift(bin[12], 24), lshift(bin[13], 16), lshift(bin[14], 8), bin[15])
end

-- Family and words of an address x (raw or text), or nil, err.
local function words(x)
  local n = #x
  if n == 4 then
    local a, b, c, d = byte(x, 1, 4)
    return 4, bor(lshift(a, 24), lshift(b, 16), lshift(c, 8), d)
  end
  if n == 16 then
    if is_text16(x) then return 6, bin_words() end
    local b1, b2, b3, b4, b5, b6, b7, b8, b9, b10, b11, b12, b13, b14, b15, b16 = byte(x, 1, 16)
    return 6, bor(lshift(b1, 24), lshift(b2, 16), lshift(b3, 8), b4),
      bor(lshift(b5, 24), lshift(b6, 16), lshift(b7, 8), b8),
      bor(lshift(b9, 24), lshift(b10, 16), lshift(b11, 8), b12),
      bor(lshift(b13, 24), lshift(b14, 16), lshift(b15, 8), b16)
  end
  local fam = pton(x)
  if not fam then return nil, bad_address(x) end
  return fam, bin_words()
end

local function new_node()
  -- parallel arrays, longest length first; by_len: length -> its table
  return { lens = {}, masks = {}, tabs = {}, by_len = {}, kids = {} }
end

-- A node's table for a length, made (and put in order) on first use.
local function len_table(node, bits)
  local t = node.by_len[bits]
  if t then return t end
  t = {}
  node.by_len[bits] = t
  local lens, masks, tabs = node.lens, node.masks, node.tabs
  local i = #lens + 1
  while i > 1 and lens[i - 1] < bits do
    lens[i], masks[i], tabs[i] = lens[i - 1], masks[i - 1], tabs[i - 1]
    i = i - 1
  end
  lens[i], masks[i], tabs[i] = bits, word_mask(bits), t
  return t
end

-- The longest prefix of a node that word w matches, or nil.
local function scan(node, w)
  local masks, tabs = node.masks, node.tabs
  for i = 1, #tabs do
    local hit = tabs[i][band(w, masks[i])]
    if hit then return hit end
  end
  return nil
end

local Set = {}
Set.__index = Set

--- set:add(prefix) -> set | nil, err
function Set:add(prefix)
  if type(prefix) ~= "string" then misuse("set:add", "a prefix is a string, got " .. type(prefix)) end
  local net, len = M.parse_prefix(prefix)
  if not net then return nil, len end
  local text = ntop(net) .. "/" .. len
  local fam, w1, w2, w3, w4 = words(net)
  local w = { w1, w2, w3, w4 }
  local node = fam == 4 and self.v4 or self.v6
  local d, bits = level(len)
  for i = 1, d do
    local kid = node.kids[w[i]]
    if not kid then
      kid = new_node()
      node.kids[w[i]] = kid
    end
    node = kid
  end
  len_table(node, bits)[band(w[d + 1], word_mask(bits))] = text
  return self
end

--- set:contains(x) -> true, prefix text | false | nil, err
-- x raw or text; the prefix is the longest match, as canonical text.
function Set:contains(x)
  if type(x) ~= "string" then misuse("set:contains", "an address is a string (raw or text), got " .. type(x)) end
  local fam, w1, w2, w3, w4 = words(x)
  if not fam then return nil, w1 end
  local hit
  if fam == 4 then
    hit = scan(self.v4, w1)
    if hit then return true, hit end
    return false
  end
  local n1 = self.v6
  local n2 = n1.kids[w1]
  if n2 then
    local n3 = n2.kids[w2]
    if n3 then
      local n4 = n3.kids[w3]
      if n4 then hit = scan(n4, w4) end
      if not hit then hit = scan(n3, w3) end
    end
    if not hit then hit = scan(n2, w2) end
  end
  if not hit then hit = scan(n1, w1) end
  if hit then return true, hit end
  return false
end

--- addr.set(list) -> set | nil, err
-- list: prefix texts, IPv4 and IPv6 mixed. The error names the bad entry.
function M.set(list)
  if list ~= nil and type(list) ~= "table" then
    misuse("set", "list is a table of prefix strings, got " .. type(list))
  end
  local s = setmetatable({ v4 = new_node(), v6 = new_node() }, Set)
  for i = 1, list and #list or 0 do
    local p = list[i]
    if type(p) ~= "string" then
      misuse("set", format("entry %d is a %s, not a prefix string", i, type(p)))
    end
    local ok, err = s:add(p)
    if not ok then return nil, format("entry %d: %s", i, err) end
  end
  return s
end

return M
