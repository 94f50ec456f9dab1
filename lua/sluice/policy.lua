-- Policies: loading a policy file, validating its options against
-- info.options, and the instance the engine runs.
local M = {}

-- What a script does at load time that a policy never does: the stubs
-- raise this marker, with what was called.
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
    if n and n == math.floor(n) then return n end
    return nil, "an integer"
  end,
  boolean = function(v)
    if v == true or v == "true" or v == "1" or v == "yes" then return true end
    if v == false or v == "false" or v == "0" or v == "no" then return false end
    return nil, "a boolean (true/false)"
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
        -- defaults go through the same conversion ("5m" -> 300)
        local v = converters[spec.type or "string"](spec.default)
        if v == nil then
          return nil, string.format("policy %s: the default of option '%s' is not %s", name, opt,
            select(2, converters[spec.type or "string"](spec.default)))
        end
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

local function check_schema(name, P)
  if type(P) ~= "table" then
    return nil, string.format("policy %s must return a table, got %s", name, type(P))
  end
  for _, h in ipairs(HANDLERS) do
    if P[h] ~= nil and type(P[h]) ~= "function" then
      return nil, string.format("policy %s: %s must be a function, not a %s", name, h, type(P[h]))
    end
  end
  local schema = P.info and P.info.options or {}
  for opt, spec in pairs(schema) do
    if type(spec) ~= "table" or not converters[spec.type or "string"] then
      return nil, string.format("policy %s: option '%s' has an unknown type '%s'", name, opt,
        tostring(type(spec) == "table" and spec.type or spec))
    end
  end
  return true
end

-- An instance: a policy table, its name and its validated options.
function M.new(P, options, name)
  name = name or (type(P) == "table" and P.info and P.info.name) or "policy"
  local ok, err = check_schema(name, P)
  if not ok then return nil, err end
  local opts
  opts, err = M.check_options(name, P.info and P.info.options, options)
  if not opts then return nil, err end
  return { P = P, name = name, opts = opts }
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

-- An environment for a policy file: its globals stay its own. While the
-- file loads, `require "sluice"` gives the library with open (and run)
-- as stubs, and os.exit is one too, so that a script (a file that opens
-- an input itself instead of returning a policy) is recognised instead of
-- run; arg is the file alone, as if run without arguments. Once loaded,
-- the stubs pass their calls on, and arg, os and require are the usual
-- ones again.
local function load_env(path)
  local loading = true
  local function stub(what, real)
    return function(...)
      if loading then error(setmetatable({ what = what }, SCRIPT), 0) end
      return real(...)
    end
  end
  local sluice
  local env = setmetatable({}, { __index = _G })
  env.require = function(name)
    if name ~= "sluice" then return require(name) end
    local real = require "sluice"
    sluice = sluice or setmetatable({ open = stub("sluice.open", real.open),
      run = real.run and stub("sluice.run", real.run) }, { __index = real })
    return sluice
  end
  env.os = setmetatable({ exit = stub("os.exit", os.exit) }, { __index = os })
  env.arg = { [0] = path }
  local ours = { require = env.require, os = env.os, arg = env.arg }
  local function loaded()
    loading = false
    for k, v in pairs(ours) do
      if rawget(env, k) == v then env[k] = nil end -- unless the file set its own
    end
  end
  return env, loaded
end

-- Runs a policy file in its own environment (load_env) and returns the
-- table it returns.
function M.load_file(path)
  local chunk, err = loadfile(path)
  if not chunk then return nil, "cannot load policy " .. path .. ": " .. err end
  local env, loaded = load_env(path)
  setfenv(chunk, env)
  local ok, P = pcall(chunk)
  loaded()
  if not ok and getmetatable(P) == SCRIPT then
    return nil, string.format("%s is a script, not a policy (it calls %s)", path, P.what)
  end
  if not ok then return nil, "cannot load policy " .. path .. ": " .. tostring(P) end
  if type(P) ~= "table" then
    return nil, string.format("policy %s must return a table, got %s (missing 'return P'?)",
      path, type(P))
  end
  return P
end

-- A policy file as an instance with validated options.
function M.load(path, options)
  local P, err = M.load_file(path)
  if not P then return nil, err end
  return M.new(P, options, M.name_of(path))
end

return M
