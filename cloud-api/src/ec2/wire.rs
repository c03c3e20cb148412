//! XML bodies of the EC2 Query responses (API 2016-11-15), shared by the client (which reads
//! them) and the in-process EC2 front of the simulator (which writes them).
//!
//! Lists are `<xxxSet><item>…</item></xxxSet>` and may be empty or missing, hence the
//! `default`s. Fields the client needs are checked when converting, so a missing one becomes a
//! typed error rather than a panic.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use crate::types::{Eni, EniAttachment, EniKind, EniStatus, InstanceLimits, Subnet};

/// `<xxxSet><item>…</item>…</xxxSet>`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Items<T> {
    #[serde(default = "Vec::new", rename = "item")]
    pub(crate) item: Vec<T>,
}

impl<T> From<Vec<T>> for Items<T> {
    fn from(item: Vec<T>) -> Self {
        Self { item }
    }
}

/// One error of an error response.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ErrorItem {
    #[serde(rename = "Code", default)]
    pub(crate) code: String,
    #[serde(rename = "Message", default)]
    pub(crate) message: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Errors {
    #[serde(rename = "Error", default)]
    pub(crate) error: Vec<ErrorItem>,
}

/// An error response: `<Response><Errors><Error><Code/><Message/></Error></Errors>
/// <RequestID/></Response>` (EC2), or `<ErrorResponse><Error>…</Error><RequestId/>` (other
/// Query services and some gateways).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ErrorResponse {
    #[serde(rename = "Errors", default, skip_serializing_if = "Option::is_none")]
    pub(crate) errors: Option<Errors>,
    #[serde(rename = "Error", default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<ErrorItem>,
    #[serde(rename = "RequestID", default, skip_serializing_if = "Option::is_none")]
    pub(crate) request_id: Option<String>,
    #[serde(rename = "RequestId", default, skip_serializing_if = "Option::is_none")]
    pub(crate) request_id_alt: Option<String>,
}

impl ErrorResponse {
    /// The first error and the request id.
    pub(crate) fn into_parts(self) -> Option<(ErrorItem, Option<String>)> {
        let rid = self.request_id.or(self.request_id_alt);
        self.errors
            .and_then(|e| e.error.into_iter().next())
            .or(self.error)
            .filter(|e| !e.code.is_empty())
            .map(|e| (e, rid))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Group {
    #[serde(rename = "groupId", default)]
    pub(crate) group_id: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Tag {
    #[serde(default)]
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) value: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Attachment {
    #[serde(
        rename = "attachmentId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) attachment_id: Option<String>,
    #[serde(
        rename = "instanceId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) instance_id: Option<String>,
    #[serde(
        rename = "deviceIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) device_index: Option<u32>,
    #[serde(
        rename = "networkCardIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) network_card_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PrivateIp {
    #[serde(rename = "privateIpAddress")]
    pub(crate) private_ip_address: String,
    #[serde(default)]
    pub(crate) primary: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Ipv6Item {
    #[serde(rename = "ipv6Address")]
    pub(crate) ipv6_address: String,
}

/// One ENI: an item of `DescribeNetworkInterfaces` and the body of `CreateNetworkInterface`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct NetworkInterface {
    #[serde(rename = "networkInterfaceId")]
    pub(crate) network_interface_id: String,
    #[serde(rename = "subnetId", default)]
    pub(crate) subnet_id: String,
    #[serde(rename = "vpcId", default)]
    pub(crate) vpc_id: String,
    #[serde(rename = "availabilityZone", default)]
    pub(crate) availability_zone: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) status: String,
    #[serde(rename = "macAddress", default)]
    pub(crate) mac_address: String,
    #[serde(
        rename = "privateIpAddress",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) private_ip_address: Option<String>,
    #[serde(
        rename = "interfaceType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) interface_type: Option<String>,
    #[serde(rename = "groupSet", default)]
    pub(crate) group_set: Items<Group>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) attachment: Option<Attachment>,
    #[serde(rename = "tagSet", default)]
    pub(crate) tag_set: Items<Tag>,
    #[serde(rename = "privateIpAddressesSet", default)]
    pub(crate) private_ip_addresses_set: Items<PrivateIp>,
    #[serde(rename = "ipv6AddressesSet", default)]
    pub(crate) ipv6_addresses_set: Items<Ipv6Item>,
}

fn parse_addr<A: std::str::FromStr>(what: &str, s: &str) -> Result<A, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{what} {s:?} is not an address"))
}

impl NetworkInterface {
    /// Converts to the provider's [`Eni`]; `Err` names the missing or malformed field.
    pub(crate) fn into_eni(self) -> Result<Eni, String> {
        if self.network_interface_id.is_empty() {
            return Err("networkInterfaceId is empty".to_owned());
        }
        let mut primary_ipv4: Option<Ipv4Addr> = self
            .private_ip_address
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| parse_addr("privateIpAddress", s))
            .transpose()?;
        let mut secondary_ipv4 = Vec::new();
        for p in &self.private_ip_addresses_set.item {
            let ip: Ipv4Addr = parse_addr("privateIpAddress", &p.private_ip_address)?;
            if p.primary {
                primary_ipv4 = Some(ip);
            } else if Some(ip) != primary_ipv4 && !secondary_ipv4.contains(&ip) {
                // An address listed twice is one address (moto has been seen to list one
                // twice after a count assign); counting it twice would overfill the ENI.
                secondary_ipv4.push(ip);
            }
        }
        secondary_ipv4.retain(|ip| Some(*ip) != primary_ipv4);
        let mut ipv6: Vec<Ipv6Addr> = Vec::new();
        for i in &self.ipv6_addresses_set.item {
            let ip = parse_addr("ipv6Address", &i.ipv6_address)?;
            if !ipv6.contains(&ip) {
                ipv6.push(ip);
            }
        }
        let attachment_status = self
            .attachment
            .as_ref()
            .and_then(|a| a.status.clone())
            .unwrap_or_default();
        let attachment = self.attachment.and_then(|a| {
            let instance_id = a.instance_id.filter(|i| !i.is_empty())?;
            Some(EniAttachment {
                instance_id,
                device_index: a.device_index,
                attachment_id: a.attachment_id.filter(|i| !i.is_empty()),
            })
        });
        let primary_device = attachment
            .as_ref()
            .is_some_and(|a| a.device_index == Some(0));
        let kind = match self.interface_type.as_deref().unwrap_or("interface") {
            "trunk" => EniKind::Trunk,
            "branch" => EniKind::Member,
            "interface" | "" if primary_device => EniKind::Primary,
            "interface" | "" => EniKind::Secondary,
            other => EniKind::Other(other.to_owned()),
        };
        let tags: BTreeMap<String, String> = self
            .tag_set
            .item
            .into_iter()
            .map(|t| (t.key, t.value))
            .collect();
        let mut eni = Eni::new(self.network_interface_id);
        eni.mac = self.mac_address.to_ascii_lowercase();
        // EC2 says `in-use` as soon as an attach is accepted; the attachment's own status
        // tells whether it is done.
        eni.status = match (EniStatus::parse(&self.status), attachment_status.as_str()) {
            (EniStatus::InUse, "attaching") => EniStatus::Attaching,
            (EniStatus::InUse, "detaching") => EniStatus::Detaching,
            (s, _) => s,
        };
        eni.kind = kind;
        eni.attachment = attachment;
        eni.subnet_id = self.subnet_id;
        eni.vpc_id = self.vpc_id;
        eni.zone_id = self.availability_zone;
        eni.primary_ipv4 = primary_ipv4;
        eni.secondary_ipv4 = secondary_ipv4;
        eni.ipv6 = ipv6;
        eni.security_group_ids = self
            .group_set
            .item
            .into_iter()
            .map(|g| g.group_id)
            .collect();
        eni.tags = tags;
        eni.description = self.description.filter(|d| !d.is_empty());
        Ok(eni)
    }

    /// The wire form of `eni` (the simulator's EC2 front).
    #[cfg(feature = "sim")]
    pub(crate) fn from_eni(eni: &Eni) -> Self {
        let mut ips = Vec::new();
        if let Some(p) = eni.primary_ipv4 {
            ips.push(PrivateIp {
                private_ip_address: p.to_string(),
                primary: true,
            });
        }
        ips.extend(eni.secondary_ipv4.iter().map(|ip| PrivateIp {
            private_ip_address: ip.to_string(),
            primary: false,
        }));
        Self {
            network_interface_id: eni.id.clone(),
            subnet_id: eni.subnet_id.clone(),
            vpc_id: eni.vpc_id.clone(),
            availability_zone: eni.zone_id.clone(),
            description: eni.description.clone(),
            status: match eni.status {
                EniStatus::Available | EniStatus::Creating => "available",
                EniStatus::Attaching => "attaching",
                EniStatus::InUse => "in-use",
                EniStatus::Detaching => "detaching",
                EniStatus::Deleting | EniStatus::Other(_) => "associated",
            }
            .to_owned(),
            mac_address: eni.mac.clone(),
            private_ip_address: eni.primary_ipv4.map(|ip| ip.to_string()),
            interface_type: Some(
                match eni.kind {
                    EniKind::Trunk => "trunk",
                    EniKind::Member => "branch",
                    _ => "interface",
                }
                .to_owned(),
            ),
            group_set: eni
                .security_group_ids
                .iter()
                .map(|g| Group {
                    group_id: g.clone(),
                })
                .collect::<Vec<_>>()
                .into(),
            attachment: eni.attachment.as_ref().map(|a| Attachment {
                attachment_id: Some(a.attachment_id.clone().unwrap_or_else(|| {
                    format!("eni-attach-{}", eni.id.trim_start_matches("eni-"))
                })),
                instance_id: Some(a.instance_id.clone()),
                device_index: Some(a.device_index.unwrap_or(if eni.kind == EniKind::Primary {
                    0
                } else {
                    1
                })),
                network_card_index: Some(0),
                status: Some(
                    match eni.status {
                        EniStatus::Attaching => "attaching",
                        EniStatus::Detaching => "detaching",
                        _ => "attached",
                    }
                    .to_owned(),
                ),
            }),
            tag_set: eni
                .tags
                .iter()
                .map(|(k, v)| Tag {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect::<Vec<_>>()
                .into(),
            private_ip_addresses_set: ips.into(),
            ipv6_addresses_set: eni
                .ipv6
                .iter()
                .map(|ip| Ipv6Item {
                    ipv6_address: ip.to_string(),
                })
                .collect::<Vec<_>>()
                .into(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct CreateResponse {
    #[serde(rename = "requestId", default)]
    pub(crate) request_id: Option<String>,
    #[serde(rename = "networkInterface")]
    pub(crate) network_interface: NetworkInterface,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct AttachResponse {
    #[serde(rename = "requestId", default)]
    pub(crate) request_id: Option<String>,
    #[serde(rename = "attachmentId", default)]
    pub(crate) attachment_id: Option<String>,
}

/// `<return>true</return>` answers (detach, delete, unassign) and any other answer whose body
/// the client only checks for being XML.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Ack {
    #[serde(rename = "requestId", default)]
    pub(crate) request_id: Option<String>,
    #[serde(rename = "return", default, skip_serializing_if = "Option::is_none")]
    pub(crate) ok: Option<bool>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct AssignedPrivateIp {
    #[serde(rename = "privateIpAddress")]
    pub(crate) private_ip_address: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct AssignIpv4Response {
    #[serde(rename = "requestId", default)]
    pub(crate) request_id: Option<String>,
    #[serde(rename = "assignedPrivateIpAddressesSet", default)]
    pub(crate) assigned: Items<AssignedPrivateIp>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct AssignIpv6Response {
    #[serde(rename = "requestId", default)]
    pub(crate) request_id: Option<String>,
    #[serde(rename = "assignedIpv6Addresses", default)]
    pub(crate) assigned: Items<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct DescribeEnisResponse {
    #[serde(rename = "requestId", default)]
    pub(crate) request_id: Option<String>,
    #[serde(rename = "networkInterfaceSet", default)]
    pub(crate) set: Items<NetworkInterface>,
    #[serde(rename = "nextToken", default, skip_serializing_if = "Option::is_none")]
    pub(crate) next_token: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct NetworkInfo {
    #[serde(rename = "maximumNetworkInterfaces", default)]
    pub(crate) maximum_network_interfaces: u32,
    #[serde(rename = "ipv4AddressesPerInterface", default)]
    pub(crate) ipv4_addresses_per_interface: u32,
    #[serde(rename = "ipv6AddressesPerInterface", default)]
    pub(crate) ipv6_addresses_per_interface: u32,
    #[serde(rename = "ipv6Supported", default)]
    pub(crate) ipv6_supported: bool,
    #[serde(
        rename = "maximumNetworkCards",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) maximum_network_cards: Option<u32>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct InstanceTypeInfo {
    #[serde(rename = "instanceType")]
    pub(crate) instance_type: String,
    #[serde(
        rename = "networkInfo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) network_info: Option<NetworkInfo>,
}

impl InstanceTypeInfo {
    pub(crate) fn into_limits(self) -> Result<InstanceLimits, String> {
        let n = self
            .network_info
            .ok_or_else(|| format!("{} has no networkInfo", self.instance_type))?;
        if n.maximum_network_interfaces == 0 || n.ipv4_addresses_per_interface == 0 {
            return Err(format!(
                "{}: maximumNetworkInterfaces {} / ipv4AddressesPerInterface {}",
                self.instance_type, n.maximum_network_interfaces, n.ipv4_addresses_per_interface
            ));
        }
        let v6 = if n.ipv6_supported {
            n.ipv6_addresses_per_interface
        } else {
            0
        };
        Ok(InstanceLimits::new(
            self.instance_type,
            n.maximum_network_interfaces,
            n.ipv4_addresses_per_interface,
            v6,
        ))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct DescribeInstanceTypesResponse {
    #[serde(rename = "requestId", default)]
    pub(crate) request_id: Option<String>,
    #[serde(rename = "instanceTypeSet", default)]
    pub(crate) set: Items<InstanceTypeInfo>,
    #[serde(rename = "nextToken", default, skip_serializing_if = "Option::is_none")]
    pub(crate) next_token: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Ipv6CidrAssociation {
    #[serde(rename = "ipv6CidrBlock", default)]
    pub(crate) ipv6_cidr_block: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct SubnetItem {
    #[serde(rename = "subnetId")]
    pub(crate) subnet_id: String,
    #[serde(rename = "vpcId", default)]
    pub(crate) vpc_id: String,
    #[serde(rename = "availabilityZone", default)]
    pub(crate) availability_zone: String,
    #[serde(rename = "cidrBlock", default)]
    pub(crate) cidr_block: String,
    #[serde(rename = "availableIpAddressCount", default)]
    pub(crate) available_ip_address_count: u64,
    #[serde(rename = "ipv6CidrBlockAssociationSet", default)]
    pub(crate) ipv6: Items<Ipv6CidrAssociation>,
}

impl SubnetItem {
    pub(crate) fn into_subnet(self) -> Result<Subnet, String> {
        let ipv4_cidr: Option<Ipv4Network> = if self.cidr_block.is_empty() {
            None
        } else {
            Some(
                self.cidr_block
                    .parse()
                    .map_err(|_| format!("cidrBlock {:?} is not a CIDR", self.cidr_block))?,
            )
        };
        let ipv6_cidr: Option<Ipv6Network> = self
            .ipv6
            .item
            .iter()
            .find(|a| !a.ipv6_cidr_block.is_empty())
            .map(|a| {
                a.ipv6_cidr_block
                    .parse()
                    .map_err(|_| format!("ipv6CidrBlock {:?} is not a CIDR", a.ipv6_cidr_block))
            })
            .transpose()?;
        Ok(Subnet {
            id: self.subnet_id,
            vpc_id: self.vpc_id,
            zone_id: self.availability_zone,
            ipv4_cidr,
            ipv6_cidr,
            available_ipv4: self.available_ip_address_count,
        })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct DescribeSubnetsResponse {
    #[serde(rename = "requestId", default)]
    pub(crate) request_id: Option<String>,
    #[serde(rename = "subnetSet", default)]
    pub(crate) set: Items<SubnetItem>,
    #[serde(rename = "nextToken", default, skip_serializing_if = "Option::is_none")]
    pub(crate) next_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_documented_describe_network_interfaces_answer() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeNetworkInterfacesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <requestId>fc45294c-006b-457b-bab9-012f5b3b0e40</requestId>
  <networkInterfaceSet>
    <item>
      <networkInterfaceId>eni-0f7db2c8a1e2b1e4c</networkInterfaceId>
      <subnetId>subnet-c88b6dbc</subnetId>
      <vpcId>vpc-ee5d2c89</vpcId>
      <availabilityZone>ap-southeast-1b</availabilityZone>
      <description/>
      <ownerId>123456789012</ownerId>
      <requesterManaged>false</requesterManaged>
      <status>in-use</status>
      <macAddress>02:74:B0:78:BF:AB</macAddress>
      <privateIpAddress>10.0.0.4</privateIpAddress>
      <sourceDestCheck>true</sourceDestCheck>
      <interfaceType>interface</interfaceType>
      <groupSet><item><groupId>sg-1a2b3c4d</groupId><groupName>default</groupName></item></groupSet>
      <attachment>
        <attachmentId>eni-attach-0a1b2c3d</attachmentId>
        <instanceId>i-0a1b2c3d4e5f</instanceId>
        <instanceOwnerId>123456789012</instanceOwnerId>
        <deviceIndex>1</deviceIndex>
        <status>attached</status>
        <attachTime>2013-11-18T02:27:41.000Z</attachTime>
        <deleteOnTermination>false</deleteOnTermination>
      </attachment>
      <tagSet><item><key>cnikit.io/pool</key><value>cnikit</value></item></tagSet>
      <privateIpAddressesSet>
        <item><privateIpAddress>10.0.0.4</privateIpAddress><primary>true</primary></item>
        <item><privateIpAddress>10.0.0.5</privateIpAddress><primary>false</primary></item>
      </privateIpAddressesSet>
      <ipv6AddressesSet><item><ipv6Address>2001:db8:1234:1a00::123</ipv6Address></item></ipv6AddressesSet>
    </item>
  </networkInterfaceSet>
  <nextToken>tok-2</nextToken>
</DescribeNetworkInterfacesResponse>"#;
        let r: DescribeEnisResponse = quick_xml::de::from_str(xml).unwrap();
        assert_eq!(r.next_token.as_deref(), Some("tok-2"));
        let eni = r.set.item.into_iter().next().unwrap().into_eni().unwrap();
        assert_eq!(eni.id, "eni-0f7db2c8a1e2b1e4c");
        assert_eq!(eni.status, EniStatus::InUse);
        assert_eq!(eni.kind, EniKind::Secondary);
        assert_eq!(eni.mac, "02:74:b0:78:bf:ab");
        assert_eq!(eni.primary_ipv4, Some(Ipv4Addr::new(10, 0, 0, 4)));
        assert_eq!(eni.secondary_ipv4, vec![Ipv4Addr::new(10, 0, 0, 5)]);
        assert_eq!(eni.ipv6.len(), 1);
        let a = eni.attachment.unwrap();
        assert_eq!(a.instance_id, "i-0a1b2c3d4e5f");
        assert_eq!(a.device_index, Some(1));
        assert_eq!(a.attachment_id.as_deref(), Some("eni-attach-0a1b2c3d"));
        assert_eq!(eni.tags["cnikit.io/pool"], "cnikit");
        assert_eq!(eni.security_group_ids, vec!["sg-1a2b3c4d".to_owned()]);
        assert_eq!(eni.description, None);
    }

    #[test]
    fn an_address_listed_twice_counts_once() {
        let xml = r#"<DescribeNetworkInterfacesResponse>
  <requestId>r-1</requestId>
  <networkInterfaceSet>
    <item>
      <networkInterfaceId>eni-1</networkInterfaceId>
      <macAddress>02:00:00:00:00:01</macAddress>
      <status>in-use</status>
      <privateIpAddress>198.18.1.4</privateIpAddress>
      <privateIpAddressesSet>
        <item><privateIpAddress>198.18.1.4</privateIpAddress><primary>true</primary></item>
        <item><privateIpAddress>198.18.1.5</privateIpAddress><primary>false</primary></item>
        <item><privateIpAddress>198.18.1.6</privateIpAddress><primary>false</primary></item>
        <item><privateIpAddress>198.18.1.5</privateIpAddress><primary>false</primary></item>
      </privateIpAddressesSet>
      <ipv6AddressesSet>
        <item><ipv6Address>2001:db8::1</ipv6Address></item>
        <item><ipv6Address>2001:db8::1</ipv6Address></item>
      </ipv6AddressesSet>
    </item>
  </networkInterfaceSet>
</DescribeNetworkInterfacesResponse>"#;
        let r: DescribeEnisResponse = quick_xml::de::from_str(xml).unwrap();
        let eni = r.set.item.into_iter().next().unwrap().into_eni().unwrap();
        assert_eq!(
            eni.secondary_ipv4,
            vec![Ipv4Addr::new(198, 18, 1, 5), Ipv4Addr::new(198, 18, 1, 6)]
        );
        assert_eq!(eni.ipv6, vec!["2001:db8::1".parse::<Ipv6Addr>().unwrap()]);
    }

    #[test]
    fn error_bodies_of_both_shapes() {
        let ec2 = "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>r-1</RequestID></Response>";
        let (e, rid) = quick_xml::de::from_str::<ErrorResponse>(ec2)
            .unwrap()
            .into_parts()
            .unwrap();
        assert_eq!(e.code, "RequestLimitExceeded");
        assert_eq!(rid.as_deref(), Some("r-1"));
        let other = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>no</Message></Error><RequestId>r-2</RequestId></ErrorResponse>";
        let (e, rid) = quick_xml::de::from_str::<ErrorResponse>(other)
            .unwrap()
            .into_parts()
            .unwrap();
        assert_eq!(e.code, "InvalidClientTokenId");
        assert_eq!(rid.as_deref(), Some("r-2"));
        assert!(
            quick_xml::de::from_str::<ErrorResponse>("<Response/>")
                .map(ErrorResponse::into_parts)
                .ok()
                .flatten()
                .is_none()
        );
    }

    #[test]
    fn instance_type_limits_and_subnets() {
        let xml = "<DescribeInstanceTypesResponse><instanceTypeSet><item><instanceType>m5.large</instanceType><networkInfo><maximumNetworkInterfaces>3</maximumNetworkInterfaces><ipv4AddressesPerInterface>10</ipv4AddressesPerInterface><ipv6AddressesPerInterface>10</ipv6AddressesPerInterface><ipv6Supported>true</ipv6Supported></networkInfo></item></instanceTypeSet></DescribeInstanceTypesResponse>";
        let r: DescribeInstanceTypesResponse = quick_xml::de::from_str(xml).unwrap();
        let l = r
            .set
            .item
            .into_iter()
            .next()
            .unwrap()
            .into_limits()
            .unwrap();
        assert_eq!((l.max_enis, l.ipv4_per_eni, l.ipv6_per_eni), (3, 10, 10));
        let bad = InstanceTypeInfo {
            instance_type: "x".into(),
            network_info: None,
        };
        assert!(bad.into_limits().is_err());
        let xml = "<DescribeSubnetsResponse><subnetSet><item><subnetId>subnet-1</subnetId><vpcId>vpc-1</vpcId><cidrBlock>10.0.1.0/24</cidrBlock><availableIpAddressCount>251</availableIpAddressCount><availabilityZone>us-east-1a</availabilityZone><ipv6CidrBlockAssociationSet><item><ipv6CidrBlock>2001:db8::/64</ipv6CidrBlock></item></ipv6CidrBlockAssociationSet></item></subnetSet></DescribeSubnetsResponse>";
        let r: DescribeSubnetsResponse = quick_xml::de::from_str(xml).unwrap();
        let s = r
            .set
            .item
            .into_iter()
            .next()
            .unwrap()
            .into_subnet()
            .unwrap();
        assert_eq!(s.available_ipv4, 251);
        assert!(s.ipv6_cidr.is_some());
        let bad = SubnetItem {
            subnet_id: "s".into(),
            cidr_block: "nonsense".into(),
            ..SubnetItem::default()
        };
        assert!(bad.into_subnet().is_err());
    }
}
