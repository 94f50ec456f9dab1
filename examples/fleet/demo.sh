#!/usr/bin/env bash
# A fleet on one machine: a clickhouse-server of its own (loopback, free
# ports, everything in a temporary directory), two "probes" that read
# examples/sample.pcap into one table (probe-b with examples/fleet/tag_apps.lua,
# which adds app= tags), then every query of examples/fleet/queries.sql,
# each under a "=== name: what it answers" heading. The server is stopped and
# the directory removed on exit. Needs clickhouse-server and curl.
#   examples/fleet/demo.sh            (from anywhere)
# Exits non-zero, saying why, when a step fails.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SLUICE="$ROOT/scripts/sluice"
PCAP="$ROOT/examples/sample.pcap"

die() { echo "demo.sh: $*" >&2; exit 1; }
# clickhouse-server, curl and python3 never see a sanitizer preload
# (the specs' ASan pass sets one for sluice).
plain() { env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS "$@"; }

for tool in clickhouse-server curl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed"
done
[ -x "$SLUICE" ] || die "$SLUICE not found"
[ -f "$ROOT/core/build/sluice_core.so" ] || die "the core is not built: run 'make all' in $ROOT"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluice-fleet.XXXXXX")
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Two ports free on 127.0.0.1 (both held while asked, so they differ);
# without python3, random ports nothing answers on.
free_ports() {
  if command -v python3 >/dev/null 2>&1; then
    plain python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])'
    return
  fi
  local ports= p
  while [ "$(echo $ports | wc -w)" -lt 2 ]; do
    p=$((20000 + RANDOM % 40000))
    case " $ports " in *" $p "*) continue ;; esac
    (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null || ports="$ports $p"
  done
  echo $ports
}
read -r HTTP_PORT TCP_PORT < <(free_ports) || die "cannot find free ports"

mkdir -p "$TMP/data" "$TMP/tmp" "$TMP/user_files" "$TMP/format_schemas"
cat >"$TMP/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$TMP/server.log</log><errorlog>$TMP/server.err.log</errorlog></logger>
  <http_port>$HTTP_PORT</http_port>
  <tcp_port>$TCP_PORT</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>$TMP/data/</path>
  <tmp_path>$TMP/tmp/</tmp_path>
  <user_files_path>$TMP/user_files/</user_files_path>
  <format_schema_path>$TMP/format_schemas/</format_schema_path>
  <users_config>$TMP/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>104857600</mark_cache_size>
  <uncompressed_cache_size>104857600</uncompressed_cache_size>
</yandex>
EOF
cat >"$TMP/users.xml" <<'EOF'
<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users>
    <default><password></password><networks><ip>::1</ip><ip>127.0.0.1</ip></networks>
      <profile>default</profile><quota>default</quota></default>
  </users>
  <quotas><default></default></quotas>
</yandex>
EOF

BASE="http://127.0.0.1:$HTTP_PORT"
echo "demo.sh: clickhouse-server on $BASE (in $TMP)"
# (env, not the plain function: $! must be the server itself, not a subshell)
env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS \
  clickhouse-server --config-file="$TMP/config.xml" >"$TMP/server.out" 2>&1 &
SERVER_PID=$!

ready=
for _ in $(seq 600); do
  if [ "$(plain curl -s -m 1 "$BASE/" 2>/dev/null || true)" = "Ok." ]; then ready=1; break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$ready" ]; then
  cat "$TMP/server.err.log" "$TMP/server.out" >&2 2>/dev/null || true
  die "clickhouse-server did not answer on $BASE"
fi

# The probes: one table, a name each. (A real probe: -i IFACE --slice 60.)
TABLE_URL="$BASE/fleet.flows"
echo "demo.sh: probe-a and probe-b read $PCAP into fleet.flows"
"$SLUICE" run -r "$PCAP" --slice 1 -q --out "clickhouse:$TABLE_URL?probe=probe-a" ||
  die "probe-a failed (exit $?)"
"$SLUICE" run "$HERE/tag_apps.lua" -r "$PCAP" --slice 1 -q \
  --out "clickhouse:$TABLE_URL?probe=probe-b" || die "probe-b failed (exit $?)"

# Runs one query; prints the reply (with column names) or fails with the
# server's message.
query() {
  local sql=$1 code
  printf '%s\nFORMAT TabSeparatedWithNames\n' "$sql" >"$TMP/query.sql"
  code=$(plain curl -sS -o "$TMP/reply" -w '%{http_code}' --data-binary @"$TMP/query.sql" "$BASE/") ||
    die "curl could not reach $BASE"
  if [ "$code" != 200 ]; then
    cat "$TMP/reply" >&2
    die "query failed (HTTP $code): $sql"
  fi
  cat "$TMP/reply"
}

# queries.sql: a "-- [name] what it answers" line, then the query up to ";".
n=0 name= title= sql=
while IFS= read -r line || [ -n "$line" ]; do
  case $line in
    "-- ["*"]"*)
      name=${line#-- [}; name=${name%%]*}
      title=${line#*] }
      sql= ;;
    --*|"") ;;
    *)
      [ -n "$name" ] || continue
      sql="$sql$line"$'\n'
      case $line in
        *";")
          echo
          echo "=== $name: $title"
          query "${sql%$';\n'}"
          n=$((n + 1))
          name= sql= ;;
      esac ;;
  esac
done <"$HERE/queries.sql"
[ "$n" -gt 0 ] || die "no queries found in $HERE/queries.sql"
echo
echo "demo.sh: $n queries run"
