//! PROXY protocol v1/v2 (haproxy.org/download/2.9/doc/proxy-protocol.txt), accepted on listeners that enable it.
//!
//! [`parse`] is meant to be called on the bytes read so far from a freshly
//! accepted connection, and again whenever more bytes arrive, until it returns
//! [`ProxyParse::Found`] or [`ProxyParse::Invalid`]. It never allocates, never
//! panics, and never looks past [`MAX_HEADER`] bytes, so the caller can read
//! into a fixed buffer of that size.
//!
//! Behaviour worth knowing:
//!
//! * `NeedMore` is returned only while the bytes seen so far can still be the
//!   start of an acceptable header. Obvious garbage is refused early (wrong
//!   signature, bad v2 version/command/family, a v2 length over the cap, bad
//!   v1 tokens). For v1 the check of a half-received address is cheap (allowed
//!   characters and length), so a few doomed prefixes are only refused once the
//!   line is complete; a valid prefix is never refused.
//! * v1 is strict: single spaces, no trailing space, `TCP4` needs IPv4
//!   addresses and `TCP6` IPv6 ones (as accepted by `std`'s parsers, so IPv4
//!   octets with leading zeros are refused), ports are 1 to 5 ASCII digits
//!   with a value of at most 65535 (leading zeros are accepted, signs are not).
//!   `UNKNOWN` may be followed by anything up to CRLF, which is ignored. The
//!   whole line, CRLF included, must fit in 107 bytes.
//! * v2: the version nibble must be 2 and the command LOCAL (0) or PROXY (1).
//!   LOCAL gives `addrs: None` whatever the family byte says, and the address
//!   block is skipped. PROXY needs a family/protocol byte defined by the spec
//!   (0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32; anything else is refused) and a
//!   length at least as large as that family's address block (0, 12, 36, 216
//!   bytes). Only TCP over IPv4 (0x11) and IPv6 (0x21) yield addresses;
//!   `AF_UNSPEC`, `AF_UNIX` and the DGRAM (UDP) variants are accepted but give
//!   `addrs: None`, i.e. they are treated like LOCAL because a TCP listener
//!   cannot use them. TLVs after the address block are skipped unchecked.
//!   The whole header (16 + length) must not exceed [`MAX_HEADER`].
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Client and original destination; None for v2 LOCAL, v1 UNKNOWN, and v2
    /// families that a TCP listener cannot use (`AF_UNSPEC`, `AF_UNIX`, DGRAM).
    pub addrs: Option<(SocketAddr, SocketAddr)>,
    /// Bytes of the header (consumed; the payload starts after them).
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyParse {
    /// More bytes are needed (the buffer is a valid prefix of a header).
    NeedMore,
    Found(ProxyHeader),
    /// Not a valid PROXY header; the connection must be closed.
    Invalid(&'static str),
}

/// Maximum header size we accept, in bytes. v1 is at most 107 bytes; a v2
/// header is 16 + its length field, and longer ones are refused.
pub const MAX_HEADER: usize = 4096;

const NOT_PROXY: &str = "not a PROXY protocol header";

const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest v1 line, CRLF included.
const V1_MAX: usize = 107;
const V1_TOO_LONG: &str = "PROXY v1 header longer than 107 bytes";

const V2_SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// Signature, `ver_cmd`, `fam`, 16-bit length.
const V2_FIXED: usize = 16;

/// Parses a PROXY protocol header at the start of `buf`.
#[must_use]
pub fn parse(buf: &[u8]) -> ProxyParse {
    match buf.first() {
        None => ProxyParse::NeedMore,
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => ProxyParse::Invalid(NOT_PROXY),
    }
}

/// `Some(NeedMore)` if `buf` is a strict prefix of `sig`, `Some(Invalid)` if it
/// diverges from it, `None` if `buf` starts with the whole of `sig`.
fn check_signature(buf: &[u8], sig: &[u8]) -> Option<ProxyParse> {
    if !buf.iter().zip(sig).all(|(a, b)| a == b) {
        Some(ProxyParse::Invalid(NOT_PROXY))
    } else if buf.len() < sig.len() {
        Some(ProxyParse::NeedMore)
    } else {
        None
    }
}

fn parse_v1(buf: &[u8]) -> ProxyParse {
    if let Some(r) = check_signature(buf, V1_PREFIX) {
        return r;
    }
    // Only the first 107 bytes can belong to the header.
    let window = buf.get(..V1_MAX).unwrap_or(buf);
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if window.len() >= V1_MAX {
            return ProxyParse::Invalid(V1_TOO_LONG);
        }
        let partial = window.get(V1_PREFIX.len()..).unwrap_or_default();
        return match parse_v1_line(partial, false) {
            Ok(_) => ProxyParse::NeedMore,
            Err(e) => ProxyParse::Invalid(e),
        };
    };
    let line = window.get(V1_PREFIX.len()..cr).unwrap_or_default();
    let next = window.get(cr + 1).copied();
    match next {
        Some(b'\n') | None => {}
        Some(_) => return ProxyParse::Invalid("PROXY v1 header: CR not followed by LF"),
    }
    if next.is_none() && cr + 1 >= V1_MAX {
        // The CR is the 107th byte: the LF could only be the 108th.
        return ProxyParse::Invalid(V1_TOO_LONG);
    }
    match parse_v1_line(line, true) {
        Err(e) => ProxyParse::Invalid(e),
        Ok(_) if next.is_none() => ProxyParse::NeedMore,
        Ok(addrs) => ProxyParse::Found(ProxyHeader { addrs, len: cr + 2 }),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

type Addrs = Option<(SocketAddr, SocketAddr)>;

/// Checks the part of a v1 line after "PROXY " and before CRLF. When
/// `complete` is false the line is still being received: every token but the
/// last must be valid, and the last one a plausible prefix of a valid token.
/// The returned addresses are meaningful only when `complete` is true.
fn parse_v1_line(line: &[u8], complete: bool) -> Result<Addrs, &'static str> {
    let (proto, rest) = match line.iter().position(|&b| b == b' ') {
        Some(sp) => (
            line.get(..sp).unwrap_or_default(),
            Some(line.get(sp + 1..).unwrap_or_default()),
        ),
        None => (line, None),
    };
    let family = match (proto, rest) {
        (b"UNKNOWN", _) => return Ok(None),
        (b"TCP4", Some(_)) => Family::V4,
        (b"TCP6", Some(_)) => Family::V6,
        (b"TCP4" | b"TCP6", None) if complete => {
            return Err("PROXY v1 header: missing addresses");
        }
        (_, None) if !complete && is_v1_proto_prefix(proto) => return Ok(None),
        _ => return Err("PROXY v1 header: unknown protocol"),
    };
    let rest = rest.unwrap_or_default();

    let mut fields: [&[u8]; 4] = [&[]; 4];
    let mut count = 0;
    for field in rest.split(|&b| b == b' ') {
        let Some(slot) = fields.get_mut(count) else {
            return Err("PROXY v1 header: too many fields");
        };
        *slot = field;
        count += 1;
    }
    for (i, field) in fields.iter().take(count).enumerate() {
        let partial = !complete && i + 1 == count;
        let ok = match (i < 2, partial) {
            (true, true) => is_addr_prefix(field, family),
            (true, false) => parse_addr(field, family).is_some(),
            (false, true) => is_port_prefix(field),
            (false, false) => parse_port(field).is_some(),
        };
        if !ok {
            return Err(if i < 2 {
                "PROXY v1 header: bad address"
            } else {
                "PROXY v1 header: bad port"
            });
        }
    }
    if !complete {
        return Ok(None);
    }
    if count != 4 {
        return Err("PROXY v1 header: missing fields");
    }
    let [src, dst, sport, dport] = fields;
    match (
        parse_addr(src, family),
        parse_addr(dst, family),
        parse_port(sport),
        parse_port(dport),
    ) {
        (Some(s), Some(d), Some(sp), Some(dp)) => {
            Ok(Some((SocketAddr::new(s, sp), SocketAddr::new(d, dp))))
        }
        _ => Err("PROXY v1 header: bad address or port"),
    }
}

fn is_v1_proto_prefix(tok: &[u8]) -> bool {
    [&b"TCP4"[..], b"TCP6", b"UNKNOWN"]
        .iter()
        .any(|p| p.starts_with(tok))
}

fn parse_addr(tok: &[u8], family: Family) -> Option<std::net::IpAddr> {
    let s = std::str::from_utf8(tok).ok()?;
    match family {
        Family::V4 => s.parse::<Ipv4Addr>().ok().map(Into::into),
        Family::V6 => s.parse::<Ipv6Addr>().ok().map(Into::into),
    }
}

/// Cheap test that `tok` can still grow into an address of `family`.
fn is_addr_prefix(tok: &[u8], family: Family) -> bool {
    match family {
        Family::V4 => {
            // "255.255.255.255": at most 3 dots, groups of 1 to 3 digits
            // (the last group may still be empty).
            let mut groups = tok.split(|&b| b == b'.');
            let last = groups.next_back().unwrap_or_default();
            tok.len() <= 15
                && tok.iter().all(|&b| b.is_ascii_digit() || b == b'.')
                && tok.iter().filter(|&&b| b == b'.').count() <= 3
                && groups.all(|g| (1..=3).contains(&g.len()))
                && last.len() <= 3
        }
        // Longest text form: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".
        Family::V6 => {
            tok.len() <= 45
                && tok
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
    }
}

/// 1 to 5 ASCII digits, value at most 65535.
fn parse_port(tok: &[u8]) -> Option<u16> {
    if tok.is_empty() || tok.len() > 5 || !tok.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = tok
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(value).ok()
}

fn is_port_prefix(tok: &[u8]) -> bool {
    tok.is_empty()
        || (tok.len() < 5 && tok.iter().all(u8::is_ascii_digit))
        || parse_port(tok).is_some()
}

fn parse_v2(buf: &[u8]) -> ProxyParse {
    if let Some(r) = check_signature(buf, V2_SIG) {
        return r;
    }
    let Some(&ver_cmd) = buf.get(12) else {
        return ProxyParse::NeedMore;
    };
    if ver_cmd >> 4 != 2 {
        return ProxyParse::Invalid("PROXY v2 header: unsupported version");
    }
    let local = match ver_cmd & 0x0F {
        0 => true,
        1 => false,
        _ => return ProxyParse::Invalid("PROXY v2 header: unknown command"),
    };
    let Some(&fam) = buf.get(13) else {
        return ProxyParse::NeedMore;
    };
    // LOCAL: the address block is skipped whatever the family says.
    let min_len = if local {
        0
    } else {
        match fam {
            0x00 => 0,
            0x11 | 0x12 => 12,
            0x21 | 0x22 => 36,
            0x31 | 0x32 => 216,
            _ => return ProxyParse::Invalid("PROXY v2 header: unknown address family"),
        }
    };
    let (Some(&hi), Some(&lo)) = (buf.get(14), buf.get(15)) else {
        return ProxyParse::NeedMore;
    };
    let body_len = usize::from(u16::from_be_bytes([hi, lo]));
    if body_len < min_len {
        return ProxyParse::Invalid("PROXY v2 header: address block too short");
    }
    let total = V2_FIXED + body_len;
    if total > MAX_HEADER {
        return ProxyParse::Invalid("PROXY v2 header too long");
    }
    let Some(body) = buf.get(V2_FIXED..total) else {
        return ProxyParse::NeedMore;
    };
    let addrs = match (local, fam) {
        (false, 0x11) => match v2_inet(body) {
            Some(a) => Some(a),
            None => return ProxyParse::Invalid("PROXY v2 header: address block too short"),
        },
        (false, 0x21) => match v2_inet6(body) {
            Some(a) => Some(a),
            None => return ProxyParse::Invalid("PROXY v2 header: address block too short"),
        },
        _ => None,
    };
    ProxyParse::Found(ProxyHeader { addrs, len: total })
}

fn take<const N: usize>(body: &[u8], at: usize) -> Option<[u8; N]> {
    body.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// src4, dst4, sport, dport.
fn v2_inet(body: &[u8]) -> Addrs {
    let src: [u8; 4] = take(body, 0)?;
    let dst: [u8; 4] = take(body, 4)?;
    let sport = u16::from_be_bytes(take(body, 8)?);
    let dport = u16::from_be_bytes(take(body, 10)?);
    Some((
        SocketAddr::new(Ipv4Addr::from(src).into(), sport),
        SocketAddr::new(Ipv4Addr::from(dst).into(), dport),
    ))
}

/// src6, dst6, sport, dport.
fn v2_inet6(body: &[u8]) -> Addrs {
    let src: [u8; 16] = take(body, 0)?;
    let dst: [u8; 16] = take(body, 16)?;
    let sport = u16::from_be_bytes(take(body, 32)?);
    let dport = u16::from_be_bytes(take(body, 34)?);
    Some((
        SocketAddr::new(Ipv6Addr::from(src).into(), sport),
        SocketAddr::new(Ipv6Addr::from(dst).into(), dport),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn found(buf: &[u8]) -> ProxyHeader {
        match parse(buf) {
            ProxyParse::Found(h) => h,
            other => panic!("expected Found for {buf:?}, got {other:?}"),
        }
    }

    fn is_invalid(buf: &[u8]) -> bool {
        matches!(parse(buf), ProxyParse::Invalid(_))
    }

    fn assert_prefixes_need_more(header: &[u8]) {
        for n in 0..header.len() {
            assert_eq!(
                parse(&header[..n]),
                ProxyParse::NeedMore,
                "prefix of {n} bytes of {header:?}"
            );
        }
    }

    fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut v = V2_SIG.to_vec();
        v.push(ver_cmd);
        v.push(fam);
        v.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn v2_inet4_body() -> Vec<u8> {
        let mut b = vec![192, 168, 0, 1, 10, 0, 0, 2];
        b.extend_from_slice(&56324u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    fn v2_inet6_body() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&"::ffff:10.0.0.2".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&1234u16.to_be_bytes());
        b.extend_from_slice(&80u16.to_be_bytes());
        b
    }

    #[test]
    fn v1_tcp4() {
        let h = found(b"PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n");
        assert_eq!(h.addrs, Some((sa("192.168.0.1:56324"), sa("10.0.0.2:443"))));
        assert_eq!(h.len, 43);
    }

    #[test]
    fn v1_tcp6() {
        let hdr = b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.2 0 65535\r\n";
        let h = found(hdr);
        assert_eq!(
            h.addrs,
            Some((sa("[2001:db8::1]:0"), sa("[::ffff:10.0.0.2]:65535")))
        );
        assert_eq!(h.len, hdr.len());
    }

    #[test]
    fn v1_unknown() {
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            ProxyParse::Found(ProxyHeader {
                addrs: None,
                len: 15
            })
        );
        let hdr = b"PROXY UNKNOWN ffff:f::a whatever 1 2\r\nGET /";
        assert_eq!(
            parse(hdr),
            ProxyParse::Found(ProxyHeader {
                addrs: None,
                len: hdr.len() - 5
            })
        );
    }

    #[test]
    fn v1_max_length() {
        // Worst case from the spec: exactly 107 bytes.
        let hdr = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(hdr.len(), 104);
        assert_eq!(found(hdr).len, 104);
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(105, b'x');
        long.extend_from_slice(b"\r\n");
        assert_eq!(long.len(), 107);
        assert_eq!(found(&long).len, 107);
        assert_prefixes_need_more(&long);
        // One more byte and the CRLF falls outside the limit.
        let mut too_long = b"PROXY UNKNOWN ".to_vec();
        too_long.resize(106, b'x');
        too_long.extend_from_slice(b"\r\n");
        assert!(is_invalid(&too_long));
        assert!(is_invalid(&too_long[..107]));
        assert_eq!(parse(&too_long[..106]), ProxyParse::NeedMore);
    }

    #[test]
    fn v1_without_crlf() {
        let mut buf = b"PROXY UNKNOWN ".to_vec();
        buf.resize(107, b'x');
        assert!(is_invalid(&buf));
        buf.resize(500, b'x');
        assert!(is_invalid(&buf));
        // LF alone or CR followed by something else.
        assert!(is_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"));
        assert!(is_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"));
        assert!(is_invalid(b"PROXY UNKNOWN\rX"));
    }

    #[test]
    fn v1_prefixes_need_more() {
        for hdr in [
            &b"PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n"[..],
            b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.2 0 65535\r\n",
            b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 ::1 1 2\r\n",
            b"PROXY UNKNOWN\r\n",
            b"PROXY UNKNOWN a b c\r\n",
        ] {
            found(hdr);
            assert_prefixes_need_more(hdr);
        }
    }

    #[test]
    fn trailing_payload_not_consumed() {
        let hdr = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
        let mut buf = hdr.to_vec();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(found(&buf).len, hdr.len());
        assert_eq!(&buf[found(&buf).len..], b"GET / HTTP/1.1\r\n\r\n");

        let hdr = v2(0x21, 0x11, &v2_inet4_body());
        let mut buf = hdr.clone();
        buf.extend_from_slice(b"\x16\x03\x01payload");
        assert_eq!(found(&buf).len, hdr.len());
        assert_eq!(found(&buf).len, 28);
    }

    #[test]
    fn garbage_is_invalid() {
        for g in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"\x16\x03\x01\x02\x00",
            b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY\tTCP4",
            b"PROXYTCP4",
            b"P\0",
            b"\r\n\r\n\x01",
            b"\r\r",
            b" PROXY",
            b"\0",
        ] {
            assert!(is_invalid(g), "{g:?}");
        }
        assert_eq!(
            parse(b"GET /"),
            ProxyParse::Invalid("not a PROXY protocol header")
        );
    }

    #[test]
    fn empty_and_signature_prefixes() {
        assert_eq!(parse(b""), ProxyParse::NeedMore);
        assert_eq!(parse(b"P"), ProxyParse::NeedMore);
        assert_eq!(parse(b"PROXY"), ProxyParse::NeedMore);
        assert_eq!(parse(b"PROXY "), ProxyParse::NeedMore);
        assert_eq!(parse(b"\r"), ProxyParse::NeedMore);
        assert_eq!(parse(&V2_SIG[..11]), ProxyParse::NeedMore);
        assert_eq!(parse(V2_SIG), ProxyParse::NeedMore);
    }

    #[test]
    fn v1_bad_fields() {
        for bad in [
            // Ports.
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 80\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 +80\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 80\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 000080\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 8a\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n",
            // Addresses.
            b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP6 ::1 ::g 1 2\r\n",
            b"PROXY TCP6 [::1] ::1 1 2\r\n",
            b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
            // Layout.
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4\r\n",
            b"PROXY TCP4 \r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY \r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(is_invalid(bad), "{:?}", String::from_utf8_lossy(bad));
        }
        // Leading zeros in ports are accepted (plain digits, at most 5).
        let h = found(b"PROXY TCP4 1.2.3.4 5.6.7.8 00001 08080\r\n");
        assert_eq!(h.addrs, Some((sa("1.2.3.4:1"), sa("5.6.7.8:8080"))));
    }

    #[test]
    fn v1_early_rejection() {
        // Refused before the CRLF arrives.
        for bad in [
            &b"PROXY X"[..],
            b"PROXY TCP4 1.2.3.4x",
            b"PROXY TCP4 ::1",
            b"PROXY TCP4 1234",
            b"PROXY TCP4 1..",
            b"PROXY TCP4 1.2.3.4.",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 123456",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
            b"PROXY TCP4  ",
            b"PROXY TCP6 ::1 x",
        ] {
            assert!(is_invalid(bad), "{:?}", String::from_utf8_lossy(bad));
        }
        // A complete line still waiting for its LF is fine.
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"),
            ProxyParse::NeedMore
        );
        // ...unless the line itself is bad.
        assert!(is_invalid(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r"));
    }

    #[test]
    fn v2_tcp4_and_tcp6() {
        let hdr = v2(0x21, 0x11, &v2_inet4_body());
        let h = found(&hdr);
        assert_eq!(h.addrs, Some((sa("192.168.0.1:56324"), sa("10.0.0.2:443"))));
        assert_eq!(h.len, 28);
        assert_prefixes_need_more(&hdr);

        let hdr = v2(0x21, 0x21, &v2_inet6_body());
        let h = found(&hdr);
        assert_eq!(
            h.addrs,
            Some((sa("[2001:db8::1]:1234"), sa("[::ffff:10.0.0.2]:80")))
        );
        assert_eq!(h.len, 52);
        assert_prefixes_need_more(&hdr);
    }

    #[test]
    fn v2_with_tlvs() {
        let mut body = v2_inet4_body();
        // PP2_TYPE_ALPN "h2", PP2_TYPE_AUTHORITY "example.com", NOOP padding.
        body.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        body.extend_from_slice(&[0x02, 0x00, 0x0b]);
        body.extend_from_slice(b"example.com");
        body.extend_from_slice(&[0x04, 0x00, 0x03, 0, 0, 0]);
        let hdr = v2(0x21, 0x11, &body);
        let mut buf = hdr.clone();
        buf.extend_from_slice(b"payload");
        let h = found(&buf);
        assert_eq!(h.len, hdr.len());
        assert_eq!(h.addrs, Some((sa("192.168.0.1:56324"), sa("10.0.0.2:443"))));
        assert_prefixes_need_more(&hdr);

        let mut body = v2_inet6_body();
        body.extend_from_slice(&[0xEE; 100]);
        let hdr = v2(0x21, 0x21, &body);
        assert_eq!(found(&hdr).len, 16 + 136);
        assert!(found(&hdr).addrs.is_some());
    }

    #[test]
    fn v2_local() {
        let hdr = v2(0x20, 0x00, &[]);
        assert_eq!(
            parse(&hdr),
            ProxyParse::Found(ProxyHeader {
                addrs: None,
                len: 16
            })
        );
        assert_prefixes_need_more(&hdr);
        // LOCAL ignores whatever family and address block it carries.
        let hdr = v2(0x20, 0x11, &v2_inet4_body());
        assert_eq!(
            parse(&hdr),
            ProxyParse::Found(ProxyHeader {
                addrs: None,
                len: 28
            })
        );
        let hdr = v2(0x20, 0x11, &[]);
        assert_eq!(found(&hdr).addrs, None);
        let hdr = v2(0x20, 0xFF, &[1, 2, 3]);
        assert_eq!(found(&hdr).len, 19);
    }

    #[test]
    fn v2_unusable_families() {
        // AF_UNSPEC, UDP over IPv4/IPv6, AF_UNIX stream/dgram: accepted, no addresses.
        for (fam, len) in [(0x00, 0), (0x12, 12), (0x22, 36), (0x31, 216), (0x32, 216)] {
            let hdr = v2(0x21, fam, &vec![7u8; len]);
            assert_eq!(
                parse(&hdr),
                ProxyParse::Found(ProxyHeader {
                    addrs: None,
                    len: 16 + len
                }),
                "fam {fam:#x}"
            );
        }
        // Unknown family/protocol values are refused.
        for fam in [0x01, 0x10, 0x13, 0x41, 0xFF] {
            assert!(is_invalid(&v2(0x21, fam, &[0; 36])), "fam {fam:#x}");
            // ...as soon as the family byte is seen.
            assert!(is_invalid(&v2(0x21, fam, &[])[..14]), "fam {fam:#x}");
        }
    }

    #[test]
    fn v2_truncated_length_field() {
        let hdr = v2(0x21, 0x11, &v2_inet4_body());
        assert_eq!(parse(&hdr[..14]), ProxyParse::NeedMore);
        assert_eq!(parse(&hdr[..15]), ProxyParse::NeedMore);
        assert_eq!(parse(&hdr[..16]), ProxyParse::NeedMore);
        assert_eq!(parse(&hdr[..27]), ProxyParse::NeedMore);
        assert_eq!(found(&hdr[..28]).len, 28);
    }

    #[test]
    fn v2_bad_version_and_command() {
        for ver_cmd in [0x11, 0x31, 0x01, 0xF1, 0x10, 0x30] {
            let hdr = v2(ver_cmd, 0x11, &v2_inet4_body());
            assert_eq!(
                parse(&hdr),
                ProxyParse::Invalid("PROXY v2 header: unsupported version"),
                "{ver_cmd:#x}"
            );
            assert!(is_invalid(&hdr[..13]));
        }
        for ver_cmd in [0x22, 0x2F] {
            let hdr = v2(ver_cmd, 0x11, &v2_inet4_body());
            assert_eq!(
                parse(&hdr),
                ProxyParse::Invalid("PROXY v2 header: unknown command")
            );
            assert!(is_invalid(&hdr[..13]));
        }
    }

    #[test]
    fn v2_short_address_block() {
        assert!(is_invalid(&v2(0x21, 0x11, &[0; 11])));
        assert!(is_invalid(&v2(0x21, 0x21, &[0; 35])));
        assert!(is_invalid(&v2(0x21, 0x21, &[0; 12])));
        assert!(is_invalid(&v2(0x21, 0x31, &[0; 215])));
        assert!(is_invalid(&v2(0x21, 0x12, &[])));
        // Refused as soon as the length field is complete.
        assert!(is_invalid(&v2(0x21, 0x11, &[0; 11])[..16]));
    }

    #[test]
    fn v2_max_header() {
        let body = vec![0u8; MAX_HEADER - 16];
        let hdr = v2(0x21, 0x11, &body);
        assert_eq!(found(&hdr).len, MAX_HEADER);
        let body = vec![0u8; MAX_HEADER - 15];
        let hdr = v2(0x21, 0x11, &body);
        assert_eq!(
            parse(&hdr[..16]),
            ProxyParse::Invalid("PROXY v2 header too long")
        );
        assert!(is_invalid(&hdr));
        let mut hdr = v2(0x20, 0x00, &[]);
        hdr[14] = 0xFF;
        hdr[15] = 0xFF;
        assert!(is_invalid(&hdr));
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    fn check_consistent(buf: &[u8]) {
        let r = parse(buf);
        if let ProxyParse::Found(h) = r {
            assert!(h.len <= buf.len() && h.len <= MAX_HEADER);
            assert_eq!(parse(&buf[..h.len]), r, "header alone parses the same");
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let v1 = b"PROXY TCP4 192.168.0.1 10.0.0.2 56324 443\r\n";
        let v6 = b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n";
        let v2h = v2(0x21, 0x11, &v2_inet4_body());
        let alphabet = b"PROXY TCP46UNKNOW0123456789abcdef.: \r\n";
        let mut buf = [0u8; 600];
        for round in 0..30_000u32 {
            let len = (rng.next() % 600) as usize;
            // Start from nothing, a v1 header or a v2 header, then corrupt it.
            let base: &[u8] = match round % 4 {
                0 => &[],
                1 => v1,
                2 => v6,
                _ => &v2h,
            };
            for (i, b) in buf.iter_mut().enumerate() {
                let r = rng.next();
                *b = match (base.get(i), round % 3) {
                    (Some(&orig), _) if !r.is_multiple_of(16) => orig,
                    (_, 0) => alphabet[(r >> 8) as usize % alphabet.len()],
                    _ => (r >> 8) as u8,
                };
            }
            for n in [len, len / 2, len / 7, len.min(20)] {
                check_consistent(&buf[..n]);
            }
        }
        // Pure random bytes behind both signatures, every length up to 300.
        for sig in [V1_PREFIX, V2_SIG] {
            for n in 0..300 {
                let mut b = sig.to_vec();
                b.extend((0..n).map(|_| rng.next() as u8));
                for cut in 0..b.len() {
                    check_consistent(&b[..cut]);
                }
                check_consistent(&b);
            }
        }
    }

    #[test]
    fn valid_prefixes_never_invalid_for_random_valid_v1() {
        // Generated valid TCP4/TCP6 lines: every strict prefix is NeedMore.
        let mut rng = XorShift(42);
        for _ in 0..500 {
            let a = Ipv4Addr::from(rng.next() as u32);
            let b = Ipv6Addr::from(u128::from(rng.next()) << (rng.next() % 64));
            let c = Ipv6Addr::from(u128::from(rng.next()) | (u128::from(rng.next()) << 64));
            let p = rng.next() as u16;
            let lines = [
                format!("PROXY TCP4 {a} {a} {p} {}\r\n", p / 3),
                format!("PROXY TCP6 {b} {c} {p} 0\r\n"),
                format!("PROXY TCP6 ::ffff:{a} {c} 0 {p}\r\n"),
            ];
            for l in lines {
                let h = found(l.as_bytes());
                assert_eq!(h.len, l.len());
                assert_prefixes_need_more(l.as_bytes());
            }
        }
    }
}
