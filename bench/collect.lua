-- bench/collect.lua: collector throughput. An exporter replay (a child
-- process sending IPFIX messages made by sluice's own exporter, over TCP
-- so that nothing is lost, or UDP) into `sluice collect`'s engine with the
-- default policy writing every flow as JSON to /dev/null.
--
--   luajit bench/collect.lua tcp|udp RECORDS
--
-- Prints one line for bench/run.sh:
--   records N seconds S rate R flows F drops D
do
  local dir = (arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or ".") .. "/.."
  package.path = dir .. "/lua/?.lua;" .. dir .. "/lua/?/init.lua;" .. package.path
  package.cpath = dir .. "/core/build/?.so;" .. package.cpath
end

local ffi = require "ffi"
local sluice = require "sluice"
local core = require "sluice.core"
local C = core.C

local transport, n = arg[1] or "tcp", tonumber(arg[2]) or 2000000
local function fail(msg)
  io.stderr:write("bench/collect.lua: ", msg, "\n")
  os.exit(1)
end

ffi.cdef [[
int fork(void);
int waitpid(int pid, int *status, int options);
int usleep(unsigned int usec);
void _exit(int status);
]]

-- The messages: n flow records, each flow reported as two uniflows (as
-- most exporters do), over 50k distinct flows.
local max_bytes = transport == "tcp" and 65535 or 1400
local o = ffi.new("struct sl_ipfix_opts", { domain = 1, max_bytes = max_bytes })
local xp = ffi.new("struct sl_ipfix *[1]")
assert(C.sl_ipfix_new(xp, o) == 0)
local x = xp[0]
local f = ffi.new("struct sl_flow_rec")
local dptr = ffi.new("const uint8_t *[1]")
local msgs = {}
local base = 1700000000ULL * 1000000000ULL
local function take()
  local len = C.sl_ipfix_take(x, 1700000000, dptr)
  if len > 0 then msgs[#msgs + 1] = ffi.string(dptr[0], len) end
end
for i = 0, n - 1 do
  local flow_no = math.floor(i / 2) % 50000
  local client, server = f.key.src, f.key.dst
  local cport, sport = 1024 + flow_no % 60000, 443
  if i % 2 == 1 then -- the reverse uniflow
    client, server, cport, sport = f.key.dst, f.key.src, sport, cport
  end
  f.key.ip_version, f.key.proto = 4, 6
  client[0], client[1], client[2], client[3] = 10, 1, math.floor(flow_no / 256), flow_no % 256
  server[0], server[1], server[2], server[3] = 192, 0, 2, 1 + flow_no % 200
  f.key.sport, f.key.dport = cport, sport
  local t = base + (i * 1000ULL)
  f.fwd.first_ns, f.fwd.last_ns = t, t + 1000000ULL
  f.fwd.pkts, f.fwd.bytes = 10, 5000
  f.rev.pkts, f.rev.bytes, f.rev.last_ns = 0, 0, 0
  f.reason_code = 3
  if C.sl_ipfix_add_flow(x, f) ~= 0 then
    take()
    assert(C.sl_ipfix_add_flow(x, f) == 0)
  end
end
take()

math.randomseed(os.time())
local port = 20000 + math.random(0, 30000)
local listen = transport .. ":127.0.0.1:" .. port
local eng, err = sluice.open { listen = { listen }, idle_exit = "0.3s", rcvbuf = 64 * 1024 * 1024 }
if not eng then fail(err) end

local pid = ffi.C.fork()
if pid == 0 then
  -- the exporter: blocking sends (TCP waits for the collector)
  local sock = require "sluice.sock"
  local s = assert(sock.connect(listen))
  ffi.C.usleep(100000)
  for _, m in ipairs(msgs) do
    local off = 0
    while off < #m do
      local k = s:send(ffi.cast("const char *", m) + off, #m - off)
      if k then off = off + k else ffi.C.usleep(50) end
      if transport == "udp" then break end
    end
  end
  s:close()
  ffi.C._exit(0)
end

local first
local json = assert(sluice.sink.json { path = "/dev/null" })
local t0 = core.monotonic()
local ok, rerr = eng:run({ require "sluice.policies.flows" }, nil, { outputs = { json },
  progress = function(e)
    if not first and e.cstats.records > 0 then first = core.monotonic() end
  end, progress_interval = 0.01 })
local t1 = core.monotonic() - 0.3 -- idle_exit
ffi.C.waitpid(pid, ffi.new("int[1]"), 0)
if not ok then fail(rerr) end
local st = eng:stats()
local secs = t1 - (first or t0)
io.write(string.format("records %d seconds %.6f rate %.0f flows %d drops %d messages %d sent %d\n",
  st.records, secs, st.records / secs, st.flows_started, st.kernel_drops or 0, st.received or 0, n))
