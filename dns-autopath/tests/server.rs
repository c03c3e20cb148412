//! The server on loopback with real UDP/TCP sockets, against the real cluster table and a
//! scripted upstream at the seam (so every answer and every upstream question is known).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use cnikit_dns_autopath::{
    AutoPathConfig, CacheConfig, ClusterRecords, DnsServer, PodIndex, PrefetchConfig, ServerConfig,
    StaticPodIndex,
    cluster::{ClusterTable, Service},
};
use common::{
    Scripted, ScriptedUpstream, a, aaaa, answers, ask, ask_from, ask_tcp, cname, query_message,
    soa, udp_exchange_from,
};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{RData, RecordType},
};

struct Fixture {
    server: DnsServer,
    upstream: Arc<ScriptedUpstream>,
    table: Arc<ClusterTable>,
    addr: SocketAddr,
}

async fn fixture(cache: CacheConfig, autopath: bool) -> Fixture {
    let table = common::cluster_table();
    let pods = Arc::new(StaticPodIndex::new());
    // Queries from 127.0.0.1 come from a pod in "prod".
    pods.insert("127.0.0.1".parse().unwrap(), "prod");
    let upstream = ScriptedUpstream::new();
    upstream.set(
        "www.example.test",
        RecordType::A,
        Scripted::records(vec![a("www.example.test.", 300, "198.18.100.1")]),
    );
    upstream.set(
        "www.example.test",
        RecordType::AAAA,
        Scripted::records(vec![aaaa("www.example.test.", 300, "fd00::100:1")]),
    );
    let config =
        ServerConfig::new("127.0.0.1:0".parse().unwrap())
            .udp_workers(2)
            .cache(cache)
            .autopath(autopath.then(|| {
                AutoPathConfig::with_extra_search(vec!["example.internal".parse().unwrap()])
            }));
    let server = DnsServer::builder(config)
        .records(Arc::clone(&table) as Arc<dyn ClusterRecords>)
        .pod_index(pods as Arc<dyn PodIndex>)
        .upstream(Arc::clone(&upstream) as _)
        .bind()
        .await
        .unwrap();
    let addr = server.local_addr();
    Fixture {
        server,
        upstream,
        table,
        addr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autopath_answers_the_first_search_step_with_a_cname() {
    let f = fixture(CacheConfig::default(), true).await;
    let m = ask(
        f.addr,
        "www.example.test.prod.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    // The question is unchanged; a CNAME leads from it to what was found.
    assert_eq!(
        m.queries[0].name().to_ascii(),
        "www.example.test.prod.svc.cluster.local."
    );
    assert_eq!(
        answers(&m),
        [
            "www.example.test.prod.svc.cluster.local. 30 CNAME www.example.test.",
            "www.example.test. 30 A 198.18.100.1"
        ]
    );
    // The walk asked upstream only for what the cluster zone could not answer.
    assert_eq!(
        f.upstream.asked_for("www.example.test.example.internal."),
        1
    );
    assert_eq!(f.upstream.asked_for("www.example.test."), 1);
    assert_eq!(f.upstream.calls(), 2);
    let s = f.server.stats();
    assert_eq!((s.autopath_walks, s.autopath_successes), (1, 1));
    // The second time: a cache hit, no new walk.
    let again = ask(
        f.addr,
        "www.example.test.prod.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(answers(&again).len(), 2);
    assert_eq!(f.server.stats().cache_hits, 1);
    assert_eq!(f.upstream.calls(), 2);
    // A later step of the client's own walk is answered from the walk's cache entries.
    let step = ask(f.addr, "www.example.test.example.internal.", RecordType::A).await;
    assert_eq!(step.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(f.upstream.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autopath_finds_services_in_other_namespaces_and_keeps_own_ones_direct() {
    let f = fixture(CacheConfig::default(), true).await;
    let m = ask(f.addr, "db.other.prod.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        answers(&m),
        [
            "db.other.prod.svc.cluster.local. 5 CNAME db.other.svc.cluster.local.",
            "db.other.svc.cluster.local. 5 A 10.96.0.11"
        ]
    );
    // Own namespace: found at the first step, no CNAME, no upstream.
    let m = ask(f.addr, "web.prod.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answers(&m), ["web.prod.svc.cluster.local. 5 A 10.96.0.10"]);
    assert!(m.metadata.authoritative);
    assert_eq!(f.upstream.calls(), 0);
    // NODATA found later: CNAME to where the walk ended, no records.
    let m = ask(f.addr, "db.other.prod.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        answers(&m),
        ["db.other.prod.svc.cluster.local. 5 CNAME db.other.svc.cluster.local."]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autopath_returns_the_original_nxdomain_when_nothing_exists() {
    let f = fixture(CacheConfig::default(), true).await;
    let m = ask(
        f.addr,
        "nothing.invalid.prod.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
    assert_eq!(
        m.queries[0].name().to_ascii(),
        "nothing.invalid.prod.svc.cluster.local."
    );
    // The cluster zone's SOA comes with it, for negative caching.
    assert_eq!(m.authorities.len(), 1);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(f.upstream.calls(), 2); // .example.internal and the name itself
    assert_eq!(f.server.stats().autopath_successes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autopath_needs_the_clients_namespace() {
    let f = fixture(CacheConfig::default(), true).await;
    // 127.0.0.2 is not a known pod: a plain NXDOMAIN, no walk.
    let m = ask_from(
        "127.0.0.2".parse().unwrap(),
        f.addr,
        "www.example.test.prod.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(f.server.stats().autopath_walks, 0);
    // A prod pod asking under another namespace is not on its first step either.
    let m = ask(
        f.addr,
        "www.example.test.other.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(f.server.stats().autopath_walks, 0);
    // The NXDOMAIN cached for the stranger does not leak into the pod's AutoPath answer.
    let m = ask(
        f.addr,
        "www.example.test.prod.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autopath_off_answers_each_step_literally() {
    let f = fixture(CacheConfig::default(), false).await;
    let m = ask(
        f.addr,
        "www.example.test.prod.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(f.upstream.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_case_questions_come_back_in_their_case() {
    let f = fixture(CacheConfig::default(), true).await;
    let m = ask(f.addr, "WwW.ExAmple.TEST.", RecordType::A).await;
    assert_eq!(m.queries[0].name().to_ascii(), "WwW.ExAmple.TEST.");
    // Served again from cache (lower-case key), still in the asker's case.
    let m = ask(f.addr, "www.EXAMPLE.test.", RecordType::A).await;
    assert_eq!(m.queries[0].name().to_ascii(), "www.EXAMPLE.test.");
    assert_eq!(f.upstream.calls(), 1);
    let m = ask(
        f.addr,
        "Www.Example.Test.Prod.Svc.Cluster.Local.",
        RecordType::A,
    )
    .await;
    assert_eq!(
        m.queries[0].name().to_ascii(),
        "Www.Example.Test.Prod.Svc.Cluster.Local."
    );
    assert_eq!(m.answers.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_records_over_udp_and_tcp() {
    let f = fixture(CacheConfig::default(), true).await;
    let m = ask(
        f.addr,
        "_http._tcp.web.prod.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(
        answers(&m),
        ["_http._tcp.web.prod.svc.cluster.local. 5 SRV 0 100 80 web.prod.svc.cluster.local."]
    );
    assert_eq!(m.additionals.len(), 1, "{m:?}");
    let m = ask(f.addr, "10.0.96.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(
        answers(&m),
        ["10.0.96.10.in-addr.arpa. 5 PTR web.prod.svc.cluster.local."]
    );
    let m = ask(f.addr, "pet-0.pets.prod.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        answers(&m),
        ["pet-0.pets.prod.svc.cluster.local. 5 A 198.18.0.7"]
    );
    // ExternalName: the CNAME, followed upstream; the answer lives as long as its shortest
    // record.
    let m = ask(f.addr, "ext.prod.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        answers(&m),
        [
            "ext.prod.svc.cluster.local. 5 CNAME www.example.test.",
            "www.example.test. 5 A 198.18.100.1"
        ]
    );
    let tcp = ask_tcp(
        f.addr,
        &query_message("web.prod.svc.cluster.local.", RecordType::A, false),
    )
    .await;
    assert_eq!(
        answers(&tcp),
        ["web.prod.svc.cluster.local. 5 A 10.96.0.10"]
    );
    assert_eq!(f.server.stats().tcp_queries, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_changes_take_effect_before_the_ttl_ends() {
    let f = fixture(CacheConfig::default(), true).await;
    let m = ask(f.addr, "web.prod.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.answers.len(), 1);
    f.table
        .upsert_service(&Service::cluster_ip(
            "prod",
            "web",
            vec!["10.96.0.99".parse().unwrap()],
        ))
        .unwrap();
    let m = ask(f.addr, "web.prod.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answers(&m), ["web.prod.svc.cluster.local. 5 A 10.96.0.99"]);
    assert!(f.table.remove_service("prod", "web"));
    let m = ask(f.addr, "web.prod.svc.cluster.local.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_are_capped_and_count_down_and_negative_answers_expire() {
    let cache = CacheConfig::default().ttl_caps(Duration::from_secs(30), Duration::from_secs(1));
    let f = fixture(cache, false).await;
    let m = ask(f.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(m.answers[0].ttl, 30, "300 upstream, capped at 30");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let m = ask(f.addr, "www.example.test.", RecordType::A).await;
    assert!(m.answers[0].ttl <= 29, "{}", m.answers[0].ttl);
    assert_eq!(f.upstream.calls(), 1);
    // Negative: the SOA minimum (600) is capped at the denial cap (1 s).
    f.upstream.set(
        "gone.example.test",
        RecordType::A,
        Scripted::nxdomain(vec![soa("example.test.", 3600, 600)]),
    );
    for _ in 0..3 {
        let m = ask(f.addr, "gone.example.test.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities[0].ttl, 1);
    }
    assert_eq!(f.upstream.asked_for("gone.example.test."), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ask(f.addr, "gone.example.test.", RecordType::A).await;
    assert_eq!(f.upstream.asked_for("gone.example.test."), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failure_is_servfail_then_stale_when_allowed() {
    let cache = CacheConfig::default()
        .ttl_caps(Duration::from_secs(1), Duration::from_secs(1))
        .servfail_ttl(Duration::ZERO);
    let f = fixture(cache, false).await;
    f.upstream
        .down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let m = ask(f.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(f.server.stats().servfail_replies, 1);
    f.upstream
        .down
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let m = ask(f.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    // Without serve-stale an expired entry is not used when the upstream fails again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.upstream
        .down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let m = ask(f.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);

    let stale = CacheConfig::default()
        .ttl_caps(Duration::from_secs(1), Duration::from_secs(1))
        .serve_stale(Duration::from_secs(60));
    let f = fixture(stale, false).await;
    ask(f.addr, "www.example.test.", RecordType::A).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.upstream
        .down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let m = ask(f.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answers(&m), ["www.example.test. 30 A 198.18.100.1"]);
    assert_eq!(f.server.stats().stale_answers, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_upstream_question() {
    let f = fixture(CacheConfig::default(), false).await;
    f.upstream.set_delay(Duration::from_millis(300));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let addr = f.addr;
        tasks.push(tokio::spawn(async move {
            ask(addr, "www.example.test.", RecordType::A).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().answers.len(), 1);
    }
    assert_eq!(f.upstream.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn popular_entries_are_prefetched_before_they_expire() {
    let mut prefetch = PrefetchConfig::default();
    prefetch.remaining_percent = 50;
    let cache = CacheConfig::default()
        .ttl_caps(Duration::from_secs(3), Duration::from_secs(1))
        .prefetch(prefetch);
    let f = fixture(cache, false).await;
    // 3 s TTL: after 2 hits, a hit with less than 1.5 s left starts a refresh.
    let stored = std::time::Instant::now();
    ask(f.addr, "www.example.test.", RecordType::A).await;
    ask(f.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(f.upstream.calls(), 1);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    ask(f.addr, "www.example.test.", RecordType::A).await; // the hit that starts the refresh
    let refreshed = async {
        while f.upstream.calls() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(2), refreshed)
        .await
        .expect("no refresh");
    assert_eq!(f.server.stats().prefetches, 1);
    // Past the first entry's expiry: still a hit, on the refreshed entry.
    let expiry = stored + Duration::from_millis(3100);
    tokio::time::sleep(expiry.saturating_duration_since(std::time::Instant::now())).await;
    let misses = f.server.stats().cache_misses;
    ask(f.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(f.server.stats().cache_misses, misses);
    assert_eq!(f.upstream.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let f = fixture(CacheConfig::default(), false).await;
    let many: Vec<_> = (1..=100)
        .map(|i| a("big.example.test.", 60, &format!("198.18.1.{i}")))
        .collect();
    f.upstream
        .set("big.example.test", RecordType::A, Scripted::records(many));
    // No EDNS: 512 bytes at most.
    let q = query_message("big.example.test.", RecordType::A, false);
    let reply = udp_exchange_from("127.0.0.1".parse().unwrap(), f.addr, &q.to_vec().unwrap()).await;
    assert!(reply.len() <= 512);
    let m = Message::from_vec(&reply).unwrap();
    assert!(m.metadata.truncation);
    assert!(m.answers.is_empty());
    // EDNS 1232: still too big (100 * 16 bytes).
    let m = ask(f.addr, "big.example.test.", RecordType::A).await;
    assert!(m.metadata.truncation);
    let m = ask_tcp(f.addr, &q).await;
    assert_eq!(m.answers.len(), 100);
    assert!(!m.metadata.truncation);
    assert_eq!(f.server.stats().truncated_replies, 2);
    assert_eq!(f.upstream.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edns_is_echoed_and_dnssec_ok_is_part_of_the_key() {
    let f = fixture(CacheConfig::default(), false).await;
    let with = ask(f.addr, "www.example.test.", RecordType::A).await;
    let edns = with.edns.as_ref().unwrap();
    assert_eq!(edns.max_payload(), 1232);
    assert!(!edns.flags().dnssec_ok);
    let plain = query_message("www.example.test.", RecordType::A, false);
    let reply = udp_exchange_from(
        "127.0.0.1".parse().unwrap(),
        f.addr,
        &plain.to_vec().unwrap(),
    )
    .await;
    assert!(Message::from_vec(&reply).unwrap().edns.is_none());
    let mut dnssec = query_message("www.example.test.", RecordType::A, true);
    dnssec.edns.as_mut().unwrap().set_dnssec_ok(true);
    let reply = udp_exchange_from(
        "127.0.0.1".parse().unwrap(),
        f.addr,
        &dnssec.to_vec().unwrap(),
    )
    .await;
    let m = Message::from_vec(&reply).unwrap();
    assert!(m.edns.unwrap().flags().dnssec_ok);
    assert_eq!(f.upstream.calls(), 2, "DO queries are cached separately");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_formerr_or_nothing_and_the_server_survives() {
    let f = fixture(CacheConfig::default(), true).await;
    let local = "127.0.0.1".parse().unwrap();
    // A header claiming a question that is not there: FORMERR with the same ID.
    let mut bad = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w'];
    let reply = udp_exchange_from(local, f.addr, &bad).await;
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.metadata.id, 0xABCD);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // AXFR over UDP: REFUSED.
    let axfr = query_message("cluster.local.", RecordType::AXFR, false);
    let reply = udp_exchange_from(local, f.addr, &axfr.to_vec().unwrap()).await;
    assert_eq!(
        Message::from_vec(&reply).unwrap().metadata.response_code,
        ResponseCode::Refused
    );
    // Garbage of every length, and mutations of a valid query: no panic, no hang.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let valid = query_message(
        "www.example.test.prod.svc.cluster.local.",
        RecordType::A,
        true,
    )
    .to_vec()
    .unwrap();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..3000 {
        let packet: Vec<u8> = if i % 2 == 0 {
            let len = (next() % 600) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut p = valid.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % p.len();
                p[at] = next() as u8;
            }
            p.truncate((next() as usize) % (p.len() + 1));
            p
        };
        socket.send_to(&packet, f.addr).await.unwrap();
    }
    bad.clear();
    // Still serving.
    let m = ask(f.addr, "web.prod.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answers(&m), ["web.prod.svc.cluster.local. 5 A 10.96.0.10"]);
    let s = f.server.stats();
    assert!(s.udp_queries >= 3000, "{s:?}");
    assert!(s.error_replies + s.dropped > 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_chains_from_upstream_are_kept_whole() {
    let f = fixture(CacheConfig::default(), true).await;
    f.upstream.set(
        "alias.example.test",
        RecordType::A,
        Scripted::records(vec![
            cname("alias.example.test.", 120, "cdn.example.net."),
            a("cdn.example.net.", 20, "198.18.2.2"),
        ]),
    );
    let m = ask(
        f.addr,
        "alias.example.test.prod.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    let got = answers(&m);
    assert_eq!(
        got,
        [
            "alias.example.test.prod.svc.cluster.local. 20 CNAME alias.example.test.",
            "alias.example.test. 20 CNAME cdn.example.net.",
            "cdn.example.net. 20 A 198.18.2.2"
        ],
        "TTLs are capped by the entry's lifetime (the shortest record)"
    );
    assert!(matches!(m.answers[2].data, RData::A(_)));
}

/// An upstream that answers with mutations of a valid reply to the question asked.
struct Garbling {
    seed: std::sync::Mutex<u64>,
}

#[async_trait::async_trait]
impl cnikit_dns_autopath::upstream::Upstream for Garbling {
    async fn query(
        &self,
        q: &cnikit_dns_autopath::upstream::UpstreamQuery,
    ) -> Result<Vec<u8>, cnikit_dns_autopath::upstream::UpstreamError> {
        let mut seed = self.seed.lock().unwrap();
        let mut next = || {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        };
        let name = q.name.to_string();
        let mut m = query_message(&name, RecordType::from(q.qtype.0), true);
        m.metadata.message_type = hickory_proto::op::MessageType::Response;
        m.add_answer(a(&name, 60, "198.18.3.3"));
        m.add_answer(cname(&name, 60, "alias.example.test."));
        let mut bytes = m.to_vec().unwrap();
        for _ in 0..next() % 4 {
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        if next() % 3 == 0 {
            let keep = (next() as usize) % (bytes.len() + 1);
            bytes.truncate(keep);
        }
        Ok(bytes)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_upstream_never_breaks_the_server() {
    let pods = Arc::new(StaticPodIndex::new());
    pods.insert("127.0.0.1".parse().unwrap(), "prod");
    let server = DnsServer::builder(
        ServerConfig::new("127.0.0.1:0".parse().unwrap())
            .udp_workers(1)
            .cache(CacheConfig::default().capacity(0)),
    )
    .records(Arc::new(ClusterTable::new(
        "cluster.local".parse().unwrap(),
    )))
    .pod_index(pods as Arc<dyn PodIndex>)
    .upstream(Arc::new(Garbling {
        seed: std::sync::Mutex::new(0x9E37_79B9_7F4A_7C15),
    }))
    .bind()
    .await
    .unwrap();
    let addr = server.local_addr();
    let mut codes = std::collections::BTreeSet::new();
    for i in 0..300 {
        let name = if i % 2 == 0 {
            format!("n{i}.example.test.prod.svc.cluster.local.")
        } else {
            format!("n{i}.example.test.")
        };
        let m = ask(addr, &name, RecordType::A).await;
        assert_eq!(m.queries[0].name().to_ascii(), name);
        codes.insert(u16::from(m.metadata.response_code));
    }
    // Some garbage survives validation and is served, the rest becomes SERVFAIL.
    assert!(codes.contains(&0) && codes.contains(&2), "{codes:?}");
    assert!(server.stats().upstream_failures > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_prefetch_keeps_the_entry_it_meant_to_refresh() {
    let mut prefetch = PrefetchConfig::default();
    prefetch.remaining_percent = 50;
    let cache = CacheConfig::default()
        .ttl_caps(Duration::from_secs(3), Duration::from_secs(1))
        .prefetch(prefetch);
    let f = fixture(cache, false).await;
    ask(f.addr, "www.example.test.", RecordType::A).await;
    ask(f.addr, "www.example.test.", RecordType::A).await;
    f.upstream
        .down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    ask(f.addr, "www.example.test.", RecordType::A).await; // starts a refresh, which fails
    let failed = async {
        while f.server.stats().upstream_failures < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(2), failed)
        .await
        .expect("the refresh never ran");
    // The entry still answers until its own expiry.
    let m = ask(f.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1);
}
