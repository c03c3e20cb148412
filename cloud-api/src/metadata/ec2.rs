//! EC2's instance metadata service (`IMDSv2`) behind [`InstanceMetadata`].

use std::net::{Ipv4Addr, Ipv6Addr};

use async_trait::async_trait;
use ipnetwork::{Ipv4Network, Ipv6Network};

use super::{
    ImdsClient, ImdsConfig, InstanceMetadata, MetadataInterface, normalize_mac, parse_mac_list,
};
use crate::error::{Error, Result};

/// Reads EC2's metadata service: `IMDSv2` tokens (a `PUT /latest/api/token`, then the token on
/// every read), the paths EC2 serves (`placement/region`, `network/interfaces/macs/<mac>/
/// local-ipv4s`, ...). The endpoint is configurable ([`ImdsConfig::aws`] with another
/// `base_url`).
#[derive(Debug)]
pub struct Ec2Metadata {
    imds: ImdsClient,
}

fn bad(path: &str, detail: impl Into<String>) -> Error {
    Error::Metadata {
        path: path.to_owned(),
        http_status: Some(200),
        detail: detail.into(),
    }
}

fn parse<T: std::str::FromStr>(path: &str, s: &str) -> Result<T> {
    s.trim()
        .parse()
        .map_err(|_| bad(path, format!("unparsable value {:?}", s.trim())))
}

/// One value per line (EC2's lists), blank lines skipped.
fn lines<T: std::str::FromStr>(path: &str, s: &str) -> Result<Vec<T>> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| parse(path, l))
        .collect()
}

impl Ec2Metadata {
    /// A reader for `cfg` (use [`ImdsConfig::aws`]).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(cfg: ImdsConfig) -> Result<Self> {
        Ok(Self {
            imds: ImdsClient::new(cfg)?,
        })
    }

    /// The underlying reader (for paths this trait does not cover).
    #[must_use]
    pub fn client(&self) -> &ImdsClient {
        &self.imds
    }

    async fn meta(&self, leaf: &str) -> Result<String> {
        Ok(self
            .imds
            .get(&format!("meta-data/{leaf}"))
            .await?
            .trim()
            .to_owned())
    }

    async fn meta_opt(&self, leaf: String) -> Result<Option<String>> {
        Ok(self
            .imds
            .get_optional(&format!("meta-data/{leaf}"))
            .await?
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty()))
    }

    async fn primary_leaf(&self, leaf: &str) -> Result<String> {
        let mac = self.primary_mac().await?;
        self.meta(&format!("network/interfaces/macs/{mac}/{leaf}"))
            .await
    }
}

#[async_trait]
impl InstanceMetadata for Ec2Metadata {
    async fn instance_id(&self) -> Result<String> {
        self.meta("instance-id").await
    }
    async fn instance_type(&self) -> Result<String> {
        self.meta("instance-type").await
    }
    async fn region_id(&self) -> Result<String> {
        self.meta("placement/region").await
    }
    async fn zone_id(&self) -> Result<String> {
        self.meta("placement/availability-zone").await
    }
    async fn vpc_id(&self) -> Result<String> {
        self.primary_leaf("vpc-id").await
    }
    async fn subnet_id(&self) -> Result<String> {
        self.primary_leaf("subnet-id").await
    }
    async fn primary_mac(&self) -> Result<String> {
        Ok(normalize_mac(&self.meta("mac").await?))
    }
    async fn macs(&self) -> Result<Vec<String>> {
        Ok(parse_mac_list(
            &self.meta("network/interfaces/macs/").await?,
        ))
    }
    async fn interface(&self, mac: &str) -> Result<MetadataInterface> {
        let mac = normalize_mac(mac);
        let p = |leaf: &str| format!("network/interfaces/macs/{mac}/{leaf}");
        let (id_path, ips_path) = (p("interface-id"), p("local-ipv4s"));
        let (eni, ips, subnet, subnet_cidr, vpc, vpc_cidr, v6, v6_cidr) = tokio::try_join!(
            self.meta(&id_path),
            self.meta(&ips_path),
            self.meta_opt(p("subnet-id")),
            self.meta_opt(p("subnet-ipv4-cidr-block")),
            self.meta_opt(p("vpc-id")),
            self.meta_opt(p("vpc-ipv4-cidr-block")),
            self.meta_opt(p("ipv6s")),
            self.meta_opt(p("subnet-ipv6-cidr-blocks")),
        )?;
        let private_ipv4s: Vec<Ipv4Addr> = lines(&p("local-ipv4s"), &ips)?;
        let primary_ipv4 = *private_ipv4s
            .first()
            .ok_or_else(|| bad(&p("local-ipv4s"), "no address"))?;
        let subnet_cidr: Option<Ipv4Network> = subnet_cidr
            .map(|s| parse(&p("subnet-ipv4-cidr-block"), &s))
            .transpose()?;
        let subnet_ipv6_cidr: Option<Ipv6Network> = v6_cidr
            .as_deref()
            .and_then(|s| s.lines().map(str::trim).find(|l| !l.is_empty()))
            .map(|s| parse(&p("subnet-ipv6-cidr-blocks"), s))
            .transpose()?;
        let ipv6s: Vec<Ipv6Addr> = v6
            .map(|s| lines(&p("ipv6s"), &s))
            .transpose()?
            .unwrap_or_default();
        Ok(MetadataInterface {
            mac: mac.clone(),
            eni_id: eni,
            primary_ipv4,
            private_ipv4s,
            // The VPC router is the subnet's first host (network + 1) on EC2.
            gateway: subnet_cidr.and_then(|c| c.nth(1)),
            netmask: subnet_cidr.map(|c| c.mask()),
            subnet_id: subnet,
            subnet_cidr,
            vpc_id: vpc,
            vpc_cidr: vpc_cidr
                .map(|s| parse(&p("vpc-ipv4-cidr-block"), &s))
                .transpose()?,
            ipv6_gateway: subnet_ipv6_cidr.and_then(|c| c.iter().nth(1)),
            ipv6s,
            subnet_ipv6_cidr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_lists() {
        let v: Vec<Ipv4Addr> = lines("p", "10.0.1.5\n10.0.1.6\n\n").unwrap();
        assert_eq!(v.len(), 2);
        assert!(lines::<Ipv4Addr>("p", "10.0.1.5\nnope").is_err());
    }
}
