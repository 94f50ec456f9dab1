-- Tags each flow with the application its server port suggests
-- (app=http, app=tls, app=dns, app=ssh) and writes every flow and slice,
-- as a run without a policy does: the fleet example's "traffic by tag".
--   sluice run examples/fleet/tag_apps.lua -i eth0 --slice 60 --out clickhouse:...
local APPS = { [80] = "http", [443] = "tls", [53] = "dns", [22] = "ssh" }

local P = { info = { name = "tag_apps", description = "tags flows app=NAME by server port" } }

local emit

function P.init(opts, ctx)
  emit = ctx.emit
end

function P.on_flow_start(flow)
  local app = APPS[flow.dport]
  if app then flow:tag("app", app) end
end

function P.on_flow_end(flow)
  emit(flow)
end

function P.on_slice(batch)
  emit(batch)
end

return P
