//! `icpgate run`: load the config and the first table (no table, no
//! serving), bind every listener, then serve until SIGTERM/SIGINT, and drain.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::proxy::listen::{self, Listener};
use tokio::sync::{watch, Semaphore};

use crate::admin::Admin;
use crate::block::BlockPage;
use crate::config::{Config, ListenerConfig, TlsBlock};
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
    // This thread's runtime runs the control plane (admin API, reloads,
    // signals, drain); connections are served by the workers.
    let rt = match tokio::runtime::Builder::new_current_thread()
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

fn tls_page_acceptor(cfg: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    if cfg.block.tls != TlsBlock::Page {
        return Ok(None);
    }
    let server = match (&cfg.block.cert, &cfg.block.key) {
        (Some(cert), Some(key)) => {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::{CertificateDer, PrivateKeyDer};
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("[block] cert {}: {e}", cert.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "[block] cert {}: no certificate found",
                    cert.display()
                ));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("[block] key {}: {e}", key.display()))?;
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
    // The registry and its series exist from the start (rate() from zero).
    Metrics::get();
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
    let recent = Arc::new(crate::flip::Recent::default());
    let reloader = Arc::new(
        Reloader::new(cfg.table.clone(), holder.clone(), etag)
            .with_guard(policy.clone(), recent.clone()),
    );
    {
        let recent = recent.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(crate::flip::DECAY_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                recent.decay();
            }
        });
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        table: holder.clone(),
        policy,
        page,
        limits: cfg.limits.clone(),
        tls_block: cfg.block.tls,
        ech: cfg.policy.ech,
        tls_page,
        quic_block: cfg.block.quic,
        quic_hold_secs: cfg.block.quic_hold_secs,
        top: TopBlocked::new(10_000),
        recent,
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

    // source = "client" binds upstream sockets to clients' addresses:
    // refused at start, with the reason, where the process cannot.
    for l in cfg
        .listeners
        .iter()
        .filter(|l| l.source == crate::config::Source::Client)
    {
        for v6 in [false, true] {
            if let Err(e) = proxy::upstream::can_bind_transparent(v6) {
                if e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
                    continue;
                }
                let why = format!(
                    "listener {}: source = \"client\" needs IP_TRANSPARENT on upstream sockets ({e}): run with CAP_NET_ADMIN (systemd AmbientCapabilities=CAP_NET_ADMIN; Kubernetes securityContext.capabilities.add: [NET_ADMIN])",
                    l.label()
                );
                tracing::error!("{why}");
                eprintln!("icpgate run: {why}");
                return 1;
            }
        }
    }
    // Bind everything before serving anything: one socket of every
    // listener per worker.
    let workers = cfg.runtime.workers();
    proxy::upstream::set_tracking(
        cfg.listeners.iter().any(|l| l.upstream.is_none()),
        cfg.listeners.iter().map(|l| l.addr.port()).collect(),
    );
    let mut bound = Vec::new();
    for l in &cfg.listeners {
        match listen::bind(l, workers) {
            Ok(socks) => bound.push((l.clone(), socks)),
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

    // Descriptors: as many as the hard limit allows, and a warning when
    // that is still short of what max_connections needs (a passthrough
    // connection holds two sockets and, once it splices, two pipes).
    match listen::raise_nofile() {
        Ok(soft) => {
            let need = (cfg.limits.max_connections as u64)
                .saturating_mul(FDS_PER_CONNECTION)
                .saturating_add(256);
            if soft < need {
                tracing::warn!(
                    nofile = soft,
                    needed = need,
                    max_connections = cfg.limits.max_connections,
                    "RLIMIT_NOFILE is below what [limits] max_connections needs ({FDS_PER_CONNECTION} per connection): once descriptors run out new connections are shed (reset) and counted in icpgate_connections_shed_total; raise LimitNOFILE / ulimit -n or lower max_connections"
                );
            }
        }
        Err(e) => tracing::warn!("RLIMIT_NOFILE: {e}"),
    }
    listen::keep_reserve();
    let conns = Arc::new(Semaphore::new(cfg.limits.max_connections));
    for (l, _) in &bound {
        tracing::info!(addr = %l.addr, listener = %l.label(), upstream = ?l.upstream, "listening");
    }
    if let Err(e) = start_workers(workers, bound, &shared, &conns, &shutdown_rx).await {
        tracing::error!("cannot start the workers: {e}");
        eprintln!("icpgate run: cannot start the workers: {e}");
        return 1;
    }
    tracing::info!(workers, "serving");

    wait_for_termination().await;
    tracing::info!(
        drain_secs = cfg.limits.drain_secs,
        "shutting down: no new connections, draining"
    );
    let _ = shutdown_tx.send(true);
    let deadline = tokio::time::Instant::now() + cfg.limits.drain();
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

/// Start `workers` threads, each with its own single-threaded event loop
/// serving its own socket of every listener (the kernel spreads new
/// connections across the sockets). A connection lives on one thread from
/// accept to close: no task hand-over between threads, no work-stealing
/// queues (measured: 3.4% less CPU per `Connection: close` request than one
/// multi-threaded runtime, BENCHMARKS.md §7). Returns once every worker has
/// registered its sockets.
async fn start_workers(
    workers: usize,
    bound: Vec<(ListenerConfig, Vec<socket2::Socket>)>,
    shared: &Arc<Shared>,
    conns: &Arc<Semaphore>,
    shutdown: &watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut per_worker: Vec<Vec<(ListenerConfig, socket2::Socket)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for (l, socks) in bound {
        for (w, sock) in socks.into_iter().enumerate() {
            if let Some(list) = per_worker.get_mut(w) {
                list.push((l.clone(), sock));
            }
        }
    }
    let mut ready = Vec::with_capacity(workers);
    for (w, socks) in per_worker.into_iter().enumerate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (shared, conns, shutdown) = (shared.clone(), conns.clone(), shutdown.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<std::io::Result<()>>();
        ready.push(rx);
        std::thread::Builder::new()
            .name(format!("icpgate-w{w}"))
            .spawn(move || {
                rt.block_on(async move {
                    let mut listeners = Vec::with_capacity(socks.len());
                    for (l, sock) in socks {
                        if l.transport == crate::config::Transport::Udp {
                            match tokio::net::UdpSocket::from_std(sock.into()) {
                                Ok(udp) => {
                                    let lctx = Arc::new(ListenerCtx::new(&l));
                                    tokio::spawn(proxy::udp::serve(shared.clone(), lctx, udp));
                                }
                                Err(e) => {
                                    let _ = tx.send(Err(e));
                                    return;
                                }
                            }
                            continue;
                        }
                        match Listener::register(sock) {
                            Ok(listener) => listeners.push((l, listener)),
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        }
                    }
                    for (l, listener) in listeners {
                        // Per worker: its own idle upstream pool, no lock
                        // shared with other threads.
                        let lctx = Arc::new(ListenerCtx::new(&l));
                        tokio::spawn(accept_loop(
                            shared.clone(),
                            lctx,
                            listener,
                            conns.clone(),
                            shutdown.clone(),
                        ));
                    }
                    let _ = tx.send(Ok(()));
                    // Serve until the process exits (the main thread drains
                    // on SIGTERM, then returns).
                    std::future::pending::<()>().await;
                });
            })?;
    }
    for rx in ready {
        match rx.await {
            Ok(r) => r?,
            Err(_) => return Err(std::io::Error::other("a worker stopped while starting")),
        }
    }
    Ok(())
}

/// Descriptors one connection may hold: client and upstream sockets, and
/// two pipes while it splices.
const FDS_PER_CONNECTION: u64 = 6;

async fn accept_loop(
    shared: Arc<Shared>,
    lctx: Arc<ListenerCtx>,
    listener: Listener,
    conns: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let m = Metrics::get();
    let active = m.connections_active.with_label_values(&[&lctx.label]);
    let total = m.connections_total.with_label_values(&[&lctx.label]);
    let rejected = m.connections_rejected.with_label_values(&[&lctx.label]);
    let shed = m.connections_shed.with_label_values(&[&lctx.label]);
    for cause in ["loop", "not_intercepted"] {
        m.connections_refused
            .with_label_values(&[&lctx.label, cause]);
    }
    // Export the series at 0 from the start (alerts use rate()).
    m.upstream_errors.with_label_values(&[&lctx.label]);
    // One shutdown waiter for the listener's life (created per accept, it
    // took the watch channel's locks twice per connection).
    let stop = shutdown.wait_for(|s| *s);
    tokio::pin!(stop);
    let mut turn: u32 = 0;
    loop {
        // The accept first (the waiter is polled, and locks, only when no
        // connection is queued); every 256th turn the waiter first, so a
        // flood of connections cannot hide a shutdown.
        turn = turn.wrapping_add(1);
        let accepted: std::io::Result<(proxy::client::Client, SocketAddr)> = if turn % 256 == 0 {
            tokio::select! {
                biased;
                _ = &mut stop => return,
                r = listener.accept() => r,
            }
        } else {
            tokio::select! {
                biased;
                r = listener.accept() => r,
                _ = &mut stop => return,
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                total.inc();
                if listen::reserve_missing() {
                    // Out of descriptors and the reserve lost: this
                    // connection gives its descriptor to the reserve.
                    stream.reset();
                    listen::keep_reserve();
                    shed.inc();
                    continue;
                }
                let Ok(permit) = conns.clone().try_acquire_owned() else {
                    rejected.inc();
                    stream.reset();
                    continue;
                };
                active.inc();
                let (shared, lctx, active) = (shared.clone(), lctx.clone(), active.clone());
                // Boxed: the connection's state (several KiB) is then
                // written once, in place, instead of being copied into the
                // task and again at each of the task's stage changes.
                tokio::spawn(async move {
                    Box::pin(proxy::handle(shared, lctx, stream, peer)).await;
                    active.dec();
                    drop(permit);
                    // Descriptors were freed: take the reserve back if a
                    // shedding lost it.
                    if listen::reserve_missing() {
                        listen::keep_reserve();
                    }
                });
            }
            Err(e) if listen::out_of_descriptors(&e) => {
                // Shed what waits in the backlog (reset at once, counted),
                // then look again shortly: the process recovers by itself
                // as connections close.
                let n = listener.shed(256);
                shed.inc_by(n as u64);
                if shared.log.warn_admit() {
                    tracing::warn!(listener = %lctx.label, shed = n, "accept: {e}: out of file descriptors, shedding new connections (raise LimitNOFILE / ulimit -n, or lower [limits] max_connections)");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => {
                // Back off instead of spinning.
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
