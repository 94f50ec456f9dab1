-- A small JSON encoder for records built in Lua. Not lua-cjson: Debian's
-- cjson caps numbers at 14 significant digits, which cuts epoch seconds to
-- 0.1 ms. Numbers here keep 16 digits (microseconds), keys are sorted so
-- output is stable. Output is always valid JSON in valid UTF-8: a byte
-- that is not part of a valid UTF-8 sequence becomes U+FFFD; keys are
-- strings or numbers; a function, a cycle or another key type is an error.
local format, concat, sort, floor = string.format, table.concat, table.sort, math.floor
local type, pairs, tostring, byte, find = type, pairs, tostring, string.byte, string.find

local M = {}

local ESCAPES = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

local function escape_char(c)
  return ESCAPES[c] or format("\\u%04x", c:byte())
end

local REPLACEMENT = "\239\191\189" -- U+FFFD

-- The length of the valid UTF-8 sequence at i of s (lead byte b), or nil.
local function utf8_len(s, i, b)
  local n, min
  if b >= 0xC2 and b <= 0xDF then n, min = 2, 0x80
  elseif b >= 0xE0 and b <= 0xEF then n, min = 3, 0x800
  elseif b >= 0xF0 and b <= 0xF4 then n, min = 4, 0x10000
  else return nil end
  local cp = b % (2 ^ (7 - n))
  for j = 1, n - 1 do
    local c = byte(s, i + j)
    if not c or c < 0x80 or c > 0xBF then return nil end
    cp = cp * 64 + c % 64
  end
  if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return nil end
  return n
end

-- s with every byte outside a valid UTF-8 sequence replaced by U+FFFD.
local function valid_utf8(s)
  if not find(s, "[\128-\255]") then return s end
  local out, i, n, from = {}, 1, #s, 1
  while i <= n do
    local b = byte(s, i)
    if b < 0x80 then
      i = i + 1
    else
      local len = utf8_len(s, i, b)
      if len then
        i = i + len
      else
        out[#out + 1] = s:sub(from, i - 1)
        out[#out + 1] = REPLACEMENT
        i = i + 1
        from = i
      end
    end
  end
  if from == 1 then return s end
  out[#out + 1] = s:sub(from)
  return concat(out)
end
M.valid_utf8 = valid_utf8

local function number(n)
  if n ~= n or n == math.huge or n == -math.huge then return "null" end
  if n == floor(n) and n > -2^53 and n < 2^53 then return format("%d", n) end
  return format("%.16g", n)
end

local encode

local function is_array(t)
  local n = #t
  if n == 0 then return false end
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k > n or k ~= floor(k) then return false end
  end
  return true
end

local function string_text(v)
  return '"' .. valid_utf8(v):gsub('[%c"\\]', escape_char) .. '"'
end

function encode(v, depth)
  local tv = type(v)
  if tv == "string" then return string_text(v) end
  if tv == "number" then return number(v) end
  if tv == "boolean" then return tostring(v) end
  if v == nil then return "null" end
  if tv == "cdata" then
    local n = tonumber(v)
    if n == nil then error("cannot encode a cdata that is not a number as JSON", 0) end
    return number(n)
  end
  if tv ~= "table" then error("cannot encode a " .. tv .. " as JSON", 0) end
  if depth > 32 then error("JSON nesting too deep (a cycle?)", 0) end
  local parts = {}
  if is_array(v) then
    for i = 1, #v do parts[i] = encode(v[i], depth + 1) end
    return "[" .. concat(parts, ",") .. "]"
  end
  local keys, text = {}, {}
  for k in pairs(v) do
    local tk = type(k)
    if tk ~= "string" and tk ~= "number" then
      error("cannot encode a table with a " .. tk .. " key as JSON", 0)
    end
    local name = tk == "number" and number(k) or k
    keys[#keys + 1], text[name] = name, k
  end
  sort(keys)
  for i, name in ipairs(keys) do
    parts[i] = string_text(name) .. ":" .. encode(v[text[name]], depth + 1)
  end
  return "{" .. concat(parts, ",") .. "}"
end

function M.encode(v)
  return encode(v, 0)
end

-- Why encode(v) would fail, and where (".key.key"), without encoding:
-- nil when it would not.
local function check(v, depth)
  local tv = type(v)
  if tv ~= "table" then
    if tv == "function" or tv == "thread" or tv == "userdata" then
      return "cannot encode a " .. tv .. " as JSON", ""
    end
    if tv == "cdata" and tonumber(v) == nil then
      -- a handle is valid only in its handler, and records go out after
      return "cannot encode a cdata that is not a number as JSON (a flow or packet handle: " ..
        "its :totable())", ""
    end
    return nil
  end
  if depth > 32 then return "JSON nesting too deep (a cycle?)", "" end
  for k, x in pairs(v) do
    local tk = type(k)
    if tk ~= "string" and tk ~= "number" then
      return "cannot encode a table with a " .. tk .. " key as JSON", ""
    end
    local err, where = check(x, depth + 1)
    if err then return err, "." .. tostring(k) .. where end
  end
  return nil
end

function M.check(v)
  local err, where = check(v, 0)
  if err and where ~= "" then return err .. " (at record" .. where .. ")" end
  return err
end

return M
