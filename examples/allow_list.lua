-- An allow-list alarm: one line for every flow with an end outside the
-- allowed prefixes, as the flow starts.
--   sluice run examples/allow_list.lua -r trace.pcap -o allow=10.0.0.0/8,2001:db8::/32
--   sluice run examples/allow_list.lua -i eth0 -o allow=192.168.0.0/16 -o side=dst
-- Each alarm is one JSON line: { type = "alarm", flow, proto, src, sport,
-- dst, dport, first, outside = { addresses not allowed } }; the flow is
-- also tagged acl = "deny", for the policies after this one (with the
-- default flow records after it, each record says so:
--   sluice run examples/allow_list.lua lua/sluice/policies/flows.lua -r trace.pcap).
local addr = require "sluice.addr"

local P = {
  info = {
    name = "allow_list",
    description = "alarms for flows with an address outside the allowed prefixes",
    options = {
      allow = { type = "string", default = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
        description = "allowed prefixes, comma-separated (IPv4 and IPv6)" },
      side = { type = "string", default = "both", description = "which end must be allowed: src, dst or both" },
    },
  },
}

local emit, allowed, check_src, check_dst

function P.init(opts, ctx)
  local list = {}
  for prefix in opts.allow:gmatch("[^,%s]+") do list[#list + 1] = prefix end
  if #list == 0 then error("option 'allow' lists no prefix") end
  local set, err = addr.set(list)
  if not set then error("option 'allow': " .. err) end
  if opts.side ~= "src" and opts.side ~= "dst" and opts.side ~= "both" then
    error("option 'side' must be src, dst or both, got '" .. opts.side .. "'")
  end
  emit, allowed = ctx.emit, set
  check_src, check_dst = opts.side ~= "dst", opts.side ~= "src"
end

function P.on_flow_start(f)
  local outside
  if check_src and not allowed:contains(addr.of(f.key, "src")) then outside = { f.src } end
  if check_dst and not allowed:contains(addr.of(f.key, "dst")) then
    outside = outside or {}
    outside[#outside + 1] = f.dst
  end
  if not outside then return end
  f:tag("acl", "deny")
  emit { type = "alarm", flow = f.id, proto = f.proto, src = f.src, sport = f.sport, dst = f.dst,
    dport = f.dport, first = f.first, outside = outside }
end

return P
