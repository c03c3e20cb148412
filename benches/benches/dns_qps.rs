//! `dns_qps`: cache-hit throughput and latency of cnikit-dns-autopath against dnsmasq.
//!
//! Both servers run on 127.0.0.1 in the same run, on the same (unpinned) cores, with the same
//! dnsperf command and the same query file of 1000 names that both have cached (dnsmasq answers
//! them from its configuration; cnikit forwards to that dnsmasq once, then serves its cache).
//! Rounds alternate which server goes first. dnsperf runs one client with 100 queries in
//! flight, i.e. saturating load: latency is queueing delay at the achieved rate.
//!
//! Prints `BENCH dns_qps cnikit_qps=.. dnsmasq_qps=.. cnikit_p99_ms=.. dnsmasq_p99_ms=..` with
//! medians over the rounds, plus CPU time per query of each server.
//!
//! Needs dnsperf and dnsmasq (fails under `CI=true` without them, else prints SKIP).

#![allow(
    clippy::unwrap_used,
    reason = "bench code: a failed unwrap is a failed bench"
)]

#[path = "dns_support/mod.rs"]
mod dns_support;

use std::{process::Command, sync::Arc};

use cnikit_benches::{ms, privilege, report, smoke_mode};
use cnikit_dns_autopath::{
    DnsServer, ServerConfig,
    upstream::{Forwarder, ForwarderConfig},
};
use dns_support::{TempDir, cpu_time, dnsperf, free_port, median, start_dnsmasq, which};

fn main() {
    for tool in ["dnsperf", "dnsmasq"] {
        if !privilege::check("dns_qps bench", tool, which(tool)) {
            return;
        }
    }
    let smoke = smoke_mode();
    let (rounds, seconds) = if smoke { (1, 1) } else { (5, 10) };
    let dir = TempDir::new("dns-qps");
    let queries: String = (1..=1000)
        .map(|i| format!("host{i}.bench.test A\n"))
        .collect();
    let queries = dir.write("queries.txt", &queries);

    let dnsmasq_port = free_port();
    let dnsmasq = start_dnsmasq(
        &dir,
        &dns_support::dnsmasq_conf("127.0.0.1", dnsmasq_port, false),
        Command::new("dnsmasq"),
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let upstream = Forwarder::new(ForwarderConfig::new(vec![
        format!("127.0.0.1:{dnsmasq_port}").parse().unwrap(),
    ]))
    .unwrap();
    let server = runtime
        .block_on(
            DnsServer::builder(ServerConfig::new("127.0.0.1:0".parse().unwrap()).autopath(None))
                .upstream(Arc::new(upstream))
                .bind(),
        )
        .unwrap();
    let cnikit_port = server.local_addr().port();

    // Warm both caches with one pass over the file.
    for port in [dnsmasq_port, cnikit_port] {
        let warm = Command::new("dnsperf")
            .args(["-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
            .arg(&queries)
            .args(["-n", "1"])
            .output()
            .unwrap();
        assert!(warm.status.success());
    }
    let me = std::process::id();
    let (mut c_qps, mut d_qps, mut c_p50, mut d_p50, mut c_p99, mut d_p99) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut c_cpu, mut d_cpu) = (vec![], vec![]);
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_cnikit in order {
            let (port, pid) = if is_cnikit {
                (cnikit_port, me)
            } else {
                (dnsmasq_port, dnsmasq.pid())
            };
            let cpu_before = cpu_time(pid);
            let run = dnsperf(&dir, &queries, "127.0.0.1", port, seconds);
            let cpu = cpu_time(pid).saturating_sub(cpu_before);
            let lat = run.latency.expect("dnsperf reported no latencies");
            #[expect(
                clippy::cast_precision_loss,
                reason = "query counts are far below 2^52"
            )]
            let cpu_us_per_query = cpu.as_secs_f64() * 1e6 / run.completed.max(1) as f64;
            eprintln!(
                "round {round} {}: {:.0} qps, p50 {} ms, p99 {} ms, lost {}, {:.2} us CPU/query",
                if is_cnikit { "cnikit" } else { "dnsmasq" },
                run.qps,
                ms(lat.p50),
                ms(lat.p99),
                run.lost,
                cpu_us_per_query
            );
            let (qps, p50, p99, cpus) = if is_cnikit {
                (&mut c_qps, &mut c_p50, &mut c_p99, &mut c_cpu)
            } else {
                (&mut d_qps, &mut d_p50, &mut d_p99, &mut d_cpu)
            };
            qps.push(run.qps);
            p50.push(lat.p50.as_secs_f64() * 1e3);
            p99.push(lat.p99.as_secs_f64() * 1e3);
            cpus.push(cpu_us_per_query);
        }
    }
    let stats = server.stats();
    assert!(stats.cache_hits > 0, "{stats:?}");
    let (cq, dq) = (median(&mut c_qps), median(&mut d_qps));
    report(
        "dns_qps",
        &[
            ("cnikit_qps", &format!("{cq:.0}")),
            ("dnsmasq_qps", &format!("{dq:.0}")),
            ("cnikit_p99_ms", &format!("{:.3}", median(&mut c_p99))),
            ("dnsmasq_p99_ms", &format!("{:.3}", median(&mut d_p99))),
            ("cnikit_p50_ms", &format!("{:.3}", median(&mut c_p50))),
            ("dnsmasq_p50_ms", &format!("{:.3}", median(&mut d_p50))),
            ("qps_ratio", &format!("{:.2}", cq / dq.max(1.0))),
            ("cnikit_cpu_us_per_q", &format!("{:.2}", median(&mut c_cpu))),
            (
                "dnsmasq_cpu_us_per_q",
                &format!("{:.2}", median(&mut d_cpu)),
            ),
            ("rounds", &rounds),
            ("seconds", &seconds),
            (
                "profile",
                &if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                },
            ),
        ],
    );
    runtime.block_on(server.shutdown());
    drop(dnsmasq);
}
