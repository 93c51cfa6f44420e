#!/usr/bin/env bash
# Two icpgate builds, same load, interleaved: is a change cheaper per request?
#
#   bash benches/compare/ab.sh WORK A_BIN B_BIN ROW [ROUNDS]
#   bash benches/compare/ab.sh --callgrind WORK BIN ROW
#
# WORK is a work directory left by benches/compare/run.sh (it keeps it unless
# CMP_KEEP=0; `CMP_PROXIES=icpgate bash benches/compare/run.sh --quick` makes
# one in a few minutes): its table, icpgate.toml, host lists and upstream
# nginx config are reused, so the load is exactly the comparison's.
# ROW: ka (keep-alive, 50% allowed), ka_ok (keep-alive, allowed), close
# (Connection: close, 50% allowed), unfiled (block page), tls_conns (new TLS
# connections, examples/tcpload).
#
# A/B: both builds run at once on CPU 0 (A on the comparison's ports, B on
# +10000), load and upstreams on CPU 1; each round measures A then B (1 s
# warm-up, 5 s counted; CPU = utime+stime from /proc/PID/stat). Prints every
# round and the median CPU µs per request of each, and B's change in %.
# Differences under ~3% are noise on a shared VM: use ≥ 6 rounds.
# AB_A_SED / AB_B_SED: a sed script for A's / B's config, e.g. a build from
# before `defer_accept` against one with it, on a work directory whose
# config has it: AB_A_SED='/^defer_accept/d'.
#
# --callgrind: one build under valgrind's callgrind (CPU 0), 10 s of ROW at
# 10 connections after a warm-up; prints user-space instructions per request
# (a deterministic figure, immune to neighbours; kernel time not included).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
die() { printf '[ab] error: %s\n' "$*" >&2; exit 1; }
usage() { awk 'NR>1 && /^#/{sub(/^# ?/,""); print; next} NR>1{exit}' "$0"; exit 2; }

CG=0
[ "${1:-}" = --callgrind ] && { CG=1; shift; }
[ "${1:-}" = -h ] || [ "${1:-}" = --help ] && usage
if [ "$CG" = 1 ]; then
    [ $# -eq 3 ] || usage
    WORK=$1 A=$2 B="" ROW=$3 ROUNDS=1
else
    [ $# -ge 4 ] || usage
    WORK=$1 A=$2 B=$3 ROW=$4 ROUNDS=${5:-6}
fi
for f in icpgate.toml rows.txt hosts.txt hosts_ok.txt hosts_unfiled.txt up/nginx.conf; do
    [ -e "$WORK/$f" ] || die "$WORK/$f missing: WORK must be a benches/compare/run.sh work directory"
done
for b in $A $B; do [ -x "$b" ] || die "$b is not an executable"; done
TCPLOAD=$ROOT/target/release/examples/tcpload
GEN=$ROOT/target/release/examples/gen_table
[ -x "$TCPLOAD" ] && [ -x "$GEN" ] || (cd "$ROOT" && cargo build --release --example tcpload --example gen_table >&2)
# run.sh deletes its tables when it ends; gen_table is deterministic: the
# same row count gives the same table its host lists were drawn from
[ -s "$WORK/table-icpgate.csv" ] || "$GEN" "$(wc -l <"$WORK/rows.txt")" "$WORK/table-icpgate.csv"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ "$CG" = 0 ] || command -v valgrind >/dev/null || die "valgrind not installed (apt-get install valgrind)"

PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -f "$WORK/table-icpgate.csv"
}
trap cleanup EXIT INT TERM
port_up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port seconds
    local i
    for i in $(seq 1 $(($2 * 10))); do port_up "$1" && return 0; sleep 0.1; done
    die "nothing listens on $1 after $2 s"
}

# upstreams on CPU 1 (the comparison's, restarted)
port_up 19081 || {
    taskset -c 1 "$NGINX" -p "$WORK/up" -c "$WORK/up/nginx.conf" -g 'daemon off;' >"$WORK/up/ab.log" 2>&1 &
    PIDS+=($!)
}
port_up 19444 || {
    taskset -c 1 "$TCPLOAD" serve 127.0.0.1:19444 4096 >"$WORK/up/ab-tcpload.log" 2>&1 &
    PIDS+=($!)
}
wait_port 19081 10
wait_port 19444 10

# A's config: the comparison's, edited by AB_A_SED; B's: every icpgate port
# + 10000, edited by AB_B_SED
sed -e "${AB_A_SED:-}" "$WORK/icpgate.toml" >"$WORK/icpgate-a.toml"
sed -E 's/"127\.0\.0\.1:(18080|18443|19090)"/"127.0.0.1:2\1"/; s/"127\.0\.0\.1:21([0-9]{4})"/"127.0.0.1:2\1"/' \
    "$WORK/icpgate.toml" | sed -e "${AB_B_SED:-}" >"$WORK/icpgate-b.toml"

load() { # port duration conns -> wrk/tcpload output on stdout
    local port=$1 d=$2 c=$3 sni
    case $ROW in
    ka) taskset -c 1 wrk -t1 -c"$c" -d"${d}s" -s "$HERE/hosts.lua" "http://127.0.0.1:$port/" -- "$WORK/hosts.txt" ;;
    ka_ok) taskset -c 1 wrk -t1 -c"$c" -d"${d}s" -s "$HERE/hosts.lua" "http://127.0.0.1:$port/" -- "$WORK/hosts_ok.txt" ;;
    close) taskset -c 1 wrk -t1 -c"$c" -d"${d}s" -H "Connection: close" -s "$HERE/hosts.lua" "http://127.0.0.1:$port/" -- "$WORK/hosts.txt" ;;
    unfiled) taskset -c 1 wrk -t1 -c"$c" -d"${d}s" -s "$HERE/hosts.lua" "http://127.0.0.1:$port/" -- "$WORK/hosts_unfiled.txt" ;;
    tls_conns)
        sni=$(grep '^www\.' "$WORK/hosts_ok.txt" | sed -n 1p)
        taskset -c 1 "$TCPLOAD" conns "127.0.0.1:$((port + 363))" "$sni" "$c" "$d" 4096 ;;
    *) die "unknown row $ROW" ;;
    esac
}
count() { # load output on stdin -> requests (connections) completed
    awk '/requests in/{print $1; exit} /conns=/{for (i = 1; i <= NF; i++) if ($i ~ /^conns=/) {sub(/conns=/, "", $i); print $i; exit}}'
}
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

start() { # bin config -> pid
    taskset -c 0 "$1" run --config "$2" >"$2.log" 2>&1 &
    echo $!
}

if [ "$CG" = 1 ]; then
    ANN=$(command -v callgrind_annotate) || die "callgrind_annotate missing"
    OUT=$WORK/ab-callgrind.out
    rm -f "$OUT"*
    taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$OUT" "$A" run --config "$WORK/icpgate-a.toml" >"$WORK/ab-callgrind.log" 2>&1 &
    VP=$!
    PIDS+=($VP)
    wait_port 19090 300
    sleep 20 # the spare table is prefaulted at start: let it finish
    load 18080 3 10 >/dev/null 2>&1 || true
    callgrind_control --zero "$VP" >/dev/null
    n=$(load 18080 10 10 2>&1 | count)
    callgrind_control --dump=measure "$VP" >/dev/null
    sleep 1
    F=$(grep -l measure "$OUT"* | head -1)
    tot=$("$ANN" "$F" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",", "", $1); print $1}')
    [ "${n:-0}" -gt 0 ] || die "no requests completed"
    echo "$ROW: $n requests, $((tot / n)) instructions per request (user space, $(basename "$A"))"
    exit 0
fi

AP=$(start "$A" "$WORK/icpgate-a.toml"); PIDS+=("$AP")
BP=$(start "$B" "$WORK/icpgate-b.toml"); PIDS+=("$BP")
wait_port 19090 60
wait_port 29090 60
sleep 8 # spare-table prefault at start
TCK=$(getconf CLK_TCK)
: >"$WORK/ab.A" && : >"$WORK/ab.B"
for r in $(seq 1 "$ROUNDS"); do
    for x in A B; do
        if [ $x = A ]; then p=$AP port=18080; else p=$BP port=28080; fi
        load $port 1 50 >/dev/null 2>&1 || true
        t0=$(ticks "$p")
        n=$(load $port 5 50 2>&1 | count)
        t1=$(ticks "$p")
        us=$(awk -v t=$((t1 - t0)) -v k="$TCK" -v n="${n:-0}" 'BEGIN { printf "%.2f", (n > 0) ? 1e6 * t / k / n : -1 }')
        echo "$us" >>"$WORK/ab.$x"
        printf 'round %d %s: %8s requests in 5 s, %s CPU µs per request\n' "$r" "$x" "${n:-0}" "$us"
    done
done
med() { sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ma=$(med "$WORK/ab.A") mb=$(med "$WORK/ab.B")
echo "$ROW, median of $ROUNDS: A $ma µs, B $mb µs per request: B $(awk -v a="$ma" -v b="$mb" 'BEGIN { printf "%+.1f%%", 100 * (b - a) / a }') (A=$A, B=$B)"
