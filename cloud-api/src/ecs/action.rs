//! The RPC actions the client and the simulator speak.

use std::{fmt, str::FromStr};

/// ECS API version (`Version` parameter).
pub const ECS_VERSION: &str = "2014-05-26";
/// VPC API version, for `DescribeVSwitches`.
pub const VPC_VERSION: &str = "2016-04-28";

/// An RPC action used for ENIs and addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Action {
    /// `CreateNetworkInterface` (ECS).
    CreateNetworkInterface,
    /// `AttachNetworkInterface` (ECS).
    AttachNetworkInterface,
    /// `DetachNetworkInterface` (ECS).
    DetachNetworkInterface,
    /// `DeleteNetworkInterface` (ECS).
    DeleteNetworkInterface,
    /// `DescribeNetworkInterfaces` (ECS).
    DescribeNetworkInterfaces,
    /// `AssignPrivateIpAddresses` (ECS).
    AssignPrivateIpAddresses,
    /// `UnassignPrivateIpAddresses` (ECS).
    UnassignPrivateIpAddresses,
    /// `AssignIpv6Addresses` (ECS).
    AssignIpv6Addresses,
    /// `UnassignIpv6Addresses` (ECS).
    UnassignIpv6Addresses,
    /// `DescribeInstanceTypes` (ECS).
    DescribeInstanceTypes,
    /// `DescribeVSwitches` (VPC product, version 2016-04-28).
    DescribeVSwitches,
}

impl Action {
    /// Every action.
    pub const ALL: [Self; 11] = [
        Self::CreateNetworkInterface,
        Self::AttachNetworkInterface,
        Self::DetachNetworkInterface,
        Self::DeleteNetworkInterface,
        Self::DescribeNetworkInterfaces,
        Self::AssignPrivateIpAddresses,
        Self::UnassignPrivateIpAddresses,
        Self::AssignIpv6Addresses,
        Self::UnassignIpv6Addresses,
        Self::DescribeInstanceTypes,
        Self::DescribeVSwitches,
    ];

    /// The action name on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateNetworkInterface => "CreateNetworkInterface",
            Self::AttachNetworkInterface => "AttachNetworkInterface",
            Self::DetachNetworkInterface => "DetachNetworkInterface",
            Self::DeleteNetworkInterface => "DeleteNetworkInterface",
            Self::DescribeNetworkInterfaces => "DescribeNetworkInterfaces",
            Self::AssignPrivateIpAddresses => "AssignPrivateIpAddresses",
            Self::UnassignPrivateIpAddresses => "UnassignPrivateIpAddresses",
            Self::AssignIpv6Addresses => "AssignIpv6Addresses",
            Self::UnassignIpv6Addresses => "UnassignIpv6Addresses",
            Self::DescribeInstanceTypes => "DescribeInstanceTypes",
            Self::DescribeVSwitches => "DescribeVSwitches",
        }
    }

    /// The API version the action belongs to.
    #[must_use]
    pub fn version(self) -> &'static str {
        match self {
            Self::DescribeVSwitches => VPC_VERSION,
            _ => ECS_VERSION,
        }
    }

    /// Whether the action belongs to the VPC product (another endpoint).
    #[must_use]
    pub fn is_vpc(self) -> bool {
        matches!(self, Self::DescribeVSwitches)
    }

    /// Whether the action only reads.
    #[must_use]
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            Self::DescribeNetworkInterfaces | Self::DescribeInstanceTypes | Self::DescribeVSwitches
        )
    }

    /// Whether the action takes a `ClientToken`.
    #[must_use]
    pub fn takes_client_token(self) -> bool {
        matches!(
            self,
            Self::CreateNetworkInterface
                | Self::AssignPrivateIpAddresses
                | Self::AssignIpv6Addresses
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown action {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(a));
        }
        assert!("RunInstances".parse::<Action>().is_err());
        assert_eq!(Action::DescribeVSwitches.version(), VPC_VERSION);
        assert_eq!(Action::AttachNetworkInterface.version(), ECS_VERSION);
    }
}
