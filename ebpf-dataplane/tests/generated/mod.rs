//! Generated sequences of control operations and packets, run through the kernel programs
//! (`BPF_PROG_TEST_RUN`) and the reference model side by side; every verdict, rewritten packet,
//! control-plane result, counter and connection-tracking entry must agree.
#![allow(dead_code, unreachable_pub, reason = "shared by several test targets")]

use std::{
    fmt::Debug,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use cnikit_ebpf_dataplane::{
    Capacity, ConntrackEntry, Dataplane, EndpointPolicy, Error, Hook, Ipv4Cidr, Packet, PacketPath,
    Peer, PolicyTable, PortMatch, Protocol, Quoted, ReferenceModel, Rule, Service, ServiceKey,
    ServiceTable, Statistics, Timeouts, Transport, Verdict, tcp_flags,
};

/// xorshift64: deterministic and dependency-free.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

const ENDPOINTS: [Ipv4Addr; 6] = [
    Ipv4Addr::new(198, 18, 0, 1),
    Ipv4Addr::new(198, 18, 0, 2),
    Ipv4Addr::new(198, 18, 0, 3),
    Ipv4Addr::new(198, 18, 1, 1),
    Ipv4Addr::new(198, 18, 1, 2),
    Ipv4Addr::new(198, 18, 1, 3),
];
const EXTERNAL: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 18, 9, 1), Ipv4Addr::new(198, 18, 9, 2)];

fn service_keys() -> [ServiceKey; 4] {
    [
        ServiceKey::tcp(Ipv4Addr::new(198, 19, 0, 1), 80),
        ServiceKey::udp(Ipv4Addr::new(198, 19, 0, 1), 53),
        ServiceKey::tcp(Ipv4Addr::new(198, 19, 0, 2), 80),
        ServiceKey::udp(Ipv4Addr::new(198, 19, 0, 3), 5000),
    ]
}

fn timeouts() -> Timeouts {
    // Long enough that nothing expires during a run (expiry is tested on the model alone).
    let hour = Duration::from_secs(3600);
    Timeouts {
        tcp: hour,
        tcp_closing: hour,
        other: hour,
    }
}

fn capacity() -> Capacity {
    Capacity {
        services: 3,
        endpoints: 5,
        conntrack: 65_536,
        affinity: 4_096,
        policy_peer_prefixes: 4_096,
        policy_port_prefixes: 4_096,
    }
}

fn random_backends(rng: &mut Rng, port: u16) -> Vec<SocketAddrV4> {
    let mut pool: Vec<SocketAddrV4> = ENDPOINTS
        .iter()
        .chain(&EXTERNAL)
        .map(|ip| SocketAddrV4::new(*ip, port))
        .collect();
    pool.push(SocketAddrV4::new(ENDPOINTS[3], port + 1));
    let n = rng.below(5);
    let mut chosen = Vec::new();
    for _ in 0..n {
        let b = rng.pick(&pool);
        if !chosen.contains(&b) {
            chosen.push(b);
        }
    }
    chosen
}

fn random_service(rng: &mut Rng) -> Service {
    let key = rng.pick(&service_keys());
    let port = if key.protocol == Protocol::Tcp {
        8080
    } else {
        5353
    };
    let service = Service::new(key, random_backends(rng, port));
    if rng.chance(30) {
        service.with_client_ip_affinity(Duration::from_secs(3600))
    } else {
        service
    }
}

fn random_cidr(rng: &mut Rng) -> Ipv4Cidr {
    rng.pick(&[
        "198.18.0.0/24",
        "198.18.1.0/24",
        "198.18.0.0/16",
        "198.18.0.2/31",
        "198.18.9.0/28",
        "0.0.0.0/0",
        "198.18.1.2/32",
    ])
    .parse()
    .unwrap()
}

fn random_peer(rng: &mut Rng) -> Peer {
    if rng.chance(40) {
        return Peer::host(rng.pick(&ENDPOINTS));
    }
    let mut peer = Peer::cidr(random_cidr(rng));
    for _ in 0..rng.below(3) {
        let inside = rng.pick(&ENDPOINTS);
        let len =
            peer.cidr.prefix_len() + rng.below(usize::from(33 - peer.cidr.prefix_len())) as u8;
        if let Ok(block) = Ipv4Cidr::new(inside, len)
            && (peer.cidr.covers(&block) || rng.chance(5))
        {
            peer = peer.except(block);
        }
    }
    peer
}

fn random_ports(rng: &mut Rng) -> Vec<PortMatch> {
    (0..rng.below(3))
        .map(|_| {
            let protocol = rng.pick(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp]);
            match rng.below(4) {
                0 => PortMatch::any_port(protocol),
                1 => PortMatch::port(protocol, rng.pick(&[8080, 5353, 9000, 8081])),
                2 => PortMatch::range(protocol, 8000..=8100),
                _ => PortMatch::range(protocol, 5000..=5400),
            }
        })
        .collect()
}

fn random_rules(rng: &mut Rng) -> Option<Vec<Rule>> {
    if rng.chance(35) {
        return None;
    }
    Some(
        (0..rng.below(3))
            .map(|_| {
                let peers = (0..rng.below(3))
                    .map(|_| random_peer(rng))
                    .collect::<Vec<_>>();
                Rule::new(peers, random_ports(rng))
            })
            .collect(),
    )
}

/// Where a packet goes next: the destination's to-endpoint hook if it is a local endpoint.
fn is_endpoint(addr: Ipv4Addr) -> bool {
    ENDPOINTS.contains(&addr)
}

fn reply_flags(flags: u8) -> u8 {
    if flags & tcp_flags::SYN != 0 && flags & tcp_flags::ACK == 0 {
        tcp_flags::SYN | tcp_flags::ACK
    } else {
        flags
    }
}

fn as_reply(p: &Packet) -> Packet {
    let mut r = p.reversed();
    if let Transport::Tcp { flags, .. } = &mut r.transport {
        *flags = reply_flags(*flags);
    }
    r
}

/// What the generated sequences exercised (so the test cannot pass by doing nothing).
#[derive(Debug, Default)]
pub struct Coverage {
    pub translated: usize,
    pub replies_translated: usize,
    pub rejected: usize,
    pub dropped: usize,
    pub passed: usize,
    pub control_errors: usize,
}

struct Pair {
    kernel: Dataplane,
    model: ReferenceModel,
    log: Vec<String>,
    coverage: Coverage,
}

impl Pair {
    fn new() -> Self {
        Self {
            kernel: Dataplane::builder()
                .capacity(capacity())
                .timeouts(timeouts())
                .load()
                .unwrap(),
            model: ReferenceModel::new(capacity(), timeouts()),
            log: Vec::new(),
            coverage: Coverage::default(),
        }
    }

    fn fail(&self, what: &str) -> ! {
        let start = self.log.len().saturating_sub(40);
        panic!(
            "{what}\n--- last operations ---\n{}",
            self.log[start..].join("\n")
        );
    }

    fn same<T: PartialEq + Debug>(&self, what: &str, kernel: &T, model: &T) {
        if kernel != model {
            self.fail(&format!(
                "{what} differs:\n kernel {kernel:?}\n model  {model:?}"
            ));
        }
    }

    fn control<T: PartialEq + Debug>(
        &mut self,
        what: &str,
        op: impl Fn(&mut dyn Both) -> Result<T, Error>,
    ) {
        let k = op(&mut self.kernel).map_err(|e| e.to_string());
        let m = op(&mut self.model).map_err(|e| e.to_string());
        self.coverage.control_errors += usize::from(m.is_err());
        self.log.push(format!("{what} -> {m:?}"));
        self.same(what, &k, &m);
    }

    /// Runs `packet` through `hook` on both; returns the common verdict.
    fn packet(&mut self, hook: Hook, packet: &Packet) -> Verdict {
        let k = self
            .kernel
            .process(hook, packet)
            .unwrap_or_else(|e| self.fail(&format!("kernel run of {packet}: {e}")));
        let m = self.model.process(hook, packet).unwrap();
        self.log.push(format!("{hook} {packet} -> {m:?}"));
        self.same(&format!("verdict of {packet} at {hook}"), &k, &m);
        let c = &mut self.coverage;
        match &k {
            Verdict::Pass(out) if hook == Hook::FromEndpoint && out.dst != packet.dst => {
                c.translated += 1;
            }
            Verdict::Pass(out) if hook == Hook::ToEndpoint && out.src != packet.src => {
                c.replies_translated += 1;
            }
            Verdict::Pass(_) => c.passed += 1,
            Verdict::Drop => c.dropped += 1,
            Verdict::Reject(_) => c.rejected += 1,
        }
        k
    }

    /// A connection attempt: the first packet, its delivery, the reply and its delivery, then
    /// optionally one more packet each way and a close.
    fn conversation(&mut self, first: Packet, rounds: usize) {
        let mut forward = first;
        for round in 0..rounds {
            let Some(delivered) = self.one_way(&forward) else {
                return;
            };
            let reply = as_reply(&delivered);
            let Some(back) = self.one_way(&reply) else {
                return;
            };
            // The client's next packet goes to whatever it first addressed.
            let mut next = back.reversed();
            if let Transport::Tcp { flags, .. } = &mut next.transport {
                *flags = if round + 2 == rounds {
                    tcp_flags::FIN | tcp_flags::ACK
                } else {
                    tcp_flags::ACK | tcp_flags::PSH
                };
            }
            forward = next;
        }
    }

    /// One packet from its source to its destination: through the source's from-endpoint hook
    /// (if local) and the destination's to-endpoint hook (if local). `None` if dropped.
    fn one_way(&mut self, packet: &Packet) -> Option<Packet> {
        let mut p = packet.clone();
        if is_endpoint(p.src) {
            match self.packet(Hook::FromEndpoint, &p) {
                Verdict::Pass(out) => p = out,
                Verdict::Drop | Verdict::Reject(_) => return None,
            }
        }
        if is_endpoint(p.dst) {
            match self.packet(Hook::ToEndpoint, &p) {
                Verdict::Pass(out) => p = out,
                Verdict::Drop | Verdict::Reject(_) => return None,
            }
        }
        Some(p)
    }

    fn compare_state(&self) {
        let (kernel, model) = (
            self.kernel.conntrack().unwrap(),
            self.model.conntrack().unwrap(),
        );
        if kernel != model {
            let only = |a: &[ConntrackEntry], b: &[ConntrackEntry]| -> Vec<ConntrackEntry> {
                a.iter().filter(|e| !b.contains(e)).copied().collect()
            };
            self.fail(&format!(
                "conntrack differs:\n only in kernel {:?}\n only in model  {:?}",
                only(&kernel, &model),
                only(&model, &kernel)
            ));
        }
        for key in service_keys() {
            self.same(
                &format!("counters of {key}"),
                &self.kernel.service_stats(&key).unwrap(),
                &self.model.service_stats(&key).unwrap(),
            );
            self.same(
                &format!("service {key}"),
                &self.kernel.service(&key),
                &self.model.service(&key),
            );
        }
        for addr in ENDPOINTS.iter().chain(&EXTERNAL) {
            self.same(
                &format!("counters of {addr}"),
                &self.kernel.endpoint_stats(*addr).unwrap(),
                &self.model.endpoint_stats(*addr).unwrap(),
            );
            self.same(
                &format!("policy of {addr}"),
                &self.kernel.policy(*addr),
                &self.model.policy(*addr),
            );
        }
        self.same(
            "node addresses",
            &self.kernel.node_addresses(),
            &self.model.node_addresses(),
        );
        self.same(
            "endpoints",
            &self.kernel.endpoints(),
            &self.model.endpoints(),
        );
        self.same(
            "services",
            &self.kernel.service_keys(),
            &self.model.service_keys(),
        );
    }
}

/// Both dataplanes behind one object-safe face, for running control operations alike.
trait Both: ServiceTable + PolicyTable {}
impl<T: ServiceTable + PolicyTable> Both for T {}

fn random_packet(rng: &mut Rng) -> Packet {
    let src = if rng.chance(85) {
        rng.pick(&ENDPOINTS)
    } else {
        rng.pick(&EXTERNAL)
    };
    let sport = 40_000 + rng.below(6) as u16;
    let (dst, dport, protocol) = match rng.below(10) {
        0..=4 => {
            let key = rng.pick(&service_keys());
            (key.vip, key.port, key.protocol)
        }
        5..=8 => (
            rng.pick(&ENDPOINTS),
            rng.pick(&[8080, 5353, 9000, 80]),
            rng.pick(&[Protocol::Tcp, Protocol::Udp, Protocol::Sctp]),
        ),
        _ => (rng.pick(&EXTERNAL), 8080, Protocol::Tcp),
    };
    if rng.chance(5) {
        return Packet::icmp_echo(src, dst);
    }
    match protocol {
        Protocol::Tcp => {
            let flags = rng.pick(&[
                tcp_flags::SYN,
                tcp_flags::SYN,
                tcp_flags::ACK,
                tcp_flags::ACK | tcp_flags::PSH,
                tcp_flags::FIN | tcp_flags::ACK,
                tcp_flags::RST,
            ]);
            Packet::tcp((src, sport), (dst, dport), flags)
        }
        Protocol::Udp => Packet::udp((src, sport), (dst, dport), b"payload"),
        Protocol::Sctp => Packet {
            src,
            dst,
            transport: Transport::Sctp { sport, dport },
            payload: Vec::new(),
        },
    }
}

/// Runs `steps` generated operations from `seed`, comparing everything; returns what was
/// exercised.
pub fn run_sequence(seed: u64, steps: usize) -> Coverage {
    let mut rng = Rng(seed);
    let mut pair = Pair::new();
    for step in 0..steps {
        match rng.below(100) {
            0..=9 => {
                let service = random_service(&mut rng);
                pair.control(&format!("upsert {service:?}"), |d| {
                    d.upsert_service(&service)
                });
            }
            10..=15 => {
                let key = rng.pick(&service_keys());
                let backends = random_backends(&mut rng, 8080);
                pair.control(&format!("replace {key} {backends:?}"), |d| {
                    d.replace_backends(&key, &backends)
                });
            }
            16..=18 => {
                let key = rng.pick(&service_keys());
                pair.control(&format!("remove {key}"), |d| d.remove_service(&key));
            }
            19..=22 => {
                let addr = rng.pick(&ENDPOINTS);
                pair.control(&format!("add endpoint {addr}"), |d| d.add_endpoint(addr));
            }
            23..=24 => {
                let addr = rng.pick(&ENDPOINTS);
                pair.control(&format!("remove endpoint {addr}"), |d| {
                    d.remove_endpoint(addr)
                });
            }
            25..=32 => {
                let addr = rng.pick(&ENDPOINTS);
                let policy = EndpointPolicy {
                    ingress: random_rules(&mut rng),
                    egress: random_rules(&mut rng),
                };
                pair.control(&format!("set policy {addr} {policy:?}"), |d| {
                    d.set_policy(addr, &policy)
                });
            }
            33..=34 => {
                let addr = rng.pick(&ENDPOINTS);
                pair.control(&format!("clear policy {addr}"), |d| d.clear_policy(addr));
            }
            35 => {
                let addrs: Vec<Ipv4Addr> = (0..rng.below(3))
                    .map(|_| {
                        if rng.chance(50) {
                            rng.pick(&EXTERNAL)
                        } else {
                            rng.pick(&ENDPOINTS)
                        }
                    })
                    .collect();
                pair.control(&format!("node addresses {addrs:?}"), |d| {
                    d.set_node_addresses(&addrs)
                });
            }
            36..=75 => {
                let first = random_packet(&mut rng);
                let rounds = 1 + rng.below(3);
                pair.conversation(first, rounds);
            }
            76..=90 => {
                let p = random_packet(&mut rng);
                let hook = if rng.chance(50) {
                    Hook::FromEndpoint
                } else {
                    Hook::ToEndpoint
                };
                pair.packet(hook, &p);
            }
            _ => {
                // An ICMP error about a random flow, sent by either end.
                let p = random_packet(&mut rng);
                let Some((sport, dport)) = p.transport.ports() else {
                    continue;
                };
                let quoted = Quoted {
                    src: p.src,
                    dst: p.dst,
                    protocol: p.transport.protocol(),
                    sport,
                    dport,
                };
                let (from, to) = if rng.chance(50) {
                    (p.dst, p.src)
                } else {
                    (p.src, p.dst)
                };
                let error = Packet {
                    src: from,
                    dst: to,
                    transport: Transport::Icmp {
                        icmp_type: rng.pick(&[3, 11]),
                        code: 3,
                        quoted: Some(quoted),
                    },
                    payload: Vec::new(),
                };
                pair.one_way(&error);
            }
        }
        if step % 10 == 9 {
            pair.compare_state();
        }
    }
    pair.compare_state();
    pair.coverage
}
