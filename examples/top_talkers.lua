-- Top talkers per slice: the hosts that sent the most in each interval.
--   sluice run examples/top_talkers.lua -r trace.pcap --slice 10 -o top=5
-- Each slice gives one JSON line: { type = "top_talkers", start, end, hosts,
-- top = { { addr, bytes, pkts }, ... } }, biggest first.
local P = {
  info = {
    name = "top_talkers",
    description = "the hosts that sent the most bytes (or packets) per slice",
    options = {
      top = { type = "integer", default = 10, description = "hosts per slice" },
      by = { type = "string", default = "bytes", description = "bytes or pkts" },
    },
  },
}

local emit, top_n, order

function P.init(opts, ctx)
  if opts.by ~= "bytes" and opts.by ~= "pkts" then
    error("option 'by' must be bytes or pkts, got '" .. opts.by .. "'")
  end
  if opts.top < 1 then error("option 'top' must be at least 1") end
  -- a host group's fwd counters are what the host sent
  emit, top_n, order = ctx.emit, opts.top, opts.by .. "_fwd"
end

function P.on_slice(batch)
  -- every host of the slice, each with what it sent and received (in C)
  local hosts = batch:group{ by = "host" }
  local senders = 0
  for row in hosts:rows() do
    if row.pkts_fwd > 0 then senders = senders + 1 end
  end
  local top = {}
  for row in hosts:top(math.min(top_n, senders), order):rows() do
    top[#top + 1] = { addr = row.addr, bytes = row.bytes_fwd, pkts = row.pkts_fwd }
  end
  emit { type = "top_talkers", start = batch.start, ["end"] = batch["end"], hosts = senders, top = top }
end

return P
