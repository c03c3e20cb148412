//! `pool_churn`: steady churn of 100 pods a minute (one every 600 ms, each living 20–40 s) for
//! 10 minutes of simulated time (tokio's paused clock), after 2 minutes of warm-up, against
//! the in-process simulator with the same latencies as `pool_burst`. Default pool settings
//! (watermarks 2/10, 30 s cool-down).
//!
//! Prints cloud calls per simulated minute and the calls made on the ADD/DEL path, measured:
//! the provider wrapper below counts calls whose tokio task is a pod's ADD or DEL (it must be
//! 0), and the pool's metrics count allocations that had to wait for the cloud.

use std::{
    collections::HashSet,
    net::{Ipv4Addr, Ipv6Addr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use cnikit_benches::{report, smoke_mode};
use cnikit_cloud_api::{
    AssignIpsRequest, AttachEniRequest, CloudProvider, CreateEniRequest, DetachEniRequest, Eni,
    EniFilter, InstanceLimits, Result, Subnet,
    ecs::Action,
    sim::{
        DEFAULT_INSTANCE, DEFAULT_SECURITY_GROUP, DEFAULT_VSWITCH, InstanceSpec, LatencyConfig,
        SimCloud, SimConfig,
    },
};
use cnikit_eni_pool::{AllocateRequest, MemoryStore, PodKey, Pool, PoolConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use tokio::task::Id;

/// Counts calls made from the tasks in `path` (pods' ADD and DEL).
#[derive(Debug)]
struct PathWatch {
    inner: SimCloud,
    path: Arc<Mutex<HashSet<Id>>>,
    on_path: Arc<AtomicU64>,
}

impl PathWatch {
    fn note(&self) {
        if let Some(id) = tokio::task::try_id()
            && self.path.lock().expect("lock").contains(&id)
        {
            self.on_path.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[async_trait]
impl CloudProvider for PathWatch {
    fn name(&self) -> &str {
        "path-watch"
    }
    async fn instance_limits(&self, t: &str) -> Result<InstanceLimits> {
        self.note();
        self.inner.instance_limits(t).await
    }
    async fn describe_subnet(&self, s: &str) -> Result<Subnet> {
        self.note();
        self.inner.describe_subnet(s).await
    }
    async fn create_eni(&self, r: &CreateEniRequest) -> Result<Eni> {
        self.note();
        self.inner.create_eni(r).await
    }
    async fn attach_eni(&self, r: &AttachEniRequest) -> Result<()> {
        self.note();
        self.inner.attach_eni(r).await
    }
    async fn detach_eni(&self, r: &DetachEniRequest) -> Result<()> {
        self.note();
        self.inner.detach_eni(r).await
    }
    async fn delete_eni(&self, id: &str) -> Result<()> {
        self.note();
        self.inner.delete_eni(id).await
    }
    async fn assign_ipv4(&self, r: &AssignIpsRequest<Ipv4Addr>) -> Result<Vec<Ipv4Addr>> {
        self.note();
        self.inner.assign_ipv4(r).await
    }
    async fn unassign_ipv4(&self, id: &str, ips: &[Ipv4Addr]) -> Result<()> {
        self.note();
        self.inner.unassign_ipv4(id, ips).await
    }
    async fn assign_ipv6(&self, r: &AssignIpsRequest<Ipv6Addr>) -> Result<Vec<Ipv6Addr>> {
        self.note();
        self.inner.assign_ipv6(r).await
    }
    async fn unassign_ipv6(&self, id: &str, ips: &[Ipv6Addr]) -> Result<()> {
        self.note();
        self.inner.unassign_ipv6(id, ips).await
    }
    async fn describe_enis(&self, f: &EniFilter) -> Result<Vec<Eni>> {
        self.note();
        self.inner.describe_enis(f).await
    }
}

fn sim() -> SimCloud {
    let mut s = SimConfig::default();
    s.latency = LatencyConfig::default();
    s.latency.attach = Duration::from_secs(2);
    s.latency.detach = Duration::from_secs(1);
    for (action, ms) in [
        (Action::CreateNetworkInterface, 500),
        (Action::AttachNetworkInterface, 100),
        (Action::AssignPrivateIpAddresses, 300),
        (Action::UnassignPrivateIpAddresses, 300),
        (Action::DescribeNetworkInterfaces, 100),
        (Action::DeleteNetworkInterface, 500),
        (Action::DetachNetworkInterface, 100),
    ] {
        s.latency
            .per_action
            .insert(action.as_str().to_owned(), Duration::from_millis(ms));
    }
    let mut instance = InstanceSpec::new(DEFAULT_INSTANCE, "ecs.g7.4xlarge", DEFAULT_VSWITCH);
    instance.security_group_ids = vec![DEFAULT_SECURITY_GROUP.to_owned()];
    s.instances = vec![instance];
    SimCloud::new(s).expect("sim")
}

struct Churn {
    allocations: u64,
    waited: u64,
    on_path: u64,
    per_minute: Vec<u64>,
    idle_min: u32,
    idle_max: u32,
}

/// Runs `warm` then `minutes` simulated minutes of churn; the paused clock must be on.
async fn churn(warm: u64, minutes: u64) -> Churn {
    let cloud = sim();
    let path = Arc::new(Mutex::new(HashSet::new()));
    let on_path = Arc::new(AtomicU64::new(0));
    let watch = PathWatch {
        inner: cloud.clone(),
        path: path.clone(),
        on_path: on_path.clone(),
    };
    let pool = Pool::builder(PoolConfig::new(
        DEFAULT_INSTANCE,
        "ecs.g7.4xlarge",
        [DEFAULT_VSWITCH],
        [DEFAULT_SECURITY_GROUP],
    ))
    .cloud(Arc::new(watch) as Arc<dyn CloudProvider>)
    .store(Arc::new(MemoryStore::new()))
    .seed(11)
    .start()
    .await
    .expect("pool");
    let mut rng = fastrand::Rng::with_seed(42);
    let every = Duration::from_millis(600);
    let warm_pods = warm * 100;
    let total_pods = (warm + minutes) * 100;
    let mut tasks = Vec::new();
    let mut per_minute = Vec::new();
    let (mut idle_min, mut idle_max) = (u32::MAX, 0);
    let mut at_minute = 0;
    let mut m0 = pool.metrics();
    for i in 0..total_pods {
        if i == warm_pods {
            at_minute = cloud.total_calls();
            m0 = pool.metrics();
            on_path.store(0, Ordering::Relaxed);
        }
        if i > warm_pods && (i - warm_pods).is_multiple_of(100) {
            let now = cloud.total_calls();
            per_minute.push(now - at_minute);
            at_minute = now;
        }
        if i >= warm_pods {
            let idle = pool.metrics().shared.idle;
            idle_min = idle_min.min(idle);
            idle_max = idle_max.max(idle);
        }
        let lifetime = Duration::from_millis(rng.u64(20_000..40_000));
        let pool2 = pool.clone();
        let path2 = path.clone();
        let task = tokio::spawn(async move {
            let key = PodKey::new("churn", format!("pod-{i}"), format!("c{i}"), "eth0");
            pool2
                .allocate(&AllocateRequest::shared_ip(key.clone()))
                .await
                .expect("allocate");
            tokio::time::sleep(lifetime).await;
            pool2.release(&key).await.expect("release");
            path2.lock().expect("lock").remove(&tokio::task::id());
        });
        path.lock().expect("lock").insert(task.id());
        tasks.push(task);
        tokio::time::sleep(every).await;
    }
    per_minute.push(cloud.total_calls() - at_minute);
    let m1 = pool.metrics();
    for t in tasks {
        t.await.expect("pod");
    }
    pool.shutdown().await;
    Churn {
        allocations: m1.allocations - m0.allocations,
        waited: (m1.allocations - m0.allocations)
            - (m1.allocations_from_idle - m0.allocations_from_idle)
            - (m1.allocations_repeated - m0.allocations_repeated),
        on_path: on_path.load(Ordering::Relaxed),
        per_minute,
        idle_min,
        idle_max,
    }
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_churn");
    group.sample_size(10);
    group.bench_function("one_simulated_minute", |b| {
        b.iter_custom(|iters| {
            let t = std::time::Instant::now();
            for _ in 0..iters {
                paused_runtime().block_on(churn(0, 1));
            }
            t.elapsed()
        });
    });
    group.finish();

    let (warm, minutes) = if smoke_mode() { (1, 2) } else { (2, 10) };
    let r = paused_runtime().block_on(churn(warm, minutes));
    let total: u64 = r.per_minute.iter().sum();
    let max = r.per_minute.iter().copied().max().unwrap_or(0);
    let per_minute: Vec<String> = r.per_minute.iter().map(u64::to_string).collect();
    report(
        "pool_churn",
        &[
            ("pods_per_min", &100),
            ("minutes", &minutes),
            ("allocations", &r.allocations),
            ("calls_total", &total),
            (
                "calls_per_min_mean",
                &format!("{:.2}", total as f64 / minutes as f64),
            ),
            ("calls_per_min_max", &max),
            ("calls_per_min", &per_minute.join(",")),
            ("add_del_path_calls", &r.on_path),
            ("waited_allocations", &r.waited),
            ("idle_min", &r.idle_min),
            ("idle_max", &r.idle_max),
        ],
    );
    assert_eq!(r.on_path, 0, "a cloud call was made on the ADD/DEL path");
}

criterion_group!(benches, bench);
criterion_main!(benches);
