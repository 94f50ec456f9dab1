-- One identity per policy: info.name (default: the file's base name
-- without .lua) names a policy for -o NAME.opt, --state, reports, error
-- messages and sluice info; option texts are description = (help = is
-- refused, naming the option); sluice info (and run) never runs a script,
-- a file that acts while it loads instead of returning a policy.
local run = require "support.run"
local policy = require "sluice.policy"
local state = require "sluice.state"

local q, SLUICE = run.q, run.SLUICE
local SAMPLE = run.root .. "/examples/sample.pcap"

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

-- A policy file whose name differs from its info.name.
local NAMED = [[
local P = { info = { name = "named", options = {
  n = { type = "integer", default = 1, description = "a number echoed back" } } } }
local emit, n
function P.init(opts, ctx) emit, n = ctx.emit, opts.n end
function P.on_flow_end(f) end
function P.snapshot() return { n = n } end
function P.stop() emit { type = "echo", n = n } end
return P
]]

describe("policy identity", function()
  teardown(run.cleanup)

  describe("-o NAME.opt", function()
    it("targets a policy by its info.name", function()
      local dir = run.tmpdir()
      local file = run.spit(dir .. "/file_name.lua", NAMED)
      local r, recs = run.sluice_json(q(file) .. " -r " .. q(SAMPLE) .. " -o named.n=5", dir)
      assert.equal(0, r.code, run.describe(r))
      assert.same({ type = "echo", n = 5 }, run.of_type(recs, "echo")[1])
    end)

    it("not by the file's base name when info.name differs: the error lists the known names",
      function()
        local dir = run.tmpdir()
        local file = run.spit(dir .. "/file_name.lua", NAMED)
        local other = run.spit(dir .. "/other.lua", "return { on_flow_end = function() end }")
        local r = run.sluice_json(q(file) .. " " .. q(other) .. " -r " .. q(SAMPLE) ..
          " -o file_name.n=5", dir)
        assert.equal(2, r.code, run.describe(r))
        assert(has(r.err, "-o file_name.n: no policy named 'file_name' (known: named, other; " ..
          file .. " is named 'named' by its info.name)"), run.describe(r))
      end)

    it("a policy without info.name is named by its file's base name", function()
      local dir = run.tmpdir()
      local file = run.spit(dir .. "/plain.lua", (NAMED:gsub('name = "named", ', "")))
      local r, recs = run.sluice_json(q(file) .. " -r " .. q(SAMPLE) .. " -o plain.n=7", dir)
      assert.equal(0, r.code, run.describe(r))
      assert.same({ type = "echo", n = 7 }, run.of_type(recs, "echo")[1])
    end)
  end)

  it("--state entries, error messages, notes and sluice info use info.name", function()
    local dir = run.tmpdir()
    local file = run.spit(dir .. "/file_name.lua", NAMED)
    local st = dir .. "/state"
    local r = run.sluice_json(q(file) .. " -r " .. q(SAMPLE) .. " --state " .. q(st), dir)
    assert.equal(0, r.code, run.describe(r))
    assert.same({ named = { n = 1 } }, state.load(st))

    local failing = run.spit(dir .. "/failing_file.lua", [[
      local P = { info = { name = "failing" } }
      function P.on_flow_end() error("boom") end
      function P.on_slice() end
      return P
    ]])
    r = run.sh(SLUICE .. " run " .. q(failing) .. " -r " .. q(SAMPLE) .. " --out json:/dev/null")
    assert.equal(1, r.code, run.describe(r))
    assert(has(r.err, "policy failing: on_flow_end failed: "), run.describe(r))
    assert(has(r.err, "sluice: policy failing has on_slice but --slice was not given"),
      run.describe(r))
    assert(not has(r.err, "failing_file:"), run.describe(r))

    r = run.sh(SLUICE .. " info " .. q(file))
    assert.equal(0, r.code, run.describe(r))
    assert(r.out:find("^policy named\n"), run.describe(r))
    assert(r.out:find("\n  n +integer +default 1 +a number echoed back\n"), run.describe(r))
  end)

  it("the library names instances the same way", function()
    local dir = run.tmpdir()
    local inst = assert(policy.load(run.spit(dir .. "/file_name.lua", NAMED)))
    assert.equal("named", inst.name)
    assert.equal(dir .. "/file_name.lua", inst.file)
    assert.equal("named", policy.identity(inst.P, "file_name"))
    assert.equal("file_name", policy.identity({}, "file_name"))
    assert.equal("policy", policy.identity({}))
    -- a table given a name: info.name still wins
    assert.equal("named", assert(policy.new(inst.P, nil, "other")).name)
    local bad, err = policy.new({ info = { name = 42 } }, nil, "x")
    assert.is_nil(bad)
    assert.equal("policy x: info.name must be a non-empty string, not a number", err)
  end)

  -- info.options = "x" and info.description = {} gave a Lua traceback and
  -- exit 1; a bad option default passed sluice info; on_packet without
  -- info.packets was found only once the run had started (exit 1)
  it("bad metadata is one line naming the policy, exit 2, in sluice info and run alike", function()
    local cases = {
      { "info = { name = 'm', options = 'x' }", "policy m: info.options must be a table of option specs, not a string" },
      { "info = { name = 'm', description = {} }", "policy m: info.description must be a string, not a table" },
      { "info = { name = 'm', options = { x = { type = 'number', default = 'abc' } } }",
        "policy m: the default of option 'x' is not a number" },
      { "info = { name = 'm', options = { x = { descripton = 'typo' } } }",
        "policy m: option 'x' has an unknown field 'descripton'" },
      { "info = { name = 'm' }, on_flow_ended = function() end", "policy m: on_flow_ended is not a handler" },
      { "info = { name = 'm' }, on_packet = function() end",
        "policy m: on_packet needs info.packets, a pcap filter" },
      { "info = { name = 'm', packets = 5 }, on_packet = function() end",
        "policy m: on_packet needs info.packets, a pcap filter" },
      -- passed sluice info (exit 0) and failed the run with exit 1
      { "info = { name = 'm', packets = 'tcp portt 80' }, on_packet = function() end",
        "policy m: info.packets: bad filter 'tcp portt 80': can't parse filter expression" },
    }
    local dir = run.tmpdir()
    for i, c in ipairs(cases) do
      local file = run.spit(dir .. "/m" .. i .. ".lua", "return { " .. c[1] ..
        ", on_flow_end = function() end }")
      for _, cmd in ipairs { " info " .. q(file), " run " .. q(file) .. " -r " .. q(SAMPLE) } do
        local r = run.sh(SLUICE .. cmd)
        assert.equal(2, r.code, run.describe(r))
        assert(has(r.err, c[2]), run.describe(r))
        assert(not has(r.err, "traceback"), run.describe(r))
      end
    end
  end)

  -- a filter for another link type than Ethernet's is no error of the
  -- policy: the engine compiles it for the packets' own
  it("takes an info.packets filter that compiles for 802.11 only", function()
    local ok, err = policy.check({ info = { name = "w", packets = "wlan type data" },
      on_packet = function() end })
    assert(ok, err)
  end)

  describe("option descriptions", function()
    local HELP = [[
      return { info = { name = "h", options = { top = { type = "integer", default = 3,
        help = "hosts per slice" } } }, on_flow_end = function() end }
    ]]

    it("help = is refused, naming the option and description", function()
      local bad, err = policy.new(assert(loadstring(HELP))())
      assert.is_nil(bad)
      assert.equal("policy h: option 'top' has help =; an option's text is description = " ..
        "(rename help to description)", err)
      local dir = run.tmpdir()
      local file = run.spit(dir .. "/h.lua", HELP)
      for _, cmd in ipairs { " info " .. q(file), " run " .. q(file) .. " -r " .. q(SAMPLE) } do
        local r = run.sh(SLUICE .. cmd)
        assert.equal(2, r.code, run.describe(r))
        assert(has(r.err, "policy h: option 'top' has help =; an option's text is description ="),
          run.describe(r))
        assert.equal("", r.out)
      end
    end)

    it("description = shows in sluice info; a non-string one is refused", function()
      local ok = assert(policy.new({ info = { options = { a = { description = "text" } } } }))
      assert.equal("policy", ok.name)
      local bad, err = policy.new({ info = { options = { a = { description = 3 } } } }, nil, "d")
      assert.is_nil(bad)
      assert.equal("policy d: option 'a': description must be a string", err)
    end)
  end)

  describe("scripts are not policies", function()
    it("sluice info examples/capture_summary.lua says it is a script: exit 2, nothing of it runs",
      function()
        local r = run.sh(SLUICE .. " info examples/capture_summary.lua")
        assert.equal(2, r.code, run.describe(r))
        assert.equal("", r.out)
        assert(r.err:match("^sluice: examples/capture_summary%.lua is a script, not a policy: it " ..
          "calls io%.stderr:write while it loads .*run it with luajit " ..
          "examples/capture_summary%.lua"), run.describe(r))
        assert(not has(r.err, "usage:"), "the script's own usage line was written:\n" .. r.err)
        -- with its argument given, it is refused the same way (arg is the file alone)
        r = run.sh(SLUICE .. " run examples/capture_summary.lua -r " .. q(SAMPLE))
        assert.equal(2, r.code, run.describe(r))
        assert.equal("", r.out)
        assert(has(r.err, "is a script, not a policy"), run.describe(r))
      end)

    it("a script is caught at its first act, even inside a pcall, and writes nothing", function()
      local dir = run.tmpdir()
      local made = dir .. "/made.txt"
      local cases = {
        { "print('hello')", "print" },
        { "io.write('hello')", "io.write" },
        { string.format("local f = io.open(%q, 'w') f:write('x') f:close()", made), "io.open" },
        { "local ok = pcall(require('sluice').open, { read = 'x' }) print(ok)", "sluice.open" },
        { "pcall(os.exit, 3)", "os.exit" },
        { "local s = io.read('*a')", "io.read" },
        { "io.stdout:write('x')", "io.stdout:write" },
        { string.format("os.remove(%q)", SAMPLE), "os.remove" },
      }
      for i, c in ipairs(cases) do
        local file = run.spit(dir .. "/s" .. i .. ".lua", c[1] .. "\nreturn {}\n")
        local P, err = policy.load_file(file)
        assert.is_nil(P, c[1])
        assert(has(err, "is a script, not a policy: it calls " .. c[2]), err)
        local r = run.sh(SLUICE .. " info " .. q(file))
        assert.equal(2, r.code, run.describe(r))
        assert.equal("", r.out, c[1])
        assert(not has(r.err, "hello"), r.err)
      end
      assert.is_false(run.exists(made), "the script's file was written")
      assert(run.exists(SAMPLE))
    end)

    it("what policies do at load time works; once loaded, print and io are the usual ones",
      function()
        local dir = run.tmpdir()
        local cfg = run.spit(dir .. "/cfg.txt", "threshold 7\n")
        local file = run.spit(dir .. "/reads.lua", string.format([[
local f = assert(io.open(%q))           -- reading a file at load time is fine
local threshold = tonumber(f:read("*l"):match("%%d+"))
f:close()
local json = require "sluice.json"       -- so is requiring modules
local out, say = io.stdout, print        -- kept for later
local P = { info = { name = "reads" } }
function P.init() say("init", threshold) end
function P.stop() out:write("stop ", threshold, "\n") end
return P
]], cfg))
        local r = run.sh(SLUICE .. " run " .. q(file) .. " -r " .. q(SAMPLE) .. " -q --out json:" ..
          q(dir .. "/o.json"))
        assert.equal(0, r.code, run.describe(r))
        assert.equal("init\t7\nstop 7\n", r.out)
        r = run.sh(SLUICE .. " info " .. q(file))
        assert.equal(0, r.code, run.describe(r))
        assert(r.out:find("^policy reads\n"), run.describe(r))
      end)

    it("os.exit in a handler is an error, not a silent exit 0 with the flows unwritten", function()
      local dir = run.tmpdir()
      for i, call in ipairs { "os.exit(0)", "exit(0)" } do
        local file = run.spit(dir .. "/exits" .. i .. ".lua", [[
local exit = os.exit -- kept at load time: refused all the same
local P, n = { info = { name = "exits" } }, 0
function P.on_flow_end() n = n + 1 if n == 10 then ]] .. call .. [[ end end
return P
]])
        local r = run.sh(SLUICE .. " run " .. q(file) .. " -r " .. q(SAMPLE) .. " --out json:" ..
          q(dir .. "/o.json"))
        assert.equal(1, r.code, run.describe(r))
        assert(has(r.err, "sluice: policy exits: on_flow_end failed: " .. file .. ":3: os.exit in a " ..
          "policy would end the run without writing its flows and summary; ctx.engine:shutdown() " ..
          "stops the run\n"), run.describe(r))
      end
    end)
  end)
end)
