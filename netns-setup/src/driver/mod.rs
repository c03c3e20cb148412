//! The pod driver seam and the three drivers.
//!
//! A [`PodDriver`] wires one pod interface ([`setup`](PodDriver::setup)), removes it
//! ([`teardown`](PodDriver::teardown)) and reports drift ([`check`](PodDriver::check)). Drivers
//! talk to the kernel only through the [`Node`]'s netlink handles, so the same logic runs against
//! rtnetlink and against the fake kernel.

use std::{
    fmt,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;

use crate::{
    Error, Result,
    drift::Drift,
    error::Side,
    naming::{LINK_LOCAL_GATEWAY_V4, LINK_LOCAL_GATEWAY_V6},
    netlink::{Connector, Family, Handle, Link, MacAddr, NetlinkHandle, RtConnector, host_route},
    netns::Netns,
    plan::{Executor, Object, Plan, Report},
    spec::{EniRef, PodNetwork, SpecError},
};

mod exclusive;
mod ipvlan;
mod veth;

pub use exclusive::ExclusiveEniDriver;
pub use ipvlan::IpVlanDriver;
pub use veth::{Retired, VethDriver};

/// The wiring modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The whole ENI is moved into the pod.
    ExclusiveEni,
    /// An L2 ipvlan sub-interface of a shared ENI.
    IpVlan,
    /// A veth pair plus policy routing through a shared ENI.
    Veth,
}

impl Mode {
    /// The driver for this mode, with default settings.
    #[must_use]
    pub fn driver(self) -> Box<dyn PodDriver> {
        match self {
            Self::ExclusiveEni => Box::new(ExclusiveEniDriver::default()),
            Self::IpVlan => Box::new(IpVlanDriver),
            Self::Veth => Box::new(VethDriver),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ExclusiveEni => "exclusive-eni",
            Self::IpVlan => "ipvlan",
            Self::Veth => "veth",
        })
    }
}

/// What [`PodDriver::setup`] wired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wired {
    /// The mode used.
    pub mode: Mode,
    /// The pod interface's name.
    pub interface: String,
    /// The pod interface's hardware address.
    pub mac: Option<MacAddr>,
    /// The host-side interface, when there is one (veth and exclusive-ENI node path).
    pub host_interface: Option<String>,
    /// What was created or corrected; all zero on a re-run with unchanged input.
    pub report: Report,
}

/// Wires pod interfaces.
#[async_trait]
pub trait PodDriver: Send + Sync + fmt::Debug {
    /// The mode this driver implements.
    fn mode(&self) -> Mode;

    /// Wires `pod`. Idempotent: a re-run with the same input converges and changes nothing that
    /// is already right. On failure, everything this call created is removed again.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] or [`Error::EniNotFound`] before anything is touched; otherwise the
    /// failing step's error ([`Error::RollbackFailed`] if undoing failed too).
    async fn setup(&self, node: &Node, pod: &PodNetwork) -> Result<Wired>;

    /// Removes `pod`'s wiring. Idempotent; succeeds when the pod namespace is already gone
    /// (`pod.netns == None`); goes on past failures.
    ///
    /// # Errors
    /// [`Error::Teardown`] with every failure.
    async fn teardown(&self, node: &Node, pod: &PodNetwork) -> Result<()>;

    /// Every difference between `pod`'s wiring and the kernel; empty when intact.
    ///
    /// # Errors
    /// When the state cannot be read.
    async fn check(&self, node: &Node, pod: &PodNetwork) -> Result<Vec<Drift>>;

    /// Creates only the node-level objects pods on `pod.eni` share (none for exclusive ENI).
    /// Setup does this too; an agent calls it to have them in place before the first pod.
    ///
    /// # Errors
    /// As [`setup`](Self::setup).
    async fn ensure_eni(&self, node: &Node, pod: &PodNetwork) -> Result<Report>;

    /// Removes the node-level objects of `pod.eni` (call after its last pod is gone).
    ///
    /// # Errors
    /// [`Error::Teardown`] with every failure.
    async fn release_eni(&self, node: &Node, pod: &PodNetwork) -> Result<()>;
}

/// The node namespace, netlink handles in it, and the connector that opens pod handles.
///
/// Cheap to clone and to share between concurrent operations. A node may hold several sockets
/// ([`connect_pool`](Self::connect_pool)), used in turn: the kernel handles one socket's requests
/// one after the other, so concurrent teardowns (each waiting out a veth's deletion) overlap only
/// on different sockets.
#[derive(Clone, Debug)]
pub struct Node {
    handles: Arc<[Handle]>,
    next: Arc<AtomicUsize>,
    connector: Arc<dyn Connector>,
}

impl Node {
    /// A node from an existing handle and a connector for pod namespaces.
    #[must_use]
    pub fn new(handle: Handle, connector: Arc<dyn Connector>) -> Self {
        Self::with_handles(vec![handle], connector)
    }

    /// A node using `handles` (all in the node namespace) in turn.
    ///
    /// # Panics
    /// When `handles` is empty.
    #[must_use]
    pub fn with_handles(handles: Vec<Handle>, connector: Arc<dyn Connector>) -> Self {
        assert!(
            !handles.is_empty(),
            "a node needs at least one netlink handle"
        );
        Self {
            handles: handles.into(),
            next: Arc::default(),
            connector,
        }
    }

    /// The node in `netns`, over one rtnetlink socket (needs a tokio runtime). Right for a CNI
    /// plugin process, which wires one pod.
    ///
    /// # Errors
    /// When the namespace cannot be entered or there is no runtime.
    pub fn connect(netns: &Netns) -> Result<Self> {
        Self::connect_pool(netns, 1)
    }

    /// The node in `netns` over `sockets` rtnetlink sockets (at least one): for an agent wiring
    /// pods concurrently, about as many as it runs at once.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn connect_pool(netns: &Netns, sockets: usize) -> Result<Self> {
        let connector: Arc<dyn Connector> = Arc::new(RtConnector);
        let handles = (0..sockets.max(1))
            .map(|_| connector.connect(netns))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::with_handles(handles, connector))
    }

    /// The node in `netns` over `sockets` rtnetlink sockets (at least one), each served by a
    /// thread of its own ([`RtNetlink::connect_on_own_thread`](crate::netlink::RtNetlink::connect_on_own_thread)):
    /// a request the kernel serves slowly (a veth deletion waits for an RCU barrier) then
    /// stalls neither the caller's runtime nor the other sockets. For an agent that wires and
    /// tears down many pods at once; pod namespaces still get sockets on the caller's runtime.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn connect_threaded(netns: &Netns, sockets: usize) -> Result<Self> {
        let handles = (0..sockets.max(1))
            .map(|_| {
                crate::netlink::RtNetlink::connect_on_own_thread(netns)
                    .map(|h| Arc::new(h) as Handle)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::with_handles(handles, Arc::new(RtConnector)))
    }

    /// The node in the calling thread's namespace, over rtnetlink.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn current() -> Result<Self> {
        Self::connect(&Netns::current()?)
    }

    /// A handle in the node namespace (the next one, when there are several).
    #[must_use]
    pub fn handle(&self) -> &dyn NetlinkHandle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].as_ref()
    }

    /// The node namespace.
    #[must_use]
    pub fn netns(&self) -> &Netns {
        self.handles[0].netns()
    }

    /// The connector used for pod namespaces.
    #[must_use]
    pub fn connector(&self) -> &Arc<dyn Connector> {
        &self.connector
    }

    /// A handle in the pod's namespace, or `None` when it is gone.
    pub(crate) fn pod_handle(&self, pod: &PodNetwork) -> Result<Option<Handle>> {
        pod.netns
            .as_ref()
            .map(|netns| self.connector.connect(netns))
            .transpose()
    }

    /// A handle in the pod's namespace, which must exist (setup).
    pub(crate) fn required_pod_handle(&self, pod: &PodNetwork) -> Result<Handle> {
        self.pod_handle(pod)?
            .ok_or(Error::InvalidSpec(SpecError::MissingNetns))
    }
}

/// The ENI as found in the node namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EniInfo {
    pub name: String,
    pub index: u32,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub up: bool,
    /// The link as read (`None` for [`EniInfo::gone`]).
    pub link: Option<Link>,
}

impl EniInfo {
    /// Stands in for an ENI that is no longer there: steps on it are skipped by teardown.
    pub(crate) fn gone() -> Self {
        Self {
            name: String::new(),
            index: 0,
            mac: None,
            mtu: 0,
            up: false,
            link: None,
        }
    }
}

impl From<Link> for EniInfo {
    fn from(link: Link) -> Self {
        Self {
            name: link.name.clone(),
            index: link.index,
            mac: link.mac,
            mtu: link.mtu,
            up: link.up,
            link: Some(link),
        }
    }
}

/// Finds the ENI in `handle`'s namespace.
pub(crate) async fn find_eni(
    handle: &dyn NetlinkHandle,
    side: Side,
    eni: &EniRef,
) -> Result<Option<Link>> {
    let nl = |e| Error::netlink(side, e);
    Ok(match eni {
        EniRef::Name(name) => handle.link_by_name(name).await.map_err(nl)?,
        EniRef::Index(index) => handle.link_by_index(*index).await.map_err(nl)?,
        EniRef::Mac(mac) => handle
            .links()
            .await
            .map_err(nl)?
            .into_iter()
            .find(|l| l.mac == Some(*mac)),
    })
}

/// The ENI in the node namespace, or [`Error::EniNotFound`].
pub(crate) async fn require_eni(node: &Node, eni: &EniRef) -> Result<EniInfo> {
    find_eni(node.handle(), Side::Node, eni)
        .await?
        .map(EniInfo::from)
        .ok_or_else(|| Error::EniNotFound {
            eni: eni.to_string(),
        })
}

/// The pod's link-local gateway of `family`.
pub(crate) fn link_local_gateway(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(LINK_LOCAL_GATEWAY_V4),
        Family::V6 => IpAddr::V6(LINK_LOCAL_GATEWAY_V6),
    }
}

/// Steps for `default via <gateway> dev <link>` in `table`: for a global IPv6 gateway, a `/128`
/// link route to it first (see [`crate::netlink::Route::new`]).
pub(crate) fn default_via(link: &str, gateway: IpAddr, table: u32) -> Vec<Object> {
    let mut objects = Vec::new();
    if let IpAddr::V6(v6) = gateway
        && !v6.is_unicast_link_local()
    {
        objects.push(Object::Route {
            link: link.to_owned(),
            destination: host_route(gateway),
            gateway: None,
            table,
        });
    }
    objects.push(Object::Route {
        link: link.to_owned(),
        destination: Family::of(gateway).default_route(),
        gateway: Some(gateway),
        table,
    });
    objects
}

/// The common shape of `setup` for plan-based drivers.
pub(crate) async fn apply_plan(
    mode: Mode,
    node: &Node,
    pod: &PodNetwork,
    pod_handle: &Handle,
    plan: &Plan,
    host_interface: Option<String>,
    eni: Option<&EniInfo>,
) -> Result<Wired> {
    let mut exec = Executor::new(node.handle(), Some(pod_handle.as_ref()));
    if let Some(link) = eni.and_then(|e| e.link.clone()) {
        exec = exec.knowing(link);
    }
    let report = exec.apply(plan).await?;
    let mac = exec.mac_of(Side::Pod, &pod.ifname).await;
    tracing::debug!(%mode, container = %pod.container_id, ?report, "pod wired");
    Ok(Wired {
        mode,
        interface: pod.ifname.clone(),
        mac,
        host_interface,
        report,
    })
}

/// The common shape of `teardown`: remove the plan's pod-owned objects, collecting errors.
pub(crate) async fn remove_plan(
    node: &Node,
    pod_handle: Option<&Handle>,
    plan: &Plan,
    include_shared: bool,
) -> Result<()> {
    let exec = Executor::new(node.handle(), pod_handle.map(AsRef::as_ref));
    let errors = exec.remove(plan, include_shared).await;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Teardown { errors })
    }
}

/// The common shape of `check`.
pub(crate) async fn check_plan(
    node: &Node,
    pod_handle: &Handle,
    plan: &Plan,
) -> Result<Vec<Drift>> {
    Executor::new(node.handle(), Some(pod_handle.as_ref()))
        .check(plan)
        .await
}

/// Applies `plan` (links only, on both sides), rolling back on failure.
pub(crate) async fn apply_links(node: &Node, pod_handle: &Handle, plan: &Plan) -> Result<Report> {
    Executor::new(node.handle(), Some(pod_handle.as_ref()))
        .apply(plan)
        .await
}

/// Applies only the shared steps of `plan`.
pub(crate) async fn apply_shared(node: &Node, plan: &Plan) -> Result<Report> {
    Executor::new(node.handle(), None)
        .apply(&plan.shared_only())
        .await
}

#[cfg(test)]
mod tests;
