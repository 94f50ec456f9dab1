-- Inputs that are not a seekable pcap file (issue 12): standard input
-- (`-r -`), /dev/stdin, a FIFO, process substitution, and captures
-- compressed with gzip, zstd, xz or lz4, recognised by their first bytes
-- (the file names here say nothing). Each gives the JSON lines that the
-- plain file gives; damaged compressed input ends like a truncated
-- capture: every flow before the damage, an error naming the input, exit 1.
local run = require "support.run"

local SLUICE, q = run.SLUICE, run.q
local SAMPLE = run.root .. "/examples/sample.pcap"
-- Each run is bounded, so a reader that waits forever fails (exit 124).
local LIMIT = "timeout -k 10 300 "

-- compressor command (to stdout) by format
local COMPRESS = {
  gzip = "gzip -c", zstd = "zstd -q -c", xz = "xz -c", lz4 = "lz4 -q -c",
}
local FORMATS = { "gzip", "zstd", "xz", "lz4" }

-- The sorted output lines of `sluice run` with input given by the shell
-- words before (a pipe into it, "") and the -r argument.
local function lines_of(before, read_arg, shell)
  local dir = run.tmpdir()
  local out = dir .. "/out.json"
  local cmd = string.format("%s%s%s run -r %s -q --out json:%s", before, LIMIT, SLUICE,
    read_arg, q(out))
  if shell == "bash" then cmd = "bash -c " .. q(cmd) end
  local r = run.sh(cmd)
  local lines = {}
  for line in (run.slurp(out) or ""):gmatch("[^\n]+") do lines[#lines + 1] = line end
  table.sort(lines)
  return r, lines
end

local reference
local function sample_lines()
  if not reference then
    local r, lines = lines_of("", q(SAMPLE))
    assert(r.code == 0, run.describe(r))
    assert(#lines > 100, "the sample gives flows")
    reference = lines
  end
  return reference
end

-- The run succeeded and wrote exactly the lines of the plain file.
local function same_as_file(r, lines, want)
  assert(r.code == 0, run.describe(r))
  assert.are.equal(#(want or sample_lines()), #lines, "line count")
  assert.are.same(want or sample_lines(), lines)
end

-- A compressed copy of the sample in dir, under a name without a
-- suffix; nil when the tool is missing (the test is then pending).
local function compressed(fmt, dir)
  local tool = COMPRESS[fmt]:match("^%S+")
  if not run.have(tool) then
    io.stderr:write("inputs_spec: ", tool, " is not installed: ", fmt, " tests skipped\n")
    return nil, tool .. " is not installed"
  end
  local path = dir .. "/sample-" .. fmt .. ".bin"
  local r = run.sh(run.PLAIN .. COMPRESS[fmt] .. " " .. q(SAMPLE) .. " > " .. q(path))
  assert(r.code == 0, run.describe(r))
  return path
end

describe("stdin and pipes", function()
  teardown(run.cleanup)

  it("cat x.pcap | sluice run -r - gives the lines of -r x.pcap", function()
    same_as_file(lines_of("cat " .. q(SAMPLE) .. " | ", "-"))
  end)

  it("-r /dev/stdin", function()
    same_as_file(lines_of("cat " .. q(SAMPLE) .. " | ", "/dev/stdin"))
  end)

  it("a redirected regular file on stdin", function()
    same_as_file(lines_of("", "- < " .. q(SAMPLE)))
  end)

  it("a FIFO", function()
    local dir = run.tmpdir()
    local fifo = dir .. "/fifo"
    assert(run.sh("mkfifo " .. q(fifo)).code == 0)
    same_as_file(lines_of("cat " .. q(SAMPLE) .. " > " .. q(fifo) .. " & ", q(fifo)))
  end)

  it("process substitution <(cat ...) in bash", function()
    if not run.have("bash") then pending("bash is not installed") return end
    same_as_file(lines_of("", "<(cat " .. q(SAMPLE) .. ")", "bash"))
  end)

  it("pcapng on stdin", function()
    if not run.have("editcap") then
      io.stderr:write("inputs_spec: editcap (tshark's package) is not installed: pcapng skipped\n")
      pending("editcap is not installed")
      return
    end
    local dir = run.tmpdir()
    local ng = dir .. "/sample.pcapng"
    local r = run.sh(run.PLAIN .. "editcap -F pcapng " .. q(SAMPLE) .. " " .. q(ng))
    assert(r.code == 0, run.describe(r))
    local r1, want = lines_of("", q(ng))
    assert(r1.code == 0, run.describe(r1))
    assert.are.same(sample_lines(), want, "the pcapng file gives the pcap's lines")
    same_as_file(lines_of("cat " .. q(ng) .. " | ", "-"))
  end)

  it("an empty stdin is not a capture, named stdin", function()
    local r = run.sh(SLUICE .. " run -r - -q --out json:/dev/null < /dev/null")
    assert.are.equal(1, r.code, run.describe(r))
    assert.truthy(r.err:find("stdin: not a pcap/pcapng file", 1, true), r.err)
  end)
end)

describe("compressed captures", function()
  teardown(run.cleanup)

  for _, fmt in ipairs(FORMATS) do
    it(fmt .. ": a file, recognised by its magic bytes", function()
      local path, why = compressed(fmt, run.tmpdir())
      if not path then pending(why) return end
      same_as_file(lines_of("", q(path)))
    end)

    it(fmt .. ": on stdin", function()
      local path, why = compressed(fmt, run.tmpdir())
      if not path then pending(why) return end
      same_as_file(lines_of("cat " .. q(path) .. " | ", "-"))
    end)
  end

  it("a truncated .gz: the flows before the damage, an error naming the file, exit 1", function()
    local dir = run.tmpdir()
    local gz = compressed("gzip", dir)
    if not gz then pending("gzip is not installed") return end
    local cut = dir .. "/cut.pcap.gz"
    local size = #run.slurp(gz)
    run.spit(cut, run.slurp(gz):sub(1, math.floor(size / 2)))
    local all = run.decode_lines(table.concat(sample_lines(), "\n"))
    for _, read in ipairs { q(cut), "- < " .. q(cut) } do
      local r, lines = lines_of("", read)
      assert.are.equal(1, r.code, run.describe(r))
      local name = read == q(cut) and cut or "stdin"
      assert.truthy(r.err:find(name .. ": compressed data ends early", 1, true), r.err)
      -- flows before the damage: each one of the whole capture's flows,
      -- started at the same time, with no more packets
      assert(#lines > 10 and #lines < #all, #lines .. " of " .. #all .. " flows")
      local by_key = {}
      for _, f in ipairs(all) do
        by_key[table.concat({ f.proto, f.src, f.sport, f.dst, f.dport, f.first }, "|")] = f
      end
      for _, f in ipairs(run.decode_lines(table.concat(lines, "\n"))) do
        local whole = by_key[table.concat({ f.proto, f.src, f.sport, f.dst, f.dport, f.first }, "|")]
        assert(whole, "a flow of the whole capture: " .. f.src .. " " .. f.dst)
        assert(f.pkts_fwd + f.pkts_rev <= whole.pkts_fwd + whole.pkts_rev)
      end
    end
  end)

  it("corrupt .gz data: an error naming the file, exit 1", function()
    local dir = run.tmpdir()
    local gz = compressed("gzip", dir)
    if not gz then pending("gzip is not installed") return end
    local data = run.slurp(gz)
    local bad = dir .. "/bad.pcap.gz"
    -- the CRC of the trailer: every byte decodes, the check fails
    run.spit(bad, data:sub(1, #data - 8) .. string.char((data:byte(#data - 7) + 1) % 256) ..
      data:sub(#data - 6))
    local r, lines = lines_of("", q(bad))
    assert.are.equal(1, r.code, run.describe(r))
    assert.truthy(r.err:find(bad .. ": compressed data is corrupt", 1, true), r.err)
    assert.are.equal(#sample_lines(), #lines, "every flow reported")
  end)

  it("a generated trace of 600k packets through gzip -1 | sluice run -r -", function()
    if not run.have("gzip") then pending("gzip is not installed") return end
    local path, truth = run.generated("-n 600000 -c 6000 -s 12", "inputs_spec", pending)
    assert.are.equal(600000, truth.packets)
    local r, lines = lines_of(run.PLAIN .. "gzip -1 -c " .. q(path) .. " | ", "-")
    assert(r.code == 0, run.describe(r))
    local flows, pkts = 0, 0
    for _, f in ipairs(run.decode_lines(table.concat(lines, "\n"))) do
      if f.type == "flow" then
        flows = flows + 1
        pkts = pkts + f.pkts_fwd + f.pkts_rev
      end
    end
    assert.are.equal(truth.flows, flows, "flow count")
    assert.are.equal(truth.packets, pkts, "packets")
  end)
end)

describe("the progress of a stream", function()
  local report = require "sluice.report"
  local core = require "sluice.core"

  local function stream()
    local buf = {}
    return { write = function(self, ...) for _, s in ipairs { ... } do buf[#buf + 1] = s end end,
      flush = function() end, text = function() return table.concat(buf) end }
  end

  it("shows the bytes read, not a percentage of an unknown size", function()
    local eng = { cstats = { packets = 1000, foreign = 0, flows_active = 3 }, current_file = function() end }
    function eng.progress() return nil, 12345678 end
    local s = stream()
    report.progress_line(eng, core.monotonic() - 1, s)
    assert.truthy(s.text():match("^\r1000 packets  12%.3 MB read  [%d.]+ Mpps  3 flows active $"),
      s.text())
  end)

  it("a stream's engine reports bytes read and no fraction", function()
    local sluice = require "sluice"
    local dir = run.tmpdir()
    local fifo = dir .. "/f"
    assert(run.sh("mkfifo " .. q(fifo) .. " && (cat " .. q(SAMPLE) .. " > " .. q(fifo) ..
      " &)").code == 0)
    local eng = assert(sluice.open { read = fifo })
    assert(eng:run({ info = { name = "nothing" } }, nil, { emit = function() end }))
    local frac, pos = eng:progress()
    assert.is_nil(frac)
    assert.are.equal(#run.slurp(SAMPLE), pos)
    eng:close()
  end)
end)
