-- What a run tells its user on stderr: the --stats line, the progress line
-- of a file being read, the final counters (-v) and the losses (printed
-- whenever something was lost, -v or not). Each function takes the stream
-- to write to last (default io.stderr).
local core = require "sluice.core"
local COLLECTOR_STATE = require("sluice.engine").COLLECTOR_STATE

local format = string.format
-- counts as text: %d of a number at or above 2^63 prints a negative one
local n = core.count_text

local M = {}

local sorted_keys = require("sluice.policy").sorted_keys

-- " (a=1 b=2)" of a table of counters, sorted by name; "" when empty.
local function counters(t)
  local parts = {}
  for _, k in ipairs(sorted_keys(t)) do parts[#parts + 1] = k .. "=" .. n(t[k]) end
  return #parts > 0 and (" (" .. table.concat(parts, " ") .. ")") or ""
end
M.counters = counters

-- An exporter as ADDRESS:PORT ([ADDRESS]:PORT for IPv6), or "unknown".
function M.exporter_name(x)
  if x.address == "unknown" then return "unknown" end
  if x.address:find(":", 1, true) then return format("[%s]:%d", x.address, x.port) end
  return format("%s:%d", x.address, x.port)
end

-- A collector's counters, one line per exporter that sent, lost or had
-- evicted something (the first, "unknown", holds evicted exporters').
function M.exporter_lines(eng, out)
  out = out or io.stderr
  for _, x in ipairs(eng:exporters()) do
    local dropped = counters(x.dropped)
    if x.messages > 0 or dropped ~= "" or x.evicted_templates > 0 or x.evicted_domains > 0 then
      out:write(format("exporter %s messages %s records %s templates %s seq_lost %s " ..
        "seq_resets %s held %s evicted_templates %s evicted_domains %s sampled %s sampling %s " ..
        "dropped%s\n", M.exporter_name(x), n(x.messages), n(x.records), n(x.templates),
        n(x.seq_lost), n(x.seq_resets), n(x.held), n(x.evicted_templates), n(x.evicted_domains),
        n(x.sampled), n(x.sampling), dropped ~= "" and dropped or " 0"))
    end
  end
end

-- A collector's state: "collector memory N max_memory N exporters N ..."
-- (sluice.engine's COLLECTOR_STATE order); nothing for another input.
function M.collector_line(eng, out)
  out = out or io.stderr
  local cs = eng.collector_state and eng:collector_state()
  if not cs then return end
  local parts = { "collector" }
  for _, k in ipairs(COLLECTOR_STATE) do
    parts[#parts + 1] = k .. " " .. n(cs[k])
  end
  out:write(table.concat(parts, " "), "\n")
end

-- --stats S: the counters every S seconds (a collector's state and per
-- exporter too).
function M.stats_line(eng, out)
  out = out or io.stderr
  local st = eng:stats()
  if eng.collector then
    out:write(format("stats: messages %s records %s socket drops %s flows active %s ended %s\n",
      n(st.received or 0), n(st.records), n(st.kernel_drops or 0), n(st.flows_active),
      n(st.flows_ended)))
    M.collector_line(eng, out)
    return M.exporter_lines(eng, out)
  end
  out:write(format("stats: packets %s received %s drops %s malformed %s flows active %s ended %s%s\n",
    n(st.packets), st.received and n(st.received) or "-",
    st.kernel_drops and n(st.kernel_drops) or "-", n(st.malformed), n(st.flows_active),
    n(st.flows_ended), (M.file_text(eng):gsub(" $", ""))))
end

-- Bytes as text: "512 B", "1.5 MB", "2.25 GB".
function M.bytes_text(b)
  if b < 1e3 then return format("%d B", b) end
  if b < 1e6 then return format("%.1f kB", b / 1e3) end
  if b < 1e9 then return format("%.1f MB", b / 1e6) end
  return format("%.2f GB", b / 1e9)
end

-- How far the input is: "42.0%" of a file, "12.3 MB read" of a stream
-- (stdin, a pipe), whose size is not known.
function M.input_done(eng)
  local frac, pos = eng:progress()
  if frac then return format("%5.1f%%", frac * 100) end
  return M.bytes_text(pos or 0) .. " read"
end

-- Several captures: " file 2/5 NAME" (the file read now); else "".
function M.file_text(eng)
  local name, i, count = eng:current_file()
  if not name then return "" end
  return format(" file %d/%d %s ", i, count, name)
end

-- The progress of a file on a terminal, rewritten in place (\r); started
-- is core.monotonic() at the start of the run.
function M.progress_line(eng, started, out)
  out = out or io.stderr
  local s = eng.cstats
  -- a worker sharing the input shows what all read: its packets and the others'
  local foreign = tonumber(s.foreign)
  local pkts = tonumber(s.packets) + foreign
  local secs = core.monotonic() - started
  -- the flows are its own: each worker has its table
  out:write(format("\r%s packets  %s  %.2f Mpps  %s flows active%s %s",
    n(pkts), M.input_done(eng), secs > 0 and pkts / secs / 1e6 or 0, n(s.flows_active),
    foreign > 0 and " (worker 0's)" or "", M.file_text(eng)))
  out:flush() -- a worker's stderr holds a line until its newline
end

-- -v: the final counters of an engine.
function M.final_counters(eng, out)
  out = out or io.stderr
  local st = eng:stats()
  -- a file's filter (in the core) is counted with the packets; a live
  -- one's on the "received" line
  local filtered = (eng.filter and not st.received) and (" filtered " .. n(st.filtered or 0)) or ""
  -- packets whose IP length runs past the frame are kept in their flows:
  -- not among the dropped ones
  local dropped, overlong = {}, ""
  for reason, count in pairs(st.malformed_by) do
    if reason == "ip_overlong" then
      overlong = " ip_overlong " .. n(count) .. " (kept in their flows)"
    else
      dropped[reason] = count
    end
  end
  -- a short snaplen: in their flows too, with what was captured
  local cut = (st.l4_cut or 0) > 0 and
    (" l4_cut " .. n(st.l4_cut) .. " (transport header cut by the snap length, kept in their flows)")
    or ""
  out:write(format("packets %s bytes %s not_ip %s malformed %s%s%s%s%s\nflows %s ended %s%s " ..
    "refused %s trims %s\nslices %s records %s\n",
    n(st.packets), n(st.bytes), n(st.not_ip), n(st.malformed), counters(dropped), overlong,
    cut, filtered,
    n(st.flows_started), n(st.flows_ended), counters(st.ended_by), n(st.flows_refused),
    n(st.trims), n(st.slices_closed), n(st.slice_records)))
  -- later fragments whose first was not seen (or was forgotten) lose
  -- their ports: they are counted, but in flows of their own
  if (st.frag_unmatched or 0) > 0 then
    out:write(format("fragments without their first fragment %s (in flows without ports)\n",
      n(st.frag_unmatched)))
  end
  if (st.tunnelled or 0) > 0 or (st.tunnel_changes or 0) > 0 then
    out:write(format("tunnelled packets %s, in another tunnel than their flow's first %s\n",
      n(st.tunnelled), n(st.tunnel_changes)))
  end
  if (st.reloads or 0) > 0 or (st.reload_failures or 0) > 0 then
    out:write(format("policy reloads %s failed %s\n", n(st.reloads), n(st.reload_failures)))
  end
  local files = eng:files()
  if files then
    out:write(format("files %s finished %s failed %s skipped %s (not captures)\n", n(files.files),
      n(files.finished), n(files.failed), n(files.skipped)))
  end
  if eng.collector then
    out:write(format("messages %s records %s socket drops %s\n", n(st.received or 0),
      n(st.records), n(st.kernel_drops or 0)))
    M.collector_line(eng, out)
    M.exporter_lines(eng, out)
  elseif st.received then
    out:write(format("received %s drops %s filtered %s ring_errors %s\n",
      n(st.received), n(st.kernel_drops), n(st.filtered), n(st.ring_errors)))
  end
end

-- Before data: policies this run cannot give anything to (an on_slice
-- without slices, no handler the run calls). list: policy instances,
-- sliced: the run cuts slices. Returns the lines written.
local CALLED = { "on_flow_start", "on_flow_end", "on_slice", "on_packet", "on_tag", "stop" }

function M.policy_notes(list, sliced, out)
  out = out or io.stderr
  local lines = 0
  for _, inst in ipairs(list) do
    local P = inst.P
    if P.on_slice and not sliced then
      out:write(format("sluice: policy %s has on_slice but --slice was not given: no slices\n",
        inst.name))
      lines = lines + 1
    else
      local any = false
      for _, h in ipairs(CALLED) do any = any or P[h] ~= nil end
      if not any then
        out:write(format("sluice: policy %s has none of %s: it does nothing after init\n",
          inst.name, table.concat(CALLED, ", ")))
        lines = lines + 1
      end
    end
  end
  return lines
end

-- After the run: results that would otherwise be silently empty (a file
-- or capture that gave no packets, or no flows; packets that are not IP).
-- Collectors are left out (their exporters' lines say what came).
-- Returns the lines written.
function M.empty_notes(eng, out)
  out = out or io.stderr
  if eng.collector then return 0 end
  local st = eng:stats()
  local lines = 0
  local function note(...)
    out:write("sluice: ", eng.input, ": ", format(...), "\n")
    lines = lines + 1
  end
  local filtered = st.filtered or 0
  if st.packets == 0 then
    if filtered > 0 then
      note("the filter refused all %s packets: no flows", n(filtered))
    else
      note("read 0 packets: no flows")
    end
  elseif st.flows_started == 0 then
    note("%s packets but no flows (not IP %s, malformed %s)", n(st.packets), n(st.not_ip),
      n(st.malformed))
  elseif st.not_ip > 0 then
    note("%s of %s packets were not IP (counted, not in flows)", n(st.not_ip), n(st.packets))
  end
  return lines
end

-- Records a sink lost (what the sink lost after taking it, e.g. a
-- datagram the network refused, is in dropped_failed: see sink settle()).
local function sink_lost(s)
  return s.dropped_lag + s.dropped_failed + s.dropped_unqueueable + s.dropped_at_close
end

-- Exit codes of the CLI (documented in the README).
M.EXIT_OK, M.EXIT_ERROR, M.EXIT_USAGE, M.EXIT_LOSSES = 0, 1, 2, 3

-- Drops of what exporters sent: data without its template (never seen,
-- or withdrawn), state that did not fit, exporters past the limit
-- (malformed messages are counted, not losses, as malformed packets are).
local EXPORTER_LOSSES = { "no_template", "withdrawn", "memory", "exporters" }

-- What the input lost on its way in, a line each, also without -v: packets
-- a full capture ring dropped, messages a full socket buffer dropped, and
-- what exporters sent that could not be decoded; returns how many.
function M.input_losses(eng, out)
  out = out or io.stderr
  local st, lost = eng:stats(), 0
  local drops = st.kernel_drops or 0
  if drops > 0 then
    out:write(eng.collector and
      format("sluice: %d message(s) dropped by the kernel: the socket buffer was full " ..
        "(--rcvbuf, --workers, a lighter policy)\n", drops) or
      format("sluice: %d packet(s) dropped by the kernel: the capture ring was full " ..
        "(--ring-blocks, --workers, a lighter policy)\n", drops))
    lost = lost + drops
  end
  if not eng.collector then return lost end
  local by, total, seq_lost = {}, 0, 0
  for _, x in ipairs(eng:exporters()) do
    seq_lost = seq_lost + x.seq_lost
    for _, reason in ipairs(EXPORTER_LOSSES) do
      local k = x.dropped[reason] or 0
      if k > 0 then by[reason], total = (by[reason] or 0) + k, total + k end
    end
  end
  if total > 0 then
    out:write(format("sluice: %d message(s) or set(s) from exporters dropped undecoded%s\n",
      total, counters(by)))
  end
  -- lost on the way, maybe before this host: said, not this run's loss
  if seq_lost > 0 then
    out:write(format("sluice: exporters' sequence numbers say %d record(s) or export packet(s) " ..
      "never arrived\n", seq_lost))
  end
  return lost + total
end

-- The losses of a run (engine:run's report): skipped handler errors,
-- records dropped with failed handlers, packets of flows a full table
-- refused, each sink that lost something or whose flush, close or tick
-- failed (every sink with verbose) and a state file that could not be
-- saved. Losses are never silent: this is printed with or without -v.
-- Returns how many records and packets were lost, plus the sinks' failed
-- calls, whose records may not have arrived (0 when none).
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
    local sink_loss, call_errors = sink_lost(s), s.call_errors or 0
    lost = lost + sink_loss + call_errors
    if sink_loss > 0 or call_errors > 0 or verbose then
      out:write(format("sink %s: written %d dropped %d (lagging %d, failed %d, unqueueable %d, " ..
        "at close %d) retries %d%s%s\n", name, s.written, sink_loss, s.dropped_lag, s.dropped_failed,
        s.dropped_unqueueable, s.dropped_at_close, s.retries,
        call_errors > 0 and format(" failed calls %d", call_errors) or "",
        s.counts and counters(s.counts) or ""))
    end
  end
  if report.state_error then out:write("sluice: state: ", report.state_error, "\n") end
  return lost
end

return M
