//! Instance metadata: who am I, where am I, and what my ENIs look like from the inside.
//!
//! [`InstanceMetadata`] is the seam; [`ImdsClient`] reads the Alibaba metadata service
//! (`http://100.100.100.200/latest/`, hardened "token" mode), and the simulator serves the
//! same paths.

use std::{
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};

use async_trait::async_trait;
use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use crate::error::Result;

#[cfg(feature = "aws")]
mod ec2;
mod imds;

#[cfg(feature = "aws")]
pub use ec2::Ec2Metadata;

pub use imds::{
    AWS_TOKEN_HEADER, AWS_TOKEN_TTL_HEADER, ImdsClient, ImdsConfig, TOKEN_HEADER, TOKEN_TTL_HEADER,
    TokenMode,
};

/// One ENI as the instance sees it, keyed by MAC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MetadataInterface {
    /// The MAC address, lowercase.
    pub mac: String,
    /// The ENI id.
    pub eni_id: String,
    /// The ENI's primary IPv4 address.
    pub primary_ipv4: Ipv4Addr,
    /// Every private IPv4 address of the ENI (primary included).
    pub private_ipv4s: Vec<Ipv4Addr>,
    /// The IPv4 gateway.
    pub gateway: Option<Ipv4Addr>,
    /// The netmask.
    pub netmask: Option<Ipv4Addr>,
    /// The subnet (vSwitch).
    pub subnet_id: Option<String>,
    /// The subnet's IPv4 CIDR.
    pub subnet_cidr: Option<Ipv4Network>,
    /// The VPC.
    pub vpc_id: Option<String>,
    /// The VPC's IPv4 CIDR.
    pub vpc_cidr: Option<Ipv4Network>,
    /// IPv6 addresses (empty when none).
    pub ipv6s: Vec<Ipv6Addr>,
    /// The IPv6 gateway.
    pub ipv6_gateway: Option<Ipv6Addr>,
    /// The subnet's IPv6 CIDR.
    pub subnet_ipv6_cidr: Option<Ipv6Network>,
}

/// The instance's identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceIdentity {
    /// The instance id.
    pub instance_id: String,
    /// The instance type.
    pub instance_type: String,
    /// The region.
    pub region_id: String,
    /// The zone.
    pub zone_id: String,
    /// The VPC.
    pub vpc_id: String,
    /// The primary ENI's subnet (vSwitch).
    pub subnet_id: String,
    /// The primary ENI's MAC.
    pub primary_mac: String,
}

/// What the instance metadata service tells a node about itself.
#[async_trait]
pub trait InstanceMetadata: Send + Sync + fmt::Debug {
    /// The instance id.
    async fn instance_id(&self) -> Result<String>;
    /// The instance type.
    async fn instance_type(&self) -> Result<String>;
    /// The region.
    async fn region_id(&self) -> Result<String>;
    /// The zone.
    async fn zone_id(&self) -> Result<String>;
    /// The VPC.
    async fn vpc_id(&self) -> Result<String>;
    /// The primary ENI's subnet (vSwitch).
    async fn subnet_id(&self) -> Result<String>;
    /// The primary ENI's MAC.
    async fn primary_mac(&self) -> Result<String>;
    /// MACs of every attached ENI.
    async fn macs(&self) -> Result<Vec<String>>;
    /// One ENI by MAC.
    async fn interface(&self, mac: &str) -> Result<MetadataInterface>;

    /// Every attached ENI.
    async fn interfaces(&self) -> Result<Vec<MetadataInterface>> {
        let mut out = Vec::new();
        for mac in self.macs().await? {
            out.push(self.interface(&mac).await?);
        }
        Ok(out)
    }

    /// The identity in one call.
    async fn identity(&self) -> Result<InstanceIdentity> {
        Ok(InstanceIdentity {
            instance_id: self.instance_id().await?,
            instance_type: self.instance_type().await?,
            region_id: self.region_id().await?,
            zone_id: self.zone_id().await?,
            vpc_id: self.vpc_id().await?,
            subnet_id: self.subnet_id().await?,
            primary_mac: self.primary_mac().await?,
        })
    }
}

/// Lowercases a MAC and strips a trailing `/` (as the MAC listing prints them).
#[must_use]
pub fn normalize_mac(mac: &str) -> String {
    mac.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The MACs of a metadata `network/interfaces/macs/` listing (one per line, trailing `/`
/// allowed), normalized; blank lines skipped. Both IMDS dialects answer it the same way.
pub(crate) fn parse_mac_list(listing: &str) -> Vec<String> {
    listing
        .lines()
        .map(normalize_mac)
        .filter(|m| !m.is_empty())
        .collect()
}
