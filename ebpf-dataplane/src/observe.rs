//! What both dataplanes let you observe and run: counters, connection-tracking entries, and
//! single packets through the programs.

use std::net::{Ipv4Addr, SocketAddrV4};

pub use cnikit_ebpf_common::stats::DropReason;
use cnikit_ebpf_common::stats::{EndpointStats, ServiceStats};

use crate::{Hook, Packet, Result, ServiceKey, Verdict};

/// Counters of one service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    /// Packets translated from the VIP to a backend.
    pub packets: u64,
    /// Bytes (Ethernet frame length) of those packets.
    pub bytes: u64,
    /// Replies translated back to the VIP.
    pub reply_packets: u64,
    /// Bytes of those replies.
    pub reply_bytes: u64,
    /// New connections given a backend.
    pub connections: u64,
    /// Connections rejected because the service had no backends.
    pub rejected: u64,
}

impl From<ServiceStats> for ServiceCounters {
    fn from(s: ServiceStats) -> Self {
        Self {
            packets: s.packets,
            bytes: s.bytes,
            reply_packets: s.reply_packets,
            reply_bytes: s.reply_bytes,
            connections: s.connections,
            rejected: s.rejected,
        }
    }
}

/// Dropped packets of one endpoint, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// [`DropReason::EgressPolicy`].
    pub egress_policy: u64,
    /// [`DropReason::IngressPolicy`].
    pub ingress_policy: u64,
    /// [`DropReason::NoBackends`] (answered with ICMP port unreachable).
    pub no_backends: u64,
    /// [`DropReason::RejectFailed`].
    pub reject_failed: u64,
}

impl DropCounters {
    /// The counter for `reason`.
    #[must_use]
    pub const fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::EgressPolicy => self.egress_policy,
            DropReason::IngressPolicy => self.ingress_policy,
            DropReason::NoBackends => self.no_backends,
            DropReason::RejectFailed => self.reject_failed,
        }
    }

    /// Adds one to the counter for `reason`.
    pub fn bump(&mut self, reason: DropReason) {
        match reason {
            DropReason::EgressPolicy => self.egress_policy += 1,
            DropReason::IngressPolicy => self.ingress_policy += 1,
            DropReason::NoBackends => self.no_backends += 1,
            DropReason::RejectFailed => self.reject_failed += 1,
        }
    }

    /// All drops.
    #[must_use]
    pub const fn total(&self) -> u64 {
        self.egress_policy + self.ingress_policy + self.no_backends + self.reject_failed
    }
}

/// Counters of one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    /// Packets the endpoint sent that passed.
    pub tx_packets: u64,
    /// Bytes of those packets.
    pub tx_bytes: u64,
    /// Packets delivered to the endpoint.
    pub rx_packets: u64,
    /// Bytes of those packets.
    pub rx_bytes: u64,
    /// Dropped packets by reason.
    pub drops: DropCounters,
}

impl From<EndpointStats> for EndpointCounters {
    fn from(s: EndpointStats) -> Self {
        let drop = |reason: DropReason| s.drops.get(reason.slot()).copied().unwrap_or(0);
        Self {
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            drops: DropCounters {
                egress_policy: drop(DropReason::EgressPolicy),
                ingress_policy: drop(DropReason::IngressPolicy),
                no_backends: drop(DropReason::NoBackends),
                reject_failed: drop(DropReason::RejectFailed),
            },
        }
    }
}

/// One connection-tracking entry (timestamps left out, so two dataplanes can be compared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConntrackEntry {
    /// A connection to a VIP and the backend it was given.
    Service {
        /// IP protocol.
        protocol: u8,
        /// The client's address and port.
        client: SocketAddrV4,
        /// The VIP and port the client addressed.
        vip: SocketAddrV4,
        /// The chosen backend.
        backend: SocketAddrV4,
    },
    /// A flow as it travels on the wire (after translation), in its first packet's direction.
    Flow {
        /// IP protocol.
        protocol: u8,
        /// Source (port 0 for protocols without ports).
        src: SocketAddrV4,
        /// Destination.
        dst: SocketAddrV4,
        /// The source endpoint's egress policy allowed the flow.
        egress_allowed: bool,
        /// The destination endpoint's ingress policy allowed the flow.
        ingress_allowed: bool,
        /// A FIN or RST was seen.
        closing: bool,
        /// For service connections: the VIP and port replies are rewritten to come from.
        reply_source: Option<SocketAddrV4>,
    },
}

/// Counters and connection tracking, as both dataplanes expose them.
pub trait Statistics {
    /// The counters of a service (`None` if there is no such service).
    ///
    /// # Errors
    /// A failed map read.
    fn service_stats(&self, key: &ServiceKey) -> Result<Option<ServiceCounters>>;

    /// The counters of an endpoint (`None` if there is no such endpoint).
    ///
    /// # Errors
    /// A failed map read.
    fn endpoint_stats(&self, addr: Ipv4Addr) -> Result<Option<EndpointCounters>>;

    /// Every live (fresh) connection-tracking entry, sorted.
    ///
    /// # Errors
    /// A failed map read.
    fn conntrack(&self) -> Result<Vec<ConntrackEntry>>;
}

/// Running one packet through one of the programs.
pub trait PacketPath {
    /// What the program at `hook` does with `packet` (with its side effects on connection
    /// tracking and counters, exactly as for a real packet).
    ///
    /// # Errors
    /// When the packet cannot be run (kernel: `BPF_PROG_TEST_RUN` failed or returned bytes that
    /// are not a valid packet).
    fn process(&mut self, hook: Hook, packet: &Packet) -> Result<Verdict>;
}
