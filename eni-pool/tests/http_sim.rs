//! Throttling, exhaustion, quota and lost-response scenarios against the ECS simulator served
//! over HTTP on loopback, through the real Alibaba ECS client (signed RPC requests, error
//! codes mapped by the client). Real time.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use cnikit_cloud_api::{
    Backoff, CloudProvider, Rate, RateLimits,
    credentials::{Credentials, StaticCredentials},
    ecs::{Action, EcsClient, EcsConfig, Endpoint, RetryPolicy},
    sim::{
        AccessKey, DEFAULT_INSTANCE, DEFAULT_SECURITY_GROUP, DEFAULT_VSWITCH, DEFAULT_VSWITCH_TINY,
        Fault, FaultRule, HttpSim, HttpSimConfig, LatencyConfig, SimCloud, SimConfig,
    },
};
use cnikit_eni_pool::{
    AllocateRequest, Blocker, Error, MemoryStore, PodKey, Pool, PoolConfig, VSwitchSelection,
    Watermarks, tags,
};

const KEY_ID: &str = "LTAI5tPoolHttpKey";
const SECRET: &str = "pool/http+secret";

fn pod(i: usize) -> PodKey {
    PodKey::new("http", format!("pod-{i}"), format!("sb-{i}"), "eth0")
}

fn sim_config() -> SimConfig {
    let mut s = SimConfig::default();
    s.latency = LatencyConfig::default();
    s.latency.api = Duration::from_millis(5);
    s.latency.attach = Duration::from_millis(200);
    s.latency.detach = Duration::from_millis(100);
    s
}

fn pool_config() -> PoolConfig {
    let mut c = PoolConfig::new(
        DEFAULT_INSTANCE,
        "ecs.g7.xlarge",
        [DEFAULT_VSWITCH],
        [DEFAULT_SECURITY_GROUP],
    );
    c.shared = Watermarks::new(0, 4);
    c.attach_poll_initial = Duration::from_millis(200);
    c.attach_poll_max = Duration::from_millis(300);
    c.retry_base = Duration::from_millis(100);
    c.retry_max = Duration::from_secs(1);
    c.allocate_timeout = Duration::from_secs(20);
    c
}

fn client(sim: &HttpSim, limits: RateLimits) -> EcsClient {
    let mut retry = RetryPolicy::default();
    retry.max_attempts = 4;
    retry.deadline = Duration::from_secs(10);
    retry.backoff = Backoff::new(
        Duration::from_millis(20),
        2.0,
        Duration::from_millis(200),
        0.5,
    );
    retry.throttle_backoff = Backoff::new(
        Duration::from_millis(100),
        2.0,
        Duration::from_millis(800),
        0.5,
    );
    let cfg = EcsConfig::new("cn-hangzhou")
        .with_endpoint(Endpoint::custom(sim.url()))
        .with_retry(retry)
        .with_rate_limits(limits)
        .with_request_timeout(Duration::from_secs(5));
    EcsClient::new(
        cfg,
        Arc::new(StaticCredentials::new(Credentials::new(KEY_ID, SECRET))),
    )
    .unwrap()
}

async fn serve(cloud: &SimCloud) -> HttpSim {
    HttpSim::start(
        cloud.clone(),
        HttpSimConfig::new(AccessKey::new(KEY_ID, SECRET)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

async fn pool_over_http(sim: &HttpSim, cfg: PoolConfig, limits: RateLimits) -> Pool {
    Pool::builder(cfg)
        .cloud(Arc::new(client(sim, limits)) as Arc<dyn CloudProvider>)
        .store(Arc::new(MemoryStore::new()))
        .start()
        .await
        .unwrap()
}

async fn burst(pool: &Pool, n: usize) -> Vec<Result<cnikit_eni_pool::Allocation, Error>> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.allocate(&AllocateRequest::shared_ip(pod(i))).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn our_enis(cloud: &SimCloud) -> usize {
    cloud
        .enis()
        .iter()
        .filter(|e| e.tags.contains_key(tags::POOL))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_throttling_is_absorbed_without_duplicates() {
    let cloud = SimCloud::new(sim_config()).unwrap();
    cloud.set_throttle(Action::CreateNetworkInterface, Some(Rate::new(2.0, 1)));
    cloud.set_throttle(Action::AttachNetworkInterface, Some(Rate::new(2.0, 1)));
    cloud.set_throttle(Action::DescribeNetworkInterfaces, Some(Rate::new(5.0, 1)));
    let http = serve(&cloud).await;
    // No client-side limits: the burst reaches the server's throttling.
    let pool = pool_over_http(&http, pool_config(), RateLimits::unlimited()).await;
    let results = burst(&pool, 40).await;
    let ips: BTreeSet<_> = results.into_iter().map(|r| r.unwrap().ipv4).collect();
    assert_eq!(ips.len(), 40);
    let stats = cloud.stats();
    let throttled: u64 = stats.values().map(|s| s.throttled).sum();
    assert!(throttled > 0, "the server never throttled: {stats:?}");
    assert_eq!(
        stats[&Action::CreateNetworkInterface].succeeded,
        3,
        "{stats:?}"
    );
    assert_eq!(our_enis(&cloud), 3);
    pool.shutdown().await;
    http.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_responses_create_no_duplicate_enis() {
    let cloud = SimCloud::new(sim_config()).unwrap();
    for a in [
        Action::CreateNetworkInterface,
        Action::AssignPrivateIpAddresses,
    ] {
        cloud
            .add_fault(FaultRule::new(Some(a), Fault::DropResponse).times(2))
            .unwrap();
    }
    let http = serve(&cloud).await;
    let mut cfg = pool_config();
    cfg.shared = Watermarks::new(2, 30);
    let pool = pool_over_http(&http, cfg, RateLimits::unlimited()).await;
    let results = burst(&pool, 25).await;
    let ips: BTreeSet<_> = results.into_iter().map(|r| r.unwrap().ipv4).collect();
    assert_eq!(ips.len(), 25);
    // Every address the cloud assigned to the pool's ENIs is the pool's: bound or idle.
    let on_enis: u32 = cloud
        .enis()
        .iter()
        .filter(|e| e.tags.contains_key(tags::POOL))
        .map(|e| u32::try_from(e.ipv4_addresses().count()).unwrap())
        .sum();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = pool.metrics();
        if m.shared.being_added == 0 && m.enis.attaching == 0 {
            assert_eq!(on_enis, m.shared.in_use + m.shared.idle, "{m:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cloud.stats()[&Action::CreateNetworkInterface].dropped, 2);
    pool.shutdown().await;
    http.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_vswitch_is_skipped_and_exhaustion_is_named_at_the_deadline() {
    let cloud = SimCloud::new(sim_config()).unwrap();
    let http = serve(&cloud).await;
    let mut cfg = pool_config();
    cfg.vswitches = vec![DEFAULT_VSWITCH_TINY.into(), DEFAULT_VSWITCH.into()];
    cfg.vswitch_selection = VSwitchSelection::Ordered;
    let pool = pool_over_http(&http, cfg, RateLimits::default()).await;
    let results = burst(&pool, 20).await;
    let vswitches: BTreeSet<String> = results.into_iter().map(|r| r.unwrap().vswitch_id).collect();
    // The /28 (12 addresses) went to the pool first; the rest came from the next vSwitch.
    assert_eq!(cloud.free_ipv4(DEFAULT_VSWITCH_TINY), Some(0));
    assert!(vswitches.contains(DEFAULT_VSWITCH), "{vswitches:?}");
    pool.shutdown().await;

    // Only the full vSwitch: waiting allocations fail at their deadline, saying why.
    let mut cfg = pool_config();
    cfg.vswitches = vec![DEFAULT_VSWITCH_TINY.into()];
    cfg.allocate_timeout = Duration::from_secs(2);
    cfg.pool_name = "second".into();
    let pool = pool_over_http(&http, cfg, RateLimits::default()).await;
    let results = burst(&pool, 3).await;
    for r in results {
        match r {
            Err(Error::Exhausted {
                cause: Blocker::SubnetExhausted { vswitch_ids },
                waited,
                ..
            }) => {
                assert_eq!(vswitch_ids, vec![DEFAULT_VSWITCH_TINY.to_owned()]);
                assert!(waited >= Duration::from_secs(2));
            }
            other => panic!("expected exhaustion, got {other:?}"),
        }
    }
    pool.shutdown().await;
    http.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eni_quota_is_named_through_the_client() {
    let mut sc = sim_config();
    sc.quotas.max_enis = 2;
    let cloud = SimCloud::new(sc).unwrap();
    let http = serve(&cloud).await;
    let mut cfg = pool_config();
    cfg.allocate_timeout = Duration::from_secs(3);
    let pool = pool_over_http(&http, cfg, RateLimits::default()).await;
    let results = burst(&pool, 17).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 15);
    for r in results.into_iter().filter_map(Result::err) {
        assert!(
            matches!(&r, Error::Exhausted { cause: Blocker::QuotaExceeded { detail }, .. } if detail.contains("QuotaExceeded")),
            "{r}"
        );
    }
    pool.shutdown().await;
    http.stop().await;
}
