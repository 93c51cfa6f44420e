//! Canonical host names (R8, docs/rules.md).
//!
//! Every name icpgate compares — from a TLS SNI, an HTTP `Host`, a table row,
//! an override list or the CLI — goes through [`canonicalize`]: port and one
//! trailing dot removed, IDNA UTS #46 to ASCII lowercase A-labels (the
//! ideographic and full-width dots `。．｡` map to `.`), IP literals recognised,
//! everything that is not a hostname rejected with a reason.
//!
//! Decisions written down here:
//! * Hyphens are not position-checked (browsers accept `-a.example.com`, so do
//!   we; UTS #46 `CheckHyphens=false`).
//! * `_` is accepted inside labels, as browsers do (`a_b.example.com` is a real
//!   CDN pattern); every other non-LDH ASCII character is rejected.
//! * A name whose last label is all digits but is not a dotted-quad IPv4
//!   address (`127.1`, `0x7f.0.0.1`) is rejected: it is neither a hostname nor
//!   an address we can reason about, so it fails closed.
//!
//! The common case — a lowercase ASCII name — returns a borrowed slice of the
//! input and allocates nothing.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

/// Maximum length of a canonical name (RFC 1035, without the root dot).
pub const MAX_NAME_LEN: usize = 253;
/// Maximum length of one label.
pub const MAX_LABEL_LEN: usize = 63;
/// Longest input we even look at (a Host header value, an SNI). Anything longer
/// cannot become a valid name after mapping and is rejected without IDNA work.
pub const MAX_INPUT_LEN: usize = 1024;

/// The ASCII characters denied in a name: STD3 minus `_` (see module docs).
const DENY: AsciiDenyList = AsciiDenyList::new(true, "!\"#$%&'()*+,/:;<=>?@[\\]^`{|}~");

/// A canonical host: either a domain name (ASCII lowercase A-labels, no
/// trailing dot, no port) or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host<'a> {
    Name(Cow<'a, str>),
    Ip(IpAddr),
}

impl Host<'_> {
    /// As displayed; borrowed for a name (no allocation on the hot path).
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Host::Name(n) => Cow::Borrowed(n),
            Host::Ip(_) => Cow::Owned(self.to_string()),
        }
    }

    pub fn into_owned(self) -> Host<'static> {
        match self {
            Host::Name(n) => Host::Name(Cow::Owned(n.into_owned())),
            Host::Ip(ip) => Host::Ip(ip),
        }
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why a string is not a host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    Empty,
    TooLong,
    BadPort,
    BadIpLiteral,
    /// IDNA processing failed: a character a hostname cannot hold, an invalid
    /// punycode label, an empty label, a label over 63 or a name over 253.
    Invalid,
    EmptyLabel,
    LabelTooLong,
    NumericTld,
}

impl HostError {
    pub fn as_str(self) -> &'static str {
        match self {
            HostError::Empty => "empty host name",
            HostError::TooLong => "host name longer than 253 characters",
            HostError::BadPort => "malformed port",
            HostError::BadIpLiteral => "malformed IP literal",
            HostError::Invalid => "not a valid host name (IDNA/UTS #46 rejected it)",
            HostError::EmptyLabel => "empty label",
            HostError::LabelTooLong => "label longer than 63 characters",
            HostError::NumericTld => "numeric last label that is not an IPv4 address",
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for HostError {}

/// Canonicalize a host as found in an HTTP `Host` header or authority: an
/// optional `:port` suffix is accepted and dropped, `[v6]` literals are
/// recognised.
pub fn canonicalize(input: &str) -> Result<Host<'_>, HostError> {
    let name = strip_port(input)?;
    match name {
        Stripped::Ip(ip) => Ok(Host::Ip(ip)),
        Stripped::Name(n) => canonical_name(n),
    }
}

/// Canonicalize a name that carries no port (a TLS SNI, a table row). A `:`
/// makes it invalid unless the whole thing is an IPv6 literal.
pub fn canonicalize_bare(input: &str) -> Result<Host<'_>, HostError> {
    if input.bytes().any(|b| b == b':') {
        let inner = input
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(input);
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| HostError::Invalid);
    }
    canonical_name(input)
}

enum Stripped<'a> {
    Name(&'a str),
    Ip(IpAddr),
}

fn strip_port(input: &str) -> Result<Stripped<'_>, HostError> {
    if let Some(rest) = input.strip_prefix('[') {
        let close = rest.find(']').ok_or(HostError::BadIpLiteral)?;
        let ip: Ipv6Addr = rest[..close].parse().map_err(|_| HostError::BadIpLiteral)?;
        let after = &rest[close + 1..];
        if !after.is_empty() {
            check_port(after.strip_prefix(':').ok_or(HostError::BadPort)?)?;
        }
        return Ok(Stripped::Ip(IpAddr::V6(ip)));
    }
    match rfind_byte(input, b':') {
        None => Ok(Stripped::Name(input)),
        Some(i) => {
            let (host, port) = (&input[..i], &input[i + 1..]);
            if host.contains(':') {
                // An unbracketed IPv6 address is not a valid Host; treat it as
                // an IP literal only if the whole input parses as one.
                return input
                    .parse::<Ipv6Addr>()
                    .map(|ip| Stripped::Ip(IpAddr::V6(ip)))
                    .map_err(|_| HostError::BadIpLiteral);
            }
            check_port(port)?;
            Ok(Stripped::Name(host))
        }
    }
}

fn check_port(port: &str) -> Result<(), HostError> {
    // RFC 3986 allows an empty port after the colon.
    if port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostError::BadPort);
    }
    if !port.is_empty() && port.parse::<u32>().map_or(true, |p| p > 65535) {
        return Err(HostError::BadPort);
    }
    Ok(())
}

fn canonical_name(input: &str) -> Result<Host<'_>, HostError> {
    if input.is_empty() {
        return Err(HostError::Empty);
    }
    if input.len() > MAX_INPUT_LEN {
        return Err(HostError::TooLong);
    }
    let name = strip_trailing_dot(input);
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    let (ascii, last_numeric) = match scan_plain(name) {
        // Fast path: lowercase LDH(+_) without punycode labels is already
        // what UTS #46 would return (tests check the two agree), and its
        // shape was checked in the same pass.
        Some(shape) => (Cow::Borrowed(name), shape?),
        None => {
            let ascii = Uts46::new()
                .to_ascii(
                    name.as_bytes(),
                    DENY,
                    Hyphens::Allow,
                    DnsLength::Ignore, // we check lengths ourselves to give a reason
                )
                .map_err(|_| HostError::Invalid)?;
            // Mapping can turn a trailing ideographic full stop into a dot.
            let ascii = match ascii {
                Cow::Borrowed(s) => Cow::Borrowed(strip_trailing_dot(s)),
                Cow::Owned(s) => match s.strip_suffix('.') {
                    Some(t) => Cow::Owned(t.to_owned()),
                    None => Cow::Owned(s),
                },
            };
            let last_numeric = check_shape(&ascii)?;
            (ascii, last_numeric)
        }
    };
    if last_numeric {
        if let Ok(v4) = ascii.parse::<Ipv4Addr>() {
            return Ok(Host::Ip(IpAddr::V4(v4)));
        }
        return Err(HostError::NumericTld);
    }
    Ok(Host::Name(ascii))
}

/// The fast path's one pass. `None` unless the name is plain: lowercase
/// ASCII letters, digits, `-`, `_`, `.`, and no label starting with the
/// punycode prefix `xn--` (those need IDNA validation). For a plain name,
/// what [`check_shape`] would return for it, in one pass instead of three
/// (this runs for every request and every TLS connection).
fn scan_plain(name: &str) -> Option<Result<bool, HostError>> {
    let b = name.as_bytes();
    let mut label_start = 0;
    let mut bad_label = None; // the first label that fails, as check_shape reports it
    let mut numeric = true; // the current label is all digits so far
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'0'..=b'9' => {}
            b'a'..=b'z' | b'-' | b'_' => numeric = false,
            b'.' => {
                if bad_label.is_none() {
                    bad_label = label_error(i - label_start);
                }
                label_start = i + 1;
                numeric = true;
                continue;
            }
            _ => return None,
        }
        if i == label_start + 3 && &b[label_start..=i] == b"xn--" {
            return None;
        }
    }
    if bad_label.is_none() {
        bad_label = label_error(b.len() - label_start);
    }
    Some(if b.is_empty() {
        Err(HostError::Empty)
    } else if b.len() > MAX_NAME_LEN {
        Err(HostError::TooLong)
    } else if let Some(e) = bad_label {
        Err(e)
    } else {
        Ok(numeric)
    })
}

fn label_error(len: usize) -> Option<HostError> {
    if len == 0 {
        Some(HostError::EmptyLabel)
    } else if len > MAX_LABEL_LEN {
        Some(HostError::LabelTooLong)
    } else {
        None
    }
}

/// Canonicalize through UTS #46 only (no fast path); for tests.
#[doc(hidden)]
pub fn canonicalize_slow(input: &str) -> Result<String, HostError> {
    Uts46::new()
        .to_ascii(input.as_bytes(), DENY, Hyphens::Allow, DnsLength::Ignore)
        .map(|c| c.into_owned())
        .map_err(|_| HostError::Invalid)
}

/// Last position of an ASCII byte. For host names (tens of bytes) a plain
/// loop: `str::rfind(char)` goes through the general searcher and a
/// word-at-a-time `memrchr` whose set-up cost ~200 instructions a call
/// (measured with callgrind), on every request.
#[inline]
fn rfind_byte(s: &str, b: u8) -> Option<usize> {
    s.bytes().rposition(|c| c == b)
}

fn strip_trailing_dot(s: &str) -> &str {
    s.strip_suffix('.').unwrap_or(s)
}

/// Lengths and labels of a name; `Ok(true)` when its last label is all
/// digits (an IPv4 literal or a rejected numeric TLD).
fn check_shape(name: &str) -> Result<bool, HostError> {
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(HostError::TooLong);
    }
    for label in name.split('.') {
        if let Some(e) = label_error(label.len()) {
            return Err(e);
        }
    }
    let last = name.rsplit('.').next().unwrap_or("");
    Ok(last.bytes().all(|b| b.is_ascii_digit()))
}

/// Length in bytes of the public suffix of a canonical name, by the ICANN
/// section of the Public Suffix List only (private-section entries such as
/// `github.io` are ignored, R4). Unknown TLDs count as a one-label
/// suffix (the PSL's default `*` rule).
pub fn icann_suffix_len(name: &str) -> usize {
    use psl::Psl;
    let bytes = name.as_bytes();
    let mut max_labels = usize::MAX;
    loop {
        let info = psl::List.find(bytes.rsplit(|b| *b == b'.').take(max_labels));
        match info.typ {
            Some(psl::Type::Private) => {
                // Retry with fewer labels than the private rule used.
                let labels = bytes[bytes.len().saturating_sub(info.len)..]
                    .iter()
                    .filter(|b| **b == b'.')
                    .count()
                    + 1;
                if labels <= 1 {
                    return info.len;
                }
                max_labels = labels - 1;
            }
            _ => return info.len,
        }
    }
}

/// The registrable domain (eTLD+1, ICANN section) of a canonical name, or
/// `None` when the name is itself a public suffix (`com.cn`, `中国`).
pub fn registrable_domain(name: &str) -> Option<&str> {
    let suffix_len = icann_suffix_len(name);
    if suffix_len == 0 || name.len() < suffix_len + 2 {
        return None;
    }
    let head = &name[..name.len() - suffix_len - 1];
    let start = rfind_byte(head, b'.').map_or(0, |i| i + 1);
    Some(&name[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> String {
        match canonicalize(s) {
            Ok(Host::Name(n)) => n.into_owned(),
            other => panic!("{s:?} -> {other:?}"),
        }
    }

    #[test]
    fn lowercase_ascii_is_borrowed() {
        match canonicalize("www.example.com.cn").unwrap() {
            Host::Name(Cow::Borrowed(s)) => assert_eq!(s, "www.example.com.cn"),
            other => panic!("{other:?}"),
        }
        match canonicalize("www.example.com.cn.:443").unwrap() {
            Host::Name(Cow::Borrowed(s)) => assert_eq!(s, "www.example.com.cn"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn case_port_dot_idn() {
        assert_eq!(name("WWW.Example.COM"), "www.example.com");
        assert_eq!(name("example.com.:8080"), "example.com");
        assert_eq!(name("例子.中国"), "xn--fsqu00a.xn--fiqs8s");
        assert_eq!(name("例子。中国"), "xn--fsqu00a.xn--fiqs8s");
        assert_eq!(name("例子．中国"), "xn--fsqu00a.xn--fiqs8s");
        assert_eq!(name("例子｡中国"), "xn--fsqu00a.xn--fiqs8s");
        assert_eq!(name("例子。中国。"), "xn--fsqu00a.xn--fiqs8s");
        assert_eq!(name("XN--FSQU00A.xn--fiqs8s"), "xn--fsqu00a.xn--fiqs8s");
        assert_eq!(name("a_b.example.com"), "a_b.example.com");
        assert_eq!(name("ＷＷＷ．example.com"), "www.example.com");
    }

    #[test]
    fn ip_literals() {
        assert_eq!(
            canonicalize("203.0.113.5").unwrap(),
            Host::Ip("203.0.113.5".parse().unwrap())
        );
        assert_eq!(
            canonicalize("203.0.113.5:80").unwrap(),
            Host::Ip("203.0.113.5".parse().unwrap())
        );
        assert_eq!(
            canonicalize("[2001:db8::1]").unwrap(),
            Host::Ip("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            canonicalize("[::1]:443").unwrap(),
            Host::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            canonicalize_bare("2001:db8::1").unwrap(),
            Host::Ip("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            canonicalize("１２７．０．０．１").unwrap(),
            Host::Ip("127.0.0.1".parse().unwrap())
        );
        assert_eq!(canonicalize("127.1"), Err(HostError::NumericTld));
        assert_eq!(canonicalize("0x7f.0.0.1"), Err(HostError::NumericTld));
        assert!(canonicalize("[2001:db8::1").is_err());
        assert!(canonicalize("[2001:db8::1]x").is_err());
    }

    #[test]
    fn invalid_names() {
        let long_label = "a".repeat(64);
        let long_name = format!("{}.com", ["abcdefghi"; 26].join("."));
        for bad in [
            "",
            ".",
            "a..b",
            ".example.com",
            "exa mple.com",
            "exa/mple.com",
            "example.com:99999",
            "example.com:8x",
            "ex@mple.com",
            "ex%41mple.com",
            "xn--zz.com",
            "a\0b.com",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(canonicalize(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            canonicalize_bare("example.com:443"),
            Err(HostError::Invalid)
        );
    }

    #[test]
    fn fast_path_agrees_with_uts46() {
        let mut rng = crate::synth::Rng::new(42);
        let alphabet = b"abcz09-_.xn";
        let mut plain = 0;
        for _ in 0..200_000 {
            let len = 1 + rng.below(14) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize] as char)
                .collect();
            if let Some(shape) = scan_plain(&s) {
                plain += 1;
                assert_eq!(canonicalize_slow(&s).as_deref(), Ok(s.as_str()), "{s:?}");
                // The one-pass shape check says what the general one says.
                assert_eq!(shape, check_shape(&s), "{s:?}");
            }
        }
        assert!(plain > 50_000, "the generator hardly reaches the fast path");
        // Long names and labels, where the limits are.
        for (len, label) in [(253, 63), (254, 63), (200, 64), (130, 63)] {
            let mut s = String::new();
            while s.len() + label < len {
                s.push_str(&"a".repeat(label));
                s.push('.');
            }
            s.push_str(&"b".repeat(len - s.len()));
            assert_eq!(scan_plain(&s), Some(check_shape(&s)), "{len} {label}");
        }
        assert_eq!(scan_plain("xn--fiqs8s"), None);
        assert_eq!(scan_plain("a.xn--fiqs8s"), None);
        assert!(scan_plain("axn--b.com").is_some());
        assert_eq!(scan_plain("A.com"), None);
        assert_eq!(scan_plain("a..b"), Some(Err(HostError::EmptyLabel)));
        assert_eq!(scan_plain("1.2.3.4"), Some(Ok(true)));
    }

    #[test]
    fn registrable() {
        assert_eq!(
            registrable_domain("www.example.com.cn"),
            Some("example.com.cn")
        );
        assert_eq!(registrable_domain("a.b.example.com"), Some("example.com"));
        assert_eq!(registrable_domain("example.com"), Some("example.com"));
        assert_eq!(registrable_domain("com.cn"), None);
        assert_eq!(registrable_domain("cn"), None);
        assert_eq!(registrable_domain("x.gov.cn"), Some("x.gov.cn"));
        assert_eq!(registrable_domain("www.x.gov.cn"), Some("x.gov.cn"));
        assert_eq!(registrable_domain("bj.cn"), None);
        assert_eq!(registrable_domain("a.bj.cn"), Some("a.bj.cn"));
        assert_eq!(registrable_domain("xn--fiqs8s"), None);
        assert_eq!(
            registrable_domain("www.xn--fsqu00a.xn--fiqs8s"),
            Some("xn--fsqu00a.xn--fiqs8s")
        );
        // private section ignored: github.io is not a suffix here
        assert_eq!(registrable_domain("foo.github.io"), Some("github.io"));
        // unknown TLD: default rule
        assert_eq!(registrable_domain("a.b.nosuchtld"), Some("b.nosuchtld"));
    }
}
