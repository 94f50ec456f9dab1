-- sluice collect (core/src/collector_*.c, core/src/source_collector.c, the
-- CLI's collect command) end to end, with real exporters and hostile input:
--
--   1. softflowd 1.1.0 reads a generated trace (IPv4 and IPv6, TCP, UDP,
--      ICMP, 802.1Q) and exports NetFlow v9, IPFIX, bidirectional IPFIX
--      (RFC 5103) and IPFIX over TCP to `sluice collect`; every flow must
--      equal the one `sluice run -r` finds in the same trace: count,
--      packets and bytes, per direction;
--   2. collected flows carry the tags exporter and domain;
--   3. sluice's own IPFIX export (UDP and TCP) collected by sluice: a
--      lossless round trip;
--   4. the per-exporter counters printed with -v (messages, records,
--      templates, seq_lost) are exact;
--   5. 100k malformed and mutated NetFlow v5/v9/IPFIX messages: the
--      collector survives, accounts for every datagram (decoded, dropped
--      whole by reason, or a socket drop), and still takes valid messages
--      afterwards;
--   6. sequence gaps (IPFIX, NetFlow v5, NetFlow v9) are counted exactly;
--      data that comes before its template is held, then decoded;
--   7. --workers 2: every exporter is handled by one worker, every flow
--      arrives once;
--   and IPFIX over TCP: a message split over many writes is reassembled, a
--   stream with a broken header is dropped and counted.
--
-- Bytes: NetFlow/IPFIX count IP-layer bytes (softflowd: the captured
-- length minus the link-layer header, so Ethernet padding counts too),
-- while sluice counts frame bytes on the wire. softflowd's flows are
-- therefore compared with the direct flow's bytes minus the link-layer
-- header of each packet: 14 bytes of Ethernet plus 4 per 802.1Q tag (from
-- the flow's vlan and vlan_inner). sluice's own export carries its frame
-- bytes, so the round trip compares bytes as they are.
--
-- ICMP: softflowd keys ICMP by type/code (an echo request and its reply
-- are two uniflows, several echo identifiers one), sluice by the echo
-- identifier; sluice's own export sends type/code too. ICMP flows are
-- therefore compared per address pair (the packets and bytes each address
-- sent), every other flow one to one.
--
-- Direction: the collector makes the side whose record starts first the
-- initiator; with millisecond times both directions of a short exchange
-- often start in the same millisecond, so softflowd's flows are matched
-- whatever their orientation (how many agree with capture is printed).
--
-- Times: softflowd reading a file stamps times relative to a boot time from
-- the wall clock (v9 uptimes then wrap), unless -a makes the trace's first
-- packet the boot time: -a is used, and collected times must be within
-- 2 ms (IPFIX) or 1 s (v9, whose header has whole seconds) of capture's.
--
-- softflowd comes from the Debian package (.ci/deps.sh installs it);
-- without it the softflowd tests are pending with that reason. The trace
-- needs bench/genpcap.c (shared); without it those tests are pending too.
local ffi = require "ffi"
local bit = require "bit"
local run = require "support.run"
local core = require "sluice.core"
local sock = require "sluice.sock"

local C, S = ffi.C, core.C
local q = run.q
local SLUICE = run.SLUICE

-- libc calls core.lua does not declare; another spec may have declared
-- the same ones already, hence one pcall each.
for _, decl in ipairs {
  "int bind(int fd, const void *addr, unsigned len);",
  "int getsockname(int fd, void *addr, unsigned *len);",
  "long recv(int fd, void *buf, size_t n, int flags);",
  "int setsockopt(int fd, int level, int name, const void *val, unsigned len);",
  "int usleep(unsigned int usec);",
} do
  pcall(ffi.cdef, decl)
end

local AF_INET = 2
local SOCK_STREAM, SOCK_DGRAM = 1, 2
local SOL_SOCKET, SO_RCVBUF, SO_RCVBUFFORCE = 1, 8, 33
local MSG_DONTWAIT = 64
local EINTR, EAGAIN = 4, 11

-- ~1350 flows in 0.07 s of traffic: IPv4 and IPv6, TCP, UDP, ICMP echo,
-- 10% of them 802.1Q-tagged; no flow is silent for long (checked below),
-- so neither softflowd nor sluice splits a flow by a timeout.
local GEN_ARGS = "-n 20000 -c 300 -s 5"
-- softflowd never expires a flow by time (the whole trace is exported at
-- its end, reason "flushed")
local SF_TIMEOUTS = "-t tcp=86400 -t udp=86400 -t icmp=86400 -t general=86400 -t maxlife=86400"
local T0_S = 1700000000
local T0 = 1700000000000000000ULL -- ns

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

local function monotonic()
  return core.monotonic()
end

local function sleep(secs)
  C.usleep(math.floor(secs * 1e6))
end

-- ---- bytes -----------------------------------------------------------------

local function be16(v)
  return string.char(bit.band(bit.rshift(v, 8), 255), bit.band(v, 255))
end

local function be32(v)
  v = v % 4294967296
  return string.char(math.floor(v / 16777216) % 256, math.floor(v / 65536) % 256,
    math.floor(v / 256) % 256, v % 256)
end

local function u16(s, i)
  local a, b = s:byte(i, i + 1)
  return a * 256 + b
end

local function u32(s, i)
  return u16(s, i) * 65536 + u16(s, i + 2)
end

local function ip4(text)
  local a, b, c, d = text:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  return string.char(tonumber(a), tonumber(b), tonumber(c), tonumber(d))
end

-- ---- sockets ---------------------------------------------------------------

local function swap16(p)
  return bit.bor(bit.rshift(p, 8), bit.lshift(bit.band(p, 0xff), 8))
end

local function sockaddr(ip, port)
  local sa = ffi.new("struct sl_sockaddr_in")
  sa.family = AF_INET
  sa.port = swap16(port or 0)
  assert(C.inet_pton(AF_INET, ip, sa.addr) == 1, "bad address " .. ip)
  return sa
end

-- A port free on 127.0.0.1 for that socket type (bound, then closed).
local function free_port(kind)
  local fd = C.socket(AF_INET, kind or SOCK_DGRAM, 0)
  assert(fd >= 0, "socket: " .. core.errno_text())
  local sa = sockaddr("127.0.0.1", 0)
  assert(C.bind(fd, sa, ffi.sizeof(sa)) == 0, "bind: " .. core.errno_text())
  local len = ffi.new("unsigned[1]", ffi.sizeof(sa))
  assert(C.getsockname(fd, sa, len) == 0)
  C.close(fd)
  return swap16(sa.port)
end

-- A UDP socket bound to src_ip (any port), connected to 127.0.0.1:port:
-- an exporter with an address of its own (127.0.0.0/8 is all loopback).
local Sender = {}
Sender.__index = Sender

local function sender_from(src_ip, port)
  local fd = C.socket(AF_INET, SOCK_DGRAM, 0)
  assert(fd >= 0, "socket: " .. core.errno_text())
  local sa = sockaddr(src_ip, 0)
  assert(C.bind(fd, sa, ffi.sizeof(sa)) == 0, "bind " .. src_ip .. ": " .. core.errno_text())
  local da = sockaddr("127.0.0.1", port)
  assert(C.connect(fd, da, ffi.sizeof(da)) == 0, "connect: " .. core.errno_text())
  local len = ffi.new("unsigned[1]", ffi.sizeof(sa))
  assert(C.getsockname(fd, sa, len) == 0)
  return setmetatable({ fd = fd, ip = src_ip, port = swap16(sa.port) }, Sender)
end

function Sender:send(msg)
  local n = C.send(self.fd, msg, #msg, 0)
  assert(n == #msg, "send: " .. core.errno_text())
end

function Sender:close()
  if self.fd >= 0 then C.close(self.fd) end
  self.fd = -1
end

-- The sockets bound to 127.0.0.1:port in /proc/net/{udp,tcp}, or to
-- [::]:port in /proc/net/udp6 (tcp: the listening ones): count, bytes waiting in their receive queues, drops.
local function proc_sockets(kind, port)
  local f = io.open("/proc/net/" .. kind)
  if not f then return 0, 0, 0 end
  local want = string.format(kind == "udp6" and string.rep("0", 32) .. ":%04X" or "0100007F:%04X", port)
  local n, queued, drops = 0, 0, 0
  for line in f:lines() do
    local fields = {}
    for w in line:gmatch("%S+") do fields[#fields + 1] = w end
    if fields[2] == want and (kind ~= "tcp" or fields[4] == "0A") then
      n = n + 1
      queued = queued + tonumber(fields[5]:match(":(%x+)$"), 16)
      if kind ~= "tcp" then drops = drops + tonumber(fields[#fields]) end
    end
  end
  f:close()
  return n, queued, drops
end

-- ---- background processes ---------------------------------------------------

local proc = require "support.proc"
local spawn, exited, result, finish = proc.spawn, proc.exited, proc.result, proc.finish
local kill_leftovers = proc.kill_leftovers

-- Starts `sluice collect ARGS --out json:OUT`; returns once the collector
-- listens on port (n sockets: one per worker).
local function collect(args, kind, port, n)
  local h = spawn(SLUICE .. " collect " .. args .. " -q --out json:" .. q(run.tmpdir() .. "/collected.json"))
  h.json = h.cmd:match("json:'([^']+)'$")
  local deadline = monotonic() + 10
  while proc_sockets(kind, port) < (n or 1) do
    if exited(h) then error("sluice collect exited before listening\n" .. run.describe(result(h))) end
    assert(monotonic() < deadline, "sluice collect does not listen on " .. kind .. " port " .. port)
    sleep(0.01)
  end
  return h
end

-- Waits for a collector to end by itself (--idle-exit) with exit 0;
-- returns the run and its flows.
local function collected(h, secs)
  local r = finish(h, secs or 30)
  assert(r.code == 0, "sluice collect failed\n" .. run.describe(r))
  local flows = run.exists(h.json) and run.of_type(run.json_lines(h.json), "flow") or {}
  return r, flows
end

-- "exporter ADDR:PORT messages N records N templates N seq_lost N
-- seq_resets N held N dropped 0|dropped (reason=n ...)" lines (scripts/sluice
-- exporter_lines) as tables.
local function exporter_lines(err)
  local list = {}
  for line in err:gmatch("[^\n]+") do
    local addr, port, rest = line:match("^exporter (%S+):(%d+) (.*)$")
    if addr then
      local x = { address = addr, port = tonumber(port), line = line, dropped = {}, dropped_total = 0 }
      for k, v in rest:gmatch("([%a_]+) (%d+)") do
        if k ~= "dropped" then x[k] = tonumber(v) end
      end
      local reasons = rest:match("dropped %((.-)%)")
      if reasons then
        for k, v in reasons:gmatch("([%w_]+)=(%d+)") do
          x.dropped[k] = tonumber(v)
          x.dropped_total = x.dropped_total + tonumber(v)
        end
      end
      list[#list + 1] = x
    end
  end
  return list
end

local function exporter_at(err, addr, port)
  local found
  for _, x in ipairs(exporter_lines(err)) do
    if x.address == addr and (not port or x.port == port) then
      assert(not found, "two exporter lines for " .. addr .. ":" .. tostring(port) .. "\n" .. err)
      found = x
    end
  end
  assert(found, "no exporter line for " .. addr .. ":" .. tostring(port) .. " in:\n" .. err)
  for _, k in ipairs { "messages", "records", "templates", "seq_lost", "seq_resets", "held" } do
    assert(type(found[k]) == "number", "exporter line without " .. k .. ": " .. found.line)
  end
  return found
end

-- "messages N records N socket drops N" (the collector's totals, -v).
local function totals_line(err)
  local m, r, d = err:match("messages (%d+) records (%d+) socket drops (%d+)")
  assert(m, "no 'messages N records N socket drops N' line in:\n" .. err)
  return tonumber(m), tonumber(r), tonumber(d)
end

-- ---- traces and tools ---------------------------------------------------------

local function generated(args)
  return run.generated(args, "collect_spec", pending)
end

local function need_softflowd()
  if not run.have("softflowd") then
    local why = "softflowd is not installed (apt-get install softflowd): the real-exporter " ..
      "tests are not run"
    io.stderr:write("collect_spec: ", why, "\n")
    pending(why)
    return false
  end
  return true
end

-- softflowd reading path and exporting to 127.0.0.1:port; returns the run
-- and its report ("Flows exported: F (R records) in P packets"). It sends
-- everything when the file ends, then exits.
-- -a: record times from the trace; -6: IPv6 tracked; flags has -T vlan
-- (flows keyed by VLAN too) or -T full. No -c: with -r softflowd has no
-- control socket (a -c after -r gives it one that its file loop polls with
-- stale revents, and it hangs in accept()). -p: the pid file it unlinks at
-- exit, so not the system's.
local function softflowd(path, port, flags)
  local pidfile = run.tmpdir() .. "/softflowd.pid"
  local r = run.sh(run.PLAIN .. "softflowd -d -p " .. q(pidfile) .. " -r " .. q(path) ..
    " -n 127.0.0.1:" .. port .. " " .. flags .. " -a -6 " .. SF_TIMEOUTS)
  assert(r.code == 0, "softflowd failed\n" .. run.describe(r))
  local f, rec, pk, fail = r.out:match("Flows exported: (%d+) %((%d+) records%) in (%d+) packets %((%d+) failures%)")
  assert(f, "softflowd printed no export report\n" .. run.describe(r))
  assert(tonumber(fail) == 0, "softflowd failed to send\n" .. run.describe(r))
  return r, { flows = tonumber(f), records = tonumber(rec), packets = tonumber(pk) }
end

local direct_cache = {}

-- The flows `sluice run -r path` finds (the reference).
local function direct_flows(path)
  if direct_cache[path] then return direct_cache[path] end
  local r, recs = run.sluice_json("-r " .. q(path))
  assert(r.code == 0, run.describe(r))
  local flows = run.of_type(recs, "flow")
  assert(#flows > 1000, "the reference run found only " .. #flows .. " flows\n" .. run.describe(r))
  direct_cache[path] = flows
  return flows
end

-- ---- comparing flows ------------------------------------------------------------

local function is_icmp(f)
  return f.proto == "icmp" or f.proto == "icmp6" or f.proto == 1 or f.proto == 58
end

local function ep(addr, port)
  return addr .. "#" .. tostring(port)
end

-- Orientation-free key: protocol, VLANs (unless no_vlan) and both endpoints.
local function ckey(f, no_vlan)
  local a, b = ep(f.src, f.sport), ep(f.dst, f.dport)
  if a > b then a, b = b, a end
  if no_vlan then return table.concat({ tostring(f.proto), a, b }, " ") end
  return table.concat({ tostring(f.proto), f.vlan or 0, f.vlan_inner or 0, a, b }, " ")
end

-- ICMP: protocol, VLANs (unless no_vlan) and both addresses (no ports).
local function pair_key(f, no_vlan)
  local a, b = f.src, f.dst
  if a > b then a, b = b, a end
  if no_vlan then return table.concat({ tostring(f.proto), a, b }, " ") end
  return table.concat({ tostring(f.proto), f.vlan or 0, f.vlan_inner or 0, a, b }, " ")
end

-- Link-layer bytes of each of the flow's packets: Ethernet, 802.1Q tags.
local function l2_len(f)
  return 14 + ((f.vlan or 0) ~= 0 and 4 or 0) + ((f.vlan_inner or 0) ~= 0 and 4 or 0)
end

local function flow_text(f)
  return string.format("%s %s:%s -> %s:%s vlan %s pkts %s/%s bytes %s/%s", tostring(f.proto),
    f.src, tostring(f.sport), f.dst, tostring(f.dport), tostring(f.vlan), tostring(f.pkts_fwd),
    tostring(f.pkts_rev), tostring(f.bytes_fwd), tostring(f.bytes_rev))
end

-- Per address (of a direction): packets and bytes it sent.
local function add_sent(t, key, addr, pkts, bytes)
  local k = key .. " from " .. addr
  local v = t[k] or { 0, 0 }
  v[1], v[2] = v[1] + pkts, v[2] + bytes
  t[k] = v
end

-- Compares collected flows with the direct ones. TCP and UDP flows are
-- matched one to one by ckey, and each endpoint's packets and bytes must
-- agree; ICMP flows are compared per address pair (sums per sending
-- address): exporters key ICMP by type/code, sluice echo flows by the echo
-- identifier. opts.ip_bytes: the collected bytes are IP bytes (the direct
-- ones minus the link-layer header per packet); opts.no_vlan: the exporter
-- did not track VLANs (flows are matched without them: the trace's
-- 5-tuples are unique anyway); opts.times = { lo, hi }: collected
-- first/last minus the direct ones must lie within, in seconds. Returns a
-- summary.
local function compare(direct, got, opts, what)
  local ip_bytes, nv = opts.ip_bytes, opts.no_vlan
  local by, dup = {}, {}
  local icmp_direct, icmp_got = {}, {}
  local n_icmp_direct, n_icmp_got = 0, 0
  for _, c in ipairs(got) do
    if is_icmp(c) then
      n_icmp_got = n_icmp_got + 1
      add_sent(icmp_got, pair_key(c, nv), c.src, c.pkts_fwd, c.bytes_fwd)
      add_sent(icmp_got, pair_key(c, nv), c.dst, c.pkts_rev, c.bytes_rev)
    else
      local k = ckey(c, nv)
      if by[k] then dup[#dup + 1] = flow_text(c) end
      by[k] = c
    end
  end
  local problems, matched, same_orientation = {}, 0, 0
  local function problem(s)
    if #problems < 8 then problems[#problems + 1] = s end
  end
  for _, d in ipairs(direct) do
    local l2 = ip_bytes and l2_len(d) or 0
    if is_icmp(d) then
      n_icmp_direct = n_icmp_direct + 1
      add_sent(icmp_direct, pair_key(d, nv), d.src, d.pkts_fwd, d.bytes_fwd - l2 * d.pkts_fwd)
      add_sent(icmp_direct, pair_key(d, nv), d.dst, d.pkts_rev, d.bytes_rev - l2 * d.pkts_rev)
    else
      local k = ckey(d, nv)
      local c = by[k]
      if not c then
        problem("missing: " .. flow_text(d))
      else
        by[k] = nil
        matched = matched + 1
        local fwd = ep(c.src, c.sport) == ep(d.src, d.sport)
        if fwd then same_orientation = same_orientation + 1 end
        local pf, bf, pr, br = c.pkts_fwd, c.bytes_fwd, c.pkts_rev, c.bytes_rev
        if not fwd then pf, bf, pr, br = pr, br, pf, bf end
        local tol = opts.times
        if tol then
          local df, dl = c.first - d.first, c.last - d.last
          if df < tol[1] - 1e-6 or df > tol[2] + 1e-6 or dl < tol[1] - 1e-6 or dl > tol[2] + 1e-6 then
            problem(string.format("times of %s: direct %.6f..%.6f, collected %.6f..%.6f (allowed: %+g..%+g s)",
              flow_text(d), d.first, d.last, c.first, c.last, tol[1], tol[2]))
          end
        end
        if pf ~= d.pkts_fwd or pr ~= d.pkts_rev or bf ~= d.bytes_fwd - l2 * d.pkts_fwd or
           br ~= d.bytes_rev - l2 * d.pkts_rev then
          problem("counters differ: direct " .. flow_text(d) .. (ip_bytes and
            string.format(" (IP bytes %d/%d)", d.bytes_fwd - l2 * d.pkts_fwd,
              d.bytes_rev - l2 * d.pkts_rev) or "") .. "\n      collected " .. flow_text(c))
        end
      end
    end
  end
  for _, c in pairs(by) do problem("not in the trace: " .. flow_text(c)) end
  for _, s in ipairs(dup) do problem("collected twice: " .. s) end
  for k, v in pairs(icmp_direct) do
    local g = icmp_got[k] or { 0, 0 }
    if g[1] ~= v[1] or g[2] ~= v[2] then
      problem(string.format("ICMP %s: direct %d pkts %d bytes, collected %d pkts %d bytes", k, v[1], v[2], g[1], g[2]))
    end
    icmp_got[k] = nil
  end
  for k, g in pairs(icmp_got) do
    if g[1] > 0 then problem(string.format("ICMP %s: %d pkts collected, none in the trace", k, g[1])) end
  end
  assert(#problems == 0, string.format("%s: %d direct flows (%d ICMP), %d collected (%d ICMP):\n  %s",
    what, #direct, n_icmp_direct, #got, n_icmp_got, table.concat(problems, "\n  ")))
  return { matched = matched, icmp_direct = n_icmp_direct, icmp_got = n_icmp_got,
    same_orientation = same_orientation }
end

-- ---- exports made here ---------------------------------------------------------

-- A flow record for sluice's IPFIX encoder: UDP 10.NET.(i>>8).(i&255):(1000+i)
-- -> 192.0.2.1:53, fwd i%7+1 packets, rev i%5 packets.
local function flow_rec(net, i)
  local f = ffi.new("struct sl_flow_rec")
  f.fid = i
  f.key.ip_version = 4
  f.key.proto = 17
  f.key.src[0], f.key.src[1], f.key.src[2], f.key.src[3] = 10, net, bit.rshift(i, 8), bit.band(i, 255)
  f.key.dst[0], f.key.dst[1], f.key.dst[2], f.key.dst[3] = 192, 0, 2, 1
  f.key.sport, f.key.dport = 1000 + i, 53
  f.fwd.pkts, f.fwd.bytes = i % 7 + 1, (i % 7 + 1) * 100
  f.rev.pkts, f.rev.bytes = i % 5, (i % 5) * 80
  f.fwd.first_ns = T0 + i * 1000000
  f.fwd.last_ns = T0 + i * 1000000 + 500000000
  if i % 5 > 0 then
    f.rev.first_ns = T0 + i * 1000000 + 1000000
    f.rev.last_ns = T0 + i * 1000000 + 400000000
  end
  f.reason_code = S.SL_END_EOF
  return f
end

-- What the collector should write for flow_rec(net, i).
local function expected_flow(net, i)
  return { proto = "udp", src = string.format("10.%d.%d.%d", net, bit.rshift(i, 8), bit.band(i, 255)),
    sport = 1000 + i, dst = "192.0.2.1", dport = 53, vlan = 0, pkts_fwd = i % 7 + 1,
    bytes_fwd = (i % 7 + 1) * 100, pkts_rev = i % 5, bytes_rev = (i % 5) * 80 }
end

-- An IPFIX exporter of sluice's encoder (observation domain `domain`):
-- :message(net, first, last) is one message with flow_rec(net, i) for i in
-- first..last (the templates go in the first message).
local function ipfix_encoder(domain, max_bytes)
  local xp = ffi.new("struct sl_ipfix *[1]")
  local opts = ffi.new("struct sl_ipfix_opts")
  opts.domain, opts.max_bytes = domain, max_bytes or 65535
  assert(S.sl_ipfix_new(xp, opts) == 0, "sl_ipfix_new failed")
  local x = ffi.gc(xp[0], S.sl_ipfix_free)
  local dp = ffi.new("const uint8_t *[1]")
  return {
    message = function(_, net, first, last)
      for i = first, last do
        local rc = S.sl_ipfix_add_flow(x, flow_rec(net, i))
        assert(rc == 0, "sl_ipfix_add_flow: " .. rc .. " (message too small?)")
      end
      local n = S.sl_ipfix_take(x, T0_S, dp)
      assert(n > 0, "sl_ipfix_take returned " .. n)
      return ffi.string(dp[0], n)
    end,
  }
end

-- NetFlow v5: header (24 bytes) and 48-byte records of UDP flows
-- 10.NET.(i>>8).(i&255):(2000+i) -> 198.51.100.7:123 (i % 9 + 1 packets).
local V5_UPTIME = 3600000 -- ms since boot at export
local function v5_record(net, i)
  return ip4(string.format("10.%d.%d.%d", net, bit.rshift(i, 8), bit.band(i, 255))) ..
    ip4("198.51.100.7") .. ip4("0.0.0.0") .. be16(1) .. be16(2) ..
    be32(i % 9 + 1) .. be32((i % 9 + 1) * 76) ..
    be32(V5_UPTIME - 2000 + i) .. be32(V5_UPTIME - 1000 + i) ..
    be16(2000 + i) .. be16(123) .. "\0" .. "\0" .. "\17" .. "\0" ..
    be16(0) .. be16(0) .. "\0\0" .. "\0\0"
end

local function v5_expected(net, i)
  return { proto = "udp", src = string.format("10.%d.%d.%d", net, bit.rshift(i, 8), bit.band(i, 255)),
    sport = 2000 + i, dst = "198.51.100.7", dport = 123, vlan = 0, pkts_fwd = i % 9 + 1,
    bytes_fwd = (i % 9 + 1) * 76, pkts_rev = 0, bytes_rev = 0 }
end

-- flow_sequence: records sent before this message; engine type and id.
local function v5_message(net, first, last, flow_seq, engine_type, engine_id)
  local recs = {}
  for i = first, last do recs[#recs + 1] = v5_record(net, i) end
  return be16(5) .. be16(#recs) .. be32(V5_UPTIME) .. be32(T0_S) .. be32(0) .. be32(flow_seq) ..
    string.char(engine_type or 0, engine_id or 0) .. be16(0) .. table.concat(recs)
end

-- NetFlow v9 (RFC 3954): template 260 of UDP/TCP flows; seq counts export
-- packets. Records: 10.NET.(i>>8).(i&255):(3000+i) -> 203.0.113.5:80 TCP.
local V9_TEMPLATE_ID = 260
local V9_FIELDS = { { 8, 4 }, { 12, 4 }, { 7, 2 }, { 11, 2 }, { 4, 1 }, { 2, 4 }, { 1, 4 }, { 22, 4 }, { 21, 4 } }

local function v9_template(id, fields)
  local parts = { be16(id or V9_TEMPLATE_ID), be16(#(fields or V9_FIELDS)) }
  for _, f in ipairs(fields or V9_FIELDS) do parts[#parts + 1] = be16(f[1]) .. be16(f[2]) end
  local body = table.concat(parts)
  return be16(0) .. be16(4 + #body) .. body, 1
end

local function v9_record(net, i)
  return ip4(string.format("10.%d.%d.%d", net, bit.rshift(i, 8), bit.band(i, 255))) ..
    ip4("203.0.113.5") .. be16(3000 + i) .. be16(80) .. "\6" .. be32(i % 4 + 2) ..
    be32((i % 4 + 2) * 60) .. be32(V5_UPTIME - 3000) .. be32(V5_UPTIME - 100)
end

local function v9_expected(net, i)
  return { proto = "tcp", src = string.format("10.%d.%d.%d", net, bit.rshift(i, 8), bit.band(i, 255)),
    sport = 3000 + i, dst = "203.0.113.5", dport = 80, vlan = 0, pkts_fwd = i % 4 + 2,
    bytes_fwd = (i % 4 + 2) * 60, pkts_rev = 0, bytes_rev = 0 }
end

local function v9_data(net, first, last)
  local recs = {}
  for i = first, last do recs[#recs + 1] = v9_record(net, i) end
  local body = table.concat(recs)
  local pad = (4 - (4 + #body) % 4) % 4
  return be16(V9_TEMPLATE_ID) .. be16(4 + #body + pad) .. body .. string.rep("\0", pad), #recs
end

-- sets: list of { bytes, records }; count is every record (templates too).
local function v9_message(seq, source_id, sets)
  local body, count = {}, 0
  for _, s in ipairs(sets) do
    body[#body + 1] = s[1]
    count = count + s[2]
  end
  return be16(9) .. be16(count) .. be32(V5_UPTIME) .. be32(T0_S) .. be32(seq) .. be32(source_id) ..
    table.concat(body)
end

-- Finds the collected flow of each expected one (by ordered 5-tuple);
-- asserts its counters and returns the collected flow list by key.
local function okey(f)
  return table.concat({ f.proto, f.src, f.sport, f.dst, f.dport, f.vlan or 0 }, " ")
end

local function assert_flows(expected, flows, what)
  local by = {}
  for _, f in ipairs(flows) do
    local k = okey(f)
    assert(not by[k], what .. ": flow collected twice: " .. flow_text(f))
    by[k] = f
  end
  for _, e in ipairs(expected) do
    local f = by[okey(e)]
    assert(f, what .. ": not collected: " .. flow_text(e))
    for _, k in ipairs { "pkts_fwd", "bytes_fwd", "pkts_rev", "bytes_rev" } do
      assert(f[k] == e[k], what .. ": " .. k .. " " .. tostring(f[k]) .. ", expected " .. e[k] ..
        "\n  expected  " .. flow_text(e) .. "\n  collected " .. flow_text(f))
    end
  end
  return by
end

-- ---- counting what an exporter sent (a capture of its datagrams) -------------

local rbuf = ffi.new("uint8_t[65536]")

-- A UDP socket on 127.0.0.1 that keeps what comes: fd, port.
local function capture_socket()
  local fd = C.socket(AF_INET, SOCK_DGRAM, 0)
  assert(fd >= 0)
  local v = ffi.new("int[1]", 16 * 1024 * 1024)
  if C.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, v, 4) ~= 0 then
    C.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, v, 4)
  end
  local sa = sockaddr("127.0.0.1", 0)
  assert(C.bind(fd, sa, ffi.sizeof(sa)) == 0)
  local len = ffi.new("unsigned[1]", ffi.sizeof(sa))
  assert(C.getsockname(fd, sa, len) == 0)
  return fd, swap16(sa.port)
end

local function drain(fd)
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

-- Counts a v9 or IPFIX export: messages, template records (options
-- templates included), flow data records, options data records, and the
-- IPFIX (seq, data records) of each message.
local function count_export(dgrams)
  local tmpl = {}
  local c = { messages = #dgrams, templates = 0, records = 0, option_records = 0, seqs = {} }
  for _, m in ipairs(dgrams) do
    local ver = u16(m, 1)
    local pos = ver == 9 and 21 or 17
    local in_msg = 0
    while pos + 3 <= #m do
      local id, len = u16(m, pos), u16(m, pos + 2)
      assert(len >= 4, "a set of length " .. len)
      local stop, p = pos + len, pos + 4
      if (ver == 9 and id == 0) or (ver == 10 and id == 2) then
        while p + 3 < stop do
          local tid, n = u16(m, p), u16(m, p + 2)
          p = p + 4
          local rl = 0
          for _ = 1, n do
            local fid, fl = u16(m, p), u16(m, p + 2)
            p = p + 4
            if ver == 10 and fid >= 0x8000 then p = p + 4 end
            rl = rl + fl
          end
          tmpl[tid] = { len = rl }
          c.templates = c.templates + 1
        end
      elseif (ver == 9 and id == 1) or (ver == 10 and id == 3) then
        while p + 9 < stop do
          local tid, a, b = u16(m, p), u16(m, p + 2), u16(m, p + 4)
          p = p + 6
          local n = ver == 9 and (a + b) / 4 or a
          local rl = 0
          for _ = 1, n do
            local fid, fl = u16(m, p), u16(m, p + 2)
            p = p + 4
            if ver == 10 and fid >= 0x8000 then p = p + 4 end
            rl = rl + fl
          end
          tmpl[tid] = { len = rl, options = true }
          c.templates = c.templates + 1
        end
      elseif id >= 256 then
        local t = assert(tmpl[id], "data before its template " .. id)
        local n = math.floor((stop - p) / t.len)
        if t.options then
          c.option_records = c.option_records + n
        else
          c.records = c.records + n
          in_msg = in_msg + n
        end
      end
      pos = stop
    end
    if ver == 10 then c.seqs[#c.seqs + 1] = { u32(m, 9), in_msg } end
  end
  return c
end

-- Sends datagrams through a sluice.sock socket, waiting out a full buffer.
local function send_all(s, list)
  for _, m in ipairs(list) do
    while true do
      local n, err, retry = s:send(m, #m)
      if n then break end
      assert(retry, "send: " .. tostring(err))
      sleep(0.001)
    end
  end
end

-- A TCP connection to the collector on port, once made: the socket and
-- its local port (the exporter's port in the collector's lines).
local function tcp_connected(port)
  local s = assert(sock.connect("tcp:127.0.0.1:" .. port))
  local deadline = monotonic() + 5
  while not s:connected() do
    assert(monotonic() < deadline, "no TCP connection to the collector")
    sleep(0.005)
  end
  local sa = ffi.new("struct sl_sockaddr_in")
  local len = ffi.new("unsigned[1]", ffi.sizeof(sa))
  assert(C.getsockname(s.fd, sa, len) == 0)
  return s, swap16(sa.port)
end

-- ---- the specs ---------------------------------------------------------------

describe("sluice collect", function()
  after_each(kill_leftovers)
  teardown(function()
    kill_leftovers()
    run.cleanup()
  end)

  describe("from softflowd, compared with sluice run on the same trace", function()
    -- softflowd exports every flow when its file ends (it never expires
    -- flows by time while reading a file): one burst of datagrams.
    local function check_trace(truth)
      -- no flow pauses within the trace: neither side splits a flow by a
      -- timeout, so nothing is excluded for that reason
      assert.equal(0, truth.resumed_after_pause, "a flow resumes after a pause")
      for gap, n in pairs(truth.intra_flow_gaps_ge_s) do
        assert.equal(0, n, "flows with gaps >= " .. gap .. " s")
      end
      assert(truth.flows_vlan > 0 and truth.flows_ipv6 > 0, "the trace lacks VLAN or IPv6 flows")
    end

    local function softflowd_run(flags, transport)
      if not need_softflowd() then return end
      local path, truth = generated(GEN_ARGS)
      check_trace(truth)
      local direct = direct_flows(path)
      local kind = transport == "tcp" and "tcp" or "udp"
      local port = free_port(kind == "tcp" and SOCK_STREAM or SOCK_DGRAM)
      local started = monotonic()
      local h = collect("--listen " .. kind .. ":127.0.0.1:" .. port .. " --idle-exit 2 -v", kind, port)
      local _, report = softflowd(path, port, flags .. (transport == "tcp" and " -P tcp" or ""))
      local r, flows = collected(h)
      local secs = monotonic() - started
      -- times: softflowd keeps milliseconds since its "boot" (-a: the
      -- first packet, itself truncated to the ms), so a time may come out up
      -- to 2 ms early; NetFlow v9 headers carry whole seconds of export
      -- time, so v9 times are early by up to a second more
      local times = has(flags, "-v 9") and { -1.002, 0 } or { -0.002, 0 }
      local c = compare(direct, flows, { ip_bytes = true, no_vlan = not has(flags, "-T vlan"),
        times = times }, "softflowd " .. flags .. " " .. kind)
      -- the excluded (compared by address pair, not flow by flow) are the
      -- ICMP flows only, a small share
      assert(c.icmp_direct > 0 and c.icmp_direct < #direct / 10, "ICMP flows: " .. c.icmp_direct)
      assert.equal(#direct - c.icmp_direct, c.matched)
      -- the same packets and IP bytes in all
      local dp, db = run.flow_totals(direct)
      local cp, cb = run.flow_totals(flows)
      local l2 = 0
      for _, d in ipairs(direct) do l2 = l2 + l2_len(d) * (d.pkts_fwd + d.pkts_rev) end
      assert.equal(dp, cp)
      assert.equal(db - l2, cb)
      assert.equal(truth.packets, cp)
      -- every message and record softflowd sent was taken
      local x = exporter_at(r.err, "127.0.0.1")
      assert.equal(report.packets, x.messages, x.line)
      assert.equal(report.records, x.records, x.line)
      assert(x.templates > 0, x.line)
      assert.equal(0, x.dropped_total, x.line)
      assert.equal(0, x.held, x.line)
      -- nothing lost: v9 numbers export packets 1, 2, 3...; softflowd's
      -- IPFIX numbers count the message's own records too (RFC 7011: the
      -- records before it), which the collector recognizes
      assert.equal(0, x.seq_lost, x.line)
      assert.equal(0, x.seq_resets, x.line)
      local m, recs, drops = totals_line(r.err)
      assert.equal(report.packets, m)
      assert.equal(report.records, recs)
      assert.equal(0, drops)
      -- tags: softflowd's source id / observation domain is 0
      for _, f in ipairs(flows) do
        assert(f.tags and f.tags.exporter == "127.0.0.1" and f.tags.domain == 0,
          "tags of " .. flow_text(f) .. ": " .. require("cjson").encode(f.tags or {}))
      end
      io.stderr:write(string.format("collect_spec: softflowd %s %s: %d records in %d messages -> " ..
        "%d flows (%d matched one to one, %d of them oriented as in capture; ICMP %d direct, " ..
        "%d collected), %.1f s\n", flags, kind, report.records, report.packets, #flows, c.matched,
        c.same_orientation, c.icmp_direct, c.icmp_got, secs))
      return c, x
    end

    it("NetFlow v9 over UDP, VLANs tracked", function()
      softflowd_run("-v 9 -T vlan")
    end)

    it("IPFIX over UDP, VLANs tracked", function()
      softflowd_run("-v 10 -T vlan")
    end)

    -- softflowd 1.1.0 -b with -T vlan keys the reverse direction of a tagged
    -- flow on VLAN 0 (its VLAN goes to postVlanId) and so exports a tagged
    -- connection as two biflows; -T full does not track VLANs at all, and
    -- the flows are compared without them.
    it("bidirectional IPFIX (RFC 5103 reverse elements, -b) over UDP, VLANs not tracked", function()
      softflowd_run("-v 10 -b -T full")
    end)

    it("IPFIX over TCP (-P tcp, --listen tcp:), VLANs tracked", function()
      softflowd_run("-v 10 -T vlan", "tcp")
    end)
  end)

  describe("sluice's own IPFIX export collected by sluice", function()
    local function round_trip(transport)
      local path = generated(GEN_ARGS)
      local direct = direct_flows(path)
      local kind = transport
      local port = free_port(kind == "tcp" and SOCK_STREAM or SOCK_DGRAM)
      local h = collect("--listen " .. kind .. ":127.0.0.1:" .. port .. " --idle-exit 1 -v", kind, port)
      local out = kind == "tcp" and ("ipfix:tcp:127.0.0.1:" .. port) or ("ipfix:127.0.0.1:" .. port)
      local e = run.sh(SLUICE .. " run -r " .. q(path) .. " -q -v --out " .. out)
      assert(e.code == 0, run.describe(e))
      local sent_msgs = tonumber(e.err:match("[ (]messages=(%d+)"))
      local sent_recs = tonumber(e.err:match(" records=(%d+)"))
      assert(sent_msgs and sent_recs, "no sink counters\n" .. run.describe(e))
      assert.equal(#direct, sent_recs)
      local r, flows = collected(h)
      -- flow by flow, as exported: direction, packets and bytes each way,
      -- times (milliseconds), TCP flags
      local by = {}
      for _, f in ipairs(flows) do
        if not is_icmp(f) then
          local k = okey(f)
          assert(not by[k], "collected twice: " .. flow_text(f))
          by[k] = f
        end
      end
      local n = 0
      -- milliseconds of a JSON time (seconds with microseconds)
      local function ms(t) return math.floor(math.floor(t * 1e6 + 0.5) / 1000) end
      for _, d in ipairs(direct) do
        if not is_icmp(d) then
          n = n + 1
          local f = by[okey(d)]
          assert(f, "not collected: " .. flow_text(d))
          by[okey(d)] = nil
          for _, k in ipairs { "pkts_fwd", "pkts_rev", "bytes_fwd", "bytes_rev", "tcp_flags_fwd", "tcp_flags_rev" } do
            assert(f[k] == d[k], k .. ": direct " .. flow_text(d) .. " " .. tostring(d[k]) ..
              ", collected " .. tostring(f[k]))
          end
          assert(ms(f.first) == ms(d.first) and ms(f.last) == ms(d.last), string.format(
            "times of %s: direct %.6f..%.6f, collected %.6f..%.6f", flow_text(d), d.first, d.last,
            f.first, f.last))
        end
      end
      assert(next(by) == nil, "collected, not in the trace: " .. (next(by) or ""))
      -- ICMP: the export carries type/code, not the echo identifier
      local c = compare(direct, flows, {}, "round trip " .. kind)
      assert.equal(n, c.matched)
      assert.equal(#direct - n, c.icmp_direct)
      local x = exporter_at(r.err, "127.0.0.1")
      assert.equal(sent_msgs, x.messages, x.line)
      assert.equal(#direct, x.records, x.line)
      assert.equal(2, x.templates, x.line) -- IPv4 and IPv6, sent once
      assert.equal(0, x.seq_lost, x.line)
      assert.equal(0, x.seq_resets, x.line)
      assert.equal(0, x.dropped_total, x.line)
      for _, f in ipairs(flows) do
        assert(f.tags and f.tags.exporter == "127.0.0.1" and f.tags.domain == 0, flow_text(f))
      end
    end

    it("over UDP: every flow, packets and bytes both ways", function()
      round_trip("udp")
    end)

    it("over TCP: every flow, packets and bytes both ways", function()
      round_trip("tcp")
    end)
  end)

  describe("per-exporter counters (-v)", function()
    it("a capture of softflowd's NetFlow v9 replayed: messages, records, templates exact, no gap", function()
      if not need_softflowd() then return end
      local path = generated(GEN_ARGS)
      local fd, cport = capture_socket()
      local _, report = softflowd(path, cport, "-v 9 -T vlan")
      sleep(0.05)
      local dgrams = drain(fd)
      C.close(fd)
      assert.equal(report.packets, #dgrams)
      local c = count_export(dgrams)
      assert.equal(report.records, c.records)
      assert(c.templates >= 5 and c.option_records > 0, "softflowd sent " .. c.templates ..
        " templates and " .. c.option_records .. " options records")
      local port = free_port()
      local h = collect("--listen udp:127.0.0.1:" .. port .. " --idle-exit 1 -v", "udp", port)
      local s = assert(sock.connect("udp:127.0.0.1:" .. port))
      send_all(s, dgrams)
      s:close()
      local r, flows = collected(h)
      local x = exporter_at(r.err, "127.0.0.1")
      assert.equal(#dgrams, x.messages, x.line)
      assert.equal(c.records, x.records, x.line) -- flow records; options data is not a flow
      assert.equal(c.templates, x.templates, x.line)
      assert.equal(0, x.seq_lost, x.line) -- v9: export packets 1, 2, 3...
      assert.equal(0, x.seq_resets, x.line)
      assert.equal(0, x.held, x.line)
      assert.equal(0, x.dropped_total, x.line)
      assert(x.line:match(" dropped 0$"), x.line)
      assert(#flows > 1000, #flows .. " flows")
      io.stderr:write(string.format("collect_spec: softflowd v9 replay: %d messages, %d flow records, " ..
        "%d templates, %d options records -> %s\n", #dgrams, c.records, c.templates, c.option_records, x.line))
    end)
  end)

  describe("malformed input", function()
    -- Deterministic mutations of valid messages (math.randomseed): every
    -- kind listed in KINDS; the short and bad-version ones are made so
    -- that no other check can claim them, and their counts are exact.
    local rnd = math.random

    local function rand_bytes(n)
      local t = {}
      for i = 1, n do t[i] = string.char(rnd(0, 255)) end
      return table.concat(t)
    end

    local function set_at(s, pos, bytes)
      return s:sub(1, pos - 1) .. bytes .. s:sub(pos + #bytes)
    end

    -- byte flips past the version field
    local function flip(s)
      for _ = 1, rnd(1, 8) do
        if #s < 3 then break end
        s = set_at(s, rnd(3, #s), string.char(rnd(0, 255)))
      end
      return s
    end

    local function ipfix_header(len, seq, domain)
      return be16(10) .. be16(len) .. be32(T0_S) .. be32(seq) .. be32(domain)
    end

    local function ipfix_message(sets, domain)
      local body = table.concat(sets)
      return ipfix_header(16 + #body, rnd(0, 1000), domain or rnd(0, 3)) .. body
    end

    local function ipfix_set(id, body)
      return be16(id) .. be16(4 + #body) .. body
    end

    -- an IPFIX template record: fields { id, len [, pen] }
    local function ipfix_template(id, fields, count)
      local parts = { be16(id), be16(count or #fields) }
      for _, f in ipairs(fields) do
        if f[3] then
          parts[#parts + 1] = be16(bit.bor(f[1], 0x8000)) .. be16(f[2]) .. be32(f[3])
        else
          parts[#parts + 1] = be16(f[1]) .. be16(f[2])
        end
      end
      return table.concat(parts)
    end

    local function random_fields(n, maxlen)
      local fields = {}
      for i = 1, n do fields[i] = { rnd(1, 240), rnd(0, maxlen) } end
      return fields
    end

    local v5_pool, ipfix_pool = {}, {}
    local function bases()
      if #v5_pool > 0 then return end
      for k = 1, 40 do
        v5_pool[k] = v5_message(5, k * 40, k * 40 + (k % 30), k * 40, 1, k % 4)
      end
      local enc = ipfix_encoder(4242)
      for k = 1, 40 do ipfix_pool[k] = enc:message(6, k * 50, k * 50 + (k % 25)) end
    end

    local function valid_v9()
      local net, first = 7, rnd(0, 2000)
      local sets = { { v9_template(V9_TEMPLATE_ID) }, { v9_data(net, first, first + rnd(0, 20)) } }
      return v9_message(rnd(1, 1e6), rnd(0, 3), sets)
    end

    local HDR = { [5] = 24, [9] = 20, [10] = 16 }

    -- kind -> function returning a message; "short" and "version" are
    -- counted exactly (see above).
    local KINDS = {
      short = function()
        local v = ({ 5, 9, 10 })[rnd(1, 3)]
        return be16(v) .. rand_bytes(rnd(0, HDR[v] - 3))
      end,
      version = function()
        local v
        repeat v = rnd(0, 65535) until v ~= 5 and v ~= 9 and v ~= 10
        return be16(v) .. rand_bytes(rnd(22, 300))
      end,
      truncated = function()
        local m = ({ v5_pool[rnd(1, #v5_pool)], ipfix_pool[rnd(1, #ipfix_pool)], valid_v9() })[rnd(1, 3)]
        return m:sub(1, rnd(HDR[u16(m, 1)], #m - 1))
      end,
      flipped = function()
        return flip(({ v5_pool[rnd(1, #v5_pool)], ipfix_pool[rnd(1, #ipfix_pool)], valid_v9() })[rnd(1, 3)])
      end,
      length_field = function()
        local k = rnd(1, 3)
        if k == 1 then return set_at(v5_pool[rnd(1, #v5_pool)], 3, be16(rnd(0, 65535))) end
        if k == 2 then return set_at(valid_v9(), 3, be16(rnd(0, 65535))) end
        local m = ipfix_pool[rnd(1, #ipfix_pool)]
        local len
        repeat len = rnd(0, 65535) until len ~= #m
        return set_at(m, 3, be16(len))
      end,
      template_loop = function()
        -- the same template ids redefined in every message, then data for them
        local id = 300 + rnd(0, 3)
        local fields = random_fields(rnd(1, 20), 16)
        local data = rand_bytes(rnd(0, 200))
        if rnd(2) == 1 then
          return ipfix_message({ ipfix_set(2, ipfix_template(id, fields)), ipfix_set(id, data) }, 1)
        end
        local t = ipfix_template(id, fields)
        return v9_message(rnd(1, 1e6), 1, { { be16(0) .. be16(4 + #t) .. t, 1 },
          { be16(id) .. be16(4 + #data) .. data, 1 } })
      end,
      zero_length = function()
        -- fields of length 0 (a record of length 0), or no field at all
        local id = 310 + rnd(0, 1)
        local fields = {}
        for i = 1, rnd(0, 6) do fields[i] = { rnd(1, 200), 0 } end
        local sets = { ipfix_set(2, ipfix_template(id, fields)), ipfix_set(id, rand_bytes(rnd(0, 40))) }
        if rnd(2) == 1 then return ipfix_message(sets, 2) end
        local t = ipfix_template(id, fields)
        local d = rand_bytes(rnd(0, 40))
        return v9_message(rnd(1, 1e6), 2, { { be16(0) .. be16(4 + #t) .. t, 1 },
          { be16(id) .. be16(4 + #d) .. d, 1 } })
      end,
      set_length = function()
        -- a set (flowset) whose length is 0..3, with more after it
        local bad = be16(({ 2, 3, 256, 300 })[rnd(1, 4)]) .. be16(rnd(0, 3)) .. rand_bytes(rnd(0, 40))
        if rnd(2) == 1 then
          local body = bad
          return ipfix_header(16 + #body, 0, 3) .. body
        end
        return be16(9) .. be16(rnd(1, 5)) .. be32(1) .. be32(T0_S) .. be32(rnd(1, 1e6)) .. be32(3) ..
          (be16(({ 0, 1, 256 })[rnd(1, 3)]) .. be16(rnd(0, 3)) .. rand_bytes(rnd(0, 40)))
      end,
      huge_count = function()
        -- a template declaring up to 65535 fields, few present; an options
        -- template whose scope runs past the set
        local k = rnd(1, 3)
        local fields = random_fields(rnd(0, 4), 8)
        if k == 1 then
          return ipfix_message({ ipfix_set(2, ipfix_template(320, fields, rnd(1000, 65535))) }, 4)
        elseif k == 2 then
          local body = be16(321) .. be16(rnd(100, 65535)) .. be16(rnd(1, 65535)) .. rand_bytes(rnd(0, 24))
          return ipfix_message({ ipfix_set(3, body) }, 4)
        end
        local body = be16(322) .. be16(rnd(0, 65535)) .. be16(rnd(0, 65535)) .. rand_bytes(rnd(0, 24))
        return v9_message(rnd(1, 1e6), 4, { { be16(1) .. be16(4 + #body) .. body, 1 } })
      end,
      varlen = function()
        -- interfaceName (82) of variable length: a length running past the
        -- record's set, in the 1-byte and the 3-byte form
        local fields = { { 8, 4 }, { 12, 4 }, { 4, 1 }, { 82, 65535 }, { 2, 4 } }
        local rec
        if rnd(2) == 1 then
          rec = ip4("10.8.0.1") .. ip4("10.8.0.2") .. "\17" .. string.char(rnd(20, 254)) .. rand_bytes(rnd(0, 10))
        else
          rec = ip4("10.8.0.1") .. ip4("10.8.0.2") .. "\17" .. "\255" .. be16(rnd(100, 65535)) .. rand_bytes(rnd(0, 10))
        end
        return ipfix_message({ ipfix_set(2, ipfix_template(330, fields)), ipfix_set(330, rec) }, 5)
      end,
      enterprise = function()
        -- an enterprise field whose number is cut off by the set's end
        local t = be16(340) .. be16(2) .. be16(8) .. be16(4) .. be16(0x8001) .. be16(4) .. be16(0)
        return ipfix_message({ ipfix_set(2, t), ipfix_set(340, rand_bytes(rnd(0, 16))) }, 6)
      end,
      withdrawal = function()
        -- a template withdrawn (no fields), then data for it
        return ipfix_message({ ipfix_set(2, ipfix_template(256 + rnd(0, 1), {})),
          ipfix_set(256 + rnd(0, 1), rand_bytes(rnd(0, 100))) }, 4242)
      end,
      no_template = function()
        return ipfix_message({ ipfix_set(rnd(400, 65535), rand_bytes(rnd(4, 100))) }, rnd(0, 1e6))
      end,
      random = function()
        return be16(({ 5, 9, 10 })[rnd(1, 3)]) .. rand_bytes(rnd(HDR[5], 1400))
      end,
      valid = function()
        local k = rnd(1, 3)
        if k == 1 then return v5_pool[rnd(1, #v5_pool)] end
        if k == 2 then return ipfix_pool[rnd(1, #ipfix_pool)] end
        return valid_v9()
      end,
    }
    local NAMES = {}
    for name in pairs(KINDS) do NAMES[#NAMES + 1] = name end
    table.sort(NAMES)

    it("100k mutated v5/v9/IPFIX messages: the collector survives, counts them, takes a valid one after", function()
      local N = 100000
      math.randomseed(20231114)
      bases()
      local port = free_port()
      local h = collect("--listen udp:127.0.0.1:" .. port .. " --idle-exit 1 -v", "udp", port)
      local s = assert(sock.connect("udp:127.0.0.1:" .. port))
      -- the domains of the valid messages at the end are known from the
      -- start: an exporter has at most 1024 domains (collector_state.c
      -- MAX_DOMAINS), and the mutated headers bring many new ones
      send_all(s, { v5_pool[3], ipfix_pool[1] })
      local sent, by_kind, hlen_short = 2, { valid = 2 }, 0
      local started = monotonic()
      local waits = 0
      for n = 1, N do
        local kind = NAMES[rnd(1, #NAMES)]
        local m = KINDS[kind]()
        by_kind[kind] = (by_kind[kind] or 0) + 1
        -- an IPFIX header length below the header's own: dropped whole
        -- as "length" (other length errors leave a message decoded in part)
        if #m >= 16 and u16(m, 1) == 10 and u16(m, 3) < 16 then hlen_short = hlen_short + 1 end
        send_all(s, { m })
        sent = sent + 1
        -- pace: keep the collector's socket queue under 2 MB
        if n % 256 == 0 then
          while select(2, proc_sockets("udp", port)) > 2 * 1024 * 1024 do
            waits = waits + 1
            sleep(0.001)
          end
          if n % 8192 == 0 then
            assert(not exited(h), "the collector exited after " .. n .. " messages\n" .. run.describe(result(h)))
          end
        end
      end
      local send_secs = monotonic() - started
      -- the collector still runs; then one valid v5 and one valid IPFIX
      -- message (fresh templates) in domains never seen before: invented
      -- domains of the fuzz must not lock new ones out
      sleep(0.2)
      assert(not exited(h), "the collector exited during the fuzz\n" .. run.describe(result(h)))
      local _, _, sock_drops = proc_sockets("udp", port)
      local final_v5 = v5_message(250, 1, 2, 0, 7, 9)
      local final_ipfix = ipfix_encoder(777777):message(251, 1, 3)
      send_all(s, { final_v5, final_ipfix })
      sent = sent + 2
      s:close()
      -- data sets of templates the fuzz invented are losses: exit 3
      local r = finish(h, 60)
      assert(r.code == 3 and has(r.err, "dropped undecoded (") , run.describe(r))
      local flows = run.of_type(run.json_lines(h.json), "flow")
      local total_secs = monotonic() - started
      local want = { v5_expected(250, 1), v5_expected(250, 2), expected_flow(251, 1),
        expected_flow(251, 2), expected_flow(251, 3) }
      local by = {}
      for _, f in ipairs(flows) do by[okey(f)] = f end
      for k, e in ipairs(want) do
        local f = by[okey(e)]
        assert(f, "the valid message's record is not in the output: " .. flow_text(e) .. "\n" .. r.err)
        for _, c in ipairs { "pkts_fwd", "bytes_fwd", "pkts_rev", "bytes_rev" } do
          assert.equal(e[c], f[c], c .. " of " .. flow_text(e))
        end
        assert.equal("127.0.0.1", f.tags and f.tags.exporter)
        assert.equal(k <= 2 and 7 * 256 + 9 or 777777, f.tags.domain)
      end
      -- every datagram was received or counted as a socket drop
      local received, _, drops = totals_line(r.err)
      assert.equal(sent, received + drops, "sent " .. sent .. ", received " .. received ..
        ", socket drops " .. drops .. "\n" .. r.err)
      assert(drops >= sock_drops, "the kernel dropped " .. sock_drops .. ", the collector counted " .. drops)
      local x = exporter_at(r.err, "127.0.0.1")
      assert(x.dropped_total > 0, x.line)
      assert(x.messages <= received, x.line)
      -- every message received was decoded (in part or whole) or dropped
      -- whole: too short, unknown version, empty, a domain refused, or an
      -- IPFIX header length below 16
      local d = x.dropped
      local whole = (d.short or 0) + (d.version or 0) + (d.empty or 0) + (d.exporters or 0) + hlen_short
      assert(x.messages >= by_kind.valid, x.line)
      assert.equal(received, x.messages + whole, "messages decoded + dropped whole (" .. hlen_short ..
        " with an IPFIX header length < 16) vs received\n" .. x.line)
      if drops == 0 then
        assert.equal(by_kind.short, x.dropped.short, "short messages\n" .. x.line)
        assert.equal(by_kind.version, x.dropped.version, "bad versions\n" .. x.line)
      end
      for _, reason in ipairs { "length", "set", "template", "record", "no_template" } do
        assert((x.dropped[reason] or 0) > 0, "no message or set dropped as '" .. reason .. "': " .. x.line)
      end
      local kinds = {}
      for _, k in ipairs(NAMES) do kinds[#kinds + 1] = k .. "=" .. by_kind[k] end
      io.stderr:write(string.format("collect_spec: fuzz: %d messages (%s) sent in %.1f s (%d waits), " ..
        "run %.1f s, %d flows; %s; socket drops %d\n", sent, table.concat(kinds, " "), send_secs,
        waits, total_secs, #flows, x.line, drops))
    end)
  end)

  describe("IPFIX over TCP", function()
    it("a message split into 1-byte writes is reassembled; a stream with a bad header is dropped", function()
      local port = free_port(SOCK_STREAM)
      local h = collect("--listen tcp:127.0.0.1:" .. port .. " --idle-exit 1 -v", "tcp", port)
      -- a header whose length (3) is below the header's: the stream cannot
      -- be followed any further
      local bad, bad_port = tcp_connected(port)
      send_all(bad, { "\0\10\0\3" .. string.rep("x", 100) })
      -- two messages (templates in the first), a byte per write
      local good, good_port = tcp_connected(port)
      local enc = ipfix_encoder(5)
      local stream = enc:message(9, 1, 2) .. enc:message(9, 3, 5)
      for i = 1, #stream do
        send_all(good, { stream:sub(i, i) })
        if i % 16 == 0 then sleep(0.0005) end
      end
      sleep(0.2)
      bad:close()
      good:close()
      local r, flows = collected(h)
      local want = {}
      for i = 1, 5 do want[i] = expected_flow(9, i) end
      assert_flows(want, flows, "TCP")
      assert.equal(5, #flows)
      for _, f in ipairs(flows) do
        assert(f.tags and f.tags.exporter == "127.0.0.1" and f.tags.domain == 5, flow_text(f))
      end
      local x = exporter_at(r.err, "127.0.0.1", good_port)
      assert.equal(2, x.messages, x.line)
      assert.equal(5, x.records, x.line)
      assert.equal(2, x.templates, x.line)
      assert.equal(0, x.dropped_total, x.line)
      x = exporter_at(r.err, "127.0.0.1", bad_port)
      assert.equal(0, x.messages, x.line)
      assert((x.dropped.length or 0) >= 1, x.line)
    end)
  end)

  describe("IPFIX over TCP templates", function()
    -- RFC 7011 section 8: over TCP a template is sent once and lives as
    -- long as the session. It expired by --template-timeout mid-session
    -- and every later data set was dropped (no_template) for good.
    it("do not expire while their session is open; they go with it", function()
      local port = free_port(SOCK_STREAM)
      local h = collect("--listen tcp:127.0.0.1:" .. port .. " --template-timeout 1 --idle-exit 3 -v",
        "tcp", port)
      local c, c_port = tcp_connected(port)
      local enc = ipfix_encoder(3)
      send_all(c, { enc:message(14, 1, 5) }) -- with the templates
      sleep(2.6) -- past the timeout and the collector's expiry pass
      send_all(c, { enc:message(14, 6, 10) })
      sleep(0.2)
      c:close()
      local r, flows = collected(h)
      local want = {}
      for i = 1, 10 do want[i] = expected_flow(14, i) end
      assert_flows(want, flows, "TCP templates")
      assert.equal(10, #flows)
      local x = exporter_at(r.err, "127.0.0.1", c_port)
      assert.equal(10, x.records, x.line)
      assert.equal(0, x.dropped_total, x.line)
      -- the session closed: its templates were freed with it
      assert(r.err:find("collector memory %d+ max_memory %d+ exporters %d+ domains %d+ templates 0 "), r.err)
    end)
  end)

  describe("workers", function()
    -- exporters 127.0.0.FIRST.. (8 of them) to `workers` workers listening
    -- on listen (an address of that port): each exporter handled by one
    -- worker, every flow once, and every worker used
    local function spread_over(listen, kind, workers, first)
      local port = free_port()
      local h = collect("--listen udp:" .. listen .. ":" .. port .. " --workers " .. workers ..
        " --idle-exit 1 -v", kind, port, workers)
      local expected, senders = {}, {}
      for k = first, first + 7 do
        local s = sender_from("127.0.0." .. k, port)
        senders[k] = s
        local enc = ipfix_encoder(k)
        for m = 0, 2 do
          s:send(enc:message(20 + k, m * 10 + 1, m * 10 + 10))
        end
        for i = 1, 30 do expected[#expected + 1] = expected_flow(20 + k, i) end
      end
      local r, flows = collected(h)
      for _, s in pairs(senders) do s:close() end
      assert_flows(expected, flows, "workers")
      assert.equal(#expected, #flows)
      -- flow ids: worker w of N hands out w+1, w+1+N, ...
      local worker_of, used = {}, {}
      for _, f in ipairs(flows) do
        local k = tonumber(f.src:match("^10%.(%d+)%.")) - 20
        assert.equal("127.0.0." .. k, f.tags and f.tags.exporter)
        assert.equal(k, f.tags.domain)
        local w = (f.id - 1) % workers
        assert(worker_of[k] == nil or worker_of[k] == w, "exporter 127.0.0." .. k ..
          " handled by two workers (flow ids)")
        worker_of[k] = w
        used[w] = (used[w] or 0) + 1
      end
      -- each exporter is in one worker's counters, with all its records
      for k = first, first + 7 do
        local x = exporter_at(r.err, "127.0.0." .. k, senders[k].port)
        assert.equal(3, x.messages, x.line)
        assert.equal(30, x.records, x.line)
      end
      local spread = {}
      for k = first, first + 7 do spread[#spread + 1] = "127.0.0." .. k .. "->w" .. worker_of[k] end
      io.stderr:write("collect_spec: workers: " .. table.concat(spread, " ") .. "\n")
      for w = 0, workers - 1 do
        assert(used[w], "worker " .. w .. " got no exporter: " .. table.concat(spread, " "))
      end
    end

    it("--workers 2: each exporter handled by one worker, every flow once", function()
      spread_over("127.0.0.1", "udp", 2, 1)
    end)

    -- the program picking the worker read an IPv4 datagram on an IPv6
    -- socket at IPv6 offsets (the UDP ports): all IPv4 exporters to one
    -- worker
    it("--workers: a dual-stack listener spreads IPv4 exporters too", function()
      spread_over("[::]", "udp6", 2, 2)
      spread_over("[::]", "udp6", 4, 2)
    end)

    -- the others went on collecting with nothing said, half the exporters
    -- now unheard
    it("--workers 2: a SIGTERM to one worker stops the collector", function()
      local port = free_port()
      local h = collect("--listen udp:127.0.0.1:" .. port .. " --workers 2", "udp", port, 2)
      -- (tools without the sanitizer runtime a sanitizer run preloads:
      -- pgrep hung under it)
      local worker1 = io.popen(run.PLAIN .. "pgrep -P " .. h.pid .. " | " .. run.PLAIN .. "sort -n | " ..
        run.PLAIN .. "sed -n 2p"):read("*a")
      assert(worker1:match("%d+"), "worker 1's pid")
      os.execute("kill -TERM " .. worker1:match("%d+"))
      local r = finish(h, 10)
      assert.equal(0, r.code, run.describe(r))
    end)
  end)

  describe("sequence numbers", function()
    -- two routers on one path report one connection each: their counts
    -- were added into one flow tagged with the first router only
    it("the same connection from two exporters, or two engines of one, is a flow for each", function()
      local port = free_port()
      local h = collect("--listen udp:127.0.0.1:" .. port .. " --idle-exit 1", "udp", port)
      local a, b = sender_from("127.0.0.2", port), sender_from("127.0.0.3", port)
      a:send(v5_message(6, 1, 5, 0, 1, 1))
      b:send(v5_message(6, 1, 5, 0, 1, 1))
      b:send(v5_message(6, 1, 5, 5, 1, 2)) -- the same router's other engine
      a:close()
      b:close()
      local r, flows = collected(h)
      assert.equal(15, #flows, run.describe(r))
      local seen = {}
      for _, f in ipairs(flows) do
        local e = v5_expected(6, f.sport - 2000)
        assert.equal(e.pkts_fwd, f.pkts_fwd, flow_text(f))
        assert.equal(e.bytes_fwd, f.bytes_fwd, flow_text(f))
        local id = tostring(f.tags and f.tags.exporter) .. " " .. tostring(f.tags and f.tags.domain) ..
          " " .. f.sport
        assert.is_nil(seen[id], "twice: " .. id)
        seen[id] = true
      end
    end)

    it("withheld messages are counted as seq_lost: IPFIX (records), NetFlow v5 (records), v9 (packets); " ..
       "data before its template is held", function()
      local port = free_port()
      local h = collect("--listen udp:127.0.0.1:" .. port .. " --idle-exit 1 -v", "udp", port)
      -- IPFIX from sluice's encoder, domain 42: 10 messages of 1..10 flows
      local ipfix = assert(sock.connect("udp:127.0.0.1:" .. port))
      local enc = ipfix_encoder(42)
      local expected, lost, i = {}, 0, 0
      for m = 1, 10 do
        local msg = enc:message(1, i + 1, i + m)
        local withhold = m == 3 or m == 7 or m == 8
        for k = i + 1, i + m do
          if not withhold then expected[#expected + 1] = expected_flow(1, k) end
        end
        if withhold then lost = lost + m else send_all(ipfix, { msg }) end
        i = i + m
      end
      assert.equal(18, lost)
      -- NetFlow v5, engine 2/9: 8 messages of 4 records, the 2nd and 5th withheld
      local v5 = assert(sock.connect("udp:127.0.0.1:" .. port))
      local seq = 0
      for m = 1, 8 do
        local first = (m - 1) * 4 + 1
        if m ~= 2 and m ~= 5 then
          send_all(v5, { v5_message(2, first, first + 3, seq, 2, 9) })
          for k = first, first + 3 do expected[#expected + 1] = v5_expected(2, k) end
        end
        seq = seq + 4
      end
      -- NetFlow v9, source id 77: packets 1..9 (the template in packet 1),
      -- packets 4 and 6 withheld
      local v9 = assert(sock.connect("udp:127.0.0.1:" .. port))
      for m = 1, 9 do
        local data = { v9_data(3, m * 10, m * 10 + 2) }
        local sets = { data }
        if m == 1 then table.insert(sets, 1, { v9_template() }) end
        if m ~= 4 and m ~= 6 then
          send_all(v9, { v9_message(m, 77, sets) })
          for k = m * 10, m * 10 + 2 do expected[#expected + 1] = v9_expected(3, k) end
        end
      end
      -- NetFlow v9, source id 88: data before its template is held, then
      -- decoded when the template comes
      local held = assert(sock.connect("udp:127.0.0.1:" .. port))
      send_all(held, { v9_message(1, 88, { { v9_data(4, 1, 5) } }) })
      send_all(held, { v9_message(2, 88, { { v9_template() }, { v9_data(4, 6, 7) } }) })
      for k = 1, 7 do expected[#expected + 1] = v9_expected(4, k) end
      local ports = {}
      for name, s in pairs { ipfix = ipfix, v5 = v5, v9 = v9, held = held } do
        local sa = ffi.new("struct sl_sockaddr_in")
        local len = ffi.new("unsigned[1]", ffi.sizeof(sa))
        assert(C.getsockname(s.fd, sa, len) == 0)
        ports[name] = swap16(sa.port)
      end
      local r, flows = collected(h)
      ipfix:close()
      v5:close()
      v9:close()
      held:close()
      assert_flows(expected, flows, "sequence test")
      assert.equal(#expected, #flows)
      local x = exporter_at(r.err, "127.0.0.1", ports.ipfix)
      assert.equal(18, x.seq_lost, x.line)
      assert.equal(7, x.messages, x.line)
      assert.equal(55 - 18, x.records, x.line)
      assert.equal(0, x.seq_resets, x.line)
      x = exporter_at(r.err, "127.0.0.1", ports.v5)
      assert.equal(8, x.seq_lost, x.line)
      assert.equal(6, x.messages, x.line)
      assert.equal(0, x.seq_resets, x.line)
      x = exporter_at(r.err, "127.0.0.1", ports.v9)
      assert.equal(2, x.seq_lost, x.line)
      assert.equal(7, x.messages, x.line)
      assert.equal(1, x.templates, x.line)
      assert.equal(0, x.seq_resets, x.line)
      x = exporter_at(r.err, "127.0.0.1", ports.held)
      assert.equal(1, x.held, x.line)
      assert.equal(7, x.records, x.line)
      assert.equal(2, x.messages, x.line)
      assert.equal(0, x.seq_lost, x.line)
      assert.equal(0, x.dropped_total, x.line)
      -- domains: IPFIX observation domain, v5 engine type << 8 | engine id,
      -- v9 source id
      local domain_of = { ["10.1"] = 42, ["10.2"] = 2 * 256 + 9, ["10.3"] = 77, ["10.4"] = 88 }
      for _, f in ipairs(flows) do
        local want = domain_of[f.src:match("^(%d+%.%d+)")]
        assert(f.tags and f.tags.exporter == "127.0.0.1" and f.tags.domain == want,
          "tags of " .. flow_text(f) .. ": " .. require("cjson").encode(f.tags or {}) ..
          ", expected domain " .. tostring(want))
      end
    end)
  end)

  -- routers sample: counts come as 1 in N and are multiplied back, as
  -- nfdump does; the exporter line tells the rate
  it("NetFlow v5 header sampling (1 in 100): counts multiplied, the rate on the exporter line", function()
    local port = free_port()
    local h = collect("--listen udp:127.0.0.1:" .. port .. " --idle-exit 1 -v", "udp", port)
    local s = sender_from("127.0.0.4", port)
    local msg = v5_message(7, 1, 5, 0, 1, 1)
    -- sampling mode 01 in the top 2 bits, interval 100 in the 14 others
    s:send(msg:sub(1, 22) .. be16(0x4000 + 100) .. msg:sub(25))
    s:close()
    local r, flows = collected(h)
    assert.equal(5, #flows, run.describe(r))
    for _, f in ipairs(flows) do
      local e = v5_expected(7, f.sport - 2000)
      assert.equal(e.pkts_fwd * 100, f.pkts_fwd, flow_text(f))
      assert.equal(e.bytes_fwd * 100, f.bytes_fwd, flow_text(f))
    end
    local x = exporter_at(r.err, "127.0.0.4", s.port)
    assert.equal(5, x.sampled, x.line)
    assert.equal(100, x.sampling, x.line)
  end)

  it("packet and byte counts near 2^64 saturate: no sum wraps, no count prints negative", function()
    local dir = run.tmpdir()
    local policy = run.spit(dir .. "/big.lua", [[
      local P = {}
      local emit
      function P.init(_, ctx) emit = ctx.emit end
      function P.on_flow_end(flow)
        emit(flow) -- the core's JSON line
        emit { type = "big", src = flow.src, pkts = flow.pkts, bytes = flow.bytes, text = tostring(flow) }
      end
      return P
    ]])
    local port = free_port(SOCK_DGRAM)
    local h = collect(q(policy) .. " --listen udp:127.0.0.1:" .. port .. " --idle-exit 1 -v", "udp", port)
    local s = sender_from("127.0.0.1", port)
    -- template 256: addresses, ports, protocol, packetDeltaCount and
    -- octetDeltaCount of 8 bytes each
    local fields = { { 8, 4 }, { 12, 4 }, { 7, 2 }, { 11, 2 }, { 4, 1 }, { 2, 8 }, { 1, 8 } }
    local t = { be16(256), be16(#fields) }
    for _, f in ipairs(fields) do t[#t + 1] = be16(f[1]) .. be16(f[2]) end
    local tset = be16(2) .. be16(4 + #table.concat(t)) .. table.concat(t)
    local MAX, MAX1 = string.rep("\255", 8), string.rep("\255", 7) .. "\254"
    local function rec(src, dst, pkts, bytes)
      return ip4(src) .. ip4(dst) .. be16(1000) .. be16(80) .. "\6" .. pkts .. bytes
    end
    -- one flow reported twice at 2^64 - 1 packets: the sum saturates;
    -- another at 2^63 + 5 packets, which %d of a number makes negative
    local recs = rec("10.9.0.1", "10.9.0.2", MAX, MAX1) .. rec("10.9.0.1", "10.9.0.2", MAX, MAX1) ..
      rec("10.9.0.3", "10.9.0.4", "\128\0\0\0\0\0\0\5", "\128" .. string.rep("\0", 7))
    local body = tset .. be16(256) .. be16(4 + #recs) .. recs
    s:send(be16(10) .. be16(16 + #body) .. be32(T0_S) .. be32(0) .. be32(1) .. body)
    s:close()
    local r = collected(h)
    local out = run.slurp(h.json)
    assert(has(out, '"src":"10.9.0.1"') and has(out, '"pkts_fwd":18446744073709551615,') and
      has(out, '"bytes_fwd":18446744073709551615,'), out)
    assert(has(out, '"pkts_fwd":9223372036854775813,') and has(out, '"bytes_fwd":9223372036854775808,'),
      out)
    assert(has(out, "pkts 18446744073709551615/0 bytes 18446744073709551615/0"), out)
    assert(has(out, "pkts 9223372036854775813/0 bytes 9223372036854775808/0"), out)
    for _, b in ipairs(run.of_type(run.decode_lines(out), "big")) do
      assert(b.pkts > 9e18 and b.bytes > 9e18, out)
    end
    -- the engine's sums (-v) saturate too, printed whole
    assert(has(r.err, "packets 18446744073709551615 bytes 18446744073709551615 "), r.err)
    assert(not r.err:find("%-%d"), "a negative count:\n" .. r.err)
    local x = exporter_at(r.err, "127.0.0.1", s.port)
    assert.equal(3, x.records, x.line)
  end)

  -- An IPFIX message of template 256 (its fields: {id, length} pairs)
  -- and data records of it, exported at T0_S.
  local function ipfix_message(fields, recs, seq, with_template)
    local t = { be16(256), be16(#fields) }
    for _, f in ipairs(fields) do t[#t + 1] = be16(f[1]) .. be16(f[2]) end
    local tset = with_template and be16(2) .. be16(4 + #table.concat(t)) .. table.concat(t) or ""
    local body = tset .. be16(256) .. be16(4 + #recs) .. recs
    return be16(10) .. be16(16 + #body) .. be32(T0_S) .. be32(seq or 0) .. be32(1) .. body
  end

  it("a record without times or counts: first and last are both the export time", function()
    local port = free_port(SOCK_DGRAM)
    local h = collect("--listen udp:127.0.0.1:" .. port .. " --idle-exit 1", "udp", port)
    local s = sender_from("127.0.0.1", port)
    -- sourceIPv4Address and destinationIPv4Address only
    s:send(ipfix_message({ { 8, 4 }, { 12, 4 } }, ip4("10.8.0.3") .. ip4("10.8.0.4"), 0, true))
    s:close()
    local _, flows = collected(h)
    assert.equal(1, #flows, run.slurp(h.json))
    assert.equal(T0_S, flows[1].first, run.slurp(h.json))
    assert.equal(T0_S, flows[1].last, run.slurp(h.json))
  end)

  describe("data still held for its template when the collector stops", function()
    -- 5 messages of template 256, which never comes: held (5 s), then the
    -- run ends before the hold does
    local function held_drop(stop)
      local port = free_port(SOCK_DGRAM)
      local h = collect("--listen udp:127.0.0.1:" .. port .. " -v" .. (stop == "idle" and " --idle-exit 1" or ""),
        "udp", port)
      local s = sender_from("127.0.0.1", port)
      local fields = { { 8, 4 }, { 12, 4 }, { 7, 2 }, { 11, 2 }, { 4, 1 } }
      for i = 1, 5 do
        s:send(ipfix_message(fields, ip4("10.9.0." .. i) .. ip4("10.9.1.1") .. be16(1000 + i) .. be16(80) .. "\6", i - 1))
      end
      s:close()
      local r
      if stop == "idle" then
        r = finish(h, 10)
      else
        -- every message read (the socket's queue empty) before the stop
        local deadline = monotonic() + 5
        while select(2, proc_sockets("udp", port)) > 0 do
          assert(monotonic() < deadline, "the collector does not read")
          sleep(0.01)
        end
        sleep(0.2)
        proc.signal(h, S.SL_SIGTERM)
        r = finish(h, 10)
      end
      -- counted, and a loss of the run: a line without -v, exit 3
      assert.equal(3, r.code, run.describe(r))
      assert(has(r.err, "sluice: 5 message(s) or set(s) from exporters dropped undecoded (no_template=5)"),
        run.describe(r))
      local x = exporter_at(r.err, "127.0.0.1", s.port)
      assert.equal(5, x.held, x.line)
      assert.equal(5, x.dropped.no_template, x.line)
      assert.equal(0, x.records, x.line)
    end

    it("--idle-exit: counted as dropped no_template", function() held_drop("idle") end)
    it("SIGTERM: counted as dropped no_template", function() held_drop("term") end)
  end)

  -- A stop (SIGTERM, SIGINT) reads what the kernel already took, as live
  -- capture does: the collector is stopped (SIGSTOP) while the exporters
  -- send, so everything waits in its sockets when the SIGTERM comes. It
  -- read one batch (64 datagrams) and dropped the rest, silently, exit 0.
  describe("a stop reads what the kernel already queued", function()
    local SIGSTOP, SIGCONT = 19, 18

    -- a stream's bytes, whole (a send may take fewer)
    local function send_stream(c, list)
      local data = table.concat(list)
      local off = 0
      local deadline = monotonic() + 10
      while off < #data do
        local n, err, retry = c:send(data:sub(off + 1), #data - off)
        if n then
          off = off + n
        else
          assert(retry, "send: " .. tostring(err))
          assert(monotonic() < deadline, "the collector's socket stays full")
          sleep(0.001)
        end
      end
    end

    local function stop_queued(h)
      proc.signal(h, S.SL_SIGTERM)
      proc.signal(h, SIGCONT)
      return finish(h, 60)
    end

    it("UDP: every datagram queued at the SIGTERM is decoded", function()
      local port = free_port(SOCK_DGRAM)
      local h = collect("--listen udp:127.0.0.1:" .. port .. " -v", "udp", port)
      proc.signal(h, SIGSTOP)
      local s = sender_from("127.0.0.1", port)
      local want = {}
      for k = 0, 299 do
        s:send(v5_message(50, k * 30, k * 30 + 29, k * 30))
        for i = k * 30, k * 30 + 29 do want[#want + 1] = v5_expected(50, i) end
      end
      s:close()
      local r = stop_queued(h)
      assert.equal(0, r.code, run.describe(r))
      local flows = run.of_type(run.json_lines(h.json), "flow")
      assert_flows(want, flows, "queued at the stop")
      assert.equal(9000, #flows)
      local x = exporter_at(r.err, "127.0.0.1", s.port)
      assert.equal(300, x.messages, x.line)
      assert.equal(9000, x.records, x.line)
      assert.equal(0, x.seq_lost, x.line)
    end)

    it("TCP: what an open session and a connection not yet accepted sent is decoded", function()
      local port = free_port(SOCK_STREAM)
      local h = collect("--listen tcp:127.0.0.1:" .. port .. " -v", "tcp", port)
      local a = tcp_connected(port)
      local ea, eb = ipfix_encoder(1), ipfix_encoder(2)
      send_stream(a, { ea:message(11, 0, 19) })
      sleep(0.3) -- taken: the session is open in the collector
      proc.signal(h, SIGSTOP)
      local list = {}
      for k = 1, 49 do list[#list + 1] = ea:message(11, k * 20, k * 20 + 19) end
      send_stream(a, list)
      local b = tcp_connected(port)
      list = {}
      for k = 0, 19 do list[#list + 1] = eb:message(12, k * 20, k * 20 + 19) end
      send_stream(b, list)
      local r = stop_queued(h)
      a:close()
      b:close()
      assert.equal(0, r.code, run.describe(r))
      local flows = run.of_type(run.json_lines(h.json), "flow")
      local want = {}
      for i = 0, 999 do want[#want + 1] = expected_flow(11, i) end
      for i = 0, 399 do want[#want + 1] = expected_flow(12, i) end
      assert_flows(want, flows, "queued at the stop")
      assert.equal(1400, #flows)
    end)
  end)

  it("a slow policy shows up as socket drops, every one counted", function()
    local dir = run.tmpdir()
    local policy = run.spit(dir .. "/slow.lua", [[
      local P = {}
      function P.on_flow_start()
        local t = os.clock() + 0.0002
        while os.clock() < t do end
      end
      return P
    ]])
    local port = free_port(SOCK_DGRAM)
    local h = collect(q(policy) .. " --listen udp:127.0.0.1:" .. port ..
      " --idle-exit 1 --rcvbuf 65536 -v", "udp", port)
    local s = assert(require("sluice.sock").connect("udp:127.0.0.1:" .. port))
    local sent = 0
    for k = 0, 2999 do
      local msg = v5_message(40 + k % 8, (k * 30) % 60000, (k * 30) % 60000 + 29, k * 30)
      if s:send(msg, #msg) then sent = sent + 1 end
    end
    s:close()
    local r = finish(h, 60)
    local received, _, drops = totals_line(r.err)
    assert(drops > 0, "a policy this slow must lose datagrams\n" .. r.err)
    -- a loss of the run: one line even without -v, exit 3
    assert.equal(3, r.code, run.describe(r))
    assert(has(r.err, string.format("sluice: %d message(s) dropped by the kernel: the socket " ..
      "buffer was full", drops)), run.describe(r))
    -- the socket buffer is the only queue: every datagram is taken or
    -- counted as dropped
    assert.equal(sent, received + drops, r.err)
  end)
end)
