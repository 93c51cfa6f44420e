#!/usr/bin/env bash
# Hot swap of a 10M-row table under load (issue: operable at the edge).
#   bash benches/swap.sh [ROWS]      (default 10000000; needs wrk: apt-get install wrk)
# Measures: initial load time, reload (build off the data path + swap) time
# as seen by POST /v1/reload, peak RSS with two tables live (VmHWM), steady
# RSS, and wrk p50/p99 for keep-alive requests without and during swaps.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-10000000}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --example gen_table
cargo build --release --quiet
W=$(mktemp -d /tmp/icpgate-swap.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$W"' EXIT
./target/release/examples/gen_table "$ROWS" "$W/table.csv"
echo "www.example.com.cn,京ICP备09051301号-1,filed,active,," >>"$W/table.csv"
cat >"$W/c.toml" <<CFG
[[listener]]
addr = "127.0.0.1:28080"
upstream = "127.0.0.1:29080"
[regions]
mainland = ["127.0.0.0/8"]
[table]
path = "$W/table.csv"
watch_interval_ms = 3600000
[admin]
addr = "127.0.0.1:29090"
[log]
level = "warn"
blocks = false
[demo]
origin = "127.0.0.1:29080"
CFG
t0=$(date +%s.%N)
taskset -c 0 ./target/release/icpgate run --config "$W/c.toml" 2>"$W/log" &
PID=$!
until curl -sf http://127.0.0.1:29090/readyz >/dev/null; do sleep 0.1; done
t1=$(date +%s.%N)
rss() { awk '/^VmRSS/{print $2/1024}' /proc/$PID/status; }
hwm() { awk '/^VmHWM/{print $2/1024}' /proc/$PID/status; }
echo "rows: $ROWS; startup incl. initial load: $(echo "$t1 - $t0" | bc) s; RSS $(rss) MB"
load() { taskset -c 1 wrk -t1 -c32 -d"$1" --latency -H 'Host: www.example.com.cn' http://127.0.0.1:28080/ ; }
load 10s >"$W/base.txt"
echo "baseline:   $(grep -E '^\s+50%' "$W/base.txt" | awk '{print "p50 " $2}') $(grep -E '^\s+99%' "$W/base.txt" | awk '{print "p99 " $2}') $(grep Requests/sec "$W/base.txt")"
load 30s >"$W/swap.txt" &
WRK=$!
sleep 2
for i in 1 2 3; do
  echo "swap$i.cn,京ICP备1号-$i,filed,active,," >>"$W/table.csv"
  s=$(date +%s.%N)
  r=$(curl -s -X POST 'http://127.0.0.1:29090/v1/reload')
  e=$(date +%s.%N)
  echo "reload $i: $(echo "$e - $s" | bc) s: $(echo "$r" | grep -o '"result":"[a-z]*"')  RSS now $(rss) MB, peak $(hwm) MB"
  sleep 3
done
wait $WRK
echo "during swaps: $(grep -E '^\s+50%' "$W/swap.txt" | awk '{print "p50 " $2}') $(grep -E '^\s+99%' "$W/swap.txt" | awk '{print "p99 " $2}') $(grep Requests/sec "$W/swap.txt") $(grep -E 'Non-2xx|Socket errors' "$W/swap.txt" || echo 'no errors')"
sleep 5
echo "after swaps, steady RSS $(rss) MB (peak $(hwm) MB)"
