//! Alibaba Cloud ECS: the RPC actions, error codes and (soon) the client.

mod action;
pub mod codes;

pub use action::{Action, ECS_VERSION, VPC_VERSION};
