//! The node agent, `cnikit-agent`: owns the warm pool, the records, the eBPF dataplane and
//! node-local DNS, and serves the `cnikit` plugin over a unix socket ([`crate::protocol`]).
//!
//! - [`config`]: the configuration file (`--print-default-config` prints
//!   [`config::AgentConfig::DEFAULT`]).
//! - [`cloud`]: the cloud provider from the configuration (embedded simulator or Alibaba ECS).
//! - [`service`]: what the agent does for each request, and who wires pods (the agent, by default).
//! - [`server`]: the socket (mode 0600, one request per connection, deadlines).
//! - [`endpoints`]: the records of wired pods (survive restarts) and the pool's liveness oracle.
//! - [`links`]: finding an ENI's interface on the node, or simulating it.
//! - [`sockets`]: netlink sockets for pod namespaces, opened while the address is allocated.
//! - [`retire`]: deleting the veth pairs of deleted pods after their `DEL` answered.
//! - [`catalog`]: Services and network policies from a file.
//! - [`metrics`]: Prometheus text format.

pub mod catalog;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod endpoints;
pub mod links;
pub mod metrics;
pub mod retire;
pub mod server;
pub mod service;
pub mod sockets;

pub use config::AgentConfig;
pub use service::{Agent, StartError};

/// Locks `m`, also after a thread panicked holding it (the agent's state stays usable).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
