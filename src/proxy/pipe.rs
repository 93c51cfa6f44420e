//! Byte-for-byte forwarding in both directions, with half-close, large
//! buffers and an idle timeout.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

async fn one_way<R, W>(mut r: R, mut w: W, buf_size: usize, last: &AtomicU64, start: Instant) -> u64
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; buf_size];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
        total += n as u64;
    }
    // Half-close: pass the EOF on, keep the other direction running.
    let _ = w.shutdown().await;
    total
}

/// Copy `a`⇄`b` until both directions end or nothing moves for `idle`.
/// Returns bytes (a→b, b→a).
pub async fn pipe<A, B>(a: A, b: B, buf_size: usize, idle: Duration) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let both = async {
        tokio::join!(
            one_way(ar, bw, buf_size, &last, start),
            one_way(br, aw, buf_size, &last, start)
        )
    };
    let watchdog = async {
        let idle_ms = idle.as_millis() as u64;
        loop {
            // `last` may be a hair newer than our clock read: saturate.
            let since =
                (start.elapsed().as_millis() as u64).saturating_sub(last.load(Ordering::Relaxed));
            if since >= idle_ms {
                return;
            }
            tokio::time::sleep(Duration::from_millis(idle_ms - since)).await;
        }
    };
    tokio::select! {
        r = both => r,
        _ = watchdog => (0, 0),
    }
}
