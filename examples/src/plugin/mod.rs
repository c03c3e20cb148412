//! The `cnikit` CNI plugin: `ADD`, `DEL`, `CHECK`, `STATUS`, `GC` and `VERSION`.
//!
//! The plugin is a short-lived process run by the container runtime in the node's network
//! namespace. By default it makes one call to the agent ([`crate::protocol`]) per command: for
//! `ADD` the agent allocates an address, wires the pod's namespace with `cnikit-netns-setup`
//! using its long-lived netlink sockets, attaches the eBPF dataplane and publishes the pod to
//! DNS and Services; the plugin prints the result. With `"wiring": "plugin"` the plugin wires
//! the namespace itself between two agent calls (for an agent without `CAP_NET_ADMIN`, or to
//! keep netlink work out of the agent).
//!
//! | command | steps |
//! |---|---|
//! | `ADD` | `add` (allocate → driver `setup`, idempotent, rolls back → record, attach, publish; on a failure after allocating: teardown and release) → result. `"wiring": "plugin"`: `allocate` → `setup` here → `wired` |
//! | `DEL` | `delete` (unpublish → driver `teardown`, works when the netns is gone → release); idempotent. `"wiring": "plugin"`: `detach` → `teardown` here → `release`. Without the agent the plugin tears down from `prevResult` and queues the release in the agent's spool directory (the agent releases it when it is back) |
//! | `CHECK` | `check` → `prevResult`'s address = the agent's → driver `check`: every drift is reported (code 100) |
//! | `STATUS` | `status`: code 50 when the agent is unreachable or the pool cannot serve |
//! | `GC` | `gc` with `cni.dev/valid-attachments`; every error is reported |
//! | `VERSION` | the supported versions |

pub mod cli;

use std::{
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

use cnikit_netns_setup::{
    EniRef, Error as WireError, IpConfig as WireIp, Netns, Node, PodNetwork, naming,
};
use ipnetwork::{IpNetwork, Ipv4Network};
use serde_json::{Value, json};

use crate::{
    cni::{
        CniError, CniResult, Command, Dns, Environment, ErrorCode, Interface, IpConfig, NetConf,
        PluginMode, Route, Version, Wiring, config::supported_list,
    },
    protocol::{
        AddRequest, AgentClient, AllocateRequest, ApiErrorKind, AttachmentKey, ClientError,
        Datapath, DeleteRequest, PodAllocation, Reply, Request, WiredRequest,
    },
};

/// `K8S_POD_NAMESPACE` when the runtime does not pass one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Runs one invocation: returns the JSON to print on success (`None` for commands without
/// output).
///
/// # Errors
/// The [`CniError`] to print, with the code the specification reserves for the failure.
pub async fn run(env: &Environment, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    if env.command == Command::Version {
        return Ok(Some(version_reply(stdin)));
    }
    let conf = NetConf::parse(stdin)?;
    let version = conf.version()?;
    let needs = match env.command {
        Command::Check => Some(Version::V0_4_0),
        Command::Status | Command::Gc => Some(Version::V1_1_0),
        _ => None,
    };
    if let Some(min) = needs
        && version < min
    {
        return Err(CniError::new(
            ErrorCode::INCOMPATIBLE_VERSION,
            format!(
                "{} needs CNI version {min} or later, the configuration says {version}",
                env.command
            ),
        ));
    }
    for key in conf.other.keys() {
        tracing::debug!(key, "ignoring configuration key");
    }
    let plugin = Plugin {
        env,
        client: AgentClient::new(&conf.agent_socket),
        conf: &conf,
        version,
    };
    match env.command {
        Command::Add => plugin.add().await.map(Some),
        Command::Del => plugin.del().await.map(|()| None),
        Command::Check => plugin.check().await.map(|()| None),
        Command::Status => plugin.status().await.map(|()| None),
        Command::Gc => plugin.gc().await.map(|()| None),
        Command::Version => Ok(Some(version_reply(stdin))),
    }
}

/// `VERSION`: answers in the version the runtime asked with (the newest when it did not say).
fn version_reply(stdin: &[u8]) -> Value {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .filter(|v| v.parse::<Version>().is_ok())
        .unwrap_or_else(|| Version::LATEST.to_string());
    json!({
        "cniVersion": asked,
        "supportedVersions": Version::SUPPORTED.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

struct Plugin<'a> {
    env: &'a Environment,
    conf: &'a NetConf,
    client: AgentClient,
    version: Version,
}

impl Plugin<'_> {
    fn attachment(&self) -> AttachmentKey {
        AttachmentKey::new(self.env.container_id(), self.env.ifname())
    }

    async fn call(&self, request: Request) -> Result<Reply, CniError> {
        self.client
            .call(request, self.conf.call_timeout())
            .await
            .map_err(|e| agent_error(&e))
    }

    /// The `allocate` part of an `ADD`, from the environment and the configuration.
    fn allocate_request(&self, network: String, netns: &Path) -> AllocateRequest {
        AllocateRequest {
            network,
            attachment: self.attachment(),
            namespace: self
                .env
                .arg("K8S_POD_NAMESPACE")
                .unwrap_or(DEFAULT_NAMESPACE)
                .to_owned(),
            name: self
                .env
                .arg("K8S_POD_NAME")
                .unwrap_or(self.env.container_id())
                .to_owned(),
            netns: Some(netns.to_path_buf()),
            datapath: self.requested_datapath(),
            timeout_ms: u64::try_from(self.conf.add_timeout().as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// How long an `ADD`'s agent call may take: the allocation wait, and the wiring.
    fn add_wait(&self) -> std::time::Duration {
        self.conf.add_timeout() + std::time::Duration::from_secs(5)
    }

    /// `ADD`: one `add` call; the agent allocates, wires and publishes.
    async fn add(&self) -> Result<Value, CniError> {
        if self.conf.wiring == Wiring::Plugin {
            return self.add_wiring_here().await;
        }
        let network = self.conf.network()?.to_owned();
        let prev = self.conf.prev_result()?;
        let netns_path = self.env.netns.as_deref().unwrap_or_else(|| Path::new(""));
        let request = Request::Add(AddRequest {
            allocate: self.allocate_request(network, netns_path),
            mtu: self.conf.mtu,
        });
        let added = match self.client.call(request, self.add_wait()).await {
            Ok(Reply::Added(a)) => a,
            Ok(other) => return Err(unexpected("add", &other)),
            Err(e) => return Err(agent_error(&e)),
        };
        tracing::info!(pod = %self.attachment(), ip = %added.allocation.ipv4, eni = %added.allocation.eni_id, datapath = %added.allocation.datapath, "added");
        let ours = result_for(
            &added.allocation,
            &added.interface,
            added.mac,
            added.host_interface.as_deref(),
            netns_path,
        );
        Ok(self.finish(prev, ours))
    }

    /// The result to print: ours, after the previous plugin's when chained.
    fn finish(&self, prev: Option<CniResult>, ours: CniResult) -> Value {
        let result = match prev {
            Some(prev) => merge(prev, ours),
            None => ours,
        };
        result.to_json(self.version)
    }

    /// `ADD` with `"wiring": "plugin"`: `allocate`, wire here, `wired`.
    async fn add_wiring_here(&self) -> Result<Value, CniError> {
        let network = self.conf.network()?.to_owned();
        let prev = self.conf.prev_result()?;
        let netns_path = self.env.netns.as_deref().unwrap_or_else(|| Path::new(""));
        let netns = open_netns(netns_path)?;
        let node = node()?;
        let attachment = self.attachment();
        let request = Request::Allocate(self.allocate_request(network, netns_path));
        let alloc = match self.client.call(request, self.add_wait()).await {
            Ok(Reply::Allocated(a)) => a,
            Ok(other) => return Err(unexpected("allocate", &other)),
            Err(e) => return Err(agent_error(&e)),
        };
        tracing::info!(pod = %attachment, ip = %alloc.ipv4, eni = %alloc.eni_id, datapath = %alloc.datapath, "allocated");

        let pod = self.pod_network(&alloc, Some(netns.clone()));
        let driver = alloc.datapath.mode().driver();
        let wired = match driver.setup(&node, &pod).await {
            Ok(w) => w,
            Err(e) => {
                // Setup rolled back what it created; give the address back.
                let release = self.call(Request::Release(attachment.clone())).await.err();
                return Err(with_cleanup(wire_error(&e, "wiring the pod"), release));
            }
        };
        let wired_request = Request::Wired(WiredRequest {
            network: alloc.network.clone(),
            attachment: attachment.clone(),
            netns: Some(netns_path.to_path_buf()),
            datapath: alloc.datapath,
            host_interface: wired.host_interface.clone(),
        });
        if let Err(e) = self.call(wired_request).await {
            let teardown = driver
                .teardown(&node, &pod)
                .await
                .err()
                .map(|t| wire_error(&t, "undoing"));
            let release = self.call(Request::Release(attachment.clone())).await.err();
            return Err(with_cleanup(with_cleanup(e, teardown), release));
        }

        let ours = result_for(
            &alloc,
            &wired.interface,
            wired.mac.map(|m| m.to_string()),
            wired.host_interface.as_deref(),
            netns_path,
        );
        Ok(self.finish(prev, ours))
    }

    /// The datapath the configuration insists on (`None`: the agent's). An `ipvlan` request
    /// is passed on as it is: the agent probed the kernel once at start and answers with veth
    /// where there is no ipvlan (probing here would cost a scratch namespace per `ADD`).
    fn requested_datapath(&self) -> Option<Datapath> {
        match self.conf.mode {
            PluginMode::Auto => None,
            PluginMode::Veth => Some(Datapath::Veth),
            PluginMode::ExclusiveEni => Some(Datapath::ExclusiveEni),
            PluginMode::Ipvlan => Some(Datapath::Ipvlan),
        }
    }

    fn pod_network(&self, alloc: &PodAllocation, netns: Option<Netns>) -> PodNetwork {
        pod_network(
            self.env.container_id(),
            self.env.ifname(),
            alloc,
            self.conf.mtu,
            netns,
        )
    }

    /// `DEL`: one `delete` call; when the agent cannot be reached, the plugin tears down
    /// itself from the previous result (as with `"wiring": "plugin"`).
    async fn del(&self) -> Result<(), CniError> {
        let attachment = self.attachment();
        if self.conf.wiring == Wiring::Agent {
            let request = Request::Delete(DeleteRequest {
                attachment: attachment.clone(),
                netns: self.env.netns.clone(),
            });
            match self.call(request).await {
                Ok(Reply::Deleted(_)) => return Ok(()),
                Ok(other) => return Err(unexpected("delete", &other)),
                Err(e) if e.code == ErrorCode::TRY_AGAIN_LATER => {
                    return self.del_wiring_here(Err(e)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let detached = self.call(Request::Detach(attachment)).await;
        self.del_wiring_here(detached).await
    }

    /// `DEL` torn down by the plugin, after the agent's answer to `detach` (or the failure to
    /// reach it).
    async fn del_wiring_here(&self, detached: Result<Reply, CniError>) -> Result<(), CniError> {
        let attachment = self.attachment();
        let prev = self.conf.prev_result().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring an unreadable prevResult on DEL");
            None
        });
        // The namespace may be gone already; teardown then cleans the node side only.
        let netns = self
            .env
            .netns
            .as_deref()
            .and_then(|p| Netns::from_path(p).ok());
        let node = node()?;
        let (alloc, agent_down) = match detached {
            Ok(Reply::Detached(a)) => (a, None),
            Ok(other) => return Err(unexpected("detach", &other)),
            Err(e) if e.code == ErrorCode::TRY_AGAIN_LATER => (None, Some(e)),
            Err(e) => return Err(e),
        };
        // What to tear down: the agent's record; with the agent down, the previous result (the
        // address is still held by this attachment then, so no other pod can have it). With
        // the agent up and no record, an earlier DEL (or GC) finished: nothing is touched, so
        // that an address another pod holds now is never unwired.
        let pod = match (&alloc, &prev, &agent_down) {
            (Some(a), _, _) => Some((self.pod_network(a, netns), a.datapath)),
            (None, Some(prev), Some(_)) => self.pod_from_prev(prev, netns),
            _ => None,
        };
        if let Some((pod, datapath)) = &pod {
            datapath
                .mode()
                .driver()
                .teardown(&node, pod)
                .await
                .map_err(|e| wire_error(&e, "tearing down"))?;
        }
        if let Some(e) = agent_down {
            // The agent releases the address when it is back (before serving anything else).
            return crate::protocol::spool_release(&self.conf.agent_socket, &attachment).map_err(
                |io| {
                    CniError::new(
                        ErrorCode::TRY_AGAIN_LATER,
                        format!("{attachment}: torn down, but the release could not be queued"),
                    )
                    .with_details(format!("{e}; {io}"))
                },
            );
        }
        match self.call(Request::Release(attachment)).await? {
            Reply::Released(_) => Ok(()),
            other => Err(unexpected("release", &other)),
        }
    }

    /// A teardown description from a previous result alone (the agent is unreachable).
    fn pod_from_prev(
        &self,
        prev: &CniResult,
        netns: Option<Netns>,
    ) -> Option<(PodNetwork, Datapath)> {
        let index = prev.sandbox_interface(self.env.ifname())?;
        let address = prev.address_of(index, true)?;
        // The veth driver's host end is the only interface outside the sandbox.
        let datapath = if prev.interfaces.iter().any(|i| {
            i.sandbox.is_none()
                && i.name == naming::host_veth_name(self.env.container_id(), self.env.ifname())
        }) {
            Datapath::Veth
        } else {
            return None;
        };
        let pod = PodNetwork {
            container_id: self.env.container_id().to_owned(),
            netns,
            ifname: self.env.ifname().to_owned(),
            // Teardown skips an ENI that is not there; only the pod's own objects go.
            eni: EniRef::Name("cnikit-none".into()),
            mtu: None,
            ipv4: Some(WireIp::new(
                address,
                IpAddr::V4(naming::LINK_LOCAL_GATEWAY_V4),
            )),
            ipv6: None,
            service_cidrs: Vec::new(),
            host_stack_cidrs: Vec::new(),
            node_ips: Vec::new(),
            route_table: None,
        };
        Some((pod, datapath))
    }

    async fn check(&self) -> Result<(), CniError> {
        let prev = self
            .conf
            .prev_result()?
            .ok_or_else(|| CniError::new(ErrorCode::INVALID_CONFIG, "CHECK needs prevResult"))?;
        let netns_path = self.env.netns.as_deref().unwrap_or_else(|| Path::new(""));
        let netns = open_netns(netns_path)?;
        let node = node()?;
        let attachment = self.attachment();
        let checked = match self.call(Request::Check(attachment.clone())).await? {
            Reply::Checked(c) => c,
            other => return Err(unexpected("check", &other)),
        };
        let alloc = &checked.allocation;
        let mut problems = Vec::new();
        let index = prev.sandbox_interface(self.env.ifname());
        match index.and_then(|i| prev.address_of(i, true)) {
            Some(a) if a.ip() == IpAddr::V4(alloc.ipv4) => {}
            Some(a) => problems.push(format!(
                "prevResult says {} but the agent holds {} for {attachment}",
                a.ip(),
                alloc.ipv4
            )),
            None => problems.push(format!(
                "prevResult has no IPv4 address on {}",
                self.env.ifname()
            )),
        }
        if !checked.wired {
            problems.push("the agent has no record of the wiring".into());
        }
        if checked.dataplane_attached == Some(false) {
            problems.push("the eBPF programs are not attached".into());
        }
        let pod = self.pod_network(alloc, Some(netns));
        let drifts = alloc
            .datapath
            .mode()
            .driver()
            .check(&node, &pod)
            .await
            .map_err(|e| wire_error(&e, "checking"))?;
        problems.extend(drifts.iter().map(ToString::to_string));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                ErrorCode::DRIFT,
                format!("{attachment}: {} problem(s) found", problems.len()),
            )
            .with_details(problems.join("; ")))
        }
    }

    async fn status(&self) -> Result<(), CniError> {
        let reply = self
            .client
            .call(Request::Status, self.conf.call_timeout())
            .await
            .map_err(|e| {
                CniError::new(ErrorCode::NOT_READY, "the cnikit agent cannot be reached")
                    .with_details(e.to_string())
            })?;
        match reply {
            Reply::Status(s) if s.ready => Ok(()),
            Reply::Status(s) => Err(CniError::new(
                ErrorCode::NOT_READY,
                s.reason
                    .unwrap_or_else(|| "the pool cannot serve ADD".into()),
            )
            .with_details(format!(
                "idle {}, in use {}, capacity {}",
                s.idle, s.in_use, s.capacity
            ))),
            other => Err(unexpected("status", &other)),
        }
    }

    async fn gc(&self) -> Result<(), CniError> {
        let network = self.conf.network()?.to_owned();
        let valid = self.conf.gc_attachments().ok_or_else(|| {
            CniError::new(
                ErrorCode::INVALID_CONFIG,
                "GC needs cni.dev/valid-attachments (refusing to treat every attachment as stale)",
            )
        })?;
        let valid = valid
            .into_iter()
            .map(|a| AttachmentKey::new(a.container_id, a.ifname))
            .collect();
        match self.call(Request::Gc { network, valid }).await? {
            Reply::Gc(r) if r.errors.is_empty() => {
                tracing::info!(released = r.released.len(), kept = r.kept, "gc");
                Ok(())
            }
            Reply::Gc(r) => Err(CniError::new(
                ErrorCode::INTERNAL,
                format!(
                    "GC released {} attachment(s) with {} error(s)",
                    r.released.len(),
                    r.errors.len()
                ),
            )
            .with_details(r.errors.join("; "))),
            other => Err(unexpected("gc", &other)),
        }
    }
}

/// What to wire for `alloc` (`netns` is `None` when the pod's namespace is gone).
#[must_use]
pub fn pod_network(
    container_id: &str,
    ifname: &str,
    alloc: &PodAllocation,
    mtu: Option<u32>,
    netns: Option<Netns>,
) -> PodNetwork {
    let address = Ipv4Network::new(alloc.ipv4, alloc.vswitch_cidr.prefix())
        .unwrap_or_else(|_| Ipv4Network::from(alloc.ipv4));
    PodNetwork {
        container_id: container_id.to_owned(),
        netns,
        ifname: ifname.to_owned(),
        eni: EniRef::Name(alloc.eni_interface.clone()),
        mtu: mtu.or(alloc.mtu),
        ipv4: Some(WireIp::new(
            IpNetwork::V4(address),
            IpAddr::V4(alloc.gateway),
        )),
        ipv6: None,
        service_cidrs: alloc.service_cidrs.clone(),
        host_stack_cidrs: alloc.host_stack_cidrs.clone(),
        node_ips: alloc.node_ips.clone(),
        route_table: Some(alloc.route_table),
    }
}

/// The result `ADD` prints: the host interface (veth), the pod interface, its address and
/// default route, and the DNS settings.
#[must_use]
pub fn result_for(
    alloc: &PodAllocation,
    ifname: &str,
    pod_mac: Option<String>,
    host_interface: Option<&str>,
    netns: &Path,
) -> CniResult {
    let mut result = CniResult::default();
    if let Some(host) = host_interface {
        let mut i = Interface::new(host);
        i.mac = Some(naming::HOST_VETH_MAC.to_string());
        result.interfaces.push(i);
    }
    let mut pod = Interface::new(ifname);
    pod.mac = pod_mac;
    pod.mtu = alloc.mtu;
    pod.sandbox = Some(netns.display().to_string());
    result.interfaces.push(pod);
    let (address, gateway) = match alloc.datapath {
        Datapath::Veth => (Ipv4Network::from(alloc.ipv4), naming::LINK_LOCAL_GATEWAY_V4),
        Datapath::Ipvlan | Datapath::ExclusiveEni => (
            Ipv4Network::new(alloc.ipv4, alloc.vswitch_cidr.prefix())
                .unwrap_or_else(|_| Ipv4Network::from(alloc.ipv4)),
            alloc.gateway,
        ),
    };
    result.ips.push(IpConfig {
        address: IpNetwork::V4(address),
        gateway: Some(IpAddr::V4(gateway)),
        interface: Some(result.interfaces.len() - 1),
    });
    result.routes.push(Route::new(
        IpNetwork::V4(Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("prefix 0 is valid")),
        Some(IpAddr::V4(gateway)),
    ));
    if let Some(dns) = &alloc.dns {
        result.dns = Dns {
            nameservers: dns.nameservers.iter().map(ToString::to_string).collect(),
            domain: None,
            search: dns.search.clone(),
            options: dns.options.clone(),
        };
    }
    result
}

/// A chained `ADD`: the previous plugins' result with ours appended (interface indices
/// shifted); our DNS settings win when we have any.
fn merge(mut prev: CniResult, ours: CniResult) -> CniResult {
    let offset = prev.interfaces.len();
    prev.interfaces.extend(ours.interfaces);
    prev.ips.extend(ours.ips.into_iter().map(|mut ip| {
        ip.interface = ip.interface.map(|i| i + offset);
        ip
    }));
    prev.routes.extend(ours.routes);
    if !ours.dns.is_empty() {
        prev.dns = ours.dns;
    }
    prev
}

fn open_netns(path: &Path) -> Result<Netns, CniError> {
    Netns::from_path(path).map_err(|e| {
        CniError::new(
            ErrorCode::INVALID_NETNS,
            format!(
                "CNI_NETNS {} is not a usable network namespace",
                path.display()
            ),
        )
        .with_details(e.to_string())
    })
}

fn node() -> Result<Node, CniError> {
    Node::current().map_err(|e| {
        CniError::new(
            ErrorCode::INTERNAL,
            "cannot open netlink in the node namespace",
        )
        .with_details(e.to_string())
    })
}

/// Maps a wiring error to a CNI error.
fn wire_error(e: &WireError, what: &str) -> CniError {
    let code = match e {
        WireError::InvalidSpec(_) => ErrorCode::INVALID_CONFIG,
        WireError::Netns { .. } => ErrorCode::INVALID_NETNS,
        _ => ErrorCode::INTERNAL,
    };
    CniError::new(code, format!("{what}: {e}"))
}

/// Maps a failure to reach or use the agent to a CNI error.
fn agent_error(e: &ClientError) -> CniError {
    let code = match e {
        ClientError::Unreachable { .. } | ClientError::Timeout { .. } => ErrorCode::TRY_AGAIN_LATER,
        ClientError::Io { .. } | ClientError::Malformed { .. } => ErrorCode::IO_FAILURE,
        ClientError::Agent { source, .. } => match source.kind {
            ApiErrorKind::Exhausted | ApiErrorKind::Unavailable => ErrorCode::TRY_AGAIN_LATER,
            ApiErrorKind::NotFound => ErrorCode::UNKNOWN_CONTAINER,
            ApiErrorKind::InvalidRequest => ErrorCode::INVALID_ENVIRONMENT,
            ApiErrorKind::InvalidNetns => ErrorCode::INVALID_NETNS,
            ApiErrorKind::InvalidConfig => ErrorCode::INVALID_CONFIG,
            _ => ErrorCode::INTERNAL,
        },
        _ => ErrorCode::INTERNAL,
    };
    CniError::new(code, e.to_string())
}

fn unexpected(op: &str, reply: &Reply) -> CniError {
    CniError::new(
        ErrorCode::IO_FAILURE,
        format!("unexpected agent reply to `{op}`"),
    )
    .with_details(format!("{reply:?}"))
}

/// Adds what cleaning up after a failure could not do to the failure's details.
fn with_cleanup(mut error: CniError, cleanup: Option<CniError>) -> CniError {
    if let Some(c) = cleanup {
        let sep = if error.details.is_empty() { "" } else { "; " };
        error.details = format!("{}{sep}cleanup failed too: {c}", error.details);
    }
    error
}

/// The supported versions, for `--help`-style messages.
#[must_use]
pub fn supported_versions() -> String {
    supported_list()
}
