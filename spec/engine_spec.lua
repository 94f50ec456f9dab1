-- The engine through the public API: sluice.open{...} and eng:run(policy).
-- Every capture is generated here (spec/support/pcap.lua); the expected
-- numbers follow from how the packets were built.
local sluice = require "sluice"
local pcap = require "support.pcap"

local A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"

-- A packet at BASE + t seconds; o as for pcap.pkt, plus caplen/orig_len.
local function at(t, o)
  return { ts = pcap.t(t), frame = pcap.pkt(o), caplen = o.caplen, orig_len = o.orig_len }
end

local function raw_at(t, frame, orig_len)
  return { ts = pcap.t(t), frame = frame, orig_len = orig_len }
end

local function tcp(t, src, dst, sport, dport, flags, len, extra)
  local o = { proto = "tcp", src = src, dst = dst, sport = sport, dport = dport,
    flags = flags, len = len or 0 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return at(t, o)
end

local function udp(t, src, dst, sport, dport, len, extra)
  local o = { proto = "udp", src = src, dst = dst, sport = sport, dport = dport, len = len or 0 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return at(t, o)
end

-- Runs a collecting policy over packets; returns what it saw.
local function run(packets, open_opts, pcap_opts)
  local path = pcap.write(packets, pcap_opts)
  local o = { read = path }
  for k, v in pairs(open_opts or {}) do o[k] = v end
  local eng = assert(sluice.open(o))
  local r = { starts = {}, ends = {}, slices = {}, batches = {}, order = {} }
  r.ok, r.err = eng:run {
    on_flow_start = function(f)
      local t = f:totable()
      r.starts[#r.starts + 1] = t
      r.order[#r.order + 1] = "start " .. t.id
    end,
    on_flow_end = function(f, reason)
      local t = f:totable()
      t.reason = reason
      r.ends[#r.ends + 1] = t
      r.order[#r.order + 1] = "end " .. t.id
    end,
    on_slice = function(batch)
      local b = { start = batch.start, ["end"] = batch["end"], recs = {} }
      for rec in batch:records() do
        local t = rec:totable()
        b.recs[#b.recs + 1] = t
        r.slices[#r.slices + 1] = t
      end
      r.batches[#r.batches + 1] = b
    end,
  }
  r.stats = eng:stats()
  eng:close()
  return r
end

-- Ended flows keyed by something: by sport by default.
local function by(list, field)
  local t = {}
  for _, f in ipairs(list) do
    local k = f[field or "sport"]
    assert(t[k] == nil, "two flows with " .. (field or "sport") .. " " .. tostring(k))
    t[k] = f
  end
  return t
end

local function near_sec(expected_t, got)
  assert.is_true(math.abs(pcap.sec(pcap.t(expected_t)) - got) < 1e-6,
    string.format("time %.9f is not BASE+%.6f", got, expected_t))
end

-- A full TCP conversation A:sport -> B:80 starting at t0, closed by FIN.
local function conversation(t0, sport)
  return {
    tcp(t0 + 0.0, A, B, sport, 80, "S"),
    tcp(t0 + 0.1, B, A, 80, sport, "SA"),
    tcp(t0 + 0.2, A, B, sport, 80, "A"),
    tcp(t0 + 0.3, A, B, sport, 80, "PA", 100),
    tcp(t0 + 0.4, B, A, 80, sport, "PA", 200),
    tcp(t0 + 0.5, A, B, sport, 80, "FA"),
    tcp(t0 + 0.6, B, A, 80, sport, "FA"),
    tcp(t0 + 0.7, A, B, sport, 80, "A"),
  }
end

local function append(dst, src)
  for _, v in ipairs(src) do dst[#dst + 1] = v end
  return dst
end

describe("engine", function()
  teardown(function() pcap.cleanup() end)

  describe("end reasons", function()
    it("ends a TCP flow with 'fin' after FIN from both sides and the last ACK", function()
      local r = run(conversation(0, 40000))
      assert.is_true(r.ok, r.err)
      assert.equal(1, #r.ends)
      local f = r.ends[1]
      assert.equal("fin", f.reason)
      assert.equal("fin", f.end_reason)
      assert.equal("closed", f.state)
      assert.equal(5, f.pkts_fwd)
      assert.equal(3, f.pkts_rev)
      near_sec(0.7, f.last)
      assert.same({ fin = 1 }, r.stats.ended_by)
    end)

    it("does not end on FIN from one side only", function()
      local pkts = conversation(0, 40000)
      table.remove(pkts, 8) -- the last ACK
      table.remove(pkts, 7) -- the responder's FIN
      local r = run(pkts)
      assert.equal(1, #r.ends)
      assert.equal("eof", r.ends[1].reason)
      assert.equal("fin_wait", r.ends[1].state)
    end)

    it("waits for the last ACK after both FINs", function()
      local pkts = conversation(0, 40000)
      table.remove(pkts, 8) -- the last ACK
      local r = run(pkts)
      assert.equal(1, #r.ends)
      assert.equal("eof", r.ends[1].reason)
      assert.equal("closing", r.ends[1].state)
    end)

    -- sequence numbers as a real stack writes them: A's ISN 1000, B's 5000
    local function numbered(t, src, dst, sport, dport, flags, seq, ack)
      return tcp(t, src, dst, sport, dport, flags, 0, { seq = seq, ack = ack })
    end
    local function handshake()
      return {
        numbered(0.0, A, B, 40000, 80, "S", 1000, 0),
        numbered(0.1, B, A, 80, 40000, "SA", 5000, 1001),
        numbered(0.2, A, B, 40000, 80, "A", 1001, 5001),
      }
    end

    it("a simultaneous close (the FINs cross, each side ACKs the other's) is one flow ended 'fin'", function()
      local pkts = append(handshake(), {
        numbered(0.3, A, B, 40000, 80, "FA", 1001, 5001),
        numbered(0.3001, B, A, 80, 40000, "FA", 5001, 1001), -- had not seen A's FIN
        numbered(0.4, A, B, 40000, 80, "A", 1002, 5002),
        numbered(0.4001, B, A, 80, 40000, "A", 5002, 1002),
      })
      local r = run(pkts)
      assert.equal(1, #r.ends, "the second final ACK must not open a flow of its own")
      assert.equal("fin", r.ends[1].reason)
      assert.equal(4, r.ends[1].pkts_fwd)
      assert.equal(3, r.ends[1].pkts_rev)
      near_sec(0.4001, r.ends[1].last)
    end)

    it("an ordinary close with real sequence numbers still ends at the last ACK", function()
      local pkts = append(handshake(), {
        numbered(0.3, A, B, 40000, 80, "FA", 1001, 5001),
        numbered(0.4, B, A, 80, 40000, "FA", 5001, 1002),
        numbered(0.5, A, B, 40000, 80, "A", 1002, 5002),
        numbered(0.6, A, B, 40000, 80, "S", 7000, 0), -- the tuple reused
      })
      local r = run(pkts)
      assert.equal(2, #r.ends)
      assert.equal("fin", r.ends[1].reason)
      near_sec(0.5, r.ends[1].last)
      assert.equal(1, r.ends[2].pkts_fwd)
    end)

    it("starts a new flow with a new id when the tuple is reused after FIN", function()
      local pkts = conversation(0, 40000)
      append(pkts, {
        tcp(1.0, A, B, 40000, 80, "S"),
        tcp(1.1, B, A, 80, 40000, "RA"),
      })
      local r = run(pkts)
      assert.equal(2, #r.starts)
      assert.equal(2, #r.ends)
      assert.are_not.equal(r.ends[1].id, r.ends[2].id)
      assert.equal("fin", r.ends[1].reason)
      assert.equal(8, r.ends[1].pkts_fwd + r.ends[1].pkts_rev)
      assert.equal("rst", r.ends[2].reason)
      assert.equal(1, r.ends[2].pkts_fwd)
      assert.equal(1, r.ends[2].pkts_rev)
      assert.same({ "start 1", "end 1", "start 2", "end 2" }, r.order)
    end)

    -- the tuple's next connection was counted in the old flow, or the old
    -- one took the new handshake (the helper's reuse_*.pcap)
    it("a SYN with a new sequence number on a flow that did not close starts a new flow", function()
      local pkts = append(handshake(), {
        numbered(0.3, A, B, 40000, 80, "FA", 1001, 5001),
        numbered(0.4, B, A, 80, 40000, "FA", 5001, 1002), -- the last ACK is lost
        numbered(1.0, A, B, 40000, 80, "S", 9000, 0),
        numbered(1.1, B, A, 80, 40000, "SA", 7000, 9001),
        numbered(1.2, A, B, 40000, 80, "A", 9001, 7001),
        numbered(1.3, A, B, 40000, 80, "S", 9000, 0), -- a retransmitted SYN: same flow
      })
      local r = run(pkts)
      assert.equal(2, #r.ends)
      assert.equal("reused", r.ends[1].reason)
      assert.equal("closing", r.ends[1].state)
      assert.equal(3, r.ends[1].pkts_fwd)
      assert.equal(2, r.ends[1].pkts_rev)
      near_sec(0.4, r.ends[1].last)
      assert.equal("eof", r.ends[2].reason)
      assert.equal(3, r.ends[2].pkts_fwd)
      assert.equal(1, r.ends[2].pkts_rev)
      assert.equal("ShA", r.ends[2].history)
      assert.same({ reused = 1, eof = 1 }, r.stats.ended_by)
    end)

    it("a SYN on a flow that began mid-connection starts a new flow; a simultaneous open does not", function()
      local r = run {
        numbered(0.0, A, B, 40000, 80, "PA", 1000, 5000),
        numbered(0.1, A, B, 40000, 80, "S", 3000, 0),
        numbered(0.2, B, A, 80, 40000, "S", 8000, 0), -- the other side's SYN: the same connection
      }
      assert.equal(2, #r.ends)
      assert.equal("reused", r.ends[1].reason)
      assert.equal("midstream", r.ends[1].state)
      assert.equal(1, r.ends[2].pkts_fwd)
      assert.equal(1, r.ends[2].pkts_rev)
    end)

    -- late packets of a closed connection became flows of their own,
    -- midstream and often reversed (a mirror port that sends each packet
    -- twice gave 40% more TCP flows)
    it("packets after a close join the closed flow for tcp_closed (2 s), then the flow ends 'fin'", function()
      local pkts = conversation(0, 40000)
      append(pkts, {
        tcp(0.9, B, A, 80, 40000, "FA"),  -- the responder's FIN again
        tcp(2.6, A, B, 40000, 80, "A"),   -- 1.9 s after the last one
        tcp(5.0, A, B, 40000, 80, "A"),   -- 2.4 s later: a flow of its own
      })
      local r = run(pkts)
      assert.equal(2, #r.ends)
      local f = r.ends[1]
      assert.equal("fin", f.reason)
      assert.equal("closed", f.state)
      assert.equal(6, f.pkts_fwd)
      assert.equal(4, f.pkts_rev)
      near_sec(2.6, f.last)
      assert.equal("midstream", r.ends[2].state)
      assert.equal("eof", r.ends[2].reason)
    end)

    it("a capture holding every packet twice gives the same flows, each counting twice", function()
      local once, twice = {}, {}
      for i = 0, 4 do append(once, conversation(i * 10, 40000 + i)) end
      for _, p in ipairs(once) do twice[#twice + 1] = p twice[#twice + 1] = p end
      local r1, r2 = run(once), run(twice)
      assert.equal(5, #r2.ends)
      local e1, e2 = by(r1.ends), by(r2.ends)
      for port, f in pairs(e1) do
        assert.equal("fin", e2[port].reason)
        assert.equal(2 * f.pkts_fwd, e2[port].pkts_fwd)
        assert.equal(2 * f.pkts_rev, e2[port].pkts_rev)
      end
    end)

    it("tcp_closed sets how long a closed flow waits; a full pool takes a closed flow's slot", function()
      local pkts = conversation(0, 40000)
      append(pkts, { tcp(5.0, A, B, 40000, 80, "A") })
      local r = run(pkts, { idle_timeout = { tcp_closed = 10 } })
      assert.equal(1, #r.ends)
      assert.equal(6, r.ends[1].pkts_fwd)
      -- pool of 1: the next flow takes the closed one's slot at once
      r = run(append(conversation(0, 40000), { udp(0.8, A, B, 1, 2) }), { pool_flows = 1 })
      assert.equal(0, r.stats.flows_refused)
      assert.equal(2, #r.ends)
      assert.equal("fin", r.ends[1].reason)
      near_sec(0.7, r.ends[1].last)
    end)

    it("ends a flow with 'rst' on a reset from either side", function()
      local r = run {
        tcp(0, A, B, 1001, 80, "S"),
        tcp(0.1, B, A, 80, 1001, "RA"),
        tcp(1, A, B, 1002, 80, "S"),
        tcp(1.1, B, A, 80, 1002, "SA"),
        tcp(1.2, A, B, 1002, 80, "A"),
        tcp(1.3, A, B, 1002, 80, "R"),
        tcp(2, A, B, 1003, 80, "S"), -- stays open
      }
      local e = by(r.ends)
      assert.equal("rst", e[1001].reason)
      assert.equal("reset", e[1001].state)
      assert.equal("rst", e[1002].reason)
      assert.equal("reset", e[1002].state)
      assert.equal("eof", e[1003].reason)
      assert.equal("syn_sent", e[1003].state)
      assert.same({ rst = 2, eof = 1 }, r.stats.ended_by)
    end)

    it("ends a flow with 'idle' and one with 'active'", function()
      local pkts = {}
      for i = 0, 5 do pkts[#pkts + 1] = udp(i * 20, A, B, 7000, 7001) end -- never idle
      pkts[#pkts + 1] = udp(1, A, C, 8000, 8001)                         -- idles out
      table.sort(pkts, function(x, y) return x.ts < y.ts end)
      local r = run(pkts, { idle_timeout = { udp = 30 }, active_timeout = 90 })
      local e = {}
      for _, f in ipairs(r.ends) do e[#e + 1] = f.sport .. ":" .. f.reason end
      table.sort(e)
      assert.same({ "7000:active", "7000:eof", "8000:idle" }, e)
    end)

    it("ends every flow still open at the end of the input with 'eof'", function()
      local r = run {
        udp(0, A, B, 1, 2), tcp(0.5, A, B, 3, 4, "S"),
        at(1, { proto = "icmp", src = A, dst = B, id = 9 }),
      }
      assert.equal(3, #r.ends)
      for _, f in ipairs(r.ends) do assert.equal("eof", f.reason) end
      assert.equal(0, r.stats.flows_active)
    end)

    it("ends each flow exactly once and reports every start", function()
      local pkts = {}
      -- 30 flows of mixed fates: FIN, RST, idle, active, eof
      for i = 0, 5 do append(pkts, conversation(i, 20000 + i)) end
      for i = 0, 5 do
        append(pkts, { tcp(i + 0.05, A, C, 21000 + i, 443, "S"), tcp(i + 0.06, C, A, 443, 21000 + i, "RA") })
      end
      for i = 0, 5 do pkts[#pkts + 1] = udp(i + 0.01, A, B, 22000 + i, 53) end
      for i = 0, 11 do pkts[#pkts + 1] = udp(i * 10, B, C, 23000, 23001) end
      for i = 0, 5 do pkts[#pkts + 1] = udp(100 + i, C, A, 24000 + i, 53) end
      table.sort(pkts, function(x, y) return x.ts < y.ts end)
      local r = run(pkts, { idle_timeout = { udp = 20 }, active_timeout = 50 })
      assert.is_true(r.ok, r.err)
      local seen_end, seen_start = {}, {}
      for _, f in ipairs(r.ends) do
        assert.is_nil(seen_end[f.id], "flow " .. f.id .. " ended twice")
        seen_end[f.id] = f.reason
      end
      for _, f in ipairs(r.starts) do
        assert.is_nil(seen_start[f.id], "flow " .. f.id .. " started twice")
        seen_start[f.id] = true
      end
      for id in pairs(seen_start) do assert.is_not_nil(seen_end[id], "flow " .. id .. " never ended") end
      for id in pairs(seen_end) do assert.is_true(seen_start[id], "flow " .. id .. " never started") end
      assert.equal(#r.starts, #r.ends)
      assert.equal(r.stats.flows_started, #r.starts)
      assert.equal(r.stats.flows_ended, #r.ends)
      -- 6 fin, 6 rst, 6 idle (22000..), 23000 split twice (active) then eof, 6 eof (24000..)
      assert.same({ fin = 6, rst = 6, idle = 6, active = 2, eof = 7 }, r.stats.ended_by)
      local total = 0
      for _, f in ipairs(r.ends) do total = total + f.pkts_fwd + f.pkts_rev end
      assert.equal(#pkts, total)
    end)
  end)

  describe("timeouts", function()
    it("continues a UDP flow 9.999 s after its last packet and restarts it at exactly 10 s", function()
      local r = run({
        udp(0, A, B, 5000, 53),
        udp(9.999, B, A, 53, 5000),     -- continues
        udp(9.999 + 10, A, B, 5000, 53) -- exactly 10 s after the last: new flow
      }, { idle_timeout = { udp = 10 } })
      assert.equal(2, #r.ends)
      assert.equal("idle", r.ends[1].reason)
      assert.equal(1, r.ends[1].pkts_fwd)
      assert.equal(1, r.ends[1].pkts_rev)
      near_sec(9.999, r.ends[1].last)
      assert.equal("eof", r.ends[2].reason)
      assert.equal(1, r.ends[2].pkts_fwd)
      assert.equal(0, r.ends[2].pkts_rev)
      near_sec(19.999, r.ends[2].first)
      assert.are_not.equal(r.ends[1].id, r.ends[2].id)
      -- the idle end is reported before the new flow starts
      assert.same({ "start 1", "end 1", "start 2", "end 2" }, r.order)
    end)

    it("measures idle time from the last packet of either direction", function()
      local r = run({
        udp(0, A, B, 5000, 53),
        udp(6, B, A, 53, 5000),
        udp(12, A, B, 5000, 53),
        udp(18, B, A, 53, 5000),
      }, { idle_timeout = { udp = 7 } })
      assert.equal(1, #r.ends)
      assert.equal(2, r.ends[1].pkts_fwd)
      assert.equal(2, r.ends[1].pkts_rev)
    end)

    local classes = {
      { name = "tcp", timeout = 5, mk = function(t) return tcp(t, A, B, 1111, 2222, "A", 10) end },
      { name = "udp", timeout = 7, mk = function(t) return udp(t, A, B, 1111, 2222) end },
      { name = "icmp", timeout = 9, mk = function(t)
          return at(t, { proto = "icmp", src = A, dst = B, type = 8, id = 77 }) end },
      { name = "icmp (v6)", class = "icmp", timeout = 9, mk = function(t)
          return at(t, { proto = "icmp6", src = "2001:db8::1", dst = "2001:db8::2", type = 128, id = 77 }) end },
      { name = "other", timeout = 11, mk = function(t)
          return at(t, { proto = 47, src = A, dst = B, len = 24 }) end },
    }
    for _, c in ipairs(classes) do
      it("applies idle_timeout." .. (c.class or c.name) .. " to " .. c.name .. " flows only", function()
        local T = c.timeout
        local idle = { tcp = 100, udp = 100, icmp = 100, other = 100 }
        idle[c.class or c.name] = T
        local r = run({
          c.mk(0),
          c.mk(T - 0.001), -- continues
          c.mk(2 * T - 0.001), -- exactly T after the last: a new flow
        }, { idle_timeout = idle })
        assert.equal(2, #r.ends)
        assert.equal("idle", r.ends[1].reason)
        assert.equal(2, r.ends[1].pkts_fwd)
        assert.equal("eof", r.ends[2].reason)
        assert.equal(1, r.ends[2].pkts_fwd)

        -- the same gaps under the other classes' (long) timeouts: one flow
        idle[c.class or c.name] = 100
        local r2 = run({ c.mk(0), c.mk(T - 0.001), c.mk(2 * T - 0.001) }, { idle_timeout = idle })
        assert.equal(1, #r2.ends)
        assert.equal(3, r2.ends[1].pkts_fwd)
      end)
    end

    it("keeps per-class timeouts independent within one capture", function()
      local r = run({
        tcp(0, A, B, 1000, 80, "A", 10),
        udp(0.5, A, B, 2000, 53),
        tcp(7, A, B, 1000, 80, "A", 10),  -- gap 7 > tcp 5: new flow
        udp(7.5, A, B, 2000, 53),         -- gap 7 < udp 10: same flow
      }, { idle_timeout = { tcp = 5, udp = 10 } })
      local tcp_flows, udp_flows = 0, 0
      for _, f in ipairs(r.ends) do
        if f.proto == "tcp" then tcp_flows = tcp_flows + 1 else udp_flows = udp_flows + 1 end
      end
      assert.equal(2, tcp_flows)
      assert.equal(1, udp_flows)
    end)

    it("converts fractional timeouts to whole nanoseconds without losing one", function()
      -- 1.025 * 1e9 is 1024999999.9999999 in floating point
      for _, v in ipairs { "1025ms", "1.025s", 1.025 } do
        local r = run({
          udp(0, A, B, 5000, 53),
          udp(1.024999999, A, B, 5000, 53), -- 1 ns before the timeout: same flow
          udp(2.049999999, A, B, 5000, 53), -- exactly 1.025 s after the last: new flow
        }, { idle_timeout = { udp = v } })
        assert.equal(2, #r.ends, "idle_timeout.udp = " .. tostring(v))
        assert.equal(2, r.ends[1].pkts_fwd, "idle_timeout.udp = " .. tostring(v))
      end
      local r = run({
        udp(0, A, B, 5000, 53),
        udp(1.024999999, A, B, 5000, 53), -- 1 ns before the active timeout
        udp(1.025, A, B, 5000, 53),       -- at it: a new flow
      }, { active_timeout = "1025ms" })
      assert.equal(2, #r.ends)
      assert.equal(2, r.ends[1].pkts_fwd)
      assert.equal("active", r.ends[1].reason)
    end)

    it("uses the default idle timeouts (udp 60 s) when none are given", function()
      local r = run {
        udp(0, A, B, 1, 2), udp(59.9, A, B, 1, 2), udp(119.9, A, B, 1, 2),
      }
      assert.equal(2, #r.ends)
      assert.equal(2, r.ends[1].pkts_fwd)
      assert.equal("idle", r.ends[1].reason)
    end)

    it("splits a long flow at the active timeout into flows whose packets sum to the input", function()
      local pkts = {}
      for i = 0, 99 do
        if i % 2 == 0 then
          pkts[#pkts + 1] = udp(i, A, B, 3000, 4000, 10)
        else
          pkts[#pkts + 1] = udp(i, B, A, 4000, 3000, 20)
        end
      end
      local r = run(pkts, { active_timeout = 30 })
      assert.equal(4, #r.ends)
      local counts, reasons, pkts_sum, bytes_sum = {}, {}, 0, 0
      local ids = {}
      for i, f in ipairs(r.ends) do
        counts[i] = f.pkts_fwd + f.pkts_rev
        reasons[i] = f.reason
        pkts_sum = pkts_sum + counts[i]
        bytes_sum = bytes_sum + f.bytes_fwd + f.bytes_rev
        ids[f.id] = true
        assert.equal(A, f.src) -- each piece starts with an A -> B packet
        assert.equal(3000, f.sport)
      end
      assert.same({ 30, 30, 30, 10 }, counts)
      assert.same({ "active", "active", "active", "eof" }, reasons)
      assert.equal(100, pkts_sum)
      assert.equal(r.stats.bytes, bytes_sum)
      near_sec(30, r.ends[2].first)
      near_sec(59, r.ends[2].last)
    end)
  end)

  describe("flow accounting", function()
    it("takes the first packet's sender as the initiator, whichever address is lower", function()
      -- canonical order puts 10.0.0.1 first; here 10.0.0.9 starts
      local r = run {
        udp(0, "10.0.0.9", A, 5353, 53, 20),
        udp(0.1, A, "10.0.0.9", 53, 5353, 100),
        udp(0.2, A, "10.0.0.9", 53, 5353, 100),
        udp(1, A, "10.0.0.9", 9, 9999, 5), -- A starts this one
        udp(1.1, "10.0.0.9", A, 9999, 9, 5),
      }
      local e = by(r.ends)
      local f = e[5353]
      assert.equal("10.0.0.9", f.src)
      assert.equal(A, f.dst)
      assert.equal(53, f.dport)
      assert.equal(1, f.pkts_fwd)
      assert.equal(2, f.pkts_rev)
      assert.equal(14 + 20 + 8 + 20, f.bytes_fwd)
      assert.equal(2 * (14 + 20 + 8 + 100), f.bytes_rev)
      local g = e[9]
      assert.equal(A, g.src)
      assert.equal("10.0.0.9", g.dst)
      assert.equal(9999, g.dport)
      assert.equal(1, g.pkts_fwd)
      assert.equal(1, g.pkts_rev)
    end)

    it("counts bytes as the frame length on the wire (pcap orig_len), not the captured length", function()
      local r = run {
        udp(0, A, B, 1, 2, 1400, { caplen = 64, orig_len = 1500 }),
        udp(0.1, B, A, 2, 1, 1000, { caplen = 42, orig_len = 1100 }),
        udp(0.2, A, B, 1, 2, 10),
      }
      assert.equal(1, #r.ends)
      local f = r.ends[1]
      assert.equal(1500 + 52, f.bytes_fwd)
      assert.equal(1100, f.bytes_rev)
      assert.equal(1500 + 1100 + 52, r.stats.bytes)
    end)

    it("keeps the union of TCP flags per direction", function()
      local r = run(conversation(0, 33000))
      local f = r.ends[1]
      -- fwd: S, A, PA, FA, A; rev: SA, PA, FA
      assert.equal(0x02 + 0x10 + 0x08 + 0x01, f.tcp_flags_fwd)
      assert.equal(0x02 + 0x10 + 0x08 + 0x01, f.tcp_flags_rev)
      local r2 = run { tcp(0, A, B, 1, 2, "S"), tcp(0.1, B, A, 2, 1, "RA") }
      assert.equal(0x02, r2.ends[1].tcp_flags_fwd)
      assert.equal(0x14, r2.ends[1].tcp_flags_rev)
    end)

    it("writes a Zeek-style history, each letter once per direction", function()
      local r = run(conversation(0, 33000))
      assert.equal("ShADdFf", r.ends[1].history)

      local pkts = {
        tcp(0, A, B, 2000, 80, "S"),
        tcp(0.1, A, B, 2000, 80, "S"), -- retransmitted SYN: no second S
        tcp(0.2, B, A, 80, 2000, "SA"),
        tcp(0.3, A, B, 2000, 80, "A"),
        tcp(0.4, B, A, 80, 2000, "A"),
        tcp(0.5, A, B, 2000, 80, "PA", 10),
        tcp(0.6, A, B, 2000, 80, "PA", 10),
        tcp(0.7, B, A, 80, 2000, "PA", 10),
        tcp(0.8, A, B, 2000, 80, "A"),
        tcp(0.9, B, A, 80, 2000, "R"),
      }
      local r2 = run(pkts)
      assert.equal("ShAaDdr", r2.ends[1].history)
      assert.equal("rst", r2.ends[1].reason)
    end)

    it("reports the TCP state a flow reached", function()
      local r = run {
        tcp(0, A, B, 1, 80, "S"),
        tcp(1, A, B, 2, 80, "S"), tcp(1.1, B, A, 80, 2, "SA"),
        tcp(2, A, B, 3, 80, "S"), tcp(2.1, B, A, 80, 3, "SA"), tcp(2.2, A, B, 3, 80, "A"),
        tcp(3, A, B, 4, 80, "PA", 50), -- joined mid-stream
        udp(4, A, B, 5, 80),
      }
      local e = by(r.ends)
      assert.equal("syn_sent", e[1].state)
      assert.equal("syn_received", e[2].state)
      assert.equal("established", e[3].state)
      assert.equal("midstream", e[4].state)
      assert.equal("D", e[4].history)
      assert.equal("none", e[5].state)
      assert.equal("", e[5].history)
    end)

    it("refuses packets of new flows when the pool is full and reuses freed slots", function()
      local pkts = conversation(0, 100)   -- 0 .. 0.7, ends with FIN
      append(pkts, {
        udp(0.05, A, B, 1, 2),
        udp(0.15, A, B, 3, 4),             -- pool of 2 is full: refused
        udp(0.16, B, A, 4, 3),             -- refused too
        udp(1.0, A, B, 3, 4),              -- the FIN freed a slot
      })
      table.sort(pkts, function(x, y) return x.ts < y.ts end)
      local r = run(pkts, { pool_flows = 2 })
      assert.is_true(r.ok, r.err)
      assert.equal(2, r.stats.flows_refused)
      assert.equal(3, #r.ends)
      local e = by(r.ends)
      assert.equal("fin", e[100].reason)
      assert.equal(1, e[3].pkts_fwd)
      assert.equal(0, e[3].pkts_rev)
      near_sec(1.0, e[3].first)
    end)

    it("delivers the first packet's counts with on_flow_start", function()
      local r = run { udp(0, A, B, 1, 2, 10), udp(1, B, A, 2, 1, 10) }
      assert.equal(1, #r.starts)
      assert.equal(1, r.starts[1].pkts_fwd)
      assert.equal(0, r.starts[1].pkts_rev)
      assert.equal(52, r.starts[1].bytes_fwd)
      assert.is_nil(r.starts[1].end_reason)
    end)
  end)

  describe("slices", function()
    -- flow 1 (TCP, A:6000): packets in [0,10), [10,20), none in [20,30),
    -- then closed by FIN at 36.5 in [30,40).
    -- flow 2 (UDP, A:7000 <-> B:7001): a packet every 3 s from 0 to 57,
    -- alternating direction.
    -- flow 3 (UDP, C:9000): every 2 s from 25 to 59.
    -- flow 4 (UDP, B:8000): 41 and 42, idles out (udp 5) at 47 in [40,50).
    local function slice_packets()
      local p = {
        tcp(1, A, B, 6000, 80, "S"),
        tcp(2, B, A, 80, 6000, "SA"),
        tcp(2.5, A, B, 6000, 80, "A"),
        tcp(15, A, B, 6000, 80, "PA", 100),
        tcp(35, B, A, 80, 6000, "PA", 300),
        tcp(36, A, B, 6000, 80, "FA"),
        tcp(36.2, B, A, 80, 6000, "FA"),
        tcp(36.5, A, B, 6000, 80, "A"),
        udp(41, B, C, 8000, 8001, 1),
        udp(42, C, B, 8001, 8000, 2),
      }
      for i = 0, 19 do
        local t = i * 3
        if i % 2 == 0 then
          p[#p + 1] = udp(t, A, B, 7000, 7001, 10 + i)
        else
          p[#p + 1] = udp(t, B, A, 7001, 7000, 10 + i)
        end
      end
      for t = 25, 59, 2 do p[#p + 1] = udp(t, C, A, 9000, 9001, 40) end
      table.sort(p, function(x, y) return x.ts < y.ts end)
      return p
    end

    local r
    setup(function()
      r = run(slice_packets(), { slice = 10, idle_timeout = { udp = 5 } })
    end)

    local function recs_of(id)
      local out = {}
      for _, s in ipairs(r.slices) do
        if s.flow_id == id then out[#out + 1] = s end
      end
      return out
    end

    local function rel(sec) -- seconds since BASE, rounded to the ms
      return math.floor((sec - pcap.BASE_SEC) * 1000 + 0.5) / 1000
    end

    it("runs without error and produces records", function()
      assert.is_true(r.ok, r.err)
      assert.equal(4, #r.ends)
      assert.is_true(#r.slices > 0)
      assert.equal(r.stats.slice_records, #r.slices)
      assert.equal(r.stats.slices_closed, #r.batches)
    end)

    it("adds every flow's slice deltas up to its totals exactly", function()
      for _, f in ipairs(r.ends) do
        local sum = { pkts_fwd = 0, pkts_rev = 0, bytes_fwd = 0, bytes_rev = 0 }
        for _, s in ipairs(recs_of(f.id)) do
          for k in pairs(sum) do sum[k] = sum[k] + s[k] end
        end
        assert.same({ pkts_fwd = f.pkts_fwd, pkts_rev = f.pkts_rev, bytes_fwd = f.bytes_fwd,
          bytes_rev = f.bytes_rev }, sum, "flow " .. f.id)
      end
    end)

    it("keeps the running totals in each record", function()
      for _, f in ipairs(r.ends) do
        local run_tot = { pkts_fwd = 0, pkts_rev = 0, bytes_fwd = 0, bytes_rev = 0 }
        for _, s in ipairs(recs_of(f.id)) do
          for k in pairs(run_tot) do run_tot[k] = run_tot[k] + s[k] end
          assert.equal(run_tot.pkts_fwd, s.total_pkts_fwd)
          assert.equal(run_tot.pkts_rev, s.total_pkts_rev)
          assert.equal(run_tot.bytes_fwd, s.total_bytes_fwd)
          assert.equal(run_tot.bytes_rev, s.total_bytes_rev)
        end
      end
    end)

    it("bounds intervals at multiples of the slice length", function()
      assert.equal(0, pcap.BASE_SEC % 10)
      for _, s in ipairs(r.slices) do
        local st, en = rel(s.start), rel(s["end"])
        assert.equal(0, st % 10, "start " .. st)
        assert.equal(st + 10, en)
        assert.is_true(math.abs(s.start - math.floor(s.start + 0.5)) < 1e-6)
      end
      for i, b in ipairs(r.batches) do
        assert.equal(0, rel(b.start) % 10)
        assert.equal(rel(b.start) + 10, rel(b["end"]))
        if i > 1 then assert.is_true(b.start > r.batches[i - 1].start) end
        for _, s in ipairs(b.recs) do
          assert.equal(b.start, s.start)
          assert.equal(b["end"], s["end"])
        end
      end
    end)

    it("puts a packet at an interval's end into the next interval", function()
      local f2 -- the UDP flow 7000
      for _, f in ipairs(r.ends) do if f.sport == 7000 then f2 = f end end
      local counts, starts = {}, {}
      for _, s in ipairs(recs_of(f2.id)) do
        counts[#counts + 1] = s.pkts_fwd + s.pkts_rev
        starts[#starts + 1] = rel(s.start)
      end
      assert.same({ 0, 10, 20, 30, 40, 50 }, starts)
      -- 0,3,6,9 | 12,15,18 | 21,24,27 | 30,33,36,39 | 42,45,48 | 51,54,57
      assert.same({ 4, 3, 3, 4, 3, 3 }, counts)
    end)

    it("writes no record for a flow without packets in an interval", function()
      local f1
      for _, f in ipairs(r.ends) do if f.sport == 6000 then f1 = f end end
      local starts = {}
      for _, s in ipairs(recs_of(f1.id)) do
        starts[#starts + 1] = rel(s.start)
        assert.is_true(s.pkts_fwd + s.pkts_rev > 0)
      end
      assert.same({ 0, 10, 30 }, starts)
      for _, s in ipairs(r.slices) do assert.is_true(s.pkts_fwd + s.pkts_rev > 0) end
    end)

    it("puts the end reason in the last record of a flow ending mid-interval", function()
      local want = { [6000] = "fin", [7000] = "eof", [9000] = "eof", [8000] = "idle" }
      for _, f in ipairs(r.ends) do
        local recs = recs_of(f.id)
        assert.equal(want[f.sport], f.reason)
        assert.equal(want[f.sport], recs[#recs].end_reason, "flow " .. f.sport)
        for i = 1, #recs - 1 do assert.is_nil(recs[i].end_reason) end
      end
      local f1 = recs_of(r.ends[1].id)
      assert.equal(30, rel(f1[#f1].start)) -- the FIN interval [30,40)
      assert.equal(2, f1[#f1].pkts_fwd)
      assert.equal(2, f1[#f1].pkts_rev)
    end)

    it("gives each flow at most one record per interval", function()
      local seen = {}
      for _, s in ipairs(r.slices) do
        local k = s.flow_id .. "@" .. rel(s.start)
        assert.is_nil(seen[k], k)
        seen[k] = true
      end
    end)

    it("keeps the initiator as src in slice records", function()
      for _, f in ipairs(r.ends) do
        for _, s in ipairs(recs_of(f.id)) do
          assert.equal(f.src, s.src)
          assert.equal(f.sport, s.sport)
          assert.equal(f.dst, s.dst)
          assert.equal(f.dport, s.dport)
        end
      end
    end)

    it("handles thousands of flows ending and slicing in one step", function()
      local pkts = {}
      for i = 1, 3000 do
        local hi, lo = math.floor(i / 250), i % 250
        pkts[i] = udp(1 + i * 1e-4, "10.9." .. hi .. "." .. lo, B, 1024 + i, 53, i % 50)
      end
      local r2 = run(pkts, { slice = 10 })
      assert.is_true(r2.ok, r2.err)
      assert.equal(3000, #r2.ends)
      assert.equal(1, #r2.batches)
      assert.equal(3000, #r2.batches[1].recs)
      local bytes, ids = 0, {}
      for _, s in ipairs(r2.slices) do
        assert.equal("eof", s.end_reason)
        assert.equal(1, s.pkts_fwd)
        bytes = bytes + s.bytes_fwd
        ids[s.flow_id] = true
      end
      assert.equal(r2.stats.bytes, bytes)
      for _, f in ipairs(r2.ends) do assert.is_true(ids[f.id]) end
    end)

    it("produces no slices without the slice option", function()
      local r2 = run(slice_packets(), { idle_timeout = { udp = 5 } })
      assert.equal(0, #r2.batches)
      assert.equal(0, r2.stats.slice_records)
    end)

    it("accepts a slice length as a string with a unit", function()
      local r2 = run(slice_packets(), { slice = "30s", idle_timeout = { udp = 5 } })
      assert.is_true(r2.ok, r2.err)
      -- bounds are multiples of 30 s since the epoch: BASE is 20 s past one
      for _, s in ipairs(r2.slices) do
        assert.equal(0, math.floor(s.start + 0.5) % 30)
        assert.equal(30, math.floor(s["end"] + 0.5) - math.floor(s.start + 0.5))
      end
      assert.equal(3, #r2.batches) -- [-20,10), [10,40), [40,70)
      assert.equal(-20, rel(r2.batches[1].start))
    end)
  end)

  describe("against a model", function()
    -- Random traffic over 30 tuples (UDP, ICMP echo, TCP data without
    -- FIN/RST) with gaps that often hit a timeout exactly; the flows and
    -- slice records must match a plain model of the documented rules:
    -- a flow expires when the clock reaches last + idle timeout or start +
    -- active timeout (the earlier; idle on a tie), slices are [k*S, (k+1)*S)
    -- with one record per flow with packets, carrying the end reason when
    -- the flow ended inside that interval.
    local IDLE = { udp = 3000, icmp = 2000, tcp = 5000 } -- ms
    local ACTIVE, SLICE = 7000, 2000                      -- ms

    local function generate(seed, n)
      math.randomseed(seed)
      local tuples = {}
      for i = 1, 30 do
        local kind = ({ "udp", "icmp", "tcp" })[i % 3 + 1]
        tuples[i] = { kind = kind, a = "10.1.0." .. i, b = "10.2.0." .. (i % 7 + 1),
          pa = 10000 + i, pb = kind == "icmp" and 10000 + i or 80 + i % 3 }
      end
      local gaps = { 0, 1, 10, 250, 999, 1000, 2000, 2000, 3000, 3000, 5000, 7000 }
      local pkts, t = {}, 0
      for _ = 1, n do
        if math.random() < 0.3 then t = t + gaps[math.random(#gaps)] end
        local tu = tuples[math.random(#tuples)]
        local fwd = math.random() < 0.6
        local src, dst, sp, dp = tu.a, tu.b, tu.pa, tu.pb
        if not fwd then src, dst, sp, dp = dst, src, dp, sp end
        local len = math.random(0, 60)
        local o = { proto = tu.kind, src = src, dst = dst, sport = sp, dport = dp, len = len }
        if tu.kind == "icmp" then o.type, o.id = fwd and 8 or 0, tu.pa end
        if tu.kind == "tcp" then o.flags, o.len = "PA", len + 1 end
        local frame = pcap.pkt(o)
        pkts[#pkts + 1] = { ts = pcap.BASE_NS + t * 1000000, frame = frame, ms = t,
          key = tu.kind .. (tu.a < tu.b and tu.a .. tu.b or tu.b .. tu.a) .. tu.pa,
          src = src, sport = sp, class = tu.kind, len = #frame }
      end
      return pkts
    end

    local function model(pkts)
      local live, flows, next_id = {}, {}, 0
      local function finish(f, reason, at_ms)
        f.reason = reason
        local last_i = math.floor(f.last / SLICE)
        if math.floor(at_ms / SLICE) == last_i then f.slices[last_i].reason = reason end
        live[f.key] = nil
      end
      local function expire(now)
        for _, f in pairs(live) do
          local di, da = f.last + IDLE[f.class], f.start + ACTIVE
          local d = math.min(di, da)
          if d <= now then finish(f, da < di and "active" or "idle", d) end
        end
      end
      for _, p in ipairs(pkts) do
        expire(p.ms)
        local f = live[p.key]
        if not f then
          next_id = next_id + 1
          f = { id = next_id, key = p.key, class = p.class, src = p.src, sport = p.sport,
            start = p.ms, last = p.ms, pf = 0, pr = 0, bf = 0, br = 0, slices = {} }
          live[p.key] = f
          flows[next_id] = f
        end
        local fwd = p.src == f.src and p.sport == f.sport
        local i = math.floor(p.ms / SLICE)
        local s = f.slices[i]
        if not s then
          s = { pf = 0, pr = 0, bf = 0, br = 0 }
          f.slices[i] = s
        end
        if fwd then
          f.pf, f.bf, s.pf, s.bf = f.pf + 1, f.bf + p.len, s.pf + 1, s.bf + p.len
        else
          f.pr, f.br, s.pr, s.br = f.pr + 1, f.br + p.len, s.pr + 1, s.br + p.len
        end
        f.last = p.ms
      end
      local now = pkts[#pkts].ms
      for _, f in pairs(live) do finish(f, "eof", now) end
      return flows
    end

    for _, seed in ipairs { 1, 2, 3 } do
      it("matches on random traffic (seed " .. seed .. ")", function()
        local pkts = generate(seed, 1500)
        local want = model(pkts)
        local r = run(pkts, { idle_timeout = { udp = IDLE.udp / 1000, icmp = IDLE.icmp / 1000,
          tcp = IDLE.tcp / 1000 }, active_timeout = ACTIVE / 1000, slice = SLICE / 1000 })
        assert.is_true(r.ok, r.err)
        assert.equal(#want, #r.ends)
        local got = {}
        for _, f in ipairs(r.ends) do got[f.id] = f end
        for id, w in ipairs(want) do
          local f = got[id]
          assert.is_table(f, "flow " .. id .. " missing")
          local desc = "flow " .. id
          assert.equal(w.src, f.src, desc)
          assert.equal(w.sport, f.sport, desc)
          assert.same({ w.pf, w.pr, w.bf, w.br, w.reason },
            { f.pkts_fwd, f.pkts_rev, f.bytes_fwd, f.bytes_rev, f.reason }, desc)
        end
        local want_recs, got_recs = {}, {}
        for id, w in ipairs(want) do
          for i, s in pairs(w.slices) do
            want_recs[#want_recs + 1] = string.format("%d@%d %d/%d %d/%d %s", id, i * SLICE / 1000,
              s.pf, s.pr, s.bf, s.br, s.reason or "-")
          end
        end
        for _, s in ipairs(r.slices) do
          got_recs[#got_recs + 1] = string.format("%d@%d %d/%d %d/%d %s", s.flow_id,
            math.floor(s.start - pcap.BASE_SEC + 0.5), s.pkts_fwd, s.pkts_rev, s.bytes_fwd,
            s.bytes_rev, s.end_reason or "-")
        end
        table.sort(want_recs)
        table.sort(got_recs)
        assert.same(want_recs, got_recs)
      end)
    end
  end)

  describe("decoding", function()
    it("keys flows on the 802.1Q and QinQ tags", function()
      local function v(t, vlans, from_a)
        if from_a then return udp(t, A, B, 1000, 2000, 10, { vlans = vlans }) end
        return udp(t, B, A, 2000, 1000, 10, { vlans = vlans })
      end
      local r = run {
        v(0, nil, true), v(0.1, { 10 }, true), v(0.2, { 20 }, true),
        v(0.3, { 100, 200 }, true), v(0.4, { 100, 300 }, true),
        v(1, nil, false), v(1.1, { 10 }, false), v(1.2, { 20 }, false),
        v(1.3, { 100, 200 }, false), v(1.4, { 100, 300 }, false),
      }
      assert.equal(5, #r.ends)
      local keys = {}
      for _, f in ipairs(r.ends) do
        keys[#keys + 1] = f.vlan .. "/" .. tostring(f.vlan_inner or 0)
        assert.equal(1, f.pkts_fwd)
        assert.equal(1, f.pkts_rev)
        assert.equal(A, f.src)
      end
      table.sort(keys)
      assert.same({ "0/0", "10/0", "100/200", "100/300", "20/0" }, keys)
      assert.equal(0, r.stats.malformed)
    end)

    it("decodes QinQ with a 0x9100 outer tag and two 0x8100 tags", function()
      local ip = pcap.ipv4 { src = A, dst = B, proto = 17, payload = pcap.udp { sport = 1, dport = 2 } }
      local r = run {
        raw_at(0, pcap.ether { payload = ip, vlans = { 7, 8 }, tpid_outer = 0x9100 }),
        raw_at(1, pcap.ether { payload = ip, vlans = { 7, 9 }, tpid_outer = 0x8100 }),
      }
      assert.equal(2, #r.ends)
      local e = by(r.ends, "vlan_inner")
      assert.equal(7, e[8].vlan)
      assert.equal(7, e[9].vlan)
    end)

    it("decodes IPv6 with extension headers", function()
      local r = run {
        udp(0, "2001:db8::1", "2001:db8::2", 4000, 53, 20,
          { ip = { ext = { { type = 0 }, { type = 43, len = 24 }, { type = 60, len = 16 } } } }),
        udp(0.1, "2001:db8::2", "2001:db8::1", 53, 4000, 20, { ip = { ext = { { type = 60 } } } }),
        tcp(0.2, "2001:db8::1", "2001:db8::2", 4001, 443, "S", 0,
          { ip = { ext = { { type = 0 }, { type = 51, len = 16 } } } }),
      }
      assert.equal(0, r.stats.malformed)
      local e = by(r.ends)
      assert.equal("udp", e[4000].proto)
      assert.equal(6, e[4000].ip_version)
      assert.equal(53, e[4000].dport)
      assert.equal(1, e[4000].pkts_fwd)
      assert.equal(1, e[4000].pkts_rev)
      assert.equal("tcp", e[4001].proto)
      assert.equal(443, e[4001].dport)
      assert.equal("S", e[4001].history)
    end)

    it("attributes later IPv4 fragments to the first fragment's flow", function()
      local udp_hdr = pcap.udp { sport = 4000, dport = 5000, len = 300, length = 308 }
      local first = udp_hdr:sub(1, 8 + 112)   -- 120 bytes: header + 112
      local second = udp_hdr:sub(121, 240)    -- offset 120
      local third = udp_hdr:sub(241)          -- offset 240, last
      local function frag(t, data, off, mf, id, src, dst)
        return raw_at(t, pcap.ether { payload = pcap.ipv4 { src = src or A, dst = dst or B,
          proto = 17, id = id, mf = mf, frag_offset = off, payload = data } })
      end
      local r = run {
        frag(0, first, 0, true, 77),
        frag(0.001, second, 120, true, 77),
        frag(0.002, third, 240, false, 77),
        udp(0.1, B, A, 5000, 4000, 10),                  -- the reply: same flow
        frag(0.2, third, 240, false, 78, A, C),          -- no first fragment
      }
      assert.equal(0, r.stats.malformed)
      assert.equal(1, r.stats.frag_unmatched)
      local main
      for _, f in ipairs(r.ends) do if f.sport == 4000 then main = f end end
      assert.is_not_nil(main)
      assert.equal(3, main.pkts_fwd)
      assert.equal(1, main.pkts_rev)
      assert.equal(5000, main.dport)
      assert.equal(2, #r.ends)
    end)

    it("attributes later IPv6 fragments to the first fragment's flow", function()
      local udp_hdr = pcap.udp { sport = 4100, dport = 5100, len = 100 }
      local function frag(t, data, off, more)
        return raw_at(t, pcap.ether { payload = pcap.ipv6 { src = "2001:db8::a", dst = "2001:db8::b",
          nh = 17, ext = { { type = 44, offset = off, more = more, id = 0x12345678 } }, payload = data } })
      end
      local r = run {
        frag(0, udp_hdr:sub(1, 64), 0, true),
        frag(0.001, udp_hdr:sub(65), 64, false),
      }
      assert.equal(0, r.stats.malformed)
      assert.equal(0, r.stats.frag_unmatched)
      assert.equal(1, #r.ends)
      assert.equal(2, r.ends[1].pkts_fwd)
      assert.equal(4100, r.ends[1].sport)
      assert.equal(5100, r.ends[1].dport)
    end)

    it("puts an ICMP echo request and its reply in one flow, keyed by the echo id", function()
      local r = run {
        at(0, { proto = "icmp", src = A, dst = B, type = 8, id = 42, len = 56 }),
        at(0.01, { proto = "icmp", src = B, dst = A, type = 0, id = 42, len = 56 }),
        at(1, { proto = "icmp", src = A, dst = B, type = 8, id = 43, len = 56 }),
        at(2, { proto = "icmp6", src = "2001:db8::1", dst = "2001:db8::2", type = 128, id = 7 }),
        at(2.01, { proto = "icmp6", src = "2001:db8::2", dst = "2001:db8::1", type = 129, id = 7 }),
      }
      assert.equal(3, #r.ends)
      local e = by(r.ends)
      assert.equal("icmp", e[42].proto)
      assert.equal(42, e[42].dport)
      assert.equal(1, e[42].pkts_fwd)
      assert.equal(1, e[42].pkts_rev)
      assert.equal(A, e[42].src)
      assert.equal(1, e[43].pkts_fwd)
      assert.equal(0, e[43].pkts_rev)
      assert.equal("icmp6", e[7].proto)
      assert.equal(1, e[7].pkts_fwd)
      assert.equal(1, e[7].pkts_rev)
    end)

    it("finds the transport header after IPv4 options", function()
      local r = run {
        udp(0, A, B, 6100, 6200, 10, { ip = { options = "\1\1\1\1" } }),         -- IHL 6
        udp(0.1, B, A, 6200, 6100, 10, { ip = { options = string.rep("\1", 40) } }), -- IHL 15
        tcp(0.2, A, B, 6101, 80, "S", 0, { ip = { options = "\148\4\0\0" } }),    -- router alert
      }
      assert.equal(0, r.stats.malformed)
      local e = by(r.ends)
      assert.equal(6200, e[6100].dport)
      assert.equal(1, e[6100].pkts_rev)
      assert.equal(80, e[6101].dport)
      assert.equal("S", e[6101].history)
    end)

    it("does not count Ethernet padding as TCP payload", function()
      local function padded(t, src, dst, sport, dport, flags)
        local ip = pcap.ipv4 { src = src, dst = dst, proto = 6,
          payload = pcap.tcp { sport = sport, dport = dport, flags = flags } }
        return raw_at(t, pcap.ether { payload = ip } .. string.rep("\0", 6)) -- 54 -> 60 bytes
      end
      local r = run {
        padded(0, A, B, 7100, 80, "S"),
        padded(0.1, B, A, 80, 7100, "SA"),
        padded(0.2, A, B, 7100, 80, "A"),
        padded(0.3, B, A, 80, 7100, "A"),
      }
      assert.equal("ShAa", r.ends[1].history)
      assert.equal("established", r.ends[1].state)
      assert.equal(120, r.ends[1].bytes_fwd)
    end)

    it("decodes SCTP ports", function()
      local r = run {
        at(0, { proto = "sctp", src = A, dst = B, sport = 2905, dport = 2906, len = 16 }),
        at(0.1, { proto = "sctp", src = B, dst = A, sport = 2906, dport = 2905, len = 16 }),
      }
      assert.equal(1, #r.ends)
      assert.equal("sctp", r.ends[1].proto)
      assert.equal(2905, r.ends[1].sport)
      assert.equal(2906, r.ends[1].dport)
      assert.equal(1, r.ends[1].pkts_rev)
    end)

    local links = {
      { name = "RAW", lt = 101 },
      { name = "NULL", lt = 0 },
      { name = "LINUX_SLL", lt = 113 },
      { name = "LINUX_SLL2", lt = 276 },
      { name = "EN10MB", lt = 1 },
    }
    for _, l in ipairs(links) do
      it("reads link type " .. l.name .. " (" .. l.lt .. ") for IPv4 and IPv6", function()
        local r = run({
          udp(0, A, B, 1000, 53, 10, { link = l.lt }),
          udp(0.1, B, A, 53, 1000, 30, { link = l.lt }),
          tcp(0.2, "2001:db8::1", "2001:db8::2", 1001, 80, "S", 0, { link = l.lt }),
          tcp(0.3, "2001:db8::2", "2001:db8::1", 80, 1001, "SA", 0, { link = l.lt }),
        }, nil, { linktype = l.lt })
        assert.is_true(r.ok, r.err)
        assert.equal(0, r.stats.malformed)
        assert.equal(0, r.stats.not_ip)
        local e = by(r.ends)
        assert.equal(A, e[1000].src)
        assert.equal(1, e[1000].pkts_fwd)
        assert.equal(1, e[1000].pkts_rev)
        assert.equal("2001:db8::1", e[1001].src)
        assert.equal("2001:db8::2", e[1001].dst)
        assert.equal(6, e[1001].ip_version)
        assert.equal("Sh", e[1001].history)
      end)
    end

    it("reads link types LOOP (108), IPV4 (228) and IPV6 (229)", function()
      local r = run({
        udp(0, A, B, 1000, 53, 10, { link = 108 }),
        udp(0.1, B, A, 53, 1000, 30, { link = 108 }),
        udp(0.2, "2001:db8::1", "2001:db8::2", 1001, 53, 0, { link = 108 }),
      }, nil, { linktype = 108 })
      assert.equal(0, r.stats.malformed)
      assert.equal(2, #r.ends)
      assert.equal(1, by(r.ends)[1000].pkts_rev)
      local r4 = run({ udp(0, A, B, 1, 2, 0, { link = 228 }) }, nil, { linktype = 228 })
      assert.equal(1, #r4.ends)
      assert.equal(4, r4.ends[1].ip_version)
      local r6 = run({ udp(0, "::1", "::2", 1, 2, 0, { link = 229 }),
        udp(1, A, B, 1, 2, 0, { link = 229 }) }, nil, { linktype = 229 })
      assert.equal(1, #r6.ends)
      assert.equal(6, r6.ends[1].ip_version)
      assert.same({ ip_version = 1 }, r6.stats.malformed_by) -- IPv4 on an IPv6 link
    end)

    it("reads the BSD IPv6 address families of link type NULL", function()
      local pkts = {}
      for i, af in ipairs { 10, 24, 28, 30 } do
        pkts[i] = udp(i, "2001:db8::1", "2001:db8::2", 1000 + af, 53, 0, { link = 0, af = af })
      end
      local r = run(pkts, nil, { linktype = 0 })
      assert.equal(4, #r.ends)
      assert.equal(0, r.stats.malformed)
      assert.equal(0, r.stats.not_ip)
    end)
  end)

  describe("malformed input", function()
    local function eth(payload, etype)
      return pcap.ether { payload = payload, type = etype }
    end
    local good_ip4 = function(extra)
      local o = { src = A, dst = C, proto = 17, payload = pcap.udp { sport = 1, dport = 2, len = 8 } }
      for k, v in pairs(extra or {}) do o[k] = v end
      return pcap.ipv4(o)
    end

    it("counts malformed frames by reason, never fails, and keeps other flows intact", function()
      local bad = {
        l2_short = { "", pcap.payload(10) },
        ip_short = { eth(good_ip4():sub(1, 12)) },
        ip_hlen = { eth(good_ip4 { ihl = 4 }) },
        ip_version = { eth(pcap.ipv6 { nh = 17, payload = pcap.udp {} }, 0x0800) },
        ip_len = { eth(good_ip4 { total_len = 12 }) },
        ipv6_ext = { eth(pcap.ipv6 { nh = 17, ext = { { type = 0, len = 24 } } }):sub(1, 14 + 40 + 8) },
        l4_short = { eth(pcap.ipv4 { proto = 17, payload = "\0\1\0\2" }),
          eth(pcap.ipv4 { proto = 6, payload = pcap.tcp {}:sub(1, 12) }) },
        tcp_hlen = { eth(pcap.ipv4 { proto = 6, payload = pcap.tcp { data_offset = 3 } }),
          eth(pcap.ipv4 { proto = 6, payload = pcap.tcp { data_offset = 15 } }) },
      }
      local pkts, t, n_bad = {}, 0, 0
      local names = {}
      for name in pairs(bad) do names[#names + 1] = name end
      table.sort(names)
      local want = {}
      for _, name in ipairs(names) do
        for _, frame in ipairs(bad[name]) do
          pkts[#pkts + 1] = udp(t, A, B, 1111, 2222, 10)
          pkts[#pkts + 1] = raw_at(t + 0.01, frame)
          n_bad = n_bad + 1
          t = t + 0.1
        end
        want[name] = #bad[name]
      end
      -- ARP is not IP, not malformed
      pkts[#pkts + 1] = raw_at(t, eth(pcap.payload(28, "\1"), 0x0806))
      pkts[#pkts + 1] = udp(t + 0.01, B, A, 2222, 1111, 10)
      local r = run(pkts)
      assert.is_true(r.ok, r.err)
      assert.same(want, r.stats.malformed_by)
      assert.equal(n_bad, r.stats.malformed)
      assert.equal(1, r.stats.not_ip)
      assert.equal(#pkts, r.stats.packets)
      assert.equal(1, #r.ends)
      assert.equal(n_bad, r.ends[1].pkts_fwd)
      assert.equal(1, r.ends[1].pkts_rev)
      assert.equal(1111, r.ends[1].sport)
    end)

    it("does not take Ethernet padding for payload or count it as malformed", function()
      local ip = good_ip4()                              -- 28 bytes of IP
      local frame = eth(ip) .. string.rep("\0", 60 - 14 - #ip) -- padded to 60
      local r = run { raw_at(0, frame), raw_at(1, frame) }
      assert.equal(0, r.stats.malformed)
      assert.equal(1, #r.ends)
      assert.equal(2, r.ends[1].pkts_fwd)
      assert.equal(120, r.ends[1].bytes_fwd)
    end)
  end)

  describe("input errors", function()
    it("returns the truncation error after delivering every flow before the damage", function()
      -- the last record is 16 + 82 bytes: cut inside its frame, then inside its header
      for _, cut in ipairs { 5, 90 } do
        local pkts = {}
        for i = 1, 10 do pkts[#pkts + 1] = udp(i, A, B, 3000 + i, 53, 20) end
        pkts[#pkts + 1] = udp(10.5, B, A, 53, 3010, 20)
        pkts[#pkts + 1] = udp(11, A, B, 3011, 53, 40) -- the damaged one
        local r = run(pkts, nil, { cut = cut })
        assert.is_nil(r.ok)
        assert.is_string(r.err)
        assert.matches("truncat", r.err)
        assert.equal(10, #r.ends)
        for _, f in ipairs(r.ends) do
          assert.equal("eof", f.reason)
          assert.is_true(f.sport >= 3001 and f.sport <= 3010)
        end
        assert.equal(1, by(r.ends)[3010].pkts_rev)
        assert.equal(11, r.stats.packets)
      end
    end)

    it("still closes the last slice of a truncated file", function()
      local pkts = {}
      for i = 0, 24 do pkts[#pkts + 1] = udp(i, A, B, 4444, 53, 20) end
      local r = run(pkts, { slice = 10 }, { cut = 3 })
      assert.is_nil(r.ok)
      assert.matches("truncat", r.err)
      local sum = 0
      for _, s in ipairs(r.slices) do sum = sum + s.pkts_fwd end
      assert.equal(24, sum)
      assert.equal("eof", r.slices[#r.slices].end_reason)
    end)

    it("runs over a capture with no packets and delivers nothing", function()
      local r = run({}, { slice = 10 })
      assert.is_true(r.ok, r.err)
      assert.equal(0, #r.starts)
      assert.equal(0, #r.ends)
      assert.equal(0, #r.batches)
      assert.equal(0, r.stats.packets)
    end)

    it("reads microsecond pcap files with the same times", function()
      local pkts = { udp(0.123456, A, B, 1, 2), udp(2.5, B, A, 2, 1) }
      local r = run(pkts, nil, { magic = 0xa1b2c3d4 })
      assert.is_true(r.ok, r.err)
      assert.equal(1, #r.ends)
      near_sec(0.123456, r.ends[1].first)
      near_sec(2.5, r.ends[1].last)
    end)

    it("refuses an unsupported link type on open", function()
      local path = pcap.write({ raw_at(0, pcap.payload(60)) }, { linktype = 147 })
      local eng, err = sluice.open { read = path }
      assert.is_nil(eng)
      assert.is_string(err)
      assert.matches("link type", err)
    end)

    it("returns nil and an error for a missing file", function()
      local eng, err = sluice.open { read = "/nonexistent/sluice-spec.pcap" }
      assert.is_nil(eng)
      assert.matches("/nonexistent/sluice%-spec%.pcap", err)
    end)

    it("returns nil and an error for a file that is not a capture", function()
      local path = pcap.write_bytes("this is not a pcap file at all, just some text\n")
      local ok, eng, err = pcall(sluice.open, { read = path })
      assert.is_true(ok, eng)
      assert.is_nil(eng)
      assert.matches(path, err, 1, true)
      assert.matches("not a pcap", err, 1, true)
    end)
  end)

  describe("misuse", function()
    local path
    setup(function() path = pcap.write { udp(0, A, B, 1, 2) } end)

    local function open_error(opts)
      local ok, err = pcall(function()
        local eng = sluice.open(opts) -- not a tail call: keep this frame
        return eng
      end)
      assert.is_false(ok, "sluice.open did not raise")
      -- error(msg, 2): the position is the caller's, i.e. this file
      assert.matches("engine_spec%.lua:%d+:", err)
      return err
    end

    it("raises for a non-table argument and a missing read", function()
      open_error(path)
      assert.matches("read", open_error { slice = 10 })
    end)

    -- on_eror = "skip" ran with the default; outputs = 5 failed inside
    it("engine:run raises for an unknown option and outputs that are not a list", function()
      for _, o in ipairs { { on_eror = "skip" }, { outputs = 5 } } do
        local eng = assert(sluice.open { read = path })
        local ok, err = pcall(function()
          local r = eng:run({ on_flow_end = function() end }, nil, o)
          return r
        end)
        eng:close()
        assert.is_false(ok)
        assert.matches("engine_spec%.lua:%d+: engine:run: ", err)
      end
    end)

    it("raises for an unknown option, naming it", function()
      assert.matches("bogus", open_error { read = path, bogus = 1 })
    end)

    -- past 2^64 ns the uint64 wrapped: 18446744074 s became about 0.3 s
    it("raises for a duration too long to hold", function()
      for _, o in ipairs { { active_timeout = 18446744074 }, { slice = 18446744074 },
                           { idle_timeout = { udp = 1e10 } }, { grace = 1e10 } } do
        o.read = path
        assert.matches("must be at most 3153600000 s", open_error(o))
      end
      local eng = assert(sluice.open { read = path, active_timeout = 3153600000 })
      eng:close()
    end)

    it("raises for a bad option type", function()
      assert.matches("slice", open_error { read = path, slice = true })
      assert.matches("slice", open_error { read = path, slice = "ten" })
      assert.matches("active_timeout", open_error { read = path, active_timeout = {} })
      assert.matches("idle_timeout", open_error { read = path, idle_timeout = 30 })
      assert.matches("idle_timeout", open_error { read = path, idle_timeout = { udp = "x" } })
      assert.matches("read", open_error { read = 42 })
    end)

    it("raises for an unknown idle_timeout protocol, naming it", function()
      assert.matches("sctp", open_error { read = path, idle_timeout = { sctp = 5 } })
    end)

    it("raises an error, not a crash, for run after close", function()
      -- in a child process: a crash here must not take the spec run down
      local script = os.tmpname()
      local fh = assert(io.open(script, "w"))
      fh:write(string.format([[
        package.path = %q
        package.cpath = %q
        local sluice = require "sluice"
        local eng = assert(sluice.open { read = %q })
        eng:close()
        local ok, err = pcall(function()
          local res = eng:run {}
          return res
        end)
        print("pcall", ok, err)
      ]], package.path, package.cpath, path))
      fh:close()
      local p = io.popen("luajit " .. script .. " 2>&1; echo \"exit $?\"")
      local out = p:read("*a")
      p:close()
      os.remove(script)
      assert.matches("exit 0", out, 1, true)
      assert.matches("pcall\tfalse\t", out, 1, true)
    end)

    it("raises for a zero idle timeout", function()
      assert.matches("udp", open_error { read = path, idle_timeout = { udp = 0 } })
    end)
  end)

  describe("policies", function()
    local path
    setup(function()
      path = pcap.write { udp(0, A, B, 1, 2), udp(1, B, A, 2, 1), udp(2, A, C, 3, 4) }
    end)

    it("calls init with validated options and a context, and stop at the end", function()
      local eng = assert(sluice.open { read = path })
      local calls, got_opts, got_ctx, emitted = {}, nil, nil, {}
      local P = {
        info = { options = { n = { type = "integer", default = 1 }, w = { type = "duration", default = 5 } } },
        init = function(opts, ctx)
          calls[#calls + 1] = "init"
          got_opts, got_ctx = opts, ctx
        end,
        on_flow_end = function(f)
          calls[#calls + 1] = "end"
          got_ctx.emit { id = f.id }
        end,
        stop = function() calls[#calls + 1] = "stop" end,
      }
      local ok, err = eng:run(P, { n = "7" }, { emit = function(rec) emitted[#emitted + 1] = rec end })
      assert.is_true(ok, err)
      assert.same({ n = 7, w = 5 }, got_opts)
      assert.equal(eng, got_ctx.engine)
      assert.same({ "init", "end", "end", "stop" }, calls)
      assert.same({ { id = 1 }, { id = 2 } }, emitted)
    end)

    it("refuses unknown policy options before reading any data", function()
      local eng = assert(sluice.open { read = path })
      local started = 0
      local ok, err = eng:run({ info = { options = {} },
        on_flow_start = function() started = started + 1 end }, { nope = 1 })
      assert.is_nil(ok)
      assert.matches("nope", err, 1, true)
      assert.equal(0, started)
    end)

    it("runs a list of policies, each seeing every event in order", function()
      local eng = assert(sluice.open { read = path })
      local log = {}
      local function mk(name)
        return {
          on_flow_start = function(f) log[#log + 1] = name .. " start " .. f.id end,
          on_flow_end = function(f, reason) log[#log + 1] = name .. " end " .. f.id .. " " .. reason end,
        }
      end
      assert.is_true(eng:run { mk("a"), mk("b") })
      assert.same({ "a start 1", "b start 1", "a start 2", "b start 2",
        "a end 1 eof", "b end 1 eof", "a end 2 eof", "b end 2 eof" }, log)
    end)
  end)

  describe("policy errors", function()
    local path
    setup(function()
      path = pcap.write { udp(0, A, B, 1, 2), udp(1, A, B, 3, 4), udp(15, A, B, 5, 6) }
    end)

    local function run_failing(handlers)
      local eng = assert(sluice.open { read = path, slice = 10 })
      return eng:run(handlers)
    end

    it("aborts the run with the file:line of a throwing on_flow_end", function()
      local line
      local seen = 0
      local ok, err = run_failing {
        on_flow_end = function()
          seen = seen + 1
          line = debug.getinfo(1, "l").currentline + 1
          error("boom in on_flow_end")
        end,
      }
      assert.is_nil(ok)
      assert.equal(1, seen) -- the first error stops the run
      assert.matches("boom in on_flow_end", err, 1, true)
      assert.matches("engine_spec.lua:" .. line, err, 1, true)
    end)

    it("aborts the run with the file:line of a throwing on_flow_start", function()
      local line
      local ok, err = run_failing {
        on_flow_start = function(f)
          line = debug.getinfo(1, "l").currentline + 1
          local x = f.no_such_field .. "x"
          return x
        end,
      }
      assert.is_nil(ok)
      assert.matches("engine_spec.lua:" .. line, err, 1, true)
    end)

    it("aborts the run with the file:line of a throwing on_slice", function()
      local line
      local ok, err = run_failing {
        on_slice = function(batch)
          line = debug.getinfo(1, "l").currentline + 1
          error("bad slice of " .. batch:count())
        end,
      }
      assert.is_nil(ok)
      assert.matches("engine_spec.lua:" .. line .. ": bad slice of 2", err, 1, true)
    end)

    it("aborts the run when a handler throws a non-string error", function()
      local ok, err = run_failing { on_slice = function() error({}) end }
      assert.is_nil(ok)
      assert.is_string(err)
    end)

    it("reports a failing init with the policy's error", function()
      local ok, err = run_failing { init = function() error("init says no") end }
      assert.is_nil(ok)
      assert.matches("init says no", err, 1, true)
    end)

    it("returns true when every handler succeeds", function()
      local n = 0
      local ok, err = run_failing { on_flow_end = function() n = n + 1 end }
      assert.is_true(ok, err)
      assert.equal(3, n)
    end)
  end)
end)
