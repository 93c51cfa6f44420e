# Shared by the QUIC benchmarks (sourced): one icpgate with one UDP
# listener, one worker, pinned to CPU 0; the demo table (www.example.com.cn
# is filed, the captures' unfiled name is not).

# quic_icpgate DIR PORT UPSTREAM ADMIN_PORT [EXTRA_TOML]: write DIR/c.toml
# and start icpgate on it; sets QPID; waits until it is ready.
quic_icpgate() {
	cp config/demo-table.csv "$1/table.csv"
	cat >"$1/c.toml" <<CFG
[[listener]]
addr = "127.0.0.1:$2"
upstream = "$3"
transport = "udp"
[regions]
mainland = ["127.0.0.0/8"]
[table]
path = "$1/table.csv"
[runtime]
workers = 1
[admin]
addr = "127.0.0.1:$4"
[log]
level = "error"
blocks = false
${5:-}
CFG
	taskset -c 0 ./target/release/icpgate run --config "$1/c.toml" &
	QPID=$!
	for _ in $(seq 100); do curl -fs "http://127.0.0.1:$4/readyz" >/dev/null && break; sleep 0.1; done
}

# quic_drop_closes PORT: an nftables rule drops what leaves the listener on
# PORT for the flood's sources (127.1.0.0/16): on loopback the closes would
# reach closed ports and cost an ICMP error each, which a real client's
# answer does not. Removed by quic_undrop.
quic_drop_closes() {
	command -v nft >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends nftables >/dev/null; }
	nft add table ip icpgate_bench
	nft add chain ip icpgate_bench out '{ type filter hook output priority 0; }'
	nft add rule ip icpgate_bench out ip daddr 127.1.0.0/16 udp sport "$1" drop
}
quic_undrop() { nft delete table ip icpgate_bench 2>/dev/null || true; }
