//! The pool against the in-process simulator: warm path, demand batching, watermarks,
//! cool-down, idempotency, failures, restart, GC. Simulated time (tokio's paused clock).
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{collections::BTreeSet, net::Ipv4Addr, sync::Arc, time::Duration};

use cnikit_cloud_api::{
    AssignIpsRequest, AttachEniRequest, CloudProvider, CreateEniRequest, EniStatus, Rate,
    WaitOptions, WaitTarget,
    ecs::Action,
    sim::{
        DEFAULT_INSTANCE, DEFAULT_SECURITY_GROUP, DEFAULT_VSWITCH, DEFAULT_VSWITCH_TINY, FaultRule,
        SimCloud, SimConfig,
    },
};
use cnikit_eni_pool::{
    AllocateRequest, Blocker, Error, IpStack, LivePodSet, MemoryStore, Pool, ResourceKind,
    VSwitchSelection, Watermarks, tags,
};
use common::*;

#[tokio::test(start_paused = true)]
async fn warm_allocation_makes_no_cloud_call_and_is_idempotent() {
    let h = harness(config()).await;
    h.settle().await;
    let before = h.sim.total_calls();
    let a = h.alloc(1).await;
    assert_eq!(
        h.sim.total_calls(),
        before,
        "allocation from idle called the cloud"
    );
    let again = h.alloc(1).await;
    assert_eq!(a, again, "a retried ADD gets the same resource");
    assert_eq!(a.kind, ResourceKind::SharedIp);
    assert_eq!(a.vswitch_cidr.to_string(), "198.18.0.0/24");
    assert_eq!(a.gateway, Ipv4Addr::new(198, 18, 0, 253));
    let eni = h.sim.eni(&a.eni_id).unwrap();
    assert_eq!(eni.mac, a.mac);
    assert!(eni.ipv4_addresses().any(|ip| ip == a.ipv4));
    let device = eni.attachment.unwrap().device_index.unwrap();
    assert_eq!(a.route_table_id, 1000 + device);
    assert_eq!(h.pool.get(&pod(1)), Some(a.clone()));
    assert_eq!(h.pool.release(&pod(1)).await.unwrap(), Some(a.clone()));
    assert_eq!(
        h.pool.release(&pod(1)).await.unwrap(),
        None,
        "releasing twice is fine"
    );
    let m = h.pool.metrics();
    assert_eq!(m.allocations, 2);
    assert_eq!(m.allocations_repeated, 1);
    assert_eq!(m.allocations_from_idle, 1);
    assert_eq!(m.shared.cooling, 1);
    assert_eq!(m.allocation_latency.total(), 2);
    // The records hold nothing for the released pod, and a cooling record for its address.
    let records = h.store.records();
    assert!(records.bindings.is_empty());
    assert!(records.cooling.contains_key(&a.resource()));
}

#[tokio::test(start_paused = true)]
async fn a_burst_on_an_empty_pool_is_batched() {
    let mut cfg = config();
    cfg.shared = Watermarks::new(0, 4);
    let h = harness(cfg).await;
    h.sim.reset_stats();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let pool = h.pool.clone();
        h.live.insert(pod(i));
        tasks.push(tokio::spawn(async move {
            pool.allocate(&AllocateRequest::shared_ip(pod(i))).await
        }));
    }
    let mut ips = BTreeSet::new();
    for t in tasks {
        ips.insert(t.await.unwrap().unwrap().ipv4);
    }
    assert_eq!(ips.len(), 40, "40 distinct addresses");
    // 40 addresses need three 15-address ENIs: each created with its addresses in one call,
    // the three attaches in parallel, observed by one describe call.
    assert_eq!(h.sim.calls(Action::CreateNetworkInterface), 3);
    assert_eq!(h.sim.calls(Action::AttachNetworkInterface), 3);
    assert_eq!(h.sim.calls(Action::AssignPrivateIpAddresses), 0);
    assert_eq!(h.sim.calls(Action::DescribeNetworkInterfaces), 1);
    let m = h.pool.metrics();
    assert_eq!(m.enis.ready, 3);
    assert_eq!(m.shared.in_use, 40);
}

#[tokio::test(start_paused = true)]
async fn demand_on_a_partly_full_eni_uses_one_assign_call() {
    let mut cfg = config();
    cfg.shared = Watermarks::new(1, 4);
    let h = harness(cfg).await;
    // The first ENI carries up to the high watermark: 4 idle.
    h.settle_idle(4).await;
    h.sim.reset_stats();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let pool = h.pool.clone();
        tasks.push(tokio::spawn(async move {
            pool.allocate(&AllocateRequest::shared_ip(pod(i))).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        h.sim.calls(Action::AssignPrivateIpAddresses),
        1,
        "{:?}",
        h.sim.stats()
    );
    assert_eq!(h.sim.calls(Action::CreateNetworkInterface), 0);
}

#[tokio::test(start_paused = true)]
async fn released_addresses_cool_down_before_reuse() {
    let mut cfg = config();
    cfg.shared = Watermarks::new(1, 3);
    let h = harness(cfg).await;
    h.settle().await;
    let a = h.alloc(1).await;
    h.settle().await;
    h.pool.release(&pod(1)).await.unwrap();
    let b = h.alloc(2).await;
    assert_ne!(a.ipv4, b.ipv4, "a cooling address was handed out");
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(h.pool.metrics().shared.cooling, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = h.pool.metrics();
    assert_eq!(m.shared.cooling, 0);
    assert!(m.shared.idle >= 2, "{m:?}");
}

#[tokio::test(start_paused = true)]
async fn surplus_above_the_high_watermark_goes_back_in_batches() {
    let mut cfg = config();
    cfg.shared = Watermarks::new(0, 2);
    cfg.release_batch = 3;
    cfg.release_interval = Duration::from_secs(10);
    let h = harness(cfg).await;
    for i in 0..12 {
        h.alloc(i).await;
    }
    for i in 0..12 {
        h.pool.release(&pod(i)).await.unwrap();
    }
    // 30 s cool-down, then 60 s of surplus, then batches of 3 every ~10 s.
    tokio::time::sleep(Duration::from_secs(85)).await;
    assert_eq!(h.sim.calls(Action::UnassignPrivateIpAddresses), 0);
    h.settle_idle(2).await;
    let unassigns = h.sim.calls(Action::UnassignPrivateIpAddresses);
    let deletes = h.sim.calls(Action::DeleteNetworkInterface);
    assert!(unassigns + deletes >= 3, "batches: {:?}", h.sim.stats());
    // The cloud holds exactly what the pool accounts for.
    let on_enis: usize = h
        .sim
        .enis()
        .iter()
        .filter(|e| e.tags.contains_key(tags::POOL))
        .map(|e| e.ipv4_addresses().count())
        .sum();
    assert_eq!(on_enis, 2);
}

#[tokio::test(start_paused = true)]
async fn exclusive_enis_are_whole_enis_and_go_back_when_idle() {
    let mut cfg = config();
    cfg.shared = Watermarks::new(0, 0);
    let h = harness(cfg).await;
    let req = |i| AllocateRequest::exclusive_eni(pod(i));
    let a = h.pool.allocate(&req(1)).await.unwrap();
    let b = h.pool.allocate(&req(2)).await.unwrap();
    assert_eq!(a.kind, ResourceKind::ExclusiveEni);
    assert_ne!(a.eni_id, b.eni_id);
    let eni = h.sim.eni(&a.eni_id).unwrap();
    assert_eq!(eni.primary_ipv4, Some(a.ipv4));
    assert_eq!(eni.status, EniStatus::InUse);
    assert_eq!(
        eni.tags.get(tags::ROLE).map(String::as_str),
        Some(tags::ROLE_EXCLUSIVE)
    );
    // Asking a shared IP under the same key is refused.
    let e = h
        .pool
        .allocate(&AllocateRequest::shared_ip(pod(1)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::KindMismatch { .. }), "{e}");
    h.pool.release(&pod(1)).await.unwrap();
    h.pool.release(&pod(2)).await.unwrap();
    let gone = until(Duration::from_secs(300), || {
        h.sim.eni(&a.eni_id).is_none() && h.sim.eni(&b.eni_id).is_none()
    })
    .await;
    assert!(
        gone,
        "idle exclusive ENIs above max_idle 0 were not deleted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_vswitch_is_skipped_for_the_next_one() {
    let mut cfg = config();
    cfg.vswitches = vec![DEFAULT_VSWITCH_TINY.into(), DEFAULT_VSWITCH.into()];
    cfg.vswitch_selection = VSwitchSelection::Ordered;
    cfg.shared = Watermarks::new(0, 4);
    let h = harness(cfg).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let pool = h.pool.clone();
        tasks.push(tokio::spawn(async move {
            pool.allocate(&AllocateRequest::shared_ip(pod(i))).await
        }));
    }
    let mut by_vsw = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        *by_vsw
            .entry(t.await.unwrap().unwrap().vswitch_id)
            .or_default() += 1;
    }
    // The tiny /28 (12 usable addresses) was used up first; the rest came from the next one.
    assert_eq!(h.sim.free_ipv4(DEFAULT_VSWITCH_TINY), Some(0));
    assert!(
        by_vsw.get(DEFAULT_VSWITCH).is_some_and(|n| *n >= 8),
        "{by_vsw:?}"
    );
    assert_eq!(by_vsw.values().sum::<usize>(), 20);
}

#[tokio::test(start_paused = true)]
async fn exhaustion_fails_waiting_allocations_at_their_deadline_with_the_cause() {
    let mut cfg = config();
    cfg.vswitches = vec![DEFAULT_VSWITCH_TINY.into()];
    cfg.shared = Watermarks::new(0, 0);
    cfg.allocate_timeout = Duration::from_secs(20);
    let h = harness(cfg).await;
    let mut tasks = Vec::new();
    for i in 0..14 {
        let pool = h.pool.clone();
        tasks.push(tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let r = pool.allocate(&AllocateRequest::shared_ip(pod(i))).await;
            (r, started.elapsed())
        }));
    }
    let mut ok = 0;
    let mut failed = 0;
    for t in tasks {
        match t.await.unwrap() {
            (Ok(_), _) => ok += 1,
            (Err(Error::Exhausted { cause, waited, .. }), elapsed) => {
                failed += 1;
                assert!(
                    matches!(&cause, Blocker::SubnetExhausted { vswitch_ids } if vswitch_ids == &[DEFAULT_VSWITCH_TINY.to_owned()]),
                    "{cause}"
                );
                assert!(waited >= Duration::from_secs(20) && elapsed < Duration::from_secs(21));
            }
            (Err(e), _) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((ok, failed), (12, 2));
    assert!(matches!(
        h.pool.metrics().blocker,
        Some(Blocker::SubnetExhausted { .. })
    ));
    assert!(
        h.sim.calls(Action::CreateNetworkInterface) <= 4,
        "{:?}",
        h.sim.stats()
    );
}

#[tokio::test(start_paused = true)]
async fn the_account_eni_quota_pauses_creation_and_names_the_quota() {
    let mut sc = SimConfig::default();
    sc.latency.api = Duration::from_millis(20);
    // The instance's primary ENI plus one more.
    sc.quotas.max_enis = 2;
    let mut cfg = config();
    cfg.shared = Watermarks::new(0, 0);
    cfg.allocate_timeout = Duration::from_secs(10);
    let h = harness_on(SimCloud::new(sc).unwrap(), cfg).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let pool = h.pool.clone();
        tasks.push(tokio::spawn(async move {
            pool.allocate(&AllocateRequest::shared_ip(pod(i))).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(Error::Exhausted {
                cause: Blocker::QuotaExceeded { detail },
                ..
            }) => assert!(detail.contains("QuotaExceeded"), "{detail}"),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(ok, 15, "one ENI of 15 addresses fits the quota");
}

#[tokio::test(start_paused = true)]
async fn throttling_and_transient_errors_back_off_and_recover() {
    let sim = sim();
    sim.set_throttle(Action::CreateNetworkInterface, Some(Rate::new(0.2, 1)));
    sim.add_fault(FaultRule::error(None, "InternalError").with_probability(0.3))
        .unwrap();
    let mut cfg = config();
    cfg.shared = Watermarks::new(0, 4);
    cfg.allocate_timeout = Duration::from_secs(120);
    let h = harness_on(sim, cfg).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let pool = h.pool.clone();
        tasks.push(tokio::spawn(async move {
            pool.allocate(&AllocateRequest::shared_ip(pod(i))).await
        }));
    }
    let mut ips = BTreeSet::new();
    for t in tasks {
        ips.insert(t.await.unwrap().unwrap().ipv4);
    }
    assert_eq!(ips.len(), 40);
    let stats = h.sim.stats();
    let create = stats[&Action::CreateNetworkInterface];
    assert!(create.throttled > 0, "{stats:?}");
    assert_eq!(create.succeeded, 3, "no duplicate ENI: {stats:?}");
    let m = h.pool.metrics();
    assert!(
        m.cloud_calls
            .get(&("create_eni".to_owned(), "throttled".to_owned()))
            .is_some_and(|n| *n > 0),
        "{:?}",
        m.cloud_calls
    );
    // Every created ENI is accounted for: no leak from retries.
    let ours = h
        .sim
        .enis()
        .into_iter()
        .filter(|e| e.tags.contains_key(tags::POOL))
        .count();
    assert_eq!(ours, 3);
}

#[tokio::test(start_paused = true)]
async fn a_restart_restores_bindings_and_releases_gone_pods() {
    let mut cfg = config();
    cfg.liveness_grace = Duration::ZERO;
    let mut h = harness(cfg.clone()).await;
    let mut allocs = Vec::new();
    for i in 0..5 {
        allocs.push(h.alloc(i).await);
    }
    h.live.remove(&pod(3));
    h.live.remove(&pod(4));
    h.restart(cfg).await;
    let report = h.pool.start_report().clone();
    assert_eq!(report.restored_bindings, 5);
    assert_eq!(
        report.released_gone_pods.iter().collect::<BTreeSet<_>>(),
        [pod(3), pod(4)].iter().collect::<BTreeSet<_>>()
    );
    assert!(!report.adopted_enis.is_empty());
    for (i, a) in allocs.iter().enumerate().take(3) {
        assert_eq!(h.pool.get(&pod(i)).as_ref(), Some(a), "binding of pod {i}");
        // A retried ADD after the restart gets the same address.
        assert_eq!(&h.alloc(i).await, a);
    }
    assert_eq!(h.pool.get(&pod(3)), None);
    let m = h.pool.metrics();
    assert_eq!(m.shared.in_use, 3);
    assert_eq!(m.shared.cooling, 2, "released addresses cool down");
    assert_eq!(h.store.records().bindings.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn leaked_and_left_over_enis_are_adopted_or_deleted() {
    let sim = sim();
    let cloud: Arc<dyn CloudProvider> = Arc::new(sim.clone());
    let ours = |n| {
        CreateEniRequest::new(DEFAULT_VSWITCH, [DEFAULT_SECURITY_GROUP])
            .with_secondary_ipv4_count(n)
            .with_tag(tags::POOL, "cnikit")
            .with_tag(tags::INSTANCE, DEFAULT_INSTANCE)
            .with_tag(tags::ROLE, tags::ROLE_SHARED)
    };
    // Left by a crash between create and attach.
    let leaked = cloud.create_eni(&ours(2)).await.unwrap();
    // Left attached by an earlier run.
    let attached = cloud.create_eni(&ours(4)).await.unwrap();
    cloud
        .attach_eni(&AttachEniRequest::new(&attached.id, DEFAULT_INSTANCE))
        .await
        .unwrap();
    cloud
        .wait_eni(
            &attached.id,
            &WaitTarget::AttachedTo(DEFAULT_INSTANCE.into()),
            &WaitOptions::fixed(Duration::from_millis(200), Duration::from_secs(10)),
        )
        .await
        .unwrap();
    // Somebody else's ENI: never touched.
    let foreign = cloud
        .create_eni(&CreateEniRequest::new(
            DEFAULT_VSWITCH,
            [DEFAULT_SECURITY_GROUP],
        ))
        .await
        .unwrap();
    let mut cfg = config();
    cfg.shared = Watermarks::new(0, 10);
    let h = harness_on(sim, cfg).await;
    let report = h.pool.start_report();
    assert_eq!(report.adopted_enis, vec![attached.id.clone()]);
    assert_eq!(report.orphan_enis, vec![leaked.id.clone()]);
    assert_eq!(
        h.pool.metrics().shared.idle,
        5,
        "adopted addresses are idle"
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        h.sim.eni(&leaked.id).is_some(),
        "deleted before the grace period"
    );
    let deleted = until(Duration::from_secs(60), || h.sim.eni(&leaked.id).is_none()).await;
    assert!(deleted, "leaked ENI not deleted");
    assert!(h.sim.eni(&foreign.id).is_some());
}

#[tokio::test(start_paused = true)]
async fn gc_releases_gone_pods_and_follows_the_cloud() {
    let mut cfg = config();
    cfg.liveness_grace = Duration::ZERO;
    cfg.shared = Watermarks::new(2, 8);
    let h = harness(cfg).await;
    let a = h.alloc(1).await;
    h.alloc(2).await;
    h.settle().await;
    h.live.remove(&pod(2));
    // Behind the pool's back: one idle address disappears, two appear.
    let cloud: Arc<dyn CloudProvider> = Arc::new(h.sim.clone());
    let eni = h.sim.eni(&a.eni_id).unwrap();
    let bound: BTreeSet<Ipv4Addr> = h.pool.allocations().iter().map(|x| x.ipv4).collect();
    let victim = eni
        .secondary_ipv4
        .iter()
        .copied()
        .find(|ip| !bound.contains(ip))
        .unwrap();
    cloud.unassign_ipv4(&a.eni_id, &[victim]).await.unwrap();
    cloud
        .assign_ipv4(&AssignIpsRequest::count(&a.eni_id, 2))
        .await
        .unwrap();
    let report = h.pool.gc().await;
    assert_eq!(report.released_pods, vec![pod(2)]);
    assert_eq!(report.dropped_ips, 1, "{report:?}");
    assert_eq!(report.adopted_ips, 2, "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    assert_eq!(h.pool.get(&pod(1)), Some(a));
}

#[tokio::test(start_paused = true)]
async fn a_failed_commit_allocates_nothing_and_a_failed_release_keeps_the_binding() {
    let h = harness(config()).await;
    let idle = h.settle().await;
    h.store.fail_next_commits(1);
    let e = h
        .pool
        .allocate(&AllocateRequest::shared_ip(pod(1)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Store { .. }), "{e}");
    assert_eq!(h.pool.get(&pod(1)), None);
    assert_eq!(
        h.pool.metrics().shared.idle,
        idle,
        "the unit went back to idle"
    );
    let a = h.alloc(1).await;
    h.store.fail_next_commits(1);
    assert!(h.pool.release(&pod(1)).await.is_err());
    assert_eq!(h.pool.get(&pod(1)), Some(a));
    assert!(h.pool.release(&pod(1)).await.unwrap().is_some());
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_waiting_allocation_leaves_nothing_behind() {
    let mut cfg = config();
    cfg.shared = Watermarks::new(0, 5);
    let h = harness(cfg).await;
    let pool = h.pool.clone();
    let waiting =
        tokio::spawn(async move { pool.allocate(&AllocateRequest::shared_ip(pod(1))).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.pool.metrics().shared.waiting, 1);
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    h.settle().await;
    let m = h.pool.metrics();
    assert_eq!((m.shared.in_use, m.shared.waiting), (0, 0), "{m:?}");
    // The key is free again.
    h.alloc(1).await;
}

#[tokio::test(start_paused = true)]
async fn dual_stack_pods_get_both_families_from_one_eni() {
    let mut cfg = config();
    cfg.ip_stack = IpStack::Dual;
    let h = harness(cfg).await;
    let mut seen = BTreeSet::new();
    for i in 0..12 {
        let a = h.alloc(i).await;
        let v6 = a.ipv6.expect("an IPv6 address");
        assert!(seen.insert(v6), "IPv6 {v6} handed out twice");
        assert!(h.sim.eni(&a.eni_id).unwrap().ipv6.contains(&v6));
        assert!(a.vswitch_ipv6_cidr.unwrap().contains(v6));
    }
}

#[tokio::test(start_paused = true)]
async fn warm_up_runs_once_per_node() {
    let mut cfg = config();
    cfg.shared = Watermarks::new(0, 4).with_warm_up(20);
    let mut h = harness(cfg.clone()).await;
    let warm = until(Duration::from_secs(30), || {
        h.pool.metrics().shared.idle >= 20
    })
    .await;
    assert!(warm, "{:?}", h.pool.metrics());
    assert!(h.store.records().meta.shared_warm_up_done);
    // Surplus above max_idle goes back later; a restart does not warm up again.
    h.settle_idle(4).await;
    h.restart(cfg).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(h.pool.metrics().shared.idle, 4);
}

#[tokio::test(start_paused = true)]
async fn invalid_configurations_are_rejected_at_construction() {
    let sim = sim();
    let store = MemoryStore::new();
    let live = LivePodSet::new();
    let mut cfg = config();
    cfg.max_enis = Some(4);
    let e = start(&sim, &store, &live, cfg).await.unwrap_err();
    assert!(e.to_string().contains("max_enis 4 is above"), "{e}");
    let mut cfg = config();
    cfg.vswitches = vec!["vsw-nope".into()];
    let e = start(&sim, &store, &live, cfg).await.unwrap_err();
    assert!(
        matches!(e, Error::Config(ref m) if m.contains("vsw-nope")),
        "{e}"
    );
    let mut cfg = config();
    cfg.instance_type = "ecs.nope".into();
    let e = start(&sim, &store, &live, cfg).await.unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
    let mut cfg = config();
    cfg.shared = Watermarks::new(9, 3);
    assert!(matches!(
        start(&sim, &store, &live, cfg).await.unwrap_err(),
        Error::Config(_)
    ));
    let e = Pool::builder(config()).start().await.unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
    let bad = cnikit_eni_pool::PodKey::new("ns", "", "c", "eth0");
    let h = harness(config()).await;
    assert!(matches!(
        h.pool
            .allocate(&AllocateRequest::shared_ip(bad))
            .await
            .unwrap_err(),
        Error::InvalidRequest(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_cooled_exclusive_eni_is_reused() {
    let mut cfg = config();
    cfg.shared = Watermarks::new(0, 0);
    cfg.exclusive = Watermarks::new(0, 1);
    let h = harness(cfg).await;
    let a = h
        .pool
        .allocate(&AllocateRequest::exclusive_eni(pod(1)))
        .await
        .unwrap();
    h.pool.release(&pod(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    let m = h.pool.metrics();
    assert_eq!((m.exclusive.idle, m.exclusive.cooling), (1, 0), "{m:?}");
    let before = h.sim.total_calls();
    let b = h
        .pool
        .allocate(&AllocateRequest::exclusive_eni(pod(2)))
        .await
        .unwrap();
    assert_eq!(a.eni_id, b.eni_id);
    assert_eq!(h.sim.total_calls(), before);
}

#[tokio::test(start_paused = true)]
async fn aws_style_uses_the_primary_eni_and_keeps_eni_primaries_back() {
    let mut cfg = config();
    cfg.use_primary_eni = true;
    cfg.hand_out_eni_primary_ip = false;
    cfg.shared = Watermarks::new(0, 2);
    let h = harness(cfg).await;
    // 3 secondary ENIs of 14 usable addresses, plus 14 on the primary ENI.
    assert_eq!(h.pool.capacity().shared_ips, 56);
    let primary = h
        .sim
        .enis()
        .into_iter()
        .find(|e| e.kind == cnikit_cloud_api::EniKind::Primary)
        .unwrap();
    let mut on_primary = 0;
    for i in 0..20 {
        let a = h.alloc(i).await;
        assert_ne!(Some(a.ipv4), primary.primary_ipv4, "the node's own address");
        let eni = h.sim.eni(&a.eni_id).unwrap();
        assert_ne!(
            eni.primary_ipv4,
            Some(a.ipv4),
            "an ENI's primary was handed out"
        );
        if a.eni_id == primary.id {
            on_primary += 1;
        }
    }
    assert_eq!(on_primary, 14, "the primary ENI is filled first");
    assert_eq!(h.sim.calls(Action::CreateNetworkInterface), 1);
}
