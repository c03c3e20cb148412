//! The plugin ↔ agent protocol: one JSON request and one JSON reply per connection over a unix
//! socket, each a single line of at most [`MAX_MESSAGE_BYTES`], versioned
//! ([`PROTOCOL_VERSION`]) and bounded in time on both sides.
//!
//! The split is Terway's (and the AWS VPC CNI's): the short-lived plugin binary asks the
//! long-lived node agent for an address and reports what it wired; the agent owns the pool,
//! the records, the eBPF dataplane and DNS. A request:
//!
//! ```json
//! {"version":1,"id":7,"request":{"allocate":{"network":"pods","attachment":{"container_id":"c1",
//!  "ifname":"eth0"},"namespace":"prod","name":"web-0","netns":"/run/netns/x","kind":"shared_ip",
//!  "timeout_ms":60000}}}
//! ```
//!
//! and its reply: `{"version":1,"id":7,"ok":{"allocated":{...}}}` or
//! `{"version":1,"id":7,"error":{"kind":"exhausted","message":"..."}}`. A peer speaking
//! another version gets a `version` error and nothing is done.
//!
//! `ADD` is `add` (the agent allocates, wires the namespace and publishes, in one call) and
//! `DEL` is `delete` (unpublish, tear down, release); with `"wiring": "plugin"` the plugin
//! wires itself: `ADD` is `allocate` → wire the namespace → `wired`, `DEL` is `detach` →
//! tear down → `release` (also `DEL`'s path when the agent is down). `CHECK` is `check`;
//! `GC` is `gc`; `STATUS` is `status`.

use std::{
    collections::BTreeMap,
    fmt, io,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use cnikit_eni_pool::ResourceKind;
use ipnetwork::{IpNetwork, Ipv4Network};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::UnixStream,
};

/// The protocol version both sides must speak.
pub const PROTOCOL_VERSION: u32 = 1;
/// Where the agent listens by default.
pub const DEFAULT_SOCKET: &str = "/run/cnikit/agent.sock";
/// The largest request or reply, in bytes (one line).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// A CNI attachment: the key the specification says state is kept under (with the network).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttachmentKey {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

impl AttachmentKey {
    /// The attachment of `ifname` in container `container_id`.
    #[must_use]
    pub fn new(container_id: impl Into<String>, ifname: impl Into<String>) -> Self {
        Self {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }
}

impl fmt::Display for AttachmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self
            .container_id
            .get(..12)
            .unwrap_or(self.container_id.as_str());
        write!(f, "{short}/{}", self.ifname)
    }
}

/// How a pod is wired (netns-setup's modes, on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Datapath {
    /// veth pair + policy routing through a shared ENI.
    Veth,
    /// ipvlan L2 on a shared ENI.
    Ipvlan,
    /// The whole ENI in the pod.
    ExclusiveEni,
}

impl Datapath {
    /// The netns-setup mode.
    #[must_use]
    pub fn mode(self) -> cnikit_netns_setup::Mode {
        match self {
            Self::Veth => cnikit_netns_setup::Mode::Veth,
            Self::Ipvlan => cnikit_netns_setup::Mode::IpVlan,
            Self::ExclusiveEni => cnikit_netns_setup::Mode::ExclusiveEni,
        }
    }

    /// From a netns-setup mode.
    #[must_use]
    pub fn from_mode(mode: cnikit_netns_setup::Mode) -> Self {
        match mode {
            cnikit_netns_setup::Mode::Veth => Self::Veth,
            cnikit_netns_setup::Mode::IpVlan => Self::Ipvlan,
            cnikit_netns_setup::Mode::ExclusiveEni => Self::ExclusiveEni,
        }
    }

    /// The resource a pod wired this way needs.
    #[must_use]
    pub fn resource(self) -> ResourceKind {
        match self {
            Self::Veth | Self::Ipvlan => ResourceKind::SharedIp,
            Self::ExclusiveEni => ResourceKind::ExclusiveEni,
        }
    }
}

impl fmt::Display for Datapath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.mode().fmt(f)
    }
}

/// `allocate`: an address (or ENI) for a pod, plus what wiring it needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocateRequest {
    /// The CNI network name.
    pub network: String,
    /// The attachment.
    pub attachment: AttachmentKey,
    /// The pod's namespace (`K8S_POD_NAMESPACE`, else `default`).
    pub namespace: String,
    /// The pod's name (`K8S_POD_NAME`, else the container id).
    pub name: String,
    /// The pod's network namespace path, as the runtime gave it.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// A wiring mode the plugin insists on (`None`: the agent's).
    #[serde(default)]
    pub datapath: Option<Datapath>,
    /// How long the agent may wait for the cloud when the pool is empty.
    pub timeout_ms: u64,
}

/// `wired`: the plugin finished wiring; the agent attaches the dataplane and publishes the pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WiredRequest {
    /// The CNI network name.
    pub network: String,
    /// The attachment.
    pub attachment: AttachmentKey,
    /// The pod's network namespace path.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// The mode used.
    pub datapath: Datapath,
    /// The node-side interface (veth, exclusive node path), if any.
    #[serde(default)]
    pub host_interface: Option<String>,
}

/// `add`: all of `ADD` in one call (the agent wires the namespace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddRequest {
    /// The pod and its attachment, as for `allocate` (`netns` is required here).
    pub allocate: AllocateRequest,
    /// The pod interface's MTU from the network configuration (default: the agent's).
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// What `add` wired: the allocation and the interfaces, everything the CNI result needs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddReply {
    /// The address and what the wiring used.
    pub allocation: PodAllocation,
    /// The pod interface's name.
    pub interface: String,
    /// The pod interface's hardware address.
    #[serde(default)]
    pub mac: Option<String>,
    /// The node-side interface, if any.
    #[serde(default)]
    pub host_interface: Option<String>,
}

/// `delete`: all of `DEL` in one call (the agent tears the namespace down).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    /// The attachment.
    pub attachment: AttachmentKey,
    /// The pod's network namespace path, when the runtime still has one.
    #[serde(default)]
    pub netns: Option<PathBuf>,
}

/// A request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// `ADD` in one call: allocate, wire the namespace, attach and publish (or converge a
    /// retried `ADD` to the same result).
    Add(AddRequest),
    /// `DEL` in one call: unpublish, tear the namespace down, release the address.
    Delete(DeleteRequest),
    /// Allocate (or return the existing allocation of a retried `ADD`).
    Allocate(AllocateRequest),
    /// The namespace is wired.
    Wired(WiredRequest),
    /// `DEL`, first step: unpublish the pod and detach the dataplane; returns the allocation
    /// (if any) so the plugin knows what to tear down.
    Detach(AttachmentKey),
    /// `DEL`, last step (after teardown): give the address back to the pool.
    Release(AttachmentKey),
    /// `CHECK`: the agent's view of an attachment.
    Check(AttachmentKey),
    /// `GC`: release every attachment of `network` not in `valid`.
    Gc {
        /// The CNI network name.
        network: String,
        /// Attachments to keep.
        valid: Vec<AttachmentKey>,
    },
    /// `STATUS`: can `ADD` be served now?
    Status,
    /// Counters of the pool, dataplane and DNS.
    Stats,
    /// Re-read the file of Services and network policies now.
    Reload,
}

impl Request {
    /// The operation's name, for logs and errors.
    #[must_use]
    pub fn op(&self) -> &'static str {
        match self {
            Self::Add(_) => "add",
            Self::Delete(_) => "delete",
            Self::Allocate(_) => "allocate",
            Self::Wired(_) => "wired",
            Self::Detach(_) => "detach",
            Self::Release(_) => "release",
            Self::Check(_) => "check",
            Self::Gc { .. } => "gc",
            Self::Status => "status",
            Self::Stats => "stats",
            Self::Reload => "reload",
        }
    }
}

/// DNS settings for a pod's resolver.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsSettings {
    /// Name servers.
    pub nameservers: Vec<IpAddr>,
    /// Search domains (`<ns>.svc.<zone>`, `svc.<zone>`, `<zone>`, ...).
    pub search: Vec<String>,
    /// Options (`ndots:5`).
    pub options: Vec<String>,
}

/// An allocation and everything the plugin needs to wire it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PodAllocation {
    /// The CNI network name.
    pub network: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's IPv4 address.
    pub ipv4: Ipv4Addr,
    /// The vSwitch CIDR it comes from.
    pub vswitch_cidr: Ipv4Network,
    /// The vSwitch gateway.
    pub gateway: Ipv4Addr,
    /// Shared IP or whole ENI.
    pub kind: ResourceKind,
    /// The ENI.
    pub eni_id: String,
    /// The ENI's MAC.
    pub mac: String,
    /// The ENI's interface in the node namespace.
    pub eni_interface: String,
    /// The policy-routing table of the ENI.
    pub route_table: u32,
    /// How to wire the pod (the agent's choice unless the plugin insisted).
    pub datapath: Datapath,
    /// Pod interface MTU, when the agent sets one.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Service CIDRs (sent to the node's stack).
    #[serde(default)]
    pub service_cidrs: Vec<IpNetwork>,
    /// Other CIDRs the node serves (node-local DNS).
    #[serde(default)]
    pub host_stack_cidrs: Vec<IpNetwork>,
    /// The node's own addresses.
    #[serde(default)]
    pub node_ips: Vec<IpAddr>,
    /// The pod's resolver settings, when the agent runs DNS.
    #[serde(default)]
    pub dns: Option<DnsSettings>,
}

/// `check`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReply {
    /// The allocation held for the attachment.
    pub allocation: PodAllocation,
    /// Whether the plugin reported it wired.
    pub wired: bool,
    /// Whether the dataplane's programs are attached to its interface (`None`: no dataplane,
    /// or not applicable to its mode).
    #[serde(default)]
    pub dataplane_attached: Option<bool>,
}

/// `gc`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReply {
    /// Attachments released.
    pub released: Vec<AttachmentKey>,
    /// Attachments kept.
    pub kept: usize,
    /// Every error met (GC keeps going).
    pub errors: Vec<String>,
}

/// `status`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Whether `ADD` can be served now.
    pub ready: bool,
    /// Why not.
    #[serde(default)]
    pub reason: Option<String>,
    /// Idle shared addresses.
    pub idle: u32,
    /// Shared addresses in use.
    pub in_use: u32,
    /// The most shared addresses the pool may hold.
    pub capacity: u32,
}

/// Pool counters in `stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PoolStats {
    /// Idle shared addresses.
    pub idle: u32,
    /// Shared addresses in use.
    pub in_use: u32,
    /// Released addresses cooling down.
    pub cooling: u32,
    /// Addresses being assigned or attached.
    pub being_added: u32,
    /// Capacity of shared addresses.
    pub capacity: u32,
    /// ENIs attached and usable.
    pub enis_ready: u32,
    /// Allocations served.
    pub allocations: u64,
    /// Allocations failed.
    pub failures: u64,
    /// Cloud calls by `action/outcome`.
    pub cloud_calls: BTreeMap<String, u64>,
    /// Upper bound of the median allocation latency, in microseconds.
    #[serde(default)]
    pub allocate_p50_us: Option<u64>,
    /// Upper bound of the 99th percentile allocation latency, in microseconds.
    #[serde(default)]
    pub allocate_p99_us: Option<u64>,
}

impl PoolStats {
    /// Cloud calls in total.
    #[must_use]
    pub fn total_cloud_calls(&self) -> u64 {
        self.cloud_calls.values().sum()
    }
}

/// DNS counters in `stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DnsStats {
    /// Queries received.
    pub queries: u64,
    /// Queries AutoPath walked the search list for.
    pub autopath_walks: u64,
    /// Walks that found an answer at a later step.
    pub autopath_successes: u64,
    /// Answers from the cache.
    pub cache_hits: u64,
    /// Questions answered from the cluster records.
    pub cluster_answers: u64,
    /// Questions sent upstream.
    pub upstream_queries: u64,
}

/// `stats`' answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StatsReply {
    /// The pool.
    pub pool: PoolStats,
    /// Pods wired on this node.
    pub endpoints: usize,
    /// eBPF services programmed.
    pub services: usize,
    /// Endpoints with a NetworkPolicy.
    pub policies: usize,
    /// eBPF program attachments.
    pub attachments: usize,
    /// Veth pairs of deleted pods still being deleted (after their `DEL` answered).
    #[serde(default)]
    pub retiring: usize,
    /// DNS counters (when the agent runs DNS).
    #[serde(default)]
    pub dns: Option<DnsStats>,
}

/// `reload`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// eBPF services (VIP, port, protocol) programmed.
    pub services: usize,
    /// Endpoints with a policy.
    pub policies: usize,
    /// Pod references that name no pod on this node (yet).
    pub unresolved: Vec<String>,
}

/// A successful reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reply {
    /// To `add`.
    Added(AddReply),
    /// To `delete`: whether an address was released.
    Deleted(bool),
    /// To `allocate`.
    Allocated(PodAllocation),
    /// To `wired`.
    Wired,
    /// To `detach`: the allocation, if there was one.
    Detached(Option<PodAllocation>),
    /// To `release`: whether something was released.
    Released(bool),
    /// To `check`.
    Checked(CheckReply),
    /// To `gc`.
    Gc(GcReply),
    /// To `status`.
    Status(StatusReply),
    /// To `stats`.
    Stats(StatsReply),
    /// To `reload`.
    Reloaded(ReloadReply),
}

/// What went wrong, in a way the plugin maps to CNI codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ApiErrorKind {
    /// Malformed or inconsistent request.
    InvalidRequest,
    /// The pod's namespace cannot be used (`add`).
    InvalidNetns,
    /// The wiring refused the pod's settings (`add`).
    InvalidConfig,
    /// No such attachment.
    NotFound,
    /// No address before the deadline (try again later).
    Exhausted,
    /// The agent is starting or stopping (try again later).
    Unavailable,
    /// Protocol version mismatch.
    Version,
    /// Anything else.
    Internal,
}

/// An error reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ApiError {
    /// The class.
    pub kind: ApiErrorKind,
    /// What happened, with context (pod, interface, ENI).
    pub message: String,
}

impl ApiError {
    /// An error of `kind`.
    #[must_use]
    pub fn new(kind: ApiErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// A request on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// Echoed in the reply; for logs.
    pub id: u64,
    /// The request.
    pub request: Request,
}

/// A reply on the wire: exactly one of `ok` and `error`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseEnvelope {
    /// [`PROTOCOL_VERSION`] of the agent.
    pub version: u32,
    /// The request's id.
    pub id: u64,
    /// The reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Reply>,
    /// The error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl ResponseEnvelope {
    /// The reply envelope for `result`.
    #[must_use]
    pub fn new(id: u64, result: Result<Reply, ApiError>) -> Self {
        let (ok, error) = match result {
            Ok(reply) => (Some(reply), None),
            Err(e) => (None, Some(e)),
        };
        Self {
            version: PROTOCOL_VERSION,
            id,
            ok,
            error,
        }
    }
}

/// Errors of the client side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens on the socket (agent not running).
    #[error("cannot reach the agent at {}: {source}", path.display())]
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No reply in time.
    #[error("agent did not answer `{op}` within {after:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The time limit.
        after: Duration,
    },
    /// Reading or writing failed mid-way.
    #[error("talking to the agent (`{op}`): {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The reply is not a reply.
    #[error("agent reply to `{op}` is malformed: {detail}")]
    Malformed {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The agent speaks another protocol version.
    #[error("agent speaks protocol version {theirs}, this plugin {ours}")]
    Version {
        /// Ours.
        ours: u32,
        /// The agent's.
        theirs: u32,
    },
    /// The agent refused or failed the request.
    #[error("agent refused `{op}`: {source}")]
    Agent {
        /// The operation.
        op: &'static str,
        /// Its error.
        #[source]
        source: ApiError,
    },
}

/// A client of the agent's socket.
#[derive(Debug)]
pub struct AgentClient {
    socket: PathBuf,
    next_id: AtomicU64,
}

impl AgentClient {
    /// A client of the agent listening on `socket`.
    #[must_use]
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            next_id: AtomicU64::new(u64::from(std::process::id()) << 16),
        }
    }

    /// The socket path.
    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `request` and waits at most `timeout` (connect included) for the reply.
    ///
    /// # Errors
    /// [`ClientError`]: unreachable, timeout, I/O, malformed reply, version mismatch, or the
    /// agent's own error.
    pub async fn call(&self, request: Request, timeout: Duration) -> Result<Reply, ClientError> {
        let op = request.op();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(timeout, self.exchange(id, request)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout { op, after: timeout }),
        }
    }

    async fn exchange(&self, id: u64, request: Request) -> Result<Reply, ClientError> {
        let op = request.op();
        let mut stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Unreachable {
                    path: self.socket.clone(),
                    source,
                })?;
        let envelope = RequestEnvelope {
            version: PROTOCOL_VERSION,
            id,
            request,
        };
        write_message(&mut stream, &envelope)
            .await
            .map_err(|source| ClientError::Io { op, source })?;
        let (read, _write) = stream.split();
        let response: ResponseEnvelope = read_message(read)
            .await
            .map_err(|source| ClientError::Io { op, source })?
            .ok_or_else(|| ClientError::Malformed {
                op,
                detail: "connection closed without a reply".into(),
            })?;
        if response.version != PROTOCOL_VERSION {
            return Err(ClientError::Version {
                ours: PROTOCOL_VERSION,
                theirs: response.version,
            });
        }
        if response.id != id {
            return Err(ClientError::Malformed {
                op,
                detail: format!("reply to request {} instead of {id}", response.id),
            });
        }
        match (response.ok, response.error) {
            (Some(reply), None) => Ok(reply),
            (None, Some(source)) => Err(ClientError::Agent { op, source }),
            _ => Err(ClientError::Malformed {
                op,
                detail: "exactly one of `ok` and `error` expected".into(),
            }),
        }
    }
}

/// The directory beside the agent's socket where the plugin queues releases while the agent is
/// down (one file per attachment; the agent drains it at start and periodically).
#[must_use]
pub fn spool_dir(socket: &Path) -> PathBuf {
    socket
        .parent()
        .unwrap_or_else(|| Path::new("/"))
        .join("released")
}

fn spool_file(dir: &Path, key: &AttachmentKey) -> PathBuf {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    dir.join(format!(
        "{}.{}.json",
        clean(&key.container_id),
        clean(&key.ifname)
    ))
}

/// Queues the release of `key` for the agent listening on `socket` (written atomically).
///
/// # Errors
/// When the spool directory cannot be written.
pub fn spool_release(socket: &Path, key: &AttachmentKey) -> io::Result<()> {
    let dir = spool_dir(socket);
    std::fs::create_dir_all(&dir)?;
    let path = spool_file(&dir, key);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(key).map_err(io::Error::other)?)?;
    std::fs::rename(&tmp, &path)
}

/// The releases queued under `socket`'s spool directory, with their files (unreadable files
/// are skipped and left for an operator).
#[must_use]
pub fn spooled_releases(socket: &Path) -> Vec<(PathBuf, AttachmentKey)> {
    let Ok(entries) = std::fs::read_dir(spool_dir(socket)) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let key = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            Some((p, key))
        })
        .collect()
}

/// Writes `message` as one JSON line.
///
/// # Errors
/// I/O errors; `InvalidData` when it would exceed [`MAX_MESSAGE_BYTES`].
pub async fn write_message<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    message: &T,
) -> io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(io::Error::other)?;
    if line.len() >= MAX_MESSAGE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {} bytes is too long", line.len()),
        ));
    }
    line.push(b'\n');
    writer.write_all(&line).await?;
    writer.flush().await
}

/// Reads one JSON line; `None` when the peer closed before sending anything.
///
/// # Errors
/// I/O errors; `InvalidData` for a line over [`MAX_MESSAGE_BYTES`], an unterminated line, or
/// JSON that does not decode as `T`.
pub async fn read_message<R: AsyncRead + Unpin, T: DeserializeOwned>(
    reader: R,
) -> io::Result<Option<T>> {
    let mut line = Vec::new();
    let limit = u64::try_from(MAX_MESSAGE_BYTES).unwrap_or(u64::MAX);
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(reader, limit));
    let n = reader.read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            if n >= MAX_MESSAGE_BYTES {
                "message too long"
            } else {
                "message not terminated by a newline"
            },
        ));
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocation() -> PodAllocation {
        PodAllocation {
            network: "pods".into(),
            namespace: "prod".into(),
            name: "web-0".into(),
            ipv4: Ipv4Addr::new(198, 18, 0, 5),
            vswitch_cidr: "198.18.0.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(198, 18, 0, 253),
            kind: ResourceKind::SharedIp,
            eni_id: "eni-1".into(),
            mac: "02:00:00:00:00:01".into(),
            eni_interface: "eni1".into(),
            route_table: 1001,
            datapath: Datapath::Veth,
            mtu: None,
            service_cidrs: vec!["198.19.0.0/16".parse().unwrap()],
            host_stack_cidrs: vec![],
            node_ips: vec![],
            dns: None,
        }
    }

    #[test]
    fn envelopes_round_trip() {
        let req = RequestEnvelope {
            version: PROTOCOL_VERSION,
            id: 3,
            request: Request::Gc {
                network: "pods".into(),
                valid: vec![AttachmentKey::new("c1", "eth0")],
            },
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<RequestEnvelope>(&text).unwrap(), req);
        assert_eq!(
            serde_json::from_str::<RequestEnvelope>(r#"{"version":1,"id":1,"request":"status"}"#)
                .unwrap()
                .request,
            Request::Status
        );
        for reply in [
            Reply::Detached(Some(allocation())),
            Reply::Detached(None),
            Reply::Released(true),
            Reply::Wired,
        ] {
            let env = ResponseEnvelope::new(9, Ok(reply.clone()));
            let text = serde_json::to_string(&env).unwrap();
            assert_eq!(
                serde_json::from_str::<ResponseEnvelope>(&text).unwrap().ok,
                Some(reply)
            );
        }
        let err = ResponseEnvelope::new(9, Err(ApiError::new(ApiErrorKind::Exhausted, "empty")));
        let text = serde_json::to_string(&err).unwrap();
        assert!(text.contains(r#""error":{"kind":"exhausted""#), "{text}");
    }

    #[tokio::test]
    async fn framing_is_bounded() {
        let (mut a, b) = tokio::io::duplex(4096);
        write_message(
            &mut a,
            &RequestEnvelope {
                version: 1,
                id: 1,
                request: Request::Stats,
            },
        )
        .await
        .unwrap();
        drop(a);
        let got: Option<RequestEnvelope> = read_message(b).await.unwrap();
        assert_eq!(got.unwrap().request, Request::Stats);

        let (a, b) = tokio::io::duplex(64);
        drop(a);
        assert!(
            read_message::<_, RequestEnvelope>(b)
                .await
                .unwrap()
                .is_none()
        );

        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"{\"version\":1").await.unwrap();
        drop(a);
        assert!(read_message::<_, RequestEnvelope>(b).await.is_err());

        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"[1,2]\n").await.unwrap();
        drop(a);
        assert!(read_message::<_, RequestEnvelope>(b).await.is_err());
    }

    #[tokio::test]
    async fn client_reports_an_absent_agent() {
        let dir = tempfile::tempdir().unwrap();
        let client = AgentClient::new(dir.path().join("none.sock"));
        let err = client
            .call(Request::Status, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    }
}
