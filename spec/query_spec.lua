-- The batch API (batch:group, batch:top): every slice of a generated trace
-- grouped in C and again here, record by record, the plain way (masking
-- the raw addresses in Lua), and the two compared group by group.
local ffi = require "ffi"
local run = require "support.run"
local sluice = require "sluice"

local TRACE_ARGS = "-n 300000 -c 3000 -s 5 -r 50000"

-- The raw address of a record's end (0 src, 1 dst), cut to bits.
local function masked(rec, side, bits)
  local len = rec.key.ip_version == 4 and 4 or 16
  local raw = ffi.string(side == 0 and rec.key.src or rec.key.dst, len)
  local out = {}
  for i = 1, len do
    local keep = math.max(0, math.min(8, bits - (i - 1) * 8)) -- bits of this byte
    local b = raw:byte(i)
    out[i] = string.char(b - b % 2 ^ (8 - keep))
  end
  return table.concat(out)
end

-- Groups the batch's records the plain way: key -> { flows, pf, pr, bf, br, seen }.
local function plain(batch, spec)
  local bits4, bits6 = 32, spec.prefix6 or 128
  local field, n = spec.by:match("^(%a+)/(%d+)$")
  if field then bits4 = tonumber(n) else field = spec.by end
  local groups = {}
  local function add(rec, side, swap)
    local key
    if field == "src" or field == "dst" or field == "host" then
      key = masked(rec, side, rec.ip_version == 4 and bits4 or bits6)
    elseif field == "sport" then key = rec.sport
    elseif field == "dport" then key = rec.dport
    elseif field == "proto" then key = rec.proto
    else key = "all" end
    local g = groups[key]
    if not g then g = { flows = 0, pf = 0, pr = 0, bf = 0, br = 0, seen = {}, distinct = 0 }; groups[key] = g end
    g.flows = g.flows + 1
    local f, r = { rec.pkts_fwd, rec.bytes_fwd }, { rec.pkts_rev, rec.bytes_rev }
    if swap then f, r = r, f end
    g.pf, g.bf, g.pr, g.br = g.pf + f[1], g.bf + f[2], g.pr + r[1], g.br + r[2]
    local d = spec.distinct
    if d then
      local v
      if d == "src" then v = rec.src elseif d == "dst" then v = rec.dst
      elseif d == "peer" then v = side == 0 and rec.dst or rec.src
      elseif d == "sport" then v = rec.sport elseif d == "dport" then v = rec.dport
      else v = side == 0 and rec.dport or rec.sport end
      if not g.seen[v] then g.seen[v] = true; g.distinct = g.distinct + 1 end
    end
  end
  for rec in batch:records() do
    local proto_ok = not spec.proto or rec.proto == spec.proto
    local version_ok = not spec.ip_version or rec.ip_version == spec.ip_version
    if proto_ok and version_ok then
      add(rec, field == "dst" and 1 or 0, false)
      if field == "host" then add(rec, 1, true) end
    end
  end
  return groups
end

-- The C rows' key in the plain form.
local function row_key(row, spec)
  local field = spec.by:match("^(%a+)") or spec.by
  if field == "src" or field == "dst" or field == "host" then return row.raw end
  if field == "sport" or field == "dport" then return row.port end
  if field == "proto" then return row.proto end
  return "all"
end

local SPECS = {
  { by = "src" },
  { by = "dst/16", prefix6 = 48 },
  { by = "host/24", prefix6 = 64, distinct = "peer" },
  { by = "host", distinct = "peer_port" },
  { by = "dport", distinct = "src", proto = "udp" },
  { by = "sport", ip_version = 6, distinct = "peer_port" },
  { by = "proto", distinct = "dport" },
  { by = "src", distinct = "dport", proto = "tcp" },
  { by = "dst", distinct = "sport" },
  { by = "all", distinct = "dst" },
}

describe("batch:group and batch:top", function()
  it("equal a plain Lua recount on every slice of a generated trace (" .. TRACE_ARGS .. ")", function()
    local path = run.generated(TRACE_ARGS, "query_spec", pending)
    local eng = assert(sluice.open { read = path, slice = 1 })
    local slices, records, rows_checked, problems = 0, 0, 0, {}
    local function problem(msg)
      if #problems < 10 then problems[#problems + 1] = msg end
    end
    local P = {}
    function P.on_slice(batch)
      slices = slices + 1
      records = records + batch.n
      local results = {}
      -- every query first: earlier results must stay valid while on_slice runs
      for i, spec in ipairs(SPECS) do results[i] = batch:group(spec) end
      for i, spec in ipairs(SPECS) do
        local want, got = plain(batch, spec), results[i]
        local n = 0
        for _ in pairs(want) do n = n + 1 end
        if got.n ~= n then problem(string.format("slice %d %s: %d groups, plain %d", slices, spec.by, got.n, n)) end
        for row in got:rows() do
          rows_checked = rows_checked + 1
          local w = want[row_key(row, spec)]
          if not w then
            problem("slice " .. slices .. " " .. spec.by .. ": group " .. row.label .. " not in the recount")
          elseif w.flows ~= row.flows or w.pf ~= row.pkts_fwd or w.pr ~= row.pkts_rev or
            w.bf ~= row.bytes_fwd or w.br ~= row.bytes_rev or w.distinct ~= row.distinct then
            problem(string.format("slice %d %s %s: flows %d/%d pkts %d/%d %d/%d bytes %d/%d %d/%d distinct %d/%d",
              slices, spec.by, row.label, row.flows, w.flows, row.pkts_fwd, w.pf, row.pkts_rev, w.pr,
              row.bytes_fwd, w.bf, row.bytes_rev, w.br, row.distinct, w.distinct))
          end
        end
      end
      -- top: the k biggest values, biggest first, each group's own sums
      local hosts = plain(batch, { by = "host" })
      local values = {}
      for _, g in pairs(hosts) do values[#values + 1] = g.bf end
      table.sort(values, function(a, b) return a > b end)
      local top = batch:top { by = "host", n = 7, order = "bytes_fwd" }
      if top.n ~= math.min(7, #values) then problem("top: " .. top.n .. " rows") end
      for i = 1, top.n do
        local row = top:get(i)
        if row.bytes_fwd ~= values[i] or hosts[row.raw].bf ~= row.bytes_fwd then
          problem(string.format("slice %d top %d: %s %d, want %d", slices, i, row.label, row.bytes_fwd, values[i]))
        end
      end
    end
    assert(eng:run(P))
    eng:close()
    assert.are.same({}, problems)
    assert(slices >= 3, "the trace spans several slices, got " .. slices)
    assert(records > 10000, "records checked: " .. records)
    assert(rows_checked > records, "rows checked: " .. rows_checked)
  end)

  it("leaves out the flows the policy turned down, and orders rows on request", function()
    local eng = assert(sluice.open { read = run.root .. "/examples/sample.pcap", slice = 5 })
    local turned_down, checked = {}, 0
    local P = {}
    function P.on_flow_start(f)
      if f.dport == 443 then turned_down[f.id] = true; return false end
    end
    function P.on_slice(batch)
      local by_port = batch:group { by = "dport", order = "flows" }
      local want, seen = {}, 0
      for rec in batch:records() do
        assert.is_nil(turned_down[rec.flow_id], "records() leaves turned-down flows out")
        want[rec.dport] = (want[rec.dport] or 0) + 1
      end
      local last = math.huge
      for row in by_port:rows() do
        assert.are_not.equal(443, row.port)
        assert.are.equal(want[row.port], row.flows)
        assert(row.flows <= last, "rows ordered by flows")
        last = row.flows
        seen = seen + 1
      end
      local n = 0
      for _ in pairs(want) do n = n + 1 end
      assert.are.equal(n, seen)
      checked = checked + 1
    end
    assert(eng:run(P))
    eng:close()
    assert(next(turned_down), "the sample has port-443 flows")
    assert(checked >= 3)
  end)

  it("gives rows as fields, text and tables", function()
    local eng = assert(sluice.open { read = run.root .. "/examples/sample.pcap", slice = 5 })
    local done = false
    local P = {}
    function P.on_slice(batch)
      if done then return end
      done = true
      local row = batch:top { by = "src/8", prefix6 = 16, n = 1, order = "pkts" }:get(1)
      assert.is_string(row.addr)
      assert(row.prefix == 8 or row.prefix == 16)
      assert.are.equal(row.addr .. "/" .. row.prefix, row.label)
      assert.are.equal(row.pkts_fwd + row.pkts_rev, row.pkts)
      local t = row:totable()
      assert.are.equal(row.label, t.label)
      assert.are.equal(row.bytes, t.bytes)
      assert.is_nil(t.port)
      local all = batch:group { by = "all" }
      assert.are.equal(1, all.n)
      assert.are.equal("all", all:get(1).label)
      assert.are.equal(batch.n, all:get(1).flows)
      local tcp = batch:group { by = "proto" }
      local names = {}
      for r in tcp:rows() do names[r.proto] = r.proto_num end
      assert.are.equal(6, names.tcp)
      assert.is_nil(batch:group { by = "dport" }:get(0))
      assert.are.same({}, batch:top { by = "src", n = 0 }:totable())
    end
    assert(eng:run(P))
    eng:close()
    assert(done)
  end)

  it("refuses a bad query with a message that says what is allowed", function()
    local eng = assert(sluice.open { read = run.root .. "/examples/sample.pcap", slice = 5 })
    local errors = {}
    local P = {}
    function P.on_slice(batch)
      if #errors > 0 then return end
      for _, bad in ipairs {
        { by = "source" }, { by = "src/33" }, { by = "dport/8" }, { by = "src", prefix6 = 129 },
        { by = "src", distinct = "ports" }, { by = "src", proto = "tcpx" }, { by = "src", ip_version = 5 },
        "src", {},
      } do
        -- not tail calls: a handler's own line is what the errors name
        local ok, err = pcall(function() local g = batch:group(bad); return g end)
        errors[#errors + 1] = not ok and err or "accepted"
      end
      local ok, err = pcall(function() local g = batch:top { by = "src" }; return g end)
      errors[#errors + 1] = not ok and err or "accepted"
      ok, err = pcall(function() batch:group { by = "src" }:top(3, "weight") end)
      errors[#errors + 1] = not ok and err or "accepted"
      for _, args in ipairs { { by = "src", order = "byte" }, { by = "src", n = -1 }, { by = "src", n = "3" } } do
        ok, err = pcall(function() local g = batch:group(args); return g end)
        errors[#errors + 1] = not ok and err or "accepted"
      end
      ok, err = pcall(function() local r = batch:get("x"); return r end)
      errors[#errors + 1] = not ok and err or "accepted"
      -- a misspelt key was ignored; a string that reads as a number
      for _, args in ipairs { { by = "src", ordr = "bytes" }, { by = "src", prefix6 = "48" },
        { by = "src", n = 0 / 0 } } do
        ok, err = pcall(function() local g = batch:group(args); return g end)
        errors[#errors + 1] = not ok and err or "accepted"
      end
    end
    assert(eng:run(P))
    eng:close()
    assert.are.equal(18, #errors)
    for _, e in ipairs(errors) do assert.are_not.equal("accepted", e) end
    assert.matches("one of", errors[1])
    assert.matches("0..32", errors[2])
    assert.matches("prefix", errors[3])
    assert.matches("0..128", errors[4])
    assert.matches("peer_port", errors[5])
    assert.matches("protocol", errors[6])
    assert.matches("4 or 6", errors[7])
    assert.matches("with n", errors[10])
    assert.matches("order must be one of", errors[11])
    assert.matches("order must be one of", errors[12])
    assert.matches("'n' must be a whole number >= 0", errors[13])
    assert.matches("'n' must be a whole number >= 0", errors[14])
    assert.matches("batch:get expects an index", errors[15])
    assert.matches("unknown argument 'ordr'", errors[16])
    assert.matches("'prefix6' must be 0..128, got \"48\"", errors[17], 1, true)
    assert.matches("'n' must be a whole number >= 0", errors[18])
    -- misuse points at the caller, not into the library
    for i, e in ipairs(errors) do
      if i ~= 8 then assert.matches("query_spec%.lua:%d+: ", e) end -- 8: a string, no table
    end
  end)

  it("records give each address a stable integer id, and sluice.addr the address back", function()
    local addr = require "sluice.addr"
    local eng = assert(sluice.open { read = run.root .. "/examples/sample.pcap", slice = 5 })
    local by_raw, by_id, checked = {}, {}, 0
    local P = {}
    local function check(id, raw, text)
      assert.is_number(id)
      assert(id >= 1 and id % 1 == 0)
      if by_raw[raw] then assert.are.equal(by_raw[raw], id) end
      if by_id[id] then assert.are.equal(by_id[id], raw) end
      by_raw[raw], by_id[id] = id, raw
      assert.are.equal(raw, addr.of_id(id))
      assert.are.equal(text, addr.text(addr.of_id(id)))
      checked = checked + 1
    end
    function P.on_flow_start(f) check(f.src_id, f.src_raw, f.src) end
    function P.on_slice(batch)
      for rec in batch:records() do
        check(rec.src_id, rec.src_raw, rec.src)
        check(rec.dst_id, rec.dst_raw, rec.dst)
      end
    end
    assert(eng:run(P))
    eng:close()
    assert(checked > 300, "ids checked: " .. checked)
    local distinct = 0
    for _ in pairs(by_raw) do distinct = distinct + 1 end
    assert(distinct > 50 and distinct < checked, "addresses repeat in the sample")
    assert.is_nil((addr.of_id(1e9)))
  end)

  it("groups by a tag's value (tag:NAME), leaving out flows without it", function()
    local eng = assert(sluice.open { read = run.root .. "/examples/sample.pcap", slice = 5 })
    local function app(dport)
      if dport == 80 or dport == 443 or dport == 8080 then return "web" end
      if dport == 53 then return "dns" end
    end
    local P, checked, tagged_rows = {}, 0, 0
    function P.on_flow_start(f)
      local a = app(f.dport)
      if a then f:tag("app", a) end
      if f.proto == "icmp" then f:tag("app", 1) end -- a number is a value too
    end
    function P.on_slice(batch)
      local want = {}
      for rec in batch:records() do
        local v = rec.proto == "icmp" and 1 or app(rec.dport)
        if v ~= nil then
          local w = want[v] or { flows = 0, bytes = 0, srcs = {}, n = 0 }
          want[v] = w
          w.flows, w.bytes = w.flows + 1, w.bytes + rec.bytes
          if not w.srcs[rec.src] then w.srcs[rec.src] = true; w.n = w.n + 1 end
        end
      end
      local g = batch:group { by = "tag:app", distinct = "src", order = "flows" }
      local n = 0
      for _ in pairs(want) do n = n + 1 end
      assert.are.equal(n, g.n)
      for row in g:rows() do
        local w = want[row.tag]
        assert(w, "group " .. tostring(row.tag))
        assert.are.equal(tostring(row.tag), row.label)
        assert.are.same({ w.flows, w.bytes, w.n }, { row.flows, row.bytes, row.distinct })
        tagged_rows = tagged_rows + 1
      end
      checked = checked + 1
    end
    assert(eng:run(P))
    eng:close()
    assert(checked >= 3 and tagged_rows >= 6, checked .. " slices, " .. tagged_rows .. " rows")
  end)
end)
