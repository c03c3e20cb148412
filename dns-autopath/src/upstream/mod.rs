//! The upstream seam: where names the node does not answer itself are resolved.
//!
//! [`Upstream`] takes a question and returns a complete DNS response in wire format; the server
//! validates it again, caches it and serves it. [`Forwarder`] is the real implementation: UDP
//! with TCP retry on truncation, per-attempt and overall timeouts, failover across servers,
//! EDNS(0), and spoofing resistance (random IDs and source ports, connected sockets, question
//! checks).

mod forwarder;

pub use forwarder::{Forwarder, ForwarderConfig, ForwarderStats};

use std::{net::SocketAddr, time::Duration};

use crate::{DnsClass, Name, RecordType};

/// A question to send upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamQuery {
    /// The name.
    pub name: Name,
    /// The type.
    pub qtype: RecordType,
    /// The class.
    pub qclass: DnsClass,
    /// The client asked for DNSSEC records (EDNS DO bit).
    pub dnssec_ok: bool,
    /// The client disabled validation (CD bit).
    pub checking_disabled: bool,
}

impl UpstreamQuery {
    /// A question of class IN without DNSSEC.
    #[must_use]
    pub fn new(name: Name, qtype: RecordType) -> Self {
        Self {
            name,
            qtype,
            qclass: DnsClass::IN,
            dnssec_ok: false,
            checking_disabled: false,
        }
    }
}

/// Why no upstream answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// No upstream server is configured.
    #[error("no upstream servers configured")]
    NoServers,
    /// Every attempt failed or the overall deadline passed; one line per attempt.
    #[error("no upstream answered {query} within {elapsed:?}: {}", attempts.join("; "))]
    Failed {
        /// The question, for logs.
        query: String,
        /// Time spent.
        elapsed: Duration,
        /// What happened at each server tried.
        attempts: Vec<String>,
    },
    /// An implementation-specific failure.
    #[error("upstream {server:?}: {source}")]
    Other {
        /// The server concerned, if any.
        server: Option<SocketAddr>,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Resolves questions the node does not answer itself.
#[async_trait::async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// Resolves `query` and returns the complete response message in wire format (any ID; the
    /// server checks that the question matches).
    ///
    /// Responses with rcodes such as NXDOMAIN or SERVFAIL are answers, not errors; an error
    /// means no usable answer arrived (the server then answers SERVFAIL, or stale data).
    async fn query(&self, query: &UpstreamQuery) -> Result<Vec<u8>, UpstreamError>;
}

#[async_trait::async_trait]
impl<T: Upstream> Upstream for std::sync::Arc<T> {
    async fn query(&self, query: &UpstreamQuery) -> Result<Vec<u8>, UpstreamError> {
        (**self).query(query).await
    }
}

/// The upstream that knows nothing: every query fails at once (for servers that only answer
/// the cluster zone).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoUpstream;

#[async_trait::async_trait]
impl Upstream for NoUpstream {
    async fn query(&self, _query: &UpstreamQuery) -> Result<Vec<u8>, UpstreamError> {
        Err(UpstreamError::NoServers)
    }
}
