#!/bin/sh
# bench/live.sh - live capture benchmark, run by `make bench-live`.
#
# Builds the trace generator (shared/bench/genpcap.c, next to the repo) into
# bench/build/, generates a trace once (kept until its parameters change),
# makes a network namespace with a veth pair (unique names), and for each
# backend: starts `sluice run -i HOST --backend B --out json:/dev/null -v`
# on the host end, replays the trace from inside the namespace with
# `tcpreplay --topspeed`, stops sluice with SIGTERM, and prints what was
# sent (tcpreplay's own count and rate) against what sluice received,
# processed and lost. Everything is torn down at the end (trap). Needs
# root; without it (or where the kernel refuses namespaces) it says why and
# exits 0.
#
# Knobs (environment): LIVE_PACKETS=1000000, LIVE_CONCURRENT=10000,
# LIVE_SEED=1, LIVE_BACKENDS="afpacket pcap afxdp", LIVE_WORKERS=1,
# LIVE_SETTLE=2 (seconds sluice gets to drain after the replay), CC.
set -eu

NAME=bench-live
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "$0")/common.sh"
TRACE=$BUILD/live.pcap
TRUTH=$BUILD/live.truth.json
PARAMS_FILE=$BUILD/live.params

PACKETS=${LIVE_PACKETS:-1000000}
CONCURRENT=${LIVE_CONCURRENT:-10000}
SEED=${LIVE_SEED:-1}
BACKENDS=${LIVE_BACKENDS:-afpacket pcap afxdp}
WORKERS=${LIVE_WORKERS:-1}
SETTLE=${LIVE_SETTLE:-2}
CC=${CC:-gcc}

skip() {
	echo "bench-live: skipped: $*"
	exit 0
}

for v in "$PACKETS" "$CONCURRENT" "$SEED" "$WORKERS"; do
	case $v in
	'' | *[!0-9]*) die "LIVE_PACKETS, LIVE_CONCURRENT, LIVE_SEED and LIVE_WORKERS must be integers (got '$v')" ;;
	esac
done
for b in $BACKENDS; do
	case $b in
	afpacket | pcap | afxdp) ;;
	*) die "LIVE_BACKENDS: unknown backend '$b' (afpacket, pcap, afxdp)" ;;
	esac
done

# --- prerequisites ---------------------------------------------------------
[ "$(id -u)" = 0 ] || skip "live capture needs root (network namespace, veth pair, raw sockets); run 'sudo make bench-live'"
for tool in ip tcpreplay sysctl; do
	command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (apt-get install $(
		case $tool in ip) echo iproute2 ;; sysctl) echo procps ;; *) echo "$tool" ;; esac
	))"
done
[ -f "$ROOT/core/build/sluice_core.so" ] ||
	die "core/build/sluice_core.so is missing: run 'make' (or 'make bench-live') first"

# --- generator and trace -----------------------------------------------------
build_genpcap
make_trace
T_PACKETS=$(truth packets)
T_FLOWS=$(truth flows)
T_MB=$(trace_mb)

# --- namespace and veth pair -------------------------------------------------
TAG=$$
NS=sluice-bench-$TAG
HOST=slbh$TAG
PEER=slbp$TAG
SLUICE_PID=

cleanup() {
	if [ -n "$SLUICE_PID" ]; then
		kill -TERM "$SLUICE_PID" 2>/dev/null || :
		sleep 1
		kill -KILL "$SLUICE_PID" 2>/dev/null || :
	fi
	ip link del "$HOST" 2>/dev/null || :
	ip netns del "$NS" 2>/dev/null || :
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if ! err=$(ip netns add "$NS" 2>&1); then
	skip "the kernel refuses network namespaces: ip netns add: $err"
fi
# one queue per worker (afxdp binds worker w to queue w)
QOPT=
[ "$WORKERS" -gt 1 ] && QOPT="numtxqueues $WORKERS numrxqueues $WORKERS"
# shellcheck disable=SC2086
if ! err=$(ip link add "$HOST" $QOPT type veth peer name "$PEER" $QOPT netns "$NS" 2>&1); then
	skip "the kernel refuses veth pairs: $err"
fi
# no IPv6 and no addresses: the kernel sends nothing of its own
sysctl -qw "net.ipv6.conf.$HOST.disable_ipv6=1"
ip netns exec "$NS" sysctl -qw "net.ipv6.conf.$PEER.disable_ipv6=1"
ip link set dev "$HOST" up
ip netns exec "$NS" ip link set dev "$PEER" up
IFINDEX=$(cat "/sys/class/net/$HOST/ifindex")
QUEUES=$(find "/sys/class/net/$HOST/queues" -name 'rx-*' 2>/dev/null | wc -l | tr -d ' ')

# packet sockets bound to the host end (afpacket, pcap)
packet_sockets() {
	awk -v i="$IFINDEX" 'NR > 1 && $5 == i { n++ } END { print n + 0 }' /proc/net/packet
}
xdp_attached() {
	ip -d link show dev "$HOST" | grep -q xdp
}
# wait_ready BACKEND: until the capture is open (or sluice exited)
wait_ready() {
	i=0
	while [ "$i" -lt 200 ]; do
		kill -0 "$SLUICE_PID" 2>/dev/null || return 1
		case $1 in
		afxdp) xdp_attached && break ;;
		*) [ "$(packet_sockets)" -ge "$WORKERS" ] && break ;;
		esac
		sleep 0.05
		i=$((i + 1))
	done
	[ "$i" -lt 200 ] || return 1
	sleep 0.5
}

# counter NAME [NAME2]: the sum of the numbers after NAME (or NAME2) on
# stdin ("... received 123 drops 0 ..."; one line per worker); empty if none
counter() {
	awk -v a="$1" -v b="${2:-$1}" '{
		for (i = 1; i < NF; i++)
			if (($i == a || $i == b) && $(i + 1) ~ /^[0-9]+$/) { s += $(i + 1); n++ }
	} END { if (n) print s }'
}

CPU=$(cpu_model)
echo "sluice live bench  $(date '+%Y-%m-%d %H:%M')  $(uname -m)${CPU:+, $CPU}, $(nproc 2>/dev/null || echo '?') CPUs, kernel $(uname -r)"
echo "trace: ${TRACE#"$ROOT"/}  $T_PACKETS packets  $T_MB MB  $T_FLOWS flows; replayed with tcpreplay --topspeed --preload-pcap"
echo "veth: $HOST (host, $QUEUES queues) <-> $PEER (in $NS); sluice --workers $WORKERS"
echo
printf '%-9s %9s %9s %9s %9s %9s %8s  %s\n' backend sent "Mpps(tx)" received processed dropped lost flows
FAILED=0
for b in $BACKENDS; do
	errf=$BUILD/live.$b.stderr
	txf=$BUILD/live.$b.tcpreplay
	rm -f "$errf" "$txf"
	wopt=
	[ "$WORKERS" -gt 1 ] && wopt="--workers $WORKERS"
	# --stats: received/drops from the source, the last line before the stop
	# shellcheck disable=SC2086
	"$ROOT/scripts/sluice" run -i "$HOST" --backend "$b" $wopt --out json:/dev/null -v -q \
		--stats 0.5 2>"$errf" &
	SLUICE_PID=$!
	if ! wait_ready "$b"; then
		FAILED=1
		printf '%-9s FAILED: sluice did not start capturing\n' "$b"
		sed 's/^/    /' "$errf" | grep -v '^    lib\(bpf\|xdp\):' | tail -n 8
		kill -TERM "$SLUICE_PID" 2>/dev/null || :
		wait "$SLUICE_PID" 2>/dev/null || :
		SLUICE_PID=
		continue
	fi
	ip netns exec "$NS" tcpreplay --topspeed --preload-pcap -i "$PEER" "$TRACE" >"$txf" 2>&1 || {
		FAILED=1
		printf '%-9s tcpreplay failed:\n' "$b"
		sed 's/^/    /' "$txf" | tail -n 8
	}
	sleep "$SETTLE"
	kill -TERM "$SLUICE_PID" 2>/dev/null || :
	rc=0
	wait "$SLUICE_PID" || rc=$?
	SLUICE_PID=
	sent=$(sed -n 's/.*Actual: \([0-9]*\) packets.*/\1/p' "$txf" | tail -n 1)
	pps=$(sed -n 's/.*Rated: .*, \([0-9.]*\) pps.*/\1/p' "$txf" | tail -n 1)
	mpps=$(echo "${pps:-0}" | awk '{ printf "%.2f", $1 / 1e6 }')
	# final counters of -v: "packets N bytes ...", "flows N ended ...", and
	# received/drops when -v prints them; else the last stats: line
	processed=$(sed -n 's/^packets \([0-9][0-9]*\) bytes.*/\1/p' "$errf" | awk '{ s += $1 } END { if (NR) print s }')
	flows=$(sed -n 's/^flows \([0-9][0-9]*\) ended.*/\1/p' "$errf" | awk '{ s += $1 } END { if (NR) print s }')
	received=$(grep -v '^stats:' "$errf" | counter received)
	dropped=$(grep -v '^stats:' "$errf" | counter drops kernel_drops)
	src=-v
	if [ -z "$received" ] || [ -z "$dropped" ]; then
		src=stats
		grep '^stats:' "$errf" >"$errf.stats" || :
		if [ "$WORKERS" -gt 1 ]; then
			# one stats line per worker per interval: the last WORKERS lines
			tail -n "$WORKERS" "$errf.stats" >"$errf.last"
		else
			tail -n 1 "$errf.stats" >"$errf.last"
		fi
		received=$(counter received <"$errf.last")
		dropped=$(counter drops <"$errf.last")
		rm -f "$errf.stats" "$errf.last"
	fi
	lost='?'
	case "$sent:$processed" in
	*[!0-9:]* | :* | *:) ;;
	*) lost=$((sent - processed)) ;;
	esac
	printf '%-9s %9s %9s %9s %9s %9s %8s  %s\n' "$b" "${sent:-?}" "$mpps" "${received:-?}" \
		"${processed:-?}" "${dropped:-?}" "$lost" "${flows:-?}"
	if [ "$rc" != 0 ]; then
		FAILED=1
		echo "    sluice exited with status $rc after SIGTERM:"
		grep -v '^stats:\|^lib\(bpf\|xdp\):' "$errf" | sed 's/^/    /' | tail -n 8
	fi
	LAST_SRC=$src
done
echo
echo "sent: tcpreplay's count; Mpps(tx): tcpreplay's rate; received/dropped: the source's"
echo "counters (${LAST_SRC:-stats} lines; dropped = kernel ring drops); processed: packets the engine"
echo "decoded (-v); lost = sent - processed; flows: flows sluice saw (the trace has $T_FLOWS)."
if [ "$WORKERS" -gt 1 ]; then
	echo "workers: afpacket workers share one fanout group (hash); afxdp worker w reads queue w."
	echo "veth picks the queue by the sender's flow hash, but for 802.1Q-tagged frames sent"
	echo "through a packet socket (tcpreplay) that hash varies per packet, so with afxdp the"
	echo "tagged flows of the trace are split over the workers and counted more than once."
fi
echo "stderr of each run: bench/build/live.BACKEND.stderr"
[ "$FAILED" = 0 ] || die "some runs failed (details above)"
