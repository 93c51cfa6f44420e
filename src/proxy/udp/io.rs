//! Datagram system calls for the QUIC listeners: many datagrams per call
//! (`recvmmsg`, `sendmmsg`), with each datagram's original destination
//! under TPROXY (IP_RECVORIGDSTADDR control messages).

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::RawFd;

/// Datagrams read per system call.
pub const BATCH: usize = 32;
/// Largest datagram read (a larger one is dropped, never cut short).
pub const MAX_DATAGRAM: usize = 65_535;
/// Control space per datagram: one IP(V6)_ORIGDSTADDR message (a 16-byte
/// header and a 28-byte sockaddr_in6), 8-byte aligned.
const CTRL_WORDS: usize = 8;

/// One datagram of a batch: where its bytes are, who sent it, where to.
#[derive(Clone, Copy)]
struct Got {
    slot: usize,
    len: usize,
    client: SocketAddr,
    dst: SocketAddr,
}

/// Buffers for [`BATCH`] datagrams, reused for every call. The byte
/// buffer is allocated zeroed and written by the kernel only as far as
/// each datagram goes: untouched pages cost no memory.
pub struct RecvBatch {
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    ctrl: Vec<[u64; CTRL_WORDS]>,
    got: Vec<Got>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        // SAFETY: sockaddr_storage is plain data; all zeros is valid.
        let name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        RecvBatch {
            bufs: vec![0; BATCH * MAX_DATAGRAM],
            names: vec![name; BATCH],
            ctrl: vec![[0; CTRL_WORDS]; BATCH],
            got: Vec::with_capacity(BATCH),
        }
    }
}

impl RecvBatch {
    /// How many datagrams the last [`RecvBatch::recv`] kept.
    pub fn len(&self) -> usize {
        self.got.len()
    }

    /// Datagram `i` of the last [`RecvBatch::recv`]: bytes, client,
    /// destination.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddr, SocketAddr) {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let Some(g) = self.got.get(i) else {
            return (&[], unspecified, unspecified);
        };
        let at = g.slot * MAX_DATAGRAM;
        (
            self.bufs.get(at..at + g.len).unwrap_or(&[]),
            g.client,
            g.dst,
        )
    }

    /// The bytes of every datagram of the last [`RecvBatch::recv`].
    pub fn bytes(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i).0)
    }

    /// Read the datagrams waiting on `fd` (non-blocking), up to [`BATCH`];
    /// `WouldBlock` when there are none. Their destination is `local`, or
    /// with `None` (TPROXY) the original destination of each. Datagrams
    /// without a readable sender or destination, or longer than
    /// [`MAX_DATAGRAM`], are skipped. Returns how many were read.
    pub fn recv(&mut self, fd: RawFd, local: Option<SocketAddr>) -> io::Result<usize> {
        self.got.clear();
        // SAFETY: every iovec points into `bufs` at a distinct
        // MAX_DATAGRAM-sized slot, every msghdr at its own sockaddr_storage
        // and control block, all owned by `self` and alive for the call;
        // the lengths given are those of the memory pointed to. Control
        // messages are read within msg_controllen through the CMSG macros.
        unsafe {
            let mut iov: [libc::iovec; BATCH] = std::mem::zeroed();
            let mut hdr: [libc::mmsghdr; BATCH] = std::mem::zeroed();
            let base = self.bufs.as_mut_ptr();
            for i in 0..BATCH {
                iov[i] = libc::iovec {
                    iov_base: base.add(i * MAX_DATAGRAM).cast(),
                    iov_len: MAX_DATAGRAM,
                };
                let m = &mut hdr[i].msg_hdr;
                m.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
                m.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                m.msg_iov = &mut iov[i];
                m.msg_iovlen = 1;
                if local.is_none() {
                    m.msg_control = self.ctrl[i].as_mut_ptr().cast();
                    m.msg_controllen = std::mem::size_of::<[u64; CTRL_WORDS]>() as _;
                }
            }
            let n = libc::recvmmsg(
                fd,
                hdr.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            );
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            for (slot, h) in hdr.iter().enumerate().take(n) {
                let m = &h.msg_hdr;
                if m.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
                    continue;
                }
                let Some(client) = sockaddr_to(&*m.msg_name.cast::<libc::sockaddr_storage>())
                else {
                    continue;
                };
                let Some(dst) = local.or_else(|| orig_dst(m)) else {
                    continue;
                };
                self.got.push(Got {
                    slot,
                    len: h.msg_len as usize,
                    client,
                    dst,
                });
            }
            Ok(n)
        }
    }
}

/// The original destination in a received message's control data.
///
/// # Safety
/// `m` must be a message filled by `recvmsg`/`recvmmsg`, its control
/// pointer and length describing memory that is still alive.
unsafe fn orig_dst(m: &libc::msghdr) -> Option<SocketAddr> {
    let mut c = libc::CMSG_FIRSTHDR(m);
    while !c.is_null() {
        let (level, ty) = ((*c).cmsg_level, (*c).cmsg_type);
        if (level == libc::SOL_IP && ty == libc::IP_ORIGDSTADDR)
            || (level == libc::SOL_IPV6 && ty == libc::IPV6_ORIGDSTADDR)
        {
            let mut ss: libc::sockaddr_storage = std::mem::zeroed();
            let len = ((*c).cmsg_len as usize)
                .saturating_sub(libc::CMSG_LEN(0) as usize)
                .min(std::mem::size_of::<libc::sockaddr_storage>());
            std::ptr::copy_nonoverlapping(
                libc::CMSG_DATA(c),
                (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
                len,
            );
            return sockaddr_to(&ss);
        }
        c = libc::CMSG_NXTHDR(m, c);
    }
    None
}

fn sockaddr_to(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: the family field says which sockaddr the storage holds.
    unsafe {
        match i32::from(ss.ss_family) {
            libc::AF_INET => {
                let a = &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                Some(SocketAddr::from((
                    u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let a = &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                Some(SocketAddr::from((
                    a.sin6_addr.s6_addr,
                    u16::from_be(a.sin6_port),
                )))
            }
            _ => None,
        }
    }
}

/// Datagrams to send from one socket, gathered while a batch is handled
/// and sent with one `sendmmsg`.
#[derive(Default)]
pub struct SendBatch {
    bytes: Vec<u8>,
    msgs: Vec<(socket2::SockAddr, Range<usize>)>,
}

impl SendBatch {
    /// Queue a datagram to `to`, written by `write` (appending to the
    /// vector it is given); nothing is queued if `write` fails.
    pub fn push<E>(
        &mut self,
        to: SocketAddr,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.bytes.len();
        if let Err(e) = write(&mut self.bytes) {
            self.bytes.truncate(start);
            return Err(e);
        }
        self.msgs.push((to.into(), start..self.bytes.len()));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Send what is queued from `fd` (non-blocking), [`BATCH`] per call.
    /// Datagrams the socket cannot take now are lost, as on any UDP path;
    /// one the kernel refuses is skipped. The queue is empty after.
    pub fn flush(&mut self, fd: RawFd) {
        send_each(fd, self.msgs.len(), |i| {
            let (to, r) = &self.msgs[i];
            (Some(to), &self.bytes[r.clone()])
        });
        self.bytes.clear();
        self.msgs.clear();
    }
}

/// Send `datagrams` from `fd` (non-blocking), to `to` or (`None`) to the
/// socket's peer, [`BATCH`] per call; as [`SendBatch::flush`].
pub fn send_all(fd: RawFd, to: Option<&socket2::SockAddr>, datagrams: &[&[u8]]) {
    send_each(fd, datagrams.len(), |i| (to, datagrams[i]));
}

/// `sendmmsg` the `n` datagrams `msg(i)` gives (destination, bytes).
fn send_each<'a>(
    fd: RawFd,
    n: usize,
    msg: impl Fn(usize) -> (Option<&'a socket2::SockAddr>, &'a [u8]),
) {
    let mut done = 0;
    while done < n {
        let chunk = BATCH.min(n - done);
        // SAFETY: each iovec points at bytes `msg` lends for 'a and each
        // msghdr at a SockAddr it lends likewise (or none); all outlive
        // the call, and the kernel only reads them.
        let sent = unsafe {
            let mut iov: [libc::iovec; BATCH] = std::mem::zeroed();
            let mut hdr: [libc::mmsghdr; BATCH] = std::mem::zeroed();
            for i in 0..chunk {
                let (to, bytes) = msg(done + i);
                iov[i] = libc::iovec {
                    iov_base: bytes.as_ptr().cast_mut().cast(),
                    iov_len: bytes.len(),
                };
                let m = &mut hdr[i].msg_hdr;
                if let Some(to) = to {
                    m.msg_name = to.as_ptr().cast_mut().cast();
                    m.msg_namelen = to.len();
                }
                m.msg_iov = &mut iov[i];
                m.msg_iovlen = 1;
            }
            libc::sendmmsg(
                fd,
                hdr.as_mut_ptr(),
                chunk as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        match sent {
            k if k > 0 => done += k as usize,
            _ if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock => break,
            // The first datagram was refused (e.g. a firewall): skip it.
            _ => done += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_each_way() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (la, lb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let mut out = SendBatch::default();
        for i in 0..40u8 {
            out.push(lb, |v| {
                v.extend(std::iter::repeat_n(i, usize::from(i) * 30 + 1));
                Ok::<(), ()>(())
            })
            .unwrap();
        }
        assert!(out
            .push(lb, |v| {
                v.push(9);
                Err(())
            })
            .is_err());
        out.flush(a.as_raw_fd());
        assert!(out.is_empty());
        let mut inb = RecvBatch::default();
        let mut seen = Vec::new();
        while seen.len() < 40 {
            let n = inb.recv(b.as_raw_fd(), Some(lb)).unwrap();
            assert!(n <= BATCH);
            for i in 0..inb.len() {
                let (data, from, dst) = inb.get(i);
                assert_eq!((from, dst), (la, lb));
                seen.push(data.to_vec());
            }
        }
        for (i, d) in seen.iter().enumerate() {
            assert_eq!(d.len(), i * 30 + 1);
            assert!(d.iter().all(|&x| usize::from(x) == i));
        }
        let e = inb.recv(b.as_raw_fd(), Some(lb)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // A connected socket, no address given: to its peer.
        a.connect(lb).unwrap();
        let ds: Vec<Vec<u8>> = (0..70u8).map(|i| vec![i; 3]).collect();
        let refs: Vec<&[u8]> = ds.iter().map(Vec::as_slice).collect();
        send_all(a.as_raw_fd(), None, &refs);
        let mut n = 0;
        while n < 70 {
            inb.recv(b.as_raw_fd(), Some(lb)).unwrap();
            for d in inb.bytes() {
                assert_eq!(d, &[n as u8; 3]);
                n += 1;
            }
        }
    }
}
