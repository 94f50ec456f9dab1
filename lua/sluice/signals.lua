-- A clean stop on SIGINT/SIGTERM, and a reload on SIGHUP, for runs and
-- worker parents: install() when the run starts and restore() when it ends
-- (what the process had is back); in between, pending() between steps
-- says whether (and which) stop signal came, and the loop that stops for
-- it calls taken(). The first stop signal only sets a flag in the core; a
-- second one ends the process the default way, and so does a watchdog
-- when nothing took the flag within 3 s (a policy handler that never
-- returns). take_reload() is true once for the SIGHUPs since it was last
-- called (several are one reload); SIGHUP never stops a run and has no
-- watchdog. The core itself never exits.
local core = require "sluice.core"
local C = core.C

local M = {}

local NAMES = { [C.SL_SIGINT] = "SIGINT", [C.SL_SIGTERM] = "SIGTERM", [C.SL_SIGHUP] = "SIGHUP" }

function M.install()
  local rc = C.sl_signal_install()
  if rc < 0 then return nil, core.strerror(rc) end
  return true
end

function M.restore()
  C.sl_signal_restore()
end

-- The signal number that asked for a stop, or nil.
function M.pending()
  local sig = C.sl_signal_pending()
  return sig ~= 0 and sig or nil
end

-- The stop has begun: the watchdog is called off.
function M.taken()
  C.sl_signal_taken()
end

-- A SIGHUP came since the last call: true once.
function M.take_reload()
  return C.sl_signal_take_reload() ~= 0
end

function M.name(sig)
  return NAMES[sig] or ("signal " .. tostring(sig))
end

return M
