#!/usr/bin/env bash
# Relay cost of allowed QUIC flows, side by side with nginx's stream UDP
# proxy (`listen ... udp; proxy_pass`).
#   bash benches/quic_relay.sh [DATAGRAMS] [ROUNDS]   (default 200000, 3)
# Each proxy (one worker / one process, pinned to CPU 0) relays to the same
# UDP echo upstream (`quic_load echo`, CPU 1); the client (`quic_load
# relay`, CPU 1) opens 16 flows — for icpgate each starts with the captured
# Chromium 156 hello for a filed name (tests/fixtures/quic/), so the flow is
# decided and allowed — then sends DATAGRAMS datagrams of 1,200 bytes
# spread over the flows, 64 in flight per flow, counting the echoes. Prints
# the proxy's CPU time (utime + stime) per echoed datagram (client→upstream
# and back counted once), round-robin. benches/compare/run.sh runs it too.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
ROUNDS=${2:-3}
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx >/dev/null; }
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || { apt-get update -qq && apt-get install -y -qq --no-install-recommends libnginx-mod-stream >/dev/null; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
. benches/quic_common.sh
cargo build --release --quiet
W=$(mktemp -d /tmp/icpgate-relay.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
cargo build --release --quiet --example quic_load
LOAD=target/release/examples/quic_load
taskset -c 1 "$LOAD" echo 127.0.0.1:29555 &
quic_icpgate "$W" 28555 127.0.0.1:29555 29590
IPID=$QPID
cat >"$W/nginx.conf" <<CFG
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
events { worker_connections 4096; }
stream {
    server {
        listen 127.0.0.1:28556 udp;
        proxy_pass 127.0.0.1:29555;
        proxy_timeout 60s;
    }
}
CFG
taskset -c 0 "$NGINX" -p "$W/" -c "$W/nginx.conf" -e "$W/nginx-error.log" -g 'daemon off; master_process off;' &
NPID=$!
for _ in $(seq 100); do curl -fs http://127.0.0.1:29590/readyz >/dev/null && break; sleep 0.1; done
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); commit $(git rev-parse --short HEAD); nginx $("$NGINX" -v 2>&1 | cut -d/ -f2); $N datagrams per run"
for r in $(seq "$ROUNDS"); do
	for who in icpgate nginx; do
		if [ "$who" = icpgate ]; then pid=$IPID port=28555 hello=1; else pid=$NPID port=28556 hello=0; fi
		a=$(cpu "$pid")
		got=$(taskset -c 1 "$LOAD" relay "127.0.0.1:$port" 16 "$N" 64 "$hello" | awk '{ print $2 }')
		b=$(cpu "$pid")
		awk -v w="$who" -v r="$r" -v g="$got" -v c="$(( (b - a) * 1000000 / TCK ))" 'BEGIN {
			printf "round %d  %-8s %7d datagrams echoed, %.2f µs of proxy CPU per datagram\n", r, w, g, c / g
		}'
	done
done
