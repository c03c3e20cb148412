//! Backend selection for a service: connection tracking first, then `ClientIP` affinity, then the
//! service's Maglev table.

use cnikit_ebpf_common::{
    conntrack::{CT_KIND_SERVICE, CtKey, CtValue},
    hash::flow_hash,
    service::{AffinityKey, AffinityValue, SERVICE_FLAG_AFFINITY, ServiceValue, maglev_index},
};

use super::{AFFINITY, CT, conntrack, packet::Packet, stats};

/// The backend chosen for a packet to a VIP.
pub(crate) struct Selection {
    pub(crate) backend_addr: u32,
    pub(crate) backend_port: u16,
    pub(crate) backend_slot: u16,
    pub(crate) service_id: u32,
    pub(crate) service_rev: u32,
    pub(crate) service_generation: u32,
    /// The VIP and port the client addressed (replies must come from them).
    pub(crate) vip: u32,
    pub(crate) vport: u16,
    /// The connection-tracking entry that already held this choice; `None` for a new choice.
    existing: Option<*mut CtValue>,
    /// Refresh the client's affinity entry when the choice is committed.
    affinity: bool,
}

#[inline(always)]
fn service_key(p: &Packet) -> CtKey {
    CtKey {
        saddr: p.saddr,
        daddr: p.daddr,
        sport: p.sport,
        dport: p.dport,
        proto: p.proto,
        kind: CT_KIND_SERVICE,
        _pad: 0,
    }
}

/// Whether `slot` of `svc` still holds the backend `addr:port`. Userspace keeps a backend in its
/// slot for as long as it stays in the service, so this is "the backend never left".
#[inline(always)]
fn holds(svc: &ServiceValue, slot: u16, addr: u32, port: u16) -> bool {
    svc.backend(usize::from(slot)) == Some((addr, port))
}

/// Chooses the backend for `p`; `None` when the service has no backend to offer.
///
/// An established connection keeps its backend. When the service changed since, the backend is
/// checked: TCP connections keep a backend even after it left the service (graceful termination);
/// other flows move to a backend still in the service.
// Not inlined: its own BPF function, so its stack frame does not add to the caller's (older
// verifiers cap the combined stack of a call chain at 512 bytes).
#[inline(never)]
pub(crate) fn select(p: &Packet, svc: &ServiceValue, now: u64) -> Option<Selection> {
    let base = Selection {
        backend_addr: 0,
        backend_port: 0,
        backend_slot: 0,
        service_id: svc.id,
        service_rev: svc.rev,
        service_generation: svc.generation,
        vip: p.daddr,
        vport: p.dport,
        existing: None,
        affinity: svc.flags & SERVICE_FLAG_AFFINITY != 0,
    };
    if !p.is_syn_only() {
        if let Some(entry) = conntrack::lookup(&service_key(p), now) {
            // SAFETY: map values stay valid for the whole program run.
            let e = unsafe { &*entry };
            // Gone from the service: TCP connections stay (graceful termination), other flows
            // move to a backend still in it.
            let keep = e.service_generation == svc.generation
                && (e.service_rev == svc.rev
                    || holds(svc, e.backend_slot, e.backend_addr, e.backend_port)
                    || p.is_tcp());
            if keep {
                return Some(Selection {
                    backend_addr: e.backend_addr,
                    backend_port: e.backend_port,
                    backend_slot: e.backend_slot,
                    existing: Some(entry),
                    affinity: false,
                    ..base
                });
            }
        }
    }
    if svc.count == 0 {
        return None;
    }
    if base.affinity {
        let key = AffinityKey {
            client: p.saddr,
            service_id: svc.id,
        };
        if let Some(a) = AFFINITY.get_ptr(&key) {
            // SAFETY: map values stay valid for the whole program run.
            let a = unsafe { &*a };
            let timeout = u64::from(svc.affinity_timeout_s) * 1_000_000_000;
            if a.generation == svc.generation
                && now.saturating_sub(a.last_used_ns) < timeout
                && holds(svc, a.backend_slot, a.backend_addr, a.backend_port)
            {
                return Some(Selection {
                    backend_addr: a.backend_addr,
                    backend_port: a.backend_port,
                    backend_slot: a.backend_slot,
                    ..base
                });
            }
        }
    }
    // With affinity every connection of a client hashes alike (no source port).
    let sport = if base.affinity { 0 } else { p.sport };
    let index = maglev_index(flow_hash(p.saddr, p.daddr, sport, p.dport, p.proto));
    let slot = *svc.lut.get(index)?;
    let (addr, port) = svc.backend(usize::from(slot))?;
    Some(Selection {
        backend_addr: addr,
        backend_port: port,
        backend_slot: slot,
        ..base
    })
}

/// Records the choice once policy allowed the packet: a new service entry (and affinity entry),
/// or a refresh of the existing one.
#[inline(always)]
pub(crate) fn commit(p: &Packet, s: &Selection, now: u64) {
    if let Some(entry) = s.existing {
        conntrack::touch(entry, p, now);
        // SAFETY: as in `conntrack::touch`.
        unsafe { (*entry).service_rev = s.service_rev };
        return;
    }
    let value = CtValue {
        last_seen_ns: now,
        backend_addr: s.backend_addr,
        backend_port: s.backend_port,
        backend_slot: s.backend_slot,
        service_id: s.service_id,
        service_rev: s.service_rev,
        service_generation: s.service_generation,
        ..CtValue::default()
    };
    // An LRU map makes room by evicting; a failure here only costs this flow its stickiness.
    let _ = CT.insert(&service_key(p), &value, 0);
    if s.affinity {
        let key = AffinityKey {
            client: p.saddr,
            service_id: s.service_id,
        };
        let value = AffinityValue {
            last_used_ns: now,
            backend_addr: s.backend_addr,
            backend_port: s.backend_port,
            backend_slot: s.backend_slot,
            generation: s.service_generation,
            _pad: 0,
        };
        let _ = AFFINITY.insert(&key, &value, 0);
    }
    stats::service_connection(s.service_id);
}
