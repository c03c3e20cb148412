//! A complete node-local DNS setup described by one file, for binaries such as `cnikit-dns`.
//!
//! ```
//! use cnikit_dns_autopath::config::NodeDnsConfig;
//!
//! let config = NodeDnsConfig::from_json(NodeDnsConfig::EXAMPLE).unwrap();
//! assert_eq!(config.server.listen.to_string(), "169.254.20.10:53");
//! ```

use std::{net::SocketAddr, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::{
    DnsServer, Error, ServerConfig,
    cluster::{ClusterTable, ClusterTableConfig, Pod, Service},
    pod_index::PodIndex,
    upstream::{Forwarder, ForwarderConfig},
};

/// Everything a node-local DNS server needs: server settings, upstreams, and static cluster
/// data (Services, pods). Pods listed here both get `<ip>.<ns>.pod.<zone>` records and feed the
/// AutoPath pod index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NodeDnsConfig {
    /// Listener, AutoPath and cache settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where other names go; omit to answer only the cluster zone.
    #[serde(default)]
    pub upstream: Option<ForwarderConfig>,
    /// How the cluster zone is presented.
    #[serde(default)]
    pub cluster: ClusterTableConfig,
    /// Services to publish.
    #[serde(default)]
    pub services: Vec<Service>,
    /// Pods (address -> namespace).
    #[serde(default)]
    pub pods: Vec<Pod>,
}

impl NodeDnsConfig {
    /// A working example: node-local address, AutoPath for `cluster.local` with ndots 5, the
    /// `NodeLocal DNSCache` cache defaults, one upstream, a Service and a pod.
    pub const EXAMPLE: &'static str = r#"{
  "server": {
    "listen": "169.254.20.10:53",
    "cluster_domain": "cluster.local",
    "autopath": { "extra_search": [], "ndots": 5 },
    "cache": {
      "capacity": 19968,
      "success_ttl_cap": 30,
      "denial_ttl_cap": 5,
      "servfail_ttl": 1,
      "prefetch": { "min_hits": 2, "remaining_percent": 10 },
      "serve_stale": 3600
    },
    "udp_workers": 0,
    "max_udp_payload": 1232,
    "tcp_idle_timeout": 10,
    "max_tcp_connections": 1024
  },
  "upstream": {
    "servers": ["10.96.0.10:53"],
    "attempt_timeout": 2,
    "total_timeout": 4,
    "edns_payload": 1232,
    "force_tcp": false,
    "tcp_fallback": true
  },
  "cluster": { "ttl": 5, "pod_records": "verified" },
  "services": [
    {
      "namespace": "default",
      "name": "kubernetes",
      "cluster_ips": ["10.96.0.1"],
      "ports": [{ "name": "https", "protocol": "TCP", "port": 443 }]
    }
  ],
  "pods": [{ "namespace": "default", "name": "client", "ip": "198.18.0.10" }]
}
"#;

    /// Parses JSON.
    ///
    /// # Errors
    /// [`Error::Config`] with the parser's message (line and column).
    pub fn from_json(text: &str) -> Result<Self, Error> {
        serde_json::from_str(text).map_err(|e| Error::Config(e.to_string()))
    }

    /// Overrides the listen address.
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.server.listen = addr;
        self
    }

    /// Builds the table and forwarder and starts the server; returns it with the table, which
    /// can be updated while serving.
    ///
    /// # Errors
    /// Invalid names in the data, an invalid forwarder configuration, or binding failures.
    pub async fn start(self) -> Result<(DnsServer, Arc<ClusterTable>), Error> {
        let table = Arc::new(ClusterTable::with_config(
            self.server.cluster_domain.clone(),
            self.cluster,
        )?);
        for service in self.services {
            table.upsert_service(&service)?;
        }
        for pod in &self.pods {
            table.upsert_pod(pod)?;
        }
        let mut builder = DnsServer::builder(self.server)
            .records(Arc::clone(&table) as Arc<dyn crate::ClusterRecords>)
            .pod_index(Arc::clone(&table) as Arc<dyn PodIndex>);
        if let Some(upstream) = self.upstream {
            builder = builder.upstream(Arc::new(Forwarder::new(upstream)?));
        }
        Ok((builder.bind().await?, table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_and_round_trips() {
        let config = NodeDnsConfig::from_json(NodeDnsConfig::EXAMPLE).unwrap();
        assert_eq!(config.services.len(), 1);
        assert_eq!(config.pods.len(), 1);
        assert_eq!(
            config.server.cache.serve_stale,
            Some(std::time::Duration::from_secs(3600))
        );
        let text = serde_json::to_string(&config).unwrap();
        assert_eq!(NodeDnsConfig::from_json(&text).unwrap(), config);
    }

    #[test]
    fn defaults_fill_an_empty_file_and_typos_are_errors() {
        let config = NodeDnsConfig::from_json("{}").unwrap();
        assert_eq!(config.server, ServerConfig::default());
        assert!(config.upstream.is_none());
        let err = NodeDnsConfig::from_json(r#"{"server": {"lisen": "1.2.3.4:53"}}"#).unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err =
            NodeDnsConfig::from_json(r#"{"server": {"cluster_domain": "a..b"}}"#).unwrap_err();
        assert!(matches!(err, Error::Config(_)));
    }
}
