//! Fixed numbers and names: rule priorities, table numbering, host-side link names, the pod's
//! link-local gateway and the MAC of host-side veth ends.
//!
//! These are part of the contract with operators and other tools (the crate README documents
//! them); changing one is a breaking change.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::netlink::MacAddr;

/// Rule priority of `to <pod IP> lookup main` (veth mode): traffic *to* a pod always uses the
/// main table, whose `/32` route points at the pod's host veth. It sits before the from-pod rule
/// so that pod-to-pod traffic on one node never leaves through an ENI. Same value as Terway and
/// the AWS VPC CNI.
pub const PRIORITY_TO_POD: u32 = 512;

/// Rule priority of `from <pod IP> lookup <ENI table>` (veth mode): the pod's egress leaves
/// through its own ENI. The same value as Terway; 513..=2047 stay free for rules that must win
/// over the ENI table (fwmark/connmark return paths, Service exclusions).
pub const PRIORITY_FROM_POD: u32 = 2048;

/// First routing table of per-ENI tables: an ENI's table is `TABLE_BASE + ifindex` unless the
/// caller picks one ([`crate::PodNetwork::route_table`]). The same convention as Terway.
pub const TABLE_BASE: u32 = 1000;

/// The pod's IPv4 gateway in veth mode and on the exclusive-ENI node path: a link-local address
/// answered by a permanent neighbour entry, so no ARP is ever needed.
pub const LINK_LOCAL_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The pod's IPv6 gateway, likewise.
pub const LINK_LOCAL_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// MAC address of every host-side veth end (locally administered, unicast). One well-known
/// value lets the pod's permanent gateway neighbour be written before the link is looked up,
/// and lets `check` verify it; each veth is its own L2 segment, so sharing it is harmless.
pub const HOST_VETH_MAC: MacAddr = MacAddr([0xee, 0xcb, 0x00, 0x00, 0x00, 0x01]);

/// Prefix of host-side veth names.
pub const HOST_VETH_PREFIX: &str = "cnk";

/// Prefix of the per-ENI IPVLAN host interface (`cnki<ENI ifindex>`).
pub const IPVLAN_HOST_PREFIX: &str = "cnki";

/// Default name, inside the pod, of the exclusive-ENI node path veth.
pub const EXCLUSIVE_NODE_LINK: &str = "veth1";

/// Prefix of the alias an adopted ENI carries while it is in a pod.
pub(crate) const ENI_ALIAS_PREFIX: &str = "cnikit:eni:";

/// The routing table of the ENI with index `ifindex`.
#[must_use]
pub fn eni_table(ifindex: u32) -> u32 {
    TABLE_BASE.saturating_add(ifindex)
}

/// FNV-1a, 64 bits: stable across releases and platforms (unlike `DefaultHasher`).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash ^= 0xff;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        for byte in part.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// 11 hex digits identifying a pod interface.
pub(crate) fn pod_key(container_id: &str, ifname: &str) -> String {
    format!("{:011x}", fnv1a(&[container_id, ifname]) >> 20)
}

/// MAC address of the pod end of a pod's veth: `02` followed by 40 bits of the same hash as
/// [`host_veth_name`]. Deterministic, so the node's permanent neighbour entry for the pod is
/// written without reading it back; it never leaves the node.
#[must_use]
pub fn pod_veth_mac(container_id: &str, ifname: &str) -> MacAddr {
    let [_, _, _, a, b, c, d, e] = fnv1a(&[container_id, ifname, "mac"]).to_be_bytes();
    MacAddr([0x02, a, b, c, d, e])
}

/// Host-side veth name of a pod interface: `cnk` + 11 hex digits of a hash of the container id
/// and the pod interface name (14 bytes, under the 15-byte limit).
#[must_use]
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    format!("{HOST_VETH_PREFIX}{}", pod_key(container_id, ifname))
}

/// Name a retired pod end of a veth pair takes inside the pod ([`VethDriver::retire`]) until
/// the pair is deleted: `cnkd` + the same 11 hex digits as [`host_veth_name`].
///
/// [`VethDriver::retire`]: crate::VethDriver::retire
#[must_use]
pub fn retired_name(container_id: &str, ifname: &str) -> String {
    format!("cnkd{}", pod_key(container_id, ifname))
}

/// Whether `name` has the shape of a [`host_veth_name`] (`cnk` + 11 hex digits).
#[must_use]
pub fn is_host_veth_name(name: &str) -> bool {
    name.strip_prefix(HOST_VETH_PREFIX).is_some_and(|key| {
        key.len() == 11
            && key
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Name under which a pod's ipvlan is created before it is renamed inside the pod: `cnks` + the
/// same 11 hex digits as [`host_veth_name`].
#[must_use]
pub fn staging_name(container_id: &str, ifname: &str) -> String {
    format!("cnks{}", pod_key(container_id, ifname))
}

/// Name of the IPVLAN host interface on the ENI with index `eni_ifindex`.
#[must_use]
pub fn ipvlan_host_name(eni_ifindex: u32) -> String {
    format!("{IPVLAN_HOST_PREFIX}{eni_ifindex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_short_and_distinct() {
        let a = host_veth_name("0123456789abcdef0123456789abcdef", "eth0");
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("cnk"));
        // Golden value: the name must never change between releases.
        assert_eq!(
            a,
            host_veth_name("0123456789abcdef0123456789abcdef", "eth0")
        );
        assert_eq!(host_veth_name("c", "eth0"), "cnk356bbd7f9e2");
        assert_ne!(
            a,
            host_veth_name("0123456789abcdef0123456789abcdef", "eth1")
        );
        assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
        assert_eq!(ipvlan_host_name(u32::MAX).len(), 14);
        assert_eq!(eni_table(7), 1007);
        assert_eq!(eni_table(u32::MAX), u32::MAX);
        let mac = pod_veth_mac("c", "eth0");
        assert_eq!(mac, pod_veth_mac("c", "eth0"));
        assert_ne!(mac, pod_veth_mac("c", "eth1"));
        assert_eq!(mac.0[0], 0x02);
        assert!(is_host_veth_name(&a));
        assert!(is_host_veth_name("cnk356bbd7f9e2"));
        for other in [
            "cnk356bbd7f9e",
            "cnk356bbd7f9e2f",
            "cnk356BBD7F9E2",
            "cnkd356bbd7f9e2",
            "cnki7",
            "eth0",
            "cnk",
        ] {
            assert!(!is_host_veth_name(other), "{other}");
        }
        assert_eq!(retired_name("c", "eth0"), "cnkd356bbd7f9e2");
    }

    #[test]
    fn host_mac_is_local_unicast() {
        let first = HOST_VETH_MAC.0[0];
        assert_eq!(first & 0x01, 0, "unicast");
        assert_eq!(first & 0x02, 0x02, "locally administered");
    }
}
