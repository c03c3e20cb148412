//! The `ADD` result (`interfaces`, `ips`, `routes`, `dns`), read from any supported version's
//! `prevResult` and written in the version the runtime asked for.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    error::{CniError, ErrorCode},
    version::Version,
};

/// An interface the plugin created or configured.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Interface {
    /// The interface name.
    pub name: String,
    /// Its hardware address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Its MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The namespace path it lives in; absent for interfaces on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// A vhost-user or similar socket (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// A PCI device (1.1.0).
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

impl Interface {
    /// An interface named `name`.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

/// An address given to an interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct IpConfig {
    /// Address with prefix length.
    pub address: IpNetwork,
    /// The default gateway for this address, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route inside the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Route {
    /// Destination.
    pub dst: IpNetwork,
    /// Next hop (default: the address's gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Metric (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Table (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Scope (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

impl Route {
    /// `dst via gw`.
    #[must_use]
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Self {
        Self {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

/// DNS settings for the container's resolver.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Dns {
    /// Name servers, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options (`ndots:5`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// Whether nothing is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }

    /// The settings as a `resolv.conf`.
    #[must_use]
    pub fn resolv_conf(&self) -> String {
        let mut out = String::new();
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if let Some(domain) = &self.domain {
            out.push_str(&format!("domain {domain}\n"));
        }
        if !self.search.is_empty() {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// The result of `ADD` (and the `prevResult` of later operations).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CniResult {
    /// Interfaces created or configured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// Reads a `prevResult` of any supported version (0.3.x/0.4.0 carry a `version` per
    /// address, which is ignored).
    ///
    /// # Errors
    /// Code 6 (decode failure) when it does not have the result's shape.
    pub fn from_value(value: &Value) -> Result<Self, CniError> {
        serde_json::from_value(value.clone()).map_err(|e| {
            CniError::new(ErrorCode::DECODE_FAILURE, "prevResult is not a CNI result")
                .with_details(e.to_string())
        })
    }

    /// The result JSON in `version`'s format: before 1.0.0 every address carries
    /// `version: "4" | "6"`; before 1.1.0 the route fields `mtu`, `advmss`, `priority`,
    /// `table`, `scope` and the interface fields `mtu`, `socketPath`, `pciID` do not exist.
    #[must_use]
    pub fn to_json(&self, version: Version) -> Value {
        let mut result = self.clone();
        if version < Version::V1_1_0 {
            for i in &mut result.interfaces {
                i.mtu = None;
                i.socket_path = None;
                i.pci_id = None;
            }
            for r in &mut result.routes {
                *r = Route::new(r.dst, r.gw);
            }
        }
        let mut value = serde_json::to_value(&result).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.insert("cniVersion".into(), Value::String(version.to_string()));
            if version < Version::V1_0_0
                && let Some(Value::Array(ips)) = map.get_mut("ips")
            {
                for (ip, config) in ips.iter_mut().zip(&self.ips) {
                    if let Value::Object(ip) = ip {
                        let family = if config.address.is_ipv4() { "4" } else { "6" };
                        ip.insert("version".into(), Value::String(family.into()));
                    }
                }
            }
        }
        value
    }

    /// The first address of `interface` (an index into `interfaces`) of the given family.
    #[must_use]
    pub fn address_of(&self, interface: usize, ipv4: bool) -> Option<IpNetwork> {
        self.ips
            .iter()
            .find(|c| c.interface == Some(interface) && c.address.is_ipv4() == ipv4)
            .map(|c| c.address)
    }

    /// The index of the interface named `name` inside a sandbox.
    #[must_use]
    pub fn sandbox_interface(&self, name: &str) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.name == name && i.sandbox.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        let mut host = Interface::new("cnk0123456789a");
        host.mac = Some("ee:cb:00:00:00:01".into());
        let mut pod = Interface::new("eth0");
        pod.mac = Some("02:11:22:33:44:55".into());
        pod.sandbox = Some("/run/netns/x".into());
        pod.mtu = Some(1500);
        let mut route = Route::new("0.0.0.0/0".parse().unwrap(), None);
        route.table = Some(1001);
        CniResult {
            interfaces: vec![host, pod],
            ips: vec![IpConfig {
                address: "198.18.0.5/32".parse().unwrap(),
                gateway: Some("169.254.1.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![route],
            dns: Dns {
                nameservers: vec!["169.254.20.10".into()],
                search: vec!["prod.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
                ..Dns::default()
            },
        }
    }

    #[test]
    fn versions_shape_the_json() {
        let r = sample();
        let v11 = r.to_json(Version::V1_1_0);
        assert_eq!(v11["cniVersion"], "1.1.0");
        assert_eq!(v11["interfaces"][1]["mtu"], 1500);
        assert_eq!(v11["routes"][0]["table"], 1001);
        assert!(v11["ips"][0].get("version").is_none());

        let v10 = r.to_json(Version::V1_0_0);
        assert!(v10["interfaces"][1].get("mtu").is_none());
        assert!(v10["routes"][0].get("table").is_none());

        let v04 = r.to_json(Version::V0_4_0);
        assert_eq!(v04["ips"][0]["version"], "4");
        assert_eq!(v04["ips"][0]["address"], "198.18.0.5/32");

        // Any of them reads back (as a prevResult would be).
        for v in [v11, v10, v04] {
            let back = CniResult::from_value(&v).unwrap();
            assert_eq!(back.ips, r.ips);
            assert_eq!(back.sandbox_interface("eth0"), Some(1));
            assert_eq!(
                back.address_of(1, true),
                Some("198.18.0.5/32".parse().unwrap())
            );
        }
        assert_eq!(
            CniResult::from_value(&serde_json::json!({"ips": "nope"}))
                .unwrap_err()
                .code,
            ErrorCode::DECODE_FAILURE
        );
    }

    #[test]
    fn resolv_conf_from_dns() {
        assert_eq!(
            sample().dns.resolv_conf(),
            "nameserver 169.254.20.10\nsearch prod.svc.cluster.local\noptions ndots:5\n"
        );
    }
}
