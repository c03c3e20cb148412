//! The invocation environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS`, `CNI_PATH`, validated per command as the specification requires.

use std::{fmt, path::PathBuf, str::FromStr};

use super::error::{CniError, ErrorCode};

/// The operation the runtime asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Attach the container to the network.
    Add,
    /// Undo `ADD` (idempotent, best effort).
    Del,
    /// Verify what `ADD` did (0.4.0 and later).
    Check,
    /// Can the plugin serve `ADD` now? (1.1.0)
    Status,
    /// Remove everything not in the valid-attachments list (1.1.0).
    Gc,
    /// Which versions the plugin speaks.
    Version,
}

impl Command {
    /// The `CNI_COMMAND` spelling.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Gc => "GC",
            Self::Version => "VERSION",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Command {
    type Err = CniError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            "VERSION" => Self::Version,
            other => {
                return Err(CniError::new(
                    ErrorCode::INVALID_ENVIRONMENT,
                    format!("CNI_COMMAND={other:?} is not a CNI command"),
                )
                .with_details("expected ADD, DEL, CHECK, STATUS, GC or VERSION"));
            }
        })
    }
}

/// The parsed, validated environment of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Environment {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (required by ADD, DEL, CHECK).
    pub container_id: Option<String>,
    /// `CNI_NETNS` (required by ADD and CHECK; optional for DEL, where it may be gone).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (required by ADD, DEL, CHECK).
    pub ifname: Option<String>,
    /// `CNI_ARGS`, as `KEY=VALUE` pairs in order.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
}

impl Environment {
    /// Reads and validates the process environment.
    ///
    /// # Errors
    /// Code 4 (invalid environment variables), naming the variables.
    pub fn from_env() -> Result<Self, CniError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads and validates the variables `lookup` returns.
    ///
    /// # Errors
    /// Code 4 (invalid environment variables), naming every missing or invalid one.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let command: Command = get("CNI_COMMAND")
            .ok_or_else(|| CniError::new(ErrorCode::INVALID_ENVIRONMENT, "CNI_COMMAND is not set"))?
            .parse()?;
        let env = Self {
            command,
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS").map(PathBuf::from),
            ifname: get("CNI_IFNAME"),
            args: parse_args(get("CNI_ARGS").as_deref().unwrap_or(""))?,
            path: get("CNI_PATH")
                .map(|p| {
                    p.split(':')
                        .filter(|s| !s.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
        };
        env.validate()?;
        Ok(env)
    }

    fn validate(&self) -> Result<(), CniError> {
        let (needs_netns, needs_container) = match self.command {
            Command::Add | Command::Check => (true, true),
            Command::Del => (false, true),
            Command::Status | Command::Gc | Command::Version => (false, false),
        };
        let mut problems = Vec::new();
        if needs_container {
            match &self.container_id {
                None => problems.push("CNI_CONTAINERID is not set".to_owned()),
                Some(id) if !valid_container_id(id) => problems.push(format!(
                    "CNI_CONTAINERID={id:?} must start with a letter or digit followed by \
                     letters, digits, '_', '.' or '-'"
                )),
                Some(_) => {}
            }
            match &self.ifname {
                None => problems.push("CNI_IFNAME is not set".to_owned()),
                Some(name) => {
                    if let Err(e) = validate_ifname(name) {
                        problems.push(format!("CNI_IFNAME={name:?}: {e}"));
                    }
                }
            }
        }
        if needs_netns && self.netns.is_none() {
            problems.push("CNI_NETNS is not set".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                ErrorCode::INVALID_ENVIRONMENT,
                format!("invalid environment for {}", self.command),
            )
            .with_details(problems.join("; ")))
        }
    }

    /// The value of `key` in `CNI_ARGS` (the last one, when repeated).
    #[must_use]
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The container id; validated to be present for ADD, DEL and CHECK.
    #[must_use]
    pub fn container_id(&self) -> &str {
        self.container_id.as_deref().unwrap_or_default()
    }

    /// The interface name; validated to be present for ADD, DEL and CHECK.
    #[must_use]
    pub fn ifname(&self) -> &str {
        self.ifname.as_deref().unwrap_or_default()
    }
}

/// `CNI_CONTAINERID` as the specification allows it.
fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `CNI_IFNAME` as the specification allows it: 1–15 bytes, not `.` or `..`, no `/`, `:` or
/// whitespace.
///
/// # Errors
/// What is wrong with it.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err("must be 1 to 15 bytes long".to_owned());
    }
    if name == "." || name == ".." {
        return Err("must not be '.' or '..'".to_owned());
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err("must not contain '/', ':' or whitespace".to_owned());
    }
    Ok(())
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
fn parse_args(raw: &str) -> Result<Vec<(String, String)>, CniError> {
    raw.split(';')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    CniError::new(
                        ErrorCode::INVALID_ENVIRONMENT,
                        format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Environment, CniError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Environment::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn add_needs_container_netns_and_ifname() {
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0",
            ),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ])
        .unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.arg("K8S_POD_NAMESPACE"), Some("prod"));
        assert_eq!(e.arg("missing"), None);
        assert_eq!(e.path.len(), 2);

        let err = env(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(err.code, ErrorCode::INVALID_ENVIRONMENT);
        for var in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"] {
            assert!(err.details.contains(var), "{err}");
        }
    }

    #[test]
    fn del_tolerates_a_missing_netns_and_gc_needs_nothing() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap();
        assert_eq!(e.netns, None);
        assert!(env(&[("CNI_COMMAND", "GC")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        let err = env(&[
            ("CNI_COMMAND", "CHECK"),
            ("CNI_CONTAINERID", "-bad"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "this-name-is-too-long"),
        ])
        .unwrap_err();
        assert!(err.details.contains("CNI_CONTAINERID"), "{err}");
        assert!(err.details.contains("CNI_IFNAME"), "{err}");
        assert_eq!(
            env(&[("CNI_COMMAND", "FROB")]).unwrap_err().code,
            ErrorCode::INVALID_ENVIRONMENT
        );
        assert_eq!(
            env(&[("CNI_COMMAND", "GC"), ("CNI_ARGS", "novalue")])
                .unwrap_err()
                .code,
            ErrorCode::INVALID_ENVIRONMENT
        );
        for bad in ["", ".", "..", "a/b", "a:b", "a b"] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }
}
