//! Connection tracking: one LRU hash map holding two kinds of entries.
//!
//! - **Service entries** ([`CT_KIND_SERVICE`]), keyed by the tuple a client sent to a VIP (before
//!   translation): which backend the connection was given. They keep a connection on its backend
//!   for its whole life.
//! - **Flow entries** ([`CT_KIND_FLOW`]), keyed by the tuple on the wire after translation, in the
//!   direction of the connection's first packet: which policy checks the connection passed
//!   ([`CT_EGRESS_ALLOWED`], [`CT_INGRESS_ALLOWED`]) and, for service connections, the VIP and port
//!   that replies must show as their source ([`CT_REV_NAT`]).
//!
//! An entry is *fresh* while `now - last_seen_ns` is below the timeout of its protocol and state
//! (see [`crate::config`]); a stale entry is treated as absent. The LRU map evicts the least
//! recently used entries when full, so the map never rejects a new connection.

use crate::pod;

/// Name of the connection-tracking LRU hash map ([`CtKey`] -> [`CtValue`]).
pub const CT_MAP: &str = "CNK_CT";

/// [`CtKey::kind`]: a flow entry (tuple after translation).
pub const CT_KIND_FLOW: u8 = 0;
/// [`CtKey::kind`]: a service entry (tuple to the VIP, before translation).
pub const CT_KIND_SERVICE: u8 = 1;

/// [`CtValue::flags`]: the source endpoint's egress policy allowed this flow.
pub const CT_EGRESS_ALLOWED: u16 = 1;
/// [`CtValue::flags`]: the destination endpoint's ingress policy allowed this flow.
pub const CT_INGRESS_ALLOWED: u16 = 2;
/// [`CtValue::flags`]: replies get their source rewritten to `rev_nat_addr:rev_nat_port`.
pub const CT_REV_NAT: u16 = 4;
/// [`CtValue::flags`]: a TCP FIN or RST was seen; the short closing timeout applies.
pub const CT_CLOSING: u16 = 8;

/// Key of the connection-tracking map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct CtKey {
    /// Source address (packet order).
    pub saddr: u32,
    /// Destination address (packet order).
    pub daddr: u32,
    /// Source port (packet order; zero for protocols without ports).
    pub sport: u16,
    /// Destination port (packet order; zero for protocols without ports).
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// [`CT_KIND_FLOW`] or [`CT_KIND_SERVICE`].
    pub kind: u8,
    /// Always zero.
    pub _pad: u16,
}

impl CtKey {
    /// The key of the reverse direction (same kind).
    #[must_use]
    pub const fn reversed(&self) -> Self {
        Self {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            kind: self.kind,
            _pad: 0,
        }
    }
}

/// Value of the connection-tracking map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CtValue {
    /// `bpf_ktime_get_ns()` when a packet last used the entry.
    pub last_seen_ns: u64,
    /// Service entries: the chosen backend's address (packet order).
    pub backend_addr: u32,
    /// Service entries: the chosen backend's port (packet order).
    pub backend_port: u16,
    /// Service entries: the chosen backend's slot in the service.
    pub backend_slot: u16,
    /// Flow entries with [`CT_REV_NAT`]: the VIP replies come from (packet order).
    pub rev_nat_addr: u32,
    /// Flow entries with [`CT_REV_NAT`]: the service port replies come from (packet order).
    pub rev_nat_port: u16,
    /// `CT_*` flag bits.
    pub flags: u16,
    /// The service's id (both kinds, for service connections).
    pub service_id: u32,
    /// Service entries: the service revision the backend was last checked against.
    pub service_rev: u32,
    /// Service entries: the generation of the service incarnation that chose the backend.
    pub service_generation: u32,
    /// Always zero.
    pub _pad: u32,
}

pod!(CtKey, CtValue);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<CtKey>(), 16);
        assert_eq!(size_of::<CtValue>(), 40);
    }

    #[test]
    fn reversed_swaps_ends() {
        let key = CtKey {
            saddr: 1,
            daddr: 2,
            sport: 3,
            dport: 4,
            proto: 6,
            kind: CT_KIND_FLOW,
            _pad: 0,
        };
        let back = key.reversed();
        assert_eq!(
            (back.saddr, back.daddr, back.sport, back.dport),
            (2, 1, 4, 3)
        );
        assert_eq!(back.reversed(), key);
    }
}
