-- Live capture end to end: a veth pair with one end in a fresh network
-- namespace; a pcap with known flows is replayed (tcpreplay) from inside the
-- namespace while `sluice run -i HOSTIF --backend B` captures on the host
-- end. The flows sluice reports must be those of `sluice run -r` over the
-- same pcap: same 5-tuples, packets and bytes, "fin"/"rst" where the pcap
-- closes a flow and "shutdown" (never "eof") for the rest. Also: --filter,
-- --workers 2 (each flow once), the XDP program removed on exit, policy
-- end events and stop() on SIGTERM, errors (no such interface, the
-- interface vanishing), idle timeouts and slices on an idle interface,
-- --stats lines.
--
-- Needs root and a kernel that allows network namespaces and veth pairs;
-- otherwise every test is pending with the reason.
local run = require "support.run"
local pcap = require "support.pcap"
local netns = require "support.netns"

local SLUICE = run.SLUICE
local BACKENDS = { "afpacket", "pcap", "afxdp" }
local AVAILABLE, WHY = netns.available()

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

-- ---- the traffic -----------------------------------------------------------

-- 30 TCP flows (20 closed by FIN from both sides and the last ACK, 5 reset,
-- 5 left open, 2 of those 802.1Q tagged) and 20 UDP flows (left open),
-- interleaved round robin, 1 ms apart. Every flow has its own 5-tuple.
-- untagged: no 802.1Q tags at all. Returns the packets and the expected
-- flows keyed by 5-tuple.
local function build_traffic(untagged)
  local flows = {}
  local order = {}
  local function add_flow(key, list, expect)
    flows[key] = expect
    order[#order + 1] = list
  end
  -- A packet of the flow e (forward or back) appended to list and counted
  -- in e; fields: the rest of pcap.pkt's spec (flags, len, vlans).
  local function add_packet(list, e, fwd, fields)
    fields.proto = e.proto
    fields.src, fields.dst = fwd and e.src or e.dst, fwd and e.dst or e.src
    fields.sport, fields.dport = fwd and e.sport or e.dport, fwd and e.dport or e.sport
    local frame = pcap.pkt(fields)
    list[#list + 1] = frame
    if fwd then
      e.pkts_fwd, e.bytes_fwd = e.pkts_fwd + 1, e.bytes_fwd + #frame
    else
      e.pkts_rev, e.bytes_rev = e.pkts_rev + 1, e.bytes_rev + #frame
    end
  end

  for i = 1, 30 do
    local c, s = "10.1.0." .. i, "10.2.0." .. (1 + i % 5)
    local cp, sp = 40000 + i, (i % 2 == 0) and 80 or 443
    local vlans = i >= 29 and not untagged and { 100 + i } or nil
    local list, e = {}, { proto = "tcp", src = c, sport = cp, dst = s, dport = sp,
      pkts_fwd = 0, pkts_rev = 0, bytes_fwd = 0, bytes_rev = 0, vlan = vlans and vlans[1] or 0 }
    local function p(fwd, flags, len)
      add_packet(list, e, fwd, { flags = flags, len = len, vlans = vlans })
    end
    p(true, "S", 0)
    p(false, "SA", 0)
    p(true, "A", 0)
    for k = 1, 1 + i % 4 do
      p(true, "PA", 100 + 10 * i)
      p(false, "PA", 200 + 150 * k + i)
    end
    if i <= 20 then
      p(true, "FA", 0)
      p(false, "FA", 0)
      p(true, "A", 0)
      e.end_reason = "fin"
    elseif i <= 25 then
      p(false, "R", 0)
      e.end_reason = "rst"
    else
      e.end_reason = "eof" -- from a file; "shutdown" live
    end
    add_flow(string.format("tcp %s:%d %s:%d", c, cp, s, sp), list, e)
  end

  for j = 1, 20 do
    local c, s = "10.3.0." .. j, "10.4.0." .. (1 + j % 3)
    local cp, sp = 50000 + j, (j % 2 == 0) and 53 or (5000 + j)
    local list, e = {}, { proto = "udp", src = c, sport = cp, dst = s, dport = sp,
      pkts_fwd = 0, pkts_rev = 0, bytes_fwd = 0, bytes_rev = 0, vlan = 0, end_reason = "eof" }
    local function p(fwd, len)
      add_packet(list, e, fwd, { len = len })
    end
    for k = 1, 1 + j % 5 do
      p(true, 40 + j + k)
      p(false, 300 + 20 * j)
    end
    if j % 2 == 1 then p(true, 60) end
    add_flow(string.format("udp %s:%d %s:%d", c, cp, s, sp), list, e)
  end

  -- round robin over the flows, order inside each flow kept
  local packets, t, left = {}, 0, true
  local pos = 1
  while left do
    left = false
    for _, list in ipairs(order) do
      local f = list[pos]
      if f then
        left = true
        packets[#packets + 1] = { ts = pcap.t(t), frame = f }
        t = t + 0.001
      end
    end
    pos = pos + 1
  end
  return packets, flows
end

local PACKETS, EXPECTED = build_traffic()
local N_FLOWS, N_UDP = 0, 0
for _, e in pairs(EXPECTED) do
  N_FLOWS = N_FLOWS + 1
  if e.proto == "udp" then N_UDP = N_UDP + 1 end
end

local function key_of(f)
  return string.format("%s %s:%d %s:%d", f.proto, f.src, f.sport, f.dst, f.dport)
end

-- The same traffic without 802.1Q tags: veth picks the receive queue from
-- the sender's flow hash, and for tagged frames sent through a packet
-- socket (tcpreplay) that hash changes from packet to packet, so the kernel
-- itself would split a tagged flow over the queues (afxdp workers).
local UNTAGGED = build_traffic(true)

local TRAFFIC = {} -- variant ("tagged", "untagged") -> path of the pcap
local TRUTH = {}   -- variant -> the flows of `sluice run -r`, keyed by 5-tuple

local function traffic(variant)
  variant = variant or "tagged"
  if not TRAFFIC[variant] then
    TRAFFIC[variant] = pcap.write(variant == "untagged" and UNTAGGED or PACKETS,
      { path = run.tmpdir() .. "/live-" .. variant .. ".pcap" })
  end
  return TRAFFIC[variant]
end

local function truth(variant)
  variant = variant or "tagged"
  if TRUTH[variant] then return TRUTH[variant] end
  local r, recs = run.sluice_json("-r " .. run.q(traffic(variant)))
  assert(r.code == 0, "ground truth run failed:\n" .. run.describe(r))
  local t = {}
  for _, f in ipairs(run.of_type(recs, "flow")) do t[key_of(f)] = f end
  TRUTH[variant] = t
  return t
end

-- Compares live flows with the truth (only keys passing keep(truth flow)).
-- Flows the file leaves open must end "shutdown" (or one of open_reasons).
-- Returns a list of differences (empty when equal).
local function compare(live, keep, started, open_reasons, variant)
  local diffs = {}
  local function d(fmt, ...) diffs[#diffs + 1] = string.format(fmt, ...) end
  local want = {}
  local n_want = 0
  for k, f in pairs(truth(variant)) do
    if not keep or keep(f) then
      want[k] = f
      n_want = n_want + 1
    end
  end
  local seen, ids = {}, {}
  for _, f in ipairs(live) do
    local k = key_of(f)
    if f.id == nil then
      d("flow %s has no id", k)
    elseif ids[f.id] then
      d("flow id %s reported twice (%s and %s)", tostring(f.id), ids[f.id], k)
    else
      ids[f.id] = k
    end
    if seen[k] then d("flow %s reported %d times", k, seen[k] + 1) end
    seen[k] = (seen[k] or 0) + 1
    local t = want[k]
    if not t then
      d("unexpected flow %s (%d+%d packets, end %s)", k, f.pkts_fwd, f.pkts_rev, tostring(f.end_reason))
    else
      for _, field in ipairs { "pkts_fwd", "pkts_rev", "bytes_fwd", "bytes_rev", "vlan",
        "tcp_flags_fwd", "tcp_flags_rev" } do
        if f[field] ~= t[field] then
          d("%s: %s is %s, the file says %s", k, field, tostring(f[field]), tostring(t[field]))
        end
      end
      local reason = t.end_reason == "eof" and "shutdown" or t.end_reason
      if f.end_reason ~= reason and not (t.end_reason == "eof" and open_reasons and
        open_reasons[f.end_reason]) then
        d("%s: end_reason is %s, expected %s", k, tostring(f.end_reason), reason)
      end
      if started and not (f.first >= started - 2 and f.last <= os.time() + 2 and f.first <= f.last) then
        d("%s: first/last %.6f/%.6f are not wall-clock times of this run (started %d)",
          k, f.first, f.last, started)
      end
    end
  end
  for k in pairs(want) do
    if not seen[k] then d("flow %s missing", k) end
  end
  if #live ~= n_want then d("%d flows reported, expected %d", #live, n_want) end
  return diffs
end

local function assert_same(live, keep, started, context, open_reasons, variant)
  local diffs = compare(live, keep, started, open_reasons, variant)
  if #diffs > 0 then
    local shown = {}
    for i = 1, math.min(#diffs, 15) do shown[i] = "  " .. diffs[i] end
    assert(false, string.format("%d difference(s) against `sluice run -r`:\n%s%s\n%s", #diffs,
      table.concat(shown, "\n"), #diffs > 15 and "\n  ..." or "", context or ""))
  end
end

-- ---- a capture run ---------------------------------------------------------

-- busted keeps one finally per test: cleanups of the running test go on a
-- stack that it runs in reverse order, whatever happened.
local cleanups = {}
local function defer(fn)
  cleanups[#cleanups + 1] = fn
end

-- Runs the test body only where live capture is possible.
local said_why
local function live_it(name, fn)
  it(name, function()
    if not AVAILABLE then
      if not said_why then io.stderr:write("live_spec: skipped: ", WHY, "\n") end
      said_why = true
      pending(WHY)
      return
    end
    finally(function()
      for i = #cleanups, 1, -1 do
        local f = cleanups[i]
        cleanups[i] = nil
        pcall(f)
      end
    end)
    fn()
  end)
end

-- A namespace for this test, removed after it whatever happens.
local function environment(opts)
  local env, why = netns.setup(opts)
  assert(env, "cannot set up the namespace: " .. tostring(why))
  defer(function() env:destroy() end)
  return env
end

local function describe_proc(p, code)
  return string.format("command: %s\nexit: %s\nstderr:\n%s", p:cmd(), tostring(code),
    p:stderr():sub(1, 3000))
end

-- Starts sluice on env's host end with extra args, waits until it captures.
local function start(env, backend, args, workers)
  local dir = run.tmpdir()
  local out = dir .. "/out.json"
  local p = netns.start(string.format("-i %s --backend %s %s --out json:%s", env.host, backend,
    args or "", run.q(out)), dir)
  defer(function() p:kill() end)
  local ok, why = p:wait_ready(backend, env, workers)
  assert(ok, why)
  p.out_json = out
  return p
end

-- SIGTERM, exit 0 within 5 s (a live source polls every 100 ms); returns
-- the records written. signalled: the signal was sent already.
local function stop(p, signalled)
  if not signalled then p:signal("TERM") end
  local code = p:wait(5)
  assert(code ~= nil, "sluice did not exit within 5 s of SIGTERM\n" .. describe_proc(p))
  assert(code == 0, "sluice should exit 0 after SIGTERM\n" .. describe_proc(p, code))
  assert(run.exists(p.out_json), "no output file\n" .. describe_proc(p, code))
  return run.json_lines(p.out_json)
end

local function replay(env, opts)
  opts = opts or {}
  local r = env:replay(traffic(opts.variant), opts)
  assert(r.code == 0, "tcpreplay failed:\n" .. run.describe(r))
  if r.sent then
    assert(r.sent == #PACKETS, string.format("tcpreplay sent %d of %d packets\n%s", r.sent,
      #PACKETS, run.describe(r)))
  end
  return r
end

-- The whole cycle: capture, replay, wait, stop; returns flows, records, proc.
local function capture(env, backend, args, opts)
  opts = opts or {}
  local started = os.time()
  local p = start(env, backend, args, opts.workers)
  replay(env, opts)
  netns.sleep(opts.settle or 1)
  local recs = stop(p)
  return run.of_type(recs, "flow"), recs, p, started
end

-- ---- the specs -------------------------------------------------------------

describe("live capture", function()
  teardown(function()
    run.cleanup()
    pcap.cleanup()
  end)

  it("the ground truth: `sluice run -r` over the pcap gives the flows it was built with", function()
    local t = truth()
    local n = 0
    for k, e in pairs(EXPECTED) do
      local f = t[k]
      assert(f, "flow " .. k .. " missing from `sluice run -r`")
      for _, field in ipairs { "pkts_fwd", "pkts_rev", "bytes_fwd", "bytes_rev", "vlan", "end_reason" } do
        assert(f[field] == e[field], string.format("%s: %s is %s, built with %s", k, field,
          tostring(f[field]), tostring(e[field])))
      end
    end
    for _ in pairs(t) do n = n + 1 end
    assert.equal(N_FLOWS, n)
    assert.equal(50, N_FLOWS)
  end)

  it("a nonexistent interface: non-zero exit and a message naming it", function()
    for _, backend in ipairs(BACKENDS) do
      local r = run.sh(SLUICE .. " run -i sl-nosuch0 --backend " .. backend .. " --out json:/dev/null")
      assert(r.code ~= 0, backend .. ": should fail\n" .. run.describe(r))
      assert(has(r.err, "sl-nosuch0"), backend .. ": stderr should name the interface\n" .. run.describe(r))
      assert(not r.err:match("stack traceback"), backend .. ": no Lua traceback\n" .. run.describe(r))
    end
    -- tcpdump's habit: only libpcap has it
    for _, backend in ipairs { "afpacket", "afxdp" } do
      local r = run.sh(SLUICE .. " run -i any --backend " .. backend .. " --out json:/dev/null")
      assert(r.code ~= 0 and has(r.err, "--backend pcap"), backend .. ": -i any should point to " ..
        "--backend pcap\n" .. run.describe(r))
    end
  end)

  -- they were runtime failures (exit 1), the same --filter on a file a
  -- usage error (exit 2)
  live_it("bad live options and filters are usage errors: exit 2, one line naming the option", function()
    local cases = {
      { "-i ''", "no interface" },
      { "-i lo --ring-block-size 1000", "block size 1000" },
      { "-i lo --ring-frame-size 7", "frame size 7" },
      { "-i lo --ring-timeout 100000", "ring timeout 100000 ms: at most 10000" },
      { "-i lo --backend afxdp --xdp-mode skb --zero-copy on", "zero-copy" },
    }
    for _, backend in ipairs(BACKENDS) do
      cases[#cases + 1] = { "-i lo --backend " .. backend .. " --filter 'bogus(('", "--filter: bad filter 'bogus(('" }
    end
    for _, c in ipairs(cases) do
      local r = run.sh(SLUICE .. " run " .. c[1] .. " --out json:/dev/null")
      assert.equal(2, r.code, c[1] .. "\n" .. run.describe(r))
      assert(has(r.err, c[2]), c[1] .. ": the line should say " .. c[2] .. "\n" .. run.describe(r))
      assert(not r.err:match("stack traceback"), run.describe(r))
    end
  end)

  -- afpacket took both copies of a frame sent on lo (outgoing, then
  -- received): every packet counted twice
  live_it("on lo, each backend counts a datagram once", function()
    for _, backend in ipairs { "afpacket", "pcap" } do
      local dir = run.tmpdir()
      local base = 31000 + math.random(0, 999) * 20
      local r = run.sh(string.format("%s run -i lo --backend %s -q --out json:%s & p=$!; sleep 1.5; " ..
        "%s/usr/bin/python3 -c 'import socket;s=socket.socket(2,2);" ..
        "[s.sendto(b\"hello\",(\"127.0.0.1\",%d+i)) for i in range(20)]'; sleep 0.5; kill -TERM $p; wait $p",
        SLUICE, backend, run.q(dir .. "/lo.json"), run.PLAIN, base))
      assert(r.code == 0, backend .. "\n" .. run.describe(r))
      local seen = 0
      for _, f in ipairs(run.of_type(run.json_lines(dir .. "/lo.json"), "flow")) do
        if f.proto == "udp" and f.dport >= base and f.dport < base + 20 then
          seen = seen + 1
          assert.equal(1, f.pkts_fwd, backend .. ": " .. f.dport)
        end
      end
      assert.equal(20, seen, backend)
    end
  end)

  -- the fanout group id was the parent's pid: two probes in pid
  -- namespaces (containers, both pid 1) joined one group on the shared
  -- interface and each saw part of its traffic
  live_it("two --workers probes on one interface, both pid 1 of their namespace, each see every flow", function()
    if not run.have("unshare") then pending("unshare is not installed") return end
    local env = environment()
    local dir = run.tmpdir()
    local want = 0
    for _ in pairs(truth()) do want = want + 1 end
    -- unshare without the sanitizer runtime (a sanitizer run preloads
    -- it), sluice with it again
    local again = string.format("env LD_PRELOAD=%s ASAN_OPTIONS=%s UBSAN_OPTIONS=%s ",
      run.q(os.getenv("LD_PRELOAD") or ""), run.q(os.getenv("ASAN_OPTIONS") or ""),
      run.q(os.getenv("UBSAN_OPTIONS") or ""))
    for _, name in ipairs { "a", "b" } do
      os.execute(string.format("%sunshare --pid --fork --mount-proc %s%s run -i %s --workers 2 -q " ..
        "--out json:%s >/dev/null 2>%s &", run.PLAIN, again, SLUICE, env.host,
        run.q(dir .. "/" .. name .. ".json"), run.q(dir .. "/" .. name .. ".err")))
    end
    netns.sleep(3)
    replay(env)
    netns.sleep(1)
    for _, name in ipairs { "a", "b" } do -- the parent, child of unshare
      os.execute(string.format("kill -INT $(%spgrep -P $(%spgrep -f %s))", run.PLAIN, run.PLAIN,
        run.q("^unshare .*json:" .. dir .. "/" .. name .. ".json")))
    end
    netns.sleep(4)
    for _, name in ipairs { "a", "b" } do
      local flows = run.exists(dir .. "/" .. name .. ".json") and
        run.of_type(run.json_lines(dir .. "/" .. name .. ".json"), "flow") or {}
      assert(#flows >= want, string.format("probe %s: %d flows of %d\n%s", name, #flows, want,
        run.slurp(dir .. "/" .. name .. ".err") or ""))
    end
  end)

  for _, backend in ipairs(BACKENDS) do
    describe(backend, function()
      live_it("reports every flow of the replayed pcap exactly as `sluice run -r` does", function()
        local env = environment()
        local flows, _, p, started = capture(env, backend, "-v")
        assert_same(flows, nil, started, describe_proc(p, p:exit_code()))
        local err = p:stderr()
        assert(has(err, "packets " .. #PACKETS .. " "),
          "-v should count " .. #PACKETS .. " packets\n" .. describe_proc(p, p:exit_code()))
        if backend == "afxdp" then
          local attached, link = env:xdp_attached()
          assert(not attached, "the XDP program is still on " .. env.host .. " after SIGTERM:\n" .. link)
        end
      end)

      live_it("SIGTERM while every packet still waits in the ring: all of them are read, none lost", function()
        local env = environment()
        local started = os.time()
        local p = start(env, backend, "-v")
        -- stopped, sluice reads nothing: the kernel queues the replay
        p:signal("STOP")
        defer(function() p:signal("CONT") end)
        replay(env)
        netns.sleep(0.5)
        p:signal("TERM") -- pending until it runs again
        p:signal("CONT")
        local flows = run.of_type(stop(p, true), "flow")
        assert_same(flows, nil, started, describe_proc(p, p:exit_code()))
        assert(has(p:stderr(), "packets " .. #PACKETS .. " "),
          "-v should count " .. #PACKETS .. " packets\n" .. describe_proc(p, p:exit_code()))
      end)

      if backend == "afpacket" then
        -- a tag the kernel took off was not counted when the snaplen left
        -- no room to put it back: 4 bytes short per tagged frame
        live_it("--snaplen 10: every frame's wire length counted, tags included", function()
          local env = environment()
          local _, _, p = capture(env, backend, "--snaplen 10 -v")
          local want = 0
          for _, pk in ipairs(PACKETS) do want = want + #pk.frame end
          assert(has(p:stderr(), "packets " .. #PACKETS .. " bytes " .. want .. " "),
            "bytes should be " .. want .. "\n" .. describe_proc(p, p:exit_code()))
        end)

        -- drops were shown with -v only, and the run exited 0
        live_it("packets a full ring dropped: a line without -v, exit 3", function()
          local env = environment()
          local p = start(env, backend, "--ring-block-size 4096 --ring-blocks 2")
          p:signal("STOP")
          defer(function() p:signal("CONT") end)
          replay(env)
          netns.sleep(0.3)
          p:signal("TERM")
          p:signal("CONT")
          local code = p:wait(5)
          assert.equal(3, code, describe_proc(p, code))
          local drops = tonumber(p:stderr():match("sluice: (%d+) packet%(s%) dropped by the kernel: " ..
            "the capture ring was full"))
          assert(drops and drops > 0, describe_proc(p, code))
        end)
      end

      live_it("--filter 'udp' keeps only the UDP flows", function()
        local env = environment()
        local flows, _, p, started = capture(env, backend, "--filter udp")
        assert_same(flows, function(f) return f.proto == "udp" end, started,
          describe_proc(p, p:exit_code()))
        assert.equal(N_UDP, #flows)
      end)

      -- the kernel takes the 802.1Q tag off before a socket filter runs:
      -- the filter must still see it, as it does in a file
      live_it("--filter 'vlan 130' keeps only the flow tagged 130, 'not vlan' only the untagged", function()
        local env = environment()
        local flows, _, p, started = capture(env, backend, "--filter 'vlan 130'")
        assert_same(flows, function(f) return f.vlan == 130 end, started,
          describe_proc(p, p:exit_code()))
        assert.equal(1, #flows)
        flows, _, p, started = capture(env, backend, "--filter 'not vlan'")
        assert_same(flows, function(f) return f.vlan == 0 end, started,
          describe_proc(p, p:exit_code()))
        assert.equal(N_FLOWS - 2, #flows)
      end)

      live_it("the interface vanishing mid-capture: non-zero exit naming it, every flow reported", function()
        local env = environment()
        local started = os.time()
        local p = start(env, backend, "")
        replay(env, { topspeed = true })
        netns.sleep(0.5)
        env:destroy()
        local code = p:wait(5)
        assert(code ~= nil, "sluice should stop when its interface is gone\n" .. describe_proc(p))
        assert(code ~= 0, "a capture that lost its interface should exit non-zero\n" ..
          describe_proc(p, code))
        local err = p:stderr()
        assert(has(err, env.host), "the message should name the interface\n" .. describe_proc(p, code))
        assert(not has(err, "stack traceback"), "an error message, not a Lua traceback\n" ..
          describe_proc(p, code))
        assert_same(run.of_type(run.json_lines(p.out_json), "flow"), nil, started,
          describe_proc(p, code), { shutdown = true, eof = true })
      end)

      live_it("an idle interface, --slice 1 --idle-timeout udp=1: slices close and a UDP flow expires on time", function()
        local env = environment()
        local one = {}
        for k = 1, 3 do
          one[k] = { ts = pcap.t(k * 0.01), frame = pcap.pkt { proto = "udp", src = "10.9.0.1",
            dst = "10.9.0.2", sport = 4444, dport = 5555, len = 100 } }
        end
        local path = pcap.write(one, { path = run.tmpdir() .. "/one.pcap" })
        local started = os.time()
        local p = start(env, backend, "--slice 1 --idle-timeout udp=1")
        local r = env:replay(path)
        assert(r.code == 0, run.describe(r))
        netns.sleep(3)
        local recs = stop(p)
        local flows = run.of_type(recs, "flow")
        assert.equal(1, #flows, describe_proc(p, p:exit_code()))
        local f = flows[1]
        assert.equal("udp 10.9.0.1:4444 10.9.0.2:5555", key_of(f))
        assert.equal(3, f.pkts_fwd)
        assert.equal("idle", f.end_reason, "the flow should expire 1 s after its last packet, " ..
          "long before SIGTERM\n" .. describe_proc(p, p:exit_code()))
        local slices = run.of_type(recs, "slice")
        local pk = 0
        for _, s in ipairs(slices) do
          assert.equal(f.id, s.flow_id)
          assert(math.abs(s["end"] - s.start - 1) < 1e-6, "1 s slices: " .. s.start .. " .. " .. s["end"])
          assert(s.start >= started - 2, "slices follow the wall clock: start " .. s.start)
          pk = pk + s.pkts_fwd + s.pkts_rev
        end
        assert(#slices >= 1, "no slice record for the flow\n" .. describe_proc(p, p:exit_code()))
        assert.equal(3, pk, "the slice deltas add up to the flow's packets")
      end)
    end)
  end

  describe("afxdp", function()
    live_it("on an interface of 2 receive queues, one socket says the other queue is not seen", function()
      local env = environment { queues = 2 }
      local p = start(env, "afxdp")
      stop(p)
      local err = p:stderr()
      assert(has(err, "receive queue 0 of 2 on " .. env.host) and has(err, "--workers 2"),
        "a line should say queue 1 is not captured\n" .. describe_proc(p, p:exit_code()))
      p = start(env, "afxdp", "--workers 2", 2)
      stop(p)
      assert(not has(p:stderr(), "receive queue"),
        "two workers take both queues: no such line\n" .. describe_proc(p, p:exit_code()))
    end)

    -- auto mode failed with "queue busy" (the driver mode's failed socket
    -- held the queue while skb mode was tried), and jumbo frames were
    -- dropped without a word
    live_it("an MTU too large for driver mode: auto falls back to skb, saying what does not fit", function()
      local env = environment()
      -- (veth refuses driver-mode XDP for its peer's MTU)
      assert(os.execute(run.PLAIN .. "ip link set dev " .. env.host .. " mtu 9000") == 0)
      assert(os.execute(run.PLAIN .. "ip netns exec " .. env.ns .. " ip link set dev " .. env.peer ..
        " mtu 9000") == 0)
      local p = start(env, "afxdp")
      stop(p)
      local err = p:stderr()
      assert(has(err, "skb mode") and has(err, "frames over 2048 bytes (MTU 9000) do not fit"),
        describe_proc(p, p:exit_code()))
      local r = run.sh(SLUICE .. " run -i " .. env.host .. " --backend afxdp --xdp-mode drv --out json:/dev/null")
      assert(r.code == 1 and has(r.err, "MTU is too large for XDP in driver mode"), run.describe(r))
    end)

    -- a second signal ended the process the default way: the program
    -- stayed, and the next run took it over in its mode
    live_it("a second signal ends sluice at once and still detaches the XDP program", function()
      local env = environment()
      local p = start(env, "afxdp")
      assert(env:xdp_attached(), "the program should be attached while capturing")
      -- both pending while stopped: INT starts the stop, TERM ends it
      p:signal("STOP")
      p:signal("INT")
      p:signal("TERM")
      p:signal("CONT")
      local code = p:wait(5)
      assert(code and code ~= 0, "the second signal should end sluice at once\n" .. describe_proc(p, code))
      local attached, link = env:xdp_attached()
      assert(not attached, "the XDP program is still on " .. env.host .. ":\n" .. link)
      -- and the next run attaches its own
      stop(start(env, "afxdp"))
    end)

    live_it("after SIGTERM the XDP program is gone from the interface", function()
      local env = environment()
      local p = start(env, "afxdp", "")
      local attached, link = env:xdp_attached()
      assert(attached, "no XDP program on " .. env.host .. " while capturing:\n" .. link)
      replay(env, { topspeed = true })
      netns.sleep(0.5)
      stop(p)
      attached, link = env:xdp_attached()
      assert(not attached, "the XDP program is still on " .. env.host .. " after SIGTERM:\n" .. link)
    end)
  end)

  describe("--workers 2", function()
    -- the parent said the flows of the worker that saw it first were lost,
    -- though it had written every one
    live_it("afpacket: the interface vanishing: exit 1, every flow written, no word of a loss", function()
      local env = environment()
      local started = os.time()
      local p = start(env, "afpacket", "--workers 2", 2)
      replay(env)
      netns.sleep(0.5)
      env:destroy()
      local code = p:wait(5)
      assert.equal(1, code, describe_proc(p, code))
      local err = p:stderr()
      assert(has(err, env.host) and not has(err, "are lost"), describe_proc(p, code))
      assert_same(run.of_type(run.json_lines(p.out_json), "flow"), nil, started,
        describe_proc(p, code), { shutdown = true, eof = true })
    end)

    for _, backend in ipairs { "afpacket", "afxdp" } do
      live_it(backend .. ": every flow counted exactly once across the workers", function()
        local env = environment { queues = 2 }
        -- afpacket: one fanout group, hashed on receive (tags included).
        -- afxdp: a socket per queue; veth spreads untagged flows over its
        -- two queues by flow hash, tagged ones it would split (see UNTAGGED)
        local variant = backend == "afxdp" and "untagged" or "tagged"
        local flows, _, p, started = capture(env, backend, "--workers 2 -v",
          { workers = 2, variant = variant })
        assert_same(flows, nil, started, describe_proc(p, p:exit_code()), nil, variant)
        -- -v: each worker prints its own counters; both took a share
        local per, sum = {}, 0
        for n in p:stderr():gmatch("%f[^\n%z]packets (%d+) bytes") do
          per[#per + 1] = tonumber(n)
          sum = sum + tonumber(n)
        end
        local msg = "per-worker packet counts " .. table.concat(per, ", ") .. "\n" ..
          describe_proc(p, p:exit_code())
        assert(#per == 2, "two workers should print counters: " .. msg)
        assert(per[1] > 0 and per[2] > 0, "both workers should get traffic: " .. msg)
        assert(sum == #PACKETS, "the workers' packets should add up to " .. #PACKETS .. ": " .. msg)
      end)
    end
  end)

  describe("--workers 2 --backend pcap", function()
    live_it("is refused, or counts every flow exactly once", function()
      local env = environment { queues = 2 }
      local dir = run.tmpdir()
      local out = dir .. "/out.json"
      local p = netns.start(string.format("-i %s --backend pcap --workers 2 -v --out json:%s",
        env.host, run.q(out)), dir)
      defer(function() p:kill() end)
      local ok = p:wait_ready("pcap", env, 2, 5)
      if not ok and p:exit_code() then
        -- refused: a usage error that says why
        local code = p:exit_code()
        assert(code == 2, "a refusal should be a usage error (exit 2)\n" .. describe_proc(p, code))
        assert(p:stderr():match("workers"), "the refusal should mention --workers\n" ..
          describe_proc(p, code))
        return
      end
      assert(ok, "sluice neither refused nor started two captures\n" .. describe_proc(p))
      p.out_json = out
      local started = os.time()
      replay(env)
      netns.sleep(1)
      local flows = run.of_type(stop(p), "flow")
      assert_same(flows, nil, started, describe_proc(p, p:exit_code()))
    end)
  end)

  describe("policies", function()
    live_it("on_flow_end sees every flow's end after SIGTERM, then stop() runs", function()
      local env = environment()
      local dir = run.tmpdir()
      local policy = run.spit(dir .. "/ends.lua", [[
local P = {}
local emit
function P.init(opts, ctx) emit = ctx.emit end
function P.on_flow_end(flow, reason)
  local t = flow:totable()
  t.type, t.reason = "end", reason
  emit(t)
end
function P.stop() emit { type = "stopped" } end
return P
]])
      local _, recs, p = capture(env, "afpacket", run.q(policy))
      local ends = run.of_type(recs, "end")
      local stopped = run.of_type(recs, "stopped")
      assert.equal(N_FLOWS, #ends, "on_flow_end calls\n" .. describe_proc(p, p:exit_code()))
      assert.equal(1, #stopped, "stop() should emit once\n" .. describe_proc(p, p:exit_code()))
      assert.equal("stopped", recs[#recs].type, "stop() runs after the last flow end")
      local t = truth()
      local reasons = {}
      for _, e in ipairs(ends) do
        local k = key_of(e)
        assert(t[k], "on_flow_end for an unknown flow " .. k)
        local want = t[k].end_reason == "eof" and "shutdown" or t[k].end_reason
        assert.equal(want, e.reason, k)
        assert.equal(t[k].pkts_fwd + t[k].pkts_rev, e.pkts_fwd + e.pkts_rev, k)
        reasons[e.reason] = (reasons[e.reason] or 0) + 1
      end
      assert.same({ fin = 20, rst = 5, shutdown = 25 }, reasons)
    end)
  end)

  describe("--user nobody", function()
    live_it("drops to the user once capturing and still reports every flow", function()
      local env = environment()
      local started = os.time()
      local p = start(env, "afpacket", "--user nobody")
      local uid
      for _ = 1, 50 do
        local status = run.slurp("/proc/" .. p.pid .. "/status") or ""
        uid = tonumber(status:match("\nUid:%s+(%d+)"))
        if uid ~= 0 then break end
        netns.sleep(0.05)
      end
      assert.equal(65534, uid, "sluice should run as nobody\n" .. describe_proc(p))
      replay(env)
      netns.sleep(1)
      assert_same(run.of_type(stop(p), "flow"), nil, started, describe_proc(p, p:exit_code()))
    end)
  end)

  describe("--stats 1", function()
    live_it("prints stats: lines on stderr while running", function()
      local env = environment()
      local p = start(env, "afpacket", "--stats 1")
      replay(env, { topspeed = true })
      netns.sleep(2.5)
      local err = p:stderr() -- before SIGTERM: printed while running
      local lines = {}
      for line in err:gmatch("[^\n]+") do
        if line:match("^stats:") then lines[#lines + 1] = line end
      end
      assert(#lines >= 2, "expected stats: lines every second while running\n" .. describe_proc(p))
      local last = lines[#lines]
      local pk, rx, drops = last:match("packets (%d+) received (%d+) drops (%d+)")
      assert(pk, "stats line without packets/received/drops: " .. last)
      assert.equal(#PACKETS, tonumber(pk), last)
      assert.equal(#PACKETS, tonumber(rx), last)
      assert.equal(0, tonumber(drops), last)
      stop(p)
    end)
  end)
end)
