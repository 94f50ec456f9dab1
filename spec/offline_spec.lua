-- Offline filters (--filter on files, sluice.open{ read, filter }) and the
-- lines that keep a run from ending silently empty.
local run = require "support.run"
local pcap = require "support.pcap"
local sluice = require "sluice"

local SLUICE = run.SLUICE
local SAMPLE = run.root .. "/examples/sample.pcap"
local q = run.q

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

local function lines_of(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

-- A flow record without its id (ids follow the order flows start in, which
-- a filter changes), as text to compare.
local function flow_text(f)
  local keys = {}
  for k in pairs(f) do if k ~= "id" then keys[#keys + 1] = k end end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. tostring(f[k]) end
  return table.concat(parts, " ")
end

local function flow_set(list)
  local t = {}
  for _, f in ipairs(list) do t[#t + 1] = flow_text(f) end
  table.sort(t)
  return t
end

-- The flows of an unfiltered run of the sample, once.
local all_flows
local function unfiltered()
  if not all_flows then
    local r, recs = run.sluice_json("-r " .. q(SAMPLE))
    assert(r.code == 0, run.describe(r))
    all_flows = run.of_type(recs, "flow")
    assert(#all_flows > 0)
  end
  return all_flows
end

local function where(list, fn)
  local out = {}
  for _, f in ipairs(list) do if fn(f) then out[#out + 1] = f end end
  return out
end

describe("offline filters", function()
  teardown(function()
    run.cleanup()
    pcap.cleanup()
  end)

  it("--filter udp gives exactly the untagged UDP flows of the unfiltered run", function()
    local r, recs = run.sluice_json("-r " .. q(SAMPLE) .. " --filter udp")
    assert(r.code == 0, run.describe(r))
    local want = where(unfiltered(), function(f) return f.proto == "udp" and f.vlan == 0 end)
    assert(#want > 0)
    assert.are.same(flow_set(want), flow_set(run.of_type(recs, "flow")))
  end)

  it("with the VLAN-tagged ones too: every UDP flow, the same as unfiltered", function()
    local r, recs = run.sluice_json("-r " .. q(SAMPLE) .. " --filter 'udp or (vlan and udp)'")
    assert(r.code == 0, run.describe(r))
    local want = where(unfiltered(), function(f) return f.proto == "udp" end)
    assert(#where(want, function(f) return f.vlan ~= 0 end) > 0, "the sample has tagged UDP")
    assert.are.same(flow_set(want), flow_set(run.of_type(recs, "flow")))
  end)

  it("-v counts the refused packets as filtered: the ones the expression does not match", function()
    local r = run.sh(SLUICE .. " run -r " .. q(SAMPLE) .. " --filter udp -v --out json:/dev/null")
    assert(r.code == 0, run.describe(r))
    local pkts, filtered = r.err:match("^packets (%d+) bytes %d+ not_ip 0 malformed 0 filtered (%d+)\n")
    assert(pkts, run.describe(r))
    pkts, filtered = tonumber(pkts), tonumber(filtered)
    -- every packet of the sample is either counted or filtered
    local u = run.sh(SLUICE .. " run -r " .. q(SAMPLE) .. " -v --out json:/dev/null")
    local total = tonumber(u.err:match("^packets (%d+) bytes"))
    assert.are.equal(total, pkts + filtered, run.describe(u))
    assert.are.equal(run.flow_totals(unfiltered()), total)
    -- the matching ones are the packets of the untagged UDP flows
    local want = run.flow_totals(where(unfiltered(), function(f)
      return f.proto == "udp" and f.vlan == 0
    end))
    assert.are.equal(want, pkts)
    -- and tshark agrees (BPF's udp does not look behind a VLAN tag)
    if run.have("tshark") then
      local t = run.sh(run.PLAIN .. "tshark -r " .. q(SAMPLE) .. " -Y 'udp && !vlan' 2>/dev/null | wc -l")
      assert.are.equal(pkts, tonumber(t.out:match("%d+")), run.describe(t))
    end
  end)

  it("a bad expression: exit 2, one line with libpcap's message, no data read", function()
    local dir = run.tmpdir()
    local r = run.sh(SLUICE .. " run -r " .. q(SAMPLE) .. " --filter 'udp prot 53' --out json:" ..
      q(dir .. "/out.json"))
    assert.are.equal(2, r.code, run.describe(r))
    local lines = lines_of(r.err)
    assert.are.equal(1, #lines, run.describe(r))
    assert.truthy(lines[1]:match("^sluice: %-%-filter: bad filter 'udp prot 53': .*syntax error"),
      run.describe(r))
    assert.are.equal("", r.out)
    assert.are.equal("", run.slurp(dir .. "/out.json") or "")
  end)

  it("the library: sluice.open{ read, filter }, stats().filtered, a bad one raises", function()
    local eng = assert(sluice.open { read = SAMPLE, filter = "udp" })
    local ends = 0
    assert(eng:run { on_flow_end = function() ends = ends + 1 end })
    local st = eng:stats()
    local want = where(unfiltered(), function(f) return f.proto == "udp" and f.vlan == 0 end)
    assert.are.equal(#want, ends)
    assert.are.equal(run.flow_totals(want), st.packets)
    local total = run.flow_totals(unfiltered())
    assert.are.equal(total, st.packets + st.filtered)
    eng:close()
    -- no filter: nothing filtered
    eng = assert(sluice.open { read = SAMPLE })
    assert(eng:run { on_flow_end = function() end })
    assert.are.equal(0, eng:stats().filtered)
    eng:close()
    local ok, err = pcall(sluice.open, { read = SAMPLE, filter = "udp prot 53" })
    assert.is_false(ok)
    assert.truthy(has(err, "sluice.open: filter: bad filter 'udp prot 53': "), err)
    ok, err = pcall(sluice.open, { read = SAMPLE, filter = 53 })
    assert.is_false(ok)
    assert.truthy(has(err, "filter must be a string"), err)
    ok, err = pcall(sluice.open, { listen = "udp:127.0.0.1:0", filter = "udp" })
    assert.is_false(ok)
    assert.truthy(has(err, "not to a collector's records"), err)
  end)
end)

describe("no silent empty results", function()
  local dir
  setup(function() dir = run.tmpdir() end)
  teardown(function()
    run.cleanup()
    pcap.cleanup()
  end)

  -- Runs sluice with args (and --out to a file); the run, and the lines
  -- of stderr starting "sluice: ".
  local function sluice_run(args)
    local r = run.sh(SLUICE .. " run " .. args .. " --out json:" .. q(dir .. "/out.json"))
    local notes = {}
    for _, l in ipairs(lines_of(r.err)) do
      if l:match("^sluice: ") then notes[#notes + 1] = l end
    end
    return r, notes
  end

  -- The line is there once without -v (exit code as given), gone with -q.
  local function noted(args, line, code)
    local r, notes = sluice_run(args)
    assert.are.equal(code or 0, r.code, run.describe(r))
    assert.are.same({ line }, notes, run.describe(r))
    r, notes = sluice_run(args .. " -q")
    assert.are.equal(code or 0, r.code, run.describe(r))
    assert.are.same({}, notes, run.describe(r))
  end

  it("a policy with on_slice run without --slice, before any data", function()
    local ex = run.root .. "/examples/top_talkers.lua"
    noted(q(ex) .. " -r " .. q(SAMPLE),
      "sluice: policy top_talkers has on_slice but --slice was not given: no slices")
    -- said before data: a run that fails on its input still says it
    local r = sluice_run(q(ex) .. " -r /nonexistent.pcap")
    assert.are.equal(1, r.code, run.describe(r))
    assert.truthy(r.err:match("^sluice: policy top_talkers has on_slice"), run.describe(r))
    -- with --slice: slices, no line
    local r2, notes = sluice_run(q(ex) .. " -r " .. q(SAMPLE) .. " --slice 5")
    assert.are.equal(0, r2.code, run.describe(r2))
    assert.are.same({}, notes, run.describe(r2))
    assert.truthy(has(run.slurp(dir .. "/out.json"), "top_talkers"))
  end)

  it("a policy with no handler the run calls", function()
    local p = run.spit(dir .. "/idle.lua", "return { init = function() end }\n")
    noted(q(p) .. " -r " .. q(SAMPLE), "sluice: policy idle has none of on_flow_start, " ..
      "on_flow_end, on_slice, on_packet, on_tag, stop: it does nothing after init")
  end)

  it("packets that are not IP", function()
    local arp = pcap.ether { type = 0x0806, payload = pcap.payload(28, "\1") }
    local path = pcap.write {
      { ts = pcap.t(0), frame = arp },
      { ts = pcap.t(0.1), frame = pcap.pkt { proto = "udp", sport = 1, dport = 2 } },
      { ts = pcap.t(0.2), frame = arp },
    }
    noted("-r " .. q(path), "sluice: " .. path .. ": 2 of 3 packets were not IP (counted, not in flows)")
  end)

  it("packets but no flows", function()
    local arp = pcap.ether { type = 0x0806, payload = pcap.payload(28, "\1") }
    local path = pcap.write { { ts = pcap.t(0), frame = arp }, { ts = pcap.t(1), frame = arp } }
    noted("-r " .. q(path), "sluice: " .. path .. ": 2 packets but no flows (not IP 2, malformed 0)")
  end)

  it("no packets, or none the filter took", function()
    local path = pcap.write {}
    noted("-r " .. q(path), "sluice: " .. path .. ": read 0 packets: no flows")
    local total = run.flow_totals(unfiltered())
    noted("-r " .. q(SAMPLE) .. " --filter sctp",
      "sluice: " .. SAMPLE .. ": the filter refused all " .. total .. " packets: no flows")
  end)

  it("a run with flows and only IP says nothing", function()
    local r, notes = sluice_run("-r " .. q(SAMPLE))
    assert.are.equal(0, r.code, run.describe(r))
    assert.are.same({}, notes)
  end)
end)

describe("sluice info / run on a script", function()
  local dir
  setup(function() dir = run.tmpdir() end)
  teardown(run.cleanup)

  local SCRIPT = [[
local sluice = require "sluice"
local eng = assert(sluice.open { read = %q })
eng:run { on_flow_end = function() end }
io.open(%q, "w"):write("ran")
]]

  it("says the file is a script and does not run it", function()
    local marker = dir .. "/ran"
    local p = run.spit(dir .. "/summary.lua", SCRIPT:format(SAMPLE, marker))
    for _, cmd in ipairs { "info " .. q(p), "run " .. q(p) .. " -r " .. q(SAMPLE) } do
      local r = run.sh(SLUICE .. " " .. cmd)
      assert.are.equal(2, r.code, run.describe(r))
      local err = lines_of(r.err)
      assert.are.equal(1, #err, run.describe(r))
      assert.are.equal("sluice: " .. p .. " is a script, not a policy: it calls sluice.open while it loads",
        err[1]:sub(1, #("sluice: " .. p .. " is a script, not a policy: it calls sluice.open while it loads")))
      assert.truthy(err[1]:find("run it with luajit " .. p, 1, true), run.describe(r))
      assert.are.equal("", r.out, run.describe(r))
      assert.is_false(run.exists(marker), "the script ran")
    end
  end)

  it("the bundled capture_summary.lua is recognised as one", function()
    local r = run.sh(SLUICE .. " info " .. q(run.root .. "/examples/capture_summary.lua"))
    assert.are.equal(2, r.code, run.describe(r))
    assert.truthy(r.err:match("capture_summary%.lua is a script, not a policy: it calls "),
      run.describe(r))
    assert.are.equal("", r.out)
  end)

  it("a policy may still use sluice.open and os in its handlers, once loaded", function()
    local p = run.spit(dir .. "/later.lua", ([[
local sluice = require "sluice"
local P = { info = { name = "later" } }
local emit
function P.init(_, ctx) emit = ctx.emit end
function P.stop()
  local eng = assert(sluice.open { read = %q })
  local n = 0
  assert(eng:run { on_flow_end = function() n = n + 1 end })
  emit { type = "later", flows = n, clock = type(os.clock()) }
end
return P
]]):format(SAMPLE))
    local r, recs = run.sluice_json(q(p) .. " -r " .. q(SAMPLE), dir)
    assert.are.equal(0, r.code, run.describe(r))
    assert.are.same({ { type = "later", flows = #unfiltered(), clock = "number" } },
      run.of_type(recs, "later"))
  end)
end)
