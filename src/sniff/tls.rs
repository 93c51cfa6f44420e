//! Incremental, allocation-free ClientHello reader.
//!
//! [`parse`] is a pure function of the bytes received so far. It returns
//! `NeedMore` until the whole ClientHello handshake message is present —
//! across any number of reads and any number of TLS records — and then
//! `Found` with the SNI, or `Invalid`. A buffer that ends inside the hello
//! (inside the extensions included) is always `NeedMore`, never "no SNI".
//!
//! Written by hand rather than on `tls-parser` so the hot path allocates
//! nothing (tls-parser collects ciphers and extensions into `Vec`s); the
//! tests cross-check every fixture against `tls-parser`.

/// Largest ClientHello [`parse`] accepts (the data path uses
/// [`parse_within`] with `[limits] max_sniff_bytes`). Real ones are < 2 KiB
/// (post-quantum key shares included); the record layer allows 16 KiB per
/// record and a hello may span several records.
pub const MAX_HELLO: usize = 16 * 1024;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ECH: u16 = 0xfe0d;
const EXT_ECH_OUTER_EXTENSIONS: u16 = 0xfd00;

/// A server name copied out of the hello (a valid one is at most 253
/// bytes; longer ones are refused as invalid). Copying ≤255 bytes keeps the
/// multi-record case as allocation-free as the single-record one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sni {
    buf: [u8; 255],
    len: u8,
}

impl Sni {
    fn new(bytes: &[u8]) -> Option<Sni> {
        let len = u8::try_from(bytes.len()).ok()?;
        let mut buf = [0u8; 255];
        buf[..bytes.len()].copy_from_slice(bytes);
        Some(Sni { buf, len })
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
    /// The name as text; `None` if it is not UTF-8 (then it is not a name).
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.as_bytes()).ok()
    }
}

impl std::fmt::Debug for Sni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// What a complete ClientHello says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The host_name of the server_name extension (raw bytes, not yet
    /// canonicalized). `None` when the extension is absent.
    pub sni: Option<Sni>,
    /// An `encrypted_client_hello` extension is present (real ECH or GREASE:
    /// they cannot be told apart on the wire; the SNI seen is the outer one).
    pub ech: bool,
    /// Bytes of the buffer that make up the records carrying the hello.
    pub len: usize,
}

// `Found` carries the SNI inline (no allocation); the result lives on the
// stack for one match, so its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    NeedMore,
    Found(Hello),
    Invalid(Invalid),
}

/// Why a ClientHello cannot be decided on (typed, so that the rules in
/// `decision` never look at error text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Two server_name extensions, or two host_name entries in one: R10.
    TwoNames,
    /// More handshake bytes than the limit.
    TooLarge,
    /// Anything else: not a well-formed ClientHello.
    Malformed(&'static str),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::TwoNames => f.write_str("two server names"),
            Invalid::TooLarge => f.write_str("ClientHello larger than the limit"),
            Invalid::Malformed(why) => f.write_str(why),
        }
    }
}

fn bad(why: &'static str) -> Parse {
    Parse::Invalid(Invalid::Malformed(why))
}

/// Is this the first byte of a TLS handshake record?
pub fn looks_like_tls(first: u8) -> bool {
    first == CONTENT_HANDSHAKE
}

/// Parse the ClientHello at the start of `buf`, up to [`MAX_HELLO`].
pub fn parse(buf: &[u8]) -> Parse {
    parse_within(buf, MAX_HELLO)
}

/// Parse the ClientHello at the start of `buf`; a handshake message of more
/// than `max_hs` bytes (its 4-byte header included) is
/// [`Invalid::TooLarge`], as soon as its length is known.
pub fn parse_within(buf: &[u8], max_hs: usize) -> Parse {
    // Pass 1: walk the record headers; find how many handshake bytes are
    // needed and whether they are all here.
    let mut pos = 0usize;
    let mut hs_have = 0usize; // handshake payload bytes available
    let mut hs_need: Option<usize> = None; // 4 + hello length, once known
    let mut first_hdr = [0u8; 4];
    let mut records = 0usize;
    loop {
        if let Some(need) = hs_need {
            if hs_have >= need {
                break;
            }
        }
        if buf.len() < pos + 5 {
            return Parse::NeedMore;
        }
        let hdr = &buf[pos..pos + 5];
        if hdr[0] != CONTENT_HANDSHAKE {
            return if records == 0 {
                bad("not a TLS handshake record")
            } else {
                bad("ClientHello interrupted by a non-handshake record")
            };
        }
        if hdr[1] != 3 {
            return bad("bad record version");
        }
        let rec_len = usize::from(u16::from_be_bytes([hdr[3], hdr[4]]));
        if rec_len == 0 || rec_len > 16 * 1024 {
            return bad("bad record length");
        }
        records += 1;
        let body_start = pos + 5;
        let avail = buf.len().saturating_sub(body_start).min(rec_len);
        // Collect the 4-byte handshake header, possibly split across records.
        for i in 0..avail {
            let k = hs_have + i;
            if k >= 4 {
                break;
            }
            first_hdr[k] = buf[body_start + i];
        }
        hs_have += avail;
        if hs_need.is_none() && hs_have >= 4 {
            if first_hdr[0] != HANDSHAKE_CLIENT_HELLO {
                return bad("first handshake message is not a ClientHello");
            }
            let len = (usize::from(first_hdr[1]) << 16)
                | (usize::from(first_hdr[2]) << 8)
                | usize::from(first_hdr[3]);
            if len + 4 > max_hs {
                return Parse::Invalid(Invalid::TooLarge);
            }
            hs_need = Some(len + 4);
        }
        if avail < rec_len {
            // The record is not complete yet; is the hello complete anyway?
            match hs_need {
                Some(need) if hs_have >= need => {
                    pos = body_start + avail;
                    break;
                }
                _ => return Parse::NeedMore,
            }
        }
        pos = body_start + rec_len;
        // Each record carries at least one handshake byte: at most six
        // bytes of records per handshake byte.
        if pos > max_hs.saturating_mul(6) + 30 {
            return bad("ClientHello spread over too many records");
        }
    }
    let need = hs_need.unwrap_or(0);
    // Pass 2: the hello body. Zero-copy when it sits in one record (the
    // common case); otherwise defragment into a stack buffer.
    let single = {
        let rec_len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
        rec_len >= need
    };
    let found = |body: &[u8]| hello_of(body, pos);
    if single {
        found(&buf[5 + 4..5 + need])
    } else {
        // Past MAX_HELLO (a limit raised in the config) on the heap.
        let mut stack = [0u8; MAX_HELLO];
        let mut heap = Vec::new();
        let stack: &mut [u8] = if need <= MAX_HELLO {
            &mut stack
        } else {
            heap.resize(need, 0);
            &mut heap
        };
        let mut filled = 0usize;
        let mut p = 0usize;
        while filled < need && p + 5 <= buf.len() {
            let rec_len = usize::from(u16::from_be_bytes([buf[p + 3], buf[p + 4]]));
            let take = rec_len.min(need - filled).min(buf.len() - (p + 5));
            stack[filled..filled + take].copy_from_slice(&buf[p + 5..p + 5 + take]);
            filled += take;
            p += 5 + rec_len;
        }
        found(&stack[4..need])
    }
}

/// Parse a ClientHello given as a bare handshake message — type 1, a 3-byte
/// length, the body; no record header — as QUIC carries it in CRYPTO
/// frames. `NeedMore` until the whole message is in `msg`; a message of more
/// than `max_hs` bytes (its 4-byte header included) is
/// [`Invalid::TooLarge`] as soon as its length is known. `Hello::len` is the
/// length of the handshake message; bytes after it are not looked at.
pub fn parse_handshake(msg: &[u8], max_hs: usize) -> Parse {
    match msg.first() {
        None => return Parse::NeedMore,
        Some(&HANDSHAKE_CLIENT_HELLO) => {}
        Some(_) => return bad("first handshake message is not a ClientHello"),
    }
    let Some(hdr) = msg.get(..4) else {
        return Parse::NeedMore;
    };
    let len = (usize::from(hdr[1]) << 16) | (usize::from(hdr[2]) << 8) | usize::from(hdr[3]);
    if len + 4 > max_hs {
        return Parse::Invalid(Invalid::TooLarge);
    }
    let Some(body) = msg.get(4..4 + len) else {
        return Parse::NeedMore;
    };
    hello_of(body, 4 + len)
}

/// A complete ClientHello body, parsed: `len` is the bytes it took.
fn hello_of(body: &[u8], len: usize) -> Parse {
    match parse_body(body) {
        Ok((sni, ech)) => {
            let sni = match sni {
                None => None,
                Some((a, b)) => match Sni::new(&body[a..b]) {
                    Some(s) => Some(s),
                    None => return bad("server_name longer than 255 bytes"),
                },
            };
            Parse::Found(Hello { sni, ech, len })
        }
        Err(e) => Parse::Invalid(e),
    }
}

struct Cur<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Invalid> {
        let end = self
            .p
            .checked_add(n)
            .ok_or(Invalid::Malformed("length overflow"))?;
        let s = self
            .b
            .get(self.p..end)
            .ok_or(Invalid::Malformed("truncated ClientHello"))?;
        self.p = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<usize, Invalid> {
        Ok(usize::from(self.take(1)?[0]))
    }
    fn u16(&mut self) -> Result<usize, Invalid> {
        let s = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([s[0], s[1]])))
    }
}

type Body = (Option<(usize, usize)>, bool);

/// Parse a ClientHello body (after the 4-byte handshake header). Returns
/// the SNI as a byte range of `body`, and whether ECH is present.
fn parse_body(body: &[u8]) -> Result<Body, Invalid> {
    let mut c = Cur { b: body, p: 0 };
    let ver = c.take(2)?;
    if ver[0] != 3 {
        return Err(Invalid::Malformed("bad ClientHello version"));
    }
    c.take(32)?; // random
    let sid = c.u8()?;
    if sid > 32 {
        return Err(Invalid::Malformed("session id too long"));
    }
    c.take(sid)?;
    let suites = c.u16()?;
    if suites < 2 || suites % 2 != 0 {
        return Err(Invalid::Malformed("bad cipher suites length"));
    }
    c.take(suites)?;
    let comp = c.u8()?;
    if comp < 1 {
        return Err(Invalid::Malformed("no compression methods"));
    }
    c.take(comp)?;
    if c.p == body.len() {
        // No extensions at all (old clients): no SNI.
        return Ok((None, false));
    }
    let ext_len = c.u16()?;
    if c.p + ext_len != body.len() {
        return Err(Invalid::Malformed(
            "extensions length does not match the ClientHello",
        ));
    }
    let mut sni = None;
    let mut seen_sni = false;
    let mut ech = false;
    while c.p < body.len() {
        let typ = c.u16()? as u16;
        let len = c.u16()?;
        let start = c.p;
        let data = c.take(len)?;
        match typ {
            EXT_SERVER_NAME => {
                if seen_sni {
                    return Err(Invalid::TwoNames);
                }
                seen_sni = true;
                sni = parse_sni(data)?.map(|(a, b)| (start + a, start + b));
            }
            EXT_ECH | EXT_ECH_OUTER_EXTENSIONS => ech = true,
            _ => {}
        }
    }
    Ok((sni, ech))
}

/// The host_name of a server_name extension body; two names is an error
/// (R10, docs/rules.md).
fn parse_sni(data: &[u8]) -> Result<Option<(usize, usize)>, Invalid> {
    let mut c = Cur { b: data, p: 0 };
    let list = c.u16()?;
    if list + 2 != data.len() {
        return Err(Invalid::Malformed("server_name list length mismatch"));
    }
    let mut found = None;
    while c.p < data.len() {
        let typ = c.u8()?;
        let len = c.u16()?;
        let start = c.p;
        c.take(len)?;
        if typ == 0 {
            if found.is_some() {
                return Err(Invalid::TwoNames);
            }
            if len == 0 {
                return Err(Invalid::Malformed("empty server_name"));
            }
            found = Some((start, start + len));
        }
    }
    if found.is_none() {
        return Err(Invalid::Malformed(
            "server_name extension without a host_name",
        ));
    }
    Ok(found)
}

/// Re-frame a single-record ClientHello into records of at most `chunk`
/// handshake bytes each (for tests, benchmarks and fuzz seeds: the same
/// hello as a client that fragments it would send).
#[doc(hidden)]
pub fn reframe(hello: &[u8], chunk: usize) -> Vec<u8> {
    let (Some(hdr), Some(body)) = (hello.get(..3), hello.get(5..)) else {
        return hello.to_vec();
    };
    let mut out = Vec::with_capacity(hello.len() + body.len() / chunk.max(1) * 5 + 5);
    for part in body.chunks(chunk.max(1)) {
        out.extend_from_slice(hdr);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// A minimal TLS 1.3-shaped ClientHello with the given extensions block
/// (for tests and fuzz seeds).
#[doc(hidden)]
pub fn synthetic_hello(exts: &[u8]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend([7u8; 32]);
    body.push(0);
    body.extend([0, 2, 0x13, 0x01]);
    body.extend([1, 0]);
    body.extend((exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut hs = vec![1];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    let mut rec = vec![22, 3, 1];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

/// A server_name extension listing `names` (for tests).
#[doc(hidden)]
pub fn sni_extension(names: &[&str]) -> Vec<u8> {
    let mut list = vec![];
    for n in names {
        list.push(0);
        list.extend((n.len() as u16).to_be_bytes());
        list.extend(n.as_bytes());
    }
    let mut e = vec![0, 0];
    e.extend(((list.len() + 2) as u16).to_be_bytes());
    e.extend((list.len() as u16).to_be_bytes());
    e.extend(list);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::{sni_extension as sni_ext, synthetic_hello as hello};

    /// A hello that fills one whole 16 KiB record, and one that needs
    /// several records: read up to the limit, refused past it.
    #[test]
    fn limits_span_records() {
        let pad = |n: usize| {
            let mut e = sni_ext(&["a.example.com"]);
            e.extend([0x00, 0x15]); // padding extension
            e.extend((n as u16).to_be_bytes());
            e.extend(vec![0u8; n]);
            e
        };
        // Handshake message exactly 16384 bytes: one full record.
        let base = hello(&pad(0)).len() - 5;
        let full = hello(&pad(16 * 1024 - base));
        assert_eq!(full.len(), 5 + 16 * 1024);
        assert!(matches!(parse(&full), Parse::Found(_)));
        assert!(matches!(parse_within(&full, 16 * 1024), Parse::Found(_)));
        assert_eq!(
            parse_within(&full, 16 * 1024 - 1),
            Parse::Invalid(Invalid::TooLarge)
        );
        // 40 KiB of handshake across three records.
        let big = hello(&pad(40 * 1024 - base));
        let framed = reframe(&big, 16 * 1024);
        assert_eq!(parse(&framed), Parse::Invalid(Invalid::TooLarge));
        match parse_within(&framed, 64 * 1024) {
            Parse::Found(h) => {
                assert_eq!(h.sni.unwrap().as_bytes(), b"a.example.com");
                assert_eq!(h.len, framed.len());
            }
            other => panic!("{other:?}"),
        }
        for n in (0..framed.len()).step_by(997) {
            assert_eq!(parse_within(&framed[..n], 64 * 1024), Parse::NeedMore);
        }
    }

    #[test]
    fn synthetic() {
        let h = hello(&sni_ext(&["example.com"]));
        match parse(&h) {
            Parse::Found(x) => {
                assert_eq!(x.sni.unwrap().as_bytes(), b"example.com");
                assert_eq!(x.len, h.len());
                assert!(!x.ech);
            }
            other => panic!("{other:?}"),
        }
        for i in 0..h.len() {
            assert_eq!(parse(&h[..i]), Parse::NeedMore, "prefix {i}");
        }
        let two = hello(&sni_ext(&["a.com", "b.com"]));
        assert_eq!(parse(&two), Parse::Invalid(Invalid::TwoNames));
        let mut dup = sni_ext(&["a.com"]);
        dup.extend(sni_ext(&["a.com"]));
        assert_eq!(parse(&hello(&dup)), Parse::Invalid(Invalid::TwoNames));
        assert_eq!(
            parse(&hello(&[])),
            Parse::Found(Hello {
                sni: None,
                ech: false,
                len: hello(&[]).len()
            })
        );
        let mut ech = sni_ext(&["public.example"]);
        ech.extend([0xfe, 0x0d, 0, 1, 0]);
        assert!(matches!(
            parse(&hello(&ech)),
            Parse::Found(Hello { ech: true, .. })
        ));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Parse::Invalid(_)));
    }

    const FIXTURES: [(&str, &[u8], Option<&str>, bool); 6] = [
        (
            "chromium_pq",
            include_bytes!("../../tests/fixtures/clienthello/chromium_pq.bin"),
            Some("www.example.com.cn"),
            true,
        ),
        (
            "curl",
            include_bytes!("../../tests/fixtures/clienthello/curl.bin"),
            Some("www.example.com.cn"),
            false,
        ),
        (
            "openssl",
            include_bytes!("../../tests/fixtures/clienthello/openssl.bin"),
            Some("shop.example.net"),
            false,
        ),
        (
            "openssl_nosni",
            include_bytes!("../../tests/fixtures/clienthello/openssl_nosni.bin"),
            None,
            false,
        ),
        (
            "openssl_tls12",
            include_bytes!("../../tests/fixtures/clienthello/openssl_tls12.bin"),
            Some("www.example.com.cn"),
            false,
        ),
        (
            "python",
            include_bytes!("../../tests/fixtures/clienthello/python.bin"),
            Some("xn--fsqu00a.xn--fiqs8s"),
            false,
        ),
    ];

    /// SNI according to tls-parser, the independent oracle.
    fn oracle_sni(hello: &[u8]) -> Option<String> {
        use tls_parser::{
            parse_tls_extensions, parse_tls_plaintext, TlsExtension, TlsMessage,
            TlsMessageHandshake,
        };
        let (_, rec) = parse_tls_plaintext(hello).unwrap();
        let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(ch)) = &rec.msg[0] else {
            panic!("not a ClientHello")
        };
        let (_, exts) = parse_tls_extensions(ch.ext.unwrap_or(&[])).unwrap();
        exts.iter().find_map(|e| match e {
            TlsExtension::SNI(list) => Some(String::from_utf8(list[0].1.to_vec()).unwrap()),
            _ => None,
        })
    }

    #[test]
    fn real_client_hellos_every_prefix_and_reframed() {
        for (name, hello, sni, ech) in FIXTURES {
            assert_eq!(
                oracle_sni(hello).as_deref(),
                sni,
                "{name}: oracle disagrees with the manifest"
            );
            for framing in [
                hello.to_vec(),
                reframe(hello, 1),
                reframe(hello, 100),
                reframe(hello, hello.len() / 3 + 1),
            ] {
                // Every strict prefix is incomplete: never "no SNI".
                for i in 0..framing.len() {
                    assert_eq!(
                        parse(&framing[..i]),
                        Parse::NeedMore,
                        "{name}: prefix {i}/{}",
                        framing.len()
                    );
                }
                match parse(&framing) {
                    Parse::Found(h) => {
                        assert_eq!(
                            h.sni.and_then(|s| s.as_str().map(str::to_owned)).as_deref(),
                            sni,
                            "{name}"
                        );
                        assert_eq!(h.ech, ech, "{name}");
                        assert_eq!(h.len, framing.len(), "{name}");
                    }
                    other => panic!("{name}: {other:?}"),
                }
                // Bytes after the hello do not change the answer.
                let mut more = framing.clone();
                more.extend_from_slice(&[0x14, 3, 3, 0, 1, 1]);
                assert!(
                    matches!(parse(&more), Parse::Found(h) if h.len == framing.len()),
                    "{name}"
                );
            }
        }
        // The post-quantum hello is the big one.
        assert!(FIXTURES[0].1.len() > 1900);
    }

    #[test]
    fn corrupted_hellos_are_invalid_not_unnamed() {
        let hello = FIXTURES[0].1;
        // A record that is not handshake in the middle of a reframed hello.
        let mut framed = reframe(hello, 500);
        framed[505] = 23;
        assert!(matches!(parse(&framed), Parse::Invalid(_)));
        // Extensions length off by one.
        let mut bad = hello.to_vec();
        let l = bad.len();
        bad[l - 1] ^= 0xff;
        let _ = parse(&bad); // must not panic; content may or may not be valid
                             // Handshake type not ClientHello.
        let mut sh = hello.to_vec();
        sh[5] = 2;
        assert!(matches!(parse(&sh), Parse::Invalid(_)));
        // Oversized declared length.
        let mut big = hello.to_vec();
        big[6] = 0xff;
        assert!(matches!(parse(&big), Parse::Invalid(_)));
    }
}
