//! `svc_program`: programming 1k, 5k and 10k ClusterIP services with 10 backends each — our map
//! updates (one per service, Maglev table included) against `iptables-restore` of the
//! equivalent kube-proxy NAT ruleset (2 + 3N rules per service), in the same run:
//! - `ebpf_ms`: `upsert_services` (Maglev tables computed on all CPUs, one map update per
//!   service); `ebpf_sequential_ms`: one `upsert_service` call after another;
//! - `iptables_ms`: Debian's default (nft) backend restoring into an empty nat table (with
//!   `--noflush`, as kube-proxy runs it, nft is several times slower still: not run at scale);
//! - `iptables_legacy_ms`: the legacy backend, `--noflush` as kube-proxy runs it.
//!
//! `speedup` is `ebpf_ms` against the faster iptables. Needs root. Prints
//! `BENCH svc_program services=N ebpf_ms=.. iptables_ms=..` per size. Smoke mode
//! (`cargo test --benches`): 200 services only.

#![allow(
    clippy::unwrap_used,
    reason = "bench code: a failed unwrap is a failed bench"
)]

mod svc_common;

use std::time::{Duration, Instant};

use cnikit_benches::{ms, privilege, report, smoke_mode};
use cnikit_ebpf_dataplane::{Dataplane, Service, ServiceTable};
use cnikit_test_support::netns::{Role, TestNetns};
use svc_common::{capacity, full_ruleset, iptables_replace, iptables_restore, nat_rules, service};

fn ebpf(services: &[Service], bulk: bool) -> Duration {
    let mut dp = Dataplane::builder()
        .capacity(capacity(1_024))
        .load()
        .unwrap();
    let started = Instant::now();
    if bulk {
        dp.upsert_services(services).unwrap();
    } else {
        for s in services {
            dp.upsert_service(s).unwrap();
        }
    }
    let took = started.elapsed();
    assert_eq!(dp.service_keys().len(), services.len());
    took
}

/// Restores the whole ruleset into a fresh namespace's empty nat table.
fn iptables(services: &[Service], restore: &str, save: &str, noflush: bool) -> Duration {
    let ns = TestNetns::create(Role::Node).unwrap();
    let rules = full_ruleset(services);
    let took = if noflush {
        iptables_restore(&ns, restore, &rules)
    } else {
        iptables_replace(&ns, restore, &rules)
    };
    // 2 + 3N rules per service, plus 5 fixed ones and 3 jumps from the built-in chains.
    assert_eq!(nat_rules(&ns, save), services.len() * 32 + 8);
    took
}

fn main() {
    if !privilege::root("svc_program bench") {
        return;
    }
    let sizes: &[usize] = if smoke_mode() {
        &[200]
    } else {
        &[1_000, 5_000, 10_000]
    };
    for &n in sizes {
        let services: Vec<Service> = (0..n).map(|i| service(i, 0)).collect();
        let mut runs: Vec<Duration> = (0..3).map(|_| ebpf(&services, true)).collect();
        runs.sort_unstable();
        let ebpf_bulk = runs[1];
        let sequential = ebpf(&services, false);
        let nft = iptables(&services, "iptables-restore", "iptables-save", false);
        let legacy = iptables(
            &services,
            "iptables-legacy-restore",
            "iptables-legacy-save",
            true,
        );
        let ratio = nft.min(legacy).as_secs_f64() / ebpf_bulk.as_secs_f64();
        report(
            "svc_program",
            &[
                ("services", &n),
                ("backends", &svc_common::BACKENDS),
                ("ebpf_ms", &ms(ebpf_bulk)),
                ("ebpf_sequential_ms", &ms(sequential)),
                ("iptables_ms", &ms(nft)),
                ("iptables_legacy_ms", &ms(legacy)),
                ("speedup", &format!("{ratio:.0}")),
            ],
        );
    }
}
