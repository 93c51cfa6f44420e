//! HTTP/1.x request heads: recognising one, and finding the one authority a
//! request is for (SPEC R3, R8, R10). [`request_host`] holds the rules and is
//! used both by [`parse`] (the pure, incremental head parser the fuzz target
//! and the sniff bench drive) and by the HTTP engine (`proxy::h1`) for every
//! request on a connection, the first included.

use crate::decision::Reason;
use crate::hostname::{self, Host};

/// Headers examined per request head.
pub const MAX_HEADERS: usize = 128;

/// Header slots for httparse, left uninitialized: httparse writes the ones
/// it fills. (An `[EMPTY_HEADER; 128]` is 4 KiB of stores per parse; with a
/// request and a response head per exchange it was the largest single cost
/// of a `Connection: close` request in callgrind — BENCHMARKS.md §7.)
pub type HeaderSlots<'b> = [std::mem::MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

/// Fresh [`HeaderSlots`] (no stores).
pub fn header_slots<'b>() -> HeaderSlots<'b> {
    [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Outcome of [`looks_like_http`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Looks {
    Yes,
    No,
    NeedMore,
}

/// Longest first line we wait for before deciding it is not HTTP.
pub const MAX_REQUEST_LINE: usize = 8192;

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Is this the start of an HTTP/1.x request? Leading empty lines are
/// skipped (servers ignore them, RFC 9112 §2.2, so an attacker could use
/// them to look like "not HTTP"). A first line `token SP ... SP HTTP/x.y`
/// (any case, CRLF or bare LF) is HTTP; such a head that then fails to
/// parse is invalid and closed, never waved through as "other". A first line
/// of another shape (SSH banners, Redis inline commands, HTTP/0.9 without a
/// version, which names no host) is not HTTP.
pub fn looks_like_http(buf: &[u8]) -> Looks {
    let start = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    let rest = &buf[start..];
    let method_len = rest.iter().take_while(|b| is_tchar(**b)).count();
    match rest.get(method_len) {
        None if start < MAX_REQUEST_LINE && rest.len() < MAX_REQUEST_LINE => {
            return Looks::NeedMore
        }
        None => return Looks::No,
        Some(b' ') if method_len > 0 => {}
        Some(_) => return Looks::No,
    }
    let Some(eol) = rest.iter().position(|b| *b == b'\n') else {
        return if rest.len() < MAX_REQUEST_LINE {
            Looks::NeedMore
        } else {
            Looks::No
        };
    };
    let line = &rest[..eol];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = line.rsplit(|b| *b == b' ').next().unwrap_or(b"");
    if version.len() >= 5 && version[..5].eq_ignore_ascii_case(b"HTTP/") {
        Looks::Yes
    } else {
        Looks::No
    }
}

/// The authority a request is for: `Ok(Some(host))`, `Ok(None)` when it
/// names none (HTTP/1.0 without Host: R3), or the block reason
/// (`ambiguous_host`, `bad_host`).
pub fn request_host<'a>(
    target: &'a str,
    http10: bool,
    hosts: &mut dyn Iterator<Item = &'a [u8]>,
) -> Result<Option<Host<'a>>, Reason> {
    request_host_parts(target_authority(target)?, http10, hosts)
}

/// [`request_host`] with the target's authority already extracted.
fn request_host_parts<'a>(
    target_auth: Option<&'a str>,
    http10: bool,
    hosts: &mut dyn Iterator<Item = &'a [u8]>,
) -> Result<Option<Host<'a>>, Reason> {
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(Reason::AmbiguousHost);
    }
    let host = match first {
        Some(raw) => {
            let s = std::str::from_utf8(raw).map_err(|_| Reason::BadHost)?;
            let s = s.trim_matches(|c| c == ' ' || c == '\t');
            Some(hostname::canonicalize(s).map_err(|_| Reason::BadHost)?)
        }
        None => None,
    };
    match (target_auth, host) {
        (Some(t), Some(h)) => {
            let t = hostname::canonicalize(t).map_err(|_| Reason::BadHost)?;
            if t != h {
                return Err(Reason::AmbiguousHost);
            }
            Ok(Some(t))
        }
        (Some(t), None) => Ok(Some(
            hostname::canonicalize(t).map_err(|_| Reason::BadHost)?,
        )),
        (None, Some(h)) => Ok(Some(h)),
        (None, None) if http10 => Ok(None),
        // RFC 9112 §3.2: an HTTP/1.1 request without Host.
        (None, None) => Err(Reason::AmbiguousHost),
    }
}

/// The authority of an absolute-form (`http://a/...`) or authority-form
/// (`CONNECT a:443`) target; `None` for origin-form and `*`.
fn target_authority(target: &str) -> Result<Option<&str>, Reason> {
    if target.starts_with('/') || target == "*" {
        return Ok(None);
    }
    let rest = match target.find("://") {
        Some(i) => {
            let scheme = &target[..i];
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return Err(Reason::BadHost);
            }
            &target[i + 3..]
        }
        // authority-form
        None => target,
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let auth = &rest[..end];
    if auth.is_empty() || auth.contains('@') {
        return Err(Reason::BadHost);
    }
    Ok(Some(auth))
}

/// A complete request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head<'a> {
    /// Bytes of the head, through the blank line.
    pub len: usize,
    pub host: Result<Option<Host<'a>>, Reason>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse<'a> {
    NeedMore,
    Found(Head<'a>),
    Invalid(&'static str),
}

/// Parse the request head at the start of `buf` (pure, incremental).
pub fn parse(buf: &[u8]) -> Parse<'_> {
    let mut slots = header_slots();
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Partial) => Parse::NeedMore,
        Err(httparse::Error::TooManyHeaders) => Parse::Invalid("too many headers"),
        Err(_) => Parse::Invalid("malformed request head"),
        Ok(httparse::Status::Complete(len)) => {
            let target = req.path.unwrap_or("");
            let http10 = req.version == Some(0);
            let mut hosts = req
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("host"))
                .map(|h| h.value);
            let host = request_host(target, http10, &mut hosts).map(|h| h.map(Host::into_owned));
            // Host borrows from `headers`, a local: hand back owned names
            // (the sniffer is not the per-request hot path; the service
            // borrows from hyper's parsed request instead).
            Parse::Found(Head { len, host })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(req: &str) -> Result<Option<String>, Reason> {
        match parse(req.as_bytes()) {
            Parse::Found(h) => h.host.map(|h| h.map(|h| h.to_string())),
            other => panic!("{req:?}: {other:?}"),
        }
    }

    #[test]
    fn rules() {
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: A.com\r\n\r\n"),
            Ok(Some("a.com".into()))
        );
        assert_eq!(
            host("GET / HTTP/1.1\r\nhOsT:a.com.:8080\r\n\r\n"),
            Ok(Some("a.com".into()))
        );
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: \t a.com \t\r\n\r\n"),
            Ok(Some("a.com".into()))
        );
        assert_eq!(host("GET / HTTP/1.0\r\n\r\n"), Ok(None));
        assert_eq!(host("GET / HTTP/1.1\r\n\r\n"), Err(Reason::AmbiguousHost));
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: a.com\r\nHost: a.com\r\n\r\n"),
            Err(Reason::AmbiguousHost)
        );
        assert_eq!(
            host("GET http://b.com/x HTTP/1.1\r\nHost: a.com\r\n\r\n"),
            Err(Reason::AmbiguousHost)
        );
        assert_eq!(
            host("GET http://A.com:80/x HTTP/1.1\r\nHost: a.com\r\n\r\n"),
            Ok(Some("a.com".into()))
        );
        assert_eq!(
            host("GET http://a.com/x HTTP/1.0\r\n\r\n"),
            Ok(Some("a.com".into()))
        );
        assert_eq!(
            host("CONNECT a.com:443 HTTP/1.1\r\nHost: a.com:443\r\n\r\n"),
            Ok(Some("a.com".into()))
        );
        assert_eq!(
            host("GET http://u@a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n"),
            Err(Reason::BadHost)
        );
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: a b.com\r\n\r\n"),
            Err(Reason::BadHost)
        );
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: \r\n\r\n"),
            Err(Reason::BadHost)
        );
        assert_eq!(
            host("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"),
            Ok(Some("[::1]".into()))
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a.com\r\n"), Parse::NeedMore);
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n"),
            Parse::Invalid(_)
        ));
    }

    #[test]
    fn looks() {
        assert_eq!(looks_like_http(b"GET / HTTP/1.1\r\n"), Looks::Yes);
        assert_eq!(looks_like_http(b"GET / HTTP/1.1"), Looks::NeedMore);
        assert_eq!(looks_like_http(b"\r\n\r\nGET / HTTP/1.1\r\n"), Looks::Yes);
        assert_eq!(looks_like_http(b"get / http/1.0\n"), Looks::Yes);
        assert_eq!(looks_like_http(b"PRI * HTTP/2.0\r\n"), Looks::Yes);
        assert_eq!(looks_like_http(b"GE"), Looks::NeedMore);
        assert_eq!(looks_like_http(b""), Looks::NeedMore);
        assert_eq!(looks_like_http(b"\r\n"), Looks::NeedMore);
        assert_eq!(looks_like_http(b"SSH-2.0-OpenSSH_9.6\r\n"), Looks::No);
        assert_eq!(looks_like_http(b"SET k v\r\n"), Looks::No);
        assert_eq!(looks_like_http(b"GET /\r\n"), Looks::No);
        assert_eq!(looks_like_http(b"\x16\x03\x01"), Looks::No);
        assert_eq!(looks_like_http(b" GET"), Looks::No);
        assert_eq!(looks_like_http(&[b'A'; MAX_REQUEST_LINE + 1]), Looks::No);
    }
}
