-- sluice: Lua-scriptable flow processing. The public API.
local core = require "sluice.core"
local ffi = require "ffi"

local M = {
  version = ffi.string(core.C.sl_version()),
  open = require("sluice.engine").open,
  decay = require("sluice.engine").decay,
  policy = require "sluice.policy",
  addr = require "sluice.addr",
  -- as the README and messages spell them: sluice.metrics.listen, sluice.state.load
  metrics = require "sluice.metrics",
  state = require "sluice.state",
  sink = {
    json = require("sluice.sinks.json").new,
    pcap = require("sluice.sinks.pcap").new,
    ipfix = require("sluice.sinks.ipfix").new,
    clickhouse = require("sluice.sinks.clickhouse").new,
    TRANSIENT = "transient", -- write(): nil, err, sluice.sink.TRANSIENT
  },
}

return M
