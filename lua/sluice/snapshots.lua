-- The policy snapshots of one run (--state FILE): which entry of the file
-- belongs to which policy, restore before data, a trial snapshot that
-- catches what cannot be stored before any data, and saves that keep the
-- entries of policies not in this run. The file format and the atomic
-- write are sluice.state.
--
--   local snap = snapshots.new(list, path)   -- list: instances { P, name, opts }
--   local ok, err = snap:restore()          -- before data (also checks the file
--                                           -- can be written); nil, err stops the run
--   local ok, err = snap:save(call)         -- every --state-interval and at the end
--   snap.saves                              -- successful saves
--
-- Keys: a policy's entry is keyed by its info.name when it declares one,
-- else by its instance name (the policy file's base name). A second
-- instance with the same key in one run gets KEY#2, a third KEY#3, in load
-- order (skipping a KEY#n some other policy is named).
--
-- Values: snapshot() returns a string (stored as it is), a plain table
-- (nested tables of strings, numbers and booleans, lists 1..n or string
-- keys: stored as JSON) or nil (nothing to store: the policy's entry is
-- removed). restore(v) gets back the string, or an equal table.
--
-- Version-1 files (string entries keyed by the policy file's base name,
-- whitespace as "_", a repeated name as NAME#INDEX) are read: a policy
-- whose own key has no entry restores from the version-1 entry of its old
-- key, and its first save moves it to its own key. Version-1 entries no
-- policy of the run claims are kept as they are (kind v1) for a later run.
local state = require "sluice.state"
local name_of = require("sluice.policy").name_of

local type, tostring, ipairs, pairs, xpcall = type, tostring, ipairs, pairs, xpcall
local format = string.format

local M = {}
local Snap = {}
Snap.__index = Snap

-- Marks a snapshot() that returned nil: the entry goes.
local NONE = {}

-- Where an error was raised (the runner's message handler).
local locate = require("sluice.dispatch").locate

-- The key of a policy instance, before making it unique.
local function base_key(inst)
  local info = inst.P.info
  local name = type(info) == "table" and info.name
  if type(name) ~= "string" or name == "" then name = inst.name end
  if type(name) ~= "string" or name == "" then name = "policy" end
  return name
end
M.base_key = base_key

-- The keys of a run's policies, in load order: NAME, then NAME#2, ...
function M.keys(list)
  local keys, taken, bases = {}, {}, {}
  for k, inst in ipairs(list) do bases[k] = base_key(inst) end
  for _, b in ipairs(bases) do taken[b] = (taken[b] or 0) + 1 end
  local used = {}
  for k, b in ipairs(bases) do
    local key, n = b, 1
    while used[key] or (n > 1 and taken[key]) do
      n = n + 1
      key = b .. "#" .. n
    end
    used[key], keys[k] = true, key
  end
  return keys
end

-- The keys version 1 used: the policy file's base name (an instance
-- without a file: its name), whitespace made "_", a repeat followed by
-- "#" and its index in the list.
local function v1_keys(list)
  local keys, seen = {}, {}
  for k, inst in ipairs(list) do
    local key = tostring(inst.file and name_of(inst.file) or inst.name):gsub("%s", "_")
    if seen[key] then key = key .. "#" .. k end
    seen[key] = true
    keys[k] = key
  end
  return keys
end

-- Where a policy's snapshot() is defined, for messages: "top.lua:12".
local function where(fn)
  local info = debug.getinfo(fn, "S")
  if not info or info.what == "C" then return "snapshot" end
  return info.short_src .. ":" .. info.linedefined
end

-- The entry for what snapshot() returned, NONE for nil, or nil and why it
-- cannot be stored.
local function entry_of(v)
  local tv = type(v)
  if v == nil then return NONE end
  if tv == "string" then return { kind = "string", raw = v } end
  if tv == "table" then
    local raw, err = state.to_json(v, "snapshot")
    if not raw then return nil, "returned a table with " .. err end
    return { kind = "json", raw = raw }
  end
  return nil, "returned a " .. tv
end

local STORES = "--state stores a string or a plain table of strings, numbers and booleans " ..
  "(lists 1..n or string keys)"

-- Runs policy k's snapshot() and turns its value into an entry; an
-- unstorable value raises, with the position of the snapshot function, so
-- that a runner's call() reports it like any handler error.
local function take(self, k)
  local fn = self.list[k].P.snapshot
  local e, err = entry_of(fn())
  if not e then error(format("%s: snapshot() %s; %s", where(fn), err, STORES), 0) end
  return e
end

-- The value policy P's snapshot() hands to the next version of it on a
-- reload, as --state would store and give it back: a string as it is, a
-- table as an equal copy (through the same JSON: the new version's
-- restore() sees what it would see from a state file, and shares nothing
-- with the old instance), nil when snapshot() returned nil. Returns true
-- and the value, or nil and why (snapshot() raised, or returned something
-- --state could not store).
function M.carry(P)
  local fn = P.snapshot
  local ok, res = xpcall(function()
    local e, err = entry_of(fn())
    if not e then error(format("%s: snapshot() %s; %s", where(fn), err, STORES), 0) end
    return e
  end, locate)
  if not ok then return nil, tostring(res) end
  if res == NONE then return true, nil end
  local v, err = state.value(res)
  if v == nil then return nil, err end
  return true, v
end

-- snapshots.new(list, path): the snapshots of a run's policy instances
-- (as from sluice.policy.new/load: { P = policy table, name = ..., opts })
-- in state file path. Raises on misuse; no I/O before restore().
function M.new(list, path)
  if type(list) ~= "table" then error("snapshots.new(list, path): list is a list of policy instances", 2) end
  for i, inst in ipairs(list) do
    if type(inst) ~= "table" or type(inst.P) ~= "table" then
      error("snapshots.new: list[" .. i .. "] is not a policy instance { P = ..., name = ... }", 2)
    end
  end
  if type(path) ~= "string" or path == "" then error("snapshots.new(list, path): path is a file name", 2) end
  return setmetatable({
    list = list, path = path, keys = M.keys(list), saves = 0,
    stored = {},   -- k -> the entry to write for policy k (nil: none)
    others = {},   -- name -> entry, entries of the file no policy of the run owns
    migrated = {}, -- k -> the version-1 name policy k restored from
  }, Snap)
end

-- Before data: reads the file, gives each policy with an entry and a
-- restore() its value, then takes one trial snapshot of every policy with
-- a snapshot() to check it can be stored. Returns true, or nil and a
-- message naming the policy and the file. The calls are plain xpcall, not
-- the runner's call(): a failure here always stops the run, also with
-- --on-error skip (a half-restored policy must not see data). The
-- argument is accepted for symmetry with save() and unused.
function Snap:restore(_call)
  local path, list, keys = self.path, self.list, self.keys
  local doc, err = state.read(path)
  if not doc then return nil, "error restoring snapshot: " .. err end
  local label = "state file " .. path
  -- every entry must decode, also those of policies not in this run: a
  -- file that does not is refused whole, and left as it is
  local values = {}
  for name, e in pairs(doc.entries) do
    local v, verr = state.value(e)
    if v == nil then
      return nil, format("error restoring snapshot: %s: entry for policy %s: %s", label, name, verr)
    end
    values[name] = v
  end
  local entries = doc.entries
  local owned, from = {}, {}
  for k, key in ipairs(keys) do
    owned[key] = true
    self.stored[k] = entries[key]
    if entries[key] and entries[key].kind ~= "v1" then from[k] = key end
  end
  if doc.version then
    local old = v1_keys(list)
    for k in ipairs(list) do
      local e = entries[old[k]]
      if not from[k] and e and e.kind == "v1" then
        from[k] = old[k]
        if list[k].P.snapshot then self.migrated[k] = old[k] end
      end
    end
  end
  for name, e in pairs(entries) do
    if not owned[name] then self.others[name] = e end
  end
  for k, inst in ipairs(list) do
    local restore = inst.P.restore
    if from[k] and restore then
      local ok, rerr = xpcall(restore, locate, values[from[k]])
      if not ok then
        return nil, format("error restoring snapshot: policy %s: restore failed (%s, entry %s): %s",
          inst.name, label, from[k], tostring(rerr))
      end
    end
  end
  for k, inst in ipairs(list) do
    if inst.P.snapshot then
      local ok, res = xpcall(take, locate, self, k)
      if not ok then
        return nil, format("policy %s: trial snapshot before data failed (--state %s): %s",
          inst.name, path, tostring(res))
      end
    end
  end
  local okw, werr = state.check_writable(path)
  if not okw then return nil, "cannot save state: " .. werr end
  self.restored = true
  return true
end

-- Takes every policy's snapshot, merges with the entries of policies not
-- in this run (as read by restore()) and writes the file atomically.
--
-- call(k, handler_name, fn, ...) is the runner's handler call: a snapshot()
-- that throws, or returns something that cannot be stored, fails through
-- it like any handler ("policy NAME: snapshot failed: top.lua:12:
-- snapshot() returned a table with a function at snapshot.cb; ..."): an
-- abort raises the runner's error out of save(); with --on-error skip call
-- returns nil and the policy's previous entry is kept. Without call, such
-- a failure returns nil, "policy NAME: snapshot failed: ..." and nothing
-- is written.
--
-- Returns true, or nil and why the file could not be written. Calling it
-- before a successful restore() is an error: it would drop the entries of
-- other policies (or overwrite a file restore() refused).
function Snap:save(call)
  if not self.restored then error("snapshots: save() before a successful restore()", 2) end
  local list, stored = self.list, self.stored
  for k, inst in ipairs(list) do
    if inst.P.snapshot then
      local e
      if call then
        e = call(k, "snapshot", take, self, k)
      else
        local ok, res = xpcall(take, locate, self, k)
        if not ok then return nil, "policy " .. inst.name .. ": snapshot failed: " .. tostring(res) end
        e = res
      end
      if e == NONE then
        stored[k] = nil
      elseif e ~= nil then
        stored[k] = e
      end
      if e ~= nil and self.migrated[k] then
        self.others[self.migrated[k]] = nil -- moved to its own key
        self.migrated[k] = nil
      end
    end
  end
  local entries = {}
  for name, e in pairs(self.others) do
    entries[#entries + 1] = { name = name, kind = e.kind, raw = e.raw }
  end
  for k, key in ipairs(self.keys) do
    local e = stored[k]
    if e then entries[#entries + 1] = { name = key, kind = e.kind, raw = e.raw } end
  end
  local ok, err = state.save(self.path, entries)
  if not ok then return nil, err end
  self.saves = self.saves + 1
  return true
end

return M
