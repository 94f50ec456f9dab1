-- Traffic per subnet: per slice, the subnets (IPv4 /24, IPv6 /64 by
-- default) that moved the most bytes, sent and received.
--   sluice run examples/subnet_report.lua -r trace.pcap --slice 60 -o top=10 -o prefix4=16
-- Each slice gives one JSON line: { type = "subnets", start, end, subnets,
-- top = { { subnet, bytes_out, bytes_in, pkts_out, pkts_in, flows }, ... } },
-- biggest (bytes_out + bytes_in) first. A flow between two hosts of one
-- subnet counts for it twice (as sender and as receiver), like a router's
-- interface counters would.
local P = {
  info = {
    name = "subnet_report",
    description = "the subnets that moved the most bytes per slice",
    options = {
      top = { type = "integer", default = 10, description = "subnets per slice" },
      prefix4 = { type = "integer", default = 24, description = "IPv4 prefix length (0-32)" },
      prefix6 = { type = "integer", default = 64, description = "IPv6 prefix length (0-128)" },
    },
  },
}

local emit, top_n, by, prefix6

function P.init(opts, ctx)
  if opts.top < 1 then error("option 'top' must be at least 1") end
  if opts.prefix4 < 0 or opts.prefix4 > 32 then error("option 'prefix4' must be 0..32") end
  if opts.prefix6 < 0 or opts.prefix6 > 128 then error("option 'prefix6' must be 0..128") end
  emit, top_n, by, prefix6 = ctx.emit, opts.top, "host/" .. opts.prefix4, opts.prefix6
end

function P.on_slice(batch)
  local groups = batch:group{ by = by, prefix6 = prefix6 }
  local subnets = groups.n
  local top = {}
  for row in groups:top(top_n, "bytes"):rows() do
    top[#top + 1] = { subnet = row.label, bytes_out = row.bytes_fwd, bytes_in = row.bytes_rev,
      pkts_out = row.pkts_fwd, pkts_in = row.pkts_rev, flows = row.flows }
  end
  emit { type = "subnets", start = batch.start, ["end"] = batch["end"], subnets = subnets, top = top }
end

return P
