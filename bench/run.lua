-- bench/run.lua: one in-process sluice measurement, timed with sluice.core's
-- monotonic clock (sluice.open + engine:run, the whole pass over the file).
--
--   luajit bench/run.lua engine TRACE               no policy handlers
--       (BENCH_FEATURES="stats,splt": with those flow features)
--   luajit bench/run.lua policy TRACE POLICY SLICE  a policy file, --slice SLICE
--   luajit bench/run.lua sinks TRACE SLICE JSON     the default job: every flow
--       and slice to a JSON file and exported as IPFIX (UDP, to a socket of
--       this process that never reads: the kernel drops what overflows);
--       JSON "none": the same job without any sink
--
-- Prints one line for bench/run.sh:
--   packets N seconds S rss_kb K flows F
-- and exits 1 with a message on stderr if anything fails.

-- Use the checkout's Lua modules and core, whatever the current directory.
do
  local dir = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or ".") .. "/.."
  package.path = dir .. "/lua/?.lua;" .. dir .. "/lua/?/init.lua;" .. package.path
  package.cpath = dir .. "/core/build/?.so;" .. package.cpath
end

local function fail(msg)
  io.stderr:write("bench/run.lua: ", tostring(msg), "\n")
  os.exit(1)
end

local ok, sluice = pcall(require, "sluice")
if not ok then fail("cannot load sluice: " .. tostring(sluice)) end
local core = require "sluice.core"

local mode, trace = arg[1], arg[2]
if not trace then
  fail("usage: luajit bench/run.lua engine TRACE | policy TRACE POLICY.lua SLICE")
end

local policies, open_opts, outputs
if mode == "sinks" and arg[4] == "none" then
  policies = { sluice.policy.new(require "sluice.policies.flows", nil, "flows") }
  open_opts = { read = trace, slice = tonumber(arg[3]) or arg[3] }
  outputs = {}
elseif mode == "sinks" then
  local ffi = require "ffi"
  ffi.cdef [[
    int bind(int fd, const void *addr, unsigned len);
    int getsockname(int fd, void *addr, unsigned *len);
  ]]
  local fd = ffi.C.socket(2, 2, 0)
  local sa = ffi.new("struct sl_sockaddr_in")
  sa.family = 2
  ffi.C.inet_pton(2, "127.0.0.1", sa.addr)
  local len = ffi.new("unsigned[1]", ffi.sizeof(sa))
  if fd < 0 or ffi.C.bind(fd, sa, ffi.sizeof(sa)) ~= 0 or ffi.C.getsockname(fd, sa, len) ~= 0 then
    fail("cannot bind a UDP socket on 127.0.0.1")
  end
  local port = bit.bor(bit.rshift(sa.port, 8), bit.lshift(bit.band(sa.port, 0xff), 8))
  policies = { sluice.policy.new(require "sluice.policies.flows", nil, "flows") }
  open_opts = { read = trace, slice = tonumber(arg[3]) or arg[3] }
  outputs = { assert(sluice.sink.json { path = arg[4] }),
    assert(sluice.sink.ipfix { collector = "127.0.0.1:" .. port, rate = 0 }) } -- unpaced: the cost, not the delivery
elseif mode == "engine" then
  policies = {} -- an empty policy table: the engine alone
  open_opts = { read = trace, features = os.getenv("BENCH_FEATURES") }
elseif mode == "trim" then
  -- a bounded table at MAX flows (half the trace's concurrency): trims
  -- run constantly, the pool is the limit, no grace
  local max = tonumber(arg[3])
  if not max then fail("trim mode needs MAX_FLOWS") end
  policies = {}
  open_opts = { read = trace, max_flows = max, low_flows = math.floor(max * 0.9),
    pool_flows = max, grace = 0 }
elseif mode == "update" then
  -- engine:update from Lua: N updates of single id keys over KEYS keys,
  -- made from a handler (updates belong to a running engine)
  local n, keys = tonumber(arg[3]) or 1000000, tonumber(arg[4]) or 100000
  local eng = assert(sluice.open { read = trace })
  local t0, t1
  local done = false
  assert(eng:run {
    on_flow_start = function()
      if done then return end
      done = true
      local stats = { pkts = 1, bytes = 100 }
      local key = { 0 }
      t0 = core.monotonic()
      for i = 1, n do
        key[1] = i % keys
        assert(eng:update { keys = key, stats = stats })
      end
      t1 = core.monotonic()
    end,
  }, nil, {})
  io.write(string.format("updates %d seconds %.6f rate %.0f\n", n, t1 - t0, n / (t1 - t0)))
  os.exit(0)
elseif mode == "policy" then
  local path, slice = arg[3], arg[4]
  if not path or not slice then fail("policy mode needs POLICY.lua and SLICE") end
  local inst, err = sluice.policy.load(path, {})
  if not inst then fail(err) end
  policies = { inst }
  open_opts = { read = trace, slice = tonumber(slice) or slice }
else
  fail("unknown mode '" .. tostring(mode) .. "' (engine, trim, update or policy)")
end

local emitted = 0
local function emit() emitted = emitted + 1 end

collectgarbage()
local t0 = core.monotonic()
local eng, err = sluice.open(open_opts)
if not eng then fail(err) end
local rok, rerr = eng:run(policies, nil, { emit = not outputs and emit or nil, outputs = outputs })
local t1 = core.monotonic()
if not rok then fail(rerr) end

local st = eng:stats()
if outputs and outputs[1] then
  local json, ipfix = rerr.sinks[outputs[1].name], outputs[2]:counts()
  emitted = json.written
  io.stderr:write(string.format("json lines %d, ipfix records %d in %d messages (lost %d)\n",
    json.written, ipfix.records, ipfix.messages, ipfix.lost_records))
  os.remove(arg[4])
end
io.write(string.format("packets %d seconds %.6f rss_kb %d flows %d emitted %d trims %d refused %d " ..
  "slice_records %d\n", st.packets, t1 - t0, math.floor(core.peak_rss() / 1024), st.flows_started,
  emitted, st.trims, st.flows_refused, st.slice_records))
eng:close()
