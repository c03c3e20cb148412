//! Crash test with real processes and real files: a child process runs the pool (real
//! [`FileStore`] in a temporary directory, the real Alibaba ECS client) against the ECS
//! simulator served over HTTP on loopback by this process, so the cloud's state survives the
//! child. The child allocates and releases in concurrent bursts and prints every
//! acknowledgement; the parent `kill -9`s it at a random point, 20 times, checking after each
//! cycle that no address acknowledged to one live pod was acknowledged to another. Then it
//! restarts the pool in process on the same files, lets it settle and checks: every
//! acknowledged binding survived, no address is bound twice, and the cloud holds nothing the
//! pool does not account for (no leaked address, no leaked ENI).
//!
//! The child is this test binary itself, re-run with `--exact crash_child --ignored` and its
//! parameters in the environment.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use cnikit_cloud_api::{
    CloudProvider, EniStatus, RateLimits,
    credentials::{Credentials, StaticCredentials},
    ecs::{EcsClient, EcsConfig, Endpoint, RetryPolicy},
    sim::{
        AccessKey, DEFAULT_INSTANCE, DEFAULT_SECURITY_GROUP, DEFAULT_VSWITCH, HttpSim,
        HttpSimConfig, InstanceSpec, LatencyConfig, SimCloud, SimConfig,
    },
};
use cnikit_eni_pool::{
    AllocateRequest, FileStore, LivePodSet, Liveness, LivenessError, PodKey, PodLiveness, Pool,
    PoolConfig, Watermarks, tags,
};
use cnikit_test_support::process::ExternalProcess;
use nix::sys::signal::Signal;

const KEY_ID: &str = "LTAI5tCrashTestKey";
const SECRET: &str = "crash/test+secret";
const PODS: usize = 40;
const WORKERS: usize = 8;
const CYCLES: usize = 20;
const INSTANCE_TYPE: &str = "ecs.g7.4xlarge";

fn pool_config() -> PoolConfig {
    let mut c = PoolConfig::new(
        DEFAULT_INSTANCE,
        INSTANCE_TYPE,
        [DEFAULT_VSWITCH],
        [DEFAULT_SECURITY_GROUP],
    );
    c.shared = Watermarks::new(2, 8);
    c.cooldown = Duration::from_millis(300);
    c.allocate_timeout = Duration::from_secs(10);
    c.attach_poll_initial = Duration::from_millis(200);
    c.attach_poll_max = Duration::from_millis(300);
    c.retry_base = Duration::from_millis(50);
    c.retry_max = Duration::from_secs(1);
    c.idle_release_after = Duration::from_secs(1);
    c.release_interval = Duration::from_millis(200);
    c.gc_interval = Duration::from_secs(2);
    c.liveness_grace = Duration::ZERO;
    c.leak_grace = Duration::from_secs(1);
    c.quota_pause = Duration::from_secs(1);
    c
}

fn key_line(k: &PodKey) -> String {
    format!(
        "{}|{}|{}|{}",
        k.namespace, k.name, k.container_id, k.interface
    )
}

fn parse_key(s: &str) -> Option<PodKey> {
    let mut it = s.split('|');
    Some(PodKey::new(it.next()?, it.next()?, it.next()?, it.next()?))
}

fn read_keys(path: &Path) -> Vec<PodKey> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(parse_key)
        .collect()
}

fn write_keys(path: &Path, keys: impl IntoIterator<Item = PodKey>) {
    let text: String = keys.into_iter().map(|k| key_line(&k) + "\n").collect();
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// Liveness from a file the parent writes: the listed pods are alive, every other is gone.
#[derive(Debug)]
struct FileLiveness(PathBuf);

#[async_trait]
impl Liveness for FileLiveness {
    async fn check(&self, pods: &[PodKey]) -> Result<Vec<PodLiveness>, LivenessError> {
        fs::metadata(&self.0).map_err(|e| LivenessError(e.to_string()))?;
        let alive = LivePodSet::new();
        for k in read_keys(&self.0) {
            alive.insert(k);
        }
        alive.check(pods).await
    }
}

fn ecs_client(url: &str) -> EcsClient {
    let mut retry = RetryPolicy::default();
    retry.max_attempts = 3;
    retry.deadline = Duration::from_secs(5);
    let cfg = EcsConfig::new("cn-hangzhou")
        .with_endpoint(Endpoint::custom(url))
        .with_retry(retry)
        .with_rate_limits(RateLimits::unlimited())
        .with_request_timeout(Duration::from_secs(5));
    EcsClient::new(
        cfg,
        Arc::new(StaticCredentials::new(Credentials::new(KEY_ID, SECRET))),
    )
    .unwrap()
}

/// The child: runs the pool until it is killed.
#[test]
#[ignore = "run by crash_cycles as a child process"]
fn crash_child() {
    let Ok(dir) = std::env::var("CNIKIT_POOL_CRASH_DIR") else {
        println!("SKIP crash_child: only run as a child of crash_cycles");
        return;
    };
    let dir = PathBuf::from(dir);
    let url = std::env::var("CNIKIT_POOL_CRASH_URL").unwrap();
    let seed: u64 = std::env::var("CNIKIT_POOL_CRASH_SEED")
        .unwrap()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // End libtest's `test crash_child ... ` line: every line of ours starts clean.
    println!();
    rt.block_on(async move {
        let keys = read_keys(&dir.join("keys"));
        let pool = Pool::builder(pool_config())
            .cloud(Arc::new(ecs_client(&url)) as Arc<dyn CloudProvider>)
            .store(Arc::new(FileStore::open(dir.join("store")).unwrap()))
            .liveness(Arc::new(FileLiveness(dir.join("live"))))
            .seed(seed)
            .start()
            .await
            .unwrap();
        // Finish the releases the previous child began and did not acknowledge.
        for k in read_keys(&dir.join("pending")) {
            pool.release(&k).await.unwrap();
            println!("ACK_RELEASE {}", key_line(&k));
        }
        println!("READY");
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let pool = pool.clone();
            let mine: Vec<PodKey> = keys
                .iter()
                .enumerate()
                .filter(|(i, _)| i % WORKERS == w)
                .map(|(_, k)| k.clone())
                .collect();
            let mut rng = fastrand::Rng::with_seed(seed ^ (w as u64) << 32);
            workers.push(tokio::spawn(async move {
                loop {
                    let k = &mine[rng.usize(..mine.len())];
                    if pool.get(k).is_some() && rng.bool() {
                        println!("BEGIN_RELEASE {}", key_line(k));
                        pool.release(k).await.unwrap();
                        println!("ACK_RELEASE {}", key_line(k));
                    } else {
                        match pool.allocate(&AllocateRequest::shared_ip(k.clone())).await {
                            Ok(a) => println!("ACK_ALLOC {} {} {}", key_line(k), a.ipv4, a.eni_id),
                            Err(e) => println!("FAILED_ALLOC {} {e}", key_line(k)),
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(rng.u64(0..20))).await;
                }
            }));
        }
        // The workers run until the parent kills this process.
        std::future::pending::<()>().await;
        drop(workers);
    });
}

/// What the parent knows from acknowledgements.
#[derive(Debug, Default)]
struct Model {
    /// Acknowledged and not being released.
    held: BTreeMap<PodKey, (Ipv4Addr, String)>,
    /// Release begun, not acknowledged.
    releasing: BTreeSet<PodKey>,
    acks: usize,
}

impl Model {
    fn apply(&mut self, line: &str, cycle: usize) {
        // libtest prints `test crash_child ... ` without a newline before the child's first
        // line: start at the marker wherever it is.
        let Some(start) = ["ACK_ALLOC ", "BEGIN_RELEASE ", "ACK_RELEASE "]
            .iter()
            .filter_map(|m| line.find(m))
            .min()
        else {
            return;
        };
        let mut parts = line[start..].split_whitespace();
        let (Some(what), Some(key)) = (parts.next(), parts.next().and_then(parse_key)) else {
            return;
        };
        match what {
            "ACK_ALLOC" => {
                let ip: Ipv4Addr = parts.next().unwrap().parse().unwrap();
                let eni = parts.next().unwrap().to_owned();
                if let Some((held_ip, _)) = self.held.get(&key) {
                    assert_eq!(*held_ip, ip, "cycle {cycle}: {key} got a second address");
                }
                for (other, (other_ip, _)) in &self.held {
                    assert!(
                        other == &key || *other_ip != ip,
                        "cycle {cycle}: double allocation of {ip} to {key} and {other}"
                    );
                }
                self.held.insert(key, (ip, eni));
                self.acks += 1;
            }
            "BEGIN_RELEASE" => {
                self.held.remove(&key);
                self.releasing.insert(key);
            }
            "ACK_RELEASE" => {
                self.held.remove(&key);
                self.releasing.remove(&key);
                self.acks += 1;
            }
            _ => {}
        }
    }
}

fn sim_config() -> SimConfig {
    let mut s = SimConfig::default();
    s.latency = LatencyConfig::default();
    s.latency.api = Duration::from_millis(5);
    s.latency.attach = Duration::from_millis(200);
    s.latency.detach = Duration::from_millis(100);
    let mut instance = InstanceSpec::new(DEFAULT_INSTANCE, INSTANCE_TYPE, DEFAULT_VSWITCH);
    instance.security_group_ids = vec![DEFAULT_SECURITY_GROUP.to_owned()];
    s.instances = vec![instance];
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_cycles() {
    let cloud = SimCloud::new(sim_config()).unwrap();
    let http = HttpSim::start(
        cloud.clone(),
        HttpSimConfig::new(AccessKey::new(KEY_ID, SECRET)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut generation = [0u32; PODS];
    let key =
        |i: usize, g: u32| PodKey::new("crash", format!("pod-{i}"), format!("sb-{i}-{g}"), "eth0");
    let mut model = Model::default();
    let mut rng = fastrand::Rng::with_seed(0xC0FFEE);
    let exe = std::env::current_exe().unwrap();
    for cycle in 0..CYCLES {
        // Now and then a pod that holds an address vanishes (its sandbox is replaced).
        if cycle % 3 == 2
            && let Some(gone) = model
                .held
                .keys()
                .nth(rng.usize(..model.held.len().max(1)))
                .cloned()
        {
            model.held.remove(&gone);
            let i: usize = gone.name.trim_start_matches("pod-").parse().unwrap();
            generation[i] += 1;
        }
        let keys: Vec<PodKey> = (0..PODS).map(|i| key(i, generation[i])).collect();
        write_keys(&dir.join("keys"), keys.iter().cloned());
        write_keys(&dir.join("live"), keys.iter().cloned());
        write_keys(&dir.join("pending"), model.releasing.iter().cloned());
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CNIKIT_POOL_CRASH_DIR", dir)
        .env("CNIKIT_POOL_CRASH_URL", http.url())
        .env("CNIKIT_POOL_CRASH_SEED", (cycle as u64 * 7919).to_string());
        let mut child = ExternalProcess::spawn(&format!("pool-crash-{cycle}"), cmd).unwrap();
        // Kill at a random point: during start-up and reconciliation, or during the burst.
        let kill_after = Duration::from_millis(rng.u64(20..1500));
        tokio::time::sleep(kill_after).await;
        assert!(
            child.try_status().unwrap().is_none(),
            "the child exited by itself:\n{}",
            child.output()
        );
        child.signal(Signal::SIGKILL);
        let dead = cnikit_test_support::process::wait_until(Duration::from_secs(5), || {
            child.try_status().ok().flatten().is_some()
        });
        assert!(dead, "child survived SIGKILL");
        let output = child.output();
        if let Ok(keep) = std::env::var("CNIKIT_POOL_CRASH_KEEP") {
            fs::write(
                Path::new(&keep).join(format!("cycle-{cycle:02}.log")),
                &output,
            )
            .unwrap();
        }
        assert!(
            !output.contains("panicked"),
            "cycle {cycle}: child panicked:\n{output}"
        );
        for line in output.lines() {
            model.apply(line, cycle);
        }
    }
    assert!(
        model.acks > 100,
        "too few acknowledgements to mean anything: {}",
        model.acks
    );

    // The last restart, in process, on the same files: only the pods the parent saw
    // acknowledged are alive; what was allocated without acknowledgement is released.
    write_keys(&dir.join("live"), model.held.keys().cloned());
    let store = Arc::new(FileStore::open(dir.join("store")).unwrap());
    let pool = Pool::builder(pool_config())
        .cloud(Arc::new(ecs_client(&http.url())) as Arc<dyn CloudProvider>)
        .store(store)
        .liveness(Arc::new(FileLiveness(dir.join("live"))))
        .seed(1)
        .start()
        .await
        .unwrap();
    for k in &model.releasing {
        pool.release(k).await.unwrap();
    }
    let settled = wait_settled(&pool, Duration::from_secs(60)).await;
    let report = pool.gc().await;
    assert!(report.errors.is_empty(), "{report:?}");
    let m = pool.metrics();
    assert!(settled, "the pool did not settle: {m:?}");
    // Every acknowledged binding survived, nothing else is bound, nothing is bound twice.
    let bound: BTreeMap<PodKey, (Ipv4Addr, String)> = pool
        .allocations()
        .into_iter()
        .map(|a| (a.pod, (a.ipv4, a.eni_id)))
        .collect();
    assert_eq!(
        bound, model.held,
        "bindings differ from the acknowledged ones"
    );
    let ips: BTreeSet<Ipv4Addr> = bound.values().map(|(ip, _)| *ip).collect();
    assert_eq!(ips.len(), bound.len(), "an address is bound twice");
    // No leak: the cloud holds exactly what the pool accounts for.
    let ours: Vec<_> = cloud
        .enis()
        .into_iter()
        .filter(|e| e.tags.contains_key(tags::POOL))
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
    let in_cloud: u32 = ours
        .iter()
        .map(|e| u32::try_from(e.ipv4_addresses().count()).unwrap())
        .sum();
    assert_eq!(
        in_cloud,
        m.shared.in_use + m.shared.idle + m.shared.cooling,
        "addresses in the cloud not accounted for: {m:?}"
    );
    for (ip, eni) in bound.values() {
        let e = cloud.eni(eni).unwrap();
        assert!(e.ipv4_addresses().any(|x| x == *ip), "{ip} is not on {eni}");
    }
    assert!((2..=8).contains(&m.shared.idle), "{m:?}");
    eprintln!(
        "crash test: {CYCLES} kill -9 cycles, {} acknowledgements, {} pods bound at the end, {} ENIs",
        model.acks,
        bound.len(),
        ours.len()
    );
    pool.shutdown().await;
    http.stop().await;
}

async fn wait_settled(pool: &Pool, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        let m = pool.metrics();
        if m.shared.being_added == 0
            && m.shared.being_released == 0
            && m.shared.cooling == 0
            && m.enis.attaching == 0
            && m.enis.releasing == 0
            && m.enis.orphans == 0
            && (2..=8).contains(&m.shared.idle)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}
