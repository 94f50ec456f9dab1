-- --metrics ADDR:PORT (sluice.metrics): Prometheus text format on
-- http://ADDR:PORT/metrics, served between engine steps.
--
--   1. library: eng:metrics_text() after a run equals eng:stats() and the
--      run's sink counters; label values escaped; eng:run{ metrics = }
--      opens and closes its socket, a bad address is nil, err;
--      require "sluice" has metrics and state; the server, served as an
--      idle run serves it: a 12 MB answer reaches a client that reads, a
--      client that stops reading is closed 3 s after its last progress;
--   2. `sluice run -r -` fed from a FIFO the spec keeps open: /metrics while
--      the input is idle passes promtool, its counters match the final -v
--      counters of the same run; 404, 405; clients that connect and send
--      nothing neither stall a scrape nor the run, and are closed;
--   3. a bad --metrics value and a port in use: one line, exit 2, no output;
--   4. sluice collect: NetFlow v5 from the spec's own socket, per-exporter
--      counters on /metrics match what was sent and the -v exporter line;
--      2500 exporters: the whole 3 MB text in one scrape, promtool accepts it.
--
-- curl, python3 and promtool (Debian's prometheus package, .ci/deps.sh) run
-- without the sanitizer preload (run.PLAIN).
local ffi = require "ffi"
local bit = require "bit"
local run = require "support.run"
local proc = require "support.proc"
local core = require "sluice.core"
local sluice = require "sluice"
local metrics = require "sluice.metrics"

local C, S = ffi.C, core.C
local q, SLUICE = run.q, run.SLUICE
local SAMPLE = run.root .. "/examples/sample.pcap"

for _, decl in ipairs {
  "int getsockname(int fd, void *addr, unsigned *len);",
  "int usleep(unsigned int usec);",
} do
  pcall(ffi.cdef, decl)
end
pcall(ffi.cdef, "struct metrics_spec_pollfd { int fd; short events; short revents; };")

local function sleep(secs) C.usleep(math.floor(secs * 1e6)) end

local function swap16(p)
  return bit.bor(bit.rshift(p, 8), bit.lshift(bit.band(p, 0xff), 8))
end

local function sockaddr(ip, port)
  local sa = ffi.new("struct sl_sockaddr_in")
  sa.family, sa.port = S.SL_AF_INET, swap16(port or 0)
  assert(C.inet_pton(S.SL_AF_INET, ip, sa.addr) == 1)
  return sa
end

-- A port free on 127.0.0.1 (bound, then closed).
local function free_port(kind)
  local fd = C.socket(S.SL_AF_INET, kind or S.SL_SOCK_STREAM, 0)
  local sa = sockaddr("127.0.0.1", 0)
  assert(C.bind(fd, sa, ffi.sizeof(sa)) == 0, core.errno_text())
  local len = ffi.new("unsigned[1]", ffi.sizeof(sa))
  assert(C.getsockname(fd, sa, len) == 0)
  C.close(fd)
  return swap16(sa.port)
end

-- A blocking TCP connection to 127.0.0.1:port that sends nothing.
-- (tried for a few seconds: the process may still be starting)
local function silent_client(port)
  local sa = sockaddr("127.0.0.1", port)
  local deadline = core.monotonic() + 10
  while true do
    local fd = C.socket(S.SL_AF_INET, S.SL_SOCK_STREAM, 0)
    if C.connect(fd, sa, ffi.sizeof(sa)) == 0 then return fd end
    local err = core.errno_text()
    C.close(fd)
    assert(core.monotonic() < deadline, "connect: " .. err)
    sleep(0.05)
  end
end

-- Whether the server closed fd within secs (a read gives 0).
local function closed_within(fd, secs)
  local p = ffi.new("struct metrics_spec_pollfd")
  p.fd, p.events = fd, 1 -- POLLIN
  if C.poll(p, 1, math.floor(secs * 1000)) ~= 1 then return false end
  local buf = ffi.new("char[16]")
  return C.recv(fd, buf, 16, 0) == 0
end

-- GET (or method) http://127.0.0.1:port/path with curl or python3:
-- status code, body.
local function fetch(port, path, method)
  local url = string.format("http://127.0.0.1:%d%s", port, path or "/metrics")
  local cmd
  if run.have("curl") then
    cmd = run.PLAIN .. "curl -s -m 5 -X " .. (method or "GET") .. " -w '\\n%{http_code}' " .. q(url)
  else
    cmd = run.PLAIN .. "python3 -c " .. q([[
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], method=sys.argv[2])
try:
    r = urllib.request.urlopen(req, timeout=5); body, code = r.read().decode(), r.status
except urllib.error.HTTPError as e:
    body, code = e.read().decode(), e.code
sys.stdout.write(body + "\n" + str(code))
]]) .. " " .. q(url) .. " " .. (method or "GET")
  end
  local r = run.sh(cmd)
  local body, code = r.out:match("^(.*)\n(%d+)$")
  return tonumber(code), body, r
end

-- The samples of a text: "name{labels}" -> number.
local function samples(text)
  local t = {}
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, 1) ~= "#" then
      local key, v = line:match("^(%S+) (%S+)$")
      assert(key, "not a sample line: " .. line)
      t[key] = tonumber(v)
    end
  end
  return t
end

-- promtool check metrics on text: true, or false and what it said; nil
-- and why when promtool is missing.
local function promtool(text)
  if not run.have("promtool") then return nil, "promtool is not installed (apt-get install prometheus)" end
  local path = run.spit(run.tmpdir() .. "/metrics.txt", text)
  local r = run.sh(run.PLAIN .. "promtool check metrics < " .. q(path))
  return r.code == 0 and r.out == "" and r.err == "", r.out .. r.err
end

local function check_promtool(text)
  local ok, why = promtool(text)
  if ok == nil then
    io.stderr:write("metrics_spec: skipping promtool: ", why, "\n")
    return
  end
  assert(ok, "promtool check metrics: " .. tostring(why) .. "\n" .. text)
end

local function wait_for(cond, secs, what, h)
  local deadline = core.monotonic() + secs
  while not cond() do
    if h and proc.exited(h) then error(what .. ": sluice exited\n" .. run.describe(proc.result(h))) end
    assert(core.monotonic() < deadline, "timed out waiting for " .. what)
    sleep(0.05)
  end
end

-- The -v counters of a run's stderr.
local function final_counters(err)
  local t = {}
  t.packets, t.bytes = err:match("\npackets (%d+) bytes (%d+)")
  if not t.packets then t.packets, t.bytes = err:match("^packets (%d+) bytes (%d+)") end
  t.malformed = err:match("not_ip %d+ malformed (%d+)")
  local started, ended, reasons = err:match("\nflows (%d+) ended (%d+) %(([^)]*)%)")
  t.started, t.ended, t.ended_by = started, ended, {}
  for k, v in (reasons or ""):gmatch("(%w+)=(%d+)") do t.ended_by[k] = tonumber(v) end
  t.written = err:match("\nsink [^\n]-: written (%d+)")
  for k, v in pairs(t) do if type(v) == "string" then t[k] = tonumber(v) end end
  return t
end

describe("metrics", function()
  teardown(function()
    proc.kill_leftovers()
    run.cleanup()
  end)

  describe("library", function()
    it("eng:metrics_text() after a run equals eng:stats() and the sinks' counters; promtool accepts it", function()
      local dir = run.tmpdir()
      local eng = assert(sluice.open { read = SAMPLE })
      local sink = assert(sluice.sink.json { path = dir .. "/out.json" })
      local port = free_port()
      local ok, rep = eng:run(require "sluice.policies.flows", nil,
        { outputs = { sink }, metrics = "127.0.0.1:" .. port })
      assert(ok, rep)
      sink:close()
      local text = eng:metrics_text()
      local m = samples(text)
      local st = eng:stats()
      assert.equal(st.packets, m.sluice_packets_received_total)
      assert(st.packets > 0)
      assert.equal(st.bytes, m.sluice_bytes_received_total)
      assert.equal(st.flows_started, m.sluice_flows_started_total)
      assert.equal(st.flows_active, m.sluice_flows_active)
      local ended = 0
      for key, v in pairs(m) do
        local reason = key:match('^sluice_flows_ended_total{reason="(%w+)"}$')
        if reason then
          assert.equal(st.ended_by[reason] or 0, v, reason)
          ended = ended + v
        end
      end
      assert.equal(st.flows_ended, ended)
      local mal = 0
      for key, v in pairs(m) do
        if key:match("^sluice_malformed_packets_total{") then mal = mal + v end
      end
      assert.equal(st.malformed, mal)
      local name = "json:" .. dir .. "/out.json"
      assert.equal(rep.sinks[name].written, m['sluice_sink_records_written_total{sink="' .. name .. '"}'])
      assert.equal(st.flows_ended, rep.sinks[name].written)
      assert.equal(1, m['sluice_build_info{version="' .. sluice.version .. '"}'])
      assert(math.abs(m.sluice_start_time_seconds - os.time()) < 60)
      -- every family has HELP and TYPE, once
      local helps, types = {}, {}
      for n in text:gmatch("# HELP (%S+)") do assert.is_nil(helps[n], n) helps[n] = true end
      for n in text:gmatch("# TYPE (%S+)") do assert.is_nil(types[n], n) types[n] = true end
      for key in pairs(m) do
        local n = key:match("^([%w_]+)")
        assert(helps[n] and types[n], "no HELP/TYPE for " .. n)
      end
      check_promtool(text)
      -- the run closed its socket: the port can be listened on again
      local srv = assert(metrics.listen("127.0.0.1:" .. port))
      srv:close()
      eng:close()
    end)

    it("require 'sluice' has metrics and state, as the README spells them", function()
      -- a fresh process: the modules are not loaded by anything else first
      local lib = os.getenv("SLUICE_CORE")
      if not lib or lib == "" then lib = run.root .. "/core/build/sluice_core.so" end
      local r = run.sh("SLUICE_CORE=" .. q(lib) .. " luajit -e " .. q('package.path = "' .. run.root ..
        '/lua/?.lua;' .. run.root .. '/lua/?/init.lua;" .. package.path ' ..
        'local s = require "sluice" ' ..
        'assert(s.metrics == require "sluice.metrics") assert(s.state == require "sluice.state") ' ..
        'local srv = assert(s.metrics.listen("127.0.0.1:' .. free_port() .. '")) srv:close() ' ..
        'assert(type(s.state.load) == "function") print("ok")'))
      assert.equal("ok\n", r.out, run.describe(r))
      local port = free_port()
      local srv = assert(sluice.metrics.listen("127.0.0.1:" .. port))
      local eng = assert(sluice.open { read = SAMPLE })
      assert(eng:run({}, nil, { metrics = srv }))
      eng:close()
      assert.equal(port, tonumber(srv.address:match(":(%d+)$")))
      srv:close()
    end)

    it("label values are escaped; a bad address is nil, err before data", function()
      assert.equal('a\\\\b\\"c\\nd', metrics.escape('a\\b"c\nd'))
      local eng = assert(sluice.open { read = SAMPLE })
      local seen = 0
      local ok, err = eng:run({ on_flow_start = function() seen = seen + 1 end }, nil,
        { metrics = "127.0.0.1:99999" })
      assert.is_nil(ok)
      assert.matches("^metrics: ", err)
      assert.equal(0, seen, "no data before the socket is open")
      assert.has_error(function() eng:run({}, nil, { metrics = 42 }) end)
      eng:close()
    end)
  end)

  describe("the server", function()
    -- serve() as an idle run calls it: once per poll interval (0.1 s),
    -- until done() or secs passed
    local function serve_idle(srv, body_fn, secs, done)
      local deadline = core.monotonic() + secs
      while not done() and core.monotonic() < deadline do
        srv:serve(body_fn)
        sleep(0.1)
      end
    end

    it("a client that reads gets the whole answer, however long (12 MB on an idle run)", function()
      if not run.have("curl") then pending("curl is not installed") return end
      local lines = {}
      for i = 1, 300000 do lines[i] = string.format('sluice_spec_x{exporter="10.%d.%d.%d:2055"} %d\n',
        i % 250, math.floor(i / 250) % 250, math.floor(i / 62500), i) end
      local body = "# HELP sluice_spec_x a big family\n# TYPE sluice_spec_x counter\n" ..
        table.concat(lines)
      assert(#body > 12e6)
      local dir = run.tmpdir()
      local port = free_port()
      local srv = assert(metrics.listen("127.0.0.1:" .. port))
      local h = proc.spawn(run.PLAIN .. "curl -s -m 20 -o " .. q(dir .. "/m.txt") ..
        " -w '%{http_code} %{size_download}' http://127.0.0.1:" .. port .. "/metrics")
      local t0 = core.monotonic()
      serve_idle(srv, function() return body end, 20, function() return proc.exited(h) end)
      local r = proc.finish(h, 5)
      srv:close()
      assert.equal(0, r.code, run.describe(r))
      assert.equal("200 " .. #body, r.out)
      assert(run.slurp(dir .. "/m.txt") == body, "the body as made")
      -- as much as the socket takes per call: not 64 KiB per 0.1 s
      assert(core.monotonic() - t0 < 10, "took " .. (core.monotonic() - t0) .. " s")
    end)

    it("a client that stops reading is closed 3 s after the last byte it took", function()
      local body = ("x"):rep(64 * 1024 * 1024)
      local port = free_port()
      local srv = assert(metrics.listen("127.0.0.1:" .. port))
      -- asks, then reads nothing: its buffers fill, and the answer stalls
      local h = proc.spawn(run.PLAIN .. "python3 -c " .. q([[
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
time.sleep(30)
]]) .. " " .. port)
      wait_for(function() srv:serve(function() return body end) return #srv.conns > 0 end, 10,
        "the connection", h)
      local conn = srv.conns[1]
      local t0 = core.monotonic()
      serve_idle(srv, function() return body end, 12, function() return #srv.conns == 0 end)
      local took = core.monotonic() - t0
      srv:close()
      proc.signal(h, S.SL_SIGTERM)
      proc.finish(h, 5)
      assert.equal(0, #srv.conns)
      assert(conn.sent > 0 and conn.sent < #body, "sent " .. conn.sent)
      assert(took >= 2.5 and took < 8, "closed after " .. took .. " s")
    end)
  end)

  describe("sluice run -r - from a FIFO", function()
    it("serves /metrics while the input is idle: promtool accepts it, counters match the final -v, " ..
      "404, 405, silent clients neither stall it nor stay open", function()
      local dir = run.tmpdir()
      local fifo = dir .. "/in.fifo"
      assert(os.execute("mkfifo " .. q(fifo)) == 0)
      local port = free_port()
      local out = dir .. "/out.json"
      local h = proc.spawn("sh -c " .. q(string.format("exec %s run -r - -v --metrics 127.0.0.1:%d " ..
        "--out json:%s < %s", SLUICE, port, q(out), q(fifo))))
      local w = assert(io.open(fifo, "wb")) -- waits for sluice to open it
      -- the socket listens before any data (the run serves it once the
      -- capture's header is in): two clients that connect and never ask
      local silent = { silent_client(port), silent_client(port) }
      local data = assert(run.slurp(SAMPLE))
      assert(w:write(data))
      w:flush()
      -- the whole sample is in once the packet count is the file's
      local want = final_counters(run.sh(SLUICE .. " run -r " .. q(SAMPLE) .. " -v -q --out json:" ..
        q(dir .. "/plain.json")).err)
      assert(want.packets and want.packets > 0, "the plain run's -v counters")
      local code, body
      wait_for(function()
        code, body = fetch(port)
        return code == 200 and samples(body).sluice_packets_received_total == want.packets
      end, 20, "every packet counted on /metrics", h)
      check_promtool(body)
      local m = samples(body)
      -- while idle, the run keeps answering (a scrape a second later too)
      sleep(0.3)
      local code2, body2 = fetch(port)
      assert.equal(200, code2)
      assert.equal(m.sluice_flows_active, samples(body2).sluice_flows_active)
      assert.equal(404, (fetch(port, "/other")))
      assert.equal(405, (fetch(port, "/metrics", "POST")))
      -- the silent clients are closed by the server (a few seconds)
      for _, fd in ipairs(silent) do
        assert(closed_within(fd, 6), "a client that sent nothing is closed")
        C.close(fd)
      end
      -- a silent client at the end does not hold the run up
      local late = silent_client(port)
      local t0 = core.monotonic()
      w:close() -- the end of the input: the run ends
      local r = proc.finish(h, 20)
      assert(core.monotonic() - t0 < 2.5, "the run ended in time with a silent client open")
      assert(closed_within(late, 1), "closed at the end of the run")
      C.close(late)
      assert.equal(0, r.code, run.describe(r))
      local fin = final_counters(r.err)
      assert.equal(want.packets, fin.packets)
      assert.equal(fin.packets, m.sluice_packets_received_total)
      assert.equal(fin.bytes, m.sluice_bytes_received_total)
      assert.equal(fin.malformed, (function()
        local n = 0
        for k, v in pairs(m) do if k:match("^sluice_malformed_packets_total") then n = n + v end end
        return n
      end)())
      assert.equal(fin.started, m.sluice_flows_started_total)
      -- the flows still active while idle ended at the end of the input
      assert.equal(fin.ended, m.sluice_flows_active + (function()
        local n = 0
        for k, v in pairs(m) do if k:match("^sluice_flows_ended_total") then n = n + v end end
        return n
      end)())
      assert.equal(fin.ended_by.idle or 0, m['sluice_flows_ended_total{reason="idle"}'] or 0, "idle")
      -- closed TCP flows wait tcp_closed (packet time, which stands still
      -- while the input is idle) and end with their reason at its end
      local late = 0
      for _, reason in ipairs { "fin", "rst" } do
        local now = m['sluice_flows_ended_total{reason="' .. reason .. '"}'] or 0
        assert(now <= (fin.ended_by[reason] or 0), reason)
        late = late + (fin.ended_by[reason] or 0) - now
      end
      assert.equal((fin.ended_by.eof or 0) + late, m.sluice_flows_active)
      -- the sink had written every flow ended before the scrape
      local written = m['sluice_sink_records_written_total{sink="json:' .. out .. '"}']
      assert.equal(fin.written - m.sluice_flows_active, written)
      assert.equal(#run.json_lines(out), fin.written)
      assert.matches("sluice: metrics on http://127.0.0.1:" .. port .. "/metrics", r.err, 1, true)
      -- the socket is closed at the end
      local srv = assert(metrics.listen("127.0.0.1:" .. port))
      srv:close()
    end)
  end)

  describe("errors", function()
    it("a bad --metrics value: one line, exit 2", function()
      local dir = run.tmpdir()
      for _, bad in ipairs { "nonsense", "127.0.0.1:0", "127.0.0.1:70000", "host.example:9300" } do
        local r = run.sh(SLUICE .. " run -r " .. q(SAMPLE) .. " --metrics " .. q(bad) ..
          " --out json:" .. q(dir .. "/out.json"))
        assert.equal(2, r.code, run.describe(r))
        assert.matches("^sluice: %-%-metrics: [^\n]+\n$", r.err)
        assert.is_false(run.exists(dir .. "/out.json"), "nothing written")
      end
    end)

    it("a port in use: one line, exit 2, before any output", function()
      local dir = run.tmpdir()
      local port = free_port()
      local srv = assert(metrics.listen("127.0.0.1:" .. port))
      local r = run.sh(SLUICE .. " run -r " .. q(SAMPLE) .. " --metrics 127.0.0.1:" .. port ..
        " --out json:" .. q(dir .. "/out.json"))
      srv:close()
      assert.equal(2, r.code, run.describe(r))
      assert.equal("sluice: --metrics: 127.0.0.1:" .. port .. ": Address already in use\n", r.err)
      assert.is_false(run.exists(dir .. "/out.json"), "nothing written")
    end)
  end)

  describe("sluice collect", function()
    local function be16(v) return string.char(bit.band(bit.rshift(v, 8), 255), bit.band(v, 255)) end
    local function be32(v)
      return string.char(math.floor(v / 16777216) % 256, math.floor(v / 65536) % 256,
        math.floor(v / 256) % 256, v % 256)
    end
    -- NetFlow v5: n records of UDP flows 10.9.0.i -> 198.51.100.7:123
    local function v5(first, n, seq)
      local recs = {}
      for i = first, first + n - 1 do
        recs[#recs + 1] = string.char(10, 9, 0, i) .. string.char(198, 51, 100, 7) .. "\0\0\0\0" ..
          be16(1) .. be16(2) .. be32(3) .. be32(228) .. be32(3598000 + i) .. be32(3599000 + i) ..
          be16(2000 + i) .. be16(123) .. "\0\0\17\0" .. be16(0) .. be16(0) .. "\0\0\0\0"
      end
      return be16(5) .. be16(n) .. be32(3600000) .. be32(1700000000) .. be32(0) .. be32(seq) ..
        "\0\0" .. be16(0) .. table.concat(recs)
    end

    it("per-exporter counters on /metrics match what was sent and the -v exporter line", function()
      local dir = run.tmpdir()
      local lport, mport = free_port(S.SL_SOCK_DGRAM), free_port()
      local h = proc.spawn(string.format("%s collect --listen udp:127.0.0.1:%d --metrics 127.0.0.1:%d " ..
        "-v --out json:%s", SLUICE, lport, mport, q(dir .. "/out.json")))
      wait_for(function() return fetch(mport) == 200 end, 10, "/metrics of the collector", h)
      local fd = C.socket(S.SL_AF_INET, S.SL_SOCK_DGRAM, 0)
      local src = sockaddr("127.0.0.1", 0)
      assert(C.bind(fd, src, ffi.sizeof(src)) == 0)
      local len = ffi.new("unsigned[1]", ffi.sizeof(src))
      assert(C.getsockname(fd, src, len) == 0)
      local sport = swap16(src.port)
      local dst = sockaddr("127.0.0.1", lport)
      assert(C.connect(fd, dst, ffi.sizeof(dst)) == 0)
      local sent = 0
      for k = 0, 2 do
        local msg = v5(k * 5 + 1, 5, sent)
        assert(C.send(fd, msg, #msg, 0) == #msg)
        sent = sent + 5
      end
      C.close(fd)
      local key = '{exporter="127.0.0.1:' .. sport .. '"}'
      local body
      wait_for(function()
        local code
        code, body = fetch(mport)
        return code == 200 and samples(body)["sluice_exporter_records_total" .. key] == sent
      end, 10, "the exporter's records on /metrics", h)
      check_promtool(body)
      local m = samples(body)
      assert.equal(3, m["sluice_exporter_messages_total" .. key])
      assert.equal(0, m["sluice_exporter_sequence_lost_total" .. key])
      assert.equal(3, m.sluice_collector_messages_total)
      assert.equal(sent, m.sluice_collector_records_total)
      assert.equal(sent, m.sluice_flows_started_total)
      proc.signal(h, S.SL_SIGTERM)
      local r = proc.finish(h, 20)
      assert.equal(0, r.code, run.describe(r))
      local line = r.err:match("\nexporter 127%.0%.0%.1:" .. sport .. " ([^\n]*)")
      assert(line, r.err)
      assert.equal(m["sluice_exporter_messages_total" .. key], tonumber(line:match("messages (%d+)")))
      assert.equal(m["sluice_exporter_records_total" .. key], tonumber(line:match("records (%d+)")))
    end)

    it("2500 exporters: a scrape gets the whole text (over 3 MB) and promtool accepts it", function()
      if not run.have("curl") then pending("curl is not installed") return end
      local dir = run.tmpdir()
      local lport, mport = free_port(S.SL_SOCK_DGRAM), free_port()
      local h = proc.spawn(string.format("%s collect --listen udp:127.0.0.1:%d --metrics 127.0.0.1:%d " ..
        "-q --out json:/dev/null", SLUICE, lport, mport))
      wait_for(function() return fetch(mport) == 200 end, 10, "/metrics of the collector", h)
      local N = 2500
      local dst = sockaddr("127.0.0.1", lport)
      for i = 0, N - 1 do -- each from its own address: its own exporter
        local fd = C.socket(S.SL_AF_INET, S.SL_SOCK_DGRAM, 0)
        local src = sockaddr(string.format("127.2.%d.%d", math.floor(i / 250), i % 250 + 1), 0)
        assert(C.bind(fd, src, ffi.sizeof(src)) == 0, core.errno_text())
        assert(C.connect(fd, dst, ffi.sizeof(dst)) == 0)
        local msg = v5(1, 1, 0)
        assert(C.send(fd, msg, #msg, 0) == #msg)
        C.close(fd)
        if i % 500 == 499 then sleep(0.05) end -- within the socket buffer
      end
      local r
      wait_for(function()
        r = run.sh(run.PLAIN .. "curl -s -m 20 -o " .. q(dir .. "/m.txt") ..
          " -w '%{http_code} %{size_download}' http://127.0.0.1:" .. mport .. "/metrics")
        local text = run.slurp(dir .. "/m.txt") or ""
        return r.code == 0 and samples(text).sluice_collector_exporters == N
      end, 15, "every exporter on /metrics", h)
      local text = run.slurp(dir .. "/m.txt")
      assert(#text > 3e6, #text)
      assert.equal("200 " .. #text, r.out)
      check_promtool(text)
      proc.signal(h, S.SL_SIGTERM)
      local fin = proc.finish(h, 20)
      assert.equal(0, fin.code, run.describe(fin))
    end)

    it("--workers 2: worker W serves on PORT+W, each its own counters", function()
      local lport, mport = free_port(S.SL_SOCK_DGRAM), free_port()
      local busy = metrics.listen("127.0.0.1:" .. (mport + 1))
      if not busy then pending("port " .. (mport + 1) .. " is taken") return end
      busy:close()
      local h = proc.spawn(string.format("%s collect --workers 2 --listen udp:127.0.0.1:%d " ..
        "--metrics 127.0.0.1:%d -v -q", SLUICE, lport, mport))
      local bodies = {}
      for w = 0, 1 do
        wait_for(function()
          local code
          code, bodies[w] = fetch(mport + w)
          return code == 200
        end, 10, "worker " .. w .. "'s /metrics", h)
        assert.equal(0, samples(bodies[w]).sluice_flows_started_total)
      end
      proc.signal(h, S.SL_SIGTERM)
      local r = proc.finish(h, 20)
      assert.equal(0, r.code, run.describe(r))
      for w = 0, 1 do
        assert.matches(string.format("sluice: metrics on http://127.0.0.1:%d/metrics (worker %d)",
          mport + w, w), r.err, 1, true)
      end
    end)
  end)
end)
