-- The command line (scripts/sluice is a thin front to cli.main): one option
-- table, the usage generated from it, the parser, the mapping of parsed
-- options onto sluice.open and engine:run, and the commands.
--
--   local cli = require "sluice.cli"
--   local o, err = cli.parse({ "-r", "x.pcap", "--slice", "5" }, "run")
--   local eng = sluice.open(cli.open_options(o, 0))
--   os.exit(cli.main(arg), true)
local ffi = require "ffi"
local sluice = require "sluice"
local policy = require "sluice.policy"
local json_sink = require "sluice.sinks.json"
local core = require "sluice.core"
local report = require "sluice.report"
local workers = require "sluice.workers"
local signals = require "sluice.signals"
local reload = require "sluice.reload"
local metrics = require "sluice.metrics"
local summary = require "sluice.summary"
local sock = require "sluice.sock"

local C = core.C

local M = {}

-- ---- value parsers: (value, flag) -> parsed [, second] or nil, message ----

local function positive_duration(v, flag)
  local d = policy.parse_duration(v)
  if not d or d <= 0 then return nil, flag .. " expects a positive duration" end
  return d
end

-- --rotate: what sluice.sink.json takes as a string, checked while parsing
-- (a usage error, exit 2, not the sink's at open)
local function rotate_spec(v, flag)
  local d = not policy.parse_size(v) and policy.parse_duration(v)
  if d == false or (d and d > 0) then return v end
  return nil, flag .. " expects a size (500K, 100M, 1G) or a positive duration (30s, 1h), got '" ..
    tostring(v) .. "'"
end

-- --listen: checked as the collector reads it, so a bad address is a usage
-- error before anything is opened (localhost is 127.0.0.1, as for --metrics)
local function listen_spec(v, flag)
  local kind = v:match("^(%a+):")
  if (kind ~= "udp" and kind ~= "tcp") or not sock.parse(v) then
    return nil, flag .. " expects udp:ADDR:PORT or tcp:ADDR:PORT (numeric ADDR or localhost, " ..
      "IPv6 as [ADDR]:PORT, PORT 1..65535), got '" .. v .. "'"
  end
  return v
end

-- --user: a name the system knows, checked before any input is opened
-- (the privileges go later, once the input and outputs are open)
ffi.cdef [[ void *sluice_cli_getpwnam(const char *name) __asm__("getpwnam"); ]]
local function user_name(v, flag)
  if ffi.C.sluice_cli_getpwnam(v) == nil then return nil, flag .. ": no user named '" .. v .. "'" end
  return v
end

-- "a, b or c"
local function alternatives(list)
  return table.concat(list, ", ", 1, #list - 1) .. " or " .. list[#list]
end

local function one_of(...)
  local choices, set = { ... }, {}
  for _, c in ipairs(choices) do set[c] = true end
  local text = alternatives(choices)
  return function(v, flag)
    if not set[v] then return nil, flag .. " is " .. text end
    return v
  end
end

-- Integers are plain decimal digits: tonumber would also take 0x10, 1e1,
-- " 2" and +2, which no one means as a count.
local function integer_in(lo, hi)
  return function(v, flag)
    local n = v:match("^%d+$") and tonumber(v)
    if not n or n < lo or n > hi then
      return nil, flag .. " must be " .. lo .. ".." .. hi
    end
    return n
  end
end

-- A count sluice.open checks the range of: only its form is checked here,
-- and the text is kept (the library's messages quote it).
local function digits(v, flag)
  if not v:match("^%d+$") then return nil, flag .. " expects a whole number (decimal digits)" end
  return v
end

-- NAME=VALUE as two values ("map" options), or a message naming the form.
local function pair(pattern, message)
  return function(v)
    local k, val = v:match(pattern)
    if not k then return nil, message end
    return k, val
  end
end

-- --out DEST: { kind = "json"|"pcap"|"ipfix"|"clickhouse", path =, collector =,
-- transport =, url =, where = (the url without credentials) }
function M.parse_out(spec)
  local kind, rest = spec:match("^(%w+):(.+)$")
  if kind == "json" or kind == "pcap" then return { kind = kind, path = rest } end
  if kind == "ipfix" then
    local transport, addr = rest:match("^(%a+):(.+:%d+)$")
    if transport ~= "udp" and transport ~= "tcp" then transport, addr = "udp", rest end
    local port = tonumber(addr:match(":(%d+)$"))
    if not port or port < 1 or port > 65535 then
      return nil, "--out ipfix: expects HOST:PORT (port 1..65535), got '" .. rest .. "'"
    end
    return { kind = kind, collector = addr, transport = transport }
  end
  if kind == "clickhouse" then
    -- every parameter the sink would refuse is a usage error, here
    local u, why = require("sluice.sinks.clickhouse").check_url(rest)
    if not u then return nil, "--out clickhouse: " .. why end
    -- the name in messages and reports: without the credentials
    return { kind = kind, url = rest, where = "clickhouse:" .. u.base ..
      (u.database or "default") .. "." .. (u.table or "flows") }
  end
  return nil, "--out expects json:PATH, pcap:PATH, ipfix:HOST:PORT or " ..
    "clickhouse:http://HOST:PORT/DB.TABLE, got '" .. (spec:gsub("//.*@", "//...@")) .. "'"
end

-- ---- the option table -------------------------------------------------
--
-- flags: the spellings; value: the value's name in the usage (none: a
-- switch, which stores `set`, default true); help: its description (more:
-- lines shown verbatim under it); commands: "run", "collect" or "both";
-- repeatable: "list" (each value appended) or "map" (parse returns key,
-- value); to: where it goes: "open.NAME" a sluice.open option, "live.NAME"
-- one for live capture only (given with -i), "run.NAME" an engine:run
-- option, "NAME" a field of the parsed options; parse: (value, flag) ->
-- the value or nil, message; default: stored, as if given, when absent;
-- stop: parsing ends there (--help); once: the message when given twice.

M.GROUPS = {
  { "inputs", "inputs" }, { "live", "live capture (-i)" }, { "collect", "collecting" },
  { "table", "flow table" }, { "policies", "policies and outputs" },
  { "misc", "processes and reporting" },
}

M.OPTIONS = {
  { group = "inputs", flags = { "-r", "--read" }, value = "FILE", commands = "run",
    to = "open.read", repeatable = "list",
    help = "pcap or pcapng file to read; - for stdin (pipes too); gzip, zstd, xz or lz4 " ..
      "compressed; a directory: every capture in it, in name order (repeatable: several " ..
      "are merged by time, flows continue across files)" },
  { group = "inputs", flags = { "-i", "--interface" }, value = "IFACE", commands = "run",
    to = "open.interface", help = "capture live on IFACE (SIGINT/SIGTERM stop cleanly)" },
  { group = "inputs", flags = { "--listen" }, value = "udp:ADDR:PORT", commands = "collect",
    repeatable = "list", to = "open.listen", parse = listen_spec, help = "where to listen for NetFlow v5/v9 and " ..
    "IPFIX (repeatable; tcp:ADDR:PORT for IPFIX over TCP; IPv6 as [ADDR]:PORT)" },

  { group = "live", flags = { "--backend" }, value = "afpacket|afxdp|pcap", commands = "run",
    to = "open.backend", help = "live capture method (default afpacket)" },
  { group = "inputs", flags = { "--filter" }, value = "EXPR", commands = "run", to = "open.filter",
    help = "pcap-syntax filter: live, applied in the kernel; on a file, before decoding, " ..
    "for each link type in it (refused packets are counted: -v, filtered)" },
  { group = "table", flags = { "--features" }, value = "LIST", commands = "run",
    to = "open.features", parse = function(v)
      local list = {}
      for name in v:gmatch("[^,]+") do list[#list + 1] = name end
      local ok, err = pcall(require("sluice.engine").parse_features, list)
      if not ok then
        return nil, "--features: " .. (tostring(err):gsub("^[^:]*:%d+: ", ""):gsub("^sluice%.open: ", ""))
      end
      if #list == 0 then return nil, "--features expects a list such as stats,splt" end
      return list
    end,
    help = "per-flow features in every flow record: stats (NFStream's packet size and " ..
    "inter-arrival statistics and TCP flag counts, per direction and both), splt[:N] " ..
    "(the first N packets' directions, sizes and inter-arrival times; 10, at most 32)" },
  { group = "table", flags = { "--dpi" }, commands = "run", to = "dpi",
    help = "label every flow with the application nDPI finds in its first packets: " ..
    "application_name (as nDPI names it, e.g. TLS.Google), application_category_name, " ..
    "requested_server_name (TLS SNI, HTTP Host, DNS query); --features dpi" },
  { group = "inputs", flags = { "--tunnels" }, value = "inner|outer", commands = "run",
    to = "open.tunnels", parse = function(v)
      if v == "inner" or v == "outer" then return v end
      return nil, "--tunnels is inner or outer"
    end,
    help = "flows of the innermost IP packet of tunnels (GRE, VXLAN, GTP-U, IP-in-IP, ...; " ..
      "the default: records name the tunnel) or of the outermost" },
  { group = "live", flags = { "--snaplen" }, value = "N", commands = "both", to = "live.snaplen",
    parse = digits,
    help = "bytes kept per packet (default 262144)" },
  { group = "live", flags = { "--no-promisc" }, commands = "both", to = "live.promisc",
    set = false, default = true, help = "do not put the interface in promiscuous mode" },
  { group = "live", flags = { "--ignore-outgoing" }, commands = "both",
    to = "live.ignore_outgoing", help = "only packets the interface received" },
  { group = "live", flags = { "--ring-block-size" }, backend = "afpacket", value = "N", commands = "both",
    to = "live.block_size", parse = digits,
    help = "afpacket TPACKET_V3 ring: bytes per block (1 MiB)" },
  { group = "live", flags = { "--ring-blocks" }, backend = "afpacket", value = "N", commands = "both",
    to = "live.block_count", parse = digits,
    help = "afpacket ring: blocks (64)" },
  { group = "live", flags = { "--ring-frame-size" }, backend = "afpacket", value = "N", commands = "both",
    to = "live.frame_size", parse = digits,
    help = "afpacket ring: frame size (2048)" },
  { group = "live", flags = { "--ring-timeout" }, backend = "afpacket", value = "MS", commands = "both",
    to = "live.block_timeout", parse = function(v) return v .. "ms" end,
    help = "afpacket ring: a block is handed over after MS (100ms, at most 10000)" },
  { group = "live", flags = { "--xdp-mode" }, backend = "afxdp", value = "auto|skb|drv", commands = "both",
    to = "live.xdp_mode", help = "afxdp attach mode (default auto)" },
  { group = "live", flags = { "--zero-copy" }, backend = "afxdp", value = "auto|on|off", commands = "both",
    to = "live.zero_copy", help = "afxdp zero-copy (default auto: try, else copy)" },
  { group = "live", flags = { "--queue" }, backend = "afxdp", value = "N", commands = "both", to = "live.queue",
    parse = digits,
    help = "afxdp: first NIC queue (worker w uses N + w)" },

  { group = "collect", flags = { "--idle-exit" }, value = "S", commands = "collect",
    to = "open.idle_exit", parse = positive_duration, help = "stop once no message came for S" },
  { group = "collect", flags = { "--template-timeout" }, value = "S", commands = "collect",
    to = "open.template_timeout", parse = positive_duration,
    help = "forget templates not refreshed for S (1800s)" },
  { group = "collect", flags = { "--rcvbuf" }, value = "SIZE", commands = "collect",
    to = "open.rcvbuf", parse = function(v, flag)
      local b = policy.parse_size(v)
      if not b then return nil, flag .. " expects a size (bytes, or 512K, 8M, 1G)" end
      return b
    end,
    help = "socket receive buffer (8 MiB): the only queue, so a slow " ..
    "policy means socket drops (counted)" },
  { group = "collect", flags = { "--collector-memory" }, value = "SIZE", commands = "collect",
    to = "open.collector_memory", parse = function(v, flag)
      local b = policy.parse_size(v)
      if not b or b < 65536 then return nil, flag .. " expects a size of at least 64K (256M, 1G)" end
      return b
    end,
    help = "the most the exporters, domains and templates may take (256M); past it the least " ..
    "recently used go, counted per exporter (evicted_templates, evicted_domains) and in all" },
  { group = "collect", flags = { "--tcp-idle-timeout" }, value = "S", commands = "collect",
    to = "open.tcp_idle_timeout", parse = positive_duration,
    help = "close an IPFIX/TCP connection without a message for S (300s); at most 16 " ..
    "connections from one address and 256 in all: a new one closes the longest idle" },

  { group = "table", flags = { "--slice" }, value = "S", commands = "both", to = "open.slice",
    help = "cut flows into slices every S (seconds or 10s/5m/1h)" },
  { group = "table", flags = { "--idle-timeout" }, value = "PROTO=S", commands = "both",
    repeatable = "map", to = "open.idle_timeout",
    parse = pair("^([%w_]+)=(.+)$", "--idle-timeout expects PROTO=SECONDS, e.g. tcp=300"),
    help = "idle timeout for tcp|udp|icmp|other (repeatable; defaults tcp=300 udp=60 " ..
    "icmp=30 other=30), and tcp_closed=2: how long a TCP flow closed by FIN or RST waits " ..
    "for late packets before it ends with that reason" },
  { group = "table", flags = { "--active-timeout" }, value = "S", commands = "both",
    to = "open.active_timeout", help = "split flows older than S (default 1800)" },
  { group = "table", flags = { "--pool-flows" }, value = "N", commands = "both",
    to = "open.pool_flows", parse = digits,
    help = "flow table slots (default 1048576)" },
  { group = "table", flags = { "--max-flows" }, value = "HIGH", commands = "both",
    to = "open.max_flows", parse = digits,
    help = "at HIGH live flows, trim down to --low-flows: unprotected " ..
    "flows older than --grace end with reason \"trimmed\", lowest score first" },
  { group = "table", flags = { "--low-flows" }, value = "LOW", commands = "both",
    to = "open.low_flows", parse = digits,
    help = "where trimming stops (default 90% of HIGH)" },
  { group = "table", flags = { "--grace" }, value = "S", commands = "both", to = "open.grace",
    help = "flows younger than S are not trimmed (default 10s)" },

  { group = "policies", flags = { "-o", "--option" }, value = "NAME=VALUE", commands = "both",
    repeatable = "list", to = "options",
    parse = function(v)
      local name, val = v:match("^([%w_%.%-]+)=(.*)$")
      if not name then return nil, "-o expects NAME=VALUE" end
      return { name = name, value = val }
    end,
    help = "policy option, to every policy declaring NAME (POLICY.NAME=VALUE for one policy; " ..
    "repeatable)" },
  { group = "policies", flags = { "--out" }, value = "DEST", commands = "both",
    repeatable = "list", to = "outs", parse = M.parse_out, default = "json:-",
    help = "where ctx.emit(record) goes (repeatable; default json:-):",
    more = { "json:PATH, json:-      JSON lines file, stdout",
      "pcap:PATH              packets; without a policy,",
      "                       every packet of every flow",
      "ipfix:HOST:PORT        IPFIX over UDP", "ipfix:tcp:HOST:PORT    IPFIX over TCP",
      "clickhouse:http://HOST:PORT/DB.TABLE",
      "                       rows into ClickHouse",
      "                       (schema: README)" } },
  { group = "policies", flags = { "--export-rate" }, value = "N", commands = "both",
    to = "export_rate", parse = integer_in(0, 4294967295),
    help = "IPFIX records per second sent to each ipfix: output (UDP default 50000, so a " ..
    "plain nfcapd keeps up; TCP default unpaced; 0: unpaced)" },
  { group = "policies", flags = { "--rotate" }, value = "SIZE|TIME", commands = "both",
    to = "rotate", parse = rotate_spec,
    help = "rotate json:PATH files (100M, 1h): PATH.1, PATH.2..." },
  { group = "policies", flags = { "--state" }, value = "FILE", commands = "both", to = "state",
    help = "restore policies from FILE at start, save them there every --state-interval and " ..
    "at the end (written atomically; workers: FILE.N)" },
  { group = "policies", flags = { "--state-interval" }, value = "S", commands = "both",
    to = "run.state_interval", parse = positive_duration,
    help = "how often --state is saved (default 60s)" },
  { group = "policies", flags = { "--on-error" }, value = "abort|skip", commands = "both",
    to = "run.on_error", parse = one_of("abort", "skip"),
    help = "a policy handler error aborts the run (default), or is counted and skipped" },
  { group = "policies", flags = { "--on-lag" }, value = "wait|drop", commands = "both",
    to = "run.on_lag", parse = one_of("wait", "drop"),
    help = "what a full output queue does: wait (the default when reading files: nothing is " ..
    "lost) or drop and count (the default for live capture and collect, where waiting only " ..
    "moves the loss into the kernel)" },

  { group = "misc", flags = { "--workers" }, value = "N", commands = "both", to = "workers",
    parse = integer_in(1, 64), default = "1",
    help = "N processes, each with its own flow table and policies: live capture gives each " ..
    "its own ring (afpacket: fanout hash group; afxdp: one queue each); with -r each keeps " ..
    "the flows that hash to it: one plain pcap file is read once for all, in windows they " ..
    "share, a stream (stdin, a FIFO) is read once by the parent and copied to each worker, " ..
    "other inputs are read whole by each worker; collect shares the ports and spreads " ..
    "exporters by address" },
  { group = "misc", flags = { "--user" }, value = "NAME", commands = "both", to = "user",
    parse = user_name,
    help = "drop privileges to NAME once the input is open" },
  { group = "misc", flags = { "--stats" }, value = "S", commands = "both", to = "stats",
    parse = positive_duration, help = "print counters on stderr every S seconds (collect: " ..
    "each exporter's messages, records, templates, drops, gaps)" },
  { group = "misc", flags = { "--metrics" }, value = "ADDR:PORT", commands = "both",
    to = "metrics", once = "--metrics is given once",
    help = "serve Prometheus metrics (text format) on http://ADDR:PORT/metrics while the run " ..
    "lasts ([ADDR]:PORT for IPv6; --workers N: worker W on PORT+W)" },
  { group = "misc", flags = { "-v", "--verbose" }, commands = "both", to = "verbose",
    help = "final counters on stderr" },
  { group = "misc", flags = { "-q", "--quiet" }, commands = "both", to = "quiet",
    help = "no progress line, and no notes on results left empty (a policy given nothing, " ..
    "no packets, no flows, packets not IP)" },
  { group = "misc", flags = { "-h", "--help" }, commands = "both", to = "help", stop = true,
    help = "this text" },
}

-- The flag that sets each of sluice.open's options (its errors say the
-- option's name: the command line's is the one its user knows).
local flag_of_open = {}
for _, spec in ipairs(M.OPTIONS) do
  local field = spec.to:match("^open%.([%w_]+)$")
  if field then flag_of_open[field] = spec.flags[#spec.flags] end
end

-- The first bytes of captures (pcap both orders and nanosecond, pcapng)
-- and of the compressed files sluice reads.
local CAPTURE_MAGIC = { "\212\195\178\161", "\161\178\195\212", "\077\060\178\161",
  "\161\178\060\077", "\010\013\013\010", "\031\139", "\040\181\047\253",
  "\253\055\122\088", "\004\034\077\024" }

local function looks_like_capture(path)
  local f = io.open(path, "rb")
  local head = f and f:read(4) or ""
  if f then f:close() end
  for _, m in ipairs(CAPTURE_MAGIC) do
    if head:sub(1, #m) == m then return true end
  end
  return false
end

-- A capture given where a policy goes (without -r): the way to read it.
local function capture_text(path)
  return path .. " is a capture, not a policy: read it with -r " .. path ..
    " (several: -r A -r B, or -r DIR)"
end

-- Checks across options, in order, once every argument is read: broken(o)
-- is true for the rule's message, or (a rule without one) the message.
M.RULES = {
  { command = "collect", message = "collect needs --listen udp:ADDR:PORT (or tcp:ADDR:PORT)",
    broken = function(o) return not o.open.listen end },
  { command = "run", broken = function(o)
      if not o.open.read == not o.open.interface then
        for _, path in ipairs(o.policies) do
          if looks_like_capture(path) then return capture_text(path) end
        end
        return "run needs one input: -r FILE or -i IFACE"
      end
    end },
  { message = "--backend applies to live capture (-i)",
    broken = function(o) return o.open.read and o.open.backend end },
  -- libpcap has no way to split one interface's traffic between handles
  { message = "--workers needs --backend afpacket (fanout) or afxdp (one queue each)",
    broken = function(o) return (o.workers or 1) > 1 and o.open.backend == "pcap" end },
  -- a user without CAP_NET_ADMIN could not detach the XDP program at exit
  { message = "--user cannot be used with --backend afxdp (the XDP program must be " ..
      "detached at exit, which needs the privileges --user gives up)",
    broken = function(o) return o.user and o.open.backend == "afxdp" end },
  -- --dpi is the feature dpi (in a core built with nDPI)
  { command = "run", broken = function(o)
      if not o.dpi then return false end
      local engine = require "sluice.engine"
      if not engine.dpi_available() then return engine.DPI_MISSING end
      local list = o.open.features or {}
      for _, name in ipairs(list) do if name == "dpi" then return false end end
      list[#list + 1] = "dpi"
      o.open.features = list
      return false
    end },
  -- rotation renames the file away: stdout cannot be (the default --out)
  { broken = function(o)
      if not o.rotate then return false end
      local files = false
      for _, out in ipairs(o.outs or { { kind = "json", path = "-" } }) do
        if out.kind == "json" and out.path == "-" then
          return "--rotate cannot rotate stdout (json:-, the default --out): give --out json:PATH"
        end
        files = files or out.kind == "json"
      end
      if not files then return "--rotate applies to json:PATH outputs" end
    end },
  { message = "--state-interval needs --state FILE",
    broken = function(o) return o.run.state_interval and not o.state end },
  -- an option that would do nothing is a mistake worth a line
  { broken = function(o)
      if o.open.interface or not next(o.live) then return false end
      for _, opt in ipairs(M.OPTIONS) do
        if opt.section == "live" and o.live[opt.field] ~= nil then
          return opt.flags[1] .. " applies to live capture (-i)"
        end
      end
    end },
  { broken = function(o)
      if not o.open.interface then return false end
      local backend = o.open.backend or "afpacket"
      for _, opt in ipairs(M.OPTIONS) do
        if opt.backend and opt.backend ~= backend and o.live[opt.field] ~= nil then
          return string.format("%s applies to --backend %s (this capture uses %s)", opt.flags[1],
            opt.backend, backend)
        end
      end
    end },
  -- stdin cannot be read twice, and a file read twice counts every packet
  -- twice (mergecap would merge it with itself)
  { broken = function(o)
      local seen = {}
      for _, path in ipairs(type(o.open.read) == "table" and o.open.read or {}) do
        local id = (path == "-" or path == "/dev/stdin" or path == "/dev/fd/0") and "-" or
          core.file_identity(path)
        if seen[id] then return "-r " .. path .. " is given twice" end
        seen[id] = true
      end
    end },
  { broken = function(o)
      local seen = {}
      for _, out in ipairs(o.outs or {}) do
        local name = out.where or
          (out.kind .. ":" .. (out.path or (out.transport .. ":" .. out.collector)))
        -- a file is one file however it is spelt, whichever sink writes it
        local id = out.path and out.path ~= "-" and core.file_identity(out.path) or name
        if seen[id] then
          return "--out " .. name .. (seen[id] ~= name and " writes the file of --out " .. seen[id] or
            " is given twice")
        end
        seen[id] = name
      end
    end },
}

local BY_FLAG = {}
for _, opt in ipairs(M.OPTIONS) do
  for _, f in ipairs(opt.flags) do BY_FLAG[f] = opt end
  opt.section, opt.field = opt.to:match("^(%a+)%.([%w_]+)$")
  if not opt.section then opt.field = opt.to end
end

local function accepts(opt, command)
  return opt.commands == "both" or opt.commands == command
end

-- collect's answer to an option of run only: "-r, -i, --backend or --filter"
local RUN_ONLY = {}
for _, opt in ipairs(M.OPTIONS) do
  if opt.commands == "run" then RUN_ONLY[#RUN_ONLY + 1] = opt.flags[1] end
end
local NOT_FOR = { collect = "collect takes --listen, not " .. alternatives(RUN_ONLY) }

-- ---- usage ------------------------------------------------------------

local HEADER = [[
usage: sluice run [POLICY.lua ...] (-r FILE | -i IFACE) [options]
       sluice collect [POLICY.lua ...] --listen udp:ADDR:PORT [options]
       sluice info POLICY.lua      what the policy wants, and its options
       sluice --help | --version

Reads a pcap/pcapng file or captures on an interface, tracks bidirectional
flows and runs each POLICY over the flow events and slices. Without a
policy, every ended flow (and, with --slice, every slice record) is written
as a JSON line.

collect takes NetFlow v5/v9 and IPFIX from exporters instead of packets;
flows get the tags exporter and domain. Options marked [run] or [collect]
are taken by that command only.

SIGHUP reloads every POLICY file (the old version's snapshot goes to the
new one's restore; the flow table and outputs stay; a version that fails
leaves the old one running). SIGINT/SIGTERM stop cleanly.
]]

local WIDTH, COLUMN = 78, 29

local function wrap(text, indent)
  local lines, line = {}, ""
  for word in text:gmatch("%S+") do
    if line ~= "" and #line + 1 + #word > WIDTH - indent then
      lines[#lines + 1] = line
      line = word
    else
      line = line == "" and word or (line .. " " .. word)
    end
  end
  lines[#lines + 1] = line
  return lines
end

local function describe_option(opt, out)
  local left = "  " .. table.concat(opt.flags, ", ") .. (opt.value and (" " .. opt.value) or "")
  local help = opt.help .. (opt.commands ~= "both" and (" [" .. opt.commands .. "]") or "")
  local pad = (" "):rep(COLUMN)
  local lines = wrap(help, COLUMN)
  if #left + 2 > COLUMN then
    out[#out + 1] = left
    out[#out + 1] = pad .. lines[1]
  else
    out[#out + 1] = left .. (" "):rep(COLUMN - #left) .. lines[1]
  end
  for k = 2, #lines do out[#out + 1] = pad .. lines[k] end
  for _, line in ipairs(opt.more or {}) do out[#out + 1] = pad .. "  " .. line end
end

-- The --help text, generated from M.OPTIONS.
function M.usage()
  local out = { HEADER:sub(1, -2) }
  for _, g in ipairs(M.GROUPS) do
    out[#out + 1] = ""
    out[#out + 1] = g[2] .. ":"
    for _, opt in ipairs(M.OPTIONS) do
      if opt.group == g[1] then describe_option(opt, out) end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

-- ---- parsing ----------------------------------------------------------

local function store(o, opt, v)
  local value, second = opt.set, nil
  if opt.once and (opt.section and o[opt.section] or o)[opt.field] ~= nil then
    return nil, opt.once
  end
  if opt.value then
    value = v
    if opt.parse then
      value, second = opt.parse(v, opt.flags[1])
      if value == nil then return nil, second end
    end
  elseif value == nil then
    value = true
  end
  local t, field = opt.section and o[opt.section] or o, opt.field
  if opt.repeatable == "list" then
    t[field] = t[field] or {}
    t[field][#t[field] + 1] = value
  elseif opt.repeatable == "map" then
    t[field] = t[field] or {}
    t[field][value] = second
  else
    t[field] = value
  end
  return true
end

local function finish(o, command)
  for _, rule in ipairs(M.RULES) do
    if (rule.command or command) == command then
      local broken = rule.broken(o)
      if broken then return nil, rule.message or broken end
    end
  end
  for _, opt in ipairs(M.OPTIONS) do
    local t = opt.section and o[opt.section] or o
    if opt.default ~= nil and t[opt.field] == nil and accepts(opt, command) then
      if opt.value then -- as if given on the command line
        assert(store(o, opt, opt.default))
      else
        t[opt.field] = opt.default
      end
    end
  end
  return o
end

-- cli.parse(args, command): the arguments after "run" or "collect" as
--   { command =, policies = { path... }, options = { { name =, value = }... },
--     outs = { parsed --out... }, open = { sluice.open options },
--     live = { sluice.open options for -i }, run = { engine:run options },
--     workers =, stats =, user =, state =, rotate =, verbose =, quiet =, help = }
-- or nil, message (a usage error). With -h/--help, parsing stops there and
-- help is true.
function M.parse(args, command)
  if type(args) ~= "table" then error("cli.parse: args must be a list of strings", 2) end
  if command ~= "run" and command ~= "collect" then
    error("cli.parse: command must be 'run' or 'collect'", 2)
  end
  local o = { command = command, policies = {}, options = {}, open = {}, live = {}, run = {} }
  local i = 1
  while i <= #args do
    local a = args[i]
    local flag, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    flag = flag or a
    local opt = BY_FLAG[flag]
    if opt then
      if not accepts(opt, command) then
        return nil, NOT_FOR[command] or ("unknown option " .. flag)
      end
      local v = inline
      if opt.value and v == nil then
        i = i + 1
        v = args[i]
        if v == nil then return nil, flag .. " needs a value" end
      elseif not opt.value and v ~= nil then
        return nil, flag .. " takes no value"
      end
      local ok, err = store(o, opt, v)
      if not ok then return nil, err end
      if opt.stop then return o end
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      return nil, "unknown option " .. flag
    else
      o.policies[#o.policies + 1] = a
    end
    i = i + 1
  end
  return finish(o, command)
end

-- ---- from parsed options to the library -------------------------------

-- The sluice.open options of worker w (0 .. o.workers - 1). Live capture
-- options go only with -i; workers share an afpacket fanout group
-- (o.fanout_group) or take one afxdp queue each.
function M.open_options(o, w)
  local t = {}
  for k, v in pairs(o.open) do t[k] = v end
  if o.open.interface then
    for k, v in pairs(o.live) do t[k] = v end
  end
  if o.workers > 1 then
    t.worker, t.workers = w, o.workers
    if o.open.interface and (o.open.backend or "afpacket") == "afpacket" then
      t.fanout_group = o.fanout_group
    end
    if o.open.backend == "afxdp" then t.queue = (tonumber(o.live.queue) or 0) + w end
  end
  return t
end

-- The engine:run options of worker w, from the command line (the caller
-- adds outputs and progress).
function M.run_options(o, w)
  -- every CLI run stops cleanly on SIGINT/SIGTERM, files too
  local t = { worker = w, state = o.state, progress_interval = o.stats, signals = true }
  for k, v in pairs(o.run) do t[k] = v end
  if o.state and o.workers > 1 then t.state = o.state .. "." .. w end
  if o.workers > 1 then
    t.on_sink_error = function(name, err)
      io.stderr:write(string.format("sluice: worker %d of %d: sink %s: %s\n", w, o.workers, name, err))
    end
  end
  -- the default job with --out pcap: rewrites every packet of every flow
  if #o.policies == 0 then
    for _, out in ipairs(o.outs) do t.capture_all = t.capture_all or out.kind == "pcap" or nil end
  end
  return t
end

-- The --out sinks of worker w as { kind, options } for sluice.sink[kind].
-- Workers share a JSON file (appending a line per write, atomic with
-- O_APPEND), write a pcap file each (PATH.N) and export IPFIX as
-- observation domain N.
function M.sink_options(o, w, shared)
  local list = {}
  for _, out in ipairs(o.outs) do
    local opts
    if out.kind == "json" then
      opts = { path = out.path, append = shared, shared = shared, rotate = o.rotate }
    elseif out.kind == "pcap" then
      opts = { path = o.workers > 1 and (out.path .. "." .. w) or out.path }
    elseif out.kind == "clickhouse" then
      -- each worker its own sink (and batches); one probe name for all;
      -- the columns of the run's --features
      opts = { url = out.url, features = o.open and o.open.features or nil }
    else
      opts = { collector = out.collector, transport = out.transport, domain = w,
        rate = o.export_rate, features = o.open and o.open.features or nil }
    end
    list[#list + 1] = { kind = out.kind, options = opts,
      name = out.path or out.collector or out.where }
  end
  return list
end

-- Spreads -o NAME=VALUE over the policies (paths and the tables they
-- returned): POLICY.NAME targets one, named by its info.name (default:
-- the file's base name; sluice.policy.identity), a plain NAME every policy
-- declaring it. Returns a table of options per policy, or nil, message.
function M.spread_options(paths, loaded, options)
  local per, names = {}, {}
  for i = 1, #paths do
    per[i] = {}
    names[i] = policy.identity(loaded[i], policy.name_of(paths[i]))
  end
  for _, opt in ipairs(options) do
    local target, name = opt.name:match("^(.+)%.([^%.]+)$") -- info.name may hold dots
    local taken = false
    for i in ipairs(paths) do
      local schema = loaded[i].info and loaded[i].info.options or {}
      if target then
        if names[i] == target then
          per[i][name], taken = opt.value, true
        end
      elseif schema[opt.name] then
        per[i][opt.name], taken = opt.value, true
      end
    end
    if not taken then
      if target then
        local hint = ""
        for i, path in ipairs(paths) do
          if policy.name_of(path) == target then
            hint = string.format("; %s is named '%s' by its info.name", path, names[i])
            break
          end
        end
        return nil, string.format("-o %s: no policy named '%s' (known: %s%s)", opt.name, target,
          #names > 0 and table.concat(names, ", ") or "none", hint)
      end
      local known = {}
      for _, P in ipairs(loaded) do
        for k in pairs(P.info and P.info.options or {}) do known[#known + 1] = k end
      end
      table.sort(known)
      return nil, "-o " .. opt.name .. ": no policy declares option '" .. opt.name ..
        "' (known: " .. (#known > 0 and table.concat(known, ", ") or "none") .. ")"
    end
  end
  return per
end

-- ---- the commands -----------------------------------------------------
-- Each returns an exit code (sluice.report's EXIT_*): 0, 1 for a runtime
-- failure, 2 for a usage error (with a pointer to --help) or a policy that
-- cannot be loaded, 3 for a run that completed but lost records.

-- "worker N: " in each of several workers, so that its own failures and
-- reloads say whose they are
local worker_label = ""

-- out: where to say it (stderr; a summary's buffer)
local function fail(msg, code, out)
  (out or io.stderr):write("sluice: ", worker_label, msg, "\n")
  return code or 1
end

local function usage_error(msg)
  io.stderr:write("sluice: ", msg, "\n", "try 'sluice --help'\n")
  return 2
end

-- an error raised by the library, without its file:line
local function bare(err)
  return (tostring(err):gsub("^[^:]*:%d+: ", ""))
end

-- The policy instances, or nil and an exit code (the error printed).
local function load_policies(o)
  local raw = {}
  for i, path in ipairs(o.policies) do
    if looks_like_capture(path) then return nil, usage_error(capture_text(path)) end
    local P, err = policy.load_file(path)
    if not P then return nil, fail(err, 2) end
    -- the schema (info.name, option specs) before -o is spread over it
    local ok, serr = policy.check(P, policy.identity(P, policy.name_of(path)))
    if not ok then return nil, fail(serr, 2) end
    raw[i] = P
  end
  local per, err = M.spread_options(o.policies, raw, o.options)
  if not per then return nil, usage_error(err) end
  local list = {}
  for i, path in ipairs(o.policies) do
    local inst, ierr = policy.from_file(raw[i], path, per[i])
    if not inst then return nil, fail(ierr, 2) end
    list[i] = inst
  end
  if #list == 0 then list[1] = assert(policy.new(require "sluice.policies.flows", nil, "flows")) end
  return list
end

local function open_outputs(o, w, shared)
  local sinks = {}
  for _, s in ipairs(M.sink_options(o, w, shared)) do
    local sink, err = sluice.sink[s.kind](s.options)
    if not sink then
      -- a file sink's message names its file already
      err = tostring(err)
      if err:sub(1, #s.name + 2) == s.name .. ": " then err = err:sub(#s.name + 3) end
      return nil, "cannot open " .. s.name .. ": " .. err
    end
    sinks[#sinks + 1] = sink
  end
  return sinks
end

-- The end of a run, on stderr as -v and -q ask: its counters, notes on
-- empty results, where a signal stopped it, its losses; and its exit
-- code. ending: what the run left (run_one, with its engine), or the sum
-- of what workers that shared an input left (sluice.summary).
-- head: a first line (a worker's number). The summary goes to stderr in
-- one write: workers' summaries (live capture, collect) do not mix.
local function summarize(o, ending, eng, head)
  eng = eng or { stats = function() return ending.stats end,
    files = function() return ending.files end, filter = ending.filter, input = ending.input }
  local text = {}
  local out = { write = function(_, ...) for i = 1, select("#", ...) do text[#text + 1] = select(i, ...) end end }
  if head then out:write(head) end
  if o.verbose then report.final_counters(eng, out) end
  if ending.ok and not o.quiet then report.empty_notes(eng, out) end
  local rep = ending.report
  if rep and rep.stopped_by and o.open.read and not o.quiet then
    local frac, pos = ending.progress[1], ending.progress[2]
    out:write(string.format("sluice: %s: stopped by %s at %s of the input; " ..
      "every active flow ended (shutdown)\n", ending.input, signals.name(rep.stopped_by),
      frac and string.format("%.1f%%", frac * 100) or report.bytes_text(pos or 0)))
  end
  local lost = report.losses(rep, o.verbose, out)
  if eng.live or eng.collector then lost = lost + report.input_losses(eng, out) end
  -- packets the filter could not judge were refused: a loss, not a choice
  if (ending.filter_unusable or 0) > 0 then
    out:write("sluice: --filter does not compile for the link type of some packets, which were " ..
      "refused (counted in filtered): ", ending.filter_note or "", "\n")
    lost = lost + ending.filter_unusable
  end
  local code = lost > 0 and report.EXIT_LOSSES or report.EXIT_OK
  if not ending.ok then code = fail(ending.err, nil, out) end
  io.stderr:write(table.concat(text))
  io.stderr:flush()
  return code
end

-- One capture (or file, or collector) from open to exit code.
-- The engine of worker w, or nil and the exit code (the error printed).
-- A stop while the input opened (a stream that sent nothing yet, a FIFO
-- without its writer): the open gave up with EINTR. Exit status 0.
local function stopped_before_open(o)
  -- a worker's copy of a stream: the parent says it, naming its signal
  if not o.quiet and not o.stream_copy then
    io.stderr:write("sluice: stopped by ", signals.name(signals.pending()), " before the input opened\n")
  end
  return report.EXIT_OK
end

local function open_engine(o, w)
  local ok, eng, err = pcall(sluice.open, M.open_options(o, w))
  -- any failure but a stop's EINTR is said as it is
  if signals.pending() and ok and not eng and tostring(err):find(core.strerror(-C.SL_EINTR), 1, true) then
    return nil, stopped_before_open(o)
  end
  if not ok then
    -- a bad --filter is one line: libpcap's message says what is wrong
    local bad = bare(eng):match("^sluice%.open: filter: (.*)$")
    if bad then return nil, fail("--filter: " .. bad, report.EXIT_USAGE) end
    -- a value sluice.open refused is named by the flag that gave it
    local field, why = bare(eng):match("^sluice%.open: ([%w_]+)(:? .*)$")
    local flag = field and flag_of_open[field]
    if flag then return nil, usage_error(flag .. why) end
    return nil, usage_error(bare(eng))
  end
  if not eng then return nil, fail(err) end
  return eng
end

-- A worker that could not open its copy of a stream exits with this plus
-- the run's exit status: each copy is the same, so worker 0 alone says why
-- (its status is the run's) and the parent adds nothing.
local EXIT_STREAM_COPY = 16

-- afxdp binds one receive queue per worker: what the NIC steers to the
-- others goes past it. A line when the interface has queues left over.
local function afxdp_queue_note(o)
  local ifname = o.open.interface
  local n = 0
  while true do
    local d = io.open("/sys/class/net/" .. ifname .. "/queues/rx-" .. n)
    if not d then break end
    d:close()
    n = n + 1
  end
  local first = tonumber(o.live.queue) or 0
  local last = first + o.workers - 1
  if n <= 1 or (first == 0 and last >= n - 1) then return nil end
  return string.format("afxdp captures receive queue %s of %d on %s: traffic the NIC steers " ..
    "to the others is not seen (use --workers %d, or fewer queues: ethtool -L %s combined %d)",
    first == last and first or first .. "-" .. last, n, ifname, n, ifname, o.workers)
end

local function run_one(o, list, w, shared)
  local eng, code
  if o.stream_copy and w > 0 then
    local ok, e = pcall(sluice.open, M.open_options(o, w))
    if not ok or not e then return EXIT_STREAM_COPY end
    eng = e
  else
    eng, code = open_engine(o, w)
  end
  if not eng then return o.stream_copy and EXIT_STREAM_COPY + code or code end
  if eng.note and w == 0 then io.stderr:write("sluice: ", eng.input, ": ", eng.note, "\n") end
  if eng.live and w == 0 and o.open.backend == "afxdp" then
    local line = afxdp_queue_note(o)
    if line then io.stderr:write("sluice: ", line, "\n") end
  end
  local files = eng:files()
  if files and files.skipped > 0 and not o.quiet and w == 0 then
    io.stderr:write(string.format("sluice: %s: %d captures; skipped %d directory entries " ..
      "that are not captures\n", eng.input, files.files, files.skipped))
  end
  -- rotated files and state files are created later, as the --user: a
  -- directory that user cannot write fails now, before the outputs open
  -- (and truncate what the last run wrote)
  if o.user then
    local later = {}
    for _, out in ipairs(o.rotate and o.outs or {}) do
      if out.kind == "json" and out.path ~= "-" then later[#later + 1] = { "--rotate", out.path } end
    end
    if o.state then later[#later + 1] = { "--state", o.state } end
    for _, l in ipairs(later) do
      local dir = l[2]:match("^(.*)/[^/]*$") or "."
      local can, why = workers.writable_dir_as(o.user, dir == "" and "/" or dir)
      if can == nil then return fail("--user: " .. why) end
      if not can then
        return fail(string.format("%s: %s is not writable by user %s, who writes %s", l[1], dir,
          o.user, l[2]))
      end
    end
  end
  -- the outputs are opened before privileges go: a probe's log directory
  -- is usually root's
  local ok_out, outputs, oerr = pcall(open_outputs, o, w, shared)
  if not ok_out then return fail(bare(outputs)) end
  if not outputs then return fail(oerr) end
  if o.user then
    local dropped, derr = workers.drop_privileges(o.user)
    if not dropped then return fail("--user: " .. derr) end
  end
  local started = core.monotonic()
  -- workers sharing an input: worker 0 shows the progress of all
  local show = not o.quiet and o.open.read and core.isatty(2) and w == 0
  local opts = M.run_options(o, w)
  opts.outputs = outputs
  -- reloads (SIGHUP): a failure always gets its line, a success with -v
  opts.on_reload = function(ev)
    if ev.ok and not o.verbose then return end
    if show then io.stderr:write("\r\027[K") end
    io.stderr:write(reload.report_line(ev, worker_label) .. "\n")
  end
  if o.verbose and w == 0 then -- workers read the files in step: one says so
    opts.on_file = function(name, i, n)
      if show then io.stderr:write("\r\027[K") end
      io.stderr:write(string.format("sluice: reading %s (file %d of %d)\n", name, i, n))
    end
  end
  if o.stats then
    opts.progress = report.stats_line
  elseif show then
    opts.progress = function(e) report.progress_line(e, started) end
  end
  opts.metrics = o.metrics_servers and o.metrics_servers[w]
  local rok, rerr, rep = eng:run(list, nil, opts)
  rep = rok and rerr or rep or eng.report
  for _, sink in ipairs(outputs) do sink:close() end
  if show then
    report.progress_line(eng, started)
    io.stderr:write("\n")
  end
  -- (a run that succeeded returned its report where a failed one's error is)
  local unusable, note = 0, nil
  if not eng.collector then unusable, note = eng:filter_unusable() end
  local ending = { ok = rok, err = not rok and rerr or nil, report = rep, stats = eng:stats(), files = eng:files(),
    filter = eng.filter, input = eng.input, progress = { eng:progress() },
    filter_unusable = unusable, filter_note = note }
  -- workers sharing an input: one summary, the parent's, of all of them
  if o.summaries then return summary.put(o.summaries, w, ending) end
  -- live capture and collect: each worker's counters, under its number
  return summarize(o, ending, eng,
    o.workers > 1 and o.verbose and string.format("worker %d of %d:\n", w, o.workers) or nil)
end

-- --metrics ADDR:PORT: the listening sockets, opened before any input
-- (worker W serves PORT + W); servers by worker, or nil and the exit
-- code (2, one line: a bad address, a port in use).
local function open_metrics(o)
  local servers = {}
  for w = 0, o.workers - 1 do
    local srv, err = metrics.listen(o.metrics, w)
    if not srv then
      for _, s in pairs(servers) do s:close() end
      return nil, fail("--metrics: " .. err, report.EXIT_USAGE)
    end
    servers[w] = srv
    if o.verbose then
      io.stderr:write(string.format("sluice: metrics on http://%s/metrics%s\n", srv.address,
        o.workers > 1 and (" (worker " .. w .. ")") or ""))
    end
  end
  return servers
end

-- The inputs of -r as a list, and the index of the one that is a stream
-- (stdin, a FIFO), if any; nil, err for more than one.
local function stream_input(o)
  local read = o.open.read
  local paths = type(read) == "table" and read or { read }
  local found
  for i, path in ipairs(paths) do
    if path == "-" or C.sl_path_kind(path) == -C.SL_ENOTSUP then
      if found then
        return nil, "--workers: only one input can be a stream (stdin, a FIFO): " ..
          paths[found] .. " and " .. path
      end
      found = i
    end
  end
  return paths, found
end

-- A stream read by workers: the parent copies it to each (sluice.h,
-- sl_tee); the worker reads its copy as its stdin. Returns the tee, or
-- nil (no stream), or nil and an exit code.
local function open_tee(o)
  if not o.open.read then return nil end
  local paths, at = stream_input(o)
  if not paths then return nil, usage_error(at) end
  if not at then return nil end
  local tp = ffi.new("struct sl_tee *[1]")
  local rc = C.sl_tee_new(tp, paths[at], o.workers)
  if rc == -C.SL_EINTR and signals.pending() then return nil, stopped_before_open(o) end
  if rc < 0 then return nil, fail(paths[at] .. ": " .. core.strerror(rc)) end
  local tee = ffi.gc(tp[0], C.sl_tee_free)
  return { tee = tee, paths = paths, at = at, name = paths[at] }
end

-- In worker w: its copy of the stream is its stdin.
local function take_stream(o, stream, w)
  local rc = C.sl_tee_child(stream.tee, w)
  if rc < 0 then error("cannot take the copy of " .. stream.name .. ": " .. core.strerror(rc)) end
  local paths = {}
  for i, path in ipairs(stream.paths) do paths[i] = i == stream.at and "-" or path end
  o.open.read = #paths == 1 and paths[1] or paths
  o.open.stdin_name = stream.name ~= "-" and stream.name or nil -- a FIFO keeps its name
  o.stream_copy = true
end

-- One pcap file read once for all workers (sluice.h, sl_coop): made
-- before they fork; nil where the input is not one (the workers then each
-- read all of it).
local function open_coop(o)
  local read = o.open.read
  if type(read) == "table" then read = #read == 1 and read[1] or nil end
  if type(read) ~= "string" then return nil end
  local cp = ffi.new("struct sl_coop *[1]")
  if C.sl_coop_new(cp, read, o.workers) < 0 then return nil end
  return ffi.gc(cp[0], C.sl_coop_free)
end

local function fanout_group_id()
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(2)
  if f then f:close() end
  if not b or #b < 2 then return workers.pid() % 65535 + 1 end
  return (b:byte(1) * 256 + b:byte(2)) % 65535 + 1
end

-- Workers are processes, each its own input share (ring, queue, or a hash
-- share of the flows of files and streams), flow table and Lua state.
local function run_workers(o, list)
  -- an afpacket fanout group id: 16 bits, 0 meaning none. Groups are per
  -- network namespace: two probes on one interface whose pids matched
  -- (containers) joined one group and split its traffic, so it is random
  o.fanout_group = fanout_group_id()
  for _, out in ipairs(o.outs) do -- shared JSON files: truncated once, then appended to
    if out.kind == "json" and out.path ~= "-" then
      if o.rotate then
        local ok, err = json_sink.keep_previous(out.path)
        if not ok then return fail(err) end
      end
      local f = io.open(out.path, "w")
      if not f then return fail("cannot open " .. out.path) end
      f:close()
    end
  end
  local stream, tcode = open_tee(o)
  if tcode then return tcode end
  -- files: a missing one or a bad filter is one line, before any fork
  if o.open.read and not stream then
    local eng, code = open_engine(o, 0)
    if not eng then return code end
    eng:close()
  end
  local coop = not stream and open_coop(o)
  -- a shared input (files, stdin) ends with one summary of all workers
  if o.open.read then o.summaries = summary.new(o.workers) end
  local ok, code, statuses, failed = workers.run(o.workers, function(w)
    worker_label = "worker " .. w .. ": "
    if stream then take_stream(o, stream, w) end
    if coop then -- the parent unmaps it, once every worker ended
      o.open.shared_reader = ffi.gc(coop, nil)
    end
    -- a worker serves its own metrics socket only
    for i, srv in pairs(o.metrics_servers or {}) do
      if i ~= w then srv:close() end
    end
    return run_one(o, list, w, true)
  end, stream and function()
    local rc = C.sl_tee_start(stream.tee)
    if rc < 0 then error("cannot copy " .. stream.name .. " to the workers: " .. core.strerror(rc)) end
  end, function(w)
    if not o.summaries then
      -- live capture, collect: a worker that stopped (its signal, its
      -- policy's engine:shutdown) stops the probe, not a share of it
      return nil, C.SL_SIGTERM
    end
    -- its windows would hold the others for ever
    if coop and C.sl_coop_closed(coop, w) ~= 1 then return "ended without finishing its share of the input" end
    -- a signal to one worker stops the run: the others' flows would go on
    -- past the point where its flows ended
    return nil, summary.stopped_by(o.summaries, w)
  end)
  if stream then
    local rc = C.sl_tee_finish(stream.tee, nil)
    if rc < 0 then
      fail("cannot read " .. stream.name .. ": " .. core.strerror(rc))
      ok, code = false, nil
    end
  end
  if ok == nil then return fail(code) end
  if o.summaries then
    local ending, err
    if ok then ending, err = summary.collect(o.summaries, o.workers) end
    summary.remove(o.summaries, o.workers)
    if ok and not ending then return fail(err) end
    if ending then
      -- the workers stopped on the parent's SIGTERM: say what the user sent
      if ending.report and ending.report.stopped_by then
        ending.report.stopped_by = workers.stopped_by or ending.report.stopped_by
      end
      return summarize(o, ending)
    end
  end
  -- a worker that failed printed why, unless a signal killed it: this
  -- line says which one ended the run, and that what it held is lost
  if not ok then
    if not code then return report.EXIT_ERROR end -- the stream's error, said above
    -- a copy of the stream that could not be opened: worker 0 said why,
    -- and its status is the run's
    local function copy_status(st)
      local c = st and st % 256 == 0 and math.floor(st / 256) - EXIT_STREAM_COPY
      return c and c >= 0 and c < EXIT_STREAM_COPY and c or nil
    end
    if copy_status(statuses[failed]) then
      local c0 = copy_status(statuses[0])
      if c0 == report.EXIT_OK then
        -- stopped while the stream had sent nothing (open_engine)
        if not o.quiet then
          io.stderr:write("sluice: stopped by ", workers.stopped_by and
            signals.name(workers.stopped_by) or "a signal to a worker", " before the input opened\n")
        end
        return report.EXIT_OK
      end
      return c0 or report.EXIT_ERROR
    end
    -- an exit status: it said why and wrote what it had taken (exit 1
    -- flushes); killed by a signal, what it held is gone
    local st = statuses[failed]
    if st and st ~= 0 and st % 256 == 0 then
      return fail(code .. " (said above): the other workers were stopped", report.EXIT_ERROR)
    end
    return fail(code .. ": the flows it had not written are lost, the other workers were stopped",
                report.EXIT_ERROR)
  end
  return code
end

local function run(args, command)
  local o, err = M.parse(args, command)
  if not o then return usage_error(err) end
  if o.help then
    io.stdout:write(M.usage())
    return 0
  end
  local list, code = load_policies(o)
  if not list then return code end
  -- knowable before data: a policy this run gives nothing to
  if #o.policies > 0 and not o.quiet then
    report.policy_notes(list, (policy.parse_duration(o.open.slice or 0) or 0) > 0)
  end
  if o.metrics then
    local servers, mcode = open_metrics(o)
    if not servers then return mcode end
    o.metrics_servers = servers
  end
  -- caught from before the input opens: a stop or a reload that comes
  -- while it does (an XDP program being attached) waits for the run's
  -- first step instead of killing the process half set up
  signals.install()
  local code
  if o.workers > 1 then
    -- collect: listen sockets that cannot be opened are one line, before
    -- the workers fork (each would say so, and the parent that one lost
    -- flows); the parent's socket closes before the workers open theirs
    if o.open.listen then
      local eng, ecode = open_engine(o, 0)
      if eng then eng:close() else code = ecode end
    end
    code = code or run_workers(o, list)
  else
    code = run_one(o, list, 0, false)
  end
  signals.restore()
  for _, srv in pairs(o.metrics_servers or {}) do srv:close() end
  return code
end

-- sluice info POLICY.lua: what a policy declares, as its user needs it.
-- A script (sluice.policy.load_file tells) is not run: exit 2, saying so.
local function info(args)
  if #args ~= 1 then return usage_error("info expects one policy file") end
  if looks_like_capture(args[1]) then return usage_error(capture_text(args[1])) end
  local P, err = policy.load_file(args[1])
  if not P then return fail(err, 2) end
  local name = policy.identity(P, policy.name_of(args[1]))
  local ok, serr = policy.check(P, name)
  if not ok then return fail(serr, 2) end
  io.stdout:write(policy.describe(P, name))
  return 0
end

local HELP = { ["--help"] = true, ["-h"] = true, help = true }

-- cli.main(argv): argv as the script's arg (argv[1] the command); returns
-- the exit code.
function M.main(argv)
  if type(argv) ~= "table" then error("cli.main: argv must be a list of strings", 2) end
  local command = argv[1]
  local rest = {}
  for i = 2, #argv do rest[#rest + 1] = argv[i] end
  if command == "--version" or command == "-V" then
    io.stdout:write("sluice ", sluice.version, "\n")
    return 0
  elseif HELP[command] then
    io.stdout:write(M.usage())
    return 0
  elseif command == nil then
    return usage_error("no command given")
  elseif command == "info" then
    return info(rest)
  elseif command == "run" or command == "collect" then
    return run(rest, command)
  end
  return usage_error("unknown command '" .. command .. "'")
end

return M
