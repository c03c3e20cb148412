//! The reference model: the dataplane's semantics in plain Rust (see [`ReferenceModel`]).

use std::{
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use cnikit_ebpf_common::{
    hash::flow_hash,
    net::{IPPROTO_TCP, IPPROTO_UDP, ipv4_raw, port_raw},
    service::maglev_index,
};

use crate::{
    Capacity, ConntrackEntry, DropReason, EndpointCounters, EndpointPolicy, Error, Hook, Packet,
    PacketPath, PolicyTable, Protocol, Result, Service, ServiceCounters, ServiceKey, ServiceTable,
    Statistics, Table, Timeouts, Transport, Verdict, compile,
    ids::IdAllocator,
    maglev,
    packet::{Quoted, tcp_flags},
    service::assign_slots,
};

/// Nanoseconds of `CLOCK_MONOTONIC`, the clock `bpf_ktime_get_ns()` reads.
pub(crate) fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(Duration::from)
        .unwrap_or_default();
    u64::try_from(now.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Clone, Debug)]
struct ModelService {
    service: Service,
    id: u32,
    generation: u32,
    /// Backend slots (see `assign_slots`): an entry stays with its backend while the backend
    /// holds the slot it had when the entry was made.
    slots: Vec<Option<SocketAddrV4>>,
    /// Backends in Maglev order, and the table indexing them.
    ordered: Vec<SocketAddrV4>,
    table: Vec<u16>,
}

impl ModelService {
    fn holds(&self, slot: usize, backend: SocketAddrV4) -> bool {
        self.slots.get(slot) == Some(&Some(backend))
    }
}

#[derive(Clone, Debug)]
struct ModelEndpoint {
    id: u32,
    policy: EndpointPolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Flow,
    Service,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Tuple {
    kind: Kind,
    protocol: u8,
    src: SocketAddrV4,
    dst: SocketAddrV4,
}

impl Tuple {
    fn reversed(self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            ..self
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Track {
    last_seen: u64,
    closing: bool,
    // Service entries.
    backend: Option<SocketAddrV4>,
    slot: usize,
    generation: u32,
    // Flow entries.
    egress: bool,
    ingress: bool,
    reply_source: Option<SocketAddrV4>,
    service_id: u32,
}

#[derive(Clone, Copy, Debug)]
struct Affinity {
    backend: SocketAddrV4,
    slot: usize,
    generation: u32,
    last_used: u64,
}

/// The choice for a packet to a VIP.
#[derive(Clone, Copy, Debug)]
struct Choice {
    backend: SocketAddrV4,
    slot: usize,
    service_id: u32,
    generation: u32,
    vip: SocketAddrV4,
    new: bool,
    affinity: bool,
}

/// The reference model: the dataplane's semantics in plain Rust, with no kernel involved.
///
/// It implements the same traits as [`crate::Dataplane`] and processes [`Packet`]s the way the
/// programs do, written from the specification rather than from the kernel code: services are
/// sets of backends, policies are evaluated rule by rule (no trie flattening), connection
/// tracking is a plain map. The differential tests drive both with the same generated sequences
/// and require equal verdicts, rewritten packets, counters and connection-tracking tables.
///
/// ```
/// use std::net::{Ipv4Addr, SocketAddrV4};
/// use cnikit_ebpf_dataplane::{
///     Hook, Packet, PacketPath, ReferenceModel, Service, ServiceKey, ServiceTable, Verdict,
///     tcp_flags,
/// };
///
/// # fn main() -> Result<(), cnikit_ebpf_dataplane::Error> {
/// let mut model = ReferenceModel::default();
/// let vip = ServiceKey::tcp(Ipv4Addr::new(198, 19, 0, 1), 80);
/// let backend = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 10), 8080);
/// model.upsert_service(&Service::new(vip, [backend]))?;
/// let client = (Ipv4Addr::new(198, 18, 0, 2), 40000);
/// let syn = Packet::tcp(client, (vip.vip, 80), tcp_flags::SYN);
/// match model.process(Hook::FromEndpoint, &syn)? {
///     Verdict::Pass(p) => assert_eq!((p.dst, p.transport.ports()), (*backend.ip(), Some((40000, 8080)))),
///     other => panic!("{other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ReferenceModel {
    timeouts: Timeouts,
    services: BTreeMap<ServiceKey, ModelService>,
    service_ids: IdAllocator,
    service_stats: HashMap<u32, ServiceCounters>,
    endpoints: BTreeMap<Ipv4Addr, ModelEndpoint>,
    endpoint_ids: IdAllocator,
    endpoint_stats: HashMap<u32, EndpointCounters>,
    tracks: HashMap<Tuple, Track>,
    node_addrs: std::collections::BTreeSet<Ipv4Addr>,
    affinity: HashMap<(Ipv4Addr, u32), Affinity>,
    next_generation: u32,
    /// Fixed time (tests), or the monotonic clock when `None`.
    clock: Option<u64>,
}

impl Default for ReferenceModel {
    fn default() -> Self {
        Self::new(Capacity::default(), Timeouts::default())
    }
}

impl ReferenceModel {
    /// A model with the given table capacities (services, endpoints) and timeouts.
    #[must_use]
    pub fn new(capacity: Capacity, timeouts: Timeouts) -> Self {
        Self {
            service_ids: IdAllocator::new(capacity.services),
            endpoint_ids: IdAllocator::new(capacity.endpoints),
            timeouts,
            services: BTreeMap::new(),
            service_stats: HashMap::new(),
            endpoints: BTreeMap::new(),
            endpoint_stats: HashMap::new(),
            tracks: HashMap::new(),
            node_addrs: std::collections::BTreeSet::new(),
            affinity: HashMap::new(),
            next_generation: 1,
            clock: None,
        }
    }

    /// Freezes the model's clock at `now_ns` (`None`: follow `CLOCK_MONOTONIC`), to test
    /// timeouts without waiting.
    pub fn set_clock(&mut self, now_ns: Option<u64>) {
        self.clock = now_ns;
    }

    fn now(&self) -> u64 {
        self.clock.unwrap_or_else(monotonic_ns)
    }

    fn fresh(&self, protocol: u8, track: &Track, now: u64) -> bool {
        let timeout = if protocol != IPPROTO_TCP {
            self.timeouts.other
        } else if track.closing {
            self.timeouts.tcp_closing
        } else {
            self.timeouts.tcp
        };
        Duration::from_nanos(now.saturating_sub(track.last_seen)) < timeout
    }

    fn lookup(&self, tuple: &Tuple, now: u64) -> Option<Track> {
        self.tracks
            .get(tuple)
            .filter(|t| self.fresh(tuple.protocol, t, now))
            .copied()
    }

    fn touch(&mut self, tuple: &Tuple, closing: bool, now: u64) {
        if let Some(track) = self.tracks.get_mut(tuple) {
            track.last_seen = now;
            track.closing |= closing;
        }
    }

    fn write_service(&mut self, service: &Service) -> Result<()> {
        service.validate()?;
        let ordered = maglev::ordered(&service.backends);
        let table = maglev::table(&ordered);
        let (id, generation, old_slots) = match self.services.get(&service.key) {
            Some(existing) => (existing.id, existing.generation, existing.slots.clone()),
            None => {
                let (id, _) = self.service_ids.allocate().ok_or(Error::CapacityExceeded {
                    table: Table::Services,
                    capacity: self.service_ids.capacity(),
                })?;
                self.service_stats.insert(id, ServiceCounters::default());
                self.next_generation += 1;
                (id, self.next_generation, Vec::new())
            }
        };
        let slots = assign_slots(&old_slots, &service.backends);
        self.services.insert(
            service.key,
            ModelService {
                service: service.clone(),
                id,
                generation,
                slots,
                ordered,
                table,
            },
        );
        Ok(())
    }

    /// The backend for a packet to `svc` (see `cnikit_from_ep`); `None` means "reject".
    fn choose(
        &self,
        svc: &ModelService,
        client: SocketAddrV4,
        vip: SocketAddrV4,
        protocol: u8,
        syn_only: bool,
        now: u64,
    ) -> Option<Choice> {
        let base = Choice {
            backend: vip,
            slot: 0,
            service_id: svc.id,
            generation: svc.generation,
            vip,
            new: true,
            affinity: svc.service.client_ip_affinity.is_some(),
        };
        let key = Tuple {
            kind: Kind::Service,
            protocol,
            src: client,
            dst: vip,
        };
        if !syn_only && let Some(track) = self.lookup(&key, now) {
            let backend = track.backend.unwrap_or(vip);
            let still_there = svc.holds(track.slot, backend);
            if track.generation == svc.generation && (still_there || protocol == IPPROTO_TCP) {
                return Some(Choice {
                    backend,
                    slot: track.slot,
                    new: false,
                    affinity: false,
                    ..base
                });
            }
        }
        if svc.ordered.is_empty() {
            return None;
        }
        if let Some(timeout) = svc.service.client_ip_affinity
            && let Some(a) = self.affinity.get(&(*client.ip(), svc.id))
        {
            let timeout_ns = timeout.as_secs().saturating_mul(1_000_000_000);
            if a.generation == svc.generation
                && now.saturating_sub(a.last_used) < timeout_ns
                && svc.holds(a.slot, a.backend)
            {
                return Some(Choice {
                    backend: a.backend,
                    slot: a.slot,
                    ..base
                });
            }
        }
        let sport = if base.affinity { 0 } else { client.port() };
        let hash = flow_hash(
            ipv4_raw(client.ip().octets()),
            ipv4_raw(vip.ip().octets()),
            port_raw(sport),
            port_raw(vip.port()),
            protocol,
        );
        let backend = svc.ordered[usize::from(svc.table[maglev_index(hash)])];
        Some(Choice {
            backend,
            slot: svc.slots.iter().position(|s| *s == Some(backend))?,
            ..base
        })
    }

    fn commit(
        &mut self,
        client: SocketAddrV4,
        protocol: u8,
        choice: &Choice,
        closing: bool,
        now: u64,
    ) {
        let key = Tuple {
            kind: Kind::Service,
            protocol,
            src: client,
            dst: choice.vip,
        };
        if !choice.new {
            self.touch(&key, closing, now);
            return;
        }
        self.tracks.insert(
            key,
            Track {
                last_seen: now,
                backend: Some(choice.backend),
                slot: choice.slot,
                generation: choice.generation,
                ..Track::default()
            },
        );
        if choice.affinity {
            self.affinity.insert(
                (*client.ip(), choice.service_id),
                Affinity {
                    backend: choice.backend,
                    slot: choice.slot,
                    generation: choice.generation,
                    last_used: now,
                },
            );
        }
        if let Some(stats) = self.service_stats.get_mut(&choice.service_id) {
            stats.connections += 1;
        }
    }

    /// Whether an ICMP error quoting `quoted` relates to a tracked flow that a policy check let
    /// through (either direction).
    fn related(&self, quoted: &Tuple, now: u64) -> bool {
        [*quoted, quoted.reversed()].iter().any(|t| {
            self.lookup(t, now)
                .is_some_and(|track| track.egress || track.ingress)
        })
    }

    fn endpoint_counters(&mut self, addr: Ipv4Addr) -> Option<&mut EndpointCounters> {
        let id = self.endpoints.get(&addr)?.id;
        self.endpoint_stats.get_mut(&id)
    }

    fn count_drop(&mut self, addr: Ipv4Addr, reason: DropReason) {
        if let Some(c) = self.endpoint_counters(addr) {
            c.drops.bump(reason);
        }
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one packet path, kept in one piece to read"
    )]
    fn leaving_endpoint(&mut self, p: &Packet, now: u64) -> Verdict {
        let protocol = p.transport.protocol();
        let ports = p.transport.ports();
        let (sport, dport) = ports.unwrap_or((0, 0));
        let syn_only = is_syn_only(p);
        let closing = is_closing(p);
        let len = p.frame_len() as u64;
        let client = SocketAddrV4::new(p.src, sport);
        let vip = SocketAddrV4::new(p.dst, dport);

        let mut choice = None;
        if ports.is_some() && (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP) {
            let key = ServiceKey {
                vip: p.dst,
                port: dport,
                protocol: Protocol::from_number(protocol).unwrap_or(Protocol::Tcp),
            };
            if let Some(svc) = self.services.get(&key) {
                match self.choose(svc, client, vip, protocol, syn_only, now) {
                    Some(c) => choice = Some(c),
                    None => {
                        let id = svc.id;
                        if let Some(s) = self.service_stats.get_mut(&id) {
                            s.rejected += 1;
                        }
                        self.count_drop(p.src, DropReason::NoBackends);
                        return Verdict::Reject(port_unreachable(p, sport, dport));
                    }
                }
            }
        }
        let dst = choice.map_or(vip, |c| c.backend);
        let flow = Tuple {
            kind: Kind::Flow,
            protocol,
            src: client,
            dst,
        };

        // Egress policy with connection tracking (see `policy::egress_allowed` in the kernel).
        let existing = self.lookup(&flow, now);
        let mut allowed = quoted_flow(p)
            .is_some_and(|q| self.related(&q, now))
            .then_some(true);
        match existing {
            _ if allowed.is_some() => {}
            Some(track) if !syn_only && track.egress => {
                self.touch(&flow, closing, now);
                self.set_reply_source(&flow, choice.as_ref());
                allowed = Some(true);
            }
            Some(_) => {}
            None if !syn_only => {
                let reverse = flow.reversed();
                if self.lookup(&reverse, now).is_some_and(|r| r.ingress) {
                    self.touch(&reverse, closing, now);
                    allowed = Some(true);
                }
            }
            None => {}
        }
        if allowed.is_none() {
            let policy_denies = self.endpoints.get(&p.src).is_some_and(|ep| {
                ep.policy.egress.is_some()
                    && !ep
                        .policy
                        .allows(true, *dst.ip(), protocol, ports.map(|_| dst.port()))
            });
            if policy_denies {
                if existing.is_some()
                    && let Some(t) = self.tracks.get_mut(&flow)
                {
                    t.egress = false;
                }
                allowed = Some(false);
            } else if existing.is_some() && !syn_only {
                if let Some(t) = self.tracks.get_mut(&flow) {
                    t.egress = true;
                }
                self.touch(&flow, closing, now);
                self.set_reply_source(&flow, choice.as_ref());
                allowed = Some(true);
            } else {
                self.tracks.insert(
                    flow,
                    Track {
                        last_seen: now,
                        closing,
                        egress: true,
                        reply_source: choice.map(|c| c.vip),
                        service_id: choice.map_or(0, |c| c.service_id),
                        ..Track::default()
                    },
                );
                allowed = Some(true);
            }
        }
        if allowed != Some(true) {
            self.count_drop(p.src, DropReason::EgressPolicy);
            return Verdict::Drop;
        }

        let mut out = p.clone();
        if let Some(c) = choice {
            self.commit(client, protocol, &c, closing, now);
            out.dst = *c.backend.ip();
            set_ports(&mut out.transport, sport, c.backend.port());
            if let Some(s) = self.service_stats.get_mut(&c.service_id) {
                s.packets += 1;
                s.bytes += len;
            }
        }
        if let Some(c) = self.endpoint_counters(p.src) {
            c.tx_packets += 1;
            c.tx_bytes += len;
        }
        Verdict::Pass(out)
    }

    fn set_reply_source(&mut self, flow: &Tuple, choice: Option<&Choice>) {
        if let (Some(c), Some(t)) = (choice, self.tracks.get_mut(flow)) {
            t.reply_source = Some(c.vip);
            t.service_id = c.service_id;
        }
    }

    fn entering_endpoint(&mut self, p: &Packet, now: u64) -> Verdict {
        let protocol = p.transport.protocol();
        let ports = p.transport.ports();
        let (sport, dport) = ports.unwrap_or((0, 0));
        let syn_only = is_syn_only(p);
        let closing = is_closing(p);
        let len = p.frame_len() as u64;
        let flow = Tuple {
            kind: Kind::Flow,
            protocol,
            src: SocketAddrV4::new(p.src, sport),
            dst: SocketAddrV4::new(p.dst, dport),
        };
        let existing = self.lookup(&flow, now);
        let mut out = p.clone();
        let mut verdict = quoted_flow(p)
            .is_some_and(|q| {
                let rejected_by_service = q.src.ip() == &p.dst
                    && Protocol::from_number(q.protocol).is_some_and(|protocol| {
                        self.services.contains_key(&ServiceKey {
                            vip: *q.dst.ip(),
                            port: q.dst.port(),
                            protocol,
                        })
                    });
                self.related(&q, now) || rejected_by_service
            })
            .then_some(true);
        match existing {
            _ if verdict.is_some() => {}
            Some(track) if !syn_only && track.ingress => {
                self.touch(&flow, closing, now);
                verdict = Some(true);
            }
            Some(_) => {}
            None if !syn_only => {
                let reverse = flow.reversed();
                if let Some(r) = self.lookup(&reverse, now).filter(|r| r.egress) {
                    self.touch(&reverse, closing, now);
                    if let (Some(source), true) = (r.reply_source, ports.is_some()) {
                        out.src = *source.ip();
                        set_ports(&mut out.transport, source.port(), dport);
                        if let Some(s) = self.service_stats.get_mut(&r.service_id) {
                            s.reply_packets += 1;
                            s.reply_bytes += len;
                        }
                    }
                    verdict = Some(true);
                }
            }
            None => {}
        }
        if verdict.is_none() {
            let from_node = self.node_addrs.contains(&p.src);
            let policy_denies = self.endpoints.get(&p.dst).is_some_and(|ep| {
                ep.policy.ingress.is_some()
                    && !from_node
                    && !ep
                        .policy
                        .allows(false, p.src, protocol, ports.map(|(_, d)| d))
            });
            if policy_denies {
                if let Some(t) = self.tracks.get_mut(&flow).filter(|_| existing.is_some()) {
                    t.ingress = false;
                }
                self.count_drop(p.dst, DropReason::IngressPolicy);
                return Verdict::Drop;
            }
            if existing.is_some() {
                if let Some(t) = self.tracks.get_mut(&flow) {
                    t.ingress = true;
                }
                self.touch(&flow, closing, now);
            } else {
                self.tracks.insert(
                    flow,
                    Track {
                        last_seen: now,
                        closing,
                        ingress: true,
                        ..Track::default()
                    },
                );
            }
        }
        if let Some(c) = self.endpoint_counters(p.dst) {
            c.rx_packets += 1;
            c.rx_bytes += len;
        }
        Verdict::Pass(out)
    }
}

/// For an ICMP error, the flow of the packet it quotes (ports zero for protocols without).
fn quoted_flow(p: &Packet) -> Option<Tuple> {
    match &p.transport {
        Transport::Icmp {
            icmp_type: 3 | 11 | 12,
            quoted: Some(q),
            ..
        } => {
            let with_ports = Protocol::from_number(q.protocol).is_some();
            let (sport, dport) = if with_ports {
                (q.sport, q.dport)
            } else {
                (0, 0)
            };
            Some(Tuple {
                kind: Kind::Flow,
                protocol: q.protocol,
                src: SocketAddrV4::new(q.src, sport),
                dst: SocketAddrV4::new(q.dst, dport),
            })
        }
        _ => None,
    }
}

fn is_syn_only(p: &Packet) -> bool {
    matches!(p.transport, Transport::Tcp { flags, .. }
        if flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN)
}

fn is_closing(p: &Packet) -> bool {
    matches!(p.transport, Transport::Tcp { flags, .. }
        if flags & (tcp_flags::FIN | tcp_flags::RST) != 0)
}

fn set_ports(transport: &mut Transport, new_sport: u16, new_dport: u16) {
    match transport {
        Transport::Tcp { sport, dport, .. }
        | Transport::Udp { sport, dport }
        | Transport::Sctp { sport, dport } => {
            *sport = new_sport;
            *dport = new_dport;
        }
        Transport::Icmp { .. } => {}
    }
}

/// The ICMP port unreachable the datapath answers a packet to a service without backends with:
/// it quotes the IPv4 header and the UDP header or the base TCP header.
fn port_unreachable(p: &Packet, sport: u16, dport: u16) -> Packet {
    let quote = if p.transport.protocol() == IPPROTO_TCP {
        40
    } else {
        28
    };
    let frame = p.to_frame();
    let payload = frame.get(14 + 28..14 + quote).unwrap_or_default().to_vec();
    Packet {
        src: p.dst,
        dst: p.src,
        transport: Transport::Icmp {
            icmp_type: 3,
            code: 3,
            quoted: Some(Quoted {
                src: p.src,
                dst: p.dst,
                protocol: p.transport.protocol(),
                sport,
                dport,
            }),
        },
        payload,
    }
}

impl ServiceTable for ReferenceModel {
    fn upsert_service(&mut self, service: &Service) -> Result<()> {
        self.write_service(service)
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<bool> {
        Ok(match self.services.remove(key) {
            Some(svc) => {
                self.service_ids.release(svc.id);
                self.service_stats.remove(&svc.id);
                true
            }
            None => false,
        })
    }

    fn service(&self, key: &ServiceKey) -> Option<Service> {
        self.services.get(key).map(|s| s.service.clone())
    }

    fn service_keys(&self) -> Vec<ServiceKey> {
        self.services.keys().copied().collect()
    }
}

impl PolicyTable for ReferenceModel {
    fn add_endpoint(&mut self, addr: Ipv4Addr) -> Result<()> {
        if self.endpoints.contains_key(&addr) {
            return Ok(());
        }
        let (id, _) = self
            .endpoint_ids
            .allocate()
            .ok_or(Error::CapacityExceeded {
                table: Table::Endpoints,
                capacity: self.endpoint_ids.capacity(),
            })?;
        self.endpoint_stats.insert(id, EndpointCounters::default());
        self.endpoints.insert(
            addr,
            ModelEndpoint {
                id,
                policy: EndpointPolicy::default(),
            },
        );
        Ok(())
    }

    fn remove_endpoint(&mut self, addr: Ipv4Addr) -> Result<bool> {
        Ok(match self.endpoints.remove(&addr) {
            Some(ep) => {
                self.endpoint_ids.release(ep.id);
                self.endpoint_stats.remove(&ep.id);
                true
            }
            None => false,
        })
    }

    fn set_policy(&mut self, addr: Ipv4Addr, policy: &EndpointPolicy) -> Result<()> {
        policy.validate(addr)?;
        for (rules, egress) in [(&policy.ingress, false), (&policy.egress, true)] {
            let groups = rules.as_deref().map_or(0, compile::group_count);
            if groups > cnikit_ebpf_common::policy::MAX_RULE_GROUPS {
                return Err(Error::TooManyRuleGroups {
                    endpoint: addr,
                    egress,
                    groups,
                    max: cnikit_ebpf_common::policy::MAX_RULE_GROUPS,
                });
            }
        }
        self.add_endpoint(addr)?;
        if let Some(ep) = self.endpoints.get_mut(&addr) {
            ep.policy = policy.clone();
        }
        Ok(())
    }

    fn clear_policy(&mut self, addr: Ipv4Addr) -> Result<bool> {
        Ok(match self.endpoints.get_mut(&addr) {
            Some(ep) => {
                let had = ep.policy != EndpointPolicy::default();
                ep.policy = EndpointPolicy::default();
                had
            }
            None => false,
        })
    }

    fn policy(&self, addr: Ipv4Addr) -> Option<EndpointPolicy> {
        self.endpoints.get(&addr).map(|ep| ep.policy.clone())
    }

    fn endpoints(&self) -> Vec<Ipv4Addr> {
        self.endpoints.keys().copied().collect()
    }

    fn set_node_addresses(&mut self, addrs: &[Ipv4Addr]) -> Result<()> {
        let wanted: std::collections::BTreeSet<Ipv4Addr> = addrs.iter().copied().collect();
        let max = cnikit_ebpf_common::endpoint::MAX_NODE_ADDRS;
        if wanted.len() > max as usize {
            return Err(Error::CapacityExceeded {
                table: Table::NodeAddresses,
                capacity: max,
            });
        }
        self.node_addrs = wanted;
        Ok(())
    }

    fn node_addresses(&self) -> Vec<Ipv4Addr> {
        self.node_addrs.iter().copied().collect()
    }
}

impl Statistics for ReferenceModel {
    fn service_stats(&self, key: &ServiceKey) -> Result<Option<ServiceCounters>> {
        Ok(self
            .services
            .get(key)
            .and_then(|s| self.service_stats.get(&s.id).copied()))
    }

    fn endpoint_stats(&self, addr: Ipv4Addr) -> Result<Option<EndpointCounters>> {
        Ok(self
            .endpoints
            .get(&addr)
            .and_then(|ep| self.endpoint_stats.get(&ep.id).copied()))
    }

    fn conntrack(&self) -> Result<Vec<ConntrackEntry>> {
        let now = self.now();
        let mut entries: Vec<ConntrackEntry> = self
            .tracks
            .iter()
            .filter(|(tuple, track)| self.fresh(tuple.protocol, track, now))
            .map(|(tuple, track)| match tuple.kind {
                Kind::Service => ConntrackEntry::Service {
                    protocol: tuple.protocol,
                    client: tuple.src,
                    vip: tuple.dst,
                    backend: track.backend.unwrap_or(tuple.dst),
                },
                Kind::Flow => ConntrackEntry::Flow {
                    protocol: tuple.protocol,
                    src: tuple.src,
                    dst: tuple.dst,
                    egress_allowed: track.egress,
                    ingress_allowed: track.ingress,
                    closing: track.closing,
                    reply_source: track.reply_source,
                },
            })
            .collect();
        entries.sort_unstable();
        Ok(entries)
    }
}

impl PacketPath for ReferenceModel {
    fn process(&mut self, hook: Hook, packet: &Packet) -> Result<Verdict> {
        let now = self.now();
        Ok(match hook {
            Hook::FromEndpoint => self.leaving_endpoint(packet, now),
            Hook::ToEndpoint => self.entering_endpoint(packet, now),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Peer, PortMatch, Rule};

    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);

    fn pass(v: Verdict) -> Packet {
        match v {
            Verdict::Pass(p) => p,
            other => panic!("expected pass, got {other:?}"),
        }
    }

    #[test]
    fn service_translation_and_reply() {
        let mut m = ReferenceModel::default();
        let key = ServiceKey::udp(VIP, 53);
        let backend = SocketAddrV4::new(SERVER, 5353);
        m.upsert_service(&Service::new(key, [backend])).unwrap();
        let q = Packet::udp((CLIENT, 4000), (VIP, 53), b"q");
        let out = pass(m.process(Hook::FromEndpoint, &q).unwrap());
        assert_eq!(out.dst, SERVER);
        assert_eq!(out.transport.ports(), Some((4000, 5353)));
        let reply = pass(m.process(Hook::ToEndpoint, &out.reversed()).unwrap());
        assert_eq!(reply.src, VIP);
        assert_eq!(reply.transport.ports(), Some((53, 4000)));
        let stats = m.service_stats(&key).unwrap().unwrap();
        assert_eq!(
            (stats.packets, stats.reply_packets, stats.connections),
            (1, 1, 1)
        );
    }

    #[test]
    fn empty_service_rejects_and_policy_drops_count() {
        let mut m = ReferenceModel::default();
        let key = ServiceKey::tcp(VIP, 80);
        m.upsert_service(&Service::new(key, [])).unwrap();
        m.add_endpoint(CLIENT).unwrap();
        let syn = Packet::tcp((CLIENT, 1234), (VIP, 80), tcp_flags::SYN);
        match m.process(Hook::FromEndpoint, &syn).unwrap() {
            Verdict::Reject(icmp) => {
                assert_eq!((icmp.src, icmp.dst), (VIP, CLIENT));
            }
            other => panic!("{other:?}"),
        }
        m.set_policy(
            SERVER,
            &EndpointPolicy::ingress([Rule::new(
                [Peer::host(Ipv4Addr::new(198, 18, 9, 9))],
                [PortMatch::port(Protocol::Tcp, 80)],
            )]),
        )
        .unwrap();
        let denied = Packet::tcp((CLIENT, 1), (SERVER, 80), tcp_flags::SYN);
        assert_eq!(m.process(Hook::ToEndpoint, &denied).unwrap(), Verdict::Drop);
        let ep = m.endpoint_stats(SERVER).unwrap().unwrap();
        assert_eq!(ep.drops.ingress_policy, 1);
        assert_eq!(
            m.endpoint_stats(CLIENT).unwrap().unwrap().drops.no_backends,
            1
        );
    }

    #[test]
    fn entries_expire_after_their_timeout() {
        let mut m = ReferenceModel::default();
        m.set_clock(Some(1_000));
        m.set_policy(SERVER, &EndpointPolicy::egress([])).unwrap();
        let request = Packet::udp((CLIENT, 1), (SERVER, 53), b"");
        pass(m.process(Hook::ToEndpoint, &request).unwrap());
        // The reply passes egress isolation as a reply...
        pass(m.process(Hook::FromEndpoint, &request.reversed()).unwrap());
        // ...until the flow has been idle longer than the UDP timeout.
        m.set_clock(Some(1_000 + Timeouts::default().other.as_nanos() as u64));
        assert_eq!(
            m.process(Hook::FromEndpoint, &request.reversed()).unwrap(),
            Verdict::Drop
        );
    }
}
