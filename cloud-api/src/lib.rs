//! Cloud client for elastic network interfaces (ENIs) and secondary IPs.
//!
//! Part of [cnikit](https://github.com/cnikit/cnikit); see `docs/ARCHITECTURE.md` for where this
//! layer sits and what it may depend on.
//!
//! - [`CloudProvider`]: the seam — instance limits, subnet capacity, ENI lifecycle, secondary
//!   IPv4/IPv6 addresses, listing, waiting. Hold it as `Arc<dyn CloudProvider>`.
//! - [`metadata::InstanceMetadata`]: what the instance metadata service says about this node.
//! - [`ecs`]: Alibaba Cloud ECS (RPC API 2014-05-26, signature v1).
//! - `sim` (feature `sim`): an ECS-compatible simulator, in process and over HTTP.
#![deny(missing_docs)]

mod backoff;
pub mod credentials;
pub mod ecs;
mod error;
mod http;
pub mod metadata;
mod provider;
mod rand;
mod ratelimit;
#[cfg(feature = "sim")]
pub mod sim;
mod timefmt;
mod types;

pub use backoff::{Backoff, WaitOptions};
pub use error::{ApiError, Error, ErrorKind, Result};
pub use provider::{CloudProvider, WaitTarget, poll_eni};
pub use ratelimit::{Rate, RateLimits};
pub use types::{
    AssignIpsRequest, AttachEniRequest, CreateEniRequest, DetachEniRequest, Eni, EniAttachment,
    EniFilter, EniKind, EniStatus, InstanceLimits, IpSelection, Subnet,
};
