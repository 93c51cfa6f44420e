#!/usr/bin/env python3
"""Memory per connection and the server-first switch, against a running
icpgate (driven by benches/memory.sh, which starts it).

  memory.py PID PROXY_PORT ADMIN_PORT N STATE

Opens N connections in STATE (one state per icpgate process: memory freed
by one state is kept by the allocator and would hide the next) and prints
the growth of the icpgate process's RSS divided by N:
  sniffing     a partial request head, waiting for the rest
  silent       nothing sent (past server_first_wait_ms: upstream connected,
               waiting for whoever speaks first)
  passthrough  an allowed ClientHello, then idle (TLS passthrough)
  keepalive    one HTTP request answered, then idle (upstream held)
Then the switch: N silent connections reach server_first_wait_ms at the same
moment while a normal client sends a request every 10 ms on new
connections; prints that client's latency percentiles and maximum.
"""
import os, resource, socket, struct, sys, time, threading

PID, PORT, ADMIN, N = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
STATE = sys.argv[5]
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)


def rss_kb():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def active():
    s = socket.create_connection(("127.0.0.1", ADMIN))
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    total = 0
    for line in data.decode().splitlines():
        if line.startswith("icpgate_connections_active{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def hello(name):
    sni = name.encode()
    ext = struct.pack("!HHHBH", 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
    body = b"\x03\x03" + b"\x07" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += struct.pack("!H", len(ext)) + ext
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def settle(want, timeout=30):
    t = time.time()
    while active() < want and time.time() - t < timeout:
        time.sleep(0.1)
    time.sleep(1.0)


def state(name, first, wait=0.0, read_reply=False):
    base_active = active()
    before = rss_kb()
    conns = []
    for _ in range(N):
        s = socket.create_connection(("127.0.0.1", PORT))
        if first:
            s.sendall(first)
        conns.append(s)
    if read_reply:
        for s in conns:
            s.settimeout(5)
            got = b""
            while b"\r\n\r\n" not in got:
                got += s.recv(4096)
    settle(base_active + N)
    time.sleep(wait)
    after = rss_kb()
    print(f"{name:<12} {N:>6} conns  RSS {before:>8} kB -> {after:>8} kB  "
          f"{(after - before) * 1024 / N:>8.0f} bytes/conn")
    for s in conns:
        s.close()
    time.sleep(1.0)


def switch():
    lat = []
    stop = threading.Event()

    def prober():
        while not stop.is_set():
            t = time.time()
            try:
                s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
                s.sendall(b"GET / HTTP/1.1\r\nHost: www.example.com.cn\r\nConnection: close\r\n\r\n")
                s.settimeout(5)
                while s.recv(65536):
                    pass
                s.close()
                lat.append(time.time() - t)
            except OSError:
                lat.append(5.0)
            time.sleep(0.01)

    th = threading.Thread(target=prober)
    th.start()
    time.sleep(0.3)
    conns = [socket.create_connection(("127.0.0.1", PORT)) for _ in range(N)]
    time.sleep(2.5)
    stop.set()
    th.join()
    for s in conns:
        s.close()
    lat.sort()
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
    print(f"switch       {N:>6} silent conns reach server_first_wait_ms at once: "
          f"a normal client's latency over {len(lat)} requests p50 {q(.5):.1f} ms, "
          f"p99 {q(.99):.1f} ms, max {lat[-1] * 1000:.1f} ms")


if STATE == "sniffing":
    state("sniffing", b"GET / HTTP/1.1\r\n")
elif STATE == "silent":
    state("silent", None, wait=1.5)
elif STATE == "passthrough":
    state("passthrough", hello("www.example.com.cn"))
elif STATE == "keepalive":
    state("keepalive", b"GET / HTTP/1.1\r\nHost: www.example.com.cn\r\n\r\n", read_reply=True)
elif STATE == "switch":
    switch()
