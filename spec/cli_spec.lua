-- The command-line tool, scripts/sluice, run as a user runs it.
local run = require "support.run"
local pcap = require "support.pcap"

local SLUICE = run.SLUICE
local SAMPLE = run.root .. "/examples/sample.pcap"
local SAMPLE_TRUTH = run.root .. "/spec/fixtures/sample.truth.json"

local function sluice(args)
  return run.sh(SLUICE .. " " .. args)
end

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

-- Asserts a usage error: exit 2 and stderr containing every needle.
local function usage_error(r, ...)
  assert(r.code == 2, "expected exit 2\n" .. run.describe(r))
  for _, needle in ipairs { ... } do
    assert(has(r.err, needle), "stderr should mention '" .. needle .. "'\n" .. run.describe(r))
  end
end

local function write_policy(dir, name, text)
  return run.spit(dir .. "/" .. name .. ".lua", text)
end

describe("sluice CLI", function()
  teardown(run.cleanup)

  describe("help and version", function()
    it("--help prints the usage and exits 0", function()
      for _, args in ipairs { "--help", "-h", "run --help" } do
        local r = sluice(args)
        assert(r.code == 0, run.describe(r))
        assert(has(r.out, "usage: sluice run"), run.describe(r))
        for _, opt in ipairs { "-r, --read", "--slice", "--idle-timeout", "--out", "-o, --option", "-v" } do
          assert(has(r.out, opt), "help should list " .. opt .. "\n" .. run.describe(r))
        end
      end
    end)

    it("--version prints the version and exits 0", function()
      local r = sluice("--version")
      assert(r.code == 0, run.describe(r))
      assert.is_truthy(r.out:match("^sluice %d+%.%d+%.%d+[%w.+-]*\n$"), run.describe(r))
    end)
  end)

  describe("usage errors exit 2 naming the problem", function()
    it("no command", function()
      local r = sluice("")
      assert(r.code == 2, "sluice without a command should fail with exit 2\n" .. run.describe(r))
      assert(r.err:lower():find("command"), "stderr should say a command is missing\n" .. run.describe(r))
    end)

    it("unknown command", function()
      usage_error(sluice("frobnicate -r x.pcap"), "frobnicate")
    end)

    it("unknown option", function()
      usage_error(sluice("run -r " .. run.q(SAMPLE) .. " --frobnicate"), "--frobnicate")
    end)

    it("missing -r", function()
      usage_error(sluice("run"), "-r")
      usage_error(sluice("run --slice 5"), "-r")
    end)

    it("an option without its value", function()
      usage_error(sluice("run -r"), "-r")
      usage_error(sluice("run -r " .. run.q(SAMPLE) .. " --slice"), "--slice")
    end)

    it("bad --idle-timeout values", function()
      local base = "run -r " .. run.q(SAMPLE) .. " --idle-timeout "
      usage_error(sluice(base .. "udp"), "--idle-timeout")
      usage_error(sluice(base .. "udp=abc"), "udp", "abc")
      usage_error(sluice(base .. "bogus=5"), "bogus")
      usage_error(sluice(base .. "udp=0"), "udp")
      usage_error(sluice(base .. "tcp=-5"), "tcp")
    end)

    it("bad --slice value", function()
      usage_error(sluice("run -r " .. run.q(SAMPLE) .. " --slice soon"), "slice", "soon")
    end)

    it("-o for an option no policy declares", function()
      usage_error(sluice("run -r " .. run.q(SAMPLE) .. " -o top=3"), "top")
      usage_error(sluice("run " .. run.q(run.root .. "/examples/top_talkers.lua") .. " -r " ..
        run.q(SAMPLE) .. " -o nosuch=1"), "nosuch")
      usage_error(sluice("run -r " .. run.q(SAMPLE) .. " -o nopolicy.top=3"), "nopolicy")
    end)
  end)

  describe("errors found before any data (findings B5, B6)", function()
    it("--listen that does not parse, --rotate to stdout, an unknown --user: one message, exit 2", function()
      local dir = run.tmpdir()
      local out = " --out json:" .. run.q(dir .. "/out.json")
      for _, args in ipairs {
        "collect --listen udp:127.0.0.1 --idle-exit 1",
        "collect --listen udp:127.0.0.1:0 --idle-exit 1",
        "collect --listen 'udp:[::1' --idle-exit 1",
        "collect --listen sctp:127.0.0.1:9 --idle-exit 1",
        "run -r " .. run.q(SAMPLE) .. " --rotate 10k",
        "run -r " .. run.q(SAMPLE) .. " --user sluice-no-such-user-x",
      } do
        local r = sluice(args .. (args:find("rotate") and "" or out))
        usage_error(r)
        assert(r.err:match("^sluice: [^\n]+\ntry 'sluice %-%-help'\n$"), run.describe(r))
        assert(not r.err:find("udp:127.0.0.1.*udp:127.0.0.1"), "the value once\n" .. run.describe(r))
        assert.equal("", r.out)
        assert.is_false(run.exists(dir .. "/out.json"), "nothing opened: " .. args)
      end
    end)

    it("--listen localhost is 127.0.0.1, as for --metrics; a port that cannot be bound is one line", function()
      local r = sluice("collect --listen udp:localhost:0 --idle-exit 1 -q --out json:/dev/null")
      usage_error(r, "udp:localhost:0")
      local eng = assert(require("sluice").open { listen = "udp:localhost:49999", idle_exit = "0.1s" })
      eng:close()
      r = sluice("collect --listen udp:localhost:49998 --idle-exit 0.2 -q --out json:/dev/null")
      assert.equal(0, r.code, run.describe(r))
      -- an address this host does not have: the runtime's line, the address once
      r = sluice("collect --listen udp:192.0.2.1:49997 --idle-exit 1 -q --out json:/dev/null")
      assert.equal(1, r.code, run.describe(r))
      assert.equal("sluice: cannot listen on udp:192.0.2.1:49997: Cannot assign requested address\n", r.err)
    end)

    it("--workers 2 with a --listen that cannot be opened: one line before the workers fork", function()
      -- a TCP port in use (held here), and an address this host does not have
      local held, port
      for p = 49900, 49990 do
        held = require("sluice.metrics").listen("127.0.0.1:" .. p)
        if held then port = p break end
      end
      assert(port, "no free port in 49900..49990")
      for _, listen in ipairs { "tcp:127.0.0.1:" .. port, "udp:192.0.2.1:" .. port } do
        local r = sluice("collect --listen " .. listen .. " --workers 2 --idle-exit 1 -q --out json:/dev/null")
        assert.equal(1, r.code, run.describe(r))
        assert(r.err:match("^sluice: cannot listen on " .. listen:gsub("%p", "%%%0") .. ": [^\n]+\n$"),
          run.describe(r))
        assert.falsy(r.err:find("lost", 1, true), run.describe(r))
      end
      held:close()
      -- worker 1's metrics port is the listen port: the same one line
      local r = sluice(string.format("collect --metrics 127.0.0.1:%d --listen tcp:127.0.0.1:%d " ..
        "--workers 2 --idle-exit 1 -q --out json:/dev/null", port, port + 1))
      assert.equal(1, r.code, run.describe(r))
      assert.equal("sluice: cannot listen on tcp:127.0.0.1:" .. (port + 1) .. ": Address already in use\n",
        r.err)
    end)
  end)

  describe("input errors", function()
    it("a file that does not exist: exit 1 naming the path", function()
      local r = sluice("run -r /nonexistent/dir/missing.pcap")
      assert(r.code == 1, run.describe(r))
      assert(has(r.err, "/nonexistent/dir/missing.pcap"), run.describe(r))
    end)

    it("a truncated capture: non-zero exit, yet the flows before the damage are written", function()
      local data = assert(run.slurp(SAMPLE))
      local recs = run.pcap_records(data)
      local truth = run.decode(run.slurp(SAMPLE_TRUTH))
      assert.are.equal(truth.packets, #recs)
      local dir = run.tmpdir()
      -- cut inside record 801's data, then inside record 1201's header
      for _, cut in ipairs { { rec = 801, into = 16 + 20 }, { rec = 1201, into = 9 } } do
        local whole = cut.rec - 1 -- complete records before the cut
        local path = dir .. "/cut" .. cut.rec .. ".pcap"
        run.spit(path, data:sub(1, recs[cut.rec].offset + cut.into))
        local want_bytes = 0
        for i = 1, whole do want_bytes = want_bytes + recs[i].wirelen end
        local r, out = run.sluice_json("-r " .. run.q(path), dir)
        assert(r.code ~= 0, "a truncated file must not exit 0\n" .. run.describe(r))
        assert(r.err:lower():find("truncat"), "stderr should say the file is truncated\n" .. run.describe(r))
        assert(has(r.err, path), "stderr should name the file\n" .. run.describe(r))
        local flows = run.of_type(out, "flow")
        assert(#flows > 0, "no flows written before the damage\n" .. run.describe(r))
        local pkts, bytes = run.flow_totals(flows)
        assert.are.equal(whole, pkts, "packets in the flows = complete records before the cut")
        assert.are.equal(want_bytes, bytes, "bytes in the flows = bytes before the cut")
      end
    end)

    it("a file with a bad magic number: non-zero exit and a clear message", function()
      local dir = run.tmpdir()
      local path = dir .. "/notapcap.pcap"
      run.spit(path, ("this is not a capture file, just text\n"):rep(10))
      local r = sluice("run -r " .. run.q(path))
      assert(r.code ~= 0, run.describe(r))
      assert(has(r.err, path), run.describe(r))
      assert(r.err:lower():find("pcap"), "stderr should say it is not a pcap/pcapng file\n" .. run.describe(r))
      assert.are.equal("", r.out)
    end)

    it("an unsupported link type: non-zero exit, 'link type'", function()
      local dir = run.tmpdir()
      local path = pcap.write({
        { ts = pcap.t(0), frame = ("\0"):rep(60) },
      }, { linktype = 147, path = dir .. "/user0.pcap" }) -- LINKTYPE_USER0
      local r = sluice("run -r " .. run.q(path))
      assert(r.code ~= 0, run.describe(r))
      assert(has(r.err, "link type"), run.describe(r))
      assert(has(r.err, "147"), "stderr should name the link type\n" .. run.describe(r))
    end)
  end)

  describe("output", function()
    it("-v prints the final counters on stderr", function()
      local truth = run.decode(run.slurp(SAMPLE_TRUTH))
      local r = sluice("run -r " .. run.q(SAMPLE) .. " -v -q --out json:/dev/null")
      assert(r.code == 0, run.describe(r))
      assert(r.err:match("packets " .. truth.packets .. "%f[%D]"), run.describe(r))
      assert(r.err:match("malformed 0%f[%D]"), run.describe(r))
      assert(r.err:match("flows " .. truth.flows .. "%f[%D]"), run.describe(r))
      -- and without -v, nothing
      local q = sluice("run -r " .. run.q(SAMPLE) .. " -q --out json:/dev/null")
      assert(q.code == 0 and q.err == "", run.describe(q))
    end)

    it("flow lines carry every documented field", function()
      local r, recs = run.sluice_json("-r " .. run.q(SAMPLE))
      assert(r.code == 0, run.describe(r))
      local flows = run.of_type(recs, "flow")
      assert.are.equal(#recs, #flows, "only flow lines without --slice")
      assert.are.equal(161, #flows)
      local FIELDS = { type = "string", id = "number", proto = "string", ip_version = "number",
        src = "string", sport = "number", dst = "string", dport = "number", vlan = "number",
        first = "number", last = "number", pkts_fwd = "number", pkts_rev = "number",
        bytes_fwd = "number", bytes_rev = "number", tcp_flags_fwd = "number",
        tcp_flags_rev = "number", history = "string", end_reason = "string" }
      local ids, vlans = {}, 0
      for _, f in ipairs(flows) do
        for name, ty in pairs(FIELDS) do
          assert(type(f[name]) == ty, string.format("flow %s: field %s should be a %s, got %s",
            tostring(f.id), name, ty, tostring(f[name])))
        end
        assert(not ids[f.id], "duplicate flow id " .. f.id)
        ids[f.id] = true
        assert(f.ip_version == 4 or f.ip_version == 6)
        assert(f.last >= f.first, "flow " .. f.id .. ": last before first")
        assert(f.pkts_fwd >= 1, "flow " .. f.id .. ": the initiator sent nothing")
        if f.vlan ~= 0 then vlans = vlans + 1 end
      end
      local truth = run.decode(run.slurp(SAMPLE_TRUTH))
      assert.are.equal(truth.flows_vlan, vlans, "flows with a VLAN id")
    end)

    it("--slice 5 writes slice lines whose deltas add up to each flow's totals", function()
      local r, recs = run.sluice_json("-r " .. run.q(SAMPLE) .. " --slice 5")
      assert(r.code == 0, run.describe(r))
      local flows, slices = run.of_type(recs, "flow"), run.of_type(recs, "slice")
      assert.are.equal(161, #flows)
      assert(#slices >= #flows, "at least one slice record per flow")
      local SLICE_FIELDS = { "flow_id", "start", "end", "pkts_fwd", "pkts_rev", "bytes_fwd",
        "bytes_rev", "ip_bytes_fwd", "ip_bytes_rev", "total_pkts_fwd", "total_pkts_rev", "total_bytes_fwd", "total_bytes_rev" }
      local sums, last = {}, {}
      for _, s in ipairs(slices) do
        for _, name in ipairs(SLICE_FIELDS) do
          assert(type(s[name]) == "number", "slice field " .. name .. " missing: " .. run.describe(r))
        end
        assert(math.abs(s["end"] - s.start - 5) < 1e-6, "slice interval is not 5 s")
        assert(math.abs(s.start / 5 - math.floor(s.start / 5 + 0.5)) < 1e-6,
          "slice start not on a 5 s boundary: " .. s.start)
        local t = sums[s.flow_id] or { 0, 0, 0, 0 }
        t[1], t[2] = t[1] + s.pkts_fwd, t[2] + s.pkts_rev
        t[3], t[4] = t[3] + s.bytes_fwd, t[4] + s.bytes_rev
        sums[s.flow_id] = t
        assert.are.same(t, { s.total_pkts_fwd, s.total_pkts_rev, s.total_bytes_fwd, s.total_bytes_rev },
          "running totals of flow " .. s.flow_id)
        assert(not last[s.flow_id] or last[s.flow_id] < s.start, "two slices of one flow in one interval")
        last[s.flow_id] = s.start
      end
      local nflows = 0
      for _, f in ipairs(flows) do
        nflows = nflows + 1
        assert.are.same({ f.pkts_fwd, f.pkts_rev, f.bytes_fwd, f.bytes_rev }, sums[f.id],
          "slice deltas of flow " .. f.id .. " vs its totals")
        sums[f.id] = nil
      end
      assert.are.same({}, sums, "slices of flows that have no flow line")
    end)
  end)

  describe("options", function()
    it("--idle-timeout udp=1 ends a UDP flow that pauses, and only UDP ones", function()
      local dir = run.tmpdir()
      local packets = {}
      local function add(ts, o) packets[#packets + 1] = { ts = pcap.t(ts), frame = pcap.pkt(o) } end
      local A = { src = "10.0.0.1", dst = "10.0.0.2", sport = 1000, dport = 53, proto = "udp", len = 20 }
      local B = { src = "10.0.0.3", dst = "10.0.0.4", sport = 2000, dport = 53, proto = "udp", len = 20 }
      local Ct = { src = "10.0.0.5", dst = "10.0.0.6", sport = 3000, dport = 80, proto = "tcp", flags = 0x10 }
      -- A and the TCP flow pause 5 s; B sends every 0.5 s and keeps the clock going
      add(0, A) add(0, Ct)
      for i = 0, 12 do add(i * 0.5 + 0.01, B) end
      add(5.1, A) add(5.1, Ct)
      table.sort(packets, function(x, y) return x.ts < y.ts end)
      local path = pcap.write(packets, { path = dir .. "/pause.pcap" })

      local function run_with(extra)
        local r, recs = run.sluice_json("-r " .. run.q(path) .. extra, dir)
        assert(r.code == 0, run.describe(r))
        local flows = run.of_type(recs, "flow")
        local idle = {}
        for _, f in ipairs(flows) do
          if f.end_reason == "idle" then idle[#idle + 1] = f end
        end
        return flows, idle
      end

      local flows, idle = run_with("")
      assert.are.equal(3, #flows, "default timeouts: one flow each")
      assert.are.equal(0, #idle, "default timeouts: nothing idles out")

      flows, idle = run_with(" --idle-timeout udp=1")
      assert.are.equal(4, #flows, "udp=1: the paused UDP flow is split in two")
      assert.are.equal(1, #idle, "udp=1: one flow ended idle")
      assert.are.equal("10.0.0.1", idle[1].src)
      assert.are.equal(1, idle[1].pkts_fwd + idle[1].pkts_rev)
      for _, f in ipairs(flows) do
        if f.proto == "tcp" then
          assert.are.equal(2, f.pkts_fwd + f.pkts_rev, "the TCP flow is not split by a UDP timeout")
        end
      end

      -- the same with the = form, and tcp=1 splitting the TCP flow too
      flows, idle = run_with(" --idle-timeout=udp=1 --idle-timeout tcp=1")
      assert.are.equal(5, #flows)
      assert.are.equal(2, #idle)
    end)

    it("-o NAME=VALUE reaches the policy's init, validated and converted", function()
      local dir = run.tmpdir()
      local path = write_policy(dir, "optpol", [[
local P = { info = { options = {
  greeting = { type = "string", default = "hi" },
  n = { type = "number", default = 1 },
  flag = { type = "boolean", default = false },
} } }
function P.init(opts, ctx)
  ctx.emit { type = "init", greeting = opts.greeting, n = opts.n, flag = opts.flag }
end
return P
]])
      local r, recs = run.sluice_json(run.q(path) .. " -r " .. run.q(SAMPLE) ..
        " -o greeting=hello -o n=42 -o flag=true", dir)
      assert(r.code == 0, run.describe(r))
      assert.are.same({ { type = "init", greeting = "hello", n = 42, flag = true } }, recs)

      -- POLICY.NAME targets one policy; unset options take their defaults
      r, recs = run.sluice_json(run.q(path) .. " -r " .. run.q(SAMPLE) .. " -o optpol.n=7", dir)
      assert(r.code == 0, run.describe(r))
      assert.are.same({ { type = "init", greeting = "hi", n = 7, flag = false } }, recs)

      -- a value of the wrong type is refused before any data is read
      r = sluice("run " .. run.q(path) .. " -r " .. run.q(SAMPLE) .. " -o n=many")
      assert(r.code == 2, run.describe(r))
      assert(has(r.err, "'n'") and has(r.err, "many"), run.describe(r))
    end)

    it("a policy error in on_flow_end: non-zero exit, file:line on stderr, earlier output kept", function()
      local dir = run.tmpdir()
      local path = write_policy(dir, "boom", [[
local P = {}
local emit, seen = nil, 0
function P.init(_, ctx) emit = ctx.emit end
function P.on_flow_end(flow)
  seen = seen + 1
  if seen > 5 then error("boom after five flows") end
  emit { type = "seen", id = flow.id }
end
return P
]])
      local r, recs = run.sluice_json(run.q(path) .. " -r " .. run.q(SAMPLE), dir)
      assert(r.code ~= 0, "a policy error must not exit 0\n" .. run.describe(r))
      assert(has(r.err, path .. ":6:"), "stderr should carry the policy's file:line\n" .. run.describe(r))
      assert(has(r.err, "boom after five flows"), run.describe(r))
      assert.are.equal(5, #recs, "the five records emitted before the error")
      for _, rec in ipairs(recs) do
        assert.are.equal("seen", rec.type)
      end
    end)
  end)
end)
