//! The CNI error result: `{cniVersion, code, msg, details}` with the spec's reserved codes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A CNI error code. Codes 0–99 are reserved by the specification; 100 and above belong to
/// the plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// 1: incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: Self = Self(1);
    /// 2: unsupported field in the network configuration (the message names key and value).
    pub const UNSUPPORTED_FIELD: Self = Self(2);
    /// 3: container unknown or does not exist (no cleanup needed).
    pub const UNKNOWN_CONTAINER: Self = Self(3);
    /// 4: invalid environment variables (the message names them).
    pub const INVALID_ENVIRONMENT: Self = Self(4);
    /// 5: I/O failure.
    pub const IO_FAILURE: Self = Self(5);
    /// 6: failed to decode content.
    pub const DECODE_FAILURE: Self = Self(6);
    /// 7: invalid network configuration.
    pub const INVALID_CONFIG: Self = Self(7);
    /// 8: invalid network namespace (libcni's `ErrInvalidNetNS`).
    pub const INVALID_NETNS: Self = Self(8);
    /// 11: try again later (a transient condition: the agent is starting, the pool is empty).
    pub const TRY_AGAIN_LATER: Self = Self(11);
    /// 50 (`STATUS`): the plugin cannot serve `ADD` now.
    pub const NOT_READY: Self = Self(50);
    /// 51 (`STATUS`): cannot serve `ADD`, and existing containers may have limited
    /// connectivity.
    pub const LIMITED_CONNECTIVITY: Self = Self(51);
    /// 100 (plugin): `CHECK` found the pod's wiring different from what `ADD` made.
    pub const DRIFT: Self = Self(100);
    /// 999: internal error (libcni's `ErrInternal`).
    pub const INTERNAL: Self = Self(999);
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A CNI error, printed on stdout as the error result with a non-zero exit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    /// The code.
    pub code: ErrorCode,
    /// A short message.
    pub msg: String,
    /// Longer details (may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with `code` and `msg`.
    #[must_use]
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details.
    #[must_use]
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The error result JSON for `cni_version`.
    #[must_use]
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut value = serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code.0,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            value["details"] = serde_json::Value::String(self.details.clone());
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_shape() {
        let e = CniError::new(ErrorCode::INVALID_ENVIRONMENT, "missing CNI_NETNS")
            .with_details("ADD needs it");
        assert_eq!(
            e.to_json("1.1.0"),
            serde_json::json!({"cniVersion": "1.1.0", "code": 4, "msg": "missing CNI_NETNS",
                               "details": "ADD needs it"})
        );
        let plain = CniError::new(ErrorCode::INTERNAL, "boom").to_json("1.0.0");
        assert!(plain.get("details").is_none());
        assert_eq!(
            e.to_string(),
            "CNI error 4: missing CNI_NETNS (ADD needs it)"
        );
    }
}
