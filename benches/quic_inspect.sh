#!/usr/bin/env bash
# QUIC inspection rate end to end: new flows decided per CPU-second.
#   bash benches/quic_inspect.sh [FLOWS] [RATE] [ROUNDS]
#       (default 300000 flows per round at 60000 flows/s, 3 rounds)
# As root (a raw socket, an nftables rule). A release icpgate with one UDP
# listener (one worker, pinned to CPU 0); `examples/quic_load flood` on
# CPU 1 sends the captured Chromium 156 post-quantum hello for an unfiled
# name (two Initials per flow: tests/fixtures/quic/) from a new source
# (127.1.0.0/16, any port) per flow, paced at RATE flows per second. Every
# flow is decided (blocked) and answered with a CONNECTION_CLOSE — the
# most work a flow costs without an upstream. The closes are dropped by an
# nftables rule on their way out (on loopback they would reach closed ports
# and cost an ICMP error each, which a real client's answer does not); the
# system call and the stack up to that hook are counted.
# Prints icpgate's CPU time (utime + stime, and each) per decided flow and
# flows per CPU-second, and the datagrams the kernel dropped because the
# socket buffer was full (the rate is then above what one core decides).
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWS=${1:-300000}
RATE=${2:-60000}
ROUNDS=${3:-3}
[ "$(id -u)" = 0 ] || { echo "run as root (raw socket, nftables)" >&2; exit 1; }
. benches/quic_common.sh
cargo build --release --quiet
cargo build --release --quiet --example quic_load
W=$(mktemp -d /tmp/icpgate-quic.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; quic_undrop; rm -rf "$W"' EXIT
quic_drop_closes 28443
quic_icpgate "$W" 28443 127.0.0.1:29443 29490 "$(printf '[block]\nquic_hold_secs = 1')"
PID=$QPID
metric() {
	curl -s http://127.0.0.1:29490/metrics | awk -v p="$1" 'index($0, p) == 1 { print $NF }'
}
rcvbuf_errors() { awk '/^Udp:/ { n++ } /^Udp:/ && n == 2 { print $6 }' /proc/net/snmp; }
TCK=$(getconf CLK_TCK)
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); commit $(git rev-parse --short HEAD); $FLOWS flows per round at $RATE/s"
for r in $(seq "$ROUNDS"); do
	before=$(metric 'icpgate_decisions_total{decision="block",protocol="quic",reason="unfiled"}')
	read -r au as < <(awk '{ print $14, $15 }' "/proc/$PID/stat")
	d0=$(rcvbuf_errors)
	taskset -c 1 target/release/examples/quic_load flood 127.0.0.1:28443 "$FLOWS" "$RATE" >/dev/null
	sleep 0.5
	read -r bu bs < <(awk '{ print $14, $15 }' "/proc/$PID/stat")
	d1=$(rcvbuf_errors)
	after=$(metric 'icpgate_decisions_total{decision="block",protocol="quic",reason="unfiled"}')
	awk -v n="$(awk -v x="$after" -v y="$before" 'BEGIN { printf "%d", x - y }')" -v f="$FLOWS" \
		-v u="$(( (bu - au) * 1000000 / TCK ))" -v s="$(( (bs - as) * 1000000 / TCK ))" -v r="$r" -v d=$((d1 - d0)) 'BEGIN {
		printf "round %d: %d of %d flows decided, %.2f µs of icpgate CPU per flow (user %.2f, system %.2f), %.0f flows per CPU-second; %d datagrams dropped by the kernel (socket buffer full)\n", r, n, f, (u + s) / n, u / n, s / n, n / ((u + s) / 1e6), d
	}'
	# Blocked flows are held for quic_hold_secs (1 s here).
	sleep 1.5
done
