-- Tag and report heavy or long-lived flows.
--   sluice run examples/heavy_flows.lua -r trace.pcap --slice 10 \
--       -o min_bytes=1000000 -o min_duration=60
-- A flow is tagged "heavy" once its bytes reach min_bytes and "long" once it
-- has lived min_duration seconds. With --slice, an "alert" line is written
-- in the slice where a flow first qualifies, while it is still running; at
-- its end a "report" line carries its tags and totals.
local P = {
  info = {
    name = "heavy_flows",
    description = "tags flows over a byte or duration threshold and reports them",
    options = {
      min_bytes = { type = "number", default = 10e6, description = "bytes (both directions)" },
      min_duration = { type = "duration", default = 300, description = "seconds from first to last packet" },
    },
  },
}

local emit, min_bytes, min_duration
local tags_of = {} -- flow id -> { heavy = true, long = true }

function P.init(opts, ctx)
  emit, min_bytes, min_duration = ctx.emit, opts.min_bytes, opts.min_duration
end

local function qualify(id, bytes, age)
  local tags = tags_of[id]
  local new
  if bytes >= min_bytes and not (tags and tags.heavy) then new = "heavy" end
  if age >= min_duration and not (tags and tags.long) then new = new and "heavy,long" or "long" end
  if not new then return nil end
  tags = tags or {}
  for t in new:gmatch("[^,]+") do tags[t] = true end
  tags_of[id] = tags
  return tags
end

local function tag_list(tags)
  local list = {}
  for t in pairs(tags) do list[#list + 1] = t end
  table.sort(list)
  return list
end

local started = {} -- live flow id -> time of its first packet

function P.on_flow_start(flow)
  started[flow.id] = flow.first
end

function P.on_slice(batch)
  for rec in batch:records() do
    local id = rec.flow_id
    local first = started[id]
    -- flows that ended in this slice were already reported by on_flow_end
    if first then
      local bytes = rec.total_bytes_fwd + rec.total_bytes_rev
      -- it sent in this interval, so it lived at least until its start
      local tags = qualify(id, bytes, batch.start - first)
      if tags then
        emit { type = "alert", flow_id = id, src = rec.src, sport = rec.sport, dst = rec.dst,
          dport = rec.dport, proto = rec.proto, bytes = bytes, tags = tag_list(tags),
          at = batch["end"] }
      end
    end
  end
end

function P.on_flow_end(flow, reason)
  local id = flow.id
  local tags = qualify(id, flow.bytes, flow.duration) or tags_of[id]
  tags_of[id], started[id] = nil, nil
  if not tags then return end
  local rec = flow:totable()
  rec.type = "report"
  rec.tags = tag_list(tags)
  rec.end_reason = reason
  emit(rec)
end

return P
