//! `pool_burst`: a cold node receives 110 pods at once. The pool (durable file store) talks to
//! the ECS simulator over HTTP through the real ECS client, with realistic latencies and
//! per-action rate limits (the server throttles at the same rates the client paces itself to).
//!
//! Prints `BENCH pool_burst pods=110 ready_ms=.. bound_ms=.. api_calls=.. min_api_calls=..`:
//! `ready_ms` is from the 110 requests to the last acknowledgement; `bound_ms` and
//! `min_api_calls` are the physical lower bounds computed from the same latencies and limits
//! (see [`lower_bound`] and docs/benchmarks.md). A second line does the same with 20 % of the
//! calls failing with `InternalError`.
//!
//! Every run is made with both providers over the same simulated cloud, timings and limits:
//! `provider=ecs` (the ECS client over HTTP to `HttpSim`) and `provider=ec2` (the EC2 client —
//! `SigV4`, Query parameters, XML, a describe per attach for the device index — through the
//! simulator's in-process EC2 front `SimEc2`). `provider=ec2-moto` is the EC2 client against
//! `moto_server` on loopback (a real EC2 Query API; no latency model, no throttling, and its
//! instance type carries the pods with AWS's semantics: ENI primaries are not handed out), when
//! moto is installed.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use cnikit_benches::{ms, report, smoke_mode};
use cnikit_cloud_api::{
    CloudProvider, Rate, RateLimits,
    credentials::{Credentials, StaticCredentials},
    ec2::{Ec2Client, Ec2Config, testbed::Testbed},
    ecs::{Action, EcsClient, EcsConfig, Endpoint},
    sim::{
        AccessKey, DEFAULT_INSTANCE, DEFAULT_SECURITY_GROUP, DEFAULT_VSWITCH, FaultRule, HttpSim,
        HttpSimConfig, InstanceSpec, LatencyConfig, SimCloud, SimConfig, SimEc2,
    },
};
use cnikit_eni_pool::{AllocateRequest, FileStore, PodKey, Pool, PoolConfig, Watermarks};
use cnikit_test_support::moto::MotoServer;
use criterion::{Criterion, criterion_group, criterion_main};

const PODS: u32 = 110;
const INSTANCE_TYPE: &str = "ecs.g7.4xlarge";
/// Addresses per ENI of that type (the ENI's primary included, handed to a pod as on Alibaba).
const IPS_PER_ENI: u32 = 30;

/// The simulated cloud's timing.
#[derive(Clone, Copy, Debug)]
struct Timing {
    create: Duration,
    attach_call: Duration,
    attach: Duration,
    assign: Duration,
    describe: Duration,
    create_rate: Rate,
    attach_rate: Rate,
    assign_rate: Rate,
    describe_rate: Rate,
}

/// The latencies and limits of the run; in smoke mode everything is 10 times faster (the same
/// code path in a tenth of the time).
fn timing() -> Timing {
    let k = if smoke_mode() { 0.1 } else { 1.0 };
    let d = |ms: f64| Duration::from_secs_f64(ms * k / 1000.0);
    Timing {
        create: d(500.0),
        attach_call: d(100.0),
        attach: d(2000.0),
        assign: d(300.0),
        describe: d(100.0),
        create_rate: Rate::new(5.0 / k, 2),
        attach_rate: Rate::new(5.0 / k, 2),
        assign_rate: Rate::new(5.0 / k, 5),
        describe_rate: Rate::new(10.0 / k, 10),
    }
}

/// Start times of `n` requests made as early as a token bucket allows, none before `ready[i]`.
fn paced(rate: Rate, ready: &[f64]) -> Vec<f64> {
    let mut tokens = f64::from(rate.burst);
    let mut last = 0.0f64;
    ready
        .iter()
        .map(|&r| {
            let mut t = r.max(last);
            tokens = (tokens + (t - last) * rate.per_second).min(f64::from(rate.burst));
            if tokens < 1.0 {
                t += (1.0 - tokens) / rate.per_second;
                tokens = 1.0;
            }
            tokens -= 1.0;
            last = t;
            t
        })
        .collect()
}

/// The physical lower bounds for `pods` pods on a cold node.
///
/// Each ENI holds `IPS_PER_ENI` addresses, so at least `K = ceil(pods / IPS_PER_ENI)` ENIs must
/// be created and attached; an ENI can carry all its addresses from creation (the per-create
/// cap, 49, is above 29), so no assign call is needed. Create `j` cannot start before the
/// create bucket has a token; its attach cannot start before the create answered nor before
/// the attach bucket has a token; the ENI is usable `attach_call + attach` later. A pod is
/// ready no earlier than its ENI is `InUse`, and the pool must look (at least one describe
/// call) to know it. Bound = the last ENI's `InUse` time; calls = `2K + 1`.
fn lower_bound(t: &Timing, pods: u32) -> (Duration, u32) {
    let k = pods.div_ceil(IPS_PER_ENI) as usize;
    let creates = paced(t.create_rate, &vec![0.0; k]);
    let created: Vec<f64> = creates.iter().map(|s| s + t.create.as_secs_f64()).collect();
    let attaches = paced(t.attach_rate, &created);
    let in_use = attaches
        .iter()
        .map(|a| a + t.attach_call.as_secs_f64() + t.attach.as_secs_f64())
        .fold(0.0, f64::max);
    let k = u32::try_from(k).unwrap_or(u32::MAX);
    (Duration::from_secs_f64(in_use), 2 * k + 1)
}

fn sim_config() -> SimConfig {
    let t = timing();
    let mut s = SimConfig::default();
    s.latency = LatencyConfig::default();
    s.latency.api = Duration::ZERO;
    s.latency.attach = t.attach;
    s.latency.detach = Duration::from_secs(1);
    for (action, d) in [
        (Action::CreateNetworkInterface, t.create),
        (Action::AttachNetworkInterface, t.attach_call),
        (Action::AssignPrivateIpAddresses, t.assign),
        (Action::DescribeNetworkInterfaces, t.describe),
        (Action::DescribeInstanceTypes, t.describe),
        (Action::DescribeVSwitches, t.describe),
    ] {
        s.latency.per_action.insert(action.as_str().to_owned(), d);
    }
    let mut instance = InstanceSpec::new(DEFAULT_INSTANCE, INSTANCE_TYPE, DEFAULT_VSWITCH);
    instance.security_group_ids = vec![DEFAULT_SECURITY_GROUP.to_owned()];
    s.instances = vec![instance];
    s
}

fn limits() -> [(Action, Rate); 4] {
    let t = timing();
    [
        (Action::CreateNetworkInterface, t.create_rate),
        (Action::AttachNetworkInterface, t.attach_rate),
        (Action::AssignPrivateIpAddresses, t.assign_rate),
        (Action::DescribeNetworkInterfaces, t.describe_rate),
    ]
}

struct Outcome {
    ready: Duration,
    calls: u64,
    failed_calls: u64,
    /// Calls by action, e.g. `CreateNetworkInterface:4`.
    by_action: String,
}

/// Which client the pool uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    Ecs,
    Ec2,
}

impl Provider {
    fn label(self) -> &'static str {
        match self {
            Self::Ecs => "ecs",
            Self::Ec2 => "ec2",
        }
    }
}

/// One cold node: a fresh cloud, a fresh pool, 110 pods at once.
async fn burst(faults: bool, provider: Provider) -> Outcome {
    let cloud = SimCloud::new(sim_config()).expect("sim");
    let mut client_limits = RateLimits::unlimited();
    for (action, rate) in limits() {
        cloud.set_throttle(action, Some(rate));
        client_limits = client_limits.with(action, rate);
    }
    let (client, http): (Arc<dyn CloudProvider>, Option<HttpSim>) = match provider {
        Provider::Ecs => {
            let http = HttpSim::start(
                cloud.clone(),
                HttpSimConfig::new(AccessKey::new("LTAIburst", "burst-secret")),
                "127.0.0.1:0".parse().expect("addr"),
            )
            .await
            .expect("http sim");
            let client = EcsClient::new(
                EcsConfig::new("cn-hangzhou")
                    .with_endpoint(Endpoint::custom(http.url()))
                    .with_rate_limits(client_limits),
                Arc::new(StaticCredentials::new(Credentials::new(
                    "LTAIburst",
                    "burst-secret",
                ))),
            )
            .expect("client");
            (Arc::new(client), Some(http))
        }
        // The same buckets by action name (the four limited actions share their names).
        Provider::Ec2 => (
            Arc::new(
                SimEc2::new(cloud.clone())
                    .client(Ec2Config::new("us-east-1").with_rate_limits(client_limits))
                    .expect("client"),
            ),
            None,
        ),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(FileStore::open(dir.path()).expect("store"));
    // A cold node: nothing pre-warmed (`min_idle` 0, Terway's default `min_pool_size`).
    let mut config = PoolConfig::new(
        DEFAULT_INSTANCE,
        INSTANCE_TYPE,
        [DEFAULT_VSWITCH],
        [DEFAULT_SECURITY_GROUP],
    );
    config.shared = Watermarks::new(0, 10);
    if smoke_mode() {
        // Scaled with the simulator: the first look at an attach after a typical attach time.
        config.attach_poll_initial = Duration::from_millis(200);
        config.attach_poll_batch = Duration::from_millis(50);
        config.attach_poll_max = Duration::from_millis(200);
    }
    let pool = Pool::builder(config)
        .cloud(client)
        .store(store)
        .seed(7)
        .start()
        .await
        .expect("pool");
    // The node has started; the pods arrive before anything was pre-warmed.
    cloud.reset_stats();
    if faults {
        cloud
            .add_fault(FaultRule::error(None, "InternalError").with_probability(0.2))
            .expect("fault");
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..PODS)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let key = PodKey::new("burst", format!("pod-{i}"), format!("c{i}"), "eth0");
                pool.allocate(&AllocateRequest::shared_ip(key)).await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("allocation");
    }
    let ready = start.elapsed();
    let stats = cloud.stats();
    let calls = stats.values().map(|s| s.calls).sum();
    let failed_calls = stats.values().map(|s| s.failed + s.throttled).sum();
    let by_action = stats
        .iter()
        .map(|(a, s)| format!("{}:{}", a.as_str(), s.calls))
        .collect::<Vec<_>>()
        .join(",");
    pool.shutdown().await;
    if let Some(http) = http {
        http.stop().await;
    }
    Outcome {
        ready,
        calls,
        failed_calls,
        by_action,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (bound, min_calls) = lower_bound(&timing(), PODS);
    let rounds = if smoke_mode() { 1 } else { 5 };
    // Criterion's own timing of one clean burst (few samples: each takes seconds); the smoke
    // pass skips it, the rounds below run the same code.
    if !smoke_mode() {
        let mut group = c.benchmark_group("pool_burst");
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(40));
        group.bench_function("cold_node_110_pods", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += burst(false, Provider::Ecs).await.ready;
                    }
                    total
                })
            });
        });
        group.finish();
    }

    for (provider, faults, label) in [
        (Provider::Ecs, false, "none"),
        (Provider::Ec2, false, "none"),
        (Provider::Ecs, true, "transient_20pct"),
        (Provider::Ec2, true, "transient_20pct"),
    ] {
        let outcomes: Vec<Outcome> = (0..rounds)
            .map(|_| rt.block_on(burst(faults, provider)))
            .collect();
        let ready = median(outcomes.iter().map(|o| o.ready).collect());
        let mut calls: Vec<(u64, &str)> = outcomes
            .iter()
            .map(|o| (o.calls, o.by_action.as_str()))
            .collect();
        calls.sort_unstable();
        let (calls, by_action) = calls[calls.len() / 2];
        let failed = outcomes.iter().map(|o| o.failed_calls).max().unwrap_or(0);
        // EC2 attaches need a device index: one describe of the instance serves the burst.
        let min_calls = min_calls + u32::from(provider == Provider::Ec2);
        report(
            "pool_burst",
            &[
                ("provider", &provider.label()),
                ("pods", &PODS),
                ("faults", &label),
                ("ready_ms", &ms(ready)),
                ("bound_ms", &ms(bound)),
                (
                    "ready_over_bound",
                    &format!("{:.3}", ready.as_secs_f64() / bound.as_secs_f64()),
                ),
                ("api_calls", &calls),
                ("min_api_calls", &min_calls),
                (
                    "calls_over_min",
                    &format!("{:.3}", calls as f64 / f64::from(min_calls)),
                ),
                ("failed_calls_max", &failed),
                ("median_calls_by_action", &by_action),
                ("rounds", &rounds),
            ],
        );
    }
    match MotoServer::available().and_then(|()| MotoServer::start().map_err(|e| e.to_string())) {
        Ok(moto) => {
            let outcomes: Vec<(Duration, u64)> = (0..rounds)
                .map(|_| rt.block_on(burst_on_moto(&moto)))
                .collect();
            let ready = median(outcomes.iter().map(|o| o.0).collect());
            let calls = outcomes.iter().map(|o| o.1).max().unwrap_or(0);
            report(
                "pool_burst",
                &[
                    ("provider", &"ec2-moto"),
                    ("pods", &MOTO_PODS),
                    ("instance_type", &MOTO_TYPE),
                    ("ready_ms", &ms(ready)),
                    ("api_calls_max", &calls),
                    ("rounds", &rounds),
                ],
            );
        }
        Err(why) => println!("SKIP pool_burst provider=ec2-moto: {why}"),
    }
}

/// moto's `c5.4xlarge`: 8 ENIs of 30 IPv4 addresses (7 × 29 pod addresses without the ENI
/// primaries, as AWS hands them out).
const MOTO_TYPE: &str = "c5.4xlarge";
/// Pods of the moto burst (the 110 of the simulated runs).
const MOTO_PODS: u32 = 110;

/// One cold node on moto: a fresh VPC and instance, a fresh pool, 110 pods at once; returns
/// the time to the last acknowledgement and the pool's cloud calls.
async fn burst_on_moto(moto: &MotoServer) -> (Duration, u64) {
    let ec2 = Ec2Client::new(
        Ec2Config::new("us-east-1")
            .with_endpoint(moto.url())
            .with_rate_limits(RateLimits::unlimited()),
        Arc::new(StaticCredentials::new(Credentials::new(
            "testing", "testing",
        ))),
    )
    .expect("client");
    let w = Testbed::create(&ec2, MOTO_TYPE, 1).await.expect("testbed");
    let mut config = PoolConfig::new(
        &w.instance_id,
        MOTO_TYPE,
        [&w.subnet_id],
        [&w.security_group_id],
    );
    config.shared = Watermarks::new(0, 10);
    config.hand_out_eni_primary_ip = false;
    config.attach_poll_initial = Duration::from_millis(50);
    config.attach_poll_batch = Duration::from_millis(20);
    config.attach_poll_max = Duration::from_millis(100);
    let pool = Pool::builder(config)
        .cloud(Arc::new(ec2) as Arc<dyn CloudProvider>)
        .seed(7)
        .start()
        .await
        .expect("pool");
    let before = pool.metrics().total_cloud_calls();
    let start = Instant::now();
    let tasks: Vec<_> = (0..MOTO_PODS)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let key = PodKey::new("burst", format!("pod-{i}"), format!("c{i}"), "eth0");
                pool.allocate(&AllocateRequest::shared_ip(key)).await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("allocation");
    }
    let ready = start.elapsed();
    let calls = pool.metrics().total_cloud_calls() - before;
    pool.shutdown().await;
    (ready, calls)
}

criterion_group!(benches, bench);
criterion_main!(benches);
