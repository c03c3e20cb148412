//! The pool on AWS EC2, end to end against `moto_server` (one per test binary) through the
//! real EC2 client: warm-up, a burst, release back to the watermarks, GC of a leaked ENI, and
//! the per-instance limits read from `DescribeInstanceTypes` enforced by the pool (moto does
//! not enforce them). Under `CI=true` a missing moto fails; elsewhere the tests print SKIP.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use cnikit_cloud_api::{
    CloudProvider, CreateEniRequest, EniFilter, EniStatus,
    credentials::{Credentials, StaticCredentials},
    ec2::{Ec2Client, Ec2Config, testbed::Testbed},
    ecs::RetryPolicy,
};
use cnikit_eni_pool::{
    AllocateRequest, Error, LivePodSet, MemoryStore, PodKey, Pool, PoolConfig, Watermarks, tags,
};
use cnikit_test_support::{moto::MotoServer, privilege};

/// moto's `m5.large`: 3 ENIs of 10 IPv4 addresses.
const TYPE: &str = "m5.large";

fn moto(test: &str) -> Option<&'static MotoServer> {
    let server = MotoServer::available().and_then(|()| MotoServer::shared());
    let ok = privilege::check(
        test,
        "moto_server (pip install moto[server], scripts/setup.sh)",
        server.as_ref().map(|_| ()),
    );
    ok.then(|| server.ok()).flatten()
}

async fn setup(moto: &MotoServer) -> (Ec2Client, Testbed) {
    static N: AtomicU8 = AtomicU8::new(1);
    let mut retry = RetryPolicy::default();
    retry.deadline = Duration::from_secs(20);
    let ec2 = Ec2Client::new(
        Ec2Config::new("us-east-1")
            .with_endpoint(moto.url())
            .with_retry(retry),
        Arc::new(StaticCredentials::new(Credentials::new(
            "testing", "testing",
        ))),
    )
    .unwrap();
    let w = Testbed::create(&ec2, TYPE, N.fetch_add(1, Ordering::Relaxed))
        .await
        .unwrap();
    (ec2, w)
}

/// The pool configured as the AWS VPC CNI behaves: an ENI's primary address is never a pod's.
fn aws_config(w: &Testbed) -> PoolConfig {
    let mut c = PoolConfig::new(&w.instance_id, TYPE, [&w.subnet_id], [&w.security_group_id]);
    c.hand_out_eni_primary_ip = false;
    c.attach_poll_initial = Duration::from_millis(100);
    c.attach_poll_batch = Duration::from_millis(20);
    c.attach_poll_max = Duration::from_millis(200);
    c.retry_base = Duration::from_millis(100);
    c.retry_max = Duration::from_secs(1);
    c.allocate_timeout = Duration::from_secs(10);
    c.cooldown = Duration::ZERO;
    c.idle_release_after = Duration::from_millis(300);
    c.release_interval = Duration::from_millis(100);
    c.liveness_grace = Duration::ZERO;
    c.leak_grace = Duration::ZERO;
    c
}

fn pod(i: usize) -> PodKey {
    PodKey::new("default", format!("pod-{i}"), format!("c{i}"), "eth0")
}

async fn start(ec2: &Ec2Client, cfg: PoolConfig, live: &LivePodSet) -> Pool {
    Pool::builder(cfg)
        .cloud(Arc::new(ec2.clone()) as Arc<dyn CloudProvider>)
        .store(Arc::new(MemoryStore::new()))
        .liveness(Arc::new(live.clone()))
        .seed(1)
        .start()
        .await
        .unwrap()
}

/// Polls (real time) until `cond` holds, at most `limit`.
async fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// The pool's ENIs as EC2 sees them.
async fn pool_enis(ec2: &Ec2Client, w: &Testbed) -> Vec<cnikit_cloud_api::Eni> {
    let mut f = EniFilter::tag(tags::POOL, "cnikit");
    f.tags.insert(tags::INSTANCE.into(), w.instance_id.clone());
    ec2.describe_enis(&f).await.unwrap()
}

fn run(f: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f);
}

#[test]
fn pool_runs_on_ec2_end_to_end() {
    let Some(moto) = moto("pool_runs_on_ec2_end_to_end") else {
        return;
    };
    run(async {
        let (ec2, w) = setup(moto).await;
        let live = LivePodSet::new();
        let mut cfg = aws_config(&w);
        cfg.shared = Watermarks::new(2, 4).with_warm_up(6);
        let pool = start(&ec2, cfg, &live).await;
        // Limits from DescribeInstanceTypes: 2 secondary ENIs of 9 pod addresses.
        let cap = pool.capacity();
        assert_eq!(
            (cap.enis, cap.ips_per_shared_eni, cap.shared_ips),
            (2, 9, 18)
        );

        // Warm-up: 6 addresses, on ENIs attached to the instance.
        let warmed = until(Duration::from_secs(20), || {
            let m = pool.metrics();
            m.shared.idle >= 6 && m.enis.attaching == 0 && m.shared.being_added == 0
        })
        .await;
        assert!(warmed, "no warm-up: {:?}", pool.metrics());
        let enis = pool_enis(&ec2, &w).await;
        assert!(!enis.is_empty());
        for e in &enis {
            assert_eq!(e.status, EniStatus::InUse, "{e:?}");
            assert_eq!(e.instance_id(), Some(w.instance_id.as_str()));
        }

        // A burst of 12 pods at once: distinct addresses, each on its ENI in EC2.
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                live.insert(pod(i));
                let pool = pool.clone();
                tokio::spawn(
                    async move { pool.allocate(&AllocateRequest::shared_ip(pod(i))).await },
                )
            })
            .collect();
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap().unwrap());
        }
        let ips: BTreeSet<_> = got.iter().map(|a| a.ipv4).collect();
        assert_eq!(ips.len(), 12, "addresses handed out twice: {got:?}");
        let enis = pool_enis(&ec2, &w).await;
        for a in &got {
            let eni = enis.iter().find(|e| e.id == a.eni_id).unwrap();
            assert!(eni.secondary_ipv4.contains(&a.ipv4), "{a:?} not on {eni:?}");
            assert_ne!(
                eni.primary_ipv4,
                Some(a.ipv4),
                "an ENI's primary handed out"
            );
            assert_eq!(a.mac, eni.mac);
        }

        // Release 10: the surplus above max_idle goes back to EC2.
        for i in 0..10 {
            live.remove(&pod(i));
            assert!(pool.release(&pod(i)).await.unwrap().is_some());
        }
        let trimmed = until(Duration::from_secs(20), || {
            let m = pool.metrics();
            m.shared.idle <= 4 && m.shared.being_released == 0 && m.enis.releasing == 0
        })
        .await;
        let m = pool.metrics();
        assert!(trimmed, "not trimmed to max_idle: {m:?}");
        let in_cloud: usize = pool_enis(&ec2, &w)
            .await
            .iter()
            .map(|e| e.secondary_ipv4.len())
            .sum();
        assert_eq!(
            in_cloud,
            (m.shared.in_use + m.shared.idle + m.shared.cooling) as usize,
            "EC2 holds addresses the pool does not account for: {m:?}"
        );

        // A leaked ENI (a crash between create and attach): GC deletes it.
        let leaked = ec2
            .create_eni(
                &CreateEniRequest::new(&w.subnet_id, [&w.security_group_id])
                    .with_tag(tags::POOL, "cnikit")
                    .with_tag(tags::INSTANCE, &w.instance_id)
                    .with_tag(tags::ROLE, tags::ROLE_SHARED),
            )
            .await
            .unwrap();
        let report = pool.gc().await;
        assert!(report.errors.is_empty(), "{report:?}");
        assert_eq!(report.orphan_enis, vec![leaked.id.clone()], "{report:?}");
        let deleted = {
            let mut gone = false;
            for _ in 0..100 {
                if ec2.describe_eni(&leaked.id).await.unwrap().is_none() {
                    gone = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            gone
        };
        assert!(deleted, "leaked ENI {} not deleted", leaked.id);
        // The pods still bound kept their addresses.
        for a in &got[10..] {
            assert_eq!(pool.get(&a.pod).as_ref(), Some(a));
        }
        pool.shutdown().await;
    });
}

#[test]
fn pool_enforces_the_limits_ec2_reports() {
    let Some(moto) = moto("pool_enforces_the_limits_ec2_reports") else {
        return;
    };
    run(async {
        let (ec2, w) = setup(moto).await;
        let live = LivePodSet::new();
        let mut cfg = aws_config(&w);
        // A configuration beyond the type's capacity is refused at start.
        cfg.shared = Watermarks::new(0, 20);
        let refused = Pool::builder(cfg.clone())
            .cloud(Arc::new(ec2.clone()) as Arc<dyn CloudProvider>)
            .start()
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, Error::Config(m) if m.contains("18")),
            "{refused}"
        );
        cfg.shared = Watermarks::new(0, 18);
        cfg.allocate_timeout = Duration::from_secs(3);
        let pool = start(&ec2, cfg, &live).await;
        // 25 pods on a node whose type carries 2 × 9: moto would let every ENI take them all.
        let tasks: Vec<_> = (0..25)
            .map(|i| {
                live.insert(pod(i));
                let pool = pool.clone();
                tokio::spawn(
                    async move { pool.allocate(&AllocateRequest::shared_ip(pod(i))).await },
                )
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(Error::Exhausted { .. }) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(ok, 18, "the instance type's capacity: {:?}", pool.metrics());
        let enis = pool_enis(&ec2, &w).await;
        assert_eq!(
            enis.len(),
            2,
            "MaximumNetworkInterfaces 3, the primary included"
        );
        for e in &enis {
            let addresses = e.ipv4_addresses().count();
            assert!(
                addresses <= 10,
                "{} carries {addresses} > 10 addresses",
                e.id
            );
        }
        assert_eq!(
            ec2.list_instance_enis(&w.instance_id).await.unwrap().len(),
            3
        );
        pool.shutdown().await;
    });
}
