//! Who asks for a resource: the pod's identity, the kind of resource, and the request.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

/// The identity an allocation is keyed by: the pod (namespace, name), its sandbox (container id)
/// and the interface inside it, as the CNI spec advises keying IPAM state.
///
/// A retried ADD with the same key gets the same resource; a new sandbox of the same pod (a new
/// container id) is a new key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PodKey {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The sandbox (infra container) id.
    pub container_id: String,
    /// The interface name inside the pod, e.g. `eth0`.
    pub interface: String,
}

impl PodKey {
    /// A key for `namespace/name`, sandbox `container_id`, interface `interface`.
    #[must_use]
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        container_id: impl Into<String>,
        interface: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            container_id: container_id.into(),
            interface: interface.into(),
        }
    }

    /// Checks that no field is empty and none holds a control character.
    ///
    /// # Errors
    /// A description of the first bad field.
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("namespace", &self.namespace),
            ("name", &self.name),
            ("container id", &self.container_id),
            ("interface", &self.interface),
        ] {
            if value.is_empty() {
                return Err(format!("pod {self}: empty {field}"));
            }
            if value.chars().any(char::is_control) {
                return Err(format!("pod {self}: control character in {field}"));
            }
        }
        Ok(())
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self
            .container_id
            .get(..12)
            .unwrap_or(self.container_id.as_str());
        write!(
            f,
            "{}/{} ({short}, {})",
            self.namespace, self.name, self.interface
        )
    }
}

/// What kind of resource a pod gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResourceKind {
    /// A secondary IP on a shared ENI (IPVLAN and veth pods).
    SharedIp,
    /// A whole ENI (exclusive-ENI pods).
    ExclusiveEni,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SharedIp => "shared IP",
            Self::ExclusiveEni => "exclusive ENI",
        })
    }
}

/// An allocation request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AllocateRequest {
    /// Who asks.
    pub pod: PodKey,
    /// For what.
    pub kind: ResourceKind,
    /// How long to wait when the pool is empty; `None` = the configured default
    /// (`allocate_timeout`).
    pub timeout: Option<Duration>,
}

impl AllocateRequest {
    /// A shared IP for `pod`.
    #[must_use]
    pub fn shared_ip(pod: PodKey) -> Self {
        Self {
            pod,
            kind: ResourceKind::SharedIp,
            timeout: None,
        }
    }

    /// An exclusive ENI for `pod`.
    #[must_use]
    pub fn exclusive_eni(pod: PodKey) -> Self {
        Self {
            pod,
            kind: ResourceKind::ExclusiveEni,
            timeout: None,
        }
    }

    /// Waits at most `timeout` when the pool is empty.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shortens_container_id_and_validate_rejects_bad_fields() {
        let k = PodKey::new("default", "web-0", "0123456789abcdef0123", "eth0");
        assert_eq!(k.to_string(), "default/web-0 (0123456789ab, eth0)");
        assert!(k.validate().is_ok());
        let bad = PodKey::new("default", "", "c", "eth0");
        assert!(bad.validate().unwrap_err().contains("empty name"));
        let ctl = PodKey::new("default", "a\nb", "c", "eth0");
        assert!(ctl.validate().unwrap_err().contains("control character"));
        // Multi-byte container ids never split a character.
        let k = PodKey::new("n", "p", "ééééééééééé", "eth0");
        assert!(k.to_string().starts_with("n/p ("));
    }
}
