//! Server counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the server's counters (monotonic except `cache_entries`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Queries received over UDP (malformed ones included).
    pub udp_queries: u64,
    /// Queries received over TCP.
    pub tcp_queries: u64,
    /// Parsed queries of type A.
    pub a_queries: u64,
    /// Parsed queries of type AAAA.
    pub aaaa_queries: u64,
    /// Answered from the cache without any lookup.
    pub cache_hits: u64,
    /// Needed a lookup (cluster records, AutoPath walk or upstream).
    pub cache_misses: u64,
    /// Datagrams dropped unanswered (not a query, too short, send failures).
    pub dropped: u64,
    /// Error replies for malformed or unsupported requests (FORMERR, NOTIMP, REFUSED, BADVERS).
    pub error_replies: u64,
    /// SERVFAIL replies (upstream failure).
    pub servfail_replies: u64,
    /// UDP replies truncated to fit the client's payload size.
    pub truncated_replies: u64,
    /// Queries AutoPath walked the search list for.
    pub autopath_walks: u64,
    /// Walks that found an answer at a later search step (CNAME synthesized).
    pub autopath_successes: u64,
    /// Questions answered from the cluster records.
    pub cluster_answers: u64,
    /// Questions sent to the upstream seam.
    pub upstream_queries: u64,
    /// Upstream questions that failed.
    pub upstream_failures: u64,
    /// Stale answers served because the upstreams failed.
    pub stale_answers: u64,
    /// Refreshes started before expiry.
    pub prefetches: u64,
    /// Entries stored in the cache.
    pub cache_inserts: u64,
    /// Entries evicted because the cache was full.
    pub cache_evictions: u64,
    /// Entries in the cache now.
    pub cache_entries: u64,
}

impl ServerStats {
    /// All queries received.
    #[must_use]
    pub fn queries(&self) -> u64 {
        self.udp_queries + self.tcp_queries
    }
}

macro_rules! counters {
    ($($field:ident),* $(,)?) => {
        /// Live counters; one instance per UDP worker (no shared cache lines on the hot path)
        /// plus one shared by TCP and the slow path.
        #[derive(Debug, Default)]
        #[repr(align(64))]
        pub(crate) struct Counters {
            $(pub(crate) $field: AtomicU64,)*
        }

        impl Counters {
            pub(crate) fn add_to(&self, s: &mut ServerStats) {
                $(s.$field += self.$field.load(Ordering::Relaxed);)*
            }
        }
    };
}

counters!(
    udp_queries,
    tcp_queries,
    a_queries,
    aaaa_queries,
    cache_hits,
    cache_misses,
    dropped,
    error_replies,
    servfail_replies,
    truncated_replies,
    autopath_walks,
    autopath_successes,
    cluster_answers,
    upstream_queries,
    upstream_failures,
    stale_answers,
    prefetches,
);

/// Adds one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
