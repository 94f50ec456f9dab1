-- Top talkers per slice: the hosts that sent the most in each interval.
--   sluice run examples/top_talkers.lua -r trace.pcap --slice 10 -o top=5
-- Each slice gives one JSON line: { type = "top_talkers", start, end, hosts,
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

-- Hosts are keyed by their raw address bytes (4 for IPv4, 16 for IPv6:
-- cheap, interned, and the lengths keep the families apart); only the
-- winners are turned into text.
local function add(sent_bytes, sent_pkts, raw, bytes, pkts)
  if pkts == 0 then return end
  sent_bytes[raw] = (sent_bytes[raw] or 0) + bytes
  sent_pkts[raw] = (sent_pkts[raw] or 0) + pkts
end

-- The n largest keys of metric, biggest first (ties by key), kept in a
-- small sorted array rather than sorting every host.
local function top_keys(metric, n)
  local top, count = {}, 0
  for raw, v in pairs(metric) do
    if count < n or v > metric[top[count]] or (v == metric[top[count]] and raw < top[count]) then
      local i = count < n and count + 1 or count
      while i > 1 do
        local above = top[i - 1]
        local av = metric[above]
        if av > v or (av == v and above < raw) then break end
        top[i] = above
        i = i - 1
      end
      top[i] = raw
      if count < n then count = count + 1 end
    end
  end
  return top, count
end

function P.on_slice(batch)
  local sent_bytes, sent_pkts, hosts = {}, {}, 0
  for rec in batch:records() do
    local k = rec.key
    local len = k.ip_version == 4 and 4 or 16
    add(sent_bytes, sent_pkts, ffi.string(k.src, len), rec.bytes_fwd, rec.pkts_fwd)
    add(sent_bytes, sent_pkts, ffi.string(k.dst, len), rec.bytes_rev, rec.pkts_rev)
  end
  for _ in pairs(sent_bytes) do hosts = hosts + 1 end
  local keys, count = top_keys(by_bytes and sent_bytes or sent_pkts, top_n)
  local top = {}
  for i = 1, count do
    local raw = keys[i]
    top[i] = { addr = flow.addr_text(raw), bytes = sent_bytes[raw], pkts = sent_pkts[raw] }
  end
  emit { type = "top_talkers", start = batch.start, ["end"] = batch["end"], hosts = hosts, top = top }
end

return P
