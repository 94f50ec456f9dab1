-- Slice batches: the records of one closed interval, read in place from the
-- engine's slice array. Valid while on_slice runs.
local M = {}

-- kind: ctx.emit(batch) emits every record (sinks may take it at once)
local Batch = { kind = "slices" }
Batch.__index = Batch

-- engine: the engine's number (sluice.flow's engines), for its flows' tags
function M.new(engine)
  return setmetatable({ n = 0, start = 0, ["end"] = 0, recs = nil, engine = engine }, Batch)
end

function Batch:set(out)
  self.recs = out.slices
  self.n = out.n_slices
  self.start = tonumber(out.slice_start_ns) * 1e-9
  self["end"] = tonumber(out.slice_end_ns) * 1e-9
end

-- for rec in batch:records() do ... end
-- (without the flows this policy turned down in on_flow_start)
function Batch:records()
  local recs, n, i, skip = self.recs, self.n, -1, self.skip
  if skip then
    return function()
      i = i + 1
      while i < n and skip[tonumber(recs[i].fid)] do i = i + 1 end
      if i < n then return recs[i] end
    end
  end
  return function()
    i = i + 1
    if i < n then return recs[i] end
  end
end

-- 1-based access, like a Lua array.
function Batch:get(i)
  if i < 1 or i > self.n then return nil end
  return self.recs[i - 1]
end

function Batch:count()
  return self.n
end

return M
