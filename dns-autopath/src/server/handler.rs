//! [`DnsHandler`]: the server's request handling without sockets, for custom transports and
//! for measuring the hot path.

use std::{net::IpAddr, sync::Arc, time::Instant};

use super::{ServerConfig, ServerStats, stats::Counters};
use crate::{
    AutoPathPlanner, ClusterRecords, Error, PodIndex,
    cache::{Cache, KeyBuf},
    resolver::{Fast, Resolver},
    upstream::Upstream,
};

/// How a request arrived: UDP replies are truncated to the client's payload size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// A datagram.
    Udp,
    /// A stream (no size limit).
    Tcp,
}

/// What [`DnsHandler::answer_cached`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CachedAnswer {
    /// The reply is in the output buffer (a cache hit or an error reply).
    Answered,
    /// Nothing to send (not a query).
    Dropped,
    /// Needs [`DnsHandler::answer`].
    NeedsLookup,
}

/// Answers DNS requests: parsing, AutoPath, cache, cluster records, upstream.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use cnikit_dns_autopath::{
///     ServerConfig, StaticPodIndex,
///     cluster::ClusterTable,
///     server::{CachedAnswer, DnsHandler, Transport},
///     upstream::NoUpstream,
/// };
///
/// let handler = DnsHandler::new(
///     &ServerConfig::default(),
///     Arc::new(ClusterTable::new("cluster.local".parse()?)),
///     Arc::new(StaticPodIndex::new()),
///     Arc::new(NoUpstream),
/// )?;
/// # let (request, client): (Vec<u8>, std::net::IpAddr) = (vec![], "198.18.0.10".parse()?);
/// let mut reply = Vec::new();
/// match handler.answer_cached(&request, client, Transport::Udp, &mut reply) {
///     CachedAnswer::Answered => { /* send `reply` */ }
///     CachedAnswer::NeedsLookup => {
///         if let Some(reply) = handler.answer(&request, client, Transport::Udp).await {
///             // send `reply`
///         }
///     }
///     _ => {} // dropped
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DnsHandler {
    pub(crate) resolver: Arc<Resolver>,
    pub(crate) runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for DnsHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsHandler")
            .field("resolver", &self.resolver)
            .finish_non_exhaustive()
    }
}

impl DnsHandler {
    /// A handler with `config`'s cluster domain, AutoPath, cache and payload settings (the
    /// listener settings are not used). Must be called within a tokio runtime, where
    /// background refreshes will run.
    ///
    /// # Errors
    /// Without a runtime, or on invalid configuration.
    pub fn new(
        config: &ServerConfig,
        records: Arc<dyn ClusterRecords>,
        pods: Arc<dyn PodIndex>,
        upstream: Arc<dyn Upstream>,
    ) -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        if config.max_udp_payload < 512 {
            return Err(Error::Config(format!(
                "max_udp_payload {} is below 512",
                config.max_udp_payload
            )));
        }
        let planner = config
            .autopath
            .as_ref()
            .map(|a| AutoPathPlanner::new(config.cluster_domain.clone(), a))
            .transpose()
            .map_err(|source| Error::Name {
                name: config.cluster_domain.to_string(),
                source,
            })?;
        let resolver = Arc::new(Resolver::new(
            Cache::new(config.cache.clone()),
            records,
            pods,
            upstream,
            planner,
            config.max_udp_payload,
        ));
        Ok(Self { resolver, runtime })
    }

    /// Answers from the cache (or with an error reply) without waiting for anything; writes
    /// the reply into `out`. Popular entries close to expiry start a background refresh.
    pub fn answer_cached(
        &self,
        request: &[u8],
        client: IpAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> CachedAnswer {
        let counters = &self.resolver.counters;
        match self.fast(request, client, transport, Instant::now(), counters, out) {
            Fast::Reply | Fast::ReplyAndRefresh(_) => CachedAnswer::Answered,
            Fast::Drop => CachedAnswer::Dropped,
            Fast::Miss(_) => CachedAnswer::NeedsLookup,
        }
    }

    /// The fast path; starts the background refresh itself when one is due.
    pub(crate) fn fast(
        &self,
        request: &[u8],
        client: IpAddr,
        transport: Transport,
        now: Instant,
        counters: &Counters,
        out: &mut Vec<u8>,
    ) -> Fast {
        let udp = transport == Transport::Udp;
        let fast = self
            .resolver
            .answer_fast(request, client, udp, now, counters, out);
        if let Fast::ReplyAndRefresh(key) = &fast {
            let key = key.clone();
            let resolver = Arc::clone(&self.resolver);
            self.runtime
                .spawn(async move { resolver.refresh(key.as_bytes()).await });
        }
        fast
    }

    /// Answers `request` from `client`: from the cache if possible, else after looking it up.
    /// `None` when there is nothing to send.
    pub async fn answer(
        &self,
        request: &[u8],
        client: IpAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let counters = &self.resolver.counters;
        match self.fast(
            request,
            client,
            transport,
            Instant::now(),
            counters,
            &mut out,
        ) {
            Fast::Reply | Fast::ReplyAndRefresh(_) => Some(out),
            Fast::Drop => None,
            Fast::Miss(key) => self.lookup(request, &key, transport).await,
        }
    }

    /// The slow path for a request the fast path could not answer.
    pub(crate) async fn lookup(
        &self,
        request: &[u8],
        key: &KeyBuf,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let reply = self
            .resolver
            .answer_slow(request, key, transport == Transport::Udp)
            .await;
        (!reply.is_empty()).then_some(reply)
    }

    /// Counters of this handler (requests it handled itself, lookups, cache).
    #[must_use]
    pub fn stats(&self) -> ServerStats {
        let mut s = ServerStats::default();
        self.resolver.counters.add_to(&mut s);
        self.add_cache_stats(&mut s);
        s
    }

    pub(crate) fn add_cache_stats(&self, s: &mut ServerStats) {
        let cache = self.resolver.cache.counters();
        s.cache_inserts = cache.inserts;
        s.cache_evictions = cache.evictions;
        s.cache_entries = self.resolver.cache.len() as u64;
    }

    /// Empties the cache.
    pub fn clear_cache(&self) {
        self.resolver.cache.clear();
    }
}
