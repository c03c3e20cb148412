//! Sizes and timeouts of the dataplane.

use std::{fmt, time::Duration};

use cnikit_ebpf_common::config;

/// A table whose capacity can run out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    /// Services ([`Capacity::services`]).
    Services,
    /// Endpoints ([`Capacity::endpoints`]).
    Endpoints,
    /// Peer prefixes of all policies ([`Capacity::policy_peer_prefixes`]).
    PolicyPeers,
    /// Port prefixes of all policies ([`Capacity::policy_port_prefixes`]).
    PolicyPorts,
    /// The node's own addresses (at most 64).
    NodeAddresses,
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Services => "service table",
            Self::Endpoints => "endpoint table",
            Self::PolicyPeers => "policy peer-prefix table",
            Self::PolicyPorts => "policy port-prefix table",
            Self::NodeAddresses => "node-address table",
        })
    }
}

/// Capacities of the dataplane's maps. A full table is a typed error
/// ([`crate::Error::CapacityExceeded`]), never a silent drop; connection tracking and affinity
/// are LRU maps that evict the least recently used entries instead.
///
/// Memory: services and endpoints take memory only for entries present (about 4.1 KiB per
/// service); connection tracking (about 100 B per entry) and affinity are preallocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Services (VIP, port, protocol).
    pub services: u32,
    /// Local endpoints (pod addresses) with counters or policy.
    pub endpoints: u32,
    /// Connection-tracking entries (two per service connection, one per other flow).
    pub conntrack: u32,
    /// `ClientIP`-affinity entries (client, service).
    pub affinity: u32,
    /// Peer prefixes over all policies (about one per CIDR and `except` block, twice while a
    /// policy is being replaced).
    pub policy_peer_prefixes: u32,
    /// Port prefixes over all policies (a port range takes up to 30).
    pub policy_port_prefixes: u32,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            services: 16_384,
            endpoints: 1_024,
            conntrack: 131_072,
            affinity: 65_536,
            policy_peer_prefixes: 65_536,
            policy_port_prefixes: 16_384,
        }
    }
}

impl Capacity {
    /// Endpoint ids must fit a policy slot (`id << 2`).
    pub(crate) const MAX_ENDPOINTS: u32 = 1 << 30;

    pub(crate) fn check(&self) -> Result<(), String> {
        let fields = [
            ("services", self.services),
            ("endpoints", self.endpoints),
            ("conntrack", self.conntrack),
            ("affinity", self.affinity),
            ("policy_peer_prefixes", self.policy_peer_prefixes),
            ("policy_port_prefixes", self.policy_port_prefixes),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, v)| *v == 0) {
            return Err(format!("capacity `{name}` must be at least 1"));
        }
        if self.endpoints > Self::MAX_ENDPOINTS {
            return Err(format!(
                "at most {} endpoints (policy slots)",
                Self::MAX_ENDPOINTS
            ));
        }
        Ok(())
    }
}

/// Idle timeouts of connection-tracking entries (defaults as Cilium's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connections (default 6 hours).
    pub tcp: Duration,
    /// TCP connections after a FIN or RST (default 10 seconds).
    pub tcp_closing: Duration,
    /// UDP and other flows (default 60 seconds).
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp: Duration::from_nanos(config::DEFAULT_TCP_TIMEOUT_NS),
            tcp_closing: Duration::from_nanos(config::DEFAULT_TCP_CLOSING_TIMEOUT_NS),
            other: Duration::from_nanos(config::DEFAULT_OTHER_TIMEOUT_NS),
        }
    }
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
