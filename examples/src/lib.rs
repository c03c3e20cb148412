//! A complete CNI plugin, node agent and demo built from the cnikit crates.
#![deny(missing_docs)]

pub mod agent;
pub mod cni;
pub mod harness;
pub mod plugin;
pub mod protocol;
