-- Installing with luarocks: `luarocks make` of rockspec/sluice-scm-1.rockspec
-- in a copy of the checkout, into a private tree, then the installed
-- command on the bundled capture with nothing of the checkout in reach.
local run = require "support.run"

local SAMPLE = run.root .. "/examples/sample.pcap"
local SAMPLE_TRUTH = run.root .. "/spec/fixtures/sample.truth.json"

-- luarocks defaults to Lua 5.2 here; Debian's lua-cjson is not a rock.
local LUAROCKS = run.PLAIN .. "luarocks --lua-version=5.1"

-- Copies the checkout's sources (tracked and untracked, not ignored: no
-- build output) into dir.
local function copy_checkout(dir)
  local git = run.sh("git rev-parse --is-inside-work-tree")
  local r
  if git.code == 0 then
    r = run.sh("git ls-files -z --cached --others --exclude-standard" ..
      " | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C " .. run.q(dir))
  else
    r = run.sh("tar --exclude=./.git --exclude=./core/build --exclude=./core/build-san" ..
      " --exclude=./bench/build --exclude=./lua/sluice/core_h.lua -cf - . | tar -xf - -C " .. run.q(dir))
  end
  assert(r.code == 0, "copying the checkout failed\n" .. run.describe(r))
  assert(run.exists(dir .. "/rockspec/sluice-scm-1.rockspec"), "the copy has no rockspec")
  assert(not run.exists(dir .. "/core/build/sluice_core.so"), "the copy should start unbuilt")
end

local function has_text(s, needle)
  return s:find(needle, 1, true) ~= nil
end

describe("luarocks", function()
  teardown(run.cleanup)

  local tree, env, installed_err

  -- One install for every test here.
  local function install()
    if tree or installed_err then return tree, installed_err end
    if not run.have("luarocks") then
      installed_err = "luarocks is not installed"
      return nil, installed_err
    end
    local base = run.tmpdir()
    local src = base .. "/src"
    tree = base .. "/tree"
    assert(run.sh("mkdir -p " .. run.q(src)).code == 0)
    copy_checkout(src)
    local r = run.sh(LUAROCKS .. " --tree " .. run.q(tree) ..
      " make --deps-mode=none rockspec/sluice-scm-1.rockspec", src)
    assert(r.code == 0, "luarocks make failed\n" .. run.describe(r))
    assert(has_text(r.out .. r.err, "sluice scm-1 is now installed"), run.describe(r))
    -- nothing of the copy may be used from here on
    run.sh("rm -rf " .. run.q(src))
    local p = run.sh(LUAROCKS .. " --tree " .. run.q(tree) .. " path")
    assert(p.code == 0, run.describe(p))
    -- `luarocks path` prints export lines for LUA_PATH, LUA_CPATH and PATH
    env = run.PLAIN .. "-u SLUICE_CORE -u LUA_PATH_5_1 -u LUA_CPATH_5_1 " ..
      "LUA_PATH=" .. run.q(assert(p.out:match("LUA_PATH='([^']*)'"), p.out)) ..
      " LUA_CPATH=" .. run.q(assert(p.out:match("LUA_CPATH='([^']*)'"), p.out)) .. " "
    return tree
  end

  local function need_install()
    local t, why = install()
    if not t then
      io.stderr:write("luarocks_spec: skipped: ", why, "\n")
      pending(why)
    end
    return t
  end

  -- Runs a command with the tree's paths, from a directory outside the checkout.
  local function installed(cmd)
    local dir = run.tmpdir()
    return run.sh(env .. cmd, dir)
  end

  it("luarocks make installs the command, the Lua modules and the core", function()
    local t = need_install()
    for _, f in ipairs { "/bin/sluice", "/lib/lua/5.1/sluice_core.so",
      "/share/lua/5.1/sluice/init.lua", "/share/lua/5.1/sluice/core_h.lua",
      "/share/lua/5.1/sluice/engine.lua", "/share/lua/5.1/sluice/policies/flows.lua",
      "/share/lua/5.1/sluice/sinks/json.lua" } do
      assert(run.exists(t .. f), "not installed: " .. t .. f)
    end
    -- the modules and the core resolve inside the tree
    local r = installed("luajit -e " .. run.q(
      'print(package.searchpath("sluice", package.path)); print(package.searchpath("sluice_core", package.cpath))'))
    assert(r.code == 0, run.describe(r))
    local mod, so = r.out:match("^([^\n]+)\n([^\n]+)")
    assert.are.equal(t .. "/share/lua/5.1/sluice/init.lua", mod)
    assert.are.equal(t .. "/lib/lua/5.1/sluice_core.so", so)
  end)

  it("the installed sluice --version matches the checkout's", function()
    local t = need_install()
    local r = installed(run.q(t .. "/bin/sluice") .. " --version")
    assert(r.code == 0, run.describe(r))
    local here = run.sh(run.SLUICE .. " --version")
    assert(here.code == 0, run.describe(here))
    assert.is_truthy(r.out:match("^sluice %d+%.%d+%.%d+"), run.describe(r))
    assert.are.equal(here.out, r.out)
  end)

  it("the installed sluice runs the bundled capture", function()
    local t = need_install()
    local truth = run.decode(run.slurp(SAMPLE_TRUTH))
    local dir = run.tmpdir()
    local out = dir .. "/flows.json"
    local r = installed(run.q(t .. "/bin/sluice") .. " run -q -r " .. run.q(SAMPLE) ..
      " --out json:" .. run.q(out))
    assert(r.code == 0, run.describe(r))
    local flows = run.of_type(run.json_lines(out), "flow")
    assert.are.equal(truth.flows, #flows)
    local pkts = 0
    for _, f in ipairs(flows) do pkts = pkts + f.pkts_fwd + f.pkts_rev end
    assert.are.equal(truth.packets, pkts)
  end)

  it("the installed sluice runs an example policy", function()
    local t = need_install()
    local r = installed(run.q(t .. "/bin/sluice") .. " run -q " ..
      run.q(run.root .. "/examples/top_talkers.lua") .. " -r " .. run.q(SAMPLE) .. " --slice 5 -o top=2")
    assert(r.code == 0, run.describe(r))
    local recs = run.decode_lines(r.out)
    assert(#recs >= 3, run.describe(r))
    for _, rec in ipairs(recs) do
      assert.are.equal("top_talkers", rec.type)
      assert.are.equal(2, #rec.top)
    end
  end)

  it("a plain-Lua one-off script runs against the installed rock (README's cookbook)", function()
    need_install()
    -- a copy outside the checkout, so only the rock's paths can find sluice
    local dir = run.tmpdir()
    assert(run.sh(run.PLAIN .. "cp " .. run.q(run.root .. "/examples/capture_summary.lua") .. " " .. run.q(dir)).code == 0)
    local r = installed("luajit " .. run.q(dir .. "/capture_summary.lua") .. " " .. run.q(SAMPLE) .. " 3")
    assert(r.code == 0, run.describe(r))
    local truth = run.decode(run.slurp(SAMPLE_TRUTH))
    assert(has_text(r.out, truth.packets .. " packets"), "the summary counts the sample's packets\n" .. run.describe(r))
    local check = installed("luajit -e " .. run.q('print(require("sluice").addr.text("::1"))'))
    assert.are.equal("::1\n", check.out, run.describe(check))
  end)
end)
