-- Non-blocking client sockets for sinks: "udp:HOST:PORT", "tcp:HOST:PORT"
-- (HOST numeric, IPv6 in brackets, or localhost) and "unix:PATH" (stream).
-- send() never blocks: a full socket buffer is a transient failure.
local ffi = require "ffi"
local core = require "sluice.core"

local C = ffi.C -- libc (declared in sluice.core)
local K = core.C -- the system constants of sluice.h (enum sl_sys)
local M = {}

local AF_UNIX, AF_INET, AF_INET6 = K.SL_AF_UNIX, K.SL_AF_INET, K.SL_AF_INET6
local SOCK_STREAM, SOCK_DGRAM = K.SL_SOCK_STREAM, K.SL_SOCK_DGRAM
local SOCK_NONBLOCK, SOCK_CLOEXEC = K.SL_SOCK_NONBLOCK, K.SL_SOCK_CLOEXEC
local MSG_DONTWAIT, MSG_NOSIGNAL = K.SL_MSG_DONTWAIT, K.SL_MSG_NOSIGNAL
local EINTR, EAGAIN, EINPROGRESS = K.SL_EINTR, K.SL_EAGAIN, K.SL_EINPROGRESS
local SOL_SOCKET, SO_ERROR = K.SL_SOL_SOCKET, K.SL_SO_ERROR
-- sun_path's size, from the declaration (the path and its NUL)
local SUN_PATH_MAX = ffi.sizeof("struct sl_sockaddr_un") - ffi.offsetof("struct sl_sockaddr_un", "path")

local function htons(p)
  return bit.bor(bit.rshift(p, 8), bit.lshift(bit.band(p, 0xff), 8))
end

-- Parses an address; returns { family, type, sockaddr, len, text }.
function M.parse(spec)
  if type(spec) ~= "string" then return nil, "an address is a string" end
  local kind, rest = spec:match("^(%a+):(.+)$")
  if kind == "unix" then
    if #rest >= SUN_PATH_MAX then return nil, "unix socket path too long" end
    local sa = ffi.new("struct sl_sockaddr_un")
    sa.family = AF_UNIX
    ffi.copy(sa.path, rest)
    return { family = AF_UNIX, type = SOCK_STREAM, sa = sa, len = ffi.sizeof(sa), text = spec }
  end
  if kind ~= "udp" and kind ~= "tcp" then
    return nil, "expected udp:HOST:PORT, tcp:HOST:PORT or unix:PATH, got '" .. spec .. "'"
  end
  local host, port = rest:match("^%[(.+)%]:(%d+)$")
  if not host then host, port = rest:match("^([^:]+):(%d+)$") end
  port = tonumber(port)
  if not host or not port or port < 1 or port > 65535 then
    return nil, "expected HOST:PORT (IPv6 as [ADDR]:PORT), got '" .. rest .. "'"
  end
  if host == "localhost" then host = "127.0.0.1" end
  local a = { type = kind == "udp" and SOCK_DGRAM or SOCK_STREAM, text = spec }
  if host:find(":", 1, true) then
    local sa = ffi.new("struct sl_sockaddr_in6")
    if C.inet_pton(AF_INET6, host, sa.addr) ~= 1 then return nil, "bad IPv6 address '" .. host .. "'" end
    sa.family, sa.port = AF_INET6, htons(port)
    a.family, a.sa, a.len = AF_INET6, sa, ffi.sizeof(sa)
  else
    local sa = ffi.new("struct sl_sockaddr_in")
    if C.inet_pton(AF_INET, host, sa.addr) ~= 1 then
      return nil, "bad IPv4 address '" .. host .. "' (names are not resolved)"
    end
    sa.family, sa.port = AF_INET, htons(port)
    a.family, a.sa, a.len = AF_INET, sa, ffi.sizeof(sa)
  end
  return a
end

local Sock = {}
Sock.__index = Sock

-- Connects (in the background for tcp); nil, err only for a bad address.
function M.connect(spec)
  local a, err = M.parse(spec)
  if not a then return nil, err end
  local s = setmetatable({ addr = a, fd = -1, stream = a.type == SOCK_STREAM }, Sock)
  s:reconnect()
  return s
end

-- Opens a fresh socket; the connect of a stream completes later (send
-- reports EAGAIN until it does).
function Sock:reconnect()
  self:close()
  local a = self.addr
  local fd = C.socket(a.family, a.type + SOCK_NONBLOCK + SOCK_CLOEXEC, 0)
  if fd < 0 then
    self.err = core.errno_text()
    return false
  end
  self.fd = fd
  self.connects = (self.connects or 0) + 1
  if C.connect(fd, a.sa, a.len) ~= 0 then
    local errno = ffi.errno()
    if errno ~= EINPROGRESS and errno ~= EAGAIN then
      self.err = core.errno_text(errno)
      self:close()
      return false
    end
  end
  return true
end

-- Sends bytes; returns the count sent (maybe fewer than asked on a
-- stream), or nil, err, retry (retry: worth trying again later).
function Sock:send(buf, len)
  if self.fd < 0 then return nil, self.err or "not connected", true end
  while true do
    local n = C.send(self.fd, buf, len, MSG_DONTWAIT + MSG_NOSIGNAL)
    if n >= 0 then return tonumber(n) end
    local errno = ffi.errno()
    if errno ~= EINTR then
      if errno == EAGAIN then return nil, "would block", true end
      local err = core.errno_text(errno)
      -- a broken stream is reopened; the next send tries the new one
      if self.stream then self:reconnect() end
      return nil, err, true
    end
  end
end

-- Whether a stream's connect finished without error.
function Sock:connected()
  if self.fd < 0 then return false end
  local v = ffi.new("int[1]")
  local len = ffi.new("unsigned[1]", ffi.sizeof(v))
  return C.getsockopt(self.fd, SOL_SOCKET, SO_ERROR, v, len) == 0 and v[0] == 0
end

function Sock:close()
  if self.fd >= 0 then C.close(self.fd) end
  self.fd = -1
end

return M
