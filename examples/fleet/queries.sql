-- Queries over the fleet's table (fleet.flows: every probe and collector
-- writes there with its own ?probe=NAME). Plain SQL that ClickHouse 18.16
-- runs as well as current servers. Each query starts with a line
-- "-- [name] what it answers" (examples/fleet/demo.sh runs them one by one).
-- On a live table add a time bound, e.g. AND time_start > now() - 3600.

-- [per_probe_minute] Traffic per probe and minute (slices): is every probe sending, and how much?
SELECT probe, toStartOfMinute(time_start) AS minute,
       sum(packets) AS packets, sum(bytes) AS bytes, uniqExact(flow_id) AS flows
FROM fleet.flows
WHERE kind = 'slice'
GROUP BY probe, minute
ORDER BY minute, probe;

-- [top_talkers] Top talkers across the fleet (ended flows, by bytes) and how many probes saw each
SELECT src, sum(bytes) AS bytes, sum(packets) AS packets, count() AS flows,
       uniqExact(probe) AS probes
FROM fleet.flows
WHERE kind = 'flow'
GROUP BY src
ORDER BY bytes DESC, src
LIMIT 10;

-- [top_dports] Top destination ports (protocol number, port) by bytes
SELECT proto, dport, count() AS flows, sum(bytes) AS bytes, uniqExact(src) AS clients
FROM fleet.flows
WHERE kind = 'flow'
GROUP BY proto, dport
ORDER BY bytes DESC, proto, dport
LIMIT 10;

-- [end_reasons] Flows per end reason per probe (many idle or trimmed flows, or rst, stand out)
SELECT probe, end_reason, count() AS flows, sum(packets) AS packets
FROM fleet.flows
WHERE kind = 'flow'
GROUP BY probe, end_reason
ORDER BY probe, flows DESC, end_reason;

-- [multi_probe_hosts] Sources seen by more than one probe (a host talking through several sites, or traffic counted twice)
SELECT src, uniqExact(probe) AS probes, groupUniqArray(probe) AS seen_by,
       count() AS flows, sum(bytes) AS bytes
FROM fleet.flows
WHERE kind = 'flow'
GROUP BY src
HAVING uniqExact(probe) > 1
ORDER BY bytes DESC, src
LIMIT 10;

-- [rows_once] Is every row there once? (1 = no batch was inserted twice)
SELECT count() = uniqExact(batch, row) AS every_row_once
FROM fleet.flows;

-- [by_tag] Traffic by tag (name=value; a collector's flows carry exporter= and domain=)
SELECT tag, count() AS flows, sum(packets) AS packets, sum(bytes) AS bytes
FROM fleet.flows
ARRAY JOIN tags AS tag
WHERE kind = 'flow'
GROUP BY tag
ORDER BY bytes DESC, tag;
