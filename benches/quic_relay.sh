#!/usr/bin/env bash
# Relay cost of allowed QUIC flows, side by side with nginx's stream UDP
# proxy (`listen ... udp; proxy_pass`).
#   bash benches/quic_relay.sh [DATAGRAMS] [ROUNDS]   (default 200000, 3)
# Each proxy (one worker / one process, pinned to CPU 0) relays to the same
# Python UDP echo upstream; a Python client on CPU 1 opens 16 flows — for
# icpgate each starts with the captured Chromium 156 hello for a filed name
# (tests/fixtures/quic/), so the flow is decided and allowed — then sends
# DATAGRAMS datagrams of 1,200 bytes spread over the flows, 64 in flight per
# flow, counting the echoes. Prints the proxy's CPU time (utime + stime)
# per relayed datagram (client→upstream and back counted once), round-robin.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
ROUNDS=${2:-3}
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx >/dev/null; }
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || { apt-get update -qq && apt-get install -y -qq --no-install-recommends libnginx-mod-stream >/dev/null; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --quiet
W=$(mktemp -d /tmp/icpgate-relay.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
cp config/demo-table.csv "$W/table.csv"
cat >"$W/echo.py" <<'EOF'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", 29555))
while True:
    d, a = s.recvfrom(65536)
    s.sendto(d, a)
EOF
taskset -c 1 python3 "$W/echo.py" &
cat >"$W/c.toml" <<CFG
[[listener]]
addr = "127.0.0.1:28555"
upstream = "127.0.0.1:29555"
transport = "udp"
[regions]
mainland = ["127.0.0.0/8"]
[table]
path = "$W/table.csv"
[runtime]
workers = 1
[admin]
addr = "127.0.0.1:29590"
[log]
level = "error"
CFG
taskset -c 0 ./target/release/icpgate run --config "$W/c.toml" &
IPID=$!
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
cat >"$W/load.py" <<'EOF'
import select, socket, sys
port, n, hello = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
a = open("tests/fixtures/quic/chromium156_filed_0.bin", "rb").read()
b = open("tests/fixtures/quic/chromium156_filed_1.bin", "rb").read()
flows = []
for _ in range(16):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    if hello:
        s.send(a); s.send(b)
    flows.append(s)
import time
time.sleep(0.3)
# drain whatever came back for the hellos
for s in flows:
    try:
        while s.recv(65536): pass
    except BlockingIOError:
        pass
payload = b"\x40" + b"q" * 1199   # a short-header-looking datagram
per = n // len(flows)
sent = [0] * len(flows); got = [0] * len(flows); inflight = 64
for i, s in enumerate(flows):
    for _ in range(min(inflight, per)):
        s.send(payload); sent[i] += 1
fd = {s.fileno(): i for i, s in enumerate(flows)}
p = select.epoll()
for s in flows: p.register(s.fileno(), select.EPOLLIN)
deadline = time.time() + 60
while sum(got) < sum(sent) and time.time() < deadline:
    for f, _ in p.poll(0.5):
        i = fd[f]; s = flows[i]
        try:
            while True:
                s.recv(65536); got[i] += 1
                if sent[i] < per:
                    s.send(payload); sent[i] += 1
        except BlockingIOError:
            pass
    if not p.poll(0):
        # lost datagrams: top the windows up
        for i, s in enumerate(flows):
            if sent[i] - got[i] < inflight // 2 and sent[i] < per:
                for _ in range(min(inflight - (sent[i] - got[i]), per - sent[i])):
                    s.send(payload); sent[i] += 1
print(sum(got))
EOF
cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); commit $(git rev-parse --short HEAD); nginx $("$NGINX" -v 2>&1 | cut -d/ -f2); $N datagrams per run"
for r in $(seq "$ROUNDS"); do
	for who in icpgate nginx; do
		if [ "$who" = icpgate ]; then pid=$IPID port=28555 hello=1; else pid=$NPID port=28556 hello=0; fi
		a=$(cpu "$pid")
		got=$(taskset -c 1 python3 "$W/load.py" "$port" "$N" "$hello")
		b=$(cpu "$pid")
		awk -v w="$who" -v r="$r" -v g="$got" -v c="$(( (b - a) * 1000000 / TCK ))" 'BEGIN {
			printf "round %d  %-8s %7d datagrams echoed, %.2f µs of proxy CPU per datagram\n", r, w, g, c / g
		}'
	done
done
