-- bench/handles.lua: the cost of flow handles. Reads a few fields of every
-- flow in on_flow_start and on_flow_end (bench/run.sh measures it against
-- the engine alone, and against BENCH_BASE's build).
local P = { info = { name = "handles" } }
local pkts, ports = 0, 0

function P.on_flow_start(f) ports = ports + f.dport end

function P.on_flow_end(f) pkts = pkts + f.pkts_fwd + f.pkts_rev end

return P
