//! A simple source of Services and network policies: one JSON file, resolved against the pods
//! wired on this node. It stands in for what a Kubernetes agent would watch (Services,
//! `EndpointSlices`, `NetworkPolicies`).
//!
//! ```json
//! {
//!   "services": [
//!     { "namespace": "shop", "name": "web", "cluster_ip": "198.19.0.10",
//!       "ports": [ { "name": "http", "protocol": "UDP", "port": 80, "target_port": 8080 } ],
//!       "backends": [ { "pod": "shop/web-0" }, { "pod": "shop/web-1" }, { "ip": "198.18.1.7" } ] }
//!   ],
//!   "policies": [
//!     { "pod": "shop/web-0",
//!       "ingress": [ { "peers": [ { "pod": "prod/client" }, { "cidr": "198.18.0.0/15", "except": ["198.18.9.0/24"] } ],
//!                      "ports": [ { "protocol": "UDP", "port": 8080 } ] } ] }
//!   ]
//! }
//! ```
//!
//! - A Service becomes one eBPF service per port (`cluster_ip:port/protocol` → each backend's
//!   address at `target_port`, default `port`) and a DNS record `name.namespace.svc.<zone>`.
//!   Backends name pods (`namespace/name`, resolved to their addresses while they are wired
//!   here) or addresses.
//! - A policy selects one pod. `ingress` / `egress` absent: that direction is not isolated;
//!   `[]`: everything is denied; otherwise a packet passes when one rule allows it (a rule's
//!   peers: any when none are listed; its ports: any when none are listed). A rule whose peers
//!   are all pods not wired here allows nothing (until they are).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use cnikit_dns_autopath::cluster as dns;
use cnikit_ebpf_dataplane::{
    EndpointPolicy, Ipv4Cidr, Peer, PortMatch, Protocol, Rule, Service, ServiceKey,
};
use serde::{Deserialize, Serialize};

/// A protocol as the file spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proto {
    /// TCP.
    #[serde(rename = "TCP", alias = "tcp")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP", alias = "udp")]
    Udp,
    /// SCTP (policies only).
    #[serde(rename = "SCTP", alias = "sctp")]
    Sctp,
}

impl Proto {
    fn dataplane(self) -> Protocol {
        match self {
            Self::Tcp => Protocol::Tcp,
            Self::Udp => Protocol::Udp,
            Self::Sctp => Protocol::Sctp,
        }
    }

    fn dns(self) -> dns::Protocol {
        match self {
            Self::Tcp => dns::Protocol::Tcp,
            Self::Udp => dns::Protocol::Udp,
            Self::Sctp => dns::Protocol::Sctp,
        }
    }
}

/// A Service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// Port name (SRV records).
    #[serde(default)]
    pub name: Option<String>,
    /// TCP or UDP.
    pub protocol: Proto,
    /// The Service port.
    pub port: u16,
    /// The backends' port (default: `port`).
    #[serde(default)]
    pub target_port: Option<u16>,
}

/// A backend: a pod on this node, or an address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum BackendRef {
    /// `namespace/name` of a pod.
    Pod {
        /// The pod.
        pod: String,
    },
    /// An address.
    Ip {
        /// The address.
        ip: Ipv4Addr,
    },
}

/// A ClusterIP Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The virtual IP.
    pub cluster_ip: Ipv4Addr,
    /// Ports.
    pub ports: Vec<PortSpec>,
    /// Backends.
    #[serde(default)]
    pub backends: Vec<BackendRef>,
    /// `sessionAffinity: ClientIP` with this timeout.
    #[serde(default, with = "humantime_serde")]
    pub client_ip_affinity: Option<Duration>,
}

/// A peer of a policy rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum PeerSpec {
    /// A pod on this node.
    Pod {
        /// `namespace/name`.
        pod: String,
    },
    /// An `ipBlock`.
    Cidr {
        /// The block.
        cidr: String,
        /// Blocks inside it that do not match.
        #[serde(default)]
        except: Vec<String>,
    },
}

/// A port of a policy rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPort {
    /// The protocol.
    pub protocol: Proto,
    /// The port (absent: every port of the protocol).
    #[serde(default)]
    pub port: Option<u16>,
    /// The end of a range starting at `port`.
    #[serde(default)]
    pub end_port: Option<u16>,
}

/// A policy rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Peers (none: anywhere).
    #[serde(default)]
    pub peers: Vec<PeerSpec>,
    /// Ports (none: every port and protocol).
    #[serde(default)]
    pub ports: Vec<PolicyPort>,
}

/// The policy of one pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// `namespace/name` of the pod.
    pub pod: String,
    /// Ingress rules (absent: not isolated).
    #[serde(default)]
    pub ingress: Option<Vec<RuleSpec>>,
    /// Egress rules (absent: not isolated).
    #[serde(default)]
    pub egress: Option<Vec<RuleSpec>>,
}

/// The file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Services.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Policies.
    #[serde(default)]
    pub policies: Vec<PolicySpec>,
}

/// A catalog that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("catalog: {0}")]
pub struct CatalogError(pub String);

/// What the catalog asks for, given the pods wired here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// eBPF services.
    pub services: Vec<Service>,
    /// DNS records of Services.
    pub dns_services: Vec<dns::Service>,
    /// Policies by pod address.
    pub policies: BTreeMap<Ipv4Addr, EndpointPolicy>,
    /// Pod references naming no pod wired here.
    pub unresolved: Vec<String>,
}

fn split_pod(reference: &str) -> Option<(&str, &str)> {
    reference
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
}

fn cidr(text: &str) -> Result<Ipv4Cidr, CatalogError> {
    text.parse()
        .map_err(|e| CatalogError(format!("{text:?} is not an IPv4 CIDR: {e}")))
}

impl Catalog {
    /// Parses and checks the file's content.
    ///
    /// # Errors
    /// [`CatalogError`] naming the first problem (malformed JSON, a pod reference that is not
    /// `namespace/name`, a bad CIDR, a duplicate Service port, a port range upside down).
    pub fn from_json(text: &str) -> Result<Self, CatalogError> {
        let catalog: Self = serde_json::from_str(text).map_err(|e| CatalogError(e.to_string()))?;
        catalog.validate()?;
        Ok(catalog)
    }

    fn validate(&self) -> Result<(), CatalogError> {
        let mut keys = BTreeSet::new();
        for s in &self.services {
            let what = format!("service {}/{}", s.namespace, s.name);
            if s.namespace.is_empty() || s.name.is_empty() {
                return Err(CatalogError(format!("{what}: empty namespace or name")));
            }
            if s.ports.is_empty() {
                return Err(CatalogError(format!("{what}: no ports")));
            }
            for p in &s.ports {
                if p.protocol == Proto::Sctp {
                    return Err(CatalogError(format!(
                        "{what}: SCTP Services are not translated"
                    )));
                }
                if !keys.insert((s.cluster_ip, p.port, p.protocol.dataplane())) {
                    return Err(CatalogError(format!(
                        "{what}: {}:{} is defined twice",
                        s.cluster_ip, p.port
                    )));
                }
            }
            for b in &s.backends {
                if let BackendRef::Pod { pod } = b
                    && split_pod(pod).is_none()
                {
                    return Err(CatalogError(format!(
                        "{what}: backend {pod:?} is not namespace/name"
                    )));
                }
            }
        }
        let mut selected = BTreeSet::new();
        for p in &self.policies {
            if split_pod(&p.pod).is_none() {
                return Err(CatalogError(format!(
                    "policy for {:?}: not namespace/name",
                    p.pod
                )));
            }
            if !selected.insert(p.pod.as_str()) {
                return Err(CatalogError(format!("two policies select {}", p.pod)));
            }
            for rule in p.ingress.iter().chain(p.egress.iter()).flatten() {
                for peer in &rule.peers {
                    match peer {
                        PeerSpec::Pod { pod } if split_pod(pod).is_none() => {
                            return Err(CatalogError(format!(
                                "policy for {}: peer {pod:?} is not namespace/name",
                                p.pod
                            )));
                        }
                        PeerSpec::Pod { .. } => {}
                        PeerSpec::Cidr { cidr: c, except } => {
                            cidr(c)?;
                            for e in except {
                                cidr(e)?;
                            }
                        }
                    }
                }
                for port in &rule.ports {
                    if let (Some(start), Some(end)) = (port.port, port.end_port)
                        && end < start
                    {
                        return Err(CatalogError(format!(
                            "policy for {}: port range {start}-{end} is upside down",
                            p.pod
                        )));
                    }
                    if port.port.is_none() && port.end_port.is_some() {
                        return Err(CatalogError(format!(
                            "policy for {}: end_port without port",
                            p.pod
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Resolves pod references against `pods` (`(namespace, name)` → address of the pods wired
    /// on this node).
    #[must_use]
    pub fn resolve(&self, pods: &BTreeMap<(String, String), Ipv4Addr>) -> Desired {
        let mut desired = Desired::default();
        let mut lookup = |reference: &str| -> Option<Ipv4Addr> {
            let found = split_pod(reference)
                .and_then(|(ns, name)| pods.get(&(ns.to_owned(), name.to_owned())))
                .copied();
            if found.is_none() && !desired.unresolved.iter().any(|u| u == reference) {
                desired.unresolved.push(reference.to_owned());
            }
            found
        };
        let mut services = Vec::new();
        let mut dns_services = Vec::new();
        for s in &self.services {
            let backends: Vec<Ipv4Addr> = s
                .backends
                .iter()
                .filter_map(|b| match b {
                    BackendRef::Pod { pod } => lookup(pod),
                    BackendRef::Ip { ip } => Some(*ip),
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut record =
                dns::Service::cluster_ip(&s.namespace, &s.name, vec![s.cluster_ip.into()]);
            for p in &s.ports {
                let key = ServiceKey {
                    vip: s.cluster_ip,
                    port: p.port,
                    protocol: p.protocol.dataplane(),
                };
                let target = p.target_port.unwrap_or(p.port);
                let mut service = Service::new(
                    key,
                    backends.iter().map(|ip| SocketAddrV4::new(*ip, target)),
                );
                service.client_ip_affinity = s.client_ip_affinity;
                services.push(service);
                record = record.with_port(p.name.as_deref(), p.protocol.dns(), p.port);
            }
            dns_services.push(record);
        }
        let mut policies = BTreeMap::new();
        for p in &self.policies {
            let Some(addr) = lookup(&p.pod) else {
                continue;
            };
            let mut rules_of = |rules: &Option<Vec<RuleSpec>>| -> Option<Vec<Rule>> {
                rules
                    .as_ref()
                    .map(|rules| rules.iter().filter_map(|r| rule(r, &mut lookup)).collect())
            };
            let policy = EndpointPolicy {
                ingress: rules_of(&p.ingress),
                egress: rules_of(&p.egress),
            };
            policies.insert(addr, policy);
        }
        desired.services = services;
        desired.dns_services = dns_services;
        desired.policies = policies;
        desired
    }
}

/// One rule; `None` when it names peers and none of them resolves (it then allows nothing).
fn rule(spec: &RuleSpec, lookup: &mut impl FnMut(&str) -> Option<Ipv4Addr>) -> Option<Rule> {
    let mut peers = Vec::new();
    for peer in &spec.peers {
        match peer {
            PeerSpec::Pod { pod } => {
                if let Some(ip) = lookup(pod) {
                    peers.push(Peer::host(ip));
                }
            }
            PeerSpec::Cidr { cidr: c, except } => {
                // Validated when the file was read.
                let Ok(block) = cidr(c) else { continue };
                let mut p = Peer::cidr(block);
                for e in except {
                    if let Ok(e) = cidr(e) {
                        p = p.except(e);
                    }
                }
                peers.push(p);
            }
        }
    }
    if !spec.peers.is_empty() && peers.is_empty() {
        return None;
    }
    let ports = spec.ports.iter().map(|p| match (p.port, p.end_port) {
        (Some(start), Some(end)) => PortMatch::range(p.protocol.dataplane(), start..=end),
        (Some(port), None) => PortMatch::port(p.protocol.dataplane(), port),
        (None, _) => PortMatch::any_port(p.protocol.dataplane()),
    });
    Some(Rule::new(peers, ports))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "services": [
        { "namespace": "shop", "name": "web", "cluster_ip": "198.19.0.10",
          "ports": [ { "name": "http", "protocol": "UDP", "port": 80, "target_port": 8080 },
                     { "protocol": "TCP", "port": 443 } ],
          "backends": [ { "pod": "shop/web-0" }, { "pod": "shop/web-1" }, { "ip": "198.18.1.7" } ] }
      ],
      "policies": [
        { "pod": "shop/web-0",
          "ingress": [ { "peers": [ { "pod": "prod/client" } ], "ports": [ { "protocol": "UDP", "port": 8080 } ] },
                       { "peers": [ { "pod": "prod/absent" } ] } ] },
        { "pod": "shop/web-1", "ingress": [] }
      ]
    }"#;

    fn pods() -> BTreeMap<(String, String), Ipv4Addr> {
        [
            (("shop", "web-0"), Ipv4Addr::new(198, 18, 0, 5)),
            (("shop", "web-1"), Ipv4Addr::new(198, 18, 0, 6)),
            (("prod", "client"), Ipv4Addr::new(198, 18, 0, 7)),
        ]
        .into_iter()
        .map(|((ns, n), ip)| ((ns.to_owned(), n.to_owned()), ip))
        .collect()
    }

    #[test]
    fn resolves_services_and_policies_against_local_pods() {
        let d = Catalog::from_json(SAMPLE).unwrap().resolve(&pods());
        assert_eq!(d.services.len(), 2);
        let udp = &d.services[0];
        assert_eq!(udp.key, ServiceKey::udp(Ipv4Addr::new(198, 19, 0, 10), 80));
        assert_eq!(
            udp.backends,
            vec![
                "198.18.0.5:8080".parse().unwrap(),
                "198.18.0.6:8080".parse().unwrap(),
                "198.18.1.7:8080".parse().unwrap()
            ]
        );
        assert_eq!(d.services[1].backends[0].port(), 443);
        assert_eq!(d.dns_services.len(), 1);
        assert_eq!(d.dns_services[0].ports.len(), 2);

        let web0 = &d.policies[&Ipv4Addr::new(198, 18, 0, 5)];
        let ingress = web0.ingress.as_ref().unwrap();
        assert_eq!(
            ingress.len(),
            1,
            "the rule naming only an absent pod allows nothing"
        );
        assert!(ingress[0].allows(Ipv4Addr::new(198, 18, 0, 7), 17, Some(8080)));
        assert!(!ingress[0].allows(Ipv4Addr::new(198, 18, 0, 7), 17, Some(8081)));
        assert!(web0.egress.is_none());
        assert_eq!(
            d.policies[&Ipv4Addr::new(198, 18, 0, 6)].ingress,
            Some(vec![]),
            "deny all"
        );
        assert_eq!(d.unresolved, vec!["prod/absent".to_owned()]);
    }

    #[test]
    fn absent_pods_drop_out() {
        let mut few = pods();
        few.remove(&("shop".to_owned(), "web-1".to_owned()));
        let d = Catalog::from_json(SAMPLE).unwrap().resolve(&few);
        assert_eq!(d.services[0].backends.len(), 2);
        assert_eq!(d.policies.len(), 1);
        assert!(d.unresolved.contains(&"shop/web-1".to_owned()));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |t: &str| Catalog::from_json(t).unwrap_err().to_string();
        assert!(
            err(r#"{"services":[{"namespace":"a","name":"b","cluster_ip":"1.2.3.4","ports":[]}]}"#)
                .contains("no ports")
        );
        assert!(err(r#"{"policies":[{"pod":"noslash"}]}"#).contains("namespace/name"));
        assert!(
            err(r#"{"policies":[{"pod":"a/b","ingress":[{"peers":[{"cidr":"10.0.0.0/99"}]}]}]}"#)
                .contains("CIDR")
        );
        assert!(err(r#"{"policies":[{"pod":"a/b","egress":[{"ports":[{"protocol":"TCP","port":9,"end_port":2}]}]}]}"#).contains("upside down"));
        assert!(err(r#"{"policies":[{"pod":"a/b"},{"pod":"a/b"}]}"#).contains("two policies"));
        assert!(err(r#"{"servics":[]}"#).contains("servics"));
        assert!(err(r#"{"services":[{"namespace":"a","name":"b","cluster_ip":"1.2.3.4","ports":[{"protocol":"UDP","port":1},{"protocol":"UDP","port":1}]}]}"#).contains("twice"));
    }
}
