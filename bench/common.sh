# shellcheck shell=sh
# bench/common.sh - sourced by bench/run.sh and bench/live.sh: where things
# are, messages, and the trace both of them generate with the shared trace
# generator (shared/bench/genpcap.c next to the repo, or SLUICE_GENPCAP_C).
#
# The sourcing script sets NAME (the prefix of its messages) first, and
# before make_trace: TRACE, TRUTH, PARAMS_FILE, PACKETS, CONCURRENT, SEED
# and CC.

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GENSRC=${SLUICE_GENPCAP_C:-$(dirname "$ROOT")/shared/bench/genpcap.c}
[ -f "$GENSRC" ] || [ ! -f /work/shared/bench/genpcap.c ] || GENSRC=/work/shared/bench/genpcap.c
BUILD=$ROOT/bench/build

die() {
	echo "$NAME: $*" >&2
	exit 1
}
note() {
	echo "$NAME: $*" >&2
}

# stale SRC BIN: BIN is missing or older than SRC (find -newer: POSIX).
stale() {
	[ ! -x "$2" ] || [ -n "$(find "$1" -newer "$2" 2>/dev/null)" ]
}

# Builds bench/build/genpcap from GENSRC unless it is up to date.
build_genpcap() {
	[ -f "$GENSRC" ] || die "trace generator not found: $GENSRC
  (bench expects the shared generator at <repo>/../shared/bench/genpcap.c;
  it is not part of this repository and is never copied into it; set
  SLUICE_GENPCAP_C to its path)"
	command -v "$CC" >/dev/null 2>&1 || die "C compiler '$CC' not found"
	mkdir -p "$BUILD"
	if stale "$GENSRC" "$BUILD/genpcap"; then
		note "building genpcap from $GENSRC"
		"$CC" -O2 -o "$BUILD/genpcap" "$GENSRC" -lm ||
			die "cannot build $GENSRC"
	fi
}

# Generates TRACE (ground truth in TRUTH) only when it is missing or when
# the parameters (or the generator's source) changed; same parameters give
# the same bytes.
make_trace() {
	GENSUM=$(cksum <"$GENSRC" | awk '{ print $1 "-" $2 }')
	PARAMS="genpcap -n $PACKETS -c $CONCURRENT -s $SEED src $GENSUM"
	if [ -f "$TRACE" ] && [ -s "$TRUTH" ] && [ -f "$PARAMS_FILE" ] &&
		[ "$(cat "$PARAMS_FILE")" = "$PARAMS" ]; then
		return 0
	fi
	note "generating trace: $PACKETS packets, $CONCURRENT concurrent flows, seed $SEED"
	rm -f "$TRACE" "$TRUTH" "$PARAMS_FILE"
	"$BUILD/genpcap" -o "$TRACE.tmp" -n "$PACKETS" -c "$CONCURRENT" -s "$SEED" 2>"$TRUTH.tmp" || {
		cat "$TRUTH.tmp" >&2
		rm -f "$TRACE.tmp" "$TRUTH.tmp"
		die "genpcap failed"
	}
	mv "$TRACE.tmp" "$TRACE"
	mv "$TRUTH.tmp" "$TRUTH"
	printf '%s\n' "$PARAMS" >"$PARAMS_FILE"
}

# A number from the ground truth JSON (genpcap prints one key per name).
truth() {
	sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p" "$TRUTH" | head -n 1
}

# The trace's size in MB, rounded.
trace_mb() {
	wc -c <"$TRACE" | awk '{ printf "%.0f", $1 / 1048576 }'
}

# The CPU model, for the header line (empty where /proc/cpuinfo has none).
cpu_model() {
	sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1
}
