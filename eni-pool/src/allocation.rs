//! What a pod gets: the addresses and everything pod wiring needs to use them.

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use crate::pod::{PodKey, ResourceKind};

/// A resource bound to a pod, with what the datapath needs to wire it: the address(es), the
/// ENI (id, MAC, device index), the vSwitch's CIDR and gateway, and the ENI's route table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Allocation {
    /// The pod it is bound to.
    pub pod: PodKey,
    /// A shared-ENI IP or a whole ENI.
    pub kind: ResourceKind,
    /// The pod's IPv4 address (for an exclusive ENI: the ENI's primary address).
    pub ipv4: Ipv4Addr,
    /// The pod's IPv6 address (dual stack only).
    #[serde(default)]
    pub ipv6: Option<Ipv6Addr>,
    /// The ENI carrying the address(es).
    pub eni_id: String,
    /// The ENI's MAC address (lowercase, colon-separated): how the host finds the interface.
    pub mac: String,
    /// The ENI's device index on the instance, when the cloud reports it.
    #[serde(default)]
    pub device_index: Option<u32>,
    /// The vSwitch (subnet) the addresses come from.
    pub vswitch_id: String,
    /// The vSwitch's IPv4 CIDR.
    pub vswitch_cidr: Ipv4Network,
    /// The vSwitch's IPv6 CIDR (dual stack only).
    #[serde(default)]
    pub vswitch_ipv6_cidr: Option<Ipv6Network>,
    /// The vSwitch's IPv4 gateway.
    pub gateway: Ipv4Addr,
    /// The policy-routing table for traffic leaving through this ENI
    /// (`route_table_base + device index`; see [`crate::PoolConfig::route_table_base`]).
    pub route_table_id: u32,
}

impl Allocation {
    /// The resource this allocation holds.
    #[must_use]
    pub fn resource(&self) -> ResourceId {
        match self.kind {
            ResourceKind::SharedIp => ResourceId::Ip {
                eni_id: self.eni_id.clone(),
                ip: self.ipv4,
            },
            ResourceKind::ExclusiveEni => ResourceId::Eni {
                eni_id: self.eni_id.clone(),
            },
        }
    }
}

/// A resource the pool hands out: one IP on an ENI, or a whole ENI.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResourceId {
    /// A secondary (or ENI-primary) IPv4 address on a shared ENI.
    Ip {
        /// The ENI.
        eni_id: String,
        /// The address.
        ip: Ipv4Addr,
    },
    /// A whole ENI.
    Eni {
        /// The ENI.
        eni_id: String,
    },
}

impl ResourceId {
    /// The ENI of the resource.
    #[must_use]
    pub fn eni_id(&self) -> &str {
        match self {
            Self::Ip { eni_id, .. } | Self::Eni { eni_id } => eni_id,
        }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip { eni_id, ip } => write!(f, "{ip} on {eni_id}"),
            Self::Eni { eni_id } => write!(f, "ENI {eni_id}"),
        }
    }
}

/// How the gateway of a vSwitch follows from its CIDR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum GatewayRule {
    /// Alibaba Cloud: the third address from the end (`x.x.x.253` in a /24), as Terway derives
    /// it.
    #[default]
    ThirdFromLast,
    /// AWS and most clouds: the first host address (`x.x.x.1` in a /24).
    First,
}

impl GatewayRule {
    /// The gateway of `cidr`.
    #[must_use]
    pub fn gateway(self, cidr: Ipv4Network) -> Ipv4Addr {
        let net = u64::from(u32::from(cidr.network()));
        let size = 1u64 << (32 - u32::from(cidr.prefix()));
        let addr = match self {
            Self::ThirdFromLast => (net + size).saturating_sub(3),
            Self::First => net + 1,
        };
        Ipv4Addr::from(u32::try_from(addr).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_rules() {
        let c: Ipv4Network = "198.18.0.0/24".parse().unwrap();
        assert_eq!(
            GatewayRule::ThirdFromLast.gateway(c),
            Ipv4Addr::new(198, 18, 0, 253)
        );
        assert_eq!(GatewayRule::First.gateway(c), Ipv4Addr::new(198, 18, 0, 1));
        let all: Ipv4Network = "255.255.255.0/24".parse().unwrap();
        assert_eq!(
            GatewayRule::ThirdFromLast.gateway(all),
            Ipv4Addr::new(255, 255, 255, 253)
        );
    }
}
