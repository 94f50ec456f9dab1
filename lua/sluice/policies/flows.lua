-- The policy used when none is given: every ended flow and, with slices,
-- every slice record, to the default output.
local P = { info = { name = "flows", options = {} } }

local emit

function P.init(_, ctx)
  emit = ctx.emit
end

function P.on_flow_end(flow)
  emit(flow:json())
end

function P.on_slice(batch)
  for rec in batch:records() do
    emit(rec:json())
  end
end

return P
