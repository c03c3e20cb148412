//! Alibaba Cloud ECS: the client ([`EcsClient`]), the signer, the RPC actions and error codes.

mod action;
mod client;
pub mod codes;

pub use crate::retry::RetryPolicy;
pub use action::{Action, ECS_VERSION, VPC_VERSION};
pub use client::{EcsClient, EcsConfig, Endpoint};
pub(crate) mod params;
pub mod signer;
pub(crate) mod wire;
