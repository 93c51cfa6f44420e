#!/usr/bin/env bash
# Functional smoke test of icpgate-tproxy.nft, icpgate-redirect.nft and
# tproxy-routing.sh in throw-away network namespaces (needs root, nft, ip,
# python3, and the kernel's nft_tproxy/nft_socket/nft_fib support).
#
#   client ns (192.0.2.2, 2001:db9::2)
#       │
#   gateway ns (192.0.2.1 | 203.0.113.1, 2001:db8::1): the rules under test
#       + a stand-in for icpgate on :15001 (python, below) that connects to the
#         original destination with SO_MARK = upstream_fwmark
#       │
#   server ns (203.0.113.5, 2001:db8::5 — inside the "mainland" sets): echo :80
#
# Checks, for TPROXY and REDIRECT: forwarded IPv4/IPv6 connections to the
# mainland sets reach the proxy and, through it, the server; connections to
# the gateway's own addresses, to non-mainland addresses, and connections
# that mainland hosts open (their reply packets are addressed to mainland
# IPs) are not intercepted. REDIRECT: a client on the gateway itself is
# intercepted (nat output) and, without the 0x2 mark, the proxy's upstream
# connection loops back into itself — the bypass is what makes it work.
# TPROXY: host-local traffic, icpgate's upstream included, is not
# intercepted (prerouting only), so it works with or without the mark.
# No traffic leaves the namespaces. Exit 0 = all passed, 1 = a check
# failed, 77 = cannot run here (not root, no netns, missing kernel support).
set -uo pipefail

DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (ip netns)"; exit 77; }
for t in ip nft python3; do command -v "$t" >/dev/null || { echo "SKIP: $t not found"; exit 77; }; done

P="icpgs$$"
WORK=$(mktemp -d)
# shellcheck disable=SC2317 # called through the EXIT trap
cleanup() {
	local n pid
	for n in cli gw srv; do
		for pid in $(ip netns pids "$P-$n" 2>/dev/null); do kill "$pid" 2>/dev/null; done
		ip netns del "$P-$n" 2>/dev/null
	done
	rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$P-probe" 2>/dev/null || { echo "SKIP: cannot create network namespaces"; exit 77; }
ip netns del "$P-probe"

# --- stand-ins ----------------------------------------------------------
cat >"$WORK/echo.py" <<'EOF'
import socket, sys
fam = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
s = socket.socket(fam)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 80)); s.listen(16)
while True:
    c, a = s.accept()
    c.settimeout(2)
    try:
        c.sendall(b'echo:' + c.recv(100))
    except OSError:
        pass
    c.close()
EOF
# Minimal transparent proxy: argv = mark family(4|6) mode(tproxy|redirect).
# Original destination: the local address (TPROXY) or SO_ORIGINAL_DST
# (REDIRECT). Upstream socket gets SO_MARK = mark (0 = none). Bounded: after
# 30 connections it stops relaying (a routing loop cannot run away).
cat >"$WORK/proxy.py" <<'EOF'
import socket, struct, sys, threading
mark, fam, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
IP_TRANSPARENT, IPV6_TRANSPARENT, SO_ORIGINAL_DST, SO_MARK = 19, 75, 80, 36
af = socket.AF_INET6 if fam == '6' else socket.AF_INET
ls = socket.socket(af)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if af == socket.AF_INET6:
    ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if mode == 'tproxy':
        ls.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
    ls.bind(('::', 15001))
else:
    if mode == 'tproxy':
        ls.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
    ls.bind(('0.0.0.0', 15001))
ls.listen(64)
count = [0]
def handle(c):
    c.settimeout(2)
    try:
        if mode == 'tproxy':
            dst = c.getsockname()[:2]
        elif af == socket.AF_INET:
            raw = c.getsockopt(socket.IPPROTO_IP, SO_ORIGINAL_DST, 16)
            dst = (socket.inet_ntop(af, raw[4:8]), struct.unpack('!H', raw[2:4])[0])
        else:
            raw = c.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
            dst = (socket.inet_ntop(af, raw[8:24]), struct.unpack('!H', raw[2:4])[0])
        data = c.recv(100)
        u = socket.socket(af)
        if mark:
            u.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        u.settimeout(2)
        u.connect(dst)
        u.sendall(data)
        c.sendall(b'proxied(' + dst[0].encode() + b')' + u.recv(100))
    except OSError as e:
        try:
            c.sendall(b'upstream-error:' + type(e).__name__.encode())
        except OSError:
            pass
    c.close()
while True:
    c, _ = ls.accept()
    count[0] += 1
    if count[0] > 30:
        c.close()
        continue
    threading.Thread(target=handle, args=(c,), daemon=True).start()
EOF

# --- topology -------------------------------------------------------------
set -e
for n in cli gw srv; do ip netns add "$P-$n"; ip -n "$P-$n" link set lo up; done
ip link add "$P-c" netns "$P-cli" type veth peer name g1 netns "$P-gw"
ip link add "$P-s" netns "$P-srv" type veth peer name g2 netns "$P-gw"
ip -n "$P-cli" addr add 192.0.2.2/24 dev "$P-c"
ip -n "$P-cli" addr add 2001:db9::2/64 dev "$P-c" nodad
ip -n "$P-gw" addr add 192.0.2.1/24 dev g1
ip -n "$P-gw" addr add 2001:db9::1/64 dev g1 nodad
ip -n "$P-gw" addr add 203.0.113.1/24 dev g2
ip -n "$P-gw" addr add 2001:db8::1/64 dev g2 nodad
ip -n "$P-srv" addr add 203.0.113.5/24 dev "$P-s"
ip -n "$P-srv" addr add 2001:db8::5/64 dev "$P-s" nodad
ip -n "$P-cli" link set "$P-c" up
ip -n "$P-gw" link set g1 up
ip -n "$P-gw" link set g2 up
ip -n "$P-srv" link set "$P-s" up
ip -n "$P-cli" route add default via 192.0.2.1
ip -n "$P-cli" -6 route add default via 2001:db9::1
ip -n "$P-srv" route add default via 203.0.113.1
ip -n "$P-srv" -6 route add default via 2001:db8::1
ip netns exec "$P-gw" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
set +e

ip netns exec "$P-srv" python3 "$WORK/echo.py" 203.0.113.5 &
ip netns exec "$P-srv" python3 "$WORK/echo.py" 2001:db8::5 &
ip netns exec "$P-cli" python3 "$WORK/echo.py" 192.0.2.2 &
ip netns exec "$P-gw" python3 "$WORK/echo.py" 0.0.0.0 &

# conn NS ADDR PORT -> prints the reply (or the error)
conn() {
	ip netns exec "$1" python3 -c '
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    s.sendall(b"hi"); print(s.recv(200).decode() or "closed")
except OSError as e:
    print("error:" + type(e).__name__)' "$2" "$3"
}
FAILS=0
expect() { # name got want
	if [ "$2" = "$3" ]; then echo "ok    $1: $2"; else echo "FAIL  $1: got '$2', want '$3'"; FAILS=$((FAILS + 1)); fi
}
expect_not() { # name got unwanted-substring
	case "$2" in *"$3"*) echo "FAIL  $1: got '$2'"; FAILS=$((FAILS + 1)) ;; *) echo "ok    $1: $2" ;; esac
}
PROXY_PIDS=()
proxies() { # mark mode
	ip netns exec "$P-gw" python3 "$WORK/proxy.py" "$1" 4 "$2" &
	PROXY_PIDS+=($!)
	ip netns exec "$P-gw" python3 "$WORK/proxy.py" "$1" 6 "$2" &
	PROXY_PIDS+=($!)
	sleep 0.5
}
stop_proxies() {
	kill "${PROXY_PIDS[@]}" 2>/dev/null
	wait "${PROXY_PIDS[@]}" 2>/dev/null
	PROXY_PIDS=()
}
sleep 0.5
expect "no rules: direct v4" "$(conn "$P-cli" 203.0.113.5 80)" "echo:hi"

for mode in tproxy redirect; do
	if ! out=$(ip netns exec "$P-gw" nft -f "$DIR/icpgate-$mode.nft" 2>&1); then
		echo "$out"
		if printf '%s' "$out" | grep -qi 'No such file or directory\|Operation not supported'; then
			echo "SKIP: kernel lacks nftables support needed by icpgate-$mode.nft"; exit 77
		fi
		echo "FAIL  nft -f icpgate-$mode.nft"; exit 1
	fi
	if [ $mode = tproxy ]; then
		ip netns exec "$P-gw" sh "$DIR/tproxy-routing.sh" up >/dev/null || { echo "FAIL  tproxy-routing.sh up"; exit 1; }
	else
		ip netns exec "$P-gw" sh "$DIR/tproxy-routing.sh" down >/dev/null
	fi
	proxies 2 $mode
	expect "$mode: forwarded v4 via proxy" "$(conn "$P-cli" 203.0.113.5 80)" "proxied(203.0.113.5)echo:hi"
	expect "$mode: forwarded v6 via proxy" "$(conn "$P-cli" 2001:db8::5 80)" "proxied(2001:db8::5)echo:hi"
	expect "$mode: gateway's own address not intercepted" "$(conn "$P-cli" 203.0.113.1 80)" "echo:hi"
	expect "$mode: mainland host -> gateway service (replies) not intercepted" "$(conn "$P-srv" 203.0.113.1 80)" "echo:hi"
	expect "$mode: mainland host -> outside (replies to mainland) not intercepted" "$(conn "$P-srv" 192.0.2.2 80)" "echo:hi"
	if [ $mode = redirect ]; then
		expect "$mode: gateway-local client via proxy (nat output)" "$(conn "$P-gw" 203.0.113.5 80)" "proxied(203.0.113.5)echo:hi"
	else
		expect "$mode: gateway-local client not intercepted (prerouting only)" "$(conn "$P-gw" 203.0.113.5 80)" "echo:hi"
	fi
	stop_proxies
	proxies 0 $mode
	if [ $mode = redirect ]; then
		expect_not "$mode: upstream without mark 0x2 loops back (never reaches server)" "$(conn "$P-cli" 203.0.113.5 80)" "echo:"
	else
		expect "$mode: upstream without mark still direct (not re-intercepted)" "$(conn "$P-cli" 203.0.113.5 80)" "proxied(203.0.113.5)echo:hi"
	fi
	stop_proxies
done

if [ $FAILS -eq 0 ]; then echo "netns smoke: all passed"; exit 0; fi
echo "netns smoke: $FAILS failed"; exit 1
