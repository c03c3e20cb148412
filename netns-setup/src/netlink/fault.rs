//! Failure injection at the netlink seam: wrap any handle (real or fake) so that the n-th
//! change request (add, set or delete) fails, to prove that every step's failure is rolled back.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicUsize, Ordering},
};

use async_trait::async_trait;

use super::{
    Address, Connector, Family, Handle, Link, LinkChange, Neighbour, NetlinkHandle, NewLink,
    NlResult, Route, Rule,
};
use crate::{Result, error::NetlinkError, netns::Netns};

/// Which change request fails, shared by every handle wrapped with it (so the count runs across
/// the node and pod namespaces).
#[derive(Debug)]
pub struct FaultPlan {
    fail_at: Option<usize>,
    errno: i32,
    seen: AtomicUsize,
    log: Mutex<Vec<String>>,
}

impl FaultPlan {
    /// Fail the change request number `n` (0-based) with `errno`.
    #[must_use]
    pub fn fail_nth_change(n: usize, errno: i32) -> Arc<Self> {
        Arc::new(Self {
            fail_at: Some(n),
            errno,
            seen: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
        })
    }

    /// Fail nothing; only count and log change requests.
    #[must_use]
    pub fn count_only() -> Arc<Self> {
        Arc::new(Self {
            fail_at: None,
            errno: 0,
            seen: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
        })
    }

    /// How many change requests were made so far.
    #[must_use]
    pub fn changes(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    /// Whether the planned failure happened.
    #[must_use]
    pub fn fired(&self) -> bool {
        self.fail_at.is_some_and(|n| self.changes() > n)
    }

    /// The change requests made so far, as `<namespace>: <operation>`.
    #[must_use]
    pub fn log(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn change(&self, netns: &Netns, operation: &str) -> NlResult<()> {
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        let entry = format!("{netns}: {operation}");
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry);
        if self.fail_at == Some(n) {
            return Err(NetlinkError::from_errno(
                format!("{operation} (injected failure #{n})"),
                self.errno,
            ));
        }
        Ok(())
    }
}

/// A handle whose change requests go through a [`FaultPlan`].
#[derive(Debug)]
pub struct FaultInjector {
    inner: Handle,
    plan: Arc<FaultPlan>,
}

impl FaultInjector {
    /// Wraps `inner`.
    #[must_use]
    pub fn wrap(inner: Handle, plan: Arc<FaultPlan>) -> Handle {
        Arc::new(Self { inner, plan })
    }
}

/// A connector whose handles are all wrapped with the same [`FaultPlan`].
#[derive(Debug)]
pub struct FaultyConnector {
    inner: Arc<dyn Connector>,
    plan: Arc<FaultPlan>,
}

impl FaultyConnector {
    /// Wraps `inner`.
    #[must_use]
    pub fn new(inner: Arc<dyn Connector>, plan: Arc<FaultPlan>) -> Self {
        Self { inner, plan }
    }
}

impl Connector for FaultyConnector {
    fn connect(&self, netns: &Netns) -> Result<Handle> {
        Ok(FaultInjector::wrap(
            self.inner.connect(netns)?,
            Arc::clone(&self.plan),
        ))
    }

    fn scratch(&self) -> Result<Netns> {
        self.inner.scratch()
    }
}

#[async_trait]
impl NetlinkHandle for FaultInjector {
    fn netns(&self) -> &Netns {
        self.inner.netns()
    }

    async fn links(&self) -> NlResult<Vec<Link>> {
        self.inner.links().await
    }

    async fn link_by_name(&self, name: &str) -> NlResult<Option<Link>> {
        self.inner.link_by_name(name).await
    }

    async fn link_by_index(&self, index: u32) -> NlResult<Option<Link>> {
        self.inner.link_by_index(index).await
    }

    async fn add_link(&self, link: &NewLink) -> NlResult<()> {
        self.plan
            .change(self.netns(), &format!("add link {}", link.name()))?;
        self.inner.add_link(link).await
    }

    async fn set_link(&self, change: &LinkChange) -> NlResult<()> {
        self.plan
            .change(self.netns(), &format!("set link #{}", change.index))?;
        self.inner.set_link(change).await
    }

    async fn del_link(&self, index: u32) -> NlResult<()> {
        self.plan
            .change(self.netns(), &format!("delete link #{index}"))?;
        self.inner.del_link(index).await
    }

    async fn addresses(&self, index: Option<u32>) -> NlResult<Vec<Address>> {
        self.inner.addresses(index).await
    }

    async fn add_address(&self, address: &Address) -> NlResult<()> {
        self.plan
            .change(self.netns(), &format!("add address {}", address.address))?;
        self.inner.add_address(address).await
    }

    async fn del_address(&self, address: &Address) -> NlResult<()> {
        self.plan
            .change(self.netns(), &format!("delete address {}", address.address))?;
        self.inner.del_address(address).await
    }

    async fn routes(&self, family: Family, table: Option<u32>) -> NlResult<Vec<Route>> {
        self.inner.routes(family, table).await
    }

    async fn add_route(&self, route: &Route, replace: bool) -> NlResult<()> {
        self.plan
            .change(self.netns(), &format!("add route {route}"))?;
        self.inner.add_route(route, replace).await
    }

    async fn del_route(&self, route: &Route) -> NlResult<()> {
        self.plan
            .change(self.netns(), &format!("delete route {route}"))?;
        self.inner.del_route(route).await
    }

    async fn rules(&self, family: Family) -> NlResult<Vec<Rule>> {
        self.inner.rules(family).await
    }

    async fn add_rule(&self, rule: &Rule) -> NlResult<()> {
        self.plan
            .change(self.netns(), &format!("add rule {rule}"))?;
        self.inner.add_rule(rule).await
    }

    async fn del_rule(&self, rule: &Rule) -> NlResult<()> {
        self.plan
            .change(self.netns(), &format!("delete rule {rule}"))?;
        self.inner.del_rule(rule).await
    }

    async fn neighbours(&self, family: Family, index: Option<u32>) -> NlResult<Vec<Neighbour>> {
        self.inner.neighbours(family, index).await
    }

    async fn add_neighbour(&self, neighbour: &Neighbour, replace: bool) -> NlResult<()> {
        self.plan
            .change(self.netns(), &format!("add neighbour {}", neighbour.ip))?;
        self.inner.add_neighbour(neighbour, replace).await
    }

    async fn del_neighbour(&self, neighbour: &Neighbour) -> NlResult<()> {
        self.plan
            .change(self.netns(), &format!("delete neighbour {}", neighbour.ip))?;
        self.inner.del_neighbour(neighbour).await
    }
}
