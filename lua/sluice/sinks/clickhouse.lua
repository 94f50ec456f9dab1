-- ClickHouse sink: flow and slice records inserted in batches over
-- ClickHouse's HTTP interface. The core formats each record as a
-- TabSeparated row into the open batch; a batch closes at batch_rows rows
-- or when it is batch_age old, and a thread of the core POSTs it (one
-- INSERT per batch), retrying transient failures with backoff and never
-- inserting a batch twice (see core/src/clickhouse.c and README.md). The
-- table is created at open when absent. When the thread's queue is full,
-- write answers "transient": the route waits (files) or lags (live).
-- A permanent failure (a 4xx, a schema or authentication error) stops the
-- sink: what it took and had not inserted is counted lost, and the
-- server's message is its error.
--
-- Credentials come from the URL (http://USER:PASSWORD@HOST:PORT/DB.TABLE),
-- the options, or CLICKHOUSE_USER / CLICKHOUSE_PASSWORD; they are sent
-- as HTTP basic authentication and never appear in a name or a message.
local ffi = require "ffi"
local core = require "sluice.core"
local flow = require "sluice.flow"
local policy = require "sluice.policy"
local check_options = require("sluice.sink").check_options

local C = core.C
local EAGAIN, EPIPE = -C.SL_EAGAIN, -C.SL_EPIPE -- as the core returns them
local bit = require "bit"
local type, tostring, tonumber = type, tostring, tonumber
local tagged, tags_of = flow.tagged, flow.tags_of

local M = {}
local URL_PARAMS

M.BATCH_ROWS = 50000
M.MAX_BATCH_ROWS = 1000000 -- below max_insert_block_size: one INSERT, one part
M.BATCH_AGE = 1
M.QUEUE = 8
M.TIMEOUT = 30
M.TABLE = "flows"
M.DATABASE = "default"

local Sink = {}
Sink.__index = Sink

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- Sink options a URL may carry: ?batch_rows=1000&probe=edge1
URL_PARAMS = { batch_rows = "number", batch_age = "string", timeout = "string",
  queue_batches = "number", probe = "string", features = "string" }

-- http[s]://[USER[:PASSWORD]@]HOST[:PORT][/DB[.TABLE]][?NAME=VALUE&...] ->
-- { base = "http://HOST:PORT/", user =, password =, database =, table =,
--   params = { batch_rows =, ... } }, or nil, why (without the credentials).
-- As RFC 3986 reads it: the authority runs to the first /, ? or # after
-- the scheme, its userinfo to the last @ in it. An @ after the authority
-- is a user or password holding an unescaped /, ? or #: refused without
-- quoting any of it, since any split would send, and could print, part of
-- the password.
function M.parse_url(url)
  if type(url) ~= "string" then return nil, "the url is a string" end
  local scheme, rest = url:match("^(https?)://(.*)$")
  if not scheme then return nil, "expects http://HOST:PORT/DB.TABLE" end
  local authority, path = rest:match("^([^/?#]*)(.*)$")
  if path:find("@", 1, true) then
    return nil, "expects http://USER:PASSWORD@HOST:PORT/DB.TABLE, found an '@' past the host " ..
      "(percent-encode / ? # @ in the user and the password: %2F %3F %23 %40)"
  end
  local auth, host = authority:match("^(.*)@(.*)$")
  if not auth then host = authority end
  local name, port = host:match("^(%[[%x:%.]+%])(.*)$")
  if not name then name, port = host:match("^([%w%.%-_]+)(.*)$") end
  if not name then return nil, "expects http://HOST:PORT/DB.TABLE (no host)" end
  if port ~= "" then
    local p = tonumber(port:match("^:(%d+)$"))
    if not p or p < 1 or p > 65535 then
      return nil, "expects http://HOST:PORT/DB.TABLE (port 1..65535)"
    end
  end
  local out = { base = scheme .. "://" .. host .. "/" }
  if auth then
    local user, password = auth:match("^([^:]*):(.*)$")
    out.user = unescape(user or auth)
    out.password = password and unescape(password) or nil
  end
  path = path:gsub("^/", "")
  local query
  path, query = path:match("^([^?]*)%??(.*)$")
  if path:find("#", 1, true) then return nil, "expects http://HOST:PORT/DB.TABLE" end
  out.params = {}
  for item in query:gmatch("[^&]+") do
    local k, v = item:match("^([%w_]+)=(.*)$")
    if not k or not URL_PARAMS[k] then
      return nil, "unknown url parameter '" .. (k or item) .. "' (known: batch_rows, " ..
        "batch_age, timeout, queue_batches, probe, features)"
    end
    v = unescape(v)
    if URL_PARAMS[k] == "number" then
      v = tonumber(v)
      if not v then return nil, "url parameter " .. k .. " is a number" end
    end
    out.params[k] = v
  end
  if path ~= "" then
    local db, tbl = path:match("^([^./]+)%.([^./]+)$")
    if not db then db = path:match("^([^./]+)/?$") end
    if not db then return nil, "expects http://HOST:PORT/DB.TABLE, got path /" .. path end
    out.database, out.table = db, tbl
  end
  return out
end

local function hostname()
  local buf = ffi.new("char[256]")
  if ffi.C.gethostname(buf, 255) ~= 0 then return "" end
  return ffi.string(buf)
end

local function name_ok(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil and #s <= 128
end

-- Tags as a TabSeparated Array(String) literal: ['name=value', 'flag'].
local function tsv_string(s)
  return (s:gsub("[\\'\t\n]", { ["\\"] = "\\\\", ["'"] = "\\'", ["\t"] = "\\t", ["\n"] = "\\n" }))
end

local function tags_text(rec)
  local tags = tags_of(rec)
  if not tags then return nil end
  local names = {}
  for k in pairs(tags) do names[#names + 1] = tostring(k) end
  table.sort(names)
  local items = {}
  for i, k in ipairs(names) do
    local v = tags[k]
    if v == nil then v = tags[tonumber(k)] end
    items[i] = "'" .. tsv_string(v == true and k or (k .. "=" .. tostring(v))) .. "'"
  end
  return "[" .. table.concat(items, ",") .. "]"
end

-- features: "stats,splt,dpi", a list, or nil -> the bits (enum
-- sl_feature), or nil, why.
local function feature_bits(v)
  if v == nil or v == "" then return 0 end
  local list = v
  if type(v) == "string" then
    list = {}
    for name in v:gmatch("[^,%s]+") do list[#list + 1] = name end
  end
  local ok, bits = pcall(require("sluice.engine").parse_features, list)
  if not ok then
    return nil, "features is a list of stats, splt, dpi (" ..
      tostring(bits):gsub("^[^:]*:%d+: ", ""):gsub("^sluice%.open: ", "") .. ")"
  end
  return bits
end

local function whole(v, lo, hi, what)
  if type(v) ~= "number" or v ~= math.floor(v) or v < lo or v > hi then
    return nil, ("%s must be a whole number %d..%d"):format(what, lo, hi)
  end
  return v
end

-- The sink's settings from its options over its URL's parameters (u from
-- parse_url), or nil, why. Credentials are not settings: never in a why.
local function settings(given, u)
  local opts = {}
  for k, v in pairs(u.params) do opts[k] = v end
  for k, v in pairs(given) do opts[k] = v end
  local s = { database = opts.database or u.database or M.DATABASE, table = opts.table or u.table or M.TABLE }
  if not name_ok(s.database) or not name_ok(s.table) then
    return nil, "database and table are names of letters, digits and _"
  end
  s.age = policy.parse_duration(opts.batch_age or M.BATCH_AGE)
  s.timeout = policy.parse_duration(opts.timeout or M.TIMEOUT)
  if not s.age or s.age < 0 or not s.timeout or s.timeout <= 0 then
    return nil, "batch_age and timeout are durations (timeout above 0)"
  end
  local why
  s.batch_rows, why = whole(opts.batch_rows or M.BATCH_ROWS, 1, M.MAX_BATCH_ROWS, "batch_rows")
  if not s.batch_rows then return nil, why end
  s.queue, why = whole(opts.queue_batches or M.QUEUE, 1, 65536, "queue_batches")
  if not s.queue then return nil, why end
  s.probe = opts.probe or hostname()
  if type(s.probe) ~= "string" or #s.probe > 255 then
    return nil, "probe is a string of at most 255 bytes"
  end
  local from_url, from_opts
  from_url, why = feature_bits(u.params.features)
  if not from_url then return nil, why end
  from_opts, why = feature_bits(given.features)
  if not from_opts then return nil, why end
  s.features = bit.bor(from_url, from_opts)
  s.route_queue = opts.queue
  return s
end

-- The URL as the sink would take it (its parameters too), checked before
-- anything is opened: parse_url's table, or nil, why (the command line's
-- usage errors).
function M.check_url(url)
  local u, why = M.parse_url(url)
  if not u then return nil, why end
  local ok
  ok, why = settings({}, u)
  if not ok then return nil, why end
  return u
end

local KNOWN = { url = true, table = true, database = true, probe = true, batch_rows = true,
  batch_age = true, timeout = true, queue_batches = true, user = true, password = true,
  features = true, queue = true }

-- sluice.sink.clickhouse{ url = "http://HOST:PORT/DB.TABLE", table =,
--   database =, probe = hostname, batch_rows = 50000, batch_age = "1s",
--   timeout = "30s" (one request; also how long close waits), queue = 8
--   (batches), user =, password =, features = "stats,splt,dpi" (the
--   columns of those features: NFStream's statistics, the early packets'
--   arrays, the application label; also a URL parameter; both given, the
--   columns of either) }
function M.new(opts)
  if type(opts) ~= "table" or type(opts.url) ~= "string" then
    error("sluice.sink.clickhouse{ url = \"http://HOST:PORT/DB.TABLE\" } needs a url", 2)
  end
  check_options("sluice.sink.clickhouse", opts, KNOWN)
  local u, why = M.parse_url(opts.url)
  if not u then error("sluice.sink.clickhouse: " .. why, 2) end
  local s
  s, why = settings(opts, u)
  if not s then error("sluice.sink.clickhouse: " .. why, 2) end
  local database, tbl, probe = s.database, s.table, s.probe
  local age, timeout, batch_rows, queue = s.age, s.timeout, s.batch_rows, s.queue
  local features = s.features
  local user = opts.user or u.user or os.getenv("CLICKHOUSE_USER")
  local password = opts.password or u.password or os.getenv("CLICKHOUSE_PASSWORD")
  if password and (not user or user == "") then user = "default" end
  local where = u.base .. database .. "." .. tbl
  local o = ffi.new("struct sl_clickhouse_opts")
  o.url, o.user, o.password = u.base, user, password
  o.database, o.table, o.probe = database, tbl, probe
  o.batch_rows, o.batch_age_ms, o.queue = batch_rows, math.floor(age * 1000), queue
  o.timeout_ms = math.max(1, math.floor(timeout * 1000))
  local cp = ffi.new("struct sl_clickhouse *[1]")
  local errbuf = ffi.new("char[?]", C.SL_CLICKHOUSE_MESSAGE)
  local rc = C.sl_clickhouse_new_features(cp, o, features, errbuf, C.SL_CLICKHOUSE_MESSAGE)
  if rc < 0 then
    local msg = ffi.string(errbuf)
    return nil, (msg ~= "" and msg or core.strerror(rc))
  end
  return setmetatable({
    c = ffi.gc(cp[0], C.sl_clickhouse_free), st = ffi.new("struct sl_clickhouse_stats"),
    name = "clickhouse:" .. where, where = where, queue = s.route_queue, accepted = 0,
    refused = 0, timeout = timeout,
  }, Sink)
end

-- The stopped sink's message (the server's first line).
local function stop_message(self)
  C.sl_clickhouse_stats(self.c, self.st)
  return "cannot insert into " .. self.where .. ": " .. ffi.string(self.st.message)
end

local function add(self, rec, tags)
  local kind = rec.kind
  local rc
  if kind == "flow" then rc = C.sl_clickhouse_add_flow(self.c, rec, tags)
  elseif kind == "slice" then rc = C.sl_clickhouse_add_slice(self.c, rec, tags)
  else return nil, "a clickhouse sink takes flow and slice records, not " .. tostring(kind) end
  if rc == 0 then
    self.accepted = self.accepted + 1
    return true
  end
  if rc == EAGAIN then return nil, "clickhouse " .. self.where .. " is slow: the insert queue is full", "transient" end
  if rc == EPIPE then return nil, stop_message(self) end
  return nil, "clickhouse " .. self.where .. ": " .. core.strerror(rc)
end

function Sink:write(rec)
  if not self.c then return nil, "sink is closed" end
  local t = type(rec)
  if t == "table" and rec.rec then return add(self, rec.rec, rec.tags) end
  if t ~= "cdata" then return nil, "a clickhouse sink takes flow and slice records" end
  return add(self, rec, tagged(rec) and tags_text(rec) or nil)
end

-- A slice batch in one call to the core (none when flows carry tags: then
-- one by one); returns how many were taken.
function Sink:write_batch(batch)
  if not self.c or flow.any_tagged(batch.engine) then return 0 end
  local rc = C.sl_clickhouse_add_slices(self.c, batch.recs, batch.n)
  if rc <= 0 then return 0 end
  self.accepted = self.accepted + rc
  return rc
end

-- A queued copy keeps the tags the flow had when it was emitted.
function Sink:prepare(rec)
  if type(rec) ~= "cdata" then return rec end
  local kind = rec.kind
  if kind ~= "flow" and kind ~= "slice" then return nil end
  local copy = rec:copy()
  if tagged(rec) then return { rec = copy, tags = tags_text(rec) } end
  return copy
end

-- Batches older than batch_age go out.
function Sink:tick()
  if self.c then C.sl_clickhouse_tick(self.c) end
end

-- Counters: inserted rows and batches, retries, batches a retry found
-- already inserted, rows still waiting.
function Sink:counts()
  if self.final then return self.final end
  C.sl_clickhouse_stats(self.c, self.st)
  local s = self.st
  -- (insert_retries: HTTP requests sent again; the route's retries are
  -- its own, writes into the sink tried again)
  return { rows = tonumber(s.rows), batches = tonumber(s.batches), insert_retries = tonumber(s.retries),
    found = tonumber(s.found), lost_rows = tonumber(s.lost_rows), waiting = tonumber(s.queued_rows) }
end

-- For the route: rows taken that are inserted or on their way, rows lost,
-- and the last error (the server's message, or why it could not be
-- reached).
function Sink:settle()
  if self.c then
    C.sl_clickhouse_stats(self.c, self.st)
    local s = self.st
    self.lost = tonumber(s.lost_rows)
    if s.last_error ~= 0 and (s.stopped ~= 0 or self.lost > 0) then
      self.err = "cannot insert into " .. self.where .. ": " .. ffi.string(s.message)
    end
  end
  local lost = self.lost or 0
  return self.accepted - lost, lost, self.err
end

-- Sends the open batch and waits (up to timeout) until all is inserted.
function Sink:flush()
  if not self.c then return true end
  local left = tonumber(C.sl_clickhouse_drain(self.c, math.floor(self.timeout * 1000)))
  if left > 0 then
    return nil, ("clickhouse %s: %d rows not inserted after %gs"):format(self.where, left, self.timeout)
  end
  self:settle()
  if self.st.stopped ~= 0 then return nil, self.err end
  return true
end

function Sink:close()
  if not self.c then return true end
  local ok, err = self:flush()
  C.sl_clickhouse_stop(self.c) -- what is left is counted lost
  self:settle()
  self.final = self:counts()
  C.sl_clickhouse_free(ffi.gc(self.c, nil))
  self.c = nil
  return ok, err
end

return M
