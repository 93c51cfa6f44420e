#!/usr/bin/env bash
# icpgate end-to-end load test: wrk (and h2load, if Debian has it) against a
# real `icpgate run` on loopback.
#
#   bash benches/load.sh            # 10 s per run, 3 runs per row, median
#   bash benches/load.sh --quick    # 3 s per run
#
# What it does (as root on Debian; anything missing is apt-get installed):
#   * installs wrk, nginx, curl, openssl (and nghttp2-client for h2load, optional)
#   * cargo build --release, writes a temporary config like config/demo.toml:
#       :18080 HTTP  -> built-in demo origin :19080
#       :18443 TLS   -> built-in demo TLS origin :19443
#       :18081 HTTP  -> nginx :19081   (separate upstream, not in icpgate's process)
#       :18444 TLS   -> nginx :19444   (separate upstream, self-signed cert)
#       admin :19090, [log] level warn, blocks = false, mainland 127.0.0.0/8
#   * pins icpgate (and so its in-process demo origin) to CPU 0 and the load
#     generator and nginx to CPU 1 (taskset)
#   * per row: 1 s warm-up, then 3 runs; before each run waits (<= 60 s) while
#     the machine is busy with something else, and retries a run during which
#     other processes took CPU; reports per-metric medians
#   * CPU per request: utime+stime of the icpgate process (/proc/PID/stat
#     fields 14+15, clock ticks) over the run, divided by completed requests
#   * prints a Markdown table on stdout (progress goes to stderr); raw tool
#     output is kept in the work directory named at the end
#
# Environment: LOAD_CONNS (default 50), LOAD_RUNS (default 3), LOAD_MAX_OTHER
# (a run during which other processes used more than this % of the machine is
# retried, default 10), LOAD_EXTRA_TRIES (retries per row, default 3),
# ICPGATE_LOG_LEVEL (default "warn"), LOAD_MAX_WAIT (seconds to wait for an
# idle machine before each run, default 60), LOAD_KEEP=0 to delete the work
# directory.
set -euo pipefail

QUICK=0
for a in "$@"; do
    case $a in
    --quick) QUICK=1 ;;
    -h | --help) awk 'NR>1 && /^#/{sub(/^# ?/,""); print; next} NR>1{exit}' "$0"; exit 0 ;;
    *) echo "usage: bash benches/load.sh [--quick]" >&2; exit 2 ;;
    esac
done
DUR=10
[ "$QUICK" = 1 ] && DUR=3
RUNS=${LOAD_RUNS:-3}
CONNS=${LOAD_CONNS:-50}
LOG_LEVEL=${ICPGATE_LOG_LEVEL:-warn}
MAX_WAIT=${LOAD_MAX_WAIT:-60}
CMDLINE="bash benches/load.sh${*:+ $*}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d /tmp/icpgate-load.XXXXXX)
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)

log() { printf '[load] %s\n' "$*" >&2; }
die() { printf '[load] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- processes
IG_PID=""
NGX_PID=""
stop_pid() { # pid name
    local pid=$1 i
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$2 ($pid) did not stop after 10 s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$IG_PID" icpgate
    stop_pid "$NGX_PID" nginx
    rm -f "$WORK"/*.h2log
    if [ "${LOAD_KEEP:-1}" = 0 ]; then rm -rf "$WORK"; else log "raw output kept in $WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- install
APT_UPDATED=0
apt_install() { # packages...
    [ "$(id -u)" = 0 ] || { log "not root: cannot apt-get install $*"; return 1; }
    command -v apt-get >/dev/null || { log "no apt-get: cannot install $*"; return 1; }
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        apt-get update -qq >&2 || return 1
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}
PATH=$PATH:/usr/sbin:/sbin
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx)
command -v curl >/dev/null || need+=(curl ca-certificates)
command -v openssl >/dev/null || need+=(openssl)
command -v taskset >/dev/null || need+=(util-linux)
command -v getconf >/dev/null || need+=(libc-bin)
if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}" || die "could not install ${need[*]}"; fi
command -v h2load >/dev/null || apt_install nghttp2-client || log "h2load not available: its row is skipped"
HAVE_H2LOAD=0
command -v h2load >/dev/null && HAVE_H2LOAD=1
NGINX=$(command -v nginx)

[ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (icpgate on CPU 0, load generator on CPU 1)"
command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain first"

# ---------------------------------------------------------------- build
log "cargo build --release in $ROOT"
(cd "$ROOT" && cargo build --release >&2)
BIN=$ROOT/target/release/icpgate
[ -x "$BIN" ] || die "no $BIN after the build"
TABLE=$ROOT/config/demo-table.csv
[ -f "$TABLE" ] || die "missing $TABLE"

# ---------------------------------------------------------------- helpers
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port seconds
    local i
    for i in $(seq 1 $(($2 * 10))); do
        port_busy "$1" && return 0
        sleep 0.1
    done
    return 1
}
TCK=$(getconf CLK_TCK)
cpu_ticks() { # utime+stime (fields 14, 15) of a process, in clock ticks
    # the comm field may hold spaces: cut at the last ')' first (field 3 -> $1)
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
# fraction of all CPUs busy over 1 s, in percent (from /proc/stat)
busy_pct() {
    local a b
    a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
    sleep 1
    b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," "); split(b,y," ");
        bu=y[1]-x[1]; id=y[2]-x[2]; if (bu+id<=0) print 0; else printf "%.0f", 100*bu/(bu+id)}'
}
# Before each run: if the 1-minute load is above 1.0 AND the CPUs are busy
# right now (someone else is compiling), wait up to 60 s. A high load1 with
# idle CPUs is the decaying tail of this script's own previous runs, which
# would otherwise keep load1 above 1.0 for the whole benchmark.
# Prints "load1 busy% waited_s".
wait_idle() {
    local load busy waited=0
    while :; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        busy=$(busy_pct)
        if awk -v l="$load" 'BEGIN{exit !(l <= 1.0)}' || [ "$busy" -lt 10 ]; then break; fi
        if [ "$waited" -ge "$MAX_WAIT" ]; then
            log "still busy after $waited s (load1 $load, ${busy}% CPU busy): measuring anyway"
            break
        fi
        log "load1 $load, ${busy}% CPU busy: waiting"
        sleep 4
        waited=$((waited + 5))
    done
    echo "$load $busy $waited"
}
to_ms() { # wrk duration like 512.00us / 2.42ms / 1.20s / 1.00m -> ms
    awk -v v="$1" 'BEGIN{n=v+0; u=v; sub(/^[0-9.]+/,"",u);
        if (u=="us") n/=1000; else if (u=="s") n*=1000; else if (u=="m") n*=60000;
        printf "%.3f", n}'
}
median() { # numbers on stdin -> median ("-" if none)
    grep -E '^[0-9.]+$' | sort -g | awk '{v[NR]=$1} END{if (NR==0) {print "-"; exit}
        if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'
}
pctl() { # quantile h2load-log -> ms (column 3 is µs from request start to end of response)
    awk '{print $3 / 1000}' "$2" | sort -g |
        awk -v q="$1" '{v[NR] = $1} END {if (NR) {i = int(NR * q + 0.5); if (i < 1) i = 1; printf "%.3f", v[i]}}'
}
ig_alive() { kill -0 "$IG_PID" 2>/dev/null || { tail -20 "$WORK/icpgate.log" >&2; die "icpgate exited"; }; }

for p in 18080 18081 18443 18444 19080 19081 19090 19443 19444; do
    port_busy "$p" && die "port 127.0.0.1:$p is already in use"
done

# ---------------------------------------------------------------- nginx
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=www.example.com.cn" -keyout "$WORK/nginx/key.pem" -out "$WORK/nginx/cert.pem" 2>/dev/null
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;   # keep-alive rows stay keep-alive (default 1000)
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    default_type text/plain;
    server {
        listen 127.0.0.1:19081;
        listen 127.0.0.1:19444 ssl;
        ssl_certificate $WORK/nginx/cert.pem;
        ssl_certificate_key $WORK/nginx/key.pem;
        location / { return 200 "ok\n"; }
    }
}
EOF
log "starting nginx on CPU 1"
taskset -c 1 "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' \
    >"$WORK/nginx/stdout.log" 2>&1 &
NGX_PID=$!
wait_port 19081 10 || { cat "$WORK/nginx/stdout.log" "$WORK/nginx/logs/error.log" >&2; die "nginx did not start"; }

# ---------------------------------------------------------------- icpgate
CFG=$WORK/icpgate.toml
cat >"$CFG" <<EOF
# Temporary config written by benches/load.sh (like config/demo.toml).
[[listener]]
name = "http"
addr = "127.0.0.1:18080"
upstream = "127.0.0.1:19080"      # built-in demo origin, HTTP

[[listener]]
name = "tls"
addr = "127.0.0.1:18443"
upstream = "127.0.0.1:19443"      # built-in demo origin, TLS

[[listener]]
name = "http-nginx"
addr = "127.0.0.1:18081"
upstream = "127.0.0.1:19081"      # nginx, separate process on CPU 1

[[listener]]
name = "tls-nginx"
addr = "127.0.0.1:18444"
upstream = "127.0.0.1:19444"      # nginx TLS

[regions]
mainland = ["127.0.0.0/8"]

[table]
path = "$TABLE"
max_shrink = 0.10

[policy]
ip_access = "allow"
strict_ip = false

[overrides]
allow = ["provider-cdn.example"]
deny = []

[block]
http_status = 403
tls = "reset"
provider_name = "Example Cloud 示例云"
links = [
  { name = "ICP filing console 备案控制台", url = "https://beian.example-cloud.cn/" },
  { name = "Help 帮助文档", url = "https://help.example-cloud.cn/icp" },
]

[admin]
addr = "127.0.0.1:19090"

[log]
level = "$LOG_LEVEL"
blocks = false

[demo]
origin = "127.0.0.1:19080"
origin_tls = "127.0.0.1:19443"
EOF
log "starting icpgate on CPU 0"
taskset -c 0 "$BIN" run --config "$CFG" >"$WORK/icpgate.log" 2>&1 &
IG_PID=$!
for p in 18080 18081 18443 18444 19090; do
    wait_port "$p" 15 || { ig_alive; die "icpgate is not listening on :$p"; }
done

# sanity: each path answers as expected before measuring
check() { # name expected-status expected-body-substring curl-args...
    local name=$1 want=$2 sub=$3 out code
    shift 3
    out=$(curl -sk -m 5 -o "$WORK/check.body" -w '%{http_code}' "$@") || true
    code=$out
    if [ "$code" != "$want" ] || ! grep -qi -- "$sub" "$WORK/check.body"; then
        die "sanity check '$name': got HTTP $code, want $want with '$sub'"
    fi
}
check "http allowed" 200 "demo origin" -H 'Host: www.example.com.cn' http://127.0.0.1:18080/
check "http blocked" 403 "icp" -H 'Host: unknown.cn' http://127.0.0.1:18080/
check "tls ip literal" 200 "demo origin (https)" https://127.0.0.1:18443/
check "tls sni" 200 "demo origin (https)" --resolve www.example.com.cn:18443:127.0.0.1 https://www.example.com.cn:18443/
check "http nginx" 200 "ok" -H 'Host: www.example.com.cn' http://127.0.0.1:18081/
check "tls nginx" 200 "ok" https://127.0.0.1:18444/
log "sanity checks passed"

# ---------------------------------------------------------------- runs
ROWS=()
declare -A LABEL CMD
MAX_OTHER=${LOAD_MAX_OTHER:-10}   # % of the machine used by other processes that spoils a run
EXTRA=${LOAD_EXTRA_TRIES:-3}      # extra tries per row to get $RUNS unspoilt runs
# total and steal jiffies over all CPUs (/proc/stat)
sys_jiffies() { awk '/^cpu /{print $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $9}' /proc/stat; }
# CPU ticks (utime+stime+cutime+cstime) of every process that is neither a
# kernel thread nor ours (this script and its children, icpgate, nginx): what
# others (say, a compiler) used. Children reaped during a run count through
# their parent's cutime/cstime.
others_ticks() {
    cat /proc/[0-9]*/stat 2>/dev/null | sed 's/^\([0-9]*\) (.*) /\1 /' |
        awk -v ours="$$ $IG_PID $NGX_PID" '
        { pp[$1] = $3; t[$1] = $13 + $14 + $15 + $16 }
        END {
            n = split(ours, o, " "); for (i = 1; i <= n; i++) mine[o[i]] = 1
            do { ch = 0; for (p in pp) if (!(p in mine) && (pp[p] in mine)) { mine[p] = 1; ch = 1 } } while (ch)
            for (p in pp) if (!(p in mine) && p != 2 && pp[p] != 2) s += t[p]
            print s + 0
        }'
}
# connections icpgate refused so far (loop guards), from its metrics
refused_total() {
    local v
    v=$(curl -s -m 5 http://127.0.0.1:19090/metrics |
        awk '/^icpgate_connections_refused_total/{s += $NF} END{printf "%d", s}') || true
    echo "${v:-0}"
}
# run the load generator "$@" on CPU 1, output to $OUT
run_gen() { taskset -c 1 "$@" >"$OUT" 2>&1 || echo "exit status $?" >>"$OUT"; }
# one result line per try in $WORK/<id>.runs:
#  1 rps 2 p50_ms 3 p99_ms 4 cpu_us_per_req 5 cpu_pct 6 requests 7 non2xx 8 errors
#  9 load1 10 busy% before 11 waited_s 12 other% during 13 steal% during
#  14 connections icpgate refused (icpgate_connections_refused_total)
parse_wrk() { # file -> rps p50 p99 reqs secs non2xx sockerr
    local f=$1
    printf '%s %s %s %s %s %s %s\n' \
        "$(awk '/^Requests\/sec:/{print $2}' "$f" | grep . || echo 0)" \
        "$(to_ms "$(awk '$1=="50%"{print $2}' "$f")")" \
        "$(to_ms "$(awk '$1=="99%"{print $2}' "$f")")" \
        "$(awk '/ requests in /{print $1}' "$f" | grep . || echo 0)" \
        "$(awk '/ requests in /{v=$4; sub(/,$/,"",v); n=v+0; if (v ~ /m$/) n*=60; print n}' "$f" | grep . || echo 0)" \
        "$(awk '/Non-2xx or 3xx responses:/{print $NF}' "$f" | grep . || echo 0)" \
        "$(awk '/Socket errors:/{gsub(/,/,""); print "c"$4"/r"$6"/w"$8"/t"$10}' "$f" | grep . || echo none)"
}
parse_h2load() { # file h2log -> rps p50 p99 reqs secs non2xx errors
    local f=$1 l=$2
    # "finished in 10.00s, 21143.50 req/s, 3.43MB/s"
    # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
    # "status codes: N 2xx, N 3xx, N 4xx, N 5xx"; the log: start(us) status elapsed(us)
    printf '%s %s %s %s %s %s %s\n' \
        "$(awk '/^finished in/{print $4}' "$f" | grep . || echo 0)" \
        "$(pctl 0.50 "$l" | grep . || echo -)" \
        "$(pctl 0.99 "$l" | grep . || echo -)" \
        "$(awk '/^requests:/{print $6}' "$f" | grep . || echo 0)" \
        "$(awk '/^finished in/{v=$3; sub(/s,$/,"",v); print v+0}' "$f" | grep . || echo 0)" \
        "$(awk '/^status codes:/{print $5 + $7 + $9}' "$f" | grep . || echo 0)" \
        "$(awk '/^requests:/{print "f"$10"/e"$12"/t"$14}' "$f" | grep . || echo none)"
}
# measure ID LABEL TOOL WARMUP-ARGS -- RUN-ARGS: warm-up, then tries until
# $RUNS of them were not spoilt by other processes (at most $RUNS + $EXTRA)
measure() {
    local id=$1 label=$2 tool=$3 try=0 good=0 li s0 s1 c0 c1 o0 o1 r0 r1 res other
    shift 3
    local warm=() args=()
    while [ "$1" != -- ]; do warm+=("$1"); shift; done
    shift
    args=("$@")
    ROWS+=("$id")
    LABEL[$id]=$label
    CMD[$id]="taskset -c 1 $tool$(printf ' %q' "${args[@]}")"
    [ "$tool" = h2load ] && CMD[$id]+=" --log-file=FILE"
    : >"$WORK/$id.runs"
    log "$id: $label (warm-up 1 s)"
    OUT=/dev/null run_gen "$tool" "${warm[@]}"
    while [ "$good" -lt "$RUNS" ] && [ "$try" -lt $((RUNS + EXTRA)) ]; do
        try=$((try + 1))
        li=$(wait_idle)
        ig_alive
        OUT=$WORK/$id.$try.txt
        local extra=()
        [ "$tool" = h2load ] && extra=("--log-file=$WORK/$id.$try.h2log")
        r0=$(refused_total)
        s0=$(sys_jiffies) o0=$(others_ticks) c0=$(cpu_ticks "$IG_PID")
        run_gen "$tool" "${args[@]}" "${extra[@]}"
        c1=$(cpu_ticks "$IG_PID") o1=$(others_ticks) s1=$(sys_jiffies)
        r1=$(refused_total)
        if [ "$tool" = h2load ]; then
            res=$(parse_h2load "$OUT" "$WORK/$id.$try.h2log")
            rm -f "$WORK/$id.$try.h2log"
        else
            res=$(parse_wrk "$OUT")
        fi
        # CPU used by other processes, and steal, as % of all CPUs
        other=$(awk -v a="$s0" -v b="$s1" -v d=$((o1 - o0)) 'BEGIN{
            split(a, x, " "); split(b, y, " "); t = y[1] - x[1]
            o = (t > 0) ? 100 * d / t : 0; if (o < 0) o = 0
            printf "%.0f %.1f", o, (t > 0) ? 100 * (y[2] - x[2]) / t : 0 }')
        awk -v r="$res" -v dt=$((c1 - c0)) -v tck="$TCK" -v li="$li" -v o="$other" -v rf=$((r1 - r0)) 'BEGIN{
            split(r, v, " ")   # rps p50 p99 reqs secs non2xx errors
            cpu = dt / tck
            us = (v[4] > 0) ? 1e6 * cpu / v[4] : -1
            pct = (v[5] > 0) ? 100 * cpu / v[5] : -1
            printf "%s %s %s %.2f %.0f %s %s %s %s %s %s\n", v[1], v[2], v[3], us, pct, v[4], v[6], v[7], li, o, rf }' \
            >>"$WORK/$id.runs"
        if [ "${other%% *}" -le "$MAX_OTHER" ]; then good=$((good + 1)); else
            log "$id try $try: other processes used ${other%% *}% of the machine during the run: not counted"
        fi
        log "$id try $try: $(tail -1 "$WORK/$id.runs")"
    done
}
wrk_row() { # id label url [wrk args...]
    local id=$1 label=$2 url=$3
    shift 3
    measure "$id" "$label" wrk -t1 "-c$CONNS" -d1s "$@" "$url" -- \
        -t1 "-c$CONNS" "-d${DUR}s" --latency "$@" "$url"
}

HOST_OK=(-H 'Host: www.example.com.cn')
log "measuring: $RUNS runs x ${DUR}s per row, $CONNS connections"
wrk_row 1 "HTTP keep-alive, allowed (demo origin)" http://127.0.0.1:18080/ "${HOST_OK[@]}"
wrk_row 2 "HTTP keep-alive, blocked (403 + Connection: close → new conn/req)" \
    http://127.0.0.1:18080/ -H 'Host: unknown.cn'
wrk_row 3 "HTTP new connection per request, allowed (demo origin)" http://127.0.0.1:18080/ \
    "${HOST_OK[@]}" -H 'Connection: close'
wrk_row 4a "TLS passthrough keep-alive, IP literal (demo origin)" https://127.0.0.1:18443/
wrk_row 4b "TLS passthrough, new TLS conn per request, IP literal (demo origin)" \
    https://127.0.0.1:18443/ -H 'Connection: close'
if [ "$HAVE_H2LOAD" = 1 ]; then
    measure 4c "TLS passthrough keep-alive, SNI www.example.com.cn, h2load --h1 (demo origin)" h2load \
        --h1 -t1 "-c$CONNS" -D 1 --connect-to=127.0.0.1:18443 https://www.example.com.cn:18443/ -- \
        --h1 -t1 "-c$CONNS" -D "$DUR" --connect-to=127.0.0.1:18443 https://www.example.com.cn:18443/
fi
wrk_row N1 "HTTP keep-alive, allowed (nginx upstream)" http://127.0.0.1:18081/ "${HOST_OK[@]}"
wrk_row N3 "HTTP new connection per request, allowed (nginx upstream)" http://127.0.0.1:18081/ \
    "${HOST_OK[@]}" -H 'Connection: close'
wrk_row N4a "TLS passthrough keep-alive, IP literal (nginx upstream)" https://127.0.0.1:18444/
wrk_row N4b "TLS passthrough, new TLS conn per request, IP literal (nginx upstream)" \
    https://127.0.0.1:18444/ -H 'Connection: close'
ig_alive

METRICS=$(curl -s -m 5 http://127.0.0.1:19090/metrics |
    grep -E '^icpgate_(decisions|connections_[a-z_]+)_total' |
    awk '$NF != 0' || true)
WARNS=$(grep -c 'WARN' "$WORK/icpgate.log" || true)
# distinct log messages (ANSI colours, timestamps and key=value fields removed), most frequent first
LOGSUM=$(sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^[0-9T:.-]*Z *//' -e 's/ [A-Za-z_.]*=[^ ]*//g' "$WORK/icpgate.log" |
    cut -c1-200 | sort | uniq -c | sort -rn | head -8 || true)
SNI_WARNS=$(grep -c 'Illegal SNI extension' "$WORK/icpgate.log" || true)
ERRS=$(grep -c 'ERROR' "$WORK/icpgate.log" || true)

# ---------------------------------------------------------------- report
fmt_ms() { awk -v v="$1" 'BEGIN{ if (v=="-") print "-"; else if (v<1) printf "%.0f µs", v*1000; else printf "%.2f ms", v}'; }
COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT (+ uncommitted changes)"
MODEL=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
WRKV=$( (wrk -v 2>&1 || true) | head -1 | awk '{print $1, $2}')
NGXV=$( ("$NGINX" -v 2>&1 || true) | sed 's/^nginx version: //')
H2V=$([ "$HAVE_H2LOAD" = 1 ] && h2load --version 2>&1 | head -1 || echo "not installed")

{
    echo "## icpgate load test"
    echo
    echo "| row | scenario | req/s | p50 | p99 | icpgate CPU µs/req | icpgate CPU (% of 1 core) | non-2xx | socket errors | conns refused by icpgate | runs used / tries | load1 before runs | other CPU during runs |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|---|---|"
    for id in "${ROWS[@]}"; do
        f=$WORK/$id.runs
        # the runs not spoilt by other processes; if none, all of them
        awk -v m="$MAX_OTHER" '$12 <= m' "$f" >"$f.used"
        used="$(wc -l <"$f.used") / $(wc -l <"$f")"
        [ -s "$f.used" ] || { cp "$f" "$f.used"; used="0 / $(wc -l <"$f") (none undisturbed: all used)"; }
        u=$f.used
        rps=$(cut -d' ' -f1 "$u" | median)
        [ "$rps" = - ] || rps=$(awk -v v="$rps" 'BEGIN{printf "%.0f", v}')
        p50=$(cut -d' ' -f2 "$u" | median)
        p99=$(cut -d' ' -f3 "$u" | median)
        us=$(cut -d' ' -f4 "$u" | median)
        pct=$(cut -d' ' -f5 "$u" | median)
        non=$(awk '{s+=$7} END{print s+0}' "$u")
        se=$(awk '$8!="none" && $8!~/^c0\/r0\/w0\/t0$|^f0\/e0\/t0$/{printf "%s%s", (n++?" ":""), $8} END{if(!n) printf "0"}' "$u")
        rf=$(awk '{s += $14} END{print s + 0}' "$u")
        ld=$(awk '{printf "%s%s", (NR>1?", ":""), $9; if ($11>0) printf " (waited %ss)", $11}' "$f")
        oth=$(awk '{printf "%s%s%%", (NR>1?", ":""), $12}' "$f")
        printf '| %s | %s | %s | %s | %s | %s | %s%% | %s | %s | %s | %s | %s | %s |\n' \
            "$id" "${LABEL[$id]}" "$rps" "$(fmt_ms "$p50")" "$(fmt_ms "$p99")" "$us" "$pct" "$non" "$se" "$rf" \
            "$used" "$ld" "$oth"
    done
    echo
    echo "Each row: a 1 s warm-up, then runs of ${DUR} s with $CONNS connections and 1 load-generator thread until"
    echo "$RUNS runs were not disturbed by other processes (at most $((RUNS + EXTRA)) tries); every column is the median of those"
    echo "runs (non-2xx and refused connections are their sums). icpgate is pinned to CPU 0, the load generator and nginx to CPU 1."
    echo "\"Other CPU\" is the CPU time of all processes other than icpgate, nginx, the load generator and kernel"
    echo "threads during a run, as % of all $(nproc) CPUs; a run with more than ${MAX_OTHER}% is retried and not used."
    echo
    echo "- icpgate CPU well below 100% of its core means it was not the bottleneck: the load generator (and, for N*,"
    echo "  nginx) on CPU 1 was — typically the TLS rows, where CPU 1 does the client (and server) TLS work."
    echo "- **Rows 1–4c: the built-in demo origin runs inside the icpgate process** (same PID, also on CPU 0),"
    echo "  so its cost is in the CPU µs/req and it competes with the proxy for CPU 0. For the TLS rows that"
    echo "  includes the origin's TLS termination (rustls) — in 4b a full TLS handshake per request. Rows N*"
    echo "  use nginx on CPU 1 as the upstream, so their CPU µs/req is the proxy alone."
    echo "- Row 2: the block page is sent with \`Connection: close\`, so despite keep-alive on the client every"
    echo "  request is a new TCP connection (wrk reconnects); all responses are 403 by design (non-2xx expected)."
    echo "- wrk's latency is from writing the request to the full response; the TCP connect and TLS handshake"
    echo "  of a new connection (rows 2, 3, 4b, N3, N4b) are not in it, but are in req/s and CPU."
    echo "- wrk sends the URL's IP literal as TLS SNI; icpgate treats it as an IP literal (R3 ip_access, allowed)."
    echo "  Row 4c uses h2load with \`--connect-to\` so the SNI is www.example.com.cn (R1 filed, allowed);"
    echo "  the demo TLS origin has no ALPN, so h2load speaks HTTP/1.1 (\`--h1\`); its p50/p99 come from its per-request log."
    echo "- icpgate log lines during the test: $WARNS WARN ($SNI_WARNS of them rustls 'Illegal SNI extension: ignoring IP"
    echo "  address presented as hostname' from the demo TLS origin, one per wrk TLS handshake), $ERRS ERROR."
    echo "- Socket errors are wrk's (connect/read/write/timeout) or h2load's (failed/errored/timeout) counts."
    echo "  \"Conns refused by icpgate\" is the rise of icpgate_connections_refused_total (its loop guards) during the runs."
    echo "- Before each run the script reads /proc/loadavg and how busy the CPUs are over 1 s while the benchmark is idle."
    echo "  It waits (≤ ${MAX_WAIT} s) only while load1 > 1.0 *and* the CPUs are > 10% busy: load1 stays > 1.0 from this"
    echo "  script's own previous runs even on an otherwise idle machine."
    echo
    echo "**Machine:** $(nproc) CPUs, $MODEL, Linux $(uname -r) ($(uname -m)); tcp_tw_reuse=$(cat /proc/sys/net/ipv4/tcp_tw_reuse 2>/dev/null), ip_local_port_range=$(tr '\t' '-' </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null)  "
    echo "**icpgate:** commit $COMMIT, $(rustc --version 2>/dev/null || echo rustc ?), log level $LOG_LEVEL  "
    echo "**Tools:** $WRKV; $NGXV; $H2V  "
    echo "**Command:** \`$CMDLINE\` (in $ROOT), started $STARTED"
    echo
    echo "<details><summary>load-generator commands, per-run results, decision counters</summary>"
    echo
    for id in "${ROWS[@]}"; do echo "- $id: \`${CMD[$id]}\`"; done
    echo
    echo '```'
    echo "row try rps p50_ms p99_ms cpu_us/req cpu% requests non2xx errors load1 busy%_before waited_s other%_during steal%_during refused"
    for id in "${ROWS[@]}"; do awk -v id="$id" '{print id, NR, $0}' "$WORK/$id.runs"; done
    echo
    echo "$METRICS"
    echo
    echo "icpgate log, distinct messages (count):"
    echo "$LOGSUM"
    echo '```'
    echo "</details>"
} | tee "$WORK/results.md"
