-- Worker processes and privileges, for the command line: N workers, each
-- a process with its own source share, flow table and Lua state, and
-- drop_privileges(name) as tcpdump -Z.
--
--   local workers = require "sluice.workers"
--   local ok, err = workers.run(4, function(w) return run_one(w) end)
--   local ok, err = workers.drop_privileges("nobody")
local bit = require "bit"
local ffi = require "ffi"
local core = require "sluice.core"
local report = require "sluice.report"

local S = core.C

-- libc, under names no other module can declare (the symbols are
-- redirected with asm labels), so a later cdef of fork or kill elsewhere
-- cannot clash with these.
ffi.cdef [[
int sluice_workers_fork(void) __asm__("fork");
int sluice_workers_getpid(void) __asm__("getpid");
int sluice_workers_setpgid(int pid, int pgid) __asm__("setpgid");
int sluice_workers_waitpid(int pid, int *status, int options) __asm__("waitpid");
int sluice_workers_kill(int pid, int sig) __asm__("kill");
int sluice_workers_prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4,
                         unsigned long arg5) __asm__("prctl");
struct sluice_workers_passwd { char *pw_name; char *pw_passwd; unsigned pw_uid; unsigned pw_gid; };
struct sluice_workers_passwd *sluice_workers_getpwnam(const char *name) __asm__("getpwnam");
int sluice_workers_setgroups(size_t size, const unsigned *list) __asm__("setgroups");
int sluice_workers_setgid(unsigned gid) __asm__("setgid");
int sluice_workers_setuid(unsigned uid) __asm__("setuid");
int sluice_workers_euidaccess(const char *path, int mode) __asm__("euidaccess");
int sluice_workers_setegid(unsigned gid) __asm__("setegid");
int sluice_workers_seteuid(unsigned uid) __asm__("seteuid");
unsigned sluice_workers_getegid(void) __asm__("getegid");
unsigned sluice_workers_geteuid(void) __asm__("geteuid");
char *sluice_workers_strsignal(int sig) __asm__("strsignal");
void *sluice_workers_signal(int sig, void *handler) __asm__("signal");
]]
local C = ffi.C

local M = {}

-- The SIGINT/SIGTERM (and SIGHUP) flags the parent waits on.
local signals = require "sluice.signals"

-- how long the parent sleeps at most between looks at its signals: a
-- worker that ends or a signal wakes it at once
local POLL_MS = 20

function M.pid()
  return C.sluice_workers_getpid()
end

-- A wait status in words: a worker killed by a signal (the OOM killer's
-- SIGKILL, a crash) could not say so itself.
local function status_text(st)
  local sig = bit.band(st, 0x7f)
  if sig ~= 0 and sig ~= 0x7f then
    return "was killed by signal " .. sig .. " (" .. ffi.string(C.sluice_workers_strsignal(sig)) .. ")"
  end
  return "failed with exit status " .. bit.rshift(st, 8)
end

-- One SIGTERM per worker (sent, by pid, says who had theirs): a second
-- one ends a worker the default way, losing what it had not written.
local function terminate(pids, sent)
  for pid in pairs(pids) do
    if not sent[pid] then
      sent[pid] = true
      C.sluice_workers_kill(pid, S.SL_SIGTERM)
    end
  end
end

-- In the child: its own process group (a terminal's SIGINT reaches the
-- parent only), SIGTERM when the parent dies, then fn(w) and exit with
-- what it returns, closing the Lua state (finalizers detach XDP programs).
local function child(fn, w)
  local me = C.sluice_workers_getpid()
  -- workers share stderr: a line written in parts (Lua's write(a, b), the
  -- core's fprintf) came out interleaved with another worker's
  io.stderr:setvbuf("line")
  S.sl_signal_child_block(0)
  S.sl_signal_worker()
  S.sl_signal_hold(0)
  C.sluice_workers_setpgid(me, me)
  C.sluice_workers_prctl(S.SL_PR_SET_PDEATHSIG, S.SL_SIGTERM, 0, 0, 0)
  local ok, code = pcall(fn, w)
  if not ok then
    io.stderr:write("sluice: worker ", w, ": ", tostring(code), "\n")
    code = 1
  end
  -- its run is over: a stop now changes nothing, and the handlers (and
  -- the watchdog's) live in the core library, which closing the Lua
  -- state unloads; a SIGTERM from the parent then jumped into unmapped
  -- memory (the worker died of SIGSEGV, its exit status lost)
  local ignore = ffi.cast("void *", 1) -- SIG_IGN
  for _, sig in ipairs { S.SL_SIGTERM, S.SL_SIGINT, S.SL_SIGHUP, S.SL_SIGALRM } do
    C.sluice_workers_signal(sig, ignore)
  end
  os.exit(code or 0, true)
end

-- Waits for every worker. The first signal to the parent becomes one
-- SIGTERM to each worker (each stops cleanly once); each SIGHUP one
-- SIGHUP to each worker (each reloads its policy files); a worker that fails
-- stops the rest, as a partial capture is no capture (one that completed
-- with losses is no failure), and so does one that exited cleanly but that
-- ended(w) (if given) says left its work unfinished (the text of why); one
-- that ended(w) says a signal stopped (nil and the signal) stops the rest
-- as a signal to the parent does.
-- Returns the first failed worker's number and status, or nil and whether
-- any worker completed with losses.
local function wait_all(pids, ended, sent)
  sent = sent or {}
  local status = ffi.new("int[1]")
  local forwarded, failed, why, lossy = false, nil, nil, false
  local statuses = {}
  while next(pids) do
    for pid, w in pairs(pids) do
      local r = C.sluice_workers_waitpid(pid, status, S.SL_WNOHANG)
      local errno = r < 0 and ffi.errno()
      if r == pid or (errno and errno ~= S.SL_EINTR) then
        pids[pid] = nil
        local st = r == pid and status[0] or nil
        statuses[w] = st
        -- a wait status: the exit code in bits 8..15, no signal
        if st == report.EXIT_LOSSES * 256 then
          lossy, st = true, 0
        end
        local unfinished, stop
        if st == 0 and ended then unfinished, stop = ended(w) end
        if stop and not forwarded and not failed then
          -- a worker stopped by a signal of its own: the run stops
          M.stopped_by, forwarded = stop, true
          terminate(pids, sent)
        end
        if (st ~= 0 or unfinished) and not failed then
          failed, why = w, unfinished or st and status_text(st) or
            ("could not be waited for: " .. core.errno_text(errno))
          terminate(pids, sent)
        end
      end
    end
    if next(pids) then
      if not forwarded and signals.pending() then
        -- the signal the workers' SIGTERM stands for, for the summary
        M.stopped_by = signals.pending()
        signals.taken()
        forwarded = true
        terminate(pids, sent)
      end
      -- SIGHUP: each worker reloads its policies
      if not forwarded and signals.take_reload() then
        for pid in pairs(pids) do C.sluice_workers_kill(pid, S.SL_SIGHUP) end
      end
      S.sl_signal_child_wait(POLL_MS)
    end
  end
  S.sl_signal_child_block(0)
  signals.restore()
  return failed, why, lossy, statuses
end

-- Interpreted: once this loop was compiled, Debian's LuaJIT (2.1 beta3)
-- now and then passed ended's FFI calls another number than w (worker 0
-- for 5: one run in fifty of eight workers then stopped a finished run).
-- It turns a few times a second; nothing here is worth a trace.
jit.off(wait_all, true)

-- workers.run(n, fn[, started[, ended]]): runs fn(w) for w = 0 .. n-1,
-- each in a process of its own; fn returns the worker's exit code (an
-- error in it is printed and exits 1). started(), if given, runs in the
-- parent once every worker is forked; ended(w), once worker w exited 0:
-- a text there makes it a failure (it ended without finishing). Returns
-- true and the exit code for the whole once every worker exited 0 or
-- EXIT_LOSSES (the latter when any did); false, err, the workers' wait
-- statuses (by worker) and the failed one's number when one failed (err
-- says how it ended; the others were stopped);
-- nil, err when the workers could not be started.
function M.run(n, fn, started, ended)
  if type(n) ~= "number" or n < 1 or n ~= math.floor(n) then
    error("workers.run: n must be a positive integer", 2)
  end
  if type(fn) ~= "function" then error("workers.run: fn must be a function", 2) end
  io.stdout:flush()
  io.stderr:flush()
  -- caught from before the first fork: a worker inherits the handlers, so
  -- a SIGHUP forwarded before its run began is a reload at its first step
  -- (not the default action, which would end it); wait_all restores
  signals.install()
  S.sl_signal_child_block(1)
  M.stopped_by = nil
  local pids = {}
  -- a stop during the forks is handled once all are forked (sluice.h)
  S.sl_signal_hold(1)
  for w = 0, n - 1 do
    local pid = C.sluice_workers_fork()
    if pid < 0 then
      local err = "fork failed: " .. core.errno_text()
      local sent = {}
      S.sl_signal_hold(0)
      terminate(pids, sent)
      wait_all(pids, nil, sent)
      return nil, err
    end
    if pid == 0 then child(fn, w) end
    pids[pid] = w
  end
  S.sl_signal_hold(0)
  if started then started() end
  local failed, why, lossy, statuses = wait_all(pids, ended)
  if failed then return false, "worker " .. failed .. " " .. why, statuses, failed end
  return true, lossy and report.EXIT_LOSSES or report.EXIT_OK
end

-- The user's uid and gid, or nil and why.
local function user_ids(name)
  local pw = C.sluice_workers_getpwnam(name)
  if pw == nil then return nil, "no user named '" .. name .. "'" end
  return pw.pw_uid, pw.pw_gid
end

-- As tcpdump -Z: once the input is open, run as the user NAME (its uid and
-- gid, no supplementary groups). Returns true, or nil, err.
function M.drop_privileges(name)
  if type(name) ~= "string" then error("drop_privileges: name must be a string", 2) end
  local uid, gid = user_ids(name)
  if not uid then return nil, gid end
  if C.sluice_workers_setgroups(0, nil) ~= 0 or C.sluice_workers_setgid(gid) ~= 0 or
     C.sluice_workers_setuid(uid) ~= 0 then
    return nil, "cannot change user to '" .. name .. "': " .. core.errno_text()
  end
  -- nothing run from here on (a policy's os.execute) gains privileges back
  if C.sluice_workers_prctl(S.SL_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ~= 0 then
    return nil, "cannot set no_new_privs: " .. core.errno_text()
  end
  return true
end

-- Could user name create files in dir once drop_privileges(name) ran?
-- Asked before: the effective IDs become the user's (no supplementary
-- groups, as after the drop) for the question, then go back. nil, why if
-- the user does not exist or the IDs cannot change.
function M.writable_dir_as(name, dir)
  local uid, gid = user_ids(name)
  if not uid then return nil, gid end
  local euid, egid = C.sluice_workers_geteuid(), C.sluice_workers_getegid()
  if C.sluice_workers_setgroups(0, nil) ~= 0 or C.sluice_workers_setegid(gid) ~= 0 or
     C.sluice_workers_seteuid(uid) ~= 0 then
    local why = core.errno_text()
    C.sluice_workers_setegid(egid)
    return nil, "cannot change user to '" .. name .. "': " .. why
  end
  local ok = C.sluice_workers_euidaccess(dir, S.SL_W_OK) == 0
  if C.sluice_workers_seteuid(euid) ~= 0 or C.sluice_workers_setegid(egid) ~= 0 then
    return nil, "cannot change back from user '" .. name .. "': " .. core.errno_text()
  end
  return ok
end

return M
