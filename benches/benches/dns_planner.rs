//! `dns_planner`: the pure AutoPath planner and the cache-hit path, through the public API.
//!
//! - `plan_external`: plan for `www.example.com.prod.svc.cluster.local` (five candidates);
//! - `plan_not_a_step`: the common case of a name that is not a search step;
//! - `hit_plain`: `DnsHandler::answer_cached` for a cached name (parse, key, lookup, patch);
//! - `hit_autopath`: the same for a cached AutoPath answer (adds the pod-index lookup);
//! - `miss`: a name not in the cache (parse, key, lookup, give up).
//!
//! Prints `BENCH dns_planner ...` with medians of plain sampled loops (criterion keeps its own
//! statistics).

#![allow(
    clippy::unwrap_used,
    reason = "bench code: a failed unwrap is a failed bench"
)]

use std::{hint::black_box, net::IpAddr, sync::Arc, time::Instant};

use cnikit_benches::{Summary, report, smoke_mode};
use cnikit_dns_autopath::{
    AutoPathConfig, AutoPathPlanner, DnsClass, Name, RecordType, ServerConfig, StaticPodIndex,
    server::{CachedAnswer, DnsHandler, Transport},
    upstream::NoUpstream,
};
use criterion::{Criterion, criterion_group, criterion_main};

#[path = "dns_support/mod.rs"]
mod dns_support;

/// A wire-format query with EDNS.
fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    let name: Name = name.parse().unwrap();
    m.extend_from_slice(name.as_wire());
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
    m
}

fn ns_per_op(samples: &[std::time::Duration], per_sample: u32) -> String {
    Summary::of(samples).map_or_else(
        || "0".to_owned(),
        |s| format!("{:.0}", s.p50.as_secs_f64() * 1e9 / f64::from(per_sample)),
    )
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();

    let planner = AutoPathPlanner::new(
        "cluster.local".parse().unwrap(),
        &AutoPathConfig::with_extra_search(vec!["example.internal".parse().unwrap()]),
    )
    .unwrap();
    let external: Name = "www.example.com.prod.svc.cluster.local".parse().unwrap();
    let direct: Name = "www.example.com".parse().unwrap();

    let table = dns_support::cluster_table();
    let pods = Arc::new(StaticPodIndex::new());
    let client: IpAddr = "198.18.0.10".parse().unwrap();
    pods.insert(client, "prod");
    let handler =
        DnsHandler::new(&ServerConfig::default(), table, pods, Arc::new(NoUpstream)).unwrap();
    let plain = query("web.prod.svc.cluster.local", 1);
    let autopath = query("db.other.prod.svc.cluster.local", 1);
    let missing = query("nowhere.example.com", 1);
    for q in [&plain, &autopath] {
        runtime
            .block_on(handler.answer(q, client, Transport::Udp))
            .unwrap();
    }
    let mut out = Vec::with_capacity(512);
    assert_eq!(
        handler.answer_cached(&autopath, client, Transport::Udp, &mut out),
        CachedAnswer::Answered
    );

    let mut group = c.benchmark_group("dns_planner");
    group.bench_function("plan_external", |b| {
        b.iter(|| {
            planner.plan(
                black_box(&external),
                RecordType::A,
                DnsClass::IN,
                Some("prod"),
            )
        });
    });
    group.bench_function("plan_not_a_step", |b| {
        b.iter(|| {
            planner.plan(
                black_box(&direct),
                RecordType::A,
                DnsClass::IN,
                Some("prod"),
            )
        });
    });
    for (name, q) in [
        ("hit_plain", &plain),
        ("hit_autopath", &autopath),
        ("miss", &missing),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| handler.answer_cached(black_box(q), client, Transport::Udp, &mut out));
        });
    }
    group.finish();

    // Plain sampled loops for the BENCH line.
    let (rounds, per) = if smoke_mode() { (5, 100) } else { (200, 1000) };
    let sample = |f: &mut dyn FnMut()| -> Vec<std::time::Duration> {
        (0..rounds)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..per {
                    f();
                }
                t.elapsed()
            })
            .collect()
    };
    let plan = sample(&mut || {
        black_box(planner.plan(
            black_box(&external),
            RecordType::A,
            DnsClass::IN,
            Some("prod"),
        ));
    });
    let hit = sample(&mut || {
        black_box(handler.answer_cached(black_box(&plain), client, Transport::Udp, &mut out));
    });
    let hit_ap = sample(&mut || {
        black_box(handler.answer_cached(black_box(&autopath), client, Transport::Udp, &mut out));
    });
    report(
        "dns_planner",
        &[
            ("plan_external_ns", &ns_per_op(&plan, per)),
            ("cache_hit_ns", &ns_per_op(&hit, per)),
            ("cache_hit_autopath_ns", &ns_per_op(&hit_ap, per)),
        ],
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
