-- The C API's seams: sluice.core refuses a core library of another ABI
-- with one clear line (fake libraries built here with gcc), and the export
-- map core/sluice.map names exactly the SL_API functions of sluice.h.
local run = require "support.run"

local ROOT = run.root
local LUAJIT = "luajit"

local function has(s, needle)
  return s:find(needle, 1, true) ~= nil
end

-- Lua in a fresh process with this checkout's modules and SLUICE_CORE=lib.
local function lua_with(lib, code)
  return run.sh(string.format("SLUICE_CORE=%s %s -e %s", run.q(lib), LUAJIT,
    run.q('package.path="lua/?.lua;lua/?/init.lua;"..package.path; ' .. code)))
end

-- A shared library from C source, in a temp dir of its own (each fake is
-- named sluice_core.so, as the real one).
local function build_lib(dir, name, source)
  local d = dir .. "/" .. name
  os.execute("mkdir -p " .. run.q(d))
  run.spit(d .. "/lib.c", source)
  local r = run.sh(run.PLAIN .. "gcc -shared -fPIC -o " .. run.q(d .. "/sluice_core.so") .. " " ..
    run.q(d .. "/lib.c"))
  assert(r.code == 0, run.describe(r))
  return d .. "/sluice_core.so"
end

local function real_lib()
  local env = os.getenv("SLUICE_CORE")
  if env and env ~= "" then return env end
  return ROOT .. "/core/build/sluice_core.so"
end

describe("ABI check at load", function()
  local core = require "sluice.core"
  local want = core.C.SL_ABI_VERSION
  local dir

  setup(function() dir = run.tmpdir() end)
  teardown(run.cleanup)

  -- Exit status non-zero; stderr's first line is the interpreter's prefix
  -- and the one message (no file:line position), which appears once.
  local function refused(r, message)
    assert(r.code ~= 0, "expected a failure\n" .. run.describe(r))
    local first = r.err:match("^[^\n]*")
    assert(first == "luajit: " .. message, "first line of stderr should be\nluajit: " .. message ..
      "\n" .. run.describe(r))
    local _, count = r.err:gsub(message:gsub("%p", "%%%0"), "")
    assert(count == 1, "the message should appear once\n" .. run.describe(r))
  end

  it("the header's ABI is a positive number and the real library speaks it", function()
    assert.is_number(want)
    assert.is_true(want >= 2)
    assert.are.equal(want, core.C.sl_abi_version())
  end)

  it("the real library loads in a fresh process", function()
    local r = lua_with(real_lib(), [[
      local core = require "sluice.core"
      io.write(core.C.sl_abi_version(), " ", core.strerror(core.C.SL_E_CONFLICT))]])
    assert(r.code == 0, run.describe(r))
    assert.are.equal(want .. " update keys belong to different flows", r.out)
    assert.are.equal("", r.err)
  end)

  it("a library without sl_abi_version (a stale build) is refused in one line", function()
    local lib = build_lib(dir, "noabi", "int sl_decode(void) { return 0; }\n")
    for _, module in ipairs { "sluice.core", "sluice" } do
      refused(lua_with(lib, 'require "' .. module .. '"'), string.format(
        "sluice: core library %s predates ABI versions (no sl_abi_version), these Lua modules " ..
        "need ABI %d: rebuild it (make) or reinstall the rock", lib, want))
    end
  end)

  it("a library of ABI 1 is refused in one line", function()
    local lib = build_lib(dir, "abi1", "unsigned sl_abi_version(void) { return 1; }\n")
    for _, module in ipairs { "sluice.core", "sluice" } do
      refused(lua_with(lib, 'require "' .. module .. '"'), string.format(
        "sluice: core library %s is ABI 1, these Lua modules need ABI %d: rebuild it (make) or " ..
        "reinstall the rock", lib, want))
    end
  end)

  it("a library of a newer ABI is refused too", function()
    local lib = build_lib(dir, "abinext", string.format(
      "unsigned sl_abi_version(void) { return %d; }\n", want + 1))
    refused(lua_with(lib, 'require "sluice.core"'), string.format(
      "sluice: core library %s is ABI %d, these Lua modules need ABI %d: rebuild it (make) or " ..
      "reinstall the rock", lib, want + 1, want))
  end)

  it("a library that cannot be loaded is named", function()
    local lib = dir .. "/missing/sluice_core.so"
    local r = lua_with(lib, 'require "sluice.core"')
    assert(r.code ~= 0, run.describe(r))
    local first = r.err:match("^[^\n]*")
    assert(has(first, "luajit: sluice: cannot load core library " .. lib .. ": "), run.describe(r))
    assert(has(first, "build it (make) or reinstall the rock"), run.describe(r))
  end)
end)

describe("export map", function()
  local dir

  setup(function() dir = run.tmpdir() end)
  teardown(run.cleanup)

  local function check_map(map)
    return run.sh(run.PLAIN .. "make -s --no-print-directory check-map" ..
      (map and (" SL_MAP=" .. run.q(map)) or ""))
  end

  it("core/sluice.map lists exactly the SL_API functions of sluice.h", function()
    local r = check_map()
    assert(r.code == 0, run.describe(r))
    assert.are.equal("", r.err)
  end)

  it("names a function missing from the map and one the header lacks", function()
    local map = run.slurp(ROOT .. "/core/sluice.map")
    assert(has(map, "\t\tsl_source_next;\n"), "the map should list sl_source_next")
    assert(not has(map, "sl_"  .. "*"), "the map should not be a glob")
    local bad = map:gsub("\t\tsl_source_next;\n", ""):gsub("\t\tsl_version;\n",
      "\t\tsl_version;\n\t\tsl_zz_gone;\n")
    local path = run.spit(dir .. "/bad.map", bad)
    local r = check_map(path)
    assert(r.code ~= 0, run.describe(r))
    assert(has(r.err, path .. ": sl_source_next is declared SL_API in core/include/sluice.h but " ..
      "not exported"), run.describe(r))
    assert(has(r.err, path .. ": sl_zz_gone is exported but no SL_API function"), run.describe(r))
  end)

  it("refuses a map out of order", function()
    local map = run.slurp(ROOT .. "/core/sluice.map")
    local bad = map:gsub("\t\tsl_abi_version;\n", ""):gsub("\t\tsl_version;\n",
      "\t\tsl_version;\n\t\tsl_abi_version;\n")
    local r = check_map(run.spit(dir .. "/unsorted.map", bad))
    assert(r.code ~= 0, run.describe(r))
    assert(has(r.err, "not sorted"), run.describe(r))
  end)
end)
