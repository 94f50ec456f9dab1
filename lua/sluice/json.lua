-- A small JSON encoder for records built in Lua. Not lua-cjson: Debian's
-- cjson caps numbers at 14 significant digits, which cuts epoch seconds to
-- 0.1 ms. Numbers here keep 16 digits (microseconds), keys are sorted so
-- output is stable.
local format, concat, sort, floor = string.format, table.concat, table.sort, math.floor
local type, pairs, tostring = type, pairs, tostring

local M = {}

local ESCAPES = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

local function escape_char(c)
  return ESCAPES[c] or format("\\u%04x", c:byte())
end

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

function encode(v, depth)
  local tv = type(v)
  if tv == "string" then return '"' .. v:gsub('[%c"\\]', escape_char) .. '"' end
  if tv == "number" then return number(v) end
  if tv == "boolean" then return tostring(v) end
  if v == nil then return "null" end
  if tv == "cdata" then return number(tonumber(v)) end
  if tv ~= "table" then error("cannot encode a " .. tv .. " as JSON", 3) end
  if depth > 32 then error("JSON nesting too deep (a cycle?)", 3) end
  local parts = {}
  if is_array(v) then
    for i = 1, #v do parts[i] = encode(v[i], depth + 1) end
    return "[" .. concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  sort(keys)
  for i, k in ipairs(keys) do
    local val = v[k]
    if val == nil then val = v[tonumber(k)] end
    parts[i] = encode(k, depth + 1) .. ":" .. encode(val, depth + 1)
  end
  return "{" .. concat(parts, ",") .. "}"
end

function M.encode(v)
  return encode(v, 0)
end

return M
