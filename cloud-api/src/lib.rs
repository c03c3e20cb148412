//! Cloud client for elastic network interfaces (ENIs) and secondary IPs.
//!
//! Part of [cnikit](https://github.com/cnikit/cnikit); see `docs/ARCHITECTURE.md` for where this
//! layer sits and what it may depend on (no other cnikit crate).
//!
//! - [`CloudProvider`]: the seam — instance limits, subnet capacity, ENI lifecycle, secondary
//!   IPv4/IPv6 addresses, listing (every page), waiting for a status. Hold it as
//!   `Arc<dyn CloudProvider>`. Errors carry an [`ErrorKind`] so callers react the same on any
//!   cloud.
//! - [`metadata::InstanceMetadata`]: what the instance metadata service says about this node;
//!   [`metadata::ImdsClient`] reads Alibaba's in token mode.
//! - [`credentials`]: static, environment, STS, and the instance RAM role (refreshed before it
//!   expires); secrets never print.
//! - [`ecs`]: Alibaba Cloud ECS — [`ecs::EcsClient`] (RPC 2014-05-26, signature v1, retries by
//!   error class, client-side rate limits, idempotency tokens) and [`ecs::signer`].
//! - `sim` (feature `sim`): an ECS-compatible simulator, in process and over HTTP (`ecs-sim`).
//!
//! Listing a node's ENIs:
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use cnikit_cloud_api::{
//!     CloudProvider,
//!     credentials::{RamRoleConfig, RamRoleCredentials},
//!     ecs::{EcsClient, EcsConfig},
//!     metadata::{ImdsClient, ImdsConfig, InstanceMetadata},
//! };
//!
//! # async fn demo() -> Result<(), cnikit_cloud_api::Error> {
//! let imds = ImdsClient::new(ImdsConfig::default())?;
//! let me = imds.identity().await?;
//! let creds = RamRoleCredentials::new(ImdsClient::new(ImdsConfig::default())?, RamRoleConfig::default());
//! let ecs = EcsClient::new(EcsConfig::new(&me.region_id), Arc::new(creds))?;
//! for eni in ecs.list_instance_enis(&me.instance_id).await? {
//!     println!("{} {} {:?} {:?}", eni.id, eni.status, eni.primary_ipv4, eni.secondary_ipv4);
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod backoff;
pub mod credentials;
#[cfg(feature = "aws")]
pub mod ec2;
pub mod ecs;
mod error;
mod http;
pub mod metadata;
mod provider;
mod rand;
mod ratelimit;
mod retry;
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
