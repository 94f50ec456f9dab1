-- Slice batches (lua/sluice/batch.lua) as on_slice receives them from a
-- real run: records(), get(i), count(), start and end.
local sluice = require "sluice"
local pcap = require "support.pcap"
local cjson = require "cjson"

local A, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"

local function udp(t, src, dst, sport, dport, len)
  return { ts = pcap.t(t), frame = pcap.pkt { proto = "udp", src = src, dst = dst,
    sport = sport, dport = dport, len = len or 0 } }
end

describe("slice batch", function()
  teardown(function() pcap.cleanup() end)

  -- three flows over [0,30) with 10 s slices:
  --   1000: packets at 1, 2, 12, 25     -> records in all three intervals
  --   2000: packets at 3, 4 (reply)     -> only in [0,10)
  --   3000: packets at 15, 16, 17, 26   -> [10,20) and [20,30)
  local seen
  setup(function()
    local pkts = {
      udp(1, A, B, 1000, 53, 10), udp(2, B, A, 53, 1000, 20), udp(12, A, B, 1000, 53, 30),
      udp(25, A, B, 1000, 53, 40),
      udp(3, A, C, 2000, 80, 1), udp(4, C, A, 80, 2000, 2),
      udp(15, C, B, 3000, 443, 5), udp(16, C, B, 3000, 443, 5), udp(17, B, C, 443, 3000, 5),
      udp(26, C, B, 3000, 443, 5),
    }
    table.sort(pkts, function(x, y) return x.ts < y.ts end)
    local eng = assert(sluice.open { read = pcap.write(pkts), slice = 10 })
    seen = {}
    assert(eng:run {
      on_slice = function(batch)
        local b = { start = batch.start, ["end"] = batch["end"], count = batch:count(),
          iter = {}, got = {}, mt = getmetatable(batch) }
        for rec in batch:records() do
          b.iter[#b.iter + 1] = { flow_id = rec.flow_id, sport = rec.sport, pkts = rec.pkts,
            bytes = rec.bytes, start = rec.start, ["end"] = rec["end"], tbl = rec:totable(),
            json = rec:json(), str = tostring(rec) }
        end
        for i = 1, batch:count() do
          local rec = batch:get(i)
          b.got[i] = rec and { flow_id = rec.flow_id, sport = rec.sport } or false
        end
        b.get0 = batch:get(0)
        b.get_past = batch:get(batch:count() + 1)
        -- records() can be walked again
        local again = 0
        for _ in batch:records() do again = again + 1 end
        b.again = again
        seen[#seen + 1] = b
      end,
    })
    eng:close()
  end)

  local function rel(sec)
    return math.floor(sec - pcap.BASE_SEC + 0.5)
  end

  it("is handed out once per closed interval, in order", function()
    assert.equal(3, #seen)
    assert.same({ 0, 10, 20 }, { rel(seen[1].start), rel(seen[2].start), rel(seen[3].start) })
    for _, b in ipairs(seen) do
      assert.equal(10, rel(b["end"]) - rel(b.start))
      assert.equal("number", type(b.start))
      assert.equal("number", type(b["end"]))
    end
  end)

  it("counts its records", function()
    assert.same({ 2, 2, 2 }, { seen[1].count, seen[2].count, seen[3].count })
    for _, b in ipairs(seen) do
      assert.equal(b.count, #b.iter)
      assert.equal(b.count, b.again)
    end
  end)

  it("iterates the records of its interval", function()
    local function sports(b)
      local t = {}
      for _, r in ipairs(b.iter) do t[#t + 1] = r.sport end
      table.sort(t)
      return t
    end
    assert.same({ 1000, 2000 }, sports(seen[1]))
    assert.same({ 1000, 3000 }, sports(seen[2]))
    assert.same({ 1000, 3000 }, sports(seen[3]))
    for _, b in ipairs(seen) do
      for _, r in ipairs(b.iter) do
        assert.equal(b.start, r.start)
        assert.equal(b["end"], r["end"])
        assert.equal("slice", r.tbl.type)
        assert.equal(r.flow_id, r.tbl.flow_id)
      end
    end
  end)

  it("gives deltas per interval in each record", function()
    local by = {}
    for _, r in ipairs(seen[1].iter) do by[r.sport] = r end
    assert.equal(2, by[1000].pkts)              -- 1 and 2 s
    assert.equal(52 + 62, by[1000].bytes)
    assert.equal(2, by[2000].pkts)
    for _, r in ipairs(seen[2].iter) do by[r.sport] = r end
    assert.equal(1, by[1000].pkts)              -- 12 s
    assert.equal(72, by[1000].bytes)
    assert.equal(3, by[3000].pkts)
    assert.equal(2, by[3000].tbl.pkts_fwd)
    assert.equal(1, by[3000].tbl.pkts_rev)
  end)

  it("gives each record a JSON line matching its totable", function()
    local n = 0
    for _, b in ipairs(seen) do
      for _, r in ipairs(b.iter) do
        local j = cjson.decode(r.json)
        local keys, jkeys = 0, 0
        for k, v in pairs(r.tbl) do
          keys = keys + 1
          if k == "start" or k == "end" then
            assert.is_true(math.abs(v - j[k]) < 1e-6, k)
          else
            assert.equal(v, j[k], k)
          end
        end
        for _ in pairs(j) do jkeys = jkeys + 1 end
        assert.equal(keys, jkeys)
        n = n + 1
      end
    end
    assert.equal(6, n)
  end)

  it("describes a record with tostring", function()
    local r
    for _, x in ipairs(seen[2].iter) do if x.sport == 3000 then r = x end end
    assert.equal(string.format("slice of flow %d udp 10.0.0.3:3000 -> 10.0.0.2:443 " ..
      "[%.3f, %.3f) pkts +2/+1 bytes +94/+47", r.flow_id, pcap.BASE_SEC + 10, pcap.BASE_SEC + 20),
      r.str)
  end)

  it("returns the same records by 1-based index with get(i)", function()
    for _, b in ipairs(seen) do
      for i = 1, b.count do
        assert.is_table(b.got[i])
        assert.equal(b.iter[i].flow_id, b.got[i].flow_id)
        assert.equal(b.iter[i].sport, b.got[i].sport)
      end
    end
  end)

  it("returns nil from get() outside 1..count", function()
    for _, b in ipairs(seen) do
      assert.is_nil(b.get0)
      assert.is_nil(b.get_past)
    end
  end)

  it("marks flows ending in the last interval with eof", function()
    for _, r in ipairs(seen[3].iter) do assert.equal("eof", r.tbl.end_reason) end
    for _, r in ipairs(seen[1].iter) do
      if r.sport == 2000 then assert.is_nil(r.tbl.end_reason) end
    end
  end)

  -- the batch object was reused: one kept from the first interval gave the
  -- third's records, with no error
  it("kept past its on_slice, raises when read; its start, end and count stay its own", function()
    local pkts = {
      udp(1, A, B, 1000, 53, 10), udp(12, A, B, 1000, 53, 30), udp(25, A, B, 1000, 53, 40),
      udp(26, A, C, 2000, 80, 1),
    }
    local eng = assert(sluice.open { read = pcap.write(pkts), slice = 10 })
    local first, groups, later = nil, nil, {}
    assert(eng:run {
      on_slice = function(batch)
        if not first then
          first, groups = batch, batch:group { by = "src" }
          return
        end
        later[#later + 1] = { pcall(function() for _ in first:records() do end end) }
        later[#later + 1] = { pcall(first.get, first, 1) }
        later[#later + 1] = { pcall(first.group, first, { by = "src" }) }
        later[#later + 1] = { pcall(function() for _ in groups:rows() do end end) }
        later.count, later.start = first:count(), first.start
      end,
    })
    eng:close()
    assert.equal(8, #later)
    for i = 1, #later do
      assert.is_false(later[i][1])
      assert.matches("a slice batch is valid only in the on_slice call that got it",
        tostring(later[i][2]), 1, true)
    end
    assert.equal(1, later.count)
    assert.equal(0, rel(later.start))
  end)

  -- a record or a group row kept past its on_slice read the next
  -- interval's record or row in its memory, with no error
  it("a record or a group row kept past its on_slice raises when read, never another's", function()
    local pkts = {}
    for i = 1, 40 do
      pkts[#pkts + 1] = udp(1 + i * 0.1, "10.0.1." .. i, B, 1000 + i, 53, i)
      pkts[#pkts + 1] = udp(11 + i * 0.1, "10.0.2." .. i, B, 2000 + i, 53, i)
      pkts[#pkts + 1] = udp(21 + i * 0.1, "10.0.3." .. i, B, 3000 + i, 53, i)
    end
    local eng = assert(sluice.open { read = pcap.write(pkts), slice = 10 })
    local kept, reads, inside = {}, {}, {}
    local function read_all(when)
      for _, k in ipairs(kept) do
        local ok, v = pcall(function() return k.what == "rec" and k.h.sport or k.h.label end)
        reads[#reads + 1] = { when = when, ok = ok, v = v, want = k.want }
      end
    end
    assert(eng:run {
      on_slice = function(batch)
        read_all("next on_slice")
        local groups = batch:group { by = "src" }
        for i = 1, batch:count() do
          local rec, row = batch:get(i), groups:get(i)
          inside[#inside + 1] = rec.sport == rec:totable().sport and row.label == row:totable().label
          kept[#kept + 1] = { what = "rec", h = rec, want = rec.sport }
          kept[#kept + 1] = { what = "row", h = row, want = row.label }
        end
        for rec in batch:records() do kept[#kept + 1] = { what = "rec", h = rec, want = rec.sport } end
        for row in groups:rows() do kept[#kept + 1] = { what = "row", h = row, want = row.label } end
      end,
      stop = function() read_all("stop") end,
    })
    eng:close()
    assert.equal(120, #inside)
    for _, ok in ipairs(inside) do assert.is_true(ok) end
    assert(#reads > 400, "reads of kept records and rows: " .. #reads)
    -- (in stop, after the last interval, what was kept may still read its
    -- own values: never another's)
    for _, r in ipairs(reads) do
      if r.ok then
        assert(r.when == "stop" and r.v == r.want, r.when .. ": a kept record or row read " ..
          tostring(r.v) .. " (it was " .. tostring(r.want) .. ")")
      else
        assert.matches("a slice batch is valid only in the on_slice call that got it", tostring(r.v), 1, true)
      end
    end
  end)
end)
