-- The README's cookbook: each recipe's example file run as the README
-- shows it, its output checked against ground truth computed without
-- sluice (spec/support/cookbook.py: scapy reads the captures, python's
-- ipaddress does the prefixes; tshark counts the captured packets).
-- top_talkers and the one-off script have their own specs
-- (examples_spec, luarocks_spec). Without scapy or tshark the tests that
-- need them are pending with the reason, also written to stderr.
local run = require "support.run"

local EX = run.root .. "/examples/"
local SAMPLE = run.root .. "/examples/sample.pcap"
local PY = "/usr/bin/python3"
local HELPER = run.root .. "/spec/support/cookbook.py"

-- Are the tools there? If not, the test is pending with why (on stderr too).
local function have(needs)
  local why = run.missing(needs)
  if why then
    io.stderr:write("cookbook_spec: pending: ", why, "\n")
    pending(why)
    return false
  end
  return true
end

-- cookbook.py's answer, decoded.
local function helper(args)
  local r = run.sh(run.PLAIN .. PY .. " " .. run.q(HELPER) .. " " .. args)
  assert(r.code == 0, "cookbook.py " .. args .. " failed\n" .. run.describe(r))
  return run.decode(r.out)
end

local function policy_lines(args)
  local r = run.sh(run.SLUICE .. " run " .. args)
  assert(r.code == 0, run.describe(r))
  return run.decode_lines(r.out), r
end

describe("cookbook", function()
  teardown(run.cleanup)

  it("scan_detect.lua finds the port scans and the sweep, and nothing else", function()
    if not have { "scapy" } then return end
    local dir = run.tmpdir()
    local pcap = dir .. "/scan.pcap"
    local made = run.sh(run.PLAIN .. PY .. " " .. run.q(HELPER) .. " scan " .. run.q(pcap))
    assert(made.code == 0, run.describe(made))
    local want = helper("expect-scan " .. run.q(pcap) .. " 100 50")
    assert(#want >= 3, "the capture has two scans and a sweep")
    local got = policy_lines(run.q(EX .. "scan_detect.lua") .. " -r " .. run.q(pcap) ..
      " --slice 60 -o ports=100 -o hosts=50")
    local function index(list)
      local t = {}
      for _, f in ipairs(list) do t[f.kind .. " " .. f.src] = f end
      return t
    end
    local w, g = index(want), index(got)
    assert.are.equal(#want, #got)
    for k, f in pairs(w) do
      local h = g[k]
      assert(h, "missing finding " .. k)
      assert.are.equal(f.count, h.count, k)
      assert.are.equal(f.flows, h.flows, k)
      assert.are.equal(f.pkts, h.pkts, k)
      assert.are.equal(1700000040, h.start)
    end
    -- a lower bar on UDP finds the clients' DNS flows instead: one port each
    local udp = policy_lines(run.q(EX .. "scan_detect.lua") .. " -r " .. run.q(pcap) ..
      " --slice 60 -o ports=1 -o hosts=1000 -o proto=udp")
    assert.are.equal(5, #udp)
    for _, f in ipairs(udp) do assert.are.equal(1, f.count) end
  end)

  it("subnet_report.lua sums what each subnet sent and received, biggest first", function()
    if not have { "scapy" } then return end
    for _, p in ipairs { { 24, 64 }, { 16, 48 }, { 32, 128 } } do
      local want = helper("expect-subnets " .. run.q(SAMPLE) .. " " .. p[1] .. " " .. p[2])
      -- the sample spans less than an hour, inside one hour-long slice
      local got = policy_lines(run.q(EX .. "subnet_report.lua") .. " -r " .. run.q(SAMPLE) ..
        " --slice 3600 -o top=1000 -o prefix4=" .. p[1] .. " -o prefix6=" .. p[2])
      assert.are.equal(1, #got)
      local n = 0
      for _ in pairs(want) do n = n + 1 end
      assert.are.equal(n, got[1].subnets)
      assert.are.equal(n, #got[1].top)
      local last = math.huge
      for _, s in ipairs(got[1].top) do
        local w = want[s.subnet]
        assert(w, "subnet " .. s.subnet .. " is not in the capture (/" .. p[1] .. ", /" .. p[2] .. ")")
        assert.are.same({ w.bytes_out, w.bytes_in, w.pkts_out, w.pkts_in },
          { s.bytes_out, s.bytes_in, s.pkts_out, s.pkts_in }, s.subnet)
        local total = s.bytes_out + s.bytes_in
        assert(total <= last, "ordered by bytes")
        last = total
      end
    end
  end)

  it("allow_list.lua raises one alarm per flow with an end outside the list", function()
    if not have { "scapy" } then return end
    local dir = run.tmpdir()
    local flows = dir .. "/flows.json"
    local r = run.sh(run.SLUICE .. " run -r " .. run.q(SAMPLE) .. " -q --out json:" .. run.q(flows))
    assert(r.code == 0, run.describe(r))
    for _, case in ipairs {
      { "10.0.0.0/8,2001:db8:c::/48", "both" }, { "10.0.0.0/8", "src" }, { "198.18.0.0/15,::/0", "dst" },
    } do
      local want = helper("expect-allow " .. run.q(flows) .. " " .. run.q(case[1]) .. " " .. case[2])
      local got = policy_lines(run.q(EX .. "allow_list.lua") .. " -r " .. run.q(SAMPLE) ..
        " -o allow=" .. run.q(case[1]) .. " -o side=" .. case[2])
      local ids = {}
      for _, a in ipairs(got) do
        assert.are.equal("alarm", a.type)
        assert(#a.outside >= 1)
        ids[#ids + 1] = a.flow
      end
      table.sort(ids)
      assert(#want > 0, "the case has flows outside " .. case[1])
      assert.are.same(want, ids, case[1] .. " " .. case[2])
    end
    -- the flows are tagged too: with the default flow records after it,
    -- the records say acl = deny
    local out = dir .. "/tagged.json"
    r = run.sh(run.SLUICE .. " run " .. run.q(EX .. "allow_list.lua") .. " " ..
      run.q(run.root .. "/lua/sluice/policies/flows.lua") .. " -r " .. run.q(SAMPLE) ..
      " -o allow=10.0.0.0/8 -o side=src -q --out json:" .. run.q(out))
    assert(r.code == 0, run.describe(r))
    local denied = 0
    for _, rec in ipairs(run.of_type(run.json_lines(out), "flow")) do
      if rec.tags and rec.tags.acl == "deny" then denied = denied + 1 end
    end
    assert.are.equal(#helper("expect-allow " .. run.q(flows) .. " 10.0.0.0/8 src"), denied)
  end)

  it("capture_flows.lua writes every packet of the chosen flows, as tshark counts them", function()
    if not have { "tshark" } then return end
    local dir = run.tmpdir()
    for _, case in ipairs {
      { "-o port=53", "udp.port == 53 || tcp.port == 53" },
      { "-o port=443 -o proto=tcp", "tcp.port == 443" },
      { "-o net=2001:db8:5::/64,198.18.0.0/24", "ipv6.addr == 2001:db8:5::/64 || ip.addr == 198.18.0.0/24" },
    } do
      local out, flows = dir .. "/cap.pcap", dir .. "/flows.json"
      os.remove(out)
      local r = run.sh(run.SLUICE .. " run " .. run.q(EX .. "capture_flows.lua") .. " -r " .. run.q(SAMPLE) ..
        " " .. case[1] .. " -q --out pcap:" .. run.q(out) .. " --out json:" .. run.q(flows))
      assert(r.code == 0, run.describe(r))
      -- the chosen flows' records, as its header says (none were written)
      local pkts = 0
      for _, f in ipairs(run.json_lines(flows)) do pkts = pkts + f.pkts_fwd + f.pkts_rev end
      local want = run.sh(run.PLAIN .. "tshark -r " .. run.q(SAMPLE) .. " -Y " .. run.q(case[2]) .. " 2>/dev/null | wc -l")
      local got = run.sh(run.PLAIN .. "tshark -r " .. run.q(out) .. " 2>/dev/null | wc -l")
      local n = tonumber(want.out)
      assert(n and n > 0, "the sample has packets for " .. case[2])
      assert.are.equal(n, tonumber(got.out), case[1])
      assert.are.equal(n, pkts, case[1] .. ": the packets of the flow records")
      local order = run.sh(run.PLAIN .. "capinfos -o " .. run.q(out))
      if order.code == 0 then assert.matches("Strict time order:%s+True", order.out) end
    end
  end)
end)
