//! Plain data describing what the cluster zone contains.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::Name;

/// A Kubernetes Service, as far as DNS cares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Namespace (a DNS label).
    pub namespace: String,
    /// Service name (a DNS label).
    pub name: String,
    /// ClusterIP, headless or `ExternalName`.
    #[serde(flatten)]
    pub kind: ServiceKind,
    /// Ports; named ones get SRV records.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
}

impl Service {
    /// A Service with ClusterIP(s) (one per family for dual-stack).
    #[must_use]
    pub fn cluster_ip(namespace: &str, name: &str, ips: Vec<IpAddr>) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            kind: ServiceKind::ClusterIp { cluster_ips: ips },
            ports: Vec::new(),
        }
    }

    /// A headless Service (no ClusterIP) with its endpoints.
    #[must_use]
    pub fn headless(namespace: &str, name: &str, endpoints: Vec<Endpoint>) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            kind: ServiceKind::Headless { endpoints },
            ports: Vec::new(),
        }
    }

    /// An `ExternalName` Service (a CNAME to `target`).
    #[must_use]
    pub fn external_name(namespace: &str, name: &str, target: Name) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            kind: ServiceKind::ExternalName {
                external_name: target,
            },
            ports: Vec::new(),
        }
    }

    /// Adds a port.
    #[must_use]
    pub fn with_port(mut self, name: Option<&str>, protocol: Protocol, port: u16) -> Self {
        self.ports.push(ServicePort {
            name: name.map(str::to_owned),
            protocol,
            port,
        });
        self
    }
}

/// What kind of Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
#[non_exhaustive]
pub enum ServiceKind {
    /// A virtual IP per family.
    ClusterIp {
        /// The `ClusterIPs`.
        cluster_ips: Vec<IpAddr>,
    },
    /// No virtual IP: the name resolves to the ready endpoints.
    Headless {
        /// The endpoints.
        endpoints: Vec<Endpoint>,
    },
    /// An alias to a name outside the cluster.
    ExternalName {
        /// The target.
        external_name: Name,
    },
}

/// A Service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePort {
    /// Port name; unnamed ports have no SRV record.
    #[serde(default)]
    pub name: Option<String>,
    /// Transport protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// Port number.
    pub port: u16,
}

/// A Service port's protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[non_exhaustive]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The SRV label (`_tcp`, `_udp`, `_sctp`).
    #[must_use]
    pub fn srv_label(self) -> &'static str {
        match self {
            Self::Tcp => "_tcp",
            Self::Udp => "_udp",
            Self::Sctp => "_sctp",
        }
    }
}

/// An endpoint of a headless Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Addresses (one per family).
    pub ips: Vec<IpAddr>,
    /// Explicit hostname (`StatefulSet` pods); otherwise the address with dashes stands in.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Only ready endpoints are published.
    #[serde(default = "yes")]
    pub ready: bool,
}

fn yes() -> bool {
    true
}

impl Endpoint {
    /// A ready endpoint without a hostname.
    #[must_use]
    pub fn ready(ip: IpAddr) -> Self {
        Self {
            ips: vec![ip],
            hostname: None,
            ready: true,
        }
    }

    /// A ready endpoint with a hostname.
    #[must_use]
    pub fn with_hostname(ip: IpAddr, hostname: &str) -> Self {
        Self {
            ips: vec![ip],
            hostname: Some(hostname.to_owned()),
            ready: true,
        }
    }
}

/// A pod, for `<a-b-c-d>.<ns>.pod.<zone>` records and as a pod-index source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Pod name (informational).
    #[serde(default)]
    pub name: String,
    /// The pod's address.
    pub ip: IpAddr,
}

/// Which `<ip-with-dashes>.<ns>.pod.<zone>` names exist (CoreDNS's `pods` option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PodRecords {
    /// Only for pods the table knows, in their own namespace (CoreDNS `pods verified`).
    #[default]
    Verified,
    /// Any well-formed name answers with the address it spells (the deprecated kube-dns
    /// behaviour the specification still requires; CoreDNS `pods insecure`).
    Insecure,
    /// No pod records.
    Disabled,
}

/// The label a pod or endpoint address gets: dots (IPv4) or colons (IPv6) become dashes.
pub(crate) fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The address a dashed label spells, if it is one.
pub(crate) fn undashed(label: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(label).ok()?;
    if let Ok(v4) = text.replace('-', ".").parse::<std::net::Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    text.replace('-', ":").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashed_addresses_round_trip() {
        for ip in ["10.244.1.7", "fd00::1", "2001:db8:0:1::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(undashed(dashed(ip).as_bytes()), Some(ip));
        }
        assert_eq!(dashed("10.0.0.1".parse().unwrap()), "10-0-0-1");
        assert_eq!(undashed(b"web"), None);
        assert_eq!(undashed(b"10-0-0"), None);
    }

    #[test]
    fn services_deserialize_from_config() {
        let s: Service = serde_json::from_str(
            r#"{"namespace":"prod","name":"web","cluster_ips":["10.96.0.10"],
                "ports":[{"name":"http","port":80}]}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            Service::cluster_ip("prod", "web", vec!["10.96.0.10".parse().unwrap()]).with_port(
                Some("http"),
                Protocol::Tcp,
                80
            )
        );
        let h: Service = serde_json::from_str(
            r#"{"namespace":"prod","name":"db","endpoints":[{"ips":["198.18.0.7"],"hostname":"db-0"}]}"#,
        )
        .unwrap();
        assert!(matches!(h.kind, ServiceKind::Headless { .. }));
        let e: Service = serde_json::from_str(
            r#"{"namespace":"prod","name":"ext","external_name":"www.example.com"}"#,
        )
        .unwrap();
        assert!(matches!(e.kind, ServiceKind::ExternalName { .. }));
    }
}
