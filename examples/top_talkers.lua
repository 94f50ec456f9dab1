-- Top talkers per slice: the hosts that sent the most in each interval.
--   sluice run examples/top_talkers.lua -r trace.pcap --slice 10 -o top=5
-- Each slice gives one JSON line: { type = "top_talkers", start, end,
-- top = { { addr, bytes, pkts }, ... } }, biggest first.
local ffi = require "ffi"
local flow = require "sluice.flow"

local P = {
  info = {
    name = "top_talkers",
    description = "the hosts that sent the most bytes (or packets) per slice",
    options = {
      top = { type = "integer", default = 10, help = "hosts per slice" },
      by = { type = "string", default = "bytes", help = "bytes or pkts" },
    },
  },
}

local emit, top_n, by_bytes

function P.init(opts, ctx)
  if opts.by ~= "bytes" and opts.by ~= "pkts" then
    error("option 'by' must be bytes or pkts, got '" .. opts.by .. "'")
  end
  if opts.top < 1 then error("option 'top' must be at least 1") end
  emit, top_n, by_bytes = ctx.emit, opts.top, opts.by == "bytes"
end

-- Hosts are keyed by their raw 16 address bytes (cheap, interned); only the
-- winners are formatted as text.
local sent_bytes, sent_pkts, keys = {}, {}, {}

local function add(raw, key, which, bytes, pkts)
  if bytes == 0 and pkts == 0 then return end
  if not sent_bytes[raw] then
    sent_bytes[raw], sent_pkts[raw] = 0, 0
    keys[raw] = { key = key, which = which }
  end
  sent_bytes[raw] = sent_bytes[raw] + bytes
  sent_pkts[raw] = sent_pkts[raw] + pkts
end

function P.on_slice(batch)
  for rec in batch:records() do
    local k = rec.key
    add(ffi.string(k.src, 16) .. k.ip_version, rec, 0, rec.bytes_fwd, rec.pkts_fwd)
    add(ffi.string(k.dst, 16) .. k.ip_version, rec, 1, rec.bytes_rev, rec.pkts_rev)
  end
  local hosts = {}
  for raw in pairs(sent_bytes) do hosts[#hosts + 1] = raw end
  local metric = by_bytes and sent_bytes or sent_pkts
  table.sort(hosts, function(a, b)
    if metric[a] ~= metric[b] then return metric[a] > metric[b] end
    return a < b
  end)
  local top = {}
  for i = 1, math.min(top_n, #hosts) do
    local raw, where = hosts[i], keys[hosts[i]]
    top[i] = { addr = flow.addr(where.key.key, where.which), bytes = sent_bytes[raw],
      pkts = sent_pkts[raw] }
  end
  emit { type = "top_talkers", start = batch.start, ["end"] = batch["end"], hosts = #hosts, top = top }
  sent_bytes, sent_pkts, keys = {}, {}, {}
end

return P
