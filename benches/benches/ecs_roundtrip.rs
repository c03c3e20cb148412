//! `ecs_roundtrip`: one full ENI round trip — create (2 secondary IPs), attach, wait until
//! `InUse`, assign 5 more IPv4 — against the in-process simulator and against the HTTP
//! simulator through the real ECS client (signing, HTTP on loopback, JSON), in the same run.
//!
//! Cleanup (detach, wait, delete) runs between rounds and is not measured. Prints
//! `BENCH ecs_roundtrip ...` with medians and the HTTP/in-process ratio.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use cnikit_benches::{Summary, report, smoke_mode, us};
use cnikit_cloud_api::{
    AssignIpsRequest, AttachEniRequest, CloudProvider, CreateEniRequest, DetachEniRequest,
    RateLimits, WaitOptions, WaitTarget,
    credentials::{Credentials, StaticCredentials},
    ecs::{EcsClient, EcsConfig, Endpoint},
    sim::{
        AccessKey, DEFAULT_INSTANCE, DEFAULT_SECURITY_GROUP, DEFAULT_VSWITCH, HttpSim,
        HttpSimConfig, SimCloud, SimConfig,
    },
};
use criterion::{Criterion, criterion_group, criterion_main};

fn wait() -> WaitOptions {
    WaitOptions::fixed(Duration::from_millis(1), Duration::from_secs(10))
}

/// The measured part: create, attach, wait, assign. Returns the ENI id.
async fn round_trip(cloud: &dyn CloudProvider) -> String {
    let eni = cloud
        .create_eni(
            &CreateEniRequest::new(DEFAULT_VSWITCH, [DEFAULT_SECURITY_GROUP])
                .with_secondary_ipv4_count(2)
                .with_tag("cnikit.io/bench", "roundtrip"),
        )
        .await
        .expect("create");
    cloud
        .attach_eni(&AttachEniRequest::new(&eni.id, DEFAULT_INSTANCE))
        .await
        .expect("attach");
    cloud
        .wait_eni(
            &eni.id,
            &WaitTarget::AttachedTo(DEFAULT_INSTANCE.into()),
            &wait(),
        )
        .await
        .expect("wait");
    let ips = cloud
        .assign_ipv4(&AssignIpsRequest::count(&eni.id, 5))
        .await
        .expect("assign");
    assert_eq!(ips.len(), 5);
    eni.id
}

async fn cleanup(cloud: &dyn CloudProvider, eni_id: &str) {
    cloud
        .detach_eni(&DetachEniRequest::new(eni_id, DEFAULT_INSTANCE))
        .await
        .expect("detach");
    cloud
        .wait_eni(eni_id, &WaitTarget::Detached, &wait())
        .await
        .expect("wait detached");
    cloud.delete_eni(eni_id).await.expect("delete");
}

async fn measure(cloud: &dyn CloudProvider, rounds: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let id = round_trip(cloud).await;
        out.push(t.elapsed());
        cleanup(cloud, &id).await;
    }
    out
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let inproc = SimCloud::new(SimConfig::instant()).expect("sim");
    let (http_sim, client) = rt.block_on(async {
        let sim = HttpSim::start(
            SimCloud::new(SimConfig::instant()).expect("sim"),
            HttpSimConfig::new(AccessKey::new("LTAIbench", "bench-secret")),
            "127.0.0.1:0".parse().expect("addr"),
        )
        .await
        .expect("http sim");
        let client = EcsClient::new(
            EcsConfig::new("cn-hangzhou")
                .with_endpoint(Endpoint::custom(sim.url()))
                .with_rate_limits(RateLimits::unlimited()),
            Arc::new(StaticCredentials::new(Credentials::new(
                "LTAIbench",
                "bench-secret",
            ))),
        )
        .expect("client");
        (sim, client)
    });

    let mut group = c.benchmark_group("ecs_roundtrip");
    for (name, cloud) in [
        ("in_process", &inproc as &dyn CloudProvider),
        ("http", &client as &dyn CloudProvider),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let id = round_trip(cloud).await;
                        total += t.elapsed();
                        cleanup(cloud, &id).await;
                    }
                    total
                })
            });
        });
    }
    group.finish();

    let rounds = if smoke_mode() { 3 } else { 500 };
    let calls_before = http_sim.cloud().total_calls();
    let (a, b) = rt.block_on(async {
        (
            measure(&inproc, rounds).await,
            measure(&client, rounds).await,
        )
    });
    let calls = (http_sim.cloud().total_calls() - calls_before) as f64 / rounds as f64;
    let (Some(a), Some(b)) = (Summary::of(&a), Summary::of(&b)) else {
        return;
    };
    report(
        "ecs_roundtrip",
        &[
            ("in_process_p50_us", &us(a.p50)),
            ("in_process_p99_us", &us(a.p99)),
            ("http_p50_us", &us(b.p50)),
            ("http_p99_us", &us(b.p99)),
            (
                "http_over_in_process",
                &format!("{:.1}", b.p50.as_secs_f64() / a.p50.as_secs_f64()),
            ),
            ("api_calls_per_round", &format!("{calls:.1}")),
            ("rounds", &rounds),
        ],
    );
    rt.block_on(http_sim.stop());
}

criterion_group!(benches, bench);
criterion_main!(benches);
