//! A small EC2 world for tests against an EC2-compatible server (moto): a VPC, a subnet, a
//! security group and one running instance, made with [`Ec2Client::call`].

use super::Ec2Client;
use crate::error::{Error, Result};

/// What [`Testbed::create`] made.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Testbed {
    /// The VPC (`198.18.0.0/16`).
    pub vpc_id: String,
    /// The subnet (`198.18.<n>.0/24`, with an IPv6 /64 when the server hands one out).
    pub subnet_id: String,
    /// Its availability zone.
    pub zone: String,
    /// A security group in the VPC.
    pub security_group_id: String,
    /// A running instance of the asked type, its primary ENI in the subnet.
    pub instance_id: String,
}

/// The text of the first `<tag>…</tag>` in `xml`.
#[must_use]
pub fn first_tag(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(xml[start..start + len].trim().to_owned())
}

fn field(action: &str, xml: &str, tag: &str) -> Result<String> {
    first_tag(xml, tag).ok_or_else(|| Error::InvalidResponse {
        action: action.to_owned(),
        http_status: Some(200),
        request_id: None,
        detail: format!("no <{tag}> in the answer"),
    })
}

impl Testbed {
    /// Creates the world with an instance of `instance_type` and a subnet of `prefix_len`
    /// (16–28) bits numbered `n`.
    ///
    /// # Errors
    /// Any failing call.
    pub async fn create_sized(
        ec2: &Ec2Client,
        instance_type: &str,
        n: u8,
        prefix_len: u8,
    ) -> Result<Self> {
        let zone = format!("{}a", ec2.config().region);
        let xml = ec2
            .call(
                "CreateVpc",
                &[
                    ("CidrBlock", "198.18.0.0/16"),
                    ("AmazonProvidedIpv6CidrBlock", "true"),
                ],
            )
            .await?;
        let vpc_id = field("CreateVpc", &xml, "vpcId")?;
        let vpc_v6 = first_tag(&xml, "ipv6CidrBlock");
        let cidr = format!("198.18.{n}.0/{prefix_len}");
        let mut params = vec![
            ("VpcId", vpc_id.as_str()),
            ("CidrBlock", cidr.as_str()),
            ("AvailabilityZone", zone.as_str()),
        ];
        // The VPC's /56 narrowed to the /64 numbered like the IPv4 subnet.
        let v6 = vpc_v6
            .as_deref()
            .and_then(|c| c.parse::<ipnetwork::Ipv6Network>().ok())
            .map(|net| {
                let mut seg = net.network().segments();
                seg[3] |= u16::from(n);
                seg[4..].fill(0);
                format!("{}/64", std::net::Ipv6Addr::from(seg))
            });
        if let Some(v6) = &v6 {
            params.push(("Ipv6CidrBlock", v6));
        }
        let xml = ec2.call("CreateSubnet", &params).await?;
        let subnet_id = field("CreateSubnet", &xml, "subnetId")?;
        let name = format!("cnikit-{vpc_id}");
        let xml = ec2
            .call(
                "CreateSecurityGroup",
                &[
                    ("GroupName", &name),
                    ("GroupDescription", "cnikit tests"),
                    ("VpcId", &vpc_id),
                ],
            )
            .await?;
        let security_group_id = field("CreateSecurityGroup", &xml, "groupId")?;
        let xml = ec2.call("DescribeImages", &[]).await?;
        let image = field("DescribeImages", &xml, "imageId")?;
        let xml = ec2
            .call(
                "RunInstances",
                &[
                    ("ImageId", &image),
                    ("InstanceType", instance_type),
                    ("MinCount", "1"),
                    ("MaxCount", "1"),
                    ("SubnetId", &subnet_id),
                    ("SecurityGroupId.1", &security_group_id),
                ],
            )
            .await?;
        let instance_id = field("RunInstances", &xml, "instanceId")?;
        Ok(Self {
            vpc_id,
            subnet_id,
            zone,
            security_group_id,
            instance_id,
        })
    }

    /// [`Testbed::create_sized`] with a /24.
    ///
    /// # Errors
    /// Any failing call.
    pub async fn create(ec2: &Ec2Client, instance_type: &str, n: u8) -> Result<Self> {
        Self::create_sized(ec2, instance_type, n, 24).await
    }
}
