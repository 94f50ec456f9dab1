-- examples/fleet/demo.sh end to end: it starts a clickhouse-server of its
-- own, two probes read examples/sample.pcap into one table, and it runs
-- every query of examples/fleet/queries.sql. The numbers must be right,
-- not just present:
--   - exit 0, and every query's heading printed;
--   - traffic per probe (slices): probe-a and probe-b each carry the
--     packets and bytes of `sluice run -r examples/sample.pcap --out json:`
--     (flow lines, both directions);
--   - flows per end reason per probe: each probe's counts equal the JSON's;
--   - every row there once: 1;
--   - traffic by tag: probe-b's policy tagged flows (app=...);
--   - the server is stopped and the temporary directory removed.
-- Without clickhouse-server or curl the test is pending, with the reason
-- written to stderr.
local run = require "support.run"

-- name -> list of rows (each a list of fields), the header row excluded
local function sections(out)
  local secs, cur = {}, nil
  for line in out:gmatch("[^\n]*") do
    local name = line:match("^=== ([%w_]+): ")
    if name then
      cur = { header = nil }
      secs[name] = cur
    elseif cur and line ~= "" and not line:match("^demo%.sh: ") then
      local fields = {}
      for f in (line .. "\t"):gmatch("([^\t]*)\t") do fields[#fields + 1] = f end
      if not cur.header then cur.header = fields else cur[#cur + 1] = fields end
    end
  end
  return secs
end

-- the rows of a section as tables keyed by column name
local function rows(sec)
  local list = {}
  for _, fields in ipairs(sec) do
    local r = {}
    for i, h in ipairs(sec.header) do r[h] = fields[i] end
    list[#list + 1] = r
  end
  return list
end

describe("examples/fleet/demo.sh", function()
  teardown(function()
    run.cleanup()
  end)

  it("puts two probes in one table; the queries give the JSON's numbers", function()
    for _, tool in ipairs({ "clickhouse-server", "curl" }) do
      if not run.have(tool) then
        local why = tool .. " is not installed"
        io.stderr:write("fleet_spec: skipping: ", why, "\n")
        pending(why)
        return
      end
    end

    -- what one probe should have: sluice's own JSON of the same capture
    local jr, recs = run.sluice_json("-r examples/sample.pcap")
    assert.are.equal(0, jr.code, run.describe(jr))
    local flows = run.of_type(recs, "flow")
    assert.is_true(#flows > 0)
    local want_pkts, want_bytes = run.flow_totals(flows)
    local want_reasons = {}
    for _, f in ipairs(flows) do
      want_reasons[f.end_reason] = (want_reasons[f.end_reason] or 0) + 1
    end

    local r = run.sh("examples/fleet/demo.sh")
    assert.are.equal(0, r.code, run.describe(r))
    local secs = sections(r.out)
    for _, name in ipairs({ "per_probe_minute", "top_talkers", "top_dports", "end_reasons",
      "multi_probe_hosts", "rows_once", "by_tag" }) do
      assert(secs[name] and secs[name].header, "no output of query " .. name .. "\n" .. run.describe(r))
    end

    -- traffic per probe (summed over its minutes)
    local got = {}
    for _, row in ipairs(rows(secs.per_probe_minute)) do
      local g = got[row.probe] or { pkts = 0, bytes = 0 }
      g.pkts = g.pkts + tonumber(row.packets)
      g.bytes = g.bytes + tonumber(row.bytes)
      got[row.probe] = g
    end
    assert.are.same({
      ["probe-a"] = { pkts = want_pkts, bytes = want_bytes },
      ["probe-b"] = { pkts = want_pkts, bytes = want_bytes },
    }, got)

    -- flows per end reason, per probe
    local reasons = { ["probe-a"] = {}, ["probe-b"] = {} }
    for _, row in ipairs(rows(secs.end_reasons)) do
      assert(reasons[row.probe], "unknown probe " .. tostring(row.probe))
      reasons[row.probe][row.end_reason] = tonumber(row.flows)
    end
    assert.are.same(want_reasons, reasons["probe-a"])
    assert.are.same(want_reasons, reasons["probe-b"])

    -- every row once
    assert.are.same({ { every_row_once = "1" } }, rows(secs.rows_once))

    -- the same capture twice: the top source was seen by both probes
    local top = rows(secs.multi_probe_hosts)[1]
    assert(top, "no source seen by two probes")
    assert.are.equal("2", top.probes)

    -- probe-b's policy tagged flows
    local tags = rows(secs.by_tag)
    assert.is_true(#tags > 0)
    for _, row in ipairs(tags) do assert.matches("^app=%a+$", row.tag) end

    -- cleaned up after itself
    local tmp = r.out:match("%(in (/[^)]+)%)")
    assert(tmp, "demo.sh did not print its directory")
    assert.is_false(run.exists(tmp .. "/config.xml"), tmp .. " was not removed")
  end)
end)
