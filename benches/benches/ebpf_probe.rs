//! `ebpf_probe`: what the pipeline's proof program costs from userspace.
//!
//! - `load`: parse the shipped object and pass the verifier (once per agent start).
//! - `blocklist_update`: one map insert + remove from userspace (the unit of every control-plane
//!   update the dataplane will make).
//!
//! Needs root (fails under `CI=true` without it). Prints `BENCH ebpf_probe ...` with medians.

use std::{hint::black_box, net::Ipv4Addr, time::Instant};

use cnikit_benches::{Summary, privilege, report, smoke_mode, us};
use cnikit_ebpf_dataplane::ProbeProgram;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    if !privilege::root("ebpf_probe bench") {
        return;
    }
    let mut group = c.benchmark_group("ebpf_probe");
    group.bench_function("load", |b| {
        b.iter(|| black_box(ProbeProgram::load().expect("load")));
    });
    let mut probe = ProbeProgram::load().expect("load");
    let addr = Ipv4Addr::new(198, 18, 0, 2);
    group.bench_function("blocklist_update", |b| {
        b.iter(|| {
            probe.block_source(black_box(addr)).expect("insert");
            probe.unblock_source(black_box(addr)).expect("remove");
        });
    });
    group.finish();

    // A plain sampled summary for the BENCH line (criterion keeps its own statistics).
    let rounds = if smoke_mode() { 3 } else { 200 };
    let loads: Vec<_> = (0..rounds.min(50))
        .map(|_| {
            let t = Instant::now();
            black_box(ProbeProgram::load().expect("load"));
            t.elapsed()
        })
        .collect();
    let updates: Vec<_> = (0..rounds * 10)
        .map(|_| {
            let t = Instant::now();
            probe.block_source(addr).expect("insert");
            probe.unblock_source(addr).expect("remove");
            t.elapsed()
        })
        .collect();
    let (Some(load), Some(update)) = (Summary::of(&loads), Summary::of(&updates)) else {
        return;
    };
    report(
        "ebpf_probe",
        &[
            ("load_p50_us", &us(load.p50)),
            ("load_p99_us", &us(load.p99)),
            ("update_p50_us", &us(update.p50)),
            ("update_p99_us", &us(update.p99)),
            ("samples", &updates.len()),
        ],
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
