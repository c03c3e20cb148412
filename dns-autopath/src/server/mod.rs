//! The node-local DNS server: UDP and TCP on one address, AutoPath, cache, forwarding.

mod handler;
pub(crate) mod stats;
mod tcp;
mod udp;

pub use handler::{CachedAnswer, DnsHandler, Transport};
pub use stats::ServerStats;

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle as TaskHandle;

use crate::{
    AutoPathConfig, CacheConfig, ClusterRecords, Error, Name, PodIndex,
    cluster::NoRecords,
    pod_index::NoPods,
    upstream::{NoUpstream, Upstream},
};
use stats::Counters;

/// The conventional node-local DNS address (`NodeLocal DNSCache`).
pub const NODE_LOCAL_DNS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(169, 254, 20, 10)), 53);

/// Server settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Address for UDP and TCP (port 0 picks a free port).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The cluster domain (`cluster.local`).
    #[serde(default = "default_domain")]
    pub cluster_domain: Name,
    /// AutoPath settings; `None` disables AutoPath.
    #[serde(default = "default_autopath")]
    pub autopath: Option<AutoPathConfig>,
    /// Cache settings.
    #[serde(default)]
    pub cache: CacheConfig,
    /// UDP sockets (and threads) in the `SO_REUSEPORT` group; 0 means one per CPU.
    #[serde(default)]
    pub udp_workers: usize,
    /// Largest UDP reply, and the payload size advertised to EDNS clients.
    #[serde(default = "default_payload")]
    pub max_udp_payload: u16,
    /// A TCP connection idle this long is closed.
    #[serde(default = "default_idle", with = "crate::secs")]
    pub tcp_idle_timeout: Duration,
    /// Concurrent TCP connections; more are closed at once.
    #[serde(default = "default_max_tcp")]
    pub max_tcp_connections: usize,
}

fn default_listen() -> SocketAddr {
    NODE_LOCAL_DNS
}
fn default_domain() -> Name {
    Name::from_labels(["cluster", "local"]).expect("valid literal")
}
#[expect(
    clippy::unnecessary_wraps,
    reason = "serde default for an optional section that is on by default"
)]
fn default_autopath() -> Option<AutoPathConfig> {
    Some(AutoPathConfig::default())
}
fn default_payload() -> u16 {
    1232
}
fn default_idle() -> Duration {
    Duration::from_secs(10)
}
fn default_max_tcp() -> usize {
    1024
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            cluster_domain: default_domain(),
            autopath: default_autopath(),
            cache: CacheConfig::default(),
            udp_workers: 0,
            max_udp_payload: default_payload(),
            tcp_idle_timeout: default_idle(),
            max_tcp_connections: default_max_tcp(),
        }
    }
}

impl ServerConfig {
    /// Defaults, listening on `listen`.
    #[must_use]
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            ..Self::default()
        }
    }

    /// Sets the AutoPath settings (`None` disables it).
    #[must_use]
    pub fn autopath(mut self, autopath: Option<AutoPathConfig>) -> Self {
        self.autopath = autopath;
        self
    }

    /// Sets the cache settings.
    #[must_use]
    pub fn cache(mut self, cache: CacheConfig) -> Self {
        self.cache = cache;
        self
    }

    /// Sets the number of UDP workers.
    #[must_use]
    pub fn udp_workers(mut self, workers: usize) -> Self {
        self.udp_workers = workers;
        self
    }

    /// Sets the cluster domain.
    #[must_use]
    pub fn cluster_domain(mut self, domain: Name) -> Self {
        self.cluster_domain = domain;
        self
    }
}

/// Assembles a [`DnsServer`] from its configuration and seams.
pub struct DnsServerBuilder {
    config: ServerConfig,
    records: Arc<dyn ClusterRecords>,
    pods: Arc<dyn PodIndex>,
    upstream: Arc<dyn Upstream>,
}

impl std::fmt::Debug for DnsServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DnsServerBuilder {
    /// The cluster records to answer from (default: none).
    #[must_use]
    pub fn records(mut self, records: Arc<dyn ClusterRecords>) -> Self {
        self.records = records;
        self
    }

    /// The pod index for AutoPath (default: nobody is known, so AutoPath never applies).
    #[must_use]
    pub fn pod_index(mut self, pods: Arc<dyn PodIndex>) -> Self {
        self.pods = pods;
        self
    }

    /// The upstream for everything else (default: none; such queries get SERVFAIL).
    #[must_use]
    pub fn upstream(mut self, upstream: Arc<dyn Upstream>) -> Self {
        self.upstream = upstream;
        self
    }

    /// Binds the sockets and starts serving on the current tokio runtime (multi-threaded
    /// recommended). UDP workers are OS threads created here, so they share the calling
    /// thread's network namespace.
    ///
    /// # Errors
    /// Without a runtime, on invalid configuration, or when binding fails.
    #[expect(
        clippy::unused_async,
        reason = "async so that it is called within the runtime the server will use"
    )]
    pub async fn bind(self) -> Result<DnsServer, Error> {
        let config = self.config;
        let handler = DnsHandler::new(&config, self.records, self.pods, self.upstream)?;
        let runtime = handler.runtime.clone();
        let workers = if config.udp_workers == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            config.udp_workers
        };
        // The first socket fixes the port when port 0 was asked for.
        let first = udp::bind_socket(config.listen).map_err(|source| Error::Bind {
            protocol: "udp",
            addr: config.listen,
            source,
        })?;
        let local_addr = first
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(config.listen);
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(udp::bind_socket(local_addr).map_err(|source| Error::Bind {
                protocol: "udp",
                addr: local_addr,
                source,
            })?);
        }
        let listener = bind_tcp(local_addr)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(workers);
        let mut worker_counters = Vec::with_capacity(workers);
        for (i, socket) in sockets.into_iter().enumerate() {
            let counters = Arc::new(Counters::default());
            worker_counters.push(Arc::clone(&counters));
            let worker = udp::Worker {
                socket: Arc::new(socket),
                handler: handler.clone(),
                counters,
                stop: Arc::clone(&stop),
            };
            let thread = std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || worker.run())
                .map_err(|e| Error::io("starting a UDP worker thread", e))?;
            threads.push(thread);
        }
        let tcp_task = runtime.spawn(tcp::accept_loop(
            listener,
            handler.clone(),
            config.tcp_idle_timeout,
            config.max_tcp_connections,
        ));
        tracing::info!(%local_addr, workers, autopath = config.autopath.is_some(), "dns server listening");
        Ok(DnsServer {
            local_addr,
            handler,
            worker_counters,
            threads,
            tcp_task,
            stop,
        })
    }
}

fn bind_tcp(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    let bind_err = |source| Error::Bind {
        protocol: "tcp",
        addr,
        source,
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(bind_err)?;
    socket.set_reuse_address(true).map_err(bind_err)?;
    socket.set_nonblocking(true).map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    socket.listen(1024).map_err(bind_err)?;
    tokio::net::TcpListener::from_std(socket.into()).map_err(bind_err)
}

/// A running DNS server.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use cnikit_dns_autopath::{
///     DnsServer, ServerConfig, StaticPodIndex,
///     cluster::{ClusterTable, Service},
///     upstream::{Forwarder, ForwarderConfig},
/// };
///
/// let table = Arc::new(ClusterTable::new("cluster.local".parse()?));
/// table.upsert_service(&Service::cluster_ip("prod", "web", vec!["10.96.0.10".parse()?]))?;
/// let pods = Arc::new(StaticPodIndex::new());
/// pods.insert("198.18.0.10".parse()?, "prod");
/// let server = DnsServer::builder(ServerConfig::new("169.254.20.10:53".parse()?))
///     .records(table)
///     .pod_index(pods)
///     .upstream(Arc::new(Forwarder::new(ForwarderConfig::new(vec!["10.0.0.2:53".parse()?]))?))
///     .bind()
///     .await?;
/// println!("serving on {}", server.local_addr());
/// tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
/// server.shutdown().await;
/// # Ok(()) }
/// ```
pub struct DnsServer {
    local_addr: SocketAddr,
    handler: DnsHandler,
    worker_counters: Vec<Arc<Counters>>,
    threads: Vec<JoinHandle<()>>,
    tcp_task: TaskHandle<()>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("local_addr", &self.local_addr)
            .field("udp_workers", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// A builder for `config`, with no records, no pods and no upstream.
    #[must_use]
    pub fn builder(config: ServerConfig) -> DnsServerBuilder {
        DnsServerBuilder {
            config,
            records: Arc::new(NoRecords),
            pods: Arc::new(NoPods),
            upstream: Arc::new(NoUpstream),
        }
    }

    /// The address served (UDP and TCP).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> ServerStats {
        let mut s = ServerStats::default();
        for c in &self.worker_counters {
            c.add_to(&mut s);
        }
        self.handler.resolver.counters.add_to(&mut s);
        self.handler.add_cache_stats(&mut s);
        s
    }

    /// The request handler (shares the cache and counters with the sockets).
    #[must_use]
    pub fn handler(&self) -> &DnsHandler {
        &self.handler
    }

    /// Empties the cache.
    pub fn clear_cache(&self) {
        self.handler.clear_cache();
    }

    /// Stops serving: UDP workers finish their current batch (within about 100 ms), the TCP
    /// listener closes.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tcp_task.abort();
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    tracing::error!("a UDP worker panicked");
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::error!("joining UDP workers failed");
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        // Workers notice within their wake interval; sockets close when they exit.
        self.stop.store(true, Ordering::Relaxed);
        self.tcp_task.abort();
    }
}
