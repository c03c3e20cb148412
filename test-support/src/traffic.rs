//! Real packets between test namespaces: UDP datagrams sent from one namespace and counted in
//! another.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use crate::netns::TestNetns;

/// A UDP socket bound inside a namespace that counts what arrives.
#[derive(Debug)]
pub struct UdpSink {
    socket: UdpSocket,
}

impl UdpSink {
    /// Binds `addr` inside `netns`.
    ///
    /// # Errors
    /// When the address cannot be bound (not configured in that namespace).
    pub fn bind_in(netns: &TestNetns, addr: SocketAddr) -> io::Result<Self> {
        let socket = netns.run(|| UdpSocket::bind(addr))?;
        Ok(Self { socket })
    }

    /// The bound address.
    ///
    /// # Errors
    /// When the socket's address cannot be read.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Counts datagrams until `expected` arrived or none arrived for `quiet` (bounded by
    /// `expected` receives, each waiting at most `quiet`).
    ///
    /// # Errors
    /// When the socket fails for a reason other than the timeout.
    pub fn receive(&self, expected: usize, quiet: Duration) -> io::Result<usize> {
        self.socket.set_read_timeout(Some(quiet))?;
        let mut buf = [0u8; 2048];
        let mut received = 0;
        while received < expected {
            match self.socket.recv_from(&mut buf) {
                Ok(_) => received += 1,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(received)
    }
}

/// Sends `count` small datagrams from `source` (inside `netns`) to `destination`.
///
/// # Errors
/// When the source cannot be bound or a send fails.
pub fn send_udp(
    netns: &TestNetns,
    source: SocketAddr,
    destination: SocketAddr,
    count: usize,
) -> io::Result<()> {
    netns.run(|| {
        let socket = UdpSocket::bind(source)?;
        for i in 0..count {
            socket.send_to(format!("cnikit {i}").as_bytes(), destination)?;
        }
        Ok(())
    })
}

/// Sends `count` datagrams and returns how many `sink` received, waiting at most `quiet` for each.
///
/// # Errors
/// As [`send_udp`] and [`UdpSink::receive`].
pub fn udp_delivered(
    from: &TestNetns,
    source: SocketAddr,
    sink: &UdpSink,
    count: usize,
    quiet: Duration,
) -> io::Result<usize> {
    send_udp(from, source, sink.local_addr()?, count)?;
    sink.receive(count, quiet)
}
