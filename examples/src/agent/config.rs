//! The agent's configuration file (JSON), with documented defaults and validation.
//!
//! ```json
//! {
//!   "socket": "/run/cnikit/agent.sock",
//!   "state_dir": "/var/lib/cnikit",
//!   "cloud": {
//!     "credentials": { "source": "ram_role" }
//!   },
//!   "pool": {
//!     "security_groups": ["sg-0123"],
//!     "shared": { "min_idle": 4, "max_idle": 16, "warm_up": 8 }
//!   },
//!   "node": {
//!     "datapath": "ipvlan",
//!     "service_cidrs": ["192.168.0.0/16"],
//!     "host_stack_cidrs": ["169.254.20.10/32"],
//!     "eni_links": { "kind": "mac", "wait": "30s" }
//!   },
//!   "dataplane": { "pin_dir": "/sys/fs/bpf/cnikit" },
//!   "catalog": { "path": "/etc/cnikit/catalog.json" },
//!   "dns": { "server": { "listen": "169.254.20.10:53" },
//!            "upstream": { "servers": ["192.168.0.10:53"] } }
//! }
//! ```
//!
//! `pool` is `cnikit_eni_pool::PoolConfig`; its `instance_id`, `instance_type` and `vswitches`
//! may be left out, and are then read from the instance metadata service. `dns` is
//! `cnikit_dns_autopath::config::NodeDnsConfig`.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Duration,
};

use cnikit_dns_autopath::config::NodeDnsConfig;
use cnikit_eni_pool::PoolConfig;
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::protocol::{DEFAULT_SOCKET, Datapath};

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The unix socket the plugin talks to (mode 0600). Default `/run/cnikit/agent.sock`.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Where the pool's records (`pool/`) and the endpoint records (`endpoints/`) live.
    /// Default `/var/lib/cnikit`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The cloud.
    #[serde(default)]
    pub cloud: CloudConfig,
    /// The warm pool (see `cnikit_eni_pool::PoolConfig`; node fields from metadata when empty).
    #[serde(default)]
    pub pool: PoolConfig,
    /// Pod wiring facts.
    #[serde(default)]
    pub node: NodeConfig,
    /// The eBPF dataplane.
    #[serde(default)]
    pub dataplane: DataplaneConfig,
    /// The file of Services and network policies to program (optional).
    #[serde(default)]
    pub catalog: Option<CatalogConfig>,
    /// The node-local DNS server with AutoPath (optional).
    #[serde(default)]
    pub dns: Option<NodeDnsConfig>,
    /// How long one plugin request may take to arrive. Default 5 s.
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    /// The Prometheus metrics listener (optional).
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// On SIGTERM, how long requests in flight may still run. Default 10 s.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/cnikit")
}
const fn default_read_timeout() -> Duration {
    Duration::from_secs(5)
}
const fn default_grace() -> Duration {
    Duration::from_secs(10)
}

/// Which cloud the pool talks to. One variant per provider: adding one (e.g. AWS EC2) is one
/// variant here and one match arm in [`crate::agent::cloud`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CloudConfig {
    /// The ECS simulator embedded in the agent process (demos, tests, trying cnikit without a
    /// cloud account). Its region lives in the agent's memory: an agent restarted on it starts
    /// a fresh region and forgets the pool's records of the previous one.
    Simulator(SimulatorConfig),
    /// Alibaba Cloud ECS (or anything speaking its RPC API, such as the `ecs-sim` binary).
    Alibaba(AlibabaConfig),
    /// AWS EC2 (or anything speaking its Query API, such as `moto_server`):
    /// `cnikit_cloud_api::ec2::Ec2ProviderConfig` (endpoint, region, credentials, and the
    /// node's `instance_id` / `instance_type`; what is left out is read from `IMDSv2`; the
    /// subnets are `pool.vswitches`, else the primary ENI's subnet from `IMDSv2`). On AWS the
    /// agent applies the AWS VPC CNI's rules to the pool whatever `pool` says: an ENI's
    /// primary address is never a pod's (`hand_out_eni_primary_ip = false`) and a subnet's
    /// gateway is its first address (`gateway = "first"`). This variant is read, never
    /// written: serializing it is an error (the provider's configuration holds secrets).
    #[serde(skip_serializing)]
    Aws(cnikit_cloud_api::ec2::Ec2ProviderConfig),
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self::Simulator(SimulatorConfig::default())
    }
}

/// The embedded simulator.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SimulatorConfig {
    /// The simulated region (`cnikit_cloud_api::sim::SimConfig`: vSwitches, instance types,
    /// latencies, faults); default: its defaults (one instance `i-sim0000000000000001`,
    /// `ecs.g7.xlarge`, vSwitch `198.18.0.0/24`).
    #[serde(default)]
    pub region: Option<Box<cnikit_cloud_api::sim::SimConfig>>,
    /// The instance this node is; default: the region's first.
    #[serde(default)]
    pub instance_id: Option<String>,
}

/// Where Alibaba Cloud is and how to sign requests.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AlibabaConfig {
    /// The region; default: the metadata service's.
    #[serde(default)]
    pub region: Option<String>,
    /// A custom ECS/VPC endpoint URL (e.g. the `ecs-sim` simulator's `http://127.0.0.1:8080/`);
    /// default: the region's VPC endpoints.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The metadata service's base URL. Default `http://100.100.100.200`.
    #[serde(default)]
    pub metadata_url: Option<String>,
    /// Credentials.
    #[serde(default)]
    pub credentials: CredentialsConfig,
}

/// Where credentials come from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum CredentialsConfig {
    /// The environment if set, else the instance's RAM role (default).
    #[default]
    Default,
    /// `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET`,
    /// `ALIBABA_CLOUD_SECURITY_TOKEN`.
    Env,
    /// The instance's RAM role from the metadata service (refreshed before expiry).
    RamRole {
        /// The role; default: discovered.
        #[serde(default)]
        role: Option<String>,
    },
    /// Keys in this file (prefer a RAM role in production).
    Static {
        /// Access key id.
        access_key_id: String,
        /// Access key secret.
        access_key_secret: String,
    },
}

/// How pods are wired on this node.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NodeConfig {
    /// The wiring mode for shared-ENI pods: `ipvlan` (falls back to `veth` where the kernel has
    /// no ipvlan, found by probing at start), `veth` or `exclusive-eni`. Default `ipvlan`.
    #[serde(default = "default_datapath")]
    pub datapath: Datapath,
    /// Pod interface MTU; default: the ENI's.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Service CIDRs (routed to the node's stack from IPVLAN and exclusive-ENI pods).
    #[serde(default)]
    pub service_cidrs: Vec<IpNetwork>,
    /// Other CIDRs the node serves to pods (node-local DNS: `169.254.20.10/32`).
    #[serde(default)]
    pub host_stack_cidrs: Vec<IpNetwork>,
    /// The node's own addresses (needed by IPVLAN for Service traffic; they pass ingress
    /// policies).
    #[serde(default)]
    pub node_ips: Vec<IpAddr>,
    /// How an ENI's interface is found on the node.
    #[serde(default)]
    pub eni_links: EniLinksConfig,
    /// Set `forwarding=1` and `rp_filter=0` in the node namespace at start, as Terway does.
    /// Default `true`.
    #[serde(default = "yes")]
    pub manage_sysctls: bool,
}

const fn default_datapath() -> Datapath {
    Datapath::Ipvlan
}
const fn yes() -> bool {
    true
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            datapath: default_datapath(),
            mtu: None,
            service_cidrs: Vec::new(),
            host_stack_cidrs: Vec::new(),
            node_ips: Vec::new(),
            eni_links: EniLinksConfig::default(),
            manage_sysctls: true,
        }
    }
}

/// How the node-side interface of an attached ENI is found.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum EniLinksConfig {
    /// By MAC among the node's links, waiting up to `wait` for a freshly attached ENI to
    /// appear (real clouds). Default, with 30 s.
    Mac {
        /// How long to wait.
        #[serde(default = "default_link_wait", with = "humantime_serde")]
        wait: Duration,
    },
    /// Simulated VPC for demos and tests: each ENI becomes a veth whose node end carries the
    /// ENI's MAC and whose other end lives in `vpc_netns` with the vSwitch gateway address;
    /// the VPC side routes each allocated address to its ENI.
    SimVpc {
        /// The namespace standing in for the VPC (e.g. `/run/netns/vpc`).
        vpc_netns: PathBuf,
    },
}

const fn default_link_wait() -> Duration {
    Duration::from_secs(30)
}

impl Default for EniLinksConfig {
    fn default() -> Self {
        Self::Mac {
            wait: default_link_wait(),
        }
    }
}

/// eBPF tc attachment mode of the programs on each pod's host veth.
///
/// The default is `clsact`: every pod brings a fresh veth, and the first TCX program on a
/// device waits for RCU grace periods in the kernel, about 15 ms per program on the test
/// machine (Linux 6.18), 30 ms per `ADD`; a clsact filter takes about 0.3 ms. Both behave alike
/// for the programs (they return `TC_ACT_UNSPEC` to let later programs run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachConfig {
    /// TCX on Linux >= 6.6, else clsact.
    Auto,
    /// TCX only.
    Tcx,
    /// clsact only (default).
    #[default]
    Clsact,
}

/// The eBPF dataplane.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DataplaneConfig {
    /// Load and attach it. Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A bpffs directory to pin maps and links in, so that Services and policies survive an
    /// agent restart. Default: none (everything is detached when the agent stops).
    #[serde(default)]
    pub pin_dir: Option<PathBuf>,
    /// TCX or clsact. Default `clsact` (see [`AttachConfig`]).
    #[serde(default)]
    pub attach: AttachConfig,
    /// Map sizes; default: the dataplane's.
    #[serde(default)]
    pub capacity: Option<CapacityConfig>,
    /// Addresses whose traffic passes ingress policies (the node's own); default:
    /// `node.node_ips`.
    #[serde(default)]
    pub node_addresses: Option<Vec<Ipv4Addr>>,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            pin_dir: None,
            attach: AttachConfig::Clsact,
            capacity: None,
            node_addresses: None,
        }
    }
}

/// The dataplane's map sizes (see `cnikit_ebpf_dataplane::Capacity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(
    missing_docs,
    reason = "the fields mirror cnikit_ebpf_dataplane::Capacity"
)]
pub struct CapacityConfig {
    pub services: u32,
    pub endpoints: u32,
    pub conntrack: u32,
    pub affinity: u32,
    pub policy_peer_prefixes: u32,
    pub policy_port_prefixes: u32,
}

impl From<CapacityConfig> for cnikit_ebpf_dataplane::Capacity {
    fn from(c: CapacityConfig) -> Self {
        Self {
            services: c.services,
            endpoints: c.endpoints,
            conntrack: c.conntrack,
            affinity: c.affinity,
            policy_peer_prefixes: c.policy_peer_prefixes,
            policy_port_prefixes: c.policy_port_prefixes,
        }
    }
}

/// The catalog file of Services and network policies.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CatalogConfig {
    /// The file (see [`crate::agent::catalog`]).
    pub path: PathBuf,
    /// How often its modification time is checked. Default 2 s.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
}

const fn default_poll() -> Duration {
    Duration::from_secs(2)
}

/// The Prometheus text-format listener (`GET /metrics`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Address and port, e.g. `127.0.0.1:9464`.
    pub listen: std::net::SocketAddr,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("agent configuration: {0}")]
pub struct ConfigError(pub String);

impl AgentConfig {
    /// Parses JSON and checks what can be checked before touching anything.
    ///
    /// # Errors
    /// [`ConfigError`] naming the problem (serde's message carries line and column).
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_json::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if self.socket.as_os_str().is_empty() || self.socket.is_relative() {
            return bad(format!(
                "socket {} must be an absolute path",
                self.socket.display()
            ));
        }
        if self.state_dir.is_relative() {
            return bad(format!(
                "state_dir {} must be an absolute path",
                self.state_dir.display()
            ));
        }
        let real_cloud = matches!(self.cloud, CloudConfig::Alibaba(_) | CloudConfig::Aws(_));
        if self.pool.security_groups.is_empty() && real_cloud {
            return bad("pool.security_groups must name at least one security group".into());
        }
        if let CloudConfig::Aws(aws) = &self.cloud {
            validate_aws(aws)?;
        }
        if let Some(mtu) = self.node.mtu
            && !(576..=65535).contains(&mtu)
        {
            return bad(format!("node.mtu {mtu} is out of range (576 to 65535)"));
        }
        let cidrs = self
            .node
            .service_cidrs
            .iter()
            .chain(&self.node.host_stack_cidrs);
        for cidr in cidrs {
            if cidr.is_ipv6() {
                return bad(format!(
                    "{cidr}: only IPv4 CIDRs are supported by the agent"
                ));
            }
        }
        if self.read_timeout.is_zero() || self.read_timeout > Duration::from_secs(300) {
            return bad("read_timeout must be between 1 ms and 5 min".into());
        }
        if let Some(catalog) = &self.catalog
            && catalog.poll_interval < Duration::from_millis(100)
        {
            return bad("catalog.poll_interval must be at least 100 ms".into());
        }
        if let EniLinksConfig::SimVpc { vpc_netns } = &self.node.eni_links
            && vpc_netns.is_relative()
        {
            return bad("node.eni_links.vpc_netns must be an absolute path".into());
        }
        Ok(())
    }

    /// The default configuration (`cnikit-agent --print-default-config`): the embedded
    /// simulator, its ENIs played by veths into the namespace `cnikit-vpc` (created when
    /// missing), ipvlan where the kernel has it and veth elsewhere, the eBPF dataplane,
    /// node-local DNS with AutoPath on `169.254.20.10:53`, metrics on `127.0.0.1:9464`.
    pub const DEFAULT: &'static str = r#"{
  "socket": "/run/cnikit/agent.sock",
  "state_dir": "/var/lib/cnikit",
  "cloud": { "provider": "simulator" },
  "pool": {
    "shared": { "min_idle": 4, "max_idle": 16, "warm_up": 8 },
    "cooldown": "5s",
    "attach_poll_initial": "100ms"
  },
  "node": {
    "datapath": "ipvlan",
    "service_cidrs": ["198.19.0.0/16"],
    "host_stack_cidrs": ["169.254.20.10/32"],
    "eni_links": { "kind": "sim_vpc", "vpc_netns": "/run/netns/cnikit-vpc" }
  },
  "dataplane": { "enabled": true },
  "metrics": { "listen": "127.0.0.1:9464" },
  "dns": { "server": { "listen": "169.254.20.10:53" } }
}
"#;

    /// An example for a real AWS EC2 node (instance facts and subnet from `IMDSv2`,
    /// credentials from the instance profile, ENIs found by MAC).
    pub const EXAMPLE_AWS: &'static str = r#"{
  "socket": "/run/cnikit/agent.sock",
  "state_dir": "/var/lib/cnikit",
  "cloud": { "provider": "aws", "credentials": { "source": "instance_profile" } },
  "pool": {
    "security_groups": ["sg-0123456789abcdef0"],
    "shared": { "min_idle": 4, "max_idle": 16, "warm_up": 8 }
  },
  "node": {
    "datapath": "ipvlan",
    "service_cidrs": ["10.100.0.0/16"],
    "host_stack_cidrs": ["169.254.20.10/32"],
    "eni_links": { "kind": "mac", "wait": "30s" }
  },
  "dataplane": { "enabled": true, "pin_dir": "/sys/fs/bpf/cnikit" },
  "catalog": { "path": "/etc/cnikit/catalog.json", "poll_interval": "2s" },
  "metrics": { "listen": "127.0.0.1:9464" },
  "dns": { "server": { "listen": "169.254.20.10:53" },
           "upstream": { "servers": ["169.254.169.253:53"] } }
}
"#;

    /// An example for a real Alibaba Cloud node (instance facts from the metadata service,
    /// credentials from the instance's RAM role).
    pub const EXAMPLE_ALIBABA: &'static str = r#"{
  "socket": "/run/cnikit/agent.sock",
  "state_dir": "/var/lib/cnikit",
  "cloud": { "provider": "alibaba", "credentials": { "source": "ram_role" } },
  "pool": {
    "security_groups": ["sg-0123456789abcdef0"],
    "shared": { "min_idle": 4, "max_idle": 16, "warm_up": 8 }
  },
  "node": {
    "datapath": "ipvlan",
    "service_cidrs": ["192.168.0.0/16"],
    "host_stack_cidrs": ["169.254.20.10/32"],
    "eni_links": { "kind": "mac", "wait": "30s" }
  },
  "dataplane": { "enabled": true, "pin_dir": "/sys/fs/bpf/cnikit" },
  "catalog": { "path": "/etc/cnikit/catalog.json", "poll_interval": "2s" },
  "metrics": { "listen": "127.0.0.1:9464" },
  "dns": { "server": { "listen": "169.254.20.10:53" },
           "upstream": { "servers": ["100.100.2.136:53"] } }
}
"#;
}

/// Checks the `cloud` table of provider `aws`: URLs that are URLs, ids that look like EC2's.
fn validate_aws(aws: &cnikit_cloud_api::ec2::Ec2ProviderConfig) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError(m));
    for (field, url) in [
        ("cloud.endpoint", &aws.endpoint),
        ("cloud.imds_endpoint", &aws.imds_endpoint),
    ] {
        if let Some(url) = url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return bad(format!(
                "{field} {url:?} must be an http:// or https:// URL"
            ));
        }
    }
    let blank = |s: &Option<String>| s.as_ref().is_some_and(|s| s.trim().is_empty());
    for (field, value) in [
        ("cloud.region", &aws.region),
        ("cloud.instance_type", &aws.instance_type),
    ] {
        if blank(value) {
            return bad(format!(
                "{field} must not be empty (leave it out to read IMDSv2)"
            ));
        }
    }
    if let Some(id) = &aws.instance_id
        && !id.starts_with("i-")
    {
        return bad(format!(
            "cloud.instance_id {id:?} is not an EC2 instance id (i-...)"
        ));
    }
    if aws.nodes_sharing_limits == Some(0) {
        return bad("cloud.nodes_sharing_limits must be at least 1".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_with_defaults() {
        let c = AgentConfig::from_json(AgentConfig::DEFAULT).unwrap();
        assert_eq!(c.node.datapath, Datapath::Ipvlan);
        assert!(c.node.manage_sysctls);
        assert!(c.dataplane.enabled);
        assert_eq!(c.pool.shared.warm_up, 8);
        assert_eq!(c.pool.attach_poll_initial, Duration::from_millis(100));
        assert!(matches!(c.cloud, CloudConfig::Simulator(_)));
        assert!(matches!(c.node.eni_links, EniLinksConfig::SimVpc { .. }));
        assert_eq!(c.read_timeout, Duration::from_secs(5));
        assert!(c.dns.is_some());
        assert!(c.metrics.is_some());
        let c = AgentConfig::from_json(AgentConfig::EXAMPLE_ALIBABA).unwrap();
        let CloudConfig::Alibaba(a) = &c.cloud else {
            panic!("alibaba expected")
        };
        assert!(matches!(
            a.credentials,
            CredentialsConfig::RamRole { role: None }
        ));
    }

    #[test]
    fn aws_parses_and_is_checked() {
        let c = AgentConfig::from_json(AgentConfig::EXAMPLE_AWS).unwrap();
        let CloudConfig::Aws(aws) = &c.cloud else {
            panic!("aws expected")
        };
        assert!(matches!(
            aws.credentials,
            cnikit_cloud_api::ec2::Ec2CredentialsSource::InstanceProfile { role: None }
        ));
        assert_eq!(aws.instance_id, None);
        let moto = r#"{"cloud":{"provider":"aws","endpoint":"http://127.0.0.1:5055/",
            "region":"us-east-1","instance_id":"i-0123","instance_type":"m5.large",
            "credentials":{"source":"static","access_key_id":"testing",
            "secret_access_key":"testing"}},
            "pool":{"security_groups":["sg-1"],"vswitches":["subnet-1"]}}"#;
        let c = AgentConfig::from_json(moto).unwrap();
        let CloudConfig::Aws(aws) = &c.cloud else {
            panic!("aws expected")
        };
        assert_eq!(aws.instance_type.as_deref(), Some("m5.large"));
        // The secret is never printed, and the variant is never written back.
        assert!(format!("{c:?}").contains("secret_access_key: ***"), "{c:?}");
        assert!(serde_json::to_string(&c.cloud).is_err());

        let err = |text: &str| AgentConfig::from_json(text).unwrap_err().to_string();
        let with = |cloud: &str| {
            format!(
                r#"{{"cloud":{{"provider":"aws",{cloud}}},"pool":{{"security_groups":["sg"]}}}}"#
            )
        };
        assert!(err(r#"{"cloud":{"provider":"aws"}}"#).contains("pool.security_groups"));
        assert!(err(&with(r#""regoin":"us-east-1""#)).contains("regoin"));
        assert!(err(&with(r#""endpoint":"127.0.0.1:5055""#)).contains("cloud.endpoint"));
        assert!(err(&with(r#""imds_endpoint":"x""#)).contains("cloud.imds_endpoint"));
        assert!(err(&with(r#""region":" ""#)).contains("cloud.region"));
        assert!(err(&with(r#""instance_type":"""#)).contains("cloud.instance_type"));
        assert!(err(&with(r#""instance_id":"vm-1""#)).contains("cloud.instance_id"));
        assert!(err(&with(r#""nodes_sharing_limits":0"#)).contains("nodes_sharing_limits"));
        assert!(
            err(&with(
                r#""credentials":{"source":"static","access_key_id":"a"}"#
            ))
            .contains("secret_access_key")
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| AgentConfig::from_json(text).unwrap_err().to_string();
        assert!(err(r#"{"pool":{"security_groups":["sg"]},"sockett":"/x"}"#).contains("sockett"));
        assert!(err(r#"{"cloud":{"provider":"alibaba"}}"#).contains("security_groups"));
        assert!(err(r#"{"cloud":{"provider":"gcp"}}"#).contains("gcp"));
        assert!(
            err(r#"{"pool":{"security_groups":["sg"]},"socket":"rel.sock"}"#).contains("absolute")
        );
        assert!(
            err(r#"{"pool":{"security_groups":["sg"]},"node":{"service_cidrs":["fd00::/64"]}}"#)
                .contains("IPv4")
        );
        assert!(
            err(r#"{"cloud":{"provider":"alibaba","credentials":{"source":"magic"}}}"#)
                .contains("magic")
        );
        assert!(
            err(r#"{"pool":{"security_groups":["sg"]},"node":{"datapath":"bridge"}}"#)
                .contains("bridge")
        );
    }
}
