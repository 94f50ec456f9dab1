-- Background processes for specs: spawn a shell command, see whether it
-- exited, wait for it with a deadline, stop leftovers at teardown.
--   local proc = require "support.proc"
--   local h = proc.spawn(cmd); ...; local r = proc.finish(h, 30)
--   after_each(proc.kill_leftovers)
local ffi = require "ffi"
local run = require "support.run"
local core = require "sluice.core"

pcall(ffi.cdef, "int kill(int pid, int sig);")
pcall(ffi.cdef, "int usleep(unsigned int usec);")

local C, S = ffi.C, core.C
local monotonic, q = core.monotonic, run.q

local M = {}

local live = {} -- pid -> true, killed at teardown if still running

local function sleep(secs)
  C.usleep(math.floor(secs * 1e6))
end

-- Starts cmd (in the repo root) in the background: its stdout, stderr,
-- pid and exit code go to files in a directory of its own. Returns the
-- handle { cmd, dir, pid }.
function M.spawn(cmd)
  local d = run.tmpdir()
  os.execute(string.format(
    "cd %s && { %s >%s 2>%s </dev/null & echo $! >%s; wait $!; echo $? >%s; } >/dev/null 2>&1 &",
    q(run.root), cmd, q(d .. "/out"), q(d .. "/err"), q(d .. "/pid"), q(d .. "/rc")))
  local h = { cmd = cmd, dir = d }
  local deadline = monotonic() + 5
  while not h.pid do
    h.pid = tonumber(run.slurp(d .. "/pid") or "")
    if not h.pid then
      assert(monotonic() < deadline, "could not start: " .. cmd)
      sleep(0.005)
    end
  end
  live[h.pid] = true
  return h
end

-- The exit code, or nil while it runs.
function M.exited(h)
  local rc = run.slurp(h.dir .. "/rc")
  return rc and rc:match("%d+") and tonumber(rc:match("%d+"))
end

-- { cmd, code, out, err } as run.sh gives them.
function M.result(h)
  return { cmd = h.cmd, code = M.exited(h) or -1, out = run.slurp(h.dir .. "/out") or "",
    err = run.slurp(h.dir .. "/err") or "" }
end

-- Waits for the process to exit (at most secs); on a timeout it is
-- stopped (SIGTERM, then SIGKILL) and the test fails.
function M.finish(h, secs)
  local deadline = monotonic() + secs
  while not M.exited(h) do
    if monotonic() > deadline then
      C.kill(h.pid, S.SL_SIGTERM)
      local d2 = monotonic() + 3
      while not M.exited(h) and monotonic() < d2 do sleep(0.02) end
      if not M.exited(h) then C.kill(h.pid, 9) end
      live[h.pid] = nil
      error("still running after " .. secs .. " s (stopped now): " .. h.cmd .. "\nstderr:\n" ..
        (run.slurp(h.dir .. "/err") or ""))
    end
    sleep(0.02)
  end
  live[h.pid] = nil
  return M.result(h)
end

-- Sends sig (a number) to the process.
function M.signal(h, sig)
  C.kill(h.pid, sig)
end

function M.kill_leftovers()
  for pid in pairs(live) do C.kill(pid, 9) end
  live = {}
end

return M
