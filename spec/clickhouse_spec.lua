-- The ClickHouse sink (lua/sluice/sinks/clickhouse.lua, core/src/clickhouse.c)
-- end to end, against a real clickhouse-server started on loopback in a
-- temporary directory (spec/support/clickhouse.lua; the Debian package is
-- 18.16, CI installs it, see .ci/deps.sh):
--   - a generated trace inserted: count() of flow rows and the sums of
--     packets and bytes equal the generator's ground truth and sluice's
--     own JSON lines of the same run;
--   - slices (--slice 1): their sums equal the flows';
--   - the server killed (-9) a moment into a run and started again 2 s
--     later: the run ends with exit 0, every flow is there once
--     (count() = truth = uniqExact(batch, row));
--   - replies lost after the server inserted (a proxy closes the
--     connection): the batches are found, not sent again;
--   - no server: a clear error naming the URL, exit non-zero;
--   - a table of another schema: the server's message, losses counted,
--     nothing inserted;
--   - --features stats,splt: the columns' sums and, for 50 flows, their
--     values equal the JSON lines of the same run; slices get 0 and [];
--   - credentials: from the URL or the environment, never printed;
--     a wrong password is the server's message, without the password.
-- Without clickhouse-server (or the generator source) the tests are
-- pending, with the reason written to stderr.
local run = require "support.run"
local proc = require "support.proc"
local ch = require "support.clickhouse"

local q = run.q
-- ~2800 flows in 0.1 s: IPv4 and IPv6, VLANs, TCP, UDP, ICMP
local GEN_ARGS = "-n 50000 -c 500 -s 3"
-- ~27000 flows, for the restart (with 100-row batches: ~270 inserts)
local BIG_ARGS = "-n 400000 -c 5000 -s 5"
-- 10 s of traffic at 2000 pps: several 1 s slices
local SPREAD_ARGS = "-n 20000 -c 300 -r 2000 -s 5"

-- A proxy in front of the server that, for the first N inserts, lets the
-- server insert and then closes the connection without the reply: the
-- sink cannot know whether the batch went in.
local LOSSY_PROXY = [[
import http.client, http.server, socket, sys, urllib.parse
listen, target, drops = int(sys.argv[1]), int(sys.argv[2]), [int(sys.argv[3])]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.fwd(None)
    def do_POST(self):
        self.fwd(self.rfile.read(int(self.headers.get("Content-Length", 0))))
    def fwd(self, body):
        c = http.client.HTTPConnection("127.0.0.1", target)
        hdrs = {k: v for k, v in self.headers.items() if k.lower() == "authorization"}
        c.request(self.command, self.path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        if "INSERT" in urllib.parse.unquote(self.path) and drops[0] > 0:
            drops[0] -= 1
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(r.status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", listen), H).serve_forever()
]]

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

describe("clickhouse sink", function()
  local srv, why, absent

  setup(function()
    srv, why, absent = ch.start()
    if not srv and absent then io.stderr:write("clickhouse_spec: skipping: ", why, "\n") end
  end)

  teardown(function()
    if srv then srv:stop() end
    proc.kill_leftovers()
    run.cleanup()
  end)

  -- installed but not starting is a failure, not a skip
  local function need_server()
    if not srv and not absent then error(why) end
    if not srv then pending(why) end
    return srv ~= nil
  end

  local function sums(tbl, kind)
    local out = srv:query(("SELECT count(), sum(packets), sum(bytes), uniqExact(batch, row) " ..
      "FROM %s WHERE kind = '%s'"):format(tbl, kind))
    local n, p, b, u = out:match("^(%d+)\t(%d+)\t(%d+)\t(%d+)$")
    assert(n, out)
    return tonumber(n), tonumber(p), tonumber(b), tonumber(u)
  end

  it("inserts every flow: count, packets and bytes equal the ground truth and the JSON", function()
    if not need_server() then return end
    local pcap, truth = run.generated(GEN_ARGS, "clickhouse_spec", pending)
    local dir = run.tmpdir()
    local r = run.sh(run.SLUICE .. " run -r " .. q(pcap) .. " -q --out json:" ..
      q(dir .. "/out.json") .. " --out clickhouse:" .. q(srv:url("t1.flows")))
    assert.are.equal(0, r.code, run.describe(r))
    local n, p, b, u = sums("t1.flows", "flow")
    assert.are.equal(truth.flows, n)
    assert.are.equal(truth.packets, p)
    assert.are.equal(truth.bytes_frame, b)
    assert.are.equal(n, u)
    local recs = run.json_lines(dir .. "/out.json")
    local jp, jb = run.flow_totals(recs)
    assert.are.same({ #recs, jp, jb }, { n, p, b })
    -- a flow's columns, as the JSON has them
    local PROTO = { tcp = 6, udp = 17, icmp = 1, icmp6 = 58, ipv6_icmp = 58 }
    for i = 1, #recs, 97 do
      local f = recs[i]
      local row = srv:query(("SELECT src, dst, sport, dport, proto, pkts_fwd, bytes_rev, history, " ..
        "end_reason, start_ns FROM t1.flows WHERE flow_id = %d"):format(f.id))
      local want = { f.src, f.dst, f.sport, f.dport, PROTO[f.proto] or f.proto, f.pkts_fwd,
        f.bytes_rev, f.history, f.end_reason, (string.format("%.6f", f.first):gsub("%.", "")) }
      local got = {}
      for v in (row .. "\t"):gmatch("([^\t]*)\t") do got[#got + 1] = v end
      got[10] = got[10]:sub(1, -4) -- JSON times are microseconds
      for k = 1, 9 do want[k] = tostring(want[k]) end
      assert.are.same(want, got)
    end
  end)

  it("inserts --features stats,splt as columns equal to the JSON of the same run", function()
    if not need_server() then return end
    local pcap = run.generated(GEN_ARGS, "clickhouse_spec", pending)
    local dir = run.tmpdir()
    local r = run.sh(run.SLUICE .. " run -r " .. q(pcap) .. " -q --features stats,splt:12 --out json:" ..
      q(dir .. "/out.json") .. " --out clickhouse:" .. q(srv:url("tf.flows")))
    assert.are.equal(0, r.code, run.describe(r))
    local recs = run.json_lines(dir .. "/out.json")
    assert.is_true(#recs > 1000, #recs .. " flows")
    -- sums over every flow
    local COUNTS = { "bidirectional_syn_packets", "src2dst_ack_packets", "dst2src_fin_packets",
      "bidirectional_rst_packets", "src2dst_psh_packets", "bidirectional_max_ps" }
    local want = {}
    for i, k in ipairs(COUNTS) do
      local sum = 0
      for _, f in ipairs(recs) do sum = sum + assert(f[k], k) end
      want[i] = tostring(sum)
    end
    want[#want + 1] = tostring(#recs)
    local sql = {}
    for i, k in ipairs(COUNTS) do sql[i] = "sum(" .. k .. ")" end
    local got = {}
    for v in (srv:query("SELECT " .. table.concat(sql, ", ") .. ", count() FROM tf.flows") .. "\t")
      :gmatch("([^\t]*)\t") do got[#got + 1] = v end
    assert.are.same(want, got)
    assert.is_true(tonumber(want[1]) > 0, "no SYN counted")
    -- 50 flows, column by column
    local FLOATS = { "bidirectional_mean_ps", "src2dst_stddev_ps", "dst2src_mean_ps",
      "bidirectional_stddev_piat_ms", "src2dst_mean_piat_ms", "dst2src_max_piat_ms",
      "bidirectional_min_piat_ms", "src2dst_min_ps", "dst2src_max_ps" }
    local function close(a, b)
      return math.abs(a - b) <= 1e-9 * math.max(math.abs(a), math.abs(b)) + 1e-12
    end
    local function recorded(arr)
      local out = {}
      for _, v in ipairs(arr) do if v ~= -1 then out[#out + 1] = v end end
      return out
    end
    local function array(text)
      local out = {}
      for v in text:gmatch("[^%[%],]+") do out[#out + 1] = tonumber(v) end
      return out
    end
    local step = math.floor(#recs / 50)
    local checked, nonzero = 0, 0
    for i = 1, #recs, step do
      local f = recs[i]
      local row = srv:query(("SELECT %s, splt_ps, splt_direction, splt_piat_ms FROM tf.flows " ..
        "WHERE flow_id = %d"):format(table.concat(FLOATS, ", "), f.id))
      local cols = {}
      for v in (row .. "\t"):gmatch("([^\t]*)\t") do cols[#cols + 1] = v end
      assert.are.equal(#FLOATS + 3, #cols, row)
      for k, name in ipairs(FLOATS) do
        local a, b = tonumber(cols[k]), f[name]
        assert.is_true(close(a, b), ("flow %d %s: clickhouse %s, json %s"):format(f.id, name, cols[k], tostring(b)))
        if b ~= 0 then nonzero = nonzero + 1 end
      end
      assert.are.same(recorded(f.splt_ps), array(cols[#FLOATS + 1]))
      assert.are.same(recorded(f.splt_direction), array(cols[#FLOATS + 2]))
      local piat, jpiat = array(cols[#FLOATS + 3]), recorded(f.splt_piat_ms)
      assert.are.equal(#jpiat, #piat)
      for k = 1, #piat do assert.is_true(close(piat[k], jpiat[k]), row) end
      checked = checked + 1
    end
    assert.is_true(checked >= 50 and nonzero > checked, checked .. " flows, " .. nonzero .. " non-zero")
    -- no recorded packet lost its place: arrays as long as the flows (12 at most)
    assert.are.equal("0", srv:query("SELECT count() FROM tf.flows WHERE length(splt_ps) != " ..
      "least(packets, 12) OR length(splt_direction) != length(splt_ps) OR " ..
      "length(splt_piat_ms) != length(splt_ps)"))
  end)

  it("gives slices and flows without features 0 and empty arrays in the feature columns", function()
    if not need_server() then return end
    local sample = q(run.root .. "/examples/sample.pcap")
    local r = run.sh(run.SLUICE .. " run -r " .. sample .. " -q --slice 1 --out clickhouse:" ..
      q(srv:url("tg.rows?features=stats,splt")))
    assert.are.equal(0, r.code, run.describe(r))
    assert.are.equal("0", srv:query("SELECT count() FROM tg.rows WHERE bidirectional_max_ps != 0 " ..
      "OR src2dst_mean_piat_ms != 0 OR length(splt_ps) != 0"))
    assert.is_true(tonumber(srv:query("SELECT count() FROM tg.rows WHERE kind = 'slice'")) > 0)
  end)

  it("inserts --dpi labels of flows and slices as the JSON of the same run has them", function()
    if not need_server() then return end
    if not require("sluice.engine").dpi_available() then
      print("clickhouse_spec: --dpi columns skipped: the core was built without nDPI")
      return
    end
    local dir = run.tmpdir()
    local r = run.sh(run.SLUICE .. " run -r " .. q(run.root .. "/examples/sample.pcap") ..
      " -q --dpi --slice 1 --out json:" .. q(dir .. "/out.json") .. " --out clickhouse:" ..
      q(srv:url("td.rows")))
    assert.are.equal(0, r.code, run.describe(r))
    local want = {}
    for _, f in ipairs(run.of_type(run.json_lines(dir .. "/out.json"), "flow")) do
      want[f.id] = table.concat({ f.application_name or "", f.application_category_name or "",
        f.requested_server_name or "" }, "\t")
    end
    local got, named = 0, 0
    local rows = srv:query("SELECT flow_id, application_name, application_category_name, " ..
      "requested_server_name FROM td.rows WHERE kind = 'flow'")
    for line in rows:gmatch("[^\n]+") do
      local id, rest = line:match("^(%d+)\t(.*)$")
      assert.are.equal(want[tonumber(id)], rest, line)
      got = got + 1
      if not rest:match("^\t") then named = named + 1 end
    end
    assert.are.equal(161, got)
    assert.is_true(named >= 146, named .. " flows named")
    -- slices carry their flow's label once it is known: never another one
    assert.are.equal("0", srv:query("SELECT count() FROM td.rows AS s ANY INNER JOIN " ..
      "(SELECT flow_id, application_name AS flow_app FROM td.rows WHERE kind = 'flow') USING flow_id " ..
      "WHERE s.kind = 'slice' AND s.application_name != '' AND s.application_name != flow_app"))
    assert.is_true(tonumber(srv:query("SELECT count() FROM td.rows WHERE kind = 'slice' " ..
      "AND application_name != ''")) > 100)
  end)

  it("takes the flows of --workers 2 on a file, each worker its own batches, once", function()
    if not need_server() then return end
    local pcap, truth = run.generated(GEN_ARGS, "clickhouse_spec", pending)
    local r = run.sh(run.SLUICE .. " run -r " .. q(pcap) .. " -q --workers 2 --out clickhouse:" ..
      q(srv:url("tw.flows") .. "?probe=edge-1"))
    assert.are.equal(0, r.code, run.describe(r))
    local n, p, b, u = sums("tw.flows", "flow")
    assert.are.same({ truth.flows, truth.packets, truth.bytes_frame, truth.flows }, { n, p, b, u })
    assert.are.equal("edge-1\t" .. truth.flows, srv:query("SELECT probe, count() FROM tw.flows GROUP BY probe"))
  end)

  it("inserts slices whose sums equal the flows'", function()
    if not need_server() then return end
    local pcap, truth = run.generated(SPREAD_ARGS, "clickhouse_spec", pending)
    local r = run.sh(run.SLUICE .. " run -r " .. q(pcap) .. " -q --slice 1 --out clickhouse:" ..
      q(srv:url("t2.rows?batch_rows=500")))
    assert.are.equal(0, r.code, run.describe(r))
    local fn, fp, fb = sums("t2.rows", "flow")
    local sn, sp, sb, su = sums("t2.rows", "slice")
    assert.are.equal(truth.flows, fn)
    assert.are.same({ truth.packets, truth.bytes_frame }, { fp, fb })
    assert.are.same({ fp, fb }, { sp, sb })
    assert.are.equal(sn, su)
    assert.is_true(sn > fn, "slices cut flows: " .. sn .. " slices, " .. fn .. " flows")
    -- every slice row lies in its 1 s interval
    assert.are.equal("0", srv:query("SELECT count() FROM t2.rows WHERE kind = 'slice' AND " ..
      "(end_ns - start_ns > 1000000000 OR time_end - time_start > 1)"))
  end)

  it("loses and duplicates nothing when the server is killed and comes back", function()
    if not need_server() then return end
    local pcap, truth = run.generated(BIG_ARGS, "clickhouse_spec", pending)
    local h = proc.spawn(run.SLUICE .. " run -r " .. q(pcap) .. " -v --out clickhouse:" ..
      q(srv:url("t3.flows?batch_rows=100&queue_batches=4")))
    -- a moment into the run: some batches are in
    local ok = false
    for _ = 1, 100 do
      local c = tonumber(srv:query("SELECT count() FROM system.tables WHERE database = 't3'"))
      if c == 1 and tonumber(srv:query("SELECT count() FROM t3.flows")) > 0 then ok = true break end
      run.sh("sleep 0.05")
    end
    assert.is_true(ok, "no rows arrived")
    srv:kill()
    local before = proc.exited(h)
    run.sh("sleep 2")
    assert(srv:restart())
    local r = proc.finish(h, 120)
    assert.is_nil(before, "the run ended before the server was killed: make the trace bigger")
    assert.are.equal(0, r.code, run.describe(r))
    local n, p, b, u = sums("t3.flows", "flow")
    assert.are.equal(truth.flows, n)
    assert.are.equal(n, u)
    assert.are.same({ truth.packets, truth.bytes_frame }, { p, b })
    -- the sink says it retried
    local retries = r.err:match("sink clickhouse:[^\n]*insert_retries=(%d+)")
    assert.truthy(retries and tonumber(retries) > 0, r.err)
  end)

  it("does not send again a batch the server took when the reply was lost", function()
    if not need_server() then return end
    local pcap, truth = run.generated(GEN_ARGS, "clickhouse_spec", pending)
    local dir = run.tmpdir()
    run.spit(dir .. "/proxy.py", LOSSY_PROXY)
    local port = ch.free_port()
    local h = proc.spawn(run.PLAIN .. "python3 " .. q(dir .. "/proxy.py") .. " " .. port .. " " ..
      srv.http .. " 3")
    local ready
    for _ = 1, 100 do
      if run.sh(run.PLAIN .. "curl -s -m 1 http://127.0.0.1:" .. port .. "/").out:match("^Ok%.") then
        ready = true
        break
      end
      run.sh("sleep 0.05")
    end
    assert.is_true(ready, "the proxy did not start: " .. proc.result(h).err)
    local r = run.sh(run.SLUICE .. " run -r " .. q(pcap) .. " -v --out clickhouse:" ..
      q("http://127.0.0.1:" .. port .. "/t7.flows?batch_rows=500"))
    proc.signal(h, 9)
    proc.finish(h, 10)
    assert.are.equal(0, r.code, run.describe(r))
    local n, p, b, u = sums("t7.flows", "flow")
    assert.are.equal(truth.flows, n)
    assert.are.equal(n, u)
    assert.are.same({ truth.packets, truth.bytes_frame }, { p, b })
    local line = ("\n" .. r.err):match("\nsink clickhouse:[^\n]*")
    assert.truthy(line and line:find("found=3", 1, true), r.err)
  end)

  it("says which server it cannot reach, and fails", function()
    local port = ch.free_port()
    local r = run.sh(run.SLUICE .. " run -r " .. q(run.root .. "/examples/sample.pcap") ..
      " -q --out clickhouse:http://127.0.0.1:" .. port .. "/db.t")
    assert.are_not.equal(0, r.code, run.describe(r))
    assert.truthy(has(r.err, "cannot open clickhouse:http://127.0.0.1:" .. port .. "/db.t"), r.err)
    assert.truthy(r.err:lower():find("connect"), r.err)
  end)

  it("stops at a table of another schema with the server's message, losses counted", function()
    if not need_server() then return end
    srv:query("CREATE DATABASE IF NOT EXISTS t5")
    srv:query("CREATE TABLE t5.other (kind String, time_start DateTime, x UInt8) " ..
      "ENGINE = MergeTree() PARTITION BY toYYYYMMDD(time_start) ORDER BY time_start")
    local r = run.sh(run.SLUICE .. " run -r " .. q(run.root .. "/examples/sample.pcap") ..
      " -v --out clickhouse:" .. q(srv:url("t5.other")))
    assert.are_not.equal(0, r.code, run.describe(r))
    assert.truthy(r.err:find("No such column", 1, true) or r.err:find("NO_SUCH_COLUMN", 1, true), r.err)
    local line = ("\n" .. r.err):match("\nsink clickhouse:[^\n]*")
    assert.truthy(line, r.err)
    assert.truthy(line:match("written 0 dropped [1-9]"), line)
    assert.are.equal("0", srv:query("SELECT count() FROM t5.other"))
  end)

  it("takes credentials from the URL or the environment and never prints them", function()
    if not need_server() then return end
    local sample = q(run.root .. "/examples/sample.pcap")
    local auth = ch.USER .. ":" .. ch.PASSWORD
    local r = run.sh(run.SLUICE .. " run -r " .. sample .. " -v --out clickhouse:" ..
      q(srv:url("t6.flows", auth)))
    assert.are.equal(0, r.code, run.describe(r))
    assert.falsy(has(r.err .. r.out, ch.PASSWORD), r.err)
    assert.truthy(tonumber(srv:query("SELECT count() FROM t6.flows")) > 0)
    -- the environment
    r = run.sh("CLICKHOUSE_USER=" .. ch.USER .. " CLICKHOUSE_PASSWORD=" .. q(ch.PASSWORD) .. " " ..
      run.SLUICE .. " run -r " .. sample .. " -v --out clickhouse:" .. q(srv:url("t6.env")))
    assert.are.equal(0, r.code, run.describe(r))
    assert.falsy(has(r.err .. r.out, ch.PASSWORD), r.err)
    -- a wrong password: the server's message, not the password
    r = run.sh(run.SLUICE .. " run -r " .. sample .. " -v --out clickhouse:" ..
      q(srv:url("t6.flows", ch.USER .. ":Wrong-Pw-991")))
    assert.are_not.equal(0, r.code, run.describe(r))
    assert.falsy(has(r.err .. r.out, "Wrong-Pw-991"), r.err)
    assert.truthy(r.err:lower():find("password") or r.err:find("HTTP 401", 1, true)
      or r.err:find("HTTP 516", 1, true), r.err)
    assert.truthy(has(r.err, "clickhouse:http://127.0.0.1:" .. srv.http .. "/t6.flows"), r.err)
  end)
end)

describe("sluice.sink.clickhouse options", function()
  local chs = require "sluice.sinks.clickhouse"
  local sluice = require "sluice"

  it("parses the url: credentials, database, table, parameters", function()
    local u = assert(chs.parse_url("http://us%40er:p%3Aw@db1:8123/net.flows?batch_rows=10&probe=e%201"))
    assert.are.same({ base = "http://db1:8123/", user = "us@er", password = "p:w", database = "net",
      table = "flows", params = { batch_rows = 10, probe = "e 1" } }, u)
    u = assert(chs.parse_url("https://h"))
    assert.are.same({ base = "https://h/", params = {} }, u)
    assert.are.equal("net", assert(chs.parse_url("http://h:1/net")).database)
    for _, bad in ipairs({ "ftp://h/x", "http:///x", "http://h/a.b.c", "http://h/x?nope=1",
      "http://u:secret@h/x?batch_rows=many" }) do
      local ok, err = chs.parse_url(bad)
      assert.is_nil(ok, bad)
      assert.falsy(err:find("secret", 1, true), err)
    end
  end)

  -- a password with an unescaped / ? # or @ (finding B4): split as RFC
  -- 3986 does, or refused; no part of it in any message, ever
  local SECRET_URLS = {
    "http://user:S3cr/etPw@127.0.0.1:1/db.t",
    "http://user:S3cr@etPw@127.0.0.1:1/db.t",
    "http://user:S3cr?etPw@127.0.0.1:1/db.t",
    "http://user:S3cr#etPw@127.0.0.1:1/db.t",
    "http://user:S3cr/et@Pw@127.0.0.1:1/db.t",
    "http://us/er:S3cretPw@127.0.0.1:1/db.t",
    "http://user:S3cr/etPw@127.0.0.1:1/db.t.x",
    "http://user:S3cr/etPw@127.0.0.1:99999/d;b.t",
    "http://user:S3cretPw@127.0.0.1:99999/db.t",
    "http://user:S3cretPw@/db.t",
    "http://user:S3cr/etPw@127.0.0.1:1/db.t?batch_age=-5",
    "http://user:S3cr/etPw@h:1?probe=x@y",
  }
  local PIECES = { "S3cr", "etPw", "et@Pw", "Pw@" }
  local function leaks(text)
    for _, piece in ipairs(PIECES) do
      if text:find(piece, 1, true) then return piece end
    end
  end

  it("splits the userinfo at the last @ before the host, or refuses without quoting it", function()
    local u = assert(chs.parse_url("http://user:p@ss@127.0.0.1:1/db.t"))
    assert.are.equal("user", u.user)
    assert.are.equal("p@ss", u.password)
    assert.are.equal("http://127.0.0.1:1/", u.base)
    assert.are.equal("db", u.database)
    u = assert(chs.parse_url("http://user:pa%2Fss@[::1]:8123/db.t"))
    assert.are.equal("pa/ss", u.password)
    assert.are.equal("http://[::1]:8123/", u.base)
    for _, bad in ipairs { "http://user:pa/ss@h:1/db.t", "http://h:0/db.t", "http://h:99999/db.t",
      "http://h:x/db.t", "http://h:/db.t", "http://[::1/db.t", "http://a b/db.t" } do
      assert.is_nil(chs.parse_url(bad), bad)
    end
    for _, url in ipairs(SECRET_URLS) do
      local ok, err = chs.parse_url(url)
      if not ok then assert.falsy(leaks(err), url .. ": " .. err) end
      ok, err = chs.check_url(url)
      if not ok then assert.falsy(leaks(err), url .. ": " .. err) end
      local cok, cerr = pcall(sluice.sink.clickhouse, { url = url, timeout = "1s" })
      local text = cok and tostring(select(2, sluice.sink.clickhouse { url = url, timeout = "1s" }))
        or tostring(cerr)
      assert.falsy(leaks(text), url .. ": " .. text)
    end
  end)

  it("sluice run: no message shows any part of the password, whatever the url", function()
    local sample = q(run.root .. "/examples/sample.pcap")
    for _, url in ipairs(SECRET_URLS) do
      for _, spec in ipairs { "clickhouse:" .. url, "clickhous:" .. url, "click:house:" .. url } do
        local r = run.sh(run.SLUICE .. " run -r " .. sample .. " -q --out " .. q(spec))
        assert.are_not.equal(0, r.code, run.describe(r))
        assert.falsy(leaks(r.err .. r.out), run.describe(r))
      end
    end
  end)

  it("sluice run: parameters the sink refuses are usage errors, one line and exit 2, before data", function()
    local dir = run.tmpdir()
    for _, url in ipairs { "http://h:1/db.t?batch_age=-5", "http://h:1/db.t?timeout=0",
      "http://h:1/db.t?queue_batches=0", "http://h:1/db.t?batch_rows=0", "http://h:1/db.t?features=bogus",
      "http://h:1/db.t?probe=" .. ("p"):rep(300), "http://h:1/d;b.t", "http://h:1/db.t%20x",
      "http://h:99999/db.t" } do
      local r = run.sh(run.SLUICE .. " run -r " .. q(run.root .. "/examples/sample.pcap") ..
        " --out " .. q("clickhouse:" .. url) .. " --out json:" .. q(dir .. "/out.json"))
      assert.are.equal(2, r.code, run.describe(r))
      assert.truthy(r.err:match("^sluice: %-%-out clickhouse: [^\n]+\ntry 'sluice %-%-help'\n$"),
        run.describe(r))
      assert.falsy(run.exists(dir .. "/out.json"), "nothing read or written: " .. url)
    end
  end)

  it("refuses an unknown option naming it and the known ones", function()
    local ok, err = pcall(function() sluice.sink.clickhouse { url = "http://h:1/d.t", batch_size = 10 } end)
    assert.is_false(ok)
    assert.truthy(err:find("unknown option 'batch_size' (known: batch_age, batch_rows,", 1, true), err)
    assert.truthy(err:find("^[^:]*clickhouse_spec%.lua:%d+: "), "raised at the caller: " .. err)
  end)

  it("refuses bad options as misuse", function()
    assert.has_error(function() sluice.sink.clickhouse {} end)
    assert.has_error(function() sluice.sink.clickhouse { url = "http://h/db-1.t" } end)
    assert.has_error(function() sluice.sink.clickhouse { url = "http://h/d.t", batch_rows = 0 } end)
    assert.has_error(function() sluice.sink.clickhouse { url = "http://h/d.t", batch_rows = 2000000 } end)
    assert.has_error(function() sluice.sink.clickhouse { url = "http://h/d.t", batch_age = "soon" } end)
    assert.has_error(function() sluice.sink.clickhouse { url = "http://h/d.t", features = "nope" } end)
    assert.has_error(function() sluice.sink.clickhouse { url = "http://h/d.t?features=stats,x" } end)
  end)
end)
