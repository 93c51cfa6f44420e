//! Byte-for-byte forwarding between two TCP sockets in both directions,
//! with half-close and an idle timeout.
//!
//! Each direction has a user-space buffer only while bytes move: taken
//! (16 KiB, growing to `max_buf` while reads keep filling it) when the
//! socket turns readable, given back when a read finds nothing more, so an
//! idle connection holds none. A direction that has
//! moved more than [`SPLICE_AFTER`] bytes switches to `splice(2)` through a
//! pipe, so bulk data goes socket → pipe → socket inside the kernel with no
//! copy through user space (short connections never pay for the pipe).
//!
//! Idle timeout: each read and each write that moves bytes bumps a counter,
//! with no clock read; a watchdog looks at it every quarter of the idle
//! period and closes the pair once it has not moved for a whole period. So
//! a silent pair is closed between `idle` and `1.25 × idle` after its last
//! byte.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;

/// Bytes a direction moves through the buffer before it turns to splice.
pub const SPLICE_AFTER: u64 = 1 << 20;
const FIRST_BUF: usize = 16 * 1024;
/// Pipe size asked for (the default is 64 KiB; 1 MiB is the usual
/// `fs.pipe-max-size`), and bytes asked of one splice.
const SPLICE_CHUNK: usize = 1 << 20;

fn kernel_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both are fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain syscall on descriptors that stay open for the call;
    // null offsets (both ends are a socket or a pipe).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// The rest of one direction through a pipe, in the kernel.
async fn splice_rest(r: &ReadHalf<'_>, w: &WriteHalf<'_>, moved: &AtomicU64) -> io::Result<u64> {
    let (pr, pw) = kernel_pipe()?;
    // Fewer, larger splices; if refused, the default size works too.
    // SAFETY: fcntl on a pipe descriptor we own.
    let _ = unsafe {
        libc::fcntl(
            pw.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            SPLICE_CHUNK as libc::c_int,
        )
    };
    let (rfd, wfd) = (r.as_ref().as_raw_fd(), w.as_ref().as_raw_fd());
    let mut total = 0u64;
    loop {
        let n = loop {
            r.as_ref().readable().await?;
            match r.as_ref().try_io(Interest::READABLE, || {
                splice(rfd, pw.as_raw_fd(), SPLICE_CHUNK)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Ok(total);
        }
        moved.fetch_add(1, Ordering::Relaxed);
        let mut left = n;
        while left > 0 {
            w.as_ref().writable().await?;
            match w
                .as_ref()
                .try_io(Interest::WRITABLE, || splice(pr.as_raw_fd(), wfd, left))
            {
                Ok(m) => {
                    left -= m;
                    // A slow reader draining a full pipe is not idle.
                    moved.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
    }
}

async fn one_way(
    r: ReadHalf<'_>,
    mut w: WriteHalf<'_>,
    max_buf: usize,
    moved: &AtomicU64,
    ended: &AtomicBool,
) -> u64 {
    // The buffer exists only while bytes are moving: allocated when the
    // socket has something to read, released when it has nothing more, so
    // an idle connection holds no copy buffer at all.
    let mut size = FIRST_BUF.min(max_buf);
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0u64;
    loop {
        if total >= SPLICE_AFTER {
            drop(buf);
            if let Ok(n) = splice_rest(&r, &w, moved).await {
                total += n;
            }
            break;
        }
        buf.clear();
        if buf.capacity() == 0 {
            if r.as_ref().readable().await.is_err() {
                break;
            }
            buf.reserve_exact(size);
        }
        let n = match r.as_ref().try_read_buf(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Nothing more for now: idle without a buffer.
                buf = Vec::new();
                continue;
            }
            Err(_) => break,
        };
        moved.fetch_add(1, Ordering::Relaxed);
        // Written piece by piece, each counted: a slow reader that keeps
        // taking bytes is not idle.
        let mut off = 0;
        while off < n {
            match w.write(&buf[off..n]).await {
                Ok(0) | Err(_) => break,
                Ok(m) => {
                    off += m;
                    moved.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if off < n {
            break;
        }
        total += n as u64;
        if n == buf.capacity() && n < max_buf {
            // Reads fill the buffer: let it grow.
            size = (n * 2).min(max_buf);
            buf = Vec::with_capacity(size);
        }
    }
    // Half-close: pass the EOF on, keep the other direction running. If
    // the other direction has already ended, both sockets close right now
    // and the close sends the FIN: no shutdown(2) needed.
    if !ended.swap(true, Ordering::AcqRel) {
        let _ = w.shutdown().await;
    }
    total
}

/// Copy `a`⇄`b` until both directions end or nothing moves for `idle`
/// (checked every quarter of it, see the module notes). Returns bytes
/// (a→b, b→a).
pub async fn pipe(
    a: &mut TcpStream,
    b: &mut TcpStream,
    max_buf: usize,
    idle: Duration,
) -> (u64, u64) {
    let moved = AtomicU64::new(0);
    let ended = AtomicBool::new(false);
    let (ar, aw) = a.split();
    let (br, bw) = b.split();
    let both = async {
        tokio::join!(
            one_way(ar, bw, max_buf, &moved, &ended),
            one_way(br, aw, max_buf, &moved, &ended)
        )
    };
    let watchdog = async {
        let step = (idle / 4).max(Duration::from_millis(1));
        let mut seen = moved.load(Ordering::Relaxed);
        let mut quiet = Duration::ZERO;
        loop {
            tokio::time::sleep(step).await;
            let now = moved.load(Ordering::Relaxed);
            if now == seen {
                quiet += step;
                if quiet >= idle {
                    return;
                }
            } else {
                (seen, quiet) = (now, Duration::ZERO);
            }
        }
    };
    // Biased: the copy first (it is what wakes the task nearly always), and
    // no random branch order to draw on every wake.
    tokio::select! {
        biased;
        r = both => r,
        _ = watchdog => (0, 0),
    }
}
