//! The answer pipeline shared by UDP and TCP.
//!
//! Fast path ([`Resolver::answer_fast`], synchronous, no allocation on a hit): parse and
//! validate the request, build the cache key (with the AutoPath flag when the query is the first
//! search step of the client's own namespace), and serve a fresh cache entry by patching bytes.
//!
//! Slow path ([`Resolver::answer_slow`], async): one computation per key at a time
//! (concurrent misses wait for the first), then
//! - AutoPath keys: walk the plan's candidates through the plain path below and synthesize the
//!   answer (a CNAME from the asked name to the found one, question unchanged);
//! - plain keys: the cluster records if they claim the name (following an `ExternalName` CNAME),
//!   else the upstream seam; on upstream failure a stale entry if allowed, else SERVFAIL.
//!
//! Every result is stored in the cache under its key, and every intermediate step of a walk
//! under its own key, so a client that walks the list itself afterwards is answered from cache.

use std::{
    collections::HashMap,
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use tokio::sync::broadcast;

use crate::{
    AutoPathPlanner, ClusterRecords, DnsClass, Name, PodIndex, RecordType,
    cache::{Cache, Entry, EntryError, EntryKind, KEY_AUTOPATH, KEY_CD, KEY_DO, KeyBuf, split_key},
    cluster::Lookup,
    codec,
    server::stats::{Counters, bump},
    upstream::{Upstream, UpstreamQuery},
    wire::{
        self, RCODE_FORMERR, RCODE_NOTIMP, RCODE_NXDOMAIN, RCODE_REFUSED, RCODE_SERVFAIL, Reject,
        Request, parse_request, write_error,
    },
};

/// How deep `ExternalName` CNAMEs are followed.
const MAX_CNAME_DEPTH: u8 = 8;

/// What the fast path did.
pub(crate) enum Fast {
    /// `out` holds the reply.
    Reply,
    /// `out` holds the reply, and the entry should be refreshed in the background.
    ReplyAndRefresh(KeyBuf),
    /// Nothing to send.
    Drop,
    /// Needs the slow path for this key.
    Miss(KeyBuf),
}

/// Keys being computed, with the channel their result will be announced on.
type Inflight = Mutex<HashMap<Box<[u8]>, broadcast::Sender<Arc<Entry>>>>;

/// The pipeline.
pub(crate) struct Resolver {
    pub(crate) cache: Cache,
    records: Arc<dyn ClusterRecords>,
    pods: Arc<dyn PodIndex>,
    upstream: Arc<dyn Upstream>,
    planner: Option<AutoPathPlanner>,
    inflight: Inflight,
    /// Counters of the slow path and TCP.
    pub(crate) counters: Counters,
    pub(crate) server_payload: u16,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("cache", &self.cache)
            .field("planner", &self.planner)
            .finish_non_exhaustive()
    }
}

/// Removes an in-flight marker when the computing task ends or is cancelled; waiters then see
/// the channel close and compute for themselves.
struct InflightGuard<'a> {
    resolver: &'a Resolver,
    key: &'a [u8],
    armed: bool,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.resolver
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(self.key);
    }
}

/// Rcodes after which the AutoPath walk moves to the next candidate (CoreDNS: NXDOMAIN and the
/// rcodes its chain does not write to the client).
fn is_search_miss(rcode: u8) -> bool {
    matches!(
        rcode,
        RCODE_NXDOMAIN | RCODE_SERVFAIL | RCODE_REFUSED | RCODE_FORMERR | RCODE_NOTIMP
    )
}

/// A boxed future (for the recursion of CNAME following).
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Resolver {
    pub(crate) fn new(
        cache: Cache,
        records: Arc<dyn ClusterRecords>,
        pods: Arc<dyn PodIndex>,
        upstream: Arc<dyn Upstream>,
        planner: Option<AutoPathPlanner>,
        server_payload: u16,
    ) -> Self {
        Self {
            cache,
            records,
            pods,
            upstream,
            planner,
            inflight: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            server_payload,
        }
    }

    fn generation_ok(&self, entry: &Entry) -> bool {
        entry
            .generation
            .is_none_or(|g| g == self.records.generation())
    }

    fn usable(&self, entry: &Entry, now: Instant) -> bool {
        entry.is_fresh(now) && self.generation_ok(entry)
    }

    /// The fast path. `udp_limit` is `None` for TCP.
    pub(crate) fn answer_fast(
        &self,
        bytes: &[u8],
        client: IpAddr,
        udp: bool,
        now: Instant,
        counters: &Counters,
        out: &mut Vec<u8>,
    ) -> Fast {
        let req = match parse_request(bytes) {
            Ok(req) => req,
            Err(Reject::Drop) => {
                bump(&counters.dropped);
                return Fast::Drop;
            }
            Err(Reject::Error {
                rcode,
                question_end,
                edns,
            }) => {
                bump(&counters.error_replies);
                write_error(bytes, rcode, question_end, edns, self.server_payload, out);
                return Fast::Reply;
            }
        };
        match RecordType(req.qtype) {
            RecordType::A => bump(&counters.a_queries),
            RecordType::AAAA => bump(&counters.aaaa_queries),
            RecordType::OPT => return self.refuse(&req, RCODE_FORMERR, counters, out),
            RecordType::AXFR | RecordType::IXFR => {
                return self.refuse(&req, RCODE_REFUSED, counters, out);
            }
            _ => {}
        }
        let mut flags = 0;
        if req.dnssec_ok() {
            flags |= KEY_DO;
        }
        if req.checking_disabled() {
            flags |= KEY_CD;
        }
        let mut key = KeyBuf::new(req.qname_wire(), req.qtype, req.qclass, flags);
        if self.autopath_applies(&key, req.qclass, client) {
            key.set_flags(flags | KEY_AUTOPATH);
        }
        if let Some(entry) = self.cache.get(key.as_bytes())
            && self.usable(&entry, now)
        {
            bump(&counters.cache_hits);
            let refresh = entry.hit(now, self.cache.config().prefetch);
            self.write(&entry, &req, now, udp, counters, out);
            return if refresh {
                Fast::ReplyAndRefresh(key)
            } else {
                Fast::Reply
            };
        }
        bump(&counters.cache_misses);
        Fast::Miss(key)
    }

    fn refuse(&self, req: &Request<'_>, rcode: u8, counters: &Counters, out: &mut Vec<u8>) -> Fast {
        bump(&counters.error_replies);
        write_error(
            req.bytes,
            u16::from(rcode),
            Some(req.question_end()),
            req.edns,
            self.server_payload,
            out,
        );
        Fast::Reply
    }

    fn write(
        &self,
        entry: &Entry,
        req: &Request<'_>,
        now: Instant,
        udp: bool,
        counters: &Counters,
        out: &mut Vec<u8>,
    ) {
        let limit = udp.then(|| req.udp_limit(self.server_payload));
        entry.write_reply(req, now, limit, self.server_payload, out);
        if entry.kind == EntryKind::ServerFailure {
            bump(&counters.servfail_replies);
        }
        if out.len() > 3 && out[2] & 0x02 != 0 && entry.wire()[2] & 0x02 == 0 {
            bump(&counters.truncated_replies);
        }
    }

    /// The CoreDNS trigger: the name lies below `<ns>.svc.<zone>` and the client is a known
    /// pod of namespace `ns`.
    fn autopath_applies(&self, key: &KeyBuf, qclass: u16, client: IpAddr) -> bool {
        let Some(planner) = &self.planner else {
            return false;
        };
        if qclass != DnsClass::IN.0 {
            return false;
        }
        let Some(label) = planner.namespace_label(key.qname()) else {
            return false;
        };
        self.pods
            .namespace_of(client.to_canonical())
            .is_some_and(|ns| ns.as_bytes().eq_ignore_ascii_case(label))
    }

    /// The slow path: resolves `key` and writes the reply to `bytes` (already validated by the
    /// fast path).
    pub(crate) async fn answer_slow(&self, bytes: &[u8], key: &KeyBuf, udp: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let Ok(req) = parse_request(bytes) else {
            return out;
        };
        let entry = self.resolve_key(key.as_bytes()).await;
        self.write(&entry, &req, Instant::now(), udp, &self.counters, &mut out);
        out
    }

    /// Recomputes `key` ahead of expiry. A refresh that fails (SERVFAIL, or only stale data)
    /// leaves the current entry in place for the rest of its life.
    pub(crate) async fn refresh(&self, key: &[u8]) {
        bump(&self.counters.prefetches);
        let entry = self.singleflight(key, self.compute(key)).await;
        if !entry.is_degraded() {
            self.cache.insert(key, entry, Instant::now());
        }
    }

    async fn resolve_key(&self, key: &[u8]) -> Arc<Entry> {
        if let Some(entry) = self.cache.get(key)
            && self.usable(&entry, Instant::now())
        {
            return entry;
        }
        let entry = self.singleflight(key, self.compute(key)).await;
        self.cache.insert(key, Arc::clone(&entry), Instant::now());
        entry
    }

    async fn singleflight(
        &self,
        key: &[u8],
        compute: impl Future<Output = Arc<Entry>>,
    ) -> Arc<Entry> {
        let waiting = {
            let mut map = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            match map.get(key) {
                Some(tx) => Some(tx.subscribe()),
                None => {
                    map.insert(key.into(), broadcast::channel(1).0);
                    None
                }
            }
        };
        if let Some(mut rx) = waiting {
            if let Ok(entry) = rx.recv().await {
                return entry;
            }
            // The computing task went away: do it here (without joining the map again).
            return compute.await;
        }
        let mut guard = InflightGuard {
            resolver: self,
            key,
            armed: true,
        };
        let entry = compute.await;
        let tx = self
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        guard.armed = false;
        if let Some(tx) = tx {
            // No receivers is fine.
            tx.send(Arc::clone(&entry)).ok();
        }
        entry
    }

    /// Computes the entry for `key` (the caller caches it).
    async fn compute(&self, key: &[u8]) -> Arc<Entry> {
        let Some((qname, qtype, qclass, flags)) = split_key(key) else {
            return self.servfail_entry(&Name::root(), RecordType(qtype_of(key)), 1);
        };
        let qtype = RecordType(qtype);
        let Ok(name) = Name::from_uncompressed_wire(qname) else {
            return self.servfail_entry(&Name::root(), qtype, qclass);
        };
        let q = Question {
            name,
            qtype,
            qclass,
            dnssec_ok: flags & KEY_DO != 0,
            checking_disabled: flags & KEY_CD != 0,
        };
        if flags & KEY_AUTOPATH != 0 {
            self.compute_autopath(&q).await
        } else {
            self.compute_plain(&q, key, 0).await
        }
    }

    /// Resolves a plain question through the cache (the building block of walks and CNAME
    /// following).
    fn resolve_plain<'a>(&'a self, q: &'a Question, depth: u8) -> BoxFuture<'a, Arc<Entry>> {
        Box::pin(async move {
            let key = q.key();
            if let Some(entry) = self.cache.get(key.as_bytes())
                && self.usable(&entry, Instant::now())
            {
                return entry;
            }
            let entry = self
                .singleflight(key.as_bytes(), self.compute_plain(q, key.as_bytes(), depth))
                .await;
            self.cache
                .insert(key.as_bytes(), Arc::clone(&entry), Instant::now());
            entry
        })
    }

    async fn compute_autopath(&self, q: &Question) -> Arc<Entry> {
        let generation = self.records.generation();
        let plain = |name: &Name| Question {
            name: name.clone(),
            ..q.clone()
        };
        let namespace = self
            .planner
            .as_ref()
            .and_then(|p| p.namespace_label(q.name.as_wire()))
            .and_then(|l| std::str::from_utf8(l).ok());
        let plan = self
            .planner
            .as_ref()
            .and_then(|p| p.plan(&q.name, q.qtype, DnsClass(q.qclass), namespace));
        let Some(plan) = plan else {
            return self.resolve_plain(&plain(&q.name), 0).await;
        };
        bump(&self.counters.autopath_walks);
        let first = self.resolve_plain(&plain(&plan.candidates[0]), 0).await;
        if !is_search_miss(first.rcode()) {
            return first;
        }
        for candidate in &plan.candidates[1..] {
            let found = self.resolve_plain(&plain(candidate), 0).await;
            if is_search_miss(found.rcode()) {
                continue;
            }
            let now = Instant::now();
            let synthesized = codec::synthesize(
                &plan.asked,
                q.qtype,
                q.qclass,
                candidate,
                found.wire(),
                found.age(now),
                found.ttl,
            )
            .and_then(|wire| {
                Entry::from_response(
                    wire,
                    plan.asked.as_wire(),
                    self.cache.config(),
                    Some(generation),
                    now,
                )
                .ok()
            });
            return match synthesized {
                Some(entry) => {
                    bump(&self.counters.autopath_successes);
                    Arc::new(entry)
                }
                // Could not re-encode what was found: let the client walk on its own.
                None => first,
            };
        }
        first
    }

    async fn compute_plain(&self, q: &Question, key: &[u8], depth: u8) -> Arc<Entry> {
        if q.qclass == DnsClass::IN.0 {
            let generation = self.records.generation();
            if let Some(lookup) = self.records.lookup(&q.name, q.qtype) {
                bump(&self.counters.cluster_answers);
                return self.cluster_entry(q, lookup, generation, depth).await;
            }
        }
        bump(&self.counters.upstream_queries);
        let query = UpstreamQuery {
            name: q.name.clone(),
            qtype: q.qtype,
            qclass: DnsClass(q.qclass),
            dnssec_ok: q.dnssec_ok,
            checking_disabled: q.checking_disabled,
        };
        match self.upstream.query(&query).await {
            Ok(reply) => match self.upstream_entry(reply, q, Instant::now()) {
                Ok(entry) => Arc::new(entry),
                Err(e) => {
                    tracing::debug!(name = %q.name, qtype = %q.qtype, error = %e, "unusable upstream reply");
                    bump(&self.counters.upstream_failures);
                    self.stale_or_servfail(q, key)
                }
            },
            Err(e) => {
                tracing::debug!(name = %q.name, qtype = %q.qtype, error = %e, "upstream failed");
                bump(&self.counters.upstream_failures);
                self.stale_or_servfail(q, key)
            }
        }
    }

    /// An upstream reply as an entry. Replies whose OPT record is not last (legal, rare) are
    /// re-encoded through hickory first, since cutting the OPT out could break compression
    /// pointers that follow it.
    fn upstream_entry(
        &self,
        mut reply: Vec<u8>,
        q: &Question,
        now: Instant,
    ) -> Result<Entry, EntryError> {
        let layout = wire::walk(&reply)?;
        let opt_not_last = layout
            .records
            .iter()
            .position(|r| r.rtype == wire::TYPE_OPT)
            .is_some_and(|i| i + 1 != layout.records.len());
        if opt_not_last {
            let mut m = codec::decode(&reply).ok_or(EntryError::OptNotLast)?;
            m.edns = None;
            reply = codec::encode(&m).ok_or(EntryError::OptNotLast)?;
        }
        Entry::from_response(reply, q.name.as_wire(), self.cache.config(), None, now)
    }

    fn stale_or_servfail(&self, q: &Question, key: &[u8]) -> Arc<Entry> {
        let now = Instant::now();
        let config = self.cache.config();
        if let Some(stale) = self.cache.get(key)
            && stale.is_stale_servable(now, config.serve_stale)
        {
            bump(&self.counters.stale_answers);
            return Arc::new(stale.stale_copy(config.servfail_ttl, now));
        }
        self.servfail_entry(&q.name, q.qtype, q.qclass)
    }

    fn servfail_entry(&self, name: &Name, qtype: RecordType, qclass: u16) -> Arc<Entry> {
        let message = codec::response(name, qtype, qclass, RCODE_SERVFAIL);
        let now = Instant::now();
        let entry = codec::encode(&message).and_then(|wire| {
            Entry::from_response(wire, name.as_wire(), self.cache.config(), None, now).ok()
        });
        match entry {
            Some(entry) => Arc::new(entry),
            None => Arc::new(minimal_servfail(
                name,
                qtype,
                qclass,
                self.cache.config(),
                now,
            )),
        }
    }

    async fn cluster_entry(
        &self,
        q: &Question,
        lookup: Lookup,
        generation: u64,
        depth: u8,
    ) -> Arc<Entry> {
        let mut m = codec::response(&q.name, q.qtype, q.qclass, 0);
        m.metadata.authoritative = true;
        match lookup {
            Lookup::Answer {
                answers,
                additionals,
            } => {
                let chase = answers
                    .iter()
                    .find_map(|r| match &r.data {
                        crate::RecordData::Cname(target) => Some(target.clone()),
                        _ => None,
                    })
                    .filter(|_| !matches!(q.qtype, RecordType::CNAME | RecordType::ANY));
                m.add_answers(answers.iter().map(codec::record));
                m.add_additionals(additionals.iter().map(codec::record));
                if let Some(target) = chase.filter(|_| depth < MAX_CNAME_DEPTH) {
                    let next = Question {
                        name: target,
                        ..q.clone()
                    };
                    let found = self.resolve_plain(&next, depth + 1).await;
                    let age = found.age(Instant::now());
                    if let Some(mut tail) = codec::decode(found.wire()) {
                        m.metadata.response_code = tail.metadata.response_code;
                        m.metadata.authoritative = false;
                        for r in tail.answers.iter_mut().chain(tail.authorities.iter_mut()) {
                            r.ttl = r.ttl.saturating_sub(age);
                        }
                        m.add_answers(tail.answers);
                        if m.answers.len() == 1 {
                            m.add_authorities(tail.authorities);
                        }
                    }
                }
            }
            Lookup::NoData { soa } => {
                m.add_authorities(soa.iter().map(codec::record));
            }
            Lookup::NxDomain { soa } => {
                m.metadata.response_code = hickory_proto::op::ResponseCode::NXDomain;
                m.add_authorities(soa.iter().map(codec::record));
            }
        }
        let now = Instant::now();
        codec::encode(&m)
            .and_then(|wire| {
                Entry::from_response(
                    wire,
                    q.name.as_wire(),
                    self.cache.config(),
                    Some(generation),
                    now,
                )
                .ok()
            })
            .map_or_else(|| self.servfail_entry(&q.name, q.qtype, q.qclass), Arc::new)
    }
}

fn qtype_of(key: &[u8]) -> u16 {
    split_key(key).map_or(0, |(_, t, _, _)| t)
}

/// A SERVFAIL built by hand, for when even encoding failed.
fn minimal_servfail(
    name: &Name,
    qtype: RecordType,
    qclass: u16,
    config: &crate::CacheConfig,
    now: Instant,
) -> Entry {
    let mut m = vec![0, 0, 0x80, 0x80 | RCODE_SERVFAIL, 0, 1, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(name.as_wire());
    m.extend_from_slice(&qtype.0.to_be_bytes());
    m.extend_from_slice(&qclass.to_be_bytes());
    Entry::from_response(m, name.as_wire(), config, None, now)
        .expect("a header and one question always form a valid entry")
}

/// A question on the slow path.
#[derive(Clone, Debug)]
struct Question {
    name: Name,
    qtype: RecordType,
    qclass: u16,
    dnssec_ok: bool,
    checking_disabled: bool,
}

impl Question {
    fn key(&self) -> KeyBuf {
        let mut flags = 0;
        if self.dnssec_ok {
            flags |= KEY_DO;
        }
        if self.checking_disabled {
            flags |= KEY_CD;
        }
        KeyBuf::new(self.name.as_wire(), self.qtype.0, self.qclass, flags)
    }
}
