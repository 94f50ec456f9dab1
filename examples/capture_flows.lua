-- The packets of chosen flows, written to a pcap file: every packet of
-- each flow that matches, from its first.
--   sluice run examples/capture_flows.lua -r trace.pcap -o port=53 --out pcap:dns.pcap
--   sluice run examples/capture_flows.lua -i eth0 -o net=203.0.113.0/24 --out pcap:suspect.pcap
-- A flow matches when it has `port` at either end (0: any port), an
-- address in `net` (prefixes, comma-separated; empty: any address) and
-- the protocol `proto` (any: all). Its ended flow record is written too,
-- to the run's other outputs.
local addr = require "sluice.addr"

local P = {
  info = {
    name = "capture_flows",
    description = "writes the packets of the flows that match to the run's pcap output",
    options = {
      port = { type = "integer", default = 0, description = "a port at either end (0: any)" },
      net = { type = "string", default = "", description = "prefixes, comma-separated (empty: any)" },
      proto = { type = "string", default = "any", description = "tcp, udp, icmp, ... or any" },
    },
  },
}

local port, nets, proto, emit
local captured = {} -- ids of the live flows being captured

function P.init(opts, ctx)
  emit = ctx.emit
  if opts.port < 0 or opts.port > 65535 then error("option 'port' must be 0..65535") end
  port = opts.port
  proto = opts.proto ~= "any" and opts.proto or nil
  local list = {}
  for prefix in opts.net:gmatch("[^,%s]+") do list[#list + 1] = prefix end
  if #list > 0 then
    local err
    nets, err = addr.set(list)
    if not nets then error("option 'net': " .. err) end
  end
end

function P.on_flow_start(f)
  if port ~= 0 and f.sport ~= port and f.dport ~= port then return end
  if proto and f.proto ~= proto then return end
  if nets and not nets:contains(addr.of(f.key, "src")) and not nets:contains(addr.of(f.key, "dst")) then
    return
  end
  local ok, err = f:capture()
  if not ok then error("capture: " .. err) end
  captured[f.id] = true
end

-- the flow records of the captured flows, to the run's other outputs
function P.on_flow_end(f)
  if captured[f.id] then
    captured[f.id] = nil
    emit(f)
  end
end

return P
