//! JSON bodies of the ECS and VPC RPC responses (ecs-api.md §2–3), shared by the client (which
//! reads them) and the HTTP simulator (which writes them).
//!
//! Lists come wrapped in an object with a singular key (`"PrivateIpSets": {"PrivateIpSet":
//! [...]}`) and may be missing or `{}` when empty, hence the `default`s everywhere. Fields the
//! client needs are checked when converting, so a missing one becomes a typed error.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::types::{Eni, EniAttachment, EniKind, EniStatus, InstanceLimits, Subnet};

/// An error response.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub(crate) request_id: Option<String>,
    #[serde(default)]
    pub(crate) host_id: Option<String>,
    #[serde(default)]
    pub(crate) code: Option<String>,
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) recommend: Option<String>,
}

/// Just the request id (responses of Attach, Detach, Delete, Unassign).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Ack {
    #[serde(default)]
    pub(crate) request_id: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PrivateIpSet {
    pub(crate) private_ip_address: String,
    #[serde(default)]
    pub(crate) primary: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PrivateIpSets {
    #[serde(default)]
    pub(crate) private_ip_set: Vec<PrivateIpSet>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Ipv6Set {
    pub(crate) ipv6_address: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Ipv6Sets {
    #[serde(default)]
    pub(crate) ipv6_set: Vec<Ipv6Set>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SecurityGroupIds {
    #[serde(default)]
    pub(crate) security_group_id: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Tag {
    pub(crate) tag_key: String,
    #[serde(default)]
    pub(crate) tag_value: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Tags {
    #[serde(default)]
    pub(crate) tag: Vec<Tag>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Attachment {
    #[serde(default)]
    pub(crate) instance_id: Option<String>,
    #[serde(default)]
    pub(crate) device_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) trunk_network_interface_id: Option<String>,
}

/// One ENI: an item of `DescribeNetworkInterfaces`, and the body of `CreateNetworkInterface`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NetworkInterface {
    pub(crate) network_interface_id: String,
    #[serde(default)]
    pub(crate) status: String,
    #[serde(default, rename = "Type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) instance_id: Option<String>,
    #[serde(default)]
    pub(crate) mac_address: String,
    #[serde(default)]
    pub(crate) private_ip_address: Option<String>,
    #[serde(default)]
    pub(crate) private_ip_sets: PrivateIpSets,
    #[serde(default)]
    pub(crate) ipv6_sets: Ipv6Sets,
    #[serde(default)]
    pub(crate) vpc_id: String,
    #[serde(default, rename = "VSwitchId")]
    pub(crate) vswitch_id: String,
    #[serde(default)]
    pub(crate) zone_id: String,
    #[serde(default)]
    pub(crate) security_group_ids: SecurityGroupIds,
    #[serde(default)]
    pub(crate) tags: Tags,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) attachment: Option<Attachment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) creation_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
}

fn parse_ip<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{what} {s:?} is not an address"))
}

impl NetworkInterface {
    /// Converts to the provider type; `Err` names what was malformed.
    pub(crate) fn into_eni(self) -> Result<Eni, String> {
        if self.network_interface_id.is_empty() {
            return Err("NetworkInterfaceId is empty".to_owned());
        }
        let mut primary = match self.private_ip_address.as_deref() {
            Some(s) if !s.is_empty() => Some(parse_ip::<Ipv4Addr>("PrivateIpAddress", s)?),
            _ => None,
        };
        let mut secondary = Vec::new();
        for set in &self.private_ip_sets.private_ip_set {
            let ip: Ipv4Addr = parse_ip("PrivateIpSet.PrivateIpAddress", &set.private_ip_address)?;
            if set.primary {
                primary.get_or_insert(ip);
            } else if Some(ip) != primary {
                secondary.push(ip);
            }
        }
        let ipv6 = self
            .ipv6_sets
            .ipv6_set
            .iter()
            .map(|s| parse_ip::<Ipv6Addr>("Ipv6Address", &s.ipv6_address))
            .collect::<Result<_, _>>()?;
        // The instance is in `InstanceId`, or only in `Attachment` for member ENIs.
        let attachment_instance =
            self.instance_id
                .clone()
                .filter(|i| !i.is_empty())
                .or_else(|| {
                    self.attachment
                        .as_ref()
                        .and_then(|a| a.instance_id.clone())
                        .filter(|i| !i.is_empty())
                });
        let mut eni = Eni::new(self.network_interface_id);
        eni.mac = self.mac_address.to_ascii_lowercase();
        eni.status = EniStatus::parse(&self.status);
        eni.kind = EniKind::parse(&self.kind);
        eni.attachment = attachment_instance.map(|instance_id| EniAttachment {
            instance_id,
            device_index: self.attachment.as_ref().and_then(|a| a.device_index),
            attachment_id: None,
        });
        eni.subnet_id = self.vswitch_id;
        eni.vpc_id = self.vpc_id;
        eni.zone_id = self.zone_id;
        eni.primary_ipv4 = primary;
        eni.secondary_ipv4 = secondary;
        eni.ipv6 = ipv6;
        eni.security_group_ids = self.security_group_ids.security_group_id;
        eni.tags = self
            .tags
            .tag
            .into_iter()
            .map(|t| (t.tag_key, t.tag_value))
            .collect();
        eni.description = self.description.filter(|d| !d.is_empty());
        eni.created_at = self.creation_time.filter(|d| !d.is_empty());
        Ok(eni)
    }

    /// The wire form of an ENI (the simulator's answer).
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn from_eni(e: &Eni) -> Self {
        Self {
            network_interface_id: e.id.clone(),
            status: e.status.as_str().to_owned(),
            kind: e.kind.as_str().to_owned(),
            instance_id: Some(e.instance_id().unwrap_or_default().to_owned()),
            mac_address: e.mac.clone(),
            private_ip_address: e.primary_ipv4.map(|ip| ip.to_string()),
            private_ip_sets: PrivateIpSets {
                private_ip_set: e
                    .primary_ipv4
                    .iter()
                    .map(|ip| (ip, true))
                    .chain(e.secondary_ipv4.iter().map(|ip| (ip, false)))
                    .map(|(ip, primary)| PrivateIpSet {
                        private_ip_address: ip.to_string(),
                        primary,
                    })
                    .collect(),
            },
            ipv6_sets: Ipv6Sets {
                ipv6_set: e
                    .ipv6
                    .iter()
                    .map(|ip| Ipv6Set {
                        ipv6_address: ip.to_string(),
                    })
                    .collect(),
            },
            vpc_id: e.vpc_id.clone(),
            vswitch_id: e.subnet_id.clone(),
            zone_id: e.zone_id.clone(),
            security_group_ids: SecurityGroupIds {
                security_group_id: e.security_group_ids.clone(),
            },
            tags: Tags {
                tag: e
                    .tags
                    .iter()
                    .map(|(k, v)| Tag {
                        tag_key: k.clone(),
                        tag_value: v.clone(),
                    })
                    .collect(),
            },
            attachment: e.attachment.as_ref().map(|a| Attachment {
                instance_id: Some(a.instance_id.clone()),
                device_index: a.device_index,
                trunk_network_interface_id: None,
            }),
            creation_time: e.created_at.clone(),
            description: e.description.clone(),
        }
    }
}

/// `CreateNetworkInterface` response: the ENI's fields at the top level.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateResponse {
    #[serde(default)]
    pub(crate) request_id: Option<String>,
    #[serde(flatten)]
    pub(crate) eni: NetworkInterface,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NetworkInterfaceSets {
    #[serde(default)]
    pub(crate) network_interface_set: Vec<NetworkInterface>,
}

/// `DescribeNetworkInterfaces` response.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeEnisResponse {
    #[serde(default)]
    pub(crate) request_id: Option<String>,
    #[serde(default)]
    pub(crate) next_token: Option<String>,
    #[serde(default)]
    pub(crate) total_count: Option<u64>,
    #[serde(default)]
    pub(crate) network_interface_sets: NetworkInterfaceSets,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AssignedPrivateIps {
    #[serde(default)]
    pub(crate) private_ip_address: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AssignedPrivateIpAddressesSet {
    #[serde(default)]
    pub(crate) network_interface_id: Option<String>,
    #[serde(default)]
    pub(crate) private_ip_set: AssignedPrivateIps,
}

/// `AssignPrivateIpAddresses` response (an object holding a *string* array, unlike Describe).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AssignIpv4Response {
    #[serde(default)]
    pub(crate) request_id: Option<String>,
    pub(crate) assigned_private_ip_addresses_set: AssignedPrivateIpAddressesSet,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AssignedIpv6s {
    #[serde(default)]
    pub(crate) ipv6_address: Vec<String>,
}

/// `AssignIpv6Addresses` response.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct AssignIpv6Response {
    #[serde(default)]
    pub(crate) request_id: Option<String>,
    #[serde(default)]
    pub(crate) network_interface_id: Option<String>,
    pub(crate) ipv6_sets: AssignedIpv6s,
}

/// One item of `DescribeInstanceTypes`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct InstanceType {
    pub(crate) instance_type_id: String,
    pub(crate) eni_quantity: u32,
    pub(crate) eni_private_ip_address_quantity: u32,
    #[serde(default)]
    pub(crate) eni_ipv6_address_quantity: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) eni_total_quantity: Option<u32>,
    #[serde(default)]
    pub(crate) eni_trunk_supported: bool,
}

impl InstanceType {
    pub(crate) fn into_limits(self) -> InstanceLimits {
        InstanceLimits {
            instance_type: self.instance_type_id,
            max_enis: self.eni_quantity,
            ipv4_per_eni: self.eni_private_ip_address_quantity,
            ipv6_per_eni: self.eni_ipv6_address_quantity,
            max_total_enis: self.eni_total_quantity,
            trunk_supported: self.eni_trunk_supported,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct InstanceTypes {
    #[serde(default)]
    pub(crate) instance_type: Vec<InstanceType>,
}

/// `DescribeInstanceTypes` response.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeInstanceTypesResponse {
    #[serde(default)]
    pub(crate) request_id: Option<String>,
    #[serde(default)]
    pub(crate) next_token: Option<String>,
    #[serde(default)]
    pub(crate) instance_types: InstanceTypes,
}

/// One item of VPC `DescribeVSwitches`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct VSwitch {
    #[serde(rename = "VSwitchId")]
    pub(crate) vswitch_id: String,
    #[serde(default)]
    pub(crate) vpc_id: String,
    #[serde(default)]
    pub(crate) zone_id: String,
    #[serde(default)]
    pub(crate) cidr_block: Option<String>,
    #[serde(default)]
    pub(crate) ipv6_cidr_block: Option<String>,
    #[serde(default)]
    pub(crate) status: Option<String>,
    pub(crate) available_ip_address_count: u64,
}

impl VSwitch {
    pub(crate) fn into_subnet(self) -> Result<Subnet, String> {
        let v4 = match self.cidr_block.as_deref() {
            Some(s) if !s.is_empty() => Some(
                s.parse()
                    .map_err(|_| format!("CidrBlock {s:?} is not a CIDR"))?,
            ),
            _ => None,
        };
        let v6 = match self.ipv6_cidr_block.as_deref() {
            Some(s) if !s.is_empty() => Some(
                s.parse()
                    .map_err(|_| format!("Ipv6CidrBlock {s:?} is not a CIDR"))?,
            ),
            _ => None,
        };
        Ok(Subnet {
            id: self.vswitch_id,
            vpc_id: self.vpc_id,
            zone_id: self.zone_id,
            ipv4_cidr: v4,
            ipv6_cidr: v6,
            available_ipv4: self.available_ip_address_count,
        })
    }

    #[cfg(feature = "sim")]
    pub(crate) fn from_subnet(s: &Subnet) -> Self {
        Self {
            vswitch_id: s.id.clone(),
            vpc_id: s.vpc_id.clone(),
            zone_id: s.zone_id.clone(),
            cidr_block: s.ipv4_cidr.map(|c| c.to_string()),
            ipv6_cidr_block: s.ipv6_cidr.map(|c| c.to_string()),
            status: Some("Available".to_owned()),
            available_ip_address_count: s.available_ipv4,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct VSwitches {
    #[serde(default, rename = "VSwitch")]
    pub(crate) vswitch: Vec<VSwitch>,
}

/// VPC `DescribeVSwitches` response.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DescribeVSwitchesResponse {
    #[serde(default)]
    pub(crate) request_id: Option<String>,
    #[serde(default)]
    pub(crate) total_count: Option<u64>,
    #[serde(default)]
    pub(crate) page_number: Option<u64>,
    #[serde(default)]
    pub(crate) page_size: Option<u64>,
    #[serde(default, rename = "VSwitches")]
    pub(crate) vswitches: VSwitches,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of ecs-api.md, verbatim.
    #[test]
    fn documented_examples_parse() {
        let create: CreateResponse = serde_json::from_str(
            r#"{
  "RequestId": "0910A187-1002-4488-9FE5-EF770D142B73",
  "NetworkInterfaceId": "eni-bp1bighqoqowq73yw91r",
  "Status": "Available",
  "Type": "Secondary",
  "VpcId": "vpc-bp1j7w3gc1cexjqdxxxx",
  "VSwitchId": "vsw-bp16usj2p27htro3xxxx",
  "ZoneId": "cn-hangzhou-e",
  "MacAddress": "00:16:3e:12:34:56",
  "PrivateIpAddress": "192.168.0.49",
  "PrivateIpSets": { "PrivateIpSet": [
      { "PrivateIpAddress": "192.168.0.49", "Primary": true },
      { "PrivateIpAddress": "192.168.0.50", "Primary": false } ] },
  "Ipv6Sets": { "Ipv6Set": [] },
  "SecurityGroupIds": { "SecurityGroupId": ["sg-bp18kz60mefsicfgxxxx"] },
  "Tags": { "Tag": [ { "TagKey": "k8s.aliyun.com", "TagValue": "true" } ] },
  "OwnerId": "1234567890",
  "ResourceGroupId": "rg-2ze88m67qx5zxxxx"
}"#,
        )
        .unwrap();
        let eni = create.eni.into_eni().unwrap();
        assert_eq!(eni.id, "eni-bp1bighqoqowq73yw91r");
        assert_eq!(eni.primary_ipv4, Some(Ipv4Addr::new(192, 168, 0, 49)));
        assert_eq!(eni.secondary_ipv4, vec![Ipv4Addr::new(192, 168, 0, 50)]);
        assert_eq!(eni.subnet_id, "vsw-bp16usj2p27htro3xxxx");
        assert_eq!(eni.tags["k8s.aliyun.com"], "true");

        let d: DescribeEnisResponse = serde_json::from_str(
            r#"{
  "RequestId": "5C0E2B68-EDB0-421D-B146-E58A04808242",
  "TotalCount": 1,
  "NextToken": "",
  "NetworkInterfaceSets": { "NetworkInterfaceSet": [ {
      "NetworkInterfaceId": "eni-wz9iib303as7e5c3xxxx",
      "Status": "InUse",
      "Type": "Secondary",
      "InstanceId": "i-wz91t9p4j9xsw2pnxxxx",
      "MacAddress": "00:16:3e:12:34:c2",
      "PrivateIpAddress": "192.168.1.10",
      "PrivateIpSets": { "PrivateIpSet": [
          { "PrivateIpAddress": "192.168.1.10", "Primary": true, "AssociatedPublicIp": {} },
          { "PrivateIpAddress": "192.168.1.11", "Primary": false, "AssociatedPublicIp": {} } ] },
      "Ipv6Sets": { "Ipv6Set": [ { "Ipv6Address": "2408:4321:180:1701:94c7:bc38:3bfa:1" } ] },
      "VpcId": "vpc-wz9wh0fywtu5szszbxxxx",
      "VSwitchId": "vsw-wz9vqfgwgkj94ubb1xxxx",
      "ZoneId": "cn-shenzhen-c",
      "SecurityGroupIds": { "SecurityGroupId": ["sg-wz9iib303as7e5c7xxxx"] },
      "Tags": { "Tag": [ { "TagKey": "owner", "TagValue": "cni" } ] },
      "Attachment": { "InstanceId": "i-wz91t9p4j9xsw2pnxxxx", "DeviceIndex": 1 },
      "CreationTime": "2019-12-25T12:31:31Z",
      "DeleteOnRelease": false,
      "OwnerId": "140692647406xxxx"
  } ] }
}"#,
        )
        .unwrap();
        let e = d
            .network_interface_sets
            .network_interface_set
            .into_iter()
            .next()
            .unwrap()
            .into_eni()
            .unwrap();
        assert_eq!(e.status, EniStatus::InUse);
        assert_eq!(e.instance_id(), Some("i-wz91t9p4j9xsw2pnxxxx"));
        assert_eq!(e.attachment.unwrap().device_index, Some(1));
        assert_eq!(e.ipv6.len(), 1);
        assert_eq!(e.mac, "00:16:3e:12:34:c2");

        let a: AssignIpv4Response = serde_json::from_str(
            r#"{
  "RequestId": "473469C7-AA6F-4DC5-B3DB-A3DC0DE3C83E",
  "AssignedPrivateIpAddressesSet": {
    "NetworkInterfaceId": "eni-bp125p95hhdhn3otxxxx",
    "PrivateIpSet": { "PrivateIpAddress": ["192.168.0.21", "192.168.0.22"] },
    "Ipv4PrefixSet": { "Ipv4Prefixes": [] }
  }
}"#,
        )
        .unwrap();
        assert_eq!(
            a.assigned_private_ip_addresses_set
                .private_ip_set
                .private_ip_address
                .len(),
            2
        );

        let a6: AssignIpv6Response = serde_json::from_str(
            r#"{ "RequestId": "473469C7-AA6F-4DC5-B3DB-A3DC0DE3C83E",
  "NetworkInterfaceId": "eni-bp1iqejowblx6h8jxxxx",
  "Ipv6Sets": { "Ipv6Address": ["2001:db8:1234:1a00::1"] },
  "Ipv6PrefixSets": { "Ipv6Prefix": [] } }"#,
        )
        .unwrap();
        assert_eq!(a6.ipv6_sets.ipv6_address, vec!["2001:db8:1234:1a00::1"]);

        let t: DescribeInstanceTypesResponse = serde_json::from_str(
            r#"{ "RequestId": "F4FCC80A-D502-530C-B107-2726813FDE09", "NextToken": "",
  "InstanceTypes": { "InstanceType": [ {
      "InstanceTypeId": "ecs.u1-c1m4.xlarge", "InstanceTypeFamily": "ecs.u1",
      "CpuCoreCount": 4, "MemorySize": 16,
      "EniQuantity": 3, "EniPrivateIpAddressQuantity": 10, "EniIpv6AddressQuantity": 1,
      "EniTotalQuantity": 6, "EniTrunkSupported": true, "EriQuantity": 0,
      "PrimaryEniQueueNumber": 2, "SecondaryEniQueueNumber": 2, "TotalEniQueueQuantity": 6,
      "InstanceBandwidthRx": 1536000, "InstanceBandwidthTx": 1536000 } ] } }"#,
        )
        .unwrap();
        let l = t
            .instance_types
            .instance_type
            .into_iter()
            .next()
            .unwrap()
            .into_limits();
        assert_eq!(
            (
                l.max_enis,
                l.ipv4_per_eni,
                l.ipv6_per_eni,
                l.max_total_enis,
                l.trunk_supported
            ),
            (3, 10, 1, Some(6), true)
        );

        let v: DescribeVSwitchesResponse = serde_json::from_str(
            r#"{ "RequestId": "x", "TotalCount": 1, "PageNumber": 1, "PageSize": 10,
  "VSwitches": { "VSwitch": [ { "VSwitchId": "vsw-bp1", "VpcId": "vpc-bp1",
      "ZoneId": "cn-hangzhou-i", "CidrBlock": "192.168.64.0/18", "Status": "Available",
      "AvailableIpAddressCount": 16228, "IsDefault": false } ] } }"#,
        )
        .unwrap();
        let s = v
            .vswitches
            .vswitch
            .into_iter()
            .next()
            .unwrap()
            .into_subnet()
            .unwrap();
        assert_eq!(s.available_ipv4, 16228);
        assert_eq!(s.ipv4_cidr.unwrap().prefix(), 18);

        let e: ErrorBody = serde_json::from_str(r#"{ "RequestId": "540CFF28-407A-40B5-B6A5-74B000000000",
  "HostId": "ecs.aliyuncs.com",
  "Code": "MissingParameter.CommandId",
  "Message": "The input parameter \"CommandId\" that is required for processing this request is not supplied.",
  "Recommend": "https://api.aliyun.com/troubleshoot?q=MissingParameter.CommandId&product=Ecs&requestId=540CFF28" }"#).unwrap();
        assert_eq!(e.code.as_deref(), Some("MissingParameter.CommandId"));
    }

    #[test]
    fn empty_lists_may_be_missing_or_empty_objects() {
        let d: DescribeEnisResponse =
            serde_json::from_str(r#"{"RequestId":"r","NetworkInterfaceSets":{}}"#).unwrap();
        assert!(d.network_interface_sets.network_interface_set.is_empty());
        let n: NetworkInterface = serde_json::from_str(
            r#"{"NetworkInterfaceId":"eni-1","PrivateIpSets":{},"Tags":{},"SecurityGroupIds":{}}"#,
        )
        .unwrap();
        let e = n.into_eni().unwrap();
        assert_eq!(e.kind, EniKind::Secondary);
        assert!(e.primary_ipv4.is_none());
    }

    #[test]
    fn malformed_values_are_errors_not_panics() {
        let n: NetworkInterface =
            serde_json::from_str(r#"{"NetworkInterfaceId":"eni-1","PrivateIpAddress":"nope"}"#)
                .unwrap();
        assert!(n.into_eni().unwrap_err().contains("PrivateIpAddress"));
        assert!(
            serde_json::from_str::<InstanceType>(
                r#"{"InstanceTypeId":"x","EniQuantity":"3","EniPrivateIpAddressQuantity":1}"#
            )
            .is_err()
        );
        assert!(serde_json::from_str::<AssignIpv4Response>(r#"{"RequestId":"r"}"#).is_err());
    }

    #[test]
    fn eni_round_trips_through_the_wire_form() {
        let mut e = Eni::new("eni-abc");
        e.mac = "00:16:3e:00:00:01".into();
        e.status = EniStatus::InUse;
        e.attachment = Some(EniAttachment {
            instance_id: "i-1".into(),
            device_index: Some(2),
            attachment_id: None,
        });
        e.primary_ipv4 = Some(Ipv4Addr::new(198, 18, 0, 5));
        e.secondary_ipv4 = vec![Ipv4Addr::new(198, 18, 0, 6)];
        e.ipv6 = vec!["2001:db8::1".parse().unwrap()];
        e.security_group_ids = vec!["sg-1".into()];
        e.tags.insert("k".into(), "v".into());
        e.subnet_id = "vsw-1".into();
        e.created_at = Some("2024-01-01T00:00:00Z".into());
        let json = serde_json::to_string(&NetworkInterface::from_eni(&e)).unwrap();
        let back = serde_json::from_str::<NetworkInterface>(&json)
            .unwrap()
            .into_eni()
            .unwrap();
        assert_eq!(back, e);
    }
}
