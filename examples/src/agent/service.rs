//! The agent's state and what it does for each [`Request`]: the pool, the ENI links, the
//! endpoint records, the eBPF dataplane, DNS and the catalog of Services and policies.
//!
//! Who wires: the agent, by default (`add` and `delete`: one call per `ADD` or `DEL`). It keeps
//! netlink sockets open in the node namespace, opens the pod's socket while the pool allocates
//! the address, and saves the plugin one round trip and its own sockets: measured with
//! `cni_add_del`, this took `ADD` from ~0.8x to 0.51-0.59x of the reference `ptp` plugin's time
//! (docs/benchmarks.md). Wiring runs as tasks on the agent's runtime, each pod on its own
//! sockets, so one slow pod does not hold up the others; teardown runs on sockets served by
//! threads of their own, because a veth deletion blocks in the kernel (an RCU barrier) for
//! 10-20 ms. `DEL` keeps working when the agent is down: the plugin then tears down itself,
//! from names and the previous result. With `"wiring": "plugin"` the plugin wires between
//! `allocate` and `wired` (Terway's and the AWS VPC CNI's split), for an agent that must not
//! touch pod namespaces. Either way the agent keeps what must outlive one invocation: the
//! addresses, the records, the dataplane, DNS.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use cnikit_cloud_api::sim::SimCloud;
use cnikit_dns_autopath::{
    DnsServer,
    cluster::{ClusterTable, Pod as DnsPod},
    config::NodeDnsConfig,
};
use cnikit_ebpf_dataplane::{
    AttachMode, Dataplane, EndpointPolicy, Placement, PolicyTable, Service, ServiceKey,
    ServiceTable, hold_tc_hooks,
};
use cnikit_eni_pool::{
    AllocateRequest as PoolRequest, Allocation, FileStore, PodKey, Pool, PoolConfig, ResourceKind,
};
use cnikit_netns_setup::{
    Mode, Netns, Node, Retired, VethDriver,
    naming::host_veth_name,
    netlink::{Connector, Handle, RtConnector, RtNetlink},
    probe,
};
use ipnetwork::IpNetwork;
use tokio::sync::Mutex as AsyncMutex;

use super::{
    catalog::Catalog,
    cloud,
    config::{AgentConfig, AttachConfig, EniLinksConfig},
    endpoints::{AgentLiveness, EndpointRecord, Endpoints},
    links::{MacLookup, SharedLinks, SimVpc},
    lock,
    metrics::{AgentMetrics, Gauges},
    retire::Retirements,
    sockets::PodSockets,
};
use crate::{
    plugin::pod_network,
    protocol::{
        AddReply, AddRequest, ApiError, ApiErrorKind, AttachmentKey, CheckReply, Datapath,
        DeleteRequest, DnsSettings, DnsStats, GcReply, PodAllocation, PoolStats, ReloadReply,
        Reply, Request, StatsReply, StatusReply, WiredRequest,
    },
};

/// The agent could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is inconsistent with this node.
    #[error("agent configuration: {0}")]
    Config(String),
    /// The cloud could not be set up.
    #[error(transparent)]
    Cloud(#[from] cloud::CloudSetupError),
    /// The pool did not start.
    #[error("pool: {0}")]
    Pool(#[source] cnikit_eni_pool::Error),
    /// Records could not be read.
    #[error("records in {path}: {source}")]
    Records {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The node's network could not be prepared.
    #[error("node network: {0}")]
    Network(String),
    /// The eBPF dataplane did not load.
    #[error("eBPF dataplane: {0}")]
    Dataplane(#[source] cnikit_ebpf_dataplane::Error),
    /// DNS did not start.
    #[error("DNS: {0}")]
    Dns(#[source] cnikit_dns_autopath::Error),
}

struct DnsState {
    server: Mutex<Option<DnsServer>>,
    table: Arc<ClusterTable>,
    settings: DnsSettings,
}

/// What was last programmed from the catalog (to remove what left it).
#[derive(Debug, Default)]
struct Programmed {
    services: BTreeSet<ServiceKey>,
    dns_services: BTreeSet<(String, String)>,
    policies: BTreeSet<Ipv4Addr>,
    unresolved: Vec<String>,
}

/// The running agent (everything but the socket).
pub struct Agent {
    config: AgentConfig,
    pool: Pool,
    simulator: Option<SimCloud>,
    links: SharedLinks,
    node: Node,
    /// The node over sockets on threads of their own, for teardown (see `start_with_cloud`).
    teardown_node: Node,
    /// Pod-namespace sockets prepared while addresses are allocated.
    pod_sockets: Arc<PodSockets>,
    datapath: Datapath,
    /// Whether the kernel can make ipvlan links.
    ipvlan: bool,
    endpoints: Mutex<Endpoints>,
    liveness: AgentLiveness,
    dataplane: Option<Arc<Mutex<Dataplane>>>,
    /// Veth pairs of deleted pods being deleted after their `DEL` answered.
    retirements: Retirements,
    attach_mode: AttachMode,
    dns: Option<DnsState>,
    catalog: Mutex<Option<Catalog>>,
    programmed: Mutex<Programmed>,
    /// ENI id → its interface on the node (what `ensure` found).
    eni_names: Mutex<HashMap<String, String>>,
    /// Serialises operations on one attachment (a retried `ADD` racing its `DEL`).
    busy: Mutex<HashMap<AttachmentKey, Arc<AsyncMutex<()>>>>,
    /// When each `ADD` / `DEL` started (for the latency histograms).
    started: Mutex<HashMap<(AttachmentKey, bool), Instant>>,
    /// The agent's own metrics.
    pub metrics: AgentMetrics,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("datapath", &self.datapath)
            .field("socket", &self.config.socket)
            .finish_non_exhaustive()
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ApiErrorKind::Internal, format!("{what}: {e}"))
}

impl Agent {
    /// Starts everything `config` asks for, in the calling process's network namespace (the
    /// node's): the cloud, the pool (from its records), the ENI links, sysctls, the dataplane,
    /// DNS, and re-publishes the pods recorded by a previous run.
    ///
    /// # Errors
    /// [`StartError`] naming the part that failed; nothing is left half-started.
    pub async fn start(config: AgentConfig) -> Result<Arc<Self>, StartError> {
        let cloud = cloud::build(&config.cloud).await?;
        Self::start_with_cloud(config, cloud).await
    }

    /// As [`Agent::start`], with a cloud built by the caller (a custom [`cloud::Cloud`]
    /// provider, or a wrapper around the configured one); `config.cloud` only selects the
    /// provider's pool rules ([`cloud::apply_provider_rules`]).
    ///
    /// # Errors
    /// As [`Agent::start`].
    pub async fn start_with_cloud(
        config: AgentConfig,
        cloud: cloud::Cloud,
    ) -> Result<Arc<Self>, StartError> {
        let node_ns = Netns::current().map_err(|e| StartError::Network(e.to_string()))?;
        // Wiring uses a socket on the runtime (quick requests, no thread hops) and pod
        // sockets opened while the address is allocated; teardown uses sockets on threads of
        // their own: a veth deletion waits for an RCU barrier inside the kernel, which must
        // not stall the runtime or serialise concurrent `DEL`s.
        let pod_sockets = Arc::new(PodSockets::default());
        let node_socket =
            RtNetlink::connect(&node_ns).map_err(|e| StartError::Network(e.to_string()))?;
        let node = Node::with_handles(
            vec![Arc::new(node_socket) as Handle],
            pod_sockets.connector(),
        );
        let teardown_node = Node::connect_threaded(&node_ns, TEARDOWN_NETLINK_SOCKETS)
            .map_err(|e| StartError::Network(e.to_string()))?;
        if config.node.manage_sysctls {
            cnikit_netns_setup::sysctl::enable_forwarding(&node_ns)
                .map_err(|e| StartError::Network(format!("enabling forwarding: {e}")))?;
            for key in [
                "net/ipv4/conf/all/rp_filter",
                "net/ipv4/conf/default/rp_filter",
            ] {
                cnikit_netns_setup::sysctl::set(&node_ns, key, "0")
                    .map_err(|e| StartError::Network(format!("{key}: {e}")))?;
            }
        }
        // Probed once, here: plugins asking for ipvlan get veth where the kernel has none.
        let choice = probe::probe_and_choose(Mode::IpVlan, node.connector().as_ref())
            .await
            .map_err(|e| StartError::Network(format!("probing for ipvlan: {e}")))?;
        let ipvlan = choice.fallback_reason.is_none();
        if let Some(why) = &choice.fallback_reason {
            tracing::warn!(%why, "the node has no ipvlan; ipvlan pods are wired with veth");
        }
        let datapath = match config.node.datapath {
            Datapath::Ipvlan if !ipvlan => Datapath::Veth,
            other => other,
        };

        let mut pool_config = complete_pool_config(&config.pool, cloud.metadata.as_ref()).await?;
        cloud::apply_provider_rules(&config.cloud, &mut pool_config);
        let state_dir = &config.state_dir;
        std::fs::create_dir_all(state_dir).map_err(|e| StartError::Records {
            path: state_dir.clone(),
            source: Box::new(e),
        })?;
        let endpoints_path = state_dir.join("endpoints");
        let endpoints = Endpoints::load(&endpoints_path).map_err(|e| StartError::Records {
            path: endpoints_path.clone(),
            source: Box::new(e),
        })?;
        let liveness = AgentLiveness::default();
        for (_, record) in endpoints.iter() {
            liveness.alive(&record.pod);
        }
        let pool_dir = state_dir.join("pool");
        let store = FileStore::open(&pool_dir).map_err(|e| StartError::Records {
            path: pool_dir.clone(),
            source: Box::new(e),
        })?;
        let pool = Pool::builder(pool_config)
            .cloud(Arc::clone(&cloud.provider))
            .store(Arc::new(store))
            .liveness(Arc::new(liveness.clone()))
            .start()
            .await
            .map_err(StartError::Pool)?;

        let node_handle = RtConnector
            .connect(&node_ns)
            .map_err(|e| StartError::Network(e.to_string()))?;
        let links: SharedLinks = match &config.node.eni_links {
            EniLinksConfig::Mac { wait } => Arc::new(MacLookup::new(node_handle, *wait)),
            EniLinksConfig::SimVpc { vpc_netns } => {
                let vpc = open_or_create_vpc(vpc_netns)?;
                Arc::new(
                    SimVpc::new(node_handle, vpc)
                        .map_err(|e| StartError::Network(format!("simulated VPC: {e}")))?,
                )
            }
        };

        let attach_mode = match config.dataplane.attach {
            AttachConfig::Auto => AttachMode::Auto,
            AttachConfig::Tcx => AttachMode::Tcx,
            AttachConfig::Clsact => AttachMode::Clsact,
        };
        let dataplane = if config.dataplane.enabled {
            let mut builder = Dataplane::builder();
            if let Some(dir) = &config.dataplane.pin_dir {
                builder = builder.pin_dir(dir);
            }
            if let Some(c) = config.dataplane.capacity {
                builder = builder.capacity(c.into());
            }
            let mut dp = builder.load().map_err(StartError::Dataplane)?;
            let node_addresses = config.dataplane.node_addresses.clone().unwrap_or_else(|| {
                config
                    .node
                    .node_ips
                    .iter()
                    .filter_map(|ip| match ip {
                        IpAddr::V4(v4) => Some(*v4),
                        IpAddr::V6(_) => None,
                    })
                    .collect()
            });
            dp.set_node_addresses(&node_addresses)
                .map_err(StartError::Dataplane)?;
            Some(Arc::new(Mutex::new(dp)))
        } else {
            None
        };

        let dns = match &config.dns {
            Some(dns) => Some(start_dns(dns.clone(), &node).await?),
            None => None,
        };

        let retirements = Retirements::new(teardown_node.clone());
        let agent = Arc::new(Self {
            pool,
            simulator: cloud.simulator,
            links,
            node,
            teardown_node,
            pod_sockets,
            datapath,
            ipvlan,
            endpoints: Mutex::new(endpoints),
            liveness,
            dataplane,
            retirements,
            attach_mode,
            dns,
            catalog: Mutex::new(None),
            programmed: Mutex::new(Programmed::default()),
            eni_names: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashMap::new()),
            started: Mutex::new(HashMap::new()),
            metrics: AgentMetrics::default(),
            config,
        });
        agent.republish().await;
        agent.delete_leftover_pairs().await;
        agent.drain_released().await;
        if agent.config.catalog.is_some()
            && let Err(e) = agent.reload()
        {
            tracing::warn!(error = %e.message, "catalog not applied at start");
        }
        tracing::info!(
            datapath = %agent.datapath,
            recorded = lock(&agent.endpoints).len(),
            start = ?agent.pool.start_report(),
            "agent ready"
        );
        Ok(agent)
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The wiring mode pods get unless the plugin insists.
    #[must_use]
    pub fn datapath(&self) -> Datapath {
        self.datapath
    }

    /// The pool.
    #[must_use]
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The embedded simulator, if the cloud is one.
    #[must_use]
    pub fn simulator(&self) -> Option<&SimCloud> {
        self.simulator.as_ref()
    }

    /// Releases what plugins queued while the agent was down (`DEL` without an agent); returns
    /// how many addresses went back. Keyed by attachment: an address another pod holds now is
    /// never touched.
    pub async fn drain_released(&self) -> usize {
        let mut released = 0;
        for (file, key) in crate::protocol::spooled_releases(&self.config.socket) {
            let _guard = self.serialise(&key).await;
            match self.release(&key).await {
                Ok(r) => {
                    released += usize::from(r);
                    if let Err(e) = std::fs::remove_file(&file) {
                        tracing::warn!(file = %file.display(), error = %e, "removing a spooled release");
                    }
                }
                Err(e) => tracing::warn!(pod = %key, error = %e.message, "spooled release"),
            }
        }
        if released > 0 {
            tracing::info!(
                released,
                "released addresses of pods deleted while the agent was down"
            );
        }
        released
    }

    /// Re-attaches the dataplane and re-publishes DNS for the pods of the records.
    async fn republish(&self) {
        let records: Vec<(AttachmentKey, EndpointRecord)> = lock(&self.endpoints)
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        for (key, record) in records {
            if let Some(iface) = &record.host_interface {
                match self.node.handle().link_by_name(iface).await {
                    Ok(Some(_)) => {
                        if let Err(e) = self.attach_dataplane(&record) {
                            tracing::warn!(pod = %key, error = %e.message, "re-attaching the dataplane");
                        }
                    }
                    Ok(None) => {
                        tracing::warn!(pod = %key, %iface, "recorded pod's interface is gone; waiting for its DEL or GC");
                    }
                    Err(e) => tracing::warn!(pod = %key, error = %e, "reading links"),
                }
            }
            self.publish_dns(&record);
        }
    }

    /// Deletes (in the background) the veth pairs an earlier run retired but did not delete:
    /// it was killed between a `DEL`'s answer and the deletion, and the pod's namespace is
    /// still there.
    async fn delete_leftover_pairs(&self) {
        let recorded: Vec<String> = lock(&self.endpoints)
            .iter()
            .filter_map(|(_, r)| r.host_interface.clone())
            .collect();
        let keep: Vec<&str> = recorded.iter().map(String::as_str).collect();
        match Retired::leftovers(&self.node, &keep).await {
            Ok(leftovers) => {
                for retired in leftovers {
                    tracing::info!(link = ?retired.host_interface(), "deleting a veth pair an earlier run retired");
                    self.retirements.start(retired, drop);
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing veth pairs left by an earlier run"),
        }
    }

    /// Serves one request.
    ///
    /// # Errors
    /// The [`ApiError`] to send back.
    pub async fn handle(&self, request: Request) -> Result<Reply, ApiError> {
        let result = match request {
            Request::Add(req) => {
                let _guard = self.serialise(&req.allocate.attachment).await;
                self.add(req).await.map(Reply::Added)
            }
            Request::Delete(req) => {
                let _guard = self.serialise(&req.attachment).await;
                self.delete(req).await.map(Reply::Deleted)
            }
            Request::Allocate(req) => {
                let _guard = self.serialise(&req.attachment).await;
                self.allocate(req).await.map(Reply::Allocated)
            }
            Request::Wired(req) => {
                let _guard = self.serialise(&req.attachment).await;
                self.wired(&req).map(|()| Reply::Wired)
            }
            Request::Detach(key) => {
                let _guard = self.serialise(&key).await;
                self.detach(&key).await.map(Reply::Detached)
            }
            Request::Release(key) => {
                let _guard = self.serialise(&key).await;
                self.release(&key).await.map(Reply::Released)
            }
            Request::Check(key) => self.check(&key).await.map(Reply::Checked),
            Request::Gc { network, valid } => Ok(Reply::Gc(self.gc(&network, &valid).await)),
            Request::Status => Ok(Reply::Status(self.status())),
            Request::Stats => Ok(Reply::Stats(self.stats())),
            Request::Reload => self.reload().map(Reply::Reloaded),
        };
        let counter = if result.is_ok() {
            &self.metrics.requests_ok
        } else {
            &self.metrics.requests_failed
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    async fn serialise(&self, key: &AttachmentKey) -> tokio::sync::OwnedMutexGuard<()> {
        let m = Arc::clone(lock(&self.busy).entry(key.clone()).or_default());
        m.lock_owned().await
    }

    /// `ADD` in one call: allocate, wire the pod's namespace with the agent's own netlink
    /// handles (no per-`ADD` sockets in the node namespace, one round trip for the plugin),
    /// then record, attach and publish as `wired` does. Every failure after the allocation
    /// undoes what was done and gives the address back.
    async fn add(&self, req: AddRequest) -> Result<AddReply, ApiError> {
        let attachment = req.allocate.attachment.clone();
        let network = req.allocate.network.clone();
        let path = req.allocate.netns.clone().unwrap_or_default();
        // Checked first: a namespace that cannot be used costs no address.
        let netns = Netns::from_path(&path).map_err(|e| {
            ApiError::new(
                ApiErrorKind::InvalidNetns,
                format!(
                    "{attachment}: {} is not a usable network namespace: {e}",
                    path.display()
                ),
            )
        })?;
        let started = Instant::now();
        // The pod's socket is opened while the pool allocates (on a blocking thread: it
        // starts one), and used by the wiring through `pod_sockets`. (Making the veth pair
        // here too, `VethDriver::prepare`, measured no better: the pool's commit is shorter
        // than the pair's creation and the programs' attach.)
        let sockets = Arc::clone(&self.pod_sockets);
        let target = netns.clone();
        let opened = tokio::task::spawn_blocking(move || sockets.prepare(&target));
        let (reserved, opened) = tokio::join!(self.reserve(&req.allocate), opened);
        let failure = match opened {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(error) = failure {
            // The wiring opens its own then.
            tracing::debug!(pod = %attachment, %error, "preparing the pod's socket");
        }
        let (reserved, datapath) = reserved.inspect_err(|_| self.pod_sockets.discard(&netns))?;
        let allocated = started.elapsed();
        // The ENI's interface: known once any pod used the ENI, and then its link work (a
        // lookup; in simulation the VPC's route to the address) runs beside the wiring.
        let known = lock(&self.eni_names).get(&reserved.eni_id).cloned();
        let overlap_link = known.is_some();
        let linked = match known {
            Some(name) => Ok(name),
            None => self.link(&reserved).await,
        };
        let eni_interface = match linked {
            Ok(name) => name,
            Err(e) => {
                self.pod_sockets.discard(&netns);
                let error = internal(&format!("{attachment}: ENI link"), e);
                return Err(self.undo_add(&attachment, None, error).await);
            }
        };
        let alloc = self.pod_allocation(&network, &reserved, eni_interface, datapath);
        let pod = pod_network(
            &attachment.container_id,
            &attachment.ifname,
            &alloc,
            req.mtu,
            Some(netns),
        );
        if alloc.datapath == Datapath::Veth {
            // The same pod deleted a moment ago: its old pair (same name) goes first.
            let host = host_veth_name(&attachment.container_id, &attachment.ifname);
            self.retirements.wait_for(&host).await;
        }
        let driver = alloc.datapath.mode().driver();
        let (setup, linked) = tokio::join!(driver.setup(&self.node, &pod), async {
            if overlap_link {
                self.link(&reserved).await.map(drop)
            } else {
                Ok(())
            }
        });
        if let Some(ns) = &pod.netns {
            self.pod_sockets.discard(ns);
        }
        let wired = match (setup, linked) {
            (Ok(w), Ok(())) => w,
            (Err(e), linked) => {
                // Setup rolled back what it created; the address goes back.
                let mut error = wire_error(&attachment, &e, "wiring the pod");
                if let Err(l) = linked {
                    error.message.push_str(&format!("; ENI link: {l}"));
                }
                return Err(self.undo_add(&attachment, None, error).await);
            }
            (Ok(_), Err(e)) => {
                let error = internal(&format!("{attachment}: ENI link"), e);
                let wired = Some((&pod, alloc.datapath.mode()));
                return Err(self.undo_add(&attachment, wired, error).await);
            }
        };
        let record = WiredRequest {
            network,
            attachment: attachment.clone(),
            netns: Some(path),
            datapath: alloc.datapath,
            host_interface: wired.host_interface.clone(),
        };
        let wiring_done = started.elapsed();
        if let Err(e) = self.wired(&record) {
            let wired = Some((&pod, alloc.datapath.mode()));
            return Err(self.undo_add(&attachment, wired, e).await);
        }
        tracing::debug!(
            pod = %attachment,
            allocate_us = allocated.as_micros(),
            wire_us = (wiring_done - allocated).as_micros(),
            publish_us = (started.elapsed() - wiring_done).as_micros(),
            "added"
        );
        Ok(AddReply {
            allocation: alloc,
            interface: wired.interface,
            mac: wired.mac.map(|m| m.to_string()),
            host_interface: wired.host_interface,
        })
    }

    /// Undoes a failed `add`: tears the namespace down (when it was wired) and releases;
    /// what could not be undone is added to `error`'s message.
    async fn undo_add(
        &self,
        attachment: &AttachmentKey,
        wired: Option<(&cnikit_netns_setup::PodNetwork, Mode)>,
        mut error: ApiError,
    ) -> ApiError {
        if let Some((pod, mode)) = wired {
            let torn = mode.driver().teardown(&self.teardown_node, pod).await;
            if let Err(e) = &torn {
                error
                    .message
                    .push_str(&format!("; undoing the wiring: {e}"));
            }
            let host = host_veth_name(&pod.container_id, &pod.ifname);
            if let Err(e) = self.let_go_of_programs(&host, torn.is_ok()) {
                error.message.push_str(&format!("; the dataplane: {e}"));
            }
        }
        if let Err(e) = self.release(attachment).await {
            error
                .message
                .push_str(&format!("; releasing the address: {}", e.message));
        }
        error
    }

    /// `DEL` in one call: unpublish, tear down the namespace, then release. A veth pod whose
    /// namespace is there is retired (unwired at once: rules gone, the pair down, the pod end
    /// renamed) and its pair deleted after the answer ([`Retirements`]): the deletion waits out
    /// the kernel's RCU barrier, 10-20 ms. The dataplane's attachment on the pod's veth is let
    /// go of after the veth is gone (it went with it), which spares the RCU grace period a
    /// detach from a live interface waits for.
    async fn delete(&self, req: DeleteRequest) -> Result<bool, ApiError> {
        let key = &req.attachment;
        lock(&self.started).insert((key.clone(), false), Instant::now());
        let record = self.unpublish(key, Unpublish::KeepAttachment)?;
        let torn = match self.find(key) {
            // The namespace may be gone already; teardown then cleans the node side.
            Some(alloc) => {
                let netns = req.netns.as_deref().and_then(|p| Netns::from_path(p).ok());
                self.tear_down(key, &alloc, record.as_ref(), netns, Deletion::AfterAnswer)
                    .await
            }
            None => {
                // Nothing was torn down: the programs are detached, not forgotten.
                if let Some(iface) = record.as_ref().and_then(|r| r.host_interface.as_deref())
                    && let Err(e) = self.let_go_of_programs(iface, false)
                {
                    tracing::warn!(pod = %key, error = %e, "detaching the dataplane");
                }
                Ok(())
            }
        };
        if let Err(e) = torn {
            // The address stays held: a retried `DEL` tears down again, then releases.
            return Err(wire_error(key, &e, "tearing down"));
        }
        self.release(key).await
    }

    fn find(&self, key: &AttachmentKey) -> Option<Allocation> {
        self.pool
            .allocations()
            .into_iter()
            .find(|a| a.pod.container_id == key.container_id && a.pod.interface == key.ifname)
    }

    async fn allocate(
        &self,
        req: crate::protocol::AllocateRequest,
    ) -> Result<PodAllocation, ApiError> {
        let (alloc, datapath) = self.reserve(&req).await?;
        let eni_interface = match self.link(&alloc).await {
            Ok(name) => name,
            Err(e) => {
                // Nothing was wired; the address goes back.
                if let Err(r) = self.pool.release(&alloc.pod).await {
                    tracing::warn!(pod = %req.attachment, error = %r, "releasing after a link failure");
                }
                return Err(internal(&format!("{}: ENI link", req.attachment), e));
            }
        };
        Ok(self.pod_allocation(&req.network, &alloc, eni_interface, datapath))
    }

    /// The pool's part of `allocate`: an address (or ENI) for the pod, and the datapath.
    async fn reserve(
        &self,
        req: &crate::protocol::AllocateRequest,
    ) -> Result<(Allocation, Datapath), ApiError> {
        let pod = PodKey::new(
            &req.namespace,
            &req.name,
            &req.attachment.container_id,
            &req.attachment.ifname,
        );
        if let Some(existing) = self.find(&req.attachment)
            && existing.pod != pod
        {
            return Err(ApiError::new(
                ApiErrorKind::InvalidRequest,
                format!(
                    "{} is already held by pod {}/{}",
                    req.attachment, existing.pod.namespace, existing.pod.name
                ),
            ));
        }
        let datapath = self.datapath_for(req.datapath);
        lock(&self.started).insert((req.attachment.clone(), true), Instant::now());
        self.liveness.alive(&pod);
        let request = match datapath.resource() {
            ResourceKind::SharedIp => PoolRequest::shared_ip(pod.clone()),
            _ => PoolRequest::exclusive_eni(pod.clone()),
        }
        .with_timeout(Duration::from_millis(req.timeout_ms));
        match self.pool.allocate(&request).await {
            Ok(a) => Ok((a, datapath)),
            Err(e) => {
                self.liveness.forget(&pod);
                let kind = match &e {
                    cnikit_eni_pool::Error::Exhausted { .. } => ApiErrorKind::Exhausted,
                    cnikit_eni_pool::Error::InvalidRequest(_)
                    | cnikit_eni_pool::Error::KindMismatch { .. } => ApiErrorKind::InvalidRequest,
                    _ => ApiErrorKind::Internal,
                };
                Err(ApiError::new(kind, format!("{}: {e}", req.attachment)))
            }
        }
    }

    /// The datapath for a request: the one asked for (veth for ipvlan where the kernel has
    /// none), else the agent's.
    fn datapath_for(&self, asked: Option<Datapath>) -> Datapath {
        match asked {
            Some(Datapath::Ipvlan) if !self.ipvlan => Datapath::Veth,
            Some(d) => d,
            None => self.datapath,
        }
    }

    /// The links' part of `allocate`: the ENI's interface on the node (and, in simulation,
    /// the VPC's route to the address); remembered per ENI.
    async fn link(&self, alloc: &Allocation) -> Result<String, super::links::LinkError> {
        let name = self.links.ensure(alloc).await?;
        self.remember_eni(alloc, &name).await;
        Ok(name)
    }

    /// Remembers the node interface of `alloc`'s ENI. The first time, when pods share the ENI
    /// and the dataplane runs, it also holds the tc hooks there: the ENI outlives its pods, and
    /// a qdisc on it keeps the kernel's tc hooks on, so that a pod's attach and deletion never
    /// switch them (patching every CPU's code) when the node's pod count crosses zero.
    async fn remember_eni(&self, alloc: &Allocation, name: &str) {
        let first = lock(&self.eni_names)
            .insert(alloc.eni_id.clone(), name.to_owned())
            .is_none();
        if !(first && self.dataplane.is_some() && alloc.kind == ResourceKind::SharedIp) {
            return;
        }
        let iface = name.to_owned();
        let held = tokio::task::spawn_blocking(move || hold_tc_hooks(&iface))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(error) = held {
            tracing::warn!(eni = %alloc.eni_id, interface = name, %error, "holding the tc hooks");
        }
    }

    /// The node interface of `alloc`'s ENI: known from this run, else from the record, else
    /// looked up (or re-made, in simulation).
    async fn eni_interface(&self, alloc: &Allocation, record: Option<&EndpointRecord>) -> String {
        if let Some(name) = lock(&self.eni_names).get(&alloc.eni_id) {
            return name.clone();
        }
        if let Some(name) = record.and_then(|r| r.eni_interface.clone()) {
            return name;
        }
        match self.links.ensure(alloc).await {
            Ok(name) => {
                self.remember_eni(alloc, &name).await;
                name
            }
            Err(e) => {
                tracing::warn!(eni = %alloc.eni_id, error = %e, "ENI interface unknown");
                alloc.eni_id.chars().take(15).collect()
            }
        }
    }

    fn pod_allocation(
        &self,
        network: &str,
        alloc: &Allocation,
        eni_interface: String,
        datapath: Datapath,
    ) -> PodAllocation {
        let node = &self.config.node;
        let mut p = PodAllocation {
            network: network.to_owned(),
            namespace: alloc.pod.namespace.clone(),
            name: alloc.pod.name.clone(),
            ipv4: alloc.ipv4,
            vswitch_cidr: alloc.vswitch_cidr,
            gateway: alloc.gateway,
            kind: alloc.kind,
            eni_id: alloc.eni_id.clone(),
            mac: alloc.mac.clone(),
            eni_interface,
            route_table: alloc.route_table_id,
            datapath,
            mtu: node.mtu,
            service_cidrs: node.service_cidrs.clone(),
            host_stack_cidrs: node.host_stack_cidrs.clone(),
            node_ips: node.node_ips.clone(),
            dns: None,
        };
        if let Some(dns) = &self.dns {
            let mut settings = dns.settings.clone();
            let zone = settings.search.first().cloned().unwrap_or_default();
            settings
                .search
                .insert(0, format!("{}.svc.{zone}", alloc.pod.namespace));
            settings.search.insert(1, format!("svc.{zone}"));
            p.dns = Some(settings);
        }
        p
    }

    fn wired(&self, req: &WiredRequest) -> Result<(), ApiError> {
        let alloc = self.find(&req.attachment).ok_or_else(|| {
            ApiError::new(
                ApiErrorKind::NotFound,
                format!("{} holds no address (was it released?)", req.attachment),
            )
        })?;
        let record = EndpointRecord {
            pod: alloc.pod.clone(),
            network: req.network.clone(),
            ipv4: alloc.ipv4,
            datapath: req.datapath,
            host_interface: req.host_interface.clone(),
            netns: req.netns.clone(),
            eni_interface: lock(&self.eni_names).get(&alloc.eni_id).cloned(),
        };
        lock(&self.endpoints)
            .insert(&req.attachment, record.clone())
            .map_err(|e| internal("recording the endpoint", e))?;
        self.attach_dataplane(&record)?;
        self.publish_dns(&record);
        self.apply_catalog();
        if let Some(t) = lock(&self.started).remove(&(req.attachment.clone(), true)) {
            self.metrics.add.observe(t.elapsed());
        }
        Ok(())
    }

    fn attach_dataplane(&self, record: &EndpointRecord) -> Result<(), ApiError> {
        let (Some(dp), Some(iface)) = (&self.dataplane, &record.host_interface) else {
            return Ok(());
        };
        if record.datapath != Datapath::Veth {
            return Ok(());
        }
        self.attach_programs(iface)?;
        lock(dp)
            .add_endpoint(record.ipv4)
            .map_err(|e| internal("registering the endpoint", e))?;
        Ok(())
    }

    /// Attaches the dataplane's programs to a pod's node-side veth, unless they are there (a
    /// retried `ADD`, or a restart with pinned links).
    fn attach_programs(&self, iface: &str) -> Result<(), ApiError> {
        let Some(dp) = &self.dataplane else {
            return Ok(());
        };
        let mut dp = lock(dp);
        if dp.attachments().any(|(name, ..)| name == iface) {
            return Ok(());
        }
        dp.attach_endpoint(iface, Placement::NodeSide, self.attach_mode)
            .map_err(|e| internal(&format!("attaching the dataplane to {iface}"), e))?;
        Ok(())
    }

    /// Lets go of the dataplane's programs on a pod's veth (see [`let_go_of_programs`]).
    fn let_go_of_programs(
        &self,
        iface: &str,
        deleted: bool,
    ) -> Result<(), cnikit_ebpf_dataplane::Error> {
        self.dataplane
            .as_ref()
            .map_or(Ok(()), |dp| let_go_of_programs(dp, iface, deleted))
    }

    fn publish_dns(&self, record: &EndpointRecord) {
        if let Some(dns) = &self.dns {
            let pod = DnsPod {
                namespace: record.pod.namespace.clone(),
                name: record.pod.name.clone(),
                ip: IpAddr::V4(record.ipv4),
            };
            if let Err(e) = dns.table.upsert_pod(&pod) {
                tracing::warn!(pod = %record.pod.name, error = %e, "publishing to DNS");
            }
        }
    }

    /// Unpublishes an endpoint: records, dataplane, DNS, catalog. Keeps going; logs errors.
    fn unpublish(
        &self,
        key: &AttachmentKey,
        attachment: Unpublish,
    ) -> Result<Option<EndpointRecord>, ApiError> {
        let record = lock(&self.endpoints)
            .remove(key)
            .map_err(|e| internal("forgetting the endpoint", e))?;
        if let Some(record) = &record {
            if let Some(dp) = &self.dataplane {
                let mut dp = lock(dp);
                if attachment == Unpublish::Detach
                    && let Some(iface) = &record.host_interface
                    && let Err(e) = dp.detach_interface(iface)
                {
                    tracing::warn!(pod = %key, error = %e, "detaching the dataplane");
                }
                if let Err(e) = dp.clear_policy(record.ipv4) {
                    tracing::warn!(pod = %key, error = %e, "clearing the policy");
                }
                if let Err(e) = dp.remove_endpoint(record.ipv4) {
                    tracing::warn!(pod = %key, error = %e, "removing the endpoint");
                }
            }
            if let Some(dns) = &self.dns {
                dns.table.remove_pod(IpAddr::V4(record.ipv4));
            }
            lock(&self.programmed).policies.remove(&record.ipv4);
            self.apply_catalog();
        }
        Ok(record)
    }

    async fn detach(&self, key: &AttachmentKey) -> Result<Option<PodAllocation>, ApiError> {
        lock(&self.started).insert((key.clone(), false), Instant::now());
        let record = self.unpublish(key, Unpublish::Detach)?;
        let Some(alloc) = self.find(key) else {
            return Ok(None);
        };
        Ok(Some(
            self.recorded_allocation(&alloc, record.as_ref()).await,
        ))
    }

    /// What `alloc` was wired with: the pod's record when there is one, else the agent's
    /// defaults.
    async fn recorded_allocation(
        &self,
        alloc: &Allocation,
        record: Option<&EndpointRecord>,
    ) -> PodAllocation {
        let eni_interface = self.eni_interface(alloc, record).await;
        let datapath = record.map_or(self.datapath, |r| r.datapath);
        let network = record.map_or("", |r| r.network.as_str());
        self.pod_allocation(network, alloc, eni_interface, datapath)
    }

    /// Tears down `alloc`'s wiring (`netns` `None`: the namespace is gone, the node side is
    /// cleaned by name), then lets go of the dataplane's programs on the pod's veth: forgotten
    /// when the veth went with the teardown, detached when the teardown failed. With
    /// [`Deletion::AfterAnswer`], a veth pod in its namespace is retired instead (unwired at
    /// once) and its pair deleted in the background ([`Retirements`]).
    async fn tear_down(
        &self,
        key: &AttachmentKey,
        alloc: &Allocation,
        record: Option<&EndpointRecord>,
        netns: Option<Netns>,
        deletion: Deletion,
    ) -> cnikit_netns_setup::Result<()> {
        let pa = self.recorded_allocation(alloc, record).await;
        let later = deletion == Deletion::AfterAnswer && netns.is_some();
        let pod = pod_network(&key.container_id, &key.ifname, &pa, None, netns);
        if later && pa.datapath == Datapath::Veth {
            let retired = VethDriver.retire(&self.node, &pod).await?;
            let programs = self
                .dataplane
                .clone()
                .zip(record.and_then(|r| r.host_interface.clone()));
            let pod_key = key.clone();
            self.retirements.start(retired, move |deleted| {
                if let Some((dp, iface)) = programs
                    && let Err(e) = let_go_of_programs(&dp, &iface, deleted)
                {
                    tracing::warn!(pod = %pod_key, error = %e, "letting go of the dataplane");
                }
            });
            return Ok(());
        }
        let torn = pa
            .datapath
            .mode()
            .driver()
            .teardown(&self.teardown_node, &pod)
            .await;
        if let Some(iface) = record.and_then(|r| r.host_interface.as_deref())
            && let Err(e) = self.let_go_of_programs(iface, torn.is_ok())
        {
            tracing::warn!(pod = %key, error = %e, "letting go of the dataplane");
        }
        torn
    }

    async fn release(&self, key: &AttachmentKey) -> Result<bool, ApiError> {
        // A `DEL` whose `detach` was lost (agent restarted between the two) still unpublishes.
        self.unpublish(key, Unpublish::Detach)?;
        let Some(alloc) = self.find(key) else {
            lock(&self.started).remove(&(key.clone(), false));
            return Ok(false);
        };
        let released = self
            .pool
            .release(&alloc.pod)
            .await
            .map_err(|e| internal(&format!("{key}: releasing"), e))?;
        self.liveness.gone(&alloc.pod);
        if let Err(e) = self.links.released(&alloc).await {
            tracing::warn!(pod = %key, error = %e, "ENI link cleanup");
        }
        if let Some(t) = lock(&self.started).remove(&(key.clone(), false)) {
            self.metrics.del.observe(t.elapsed());
        }
        Ok(released.is_some())
    }

    async fn check(&self, key: &AttachmentKey) -> Result<CheckReply, ApiError> {
        let alloc = self.find(key).ok_or_else(|| {
            ApiError::new(ApiErrorKind::NotFound, format!("{key} holds no address"))
        })?;
        let record = lock(&self.endpoints).get(key).cloned();
        let eni_interface = self.eni_interface(&alloc, record.as_ref()).await;
        let datapath = record.as_ref().map_or(self.datapath, |r| r.datapath);
        let network = record
            .as_ref()
            .map_or("", |r| r.network.as_str())
            .to_owned();
        let dataplane_attached = match (&self.dataplane, &record) {
            (Some(dp), Some(r)) if r.datapath == Datapath::Veth => {
                r.host_interface.as_ref().map(|iface| {
                    lock(dp)
                        .attachments()
                        .any(|(name, ..)| name == iface.as_str())
                })
            }
            _ => None,
        };
        Ok(CheckReply {
            allocation: self.pod_allocation(&network, &alloc, eni_interface, datapath),
            wired: record.is_some(),
            dataplane_attached,
        })
    }

    async fn gc(&self, network: &str, valid: &[AttachmentKey]) -> GcReply {
        self.drain_released().await;
        let valid: BTreeSet<&AttachmentKey> = valid.iter().collect();
        let mut reply = GcReply::default();
        for alloc in self.pool.allocations() {
            let key = AttachmentKey::new(&alloc.pod.container_id, &alloc.pod.interface);
            let record = lock(&self.endpoints).get(&key).cloned();
            let ours = record.as_ref().is_none_or(|r| r.network == network);
            if !ours || valid.contains(&key) {
                reply.kept += 1;
                continue;
            }
            let _guard = self.serialise(&key).await;
            // The pod's namespace is gone or forgotten: remove the node side by name.
            if let Err(e) = self.unpublish(&key, Unpublish::KeepAttachment) {
                reply.errors.push(format!("{key}: {}", e.message));
            }
            if let Err(e) = self
                .tear_down(&key, &alloc, record.as_ref(), None, Deletion::Now)
                .await
            {
                reply.errors.push(format!("{key}: teardown: {e}"));
            }
            match self.pool.release(&alloc.pod).await {
                Ok(_) => {
                    self.liveness.gone(&alloc.pod);
                    if let Err(e) = self.links.released(&alloc).await {
                        reply.errors.push(format!("{key}: {e}"));
                    }
                    reply.released.push(key);
                }
                Err(e) => reply.errors.push(format!("{key}: releasing: {e}")),
            }
        }
        reply
    }

    fn status(&self) -> StatusReply {
        let m = self.pool.metrics();
        let s = m.shared;
        let room = s.capacity > s.in_use + s.cooling;
        let ready = s.idle > 0 || (room && m.blocker.is_none());
        StatusReply {
            ready,
            reason: (!ready).then(|| {
                m.blocker.map_or_else(
                    || {
                        format!(
                            "no idle address and no room ({} of {} in use)",
                            s.in_use, s.capacity
                        )
                    },
                    |b| b.to_string(),
                )
            }),
            idle: s.idle,
            in_use: s.in_use,
            capacity: s.capacity,
        }
    }

    /// Counters of everything.
    #[must_use]
    pub fn stats(&self) -> StatsReply {
        let m = self.pool.metrics();
        let mut pool = PoolStats {
            idle: m.shared.idle,
            in_use: m.shared.in_use,
            cooling: m.shared.cooling,
            being_added: m.shared.being_added,
            capacity: m.shared.capacity,
            enis_ready: m.enis.ready,
            allocations: m.allocations,
            failures: m.allocation_failures,
            ..PoolStats::default()
        };
        for ((action, outcome), n) in &m.cloud_calls {
            pool.cloud_calls.insert(format!("{action}/{outcome}"), *n);
        }
        let us = |q: f64| {
            m.allocation_latency
                .quantile_upper_bound(q)
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        };
        pool.allocate_p50_us = us(0.5);
        pool.allocate_p99_us = us(0.99);
        let programmed = lock(&self.programmed);
        StatsReply {
            pool,
            endpoints: lock(&self.endpoints).len(),
            services: programmed.services.len(),
            policies: programmed.policies.len(),
            attachments: self
                .dataplane
                .as_ref()
                .map_or(0, |dp| lock(dp).attachments().count()),
            retiring: self.retirements.count(),
            dns: self.dns.as_ref().and_then(|d| {
                let s = lock(&d.server).as_ref()?.stats();
                Some(DnsStats {
                    queries: s.queries(),
                    autopath_walks: s.autopath_walks,
                    autopath_successes: s.autopath_successes,
                    cache_hits: s.cache_hits,
                    cluster_answers: s.cluster_answers,
                    upstream_queries: s.upstream_queries,
                })
            }),
        }
    }

    /// The Prometheus text of the agent.
    #[must_use]
    pub fn prometheus(&self) -> String {
        let stats = self.stats();
        super::metrics::render(
            &self.metrics,
            &self.pool.metrics(),
            Gauges {
                endpoints: stats.endpoints,
                services: stats.services,
                policies: stats.policies,
                dns_queries: stats.dns.map(|d| d.queries),
            },
        )
    }

    /// Re-reads the catalog file and applies it.
    ///
    /// # Errors
    /// When there is no catalog configured or the file is unreadable or invalid (what was
    /// programmed stays).
    pub fn reload(&self) -> Result<ReloadReply, ApiError> {
        let Some(catalog_config) = &self.config.catalog else {
            return Err(ApiError::new(
                ApiErrorKind::InvalidRequest,
                "no catalog is configured",
            ));
        };
        let catalog = match std::fs::read_to_string(&catalog_config.path) {
            Ok(text) => Catalog::from_json(&text).map_err(|e| {
                ApiError::new(
                    ApiErrorKind::InvalidRequest,
                    format!("{}: {e}", catalog_config.path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Catalog::default(),
            Err(e) => return Err(internal(&catalog_config.path.display().to_string(), e)),
        };
        *lock(&self.catalog) = Some(catalog);
        self.apply_catalog();
        let p = lock(&self.programmed);
        Ok(ReloadReply {
            services: p.services.len(),
            policies: p.policies.len(),
            unresolved: p.unresolved.clone(),
        })
    }

    /// Programs the catalog against the pods wired now; removes what left it.
    fn apply_catalog(&self) {
        let Some(catalog) = lock(&self.catalog).clone() else {
            return;
        };
        let pods = lock(&self.endpoints).pod_addresses();
        let desired = catalog.resolve(&pods);
        let mut programmed = lock(&self.programmed);
        if let Some(dp) = &self.dataplane {
            let mut dp = lock(dp);
            let keys: BTreeSet<ServiceKey> = desired.services.iter().map(|s| s.key).collect();
            for s in &desired.services {
                if let Err(e) = dp.upsert_service(s) {
                    tracing::warn!(service = ?s.key, error = %e, "programming a service");
                }
            }
            for gone in programmed.services.difference(&keys) {
                if let Err(e) = dp.remove_service(gone) {
                    tracing::warn!(service = ?gone, error = %e, "removing a service");
                }
            }
            programmed.services = keys;
            let local: BTreeSet<Ipv4Addr> = pods.values().copied().collect();
            let mut policies = BTreeSet::new();
            for (addr, policy) in &desired.policies {
                if let Err(e) = dp.set_policy(*addr, policy) {
                    tracing::warn!(%addr, error = %e, "programming a policy");
                } else {
                    policies.insert(*addr);
                }
            }
            for gone in programmed.policies.difference(&policies) {
                if local.contains(gone)
                    && let Err(e) = dp.set_policy(*gone, &EndpointPolicy::default())
                {
                    tracing::warn!(addr = %gone, error = %e, "clearing a policy");
                }
            }
            programmed.policies = policies;
        }
        if let Some(dns) = &self.dns {
            let mut names = BTreeSet::new();
            for s in &desired.dns_services {
                match dns.table.upsert_service(s) {
                    Ok(()) => {
                        names.insert((s.namespace.clone(), s.name.clone()));
                    }
                    Err(e) => tracing::warn!(service = %s.name, error = %e, "publishing a Service"),
                }
            }
            for (ns, name) in programmed.dns_services.difference(&names) {
                dns.table.remove_service(ns, name);
            }
            programmed.dns_services = names;
        }
        programmed.unresolved = desired.unresolved;
    }

    /// Services programmed now (for reports).
    #[must_use]
    pub fn services(&self) -> Vec<Service> {
        self.dataplane.as_ref().map_or_else(Vec::new, |dp| {
            let dp = lock(dp);
            dp.service_keys()
                .into_iter()
                .filter_map(|k| dp.service(&k))
                .collect()
        })
    }

    /// Stops the pool; detaches the dataplane unless it is pinned; stops DNS.
    pub async fn shutdown(&self) {
        self.retirements.wait_all(Duration::from_secs(10)).await;
        self.pool.shutdown().await;
        if let Some(dp) = &self.dataplane
            && self.config.dataplane.pin_dir.is_none()
            && let Err(e) = lock(dp).detach_all()
        {
            tracing::warn!(error = %e, "detaching the dataplane");
        }
    }

    /// Stops DNS (it owns sockets and tasks).
    pub async fn stop_dns(&self) {
        let server = self.dns.as_ref().and_then(|d| lock(&d.server).take());
        if let Some(server) = server {
            server.shutdown().await;
        }
    }
}

/// When a teardown deletes a veth pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deletion {
    /// Before the teardown returns.
    Now,
    /// After the caller answered (`DEL` of a veth pod whose namespace is there).
    AfterAnswer,
}

/// Lets go of the dataplane's programs on a pod's veth: forgets them when the veth was deleted
/// (they went with it, and a detach would wait for an RCU grace period), else detaches them.
fn let_go_of_programs(
    dp: &Mutex<Dataplane>,
    iface: &str,
    deleted: bool,
) -> Result<(), cnikit_ebpf_dataplane::Error> {
    let mut dp = lock(dp);
    if deleted {
        dp.forget_interface(iface).map(drop)
    } else {
        dp.detach_interface(iface).map(drop)
    }
}

/// Netlink sockets (each with its thread) the agent tears pods down with in the node
/// namespace: how many slow kernel requests (veth deletions) proceed at once.
const TEARDOWN_NETLINK_SOCKETS: usize = 32;

/// What unpublishing does with the dataplane's programs on the pod's veth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unpublish {
    /// Detach them now (the veth stays, or is torn down by someone else).
    Detach,
    /// Keep them until the caller deleted the veth (then `forget_interface`).
    KeepAttachment,
}

/// A wiring error as the plugin should report it.
fn wire_error(key: &AttachmentKey, e: &cnikit_netns_setup::Error, what: &str) -> ApiError {
    let kind = match e {
        cnikit_netns_setup::Error::InvalidSpec(_) => ApiErrorKind::InvalidConfig,
        cnikit_netns_setup::Error::Netns { .. } => ApiErrorKind::InvalidNetns,
        _ => ApiErrorKind::Internal,
    };
    ApiError::new(kind, format!("{key}: {what}: {e}"))
}

async fn complete_pool_config(
    config: &PoolConfig,
    metadata: &dyn cnikit_cloud_api::metadata::InstanceMetadata,
) -> Result<PoolConfig, StartError> {
    let meta = |what: &str, e: cnikit_cloud_api::Error| {
        StartError::Config(format!("reading {what} from the metadata service: {e}"))
    };
    let mut c = config.clone();
    if c.instance_id.is_empty() {
        c.instance_id = metadata
            .instance_id()
            .await
            .map_err(|e| meta("the instance id", e))?;
    }
    if c.instance_type.is_empty() {
        c.instance_type = metadata
            .instance_type()
            .await
            .map_err(|e| meta("the instance type", e))?;
    }
    if c.vswitches.is_empty() {
        c.vswitches = vec![
            metadata
                .subnet_id()
                .await
                .map_err(|e| meta("the vSwitch", e))?,
        ];
    }
    if c.security_groups.is_empty() {
        c.security_groups = vec![cnikit_cloud_api::sim::DEFAULT_SECURITY_GROUP.to_owned()];
    }
    Ok(c)
}

fn open_or_create_vpc(path: &std::path::Path) -> Result<Netns, StartError> {
    if let Ok(ns) = Netns::from_path(path) {
        return Ok(ns);
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|_| path.parent() == Some(std::path::Path::new("/run/netns")))
        .ok_or_else(|| {
            StartError::Config(format!(
                "node.eni_links.vpc_netns {} does not exist (only /run/netns/NAME is created)",
                path.display()
            ))
        })?;
    let ns = Netns::create_named(name)
        .map_err(|e| StartError::Network(format!("creating the VPC namespace {name}: {e}")))?;
    Ok(ns)
}

async fn start_dns(config: NodeDnsConfig, node: &Node) -> Result<DnsState, StartError> {
    let listen = config.server.listen;
    // The node-local address lives on the node's loopback (no dummy device needed).
    if let IpAddr::V4(v4) = listen.ip()
        && !v4.is_loopback()
        && !v4.is_unspecified()
    {
        let lo = node
            .handle()
            .link_by_name("lo")
            .await
            .map_err(|e| StartError::Network(e.to_string()))?
            .ok_or_else(|| StartError::Network("the node has no lo".into()))?;
        let address = cnikit_netns_setup::netlink::Address {
            index: lo.index,
            address: IpNetwork::V4(ipnetwork::Ipv4Network::from(v4)),
            scope: cnikit_netns_setup::netlink::Scope::Host,
        };
        match node.handle().add_address(&address).await {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(StartError::Network(format!("adding {v4} to lo: {e}"))),
        }
    }
    let zone = config
        .server
        .cluster_domain
        .to_string()
        .trim_end_matches('.')
        .to_owned();
    let (server, table) = config.start().await.map_err(StartError::Dns)?;
    let settings = DnsSettings {
        nameservers: vec![server.local_addr().ip()],
        search: vec![zone],
        options: vec!["ndots:5".into()],
    };
    Ok(DnsState {
        server: Mutex::new(Some(server)),
        table,
        settings,
    })
}
