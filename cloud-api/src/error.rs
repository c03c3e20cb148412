//! The crate's error type and the classification every caller keys its reaction on.

use std::{fmt, time::Duration};

/// A boxed source error; keeps third-party error types (reqwest, hyper, serde) out of the API.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What an error means for the caller, independent of the cloud's spelling of it.
///
/// The ECS client maps every documented error code to one of these (see [`crate::ecs::codes`]);
/// an EC2 implementation maps its own codes to the same kinds, so a pool reacts the same way on
/// any cloud.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Server-side flow control (`Throttling*`): retry after a throttling backoff.
    Throttled,
    /// Transient server or network failure (5xx, `InternalError`, `ServiceUnavailable`,
    /// connection reset, request timeout): retry.
    Transient,
    /// A concurrent operation on the same resource (`OperationConflict`, `Operation.Conflict`,
    /// `LastTokenProcessing`): retry shortly.
    Conflict,
    /// The ENI or instance is in a state that does not allow the operation (for example still
    /// `Attaching`): retry after re-reading the state.
    InvalidState,
    /// The resource does not exist (ENI, instance, vSwitch, security group, instance type).
    NotFound,
    /// The vSwitch (subnet) has no free address left: pick another one, do not retry.
    SubnetExhausted,
    /// An account, instance or ENI quota (ENI count, IPs per ENI, tags) is reached.
    QuotaExceeded,
    /// The credentials lack a permission (RAM policy).
    Permission,
    /// The request was not authenticated (unknown key, bad signature, expired token).
    Authentication,
    /// The request's timestamp is too far from the server's clock.
    ClockSkew,
    /// A `ClientToken` was reused with different parameters.
    IdempotencyMismatch,
    /// The request is malformed or a parameter is invalid (a client bug, or bad input).
    InvalidRequest,
    /// An overall deadline passed.
    Timeout,
    /// The operation was cancelled by the caller.
    Cancelled,
    /// The response could not be understood (HTML error page, truncated or mistyped JSON).
    InvalidResponse,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Whether retrying the same request (with a fresh signature nonce) may succeed.
    #[must_use]
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Throttled | Self::Transient | Self::Conflict | Self::InvalidState
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Throttled => "throttled",
            Self::Transient => "transient",
            Self::Conflict => "conflict",
            Self::InvalidState => "invalid state",
            Self::NotFound => "not found",
            Self::SubnetExhausted => "subnet exhausted",
            Self::QuotaExceeded => "quota exceeded",
            Self::Permission => "permission denied",
            Self::Authentication => "authentication failed",
            Self::ClockSkew => "clock skew",
            Self::IdempotencyMismatch => "idempotency token mismatch",
            Self::InvalidRequest => "invalid request",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
            Self::InvalidResponse => "invalid response",
            Self::Other => "other",
        };
        f.write_str(s)
    }
}

/// An error response of the cloud API: its `Code`, `Message` and `RequestId`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiError {
    /// The API action, e.g. `CreateNetworkInterface`.
    pub action: String,
    /// The error code, e.g. `InvalidVSwitchId.IpNotEnough`.
    pub code: String,
    /// The human-readable message.
    pub message: String,
    /// The request id the cloud assigned (quote it to the cloud's support).
    pub request_id: Option<String>,
    /// The HTTP status, when the error came over HTTP.
    pub http_status: Option<u16>,
    /// What the code means.
    pub kind: ErrorKind,
}

impl ApiError {
    /// A new API error.
    #[must_use]
    pub fn new(
        action: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
        kind: ErrorKind,
    ) -> Self {
        Self {
            action: action.into(),
            code: code.into(),
            message: message.into(),
            request_id: None,
            http_status: None,
            kind,
        }
    }

    /// Sets the request id.
    #[must_use]
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Sets the HTTP status.
    #[must_use]
    pub fn with_http_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.action, self.code, self.message)?;
        match (&self.request_id, self.http_status) {
            (Some(id), Some(status)) => write!(f, " (RequestId {id}, HTTP {status})"),
            (Some(id), None) => write!(f, " (RequestId {id})"),
            (None, Some(status)) => write!(f, " (HTTP {status})"),
            (None, None) => Ok(()),
        }
    }
}

impl std::error::Error for ApiError {}

/// Errors of the cloud API layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The cloud answered with an error response.
    #[error(transparent)]
    Api(Box<ApiError>),
    /// The request did not get an answer: connection refused or reset, request timeout, or the
    /// response was lost after the request was sent (the effect may or may not have happened).
    #[error("{action}: transport error talking to {endpoint}{}: {source}", if *.timed_out { " (timed out)" } else { "" })]
    Transport {
        /// The API action.
        action: String,
        /// The endpoint (URL without query).
        endpoint: String,
        /// Whether the request timed out.
        timed_out: bool,
        /// What failed.
        #[source]
        source: BoxError,
    },
    /// The response could not be understood: not JSON, truncated, missing or mistyped fields,
    /// too large.
    #[error("{action}: invalid response{}{}: {detail}",
        .http_status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(),
        .request_id.as_ref().map(|r| format!(" (RequestId {r})")).unwrap_or_default())]
    InvalidResponse {
        /// The API action (or metadata path).
        action: String,
        /// The HTTP status.
        http_status: Option<u16>,
        /// The request id, when one could be read.
        request_id: Option<String>,
        /// What was wrong, with a short excerpt of the body.
        detail: String,
    },
    /// An operation did not succeed before its deadline (retries exhausted or time up).
    #[error("{operation}: gave up after {attempts} attempt(s) in {elapsed:?}{}",
        .last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default())]
    DeadlineExceeded {
        /// The operation (API action, or a wait).
        operation: String,
        /// How many attempts were made.
        attempts: u32,
        /// How long it took.
        elapsed: Duration,
        /// The error of the last attempt.
        last_error: Option<Box<Error>>,
    },
    /// Waiting for an ENI to reach a status timed out.
    #[error("ENI {eni_id}: not {target} after {elapsed:?} (last seen: {last_seen})")]
    WaitTimeout {
        /// The ENI.
        eni_id: String,
        /// The awaited condition.
        target: String,
        /// How long it waited.
        elapsed: Duration,
        /// The last observed status (or `absent`).
        last_seen: String,
    },
    /// While waiting, the ENI went back instead of forward: an attach that failed
    /// asynchronously (`Attaching` → `Available`). Retrying the attach may succeed.
    #[error("ENI {eni_id}: went from {from} back to {to} while waiting to be {target}")]
    StatusRegressed {
        /// The ENI.
        eni_id: String,
        /// The awaited condition.
        target: String,
        /// The status seen before.
        from: String,
        /// The status seen now.
        to: String,
    },
    /// The operation was cancelled.
    #[error("{operation}: cancelled")]
    Cancelled {
        /// What was cancelled.
        operation: String,
    },
    /// Credentials could not be obtained or are unusable.
    #[error("credentials ({provider}): {detail}")]
    Credentials {
        /// The credentials source, e.g. `environment` or `ram-role`.
        provider: String,
        /// What was wrong (never a secret).
        detail: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The instance metadata service failed or answered something unusable.
    #[error("instance metadata {path}{}: {detail}", .http_status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Metadata {
        /// The metadata path.
        path: String,
        /// The HTTP status, if any.
        http_status: Option<u16>,
        /// What was wrong.
        detail: String,
    },
    /// A looked-up object does not exist (instance type, subnet).
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of object, e.g. `instance type`.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The caller passed an invalid argument; nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The client configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The cloud answered successfully but the answer contradicts the request (for example
    /// fewer IPs assigned than asked for).
    #[error("{action}: unexpected response{}: {detail}", .request_id.as_ref().map(|r| format!(" (RequestId {r})")).unwrap_or_default())]
    Unexpected {
        /// The API action.
        action: String,
        /// The request id.
        request_id: Option<String>,
        /// What was unexpected.
        detail: String,
    },
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Self::Api(Box::new(e))
    }
}

impl Error {
    /// What this error means for the caller.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Api(e) => e.kind,
            Self::Transport { .. } => ErrorKind::Transient,
            Self::InvalidResponse { .. } | Self::Unexpected { .. } => ErrorKind::InvalidResponse,
            Self::DeadlineExceeded { .. } | Self::WaitTimeout { .. } => ErrorKind::Timeout,
            Self::Cancelled { .. } => ErrorKind::Cancelled,
            Self::StatusRegressed { .. } => ErrorKind::InvalidState,
            Self::Credentials { .. } => ErrorKind::Authentication,
            Self::Metadata { .. } => ErrorKind::Other,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::InvalidArgument(_) | Self::Config(_) => ErrorKind::InvalidRequest,
        }
    }

    /// Whether retrying may succeed (see [`ErrorKind::is_retryable`]).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// The API error, if the cloud answered with one (also looks inside
    /// [`Error::DeadlineExceeded`]).
    #[must_use]
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Api(e) => Some(e),
            Self::DeadlineExceeded {
                last_error: Some(e),
                ..
            } => e.api(),
            _ => None,
        }
    }

    /// The cloud's error code, if any.
    #[must_use]
    pub fn code(&self) -> Option<&str> {
        self.api().map(|e| e.code.as_str())
    }

    /// The request id, if the cloud assigned one.
    #[must_use]
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Api(e) => e.request_id.as_deref(),
            Self::InvalidResponse { request_id, .. } | Self::Unexpected { request_id, .. } => {
                request_id.as_deref()
            }
            Self::DeadlineExceeded {
                last_error: Some(e),
                ..
            } => e.request_id(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_display_carries_code_message_and_request_id() {
        let e: Error = ApiError::new(
            "CreateNetworkInterface",
            "InvalidVSwitchId.IpNotEnough",
            "The specified VSwitch does not have enough IP addresses.",
            ErrorKind::SubnetExhausted,
        )
        .with_request_id("0910A187-1002-4488-9FE5-EF770D142B73")
        .with_http_status(403)
        .into();
        let s = e.to_string();
        assert!(s.contains("CreateNetworkInterface"), "{s}");
        assert!(s.contains("InvalidVSwitchId.IpNotEnough"), "{s}");
        assert!(s.contains("0910A187-1002-4488-9FE5-EF770D142B73"), "{s}");
        assert!(s.contains("HTTP 403"), "{s}");
        assert_eq!(e.kind(), ErrorKind::SubnetExhausted);
        assert!(!e.is_retryable());
        assert_eq!(e.code(), Some("InvalidVSwitchId.IpNotEnough"));
        assert_eq!(e.request_id(), Some("0910A187-1002-4488-9FE5-EF770D142B73"));
    }

    #[test]
    fn deadline_exposes_last_api_error() {
        let last: Error = ApiError::new("X", "Throttling", "slow down", ErrorKind::Throttled)
            .with_request_id("r-1")
            .into();
        let e = Error::DeadlineExceeded {
            operation: "X".into(),
            attempts: 3,
            elapsed: Duration::from_secs(1),
            last_error: Some(Box::new(last)),
        };
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert_eq!(e.code(), Some("Throttling"));
        assert_eq!(e.request_id(), Some("r-1"));
        assert!(e.to_string().contains("Throttling"));
    }
}
