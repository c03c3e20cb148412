//! The background engine: one task that plans, and one task per cloud operation.
//!
//! The engine wakes on demand (an allocation found the pool empty, or idle fell below the low
//! watermark), when an operation ends, and when a timer is due (attach polls, cool-down ends,
//! the surplus release clock, GC). It never sits on the allocation path: allocations from idle
//! only take the state lock.

use std::{
    future::Future,
    net::{Ipv4Addr, Ipv6Addr},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use cnikit_cloud_api::{
    AssignIpsRequest, AttachEniRequest, Backoff, CloudProvider, CreateEniRequest, DetachEniRequest,
    EniFilter, EniStatus, ErrorKind, WaitOptions, WaitTarget,
};
use tokio::{sync::Notify, task::JoinSet, time::Instant};

use crate::{
    allocation::ResourceId,
    config::{PoolConfig, tags},
    error::Blocker,
    liveness::Liveness,
    metrics::Counters,
    plan::{Op, Path},
    pod::ResourceKind,
    state::{EniSlot, Orphan, Phase, PoolState, Role, Unit, UnitState, ki},
    store::{Change, RecordStore},
};

/// What the pool handle, the engine and the operations share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: Arc<PoolConfig>,
    pub(crate) cloud: Arc<dyn CloudProvider>,
    pub(crate) store: Arc<dyn RecordStore>,
    pub(crate) liveness: Arc<dyn Liveness>,
    pub(crate) state: Mutex<PoolState>,
    pub(crate) wake: Notify,
    /// Set with a wake when the wake is for new demand (the engine then gathers more).
    pub(crate) demand: AtomicBool,
    pub(crate) stopped: AtomicBool,
    pub(crate) stop: Notify,
    pub(crate) counters: Arc<Counters>,
    /// One GC at a time (periodic or explicit).
    pub(crate) gc_lock: tokio::sync::Mutex<()>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn wake(&self, demand: bool) {
        if demand {
            self.demand.store(true, Ordering::Release);
        }
        self.wake.notify_one();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Calls `f` with the engine's retry policy (see [`retry_call`]).
    pub(crate) async fn retry<T, F, Fut>(&self, what: &str, f: F) -> cnikit_cloud_api::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = cnikit_cloud_api::Result<T>>,
    {
        let limit = RetryLimit::Attempts(self.cfg.retry_attempts);
        retry_call(&self.cfg, || self.lock().rng.f64(), limit, what, f).await
    }

    /// Like [`Shared::retry`], but keeps trying retryable errors until `start_timeout`
    /// (start-up must not give up on a transient error).
    pub(crate) async fn retry_patiently<T, F, Fut>(
        &self,
        what: &str,
        f: F,
    ) -> cnikit_cloud_api::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = cnikit_cloud_api::Result<T>>,
    {
        let limit = RetryLimit::Until(Instant::now() + self.cfg.start_timeout);
        retry_call(&self.cfg, || self.lock().rng.f64(), limit, what, f).await
    }
}

/// How long [`retry_call`] keeps trying.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RetryLimit {
    /// This many attempts in all.
    Attempts(u32),
    /// Until this instant.
    Until(Instant),
}

/// Calls `f` until it succeeds, a non-retryable error comes, or `limit` is reached; waits a
/// jittered, growing delay between attempts (twice as long after throttling).
pub(crate) async fn retry_call<T, F, Fut>(
    cfg: &PoolConfig,
    mut unit: impl FnMut() -> f64,
    limit: RetryLimit,
    what: &str,
    mut f: F,
) -> cnikit_cloud_api::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = cnikit_cloud_api::Result<T>>,
{
    let backoff = Backoff::new(cfg.retry_base, 2.0, cfg.retry_max, 0.5);
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if e.is_retryable() => {
                let mut delay = backoff.delay(attempt, unit());
                if e.kind() == ErrorKind::Throttled {
                    delay = (delay * 2).min(cfg.retry_max);
                }
                let more = match limit {
                    RetryLimit::Attempts(n) => attempt + 1 < n,
                    RetryLimit::Until(t) => Instant::now() + delay < t,
                };
                if !more {
                    return Err(e);
                }
                tracing::debug!(what, attempt, error = %e, ?delay, "cloud call failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A fresh idempotency token for one operation (kept across its retries).
fn token() -> String {
    format!(
        "cnikit-{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

impl PoolState {
    /// Pauses what failed and notes why, so waiting allocations can say so at their deadline.
    pub(crate) fn on_failure(&mut self, path: &Path, err: &cnikit_cloud_api::Error, now: Instant) {
        let kind = err.kind();
        let detail = err.to_string();
        tracing::warn!(?path, error = %detail, "pool operation failed");
        let pause = |failures: u32, cfg: &PoolConfig| {
            Backoff::new(cfg.retry_base, 2.0, cfg.retry_max, 0.0).base_delay(failures)
        };
        match (kind, path) {
            (ErrorKind::SubnetExhausted, Path::Eni(id) | Path::Create(id)) => {
                let vsw = match path {
                    Path::Eni(_) => self
                        .enis
                        .get(id)
                        .map_or_else(String::new, |s| s.vswitch_id.clone()),
                    Path::Create(_) => id.clone(),
                };
                let until = now + self.cfg.exhausted_pause;
                self.vswitch_paused.insert(vsw.clone(), until);
                if let Some(s) = self.subnets.get_mut(&vsw) {
                    s.free = 0;
                }
                let exhausted: Vec<String> = self
                    .cfg
                    .vswitches
                    .iter()
                    .filter(|v| self.vswitch_paused.get(*v).is_some_and(|t| *t > now))
                    .cloned()
                    .collect();
                self.blocker = Some(Blocker::SubnetExhausted {
                    vswitch_ids: exhausted,
                });
            }
            (ErrorKind::QuotaExceeded, Path::Eni(id)) => {
                if let Some(slot) = self.enis.get_mut(id) {
                    // The ENI holds what it can: stop asking it for more.
                    slot.ip_limit = slot.v4_count();
                    slot.paused_until = Some(now + self.cfg.quota_pause);
                }
                self.blocker = Some(Blocker::QuotaExceeded { detail });
            }
            (ErrorKind::QuotaExceeded, Path::Create(_)) => {
                self.create_paused_until = Some(now + self.cfg.quota_pause);
                self.blocker = Some(Blocker::QuotaExceeded { detail });
            }
            (k, Path::Eni(id)) => {
                let quota_pause = self.cfg.quota_pause;
                let cfg = self.cfg.clone();
                if let Some(slot) = self.enis.get_mut(id) {
                    slot.failures += 1;
                    let d = if k.is_retryable() || k == ErrorKind::Timeout {
                        pause(slot.failures, &cfg)
                    } else {
                        quota_pause
                    };
                    slot.paused_until = Some(now + d);
                }
                self.blocker = Some(Blocker::Cloud { kind: k, detail });
            }
            (k, Path::Create(vsw)) => {
                self.create_failures += 1;
                let d = if k.is_retryable() || k == ErrorKind::Timeout {
                    pause(self.create_failures, &self.cfg)
                } else {
                    self.cfg.quota_pause
                };
                if k == ErrorKind::NotFound {
                    self.vswitch_paused.insert(vsw.clone(), now + d);
                } else {
                    self.create_paused_until = Some(now + d);
                }
                self.blocker = Some(Blocker::Cloud { kind: k, detail });
            }
        }
    }

    /// Progress was made: forget the last failure.
    /// (Quota and exhaustion notes last while their pause does; see `refresh_blocker`.)
    fn on_progress(&mut self) {
        if matches!(
            self.blocker,
            Some(Blocker::Cloud { .. } | Blocker::Provisioning)
        ) {
            self.blocker = None;
        }
    }
}

/// The engine loop; returns when the pool stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut ops: JoinSet<()> = JoinSet::new();
    loop {
        if shared.is_stopped() {
            break;
        }
        let now = Instant::now();
        let (planned, wake_at) = {
            let mut st = shared.lock();
            let planned = st.plan(now);
            (planned, st.next_wake(now))
        };
        for op in planned {
            tracing::debug!(?op, "starting");
            ops.spawn(execute(shared.clone(), op));
        }
        let timer = async {
            match wake_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shared.wake.notified() => gather(&shared).await,
            Some(_) = ops.join_next(), if !ops.is_empty() => {}
            () = timer => {}
            () = shared.stop.notified() => break,
        }
    }
    ops.abort_all();
    while ops.join_next().await.is_some() {}
}

/// After a wake for new demand, waits until no new demand arrived for one `batch_window`
/// (at most ten windows), so that requests arriving together are served by the same calls.
async fn gather(shared: &Shared) {
    let window = shared.cfg.batch_window;
    if window.is_zero() || !shared.demand.swap(false, Ordering::AcqRel) {
        return;
    }
    for _ in 0..10 {
        tokio::time::sleep(window).await;
        if !shared.demand.swap(false, Ordering::AcqRel) {
            break;
        }
    }
}

async fn execute(shared: Arc<Shared>, op: Op) {
    match op {
        Op::Assign { eni_id, v4, v6 } => assign(&shared, &eni_id, v4, v6).await,
        Op::Create {
            role,
            vswitch_id,
            secondary_v4,
            v6,
            units,
        } => create(&shared, role, &vswitch_id, secondary_v4, v6, units).await,
        Op::Poll { eni_ids } => poll(&shared, &eni_ids).await,
        Op::Attach { eni_id } => reattach(&shared, &eni_id).await,
        Op::Unassign {
            eni_id,
            v4,
            v6,
            cooling_records,
        } => unassign(&shared, &eni_id, &v4, &v6, cooling_records).await,
        Op::Delete {
            eni_id,
            detach,
            cooling_records,
        } => delete(&shared, &eni_id, detach, cooling_records).await,
        Op::WarmUpDone(kind) => warm_up_done(&shared, kind).await,
        Op::Gc => {
            let report = crate::reconcile::gc(&shared).await;
            if !report.is_empty() {
                tracing::info!(?report, "GC");
            }
            let mut st = shared.lock();
            st.gc_running = false;
            let every = st.cfg.gc_interval;
            st.next_gc_at = Instant::now() + st.jittered(every);
        }
    }
    shared.wake(false);
}

async fn assign(shared: &Shared, eni_id: &str, v4: u32, v6: u32) {
    let t4 = token();
    let r4 = if v4 > 0 {
        shared
            .retry("assign IPv4", || {
                let req = AssignIpsRequest::count(eni_id, v4).with_client_token(t4.clone());
                async move { shared.cloud.assign_ipv4(&req).await }
            })
            .await
    } else {
        Ok(Vec::new())
    };
    let r6 = if v6 > 0 && r4.is_ok() {
        let t6 = token();
        Some(
            shared
                .retry("assign IPv6", || {
                    let req = AssignIpsRequest::count(eni_id, v6).with_client_token(t6.clone());
                    async move { shared.cloud.assign_ipv6(&req).await }
                })
                .await,
        )
    } else {
        None
    };
    let exhausted_free = match (&r4, &r6) {
        (Err(e), _) | (_, Some(Err(e))) if e.kind() == ErrorKind::SubnetExhausted => {
            let vsw = shared.lock().enis.get(eni_id).map(|s| s.vswitch_id.clone());
            match vsw {
                Some(vsw) => subnet_free(shared, &vsw).await,
                None => None,
            }
        }
        _ => None,
    };
    let now = Instant::now();
    let mut st = shared.lock();
    let stack = st.cfg.ip_stack;
    let mut failure = None;
    if let Some(slot) = st.enis.get_mut(eni_id) {
        slot.busy = false;
        slot.in_flight_v4 = slot.in_flight_v4.saturating_sub(v4);
        slot.in_flight_v6 = slot.in_flight_v6.saturating_sub(v6);
        match r4 {
            Ok(ips) => {
                for ip in ips {
                    slot.units
                        .entry(ip)
                        .or_insert_with(|| Unit::new(None, UnitState::Pending));
                }
                slot.epoch += 1;
            }
            Err(e) => failure = Some(e),
        }
        match r6 {
            Some(Ok(ips)) => slot.spare_v6.extend(ips),
            Some(Err(e)) => failure = Some(e),
            None => {}
        }
        slot.pair_v6(stack);
        slot.activate(stack);
        if failure.is_none() {
            slot.failures = 0;
        }
        let vsw = slot.vswitch_id.clone();
        if failure.is_some() {
            st.give_back_free(&vsw, u64::from(v4), exhausted_free);
            if exhausted_free.is_some_and(|f| f > 0) {
                let soon = now + st.cfg.retry_base;
                st.vswitch_paused.insert(vsw, soon);
            }
        }
    }
    match failure {
        Some(e) if exhausted_free.is_some_and(|f| f > 0) => {
            tracing::info!(eni_id, error = %e, "vSwitch has fewer addresses than asked; asking less");
        }
        Some(e) => st.on_failure(&Path::Eni(eni_id.to_owned()), &e, now),
        None => st.on_progress(),
    }
    st.serve_waiters();
}

/// The free addresses of a vSwitch as the cloud says now (after an exhaustion error, so the
/// next request asks for what is left instead of pausing the vSwitch).
async fn subnet_free(shared: &Shared, vsw: &str) -> Option<u64> {
    shared
        .retry("describe vSwitch", || shared.cloud.describe_subnet(vsw))
        .await
        .ok()
        .map(|s| s.available_ipv4)
}

impl PoolState {
    /// A request that took `n` addresses from the estimate failed: give them back, or take
    /// the cloud's fresh count when there is one.
    fn give_back_free(&mut self, vsw: &str, n: u64, fresh: Option<u64>) {
        if let Some(s) = self.subnets.get_mut(vsw) {
            s.free = fresh.unwrap_or(s.free + n);
        }
    }
}

fn role_tag(role: Role) -> &'static str {
    match role {
        Role::Exclusive => tags::ROLE_EXCLUSIVE,
        Role::Shared | Role::Primary => tags::ROLE_SHARED,
    }
}

async fn create(shared: &Shared, role: Role, vsw: &str, secondary: u32, v6: u32, units: u32) {
    let cfg = &shared.cfg;
    let mut req = CreateEniRequest::new(vsw, cfg.security_groups.iter().cloned())
        .with_secondary_ipv4_count(secondary)
        .with_ipv6_count(v6)
        .with_tag(tags::POOL, cfg.pool_name.clone())
        .with_tag(tags::INSTANCE, cfg.instance_id.clone())
        .with_tag(tags::ROLE, role_tag(role))
        .with_description("created by cnikit-eni-pool")
        .with_client_token(token());
    for (k, v) in &cfg.extra_tags {
        req = req.with_tag(k.clone(), v.clone());
    }
    let k = ki(role.kind());
    let created = shared
        .retry("create ENI", || shared.cloud.create_eni(&req))
        .await;
    let exhausted_free = match &created {
        Err(e) if e.kind() == ErrorKind::SubnetExhausted => subnet_free(shared, vsw).await,
        _ => None,
    };
    let eni = {
        let now = Instant::now();
        let mut st = shared.lock();
        st.creating[k] = st.creating[k].saturating_sub(units);
        st.creates_in_flight = st.creates_in_flight.saturating_sub(1);
        match created {
            Err(e) => {
                st.give_back_free(vsw, u64::from(units), exhausted_free);
                if exhausted_free.is_some_and(|f| f > 0) {
                    tracing::info!(vsw, error = %e, "vSwitch has fewer addresses than asked; asking less");
                    let soon = now + st.cfg.retry_base;
                    st.vswitch_paused.insert(vsw.to_owned(), soon);
                } else {
                    st.on_failure(&Path::Create(vsw.to_owned()), &e, now);
                }
                return;
            }
            Ok(eni) => {
                st.create_failures = 0;
                let cap = st.cap;
                let v6_limit = st.v6_limit;
                let phase = Phase::Attaching {
                    since: now,
                    next_poll: None,
                    interval: cfg.attach_poll_initial,
                    attach_attempts: 1,
                };
                let slot =
                    EniSlot::from_eni(&eni, role, phase, &UnitState::Pending, cfg, &cap, v6_limit);
                st.orphans.remove(&eni.id);
                st.enis.insert(eni.id.clone(), slot);
                eni
            }
        }
    };
    attach_and_watch(shared, &eni.id, vsw).await;
}

/// Attaches a created ENI; on success the attach poll watches it, on failure it is deleted.
async fn attach_and_watch(shared: &Shared, eni_id: &str, vsw: &str) {
    let req = AttachEniRequest::new(eni_id, shared.cfg.instance_id.clone());
    let attached = shared
        .retry("attach ENI", || shared.cloud.attach_eni(&req))
        .await;
    let now = Instant::now();
    let mut st = shared.lock();
    let initial = st.cfg.attach_poll_initial;
    match attached {
        Ok(()) => {
            if let Some(slot) = st.enis.get_mut(eni_id)
                && let Phase::Attaching {
                    next_poll,
                    interval,
                    ..
                } = &mut slot.phase
            {
                *next_poll = Some(now + initial);
                *interval = initial;
            }
        }
        Err(e) => {
            st.on_failure(&Path::Create(vsw.to_owned()), &e, now);
            // The attach may have happened with its answer lost: detach before deleting.
            let op = st.begin_delete(eni_id, true);
            st.queued.push(op);
        }
    }
}

async fn reattach(shared: &Shared, eni_id: &str) {
    let vsw = shared
        .lock()
        .enis
        .get(eni_id)
        .map(|s| s.vswitch_id.clone())
        .unwrap_or_default();
    attach_and_watch(shared, eni_id, &vsw).await;
}

async fn poll(shared: &Shared, ids: &[String]) {
    let filter = EniFilter::ids(ids.iter().cloned());
    let described = shared
        .retry("describe attaching ENIs", || {
            shared.cloud.describe_enis(&filter)
        })
        .await;
    let now = Instant::now();
    let mut st = shared.lock();
    st.poll_in_flight = false;
    let instance = st.cfg.instance_id.clone();
    let stack = st.cfg.ip_stack;
    let max = st.cfg.attach_poll_max;
    let enis = match described {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "describing attaching ENIs failed");
            for id in ids {
                if let Some(slot) = st.enis.get_mut(id)
                    && let Phase::Attaching {
                        next_poll: Some(t),
                        interval,
                        ..
                    } = &mut slot.phase
                {
                    *interval = (*interval).mul_f64(1.5).min(max);
                    *t = now + *interval;
                }
            }
            return;
        }
    };
    let mut progress = false;
    for id in ids {
        let found = enis.iter().find(|e| e.id == *id);
        let Some(slot) = st.enis.get_mut(id) else {
            continue;
        };
        let Phase::Attaching {
            next_poll,
            interval,
            attach_attempts,
            ..
        } = &mut slot.phase
        else {
            continue;
        };
        match found {
            None => {
                tracing::warn!(eni_id = %id, "attaching ENI vanished");
                st.drop_eni(id);
            }
            Some(e) if e.status == EniStatus::InUse && e.instance_id() == Some(&instance) => {
                slot.phase = Phase::Ready;
                slot.device_index = e.attachment.as_ref().and_then(|a| a.device_index);
                if slot.role != Role::Exclusive {
                    for ip in &e.secondary_ipv4 {
                        slot.units
                            .entry(*ip)
                            .or_insert_with(|| Unit::new(None, UnitState::Pending));
                    }
                }
                for ip in &e.ipv6 {
                    let paired = slot.units.values().any(|u| u.v6 == Some(*ip));
                    if !paired && !slot.spare_v6.contains(ip) {
                        slot.spare_v6.push(*ip);
                    }
                }
                slot.pair_v6(stack);
                slot.epoch += 1;
                progress = true;
                tracing::debug!(eni_id = %id, units = slot.units.len(), "ENI attached");
                st.activate(id);
            }
            Some(e) if e.status == EniStatus::Available => {
                // The attach failed after it was accepted.
                if *attach_attempts < 3 {
                    *attach_attempts += 1;
                    *next_poll = None;
                    st.queued.push(Op::Attach { eni_id: id.clone() });
                } else {
                    st.blocker = Some(Blocker::Cloud {
                        kind: ErrorKind::InvalidState,
                        detail: format!("ENI {id} failed to attach three times"),
                    });
                    let op = st.begin_delete(id, false);
                    st.queued.push(op);
                }
            }
            Some(_) => {
                if next_poll.is_some_and(|t| t <= now) {
                    *interval = (*interval).mul_f64(1.5).min(max);
                    *next_poll = Some(now + *interval);
                }
            }
        }
    }
    if progress {
        st.on_progress();
        st.serve_waiters();
    }
}

async fn forget_cooling(shared: &Shared, records: Vec<ResourceId>) {
    if records.is_empty() {
        return;
    }
    let changes = records.into_iter().map(Change::RemoveCooling).collect();
    if let Err(e) = shared.store.commit(changes).await {
        // Harmless: stale cooling records are dropped at the next start.
        tracing::warn!(error = %e, "removing cooling records failed");
    }
}

async fn unassign(
    shared: &Shared,
    eni_id: &str,
    v4: &[Ipv4Addr],
    v6: &[Ipv6Addr],
    cooling_records: Vec<ResourceId>,
) {
    let mut result = shared
        .retry("unassign IPv4", || shared.cloud.unassign_ipv4(eni_id, v4))
        .await;
    if result.is_ok() && !v6.is_empty() {
        result = shared
            .retry("unassign IPv6", || shared.cloud.unassign_ipv6(eni_id, v6))
            .await;
    }
    let ok = result.is_ok();
    {
        let now = Instant::now();
        let mut st = shared.lock();
        if let Some(slot) = st.enis.get_mut(eni_id) {
            slot.busy = false;
            if ok {
                let vsw = slot.vswitch_id.clone();
                st.drop_units(eni_id, v4);
                if let Some(s) = st.subnets.get_mut(&vsw) {
                    s.free += v4.len() as u64;
                }
            } else {
                for ip in v4 {
                    if let Some(u) = slot.units.get_mut(ip)
                        && u.state == UnitState::Releasing
                    {
                        u.state = UnitState::Idle;
                        slot.idle.push_back(*ip);
                    }
                }
            }
        }
        if let Err(e) = &result {
            st.on_failure(&Path::Eni(eni_id.to_owned()), e, now);
        }
        st.serve_waiters();
    }
    if ok {
        forget_cooling(shared, cooling_records).await;
    }
}

/// Detaches (when asked) and deletes an ENI. On failure the ENI becomes an orphan that is
/// tried again later.
async fn delete(shared: &Shared, eni_id: &str, detach: bool, cooling_records: Vec<ResourceId>) {
    let result = detach_and_delete(shared, eni_id, detach).await;
    let now = Instant::now();
    {
        let mut st = shared.lock();
        st.drop_eni(eni_id);
        match &result {
            Ok(()) => {
                st.orphans.remove(eni_id);
            }
            Err(e) => {
                tracing::warn!(eni_id, error = %e, "deleting ENI failed; will try again");
                let retry_in = st.cfg.retry_max;
                st.orphans.insert(
                    eni_id.to_owned(),
                    Orphan {
                        delete_after: now + retry_in,
                        attached: true,
                        busy: false,
                    },
                );
            }
        }
        st.serve_waiters();
    }
    if result.is_ok() {
        forget_cooling(shared, cooling_records).await;
    }
}

pub(crate) async fn detach_and_delete(
    shared: &Shared,
    eni_id: &str,
    detach: bool,
) -> cnikit_cloud_api::Result<()> {
    let cfg = &shared.cfg;
    if detach {
        let req = DetachEniRequest::new(eni_id, cfg.instance_id.clone());
        match shared
            .retry("detach ENI", || shared.cloud.detach_eni(&req))
            .await
        {
            Ok(()) => {}
            // Not attached (any more): nothing to detach.
            Err(e) if e.kind() == ErrorKind::InvalidState => {}
            Err(e) => return Err(e),
        }
        let mut opts = WaitOptions::default().with_timeout(cfg.attach_timeout);
        opts.initial_delay = cfg.attach_poll_initial.min(Duration::from_secs(1));
        opts.poll = Backoff::new(
            cfg.attach_poll_initial.min(Duration::from_secs(1)),
            1.5,
            cfg.attach_poll_max,
            0.2,
        );
        match shared
            .cloud
            .wait_eni(eni_id, &WaitTarget::Detached, &opts)
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    shared
        .retry("delete ENI", || shared.cloud.delete_eni(eni_id))
        .await
}

async fn warm_up_done(shared: &Shared, kind: ResourceKind) {
    let meta = {
        let mut st = shared.lock();
        match kind {
            ResourceKind::SharedIp => st.meta.shared_warm_up_done = true,
            ResourceKind::ExclusiveEni => st.meta.exclusive_warm_up_done = true,
        }
        st.meta
    };
    if let Err(e) = shared.store.commit(vec![Change::PutMeta(meta)]).await {
        tracing::warn!(error = %e, "recording the end of warm-up failed; it may run again");
    }
}
