-- Helpers for the live-capture specs: a network namespace with a veth pair
-- (sluice captures on the host end, traffic is replayed from the peer end
-- inside the namespace), and sluice run as a background process that can be
-- signalled and waited for.
--
--   local netns = require "support.netns"
--   local ok, why = netns.available()          -- root, ip netns, veth, tcpreplay
--   local env = assert(netns.setup { queues = 2 })
--   finally(function() env:destroy() end)   -- busted: one finally per test
--   local p = netns.start("-i " .. env.host .. " --backend afpacket", dir)
--   assert(p:wait_ready("afpacket", env))
--   env:replay(pcap_path)
--   p:signal("TERM"); local code = p:wait(10)
--
-- External tools (ip, sysctl, tcpreplay, ss) run without the sanitizer
-- preload that the ASan pass of `make check` sets (run.PLAIN); sluice keeps
-- it, so the sanitized core is the one under test there.
local ffi = require "ffi"
local run = require "support.run"

pcall(ffi.cdef, "int usleep(unsigned int usec);")

local M = {}
local PLAIN = run.PLAIN

-- Sleeps for s seconds (fractions allowed).
function M.sleep(s)
  local us = math.floor(s * 1e6)
  while us > 0 do
    local step = math.min(us, 900000)
    ffi.C.usleep(step)
    us = us - step
  end
end

-- Monotonic seconds (for deadlines).
local now = require("sluice.core").monotonic
M.now = now

-- Runs a command (no sanitizer preload) and returns run.sh's result.
local function sh(cmd)
  return run.sh(PLAIN .. "sh -c " .. run.q(cmd))
end
M.sh = sh

local function ok_or_why(r, what)
  if r.code == 0 then return true end
  return nil, what .. " failed (exit " .. r.code .. "): " .. (r.err ~= "" and r.err or r.out):gsub("%s+$", "")
end

local function self_pid()
  local f = io.open("/proc/self/stat", "r")
  local s = f and f:read("*l") or ""
  if f then f:close() end
  return tonumber(s:match("^(%d+)")) or math.random(1, 99999)
end

local PID = self_pid() % 100000
local counter = 0

-- Unique names for one setup: namespace, host end, peer end (<= 15 chars).
local function names()
  counter = counter + 1
  local tag = string.format("%d%c", PID, 97 + (counter - 1) % 26) ..
    (counter > 26 and tostring(math.floor((counter - 1) / 26)) or "")
  return "sluice-spec-" .. tag, "slh" .. tag, "slp" .. tag
end

local available_cache

-- Whether live specs can run here: true, or false and the reason.
function M.available()
  if available_cache then return available_cache[1], available_cache[2] end
  local function result(ok, why)
    available_cache = { ok, why }
    return ok, why
  end
  local id = sh("id -u")
  if id.out:match("^%s*(%d+)") ~= "0" then
    return result(false, "live capture specs need root (running as uid " ..
      (id.out:match("%d+") or "?") .. ")")
  end
  for _, tool in ipairs { "ip", "tcpreplay", "sysctl" } do
    if not run.have(tool) then
      return result(false, tool .. " is not installed (apt-get install " ..
        (tool == "ip" and "iproute2" or tool == "sysctl" and "procps" or tool) .. ")")
    end
  end
  local ns, host, peer = names()
  local r = sh("ip netns add " .. ns)
  if r.code ~= 0 then
    return result(false, "the kernel refuses network namespaces: ip netns add: " ..
      (r.err:gsub("%s+$", "")))
  end
  r = sh("ip link add " .. host .. " type veth peer name " .. peer .. " netns " .. ns)
  sh("ip link del " .. host .. " 2>/dev/null; ip netns del " .. ns)
  if r.code ~= 0 then
    return result(false, "the kernel refuses veth pairs: ip link add type veth: " ..
      (r.err:gsub("%s+$", "")))
  end
  return result(true)
end

local Env = {}
Env.__index = Env

local function ifindex(name, ns)
  local r = sh((ns and ("ip netns exec " .. ns .. " ") or "") .. "cat /sys/class/net/" .. name .. "/ifindex")
  return tonumber(r.out:match("%d+"))
end

local function mac_of(name, ns)
  local r = sh((ns and ("ip netns exec " .. ns .. " ") or "") .. "cat /sys/class/net/" .. name .. "/address")
  return r.out:match("[%x:]+")
end

-- A fresh namespace and veth pair, both ends up, IPv6 off on both before
-- they come up (so the kernel sends nothing of its own), no addresses.
-- opts.queues: rx/tx queues per end (default 1). Returns the environment
-- { ns, host, peer, host_index, host_mac, peer_mac } or nil and why; on
-- failure everything made so far is removed.
function M.setup(opts)
  opts = opts or {}
  local q = opts.queues or 1
  local ns, host, peer = names()
  local env = setmetatable({ ns = ns, host = host, peer = peer, queues = q }, Env)
  local qs = q > 1 and string.format(" numtxqueues %d numrxqueues %d", q, q) or ""
  local steps = {
    { "ip netns add " .. ns, "ip netns add" },
    { "ip link add " .. host .. qs .. " type veth peer name " .. peer .. qs .. " netns " .. ns,
      "ip link add type veth" },
    { "sysctl -qw net.ipv6.conf." .. host .. ".disable_ipv6=1", "sysctl disable_ipv6 (host end)" },
    { "ip netns exec " .. ns .. " sysctl -qw net.ipv6.conf." .. peer .. ".disable_ipv6=1",
      "sysctl disable_ipv6 (peer end)" },
    { "ip link set dev " .. host .. " up", "ip link set up (host end)" },
    { "ip netns exec " .. ns .. " ip link set dev " .. peer .. " up", "ip link set up (peer end)" },
  }
  for _, s in ipairs(steps) do
    local ok, why = ok_or_why(sh(s[1]), s[2])
    if not ok then
      env:destroy()
      return nil, why
    end
  end
  env.host_index = ifindex(host)
  env.host_mac, env.peer_mac = mac_of(host), mac_of(peer, ns)
  -- both ends report carrier once the pair is up; wait for it briefly
  for _ = 1, 50 do
    local r = sh("cat /sys/class/net/" .. host .. "/operstate")
    if r.out:match("up") then break end
    M.sleep(0.02)
  end
  return env
end

-- Removes the veth pair and the namespace (safe to call twice).
function Env:destroy()
  if self.destroyed then return end
  self.destroyed = true
  sh("ip link del " .. self.host .. " 2>/dev/null; ip netns del " .. self.ns .. " 2>/dev/null; true")
end

-- Runs cmd inside the namespace.
function Env:exec(cmd)
  return sh("ip netns exec " .. self.ns .. " " .. cmd)
end

-- Replays a pcap from the peer end. opts.topspeed, opts.cpu (pin tcpreplay
-- to one CPU with taskset). Returns run.sh's result; r.sent is the number
-- of packets tcpreplay reports as sent (when it prints it).
function Env:replay(file, opts)
  opts = opts or {}
  local pin = ""
  if opts.cpu and run.have("taskset") then pin = "taskset -c " .. opts.cpu .. " " end
  local r = self:exec(pin .. "tcpreplay " .. (opts.topspeed and "--topspeed " or "") ..
    "-i " .. self.peer .. " " .. run.q(file))
  r.sent = tonumber((r.out .. r.err):match("Actual: (%d+) packets"))
  return r
end

-- Is there an XDP program on the host end? (ip link show prints "xdp" or
-- "prog/xdp" while one is attached.)
function Env:xdp_attached()
  local r = sh("ip -d link show dev " .. self.host)
  return r.out:match("xdp") ~= nil, r.out
end

-- Number of AF_PACKET sockets bound to the host end.
function Env:packet_sockets()
  local f = io.open("/proc/net/packet", "r")
  if not f then return 0 end
  local n = 0
  for line in f:lines() do
    -- sk RefCnt Type Proto Iface R Rmem User Inode
    local iface = line:match("^%x+%s+%d+%s+%d+%s+%x+%s+(%d+)")
    if iface and tonumber(iface) == self.host_index then n = n + 1 end
  end
  f:close()
  return n
end

-- Number of AF_XDP sockets bound to the host end (ss --xdp), or nil when
-- ss cannot tell.
function Env:xdp_sockets()
  local r = sh("ss -a --xdp 2>/dev/null")
  if r.code ~= 0 or not r.out:match("%S") then return nil end
  local n = 0
  for line in r.out:gmatch("[^\n]+") do
    if line:find(self.host, 1, true) or line:find("ifindex " .. tostring(self.host_index), 1, true)
      or line:find("ifindex:" .. tostring(self.host_index), 1, true) then
      n = n + 1
    end
  end
  return n
end

-- ---- sluice in the background ----------------------------------------------

local Proc = {}
Proc.__index = Proc

-- Starts `scripts/sluice run ARGS` in the background, stdout and stderr to
-- files in dir. Returns the process handle (pid, out, err files).
function M.start(args, dir)
  dir = dir or run.tmpdir()
  counter = counter + 1
  local base = string.format("%s/sluice%d", dir, counter)
  local p = setmetatable({ args = args, pidf = base .. ".pid", rcf = base .. ".rc",
    outf = base .. ".out", errf = base .. ".err", dir = dir, started = os.time() }, Proc)
  -- a simple command in the background: $! is sluice itself (env execs luajit)
  local script = string.format(
    "cd %s || exit 1; %s run %s >%s 2>%s </dev/null & echo $! >%s.tmp; mv %s.tmp %s; wait $!; echo $? >%s.tmp; mv %s.tmp %s",
    run.q(run.root), run.SLUICE, args, run.q(p.outf), run.q(p.errf), run.q(p.pidf),
    run.q(p.pidf), run.q(p.pidf), run.q(p.rcf), run.q(p.rcf), run.q(p.rcf))
  os.execute("sh -c " .. run.q(script) .. " >/dev/null 2>&1 </dev/null &")
  for _ = 1, 500 do
    local s = run.slurp(p.pidf)
    if s and s:match("%d+") then
      p.pid = tonumber(s:match("%d+"))
      break
    end
    M.sleep(0.01)
  end
  assert(p.pid, "sluice did not start: " .. args)
  return p
end

function Proc:cmd()
  return "scripts/sluice run " .. self.args
end

-- Exit code once the process has exited, else nil.
function Proc:exit_code()
  local s = run.slurp(self.rcf)
  return s and tonumber(s:match("%d+")) or nil
end

function Proc:running()
  return self:exit_code() == nil
end

function Proc:stderr()
  return run.slurp(self.errf) or ""
end

function Proc:stdout()
  return run.slurp(self.outf) or ""
end

-- Sends a signal ("TERM", "INT", "KILL") to sluice.
function Proc:signal(sig)
  if self.pid and self:running() then
    os.execute(PLAIN .. "kill -" .. sig .. " " .. self.pid .. " >/dev/null 2>&1")
  end
end

-- Waits up to timeout seconds for the exit; returns the exit code or nil.
function Proc:wait(timeout)
  local deadline = now() + (timeout or 10)
  repeat
    local c = self:exit_code()
    if c then return c end
    M.sleep(0.05)
  until now() > deadline
  return nil
end

-- Every process of this run: sluice, its children (the workers), and
-- workers left behind by a parent that died (their command line names this
-- run's directory, e.g. an output path in it).
function Proc:pids()
  local list = {}
  local mark = self.mark or self.dir
  local h = io.popen("ls /proc 2>/dev/null")
  for pid in h:lines() do
    if pid:match("^%d+$") then
      local f = io.open("/proc/" .. pid .. "/cmdline", "rb")
      local cl = f and f:read("*a") or ""
      if f then f:close() end
      local st = io.open("/proc/" .. pid .. "/stat", "r")
      local stat = st and st:read("*l") or ""
      if st then st:close() end
      local ppid = tonumber(stat:match("^%d+ %b() %a (%d+)"))
      local n = tonumber(pid)
      if n == self.pid or (self.pid and ppid == self.pid) or
        (cl:find(mark, 1, true) and cl:find("sluice", 1, true) and not cl:find("^sh%z")) then
        list[#list + 1] = n
      end
    end
  end
  h:close()
  return list
end

-- Stops every process of the run whatever happens (for finally blocks):
-- TERM, then KILL.
function Proc:kill()
  local function signal_all(sig, pids)
    if #pids > 0 then
      os.execute(PLAIN .. "kill -" .. sig .. " " .. table.concat(pids, " ") .. " >/dev/null 2>&1")
    end
  end
  local pids = self:pids()
  if #pids == 0 then return end
  signal_all("TERM", pids)
  local deadline = now() + 3
  while now() < deadline and #self:pids() > 0 do M.sleep(0.05) end
  signal_all("KILL", self:pids())
  self:wait(1)
end

-- Waits until the capture is open on env's host end: for afpacket and pcap
-- until `workers` packet sockets are bound to it, for afxdp until the XDP
-- program is attached (and, when ss can tell, `workers` XDP sockets exist).
-- Then settles for a moment. Returns true, or nil and why (the process
-- exited, or the timeout passed).
function Proc:wait_ready(backend, env, workers, timeout)
  workers = workers or 1
  local deadline = now() + (timeout or 10)
  while true do
    local c = self:exit_code()
    if c then
      return nil, string.format("sluice exited (%d) before capturing\nstderr:\n%s", c, self:stderr())
    end
    local ready
    if backend == "afxdp" then
      ready = env:xdp_attached()
      if ready then
        local n = env:xdp_sockets()
        if n and n > 0 and n < workers then ready = false end
      end
    else
      ready = env:packet_sockets() >= workers
    end
    if ready then break end
    if now() > deadline then
      return nil, string.format("sluice did not start capturing on %s within %ds\nstderr:\n%s",
        env.host, timeout or 10, self:stderr())
    end
    M.sleep(0.05)
  end
  -- the socket is bound; give the ring (and the workers' other sockets) a moment
  M.sleep(backend == "afxdp" and 0.5 or 0.3)
  return true
end

return M
