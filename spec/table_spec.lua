-- The bounded flow table through the Lua API: max_flows/low_flows trims,
-- grace, scores from flow:weight(), protection with flow:protect().
local sluice = require "sluice"
local pcap = require "support.pcap"

-- n UDP flows from 10.0.0.<i> opening at t = 1 s (256 packets, so they fill
-- the first batch and a policy sees them before anything else), then flows
-- from 10.0.1.<j> at t = late.
local function capture(n, late, n_late)
  local packets = {}
  for i = 0, 255 do
    local host = 1 + i % n
    packets[#packets + 1] = { ts = pcap.t(1 + i * 1e-6), frame = pcap.pkt {
      proto = "udp", src = "10.0.0." .. host, dst = "10.9.9.9", sport = 1000, dport = 53 } }
  end
  for j = 1, n_late or 1 do
    packets[#packets + 1] = { ts = pcap.t(late + j * 1e-3), frame = pcap.pkt {
      proto = "udp", src = "10.0.1." .. j, dst = "10.9.9.9", sport = 1000, dport = 53 } }
  end
  return pcap.write(packets)
end

local function run(path, open_opts, on_start)
  local o = { read = path }
  for k, v in pairs(open_opts) do o[k] = v end
  local eng = assert(sluice.open(o))
  local ended = {}
  assert(eng:run {
    on_flow_start = on_start,
    on_flow_end = function(f, reason) ended[f.src] = reason end,
  })
  return ended, eng:stats()
end

describe("bounded table", function()
  after_each(pcap.cleanup)

  it("trims to low_flows, lowest score first, sparing protected flows", function()
    local ended, st = run(capture(8, 20), { max_flows = 8, low_flows = 4, pool_flows = 16, grace = 1 },
      function(f)
        local host = tonumber(f.src:match("%.(%d+)$"))
        if f.src:match("^10%.0%.0%.") then
          f:weight("rank", host)
          f:upsert_weight("bonus", function(v) return v + 0.5 end)
          if host == 1 then assert.is_true(f:protect("vip")) end
        end
      end)
    -- host 1 is protected; hosts 2..5 have the lowest scores
    for host = 2, 5 do assert.equal("trimmed", ended["10.0.0." .. host]) end
    for host = 6, 8 do assert.equal("eof", ended["10.0.0." .. host]) end
    assert.equal("eof", ended["10.0.0.1"])
    assert.equal(1, st.trims)
    assert.equal(4, st.ended_by.trimmed)
    assert.equal(0, st.flows_refused)
  end)

  it("refuses new flows, counted, when every flow is protected", function()
    local ended, st = run(capture(4, 20, 3), { max_flows = 4, low_flows = 2, pool_flows = 4, grace = 1 },
      function(f) f:protect("keep") end)
    assert.is_nil(ended["10.0.1.1"])
    assert.equal(3, st.flows_refused)
    assert.is_nil(st.ended_by.trimmed)
    assert.equal(4, st.flows_started)
  end)

  it("never trims a flow younger than the grace period", function()
    local _, st = run(capture(4, 5, 2), { max_flows = 4, low_flows = 1, pool_flows = 4, grace = 60 })
    assert.is_nil(st.ended_by.trimmed)
    assert.equal(2, st.flows_refused)
  end)

  it("unprotect tells whether another tag still protects the flow", function()
    local answers = {}
    run(capture(1, 2), {}, function(f)
      if f.src ~= "10.0.0.1" then return end
      f:protect("a")
      f:protect("a") -- idempotent, not counted
      f:protect("b")
      answers[1] = f:unprotect("a")
      answers[2] = f:unprotect("b")
      answers[3] = f:unprotect("b")
    end)
    assert.same({ true, false, false }, answers)
  end)

  it("unweight removes one part of the score", function()
    local ended = run(capture(3, 20), { max_flows = 3, low_flows = 2, pool_flows = 8, grace = 1 },
      function(f)
        if f.src == "10.0.0.1" then
          f:weight("a", 10)
          f:unweight("a") -- back to 0: now the lowest
        elseif f.src:match("^10%.0%.0%.") then
          f:weight("a", 5)
        end
      end)
    assert.equal("trimmed", ended["10.0.0.1"])
    assert.equal("eof", ended["10.0.0.2"])
    assert.equal("eof", ended["10.0.0.3"])
  end)

  it("rejects bad limits", function()
    local path = capture(1, 2)
    assert.has_error(function() sluice.open { read = path, max_flows = 10, low_flows = 10 } end)
    assert.has_error(function() sluice.open { read = path, low_flows = 5 } end)
    assert.has_error(function() sluice.open { read = path, max_flows = 100, pool_flows = 50 } end)
  end)
end)

describe("decaying weights", function()
  after_each(pcap.cleanup)

  -- flow A at t = 1 s, then one packet of flow B every second: each slice
  -- boundary lets the engine's clock, and so the decays, move on.
  local function observe(decay_fn, interval)
    local packets = { { ts = pcap.t(1), frame = pcap.pkt {
      proto = "udp", src = "10.0.0.1", dst = "10.9.9.9", sport = 1000, dport = 53 } } }
    for t = 1, 6 do
      packets[#packets + 1] = { ts = pcap.t(t + 0.5), frame = pcap.pkt {
        proto = "udp", src = "10.0.0.2", dst = "10.9.9.9", sport = 1000, dport = 53 } }
    end
    local eng = assert(sluice.open { read = pcap.write(packets), slice = 1 })
    eng:decay("w", interval, decay_fn)
    local seen = {}
    assert(eng:run {
      on_flow_start = function(f) if f.src == "10.0.0.1" then f:weight("w", 10) end end,
      on_slice = function(b)
        local a = eng:query { where = { src = "10.0.0.1" } }[1]
        local w = a and a:weights().w
        seen[#seen + 1] = w == nil and "gone" or w
      end,
    })
    return seen
  end

  it("fixed subtracts the same amount each interval, then removes the weight", function()
    local seen = observe(sluice.decay.fixed(4), 1)
    -- the first interval starts with the run: 10 until the first boundary
    assert.same({ 10, 6, 2, "gone" }, { seen[1], seen[2], seen[3], seen[4] })
  end)

  it("linear multiplies each interval", function()
    local seen = observe(sluice.decay.linear(0.5), 1)
    assert.same({ 10, 5, 2.5, 1.25 }, { seen[1], seen[2], seen[3], seen[4] })
  end)

  it("expire_when_inactive removes a weight not set again in time", function()
    -- set at 1.0 s; checked at 2.5 s (idle 1.5: kept) and 3.5 s (2.5: removed)
    local seen = observe(sluice.decay.expire_when_inactive(2.5), 1)
    assert.equal(10, seen[1])
    assert.equal("gone", seen[2])
  end)
end)
