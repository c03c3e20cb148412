//! The node-local answer cache.
//!
//! Entries hold the *encoded* response (ID zero, question in lower case, no OPT record) plus
//! where each TTL sits, so a hit is served by copying the bytes and patching the ID, a few flag
//! bits, the question's case and the TTLs: no parsing and no encoding on the hot path.
//!
//! Keys are the lower-case question name in wire format, type, class and a flag byte (DNSSEC
//! OK, checking disabled, AutoPath applied); they are looked up as byte slices so the hot path
//! allocates nothing. The map is sharded behind read-write locks and bounded: a full shard
//! evicts an expired entry if it finds one among a few, otherwise an arbitrary one (CoreDNS's
//! cache also evicts at random).

use std::{
    collections::HashMap,
    hash::BuildHasher,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::wire::{
    self, FLAG_AD, FLAG_CD, FLAG_QR, FLAG_RA, FLAG_RD, FLAG_TC, HEADER_LEN, RCODE_NOERROR,
    RCODE_NXDOMAIN, RCODE_SERVFAIL, Request, Section, TYPE_OPT, TYPE_SOA,
};

/// Key flag: the client set DNSSEC OK.
pub(crate) const KEY_DO: u8 = 1;
/// Key flag: the client set checking disabled.
pub(crate) const KEY_CD: u8 = 2;
/// Key flag: the answer is an AutoPath result for the client's namespace.
pub(crate) const KEY_AUTOPATH: u8 = 4;
/// Longest key: name, type, class, flags.
pub(crate) const KEY_MAX: usize = crate::MAX_NAME_LEN + 5;
/// TTL of a negative answer without an SOA (CoreDNS uses the same).
const NO_SOA_NEGATIVE_TTL: u32 = 5;
/// TTL given to stale answers (RFC 8767 §4 recommends 30 s).
pub(crate) const STALE_ANSWER_TTL: u32 = 30;

/// Cache settings. Defaults follow `NodeLocal DNSCache` (`success 9984 30`, `denial 9984 5`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Most entries held (positive and negative together); 0 disables caching.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// TTL cap for answers with records.
    #[serde(default = "default_success_cap", with = "crate::secs")]
    pub success_ttl_cap: Duration,
    /// TTL cap for NXDOMAIN and NODATA.
    #[serde(default = "default_denial_cap", with = "crate::secs")]
    pub denial_ttl_cap: Duration,
    /// How long an upstream failure (SERVFAIL) is remembered before asking again.
    #[serde(default = "default_servfail", with = "crate::secs")]
    pub servfail_ttl: Duration,
    /// Refresh popular entries before they expire.
    #[serde(default)]
    pub prefetch: Option<PrefetchConfig>,
    /// Keep expired entries this long and serve them (TTL 30 s) when the upstreams fail.
    #[serde(default, with = "crate::secs::option")]
    pub serve_stale: Option<Duration>,
}

fn default_capacity() -> usize {
    2 * 9984
}
fn default_success_cap() -> Duration {
    Duration::from_secs(30)
}
fn default_denial_cap() -> Duration {
    Duration::from_secs(5)
}
fn default_servfail() -> Duration {
    Duration::from_secs(1)
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            capacity: default_capacity(),
            success_ttl_cap: default_success_cap(),
            denial_ttl_cap: default_denial_cap(),
            servfail_ttl: default_servfail(),
            prefetch: None,
            serve_stale: None,
        }
    }
}

impl CacheConfig {
    /// Sets the TTL caps.
    #[must_use]
    pub fn ttl_caps(mut self, success: Duration, denial: Duration) -> Self {
        self.success_ttl_cap = success;
        self.denial_ttl_cap = denial;
        self
    }

    /// Sets the capacity.
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Enables prefetching.
    #[must_use]
    pub fn prefetch(mut self, prefetch: PrefetchConfig) -> Self {
        self.prefetch = Some(prefetch);
        self
    }

    /// Enables serving stale answers for up to `horizon` after expiry.
    #[must_use]
    pub fn serve_stale(mut self, horizon: Duration) -> Self {
        self.serve_stale = Some(horizon);
        self
    }

    /// Sets how long a SERVFAIL is remembered.
    #[must_use]
    pub fn servfail_ttl(mut self, ttl: Duration) -> Self {
        self.servfail_ttl = ttl;
        self
    }
}

/// When to refresh an entry before it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PrefetchConfig {
    /// Hits the entry must have had.
    #[serde(default = "default_min_hits")]
    pub min_hits: u32,
    /// Refresh once the remaining TTL falls to this percentage of the original (at least 1 s).
    #[serde(default = "default_percent")]
    pub remaining_percent: u8,
}

fn default_min_hits() -> u32 {
    2
}
fn default_percent() -> u8 {
    10
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        Self {
            min_hits: default_min_hits(),
            remaining_percent: default_percent(),
        }
    }
}

/// A cache key built on the stack.
#[derive(Clone)]
pub(crate) struct KeyBuf {
    buf: [u8; KEY_MAX],
    len: usize,
}

impl KeyBuf {
    /// The key for a question; `qname` is uncompressed wire format in any case.
    pub(crate) fn new(qname: &[u8], qtype: u16, qclass: u16, flags: u8) -> Self {
        let mut buf = [0u8; KEY_MAX];
        let n = qname.len().min(crate::MAX_NAME_LEN);
        for (dst, src) in buf[..n].iter_mut().zip(qname) {
            *dst = src.to_ascii_lowercase();
        }
        buf[n..n + 2].copy_from_slice(&qtype.to_be_bytes());
        buf[n + 2..n + 4].copy_from_slice(&qclass.to_be_bytes());
        buf[n + 4] = flags;
        Self { buf, len: n + 5 }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The lower-case question name.
    pub(crate) fn qname(&self) -> &[u8] {
        &self.buf[..self.len - 5]
    }

    pub(crate) fn set_flags(&mut self, flags: u8) {
        self.buf[self.len - 1] = flags;
    }
}

/// Parts of a stored key.
pub(crate) fn split_key(key: &[u8]) -> Option<(&[u8], u16, u16, u8)> {
    let n = key.len().checked_sub(5)?;
    Some((
        &key[..n],
        u16::from_be_bytes([key[n], key[n + 1]]),
        u16::from_be_bytes([key[n + 2], key[n + 3]]),
        key[n + 4],
    ))
}

/// What an entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// NOERROR with answer records.
    Positive,
    /// NXDOMAIN, or NOERROR without answers (NODATA).
    Negative,
    /// SERVFAIL (the upstreams failed).
    ServerFailure,
    /// Any other rcode; served but never cached.
    Other,
}

/// Why a response cannot become an entry.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EntryError {
    #[error("malformed response: {0}")]
    Wire(#[from] wire::WireError),
    #[error("response has {0} questions")]
    Questions(u16),
    #[error("response question is not the asked one")]
    Question,
    #[error("OPT record is not the last record")]
    OptNotLast,
}

/// One cached (or one-shot) response.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The response: ID 0, RD/CD clear, question lower case, no OPT.
    wire: Box<[u8]>,
    /// End of the question name (`wire[12..qname_end]`).
    qname_end: usize,
    /// Offset and original TTL of every record.
    ttls: Box<[(u32, u32)]>,
    pub(crate) kind: EntryKind,
    /// Lifetime in the cache, seconds (0: not cacheable).
    pub(crate) ttl: u32,
    /// Served TTL for every record, instead of the decremented one (stale answers).
    ttl_override: Option<u32>,
    pub(crate) stored: Instant,
    expires: Instant,
    /// `Some(g)` when the answer depends on the cluster records at generation `g`.
    pub(crate) generation: Option<u64>,
    hits: AtomicU32,
    prefetching: AtomicBool,
}

impl Entry {
    /// Turns a response for `qname` (lower-case uncompressed wire) into an entry.
    pub(crate) fn from_response(
        mut msg: Vec<u8>,
        qname: &[u8],
        config: &CacheConfig,
        generation: Option<u64>,
        now: Instant,
    ) -> Result<Self, EntryError> {
        let layout = wire::walk(&msg)?;
        wire::check_names(&msg, &layout)?;
        if layout.qdcount != 1 {
            return Err(EntryError::Questions(layout.qdcount));
        }
        let qname_end = HEADER_LEN + qname.len();
        if layout.question_end != qname_end + 4
            || !wire::names_equal_ignore_case(&msg[HEADER_LEN..qname_end], qname)
        {
            return Err(EntryError::Question);
        }
        msg[HEADER_LEN..qname_end].copy_from_slice(qname);
        // Drop the OPT record (it is per-hop); it must be last so nothing points past it.
        let mut records = layout.records;
        if let Some(i) = records.iter().position(|r| r.rtype == TYPE_OPT) {
            if i + 1 != records.len() {
                return Err(EntryError::OptNotLast);
            }
            let opt = records.remove(i);
            msg.truncate(opt.start);
            let ar = u16::from_be_bytes([msg[10], msg[11]]).saturating_sub(1);
            msg[10..12].copy_from_slice(&ar.to_be_bytes());
        } else {
            msg.truncate(layout.end);
        }
        // Normalise the header: ID 0, QR and RA set, per-request bits cleared.
        msg[0..2].fill(0);
        let flags = (layout.flags & !(FLAG_RD | FLAG_CD)) | FLAG_QR | FLAG_RA;
        msg[2..4].copy_from_slice(&flags.to_be_bytes());
        let rcode = (layout.flags & 0xF) as u8;
        let has_answers = records.iter().any(|r| r.section == Section::Answer);
        let kind = match rcode {
            RCODE_NOERROR if has_answers => EntryKind::Positive,
            RCODE_NOERROR | RCODE_NXDOMAIN => EntryKind::Negative,
            RCODE_SERVFAIL => EntryKind::ServerFailure,
            _ => EntryKind::Other,
        };
        let cap = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        let truncated = flags & FLAG_TC != 0;
        let ttl = if truncated {
            0
        } else {
            match kind {
                EntryKind::Positive => records
                    .iter()
                    .map(|r| r.ttl)
                    .min()
                    .unwrap_or(0)
                    .min(cap(config.success_ttl_cap)),
                EntryKind::Negative => records
                    .iter()
                    .find(|r| r.section == Section::Authority && r.rtype == TYPE_SOA)
                    .map_or(NO_SOA_NEGATIVE_TTL, |soa| {
                        soa.ttl.min(wire::soa_minimum(&msg, soa).unwrap_or(soa.ttl))
                    })
                    .min(cap(config.denial_ttl_cap)),
                EntryKind::ServerFailure => cap(config.servfail_ttl),
                EntryKind::Other => 0,
            }
        };
        let ttls = records
            .iter()
            .filter_map(|r| Some((u32::try_from(r.ttl_offset).ok()?, r.ttl)))
            .collect();
        Ok(Self {
            wire: msg.into(),
            qname_end,
            ttls,
            kind,
            ttl,
            ttl_override: None,
            stored: now,
            expires: now + Duration::from_secs(u64::from(ttl)),
            generation,
            hits: AtomicU32::new(0),
            prefetching: AtomicBool::new(false),
        })
    }

    /// A copy served with TTL 30 (RFC 8767) and kept for `lifetime`.
    pub(crate) fn stale_copy(&self, lifetime: Duration, now: Instant) -> Self {
        Self {
            wire: self.wire.clone(),
            qname_end: self.qname_end,
            ttls: self.ttls.clone(),
            kind: self.kind,
            ttl: u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX),
            ttl_override: Some(STALE_ANSWER_TTL),
            stored: now,
            expires: now + lifetime,
            generation: self.generation,
            hits: AtomicU32::new(0),
            prefetching: AtomicBool::new(false),
        }
    }

    /// The response bytes as stored (ID 0, question lower case, no OPT, original TTLs).
    pub(crate) fn wire(&self) -> &[u8] {
        &self.wire
    }

    pub(crate) fn rcode(&self) -> u8 {
        self.wire[3] & 0xF
    }

    /// A SERVFAIL or a stale copy: what a failed lookup produces.
    pub(crate) fn is_degraded(&self) -> bool {
        self.kind == EntryKind::ServerFailure || self.ttl_override.is_some()
    }

    pub(crate) fn is_fresh(&self, now: Instant) -> bool {
        now < self.expires
    }

    /// Seconds since the entry was stored.
    pub(crate) fn age(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.stored).as_secs()).unwrap_or(u32::MAX)
    }

    /// Still within the serve-stale horizon.
    pub(crate) fn is_stale_servable(&self, now: Instant, horizon: Option<Duration>) -> bool {
        matches!(self.kind, EntryKind::Positive | EntryKind::Negative)
            && horizon.is_some_and(|h| now < self.expires + h)
    }

    /// Counts a hit; true when this hit should start a refresh (once per entry).
    pub(crate) fn hit(&self, now: Instant, prefetch: Option<PrefetchConfig>) -> bool {
        let hits = self.hits.fetch_add(1, Ordering::Relaxed) + 1;
        let Some(p) = prefetch else {
            return false;
        };
        if hits < p.min_hits || self.ttl == 0 || self.ttl_override.is_some() {
            return false;
        }
        let threshold_ms = (u64::from(self.ttl) * 10 * u64::from(p.remaining_percent)).max(1000);
        let remaining = self.expires.saturating_duration_since(now);
        let remaining = u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX);
        remaining < threshold_ms && !self.prefetching.swap(true, Ordering::Relaxed)
    }

    /// Writes the reply to `request` into `out`: ID, RD/CD and question case from the request,
    /// TTLs decremented by the entry's age, an OPT record when the request had one, and a
    /// truncated reply (TC) when it exceeds `udp_limit`.
    pub(crate) fn write_reply(
        &self,
        request: &Request<'_>,
        now: Instant,
        udp_limit: Option<usize>,
        server_payload: u16,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        out.extend_from_slice(&self.wire);
        out[0..2].copy_from_slice(&request.id.to_be_bytes());
        let stored = u16::from_be_bytes([self.wire[2], self.wire[3]]);
        let mut flags = stored | (request.flags & (FLAG_RD | FLAG_CD));
        // AD only for clients that signalled they understand it (RFC 6840 §5.8).
        if request.flags & FLAG_AD == 0 && !request.dnssec_ok() {
            flags &= !FLAG_AD;
        }
        out[2..4].copy_from_slice(&flags.to_be_bytes());
        if request.qname_end == self.qname_end {
            out[HEADER_LEN..self.qname_end].copy_from_slice(request.qname_wire());
        }
        let age = self.age(now);
        for &(offset, ttl) in &*self.ttls {
            let served = self
                .ttl_override
                .unwrap_or_else(|| ttl.min(self.ttl).saturating_sub(age));
            let at = offset as usize;
            out[at..at + 4].copy_from_slice(&served.to_be_bytes());
        }
        if let Some(edns) = request.edns {
            wire::push_opt(out, server_payload, edns.dnssec_ok, 0);
            let ar = u16::from_be_bytes([out[10], out[11]]).saturating_add(1);
            out[10..12].copy_from_slice(&ar.to_be_bytes());
        }
        if let Some(limit) = udp_limit
            && out.len() > limit
        {
            // Header and question only, TC set: the client retries over TCP.
            out.truncate(self.qname_end + 4);
            let flags = flags | FLAG_TC;
            out[2..4].copy_from_slice(&flags.to_be_bytes());
            out[6..10].fill(0);
            out[10..12].copy_from_slice(&u16::from(request.edns.is_some()).to_be_bytes());
            if let Some(edns) = request.edns {
                wire::push_opt(out, server_payload, edns.dnssec_ok, 0);
            }
        }
    }
}

/// Counters of the cache (monotonic except `entries`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CacheCounters {
    pub inserts: u64,
    pub evictions: u64,
}

#[repr(align(64))]
struct Shard {
    map: RwLock<HashMap<Box<[u8]>, Arc<Entry>, foldhash::fast::RandomState>>,
}

/// The sharded, bounded cache.
pub(crate) struct Cache {
    shards: Box<[Shard]>,
    shard_capacity: usize,
    hasher: foldhash::fast::RandomState,
    config: CacheConfig,
    inserts: AtomicU64,
    evictions: AtomicU64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("shards", &self.shards.len())
            .field("shard_capacity", &self.shard_capacity)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Cache {
    pub(crate) fn new(config: CacheConfig) -> Self {
        let shards = if config.capacity >= 4096 {
            64
        } else if config.capacity >= 64 {
            16
        } else {
            1
        };
        let shard_capacity = config.capacity.div_ceil(shards);
        Self {
            shards: (0..shards)
                .map(|_| Shard {
                    map: RwLock::new(HashMap::with_hasher(foldhash::fast::RandomState::default())),
                })
                .collect(),
            shard_capacity,
            hasher: foldhash::fast::RandomState::default(),
            config,
            inserts: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    pub(crate) fn config(&self) -> &CacheConfig {
        &self.config
    }

    fn shard(&self, key: &[u8]) -> &Shard {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "only the low bits pick a shard"
        )]
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        &self.shards[i]
    }

    /// The entry for `key`, fresh or not.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Arc<Entry>> {
        if self.shard_capacity == 0 {
            return None;
        }
        let map = self
            .shard(key)
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(key).cloned()
    }

    /// Stores `entry` under `key` when it is cacheable.
    pub(crate) fn insert(&self, key: &[u8], entry: Arc<Entry>, now: Instant) {
        if entry.ttl == 0 || self.shard_capacity == 0 {
            return;
        }
        let horizon = self.config.serve_stale;
        let mut map = self
            .shard(key)
            .map
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.shard_capacity && !map.contains_key(key) {
            let dead = map
                .iter()
                .take(8)
                .find(|(_, e)| !e.is_fresh(now) && !e.is_stale_servable(now, horizon))
                .map(|(k, _)| k.clone());
            let victim = dead.or_else(|| map.keys().next().cloned());
            if let Some(victim) = victim {
                map.remove(&victim);
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        map.insert(key.into(), entry);
        self.inserts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.map.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    pub(crate) fn counters(&self) -> CacheCounters {
        CacheCounters {
            inserts: self.inserts.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }

    /// Drops everything.
    pub(crate) fn clear(&self) {
        for s in &*self.shards {
            s.map
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{parse_request, tests::query, walk};

    /// A NOERROR response to `q` with one A record (TTL `ttl`) and optionally an OPT.
    pub(crate) fn a_response(q: &[u8], ttl: u32, with_opt: bool) -> Vec<u8> {
        let r = parse_request(q).unwrap();
        let mut m = q[..r.question_end()].to_vec();
        m[2] |= 0x80;
        m[3] = 0x80;
        m[6..8].copy_from_slice(&1u16.to_be_bytes());
        m[10..12].copy_from_slice(&u16::from(with_opt).to_be_bytes());
        m.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&[0, 4, 198, 18, 100, 1]);
        if with_opt {
            wire::push_opt(&mut m, 4096, false, 0);
        }
        m
    }

    /// An NXDOMAIN with an SOA (TTL `soa_ttl`, MINIMUM `minimum`).
    fn nx_response(q: &[u8], soa_ttl: u32, minimum: u32) -> Vec<u8> {
        let r = parse_request(q).unwrap();
        let mut m = q[..r.question_end()].to_vec();
        m[2] |= 0x80;
        m[3] = 0x80 | 3;
        m[8..10].copy_from_slice(&1u16.to_be_bytes());
        m[10..12].fill(0);
        m.extend_from_slice(&[0xC0, 0x0C, 0, 6, 0, 1]);
        m.extend_from_slice(&soa_ttl.to_be_bytes());
        m.extend_from_slice(&24u16.to_be_bytes());
        m.extend_from_slice(&[0xC0, 0x0C, 0xC0, 0x0C]);
        m.extend_from_slice(&[0; 16]);
        m.extend_from_slice(&minimum.to_be_bytes());
        m
    }

    fn entry(msg: Vec<u8>, config: &CacheConfig, now: Instant) -> Entry {
        let r = parse_request(&msg[..]).ok();
        let qname_end = r.map_or_else(
            || {
                let l = walk(&msg).unwrap();
                l.question_end - 4
            },
            |r| r.qname_end,
        );
        let qname = crate::Name::from_uncompressed_wire(&msg[HEADER_LEN..qname_end]).unwrap();
        Entry::from_response(msg, qname.as_wire(), config, None, now).unwrap()
    }

    #[test]
    fn positive_ttl_is_capped_and_decremented() {
        let config = CacheConfig::default();
        let q = query(1, "www.example.test", 1, None);
        let now = Instant::now();
        let e = entry(a_response(&q, 300, true), &config, now);
        assert_eq!(e.kind, EntryKind::Positive);
        assert_eq!(e.ttl, 30);
        let client = query(0x4242, "WWW.Example.Test", 1, Some((1232, false)));
        let req = parse_request(&client).unwrap();
        let mut out = Vec::new();
        e.write_reply(&req, now + Duration::from_secs(12), None, 1232, &mut out);
        let layout = walk(&out).unwrap();
        assert_eq!(layout.id, 0x4242);
        assert_ne!(layout.flags & FLAG_RD, 0);
        assert_eq!(layout.records[0].ttl, 18);
        // The client's case comes back in the question.
        assert_eq!(&out[HEADER_LEN..req.qname_end], req.qname_wire());
        // The upstream's OPT was dropped and ours added.
        assert_eq!(layout.records.len(), 2);
        assert_eq!(
            u16::from_be_bytes([out[out.len() - 8], out[out.len() - 7]]),
            1232
        );
        assert!(e.is_fresh(now + Duration::from_secs(29)));
        assert!(!e.is_fresh(now + Duration::from_secs(30)));
        // Without EDNS: no OPT.
        let plain = query(7, "www.example.test", 1, None);
        e.write_reply(&parse_request(&plain).unwrap(), now, None, 1232, &mut out);
        assert!(walk(&out).unwrap().opt().is_none());
    }

    #[test]
    fn short_ttls_are_kept() {
        let config = CacheConfig::default();
        let q = query(1, "a.test", 1, None);
        let e = entry(a_response(&q, 7, false), &config, Instant::now());
        assert_eq!(e.ttl, 7);
        let zero = entry(a_response(&q, 0, false), &config, Instant::now());
        assert_eq!(zero.ttl, 0);
    }

    #[test]
    fn negative_ttl_uses_soa_minimum_and_denial_cap() {
        let config = CacheConfig::default();
        let q = query(1, "nothing.test", 1, None);
        let e = entry(nx_response(&q, 3600, 2), &config, Instant::now());
        assert_eq!(e.kind, EntryKind::Negative);
        assert_eq!(e.ttl, 2);
        let e = entry(nx_response(&q, 3600, 900), &config, Instant::now());
        assert_eq!(e.ttl, 5);
        // Served SOA TTL is capped too.
        let mut out = Vec::new();
        let now = Instant::now();
        let e = entry(nx_response(&q, 3600, 900), &config, now);
        e.write_reply(&parse_request(&q).unwrap(), now, None, 1232, &mut out);
        assert_eq!(walk(&out).unwrap().records[0].ttl, 5);
        assert_eq!(out[3] & 0xF, 3);
    }

    #[test]
    fn oversized_udp_replies_are_truncated() {
        let config = CacheConfig::default();
        let q = query(1, "a.test", 1, None);
        let e = entry(a_response(&q, 60, false), &config, Instant::now());
        let mut out = Vec::new();
        let req = parse_request(&q).unwrap();
        e.write_reply(&req, Instant::now(), Some(30), 1232, &mut out);
        let layout = walk(&out).unwrap();
        assert_ne!(layout.flags & FLAG_TC, 0);
        assert!(layout.records.is_empty());
        assert_eq!(layout.qdcount, 1);
    }

    #[test]
    fn stale_copies_serve_ttl_30() {
        let config = CacheConfig::default();
        let q = query(1, "a.test", 1, None);
        let now = Instant::now();
        let e = entry(a_response(&q, 10, false), &config, now);
        let later = now + Duration::from_secs(60);
        assert!(!e.is_fresh(later));
        assert!(e.is_stale_servable(later, Some(Duration::from_secs(3600))));
        assert!(!e.is_stale_servable(later, None));
        let stale = e.stale_copy(Duration::from_secs(1), later);
        let mut out = Vec::new();
        stale.write_reply(&parse_request(&q).unwrap(), later, None, 1232, &mut out);
        assert_eq!(walk(&out).unwrap().records[0].ttl, STALE_ANSWER_TTL);
    }

    #[test]
    fn prefetch_triggers_once_near_expiry_for_popular_entries() {
        let q = query(1, "a.test", 1, None);
        let now = Instant::now();
        let e = entry(a_response(&q, 30, false), &CacheConfig::default(), now);
        let p = Some(PrefetchConfig::default());
        assert!(!e.hit(now, p)); // one hit, far from expiry
        assert!(!e.hit(now + Duration::from_secs(20), p)); // 10 s left of 30: not yet
        assert!(e.hit(now + Duration::from_millis(27_500), p)); // 2.5 s left
        assert!(!e.hit(now + Duration::from_millis(28_000), p)); // only once
        assert!(!e.hit(now + Duration::from_millis(28_000), None));
    }

    #[test]
    fn keys_fold_case_and_carry_flags() {
        let a = KeyBuf::new(b"\x01A\x00", 1, 1, 0);
        let b = KeyBuf::new(b"\x01a\x00", 1, 1, 0);
        assert_eq!(a.as_bytes(), b.as_bytes());
        let mut c = KeyBuf::new(b"\x01a\x00", 1, 1, 0);
        c.set_flags(KEY_AUTOPATH);
        assert_ne!(a.as_bytes(), c.as_bytes());
        assert_eq!(
            split_key(c.as_bytes()),
            Some((&b"\x01a\x00"[..], 1, 1, KEY_AUTOPATH))
        );
        assert_eq!(c.qname(), b"\x01a\x00");
    }

    #[test]
    fn cache_is_bounded() {
        let cache = Cache::new(CacheConfig::default().capacity(10));
        let now = Instant::now();
        for i in 0..50 {
            let name = format!("n{i}.test");
            let q = query(1, &name, 1, None);
            let e = Arc::new(entry(a_response(&q, 60, false), cache.config(), now));
            let key = KeyBuf::new(&q[HEADER_LEN..q.len() - 4], 1, 1, 0);
            cache.insert(key.as_bytes(), e, now);
        }
        assert!(cache.len() <= 10, "{}", cache.len());
        assert_eq!(cache.counters().inserts, 50);
        assert_eq!(cache.counters().evictions, 40);
        // Uncacheable entries are not stored; capacity 0 disables the cache.
        let off = Cache::new(CacheConfig::default().capacity(0));
        let q = query(1, "x.test", 1, None);
        let key = KeyBuf::new(&q[HEADER_LEN..q.len() - 4], 1, 1, 0);
        off.insert(
            key.as_bytes(),
            Arc::new(entry(a_response(&q, 60, false), off.config(), now)),
            now,
        );
        assert!(off.get(key.as_bytes()).is_none());
        cache.clear();
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn rejects_mismatched_or_misplaced_opt() {
        let config = CacheConfig::default();
        let q = query(1, "a.test", 1, None);
        let resp = a_response(&q, 60, false);
        let other: crate::Name = "b.test".parse().unwrap();
        assert!(matches!(
            Entry::from_response(resp, other.as_wire(), &config, None, Instant::now()),
            Err(EntryError::Question)
        ));
        // OPT before the last record.
        let mut m = a_response(&q, 60, true);
        m.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 9, 0, 4, 1, 1, 1, 1]);
        m[11] = 2;
        let name: crate::Name = "a.test".parse().unwrap();
        assert!(matches!(
            Entry::from_response(m, name.as_wire(), &config, None, Instant::now()),
            Err(EntryError::OptNotLast)
        ));
    }
}
