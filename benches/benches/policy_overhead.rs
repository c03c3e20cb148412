//! `policy_overhead`: what the policy program costs per packet with 1k CIDR rules.
//!
//! - In the kernel, per run of the program (`BPF_PROG_TEST_RUN`, the kernel's own timer): a new
//!   connection without policy, a new connection allowed / denied by 1k CIDR rules, and a packet
//!   of an established connection.
//! - With real packets: a UDP request/response on a new socket each time (every exchange a new
//!   flow, so the policy is evaluated) between two pods, with no program attached and with the
//!   programs plus the 1k-rule ingress policy on the server, interleaved.
//!
//! Needs root. Prints `BENCH policy_overhead rules=1000 ...`.

#![allow(
    clippy::unwrap_used,
    reason = "bench code: a failed unwrap is a failed bench"
)]

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use cnikit_benches::{Summary, privilege, report, smoke_mode, us};
use cnikit_ebpf_dataplane::{
    AttachMode, Capacity, Dataplane, EndpointPolicy, Hook, Ipv4Cidr, Packet, Peer, Placement,
    PolicyTable, PortMatch, Protocol, Rule, tcp_flags,
};
use cnikit_test_support::{pods::PodNetwork, process::pin_current_thread};

const RULES: u32 = 1_000;
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const PORT: u16 = 7000;

/// 1k rules, one CIDR each (999 blocks in 198.19.0.0/16, the last one the client's /24);
/// TCP and UDP to the service port.
fn policy() -> EndpointPolicy {
    let rules = (0..RULES).map(|i| {
        let block = if i + 1 == RULES {
            Ipv4Cidr::new(CLIENT, 24).unwrap()
        } else {
            Ipv4Cidr::new(Ipv4Addr::from(0xc613_0000 + i * 64), 26).unwrap()
        };
        Rule::new(
            [Peer::cidr(block)],
            [
                PortMatch::port(Protocol::Tcp, PORT),
                PortMatch::port(Protocol::Udp, PORT),
            ],
        )
    });
    EndpointPolicy::ingress(rules)
}

fn capacity() -> Capacity {
    Capacity {
        services: 16,
        endpoints: 16,
        conntrack: 65_536,
        affinity: 1_024,
        policy_peer_prefixes: 4_096,
        policy_port_prefixes: 256,
    }
}

fn in_kernel(repeat: u32) -> [(&'static str, Duration); 4] {
    let mut dp = Dataplane::builder().capacity(capacity()).load().unwrap();
    let syn_from = |src: Ipv4Addr| Packet::tcp((src, 40_000), (SERVER, PORT), tcp_flags::SYN);
    let allowed = syn_from(CLIENT);
    let denied = syn_from(Ipv4Addr::new(198, 18, 77, 7));
    dp.add_endpoint(SERVER).unwrap();
    let no_policy = dp.time_packet(Hook::ToEndpoint, &allowed, repeat).unwrap();
    dp.set_policy(SERVER, &policy()).unwrap();
    let syn_allowed = dp.time_packet(Hook::ToEndpoint, &allowed, repeat).unwrap();
    let syn_denied = dp.time_packet(Hook::ToEndpoint, &denied, repeat).unwrap();
    let ack = Packet::tcp((CLIENT, 40_000), (SERVER, PORT), tcp_flags::ACK);
    let established = dp.time_packet(Hook::ToEndpoint, &ack, repeat).unwrap();
    [
        ("syn_no_policy_ns", no_policy),
        ("syn_allowed_ns", syn_allowed),
        ("syn_denied_ns", syn_denied),
        ("established_ns", established),
    ]
}

struct Pair {
    net: PodNetwork,
    _dataplane: Option<Dataplane>,
    stop: Arc<AtomicBool>,
    samples: Vec<Duration>,
}

fn pair(with_programs: bool) -> Pair {
    let mut net = PodNetwork::new().unwrap();
    net.add_pod(CLIENT).unwrap();
    let server = net.add_pod(SERVER).unwrap();
    let dataplane = with_programs.then(|| {
        let mut dp = Dataplane::builder().capacity(capacity()).load().unwrap();
        for pod in net.pods() {
            net.node()
                .run(|| dp.attach_endpoint(&pod.host_if, Placement::NodeSide, AttachMode::Auto))
                .unwrap();
        }
        dp.set_policy(SERVER, &policy()).unwrap();
        dp
    });
    let socket = net
        .pod(server)
        .netns
        .run(|| UdpSocket::bind((SERVER, PORT)))
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        pin_current_thread(0).ok();
        let mut buf = [0u8; 16];
        while !flag.load(Ordering::Relaxed) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                socket.send_to(&buf[..n], from).ok();
            }
        }
    });
    Pair {
        net,
        _dataplane: dataplane,
        stop,
        samples: Vec::new(),
    }
}

impl Pair {
    fn exchange(&mut self, count: usize) {
        let batch: Vec<Duration> = self.net.pod(0).netns.run(|| {
            pin_current_thread(0).ok();
            (0..count)
                .map(|_| {
                    let socket = UdpSocket::bind((CLIENT, 0)).unwrap();
                    socket
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .unwrap();
                    let started = Instant::now();
                    socket
                        .send_to(b"x", SocketAddrV4::new(SERVER, PORT))
                        .unwrap();
                    socket.recv_from(&mut [0u8; 16]).unwrap();
                    started.elapsed()
                })
                .collect()
        });
        self.samples.extend(batch);
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn main() {
    if !privilege::root("policy_overhead bench") {
        return;
    }
    let smoke = smoke_mode();
    let repeat = if smoke { 10_000 } else { 1_000_000 };
    let kernel = in_kernel(repeat);

    let mut plain = pair(false);
    let mut policed = pair(true);
    plain.exchange(5);
    policed.exchange(5);
    plain.samples.clear();
    policed.samples.clear();
    let (rounds, per_round) = if smoke { (1, 50) } else { (20, 500) };
    for _ in 0..rounds {
        plain.exchange(per_round);
        policed.exchange(per_round);
    }
    let (a, b) = (
        Summary::of(&plain.samples).unwrap(),
        Summary::of(&policed.samples).unwrap(),
    );
    let mut fields: Vec<(&str, String)> = vec![("rules", RULES.to_string())];
    fields.extend(
        kernel
            .iter()
            .map(|(name, d)| (*name, d.as_nanos().to_string())),
    );
    fields.push(("rtt_no_program_p50_us", us(a.p50)));
    fields.push(("rtt_policy_p50_us", us(b.p50)));
    fields.push((
        "rtt_overhead_us",
        format!("{:.1}", (b.p50.as_secs_f64() - a.p50.as_secs_f64()) * 1e6),
    ));
    fields.push(("samples", a.count.to_string()));
    let refs: Vec<(&str, &dyn std::fmt::Display)> = fields
        .iter()
        .map(|(k, v)| (*k, v as &dyn std::fmt::Display))
        .collect();
    report("policy_overhead", &refs);
}
