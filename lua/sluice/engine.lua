-- The engine: opens a source, pulls event and slice batches from the C core
-- and dispatches them to policies. C never calls Lua; Lua pulls.
local ffi = require "ffi"
local core = require "sluice.core"
local flow = require "sluice.flow"
local policy = require "sluice.policy"
local flowstate = require "sluice.flowstate"

local C = core.C
local tonumber = tonumber

local M = {}

local Engine = {}
Engine.__index = Engine

local NS = 1e9
local TIMEOUT_CLASS = { tcp = C.SL_TIMEOUT_TCP, udp = C.SL_TIMEOUT_UDP,
  icmp = C.SL_TIMEOUT_ICMP, other = C.SL_TIMEOUT_OTHER, tcp_closed = C.SL_TIMEOUT_TCP_CLOSED }
M.TIMEOUT_CLASS = TIMEOUT_CLASS

local END_REASONS = {}
for r = 0, C.SL_END_COUNT - 1 do END_REASONS[r] = flow.end_reason_name(r) end

local MALFORMED = {}
for r = 1, C.SL_MAL_COUNT - 1 do MALFORMED[r] = ffi.string(C.sl_malformed_name(r)) end

local MAX_DURATION_S = 100 * 365 * 86400

-- A duration option as whole nanoseconds (rounded: 1.025 * 1e9 is
-- 1024999999.99...). zero_ok: 0 is allowed (it switches the feature off).
local function duration_ns(v, what, zero_ok)
  local d, err = policy.parse_duration(v)
  if not d then error("sluice.open: " .. what .. ": " .. err, 3) end
  local ns = math.floor(d * NS + 0.5)
  -- past 2^64 ns a uint64 field wraps (18446744074 s became 0.3 s)
  if ns > MAX_DURATION_S * NS then
    error("sluice.open: " .. what .. " must be at most " .. MAX_DURATION_S .. " s (100 years)", 3)
  end
  if ns == 0 and not (zero_ok and d == 0) then
    error("sluice.open: " .. what .. " must be at least 1 ns" .. (zero_ok and " (or 0 for off)" or ""), 3)
  end
  return ns
end

-- Live capture options: name -> { field of struct sl_live_opts, kind }.
local LIVE_OPTIONS = {
  snaplen = { "snaplen", "count" }, block_size = { "block_size", "count" },
  block_count = { "block_count", "count" }, frame_size = { "frame_size", "count" },
  block_timeout = { "block_timeout_ms", "ms" }, queue = { "queue", "index" },
  fanout_group = { "fanout_group", "count" }, poll = { "poll_ms", "ms" },
  promisc = { "promisc", "flag" }, ignore_outgoing = { "ignore_outgoing", "flag" },
  xdp_mode = { "xdp_mode", { auto = C.SL_XDP_AUTO, skb = C.SL_XDP_SKB, drv = C.SL_XDP_DRV } },
  zero_copy = { "zero_copy", { auto = C.SL_ZC_AUTO, on = C.SL_ZC_ON, off = C.SL_ZC_OFF } },
}
local BACKENDS = { afpacket = "sl_source_open_afpacket", afxdp = "sl_source_open_afxdp",
  pcap = "sl_source_open_pcap_live" }

local function live_opts(opts)
  local lo = ffi.new("struct sl_live_opts")
  lo.ifname = opts.interface
  if opts.filter ~= nil then
    if type(opts.filter) ~= "string" then error("sluice.open: filter must be a string", 3) end
    lo.filter = opts.filter
  end
  for name, spec in pairs(LIVE_OPTIONS) do
    local v = opts[name]
    if v ~= nil then
      local field, kind = spec[1], spec[2]
      if kind == "flag" then
        if type(v) ~= "boolean" then error("sluice.open: " .. name .. " must be a boolean", 3) end
        lo[field] = v and 1 or 0
      elseif type(kind) == "table" then
        if not kind[v] then
          local names = {}
          for k in pairs(kind) do names[#names + 1] = k end
          table.sort(names)
          error("sluice.open: " .. name .. " must be one of " .. table.concat(names, ", "), 3)
        end
        lo[field] = kind[v]
      elseif kind == "ms" then
        local d, err = policy.parse_duration(v)
        if not d then error("sluice.open: " .. name .. ": " .. err, 3) end
        lo[field] = math.max(1, math.floor(d * 1000 + 0.5))
      else
        local n = tonumber(v)
        if not n or n ~= math.floor(n) or n < (kind == "index" and 0 or 1) or n >= 2^32 then
          error("sluice.open: " .. name .. " must be a whole number from " ..
                (kind == "index" and "0" or "1") .. " to 4294967295", 3)
        end
        lo[field] = n
      end
    end
  end
  return lo
end

-- Opens the packet source: a file (read) or an interface (interface,
-- backend). Returns the source or nil, err; notes (ring shrunk, copy mode)
-- go to the third value.
-- A collector: listen = { "udp:0.0.0.0:4739", "tcp:[::]:4739" }; besides
-- idle_exit, template_timeout, rcvbuf: collector_memory (the bound of its
-- state, bytes or "256M") and tcp_idle_timeout (an IPFIX/TCP connection
-- without a message is closed after it, 300 s).
local function open_collector(opts, sp)
  local listen = opts.listen
  if type(listen) == "string" then listen = { listen } end
  if type(listen) ~= "table" or #listen == 0 or #listen > 8 then
    error("sluice.open: listen is an address or a list of 1 to 8 (udp:ADDR:PORT, tcp:ADDR:PORT)", 3)
  end
  local co = ffi.new("struct sl_collector_opts")
  local keep = {}
  for i, spec in ipairs(listen) do
    if type(spec) ~= "string" then error("sluice.open: listen addresses are strings", 3) end
    keep[i] = spec
    co.listen[i - 1] = spec
  end
  co.n_listen = #listen
  co.workers = tonumber(opts.workers) or 1
  if opts.idle_exit then co.idle_exit_ms = math.max(1, math.floor(duration_ns(opts.idle_exit, "idle_exit") / 1e6)) end
  if opts.template_timeout then co.msg.template_timeout_ns = duration_ns(opts.template_timeout, "template_timeout") end
  if opts.rcvbuf then
    local n = tonumber(opts.rcvbuf)
    if not n or n < 1 or n >= 2^31 then error("sluice.open: rcvbuf must be a byte count", 3) end
    co.rcvbuf = n
  end
  if opts.collector_memory then
    local n = policy.parse_size(opts.collector_memory)
    if not n or n < 65536 or n >= 2^53 then
      error("sluice.open: collector_memory must be a size of at least 64K (256M, 1G)", 3)
    end
    co.msg.max_memory = n
  end
  if opts.tcp_idle_timeout then
    co.tcp_idle_ms = math.max(1, math.min(2^32 - 1,
      math.floor(duration_ns(opts.tcp_idle_timeout, "tcp_idle_timeout") / 1e6)))
  end
  local rc = C.sl_source_open_collector(sp, co)
  local note = ffi.string(co.note)
  if rc < 0 then
    -- the core's note names the address it is about
    if note ~= "" then return nil, note end
    return nil, table.concat(keep, ", ") .. ": " .. core.strerror(rc)
  end
  return sp[0]
end

-- The name of an input in messages: "-" (standard input) is "stdin";
-- several: the first and how many more.
-- stdin_name: what messages call "-" (the command line's workers read a
-- FIFO's copy on their standard input)
local function input_name(read, stdin_name)
  if type(read) == "table" then
    if #read == 1 then return input_name(read[1], stdin_name) end
    return string.format("%s (and %d more)", input_name(read[1], stdin_name), #read - 1)
  end
  return read == "-" and (stdin_name or "stdin") or read
end

-- Several captures, or a directory: one input merged by time (the core's
-- sl_source_open_files names the file that fails).
local function open_files(read, sp, stdin_name)
  local paths = ffi.new("const char *[?]", #read, read)
  local note = ffi.new("char[512]")
  local rc = C.sl_source_open_files(sp, paths, #read, note, 512)
  if rc < 0 then
    local why = ffi.string(note)
    return nil, why ~= "" and why or (input_name(read, stdin_name) .. ": " .. core.strerror(rc))
  end
  return sp[0]
end

local function open_source(opts, sp)
  if opts.listen then return open_collector(opts, sp) end
  local read = opts.read
  if type(read) == "table" then
    if #read > 1 then return open_files(read, sp, opts.stdin_name) end
    read = read[1]
  end
  if read then
    local rc = opts.shared_reader and C.sl_source_open_coop(sp, opts.shared_reader, opts.worker or 0)
      or C.sl_source_open_file(sp, read)
    if rc == -C.SL_EISDIR then return open_files({ read }, sp, opts.stdin_name) end
    local name = input_name(read, opts.stdin_name)
    if rc < 0 then return nil, name .. ": " .. core.strerror(rc) end
    local lt = C.sl_source_linktype(sp[0])
    if lt >= 0 and C.sl_linktype_supported(lt) == 0 then
      C.sl_source_close(sp[0])
      return nil, string.format("%s: unsupported link type %d", name, lt)
    end
    return sp[0]
  end
  local backend = opts.backend or "afpacket"
  if not BACKENDS[backend] then error("sluice.open: backend must be afpacket, afxdp or pcap", 3) end
  local open = C[BACKENDS[backend]]
  local lo = live_opts(opts)
  local rc = open(sp, lo)
  local note = ffi.string(lo.note)
  if rc == C.SL_E_OPTION then
    -- as a bad value in opts is: a misuse, said the way a file's is
    error("sluice.open: " .. (note:match("^bad filter") and "filter: " or "") .. note, 3)
  end
  if rc < 0 then
    return nil, string.format("%s (%s): %s%s", opts.interface, backend, core.strerror(rc),
      note ~= "" and (": " .. note) or "")
  end
  return sp[0], nil, note ~= "" and note or nil
end

-- read: a pcap or pcapng file, "-" for stdin, a pipe or FIFO; gzip, zstd,
-- xz or lz4 compressed (recognised by the first bytes) too. A directory,
-- or a list of files and directories, is one input: every capture in it
-- (a directory's in name order), packets merged by time, flows continuing
-- across files.
-- sluice.open{ read = "x.pcap" | interface = "eth0", backend = "afpacket",
--              filter = "tcp port 443", slice = 10, idle_timeout = { tcp = 300 },
--              active_timeout = 1800, pool_flows = 1e6, ... }
-- tunnels = "inner" (default: flows of the innermost IP packet, records
-- name the tunnel) or "outer" (of the outermost IP packet).
-- filter (pcap syntax): live, in the kernel; a file's, in the core before
-- decoding, compiled for each link type its packets have; refused packets
-- are counted (stats().filtered). A bad expression raises an error.
function M.open(opts)
  if type(opts) ~= "table" then error("sluice.open expects a table of options", 2) end
  local inputs = (opts.read ~= nil and 1 or 0) + (opts.interface ~= nil and 1 or 0) +
    (opts.listen ~= nil and 1 or 0)
  local read = opts.read
  if type(read) == "table" then
    for i = 1, #read do
      if type(read[i]) ~= "string" then read = nil break end
    end
    if read and #read == 0 then read = nil end
  end
  if inputs ~= 1 or (opts.read ~= nil and type(read) ~= "string" and type(read) ~= "table") or
     (opts.interface ~= nil and type(opts.interface) ~= "string") then
    error("sluice.open: give one of 'read' (a capture, a directory or a list of them), " ..
          "'interface' (live capture) or " ..
          "'listen' (collect from exporters)", 2)
  end
  local known = { read = true, interface = true, backend = true, filter = true, slice = true,
    idle_timeout = true, active_timeout = true, pool_flows = true, worker = true, workers = true,
    max_flows = true, low_flows = true, grace = true, silence = true, listen = true,
    idle_exit = true, template_timeout = true, rcvbuf = true, collector_memory = true,
    tcp_idle_timeout = true, tunnels = true, features = true, shared_reader = true,
    stdin_name = true }
  for k in pairs(LIVE_OPTIONS) do known[k] = opts.interface ~= nil end
  for _, k in ipairs { "idle_exit", "template_timeout", "rcvbuf", "collector_memory",
    "tcp_idle_timeout" } do
    known[k] = opts.listen ~= nil
  end
  for k in pairs(opts) do
    if not known[k] then
      error("sluice.open: unknown option '" .. tostring(k) .. "'" ..
            (LIVE_OPTIONS[k] and " (live capture only)" or ""), 2)
    end
  end
  if opts.filter ~= nil and type(opts.filter) ~= "string" then
    error("sluice.open: filter must be a string", 2)
  end
  if opts.listen and opts.filter then
    error("sluice.open: filter applies to packets (read, interface), not to a collector's records", 2)
  end
  local cfg = ffi.new("struct sl_config")
  if opts.tunnels ~= nil then
    if opts.tunnels ~= "inner" and opts.tunnels ~= "outer" then
      error("sluice.open: tunnels is 'inner' (key by the innermost IP packet) or 'outer'", 2)
    end
    if opts.listen then error("sluice.open: tunnels applies to packets, not to a collector's records", 2) end
    cfg.decode_flags = opts.tunnels == "outer" and C.SL_DECODE_OUTER or 0
  end
  if opts.features ~= nil then
    if opts.listen then error("sluice.open: features are computed from packets, not from a collector's records", 2) end
    cfg.features, cfg.splt_packets = M.parse_features(opts.features)
  end
  if opts.slice then cfg.slice_ns = duration_ns(opts.slice, "slice", true) end
  if opts.active_timeout then
    cfg.active_timeout_ns = duration_ns(opts.active_timeout, "active_timeout")
  end
  if opts.idle_timeout then
    if type(opts.idle_timeout) ~= "table" then
      error("sluice.open: idle_timeout must be a table such as { tcp = 300, udp = 60 }", 2)
    end
    for proto, v in pairs(opts.idle_timeout) do
      local class = TIMEOUT_CLASS[proto]
      if not class then
        error("sluice.open: idle_timeout: unknown protocol '" .. tostring(proto) ..
              "' (tcp, udp, icmp, other, tcp_closed)", 2)
      end
      cfg.idle_timeout_ns[class] = duration_ns(v, "idle_timeout." .. proto)
    end
  end
  if opts.pool_flows then
    local n = tonumber(opts.pool_flows)
    if not n or n < 1 or n >= 2^31 then error("sluice.open: pool_flows must be 1 .. 2^31", 2) end
    cfg.pool_flows = n
  end

  if opts.max_flows then
    local hi, lo = tonumber(opts.max_flows), tonumber(opts.low_flows or 0)
    local pool = cfg.pool_flows ~= 0 and cfg.pool_flows or 2^20
    if not hi or hi < 2 or hi > pool or hi ~= math.floor(hi) then
      error("sluice.open: max_flows must be a whole number 2.." .. pool .. " (pool_flows)", 2)
    end
    if not lo or lo < 0 or lo >= hi or lo ~= math.floor(lo) then
      error("sluice.open: low_flows must be below max_flows", 2)
    end
    cfg.max_flows, cfg.low_flows = hi, lo
  elseif opts.low_flows then
    error("sluice.open: low_flows needs max_flows", 2)
  end
  cfg.grace_ns = opts.grace and duration_ns(opts.grace, "grace", true) or 10 * NS
  if opts.silence then cfg.silence_ns = duration_ns(opts.silence, "silence") end
  if opts.workers or opts.worker then
    local n, w = tonumber(opts.workers or 1), tonumber(opts.worker or 0)
    if not n or n < 1 or n > 1024 or n ~= math.floor(n) or not w or w < 0 or w >= n then
      error("sluice.open: workers must be 1..1024 and worker 0..workers-1", 2)
    end
    cfg.workers, cfg.worker = n, w
    -- the workers share the capture (each reads all of it, or takes every
    -- window of one read once: shared_reader) and keep their share of flows
    if opts.read and n > 1 then cfg.shared_input = 1 end
  end
  -- the command line's workers on one pcap file: a struct sl_coop * made
  -- before they forked (sluice.h, sl_coop_new), read once for all
  if opts.shared_reader and cfg.shared_input ~= 1 then
    error("sluice.open: shared_reader needs read and workers > 1", 2)
  end

  local ep = ffi.new("struct sl_engine *[1]")
  local rc = C.sl_engine_new(ep, cfg)
  if rc == -C.SL_ENOMEM then
    local slots = cfg.pool_flows ~= 0 and (" of " .. tonumber(cfg.pool_flows) .. " flows") or ""
    return nil, "cannot create engine: " .. core.strerror(rc) .. " for a flow table" .. slots ..
      " (pool_flows, --pool-flows)"
  end
  if rc < 0 then return nil, "cannot create engine: " .. core.strerror(rc) end
  local e = ffi.gc(ep[0], C.sl_engine_free)

  local src, err, note = open_source(opts, ffi.new("struct sl_source *[1]"))
  if not src then return nil, err end
  C.sl_engine_attach(e, src)
  -- a file's filter runs in the core before decoding (a live source's in
  -- the kernel); a bad expression is the caller's mistake
  if opts.filter and opts.read then
    local errbuf = ffi.new("char[256]")
    local frc = C.sl_engine_input_filter(e, opts.filter, errbuf, ffi.sizeof(errbuf))
    if frc == -C.SL_EINVAL then error("sluice.open: filter: " .. ffi.string(errbuf), 2) end
    if frc < 0 then return nil, "filter: " .. core.strerror(frc) end
  end
  local out = C.sl_engine_output(e)
  local finfo = ffi.new("struct sl_files_info")
  if C.sl_source_files(src, finfo) ~= 0 then finfo = nil end
  return setmetatable({ e = e, st = flowstate.new(e, out), read = opts.read, interface = opts.interface,
    finfo = finfo,
    collector = opts.listen ~= nil,
    input = opts.read and input_name(opts.read, opts.stdin_name) or opts.interface or
      table.concat(type(opts.listen) == "table" and opts.listen or { opts.listen }, ","),
    live = opts.read == nil, note = note, src = src, out = out, filter = opts.filter,
    cstats = C.sl_engine_stats(e), slice = opts.slice, slicing = cfg.slice_ns > 0,
    start_time = os.time(),
    pool_flows = cfg.pool_flows ~= 0 and cfg.pool_flows or 2^20 }, Engine)
end

-- features = "stats" or { "stats" }: what every flow record carries
-- beyond its counters (sluice.h, enum sl_feature); misuse is an error.
-- splt or splt:N: the first N packets (default 10, at most 32); dpi: the
-- application nDPI finds (only in a core built with nDPI).
local FEATURES = { stats = C.SL_FEATURE_STATS, splt = C.SL_FEATURE_SPLT, dpi = C.SL_FEATURE_DPI }
local FEATURE_LIST = "stats, splt[:N], dpi"

-- Whether the core was built with nDPI (a field, so a spec can stand in
-- for a core without it).
function M.dpi_available() return C.sl_dpi_available() ~= 0 end
M.DPI_MISSING = "--dpi: sluice was built without nDPI (libndpi-dev)"

-- The feature bits and the splt length of a name or a list of names.
function M.parse_features(v)
  local list = type(v) == "string" and { v } or v
  if type(list) ~= "table" then
    error("sluice.open: features is a name or a list of names (" .. FEATURE_LIST .. ")", 3)
  end
  local bits, splt = 0, 0
  for _, spec in ipairs(list) do
    local name, n = tostring(spec):match("^(%a+):?(%d*)$")
    local b = FEATURES[name]
    if not b or (n ~= "" and name ~= "splt") then
      error("sluice.open: unknown feature '" .. tostring(spec) .. "' (" .. FEATURE_LIST .. ")", 3)
    end
    if bit.band(bits, b) ~= 0 then
      error("sluice.open: feature '" .. name .. "' given twice", 3)
    end
    if name == "dpi" and not M.dpi_available() then
      error("sluice.open: feature dpi: sluice was built without nDPI (libndpi-dev)", 3)
    end
    if n ~= "" then
      splt = tonumber(n)
      if splt < 1 or splt > C.SL_SPLT_MAX then
        error("sluice.open: splt:N takes 1 to " .. C.SL_SPLT_MAX .. " packets", 3)
      end
    end
    bits = bit.bor(bits, b)
  end
  return bits, splt
end

local function live(self)
  if not self.e then error("engine is closed", 3) end
end

-- Counters as a plain table.
function Engine:stats()
  live(self)
  local s = self.cstats
  local t = {
    packets = tonumber(s.packets), bytes = tonumber(s.bytes), not_ip = tonumber(s.not_ip),
    malformed = tonumber(s.malformed), frag_unmatched = tonumber(s.frag_unmatched),
    flows_started = tonumber(s.flows_started), flows_ended = tonumber(s.flows_ended),
    flows_active = tonumber(s.flows_active), flows_refused = tonumber(s.flows_refused),
    trims = tonumber(s.trims),
    slices_closed = tonumber(s.slices_closed), slice_records = tonumber(s.slice_records),
    records = tonumber(s.records), filtered = tonumber(s.filtered),
    tunnelled = tonumber(s.tunnelled), tunnel_changes = tonumber(s.tunnel_changes),
    foreign = tonumber(s.foreign), l4_cut = tonumber(s.l4_cut),
    malformed_by = {}, ended_by = {},
    -- policies reloaded (SIGHUP, engine:reload()), and reloads that failed
    -- and left the old version running (sluice.reload)
    reloads = self.reloads or 0, reload_failures = self.reload_failures or 0,
  }
  local ss = self.source_stats
  if self.live then
    ss = ss or ffi.new("struct sl_source_stats")
    self.source_stats = ss
    if C.sl_source_stats(self.src, ss) == 0 then
      t.received, t.kernel_drops = tonumber(ss.received), tonumber(ss.kernel_drops)
      -- one meaning: packets the filter refused (afxdp: after the ring)
      t.filtered = t.filtered + tonumber(ss.filtered)
      t.ring_errors = tonumber(ss.ring_errors)
    end
  end
  for r, name in pairs(MALFORMED) do
    local n = tonumber(s.malformed_by[r])
    if n > 0 then t.malformed_by[name] = n end
  end
  for r, name in pairs(END_REASONS) do
    local n = tonumber(s.ended_by[r])
    if n > 0 then t.ended_by[name] = n end
  end
  return t
end

-- The counters in the Prometheus text format (sluice.metrics: what a
-- run's metrics address serves on /metrics), during or after a run.
function Engine:metrics_text()
  live(self)
  return require("sluice.metrics").text(self)
end

-- A collector's exporters: a list of { index, address, port, messages,
-- records, templates, dropped = { reason = n }, seq_lost, seq_resets, held,
-- evicted_templates, evicted_domains, sampled, sampling }: sampled counts the
-- records whose counts were multiplied by a sampling rate, sampling is the
-- last such rate (1 in N; 0 before any). The first (index 0, address
-- "unknown") counts messages of no exporter and holds the counters of
-- evicted exporters; an evicted exporter's index is skipped.
function Engine:exporters()
  live(self)
  local list = {}
  for i = 0, C.sl_collector_exporters(self.src) - 1 do
    local x = C.sl_collector_exporter(self.src, i)
    if x ~= nil then
      local dropped = {}
      for r = 1, C.SL_COLLECTOR_DROP_COUNT - 1 do
        local n = tonumber(x.dropped[r])
        if n > 0 then dropped[ffi.string(C.sl_collector_drop_name(r))] = n end
      end
      list[#list + 1] = { index = i, address = x.family == 0 and "unknown" or
          flow.addr_text(ffi.string(x.addr, x.family == 4 and 4 or 16)),
        port = x.port, messages = tonumber(x.messages), records = tonumber(x.records),
        templates = tonumber(x.templates), dropped = dropped, seq_lost = tonumber(x.seq_lost),
        seq_resets = tonumber(x.seq_resets), held = tonumber(x.held),
        evicted_templates = tonumber(x.evicted_templates),
        evicted_domains = tonumber(x.evicted_domains), sampled = tonumber(x.sampled),
        sampling = tonumber(x.sampling) }
    end
  end
  return list
end

-- The order in which report.lua prints a collector's state.
M.COLLECTOR_STATE = { "memory", "max_memory", "exporters", "domains", "templates",
  "evicted_exporters", "evicted_domains", "evicted_templates", "expired_templates",
  "tcp_open", "tcp_accepted", "tcp_closed_idle", "tcp_closed_limit", "tcp_refused" }

-- A collector's state (struct sl_collector_state) as a table of numbers:
-- memory and its bound max_memory (bytes), the exporters, domains and
-- templates held, those evicted to stay in bounds, templates expired,
-- and the IPFIX/TCP connections (open, accepted, closed idle, closed to
-- make room, refused). nil for another input.
function Engine:collector_state()
  live(self)
  local cs = self.cstate or ffi.new("struct sl_collector_state")
  self.cstate = cs
  if C.sl_collector_state(self.src, cs) ~= 0 then return nil end
  local t = {}
  for _, k in ipairs(M.COLLECTOR_STATE) do t[k] = tonumber(cs[k]) end
  return t
end

-- Fraction of the input consumed (0..1), then the bytes consumed (of a
-- compressed file: compressed bytes). A stream (stdin, a pipe) has no
-- known size: nil, bytes.
function Engine:progress()
  live(self)
  if self.live then return nil end
  local pos, size = ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]")
  C.sl_source_progress(self.src, pos, size)
  if size[0] == 0 then return nil, tonumber(pos[0]) end
  return tonumber(pos[0]) / tonumber(size[0]), tonumber(pos[0])
end

-- Several captures (read a list or a directory): the file of the packets
-- read last, its number (1..) and the number of files; nil otherwise.
function Engine:current_file()
  live(self)
  local fi = self.finfo
  if not fi then return nil end
  C.sl_source_files(self.src, fi)
  return ffi.string(C.sl_source_file_name(self.src, fi.current)), fi.current + 1, fi.files
end

-- Several captures: { files, skipped (directory entries that are not
-- captures), finished, failed, failed_file (the first to fail) }; nil
-- for one file or another input.
function Engine:files()
  live(self)
  local fi = self.finfo
  if not fi then return nil end
  C.sl_source_files(self.src, fi)
  return { files = fi.files, skipped = fi.skipped, finished = fi.finished, failed = fi.failed,
    failed_file = fi.failed > 0 and ffi.string(C.sl_source_file_name(self.src, fi.first_failed))
      or nil }
end

-- The input filter's link types it did not compile for (a later pcapng
-- interface or file: their packets were refused): how many (0: none),
-- and libpcap's message for the first.
function Engine:filter_unusable()
  live(self)
  local note = ffi.new("char[256]")
  local n = C.sl_engine_filter_unusable(self.e, note, ffi.sizeof(note))
  return n, n > 0 and ffi.string(note) or nil
end

-- The name of the input whose error ended the run: of several captures,
-- the first file that failed.
function Engine:error_input()
  local f = self.finfo and self:files()
  if not (f and f.failed_file) then return self.input end
  if f.failed == 1 then return f.failed_file end
  return string.format("%s (and %d more files failed)", f.failed_file, f.failed - 1)
end

-- The engine's per-flow state on the Lua side (sluice.flowstate).
function Engine:flow_state()
  live(self)
  return self.st
end

M.decay = flowstate.decay

-- engine:decay(name, interval, fn): every interval seconds of engine time,
-- each flow's weight `name` becomes fn(weight, seconds since it was set),
-- removed when fn returns nil.
function Engine:decay(name, interval, fn)
  live(self)
  flowstate.add_decay(self.st, name, interval, fn)
end

-- Protocol numbers by the names the core gives them (tcp, udp, ...).
local PROTO_NUMBERS = {}
for p = 0, 255 do
  local name = C.sl_proto_name(p)
  if name ~= nil then PROTO_NUMBERS[ffi.string(name)] = p end
end

local KEY_NUMBERS = { "sport", "dport", "vlan", "vlan_inner" }
-- a 5-tuple key's fields: a misspelt one would key another flow
local KEY_FIELDS = { src = true, dst = true, proto = true }
for _, field in ipairs(KEY_NUMBERS) do KEY_FIELDS[field] = true end

-- One key of an update as struct sl_key: a 5-tuple table, an external id
-- (a number, or { id = n }) or a string (at most 32 bytes).
local function make_key(k, out)
  ffi.fill(out, ffi.sizeof(out))
  if type(k) == "number" or (type(k) == "table" and k.id ~= nil) then
    local id = type(k) == "number" and k or k.id
    if type(id) ~= "number" or id < 0 or id ~= math.floor(id) or id >= 2^64 then
      error("engine:update: an id key is a whole number >= 0", 3)
    end
    out.ip_version = C.SL_KEY_ID
    ffi.cast("uint64_t *", out.src)[0] = id
  elseif type(k) == "string" then
    if #k > 32 then error("engine:update: a string key is at most 32 bytes", 3) end
    out.ip_version = C.SL_KEY_STRING
    ffi.copy(out.src, k, #k)
    out.sport = #k
  elseif type(k) == "table" then
    for field in pairs(k) do
      if not KEY_FIELDS[field] then
        error("engine:update: unknown key field " .. tostring(field) ..
          " (src dst sport dport proto vlan vlan_inner)", 3)
      end
    end
    local v6 = tostring(k.src):find(":", 1, true) ~= nil
    local af = v6 and C.SL_AF_INET6 or C.SL_AF_INET
    if ffi.C.inet_pton(af, tostring(k.src), out.src) ~= 1 or
       ffi.C.inet_pton(af, tostring(k.dst), out.dst) ~= 1 then
      error("engine:update: a 5-tuple key needs src and dst addresses of one family", 3)
    end
    out.ip_version = v6 and 6 or 4
    out.proto = PROTO_NUMBERS[k.proto] or tonumber(k.proto) or error(
      "engine:update: unknown proto '" .. tostring(k.proto) .. "'", 3)
    for _, field in ipairs(KEY_NUMBERS) do
      local v = k[field] or 0
      if type(v) ~= "number" or v < 0 or v > 65535 or v ~= math.floor(v) then
        error("engine:update: a key's " .. field .. " is a whole number from 0 to 65535, got " .. tostring(v), 3)
      end
      out[field] = v
    end
  else
    error("engine:update: a key is a 5-tuple table, an id or a string", 3)
  end
end

-- A count of update's stats: a whole number >= 0 (0 when absent).
local function count_of(st, name, alias)
  local v = st[name]
  if v == nil and alias then v = st[alias] end
  if v == nil then return 0 end
  if type(v) ~= "number" or v < 0 or v ~= math.floor(v) or v >= 2^64 then
    error("engine:update: stats." .. name .. " must be a whole number >= 0, got " ..
      (type(v) == "string" and string.format("%q", v) or tostring(v)), 3)
  end
  return v
end

local UPDATE_STATS = { pkts_fwd = true, pkts = true, bytes_fwd = true, bytes = true,
  pkts_rev = true, bytes_rev = true, ip_bytes_fwd = true, ip_bytes_rev = true }

-- engine:update{ keys = { ... } | flow = handle, tags = { name = value },
--                stats = { pkts_fwd, bytes_fwd, pkts_rev, bytes_rev,
--                          ip_bytes_fwd, ip_bytes_rev } }
-- (ip bytes: the bytes given, unless given apart)
-- Finds the flow by any of its keys (linking the unknown ones to it) or
-- starts one; returns its live handle, or nil, "key conflict: ..." when the
-- keys belong to different flows (nothing is changed then).
function Engine:update(u)
  live(self)
  if type(u) ~= "table" then error("engine:update expects a table", 2) end
  local cu = self.cupdate or ffi.new("struct sl_update")
  self.cupdate = cu
  local keys = u.keys
  if u.flow ~= nil and keys ~= nil then
    error("engine:update: give keys or a flow handle, not both", 2)
  end
  if u.flow ~= nil then
    local h = u.flow
    if type(h) == "cdata" then h = flow.rec_of(h) end
    -- a slice record, a group row or a key names no flow slot
    if type(h) ~= "cdata" or not ffi.istype("struct sl_flow_rec", h) then
      error("engine:update: flow must be a flow handle (or a flow record's copy), got " ..
        (type(h) == "cdata" and tostring(ffi.typeof(h)) or type(h)), 2)
    end
    cu.fid, cu.slot, cu.n_keys, cu.keys = h.fid, h.slot, 0, nil
  else
    if type(keys) ~= "table" or #keys == 0 or #keys > 16 then
      error("engine:update: keys must be a list of 1 to 16 keys", 2)
    end
    local arr = self.keybuf or ffi.new("struct sl_key[16]") -- reused
    self.keybuf = arr
    for i, k in ipairs(keys) do make_key(k, arr[i - 1]) end
    cu.keys, cu.n_keys, cu.fid, cu.slot = arr, #keys, 0, 0
  end
  local st = u.stats or {}
  if type(st) ~= "table" then error("engine:update: stats must be a table", 2) end
  for name in pairs(st) do
    if not UPDATE_STATS[name] then
      error("engine:update: unknown stats." .. tostring(name) .. " (pkts_fwd bytes_fwd pkts_rev " ..
        "bytes_rev ip_bytes_fwd ip_bytes_rev)", 2)
    end
  end
  cu.add_fwd.pkts, cu.add_fwd.bytes = count_of(st, "pkts_fwd", "pkts"), count_of(st, "bytes_fwd", "bytes")
  cu.add_rev.pkts, cu.add_rev.bytes = count_of(st, "pkts_rev"), count_of(st, "bytes_rev")
  cu.add_fwd.ip_bytes = st.ip_bytes_fwd ~= nil and count_of(st, "ip_bytes_fwd") or cu.add_fwd.bytes
  cu.add_rev.ip_bytes = st.ip_bytes_rev ~= nil and count_of(st, "ip_bytes_rev") or cu.add_rev.bytes
  local tags = u.tags or {}
  if type(tags) ~= "table" then error("engine:update: tags must be a table", 2) end
  for name, value in pairs(tags) do
    local tv = type(value)
    if type(name) ~= "string" or (tv ~= "number" and tv ~= "string") then
      error("engine:update: tags are name = number or string, got " .. type(name) .. " = " .. tv, 2)
    end
  end
  local rc = C.sl_engine_update(self.e, cu)
  self.st.late = true -- a new flow, or a trim to make room: events to dispatch
  if rc == C.SL_E_CONFLICT then return nil, "key conflict: the keys belong to different live flows" end
  if rc == C.SL_E_STATE then return nil, "the input has ended: no new flow starts" end
  -- (its end came in the same batch of packets as the event handled now)
  if rc == -C.SL_ESRCH then return nil, "the flow has ended: only a live flow is updated" end
  if rc < 0 then return nil, "update failed: " .. core.strerror(rc) end
  local f = flow.handle(self.st, C.sl_engine_flow(self.e, cu.slot))
  for name, value in pairs(tags) do f:tag(name, value) end
  return f
end

-- engine:cork(fn): fn runs once every event emitted before this call has
-- been dispatched (to every policy), and before any emitted after it.
function Engine:cork(fn)
  live(self)
  local r = flowstate.cork(self.st, fn) -- not a tail call: error levels
  return r
end

-- engine:query{ where = fn(flow) | { field = value, ... }, tag = name,
--               top = n, by = "bytes" } -> list of handles on live flows,
-- biggest `by` first when top or by is given.
function Engine:query(q)
  live(self)
  local r = flowstate.query(self.st, q) -- not a tail call: error levels
  return r
end

-- Stops a live capture from a policy: every flow ends with "shutdown".
function Engine:shutdown()
  live(self)
  C.sl_engine_shutdown(self.e)
end

-- engine:reload(): during a run, loads every policy file of the run again
-- (sluice.reload): the old instance's snapshot goes to the new one's
-- restore, the flow table and outputs stay. Callable from a handler, a
-- progress or on_file callback: the reload happens once the current step
-- is dispatched (every event of it goes to the versions that saw the
-- rest of it), before the next. Returns true (asked; the outcome goes to
-- the run's on_reload and engine:stats().reloads / reload_failures), or
-- nil, why when no run is in progress (there is nothing to reload: a
-- run's policies are loaded when it starts).
function Engine:reload()
  live(self)
  if not self.running then return nil, "engine:reload: no run in progress" end
  self.reload_wanted = self.reload_wanted or "engine:reload()"
  return true
end

-- engine:run(policies, options, opts): see sluice.run.
Engine.run = require("sluice.run").run

function Engine:close()
  if self.e then
    flowstate.close(self.st)
    C.sl_engine_free(ffi.gc(self.e, nil))
    self.e, self.out, self.cstats = nil, nil, nil
  end
end

return M
