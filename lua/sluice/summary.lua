-- What workers that share an input (files, stdin) leave at their end,
-- summed into one summary for the parent to print: the counters, the
-- run's report (errors, sink counters, losses), the input's files.
--
--   local summary = require "sluice.summary"
--   local base = summary.new(n)                 -- in the parent, before fork
--   summary.put(base, w, ending)                -- in worker w, at its end
--   local ending, err = summary.collect(base, n) -- in the parent, after all
--   summary.remove(base, n)
--
-- ending = { ok =, err =, report =, stats =, files =, filter =, input =,
--            progress = { frac, pos } } (sluice.cli's run_one).
local cjson = require("cjson").new()

local M = {}

cjson.encode_sparse_array(true)

-- Counters every worker counts alike (each sees every packet's time and
-- every file): the largest, not the sum.
local SAME_IN_ALL = { slices_closed = true, pool_flows = true, stopped_by = true }

-- Sums b into a: numbers add up (but SAME_IN_ALL's), tables merge, other
-- values keep a's (worker 0's) when it has one.
local function add(a, b)
  for k, v in pairs(b) do
    local have = a[k]
    if type(v) == "number" and type(have) == "number" then
      a[k] = SAME_IN_ALL[k] and math.max(have, v) or have + v
    elseif type(v) == "table" and type(have) == "table" then
      add(have, v)
    elseif have == nil then
      a[k] = v
    end
  end
  return a
end

-- A file for each worker's summary, open in the parent and inherited by
-- the workers, its name removed at once: nothing is left behind, even by
-- a parent that is killed.
function M.new(n)
  local files = {}
  for w = 0, n - 1 do
    local name = os.tmpname()
    local f, err = io.open(name, "w+")
    os.remove(name)
    if not f then error("cannot make a file for the workers' summaries: " .. tostring(err), 2) end
    files[w] = f
  end
  return files
end

-- A worker's summary as written (the file's whole text), or nil.
local function read_back(base, w)
  local f = base[w]
  if not f or not f:seek("set") then return nil end
  return f:read("*a")
end

-- In worker w: writes what its run left; returns the exit code the worker
-- ends with (0: the parent tells the run's outcome).
function M.put(base, w, ending)
  local f = base[w]
  local ok = f and f:seek("set") and f:write(cjson.encode {
    ok = ending.ok and true or false,
    err = not ending.ok and ending.err and ("worker " .. w .. ": " .. tostring(ending.err)) or nil,
    report = ending.report, stats = ending.stats, files = ending.files or nil,
    filter = ending.filter, input = ending.input,
    filter_unusable = ending.filter_unusable, filter_note = ending.filter_note,
    progress = { frac = ending.progress[1], pos = ending.progress[2] } })
  if f then ok = f:flush() and ok end
  if not ok then
    io.stderr:write("sluice: worker ", w, ": cannot write its summary\n")
    return 1
  end
  return 0
end

-- In the parent, once worker w ended: the signal that stopped it, if one
-- did (its own, not the parent's SIGTERM).
function M.stopped_by(base, w)
  local ok, t = pcall(cjson.decode, read_back(base, w) or "")
  return ok and type(t) == "table" and type(t.report) == "table" and t.report.stopped_by or nil
end

-- In the parent, once the n workers ended: their sum, or nil and what is
-- missing (a worker that died before writing).
function M.collect(base, n)
  local sum
  for w = 0, n - 1 do
    local ok, t = pcall(cjson.decode, read_back(base, w) or "")
    if not ok or type(t) ~= "table" then
      return nil, "worker " .. w .. " exited without its summary (a policy that ended the process?): " ..
        "the flows it had not written are lost"
    end
    if not sum then
      sum = t
    else
      sum.ok = sum.ok and t.ok
      sum.err = sum.err or t.err
      add(sum.stats, t.stats)
      add(sum.report, t.report or {})
      -- link types each worker met (a shared file's: whoever read it)
      sum.filter_unusable = math.max(sum.filter_unusable or 0, t.filter_unusable or 0)
      sum.filter_note = sum.filter_note or t.filter_note
    end
  end
  sum.progress = { sum.progress.frac, sum.progress.pos }
  return sum
end

function M.remove(base, n)
  for w = 0, n - 1 do base[w]:close() end
end

return M
