-- Policy snapshots on disk. The file is written beside its final name,
-- synced, then renamed over it: a reader (or a restart after kill -9)
-- finds the old file or the new one, never a torn one.
--
-- Format: "sluice-state 1\n", then per policy "NAME LENGTH\n" and LENGTH
-- bytes and "\n", then "end COUNT\n".
local ffi = require "ffi"
local core = require "sluice.core"

local M = {}

local O_WRONLY, O_CREAT, O_TRUNC, O_CLOEXEC = 1, 64, 512, 524288
local O_DIRECTORY = 65536

local function write_all(fd, s)
  local off, n = 0, #s
  local buf = ffi.cast("const char *", s)
  while off < n do
    local w = ffi.C.write(fd, buf + off, n - off)
    if w < 0 then
      local errno = ffi.errno()
      if errno ~= 4 then return nil, core.errno_text(errno) end -- EINTR: again
    else
      off = off + tonumber(w)
    end
  end
  return true
end

-- entries: list of { name = string, data = string }.
function M.encode(entries)
  local parts = { "sluice-state 1\n" }
  for _, e in ipairs(entries) do
    parts[#parts + 1] = string.format("%s %d\n", e.name, #e.data)
    parts[#parts + 1] = e.data
    parts[#parts + 1] = "\n"
  end
  parts[#parts + 1] = string.format("end %d\n", #entries)
  return table.concat(parts)
end

-- Returns name -> data, or nil and what is wrong.
function M.decode(s)
  if s:sub(1, 15) ~= "sluice-state 1\n" then return nil, "not a sluice state file" end
  local pos, out, count = 16, {}, 0
  while true do
    local name, len, after = s:match("^(%S+) (%d+)\n()", pos)
    if not name then break end
    if name == "end" then
      if tonumber(len) ~= count or after ~= #s + 1 then break end
      return out
    end
    len = tonumber(len)
    if after + len > #s or s:sub(after + len, after + len) ~= "\n" then break end
    out[name] = s:sub(after, after + len - 1)
    count = count + 1
    pos = after + len + 1
  end
  return nil, "state file is damaged or incomplete"
end

-- Atomic save: path.tmp written and fsynced, renamed to path, and the
-- directory synced so the rename itself survives a crash.
function M.save(path, entries)
  local tmp = path .. ".tmp"
  local fd = ffi.C.open(tmp, O_WRONLY + O_CREAT + O_TRUNC + O_CLOEXEC, tonumber("644", 8))
  if fd < 0 then return nil, "cannot write " .. tmp .. ": " .. core.errno_text() end
  local ok, err = write_all(fd, M.encode(entries))
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
  local dfd = ffi.C.open(dir == "" and "/" or dir, O_DIRECTORY + O_CLOEXEC, 0)
  if dfd >= 0 then
    ffi.C.fsync(dfd)
    ffi.C.close(dfd)
  end
  return true
end

-- name -> data; an empty table when the file does not exist yet (first
-- start); nil, err when it cannot be read or is damaged.
function M.load(path)
  local f, err, code = io.open(path, "rb")
  if not f then
    if code == 2 then return {} end -- ENOENT
    return nil, err
  end
  local s = f:read("*a")
  f:close()
  local t, derr = M.decode(s)
  if not t then return nil, path .. ": " .. derr end
  return t
end

return M
