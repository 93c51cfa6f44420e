#!/usr/bin/env bash
# CPU per new connection with source = "client" beside the default
# (source = "gateway"), under TPROXY in network namespaces (root only).
#   bash benches/transparent_source.sh [N]     (default 5000 connections per mode)
# Topology as tests/transparent.sh: client ns -- gateway ns (icpgate) --
# server ns (nginx on :8888 and :8889). Port 8888 is diverted to a
# listener with the default source, 8889 to one with source = "client".
# Each mode gets N sequential `Connection: close` requests from a Python
# client; icpgate's CPU time (utime + stime, /proc/PID/stat) per connection
# is printed for each, measured alternately in 3 rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 2; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx >/dev/null; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release --quiet
BIN=$PWD/target/release/icpgate
W=$(mktemp -d /tmp/icpgate-src.XXXXXX)
P="icps$$"
C="$P-c" G="$P-g" S="$P-s"
cleanup() {
	for ns in "$C" "$G" "$S"; do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
		ip netns del "$ns" 2>/dev/null || true
	done
	rm -rf "$W"
}
trap cleanup EXIT
for ns in "$C" "$G" "$S"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add "$P-a" netns "$C" type veth peer name g1 netns "$G"
ip link add "$P-b" netns "$S" type veth peer name g2 netns "$G"
ip -n "$C" addr add 10.200.1.2/24 dev "$P-a"
ip -n "$G" addr add 10.200.1.1/24 dev g1
ip -n "$G" addr add 10.200.2.1/24 dev g2
ip -n "$S" addr add 10.200.2.5/24 dev "$P-b"
for l in "$C $P-a" "$G g1" "$G g2" "$S $P-b"; do set -- $l; ip -n "$1" link set "$2" up; done
ip -n "$C" route add default via 10.200.1.1
ip -n "$S" route add default via 10.200.2.1
ip netns exec "$G" sysctl -qw net.ipv4.ip_forward=1
ip -n "$G" rule add fwmark 0x1 lookup 100
ip -n "$G" route add local 0.0.0.0/0 dev lo table 100
cat >"$W/rules.nft" <<'EOF'
table inet bench {
	chain prerouting {
		type filter hook prerouting priority mangle; policy accept;
		meta mark 0x2 return
		meta l4proto != tcp return
		fib daddr type local return
		socket transparent 1 meta mark set 0x1 accept
		tcp flags & (fin | syn | rst | ack) == syn ip daddr 10.200.2.0/24 tcp dport 8888 meta mark set 0x1 tproxy ip to :15001 accept
		tcp flags & (fin | syn | rst | ack) == syn ip daddr 10.200.2.0/24 tcp dport 8889 meta mark set 0x1 tproxy ip to :15002 accept
	}
}
EOF
ip netns exec "$G" nft -f "$W/rules.nft"
cat >"$W/nginx.conf" <<CFG
worker_processes 1;
pid $W/nginx.pid;
error_log $W/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $W/cb; proxy_temp_path $W/p; fastcgi_temp_path $W/f; uwsgi_temp_path $W/u; scgi_temp_path $W/s;
    server { listen 10.200.2.5:8888 backlog=4096; listen 10.200.2.5:8889 backlog=4096; location / { return 200 "ok\n"; } }
}
CFG
ip netns exec "$S" "$NGINX" -p "$W/" -c "$W/nginx.conf" -e "$W/nginx-error.log" -g 'daemon off; master_process off;' &
printf 'domain,icp,filing,access,access_expires,ips\nwww.example.com.cn,京ICP备09051301号-1,filed,active,,\n' >"$W/table.csv"
cat >"$W/c.toml" <<CFG
[[listener]]
name = "gateway"
addr = "0.0.0.0:15001"
transparent = "tproxy"
upstream_fwmark = 2
[[listener]]
name = "client"
addr = "0.0.0.0:15002"
transparent = "tproxy"
upstream_fwmark = 2
source = "client"
[regions]
mainland = ["10.200.2.0/24"]
[table]
path = "$W/table.csv"
[admin]
addr = "127.0.0.1:19090"
[log]
level = "error"
blocks = false
CFG
ip netns exec "$G" "$BIN" run --config "$W/c.toml" &
sleep 1
PID=$(for p in $(ip netns pids "$G"); do tr '\0' ' ' <"/proc/$p/cmdline" | grep -q ' run --config' && echo "$p"; done | head -n1)
cat >"$W/load.py" <<'EOF'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
req = b"GET / HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n"
bad = 0
for _ in range(n):
    s = socket.create_connection(("10.200.2.5", port))
    s.sendall(req)
    d = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        d += b
    if not d.startswith(b"HTTP/1.1 200"):
        bad += 1
    s.close()
print(bad)
EOF
cpu() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
TCK=$(getconf CLK_TCK)
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); commit $(git rev-parse --short HEAD); N=$N per mode per round"
ip netns exec "$C" python3 "$W/load.py" 8888 200 >/dev/null
ip netns exec "$C" python3 "$W/load.py" 8889 200 >/dev/null
for round in 1 2 3; do
	for mode in gateway:8888 client:8889; do
		name=${mode%%:*} port=${mode##*:}
		a=$(cpu)
		bad=$(ip netns exec "$C" python3 "$W/load.py" "$port" "$N")
		b=$(cpu)
		echo "round $round  source = $name: $(( (b - a) * 1000000 / TCK / N )) µs of icpgate CPU per connection (failed: $bad)"
	done
done
