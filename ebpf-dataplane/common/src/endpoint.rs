//! The endpoint table: which local pod addresses the dataplane knows, their dense ids (for
//! counters and policy keys), and whether each direction of their traffic is isolated by policy.

use crate::pod;

/// Name of the endpoint hash map ([`EndpointKey`] -> [`EndpointValue`]).
pub const ENDPOINTS_MAP: &str = "CNK_ENDPOINTS";

/// [`EndpointValue::flags`]: ingress is isolated: only what the ingress rules allow enters.
pub const EP_INGRESS_ENFORCED: u32 = 1;
/// [`EndpointValue::flags`]: egress is isolated: only what the egress rules allow leaves.
pub const EP_EGRESS_ENFORCED: u32 = 2;
/// [`EndpointValue::flags`]: the ingress rules in force are those of generation 1 (else 0).
pub const EP_INGRESS_GEN: u32 = 4;
/// [`EndpointValue::flags`]: the egress rules in force are those of generation 1 (else 0).
pub const EP_EGRESS_GEN: u32 = 8;

/// Key of the endpoint map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct EndpointKey {
    /// The endpoint's IPv4 address (packet order).
    pub addr: u32,
}

/// Value of the endpoint map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct EndpointValue {
    /// Dense id: index of the endpoint's counters, and part of its policy keys.
    pub id: u32,
    /// `EP_*` flag bits.
    pub flags: u32,
}

pod!(EndpointKey, EndpointValue);

/// Name of the hash map of the node's own addresses ([`EndpointKey`] -> [`NODE_ADDR_PRESENT`]):
/// traffic from them to a local endpoint passes ingress isolation (Kubernetes: pods cannot block
/// their own node, whose kubelet probes them).
pub const NODE_ADDRS_MAP: &str = "CNK_NODE_ADDRS";
/// Capacity of the node-address map.
pub const MAX_NODE_ADDRS: u32 = 64;
/// The value stored for a node address.
pub const NODE_ADDR_PRESENT: u32 = 1;
