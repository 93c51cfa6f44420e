//! The block page (SPEC §6) and the TLS block actions.
//!
//! The default page (`config/block-page.html`) and per-reason texts
//! (`config/block-reasons.toml`) are compiled in; `[block] template` and
//! `[block] reasons` replace them. A template is parsed once into literal
//! and placeholder segments; rendering is one pass, values HTML-escaped
//! except the advice fragments and the provider links.

use std::collections::HashMap;
use std::fmt::Write as _;
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
    texts: HashMap<&'static str, Texts>,
    status: u16,
    provider_name: String,
    provider_links: String,
}

pub fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

fn escaped(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    escape(s, &mut o);
    o
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
        let mut texts = HashMap::new();
        for r in Reason::ALL {
            if let Some(t) = raw.remove(r.as_str()) {
                texts.insert(r.as_str(), t);
            }
        }
        let mut links = String::new();
        for l in &cfg.links {
            let _ = write!(
                links,
                "<a href=\"{}\">{}</a>",
                escaped(&l.url),
                escaped(&l.name)
            );
        }
        Ok(BlockPage {
            segs,
            texts,
            status: cfg.http_status,
            provider_name: cfg.provider_name.clone(),
            provider_links: links,
        })
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    fn advice(&self, tmpl: &str, input: &PageInput<'_>) -> String {
        // Fill the advice's own placeholders (escaped); the fragment itself
        // is trusted operator HTML.
        let mut out = String::with_capacity(tmpl.len() + 64);
        let mut rest = tmpl;
        while let Some(i) = rest.find("{{") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let Some(j) = after.find("}}") else {
                out.push_str(&rest[i..]);
                return out;
            };
            match after[..j].trim() {
                "registrable" => escape(input.registrable, &mut out),
                "provider_name" => escape(&self.provider_name, &mut out),
                "table_time" => escape(input.table_time, &mut out),
                _ => {}
            }
            rest = &after[j + 2..];
        }
        out.push_str(rest);
        out
    }

    /// Render the page for one blocked request.
    pub fn render(&self, input: &PageInput<'_>) -> String {
        let texts = self.texts.get(input.reason.as_str());
        let empty = String::new();
        let (tz, te, az, ae) = match texts {
            Some(t) => (&t.title_zh, &t.title_en, &t.advice_zh, &t.advice_en),
            None => (&empty, &empty, &empty, &empty),
        };
        let mut out = String::with_capacity(8192);
        for seg in &self.segs {
            match seg {
                Seg::Lit(s) => out.push_str(s),
                Seg::Var(v) => match v {
                    Var::Status => {
                        let _ = write!(out, "{}", self.status);
                    }
                    Var::Host => escape(input.host, &mut out),
                    Var::Registrable => escape(input.registrable, &mut out),
                    Var::Reason => out.push_str(input.reason.as_str()),
                    Var::TitleZh => escape(tz, &mut out),
                    Var::TitleEn => escape(te, &mut out),
                    Var::AdviceZh => out.push_str(&self.advice(az, input)),
                    Var::AdviceEn => out.push_str(&self.advice(ae, input)),
                    Var::Icp => escape(input.icp.unwrap_or("—"), &mut out),
                    Var::RequestId => escape(input.request_id, &mut out),
                    Var::Time => escape(input.time, &mut out),
                    Var::TableTime => escape(input.table_time, &mut out),
                    Var::ProviderName => escape(&self.provider_name, &mut out),
                    Var::ProviderLinks => out.push_str(&self.provider_links),
                },
            }
        }
        out
    }
}

/// Unique-per-process request IDs: a random-ish start mixed with a counter.
pub fn request_id() -> String {
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
    format!("{:016x}", x ^ (x >> 29))
}

/// A fatal TLS alert record (TLS 1.0 record version, as in a first flight):
/// level 2 (fatal), description 112 (`unrecognized_name`).
pub const TLS_ALERT_UNRECOGNIZED_NAME: [u8; 7] = [21, 3, 1, 0, 2, 2, 112];

#[cfg(test)]
mod tests {
    use super::*;

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
                assert!(page.texts.contains_key(r.as_str()), "no texts for {r}");
            }
        }
    }

    #[test]
    fn bad_templates() {
        assert!(parse_template("a {{nope}} b").is_err());
        assert!(parse_template("a {{host").is_err());
    }
}
