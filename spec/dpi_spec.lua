-- --dpi: application labels by nDPI (core/src/dpi.c). Captures with DNS,
-- TLS (SNI) and HTTP (Host) flows are written by scapy
-- (spec/support/dpi_traffic.py, which also says what each flow asked
-- for); sluice's labels are compared with Debian's ndpiReader over the
-- same captures, flow by flow (the ground truth is not sluice's).
local run = require "support.run"
local sluice = require "sluice"
local engine = require "sluice.engine"
local cli = require "sluice.cli"

local GEN = run.root .. "/spec/support/dpi_traffic.py"
local SAMPLE = run.root .. "/examples/sample.pcap"
local N = 40 -- of each kind: 120 flows

local have_ndpi = engine.dpi_available()
local have_reader = run.have("ndpiReader")
local have_scapy = os.execute(run.PLAIN .. "/usr/bin/python3 -c 'import scapy.layers.tls' " ..
  ">/dev/null 2>&1")
have_scapy = have_scapy == 0 or have_scapy == true

local function skip_unless(ok, why)
  if not ok then
    print("dpi_spec: skipped: " .. why)
    pending(why)
  end
  return ok
end

-- An address in one form: ndpiReader shortens a single zero group of an
-- IPv6 address to "::", sluice does not (RFC 5952).
local ffi = require "ffi"
local in6 = ffi.new("uint8_t[16]")
local function addr(s)
  if not s:find(":", 1, true) or ffi.C.inet_pton(10, s, in6) ~= 1 then return s end
  return ffi.string(in6, 16)
end

-- A flow's key whichever side is the source: proto and both endpoints.
local function key(proto, a, ap, b, bp)
  local x, y = addr(a) .. "|" .. ap, addr(b) .. "|" .. bp
  if x > y then x, y = y, x end
  return proto .. "|" .. x .. "|" .. y
end

-- ndpiReader's flows (its CSV output: -C): key -> { name, server }.
local L4 = { ["6"] = "tcp", ["17"] = "udp", ["1"] = "icmp", ["58"] = "icmpv6" }
local function ndpi_reader(pcap_path, dir)
  local csv = dir .. "/ndpi.csv"
  local r = run.sh(run.PLAIN .. "ndpiReader -q -i " .. run.q(pcap_path) .. " -C " .. run.q(csv) ..
    " >/dev/null")
  assert(r.code == 0, run.describe(r))
  local flows = {}
  for line in assert(io.open(csv)):lines() do
    if line:sub(1, 1) ~= "#" then
      local c = {}
      for field in (line .. ","):gmatch("([^,]*),") do c[#c + 1] = field end
      local k = key(L4[c[2]] or c[2], c[6], c[7], c[8], c[9])
      flows[k] = { name = c[11], server = c[12], text = c[6] .. ":" .. c[7] .. " " .. c[8] ..
        ":" .. c[9] }
    end
  end
  return flows
end

local function sluice_flows(args, dir)
  local r, recs = run.sluice_json(args, dir)
  assert(r.code == 0, run.describe(r))
  local flows = {}
  for _, f in ipairs(run.of_type(recs, "flow")) do
    flows[key(f.proto, f.src, f.sport, f.dst, f.dport)] = f
  end
  return flows, recs
end

-- Flows both report, and those where the application is the same.
local function agreement(ours, theirs)
  local both, same, diffs = 0, 0, {}
  for k, t in pairs(theirs) do
    local o = ours[k]
    if o then
      both = both + 1
      if o.application_name == t.name then
        same = same + 1
      else
        diffs[#diffs + 1] = t.text .. ": sluice " .. tostring(o.application_name) ..
          ", ndpiReader " .. t.name
      end
    end
  end
  return both, same, diffs
end

describe("--dpi", function()
  local dir, pcap_path, truth
  local ok = have_ndpi and have_scapy

  setup(function()
    if not ok then return end
    dir = run.tmpdir()
    pcap_path, truth = dir .. "/dpi.pcap", dir .. "/truth.json"
    local r = run.sh(run.PLAIN .. "/usr/bin/python3 " .. run.q(GEN) .. " " .. run.q(pcap_path) ..
      " " .. run.q(truth) .. " " .. N)
    assert(r.code == 0, run.describe(r))
    truth = run.decode(run.slurp(truth))
  end)
  teardown(function() run.cleanup() end)

  it("names the server each flow asked for (SNI, Host, DNS query)", function()
    if not skip_unless(ok, "needs nDPI in the core and scapy's TLS layer") then return end
    local ours = sluice_flows("-r " .. run.q(pcap_path) .. " --dpi", run.tmpdir())
    local kinds, expect = { dns = 0, tls = 0, http = 0 }, { dns = "DNS", tls = "TLS", http = "HTTP" }
    assert.are.equal(3 * N, #truth)
    for _, t in ipairs(truth) do
      local f = ours[key(t.proto, t.src, t.sport, t.dst, t.dport)]
      assert(f, "no flow for " .. t.src .. ":" .. t.sport)
      assert.are.equal(t.name, f.requested_server_name)
      -- the master protocol first: DNS, DNS.Google, ...
      assert.are.equal(expect[t.kind], f.application_name:match("^[^.]+"))
      assert.is_string(f.application_category_name)
      assert.is_true(#f.application_category_name > 0)
      kinds[t.kind] = kinds[t.kind] + 1
    end
    assert.are.same({ dns = N, tls = N, http = N }, kinds)
  end)

  it("labels IP packets without a link layer (link type raw)", function()
    if not skip_unless(ok, "needs nDPI in the core and scapy's TLS layer") then return end
    local d = run.tmpdir()
    local raw = d .. "/raw.pcap"
    local r = run.sh(run.PLAIN .. "/usr/bin/python3 " .. run.q(GEN) .. " " .. run.q(raw) .. " " ..
      run.q(d .. "/truth.json") .. " 8 raw")
    assert(r.code == 0, run.describe(r))
    local ours = sluice_flows("-r " .. run.q(raw) .. " --dpi", d)
    local n = 0
    for _, f in pairs(ours) do
      n = n + 1
      assert.are_not.equal("Unknown", f.application_name)
      assert.is_true(#f.requested_server_name > 0)
    end
    assert.are.equal(24, n)
  end)

  it("finds the application ndpiReader finds for at least 99% of the flows", function()
    if not skip_unless(ok and have_reader, "needs nDPI, scapy's TLS layer and ndpiReader") then
      return
    end
    local total_both, total_same = 0, 0
    for _, input in ipairs({ pcap_path, SAMPLE }) do
      local d = run.tmpdir()
      local ours = sluice_flows("-r " .. run.q(input) .. " --dpi", d)
      local theirs = ndpi_reader(input, d)
      local both, same, diffs = agreement(ours, theirs)
      print(string.format("dpi_spec: %s: %d flows both report, %d the same application",
        input:match("[^/]+$"), both, same))
      for i = 1, math.min(#diffs, 10) do print("  " .. diffs[i]) end
      total_both, total_same = total_both + both, total_same + same
    end
    -- every generated flow is matched, and most of the sample's
    assert.is_true(total_both >= 3 * N + 30, "flows both report: " .. total_both)
    assert.is_true(total_same >= 0.99 * total_both,
      string.format("%d of %d flows agree", total_same, total_both))
  end)

  it("adds no fields without --dpi, and keeps the others with --features", function()
    if not skip_unless(ok, "needs nDPI in the core and scapy's TLS layer") then return end
    local plain = sluice_flows("-r " .. run.q(pcap_path), run.tmpdir())
    for _, f in pairs(plain) do
      assert.is_nil(f.application_name)
      assert.is_nil(f.requested_server_name)
      assert.is_nil(f.application_category_name)
    end
    local both = sluice_flows("-r " .. run.q(pcap_path) .. " --dpi --features stats,splt:3",
      run.tmpdir())
    local n = 0
    for _, f in pairs(both) do
      n = n + 1
      assert.is_string(f.application_name)
      assert.is_number(f.bidirectional_mean_ps)
      assert.are.equal(3, #f.splt_ps)
    end
    assert.are.equal(3 * N, n)
  end)

  it("keeps the label in the flow's slices", function()
    if not skip_unless(ok, "needs nDPI in the core and scapy's TLS layer") then return end
    local d = run.tmpdir()
    local r, recs = run.sluice_json("-r " .. run.q(pcap_path) .. " --dpi --slice 0.1", d)
    assert(r.code == 0, run.describe(r))
    local flows, slices, labelled = {}, run.of_type(recs, "slice"), 0
    for _, f in ipairs(run.of_type(recs, "flow")) do flows[f.id] = f end
    assert.is_true(#slices >= 3 * N)
    for _, sl in ipairs(slices) do
      local f = flows[sl.flow_id]
      if sl.application_name then
        labelled = labelled + 1
        assert.are.equal(f.application_name, sl.application_name)
        assert.are.equal(f.requested_server_name, sl.requested_server_name)
        assert.are.equal(f.application_category_name, sl.application_category_name)
      end
      -- a flow's last slice always has it
      if sl.end_reason then assert.are.equal(f.application_name, sl.application_name) end
    end
    assert.is_true(labelled >= 3 * N)
    -- and without --dpi, none
    local _, plain = run.sluice_json("-r " .. run.q(pcap_path) .. " --slice 0.1", run.tmpdir())
    for _, sl in ipairs(run.of_type(plain, "slice")) do assert.is_nil(sl.application_name) end
  end)

  it("groups slices by label in C and finds live flows by label", function()
    if not skip_unless(ok, "needs nDPI in the core and scapy's TLS layer") then return end
    local eng = assert(sluice.open { read = pcap_path, features = { "dpi" }, slice = 0.1 })
    local grouped, summed, rows, found = 0, 0, 0, 0
    assert(eng:run {
      on_slice = function(batch)
        local want = {}
        for r in batch:records() do
          local name = r.application_name
          if name then
            want[name] = (want[name] or 0) + r.bytes
            summed = summed + r.bytes
          end
        end
        for row in batch:group { by = "application_name" }:rows() do
          assert.are.equal(want[row.label], row.bytes)
          assert.are.equal(row.label, row.tag)
          want[row.label] = nil
          grouped, rows = grouped + row.bytes, rows + 1
        end
        assert.is_nil(next(want))
        for _, f in ipairs(eng:query { where = { application_name = "DNS" } }) do
          assert.are.equal("DNS", f.application_name)
          found = found + 1
        end
        for row in batch:group { by = "requested_server_name", proto = "udp" }:rows() do
          assert.is_true(#row.label > 0)
        end
      end,
    })
    eng:close()
    assert.is_true(summed > 0)
    assert.are.equal(summed, grouped)
    assert.is_true(rows >= 3, "rows: " .. rows)
    assert.is_true(found > 0)
  end)

  it("gives flow handles the label (features = 'dpi' in sluice.open)", function()
    if not skip_unless(ok, "needs nDPI in the core and scapy's TLS layer") then return end
    local eng = assert(sluice.open { read = pcap_path, features = { "dpi" } })
    local seen, json_ok = {}, 0
    assert(eng:run {
      on_flow_end = function(f)
        local t = f:totable()
        assert.are.equal(f.application_name, t.application_name)
        assert.are.equal(f.requested_server_name, t.requested_server_name)
        assert.are.equal(f.application_category_name, t.application_category_name)
        local j = run.decode(f:json())
        if j.application_name == f.application_name then json_ok = json_ok + 1 end
        seen[#seen + 1] = f.requested_server_name
      end,
    })
    eng:close()
    assert.are.equal(3 * N, #seen)
    assert.are.equal(3 * N, json_ok)
    local plain = assert(sluice.open { read = pcap_path })
    assert(plain:run { on_flow_end = function(f) assert.is_nil(f.application_name) end })
    plain:close()
  end)

  it("says so when the core was built without nDPI", function()
    local real = engine.dpi_available
    engine.dpi_available = function() return false end
    local o, err = cli.parse({ "-r", SAMPLE, "--dpi" }, "run")
    local ok2, err2 = pcall(engine.parse_features, { "dpi" })
    engine.dpi_available = real
    assert.is_nil(o)
    assert.are.equal("--dpi: sluice was built without nDPI (libndpi-dev)", err)
    assert.is_false(ok2)
    assert.truthy(tostring(err2):find("built without nDPI", 1, true))
    -- and with it, --dpi is the feature
    if have_ndpi then
      local o3 = assert(cli.parse({ "-r", SAMPLE, "--dpi", "--features", "stats" }, "run"))
      assert.are.same({ "stats", "dpi" }, o3.open.features)
    end
  end)
end)
