//! The block page (SPEC §6) and the TLS block actions.
//!
//! The default page (`config/block-page.html`) and per-reason texts
//! (`config/block-reasons.toml`) are compiled in; `[block] template` and
//! `[block] reasons` replace them. A template is parsed once into literal
//! and placeholder segments; rendering is one pass, values HTML-escaped
//! except the advice fragments and the provider links.

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
    segs: Vec<Seg>,
    /// By `Reason as usize`.
    texts: Vec<Option<Compiled>>,
    status: u16,
    provider_name_html: String,
    provider_links: String,
}

/// HTML-escape `s` onto `out` (text without markup characters is copied
/// in one go).
pub fn escape(s: &str, out: &mut Vec<u8>) {
    let special = |b: u8| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'');
    // A non-short-circuiting scan: it vectorizes, and almost every value
    // (host names, times) has nothing to escape.
    if !s.bytes().fold(false, |any, b| any | special(b)) {
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

/// One reason's texts, ready to render (titles already escaped).
struct Compiled {
    title_zh: String,
    title_en: String,
    advice_zh: Vec<AdviceSeg>,
    advice_en: Vec<AdviceSeg>,
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
        let mut texts: Vec<Option<Compiled>> = Vec::new();
        for r in Reason::ALL {
            let i = r as usize;
            if texts.len() <= i {
                texts.resize_with(i + 1, || None);
            }
            texts[i] = raw.remove(r.as_str()).map(|t| Compiled {
                advice_zh: parse_advice(&t.advice_zh),
                advice_en: parse_advice(&t.advice_en),
                title_zh: escaped(&t.title_zh),
                title_en: escaped(&t.title_en),
            });
        }
        let mut links = String::new();
        for l in &cfg.links {
            let _ = std::fmt::Write::write_fmt(
                &mut links,
                format_args!("<a href=\"{}\">{}</a>", escaped(&l.url), escaped(&l.name)),
            );
        }
        Ok(BlockPage {
            segs,
            texts,
            status: cfg.http_status,
            provider_name_html: escaped(&cfg.provider_name),
            provider_links: links,
        })
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    fn advice(&self, segs: &[AdviceSeg], input: &PageInput<'_>, out: &mut Vec<u8>) {
        // The fragment is trusted operator HTML; its placeholders are escaped.
        for seg in segs {
            match seg {
                AdviceSeg::Lit(s) => out.extend_from_slice(s.as_bytes()),
                AdviceSeg::Registrable => escape(input.registrable, out),
                AdviceSeg::ProviderName => {
                    out.extend_from_slice(self.provider_name_html.as_bytes())
                }
                AdviceSeg::TableTime => escape(input.table_time, out),
            }
        }
    }

    /// Render the page for one blocked request.
    pub fn render(&self, input: &PageInput<'_>) -> String {
        let mut out = Vec::with_capacity(8192);
        self.render_into(input, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Render the page onto `out` (one pass over the compiled segments).
    pub fn render_into(&self, input: &PageInput<'_>, out: &mut Vec<u8>) {
        let texts = self
            .texts
            .get(input.reason as usize)
            .and_then(Option::as_ref);
        for seg in &self.segs {
            match seg {
                Seg::Lit(s) => out.extend_from_slice(s.as_bytes()),
                Seg::Var(v) => match v {
                    Var::Status => push_decimal(out, u64::from(self.status)),
                    Var::Host => escape(input.host, out),
                    Var::Registrable => escape(input.registrable, out),
                    Var::Reason => out.extend_from_slice(input.reason.as_str().as_bytes()),
                    Var::TitleZh => {
                        out.extend_from_slice(texts.map_or("", |t| &t.title_zh).as_bytes())
                    }
                    Var::TitleEn => {
                        out.extend_from_slice(texts.map_or("", |t| &t.title_en).as_bytes())
                    }
                    Var::AdviceZh => self.advice(texts.map_or(&[], |t| &t.advice_zh), input, out),
                    Var::AdviceEn => self.advice(texts.map_or(&[], |t| &t.advice_en), input, out),
                    Var::Icp => escape(input.icp.unwrap_or("—"), out),
                    Var::RequestId => escape(input.request_id, out),
                    Var::Time => escape(input.time, out),
                    Var::TableTime => escape(input.table_time, out),
                    Var::ProviderName => out.extend_from_slice(self.provider_name_html.as_bytes()),
                    Var::ProviderLinks => out.extend_from_slice(self.provider_links.as_bytes()),
                },
            }
        }
    }
}

/// A request ID: 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; 16]);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Hex digits only: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("")
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
    fn escape_only_touches_the_five_specials() {
        let mut out = Vec::new();
        escape("a<b>&\"c'd é", &mut out);
        assert_eq!(out, "a&lt;b&gt;&amp;&quot;c&#39;d é".as_bytes());
        out.clear();
        escape("www.example.com.cn", &mut out);
        assert_eq!(out, b"www.example.com.cn");
    }

    #[test]
    fn default_page_renders_every_reason() {
        let page = BlockPage::new(&BlockConfig::default()).unwrap();
        for r in Reason::ALL {
            let html = page.render(&PageInput {
                host: "<script>x.cn",
                registrable: "x.cn",
                reason: r,
                icp: None,
                request_id: "abc",
                time: "2026-11-23T00:00:00Z",
                table_time: "2026-11-22T00:00:00Z",
            });
            assert!(!html.contains("{{"), "{r}");
            assert!(!html.contains("<script>x.cn"));
            assert!(html.contains(r.as_str()));
            if !matches!(
                r,
                Reason::Filed | Reason::Allowlisted | Reason::OutsideMainland
            ) {
                assert!(
                    page.texts.get(r as usize).is_some_and(Option::is_some),
                    "no texts for {r}"
                );
            }
        }
    }

    #[test]
    fn bad_templates() {
        assert!(parse_template("a {{nope}} b").is_err());
        assert!(parse_template("a {{host").is_err());
    }
}
