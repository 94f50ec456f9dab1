-- The policy used when none is given: every ended flow and, with slices,
-- every slice record, to the default outputs (each formats it its way:
-- a JSON line, an IPFIX record).
local P = { info = { name = "flows", options = {} } }

local emit

function P.init(_, ctx)
  emit = ctx.emit
end

function P.on_flow_end(flow)
  emit(flow)
end

function P.on_slice(batch)
  emit(batch)
end

return P
