//! The netlink seam: a handle bound to one network namespace, and a connector that opens handles.
//!
//! Drivers talk to the kernel only through [`NetlinkHandle`]. Implementations:
//! - [`RtNetlink`] (with [`RtConnector`]): rtnetlink over a socket created inside the target
//!   namespace on a dedicated thread, so nothing ever switches a runtime thread's namespace;
//! - [`fake::FakeKernel`]: an in-memory kernel model that records every call, for unit tests;
//! - [`fault::FaultInjector`]: wraps any handle and fails a chosen call, for failure-injection
//!   tests against either of the above.

use std::{fmt, sync::Arc};

use async_trait::async_trait;

use crate::{Result, error::NetlinkError, netns::Netns};

pub mod fake;
pub mod fault;
mod object;
mod rtnl;

pub(crate) use object::host_net;
pub use object::{
    Address, Family, IpVlanMode, Link, LinkChange, LinkKind, MacAddr, MacParseError, Neighbour,
    NewLink, Route, RouteKind, Rule, Scope, TABLE_LOCAL, TABLE_MAIN, VethPeer, host_route,
    network_of,
};
pub use rtnl::{RtConnector, RtNetlink};

/// Result of a netlink request.
pub type NlResult<T> = std::result::Result<T, NetlinkError>;

/// Netlink requests in one network namespace.
///
/// Creation requests fail with `EEXIST` ([`NetlinkError::is_exists`]) when the object is there
/// already, and deletions with a not-found errno ([`NetlinkError::is_not_found`]) when it is gone,
/// as the kernel does; callers build idempotence on top.
#[async_trait]
pub trait NetlinkHandle: Send + Sync + fmt::Debug {
    /// The namespace this handle works in.
    fn netns(&self) -> &Netns;

    /// All links.
    async fn links(&self) -> NlResult<Vec<Link>>;
    /// The link called `name`, if any.
    async fn link_by_name(&self, name: &str) -> NlResult<Option<Link>>;
    /// The link with index `index`, if any.
    async fn link_by_index(&self, index: u32) -> NlResult<Option<Link>>;
    /// Creates a link.
    async fn add_link(&self, link: &NewLink) -> NlResult<()>;
    /// Changes a link (including moving it to another namespace).
    async fn set_link(&self, change: &LinkChange) -> NlResult<()>;
    /// Deletes a link (a veth takes its peer with it).
    async fn del_link(&self, index: u32) -> NlResult<()>;

    /// Addresses, of one link or of all.
    async fn addresses(&self, index: Option<u32>) -> NlResult<Vec<Address>>;
    /// Adds an address (IPv6 addresses skip duplicate address detection).
    async fn add_address(&self, address: &Address) -> NlResult<()>;
    /// Deletes an address.
    async fn del_address(&self, address: &Address) -> NlResult<()>;

    /// Routes of `family`, of one table or of all.
    async fn routes(&self, family: Family, table: Option<u32>) -> NlResult<Vec<Route>>;
    /// Adds a route; with `replace`, overwrites one with the same key.
    async fn add_route(&self, route: &Route, replace: bool) -> NlResult<()>;
    /// Deletes a route.
    async fn del_route(&self, route: &Route) -> NlResult<()>;

    /// Rules of `family`.
    async fn rules(&self, family: Family) -> NlResult<Vec<Rule>>;
    /// Adds a rule; `EEXIST` when an identical one exists.
    async fn add_rule(&self, rule: &Rule) -> NlResult<()>;
    /// Deletes a rule.
    async fn del_rule(&self, rule: &Rule) -> NlResult<()>;

    /// Neighbours of `family`, of one link or of all.
    async fn neighbours(&self, family: Family, index: Option<u32>) -> NlResult<Vec<Neighbour>>;
    /// Adds a neighbour; with `replace`, overwrites an existing entry.
    async fn add_neighbour(&self, neighbour: &Neighbour, replace: bool) -> NlResult<()>;
    /// Deletes a neighbour.
    async fn del_neighbour(&self, neighbour: &Neighbour) -> NlResult<()>;
}

/// Opens [`NetlinkHandle`]s bound to namespaces.
pub trait Connector: Send + Sync + fmt::Debug {
    /// A handle working inside `netns`.
    ///
    /// # Errors
    /// When the namespace cannot be entered or the socket cannot be created.
    fn connect(&self, netns: &Netns) -> Result<Arc<dyn NetlinkHandle>>;

    /// A new, empty namespace for capability probes, alive while the returned handle is.
    ///
    /// # Errors
    /// When one cannot be created (needs `CAP_SYS_ADMIN` for kernel namespaces).
    fn scratch(&self) -> Result<Netns> {
        Netns::scratch()
    }
}

/// Shorthand for a shared handle.
pub type Handle = Arc<dyn NetlinkHandle>;
