#!/usr/bin/env bash
# Memory per connection in each state, and the server-first switch.
#   bash benches/memory.sh [N]      (default 5000 connections per state)
# For each state a fresh release icpgate (descriptor limit raised) runs in
# front of an nginx upstream that answers HTTP and keeps every connection
# open (installed with apt-get when missing); benches/memory.py then opens N
# connections and reports the RSS growth per connection: sniffing (a partial
# head), silent (past server_first_wait_ms, upstream connected, waiting for
# either side), TLS passthrough (idle), HTTP keep-alive (idle after one
# request, upstream held). Last, a normal client's latency while N silent
# connections reach server_first_wait_ms together.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx >/dev/null; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --quiet
W=$(mktemp -d /tmp/icpgate-mem.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
ulimit -n "$(ulimit -Hn)"
cp config/demo-table.csv "$W/table.csv"
cat >"$W/nginx.conf" <<CFG
worker_processes 1;
worker_rlimit_nofile 60000;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
events { worker_connections 50000; }
http {
    access_log off;
    keepalive_timeout 3600s;
    keepalive_requests 1000000;
    client_header_timeout 3600s;
    client_body_temp_path $W/cb; proxy_temp_path $W/p; fastcgi_temp_path $W/f; uwsgi_temp_path $W/u; scgi_temp_path $W/s;
    server { listen 127.0.0.1:29180 backlog=8192; location / { return 200 "ok\n"; } }
}
CFG
"$NGINX" -p "$W/" -c "$W/nginx.conf" -e "$W/nginx-error.log" -g 'daemon off; master_process off;' &
cat >"$W/c.toml" <<CFG
[[listener]]
addr = "127.0.0.1:28180"
upstream = "127.0.0.1:29180"
[regions]
mainland = ["127.0.0.0/8"]
[table]
path = "$W/table.csv"
[admin]
addr = "127.0.0.1:29190"
[log]
level = "error"
blocks = false
CFG
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); commit $(git rev-parse --short HEAD); N=$N"
for state in sniffing silent passthrough keepalive switch; do
    ./target/release/icpgate run --config "$W/c.toml" &
    PID=$!
    for _ in $(seq 100); do curl -fs http://127.0.0.1:29190/readyz >/dev/null && break; sleep 0.1; done
    python3 benches/memory.py "$PID" 28180 29190 "$N" "$state"
    kill "$PID"; wait "$PID" 2>/dev/null || true
done
