//! The block page (docs/interfaces.md, block page) and the TLS block actions.
//!
//! The default page (`config/block-page.html`) and per-reason texts
//! (`config/block-reasons.toml`) are compiled in; `[block] template` and
//! `[block] reasons` replace them. A template is parsed once into literal
//! and placeholder segments; rendering is one pass, values HTML-escaped
//! except the advice fragments and the provider links.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use crate::config::BlockConfig;
use crate::decision::Reason;

const DEFAULT_TEMPLATE: &str = include_str!("../config/block-page.html");
const DEFAULT_REASONS: &str = include_str!("../config/block-reasons.toml");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Status,
    Host,
    Registrable,
    Reason,
    TitleZh,
    TitleEn,
    AdviceZh,
    AdviceEn,
    Icp,
    RequestId,
    Time,
    TableTime,
    ProviderName,
    ProviderLinks,
}

impl Var {
    fn parse(s: &str) -> Option<Var> {
        Some(match s {
            "status" => Var::Status,
            "host" => Var::Host,
            "registrable" => Var::Registrable,
            "reason" => Var::Reason,
            "title_zh" => Var::TitleZh,
            "title_en" => Var::TitleEn,
            "advice_zh" => Var::AdviceZh,
            "advice_en" => Var::AdviceEn,
            "icp" => Var::Icp,
            "request_id" => Var::RequestId,
            "time" => Var::Time,
            "table_time" => Var::TableTime,
            "provider_name" => Var::ProviderName,
            "provider_links" => Var::ProviderLinks,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
enum Seg {
    Lit(String),
    Var(Var),
}

fn parse_template(t: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        segs.push(Seg::Lit(rest[..i].to_owned()));
        let after = &rest[i + 2..];
        let j = after.find("}}").ok_or("unclosed {{ in template")?;
        let name = after[..j].trim();
        segs.push(Seg::Var(
            Var::parse(name).ok_or_else(|| format!("unknown placeholder {{{{{name}}}}}"))?,
        ));
        rest = &after[j + 2..];
    }
    segs.push(Seg::Lit(rest.to_owned()));
    Ok(segs)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Texts {
    title_zh: String,
    title_en: String,
    advice_zh: String,
    advice_en: String,
}

/// Everything that varies per blocked request.
#[derive(Debug, Clone, Copy)]
pub struct PageInput<'a> {
    pub host: &'a str,
    pub registrable: &'a str,
    pub reason: Reason,
    pub icp: Option<&'a str>,
    pub request_id: &'a str,
    pub time: &'a str,
    pub table_time: &'a str,
}

/// The compiled block page.
pub struct BlockPage {
    /// By `Reason as usize`: the template with everything but the
    /// per-request values already filled in.
    pages: Vec<Compiled>,
    status: u16,
}

/// Whether `b` is one of the five bytes HTML escaping replaces.
const fn special(b: u8) -> bool {
    matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'')
}

/// Does `s` hold a byte [`special`] replaces? Eight bytes at a time: for
/// each special byte c, `x ^ c…c` has a zero byte where c is, and
/// `(y - 0x01…) & !y & 0x80…` is non-zero exactly when `y` has a zero byte.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        let x = u64::from_le_bytes(a);
        let zero = |b: u8| {
            let y = x ^ (ONES * u64::from(b));
            y.wrapping_sub(ONES) & !y & HIGH
        };
        if zero(b'&') | zero(b'<') | zero(b'>') | zero(b'"') | zero(b'\'') != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| special(b))
}

/// HTML-escape `s` onto `out` (text without markup characters is copied
/// in one go).
pub fn escape(s: &str, out: &mut Vec<u8>) {
    if !needs_escape(s.as_bytes()) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    for b in s.bytes() {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            b'\'' => out.extend_from_slice(b"&#39;"),
            b => out.push(b),
        }
    }
}

fn escaped(s: &str) -> String {
    let mut o = Vec::with_capacity(s.len());
    escape(s, &mut o);
    String::from_utf8(o).unwrap_or_default()
}

/// `s` escaped, borrowed when there is nothing to escape (the usual case:
/// host names, times, IDs), so a page costs no allocation for it.
fn escaped_cow(s: &str) -> Cow<'_, str> {
    if needs_escape(s.as_bytes()) {
        Cow::Owned(escaped(s))
    } else {
        Cow::Borrowed(s)
    }
}

/// A reason's advice fragment, split at its placeholders once.
#[derive(Debug, Clone)]
enum AdviceSeg {
    Lit(String),
    Registrable,
    ProviderName,
    TableTime,
}

fn parse_advice(tmpl: &str) -> Vec<AdviceSeg> {
    let mut segs = Vec::new();
    let mut rest = tmpl;
    while let Some(i) = rest.find("{{") {
        segs.push(AdviceSeg::Lit(rest[..i].to_owned()));
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            segs.push(AdviceSeg::Lit(rest[i..].to_owned()));
            return segs;
        };
        match after[..j].trim() {
            "registrable" => segs.push(AdviceSeg::Registrable),
            "provider_name" => segs.push(AdviceSeg::ProviderName),
            "table_time" => segs.push(AdviceSeg::TableTime),
            _ => {}
        }
        rest = &after[j + 2..];
    }
    segs.push(AdviceSeg::Lit(rest.to_owned()));
    segs
}

/// The values that differ between two pages of the same reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Host,
    Registrable,
    Icp,
    RequestId,
    Time,
    TableTime,
}
const SLOTS: usize = 6;

#[derive(Debug, Clone)]
enum Piece {
    Lit(Box<str>),
    Val(Slot),
}

/// One reason's page: literal runs (merged at compile time) between the
/// per-request values, plus what its length is made of.
#[derive(Debug, Default)]
struct Compiled {
    pieces: Vec<Piece>,
    lit_len: usize,
    /// How often each [`Slot`] occurs.
    uses: [usize; SLOTS],
}

impl Compiled {
    fn lit(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        self.lit_len += s.len();
        if let Some(Piece::Lit(last)) = self.pieces.last_mut() {
            let mut joined = String::with_capacity(last.len() + s.len());
            joined.push_str(last);
            joined.push_str(s);
            *last = joined.into_boxed_str();
        } else {
            self.pieces.push(Piece::Lit(s.into()));
        }
    }

    fn val(&mut self, v: Slot) {
        self.uses[v as usize] += 1;
        self.pieces.push(Piece::Val(v));
    }

    fn advice(&mut self, segs: &[AdviceSeg], provider_name_html: &str) {
        // The fragment is trusted operator HTML; its placeholders are escaped.
        for seg in segs {
            match seg {
                AdviceSeg::Lit(s) => self.lit(s),
                AdviceSeg::Registrable => self.val(Slot::Registrable),
                AdviceSeg::ProviderName => self.lit(provider_name_html),
                AdviceSeg::TableTime => self.val(Slot::TableTime),
            }
        }
    }
}

/// A page ready to be written: its compiled pieces and the request's
/// values, escaped. Its length is known before a byte is written, so the
/// HTTP head (with `Content-Length`) and the body go into one buffer in one
/// pass.
pub struct Filled<'a> {
    page: &'a Compiled,
    vals: [Cow<'a, str>; SLOTS],
}

impl Filled<'_> {
    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.page.lit_len
            + self
                .page
                .uses
                .iter()
                .zip(&self.vals)
                .map(|(n, v)| n * v.len())
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append the body to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.len());
        for p in &self.page.pieces {
            let s: &str = match p {
                Piece::Lit(s) => s,
                Piece::Val(v) => &self.vals[*v as usize],
            };
            out.extend_from_slice(s.as_bytes());
        }
    }
}

impl BlockPage {
    pub fn new(cfg: &BlockConfig) -> Result<BlockPage, String> {
        let template = match &cfg.template {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("[block] template {}: {e}", p.display()))?,
            None => DEFAULT_TEMPLATE.to_owned(),
        };
        let reasons = match &cfg.reasons {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("[block] reasons {}: {e}", p.display()))?,
            None => DEFAULT_REASONS.to_owned(),
        };
        let segs = parse_template(&template).map_err(|e| format!("[block] template: {e}"))?;
        let mut raw: HashMap<String, Texts> =
            toml::from_str(&reasons).map_err(|e| format!("[block] reasons: {e}"))?;
        let mut links = String::new();
        for l in &cfg.links {
            let _ = std::fmt::Write::write_fmt(
                &mut links,
                format_args!("<a href=\"{}\">{}</a>", escaped(&l.url), escaped(&l.name)),
            );
        }
        let provider_name_html = escaped(&cfg.provider_name);
        let mut status = Vec::new();
        push_decimal(&mut status, u64::from(cfg.http_status));
        let status_text = String::from_utf8(status).unwrap_or_default();

        let mut pages: Vec<Compiled> = Vec::new();
        for r in Reason::ALL {
            let i = r as usize;
            if pages.len() <= i {
                pages.resize_with(i + 1, Compiled::default);
            }
            let t = raw.remove(r.as_str());
            let (title_zh, title_en, advice_zh, advice_en) = match &t {
                Some(t) => (
                    escaped(&t.title_zh),
                    escaped(&t.title_en),
                    parse_advice(&t.advice_zh),
                    parse_advice(&t.advice_en),
                ),
                None => Default::default(),
            };
            let page = &mut pages[i];
            for seg in &segs {
                match seg {
                    Seg::Lit(s) => page.lit(s),
                    Seg::Var(v) => match v {
                        Var::Status => page.lit(&status_text),
                        Var::Host => page.val(Slot::Host),
                        Var::Registrable => page.val(Slot::Registrable),
                        Var::Reason => page.lit(r.as_str()),
                        Var::TitleZh => page.lit(&title_zh),
                        Var::TitleEn => page.lit(&title_en),
                        Var::AdviceZh => page.advice(&advice_zh, &provider_name_html),
                        Var::AdviceEn => page.advice(&advice_en, &provider_name_html),
                        Var::Icp => page.val(Slot::Icp),
                        Var::RequestId => page.val(Slot::RequestId),
                        Var::Time => page.val(Slot::Time),
                        Var::TableTime => page.val(Slot::TableTime),
                        Var::ProviderName => page.lit(&provider_name_html),
                        Var::ProviderLinks => page.lit(&links),
                    },
                }
            }
        }
        Ok(BlockPage {
            pages,
            status: cfg.http_status,
        })
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// The page for one blocked request, ready to be measured and written.
    pub fn fill<'a>(&'a self, input: &PageInput<'a>) -> Filled<'a> {
        static NONE: Compiled = Compiled {
            pieces: Vec::new(),
            lit_len: 0,
            uses: [0; SLOTS],
        };
        Filled {
            page: self.pages.get(input.reason as usize).unwrap_or(&NONE),
            vals: [
                escaped_cow(input.host),
                escaped_cow(input.registrable),
                escaped_cow(input.icp.unwrap_or("—")),
                escaped_cow(input.request_id),
                escaped_cow(input.time),
                escaped_cow(input.table_time),
            ],
        }
    }

    /// Render the page for one blocked request.
    pub fn render(&self, input: &PageInput<'_>) -> String {
        let mut out = Vec::new();
        self.fill(input).write_to(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A request ID: 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; 16]);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // SAFETY: the array is private and only ever filled from
        // `b"0123456789abcdef"` (see `request_id`): ASCII, hence UTF-8. (The
        // checked conversion cost ~150 instructions, twice per block page.)
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

/// Unique-per-process request IDs: a random-ish start mixed with a counter
/// (no allocation, no formatting machinery: one per block page).
pub fn request_id() -> RequestId {
    static SEED: AtomicU64 = AtomicU64::new(0);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut seed = SEED.load(Ordering::Relaxed);
    if seed == 0 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(32);
        seed = t | 1;
        SEED.store(seed, Ordering::Relaxed);
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut x = seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    x = (x ^ (x >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    let mut id = [0u8; 16];
    for (i, d) in id.iter_mut().enumerate() {
        *d = b"0123456789abcdef"[((x >> (60 - 4 * i)) & 0xf) as usize];
    }
    RequestId(id)
}

/// Append `n` in decimal (what `write!(out, "{n}")` does, without the
/// formatting machinery).
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A fatal TLS alert record (TLS 1.0 record version, as in a first flight):
/// level 2 (fatal), description 112 (`unrecognized_name`).
pub const TLS_ALERT_UNRECOGNIZED_NAME: [u8; 7] = [21, 3, 1, 0, 2, 2, 112];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_16_hex_digits_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..1000)
            .map(|_| request_id().as_str().to_owned())
            .collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 16, "{id}");
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
    }

    #[test]
    fn decimal_as_format_writes_it() {
        for n in [0u64, 7, 10, 403, 6612, 99_999, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn needs_escape_finds_every_special_at_every_position() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..40 {
            for _ in 0..200 {
                let mut v: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed >> 56) as u8
                    })
                    .collect();
                assert_eq!(needs_escape(&v), v.iter().any(|&b| special(b)), "{v:?}");
                // Neighbours of the specials (and 0x80+) never count.
                for b in v.iter_mut() {
                    if special(*b) {
                        *b = b'%';
                    }
                }
                assert!(!needs_escape(&v), "{v:?}");
                for i in 0..v.len() {
                    for c in *b"&<>\"'" {
                        let keep = v[i];
                        v[i] = c;
                        assert!(needs_escape(&v), "{c} at {i} of {len}");
                        v[i] = keep;
                    }
                }
            }
        }
    }

    #[test]
    fn escape_only_touches_the_five_specials() {
        let mut out = Vec::new();
        escape("a<b>&\"c'd é", &mut out);
        assert_eq!(out, "a&lt;b&gt;&amp;&quot;c&#39;d é".as_bytes());
        out.clear();
        escape("www.example.com.cn", &mut out);
        assert_eq!(out, b"www.example.com.cn");
    }

    /// The page by plain text substitution on the template: an oracle for
    /// the compiled pieces and for `len`.
    fn by_replace(page_cfg: &BlockConfig, r: Reason, i: &PageInput<'_>) -> String {
        let texts: HashMap<String, Texts> = toml::from_str(DEFAULT_REASONS).unwrap();
        let e = escaped;
        let advice = |a: &str| {
            a.replace("{{registrable}}", &e(i.registrable))
                .replace("{{provider_name}}", &e(&page_cfg.provider_name))
                .replace("{{table_time}}", &e(i.table_time))
        };
        let t = texts.get(r.as_str());
        let pick = |f: fn(&Texts) -> &String| t.map(|t| f(t).clone()).unwrap_or_default();
        DEFAULT_TEMPLATE
            .replace("{{advice_zh}}", &advice(&pick(|t| &t.advice_zh)))
            .replace("{{advice_en}}", &advice(&pick(|t| &t.advice_en)))
            .replace("{{title_zh}}", &e(&pick(|t| &t.title_zh)))
            .replace("{{title_en}}", &e(&pick(|t| &t.title_en)))
            .replace("{{status}}", &page_cfg.http_status.to_string())
            .replace("{{host}}", &e(i.host))
            .replace("{{registrable}}", &e(i.registrable))
            .replace("{{reason}}", r.as_str())
            .replace("{{icp}}", &e(i.icp.unwrap_or("—")))
            .replace("{{request_id}}", &e(i.request_id))
            .replace("{{time}}", &e(i.time))
            .replace("{{table_time}}", &e(i.table_time))
            .replace("{{provider_name}}", &e(&page_cfg.provider_name))
            .replace("{{provider_links}}", "")
    }

    #[test]
    fn default_page_renders_every_reason_as_the_template_says() {
        let cfg = BlockConfig {
            provider_name: "A&B \"Cloud\"".into(),
            http_status: 451,
            ..Default::default()
        };
        let page = BlockPage::new(&cfg).unwrap();
        let texts: HashMap<String, Texts> = toml::from_str(DEFAULT_REASONS).unwrap();
        let inputs = [
            ("<script>x.cn", "x.cn", None, "—"),
            (
                "www.example.com.cn",
                "example.com.cn",
                Some("京ICP备12345678号-1"),
                "2026-11-22T00:00:00Z",
            ),
            ("a'b\"c&d", "a'b\"c&d", Some("<i>x"), "—"),
            ("", "", Some(""), ""),
        ];
        for r in Reason::ALL {
            for (host, registrable, icp, table_time) in inputs {
                let input = PageInput {
                    host,
                    registrable,
                    reason: r,
                    icp,
                    request_id: "0123456789abcdef",
                    time: "2026-11-23T00:00:00Z",
                    table_time,
                };
                let html = page.render(&input);
                assert_eq!(html, by_replace(&cfg, r, &input), "{r} {host:?}");
                assert_eq!(page.fill(&input).len(), html.len(), "{r} {host:?}");
                assert!(!html.contains("{{"), "{r}");
                assert!(!html.contains("<script>x.cn") && !html.contains("<i>x"));
                assert!(html.contains(r.as_str()));
            }
            if !matches!(
                r,
                Reason::Filed | Reason::Allowlisted | Reason::OutsideMainland
            ) {
                assert!(texts.contains_key(r.as_str()), "no texts for {r}");
            }
        }
    }

    #[test]
    fn bad_templates() {
        assert!(parse_template("a {{nope}} b").is_err());
        assert!(parse_template("a {{host").is_err());
    }
}
