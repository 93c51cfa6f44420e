//! Pure work on heads: the framing of a request (Content-Length,
//! Transfer-Encoding, hop-by-hop headers, upgrades) and the head that goes
//! upstream; the same for a response; `plan_pure`, the planner without a
//! table or a connection (unit tests, the fuzz target, the sniff bench).

use crate::decision::Reason;
use crate::proxy::chunked::Chunked;
use crate::proxy::conn::MAX_TUNNEL_DEPTH;
use crate::sniff::http::{header_slots, request_host};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    None,
    Length(u64),
    Chunked,
    /// Response only: until the upstream closes.
    UntilClose,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Fwd {
    /// First byte of the request line (after leading empty lines).
    pub(super) start: usize,
    /// End of the head (through the blank line).
    pub(super) end: usize,
    pub(super) verbatim: bool,
    pub(super) body: Body,
    /// Close the client connection after this response.
    pub(super) close: bool,
    pub(super) upgrade: bool,
    pub(super) connect: bool,
    pub(super) head: bool,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Resp {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) verbatim: bool,
    pub(super) status: u16,
    pub(super) body: Body,
    /// The upstream connection can carry another request afterwards.
    pub(super) reusable: bool,
}

pub(super) enum RespParse {
    Partial,
    /// An interim (1xx) response of this many bytes.
    Interim(usize),
    Final(Resp),
    Bad,
}

pub(super) fn parse_response(ubuf: &[u8], f: Fwd, obuf: &mut Vec<u8>) -> RespParse {
    let mut slots = header_slots();
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, ubuf, &mut slots)
    {
        Ok(httparse::Status::Complete(end)) => {
            let status = resp.code.unwrap_or(0);
            if (100..200).contains(&status) && status != 101 {
                return RespParse::Interim(end);
            }
            match plan_response(ubuf, &resp, end, f, obuf) {
                Some(r) => RespParse::Final(r),
                None => RespParse::Bad,
            }
        }
        Ok(httparse::Status::Partial) => RespParse::Partial,
        Err(_) => RespParse::Bad,
    }
}

/// How many of `avail` (the bytes read after a head) belong to a body of
/// this kind, and whether they complete it.
pub(super) fn body_prefix(
    body: Body,
    avail: &[u8],
    chunked: &mut Chunked,
) -> Result<(usize, bool), &'static str> {
    Ok(match body {
        Body::None => (0, true),
        Body::Length(n) => {
            let k = avail.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            (k, k as u64 == n)
        }
        Body::Chunked => (chunked.feed(avail)?, chunked.is_done()),
        Body::UntilClose => (avail.len(), false),
    })
}

/// A `Content-Length` value: digits only (no sign, list or blank).
pub(super) fn content_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A `Connection` value that says only `keep-alive` (at least once).
pub(super) fn only_keep_alive(v: &[u8]) -> bool {
    let mut any = false;
    for t in tokens(v) {
        if !t.eq_ignore_ascii_case(b"keep-alive") {
            return false;
        }
        any = true;
    }
    any
}

/// Headers that describe one hop (RFC 9110 §7.6.1), besides those the
/// `Connection` header names.
pub(super) fn is_hop_header(n: &str) -> bool {
    eq(n, "connection") || eq(n, "keep-alive") || eq(n, "proxy-connection")
}

/// The start line of a head, with its line ending.
pub(super) fn first_line(head: &[u8]) -> &[u8] {
    let end = head
        .iter()
        .position(|b| *b == b'\n')
        .map_or(head.len(), |i| i + 1);
    &head[..end]
}

pub(super) fn eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Comma-separated list tokens of a header value, trimmed, empty ones skipped.
pub(super) fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|b| *b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Header names a `Connection` header listed (bounded). The list is set
/// up at the first name: most heads name none, and clearing its 16 slots
/// for every request and response cost more than anything else in a
/// header scan.
pub(super) struct Named<'a> {
    names: Option<[&'a [u8]; 16]>,
    n: usize,
}

impl<'a> Named<'a> {
    fn new() -> Self {
        Named { names: None, n: 0 }
    }
    fn add(&mut self, t: &'a [u8]) -> bool {
        let names = self.names.get_or_insert([&[]; 16]);
        if self.n == names.len() {
            return false;
        }
        names[self.n] = t;
        self.n += 1;
        true
    }
    fn has(&self, name: &str) -> bool {
        self.names.as_ref().is_some_and(|names| {
            names[..self.n]
                .iter()
                .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
        })
    }
}

/// Start of a message after leading empty lines.
pub(super) fn skip_empty_lines(buf: &[u8]) -> usize {
    buf.iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len())
}

/// The head's lines after the first, paired with httparse's headers (one
/// line per header: obsolete line folding is rejected by httparse).
pub(super) fn header_lines<'b, 'h>(
    head: &'b [u8],
    headers: &'h [httparse::Header<'b>],
) -> impl Iterator<Item = (&'b [u8], &'h httparse::Header<'b>)> {
    head.split_inclusive(|b| *b == b'\n').skip(1).zip(headers)
}

/// What the request planner makes of `buf` without a table or a
/// connection: the parts of the data path that are pure functions of the
/// bytes (for the fuzz target and unit tests).
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pure {
    NeedMore,
    /// Not a request head: 400.
    Invalid,
    /// A head that is refused whatever the table says.
    Refused(Reason),
    /// A head to decide on `host` (canonical; `None`: no name, R3), then
    /// forward as `head`; the request's own head ended at `end`.
    Forward {
        host: Option<String>,
        head: Vec<u8>,
        end: usize,
    },
}

/// The host a parsed request is for (its target and Host headers; see
/// [`request_host`]), or the reason it names none that can be decided.
#[inline]
pub(super) fn host_of<'a>(
    req: &httparse::Request<'_, 'a>,
) -> Result<Option<crate::hostname::Host<'a>>, Reason> {
    let mut hosts = req
        .headers
        .iter()
        .filter(|h| eq(h.name, "host"))
        .map(|h| h.value);
    let connect = eq(req.method.unwrap_or(""), "CONNECT");
    request_host(
        req.path.unwrap_or(""),
        connect,
        req.version == Some(0),
        &mut hosts,
    )
}

#[doc(hidden)]
pub fn plan_pure(buf: &[u8]) -> Pure {
    let mut slots = header_slots();
    let mut req = httparse::Request::new(&mut []);
    let end = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(end)) => end,
        Ok(httparse::Status::Partial) => return Pure::NeedMore,
        Err(_) => return Pure::Invalid,
    };
    let host = match host_of(&req) {
        Ok(h) => h.map(|h| h.to_string()),
        Err(r) => return Pure::Refused(r),
    };
    let mut obuf = Vec::new();
    match frame_request(buf, &req, end, &mut obuf, 0) {
        None => Pure::Refused(Reason::BadRequest),
        Some(f) if f.verbatim => Pure::Forward {
            host,
            head: buf[f.start..f.end].to_vec(),
            end,
        },
        Some(_) => Pure::Forward {
            host,
            head: obuf,
            end,
        },
    }
}

/// The framing of a request whose host is decided, and its head as it goes
/// upstream (in `obuf` unless `verbatim`): hop-by-hop headers dropped, an
/// absolute-form target made origin-form, upgrades other than WebSocket
/// (h2c included) removed. `None`: unsound framing (conflicting lengths,
/// `Transfer-Encoding` not ending in `chunked`, ...), a `CONNECT` with a body
/// or nested deeper than `MAX_TUNNEL_DEPTH` — refused (400), never forwarded.
#[inline]
pub(super) fn frame_request(
    buf: &[u8],
    req: &httparse::Request<'_, '_>,
    end: usize,
    obuf: &mut Vec<u8>,
    depth: u8,
) -> Option<Fwd> {
    let target = req.path.unwrap_or("");
    let method = req.method.unwrap_or("");
    let http10 = req.version == Some(0);
    let h = ReqHeaders::scan(req.headers, http10);
    let connect = eq(method, "CONNECT");
    if h.bad || (connect && depth >= MAX_TUNNEL_DEPTH) {
        return None;
    }
    // A CONNECT has no content (RFC 9110 §9.3.6): bytes framed as its body
    // would reach the tunnel unsniffed at a proxy that ignores the framing.
    if connect && (h.te || h.length.is_some_and(|n| n > 0)) {
        return None;
    }
    // TE with CL: chunked wins, CL is dropped, and the connection closes
    // after the response (RFC 9112 §6.1).
    let te_and_cl = h.te && h.length.is_some();
    let body = if h.te {
        Body::Chunked
    } else {
        match h.length {
            Some(0) | None => Body::None,
            Some(n) => Body::Length(n),
        }
    };
    // An `Upgrade: h2c` would turn the connection into HTTP/2, whose
    // streams name any authority without another decision, and any other
    // protocol but WebSocket would be a blind pipe: the offer is removed
    // (clients then go on in HTTP/1.1; RFC 9113 §3.1 for h2c).
    let upgrade = h.upgrade_hdr && h.conn_upgrade && !h.bad_upgrade;
    let abs_form = !connect && !target.starts_with('/') && target != "*";
    let start = skip_empty_lines(&buf[..end]);
    let f = Fwd {
        start,
        end,
        // `Connection: keep-alive` alone on HTTP/1.1 is what we would say
        // to the upstream ourselves (its pooled connection stays open): it
        // may go as it came.
        verbatim: (!h.hop || (!h.hop_other && !http10))
            && !te_and_cl
            && !abs_form
            && !h.bad_upgrade,
        body,
        close: h.close || te_and_cl,
        upgrade,
        connect,
        head: eq(method, "HEAD"),
    };
    if !f.verbatim {
        rewrite_request(&buf[start..end], req, &h, &f, te_and_cl, abs_form, obuf);
    }
    Some(f)
}

/// What a request's headers say about its framing and its hop.
struct ReqHeaders<'b> {
    length: Option<u64>,
    te: bool,
    bad: bool,
    hop: bool,
    /// A hop-by-hop header other than `Connection: keep-alive`.
    hop_other: bool,
    close: bool,
    conn_upgrade: bool,
    upgrade_hdr: bool,
    /// An upgrade to anything but WebSocket (h2c included).
    bad_upgrade: bool,
    /// Header names `Connection` listed.
    named: Named<'b>,
}

impl<'b> ReqHeaders<'b> {
    // Inlined into its one caller: returned, the struct (with its list of
    // named headers) would be copied on every request.
    #[inline(always)]
    fn scan(headers: &[httparse::Header<'b>], http10: bool) -> Self {
        let mut h = ReqHeaders {
            length: None,
            te: false,
            bad: false,
            hop: false,
            hop_other: false,
            close: http10,
            conn_upgrade: false,
            upgrade_hdr: false,
            bad_upgrade: false,
            named: Named::new(),
        };
        let mut te_chunked_last = false;
        for hd in headers {
            let n = hd.name;
            if eq(n, "content-length") {
                match (content_length(hd.value), h.length) {
                    (None, _) => h.bad = true,
                    (Some(v), Some(prev)) if v != prev => h.bad = true,
                    (Some(v), _) => h.length = Some(v),
                }
            } else if eq(n, "transfer-encoding") {
                h.te = true;
                for t in tokens(hd.value) {
                    if te_chunked_last {
                        // Something after `chunked`, or `chunked` twice.
                        h.bad = true;
                    }
                    te_chunked_last = t.eq_ignore_ascii_case(b"chunked");
                }
            } else if eq(n, "connection") {
                h.hop = true;
                h.hop_other |= !only_keep_alive(hd.value);
                for t in tokens(hd.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        h.close = true;
                    } else if t.eq_ignore_ascii_case(b"upgrade") {
                        h.conn_upgrade = true;
                    } else if !t.eq_ignore_ascii_case(b"keep-alive") && !h.named.add(t) {
                        h.bad = true;
                    }
                }
            } else if is_hop_header(n) {
                h.hop = true;
                h.hop_other = true;
            } else if eq(n, "http2-settings") {
                h.bad_upgrade = true;
            } else if eq(n, "upgrade") {
                h.upgrade_hdr = true;
                if tokens(hd.value).any(|t| !t.eq_ignore_ascii_case(b"websocket")) {
                    h.bad_upgrade = true;
                }
            }
        }
        if h.te && (http10 || !te_chunked_last) {
            h.bad = true;
        }
        h
    }
}

/// The head as it goes upstream, into `obuf`: the request line (made
/// origin-form, with the authority as Host where HTTP/1.0 named it in the
/// target alone), the header lines as they came minus the hop-by-hop ones
/// and a removed upgrade offer.
fn rewrite_request(
    head: &[u8],
    req: &httparse::Request<'_, '_>,
    h: &ReqHeaders<'_>,
    f: &Fwd,
    te_and_cl: bool,
    abs_form: bool,
    obuf: &mut Vec<u8>,
) {
    let target = req.path.unwrap_or("");
    let method = req.method.unwrap_or("");
    let http10 = req.version == Some(0);
    obuf.reserve(head.len() + 64);
    if abs_form {
        let after = target.find("://").map_or(target, |i| &target[i + 3..]);
        let path = after.find(['/', '?']).map_or("", |i| &after[i..]);
        obuf.extend_from_slice(method.as_bytes());
        obuf.push(b' ');
        if !path.starts_with('/') {
            obuf.push(b'/');
        }
        obuf.extend_from_slice(path.as_bytes());
        obuf.extend_from_slice(if http10 {
            b" HTTP/1.0\r\n"
        } else {
            b" HTTP/1.1\r\n"
        });
        // HTTP/1.0 may name its host in the target alone: made origin-form,
        // the request carries it as Host (or the origin would serve its
        // default site, not the name decided on).
        if !req.headers.iter().any(|hd| eq(hd.name, "host")) {
            if let Ok(Some(auth)) = crate::sniff::http::target_authority(target, false) {
                obuf.extend_from_slice(b"Host: ");
                obuf.extend_from_slice(auth.as_bytes());
                obuf.extend_from_slice(b"\r\n");
            }
        }
    } else {
        obuf.extend_from_slice(first_line(head));
    }
    for (line, hd) in header_lines(head, req.headers) {
        let n = hd.name;
        let drop = is_hop_header(n)
            || (te_and_cl && eq(n, "content-length"))
            || (h.bad_upgrade && (eq(n, "upgrade") || eq(n, "http2-settings")))
            || (h.named.has(n)
                && !eq(n, "transfer-encoding")
                && !eq(n, "content-length")
                && !eq(n, "host")
                && (!f.upgrade || !eq(n, "upgrade")));
        if !drop {
            obuf.extend_from_slice(line);
        }
    }
    if f.upgrade {
        obuf.extend_from_slice(b"Connection: upgrade\r\n");
    }
    obuf.extend_from_slice(b"\r\n");
}

/// What a response's headers say about its framing and its hop.
struct RespHeaders<'b> {
    length: Option<u64>,
    te: bool,
    te_chunked_last: bool,
    hop: bool,
    /// A hop-by-hop header other than `Connection: keep-alive`.
    hop_other: bool,
    /// The upstream closes after it (or HTTP/1.0 without keep-alive).
    up_close: bool,
    named: Named<'b>,
}

impl<'b> RespHeaders<'b> {
    fn new(http11: bool) -> Self {
        RespHeaders {
            length: None,
            te: false,
            te_chunked_last: false,
            hop: false,
            hop_other: false,
            up_close: !http11,
            named: Named::new(),
        }
    }

    /// Scanned in place (returned, the struct with its list of named
    /// headers would be copied for every response). `None`: conflicting or
    /// malformed lengths (the response is bad).
    #[inline]
    fn scan(&mut self, headers: &[httparse::Header<'b>], http11: bool) -> Option<()> {
        let h = self;
        for hd in headers {
            let n = hd.name;
            if eq(n, "content-length") {
                let v = content_length(hd.value)?;
                if h.length.is_some_and(|p| p != v) {
                    return None;
                }
                h.length = Some(v);
            } else if eq(n, "transfer-encoding") {
                h.te = true;
                h.te_chunked_last = tokens(hd.value)
                    .last()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            } else if eq(n, "connection") {
                h.hop = true;
                h.hop_other |= !only_keep_alive(hd.value);
                for t in tokens(hd.value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        h.up_close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        if !http11 {
                            h.up_close = false;
                        }
                    } else if !t.eq_ignore_ascii_case(b"upgrade") {
                        h.named.add(t);
                    }
                }
            } else if is_hop_header(n) {
                h.hop = true;
                h.hop_other = true;
            }
        }
        Some(())
    }
}

/// Framing and hop-by-hop handling of an upstream response head.
pub(super) fn plan_response(
    ubuf: &[u8],
    resp: &httparse::Response<'_, '_>,
    end: usize,
    f: Fwd,
    obuf: &mut Vec<u8>,
) -> Option<Resp> {
    let status = resp.code?;
    let http11 = resp.version == Some(1);
    // Read in place: the list of named headers is not moved out.
    let mut scan = RespHeaders::new(http11);
    scan.scan(resp.headers, http11)?;
    let (length, te, te_chunked_last) = (scan.length, scan.te, scan.te_chunked_last);
    let (hop, hop_other, up_close) = (scan.hop, scan.hop_other, scan.up_close);
    let tunnel = (status == 101 && f.upgrade) || (f.connect && (200..300).contains(&status));
    if status == 101 && !f.upgrade {
        return None;
    }
    let body = if tunnel || f.head || status == 204 || status == 304 {
        Body::None
    } else if te {
        if te_chunked_last {
            Body::Chunked
        } else {
            Body::UntilClose
        }
    } else {
        match length {
            Some(0) => Body::None,
            Some(n) => Body::Length(n),
            None => Body::UntilClose,
        }
    };
    let start = skip_empty_lines(&ubuf[..end]);
    let add_close = (f.close || body == Body::UntilClose) && !tunnel;
    // `Connection: keep-alive` alone on an HTTP/1.1 response the client's
    // connection outlives is what we would tell the client ourselves: it
    // may go as it came (no rewrite of the head).
    let verbatim = tunnel || (!add_close && (!hop || (!hop_other && http11)));
    let r = Resp {
        start,
        end,
        verbatim,
        status,
        body,
        reusable: !up_close && body != Body::UntilClose && !tunnel,
    };
    if verbatim {
        return Some(r);
    }
    obuf.clear();
    // The head, what we add, and the body bytes read with it: one allocation.
    obuf.reserve(ubuf.len() - start + 32);
    let head = &ubuf[start..end];
    obuf.extend_from_slice(first_line(head));
    for (line, h) in header_lines(head, resp.headers) {
        let n = h.name;
        let drop = is_hop_header(n)
            || (scan.named.has(n) && !eq(n, "transfer-encoding") && !eq(n, "content-length"));
        if !drop {
            obuf.extend_from_slice(line);
        }
    }
    if add_close {
        obuf.extend_from_slice(b"Connection: close\r\n");
    }
    obuf.extend_from_slice(b"\r\n");
    Some(r)
}

/// What to do with a parsed request.
pub(super) enum Plan {
    /// Forward; `obuf` holds the rewritten head unless `verbatim`.
    Forward(Fwd),
    /// `obuf` holds a complete answer; then close. `linger`: the client
    /// may still be sending (keep-alive, a body, pipelined bytes), so read
    /// and drop for a moment before closing, lest an RST destroy the answer.
    Answer { linger: bool },
    /// Shadow mode, a request that cannot be followed: the rest of the
    /// connection (from the unparsed bytes on) is piped to the upstream.
    Pipe,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(req: &str) -> (Option<String>, String) {
        match plan_pure(req.as_bytes()) {
            Pure::Forward { host, head, end } => {
                assert!(end <= req.len());
                (host, String::from_utf8(head).unwrap())
            }
            other => panic!("{req:?}: {other:?}"),
        }
    }

    #[test]
    fn heads_forwarded_as_they_came_or_rewritten() {
        let r = "GET / HTTP/1.1\r\nHost: a.cn\r\n\r\n";
        assert_eq!(fwd(r), (Some("a.cn".into()), r.into()));
        // Leading empty lines are not forwarded.
        assert_eq!(fwd(&format!("\r\n{r}")).1, r);
        // HTTP/1.0 naming its host in the target alone: it goes as Host.
        assert_eq!(
            fwd("GET http://a.cn/x HTTP/1.0\r\n\r\n"),
            (
                Some("a.cn".into()),
                "GET /x HTTP/1.0\r\nHost: a.cn\r\n\r\n".into()
            )
        );
        // Absolute form becomes origin form; the Host stays.
        assert_eq!(
            fwd("GET http://a.cn/x?y HTTP/1.1\r\nHost: a.cn\r\n\r\n").1,
            "GET /x?y HTTP/1.1\r\nHost: a.cn\r\n\r\n"
        );
        // Hop-by-hop headers go, and what Connection names.
        assert_eq!(
            fwd("GET / HTTP/1.1\r\nHost: a.cn\r\nConnection: close, X-A\r\nX-A: 1\r\nKeep-Alive: 5\r\n\r\n").1,
            "GET / HTTP/1.1\r\nHost: a.cn\r\n\r\n"
        );
        // h2c and other non-WebSocket upgrades are removed; WebSocket stays.
        assert_eq!(
            fwd("GET / HTTP/1.1\r\nHost: a.cn\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AA\r\n\r\n").1,
            "GET / HTTP/1.1\r\nHost: a.cn\r\n\r\n"
        );
        assert_eq!(
            fwd("GET / HTTP/1.1\r\nHost: a.cn\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n").1,
            "GET / HTTP/1.1\r\nHost: a.cn\r\n\r\n"
        );
        assert_eq!(
            fwd(
                "GET / HTTP/1.1\r\nHost: a.cn\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            )
            .1,
            "GET / HTTP/1.1\r\nHost: a.cn\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
        );
        // TE with CL: CL dropped.
        assert_eq!(
            fwd("POST / HTTP/1.1\r\nHost: a.cn\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").1,
            "POST / HTTP/1.1\r\nHost: a.cn\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn unsound_heads_are_refused() {
        for r in [
            "POST / HTTP/1.1\r\nHost: a.cn\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.cn\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.cn\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a.cn\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nHost: a.cn\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(plan_pure(r.as_bytes()), Pure::Refused(Reason::BadRequest), "{r:?}");
        }
        assert_eq!(
            plan_pure(b"GET http://a.cn/ HTTP/1.1\r\n\r\n"),
            Pure::Refused(Reason::AmbiguousHost)
        );
        assert_eq!(
            plan_pure(b"GET / HTTP/1.1\r\nHost: a.cn\r\n"),
            Pure::NeedMore
        );
        assert_eq!(plan_pure(b"GET\x0b/ HTTP/1.1\r\n\r\n"), Pure::Invalid);
        // Authority-form is for CONNECT only; CONNECT takes nothing else
        // (found by the h1_plan fuzz target: the name decided on was not
        // the one forwarded).
        assert_eq!(
            plan_pure(b"GET a.cn?q=1 HTTP/1.0\r\n\r\n"),
            Pure::Refused(Reason::BadRequest)
        );
        assert_eq!(
            plan_pure(b"CONNECT / HTTP/1.1\r\nHost: a.cn\r\n\r\n"),
            Pure::Refused(Reason::BadRequest)
        );
    }
}
