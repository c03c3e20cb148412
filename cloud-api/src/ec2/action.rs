//! The EC2 Query actions the client speaks, with AWS's published throttling buckets.

use std::{fmt, str::FromStr, time::Duration};

use crate::ratelimit::{Rate, RateLimits};

/// EC2 API version (`Version` parameter).
pub const EC2_VERSION: &str = "2016-11-15";

/// An EC2 Query action used for ENIs and addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Ec2Action {
    /// `CreateNetworkInterface`.
    CreateNetworkInterface,
    /// `AttachNetworkInterface`.
    AttachNetworkInterface,
    /// `DetachNetworkInterface`.
    DetachNetworkInterface,
    /// `DeleteNetworkInterface`.
    DeleteNetworkInterface,
    /// `DescribeNetworkInterfaces`.
    DescribeNetworkInterfaces,
    /// `AssignPrivateIpAddresses`.
    AssignPrivateIpAddresses,
    /// `UnassignPrivateIpAddresses`.
    UnassignPrivateIpAddresses,
    /// `AssignIpv6Addresses`.
    AssignIpv6Addresses,
    /// `UnassignIpv6Addresses`.
    UnassignIpv6Addresses,
    /// `DescribeInstanceTypes`.
    DescribeInstanceTypes,
    /// `DescribeSubnets`.
    DescribeSubnets,
}

impl Ec2Action {
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
        Self::DescribeSubnets,
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
            Self::DescribeSubnets => "DescribeSubnets",
        }
    }

    /// Whether the action only reads.
    #[must_use]
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            Self::DescribeNetworkInterfaces | Self::DescribeInstanceTypes | Self::DescribeSubnets
        )
    }

    /// AWS's published token bucket of the action, per account and region (EC2 API reference,
    /// "Request throttling"): `CreateNetworkInterface`, `DeleteNetworkInterface`,
    /// `AssignPrivateIpAddresses`, `UnassignPrivateIpAddresses` and `AssignIpv6Addresses` have
    /// their own buckets of 100 refilled at 5/s; other mutating actions (attach, detach,
    /// `UnassignIpv6Addresses`) share the default mutating bucket of 50 at 5/s; filtered or
    /// paginated describes the non-mutating bucket of 100 at 20/s.
    #[must_use]
    pub fn published_rate(self) -> Rate {
        match self {
            Self::CreateNetworkInterface
            | Self::DeleteNetworkInterface
            | Self::AssignPrivateIpAddresses
            | Self::UnassignPrivateIpAddresses
            | Self::AssignIpv6Addresses => Rate::new(5.0, 100),
            Self::AttachNetworkInterface
            | Self::DetachNetworkInterface
            | Self::UnassignIpv6Addresses => Rate::new(5.0, 50),
            Self::DescribeNetworkInterfaces
            | Self::DescribeInstanceTypes
            | Self::DescribeSubnets => Rate::new(20.0, 100),
        }
    }

    /// The per-request timeout by default: 10 s, as the AWS VPC CNI's `HTTP_TIMEOUT`.
    #[must_use]
    pub fn default_timeout(self) -> Duration {
        Duration::from_secs(10)
    }
}

impl fmt::Display for Ec2Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Ec2Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown EC2 action {s:?}"))
    }
}

impl RateLimits {
    /// AWS's published EC2 buckets for every action the EC2 client uses (see
    /// [`Ec2Action::published_rate`]). They are per account and region: a fleet of nodes
    /// shares them, so scale them down by the number of nodes calling at once.
    #[must_use]
    pub fn ec2_published() -> Self {
        let mut limits = Self::unlimited();
        for a in Ec2Action::ALL {
            limits = limits.with_named(a.as_str(), a.published_rate());
        }
        limits
    }

    /// The same buckets divided among `nodes` nodes sharing the account (each bucket at least
    /// one token, refill at least one request a minute).
    #[must_use]
    pub fn ec2_shared_by(nodes: u32) -> Self {
        let n = nodes.max(1);
        let mut limits = Self::unlimited();
        for a in Ec2Action::ALL {
            let r = a.published_rate();
            limits = limits.with_named(
                a.as_str(),
                Rate::new(
                    (r.per_second / f64::from(n)).max(1.0 / 60.0),
                    (r.burst / n).max(1),
                ),
            );
        }
        limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_buckets_are_published_ones() {
        for a in Ec2Action::ALL {
            assert_eq!(a.as_str().parse::<Ec2Action>(), Ok(a));
        }
        let l = RateLimits::ec2_published();
        let create = l.rate_of("CreateNetworkInterface").unwrap();
        assert_eq!((create.burst, create.per_second), (100, 5.0));
        let attach = l.rate_of("AttachNetworkInterface").unwrap();
        assert_eq!((attach.burst, attach.per_second), (50, 5.0));
        let describe = l.rate_of("DescribeNetworkInterfaces").unwrap();
        assert_eq!((describe.burst, describe.per_second), (100, 20.0));
        let shared = RateLimits::ec2_shared_by(10);
        assert_eq!(shared.rate_of("AttachNetworkInterface").unwrap().burst, 5);
        assert!(l.rate_of("RunInstances").is_none());
    }
}
