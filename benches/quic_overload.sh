#!/usr/bin/env bash
# QUIC under overload: unfiled flows at twice the rate icpgate can decide,
# while filed clients come and go.
#   bash benches/quic_overload.sh [SECS] [ALLOWED] [CAP]
#       (default 10 s, 200 filed clients, icpgate held to 40% of a core)
# As root (a raw socket, an nftables rule, a cpu cgroup). A release icpgate
# with one UDP listener (one worker, pinned to CPU 0; default limits:
# max_flows 100000, quic_hold_secs 30), its upstream an echo server in
# `examples/quic_load` (CPU 1). First F, flows decided per CPU-second (the
# captured Chromium 156 unfiled hello, two Initials per flow, a new source
# per flow, paced at 50,000 flows/s, as quic_inspect.sh). Then icpgate is
# held to CAP% of CPU 0 by a cpu cgroup quota, so that its saturating rate
# S = F × CAP% is one the load generator can double on the other core, and
# `quic_load overload` runs: the flood paced at 2 × S for SECS seconds
# while ALLOWED clients, started evenly over that time, each replay the
# filed capture from their own socket (again every 250 ms, as a client's
# probe timer would) until the echo comes back through icpgate (served) or
# 3 s pass. Prints the clients served, their time to the first answer, the
# unfiled datagrams that reached the upstream (must be 0), icpgate's
# decisions and drops, and what the kernel dropped at the full socket
# buffer. Closes to the flood's sources are dropped on their way out, as in
# quic_inspect.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ALLOWED=${2:-200}
CAP=${3:-40}
CG=/sys/fs/cgroup/cpu/icpgate_bench
[ "$(id -u)" = 0 ] || { echo "run as root (raw socket, nftables)" >&2; exit 1; }
. benches/quic_common.sh
cargo build --release --quiet
cargo build --release --quiet --example quic_load
LOAD=target/release/examples/quic_load
W=$(mktemp -d /tmp/icpgate-quic.XXXXXX)
cleanup() {
	kill $(jobs -p) 2>/dev/null; wait 2>/dev/null
	quic_undrop
	if [ -d "$CG" ]; then rmdir "$CG" 2>/dev/null || true; fi
	rm -rf "$W"
}
trap cleanup EXIT
quic_drop_closes 28443
quic_icpgate "$W" 28443 127.0.0.1:29443 29490
PID=$QPID
metrics() { curl -s http://127.0.0.1:29490/metrics; }
metric() { metrics | awk -v p="$1" 'index($0, p) == 1 { print $NF }'; }
rcvbuf_errors() { awk '/^Udp:/ { n++ } /^Udp:/ && n == 2 { print $6 }' /proc/net/snmp; }
BLOCKED='icpgate_decisions_total{decision="block",protocol="quic",reason="unfiled"}'
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); commit $(git rev-parse --short HEAD)"
# F: flows decided per CPU-second, uncapped.
b0=$(metric "$BLOCKED")
read -r u0 s0 < <(awk '{ print $14, $15 }' "/proc/$PID/stat")
taskset -c 1 "$LOAD" flood 127.0.0.1:28443 200000 50000 >/dev/null
sleep 0.5
read -r u1 s1 < <(awk '{ print $14, $15 }' "/proc/$PID/stat")
b1=$(metric "$BLOCKED")
TCK=$(getconf CLK_TCK)
F=$(awk -v n="$((${b1%.*} - ${b0%.*}))" -v t="$(( (u1 + s1 - u0 - s0) ))" -v k="$TCK" 'BEGIN { printf "%d", n / (t / k) }')
S=$((F * CAP / 100))
echo "F = $F flows decided per CPU-second; held to $CAP% of CPU 0: S = $S flows/s"
[ -d /sys/fs/cgroup/cpu ] || { echo "no cgroup v1 cpu hierarchy at /sys/fs/cgroup/cpu" >&2; exit 1; }
mkdir -p "$CG"
echo 10000 >"$CG/cpu.cfs_period_us"
echo $((CAP * 100)) >"$CG/cpu.cfs_quota_us"
for t in /proc/"$PID"/task/*; do echo "${t##*/}" >"$CG/tasks"; done
d0=$(rcvbuf_errors)
metrics | grep -E '^icpgate_(decisions_total\{.*quic|quic_dropped_total)' >"$W/m0"
echo "overload: $((2 * S)) unfiled flows/s for $SECS s, $ALLOWED filed clients"
taskset -c 1 "$LOAD" overload 127.0.0.1:28443 127.0.0.1:29443 $((2 * S)) "$SECS" "$ALLOWED"
sleep 0.5
d1=$(rcvbuf_errors)
metrics | grep -E '^icpgate_(decisions_total\{.*quic|quic_dropped_total)' >"$W/m1"
echo "icpgate during the overload run (change):"
join <(sort "$W/m0") <(sort "$W/m1") | awk '$3 - $2 > 0 { printf "  %s %d\n", $1, $3 - $2 }'
echo "  datagrams dropped by the kernel (listener socket buffer full): $((d1 - d0))"
