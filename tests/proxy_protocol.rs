#![allow(clippy::unwrap_used, clippy::expect_used)]
//! PROXY protocol v1/v2 on a listener: the client and original destination
//! come from the header (R2 is decided on that destination).
mod common;

use std::io::Write;
use std::net::TcpStream;

use common::*;

fn v2(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0, 12]);
    h.extend(src);
    h.extend(dst);
    h.extend(sport.to_be_bytes());
    h.extend(dport.to_be_bytes());
    h
}

#[test]
fn proxy_protocol_headers_set_the_destination() {
    // The harness writes its own listener; this one needs proxy_protocol.
    let port = free_port();
    let admin = free_port();
    let up = http_upstream();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _p = spawn_config(
        &format!("[[listener]]\naddr = \"{addr}\"\nupstream = \"{up}\"\nproxy_protocol = true\n[regions]\nmainland = [\"203.0.113.0/24\"]\n[table]\npath = \"{{table}}\"\n[admin]\naddr = \"127.0.0.1:{admin}\"\n"),
        addr,
    );
    let req = "GET /pp HTTP/1.1\r\nHost: unknown.cn\r\nConnection: close\r\n\r\n";
    let send = |header: &[u8]| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(header).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        read_to_end(&mut s)
    };
    // v1, destination in the mainland range: the unfiled host is blocked.
    let r = send(b"PROXY TCP4 198.51.100.7 203.0.113.9 50000 80\r\n");
    assert_eq!(status_of(&r), 403, "{r}");
    // v1, destination outside: passed untouched (reaches the upstream).
    let r = send(b"PROXY TCP4 198.51.100.7 192.0.2.9 50000 80\r\n");
    assert!(r.contains("path=/pp"), "{r}");
    // v2, mainland and outside.
    let r = send(&v2([198, 51, 100, 7], [203, 0, 113, 9], 50000, 80));
    assert_eq!(status_of(&r), 403, "{r}");
    let r = send(&v2([198, 51, 100, 7], [192, 0, 2, 9], 50000, 80));
    assert!(r.contains("path=/pp"), "{r}");
    // No header on a PROXY listener: refused, never guessed.
    let r = send(b"");
    assert!(r.is_empty() || status_of(&r) == 0, "{r}");
}
