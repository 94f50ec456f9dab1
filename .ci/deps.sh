#!/bin/sh
# Installs the Debian packages sluice builds, runs and tests with, if
# missing; with arguments, those packages instead (make fuzz: clang...).
set -e
PKGS="${*:-build-essential luajit libluajit-5.1-dev libpcap-dev libxdp-dev libbpf-dev xdp-tools zlib1g-dev libzstd-dev liblzma-dev liblz4-dev iproute2 lua-cjson lua-busted luarocks tshark tcpreplay nfdump softflowd gzip zstd xz-utils lz4 python3 python3-scapy prometheus libcurl4-openssl-dev clickhouse-server clickhouse-client libndpi-dev libndpi-bin}"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -q >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing >&2
