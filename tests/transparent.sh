#!/usr/bin/env bash
# End-to-end test of icpgate's transparent mode with the REAL binary in
# throw-away network namespaces (deploy/nftables/netns-smoke.sh checks the
# nftables files with a Python stand-in; this checks icpgate itself).
#
#   bash tests/transparent.sh path/to/icpgate
#
# 1. REDIRECT (mandatory). One namespace, loopback only:
#      upstream HTTP server on 127.0.0.2:8888 and [::1]:8888
#      icpgate: listeners 127.0.0.1:15001 and [::1]:15001, transparent =
#        "redirect", upstream_fwmark = 2, admin on 127.0.0.1:19090
#      nft nat output: TCP to 127.0.0.2:8888 / [::1]:8888 -> redirect to
#        :15001, except `meta mark 0x2` (icpgate's own upstream sockets)
#    curl to 127.0.0.2:8888 with Host www.example.com.cn reaches the upstream
#    through icpgate (SO_ORIGINAL_DST; counted as allow/http/filed), Host
#    unknown.cn gets icpgate's 403 (X-Icpgate-Reason: unfiled) and never
#    reaches the upstream, IPv6 (IP6T_SO_ORIGINAL_DST) works too, and a
#    direct connection to the listener (not intercepted: its original
#    destination is the listener itself) is closed without looping.
# 2. TPROXY (skipped with a reason if the kernel cannot do it):
#      client ns (10.200.1.2) -- gateway ns (10.200.1.1 | 10.200.2.1) --
#      server ns (10.200.2.5, upstream HTTP :8888)
#      gateway: icpgate on 0.0.0.0:15001, transparent = "tproxy",
#        upstream_fwmark = 2; nft prerouting tproxy rules (mark 0x1) and
#        `ip rule fwmark 0x1 lookup 100` + `local 0.0.0.0/0 dev lo table 100`
#    the same two curls from the client namespace (the upstream must see the
#    allowed request come from the gateway, i.e. from icpgate), and direct
#    connections to the listener (client -> 10.200.1.1:15001, gateway-local
#    -> 127.0.0.1:15001) are closed without looping.
#
# 3. source = "client" on the same topology (plus IPv6 fd00:200:1::/64 and
#    fd00:200:2::/64): the upstream sees the client's address (v4 and v6),
#    blocked requests never reach it, a 50 MB download and a 50 MB TLS
#    passthrough echo work both ways (replies reach icpgate's transparent
#    upstream sockets through `socket transparent` + the policy route).
#
# Needs root, unshare, ip, nft, curl, python3, timeout. No traffic leaves the
# namespaces. Exit 0 = passed, 1 = a check failed, 2 = usage,
# 77 = cannot run here (SKIP). Bounded to ~60 s; everything it started
# (processes, namespaces, temp dir) is removed on exit.
set -uo pipefail

LIMIT=60
if [ -z "${ICPGATE_TRANSPARENT_INNER:-}" ]; then
	# Whole-run bound: TERM to the whole process group after $LIMIT s (the
	# EXIT trap below still cleans up), KILL 10 s later.
	command -v timeout >/dev/null || { echo "SKIP: timeout not found"; exit 77; }
	ICPGATE_TRANSPARENT_INNER=1 exec timeout -k 10 "$LIMIT" bash "${BASH_SOURCE[0]}" "$@"
fi

BIN=${1:-}
if [ -z "$BIN" ] || [ ! -x "$BIN" ]; then
	echo "usage: $0 ICPGATE_BIN (executable)"
	exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, nftables)"
for t in unshare ip nft curl python3; do
	command -v "$t" >/dev/null || skip "$t not found"
done
timeout 5 unshare --net true 2>/dev/null || skip "cannot create network namespaces (unshare --net failed)"

# Never send the test's requests to a proxy from the environment.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY
export RUST_LOG=info

P="icpgt$$"
NAMESPACES=()
WORK=$(mktemp -d)
# shellcheck disable=SC2317 # called through the traps
cleanup() {
	trap - EXIT INT TERM HUP
	local ns pid
	for ns in "${NAMESPACES[@]}"; do
		for pid in $(timeout 2 ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null; done
	done
	sleep 0.2
	for ns in "${NAMESPACES[@]}"; do
		for pid in $(timeout 2 ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
		timeout 5 ip netns del "$ns" 2>/dev/null
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "FAIL  interrupted (time limit ${LIMIT}s?)"; dump_logs; exit 1' INT TERM HUP

# shellcheck disable=SC2317 # called through the traps
dump_logs() {
	local f
	for f in "$WORK"/*.log "$WORK"/*.err; do
		[ -s "$f" ] || continue
		echo "--- $(basename "$f") (last 20 lines)"
		tail -n 20 "$f"
	done
}

newns() { # name
	timeout 5 ip netns add "$1" || return 1
	NAMESPACES+=("$1")
	ip -n "$1" link set lo up
}
newns "$P-probe" 2>/dev/null || skip "cannot create named network namespaces (ip netns add failed)"

FAILS=0
ok() { echo "ok    $*"; }
fail() { echo "FAIL  $*"; FAILS=$((FAILS + 1)); }
expect() { # name got want
	if [ "$2" = "$3" ]; then ok "$1: $2"; else fail "$1: got '$2', want '$3'"; fi
}

# --- helpers ------------------------------------------------------------
cat >"$WORK/upstream.py" <<'EOF'
# Upstream HTTP server: 200 "upstream-ok host=<Host>", X-Upstream-Peer: the
# client address it saw; one "<peer> <host>" line per request in argv[3].
import http.server, socket, sys
addr, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'  # keep-alive: upstream connections are pooled
    def do_GET(self):
        host = self.headers.get('Host', '')
        peer = self.client_address[0]
        with open(log, 'a') as f:
            f.write(peer + ' ' + host + '\n')
        if self.path == '/big':
            n = 50 * 1024 * 1024
            self.send_response(200)
            self.send_header('Content-Length', str(n))
            self.send_header('X-Upstream-Peer', peer)
            self.end_headers()
            chunk = b'x' * 65536
            for _ in range(n // len(chunk)):
                self.wfile.write(chunk)
            return
        body = ('upstream-ok host=' + host).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'text/plain')
        self.send_header('Content-Length', str(len(body)))
        self.send_header('X-Upstream-Peer', peer)
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ':' in addr else socket.AF_INET
    allow_reuse_address = True
    daemon_threads = True
S((addr, port), H).serve_forever()
EOF

# Connect, send a request, report what happened: closed | reset | timeout |
# data:<first line> | connect-error:<why>.
cat >"$WORK/probe.py" <<'EOF'
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
except OSError as e:
    print('connect-error:' + type(e).__name__)
    sys.exit()
try:
    s.sendall(b'GET / HTTP/1.1\r\nHost: www.example.com.cn\r\n\r\n')
    d = s.recv(200)
    print('closed' if not d else 'data:' + d.decode('latin1').splitlines()[0])
except (ConnectionResetError, BrokenPipeError):
    print('reset')
except socket.timeout:
    print('timeout')
except OSError as e:
    print('error:' + type(e).__name__)
EOF

# A raw TCP server for TLS passthrough: logs "<peer> <n bytes>" per
# connection in argv[3] and echoes every byte back.
cat >"$WORK/echo.py" <<'EOF'
import socket, sys, threading
addr, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fam = socket.AF_INET6 if ':' in addr else socket.AF_INET
l = socket.socket(fam)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((addr, port)); l.listen(64)
def serve(c, peer):
    n = 0
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            n += len(d)
            c.sendall(d)
    except OSError:
        pass
    with open(log, 'a') as f:
        f.write('%s %d\n' % (peer[0], n))
    c.close()
while True:
    c, peer = l.accept()
    threading.Thread(target=serve, args=(c, peer), daemon=True).start()
EOF

# A TLS-shaped client: a ClientHello with SNI argv[3] to argv[1]:argv[2],
# then argv[4] MB of data, reading the echo as it comes; prints the bytes
# echoed ("echo:<n>"), or reset / closed / timeout.
cat >"$WORK/hello.py" <<'EOF'
import socket, struct, sys
host, port, sni, mb = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4])
ext = struct.pack('!HHHBH', 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
body = b'\x03\x03' + b'\x07' * 32 + b'\x00' + b'\x00\x02\x13\x01' + b'\x01\x00' + struct.pack('!H', len(ext)) + ext
hs = b'\x01' + struct.pack('!I', len(body))[1:] + body
hello = b'\x16\x03\x01' + struct.pack('!H', len(hs)) + hs
if len(sys.argv) > 5:
    print(len(hello)); sys.exit()
try:
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(hello)
    total = mb * 1024 * 1024
    sent = got = 0
    chunk = b'y' * 65536
    s.settimeout(10)
    while sent < total:
        s.sendall(chunk); sent += len(chunk)
        while got + 4 * 1024 * 1024 < sent:
            d = s.recv(1 << 20)
            if not d:
                break
            got += len(d)
    s.shutdown(socket.SHUT_WR)
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        got += len(d)
    print('echo:%d' % got if got else 'closed')
except socket.timeout:
    print('timeout')
except OSError as e:
    # ECONNRESET, ENOTCONN (shutdown after a reset), EPIPE
    print('reset' if e.errno in (104, 107, 32) else 'error:' + str(e))
EOF

cat >"$WORK/table.csv" <<'EOF'
domain,icp,filing,access,access_expires,ips
www.example.com.cn,京ICP备09051301号-1,filed,active,,
EOF

# start_upstream NS ADDR LOG
start_upstream() {
	ip netns exec "$1" python3 "$WORK/upstream.py" "$2" 8888 "$3" >>"$WORK/upstream.err" 2>&1 &
}

# port_open NS ADDR PORT: a TCP connect succeeds within 1 s.
port_open() {
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 1 ip netns exec "$1" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$2" "$3" 2>/dev/null
}

# wait_port NS ADDR PORT: up to ~5 s.
wait_port() {
	local _
	for _ in $(seq 50); do
		port_open "$@" && return 0
		sleep 0.1
	done
	return 1
}

# start_icpgate NS NAME CONFIG-TEXT: config in $WORK/NAME.toml, log in
# $WORK/NAME.log; waits for /readyz on the admin port 19090.
start_icpgate() {
	local _
	printf '%s\n' "$3" >"$WORK/$2.toml"
	ip netns exec "$1" "$BIN" run --config "$WORK/$2.toml" >"$WORK/$2.log" 2>&1 &
	for _ in $(seq 50); do
		if timeout 2 ip netns exec "$1" curl -sf --max-time 1 -o /dev/null http://127.0.0.1:19090/readyz; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# req NS URL HOST -> "<status> reason=<X-Icpgate-Reason or -> <body's first line>"
# (REQ_FROM=ADDR: from that source address)
req() {
	local h="$WORK/req.h" b="$WORK/req.b" code reason body
	rm -f "$h" "$b"
	code=$(timeout 5 ip netns exec "$1" curl -sS --noproxy '*' --max-time 3 \
		${REQ_FROM:+--interface "$REQ_FROM"} \
		-H "Host: $3" -D "$h" -o "$b" -w '%{http_code}' "$2" 2>&1) || true
	reason=$(tr -d '\r' <"$h" 2>/dev/null | awk -F': *' 'tolower($1) == "x-icpgate-reason" { print $2 }')
	body=$(head -n 1 "$b" 2>/dev/null)
	echo "$code reason=${reason:--} $body"
}

# header NAME: from the last req
header() {
	# Split at the first colon only: values may hold colons (IPv6 addresses).
	tr -d '\r' <"$WORK/req.h" 2>/dev/null | awk -v n="$1" '{
		i = index($0, ":"); if (i == 0) next
		v = substr($0, i + 1); sub(/^ */, "", v)
		if (tolower(substr($0, 1, i - 1)) == tolower(n)) print v
	}'
}

# metric NS NAME LABEL=VALUE...: sum of the matching series (0 if none).
metric() {
	local ns=$1 name=$2
	shift 2
	timeout 5 ip netns exec "$ns" curl -sf --max-time 3 http://127.0.0.1:19090/metrics 2>/dev/null |
		awk -v name="$name" -v want="$*" '
			index($0, name "{") == 1 || index($0, name " ") == 1 {
				n = split(want, w, " ")
				for (i = 1; i <= n; i++) {
					split(w[i], kv, "=")
					if (index($0, kv[1] "=\"" kv[2] "\"") == 0) next
				}
				s += $NF
			}
			END { print s + 0 }'
}

# hits LOG HOST: requests the upstream got for HOST.
hits() {
	awk -v h="$2" '$2 == h { n++ } END { print n + 0 }' "$1" 2>/dev/null || echo 0
}

# direct FROM-NS ICPGATE-NS ADDR PORT NAME: a connection straight to a
# transparent listener is closed (not forwarded to itself, no loop) and
# icpgate stays healthy.
direct() {
	local from=$1 ns=$2 addr=$3 port=$4 name=$5 got before after
	before=$(metric "$ns" icpgate_connections_total)
	got=$(timeout 6 ip netns exec "$from" python3 "$WORK/probe.py" "$addr" "$port" 2>&1)
	case "$got" in
		closed | reset | connect-error:ConnectionResetError) ok "$name: direct connection to $addr:$port closed ($got)" ;;
		*) fail "$name: direct connection to $addr:$port: got '$got', want closed/reset" ;;
	esac
	sleep 0.3
	after=$(metric "$ns" icpgate_connections_total)
	if [ $((after - before)) -le 2 ]; then
		ok "$name: no loop (connections_total +$((after - before)))"
	else
		fail "$name: connections_total grew by $((after - before)) for one direct connection (loop?)"
	fi
	if timeout 3 ip netns exec "$ns" curl -sf --max-time 2 -o /dev/null http://127.0.0.1:19090/healthz; then
		ok "$name: icpgate healthy after the direct connection"
	else
		fail "$name: icpgate not healthy after the direct connection"
	fi
}

# --- 1. REDIRECT ----------------------------------------------------------
echo "== REDIRECT (nat output, SO_ORIGINAL_DST)"
R="$P-redir"
newns "$R" || { echo "FAIL  cannot create namespace $R"; exit 1; }
ULOG="$WORK/upstream-redirect.log"
: >"$ULOG"
start_upstream "$R" 127.0.0.2 "$ULOG"
start_upstream "$R" ::1 "$ULOG"
wait_port "$R" 127.0.0.2 8888 || { echo "FAIL  upstream 127.0.0.2:8888 did not start"; cat "$WORK/upstream.err"; exit 1; }
wait_port "$R" ::1 8888 || { echo "FAIL  upstream [::1]:8888 did not start"; cat "$WORK/upstream.err"; exit 1; }
expect "redirect: no rules yet, upstream answers directly" \
	"$(req "$R" http://127.0.0.2:8888/ www.example.com.cn)" "200 reason=- upstream-ok host=www.example.com.cn"

start_icpgate "$R" redirect "
[[listener]]
name = \"redir4\"
addr = \"127.0.0.1:15001\"
transparent = \"redirect\"
upstream_fwmark = 2

[[listener]]
name = \"redir6\"
addr = \"[::1]:15001\"
transparent = \"redirect\"
upstream_fwmark = 2

[regions]
mainland = [\"127.0.0.0/8\", \"::1/128\"]

[table]
path = \"$WORK/table.csv\"

[admin]
addr = \"127.0.0.1:19090\"
" || { echo "FAIL  icpgate (redirect) did not become ready"; cat "$WORK/redirect.log"; exit 1; }
ok "redirect: icpgate ready"

cat >"$WORK/redirect.nft" <<'EOF'
table inet icpgate_test {
	chain output {
		type nat hook output priority -100; policy accept;
		# icpgate's own upstream connections (SO_MARK 2): never redirected.
		meta mark 0x2 return
		ip daddr 127.0.0.2 tcp dport 8888 redirect to :15001
		ip6 daddr ::1 tcp dport 8888 redirect to :15001
	}
}
EOF
if ! out=$(timeout 5 ip netns exec "$R" nft -f "$WORK/redirect.nft" 2>&1); then
	echo "$out"
	if printf '%s' "$out" | grep -qi 'No such file or directory\|Operation not supported\|not supported'; then
		skip "kernel lacks nftables nat/redirect support"
	fi
	echo "FAIL  nft -f redirect rules"
	exit 1
fi
ok "redirect: nft rules loaded"

expect "redirect: allowed (filed) reaches the upstream through icpgate" \
	"$(req "$R" http://127.0.0.2:8888/ www.example.com.cn)" "200 reason=- upstream-ok host=www.example.com.cn"
n=$(metric "$R" icpgate_decisions_total decision=allow protocol=http reason=filed)
if [ "$n" -ge 1 ]; then ok "redirect: icpgate counted decision=allow reason=filed ($n)"; else fail "redirect: decision allow/http/filed = $n, want >= 1 (request did not go through icpgate)"; fi

expect "redirect: unfiled blocked by icpgate" \
	"$(req "$R" http://127.0.0.2:8888/ unknown.cn | cut -d' ' -f1-2)" "403 reason=unfiled"
expect "redirect: blocked request never reached the upstream" "$(hits "$ULOG" unknown.cn)" "0"
n=$(metric "$R" icpgate_decisions_total decision=block protocol=http reason=unfiled)
if [ "$n" -ge 1 ]; then ok "redirect: icpgate counted decision=block reason=unfiled ($n)"; else fail "redirect: decision block/http/unfiled = $n, want >= 1"; fi

expect "redirect: IPv6 allowed reaches the upstream through icpgate" \
	"$(req "$R" 'http://[::1]:8888/' www.example.com.cn)" "200 reason=- upstream-ok host=www.example.com.cn"
expect "redirect: IPv6 unfiled blocked by icpgate" \
	"$(req "$R" 'http://[::1]:8888/' unknown.cn | cut -d' ' -f1-2)" "403 reason=unfiled"
n=$(metric "$R" icpgate_connections_total listener=redir6)
if [ "$n" -ge 2 ]; then ok "redirect: IPv6 listener got the IPv6 connections ($n)"; else fail "redirect: IPv6 listener connections_total = $n, want >= 2"; fi
n=$(metric "$R" icpgate_upstream_connect_errors_total)
expect "redirect: no upstream connect errors" "$n" "0"

direct "$R" "$R" 127.0.0.1 15001 "redirect"
direct "$R" "$R" ::1 15001 "redirect (IPv6)"
if grep -q 'not intercepted' "$WORK/redirect.log"; then
	ok "redirect: icpgate logged the direct connection as not intercepted"
else
	echo "note  redirect: icpgate's log has no 'not intercepted' line:"
	sed 's/^/      /' "$WORK/redirect.log" | tail -n 5
fi
expect "redirect: upstream saw only the allowed requests" "$(hits "$ULOG" www.example.com.cn)" "3"

# --- 2. TPROXY --------------------------------------------------------------
echo "== TPROXY (prerouting tproxy, IP_TRANSPARENT listener)"
tproxy() {
	local C="$P-tcli" G="$P-tgw" S="$P-tsrv" out n
	if ! { newns "$C" && newns "$G" && newns "$S"; }; then
		echo "skip  tproxy: cannot create namespaces"
		return 0
	fi
	if ! { ip link add "$P-c" netns "$C" type veth peer name g1 netns "$G" &&
		ip link add "$P-s" netns "$S" type veth peer name g2 netns "$G"; }; then
		echo "skip  tproxy: cannot create veth pairs (no veth support?)"
		return 0
	fi
	(
		set -e
		ip -n "$C" addr add 10.200.1.2/24 dev "$P-c"
		ip -n "$G" addr add 10.200.1.1/24 dev g1
		ip -n "$G" addr add 10.200.2.1/24 dev g2
		ip -n "$S" addr add 10.200.2.5/24 dev "$P-s"
		ip -n "$C" link set "$P-c" up
		ip -n "$G" link set g1 up
		ip -n "$G" link set g2 up
		ip -n "$S" link set "$P-s" up
		ip -n "$C" route add default via 10.200.1.1
		ip -n "$S" route add default via 10.200.2.1
		ip netns exec "$G" sysctl -qw net.ipv4.ip_forward=1
	)
	# shellcheck disable=SC2181 # set -e must not be inside a condition
	if [ $? -ne 0 ]; then
		fail "tproxy: setting up the veth topology failed"
		return 0
	fi

	local ULOG2="$WORK/upstream-tproxy.log"
	: >"$ULOG2"
	start_upstream "$S" 10.200.2.5 "$ULOG2"
	wait_port "$S" 10.200.2.5 8888 || { fail "tproxy: upstream 10.200.2.5:8888 did not start"; return 0; }
	expect "tproxy: no rules yet, client reaches the upstream directly" \
		"$(req "$C" http://10.200.2.5:8888/ www.example.com.cn)" "200 reason=- upstream-ok host=www.example.com.cn"
	expect "tproxy: ... and the upstream saw the client" "$(header X-Upstream-Peer)" "10.200.1.2"

	cat >"$WORK/tproxy.nft" <<'EOF'
table inet icpgate_test {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		meta mark 0x2 return
		meta l4proto != tcp return
		fib daddr type local return
		socket transparent 1 meta mark set 0x1 accept
		meta l4proto tcp tcp flags & (fin | syn | rst | ack) == syn ip daddr 10.200.2.0/24 meta mark set 0x1 tproxy ip to :15001 accept
	}
}
EOF
	if ! out=$(timeout 5 ip netns exec "$G" nft -f "$WORK/tproxy.nft" 2>&1); then
		echo "skip  tproxy: the kernel refused the tproxy rules (nft_tproxy/nft_socket/nft_fib missing?): $out"
		return 0
	fi
	if ! out=$(ip -n "$G" rule add fwmark 0x1 lookup 100 2>&1 && ip -n "$G" route add local 0.0.0.0/0 dev lo table 100 2>&1); then
		echo "skip  tproxy: policy routing failed: $out"
		return 0
	fi
	ok "tproxy: nft rules and policy routing loaded"

	if ! start_icpgate "$G" tproxy "
[[listener]]
name = \"tproxy4\"
addr = \"0.0.0.0:15001\"
transparent = \"tproxy\"
upstream_fwmark = 2

[regions]
mainland = [\"10.200.2.0/24\"]

[table]
path = \"$WORK/table.csv\"

[admin]
addr = \"127.0.0.1:19090\"
"; then
		if grep -qi 'transparent\|permission\|not permitted' "$WORK/tproxy.log"; then
			echo "skip  tproxy: icpgate could not bind a transparent listener:"
			sed 's/^/      /' "$WORK/tproxy.log" | tail -n 5
			return 0
		fi
		fail "tproxy: icpgate did not become ready"
		sed 's/^/      /' "$WORK/tproxy.log" | tail -n 20
		return 0
	fi
	ok "tproxy: icpgate ready"

	expect "tproxy: allowed (filed) reaches the upstream through icpgate" \
		"$(req "$C" http://10.200.2.5:8888/ www.example.com.cn)" "200 reason=- upstream-ok host=www.example.com.cn"
	expect "tproxy: ... and the upstream saw the gateway (icpgate), not the client" "$(header X-Upstream-Peer)" "10.200.2.1"
	n=$(metric "$G" icpgate_decisions_total decision=allow protocol=http reason=filed)
	if [ "$n" -ge 1 ]; then ok "tproxy: icpgate counted decision=allow reason=filed ($n)"; else fail "tproxy: decision allow/http/filed = $n, want >= 1"; fi

	expect "tproxy: unfiled blocked by icpgate" \
		"$(req "$C" http://10.200.2.5:8888/ unknown.cn | cut -d' ' -f1-2)" "403 reason=unfiled"
	expect "tproxy: blocked request never reached the upstream" "$(hits "$ULOG2" unknown.cn)" "0"
	n=$(metric "$G" icpgate_decisions_total decision=block protocol=http reason=unfiled)
	if [ "$n" -ge 1 ]; then ok "tproxy: icpgate counted decision=block reason=unfiled ($n)"; else fail "tproxy: decision block/http/unfiled = $n, want >= 1"; fi
	n=$(metric "$G" icpgate_upstream_connect_errors_total)
	expect "tproxy: no upstream connect errors" "$n" "0"

	direct "$C" "$G" 10.200.1.1 15001 "tproxy (client -> gateway address)"
	direct "$G" "$G" 127.0.0.1 15001 "tproxy (gateway-local)"
	expect "tproxy: upstream saw only the two allowed requests" "$(hits "$ULOG2" www.example.com.cn)" "2"

	# --- source = "client": the origin sees its visitors (IPv4 and IPv6).
	echo "== TPROXY with source = \"client\""
	local pid
	for pid in $(ip netns pids "$G"); do
		if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q ' run --config'; then kill "$pid"; fi
	done
	sleep 0.5
	(
		set -e
		ip -n "$C" addr add fd00:200:1::2/64 dev "$P-c" nodad
		ip -n "$G" addr add fd00:200:1::1/64 dev g1 nodad
		ip -n "$G" addr add fd00:200:2::1/64 dev g2 nodad
		ip -n "$S" addr add fd00:200:2::5/64 dev "$P-s" nodad
		ip -n "$C" -6 route add default via fd00:200:1::1
		ip -n "$S" -6 route add default via fd00:200:2::1
		ip netns exec "$G" sysctl -qw net.ipv6.conf.all.forwarding=1
		ip -n "$G" -6 rule add fwmark 0x1 lookup 100
		ip -n "$G" -6 route add local ::/0 dev lo table 100
	) || { fail "client source: IPv6 topology"; return 0; }
	cat >"$WORK/tproxy6.nft" <<'EOF'
table inet icpgate_test6 {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		meta mark 0x2 return
		meta l4proto != tcp return
		fib daddr type local return
		socket transparent 1 meta mark set 0x1 accept
		meta l4proto tcp tcp flags & (fin | syn | rst | ack) == syn ip6 daddr fd00:200:2::/64 meta mark set 0x1 tproxy ip6 to :15001 accept
		meta l4proto tcp tcp flags & (fin | syn | rst | ack) == syn ip daddr 10.200.2.0/24 meta mark set 0x1 tproxy ip to :15001 accept
	}
}
EOF
	if ! out=$(timeout 5 ip netns exec "$G" nft -f "$WORK/tproxy6.nft" 2>&1); then
		echo "skip  client source: the kernel refused the IPv6 tproxy rules: $out"
		return 0
	fi
	local ULOG3="$WORK/upstream-client6.log" ELOG="$WORK/echo.log" got want before
	: >"$ULOG3"
	: >"$ELOG"
	start_upstream "$S" fd00:200:2::5 "$ULOG3"
	ip netns exec "$S" python3 "$WORK/echo.py" 10.200.2.5 8443 "$ELOG" >>"$WORK/upstream.err" 2>&1 &
	wait_port "$S" fd00:200:2::5 8888 || { fail "client source: upstream [fd00:200:2::5]:8888 did not start"; return 0; }
	wait_port "$S" 10.200.2.5 8443 || { fail "client source: echo 10.200.2.5:8443 did not start"; return 0; }
	if ! start_icpgate "$G" client "
[[listener]]
name = \"client4\"
addr = \"0.0.0.0:15001\"
transparent = \"tproxy\"
upstream_fwmark = 2
source = \"client\"

[[listener]]
name = \"client6\"
addr = \"[::]:15001\"
transparent = \"tproxy\"
upstream_fwmark = 2
source = \"client\"

[regions]
mainland = [\"10.200.2.0/24\", \"fd00:200:2::/64\"]

[limits]
upstream_connect_timeout_ms = 1500

[table]
path = \"$WORK/table.csv\"

[admin]
addr = \"127.0.0.1:19090\"
"; then
		fail "client source: icpgate did not become ready"
		sed 's/^/      /' "$WORK/client.log" | tail -n 20
		return 0
	fi
	ok "client source: icpgate ready"

	expect "client source: allowed (IPv4) reaches the upstream through icpgate" \
		"$(req "$C" http://10.200.2.5:8888/ www.example.com.cn)" "200 reason=- upstream-ok host=www.example.com.cn"
	expect "client source: ... and the upstream saw the client, not the gateway" "$(header X-Upstream-Peer)" "10.200.1.2"
	expect "client source: allowed (IPv6) reaches the upstream through icpgate" \
		"$(req "$C" 'http://[fd00:200:2::5]:8888/' www.example.com.cn)" "200 reason=- upstream-ok host=www.example.com.cn"
	expect "client source: ... and the upstream saw the IPv6 client" "$(header X-Upstream-Peer)" "fd00:200:1::2"
	expect "client source: unfiled blocked (IPv4)" \
		"$(req "$C" http://10.200.2.5:8888/ unknown.cn | cut -d' ' -f1-2)" "403 reason=unfiled"
	expect "client source: unfiled blocked (IPv6)" \
		"$(req "$C" 'http://[fd00:200:2::5]:8888/' unknown.cn | cut -d' ' -f1-2)" "403 reason=unfiled"
	expect "client source: blocked requests never reached the upstreams" \
		"$(($(hits "$ULOG2" unknown.cn) + $(hits "$ULOG3" unknown.cn)))" "0"
	# 50 MB from the origin to the client, through the transparent socket.
	got=$(timeout 20 ip netns exec "$C" curl -sS --noproxy '*' --max-time 15 -H 'Host: www.example.com.cn' \
		-o /dev/null -w '%{http_code} %{size_download}' http://10.200.2.5:8888/big 2>&1)
	expect "client source: 50 MB download through icpgate" "$got" "200 52428800"
	# TLS passthrough both ways: 50 MB up and echoed back, the origin sees
	# the client; an unfiled SNI is reset and never reaches it.
	got=$(timeout 25 ip netns exec "$C" python3 "$WORK/hello.py" 10.200.2.5 8443 www.example.com.cn 50 2>&1)
	want=$((52428800 + $(python3 "$WORK/hello.py" x 0 www.example.com.cn 0 len)))
	expect "client source: TLS passthrough, 50 MB each way" "$got" "echo:$want"
	expect "client source: ... and the TLS origin saw the client" "$(awk 'END { print $1 }' "$ELOG")" "10.200.1.2"
	before=$(wc -l <"$ELOG")
	expect "client source: unfiled SNI reset" \
		"$(timeout 10 ip netns exec "$C" python3 "$WORK/hello.py" 10.200.2.5 8443 unknown.cn 0 2>&1)" "reset"
	sleep 0.3
	expect "client source: ... and never reached the TLS origin" "$(wc -l <"$ELOG")" "$before"
	# Pooled upstream connections follow the client address: two clients
	# take turns on keep-alive; each request reaches the origin from its
	# own client's address (a pool keyed by destination alone would hand
	# one visitor's connection to the other).
	ip -n "$C" addr add 10.200.1.3/24 dev "$P-c" || fail "client source: second client address"
	local i mixed=0
	for i in 1 2 3 4; do
		for from in 10.200.1.2 10.200.1.3; do
			REQ_FROM=$from req "$C" http://10.200.2.5:8888/ www.example.com.cn >/dev/null
			[ "$(header X-Upstream-Peer)" = "$from" ] || mixed=$((mixed + 1))
		done
	done
	expect "client source: pooled connections never cross clients (8 alternating requests)" "$mixed" "0"
	expect "client source: no upstream connect errors" "$(metric "$G" icpgate_upstream_connect_errors_total)" "0"
	direct "$C" "$G" 10.200.1.1 15001 "client source (client -> gateway address)"

	# A client address the origin's answers cannot come back to (the
	# gateway drops them): the upstream connect fails within its timeout, is
	# counted, and the client gets an answer (502), not a hang.
	ip -n "$C" addr add 10.200.1.4/24 dev "$P-c" || fail "client source: third client address"
	ip netns exec "$G" nft -f - <<'EOF' || fail "client source: drop rule"
table inet icpgate_test_drop {
	chain raw {
		type filter hook prerouting priority raw; policy accept;
		ip saddr 10.200.2.5 ip daddr 10.200.1.4 drop
	}
}
EOF
	local t0
	t0=$(date +%s%N)
	got=$(REQ_FROM=10.200.1.4 req "$C" http://10.200.2.5:8888/ www.example.com.cn | cut -d' ' -f1)
	expect "client source: an address with no way back gets 502, not a hang" "$got" "502"
	n=$((($(date +%s%N) - t0) / 1000000))
	if [ "$n" -lt 3000 ]; then ok "client source: ... within the connect timeout ($n ms)"; else fail "client source: answered after $n ms"; fi
	n=$(metric "$G" icpgate_upstream_connect_errors_total)
	if [ "$n" -ge 1 ]; then ok "client source: ... counted as an upstream connect error ($n)"; else fail "client source: upstream connect errors = $n, want >= 1"; fi
	ip netns exec "$G" nft delete table inet icpgate_test_drop
	quic_tproxy
}

# --- 4. QUIC under TPROXY (transport = "udp"), with source = "client":
# a quinn client in the client namespace, a quinn echo server in the server
# namespace (examples/quic_echo, built beside the binary by `cargo test`).
quic_tproxy() {
	local Q
	Q="$(dirname "$BIN")/examples/quic_echo"
	if [ ! -x "$Q" ]; then
		echo "skip  quic: $Q not built (cargo build --example quic_echo)"
		return 0
	fi
	echo "== QUIC under TPROXY (transport = \"udp\", source = \"client\")"
	cat >"$WORK/quic.nft" <<'EOF'
table inet icpgate_quic {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		meta mark 0x2 return
		meta l4proto != udp return
		fib daddr type local return
		socket transparent 1 meta mark set 0x1 accept
		udp dport 4433 ip daddr 10.200.2.0/24 meta mark set 0x1 tproxy ip to :15443 accept
	}
}
EOF
	if ! out=$(timeout 5 ip netns exec "$G" nft -f "$WORK/quic.nft" 2>&1); then
		echo "skip  quic: the kernel refused the UDP tproxy rules: $out"
		return 0
	fi
	ip netns exec "$S" "$Q" server 10.200.2.5:4433 "$WORK/quic.der" >"$WORK/quic-server.log" 2>&1 &
	local _ pid
	for _ in $(seq 50); do [ -s "$WORK/quic.der" ] && break; sleep 0.1; done
	for pid in $(ip netns pids "$G"); do
		if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q ' run --config'; then kill "$pid"; fi
	done
	sleep 0.5
	if ! start_icpgate "$G" quic "
[[listener]]
name = \"quic4\"
addr = \"0.0.0.0:15443\"
transport = \"udp\"
transparent = \"tproxy\"
upstream_fwmark = 2
source = \"client\"

[regions]
mainland = [\"10.200.2.0/24\"]

[table]
path = \"$WORK/table.csv\"

[admin]
addr = \"127.0.0.1:19090\"
"; then
		fail "quic: icpgate did not become ready"
		sed 's/^/      /' "$WORK/quic.log" | tail -n 20
		return 0
	fi
	ok "quic: icpgate ready"
	expect "quic: allowed SNI, 1 MB echoed through icpgate" \
		"$(timeout 15 ip netns exec "$C" "$Q" client 10.200.2.5:4433 www.example.com.cn "$WORK/quic.der" 1048576 2>&1)" "ok 1048576"
	expect "quic: ... and the server saw the client's address" "$(awk '/^peer/ { p = $2 } END { print p }' "$WORK/quic-server.log")" "10.200.1.2"
	local before t0 got
	before=$(grep -c '^peer' "$WORK/quic-server.log")
	t0=$(date +%s%N)
	got=$(timeout 15 ip netns exec "$C" "$Q" client 10.200.2.5:4433 unknown.cn "$WORK/quic.der" 10 2>&1)
	case "$got" in
		*"error 112"*) ok "quic: unfiled SNI closed by icpgate (CRYPTO_ERROR unrecognized_name) in $(( ($(date +%s%N) - t0) / 1000000 )) ms" ;;
		*) fail "quic: unfiled SNI: got '$got', want a close with error 112" ;;
	esac
	expect "quic: ... and the server never heard of it" "$(grep -c '^peer' "$WORK/quic-server.log")" "$before"
	n=$(metric "$G" icpgate_decisions_total decision=allow protocol=quic reason=filed)
	expect "quic: counted allow/quic/filed" "$n" "1"
	n=$(metric "$G" icpgate_decisions_total decision=block protocol=quic reason=unfiled)
	expect "quic: counted block/quic/unfiled" "$n" "1"
}
tproxy

if [ $FAILS -eq 0 ]; then
	echo "transparent: all passed"
	exit 0
fi
echo "transparent: $FAILS failed"
dump_logs
exit 1
