-- Flow handles: struct sl_flow_rec seen through an FFI metatype, so a
-- handler reads fields straight out of the engine's event array (zero copy).
-- A handle is valid while its handler runs; flow:totable() keeps a copy.
local ffi = require "ffi"
local core = require "sluice.core"

local C = core.C
local tonumber = tonumber
local count_text = core.count_text

-- An FFI metatype is set once per process and keeps the closures of the
-- module instance that set it; if this module is loaded again (busted's
-- insulation, package.loaded reset), hand back that same instance so its
-- state is the one the metatype sees.
local REGISTRY_KEY = "sluice.flow"
local registry = debug.getregistry()
if registry[REGISTRY_KEY] then return registry[REGISTRY_KEY] end

local M = {}
registry[REGISTRY_KEY] = M

-- Protocol and state names come from the core, cached as Lua strings.
local PROTO_NAMES = setmetatable({}, { __index = function(t, num)
  local name = C.sl_proto_name(num)
  name = name ~= nil and ffi.string(name) or num
  t[num] = name
  return name
end })
M.PROTO_NAMES = PROTO_NAMES

local TCP_STATES = {}
for s = 0, C.SL_TCP_MIDSTREAM do TCP_STATES[s] = ffi.string(C.sl_tcp_state_name(s)) end

local band = bit.band
local jsonbuf_len = 4096 -- a flow with statistics takes about 4 kB
local jsonbuf = ffi.new("char[?]", jsonbuf_len)

local addrbuf = ffi.new("char[64]")
local function addr(key, which)
  local n = C.sl_key_addr(key, which, addrbuf, 64)
  if n < 0 then return nil end
  return ffi.string(addrbuf, n)
end
M.addr = addr

-- Text of a raw address: 4 bytes (IPv4) or 16 (IPv6), as from
-- ffi.string(rec.key.src, 4 or 16).
local scratch_key = ffi.new("struct sl_key")
function M.addr_text(raw)
  ffi.fill(scratch_key.src, 16)
  ffi.copy(scratch_key.src, raw, #raw)
  scratch_key.ip_version = #raw == 4 and 4 or 6
  return addr(scratch_key, 0)
end

function M.proto_name(num)
  return PROTO_NAMES[num]
end

function M.end_reason_name(reason)
  return ffi.string(C.sl_end_reason_name(reason))
end

-- Tunnel names by type; nil for none (the fields are absent then).
local TUNNEL_NAMES = {}
for t = 1, C.SL_TUNNEL_COUNT - 1 do TUNNEL_NAMES[t] = ffi.string(C.sl_tunnel_name(t)) end

-- An IP tunnel's endpoint (which: 0 src, 1 dst); nil for MPLS, PPPoE.
local tunnel_key = ffi.new("struct sl_key")
local function tunnel_addr(encap, which)
  if encap.ip_version == 0 then return nil end
  tunnel_key.ip_version = encap.ip_version
  ffi.copy(tunnel_key.src, which == 0 and encap.src or encap.dst, 16)
  return addr(tunnel_key, 0)
end

local function seconds(ns)
  return tonumber(ns) * 1e-9
end
M.seconds = seconds

-- The process's address ids (sl_addr_id), made at first use.
local ids
function M.addr_ids()
  if not ids then
    local out = ffi.new("struct sl_addr_ids *[1]")
    local rc = C.sl_addr_ids_new(out)
    if rc < 0 then error("address ids: " .. core.strerror(rc), 3) end
    ids = ffi.gc(out[0], C.sl_addr_ids_free)
  end
  return ids
end

-- A metatype's __index: a getter's value, else a method.
local function getters_then(get, methods)
  return function(r, k)
    local g = get[k]
    if g then return g(r) end
    return methods[k]
  end
end

-- Keys of engine:update's ids and strings (ip_version SL_KEY_ID and up)
-- have no addresses, ports or protocol: those fields are nil for them.
local KEY_ID, KEY_STRING = C.SL_KEY_ID, C.SL_KEY_STRING
local function key_id(k)
  if k.ip_version == KEY_ID then return tonumber(ffi.cast("uint64_t *", k.src)[0]) end
end
local function key_string(k)
  if k.ip_version == KEY_STRING then return ffi.string(k.src, math.min(k.sport, 32)) end
end

-- Getters shared by flow records and slice records (both have .key).
local function key_getters(g)
  g.src = function(r) return addr(r.key, 0) end
  g.dst = function(r) return addr(r.key, 1) end
  g.sport = function(r) local k = r.key; if k.ip_version < KEY_ID then return k.sport end end
  g.dport = function(r) local k = r.key; if k.ip_version < KEY_ID then return k.dport end end
  g.proto = function(r) local k = r.key; if k.ip_version < KEY_ID then return PROTO_NAMES[k.proto] end end
  g.proto_num = function(r) local k = r.key; if k.ip_version < KEY_ID then return k.proto end end
  g.ip_version = function(r) local k = r.key; if k.ip_version < KEY_ID then return k.ip_version end end
  g.key_id = function(r) return key_id(r.key) end
  g.key_string = function(r) return key_string(r.key) end
  g.vlan = function(r) return r.key.vlan end
  g.vlan_inner = function(r) return r.key.vlan_inner end
  -- raw addresses: 4 or 16 bytes, interned by Lua (table keys that cost
  -- no formatting; sluice.addr turns them into text)
  g.src_raw = function(r)
    local k = r.key
    if k.ip_version < KEY_ID then return ffi.string(k.src, k.ip_version == 4 and 4 or 16) end
  end
  g.dst_raw = function(r)
    local k = r.key
    if k.ip_version < KEY_ID then return ffi.string(k.dst, k.ip_version == 4 and 4 or 16) end
  end
  -- small integer ids (sluice.addr.of_id gives the address back): a
  -- number per host, no string made, for keying tables per record
  g.src_id = function(r)
    local k = r.key
    if k.ip_version < KEY_ID then return tonumber(C.sl_addr_id(ids or M.addr_ids(), k.src, k.ip_version)) end
  end
  g.dst_id = function(r)
    local k = r.key
    if k.ip_version < KEY_ID then return tonumber(C.sl_addr_id(ids or M.addr_ids(), k.dst, k.ip_version)) end
  end
  g.tunnel = function(r) return TUNNEL_NAMES[r.encap.type] end
  g.tunnel_src = function(r) return tunnel_addr(r.encap, 0) end
  g.tunnel_dst = function(r) return tunnel_addr(r.encap, 1) end
  g.tunnel_id = function(r)
    return r.encap.has_id ~= 0 and tonumber(r.encap.id) or nil
  end
  return g
end

-- The tunnel fields of a record, added to t (JSON's: absent without).
local function tunnel_fields(t, r)
  local e = r.encap
  if e.type == C.SL_TUNNEL_NONE then return t end
  t.tunnel, t.tunnel_src, t.tunnel_dst = TUNNEL_NAMES[e.type], tunnel_addr(e, 0), tunnel_addr(e, 1)
  t.tunnel_id = e.has_id ~= 0 and tonumber(e.id) or nil
  return t
end

-- Statistics (SL_FEATURE_STATS) under NFStream's names: for each of
-- src2dst_, dst2src_ and bidirectional_, min/mean/stddev/max _ps (frame
-- bytes), min/mean/stddev/max _piat_ms, and syn/ack/... _packets. nil
-- when the run does not compute them.
local STATS_STREAMS = { src2dst = 0, dst2src = 1, bidirectional = C.SL_STATS_BOTH }
local FLAG_BITS = { fin = 0, syn = 1, rst = 2, psh = 3, ack = 4, urg = 5, ece = 6, cwr = 7 }

local moments, stream = ffi.new("struct sl_moments"), ffi.new("struct sl_stream_stats")
local function moment(field)
  return function(s)
    C.sl_stream_moments(s, moments)
    return moments[field]
  end
end

local STAT_OF = {
  min_ps = function(s) return s.min_ps end,
  mean_ps = moment("mean_ps"),
  stddev_ps = moment("stddev_ps"),
  max_ps = function(s) return s.max_ps end,
  min_piat_ms = function(s) return tonumber(s.min_piat_ns) / 1e6 end,
  mean_piat_ms = moment("mean_piat_ms"),
  stddev_piat_ms = moment("stddev_piat_ms"),
  max_piat_ms = function(s) return tonumber(s.max_piat_ns) / 1e6 end,
}
for flag, bit in pairs(FLAG_BITS) do
  STAT_OF[flag .. "_packets"] = function(s) return s.flag_packets[bit] end
end

local stat_getters, STAT_NAMES = {}, {}
for prefix, i in pairs(STATS_STREAMS) do
  for name, of in pairs(STAT_OF) do
    local field = prefix .. "_" .. name
    STAT_NAMES[#STAT_NAMES + 1] = field
    stat_getters[field] = function(r)
      local st = r.stats
      if st == nil then return nil end
      C.sl_flow_stream_stats(st, i, stream)
      return of(stream)
    end
  end
end
table.sort(STAT_NAMES)
M.STAT_NAMES = STAT_NAMES

local flow_get = key_getters {
  kind = function() return "flow" end,
  id = function(r) return tonumber(r.fid) end,
  pkts_fwd = function(r) return tonumber(r.fwd.pkts) end,
  pkts_rev = function(r) return tonumber(r.rev.pkts) end,
  bytes_fwd = function(r) return tonumber(r.fwd.bytes) end,
  bytes_rev = function(r) return tonumber(r.rev.bytes) end,
  ip_bytes_fwd = function(r) return tonumber(r.fwd.ip_bytes) end,
  ip_bytes_rev = function(r) return tonumber(r.rev.ip_bytes) end,
  -- summed as numbers: a uint64 sum wraps past 2^64 - 1
  pkts = function(r) return tonumber(r.fwd.pkts) + tonumber(r.rev.pkts) end,
  bytes = function(r) return tonumber(r.fwd.bytes) + tonumber(r.rev.bytes) end,
  tcp_flags_fwd = function(r) return r.fwd.tcp_flags end,
  tcp_flags_rev = function(r) return r.rev.tcp_flags end,
  first = function(r) return seconds(r.fwd.first_ns) end,
  last = function(r)
    local l = r.fwd.last_ns
    if r.rev.pkts > 0 and r.rev.last_ns > l then l = r.rev.last_ns end
    return seconds(l)
  end,
  history = function(r) return ffi.string(r.hist, ffi.C.strnlen(r.hist, ffi.sizeof(r.hist))) end,
  state = function(r) return TCP_STATES[r.state_code] end,
  end_reason = function(r)
    if r.reason_code == C.SL_END_NONE then return nil end
    return ffi.string(C.sl_end_reason_name(r.reason_code))
  end,
}
flow_get.duration = function(r) return flow_get.last(r) - flow_get.first(r) end

local flow_methods = {}
M.methods = flow_methods -- sluice.flowstate adds the methods that act on the table

-- Open engines by number (struct sl_flow_rec's engine field): their flow
-- state (sluice.flowstate), which records and handles find through it.
local engines = setmetatable({}, { __mode = "v" })
M.engines = engines

-- A copy of the flow's tags (name -> value), or nil without tags.
local function tags_of(r)
  local st = engines[r.engine]
  local tags = st and st.tags[tonumber(r.fid)]
  if not tags or next(tags) == nil then return nil end
  local copy = {}
  for k, v in pairs(tags) do copy[k] = v end
  return copy
end
M.tags_of = tags_of

-- Whether any live flow of the engine has tags.
function M.any_tagged(engine)
  local st = engines[engine]
  return st ~= nil and next(st.tags) ~= nil
end

-- Whether a record's flow has tags (its JSON then is not the core's alone).
function M.tagged(r)
  local st = engines[r.engine]
  local tags = st and st.tags[tonumber(r.fid)]
  return tags ~= nil and next(tags) ~= nil
end

local json_encode
-- Adds "tags":{...} to a JSON object from the core.
local function with_tags(json, r)
  local tags = tags_of(r)
  if not tags then return json end
  json_encode = json_encode or require("sluice.json").encode
  return json:sub(1, -2) .. ',"tags":' .. json_encode(tags) .. "}"
end

local function copier(ctype)
  local size = ffi.sizeof(ctype)
  return function(r)
    local c = ffi.new(ctype)
    ffi.copy(c, r, size)
    return c
  end
end

-- A copy that outlives the handler (for queues, or to keep).
-- A copy of a record that points to data beside it in engine memory (a
-- flow's features, a slice's label; the next step reuses that memory)
-- takes a copy of that data along and keeps it alive.
-- fields: the pointer fields, name -> the type they point to.
local kept = setmetatable({}, { __mode = "k" })
local function deep_copier(ctype, fields)
  local copy, types = copier(ctype), {}
  for field, target in pairs(fields) do types[field] = ffi.typeof(target) end
  return function(r)
    local c = copy(r)
    for field, target_t in pairs(types) do
      if r[field] ~= nil then
        local t = target_t(r[field][0])
        c[field] = t
        local k = kept[c] or {}
        k[#k + 1] = t
        kept[c] = k
      end
    end
    return c
  end
end

flow_methods.copy = deep_copier("struct sl_flow_rec", { stats = "struct sl_flow_stats",
  splt = "struct sl_splt", app = "struct sl_app_label" })

-- A plain Lua table with the JSON fields of a flow.
for field, get in pairs(stat_getters) do flow_get[field] = get end

-- Early packets (SL_FEATURE_SPLT) as NFStream's lists, len long, -1 past
-- the flow's packets; nil when the run does not record them.
local function splt_list(value)
  return function(r)
    local sp, t = r.splt, {}
    if sp == nil then return nil end
    for i = 0, sp.len - 1 do t[i + 1] = i < sp.n and value(sp, i) or -1 end
    return t
  end
end
flow_get.splt_direction = splt_list(function(sp, i) return band(bit.rshift(sp.reverse, i), 1) end)
flow_get.splt_ps = splt_list(function(sp, i) return sp.ps[i] end)
flow_get.splt_piat_ms = splt_list(function(sp, i) return tonumber(sp.piat_ns[i]) / 1e6 end)

-- The application label (SL_FEATURE_DPI) of a flow or a slice under
-- NFStream's names; nil when the run does not label, or before the label
-- is known (nDPI is sure, or the flow ended).
local DPI_DONE = C.SL_DPI_DONE
local function app_string(field)
  return function(r)
    local a = r.app
    if a == nil or a.state ~= DPI_DONE then return nil end
    local s = a[field]
    return ffi.string(s, C.strnlen(s, ffi.sizeof(s)))
  end
end
flow_get.application_name = app_string("application_name")
flow_get.application_category_name = app_string("category")
flow_get.requested_server_name = app_string("server_name")

local function stats_fields(t, r)
  if r.stats ~= nil then
    for _, field in ipairs(STAT_NAMES) do t[field] = stat_getters[field](r) end
  end
  if r.splt ~= nil then
    t.splt_direction, t.splt_ps = flow_get.splt_direction(r), flow_get.splt_ps(r)
    t.splt_piat_ms = flow_get.splt_piat_ms(r)
  end
  if r.app ~= nil then
    t.application_name = flow_get.application_name(r)
    t.application_category_name = flow_get.application_category_name(r)
    t.requested_server_name = flow_get.requested_server_name(r)
  end
  return t
end

-- The key's fields, added to t: the 5-tuple and VLANs, or key_id or
-- key_string.
local function key_fields(t, k)
  if k.ip_version >= KEY_ID then
    t.key_id, t.key_string = key_id(k), key_string(k)
    return t
  end
  t.proto, t.ip_version, t.vlan = PROTO_NAMES[k.proto], k.ip_version, k.vlan
  t.src, t.sport, t.dst, t.dport = addr(k, 0), k.sport, addr(k, 1), k.dport
  t.vlan_inner = k.vlan_inner ~= 0 and k.vlan_inner or nil
  return t
end

function flow_methods.totable(r)
  return stats_fields(tunnel_fields(key_fields({
    type = "flow", id = flow_get.id(r),
    first = flow_get.first(r), last = flow_get.last(r),
    pkts_fwd = tonumber(r.fwd.pkts), pkts_rev = tonumber(r.rev.pkts),
    bytes_fwd = tonumber(r.fwd.bytes), bytes_rev = tonumber(r.rev.bytes),
    ip_bytes_fwd = tonumber(r.fwd.ip_bytes), ip_bytes_rev = tonumber(r.rev.ip_bytes),
    tcp_flags_fwd = r.fwd.tcp_flags, tcp_flags_rev = r.rev.tcp_flags,
    history = flow_get.history(r), state = flow_get.state(r),
    tunnel_changes = r.tunnel_changes ~= 0 and r.tunnel_changes or nil,
    end_reason = flow_get.end_reason(r), tags = tags_of(r),
  }, r.key), r), r)
end

-- The record's JSON line (without newline), formatted by the core.
function flow_methods.json(r)
  return with_tags(ffi.string(jsonbuf, C.sl_flow_rec_json(r, jsonbuf, jsonbuf_len)), r)
end

local function describe(r, kind)
  local k = r.key
  if k.ip_version == KEY_ID then
    return string.format("%s %d id %s", kind, tonumber(r.fid), count_text(ffi.cast("uint64_t *", k.src)[0]))
  elseif k.ip_version == KEY_STRING then
    return string.format("%s %d key %q", kind, tonumber(r.fid), key_string(k))
  end
  local src, dst = addr(k, 0), addr(k, 1)
  if k.ip_version == 6 then src, dst = "[" .. src .. "]", "[" .. dst .. "]" end
  return string.format("%s %d %s %s:%d -> %s:%d", kind, tonumber(r.fid),
    PROTO_NAMES[k.proto], src, k.sport, dst, k.dport)
end

function flow_methods.__tostring(r)
  return describe(r, "flow") .. string.format(" pkts %s/%s bytes %s/%s%s",
    count_text(r.fwd.pkts), count_text(r.rev.pkts), count_text(r.fwd.bytes),
    count_text(r.rev.bytes), r.reason_code ~= 0 and (" " .. flow_get.end_reason(r)) or "")
end


ffi.metatype("struct sl_flow_rec", {
  __index = getters_then(flow_get, flow_methods),
  __tostring = flow_methods.__tostring,
})

-- Flow handles (struct sl_flow_handle): what handlers get. A handle reads
-- its record in place while the output it came with is current; used
-- later, it finds its flow in the table again, or fails if the flow has
-- ended: it never reads a record that was reused for another flow.
local handle_t = ffi.typeof("struct sl_flow_handle")
M.handle_t = handle_t

local STALE = "flow %d: handle used after its handler returned, and the flow has ended " ..
  "(keep flow:copy() or flow:totable() instead)"

-- The record a handle reads now; level: where errors point.
local function resolve(h, level)
  local st = engines[h.engine]
  if not st then error("flow handle used after its engine was closed", level) end
  local gen = st.out.generation
  if h.generation == gen then return h.rec end
  local r = C.sl_engine_flow_find(st.e, h.slot, h.fid)
  if r == nil then
    -- the flow whose event is being dispatched (its end: kept from its start)
    local cur = st.current
    if cur == nil or cur.fid ~= h.fid then error(string.format(STALE, tonumber(h.fid)), level) end
    return cur
  end
  h.rec, h.generation = r, gen
  return r
end

-- What a slice batch hands out (its records, and the rows of its groups):
-- handles that read in place while the batch is valid and raise once
-- kept past its on_slice: they never read the next interval's record or
-- row in the same memory.
M.BATCH_STALE = "a slice batch is valid only in the on_slice call that got it (keep what " ..
  "you need: rec:totable(), groups:totable())"

local function batch_resolver(field)
  return function(h, level)
    local st = engines[h.engine]
    if not st or st.out.generation ~= h.generation then error(M.BATCH_STALE, level) end
    return h[field]
  end
end

local slice_handle_t = ffi.typeof("struct sl_slice_handle")
local resolve_slice = batch_resolver("rec")
M.slice_handle_t = slice_handle_t

-- A record or a handle, as a record (for sinks and the C functions).
function M.rec_of(x)
  if ffi.istype(handle_t, x) then return resolve(x, 3) end
  if ffi.istype(slice_handle_t, x) then return resolve_slice(x, 3) end
  return x
end

-- A handle on a record valid at the engine's current generation.
function M.handle(st, rec)
  return handle_t(rec, rec.fid, st.out.generation, rec.slot, rec.engine)
end

-- The metatype of a handle type (flows here, packets in sluice.packet):
-- the getters, methods and fields of the record resolve(h, level) gives,
-- or its error once the handle is stale.
function M.handle_metatype(ct, get, methods, resolve_fn, tostring_fn)
  local wrapped_methods = setmetatable({}, { __index = function(t, k)
    local m = methods[k]
    if type(m) ~= "function" then return nil end
    local wrapped = function(h, ...) return m(resolve_fn(h, 3), ...) end
    t[k] = wrapped
    return wrapped
  end })
  ffi.metatype(ct, {
    __index = function(h, k)
      local g = get[k]
      if g then return g(resolve_fn(h, 3)) end
      local m = wrapped_methods[k]
      if m then return m end
      return resolve_fn(h, 3)[k] -- the record's own fields (key, fwd, rev...)
    end,
    __tostring = function(h) return tostring_fn(resolve_fn(h, 3)) end,
  })
end

M.handle_metatype(handle_t, flow_get, flow_methods, resolve, flow_methods.__tostring)

-- Slice records: one flow in one interval, counters as deltas.
local slice_get = key_getters {
  kind = function() return "slice" end,
  flow_id = function(r) return tonumber(r.fid) end,
  pkts_fwd = function(r) return tonumber(r.delta_fwd.pkts) end,
  pkts_rev = function(r) return tonumber(r.delta_rev.pkts) end,
  bytes_fwd = function(r) return tonumber(r.delta_fwd.bytes) end,
  bytes_rev = function(r) return tonumber(r.delta_rev.bytes) end,
  ip_bytes_fwd = function(r) return tonumber(r.delta_fwd.ip_bytes) end,
  ip_bytes_rev = function(r) return tonumber(r.delta_rev.ip_bytes) end,
  pkts = function(r) return tonumber(r.delta_fwd.pkts) + tonumber(r.delta_rev.pkts) end,
  bytes = function(r) return tonumber(r.delta_fwd.bytes) + tonumber(r.delta_rev.bytes) end,
  total_pkts_fwd = function(r) return tonumber(r.total_fwd.pkts) end,
  total_pkts_rev = function(r) return tonumber(r.total_rev.pkts) end,
  total_bytes_fwd = function(r) return tonumber(r.total_fwd.bytes) end,
  total_bytes_rev = function(r) return tonumber(r.total_rev.bytes) end,
  start = function(r) return seconds(r.start_ns) end,
  ["end"] = function(r) return seconds(r.end_ns) end,
  end_reason = function(r)
    if r.reason_code == C.SL_END_NONE then return nil end
    return ffi.string(C.sl_end_reason_name(r.reason_code))
  end,
}

-- The flow's application label when the slice was cut (--dpi), else nil.
slice_get.application_name = flow_get.application_name
slice_get.application_category_name = flow_get.application_category_name
slice_get.requested_server_name = flow_get.requested_server_name

local slice_methods = {
  copy = deep_copier("struct sl_slice_rec", { app = "struct sl_app_label" }),
}

function slice_methods.json(r)
  return with_tags(ffi.string(jsonbuf, C.sl_slice_rec_json(r, jsonbuf, jsonbuf_len)), r)
end

function slice_methods.totable(r)
  return tunnel_fields(key_fields({
    type = "slice", flow_id = tonumber(r.fid),
    start = seconds(r.start_ns), ["end"] = seconds(r.end_ns),
    pkts_fwd = tonumber(r.delta_fwd.pkts), pkts_rev = tonumber(r.delta_rev.pkts),
    bytes_fwd = tonumber(r.delta_fwd.bytes), bytes_rev = tonumber(r.delta_rev.bytes),
    ip_bytes_fwd = tonumber(r.delta_fwd.ip_bytes), ip_bytes_rev = tonumber(r.delta_rev.ip_bytes),
    total_pkts_fwd = tonumber(r.total_fwd.pkts), total_pkts_rev = tonumber(r.total_rev.pkts),
    total_bytes_fwd = tonumber(r.total_fwd.bytes), total_bytes_rev = tonumber(r.total_rev.bytes),
    tcp_flags_fwd = r.tcp_flags_fwd, tcp_flags_rev = r.tcp_flags_rev,
    end_reason = slice_get.end_reason(r), tags = tags_of(r),
    application_name = slice_get.application_name(r),
    application_category_name = slice_get.application_category_name(r),
    requested_server_name = slice_get.requested_server_name(r),
  }, r.key), r)
end

local function slice_text(r)
  return describe(r, "slice of flow") .. string.format(" [%.3f, %.3f) pkts +%s/+%s bytes +%s/+%s",
    seconds(r.start_ns), seconds(r.end_ns), count_text(r.delta_fwd.pkts),
    count_text(r.delta_rev.pkts), count_text(r.delta_fwd.bytes), count_text(r.delta_rev.bytes))
end

ffi.metatype("struct sl_slice_rec", {
  __index = getters_then(slice_get, slice_methods),
  __tostring = slice_text,
})

M.handle_metatype(slice_handle_t, slice_get, slice_methods, resolve_slice, slice_text)


-- Group rows (batch:group, batch:top): one key and its sums.
local row_key = ffi.new("struct sl_key")
local function row_addr(r)
  local k = r.key
  if k.ip_version == 0 then return nil end
  row_key.ip_version = k.ip_version
  ffi.copy(row_key.src, k.addr, 16)
  return addr(row_key, 0)
end

local function address_group(by)
  return by == C.SL_GROUP_SRC or by == C.SL_GROUP_DST or by == C.SL_GROUP_HOST
end
local function port_group(by)
  return by == C.SL_GROUP_SPORT or by == C.SL_GROUP_DPORT
end

-- Tag values of tag:NAME groups by id (sluice.batch fills it).
M.tag_values = {}

local row_get = {
  addr = row_addr,
  tag = function(r) return r.key.by == C.SL_GROUP_ID and M.tag_values[r.key.id] or nil end,
  ip_version = function(r) return address_group(r.key.by) and r.key.ip_version or nil end,
  prefix = function(r) return address_group(r.key.by) and r.key.prefix or nil end,
  raw = function(r)
    local k = r.key
    if not address_group(k.by) then return nil end
    return ffi.string(k.addr, k.ip_version == 4 and 4 or 16)
  end,
  port = function(r) return port_group(r.key.by) and r.key.port or nil end,
  proto = function(r) return r.key.by == C.SL_GROUP_PROTO and PROTO_NAMES[r.key.proto] or nil end,
  proto_num = function(r) return r.key.by == C.SL_GROUP_PROTO and r.key.proto or nil end,
  flows = function(r) return tonumber(r.flow_count) end,
  pkts_fwd = function(r) return tonumber(r.fwd.pkts) end,
  pkts_rev = function(r) return tonumber(r.rev.pkts) end,
  bytes_fwd = function(r) return tonumber(r.fwd.bytes) end,
  bytes_rev = function(r) return tonumber(r.rev.bytes) end,
  pkts = function(r) return tonumber(r.fwd.pkts) + tonumber(r.rev.pkts) end,
  bytes = function(r) return tonumber(r.fwd.bytes) + tonumber(r.rev.bytes) end,
  distinct = function(r) return tonumber(r.distinct_count) end,
}
-- The group as text: "10.1.2.0/24" (an address cut short), "10.1.2.3",
-- "443", "tcp", or "all".
row_get.label = function(r)
  local k = r.key
  if address_group(k.by) then
    local a = row_addr(r)
    return k.prefix < (k.ip_version == 4 and 32 or 128) and (a .. "/" .. k.prefix) or a
  elseif k.by == C.SL_GROUP_PROTO then
    return PROTO_NAMES[k.proto]
  elseif port_group(k.by) then
    return tostring(k.port)
  elseif k.by == C.SL_GROUP_ID then
    return tostring(M.tag_values[k.id])
  end
  return "all"
end

local row_fields = { "label", "addr", "prefix", "port", "proto", "tag", "flows", "pkts", "bytes",
  "pkts_fwd", "pkts_rev", "bytes_fwd", "bytes_rev", "distinct" }
local row_methods = {}
function row_methods.totable(r)
  local t = {}
  for _, k in ipairs(row_fields) do t[k] = row_get[k](r) end
  return t
end

local function row_text(r)
  return string.format("group %s flows %d pkts %d bytes %d", row_get.label(r),
    row_get.flows(r), row_get.pkts(r), row_get.bytes(r))
end

M.group_handle_t = ffi.typeof("struct sl_group_handle")
M.handle_metatype(M.group_handle_t, row_get, row_methods, batch_resolver("row"), row_text)

ffi.metatype("struct sl_group_row", {
  __index = getters_then(row_get, row_methods),
  __tostring = row_text,
})

return M
