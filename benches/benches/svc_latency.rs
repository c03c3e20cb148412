//! `svc_latency`: connection setup plus one request/response (one byte each way) from a client
//! pod through a ClusterIP to a backend pod, with 10, 1k and 10k services installed: our tc
//! programs against kube-proxy-style iptables DNAT (Debian's default nft backend), the measured
//! service last in KUBE-SERVICES (iptables walks that chain for every new connection; our lookup
//! is a hash). Every configuration is its own node namespace; rounds are interleaved so drift
//! on the shared machine hits all alike; client and server run on CPU 0.
//!
//! Needs root. Prints `BENCH svc_latency services=N ebpf_p50_us=.. ebpf_p99_us=.. iptables_p50_us=..
//! iptables_p99_us=..` per size and a summary line. Smoke mode: 10 and 200 services, few samples.

#![allow(
    clippy::unwrap_used,
    reason = "bench code: a failed unwrap is a failed bench"
)]

mod svc_common;

use std::{net::SocketAddrV4, time::Duration};

use cnikit_benches::{Summary, privilege, report, smoke_mode, us};
use cnikit_ebpf_dataplane::{AttachMode, Dataplane, Placement, Service, ServiceKey, ServiceTable};
use svc_common::{
    SERVER, SERVER_PORT, Topology, capacity, full_ruleset, iptables_replace, server_addresses,
    service, vip,
};

/// `n` services, the last one (the measured one) backed by the server pod.
fn services(n: usize) -> Vec<Service> {
    let mut all: Vec<Service> = (0..n - 1).map(|i| service(i, 0)).collect();
    let backends = server_addresses()
        .into_iter()
        .map(|a| SocketAddrV4::new(a, SERVER_PORT));
    all.push(Service::new(ServiceKey::tcp(vip(n - 1), 80), backends));
    all
}

struct Config {
    label: &'static str,
    services: usize,
    target: SocketAddrV4,
    topology: Topology,
    _dataplane: Option<Dataplane>,
    samples: Vec<Duration>,
}

fn ebpf(n: usize) -> Config {
    let topology = Topology::new();
    let mut dp = Dataplane::builder()
        .capacity(capacity(262_144))
        .load()
        .unwrap();
    for pod in topology.net.pods() {
        topology
            .net
            .node()
            .run(|| dp.attach_endpoint(&pod.host_if, Placement::NodeSide, AttachMode::Auto))
            .unwrap();
    }
    for s in services(n) {
        dp.upsert_service(&s).unwrap();
    }
    Config {
        label: "ebpf",
        services: n,
        target: SocketAddrV4::new(vip(n - 1), 80),
        topology,
        _dataplane: Some(dp),
        samples: Vec::new(),
    }
}

fn iptables(n: usize) -> Config {
    let topology = Topology::new();
    iptables_replace(
        topology.net.node(),
        "iptables-restore",
        &full_ruleset(&services(n)),
    );
    Config {
        label: "iptables",
        services: n,
        target: SocketAddrV4::new(vip(n - 1), 80),
        topology,
        _dataplane: None,
        samples: Vec::new(),
    }
}

fn floor() -> Config {
    Config {
        label: "floor",
        services: 0,
        target: SocketAddrV4::new(SERVER, SERVER_PORT),
        topology: Topology::new(),
        _dataplane: None,
        samples: Vec::new(),
    }
}

fn main() {
    if !privilege::root("svc_latency bench") {
        return;
    }
    let smoke = smoke_mode();
    let sizes: &[usize] = if smoke {
        &[10, 200]
    } else {
        &[10, 1_000, 10_000]
    };
    let (rounds, per_round) = if smoke { (1, 20) } else { (10, 200) };

    let mut configs = vec![floor()];
    for &n in sizes {
        configs.push(ebpf(n));
        configs.push(iptables(n));
    }
    for c in &configs {
        // Warm up (ARP, caches); and check the path works before measuring.
        c.topology.connections(c.target, 5);
    }
    for _ in 0..rounds {
        for c in &mut configs {
            let batch = c.topology.connections(c.target, per_round);
            c.samples.extend(batch);
        }
    }
    let summary = |label: &str, n: usize| -> Summary {
        let c = configs
            .iter()
            .find(|c| c.label == label && c.services == n)
            .unwrap();
        Summary::of(&c.samples).unwrap()
    };
    for &n in sizes {
        let (e, i) = (summary("ebpf", n), summary("iptables", n));
        report(
            "svc_latency",
            &[
                ("services", &n),
                ("ebpf_p50_us", &us(e.p50)),
                ("ebpf_p99_us", &us(e.p99)),
                ("iptables_p50_us", &us(i.p50)),
                ("iptables_p99_us", &us(i.p99)),
                ("samples", &e.count),
            ],
        );
    }
    let floor = summary("floor", 0);
    let (first, last) = (sizes[0], sizes[sizes.len() - 1]);
    let growth = |label: &str| {
        let (a, b) = (summary(label, first).p50, summary(label, last).p50);
        format!("{:.1}", (b.as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0)
    };
    report(
        "svc_latency",
        &[
            ("floor_p50_us", &us(floor.p50)),
            ("from", &first),
            ("to", &last),
            ("ebpf_growth_pct", &growth("ebpf")),
            ("iptables_growth_pct", &growth("iptables")),
        ],
    );
}
