-- Write errors of file sinks (issue 11): a full device, a file size limit
-- (`ulimit -f`, as a full disk gives a short write at a chosen size), a
-- full filesystem (a small tmpfs, when one can be mounted) with and without
-- --rotate, and a generated trace at a realistic size. Every record that
-- did not reach the file is a failed drop in the report, `written` is what
-- is in the file, the error is told once with its path, a JSON file ends
-- with a whole line and a pcap file with a whole record, and a full disk
-- leaves no empty rotated files.
local run = require "support.run"
local sluice = require "sluice"
local core = require "sluice.core"

local SAMPLE = run.root .. "/examples/sample.pcap"
local TRUTH = run.decode(run.slurp(run.root .. "/spec/fixtures/sample.truth.json"))

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

local function count(s, needle)
  local n, at = 0, 1
  while true do
    local i = s:find(needle, at, true)
    if not i then return n end
    n, at = n + 1, i + #needle
  end
end

-- The report line of a sink: written, dropped, failed (or nil).
local function sink_line(err, name)
  local pat = "sink " .. name:gsub("%p", "%%%0") ..
    ": written (%d+) dropped (%d+) %(lagging %d+, failed (%d+),"
  local w, d, f = err:match(pat)
  if not w then return nil end
  return tonumber(w), tonumber(d), tonumber(f)
end

-- `sluice run ARGS` with the file size limit at blocks (512 bytes each).
local function limited(blocks, args)
  return run.sh("ulimit -f " .. blocks .. "; exec " .. run.SLUICE .. " run " .. args)
end

-- A JSON lines file: every line whole and decodable; returns the count.
local function json_lines(path)
  local data = run.slurp(path)
  assert(data, "cannot read " .. path)
  if #data == 0 then return 0 end
  assert.equal("\n", data:sub(-1), path .. " ends in a half line")
  local n = 0
  for line in data:gmatch("([^\n]*)\n") do
    n = n + 1
    local ok, err = pcall(run.decode, line)
    assert(ok, path .. ": line " .. n .. " is broken: " .. tostring(err))
  end
  return n
end

-- A classic pcap file made of whole records only; returns how many.
local function pcap_whole(path)
  local data = run.slurp(path)
  assert(data, "cannot read " .. path)
  if #data == 0 then return 0 end
  local recs = run.pcap_records(data)
  local last = recs[#recs]
  assert.equal(#data, last and (last.offset + last.len) or 24, path .. " ends in a half record")
  return #recs
end

-- The error is on stderr once, naming the path.
local function told_once(r, text)
  assert.equal(1, count(r.err, text), "expected '" .. text .. "' once on stderr\n" .. run.describe(r))
end

-- Not killed (SIGXFSZ, a crash): the run reached its report.
local function finished(r)
  assert(r.code >= 0 and r.code < 128, "the run died\n" .. run.describe(r))
end

-- A tmpfs of the given size on a fresh directory, or nil and why not.
local function mount_tmpfs(size)
  local dir = run.tmpdir()
  local r = run.sh(run.PLAIN .. "mount -t tmpfs -o size=" .. size .. " tmpfs " .. run.q(dir) .. " 2>&1")
  if r.code ~= 0 then
    return nil, "cannot mount a tmpfs (root only): " .. (r.out .. r.err):gsub("%s+$", "")
  end
  return dir
end

-- Lazily if need be: a failed test may leave a file open there.
local function unmount(dir)
  local r = run.sh(run.PLAIN .. "umount " .. run.q(dir))
  if r.code ~= 0 then run.sh(run.PLAIN .. "umount -l " .. run.q(dir)) end
end

local function files_in(dir)
  local list = {}
  local h = io.popen("ls -1 " .. run.q(dir))
  for name in h:lines() do list[#list + 1] = dir .. "/" .. name end
  h:close()
  return list
end

describe("file sink write errors", function()
  teardown(run.cleanup)

  it("json:/dev/full: every flow is a failed drop, the error told once with the path", function()
    local r = run.sh(run.SLUICE .. " run -r " .. run.q(SAMPLE) .. " --out json:/dev/full")
    finished(r)
    assert(has(r.err, "sink json:/dev/full: written 0 dropped " .. TRUTH.flows .. " (lagging 0, failed " ..
      TRUTH.flows .. ","), run.describe(r))
    told_once(r, "/dev/full: No space left on device")
  end)

  -- each worker told it in the same words: two identical lines
  it("json:/dev/full with --workers 2: each worker tells its error once, naming itself", function()
    local r = run.sh(run.SLUICE .. " run -r " .. run.q(SAMPLE) .. " --workers 2 --out json:/dev/full")
    finished(r)
    for w = 0, 1 do
      told_once(r, "worker " .. w .. " of 2: sink json:/dev/full: cannot write /dev/full: No space left on device")
    end
  end)

  it("pcap:/dev/full: every packet is a failed drop, the error told once with the path", function()
    local r = run.sh(run.SLUICE .. " run -r " .. run.q(SAMPLE) .. " --out pcap:/dev/full")
    finished(r)
    assert(has(r.err, "sink pcap:/dev/full: written 0 dropped " .. TRUTH.packets .. " (lagging 0, failed " ..
      TRUTH.packets .. ","), run.describe(r))
    told_once(r, "/dev/full: No space left on device")
    -- not even the file header reached it (it said bytes=24)
    assert(has(r.err, "(bytes=0 errors=" .. TRUTH.packets .. " packets=0)"), run.describe(r))
  end)

  it("a file size limit: the JSON file ends with a whole line, the rest is counted", function()
    local path = run.tmpdir() .. "/out.json"
    local r = limited(20, "-r " .. run.q(SAMPLE) .. " --out json:" .. run.q(path))
    finished(r)
    local w, d, f = sink_line(r.err, "json:" .. path)
    assert(w, "no report line for the sink\n" .. run.describe(r))
    assert(f > 0 and w > 0, run.describe(r))
    assert.equal(d, f)
    assert.equal(TRUTH.flows, w + f)
    assert.equal(w, json_lines(path))
    assert(#run.slurp(path) <= 20 * 512)
    told_once(r, path .. ": File too large")
  end)

  it("a file size limit: the pcap file ends with a whole record, the rest is counted", function()
    local path = run.tmpdir() .. "/out.pcap"
    local r = limited(200, "-r " .. run.q(SAMPLE) .. " --out pcap:" .. run.q(path))
    finished(r)
    local w, d, f = sink_line(r.err, "pcap:" .. path)
    assert(w, "no report line for the sink\n" .. run.describe(r))
    assert(f > 0 and w > 0, run.describe(r))
    assert.equal(d, f)
    assert.equal(TRUTH.packets, w + f)
    assert.equal(w, pcap_whole(path))
    told_once(r, path .. ": File too large")
  end)

  it("--rotate past a file size limit: no rotated files, whole lines, the rest counted", function()
    local dir = run.tmpdir()
    local path = dir .. "/out.json"
    -- each file may hold 4 KiB; rotation would come at 8 KiB
    local r = limited(8, "-r " .. run.q(SAMPLE) .. " --rotate 8K --out json:" .. run.q(path))
    finished(r)
    local w, _, f = sink_line(r.err, "json:" .. path)
    assert(w and f > 0, run.describe(r))
    assert.equal(TRUTH.flows, w + f)
    local files = files_in(dir)
    assert.same({ path }, files)
    assert.equal(w, json_lines(path))
    told_once(r, path .. ": File too large")
  end)

  describe("on a full filesystem (a small tmpfs)", function()
    local function with_tmpfs(size, fn)
      local dir, why = mount_tmpfs(size)
      if not dir then
        io.stderr:write("sink_errors_spec: skipped: ", why, "\n")
        pending(why)
        return
      end
      finally(function() unmount(dir) end)
      fn(dir)
    end

    it("json: whole lines only, written is what is in the file", function()
      with_tmpfs("16k", function(dir)
        local path = dir .. "/out.json"
        local r = run.sh(run.SLUICE .. " run -r " .. run.q(SAMPLE) .. " --out json:" .. run.q(path))
        finished(r)
        local w, _, f = sink_line(r.err, "json:" .. path)
        assert(w and f > 0, run.describe(r))
        assert.equal(TRUTH.flows, w + f)
        assert.equal(w, json_lines(path))
        told_once(r, path .. ": No space left on device")
      end)
    end)

    it("--rotate: no empty rotated files, every line whole, losses counted and told", function()
      with_tmpfs("32k", function(dir)
        local path = dir .. "/out.json"
        local r = run.sh(run.SLUICE .. " run -r " .. run.q(SAMPLE) .. " --rotate 8K --out json:" .. run.q(path))
        finished(r)
        local w, _, f = sink_line(r.err, "json:" .. path)
        assert(w and f > 0, run.describe(r))
        assert.equal(TRUTH.flows, w + f)
        local files, lines = files_in(dir), 0
        assert(#files >= 2, "expected rotated files, got " .. #files)
        for _, p in ipairs(files) do
          local n = json_lines(p)
          assert(n > 0, p .. " is empty")
          lines = lines + n
        end
        assert.equal(w, lines)
        told_once(r, path .. ": No space left on device")
      end)
    end)

    -- workers share the file: whichever finds it due rotated it, empty
    -- or not, and most of the files were empty
    it("--rotate with --workers 2: no empty rotated files, every line whole, losses counted", function()
      with_tmpfs("32k", function(dir)
        local path = dir .. "/out.json"
        local r = run.sh(run.SLUICE .. " run -r " .. run.q(SAMPLE) .. " --workers 2 --rotate 8K --out json:" ..
          run.q(path))
        finished(r)
        local w, _, f = sink_line(r.err, "json:" .. path)
        assert(w and f > 0, run.describe(r))
        assert.equal(TRUTH.flows, w + f)
        local lines = 0
        for _, p in ipairs(files_in(dir)) do
          local n = json_lines(p)
          assert(n > 0 or p == path, p .. " is empty")
          lines = lines + n
        end
        assert.equal(w, lines)
      end)
    end)

    it("pcap: whole records only, written is what is in the file", function()
      with_tmpfs("64k", function(dir)
        local path = dir .. "/out.pcap"
        local r = run.sh(run.SLUICE .. " run -r " .. run.q(SAMPLE) .. " --out pcap:" .. run.q(path))
        finished(r)
        local w, _, f = sink_line(r.err, "pcap:" .. path)
        assert(w and f > 0, run.describe(r))
        assert.equal(TRUTH.packets, w + f)
        assert.equal(w, pcap_whole(path))
        told_once(r, path .. ": No space left on device")
      end)
    end)
  end)

  it("a generated trace at a realistic size: written + failed = flows, lines = written", function()
    local trace = run.generated("-n 600000 -c 20000 -r 20000", "sink_errors_spec", pending)
    local path = run.tmpdir() .. "/big.json"
    -- 4 MiB: a few of the writer's 1 MiB buffers, then short writes
    local r = limited(8192, "-r " .. run.q(trace) .. " -v -q --out json:" .. run.q(path))
    finished(r)
    local ended = tonumber(r.err:match("\nflows %d+ ended (%d+)"))
    assert(ended and ended > 40000, run.describe(r))
    local w, _, f = sink_line(r.err, "json:" .. path)
    assert(w and w > 0 and f > 0, run.describe(r))
    assert.equal(ended, w + f)
    assert.equal(w, json_lines(path))
    told_once(r, path .. ": File too large")
  end)

  it("a generated trace to pcap past a size limit: written + failed = packets", function()
    local trace = run.generated("-n 600000 -c 20000 -r 20000", "sink_errors_spec", pending)
    local path = run.tmpdir() .. "/big.pcap"
    local r = limited(8192, "-r " .. run.q(trace) .. " -v -q --out pcap:" .. run.q(path))
    finished(r)
    local packets = tonumber(r.err:match("^packets (%d+)") or r.err:match("\npackets (%d+)"))
    assert.equal(600000, packets)
    local w, _, f = sink_line(r.err, "pcap:" .. path)
    assert(w and w > 0 and f > 0, run.describe(r))
    assert.equal(packets, w + f)
    assert.equal(w, pcap_whole(path))
  end)
end)

describe("JSON sink rotation that fails", function()
  teardown(run.cleanup)

  local line = { pad = string.rep("x", 100) }

  it("a rename that fails loses nothing: the sink goes on in its file and counts it", function()
    local sub = run.tmpdir() .. "/sub"
    os.execute("mkdir " .. run.q(sub))
    local s = assert(sluice.sink.json { path = sub .. "/x.json", rotate = "1K" })
    for _ = 1, 5 do assert(s:write(line)) end
    -- the directory goes: the rename of a rotation fails
    os.execute("rm -rf " .. run.q(sub))
    for _ = 1, 20 do assert(s:write(line)) end
    local written, lost, err = s:settle()
    assert.equal(25, written)
    assert.equal(0, lost)
    assert.matches("cannot rotate", err)
    assert.equal(1, s:counts().rotation_errors, "tried once within the retry interval")
    assert(s:close())
  end)

  it("a new file that cannot be created: back in the current file, tried again a second later", function()
    local dir, why = mount_tmpfs("1m,nr_inodes=3") -- the root, the sink's file, one more
    if not dir then
      io.stderr:write("sink_errors_spec: skipped: ", why, "\n")
      pending(why)
      return
    end
    local path = dir .. "/x.json"
    local s = assert(sluice.sink.json { path = path, rotate = "1K" })
    finally(function()
      s:close()
      unmount(dir)
    end)
    run.spit(dir .. "/filler", "x") -- no inode left for a new file
    for _ = 1, 25 do assert(s:write(line)) end
    local written, lost, err = s:settle()
    assert.equal(25, written)
    assert.equal(0, lost)
    assert.matches("cannot create " .. path:gsub("%p", "%%%0"), err)
    assert.equal(1, s:counts().rotation_errors)
    assert.same({ dir .. "/filler", path }, files_in(dir), "renamed back, nothing else left")
    assert(s:flush())
    assert.equal(25, json_lines(path))
    -- room again: a second later the rotation goes through
    os.remove(dir .. "/filler")
    local t = core.monotonic() + 1.1
    while core.monotonic() < t do os.execute("sleep 0.1") end
    for _ = 1, 5 do assert(s:write(line)) end
    assert(s:close())
    assert.equal(1, s:counts().rotations)
    assert.equal(30, json_lines(path .. ".1") + json_lines(path))
    assert.equal(0, select(2, s:settle()))
  end)
end)

-- Opening a sink (finding C9): a file that cannot be opened is named once,
-- a misspelled option is refused at its caller's line, naming the known ones.
describe("opening sinks", function()
  teardown(run.cleanup)

  it("a file that cannot be created: the error names it, the command line says it once", function()
    local bad = "/nonexistent/dir/x"
    local sink, err = sluice.sink.json { path = bad .. ".json" }
    assert.is_nil(sink)
    assert.equal(bad .. ".json: No such file or directory", err)
    sink, err = sluice.sink.pcap { path = bad .. ".pcap" }
    assert.is_nil(sink)
    assert.equal(bad .. ".pcap: No such file or directory", err)
    for _, kind in ipairs { "json", "pcap" } do
      local path = bad .. "." .. kind
      local r = run.sh(run.SLUICE .. " run -r " .. run.q(SAMPLE) .. " --out " .. kind .. ":" .. path)
      assert.equal(1, r.code, run.describe(r))
      assert.equal("sluice: cannot open " .. path .. ": No such file or directory\n", r.err)
    end
  end)

  it("an unknown option is refused at the caller's line, naming it and the known ones", function()
    local dir = run.tmpdir()
    for _, case in ipairs {
      { "json", { path = dir .. "/a.json", rotation = "1h" }, "rotation",
        "append, line_buffered, path, queue, rotate, rotate_follow, shared, socket" },
      { "pcap", { path = dir .. "/a.pcap", snap_len = 96 }, "snap_len", "linktype, path, queue, snaplen" },
      { "ipfix", { collector = "127.0.0.1:4739", rates = 5 }, "rates",
        "collector, domain, features, flush_interval, max_bytes, messages, queue, rate, " ..
        "template_refresh, transport" },
    } do
      local ok, err = pcall(function() sluice.sink[case[1]](case[2]) end)
      assert.is_false(ok, case[1])
      assert.matches("^[^:]*sink_errors_spec%.lua:%d+: sluice%.sink%." .. case[1] .. ": unknown option '" ..
        case[3] .. "' %(known: " .. case[4]:gsub("%p", "%%%0") .. "%)$", err)
    end
    assert.is_false(run.exists(dir .. "/a.json"), "nothing created")
    -- every option the README and the command line give is known
    local s = assert(sluice.sink.json { path = dir .. "/b.json", append = true, line_buffered = true,
      rotate = "1h", shared = false, queue = 10 })
    s:close()
    s = assert(sluice.sink.pcap { path = dir .. "/b.pcap", snaplen = 96, linktype = 1, queue = 10 })
    assert.equal(10, s.queue)
    s:close()
  end)
end)
