-- A clean stop on SIGINT/SIGTERM for runs and worker parents: install()
-- once, then pending() between steps says whether (and which) signal came.
-- The first signal only sets a flag in the core; a second one ends the
-- process the default way (the core never exits on its own).
local C = require("sluice.core").C

local M = {}

function M.install()
  local rc = C.sl_signal_install()
  if rc < 0 then return nil, require("sluice.core").strerror(rc) end
  return true
end

-- The signal number that asked for a stop, or nil.
function M.pending()
  local sig = C.sl_signal_pending()
  return sig ~= 0 and sig or nil
end

return M
