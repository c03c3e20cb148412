//! Per-CPU counters per service and per endpoint, indexed by their dense ids.

use crate::pod;

/// Name of the per-CPU array of [`ServiceStats`], indexed by service id.
pub const SERVICE_STATS_MAP: &str = "CNK_SVC_STATS";
/// Name of the per-CPU array of [`EndpointStats`], indexed by endpoint id.
pub const ENDPOINT_STATS_MAP: &str = "CNK_EP_STATS";

/// Why the datapath dropped (or rejected) a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DropReason {
    /// The source endpoint's egress policy does not allow the flow.
    EgressPolicy = 0,
    /// The destination endpoint's ingress policy does not allow the flow.
    IngressPolicy = 1,
    /// The destination is a service without backends: answered with ICMP port unreachable.
    NoBackends = 2,
    /// A service without backends, but the rejection could not be built (IP options, short
    /// packet): dropped silently.
    RejectFailed = 3,
}

impl DropReason {
    /// Every reason, in slot order.
    pub const ALL: [Self; 4] = [
        Self::EgressPolicy,
        Self::IngressPolicy,
        Self::NoBackends,
        Self::RejectFailed,
    ];

    /// Index of this reason in [`EndpointStats::drops`].
    #[must_use]
    pub const fn slot(self) -> usize {
        self as usize
    }
}

/// Slots reserved for drop reasons (room for more without changing the layout).
pub const DROP_REASON_SLOTS: usize = 8;

/// Counters of one service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ServiceStats {
    /// Packets translated from the VIP to a backend.
    pub packets: u64,
    /// Bytes (L2 length) of those packets.
    pub bytes: u64,
    /// Reply packets translated back to the VIP.
    pub reply_packets: u64,
    /// Bytes of those replies.
    pub reply_bytes: u64,
    /// New connections given a backend.
    pub connections: u64,
    /// Connections rejected because the service had no backends.
    pub rejected: u64,
}

/// Counters of one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct EndpointStats {
    /// Packets the endpoint sent that passed.
    pub tx_packets: u64,
    /// Bytes of those packets.
    pub tx_bytes: u64,
    /// Packets delivered to the endpoint.
    pub rx_packets: u64,
    /// Bytes of those packets.
    pub rx_bytes: u64,
    /// Dropped packets by [`DropReason::slot`].
    pub drops: [u64; DROP_REASON_SLOTS],
}

pod!(ServiceStats, EndpointStats);
