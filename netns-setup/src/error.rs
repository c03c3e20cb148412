//! The crate's error types.

use std::{fmt, io};

use crate::spec::SpecError;

/// Which of the two namespaces a pod wiring touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The node (host) namespace: ENIs, host ends of pod links, policy routing.
    Node,
    /// The pod's namespace.
    Pod,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Node => "node",
            Self::Pod => "pod",
        })
    }
}

/// A failed netlink request: what it was doing and the kernel's answer.
///
/// Deliberately free of `netlink-packet-*` types, which change with every rtnetlink release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkError {
    operation: String,
    errno: Option<i32>,
    detail: String,
}

impl NetlinkError {
    /// An error for `operation` with an optional kernel `errno` and a free-form `detail`.
    #[must_use]
    pub fn new(
        operation: impl Into<String>,
        errno: Option<i32>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            operation: operation.into(),
            errno,
            detail: detail.into(),
        }
    }

    /// An error for `operation` carrying the kernel's `errno` (positive, e.g. `libc::EEXIST`).
    #[must_use]
    pub fn from_errno(operation: impl Into<String>, errno: i32) -> Self {
        Self::new(
            operation,
            Some(errno),
            io::Error::from_raw_os_error(errno).to_string(),
        )
    }

    /// What was being done, e.g. `add route 198.18.0.5/32 dev cnk0123456789a table 254`.
    #[must_use]
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// The kernel's errno (positive), when the kernel answered with one.
    #[must_use]
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// The object already exists (`EEXIST`).
    #[must_use]
    pub fn is_exists(&self) -> bool {
        self.errno == Some(libc::EEXIST)
    }

    /// The object, or the link or namespace it refers to, does not exist.
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno,
            Some(libc::ENOENT | libc::ENODEV | libc::ESRCH | libc::EADDRNOTAVAIL)
        )
    }

    /// The kernel does not support the request (`EOPNOTSUPP`), e.g. a missing link kind.
    #[must_use]
    pub fn is_unsupported(&self) -> bool {
        matches!(self.errno, Some(libc::EOPNOTSUPP))
    }
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.operation, self.detail)
    }
}

impl std::error::Error for NetlinkError {}

/// Errors of pod namespace wiring.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The description of what to wire is invalid; nothing was touched.
    #[error("invalid pod network: {0}")]
    InvalidSpec(#[from] SpecError),
    /// The ENI is not in the node namespace (nor already given to this pod); nothing was touched.
    #[error("ENI {eni} is not in the node namespace")]
    EniNotFound {
        /// The ENI as it was asked for (name, MAC or index).
        eni: String,
    },
    /// A network namespace could not be opened, created, entered or removed.
    #[error("network namespace {what}: {source}")]
    Netns {
        /// Which namespace and what was being done.
        what: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A netlink request failed in the `side` namespace.
    #[error("{side} namespace: {source}")]
    Netlink {
        /// Where the request went.
        side: Side,
        /// The failed request.
        #[source]
        source: NetlinkError,
    },
    /// A link this wiring needs exists already and belongs to something else.
    #[error("link {name} in the {side} namespace is in the way: {reason}")]
    LinkConflict {
        /// Where the link is.
        side: Side,
        /// Its name.
        name: String,
        /// Why it is not ours.
        reason: String,
    },
    /// The running kernel (or environment) cannot do what was asked.
    #[error("{what} is not supported here: {reason}")]
    Unsupported {
        /// The missing capability, e.g. `ipvlan`.
        what: String,
        /// Why, as the kernel reported it.
        reason: String,
    },
    /// No tokio runtime to run the netlink connection on.
    #[error("a tokio runtime is required: {0}")]
    Runtime(String),
    /// Setup failed and undoing what it had created failed too.
    #[error("{source}; rollback also failed: {}", list(errors))]
    RollbackFailed {
        /// Why setup failed.
        #[source]
        source: Box<Error>,
        /// What could not be undone.
        errors: Vec<Error>,
    },
    /// Teardown went through every step and some failed.
    #[error("teardown finished with {} error(s): {}", errors.len(), list(errors))]
    Teardown {
        /// Every failure, in the order met.
        errors: Vec<Error>,
    },
}

fn list(errors: &[Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub(crate) fn netlink(side: Side, source: NetlinkError) -> Self {
        Self::Netlink { side, source }
    }

    pub(crate) fn netns(what: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Self::Netns {
            what: what.into(),
            source: source.into(),
        }
    }

    /// The netlink error underneath, if this is one.
    #[must_use]
    pub fn as_netlink(&self) -> Option<&NetlinkError> {
        match self {
            Self::Netlink { source, .. } => Some(source),
            Self::RollbackFailed { source, .. } => source.as_netlink(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_errnos() {
        let e = NetlinkError::from_errno("add link x", libc::EEXIST);
        assert!(e.is_exists() && !e.is_not_found());
        assert_eq!(e.to_string(), "add link x: File exists (os error 17)");
        for errno in [libc::ENOENT, libc::ENODEV, libc::ESRCH, libc::EADDRNOTAVAIL] {
            assert!(NetlinkError::from_errno("del", errno).is_not_found());
        }
        assert!(NetlinkError::from_errno("add ipvlan", libc::EOPNOTSUPP).is_unsupported());
    }

    #[test]
    fn teardown_lists_every_error() {
        let err = Error::Teardown {
            errors: vec![
                Error::netlink(
                    Side::Node,
                    NetlinkError::from_errno("del rule", libc::EPERM),
                ),
                Error::netlink(Side::Pod, NetlinkError::from_errno("del link", libc::EBUSY)),
            ],
        };
        let text = err.to_string();
        assert!(
            text.starts_with("teardown finished with 2 error(s)"),
            "{text}"
        );
        assert!(
            text.contains("del rule") && text.contains("del link"),
            "{text}"
        );
    }
}
