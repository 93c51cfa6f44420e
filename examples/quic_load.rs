#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Load for the QUIC benchmarks (benches/quic_inspect.sh, quic_overload.sh):
//! new flows, each the captured Chromium 156 post-quantum hello (two
//! Initials, tests/fixtures/quic/), sent from a raw socket (root) so that
//! every flow has a source of its own (127.1.0.0/16, any port) without a
//! socket per flow.
//!
//!   quic_load flood TARGET FLOWS RATE
//!       FLOWS unfiled flows at RATE flows per second (0: as fast as the
//!       socket takes them); prints "sent N flows in S s".
//!   quic_load echo ADDR
//!       a UDP echo server (the upstream of the relay benchmark).
//!   quic_load relay TARGET FLOWS DATAGRAMS WINDOW HELLO
//!       FLOWS client sockets (connected to TARGET); with HELLO = 1 each
//!       first sends the filed capture (so that icpgate allows the flow),
//!       then DATAGRAMS datagrams of 1,200 bytes in all are echoed through
//!       TARGET, WINDOW in flight per flow (lost ones are replaced after
//!       50 ms of silence); prints "echoed N".
//!   quic_load overload TARGET UPSTREAM RATE SECS ALLOWED
//!       the flood at RATE for SECS while ALLOWED flows of the filed capture
//!       (ordinary sockets on 127.0.0.1, started evenly over SECS) try to
//!       reach an echo server on UPSTREAM (icpgate's upstream) through
//!       TARGET: an allowed flow is served when an echo comes back within
//!       3 s (it sends its Initials again every 250 ms until then, as a
//!       client's probe timeout would). The echo server counts datagrams of
//!       the unfiled capture that reached it (blocked flows forwarded: must
//!       be 0). Prints one line of figures.
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const UNFILED: [&[u8]; 2] = [
    include_bytes!("../tests/fixtures/quic/chromium156_unfiled_0.bin"),
    include_bytes!("../tests/fixtures/quic/chromium156_unfiled_1.bin"),
];
const FILED: [&[u8]; 2] = [
    include_bytes!("../tests/fixtures/quic/chromium156_filed_0.bin"),
    include_bytes!("../tests/fixtures/quic/chromium156_filed_1.bin"),
];

/// Flows per `sendmmsg` (two datagrams each).
const CHUNK: usize = 32;

/// A raw IPv4 socket that writes its own headers.
fn raw_socket() -> OwnedFd {
    // SAFETY: plain socket calls; the descriptor is owned at once.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
        assert!(
            fd >= 0,
            "raw socket (root needed): {}",
            std::io::Error::last_os_error()
        );
        let sz: libc::c_int = 8 << 20;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&sz as *const libc::c_int).cast(),
            4,
        );
        OwnedFd::from_raw_fd(fd)
    }
}

/// The source of flow `i` of a run starting at address `base`:
/// 127.1.0.0 + (base + i / 60000) mod 2^16, port 1024 + i % 60000 (each
/// run starts at another address, so that its flows are new to icpgate).
fn source(base: u64, i: u64) -> (Ipv4Addr, u16) {
    let ip = u32::from(Ipv4Addr::new(127, 1, 0, 0)) + ((base + i / 60_000) % 65_536) as u32;
    (Ipv4Addr::from(ip), 1024 + (i % 60_000) as u16)
}

/// An IPv4 + UDP packet (checksums: the kernel fills the IP one; UDP's is
/// optional over IPv4 and left zero).
fn packet(out: &mut Vec<u8>, src: (Ipv4Addr, u16), dst: SocketAddrV4, payload: &[u8]) {
    let total = 28 + payload.len();
    out.clear();
    out.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    out.extend_from_slice(&src.0.octets());
    out.extend_from_slice(&dst.ip().octets());
    out.extend_from_slice(&src.1.to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
}

/// Send `flows` unfiled flows to `dst` at `rate` flows per second (0: no
/// pacing), until `stop`; returns how many were sent.
fn flood(dst: SocketAddrV4, flows: u64, rate: u64, stop: &AtomicBool) -> u64 {
    let fd = raw_socket();
    let to: socket2::SockAddr = SocketAddr::V4(dst).into();
    let mut bufs: Vec<Vec<u8>> = (0..2 * CHUNK).map(|_| Vec::with_capacity(1400)).collect();
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64 % 65_536);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < flows && !stop.load(Ordering::Relaxed) {
        let n = CHUNK.min((flows - sent) as usize);
        for k in 0..n {
            let src = source(base, sent + k as u64);
            packet(&mut bufs[2 * k], src, dst, UNFILED[0]);
            packet(&mut bufs[2 * k + 1], src, dst, UNFILED[1]);
        }
        let mut done = 0;
        while done < 2 * n {
            // SAFETY: the iovecs point at `bufs`, the names at `to`; all
            // outlive the call, which only reads them.
            let r = unsafe {
                let mut iov: Vec<libc::iovec> = bufs[done..2 * n]
                    .iter()
                    .map(|b| libc::iovec {
                        iov_base: b.as_ptr().cast_mut().cast(),
                        iov_len: b.len(),
                    })
                    .collect();
                let mut hdr: Vec<libc::mmsghdr> = iov
                    .iter_mut()
                    .map(|v| {
                        let mut h: libc::mmsghdr = std::mem::zeroed();
                        h.msg_hdr.msg_name = to.as_ptr().cast_mut().cast();
                        h.msg_hdr.msg_namelen = to.len();
                        h.msg_hdr.msg_iov = v;
                        h.msg_hdr.msg_iovlen = 1;
                        h
                    })
                    .collect();
                libc::sendmmsg(fd.as_raw_fd(), hdr.as_mut_ptr(), hdr.len() as u32, 0)
            };
            if r > 0 {
                done += r as usize;
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        sent += n as u64;
        if rate > 0 {
            let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
    sent
}

fn addr4(s: &str) -> SocketAddrV4 {
    match s.parse().expect("an address") {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => panic!("IPv4 only"),
    }
}

/// An echo server on `addr`; counts datagrams that are the unfiled
/// capture's (a blocked flow forwarded).
fn echo(addr: SocketAddr, leaked: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let s = UdpSocket::bind(addr).expect("echo bind");
    let _ = socket2::SockRef::from(&s).set_recv_buffer_size(8 << 20);
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let d = &buf[..n];
            if d == UNFILED[0] || d == UNFILED[1] {
                leaked.fetch_add(1, Ordering::Relaxed);
            }
            let _ = s.send_to(d, from);
        }
    }
}

/// One allowed flow: its Initials, again every 250 ms, until an answer
/// (the time it took) or 3 s (None).
fn allowed(target: SocketAddr) -> Option<Duration> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 2048];
    while t.elapsed() < Duration::from_secs(3) {
        for d in FILED {
            let _ = s.send_to(d, target);
        }
        if s.recv_from(&mut buf).is_ok() {
            return Some(t.elapsed());
        }
    }
    None
}

fn overload(args: &[String]) {
    let target = addr4(&args[0]);
    let upstream: SocketAddr = args[1].parse().unwrap();
    let rate: u64 = args[2].parse().unwrap();
    let secs: u64 = args[3].parse().unwrap();
    let n_allowed: u64 = args[4].parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let leaked = Arc::new(AtomicU64::new(0));
    let echo_t = {
        let (l, s) = (leaked.clone(), stop.clone());
        std::thread::spawn(move || echo(upstream, l, s))
    };
    std::thread::sleep(Duration::from_millis(100));
    let flood_stop = Arc::new(AtomicBool::new(false));
    let flood_t = {
        let s = flood_stop.clone();
        std::thread::spawn(move || flood(target, rate * secs, rate, &s))
    };
    let start = Instant::now();
    let mut clients = Vec::new();
    for i in 0..n_allowed {
        let due = start + Duration::from_secs_f64(secs as f64 * i as f64 / n_allowed as f64);
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        clients.push(std::thread::spawn(move || allowed(SocketAddr::V4(target))));
    }
    let mut times: Vec<Duration> = clients
        .into_iter()
        .filter_map(|c| c.join().unwrap())
        .collect();
    flood_stop.store(true, Ordering::Relaxed);
    let flooded = flood_t.join().unwrap();
    let took = start.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    echo_t.join().unwrap();
    times.sort();
    let pct = |p: f64| {
        times
            .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "flood {flooded} unfiled flows in {:.1} s ({:.0}/s); allowed served {} of {n_allowed} ({:.1}%), first answer p50 {:.1} ms p99 {:.1} ms; unfiled datagrams at the upstream: {}",
        took.as_secs_f64(),
        flooded as f64 / took.as_secs_f64(),
        times.len(),
        100.0 * times.len() as f64 / n_allowed.max(1) as f64,
        pct(0.5),
        pct(0.99),
        leaked.load(Ordering::Relaxed)
    );
}

/// A UDP echo server, until killed.
fn echo_forever(addr: SocketAddr) {
    let s = UdpSocket::bind(addr).expect("echo bind");
    let _ = socket2::SockRef::from(&s).set_recv_buffer_size(8 << 20);
    let mut buf = vec![0u8; 65_536];
    loop {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    }
}

/// The relay benchmark's client (see the module documentation).
fn relay(target: SocketAddr, flows: usize, total: u64, window: u64, hello: bool) {
    let socks: Vec<UdpSocket> = (0..flows)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let _ = socket2::SockRef::from(&s).set_recv_buffer_size(4 << 20);
            s.connect(target).unwrap();
            s
        })
        .collect();
    let mut buf = vec![0u8; 65_536];
    if hello {
        for s in &socks {
            for d in FILED {
                s.send(d).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    for s in &socks {
        s.set_nonblocking(true).unwrap();
        while s.recv(&mut buf).is_ok() {}
    }
    let mut payload = vec![b'q'; 1200];
    payload[0] = 0x40; // a short header's first byte
    let per = total / flows as u64;
    let (mut sent, mut out) = (vec![0u64; flows], vec![0u64; flows]);
    let mut got = 0u64;
    let refill = |i: usize, sent: &mut [u64], out: &mut [u64]| {
        while out[i] < window && sent[i] < per {
            if socks[i].send(&payload).is_err() {
                break;
            }
            sent[i] += 1;
            out[i] += 1;
        }
    };
    for i in 0..flows {
        refill(i, &mut sent, &mut out);
    }
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        // SAFETY: `fds` is a live array of pollfd of the length given.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        if n <= 0 {
            // Silence: what is out is lost. Done when nothing is left.
            if sent.iter().all(|&x| x >= per) {
                break;
            }
            for i in 0..flows {
                out[i] = 0;
                refill(i, &mut sent, &mut out);
            }
            continue;
        }
        for i in 0..flows {
            if fds[i].revents == 0 {
                continue;
            }
            while socks[i].recv(&mut buf).is_ok() {
                got += 1;
                out[i] = out[i].saturating_sub(1);
            }
            refill(i, &mut sent, &mut out);
        }
    }
    println!("echoed {got}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("flood") if args.len() == 4 => {
            let t = Instant::now();
            let n = flood(
                addr4(&args[1]),
                args[2].parse().unwrap(),
                args[3].parse().unwrap(),
                &AtomicBool::new(false),
            );
            println!("sent {n} flows in {:.2} s", t.elapsed().as_secs_f64());
        }
        Some("overload") if args.len() == 6 => overload(&args[1..]),
        Some("echo") if args.len() == 2 => echo_forever(args[1].parse().unwrap()),
        Some("relay") if args.len() == 6 => relay(
            args[1].parse().unwrap(),
            args[2].parse().unwrap(),
            args[3].parse().unwrap(),
            args[4].parse().unwrap(),
            args[5] == "1",
        ),
        _ => {
            eprintln!(
                "usage: quic_load flood TARGET FLOWS RATE | echo ADDR | relay TARGET FLOWS DATAGRAMS WINDOW HELLO | overload TARGET UPSTREAM RATE SECS ALLOWED"
            );
            std::process::exit(2);
        }
    }
}
