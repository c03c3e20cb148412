//! A complete CNI built from the cnikit crates: the `cnikit` plugin ([`plugin`], [`cni`]), the
//! `cnikit-agent` node agent ([`agent`]), the protocol between them ([`protocol`]), and the
//! throwaway node the demo, the tests and the benchmarks run on ([`harness`]).
//!
//! Asking a running agent whether it can serve pods, as the plugin's `STATUS` does:
//!
//! ```no_run
//! use std::time::Duration;
//! use cnikit_examples::protocol::{AgentClient, Reply, Request, DEFAULT_SOCKET};
//!
//! # async fn status() -> Result<(), Box<dyn std::error::Error>> {
//! let client = AgentClient::new(DEFAULT_SOCKET);
//! if let Reply::Status(s) = client.call(Request::Status, Duration::from_secs(5)).await? {
//!     println!("ready: {}, {} idle of {}", s.ready, s.idle, s.capacity);
//! }
//! # Ok(()) }
//! ```
//!
//! See the crate's README for the binaries and docs/build-your-own-cni.md for a walk-through.
#![deny(missing_docs)]

pub mod agent;
pub mod cni;
pub mod harness;
pub mod plugin;
pub mod protocol;
