//! Table sources and hot reload with guard rails (docs/table.md): a file
//! (re-read when replaced or modified, debounced), an HTTP URL (polled with
//! `If-None-Match`), SIGHUP and `POST /v1/reload`. The new snapshot is built
//! on a blocking thread and swapped in one atomic step; a rejected table
//! never replaces the running one.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::TableConfig;
use crate::metrics::{reload_result, Metrics};
use crate::snapshot::{Snapshot, Spare, TableHolder};
use crate::table::{self, RowError, TableError};

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub result: &'static str,
    pub version: String,
    pub entries: usize,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<RowError>,
    /// What the new table would flip (when the guard ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flip: Option<Box<crate::flip::FlipReport>>,
    /// Rows added / removed / changed (dry runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<Box<crate::flip::TableDiff>>,
}

#[derive(Debug, Default)]
struct State {
    last_error: Option<ReloadReport>,
    etag: Option<String>,
    file_sig: Option<(SystemTime, u64, u64)>,
    /// What the last reload said (the answer to a request that joined it).
    last_report: Option<Result<ReloadReport, ReloadReport>>,
}

pub struct Reloader {
    cfg: TableConfig,
    pub holder: Arc<TableHolder>,
    state: Mutex<State>,
    serial: tokio::sync::Mutex<()>,
    /// A retired snapshot's memory for the next build (`reuse_memory`).
    spare: Arc<Mutex<Option<Spare>>>,
    /// The traffic-aware guard: the policy and the recently allowed names.
    guard: Option<(crate::decision::Policy, Arc<crate::flip::Recent>)>,
}

/// Apply a loaded table, or only say what it would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    Swap,
    DryRun,
}

/// How long a file renamed into place must keep its signature before it is
/// loaded (a second look, not a wait for a writer).
const RENAME_SETTLE: Duration = Duration::from_millis(50);

type FileSig = (SystemTime, u64, u64);

/// When the watcher looks next: a change seen on a new inode (renamed into
/// place) is confirmed after [`RENAME_SETTLE`], anything else after a whole
/// interval.
fn next_look(pending: Option<FileSig>, loaded: Option<FileSig>, every: Duration) -> Duration {
    match pending {
        Some(p) if Some(p.2) != loaded.map(|l| l.2) => every.min(RENAME_SETTLE),
        _ => every,
    }
}

fn file_sig(path: &PathBuf) -> Option<FileSig> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// What a batch of directory events says about the table file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nudge {
    /// Something was renamed into the directory (or events were lost): the
    /// table is complete if its inode changed (renamed into place, or a
    /// symlink swapped as Kubernetes does).
    Renamed,
    /// The table file was closed after writing: complete.
    Written,
}

/// inotify on the table's directory (the file itself is replaced by
/// renames, which a watch on it would not follow).
struct DirEvents {
    fd: tokio::io::unix::AsyncFd<inotify::Inotify>,
    name: std::ffi::OsString,
    buf: Vec<u8>,
}

impl DirEvents {
    fn new(path: &std::path::Path) -> std::io::Result<DirEvents> {
        use inotify::{Inotify, WatchMask};
        let name = path.file_name().map(|n| n.to_os_string()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        let ino = Inotify::init()?;
        ino.watches().add(
            dir,
            WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE | WatchMask::MOVE_SELF,
        )?;
        // SAFETY: `Inotify` owns its descriptor, keeps it open until it is
        // dropped (with the AsyncFd) and always returns that same one.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(ino, tokio::io::Interest::READABLE)?
        };
        Ok(DirEvents {
            fd,
            name,
            buf: vec![0; 4096],
        })
    }

    /// The next batch of events that concerns the table. An error: the
    /// watch is gone (the directory removed or renamed away) or the
    /// descriptor failed.
    async fn next(&mut self) -> std::io::Result<Nudge> {
        use inotify::EventMask;
        let DirEvents { fd, name, buf } = self;
        loop {
            let mut ready = fd.readable_mut().await?;
            let batch = ready.try_io(|ino| {
                let mut nudge = None;
                for ev in ino.get_mut().read_events(buf)? {
                    if ev.mask.contains(EventMask::IGNORED) {
                        return Err(std::io::Error::other("the directory watch was removed"));
                    }
                    // Renamed away: the watch would follow it, not the path.
                    if ev.mask.contains(EventMask::MOVE_SELF) {
                        return Err(std::io::Error::other("the directory was renamed"));
                    }
                    let ours = ev.name.is_some_and(|n| n == name.as_os_str());
                    if ev.mask.contains(EventMask::CLOSE_WRITE) && ours {
                        nudge = Some(Nudge::Written);
                    } else if nudge.is_none()
                        && (ev.mask.contains(EventMask::MOVED_TO)
                            || ev.mask.contains(EventMask::Q_OVERFLOW))
                    {
                        nudge = Some(Nudge::Renamed);
                    }
                }
                Ok(nudge)
            });
            match batch {
                Ok(Ok(Some(n))) => return Ok(n),
                Ok(Ok(None)) | Err(_) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
    }
}

/// The flip report of `new` against `cur`, decided on a background thread
/// (the control plane's runtime has one thread); `new` is handed back.
async fn flip_check(
    cur: &Arc<Snapshot>,
    new: Snapshot,
    policy: &crate::decision::Policy,
    recent: &Arc<crate::flip::Recent>,
) -> Option<(Snapshot, crate::flip::FlipReport)> {
    let (cur, policy, recent) = (cur.clone(), policy.clone(), recent.clone());
    background(move || {
        let f = crate::flip::evaluate(
            &cur,
            &new,
            &policy,
            &recent.entries(),
            crate::decision::now_unix(),
        );
        (new, f)
    })
    .await
    .ok()
}

/// Load the first table; the proxy does not start without one.
pub async fn initial(cfg: &TableConfig) -> Result<(Snapshot, Option<String>), String> {
    match (&cfg.path, &cfg.url) {
        (Some(path), _) => {
            let path = path.clone();
            let opts = cfg.load_options();
            let loaded = tokio::task::spawn_blocking(move || table::load_path(&path, &opts))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            Ok((loaded.snapshot, None))
        }
        (None, Some(url)) => match crate::fetch::get(url, None, cfg.fetch_limits()).await? {
            crate::fetch::Fetched::Body { file, etag } => {
                let opts = cfg.load_options();
                let url = url.clone();
                let loaded = tokio::task::spawn_blocking(move || {
                    table::load_fetched(file.path(), &url, &opts, Spare::default())
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
                Ok((loaded.snapshot, etag))
            }
            crate::fetch::Fetched::NotModified => Err("unexpected 304 on first fetch".into()),
        },
        (None, None) => Err("[table]: no path or url".into()),
    }
}

impl Reloader {
    pub fn new(cfg: TableConfig, holder: Arc<TableHolder>, etag: Option<String>) -> Self {
        let sig = cfg.path.as_ref().and_then(file_sig);
        Reloader {
            cfg,
            holder,
            state: Mutex::new(State {
                etag,
                file_sig: sig,
                ..State::default()
            }),
            serial: tokio::sync::Mutex::new(()),
            spare: Arc::new(Mutex::new(None)),
            guard: None,
        }
    }

    /// Judge each new table by the recent traffic it would flip.
    pub fn with_guard(
        mut self,
        policy: crate::decision::Policy,
        recent: Arc<crate::flip::Recent>,
    ) -> Self {
        self.guard = Some((policy, recent));
        self
    }

    /// Read the source as it is now and say what it would change — rows,
    /// and the recent traffic it would flip — without changing anything.
    pub async fn dry_run(&self) -> Result<ReloadReport, ReloadReport> {
        let _serial = self.serial.lock().await;
        self.reload_inner(true, Apply::DryRun).await
    }

    /// The last failed reload, if the most recent attempt failed.
    pub fn last_error(&self) -> Option<ReloadReport> {
        self.state.lock().ok().and_then(|s| s.last_error.clone())
    }

    fn finish(&self, r: Result<ReloadReport, ReloadReport>) -> Result<ReloadReport, ReloadReport> {
        let m = Metrics::get();
        let result = match &r {
            Ok(rep) | Err(rep) => rep.result,
        };
        m.table_reloads.with_label_values(&[result]).inc();
        m.table_reload_failing.set(i64::from(r.is_err()));
        if let Ok(mut st) = self.state.lock() {
            st.last_error = r.as_ref().err().cloned();
            st.last_report = Some(r.clone());
        }
        match &r {
            Ok(rep) if rep.result == reload_result::SUCCESS => {
                tracing::info!(version = %rep.version, entries = rep.entries, "table swapped in")
            }
            Ok(_) => tracing::debug!("table unchanged"),
            Err(rep) => {
                tracing::error!(result = rep.result, message = %rep.message, errors = ?rep.errors, "table reload rejected; the running table stays")
            }
        }
        r
    }

    fn report(&self, result: &'static str, message: String, errors: Vec<RowError>) -> ReloadReport {
        let cur = self.holder.load();
        ReloadReport {
            result,
            version: cur.meta.version.clone(),
            entries: cur.len(),
            message,
            errors,
            flip: None,
            diff: None,
        }
    }

    /// Reload now. `force` skips the shrink guard.
    ///
    /// A request that arrives while another reload runs (the watcher saw
    /// the same `mv`) waits for it, and if that one read the file as it was
    /// when this request came, gets its answer instead of a second build
    /// that could only say "unchanged".
    pub async fn reload(&self, force: bool) -> Result<ReloadReport, ReloadReport> {
        let asked = self.cfg.path.as_ref().and_then(file_sig);
        let (_serial, joined) = match self.serial.try_lock() {
            Ok(g) => (g, false),
            Err(_) => (self.serial.lock().await, true),
        };
        if joined && !force && asked.is_some() {
            if let Ok(st) = self.state.lock() {
                if st.file_sig == asked {
                    if let Some(r) = st.last_report.clone() {
                        return r;
                    }
                }
            }
        }
        let r = self.reload_inner(force, Apply::Swap).await;
        self.finish(r)
    }

    async fn reload_inner(&self, force: bool, apply: Apply) -> Result<ReloadReport, ReloadReport> {
        let opts = self.cfg.load_options();
        let (loaded, etag) = match (&self.cfg.path, &self.cfg.url) {
            (Some(path), _) => {
                let p = path.clone();
                let sig = file_sig(&p);
                let spare = self.take_spare();
                let res = background(move || table::load_path_reusing(&p, &opts, spare)).await;
                if let Ok(mut st) = self.state.lock() {
                    st.file_sig = sig;
                }
                (res, None)
            }
            (None, Some(url)) => {
                let etag = self.state.lock().ok().and_then(|s| s.etag.clone());
                match crate::fetch::get(url, etag.as_deref(), self.cfg.fetch_limits()).await {
                    Ok(crate::fetch::Fetched::NotModified) => {
                        return Ok(self.report(
                            reload_result::UNCHANGED,
                            "304 Not Modified".into(),
                            vec![],
                        ))
                    }
                    Ok(crate::fetch::Fetched::Body { file, etag }) => {
                        let url = url.clone();
                        let spare = self.take_spare();
                        let res = background(move || {
                            table::load_fetched(file.path(), &url, &opts, spare)
                        })
                        .await;
                        (res, etag)
                    }
                    Err(e) => return Err(self.report(reload_result::ERROR, e, vec![])),
                }
            }
            (None, None) => {
                return Err(self.report(reload_result::ERROR, "no table source".into(), vec![]))
            }
        };
        let loaded = match loaded {
            Err(_) => {
                return Err(self.report(
                    reload_result::ERROR,
                    "table loader thread failed".into(),
                    vec![],
                ))
            }
            Ok(Err(TableError::Rejected {
                invalid,
                allowance,
                errors,
            })) => {
                return Err(self.report(
                    reload_result::REJECTED,
                    format!("{invalid} invalid row(s), allowance {allowance}"),
                    errors,
                ))
            }
            Ok(Err(e @ TableError::Io(_))) => {
                return Err(self.report(reload_result::ERROR, e.to_string(), vec![]))
            }
            Ok(Err(e)) => return Err(self.report(reload_result::REJECTED, e.to_string(), vec![])),
            Ok(Ok(l)) => l,
        };
        let new = loaded.snapshot;
        let cur = self.holder.load_full();
        if apply == Apply::DryRun {
            let same = new.meta.version == cur.meta.version;
            let shrink = table::shrink_violation(cur.len(), new.len(), self.cfg.max_shrink);
            let (diff, flip) = self.judge(cur, new).await;
            let flipped = flip.as_ref().and_then(|f| f.violation(self.cfg.max_flip));
            let message = match (same, shrink.or(flipped)) {
                (true, _) => "unchanged: the source holds the running table".into(),
                (false, Some(v)) => format!("would be rejected unless forced: {v}"),
                (false, None) => "would be accepted".into(),
            };
            let mut rep = self.report("dry_run", message, loaded.errors);
            rep.flip = flip.map(Box::new);
            rep.diff = Some(Box::new(diff));
            return Ok(rep);
        }
        if new.meta.version == cur.meta.version {
            if let Ok(mut st) = self.state.lock() {
                st.etag = etag;
            }
            if self.cfg.reuse_memory {
                keep_spare(&self.spare, new);
            }
            return Ok(self.report(reload_result::UNCHANGED, "same version".into(), vec![]));
        }
        if !(force || self.cfg.force) {
            if let Some(msg) = table::shrink_violation(cur.len(), new.len(), self.cfg.max_shrink) {
                return Err(self.report(reload_result::REJECTED, msg, vec![]));
            }
        }
        let mut flip = None;
        let mut new = new;
        if let Some((policy, recent)) = &self.guard {
            let Some((back, f)) = flip_check(&cur, new, policy, recent).await else {
                return Err(self.report(
                    reload_result::ERROR,
                    "table guard thread failed".into(),
                    vec![],
                ));
            };
            new = back;
            if !(force || self.cfg.force) {
                if let Some(msg) = f.violation(self.cfg.max_flip) {
                    let mut rep = self.report(reload_result::FLIP_REJECTED, msg, vec![]);
                    rep.flip = Some(Box::new(f));
                    if self.cfg.reuse_memory {
                        keep_spare(&self.spare, new);
                    }
                    return Err(rep);
                }
            }
            flip = Some(Box::new(f));
        }
        drop(cur);
        let entries = new.len();
        let version = new.meta.version.clone();
        publish_metrics(&new);
        let old = self.holder.swap(Arc::new(new));
        if let Ok(mut st) = self.state.lock() {
            st.etag = etag;
        }
        retire(old, self.cfg.reuse_memory.then(|| self.spare.clone()));
        Ok(ReloadReport {
            result: reload_result::SUCCESS,
            version,
            entries,
            message: format!(
                "loaded {entries} entries ({} invalid rows skipped)",
                loaded.invalid
            ),
            errors: loaded.errors,
            flip,
            diff: None,
        })
    }

    /// The row diff and, with the guard, the flip report of `new` against
    /// `cur`, off the async threads.
    async fn judge(
        &self,
        cur: Arc<Snapshot>,
        new: Snapshot,
    ) -> (crate::flip::TableDiff, Option<crate::flip::FlipReport>) {
        let guard = self.guard.clone();
        let spare = self.cfg.reuse_memory.then(|| self.spare.clone());
        background(move || {
            let diff = crate::flip::diff(&cur, &new);
            let flip = guard.map(|(policy, recent)| {
                crate::flip::evaluate(
                    &cur,
                    &new,
                    &policy,
                    &recent.entries(),
                    crate::decision::now_unix(),
                )
            });
            if let Some(spare) = spare {
                keep_spare(&spare, new);
            }
            (diff, flip)
        })
        .await
        .unwrap_or_default()
    }

    /// With `reuse_memory`: prepare spare memory shaped like the running
    /// table's in the background (lowest priority), so the first reload
    /// is as fast as later ones. Holds the reload lock: a reload that comes
    /// meanwhile waits and then builds in this memory, instead of building
    /// a third table's worth beside it.
    pub async fn prepare_spare(&self) {
        if !self.cfg.reuse_memory {
            return;
        }
        let _serial = self.serial.lock().await;
        let cur = self.holder.load_full();
        if let Ok(spare) = background(move || Spare::prefaulted_like(&cur)).await {
            if let Ok(mut s) = self.spare.lock() {
                if s.is_none() {
                    *s = Some(spare);
                }
            }
        }
    }

    /// The kept memory, if any (and if reuse is on).
    fn take_spare(&self) -> Spare {
        match self.spare.lock() {
            Ok(mut s) if self.cfg.reuse_memory => s.take().unwrap_or_default(),
            _ => Spare::default(),
        }
    }

    /// Has the file changed since we last loaded it? (debounced by the caller)
    fn file_changed(&self) -> Option<(SystemTime, u64, u64)> {
        let path = self.cfg.path.as_ref()?;
        let now = file_sig(path)?;
        let last = self.state.lock().ok()?.file_sig;
        (Some(now) != last).then_some(now)
    }

    /// Load the file if it still differs from what was loaded last; not if
    /// a reload (API, SIGHUP) that started since has already read it.
    async fn load_file_change(&self) {
        let _serial = self.serial.lock().await;
        if self.file_changed().is_some() {
            let r = self.reload_inner(false, Apply::Swap).await;
            let _ = self.finish(r);
        }
    }

    /// Watch the source: the file's directory events (inotify, unless
    /// `watch_events = false`) and looks at its signature (debounced: a
    /// change is loaded once two looks agree), or the URL on its interval.
    pub async fn watch(self: Arc<Self>) {
        if let Some(path) = &self.cfg.path {
            let every = Duration::from_millis(self.cfg.watch_interval_ms.max(50));
            // The directory's events, when they can be had: if the watch
            // cannot be set up or is lost (the directory removed or renamed
            // away, a volume re-mounted), the looks go on alone and each look
            // tries to set it up again.
            let arm = |warn: bool| match DirEvents::new(path) {
                Ok(ev) => Some(ev),
                Err(e) => {
                    if warn {
                        tracing::warn!(
                            path = %path.display(),
                            error = %e,
                            "cannot watch the table's directory for changes; looking every {} ms",
                            every.as_millis()
                        );
                    }
                    None
                }
            };
            let mut events = if self.cfg.watch_events {
                arm(true)
            } else {
                None
            };
            let mut pending: Option<FileSig> = None;
            let loaded = |me: &Self| me.state.lock().ok().and_then(|st| st.file_sig);
            // The first look at once: a change made between the first load
            // and the watch's setup sent its event to nobody.
            let mut next = tokio::time::Instant::now();
            loop {
                let event = match events.as_mut() {
                    Some(ev) => tokio::select! {
                        _ = tokio::time::sleep_until(next) => None,
                        n = ev.next() => Some(n),
                    },
                    None => {
                        tokio::time::sleep_until(next).await;
                        None
                    }
                };
                match event {
                    // An event: load at once if it says the table is
                    // complete. Event looks leave the debounced looks alone.
                    Some(Ok(nudge)) => {
                        if let Some(sig) = self.file_changed() {
                            let new_inode = Some(sig.2) != loaded(&self).map(|l| l.2);
                            if nudge == Nudge::Written || new_inode {
                                self.load_file_change().await;
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "table directory events stopped; looking every {} ms until they can be had again", every.as_millis());
                        events = None;
                    }
                    // A look. A new inode is a file renamed into place,
                    // complete by the time it appears: confirmed after a
                    // short settle. The same inode changed is a write in
                    // place, which may still be going on: it must be stable
                    // for a whole interval.
                    None => {
                        if events.is_none() && self.cfg.watch_events {
                            events = arm(false);
                            if events.is_some() {
                                tracing::info!(path = %path.display(), "watching the table's directory again");
                            }
                        }
                        match (self.file_changed(), pending) {
                            (Some(sig), Some(p)) if sig == p => {
                                pending = None;
                                self.load_file_change().await;
                            }
                            (Some(sig), _) => pending = Some(sig),
                            (None, _) => pending = None,
                        }
                        next =
                            tokio::time::Instant::now() + next_look(pending, loaded(&self), every);
                    }
                }
            }
        } else {
            let every = Duration::from_secs(self.cfg.poll_interval_secs.max(1));
            loop {
                tokio::time::sleep(every).await;
                let _ = self.reload(false).await;
            }
        }
    }
}

/// Run a reload build on its own thread at the lowest CPU priority (nice
/// 19, inherited by the loader's parser thread), so on a busy node the data
/// path preempts it: a rebuild of a 10M-row table takes longer, requests do
/// not wait behind it.
async fn background<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::sync::oneshot::error::RecvError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("icpgate-reload".into())
        .spawn(move || {
            // SAFETY: setpriority on the calling thread (who = 0 is the
            // calling thread's TID under Linux's per-thread nice values).
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, 19);
            }
            let _ = tx.send(f());
        });
    if spawned.is_err() {
        // Could not start a thread: the receiver sees a closed channel.
        return rx.await;
    }
    rx.await
}

/// Gauges for the running table.
pub fn publish_metrics(s: &Snapshot) {
    let m = Metrics::get();
    m.table_entries.set(s.len() as i64);
    m.table_loaded
        .set(crate::decision::unix_secs(s.meta.loaded_at));
}

/// Keep a snapshot's memory for the next build (replacing older spare
/// memory, which is freed).
fn keep_spare(slot: &Mutex<Option<Spare>>, snap: Snapshot) {
    let older = match slot.lock() {
        Ok(mut s) => s.replace(snap.into_spare()),
        Err(_) => None,
    };
    // Freed (if any) outside the lock.
    drop(older);
}

/// Retire a replaced snapshot off the data path: wait (bounded) until the
/// lookups in flight have released it, then, on a blocking thread, free it
/// or keep its memory in `spare` for the next build.
fn retire(old: Arc<Snapshot>, spare: Option<Arc<Mutex<Option<Spare>>>>) {
    tokio::task::spawn_blocking(move || {
        for _ in 0..600 {
            if Arc::strong_count(&old) == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Still shared after 30 s (a stuck lookup): just drop our reference.
        if let (Some(slot), Ok(snap)) = (spare, Arc::try_unwrap(old)) {
            keep_spare(&slot, snap);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_file_is_confirmed_sooner_than_one_written_in_place() {
        let every = Duration::from_millis(1000);
        let t = SystemTime::UNIX_EPOCH;
        let loaded = Some((t, 10, 7));
        // Nothing pending: the regular poll.
        assert_eq!(next_look(None, loaded, every), every);
        // Changed in place (same inode): stable for a whole interval.
        assert_eq!(next_look(Some((t, 20, 7)), loaded, every), every);
        // A new inode (renamed into place): a short second look.
        assert_eq!(next_look(Some((t, 20, 8)), loaded, every), RENAME_SETTLE);
        // Nothing loaded from a file yet: treated as new.
        assert_eq!(next_look(Some((t, 20, 8)), None, every), RENAME_SETTLE);
        // An interval shorter than the settle time is kept.
        let fast = Duration::from_millis(20);
        assert_eq!(next_look(Some((t, 20, 8)), loaded, fast), fast);
    }
}
