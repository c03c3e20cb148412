//! NetworkPolicy: per-endpoint rule lookups and the connection-tracking rules that let replies of
//! allowed connections through.

use aya_ebpf::maps::lpm_trie::Key;
use cnikit_ebpf_common::{
    conntrack::{CT_EGRESS_ALLOWED, CT_INGRESS_ALLOWED, CT_KIND_FLOW, CT_REV_NAT, CtKey, CtValue},
    endpoint::{
        EP_EGRESS_ENFORCED, EP_EGRESS_GEN, EP_INGRESS_ENFORCED, EP_INGRESS_GEN, EndpointKey,
        EndpointValue,
    },
    policy::{
        PEER_FULL_PREFIX_LEN, PORT_FULL_PREFIX_LEN, PORT_PROTO_PREFIX_LEN, PeerPrefix, PortPrefix,
        policy_slot,
    },
};

use cnikit_ebpf_common::service::ServiceKey;

use aya_ebpf::programs::TcContext;

use super::{
    CT, NODE_ADDRS, POLICY_PEERS, POLICY_PORTS, SERVICES, conntrack, now_ns,
    packet::{self, Packet},
    service::Selection,
};

/// Whether an ICMP error quoting `quoted` relates to a tracked flow (either direction) that a
/// policy check let through.
#[inline(always)]
fn related(quoted: &CtKey, now: u64) -> bool {
    let allowed = CT_EGRESS_ALLOWED | CT_INGRESS_ALLOWED;
    let tracked = |key: &CtKey| {
        // SAFETY: map values stay valid for the whole program run.
        conntrack::lookup(key, now).is_some_and(|e| unsafe { (*e).flags } & allowed != 0)
    };
    tracked(quoted) || tracked(&quoted.reversed())
}

/// Whether the endpoint's rules in one direction allow `remote` with `proto`/`port`. Without a
/// port (ICMP, non-first fragments) only rules that allow every port of the protocol match.
#[inline(always)]
fn rules_allow(ep: &EndpointValue, egress: bool, remote: u32, p: &Packet, port: u16) -> bool {
    let generation_bit = if egress {
        EP_EGRESS_GEN
    } else {
        EP_INGRESS_GEN
    };
    let slot = policy_slot(ep.id, egress, ep.flags & generation_bit != 0);
    let peers = match POLICY_PEERS.get(Key::new(
        PEER_FULL_PREFIX_LEN,
        PeerPrefix::new(slot, remote),
    )) {
        Some(bits) => *bits,
        None => return false,
    };
    if peers == 0 {
        return false;
    }
    let prefix_len = if p.has_ports {
        PORT_FULL_PREFIX_LEN
    } else {
        PORT_PROTO_PREFIX_LEN
    };
    match POLICY_PORTS.get(Key::new(prefix_len, PortPrefix::new(slot, p.proto, port))) {
        Some(bits) => peers & *bits != 0,
        None => false,
    }
}

/// Whether `addr` is one of the node's own addresses.
#[inline(always)]
fn from_node(addr: u32) -> bool {
    NODE_ADDRS.get_ptr(&EndpointKey { addr }).is_some()
}

/// Egress: may the packet leave its endpoint (with `flow` its tuple after translation)? Records
/// the verdict in the flow's entry.
// Not inlined (see `service::select`); BPF functions take at most five arguments.
#[inline(never)]
pub(crate) fn egress_allowed(
    ctx: &TcContext,
    p: &Packet,
    flow: &CtKey,
    ep: Option<&EndpointValue>,
    selection: Option<&Selection>,
) -> bool {
    let now = now_ns();
    if packet::quoted_flow(ctx, p).is_some_and(|q| related(&q, now)) {
        return true;
    }
    let syn_only = p.is_syn_only();
    let existing = conntrack::lookup(flow, now);
    match existing {
        Some(entry) => {
            // SAFETY: map values stay valid for the whole program run.
            if !syn_only && unsafe { (*entry).flags } & CT_EGRESS_ALLOWED != 0 {
                conntrack::touch(entry, p, now);
                set_rev_nat(entry, selection);
                return true;
            }
        }
        None if !syn_only => {
            // A reply of a connection this endpoint accepted.
            if let Some(reverse) = conntrack::lookup(&flow.reversed(), now) {
                // SAFETY: as above.
                if unsafe { (*reverse).flags } & CT_INGRESS_ALLOWED != 0 {
                    conntrack::touch(reverse, p, now);
                    return true;
                }
            }
        }
        None => {}
    }
    if let Some(ep) = ep {
        if ep.flags & EP_EGRESS_ENFORCED != 0 && !rules_allow(ep, true, flow.daddr, p, flow.dport) {
            if let Some(entry) = existing {
                // SAFETY: as in `conntrack::touch`.
                unsafe { (*entry).flags &= !CT_EGRESS_ALLOWED };
            }
            return false;
        }
    }
    match existing {
        Some(entry) if !syn_only => {
            // SAFETY: as in `conntrack::touch`.
            unsafe { (*entry).flags |= CT_EGRESS_ALLOWED };
            conntrack::touch(entry, p, now);
            set_rev_nat(entry, selection);
        }
        _ => {
            // The first packet of a connection: a fresh entry, whatever an old one said.
            let mut value = CtValue {
                last_seen_ns: now,
                flags: CT_EGRESS_ALLOWED,
                ..CtValue::default()
            };
            if let Some(s) = selection {
                value.flags |= CT_REV_NAT;
                value.rev_nat_addr = s.vip;
                value.rev_nat_port = s.vport;
                value.service_id = s.service_id;
            }
            if p.is_closing() {
                value.flags |= cnikit_ebpf_common::conntrack::CT_CLOSING;
            }
            let _ = CT.insert(flow, &value, 0);
        }
    }
    true
}

#[inline(always)]
fn set_rev_nat(entry: *mut CtValue, selection: Option<&Selection>) {
    if let Some(s) = selection {
        // SAFETY: as in `conntrack::touch`.
        unsafe {
            (*entry).flags |= CT_REV_NAT;
            (*entry).rev_nat_addr = s.vip;
            (*entry).rev_nat_port = s.vport;
            (*entry).service_id = s.service_id;
        }
    }
}

/// The ingress verdict for a packet entering its endpoint.
pub(crate) enum Ingress {
    Deny,
    Allow,
    /// A reply of a connection the endpoint opened; through a service when `CT_REV_NAT` was set,
    /// in which case the source must be rewritten to the VIP.
    Reply {
        rev_nat_addr: u32,
        rev_nat_port: u16,
        service_id: u32,
    },
}

/// Ingress: may the packet enter its endpoint? Records the verdict in the flow's entry.
// Not inlined (see `service::select`).
#[inline(never)]
pub(crate) fn ingress(ctx: &TcContext, p: &Packet, ep: Option<&EndpointValue>) -> Ingress {
    let now = now_ns();
    if let Some(q) = packet::quoted_flow(ctx, p) {
        // Related errors, and the rejection of a connection to a service without backends.
        let service = ServiceKey {
            vip: q.daddr,
            port: q.dport,
            proto: q.proto,
            _pad: 0,
        };
        if related(&q, now) || (q.saddr == p.daddr && SERVICES.get_ptr(&service).is_some()) {
            return Ingress::Allow;
        }
    }
    let syn_only = p.is_syn_only();
    let flow = CtKey {
        saddr: p.saddr,
        daddr: p.daddr,
        sport: p.sport,
        dport: p.dport,
        proto: p.proto,
        kind: CT_KIND_FLOW,
        _pad: 0,
    };
    let existing = conntrack::lookup(&flow, now);
    match existing {
        Some(entry) => {
            // SAFETY: map values stay valid for the whole program run.
            if !syn_only && unsafe { (*entry).flags } & CT_INGRESS_ALLOWED != 0 {
                conntrack::touch(entry, p, now);
                return Ingress::Allow;
            }
        }
        None if !syn_only => {
            if let Some(reverse) = conntrack::lookup(&flow.reversed(), now) {
                // SAFETY: as above.
                let r = unsafe { &*reverse };
                if r.flags & CT_EGRESS_ALLOWED != 0 {
                    let (flags, addr, port, id) =
                        (r.flags, r.rev_nat_addr, r.rev_nat_port, r.service_id);
                    conntrack::touch(reverse, p, now);
                    if flags & CT_REV_NAT != 0 && p.has_ports {
                        return Ingress::Reply {
                            rev_nat_addr: addr,
                            rev_nat_port: port,
                            service_id: id,
                        };
                    }
                    return Ingress::Allow;
                }
            }
        }
        None => {}
    }
    if let Some(ep) = ep {
        if ep.flags & EP_INGRESS_ENFORCED != 0
            && !from_node(p.saddr)
            && !rules_allow(ep, false, p.saddr, p, p.dport)
        {
            if let Some(entry) = existing {
                // SAFETY: as in `conntrack::touch`.
                unsafe { (*entry).flags &= !CT_INGRESS_ALLOWED };
            }
            return Ingress::Deny;
        }
    }
    match existing {
        Some(entry) => {
            // SAFETY: as in `conntrack::touch`.
            unsafe { (*entry).flags |= CT_INGRESS_ALLOWED };
            conntrack::touch(entry, p, now);
        }
        None => {
            let mut value = CtValue {
                last_seen_ns: now,
                flags: CT_INGRESS_ALLOWED,
                ..CtValue::default()
            };
            if p.is_closing() {
                value.flags |= cnikit_ebpf_common::conntrack::CT_CLOSING;
            }
            let _ = CT.insert(&flow, &value, 0);
        }
    }
    Ingress::Allow
}
