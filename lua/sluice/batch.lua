-- Slice batches: the records of one closed interval, read in place from the
-- engine's slice array. Valid while on_slice runs: each interval gets a
-- batch of its own, and one kept past its on_slice raises when read (its
-- records' memory holds the next interval's by then). Grouping, distinct
-- counts and top-k run in C over the whole batch (batch:group, batch:top):
-- what policies did per record in Lua with a string key each.
local ffi = require "ffi"
local core = require "sluice.core"
local flow = require "sluice.flow" -- group rows' metatype; tags

local C = core.C
local M = {}

-- kind: ctx.emit(batch) emits every record (sinks may take it at once)
local Batch = { kind = "slices" }
Batch.__index = Batch

local STALE = flow.BATCH_STALE
local slice_handle_t, group_handle_t = flow.slice_handle_t, flow.group_handle_t

-- Raises (at level) when the engine moved on since the batch was made.
local function check(self, level)
  local st = flow.engines[self.engine]
  if not st or tonumber(st.out.generation) ~= self.generation then error(STALE, level) end
end

-- engine: the engine's number (sluice.flow's engines), for its flows' tags.
-- The maker of one run's batches: maker:batch(out) for each interval.
function M.new(engine)
  return { engine = engine, pool = {}, batch = M.batch }
end

-- The batch of the interval out (struct sl_output) just closed. Query
-- objects (pool) are reused from one interval to the next.
function M.batch(maker, out)
  return setmetatable({ engine = maker.engine, pool = maker.pool, used = 0, recs = out.slices,
    n = out.n_slices, start = tonumber(out.slice_start_ns) * 1e-9,
    ["end"] = tonumber(out.slice_end_ns) * 1e-9, generation = tonumber(out.generation) }, Batch)
end

-- for rec in batch:records() do ... end
-- (without the flows this policy turned down in on_flow_start)
function Batch:records()
  check(self, 3)
  local recs, n, i, skip = self.recs, self.n, -1, self.skip
  local gen, engine = self.generation, self.engine
  if skip then
    return function()
      i = i + 1
      while i < n and skip[tonumber(recs[i].fid)] do i = i + 1 end
      if i < n then return slice_handle_t(recs + i, gen, engine) end
    end
  end
  return function()
    i = i + 1
    if i < n then return slice_handle_t(recs + i, gen, engine) end
  end
end

-- An index of 1..n (a Lua array's), or nil.
local function index_in(i, n, what)
  if type(i) ~= "number" then error(what .. " expects an index, got " .. type(i), 3) end
  if i >= 1 and i <= n and i == math.floor(i) then return i end
end

-- 1-based access, like a Lua array.
function Batch:get(i)
  check(self, 3)
  i = index_in(i, self.n, "batch:get")
  return i and slice_handle_t(self.recs + (i - 1), self.generation, self.engine)
end

function Batch:count()
  return self.n
end

-- ---- queries: group, distinct, top, in C over the whole batch ---------

local GROUP_BY = { src = C.SL_GROUP_SRC, dst = C.SL_GROUP_DST, host = C.SL_GROUP_HOST,
  sport = C.SL_GROUP_SPORT, dport = C.SL_GROUP_DPORT, proto = C.SL_GROUP_PROTO,
  all = C.SL_GROUP_ALL }
local ADDRESS_GROUP = { src = true, dst = true, host = true }
local DISTINCT = { src = C.SL_DISTINCT_SRC, dst = C.SL_DISTINCT_DST,
  peer = C.SL_DISTINCT_PEER, sport = C.SL_DISTINCT_SPORT, dport = C.SL_DISTINCT_DPORT,
  peer_port = C.SL_DISTINCT_PEER_PORT }
local METRIC = { bytes = C.SL_METRIC_BYTES, pkts = C.SL_METRIC_PKTS,
  bytes_fwd = C.SL_METRIC_BYTES_FWD, bytes_rev = C.SL_METRIC_BYTES_REV,
  pkts_fwd = C.SL_METRIC_PKTS_FWD, pkts_rev = C.SL_METRIC_PKTS_REV,
  flows = C.SL_METRIC_FLOWS, distinct = C.SL_METRIC_DISTINCT }

local function names(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return table.concat(out, ", ")
end

-- IP protocol numbers by name ("tcp" -> 6), from the core's names.
local PROTO_NUMBERS = {}
for num = 0, 255 do
  local name = C.sl_proto_name(num)
  if name ~= nil then PROTO_NUMBERS[ffi.string(name)] = num end
end

-- Groups by the flows' application labels (--dpi), under NFStream's
-- names: the field of struct sl_app_label each reads.
local LABEL_GROUPS = { application_name = "application_name",
  application_category_name = "category", requested_server_name = "server_name" }

local spec_t = ffi.typeof("struct sl_group_spec")

-- A value as a message shows it: a string quoted ("48" is not 48).
local function shown(v)
  return type(v) == "string" and string.format("%q", v) or tostring(v)
end

local function metric_of(name, level)
  local m = METRIC[name or "bytes"]
  if not m then error("order must be one of " .. names(METRIC) .. ", got " .. shown(name), level) end
  return m
end

-- What a group{} argument may hold: a misspelt key (ordr =) was ignored.
local GROUP_ARGS = { by = true, prefix4 = true, prefix6 = true, distinct = true, proto = true,
  ip_version = true, order = true, n = true }

-- The C spec of a group{} argument; level: where misuse errors point.
local function group_spec(args, level)
  if type(args) ~= "table" then error("expects a table: { by = \"src/24\", ... }", level) end
  for k in pairs(args) do
    if not GROUP_ARGS[k] then error("unknown argument '" .. tostring(k) .. "' (" .. names(GROUP_ARGS) .. ")", level) end
  end
  local by = args.by
  if type(by) ~= "string" then error("'by' must be a string (" .. names(GROUP_BY) .. ", tag:NAME)", level) end
  local tag = by:match("^tag:(.+)$")
  local label = LABEL_GROUPS[by]
  if tag or label then by = "all" end
  local field, bits = by:match("^(%a+)/(%d+)$")
  field = field or by
  if GROUP_BY[field] == nil then
    error("'by = \"" .. by .. "\"': one of " .. names(GROUP_BY) .. " (src, dst, host with /N), tag:NAME, "
      .. names(LABEL_GROUPS), level)
  end
  local spec = spec_t()
  spec.by = (tag or label) and C.SL_GROUP_ID or GROUP_BY[field]
  local p4, p6 = tonumber(bits) or args.prefix4 or 32, args.prefix6 or 128
  if bits and not ADDRESS_GROUP[field] then
    error("'by = \"" .. by .. "\"': only src, dst and host take a prefix", level)
  end
  if type(p4) ~= "number" or p4 < 0 or p4 > 32 or p4 % 1 ~= 0 then
    error("IPv4 prefix must be 0..32, got " .. shown(p4), level)
  end
  if type(p6) ~= "number" or p6 < 0 or p6 > 128 or p6 % 1 ~= 0 then
    error("'prefix6' must be 0..128, got " .. shown(p6), level)
  end
  spec.prefix4, spec.prefix6 = p4, p6
  if args.distinct ~= nil then
    local d = DISTINCT[args.distinct]
    if not d then error("'distinct' must be one of " .. names(DISTINCT), level) end
    spec.distinct = d
  end
  local proto = args.proto
  if proto ~= nil then
    local num = type(proto) == "string" and PROTO_NUMBERS[proto:lower()] or proto
    if type(num) ~= "number" or num < 1 or num > 255 or num % 1 ~= 0 then
      error("'proto' must be a protocol name or number 1..255, got " .. shown(proto), level)
    end
    spec.proto = num
  end
  local v = args.ip_version
  if v ~= nil then
    if v ~= 4 and v ~= 6 then error("'ip_version' must be 4 or 6", level) end
    spec.ip_version = v
  end
  if args.order ~= nil then metric_of(args.order, level + 1) end
  if args.n ~= nil and (type(args.n) ~= "number" or args.n < 0 or args.n ~= math.floor(args.n)) then
    error("'n' must be a whole number >= 0, got " .. shown(args.n), level) -- (NaN gave no rows)
  end
  return spec, tag, label
end

-- Tag values as group ids, for the whole process: value -> id, and back
-- (flow.tag_values, which group rows read).
local tag_ids, tag_values = {}, flow.tag_values
local ids_buf, ids_cap = nil, 0

local function ids_of(n)
  if ids_cap < n then
    ids_cap = math.max(n, 2 * ids_cap)
    ids_buf = ffi.new("uint32_t[?]", ids_cap)
  end
  return ids_buf
end

local function value_id(v)
  if v == nil then return 0 end
  local id = tag_ids[v]
  if not id then
    id = #tag_values + 1
    tag_values[id], tag_ids[v] = v, id
  end
  return id
end

-- The group id of each record of the batch: its flow's value of tag
-- name, 0 for flows without it (left out).
local function tag_group_ids(self, name)
  local n, recs, ids = self.n, self.recs, ids_of(self.n)
  local st = flow.engines[self.engine]
  local tags = st and st.tags or {}
  for i = 0, n - 1 do
    local t = tags[tonumber(recs[i].fid)]
    ids[i] = value_id(t and t[name])
  end
  return ids
end

-- The same from the application label each slice record carries: 0
-- (left out) without --dpi, while nDPI has not named the flow yet, and
-- for an empty field (a flow without a server name).
local DPI_DONE = C.SL_DPI_DONE
local function label_group_ids(self, field)
  local n, recs, ids = self.n, self.recs, ids_of(self.n)
  for i = 0, n - 1 do
    local app = recs[i].app
    local v = (app ~= nil and app.state == DPI_DONE) and ffi.string(app[field]) or ""
    ids[i] = v ~= "" and value_id(v) or 0
  end
  return ids
end

local count_out = ffi.new("uint32_t[1]")

-- Groups: the rows of one query, valid while on_slice runs.
local Groups = {}
Groups.__index = Groups

-- for row in groups:rows() do ... end
function Groups:rows()
  check(self.batch, 3)
  local rows, n, i = self.ptr, self.n, -1
  local gen, engine = self.batch.generation, self.batch.engine
  return function()
    i = i + 1
    if i < n then return group_handle_t(rows + i, gen, engine) end
  end
end

-- 1-based, like a Lua array.
function Groups:get(i)
  check(self.batch, 3)
  i = index_in(i, self.n, "groups:get")
  return i and group_handle_t(self.ptr + (i - 1), self.batch.generation, self.batch.engine)
end

-- Keeps the k rows biggest by order (default bytes), biggest first.
function Groups:top(k, order)
  check(self.batch, 3)
  if type(k) ~= "number" or k < 0 or k ~= math.floor(k) then error("top: k must be a whole number >= 0", 2) end
  local kept = C.sl_query_top(self.q, metric_of(order, 3), k)
  if kept < 0 then error("top: " .. core.strerror(kept), 2) end
  self.ptr = C.sl_query_rows(self.q, count_out)
  self.n = count_out[0]
  return self
end

-- The rows as plain tables (row:totable()), to keep past on_slice.
function Groups:totable()
  check(self.batch, 3)
  local out = {}
  for i = 0, self.n - 1 do out[i + 1] = self.ptr[i]:totable() end
  return out
end

local query_t = ffi.typeof("struct sl_query *")
local query_out = ffi.new("struct sl_query *[1]")

-- A query object of this batch for the current on_slice (each call gets
-- its own, so earlier results stay valid until the next slice).
function Batch:query()
  local used = self.used + 1
  self.used = used
  local pool = self.pool
  local q = pool[used]
  if not q then
    local rc = C.sl_query_new(query_out)
    if rc < 0 then error("sl_query_new: " .. core.strerror(rc), 3) end
    q = ffi.gc(ffi.cast(query_t, query_out[0]), C.sl_query_free)
    pool[used] = q
  end
  return q
end

-- The flows this policy turned down, as the sorted array C wants.
local function skip_array(self)
  local skip = self.skip
  if not skip then return nil, 0 end
  if self.skip_from == skip and self.skip_of == self.start then return self.skip_ids, self.skip_n end
  local ids = {}
  for fid in pairs(skip) do ids[#ids + 1] = fid end
  table.sort(ids)
  local arr = ffi.new("uint64_t[?]", #ids + 1)
  for i = 1, #ids do arr[i - 1] = ids[i] end
  self.skip_from, self.skip_of, self.skip_ids, self.skip_n = skip, self.start, arr, #ids
  return arr, #ids
end

-- batch:group{ by = "src/24", distinct = "dport", proto = "tcp", ... }:
-- the records grouped and summed in C; see the README's batch API. With
-- order (and n), the rows come sorted (the n biggest).
local function group(self, args, level)
  check(self, level + 1)
  local spec, tag, label = group_spec(args, level + 1)
  if tag then spec.ids = tag_group_ids(self, tag) end
  if label then spec.ids = label_group_ids(self, label) end
  local ids, n_ids = skip_array(self)
  if n_ids > 0 then spec.skip, spec.n_skip = ids, n_ids end
  local q = self:query()
  local rc = C.sl_query_group(q, spec, self.recs, self.n)
  if rc < 0 then error("group: " .. core.strerror(rc), level) end
  local g = setmetatable({ q = q, ptr = C.sl_query_rows(q, count_out), n = rc, skip = ids,
    batch = self }, Groups)
  if args.order then g:top(args.n or rc, args.order) elseif args.n then g:top(args.n) end
  return g
end

-- (not tail calls: the levels of misuse errors count their frames)
function Batch:group(args)
  local g = group(self, args, 3)
  return g
end

-- batch:top{ by = "host", n = 10, order = "bytes_fwd", ... }: group, then
-- the n biggest rows, biggest first.
function Batch:top(args)
  if type(args) ~= "table" or type(args.n) ~= "number" then
    error("top expects a table with n: { by = \"src\", n = 10, order = \"bytes\" }", 2)
  end
  local g = group(self, args, 3)
  return g
end

return M
