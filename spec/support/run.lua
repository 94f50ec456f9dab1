-- Helpers for the end-to-end specs: run a shell command and capture its
-- stdout, stderr and exit code; the repository root; temporary
-- directories; JSON lines read with cjson; the records of a classic pcap.
-- Captures are written with support.pcap.
--
--   local run = require "support.run"
--   local r = run.sh("scripts/sluice --version")   -- in the repo root
--   -- r.code, r.out, r.err
--   local dir = run.tmpdir()                        -- removed by run.cleanup()
--   local recs = run.json_lines(dir .. "/out.json")
local cjson = require "cjson"

local M = {}

local function dirname(p)
  return p:match("^(.*)/[^/]*$") or "."
end

local function abspath(p)
  if p:sub(1, 1) == "/" then return p end
  local pwd = os.getenv("PWD")
  if not pwd then
    local h = io.popen("pwd")
    pwd = h:read("*l")
    h:close()
  end
  return pwd .. "/" .. p
end

-- The repository root: two levels above this file (spec/support/run.lua).
do
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local root = dirname(dirname(dirname(abspath(src))))
  root = root:gsub("/%./", "/"):gsub("/%.$", "")
  M.root = root
end

-- Single-quotes a string for /bin/sh.
function M.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
M.slurp = slurp

-- Writes data to path; returns path.
function M.spit(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
  return path
end

function M.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local tmpdirs = {}

-- A fresh temporary directory; run.cleanup() removes every one made.
function M.tmpdir()
  local h = io.popen("mktemp -d /tmp/sluice-spec.XXXXXX")
  local d = h:read("*l")
  h:close()
  assert(d and d ~= "", "mktemp -d failed")
  tmpdirs[#tmpdirs + 1] = d
  return d
end

local scratch, genpcap_bin, generated

function M.cleanup()
  for i = #tmpdirs, 1, -1 do
    os.execute("rm -rf " .. M.q(tmpdirs[i]))
    tmpdirs[i] = nil
  end
  scratch, genpcap_bin, generated = nil, nil, {}
end

-- Runs cmd with /bin/sh in dir (default: the repo root). Returns
-- { code = exit status, out = stdout, err = stderr, cmd = cmd }.
function M.sh(cmd, dir)
  scratch = scratch or M.tmpdir()
  local o, e, c = scratch .. "/stdout", scratch .. "/stderr", scratch .. "/code"
  local full = string.format("cd %s && ( %s ) >%s 2>%s </dev/null; echo $? >%s",
    M.q(dir or M.root), cmd, M.q(o), M.q(e), M.q(c))
  os.execute(full)
  local r = { cmd = cmd, out = slurp(o) or "", err = slurp(e) or "",
    code = tonumber((slurp(c) or ""):match("%d+")) or -1 }
  os.remove(o)
  os.remove(e)
  os.remove(c)
  return r
end

-- A readable summary of a run for assertion messages.
function M.describe(r)
  return string.format("command: %s\nexit: %d\nstderr:\n%s\nstdout (first 2000 bytes):\n%s",
    r.cmd, r.code, r.err, r.out:sub(1, 2000))
end

-- Prefix for commands that must not see the sanitizer preload that
-- .ci/check.sh sets for the ASan pass (gcc, tshark, luarocks).
M.PLAIN = "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS "

-- Shell text that waits, at most 10 s, until the shell condition cond
-- holds or the process whose pid is in shell variable `var` has ended.
function M.await(var, cond)
  return string.format('i=0; until %s || ! kill -0 $%s 2>/dev/null || [ $i -ge 200 ]; do ' ..
    'sleep 0.05; i=$((i+1)); done; ', cond, var)
end

-- M.await until that process has n children. pgrep hangs under the ASan
-- preload, hence PLAIN.
function M.await_children(var, n)
  return M.await(var, string.format('[ "$(%spgrep -P $%s | wc -l)" -ge %d ]', M.PLAIN, var, n))
end

-- Is an executable on PATH?
function M.have(cmd)
  local rc = os.execute("command -v " .. M.q(cmd) .. " >/dev/null 2>&1")
  return rc == 0 or rc == true
end

-- Debian's package of a command the specs use, where its name differs.
local PACKAGE = { editcap = "wireshark-common", mergecap = "wireshark-common",
  ndpiReader = "libndpi-bin", script = "bsdutils" }

-- Why a spec cannot run without installing something, or nil: needs lists
-- commands on PATH and "scapy" (Debian's python3 with scapy).
function M.missing(needs)
  for _, n in ipairs(needs) do
    if n == "scapy" then
      if M.sh(M.PLAIN .. "/usr/bin/python3 -c 'import scapy.all'").code ~= 0 then
        return "/usr/bin/python3 cannot import scapy (apt-get install python3-scapy)"
      end
    elseif not M.have(n) then
      return n .. " is not installed (apt-get install " .. (PACKAGE[n] or n) .. ")"
    end
  end
end

-- A spec's costly set-up, made once for all its tests: the function
-- returned gives prepare()'s value; when something needs lists is missing
-- it marks the test pending (busted's pending, given) with why, also on
-- stderr, and returns nil. An error in prepare is raised again in every
-- test that needs it.
function M.once(spec, needs, prepare, pending)
  local state
  return function()
    if not state then
      local why = M.missing(needs)
      if why then
        state = { why = why }
      else
        local ok, v = pcall(prepare)
        state = ok and { value = v } or { err = v }
      end
    end
    if state.err then error(state.err, 0) end
    if state.why then
      io.stderr:write(spec, ": pending: ", state.why, "\n")
      pending(state.why)
      return nil
    end
    return state.value
  end
end

-- The CLI in this checkout, as a shell word.
M.SLUICE = M.q(M.root .. "/scripts/sluice")

-- Decodes JSON lines (a string) into a list of tables.
function M.decode_lines(s)
  local list = {}
  for line in s:gmatch("[^\n]+") do
    list[#list + 1] = cjson.decode(line)
  end
  return list
end

-- Reads a file of JSON lines into a list of tables.
function M.json_lines(path)
  local s = slurp(path)
  assert(s, "cannot read " .. path)
  return M.decode_lines(s)
end

function M.decode(s)
  return cjson.decode(s)
end

-- Records of one type ("flow", "slice", ...) from a list.
function M.of_type(recs, t)
  local out = {}
  for _, r in ipairs(recs) do
    if r.type == t then out[#out + 1] = r end
  end
  return out
end

-- Runs `sluice run <args> --out json:<dir>/out.json` and returns the run
-- result and the decoded records.
function M.sluice_json(args, dir)
  dir = dir or M.tmpdir()
  local out = dir .. "/out.json"
  local r = M.sh(M.SLUICE .. " run " .. args .. " -q --out json:" .. M.q(out))
  local recs = M.exists(out) and M.json_lines(out) or {}
  return r, recs, out
end

-- Packets and bytes of flow (or slice) records, both directions summed.
function M.flow_totals(recs)
  local pkts, bytes, ip_bytes = 0, 0, 0
  for _, f in ipairs(recs) do
    pkts = pkts + f.pkts_fwd + f.pkts_rev
    bytes = bytes + f.bytes_fwd + f.bytes_rev
    ip_bytes = ip_bytes + (f.ip_bytes_fwd or 0) + (f.ip_bytes_rev or 0)
  end
  return pkts, bytes, ip_bytes
end

-- ---- captures --------------------------------------------------------------

-- Walks the records of a classic pcap held in a string: returns a list of
-- { offset = start of the record header, len = header + data, wirelen }.
function M.pcap_records(data)
  local magic = data:sub(1, 4)
  local le = magic == "\212\195\178\161" or magic == "\77\60\178\161"
  assert(le or magic == "\161\178\195\212" or magic == "\161\178\60\77", "not a classic pcap")
  local function u32(pos)
    local a, b, c, d = data:byte(pos, pos + 3)
    if le then return a + b * 256 + c * 65536 + d * 16777216 end
    return d + c * 256 + b * 65536 + a * 16777216
  end
  local recs, pos = {}, 25
  while pos + 16 <= #data + 1 do
    local incl, orig = u32(pos + 8), u32(pos + 12)
    if pos + 16 + incl > #data + 1 then break end
    recs[#recs + 1] = { offset = pos - 1, len = 16 + incl, wirelen = orig }
    pos = pos + 16 + incl
  end
  return recs
end

-- ---- the flow generator ----------------------------------------------------

-- Path of bench/genpcap.c (shared), or nil and the places looked at.
function M.genpcap_source()
  local env = os.getenv("SLUICE_GENPCAP_C")
  local tried = {}
  if env and env ~= "" then tried[1] = env end
  tried[#tried + 1] = M.root .. "/../shared/bench/genpcap.c"
  tried[#tried + 1] = "/work/shared/bench/genpcap.c" -- the developers' machines
  for _, p in ipairs(tried) do
    if M.exists(p) then return p end
  end
  return nil, table.concat(tried, ", ")
end

-- Compiles genpcap once per process; returns the binary path, or nil, why
-- and (third value) true when the source is absent rather than broken.
function M.genpcap()
  if genpcap_bin then return genpcap_bin end
  local src, tried = M.genpcap_source()
  if not src then
    return nil, "generator source genpcap.c not found (looked at: " .. tried ..
      "; set SLUICE_GENPCAP_C)", true
  end
  local dir = M.tmpdir()
  local bin = dir .. "/genpcap"
  local r = M.sh(M.PLAIN .. "gcc -O2 -o " .. M.q(bin) .. " " .. M.q(src) .. " -lm")
  if r.code ~= 0 then return nil, "cannot compile " .. src .. ":\n" .. r.err end
  genpcap_bin = bin
  return bin
end

generated = {}

-- Generates a trace with genpcap (args such as "-n 50000 -c 500 -s 3");
-- returns the pcap path and its ground truth table, or nil and why. The
-- same arguments give the same file, so a file is made once per process.
-- On failure: nil, why, and true if only the generator source is absent.
function M.generate(args)
  if generated[args] then return generated[args].path, generated[args].truth end
  local bin, why, absent = M.genpcap()
  if not bin then return nil, why, absent end
  local dir = M.tmpdir()
  local path = dir .. "/trace.pcap"
  local r = M.sh(M.PLAIN .. M.q(bin) .. " " .. args .. " -o " .. M.q(path))
  if r.code ~= 0 then return nil, "genpcap " .. args .. " failed:\n" .. r.err end
  local ok, truth = pcall(cjson.decode, r.err)
  if not ok then return nil, "genpcap printed no JSON ground truth: " .. r.err end
  generated[args] = { path = path, truth = truth }
  return path, truth
end

-- A generated trace and its ground truth for the spec named who. When
-- only the generator source is absent, the test is pending (busted's
-- pending, passed in: a module does not see it) with the reason, also
-- written to stderr; a generator that fails is an error.
function M.generated(args, who, pending)
  local path, truth, absent = M.generate(args)
  if not path then
    if not absent then error(truth) end
    io.stderr:write(who, ": skipping the generated trace: ", truth, "\n")
    pending(truth)
  end
  return path, truth
end

return M
