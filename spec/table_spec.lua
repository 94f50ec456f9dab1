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
