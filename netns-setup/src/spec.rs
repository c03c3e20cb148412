//! What to wire: the plain-data input of every driver, and its validation.
//!
//! Validation happens before anything is touched; a rejected [`PodNetwork`] leaves both
//! namespaces exactly as they were.

use std::{fmt, net::IpAddr};

use ipnetwork::IpNetwork;

use crate::{
    naming::{LINK_LOCAL_GATEWAY_V4, LINK_LOCAL_GATEWAY_V6},
    netlink::{Family, MacAddr, TABLE_LOCAL, TABLE_MAIN, network_of},
    netns::Netns,
};

/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// How to find an ENI in the node namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EniRef {
    /// By interface name (one netlink request; the fastest).
    Name(String),
    /// By hardware address, as the cloud reports it (needs a dump of the node's links).
    Mac(MacAddr),
    /// By interface index.
    Index(u32),
}

impl fmt::Display for EniRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Mac(mac) => write!(f, "with MAC {mac}"),
            Self::Index(index) => write!(f, "#{index}"),
        }
    }
}

/// One address family of a pod: its address on the vSwitch and the vSwitch gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpConfig {
    /// The pod's IP with the vSwitch prefix length, e.g. `198.18.0.5/24`.
    pub address: IpNetwork,
    /// The vSwitch gateway (`None` is rejected by validation; the field is optional so that
    /// incomplete configuration is reported rather than unrepresentable).
    pub gateway: Option<IpAddr>,
}

impl IpConfig {
    /// An address with its gateway.
    #[must_use]
    pub fn new(address: IpNetwork, gateway: IpAddr) -> Self {
        Self {
            address,
            gateway: Some(gateway),
        }
    }

    /// The pod's IP.
    #[must_use]
    pub fn ip(&self) -> IpAddr {
        self.address.ip()
    }

    /// The address family.
    #[must_use]
    pub fn family(&self) -> Family {
        Family::of(self.address.ip())
    }
}

/// Everything a driver needs to wire one pod interface.
#[derive(Clone, Debug)]
pub struct PodNetwork {
    /// The container (sandbox) id; host-side names are derived from it and [`ifname`](Self::ifname).
    pub container_id: String,
    /// The pod's network namespace; `None` when it no longer exists (a CNI DEL after the runtime
    /// removed it): teardown then cleans the node side only.
    pub netns: Option<Netns>,
    /// Interface name inside the pod (default `eth0`).
    pub ifname: String,
    /// The ENI this pod's traffic uses (the one it is given, in exclusive mode).
    pub eni: EniRef,
    /// MTU of the pod interface (default: the ENI's).
    pub mtu: Option<u32>,
    /// IPv4, if the pod has an IPv4 address.
    pub ipv4: Option<IpConfig>,
    /// IPv6, if the pod has an IPv6 address.
    pub ipv6: Option<IpConfig>,
    /// Service CIDRs, sent to the node's stack (kube-proxy or eBPF) from IPVLAN and exclusive ENI
    /// pods.
    pub service_cidrs: Vec<IpNetwork>,
    /// Other CIDRs served by the node's stack, e.g. `169.254.20.10/32` for node-local DNS.
    pub host_stack_cidrs: Vec<IpNetwork>,
    /// The node's own IPs, reachable from the pod directly (required by IPVLAN for each family
    /// that has Service or host-stack CIDRs).
    pub node_ips: Vec<IpAddr>,
    /// Routing table for the pod's egress in veth mode (default `1000 + ENI ifindex`).
    pub route_table: Option<u32>,
}

impl PodNetwork {
    /// A pod interface `eth0` in `netns` using `eni`, with no addresses yet.
    #[must_use]
    pub fn new(container_id: impl Into<String>, netns: Netns, eni: EniRef) -> Self {
        Self {
            container_id: container_id.into(),
            netns: Some(netns),
            ifname: "eth0".to_owned(),
            eni,
            mtu: None,
            ipv4: None,
            ipv6: None,
            service_cidrs: Vec::new(),
            host_stack_cidrs: Vec::new(),
            node_ips: Vec::new(),
            route_table: None,
        }
    }

    /// Sets the IP of `address`'s family (with the vSwitch prefix length) and its gateway.
    #[must_use]
    pub fn with_ip(mut self, address: IpNetwork, gateway: IpAddr) -> Self {
        let config = Some(IpConfig::new(address, gateway));
        match Family::of(address.ip()) {
            Family::V4 => self.ipv4 = config,
            Family::V6 => self.ipv6 = config,
        }
        self
    }

    /// Sets the interface name inside the pod.
    #[must_use]
    pub fn with_ifname(mut self, ifname: impl Into<String>) -> Self {
        self.ifname = ifname.into();
        self
    }

    /// Sets the pod interface MTU.
    #[must_use]
    pub fn with_mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// Adds a Service CIDR.
    #[must_use]
    pub fn with_service_cidr(mut self, cidr: IpNetwork) -> Self {
        self.service_cidrs.push(cidr);
        self
    }

    /// Adds a CIDR served by the node's stack (node-local DNS and the like).
    #[must_use]
    pub fn with_host_stack_cidr(mut self, cidr: IpNetwork) -> Self {
        self.host_stack_cidrs.push(cidr);
        self
    }

    /// Adds one of the node's IPs.
    #[must_use]
    pub fn with_node_ip(mut self, ip: IpAddr) -> Self {
        self.node_ips.push(ip);
        self
    }

    /// Sets the routing table for the pod's egress (veth mode).
    #[must_use]
    pub fn with_route_table(mut self, table: u32) -> Self {
        self.route_table = Some(table);
        self
    }

    /// The configured families, IPv4 first.
    pub fn ip_configs(&self) -> impl Iterator<Item = &IpConfig> {
        self.ipv4.iter().chain(self.ipv6.iter())
    }

    /// The configured IP of `family`.
    #[must_use]
    pub fn ip_config(&self, family: Family) -> Option<&IpConfig> {
        match family {
            Family::V4 => self.ipv4.as_ref(),
            Family::V6 => self.ipv6.as_ref(),
        }
    }

    /// Service and host-stack CIDRs, the destinations sent to the node's stack.
    pub fn node_destinations(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        self.service_cidrs
            .iter()
            .chain(self.host_stack_cidrs.iter())
            .map(|c| network_of(*c))
    }

    /// The node IP of `family` (the first one given).
    #[must_use]
    pub fn node_ip(&self, family: Family) -> Option<IpAddr> {
        self.node_ips
            .iter()
            .copied()
            .find(|ip| Family::of(*ip) == family)
    }

    /// Checks everything that can be checked without the kernel.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.validate_names()?;
        if self.ipv4.is_none() && self.ipv6.is_none() {
            return Err(SpecError::NoAddress);
        }
        for (family, config) in [(Family::V4, &self.ipv4), (Family::V6, &self.ipv6)] {
            if let Some(config) = config {
                validate_family(family, config)?;
            }
        }
        if let Some(mtu) = self.mtu {
            let min = if self.ipv6.is_some() { 1280 } else { 68 };
            if !(min..=65535).contains(&mtu) {
                return Err(SpecError::Mtu { mtu, min });
            }
        }
        if let Some(table) = self.route_table
            && matches!(table, 0 | 253 | TABLE_MAIN | TABLE_LOCAL)
        {
            return Err(SpecError::ReservedTable { table });
        }
        for ip in &self.node_ips {
            if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
                return Err(SpecError::NodeIp { ip: *ip });
            }
        }
        self.validate_cidrs()
    }

    /// Checks only what names are derived from (container id, interface and ENI names): enough
    /// for teardown, which must work from partial input.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate_names(&self) -> Result<(), SpecError> {
        if self.container_id.is_empty() || self.container_id.contains('\0') {
            return Err(SpecError::ContainerId);
        }
        validate_ifname(&self.ifname)?;
        match &self.eni {
            EniRef::Name(name) => validate_ifname(name),
            EniRef::Index(0) => Err(SpecError::EniIndex),
            EniRef::Mac(_) | EniRef::Index(_) => Ok(()),
        }
    }

    fn validate_cidrs(&self) -> Result<(), SpecError> {
        let mut seen: Vec<(IpNetwork, &'static str)> = self
            .ip_configs()
            .map(|c| (network_of(c.address), "the pod's vSwitch"))
            .collect();
        let named = self
            .service_cidrs
            .iter()
            .map(|c| (network_of(*c), "a Service CIDR"))
            .chain(
                self.host_stack_cidrs
                    .iter()
                    .map(|c| (network_of(*c), "a host-stack CIDR")),
            );
        for (cidr, what) in named {
            for gw in [
                IpAddr::V4(LINK_LOCAL_GATEWAY_V4),
                IpAddr::V6(LINK_LOCAL_GATEWAY_V6),
            ] {
                if cidr.contains(gw) {
                    return Err(SpecError::Overlap {
                        a: cidr,
                        a_is: what,
                        b: IpNetwork::from(gw),
                        b_is: "the pod's link-local gateway",
                    });
                }
            }
            for (other, other_is) in &seen {
                if overlaps(cidr, *other) {
                    return Err(SpecError::Overlap {
                        a: cidr,
                        a_is: what,
                        b: *other,
                        b_is: other_is,
                    });
                }
            }
            seen.push((cidr, what));
        }
        Ok(())
    }
}

fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

fn validate_family(family: Family, config: &IpConfig) -> Result<(), SpecError> {
    let ip = config.ip();
    if Family::of(ip) != family {
        return Err(SpecError::FamilyMismatch {
            family,
            found: config.address,
        });
    }
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return Err(SpecError::PodIp { ip });
    }
    let Some(gateway) = config.gateway else {
        return Err(SpecError::MissingGateway { family });
    };
    if Family::of(gateway) != family || gateway.is_unspecified() || gateway.is_multicast() {
        return Err(SpecError::Gateway {
            gateway,
            reason: "not a unicast address of the pod's family",
        });
    }
    if gateway == ip {
        return Err(SpecError::Gateway {
            gateway,
            reason: "equals the pod's IP",
        });
    }
    let link_local = matches!(gateway, IpAddr::V6(v6) if v6.is_unicast_link_local());
    if !link_local && !config.address.contains(gateway) {
        return Err(SpecError::Gateway {
            gateway,
            reason: "outside the pod's vSwitch CIDR",
        });
    }
    Ok(())
}

/// Checks an interface name as the kernel would (`dev_valid_name`).
///
/// # Errors
/// [`SpecError::InterfaceName`] saying what is wrong.
pub fn validate_ifname(name: &str) -> Result<(), SpecError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_IFNAME_LEN {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("reserved")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        Some("contains '/', ':', NUL or whitespace")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SpecError::InterfaceName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Why a [`PodNetwork`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The container id is empty or contains NUL.
    #[error("container id must be non-empty text")]
    ContainerId,
    /// An interface name the kernel would refuse.
    #[error("interface name {name:?} is invalid: {reason}")]
    InterfaceName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// ENI index 0 does not exist.
    #[error("ENI index 0 is not a valid interface index")]
    EniIndex,
    /// Neither an IPv4 nor an IPv6 address was given.
    #[error("the pod has no address (give IPv4, IPv6 or both)")]
    NoAddress,
    /// An address of the wrong family in a family's slot.
    #[error("{found} is not an {family} address")]
    FamilyMismatch {
        /// The slot.
        family: Family,
        /// What was in it.
        found: IpNetwork,
    },
    /// The pod IP is unspecified, loopback or multicast.
    #[error("{ip} cannot be a pod IP")]
    PodIp {
        /// The IP.
        ip: IpAddr,
    },
    /// A family has an address but no gateway.
    #[error("{family} address given without a gateway")]
    MissingGateway {
        /// The family.
        family: Family,
    },
    /// The gateway is unusable.
    #[error("gateway {gateway} is invalid: {reason}")]
    Gateway {
        /// The gateway.
        gateway: IpAddr,
        /// Why.
        reason: &'static str,
    },
    /// MTU outside what the pod's families allow.
    #[error("MTU {mtu} is out of range {min}..=65535")]
    Mtu {
        /// The MTU.
        mtu: u32,
        /// The minimum (1280 with IPv6, else 68).
        min: u32,
    },
    /// A reserved routing table id.
    #[error("route table {table} is reserved (0, 253, 254 and 255 are the kernel's)")]
    ReservedTable {
        /// The table.
        table: u32,
    },
    /// A node IP that cannot be one.
    #[error("{ip} cannot be a node IP")]
    NodeIp {
        /// The IP.
        ip: IpAddr,
    },
    /// Two CIDRs overlap.
    #[error("{a} ({a_is}) overlaps {b} ({b_is})")]
    Overlap {
        /// The CIDR being checked.
        a: IpNetwork,
        /// What it is.
        a_is: &'static str,
        /// The CIDR it overlaps.
        b: IpNetwork,
        /// What that is.
        b_is: &'static str,
    },
    /// A driver routes a family's Service or host-stack CIDRs via a node IP and none was given.
    #[error("{family} Service or host-stack CIDRs need a node IP of that family")]
    MissingNodeIp {
        /// The family.
        family: Family,
    },
    /// Setup needs the pod's namespace.
    #[error("the pod's network namespace is required")]
    MissingNetns,
    /// An IPVLAN sub-interface cannot have a larger MTU than its ENI.
    #[error("MTU {mtu} exceeds the ENI's MTU {eni_mtu}")]
    MtuAboveEni {
        /// The requested MTU.
        mtu: u32,
        /// The ENI's.
        eni_mtu: u32,
    },
    /// The ENI has no hardware address (IPVLAN needs it for the pod's node neighbour).
    #[error("the ENI has no hardware address")]
    EniWithoutMac,
    /// A driver does not support this input.
    #[error("not supported by this driver: {0}")]
    Unsupported(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodNetwork {
        PodNetwork::new("c1", Netns::fake("pod"), EniRef::Name("eth1".into()))
            .with_ip(
                "198.18.0.5/24".parse().unwrap(),
                "198.18.0.1".parse().unwrap(),
            )
            .with_ip("2001:2::5/64".parse().unwrap(), "fe80::1".parse().unwrap())
            .with_service_cidr("198.19.0.0/20".parse().unwrap())
            .with_host_stack_cidr("169.254.20.10/32".parse().unwrap())
            .with_node_ip("198.18.0.10".parse().unwrap())
    }

    #[test]
    fn accepts_a_dual_stack_pod() {
        pod().validate().unwrap();
        assert_eq!(pod().node_destinations().count(), 2);
    }

    #[test]
    fn rejects_each_kind_of_bad_input() {
        type Case = (PodNetwork, fn(&SpecError) -> bool);
        let cases: Vec<Case> = vec![
            (
                pod().with_ifname("a-name-of-16-byt"),
                |e| matches!(e, SpecError::InterfaceName { reason, .. } if reason.contains("15")),
            ),
            (pod().with_ifname("eth/0"), |e| {
                matches!(e, SpecError::InterfaceName { .. })
            }),
            (
                PodNetwork {
                    eni: EniRef::Name("an-eni-name-too-long".into()),
                    ..pod()
                },
                |e| matches!(e, SpecError::InterfaceName { .. }),
            ),
            (
                PodNetwork {
                    ipv4: None,
                    ipv6: None,
                    ..pod()
                },
                |e| *e == SpecError::NoAddress,
            ),
            (
                PodNetwork {
                    ipv4: Some(IpConfig {
                        address: "198.18.0.5/24".parse().unwrap(),
                        gateway: None,
                    }),
                    ..pod()
                },
                |e| *e == SpecError::MissingGateway { family: Family::V4 },
            ),
            (
                pod().with_ip(
                    "198.18.0.5/24".parse().unwrap(),
                    "198.18.1.1".parse().unwrap(),
                ),
                |e| matches!(e, SpecError::Gateway { reason, .. } if reason.contains("outside")),
            ),
            (
                pod().with_ip(
                    "198.18.0.5/24".parse().unwrap(),
                    "198.18.0.5".parse().unwrap(),
                ),
                |e| matches!(e, SpecError::Gateway { .. }),
            ),
            (
                PodNetwork {
                    ipv4: Some(IpConfig::new(
                        "2001:2::9/64".parse().unwrap(),
                        "2001:2::1".parse().unwrap(),
                    )),
                    ..pod()
                },
                |e| matches!(e, SpecError::FamilyMismatch { .. }),
            ),
            (
                pod().with_service_cidr("198.18.0.0/16".parse().unwrap()),
                |e| matches!(e, SpecError::Overlap { b_is, .. } if b_is.contains("vSwitch")),
            ),
            (
                pod().with_host_stack_cidr("198.19.0.0/24".parse().unwrap()),
                |e| matches!(e, SpecError::Overlap { b_is, .. } if b_is.contains("Service")),
            ),
            (
                pod().with_host_stack_cidr("169.254.0.0/16".parse().unwrap()),
                |e| matches!(e, SpecError::Overlap { b_is, .. } if b_is.contains("link-local")),
            ),
            (pod().with_mtu(1000), |e| {
                matches!(e, SpecError::Mtu { min: 1280, .. })
            }),
            (pod().with_route_table(254), |e| {
                matches!(e, SpecError::ReservedTable { table: 254 })
            }),
            (
                PodNetwork {
                    container_id: String::new(),
                    ..pod()
                },
                |e| *e == SpecError::ContainerId,
            ),
            (pod().with_node_ip("127.0.0.1".parse().unwrap()), |e| {
                matches!(e, SpecError::NodeIp { .. })
            }),
        ];
        for (i, (spec, expected)) in cases.into_iter().enumerate() {
            let err = spec.validate().expect_err(&format!("case {i} should fail"));
            assert!(expected(&err), "case {i}: unexpected {err:?}");
        }
    }
}
