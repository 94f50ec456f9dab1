-- The command line as a library (sluice.cli, sluice.report, sluice.workers),
-- called in this process: the option table and its usage, parsing, the
-- mapping onto sluice.open and engine:run, -o spreading and the reports.
local cli = require "sluice.cli"
local report = require "sluice.report"
local workers = require "sluice.workers"
local core = require "sluice.core"
local sluice = require "sluice"
local run = require "support.run"

local SAMPLE = run.root .. "/examples/sample.pcap"
local SAMPLE_TRUTH = run.root .. "/spec/fixtures/sample.truth.json"

-- A stream that keeps what is written to it.
local function stream()
  local buf = {}
  local s = {}
  function s:write(...)
    for i = 1, select("#", ...) do buf[#buf + 1] = tostring((select(i, ...))) end
    return self
  end
  function s:flush() return self end
  function s.text() return table.concat(buf) end
  return s
end

-- Calls fn with io.stdout and io.stderr captured; returns its results and
-- both texts.
local function captured(fn)
  local out, err = stream(), stream()
  local saved_out, saved_err = io.stdout, io.stderr
  io.stdout, io.stderr = out, err
  local ok, res = pcall(fn)
  io.stdout, io.stderr = saved_out, saved_err
  assert(ok, res)
  return res, out.text(), err.text()
end

local function words(s)
  local t = {}
  for w in s:gmatch("%S+") do t[#t + 1] = w end
  return t
end

local function parse(line, command)
  return cli.parse(words(line), command or "run")
end

describe("sluice.cli", function()
  describe("the usage", function()
    local usage = cli.usage()

    it("shows every option of the table, with its value and description", function()
      local flags = {}
      for _, opt in ipairs(cli.OPTIONS) do
        for _, f in ipairs(opt.flags) do flags[f] = true end
      end
      for _, f in ipairs { "-r", "--read", "-i", "--interface", "--listen", "--backend", "--filter",
        "--snaplen", "--no-promisc", "--ignore-outgoing", "--ring-block-size", "--ring-blocks",
        "--ring-frame-size", "--ring-timeout", "--xdp-mode", "--zero-copy", "--queue", "--idle-exit",
        "--template-timeout", "--rcvbuf", "--collector-memory", "--tcp-idle-timeout", "--slice", "--idle-timeout", "--active-timeout",
        "--pool-flows", "--max-flows", "--low-flows", "--grace", "-o", "--option", "--out", "--rotate",
        "--state", "--state-interval", "--on-error", "--on-lag", "--workers", "--user", "--stats",
        "-v", "--verbose", "-q", "--quiet", "-h", "--help" } do
        assert(flags[f], "the table lacks " .. f)
      end
      for _, opt in ipairs(cli.OPTIONS) do
        local head = table.concat(opt.flags, ", ") .. (opt.value and (" " .. opt.value) or "")
        assert(usage:find("\n  " .. head .. " ", 1, true) or usage:find("\n  " .. head .. "\n", 1, true),
          "usage lacks " .. head)
        -- the description's first words follow (wrapped at most once before them)
        local first = opt.help:match("^(%S+%s+%S+)")
        assert(usage:find(first, 1, true), "usage lacks the description of " .. head .. ": " .. first)
      end
    end)

    it("has the command lines, the groups and --on-lag's description", function()
      assert.truthy(usage:find("^usage: sluice run %[POLICY%.lua %.%.%.%] %(%-r FILE | %-i IFACE%)"))
      assert.truthy(usage:find("sluice collect [POLICY.lua ...] --listen udp:ADDR:PORT", 1, true))
      for _, g in ipairs(cli.GROUPS) do
        assert.truthy(usage:find("\n" .. g[2] .. ":\n", 1, true), "group " .. g[2])
      end
      local flat = usage:gsub("%s+", " ")
      assert.truthy(flat:find("--on-lag wait|drop what a full output queue does: wait (the default " ..
        "when reading files: nothing is lost) or drop and count (the default for live capture " ..
        "and collect, where waiting only moves the loss into the kernel)", 1, true))
      assert.truthy(flat:find("--listen udp:ADDR:PORT where to listen", 1, true))
      assert.truthy(flat:find("[collect]", 1, true), "options of one command are marked")
      assert.truthy(flat:find("json:PATH, json:- JSON lines file, stdout", 1, true))
      -- --workers says how each input is read, as the README does (not
      -- that every worker reads every file)
      local workers_help = flat:match("%-%-workers N (.-) %-%-user")
      assert.truthy(workers_help:find("one plain pcap file is read once for all", 1, true), workers_help)
      assert.truthy(workers_help:find("a stream (stdin, a FIFO) is read once by the parent and " ..
        "copied to each worker", 1, true), workers_help)
      assert.truthy(workers_help:find("other inputs are read whole by each worker", 1, true), workers_help)
      assert.falsy(workers_help:find("read by every worker", 1, true), workers_help)
    end)

    it("fits a terminal and groups every option", function()
      for line in usage:gmatch("[^\n]+") do
        assert(#line <= 80, "line too long: " .. line)
      end
      local groups = {}
      for _, g in ipairs(cli.GROUPS) do groups[g[1]] = true end
      for _, opt in ipairs(cli.OPTIONS) do
        assert(groups[opt.group], opt.flags[1] .. ": unknown group " .. tostring(opt.group))
        assert(opt.commands == "run" or opt.commands == "collect" or opt.commands == "both",
          opt.flags[1] .. ": commands")
      end
    end)
  end)

  describe("parse", function()
    it("a file run: inputs, flow table and switches land where they go", function()
      local o = assert(parse("top.lua -r x.pcap --slice 5 --active-timeout 600 --pool-flows 1000 " ..
        "--max-flows 900 --low-flows 800 --grace 2 -v -q other.lua"))
      assert.are.equal("run", o.command)
      assert.are.same({ "top.lua", "other.lua" }, o.policies)
      assert.are.same({ read = { "x.pcap" }, slice = "5", active_timeout = "600", pool_flows = "1000",
        max_flows = "900", low_flows = "800", grace = "2" }, o.open)
      assert.is_true(o.verbose)
      assert.is_true(o.quiet)
      assert.are.equal(1, o.workers, "--workers defaults to 1")
      assert.are.same({ { kind = "json", path = "-" } }, o.outs, "--out defaults to json:-")
      assert.are.same({ promisc = true }, o.live)
      assert.are.same({}, o.run)
    end)

    it("repeatable options: --idle-timeout (also NAME=VALUE inline), -o, --out", function()
      local args = { "-r", "x", "--idle-timeout=udp=1", "--idle-timeout", "tcp=30", "-o", "top=5",
        "--option", "dns.n=2", "--out", "json:a.json", "--out=pcap:b.pcap", "--out",
        "ipfix:tcp:h:4739", "--out", "ipfix:h:2055" }
      local copy = { unpack(args) }
      local o = assert(cli.parse(args, "run"))
      assert.are.same(copy, args, "parse leaves its arguments alone")
      assert.are.same({ udp = "1", tcp = "30" }, o.open.idle_timeout)
      assert.are.same({ { name = "top", value = "5" }, { name = "dns.n", value = "2" } }, o.options)
      assert.are.same({ { kind = "json", path = "a.json" }, { kind = "pcap", path = "b.pcap" },
        { kind = "ipfix", collector = "h:4739", transport = "tcp" },
        { kind = "ipfix", collector = "h:2055", transport = "udp" } }, o.outs)
    end)

    it("--filter goes to sluice.open with a file too (the core filters it)", function()
      local o = assert(parse("-r x.pcap --filter tcp"))
      assert.are.same({ read = { "x.pcap" }, filter = "tcp" }, o.open)
      assert.are.same({ read = { "x.pcap" }, filter = "tcp" }, cli.open_options(o, 0))
    end)

    it("-r is repeatable: several captures and directories, in the order given", function()
      local o = assert(parse("-r b.pcap --read a.pcap.gz -r dumps/ -r -"))
      assert.are.same({ read = { "b.pcap", "a.pcap.gz", "dumps/", "-" } }, o.open)
    end)

    it("live capture options, converted where needed", function()
      local o = assert(parse("-i eth0 --backend afpacket --filter tcp --snaplen 128 --no-promisc " ..
        "--ignore-outgoing --ring-block-size 4096 --ring-blocks 8 --ring-frame-size 2048 " ..
        "--ring-timeout 50 --workers 4 --user nobody --stats 10s"))
      assert.are.same({ interface = "eth0", backend = "afpacket", filter = "tcp" }, o.open)
      assert.are.same({ snaplen = "128", promisc = false, ignore_outgoing = true, block_size = "4096",
        block_count = "8", frame_size = "2048", block_timeout = "50ms" }, o.live)
      assert.are.equal(4, o.workers)
      assert.are.equal("nobody", o.user)
      assert.are.equal(10, o.stats)
      o = assert(parse("-i eth0 --backend afxdp --xdp-mode skb --zero-copy off --queue 3"))
      assert.are.same({ promisc = true, xdp_mode = "skb", zero_copy = "off", queue = "3" }, o.live)
    end)

    it("engine:run options: --on-error, --on-lag, --state-interval", function()
      local o = assert(parse("-r x --on-error skip --on-lag drop --state s.json --state-interval 5m"))
      assert.are.same({ on_error = "skip", on_lag = "drop", state_interval = 300 }, o.run)
      assert.are.equal("s.json", o.state)
      o = assert(parse("-i eth0 --on-lag=wait"))
      assert.are.equal("wait", o.run.on_lag)
      assert.is_nil(assert(parse("-r x")).run.on_lag, "no --on-lag: the source's default")
    end)

    it("collect: --listen repeatable, collector options, --workers", function()
      local o = assert(parse("p.lua --listen udp:0.0.0.0:2055 --listen tcp:[::1]:4739 --idle-exit 2 " ..
        "--template-timeout 60 --rcvbuf 1048576 --collector-memory 64M --tcp-idle-timeout 2m " ..
        "--workers 2", "collect"))
      assert.are.equal("collect", o.command)
      assert.are.same({ listen = { "udp:0.0.0.0:2055", "tcp:[::1]:4739" }, idle_exit = 2,
        template_timeout = 60, rcvbuf = 1048576, collector_memory = 64 * 1024 * 1024,
        tcp_idle_timeout = 120 }, o.open)
      -- sizes as --collector-memory takes them; durations checked here,
      -- named by their flag (sluice.open's names were said before)
      assert.are.equal(16 * 1024 * 1024, assert(parse("--listen udp:0.0.0.0:2055 --rcvbuf 16M",
        "collect")).open.rcvbuf)
      local _, e0 = parse("--listen udp:0.0.0.0:2055 --idle-exit 0", "collect")
      assert.are.equal("--idle-exit expects a positive duration", e0)
      assert.are.equal(2, o.workers)
      local _, err = parse("--listen udp:0.0.0.0:2055 --collector-memory 1K", "collect")
      assert.are.equal("--collector-memory expects a size of at least 64K (256M, 1G)", err)
      _, err = parse("--listen udp:0.0.0.0:2055 --tcp-idle-timeout 0", "collect")
      assert.are.equal("--tcp-idle-timeout expects a positive duration", err)
      _, err = parse("-r x --collector-memory 64M")
      assert.truthy(err and err:find("collect", 1, true), err)
    end)

    it("--help stops at once, whatever follows", function()
      local o = assert(parse("-r x --help --bogus"))
      assert.is_true(o.help)
      assert.is_true(assert(parse("-h", "collect")).help)
    end)

    -- the messages the command line prints (exit 2, "try 'sluice --help'")
    local LISTEN = "--listen expects udp:ADDR:PORT or tcp:ADDR:PORT (numeric ADDR or localhost, IPv6 as [ADDR]:PORT, PORT 1..65535), got '"
    local BAD = {
      { "-r x.pcap --frobnicate", "unknown option --frobnicate" },
      { "-r x.pcap --frobnicate=3", "unknown option --frobnicate" },
      { "-r", "-r needs a value" },
      { "-r x.pcap --slice", "--slice needs a value" },
      { "--read", "--read needs a value" },
      { "", "run needs one input: -r FILE or -i IFACE" },
      { "--slice 5", "run needs one input: -r FILE or -i IFACE" },
      { "-r x.pcap -i eth0", "run needs one input: -r FILE or -i IFACE" },
      { "-r x.pcap --backend pcap", "--backend applies to live capture (-i)" },
      { "-i eth0 --workers 0", "--workers must be 1..64" },
      { "-i eth0 --workers 65", "--workers must be 1..64" },
      { "-i eth0 --workers 1.5", "--workers must be 1..64" },
      { "-i eth0 --workers many", "--workers must be 1..64" },
      -- integers are plain decimal digits (tonumber took these)
      { "-i eth0 --workers 0x2", "--workers must be 1..64" },
      { "-i eth0 --workers 1e1", "--workers must be 1..64" },
      { "-i eth0 --workers +2", "--workers must be 1..64" },
      { "-r x.pcap --export-rate 1e3", "--export-rate must be 0..4294967295" },
      { "-r x.pcap --export-rate -1", "--export-rate must be 0..4294967295" },
      { "-i eth0 --snaplen 0x100", "--snaplen expects a whole number (decimal digits)" },
      { "-i eth0 --ring-block-size 1e6", "--ring-block-size expects a whole number (decimal digits)" },
      { "-i eth0 --ring-blocks +8", "--ring-blocks expects a whole number (decimal digits)" },
      { "-i eth0 --ring-frame-size 2048.0", "--ring-frame-size expects a whole number (decimal digits)" },
      { "-i eth0 --queue -1", "--queue expects a whole number (decimal digits)" },
      { "-r x.pcap --pool-flows 1e6", "--pool-flows expects a whole number (decimal digits)" },
      { "-r x.pcap --max-flows 0x100", "--max-flows expects a whole number (decimal digits)" },
      { "-r x.pcap --max-flows 100 --low-flows 5e1", "--low-flows expects a whole number (decimal digits)" },
      { "--listen udp:1.2.3.4:5 --rcvbuf 8e6", "--rcvbuf expects a size (bytes, or 512K, 8M, 1G)", "collect" },
      { "-i eth0 --backend pcap --workers 2",
        "--workers needs --backend afpacket (fanout) or afxdp (one queue each)" },
      { "-r x.pcap --on-lag later", "--on-lag is wait or drop" },
      { "-r x.pcap --on-lag=", "--on-lag is wait or drop" },
      { "-r x.pcap --on-error retry", "--on-error is abort or skip" },
      { "-r x.pcap --state-interval 5", "--state-interval needs --state FILE" },
      { "-r x.pcap --state s --state-interval 0", "--state-interval expects a positive duration" },
      { "-r x.pcap --state s --state-interval soon", "--state-interval expects a positive duration" },
      { "-r x.pcap --stats 0", "--stats expects a positive duration" },
      { "-r x.pcap --idle-timeout udp", "--idle-timeout expects PROTO=SECONDS, e.g. tcp=300" },
      { "-r x.pcap -o top", "-o expects NAME=VALUE" },
      { "-r x.pcap --option =3", "-o expects NAME=VALUE" },
      { "-r x.pcap --out foo", "--out expects json:PATH, pcap:PATH, ipfix:HOST:PORT or " ..
        "clickhouse:http://HOST:PORT/DB.TABLE, got 'foo'" },
      { "-r x.pcap --out ipfix:host", "--out ipfix: expects HOST:PORT (port 1..65535), got 'host'" },
      { "-r x.pcap --out ipfix:tcp:host", "--out ipfix: expects HOST:PORT (port 1..65535), got 'tcp:host'" },
      { "-r x.pcap --out ipfix:127.0.0.1:0", "--out ipfix: expects HOST:PORT (port 1..65535), got '127.0.0.1:0'" },
      { "-r x.pcap --out ipfix:tcp:h:99999",
        "--out ipfix: expects HOST:PORT (port 1..65535), got 'tcp:h:99999'" },
      { "-r x.pcap --rotate 0", "--rotate expects a size (500K, 100M, 1G) or a positive duration " ..
        "(30s, 1h), got '0'" },
      { "-r x.pcap --rotate 1x", "--rotate expects a size (500K, 100M, 1G) or a positive duration " ..
        "(30s, 1h), got '1x'" },
      { "-r x.pcap --rotate 10k", "--rotate cannot rotate stdout (json:-, the default --out): " ..
        "give --out json:PATH" },
      { "-r x.pcap --rotate 1h --out json:a --out json:-", "--rotate cannot rotate stdout (json:-, " ..
        "the default --out): give --out json:PATH" },
      { "-r x.pcap --rotate 1h --out pcap:a", "--rotate applies to json:PATH outputs" },
      { "-r x.pcap --user sluice-no-such-user-x", "--user: no user named 'sluice-no-such-user-x'" },
      { "-r x.pcap --verbose=1", "--verbose takes no value" },
      { "-r x.pcap --listen udp:1.2.3.4:5", "unknown option --listen" },
      { "-r x.pcap --idle-exit 3", "unknown option --idle-exit" },
      { "--listen udp:127.0.0.1", LISTEN .. "udp:127.0.0.1'", "collect" },
      { "--listen udp:127.0.0.1:0", LISTEN .. "udp:127.0.0.1:0'", "collect" },
      { "--listen udp:127.0.0.1:65536", LISTEN .. "udp:127.0.0.1:65536'", "collect" },
      { "--listen udp:127.0.0.1:-1", LISTEN .. "udp:127.0.0.1:-1'", "collect" },
      { "--listen udp:127.0.0.1:22x", LISTEN .. "udp:127.0.0.1:22x'", "collect" },
      { "--listen udp:[::1", LISTEN .. "udp:[::1'", "collect" },
      { "--listen sctp:127.0.0.1:5", LISTEN .. "sctp:127.0.0.1:5'", "collect" },
      { "--listen udp:host.example:5", LISTEN .. "udp:host.example:5'", "collect" },
      { "--listen unix:/tmp/x", LISTEN .. "unix:/tmp/x'", "collect" },
      { "", "collect needs --listen udp:ADDR:PORT (or tcp:ADDR:PORT)", "collect" },
      { "--slice 5 -v", "collect needs --listen udp:ADDR:PORT (or tcp:ADDR:PORT)", "collect" },
      { "--listen udp:1.2.3.4:5 -r x.pcap", "collect takes --listen, not -r, -i, --backend, --filter, --features, --dpi or --tunnels",
        "collect" },
      { "--listen udp:1.2.3.4:5 --backend pcap",
        "collect takes --listen, not -r, -i, --backend, --filter, --features, --dpi or --tunnels", "collect" },
      { "--listen udp:1.2.3.4:5 --workers 99", "--workers must be 1..64", "collect" },
      -- options that would do nothing (issue 11)
      { "-r x.pcap --snaplen 100", "--snaplen applies to live capture (-i)" },
      { "-r x.pcap --ring-blocks 4", "--ring-blocks applies to live capture (-i)" },
      { "-r x.pcap --ring-timeout 5", "--ring-timeout applies to live capture (-i)" },
      { "-r x.pcap --xdp-mode skb", "--xdp-mode applies to live capture (-i)" },
      { "-r x.pcap --queue 1", "--queue applies to live capture (-i)" },
      { "-r x.pcap --no-promisc", "--no-promisc applies to live capture (-i)" },
      { "--listen udp:1.2.3.4:5 --snaplen 9", "--snaplen applies to live capture (-i)", "collect" },
      -- another backend's options (they were ignored without a word)
      { "-i eth0 --backend pcap --ring-blocks 4", "--ring-blocks applies to --backend afpacket " ..
        "(this capture uses pcap)" },
      { "-i eth0 --backend afxdp --ring-timeout 5", "--ring-timeout applies to --backend afpacket " ..
        "(this capture uses afxdp)" },
      { "-i eth0 --queue 1", "--queue applies to --backend afxdp (this capture uses afpacket)" },
      { "-i eth0 --backend pcap --zero-copy on", "--zero-copy applies to --backend afxdp " ..
        "(this capture uses pcap)" },
      { "-r x.pcap --out json:a --out json:a", "--out json:a is given twice" },
      { "-r - -r -", "-r - is given twice" },
      { "-r - -r /dev/stdin", "-r /dev/stdin is given twice" },
      { "-r a.pcap -r b.pcap -r a.pcap", "-r a.pcap is given twice" },
      { "-i eth0 --backend afxdp --user nobody", "--user cannot be used with --backend afxdp (the " ..
        "XDP program must be detached at exit, which needs the privileges --user gives up)" },
      { "-r x.pcap --out ipfix:h:1 --out ipfix:udp:h:1", "--out ipfix:udp:h:1 is given twice" },
      -- one file however spelt (two writers overwrote each other, each
      -- reporting every record written)
      { "-r x.pcap --out json:a.json --out json:./a.json", "--out json:./a.json writes the file of " ..
        "--out json:a.json" },
      { "-r x.pcap --out json:a.json --out pcap:a.json", "--out pcap:a.json writes the file of " ..
        "--out json:a.json" },
      { "-r x.pcap -r ./x.pcap", "-r ./x.pcap is given twice" },
    }
    for _, case in ipairs(BAD) do
      it("refuses " .. (case[3] or "run") .. " " .. case[1], function()
        local o, err = parse(case[1], case[3])
        assert.is_nil(o)
        assert.are.equal(case[2], err)
      end)
    end

    it("integer options: spaces around the digits are refused; digits alone are taken", function()
      for _, v in ipairs { " 2", "2 ", "\t2", "2\n" } do
        local o, err = cli.parse({ "-i", "eth0", "--workers", v }, "run")
        assert.is_nil(o, v)
        assert.are.equal("--workers must be 1..64", err)
        o, err = cli.parse({ "-i", "eth0", "--snaplen", v }, "run")
        assert.is_nil(o, v)
        assert.are.equal("--snaplen expects a whole number (decimal digits)", err)
      end
      local o = assert(cli.parse({ "-i", "eth0", "--workers", "08", "--export-rate", "0" }, "run"))
      assert.are.equal(8, o.workers)
      assert.are.equal(0, o.export_rate)
    end)

    it("every option: a missing value is named; an option of the other command is refused", function()
      for _, opt in ipairs(cli.OPTIONS) do
        for _, command in ipairs { "run", "collect" } do
          for _, flag in ipairs(opt.flags) do
            local o, err = cli.parse({ flag }, command)
            local mine = opt.commands == "both" or opt.commands == command
            if not mine then
              assert.is_nil(o, flag .. " in " .. command)
              assert(err == "unknown option " .. flag or err:find("^collect takes %-%-listen, not "),
                flag .. " in " .. command .. ": " .. tostring(err))
            elseif opt.value then
              assert.is_nil(o, flag)
              assert.are.equal(flag .. " needs a value", err)
            elseif not opt.stop then
              -- a switch alone: only the input is missing
              assert.is_nil(o, flag)
              assert.truthy(err:find("needs"), flag .. ": " .. tostring(err))
            end
          end
        end
      end
    end)

    it("raises for misuse", function()
      assert.has_error(function() cli.parse("-r x", "run") end)
      assert.has_error(function() cli.parse({}, "info") end)
    end)
  end)

  describe("parse_out", function()
    it("json, pcap and ipfix over UDP or TCP", function()
      assert.are.same({ kind = "json", path = "-" }, cli.parse_out("json:-"))
      assert.are.same({ kind = "pcap", path = "/tmp/a:b.pcap" }, cli.parse_out("pcap:/tmp/a:b.pcap"))
      assert.are.same({ kind = "ipfix", collector = "[::1]:4739", transport = "udp" },
        cli.parse_out("ipfix:udp:[::1]:4739"))
      local o, err = cli.parse_out("csv:x")
      assert.is_nil(o)
      assert.are.equal("--out expects json:PATH, pcap:PATH, ipfix:HOST:PORT or " ..
        "clickhouse:http://HOST:PORT/DB.TABLE, got 'csv:x'", err)
    end)
    it("clickhouse: the url, and a name without the credentials", function()
      assert.are.same({ kind = "clickhouse", url = "http://u:pw@h:8123/db.t",
        where = "clickhouse:http://h:8123/db.t" }, cli.parse_out("clickhouse:http://u:pw@h:8123/db.t"))
      assert.are.same({ kind = "clickhouse", url = "http://h:8123",
        where = "clickhouse:http://h:8123/default.flows" }, cli.parse_out("clickhouse:http://h:8123"))
      local o, err = cli.parse_out("clickhouse:ftp://u:pw@h/x")
      assert.is_nil(o)
      assert.falsy(err:find("pw", 1, true), err)
      o, err = cli.parse_out("clickhouse:http://h:1/a.b.c")
      assert.is_nil(o)
      assert.truthy(err:find("DB.TABLE", 1, true), err)
    end)
  end)

  describe("-o spreading", function()
    local paths = { "/p/top.lua", "/p/dns.lua" }
    local loaded = {
      { info = { options = { n = {}, top = {} } } },
      { info = { options = { n = {}, names = {} } } },
    }
    local function o(list)
      local t = {}
      for _, s in ipairs(list) do
        local name, value = s:match("^(.-)=(.*)$")
        t[#t + 1] = { name = name, value = value }
      end
      return t
    end

    it("a plain NAME goes to every policy declaring it", function()
      assert.are.same({ { n = "1", top = "3" }, { n = "1" } },
        cli.spread_options(paths, loaded, o { "n=1", "top=3" }))
      assert.are.same({ {}, { names = "x" } }, cli.spread_options(paths, loaded, o { "names=x" }))
    end)

    it("POLICY.NAME targets one policy, declared or not (the policy checks)", function()
      assert.are.same({ { n = "7" }, {} }, cli.spread_options(paths, loaded, o { "top.n=7" }))
      assert.are.same({ {}, { bogus = "1" } }, cli.spread_options(paths, loaded, o { "dns.bogus=1" }))
      -- a name with dots: the option is what follows the last one
      local dotted = { { info = { name = "acme.dns", options = { n = {} } } } }
      assert.are.same({ { n = "2" } }, cli.spread_options({ "x.lua" }, dotted, o { "acme.dns.n=2" }))
    end)

    it("an unknown name lists the known ones; an unknown policy is named", function()
      local per, err = cli.spread_options(paths, loaded, o { "nosuch=1" })
      assert.is_nil(per)
      assert.are.equal("-o nosuch: no policy declares option 'nosuch' (known: n, n, names, top)", err)
      per, err = cli.spread_options(paths, loaded, o { "nopolicy.top=3" })
      assert.is_nil(per)
      assert.are.equal("-o nopolicy.top: no policy named 'nopolicy' (known: top, dns)", err)
      per, err = cli.spread_options({}, {}, o { "top=3" })
      assert.is_nil(per)
      assert.are.equal("-o top: no policy declares option 'top' (known: none)", err)
    end)
  end)

  describe("mapping onto the library", function()
    it("sluice.open options: flow table options, --idle-timeout as a table", function()
      local o = assert(parse("-r x.pcap --idle-timeout udp=30 --idle-timeout tcp=5m --slice 10 " ..
        "--max-flows 100"))
      assert.are.same({ read = { "x.pcap" }, idle_timeout = { udp = "30", tcp = "5m" }, slice = "10",
        max_flows = "100" }, cli.open_options(o, 0))
      -- and sluice.open takes them
      o = assert(parse("-r " .. SAMPLE .. " --idle-timeout udp=30 --slice 10"))
      local eng = assert(sluice.open(cli.open_options(o, 0)))
      eng:close()
      -- --max-flows under 10 alone: 90% of it was itself, and the engine
      -- was refused ("cannot create engine: Invalid argument")
      eng = assert(sluice.open(cli.open_options(assert(parse("-r " .. SAMPLE .. " --max-flows 9")), 0)))
      eng:close()
      -- a table larger than memory: the error names the option to lower
      local big, err = sluice.open(cli.open_options(assert(parse("-r " .. SAMPLE ..
        " --pool-flows 2000000000")), 0))
      if big then
        io.stderr:write("cli_lib_spec: 2e9 flow slots were mapped (memory overcommitted): ",
          "no ENOMEM message to check\n")
        big:close()
      else
        assert.are.equal("cannot create engine: Cannot allocate memory for a flow table of " ..
          "2000000000 flows (pool_flows, --pool-flows)", err)
      end
    end)

    it("live capture: the ring options; workers share a fanout group or take a queue each", function()
      local o = assert(parse("-i eth0 --no-promisc --ring-timeout 20"))
      assert.are.same({ interface = "eth0", promisc = false, block_timeout = "20ms" },
        cli.open_options(o, 0))
      o = assert(parse("-i eth0 --workers 3"))
      o.fanout_group = 77
      assert.are.same({ interface = "eth0", promisc = true, worker = 2, workers = 3, fanout_group = 77 },
        cli.open_options(o, 2))
      o = assert(parse("-i eth0 --backend afxdp --queue 4 --workers 2"))
      local t = cli.open_options(o, 1)
      assert.are.equal(5, t.queue, "worker 1 of queue 4")
      assert.is_nil(t.fanout_group)
      assert.are.equal(1, t.worker)
    end)

    it("collect: the listen options, and the worker's share", function()
      local o = assert(parse("--listen udp:127.0.0.1:2055 --rcvbuf 65536 --workers 2",
        "collect"))
      assert.are.same({ listen = { "udp:127.0.0.1:2055" }, rcvbuf = 65536, worker = 1, workers = 2 },
        cli.open_options(o, 1))
      o = assert(parse("--listen udp:127.0.0.1:2055", "collect"))
      assert.are.same({ listen = { "udp:127.0.0.1:2055" } }, cli.open_options(o, 0))
    end)

    it("engine:run options: state per worker, on_error, on_lag, capture_all", function()
      local o = assert(parse("-r x --state s.json --state-interval 30 --on-error skip --on-lag drop " ..
        "--stats 5"))
      assert.are.same({ worker = 0, state = "s.json", state_interval = 30, on_error = "skip",
        on_lag = "drop", progress_interval = 5, signals = true }, cli.run_options(o, 0))
      o = assert(parse("-i eth0 --state s.json --workers 2"))
      assert.are.equal("s.json.1", cli.run_options(o, 1).state)
      o = assert(parse("-r x --out pcap:all.pcap"))
      assert.is_true(cli.run_options(o, 0).capture_all, "the default job writes every packet")
      o = assert(parse("p.lua -r x --out pcap:all.pcap"))
      assert.is_nil(cli.run_options(o, 0).capture_all, "a policy chooses its packets")
      assert.is_nil(cli.run_options(assert(parse("-r x")), 0).capture_all)
    end)

    it("sinks: JSON shared by workers, pcap per worker, IPFIX domain per worker", function()
      local o = assert(parse("-i eth0 --workers 2 --rotate 1h --out json:f.json --out pcap:p.pcap " ..
        "--out ipfix:tcp:h:4739"))
      assert.are.same({
        { kind = "json", name = "f.json", options = { path = "f.json", append = true,
          shared = true, rotate = "1h" } }, -- whichever worker finds it due rotates
        { kind = "pcap", name = "p.pcap", options = { path = "p.pcap.1" } },
        { kind = "ipfix", name = "h:4739", options = { collector = "h:4739", transport = "tcp",
          domain = 1 } },
      }, cli.sink_options(o, 1, true))
      -- workers on a file: each worker its share of the flows
      o = assert(parse("-r x.pcap --workers 3"))
      assert.are.same({ 2, 3 }, { cli.open_options(o, 2).worker, cli.open_options(o, 2).workers })
      o = assert(parse("-r x --out pcap:p.pcap"))
      assert.are.same({ path = "p.pcap" }, cli.sink_options(o, 0, false)[1].options)
      -- --features: the ClickHouse columns and the IPFIX templates follow it
      o = assert(parse("-r x --features stats,splt:5 --out ipfix:h:4739 " ..
        "--out clickhouse:http://h:8123/d.t"))
      local sinks = cli.sink_options(o, 0, false)
      assert.are.same({ "stats", "splt:5" }, sinks[1].options.features)
      assert.are.same({ url = "http://h:8123/d.t", features = { "stats", "splt:5" } }, sinks[2].options)
    end)
  end)

  describe("main", function()
    it("returns 2 for usage errors, with the pointer to --help", function()
      for _, case in ipairs {
        { {}, "sluice: no command given\ntry 'sluice --help'\n" },
        { { "frobnicate", "-r", "x" }, "sluice: unknown command 'frobnicate'\ntry 'sluice --help'\n" },
        { { "run", "-r", SAMPLE, "--on-lag", "x" }, "sluice: --on-lag is wait or drop\ntry 'sluice --help'\n" },
        { { "info" }, "sluice: info expects one policy file\ntry 'sluice --help'\n" },
        { { "run", "-r", SAMPLE, "--slice", "soon" }, "sluice: --slice: expected a " ..
          "duration such as 30, 30s, 5m, 1h, got 'soon'\ntry 'sluice --help'\n" },
        { { "run", "-r", SAMPLE, "--grace", "-1" }, "sluice: --grace: expected a " ..
          "duration such as 30, 30s, 5m, 1h, got '-1'\ntry 'sluice --help'\n" },
      } do
        local code, out, err = captured(function() return cli.main(case[1]) end)
        assert.are.equal(2, code)
        assert.are.equal("", out)
        assert.are.equal(case[2], err)
      end
    end)

    it("--help, --version and info write to stdout and return 0", function()
      local code, out = captured(function() return cli.main { "--help" } end)
      assert.are.equal(0, code)
      assert.are.equal(cli.usage(), out)
      code, out = captured(function() return cli.main { "run", "--help" } end)
      assert.are.equal(0, code)
      assert.are.equal(cli.usage(), out)
      code, out = captured(function() return cli.main { "--version" } end)
      assert.are.equal(0, code)
      assert.are.equal("sluice " .. sluice.version .. "\n", out)
      code, out = captured(function() return cli.main { "info", run.root .. "/examples/top_talkers.lua" } end)
      assert.are.equal(0, code)
      assert.truthy(out:find("^policy top_talkers\n"))
      assert.truthy(out:find("\n  top +integer +default 10"))
    end)

    it("runs a file in this process: 1 for a missing file, 0 and -v's counters otherwise", function()
      local code, _, err = captured(function() return cli.main { "run", "-r", "/nonexistent/x.pcap" } end)
      assert.are.equal(1, code)
      assert.are.equal("sluice: /nonexistent/x.pcap: No such file or directory\n", err)
      local truth = run.decode(run.slurp(SAMPLE_TRUTH))
      code, _, err = captured(function()
        return cli.main { "run", "-r", SAMPLE, "-q", "-v", "--out", "json:/dev/null" }
      end)
      assert.are.equal(0, code, err)
      assert.truthy(err:find("^packets " .. truth.packets .. " bytes "), err)
      assert.truthy(err:find("\nflows " .. truth.flows .. " ended " .. truth.flows .. " ", 1), err)
      assert.truthy(err:find("\nsink json:/dev/null: written " .. truth.flows .. " dropped 0 ", 1, true), err)
    end)
  end)
end)

describe("sluice.report", function()
  it("final counters of a file run, and --stats's line", function()
    local truth = run.decode(run.slurp(SAMPLE_TRUTH))
    local eng = assert(sluice.open { read = SAMPLE, slice = 5 })
    assert(eng:run { on_flow_end = function() end })
    local s = stream()
    report.final_counters(eng, s)
    local lines = {}
    for l in s.text():gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal(3, #lines, s.text())
    assert.truthy(lines[1]:match("^packets " .. truth.packets .. " bytes %d+ not_ip 0 malformed 0$"), lines[1])
    assert.truthy(lines[2]:match("^flows " .. truth.flows .. " ended " .. truth.flows ..
      " %(eof=%d+ [^)]*%) refused 0 trims 0$"), lines[2])
    assert.truthy(lines[3]:match("^slices %d+ records %d+$"), lines[3])
    s = stream()
    report.stats_line(eng, s)
    assert.are.equal(string.format("stats: packets %d received - drops - malformed 0 flows active 0 " ..
      "ended %d\n", truth.packets, truth.flows), s.text())
    eng:close()
  end)

  it("a collector's lines: totals, its state, then each exporter that sent, lost or had " ..
     "something evicted", function()
    local eng = { collector = true, files = function() end }
    function eng.stats()
      return { packets = 0, bytes = 0, not_ip = 0, malformed = 0, malformed_by = {}, flows_started = 4,
        flows_ended = 3, ended_by = { idle = 3 }, flows_refused = 0, trims = 0, slices_closed = 0,
        slice_records = 0, received = 12, records = 40, kernel_drops = 2, flows_active = 1 }
    end
    function eng.exporters()
      return {
        { address = "unknown", port = 0, messages = 0, records = 0, templates = 0, seq_lost = 0,
          seq_resets = 0, held = 0, evicted_templates = 0, evicted_domains = 0, sampled = 0,
          sampling = 0, dropped = {} },
        { address = "192.0.2.1", port = 2055, messages = 12, records = 40, templates = 2,
          seq_lost = 3, seq_resets = 1, held = 0, evicted_templates = 0, evicted_domains = 0,
          sampled = 40, sampling = 100, dropped = {} },
        { address = "192.0.2.2", port = 9995, messages = 0, records = 0, templates = 0,
          seq_lost = 0, seq_resets = 0, held = 5, evicted_templates = 0, evicted_domains = 0,
          sampled = 0, sampling = 0, dropped = { short = 1, no_template = 4 } },
        { address = "192.0.2.3", port = 4739, messages = 0, records = 0, templates = 0,
          seq_lost = 0, seq_resets = 0, held = 0, evicted_templates = 7, evicted_domains = 1,
          sampled = 0, sampling = 0, dropped = {} },
        -- in brackets, as in the metrics' labels (was "::1:38336")
        { address = "2001:db8::1", port = 4739, messages = 1, records = 0, templates = 0,
          seq_lost = 0, seq_resets = 0, held = 0, evicted_templates = 0, evicted_domains = 0,
          sampled = 0, sampling = 0, dropped = {} },
      }
    end
    function eng.collector_state()
      return { memory = 1000, max_memory = 268435456, exporters = 3, domains = 2, templates = 2,
        evicted_exporters = 1, evicted_domains = 1, evicted_templates = 7, expired_templates = 0,
        tcp_open = 1, tcp_accepted = 20, tcp_closed_idle = 2, tcp_closed_limit = 17, tcp_refused = 0 }
    end
    local state = "collector memory 1000 max_memory 268435456 exporters 3 domains 2 templates 2 " ..
      "evicted_exporters 1 evicted_domains 1 evicted_templates 7 expired_templates 0 tcp_open 1 " ..
      "tcp_accepted 20 tcp_closed_idle 2 tcp_closed_limit 17 tcp_refused 0\n"
    local s = stream()
    report.stats_line(eng, s)
    assert.are.equal("stats: messages 12 records 40 socket drops 2 flows active 1 ended 3\n" .. state ..
      "exporter 192.0.2.1:2055 messages 12 records 40 templates 2 seq_lost 3 seq_resets 1 held 0 " ..
      "evicted_templates 0 evicted_domains 0 sampled 40 sampling 100 dropped 0\n" ..
      "exporter 192.0.2.2:9995 messages 0 records 0 templates 0 seq_lost 0 seq_resets 0 held 5 " ..
      "evicted_templates 0 evicted_domains 0 sampled 0 sampling 0 dropped (no_template=4 short=1)\n" ..
      "exporter 192.0.2.3:4739 messages 0 records 0 templates 0 seq_lost 0 seq_resets 0 held 0 " ..
      "evicted_templates 7 evicted_domains 1 sampled 0 sampling 0 dropped 0\n" ..
      "exporter [2001:db8::1]:4739 messages 1 records 0 templates 0 seq_lost 0 seq_resets 0 held 0 " ..
      "evicted_templates 0 evicted_domains 0 sampled 0 sampling 0 dropped 0\n", s.text())
    s = stream()
    report.final_counters(eng, s)
    assert.truthy(s.text():find("\nflows 4 ended 3 (idle=3) refused 0 trims 0\n", 1, true), s.text())
    assert.truthy(s.text():find("\nmessages 12 records 40 socket drops 2\n" .. state ..
      "exporter 192.0.2.1:2055 ", 1, true), s.text())
  end)

  it("counts at or above 2^63 are printed whole, never negative", function()
    local ffi = require "ffi"
    local count_text = require("sluice.core").count_text
    assert.are.equal("18446744073709551615", count_text(ffi.new("uint64_t", 0xffffffffffffffffULL)))
    assert.are.equal("18446744073709551615", count_text(tonumber(ffi.new("uint64_t", 0xffffffffffffffffULL))))
    assert.are.equal("9223372036854775808", count_text(2 ^ 63))
    assert.are.equal("12345", count_text(12345))
    assert.are.equal("0", count_text(ffi.new("uint64_t", 0)))
    local eng = { collector = true, files = function() end }
    function eng.stats()
      return { packets = 2 ^ 64, bytes = 1.5 * 2 ^ 63, not_ip = 0, malformed = 0, malformed_by = {},
        flows_started = 1, flows_ended = 1, ended_by = {}, flows_refused = 0, trims = 0,
        slices_closed = 0, slice_records = 0, received = 1, records = 2, kernel_drops = 0,
        flows_active = 0 }
    end
    function eng.exporters() return {} end
    local s = stream()
    report.final_counters(eng, s)
    assert.truthy(s.text():find("^packets 18446744073709551615 bytes 13835058055282163712 "), s.text())
    assert.falsy(s.text():find("-", 1, true), s.text())
  end)

  it("the progress line", function()
    -- foreign: other workers' packets, which worker 0's line counts too
    local eng = { cstats = { packets = 1500000, foreign = 500000, flows_active = 7 },
      current_file = function() end }
    function eng.progress() return 0.25 end
    local s = stream()
    report.progress_line(eng, core.monotonic() - 1, s)
    -- the flows: worker 0's table's, and said so
    local pkts, pct, mpps, flows = s.text():match("^\r(%d+) packets  +([%d.]+)%%  ([%d.]+) Mpps  (%d+) " ..
      "flows active %(worker 0's%) $")
    assert.are.equal("2000000", pkts, s.text())
    assert.are.equal("25.0", pct)
    assert(tonumber(mpps) > 1 and tonumber(mpps) <= 2, "2 M packets in about a second: " .. mpps)
    assert.are.equal("7", flows)
    -- several captures: the line names the file being read
    function eng.current_file() return "dumps/b.pcap", 2, 5 end
    s = stream()
    report.progress_line(eng, core.monotonic() - 1, s)
    assert.matches("flows active %(worker 0's%)  file 2/5 dumps/b.pcap $", s.text())
  end)

  describe("losses", function()
    local function sink(t)
      local s = { written = 0, dropped_lag = 0, dropped_failed = 0, dropped_unqueueable = 0,
        dropped_at_close = 0, retries = 0 }
      for k, v in pairs(t) do s[k] = v end
      return s
    end
    local function rep()
      return { errors = {
          ["b/on_slice"] = { count = 1, policy = "b", handler = "on_slice", first = "b.lua:2: x" },
          ["a/on_flow_end"] = { count = 3, policy = "a", handler = "on_flow_end", first = "a.lua:9: y" },
        }, dropped_on_error = 2,
        sinks = { ["json:ok"] = sink { written = 10 },
          ["json:slow"] = sink { written = 5, dropped_lag = 4, dropped_at_close = 1, retries = 2 },
          -- the sink's own losses are failed drops (its settle())
          ["ipfix:h"] = sink { written = 7, dropped_failed = 3,
            counts = { lost_records = 3, messages = 2 } } },
        state_error = "cannot save state: disk full" }
    end

    it("prints every loss without -v, and every sink with it", function()
      local s = stream()
      report.losses(rep(), false, s)
      assert.are.equal(
        "sluice: 3 error(s) in policy a, on_flow_end; the first: a.lua:9: y\n" ..
        "sluice: 1 error(s) in policy b, on_slice; the first: b.lua:2: x\n" ..
        "sluice: 2 record(s) emitted by failed handlers dropped\n" ..
        "sink ipfix:h: written 7 dropped 3 (lagging 0, failed 3, unqueueable 0, at close 0) " ..
        "retries 0 (lost_records=3 messages=2)\n" ..
        "sink json:slow: written 5 dropped 5 (lagging 4, failed 0, unqueueable 0, at close 1) " ..
        "retries 2\n" ..
        "sluice: state: cannot save state: disk full\n", s.text())
      s = stream()
      report.losses(rep(), true, s)
      assert.truthy(s.text():find("\nsink json:ok: written 10 dropped 0 (lagging 0, failed 0, " ..
        "unqueueable 0, at close 0) retries 0\n", 1, true), s.text())
    end)

    it("an abort's error is not repeated; nothing lost, nothing printed", function()
      local r = rep()
      r.abort = "policy a: on_flow_end failed: a.lua:9: y"
      local s = stream()
      report.losses(r, false, s)
      assert.falsy(s.text():find("error(s)", 1, true), s.text())
      assert.truthy(s.text():find("^sluice: 2 record%(s%) emitted by failed handlers dropped\n"), s.text())
      s = stream()
      report.losses({ errors = {}, dropped_on_error = 0, sinks = { ["json:-"] = sink { written = 3 } } },
        false, s)
      assert.are.equal("", s.text())
      report.losses(nil, true, s)
      assert.are.equal("", s.text())
    end)
  end)
end)

describe("sluice.workers", function()
  it("drop_privileges: an unknown user is an error, nothing changes", function()
    local ok, err = workers.drop_privileges("sluice-no-such-user-x")
    assert.is_nil(ok)
    assert.are.equal("no user named 'sluice-no-such-user-x'", err)
    assert.has_error(function() workers.drop_privileges(42) end)
  end)

  it("run: misuse raises before anything is started", function()
    assert.has_error(function() workers.run(0, function() return 0 end) end)
    assert.has_error(function() workers.run(1.5, function() return 0 end) end)
    assert.has_error(function() workers.run(2, nil) end)
    assert.are.equal(workers.pid(), workers.pid())
    assert(workers.pid() > 0)
  end)
end)
