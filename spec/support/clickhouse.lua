-- A real clickhouse-server for specs: started on loopback, on free ports,
-- with its data, logs and users in a temporary directory (a config of our
-- own: the packaged one logs to /var/log and listens on fixed ports).
-- Works with the Debian package (18.16) and current servers.
--   local ch = require "support.clickhouse"
--   local srv = ch.start()             -- nil, why if it cannot
--   srv:query("SELECT 1")              -- the reply's text, or error
--   srv:kill() srv:restart() srv:stop()
-- Users: default (no password) and writer, password ch.PASSWORD.
local run = require "support.run"
local proc = require "support.proc"
local core = require "sluice.core"

local q = run.q
local M = { PASSWORD = "s3cret-Pw-7731", USER = "writer" }

local Server = {}
Server.__index = Server

function M.available()
  if run.have("clickhouse-server") then return true end
  return false, "clickhouse-server is not installed (apt-get install clickhouse-server)"
end

-- A TCP port free on 127.0.0.1 now.
function M.free_port()
  local r = run.sh(run.PLAIN .. "python3 -c 'import socket; s = socket.socket(); " ..
    "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")
  return assert(tonumber(r.out), run.describe(r))
end

local CONFIG = [[<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>DIR/server.log</log><errorlog>DIR/server.err.log</errorlog></logger>
  <http_port>HTTP</http_port>
  <tcp_port>TCP</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>DIR/data/</path>
  <tmp_path>DIR/tmp/</tmp_path>
  <user_files_path>DIR/user_files/</user_files_path>
  <format_schema_path>DIR/format_schemas/</format_schema_path>
  <users_config>DIR/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>104857600</mark_cache_size>
  <uncompressed_cache_size>104857600</uncompressed_cache_size>
</yandex>
]]

local USERS = [[<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users>
    <default><password></password><networks><ip>::/0</ip></networks>
      <profile>default</profile><quota>default</quota></default>
    <USER><password>PASSWORD</password><networks><ip>::/0</ip></networks>
      <profile>default</profile><quota>default</quota></USER>
  </users>
  <quotas><default></default></quotas>
</yandex>
]]

-- Waits until the HTTP interface answers "Ok." (at most secs).
function Server:wait_ready(secs)
  local deadline = core.monotonic() + (secs or 30)
  while core.monotonic() < deadline do
    local r = run.sh(run.PLAIN .. "curl -s -m 1 http://127.0.0.1:" .. self.http .. "/")
    if r.out:match("^Ok%.") then return true end
    if proc.exited(self.h) then break end
    run.sh("sleep 0.1")
  end
  return nil, "clickhouse-server did not answer on port " .. self.http .. ":\n" ..
    (run.slurp(self.dir .. "/server.err.log") or "") .. (proc.result(self.h).err or "")
end

function Server:spawn()
  self.h = proc.spawn("exec " .. run.PLAIN .. "clickhouse-server --config-file=" ..
    q(self.dir .. "/config.xml"))
  return self:wait_ready(60)
end

-- Starts a server; returns it, or nil, why and (third) true when
-- clickhouse-server is not installed rather than broken.
function M.start()
  local ok, why = M.available()
  if not ok then return nil, why, true end
  local dir = run.tmpdir()
  local srv = setmetatable({ dir = dir, http = M.free_port(), tcp = M.free_port() }, Server)
  local conf = CONFIG:gsub("DIR", dir):gsub("HTTP", srv.http):gsub("TCP", srv.tcp)
  run.spit(dir .. "/config.xml", conf)
  run.spit(dir .. "/users.xml", (USERS:gsub("USER", M.USER):gsub("PASSWORD", M.PASSWORD)))
  local rok, err = srv:spawn()
  if not rok then
    srv:kill()
    return nil, err
  end
  return srv
end

-- The base URL (with user:password@ if given).
function Server:url(path, auth)
  return "http://" .. (auth and (auth .. "@") or "") .. "127.0.0.1:" .. self.http .. "/" .. (path or "")
end

-- Runs sql as the default user; returns the reply (trailing newline cut),
-- or raises the server's message.
function Server:query(sql)
  local f = self.dir .. "/query.sql"
  run.spit(f, sql)
  local r = run.sh(run.PLAIN .. "curl -sS -w '\\n%{http_code}' --data-binary @" .. q(f) ..
    " " .. q(self:url()))
  local body, code = r.out:match("^(.-)\n?(%d+)$")
  if code ~= "200" then error("clickhouse: " .. sql .. ": " .. r.out .. r.err, 2) end
  return (body:gsub("\n$", ""))
end

function Server:kill()
  if self.h and not proc.exited(self.h) then
    proc.signal(self.h, 9)
    proc.finish(self.h, 10)
  end
end

-- Starts it again on the same directory and ports.
function Server:restart()
  return self:spawn()
end

function Server:stop()
  if self.h and not proc.exited(self.h) then
    proc.signal(self.h, 15)
    local deadline = core.monotonic() + 10
    while not proc.exited(self.h) and core.monotonic() < deadline do run.sh("sleep 0.05") end
    self:kill()
  end
end

return M
