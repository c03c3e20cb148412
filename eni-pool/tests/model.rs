//! Model-based property tests: random sequences of allocations, releases, pods vanishing,
//! time passing, injected cloud faults, GC and crash-restarts, against the in-process
//! simulator, with the invariants checked after every step:
//!
//! - no resource is held by two live pods, every binding is one the pool acknowledged, and a
//!   binding survives restarts unchanged;
//! - every bound address exists in the cloud on the bound ENI;
//! - after the cloud is healthy again and the pool settled (and GC ran): nothing is allocated
//!   in the cloud that no live pod or idle/cooling slot accounts for, no leaked ENI is left,
//!   idle is within `[min_idle, max_idle]`;
//! - cloud calls are bounded, and a settled pool stays (almost) silent.
//!
//! Every case runs on both providers over the same simulated cloud: the ECS simulator in
//! process, and the EC2 client (`SigV4`, Query parameters, XML, EC2 error codes, device indices)
//! through the simulator's in-process EC2 front (`SimEc2`).
//!
//! `PROPTEST_CASES` sets the number of cases (default 256).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use cnikit_cloud_api::{
    CloudProvider, EniStatus, Rate,
    ec2::Ec2Config,
    ecs::Action,
    sim::{
        DEFAULT_INSTANCE, DEFAULT_SECURITY_GROUP, DEFAULT_VSWITCH, Fault, FaultRule, InstanceSpec,
        LatencyConfig, SimCloud, SimConfig, SimEc2,
    },
};
use cnikit_eni_pool::{
    AllocateRequest, Allocation, Error, LivePodSet, MemoryStore, PodKey, Pool, PoolConfig,
    ResourceKind, Watermarks, tags,
};
use proptest::prelude::*;

const PODS: usize = 24;
const LOW: u32 = 2;
const HIGH: u32 = 5;

/// Which provider the pool talks to (the cloud behind is the same simulator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    /// `SimCloud` itself (the ECS simulator in process).
    Ecs,
    /// The EC2 client through `SimEc2`.
    Ec2,
}

impl Provider {
    fn over(self, sim: &SimCloud) -> Arc<dyn CloudProvider> {
        match self {
            Self::Ecs => Arc::new(sim.clone()),
            Self::Ec2 => Arc::new(
                SimEc2::new(sim.clone())
                    .client(Ec2Config::new("us-east-1"))
                    .unwrap(),
            ),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Faults {
    None,
    Transient,
    Throttle,
    LostResponses,
    /// Creates and assigns answer `InvalidVSwitchId.IpNotEnough` half the time.
    Exhausted,
}

#[derive(Clone, Debug)]
enum Step {
    Alloc(usize),
    Burst(Vec<usize>),
    Release(usize),
    /// The pod disappears without a DEL.
    Vanish(usize),
    Advance(u64),
    Faults(Faults),
    Gc,
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..PODS).prop_map(Step::Alloc),
        2 => proptest::collection::vec(0..PODS, 2..12).prop_map(Step::Burst),
        5 => (0..PODS).prop_map(Step::Release),
        1 => (0..PODS).prop_map(Step::Vanish),
        3 => (1u64..90).prop_map(Step::Advance),
        1 => prop_oneof![
            Just(Faults::None),
            Just(Faults::Transient),
            Just(Faults::Throttle),
            Just(Faults::LostResponses),
            Just(Faults::Exhausted)
        ]
        .prop_map(Step::Faults),
        1 => Just(Step::Gc),
        1 => Just(Step::Restart),
    ]
}

fn kind_of(i: usize) -> ResourceKind {
    if i.is_multiple_of(6) {
        ResourceKind::ExclusiveEni
    } else {
        ResourceKind::SharedIp
    }
}

fn pool_config() -> PoolConfig {
    let mut c = PoolConfig::new(
        DEFAULT_INSTANCE,
        "ecs.g7.4xlarge",
        [DEFAULT_VSWITCH],
        [DEFAULT_SECURITY_GROUP],
    );
    c.shared = Watermarks::new(LOW, HIGH);
    c.exclusive = Watermarks::new(0, 1);
    c.cooldown = Duration::from_secs(10);
    c.allocate_timeout = Duration::from_secs(30);
    c.attach_poll_initial = Duration::from_millis(500);
    c.attach_poll_max = Duration::from_secs(1);
    c.retry_base = Duration::from_millis(200);
    c.retry_max = Duration::from_secs(5);
    c.idle_release_after = Duration::from_secs(20);
    c.release_interval = Duration::from_secs(5);
    c.gc_interval = Duration::from_secs(60);
    c.liveness_grace = Duration::ZERO;
    c.leak_grace = Duration::from_secs(10);
    c.quota_pause = Duration::from_secs(10);
    c.exhausted_pause = Duration::from_secs(30);
    c
}

fn sim_config() -> SimConfig {
    let mut s = SimConfig::default();
    s.latency = LatencyConfig::default();
    s.latency.api = Duration::from_millis(10);
    s.latency.attach = Duration::from_millis(500);
    s.latency.detach = Duration::from_millis(300);
    let mut instance = InstanceSpec::new(DEFAULT_INSTANCE, "ecs.g7.4xlarge", DEFAULT_VSWITCH);
    instance.security_group_ids = vec![DEFAULT_SECURITY_GROUP.to_owned()];
    s.instances = vec![instance];
    s
}

struct World {
    provider: Provider,
    sim: SimCloud,
    store: MemoryStore,
    live: LivePodSet,
    pool: Pool,
    /// The current sandbox of each pod index (bumped when the pod vanishes).
    generation: Vec<u32>,
    /// What the pool acknowledged and did not release, by pod.
    held: BTreeMap<PodKey, Allocation>,
    /// Pods that vanished while holding a resource (GC or a restart releases them).
    vanished: BTreeSet<PodKey>,
    seed: u64,
    restarts: u64,
    pod_ops: u64,
}

impl World {
    fn key(&self, i: usize) -> PodKey {
        PodKey::new(
            "ns",
            format!("pod-{i}"),
            format!("sandbox-{i}-{}", self.generation[i]),
            "eth0",
        )
    }

    async fn start_pool(
        provider: Provider,
        sim: &SimCloud,
        store: &MemoryStore,
        live: &LivePodSet,
        seed: u64,
    ) -> Pool {
        Pool::builder(pool_config())
            .cloud(provider.over(sim))
            .store(Arc::new(store.clone()))
            .liveness(Arc::new(live.clone()))
            .seed(seed)
            .start()
            .await
            .unwrap()
    }

    async fn new(provider: Provider, seed: u64) -> Self {
        let mut sc = sim_config();
        sc.seed = seed;
        let sim = SimCloud::new(sc).unwrap();
        let store = MemoryStore::new();
        let live = LivePodSet::new();
        let pool = Self::start_pool(provider, &sim, &store, &live, seed).await;
        Self {
            provider,
            sim,
            store,
            live,
            pool,
            generation: vec![0; PODS],
            held: BTreeMap::new(),
            vanished: BTreeSet::new(),
            seed,
            restarts: 0,
            pod_ops: 0,
        }
    }

    fn note_allocation(&mut self, key: &PodKey, r: Result<Allocation, Error>) {
        match r {
            Ok(a) => {
                assert_eq!(&a.pod, key);
                if let Some(prev) = self.held.get(key) {
                    assert_eq!(prev, &a, "a retried ADD got another resource");
                }
                self.held.insert(key.clone(), a);
            }
            Err(Error::Exhausted { .. }) => {
                assert!(
                    !self.held.contains_key(key),
                    "a pod holding a resource was told it has none"
                );
                assert_eq!(self.pool.get(key), None, "failed allocation left a binding");
            }
            Err(e) => panic!("unexpected allocation error for {key}: {e}"),
        }
    }

    async fn apply(&mut self, step: &Step) {
        match step {
            Step::Alloc(i) => {
                let key = self.key(*i);
                self.live.insert(key.clone());
                let req = match kind_of(*i) {
                    ResourceKind::ExclusiveEni => AllocateRequest::exclusive_eni(key.clone()),
                    _ => AllocateRequest::shared_ip(key.clone()),
                };
                let r = self.pool.allocate(&req).await;
                self.pod_ops += 1;
                self.note_allocation(&key, r);
            }
            Step::Burst(is) => {
                let keys: BTreeSet<(usize, PodKey)> =
                    is.iter().map(|i| (*i, self.key(*i))).collect();
                let mut tasks = Vec::new();
                for (i, key) in &keys {
                    self.live.insert(key.clone());
                    let pool = self.pool.clone();
                    let req = match kind_of(*i) {
                        ResourceKind::ExclusiveEni => AllocateRequest::exclusive_eni(key.clone()),
                        _ => AllocateRequest::shared_ip(key.clone()),
                    };
                    tasks.push((
                        key.clone(),
                        tokio::spawn(async move { pool.allocate(&req).await }),
                    ));
                }
                for (key, t) in tasks {
                    let r = t.await.unwrap();
                    self.pod_ops += 1;
                    self.note_allocation(&key, r);
                }
            }
            Step::Release(i) => {
                let key = self.key(*i);
                let r = self.pool.release(&key).await.unwrap();
                self.pod_ops += 1;
                assert_eq!(
                    r.as_ref(),
                    self.held.get(&key),
                    "release returned another resource"
                );
                self.held.remove(&key);
                self.live.remove(&key);
            }
            Step::Vanish(i) => {
                let key = self.key(*i);
                self.live.remove(&key);
                if self.held.contains_key(&key) {
                    self.vanished.insert(key);
                }
                self.generation[*i] += 1;
            }
            Step::Advance(secs) => tokio::time::sleep(Duration::from_secs(*secs)).await,
            Step::Faults(f) => self.set_faults(*f),
            Step::Gc => {
                let report = self.pool.gc().await;
                for pod in &report.released_pods {
                    assert!(self.vanished.contains(pod), "GC released live pod {pod}");
                }
                self.forget_released();
            }
            Step::Restart => {
                self.pool.shutdown().await;
                self.pool = Self::start_pool(
                    self.provider,
                    &self.sim,
                    &self.store,
                    &self.live,
                    self.seed ^ self.restarts,
                )
                .await;
                self.restarts += 1;
                for pod in &self.pool.start_report().released_gone_pods {
                    assert!(
                        self.vanished.contains(pod),
                        "start-up released live pod {pod}"
                    );
                }
                self.forget_released();
            }
        }
    }

    fn set_faults(&self, f: Faults) {
        self.sim.clear_faults();
        self.sim.set_throttle(Action::CreateNetworkInterface, None);
        self.sim
            .set_throttle(Action::AssignPrivateIpAddresses, None);
        match f {
            Faults::None => {}
            Faults::Transient => self
                .sim
                .add_fault(FaultRule::error(None, "InternalError").with_probability(0.3))
                .unwrap(),
            Faults::Throttle => {
                self.sim
                    .set_throttle(Action::CreateNetworkInterface, Some(Rate::new(0.1, 1)));
                self.sim
                    .set_throttle(Action::AssignPrivateIpAddresses, Some(Rate::new(0.2, 1)));
            }
            Faults::Exhausted => {
                for a in [
                    Action::CreateNetworkInterface,
                    Action::AssignPrivateIpAddresses,
                ] {
                    self.sim
                        .add_fault(
                            FaultRule::error(Some(a), "InvalidVSwitchId.IpNotEnough")
                                .with_probability(0.5),
                        )
                        .unwrap();
                }
            }
            Faults::LostResponses => {
                for a in [
                    Action::CreateNetworkInterface,
                    Action::AssignPrivateIpAddresses,
                    Action::AttachNetworkInterface,
                ] {
                    self.sim
                        .add_fault(
                            FaultRule::new(Some(a), Fault::DropResponse).with_probability(0.25),
                        )
                        .unwrap();
                }
            }
        }
    }

    /// Vanished pods the pool no longer binds are released.
    fn forget_released(&mut self) {
        let bound: BTreeSet<PodKey> = self.pool.allocations().into_iter().map(|a| a.pod).collect();
        let gone: Vec<PodKey> = self
            .vanished
            .iter()
            .filter(|p| !bound.contains(*p))
            .cloned()
            .collect();
        for p in gone {
            self.vanished.remove(&p);
            self.held.remove(&p);
        }
    }

    /// Invariants that hold after every step.
    fn check(&self) {
        let allocations = self.pool.allocations();
        let mut by_ip = BTreeMap::new();
        let mut by_eni = BTreeMap::new();
        for a in &allocations {
            assert_eq!(
                self.held.get(&a.pod),
                Some(a),
                "binding of {} is not the acknowledged one",
                a.pod
            );
            if let Some(other) = by_ip.insert(a.ipv4, a.pod.clone()) {
                panic!("{} is held by {} and {}", a.ipv4, other, a.pod);
            }
            if a.kind == ResourceKind::ExclusiveEni
                && let Some(other) = by_eni.insert(a.eni_id.clone(), a.pod.clone())
            {
                panic!("ENI {} is held by {} and {}", a.eni_id, other, a.pod);
            }
            let eni = self.sim.eni(&a.eni_id).unwrap_or_else(|| {
                panic!(
                    "{} is bound to ENI {} which does not exist",
                    a.pod, a.eni_id
                )
            });
            assert!(
                eni.ipv4_addresses().any(|ip| ip == a.ipv4),
                "{} is bound to {} which {} does not have",
                a.pod,
                a.ipv4,
                a.eni_id
            );
        }
        // Every acknowledged, unreleased binding of a live pod is still there.
        for (pod, a) in &self.held {
            if !self.vanished.contains(pod) {
                assert_eq!(
                    self.pool.get(pod).as_ref(),
                    Some(a),
                    "binding of {pod} lost"
                );
            }
        }
    }

    /// Heals the cloud, lets the pool settle, runs GC, and checks the settled invariants.
    async fn settle_and_check(&mut self) {
        self.set_faults(Faults::None);
        // Release what vanished pods hold first, then wait for the pool to come to rest.
        let mut settled = false;
        let mut quiet_before = false;
        for _ in 0..60 {
            // GC may adopt addresses whose assignment answer was lost (then idle is above the
            // high watermark until the pool trims it): settled means two quiet rounds in a
            // row whose last GC changed nothing, so GC runs in every round.
            let report = self.pool.gc().await;
            assert!(report.errors.is_empty(), "GC errors: {report:?}");
            self.forget_released();
            let gc_changed = report.adopted_ips > 0
                || report.dropped_ips > 0
                || !report.released_pods.is_empty()
                || !report.adopted_enis.is_empty()
                || !report.vanished_enis.is_empty()
                || !report.orphan_enis.is_empty();
            tokio::time::sleep(Duration::from_secs(30)).await;
            let m = self.pool.metrics();
            let quiet = m.shared.being_added == 0
                && m.shared.being_released == 0
                && m.shared.waiting == 0
                && m.exclusive.being_added == 0
                && m.exclusive.being_released == 0
                && m.enis.attaching == 0
                && m.enis.releasing == 0
                && m.enis.orphans == 0
                && (LOW..=HIGH).contains(&m.shared.idle)
                && m.exclusive.idle <= 1
                && m.shared.cooling == 0
                && m.exclusive.cooling == 0;
            if quiet && quiet_before && !gc_changed {
                settled = true;
                break;
            }
            quiet_before = quiet;
        }
        let report = self.pool.gc().await;
        assert!(report.errors.is_empty(), "GC errors: {report:?}");
        self.forget_released();
        let m = self.pool.metrics();
        assert!(settled, "the pool never settled: {m:?}");
        assert!(
            self.vanished.is_empty(),
            "vanished pods still bound: {:?}",
            self.vanished
        );
        // Cloud view: our ENIs and their addresses, all accounted for.
        let ours: Vec<_> = self
            .sim
            .enis()
            .into_iter()
            .filter(|e| e.tags.get(tags::POOL).map(String::as_str) == Some("cnikit"))
            .collect();
        for e in &ours {
            assert_eq!(
                e.status,
                EniStatus::InUse,
                "leaked ENI {} ({})",
                e.id,
                e.status
            );
        }
        let shared_ips: u32 = ours
            .iter()
            .filter(|e| e.tags.get(tags::ROLE).map(String::as_str) == Some(tags::ROLE_SHARED))
            .map(|e| u32::try_from(e.ipv4_addresses().count()).unwrap())
            .sum();
        let exclusive = u32::try_from(
            ours.iter()
                .filter(|e| {
                    e.tags.get(tags::ROLE).map(String::as_str) == Some(tags::ROLE_EXCLUSIVE)
                })
                .count(),
        )
        .unwrap();
        assert_eq!(
            shared_ips,
            m.shared.in_use + m.shared.idle + m.shared.cooling,
            "cloud addresses not accounted for: {m:?}"
        );
        assert_eq!(
            exclusive,
            m.exclusive.in_use + m.exclusive.idle + m.exclusive.cooling,
            "cloud ENIs not accounted for: {m:?}"
        );
        let live_bound = self.held.len();
        assert_eq!(
            usize::try_from(m.shared.in_use + m.exclusive.in_use).unwrap(),
            live_bound
        );
        assert!(
            (LOW..=HIGH).contains(&m.shared.idle),
            "idle outside [low, high]: {m:?}"
        );
        // Settled means silent: only the periodic GC look at the cloud.
        self.sim.reset_stats();
        tokio::time::sleep(Duration::from_secs(600)).await;
        let calls = self.sim.total_calls();
        assert!(
            calls <= 12,
            "a settled pool made {calls} calls in 10 min: {:?}",
            self.sim.stats()
        );
    }
}

fn run_case(provider: Provider, seed: u64, steps: &[Step]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut w = World::new(provider, seed).await;
        let trace = std::env::var_os("MODEL_TRACE").is_some();
        if trace {
            tracing_subscriber::fmt()
                .with_env_filter("cnikit_eni_pool=debug")
                .with_test_writer()
                .try_init()
                .ok();
        }
        for s in steps {
            w.apply(s).await;
            if trace {
                eprintln!("{s:?} -> {:?}", w.pool.metrics());
            }
            w.check();
        }
        let total = w.sim.total_calls();
        let budget = 200 + 30 * w.pod_ops + 60 * w.restarts;
        assert!(
            total <= budget,
            "{total} cloud calls for {} pod operations and {} restarts: {:?}",
            w.pod_ops,
            w.restarts,
            w.sim.stats()
        );
        w.settle_and_check().await;
        w.pool.shutdown().await;
    });
}

/// Found by the property test: GC used to take an idle exclusive ENI out of the idle line.
#[test]
fn regression_gc_keeps_idle_exclusive_enis_usable() {
    use Step::{Advance, Alloc, Burst, Release};
    for provider in [Provider::Ecs, Provider::Ec2] {
        run_case(
            provider,
            0,
            &[
                Burst(vec![12, 0]),
                Release(12),
                Advance(27),
                Advance(33),
                Alloc(18),
                Release(18),
            ],
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn pool_keeps_its_invariants(seed in any::<u64>(), steps in proptest::collection::vec(step(), 1..40)) {
        run_case(Provider::Ecs, seed, &steps);
    }

    #[test]
    fn pool_keeps_its_invariants_on_ec2(seed in any::<u64>(), steps in proptest::collection::vec(step(), 1..40)) {
        run_case(Provider::Ec2, seed, &steps);
    }
}
