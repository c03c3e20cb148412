//! The pool handle: start, allocate, release, GC, metrics, shutdown.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError, atomic::AtomicBool},
};

use cnikit_cloud_api::CloudProvider;
use tokio::{
    sync::{Notify, futures::OwnedNotified, oneshot},
    task::JoinHandle,
    time::Instant,
};
use tracing::Instrument;

use crate::{
    allocation::Allocation,
    config::{Capacity, IpStack, PoolConfig},
    engine::{self, RetryLimit, Shared, retry_call},
    error::{Blocker, Error, Result},
    liveness::{Liveness, NoLiveness},
    metered::Metered,
    metrics::{Counters, MetricsSnapshot},
    pod::{AllocateRequest, PodKey, ResourceKind},
    reconcile::{self, GcReport, StartReport},
    state::{PodEntry, PoolState, SubnetInfo, Waiter, ki},
    store::{BindingRecord, Change, CoolingRecord, MemoryStore, RecordStore, now_ms},
};

/// Builds a [`Pool`] from its configuration and its three seams.
#[derive(Debug)]
#[must_use]
pub struct PoolBuilder {
    config: PoolConfig,
    cloud: Option<Arc<dyn CloudProvider>>,
    store: Option<Arc<dyn RecordStore>>,
    liveness: Option<Arc<dyn Liveness>>,
    seed: Option<u64>,
}

impl PoolBuilder {
    /// Seeds the pool's random choices (jitter of retries, release batches and GC), so a test
    /// run can be replayed. Default: a random seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The cloud (required).
    pub fn cloud(mut self, cloud: Arc<dyn CloudProvider>) -> Self {
        self.cloud = Some(cloud);
        self
    }

    /// Where records go. Default: a [`MemoryStore`], which does not survive a restart; use a
    /// [`crate::FileStore`] (or your own) in production.
    pub fn store(mut self, store: Arc<dyn RecordStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Which pods still exist. Default: [`NoLiveness`] (GC never releases a binding).
    pub fn liveness(mut self, liveness: Arc<dyn Liveness>) -> Self {
        self.liveness = Some(liveness);
        self
    }

    /// Checks the configuration against the instance type, reconciles the records with the
    /// cloud's view and the liveness oracle, and starts the background engine (which then
    /// warms the pool up).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid configuration (also against the instance type's
    /// limits, or an unknown vSwitch); [`Error::Cloud`] when the cloud cannot be read;
    /// [`Error::Store`] when the records cannot be read or the reconciliation not recorded.
    pub async fn start(self) -> Result<Pool> {
        let cfg = Arc::new(self.config);
        cfg.validate()?;
        let cloud = self
            .cloud
            .ok_or_else(|| Error::Config("a cloud provider is required".into()))?;
        let counters = Arc::new(Counters::default());
        let cloud: Arc<dyn CloudProvider> = Arc::new(Metered {
            inner: cloud,
            counters: counters.clone(),
        });
        let patient = || RetryLimit::Until(Instant::now() + cfg.start_timeout);
        let limits = retry_call(&cfg, fastrand::f64, patient(), "instance limits", || {
            cloud.instance_limits(&cfg.instance_type)
        })
        .await
        .map_err(|e| match e.kind() {
            cnikit_cloud_api::ErrorKind::NotFound => {
                Error::Config(format!("instance type {}: {e}", cfg.instance_type))
            }
            _ => Error::cloud(format!("limits of {}", cfg.instance_type), e),
        })?;
        let cap = cfg.capacity(&limits)?;
        let mut subnets = BTreeMap::new();
        for vsw in &cfg.vswitches {
            let s = retry_call(&cfg, fastrand::f64, patient(), "describe vSwitch", || {
                cloud.describe_subnet(vsw)
            })
            .await
            .map_err(|e| match e.kind() {
                cnikit_cloud_api::ErrorKind::NotFound => {
                    Error::Config(format!("vSwitch {vsw}: {e}"))
                }
                _ => Error::cloud(format!("describe vSwitch {vsw}"), e),
            })?;
            let cidr = s
                .ipv4_cidr
                .ok_or_else(|| Error::Config(format!("vSwitch {vsw} has no IPv4 CIDR")))?;
            if cfg.ip_stack == IpStack::Dual && s.ipv6_cidr.is_none() {
                return Err(Error::Config(format!(
                    "ip_stack dual: vSwitch {vsw} has no IPv6 CIDR"
                )));
            }
            subnets.insert(
                vsw.clone(),
                SubnetInfo {
                    cidr,
                    ipv6_cidr: s.ipv6_cidr,
                    gateway: cfg.gateway.gateway(cidr),
                    free: s.available_ipv4,
                },
            );
        }
        let seed = self.seed.unwrap_or_else(|| fastrand::u64(..));
        let state = PoolState::new(
            cfg.clone(),
            cap,
            limits.ipv6_per_eni,
            subnets,
            Instant::now(),
            seed,
        );
        let shared = Arc::new(Shared {
            cfg,
            cloud,
            store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
            liveness: self.liveness.unwrap_or_else(|| Arc::new(NoLiveness)),
            state: Mutex::new(state),
            wake: Notify::new(),
            demand: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            stop: Notify::new(),
            counters,
            gc_lock: tokio::sync::Mutex::new(()),
        });
        let report = reconcile::start(&shared).await?;
        tracing::info!(?report, capacity = ?cap, "pool started");
        let engine = tokio::spawn(engine::run(shared.clone()));
        Ok(Pool {
            inner: Arc::new(Handle {
                shared,
                engine: Mutex::new(Some(engine)),
                report,
                capacity: cap,
            }),
        })
    }
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    engine: Mutex<Option<JoinHandle<()>>>,
    report: StartReport,
    capacity: Capacity,
}

impl Handle {
    fn stop(&self) {
        self.shared
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.stop.notify_one();
        // Waiting allocations fail with `Shutdown`.
        let mut st = self.shared.lock();
        for q in &mut st.waiters {
            q.clear();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop();
        if let Some(engine) = self
            .engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            engine.abort();
        }
    }
}

/// A warm pool of ENI IPs and exclusive ENIs. Cheap to clone (a shared handle); the background
/// engine stops when the last clone is dropped or [`Pool::shutdown`] is called.
///
/// See the [crate documentation](crate) for an example.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: Arc<Handle>,
}

enum Step {
    Done(Allocation),
    WaitForPod(std::pin::Pin<Box<OwnedNotified>>),
    Commit {
        alloc: Allocation,
        notify: Arc<Notify>,
        remove_cooling: bool,
        from_idle: bool,
    },
    WaitForUnit {
        rx: oneshot::Receiver<Allocation>,
        id: u64,
        notify: Arc<Notify>,
    },
}

/// Registers interest in `notify` before the state lock is released, so no wake is missed.
fn subscribe(notify: &Arc<Notify>) -> std::pin::Pin<Box<OwnedNotified>> {
    let mut fut = Box::pin(notify.clone().notified_owned());
    fut.as_mut().enable();
    fut
}

/// Cleans up a waiting allocation whose future was dropped (the caller gave up).
struct WaitGuard {
    shared: Arc<Shared>,
    pod: PodKey,
    kind: ResourceKind,
    id: u64,
    notify: Arc<Notify>,
    rx: Option<oneshot::Receiver<Allocation>>,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let mut st = self.shared.lock();
        if !st.remove_waiter(self.kind, self.id)
            && let Ok(alloc) = rx.try_recv()
        {
            st.unreserve(&alloc.resource());
            st.serve_waiters();
        }
        st.pods.remove(&self.pod);
        self.notify.notify_waiters();
    }
}

impl Pool {
    /// A builder for a pool with `config`.
    pub fn builder(config: PoolConfig) -> PoolBuilder {
        PoolBuilder {
            config,
            cloud: None,
            store: None,
            liveness: None,
            seed: None,
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// What start-up reconciliation found.
    #[must_use]
    pub fn start_report(&self) -> &StartReport {
        &self.inner.report
    }

    /// The capacity the instance type and the configuration allow.
    #[must_use]
    pub fn capacity(&self) -> Capacity {
        self.inner.capacity
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &PoolConfig {
        &self.shared().cfg
    }

    /// Allocates a resource for a pod, or returns the one it already holds (a retried ADD).
    ///
    /// From idle this takes the state lock and one record commit, and never waits for the
    /// cloud. When nothing is idle the request waits (until its deadline) while the engine
    /// asks the cloud, batching concurrent requests.
    ///
    /// # Errors
    /// [`Error::Exhausted`] at the deadline, with the reason; [`Error::KindMismatch`] when
    /// the key holds the other kind; [`Error::Store`] when the record cannot be made durable
    /// (nothing is allocated then); [`Error::InvalidRequest`]; [`Error::Shutdown`].
    pub async fn allocate(&self, request: &AllocateRequest) -> Result<Allocation> {
        request.pod.validate().map_err(Error::InvalidRequest)?;
        let started = Instant::now();
        let span = tracing::debug_span!("allocate", pod = %request.pod, kind = %request.kind);
        let result = allocate(self.shared(), request, started)
            .instrument(span)
            .await;
        let counters = &self.shared().counters;
        match &result {
            Ok(_) => {
                Counters::bump(&counters.allocations);
                counters.record_latency(started.elapsed());
            }
            Err(_) => Counters::bump(&counters.failures),
        }
        result
    }

    /// Releases a pod's resource (it cools down, then is reused). Releasing an unknown or
    /// already released pod is fine (`Ok(None)`).
    ///
    /// # Errors
    /// [`Error::Store`] when the release cannot be made durable (the pod keeps its resource
    /// then); [`Error::InvalidRequest`].
    pub async fn release(&self, pod: &PodKey) -> Result<Option<Allocation>> {
        pod.validate().map_err(Error::InvalidRequest)?;
        let span = tracing::debug_span!("release", %pod);
        release(self.shared(), pod).instrument(span).await
    }

    /// The resource a pod holds, if any.
    #[must_use]
    pub fn get(&self, pod: &PodKey) -> Option<Allocation> {
        match self.shared().lock().pods.get(pod) {
            Some(PodEntry::Bound(a, _)) => Some((**a).clone()),
            _ => None,
        }
    }

    /// Every binding.
    #[must_use]
    pub fn allocations(&self) -> Vec<Allocation> {
        self.shared()
            .lock()
            .pods
            .values()
            .filter_map(|e| match e {
                PodEntry::Bound(a, _) => Some((**a).clone()),
                PodEntry::Busy(_) => None,
            })
            .collect()
    }

    /// A metrics snapshot.
    #[must_use]
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut snap = MetricsSnapshot::default();
        self.shared().lock().fill_gauges(&mut snap);
        self.shared().counters.fill(&mut snap);
        snap
    }

    /// Runs GC now (it also runs every `gc_interval`) and returns what it did.
    pub async fn gc(&self) -> GcReport {
        reconcile::gc(self.shared()).await
    }

    /// Stops the engine (waiting allocations fail with [`Error::Shutdown`]); cloud operations
    /// in flight are abandoned as a crash would abandon them, and the next start reconciles.
    pub async fn shutdown(&self) {
        self.inner.stop();
        let engine = self
            .inner
            .engine
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(engine) = engine {
            engine.abort();
            // Cancelled (or finished): either way it is gone.
            engine.await.ok();
        }
    }
}

async fn allocate(
    shared: &Arc<Shared>,
    request: &AllocateRequest,
    started: Instant,
) -> Result<Allocation> {
    let pod = &request.pod;
    let kind = request.kind;
    let deadline = started + request.timeout.unwrap_or(shared.cfg.allocate_timeout);
    loop {
        let step = {
            let mut st = shared.lock();
            if shared.is_stopped() {
                return Err(Error::Shutdown);
            }
            st.promote_cooled(Instant::now());
            match st.pods.get(pod) {
                Some(PodEntry::Bound(a, _)) => {
                    if a.kind != kind {
                        return Err(Error::KindMismatch {
                            pod: Box::new(pod.clone()),
                            held: a.kind,
                            asked: kind,
                        });
                    }
                    Counters::bump(&shared.counters.repeated);
                    Step::Done((**a).clone())
                }
                Some(PodEntry::Busy(n)) => Step::WaitForPod(subscribe(n)),
                None => {
                    let notify = Arc::new(Notify::new());
                    st.pods.insert(pod.clone(), PodEntry::Busy(notify.clone()));
                    match st.reserve(kind, pod) {
                        Some(alloc) => {
                            let low = match kind {
                                ResourceKind::SharedIp => shared.cfg.shared.min_idle,
                                ResourceKind::ExclusiveEni => shared.cfg.exclusive.min_idle,
                            };
                            if st.idle(kind) < low {
                                shared.wake(true);
                            }
                            let remove_cooling = st.has_cooling_record(&alloc.resource());
                            Step::Commit {
                                alloc,
                                notify,
                                remove_cooling,
                                from_idle: true,
                            }
                        }
                        None => {
                            let (tx, rx) = oneshot::channel();
                            st.next_waiter_id += 1;
                            let id = st.next_waiter_id;
                            st.waiters[ki(kind)].push_back(Waiter {
                                id,
                                pod: pod.clone(),
                                tx,
                            });
                            shared.wake(true);
                            Step::WaitForUnit { rx, id, notify }
                        }
                    }
                }
            }
        };
        match step {
            Step::Done(a) => return Ok(a),
            Step::WaitForPod(notified) => {
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Err(exhausted(shared, pod, kind, started));
                }
            }
            Step::Commit {
                alloc,
                notify,
                remove_cooling,
                from_idle,
            } => return commit_allocation(shared, alloc, notify, remove_cooling, from_idle).await,
            Step::WaitForUnit { rx, id, notify } => {
                let mut guard = WaitGuard {
                    shared: shared.clone(),
                    pod: pod.clone(),
                    kind,
                    id,
                    notify: notify.clone(),
                    rx: Some(rx),
                };
                let rx = guard.rx.as_mut().expect("set just above");
                let got = tokio::time::timeout_at(deadline, rx).await;
                let alloc = match got {
                    Ok(Ok(alloc)) => {
                        guard.rx = None;
                        alloc
                    }
                    Ok(Err(_)) => {
                        drop(guard);
                        return Err(Error::Shutdown);
                    }
                    Err(_) => {
                        let served = {
                            let mut st = shared.lock();
                            if st.remove_waiter(kind, id) {
                                None
                            } else {
                                guard.rx.as_mut().and_then(|rx| rx.try_recv().ok())
                            }
                        };
                        match served {
                            Some(alloc) => {
                                guard.rx = None;
                                alloc
                            }
                            None => {
                                drop(guard);
                                return Err(exhausted(shared, pod, kind, started));
                            }
                        }
                    }
                };
                let remove_cooling = shared.lock().has_cooling_record(&alloc.resource());
                return commit_allocation(shared, alloc, notify, remove_cooling, false).await;
            }
        }
    }
}

fn exhausted(shared: &Shared, pod: &PodKey, kind: ResourceKind, started: Instant) -> Error {
    let cause = shared
        .lock()
        .blocker
        .clone()
        .unwrap_or(Blocker::Provisioning);
    Error::Exhausted {
        pod: Box::new(pod.clone()),
        kind,
        waited: started.elapsed(),
        cause,
    }
}

/// What to do to the model once a commit is known to have succeeded or failed.
enum Finish {
    /// A reserved unit's binding.
    Allocation {
        alloc: Box<Allocation>,
        from_idle: bool,
    },
    /// A bound unit's release; `cool` tells whether a cooling record was written.
    Release {
        alloc: Arc<Allocation>,
        bound_at: u64,
        cool: bool,
    },
}

impl Finish {
    /// Applies the outcome of the commit to the model and wakes whoever waits on the pod.
    fn apply(
        self,
        shared: &Shared,
        notify: &Notify,
        result: std::result::Result<(), crate::store::StoreError>,
    ) -> Result<Option<Allocation>> {
        let mut st = shared.lock();
        let mut wake = false;
        let out = match (self, result) {
            (Self::Allocation { alloc, from_idle }, Ok(())) => {
                st.bind(&alloc.resource(), &alloc.pod);
                st.pods.insert(
                    alloc.pod.clone(),
                    PodEntry::Bound(Arc::new((*alloc).clone()), now_ms()),
                );
                if from_idle {
                    Counters::bump(&shared.counters.from_idle);
                }
                Ok(Some(*alloc))
            }
            (Self::Allocation { alloc, .. }, Err(e)) => {
                st.unreserve(&alloc.resource());
                st.pods.remove(&alloc.pod);
                st.serve_waiters();
                Err(Error::store(format!("allocate {}", alloc.pod), e))
            }
            (Self::Release { alloc, cool, .. }, Ok(())) => {
                let cooldown = shared.cfg.cooldown;
                st.unbind(&alloc.resource(), cool.then(|| Instant::now() + cooldown));
                st.pods.remove(&alloc.pod);
                st.serve_waiters();
                // The engine must look again only when this changes its next timer (the first
                // cool-down) or idle is now above the high watermark.
                let high = match alloc.kind {
                    ResourceKind::SharedIp => shared.cfg.shared.max_idle,
                    ResourceKind::ExclusiveEni => shared.cfg.exclusive.max_idle,
                };
                wake = if cool {
                    st.cooling.len() == 1
                } else {
                    st.idle(alloc.kind) > high
                };
                Counters::bump(&shared.counters.releases);
                Ok(Some((*alloc).clone()))
            }
            (
                Self::Release {
                    alloc, bound_at, ..
                },
                Err(e),
            ) => {
                let pod = alloc.pod.clone();
                st.pods
                    .insert(pod.clone(), PodEntry::Bound(alloc, bound_at));
                Err(Error::store(format!("release {pod}"), e))
            }
        };
        drop(st);
        notify.notify_waiters();
        if wake {
            shared.wake(false);
        }
        out
    }
}

/// Keeps the model and the records in step when the caller gives up (drops the future) in
/// the middle of a commit: the commit may land or not, so the guard makes it again (every
/// change is idempotent) in a task of its own and applies the outcome.
struct CommitGuard {
    shared: Arc<Shared>,
    notify: Arc<Notify>,
    armed: Option<(Vec<Change>, Finish)>,
}

impl Drop for CommitGuard {
    fn drop(&mut self) {
        let Some((changes, finish)) = self.armed.take() else {
            return;
        };
        let (shared, notify) = (self.shared.clone(), self.notify.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let result = shared.store.commit(changes).await;
                if let Err(e) = finish.apply(&shared, &notify, result) {
                    tracing::warn!(error = %e, "finishing an abandoned commit failed");
                }
            });
        }
    }
}

/// Commits `changes`, then applies `finish`; safe against the caller giving up midway.
async fn commit_then(
    shared: &Arc<Shared>,
    notify: Arc<Notify>,
    changes: Vec<Change>,
    finish: Finish,
) -> Result<Option<Allocation>> {
    let mut guard = CommitGuard {
        shared: shared.clone(),
        notify,
        armed: Some((changes.clone(), finish)),
    };
    let result = shared.store.commit(changes).await;
    let (_, finish) = guard.armed.take().expect("armed until here");
    finish.apply(shared, &guard.notify, result)
}

/// Makes a reserved allocation durable, then binds it.
async fn commit_allocation(
    shared: &Arc<Shared>,
    alloc: Allocation,
    notify: Arc<Notify>,
    remove_cooling: bool,
    from_idle: bool,
) -> Result<Allocation> {
    let res = alloc.resource();
    let mut changes = vec![Change::PutBinding(BindingRecord::new(
        alloc.clone(),
        now_ms(),
    ))];
    if remove_cooling {
        changes.push(Change::RemoveCooling(res));
    }
    let done = commit_then(
        shared,
        notify,
        changes,
        Finish::Allocation {
            alloc: Box::new(alloc),
            from_idle,
        },
    )
    .await?;
    Ok(done.expect("a successful allocation commit yields the allocation"))
}

/// Releases a pod's resource; shared by [`Pool::release`] and GC.
pub(crate) async fn release(shared: &Arc<Shared>, pod: &PodKey) -> Result<Option<Allocation>> {
    enum First {
        Unknown,
        Wait(std::pin::Pin<Box<OwnedNotified>>),
        Release(Arc<Allocation>, u64, Arc<Notify>),
    }
    loop {
        let first = {
            let mut st = shared.lock();
            match st.pods.get(pod) {
                None => First::Unknown,
                Some(PodEntry::Busy(n)) => First::Wait(subscribe(n)),
                Some(PodEntry::Bound(a, at)) => {
                    let (a, at) = (a.clone(), *at);
                    let notify = Arc::new(Notify::new());
                    st.pods.insert(pod.clone(), PodEntry::Busy(notify.clone()));
                    First::Release(a, at, notify)
                }
            }
        };
        let (alloc, at, notify) = match first {
            First::Unknown => {
                Counters::bump(&shared.counters.releases);
                return Ok(None);
            }
            First::Wait(wait) => {
                wait.await;
                continue;
            }
            First::Release(a, at, n) => (a, at, n),
        };
        let res = alloc.resource();
        let cooldown = shared.cfg.cooldown;
        let cool = !cooldown.is_zero() && shared.lock().unit_state(&res).is_some();
        let mut changes = vec![Change::RemoveBinding(pod.clone())];
        if cool {
            let until_ms =
                now_ms().saturating_add(u64::try_from(cooldown.as_millis()).unwrap_or(u64::MAX));
            changes.push(Change::PutCooling(CoolingRecord::new(res, until_ms)));
        }
        let finish = Finish::Release {
            alloc,
            bound_at: at,
            cool,
        };
        return commit_then(shared, notify, changes, finish).await;
    }
}
