-- What a run tells its user on stderr: the --stats line, the progress line
-- of a file being read, the final counters (-v) and the losses (printed
-- whenever something was lost, -v or not). Each function takes the stream
-- to write to last (default io.stderr).
local core = require "sluice.core"

local format = string.format

local M = {}

local sorted_keys = require("sluice.policy").sorted_keys

-- " (a=1 b=2)" of a table of counters, sorted by name; "" when empty.
local function counters(t)
  local parts = {}
  for _, k in ipairs(sorted_keys(t)) do parts[#parts + 1] = k .. "=" .. t[k] end
  return #parts > 0 and (" (" .. table.concat(parts, " ") .. ")") or ""
end
M.counters = counters

-- A collector's counters, one line per exporter that sent or lost something.
function M.exporter_lines(eng, out)
  out = out or io.stderr
  for _, x in ipairs(eng:exporters()) do
    local dropped = counters(x.dropped)
    if x.messages > 0 or dropped ~= "" then
      out:write(format("exporter %s:%d messages %d records %d templates %d seq_lost %d " ..
        "seq_resets %d held %d dropped%s\n", x.address, x.port, x.messages, x.records,
        x.templates, x.seq_lost, x.seq_resets, x.held, dropped ~= "" and dropped or " 0"))
    end
  end
end

-- --stats S: the counters every S seconds (a collector's per exporter too).
function M.stats_line(eng, out)
  out = out or io.stderr
  local st = eng:stats()
  if eng.collector then
    out:write(format("stats: messages %d records %d socket drops %d flows active %d ended %d\n",
      st.received or 0, st.records, st.kernel_drops or 0, st.flows_active, st.flows_ended))
    return M.exporter_lines(eng, out)
  end
  out:write(format("stats: packets %d received %s drops %s malformed %d flows active %d ended %d\n",
    st.packets, tostring(st.received or "-"), tostring(st.kernel_drops or "-"), st.malformed,
    st.flows_active, st.flows_ended))
end

-- The progress of a file on a terminal, rewritten in place (\r); started
-- is core.monotonic() at the start of the run.
function M.progress_line(eng, started, out)
  out = out or io.stderr
  local s = eng.cstats
  local pkts = tonumber(s.packets)
  local secs = core.monotonic() - started
  out:write(format("\r%d packets  %5.1f%%  %.2f Mpps  %d flows active ",
    pkts, eng:progress() * 100, secs > 0 and pkts / secs / 1e6 or 0, tonumber(s.flows_active)))
end

-- -v: the final counters of an engine.
function M.final_counters(eng, out)
  out = out or io.stderr
  local st = eng:stats()
  out:write(format("packets %d bytes %d not_ip %d malformed %d%s\nflows %d ended %d%s " ..
    "refused %d trims %d\nslices %d records %d\n",
    st.packets, st.bytes, st.not_ip, st.malformed, counters(st.malformed_by), st.flows_started,
    st.flows_ended, counters(st.ended_by), st.flows_refused, st.trims, st.slices_closed,
    st.slice_records))
  if eng.collector then
    out:write(format("messages %d records %d socket drops %d\n", st.received or 0,
      st.records, st.kernel_drops or 0))
    M.exporter_lines(eng, out)
  elseif st.received then
    out:write(format("received %d drops %d filtered %d ring_errors %d\n",
      st.received, st.kernel_drops, st.filtered, st.ring_errors))
  end
end

-- Records a sink lost (what the sink lost after taking it, e.g. a
-- datagram the network refused, is in dropped_failed: see sink settle()).
local function sink_lost(s)
  return s.dropped_lag + s.dropped_failed + s.dropped_unqueueable + s.dropped_at_close
end

-- Exit codes of the CLI (documented in the README).
M.EXIT_OK, M.EXIT_ERROR, M.EXIT_USAGE, M.EXIT_LOSSES = 0, 1, 2, 3

-- The losses of a run (engine:run's report): skipped handler errors,
-- records dropped with failed handlers, packets of flows a full table
-- refused, each sink that lost something (every sink with verbose) and a
-- state file that could not be saved. Losses are never silent: this is
-- printed with or without -v. Returns how many records and packets were
-- lost (0 when none).
function M.losses(report, verbose, out)
  out = out or io.stderr
  if not report then return 0 end
  local lost = report.dropped_on_error + (report.flows_refused or 0)
  -- an abort's error is the exit message itself
  local errors = report.abort and {} or report.errors
  for _, k in ipairs(sorted_keys(errors)) do
    local e = errors[k]
    out:write(format("sluice: %d error(s) in policy %s, %s; the first: %s\n",
      e.count, e.policy, e.handler, e.first))
  end
  if report.dropped_on_error > 0 then
    out:write(format("sluice: %d record(s) emitted by failed handlers dropped\n",
      report.dropped_on_error))
  end
  if (report.flows_refused or 0) > 0 then
    out:write(format("sluice: %d packet(s) dropped: the flow table was full (%d slots; " ..
      "see --pool-flows)\n", report.flows_refused, report.pool_flows))
  end
  for _, name in ipairs(sorted_keys(report.sinks)) do
    local s = report.sinks[name]
    local sink_loss = sink_lost(s)
    lost = lost + sink_loss
    if sink_loss > 0 or verbose then
      out:write(format("sink %s: written %d dropped %d (lagging %d, failed %d, unqueueable %d, " ..
        "at close %d) retries %d%s\n", name, s.written, sink_loss, s.dropped_lag, s.dropped_failed,
        s.dropped_unqueueable, s.dropped_at_close, s.retries,
        s.counts and counters(s.counts) or ""))
    end
  end
  if report.state_error then out:write("sluice: state: ", report.state_error, "\n") end
  return lost
end

return M
