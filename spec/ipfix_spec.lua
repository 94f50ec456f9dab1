-- IPFIX export (lua/sluice/sinks/ipfix.lua, core/src/ipfix.c) end to end:
--   - to a real collector, nfcapd 1.7.1 (UDP), read back with nfdump: flow
--     count, packet and byte totals and every flow's counters equal
--     sluice's own JSON lines (examples/sample.pcap and a generated trace
--     with IPv6, VLANs, ICMP and ICMPv6);
--   - slices exported as deltas over their interval;
--   - over TCP, to a collector written here with the FFI: message headers,
--     templates once per connection, sequence numbers, every record decoded;
--   - UDP template refresh and the observation domain, read from a socket;
--   - a collector that is not there (UDP to a closed port, TCP to a
--     listener that never accepts, TCP to a closed port): the run finishes
--     and every loss is counted;
--   - bad options.
-- nfcapd and nfdump come from the nfdump package (CI installs it, see
-- .ci/deps.sh); without them the collector tests are pending with that
-- reason. The generated trace needs bench/genpcap.c (shared); without it
-- those tests are pending with the reason.
local ffi = require "ffi"
local bit = require "bit"
local cjson = require "cjson"
local run = require "support.run"
local sluice = require "sluice"
local core = require "sluice.core"

local C = ffi.C
local q = run.q
local SAMPLE = run.root .. "/examples/sample.pcap"
-- ~2800 flows in 0.1 s of traffic: IPv4 and IPv6, VLANs, TCP, UDP, ICMP echo
-- over both IP versions.
local GEN_ARGS = "-n 50000 -c 500 -s 3"
-- 10 s of traffic at 2000 pps: several 5 s slice intervals.
local SPREAD_ARGS = "-n 20000 -c 300 -r 2000 -s 5"

-- libc calls that lua/sluice/core.lua does not declare (it has socket,
-- connect, send, close, inet_pton and the sl_sockaddr_* structs). Repeating
-- a function declaration another spec made is harmless to the FFI.
ffi.cdef [[
int bind(int fd, const void *addr, unsigned len);
int listen(int fd, int backlog);
int accept(int fd, void *addr, unsigned *len);
long recv(int fd, void *buf, size_t n, int flags);
int setsockopt(int fd, int level, int name, const void *val, unsigned len);
int getsockname(int fd, void *addr, unsigned *len);
int usleep(unsigned int usec);
]]

local AF_INET, AF_INET6 = 2, 10
local SOCK_STREAM, SOCK_DGRAM = 1, 2
local SOL_SOCKET, SO_RCVBUF, SO_RCVTIMEO, SO_RCVBUFFORCE = 1, 8, 20, 33
local MSG_DONTWAIT = 64
local EINTR, EAGAIN = 4, 11

local PEN_REVERSE = 29305
local SL_PEN = 32473 -- SL_IPFIX_PEN: sluice's own elements
local PROTO = { tcp = 6, udp = 17, icmp = 1, icmp6 = 58, sctp = 132 }
-- RFC 5102 flowEndReason for sluice's end reasons
local END_CODE = { idle = 1, active = 2, fin = 3, rst = 3, eof = 4, shutdown = 4, trimmed = 5 }

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

-- ---- sockets ---------------------------------------------------------------

local open_fds = {}

local function close_fds()
  for fd in pairs(open_fds) do C.close(fd) end
  open_fds = {}
end

local function swap16(p)
  return bit.bor(bit.rshift(p, 8), bit.lshift(bit.band(p, 0xff), 8))
end

local function loopback(port)
  local sa = ffi.new("struct sl_sockaddr_in")
  sa.family = AF_INET
  sa.port = swap16(port or 0)
  assert(C.inet_pton(AF_INET, "127.0.0.1", sa.addr) == 1)
  return sa
end

-- A socket bound to 127.0.0.1 on a free port: fd, port.
local function bound(kind)
  local fd = C.socket(AF_INET, kind, 0)
  assert(fd >= 0, "socket: " .. core.errno_text())
  open_fds[fd] = true
  local sa = loopback(0)
  assert(C.bind(fd, sa, ffi.sizeof(sa)) == 0, "bind: " .. core.errno_text())
  local len = ffi.new("unsigned[1]", ffi.sizeof(sa))
  assert(C.getsockname(fd, sa, len) == 0, "getsockname: " .. core.errno_text())
  return fd, swap16(sa.port)
end

local function close_fd(fd)
  C.close(fd)
  open_fds[fd] = nil
end

-- A UDP port nothing listens on (bound, then closed).
local function closed_port(kind)
  local fd, port = bound(kind or SOCK_DGRAM)
  close_fd(fd)
  return port
end

local function listener(backlog)
  local fd, port = bound(SOCK_STREAM)
  assert(C.listen(fd, backlog or 8) == 0, "listen: " .. core.errno_text())
  return fd, port
end

local function set_timeout(fd, secs)
  local tv = ffi.new("long[2]", math.floor(secs), math.floor(secs % 1 * 1e6))
  assert(C.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, tv, ffi.sizeof(tv)) == 0)
end

-- A UDP receive buffer large enough for a whole run's datagrams.
local function big_rcvbuf(fd)
  local v = ffi.new("int[1]", 8 * 1024 * 1024)
  if C.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, v, 4) ~= 0 then
    C.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, v, 4)
  end
end

local rbuf = ffi.new("uint8_t[65536]")

-- Every datagram waiting on fd, in order (non-blocking).
local function datagrams(fd)
  local list = {}
  while true do
    local n = tonumber(C.recv(fd, rbuf, 65536, MSG_DONTWAIT))
    if n >= 0 then
      list[#list + 1] = ffi.string(rbuf, n)
    else
      local e = ffi.errno()
      if e ~= EINTR then
        assert(e == EAGAIN, "recv: " .. core.errno_text(e))
        return list
      end
    end
  end
end

-- Waits until n datagrams (in all) are waiting or have been read into
-- got (a sender may hand them to the socket a moment later); then makes
-- sure no more come. Returns the new ones.
local function await_datagrams(fd, got, n, what)
  local new = {}
  local deadline = core.monotonic() + 5
  repeat
    for _, dg in ipairs(datagrams(fd)) do
      got[#got + 1], new[#new + 1] = dg, dg
    end
    if #got >= n then break end
    C.usleep(5000)
  until core.monotonic() > deadline
  C.usleep(50000)
  for _, dg in ipairs(datagrams(fd)) do got[#got + 1], new[#new + 1] = dg, dg end
  assert(#got == n, (what or "datagrams") .. ": expected " .. n .. " in all, got " .. #got)
  return new
end

-- The sink's counters (counts()): records taken (accepted), sent and lost.
local function counted(c)
  assert(type(c) == "table", "the report has no sink counters")
  assert(c.accepted and c.records and c.lost_records, "counts() lacks accepted, records or lost_records")
  return c.accepted, c.records, c.lost_records
end

local function accept(lfd, secs)
  set_timeout(lfd, secs)
  local fd = C.accept(lfd, nil, nil)
  assert(fd >= 0, "accept: " .. core.errno_text() .. " (the exporter never connected)")
  open_fds[fd] = true
  return fd
end

-- A stream read to its end (the exporter closes it); a timeout fails.
local function read_stream(fd, secs)
  set_timeout(fd, secs)
  local parts, total = {}, 0
  while true do
    local n = tonumber(C.recv(fd, rbuf, 65536, 0))
    if n == 0 then break end
    if n > 0 then
      parts[#parts + 1] = ffi.string(rbuf, n)
      total = total + n
    else
      local e = ffi.errno()
      if e ~= EINTR then
        error("recv from the exporter: " .. core.errno_text(e) .. " after " .. total .. " bytes")
      end
    end
  end
  return table.concat(parts)
end

local function wait_for(what, secs, fn)
  local deadline = core.monotonic() + secs
  while core.monotonic() < deadline do
    local v = fn()
    if v then return v end
    C.usleep(20000)
  end
  error("timed out after " .. secs .. " s waiting for " .. what)
end

-- ---- an IPFIX decoder (RFC 7011, independent of the encoder) ----------------

local function u16(s, i)
  local a, b = s:byte(i, i + 1)
  return a * 256 + b
end

local function u32(s, i)
  return u16(s, i) * 65536 + u16(s, i + 2)
end

local function uint(s, i, len)
  local v = 0
  for k = i, i + len - 1 do v = v * 256 + s:byte(k) end
  return v
end

local ADDRESS_IE = { [8] = true, [12] = true, [27] = true, [28] = true }
-- Elements kept as raw bytes: strings (applicationName 96,
-- applicationCategoryName 372) and octetArrays; by key, as in a record.
local RAW_IE = { [96] = true, [372] = true, [SL_PEN .. ":98"] = true, [SL_PEN .. ":99"] = true,
  [SL_PEN .. ":100"] = true, [SL_PEN .. ":101"] = true }
local VARLEN = 65535 -- RFC 7011 7: the length precedes each value

-- An IEEE 754 float64 in network order (sluice's statistics elements).
local dbuf = ffi.new("union { double d; uint8_t b[8]; }")
local function f64(s, i)
  for k = 0, 7 do dbuf.b[7 - k] = s:byte(i + k) end
  return tonumber(dbuf.d)
end

-- Splits a TCP stream into its messages by the header's length field.
local function split_stream(s)
  local msgs, pos = {}, 1
  while pos <= #s do
    assert(pos + 15 <= #s, "a truncated message header at byte " .. (pos - 1))
    assert(u16(s, pos) == 10, "not an IPFIX message at byte " .. (pos - 1))
    local len = u16(s, pos + 2)
    assert(len >= 16, "message length " .. len .. " at byte " .. (pos - 1))
    assert(pos + len - 1 <= #s, "a truncated message at byte " .. (pos - 1))
    msgs[#msgs + 1] = s:sub(pos, pos + len - 1)
    pos = pos + len
  end
  return msgs
end

-- Decodes messages (one transport session: templates carry over). Returns
-- { messages = { { version, length, size, export, seq, domain, templates
-- = { [id] = nfields }, ntemplates, records } }, records = { ... } }; a
-- record maps an element id to its value (the reverse ones under "r" ..
-- id, sluice's under "32473:" .. id; addresses, strings and octetArrays
-- as raw bytes); variable-length values are read after their length.
local function decode(msgs)
  local templates, out = {}, { messages = {}, records = {} }
  for m, s in ipairs(msgs) do
    assert(#s >= 16, "message " .. m .. " is " .. #s .. " bytes")
    local h = { version = u16(s, 1), length = u16(s, 3), size = #s, export = u32(s, 5),
      seq = u32(s, 9), domain = u32(s, 13), templates = {}, ntemplates = 0, records = 0 }
    local pos = 17
    while pos <= #s do
      assert(pos + 3 <= #s, "message " .. m .. ": a truncated set header")
      local id, len = u16(s, pos), u16(s, pos + 2)
      assert(len >= 4 and pos + len - 1 <= #s,
        "message " .. m .. ": set " .. id .. " of length " .. len .. " overruns the message")
      local stop, p = pos + len, pos + 4
      if id == 2 then
        while p + 3 < stop do
          local tid, n = u16(s, p), u16(s, p + 2)
          p = p + 4
          local fields, rlen = {}, 0
          for f = 1, n do
            local fid, flen, pen = u16(s, p), u16(s, p + 2), 0
            p = p + 4
            if fid >= 0x8000 then
              fid, pen = fid - 0x8000, u32(s, p)
              p = p + 4
            end
            fields[f] = { id = fid, len = flen, pen = pen }
            rlen = rlen + (flen == VARLEN and 1 or flen) -- the shortest record
          end
          assert(p <= stop, "message " .. m .. ": template " .. tid .. " overruns its set")
          templates[tid] = { fields = fields, len = rlen }
          h.templates[tid] = n
          h.ntemplates = h.ntemplates + 1
        end
      elseif id >= 256 then
        local t = templates[id]
        assert(t, "message " .. m .. ": a data set of template " .. id .. " before the template")
        while p + t.len <= stop do
          local r = { template = id }
          for _, f in ipairs(t.fields) do
            local key = f.pen == PEN_REVERSE and "r" .. f.id or f.pen == 0 and f.id or
              f.pen .. ":" .. f.id
            local len = f.len
            if len == VARLEN then
              len, p = s:byte(p), p + 1
              if len == 255 then len, p = u16(s, p), p + 2 end
              assert(p + len <= stop, "message " .. m .. ": a value overruns set " .. id)
            end
            if RAW_IE[key] or (f.pen == 0 and ADDRESS_IE[f.id]) then
              r[key] = s:sub(p, p + len - 1)
            elseif f.pen == SL_PEN and len == 8 then
              r[key] = f64(s, p)
            else
              r[key] = uint(s, p, len)
            end
            p = p + len
          end
          out.records[#out.records + 1] = r
          h.records = h.records + 1
        end
        assert(stop - p < t.len, "message " .. m .. ": set " .. id .. " has trailing bytes")
      end
      pos = stop
    end
    out.messages[m] = h
  end
  return out
end

-- Header checks common to every transport: version, length, domain and
-- sequence numbers (data records in the messages before each one).
local function check_headers(d, domain, max_bytes)
  local before = 0
  for m, h in ipairs(d.messages) do
    assert.equal(10, h.version, "message " .. m .. ": version")
    assert.equal(h.size, h.length, "message " .. m .. ": length field vs bytes received")
    if max_bytes then assert(h.size <= max_bytes, "message " .. m .. " is " .. h.size .. " bytes") end
    assert.equal(domain, h.domain, "message " .. m .. ": observation domain")
    assert.equal(before, h.seq, "message " .. m .. ": sequence number")
    before = before + h.records
  end
  return before
end

-- The template set: 256 (IPv4) and 257 (IPv6), 19 fields each, of which the
-- four RFC 5103 reverse elements (octets, packets, TCP flags, layer 2 octets).
local function check_template_message(h, m)
  assert.equal(2, h.ntemplates, "message " .. m .. " should carry both templates")
  assert.equal(19, h.templates[256], "template 256 fields")
  assert.equal(19, h.templates[257], "template 257 fields")
end

-- ---- one line per flow or slice, to compare as multisets ----------------------

local function hex(raw)
  return (raw:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local abuf = ffi.new("uint8_t[16]")
local function addr(text)
  assert(type(text) == "string", "no address")
  if has(text, ":") then
    assert(C.inet_pton(AF_INET6, text, abuf) == 1, "bad address " .. text)
    return hex(ffi.string(abuf, 16))
  end
  assert(C.inet_pton(AF_INET, text, abuf) == 1, "bad address " .. text)
  return hex(ffi.string(abuf, 4))
end

-- Milliseconds of a JSON time (epoch seconds with microseconds).
local function ms(secs)
  return math.floor(math.floor(secs * 1e6 + 0.5) / 1000)
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

-- Milliseconds of an nfdump JSON time, printed in UTC (TZ=UTC).
local function nf_ms(t)
  local y, mo, d, hh, mm, ss, frac = tostring(t):match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)%.(%d%d%d)$")
  assert(y, "unexpected nfdump time '" .. tostring(t) .. "'")
  local days = days_from_civil(tonumber(y), tonumber(mo), tonumber(d))
  return ((days * 24 + tonumber(hh)) * 60 + tonumber(mm)) * 60000 + tonumber(ss) * 1000 + tonumber(frac)
end

-- nfdump's flag letters, bit 7 to bit 0
-- (CWR ECE URG ACK PSH RST SYN FIN)
local function nf_flags(s)
  local v = 0
  for i = 1, 8 do
    if s:sub(i, i) ~= "." then v = v + 2 ^ (8 - i) end
  end
  return v
end

local function is_icmp(proto)
  return proto == 1 or proto == 58
end

-- ICMP ports: sluice's JSON has the echo id, IPFIX the type/code (checked
-- on its own); TCP flags: forward direction only (what nfdump keeps).
local function line(proto, src, sport, dst, dport, vlan, first, last, ipkt, ibyt, opkt, obyt, flags)
  if is_icmp(proto) then sport, dport = "-", "-" end
  return table.concat({ proto, src, sport, dst, dport, "vlan" .. vlan, first, last,
    ipkt, ibyt, opkt, obyt, proto == 6 and flags or "-" }, " ")
end

-- A sluice JSON flow or slice line (counters: a flow's totals, a slice's
-- deltas; octets: the IP packets' bytes, as IPFIX's octetDeltaCount).
local function json_line(f)
  local proto = PROTO[f.proto] or tonumber(f.proto)
  local first, last
  if f.type == "slice" then
    first, last = ms(f.start), ms(f["end"])
  else
    first, last = ms(f.first), ms(f.last)
  end
  return line(proto, addr(f.src), f.sport, addr(f.dst), f.dport, f.vlan, first, last,
    f.pkts_fwd, f.ip_bytes_fwd, f.pkts_rev, f.ip_bytes_rev, f.tcp_flags_fwd)
end

-- An nfdump JSON record (in_* forward, out_* the RFC 5103 reverse counters).
local function nfdump_line(n)
  return line(n.proto, addr(n.src4_addr or n.src6_addr), n.src_port, addr(n.dst4_addr or n.dst6_addr),
    n.dst_port, n.src_vlan or 0, nf_ms(n.first), nf_ms(n.last), n.in_packets, n.in_bytes,
    n.out_packets or 0, n.out_bytes or 0, n.tcp_flags and nf_flags(n.tcp_flags))
end

-- A record decoded here.
local function ipfix_line(r)
  return line(r[4], hex(r[8] or r[27]), r[7], hex(r[12] or r[28]), r[11], r[58], r[152], r[153],
    r[2], r[1], r.r2, r.r1, r[6])
end

-- Asserts two lists of lines are the same multiset; shows differences.
local function same_lines(expected, got, what)
  local count = {}
  for _, l in ipairs(expected) do count[l] = (count[l] or 0) + 1 end
  for _, l in ipairs(got) do count[l] = (count[l] or 0) - 1 end
  local missing, extra = {}, {}
  for l, n in pairs(count) do
    for _ = 1, math.abs(n) do
      local t = n > 0 and missing or extra
      if #t < 5 then t[#t + 1] = l end
    end
  end
  table.sort(missing)
  table.sort(extra)
  assert(#missing == 0 and #extra == 0 and #expected == #got, string.format(
    "%s: %d expected, %d got\n(proto src sport dst dport vlan first_ms last_ms ipkt ibyt opkt obyt " ..
    "tcp_flags_fwd)\nexpected, not found:\n  %s\nfound, not expected:\n  %s", what, #expected,
    #got, table.concat(missing, "\n  "), table.concat(extra, "\n  ")))
end

local function map(list, fn)
  local out = {}
  for i, v in ipairs(list) do out[i] = fn(v) end
  return out
end

-- ---- traces, the CLI, policies ---------------------------------------------

-- A generated trace; pending (with the reason, also on stderr) when the
-- generator source is absent, an error when it fails.
local function generated(args)
  return run.generated(args, "ipfix_spec", pending)
end

local function need_nfdump()
  for _, cmd in ipairs { "nfcapd", "nfdump" } do
    if not run.have(cmd) then
      local why = cmd .. " is not installed (apt-get install nfdump; CI installs it via " ..
        ".ci/deps.sh): the real-collector round trip is not checked"
      io.stderr:write("ipfix_spec: ", why, "\n")
      pending(why)
    end
  end
end

-- The flow records of a default run, read back from JSON.
local function json_flows(path)
  local r, recs = run.sluice_json("-r " .. q(path))
  assert(r.code == 0, run.describe(r))
  local flows = run.of_type(recs, "flow")
  assert(#flows > 0, "no flows\n" .. run.describe(r))
  return flows
end

-- Policies that emit the slice records only (no flow records): the whole
-- batch at once (sinks take it with write_batch, as the default job does),
-- or record by record (write).
local SLICES_ONLY = {
  batch = [[
local P = { info = { name = "slices_only", options = {} } }
local emit
function P.init(_, ctx) emit = ctx.emit end
function P.on_slice(batch) emit(batch) end
return P
]],
  each = [[
local P = { info = { name = "slices_each", options = {} } }
local emit
function P.init(_, ctx) emit = ctx.emit end
function P.on_slice(batch)
  for rec in batch:records() do emit(rec) end
end
return P
]],
}

-- Flow copies of a capture, for driving a sink directly.
local function flow_copies(path)
  local recs = {}
  local eng = assert(sluice.open { read = path })
  assert(eng:run { on_flow_end = function(f) recs[#recs + 1] = f:copy() end })
  return recs
end

-- A policy emitting every ended flow to the run's outputs.
local function flows_policy()
  local emit
  return {
    init = function(_, ctx) emit = ctx.emit end,
    on_flow_end = function(f) emit(f) end,
  }
end

-- ---- nfcapd ----------------------------------------------------------------

local collectors = {}

-- Starts nfcapd on a free UDP port of 127.0.0.1 writing into a fresh
-- directory; waits until it is ready. Returns { port, dir, nf, pid_file,
-- done, log }.
local function nfcapd_start()
  local dir = run.tmpdir()
  local last_log = ""
  for attempt = 1, 3 do
    local c = { dir = dir, nf = dir .. "/nf" .. attempt, port = closed_port(SOCK_DGRAM),
      log = dir .. "/nfcapd" .. attempt .. ".log", pid_file = dir .. "/nfcapd" .. attempt .. ".pid",
      done = dir .. "/nfcapd" .. attempt .. ".exit" }
    os.execute("mkdir -p " .. q(c.nf))
    -- a shell waits for nfcapd and records its exit: no zombie to poll
    local script = string.format("%snfcapd -b 127.0.0.1 -p %d -w %s -t 60 -B 8388608 >%s 2>&1 & " ..
      "echo $! >%s; wait $!; echo $? >%s", run.PLAIN, c.port, q(c.nf), q(c.log), q(c.pid_file),
      q(c.done))
    os.execute("sh -c " .. q(script) .. " </dev/null >/dev/null 2>&1 &")
    collectors[#collectors + 1] = c
    local state = wait_for("nfcapd to start (" .. c.log .. ")", 10, function()
      if run.exists(c.done) then return "exited" end
      local log = run.slurp(c.log) or ""
      if has(log, "Startup nfcapd") and run.exists(c.pid_file) then return "ready" end
    end)
    if state == "ready" then
      c.pid = tonumber(run.slurp(c.pid_file):match("%d+"))
      return c
    end
    last_log = run.slurp(c.log) or "" -- the port was taken meanwhile?
  end
  error("nfcapd did not start:\n" .. last_log)
end

-- Stops nfcapd (SIGTERM flushes its file) and waits for it; returns its log.
local function nfcapd_stop(c)
  if not run.exists(c.done) and c.pid then
    os.execute("kill -TERM " .. c.pid .. " 2>/dev/null")
  end
  wait_for("nfcapd to exit", 15, function() return run.exists(c.done) end)
  c.stopped = true
  return run.slurp(c.log) or ""
end

local function stop_collectors()
  for _, c in ipairs(collectors) do
    if not c.stopped and c.pid and not run.exists(c.done) then pcall(nfcapd_stop, c) end
  end
  collectors = {}
end

local function nfdump(args)
  local r = run.sh(run.PLAIN .. "TZ=UTC nfdump " .. args)
  assert(r.code == 0, "nfdump failed\n" .. run.describe(r))
  return r.out
end

-- nfdump's records as JSON.
local function nfdump_records(nf)
  local out = nfdump("-R " .. q(nf) .. " -o json")
  local ok, list = pcall(cjson.decode, out)
  assert(ok and type(list) == "table", "nfdump -o json is not JSON:\n" .. out:sub(1, 500))
  return list
end

-- nfdump's summary line: flows, bytes, packets (in and out together).
local function nfdump_summary(nf)
  local out = nfdump("-R " .. q(nf) .. " -o csv")
  local flows, bytes, pkts = out:match("\nSummary\nflows,bytes,packets[^\n]*\n(%d+),(%d+),(%d+)")
  assert(flows, "no Summary in nfdump -o csv:\n" .. out:sub(-500))
  return tonumber(flows), tonumber(bytes), tonumber(pkts)
end

-- Runs `sluice run ARGS -r TRACE --out ipfix:127.0.0.1:PORT --out
-- json:OUT -v` into a fresh nfcapd. sluice must report every record sent
-- (its -v sink line). A datagram lost on the way shows as a sequence error
-- or a shortfall in nfcapd's summary: the run is then repeated (three
-- tries); any other difference is for the caller to find. Returns the
-- collector, the JSON records and nfcapd's log.
local function export_to_nfcapd(trace, args)
  local logs = {}
  for attempt = 1, 3 do
    local c = nfcapd_start()
    local out = c.dir .. "/out" .. attempt .. ".json"
    local r = run.sh(run.SLUICE .. " run " .. (args or "") .. " -r " .. q(trace) ..
      " --out ipfix:127.0.0.1:" .. c.port .. " --out json:" .. q(out) .. " -q -v")
    local log = nfcapd_stop(c)
    assert(r.code == 0, run.describe(r))
    local line = r.err:match("sink ipfix:udp:127%.0%.0%.1:" .. c.port .. ":[^\n]*")
    assert(line, "sluice -v printed no line for the IPFIX sink\n" .. run.describe(r))
    local n = {}
    for k, v in line:gmatch("([%a_]+)=(%d+)") do n[k] = tonumber(v) end
    local taken, sent, lost = counted(n)
    assert(taken == sent and lost == 0 and n.lost_messages == 0,
      "sluice did not send every record to nfcapd:\n" .. line)
    local seq_errors = tonumber(log:match("Sequence Errors: (%d+)"))
    local seen = tonumber(log:match("Flows: (%d+)"))
    assert(seq_errors and seen, "nfcapd printed no summary:\n" .. log)
    assert(has(log, "Bad Packets: 0"), "nfcapd found bad packets:\n" .. log)
    if seq_errors == 0 and seen == sent then return c, run.json_lines(out), log end
    logs[#logs + 1] = log .. "sluice: " .. line .. "\n"
    io.stderr:write("ipfix_spec: nfcapd got ", seen, " of ", sent, " records with ", seq_errors,
      " sequence errors (datagrams lost?), trying again\n")
  end
  error("nfcapd missed records in 3 runs:\n" .. table.concat(logs, "\n"))
end

-- nfdump's view of a run equals sluice's JSON: record count, the totals,
-- and every record; ICMP type/code as the destination port. recs: the
-- JSON records that were exported.
local function check_collected(c, recs)
  local nf = nfdump_records(c.nf)
  assert.equal(#recs, #nf, "records in nfdump vs lines in sluice's JSON")
  local pkts, _, bytes = run.flow_totals(recs)
  local nflows, nbytes, npkts = nfdump_summary(c.nf)
  assert.equal(#recs, nflows, "nfdump summary: flows")
  assert.equal(pkts, npkts, "nfdump summary: packets (in + out)")
  assert.equal(bytes, nbytes, "nfdump summary: bytes (in + out)")
  local sp, sb = 0, 0
  for _, n in ipairs(nf) do
    sp = sp + n.in_packets + (n.out_packets or 0)
    sb = sb + n.in_bytes + (n.out_bytes or 0)
  end
  assert.equal(pkts, sp, "sum of in_packets + out_packets")
  assert.equal(bytes, sb, "sum of in_bytes + out_bytes")
  same_lines(map(recs, json_line), map(nf, nfdump_line), "records in nfdump vs sluice's JSON")

  -- ICMP: the type/code of the first packet (echo request) in the IPFIX
  -- elements and as destination port, "type.code" in nfdump's text output
  local want = { [1] = 0, [58] = 0 }
  for _, f in ipairs(recs) do
    local p = PROTO[f.proto]
    if want[p] then want[p] = want[p] + 1 end
  end
  local got = { [1] = 0, [58] = 0 }
  for _, n in ipairs(nf) do
    if is_icmp(n.proto) then
      got[n.proto] = got[n.proto] + 1
      assert.equal(n.proto == 1 and 8 or 128, n.icmp_type, "icmp_type of an echo flow")
      assert.equal(0, n.icmp_code, "icmp_code")
    end
  end
  assert.same(want, got, "ICMP and ICMPv6 records")
  local text = nfdump("-R " .. q(c.nf) .. " -q -o " .. q("fmt:%pr|%dp") .. " 'proto icmp or proto icmp6'")
  local shown = { [1] = 0, [58] = 0 }
  for l in text:gmatch("[^\n]+") do
    local pr, dp = l:match("^%s*(%S+)%s*|%s*(%S+)%s*$")
    assert(pr, "unexpected nfdump line: " .. l)
    if pr == "ICMP" then
      assert.equal("8.0", dp, "ICMP echo request as nfdump's dst port")
      shown[1] = shown[1] + 1
    else
      assert.equal("ICMP6", pr, l)
      assert.equal("128.0", dp, "ICMPv6 echo request as nfdump's dst port")
      shown[58] = shown[58] + 1
    end
  end
  assert.same(want, shown, "ICMP records in nfdump's text output")
  return want
end

-- ---- the specs ---------------------------------------------------------------

describe("IPFIX to nfcapd (UDP), read back with nfdump", function()
  after_each(stop_collectors)
  teardown(run.cleanup)

  it("examples/sample.pcap: every flow, with its forward and reverse counters", function()
    need_nfdump()
    local c, recs, log = export_to_nfcapd(SAMPLE)
    local flows = run.of_type(recs, "flow")
    assert.equal(161, #flows, "sluice's JSON flows")
    assert.equal(#flows, #recs, "the default job emits flows only")
    local pkts, bytes, ip_bytes = run.flow_totals(flows)
    assert.equal(1600, pkts)
    assert.equal(831733, bytes)
    -- nfdump counts IP bytes (octetDeltaCount): tshark's sum of ip.len and
    -- 40 + ipv6.plen over the sample
    assert.equal(806853, ip_bytes)
    assert(has(log, "Flows: 161, Packets: 1600, Bytes: 806853"), "nfcapd's own count:\n" .. log)
    local icmp = check_collected(c, flows)
    assert.equal(2, icmp[1], "the sample has two ICMP echo flows")
    local v6 = 0
    for _, f in ipairs(flows) do if f.ip_version == 6 then v6 = v6 + 1 end end
    assert.equal(37, v6, "IPv6 flows in the sample")
  end)

  it("a generated trace (genpcap " .. GEN_ARGS .. "): IPv4, IPv6, VLANs, ICMP, ICMPv6", function()
    need_nfdump()
    local trace, truth = generated(GEN_ARGS)
    local c, recs, log = export_to_nfcapd(trace)
    local flows = run.of_type(recs, "flow")
    assert.equal(truth.flows, #flows, "sluice's JSON flows vs the generator")
    local pkts, bytes, ip_bytes = run.flow_totals(flows)
    assert.equal(truth.packets, pkts)
    assert.equal(truth.bytes_frame, bytes)
    assert.equal(truth.bytes_ip, ip_bytes)
    assert(has(log, string.format("Flows: %d, Packets: %d, Bytes: %d", truth.flows, truth.packets,
      truth.bytes_ip)), "nfcapd's own count:\n" .. log)
    local icmp = check_collected(c, flows)
    assert(icmp[1] > 0 and icmp[58] > 0, "the trace should have ICMP and ICMPv6 flows")
    assert.equal(truth.flows_by_proto.icmp, icmp[1] + icmp[58])
    local v6, vlan = 0, 0
    for _, f in ipairs(flows) do
      if f.ip_version == 6 then v6 = v6 + 1 end
      if f.vlan ~= 0 then vlan = vlan + 1 end
    end
    assert.equal(truth.flows_ipv6, v6, "IPv6 flows")
    assert.equal(truth.flows_vlan, vlan, "VLAN flows")
  end)

  describe("slices (--slice 5) are exported as deltas over their interval", function()
    local function check_slices(trace, how)
      local dir = run.tmpdir()
      local policy = run.spit(dir .. "/slices_" .. how .. ".lua", SLICES_ONLY[how])
      local c, recs = export_to_nfcapd(trace, q(policy) .. " --slice 5")
      local slices = run.of_type(recs, "slice")
      assert.equal(#recs, #slices, "the policy emits slice records only")
      local flows = json_flows(trace)
      assert(#slices > #flows, "flows should span several intervals (" .. #slices .. " slices, " ..
        #flows .. " flows)")
      -- deltas: the slices add up to the trace's totals (running totals
      -- would add up to more)
      local fp, fb, fi = run.flow_totals(flows)
      local sp, sb, si = run.flow_totals(slices)
      assert.equal(fp, sp, "slice packets vs flow packets in the JSON")
      assert.equal(fb, sb, "slice bytes vs flow bytes in the JSON")
      assert.equal(fi, si, "slice IP bytes vs flow IP bytes in the JSON")
      check_collected(c, slices) -- count, totals = the flows' totals, every record
    end

    it("examples/sample.pcap, each batch emitted at once (write_batch)", function()
      need_nfdump()
      check_slices(SAMPLE, "batch")
    end)

    it("examples/sample.pcap, record by record (write)", function()
      need_nfdump()
      check_slices(SAMPLE, "each")
    end)

    it("a generated trace over 10 s (genpcap " .. SPREAD_ARGS .. "), batches", function()
      need_nfdump()
      check_slices((generated(SPREAD_ARGS)), "batch")
    end)

    -- the flows' totals went after their slices' deltas: a collector
    -- adding records up counted every packet twice
    it("the default job sends IPFIX the slices and not the flows too: every packet counted once", function()
      need_nfdump()
      local c, recs = export_to_nfcapd(SAMPLE, "--slice 5")
      local flows, slices = run.of_type(recs, "flow"), run.of_type(recs, "slice")
      assert.equal(161, #flows, "the JSON output still has the flows")
      assert.equal(#recs, #flows + #slices)
      assert(#slices > #flows, "slices: " .. #slices)
      check_collected(c, slices)
      local nflows, nbytes, npkts = nfdump_summary(c.nf)
      assert.equal(#slices, nflows)
      assert.equal(1600, npkts)
      assert.equal(806853, nbytes)
      -- a flow's end is in the slice of the interval it ended in
      local ended = 0
      for _, s in ipairs(slices) do if s.end_reason then ended = ended + 1 end end
      assert(ended > 0, "no slice has an end reason")
    end)
  end)
end)

-- A JSON line's record: a flow by its id, a slice by its flow and interval.
local function json_key(f)
  if f.type == "slice" then return f.flow_id .. "@" .. ms(f.start) end
  return f.id .. ""
end

local function ipfix_key(r, slices)
  if slices then return r[148] .. "@" .. r[152] end
  return r[148] .. ""
end

-- Checks a decoded TCP stream against JSON flow or slice lines: templates
-- in the first message only, headers, every record (flowId, flowEndReason,
-- ICMP type/code, reverse TCP flags too).
local function check_tcp_stream(d, recs, domain, max_bytes)
  assert(#d.messages > 0, "no messages")
  check_template_message(d.messages[1], 1)
  for m = 2, #d.messages do
    assert.equal(0, d.messages[m].ntemplates, "templates again in message " .. m .. " on one connection")
  end
  local nrec = check_headers(d, domain, max_bytes)
  assert.equal(#recs, nrec, "data records vs JSON lines")
  same_lines(map(recs, json_line), map(d.records, ipfix_line), "decoded records vs sluice's JSON")
  local slices = recs[1] and recs[1].type == "slice"
  local by_key = {}
  for _, f in ipairs(recs) do by_key[json_key(f)] = f end
  for _, r in ipairs(d.records) do
    local key = ipfix_key(r, slices)
    local f = by_key[key]
    assert(f, "no JSON line for the record of flowId@start " .. key)
    assert.equal(json_line(f), ipfix_line(r), "the record of " .. key)
    -- a slice of a flow that goes on: activeTimeout (2)
    local reason = f.end_reason and END_CODE[f.end_reason] or 2
    assert.equal(reason, r[136], "flowEndReason of " .. key .. " (" .. tostring(f.end_reason) .. ")")
    assert.equal(f.ip_version == 6 and 257 or 256, r.template)
    local proto = PROTO[f.proto]
    local tc = r[r.template == 256 and 32 or 139]
    if is_icmp(proto) then
      assert.equal((proto == 1 and 8 or 128) * 256, tc, "icmpTypeCode of " .. key)
      assert.equal(tc, r[11], "ICMP type/code as destinationTransportPort")
      assert.equal(0, r[7], "ICMP source port")
    else
      assert.equal(0, tc, "icmpTypeCode outside ICMP")
    end
    assert.equal(f.tcp_flags_rev, r.r6, "reverse tcpControlBits of " .. key)
    -- the frames' bytes, as layer2OctetDeltaCount
    assert.equal(f.bytes_fwd, r[352], "layer2OctetDeltaCount of " .. key)
    assert.equal(f.bytes_rev, r.r352, "reverse layer2OctetDeltaCount of " .. key)
    by_key[key] = nil -- each once
  end
end

describe("IPFIX over TCP to a collector written here", function()
  after_each(close_fds)
  teardown(run.cleanup)

  it("through the library: templates once, headers, sequence numbers, every record", function()
    local lfd, port = listener()
    local dir = run.tmpdir()
    local name = "ipfix:tcp:127.0.0.1:" .. port
    local xp = sluice.sink.ipfix { collector = "127.0.0.1:" .. port, transport = "tcp", domain = 3,
      max_bytes = 1000 }
    assert.equal(name, xp.name)
    local js = assert(sluice.sink.json { path = dir .. "/flows.json" })
    local eng = assert(sluice.open { read = SAMPLE })
    local t0 = os.time()
    local ok, report = eng:run(flows_policy(), nil, { outputs = { xp, js } })
    local t1 = os.time()
    assert(ok, report)
    -- the run closed the sink, so the stream ends; 14 KB wait in the
    -- socket buffers for us
    local fd = accept(lfd, 10)
    local stream = read_stream(fd, 10)
    local flows = run.of_type(run.json_lines(dir .. "/flows.json"), "flow")
    assert.equal(161, #flows)
    local d = decode(split_stream(stream))
    assert(#d.messages > 5, "max_bytes = 1000 should split 161 records into many messages, got " ..
      #d.messages)
    check_tcp_stream(d, flows, 3, 1000)
    for m, h in ipairs(d.messages) do
      assert(h.export >= t0 and h.export <= t1, "message " .. m .. ": export time " .. h.export)
    end
    local st = report.sinks[name]
    assert(st, "the report has no sink " .. name)
    assert.equal(161, st.written)
    assert.equal(0, st.dropped_lag + st.dropped_failed + st.dropped_unqueueable + st.dropped_at_close)
    local taken, sent, lost = counted(st.counts)
    assert.same({ 161, 161, 0 }, { taken, sent, lost }, "records taken, sent, lost")
    assert.equal(#d.messages, st.counts.messages)
    assert.equal(#stream, st.counts.bytes)
    assert.equal(0, st.counts.lost_messages)
  end)

  it("slice batches (write_batch) through the library: message by message, every record", function()
    local lfd, port = listener()
    local dir = run.tmpdir()
    local xp = sluice.sink.ipfix { collector = "127.0.0.1:" .. port, transport = "tcp", max_bytes = 1000 }
    local js = assert(sluice.sink.json { path = dir .. "/slices.json" })
    local eng = assert(sluice.open { read = SAMPLE, slice = 5 })
    local emit, batches = nil, 0
    local ok, report = eng:run({
      init = function(_, ctx) emit = ctx.emit end,
      on_slice = function(batch)
        batches = batches + 1
        emit(batch)
      end,
    }, nil, { outputs = { xp, js } })
    assert(ok, report)
    assert(batches >= 4, "slice batches: " .. batches)
    local fd = accept(lfd, 10)
    local d = decode(split_stream(read_stream(fd, 10)))
    local slices = run.json_lines(dir .. "/slices.json")
    assert.equal(357, #run.of_type(slices, "slice"))
    assert.equal(#slices, #run.of_type(slices, "slice"))
    assert(#d.messages > 20, "357 records in 1000-byte messages: got " .. #d.messages)
    check_tcp_stream(d, slices, 0, 1000)
    local st = report.sinks[xp.name]
    assert.equal(357, st.written)
    local taken, sent, lost = counted(st.counts)
    assert.same({ 357, 357, 0 }, { taken, sent, lost }, "records taken, sent, lost")
    assert.equal(#d.messages, st.counts.messages)
  end)

  it("from the CLI (--out ipfix:tcp:HOST:PORT) with a generated trace, read while it runs", function()
    local trace = generated(GEN_ARGS)
    local lfd, port = listener()
    local dir = run.tmpdir()
    local out, rc = dir .. "/flows.json", dir .. "/rc"
    local cmd = string.format("%s run -r %s --out ipfix:tcp:127.0.0.1:%d --out json:%s -q -v " ..
      ">%s 2>%s; echo $? >%s", run.SLUICE, q(trace), port, q(out), q(dir .. "/stdout"),
      q(dir .. "/stderr"), q(rc))
    os.execute("sh -c " .. q(cmd) .. " </dev/null >/dev/null 2>&1 &")
    local fd = accept(lfd, 30)
    local stream = read_stream(fd, 60)
    local code = wait_for("sluice to exit", 30, function() return run.slurp(rc) end)
    local err = run.slurp(dir .. "/stderr") or ""
    assert.equal("0", code:match("%d+"), "sluice failed:\n" .. err)
    local flows = run.of_type(run.json_lines(out), "flow")
    assert(#flows > 2000, "flows in the JSON: " .. #flows)
    local d = decode(split_stream(stream))
    assert(#d.messages > 1, "a 65535-byte message holds ~800 records: expected several")
    check_tcp_stream(d, flows, 0, 65535) -- the CLI exports as domain 0 (worker 0)
    assert(has(err, string.format("lost_messages=0 lost_records=0 messages=%d records=%d",
      #d.messages, #flows)), "the CLI's sink line (-v):\n" .. err)
  end)
end)

describe("IPFIX over UDP read from a socket here", function()
  after_each(close_fds)
  teardown(run.cleanup)

  it("templates: the first message, then after each template_refresh (sink:tick, fake time); domain in every header", function()
    local fd, port = bound(SOCK_DGRAM)
    big_rcvbuf(fd)
    local recs = flow_copies(SAMPLE)
    assert.equal(161, #recs)
    local xp = sluice.sink.ipfix { collector = "127.0.0.1:" .. port, domain = 7, template_refresh = "10s" }
    local t0 = core.monotonic()
    local nexti = 1
    local function write(n)
      for _ = 1, n do
        assert(xp:write(recs[nexti]))
        nexti = nexti + 1
      end
    end
    local got = {} -- every datagram, in order
    -- The run loop ticks every 0.1 s; the sender thread is woken in
    -- batches or by a tick, so a message handed over by one tick may leave
    -- at the next: each step here ticks twice at the same time (the second
    -- tick finds nothing more to do).
    local function tick(t)
      xp:tick(t)
      xp:tick(t)
    end

    write(5)
    tick(t0 + 0.001)
    await_datagrams(fd, got, 0, "before flush_interval (1 s)")
    tick(t0 + 2)
    local dgs = await_datagrams(fd, got, 1, "the partial message after flush_interval")
    local h = decode(dgs).messages[1] -- decodes on its own: it has the templates
    check_template_message(h, 1)
    assert.equal(5, h.records)

    write(5)
    tick(t0 + 4)
    await_datagrams(fd, got, 2)
    h = decode(got).messages[2]
    assert.equal(0, h.ntemplates, "no templates before template_refresh is due")
    assert.equal(5, h.records)

    tick(t0 + 11) -- template_refresh is due; nothing is pending
    await_datagrams(fd, got, 2, "a refresh alone sends nothing")
    write(5)
    tick(t0 + 13)
    dgs = await_datagrams(fd, got, 3)
    h = decode(dgs).messages[1] -- decodes on its own: it brings the templates
    check_template_message(h, 3)
    assert.equal(5, h.records)

    -- the rest: full messages are handed over as they fill, no tick
    -- needed; close sends the last one and waits for the sender
    write(#recs - nexti + 1)
    local c = xp:counts() -- before close: the sink may still be sending
    xp:close()
    c = xp:counts()
    await_datagrams(fd, got, c.messages, "messages the sink counts as sent")
    local d = decode(got)
    assert(#d.messages > 8, "161 records in 1400-byte datagrams: got " .. #d.messages)
    local nrec = check_headers(d, 7, 1400)
    assert.equal(161, nrec)
    for m = 4, #d.messages do
      assert.equal(0, d.messages[m].ntemplates, "message " .. m .. ": no refresh was due")
    end
    same_lines(map(recs, function(f) return json_line(f:totable()) end), map(d.records, ipfix_line),
      "records received vs the flows")
    local taken, sent, lost = counted(c)
    assert.same({ 161, 161, 0 }, { taken, sent, lost }, "records taken, sent, lost")
    assert.equal(#table.concat(got), c.bytes)
    assert.equal(0, c.lost_messages)
  end)

  it("template_refresh = 0.05s in a slow run: templates again and again, domain 7 throughout", function()
    local fd, port = bound(SOCK_DGRAM)
    big_rcvbuf(fd)
    local xp = sluice.sink.ipfix { collector = "127.0.0.1:" .. port, domain = 7,
      template_refresh = "0.05s", flush_interval = "0.05s" }
    local emit, n = nil, 0
    local P = {
      init = function(_, ctx) emit = ctx.emit end,
      on_slice = function(batch)
        emit(batch)
        n = n + batch:count()
        C.usleep(40000) -- 16 one-second slices: 0.64 s, several ticks of the run loop
      end,
    }
    local eng = assert(sluice.open { read = SAMPLE, slice = 1 })
    local ok, report = eng:run(P, nil, { outputs = { xp } })
    assert(ok, report)
    local c = report.sinks[xp.name].counts
    local dgs = await_datagrams(fd, {}, c.messages, "messages the sink counts as sent")
    local d = decode(dgs)
    assert.equal(n, check_headers(d, 7, 1400), "records received vs slice records emitted")
    assert(n > 161, "slice records: " .. n)
    check_template_message(d.messages[1], 1)
    local with = 0
    for m, h in ipairs(d.messages) do
      if h.ntemplates > 0 then
        check_template_message(h, m)
        with = with + 1
      end
    end
    assert(with >= 3, "messages with templates: " .. with .. " of " .. #d.messages)
    local taken, sent, lost = counted(c)
    assert.same({ n, n, 0 }, { taken, sent, lost }, "records taken, sent, lost")
  end)
end)

describe("IPFIX to a collector that is not there", function()
  after_each(close_fds)
  teardown(run.cleanup)

  it("UDP to a closed port: the run succeeds; lost datagrams and their records are counted", function()
    local port = closed_port(SOCK_DGRAM)
    local xp = sluice.sink.ipfix { collector = "127.0.0.1:" .. port }
    local eng = assert(sluice.open { read = SAMPLE })
    local t0 = core.monotonic()
    local ok, report = eng:run(flows_policy(), nil, { outputs = { xp } })
    assert(ok, report)
    assert(core.monotonic() - t0 < 10, "the run took too long")
    local st = report.sinks[xp.name]
    local c = st.counts
    local taken, sent, lost = counted(c)
    -- written is what went out; what the network refused is a failed drop
    assert.equal(sent, st.written)
    assert.equal(lost, st.dropped_failed)
    assert.equal(0, st.dropped_lag + st.dropped_unqueueable + st.dropped_at_close)
    assert.equal(161, taken)
    assert.equal(taken, sent + lost, "every record taken is sent or counted as lost")
    -- loopback answers a closed port with ICMP port unreachable, which the
    -- next send on the connected socket reports: some datagrams are lost
    assert(c.lost_messages > 0 and lost > 0, "nothing lost: was the port really closed?")
    assert(lost >= c.lost_messages, "each lost message had records")
    -- at most 14 IPv4 records fit in a 1400-byte datagram
    assert(c.messages + c.lost_messages >= 10, "messages: " .. c.messages .. " + " .. c.lost_messages)
  end)

  it("UDP to a closed port from the CLI: exit 3, every JSON line written, every record lost", function()
    local port = closed_port(SOCK_DGRAM)
    local dir = run.tmpdir()
    local r = run.sh(run.SLUICE .. " run -r " .. q(SAMPLE) .. " --out ipfix:127.0.0.1:" .. port ..
      " --out json:" .. q(dir .. "/f.json") .. " -q -v")
    -- completed with losses
    assert.equal(3, r.code, run.describe(r))
    assert.equal(161, #run.json_lines(dir .. "/f.json"))
    local l = r.err:match("\nsink ipfix:udp:127%.0%.0%.1:" .. port .. ":[^\n]*")
    assert(l, "no sink line for the IPFIX output\n" .. run.describe(r))
    local c = {}
    for k, v in l:gmatch("([%a_]+)=(%d+)") do c[k] = tonumber(v) end
    local taken, sent, lost = counted(c)
    assert.equal(161, taken, l)
    assert.equal(taken, sent + lost, l)
    assert(lost > 0, l)
    -- the datagrams the network refused are in the sink's dropped count:
    -- every one of them (a refusal is reported at the next send, the
    -- last one at close)
    assert.equal(161, lost, l)
    assert(has(l, "written 0 dropped " .. lost .. " "), l)
    assert(has(r.err, "sluice: sink ipfix:udp:127.0.0.1:" .. port .. ": cannot send to 127.0.0.1:" ..
      port .. ": Connection refused\n"), run.describe(r))
  end)

  it("TCP to a listener that never accepts: the sample's records are counted as lost, the run is quick", function()
    -- backlog 0 with one connection already waiting: the accept queue is
    -- full, so the exporter's connect never completes
    local lfd, port = listener(0)
    local filler = C.socket(AF_INET, SOCK_STREAM, 0)
    open_fds[filler] = true
    local sa = loopback(port)
    assert.equal(0, C.connect(filler, sa, ffi.sizeof(sa)), "filler connect: " .. core.errno_text())
    local xp = sluice.sink.ipfix { collector = "127.0.0.1:" .. port, transport = "tcp" }
    local eng = assert(sluice.open { read = SAMPLE })
    local t0 = core.monotonic()
    local ok, report = eng:run(flows_policy(), nil, { outputs = { xp } })
    local took = core.monotonic() - t0
    assert(ok, report)
    assert(took < 10, "the run took " .. took .. " s: the stuck collector stalled it")
    local st = report.sinks[xp.name]
    local dropped = st.dropped_lag + st.dropped_failed + st.dropped_unqueueable + st.dropped_at_close
    assert.equal(161, st.written + dropped, "written + dropped = records emitted")
    local taken, sent, lost = counted(st.counts)
    assert.equal(st.written + lost, taken, "written: what went out")
    assert.equal(0, sent, "nothing can be sent")
    assert.equal(0, st.counts.messages)
    assert.equal(0, st.counts.bytes)
    assert.equal(taken, lost, "every record taken is counted as lost")
    assert(st.counts.lost_messages >= 1)
    close_fd(lfd)
  end)

  it("TCP to a listener that never accepts, a generated trace: every record dropped or counted lost, the run is quick", function()
    local trace = generated(GEN_ARGS)
    local lfd, port = listener(0)
    local filler = C.socket(AF_INET, SOCK_STREAM, 0)
    open_fds[filler] = true
    local sa = loopback(port)
    assert.equal(0, C.connect(filler, sa, ffi.sizeof(sa)), "filler connect: " .. core.errno_text())
    local dir = run.tmpdir()
    local xp = sluice.sink.ipfix { collector = "127.0.0.1:" .. port, transport = "tcp" }
    local js = assert(sluice.sink.json { path = dir .. "/flows.json" })
    local eng = assert(sluice.open { read = trace })
    local t0 = core.monotonic()
    local ok, report = eng:run(flows_policy(), nil, { outputs = { xp, js } })
    local took = core.monotonic() - t0
    assert(ok, report)
    assert(took < 10, "the run took " .. took .. " s: the stuck collector stalled it")
    local emitted = #run.json_lines(dir .. "/flows.json")
    assert(emitted > 2000, "flows: " .. emitted)
    local st = report.sinks[xp.name]
    local dropped = st.dropped_lag + st.dropped_failed + st.dropped_unqueueable + st.dropped_at_close
    assert.equal(emitted, st.written + dropped, "written + dropped = records emitted")
    local taken, sent, lost = counted(st.counts)
    assert.equal(st.written + lost, taken, "written: what went out")
    assert.equal(0, sent, "nothing can be sent")
    assert.equal(0, st.counts.messages, "nothing can be sent")
    -- the report accounts for every record: dropped by the route (lag) or
    -- lost by the sink
    assert.equal(emitted, dropped, "records dropped by the route + lost by the sink (failed)")
    local jst = report.sinks["json:" .. dir .. "/flows.json"]
    assert.equal(emitted, jst.written, "the JSON sink is not held up")
    close_fd(lfd)
  end)

  it("TCP to a listener that never accepts, slice batches (write_batch): every record dropped or counted lost, quickly", function()
    local trace = generated(GEN_ARGS)
    local lfd, port = listener(0)
    local filler = C.socket(AF_INET, SOCK_STREAM, 0)
    open_fds[filler] = true
    local sa = loopback(port)
    assert.equal(0, C.connect(filler, sa, ffi.sizeof(sa)), "filler connect: " .. core.errno_text())
    local xp = sluice.sink.ipfix { collector = "127.0.0.1:" .. port, transport = "tcp" }
    local eng = assert(sluice.open { read = trace, slice = 5 })
    local emit, emitted = nil, 0
    local t0 = core.monotonic()
    local ok, report = eng:run({
      init = function(_, ctx) emit = ctx.emit end,
      on_slice = function(batch)
        emitted = emitted + batch:count()
        emit(batch)
      end,
    }, nil, { outputs = { xp } })
    local took = core.monotonic() - t0
    assert(ok, report)
    assert(took < 10, "the run took " .. took .. " s: the stuck collector stalled it")
    assert(emitted > 2000, "slice records: " .. emitted)
    local st = report.sinks[xp.name]
    local dropped = st.dropped_lag + st.dropped_failed + st.dropped_unqueueable + st.dropped_at_close
    assert.equal(emitted, st.written + dropped, "written + dropped = records emitted")
    local taken, sent, lost = counted(st.counts)
    assert.equal(st.written + lost, taken, "written: what went out")
    assert.equal(0, sent, "nothing can be sent")
    assert.equal(0, st.counts.messages, "nothing can be sent")
    assert.equal(emitted, dropped, "records dropped by the route + lost by the sink (failed)")
    close_fd(lfd)
  end)

  it("TCP to a closed port: the run is quick and every record is counted as lost", function()
    local port = closed_port(SOCK_STREAM)
    local xp = sluice.sink.ipfix { collector = "127.0.0.1:" .. port, transport = "tcp" }
    local eng = assert(sluice.open { read = SAMPLE })
    local t0 = core.monotonic()
    local ok, report = eng:run(flows_policy(), nil, { outputs = { xp } })
    assert(ok, report)
    assert(core.monotonic() - t0 < 10)
    local st = report.sinks[xp.name]
    assert.equal(161, st.written + st.dropped_lag + st.dropped_failed + st.dropped_at_close)
    local taken, sent, lost = counted(st.counts)
    assert.equal(st.written + lost, taken, "written: what went out")
    assert.equal(0, sent)
    assert.equal(0, st.counts.messages)
    assert.equal(taken, lost, "every record taken is counted as lost")
  end)
end)

-- ---- sluice collect as the collector, stopped and started again -------------

local proc = require "support.proc"

-- The sockets on 127.0.0.1:port (/proc/net/{udp,tcp}): whether one
-- listens, and the bytes waiting in their receive queues.
local function port_state(kind, port)
  local f = io.open(kind == "tcp" and "/proc/net/tcp" or "/proc/net/udp")
  if not f then return false, 0 end
  local want = string.format("0100007F:%04X", port)
  local listens, queued = false, 0
  for l in f:lines() do
    local local_addr, state, rx = l:match("^%s*%d+: (%S+) %S+ (%x+) %x+:(%x+)")
    if local_addr == want then
      listens = listens or kind ~= "tcp" or state == "0A"
      queued = queued + tonumber(rx, 16)
    end
  end
  f:close()
  return listens, queued
end

local function listening(kind, port)
  return (port_state(kind, port))
end

-- `sluice collect` on kind:127.0.0.1:port (-v), once it listens.
local function collector(kind, port, args)
  local h = proc.spawn(string.format("%s collect --listen %s:127.0.0.1:%d -v -q --out json:/dev/null %s",
    run.SLUICE, kind, port, args or ""))
  wait_for("sluice collect to listen on " .. kind .. " port " .. port, 10, function()
    assert(not proc.exited(h), "sluice collect exited\n" .. run.describe(proc.result(h)))
    return listening(kind, port)
  end)
  h.kind, h.port = kind, port
  return h
end

-- Stops a collector (SIGTERM) once it has read what came; its exporter
-- line: records, templates, dropped records (every reason), and the line.
local function collector_stop(h)
  wait_for("the collector to read its sockets", 5, function()
    return select(2, port_state(h.kind, h.port)) == 0
  end)
  C.usleep(200000) -- and to decode what it read
  proc.signal(h, core.C.SL_SIGTERM)
  local r = proc.finish(h, 10)
  assert(r.code == 0, run.describe(r))
  local x = { records = 0, templates = 0, dropped = 0, line = r.err }
  for l in r.err:gmatch("[^\n]+") do
    local recs, tmpls, rest = l:match("^exporter 127%.0%.0%.1:%d+ messages %d+ records (%d+) templates (%d+)(.*)$")
    if recs then
      x.records, x.templates, x.line = x.records + tonumber(recs), x.templates + tonumber(tmpls), l
      for n in (rest:match("dropped %((.-)%)") or ""):gmatch("=(%d+)") do x.dropped = x.dropped + tonumber(n) end
    end
  end
  return x
end

-- Ticks the sink as the run loop does (every 0.1 s, real time) for secs.
local function ticking(xp, secs)
  local t = core.monotonic() + secs
  repeat
    xp:tick(core.monotonic())
    C.usleep(100000)
  until core.monotonic() >= t
end

describe("IPFIX to sluice collect stopped and started again", function()
  after_each(function()
    proc.kill_leftovers()
    close_fds()
  end)
  teardown(run.cleanup)

  it("UDP: after refused datagrams the templates go again, so a collector that starts later decodes every record sent", function()
    local port = closed_port(SOCK_DGRAM)
    local recs = flow_copies(SAMPLE)
    local xp = sluice.sink.ipfix { collector = "127.0.0.1:" .. port, flush_interval = "0.1s" }
    -- nothing listens: the first message, with the templates, is refused
    for i = 1, 60 do assert(xp:write(recs[i])) end
    ticking(xp, 0.5)
    assert(xp:counts().lost_records > 0, "nothing refused: was the port really closed?")
    local h = collector("udp", port)
    for i = 61, #recs do assert(xp:write(recs[i])) end
    ticking(xp, 0.5)
    xp:close()
    local taken, sent, lost = counted(xp:counts())
    local x = collector_stop(h)
    assert.equal(161, taken)
    assert.equal(taken, sent + lost)
    assert(sent > 0, "nothing sent once the collector was up")
    assert.equal(sent, x.records, "records counted sent vs decoded by the collector: " .. x.line)
    assert.equal(0, x.dropped, x.line)
  end)

  -- The sample's records through a TCP sink in three parts: [1, a] to
  -- collector A, then A stops; [a+1, b] while nothing listens (if down);
  -- then collector B starts and gets [b+1, 161]. Nothing may be lost.
  local function tcp_restart(a, b)
    local port = closed_port(SOCK_STREAM)
    local recs = flow_copies(SAMPLE)
    local ha = collector("tcp", port)
    local xp = sluice.sink.ipfix { collector = "127.0.0.1:" .. port, transport = "tcp", flush_interval = "0.1s" }
    for i = 1, a do assert(xp:write(recs[i])) end
    ticking(xp, 0.5)
    assert.equal(a, xp:counts().records, "sent to the first collector")
    local xa = collector_stop(ha)
    assert.equal(a, xa.records, xa.line)
    for i = a + 1, b do assert(xp:write(recs[i])) end
    ticking(xp, 0.5)
    local hb = collector("tcp", port)
    for i = b + 1, #recs do assert(xp:write(recs[i])) end
    ticking(xp, 1.5)
    xp:close()
    local c = xp:counts()
    local taken, sent, lost = counted(c)
    local xb = collector_stop(hb)
    assert.equal(161, taken)
    assert.same({ 161, 0 }, { sent, lost }, "records sent, lost")
    assert.equal(161 - a, xb.records, "the second collector: " .. xb.line)
    assert(xb.templates > 0, xb.line)
    assert.equal(0, xb.dropped, xb.line)
    assert.equal(0, c.lost_messages)
  end

  it("TCP: a collector that stopped and came back gets the next records, after the templates", function()
    tcp_restart(60, 60)
  end)

  it("TCP: records sent while the collector is down go to it once it is back", function()
    tcp_restart(60, 100)
  end)

  it("TCP: a collector that does not come back: every record after it stopped is counted lost", function()
    local port = closed_port(SOCK_STREAM)
    local recs = flow_copies(SAMPLE)
    local ha = collector("tcp", port)
    local xp = sluice.sink.ipfix { collector = "127.0.0.1:" .. port, transport = "tcp", flush_interval = "0.1s" }
    for i = 1, 60 do assert(xp:write(recs[i])) end
    ticking(xp, 0.5)
    local xa = collector_stop(ha)
    assert.equal(60, xa.records, xa.line)
    for i = 61, #recs do assert(xp:write(recs[i])) end
    ticking(xp, 0.5)
    local t0 = core.monotonic()
    xp:close()
    assert(core.monotonic() - t0 < 5, "close took too long")
    local taken, sent, lost = counted(xp:counts())
    assert.same({ 161, 60, 101 }, { taken, sent, lost }, "records taken, sent, lost")
  end)
end)

describe("IPFIX sink options", function()
  teardown(run.cleanup)

  -- The error raised by fn: message, and whether it points at this file
  -- (error level 2: the caller's misuse).
  local function raised(fn)
    local ok, err = pcall(fn)
    assert(not ok, "expected an error")
    err = tostring(err)
    assert(err:find("ipfix_spec%.lua:%d+:"), "the error should point at the caller: " .. err)
    return err
  end

  it("no collector", function()
    assert.matches("needs a collector", raised(function() local s = sluice.sink.ipfix {} return s end))
    assert.matches("needs a collector", raised(function() local s = sluice.sink.ipfix() return s end))
    assert.matches("needs a collector", raised(function() local s = sluice.sink.ipfix { collector = 4739 } return s end))
  end)

  it("an unknown transport", function()
    local err = raised(function() local s = sluice.sink.ipfix { collector = "127.0.0.1:4739", transport = "sctp" } return s end)
    assert.matches("transport is 'udp' or 'tcp'", err, 1, true)
  end)

  it("a host name (names are not resolved), a missing or bad port", function()
    local err = raised(function() local s = sluice.sink.ipfix { collector = "collector.example.net:4739" } return s end)
    assert(has(err, "collector.example.net") and has(err, "names are not resolved"), err)
    err = raised(function() local s = sluice.sink.ipfix { collector = "127.0.0.1" } return s end)
    assert(has(err, "HOST:PORT"), err)
    err = raised(function() local s = sluice.sink.ipfix { collector = "127.0.0.1:70000" } return s end)
    assert(has(err, "HOST:PORT"), err)
    err = raised(function() local s = sluice.sink.ipfix { collector = "[2001:db8::zz]:4739" } return s end)
    assert(has(err, "IPv6"), err)
  end)

  it("a template_refresh that is not a duration", function()
    local err = raised(function()
      local s = sluice.sink.ipfix { collector = "127.0.0.1:4739", template_refresh = "soon" }
      return s -- not a tail call: the error's level 2 is this function
    end)
    assert(has(err, "template_refresh"), err)
  end)

  it("max_bytes below one IPv6 record with the templates gives no sink", function()
    local ok, s = pcall(sluice.sink.ipfix, { collector = "127.0.0.1:4739", max_bytes = 100 })
    assert(not (ok and s), "a sink with max_bytes = 100")
  end)

  it("an IPv6 collector is accepted", function()
    local s = sluice.sink.ipfix { collector = "[::1]:4739", transport = "udp" }
    assert.equal("ipfix:udp:[::1]:4739", s.name)
    assert(s:close())
  end)

  it("the CLI: --out ipfix:nohost and ipfix:tcp:nohost are usage errors (exit 2)", function()
    for _, spec in ipairs { "ipfix:nohost", "ipfix:tcp:nohost", "ipfix:" } do
      local r = run.sh(run.SLUICE .. " run -r " .. q(SAMPLE) .. " --out " .. spec)
      assert.equal(2, r.code, run.describe(r))
      assert(has(r.err, "ipfix"), run.describe(r))
      if spec ~= "ipfix:" then
        assert(has(r.err, "HOST:PORT") and has(r.err, spec:sub(7)), run.describe(r))
      end
    end
  end)

  it("the CLI: a host name or a bad transport fails before any data, naming the problem", function()
    for spec, needle in pairs { ["ipfix:collector.example.net:4739"] = "names are not resolved",
      ["ipfix:sctp:127.0.0.1:4739"] = "sctp" } do
      local dir = run.tmpdir()
      local r = run.sh(run.SLUICE .. " run -r " .. q(SAMPLE) .. " --out " .. spec .. " --out json:" ..
        q(dir .. "/f.json"))
      assert(r.code ~= 0, run.describe(r))
      assert(has(r.err, needle), run.describe(r))
      assert(not has(r.err, "traceback"), run.describe(r))
      assert(not run.exists(dir .. "/f.json") or run.slurp(dir .. "/f.json") == "", "data was written")
    end
  end)
end)

-- ---- --features stats: the statistics templates -------------------------------

-- The statistics in a record of template 258/259 as JSON names: the
-- standard tcp*TotalCount per direction (the reverse under RFC 5103's
-- PEN), sluice's elements (SL_PEN, stream * 32 + k + 1) for the rest;
-- the bidirectional flag counts are not sent (the directions' sums).
local STAT_NAMES = { "min_ps", "mean_ps", "stddev_ps", "max_ps", "min_piat_ms", "mean_piat_ms",
  "stddev_piat_ms", "max_piat_ms", "fin_packets", "syn_packets", "rst_packets", "psh_packets",
  "ack_packets", "urg_packets", "ece_packets", "cwr_packets" }
local STD_FLAG = { syn_packets = 218, fin_packets = 219, rst_packets = 220, psh_packets = 221,
  ack_packets = 222, urg_packets = 223 }
local STREAMS = { "src2dst_", "dst2src_", "bidirectional_" }

local function stats_of(r)
  local out = {}
  for s, prefix in ipairs(STREAMS) do
    for k, name in ipairs(STAT_NAMES) do
      local v
      if s <= 2 and STD_FLAG[name] then
        v = r[STD_FLAG[name]]
        if s == 2 then v = r["r" .. STD_FLAG[name]] end
      elseif s == 3 and k > 8 then -- both: not sent, the directions' sum
        v = out["src2dst_" .. name] + out["dst2src_" .. name]
      else
        v = r[SL_PEN .. ":" .. ((s - 1) * 32 + k)]
      end
      out[prefix .. name] = v
    end
  end
  return out
end

local function close_to(a, b)
  return type(a) == "number" and math.abs(a - b) <= 1e-9 * math.max(math.abs(a), math.abs(b)) + 1e-12
end

-- Datagrams as a pcap file (Ethernet, IPv4, UDP to port 4739) for tshark.
local function le32(v) return string.char(v % 256, math.floor(v / 256) % 256,
  math.floor(v / 65536) % 256, math.floor(v / 16777216) % 256) end
local function be16(v) return string.char(math.floor(v / 256) % 256, v % 256) end
local function udp_pcap(path, dgs)
  local parts = { le32(0xa1b2c3d4) .. be16(0x0200):reverse() .. be16(0x0400):reverse() ..
    le32(0) .. le32(0) .. le32(65535) .. le32(1) }
  for i, dg in ipairs(dgs) do
    local udp = be16(40000) .. be16(4739) .. be16(8 + #dg) .. be16(0) .. dg
    local ip = "\69\0" .. be16(20 + #udp) .. be16(i % 65536) .. "\0\0\64\17\0\0" ..
      "\127\0\0\1\127\0\0\1" .. udp
    local frame = ("\2\0\0\0\0\1\2\0\0\0\0\2\8\0") .. ip
    parts[#parts + 1] = le32(1700000000 + i) .. le32(0) .. le32(#frame) .. le32(#frame) .. frame
  end
  run.spit(path, table.concat(parts))
end

-- A tshark command line reading the datagrams (written as a pcap in dir)
-- after checking that it finds nothing malformed or unknown in them; nil
-- (said on stderr) without tshark. prefs: more "-o" options.
local function tshark_on(dir, dgs, prefs)
  if not run.have("tshark") then
    io.stderr:write("ipfix_spec: no tshark: the tshark part is skipped\n")
    return nil
  end
  local pcap = dir .. "/export.pcap"
  udp_pcap(pcap, dgs)
  local TS = run.PLAIN .. "tshark -n " .. (prefs or "") .. " -r " .. q(pcap) .. " -d udp.port==4739,cflow "
  local bad = run.sh(TS .. "-Y " .. q("_ws.malformed || _ws.expert.severity >= 0x00800000 || " ..
    "cflow.unknown_field_type") .. " -T fields -e frame.number")
  assert.equal(0, bad.code, run.describe(bad))
  assert.equal("", bad.out, "tshark finds malformed or unknown parts:\n" .. bad.out)
  return TS
end

describe("IPFIX with --features stats", function()
  after_each(function() close_fds() stop_collectors() end)
  teardown(run.cleanup)

  it("nfcapd still takes the export: every flow and its counters, no bad packets", function()
    need_nfdump()
    local c, recs = export_to_nfcapd(SAMPLE, "--features stats")
    local flows = run.of_type(recs, "flow")
    assert.equal(161, #flows)
    assert.is_number(flows[1].bidirectional_mean_ps, "the JSON carries the statistics")
    check_collected(c, flows)
  end)

  it("templates 258/259 carry the JSON's statistics; tshark decodes them, nothing malformed", function()
    local fd, port = bound(SOCK_DGRAM)
    big_rcvbuf(fd)
    local dir = run.tmpdir()
    local r = run.sh(run.SLUICE .. " run -r " .. q(SAMPLE) .. " --features stats --out ipfix:127.0.0.1:" ..
      port .. " --out json:" .. q(dir .. "/out.json") .. " -q")
    assert.equal(0, r.code, run.describe(r))
    local flows = run.of_type(run.json_lines(dir .. "/out.json"), "flow")
    assert.equal(161, #flows)
    C.usleep(50000) -- the run has ended: its datagrams are all in the socket
    local dgs = datagrams(fd)
    local d = decode(dgs)
    assert.equal(#flows, check_headers(d, 0, 1400))
    -- the template set: the base templates unchanged, the statistics ones
    -- with 19 + 16 + 16 + 8 fields
    local h = d.messages[1]
    assert.equal(4, h.ntemplates, "the first message carries the four templates")
    assert.same({ [256] = 19, [257] = 19, [258] = 59, [259] = 59 }, h.templates)
    local by_id = {}
    for _, f in ipairs(flows) do by_id[f.id] = f end
    local seen, v6 = 0, 0
    for _, rec in ipairs(d.records) do
      assert(rec.template == 258 or rec.template == 259, "flows with statistics use 258/259")
      if rec.template == 259 then v6 = v6 + 1 end
      local f = assert(by_id[rec[148]], "flowId " .. tostring(rec[148]) .. " is not in the JSON")
      assert.equal(f.pkts_fwd, rec[2])
      for name, v in pairs(stats_of(rec)) do
        assert(close_to(v, f[name]), ("flow %d %s: ipfix %s, json %s"):format(f.id, name,
          tostring(v), tostring(f[name])))
      end
      seen = seen + 1
    end
    assert.equal(#flows, seen)
    assert.equal(37, v6, "IPv6 flows")

    -- tshark: no malformed message, and the standard counts as the JSON
    local TS = tshark_on(dir, dgs)
    if not TS then return end
    local t = run.sh(TS .. "-T fields -E occurrence=a -E aggregator=, -e cflow.flow_id " ..
      "-e cflow.total_tcp_syn -e cflow.total_tcp_ack -e cflow.total_tcp_fin")
    assert.equal(0, t.code, run.describe(t))
    local checked, syns = 0, 0
    for l in t.out:gmatch("[^\n]+") do
      local cols = {}
      for v in (l .. "\t"):gmatch("([^\t]*)\t") do cols[#cols + 1] = v end
      local ids, lists = {}, { {}, {}, {} }
      for v in cols[1]:gmatch("%d+") do ids[#ids + 1] = tonumber(v) end
      for k = 1, 3 do
        for v in (cols[k + 1] or ""):gmatch("%d+") do lists[k][#lists[k] + 1] = tonumber(v) end
      end
      for i, id in ipairs(ids) do
        local f = assert(by_id[id], "tshark: flow " .. id)
        -- per record: the forward count, then the reverse one
        for k, name in ipairs({ "syn_packets", "ack_packets", "fin_packets" }) do
          assert.same({ f["src2dst_" .. name], f["dst2src_" .. name] },
            { lists[k][2 * i - 1], lists[k][2 * i] }, "tshark: flow " .. id .. " " .. name)
        end
        syns = syns + f.bidirectional_syn_packets
        checked = checked + 1
      end
    end
    assert.equal(#flows, checked, "tshark's records")
    assert(syns > 0, "the sample has SYNs")
  end)

  it("a max_bytes too small for the statistics templates is refused, without them it is not", function()
    local fd, port = bound(SOCK_DGRAM)
    local x, err = sluice.sink.ipfix { collector = "127.0.0.1:" .. port, features = "stats", max_bytes = 600 }
    assert.is_nil(x)
    assert(has(err, "too small"), err)
    x = assert(sluice.sink.ipfix { collector = "127.0.0.1:" .. port, max_bytes = 600 })
    x:close()
    assert.has_error(function()
      sluice.sink.ipfix { collector = "127.0.0.1:" .. port, features = "nope" }
    end)
    close_fd(fd)
  end)
end)

-- ---- --features splt and --dpi: the early packets and the label ---------------

-- The splt arrays of a record of template 258/259 as the JSON's (-1 where
-- the flow had fewer packets); they must agree with splt_packets (97).
local function splt_of(r, n)
  local used = r[SL_PEN .. ":97"]
  local dir, ps, piat = r[SL_PEN .. ":98"], r[SL_PEN .. ":99"], r[SL_PEN .. ":100"]
  assert.equal(n, #dir)
  assert.equal(2 * n, #ps)
  assert.equal(8 * n, #piat)
  local out = { splt_direction = {}, splt_ps = {}, splt_piat_ms = {} }
  for i = 1, n do
    local d, size, ns = dir:byte(i), u16(ps, 2 * i - 1), uint(piat, 8 * i - 7, 8)
    if i > used then
      assert.same({ 255, 0, 0 }, { d, size, ns }, "padding past the flow's packets")
      d, size, ns = -1, -1, -1e6
    end
    out.splt_direction[i], out.splt_ps[i], out.splt_piat_ms[i] = d, size, ns / 1e6
  end
  return out
end

local LABEL = { application_name = 96, application_category_name = 372,
  requested_server_name = SL_PEN .. ":101" }

describe("IPFIX with --features splt and --dpi", function()
  after_each(function() close_fds() stop_collectors() end)
  teardown(run.cleanup)

  local function need_dpi()
    if not require("sluice.engine").dpi_available() then
      local why = "sluice was built without nDPI: --dpi is not exported"
      io.stderr:write("ipfix_spec: ", why, "\n")
      pending(why)
      return false
    end
    return true
  end

  it("templates 258/259 carry the JSON's statistics, splt arrays and labels; tshark reads them", function()
    if not need_dpi() then return end
    local fd, port = bound(SOCK_DGRAM)
    big_rcvbuf(fd)
    local dir = run.tmpdir()
    local r = run.sh(run.SLUICE .. " run -r " .. q(SAMPLE) .. " --dpi --features stats,splt:5 " ..
      "--out ipfix:127.0.0.1:" .. port .. " --out json:" .. q(dir .. "/out.json") .. " -q")
    assert.equal(0, r.code, run.describe(r))
    local flows = run.of_type(run.json_lines(dir .. "/out.json"), "flow")
    assert.equal(161, #flows)
    C.usleep(50000) -- the run has ended: its datagrams are all in the socket
    local dgs = datagrams(fd)
    local d = decode(dgs)
    assert.equal(#flows, check_headers(d, 0, 1400))
    -- base 19, statistics 40, splt 4, label 3
    assert.same({ [256] = 19, [257] = 19, [258] = 66, [259] = 66 }, d.messages[1].templates)
    local by_id = {}
    for _, f in ipairs(flows) do by_id[f.id] = f end
    local seen, named, servers = 0, 0, 0
    for _, rec in ipairs(d.records) do
      assert(rec.template == 258 or rec.template == 259, "flows with features use 258/259")
      local f = assert(by_id[rec[148]], "flowId " .. tostring(rec[148]) .. " is not in the JSON")
      for name, v in pairs(stats_of(rec)) do
        assert(close_to(v, f[name]), ("flow %d %s: ipfix %s, json %s"):format(f.id, name,
          tostring(v), tostring(f[name])))
      end
      local sp = splt_of(rec, 5)
      assert.same(f.splt_direction, sp.splt_direction, "flow " .. f.id .. " splt_direction")
      assert.same(f.splt_ps, sp.splt_ps, "flow " .. f.id .. " splt_ps")
      for i, ms in ipairs(f.splt_piat_ms) do
        assert(ms == sp.splt_piat_ms[i] or close_to(sp.splt_piat_ms[i], ms),
          ("flow %d splt_piat_ms[%d]: ipfix %s, json %s"):format(f.id, i, sp.splt_piat_ms[i], ms))
      end
      for name, key in pairs(LABEL) do
        assert.equal(f[name], rec[key], "flow " .. f.id .. " " .. name)
      end
      if f.application_name ~= "" then named = named + 1 end
      if f.requested_server_name ~= "" then servers = servers + 1 end
      seen = seen + 1
    end
    assert.equal(#flows, seen)
    assert(named > 100 and servers > 10, "the sample's flows are named: " .. named .. ", " .. servers)

    -- tshark: 64 fields need more than its default 60; applicationName
    -- shown for every flow as in the JSON
    local TS = tshark_on(dir, dgs, "-o cflow.max_template_fields:200")
    if not TS then return end
    local t = run.sh(TS .. "-T fields -E occurrence=a -E aggregator=, -e cflow.flow_id -e cflow.appl_name " ..
      "-e cflow.application_category_name")
    assert.equal(0, t.code, run.describe(t))
    local checked = 0
    for l in t.out:gmatch("[^\n]+") do
      local ids, cols = {}, {}
      for v in (l .. "\t"):gmatch("([^\t]*)\t") do cols[#cols + 1] = v end
      for v in cols[1]:gmatch("%d+") do ids[#ids + 1] = tonumber(v) end
      local names, cats = {}, {}
      -- (the sample's names have no commas)
      for v in ((cols[2] or "") .. ","):gmatch("([^,]*),") do names[#names + 1] = v end
      for v in ((cols[3] or "") .. ","):gmatch("([^,]*),") do cats[#cats + 1] = v end
      for i, id in ipairs(ids) do
        local f = assert(by_id[id], "tshark: flow " .. id)
        assert.equal(f.application_name, names[i], "tshark: flow " .. id .. " applicationName")
        assert.equal(f.application_category_name, cats[i], "tshark: flow " .. id .. " category")
        checked = checked + 1
      end
    end
    assert.equal(#flows, checked, "tshark's records")
  end)

  it("nfcapd still takes the export (--features stats,splt --dpi): every flow and its counters", function()
    need_nfdump()
    if not need_dpi() then return end
    local c, recs = export_to_nfcapd(SAMPLE, "--features stats,splt --dpi")
    local flows = run.of_type(recs, "flow")
    assert.equal(161, #flows)
    assert.equal(10, #flows[1].splt_ps, "the JSON carries the default splt length")
    assert.is_string(flows[1].application_name, "the JSON carries the label")
    check_collected(c, flows)
  end)

  it("the sink takes splt:N and dpi, and refuses a bad list naming them", function()
    local fd, port = bound(SOCK_DGRAM)
    local x = assert(sluice.sink.ipfix { collector = "127.0.0.1:" .. port, features = "splt:32" })
    x:close()
    local ok, err = pcall(sluice.sink.ipfix, { collector = "127.0.0.1:" .. port, features = "splt:33" })
    assert(not ok and has(err, "splt[:N], dpi") and has(err, "1 to 32"), tostring(err))
    -- splt of 32 and the longest labels: more than 600 bytes with IPv6
    if require("sluice.engine").dpi_available() then
      local y, e = sluice.sink.ipfix { collector = "127.0.0.1:" .. port, features = "splt:32,dpi",
        max_bytes = 600 }
      assert.is_nil(y)
      assert(has(e, "too small"), e)
    end
    close_fd(fd)
  end)
end)
