-- The policy used when none is given: every ended flow and, with slices,
-- every slice record, to the default outputs (each formats it its way:
-- a JSON line, an IPFIX record). With slices, outputs whose records are
-- delta counts (IPFIX) get the slices only: a collector adds records up,
-- and a flow's totals after its slices counted every packet twice (a
-- flow's end reason is in the slice of the interval it ended in).
local P = { info = { name = "flows", options = {} } }

local emit, flow_outputs

function P.init(_, ctx)
  emit = ctx.emit
  if ctx.engine.slicing then
    local all, kept = ctx.outputs, {}
    for _, sink in ipairs(all) do
      if not sink.delta_counts then kept[#kept + 1] = sink end
    end
    if #kept < #all then flow_outputs = kept end
  end
end

function P.on_flow_end(flow)
  if not flow_outputs then return emit(flow) end
  for i = 1, #flow_outputs do emit(flow_outputs[i], flow) end
end

function P.on_slice(batch)
  emit(batch)
end

return P
