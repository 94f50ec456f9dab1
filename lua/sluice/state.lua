-- Policy snapshots on disk: the file format and the atomic save. What a
-- run does with them (keys, restore, trial snapshot, merging) is
-- sluice.snapshots.
--
-- The file is written beside its final name, synced, then renamed over
-- it: a reader (or a restart after kill -9) finds the old file or the new
-- one, never a torn one.
--
-- Format version 2:
--
--   sluice-state 2\n
--   NAME KIND LENGTH\n  LENGTH bytes  \n      one per entry, names sorted
--   end COUNT\n
--
-- NAME is the entry's key (the policy's info.name, see sluice.snapshots)
-- with whitespace, control bytes and '%' written as %XX. KIND is
--   string  the bytes snapshot() returned, as they were
--   json    a table snapshot() returned, as JSON (read with lua-cjson)
--   v1      a string entry carried over from a version-1 file, still
--           under its version-1 key (the policy file's base name)
-- Version 1 ("sluice-state 1\n", "NAME LENGTH\n" per entry, string data
-- keyed by the policy file's base name) is still read; its entries come
-- back with kind "v1". Files are always written as version 2.
--
-- JSON: Debian's lua-cjson (2.1.0) writes numbers with at most 14
-- significant digits (encode_number_precision is capped at 14): 2^53
-- would be written 9.007199254741e+15, 0.1 + 0.2 as 0.3. Tables are
-- therefore written by M.to_json below: integers up to 2^53 as integers,
-- every other number with the fewest of 15, 16 or 17 digits that reads
-- back as the same double. lua-cjson escapes the strings and reads
-- everything back (its decoder keeps every digit).
local ffi = require "ffi"
local bit = require "bit"
local cjson_mod = require "cjson"
local core = require "sluice.core"

local C = core.C
local type, pairs, tostring, tonumber = type, pairs, tostring, tonumber
local format, concat, sort, floor = string.format, table.concat, table.sort, math.floor

local M = {}

M.VERSION = 2
M.MAX_DEPTH = 1000 -- nesting of a table snapshot (lua-cjson's decoder limit)

-- A private lua-cjson instance: its settings are not shared with other
-- users of the module.
local cjson = cjson_mod.new()
cjson.decode_max_depth(M.MAX_DEPTH)
local json_string, json_decode = cjson.encode, cjson.decode

-- ---- JSON of a table snapshot --------------------------------------------

local function number(n)
  if n ~= n or n == math.huge or n == -math.huge then return nil end
  if n == floor(n) and n >= -2^53 and n <= 2^53 and (n ~= 0 or 1 / n > 0) then
    return format("%d", n)
  end
  -- the shortest of 15, 16 or 17 digits that reads back as n
  local s = format("%.15g", n)
  if tonumber(s) ~= n then
    s = format("%.16g", n)
    if tonumber(s) ~= n then s = format("%.17g", n) end
  end
  return s
end

-- Encoding fails with fail.what (and fail.why) set, and each level on the
-- way out adds its key to fail.keys (innermost first): the path is only
-- built for a message, never per value.
local encode_value

local function failed(fail, what, why)
  fail.what, fail.why = what, why
  return nil
end

-- A table is an array (keys exactly 1..n) or an object (string keys only).
local function encode_table(t, depth, open, out, fail)
  if depth >= M.MAX_DEPTH then return failed(fail, "tables nested deeper than " .. M.MAX_DEPTH) end
  if open[t] then return failed(fail, "a cycle", " (a table that holds itself)") end
  if getmetatable(t) ~= nil then return failed(fail, "a table with a metatable") end
  local nstr, nnum, max, bad = 0, 0, 0, nil
  for k in pairs(t) do
    local tk = type(k)
    if tk == "string" then
      nstr = nstr + 1
    elseif tk == "number" and k >= 1 and k == floor(k) then
      nnum = nnum + 1
      if k > max then max = k end
    else
      bad = bad or k
    end
  end
  if bad ~= nil then
    return failed(fail, format("a %s key (%s)", type(bad), tostring(bad)),
      ": keys are strings, or 1..n for a list")
  end
  if nstr > 0 and nnum > 0 then
    return failed(fail, "both string and number keys", ": JSON holds one or the other")
  end
  if nnum > 0 and max ~= nnum then
    return failed(fail, "a list with holes",
      format(": %d values, keys up to %s (a list is 1..n without gaps)", nnum, tostring(max)))
  end
  open[t] = true
  if nnum > 0 then
    out[#out + 1] = "["
    for i = 1, nnum do
      if i > 1 then out[#out + 1] = "," end
      if not encode_value(t[i], depth + 1, open, out, fail) then
        fail.keys[#fail.keys + 1] = i
        return nil
      end
    end
    out[#out + 1] = "]"
  else
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    sort(keys) -- a stable file
    out[#out + 1] = "{"
    for i, k in ipairs(keys) do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = json_string(k)
      out[#out + 1] = ":"
      if not encode_value(t[k], depth + 1, open, out, fail) then
        fail.keys[#fail.keys + 1] = k
        return nil
      end
    end
    out[#out + 1] = "}"
  end
  open[t] = nil
  return true
end

-- Interpreted: in a long busted run the traces of this loop once counted
-- {1, 2} as a list with holes (max stayed 1); snapshots are not a hot path.
jit.off(encode_table)

function encode_value(v, depth, open, out, fail)
  local tv = type(v)
  if tv == "string" then
    out[#out + 1] = json_string(v)
  elseif tv == "number" then
    local s = number(v)
    if not s then return failed(fail, "the number " .. tostring(v), " (JSON has no NaN or infinity)") end
    out[#out + 1] = s
  elseif tv == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif tv == "table" then
    return encode_table(v, depth, open, out, fail)
  else
    return failed(fail, "a " .. tv)
  end
  return true
end

-- How a key reads in a path: .name, ["odd key"] or [3].
local function key_text(k)
  if type(k) == "string" and k:find("^[%a_][%w_]*$") then return "." .. k end
  if type(k) == "string" then return "[" .. format("%q", k) .. "]" end
  return "[" .. tostring(k) .. "]"
end

-- top, then the keys outermost first; a long path keeps its ends.
local function path_text(top, keys)
  local parts, n = { top }, #keys
  for i = n, 1, -1 do
    if n > 12 and i == n - 6 then
      parts[#parts + 1] = format("...(%d more)...", n - 10)
    elseif n <= 12 or i > n - 6 or i <= 4 then
      parts[#parts + 1] = key_text(keys[i])
    end
  end
  return concat(parts)
end

-- The JSON text of a plain table (nested tables of strings, numbers and
-- booleans; lists 1..n or string keys), or nil and what cannot be stored
-- and where, as a path from top (default "snapshot"):
-- "a function at snapshot.hosts[3]".
function M.to_json(t, top)
  local out, fail = {}, { keys = {} }
  if not encode_value(t, 0, {}, out, fail) then
    return nil, fail.what .. " at " .. path_text(top or "snapshot", fail.keys) .. (fail.why or "")
  end
  return concat(out)
end

-- The table a JSON text holds, or nil and the decoder's complaint.
function M.from_json(s)
  local ok, v = pcall(json_decode, s)
  if not ok then return nil, (tostring(v):gsub("^.-:%d+: ", "")) end
  if type(v) ~= "table" then return nil, "JSON holds a " .. type(v) .. ", not a table" end
  return v
end

-- ---- the file -------------------------------------------------------------

local function escape_name(n)
  return (n:gsub("[%s%c%%]", function(c) return format("%%%02X", c:byte()) end))
end

local function unescape_name(n)
  return (n:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- entries: a list of { name = NAME, data = a string or a plain table } or
-- { name = NAME, kind = KIND, raw = the stored bytes } (an entry as read).
-- Returns the file's text. A table that cannot be stored, an empty or
-- repeated name is a caller's mistake: error.
function M.encode(entries)
  local list = {}
  for i, e in ipairs(entries) do
    if type(e.name) ~= "string" or e.name == "" then
      error("state entry " .. i .. " has no name", 2)
    end
    local kind, raw = e.kind, e.raw
    if kind == nil then
      if type(e.data) == "string" then
        kind, raw = "string", e.data
      elseif type(e.data) == "table" then
        local err
        raw, err = M.to_json(e.data)
        if not raw then error("state entry " .. e.name .. ": cannot store " .. err, 2) end
        kind = "json"
      else
        error("state entry " .. e.name .. ": data is a string or a table, not " .. type(e.data), 2)
      end
    elseif type(kind) ~= "string" or not kind:find("^%a[%w_]*$") or type(raw) ~= "string" then
      error("state entry " .. e.name .. ": kind is a word and raw a string", 2)
    end
    list[i] = { name = e.name, kind = kind, raw = raw }
  end
  sort(list, function(a, b) return a.name < b.name end)
  local parts = { "sluice-state ", M.VERSION, "\n" }
  for i, e in ipairs(list) do
    if i > 1 and e.name == list[i - 1].name then error("state entry " .. e.name .. " is repeated", 2) end
    parts[#parts + 1] = format("%s %s %d\n", escape_name(e.name), e.kind, #e.raw)
    parts[#parts + 1] = e.raw
    parts[#parts + 1] = "\n"
  end
  parts[#parts + 1] = format("end %d\n", #list)
  return concat(parts)
end

-- The entries of a state file's text: { version = 1 or 2, entries = { NAME
-- = { kind = KIND, raw = BYTES } } }, or nil and what is wrong, worded to
-- follow "state file PATH ": "is not a sluice state file", "is damaged or
-- incomplete", "has format version 3, ...". Entries are not decoded here
-- (see M.value).
function M.parse(s)
  local version, pos = s:match("^sluice%-state (%d+)\n()")
  if not version then return nil, "is not a sluice state file" end
  version = tonumber(version)
  if version > M.VERSION or version < 1 then
    return nil, format("has format version %d; this sluice reads versions 1 to %d", version, M.VERSION)
  end
  local entries, count = {}, 0
  while true do
    -- the terminator; a policy may be named "end" too (version 1 wrote
    -- "end LEN"): a line that does not end the file is an entry
    local n, after = s:match("^end (%d+)\n()", pos)
    if n and tonumber(n) == count and after == #s + 1 then
      return { version = version, entries = entries }
    end
    local name, kind, len
    if version == 1 then
      name, len, after = s:match("^(%S+) (%d+)\n()", pos)
      kind = "v1"
    else
      name, kind, len, after = s:match("^(%S+) (%a[%w_]*) (%d+)\n()", pos)
      if name then name = unescape_name(name) end
    end
    if not name then break end
    len = tonumber(len)
    if after + len > #s or s:sub(after + len, after + len) ~= "\n" or entries[name] then break end
    entries[name] = { kind = kind, raw = s:sub(after, after + len - 1) }
    count = count + 1
    pos = after + len + 1
  end
  return nil, "is damaged or incomplete"
end

-- What an entry holds: the string, or the decoded table. nil and why for
-- an entry that does not decode or whose kind this sluice does not know.
function M.value(entry)
  local kind = entry.kind
  if kind == "string" or kind == "v1" then return entry.raw end
  if kind == "json" then
    local v, err = M.from_json(entry.raw)
    if v == nil then return nil, "bad JSON: " .. err end
    return v
  end
  return nil, "unknown kind '" .. tostring(kind) .. "' (written by a newer sluice?)"
end

-- name -> value of every entry of a parsed file, or nil and "LABEL: entry
-- for policy NAME: ..." for the first that does not decode.
local function values(doc, label)
  local out = {}
  for name, e in pairs(doc.entries) do
    local v, err = M.value(e)
    if v == nil then return nil, label .. ": entry for policy " .. name .. ": " .. err end
    out[name] = v
  end
  return out
end

-- name -> value of a state file's text (strings, decoded tables), or nil
-- and what is wrong. label names the text in messages ("state file").
function M.decode(s, label)
  label = label or "state file"
  local doc, err = M.parse(s)
  if not doc then return nil, label .. " " .. err end
  return values(doc, label)
end

local function write_all(fd, s)
  local off, n = 0, #s
  local buf = ffi.cast("const char *", s)
  while off < n do
    local w = ffi.C.write(fd, buf + off, n - off)
    if w < 0 then
      local errno = ffi.errno()
      if errno ~= C.SL_EINTR then return nil, core.errno_text(errno) end
    else
      off = off + tonumber(w)
    end
  end
  return true
end

-- path.tmp made afresh: whatever was there (a symlink, which would be
-- followed to a file it would truncate; a FIFO, which would block) is
-- removed first, and the open refuses anything that takes its place.
local function create_tmp(tmp)
  os.remove(tmp)
  return ffi.C.open(tmp, bit.bor(C.SL_O_WRONLY, C.SL_O_CREAT, C.SL_O_EXCL, C.SL_O_NOFOLLOW,
    C.SL_O_CLOEXEC), tonumber("644", 8))
end

-- The file a path names: a symbolic link's target (replacing the link by
-- renaming over it would leave its target stale), else the path itself.
local function target(path)
  return core.realpath(path) or path
end

-- Atomic save: path.tmp written and fsynced, renamed to path, and the
-- directory synced so the rename itself survives a crash. entries as for
-- M.encode. Returns true, or nil and what failed.
function M.save(path, entries)
  path = target(path)
  local text = M.encode(entries)
  local tmp = path .. ".tmp"
  local fd = create_tmp(tmp)
  if fd < 0 then return nil, "cannot write " .. tmp .. ": " .. core.errno_text() end
  local ok, err = write_all(fd, text)
  if ok and ffi.C.fsync(fd) ~= 0 then ok, err = nil, core.errno_text() end
  ffi.C.close(fd)
  if not ok then
    os.remove(tmp)
    return nil, "cannot write " .. tmp .. ": " .. err
  end
  if ffi.C.rename(tmp, path) ~= 0 then
    local e = core.errno_text()
    os.remove(tmp)
    return nil, "cannot rename " .. tmp .. " to " .. path .. ": " .. e
  end
  local dir = path:match("^(.*)/[^/]*$") or "."
  local dfd = ffi.C.open(dir == "" and "/" or dir, bit.bor(C.SL_O_DIRECTORY, C.SL_O_CLOEXEC), 0)
  if dfd >= 0 then
    ffi.C.fsync(dfd)
    ffi.C.close(dfd)
  end
  return true
end

-- Whether path.tmp, where M.save writes first, can be created (a missing
-- directory, a read-only file system): checked before data, so that a run
-- does not learn at its end that its policies' state cannot be kept.
-- Returns true, or nil and why.
function M.check_writable(path)
  local tmp = target(path) .. ".tmp"
  local fd = create_tmp(tmp)
  if fd < 0 then return nil, "cannot write " .. tmp .. ": " .. core.errno_text() end
  ffi.C.close(fd)
  os.remove(tmp)
  return true
end

-- A state file is replaced whole (written beside it, renamed over it): it
-- must be a regular file or absent. Returns true, or nil and why.
function M.check_path(path)
  local kind = C.sl_path_kind(path)
  if kind >= 0 then return true end
  if kind == -C.SL_EISDIR then return nil, "state file " .. path .. " is a directory" end
  if kind == -C.SL_ENOTSUP then
    return nil, "state file " .. path .. " is not a regular file (a device, FIFO or socket)"
  end
  return nil, "state file " .. path .. ": " .. core.strerror(kind)
end

-- The parsed file (see M.parse), with no entries when it does not exist
-- yet (a first start); nil and "state file PATH ..." when it cannot be
-- read, is damaged or is not a state file.
function M.read(path)
  local okp, perr = M.check_path(path)
  if not okp then return nil, perr end
  local f, err, code = io.open(path, "rb")
  if not f then
    if code == C.SL_ENOENT then return { version = nil, entries = {} } end
    return nil, "state file " .. err
  end
  local s, rerr = f:read("*a")
  f:close()
  if not s then return nil, "state file " .. path .. ": " .. tostring(rerr) end
  local doc, derr = M.parse(s)
  if not doc then return nil, "state file " .. path .. " " .. derr end
  return doc
end

-- name -> value (the string, or the decoded table); an empty table when
-- the file does not exist yet; nil, err when it cannot be read, is
-- damaged, or an entry does not decode.
function M.load(path)
  local doc, err = M.read(path)
  if not doc then return nil, err end
  return values(doc, "state file " .. path)
end

return M
