//! The service table: one hash-map entry per (VIP, port, protocol) holding the whole service —
//! its backends and its Maglev lookup table — so that a single map update replaces a service
//! atomically.
//!
//! The map is created with `BPF_F_NO_PREALLOC`: the kernel then replaces an element by linking a
//! new copy and freeing the old one after an RCU grace period, so a program that is reading the
//! old value keeps a consistent old value and never sees a half-written one.

use crate::{net, pod};

/// Name of the service hash map ([`ServiceKey`] -> [`ServiceValue`]).
pub const SERVICES_MAP: &str = "CNK_SERVICES";
/// Size of every service's Maglev lookup table (a prime). With `N` backends, removing or adding
/// one moves about `1/N` of the table (the unavoidable share) plus a little more: about 1% of the
/// table at 3 backends, 2-3% at 10 (measured in the userspace tests).
pub const MAGLEV_TABLE_SIZE: usize = 1021;
/// The index into a service's Maglev table for a flow hash: `hash * M / 2^32`, uniform over
/// `0..MAGLEV_TABLE_SIZE` and, unlike `%`, bounded in a way the kernel verifier can follow.
#[must_use]
#[inline(always)]
pub const fn maglev_index(hash: u32) -> usize {
    ((hash as u64 * MAGLEV_TABLE_SIZE as u64) >> 32) as usize
}

/// Most backends one service can have.
pub const MAX_BACKENDS: usize = 256;
/// [`ServiceValue::flags`]: `ClientIP` session affinity is on.
pub const SERVICE_FLAG_AFFINITY: u16 = 1;

/// Key of the service map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct ServiceKey {
    /// The virtual IP (packet order, see [`net::ipv4_raw`]).
    pub vip: u32,
    /// The service port (packet order, see [`net::port_raw`]).
    pub port: u16,
    /// [`net::IPPROTO_TCP`] or [`net::IPPROTO_UDP`].
    pub proto: u8,
    /// Always zero.
    pub _pad: u8,
}

impl ServiceKey {
    /// A key from written-order octets and a host-order port.
    #[must_use]
    pub const fn new(vip: [u8; 4], port: u16, proto: u8) -> Self {
        Self {
            vip: net::ipv4_raw(vip),
            port: net::port_raw(port),
            proto,
            _pad: 0,
        }
    }
}

/// Value of the service map: everything the datapath needs about one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ServiceValue {
    /// Dense id of the service: index of its counters in the service statistics array.
    pub id: u32,
    /// Revision: a global counter, bumped on every write of any service. Connection-tracking
    /// entries remember the revision they were checked at; a different one makes the datapath
    /// check that the remembered backend still holds its slot.
    pub rev: u32,
    /// Generation: the revision at which this service was created. It stays the same while the
    /// service is updated; a service removed and created again gets a new one, and the old
    /// incarnation's connection-tracking and affinity entries stop applying.
    pub generation: u32,
    /// `ClientIP` affinity timeout in seconds (with [`SERVICE_FLAG_AFFINITY`]).
    pub affinity_timeout_s: u32,
    /// Number of live backends (zero: connections are rejected).
    pub count: u16,
    /// `SERVICE_FLAG_*` bits.
    pub flags: u16,
    /// Number of leading slots of `backends` in use (live or holes).
    pub slots_used: u16,
    /// Always zero.
    pub _pad0: u16,
    /// Backend addresses by slot (packet order; 0 for an unused slot). A backend keeps its slot
    /// for as long as it stays in the service.
    pub backend_addrs: [u32; MAX_BACKENDS],
    /// Backend ports by slot (packet order; 0 for an unused slot).
    pub backend_ports: [u16; MAX_BACKENDS],
    /// Maglev lookup table: the slot `lut[maglev_index(flow_hash)]` holds a new flow's backend.
    pub lut: [u16; MAGLEV_TABLE_SIZE],
    /// Always zero.
    pub _pad1: [u16; 3],
}

impl ServiceValue {
    /// A service with no backends.
    pub const EMPTY: Self = Self {
        id: 0,
        rev: 0,
        generation: 0,
        affinity_timeout_s: 0,
        count: 0,
        flags: 0,
        slots_used: 0,
        _pad0: 0,
        backend_addrs: [0; MAX_BACKENDS],
        backend_ports: [0; MAX_BACKENDS],
        lut: [0; MAGLEV_TABLE_SIZE],
        _pad1: [0; 3],
    };
}

impl ServiceValue {
    /// The backend in `slot` as (address, port), `None` for an unused or out-of-range slot.
    #[must_use]
    #[inline(always)]
    pub fn backend(&self, slot: usize) -> Option<(u32, u16)> {
        let slot = bounded(slot, MAX_BACKENDS)?;
        match (self.backend_addrs.get(slot), self.backend_ports.get(slot)) {
            (Some(&addr), Some(&port)) if addr != 0 || port != 0 => Some((addr, port)),
            _ => None,
        }
    }
}

/// `index` if it is below `len`, checked on a fresh copy of the value.
///
/// Older verifiers (Linux 6.1) lose a bound the compiler checked on one register when the
/// value is spilled before the check and reloaded after it; re-reading the index through a
/// volatile load makes the checked register the one used for the access.
#[must_use]
#[inline(always)]
pub fn bounded(index: usize, len: usize) -> Option<usize> {
    // SAFETY: reading a local through a valid reference.
    let index = unsafe { core::ptr::read_volatile(&index) };
    (index < len).then_some(index)
}

pod!(ServiceKey, ServiceValue);

/// Name of the `ClientIP`-affinity LRU map ([`AffinityKey`] -> [`AffinityValue`]).
pub const AFFINITY_MAP: &str = "CNK_AFFINITY";

/// Key of the affinity map: one client of one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct AffinityKey {
    /// The client's address (packet order).
    pub client: u32,
    /// [`ServiceValue::id`].
    pub service_id: u32,
}

/// Value of the affinity map: the backend a client was last sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct AffinityValue {
    /// `bpf_ktime_get_ns()` of the last new connection that used it.
    pub last_used_ns: u64,
    /// The backend's address (packet order).
    pub backend_addr: u32,
    /// The backend's port (packet order).
    pub backend_port: u16,
    /// The backend's slot in [`ServiceValue::backend_addrs`].
    pub backend_slot: u16,
    /// [`ServiceValue::generation`] of the service incarnation the entry belongs to.
    pub generation: u32,
    /// Always zero.
    pub _pad: u32,
}

pod!(AffinityKey, AffinityValue);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<ServiceKey>(), 8);
        assert_eq!(
            size_of::<ServiceValue>(),
            24 + 6 * MAX_BACKENDS + 2 * MAGLEV_TABLE_SIZE + 6
        );
        // With the kernel's element header it still fits a 4 KiB allocation.
        assert!(size_of::<ServiceValue>() + 64 <= 4096);
        assert_eq!(size_of::<ServiceValue>() % 8, 0);
        assert_eq!(size_of::<AffinityKey>(), 8);
        assert_eq!(size_of::<AffinityValue>(), 24);
    }

    #[test]
    fn maglev_index_covers_the_table() {
        assert_eq!(maglev_index(0), 0);
        assert_eq!(maglev_index(u32::MAX), MAGLEV_TABLE_SIZE - 1);
        assert_eq!(maglev_index(1 << 31), MAGLEV_TABLE_SIZE / 2);
    }
}
