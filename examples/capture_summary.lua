#!/usr/bin/env luajit
-- A one-off capture script: sluice.open directly, no CLI.
--   luajit examples/capture_summary.lua trace.pcap [top-ports]
-- Prints flows and bytes per protocol and the busiest server ports.

-- From a source checkout, find the checkout's modules (an installed rock
-- needs nothing).
local here = arg[0]:match("^(.*)/examples/[^/]*$") or (arg[0]:match("^examples/[^/]*$") and ".")
if here then
  package.path = here .. "/lua/?.lua;" .. here .. "/lua/?/init.lua;" .. package.path
  package.cpath = here .. "/core/build/?.so;" .. package.cpath
end

local sluice = require "sluice"

local path, top = arg[1], tonumber(arg[2] or 5)
if not path then
  io.stderr:write("usage: capture_summary.lua FILE.pcap [top-ports]\n")
  os.exit(2)
end
if not top or top < 0 or top ~= math.floor(top) then
  io.stderr:write("capture_summary.lua: top-ports must be a whole number >= 0, got '",
    tostring(arg[2]), "'\n")
  os.exit(2)
end

local eng, err = sluice.open { read = path }
if not eng then
  io.stderr:write(err, "\n")
  os.exit(1)
end

local by_proto, by_port = {}, {}
local ok, rerr = eng:run {
  on_flow_end = function(flow)
    local p = by_proto[flow.proto] or { flows = 0, pkts = 0, bytes = 0 }
    p.flows, p.pkts, p.bytes = p.flows + 1, p.pkts + flow.pkts, p.bytes + flow.bytes
    by_proto[flow.proto] = p
    if flow.proto == "tcp" or flow.proto == "udp" then
      local port = flow.proto .. "/" .. flow.dport
      by_port[port] = (by_port[port] or 0) + flow.bytes
    end
  end,
}

local protos = {}
for name in pairs(by_proto) do protos[#protos + 1] = name end
table.sort(protos)
print(string.format("%-8s %10s %12s %14s", "proto", "flows", "packets", "bytes"))
for _, name in ipairs(protos) do
  local p = by_proto[name]
  print(string.format("%-8s %10d %12d %14d", name, p.flows, p.pkts, p.bytes))
end
local ports = {}
for port in pairs(by_port) do ports[#ports + 1] = port end
table.sort(ports, function(a, b) return by_port[a] > by_port[b] or (by_port[a] == by_port[b] and a < b) end)
print("busiest server ports:")
for i = 1, math.min(top, #ports) do
  print(string.format("  %-12s %14d bytes", ports[i], by_port[ports[i]]))
end
local st = eng:stats()
print(string.format("%d packets, %d malformed, %d not IP", st.packets, st.malformed, st.not_ip))
if not ok then
  io.stderr:write(rerr, "\n")
  os.exit(1)
end
