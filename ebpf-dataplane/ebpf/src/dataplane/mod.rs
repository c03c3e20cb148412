//! The Service load-balancing and NetworkPolicy programs and their maps.

mod conntrack;
mod packet;
mod policy;
mod reject;
mod service;
mod stats;

use aya_ebpf::{
    Global,
    bindings::{BPF_F_NO_PREALLOC, TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map},
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray},
    programs::TcContext,
};
use cnikit_ebpf_common::{
    config,
    conntrack::{CT_KIND_FLOW, CtKey, CtValue},
    endpoint::{EndpointKey, EndpointValue, MAX_NODE_ADDRS},
    policy::{PeerPrefix, PortPrefix, RuleBits},
    service::{AffinityKey, AffinityValue, ServiceKey, ServiceValue},
    stats::{DropReason, EndpointStats, ServiceStats},
};

use self::packet::Packet;

// Placeholder sizes, kept small because loading the object for the probe alone creates every
// map; the dataplane's loader always sets the real capacities (`Capacity` in userspace).
#[map(name = "CNK_SERVICES")]
static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::with_max_entries(64, BPF_F_NO_PREALLOC);
#[map(name = "CNK_CT")]
static CT: LruHashMap<CtKey, CtValue> = LruHashMap::with_max_entries(64, 0);
#[map(name = "CNK_AFFINITY")]
static AFFINITY: LruHashMap<AffinityKey, AffinityValue> = LruHashMap::with_max_entries(64, 0);
#[map(name = "CNK_ENDPOINTS")]
static ENDPOINTS: HashMap<EndpointKey, EndpointValue> =
    HashMap::with_max_entries(64, BPF_F_NO_PREALLOC);
#[map(name = "CNK_NODE_ADDRS")]
static NODE_ADDRS: HashMap<EndpointKey, u32> = HashMap::with_max_entries(MAX_NODE_ADDRS, 0);
#[map(name = "CNK_POL_PEERS")]
static POLICY_PEERS: LpmTrie<PeerPrefix, RuleBits> = LpmTrie::with_max_entries(64, 0);
#[map(name = "CNK_POL_PORTS")]
static POLICY_PORTS: LpmTrie<PortPrefix, RuleBits> = LpmTrie::with_max_entries(64, 0);
#[map(name = "CNK_SVC_STATS")]
static SVC_STATS: PerCpuArray<ServiceStats> = PerCpuArray::with_max_entries(64, 0);
#[map(name = "CNK_EP_STATS")]
static EP_STATS: PerCpuArray<EndpointStats> = PerCpuArray::with_max_entries(64, 0);

#[unsafe(no_mangle)]
static CNK_TCP_TIMEOUT_NS: Global<u64> = Global::new(config::DEFAULT_TCP_TIMEOUT_NS);
#[unsafe(no_mangle)]
static CNK_TCP_CLOSE_NS: Global<u64> = Global::new(config::DEFAULT_TCP_CLOSING_TIMEOUT_NS);
#[unsafe(no_mangle)]
static CNK_OTHER_TIMEOUT_NS: Global<u64> = Global::new(config::DEFAULT_OTHER_TIMEOUT_NS);

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: a helper without arguments or side effects.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn endpoint(addr: u32) -> Option<EndpointValue> {
    // SAFETY: the value is 8 bytes copied out at once; the map is created without preallocation,
    // so an update replaces the element instead of rewriting it under us.
    unsafe { ENDPOINTS.get(&EndpointKey { addr }) }.copied()
}

/// Packets leaving an endpoint: service translation, then egress policy.
#[classifier]
pub fn cnikit_from_ep(ctx: TcContext) -> i32 {
    let Some(packet) = packet::parse(&ctx) else {
        return TC_ACT_UNSPEC;
    };
    from_endpoint(&ctx, &packet)
}

#[inline(always)]
fn from_endpoint(ctx: &TcContext, p: &Packet) -> i32 {
    let now = now_ns();
    let len = u64::from(ctx.len());
    let ep = endpoint(p.saddr);

    let mut selection = None;
    if p.has_ports && (p.is_tcp() || p.is_udp()) {
        let key = ServiceKey {
            vip: p.daddr,
            port: p.dport,
            proto: p.proto,
            _pad: 0,
        };
        if let Some(svc) = SERVICES.get_ptr(&key) {
            // SAFETY: map values stay valid for the whole program run (RCU); the map is not
            // preallocated, so an update publishes a new element instead of rewriting this one.
            let svc = unsafe { &*svc };
            match service::select(p, svc, now) {
                Some(s) => selection = Some(s),
                None => return reject::no_backends(ctx, p, svc.id, ep),
            }
        }
    }

    let (daddr, dport) = match &selection {
        Some(s) => (s.backend_addr, s.backend_port),
        None => (p.daddr, p.dport),
    };
    let flow = CtKey {
        saddr: p.saddr,
        daddr,
        sport: p.sport,
        dport,
        proto: p.proto,
        kind: CT_KIND_FLOW,
        _pad: 0,
    };
    if !policy::egress_allowed(ctx, p, &flow, ep.as_ref(), selection.as_ref()) {
        stats::drop(ep.as_ref(), DropReason::EgressPolicy);
        return TC_ACT_SHOT;
    }
    if let Some(s) = &selection {
        service::commit(p, s, now);
        if packet::rewrite_destination(ctx, p, s.backend_addr, s.backend_port).is_err() {
            return TC_ACT_SHOT;
        }
        stats::service_forward(s.service_id, len);
    }
    stats::endpoint_tx(ep.as_ref(), len);
    TC_ACT_UNSPEC
}

/// Packets entering an endpoint: reply translation, then ingress policy.
#[classifier]
pub fn cnikit_to_ep(ctx: TcContext) -> i32 {
    let Some(packet) = packet::parse(&ctx) else {
        return TC_ACT_UNSPEC;
    };
    to_endpoint(&ctx, &packet)
}

#[inline(always)]
fn to_endpoint(ctx: &TcContext, p: &Packet) -> i32 {
    let len = u64::from(ctx.len());
    let ep = endpoint(p.daddr);
    match policy::ingress(ctx, p, ep.as_ref()) {
        policy::Ingress::Deny => {
            stats::drop(ep.as_ref(), DropReason::IngressPolicy);
            TC_ACT_SHOT
        }
        policy::Ingress::Allow => {
            stats::endpoint_rx(ep.as_ref(), len);
            TC_ACT_UNSPEC
        }
        policy::Ingress::Reply {
            rev_nat_addr,
            rev_nat_port,
            service_id,
        } => {
            if packet::rewrite_source(ctx, p, rev_nat_addr, rev_nat_port).is_err() {
                return TC_ACT_SHOT;
            }
            stats::service_reply(service_id, len);
            stats::endpoint_rx(ep.as_ref(), len);
            TC_ACT_UNSPEC
        }
    }
}
