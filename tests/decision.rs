#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Rules R1–R10 of docs/rules.md against real tables loaded through the
//! real loader (the loader's own tests are in tests/table.rs).

use std::net::IpAddr;

use icpgate::decision::{Action, IpAccess, IpRanges, NameSet, Policy, Reason};
use icpgate::hostname::{self, Host};
use icpgate::snapshot::Snapshot;
use icpgate::table::{self, LoadOptions, TableError};
use proptest::prelude::*;

/// 2026-11-23T00:00:00Z, the tests' clock.
const NOW: i64 = 1_795_392_000;

const TABLE: &str = "\
domain,icp,filing,access,access_expires,ips
example.com.cn,京ICP备09051301号-1,filed,active,,
www.beta.example.com.cn,京ICP备09051301号-2,first_pending,active,,
shop.example.net,浙B2-20040180-2,filed,active,,203.0.113.7 198.51.100.0/28 2001:db8::/48
example.net,浙B2-20040180-1,filed,none,,
例子.中国,粤ICP备12345678号-3,change_pending,initial_review,2026-12-31T00:00:00Z,
xn--fsq092h.xn--55qx5d.cn,沪ICP备20231234号-1,filed,active,,
newsite.cn,,first_pending,none,,
old-portal.com,京ICP备10001234号-1,revoked,cancelled,,
moved-away.cn,苏ICP备15009876号-2,filed,cancelled,,
trial.cn,川ICP备2025001122号-1,filed,initial_review,2026-11-23T00:00:01Z,
expired.cn,川ICP备2025001122号-2,filed,initial_review,2026-11-23T00:00:00Z,
x.gov.cn,京ICP备05070602号-1,filed,active,,
site.bj.cn,京ICP备05070602号-2,filed,active,,
example.org,京ICP备1号-1,filed,none,,
www.example.org,京ICP备1号-1,filed,active,,
";

fn snap() -> Snapshot {
    table::load_bytes(TABLE.as_bytes(), "test", &LoadOptions::default())
        .unwrap()
        .snapshot
}

fn mainland() -> Policy {
    Policy {
        mainland: IpRanges::new(&[
            "203.0.113.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ]),
        ..Policy::default()
    }
}

const DST: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7)));

fn decide(p: &Policy, s: &Snapshot, host: &str) -> (Action, Reason, Option<String>) {
    let d = p.decide_raw(s, host, DST, NOW);
    (d.action, d.reason, d.matched.map(|r| r.domain().to_owned()))
}

fn reason(p: &Policy, s: &Snapshot, host: &str) -> Reason {
    decide(p, s, host).1
}

#[test]
fn r6_every_status() {
    let (s, p) = (snap(), mainland());
    assert_eq!(
        decide(&p, &s, "example.com.cn"),
        (Action::Allow, Reason::Filed, Some("example.com.cn".into()))
    );
    assert_eq!(reason(&p, &s, "newsite.cn"), Reason::FilingPending);
    assert_eq!(reason(&p, &s, "old-portal.com"), Reason::FilingRevoked);
    assert_eq!(reason(&p, &s, "moved-away.cn"), Reason::AccessCancelled);
    // R5: filed elsewhere, no access here.
    assert_eq!(reason(&p, &s, "example.net"), Reason::NoAccessRecord);
    // change_pending + initial_review before expiry: allowed.
    assert_eq!(reason(&p, &s, "例子.中国"), Reason::Filed);
    // Expiry is exclusive: allowed one second before, blocked at the instant.
    assert_eq!(decide(&p, &s, "trial.cn").0, Action::Allow);
    assert_eq!(reason(&p, &s, "expired.cn"), Reason::AccessReviewExpired);
    let later = p.decide_raw(&s, "trial.cn", DST, NOW + 1);
    assert_eq!(later.reason, Reason::AccessReviewExpired);
    // No row at all.
    assert_eq!(
        decide(&p, &s, "nobody.cn"),
        (Action::Block, Reason::Unfiled, None)
    );
}

#[test]
fn r4_subdomains_and_label_boundaries() {
    let (s, p) = (snap(), mainland());
    assert_eq!(
        decide(&p, &s, "www.example.com.cn").2.as_deref(),
        Some("example.com.cn")
    );
    assert_eq!(decide(&p, &s, "a.b.example.com.cn").1, Reason::Filed);
    assert_eq!(reason(&p, &s, "evilexample.com.cn"), Reason::Unfiled);
    assert_eq!(reason(&p, &s, "example.com.cn.evil.net"), Reason::Unfiled);
    assert_eq!(reason(&p, &s, "com.cn"), Reason::Unfiled);
    assert_eq!(reason(&p, &s, "cn"), Reason::Unfiled);
    // gov.cn, x.gov.cn and province suffixes.
    assert_eq!(reason(&p, &s, "gov.cn"), Reason::Unfiled);
    assert_eq!(reason(&p, &s, "www.x.gov.cn"), Reason::Filed);
    assert_eq!(reason(&p, &s, "bj.cn"), Reason::Unfiled);
    assert_eq!(reason(&p, &s, "www.site.bj.cn"), Reason::Filed);
    // IDN suffix 公司.cn and the 中国 TLD.
    assert_eq!(reason(&p, &s, "www.示例.公司.cn"), Reason::Filed);
    assert_eq!(reason(&p, &s, "公司.cn"), Reason::Unfiled);
    assert_eq!(reason(&p, &s, "中国"), Reason::Unfiled);
}

#[test]
fn r4_most_specific_row_wins_both_ways() {
    let (s, p) = (snap(), mainland());
    // Subdomain row blocks under an allowing apex.
    assert_eq!(
        decide(&p, &s, "www.beta.example.com.cn"),
        (
            Action::Block,
            Reason::FilingPending,
            Some("www.beta.example.com.cn".into())
        )
    );
    assert_eq!(
        decide(&p, &s, "x.www.beta.example.com.cn").1,
        Reason::FilingPending
    );
    assert_eq!(decide(&p, &s, "beta.example.com.cn").1, Reason::Filed);
    // Subdomain row allows under a blocking apex.
    assert_eq!(decide(&p, &s, "a.shop.example.net").1, Reason::Filed);
    assert_eq!(decide(&p, &s, "www.example.org").1, Reason::Filed);
    assert_eq!(decide(&p, &s, "example.org").1, Reason::NoAccessRecord);
    assert_eq!(decide(&p, &s, "api.example.org").1, Reason::NoAccessRecord);
}

#[test]
fn r8_idn_both_forms_in_table_and_query() {
    let (s, p) = (snap(), mainland());
    for q in [
        "例子.中国",
        "xn--fsqu00a.xn--fiqs8s",
        "XN--FSQU00A.XN--FIQS8S",
        "www.例子。中国",
        "例子．中国.",
        "例子｡中国:443",
    ] {
        assert_eq!(
            decide(&p, &s, q).2.as_deref(),
            Some("xn--fsqu00a.xn--fiqs8s"),
            "{q}"
        );
    }
    // The table row 示例.公司.cn was given in A-label form; query in U-label.
    assert_eq!(
        decide(&p, &s, "示例.公司.cn").2.as_deref(),
        Some("xn--fsq092h.xn--55qx5d.cn")
    );
    // Table rows in U-label and A-label form are the same row.
    let dup = "domain,icp,filing,access,access_expires,ips\n例子.中国,粤ICP备1号-1,filed,active,,\nxn--fsqu00a.xn--fiqs8s,粤ICP备1号-1,filed,active,,\n";
    match table::load_bytes(dup.as_bytes(), "t", &LoadOptions::default()) {
        Err(TableError::Rejected { errors, .. }) => {
            assert_eq!(errors[0].line, 3);
            assert!(
                errors[0].message.contains("first at line 2"),
                "{}",
                errors[0].message
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn r8_invalid_names_never_allowed() {
    let (s, p) = (snap(), mainland());
    let long = format!("{}.example.com.cn", "a".repeat(64));
    for bad in [
        "",
        "exa mple.com.cn",
        "example..com.cn",
        long.as_str(),
        "example.com.cn:http",
        "ex\u{0}ample.com.cn",
        "*.example.com.cn",
    ] {
        assert_eq!(decide(&p, &s, bad).0, Action::Block, "{bad:?}");
        assert_eq!(reason(&p, &s, bad), Reason::Unfiled, "{bad:?}");
    }
}

#[test]
fn r2_outside_mainland_passes() {
    let (s, p) = (snap(), mainland());
    let hk: IpAddr = "192.0.2.1".parse().unwrap();
    for host in ["nobody.cn", "example.net", "203.0.113.9", "bad host"] {
        let d = p.decide_raw(&s, host, Some(hk), NOW);
        assert_eq!(
            (d.action, d.reason),
            (Action::Pass, Reason::OutsideMainland),
            "{host}"
        );
    }
    assert_eq!(p.decide_no_name(Some(hk)).action, Action::Pass);
    // IPv4-mapped IPv6 destinations are judged as IPv4.
    let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
    assert_eq!(
        p.decide_raw(&s, "nobody.cn", Some(mapped), NOW).reason,
        Reason::Unfiled
    );
    let v6: IpAddr = "2001:db8::5".parse().unwrap();
    assert_eq!(
        p.decide_raw(&s, "nobody.cn", Some(v6), NOW).reason,
        Reason::Unfiled
    );
    let v6_out: IpAddr = "2001:db9::5".parse().unwrap();
    assert_eq!(
        p.decide_raw(&s, "nobody.cn", Some(v6_out), NOW).action,
        Action::Pass
    );
}

#[test]
fn r1_decision_is_per_domain_not_per_ip() {
    // Two names on the same destination IP get their own decisions.
    let (s, p) = (snap(), mainland());
    assert_eq!(decide(&p, &s, "example.com.cn").0, Action::Allow);
    assert_eq!(decide(&p, &s, "nobody.cn").0, Action::Block);
    assert_eq!(decide(&p, &s, "example.com.cn").0, Action::Allow);
}

#[test]
fn r3_ip_literals_and_policy() {
    let (s, mut p) = (snap(), mainland());
    for host in [
        "203.0.113.5",
        "[2001:db8::1]",
        "[2001:db8::1]:8443",
        "203.0.113.5:80",
    ] {
        assert_eq!(decide(&p, &s, host).0, Action::Allow, "{host}");
        assert_eq!(reason(&p, &s, host), Reason::IpAccess);
    }
    assert_eq!(p.decide_no_name(DST).action, Action::Allow);
    p.ip_access = IpAccess::Block;
    assert_eq!(decide(&p, &s, "203.0.113.5").0, Action::Block);
    assert_eq!(reason(&p, &s, "203.0.113.5"), Reason::IpAccess);
    assert_eq!(p.decide_no_name(DST).action, Action::Block);
}

#[test]
fn r7_strict_ip() {
    let (s, mut p) = (snap(), mainland());
    let other: IpAddr = "203.0.113.99".parse().unwrap();
    // Off by default.
    assert_eq!(
        p.decide_raw(&s, "shop.example.net", Some(other), NOW)
            .action,
        Action::Allow
    );
    p.strict_ip = true;
    assert_eq!(
        p.decide_raw(&s, "shop.example.net", Some(other), NOW)
            .reason,
        Reason::IpNotRegistered
    );
    assert_eq!(
        p.decide_raw(&s, "shop.example.net", DST, NOW).action,
        Action::Allow
    );
    let in_cidr: IpAddr = "198.51.100.15".parse().unwrap();
    let mut wide = p.clone();
    wide.mainland = IpRanges::everything();
    assert_eq!(
        wide.decide_raw(&s, "shop.example.net", Some(in_cidr), NOW)
            .action,
        Action::Allow
    );
    let v6: IpAddr = "2001:db8:0:1::1".parse().unwrap();
    assert_eq!(
        p.decide_raw(&s, "shop.example.net", Some(v6), NOW).action,
        Action::Allow
    );
    // Unknown destination with strict IP: fail closed.
    assert_eq!(
        p.decide_raw(&s, "shop.example.net", None, NOW).reason,
        Reason::IpNotRegistered
    );
    // A row without ips is not restricted.
    assert_eq!(
        p.decide_raw(&s, "example.com.cn", Some(other), NOW).action,
        Action::Allow
    );
}

#[test]
fn r9_overrides() {
    let (s, mut p) = (snap(), mainland());
    p.deny = NameSet::new(&["bad.example.com.cn"]).unwrap();
    p.allow = NameSet::new(&["provider-cdn.example", "nobody.cn", "bad.example.com.cn"]).unwrap();
    // Deny beats the table and the allow list, and covers subdomains.
    assert_eq!(reason(&p, &s, "bad.example.com.cn"), Reason::Denylisted);
    assert_eq!(reason(&p, &s, "x.bad.example.com.cn"), Reason::Denylisted);
    assert_eq!(reason(&p, &s, "notbad.example.com.cn"), Reason::Filed);
    // Allow beats the table (even a blocking row) and covers subdomains.
    assert_eq!(decide(&p, &s, "img.provider-cdn.example").0, Action::Allow);
    assert_eq!(
        reason(&p, &s, "img.provider-cdn.example"),
        Reason::Allowlisted
    );
    assert_eq!(reason(&p, &s, "nobody.cn"), Reason::Allowlisted);
    assert_eq!(reason(&p, &s, "evilprovider-cdn.example"), Reason::Unfiled);
    // A public suffix or an IP is not a valid override.
    assert!(NameSet::new(&["com.cn"]).is_err());
    assert!(NameSet::new(&["203.0.113.1"]).is_err());
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,10}",
        "[A-Za-z0-9-]{1,12}",
        Just("例子".to_string()),
        Just("公司".to_string()),
        Just("中国".to_string()),
        Just("com".to_string()),
        Just("cn".to_string()),
        Just("gov".to_string()),
        Just("bj".to_string()),
    ]
}

fn name() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(label(), 1..6),
        prop_oneof![Just("."), Just("。"), Just("．")],
    )
        .prop_map(|(labels, dot)| labels.join(dot))
}

proptest! {
    #[test]
    fn canonicalization_is_idempotent(n in name()) {
        if let Ok(Host::Name(c)) = hostname::canonicalize(&n) {
            let again = hostname::canonicalize(&c).unwrap();
            prop_assert_eq!(Host::Name(c.clone()), again);
            prop_assert!(c.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()));
        }
    }

    #[test]
    fn walk_never_matches_a_public_suffix(n in name()) {
        if let Ok(Host::Name(c)) = hostname::canonicalize(&n) {
            let mut probed = vec![];
            icpgate::snapshot::walk(&c, |cand| { probed.push(cand.to_owned()); None::<()> });
            for p in &probed {
                // every candidate is at or below the registrable domain
                prop_assert!(hostname::registrable_domain(p).is_some(), "{} probed", p);
                prop_assert!(p.len() >= hostname::registrable_domain(&c).unwrap().len());
                // whole labels only
                let dotted = format!(".{}", p);
                prop_assert!(*p == *c || c.ends_with(&dotted));
            }
        }
    }
}
