-- The FFI handle to libsluice, loaded once. The cdefs are generated from
-- core/include/sluice.h (see core_h.lua); nothing here declares C by hand
-- except the few libc functions the Lua side needs, all of them here.
local ffi = require "ffi"

ffi.cdef(require "sluice.core_h")
ffi.cdef [[
int isatty(int fd);
int gethostname(char *name, size_t len);
int poll(void *fds, unsigned long nfds, int timeout);
struct sl_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk, struct sl_timespec *ts);
struct sl_rusage { long utime[2]; long stime[2]; long maxrss; long rest[13]; };
int getrusage(int who, struct sl_rusage *usage);
size_t strnlen(const char *s, size_t maxlen);
int inet_pton(int af, const char *src, void *dst);
const char *inet_ntop(int af, const void *src, char *dst, unsigned size);
int open(const char *path, int flags, int mode);
long write(int fd, const void *buf, size_t n);
int fsync(int fd);
int close(int fd);
int rename(const char *from, const char *to);
char *realpath(const char *path, char *resolved);
void free(void *p);
char *strerror(int errnum);
int socket(int domain, int type, int protocol);
int connect(int fd, const void *addr, unsigned len);
long send(int fd, const void *buf, size_t n, int flags);
int getsockopt(int fd, int level, int name, void *val, unsigned *len);
int setsockopt(int fd, int level, int name, const void *val, unsigned len);
int bind(int fd, const void *addr, unsigned len);
int listen(int fd, int backlog);
int accept4(int fd, void *addr, unsigned *len, int flags);
long recv(int fd, void *buf, size_t n, int flags);
struct sl_sockaddr_in { uint16_t family; uint16_t port; uint8_t addr[4]; uint8_t zero[8]; };
struct sl_sockaddr_in6 { uint16_t family; uint16_t port; uint32_t flow; uint8_t addr[16]; uint32_t scope; };
struct sl_sockaddr_un { uint16_t family; char path[108]; };
]]

local function find_library()
  local override = os.getenv("SLUICE_CORE")
  if override and override ~= "" then return override end
  local path = package.searchpath("sluice_core", package.cpath)
  if not path then
    error("sluice_core.so not found in package.cpath (" .. package.cpath ..
          "); build it with `make` or install the rock", 3)
  end
  return path
end

-- The library must speak the ABI of the header these modules were
-- generated from (C.SL_ABI_VERSION, in core_h.lua). Checked before any
-- other symbol is used: a stale or foreign build fails here with one line
-- (level 0: no position prefix), not later with a missing symbol or a
-- struct read at the wrong offsets.
local function load_checked(path)
  local ok, lib = pcall(ffi.load, path)
  if not ok then
    error("sluice: cannot load core library " .. path .. ": " .. tostring(lib) ..
          ": build it (make) or reinstall the rock", 0)
  end
  local want = lib.SL_ABI_VERSION
  local has, fn = pcall(function() return lib.sl_abi_version end)
  local what
  if not has then
    what = "predates ABI versions (no sl_abi_version)"
  else
    local got = tonumber(fn())
    if got ~= want then what = "is ABI " .. tostring(got) end
  end
  if what then
    error(string.format("sluice: core library %s %s, these Lua modules need ABI %d: " ..
                        "rebuild it (make) or reinstall the rock", path, what, want), 0)
  end
  return lib
end

local M = { C = load_checked(find_library()) }
local C = M.C

function M.strerror(code)
  return ffi.string(C.sl_strerror(code))
end

local ts = ffi.new("struct sl_timespec")
-- Monotonic seconds, for progress and rates.
function M.monotonic()
  ffi.C.clock_gettime(C.SL_CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local ru = ffi.new("struct sl_rusage")
-- Peak resident set size of this process, in bytes.
function M.peak_rss()
  ffi.C.getrusage(C.SL_RUSAGE_SELF, ru)
  return tonumber(ru.maxrss) * 1024
end

-- Text of the current errno.
function M.errno_text(errno)
  return ffi.string(ffi.C.strerror(errno or ffi.errno()))
end

function M.isatty(fd)
  return ffi.C.isatty(fd) == 1
end

-- The absolute path of an existing file, its links resolved; nil if none.
function M.realpath(path)
  local p = ffi.C.realpath(path, nil)
  if p == nil then return nil end
  local t = ffi.string(p)
  ffi.C.free(p)
  return t
end

-- One name for each file a path may name, existing or to be created (its
-- directory resolved): ./x, x and a link to x are one file.
function M.file_identity(path)
  local real = M.realpath(path)
  if real then return real end
  local dir, base = path:match("^(.*)/([^/]*)$")
  if not dir then dir, base = ".", path end
  real = M.realpath(dir == "" and "/" or dir)
  return real and (real .. "/" .. base) or path
end

-- The decimal text of a count (never negative): a uint64 cdata exactly; a
-- number (a count taken with tonumber, exact below 2^53) as a whole
-- number. string.format("%d") of a number at or above 2^63 gives
-- -9223372036854775808, and counts summed from records reach 2^64 - 1
-- (the core saturates them there: tonumber makes that 2^64).
local U64_MAX_TEXT = "18446744073709551615"
function M.count_text(v)
  if type(v) == "cdata" then return (tostring(ffi.cast("uint64_t", v)):gsub("ULL$", "")) end
  if v < 2^53 then return string.format("%d", v) end
  if v >= 2^64 then return U64_MAX_TEXT end
  return string.format("%.0f", v)
end

return M
