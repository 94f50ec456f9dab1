-- Port scans and host sweeps: per slice, the sources that tried many
-- destination ports, or many destination hosts.
--   sluice run examples/scan_detect.lua -r trace.pcap --slice 60 -o ports=100 -o hosts=50
-- Each finding is one JSON line: { type = "scan", kind = "ports"|"hosts",
-- src, count, flows, pkts, start, end }: src opened flows to `count`
-- distinct ports (over all its destinations) or hosts in [start, end).
-- Counted over the flows src initiated; replies do not count.
local P = {
  info = {
    name = "scan_detect",
    description = "sources that tried many ports or hosts per slice (scans and sweeps)",
    options = {
      ports = { type = "integer", default = 100, description = "distinct ports that make a scan" },
      hosts = { type = "integer", default = 50, description = "distinct hosts that make a sweep" },
      proto = { type = "string", default = "tcp", description = "tcp, udp, or any" },
    },
  },
}

local emit, min_ports, min_hosts, proto

function P.init(opts, ctx)
  if opts.ports < 1 or opts.hosts < 1 then error("options 'ports' and 'hosts' must be at least 1") end
  if opts.proto ~= "tcp" and opts.proto ~= "udp" and opts.proto ~= "any" then
    error("option 'proto' must be tcp, udp or any, got '" .. opts.proto .. "'")
  end
  emit, min_ports, min_hosts = ctx.emit, opts.ports, opts.hosts
  proto = opts.proto ~= "any" and opts.proto or nil
end

-- One line per source whose distinct count reached min.
local function report(batch, kind, groups, min)
  for row in groups:rows() do
    if row.distinct >= min then
      emit { type = "scan", kind = kind, src = row.addr, count = row.distinct, flows = row.flows,
        pkts = row.pkts, start = batch.start, ["end"] = batch["end"] }
    end
  end
end

function P.on_slice(batch)
  report(batch, "ports", batch:group{ by = "src", distinct = "dport", proto = proto }, min_ports)
  report(batch, "hosts", batch:group{ by = "src", distinct = "dst", proto = proto }, min_hosts)
end

return P
