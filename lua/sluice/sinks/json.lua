-- JSON lines sink: one record per line, buffered. A record is a Lua table
-- or an already encoded JSON object (flow:json(), rec:json()).
local encode = require("sluice.json").encode
local type = type

local M = {}

local Sink = {}
Sink.__index = Sink

-- sluice.sink.json{ path = "out.json" } ("-" is stdout)
function M.new(opts)
  if type(opts) ~= "table" or type(opts.path) ~= "string" then
    error("sluice.sink.json{ path = ... } needs a path", 2)
  end
  local fh, err
  if opts.path == "-" then
    fh = io.stdout
  else
    fh, err = io.open(opts.path, opts.append and "a" or "w")
    if not fh then return nil, err end
  end
  -- line_buffered: one write per line, for files several processes share
  fh:setvbuf(opts.line_buffered and "line" or "full", 65536)
  return setmetatable({ fh = fh, path = opts.path, written = 0 }, Sink)
end

function Sink:write(rec)
  if type(rec) ~= "string" then rec = encode(rec) end
  local ok, err = self.fh:write(rec, "\n")
  if not ok then return nil, err end
  self.written = self.written + 1
  return true
end

function Sink:flush()
  return self.fh:flush()
end

function Sink:close()
  if self.fh == io.stdout then return self.fh:flush() end
  return self.fh:close()
end

return M
