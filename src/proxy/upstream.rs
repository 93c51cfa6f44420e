//! Upstream connections: a fixed address or the original destination, with
//! an optional fwmark so transparent-mode sockets are not intercepted again.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub fwmark: Option<u32>,
}

impl Upstream {
    pub fn new(addr: SocketAddr, fwmark: Option<u32>) -> Self {
        Upstream { addr, fwmark }
    }

    pub async fn connect(&self, timeout: Duration) -> io::Result<TcpStream> {
        connect(self.addr, self.fwmark, timeout).await
    }
}

pub async fn connect(
    addr: SocketAddr,
    fwmark: Option<u32>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(mark) = fwmark {
        socket2::SockRef::from(&sock).set_mark(mark)?;
    }
    let s = tokio::time::timeout(timeout, sock.connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "upstream connect timed out"))??;
    s.set_nodelay(true)?;
    Ok(s)
}

/// hyper-util connector: the URI's authority is the upstream socket address
/// (the proxy puts it there); every socket gets the fwmark.
#[derive(Debug, Clone)]
pub struct Connector {
    pub fwmark: Option<u32>,
    pub timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let fwmark = self.fwmark;
        let timeout = self.timeout;
        Box::pin(async move {
            let auth = uri.authority().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "no upstream address")
            })?;
            let addr: SocketAddr = auth.as_str().parse().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "upstream is not a socket address",
                )
            })?;
            connect(addr, fwmark, timeout).await.map(TokioIo::new)
        })
    }
}
