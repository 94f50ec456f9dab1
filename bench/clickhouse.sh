#!/bin/sh
# bench/clickhouse.sh - ClickHouse insert rate, run by `make bench` after
# bench/run.sh (and on its own: sh bench/clickhouse.sh after `make`).
#
# Starts a clickhouse-server of its own on loopback (free ports, data and
# logs in a temporary directory, removed after), then inserts the bench
# trace (bench/run.sh's: the same parameters, the same file) with
#   sluice run -r trace -q --out clickhouse:http://127.0.0.1:PORT/bench.flows
# once with flows only and once with 1 s slices too, checks that count()
# is the number of rows sluice wrote, and prints
#   clickhouse: N rows in S s = R rows/s
# beside the same jobs writing a JSON file (json: N rows ..., each line a
# row, counted in the file).
# The time is the whole run (reading the trace included) from start to the
# last batch inserted. Without clickhouse-server it says so and exits 0.
#
# Knobs (environment): BENCH_PACKETS, BENCH_CONCURRENT, BENCH_SEED (as
# bench/run.sh), BENCH_CH_BATCH=50000 (batch_rows), CC.
set -eu

NAME=clickhouse
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"
TRACE=$BUILD/trace.pcap
TRUTH=$BUILD/trace.truth.json
PARAMS_FILE=$BUILD/trace.params
PACKETS=${BENCH_PACKETS:-2000000}
CONCURRENT=${BENCH_CONCURRENT:-20000}
SEED=${BENCH_SEED:-1}
BATCH=${BENCH_CH_BATCH:-50000}
CC=${CC:-gcc}

if ! command -v clickhouse-server >/dev/null 2>&1; then
	note "skipped: clickhouse-server is not installed (apt-get install clickhouse-server)"
	exit 0
fi
command -v curl >/dev/null 2>&1 || die "curl not found"
[ -f "$ROOT/core/build/sluice_core.so" ] || die "run 'make' first"

build_genpcap
make_trace

port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

DIR=$(mktemp -d /tmp/sluice-bench-ch.XXXXXX)
PID=
cleanup() {
	[ -z "$PID" ] || kill "$PID" 2>/dev/null || true
	[ -z "$PID" ] || wait "$PID" 2>/dev/null || true
	rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

HTTP=$(port)
TCP=$(port)
cat >"$DIR/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$DIR/server.log</log><errorlog>$DIR/server.err.log</errorlog></logger>
  <http_port>$HTTP</http_port>
  <tcp_port>$TCP</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>$DIR/data/</path>
  <tmp_path>$DIR/tmp/</tmp_path>
  <user_files_path>$DIR/user_files/</user_files_path>
  <format_schema_path>$DIR/format_schemas/</format_schema_path>
  <users_config>$DIR/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>1073741824</mark_cache_size>
  <uncompressed_cache_size>1073741824</uncompressed_cache_size>
</yandex>
EOF
cat >"$DIR/users.xml" <<'EOF'
<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>::/0</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
EOF
clickhouse-server --config-file="$DIR/config.xml" >"$DIR/server.out" 2>&1 &
PID=$!
i=0
until [ "$(curl -s -m 1 "http://127.0.0.1:$HTTP/" 2>/dev/null)" = "Ok." ]; do
	i=$((i + 1))
	[ "$i" -lt 300 ] || die "clickhouse-server did not start: $(cat "$DIR/server.err.log" "$DIR/server.out" 2>/dev/null)"
	sleep 0.1
done

query() {
	printf '%s' "$1" | curl -sS --data-binary @- "http://127.0.0.1:$HTTP/"
}

now() {
	date +%s.%N
}

# measure LABEL TABLE SLICE-ARGS
measure() {
	url="http://127.0.0.1:$HTTP/bench.$2?batch_rows=$BATCH"
	t0=$(now)
	# shellcheck disable=SC2086
	"$ROOT/scripts/sluice" run -r "$TRACE" -q -v $3 --out "clickhouse:$url" 2>"$DIR/run.err" ||
		die "$1: sluice failed: $(cat "$DIR/run.err")"
	t1=$(now)
	rows=$(query "SELECT count() FROM bench.$2")
	written=$(sed -n 's/^sink clickhouse:[^ ]*: written \([0-9]*\) .*/\1/p' "$DIR/run.err")
	[ "$rows" = "$written" ] || die "$1: the table has $rows rows, sluice wrote ${written:-?}"
	awk -v l="$1" -v n="$rows" -v a="$t0" -v b="$t1" 'BEGIN {
		s = b - a; printf "clickhouse: %s: %d rows in %.2f s = %.0f rows/s\n", l, n, s, n / s }'
}

# measure_json LABEL SLICE-ARGS: the same job into a JSON file
measure_json() {
	t0=$(now)
	# shellcheck disable=SC2086
	"$ROOT/scripts/sluice" run -r "$TRACE" -q $2 --out "json:$DIR/rows.json" 2>"$DIR/run.err" ||
		die "$1: sluice failed: $(cat "$DIR/run.err")"
	t1=$(now)
	rows=$(wc -l <"$DIR/rows.json")
	rm -f "$DIR/rows.json"
	awk -v l="$1" -v n="$rows" -v a="$t0" -v b="$t1" 'BEGIN {
		s = b - a; printf "json:       %s: %d rows in %.2f s = %.0f rows/s\n", l, n, s, n / s }'
}

note "server $(query 'SELECT version()') on port $HTTP; trace $PACKETS packets, batches of $BATCH rows"
measure "flows" flows ""
measure_json "flows" ""
measure "flows + 1 s slices" rows "--slice 1"
measure_json "flows + 1 s slices" "--slice 1"
