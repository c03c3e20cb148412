//! The crate's error type.

use std::{fmt, time::Duration};

use cnikit_cloud_api::ErrorKind;

use crate::{
    liveness::LivenessError,
    pod::{PodKey, ResourceKind},
    store::StoreError,
};

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the pool could not provide a resource in time.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Blocker {
    /// The cloud calls were still under way (slow cloud, or the deadline was short).
    Provisioning,
    /// Every configured vSwitch is out of addresses (paused until the cloud reports more).
    SubnetExhausted {
        /// The exhausted vSwitches.
        vswitch_ids: Vec<String>,
    },
    /// A quota was hit: ENIs per instance, addresses per ENI, or the account's ENIs.
    QuotaExceeded {
        /// The cloud's words, with its request id.
        detail: String,
    },
    /// The pool holds as much as the instance type and `max_enis` / `max_ips` allow.
    CapacityReached {
        /// The capacity for this kind of resource.
        capacity: u32,
    },
    /// The cloud failed in a way retries did not fix.
    Cloud {
        /// What the error means.
        kind: ErrorKind,
        /// The error, with its request id.
        detail: String,
    },
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Provisioning => f.write_str("cloud calls still under way"),
            Self::SubnetExhausted { vswitch_ids } => {
                write!(
                    f,
                    "vSwitch(es) out of addresses: {}",
                    vswitch_ids.join(", ")
                )
            }
            Self::QuotaExceeded { detail } => write!(f, "quota exceeded: {detail}"),
            Self::CapacityReached { capacity } => {
                write!(f, "pool at capacity ({capacity})")
            }
            Self::Cloud { kind, detail } => write!(f, "cloud error ({kind}): {detail}"),
        }
    }
}

/// Errors of the pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid, alone or against the instance type's limits.
    #[error("pool configuration: {0}")]
    Config(String),
    /// The request is malformed (for example an empty pod name).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No resource became available before the request's deadline.
    #[error("{pod}: no {kind} after {waited:?}: {cause}")]
    Exhausted {
        /// Who asked.
        pod: Box<PodKey>,
        /// For what.
        kind: ResourceKind,
        /// How long it waited.
        waited: Duration,
        /// Why nothing arrived.
        cause: Blocker,
    },
    /// The pod already holds a resource of the other kind under the same key.
    #[error("{pod} already holds a {held}, not a {asked}")]
    KindMismatch {
        /// The pod.
        pod: Box<PodKey>,
        /// What it holds.
        held: ResourceKind,
        /// What it asked for.
        asked: ResourceKind,
    },
    /// The record store failed; the operation was not acknowledged and is undone.
    #[error("{operation}: record store: {source}")]
    Store {
        /// What was being recorded, e.g. `allocate default/web-0 (…)`.
        operation: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// A cloud call failed (start-up and explicit operations; background failures are
    /// retried and reported through metrics and [`Blocker`]).
    #[error("{operation}: {source}")]
    Cloud {
        /// What was being done.
        operation: String,
        /// The cloud's error.
        #[source]
        source: cnikit_cloud_api::Error,
    },
    /// The liveness oracle failed.
    #[error("liveness oracle: {0}")]
    Liveness(#[from] LivenessError),
    /// The pool was shut down.
    #[error("the pool is shut down")]
    Shutdown,
}

impl Error {
    pub(crate) fn cloud(operation: impl Into<String>, source: cnikit_cloud_api::Error) -> Self {
        Self::Cloud {
            operation: operation.into(),
            source,
        }
    }

    pub(crate) fn store(operation: impl Into<String>, source: StoreError) -> Self {
        Self::Store {
            operation: operation.into(),
            source,
        }
    }
}
