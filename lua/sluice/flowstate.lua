-- Per-flow state kept on the Lua side of one engine: tags, weights and
-- their decay, protection tags, the queue of tag events and corks, and
-- queries over the live table. A record or handle finds its engine's state
-- by the engine number it carries (flow.engines), so nothing here depends
-- on which engine is running.
local core = require "sluice.core"
local flow = require "sluice.flow"
local policy = require "sluice.policy"

local C = core.C
local tonumber, type, pairs = tonumber, type, pairs
local engines, methods = flow.engines, flow.methods

local M = {}

-- The state of an open engine: e (the engine cdata), out (its sl_output),
-- weights = { [fid] = { name = w, [SLOT] = slot, [BUMPED] = { name = t } } },
-- tags = { [fid] = { name = v } }, bits = { protection tag = bit },
-- queue = { tag events and cork markers }, ended = { fids whose tags go
-- once the interval they ended in has closed } and ended_at (their end
-- times, engine ns), decays, now (engine seconds).
function M.new(e, out)
  local st = { e = e, out = out, id = C.sl_engine_id(e), weights = {}, tags = {}, queue = {},
    ended = {}, ended_at = {}, bits = {}, nbits = 0, decays = {}, now = 0 }
  engines[st.id] = st
  return st
end

function M.close(st)
  engines[st.id] = nil
end

local function state_of(r)
  local st = engines[r.engine]
  if not st then error("this flow's engine is closed", 3) end
  return st
end

-- Keys of a flow's weight table that are not weights.
local SLOT, BUMPED = {}, {}

local function rescore(st, slot, fid, w)
  local score = 0
  for k, v in pairs(w) do
    if type(k) == "string" then score = score + v end
  end
  C.sl_engine_flow_score(st.e, slot, fid, score)
end

-- flow:weight(name, value): a named part of the flow's score (trims end
-- the lowest scores first); setting a name again replaces its value.
function methods.weight(r, name, value)
  if type(name) ~= "string" or type(value) ~= "number" then
    error("flow:weight(name, value) expects a string and a number", 2)
  end
  local st = state_of(r)
  local fid = tonumber(r.fid)
  local w = st.weights[fid]
  if not w then
    -- the slot, and when each weight was last set (for decays)
    w = { [SLOT] = r.slot, [BUMPED] = {} }
    st.weights[fid] = w
  end
  w[name] = value
  w[BUMPED][name] = st.now
  rescore(st, r.slot, r.fid, w)
  return value
end

function methods.unweight(r, name)
  if type(name) ~= "string" then error("flow:unweight(name) expects a string", 2) end
  local st = state_of(r)
  local w = st.weights[tonumber(r.fid)]
  if w and w[name] ~= nil then
    w[name] = nil
    rescore(st, r.slot, r.fid, w)
  end
end

-- flow:upsert_weight(name, fn): sets the weight to fn(current or 0).
function methods.upsert_weight(r, name, fn)
  if type(name) ~= "string" or type(fn) ~= "function" then
    error("flow:upsert_weight(name, fn) expects a string and a function", 2)
  end
  local w = state_of(r).weights[tonumber(r.fid)]
  local value = fn(w and w[name] or 0)
  if type(value) ~= "number" then
    error("flow:upsert_weight: fn returned " .. type(value) .. ", not a number", 2)
  end
  return methods.weight(r, name, value)
end

function methods.weights(r)
  local w, copy = state_of(r).weights[tonumber(r.fid)], {}
  for k, v in pairs(w or {}) do
    if type(k) == "string" then copy[k] = v end
  end
  return copy
end

local function tag_bit(st, tag)
  if type(tag) ~= "string" then error("protection tags are strings", 3) end
  local b = st.bits[tag]
  if not b then
    b = st.nbits
    if b >= 64 then error("at most 64 distinct protection tags", 3) end
    st.bits[tag], st.nbits = b, b + 1
  end
  return b
end

-- flow:protect(tag): never trimmed while any tag protects it. Idempotent,
-- not counted: one unprotect(tag) undoes any number of protect(tag).
function methods.protect(r, tag)
  local st = state_of(r)
  return C.sl_engine_flow_protect(st.e, r.slot, r.fid, tag_bit(st, tag), 1) >= 0
end

-- Returns whether another tag still protects the flow.
function methods.unprotect(r, tag)
  local st = state_of(r)
  return C.sl_engine_flow_protect(st.e, r.slot, r.fid, tag_bit(st, tag), 0) == 1
end

-- flow:tag(name, value): a tag (number or string) on the flow; a name set
-- again replaces its value, nil removes it. Each change becomes a tag
-- event every policy sees (on_tag(flow, name, value, old)) once the
-- current handler returns. flow:tag(name) reads a value.
function methods.tag(r, name, ...)
  if type(name) ~= "string" then error("flow:tag: the name must be a string", 2) end
  local st = state_of(r)
  local fid = tonumber(r.fid)
  local tags = st.tags[fid]
  if select("#", ...) == 0 then return tags and tags[name] end
  local value = ...
  local tv = type(value)
  if tv ~= "number" and tv ~= "string" and value ~= nil then
    error("flow:tag: a value is a number or a string, got " .. tv, 2)
  end
  local old = tags and tags[name]
  if old == value then return value end
  if not tags then
    tags = {}
    st.tags[fid] = tags
  end
  tags[name] = value
  local q = st.queue
  -- a copy: the event is dispatched after this handler, maybe after the
  -- flow ended
  q[#q + 1] = { flow = methods.copy(r), name = name, value = value, old = old }
  return value
end

-- flow:capture(sink): every further packet of the flow goes to a pcap sink
-- (from its first packet when called in on_flow_start); flow:capture() to
-- the run's default pcap output; flow:capture(false) stops. Returns true,
-- or nil and why not (the flow ended, no pcap sink).
function methods.capture(r, sink)
  local st = state_of(r)
  if not st.capture then return nil, "no pcap sink in this run" end
  return st.capture(r, sink)
end

-- Every decay whose interval is due: each flow's weight becomes
-- fn(weight, seconds since it was set).
function M.run_decays(st)
  local now = st.now
  for _, d in ipairs(st.decays) do
    if not d.due then d.due = now + d.interval end
    if now >= d.due then
      d.due = now + d.interval
      for fid, w in pairs(st.weights) do
        local v = w[d.name]
        if v then
          local bumped = w[BUMPED]
          local nv = d.fn(v, now - (bumped[d.name] or now))
          if nv ~= v then
            w[d.name] = nv
            if nv == nil then bumped[d.name] = nil end
            rescore(st, w[SLOT], fid, w)
          end
        end
      end
    end
  end
end

-- Decay presets (as libp2p's connection manager): each returns a
-- function(weight, idle_seconds) -> new weight, or nil to remove it.
M.decay = {
  -- subtract a fixed amount per interval
  fixed = function(minuend)
    return function(w) w = w - minuend return w > 0 and w or nil end
  end,
  -- multiply by coef per interval (0 < coef < 1)
  linear = function(coef)
    return function(w) w = w * coef return w > 1e-9 and w or nil end
  end,
  -- remove the weight once it was not set again for `after` seconds
  expire_when_inactive = function(after)
    return function(w, idle) if idle >= after then return nil end return w end
  end,
}

-- decay(st, name, interval, fn): every interval seconds of engine time,
-- each flow's weight `name` becomes fn(weight, seconds since it was set),
-- removed when fn returns nil.
function M.add_decay(st, name, interval, fn)
  if type(name) ~= "string" or type(fn) ~= "function" then
    error("engine:decay(name, interval, fn) expects a string, a duration and a function", 3)
  end
  local secs = policy.parse_duration(interval)
  if not secs or secs <= 0 then error("engine:decay: interval must be a positive duration", 3) end
  -- k: the policy whose handler (or init) registered it, if any (a
  -- reload replaces that policy's decays with its new version's)
  st.decays[#st.decays + 1] = { name = name, interval = secs, fn = fn, due = nil, k = st.current_k }
end

-- cork(st, fn): fn runs once every event emitted before this call has been
-- dispatched (to every policy), and before any emitted after it.
function M.cork(st, fn)
  if type(fn) ~= "function" then error("engine:cork expects a function", 3) end
  st.queue[#st.queue + 1] = { cork = fn, k = st.current_k }
  return true
end

-- Forgets a flow that ended (its tags and weights).
function M.forget(st, fid)
  st.weights[fid], st.tags[fid] = nil, nil
end

local function matches(f, tags, tag, where)
  if tag then
    local t = tags[tonumber(f.fid)]
    if t == nil or t[tag] == nil then return false end
  end
  if type(where) == "function" then return where(f) and true or false end
  if where then
    for field, value in pairs(where) do
      if f[field] ~= value then return false end
    end
  end
  return true
end

-- query(st, { where = fn(flow) | { field = value, ... }, tag = name, top = n,
-- by = "bytes" }) -> list of handles on live flows, biggest `by` first when
-- top or by is given.
function M.query(st, q)
  q = q or {}
  if type(q) ~= "table" then error("engine:query expects a table", 3) end
  local where, tag, top, by = q.where, q.tag, q.top, q.by
  if where ~= nil and type(where) ~= "function" and type(where) ~= "table" then
    error("engine:query: where must be a function or a table of field = value", 3)
  end
  if top ~= nil and (type(top) ~= "number" or top < 0 or top ~= math.floor(top)) then
    error("engine:query: top must be a whole number >= 0", 3) -- (NaN gave every flow)
  end
  if top and not by then by = "bytes" end
  local e, found = st.e, {}
  for slot = 0, C.sl_engine_slots(e) - 1 do
    local r = C.sl_engine_flow(e, slot)
    if r ~= nil then
      local h = flow.handle(st, r)
      if matches(h, st.tags, tag, where) then found[#found + 1] = h end
    end
  end
  if by then
    local key = {}
    for _, f in ipairs(found) do
      local v = f[by]
      if type(v) ~= "number" then error("engine:query: by = '" .. tostring(by) .. "' is not a number field", 3) end
      key[f] = v
    end
    table.sort(found, function(a, b)
      if key[a] ~= key[b] then return key[a] > key[b] end
      return a.fid < b.fid
    end)
  end
  if top then
    for i = #found, top + 1, -1 do found[i] = nil end
  end
  return found
end

return M
