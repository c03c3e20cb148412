//! The UDP workers: one OS thread per socket (`SO_REUSEPORT`), batched `recvmmsg`/`sendmmsg`,
//! cache hits answered in place; misses handed to the tokio runtime.

use std::{
    io,
    mem::{MaybeUninit, size_of},
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{
    handler::{DnsHandler, Transport},
    stats::{Counters, bump},
};
use crate::{cache::KeyBuf, resolver::Fast};

/// Datagrams per system call.
pub(crate) const BATCH: usize = 32;
/// Largest request accepted; longer ones are dropped (`MSG_TRUNC`).
const RECV_BUF: usize = 4096;
/// How often a blocked worker wakes to check for shutdown.
const WAKE_INTERVAL: Duration = Duration::from_millis(100);

/// Binds one UDP socket of the `SO_REUSEPORT` group on `addr`.
pub(crate) fn bind_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_read_timeout(Some(WAKE_INTERVAL))?;
    // Room for bursts while a worker is busy (the kernel caps this at rmem_max).
    socket.set_recv_buffer_size(4 << 20).ok();
    socket.set_send_buffer_size(4 << 20).ok();
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Receive buffers for one `recvmmsg` call.
struct RecvBatch {
    data: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl RecvBatch {
    fn new() -> Self {
        Self {
            data: vec![0; BATCH * RECV_BUF],
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
            addrs: vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH],
            iovecs: Vec::with_capacity(BATCH),
            // SAFETY: mmsghdr is plain old data (pointers and integers); all-zero is valid.
            headers: vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH],
        }
    }

    /// Receives up to [`BATCH`] datagrams; blocks until at least one arrives or the socket's
    /// read timeout passes.
    fn recv(&mut self, socket: &Socket) -> io::Result<usize> {
        self.iovecs.clear();
        for chunk in self.data.chunks_exact_mut(RECV_BUF) {
            self.iovecs.push(libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: RECV_BUF,
            });
        }
        for ((header, iov), addr) in self
            .headers
            .iter_mut()
            .zip(self.iovecs.iter_mut())
            .zip(self.addrs.iter_mut())
        {
            header.msg_hdr.msg_name = std::ptr::from_mut(addr).cast();
            header.msg_hdr.msg_namelen = socklen_of::<libc::sockaddr_storage>();
            header.msg_hdr.msg_iov = std::ptr::from_mut(iov);
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = std::ptr::null_mut();
            header.msg_hdr.msg_controllen = 0;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
        // SAFETY: every header points at a live iovec (into `data`, RECV_BUF bytes each) and a
        // live sockaddr_storage with its true size; all stay borrowed (`&mut self`) for the
        // duration of the call, and the count passed is the headers' length.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                u32::try_from(self.headers.len()).unwrap_or(0),
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Datagram `i` of the last call: its bytes (`None` if truncated) and sender.
    fn get(&self, i: usize) -> (Option<&[u8]>, Option<SocketAddr>) {
        let header = &self.headers[i];
        let len = header.msg_len as usize;
        let truncated = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let data =
            (!truncated && len <= RECV_BUF).then(|| &self.data[i * RECV_BUF..i * RECV_BUF + len]);
        (
            data,
            socket_addr(&self.addrs[i], header.msg_hdr.msg_namelen),
        )
    }
}

/// The address the kernel wrote into `storage` (`len` bytes).
fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= socklen_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which is smaller than
            // and no more aligned than sockaddr_storage.
            let sin = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((
                u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= socklen_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*std::ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                sin6.sin6_addr.s6_addr.into(),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<T>()).unwrap_or(0)
}

/// Replies queued for one `sendmmsg` call.
struct SendBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<SockAddr>,
    len: usize,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl SendBatch {
    fn new() -> Self {
        Self {
            bufs: (0..BATCH).map(|_| Vec::with_capacity(1500)).collect(),
            addrs: Vec::with_capacity(BATCH),
            len: 0,
            iovecs: Vec::with_capacity(BATCH),
            // SAFETY: mmsghdr is plain old data; all-zero is valid.
            headers: vec![unsafe { MaybeUninit::zeroed().assume_init() }; BATCH],
        }
    }

    /// The buffer for the next reply.
    fn next_buf(&mut self) -> &mut Vec<u8> {
        &mut self.bufs[self.len]
    }

    /// Queues the reply written into `next_buf()` for `to`.
    fn commit(&mut self, to: SockAddr) {
        if self.addrs.len() > self.len {
            self.addrs[self.len] = to;
        } else {
            self.addrs.push(to);
        }
        self.len += 1;
    }

    /// Sends everything queued; returns how many replies could not be sent.
    fn flush(&mut self, socket: &Socket) -> usize {
        let count = self.len;
        self.len = 0;
        if count == 0 {
            return 0;
        }
        self.iovecs.clear();
        for buf in &mut self.bufs[..count] {
            self.iovecs.push(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            });
        }
        for i in 0..count {
            let header = &mut self.headers[i];
            header.msg_hdr.msg_name = self.addrs[i].as_ptr().cast_mut().cast();
            header.msg_hdr.msg_namelen = self.addrs[i].len();
            header.msg_hdr.msg_iov = std::ptr::from_mut(&mut self.iovecs[i]);
            header.msg_hdr.msg_iovlen = 1;
            header.msg_hdr.msg_control = std::ptr::null_mut();
            header.msg_hdr.msg_controllen = 0;
            header.msg_hdr.msg_flags = 0;
            header.msg_len = 0;
        }
        let mut sent = 0;
        let mut failed = 0;
        while sent < count {
            // SAFETY: headers[sent..count] point at live iovecs over `bufs` and at live socket
            // addresses with their lengths; nothing is moved or freed during the call.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    self.headers[sent..].as_mut_ptr(),
                    u32::try_from(count - sent).unwrap_or(0),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                sent += usize::try_from(n).unwrap_or(0);
            } else {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Skip the datagram that failed (buffer full, unreachable): UDP clients retry.
                failed += 1;
                sent += 1;
            }
        }
        failed
    }
}

/// Everything a worker thread needs.
pub(crate) struct Worker {
    pub socket: Arc<Socket>,
    pub handler: DnsHandler,
    pub counters: Arc<Counters>,
    pub stop: Arc<AtomicBool>,
}

impl Worker {
    /// The receive loop; returns when `stop` is set.
    pub(crate) fn run(self) {
        let mut recv = RecvBatch::new();
        let mut send = SendBatch::new();
        while !self.stop.load(Ordering::Relaxed) {
            let n = match recv.recv(&self.socket) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "udp receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            // One clock read per batch: TTL arithmetic is in whole seconds anyway.
            let now = Instant::now();
            for i in 0..n {
                bump(&self.counters.udp_queries);
                let (Some(data), Some(from)) = recv.get(i) else {
                    bump(&self.counters.dropped);
                    continue;
                };
                let out = send.next_buf();
                match self
                    .handler
                    .fast(data, from.ip(), Transport::Udp, now, &self.counters, out)
                {
                    Fast::Reply | Fast::ReplyAndRefresh(_) => send.commit(from.into()),
                    Fast::Drop => {}
                    Fast::Miss(key) => self.spawn_lookup(data.to_vec(), key, from),
                }
            }
            let failed = send.flush(&self.socket);
            for _ in 0..failed {
                bump(&self.counters.dropped);
            }
        }
    }

    /// Answers a cache miss on the runtime and sends the reply from this worker's socket.
    fn spawn_lookup(&self, request: Vec<u8>, key: KeyBuf, from: SocketAddr) {
        let handler = self.handler.clone();
        let socket = Arc::clone(&self.socket);
        let counters = Arc::clone(&self.counters);
        self.handler.runtime.spawn(async move {
            let sent = match handler.lookup(&request, &key, Transport::Udp).await {
                Some(reply) => socket
                    .send_to_with_flags(&reply, &from.into(), libc::MSG_DONTWAIT)
                    .is_ok(),
                None => false,
            };
            if !sent {
                bump(&counters.dropped);
            }
        });
    }
}
