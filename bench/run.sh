#!/bin/sh
# bench/run.sh - the sluice benchmark, run by `make bench` after the build.
#
# Builds the trace generator (shared/bench/genpcap.c, next to the repo) and
# bench/pcap_floor.c into bench/build/, generates a trace once (kept until
# its parameters change), then measures, best of BENCH_RUNS runs each:
#   1. the libpcap read floor (bench/pcap_floor)
#   2. sluice, engine only, no policy handlers   (bench/run.lua engine)
#   3. sluice's default CLI job, every ended flow as JSON to /dev/null,
#      with one worker and with --workers BENCH_WORKERS (default: the cores),
#      and BENCH_WORKERS one-worker jobs at once (the machine's ceiling for
#      splitting the job over that many workers),
#      with --features stats, with --features splt and with --dpi (where the
#      core has nDPI; then Debian's ndpiReader -q on the same trace too,
#      where installed); the engine alone with the statistics too
#   4. examples/top_talkers.lua, scan_detect.lua and subnet_report.lua on
#      1 s slices (bench/run.lua policy), against an empty on_slice
#   5. the default job with 1 s slices, no sink    (bench/run.lua sinks none)
#   6. the same, every flow and slice to a JSON file and as IPFIX
# and prints one table plus each sluice rate as a fraction of the floor,
# and the sinks' rate as a fraction of the no-sink rate (issue 5's bar: 70%).
# See bench/README.md.
#
# With BENCH_BASE=REV, the engine, handle and CLI jobs are measured again
# with the build of revision REV (before/after, side by side).
#
# Knobs (environment): BENCH_BASE, BENCH_RUNS=3, BENCH_PACKETS=2000000,
# BENCH_CONCURRENT=20000, BENCH_SEED=1, BENCH_SLICE=1, BENCH_WORKERS=nproc,
# CC, LUAJIT.
set -eu

NAME=bench
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"
TRACE=$BUILD/trace.pcap
TRUTH=$BUILD/trace.truth.json
PARAMS_FILE=$BUILD/trace.params
TALKERS=$ROOT/examples/top_talkers.lua
SCANS=$ROOT/examples/scan_detect.lua
SUBNETS=$ROOT/examples/subnet_report.lua

PACKETS=${BENCH_PACKETS:-2000000}
CONCURRENT=${BENCH_CONCURRENT:-20000}
SEED=${BENCH_SEED:-1}
RUNS=${BENCH_RUNS:-3}
SLICE=${BENCH_SLICE:-1}
CC=${CC:-gcc}
LUAJIT=${LUAJIT:-luajit}

for v in "$PACKETS" "$CONCURRENT" "$SEED" "$RUNS"; do
	case $v in
	'' | *[!0-9]*) die "BENCH_PACKETS, BENCH_CONCURRENT, BENCH_SEED and BENCH_RUNS must be integers (got '$v')" ;;
	esac
done
[ "$RUNS" -ge 1 ] || die "BENCH_RUNS must be at least 1"

# --- prerequisites ---------------------------------------------------------
command -v "$LUAJIT" >/dev/null 2>&1 || die "'$LUAJIT' not found (apt-get install luajit)"
[ -f "$ROOT/core/build/sluice_core.so" ] ||
	die "core/build/sluice_core.so is missing: run 'make' (or 'make bench') first"
[ -f "$ROOT/lua/sluice/core_h.lua" ] ||
	die "lua/sluice/core_h.lua is missing: run 'make' (or 'make bench') first"

# --- tools -----------------------------------------------------------------
build_genpcap
if stale "$ROOT/bench/pcap_floor.c" "$BUILD/pcap_floor"; then
	note "building pcap_floor"
	"$CC" -O2 -o "$BUILD/pcap_floor" "$ROOT/bench/pcap_floor.c" -lpcap ||
		die "cannot build bench/pcap_floor.c: it needs libpcap's headers and library (apt-get install libpcap-dev)"
fi

# --- trace -----------------------------------------------------------------
make_trace
T_PACKETS=$(truth packets)
T_FLOWS=$(truth flows)
T_CONC=$(truth concurrent)
T_DUR=$(truth duration_s)
if [ -z "$T_PACKETS" ] || [ -z "$T_FLOWS" ]; then
	die "cannot read packets/flows from $TRUTH (delete it to regenerate)"
fi
T_MB=$(trace_mb)

# --- clocks and RSS for the CLI subprocess ---------------------------------
# GNU date has %N; elsewhere fall back to LuaJIT's clock_gettime.
case $(date +%N 2>/dev/null) in
'' | *[!0-9]*) NOW=luajit ;;
*) NOW='date' ;;
esac
now() {
	if [ "$NOW" = date ]; then
		date +%s.%N
	else
		"$LUAJIT" -e 'local ffi = require "ffi"
			ffi.cdef "struct ts { long s; long ns; }; int clock_gettime(int, struct ts *);"
			local t = ffi.new("struct ts"); ffi.C.clock_gettime(1, t)
			io.write(string.format("%d.%09d\n", tonumber(t.s), tonumber(t.ns)))'
	fi
}
# Peak RSS of the child: GNU time if present, else python3's
# getrusage(RUSAGE_CHILDREN), else not measured.
if [ -x /usr/bin/time ] && /usr/bin/time -f %M -o "$BUILD/time.probe" true 2>/dev/null &&
	grep -q '^[0-9][0-9]*$' "$BUILD/time.probe" 2>/dev/null; then
	RSS_TOOL='time'
elif command -v python3 >/dev/null 2>&1; then
	RSS_TOOL=python3
else
	RSS_TOOL=none
fi
rm -f "$BUILD/time.probe"

# The default CLI job as a subprocess; -v adds the final counters on stderr,
# from which the packet and flow counts are read.
run_cli() {
	rssf=$BUILD/cli.rss
	errf=$BUILD/cli.stderr
	rm -f "$rssf"
	rc=0
	set -- "$TREE/scripts/sluice" run -r "$TRACE" -q -v --out json:/dev/null "$@"
	t0=$(now)
	case $RSS_TOOL in
	time) /usr/bin/time -f %M -o "$rssf" "$@" 2>"$errf" || rc=$? ;;
	python3) # timed inside python too: its own start-up is not sluice's
		python3 -c 'import resource, subprocess, sys, time
t = time.monotonic()
rc = subprocess.call(sys.argv[2:])
t = time.monotonic() - t
with open(sys.argv[1], "w") as f:
    f.write("%.6f\n%d\n" % (t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(rc)' "$rssf" "$@" 2>"$errf" || rc=$? ;;
	*) "$@" 2>"$errf" || rc=$? ;;
	esac
	t1=$(now)
	if [ "${rc:-0}" != 0 ]; then
		cat "$errf" >&2
		echo "scripts/sluice exited with status $rc" >&2
		return 1
	fi
	pk=$(sed -n 's/^packets \([0-9][0-9]*\) .*/\1/p' "$errf" | tail -n 1)
	fl=$(sed -n 's/^flows \([0-9][0-9]*\) .*/\1/p' "$errf" | tail -n 1)
	secs=$(echo "$t0 $t1" | awk '{ printf "%.6f", $2 - $1 }')
	rss=n/a
	if [ -s "$rssf" ]; then
		rss=$(tail -n 1 "$rssf")
		[ "$RSS_TOOL" = python3 ] && secs=$(head -n 1 "$rssf")
	fi
	echo "packets ${pk:-?} seconds $secs rss_kb $rss flows ${fl:-?}"
}

# WORKERS one-worker CLI jobs at once, each over the whole trace: the
# machine's ceiling for any split of the job over that many workers (no
# work shared, none repeated). Printed as the time of one trace's worth.
run_cli_copies() {
	t0=$(now)
	pids=
	i=0
	while [ "$i" -lt "$WORKERS" ]; do
		"$TREE/scripts/sluice" run -r "$TRACE" -q --out json:/dev/null \
			2>"$BUILD/copies.$i.err" &
		pids="$pids $!"
		i=$((i + 1))
	done
	rc=0
	for p in $pids; do wait "$p" || rc=1; done
	t1=$(now)
	if [ "$rc" != 0 ]; then
		cat "$BUILD"/copies.*.err >&2
		return 1
	fi
	secs=$(echo "$t0 $t1 $WORKERS" | awk '{ printf "%.6f", ($2 - $1) / $3 }')
	echo "packets $T_PACKETS seconds $secs rss_kb n/a"
}

# Debian's ndpiReader over the trace (quiet: no per-flow print), timed as
# the CLI is; the packets are the trace's.
run_ndpireader() {
	t0=$(now)
	ndpiReader -q -i "$TRACE" >"$BUILD/ndpireader.out" 2>&1 || {
		tail -n 5 "$BUILD/ndpireader.out" >&2
		return 1
	}
	t1=$(now)
	secs=$(echo "$t0 $t1" | awk '{ printf "%.6f", $2 - $1 }')
	echo "packets $T_PACKETS seconds $secs rss_kb n/a"
}

# --dpi is measured where the core has nDPI, against ndpiReader where it
# is installed.
HAVE_DPI=0
ldd "$ROOT/core/build/sluice_core.so" 2>/dev/null | grep -q libndpi && HAVE_DPI=1
HAVE_NDPIREADER=0
command -v ndpiReader >/dev/null 2>&1 && HAVE_NDPIREADER=1

one_run() {
	case $1 in
	floor) "$BUILD/pcap_floor" "$TRACE" ;;
	engine) "$LUAJIT" "$TREE/bench/run.lua" engine "$TRACE" ;;
	handles) "$LUAJIT" "$TREE/bench/run.lua" policy "$TRACE" "$ROOT/bench/handles.lua" 0 ;;
	trim) "$LUAJIT" "$ROOT/bench/run.lua" trim "$TRACE" $((T_CONC / 2)) ;;
	cli) run_cli ;;
	workers) run_cli --workers "$WORKERS" ;;
	copies) run_cli_copies ;;
	stats) run_cli --features stats ;;
	splt) run_cli --features splt ;;
	enginestats) BENCH_FEATURES=stats "$LUAJIT" "$TREE/bench/run.lua" engine "$TRACE" ;;
	dpi) run_cli --dpi ;;
	ndpireader) run_ndpireader ;;
	talkers) "$LUAJIT" "$ROOT/bench/run.lua" policy "$TRACE" "$TALKERS" "$SLICE" ;;
	scans) "$LUAJIT" "$ROOT/bench/run.lua" policy "$TRACE" "$SCANS" "$SLICE" ;;
	subnets) "$LUAJIT" "$ROOT/bench/run.lua" policy "$TRACE" "$SUBNETS" "$SLICE" ;;
	emptyslice) "$LUAJIT" "$ROOT/bench/run.lua" policy "$TRACE" "$ROOT/bench/empty_slice.lua" "$SLICE" ;;
	nosink) "$LUAJIT" "$ROOT/bench/run.lua" sinks "$TRACE" "$SLICE" none ;;
	sinks) "$LUAJIT" "$ROOT/bench/run.lua" sinks "$TRACE" "$SLICE" "$BUILD/sinks.json" ;;
	esac
}

# --workers on the trace (issue 15's bar on 2 cores: 1.7x one worker)
WORKERS=${BENCH_WORKERS:-$(nproc 2>/dev/null || echo 2)}
[ "$WORKERS" -ge 2 ] 2>/dev/null || WORKERS=2

# --- measurements ----------------------------------------------------------
FAILED=0
FLOOR_MPPS=
RATIOS=

# field NAME LINE: the value after NAME in a "name value name value" line.
field() {
	echo "$2" | awk -v k="$1" '{ for (i = 1; i < NF; i += 2) if ($i == k) { print $(i + 1); exit } }'
}

# measure KIND LABEL [KIND LABEL ...]: best of RUNS by packets/second,
# one table line each. Several jobs are measured in turns (run 1 of each,
# then run 2 of each, ...), so that a noisy spell of the machine falls on
# all of them: the ratios between them printed below are taken in turns.
measure() {
	kinds=
	while [ $# -ge 2 ]; do
		kinds="$kinds $1"
		eval "LABEL_$1=\$2 BEST_$1= DEAD_$1="
		shift 2
	done
	i=1
	while [ "$i" -le "$RUNS" ]; do
		for kind in $kinds; do
			eval "[ -z \"\$DEAD_$kind\" ]" || continue
			eval "label=\$LABEL_$kind best=\$BEST_$kind"
			if line=$(one_run "$kind" 2>"$BUILD/$kind.err"); then
				best=$(printf '%s\n%s\n' "$best" "$line" | awk '
					$1 == "packets" && $4 > 0 {
						r = ($2 ~ /^[0-9]+$/ ? $2 : '"$T_PACKETS"') / $4
						if (!seen || r > bestr) { bestr = r; b = $0; seen = 1 }
					}
					END { print b }')
				eval "BEST_$kind=\$best"
			else
				FAILED=1
				eval "DEAD_$kind=1"
				printf '%-20s FAILED (run %d of %d):\n' "$label" "$i" "$RUNS"
				sed 's/^/    /' "$BUILD/$kind.err" | tail -n 8
			fi
		done
		i=$((i + 1))
	done
	for kind in $kinds; do
		eval "[ -z \"\$DEAD_$kind\" ]" || continue
		eval "label=\$LABEL_$kind best=\$BEST_$kind"
		report "$kind" "$label" "$best"
	done
}

# report KIND LABEL BEST: the table line of a job's best run.
report() {
	kind=$1
	label=$2
	best=$3
	if [ -z "$best" ]; then
		FAILED=1
		printf '%-20s FAILED: no usable result\n' "$label"
		return 0
	fi
	pk=$(field packets "$best")
	secs=$(field seconds "$best")
	rss=$(field rss_kb "$best")
	fl=$(field flows "$best")
	pk_n=$pk
	case $pk_n in '' | *[!0-9]*) pk_n=$T_PACKETS ;; esac
	mpps=$(echo "$pk_n $secs" | awk '{ printf "%.2f", $1 / $2 / 1e6 }')
	rss_mb=n/a
	case $rss in '' | *[!0-9]*) ;; *) rss_mb=$(echo "$rss" | awk '{ printf "%.0f MB", $1 / 1024 }') ;; esac
	extra=
	[ -n "$fl" ] && extra="   flows $fl"
	[ "$pk" = "$T_PACKETS" ] || extra="$extra   (!) trace has $T_PACKETS packets"
	printf '%-20s %8s pkts %6.2f s %6.2f Mpps   rss %s%s\n' \
		"$label" "$pk" "$secs" "$mpps" "$rss_mb" "$extra"
	if [ "$kind" = floor ]; then
		FLOOR_MPPS=$mpps
	else
		RATIOS="$RATIOS$label|$mpps
"
	fi
}

CPU=$(cpu_model)
echo "sluice bench  $(date '+%Y-%m-%d %H:%M')  $(uname -m)${CPU:+, $CPU}  best of $RUNS runs"
echo "trace: ${TRACE#"$ROOT"/}  $T_PACKETS packets  $T_MB MB  ground truth: $T_FLOWS flows, $T_CONC concurrent, ${T_DUR}s of traffic"
echo

# Warm the page cache so the first run does not pay for the disk.
cat "$TRACE" >/dev/null

TREE=$ROOT
measure floor "libpcap floor"
measure engine "sluice engine only" enginestats "engine only stats"
measure handles "flow handles"
measure trim "engine max-flows C/2"
measure cli "sluice CLI json" workers "CLI json workers $WORKERS" \
	copies "$WORKERS CLI jobs at once" stats "CLI json stats" \
	splt "CLI json splt"
if [ "$HAVE_DPI" = 1 ]; then
	measure dpi "CLI json dpi"
	[ "$HAVE_NDPIREADER" = 1 ] && measure ndpireader "ndpiReader -q"
else
	printf '%-20s not measured: the core was built without nDPI (libndpi-dev)\n' "CLI json dpi"
fi
measure emptyslice "empty on_slice $SLICE"
measure talkers "top_talkers slice $SLICE"
measure scans "scan_detect slice $SLICE"
measure subnets "subnet_report slice $SLICE"

# BENCH_BASE=REV: the same jobs with the build of an earlier revision, in
# the same run (so the machine's noise is shared), e.g. before a change.
if [ -n "${BENCH_BASE:-}" ]; then
	BASE=$BUILD/base
	rm -rf "$BASE" && mkdir -p "$BASE"
	if git -C "$ROOT" archive "$BENCH_BASE" | tar -x -C "$BASE" &&
		make -C "$BASE" all >"$BUILD/base.log" 2>&1; then
		TREE=$BASE
		measure engine "base engine only"
		measure handles "base flow handles"
		measure cli "base CLI json"
		TREE=$ROOT
	else
		FAILED=1
		echo "BENCH_BASE=$BENCH_BASE: cannot build it (bench/build/base.log)"
	fi
fi

measure nosink "no sink, slice $SLICE"
measure sinks "json+ipfix slice $SLICE"
NOSINK=$(printf '%s' "$RATIOS" | sed -n "s/^no sink, slice $SLICE|//p")
WITHSINKS=$(printf '%s' "$RATIOS" | sed -n "s/^json+ipfix slice $SLICE|//p")
if [ -n "$NOSINK" ] && [ -n "$WITHSINKS" ]; then
	echo "$WITHSINKS $NOSINK" | awk '{ printf "%-20s %.0f%% of the no-sink rate (JSON file + IPFIX export of every flow and slice)\n", "sinks", 100 * $1 / $2 }'
fi

CLI1=$(printf '%s' "$RATIOS" | sed -n 's/^sluice CLI json|//p')
CLIS=$(printf '%s' "$RATIOS" | sed -n 's/^CLI json stats|//p')
if [ -n "$CLI1" ] && [ -n "$CLIS" ]; then
	echo "$CLIS $CLI1" | awk '{ printf "%-20s %.0f%% of the plain rate (--features stats: size, inter-arrival and flag statistics of every flow, in its JSON line)\n", "features stats", 100 * $1 / $2 }'
fi
ENG1=$(printf '%s' "$RATIOS" | sed -n 's/^sluice engine only|//p')
ENGS=$(printf '%s' "$RATIOS" | sed -n 's/^engine only stats|//p')
if [ -n "$ENG1" ] && [ -n "$ENGS" ]; then
	echo "$ENGS $ENG1" | awk '{ printf "%-20s %.0f%% of the engine-only rate (the statistics computed, nothing written)\n", "features stats", 100 * $1 / $2 }'
fi
CLIP=$(printf '%s' "$RATIOS" | sed -n 's/^CLI json splt|//p')
if [ -n "$CLI1" ] && [ -n "$CLIP" ]; then
	echo "$CLIP $CLI1" | awk '{ printf "%-20s %.0f%% of the plain rate (--features splt: the first 10 packets of every flow, in its JSON line)\n", "features splt", 100 * $1 / $2 }'
fi
CLID=$(printf '%s' "$RATIOS" | sed -n 's/^CLI json dpi|//p')
if [ -n "$CLI1" ] && [ -n "$CLID" ]; then
	echo "$CLID $CLI1" | awk '{ printf "%-20s %.0f%% of the plain rate (--dpi: nDPI application labels of every flow, in its JSON line)\n", "features dpi", 100 * $1 / $2 }'
fi
NDPIR=$(printf '%s' "$RATIOS" | sed -n 's/^ndpiReader -q|//p')
if [ -n "$CLID" ] && [ -n "$NDPIR" ]; then
	echo "$CLID $NDPIR" | awk '{ printf "%-20s %.1fx the speed of ndpiReader (Debian'"'"'s, -q, on the same trace)\n", "dpi", $1 / $2 }'
fi
CLIW=$(printf '%s' "$RATIOS" | sed -n "s/^CLI json workers $WORKERS|//p")
if [ -n "$CLI1" ] && [ -n "$CLIW" ]; then
	echo "$CLIW $CLI1" | awk -v n="$WORKERS" '{ printf "%-20s %.2fx the one-worker rate (the file read once for all: each worker decodes and counts its own flows)\n", "workers " n, $1 / $2 }'
fi
CLIC=$(printf '%s' "$RATIOS" | sed -n "s/^$WORKERS CLI jobs at once|//p")
if [ -n "$CLI1" ] && [ -n "$CLIC" ]; then
	echo "$CLIC $CLI1" | awk -v n="$WORKERS" '{ printf "%-20s %.2fx the one-worker rate (%d whole one-worker jobs at once: the ceiling of any split of the job over %d workers here)\n", "ceiling " n, $1 / $2, n, n }'
fi

# engine:update from Lua (the gatherer), best of RUNS
best_upd=0
i=0
while [ "$i" -lt "$RUNS" ]; do
	line=$("$LUAJIT" "$ROOT/bench/run.lua" update "$TRACE" 1000000 100000) || die "update bench failed"
	rate=${line##* rate }
	[ "$rate" -gt "$best_upd" ] && best_upd=$rate
	i=$((i + 1))
done
printf '%-20s %s updates/s (engine:update from Lua, 1M updates over 100k id keys)\n' "engine:update" "$best_upd"

# The collector: an exporter replay (sluice's own IPFIX, 2M records: 50k
# flows as uniflow pairs, reported again and again) over TCP (lossless) and UDP (drops counted) into
# the default job writing JSON to /dev/null, best of RUNS.
for tr in tcp udp; do
	best_rate=0
	best_line=
	i=0
	while [ "$i" -lt "$RUNS" ]; do
		line=$("$LUAJIT" "$ROOT/bench/collect.lua" "$tr" 2000000 2>"$BUILD/collect.err") || {
			FAILED=1
			printf '%-20s FAILED:\n' "collect $tr"
			sed 's/^/    /' "$BUILD/collect.err" | tail -n 8
			break
		}
		rate=$(field rate "$line")
		if [ "${rate%.*}" -gt "$best_rate" ]; then
			best_rate=${rate%.*}
			best_line=$line
		fi
		i=$((i + 1))
	done
	[ -n "$best_line" ] && printf '%-20s %s records/s (%s records, %s flows, %s socket drops)\n' \
		"collect ipfix/$tr" "$best_rate" "$(field records "$best_line")" "$(field flows "$best_line")" \
		"$(field drops "$best_line")"
done

# Policies against the default job (issue 14's bar: top_talkers 0.8x, the
# cookbook's 0.7x), and what each slice record costs them in Lua and C
# beyond an on_slice that does nothing.
CLI_MPPS=$(printf '%s' "$RATIOS" | sed -n 's/^sluice CLI json|//p')
if [ -n "$CLI_MPPS" ] && [ -n "${BEST_emptyslice:-}" ]; then
	echo
	echo "policies relative to the default job (sluice CLI json, $CLI_MPPS Mpps):"
	base_s=$(field seconds "$BEST_emptyslice")
	for kind in talkers scans subnets; do
		eval "line=\${BEST_$kind:-}"
		[ -n "$line" ] || continue
		case $kind in
		talkers) name=top_talkers ;; scans) name=scan_detect ;; *) name=subnet_report ;;
		esac
		echo "$name $(field packets "$line") $(field seconds "$line") $(field slice_records "$line") $base_s $CLI_MPPS" |
			awk '{ mpps = $2 / $3 / 1e6
				printf "  %-20s %5.2fx the default job   %6.1f ns per slice record (%d records)\n",
					$1, mpps / $6, ($3 - $5) * 1e9 / $4, $4 }'
	done
fi

if [ -n "$FLOOR_MPPS" ] && [ -n "$RATIOS" ]; then
	echo
	echo "rate relative to the libpcap floor ($FLOOR_MPPS Mpps):"
	printf '%s' "$RATIOS" | while IFS='|' read -r label mpps; do
		echo "$label $mpps $FLOOR_MPPS" | awk -v l="$label" '{
			printf "  %-20s %5.2fx floor", l, $(NF - 1) / $NF
			if ($(NF - 1) > 0) printf "   (%+.1f ns/pkt vs the floor)", 1e3 / $(NF - 1) - 1e3 / $NF
			printf "\n" }'
	done
fi
case $RSS_TOOL in
none) how="not measured (no GNU time, no python3)" ;;
time) how="from /usr/bin/time" ;;
*) how="from python3 getrusage" ;;
esac
echo "(rss: peak resident set; sluice reads the trace through a 1 MiB window, not counted beyond it; CLI rss $how)"

if [ "$FAILED" != 0 ]; then
	echo
	die "some measurements failed (details above; stderr kept in bench/build/*.err)"
fi
