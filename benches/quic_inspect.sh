#!/usr/bin/env bash
# QUIC inspection rate end to end: new flows decided per CPU-second.
#   bash benches/quic_inspect.sh [FLOWS] [ROUNDS]   (default 12000 flows, 3 rounds)
# A release icpgate with one UDP listener (one worker, pinned to CPU 0); a
# Python load generator on CPU 1 replays the captured Chromium 156
# post-quantum hello (two Initials per flow: tests/fixtures/quic/) from
# FLOWS client sockets, paced so the socket buffer never overflows. Each
# flow is decided (blocked: the unfiled capture, so each also gets a
# CONNECTION_CLOSE back — the most work a flow costs without an upstream).
# Prints icpgate's CPU time (utime + stime) per decided flow and flows per
# CPU-second. Flows whose datagrams the socket buffer dropped (the generator
# outruns the proxy) are not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWS=${1:-12000}
ROUNDS=${2:-3}
cargo build --release --quiet
W=$(mktemp -d /tmp/icpgate-quic.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
ulimit -n "$(ulimit -Hn)"
cp config/demo-table.csv "$W/table.csv"
cat >"$W/c.toml" <<CFG
[[listener]]
addr = "127.0.0.1:28443"
upstream = "127.0.0.1:29443"
transport = "udp"
[regions]
mainland = ["127.0.0.0/8"]
[table]
path = "$W/table.csv"
[runtime]
workers = 1
[block]
quic_hold_secs = 1
[admin]
addr = "127.0.0.1:29490"
[log]
level = "error"
blocks = false
CFG
taskset -c 0 ./target/release/icpgate run --config "$W/c.toml" &
PID=$!
for _ in $(seq 100); do curl -fs http://127.0.0.1:29490/readyz >/dev/null && break; sleep 0.1; done
cat >"$W/flood.py" <<'EOF'
import socket, sys, time
flows = int(sys.argv[1])
a = open("tests/fixtures/quic/chromium156_unfiled_0.bin", "rb").read()
b = open("tests/fixtures/quic/chromium156_unfiled_1.bin", "rb").read()
dst = ("127.0.0.1", 28443)
socks = []
for i in range(flows):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.sendto(a, dst)
    s.sendto(b, dst)
    socks.append(s)
    if i % 200 == 199:
        time.sleep(0.002)
time.sleep(0.5)
for s in socks:
    s.close()
EOF
metric() {
	curl -s http://127.0.0.1:29490/metrics | awk -v p="$1" 'index($0, p) == 1 { print $NF }'
}
TCK=$(getconf CLK_TCK)
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); commit $(git rev-parse --short HEAD); $FLOWS flows per round"
for r in $(seq "$ROUNDS"); do
	before=$(metric 'icpgate_decisions_total{decision="block",protocol="quic",reason="unfiled"}')
	a=$(awk '{ print $14 + $15 }' "/proc/$PID/stat")
	au=$(awk '{ print $14 }' "/proc/$PID/stat")
	taskset -c 1 python3 "$W/flood.py" "$FLOWS"
	sleep 0.3
	b=$(awk '{ print $14 + $15 }' "/proc/$PID/stat")
	bu=$(awk '{ print $14 }' "/proc/$PID/stat")
	after=$(metric 'icpgate_decisions_total{decision="block",protocol="quic",reason="unfiled"}')
	n=$(awk -v x="$after" -v y="$before" 'BEGIN { printf "%d", x - y }')
	cpu_us=$(( (b - a) * 1000000 / TCK ))
	user_us=$(( (bu - au) * 1000000 / TCK ))
	awk -v n="$n" -v f="$FLOWS" -v c="$cpu_us" -v u="$user_us" -v r="$r" 'BEGIN {
		printf "round %d: %d of %d flows decided, %.2f µs of icpgate CPU per flow (user %.2f, system %.2f), %.0f flows per CPU-second\n", r, n, f, c / n, u / n, (c - u) / n, n / (c / 1e6)
	}'
	# Blocked flows are held for quic_hold_secs (1 s here): the next
	# round's flows may reuse client ports.
	sleep 1.5
done
