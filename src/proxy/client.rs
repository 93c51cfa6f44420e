//! The client's socket, registered with the reactor only once it has to
//! wait.
//!
//! On a `defer_accept` listener a connection is handed over with its first
//! bytes queued, and many are answered with one write that the socket
//! buffer takes whole (a block page, an answer before `Connection: close`).
//! Such a connection never enters epoll: no `EPOLL_CTL_ADD` after accept, no
//! `EPOLL_CTL_DEL` before close — two of the six system calls of a blocked
//! request. The first read or write that would block registers the socket,
//! for the rest of its life; so does anything that needs tokio's socket
//! (splice, split halves, the TLS paths). Without deferred accept the
//! listener registers every connection at once (`proxy::handle`): most
//! arrive before their bytes, and a direct `recv` would be an EAGAIN.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// An accepted connection (non-blocking).
#[derive(Debug)]
pub struct Client(State);

#[derive(Debug)]
enum State {
    /// Not in epoll: every operation is tried directly.
    Raw(std::net::TcpStream),
    Registered(TcpStream),
    /// Registration failed (the socket went with it).
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "client socket lost")
}

impl Client {
    /// `sock` must be non-blocking.
    pub fn new(sock: std::net::TcpStream) -> Client {
        Client(State::Raw(sock))
    }

    /// The socket as tokio's, registering it first if it is not yet.
    pub fn registered(&mut self) -> io::Result<&mut TcpStream> {
        if let State::Raw(_) = self.0 {
            let State::Raw(s) = std::mem::replace(&mut self.0, State::Gone) else {
                return Err(gone());
            };
            self.0 = State::Registered(TcpStream::from_std(s)?);
        }
        match &mut self.0 {
            State::Registered(t) => Ok(t),
            _ => Err(gone()),
        }
    }

    pub fn into_registered(mut self) -> io::Result<TcpStream> {
        self.registered()?;
        match self.0 {
            State::Registered(t) => Ok(t),
            _ => Err(gone()),
        }
    }

    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.0 {
            State::Raw(s) => Some(s.as_fd()),
            State::Registered(t) => Some(t.as_fd()),
            State::Gone => None,
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        let fd = self.fd().ok_or_else(gone)?;
        socket2::SockRef::from(&fd)
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))
    }

    /// Bytes written that the peer has not acknowledged yet (`SIOCOUTQ`);
    /// 0 when unknown. Closing a socket with unread input resets it and
    /// drops these.
    pub fn unacked(&self) -> usize {
        let Some(fd) = self.fd() else { return 0 };
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (= SIOCOUTQ) on a socket stores one `int` through
        // the pointer, which points at `n`.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        if r == 0 {
            usize::try_from(n).unwrap_or(0)
        } else {
            0
        }
    }

    /// Close with a TCP RST (SO_LINGER 0).
    pub fn reset(self) {
        if let Some(fd) = self.fd() {
            // Zero linger makes close() send RST at once; it does not block.
            let _ = socket2::SockRef::from(&fd).set_linger(Some(Duration::ZERO));
        }
    }

    /// One `recv` into `buf`'s unfilled part.
    fn recv(s: &std::net::TcpStream, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        // SAFETY: `recv` writes at most `unfilled.len()` bytes into memory
        // the `ReadBuf` owns and reports how many; exactly those are then
        // marked initialized and filled (tokio's own `try_read_buf` does
        // the same, on a registered socket).
        unsafe {
            let unfilled = buf.unfilled_mut();
            let n = libc::recv(
                s.as_raw_fd(),
                unfilled.as_mut_ptr().cast(),
                unfilled.len(),
                0,
            );
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            buf.assume_init(n);
            buf.advance(n);
        }
        Ok(())
    }
}

/// Would-block (and interrupted) results register the socket and fall
/// through to tokio; anything else is the answer.
fn settled<T>(r: io::Result<T>) -> Option<io::Result<T>> {
    match r {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            None
        }
        r => Some(r),
    }
}

impl AsyncRead for Client {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let State::Raw(s) = &this.0 {
            if let Some(r) = settled(Client::recv(s, buf)) {
                return Poll::Ready(r);
            }
        }
        match this.registered() {
            Ok(t) => Pin::new(t).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Client {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let State::Raw(s) = &this.0 {
            // `send` with MSG_NOSIGNAL (std's `write` on a socket).
            let mut s: &std::net::TcpStream = s;
            if let Some(r) = settled(s.write(buf)) {
                return Poll::Ready(r);
            }
        }
        match this.registered() {
            Ok(t) => Pin::new(t).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            State::Registered(t) => Pin::new(t).poll_flush(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.0 {
            State::Raw(s) => Poll::Ready(s.shutdown(std::net::Shutdown::Write)),
            State::Registered(t) => Pin::new(t).poll_shutdown(cx),
            State::Gone => Poll::Ready(Err(gone())),
        }
    }
}
