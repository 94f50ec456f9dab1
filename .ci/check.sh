#!/bin/sh
# make check: the C unit tests and the busted specs, then the same again
# against the ASan+UBSan build of the core. Ends with "N passed, N failed".
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Runs one suite, shows its output, adds its closing line to the totals. A
# suite that dies before printing its summary counts as one failure.
suite() {
	label=$1
	shift
	echo "== $label"
	"$@" >"$log" 2>&1
	rc=$?
	cat "$log"
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
	if [ -z "$line" ]; then
		echo "!! $label: no summary line (exit $rc)"
		failed=$((failed + 1))
		return
	fi
	p=${line%% passed*}
	f=${line#*, }
	f=${f%% failed}
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "!! $label: exit $rc"
		f=1
	fi
	passed=$((passed + p))
	failed=$((failed + f))
}

for t in core/build/test_*; do
	suite "C $(basename "$t")" "$t"
done
suite "busted" busted

# The sanitizer build: LuaJIT itself is not instrumented, so the runtime is
# preloaded; leak checking is left to the C tests (LuaJIT's own allocations
# at exit are not ours).
asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
export ASAN_OPTIONS=abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
for t in core/build-san/test_*; do
	suite "C $(basename "$t") (asan+ubsan)" "$t"
done
export ASAN_OPTIONS=$ASAN_OPTIONS:detect_leaks=0
export LD_PRELOAD="$asan $ubsan"
export SLUICE_CORE=$PWD/core/build-san/sluice_core.so
suite "busted (asan+ubsan core)" busted
unset LD_PRELOAD SLUICE_CORE

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
