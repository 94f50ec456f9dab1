-- sluice.policy: durations, option checking and loading policy files.
local policy = require "sluice.policy"
local run = require "support.run"

-- Writes src to a fresh .lua file in a temporary directory (run.cleanup
-- removes it) and returns the path.
local dir, nfiles = nil, 0
local function policy_file(src)
  dir = dir or run.tmpdir()
  nfiles = nfiles + 1
  return run.spit(dir .. "/policy" .. nfiles .. ".lua", src)
end

describe("sluice.policy", function()
  teardown(run.cleanup)

  describe("parse_duration", function()
    it("reads units ms, s, m, h, d", function()
      assert.equal(0.25, policy.parse_duration("250ms"))
      assert.equal(10, policy.parse_duration("10s"))
      assert.equal(300, policy.parse_duration("5m"))
      assert.equal(3600, policy.parse_duration("1h"))
      assert.equal(86400, policy.parse_duration("1d"))
      assert.equal(5400, policy.parse_duration("1.5h"))
    end)

    it("reads plain numbers and unitless strings as seconds", function()
      assert.equal(30, policy.parse_duration(30))
      assert.equal(0.5, policy.parse_duration(0.5))
      assert.equal(0, policy.parse_duration(0))
      assert.equal(45, policy.parse_duration("45"))
      assert.equal(2.5, policy.parse_duration("2.5"))
      assert.equal(10, policy.parse_duration(" 10 s "))
    end)

    it("rejects unknown units, naming the unit", function()
      local d, err = policy.parse_duration("5x")
      assert.is_nil(d)
      assert.matches("unit 'x'", err, 1, true)
      d, err = policy.parse_duration("10sec")
      assert.is_nil(d)
      assert.matches("sec", err, 1, true)
    end)

    it("rejects text that is not a duration", function()
      for _, v in ipairs { "", "abc", "s", "1.2.3s", "-5s", "5 5s", "." } do
        local d, err = policy.parse_duration(v)
        assert.is_nil(d, "'" .. v .. "' accepted as " .. tostring(d))
        assert.is_string(err)
      end
    end)

    it("rejects negative numbers and non-numbers", function()
      local d, err = policy.parse_duration(-1)
      assert.is_nil(d)
      assert.matches("negative", err)
      for _, v in ipairs { true, {}, function() end } do
        d, err = policy.parse_duration(v)
        assert.is_nil(d)
        assert.is_string(err)
      end
    end)

    it("rejects NaN", function()
      local d, err = policy.parse_duration(0 / 0)
      assert.is_nil(d, "NaN accepted as a duration")
      assert.is_string(err)
    end)
  end)

  describe("check_options", function()
    local schema = {
      top = { type = "number", default = 10 },
      count = { type = "integer" },
      verbose = { type = "boolean", default = false },
      label = { type = "string", default = "x" },
      window = { type = "duration", default = 60 },
      plain = {}, -- no type: a string
    }

    it("applies defaults for options not given", function()
      local opts = assert(policy.check_options("p", schema, {}))
      assert.same({ top = 10, verbose = false, label = "x", window = 60 }, opts)
      opts = assert(policy.check_options("p", schema, nil))
      assert.equal(10, opts.top)
    end)

    it("keeps given values over defaults, including false", function()
      local opts = assert(policy.check_options("p", schema, { top = 3, verbose = false,
        label = "y", window = 5 }))
      assert.equal(3, opts.top)
      assert.is_false(opts.verbose)
      assert.equal("y", opts.label)
      assert.equal(5, opts.window)
      local opts2 = assert(policy.check_options("p", { flag = { type = "boolean", default = true } },
        { flag = false }))
      assert.is_false(opts2.flag)
    end)

    it("converts strings from the command line", function()
      local opts = assert(policy.check_options("p", schema, {
        top = "2.5", count = "7", verbose = "true", label = "hello", window = "5m", plain = "z",
      }))
      assert.equal(2.5, opts.top)
      assert.equal(7, opts.count)
      assert.equal("number", type(opts.count))
      assert.is_true(opts.verbose)
      assert.equal("hello", opts.label)
      assert.equal(300, opts.window)
      assert.equal("z", opts.plain)
    end)

    it("reads the boolean spellings", function()
      local s = { b = { type = "boolean" } }
      for v, want in pairs { ["true"] = true, ["1"] = true, yes = true, [true] = true,
        ["false"] = false, ["0"] = false, no = false, [false] = false } do
        local opts = assert(policy.check_options("p", s, { b = v }))
        assert.equal(want, opts.b, tostring(v))
      end
      local opts, err = policy.check_options("p", s, { b = "maybe" })
      assert.is_nil(opts)
      assert.matches("'b'", err, 1, true)
      assert.matches("boolean", err, 1, true)
    end)

    it("turns a number into a string for string options", function()
      local opts = assert(policy.check_options("p", schema, { label = 42 }))
      assert.equal("42", opts.label)
    end)

    it("names an unknown option and lists the known ones", function()
      local opts, err = policy.check_options("mypol", schema, { colour = "red" })
      assert.is_nil(opts)
      assert.matches("mypol", err, 1, true)
      assert.matches("unknown option 'colour'", err, 1, true)
      assert.matches("known: count, label, plain, top, verbose, window", err, 1, true)
    end)

    it("says 'none' when a policy has no options", function()
      local opts, err = policy.check_options("bare", nil, { x = 1 })
      assert.is_nil(opts)
      assert.matches("unknown option 'x'", err, 1, true)
      assert.matches("none", err, 1, true)
    end)

    it("names the option and the expected type for a wrong value", function()
      local cases = {
        { { top = "lots" }, "'top'", "a number", "lots" },
        { { count = "2.5" }, "'count'", "an integer", "2.5" },
        { { count = "x" }, "'count'", "an integer", "x" },
        { { window = "soon" }, "'window'", "a duration", "soon" },
        { { window = "5 parsecs" }, "'window'", "a duration", "5 parsecs" },
        { { label = true }, "'label'", "a string", "true" },
      }
      for _, c in ipairs(cases) do
        local opts, err = policy.check_options("p", schema, c[1])
        assert.is_nil(opts)
        assert.matches(c[2], err, 1, true)
        assert.matches(c[3], err, 1, true)
        assert.matches(c[4], err, 1, true)
      end
    end)

    it("rejects infinities, and integers a double cannot hold exactly, for integer options", function()
      -- 2^53 + 1 reads as 2^53: no integer from 2^53 on is told apart
      for _, v in ipairs { "inf", "-inf", math.huge, "99999999999999999999", 2 ^ 53 + 2,
          "9007199254740993", "-9007199254740993", "9007199254740992" } do
        local opts, err = policy.check_options("p", schema, { count = v })
        assert.is_nil(opts, tostring(v) .. " accepted as an integer")
        assert.matches("integer", err, 1, true)
      end
    end)

    it("takes every integer below 2^53 either way", function()
      for _, v in ipairs { "9007199254740991", "-9007199254740991", 2 ^ 53 - 1, "0" } do
        local opts = assert(policy.check_options("p", schema, { count = v }))
        assert.equal(tonumber(v), opts.count)
      end
    end)

    it("reports a missing required option with its type", function()
      local s = { target = { type = "string", required = true }, n = { type = "integer", required = true } }
      local opts, err = policy.check_options("p", s, { target = "a" })
      assert.is_nil(opts)
      assert.matches("missing required option 'n'", err, 1, true)
      assert.matches("integer", err, 1, true)
      opts = assert(policy.check_options("p", s, { target = "a", n = "3" }))
      assert.equal(3, opts.n)
    end)

    it("does not report a required option that has a default", function()
      local opts = assert(policy.check_options("p", { n = { type = "integer", required = true,
        default = 4 } }, {}))
      assert.equal(4, opts.n)
    end)
  end)

  describe("new", function()
    it("makes an instance with validated options", function()
      local P = { info = { name = "x", options = { n = { type = "integer", default = 1 } } } }
      local inst = assert(policy.new(P, { n = "5" }))
      assert.equal(P, inst.P)
      assert.equal("x", inst.name)
      assert.same({ n = 5 }, inst.opts)
    end)

    it("rejects an option schema with an unknown type", function()
      local inst, err = policy.new({ info = { options = { n = { type = "float" } } } }, {}, "q")
      assert.is_nil(inst)
      assert.matches("'n'", err, 1, true)
      assert.matches("float", err, 1, true)
    end)
  end)

  describe("load", function()
    it("loads a policy file with options", function()
      local path = policy_file [[
        local P = { info = { options = { top = { type = "integer", default = 3 } } } }
        function P.on_flow_end() end
        return P
      ]]
      local inst = assert(policy.load(path, { top = "8" }))
      assert.equal(8, inst.opts.top)
      assert.equal("function", type(inst.P.on_flow_end))
      assert.equal(policy.name_of(path), inst.name)
    end)

    -- the strict-mode idiom: the first lookup of an absent handler raised
    -- deep in the CLI, a traceback and exit 1
    it("a table whose lookups raise is refused at load, in one line; run and info exit 2", function()
      local path = policy_file [[
        return setmetatable({}, { __index = function(_, k) error("no field " .. k, 2) end })
      ]]
      local P, err = policy.load_file(path)
      assert.is_nil(P)
      assert.matches("^cannot load policy .*: looking up its fields raised: .*no field init$", err)
      local info = policy_file [[
        return { info = setmetatable({}, { __index = function(_, k) error("no " .. k) end }) }
      ]]
      for _, cmd in ipairs { "run " .. run.q(path) .. " -r " .. run.q(run.root .. "/examples/sample.pcap"),
        "info " .. run.q(path), "info " .. run.q(info) } do
        local r = run.sh(run.SLUICE .. " " .. cmd)
        assert.equal(2, r.code, run.describe(r))
        assert.matches("^sluice: cannot load policy [^\n]*\n$", r.err)
      end
    end)

    it("names a policy by its base name without .lua, as one value", function()
      assert.equal("top_talkers", policy.name_of("examples/top_talkers.lua"))
      assert.equal("x", policy.name_of("x.lua"))
      assert.equal("a.b", policy.name_of("/a/a.b.lua"))
      assert.equal("noext", policy.name_of("dir/noext"))
      assert.same({ "top" }, { policy.name_of("dir/top.lua") })
    end)

    it("reports a file returning a non-table", function()
      local path = policy_file "return 42\n"
      local inst, err = policy.load(path)
      assert.is_nil(inst)
      assert.matches("must return a table", err, 1, true)
      assert.matches("number", err, 1, true)
      assert.matches(policy.name_of(path), err, 1, true)
    end)

    it("reports a file returning nothing", function()
      local path = policy_file "local P = {}\nfunction P.on_flow_end() end\n"
      local inst, err = policy.load(path)
      assert.is_nil(inst)
      assert.is_string(err, "no error message for a policy file that returns nothing")
      assert.matches("must return a table", err, 1, true)
    end)

    it("reports a syntax error with the file and line", function()
      local path = policy_file "local P = {}\n\nfunction P.on_flow_end(\nreturn P\n"
      local inst, err = policy.load(path)
      assert.is_nil(inst)
      assert.matches(path, err, 1, true)
      assert.matches(":4:", err, 1, true)
    end)

    it("reports an error raised while the file runs", function()
      local path = policy_file "local P = {}\nerror('not today')\nreturn P\n"
      local inst, err = policy.load(path)
      assert.is_nil(inst)
      assert.matches("not today", err, 1, true)
      assert.matches(":2:", err, 1, true)
    end)

    it("reports a missing file", function()
      local inst, err = policy.load("/nonexistent/policy.lua")
      assert.is_nil(inst)
      assert.matches("/nonexistent/policy.lua", err, 1, true)
    end)

    it("keeps globals set by a policy file out of _G", function()
      local path = policy_file [[
        leaked_counter = 41
        function leaked_helper() return leaked_counter + 1 end
        local P = {}
        function P.get() return leaked_helper() end
        return P
      ]]
      local inst = assert(policy.load(path))
      assert.is_nil(rawget(_G, "leaked_counter"))
      assert.is_nil(rawget(_G, "leaked_helper"))
      -- the policy still sees its own globals and the standard ones
      assert.equal(42, inst.P.get())
      local path2 = policy_file "local P = { s = string.format('%d', 7), t = type(ipairs) }\nreturn P\n"
      local inst2 = assert(policy.load(path2))
      assert.equal("7", inst2.P.s)
      assert.equal("function", inst2.P.t)
    end)

    it("gives each loaded file its own globals", function()
      local src = "count = (count or 0) + 1\nlocal P = {}\nfunction P.n() return count end\nreturn P\n"
      local a = assert(policy.load(policy_file(src)))
      local b = assert(policy.load(policy_file(src)))
      assert.equal(1, a.P.n())
      assert.equal(1, b.P.n())
    end)
  end)
end)
