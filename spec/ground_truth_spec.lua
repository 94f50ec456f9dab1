-- End to end: `sluice run -r FILE --out json:...` against independent
-- ground truth: the generator's own counts (examples/sample.pcap and a
-- trace generated here with bench/genpcap.c) and tshark's conversations.
local run = require "support.run"
local pcap = require "support.pcap"

local SAMPLE = run.root .. "/examples/sample.pcap"
local SAMPLE_TRUTH = run.root .. "/spec/fixtures/sample.truth.json"
-- A larger trace for the generator counts, a ~50k one for tshark.
local BIG_ARGS = "-n 200000 -c 2000 -s 11"
local MID_ARGS = "-n 50000 -c 500 -s 3"

-- A trace made by genpcap with args and its ground truth (run.generate);
-- the test is pending when the generator source is absent, an error when
-- the generator fails.
local function generated(args)
  return run.generated(args, "ground_truth_spec", pending)
end

-- The flow records of one default run over a capture.
local function flows_of(path)
  local r, recs = run.sluice_json("-r " .. run.q(path))
  assert(r.code == 0, "sluice failed:\n" .. run.describe(r))
  local flows = run.of_type(recs, "flow")
  assert(#flows > 0, "sluice wrote no flow lines:\n" .. run.describe(r))
  return flows
end

-- The generator's "icmp" counts echo flows over IPv4 and IPv6; sluice names
-- protocol 58 "icmp6".
local TRUTH_PROTO = { icmp6 = "icmp" }

local function summarize(flows)
  local s = { by_proto = {}, pkts = 0, bytes = 0, ip_bytes = 0, reasons = {} }
  for _, f in ipairs(flows) do
    local proto = TRUTH_PROTO[f.proto] or f.proto
    s.by_proto[proto] = (s.by_proto[proto] or 0) + 1
    s.pkts = s.pkts + f.pkts_fwd + f.pkts_rev
    s.bytes = s.bytes + f.bytes_fwd + f.bytes_rev
    s.ip_bytes = s.ip_bytes + f.ip_bytes_fwd + f.ip_bytes_rev
    local reason = f.end_reason or "none"
    s.reasons[reason] = (s.reasons[reason] or 0) + 1
  end
  return s
end

local function check_against_truth(flows, truth)
  local s = summarize(flows)
  for _, proto in ipairs { "tcp", "udp", "icmp" } do
    assert.are.equal(truth.flows_by_proto[proto], s.by_proto[proto] or 0,
      proto .. " flows")
  end
  -- no flow of a protocol the generator never sends
  for proto, n in pairs(s.by_proto) do
    assert.is_truthy(truth.flows_by_proto[proto], "unexpected " .. n .. " " .. proto .. " flows")
  end
  assert.are.equal(truth.flows, #flows, "flow count")
  assert.are.equal(truth.packets, s.pkts, "packets (sum of pkts_fwd + pkts_rev)")
  assert.are.equal(truth.bytes_frame, s.bytes, "bytes (sum of bytes_fwd + bytes_rev)")
  assert.are.equal(truth.bytes_ip, s.ip_bytes, "IP bytes (sum of ip_bytes_fwd + ip_bytes_rev)")
  assert.are.equal(truth.tcp_fin_closed, s.reasons.fin or 0, "flows ended by FIN")
  assert.are.equal(truth.tcp_rst_closed, s.reasons.rst or 0, "flows ended by RST")
end

describe("ground truth", function()
  teardown(run.cleanup)

  it("examples/sample.pcap matches its generator's counts", function()
    local truth = run.decode(assert(run.slurp(SAMPLE_TRUTH), "missing " .. SAMPLE_TRUTH))
    check_against_truth(flows_of(SAMPLE), truth)
  end)

  it("a generated trace (genpcap " .. BIG_ARGS .. ") matches the generator's counts", function()
    local path, truth = generated(BIG_ARGS)
    assert.are.equal(200000, truth.packets)
    check_against_truth(flows_of(path), truth)
  end)
end)

-- ---- tshark ---------------------------------------------------------------

-- Canonical text of an address: IPv4 as is, IPv6 as 8 groups of 4 hex
-- digits, so formatting differences cannot cause a mismatch.
local function canon(addr)
  if not addr:find(":", 1, true) then return addr end
  local groups = pcap.ip6_groups(addr)
  for i, g in ipairs(groups) do groups[i] = string.format("%04x", g) end
  return table.concat(groups, ":")
end

local function dkey(proto, a, pa, b, pb)
  return table.concat({ proto, canon(a), tostring(pa), canon(b), tostring(pb) }, "|")
end

local UNIT = { bytes = 1, kB = 1e3, MB = 1e6, GB = 1e9 }

-- tshark -z conv,tcp -z conv,udp: one entry per conversation line
-- "A:pa <-> B:pb  frames bytes unit (<-: B to A)  frames bytes unit (->: A
-- to B) ...". Addresses carry the port after their last colon (IPv6 too).
local function tshark_convs(path)
  local r = run.sh(run.PLAIN .. "tshark -n -r " .. run.q(path) .. " -q -z conv,tcp -z conv,udp")
  assert(r.code == 0, "tshark failed:\n" .. run.describe(r))
  local convs, proto = {}, nil
  for line in r.out:gmatch("[^\n]+") do
    local p = line:match("^(%u+) Conversations")
    if p then proto = p:lower() end
    local a, b, rest = line:match("^(%S+)%s+<%->%s+(%S+)%s+(.*)$")
    if a then
      local f_in, b_in, u_in, f_out, b_out, u_out =
        rest:match("^(%d+)%s+(%d+)%s+(%a+)%s+(%d+)%s+(%d+)%s+(%a+)")
      assert(f_in and UNIT[u_in] and UNIT[u_out], "cannot parse tshark line: " .. line)
      local aa, ap = a:match("^(.*):(%d+)$")
      local ba, bp = b:match("^(.*):(%d+)$")
      assert(aa and ba, "cannot parse tshark endpoints: " .. line)
      convs[#convs + 1] = { proto = proto, a = aa, pa = tonumber(ap), b = ba, pb = tonumber(bp),
        -- "<-": frames and bytes towards A; "->": from A
        pkts_to_a = tonumber(f_in), bytes_to_a = tonumber(b_in), unit_to_a = u_in,
        pkts_from_a = tonumber(f_out), bytes_from_a = tonumber(b_out), unit_from_a = u_out,
        line = line }
    end
  end
  return convs
end

-- Exact frames and bytes per direction (proto|src|sport|dst|dport) from
-- tshark's per-packet fields: the conversation table rounds bytes to kB.
local function tshark_directions(path)
  local r = run.sh(run.PLAIN .. "tshark -n -r " .. run.q(path) ..
    " -T fields -E occurrence=f -E separator=/t -e frame.len -e ip.src -e ip.dst" ..
    " -e ipv6.src -e ipv6.dst -e tcp.srcport -e tcp.dstport -e udp.srcport -e udp.dstport" ..
    " -e icmp.type -e icmpv6.type")
  assert(r.code == 0, "tshark failed:\n" .. run.describe(r))
  local dirs, ambiguous = {}, 0
  for line in r.out:gmatch("[^\n]+") do
    local f = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = field end
    local len, s4, d4, s6, d6, ts, td, us, ud, it4, it6 =
      tonumber(f[1]), f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11]
    local src, dst = s4 ~= "" and s4 or s6, d4 ~= "" and d4 or d6
    local icmp = (it4 or "") ~= "" or (it6 or "") ~= ""
    local tcp, udp = ts ~= "" and not icmp, us ~= "" and not icmp
    if tcp and udp then
      ambiguous = ambiguous + 1
    elseif (tcp or udp) and src ~= "" then
      local k = tcp and dkey("tcp", src, ts, dst, td) or dkey("udp", src, us, dst, ud)
      local d = dirs[k] or { pkts = 0, bytes = 0 }
      d.pkts, d.bytes = d.pkts + 1, d.bytes + len
      dirs[k] = d
    end
  end
  return dirs, ambiguous
end

-- The conversation table shows bytes >= 10000 in kB (and so on), truncated.
local function shown_as(n, unit)
  return math.floor(n / UNIT[unit])
end

local function compare_with_tshark(path)
  local flows = flows_of(path)
  local by_key, counts = {}, { tcp = 0, udp = 0 }
  for _, f in ipairs(flows) do
    if f.proto == "tcp" or f.proto == "udp" then
      counts[f.proto] = counts[f.proto] + 1
      local k = dkey(f.proto, f.src, f.sport, f.dst, f.dport)
      by_key[k] = by_key[k] or {}
      table.insert(by_key[k], f)
    end
  end

  local convs = tshark_convs(path)
  local n_conv = { tcp = 0, udp = 0 }
  local used = {}
  for _, c in ipairs(convs) do
    n_conv[c.proto] = n_conv[c.proto] + 1
    local ab = by_key[dkey(c.proto, c.a, c.pa, c.b, c.pb)] or {}
    local ba = by_key[dkey(c.proto, c.b, c.pb, c.a, c.pa)] or {}
    assert(#ab + #ba == 1, string.format("tshark conversation matches %d sluice flows: %s",
      #ab + #ba, c.line))
    local f = ab[1] or ba[1]
    assert(not used[f], "two tshark conversations match sluice flow " .. f.id)
    used[f] = true
    -- A's packets are fwd when A is the flow's src
    local from_a_pkts, to_a_pkts = f.pkts_fwd, f.pkts_rev
    local from_a_bytes, to_a_bytes = f.bytes_fwd, f.bytes_rev
    if not ab[1] then
      from_a_pkts, to_a_pkts, from_a_bytes, to_a_bytes = to_a_pkts, from_a_pkts, to_a_bytes, from_a_bytes
    end
    local what = "flow " .. f.id .. " vs tshark " .. c.line
    assert.are.equal(c.pkts_from_a, from_a_pkts, "packets A->B, " .. what)
    assert.are.equal(c.pkts_to_a, to_a_pkts, "packets B->A, " .. what)
    assert.are.equal(c.bytes_from_a, shown_as(from_a_bytes, c.unit_from_a), "bytes A->B, " .. what)
    assert.are.equal(c.bytes_to_a, shown_as(to_a_bytes, c.unit_to_a), "bytes B->A, " .. what)
  end
  assert.are.equal(n_conv.tcp, counts.tcp, "TCP conversations (tshark) vs tcp flows (sluice)")
  assert.are.equal(n_conv.udp, counts.udp, "UDP conversations (tshark) vs udp flows (sluice)")

  -- exact bytes per direction, from tshark's per-packet fields
  local dirs, ambiguous = tshark_directions(path)
  assert.are.equal(0, ambiguous, "packets with both TCP and UDP ports in tshark's decode")
  local seen = 0
  for _, f in ipairs(flows) do
    if f.proto == "tcp" or f.proto == "udp" then
      local fwd = dirs[dkey(f.proto, f.src, f.sport, f.dst, f.dport)] or { pkts = 0, bytes = 0 }
      local rev = dirs[dkey(f.proto, f.dst, f.dport, f.src, f.sport)] or { pkts = 0, bytes = 0 }
      local what = string.format("flow %d %s %s:%d -> %s:%d", f.id, f.proto, f.src, f.sport,
        f.dst, f.dport)
      assert.are.same({ f.pkts_fwd, f.bytes_fwd, f.pkts_rev, f.bytes_rev },
        { fwd.pkts, fwd.bytes, rev.pkts, rev.bytes }, "pkts/bytes fwd and rev of " .. what)
      seen = seen + (f.pkts_fwd > 0 and 1 or 0) + (f.pkts_rev > 0 and 1 or 0)
    end
  end
  local ndirs = 0
  for _ in pairs(dirs) do ndirs = ndirs + 1 end
  assert.are.equal(ndirs, seen, "TCP/UDP directions seen by tshark vs by sluice")
  return #convs
end

describe("per flow against tshark", function()
  teardown(run.cleanup)

  local function need_tshark()
    if not run.have("tshark") then
      io.stderr:write("ground_truth_spec: tshark is not installed, per-flow checks skipped\n")
      pending("tshark is not installed (apt-get install tshark): per-flow checks skipped")
    end
  end

  it("tshark's conversation table reads '<-' as B to A and '->' as A to B", function()
    need_tshark()
    -- 1 packet 10.0.0.1 -> 10.0.0.2 (142 bytes), 2 packets back (52 + 62)
    local dir = run.tmpdir()
    local path = pcap.write({
      { ts = pcap.t(0.0), frame = pcap.pkt { src = "10.0.0.1", dst = "10.0.0.2", sport = 40000,
        dport = 9999, proto = "udp", len = 100 } },
      { ts = pcap.t(0.1), frame = pcap.pkt { src = "10.0.0.2", dst = "10.0.0.1", sport = 9999,
        dport = 40000, proto = "udp", len = 10 } },
      { ts = pcap.t(0.2), frame = pcap.pkt { src = "10.0.0.2", dst = "10.0.0.1", sport = 9999,
        dport = 40000, proto = "udp", len = 20 } },
    }, { path = dir .. "/three.pcap" })
    local convs = tshark_convs(path)
    assert.are.equal(1, #convs)
    local c = convs[1]
    local from_a = c.a == "10.0.0.1" and { 1, 142 } or { 2, 114 }
    local to_a = c.a == "10.0.0.1" and { 2, 114 } or { 1, 142 }
    assert.are.same(from_a, { c.pkts_from_a, c.bytes_from_a })
    assert.are.same(to_a, { c.pkts_to_a, c.bytes_to_a })
    -- and sluice agrees on this one
    assert.are.equal(1, compare_with_tshark(path))
  end)

  it("every conversation in examples/sample.pcap matches one sluice flow", function()
    need_tshark()
    local n = compare_with_tshark(SAMPLE)
    local truth = run.decode(run.slurp(SAMPLE_TRUTH))
    assert.are.equal(truth.flows_by_proto.tcp + truth.flows_by_proto.udp, n)
  end)

  it("every conversation in a generated trace (genpcap " .. MID_ARGS .. ") matches one sluice flow", function()
    need_tshark()
    local path, truth = generated(MID_ARGS)
    local n = compare_with_tshark(path)
    assert.are.equal(truth.flows_by_proto.tcp + truth.flows_by_proto.udp, n)
  end)
end)
