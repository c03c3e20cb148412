//! The veth + policy routing driver, wired for real in test namespaces.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::{net::IpAddr, sync::Arc};

use cnikit_netns_setup::{
    Drift, EniRef, Error, IpConfig, Netns, Node, PodDriver, PodNetwork, Retired, Side, SpecError,
    VethDriver, naming,
    netlink::{
        Connector, RtConnector,
        fault::{FaultInjector, FaultPlan, FaultyConnector},
    },
};
use cnikit_test_support::{netns::TestNetns, require_root, state::NetState};
use common::{
    Cluster, DNS4, GW4, GW6, NODE4, NODE6, SERVICE4, SERVICE6, assert_two_way, delivered, pod4,
    pod6, report_time, settle, stable_state,
};

#[tokio::test]
async fn veth_pods_reach_each_other_the_vpc_and_the_node() {
    require_root!("veth_pods_reach_each_other_the_vpc_and_the_node");
    let cluster = Cluster::new(2);
    let node = Node::connect(&cluster.node_netns()).unwrap();
    let (a, b) = (cluster.pod(), cluster.pod());
    let spec_a = cluster.spec(&a, "pod-a", "eth1", 1);
    let spec_b = cluster.spec(&b, "pod-b", "eth1", 2);
    let wired = VethDriver.setup(&node, &spec_a).await.unwrap();
    assert_eq!(wired.interface, "eth0");
    assert_eq!(
        wired.host_interface.as_deref(),
        Some(naming::host_veth_name("pod-a", "eth0").as_str())
    );
    assert!(wired.report.created > 0);
    VethDriver.setup(&node, &spec_b).await.unwrap();
    for n in [1, 2] {
        cluster.vpc_learns(IpAddr::V4(pod4(n)), "eth1");
        cluster.vpc_learns(IpAddr::V6(pod6(n)), "eth1");
    }

    // The documented rules and the ENI table, read back with iproute2.
    let eth1 = cluster.node.ip(&["-o", "link", "show", "eth1"]).unwrap();
    let index: u32 = eth1.split(':').next().unwrap().trim().parse().unwrap();
    let table = (1000 + index).to_string();
    let rules = cluster.node.ip(&["rule", "show"]).unwrap();
    assert!(
        rules.contains(&format!("512:\tfrom all to {} lookup main", pod4(1))),
        "{rules}"
    );
    assert!(
        rules.contains(&format!("2048:\tfrom {} lookup {table}", pod4(1))),
        "{rules}"
    );
    let rules6 = cluster.node.ip(&["-6", "rule", "show"]).unwrap();
    assert!(
        rules6.contains(&format!("2048:\tfrom {} lookup {table}", pod6(2))),
        "{rules6}"
    );
    let eni_table = cluster
        .node
        .ip(&["route", "show", "table", &table])
        .unwrap();
    assert_eq!(
        eni_table.trim(),
        format!("default via {GW4} dev eth1 proto static onlink")
    );
    let pod_routes = a.ip(&["route", "show"]).unwrap();
    assert_eq!(
        pod_routes.trim(),
        "default via 169.254.1.1 dev eth0 proto static onlink"
    );
    let pod_neigh = a.ip(&["neigh", "show"]).unwrap();
    assert!(
        pod_neigh.contains("169.254.1.1 dev eth0 lladdr ee:cb:00:00:00:01 PERMANENT"),
        "{pod_neigh}"
    );

    let (v4a, v4b) = (IpAddr::V4(pod4(1)), IpAddr::V4(pod4(2)));
    let (v6a, v6b) = (IpAddr::V6(pod6(1)), IpAddr::V6(pod6(2)));
    let before = cluster.vpc_port_rx("eth1");
    assert_two_way("pod to pod on one ENI", (&a, v4a), (&b, v4b));
    assert_two_way("pod to pod on one ENI (IPv6)", (&a, v6a), (&b, v6b));
    assert_eq!(
        cluster.vpc_port_rx("eth1"),
        before,
        "pod-to-pod traffic left the node"
    );
    assert_two_way(
        "pod to VPC gateway",
        (&a, v4a),
        (&cluster.vpc, IpAddr::V4(GW4)),
    );
    assert_two_way(
        "pod to VPC gateway (IPv6)",
        (&b, v6b),
        (&cluster.vpc, IpAddr::V6(GW6)),
    );
    assert!(
        cluster.vpc_port_rx("eth1") >= before + 6,
        "pod egress did not leave through its ENI"
    );
    assert_two_way("node to pod", (&cluster.node, IpAddr::V4(NODE4)), (&a, v4a));
    assert_two_way(
        "node to pod (IPv6)",
        (&cluster.node, IpAddr::V6(NODE6)),
        (&a, v6a),
    );
    assert_two_way(
        "pod to Service",
        (&b, v4b),
        (&cluster.node, IpAddr::V4(SERVICE4)),
    );
    assert_two_way(
        "pod to Service (IPv6)",
        (&b, v6b),
        (&cluster.node, IpAddr::V6(SERVICE6)),
    );
    assert_two_way(
        "pod to node-local DNS",
        (&a, v4a),
        (&cluster.node, IpAddr::V4(DNS4)),
    );

    VethDriver.teardown(&node, &spec_a).await.unwrap();
    VethDriver.teardown(&node, &spec_b).await.unwrap();
    let rules = cluster.node.ip(&["rule", "show"]).unwrap();
    assert!(!rules.contains("198.18.0.2"), "{rules}");
}

/// 500 setup/teardown cycles leave the node namespace exactly as it was.
#[tokio::test]
async fn veth_leaves_nothing_after_500_cycles() {
    require_root!("veth_leaves_nothing_after_500_cycles");
    let cluster = Cluster::new(1);
    let node = Node::connect(&cluster.node_netns()).unwrap();
    let pods = [cluster.pod(), cluster.pod()];
    let specs: Vec<_> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            cluster.spec(
                p,
                &format!("leak-{i}"),
                "eth1",
                u8::try_from(i).unwrap() + 1,
            )
        })
        .collect();
    // The ENI's table is node state, in place before pods come and go.
    VethDriver.ensure_eni(&node, &specs[0]).await.unwrap();
    let node_before = stable_state(&cluster.node);
    let pods_before: Vec<_> = pods.iter().map(|p| NetState::capture(p).unwrap()).collect();
    let started = std::time::Instant::now();
    let (mut setup, mut teardown) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    for cycle in 0..500 {
        let spec = &specs[cycle % specs.len()];
        let t = std::time::Instant::now();
        let wired = VethDriver.setup(&node, spec).await.unwrap();
        setup += t.elapsed();
        assert!(wired.report.created > 0, "cycle {cycle}: {wired:?}");
        let t = std::time::Instant::now();
        VethDriver.teardown(&node, spec).await.unwrap();
        teardown += t.elapsed();
    }
    report_time!(
        "500 veth cycles in {:?} (setup {setup:?}, teardown {teardown:?})",
        started.elapsed()
    );
    let node_after = NetState::capture(&cluster.node).unwrap();
    assert_eq!(
        node_after,
        node_before,
        "{:#?}",
        node_after.diff(&node_before)
    );
    for (pod, before) in pods.iter().zip(&pods_before) {
        let after = NetState::capture(pod).unwrap();
        assert_eq!(&after, before, "{:#?}", after.diff(before));
    }
}

/// A re-run changes nothing; each kind of drift is reported; setup repairs it.
#[tokio::test]
async fn veth_setup_converges_and_check_reports_each_drift() {
    require_root!("veth_setup_converges_and_check_reports_each_drift");
    let cluster = Cluster::new(1);
    let node = Node::connect(&cluster.node_netns()).unwrap();
    let pod = cluster.pod();
    let spec = cluster.spec(&pod, "drift", "eth1", 1);
    VethDriver.setup(&node, &spec).await.unwrap();
    settle(&pod);
    settle(&cluster.node);
    let node_state = NetState::capture(&cluster.node).unwrap();
    let pod_state = NetState::capture(&pod).unwrap();
    let again = VethDriver.setup(&node, &spec).await.unwrap();
    assert!(again.report.is_noop(), "{:?}", again.report);
    assert_eq!(NetState::capture(&cluster.node).unwrap(), node_state);
    assert_eq!(NetState::capture(&pod).unwrap(), pod_state);
    assert_eq!(VethDriver.check(&node, &spec).await.unwrap(), vec![]);

    let host = naming::host_veth_name("drift", "eth0");
    let table = {
        let eth1 = cluster.node.ip(&["-o", "link", "show", "eth1"]).unwrap();
        let index: u32 = eth1.split(':').next().unwrap().trim().parse().unwrap();
        naming::eni_table(index).to_string()
    };
    let p4 = pod4(1).to_string();
    let p6 = pod6(1).to_string();
    type Case<'a> = (
        &'a str,
        Vec<(&'a TestNetns, Vec<&'a str>)>,
        fn(&Drift) -> bool,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "pod default route",
            vec![(&pod, vec!["route", "del", "default"])],
            |d| {
                matches!(
                    d,
                    Drift::MissingRoute {
                        side: Side::Pod,
                        ..
                    }
                )
            },
        ),
        (
            "pod IPv6 address",
            vec![(&pod, vec!["addr", "del", "2001:2::21/128", "dev", "eth0"])],
            |d| {
                matches!(
                    d,
                    Drift::MissingAddress {
                        side: Side::Pod,
                        ..
                    }
                )
            },
        ),
        (
            "pod gateway neighbour",
            vec![(&pod, vec!["-6", "neigh", "del", "fe80::1", "dev", "eth0"])],
            |d| {
                matches!(
                    d,
                    Drift::MissingNeighbour {
                        side: Side::Pod,
                        ..
                    }
                )
            },
        ),
        (
            "pod gateway neighbour MAC",
            vec![(
                &pod,
                vec![
                    "neigh",
                    "replace",
                    "169.254.1.1",
                    "lladdr",
                    "02:00:00:00:00:99",
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ],
            )],
            |d| {
                matches!(
                    d,
                    Drift::WrongNeighbour {
                        side: Side::Pod,
                        ..
                    }
                )
            },
        ),
        (
            "pod link down",
            vec![(&pod, vec!["link", "set", "eth0", "down"])],
            |d| {
                matches!(
                    d,
                    Drift::LinkDown {
                        side: Side::Pod,
                        ..
                    }
                )
            },
        ),
        (
            "host MTU",
            vec![(&cluster.node, vec!["link", "set", &host, "mtu", "1400"])],
            |d| {
                matches!(
                    d,
                    Drift::WrongMtu {
                        side: Side::Node,
                        expected: 1500,
                        actual: 1400,
                        ..
                    }
                )
            },
        ),
        (
            "host MAC",
            vec![(
                &cluster.node,
                vec!["link", "set", &host, "address", "02:00:00:00:00:98"],
            )],
            |d| {
                matches!(
                    d,
                    Drift::WrongMac {
                        side: Side::Node,
                        ..
                    }
                )
            },
        ),
        (
            "from-pod rule",
            vec![(
                &cluster.node,
                vec!["rule", "del", "prio", "2048", "from", &p4],
            )],
            |d| matches!(d, Drift::MissingRule { rule, .. } if rule.priority == 2048),
        ),
        (
            "to-pod rule (IPv6)",
            vec![(
                &cluster.node,
                vec!["-6", "rule", "del", "prio", "512", "to", &p6],
            )],
            |d| matches!(d, Drift::MissingRule { rule, .. } if rule.priority == 512),
        ),
        (
            "node route to the pod",
            vec![(&cluster.node, vec!["route", "del", &p4, "dev", &host])],
            |d| {
                matches!(
                    d,
                    Drift::MissingRoute {
                        side: Side::Node,
                        ..
                    }
                )
            },
        ),
        (
            "node neighbour for the pod",
            vec![(&cluster.node, vec!["neigh", "del", &p4, "dev", &host])],
            |d| {
                matches!(
                    d,
                    Drift::MissingNeighbour {
                        side: Side::Node,
                        ..
                    }
                )
            },
        ),
        (
            "ENI table",
            vec![(&cluster.node, vec!["route", "flush", "table", &table])],
            |d| matches!(d, Drift::MissingRoute { side: Side::Node, route, .. } if route.table >= 1000),
        ),
        (
            "host veth",
            vec![(&cluster.node, vec!["link", "del", &host])],
            |d| {
                matches!(
                    d,
                    Drift::MissingLink {
                        side: Side::Node,
                        ..
                    }
                )
            },
        ),
    ];
    for (what, commands, expected) in cases {
        for (ns, args) in commands {
            ns.ip(&args).unwrap();
        }
        let drifts = VethDriver.check(&node, &spec).await.unwrap();
        assert!(
            drifts.iter().any(expected),
            "{what}: not detected in {drifts:#?}"
        );
        let repaired = VethDriver.setup(&node, &spec).await.unwrap();
        assert!(!repaired.report.is_noop(), "{what}: nothing repaired");
        let left = VethDriver.check(&node, &spec).await.unwrap();
        assert_eq!(left, vec![], "{what}: setup did not converge");
    }
}

/// The n-th change request fails, for every n: setup reports it and both namespaces are left
/// exactly as before.
#[tokio::test]
async fn veth_failure_at_every_step_leaves_nothing_behind() {
    require_root!("veth_failure_at_every_step_leaves_nothing_behind");
    let cluster = Cluster::new(1);
    let netns = cluster.node_netns();
    let plain = Node::connect(&netns).unwrap();
    let pod = cluster.pod();
    let spec = cluster.spec(&pod, "inject", "eth1", 1);
    VethDriver.ensure_eni(&plain, &spec).await.unwrap();
    let node_before = stable_state(&cluster.node);
    let pod_before = NetState::capture(&pod).unwrap();
    let faulty = |plan: &Arc<FaultPlan>| {
        let handle = RtConnector.connect(&netns).unwrap();
        Node::new(
            FaultInjector::wrap(handle, Arc::clone(plan)),
            Arc::new(FaultyConnector::new(
                Arc::new(RtConnector),
                Arc::clone(plan),
            )),
        )
    };
    let counter = FaultPlan::count_only();
    VethDriver.setup(&faulty(&counter), &spec).await.unwrap();
    let steps = counter.changes();
    assert!(steps >= 15, "{:#?}", counter.log());
    VethDriver.teardown(&plain, &spec).await.unwrap();
    for n in 0..steps {
        let plan = FaultPlan::fail_nth_change(n, libc::EIO);
        let err = VethDriver.setup(&faulty(&plan), &spec).await.unwrap_err();
        assert!(plan.fired(), "step {n}");
        assert!(
            err.to_string().contains("injected failure"),
            "step {n}: {err}"
        );
        let node_after = NetState::capture(&cluster.node).unwrap();
        assert_eq!(
            node_after,
            node_before,
            "step {n} ({:?}): {:#?}",
            plan.log().last(),
            node_after.diff(&node_before)
        );
        let pod_after = NetState::capture(&pod).unwrap();
        assert_eq!(
            pod_after,
            pod_before,
            "step {n}: {:#?}",
            pod_after.diff(&pod_before)
        );
    }
}

/// Bad input is rejected before any change request.
#[tokio::test]
async fn veth_rejects_bad_input_without_touching_anything() {
    require_root!("veth_rejects_bad_input_without_touching_anything");
    let cluster = Cluster::new(1);
    let netns = cluster.node_netns();
    let pod = cluster.pod();
    let good = cluster.spec(&pod, "bad", "eth1", 1);
    type Case = (PodNetwork, fn(&Error) -> bool);
    let cases: Vec<Case> = vec![
        (
            PodNetwork {
                eni: EniRef::Name("eth9".into()),
                ..good.clone()
            },
            |e| matches!(e, Error::EniNotFound { .. }),
        ),
        (
            PodNetwork {
                eni: EniRef::Mac("02:00:00:00:00:77".parse().unwrap()),
                ..good.clone()
            },
            |e| matches!(e, Error::EniNotFound { .. }),
        ),
        (good.clone().with_ifname("a-name-of-16-byt"), |e| {
            matches!(e, Error::InvalidSpec(SpecError::InterfaceName { .. }))
        }),
        (
            good.clone()
                .with_service_cidr("198.18.0.0/23".parse().unwrap()),
            |e| matches!(e, Error::InvalidSpec(SpecError::Overlap { .. })),
        ),
        (
            PodNetwork {
                ipv4: Some(IpConfig {
                    address: "198.18.0.21/24".parse().unwrap(),
                    gateway: None,
                }),
                ..good.clone()
            },
            |e| matches!(e, Error::InvalidSpec(SpecError::MissingGateway { .. })),
        ),
        (
            PodNetwork {
                netns: None,
                ..good.clone()
            },
            |e| matches!(e, Error::InvalidSpec(SpecError::MissingNetns)),
        ),
    ];
    let before = (
        NetState::capture(&cluster.node).unwrap(),
        NetState::capture(&pod).unwrap(),
    );
    for (i, (spec, expected)) in cases.into_iter().enumerate() {
        let plan = FaultPlan::count_only();
        let node = Node::new(
            FaultInjector::wrap(RtConnector.connect(&netns).unwrap(), Arc::clone(&plan)),
            Arc::new(FaultyConnector::new(
                Arc::new(RtConnector),
                Arc::clone(&plan),
            )),
        );
        let err = VethDriver.setup(&node, &spec).await.unwrap_err();
        assert!(expected(&err), "case {i}: {err:?}");
        assert_eq!(plan.changes(), 0, "case {i}: {:?}", plan.log());
    }
    let after = (
        NetState::capture(&cluster.node).unwrap(),
        NetState::capture(&pod).unwrap(),
    );
    assert_eq!(after, before);
}

/// Teardown goes on past a failure and reports it; it is idempotent and works once the pod's
/// namespace is gone.
#[tokio::test]
async fn veth_teardown_keeps_going_and_survives_a_vanished_namespace() {
    require_root!("veth_teardown_keeps_going_and_survives_a_vanished_namespace");
    let cluster = Cluster::new(1);
    let netns = cluster.node_netns();
    let node = Node::connect(&netns).unwrap();
    let pod = cluster.pod();
    let spec = cluster.spec(&pod, "down", "eth1", 1);
    VethDriver.ensure_eni(&node, &spec).await.unwrap();
    let baseline = stable_state(&cluster.node);

    // The first removal (a rule) fails: the rest is still removed and the failure reported.
    VethDriver.setup(&node, &spec).await.unwrap();
    let plan = FaultPlan::fail_nth_change(0, libc::EPERM);
    let faulty = Node::new(
        FaultInjector::wrap(RtConnector.connect(&netns).unwrap(), Arc::clone(&plan)),
        Arc::new(RtConnector),
    );
    let Err(Error::Teardown { errors }) = VethDriver.teardown(&faulty, &spec).await else {
        panic!("teardown should report the injected failure");
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        plan.changes() > 1,
        "teardown stopped at the failure: {:?}",
        plan.log()
    );
    let left = NetState::capture(&cluster.node).unwrap().diff(&baseline);
    assert_eq!(left.len(), 1, "only the failed rule may remain: {left:#?}");
    VethDriver.teardown(&node, &spec).await.unwrap();
    VethDriver.teardown(&node, &spec).await.unwrap();
    assert_eq!(NetState::capture(&cluster.node).unwrap(), baseline);

    // The namespace is deleted before teardown.
    VethDriver.setup(&node, &spec).await.unwrap();
    let gone = PodNetwork {
        netns: None,
        ..spec.clone()
    };
    drop(spec);
    drop(pod);
    VethDriver.teardown(&node, &gone).await.unwrap();
    // The kernel removes the namespace's veth asynchronously; teardown may have deleted the host
    // end itself or found it gone. Either way nothing of the pod stays.
    for _ in 0..50 {
        if NetState::capture(&cluster.node).unwrap() == baseline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let after = NetState::capture(&cluster.node).unwrap();
    assert_eq!(after, baseline, "{:#?}", after.diff(&baseline));
}

/// Names of this process's threads serving netlink sockets of their own.
fn netlink_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|comm| comm.trim() == "cnikit-netlink")
        .count()
}

/// A node whose sockets run on threads of their own wires and tears down pods concurrently
/// (each teardown's veth deletion waits in the kernel without holding up the others), leaves
/// nothing behind, and its threads end when it is dropped.
#[tokio::test]
async fn threaded_node_wires_and_tears_down_concurrently() {
    require_root!("threaded_node_wires_and_tears_down_concurrently");
    let cluster = Cluster::new(1);
    let threads_before = netlink_threads();
    let node = Node::connect_threaded(&cluster.node_netns(), 3).unwrap();
    assert_eq!(netlink_threads(), threads_before + 3);
    let pods: Vec<_> = (0..8).map(|_| cluster.pod()).collect();
    let specs: Vec<_> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| cluster.spec(p, &format!("thr-{i}"), "eth1", u8::try_from(i).unwrap() + 1))
        .collect();
    VethDriver.ensure_eni(&node, &specs[0]).await.unwrap();
    let node_before = stable_state(&cluster.node);
    let wired =
        futures_util::future::join_all(specs.iter().map(|s| VethDriver.setup(&node, s))).await;
    for (i, w) in wired.into_iter().enumerate() {
        assert!(w.unwrap().report.created > 0, "pod {i}");
    }
    for (i, pod) in pods.iter().enumerate() {
        let addrs = pod.ip(&["-4", "addr", "show"]).unwrap();
        let want = pod4(u8::try_from(i).unwrap() + 1).to_string();
        assert!(addrs.contains(&want), "pod {i}: {addrs}");
    }
    let torn =
        futures_util::future::join_all(specs.iter().map(|s| VethDriver.teardown(&node, s))).await;
    for (i, t) in torn.into_iter().enumerate() {
        t.unwrap_or_else(|e| panic!("pod {i}: {e}"));
    }
    let node_after = NetState::capture(&cluster.node).unwrap();
    assert_eq!(
        node_after,
        node_before,
        "{:#?}",
        node_after.diff(&node_before)
    );
    drop(node);
    let ended = cnikit_test_support::process::wait_until(std::time::Duration::from_secs(5), || {
        netlink_threads() == threads_before
    });
    assert!(
        ended,
        "{} netlink threads left",
        netlink_threads() - threads_before
    );
}

/// A pair prepared before the addresses are known (as an agent does while it allocates) is
/// found by `setup`, which adds only the rest; the pod works; `prepare` is idempotent; and a
/// prepared pod that is never wired is removed by `teardown` without a trace.
#[tokio::test]
async fn veth_prepare_then_setup_or_teardown() {
    require_root!("veth_prepare_then_setup_or_teardown");
    let cluster = Cluster::new(1);
    let node = Node::connect(&cluster.node_netns()).unwrap();
    let (a, b) = (cluster.pod(), cluster.pod());
    let spec = cluster.spec(&a, "prep-a", "eth1", 1);
    VethDriver.ensure_eni(&node, &spec).await.unwrap();
    let node_before = stable_state(&cluster.node);
    let pod_before = NetState::capture(&a).unwrap();

    // Without addresses, ENI or routes: only the names, the namespace and the MTU count.
    let mut early = PodNetwork::new(
        "prep-a",
        Netns::from_path(a.path()).unwrap(),
        EniRef::Name("not-known-yet".into()),
    );
    early.mtu = Some(1400);
    let prepared = VethDriver.prepare(&node, &early).await.unwrap();
    assert_eq!(prepared.created, 1, "{prepared:?}");
    assert_eq!(VethDriver.prepare(&node, &early).await.unwrap().created, 0);
    let fresh = VethDriver
        .setup(&node, &cluster.spec(&b, "prep-b", "eth1", 2))
        .await
        .unwrap();
    let wired = VethDriver.setup(&node, &spec).await.unwrap();
    assert_eq!(
        wired.report.created + 1,
        fresh.report.created,
        "the prepared pair is not made again: {wired:?} vs {fresh:?}"
    );
    assert!(
        wired.report.changed >= 1,
        "the MTU follows the ENI: {wired:?}"
    );
    cluster.vpc_learns(IpAddr::V4(pod4(1)), "eth1");
    assert_two_way(
        "prepared pod <-> fresh pod",
        (&a, IpAddr::V4(pod4(1))),
        (&b, IpAddr::V4(pod4(2))),
    );
    VethDriver.teardown(&node, &spec).await.unwrap();
    VethDriver
        .teardown(&node, &cluster.spec(&b, "prep-b", "eth1", 2))
        .await
        .unwrap();

    // Prepared, then the allocation failed: teardown of the same early spec.
    VethDriver.prepare(&node, &early).await.unwrap();
    VethDriver.teardown(&node, &early).await.unwrap();
    let node_after = NetState::capture(&cluster.node).unwrap();
    assert_eq!(
        node_after,
        node_before,
        "{:#?}",
        node_after.diff(&node_before)
    );
    let pod_after = NetState::capture(&a).unwrap();
    assert_eq!(pod_after, pod_before, "{:#?}", pod_after.diff(&pod_before));
}

/// `retire` unwires a pod at once (no rule, no live link, its interface name free for the next
/// `ADD` in the same namespace) and `Retired::delete` removes the pair later; both idempotent,
/// and both fine when the namespace is gone.
#[tokio::test]
async fn veth_retire_unwires_at_once_and_deletes_later() {
    require_root!("veth_retire_unwires_at_once_and_deletes_later");
    let cluster = Cluster::new(1);
    let node = Node::connect(&cluster.node_netns()).unwrap();
    let (a, b) = (cluster.pod(), cluster.pod());
    let spec = cluster.spec(&a, "ret-a", "eth1", 1);
    let other = cluster.spec(&b, "ret-b", "eth1", 2);
    VethDriver.ensure_eni(&node, &spec).await.unwrap();
    let node_before = stable_state(&cluster.node);
    let pod_before = NetState::capture(&a).unwrap();
    VethDriver.setup(&node, &spec).await.unwrap();
    VethDriver.setup(&node, &other).await.unwrap();
    let (ip_a, ip_b) = (IpAddr::V4(pod4(1)), IpAddr::V4(pod4(2)));
    assert_two_way("a <-> b", (&a, ip_a), (&b, ip_b));

    let retired = VethDriver.retire(&node, &spec).await.unwrap();
    let host = naming::host_veth_name("ret-a", "eth0");
    assert_eq!(retired.host_interface(), Some(host.as_str()));
    // Unwired: no interface by the pod's name, the pair down, no rule naming the pod.
    let links = a.ip(&["-o", "link", "show"]).unwrap();
    let tombstone = naming::retired_name("ret-a", "eth0");
    assert!(!links.contains(": eth0"), "{links}");
    assert!(links.contains(&format!(": {tombstone}")), "{links}");
    assert!(!links.contains("state UP"), "{links}");
    let host_link = cluster.node.ip(&["-o", "link", "show", &host]).unwrap();
    assert!(!host_link.contains(",UP"), "{host_link}");
    let rules = cluster.node.ip(&["rule", "show"]).unwrap();
    assert!(!rules.contains(&pod4(1).to_string()), "{rules}");
    assert_eq!(delivered(&b, ip_b, &a, ip_a), 0, "b still reaches a");
    // Idempotent.
    assert_eq!(VethDriver.retire(&node, &spec).await.unwrap(), retired);
    // What a later run finds when this one does not delete the pair: the down pair only.
    assert_eq!(
        Retired::leftovers(&node, &[]).await.unwrap(),
        vec![retired.clone()]
    );
    assert!(
        Retired::leftovers(&node, &[host.as_str()])
            .await
            .unwrap()
            .is_empty()
    );

    // The namespace takes a new pod by the same interface name before the pair is deleted; a
    // second retire of the old pod leaves the new pod's interface alone.
    let again = cluster.spec(&a, "ret-a2", "eth1", 3);
    VethDriver.setup(&node, &again).await.unwrap();
    assert_two_way("a again <-> b", (&a, IpAddr::V4(pod4(3))), (&b, ip_b));
    let second = VethDriver.retire(&node, &spec).await.unwrap();
    assert_eq!(second, retired);
    assert_two_way("a again <-> b", (&a, IpAddr::V4(pod4(3))), (&b, ip_b));

    retired.delete(&node).await.unwrap();
    retired.delete(&node).await.unwrap();
    let links = a.ip(&["-o", "link", "show"]).unwrap();
    assert!(!links.contains(&tombstone), "{links}");
    assert!(
        cluster.node.ip(&["-o", "link", "show", &host]).is_err(),
        "the host end is still there"
    );
    VethDriver.teardown(&node, &again).await.unwrap();
    assert_eq!(NetState::capture(&a).unwrap(), pod_before);

    // A pod whose namespace is gone: retire and delete still succeed and leave nothing.
    VethDriver.teardown(&node, &other).await.unwrap();
    let gone = PodNetwork {
        netns: None,
        ..other.clone()
    };
    VethDriver.setup(&node, &other).await.unwrap();
    drop(b);
    VethDriver
        .retire(&node, &gone)
        .await
        .unwrap()
        .delete(&node)
        .await
        .unwrap();
    // b's probe after the retire went out through the ENI: the node learned the gateway's MAC.
    cluster.node.ip(&["neigh", "flush", "dev", "eth1"]).unwrap();
    for _ in 0..50 {
        if NetState::capture(&cluster.node).unwrap() == node_before {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let after = NetState::capture(&cluster.node).unwrap();
    assert_eq!(after, node_before, "{:#?}", after.diff(&node_before));
}
