//! `svc_update`: one service's backends change (one endpoint replaced) while 10k services exist.
//! Ours rewrites that service's map entry; kube-proxy re-applies a full `iptables-restore` (and,
//! with `MinimizeIPTablesRestore`, a partial one: all of KUBE-SERVICES plus the changed chains).
//!
//! Needs root. Prints `BENCH svc_update services=10000 ebpf_ms=.. iptables_ms=..` (ebpf: median of
//! many updates). Smoke mode: 1k services, few updates.

#![allow(
    clippy::unwrap_used,
    reason = "bench code: a failed unwrap is a failed bench"
)]

mod svc_common;

use std::time::{Duration, Instant};

use cnikit_benches::{Summary, ms, privilege, report, smoke_mode};
use cnikit_ebpf_dataplane::{Dataplane, Service, ServiceTable};
use cnikit_test_support::netns::{Role, TestNetns};
use svc_common::{
    capacity, full_ruleset, iptables_replace, iptables_restore, partial_ruleset, service,
};

fn iptables(
    services: &[Service],
    changed: &Service,
    restore: &str,
    runs: usize,
) -> (Duration, Duration) {
    let ns = TestNetns::create(Role::Node).unwrap();
    iptables_replace(&ns, restore, &full_ruleset(services));
    let index = services.iter().position(|s| s.key == changed.key).unwrap();
    let mut updated = services.to_vec();
    let mut full = Vec::new();
    let mut partial = Vec::new();
    for run in 0..runs {
        // Alternate between the changed and the original endpoints so every run changes one.
        let next = if run % 2 == 0 {
            changed.clone()
        } else {
            services[index].clone()
        };
        updated[index] = next.clone();
        full.push(iptables_replace(&ns, restore, &full_ruleset(&updated)));
        partial.push(iptables_restore(
            &ns,
            restore,
            &partial_ruleset(&updated, &next),
        ));
    }
    let median = |v: &[Duration]| Summary::of(v).map_or(Duration::ZERO, |s| s.p50);
    (median(&full), median(&partial))
}

fn main() {
    if !privilege::root("svc_update bench") {
        return;
    }
    let smoke = smoke_mode();
    let n = if smoke { 200 } else { 10_000 };
    let services: Vec<Service> = (0..n).map(|i| service(i, 0)).collect();
    let target = n / 2;
    let changed = service(target, 1);

    let mut dp = Dataplane::builder()
        .capacity(capacity(1_024))
        .load()
        .unwrap();
    for s in &services {
        dp.upsert_service(s).unwrap();
    }
    let key = services[target].key;
    let sets = [changed.backends.clone(), services[target].backends.clone()];
    let rounds = if smoke { 20 } else { 2_000 };
    let samples: Vec<Duration> = (0..rounds)
        .map(|i| {
            let started = Instant::now();
            dp.replace_backends(&key, &sets[i % 2]).unwrap();
            started.elapsed()
        })
        .collect();
    let ours = Summary::of(&samples).unwrap();

    let runs = if smoke { 1 } else { 3 };
    let (nft_full, nft_partial) = iptables(&services, &changed, "iptables-restore", runs);
    let (legacy_full, legacy_partial) = if smoke {
        (nft_full, nft_partial)
    } else {
        iptables(&services, &changed, "iptables-legacy-restore", runs)
    };
    report(
        "svc_update",
        &[
            ("services", &n),
            ("ebpf_ms", &ms(ours.p50)),
            ("ebpf_p99_ms", &ms(ours.p99)),
            ("iptables_ms", &ms(nft_full)),
            ("iptables_partial_ms", &ms(nft_partial)),
            ("iptables_legacy_ms", &ms(legacy_full)),
            ("iptables_legacy_partial_ms", &ms(legacy_partial)),
            ("samples", &samples.len()),
        ],
    );
}
