//! `icpgate run`: load the config and the first table (no table, no
//! serving), bind every listener, then serve until SIGTERM/SIGINT, and drain.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::admin::Admin;
use crate::block::BlockPage;
use crate::config::{Config, ListenerConfig, TlsBlock, Transparent};
use crate::logging::{self, BlockLog};
use crate::metrics::Metrics;
use crate::proxy::{self, ListenerCtx, Shared};
use crate::reload::{self, Reloader};
use crate::snapshot::TableHolder;
use crate::top::TopBlocked;

/// Serve until shut down; returns the process exit code.
pub fn main(config: &Path) -> i32 {
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("icpgate run: {e}");
            return 2;
        }
    };
    logging::init(&cfg.log.level, cfg.log.format == "json");
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("icpgate run: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(serve(cfg))
}

/// Bind a listener socket (v6 sockets are v6-only so `0.0.0.0:P` and
/// `[::]:P` can both be listed; TPROXY listeners get IP_TRANSPARENT).
pub fn bind(cfg: &ListenerConfig) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let addr = cfg.addr;
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    if cfg.upstream.is_none() && cfg.transparent == Transparent::Tproxy {
        if addr.is_ipv6() {
            set_ipv6_transparent(&sock)?;
        } else {
            sock.set_ip_transparent(true)?;
        }
    }
    sock.set_nonblocking(true)?;
    // Accepted sockets inherit TCP_NODELAY on Linux: one setsockopt here
    // instead of one per connection.
    sock.set_nodelay(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    TcpListener::from_std(sock.into())
}

fn set_ipv6_transparent(sock: &socket2::Socket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const IPV6_TRANSPARENT: libc::c_int = 75;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads an int we own for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_IPV6,
            IPV6_TRANSPARENT,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn tls_page_acceptor(cfg: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    if cfg.block.tls != TlsBlock::Page {
        return Ok(None);
    }
    let server = match (&cfg.block.cert, &cfg.block.key) {
        (Some(cert), Some(key)) => {
            let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
                std::fs::File::open(cert)
                    .map_err(|e| format!("[block] cert {}: {e}", cert.display()))?,
            ))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("[block] cert {}: {e}", cert.display()))?;
            let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
                std::fs::File::open(key)
                    .map_err(|e| format!("[block] key {}: {e}", key.display()))?,
            ))
            .map_err(|e| format!("[block] key {}: {e}", key.display()))?
            .ok_or_else(|| format!("[block] key {}: no private key found", key.display()))?;
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("[block] cert/key: {e}"))?
        }
        _ => {
            tracing::warn!("[block] tls = \"page\" without cert/key: using a generated self-signed certificate");
            crate::demo::self_signed(&["icpgate-block.invalid"])?
        }
    };
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

async fn serve(cfg: Config) -> i32 {
    let metrics = Metrics::get();
    let policy = match cfg.policy() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("{e}");
            return 2;
        }
    };
    if cfg.regions.mainland.is_empty() {
        tracing::warn!("[regions] mainland is empty: every destination is enforced");
    }
    let page = match BlockPage::new(&cfg.block) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("{e}");
            return 2;
        }
    };
    let tls_page = match tls_page_acceptor(&cfg) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("{e}");
            return 2;
        }
    };
    // The first table: without it, no serving.
    let (snapshot, etag) = match reload::initial(&cfg.table).await {
        Ok(x) => x,
        Err(e) => {
            tracing::error!("cannot start: no usable filing table: {e}");
            eprintln!("icpgate run: cannot start: no usable filing table: {e}");
            return 1;
        }
    };
    reload::publish_metrics(&snapshot);
    tracing::info!(entries = snapshot.len(), version = %snapshot.meta.version, source = %snapshot.meta.source, "table loaded");
    let holder = Arc::new(TableHolder::new(snapshot));
    let reloader = Arc::new(Reloader::new(cfg.table.clone(), holder.clone(), etag));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        table: holder.clone(),
        policy,
        page,
        limits: cfg.limits.clone(),
        tls_block: cfg.block.tls,
        ech: cfg.policy.ech,
        tls_page,
        metrics,
        top: TopBlocked::new(10_000),
        log: BlockLog::new(
            cfg.log.blocks,
            cfg.log.blocks_level.parse().unwrap_or(tracing::Level::INFO),
            cfg.log.blocks_per_sec,
        ),
        shutdown: shutdown_rx.clone(),
    });

    if let Some(origin) = cfg.demo.origin {
        if let Err(e) = crate::demo::start(origin, cfg.demo.origin_tls).await {
            tracing::error!("{e}");
            return 1;
        }
        tracing::info!(%origin, tls = ?cfg.demo.origin_tls, "demo origin started");
    }

    // Bind everything before serving anything.
    let mut bound = Vec::new();
    for l in &cfg.listeners {
        match bind(l) {
            Ok(listener) => bound.push((l.clone(), listener)),
            Err(e) => {
                tracing::error!(addr = %l.addr, "cannot listen: {e}");
                eprintln!("icpgate run: cannot listen on {}: {e}", l.addr);
                return 1;
            }
        }
    }
    if let Some(addr) = cfg.admin.addr {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                let admin = Arc::new(Admin {
                    shared: shared.clone(),
                    reloader: reloader.clone(),
                    token: cfg.admin.token.clone(),
                });
                tokio::spawn(admin.serve(l));
                tracing::info!(%addr, "admin API listening");
            }
            Err(e) => {
                tracing::error!(%addr, "cannot listen (admin): {e}");
                eprintln!("icpgate run: cannot listen on {addr} (admin): {e}");
                return 1;
            }
        }
    }
    tokio::spawn(reloader.clone().watch());
    {
        let r = reloader.clone();
        tokio::spawn(async move { r.prepare_spare().await });
    }
    spawn_sighup(reloader.clone());

    let conns = Arc::new(Semaphore::new(cfg.limits.max_connections));
    for (l, listener) in bound {
        let lctx = Arc::new(ListenerCtx::new(&l));
        tracing::info!(addr = %l.addr, listener = %lctx.label, upstream = ?l.upstream, "listening");
        tokio::spawn(accept_loop(
            shared.clone(),
            lctx,
            listener,
            conns.clone(),
            shutdown_rx.clone(),
        ));
    }

    wait_for_termination().await;
    tracing::info!(
        drain_secs = cfg.limits.drain_secs,
        "shutting down: no new connections, draining"
    );
    let _ = shutdown_tx.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(cfg.limits.drain_secs);
    while conns.available_permits() < cfg.limits.max_connections {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                open = cfg.limits.max_connections - conns.available_permits(),
                "drain deadline reached; closing the rest"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!("stopped");
    0
}

async fn accept_loop(
    shared: Arc<Shared>,
    lctx: Arc<ListenerCtx>,
    listener: TcpListener,
    conns: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let m = shared.metrics;
    let active = m.connections_active.with_label_values(&[&lctx.label]);
    let total = m.connections_total.with_label_values(&[&lctx.label]);
    let rejected = m.connections_rejected.with_label_values(&[&lctx.label]);
    // Export the series at 0 from the start (alerts use rate()).
    m.upstream_errors.with_label_values(&[&lctx.label]);
    loop {
        let accepted: std::io::Result<(TcpStream, SocketAddr)> = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                total.inc();
                let Ok(permit) = conns.clone().try_acquire_owned() else {
                    rejected.inc();
                    proxy::reset(stream);
                    continue;
                };
                active.inc();
                let (shared, lctx, active) = (shared.clone(), lctx.clone(), active.clone());
                tokio::spawn(async move {
                    proxy::handle(shared, lctx, stream, peer).await;
                    active.dec();
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                if shared.log.warn_admit() {
                    tracing::warn!(listener = %lctx.label, "accept: {e}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn spawn_sighup(reloader: Arc<Reloader>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the table");
            let _ = reloader.reload(false).await;
        }
    });
}

async fn wait_for_termination() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
