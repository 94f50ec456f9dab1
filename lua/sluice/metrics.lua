-- Prometheus metrics of a run: the text exposition format (version 0.0.4)
-- of an engine's counters, and a small HTTP server for GET /metrics that
-- the run loop serves between engine steps (Run:timers), never blocking:
-- non-blocking accept/recv/send, a bounded amount of work per call, at
-- most MAX_CONNS connections. A connection is closed when it made no
-- progress for CONN_TIMEOUT seconds: no whole request that long after it
-- was accepted, or nothing of the answer taken that long. A client that
-- reads gets the whole answer, however long it is (a collector with
-- thousands of exporters). The text is made once per scrape, in Lua.
--
--   local metrics = require "sluice.metrics"
--   local text = metrics.text(eng)              -- or eng:metrics_text()
--   local srv, err = metrics.listen("127.0.0.1:9300")
--   srv:serve(function() return metrics.text(eng) end)   -- between steps
--   srv:close()
local ffi = require "ffi"
local core = require "sluice.core"
local sock = require "sluice.sock"
local flow = require "sluice.flow"
local exporter_name = require("sluice.report").exporter_name

local C = ffi.C -- libc (declared in sluice.core)
local K = core.C -- the system constants of sluice.h (enum sl_sys)
local count_text = core.count_text
local format, concat = string.format, table.concat

local M = {}

M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
local MAX_CONNS = 4 -- connections open at once; more wait in the backlog
local CONN_TIMEOUT = 3 -- seconds without progress before a connection is closed
local MAX_REQUEST = 8192 -- bytes of request head read at most
-- bytes sent per connection per call at most: as much as the socket takes
-- up to this, so an idle run (a step every poll interval) still sends
-- tens of MB/s, and a busy one is held up a few ms at most
local TURN_BYTES = 4 * 1024 * 1024

-- ---- the text format -------------------------------------------------

-- A label value as the text format wants it: \, " and newline escaped.
local function escape(v)
  return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end
M.escape = escape

local function value_text(v)
  if v == nil then return "0" end
  if type(v) == "cdata" then return count_text(v) end
  if v ~= math.floor(v) then return format("%.17g", v) end
  if v < 0 then return format("%d", v) end
  return count_text(v)
end

-- A writer of metric families: each with # HELP and # TYPE once, then its
-- samples ({ labels = { {name, value}... } | nil, value }).
local function family(out, name, kind, help, samples)
  out[#out + 1] = format("# HELP %s %s\n# TYPE %s %s\n", name, help, name, kind)
  for _, s in ipairs(samples) do
    local labels = ""
    if s[2] then
      local parts = {}
      for i, l in ipairs(s[2]) do parts[i] = format('%s="%s"', l[1], escape(l[2])) end
      labels = "{" .. concat(parts, ",") .. "}"
    end
    out[#out + 1] = format("%s%s %s\n", name, labels, value_text(s[1]))
  end
end

local MALFORMED = {}
for r = 1, K.SL_MAL_COUNT - 1 do MALFORMED[#MALFORMED + 1] = ffi.string(K.sl_malformed_name(r)) end
local END_REASONS = {}
for r = 1, K.SL_END_COUNT - 1 do END_REASONS[#END_REASONS + 1] = flow.end_reason_name(r) end
local COLLECTOR_DROPS = {}
for r = 1, K.SL_COLLECTOR_DROP_COUNT - 1 do
  COLLECTOR_DROPS[#COLLECTOR_DROPS + 1] = ffi.string(K.sl_collector_drop_name(r))
end

-- one sample per known reason (0 included: a series that exists from the
-- start), plus any reason the table has that the list does not
local function by_reason(t, known, label, extra)
  local samples, seen = {}, {}
  for _, r in ipairs(known) do
    seen[r] = true
    local labels = { { label, r } }
    if extra then table.insert(labels, 1, extra) end
    samples[#samples + 1] = { t[r] or 0, labels }
  end
  for r, n in pairs(t) do
    if not seen[r] then
      local labels = { { label, r } }
      if extra then table.insert(labels, 1, extra) end
      samples[#samples + 1] = { n, labels }
    end
  end
  return samples
end

-- The sinks of an engine: during a run its routes (with what each has
-- queued now), after it the run's report. A list of { name, stats, queued }.
local function sinks_of(engine)
  local list, names = {}, {}
  local running = engine.running
  if running and running.outputs then
    for _, r in ipairs(running.outputs.routes) do
      list[#list + 1] = { name = r.name, stats = r.stats, queued = r:queued() }
    end
  elseif engine.report and engine.report.sinks then
    local keys = {}
    for k in pairs(engine.report.sinks) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do list[#list + 1] = { name = k, stats = engine.report.sinks[k], queued = 0 } end
  end
  for _, s in ipairs(list) do -- two sinks of one name stay two series
    local n = (names[s.name] or 0) + 1
    names[s.name] = n
    if n > 1 then s.name = s.name .. "#" .. n end
  end
  return list
end


local function collector_families(out, engine, st)
  family(out, "sluice_collector_messages_total", "counter",
    "NetFlow/IPFIX messages received", { { st.received or 0 } })
  family(out, "sluice_collector_records_total", "counter",
    "flow records decoded from the messages", { { st.records } })
  local xs = engine:exporters()
  local ex = { messages = {}, records = {}, templates = {}, dropped = {}, seq_lost = {},
    seq_resets = {}, held = {} }
  for _, x in ipairs(xs) do
    local l = { { "exporter", exporter_name(x) } }
    for _, k in ipairs { "messages", "records", "templates", "seq_lost", "seq_resets", "held" } do
      ex[k][#ex[k] + 1] = { x[k], l }
    end
    for _, s in ipairs(by_reason(x.dropped, COLLECTOR_DROPS, "reason", l[1])) do
      ex.dropped[#ex.dropped + 1] = s
    end
  end
  family(out, "sluice_exporter_messages_total", "counter", "messages received per exporter " ..
    "(exporter unknown: messages of no exporter, and the counters of evicted exporters)", ex.messages)
  family(out, "sluice_exporter_records_total", "counter", "flow records decoded per exporter", ex.records)
  family(out, "sluice_exporter_templates_total", "counter", "template records received per exporter",
    ex.templates)
  family(out, "sluice_exporter_records_dropped_total", "counter",
    "records or messages of an exporter dropped, by reason", ex.dropped)
  family(out, "sluice_exporter_sequence_lost_total", "counter",
    "records (v5, IPFIX) or packets (v9) the exporter's sequence numbers say were lost", ex.seq_lost)
  family(out, "sluice_exporter_sequence_resets_total", "counter",
    "sequence number resets (an exporter restarted)", ex.seq_resets)
  family(out, "sluice_exporter_held_total", "counter",
    "data sets held for a template still to come", ex.held)
  local cs = engine:collector_state()
  if cs then
    family(out, "sluice_collector_memory_bytes", "gauge", "memory the collector's state holds",
      { { cs.memory } })
    family(out, "sluice_collector_max_memory_bytes", "gauge", "the bound of the collector's state",
      { { cs.max_memory } })
    family(out, "sluice_collector_exporters", "gauge", "exporters known", { { cs.exporters } })
    family(out, "sluice_collector_templates", "gauge", "templates held", { { cs.templates } })
  end
end

-- The text of every metric of an engine (during or after a run).
function M.text(engine)
  local st = engine:stats()
  local out = {}
  family(out, "sluice_build_info", "gauge", "the sluice version (value 1)",
    { { 1, { { "version", require("sluice").version } } } })
  family(out, "sluice_start_time_seconds", "gauge", "when the engine was opened, seconds since " ..
    "the Unix epoch", { { engine.start_time or 0 } })
  if engine.collector then
    collector_families(out, engine, st)
  else
    family(out, "sluice_packets_received_total", "counter", "packets read from the input",
      { { st.packets } })
    family(out, "sluice_bytes_received_total", "counter", "bytes of the packets read (wire lengths)",
      { { st.bytes } })
    family(out, "sluice_not_ip_packets_total", "counter", "packets that are not IP (not in flows)",
      { { st.not_ip } })
    family(out, "sluice_malformed_packets_total", "counter", "malformed packets, by reason " ..
      "(ip_overlong ones are kept in their flows)", by_reason(st.malformed_by, MALFORMED, "reason"))
    family(out, "sluice_l4_cut_packets_total", "counter", "packets whose transport header " ..
      "the snap length cut (kept in their flows)", { { st.l4_cut } })
    family(out, "sluice_filtered_packets_total", "counter", "packets the --filter refused",
      { { st.filtered or 0 } })
    family(out, "sluice_fragments_unmatched_total", "counter",
      "IP fragments without their first fragment", { { st.frag_unmatched } })
    family(out, "sluice_tunnelled_packets_total", "counter", "packets that came in a tunnel",
      { { st.tunnelled } })
  end
  if st.kernel_drops then
    family(out, "sluice_kernel_drops_total", "counter", engine.collector and
      "datagrams the socket buffer dropped" or "packets the kernel dropped (ring full)",
      { { st.kernel_drops } })
    if not engine.collector then
      family(out, "sluice_kernel_packets_received_total", "counter",
        "packets the kernel gave the capture", { { st.received } })
      family(out, "sluice_ring_errors_total", "counter", "capture ring errors", { { st.ring_errors } })
    end
  end
  family(out, "sluice_flows_started_total", "counter", "flows started", { { st.flows_started } })
  family(out, "sluice_flows_ended_total", "counter", "flows ended, by reason",
    by_reason(st.ended_by, END_REASONS, "reason"))
  family(out, "sluice_flows_active", "gauge", "flows in the flow table", { { st.flows_active } })
  family(out, "sluice_flows_refused_total", "counter",
    "packets of new flows the full flow table refused", { { st.flows_refused } })
  family(out, "sluice_flow_trims_total", "counter",
    "flows ended early to keep the table under max_flows", { { st.trims } })
  family(out, "sluice_slices_closed_total", "counter", "time slices closed", { { st.slices_closed } })
  family(out, "sluice_slice_records_total", "counter", "records of the closed slices",
    { { st.slice_records } })
  local written, dropped, queued, retries = {}, {}, {}, {}
  for _, s in ipairs(sinks_of(engine)) do
    local l = { "sink", s.name }
    local t = s.stats
    written[#written + 1] = { t.written, { l } }
    for _, r in ipairs { { "lagging", t.dropped_lag }, { "failed", t.dropped_failed },
      { "unqueueable", t.dropped_unqueueable }, { "at_close", t.dropped_at_close } } do
      dropped[#dropped + 1] = { r[2], { l, { "reason", r[1] } } }
    end
    queued[#queued + 1] = { s.queued, { l } }
    retries[#retries + 1] = { t.retries, { l } }
  end
  family(out, "sluice_sink_records_written_total", "counter", "records each sink wrote", written)
  family(out, "sluice_sink_records_dropped_total", "counter",
    "records each sink dropped, by reason (lagging: its queue was full)", dropped)
  family(out, "sluice_sink_records_queued", "gauge", "records waiting in each sink's queue", queued)
  family(out, "sluice_sink_retries_total", "counter", "writes each sink tried again", retries)
  family(out, "sluice_policy_reloads_total", "counter", "policies reloaded (SIGHUP, engine:reload())",
    { { st.reloads } })
  family(out, "sluice_policy_reload_failures_total", "counter",
    "reloads that failed and left the old version running", { { st.reload_failures } })
  return concat(out)
end

-- ---- the server ------------------------------------------------------

-- "ADDR:PORT" (IPv4, [IPv6]:PORT, localhost) as a sluice.sock address;
-- port_add is added to the port (workers: PORT + worker). nil, err when bad.
function M.parse(spec, port_add)
  if type(spec) ~= "string" then return nil, "expected ADDR:PORT, got " .. type(spec) end
  local host, port = spec:match("^(%[.+%]):(%d+)$")
  if not host then host, port = spec:match("^([^:]+):(%d+)$") end
  port = tonumber(port)
  if not host or not port or port < 1 or port > 65535 then
    return nil, "expected ADDR:PORT (IPv6 as [ADDR]:PORT), got '" .. spec .. "'"
  end
  port = port + (port_add or 0)
  if port > 65535 then return nil, "port " .. port .. " is past 65535" end
  local a, err = sock.parse("tcp:" .. host .. ":" .. port)
  if not a then return nil, err end
  a.text = host .. ":" .. port
  return a
end

local Server = {}
Server.__index = Server

-- Opens the listening socket (non-blocking). Returns the server, or nil
-- and a one-line error ("127.0.0.1:9300: Address already in use").
function M.listen(spec, port_add)
  local a, err = M.parse(spec, port_add)
  if not a then return nil, err end
  local fd = C.socket(a.family, K.SL_SOCK_STREAM + K.SL_SOCK_NONBLOCK + K.SL_SOCK_CLOEXEC, 0)
  if fd < 0 then return nil, a.text .. ": " .. core.errno_text() end
  local one = ffi.new("int[1]", 1)
  C.setsockopt(fd, K.SL_SOL_SOCKET, K.SL_SO_REUSEADDR, one, ffi.sizeof(one))
  if C.bind(fd, a.sa, a.len) ~= 0 or C.listen(fd, 16) ~= 0 then
    err = core.errno_text()
    C.close(fd)
    return nil, a.text .. ": " .. err
  end
  return setmetatable({ fd = fd, address = a.text, conns = {}, buf = ffi.new("char[?]", 4096),
    scrapes = 0 }, Server)
end

local STATUS = { [200] = "OK", [400] = "Bad Request", [404] = "Not Found",
  [405] = "Method Not Allowed" }

-- The answer to a request head (its text up to the blank line).
local function answer(head, body_fn)
  local method, path, version = head:match("^(%u+) (%S+) HTTP/(%d%.%d)\r?\n")
  local code, body, ctype, extra = 200, nil, M.CONTENT_TYPE, ""
  if not method then
    code, version = 400, "1.0"
  elseif method ~= "GET" and method ~= "HEAD" then
    code, extra = 405, "Allow: GET, HEAD\r\n"
  elseif path ~= "/metrics" and not path:match("^/metrics%?") then
    code = 404
  end
  if code == 200 then
    body = body_fn()
  else
    body, ctype = STATUS[code] .. "\n", "text/plain; charset=utf-8"
  end
  local resp = format("HTTP/%s %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s" ..
    "Connection: close\r\n\r\n", version == "1.0" and "1.0" or "1.1", code, STATUS[code], ctype,
    #body, extra)
  if method ~= "HEAD" then resp = resp .. body end
  return resp, code
end

local function close_conn(self, i)
  C.close(self.conns[i].fd)
  table.remove(self.conns, i)
end

-- One connection's turn: read what came of the request; once the head is
-- in, the answer; send what the socket takes. true when done with it.
local function turn(self, c, now, body_fn)
  if now > c.deadline then return true end
  if not c.resp then
    local n = C.recv(c.fd, self.buf, 4096, K.SL_MSG_DONTWAIT)
    if n == 0 then return true end -- gone before asking
    if n < 0 then
      local errno = ffi.errno()
      return errno ~= K.SL_EAGAIN and errno ~= K.SL_EINTR
    end
    c.req = c.req .. ffi.string(self.buf, n)
    local head_end = c.req:find("\r?\n\r?\n")
    if not head_end then
      if #c.req >= MAX_REQUEST then c.resp, c.sent = answer("", body_fn), 0 end
      if not c.resp then return false end
    else
      local code
      c.resp, code = answer(c.req, body_fn)
      c.sent = 0
      if code == 200 then self.scrapes = self.scrapes + 1 end
    end
    -- from here the clock measures the client's reading, not the answer's age
    c.deadline = now + CONN_TIMEOUT
  end
  local p, total, turn_end = ffi.cast("const char *", c.resp), #c.resp, c.sent + TURN_BYTES
  while c.sent < total and c.sent < turn_end do
    local n = C.send(c.fd, p + c.sent, math.min(total, turn_end) - c.sent,
      K.SL_MSG_DONTWAIT + K.SL_MSG_NOSIGNAL)
    if n >= 0 then
      c.sent = c.sent + tonumber(n)
      c.deadline = now + CONN_TIMEOUT
    else
      local errno = ffi.errno()
      if errno ~= K.SL_EINTR then return errno ~= K.SL_EAGAIN end
    end
  end
  return c.sent >= total
end

-- Serves between steps: accepts what is waiting (up to MAX_CONNS open),
-- then gives each connection one turn. body_fn() makes the metrics text
-- (called once per request for /metrics). Never waits.
function Server:serve(body_fn, now)
  if not self.fd then return end
  now = now or core.monotonic()
  while #self.conns < MAX_CONNS do
    local fd = C.accept4(self.fd, nil, nil, K.SL_SOCK_NONBLOCK + K.SL_SOCK_CLOEXEC)
    if fd < 0 then break end
    self.conns[#self.conns + 1] = { fd = fd, req = "", deadline = now + CONN_TIMEOUT }
  end
  for i = #self.conns, 1, -1 do
    local ok, done = pcall(turn, self, self.conns[i], now, body_fn)
    if not ok or done then close_conn(self, i) end
    if not ok then error(done, 0) end
  end
end

-- Closes the connections and the listening socket.
function Server:close()
  if not self.fd then return end
  for i = #self.conns, 1, -1 do close_conn(self, i) end
  C.close(self.fd)
  self.fd = nil
end

return M
