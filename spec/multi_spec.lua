-- Several captures as one input: -r repeated, -r DIR, sluice.open{ read =
-- { ... } }. Flows continue across files, overlapping files are merged by
-- time like mergecap, link types may differ, unreadable files are named.
local run = require "support.run"
local pcap = require "support.pcap"
local sluice = require "sluice"

local SLUICE = run.SLUICE
local SAMPLE = run.root .. "/examples/sample.pcap"
local q = run.q

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

-- Flow records as sorted text without ids (ids follow the order flows
-- start in, which differs with how the packets were split).
local function flow_set(recs)
  local t = {}
  for _, f in ipairs(recs) do
    local keys, parts = {}, {}
    for k in pairs(f) do if k ~= "id" then keys[#keys + 1] = k end end
    table.sort(keys)
    for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. tostring(f[k]) end
    t[#t + 1] = table.concat(parts, " ")
  end
  table.sort(t)
  return t
end

local function sh_ok(cmd)
  local r = run.sh(run.PLAIN .. cmd)
  assert(r.code == 0, run.describe(r))
  return r
end

-- The sample's flows read as one file, once.
local sample_flows
local function sample_set()
  if not sample_flows then
    local r, recs = run.sluice_json("-r " .. q(SAMPLE))
    assert(r.code == 0, run.describe(r))
    sample_flows = flow_set(recs)
  end
  return sample_flows
end

-- The sample cut in two halves of 800 packets, as dumpcap -b packets:800
-- would: a.pcap then b.pcap in time.
local function halves(dir)
  sh_ok(string.format("editcap -F pcap -c 800 %s %s", q(SAMPLE), q(dir .. "/part.pcap")))
  local names = {}
  for name in run.sh("ls " .. q(dir)).out:gmatch("[^\n]+") do names[#names + 1] = name end
  table.sort(names)
  assert(#names == 2, "editcap wrote " .. #names .. " files")
  local a, b = dir .. "/a.pcap", dir .. "/b.pcap"
  assert(os.rename(dir .. "/" .. names[1], a))
  assert(os.rename(dir .. "/" .. names[2], b))
  return a, b
end

describe("several captures", function()
  teardown(function()
    pcap.cleanup()
    run.cleanup()
  end)

  describe("split in time (rotated files)", function()
    local dir, a, b
    setup(function()
      dir = run.tmpdir() .. "/dumps"
      assert(os.execute("mkdir " .. q(dir)))
      a, b = halves(dir)
    end)

    it("the halves read alone cut connections in two: the split is a real test", function()
      local ra, fa = run.sluice_json("-r " .. q(a))
      local rb, fb = run.sluice_json("-r " .. q(b))
      assert(ra.code == 0 and rb.code == 0, run.describe(ra) .. run.describe(rb))
      assert(#fa + #fb > #sample_set(), "some flow spans both files")
    end)

    it("-r A -r B, -r B -r A and -r DIR give the flows of the whole capture", function()
      for _, args in ipairs { "-r " .. q(a) .. " -r " .. q(b), "-r " .. q(b) .. " -r " .. q(a),
        "-r " .. q(dir), "-r " .. q(dir .. "/") } do
        local r, recs = run.sluice_json(args)
        assert(r.code == 0, run.describe(r))
        assert.are.same(sample_set(), flow_set(recs), args)
      end
    end)

    it("a directory: entries that are not captures are skipped with a line; -v names each " ..
       "file as it starts and counts the files", function()
      local d = run.tmpdir() .. "/rot"
      assert(os.execute("mkdir " .. q(d) .. " " .. q(d .. "/sub")))
      sh_ok(string.format("cp %s %s %s/", q(a), q(b), q(d)))
      run.spit(d .. "/README.txt", "not a capture\n")
      run.spit(d .. "/.a.pcap.tmp", "being written")
      local out = run.tmpdir() .. "/o.json"
      local r = run.sh(string.format("%s run -r %s -v --out json:%s", SLUICE, q(d), q(out)))
      assert.are.equal(0, r.code, run.describe(r))
      assert.are.same(sample_set(), flow_set(run.json_lines(out)))
      assert(has(r.err, "sluice: " .. d .. ": 2 captures; skipped 2 directory entries that " ..
        "are not captures"), run.describe(r))
      local first = r.err:find("reading " .. d .. "/a.pcap (file 1 of 2)", 1, true)
      local second = r.err:find("reading " .. d .. "/b.pcap (file 2 of 2)", 1, true)
      assert(first and second and first < second, run.describe(r))
      assert(has(r.err, "files 2 finished 2 failed 0 skipped 2 (not captures)"), run.describe(r))
      -- -q: no line about skipped entries
      r = run.sh(string.format("%s run -r %s -q --out json:%s", SLUICE, q(d), q(out)))
      assert.are.equal(0, r.code, run.describe(r))
      assert.are.equal("", r.err)
    end)

    it("a file that breaks while read ends there; the others are read whole, the error names " ..
       "it and the exit status is 1", function()
      local d = run.tmpdir()
      local cut = d .. "/a-cut.pcap"
      local data = run.slurp(a)
      local recs = run.pcap_records(data)
      -- inside the 500th record
      run.spit(cut, data:sub(1, recs[500].offset + 10))
      local r, flows = run.sluice_json("-r " .. q(cut) .. " -r " .. q(b))
      assert.are.equal(1, r.code, run.describe(r))
      assert(has(r.err, "sluice: " .. cut .. ": "), run.describe(r))
      assert(has(r.err, "everything before it was processed"), run.describe(r))
      local pkts = run.flow_totals(flows)
      assert.are.equal(499 + 800, pkts, "every packet before the damage and all of b")
    end)
  end)

  describe("overlapping in time (two interfaces, mixed formats)", function()
    it("are merged by time: the flows are those of the whole capture", function()
      local d = run.tmpdir()
      local tcp, other = d .. "/tcp.pcap", d .. "/other.pcapng"
      sh_ok(string.format("tshark -r %s -Y tcp -F pcap -w %s", q(SAMPLE), q(tcp)))
      sh_ok(string.format("tshark -r %s -Y 'not tcp' -F pcapng -w %s", q(SAMPLE), q(other)))
      sh_ok("gzip " .. q(tcp))
      local r, recs = run.sluice_json("-r " .. q(other) .. " -r " .. q(tcp .. ".gz"))
      assert(r.code == 0, run.describe(r))
      assert.are.same(sample_set(), flow_set(recs))
      -- with an offline filter, compiled for each file
      r, recs = run.sluice_json("-r " .. q(other) .. " -r " .. q(tcp .. ".gz") .. " --filter udp")
      assert(r.code == 0, run.describe(r))
      assert(#recs > 0)
      for _, f in ipairs(recs) do assert.are.equal("udp", f.proto) end
    end)

    it("stdin is one of them", function()
      local d = run.tmpdir()
      local a, b = halves(d)
      local out = d .. "/o.json"
      local r = run.sh(string.format("cat %s | %s run -r %s -r - -q --out json:%s", q(b), SLUICE,
        q(a), q(out)))
      assert.are.equal(0, r.code, run.describe(r))
      assert.are.same(sample_set(), flow_set(run.json_lines(out)))
    end)
  end)

  -- one TCP connection of 4 packets over an Ethernet and a raw IP capture
  local function two_link_types()
    local function pkt(s, from_client)
      local src, dst = "10.0.0.1", "10.0.0.2"
      local sport, dport = 40000, 80
      if not from_client then src, dst, sport, dport = dst, src, dport, sport end
      local ip = pcap.ipv4 { src = src, dst = dst, proto = 6,
        payload = pcap.tcp { sport = sport, dport = dport, flags = from_client and "A" or "PA",
          len = 10 } }
      return { ts = pcap.t(s), ip = ip }
    end
    local pkts = { pkt(0, true), pkt(1, false), pkt(2, true), pkt(3, false) }
    local eth, raw = {}, {}
    for i, p in ipairs(pkts) do
      if i % 2 == 1 then
        eth[#eth + 1] = { ts = p.ts, frame = pcap.ether { payload = p.ip } }
      else
        raw[#raw + 1] = { ts = p.ts, frame = p.ip }
      end
    end
    return pcap.write(eth, { linktype = 1 }), pcap.write(raw, { linktype = 101 })
  end

  it("a connection split over files of different link types is one flow", function()
    local e, rw = two_link_types()
    local eng = assert(sluice.open { read = { rw, e } })
    local flows = {}
    assert(eng:run { { on_flow_end = function(f) flows[#flows + 1] = f:totable() end } })
    assert.are.equal(1, #flows)
    assert.are.equal(2, flows[1].pkts_fwd)
    assert.are.equal(2, flows[1].pkts_rev)
    local files = eng:files()
    assert.are.same({ files = 2, skipped = 0, finished = 2, failed = 0 }, files)
    eng:close()
  end)

  it("packet filters (info.packets) and --filter match packets of every link type", function()
    local e, rw = two_link_types()
    local seen = {}
    local P = { info = { name = "p", packets = "tcp port 80" } }
    function P.on_packet(pkt) seen[#seen + 1] = pkt.linktype end
    local eng = assert(sluice.open { read = { e, rw }, filter = "host 10.0.0.2" })
    assert(eng:run { P })
    assert.are.same({ 1, 101, 1, 101 }, seen)
    assert.are.equal(0, eng:stats().filtered)
    eng:close()
  end)

  -- a filter that compiles for the first file's link type but not for a
  -- later one's refused that file's packets: exit 0, filtered, no word
  it("--filter that does not compile for a later file's link type: a line naming why, exit 3",
    function()
    local e, rw = two_link_types()
    for _, workers in ipairs { "", " --workers 2" } do
      local r = run.sh(string.format("%s run -r %s -r %s --filter %s -v --out json:/dev/null%s",
        SLUICE, q(e), q(rw), q("tcp or ether host 00:11:22:33:44:55"), workers))
      assert.are.equal(3, r.code, run.describe(r))
      assert(has(r.err, "sluice: --filter does not compile for the link type of some packets, " ..
        "which were refused (counted in filtered): bad filter 'tcp or ether host " ..
        "00:11:22:33:44:55': ethernet addresses supported only on"), run.describe(r))
      assert(r.err:find("filtered 2"), run.describe(r))
    end
    -- a filter every link type takes: nothing to say
    local r = run.sh(string.format("%s run -r %s -r %s --filter tcp --out json:/dev/null", SLUICE,
      q(e), q(rw)))
    assert.are.equal(0, r.code, run.describe(r))
    assert.are.equal("", r.err)
  end)

  it("--out pcap: packets of another link type than the file's are lost, counted and " ..
     "reported (exit 3)", function()
    local e, rw = two_link_types()
    local d = run.tmpdir()
    local r = run.sh(string.format("%s run -r %s -r %s --out pcap:%s --out json:%s", SLUICE, q(e),
      q(rw), q(d .. "/x.pcap"), q(d .. "/f.json")))
    assert.are.equal(3, r.code, run.describe(r))
    assert(has(r.err, "packet of another link type than the file's"), run.describe(r))
    assert(has(r.err, "failed 2"), run.describe(r))
    local recs = run.pcap_records(run.slurp(d .. "/x.pcap"))
    assert.are.equal(2, #recs, "the Ethernet packets, in a file of the first file's link type")
    assert.are.equal(1, #run.json_lines(d .. "/f.json"))
  end)

  describe("errors", function()
    it("a file that cannot be read or is not a capture is named, before anything is read",
       function()
      local d = run.tmpdir()
      run.spit(d .. "/notes.txt", "hello\n")
      assert(os.execute("mkdir " .. q(d .. "/empty")))
      local out = d .. "/o.json"
      for _, case in ipairs {
        { q(SAMPLE) .. " -r " .. q(d .. "/nope.pcap"), d .. "/nope.pcap: No such file or directory" },
        { q(d .. "/notes.txt") .. " -r " .. q(SAMPLE), d .. "/notes.txt: not a pcap/pcapng file" },
        { q(d .. "/empty"), d .. "/empty: no capture in it" },
      } do
        local r = run.sh(string.format("%s run -r %s --out json:%s", SLUICE, case[1], q(out)))
        assert.are.equal(1, r.code, run.describe(r))
        assert(has(r.err, "sluice: " .. case[2]), run.describe(r))
        assert.are.equal("", run.slurp(out) or "", "nothing written")
      end
    end)

    it("sluice.open: read is a string or a non-empty list of strings", function()
      assert.has_error(function() sluice.open { read = {} } end)
      assert.has_error(function() sluice.open { read = { SAMPLE, 42 } } end)
      local eng, err = sluice.open { read = { SAMPLE, "/nonexistent/x.pcap" } }
      assert.is_nil(eng)
      assert.matches("/nonexistent/x.pcap", err, 1, true)
    end)

    it("a capture given where a policy goes says how to read several", function()
      local r = run.sh(string.format("%s run -r %s %s", SLUICE, q(SAMPLE), q(SAMPLE)))
      assert.are.equal(2, r.code, run.describe(r))
      assert(has(r.err, "(several: -r A -r B, or -r DIR)"), run.describe(r))
    end)
  end)

  describe("at the size users run", function()
    it("a generated trace cut into 12 files gives the flows of the whole trace", function()
      local trace = run.generated("-n 600000 -c 20000 -r 20000", "multi_spec", pending)
      local d = run.tmpdir() .. "/cut"
      assert(os.execute("mkdir " .. q(d)))
      sh_ok(string.format("editcap -F pcap -c 50000 %s %s", q(trace), q(d .. "/t.pcap")))
      local r1, whole = run.sluice_json("-r " .. q(trace))
      assert(r1.code == 0, run.describe(r1))
      local r2, parts = run.sluice_json("-r " .. q(d))
      assert(r2.code == 0, run.describe(r2))
      assert(#whole > 30000, "a trace of many flows: " .. #whole)
      assert.are.equal(#whole, #parts)
      assert.are.same(flow_set(whole), flow_set(parts))
    end)
  end)
end)
