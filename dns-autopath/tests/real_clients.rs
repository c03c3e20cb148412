//! Real clients against the server: glibc's stub resolver (`getent ahosts`) and `dig` in a pod
//! namespace, our server on 169.254.20.10 in a node namespace, dnsmasq as the upstream.
//!
//! Needs root (namespaces, bind mounts) and dnsmasq, dig, getent, unshare.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{sync::Arc, time::Duration};

use cnikit_dns_autopath::{
    AutoPathConfig, CacheConfig, ClusterRecords, DnsServer, PodIndex, ServerConfig, StaticPodIndex,
    upstream::{Forwarder, ForwarderConfig},
};
use cnikit_test_support::require_root;
use common::netns::{DNS_IP, POD_IP, Topology, UPSTREAM, which};

fn tools(test: &str) -> bool {
    for tool in ["dnsmasq", "dig", "getent", "unshare"] {
        if !cnikit_test_support::privilege::check(test, tool, which(tool)) {
            return false;
        }
    }
    true
}

fn config(autopath: bool, cache: CacheConfig) -> ServerConfig {
    ServerConfig::new(format!("{DNS_IP}:53").parse().unwrap())
        .udp_workers(2)
        .cache(cache)
        .autopath(
            autopath.then(|| {
                AutoPathConfig::with_extra_search(vec!["example.internal".parse().unwrap()])
            }),
        )
}

fn forwarder(servers: &[&str], attempt: Duration, total: Duration) -> Arc<Forwarder> {
    let servers = servers.iter().map(|s| s.parse().unwrap()).collect();
    Arc::new(Forwarder::new(ForwarderConfig::new(servers).timeouts(attempt, total)).unwrap())
}

fn builder(
    autopath: bool,
    cache: CacheConfig,
    upstream: Arc<Forwarder>,
) -> cnikit_dns_autopath::DnsServerBuilder {
    let pods = Arc::new(StaticPodIndex::new());
    pods.insert(POD_IP.parse().unwrap(), "prod");
    DnsServer::builder(config(autopath, cache))
        .records(common::cluster_table() as Arc<dyn ClusterRecords>)
        .pod_index(pods as Arc<dyn PodIndex>)
        .upstream(upstream)
}

/// One `getent ahosts` lookup: (resolved, output, queries our server received, queries dnsmasq
/// received).
fn lookup(
    topo: &Topology,
    server: &DnsServer,
    dnsmasq: &common::netns::Dnsmasq,
    name: &str,
) -> (bool, String, u64, usize) {
    let before = server.stats().queries();
    let upstream_before = dnsmasq.queries();
    let (ok, out) = topo.getent(name);
    (
        ok,
        out,
        server.stats().queries() - before,
        dnsmasq.queries() - upstream_before,
    )
}

#[test]
fn glibc_query_counts_with_and_without_autopath() {
    require_root!("glibc_query_counts_with_and_without_autopath");
    if !tools("glibc_query_counts_with_and_without_autopath") {
        return;
    }
    let topo = Topology::new();
    let dnsmasq = topo.dnsmasq("");
    // (name, expected address, queries without AutoPath, with AutoPath)
    let cases = [
        ("web", Some("10.96.0.10"), 2, 2),
        ("db.other", Some("10.96.0.11"), 4, 2),
        ("www.example.test", Some("198.18.100.1"), 10, 2),
        ("nothing.invalid", None, 10, 10),
    ];
    let mut report = Vec::new();
    for autopath in [false, true] {
        let server = topo.server(builder(
            autopath,
            CacheConfig::default(),
            forwarder(&[UPSTREAM], Duration::from_secs(1), Duration::from_secs(2)),
        ));
        for (name, address, without, with) in cases {
            let (ok, out, queries, upstream) = lookup(&topo, server.get(), &dnsmasq, name);
            report.push(format!(
                "autopath={autopath} {name}: {queries} queries to us, {upstream} upstream"
            ));
            match address {
                Some(ip) => assert!(ok && out.contains(ip), "{name}: {out}"),
                None => assert!(!ok, "{name} should not resolve: {out}"),
            }
            let expected = if autopath { with } else { without };
            assert_eq!(
                queries, expected,
                "{name}, autopath={autopath}\n{report:#?}"
            );
        }
        if autopath {
            let s = server.get().stats();
            assert!(s.autopath_successes >= 2, "{s:?}");
        }
        drop(server);
    }
    eprintln!("{}", report.join("\n"));
    // The external name resolves to both families.
    let server = topo.server(builder(
        true,
        CacheConfig::default(),
        forwarder(&[UPSTREAM], Duration::from_secs(1), Duration::from_secs(2)),
    ));
    let (_, out, _, _) = lookup(&topo, server.get(), &dnsmasq, "www.example.test");
    assert!(out.contains("fd00::100:1"), "{out}");
}

#[test]
fn dig_sees_the_cname_the_cluster_records_and_tcp() {
    require_root!("dig_sees_the_cname_the_cluster_records_and_tcp");
    if !tools("dig_sees_the_cname_the_cluster_records_and_tcp") {
        return;
    }
    let topo = Topology::new();
    let _dnsmasq = topo.dnsmasq("");
    let server = topo.server(builder(
        true,
        CacheConfig::default(),
        forwarder(&[UPSTREAM], Duration::from_secs(1), Duration::from_secs(2)),
    ));
    let out = topo.dig(&[
        "+noall",
        "+answer",
        "www.example.test.prod.svc.cluster.local",
        "A",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("www.example.test.prod.svc.cluster.local.")
            && lines[0].contains("CNAME")
            && lines[0].ends_with("www.example.test."),
        "{out}"
    );
    assert!(lines[1].contains("198.18.100.1"), "{out}");
    // The question section is what was asked.
    let out = topo.dig(&[
        "+noall",
        "+question",
        "www.example.test.prod.svc.cluster.local",
    ]);
    assert!(
        out.contains(";www.example.test.prod.svc.cluster.local."),
        "{out}"
    );
    let out = topo.dig(&["+short", "_http._tcp.web.prod.svc.cluster.local", "SRV"]);
    assert_eq!(out.trim(), "0 100 80 web.prod.svc.cluster.local.");
    let out = topo.dig(&["+short", "-x", "10.96.0.10"]);
    assert_eq!(out.trim(), "web.prod.svc.cluster.local.");
    let out = topo.dig(&["+short", "+tcp", "web.prod.svc.cluster.local"]);
    assert_eq!(out.trim(), "10.96.0.10");
    let out = topo.dig(&["dns-version.cluster.local", "TXT", "+short"]);
    assert_eq!(out.trim(), "\"1.1.0\"");
    assert!(server.get().stats().tcp_queries >= 1);
}

#[test]
fn cache_hits_ttl_caps_and_negative_caching_with_dnsmasq() {
    require_root!("cache_hits_ttl_caps_and_negative_caching_with_dnsmasq");
    if !tools("cache_hits_ttl_caps_and_negative_caching_with_dnsmasq") {
        return;
    }
    let topo = Topology::new();
    let dnsmasq = topo.dnsmasq("");
    let cache = CacheConfig::default().ttl_caps(Duration::from_secs(30), Duration::from_secs(1));
    let server = topo.server(builder(
        false,
        cache,
        forwarder(&[UPSTREAM], Duration::from_secs(1), Duration::from_secs(2)),
    ));
    // dnsmasq answers with TTL 3600 (local-ttl); we serve at most 30.
    let out = topo.dig(&["+noall", "+answer", "www.example.test", "A"]);
    let ttl: u32 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(ttl, 30, "{out}");
    for _ in 0..5 {
        assert_eq!(
            topo.dig(&["+short", "www.example.test", "A"]).trim(),
            "198.18.100.1"
        );
    }
    assert_eq!(dnsmasq.queries_for("www.example.test"), 1);
    assert!(server.get().stats().cache_hits >= 5);
    // Negative answers are cached for the denial cap, then asked again.
    for _ in 0..3 {
        let out = topo.dig(&["nothing.invalid", "A"]);
        assert!(out.contains("status: NXDOMAIN"), "{out}");
    }
    assert_eq!(dnsmasq.queries_for("nothing.invalid"), 1);
    std::thread::sleep(Duration::from_millis(1200));
    topo.dig(&["nothing.invalid", "A"]);
    assert_eq!(dnsmasq.queries_for("nothing.invalid"), 2);
    // Default caps: 30 s / 5 s, as NodeLocal DNSCache.
    assert_eq!(
        CacheConfig::default().success_ttl_cap,
        Duration::from_secs(30)
    );
    assert_eq!(
        CacheConfig::default().denial_ttl_cap,
        Duration::from_secs(5)
    );
}

#[test]
fn upstream_down_failover_and_recovery() {
    require_root!("upstream_down_failover_and_recovery");
    if !tools("upstream_down_failover_and_recovery") {
        return;
    }
    let topo = Topology::new();
    let dnsmasq = topo.dnsmasq("");
    // 127.0.0.2:5354 has nobody listening (port unreachable): failover to dnsmasq.
    let upstream = forwarder(
        &["127.0.0.2:5354", UPSTREAM],
        Duration::from_millis(500),
        Duration::from_secs(1),
    );
    let cache = CacheConfig::default().servfail_ttl(Duration::ZERO);
    let server = topo.server(builder(false, cache, Arc::clone(&upstream)));
    assert_eq!(
        topo.dig(&["+short", "www.example.test", "A"]).trim(),
        "198.18.100.1"
    );
    assert!(upstream.stats().errors >= 1, "{:?}", upstream.stats());
    // Upstream gone: SERVFAIL from us (forwarder budget 1 s) before dig's own 3 s timeout,
    // which would show as "timed out" instead of a status.
    dnsmasq.stop();
    let out = topo.dig(&["down.example.test", "A"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    // The cached name still answers.
    assert_eq!(
        topo.dig(&["+short", "www.example.test", "A"]).trim(),
        "198.18.100.1"
    );
    // Upstream back: answers again.
    let _dnsmasq = topo.dnsmasq("");
    let out = topo.dig(&["down.example.test", "A"]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert!(server.get().stats().servfail_replies >= 1);
}

#[test]
fn truncation_and_tcp_fallback() {
    require_root!("truncation_and_tcp_fallback");
    if !tools("truncation_and_tcp_fallback") {
        return;
    }
    let topo = Topology::new();
    let hosts: String = (1..=100)
        .map(|i| format!("198.18.1.{i} big.example.test\n"))
        .collect();
    let hosts_file = topo.dir.write("big.hosts", &hosts);
    let _dnsmasq = topo.dnsmasq(&format!("addn-hosts={}", hosts_file.display()));
    let upstream = forwarder(&[UPSTREAM], Duration::from_secs(1), Duration::from_secs(2));
    let server = topo.server(builder(
        false,
        CacheConfig::default(),
        Arc::clone(&upstream),
    ));
    // Without EDNS and without retrying: the TC bit.
    let out = topo.dig(&["+noedns", "+ignore", "big.example.test", "A"]);
    assert!(out.contains(" tc "), "{out}");
    // Our forwarder got a truncated UDP answer from dnsmasq and retried over TCP.
    let s = upstream.stats();
    assert!(s.truncated >= 1 && s.tcp_exchanges >= 1, "{s:?}");
    // dig's default: retry over TCP, get all 100.
    let out = topo.dig(&["+short", "big.example.test", "A"]);
    assert_eq!(out.lines().count(), 100, "{out}");
    assert!(server.get().stats().tcp_queries >= 1);
    assert!(server.get().stats().truncated_replies >= 1);
}
