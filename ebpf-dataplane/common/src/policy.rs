//! NetworkPolicy as two longest-prefix-match tries per (endpoint, direction).
//!
//! Userspace numbers the distinct port sets of an endpoint's rules in one direction (at most
//! [`MAX_RULE_GROUPS`]); rules with the same ports share a bit. Then:
//! - the **peer trie** maps (slot, remote address prefix) to the bits of the rule groups whose
//!   peers cover that prefix (CIDR minus its `except` blocks, flattened so the longest match is
//!   exact), and
//! - the **port trie** maps (slot, protocol, port prefix) to the bits of the rule groups whose
//!   ports cover it (a port range becomes a few prefixes; "all ports of a protocol" and "all
//!   protocols" are shorter prefixes).
//!
//! A packet is allowed when `peers & ports != 0`: two lookups, whatever the number of rules. The
//! slot ([`policy_slot`]) carries a generation bit so a new rule set is written beside the old
//! one and switched on by one atomic update of the endpoint's flags.

use crate::pod;

/// Name of the peer trie (LPM key data [`PeerPrefix`] -> [`RuleBits`]).
pub const POLICY_PEERS_MAP: &str = "CNK_POL_PEERS";
/// Name of the port trie (LPM key data [`PortPrefix`] -> [`RuleBits`]).
pub const POLICY_PORTS_MAP: &str = "CNK_POL_PORTS";
/// Most distinct port sets (rule groups) per endpoint and direction.
pub const MAX_RULE_GROUPS: usize = 64;
/// Prefix length of the slot part of every policy key.
pub const SLOT_PREFIX_LEN: u32 = 32;
/// Prefix length of a full peer key (slot + address).
pub const PEER_FULL_PREFIX_LEN: u32 = SLOT_PREFIX_LEN + 32;
/// Prefix length of a port key that fixes the protocol but no port bit.
pub const PORT_PROTO_PREFIX_LEN: u32 = SLOT_PREFIX_LEN + 8;
/// Prefix length of a full port key (slot + protocol + port).
pub const PORT_FULL_PREFIX_LEN: u32 = PORT_PROTO_PREFIX_LEN + 16;

/// Bitmask of rule groups.
pub type RuleBits = u64;

/// The policy slot of an endpoint's rules in one direction and generation.
#[must_use]
#[inline(always)]
pub const fn policy_slot(endpoint_id: u32, egress: bool, generation: bool) -> u32 {
    (endpoint_id << 2) | ((egress as u32) << 1) | generation as u32
}

/// LPM key data of the peer trie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct PeerPrefix {
    /// [`policy_slot`] in big-endian bytes (the trie compares bytes most significant first).
    pub slot: [u8; 4],
    /// The remote address (packet order).
    pub addr: u32,
}

impl PeerPrefix {
    /// Key data for `slot` and a packet-order address.
    #[must_use]
    #[inline(always)]
    pub const fn new(slot: u32, addr: u32) -> Self {
        Self {
            slot: slot.to_be_bytes(),
            addr,
        }
    }
}

/// LPM key data of the port trie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct PortPrefix {
    /// [`policy_slot`] in big-endian bytes.
    pub slot: [u8; 4],
    /// IP protocol number.
    pub proto: u8,
    /// The port in big-endian bytes.
    pub port: [u8; 2],
    /// Always zero (never covered by a prefix).
    pub _pad: u8,
}

impl PortPrefix {
    /// Key data for `slot`, a protocol and a packet-order port.
    #[must_use]
    #[inline(always)]
    pub const fn new(slot: u32, proto: u8, port_raw: u16) -> Self {
        Self {
            slot: slot.to_be_bytes(),
            proto,
            port: port_raw.to_ne_bytes(),
            _pad: 0,
        }
    }
}

pod!(PeerPrefix, PortPrefix);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_layouts() {
        assert_eq!(policy_slot(5, true, false), 22);
        assert_eq!(policy_slot(5, false, true), 21);
        assert_eq!(size_of::<PeerPrefix>(), 8);
        assert_eq!(size_of::<PortPrefix>(), 8);
        assert_eq!(
            PortPrefix::new(1, 6, crate::net::port_raw(80)).port,
            [0, 80]
        );
    }
}
