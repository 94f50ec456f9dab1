-- Policies: loading a policy file, validating its options against
-- info.options, and the instance the engine runs.
local ffi = require "ffi"
local core = require "sluice.core"

local M = {}

-- What a script does at load time that a policy never does: the stubs
-- raise this marker, with what was called (load_env).
local SCRIPT = {}

local DURATION_UNITS = { ms = 0.001, s = 1, m = 60, h = 3600, d = 86400 }

-- Seconds from a number or a string such as "250ms", "10s", "5m", "1h".
function M.parse_duration(v)
  if type(v) == "number" then
    if v ~= v or v == math.huge then return nil, "a duration must be a finite number" end
    if v < 0 then return nil, "a duration cannot be negative" end
    return v
  end
  if type(v) ~= "string" then return nil, "expected a duration" end
  local num, unit = v:match("^%s*([%d%.]+)%s*(%a*)%s*$")
  num = tonumber(num)
  if not num then return nil, "expected a duration such as 30, 30s, 5m, 1h, got '" .. v .. "'" end
  if unit == "" then unit = "s" end
  local mult = DURATION_UNITS[unit]
  if not mult then return nil, "unknown duration unit '" .. unit .. "' (ms, s, m, h, d)" end
  return num * mult
end

local SIZE_UNITS = { [""] = 1, k = 1024, m = 1024 ^ 2, g = 1024 ^ 3 }

-- Bytes from a whole number or a string such as "500K", "256M", "1G"
-- (binary units, an optional B); nil for anything else or below 1.
function M.parse_size(v)
  local n, unit = tostring(v):match("^%s*(%d+)%s*([kKmMgG]?)[bB]?%s*$")
  if not n or tonumber(n) < 1 then return nil end
  return tonumber(n) * SIZE_UNITS[unit:lower()]
end

local function finite(v)
  local n = tonumber(v)
  if n and n == n and n ~= math.huge and n ~= -math.huge then return n end
end

local converters = {
  number = function(v)
    local n = finite(v)
    if n then return n end
    return nil, "a number"
  end,
  integer = function(v)
    local n = finite(v)
    -- from 2^53 on a double holds no longer every integer (1e20 was
    -- taken, and 2^53 + 1 read as 2^53)
    if n and n == math.floor(n) and math.abs(n) < 2 ^ 53 then return n end
    return nil, "an integer (below 2^53 either way)"
  end,
  boolean = function(v)
    if v == true or v == "true" or v == "1" or v == "yes" then return true end
    if v == false or v == "false" or v == "0" or v == "no" then return false end
    return nil, "a boolean (true/false, yes/no, 1/0)"
  end,
  string = function(v)
    if type(v) == "string" then return v end
    if type(v) == "number" then return tostring(v) end
    return nil, "a string"
  end,
  duration = function(v)
    local d = M.parse_duration(v)
    if d then return d end
    return nil, "a duration (e.g. 30, 30s, 5m, 1h)"
  end,
}
M.TYPES = converters

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end
M.sorted_keys = sorted_keys

-- An option's default through the option's conversion ("5m" -> 300), or
-- nil and "policy NAME: the default of option 'OPT' is not ...".
local function default_of(name, opt, spec)
  local convert = converters[spec.type or "string"]
  local v, what = convert(spec.default)
  if v == nil then
    return nil, string.format("policy %s: the default of option '%s' is not %s", name, opt, what)
  end
  return v
end

-- Validates given options (a table of name -> value, values may be strings
-- from the command line) against a schema; returns the full option table.
function M.check_options(name, schema, given)
  schema = schema or {}
  local opts = {}
  for opt, value in pairs(given or {}) do
    local spec = schema[opt]
    if not spec then
      local known = sorted_keys(schema)
      return nil, string.format("policy %s: unknown option '%s' (known: %s)", name, opt,
        #known > 0 and table.concat(known, ", ") or "none")
    end
    local conv = converters[spec.type or "string"]
    local v = conv(value)
    if v == nil then
      return nil, string.format("policy %s: option '%s' expects %s, got '%s'", name, opt,
        select(2, conv(value)), tostring(value))
    end
    opts[opt] = v
  end
  for opt, spec in pairs(schema) do
    if opts[opt] == nil then
      if spec.default ~= nil then
        local v, err = default_of(name, opt, spec)
        if v == nil then return nil, err end
        opts[opt] = v
      elseif spec.required then
        return nil, string.format("policy %s: missing required option '%s' (%s)", name, opt,
          spec.type or "string")
      end
    end
  end
  return opts
end

-- The functions a policy may have (the contract in the README).
local HANDLERS = { "init", "on_flow_start", "on_flow_end", "on_slice", "on_packet", "on_tag",
  "snapshot", "restore", "stop" }

local IS_HANDLER = {}
for _, h in ipairs(HANDLERS) do IS_HANDLER[h] = true end

-- What an option spec may hold (a misspelt descripton = was ignored).
local SPEC_KEYS = { type = true, default = true, description = true, required = true, help = true }

local function check_schema(name, P)
  if type(P) ~= "table" then
    return nil, string.format("policy %s must return a table, got %s", name, type(P))
  end
  for _, h in ipairs(HANDLERS) do
    if P[h] ~= nil and type(P[h]) ~= "function" then
      return nil, string.format("policy %s: %s must be a function, not a %s", name, h, type(P[h]))
    end
  end
  for k, v in pairs(P) do
    -- a misspelt handler (on_flow_ended) was never called, without a word
    if type(k) == "string" and k:match("^on_") and not IS_HANDLER[k] and type(v) == "function" then
      return nil, string.format("policy %s: %s is not a handler (%s)", name, k, table.concat(HANDLERS, ", "))
    end
  end
  if P.info ~= nil and type(P.info) ~= "table" then
    return nil, string.format("policy %s: info must be a table, not a %s", name, type(P.info))
  end
  local iname = P.info and P.info.name
  if iname ~= nil and (type(iname) ~= "string" or iname == "") then
    return nil, string.format("policy %s: info.name must be a non-empty string, not %s", name,
      type(iname) == "string" and "an empty one" or ("a " .. type(iname)))
  end
  local info = P.info or {}
  if info.options ~= nil and type(info.options) ~= "table" then
    return nil, string.format("policy %s: info.options must be a table of option specs, not a %s",
      name, type(info.options))
  end
  if info.description ~= nil and type(info.description) ~= "string" then
    return nil, string.format("policy %s: info.description must be a string, not a %s", name,
      type(info.description))
  end
  if P.on_packet and type(info.packets) ~= "string" then
    return nil, string.format("policy %s: on_packet needs info.packets, a pcap filter " ..
      "(\"udp port 53\"; \"ip or ip6\" for every packet)", name)
  end
  -- a filter that cannot compile is the policy's fault, found before any
  -- data (sluice info too); the engine compiles it for each link type
  if P.on_packet then
    local errbuf = ffi.new("char[512]")
    if core.C.sl_filter_check(info.packets, errbuf, ffi.sizeof(errbuf)) < 0 then
      return nil, string.format("policy %s: info.packets: %s", name, ffi.string(errbuf))
    end
  end
  local schema = info.options or {}
  for opt, spec in pairs(schema) do
    if type(spec) ~= "table" or not converters[spec.type or "string"] then
      return nil, string.format("policy %s: option '%s' has an unknown type '%s'", name, opt,
        tostring(type(spec) == "table" and spec.type or spec))
    end
    for k in pairs(spec) do
      if not SPEC_KEYS[k] then
        return nil, string.format("policy %s: option '%s' has an unknown field '%s' (type, default, " ..
          "description, required)", name, opt, tostring(k))
      end
    end
    -- one word for an option's text, the README's and sluice info's
    if spec.help ~= nil then
      return nil, string.format("policy %s: option '%s' has help =; an option's text is " ..
        "description = (rename help to description)", name, opt)
    end
    if spec.description ~= nil and type(spec.description) ~= "string" then
      return nil, string.format("policy %s: option '%s': description must be a string", name, opt)
    end
    if spec.default ~= nil then
      local v, err = default_of(name, opt, spec)
      if v == nil then return nil, err end
    end
  end
  return true
end

-- Checks a policy table's shape (handlers, info.name, option specs)
-- without options: true, or nil and "policy NAME: ..." (sluice info).
function M.check(P, name)
  return check_schema(name or M.identity(P), P)
end

-- The name of a policy: its info.name, else the default given (the file's
-- base name for a policy file, sluice.policy.name_of), else "policy". This
-- one name is used everywhere: -o NAME.opt, --state entries, reports,
-- error messages ("policy NAME: ..."), sluice info.
function M.identity(P, default)
  local info = type(P) == "table" and type(P.info) == "table" and P.info or nil
  local iname = info and info.name
  if type(iname) == "string" and iname ~= "" then return iname end
  return default or "policy"
end

-- An instance: a policy table, its name (M.identity) and its validated
-- options; given is the options as passed (a reload validates them again
-- against the new version). A policy loaded from a file also has file
-- (sluice.policy.load sets it): engine:reload() and SIGHUP load it again.
function M.new(P, options, name)
  name = M.identity(P, name)
  local ok, err = check_schema(name, P)
  if not ok then return nil, err end
  local opts
  opts, err = M.check_options(name, P.info and P.info.options, options)
  if not opts then return nil, err end
  return { P = P, name = name, opts = opts, given = options }
end

-- The schema of a policy as text (sluice info): name, what it wants (its
-- handlers and packet filter) and its options.
function M.describe(P, name)
  local info = P.info or {}
  local lines = { "policy " .. (info.name or name) }
  if info.description then lines[#lines + 1] = "  " .. info.description end
  local wants = {}
  for _, h in ipairs(HANDLERS) do
    if h ~= "init" and type(P[h]) == "function" then
      wants[#wants + 1] = h == "on_packet" and string.format("on_packet (packets matching %q)",
        tostring(info.packets)) or h
    end
  end
  lines[#lines + 1] = "handlers: " .. (#wants > 0 and table.concat(wants, ", ") or "none")
  local schema = info.options or {}
  local names = sorted_keys(schema)
  if #names == 0 then
    lines[#lines + 1] = "options: none"
  else
    lines[#lines + 1] = "options:"
    for _, opt in ipairs(names) do
      local spec = schema[opt]
      local dflt = spec.required and "required" or
        (spec.default ~= nil and ("default " .. tostring(spec.default)) or "optional")
      lines[#lines + 1] = string.format("  %-16s %-9s %-18s %s", opt, spec.type or "string", dflt,
        spec.description or ""):gsub("%s+$", "")
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

-- Short name of a policy file: its base name without .lua.
function M.name_of(path)
  return ((path:match("([^/]+)$") or path):gsub("%.lua$", ""))
end

-- How a script is told from a policy. A policy file only defines things
-- and returns a table; a script (a file run with luajit that opens an
-- input itself and prints) acts while it loads. So a file is loaded in an
-- environment of its own where, while the chunk runs, the calls only a
-- script makes at load time raise a private marker instead of acting:
--   require "sluice" (and "sluice.engine"): open, run
--   print, io.write, io.read, io.lines() (stdin), io.popen, io.input,
--   io.output, io.open(PATH, a writing mode), any method of io.stdin,
--   io.stdout, io.stderr
--   os.exit, os.execute, os.remove, os.rename
-- Once one was called the file is a script, whatever it does next (a
-- pcall around it does not change that): nothing of it ran past that
-- call, and nothing was written. arg is the file alone, as if run without
-- arguments. Reading files, requiring modules and defining functions are
-- what policies do at load time and work as usual. Once loaded, the stubs
-- pass their calls on (a handler may print), and arg, io, os, print and
-- require are the usual ones again. A script that loops without calling
-- any of these is not recognised (nothing can tell it from a slow load).
local STUBBED_MODULES = { sluice = { "open" }, ["sluice.engine"] = { "open" } }

local function load_env(path)
  local loading, seen = true, nil
  local function script(what)
    seen = seen or what
    error(setmetatable({ what = seen }, SCRIPT), 0)
  end
  local function stub(what, real)
    return function(...)
      if loading then script(what) end
      return real(...)
    end
  end
  -- a standard stream whose methods are stubs
  local function stream(name, real)
    return setmetatable({}, { __index = function(_, m)
      local fn = real[m]
      if type(fn) ~= "function" then return fn end
      return function(_, ...)
        if loading then script(name .. ":" .. m) end
        return fn(real, ...)
      end
    end, __tostring = function() return tostring(real) end })
  end
  local env = setmetatable({}, { __index = _G })
  local proxies = {}
  env.require = function(name)
    local real = require(name)
    local names = STUBBED_MODULES[name]
    if not names or type(real) ~= "table" then return real end
    if not proxies[name] then
      local t = {}
      for _, fn in ipairs(names) do
        if real[fn] then t[fn] = stub(name .. "." .. fn, real[fn]) end
      end
      proxies[name] = setmetatable(t, { __index = real })
    end
    return proxies[name]
  end
  -- once loaded, a handler's os.exit would end the process with its flows
  -- unwritten and exit status 0: it is refused, loudly
  local function exit_refused()
    if loading then script("os.exit") end
    error("os.exit in a policy would end the run without writing its flows and summary; " ..
      "ctx.engine:shutdown() stops the run", 2)
  end
  env.os = setmetatable({ exit = exit_refused, execute = stub("os.execute", os.execute),
    remove = stub("os.remove", os.remove), rename = stub("os.rename", os.rename) },
    { __index = os })
  env.io = setmetatable({ write = stub("io.write", io.write), read = stub("io.read", io.read),
    popen = stub("io.popen", io.popen), input = stub("io.input", io.input),
    output = stub("io.output", io.output),
    lines = function(name, ...)
      if loading and name == nil then script("io.lines") end
      return io.lines(name, ...)
    end,
    open = function(name, mode, ...)
      if loading and type(mode) == "string" and mode:find("[wa+]") then
        script("io.open(..., \"" .. mode .. "\")")
      end
      return io.open(name, mode, ...)
    end,
    stdin = stream("io.stdin", io.stdin), stdout = stream("io.stdout", io.stdout),
    stderr = stream("io.stderr", io.stderr) }, { __index = io })
  env.print = stub("print", print)
  env.arg = { [0] = path }
  -- os stays: once loaded, its stubs act as the real functions, but exit
  local ours = { require = env.require, io = env.io, print = env.print, arg = env.arg }
  local function loaded()
    loading = false
    for k, v in pairs(ours) do
      if rawget(env, k) == v then env[k] = nil end -- unless the file set its own
    end
    return seen
  end
  return env, loaded
end

-- How to run a file that is a script, for messages.
local function script_text(path, what)
  return string.format("%s is a script, not a policy: it calls %s while it loads (a policy " ..
    "returns a table of handlers and acts only when called); run it with luajit %s " ..
    "(sluice installed, or LUA_PATH and LUA_CPATH set to a checkout's lua/ and core/build/)",
    path, what, path)
end

-- Runs a policy file in its own environment (load_env) and returns the
-- table it returns. A script is refused (nil and a message saying so),
-- with nothing of it run past its first script-only call.
function M.load_file(path)
  local chunk, err = loadfile(path)
  if not chunk then return nil, "cannot load policy " .. path .. ": " .. err end
  local env, loaded = load_env(path)
  setfenv(chunk, env)
  local ok, P = pcall(chunk)
  local seen = loaded()
  if seen then return nil, script_text(path, seen), "script" end
  if not ok then return nil, "cannot load policy " .. path .. ": " .. tostring(P) end
  if type(P) ~= "table" then
    return nil, string.format("policy %s must return a table, got %s (missing 'return P'?)",
      path, type(P))
  end
  -- every field the contract looks up, once here: a table whose lookups
  -- raise (a strict-mode metatable) fails now, not deep in the run
  ok, err = pcall(function()
    for _, h in ipairs(HANDLERS) do local _ = P[h] end
    local info = P.info
    if type(info) == "table" then
      local _ = info.name, info.description, info.options, info.packets
    end
  end)
  if not ok then return nil, "cannot load policy " .. path .. ": looking up its fields raised: " ..
    tostring(err) end
  return P
end

-- A policy file as an instance with validated options, named by its
-- info.name (default: the file's base name) and reloadable (inst.file).
function M.load(path, options)
  local P, err = M.load_file(path)
  if not P then return nil, err end
  return M.from_file(P, path, options)
end

-- The instance of a policy table P loaded from path (M.load_file).
function M.from_file(P, path, options)
  local inst, err = M.new(P, options, M.name_of(path))
  if not inst then return nil, err end
  inst.file = path
  return inst
end

return M
