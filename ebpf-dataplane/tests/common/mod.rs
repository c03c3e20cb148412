//! Shared pieces of the real-packet tests: a routed pod network with the dataplane attached to
//! every pod, and small TCP/UDP servers that answer with their own address so a client can tell
//! which backend served it.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test target uses a different subset"
)]

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use cnikit_ebpf_dataplane::{AttachMode, Dataplane, Placement, tcx_supported};
use cnikit_test_support::{netns::TestNetns, pods::PodNetwork};

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const CLIENT2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
pub const TCP_PORT: u16 = 8080;
pub const UDP_PORT: u16 = 5353;
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// Backend pod number `i` (0-based).
pub fn backend_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 10 + i)
}

/// A pod network plus servers; dropping it stops the servers and removes the namespaces.
pub struct Cluster {
    pub net: PodNetwork,
    stop: Arc<AtomicBool>,
    servers: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Pods for `clients` and `backends` (servers on TCP 8080 and UDP 5353 in each backend).
    pub fn new(clients: &[Ipv4Addr], backends: u8) -> Self {
        let mut net = PodNetwork::new().unwrap();
        for &c in clients {
            net.add_pod(c).unwrap();
        }
        let mut cluster = Self {
            net,
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
        };
        for i in 0..backends {
            let index = cluster.net.add_pod(backend_ip(i)).unwrap();
            cluster.serve(index, TCP_PORT, UDP_PORT);
        }
        cluster
    }

    /// Starts the answering servers in pod `index`.
    pub fn serve(&mut self, index: usize, tcp_port: u16, udp_port: u16) {
        let pod = self.net.pod(index);
        let addr = pod.addr;
        let listener = pod
            .netns
            .run(|| TcpListener::bind((addr, tcp_port)))
            .unwrap();
        listener.set_nonblocking(true).unwrap();
        let udp = pod.netns.run(|| UdpSocket::bind((addr, udp_port))).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = self.stop.clone();
        self.servers.push(std::thread::spawn(move || {
            tcp_server(&listener, addr, &stop);
        }));
        let stop = self.stop.clone();
        self.servers
            .push(std::thread::spawn(move || udp_server(&udp, addr, &stop)));
    }

    /// The pod with address `addr`.
    pub fn pod(&self, addr: Ipv4Addr) -> &cnikit_test_support::pods::Pod {
        self.net.pods().iter().find(|p| p.addr == addr).unwrap()
    }

    /// Attaches `dataplane` to every pod's node-side veth.
    pub fn attach(&self, dataplane: &mut Dataplane, mode: AttachMode) {
        for pod in self.net.pods() {
            self.net
                .node()
                .run(|| dataplane.attach_endpoint(&pod.host_if, Placement::NodeSide, mode))
                .unwrap();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for server in self.servers.drain(..) {
            server.join().ok();
        }
    }
}

fn tcp_server(listener: &TcpListener, me: Ipv4Addr, stop: &Arc<AtomicBool>) {
    let mut connections = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let stop = stop.clone();
                connections.push(std::thread::spawn(move || {
                    serve_connection(stream, me, &stop);
                }));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => break,
        }
    }
    for c in connections {
        c.join().ok();
    }
}

/// Answers every line with this backend's address; a line "close" makes the server close.
fn serve_connection(stream: TcpStream, me: Ipv4Addr, stop: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                if line.trim() == "close" {
                    return;
                }
                if writer.write_all(format!("{me}\n").as_bytes()).is_err() {
                    return;
                }
                line.clear();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

fn udp_server(socket: &UdpSocket, me: Ipv4Addr, stop: &AtomicBool) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((_, from)) = socket.recv_from(&mut buf) {
            socket.send_to(me.to_string().as_bytes(), from).ok();
        }
    }
}

/// A TCP connection made from inside a pod, usable from any thread.
pub struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    /// Connects from `netns` (optionally from a fixed local port) to `to`.
    pub fn open(netns: &TestNetns, to: SocketAddrV4) -> io::Result<Self> {
        let stream = netns.run(|| TcpStream::connect_timeout(&SocketAddr::V4(to), IO_TIMEOUT))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        Ok(Self {
            stream: BufReader::new(stream),
        })
    }

    /// One request; returns the address of the backend that answered.
    pub fn ask(&mut self) -> io::Result<Ipv4Addr> {
        self.stream.get_mut().write_all(b"which\n")?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        line.trim()
            .parse()
            .map_err(|_| io::Error::other(format!("bad answer {line:?}")))
    }

    /// The address the client's socket is connected to (what the client believes it talks to).
    pub fn peer(&self) -> SocketAddr {
        self.stream.get_ref().peer_addr().unwrap()
    }

    /// The client's own address and port.
    pub fn local(&self) -> SocketAddr {
        self.stream.get_ref().local_addr().unwrap()
    }

    /// Closes politely and waits for the server's close.
    pub fn close(mut self) {
        self.stream.get_mut().write_all(b"close\n").ok();
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).ok();
    }
}

/// Sends one UDP request from `socket` to `to`; returns (the answering backend, the reply's
/// source as the client sees it).
pub fn udp_ask(socket: &UdpSocket, to: SocketAddrV4) -> io::Result<(Ipv4Addr, SocketAddr)> {
    socket.set_read_timeout(Some(IO_TIMEOUT))?;
    socket.send_to(b"which", to)?;
    let mut buf = [0u8; 64];
    let (n, from) = socket.recv_from(&mut buf)?;
    let backend = std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("bad UDP answer"))?;
    Ok((backend, from))
}

/// A UDP socket bound in `netns`.
pub fn udp_socket(netns: &TestNetns, local: SocketAddrV4) -> UdpSocket {
    netns.run(|| UdpSocket::bind(local)).unwrap()
}

/// The TCX requirement, for `require!(test, TCX, common::tcx())`.
pub const TCX: &str = "TCX (Linux >= 6.6)";

/// Whether this kernel can attach through TCX.
pub fn tcx() -> Result<(), &'static str> {
    if tcx_supported() {
        Ok(())
    } else {
        Err("kernel older than 6.6")
    }
}
