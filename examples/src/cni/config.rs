//! The network configuration on stdin: the runtime's fields (`cniVersion`, `name`, `type`,
//! `runtimeConfig`, `prevResult`, GC's valid attachments) and this plugin's own.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    error::{CniError, ErrorCode},
    result::CniResult,
    version::Version,
};

/// How the plugin wires a pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginMode {
    /// What the agent says (its configured mode after its capability probe).
    #[default]
    Auto,
    /// veth pair + policy routing through a shared ENI.
    Veth,
    /// An ipvlan L2 sub-interface of a shared ENI (falls back to veth where the kernel has no
    /// ipvlan).
    Ipvlan,
    /// A whole ENI moved into the pod (`exclusive` or `exclusive-eni`).
    #[serde(alias = "exclusive")]
    ExclusiveEni,
}

/// Who wires the pod's namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Wiring {
    /// The agent, in one call per command (`add`, `delete`): the fastest.
    #[default]
    Agent,
    /// The plugin, between the agent's `allocate` and `wired` (the agent then needs no
    /// netlink access to pod namespaces).
    Plugin,
}

/// One entry of GC's valid-attachments list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcAttachment {
    /// `CNI_CONTAINERID` of the attachment.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME` of the attachment.
    pub ifname: String,
}

/// The plugin's network configuration, as the runtime hands it over.
///
/// Unknown keys are accepted (runtimes add their own, e.g. `args`, `capabilities`) and
/// logged; `ipam` is refused with code 2, since this plugin is its own IPAM.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct NetConf {
    /// `cniVersion` (required).
    pub cni_version: String,
    /// The network's name (required except for `VERSION`).
    #[serde(default)]
    pub name: Option<String>,
    /// `type`, normally `cnikit`.
    #[serde(default, rename = "type")]
    pub plugin_type: Option<String>,
    /// The agent's socket. Default `/run/cnikit/agent.sock`.
    #[serde(default = "default_socket")]
    pub agent_socket: PathBuf,
    /// Wiring mode. Default `auto` (the agent's choice).
    #[serde(default)]
    pub mode: PluginMode,
    /// Who wires the pod's namespace. Default `agent`.
    #[serde(default)]
    pub wiring: Wiring,
    /// How long `ADD` waits for an address when the pool is empty. Default 60 s. Other agent
    /// calls wait at most 10 s.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// MTU of the pod interface. Default: the agent's, else the ENI's.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// `tracing` filter for the plugin's log (`warn` by default).
    #[serde(default)]
    pub log_level: Option<String>,
    /// Where the plugin appends its log; default: standard error (the runtime usually
    /// discards it).
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// Capability arguments the runtime passes (`runtimeConfig`); none are used yet.
    #[serde(default)]
    pub runtime_config: Option<Value>,
    /// The previous result (`CHECK`, `DEL`, chained `ADD`).
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// GC's list of attachments that must be kept.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<GcAttachment>>,
    /// The same list under its `spec-v1.1.0` name.
    #[serde(default, rename = "cni.dev/attachments")]
    pub attachments: Option<Vec<GcAttachment>>,
    /// Everything else.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

fn default_socket() -> PathBuf {
    PathBuf::from(crate::protocol::DEFAULT_SOCKET)
}

const fn default_timeout() -> u64 {
    60
}

impl NetConf {
    /// Parses the configuration and checks its version and fields.
    ///
    /// # Errors
    /// Code 6 for malformed JSON, 1 for a version this plugin does not speak, 2 for `ipam`,
    /// 7 for invalid values.
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let conf: Self = serde_json::from_slice(stdin).map_err(|e| {
            let code = if e.is_data() {
                ErrorCode::INVALID_CONFIG
            } else {
                ErrorCode::DECODE_FAILURE
            };
            CniError::new(code, "cannot read the network configuration").with_details(e.to_string())
        })?;
        let version = conf.version()?;
        if !version.is_supported() {
            return Err(CniError::new(
                ErrorCode::INCOMPATIBLE_VERSION,
                format!("CNI version {version} is not supported"),
            )
            .with_details(format!("supported: {}", supported_list())));
        }
        if let Some(ipam) = conf.other.get("ipam") {
            return Err(CniError::new(
                ErrorCode::UNSUPPORTED_FIELD,
                format!("unsupported field \"ipam\" = {ipam}"),
            )
            .with_details(
                "cnikit allocates addresses from its ENI pool; remove the ipam section",
            ));
        }
        if conf.timeout_seconds == 0 || conf.timeout_seconds > 600 {
            return Err(CniError::new(
                ErrorCode::INVALID_CONFIG,
                format!(
                    "timeoutSeconds = {} is out of range (1 to 600)",
                    conf.timeout_seconds
                ),
            ));
        }
        if let Some(mtu) = conf.mtu
            && !(68..=65535).contains(&mtu)
        {
            return Err(CniError::new(
                ErrorCode::INVALID_CONFIG,
                format!("mtu = {mtu} is out of range (68 to 65535)"),
            ));
        }
        Ok(conf)
    }

    /// The parsed `cniVersion`.
    ///
    /// # Errors
    /// Code 7 when it is not `major.minor.patch`.
    pub fn version(&self) -> Result<Version, CniError> {
        self.cni_version
            .parse()
            .map_err(|e: super::version::VersionParseError| {
                CniError::new(ErrorCode::INVALID_CONFIG, e.to_string())
            })
    }

    /// The network name, required by every command but `VERSION`.
    ///
    /// # Errors
    /// Code 7 when it is missing or empty.
    pub fn network(&self) -> Result<&str, CniError> {
        self.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| CniError::new(ErrorCode::INVALID_CONFIG, "the network has no name"))
    }

    /// The previous result, if one was given.
    ///
    /// # Errors
    /// Code 6 when it is not a result.
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        self.prev_result
            .as_ref()
            .filter(|v| !v.is_null())
            .map(CniResult::from_value)
            .transpose()
    }

    /// GC's valid attachments (either key), or `None` when neither is given.
    #[must_use]
    pub fn gc_attachments(&self) -> Option<Vec<GcAttachment>> {
        match (&self.valid_attachments, &self.attachments) {
            (None, None) => None,
            (a, b) => Some(
                a.iter()
                    .chain(b.iter())
                    .flatten()
                    .cloned()
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            ),
        }
    }

    /// How long `ADD` may wait for an address.
    #[must_use]
    pub fn add_timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds)
    }

    /// How long other agent calls may take.
    #[must_use]
    pub fn call_timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds.min(10))
    }
}

/// The supported versions, comma-separated.
#[must_use]
pub fn supported_list() -> String {
    Version::SUPPORTED
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runtime_and_plugin_fields() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"pods","type":"cnikit","mode":"exclusive-eni",
                 "agentSocket":"/tmp/a.sock","timeoutSeconds":5,"args":{"cni":{}},
                 "runtimeConfig":{"portMappings":[]},
                 "prevResult":{"cniVersion":"1.1.0","ips":[{"address":"198.18.0.5/32"}]},
                 "cni.dev/valid-attachments":[{"containerID":"b","ifname":"eth0"}],
                 "cni.dev/attachments":[{"containerID":"a","ifname":"eth0"},
                                        {"containerID":"b","ifname":"eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(conf.mode, PluginMode::ExclusiveEni);
        assert_eq!(conf.network().unwrap(), "pods");
        assert_eq!(conf.agent_socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(conf.prev_result().unwrap().unwrap().ips.len(), 1);
        let gc = conf.gc_attachments().unwrap();
        assert_eq!(gc.len(), 2, "merged and deduplicated: {gc:?}");
        assert!(conf.other.contains_key("args"));
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        let code = |json: &str| NetConf::parse(json.as_bytes()).unwrap_err().code;
        assert_eq!(code("{not json"), ErrorCode::DECODE_FAILURE);
        assert_eq!(code(r#"{"name":"x"}"#), ErrorCode::INVALID_CONFIG);
        assert_eq!(
            code(r#"{"cniVersion":"0.2.0","name":"x"}"#),
            ErrorCode::INCOMPATIBLE_VERSION
        );
        assert_eq!(
            code(r#"{"cniVersion":"one","name":"x"}"#),
            ErrorCode::INVALID_CONFIG
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"x","ipam":{"type":"host-local"}}"#),
            ErrorCode::UNSUPPORTED_FIELD
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"x","mode":"bridge"}"#),
            ErrorCode::INVALID_CONFIG
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"x","mtu":20}"#),
            ErrorCode::INVALID_CONFIG
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.0.0","name":"x","timeoutSeconds":0}"#),
            ErrorCode::INVALID_CONFIG
        );
        let no_name = NetConf::parse(br#"{"cniVersion":"1.0.0"}"#).unwrap();
        assert!(no_name.network().is_err());
        assert!(no_name.gc_attachments().is_none());
    }
}
