-- Policy snapshots (--state FILE): the file format (sluice.state), the
-- snapshots of a run (sluice.snapshots) with hand-made policies, and the
-- same end to end through the CLI: entries of policies not in the run are
-- kept, keys are info.name, table snapshots round-trip as JSON with every
-- integer up to 2^53, what cannot be stored fails before any data, and bad
-- files and entries are refused naming the policy and the file.
local ffi = require "ffi"
local run = require "support.run"
local state = require "sluice.state"
local snapshots = require "sluice.snapshots"

local SAMPLE = run.root .. "/examples/sample.pcap"
local SAMPLE_FLOWS = 161 -- ended flows in examples/sample.pcap

local function has(s, needle)
  return type(s) == "string" and s:find(needle, 1, true) ~= nil
end

local function assert_has(s, needle)
  assert(has(s, needle), string.format("expected %q in:\n%s", needle, tostring(s)))
end

-- A policy instance as sluice.policy makes them.
local function inst(name, P)
  return { P = P, name = name, opts = {} }
end

-- A hand-made policy: snapshot() returns value(), restore records what it
-- got in got.restored (and got.count how often it ran).
local function policy(info_name, value)
  local got = { count = 0 }
  local P = { info = info_name and { name = info_name } or nil }
  function P.snapshot() return value() end
  function P.restore(v)
    got.restored, got.count = v, got.count + 1
  end
  return P, got
end

-- What the runner's call() does, for save(): errors caught; an abort
-- raises, with skip it is counted and nil returned.
local function fake_call(list, faults, skip)
  return function(k, hname, fn, ...)
    local ok, res = pcall(fn, ...)
    if ok then return res end
    faults[#faults + 1] = { policy = list[k].name, handler = hname, err = res }
    if not skip then error("ABORT: policy " .. list[k].name .. ": " .. hname .. " failed: " .. res, 0) end
  end
end

-- A fresh run: the snapshots of list in path, restored.
local function restored(list, path)
  local snap = snapshots.new(list, path)
  local ok, err = snap:restore()
  assert(ok, err)
  return snap
end

local NUMBERS = { 0, 1, -1, 2^53, -2^53, 2^53 - 1, 2^53 - 2, 123456789012345, 99999999999999999,
  4503599627370497, 0.1 + 0.2, 1 / 3, 5e-324, 1.7976931348623157e308, 1e21, 1e-7, 2^63, 1e100 }

describe("policy snapshots", function()
  teardown(run.cleanup)

  describe("the state file (sluice.state)", function()
    it("keeps string and table entries, under any name", function()
      local names = { "plain", "with space", "new\nline", "per%cent", "end", "x#2", "dé" }
      local entries, want = {}, {}
      for i, name in ipairs(names) do
        local data = i % 2 == 0 and { n = i, list = { "a", true, i / 7 } } or ("bytes\n" .. i .. "\0\255")
        entries[i], want[name] = { name = name, data = data }, data
      end
      local text = state.encode(entries)
      assert.equal("sluice-state 2\n", text:sub(1, 15))
      assert.same(want, assert(state.decode(text)))
      local path = run.spit(run.tmpdir() .. "/s", text)
      assert.same(want, assert(state.load(path)))
    end)

    it("keeps every integer up to 2^53 and every double exactly (lua-cjson alone keeps 14 digits)", function()
      local t = { list = {}, neg_zero = -0.0 }
      for i, n in ipairs(NUMBERS) do t.list[i] = n end
      -- random integers over the whole range, and random doubles
      math.randomseed(53)
      for _ = 1, 500 do
        t.list[#t.list + 1] = math.floor(math.random() * 2^53) * (math.random() < 0.5 and -1 or 1)
        t.list[#t.list + 1] = (math.random() - 0.5) * 10 ^ math.random(-300, 300)
      end
      local back = assert(state.decode(state.encode { { name = "n", data = t } })).n
      assert.equal(#t.list, #back.list)
      for i, n in ipairs(t.list) do
        assert(back.list[i] == n, string.format("number %d: %.17g came back as %.17g", i, n, back.list[i]))
      end
      assert.equal(-math.huge, 1 / back.neg_zero, "-0 keeps its sign")
      -- integers are written as integers, not 9.007199254741e+15
      assert_has(assert(state.to_json { 2^53, -2^53 }), "[9007199254740992,-9007199254740992]")
    end)

    it("keeps strings inside tables byte for byte", function()
      local bytes = {}
      for b = 0, 255 do bytes[#bytes + 1] = string.char(b) end
      local s = table.concat(bytes)
      local back = assert(state.decode(state.encode { { name = "b", data = { s = s, [s] = "key" } } })).b
      assert.equal(s, back.s)
      assert.equal("key", back[s])
    end)

    it("refuses tables JSON cannot hold, saying what and where", function()
      local cyc = {}
      cyc.again = { cyc }
      local deep, c = {}, nil
      c = deep
      for _ = 1, 1000 do c[1] = {} c = c[1] end
      local cases = {
        { { hosts = { { cb = print } } }, "a function at snapshot.hosts[1].cb" },
        { { f = io.stdout }, "a userdata at snapshot.f" },
        { { x = ffi.new("int[1]") }, "a cdata at snapshot.x" },
        { { co = coroutine.create(print) }, "a thread at snapshot.co" },
        { cyc, "a cycle at snapshot.again[1]" },
        { { 1, 2, x = 3 }, "both string and number keys at snapshot" },
        { { a = { [1] = 1, [3] = 3 } }, "a list with holes at snapshot.a" },
        { { [0] = "zero" }, "a number key (0) at snapshot" },
        { { [1.5] = 1 }, "a number key (1.5) at snapshot" },
        { { [true] = 1 }, "a boolean key (true) at snapshot" },
        { { ["odd key"] = { 0 / 0 } }, 'the number nan at snapshot["odd key"][1]' },
        { { v = math.huge }, "the number inf at snapshot.v" },
        { { o = setmetatable({}, {}) }, "a table with a metatable at snapshot.o" },
        { deep, "tables nested deeper than 1000 at snapshot[1][1]" },
      }
      for _, case in ipairs(cases) do
        local json, err = state.to_json(case[1])
        assert.is_nil(json)
        assert_has(err, case[2])
      end
      -- 1000 tables deep (the limit) is fine, and reads back
      c = deep
      for _ = 1, 999 do c = c[1] end
      c[1] = nil
      assert.is_table(state.from_json(assert(state.to_json(deep))))
    end)

    it("refuses a damaged file, a foreign file, a newer version and a bad entry", function()
      local text = state.encode { { name = "a", data = "xyz" }, { name = "b", data = { 1, 2 } } }
      for cut = 0, #text - 1 do
        assert.is_nil(state.parse(text:sub(1, cut)), "a file cut at " .. cut .. " is refused")
      end
      assert.is_nil(state.parse(text .. "x"))
      assert.is_nil(state.parse(text:gsub("xyz", "xyzw"))) -- length no longer matches
      local dir = run.tmpdir()
      local function load(data) return state.load(run.spit(dir .. "/s", data)) end
      local t, err = load(text:sub(1, -3))
      assert.is_nil(t)
      assert.equal("state file " .. dir .. "/s is damaged or incomplete", err)
      t, err = load("{\"not\": \"a state file\"}\n")
      assert.is_nil(t)
      assert.equal("state file " .. dir .. "/s is not a sluice state file", err)
      t, err = load("sluice-state 3\nend 0\n")
      assert.is_nil(t)
      assert_has(err, "state file " .. dir .. "/s has format version 3")
      t, err = load("sluice-state 2\ntop json 6\n{\"a\":1\nend 1\n")
      assert.is_nil(t)
      assert_has(err, "state file " .. dir .. "/s: entry for policy top: bad JSON")
      t, err = load("sluice-state 2\ntop yaml 3\na: \nend 1\n")
      assert.is_nil(t)
      assert_has(err, "state file " .. dir .. "/s: entry for policy top: unknown kind 'yaml'")
      assert.same({}, assert(state.load(dir .. "/absent")), "no file yet: no entries")
    end)

    it("reads version 1 files", function()
      local v1 = "sluice-state 1\ncounter 8\nflows=12\nother 0\n\nend 2\n"
      local doc = assert(state.parse(v1))
      assert.equal(1, doc.version)
      assert.same({ counter = { kind = "v1", raw = "flows=12" }, other = { kind = "v1", raw = "" } },
        doc.entries)
      assert.same({ counter = "flows=12", other = "" }, assert(state.decode(v1)))
      assert.is_nil(state.parse("sluice-state 1\ncounter 99\nshort"))
    end)

    it("keeps a policy named end (the terminator's word), in version 1 and 2 files", function()
      local v1 = "sluice-state 1\nend 3\n161\nend 1\n"
      assert.same({ ["end"] = "161" }, assert(state.decode(v1)))
      local v2 = state.encode { { name = "end", data = "161" }, { name = "a", data = { n = 1 } } }
      assert.same({ ["end"] = "161", a = { n = 1 } }, assert(state.decode(v2)))
    end)

    it("takes only a regular file or nothing: a directory, a device, a FIFO are one-line errors", function()
      local dir = run.tmpdir()
      local doc, err = state.read(dir)
      assert.is_nil(doc)
      assert.equal("state file " .. dir .. " is a directory", err)
      doc, err = state.read("/dev/full")
      assert.is_nil(doc)
      assert.equal("state file /dev/full is not a regular file (a device, FIFO or socket)", err)
      assert.equal(0, os.execute("mkfifo " .. run.q(dir .. "/fifo")))
      doc, err = state.read(dir .. "/fifo")
      assert.is_nil(doc)
      assert_has(err, "is not a regular file")
    end)

    it("saves atomically: no temporary file left, an unwritable place is an error", function()
      local dir = run.tmpdir()
      assert(state.save(dir .. "/s", { { name = "a", data = "1" } }))
      assert(state.save(dir .. "/s", { { name = "a", data = "2" } }))
      assert.same({ a = "2" }, state.load(dir .. "/s"))
      assert.is_false(run.exists(dir .. "/s.tmp"))
      local ok, err = state.save(dir .. "/no/such/dir/s", { { name = "a", data = "1" } })
      assert.is_nil(ok)
      assert_has(err, "cannot write " .. dir .. "/no/such/dir/s.tmp")
    end)

    -- the link was replaced by a plain file: its target kept the old
    -- state, the next run through the link read the new one, silently
    it("saves through a symbolic link into its target, the link kept", function()
      local dir = run.tmpdir()
      os.execute("mkdir " .. run.q(dir .. "/real"))
      assert(state.save(dir .. "/real/s", { { name = "a", data = "1" } }))
      os.execute("ln -s real/s " .. run.q(dir .. "/link"))
      assert(state.check_writable(dir .. "/link"))
      assert(state.save(dir .. "/link", { { name = "a", data = "2" } }))
      assert.equal("real/s", io.popen("readlink " .. run.q(dir .. "/link")):read("*l"))
      assert.same({ a = "2" }, state.load(dir .. "/real/s"))
      assert.is_false(run.exists(dir .. "/real/s.tmp") or run.exists(dir .. "/link.tmp"))
    end)
  end)

  describe("the snapshots of a run (sluice.snapshots)", function()
    it("(a) keep the entries of policies not in the run", function()
      local path = run.tmpdir() .. "/state"
      local a_value, b_value = { flows = 1 }, "b1"
      local A, a_got = policy("alpha", function() return a_value end)
      local B, b_got = policy("beta", function() return b_value end)
      local snap = restored({ inst("a", A) }, path)
      assert.equal(0, a_got.count, "no entry yet: restore is not called")
      assert(snap:save())
      assert.equal(1, snap.saves)
      snap = restored({ inst("b", B) }, path)
      assert.equal(0, b_got.count)
      assert(snap:save())
      b_value = "b2"
      assert(snap:save())
      assert.equal(2, snap.saves)
      assert.same({ alpha = { flows = 1 }, beta = "b2" }, state.load(path))
      a_value = { flows = 2 }
      snap = restored({ inst("a", A) }, path)
      assert.same({ flows = 1 }, a_got.restored, "A gets its own snapshot back")
      assert(snap:save())
      assert.same({ alpha = { flows = 2 }, beta = "b2" }, state.load(path))
      snap = restored({ inst("b", B) }, path)
      assert.equal("b2", b_got.restored, "B's entry survived A's runs")
    end)

    it("(b) are keyed by info.name, else the instance name; repeats get NAME#2, NAME#3", function()
      local function nothing() return nil end
      local list = {
        inst("top_file", { info = { name = "top" } }),
        inst("other", { info = { name = "top" } }),
        inst("plain", {}),
        inst("plain", {}),
        inst("x", { info = { name = "top#2" } }), -- a policy really called top#2 keeps its name
        inst("y", { info = { name = "top" } }),
        inst("z", { info = { name = "" }, snapshot = nothing }),
      }
      assert.same({ "top", "top#3", "plain", "plain#2", "top#2", "top#4", "z" }, snapshots.keys(list))
      -- and the file says so
      local path = run.tmpdir() .. "/state"
      for k = 1, 4 do list[k].P.snapshot = function() return "v" .. k end end
      local snap = restored(list, path)
      assert(snap:save())
      assert.same({ top = "v1", ["top#3"] = "v2", plain = "v3", ["plain#2"] = "v4" }, state.load(path))
    end)

    it("(c) give restore a table snapshot back, equal, with every integer up to 2^53", function()
      local path = run.tmpdir() .. "/state"
      local value = { hosts = { ["10.0.0.1"] = { bytes = 2^53, pkts = 2^53 - 1, seen = true } },
        top = { "a", "b" }, ratio = 0.1 + 0.2, empty = {}, name = "x\0y" }
      local P, got = policy("top", function() return value end)
      assert(restored({ inst("top", P) }, path):save())
      restored({ inst("top", P) }, path)
      assert.same(value, got.restored)
      assert.equal(2^53, got.restored.hosts["10.0.0.1"].bytes)
      assert.equal(2^53 - 1, got.restored.hosts["10.0.0.1"].pkts)
      assert.equal(0.1 + 0.2, got.restored.ratio)
      -- a string stays a string; nil removes the entry
      value = "just text"
      assert(restored({ inst("top", P) }, path):save())
      restored({ inst("top", P) }, path)
      assert.equal("just text", got.restored)
      value = nil
      assert(restored({ inst("top", P) }, path):save())
      assert.same({}, state.load(path))
    end)

    it("(d) take a trial snapshot before data: what cannot be stored stops the run, naming the policy", function()
      local path = run.tmpdir() .. "/state"
      local cases = {
        { function() return { n = 1, cb = function() end } end,
          { "policy bad_file: trial snapshot before data failed (--state " .. path .. ")",
            "snapshot() returned a table with a function at snapshot.cb", "state_spec.lua:" } },
        { function() return 42 end, { "policy bad_file:", "snapshot() returned a number" } },
        { function() return { 1, nil, 3 } end, { "policy bad_file:", "a list with holes" } },
        { function() error("no snapshot today") end, { "policy bad_file:", "no snapshot today" } },
      }
      for _, case in ipairs(cases) do
        local good = policy("good", function() return "fine" end)
        local bad = { info = { name = "bad" }, snapshot = case[1] }
        local snap = snapshots.new({ inst("good_file", good), inst("bad_file", bad) }, path)
        local ok, err = snap:restore()
        assert.is_nil(ok)
        for _, needle in ipairs(case[2]) do assert_has(err, needle) end
        assert.is_false(run.exists(path), "nothing written")
        assert.has_error(function() snap:save() end, "snapshots: save() before a successful restore()")
      end
      -- the trial comes after restore: it sees the restored state
      run.spit(path, state.encode { { name = "late", data = { ok = true } } })
      local restored_value
      local P = { info = { name = "late" } }
      function P.restore(v) restored_value = v end
      function P.snapshot() return restored_value and { ok = true } or print end
      assert(snapshots.new({ inst("late", P) }, path):restore())
    end)

    it("(d) a snapshot that cannot be stored later fails through call(), or returns nil, err", function()
      local path = run.tmpdir() .. "/state"
      local value = { n = 1 }
      local P = policy("top", function() return value end)
      local list = { inst("top_file", P) }
      local snap = restored(list, path)
      assert(snap:save())
      value = { n = 2, oops = print }
      -- through call: the runner's fault path (abort raises)
      local faults = {}
      local ok, err = pcall(snap.save, snap, fake_call(list, faults))
      assert.is_false(ok)
      assert_has(err, "ABORT: policy top_file: snapshot failed:")
      assert.equal(1, #faults)
      assert.equal("snapshot", faults[1].handler)
      assert_has(faults[1].err, "snapshot() returned a table with a function at snapshot.oops")
      -- with --on-error skip: counted, the last good entry kept
      assert(snap:save(fake_call(list, faults, true)))
      assert.equal(2, #faults)
      assert.same({ top = { n = 1 } }, state.load(path))
      -- without call: nil, err naming the policy, nothing written
      local before = run.slurp(path)
      ok, err = snap:save()
      assert.is_nil(ok)
      assert_has(err, "policy top_file: snapshot failed:")
      assert_has(err, "a function at snapshot.oops")
      assert.equal(before, run.slurp(path))
      assert.equal(2, snap.saves)
    end)

    it("(e) refuse a damaged file and leave it untouched", function()
      local path = run.tmpdir() .. "/state"
      local damaged = state.encode { { name = "top", data = "abcdef" } }:sub(1, -4)
      run.spit(path, damaged)
      local P, got = policy("top", function() return "new" end)
      local snap = snapshots.new({ inst("top", P) }, path)
      local ok, err = snap:restore()
      assert.is_nil(ok)
      assert.equal("error restoring snapshot: state file " .. path .. " is damaged or incomplete", err)
      assert.equal(0, got.count)
      assert.has_error(function() snap:save() end)
      assert.equal(damaged, run.slurp(path))
      -- not a state file
      run.spit(path, "hello\n")
      ok, err = snapshots.new({ inst("top", P) }, path):restore()
      assert.is_nil(ok)
      assert_has(err, "state file " .. path .. " is not a sluice state file")
      assert.equal("hello\n", run.slurp(path))
    end)

    it("(e) name the policy and the file for an entry that does not decode, or a restore that throws", function()
      local path = run.tmpdir() .. "/state"
      -- an entry of a policy not in this run: the file is refused whole
      local bad = "sluice-state 2\nother json 5\n{\"a\":\ntop string 1\nx\nend 2\n"
      run.spit(path, bad)
      local P, got = policy("top", function() return "new" end)
      local ok, err = snapshots.new({ inst("top", P) }, path):restore()
      assert.is_nil(ok)
      assert_has(err, "state file " .. path .. ": entry for policy other: bad JSON")
      assert.equal(0, got.count)
      assert.equal(bad, run.slurp(path))
      -- restore throws
      run.spit(path, state.encode { { name = "top", data = "garbage" } })
      local T = { info = { name = "top" } }
      function T.restore(s) error("bad snapshot: " .. s) end
      ok, err = snapshots.new({ inst("top_file", T) }, path):restore()
      assert.is_nil(ok)
      assert_has(err, "error restoring snapshot: policy top_file: restore failed (state file " .. path)
      assert_has(err, "state_spec.lua:")
      assert_has(err, "bad snapshot: garbage")
    end)

    it("read version-1 files: entries keyed by the file name, moved to info.name on save", function()
      local path = run.tmpdir() .. "/state"
      run.spit(path, "sluice-state 1\ncounter_file 8\nflows=12\nmy_policy 3\nabc\ngone 1\nz\nend 3\n")
      local C, c_got = policy("counter", function() return { flows = 13 } end)
      local snap = restored({ inst("counter_file", C) }, path)
      assert.equal("flows=12", c_got.restored)
      assert(snap:save())
      local doc = assert(state.parse(run.slurp(path)))
      assert.equal(2, doc.version)
      assert.same({ counter = { kind = "json", raw = '{"flows":13}' },
        my_policy = { kind = "v1", raw = "abc" }, gone = { kind = "v1", raw = "z" } }, doc.entries)
      -- a later run of another policy still finds its version-1 entry (a
      -- space in its name was "_" in version 1)
      local M2, m_got = policy("mine", function() return "m2" end)
      snap = restored({ inst("my policy", M2) }, path)
      assert.equal("abc", m_got.restored)
      assert(snap:save())
      assert.same({ counter = { flows = 13 }, mine = "m2", gone = "z" }, state.load(path))
    end)

    it("report a write failure and count only successful saves", function()
      local P = policy("top", function() return "x" end)
      local gone = run.tmpdir() .. "/gone"
      assert.equal(0, os.execute("mkdir " .. run.q(gone)))
      local snap = restored({ inst("top", P) }, gone .. "/state")
      assert.equal(0, os.execute("rmdir " .. run.q(gone))) -- after the check before data
      local ok, err = snap:save()
      assert.is_nil(ok)
      assert_has(err, "cannot write ")
      assert.equal(0, snap.saves)
      assert.has_error(function() snapshots.new("top", "x") end)
      assert.has_error(function() snapshots.new({ { name = "no P" } }, "x") end)
      assert.has_error(function() snapshots.new({}, nil) end)
    end)
  end)

  describe("end to end through the CLI", function()
    -- alpha (file a.lua) counts flows and runs in a table; beta (b.lua) in a string
    local A = [[
      local P = { info = { name = "alpha" } }
      local emit, flows, runs, got = nil, 0, 0, "nothing"
      function P.init(_, ctx) emit = ctx.emit end
      function P.on_flow_end() flows = flows + 1 end
      function P.snapshot() return { flows = flows, runs = runs + 1, big = { 2^53, -2^53 + 1 } } end
      function P.restore(s)
        assert(s.big[1] == 2^53 and s.big[2] == -2^53 + 1, "big numbers changed")
        flows, runs, got = s.flows, s.runs, "table"
      end
      function P.stop() emit { type = "alpha", flows = flows, runs = runs, got = got } end
      return P
    ]]
    local B = [[
      local P = { info = { name = "beta" } }
      local emit, flows = nil, 0
      function P.init(_, ctx) emit = ctx.emit end
      function P.on_flow_end() flows = flows + 1 end
      function P.snapshot() return "flows=" .. flows end
      function P.restore(s) flows = assert(tonumber(s:match("^flows=(%d+)$")), "bad snapshot: " .. s) end
      function P.stop() emit { type = "beta", flows = flows } end
      return P
    ]]

    local function sluice_run(dir, files, st)
      local args = {}
      for _, f in ipairs(files) do args[#args + 1] = run.q(dir .. "/" .. f) end
      return run.sluice_json(table.concat(args, " ") .. " -r " .. run.q(SAMPLE) .. " --state " .. run.q(st), dir)
    end

    -- PATH.tmp was opened with O_TRUNC: a symlink there had its target
    -- truncated (a root probe with its state in /tmp clobbered any file),
    -- a FIFO there blocked the run for good
    it("replaces whatever is at PATH.tmp: a symlink's target stays whole, a FIFO does not block", function()
      local dir = run.tmpdir()
      run.spit(dir .. "/b.lua", B)
      local precious = run.spit(dir .. "/precious.txt", "precious data\n")
      local st = dir .. "/state"
      os.execute("ln -s " .. run.q(precious) .. " " .. run.q(st .. ".tmp"))
      local r = sluice_run(dir, { "b.lua" }, st)
      assert(r.code == 0, run.describe(r))
      assert.equal("precious data\n", run.slurp(precious))
      assert.same({ beta = "flows=" .. SAMPLE_FLOWS }, state.load(st))
      os.execute("mkfifo " .. run.q(st .. ".tmp"))
      r = run.sh("timeout 20 " .. run.SLUICE .. " run " .. run.q(dir .. "/b.lua") .. " -q -r " ..
        run.q(SAMPLE) .. " --state " .. run.q(st) .. " --out json:/dev/null")
      assert(r.code == 0, run.describe(r))
      assert.same({ beta = "flows=" .. 2 * SAMPLE_FLOWS }, state.load(st))
    end)

    it("A, then B, then A with one file: A restores its own snapshot, B's entry survives", function()
      local dir = run.tmpdir()
      run.spit(dir .. "/a.lua", A)
      run.spit(dir .. "/b.lua", B)
      local st = dir .. "/state"
      local r, recs = sluice_run(dir, { "a.lua" }, st)
      assert(r.code == 0, run.describe(r))
      assert.same({ type = "alpha", flows = SAMPLE_FLOWS, runs = 0, got = "nothing" }, recs[1])
      r, recs = sluice_run(dir, { "b.lua" }, st)
      assert(r.code == 0, run.describe(r))
      assert.same({ type = "beta", flows = SAMPLE_FLOWS }, recs[1])
      assert.same({ alpha = { flows = SAMPLE_FLOWS, runs = 1, big = { 2^53, -2^53 + 1 } },
        beta = "flows=" .. SAMPLE_FLOWS }, state.load(st))
      r, recs = sluice_run(dir, { "a.lua" }, st)
      assert(r.code == 0, run.describe(r))
      assert.same({ type = "alpha", flows = 2 * SAMPLE_FLOWS, runs = 1, got = "table" }, recs[1])
      assert.same({ alpha = { flows = 2 * SAMPLE_FLOWS, runs = 2, big = { 2^53, -2^53 + 1 } },
        beta = "flows=" .. SAMPLE_FLOWS }, state.load(st))
      -- both at once, then B alone: each keeps counting
      r, recs = sluice_run(dir, { "a.lua", "b.lua" }, st)
      assert(r.code == 0, run.describe(r))
      assert.equal(3 * SAMPLE_FLOWS, run.of_type(recs, "alpha")[1].flows)
      assert.equal(2 * SAMPLE_FLOWS, run.of_type(recs, "beta")[1].flows)
      assert.equal("", r.err)
    end)

    it("two instances of one policy get NAME and NAME#2", function()
      local dir = run.tmpdir()
      run.spit(dir .. "/b.lua", B)
      run.spit(dir .. "/b2.lua", B)
      local st = dir .. "/state"
      local r = sluice_run(dir, { "b.lua", "b2.lua" }, st)
      assert(r.code == 0, run.describe(r))
      assert.same({ beta = "flows=" .. SAMPLE_FLOWS, ["beta#2"] = "flows=" .. SAMPLE_FLOWS }, state.load(st))
    end)

    it("a snapshot that cannot be stored stops the run before any data, naming the policy", function()
      local dir = run.tmpdir()
      run.spit(dir .. "/bad.lua", [[
        local P = { info = { name = "unstorable" } }
        local emit
        function P.init(_, ctx) emit = ctx.emit end
        function P.on_flow_start(f) emit { type = "saw_data" } end
        function P.snapshot() return { n = 1, later = function() end } end
        return P
      ]])
      local st = dir .. "/state"
      local r, recs = sluice_run(dir, { "bad.lua" }, st)
      assert(r.code ~= 0, run.describe(r))
      assert_has(r.err, "policy unstorable:") -- its info.name, as everywhere
      assert_has(r.err, "snapshot() returned a table with a function at snapshot.later")
      assert_has(r.err, st)
      assert.equal(0, #recs, "no data reached the policy")
      assert.is_false(run.exists(st), "nothing written")
    end)

    it("a damaged file is refused and left untouched", function()
      local dir = run.tmpdir()
      run.spit(dir .. "/a.lua", A)
      local st = dir .. "/state"
      local damaged = state.encode { { name = "alpha", data = { flows = 1, runs = 1 } } }:sub(1, -2)
      run.spit(st, damaged)
      local r, recs = sluice_run(dir, { "a.lua" }, st)
      assert.equal(1, r.code, run.describe(r))
      assert_has(r.err, "state file " .. st .. " is damaged or incomplete")
      assert.equal(0, #recs)
      assert.equal(damaged, run.slurp(st))
      -- an entry that does not decode: named with its policy and the file
      local bad = "sluice-state 2\nalpha json 3\n{{{\nend 1\n"
      run.spit(st, bad)
      r = sluice_run(dir, { "a.lua" }, st)
      assert.equal(1, r.code, run.describe(r))
      assert_has(r.err, "state file " .. st .. ": entry for policy alpha: bad JSON")
      assert.equal(bad, run.slurp(st))
    end)

    it("a state path that is not a regular file stops the run before data with one line", function()
      local dir = run.tmpdir()
      run.spit(dir .. "/a.lua", A)
      assert.equal(0, os.execute("mkfifo " .. run.q(dir .. "/fifo")))
      for _, st in ipairs { dir, "/dev/full", dir .. "/fifo" } do
        local r, recs = sluice_run(dir, { "a.lua" }, st)
        assert.equal(1, r.code, run.describe(r))
        assert_has(r.err, "state file " .. st .. " is ")
        assert.equal(1, select(2, r.err:gsub("\n", "")), "one line: " .. r.err)
        assert.equal(0, #recs)
      end
    end)

    it("a state file that cannot be written stops the run before data, not at its end", function()
      local dir = run.tmpdir()
      run.spit(dir .. "/a.lua", A)
      local st = dir .. "/no/such/dir/state"
      local r, recs = sluice_run(dir, { "a.lua" }, st)
      assert.equal(1, r.code, run.describe(r))
      assert.equal("sluice: cannot save state: cannot write " .. st .. ".tmp: No such file or directory\n",
        r.err)
      assert.equal(0, #recs, "no data was read")
    end)

    it("a policy named end restores its own state", function()
      local dir = run.tmpdir()
      -- no info.name: the entry is keyed by the file name, "end"
      local unnamed = B:gsub('{ info = { name = "beta" } }', "{}")
      assert(not unnamed:find("info"))
      run.spit(dir .. "/end.lua", unnamed)
      local st = dir .. "/state"
      local r = sluice_run(dir, { "end.lua" }, st)
      assert(r.code == 0, run.describe(r))
      local recs
      r, recs = sluice_run(dir, { "end.lua" }, st)
      assert(r.code == 0, run.describe(r))
      assert.same({ type = "beta", flows = 2 * SAMPLE_FLOWS }, recs[1])
      assert.same({ ["end"] = "flows=" .. 2 * SAMPLE_FLOWS }, assert(state.load(st)))
    end)

    it("a version-1 file from an older sluice is restored and rewritten as version 2", function()
      local dir = run.tmpdir()
      run.spit(dir .. "/b_file.lua", B)
      local st = run.spit(dir .. "/state", "sluice-state 1\nb_file 8\nflows=10\nolder 3\nabc\nend 2\n")
      local r, recs = sluice_run(dir, { "b_file.lua" }, st)
      assert(r.code == 0, run.describe(r))
      assert.same({ type = "beta", flows = 10 + SAMPLE_FLOWS }, recs[1])
      local doc = assert(state.parse(run.slurp(st)))
      assert.equal(2, doc.version)
      assert.same({ beta = { kind = "string", raw = "flows=" .. (10 + SAMPLE_FLOWS) },
        older = { kind = "v1", raw = "abc" } }, doc.entries)
    end)
  end)
end)
