//! Simulator configuration and its documented defaults.

use std::{collections::BTreeMap, time::Duration};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use crate::ratelimit::Rate;

use super::faults::FaultRule;

/// Serde helper: a [`Duration`] as integer milliseconds.
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Serde helper: a map of action name to [`Duration`] in milliseconds.
mod millis_map {
    use std::{collections::BTreeMap, time::Duration};

    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeMap};

    pub(super) fn serialize<S: Serializer>(
        m: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(m.len()))?;
        for (k, v) in m {
            map.serialize_entry(k, &u64::try_from(v.as_millis()).unwrap_or(u64::MAX))?;
        }
        map.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        Ok(BTreeMap::<String, u64>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| (k, Duration::from_millis(v)))
            .collect())
    }
}

/// A VPC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VpcSpec {
    /// Its id.
    pub id: String,
    /// Its IPv4 CIDR.
    pub cidr: Ipv4Network,
}

/// A vSwitch (subnet) with a finite CIDR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VSwitchSpec {
    /// Its id.
    pub id: String,
    /// Its VPC.
    pub vpc_id: String,
    /// Its zone.
    pub zone_id: String,
    /// Its IPv4 CIDR; the first address and the last three are reserved, as on ECS.
    pub cidr: Ipv4Network,
    /// Its IPv6 CIDR (IPv6 enabled when set).
    #[serde(default)]
    pub ipv6_cidr: Option<Ipv6Network>,
}

impl VSwitchSpec {
    /// A vSwitch without IPv6.
    #[must_use]
    pub fn new(
        id: impl Into<String>,
        vpc_id: impl Into<String>,
        zone_id: impl Into<String>,
        cidr: Ipv4Network,
    ) -> Self {
        Self {
            id: id.into(),
            vpc_id: vpc_id.into(),
            zone_id: zone_id.into(),
            cidr,
            ipv6_cidr: None,
        }
    }
}

/// A security group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SecurityGroupSpec {
    /// Its id.
    pub id: String,
    /// Its VPC.
    pub vpc_id: String,
}

/// An instance type's network limits (the `DescribeInstanceTypes` fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct InstanceTypeSpec {
    /// `InstanceTypeId`, e.g. `ecs.g7.large`.
    pub id: String,
    /// `EniQuantity`: ENIs per instance, primary included.
    pub eni_quantity: u32,
    /// `EniPrivateIpAddressQuantity`: IPv4 addresses per ENI, primary included.
    pub eni_private_ip_quantity: u32,
    /// `EniIpv6AddressQuantity`.
    pub eni_ipv6_quantity: u32,
    /// `EniTotalQuantity`.
    #[serde(default)]
    pub eni_total_quantity: Option<u32>,
    /// `EniTrunkSupported`.
    #[serde(default)]
    pub trunk_supported: bool,
}

impl InstanceTypeSpec {
    /// A type with these limits.
    #[must_use]
    pub fn new(id: impl Into<String>, enis: u32, ipv4_per_eni: u32, ipv6_per_eni: u32) -> Self {
        Self {
            id: id.into(),
            eni_quantity: enis,
            eni_private_ip_quantity: ipv4_per_eni,
            eni_ipv6_quantity: ipv6_per_eni,
            eni_total_quantity: None,
            trunk_supported: false,
        }
    }
}

/// An instance; the simulator gives it a primary ENI in `vswitch_id` at start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct InstanceSpec {
    /// Its id.
    pub id: String,
    /// Its instance type.
    pub instance_type: String,
    /// The vSwitch of its primary ENI (its zone is the instance's zone).
    pub vswitch_id: String,
    /// Security groups of its primary ENI.
    #[serde(default)]
    pub security_group_ids: Vec<String>,
}

impl InstanceSpec {
    /// An instance of `instance_type` in `vswitch_id`.
    #[must_use]
    pub fn new(
        id: impl Into<String>,
        instance_type: impl Into<String>,
        vswitch_id: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            instance_type: instance_type.into(),
            vswitch_id: vswitch_id.into(),
            security_group_ids: Vec::new(),
        }
    }
}

/// Latencies: per API call, and of the asynchronous status transitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LatencyConfig {
    /// Added to every call.
    #[serde(rename = "api_ms", with = "millis")]
    pub api: Duration,
    /// Added to calls of one action (by action name), on top of `api`.
    #[serde(rename = "per_action_ms", with = "millis_map")]
    pub per_action: BTreeMap<String, Duration>,
    /// `Attaching` → `InUse`.
    #[serde(rename = "attach_ms", with = "millis")]
    pub attach: Duration,
    /// `Detaching` → `Available`.
    #[serde(rename = "detach_ms", with = "millis")]
    pub detach: Duration,
    /// `Deleting` → gone.
    #[serde(rename = "delete_ms", with = "millis")]
    pub delete: Duration,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        Self {
            api: Duration::ZERO,
            per_action: BTreeMap::new(),
            attach: Duration::from_millis(100),
            detach: Duration::from_millis(100),
            delete: Duration::ZERO,
        }
    }
}

impl LatencyConfig {
    /// No latency anywhere (transitions complete at the next call).
    #[must_use]
    pub fn instant() -> Self {
        Self {
            attach: Duration::ZERO,
            detach: Duration::ZERO,
            ..Self::default()
        }
    }
}

/// Server-side throttling: per-action token buckets; a call finding its bucket empty gets
/// `Throttling.User`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ThrottleConfig {
    /// Rates by action name.
    pub per_action: BTreeMap<String, Rate>,
    /// Rate of actions without an entry; `None` = unthrottled.
    pub default: Option<Rate>,
}

/// Quotas the simulator enforces besides the instance types'.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct QuotaConfig {
    /// ENIs in the region (the account quota); `QuotaExceeded.Eni` beyond.
    pub max_enis: u32,
    /// Secondary IPv4 addresses on an unattached ENI (ECS: 49).
    pub max_secondary_ipv4_unattached: u32,
    /// IPv6 addresses on an unattached ENI (ECS: 10).
    pub max_ipv6_unattached: u32,
    /// Tags per ENI (ECS: 20).
    pub max_tags: u32,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            max_enis: 10_000,
            max_secondary_ipv4_unattached: 49,
            max_ipv6_unattached: 10,
            max_tags: 20,
        }
    }
}

/// What the metadata service of the HTTP simulator serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MetadataConfig {
    /// The instance the metadata service describes; `None` = the first configured instance.
    pub instance_id: Option<String>,
    /// The RAM role whose STS credentials `ram/security-credentials/<role>` hands out;
    /// `None` = no role attached (404).
    pub ram_role: Option<String>,
    /// Lifetime of those STS credentials.
    #[serde(rename = "sts_ttl_ms", with = "millis")]
    pub sts_ttl: Duration,
    /// Refuse metadata reads without a token (`HttpTokens=required`).
    pub token_required: bool,
    /// Delay of every metadata answer.
    #[serde(rename = "latency_ms", with = "millis")]
    pub latency: Duration,
    /// Canned answers replacing the real ones (tried in order; the first with hits left wins).
    pub faults: Vec<MetadataFault>,
}

/// A canned metadata answer: `status` and `body` for paths under `path_prefix`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MetadataFault {
    /// Paths it applies to, relative to `/latest/` (`""` = every path, `api/token` included).
    #[serde(default)]
    pub path_prefix: String,
    /// The HTTP status.
    pub status: u16,
    /// The body.
    #[serde(default)]
    pub body: String,
    /// How many requests it answers; `None` = all.
    #[serde(default)]
    pub times: Option<u64>,
}

impl MetadataFault {
    /// Answers `status`/`body` for paths under `path_prefix`, `times` times.
    #[must_use]
    pub fn new(
        path_prefix: impl Into<String>,
        status: u16,
        body: impl Into<String>,
        times: Option<u64>,
    ) -> Self {
        Self {
            path_prefix: path_prefix.into(),
            status,
            body: body.into(),
            times,
        }
    }
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            instance_id: None,
            ram_role: Some("cnikit-sim-role".to_owned()),
            sts_ttl: Duration::from_secs(3600),
            token_required: false,
            latency: Duration::ZERO,
            faults: Vec::new(),
        }
    }
}

/// The whole simulated region.
///
/// `SimConfig::default()` is documented in the crate README (section "Simulator defaults"):
/// region `cn-hangzhou`, one VPC `198.18.0.0/15`, three vSwitches (a /24 with IPv6, a /24
/// without, and a tiny /28 for exhaustion), three instance types modelled on `ecs.g7`, one
/// instance `i-sim0000000000000001` (`ecs.g7.xlarge`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SimConfig {
    /// The region id.
    pub region_id: String,
    /// Seed of every random choice (ids, MACs, fault decisions): same seed and same call order,
    /// same run.
    pub seed: u64,
    /// VPCs.
    pub vpcs: Vec<VpcSpec>,
    /// vSwitches.
    pub vswitches: Vec<VSwitchSpec>,
    /// Security groups.
    pub security_groups: Vec<SecurityGroupSpec>,
    /// Instance types.
    pub instance_types: Vec<InstanceTypeSpec>,
    /// Instances.
    pub instances: Vec<InstanceSpec>,
    /// Latencies.
    pub latency: LatencyConfig,
    /// Server-side throttling.
    pub throttle: ThrottleConfig,
    /// Fault injection rules, tried in order; the first that fires wins.
    pub faults: Vec<FaultRule>,
    /// Quotas.
    pub quotas: QuotaConfig,
    /// The metadata service.
    pub metadata: MetadataConfig,
}

/// The default VPC id.
pub const DEFAULT_VPC: &str = "vpc-sim0000000000000001";
/// The default zone.
pub const DEFAULT_ZONE: &str = "cn-hangzhou-i";
/// The default vSwitch (`198.18.0.0/24`, IPv6 `2001:db8:0:1::/64`).
pub const DEFAULT_VSWITCH: &str = "vsw-sim0000000000000001";
/// A second vSwitch without IPv6 (198.18.1.0/24).
pub const DEFAULT_VSWITCH_B: &str = "vsw-sim0000000000000002";
/// A tiny vSwitch (198.18.2.0/28: 12 usable addresses) for exhaustion tests.
pub const DEFAULT_VSWITCH_TINY: &str = "vsw-sim0000000000000003";
/// The default security group.
pub const DEFAULT_SECURITY_GROUP: &str = "sg-sim0000000000000001";
/// The default instance.
pub const DEFAULT_INSTANCE: &str = "i-sim0000000000000001";

fn net4(s: &str) -> Ipv4Network {
    s.parse().expect("built-in CIDR literal is valid")
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            region_id: "cn-hangzhou".to_owned(),
            seed: 1,
            vpcs: vec![VpcSpec {
                id: DEFAULT_VPC.to_owned(),
                cidr: net4("198.18.0.0/15"),
            }],
            vswitches: vec![
                VSwitchSpec {
                    ipv6_cidr: Some(
                        "2001:db8:0:1::/64"
                            .parse()
                            .expect("built-in CIDR literal is valid"),
                    ),
                    ..VSwitchSpec::new(
                        DEFAULT_VSWITCH,
                        DEFAULT_VPC,
                        DEFAULT_ZONE,
                        net4("198.18.0.0/24"),
                    )
                },
                VSwitchSpec::new(
                    DEFAULT_VSWITCH_B,
                    DEFAULT_VPC,
                    DEFAULT_ZONE,
                    net4("198.18.1.0/24"),
                ),
                VSwitchSpec::new(
                    DEFAULT_VSWITCH_TINY,
                    DEFAULT_VPC,
                    DEFAULT_ZONE,
                    net4("198.18.2.0/28"),
                ),
            ],
            security_groups: vec![SecurityGroupSpec {
                id: DEFAULT_SECURITY_GROUP.to_owned(),
                vpc_id: DEFAULT_VPC.to_owned(),
            }],
            instance_types: vec![
                InstanceTypeSpec::new("ecs.g7.large", 3, 6, 6),
                InstanceTypeSpec::new("ecs.g7.xlarge", 4, 15, 15),
                InstanceTypeSpec {
                    eni_total_quantity: Some(24),
                    trunk_supported: true,
                    ..InstanceTypeSpec::new("ecs.g7.4xlarge", 8, 30, 30)
                },
            ],
            instances: vec![InstanceSpec {
                security_group_ids: vec![DEFAULT_SECURITY_GROUP.to_owned()],
                ..InstanceSpec::new(DEFAULT_INSTANCE, "ecs.g7.xlarge", DEFAULT_VSWITCH)
            }],
            latency: LatencyConfig::default(),
            throttle: ThrottleConfig::default(),
            faults: Vec::new(),
            quotas: QuotaConfig::default(),
            metadata: MetadataConfig::default(),
        }
    }
}

impl SimConfig {
    /// The defaults with no latency at all (for fast property tests).
    #[must_use]
    pub fn instant() -> Self {
        Self {
            latency: LatencyConfig::instant(),
            ..Self::default()
        }
    }

    /// Parses a JSON configuration (every field optional; missing fields take the defaults).
    ///
    /// # Errors
    /// When the JSON is malformed or names an unknown field.
    pub fn from_json(json: &str) -> Result<Self, crate::Error> {
        serde_json::from_str(json)
            .map_err(|e| crate::Error::Config(format!("simulator config: {e}")))
    }
}
