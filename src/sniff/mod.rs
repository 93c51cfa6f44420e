//! Classifying the first bytes of a connection (docs/data-path.md): TLS, HTTP/1.x, or
//! something else. Pure functions of the bytes so far.

pub mod http;
pub mod quic;
pub mod tls;

/// What the first bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tls,
    Http,
    Other,
    NeedMore,
}

pub fn classify(buf: &[u8]) -> Kind {
    match buf.first() {
        None => Kind::NeedMore,
        Some(&b) if tls::looks_like_tls(b) => Kind::Tls,
        // An SSLv2-compatible ClientHello carries no SNI: R3 like any other
        // protocol without a name (handled as Other).
        Some(_) => match http::looks_like_http(buf) {
            http::Looks::Yes => Kind::Http,
            http::Looks::No => Kind::Other,
            http::Looks::NeedMore => Kind::NeedMore,
        },
    }
}
