//! HTTP/1.x request heads: recognising one, and finding the one authority a
//! request is for (R3, R8, R10). [`request_host`] holds the rules and is
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

/// Longest SSH identification line (RFC 4253 §4.2: 255 bytes with CR LF).
const MAX_SSH_IDENT: usize = 255;

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Bytes that some HTTP server takes for whitespace around or between the
/// words of a request line: SP, HTAB, VT, FF and CR (RFC 9112 §3 lets a
/// server accept them as separators) and what Python's `str.split()` also
/// splits on in a Latin-1 line (0x1C–0x1F, NEL 0x85, NBSP 0xA0). LF is not
/// among them: it ends the line.
fn is_line_space(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | 0x0b | 0x0c | b'\r' | 0x1c..=0x1f | 0x85 | 0xa0
    )
}

/// Does the connection start like an HTTP/1.x request (docs/data-path.md, the
/// classification rule, `docs/data-path.md`)? Pure and incremental.
///
/// - Leading line-space and empty lines are skipped (nginx and Node skip
///   empty lines, Python skips leading whitespace).
/// - Then a method token (RFC 9110 token characters, any length, any case),
///   one or more separators (any line-space byte above), and the first byte
///   of a target: **HTTP**, whatever follows (a version or none: HTTP/0.9
///   forms, odd versions, a line of any length). The HTTP engine then parses
///   it strictly and decides, or answers 400 / 414 / 431 and closes.
/// - `NeedMore` while the bytes so far are a prefix of that shape (the
///   caller, at its size cap, hands such a prefix to the HTTP engine, which
///   refuses it as too long: length never turns HTTP into "other").
/// - **Not HTTP**: a first byte that cannot start a method (binary
///   protocols, TLS, `{`), a token ended by anything but a separator
///   (`GET/`, `\0`), or a token with no target on its line (`PING\r\n`).
/// - One exception: an SSH identification line (`SSH-2.0-… comment\r\n`,
///   RFC 4253 §4.2, which the spec names as "other") is not HTTP when it
///   fits in 255 bytes and has neither `HTTP/` nor `://` in it. No server
///   accepts `SSH-2.0-…` as a method on a line without an HTTP version, and
///   without a version or an absolute target no server learns a host name.
pub fn looks_like_http(buf: &[u8]) -> Looks {
    let Some(start) = buf.iter().position(|b| !is_line_space(*b) && *b != b'\n') else {
        return Looks::NeedMore;
    };
    let rest = &buf[start..];
    let method_len = rest.iter().take_while(|b| is_tchar(**b)).count();
    if method_len == 0 {
        return Looks::No;
    }
    match rest.get(method_len) {
        None => return Looks::NeedMore,
        Some(b) if is_line_space(*b) => {}
        // LF (a lone word on its line), '/', NUL, ...
        Some(_) => return Looks::No,
    }
    let after = &rest[method_len..];
    match after.iter().find(|b| !is_line_space(**b)) {
        None => Looks::NeedMore,
        Some(b'\n') => Looks::No,
        Some(_) if rest.starts_with(b"SSH-") => ssh_ident(rest),
        Some(_) => Looks::Yes,
    }
}

/// An SSH identification line with a comment (`SSH-2.0-x comment`): not
/// HTTP if it is one, HTTP otherwise (see [`looks_like_http`]).
fn ssh_ident(rest: &[u8]) -> Looks {
    let window = &rest[..rest.len().min(MAX_SSH_IDENT)];
    let Some(eol) = window.iter().position(|b| *b == b'\n') else {
        return if rest.len() < MAX_SSH_IDENT {
            Looks::NeedMore
        } else {
            Looks::Yes
        };
    };
    let line = &window[..eol];
    let has = |pat: &[u8]| line.windows(pat.len()).any(|w| w.eq_ignore_ascii_case(pat));
    if has(b"HTTP/") || has(b"://") {
        Looks::Yes
    } else {
        Looks::No
    }
}

/// The authority a request is for: `Ok(Some(host))`, `Ok(None)` when it
/// names none (HTTP/1.0 without Host: R3), or the block reason
/// (`ambiguous_host`, `bad_host`, `bad_request` for a target of the wrong
/// form). `connect`: the method is CONNECT (authority-form, and only it).
pub fn request_host<'a>(
    target: &'a str,
    connect: bool,
    http10: bool,
    hosts: &mut dyn Iterator<Item = &'a [u8]>,
) -> Result<Option<Host<'a>>, Reason> {
    request_host_parts(target_authority(target, connect)?, http10, hosts)
}

/// [`request_host`] with the target's authority already extracted.
#[inline]
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
            // Blanks trimmed as bytes (they are ASCII: valid UTF-8 stays
            // valid without them).
            let s = std::str::from_utf8(trim_blanks(raw)).map_err(|_| Reason::BadHost)?;
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
        // HTTP/1.0 may name its host in the target alone.
        (Some(t), None) if http10 => Ok(Some(
            hostname::canonicalize(t).map_err(|_| Reason::BadHost)?,
        )),
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is refused, even
        // with an absolute-form target (an origin would serve its default
        // site, not the target's).
        (Some(_), None) => Err(Reason::AmbiguousHost),
        (None, Some(h)) => Ok(Some(h)),
        (None, None) if http10 => Ok(None),
        // RFC 9112 §3.2: an HTTP/1.1 request without Host.
        (None, None) => Err(Reason::AmbiguousHost),
    }
}

/// `v` without leading and trailing spaces and tabs.
fn trim_blanks(v: &[u8]) -> &[u8] {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !blank(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !blank(b)).map_or(start, |i| i + 1);
    &v[start..end]
}

/// The authority of an absolute-form (`http://a/...`) or authority-form
/// (`CONNECT a:443`) target; `None` for origin-form and `*`.
/// RFC 9112 §3.2: origin-form (`/…`) and `*` name no authority;
/// absolute-form (`http://a/…`) does; authority-form (`a:443`) is for
/// CONNECT alone, and CONNECT takes nothing else. A target of another
/// shape is refused (`bad_request`): forwarded, an origin might read a name
/// out of it that was never decided on.
#[inline]
pub fn target_authority(target: &str, connect: bool) -> Result<Option<&str>, Reason> {
    if connect {
        if target.starts_with('/') || target == "*" || target.contains("://") {
            return Err(Reason::BadRequest);
        }
        if target.is_empty() || target.contains(['/', '?', '#', '@']) {
            return Err(Reason::BadHost);
        }
        return Ok(Some(target));
    }
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
        None => return Err(Reason::BadRequest),
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

/// Parse the request head at the start of `buf` (pure, incremental): the
/// Host rules on one head, for this module's tests. The data path plans
/// requests in `proxy::h1` (`plan_pure` is its pure part).
#[cfg(test)]
fn parse(buf: &[u8]) -> Parse<'_> {
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
            let connect = req.method == Some("CONNECT");
            let host =
                request_host(target, connect, http10, &mut hosts).map(|h| h.map(Host::into_owned));
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
            host("GET http://a.com/x HTTP/1.1\r\n\r\n"),
            Err(Reason::AmbiguousHost)
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
        use Looks::*;
        let cases: &[(&[u8], Looks)] = &[
            (b"GET / HTTP/1.1\r\n", Yes),
            (b"GET / HTTP/1.1", Yes),
            (b"GET /", Yes),
            (b"GET ", NeedMore),
            (b"GET \t\x0b", NeedMore),
            (b"\r\n\r\nGET / HTTP/1.1\r\n", Yes),
            (b" \t\x0cGET\x0b/", Yes),
            (b"\x85GET\xa0/", Yes),
            (b"get / http/1.0\n", Yes),
            (b"PRI * HTTP/2.0\r\n", Yes),
            (b"GET /\r\n", Yes),
            (b"GET\r/ HTTP/1.1\r\n", Yes),
            (b"FOO bar", Yes),
            (b"SET k v\r\n", Yes),
            (b"GE", NeedMore),
            (b"", NeedMore),
            (b"\r\n", NeedMore),
            (b"  \r\n \t", NeedMore),
            (b"PING\r\n", No),
            (b"PING \r\n", No),
            (b"GET\n/ HTTP/1.1", No),
            (b"GET/ HTTP/1.1", No),
            (b"G\0T / HTTP/1.1", No),
            (b"\x16\x03\x01", No),
            (b"\x00\x00\x00\x08\x04\xd2\x16\x2f", No),
            (b"{\"a\": 1}", No),
            (b"*3\r\n$3\r\nSET\r\n", No),
            // SSH identification lines, with and without a comment.
            (b"SSH-2.0-OpenSSH_9.6\r\n", No),
            (b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", No),
            (b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", NeedMore),
            (b"SSH-2.0-x / HTTP/1.1\r\n", Yes),
            (b"SSH-2.0-x http://a.cn/\r\n", Yes),
            (b"SSH-2.0-x http://a.cn/", NeedMore),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                looks_like_http(bytes),
                *want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        // Length never decides: a token or an SSH line of any length stays
        // HTTP (or a prefix of it).
        assert_eq!(looks_like_http(&[b'A'; 100_000]), NeedMore);
        let mut long_ssh = b"SSH-2.0-x ".to_vec();
        long_ssh.extend([b'c'; 300]);
        assert_eq!(looks_like_http(&long_ssh), Yes);
        // Every prefix of an HTTP request line is HTTP or NeedMore.
        let line = b"\r\n  GET\t/x?q=1 HTTP/1.1\r\nHost: a\r\n\r\n";
        for n in 0..=line.len() {
            assert_ne!(looks_like_http(&line[..n]), No, "{n}");
        }
    }
}
