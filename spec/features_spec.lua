-- --features stats (issue 16): NFStream's per-flow statistics (src2dst_,
-- dst2src_, bidirectional_ frame sizes, inter-arrival times, TCP flag
-- counts) in the JSON flow lines and on Lua flow handles, checked against
-- an independent computation from tshark's per-packet fields.
local run = require "support.run"
local pcap = require "support.pcap"
local sluice = require "sluice"
local flow_mod = require "sluice.flow"

local SAMPLE = run.root .. "/examples/sample.pcap"
-- TCP/UDP/ICMP, IPv4/IPv6, VLANs; a 45 s pause in the middle
local GEN_ARGS = "-n 60000 -c 600 -s 9"

local STREAMS = { "src2dst", "dst2src", "bidirectional" }
local FLAGS = { "fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr" } -- bit order
local VALUES = { "min_ps", "mean_ps", "stddev_ps", "max_ps",
  "min_piat_ms", "mean_piat_ms", "stddev_piat_ms", "max_piat_ms" }

-- Every statistics field name (3 x 16).
local FIELDS = {}
for _, s in ipairs(STREAMS) do
  for _, v in ipairs(VALUES) do FIELDS[#FIELDS + 1] = s .. "_" .. v end
  for _, fl in ipairs(FLAGS) do FIELDS[#FIELDS + 1] = s .. "_" .. fl .. "_packets" end
end

local function generated()
  return run.generated(GEN_ARGS, "features_spec", pending)
end

local function need_tshark()
  if not run.have("tshark") then
    io.stderr:write("features_spec: tshark is not installed, the independent computation is skipped\n")
    pending("tshark is not installed (apt-get install tshark): independent per-flow statistics skipped")
  end
end

-- `sluice run <args> -q --out json:<file>`: the run and its decoded lines.
local function sluice_json(args)
  local r, recs, out = run.sluice_json(args)
  assert(r.code == 0, "sluice failed:\n" .. run.describe(r))
  return recs, out
end

-- ---- the independent computation --------------------------------------------

-- Canonical address text (IPv6 as 8 groups of 4 hex digits).
local function canon(addr)
  if not addr:find(":", 1, true) then return addr end
  local groups = pcap.ip6_groups(addr)
  for i, g in ipairs(groups) do groups[i] = string.format("%04x", g) end
  return table.concat(groups, ":")
end

local function endpoint(addr, port)
  return canon(addr) .. "#" .. tostring(port)
end

-- A flow's tuple regardless of direction: proto number, vlan, the two
-- endpoints (address and port; ICMP echo: the identifier) in sorted order.
local function tuple(proto, vlan, a, b)
  if b < a then a, b = b, a end
  return table.concat({ proto, vlan, a, b }, "|")
end

local PROTO_NUM = { tcp = 6, udp = 17, icmp = 1, icmp6 = 58 }

-- frame.time_epoch "S.FFFFFFFFF" as integer nanoseconds after base
-- seconds (exact: no double ever holds the epoch in ns).
local function ns_of(text, base)
  local s, frac = text:match("^(%d+)%.?(%d*)$")
  assert(s, "cannot parse frame.time_epoch " .. text)
  assert(#frac <= 9, "frame.time_epoch finer than ns: " .. text)
  frac = frac .. string.rep("0", 9 - #frac)
  return (tonumber(s) - base) * 1000000000 + tonumber(frac)
end

local TSHARK_FIELDS = { "frame.time_epoch", "frame.len", "ip.src", "ipv6.src", "ip.dst", "ipv6.dst",
  "tcp.srcport", "udp.srcport", "tcp.dstport", "udp.dstport", "ip.proto", "ipv6.nxt", "tcp.flags",
  "vlan.id", "icmp.ident", "icmpv6.echo.identifier" }

-- Packets of each tuple, in file order: { tuple = { {ns, len, from, flags}, ... } }
-- where from is the sender's endpoint; and the tuples in order of first packet.
local function tshark_packets(path)
  local args = {}
  for _, f in ipairs(TSHARK_FIELDS) do args[#args + 1] = "-e " .. f end
  local r = run.sh(run.PLAIN .. "tshark -n -r " .. run.q(path) ..
    " -T fields -E occurrence=f -E separator=/t " .. table.concat(args, " "))
  assert(r.code == 0, "tshark failed:\n" .. run.describe(r))
  local groups, order, base, n, skipped = {}, {}, nil, 0, 0
  for line in r.out:gmatch("[^\n]+") do
    local f = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = field end
    assert(#f == #TSHARK_FIELDS, "unexpected tshark line: " .. line)
    local epoch, len = f[1], tonumber(f[2])
    local src = f[3] ~= "" and f[3] or f[4]
    local dst = f[5] ~= "" and f[5] or f[6]
    local proto = tonumber(f[11] ~= "" and f[11] or f[12])
    local sport, dport
    if proto == 6 then
      sport, dport = f[7], f[9]
    elseif proto == 17 then
      sport, dport = f[8], f[10]
    elseif proto == 1 then
      sport = f[15]
      dport = sport
    elseif proto == 58 then
      sport = f[16]
      dport = sport
    end
    if src ~= "" and sport and sport ~= "" then
      base = base or tonumber(epoch:match("^(%d+)"))
      local flags = proto == 6 and tonumber(f[13]) or 0 -- "0x0012"
      local vlan = f[14] ~= "" and tonumber(f[14]) or 0
      local from, to = endpoint(src, tonumber(sport)), endpoint(dst, tonumber(dport))
      local k = tuple(proto, vlan, from, to)
      local g = groups[k]
      if not g then
        g = {}
        groups[k] = g
        order[#order + 1] = k
      end
      g[#g + 1] = { ns = ns_of(epoch, base), len = len, from = from, flags = flags }
      n = n + 1
    else
      skipped = skipped + 1
    end
  end
  return groups, order, n, skipped
end

-- Sample statistics of a list of numbers: n, min, max, mean, stddev
-- (two passes: sum, then squared deviations from the mean).
local function describe_values(xs)
  local n = #xs
  if n == 0 then return { n = 0, min = 0, max = 0, mean = 0, sd = 0 } end
  local sum, mn, mx = 0, xs[1], xs[1]
  for _, x in ipairs(xs) do
    sum = sum + x
    if x < mn then mn = x end
    if x > mx then mx = x end
  end
  local mean = sum / n
  local ss = 0
  for _, x in ipairs(xs) do ss = ss + (x - mean) ^ 2 end
  return { n = n, min = mn, max = mx, mean = mean, sd = n > 1 and math.sqrt(ss / (n - 1)) or 0 }
end

-- The expected fields (by JSON name) of a group of packets whose first
-- packet's sender is the initiator.
local function expected_stats(pkts)
  local initiator = pkts[1].from
  local streams = { src2dst = {}, dst2src = {}, bidirectional = {} }
  for _, p in ipairs(pkts) do
    local s = p.from == initiator and streams.src2dst or streams.dst2src
    s[#s + 1] = p
    streams.bidirectional[#streams.bidirectional + 1] = p
  end
  local want, counts = {}, {}
  for name, list in pairs(streams) do
    local sizes, gaps = {}, {}
    local flag_n = { 0, 0, 0, 0, 0, 0, 0, 0 }
    for i, p in ipairs(list) do
      sizes[i] = p.len
      if i > 1 then
        local g = p.ns - list[i - 1].ns
        gaps[i - 1] = g > 0 and g or 0
      end
      for b = 1, 8 do
        if bit.band(p.flags, bit.lshift(1, b - 1)) ~= 0 then flag_n[b] = flag_n[b] + 1 end
      end
    end
    local ps, piat = describe_values(sizes), describe_values(gaps)
    want[name .. "_min_ps"], want[name .. "_max_ps"] = ps.min, ps.max
    want[name .. "_mean_ps"], want[name .. "_stddev_ps"] = ps.mean, ps.sd
    want[name .. "_min_piat_ms"], want[name .. "_max_piat_ms"] = piat.min / 1e6, piat.max / 1e6
    want[name .. "_mean_piat_ms"], want[name .. "_stddev_piat_ms"] = piat.mean / 1e6, piat.sd / 1e6
    for b, fl in ipairs(FLAGS) do want[name .. "_" .. fl .. "_packets"] = flag_n[b] end
    counts[name] = #list
  end
  return want, counts, initiator
end

-- How far two numbers may differ for a field.
local function tolerance(field, want)
  if field:match("_packets$") or field:match("_ps$") and not field:match("mean") and
    not field:match("stddev") then
    return 0 -- counts, min/max sizes: exact
  elseif field:match("min_piat") or field:match("max_piat") then
    return math.abs(want) * 1e-12
  end
  return want == 0 and 1e-9 or math.abs(want) * 1e-9
end

-- ---- consistency of one line with itself ---------------------------------------

local function check_line(f)
  local what = "flow " .. f.id
  for _, k in ipairs(FIELDS) do
    assert(type(f[k]) == "number", k .. " missing or not a number in " .. what)
    assert(f[k] >= 0, k .. " negative in " .. what)
  end
  -- the mean size times the packets gives the bytes (frame bytes)
  local dirs = { src2dst = { f.pkts_fwd, f.bytes_fwd }, dst2src = { f.pkts_rev, f.bytes_rev },
    bidirectional = { f.pkts_fwd + f.pkts_rev, f.bytes_fwd + f.bytes_rev } }
  for s, pb in pairs(dirs) do
    local n, bytes = pb[1], pb[2]
    local total = f[s .. "_mean_ps"] * n
    assert(math.abs(total - bytes) <= 1e-9 * math.max(bytes, 1),
      string.format("%s: %s_mean_ps %.17g x %d packets = %.17g, bytes %d", what, s,
        f[s .. "_mean_ps"], n, total, bytes))
    if n > 0 then
      assert(f[s .. "_min_ps"] <= f[s .. "_mean_ps"] + 1e-9 and
        f[s .. "_mean_ps"] <= f[s .. "_max_ps"] + 1e-9, what .. ": " .. s .. " min <= mean <= max (ps)")
      assert(f[s .. "_min_piat_ms"] <= f[s .. "_mean_piat_ms"] * (1 + 1e-9) + 1e-12 and
        f[s .. "_mean_piat_ms"] <= f[s .. "_max_piat_ms"] * (1 + 1e-9) + 1e-12,
        what .. ": " .. s .. " min <= mean <= max (piat)")
    else
      for _, v in ipairs(VALUES) do
        assert.are.equal(0, f[s .. "_" .. v], what .. ": " .. s .. "_" .. v .. " of an empty stream")
      end
    end
    if n < 2 then
      assert.are.equal(0, f[s .. "_stddev_ps"], what .. ": " .. s .. "_stddev_ps with < 2 packets")
      assert.are.equal(0, f[s .. "_max_piat_ms"], what .. ": " .. s .. "_max_piat_ms with < 2 packets")
    end
    for _, fl in ipairs(FLAGS) do
      assert(f[s .. "_" .. fl .. "_packets"] <= n, what .. ": " .. s .. " " .. fl .. " packets > packets")
    end
  end
  local tflags = { src2dst = f.tcp_flags_fwd, dst2src = f.tcp_flags_rev }
  for b, fl in ipairs(FLAGS) do
    local a, r = f["src2dst_" .. fl .. "_packets"], f["dst2src_" .. fl .. "_packets"]
    assert.are.equal(a + r, f["bidirectional_" .. fl .. "_packets"],
      what .. ": bidirectional_" .. fl .. "_packets = src2dst + dst2src")
    if f.proto == "tcp" then
      -- a flag counted in a direction is in that direction's OR of flags
      for s, bits in pairs(tflags) do
        local has = bit.band(bits, bit.lshift(1, b - 1)) ~= 0
        assert.are.equal(has, f[s .. "_" .. fl .. "_packets"] > 0,
          string.format("%s: tcp_flags %s has %s = %s but %s_%s_packets = %d", what, s, fl,
            tostring(has), s, fl, f[s .. "_" .. fl .. "_packets"]))
      end
    else
      assert.are.equal(0, f["bidirectional_" .. fl .. "_packets"], what .. ": flag count of non-TCP")
    end
  end
end

-- ---- the specs --------------------------------------------------------------------

describe("--features stats", function()
  teardown(run.cleanup)

  it("every flow of a generated trace (genpcap " .. GEN_ARGS .. ") matches statistics computed from tshark", function()
    need_tshark()
    local path, truth = generated()
    local flows = run.of_type(sluice_json("-r " .. run.q(path) .. " --features stats"), "flow")
    assert.are.equal(truth.flows, #flows, "flow lines")

    -- sluice's lines by tuple
    local by_tuple = {}
    for _, f in ipairs(flows) do
      check_line(f)
      local proto = assert(PROTO_NUM[f.proto], "unexpected proto " .. tostring(f.proto))
      local k = tuple(proto, f.vlan, endpoint(f.src, f.sport), endpoint(f.dst, f.dport))
      by_tuple[k] = by_tuple[k] or {}
      table.insert(by_tuple[k], f)
    end

    local groups, order, npkts, skipped = tshark_packets(path)
    assert.are.equal(0, skipped, "packets tshark decodes without addresses and ports or ICMP echo id")
    assert.are.equal(truth.packets, npkts, "packets read by tshark")

    local compared, checked_fields, reused = 0, 0, 0
    for _, k in ipairs(order) do
      local pkts, lines = groups[k], by_tuple[k]
      assert(lines, "tshark's packets of " .. k .. " are in no sluice flow")
      local sum = 0
      for _, f in ipairs(lines) do sum = sum + f.pkts_fwd + f.pkts_rev end
      assert.are.equal(#pkts, sum, "packets of " .. k .. " (tshark) vs its sluice flows")
      if #lines == 1 then
        local f = lines[1]
        local want, counts, initiator = expected_stats(pkts)
        local what = string.format("flow %d %s vlan %d %s:%d -> %s:%d", f.id, f.proto, f.vlan,
          f.src, f.sport, f.dst, f.dport)
        assert.are.equal(initiator, endpoint(f.src, f.sport), "initiator (src) of " .. what)
        assert.are.equal(counts.src2dst, f.pkts_fwd, "src2dst packets of " .. what)
        assert.are.equal(counts.dst2src, f.pkts_rev, "dst2src packets of " .. what)
        assert.are.equal(counts.bidirectional, f.pkts_fwd + f.pkts_rev, "bidirectional packets of " .. what)
        for _, field in ipairs(FIELDS) do
          local w, got = want[field], f[field]
          local tol = tolerance(field, w)
          assert(math.abs(got - w) <= tol, string.format(
            "%s: %s is %.17g, tshark's packets give %.17g (difference %.3g, allowed %.3g)",
            what, field, got, w, got - w, tol))
          checked_fields = checked_fields + 1
        end
        compared = compared + 1
      else
        reused = reused + 1
      end
    end
    -- every sluice line has a tuple tshark saw
    for k, lines in pairs(by_tuple) do
      assert(groups[k], "sluice flow " .. lines[1].id .. " (" .. k .. ") has no packet in tshark's decode")
    end
    assert(compared >= 0.95 * #flows, string.format(
      "only %d of %d flows compared (%d tuples reused by several flows)", compared, #flows, reused))
    assert.are.equal(compared * #FIELDS, checked_fields)
  end)

  it("a hand-made flow: a packet earlier than the one before counts 0, 1 ns gaps, flags", function()
    local A, B = "10.0.0.1", "10.0.0.2"
    local function tcp(src, dst, sport, dport, flags, len)
      return pcap.pkt { proto = "tcp", src = src, dst = dst, sport = sport, dport = dport, flags = flags,
        len = len }
    end
    local base = pcap.t(0)
    local ns = { 0, 1000, 500, 501, 3000 }
    local frames = {
      tcp(A, B, 40000, 80, "S", 0),    -- t 0      A -> B
      tcp(B, A, 80, 40000, "SA", 0),   -- t 1000   B -> A
      tcp(A, B, 40000, 80, "A", 0),    -- t 500    A -> B, earlier than the packet before
      tcp(A, B, 40000, 80, "PA", 100), -- t 501    A -> B, 1 ns after
      tcp(B, A, 80, 40000, "A", 10),   -- t 3000   B -> A
    }
    assert.are.same({ 54, 54, 54, 154, 64 }, { #frames[1], #frames[2], #frames[3], #frames[4], #frames[5] })
    local pkts = {}
    for i, fr in ipairs(frames) do pkts[i] = { ts = base + ns[i], frame = fr } end
    local path = pcap.write(pkts, { path = run.tmpdir() .. "/hand.pcap" })
    local flows = run.of_type(sluice_json("-r " .. run.q(path) .. " --features stats"), "flow")
    assert.are.equal(1, #flows)
    local f = flows[1]
    check_line(f)
    local sq2 = math.sqrt(2)
    local want = {
      -- A -> B: 54, 54, 154 at 0, 500, 501 ns
      src2dst_min_ps = 54, src2dst_max_ps = 154, src2dst_mean_ps = 262 / 3,
      src2dst_stddev_ps = math.sqrt((2 * (100 / 3) ^ 2 + (200 / 3) ^ 2) / 2),
      src2dst_min_piat_ms = 1e-6, src2dst_max_piat_ms = 5e-4, src2dst_mean_piat_ms = 2.505e-4,
      src2dst_stddev_piat_ms = 249.5 * sq2 / 1e6,
      src2dst_syn_packets = 1, src2dst_ack_packets = 2, src2dst_psh_packets = 1, src2dst_fin_packets = 0,
      -- B -> A: 54, 64 at 1000, 3000 ns
      dst2src_min_ps = 54, dst2src_max_ps = 64, dst2src_mean_ps = 59, dst2src_stddev_ps = 5 * sq2,
      dst2src_min_piat_ms = 0.002, dst2src_max_piat_ms = 0.002, dst2src_mean_piat_ms = 0.002,
      dst2src_stddev_piat_ms = 0,
      dst2src_syn_packets = 1, dst2src_ack_packets = 2, dst2src_psh_packets = 0, dst2src_rst_packets = 0,
      -- both: gaps 1000, 0 (500 after 1000), 1, 2499 ns; mean 875
      bidirectional_min_ps = 54, bidirectional_max_ps = 154, bidirectional_mean_ps = 76,
      bidirectional_stddev_ps = math.sqrt((3 * 22 ^ 2 + 78 ^ 2 + 12 ^ 2) / 4),
      bidirectional_min_piat_ms = 0, bidirectional_max_piat_ms = 0.002499,
      bidirectional_mean_piat_ms = 0.000875,
      bidirectional_stddev_piat_ms = math.sqrt((125 ^ 2 + 875 ^ 2 + 874 ^ 2 + 1624 ^ 2) / 3) / 1e6,
      bidirectional_syn_packets = 2, bidirectional_ack_packets = 4, bidirectional_psh_packets = 1,
    }
    for field, w in pairs(want) do
      local tol = tolerance(field, w)
      assert(math.abs(f[field] - w) <= tol, string.format("%s is %.17g, want %.17g", field, f[field], w))
    end
  end)

  it("examples/sample.pcap: every line carries consistent statistics", function()
    local flows = run.of_type(sluice_json("-r " .. run.q(SAMPLE) .. " --features stats"), "flow")
    assert(#flows > 0, "no flow lines")
    for _, f in ipairs(flows) do check_line(f) end
  end)

  it("without --features no line has a statistics field", function()
    local path = generated()
    for _, input in ipairs { path, SAMPLE } do
      local recs = sluice_json("-r " .. run.q(input))
      assert(#run.of_type(recs, "flow") > 0, "no flow lines from " .. input)
      for _, rec in ipairs(recs) do
        for _, k in ipairs(FIELDS) do
          assert.is_nil(rec[k], k .. " in a line of a run without --features: " .. input)
        end
        for k in pairs(rec) do
          assert(not k:match("^src2dst_") and not k:match("^dst2src_") and not k:match("^bidirectional_"),
            "statistics-like field " .. k .. " without --features")
        end
      end
    end
  end)

  it("a policy reads the same values on flow handles (nil without the feature)", function()
    local dir = run.tmpdir()
    local out = dir .. "/seen.txt"
    local policy = run.spit(dir .. "/collect.lua", string.format([[
-- emits nothing; writes "id<TAB>mean_ps<TAB>syn<TAB>max_piat<TAB>kind" per ended flow
local P = {}
local OUT = %q
local function fmt(v)
  if v == nil then return "nil" end
  return string.format("%%.17g", v)
end
function P.on_flow_end(f)
  local h = assert(io.open(OUT, "a"))
  h:write(string.format("%%d\t%%s\t%%s\t%%s\t%%s\n", f.id, fmt(f.bidirectional_mean_ps),
    fmt(f.src2dst_syn_packets), fmt(f.dst2src_max_piat_ms), type(f.bidirectional_mean_ps)))
  h:close()
end
return P
]], out))
    local function collected()
      local t, n = {}, 0
      for line in assert(run.slurp(out), "the policy wrote nothing"):gmatch("[^\n]+") do
        local id, a, b, c = line:match("^(%d+)\t(%S+)\t(%S+)\t(%S+)\t")
        assert(id, "bad policy line: " .. line)
        t[tonumber(id)] = { a, b, c }
        n = n + 1
      end
      os.remove(out)
      return t, n
    end

    local lines = run.of_type(sluice_json("-r " .. run.q(SAMPLE) .. " --features stats"), "flow")
    assert(#lines > 0)
    local r = run.sh(run.SLUICE .. " run " .. run.q(policy) .. " -r " .. run.q(SAMPLE) ..
      " -q --features stats --out json:" .. run.q(dir .. "/policy.json"))
    assert(r.code == 0, run.describe(r))
    assert.are.equal(0, #run.json_lines(dir .. "/policy.json"), "the policy emits nothing")
    local seen, n = collected()
    assert.are.equal(#lines, n, "flows the policy saw")
    for _, f in ipairs(lines) do
      local s = assert(seen[f.id], "the policy did not see flow " .. f.id)
      local fields = { "bidirectional_mean_ps", "src2dst_syn_packets", "dst2src_max_piat_ms" }
      for i, field in ipairs(fields) do
        local v = tonumber(s[i])
        assert(v, "flow " .. f.id .. ": " .. field .. " is " .. s[i] .. " on the handle")
        -- the JSON line has 12 significant digits
        assert(math.abs(v - f[field]) <= 1e-11 * math.abs(v),
          string.format("flow %d: %s on the handle %.17g, in JSON %.17g", f.id, field, v, f[field]))
      end
    end

    r = run.sh(run.SLUICE .. " run " .. run.q(policy) .. " -r " .. run.q(SAMPLE) .. " -q")
    assert(r.code == 0, run.describe(r))
    seen, n = collected()
    assert.are.equal(#lines, n, "flows the policy saw without --features")
    for id, s in pairs(seen) do
      assert.are.same({ "nil", "nil", "nil" }, s, "flow " .. id .. " without --features")
    end
  end)

  it("a copy of a handle keeps its features after the run (rec:copy())", function()
    local eng = assert(sluice.open { read = SAMPLE, features = { "stats", "splt:4" } })
    local copies, want = {}, {}
    assert(eng:run {
      on_flow_end = function(f)
        copies[#copies + 1] = f:copy()
        want[#want + 1] = f:totable()
      end,
    })
    eng:close()
    collectgarbage()
    assert.is_true(#copies > 100)
    for i, c in ipairs(copies) do
      local t = c:totable()
      assert.are.same(want[i].splt_ps, t.splt_ps)
      assert.are.same(want[i].splt_direction, t.splt_direction)
      for _, field in ipairs(flow_mod.STAT_NAMES) do
        assert.are.equal(want[i][field], t[field], field)
      end
    end
  end)

  it("--workers 2 gives the same lines as one worker", function()
    local path = generated()
    local function lines(extra)
      local _, out = sluice_json("-r " .. run.q(path) .. " --features stats " .. extra)
      local list = {}
      for line in assert(run.slurp(out)):gmatch("[^\n]+") do
        if line:find('"type":"flow"', 1, true) then
          local stripped, k = line:gsub('"id":%d+,', "")
          assert.are.equal(1, k, "one id in " .. line)
          list[#list + 1] = stripped
        end
      end
      table.sort(list)
      return list
    end
    local one, two = lines(""), lines("--workers 2")
    assert(#one > 1000, "flow lines of one worker: " .. #one)
    assert(one[1]:find("bidirectional_mean_ps", 1, true), "statistics in the lines")
    assert.are.equal(#one, #two, "flow lines, 1 vs 2 workers")
    for i = 1, #one do
      assert.are.equal(one[i], two[i], "line " .. i .. " of the sorted lines")
    end
  end)

  it("--features bogus is a usage error naming the feature", function()
    local r = run.sh(run.SLUICE .. " run -r " .. run.q(SAMPLE) .. " -q --features bogus --out json:/dev/null")
    assert.are.equal(2, r.code, run.describe(r))
    assert(r.err:find("bogus", 1, true), "stderr names the feature\n" .. run.describe(r))
    r = run.sh(run.SLUICE .. " run -r " .. run.q(SAMPLE) .. " -q --features stats,bogus --out json:/dev/null")
    assert.are.equal(2, r.code, run.describe(r))
    assert(r.err:find("bogus", 1, true), "stderr names the feature\n" .. run.describe(r))
  end)

  it("sluice.open with an unknown feature raises 'unknown feature'; a known one works", function()
    for _, v in ipairs { "bogus", { "stats", "bogus" } } do
      local ok, err = pcall(sluice.open, { read = SAMPLE, features = v })
      assert.is_false(ok, "sluice.open accepted features " .. tostring(v))
      assert(tostring(err):find("unknown feature", 1, true), "error: " .. tostring(err))
      assert(tostring(err):find("bogus", 1, true), "error: " .. tostring(err))
    end
    -- the last N won, silently
    local ok, err = pcall(sluice.open, { read = SAMPLE, features = { "splt:5", "splt:7" } })
    assert.is_false(ok)
    assert(tostring(err):find("feature 'splt' given twice", 1, true), "error: " .. tostring(err))
    for _, v in ipairs { "stats", { "stats" } } do
      local eng = assert(sluice.open { read = SAMPLE, features = v })
      local n, with = 0, 0
      assert(eng:run { on_flow_end = function(f)
        n = n + 1
        if type(f.bidirectional_mean_ps) == "number" and type(f.src2dst_syn_packets) == "number" then
          with = with + 1
        end
      end })
      eng:close()
      assert(n > 0, "no flows")
      assert.are.equal(n, with, "flows with statistics on the handle")
    end
    local eng = assert(sluice.open { read = SAMPLE })
    local n = 0
    assert(eng:run { on_flow_end = function(f)
      n = n + 1
      assert.is_nil(f.bidirectional_mean_ps)
      assert.is_nil(f.dst2src_max_piat_ms)
    end })
    eng:close()
    assert(n > 0, "no flows")
  end)
end)
