//! Plain data exchanged through the [`CloudProvider`](crate::CloudProvider) trait.
//!
//! The vocabulary is cloud-neutral: a *subnet* is an Alibaba vSwitch or an AWS subnet; an
//! *ENI* is an Alibaba elastic network interface or an AWS network interface.

use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

/// Lifecycle status of an ENI.
///
/// Alibaba: `Available` → `Attaching` → `InUse` → `Detaching` → `Available`; `Deleting` → gone.
/// AWS uses `available`, `attaching`, `in-use`, `detaching` and `associated` (the last maps to
/// [`EniStatus::Other`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EniStatus {
    /// Created and not attached.
    Available,
    /// Being attached to an instance.
    Attaching,
    /// Attached to an instance.
    InUse,
    /// Being detached from an instance.
    Detaching,
    /// Being deleted.
    Deleting,
    /// Being created.
    Creating,
    /// A status this crate does not know, verbatim.
    Other(String),
}

impl EniStatus {
    /// Parses the cloud's spelling (Alibaba `InUse`, AWS `in-use`, case-insensitive).
    #[must_use]
    pub fn parse(s: &str) -> Self {
        let norm: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        match norm.as_str() {
            "available" => Self::Available,
            "attaching" => Self::Attaching,
            "inuse" => Self::InUse,
            "detaching" => Self::Detaching,
            "deleting" => Self::Deleting,
            "creating" => Self::Creating,
            _ => Self::Other(s.to_owned()),
        }
    }

    /// The Alibaba spelling (`InUse`), or the verbatim unknown status.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Available => "Available",
            Self::Attaching => "Attaching",
            Self::InUse => "InUse",
            Self::Detaching => "Detaching",
            Self::Deleting => "Deleting",
            Self::Creating => "Creating",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for EniStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of ENI it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EniKind {
    /// The instance's primary interface (cannot be detached or deleted).
    Primary,
    /// A secondary ENI (the default for created ENIs).
    Secondary,
    /// A trunk ENI (carries member ENIs as VLANs).
    Trunk,
    /// A member ENI of a trunk.
    Member,
    /// A kind this crate does not know, verbatim.
    Other(String),
}

impl EniKind {
    /// Parses the cloud's spelling; an empty string is `Secondary` (as Terway assumes).
    #[must_use]
    pub fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "primary" => Self::Primary,
            "secondary" | "" | "interface" => Self::Secondary,
            "trunk" => Self::Trunk,
            "member" => Self::Member,
            _ => Self::Other(s.to_owned()),
        }
    }

    /// The Alibaba spelling.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Primary => "Primary",
            Self::Secondary => "Secondary",
            Self::Trunk => "Trunk",
            Self::Member => "Member",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for EniKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an ENI is attached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EniAttachment {
    /// The instance.
    pub instance_id: String,
    /// The device index on the instance (0 is the primary ENI), when reported.
    pub device_index: Option<u32>,
    /// The attachment id (AWS needs it to detach; Alibaba has none).
    pub attachment_id: Option<String>,
}

impl EniAttachment {
    /// An attachment to `instance_id`.
    #[must_use]
    pub fn new(instance_id: impl Into<String>) -> Self {
        Self {
            instance_id: instance_id.into(),
            device_index: None,
            attachment_id: None,
        }
    }
}

/// An elastic network interface as the cloud describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Eni {
    /// The ENI id (`eni-…`).
    pub id: String,
    /// Its MAC address, lowercase and colon-separated.
    pub mac: String,
    /// Its lifecycle status.
    pub status: EniStatus,
    /// Primary, secondary, trunk, member.
    pub kind: EniKind,
    /// The instance it is attached to (or being attached to / detached from).
    pub attachment: Option<EniAttachment>,
    /// The subnet (vSwitch) its addresses come from.
    pub subnet_id: String,
    /// The VPC.
    pub vpc_id: String,
    /// The availability zone.
    pub zone_id: String,
    /// The primary private IPv4 address.
    pub primary_ipv4: Option<Ipv4Addr>,
    /// Secondary private IPv4 addresses (the primary is not repeated here).
    pub secondary_ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses.
    pub ipv6: Vec<Ipv6Addr>,
    /// Security groups.
    pub security_group_ids: Vec<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// The description.
    pub description: Option<String>,
    /// Creation time as the cloud reports it (`2019-12-25T12:31:31Z`).
    pub created_at: Option<String>,
}

impl Eni {
    /// A blank ENI with only its id set (for building test fixtures).
    #[must_use]
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            mac: String::new(),
            status: EniStatus::Available,
            kind: EniKind::Secondary,
            attachment: None,
            subnet_id: String::new(),
            vpc_id: String::new(),
            zone_id: String::new(),
            primary_ipv4: None,
            secondary_ipv4: Vec::new(),
            ipv6: Vec::new(),
            security_group_ids: Vec::new(),
            tags: BTreeMap::new(),
            description: None,
            created_at: None,
        }
    }

    /// The instance the ENI is attached to, if any.
    #[must_use]
    pub fn instance_id(&self) -> Option<&str> {
        self.attachment.as_ref().map(|a| a.instance_id.as_str())
    }

    /// All private IPv4 addresses, primary first.
    pub fn ipv4_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.primary_ipv4
            .iter()
            .copied()
            .chain(self.secondary_ipv4.iter().copied())
    }
}

/// ENI and address limits of an instance type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceLimits {
    /// The instance type, e.g. `ecs.g7.large`.
    pub instance_type: String,
    /// Maximum ENIs per instance, the primary included (`EniQuantity`).
    pub max_enis: u32,
    /// Maximum private IPv4 addresses per ENI, the ENI's primary address included
    /// (`EniPrivateIpAddressQuantity`).
    pub ipv4_per_eni: u32,
    /// Maximum IPv6 addresses per ENI (`EniIpv6AddressQuantity`).
    pub ipv6_per_eni: u32,
    /// Maximum ENIs including trunk member ENIs (`EniTotalQuantity`), when reported.
    pub max_total_enis: Option<u32>,
    /// Whether the type supports a trunk ENI.
    pub trunk_supported: bool,
}

impl InstanceLimits {
    /// Limits with no trunk support.
    #[must_use]
    pub fn new(
        instance_type: impl Into<String>,
        max_enis: u32,
        ipv4_per_eni: u32,
        ipv6_per_eni: u32,
    ) -> Self {
        Self {
            instance_type: instance_type.into(),
            max_enis,
            ipv4_per_eni,
            ipv6_per_eni,
            max_total_enis: None,
            trunk_supported: false,
        }
    }

    /// ENIs that can be added besides the primary one.
    #[must_use]
    pub fn max_secondary_enis(&self) -> u32 {
        self.max_enis.saturating_sub(1)
    }

    /// Pod addresses available with shared ENIs: every secondary ENI's addresses, its primary
    /// included, as Terway counts them (`(EniQuantity − 1) × EniPrivateIpAddressQuantity`).
    #[must_use]
    pub fn shared_eni_ipv4_capacity(&self) -> u32 {
        self.max_secondary_enis().saturating_mul(self.ipv4_per_eni)
    }
}

/// A subnet (Alibaba vSwitch) and its free address count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Subnet {
    /// The subnet id (`vsw-…`).
    pub id: String,
    /// The VPC.
    pub vpc_id: String,
    /// The availability zone.
    pub zone_id: String,
    /// The IPv4 CIDR.
    pub ipv4_cidr: Option<Ipv4Network>,
    /// The IPv6 CIDR, when IPv6 is enabled.
    pub ipv6_cidr: Option<Ipv6Network>,
    /// Free IPv4 addresses (`AvailableIpAddressCount`).
    pub available_ipv4: u64,
}

/// Which addresses to assign: a count (the cloud picks) or explicit addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum IpSelection<A> {
    /// Let the cloud pick this many.
    Count(u32),
    /// These addresses.
    Explicit(Vec<A>),
}

impl<A> IpSelection<A> {
    /// How many addresses this asks for.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Count(n) => *n as usize,
            Self::Explicit(v) => v.len(),
        }
    }

    /// Whether it asks for none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parameters of creating an ENI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CreateEniRequest {
    /// The subnet (vSwitch) to take addresses from.
    pub subnet_id: String,
    /// Security groups (at least one).
    pub security_group_ids: Vec<String>,
    /// A specific primary IPv4 address.
    pub primary_ipv4: Option<Ipv4Addr>,
    /// Secondary IPv4 addresses to assign at creation.
    pub secondary_ipv4: Option<IpSelection<Ipv4Addr>>,
    /// IPv6 addresses to assign at creation.
    pub ipv6: Option<IpSelection<Ipv6Addr>>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// A description.
    pub description: Option<String>,
    /// Create a trunk ENI instead of a secondary one.
    pub trunk: bool,
    /// Idempotency token. When `None` the client generates one and keeps it across its own
    /// retries; pass your own to make a retry by *your* code (after a timeout) idempotent too.
    pub client_token: Option<String>,
}

impl CreateEniRequest {
    /// A request for a secondary ENI in `subnet_id` with `security_group_ids`.
    #[must_use]
    pub fn new(
        subnet_id: impl Into<String>,
        security_group_ids: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            subnet_id: subnet_id.into(),
            security_group_ids: security_group_ids.into_iter().map(Into::into).collect(),
            primary_ipv4: None,
            secondary_ipv4: None,
            ipv6: None,
            tags: BTreeMap::new(),
            description: None,
            trunk: false,
            client_token: None,
        }
    }

    /// Assigns `n` secondary IPv4 addresses at creation.
    #[must_use]
    pub fn with_secondary_ipv4_count(mut self, n: u32) -> Self {
        self.secondary_ipv4 = (n > 0).then_some(IpSelection::Count(n));
        self
    }

    /// Assigns `n` IPv6 addresses at creation.
    #[must_use]
    pub fn with_ipv6_count(mut self, n: u32) -> Self {
        self.ipv6 = (n > 0).then_some(IpSelection::Count(n));
        self
    }

    /// Adds a tag.
    #[must_use]
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Sets the description.
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Sets the idempotency token.
    #[must_use]
    pub fn with_client_token(mut self, token: impl Into<String>) -> Self {
        self.client_token = Some(token.into());
        self
    }
}

/// Parameters of attaching an ENI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AttachEniRequest {
    /// The ENI.
    pub eni_id: String,
    /// The instance.
    pub instance_id: String,
    /// The device index (AWS requires one; Alibaba picks it). `None` = the next free index.
    pub device_index: Option<u32>,
    /// The network card, for instance types with several.
    pub network_card_index: Option<u32>,
}

impl AttachEniRequest {
    /// Attach `eni_id` to `instance_id`.
    #[must_use]
    pub fn new(eni_id: impl Into<String>, instance_id: impl Into<String>) -> Self {
        Self {
            eni_id: eni_id.into(),
            instance_id: instance_id.into(),
            device_index: None,
            network_card_index: None,
        }
    }
}

/// Parameters of detaching an ENI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DetachEniRequest {
    /// The ENI.
    pub eni_id: String,
    /// The instance it is attached to.
    pub instance_id: String,
    /// The attachment id (AWS); `None` lets the implementation look it up.
    pub attachment_id: Option<String>,
}

impl DetachEniRequest {
    /// Detach `eni_id` from `instance_id`.
    #[must_use]
    pub fn new(eni_id: impl Into<String>, instance_id: impl Into<String>) -> Self {
        Self {
            eni_id: eni_id.into(),
            instance_id: instance_id.into(),
            attachment_id: None,
        }
    }
}

/// Parameters of assigning secondary addresses to an ENI (`A` is `Ipv4Addr` or `Ipv6Addr`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AssignIpsRequest<A> {
    /// The ENI.
    pub eni_id: String,
    /// Which addresses.
    pub ips: IpSelection<A>,
    /// Idempotency token (see [`CreateEniRequest::client_token`]).
    pub client_token: Option<String>,
}

impl<A> AssignIpsRequest<A> {
    /// Assign `n` addresses chosen by the cloud.
    #[must_use]
    pub fn count(eni_id: impl Into<String>, n: u32) -> Self {
        Self {
            eni_id: eni_id.into(),
            ips: IpSelection::Count(n),
            client_token: None,
        }
    }

    /// Assign these addresses.
    #[must_use]
    pub fn explicit(eni_id: impl Into<String>, ips: Vec<A>) -> Self {
        Self {
            eni_id: eni_id.into(),
            ips: IpSelection::Explicit(ips),
            client_token: None,
        }
    }

    /// Sets the idempotency token.
    #[must_use]
    pub fn with_client_token(mut self, token: impl Into<String>) -> Self {
        self.client_token = Some(token.into());
        self
    }
}

/// Which ENIs to describe. Empty fields do not filter; all set fields must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EniFilter {
    /// Only these ENI ids (deleted ones are simply absent from the result).
    pub eni_ids: Vec<String>,
    /// Only ENIs attached to this instance.
    pub instance_id: Option<String>,
    /// Only ENIs in this subnet.
    pub subnet_id: Option<String>,
    /// Only ENIs in this VPC.
    pub vpc_id: Option<String>,
    /// Only ENIs with this status.
    pub status: Option<EniStatus>,
    /// Only ENIs of this kind.
    pub kind: Option<EniKind>,
    /// Only ENIs carrying all these tags.
    pub tags: BTreeMap<String, String>,
}

impl EniFilter {
    /// ENIs attached to `instance_id`.
    #[must_use]
    pub fn instance(instance_id: impl Into<String>) -> Self {
        Self {
            instance_id: Some(instance_id.into()),
            ..Self::default()
        }
    }

    /// These ENIs.
    #[must_use]
    pub fn ids(ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            eni_ids: ids.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// ENIs carrying `key=value` (for finding leaked ENIs by an ownership tag).
    #[must_use]
    pub fn tag(key: impl Into<String>, value: impl Into<String>) -> Self {
        let mut f = Self::default();
        f.tags.insert(key.into(), value.into());
        f
    }

    /// Adds a status condition.
    #[must_use]
    pub fn with_status(mut self, status: EniStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Whether `eni` passes this filter (used by simulators and tests).
    #[must_use]
    pub fn matches(&self, eni: &Eni) -> bool {
        (self.eni_ids.is_empty() || self.eni_ids.contains(&eni.id))
            && self
                .instance_id
                .as_ref()
                .is_none_or(|i| eni.instance_id() == Some(i.as_str()))
            && self.subnet_id.as_ref().is_none_or(|s| *s == eni.subnet_id)
            && self.vpc_id.as_ref().is_none_or(|v| *v == eni.vpc_id)
            && self.status.as_ref().is_none_or(|s| *s == eni.status)
            && self.kind.as_ref().is_none_or(|k| *k == eni.kind)
            && self
                .tags
                .iter()
                .all(|(k, v)| eni.tags.get(k).is_some_and(|x| x == v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parses_both_clouds_spellings() {
        assert_eq!(EniStatus::parse("InUse"), EniStatus::InUse);
        assert_eq!(EniStatus::parse("in-use"), EniStatus::InUse);
        assert_eq!(EniStatus::parse("available"), EniStatus::Available);
        assert_eq!(
            EniStatus::parse("associated"),
            EniStatus::Other("associated".into())
        );
        assert_eq!(EniStatus::InUse.to_string(), "InUse");
    }

    #[test]
    fn kind_defaults_to_secondary() {
        assert_eq!(EniKind::parse(""), EniKind::Secondary);
        assert_eq!(EniKind::parse("Primary"), EniKind::Primary);
        assert_eq!(EniKind::parse("weird"), EniKind::Other("weird".into()));
    }

    #[test]
    fn limits_capacity_math() {
        let l = InstanceLimits::new("ecs.g7.large", 3, 6, 6);
        assert_eq!(l.max_secondary_enis(), 2);
        assert_eq!(l.shared_eni_ipv4_capacity(), 12);
        assert_eq!(
            InstanceLimits::new("x", 0, 6, 0).shared_eni_ipv4_capacity(),
            0
        );
    }

    #[test]
    fn filter_matches_every_set_field() {
        let mut eni = Eni::new("eni-1");
        eni.attachment = Some(EniAttachment::new("i-1"));
        eni.status = EniStatus::InUse;
        eni.tags.insert("owner".into(), "cnikit".into());
        assert!(EniFilter::instance("i-1").matches(&eni));
        assert!(!EniFilter::instance("i-2").matches(&eni));
        assert!(EniFilter::tag("owner", "cnikit").matches(&eni));
        assert!(!EniFilter::tag("owner", "other").matches(&eni));
        assert!(!EniFilter::ids(["eni-2"]).matches(&eni));
        assert!(
            !EniFilter::instance("i-1")
                .with_status(EniStatus::Available)
                .matches(&eni)
        );
        assert_eq!(
            eni.ipv4_addresses().count(),
            0,
            "no addresses on a blank ENI"
        );
    }
}
