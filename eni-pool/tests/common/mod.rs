//! Helpers shared by the pool's integration tests.
#![allow(
    clippy::unwrap_used,
    dead_code,
    unreachable_pub,
    reason = "test code: a failed unwrap is a failed test; not every test uses every helper"
)]

use std::{sync::Arc, time::Duration};

use cnikit_cloud_api::{
    CloudProvider,
    sim::{
        DEFAULT_INSTANCE, DEFAULT_SECURITY_GROUP, DEFAULT_VSWITCH, LatencyConfig, SimCloud,
        SimConfig,
    },
};
use cnikit_eni_pool::{
    AllocateRequest, Allocation, LivePodSet, MemoryStore, PodKey, Pool, PoolConfig, Watermarks,
};

/// `ecs.g7.xlarge` in the simulator: 4 ENIs (3 secondary) of 15 addresses.
pub const INSTANCE_TYPE: &str = "ecs.g7.xlarge";

pub fn pod(i: usize) -> PodKey {
    PodKey::new("default", format!("pod-{i}"), format!("c{i:04}"), "eth0")
}

/// A simulator with small, realistic-shaped latencies.
pub fn sim() -> SimCloud {
    let mut cfg = SimConfig::default();
    cfg.latency = LatencyConfig::default();
    cfg.latency.api = Duration::from_millis(20);
    cfg.latency.attach = Duration::from_secs(1);
    cfg.latency.detach = Duration::from_millis(500);
    SimCloud::new(cfg).unwrap()
}

pub fn config() -> PoolConfig {
    let mut c = PoolConfig::new(
        DEFAULT_INSTANCE,
        INSTANCE_TYPE,
        [DEFAULT_VSWITCH],
        [DEFAULT_SECURITY_GROUP],
    );
    c.shared = Watermarks::new(2, 6);
    c.attach_poll_initial = Duration::from_secs(1);
    c.attach_poll_max = Duration::from_secs(1);
    c.liveness_grace = Duration::from_secs(5);
    c.leak_grace = Duration::from_secs(30);
    c
}

pub struct Harness {
    pub sim: SimCloud,
    pub store: MemoryStore,
    pub live: LivePodSet,
    pub pool: Pool,
}

pub async fn start(
    sim: &SimCloud,
    store: &MemoryStore,
    live: &LivePodSet,
    cfg: PoolConfig,
) -> cnikit_eni_pool::Result<Pool> {
    Pool::builder(cfg)
        .cloud(Arc::new(sim.clone()) as Arc<dyn CloudProvider>)
        .store(Arc::new(store.clone()))
        .liveness(Arc::new(live.clone()))
        .start()
        .await
}

pub async fn harness(cfg: PoolConfig) -> Harness {
    harness_on(sim(), cfg).await
}

pub async fn harness_on(sim: SimCloud, cfg: PoolConfig) -> Harness {
    let store = MemoryStore::new();
    let live = LivePodSet::new();
    let pool = start(&sim, &store, &live, cfg).await.unwrap();
    Harness {
        sim,
        store,
        live,
        pool,
    }
}

/// Lets (paused) time run until `cond` holds, checking every 100 ms, at most `limit`.
pub async fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Harness {
    pub async fn alloc(&self, i: usize) -> Allocation {
        self.live.insert(pod(i));
        self.pool
            .allocate(&AllocateRequest::shared_ip(pod(i)))
            .await
            .unwrap()
    }

    /// Waits until the pool has `n` idle shared IPs and nothing in flight.
    pub async fn settle_idle(&self, n: u32) {
        let ok = until(Duration::from_secs(120), || {
            let m = self.pool.metrics();
            m.shared.idle == n
                && m.shared.being_added == 0
                && m.shared.being_released == 0
                && m.enis.attaching == 0
                && m.enis.releasing == 0
        })
        .await;
        assert!(ok, "not settled at {n} idle: {:?}", self.pool.metrics());
    }

    /// Waits until nothing is in flight and idle is within the watermarks; returns idle.
    pub async fn settle(&self) -> u32 {
        let w = self.pool.config().shared;
        let ok = until(Duration::from_secs(120), || {
            let m = self.pool.metrics();
            (w.min_idle..=w.max_idle).contains(&m.shared.idle)
                && m.shared.being_added == 0
                && m.shared.being_released == 0
                && m.enis.attaching == 0
                && m.enis.releasing == 0
        })
        .await;
        let m = self.pool.metrics();
        assert!(ok, "not settled: {m:?}");
        m.shared.idle
    }

    /// Restarts the pool on the same simulator and store (the old one stops as in a crash).
    pub async fn restart(&mut self, cfg: PoolConfig) {
        self.pool.shutdown().await;
        self.pool = start(&self.sim, &self.store, &self.live, cfg)
            .await
            .unwrap();
    }
}
