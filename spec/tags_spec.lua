-- Tags, tag events and cork through the Lua API.
local sluice = require "sluice"
local pcap = require "support.pcap"
local cjson = require "cjson"

-- Three UDP flows, one packet each at t = 1, 2, 3 s.
local function capture()
  local packets = {}
  for i = 1, 3 do
    packets[i] = { ts = pcap.t(i), frame = pcap.pkt {
      proto = "udp", src = "10.0.0." .. i, dst = "10.9.9.9", sport = 1000, dport = 53 } }
  end
  return pcap.write(packets)
end

describe("tags", function()
  after_each(pcap.cleanup)

  it("replace a value by name, keep the others, and emit one event per change", function()
    local eng = assert(sluice.open { read = capture() })
    local events, final = {}, {}
    assert(eng:run {
      on_flow_start = function(f)
        if f.src ~= "10.0.0.1" then return end
        f:tag("app", "dns")
        f:tag("risk", 1)
        f:tag("risk", 1) -- no change, no event
        f:tag("risk", 5)
      end,
      on_tag = function(f, name, value, old)
        events[#events + 1] = { f.src, name, value, old == nil and "nil" or old }
      end,
      on_flow_end = function(f)
        if f.src == "10.0.0.1" then final = f:totable().tags end
      end,
    })
    assert.same({ { "10.0.0.1", "app", "dns", "nil" }, { "10.0.0.1", "risk", 1, "nil" },
      { "10.0.0.1", "risk", 5, 1 } }, events)
    assert.same({ app = "dns", risk = 5 }, final)
  end)

  it("appear in flow and slice JSON as a tags object", function()
    local eng = assert(sluice.open { read = capture(), slice = 10 })
    local flow_json, slice_json = {}, {}
    assert(eng:run {
      on_flow_start = function(f) if f.src == "10.0.0.2" then f:tag("seen", "yes") end end,
      on_flow_end = function(f) flow_json[f.src] = cjson.decode(f:json()) end,
      on_slice = function(b)
        for rec in b:records() do slice_json[rec.src] = cjson.decode(rec:json()) end
      end,
    })
    assert.same({ seen = "yes" }, flow_json["10.0.0.2"].tags)
    assert.is_nil(flow_json["10.0.0.1"].tags)
    assert.same({ seen = "yes" }, slice_json["10.0.0.2"].tags)
    assert.is_nil(slice_json["10.0.0.3"].tags)
  end)

  it("a tag set by one policy is visible to the next", function()
    local eng = assert(sluice.open { read = capture() })
    local seen = {}
    assert(eng:run {
      { on_flow_start = function(f) f:tag("by", "first") end },
      { on_flow_start = function(f) seen[#seen + 1] = f:tag("by") end },
    })
    assert.same({ "first", "first", "first" }, seen)
  end)

  it("reject bad names and values", function()
    local eng = assert(sluice.open { read = capture() })
    local ok, err = eng:run { on_flow_start = function(f) f:tag("x", {}) end }
    assert.is_nil(ok)
    assert.matches("a value is a number or a string", err)
  end)
end)

describe("cork", function()
  after_each(pcap.cleanup)

  it("runs after the events before it and before the events after it", function()
    local eng = assert(sluice.open { read = capture() })
    local log = {}
    assert(eng:run {
      on_flow_start = function(f)
        log[#log + 1] = "start " .. f.src
        if f.src == "10.0.0.1" then
          f:tag("t", 1) -- a tag event emitted before the cork
          eng:cork(function() log[#log + 1] = "cork" end)
        end
      end,
      on_tag = function(f, name) log[#log + 1] = "tag " .. name end,
    })
    assert.same({ "start 10.0.0.1", "tag t", "cork", "start 10.0.0.2", "start 10.0.0.3" }, log)
  end)

  it("a cork before the run fires before the first event", function()
    local eng = assert(sluice.open { read = capture() })
    local log = {}
    eng:cork(function() log[#log + 1] = "cork" end)
    assert(eng:run { on_flow_start = function(f) log[#log + 1] = f.src end })
    assert.same({ "cork", "10.0.0.1", "10.0.0.2", "10.0.0.3" }, log)
  end)
end)

describe("query", function()
  after_each(pcap.cleanup)

  -- flows from 10.0.0.i with i packets each, all live at the cork
  local function capture_sizes()
    local packets = {}
    for i = 1, 4 do
      for k = 1, i do
        packets[#packets + 1] = { ts = pcap.t(1 + i + k * 1e-3), frame = pcap.pkt {
          proto = i == 4 and "tcp" or "udp", src = "10.0.0." .. i, dst = "10.9.9.9",
          sport = 1000, dport = 53, flags = i == 4 and "A" or nil } }
      end
    end
    return pcap.write(packets)
  end

  it("finds no live flow once the input has ended", function()
    local eng = assert(sluice.open { read = capture_sizes() })
    local live_in_stop
    assert(eng:run { stop = function() live_in_stop = #eng:query {} end })
    assert.equal(0, live_in_stop)
  end)

  it("filters live flows by function, fields and tag, and ranks the top ones", function()
    local eng = assert(sluice.open { read = capture_sizes() })
    local res = {}
    local function srcs(list)
      local out = {}
      for i, f in ipairs(list) do out[i] = f.src end
      return out
    end
    assert(eng:run {
      on_flow_start = function(f)
        if f.src == "10.0.0.2" or f.src == "10.0.0.4" then f:tag("watch", 1) end
        if f.src == "10.0.0.4" then
          eng:cork(function()
            res.all = #eng:query {}
            res.top2 = srcs(eng:query { top = 2, by = "pkts" })
            res.udp = #eng:query { where = { proto = "udp" } }
            res.fn = srcs(eng:query { where = function(x) return x.pkts >= 2 end, by = "pkts" })
            res.tag = srcs(eng:query { tag = "watch", by = "pkts" })
          end)
        end
      end,
    })
    assert.equal(4, res.all)
    -- one batch: every packet is counted before events are dispatched
    assert.same({ "10.0.0.4", "10.0.0.3" }, res.top2)
    assert.equal(3, res.udp)
    assert.same({ "10.0.0.4", "10.0.0.3", "10.0.0.2" }, res.fn)
    assert.same({ "10.0.0.4", "10.0.0.2" }, res.tag)
  end)

  it("rejects a bad query", function()
    local eng = assert(sluice.open { read = capture_sizes() })
    assert.has_error(function() eng:query { top = -1 } end)
    assert.has_error(function() eng:query { where = 5 } end)
  end)
end)

describe("a flow's last slice record", function()
  -- Flows end (idle timeout) steps before the interval they ended in
  -- closes; that interval's record of them must still carry their tags and
  -- stay out of the batch of a policy that turned them down.
  it("keeps its tags, and stays turned down, though the flow ended steps before", function()
    local eng = assert(sluice.open { read = "examples/sample.pcap", slice = 30,
      idle_timeout = { tcp = 1, udp = 1, icmp = 1, other = 1 } })
    local tagger, decliner = {}, {}
    local last_records, declined, declined_seen = 0, {}, 0
    function tagger.on_flow_start(f) f:tag("id", f.id) end
    function tagger.on_slice(batch)
      for rec in batch:records() do
        if rec.end_reason then
          last_records = last_records + 1
          local t = rec:totable()
          assert(t.tags and t.tags.id == rec.flow_id, "tags of the last record of flow " .. rec.flow_id)
          assert.matches('"tags":{"id":' .. rec.flow_id .. '}', rec:json(), 1, true)
        end
      end
    end
    function decliner.on_flow_start(f)
      if f.id % 2 == 0 then declined[f.id] = true; return false end
    end
    function decliner.on_slice(batch)
      for rec in batch:records() do
        if declined[rec.flow_id] then declined_seen = declined_seen + 1 end
      end
      -- the C query leaves out the same flows
      local tcp = 0
      for rec in batch:records() do if rec.proto == "tcp" then tcp = tcp + 1 end end
      local g = batch:group { by = "all", proto = "tcp" }
      assert.are.equal(tcp, g.n > 0 and g:get(1).flows or 0)
    end
    assert(eng:run { tagger, decliner })
    eng:close()
    assert(last_records > 50, "last records seen: " .. last_records)
    assert(next(declined))
    assert.are.equal(0, declined_seen)
  end)
end)
