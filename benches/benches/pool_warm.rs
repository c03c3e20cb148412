//! `pool_warm`: allocate + release from a warm pool with the durable file store (real files,
//! `fdatasync` per group commit), 64 concurrent requesters; p50/p99 latency of each call and
//! allocations per second. The same run with the in-memory store shows the engine's own cost.
//!
//! The cloud is the in-process simulator; it is never called on this path (the pool is
//! warmed first, and the run checks that every allocation came from idle and no call
//! happened). Cool-down is 0 here: with the
//! default 30 s, 20,000 releases a second would keep 600,000 addresses cooling.
//! The disk is shared with other work on the machine, so the run also measures `fdatasync`
//! on the same file system and prints it next to the results.

use std::{
    fs::OpenOptions,
    io::Write,
    os::unix::fs::FileExt,
    sync::Arc,
    time::{Duration, Instant},
};

use cnikit_benches::{Summary, report, smoke_mode, us};
use cnikit_cloud_api::{
    CloudProvider,
    sim::{
        DEFAULT_INSTANCE, DEFAULT_SECURITY_GROUP, DEFAULT_VSWITCH, InstanceSpec, SimCloud,
        SimConfig,
    },
};
use cnikit_eni_pool::store::FileStoreOptions;
use cnikit_eni_pool::{
    AllocateRequest, FileStore, MemoryStore, PodKey, Pool, PoolConfig, RecordStore, Watermarks,
};
use criterion::{Criterion, criterion_group, criterion_main};

const CONCURRENCY: usize = 64;

fn sim() -> SimCloud {
    let mut cfg = SimConfig::instant();
    let mut instance = InstanceSpec::new(DEFAULT_INSTANCE, "ecs.g7.4xlarge", DEFAULT_VSWITCH);
    instance.security_group_ids = vec![DEFAULT_SECURITY_GROUP.to_owned()];
    cfg.instances = vec![instance];
    SimCloud::new(cfg).expect("sim")
}

async fn warm_pool(cloud: &SimCloud, store: Arc<dyn RecordStore>) -> Pool {
    let mut cfg = PoolConfig::new(
        DEFAULT_INSTANCE,
        "ecs.g7.4xlarge",
        [DEFAULT_VSWITCH],
        [DEFAULT_SECURITY_GROUP],
    );
    // Warm up to 180 idle once; with at most 64 in use, idle never falls below the low
    // watermark, so nothing calls the cloud during the run.
    cfg.shared = Watermarks::new(8, 200).with_warm_up(180);
    cfg.cooldown = Duration::ZERO;
    cfg.attach_poll_initial = Duration::from_millis(1);
    let pool = Pool::builder(cfg)
        .cloud(Arc::new(cloud.clone()) as Arc<dyn CloudProvider>)
        .store(store)
        .seed(1)
        .start()
        .await
        .expect("pool");
    let deadline = Instant::now() + Duration::from_secs(30);
    while pool.metrics().shared.idle < 180 {
        assert!(Instant::now() < deadline, "pool did not warm up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pool
}

fn pod(worker: usize, i: u64) -> PodKey {
    PodKey::new(
        "bench",
        format!("w{worker}"),
        format!("c{worker}-{i}"),
        "eth0",
    )
}

struct Run {
    allocs: Vec<Duration>,
    releases: Vec<Duration>,
    elapsed: Duration,
}

/// 64 requesters, each allocating and releasing in a loop for `length`.
async fn run(pool: &Pool, length: Duration) -> Run {
    let start = Instant::now();
    let deadline = start + length;
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut allocs = Vec::new();
                let mut releases = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline {
                    let key = pod(w, i);
                    let t0 = Instant::now();
                    pool.allocate(&AllocateRequest::shared_ip(key.clone()))
                        .await
                        .expect("allocate");
                    let t1 = Instant::now();
                    pool.release(&key).await.expect("release");
                    releases.push(t1.elapsed());
                    allocs.push(t1 - t0);
                    i += 1;
                }
                (allocs, releases)
            })
        })
        .collect();
    let mut out = Run {
        allocs: Vec::new(),
        releases: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (a, r) = t.await.expect("requester");
        out.allocs.extend(a);
        out.releases.extend(r);
    }
    out.elapsed = start.elapsed();
    out
}

/// `fdatasync` of 300-byte writes on the store's file system, for context: appended (the
/// file grows, so the sync also commits the file system's journal) or written over blocks
/// that already hold data (as the store's journals are).
fn fsync_probe(dir: &std::path::Path, n: usize, overwrite: bool) -> Option<Summary> {
    let path = dir.join("fsync-probe");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .ok()?;
    if overwrite {
        f.write_all(&vec![0u8; n * 300]).ok()?;
        f.sync_all().ok()?;
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        f.write_all_at(&[b'x'; 300], (i * 300) as u64).ok()?;
        let t = Instant::now();
        f.sync_data().ok()?;
        samples.push(t.elapsed());
    }
    std::fs::remove_file(&path).ok();
    Summary::of(&samples)
}

fn print(store: &str, r: &Run, extra: &[(&str, &dyn std::fmt::Display)]) {
    let (Some(a), Some(rel)) = (Summary::of(&r.allocs), Summary::of(&r.releases)) else {
        return;
    };
    let rate = r.allocs.len() as f64 / r.elapsed.as_secs_f64();
    let mut fields: Vec<(&str, &dyn std::fmt::Display)> = vec![
        ("store", &store),
        ("concurrency", &CONCURRENCY),
        ("allocations", &a.count),
    ];
    let rate = format!("{rate:.0}");
    let (a50, a90, a99) = (us(a.p50), us(a.p90), us(a.p99));
    let (r50, r99) = (us(rel.p50), us(rel.p99));
    let over = r
        .allocs
        .iter()
        .filter(|d| **d > Duration::from_millis(1))
        .count();
    let over = format!("{:.2}", 100.0 * over as f64 / r.allocs.len() as f64);
    fields.extend([
        ("allocs_per_s", &rate as &dyn std::fmt::Display),
        ("alloc_p50_us", &a50),
        ("alloc_p90_us", &a90),
        ("alloc_p99_us", &a99),
        ("alloc_over_1ms_pct", &over),
        ("release_p50_us", &r50),
        ("release_p99_us", &r99),
    ]);
    fields.extend_from_slice(extra);
    report("pool_warm", &fields);
    if std::env::var_os("POOL_WARM_DEBUG").is_some() {
        for (name, v) in [("alloc", &r.allocs), ("release", &r.releases)] {
            let over = |ms: u64| v.iter().filter(|d| **d > Duration::from_millis(ms)).count();
            eprintln!(
                "{name}: n={} >1ms={} >5ms={} >10ms={}",
                v.len(),
                over(1),
                over(5),
                over(10)
            );
        }
    }
}

fn bench(c: &mut Criterion) {
    // `POOL_WARM_JOURNALS=n` tries another number of journal files (writers in flight).
    // `POOL_WARM_COMPACT_AFTER=n` another compaction interval (commits).
    // `POOL_WARM_WORKERS=n` another number of runtime worker threads (default 2).
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env("POOL_WARM_WORKERS").unwrap_or(2))
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let cloud = sim();
    let mut options = FileStoreOptions::default();
    if let Some(n) = env("POOL_WARM_JOURNALS") {
        options.journals = n;
    }
    if let Some(n) = env("POOL_WARM_COMPACT_AFTER") {
        options.compact_after = n;
        options.journal_bytes = options.journal_bytes.max(n as u64 * 512);
    }
    let file = Arc::new(FileStore::open_with(dir.path().join("store"), options).expect("store"));
    let pool = rt.block_on(warm_pool(&cloud, file.clone()));

    let mut group = c.benchmark_group("pool_warm");
    group.bench_function("alloc_release_one_requester_file_store", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for i in 0..iters {
                    let key = pod(999, i);
                    pool.allocate(&AllocateRequest::shared_ip(key.clone()))
                        .await
                        .expect("allocate");
                    pool.release(&key).await.expect("release");
                }
                t.elapsed()
            })
        });
    });
    group.finish();

    let length = if smoke_mode() {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(5)
    };
    let calls_before = cloud.total_calls();
    let m0 = pool.metrics();
    let before = file.stats();
    let probes = if smoke_mode() { 20 } else { 300 };
    let fsync_append = fsync_probe(dir.path(), probes, false);
    let fsync_overwrite = fsync_probe(dir.path(), probes, true);
    let r = rt.block_on(run(&pool, length));
    let after = file.stats();
    let commits = after.commits - before.commits;
    let syncs = (after.syncs - before.syncs).max(1);
    let per_sync = format!("{:.1}", commits as f64 / syncs as f64);
    let cloud_calls = cloud.total_calls() - calls_before;
    let probe = |s: Option<Summary>| {
        s.map_or_else(
            || ("n/a".to_owned(), "n/a".to_owned()),
            |s| (us(s.p50), us(s.p99)),
        )
    };
    let (a50, a99) = probe(fsync_append);
    let (o50, o99) = probe(fsync_overwrite);
    let journals = options.journals;
    let overlapped = format!(
        "{:.2}",
        (after.overlapped_syncs - before.overlapped_syncs) as f64 / syncs as f64
    );
    let compactions = after.compactions - before.compactions;
    let snapshot_waits = after.snapshot_waits - before.snapshot_waits;
    let slow = after.slow_syncs - before.slow_syncs;
    let slow_fsyncs_pct = format!("{:.2}", 100.0 * slow as f64 / syncs as f64);
    let slow_commits = after.slow_commits - before.slow_commits;
    // The disk's share: each commit waits for the sync in flight, then its own.
    let sync_latency = after.sync_latency.since(&before.sync_latency);
    let bucket = |q: f64| {
        sync_latency
            .quantile_upper_bound(q)
            .map_or_else(|| "n/a".to_owned(), |d| d.as_micros().to_string())
    };
    let (sync_p50, sync_p99) = (bucket(0.5), bucket(0.99));
    let syncs_over_500us_pct = format!(
        "{:.2}",
        100.0 * sync_latency.count_above(Duration::from_micros(500)) as f64
            / sync_latency.total().max(1) as f64
    );
    let slow_commits_pct = format!("{:.2}", 100.0 * slow_commits as f64 / commits.max(1) as f64);
    print(
        "file",
        &r,
        &[
            ("journals", &journals),
            ("commits_per_fsync", &per_sync),
            ("overlapped_fsync_share", &overlapped),
            ("compactions", &compactions),
            ("snapshot_waits", &snapshot_waits),
            ("max_snapshot_us", &after.max_snapshot_us),
            ("max_group", &after.max_group),
            ("slow_fsyncs_pct", &slow_fsyncs_pct),
            ("fsync_bucket_p50_us", &sync_p50),
            ("fsync_bucket_p99_us", &sync_p99),
            ("fsyncs_over_500us_pct", &syncs_over_500us_pct),
            ("store_over_1ms_pct", &slow_commits_pct),
            ("fsync_overwrite_p50_us", &o50),
            ("fsync_overwrite_p99_us", &o99),
            ("fsync_append_p50_us", &a50),
            ("fsync_append_p99_us", &a99),
            ("cloud_calls", &cloud_calls),
        ],
    );
    let m1 = pool.metrics();
    assert_eq!(
        m1.allocations_from_idle - m0.allocations_from_idle,
        m1.allocations - m0.allocations,
        "an allocation waited for the cloud"
    );
    assert_eq!(cloud_calls, 0, "the warm path called the cloud");
    rt.block_on(pool.shutdown());

    let cloud = sim();
    let pool = rt.block_on(warm_pool(&cloud, Arc::new(MemoryStore::new())));
    let calls_before = cloud.total_calls();
    let r = rt.block_on(run(&pool, length));
    let cloud_calls = cloud.total_calls() - calls_before;
    print("memory", &r, &[("cloud_calls", &cloud_calls)]);
    rt.block_on(pool.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
