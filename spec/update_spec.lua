-- The flow table as a gatherer: engine:update with typed keys, aliases,
-- conflicts, stats, tags and handles.
local sluice = require "sluice"
local pcap = require "support.pcap"

local function udp(t, src, sport)
  return { ts = pcap.t(t), frame = pcap.pkt {
    proto = "udp", src = src, dst = "10.9.9.9", sport = sport, dport = 53 } }
end

-- Runs fn(eng, flow) in the first flow's on_flow_start; returns the ended
-- flows (as tables, by id) and the engine.
local function with_engine(packets, fn, open_opts)
  local o = { read = pcap.write(packets) }
  for k, v in pairs(open_opts or {}) do o[k] = v end
  local eng = assert(sluice.open(o))
  local ended, first = {}, true
  assert(eng:run {
    on_flow_start = function(f)
      if first then
        first = false
        fn(eng, f)
      end
    end,
    on_flow_end = function(f) ended[f.id] = f:totable() end,
  })
  return ended, eng
end

local T1 = { src = "10.0.0.1", dst = "10.9.9.9", sport = 1000, dport = 53, proto = "udp" }
local T2 = { src = "10.0.0.7", dst = "10.9.9.9", sport = 7000, dport = 53, proto = "udp" }

describe("engine:update", function()
  after_each(pcap.cleanup)

  it("links keys to one flow, found by any of them", function()
    local ids = {}
    with_engine({ udp(1, "10.0.0.1", 1000) }, function(eng)
      local f = assert(eng:update { keys = { "conn-a", 42 }, stats = { pkts = 2, bytes = 200 } })
      ids.created = f.id
      ids.by_string = assert(eng:update { keys = { "conn-a" } }).id
      ids.by_id = assert(eng:update { keys = { 42 } }).id
      ids.by_new_alias = assert(eng:update { keys = { 42, { id = 43 } } }).id
      ids.by_alias = assert(eng:update { keys = { 43 } }).id
    end)
    assert.equal(ids.created, ids.by_string)
    assert.equal(ids.created, ids.by_id)
    assert.equal(ids.created, ids.by_new_alias)
    assert.equal(ids.created, ids.by_alias)
  end)

  it("adds stats to the counters; an update without stats changes none", function()
    local ended, id = with_engine({ udp(1, "10.0.0.1", 1000) }, function(eng)
      eng:update { keys = { "x" }, stats = { pkts_fwd = 3, bytes_fwd = 300, pkts_rev = 1, bytes_rev = 50 } }
      eng:update { keys = { "x" } }
      eng:update { keys = { "x" }, stats = { pkts = 1, bytes = 10 } }
    end)
    local x
    for _, f in pairs(ended) do if f.id ~= 1 then x = f end end
    assert.same({ 4, 310, 1, 50 }, { x.pkts_fwd, x.bytes_fwd, x.pkts_rev, x.bytes_rev })
    -- IP bytes: the bytes given
    assert.same({ 310, 50 }, { x.ip_bytes_fwd, x.ip_bytes_rev })
  end)

  it("takes IP bytes apart, and refuses a misspelt stats name, changing nothing", function()
    local err
    local ended = with_engine({ udp(1, "10.0.0.1", 1000) }, function(eng)
      eng:update { keys = { "x" }, stats = { pkts_fwd = 2, bytes_fwd = 200, ip_bytes_fwd = 172 } }
      local ok
      ok, err = pcall(eng.update, eng, { keys = { "x" }, stats = { pkt_fwd = 5, bytes_fwd = 9 } })
      assert.is_false(ok)
    end)
    assert.matches("unknown stats.pkt_fwd", err, 1, true)
    local x
    for _, f in pairs(ended) do if f.id ~= 1 then x = f end end
    assert.same({ 2, 200, 172 }, { x.pkts_fwd, x.bytes_fwd, x.ip_bytes_fwd })
  end)

  it("fails a key conflict as a whole and changes nothing", function()
    local before, after, err
    with_engine({ udp(1, "10.0.0.1", 1000) }, function(eng, f)
      assert(eng:update { keys = { "other" } })
      local function snapshot()
        local s = {}
        for _, live in ipairs(eng:query {}) do
          local t = live:totable()
          t.aliases_probe = nil
          s[#s + 1] = t
        end
        table.sort(s, function(a, b) return a.id < b.id end)
        return s
      end
      before = snapshot()
      local ok
      ok, err = eng:update { keys = { T1, "other", "fresh" }, stats = { pkts = 5 } }
      assert.is_nil(ok)
      after = snapshot()
      -- "fresh" was not linked: it starts its own flow now
      local fresh = assert(eng:update { keys = { "fresh" } })
      assert.is_true(fresh.id ~= f.id)
    end)
    assert.matches("key conflict", err)
    assert.same(before, after)
  end)

  it("rejects a handle mixed with keys, and accepts a handle alone", function()
    local same
    with_engine({ udp(1, "10.0.0.1", 1000) }, function(eng, f)
      assert.has_error(function() eng:update { flow = f, keys = { 1 } } end)
      local g = assert(eng:update { flow = f, stats = { pkts = 1 } })
      same = g.id == f.id
    end)
    assert.is_true(same)
  end)

  it("a packet of an aliased 5-tuple counts in the flow it was linked to", function()
    -- a full first batch of T1, so T2 arrives after the update
    local packets = {}
    for i = 1, 256 do packets[i] = udp(1 + i * 1e-6, "10.0.0.1", 1000) end
    packets[#packets + 1] = udp(2, "10.0.0.7", 7000)
    packets[#packets + 1] = udp(2.1, "10.0.0.7", 7000)
    local ended = with_engine(packets, function(eng, f)
      assert.equal(f.id, assert(eng:update { keys = { T1, T2 } }).id)
    end)
    local n = 0
    for _ in pairs(ended) do n = n + 1 end
    assert.equal(1, n)
    assert.equal(258, ended[1].pkts_fwd)
  end)

  -- the VLAN ids are part of a flow's key: a 5-tuple without them keyed
  -- another flow (untagged), which then took every update
  it("finds a flow of tagged frames by its 5-tuple with vlan and vlan_inner", function()
    local function tagged(t, vlans)
      return { ts = pcap.t(t), frame = pcap.pkt { proto = "udp", src = "10.0.0.1", dst = "10.9.9.9",
        sport = 1000, dport = 53, vlans = vlans } }
    end
    local seen = {}
    local eng = assert(sluice.open { read = pcap.write { tagged(1, { 40 }), tagged(1.1, { 7, 8 }) } })
    local ended = {}
    assert(eng:run {
      on_flow_start = function(f)
        local key = { src = "10.0.0.1", dst = "10.9.9.9", sport = 1000, dport = 53, proto = "udp",
          vlan = f.vlan, vlan_inner = f.vlan_inner }
        seen[#seen + 1] = { f.id, assert(eng:update { keys = { key }, stats = { pkts = 1 } }).id }
      end,
      on_flow_end = function(f) ended[#ended + 1] = f:totable() end,
    })
    assert.same({ { 1, 1 }, { 2, 2 } }, seen)
    assert.equal(2, #ended)
    for _, f in ipairs(ended) do assert.equal(2, f.pkts_fwd) end
  end)

  -- a flow started without stats had last 0: a negative duration in
  -- handles and JSON; and an update of tags alone put a record of no
  -- packets in the interval's slice
  it("starts a flow without stats at the clock, duration 0; a slice lists only flows with counts", function()
    local ended, in_slices = {}, {}
    local eng = assert(sluice.open { read = pcap.write { udp(1, "10.0.0.1", 1000), udp(3, "10.0.0.1", 1000) },
      slice = 1 })
    local first = true
    assert(eng:run {
      on_flow_start = function()
        if not first then return end
        first = false
        local a = assert(eng:update { keys = { "bare" } })
        assert.equal(a.first, a.last)
        assert.equal(0, a.duration)
        eng:update { keys = { "tagged" }, tags = { why = "test" } }
        eng:update { keys = { "counted" }, stats = { pkts = 1, bytes = 10 } }
      end,
      on_slice = function(batch)
        for rec in batch:records() do
          local k = rec.key_string or rec.src
          in_slices[k] = (in_slices[k] or 0) + 1
        end
      end,
      on_flow_end = function(f) ended[f.key_string or f.src] = f:totable() end,
    })
    for _, k in ipairs { "bare", "tagged", "counted" } do
      assert.truthy(ended[k], k)
      assert.equal(ended[k].first, ended[k].last, k)
    end
    assert.is_nil(in_slices.bare)
    assert.is_nil(in_slices.tagged)
    assert.equal(1, in_slices.counted)
    assert.equal(2, in_slices["10.0.0.1"])
  end)

  it("tags from an update reach the flow", function()
    local ended = with_engine({ udp(1, "10.0.0.1", 1000) }, function(eng)
      eng:update { keys = { T1 }, tags = { source = "conntrack", zone = 3 } }
    end)
    assert.same({ source = "conntrack", zone = 3 }, ended[1].tags)
  end)

  it("frees a flow's keys when it ends: the same key starts a new flow", function()
    local ended = with_engine({ udp(1, "10.0.0.1", 1000), udp(100, "10.0.0.2", 1000),
      udp(101, "10.0.0.1", 1000) }, function(eng)
      eng:update { keys = { T1, "alias-of-1" } }
    end, { idle_timeout = { udp = 10 } })
    local t1 = {}
    for _, f in pairs(ended) do if f.src == "10.0.0.1" then t1[#t1 + 1] = f end end
    assert.equal(2, #t1)
    assert.is_true(t1[1].id ~= t1[2].id)
  end)

  it("starts no flow once the input has ended: every flow started ends", function()
    -- 5000 flows: the end of input ends them over two steps; a handler
    -- starting a flow for each that ends would otherwise never let it end
    local packets = {}
    for i = 1, 5000 do
      packets[i] = udp(1 + i / 1e6, string.format("10.1.%d.%d", math.floor(i / 256), i % 256), 1000)
    end
    local eng = assert(sluice.open { read = pcap.write(packets) })
    local starts, ends, refused, err = 0, 0, 0, nil
    assert(eng:run {
      on_flow_start = function() starts = starts + 1 end,
      on_flow_end = function()
        ends = ends + 1
        if ends > 20000 then error("the run does not end") end
        local f, e = eng:update { keys = { 9000000 + ends } }
        if not f then refused, err = refused + 1, e end
      end,
    })
    assert.equal(5000, ends)
    assert.equal(starts, ends)
    assert.equal(5000, refused)
    assert.equal("the input has ended: no new flow starts", err)
    local st = eng:stats()
    assert.equal(tonumber(st.flows_started), tonumber(st.flows_ended))
    eng:close()
  end)

  -- it said "update failed: No such process"
  it("a flow that has ended is not updated, and the error says so", function()
    local eng = assert(sluice.open { read = pcap.write { udp(1, "10.0.0.1", 1000) } })
    local ok, err
    assert(eng:run {
      on_flow_end = function(f) ok, err = eng:update { flow = f, stats = { pkts = 1 } } end,
    })
    assert.is_nil(ok)
    assert.equal("the flow has ended: only a live flow is updated", err)
    eng:close()
  end)

  it("rejects malformed keys", function()
    with_engine({ udp(1, "10.0.0.1", 1000) }, function(eng)
      assert.has_error(function() eng:update { keys = {} } end)
      assert.has_error(function() eng:update { keys = { string.rep("x", 33) } } end)
      assert.has_error(function() eng:update { keys = { { src = "nope", dst = "10.0.0.1" } } } end)
      assert.has_error(function() eng:update { keys = { -1 } } end)
    end)
  end)

  -- misuse is reported at the caller's line (error(msg, 2)), before
  -- anything changes
  it("rejects bad stats, ports and tags at the caller's line, changing nothing", function()
    local this = debug.getinfo(1, "S").short_src
    local cases = {
      { { keys = { T1 }, stats = { pkts_fwd = -1 } }, "stats.pkts_fwd must be a whole number" },
      { { keys = { T1 }, stats = { bytes = 1.5 } }, "stats.bytes_fwd must be a whole number" },
      { { keys = { T1 }, stats = { pkts_rev = "3" } }, "stats.pkts_rev must be a whole number" },
      { { keys = { { src = "10.0.0.1", dst = "::1", proto = "tcp" } } }, "addresses of one family" },
      { { keys = { { src = "10.0.0.1", dst = "10.0.0.2", proto = "nope" } } }, "unknown proto" },
      { { keys = { { src = "10.0.0.1", dst = "10.0.0.2", proto = "udp", sport = 70000 } } }, "sport is a whole number from 0 to 65535" },
      { { keys = { 2^64 } }, "an id key is a whole number" },
      { { keys = { T1 }, tags = { bad = {} } }, "tags are name = number or string, got string = table" },
      -- a misspelt field keyed port 0: a new flow, and no error
      { { keys = { { src = "10.0.0.1", dst = "10.9.9.9", sprot = 1000, dport = 53, proto = "udp" } } },
        "unknown key field sprot" },
      -- not flows: an internal error ("cannot convert 'nil'") before
      { { flow = require("ffi").new("struct sl_key") }, "flow must be a flow handle" },
      { { flow = "1" }, "flow must be a flow handle" },
    }
    local st
    with_engine({ udp(1, "10.0.0.1", 1000) }, function(eng)
      for _, c in ipairs(cases) do
        local ok, err = pcall(eng.update, eng, c[1])
        assert.is_false(ok)
        assert.matches(c[2], err, 1, true)
        -- pcall calls update itself: the level-2 position is pcall's ([C]),
        -- so the message carries no file; a Lua caller gets its own line
        local ok2, err2 = pcall(function() local f = eng:update(c[1]); return f end)
        assert.is_false(ok2)
        assert.matches(this .. ":%d+: ", err2)
      end
      st = eng:stats()
    end)
    assert.equal(1, tonumber(st.flows_started)) -- only the packet's flow
  end)

  it("writes flows of id and string keys with their key, not as addresses", function()
    local ended = {}
    local eng = assert(sluice.open { read = pcap.write { udp(1, "10.0.0.1", 1000) } })
    local texts, lines = {}, {}
    local first = true
    assert(eng:run {
      on_flow_start = function()
        if not first then return end
        first = false
        assert(eng:update { keys = { 4242 }, stats = { pkts = 3, bytes = 100 } })
        assert(eng:update { keys = { 'ct:"z\1' } })
      end,
      on_flow_end = function(f)
        ended[#ended + 1] = f:totable()
        texts[#texts + 1] = tostring(f)
        lines[#lines + 1] = require("cjson").decode(f:json())
      end,
    })
    eng:close()
    table.sort(ended, function(a, b) return a.id < b.id end)
    table.sort(lines, function(a, b) return a.id < b.id end)
    table.sort(texts)
    assert.equal(3, #ended)
    local id_flow, string_flow = ended[2], ended[3]
    assert.equal(4242, id_flow.key_id)
    assert.equal('ct:"z\1', string_flow.key_string)
    for _, t in ipairs { id_flow, string_flow, lines[2], lines[3] } do
      assert.is_nil(t.src)
      assert.is_nil(t.dst)
      assert.is_nil(t.proto)
      assert.is_nil(t.ip_version)
      assert.is_nil(t.sport)
    end
    assert.equal(4242, lines[2].key_id)
    assert.equal(3, lines[2].pkts_fwd)
    assert.equal('ct:"z\1', lines[3].key_string)
    assert.equal(4, ended[1].ip_version) -- the packet's flow keeps its 5-tuple
    assert.matches("^flow %d+ id 4242 pkts 3/0", texts[2])
    assert.matches('^flow %d+ key "ct:\\"z\\1" pkts', texts[3])
  end)
end)

describe("engine:update under stress", function()
  after_each(pcap.cleanup)

  it("2M updates over 200k keys with constant trims keep every invariant", function()
    local N, KEYS = 2000000, 200000
    local eng = assert(sluice.open { read = pcap.write { udp(1, "10.0.0.1", 1000) },
      max_flows = 50000, low_flows = 40000, pool_flows = 50000, grace = 0 })
    local model_fid, model_slot = {}, {}
    local bad_owner, ended_pkts, ended = 0, 0, {}
    local ffi = require "ffi"
    local C = require("sluice.core").C
    math.randomseed(12345) -- LuaJIT's generator: the same sequence every run
    local function rand(n) return math.random(0, n - 1) end
    assert(eng:run {
      on_flow_start = function(f)
        if f.src ~= "10.0.0.1" then return end
        for _ = 1, N do
          local k = rand(KEYS)
          local a, b = k, (k * 7 + 1) % KEYS -- updates link pairs of keys
          local r, err = eng:update { keys = { a }, stats = { pkts = 1, bytes = 10 } }
          assert(r, err)
          local fid, slot = r.id, r.slot
          local old = model_fid[a]
          if old and old ~= fid then
            -- the key's old flow must be gone, not merely unreachable
            local live = C.sl_engine_flow(eng.e, model_slot[a])
            if live ~= nil and tonumber(live.fid) == old then bad_owner = bad_owner + 1 end
          end
          model_fid[a], model_slot[a] = fid, slot
          if rand(8) == 0 then
            -- link b as an alias unless b belongs to a different live flow
            local ok = eng:update { keys = { a, b } }
            local ob = model_fid[b]
            local b_live = ob and C.sl_engine_flow(eng.e, model_slot[b])
            b_live = b_live ~= nil and b_live and tonumber(b_live.fid) == ob
            if ok then
              if b_live and ob ~= fid then bad_owner = bad_owner + 1 end
              model_fid[b], model_slot[b] = fid, slot
            elseif not b_live or ob == fid then
              bad_owner = bad_owner + 1 -- a conflict without a reason
            end
          end
        end
      end,
      on_flow_end = function(f)
        if ended[f.id] then bad_owner = bad_owner + 1 end
        ended[f.id] = true
        if f.src ~= "10.0.0.1" then ended_pkts = ended_pkts + f.pkts_fwd end
      end,
    })
    local st = eng:stats()
    assert.equal(0, bad_owner)
    assert.equal(N, ended_pkts) -- every update's packet is in exactly one flow
    assert.is_true(st.trims > 10, "trims: " .. st.trims .. " started " .. st.flows_started .. " refused " .. st.flows_refused)
    assert.equal(0, st.flows_refused)
    assert.equal(st.flows_started, st.flows_ended)
  end)
end)
