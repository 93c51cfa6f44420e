//! The TLS path: read the ClientHello (any number of reads and records,
//! up to `max_sniff_bytes`), decide on its SNI, then pass the connection
//! through untouched or carry out the block action (reset, alert, page).

use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;

use super::client::Client;
use super::conn::{count_early, passthrough, read_more};
use super::ctx::{record, registrable_of, ConnInfo, OwnedBlock, Shared};
use super::http;
use super::prefixed::Prefixed;
use super::upstream::Tracked;
use crate::block;
use crate::config::TlsBlock;
use crate::decision::{now_unix, Action, Decision};
use crate::hostname::Host;
use crate::metrics::Metrics;
use crate::metrics::{Proto, Sniffed};
use crate::sniff::tls;

pub(crate) async fn tls_conn(
    shared: Arc<Shared>,
    info: ConnInfo,
    mut stream: Client,
    mut buf: Vec<u8>,
    deadline: tokio::time::Instant,
    pre: Option<Tracked>,
) {
    // Up to `max_sniff_bytes` of handshake bytes, in records of any size:
    // the buffer also holds a 5-byte header per record (at most one per
    // handshake byte).
    let max_hs = shared.limits.max_sniff_bytes;
    let cap = max_hs.saturating_mul(6);
    let hello = loop {
        match tls::parse_within(&buf, max_hs) {
            tls::Parse::Found(h) => break h,
            tls::Parse::Invalid(why) => {
                // Rare: boxed, so that its state does not size this one.
                return Box::pin(bad_hello(&shared, &info, stream, buf, pre, why)).await;
            }
            tls::Parse::NeedMore => {
                if let Err(e) = read_more(&mut stream, &mut buf, deadline, cap).await {
                    count_early(&e);
                    return;
                }
            }
        }
    };
    Metrics::get().sniffed(Sniffed::Tls);
    let started = Instant::now();
    let blocked = {
        let snap = shared.table.load();
        let now = now_unix();
        let decided = |d: Decision<'_>, named: Option<(&Host<'_>, Option<&str>)>| match d.action {
            Action::Block | Action::WouldBlock => {
                let name = hello
                    .sni
                    .map(|s| String::from_utf8_lossy(s.as_bytes()).into_owned())
                    .unwrap_or_default();
                record(&shared, Proto::Tls, &d, &name, &info, started);
                (d.action == Action::Block).then(|| {
                    // The page's registrable domain, as the decision found it.
                    let registrable = match (shared.tls_block, named) {
                        (TlsBlock::Page, Some((host, apex))) => Some(
                            apex.map_or_else(|| registrable_of(host).into_owned(), str::to_owned),
                        ),
                        _ => None,
                    };
                    (name, registrable, OwnedBlock::new(&d, &snap))
                })
            }
            _ => {
                let name = hello.sni.as_ref().and_then(|s| s.as_str()).unwrap_or("");
                record(&shared, Proto::Tls, &d, name, &info, started);
                None
            }
        };
        shared
            .policy
            .decide_hello_then(&snap, &hello, shared.ech, info.dst, now, decided)
    };
    match blocked {
        Some((name, registrable, owned)) => {
            Box::pin(tls_block_owned(
                &shared,
                stream,
                buf,
                &name,
                registrable,
                owned,
            ))
            .await
        }
        None => passthrough(&shared, &info, stream, buf, pre).await,
    }
}

/// A ClientHello that cannot be read: decided by its kind (R10 for two
/// names, a refusal otherwise), or reset when the rules do not apply.
async fn bad_hello(
    shared: &Shared,
    info: &ConnInfo,
    stream: Client,
    buf: Vec<u8>,
    pre: Option<Tracked>,
    why: tls::Invalid,
) {
    Metrics::get().sniffed(Sniffed::Invalid);
    let started = Instant::now();
    match shared.policy.decide_bad_hello(&why, info.dst) {
        Some(d) if d.action == Action::WouldBlock => {
            // Shadow mode: passed through as if allowed.
            record(shared, Proto::Tls, &d, "", info, started);
            passthrough(shared, info, stream, buf, pre).await;
        }
        Some(d) => {
            record(shared, Proto::Tls, &d, "", info, started);
            tls_block(shared, stream, buf, "", &d).await;
        }
        None => {
            tracing::debug!(peer = %info.peer, why = %why, "invalid ClientHello");
            stream.reset();
        }
    }
}

async fn tls_block(shared: &Shared, stream: Client, buf: Vec<u8>, name: &str, d: &Decision<'_>) {
    // Decided without the table: the page shows the current one's time.
    let block = OwnedBlock::new(d, &shared.table.load());
    Box::pin(tls_block_owned(shared, stream, buf, name, None, block)).await
}

/// The block action for a blocked ClientHello. `registrable`: the name's
/// registrable domain for the page, if the decision found it.
async fn tls_block_owned(
    shared: &Shared,
    mut stream: Client,
    buf: Vec<u8>,
    name: &str,
    registrable: Option<String>,
    block: OwnedBlock,
) {
    match (shared.tls_block, &shared.tls_page) {
        (TlsBlock::Reset, _) => stream.reset(),
        (TlsBlock::Alert, _) => {
            let _ = stream.write_all(&block::TLS_ALERT_UNRECOGNIZED_NAME).await;
            let _ = stream.shutdown().await;
        }
        (TlsBlock::Page, Some(acceptor)) => {
            let io = Prefixed::new(buf, stream);
            let deadline = shared.limits.header_timeout();
            let tls = match tokio::time::timeout(deadline, acceptor.accept(io)).await {
                Ok(Ok(s)) => s,
                _ => return,
            };
            http::serve_block_only(shared, tls, name, registrable, block).await;
        }
        (TlsBlock::Page, None) => stream.reset(),
    }
}
